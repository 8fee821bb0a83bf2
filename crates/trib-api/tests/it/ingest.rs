//! What accepted input becomes: stored events, deduplication, auth variants, admin reads.

use std::io::Write;

use serde_json::json;

use crate::{ADMIN_KEY, TestServer, WRITE_KEY};

#[tokio::test]
async fn browser_style_text_plain_body_with_write_key_is_accepted() {
    let server = TestServer::start().await;
    let response = server
        .http
        .post(server.url("/v1/t"))
        .header("content-type", "text/plain")
        .header("origin", "https://shop.example.com")
        .body(json!({"writeKey": WRITE_KEY, "anonymousId": "a-1", "event": "Clicked", "messageId": "b-1"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    let stored = server.stored().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["type"], "track", "type inferred from the route");
    assert_eq!(stored[0]["event"], "Clicked");
    assert!(
        stored[0].get("writeKey").is_none(),
        "the write key is never stored"
    );
}

#[tokio::test]
async fn basic_auth_without_colon_and_form_content_type_gzip_are_accepted() {
    let server = TestServer::start().await;
    let body = json!({"batch": [{"type": "identify", "userId": "u-1", "traits": {"plan": "pro"}, "messageId": "g-1"}]});
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body.to_string().as_bytes()).unwrap();
    let response = server
        .http
        .post(server.url("/v1/batch"))
        .header(
            "authorization",
            format!("Basic {}", base64_encode(WRITE_KEY)),
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-encoding", "gzip")
        .body(encoder.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let stored = server.stored().await;
    assert_eq!(stored[0]["traits"]["plan"], "pro");
}

fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn a_retried_message_id_is_stored_once_per_source() {
    let server = TestServer::start().await;
    let body = json!({"batch": [
        {"type": "track", "userId": "u-1", "event": "Order Completed", "messageId": "dup-1"},
        {"type": "track", "userId": "u-1", "event": "Order Completed", "messageId": "dup-1"},
    ]});
    let (status, first) = server.post("/v1/batch", body.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(
        (first["accepted"].as_u64(), first["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
    let (_, retry) = server.post("/v1/batch", body.to_string()).await;
    assert_eq!(
        (retry["accepted"].as_u64(), retry["duplicates"].as_u64()),
        (Some(0), Some(2))
    );
    // Another source may use the same messageId: deduplication is per source.
    let response = server
        .http
        .post(server.url("/v1/track"))
        .basic_auth("wk_ios", Some(""))
        .body(
            json!({"userId": "u-1", "event": "Order Completed", "messageId": "dup-1"}).to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let stored = server.stored().await;
    let sources: Vec<&str> = stored
        .iter()
        .map(|event| event["source"].as_str().unwrap())
        .collect();
    assert_eq!(stored.len(), 2, "{sources:?}");
    assert!(sources.contains(&"web") && sources.contains(&"ios"));
}

#[tokio::test]
async fn batch_context_is_merged_and_a_person_stays_in_one_partition() {
    let server = TestServer::start().await;
    let messages: Vec<_> = (0..20)
        .map(|i| json!({"type": "track", "userId": "same-person", "event": format!("Step {i}"), "messageId": format!("p-{i}")}))
        .collect();
    let body = json!({"batch": messages, "context": {"library": {"name": "custom", "version": "1"}}, "sentAt": "2026-11-28T10:00:00Z"});
    let (status, answer) = server.post("/v1/batch", body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let mut non_empty = Vec::new();
    for partition in 0..server.events.partition_count() {
        let records = server.events.read(partition, 0, 100).await.unwrap();
        if !records.is_empty() {
            non_empty.push(records);
        }
    }
    assert_eq!(
        non_empty.len(),
        1,
        "one person's events went to several partitions"
    );
    let names: Vec<String> = non_empty[0]
        .iter()
        .map(|record| serde_json::from_slice::<serde_json::Value>(&record.payload).unwrap())
        .map(|event| {
            assert_eq!(event["context"]["library"]["name"], "custom");
            event["event"].as_str().unwrap().to_owned()
        })
        .collect();
    let expected: Vec<String> = (0..20).map(|i| format!("Step {i}")).collect();
    assert_eq!(
        names, expected,
        "order within a partition is the order sent"
    );
}

#[tokio::test]
async fn admin_reads_need_the_admin_key_and_page_through_a_partition() {
    let server = TestServer::start().await;
    let messages: Vec<_> = (0..7)
        .map(|i| json!({"type": "track", "userId": "reader", "event": "Read Me", "messageId": format!("r-{i}")}))
        .collect();
    server
        .post("/v1/batch", json!({"batch": messages}).to_string())
        .await;
    let unauthorized = server
        .http
        .get(server.url("/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status().as_u16(), 401);
    let write_key_is_not_admin = server
        .http
        .get(server.url("/v1/events"))
        .bearer_auth(WRITE_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(write_key_is_not_admin.status().as_u16(), 401);

    let partitions: serde_json::Value = server
        .http
        .get(server.url("/v1/events/partitions"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let partition = partitions
        .as_array()
        .unwrap()
        .iter()
        .find(|view| view["end_offset"] == 7)
        .expect("one partition holds the 7 events")["partition"]
        .as_u64()
        .unwrap();
    let mut seen = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let mut url = server.url(&format!("/v1/events?partition={partition}&limit=3"));
        if let Some(after) = after {
            url.push_str(&format!("&after={after}"));
        }
        let page: serde_json::Value = server
            .http
            .get(url)
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for record in page["records"].as_array().unwrap() {
            seen.push(record["data"]["messageId"].as_str().unwrap().to_owned());
            after = record["offset"].as_u64();
        }
        if page["next"].is_null() {
            break;
        }
    }
    let expected: Vec<String> = (0..7).map(|i| format!("r-{i}")).collect();
    assert_eq!(seen, expected);

    let bad = server
        .http
        .get(server.url("/v1/events?limit=0"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
}

/// A read of all partitions, followed by its `next_cursor`, returns every record once, across
/// partitions; a one-partition read never leaves its partition.
#[tokio::test]
async fn the_cursor_of_an_all_partition_read_goes_on_into_the_later_partitions() {
    let server = TestServer::start().await;
    let messages: Vec<_> = (0..40)
        .map(|i| json!({"type": "track", "userId": format!("user-{i}"), "event": "Read Me", "messageId": format!("c-{i}")}))
        .collect();
    server
        .post("/v1/batch", json!({"batch": messages}).to_string())
        .await;
    let get = |path: String| {
        let request = server.http.get(server.url(&path)).bearer_auth(ADMIN_KEY);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let mut seen = Vec::new();
    let mut partitions = std::collections::BTreeSet::new();
    let mut path = "/v1/events?limit=3".to_owned();
    loop {
        let (status, page) = get(path.clone()).await;
        assert_eq!(status, 200, "{page}");
        assert!(page.get("next").is_none(), "{page}");
        for record in page["records"].as_array().unwrap() {
            seen.push(record["data"]["messageId"].as_str().unwrap().to_owned());
            partitions.insert(record["partition"].as_u64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/events?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    seen.sort();
    let mut expected: Vec<String> = (0..40).map(|i| format!("c-{i}")).collect();
    expected.sort();
    assert_eq!(seen, expected, "every record once");
    assert!(
        partitions.len() > 1,
        "the records span partitions: {partitions:?}"
    );

    // A one-partition read stays in its partition.
    let first = *partitions.iter().next().unwrap();
    let (_, page) = get(format!("/v1/events?partition={first}&limit=1000")).await;
    assert!(
        page.get("next").is_none() && page.get("next_cursor").is_none(),
        "{page}"
    );
    assert!(
        page["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|record| record["partition"] == first)
    );
    for bad in ["cursor=x", "cursor=1:2&partition=1", "cursor=999:"] {
        let (status, body) = get(format!("/v1/events?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["code"], "invalid_query", "{bad}: {body}");
    }
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let server = TestServer::start().await;
    for path in ["/healthz", "/readyz"] {
        let response = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
}
