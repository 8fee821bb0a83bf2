//! Signed webhooks over HTTP: a correctly signed delivery is accepted and mapped; a bad
//! signature, a missing signature and a replay are refused.

use std::sync::Arc;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use trib_log::MemoryLog;

use crate::TestServer;

const SECRET: &str = "whsec_test_only";

const WEBHOOK: &str = r#"
[sources.webhook]
secret = "whsec_test_only"
signature_header = "X-Shop-Hmac-Sha256"
algorithm = "sha256"
encoding = "base64"
delivery_id = { header = "X-Shop-Webhook-Id" }

[[sources.webhook.mappings]]
when = { path = "$.topic", equals = "orders/create" }
type = "track"
event = "Order Completed"
user_id = "$.customer.id"
email = "$.customer.email"
timestamp = "$.created_at"
properties = { order_id = "$.id", revenue = "$.total_price", currency = "$.currency" }
"#;

fn order(id: u64) -> Vec<u8> {
    json!({
        "topic": "orders/create",
        "id": id,
        "created_at": "2026-11-28T09:15:00+01:00",
        "total_price": 129.5,
        "currency": "EUR",
        "customer": {"id": 4411, "email": "ada@example.com"}
    })
    .to_string()
    .into_bytes()
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

async fn deliver(
    server: &TestServer,
    body: Vec<u8>,
    signature: Option<String>,
    delivery: &str,
) -> (u16, Value) {
    let mut request = server
        .http
        .post(server.url("/v1/webhooks/web"))
        .header("content-type", "application/json")
        .header("x-shop-webhook-id", delivery);
    if let Some(signature) = signature {
        request = request.header("x-shop-hmac-sha256", signature);
    }
    let response = request.body(body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn server() -> TestServer {
    TestServer::start_with(
        Arc::new(MemoryLog::new(2)),
        Arc::new(MemoryLog::new(1)),
        WEBHOOK,
    )
    .await
}

#[tokio::test]
async fn a_correctly_signed_delivery_is_accepted_and_mapped() {
    let server = server().await;
    let body = order(1001);
    let (status, answer) = deliver(&server, body.clone(), Some(sign(&body)), "d-1").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 1);
    let stored = server.stored().await;
    assert_eq!(stored.len(), 1);
    let event = &stored[0];
    assert_eq!(event["type"], "track");
    assert_eq!(event["event"], "Order Completed");
    assert_eq!(event["source"], "web");
    assert_eq!(event["userId"], "4411");
    assert_eq!(event["properties"]["order_id"], 1001);
    assert_eq!(event["properties"]["revenue"], 129.5);
    assert_eq!(event["timestamp"], "2026-11-28T08:15:00Z");
    assert_eq!(event["context"]["externalIds"][0]["type"], "email");
}

#[tokio::test]
async fn bad_missing_and_replayed_signatures_are_refused() {
    let server = server().await;
    let body = order(1002);

    let (status, answer) = deliver(&server, body.clone(), Some(sign(b"another body")), "d-2").await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (401, Some("bad_signature")),
        "{answer}"
    );

    let (status, answer) = deliver(&server, body.clone(), None, "d-2").await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (401, Some("missing_signature")),
        "{answer}"
    );

    let (status, answer) = deliver(&server, body.clone(), Some("%%%".to_owned()), "d-2").await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (401, Some("malformed_signature")),
        "{answer}"
    );
    assert!(
        server.stored().await.is_empty(),
        "nothing unauthenticated is stored"
    );

    let (status, _) = deliver(&server, body.clone(), Some(sign(&body)), "d-2").await;
    assert_eq!(status, 200);
    let (status, answer) = deliver(&server, body.clone(), Some(sign(&body)), "d-2").await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (409, Some("replayed_delivery")),
        "{answer}"
    );
    assert_eq!(
        server.stored().await.len(),
        1,
        "a replay creates no second event"
    );
}

#[tokio::test]
async fn an_unknown_webhook_source_is_404() {
    let server = server().await;
    let response = server
        .http
        .post(server.url("/v1/webhooks/ios"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
}
