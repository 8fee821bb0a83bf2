//! The destinations' admin routes over HTTP: the dead-letter queue, paged and replayed.

use std::sync::Arc;

use serde_json::Value;
use trib_config::Config;
use trib_log::MemoryLog;
use trib_store::ProfileId;
use trib_sync::SyncState;
use trib_sync::state::Settlement;

use crate::{ADMIN_KEY, WRITE_KEY};

/// A server whose destination `esp` has `letters` dead letters (profiles 1..=letters).
async fn start(letters: u8) -> (String, Arc<SyncState>) {
    let sync = Arc::new(SyncState::in_memory().unwrap());
    let profiles: Vec<(ProfileId, u64, i64)> = (1..=letters)
        .map(|n| (ProfileId::from_bytes([n; 16]), u64::from(n), 1))
        .collect();
    sync.enqueue("esp", &profiles, None, 1).unwrap();
    let dead = profiles
        .iter()
        .map(|(profile, _, _)| Settlement::Dead {
            profile: *profile,
            class: "invalid_record".to_owned(),
            detail: "merge field PLAN is invalid".to_owned(),
            attempts: 1,
            first_failed_ms: 2,
        })
        .collect();
    sync.settle_outcomes("esp", dead, 3).unwrap();

    let config = Config::from_toml_str(
        &format!(
            "version = 1\n[server]\nadmin_key = \"{ADMIN_KEY}\"\n[[sources]]\nname = \"web\"\nwrite_key = \"{WRITE_KEY}\"\n"
        ),
        &|_| None,
    )
    .unwrap();
    let logs = crate::memory_logs(Arc::new(MemoryLog::new(1)));
    let registry = Arc::new(std::sync::RwLock::new(trib_schema::Registry::empty()));
    let state = trib_api::AppState::new(&config, logs, registry, None)
        .unwrap()
        .with_destinations(trib_api::destinations::DestinationsState {
            sync: sync.clone(),
            destinations: vec![trib_api::destinations::DestinationInfo {
                name: "esp".to_owned(),
                kind: "webhook".to_owned(),
                purpose: "email_marketing".to_owned(),
                mode: "upsert".to_owned(),
            }],
        });
    let addr = crate::serve(state).await;
    (format!("http://{addr}"), sync)
}

async fn get(base: &str, path: &str) -> (u16, Value) {
    crate::admin_get(&crate::http_client(), base, path).await
}

#[tokio::test]
async fn the_dead_letter_queue_is_read_in_pages_oldest_first() {
    let (base, _sync) = start(5).await;
    let mut seen = Vec::new();
    let mut cursor = 0;
    let mut pages = 0;
    loop {
        let (status, body) = get(
            &base,
            &format!("/v1/destinations/esp/dlq?limit=2&cursor={cursor}"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let page = body["dead_letters"].as_array().unwrap().clone();
        assert!(page.len() <= 2, "{body}");
        pages += 1;
        for letter in &page {
            assert_eq!(letter["class"], "invalid_record");
            seen.push(letter["profile_id"].as_str().unwrap().to_owned());
        }
        let next = body["next_cursor"].as_i64().unwrap();
        if page.is_empty() {
            assert_eq!(next, cursor, "an empty page keeps the cursor");
            break;
        }
        assert!(next > cursor);
        cursor = next;
    }
    assert_eq!(pages, 4, "2 + 2 + 1, then an empty page");
    let expected: Vec<String> = (1..=5u8)
        .map(|n| ProfileId::from_bytes([n; 16]).to_string())
        .collect();
    assert_eq!(seen, expected, "every letter once, oldest first");

    // Without parameters: the first 100.
    let (status, body) = get(&base, "/v1/destinations/esp/dlq").await;
    assert_eq!(status, 200);
    assert_eq!(body["dead_letters"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn a_bad_page_request_says_which_parameter_is_wrong() {
    let (base, _sync) = start(1).await;
    for (query, needle) in [
        ("limit=0", "limit: must be between 1 and 1000, got 0"),
        ("limit=1001", "limit: must be between 1 and 1000, got 1001"),
        ("cursor=abc", "cursor"),
        ("page=2", "page"),
    ] {
        let (status, body) = get(&base, &format!("/v1/destinations/esp/dlq?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["code"], "invalid_query", "{query}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(needle),
            "{query}: {body}"
        );
    }
    let (status, body) = get(&base, "/v1/destinations/nope/dlq").await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn a_resync_is_queued_for_the_destination_worker() {
    let (base, sync) = start(1).await;
    let profile = ProfileId::from_bytes([9; 16]);
    sync.enqueue("esp", &[(profile, 9, 1)], None, 1).unwrap();
    let digests = std::collections::BTreeMap::from([
        ("@email".to_owned(), "e-digest".to_owned()),
        ("PLAN".to_owned(), "p-digest".to_owned()),
    ]);
    sync.settle_outcomes(
        "esp",
        vec![Settlement::Confirmed {
            profile,
            claimed_seq: 9,
            confirmed: trib_sync::state::Confirmed {
                esp_id: "esp-9".to_owned(),
                digests: digests.clone(),
                subscribed: true,
                confirmed_at_ms: 2,
            },
            prepared_at_ms: 2,
        }],
        3,
    )
    .unwrap();

    let http = crate::http_client();
    let post = |path: &str| {
        http.post(format!("{base}{path}"))
            .bearer_auth(crate::ADMIN_KEY)
            .send()
    };
    assert_eq!(sync.resync_requested("esp").unwrap(), None);
    let response = post("/v1/destinations/esp/resync").await.unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["confirmed"], 1, "{body}");
    assert!(
        sync.resync_requested("esp").unwrap().is_some(),
        "the worker sees the request"
    );
    // The reset itself is the worker's, between its rounds.
    assert_eq!(
        sync.confirmed("esp", &[profile]).unwrap()[&profile].digests,
        digests
    );

    let response = post("/v1/destinations/nope/resync").await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
}
