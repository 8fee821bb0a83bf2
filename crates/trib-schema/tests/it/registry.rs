//! Loading, listing, lookups, load errors and `check_dir`.

use std::fs;

use serde_json::json;
use trib_schema::{Registry, SchemaError, SchemaInfo, Subject, check_dir};

use crate::{
    copy_of_examples, examples, examples_dir, order_completed, read_json, version, write_json,
};

#[test]
fn loads_and_lists_the_example_registry() {
    let registry = examples();
    let listed: Vec<(Subject, String)> = registry
        .list()
        .map(|info| (info.subject, info.version.to_string()))
        .collect();
    assert_eq!(
        listed,
        [
            (Subject::Traits, "1-0-0".to_owned()),
            (order_completed(), "1-0-0".to_owned()),
            (order_completed(), "1-0-1".to_owned()),
            (
                Subject::Event("Product Viewed".to_owned()),
                "1-0-0".to_owned()
            ),
        ]
    );
    assert_eq!(registry.len(), 4);
    let first: SchemaInfo = registry.list().nth(1).unwrap();
    assert_eq!(
        first.path.unwrap(),
        examples_dir().join("events/order-completed/1-0-0.json")
    );
}

#[test]
fn get_returns_the_latest_or_the_requested_version() {
    let registry = examples();
    let latest = registry.latest(&order_completed()).unwrap();
    assert_eq!(latest.id().to_string(), "Order Completed/1-0-1");
    assert_eq!(
        registry.get(&order_completed(), None).unwrap().version(),
        &version("1-0-1")
    );
    let first = registry
        .get(&order_completed(), Some(&version("1-0-0")))
        .unwrap();
    assert_eq!(first.version(), &version("1-0-0"));
    assert!(first.document()["properties"].get("coupon").is_none());
    assert!(
        registry
            .get(&order_completed(), Some(&version("1-0-2")))
            .is_none()
    );
    assert!(
        registry
            .latest(&Subject::Event("Signed Up".to_owned()))
            .is_none()
    );
    assert_eq!(
        registry.latest(&Subject::Traits).unwrap().id().to_string(),
        "traits/1-0-0"
    );
}

#[test]
fn the_example_registry_passes_check_dir() {
    let problems = check_dir(examples_dir()).unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn open_treats_a_missing_directory_as_empty_but_load_does_not() {
    let temp = tempfile::tempdir().unwrap();
    let missing = temp.path().join("schemas");
    let registry = Registry::open(&missing).unwrap();
    assert!(registry.is_empty());
    assert_eq!(registry.dir(), Some(missing.as_path()));
    let error = Registry::load(&missing).unwrap_err();
    assert!(matches!(error, SchemaError::Io { .. }), "{error}");
    assert!(error.to_string().contains("schemas"), "{error}");
}

#[test]
fn hidden_entries_and_top_level_files_are_skipped() {
    let temp = copy_of_examples();
    fs::write(
        temp.path()
            .join("events/order-completed/.1-0-2.json.tmp-1-2"),
        "{",
    )
    .unwrap();
    fs::write(temp.path().join("NOTES.txt"), "not a schema").unwrap();
    let registry = Registry::load(temp.path()).unwrap();
    assert_eq!(registry.len(), 4);
}

/// Writes `content` at `relative` in a copy of the examples and returns the load error.
#[track_caller]
fn load_error(relative: &str, content: &str) -> (String, std::path::PathBuf) {
    let temp = copy_of_examples();
    let path = temp.path().join(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, content).unwrap();
    let error = Registry::load(temp.path()).unwrap_err().to_string();
    assert!(
        error.contains(&path.display().to_string()),
        "the error does not name {}: {error}",
        path.display()
    );
    (error, path)
}

#[test]
fn load_errors_name_the_file() {
    let (error, _) = load_error("events/order-completed/1-0-2.json", "{ not json");
    assert!(error.contains("is not valid json"), "{error}");

    let product = |name: &str, version: &str| {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "self": {"kind": "event", "name": name, "version": version},
            "type": "object"
        })
        .to_string()
    };
    let (error, _) = load_error(
        "events/order-completed/1-0-2.json",
        &product("Order Completed", "1-0-3"),
    );
    assert!(
        error.contains("`self.version` is 1-0-3 but the file name says 1-0-2"),
        "{error}"
    );

    let (error, _) = load_error(
        "events/order-completed/1-0-2.json",
        &product("Product Viewed", "1-0-2"),
    );
    assert!(
        error.contains("belongs in `events/product-viewed/`, not `events/order-completed/`"),
        "{error}"
    );

    let (error, _) = load_error(
        "events/order-completed/1-0-2.json",
        &product("order completed", "1-0-2"),
    );
    assert!(
        error.contains("other files in this directory name \"Order Completed\""),
        "{error}"
    );

    let (error, _) = load_error("traits/1-0-1.json", &product("Order Completed", "1-0-1"));
    assert!(
        error.contains("it is an event schema but lies in `traits/`"),
        "{error}"
    );

    let mut does_not_compile: serde_json::Value =
        serde_json::from_str(&product("Order Completed", "1-0-2")).unwrap();
    does_not_compile["properties"] = json!({"total": {"type": "decimal"}});
    let (error, _) = load_error(
        "events/order-completed/1-0-2.json",
        &does_not_compile.to_string(),
    );
    assert!(error.contains("does not compile"), "{error}");

    let (error, _) = load_error(
        "events/order-completed/1-0-2.json",
        &json!({"self": {"kind": "event", "name": "Order Completed", "version": "1-0-2"}})
            .to_string(),
    );
    assert!(error.contains("`$schema` is missing"), "{error}");

    let (error, _) = load_error("events/order-completed/v2.json", "{}");
    assert!(
        error.contains("expected files named MODEL-REVISION-ADDITION.json"),
        "{error}"
    );
}

#[test]
fn an_unknown_directory_is_named() {
    let temp = copy_of_examples();
    let typo = temp.path().join("event");
    fs::create_dir_all(typo.join("order-completed")).unwrap();
    let error = Registry::load(temp.path()).unwrap_err().to_string();
    assert_eq!(
        error,
        format!(
            "unexpected entry `{}` in the schema directory: only the `events` and `traits` directories belong here",
            typo.display()
        )
    );
}

#[test]
fn check_dir_catches_a_tampered_registry() {
    let temp = copy_of_examples();
    let events = temp.path().join("events");

    // 1-0-1 edited by hand to make `coupon` required: no longer an ADDITION.
    let addition = events.join("order-completed/1-0-1.json");
    let mut tampered = read_json(&addition);
    tampered["required"]
        .as_array_mut()
        .unwrap()
        .push(json!("coupon"));
    write_json(&addition, &tampered);

    // A version that skips one: 1-0-3 after 1-0-1.
    let mut skipping = read_json(&addition);
    skipping["self"]["version"] = json!("1-0-3");
    write_json(&events.join("order-completed/1-0-3.json"), &skipping);

    // A subject whose history starts at 1-0-1.
    let late = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "self": {"kind": "event", "name": "Cart Viewed", "version": "1-0-1"},
        "type": "object"
    });
    write_json(&events.join("cart-viewed/1-0-1.json"), &late);

    let problems = check_dir(temp.path()).unwrap();
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 3, "{lines:#?}");

    assert_eq!(problems[0].schema.to_string(), "Cart Viewed/1-0-1");
    assert!(
        problems[0]
            .message
            .contains("the first version must be 1-0-0")
    );

    assert_eq!(problems[1].schema.to_string(), "Order Completed/1-0-1");
    assert!(
        problems[1]
            .message
            .contains("is not backward compatible with 1-0-0")
            && problems[1].message.contains("requires a new MODEL"),
        "{}",
        problems[1]
    );
    assert_eq!(problems[1].path.as_deref(), Some(addition.as_path()));
    assert!(problems[1]
        .incompatibilities
        .iter()
        .any(|problem| problem.path == "$.coupon" && problem.reason.contains("became required")));

    assert_eq!(problems[2].schema.to_string(), "Order Completed/1-0-3");
    assert!(
        problems[2]
            .message
            .contains("does not follow 1-0-1 by one step: expected 1-0-2, 1-1-0 or 2-0-0"),
        "{}",
        problems[2]
    );
}

#[test]
fn check_dir_compares_across_a_gap_within_a_model() {
    let temp = copy_of_examples();
    let dir = temp.path().join("events/product-viewed");
    let mut narrowed = read_json(&dir.join("1-0-0.json"));
    narrowed["self"]["version"] = json!("1-0-5");
    narrowed["properties"]["price"] = json!({"type": "integer"});
    write_json(&dir.join("1-0-5.json"), &narrowed);
    let problems = check_dir(temp.path()).unwrap();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].message.contains("does not follow"));
    assert!(problems[1].message.contains("not backward compatible"));
    assert!(
        problems[1]
            .incompatibilities
            .iter()
            .any(|problem| problem.path == "$.price")
    );
}
