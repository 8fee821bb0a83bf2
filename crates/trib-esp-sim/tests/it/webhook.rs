use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use trib_esp_sim::{SimKind, Simulator};

use crate::{body, client, start_kind};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, as documented in the crate docs.
fn signature(secret: &str, timestamp: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

async fn send(sim: &Simulator, payload: &Value, signature: Option<String>) -> reqwest::Response {
    let text = payload.to_string();
    let mut request = client()
        .post(format!("{}/hooks/tributary", sim.base_url()))
        .header("content-type", "application/json")
        .body(text);
    if let Some(signature) = signature {
        request = request.header("x-tributary-signature", signature);
    }
    request.send().await.expect("post")
}

#[tokio::test]
async fn signed_events_are_stored_by_profile_id() {
    let sim = start_kind(SimKind::Webhook).await;
    let events = json!([
        {"type": "upsert", "profile_id": "p1", "email": "Ada@example.com", "fields": {"plan": "gold"}},
        {"type": "upsert", "profile_id": "p2", "email": "grace@example.com", "fields": {}},
    ]);
    let signed = signature("test-secret", now(), &events.to_string());
    let response = send(&sim, &events, Some(signed)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(body(response).await, json!({"received": 2}));
    let contacts = sim.contacts();
    assert_eq!(contacts["p1"].email, "ada@example.com");
    assert_eq!(contacts["p1"].fields["plan"], "gold");

    let delete = json!({"type": "delete", "profile_id": "p1"});
    let signed = signature("test-secret", now(), &delete.to_string());
    assert_eq!(send(&sim, &delete, Some(signed)).await.status(), 200);
    assert_eq!(sim.contacts().keys().collect::<Vec<_>>(), ["p2"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn wrong_missing_or_stale_signatures_are_refused() {
    let sim = start_kind(SimKind::Webhook).await;
    let event = json!({"type": "upsert", "profile_id": "p1", "email": "a@example.com"});
    let text = event.to_string();
    for signature in [
        None,
        Some(signature("wrong-secret", now(), &text)),
        Some(signature("test-secret", now() - 3600, &text)),
        Some(signature("test-secret", now(), "{}")),
        Some("garbage".to_owned()),
    ] {
        let response = send(&sim, &event, signature).await;
        assert_eq!(response.status(), 401);
        assert_eq!(body(response).await, json!({"error": "invalid signature"}));
    }
    assert!(sim.contacts().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn malformed_batches_apply_nothing() {
    let sim = start_kind(SimKind::Webhook).await;
    let events = json!([
        {"type": "upsert", "profile_id": "p1", "email": "a@example.com"},
        {"type": "rename", "profile_id": "p2"},
    ]);
    let signed = signature("test-secret", now(), &events.to_string());
    let response = send(&sim, &events, Some(signed)).await;
    assert_eq!(response.status(), 400);
    assert!(body(response).await["error"].is_string());
    assert!(sim.contacts().is_empty());
    sim.shutdown().await;
}
