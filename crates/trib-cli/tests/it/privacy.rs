//! Privacy end to end: what a demo run leaves in its logs (and, with encryption at rest, on
//! disk) of the sample's personal data.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

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
