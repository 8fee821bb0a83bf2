//! The CLI commands other than `serve`: `demo`, `config check`, `events`, `keys`.

use std::process::Command;

use crate::support::{ADMIN_KEY, ServerProcess, WRITE_KEY, metric};

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
    let client = crate::support::blocking_client();
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
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid_api_key"));
}

#[test]
fn metrics_count_each_outcome_per_source_and_the_ack_latency() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let client = crate::support::blocking_client();
    let batch = serde_json::json!({"batch": [
        {"type": "track", "userId": "u-1", "event": "A", "messageId": "metric-1"},
        {"type": "track", "userId": "u-1", "event": "A", "messageId": "metric-1"},
        {"type": "identify", "traits": {"plan": "pro"}},
    ]});
    let response = client
        .post(server.url("/v1/batch"))
        .basic_auth(WRITE_KEY, Some(""))
        .json(&batch)
        .send()
        .unwrap();
    assert!(response.status().is_success());
    let refused = client
        .post(server.url("/v1/batch"))
        .basic_auth("wk_wrong", Some(""))
        .json(&batch)
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);

    let metrics = server.metrics();
    let value = |series: &str| -> f64 {
        metric(&metrics, series).unwrap_or_else(|| panic!("no `{series}` in\n{metrics}"))
    };
    assert_eq!(
        value("tributary_events_received_total{source=\"web\"}"),
        3.0
    );
    assert_eq!(
        value("tributary_events_accepted_total{source=\"web\"}"),
        1.0
    );
    assert_eq!(
        value("tributary_events_duplicate_total{source=\"web\"}"),
        1.0
    );
    assert_eq!(
        value("tributary_events_rejected_total{source=\"web\",code=\"missing_identity\"}"),
        1.0
    );
    assert_eq!(
        value("tributary_requests_refused_total{code=\"invalid_write_key\"}"),
        1.0
    );
    assert_eq!(
        value("tributary_ack_latency_seconds_count{source=\"web\"}"),
        1.0
    );
    assert!(metrics.contains("tributary_ack_latency_seconds_bucket{source=\"web\",le=\"0.02\"}"));

    // The identity consumer reports how far behind the log it is: nothing once it has
    // applied the one accepted event.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let metrics = server.metrics();
        if metric(&metrics, "tributary_identity_events_total") == Some(1.0) {
            assert_eq!(
                metric(&metrics, "tributary_identity_lag_events"),
                Some(0.0),
                "{metrics}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the identity consumer did not apply the event:\n{metrics}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn serve_without_a_config_generates_keys_once_and_reuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let listen = crate::support::free_port();
    let run = || {
        let mut child = tributary()
            .args(["serve", "--listen", &listen.to_string(), "--data-dir"])
            .arg(&data_dir)
            .env_remove("TRIBUTARY_WRITE_KEY")
            .env_remove("TRIBUTARY_ADMIN_KEY")
            .env("TRIBUTARY_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let client = crate::support::blocking_client();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while client
            .get(format!("http://{listen}/readyz"))
            .send()
            .is_err()
        {
            assert!(std::time::Instant::now() < deadline, "not ready");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        child.kill().unwrap();
        let output = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let first = run();
    assert!(
        first.contains("generated write key for source default: wk_"),
        "{first}"
    );
    assert!(first.contains("generated admin key: ak_"), "{first}");
    let keys = std::fs::read_to_string(data_dir.join("keys.toml")).unwrap();
    let write_key = first
        .split("source default: ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert!(keys.contains(write_key));
    let second = run();
    assert!(
        !second.contains("generated"),
        "keys are generated once: {second}"
    );
}

#[test]
fn quarantine_list_show_and_replay_after_a_schema_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(
        &dir.path().join("data"),
        "[[sources]]\nname = \"strict\"\nwrite_key = \"wk_strict\"\nunknown_events = \"quarantine\"\n",
    );
    let client = crate::support::blocking_client();
    let response = client
        .post(server.url("/v1/track"))
        .basic_auth("wk_strict", Some(""))
        .body(r#"{"userId":"u-1","event":"Trial Started","messageId":"q-1","properties":{"plan":"pro"}}"#)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 400, "no schema: quarantined");
    let connect = ["--url", &server.url(""), "--admin-key", ADMIN_KEY];

    let output = tributary()
        .args(["quarantine", "list"])
        .args(connect)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(
        listed.contains("\"code\":\"no_schema\"") && listed.contains("\"offset\":0"),
        "{listed}"
    );
    let output = tributary()
        .args(["quarantine", "show", "0"])
        .args(connect)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("\"messageId\": \"q-1\""));

    let schema = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "self": {"kind": "event", "name": "Trial Started", "version": "1-0-0"},
        "type": "object",
        "properties": {"plan": {"enum": ["free", "pro"]}}
    });
    let published = client
        .post(server.url("/v1/schemas"))
        .bearer_auth(ADMIN_KEY)
        .json(&schema)
        .send()
        .unwrap();
    assert_eq!(published.status().as_u16(), 201);

    let output = tributary()
        .args(["quarantine", "replay", "--source", "strict"])
        .args(connect)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["replayed"], 1, "{report}");
    let stored = server.stored_events();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0]["context"]["tributary"]["schema"],
        "Trial Started/1-0-0"
    );
}

#[test]
fn undeclared_fields_are_removed_before_storage_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(
        &dir.path().join("data"),
        "[[sources]]\nname = \"lean\"\nwrite_key = \"wk_lean\"\nallowed_fields = [\"properties.sku\", \"context.library.*\"]\n",
    );
    let client = crate::support::blocking_client();
    let response = client
        .post(server.url("/v1/track"))
        .basic_auth("wk_lean", Some(""))
        .body(r#"{"userId":"u-1","event":"Product Viewed","properties":{"sku":"s-1","email":"a@example.com"},"context":{"ip":"198.51.100.4","library":{"name":"x"}}}"#)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let stored = server.stored_events();
    assert_eq!(stored[0]["properties"], serde_json::json!({"sku": "s-1"}));
    assert!(stored[0]["context"].get("ip").is_none());
    assert_eq!(stored[0]["context"]["library"]["name"], "x");
    let metrics = server.metrics();
    for field in ["properties.email", "context.ip"] {
        let line = format!("tributary_fields_removed_total{{source=\"lean\",field=\"{field}\"}} 1");
        assert!(metrics.contains(&line), "no `{line}` in\n{metrics}");
    }
}

#[test]
fn keys_create_list_revoke_against_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let server = ServerProcess::start(&data_dir);
    let client = crate::support::blocking_client();
    let keys = |args: &[&str]| {
        let output = tributary()
            .arg("keys")
            .args(args)
            .arg("--config")
            .arg(server.config_path())
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let (ok, key, stderr) = keys(&["create", "--name", "grafana", "--scope", "metrics:read"]);
    assert!(ok, "{stderr}");
    let key = key.trim().to_owned();
    assert!(key.starts_with("tk_"), "{key}");
    let id = key.split('_').nth(1).unwrap().to_owned();
    let secret = key.rsplit('_').next().unwrap();

    let (ok, listed, stderr) = keys(&["list"]);
    assert!(ok, "{stderr}");
    assert!(listed.contains(&id) && listed.contains("grafana") && listed.contains("metrics:read"));
    assert!(listed.contains("active"), "{listed}");
    assert!(!listed.contains(secret), "list printed the secret");
    let file = std::fs::read_to_string(data_dir.join("api-keys.json")).unwrap();
    assert!(file.contains(&id) && !file.contains(secret), "{file}");

    let get = |path: &str| {
        client
            .get(server.url(path))
            .bearer_auth(&key)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    while get("/metrics") != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the new key is not accepted"
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert_eq!(get("/v1/events"), 403);

    let (ok, _, stderr) = keys(&["revoke", &id]);
    assert!(ok, "{stderr}");
    let revoked_at = std::time::Instant::now();
    while get("/metrics") != 401 {
        assert!(
            revoked_at.elapsed() < std::time::Duration::from_millis(1100),
            "the revoked key is still accepted"
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let (_, listed, _) = keys(&["list"]);
    assert!(listed.contains("revoked"), "{listed}");

    let (ok, _, stderr) = keys(&["revoke", "nope"]);
    assert!(
        !ok && stderr.contains("no API key with id `nope`"),
        "{stderr}"
    );
    let (ok, _, stderr) = keys(&["create", "--name", "x", "--scope", "profiles:delete"]);
    assert!(!ok && stderr.contains("unknown scope"), "{stderr}");

    std::fs::write(data_dir.join("api-keys.json"), "[").unwrap();
    let (ok, _, stderr) = keys(&["list"]);
    assert!(!ok, "a malformed file was listed");
    assert!(
        stderr.contains("api-keys.json") && stderr.contains("malformed"),
        "{stderr}"
    );
}

#[test]
fn audit_verify_passes_on_recorded_reads_and_names_the_seq_of_an_edited_line() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = ServerProcess::start(&data_dir);
    let client = crate::support::blocking_client();
    let response = client
        .post(server.url("/v1/track"))
        .basic_auth(WRITE_KEY, None::<&str>)
        .body(r#"{"userId":"u-1","event":"Signed Up","messageId":"m-audit-1"}"#)
        .send()
        .unwrap();
    assert!(response.status().is_success());
    // A CLI read through the server is recorded with its key and the purpose it names.
    let output = tributary()
        .args([
            "events",
            "list",
            "--url",
            &server.url(""),
            "--admin-key",
            ADMIN_KEY,
        ])
        .args(["--access-purpose", "incident-42"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(server.stop_gracefully().success());

    let data_dir_arg = data_dir.display().to_string();
    let verify = || {
        tributary()
            .args(["audit", "verify", "--data-dir", &data_dir_arg])
            .output()
            .unwrap()
    };
    let output = verify();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("intact"), "{stdout}");
    let segment = data_dir.join("audit/segment-00000000000000000001.ndjson");
    let text = std::fs::read_to_string(&segment).unwrap();
    let entries: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(entries.len() >= 2, "{text}");
    for entry in &entries {
        assert_eq!(entry["actor"], "admin");
        assert_eq!(entry["resource"], "/v1/events");
        assert_eq!(entry["purpose"], "incident-42");
    }

    // An export carries the entries and a summary with the head.
    let export = dir.path().join("audit-export.ndjson");
    let output = tributary()
        .args(["audit", "export", "--data-dir", &data_dir_arg, "--out"])
        .arg(&export)
        .args(["--from", "2000-01-01T00:00:00Z"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let exported = std::fs::read_to_string(&export).unwrap();
    let summary: serde_json::Value =
        serde_json::from_str(exported.lines().last().unwrap()).unwrap();
    assert_eq!(exported.lines().count(), entries.len() + 1);
    assert_eq!(summary["summary"]["intact"], true);
    assert_eq!(summary["summary"]["head"]["seq"], entries.len());

    // Editing the second entry's outcome breaks the chain there.
    let edited: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(index, line)| {
            if index == 1 {
                line.replace("status:200", "status:404")
            } else {
                line.to_owned()
            }
        })
        .collect();
    std::fs::write(&segment, edited.join("\n") + "\n").unwrap();
    let output = verify();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not intact at seq 2:"), "{stderr}");
    assert!(stderr.contains("mac does not match"), "{stderr}");
}

#[test]
fn keys_rotate_adds_a_master_key_version_and_rewraps_while_the_store_is_open() {
    use std::sync::Arc;
    use trib_privacy::{BlindIndex, KeyStore, KeyStoreOptions, MasterKeyring, Opened, Sealer};

    let dir = tempfile::tempdir().unwrap();
    // The "server": its own keyring and key store, open during the rotation.
    let keyring = Arc::new(MasterKeyring::open_file(&dir.path().join("master.keys")).unwrap());
    let store = KeyStore::open(KeyStoreOptions::in_data_dir(dir.path()), keyring).unwrap();
    let blind = BlindIndex::new([6; 32]);
    let subjects: Vec<_> = (0..1_200)
        .map(|n| blind.subject_of_log_key(&format!("user-{n}")))
        .collect();
    store.deks_for_write(&subjects).unwrap();
    let sealer = Sealer::new(store.clone(), Arc::new(blind));
    let sealed = sealer.seal(&subjects[7], b"events", b"payload").unwrap();

    let output = tributary()
        .args(["keys", "rotate", "--batch-size", "100", "--data-dir"])
        .arg(dir.path())
        .env_remove("TRIBUTARY_MASTER_KEYS")
        .env("TRIBUTARY_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("added master key version 2"), "{stderr}");
    assert!(
        stdout.contains("re-wrapped 1200 data keys in 12 batches; data keys by version: v2: 1200"),
        "{stdout}"
    );
    assert_eq!(store.stats().unwrap().deks_by_kek_version.len(), 1);
    // The running store still opens data and wraps new keys under version 2.
    assert_eq!(
        sealer.open(&subjects[7], b"events", &sealed).unwrap(),
        Opened::Plain(b"payload".to_vec())
    );
    let newcomer = sealer.blind().subject_of_log_key("newcomer");
    store.deks_for_write(&[newcomer]).unwrap();
    assert_eq!(
        store
            .stats()
            .unwrap()
            .deks_by_kek_version
            .keys()
            .collect::<Vec<_>>(),
        vec![&2]
    );
    // No key material on the terminal.
    let file = std::fs::read_to_string(dir.path().join("master.keys")).unwrap();
    for line in file.lines().filter(|line| !line.starts_with('#')) {
        let key = line.split_whitespace().nth(1).unwrap();
        assert!(!stdout.contains(key) && !stderr.contains(key));
    }

    // With keys from the environment, the command refuses and changes nothing.
    let output = tributary()
        .args(["keys", "rotate", "--data-dir"])
        .arg(dir.path())
        .env(
            "TRIBUTARY_MASTER_KEYS",
            "1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TRIBUTARY_MASTER_KEYS"), "{stderr}");
    assert!(!stderr.contains("AAAAAAAA"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("master.keys")).unwrap(),
        file
    );
}

#[test]
fn privacy_consent_shows_history_recorded_from_events_and_the_cli_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("data"));
    let client = crate::support::blocking_client();
    let response = client
        .post(server.url("/v1/identify"))
        .basic_auth(WRITE_KEY, None::<&str>)
        .body(
            r#"{"userId":"u-cli","traits":{"email":"cli@example.com"},"messageId":"m-consent-1",
                "context":{"consent":{"categoryPreferences":{"email_marketing":true}}}}"#,
        )
        .send()
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().unwrap()
    );
    let url = server.url("");
    let privacy = |args: &[&str]| {
        let mut command = tributary();
        command.arg("privacy").args(args);
        command.args(["--url", &url, "--admin-key", ADMIN_KEY]);
        let output = command.output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    // The consent consumer runs beside identity resolution; wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (ok, stdout, stderr) = privacy(&["consent", "user_id:u-cli"]);
        assert!(ok, "{stderr}");
        if stdout.contains("event:web:m-consent-1") {
            assert!(stdout.contains("email_marketing"), "{stdout}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{stdout}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (ok, _, stderr) = privacy(&[
        "record",
        "email:cli@example.com",
        "--purpose",
        "email_marketing",
        "--status",
        "withdrawn",
        "--form-id",
        "preferences",
    ]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = privacy(&[
        "suppress",
        "user_id:u-cli",
        "--destination",
        "mailchimp",
        "--reason",
        "complaint",
    ]);
    assert!(ok, "{stderr}");

    server.restart();
    let (ok, stdout, stderr) = privacy(&["consent", "email:cli@example.com"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("no (withdrawn)"), "{stdout}");
    assert!(stdout.contains("api:admin"), "{stdout}");
    assert!(stdout.contains("destination mailchimp"), "{stdout}");
    assert!(!stdout.contains("cli@example.com"), "{stdout}");
    let (ok, stdout, _) = privacy(&["suppressions"]);
    assert!(ok);
    assert!(stdout.contains("\"destination\":\"mailchimp\""), "{stdout}");
    let (ok, _, stderr) = privacy(&["unsuppress", "user_id:u-cli", "--destination", "mailchimp"]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = privacy(&["unsuppress", "user_id:u-cli", "--destination", "mailchimp"]);
    assert!(!ok && stderr.contains("no such suppression"), "{stderr}");
}
