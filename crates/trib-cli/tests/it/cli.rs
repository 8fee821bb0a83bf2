//! The CLI commands other than `serve`: `demo`, `config check`, `events`.

use std::process::Command;

use crate::support::{ADMIN_KEY, ServerProcess, WRITE_KEY};

fn tributary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tributary"))
}

#[test]
fn demo_sends_the_sample_and_prints_a_summary() {
    let output = tributary()
        .arg("demo")
        .env("TRIBUTARY_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // 474 bundled messages from four sources, a retried batch, and a batch with two bad messages.
    assert!(
        stdout.contains("Sent 474 sample messages from 4 sources"),
        "{stdout}"
    );
    assert!(stdout.contains("Event log: 475 events"), "{stdout}");
    assert!(
        stdout.contains("0 accepted, 5 recognised as duplicates"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 accepted, 2 kept in the quarantine"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(missing_identity)") && stdout.contains("(invalid_timestamp)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"event\": \"Order Completed\""),
        "{stdout}"
    );
}

#[test]
fn config_check_accepts_a_valid_file_and_names_the_path_of_each_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "version = 1\n[[sources]]\nname = \"web\"\nwrite_key = \"k1\"\n",
    )
    .unwrap();
    let output = tributary()
        .args(["config", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("ok (1 source"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "version = 1\n[[sources]]\nname = \"web\"\nwrite_key = \"k1\"\n[[sources]]\nname = \"app\"\nwrite_key = \"\"\n",
    )
    .unwrap();
    let output = tributary()
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("sources[1].write_key: must not be empty"),
        "{stderr}"
    );
}

#[test]
fn events_list_prints_what_the_server_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let client = reqwest::blocking::Client::new();
    let response = client
        .post(server.url("/v1/track"))
        .basic_auth(WRITE_KEY, None::<&str>)
        .body(r#"{"userId":"u-1","event":"Signed Up","messageId":"m-cli-1"}"#)
        .send()
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().unwrap()
    );
    let output = tributary()
        .args([
            "events",
            "list",
            "--url",
            &server.url(""),
            "--admin-key",
            ADMIN_KEY,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["data"]["messageId"], "m-cli-1");
    assert_eq!(lines[0]["data"]["event"], "Signed Up");

    let output = tributary()
        .args([
            "events",
            "list",
            "--url",
            &server.url(""),
            "--admin-key",
            "wrong",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid_admin_key"));
}
