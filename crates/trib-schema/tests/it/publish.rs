//! Publishing: version sequencing, immutability, compatibility per bump, atomic files.

use std::fs;

use serde_json::json;
use trib_schema::{Bump, Change, PublishError, Registry, SchemaError, Subject};

use crate::{closed_schema, copy_of_examples, order_completed, read_json, version, with_property};

fn signed_up() -> Subject {
    Subject::Event("Signed Up".to_owned())
}

/// A registry in a temporary directory holding `Signed Up` 1-0-0 (`closed_schema`).
fn registry_with_first_version() -> (tempfile::TempDir, Registry) {
    let temp = tempfile::tempdir().unwrap();
    let mut registry = Registry::open(temp.path().join("schemas")).unwrap();
    registry
        .publish(&signed_up(), &version("1-0-0"), &closed_schema())
        .unwrap();
    (temp, registry)
}

#[test]
fn first_publish_writes_a_complete_document_and_reloads() {
    let (temp, registry) = registry_with_first_version();
    let path = temp.path().join("schemas/events/signed-up/1-0-0.json");
    let stored = read_json(&path);
    assert_eq!(
        stored["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(
        stored["self"],
        json!({"kind": "event", "name": "Signed Up", "version": "1-0-0"})
    );
    assert_eq!(stored["required"], json!(["id"]));
    let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers,
        ["1-0-0.json"],
        "temporary files were left behind"
    );

    let reloaded = Registry::load(temp.path().join("schemas")).unwrap();
    let schema = reloaded.latest(&signed_up()).unwrap();
    assert_eq!(
        schema.document(),
        registry.latest(&signed_up()).unwrap().document()
    );
    assert_eq!(schema.path(), Some(path.as_path()));
}

#[test]
fn the_first_version_must_be_1_0_0() {
    let mut registry = Registry::empty();
    let error = registry
        .publish(&signed_up(), &version("1-0-1"), &closed_schema())
        .unwrap_err();
    assert!(
        matches!(error, PublishError::FirstVersion { .. }),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        "the first version of event \"Signed Up\" must be 1-0-0, not 1-0-1"
    );
    let error = registry
        .publish(&signed_up(), &version("2-0-0"), &closed_schema())
        .unwrap_err();
    assert!(
        matches!(error, PublishError::FirstVersion { .. }),
        "{error}"
    );
    assert!(registry.is_empty());
}

#[test]
fn a_version_must_follow_the_latest_by_one_step() {
    let (_temp, mut registry) = registry_with_first_version();
    let schema = with_property(&closed_schema(), "plan", json!({"type": "string"}));
    for skipping in ["1-0-2", "1-1-1", "2-0-1", "3-0-0"] {
        let error = registry
            .check_publish(&signed_up(), &version(skipping), &schema)
            .unwrap_err();
        assert!(
            matches!(error, PublishError::NotNextVersion { .. }),
            "{skipping}: {error}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "version {skipping} of event \"Signed Up\" does not follow the latest version 1-0-0: \
                 publish 1-0-1 (addition), 1-1-0 (revision) or 2-0-0 (model)"
            )
        );
    }
    // Going back to fill in an older line is refused too.
    registry
        .publish(&signed_up(), &version("1-1-0"), &schema)
        .unwrap();
    let error = registry
        .check_publish(&signed_up(), &version("1-0-1"), &schema)
        .unwrap_err();
    assert!(
        matches!(error, PublishError::NotNextVersion { .. }),
        "{error}"
    );
}

#[test]
fn versions_are_immutable_but_identical_republishing_is_a_no_op() {
    let (temp, mut registry) = registry_with_first_version();
    let path = temp.path().join("schemas/events/signed-up/1-0-0.json");
    let before = fs::read(&path).unwrap();

    let plan = registry
        .publish(&signed_up(), &version("1-0-0"), &closed_schema())
        .unwrap();
    assert_eq!(plan.change, Change::Unchanged);
    assert_eq!(fs::read(&path).unwrap(), before);

    let changed = with_property(&closed_schema(), "plan", json!({"type": "string"}));
    let error = registry
        .publish(&signed_up(), &version("1-0-0"), &changed)
        .unwrap_err();
    assert!(matches!(error, PublishError::Immutable { .. }), "{error}");
    assert!(
        error.to_string().contains("versions are immutable"),
        "{error}"
    );
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn a_compatible_addition_is_published() {
    let (temp, mut registry) = registry_with_first_version();
    let schema = with_property(&closed_schema(), "coupon", json!({"type": "string"}));
    let plan = registry
        .publish(&signed_up(), &version("1-0-1"), &schema)
        .unwrap();
    assert_eq!(plan.change, Change::Bump(Bump::Addition));
    assert_eq!(plan.previous, Some(version("1-0-0")));
    assert!(
        plan.breaking.is_empty() && plan.warnings.is_empty(),
        "{plan:#?}"
    );
    assert_eq!(
        plan.path.as_deref(),
        Some(
            temp.path()
                .join("schemas/events/signed-up/1-0-1.json")
                .as_path()
        )
    );
    assert!(plan.path.unwrap().exists());
    assert_eq!(
        registry.latest(&signed_up()).unwrap().id().to_string(),
        "Signed Up/1-0-1"
    );
}

#[test]
fn an_incompatible_addition_is_refused_and_asks_for_a_model() {
    let (temp, registry) = registry_with_first_version();
    let required_plan = {
        let mut schema = with_property(&closed_schema(), "plan", json!({"type": "string"}));
        schema["required"] = json!(["id", "plan"]);
        schema
    };
    let error = registry
        .check_publish(&signed_up(), &version("1-0-1"), &required_plan)
        .unwrap_err();
    let PublishError::Incompatible {
        reasons, previous, ..
    } = &error
    else {
        panic!("expected Incompatible, got {error}");
    };
    assert_eq!(previous, &version("1-0-0"));
    assert!(
        reasons
            .iter()
            .any(|reason| reason.path == "$.plan"
                && reason.reason == "property `plan` became required"),
        "{reasons:#?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with("version 1-0-1 of event \"Signed Up\" is not backward compatible with 1-0-0 (1 problem: $.plan: property `plan` became required)"),
        "{message}"
    );
    assert!(
        message.ends_with("a change that breaks old data requires a new MODEL: publish 2-0-0"),
        "{message}"
    );
    assert!(
        !temp
            .path()
            .join("schemas/events/signed-up/1-0-1.json")
            .exists()
    );
}

#[test]
fn a_revision_must_be_compatible_too() {
    let (_temp, registry) = registry_with_first_version();
    let narrowed = with_property(
        &closed_schema(),
        "id",
        json!({"type": "string", "maxLength": 8}),
    );
    let error = registry
        .check_publish(&signed_up(), &version("1-1-0"), &narrowed)
        .unwrap_err();
    assert!(
        matches!(error, PublishError::Incompatible { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("`maxLength` 8 added"), "{error}");

    let widened = with_property(
        &closed_schema(),
        "id",
        json!({"type": ["string", "integer"]}),
    );
    let plan = registry
        .check_publish(&signed_up(), &version("1-1-0"), &widened)
        .unwrap();
    assert_eq!(plan.change, Change::Bump(Bump::Revision));
    assert_eq!(
        plan.warnings,
        [
            "the change is backward compatible with 1-0-0: an ADDITION (1-0-1) would have been enough"
        ]
    );
}

#[test]
fn a_model_may_break_and_says_why() {
    let (_temp, mut registry) = registry_with_first_version();
    let narrowed = with_property(
        &closed_schema(),
        "id",
        json!({"type": "string", "format": "uuid"}),
    );
    let plan = registry
        .publish(&signed_up(), &version("2-0-0"), &narrowed)
        .unwrap();
    assert_eq!(plan.change, Change::Bump(Bump::Model));
    assert_eq!(plan.breaking.len(), 1, "{plan:#?}");
    assert_eq!(plan.breaking[0].path, "$.id");
    assert!(plan.breaking[0].reason.contains("`format` \"uuid\" added"));
    assert!(plan.warnings.is_empty());

    // A compatible MODEL is allowed, with a warning.
    let plan = registry
        .check_publish(&signed_up(), &version("3-0-0"), &narrowed)
        .unwrap();
    assert!(plan.breaking.is_empty());
    assert!(
        plan.warnings
            .iter()
            .any(|warning| warning.contains("an ADDITION (2-0-1) would have been enough"))
    );
    assert!(
        plan.warnings
            .iter()
            .any(|warning| warning.contains("identical to 2-0-0"))
    );
}

#[test]
fn the_example_addition_republishes_as_a_no_op_and_the_next_addition_checks() {
    let temp = copy_of_examples();
    let mut registry = Registry::load(temp.path()).unwrap();
    let stored = read_json(&temp.path().join("events/order-completed/1-0-1.json"));
    let plan = registry.publish_document(&stored).unwrap();
    assert_eq!(plan.change, Change::Unchanged);

    // The examples' products are open: tightening one of their fields is caught, with the
    // path through `$ref` and the array.
    let mut next = stored.clone();
    next["self"]["version"] = json!("1-0-2");
    next["$defs"]["product"]["properties"]["price"]["exclusiveMinimum"] = json!(0);
    let error = registry.check_publish_document(&next).unwrap_err();
    let PublishError::Incompatible { reasons, .. } = &error else {
        panic!("expected Incompatible, got {error}");
    };
    assert_eq!(reasons[0].path, "$.products[*].price");
    assert!(
        reasons[0]
            .reason
            .contains("lower bound went from ≥ 0 to > 0"),
        "{reasons:#?}"
    );
}

#[test]
fn self_must_agree_with_the_publish() {
    let registry = Registry::empty();
    let document =
        json!({"self": {"kind": "event", "name": "Order Completed", "version": "1-0-0"}});
    let error = registry
        .check_publish(&signed_up(), &version("1-0-0"), &document)
        .unwrap_err();
    assert!(
        matches!(
            error,
            PublishError::Schema(SchemaError::InvalidDocument { .. })
        ),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("its `self` says event \"Order Completed\" 1-0-0"),
        "{error}"
    );

    let error = registry
        .check_publish_document(&json!({"type": "object"}))
        .unwrap_err();
    assert!(error.to_string().contains("no `self` object"), "{error}");

    let plan = registry.check_publish_document(&document).unwrap();
    assert_eq!(plan.subject, order_completed());
}

#[test]
fn a_schema_that_does_not_compile_is_refused() {
    let registry = Registry::empty();
    let error = registry
        .check_publish(&signed_up(), &version("1-0-0"), &json!({"type": "text"}))
        .unwrap_err();
    assert!(error.to_string().contains("does not compile"), "{error}");
    let error = registry
        .check_publish(
            &signed_up(),
            &version("1-0-0"),
            &json!({"$ref": "https://example.com/s.json"}),
        )
        .unwrap_err();
    assert!(error.to_string().contains("does not compile"), "{error}");
}

#[test]
fn two_names_cannot_share_a_directory() {
    let (_temp, registry) = registry_with_first_version();
    let error = registry
        .check_publish(
            &Subject::Event("signed up".to_owned()),
            &version("1-0-0"),
            &closed_schema(),
        )
        .unwrap_err();
    assert!(
        matches!(error, PublishError::SlugCollision { .. }),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        "event \"signed up\" cannot be stored: its directory `events/signed-up` already belongs to event \"Signed Up\""
    );
}

#[test]
fn traits_publish_to_the_traits_directory() {
    let temp = tempfile::tempdir().unwrap();
    let mut registry = Registry::open(temp.path()).unwrap();
    let plan = registry
        .publish(
            &Subject::Traits,
            &version("1-0-0"),
            &json!({"type": "object"}),
        )
        .unwrap();
    assert_eq!(
        plan.path.as_deref(),
        Some(temp.path().join("traits/1-0-0.json").as_path())
    );
    assert_eq!(
        read_json(&temp.path().join("traits/1-0-0.json"))["self"],
        json!({"kind": "traits", "version": "1-0-0"})
    );
}

#[test]
fn a_file_that_appeared_meanwhile_is_not_overwritten() {
    let (temp, registry) = registry_with_first_version();
    let mut stale = registry.clone();
    let schema = with_property(&closed_schema(), "coupon", json!({"type": "string"}));
    // Another process published 1-0-1 after `stale` was loaded.
    let path = temp.path().join("schemas/events/signed-up/1-0-1.json");
    fs::write(&path, "{\"from\": \"elsewhere\"}").unwrap();
    let error = stale
        .publish(&signed_up(), &version("1-0-1"), &schema)
        .unwrap_err();
    assert!(
        matches!(error, PublishError::Schema(SchemaError::Io { .. })),
        "{error}"
    );
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "{\"from\": \"elsewhere\"}"
    );
    assert_eq!(
        stale.latest(&signed_up()).unwrap().version(),
        &version("1-0-0")
    );
}

#[test]
fn republishing_a_file_with_the_fragment_form_of_schema_is_a_no_op() {
    let temp = copy_of_examples();
    let path = temp.path().join("traits/1-0-0.json");
    let mut stored = read_json(&path);
    stored["$schema"] = json!("https://json-schema.org/draft/2020-12/schema#");
    fs::write(&path, serde_json::to_string(&stored).unwrap()).unwrap();
    let mut registry = Registry::load(temp.path()).unwrap();
    let plan = registry.publish_document(&stored).unwrap();
    assert_eq!(plan.change, Change::Unchanged);
}
