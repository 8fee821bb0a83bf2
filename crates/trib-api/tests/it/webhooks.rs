//! Signed webhooks over HTTP: a correctly signed delivery is accepted and mapped; a bad
//! signature, a missing signature and a replay are refused; elements the mapping refused are
//! replayed from the quarantine, exactly once, after the mapping is fixed.

use std::sync::Arc;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use trib_log::{EventLog, MemoryLog};

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

/// Line items mapped one event each; the buyer is `@.buyer`, and the topic header must say
/// `orders/create`. `FIX` adds `anonymous_id`, for items that name no buyer.
const ITEMS: &str = r#"
[sources.webhook]
secret = "whsec_test_only"
signature_header = "X-Shop-Hmac-Sha256"
algorithm = "sha256"
encoding = "base64"
delivery_id = { header = "X-Shop-Webhook-Id" }

[[sources.webhook.mappings]]
when = [{ header = "X-Shop-Topic", equals = "orders/create" }, { header = "X-Shop-Hmac-Sha256", exists = true }]
each = "$.line_items[*]"
type = "track"
event = "Item Purchased"
user_id = "@.buyer"
properties = { sku = "@.sku", order_id = "$.id" }
"#;

const FIX: &str = "user_id = \"@.buyer\"\nanonymous_id = \"$.cart_token\"";

fn items() -> Vec<u8> {
    json!({
        "id": 77,
        "cart_token": "cart-9",
        "line_items": [{"sku": "A-1", "buyer": "u-1"}, {"sku": "B-2"}, {"sku": "C-3"}]
    })
    .to_string()
    .into_bytes()
}

async fn deliver_items(server: &TestServer, body: Vec<u8>, delivery: &str) -> (u16, Value) {
    let response = server
        .http
        .post(server.url("/v1/webhooks/web"))
        .header("content-type", "application/json")
        .header("x-shop-webhook-id", delivery)
        .header("x-shop-topic", "orders/create")
        .header("x-shop-hmac-sha256", sign(&body))
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn replay(server: &TestServer) -> Value {
    let response = server
        .http
        .post(server.url("/v1/quarantine/replay"))
        .bearer_auth(crate::ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn elements_refused_by_the_mapping_are_replayed_once_after_the_mapping_is_fixed() {
    let events: Arc<dyn EventLog> = Arc::new(MemoryLog::new(2));
    let quarantine: Arc<dyn EventLog> = Arc::new(MemoryLog::new(1));
    let resolutions: Arc<dyn EventLog> = Arc::new(MemoryLog::new(1));
    let before = TestServer::start_with_resolutions(
        events.clone(),
        quarantine.clone(),
        resolutions.clone(),
        ITEMS,
    )
    .await;
    let body = items();
    let (status, answer) = deliver_items(&before, body.clone(), "d-77").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(1), Some(2)),
        "{answer}"
    );
    let quarantined = before.quarantined().await;
    assert_eq!(quarantined.len(), 2);
    assert_eq!(quarantined[0]["code"], "missing_identity");
    assert_eq!(quarantined[0]["messageId"], "d-77-1");
    assert_eq!(quarantined[0]["message"], json!({"sku": "B-2"}));
    let context = &quarantined[0]["replayContext"];
    assert_eq!(context["delivery_id"], "d-77");
    assert_eq!(context["element"], 1);
    assert_eq!(
        context["headers"],
        json!([["x-shop-topic", "orders/create"]])
    );
    assert_eq!(
        context["body"]["cart_token"], "cart-9",
        "the first refused element keeps the body"
    );
    assert!(
        quarantined[1]["replayContext"].get("body").is_none(),
        "the next refused element of the delivery does not store the body again"
    );
    let text = serde_json::to_string(&quarantined).unwrap();
    assert!(
        !text.contains(&sign(&body)) && !text.contains(SECRET),
        "neither the signature nor the secret is kept: {text}"
    );

    // The mapping is unchanged: both still fail, and nothing is stored or quarantined again.
    let report = replay(&before).await;
    assert_eq!(report["still_failing"]["missing_identity"], 2, "{report}");
    assert_eq!(report["not_replayable"], json!({}), "{report}");
    assert_eq!(before.stored().await.len(), 1);
    assert_eq!(before.quarantined().await.len(), 2);

    // The fix (a restart with a new configuration): items without a buyer use the cart.
    let fixed = ITEMS.replace("user_id = \"@.buyer\"", FIX);
    assert_ne!(fixed, ITEMS);
    let after = TestServer::start_with_resolutions(
        events.clone(),
        quarantine.clone(),
        resolutions.clone(),
        &fixed,
    )
    .await;
    let report = replay(&after).await;
    assert_eq!(
        (
            report["examined"].as_u64(),
            report["replayed"].as_u64(),
            report["events_stored"].as_u64()
        ),
        (Some(2), Some(2), Some(2)),
        "{report}"
    );
    let stored = after.stored().await;
    assert_eq!(stored.len(), 3);
    let replayed = stored
        .iter()
        .find(|event| event["messageId"] == "d-77-2")
        .unwrap();
    assert_eq!(replayed["anonymousId"], "cart-9");
    assert_eq!(
        replayed["properties"],
        json!({"sku": "C-3", "order_id": 77})
    );
    assert_eq!(
        replayed["receivedAt"], stored[0]["receivedAt"],
        "replayed as received, at the delivery's receive time"
    );

    // Exactly once: a second replay skips both, and the sender retrying the delivery (the new
    // server has not seen it) creates nothing either: same messageIds as at receipt.
    let report = replay(&after).await;
    assert_eq!(
        (
            report["replayed"].as_u64(),
            report["already_resolved"].as_u64()
        ),
        (Some(0), Some(2)),
        "{report}"
    );
    let (status, answer) = deliver_items(&after, body, "d-77").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["accepted"].as_u64(), answer["duplicates"].as_u64()),
        (Some(0), Some(3)),
        "{answer}"
    );
    assert_eq!(after.stored().await.len(), 3);
    assert_eq!(after.quarantined().await.len(), 2);
}

#[tokio::test]
async fn an_unmapped_delivery_replays_every_event_it_maps_to_now() {
    let events: Arc<dyn EventLog> = Arc::new(MemoryLog::new(2));
    let quarantine: Arc<dyn EventLog> = Arc::new(MemoryLog::new(1));
    let resolutions: Arc<dyn EventLog> = Arc::new(MemoryLog::new(1));
    // Only `orders/paid` is mapped at first.
    let before_toml = ITEMS.replace("orders/create", "orders/paid");
    let before = TestServer::start_with_resolutions(
        events.clone(),
        quarantine.clone(),
        resolutions.clone(),
        &before_toml,
    )
    .await;
    let (status, answer) = deliver_items(&before, items(), "d-78").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rejected"], 1, "{answer}");
    let quarantined = before.quarantined().await;
    assert_eq!(quarantined[0]["code"], "unmapped");
    assert!(
        quarantined[0]["replayContext"].get("body").is_none(),
        "the message is the body already"
    );

    let after = TestServer::start_with_resolutions(
        events.clone(),
        quarantine.clone(),
        resolutions.clone(),
        &ITEMS.replace("user_id = \"@.buyer\"", FIX),
    )
    .await;
    let report = replay(&after).await;
    assert_eq!(
        (
            report["replayed"].as_u64(),
            report["events_stored"].as_u64()
        ),
        (Some(1), Some(3)),
        "{report}"
    );
    let mut ids: Vec<String> = after
        .stored()
        .await
        .iter()
        .map(|event| event["messageId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["d-78-0", "d-78-1", "d-78-2"]);
    assert_eq!(replay(&after).await["already_resolved"], 1);
    assert_eq!(after.stored().await.len(), 3);
}
