//! `tributary import`: files into the data directory, or through a running server.

use std::process::Command;

use crate::support::{ADMIN_KEY, ServerProcess};

const CRM_SOURCE: &str = r#"
[[sources]]
name = "crm"
write_key = "wk_test_crm"
[sources.normalize]
"traits.email" = "email"
[sources.import]
kind = "identify"
[[sources.import.columns]]
column = "id"
target = "user_id"
required = true
[[sources.import.columns]]
column = "Email"
target = "email"
[[sources.import.columns]]
column = "Name"
target = "traits.name"
normalize = "name"
[[sources.import.columns]]
column = "Spend"
target = "traits.spend"
type = "number"
"#;

/// Five data rows: quotes, an embedded newline, Unicode, a bad number and a short row.
const CSV: &str = "\u{feff}id,Email,Name,Spend\n\
c1,ADA@Example.com,Ada Lovelace,10.5\n\
c2,grace@example.com,\"Hopper, Grace\",20\n\
c3,zoe@example.com,\"Zoë\nÅngström\",7\n\
c4,linus@example.com,Linus,lots\n\
c5,ken@example.com\n";

fn tributary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tributary"))
}

fn import(
    config: &std::path::Path,
    file: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    tributary()
        .args(["import", "--source", "crm", "--config"])
        .arg(config)
        .arg(file)
        .args(extra)
        .env("TRIBUTARY_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn an_import_reconciles_its_rows_and_a_repeat_creates_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("customers.csv");
    std::fs::write(&file, CSV).unwrap();
    let mut server = ServerProcess::start_with(&dir.path().join("data"), CRM_SOURCE);
    let config = server.config_path().to_path_buf();

    // While the server owns the data directory, a direct import is refused with a way out.
    let output = import(&config, &file, &[]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--url"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    server.stop_gracefully();
    let output = import(&config, &file, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("5 rows read = 3 accepted + 2 quarantined + 0 duplicates skipped"),
        "{stdout}"
    );
    assert!(stdout.contains("quarantined invalid_value: 1"), "{stdout}");
    assert!(
        stdout.contains("quarantined wrong_column_count: 1"),
        "{stdout}"
    );

    let output = import(&config, &file, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("5 rows read = 0 accepted + 0 quarantined + 5 duplicates skipped"),
        "{stdout}"
    );
    assert!(stdout.contains("already imported"), "{stdout}");

    server.restart();
    let stored = server.stored_events();
    assert_eq!(stored.len(), 3);
    let ada = stored.iter().find(|event| event["userId"] == "c1").unwrap();
    assert_eq!(
        ada["traits"]["email"], "ada@example.com",
        "normalized by the source's rules"
    );
    assert_eq!(ada["traits"]["spend"], 10.5);
    let zoe = stored.iter().find(|event| event["userId"] == "c3").unwrap();
    assert_eq!(
        zoe["traits"]["name"], "Zoë Ångström",
        "the embedded newline is whitespace in a name"
    );
    let quarantined = server.quarantined();
    assert_eq!(quarantined.len(), 2);
    assert!(
        quarantined
            .iter()
            .all(|message| message["origin"].as_str().unwrap().starts_with("import"))
    );
}

#[test]
fn an_import_through_a_running_server_returns_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("customers.csv");
    std::fs::write(&file, CSV).unwrap();
    let server = ServerProcess::start_with(&dir.path().join("data"), CRM_SOURCE);
    let output = import(
        server.config_path(),
        &file,
        &["--url", &server.url(""), "--admin-key", ADMIN_KEY],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("\"rows_read\": 5") && stdout.contains("\"accepted\": 3"),
        "{stdout}"
    );
    assert_eq!(server.stored_events().len(), 3);
}

#[test]
fn quarantined_rows_are_replayed_with_the_fixed_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let file = dir.path().join("customers.csv");
    std::fs::write(&file, CSV).unwrap();
    let config = dir.path().join("before.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[server]\ndata_dir = \"{}\"\n{CRM_SOURCE}",
            data_dir.display()
        ),
    )
    .unwrap();
    let output = import(&config, &file, &[]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("3 accepted + 2 quarantined"));

    // The fix: spend is free text after all.
    let fixed = CRM_SOURCE.replace(
        "target = \"traits.spend\"\ntype = \"number\"",
        "target = \"traits.spend\"",
    );
    assert_ne!(fixed, CRM_SOURCE);
    let server = ServerProcess::start_with(&data_dir, &fixed);
    let output = tributary()
        .args([
            "quarantine",
            "replay",
            "--source",
            "crm",
            "--url",
            &server.url(""),
            "--admin-key",
            ADMIN_KEY,
        ])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["replayed"], 1, "{report}");
    assert_eq!(
        report["still_failing"]["wrong_column_count"], 1,
        "a short row needs a fixed file: {report}"
    );
    let stored = server.stored_events();
    assert_eq!(stored.len(), 4);
    let linus = stored.iter().find(|event| event["userId"] == "c4").unwrap();
    assert_eq!(linus["traits"]["spend"], "lots");

    // Exactly once: the replayed row is resolved, and the row that still fails is neither
    // stored nor quarantined a second time (import rows carry no log deduplication id).
    let output = tributary()
        .args([
            "quarantine",
            "replay",
            "--source",
            "crm",
            "--url",
            &server.url(""),
            "--admin-key",
            ADMIN_KEY,
        ])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (
            report["replayed"].as_u64(),
            report["already_resolved"].as_u64()
        ),
        (Some(0), Some(1)),
        "{report}"
    );
    assert_eq!(report["still_failing"]["wrong_column_count"], 1, "{report}");
    assert_eq!(server.stored_events().len(), 4);
    assert_eq!(server.quarantined().len(), 2);
}
