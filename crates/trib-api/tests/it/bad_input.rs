//! One test per kind of bad input: the specific 4xx or quarantine outcome, then a good request
//! to show the server keeps serving and nothing accepted was lost.

use std::io::Write;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;
use trib_log::{AppendOutcome, EventLog, LogError, MemoryLog, Record, StoredRecord};

use crate::{TestServer, WRITE_KEY};

async fn assert_refused(
    server: &TestServer,
    status: u16,
    body: &serde_json::Value,
    expected_status: u16,
    code: &str,
) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "{body}"
    );
    server.assert_still_serving().await;
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn no_auth_is_401() {
    let server = TestServer::start().await;
    let response = server
        .http
        .post(server.url("/v1/track"))
        .body(r#"{"userId":"u","event":"e"}"#)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert!(response.headers().contains_key("www-authenticate"));
    let body = response.json().await.unwrap();
    assert_refused(&server, status, &body, 401, "missing_write_key").await;
    assert_eq!(
        server.stored().await.len(),
        1,
        "only the good request is stored"
    );
}

#[tokio::test]
async fn wrong_write_key_is_401_in_header_and_in_body() {
    let server = TestServer::start().await;
    let response = server
        .http
        .post(server.url("/v1/track"))
        .basic_auth("wk_nope", Some(""))
        .body(r#"{"userId":"u","event":"e"}"#)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert_refused(
        &server,
        status,
        &response.json().await.unwrap(),
        401,
        "invalid_write_key",
    )
    .await;
    let response = server
        .http
        .post(server.url("/v1/track"))
        .body(r#"{"writeKey":"wk_nope","userId":"u","event":"e"}"#)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert_refused(
        &server,
        status,
        &response.json().await.unwrap(),
        401,
        "invalid_write_key",
    )
    .await;
}

#[tokio::test]
async fn malformed_json_is_400_with_its_position() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post("/v1/batch", r#"{"batch": [{"type": "track",}]}"#)
        .await;
    assert!(
        body["message"].as_str().unwrap().contains("column"),
        "{body}"
    );
    assert_refused(&server, status, &body, 400, "malformed_json").await;
}

#[tokio::test]
async fn oversize_message_is_quarantined_and_its_batch_neighbours_accepted() {
    let server = TestServer::start().await;
    let big = "x".repeat(33 * 1024);
    let body = json!({"batch": [
        {"type": "track", "userId": "u1", "event": "Small", "messageId": "small-1"},
        {"type": "track", "userId": "u2", "event": "Big", "messageId": "big-1", "properties": {"blob": big}},
    ]});
    let (status, answer) = server.post("/v1/batch", body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(answer["errors"][0]["index"], 1);
    assert_eq!(answer["errors"][0]["code"], "message_too_large");
    let quarantined = server.quarantined().await;
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0]["code"], "message_too_large");
    assert_eq!(
        quarantined[0]["message"]["properties"]["blob"]
            .as_str()
            .unwrap()
            .len(),
        big.len(),
        "the raw message is kept whole"
    );
    server.assert_still_serving().await;
}

#[tokio::test]
async fn oversize_request_is_413() {
    let server = TestServer::start().await;
    let messages: Vec<_> = (0..40)
        .map(|i| json!({"type": "track", "userId": "u", "event": "e", "messageId": i.to_string(), "properties": {"pad": "y".repeat(15 * 1024)}}))
        .collect();
    let (status, body) = server
        .post("/v1/batch", json!({"batch": messages}).to_string())
        .await;
    assert_refused(&server, status, &body, 413, "request_too_large").await;
    assert_eq!(
        server.stored().await.len(),
        1,
        "nothing of the refused request is stored"
    );
}

#[tokio::test]
async fn gzip_bomb_is_413_without_inflating_it() {
    let server = TestServer::start().await;
    // 1 GB of zeros compresses to about 1 MB; the server must stop after 500 KB of output.
    let mut bomb_source =
        Vec::from(&b"{\"batch\":[{\"type\":\"track\",\"userId\":\"u\",\"event\":\""[..]);
    bomb_source.resize(64 << 20, b'a');
    let bomb = gzip(&bomb_source);
    assert!(bomb.len() < 200 * 1024, "bomb is {} bytes", bomb.len());
    let response = server
        .http
        .post(server.url("/v1/batch"))
        .basic_auth(WRITE_KEY, Some(""))
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert_refused(
        &server,
        status,
        &response.json().await.unwrap(),
        413,
        "request_too_large",
    )
    .await;
}

#[tokio::test]
async fn invalid_gzip_is_400() {
    let server = TestServer::start().await;
    let response = server
        .http
        .post(server.url("/v1/batch"))
        .basic_auth(WRITE_KEY, Some(""))
        .header("content-encoding", "gzip")
        .body("this is not gzip")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert_refused(
        &server,
        status,
        &response.json().await.unwrap(),
        400,
        "invalid_gzip",
    )
    .await;
}

/// Sends a batch of one bad message and a good one; checks the bad one's quarantine entry.
async fn assert_quarantined(bad: serde_json::Value, code: &str, field: Option<&str>) {
    let server = TestServer::start().await;
    let body = json!({"batch": [bad, {"type": "track", "userId": "u-good", "event": "Good", "messageId": "good-1"}]});
    let (status, answer) = server.post("/v1/batch", body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert_eq!(answer["rejected"], 1, "{answer}");
    let error = &answer["errors"][0];
    assert_eq!(error["index"], 0, "{answer}");
    assert_eq!(error["code"], code, "{answer}");
    if let Some(field) = field {
        assert_eq!(error["field"], field, "{answer}");
    }
    let quarantined = server.quarantined().await;
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0]["code"], code);
    assert_eq!(quarantined[0]["source"], "web");
    assert_eq!(
        quarantined[0]["message"], bad,
        "the raw message is kept as sent"
    );
    let stored = server.stored().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["messageId"], "good-1");
    server.assert_still_serving().await;
}

#[tokio::test]
async fn missing_ids_are_quarantined() {
    assert_quarantined(
        json!({"type": "track", "event": "No One", "messageId": "m-1"}),
        "missing_identity",
        None,
    )
    .await;
    assert_quarantined(
        json!({"type": "identify", "userId": null, "anonymousId": null, "traits": {}}),
        "missing_identity",
        None,
    )
    .await;
}

#[tokio::test]
async fn missing_event_name_is_quarantined() {
    assert_quarantined(
        json!({"type": "track", "userId": "u1"}),
        "missing_event",
        Some("event"),
    )
    .await;
}

#[tokio::test]
async fn bad_timestamp_is_quarantined() {
    assert_quarantined(
        json!({"type": "track", "userId": "u1", "event": "e", "timestamp": "yesterday"}),
        "invalid_timestamp",
        Some("timestamp"),
    )
    .await;
    assert_quarantined(
        json!({"type": "track", "userId": "u1", "event": "e", "timestamp": "2026-13-01T00:00:00Z"}),
        "invalid_timestamp",
        Some("timestamp"),
    )
    .await;
}

#[tokio::test]
async fn non_object_traits_are_quarantined() {
    assert_quarantined(
        json!({"type": "identify", "userId": "u1", "traits": "vip"}),
        "invalid_field",
        Some("traits"),
    )
    .await;
    assert_quarantined(
        json!({"type": "identify", "userId": "u1", "traits": [1, 2]}),
        "invalid_field",
        Some("traits"),
    )
    .await;
}

#[tokio::test]
async fn wrong_types_are_quarantined() {
    assert_quarantined(
        json!({"type": "track", "userId": {"id": 1}, "event": "e"}),
        "invalid_field",
        Some("userId"),
    )
    .await;
    assert_quarantined(
        json!({"type": "track", "userId": "u1", "event": 42}),
        "invalid_field",
        Some("event"),
    )
    .await;
    assert_quarantined(
        json!({"type": "track", "userId": "u1", "event": "e", "properties": "x"}),
        "invalid_field",
        Some("properties"),
    )
    .await;
    assert_quarantined(
        json!({"type": "purchase", "userId": "u1"}),
        "unknown_type",
        Some("type"),
    )
    .await;
}

#[tokio::test]
async fn invalid_single_message_is_400_and_kept_in_quarantine() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post("/v1/identify", r#"{"traits":{"email":"a@example.com"}}"#)
        .await;
    assert_refused(&server, status, &body, 400, "missing_identity").await;
    assert_eq!(server.quarantined().await.len(), 1);
}

#[tokio::test]
async fn batch_not_an_array_is_400() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post("/v1/batch", r#"{"batch": {"type": "track"}}"#)
        .await;
    assert_refused(&server, status, &body, 400, "batch_not_array").await;
}

/// A log that is always full.
struct FullLog;

#[async_trait]
impl EventLog for FullLog {
    fn partition_count(&self) -> u32 {
        1
    }
    async fn append(&self, _records: Vec<Record>) -> Result<Vec<AppendOutcome>, LogError> {
        Err(LogError::Overloaded {
            retry_after: std::time::Duration::from_secs(2),
        })
    }
    async fn read(
        &self,
        _partition: u32,
        _from: u64,
        _max: usize,
    ) -> Result<Vec<StoredRecord>, LogError> {
        Ok(Vec::new())
    }
    async fn end_offset(&self, _partition: u32) -> Result<u64, LogError> {
        Ok(0)
    }
    async fn committed_offset(
        &self,
        _consumer: &str,
        _partition: u32,
    ) -> Result<Option<u64>, LogError> {
        Ok(None)
    }
    async fn commit_offset(
        &self,
        _consumer: &str,
        _partition: u32,
        _next: u64,
    ) -> Result<(), LogError> {
        Ok(())
    }
    async fn close(&self) -> Result<(), LogError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_full_log_answers_429_with_retry_after() {
    let server = TestServer::start_with_logs(Arc::new(FullLog), Arc::new(MemoryLog::new(1))).await;
    let response = server
        .http
        .post(server.url("/v1/track"))
        .basic_auth(WRITE_KEY, Some(""))
        .body(r#"{"userId":"u","event":"e"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "2");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "overloaded");
}

/// A single-message call whose message is refused names the message and the field, as a
/// batch's `errors` do.
#[tokio::test]
async fn a_refused_single_message_names_its_message_id_and_field() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post("/v1/track", r#"{"userId":"u-3","messageId":"m-noevent"}"#)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "missing_event", "{body}");
    assert_eq!(body["field"], "event", "{body}");
    assert_eq!(body["messageId"], "m-noevent", "{body}");
}

/// An oversized batch item is refused with its own `messageId`, and a retried batch does
/// not quarantine it twice.
#[tokio::test]
async fn an_oversized_message_is_named_and_quarantined_once_across_retries() {
    let server = TestServer::start().await;
    let big = json!({"type": "track", "userId": "u-big", "event": "Big", "messageId": "m-big",
                     "properties": {"pad": "x".repeat(40 * 1024)}});
    let body = json!({"batch": [big, {"type": "track", "userId": "u-good", "event": "Good", "messageId": "good-1"}]});
    for attempt in 0..3 {
        let (status, answer) = server.post("/v1/batch", body.to_string()).await;
        assert_eq!(status, 200, "attempt {attempt}: {answer}");
        assert_eq!(answer["errors"][0]["code"], "message_too_large", "{answer}");
        assert_eq!(answer["errors"][0]["messageId"], "m-big", "{answer}");
    }
    let quarantined = server.quarantined().await;
    assert_eq!(quarantined.len(), 1, "quarantined once: {quarantined:?}");
    assert_eq!(server.stored().await.len(), 1);
}

#[tokio::test]
async fn a_wrong_method_gets_a_json_error() {
    let server = TestServer::start().await;
    let response = server
        .http
        .get(server.url("/v1/track"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(
        response.headers().get("allow").map(|v| v.to_str().unwrap()),
        Some("POST")
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed", "{body}");
    assert_eq!(body["success"], false, "{body}");
}
