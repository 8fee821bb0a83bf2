//! Privacy end to end: what a demo run leaves in its logs (and, with encryption at rest, on
//! disk) of the sample's personal data.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::{ADMIN_KEY, ServerProcess, lookup, send, wait_for};

const SAMPLE: [&str; 4] = [
    include_str!("../../demo/website.ndjson"),
    include_str!("../../demo/mobile_app.ndjson"),
    include_str!("../../demo/backend.ndjson"),
    include_str!("../../demo/crm.ndjson"),
];

/// Trait names whose values are personal data in the bundled sample.
const PERSONAL: [&str; 5] = ["email", "firstName", "lastName", "phone", "name"];

/// Every personal value in the sample: emails, phones, first and last names (and the `name`
/// traits of people, i.e. of identify calls; product and group names are not personal).
pub(crate) fn sample_personal_values() -> BTreeSet<String> {
    fn walk(value: &Value, in_person: bool, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let personal = in_person && PERSONAL.contains(&key.as_str());
                    match child {
                        Value::String(text) if personal && text.len() >= 4 => {
                            out.insert(text.clone());
                        }
                        _ => walk(child, in_person, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, in_person, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    for line in SAMPLE.iter().flat_map(|file| file.lines()) {
        let message: Value = serde_json::from_str(line).unwrap();
        let is_identify = message["type"] == "identify";
        if let Some(traits) = message.get("traits").filter(|_| is_identify) {
            walk(traits, true, &mut out);
        }
        if let Some(traits) = message.pointer("/context/traits") {
            walk(traits, true, &mut out);
        }
    }
    out
}

#[test]
fn the_sample_has_personal_data_to_look_for() {
    let values = sample_personal_values();
    assert!(values.iter().any(|v| v.contains('@')), "{values:?}");
    assert!(values.iter().any(|v| v.starts_with('+')), "{values:?}");
    assert!(values.contains("Lovelace"), "{values:?}");
    assert!(values.len() > 50, "{}", values.len());
}

#[test]
fn demo_logs_at_info_contain_none_of_the_sample_personal_data() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .arg("demo")
        .arg("--data-dir")
        .arg(dir.path())
        .env("TRIBUTARY_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed: {stderr}");
    assert!(
        stderr.contains(" INFO "),
        "the demo logs at info, so the check below looks at something: {stderr}"
    );
    let leaked: Vec<String> = sample_personal_values()
        .into_iter()
        .filter(|value| stderr.contains(value.as_str()))
        .collect();
    assert!(leaked.is_empty(), "personal data in the logs: {leaked:?}");
}

/// Every byte of every file under `dir`.
fn raw_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.extend(bytes);
        }
    }
    out
}

/// The values of `values` found in `haystack`, as bytes.
fn found_in(haystack: &[u8], values: impl IntoIterator<Item = String>) -> Vec<String> {
    let finder_hits = |needle: &str| memchr::memmem::find(haystack, needle.as_bytes()).is_some();
    values.into_iter().filter(|v| finder_hits(v)).collect()
}

#[test]
fn after_the_demo_no_sample_personal_value_is_on_disk_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .arg("demo")
        .arg("--data-dir")
        .arg(dir.path())
        .env("TRIBUTARY_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "demo failed: {stdout}");
    // The demo printed golden profiles read back through the store: the data is there.
    assert!(stdout.contains("@example.com>"), "{stdout}");
    let bytes = raw_bytes(dir.path());
    assert!(bytes.len() > 100_000, "the demo wrote its data here");
    // Values of 6 bytes or more: a shorter string can occur by chance in random ciphertext.
    // Phones are stored normalized too (E.164): look for both forms.
    let mut values: Vec<String> = sample_personal_values()
        .into_iter()
        .filter(|v| v.len() >= 6)
        .collect();
    let e164: Vec<String> = values
        .iter()
        .filter(|v| v.starts_with('+'))
        .map(|v| {
            v.chars()
                .filter(|c| *c == '+' || c.is_ascii_digit())
                .collect()
        })
        .collect();
    assert!(e164.contains(&"+15125551000".to_owned()), "{e164:?}");
    values.extend(e164);
    assert!(values.len() > 50);
    let leaked = found_in(&bytes, values);
    assert!(leaked.is_empty(), "in clear on disk: {leaked:?}");
}

fn erase(server: &ServerProcess, body: Value) -> (u16, String) {
    let response = crate::support::blocking_client()
        .post(server.url("/v1/privacy/erasures"))
        .bearer_auth(ADMIN_KEY)
        .json(&body)
        .send()
        .unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

#[test]
fn an_erased_person_is_gone_from_every_file_and_cannot_be_replayed_back() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let server = ServerProcess::start(&data_dir);
    let person = |user: &str, email: &str, phone: &str, last: &str, anonymous: &str| {
        let mut events = vec![
            json!({"type": "identify", "userId": user, "anonymousId": anonymous,
                "traits": {"email": email, "phone": phone, "firstName": "Quentin", "lastName": last},
                "timestamp": "2026-11-01T10:00:00Z"}),
            json!({"type": "track", "anonymousId": anonymous, "event": "Viewed Page",
                "properties": {"path": "/pricing"}, "timestamp": "2026-11-01T09:00:00Z"}),
        ];
        for n in 0..20 {
            events.push(
                json!({"type": "track", "userId": user, "event": "Order Completed",
                "properties": {"order_id": format!("{user}-o{n}"), "note": format!("for {last}")},
                "timestamp": "2026-11-01T11:00:00Z"}),
            );
        }
        events
    };
    let erin = person(
        "usr-erin-7731",
        "erin.vandersloot@example.org",
        "+14155550199",
        "Vandersloot",
        "anon-erin-5521",
    );
    let other = person(
        "usr-otto-1188",
        "otto.kittelsen@example.org",
        "+14155550123",
        "Kittelsen",
        "anon-otto-9912",
    );
    send(&server, Value::Array(erin.clone()));
    send(&server, Value::Array(other));
    // A bad message of Erin's goes to the quarantine, keyed by her user id.
    send(
        &server,
        json!([{"type": "track", "userId": "usr-erin-7731", "event": "Broken",
        "properties": {"email": "erin.vandersloot@example.org"}, "timestamp": "not a time"}]),
    );
    let profile = wait_for(&server, "email=erin.vandersloot@example.org", |p| {
        p["identifiers"]
            .as_array()
            .is_some_and(|ids| ids.len() >= 3)
    });
    wait_for(&server, "email=otto.kittelsen@example.org", |_| true);
    let erin_values = [
        "erin.vandersloot@example.org",
        "+14155550199",
        "Vandersloot",
        "usr-erin-7731",
        "anon-erin-5521",
    ];

    let (status, text) = erase(
        &server,
        json!({"identifier": {"type": "email", "value": "Erin.Vandersloot@example.org"}}),
    );
    assert_eq!(status, 201, "{text}");
    let document = trib_api::signing::verify_signed(&text, None).expect("a valid signature");
    let receipt: Value = serde_json::from_str(&document).unwrap();
    assert_eq!(receipt["subject"]["profile_id"], profile["id"]);
    assert_eq!(receipt["subject"]["events"], 22);
    let stores: Vec<(&str, &str)> = receipt["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["store"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert!(stores.contains(&("identity_graph", "erased")), "{stores:?}");
    assert!(
        stores.contains(&("event_log", "crypto_shredded")),
        "{stores:?}"
    );
    assert!(
        stores.contains(&("profile_documents", "crypto_shredded")),
        "{stores:?}"
    );
    let tampered = text.replacen("\"events\":22", "\"events\":21", 1);
    assert!(trib_api::signing::verify_signed(&tampered, None).is_err());
    for value in erin_values {
        assert!(!text.contains(value), "the receipt names {value}");
    }

    // Gone through the API, and from the bytes of every file of the data directory.
    assert!(lookup(&server, "email=erin.vandersloot@example.org").is_none());
    assert!(lookup(&server, "user_id=usr-erin-7731").is_none());
    assert!(lookup(&server, "email=otto.kittelsen@example.org").is_some());
    let leaked = found_in(
        &raw_bytes(&data_dir),
        erin_values.iter().map(|v| v.to_string()),
    );
    assert!(
        leaked.is_empty(),
        "in clear on disk after erasure: {leaked:?}"
    );
    let receipt_id = receipt["receipt_id"].as_str().unwrap();
    let again = crate::support::blocking_client()
        .get(server.url(&format!("/v1/privacy/erasures/{receipt_id}")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.text().unwrap(), text);

    // A replay of her events is not stored and does not re-create her.
    let response: Value = crate::support::blocking_client()
        .post(server.url("/v1/batch"))
        .basic_auth(crate::support::WRITE_KEY, Some(""))
        .json(&json!({"batch": erin}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(response["erased"], 22, "{response}");
    assert_eq!(response["accepted"], 0, "{response}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(lookup(&server, "email=erin.vandersloot@example.org").is_none());
    let (status, text) = erase(&server, json!({"profile_id": profile["id"]}));
    assert_eq!(status, 410, "{text}");

    // She comes back and consents: a new profile.
    send(
        &server,
        json!([{"type": "identify", "userId": "usr-erin-7731",
        "traits": {"email": "erin.vandersloot@example.org"},
        "context": {"consent": {"categoryPreferences": {"email_marketing": true}}},
        "timestamp": "2026-11-02T10:00:00Z"}]),
    );
    wait_for(&server, "email=erin.vandersloot@example.org", |_| true);
}

/// Runs `tributary privacy ARGS` against `server` with stdin closed (not a terminal).
fn privacy_cli(server: &ServerProcess, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tributary"))
        .arg("privacy")
        .args(args)
        .env("TRIBUTARY_URL", server.url(""))
        .env("TRIBUTARY_ADMIN_KEY", ADMIN_KEY)
        .env("TRIBUTARY_LOG", "info")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn privacy_export_erase_and_verify_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let server = ServerProcess::start(&data_dir);
    let email = "ines.marchetti@example.org";
    let mut events = vec![json!({"type": "identify", "userId": "usr-ines-3307",
        "traits": {"email": email, "lastName": "Marchetti"},
        "context": {"consent": {"categoryPreferences": {"email_marketing": true}}},
        "timestamp": "2026-11-01T10:00:00Z"})];
    for n in 0..4 {
        events.push(
            json!({"type": "track", "userId": "usr-ines-3307", "event": "Order Completed",
            "properties": {"order_id": format!("ines-o{n}")}, "timestamp": "2026-11-02T10:00:00Z"}),
        );
    }
    send(&server, Value::Array(events));
    let profile = wait_for(&server, &format!("email={email}"), |p| {
        p["event_count"] == 5
    });
    let profile_id = profile["id"].as_str().unwrap();
    let personal = [email, "usr-ines-3307", "Marchetti"];
    let no_personal_output = |output: &std::process::Output| {
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for value in personal {
            assert!(!printed.contains(value), "printed {value}: {printed}");
        }
        printed
    };

    // Export: the file is the signed document exactly as served; it verifies.
    let export_path = dir.path().join("ines-export.json");
    let output = privacy_cli(
        &server,
        &[
            "export",
            &format!("email:{email}"),
            "--out",
            export_path.to_str().unwrap(),
        ],
    );
    let printed = no_personal_output(&output);
    assert!(output.status.success(), "{printed}");
    assert!(printed.contains("export ex_"), "{printed}");
    assert!(printed.contains(profile_id), "{printed}");
    assert!(printed.contains("5 events"), "{printed}");
    let text = std::fs::read_to_string(&export_path).unwrap();
    let document = trib_api::signing::verify_signed(&text, None).unwrap();
    let export: Value = serde_json::from_str(&document).unwrap();
    assert_eq!(export["subject"]["profile_id"], profile_id);
    assert_eq!(export["events"].as_array().unwrap().len(), 5);
    assert_eq!(export["events"][0]["data"]["traits"]["email"], email);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&export_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the export holds personal data");
    }
    let output = privacy_cli(&server, &["verify", export_path.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("OK: subject access export ex_"),
        "{stdout}"
    );
    let public_key: Value = serde_json::from_str(&text).unwrap();
    let public_key = public_key["signature"]["public_key"].as_str().unwrap();
    let output = privacy_cli(
        &server,
        &[
            "verify",
            export_path.to_str().unwrap(),
            "--public-key",
            public_key,
        ],
    );
    assert!(output.status.success(), "{output:?}");
    let other_key = trib_api::signing::DocumentSigner::from_secret(&[3; 32])
        .sign(b"x")
        .public_key;
    let output = privacy_cli(
        &server,
        &[
            "verify",
            export_path.to_str().unwrap(),
            "--public-key",
            &other_key,
        ],
    );
    assert_eq!(output.status.code(), Some(1), "another deployment's key");

    // One byte changed: verification fails with exit code 1 and says why.
    let mut bytes = text.into_bytes();
    let at = memchr::memmem::find(&bytes, b"ines-o2").unwrap();
    bytes[at + 6] = b'7';
    let tampered = dir.path().join("tampered.json");
    std::fs::write(&tampered, &bytes).unwrap();
    let output = privacy_cli(&server, &["verify", tampered.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not verify"), "{stderr}");
    assert!(stderr.contains("does not match"), "{stderr}");

    // Erase without --yes and without a terminal: refused, nothing erased.
    let receipt_path = dir.path().join("ines-receipt.json");
    let output = privacy_cli(&server, &["erase", &format!("email:{email}")]);
    let printed = no_personal_output(&output);
    assert_eq!(output.status.code(), Some(1), "{printed}");
    assert!(printed.contains("not a terminal"), "{printed}");
    assert!(lookup(&server, &format!("email={email}")).is_some());

    // With --yes: the receipt's summary, and its file verifies.
    let output = privacy_cli(
        &server,
        &[
            "erase",
            profile_id,
            "--yes",
            "--out",
            receipt_path.to_str().unwrap(),
        ],
    );
    let printed = no_personal_output(&output);
    assert!(output.status.success(), "{printed}");
    assert!(printed.contains("receipt er_"), "{printed}");
    assert!(printed.contains("identity_graph"), "{printed}");
    assert!(printed.contains("crypto_shredded"), "{printed}");
    assert!(printed.contains("5 events"), "{printed}");
    let output = privacy_cli(&server, &["verify", receipt_path.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("OK: erasure receipt er_"), "{stdout}");
    assert!(lookup(&server, &format!("email={email}")).is_none());
    // After erasure there is nothing left to export.
    let output = privacy_cli(
        &server,
        &[
            "export",
            &format!("email:{email}"),
            "--out",
            dir.path().join("after.json").to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(!dir.path().join("after.json").exists());
}
