//! The schema registry over HTTP: compatible and incompatible publishes, validation failures in
//! the quarantine with their field path, and replay after a fix.

use std::sync::Arc;

use serde_json::{Value, json};
use trib_log::MemoryLog;

use crate::{ADMIN_KEY, TestServer};

fn order_schema(version: &str, required: &[&str]) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "self": {"kind": "event", "name": "Order Completed", "version": version},
        "type": "object",
        "required": required,
        "properties": {
            "order_id": {"type": "string"},
            "revenue": {"type": "number", "minimum": 0},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}
        }
    })
}

async fn publish(server: &TestServer, document: &Value) -> (u16, Value) {
    let response = server
        .http
        .post(server.url("/v1/schemas"))
        .bearer_auth(ADMIN_KEY)
        .json(document)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn replay(server: &TestServer) -> Value {
    let response = server
        .http
        .post(server.url("/v1/quarantine/replay"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn publishes_are_checked_for_compatibility() {
    let server = TestServer::start().await;
    let (status, body) = publish(&server, &order_schema("1-0-0", &["order_id", "currency"])).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["plan"]["change"], "initial");

    // Dropping a requirement accepts everything the old version accepted: an ADDITION.
    let (status, body) = publish(&server, &order_schema("1-0-1", &["order_id"])).await;
    assert_eq!(status, 201, "{body}");

    // Adding a requirement rejects old events: not an ADDITION, and the answer says why.
    let (status, body) = publish(&server, &order_schema("1-0-2", &["order_id", "revenue"])).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "incompatible_schema");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("revenue") && message.contains("MODEL") && message.contains("2-0-0"),
        "{message}"
    );

    // The same change as a new MODEL is accepted, and it lists what it breaks.
    let (status, body) = publish(&server, &order_schema("2-0-0", &["order_id", "revenue"])).await;
    assert_eq!(status, 201, "{body}");
    assert!(
        !body["plan"]["breaking"].as_array().unwrap().is_empty(),
        "{body}"
    );

    // Versions must follow each other.
    let (status, body) = publish(&server, &order_schema("4-0-0", &["order_id"])).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid_schema")),
        "{body}"
    );

    let listed: Value = server
        .http
        .get(server.url("/v1/schemas"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["schemas"].as_array().unwrap().len(), 3, "{listed}");
    let shown = server
        .http
        .get(server.url("/v1/schemas/events/Order%20Completed?version=1-0-1"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status().as_u16(), 200);
    let shown: Value = shown.json().await.unwrap();
    assert_eq!(shown["self"]["version"], "1-0-1");
}

#[tokio::test]
async fn validation_failures_are_quarantined_with_their_path_and_replayed_after_a_fix() {
    let server =
        TestServer::start_with(Arc::new(MemoryLog::new(2)), Arc::new(MemoryLog::new(1)), "").await;
    publish(&server, &order_schema("1-0-0", &["order_id", "currency"])).await;

    let batch = json!({"batch": [
        {"type": "track", "userId": "u1", "event": "Order Completed", "messageId": "bad-currency",
         "properties": {"order_id": "o-1", "currency": "euro"}},
        {"type": "track", "userId": "u2", "event": "Order Completed", "messageId": "good",
         "properties": {"order_id": "o-2", "currency": "EUR"}},
    ]});
    let (status, answer) = server.post("/v1/batch", batch.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(1), Some(1)),
        "{answer}"
    );
    assert_eq!(answer["errors"][0]["code"], "schema_violation");
    assert_eq!(answer["errors"][0]["field"], "properties.currency");
    let quarantined = server.quarantined().await;
    assert_eq!(quarantined[0]["schema"], "Order Completed/1-0-0");
    assert_eq!(quarantined[0]["field"], "properties.currency");
    assert_eq!(
        server.stored().await[0]["context"]["tributary"]["schema"],
        "Order Completed/1-0-0"
    );

    // Nothing changed: the replay finds it still failing and stores nothing.
    let report = replay(&server).await;
    assert_eq!(report["still_failing"]["schema_violation"], 1, "{report}");
    assert_eq!(server.stored().await.len(), 1);
    assert_eq!(
        server.quarantined().await.len(),
        1,
        "a failed replay does not grow the quarantine"
    );

    // A compatible fix: currency codes may be any string now.
    let mut fixed = order_schema("1-0-1", &["order_id", "currency"]);
    fixed["properties"]["currency"] = json!({"type": "string"});
    let (status, body) = publish(&server, &fixed).await;
    assert_eq!(status, 201, "{body}");
    let report = replay(&server).await;
    assert_eq!(
        (report["replayed"].as_u64(), report["examined"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    let stored = server.stored().await;
    assert_eq!(stored.len(), 2);
    assert!(
        stored
            .iter()
            .any(|event| event["messageId"] == "bad-currency")
    );

    // Exactly once: a second replay skips what the first one resolved.
    let report = replay(&server).await;
    assert_eq!(
        (
            report["replayed"].as_u64(),
            report["already_resolved"].as_u64()
        ),
        (Some(0), Some(1)),
        "{report}"
    );
    assert_eq!(server.stored().await.len(), 2);
}

#[tokio::test]
async fn a_parse_rejection_is_replayable_once_the_rule_it_broke_is_gone() {
    // Parse-level rejections (missing ids) never pass on replay; unknown events quarantined by
    // policy pass once a schema exists.
    let server = TestServer::start_with(
        Arc::new(MemoryLog::new(2)),
        Arc::new(MemoryLog::new(1)),
        "unknown_events = \"quarantine\"",
    )
    .await;
    let batch = json!({"batch": [
        {"type": "track", "userId": "u1", "event": "Order Completed", "messageId": "early",
         "properties": {"order_id": "o-1", "currency": "EUR"}},
        {"type": "track", "event": "Order Completed", "messageId": "nobody"},
    ]});
    let (_, answer) = server.post("/v1/batch", batch.to_string()).await;
    assert_eq!(answer["rejected"], 2, "{answer}");
    publish(&server, &order_schema("1-0-0", &["order_id"])).await;
    let report = replay(&server).await;
    assert_eq!(report["replayed"], 1, "{report}");
    assert_eq!(report["still_failing"]["missing_identity"], 1, "{report}");
}
