//! Registry tests against real directories: the example schemas in `config/examples/schemas`
//! and temporary copies of them.

// Helpers outside `#[test]` functions are test code too (clippy.toml only exempts the tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod publish;
mod registry;
mod validate;

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use trib_schema::{Registry, SchemaVer, Subject};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/examples/schemas")
}

fn examples() -> Registry {
    Registry::load(examples_dir()).unwrap()
}

/// A temporary copy of the example registry.
fn copy_of_examples() -> tempfile::TempDir {
    let temp = tempfile::tempdir().unwrap();
    copy_dir(&examples_dir(), temp.path());
    temp
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn write_json(path: &Path, value: &Value) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, serde_json::to_string_pretty(value).unwrap()).unwrap();
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

fn order_completed() -> Subject {
    Subject::Event("Order Completed".to_owned())
}

fn version(text: &str) -> SchemaVer {
    text.parse().unwrap()
}

/// A small event schema: closed, one required string.
fn closed_schema() -> Value {
    json!({
        "type": "object",
        "required": ["id"],
        "additionalProperties": false,
        "properties": {"id": {"type": "string"}}
    })
}

/// `closed_schema` with one more property.
fn with_property(schema: &Value, name: &str, property: Value) -> Value {
    let mut schema = schema.clone();
    schema["properties"][name] = property;
    schema
}

#[test]
fn registry_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Registry>();
}
