use std::sync::{Arc, RwLock};

use serde_json::{Value, json};
use trib_config::Config;
use trib_core::{Event, EventGate};
use trib_schema::Registry;

use crate::{Gates, SourceGate};

fn example_registry() -> crate::SharedRegistry {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/examples/schemas");
    Arc::new(RwLock::new(Registry::load(dir).unwrap()))
}

fn gate(source_toml: &str) -> Arc<SourceGate> {
    let config = Config::from_toml_str(
        &format!("version = 1\n[[sources]]\nname = \"crm\"\nwrite_key = \"wk\"\n{source_toml}"),
        &|_| None,
    )
    .unwrap();
    Gates::new(&config, example_registry())
        .get("crm")
        .unwrap()
        .clone()
}

fn event(json: Value) -> Event {
    let mut base = json!({
        "messageId": "m1", "source": "crm", "userId": "u1",
        "timestamp": "2026-11-28T10:00:00Z", "receivedAt": "2026-11-28T10:00:01Z",
    });
    base.as_object_mut()
        .unwrap()
        .extend(json.as_object().unwrap().clone());
    serde_json::from_value(base).unwrap()
}

#[test]
fn normalization_rewrites_fields_and_rejects_or_drops_bad_values() {
    let gate = gate(
        "default_region = \"US\"\n[sources.normalize]\n\"traits.email\" = \"email\"\n\"traits.phone\" = { rule = \"phone\", on_error = \"drop\" }\n",
    );
    let mut ok = event(
        json!({"type": "identify", "traits": {"email": "  Ada@Example.COM ", "phone": "(415) 555-2671"}}),
    );
    gate.admit(&mut ok).unwrap();
    let traits = ok.traits.as_ref().unwrap();
    assert_eq!(traits["email"], "ada@example.com");
    assert_eq!(traits["phone"], "+14155552671");

    let mut dropped = event(
        json!({"type": "identify", "traits": {"email": "ada@example.com", "phone": "call me"}}),
    );
    gate.admit(&mut dropped).unwrap();
    assert!(dropped.traits.as_ref().unwrap().get("phone").is_none());
    assert_eq!(
        dropped.context["tributary"]["dropped"][0]["field"],
        "traits.phone"
    );
    assert_eq!(
        dropped.context["tributary"]["dropped"][0]["code"],
        "invalid_phone"
    );

    let mut rejected = event(json!({"type": "identify", "traits": {"email": "not an address"}}));
    let refusal = gate.admit(&mut rejected).unwrap_err();
    assert_eq!(refusal.code, "invalid_email");
    assert_eq!(refusal.field.as_deref(), Some("traits.email"));
    assert!(
        !refusal.reason.contains("not an address"),
        "personal values stay out of reasons: {}",
        refusal.reason
    );
}

#[test]
fn minimization_removes_undeclared_fields_but_keeps_tributary_annotations() {
    let gate =
        gate("allowed_fields = [\"traits.email\", \"properties.*\", \"context.library.*\"]\n");
    let mut identify = event(json!({
        "type": "identify",
        "traits": {"email": "a@example.com", "ssn": "078-05-1120", "address": {"city": "Paris"}},
        "context": {"library": {"name": "x"}, "ip": "198.51.100.7"},
    }));
    gate.admit(&mut identify).unwrap();
    assert_eq!(
        Value::Object(identify.traits.clone().unwrap()),
        json!({"email": "a@example.com"})
    );
    assert!(identify.context.get("ip").is_none());
    assert_eq!(identify.context["library"]["name"], "x");
    assert_eq!(identify.context["tributary"]["schema"], "traits/1-0-0");
}

#[test]
fn track_events_are_validated_against_the_newest_schema_of_their_name() {
    let gate = gate("");
    let mut valid = event(
        json!({"type": "track", "event": "Order Completed", "properties": {
        "order_id": "o-1", "total": 42.5, "revenue": 42.5, "currency": "EUR", "coupon": "WELCOME10",
        "products": [{"product_id": "p-1", "price": 10.0, "quantity": 1}]}}),
    );
    gate.admit(&mut valid).unwrap();
    assert_eq!(
        valid.context["tributary"]["schema"],
        "Order Completed/1-0-1"
    );

    let mut invalid = event(
        json!({"type": "track", "event": "Order Completed", "properties": {
        "order_id": "o-1", "total": 42.5, "revenue": "lots", "currency": "EUR",
        "products": [{"product_id": "p-1", "price": 10.0, "quantity": 1}]}}),
    );
    let refusal = gate.admit(&mut invalid).unwrap_err();
    assert_eq!(refusal.code, "schema_violation");
    assert_eq!(refusal.field.as_deref(), Some("properties.revenue"));
    assert_eq!(refusal.schema.as_deref(), Some("Order Completed/1-0-1"));
    assert_eq!(
        invalid.properties.as_ref().unwrap()["revenue"],
        "lots",
        "the event is left whole for the quarantine"
    );
}

#[test]
fn events_without_a_schema_follow_the_source_policy() {
    let unknown = json!({"type": "track", "event": "Never Described", "properties": {"a": 1}});
    gate("").admit(&mut event(unknown.clone())).unwrap();
    let refusal = gate("unknown_events = \"quarantine\"\n")
        .admit(&mut event(unknown))
        .unwrap_err();
    assert_eq!(refusal.code, "no_schema");
    // Pages are not validated, whatever the policy.
    gate("unknown_events = \"quarantine\"\n")
        .admit(&mut event(json!({"type": "page", "name": "Home"})))
        .unwrap();
}
