//! Acknowledged means durable: SIGKILL mid-load loses no acknowledged event.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::support::{ServerProcess, WRITE_KEY};

const BATCH: usize = 100;
const SENDERS: usize = 4;

fn batch(sender: usize, sequence: usize) -> (Vec<String>, serde_json::Value) {
    let ids: Vec<String> = (0..BATCH)
        .map(|i| format!("s{sender}-b{sequence}-m{i}"))
        .collect();
    let messages: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({
                "type": "track",
                "messageId": id,
                "userId": format!("user-{}", (sender * 7919 + sequence * 31 + i) % 500),
                "event": "Order Completed",
                "properties": {"order_id": id, "revenue": 42.5, "currency": "EUR"},
                "timestamp": "2026-11-28T10:00:00.123Z",
            })
        })
        .collect();
    (ids, json!({ "batch": messages }))
}

#[test]
fn sigkill_mid_load_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("data"));
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let unacked: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let url = server.url("/v1/batch");

    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (acked, unacked, stop, url) =
                (acked.clone(), unacked.clone(), stop.clone(), url.clone());
            std::thread::spawn(move || {
                let client = crate::support::blocking_builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                for sequence in 0.. {
                    let (ids, body) = batch(sender, sequence);
                    let result = client
                        .post(&url)
                        .basic_auth(WRITE_KEY, Some(""))
                        .json(&body)
                        .send();
                    match result {
                        Ok(response) if response.status().is_success() => {
                            acked.lock().unwrap().extend(ids)
                        }
                        _ => {
                            unacked.lock().unwrap().push(body);
                            if stop.load(Ordering::SeqCst) {
                                return;
                            }
                        }
                    }
                }
            })
        })
        .collect();

    // Let the load run until a good number of batches are acknowledged, then pull the plug.
    while acked.lock().unwrap().len() < 20 * BATCH {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::SeqCst);
    server.kill_hard();
    for sender in senders {
        sender.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    server.restart();
    let stored = server.stored_events();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for event in &stored {
        *counts
            .entry(event["messageId"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "events stored twice: {doubled:?}");
    for event in stored.iter().take(50) {
        assert_eq!(event["event"], "Order Completed");
        assert_eq!(event["properties"]["revenue"], 42.5);
        assert_eq!(event["source"], "web");
    }

    // Clients retry what was not acknowledged; the retries complete the log without doubles.
    let client = crate::support::blocking_client();
    let retried = unacked.lock().unwrap().clone();
    for body in &retried {
        let response = client
            .post(server.url("/v1/batch"))
            .basic_auth(WRITE_KEY, Some(""))
            .json(body)
            .send()
            .unwrap();
        assert!(
            response.status().is_success(),
            "{}",
            response.text().unwrap()
        );
    }
    let after_retry = server.stored_events();
    let unique: HashSet<&str> = after_retry
        .iter()
        .map(|event| event["messageId"].as_str().unwrap())
        .collect();
    assert_eq!(
        unique.len(),
        after_retry.len(),
        "a retry after the restart stored a duplicate"
    );
    assert_eq!(
        after_retry.len(),
        stored.len() + retried.len() * BATCH - count_already_stored(&retried, &counts)
    );
}

fn count_already_stored(bodies: &[serde_json::Value], stored: &HashMap<String, usize>) -> usize {
    bodies
        .iter()
        .flat_map(|body| body["batch"].as_array().unwrap())
        .filter(|message| stored.contains_key(message["messageId"].as_str().unwrap()))
        .count()
}

#[test]
fn sigterm_flushes_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("data"));
    let client = crate::support::blocking_client();
    let (ids, mut body) = batch(0, 0);
    body["batch"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "track", "event": "Nobody", "messageId": "bad-1"}));
    let response = client
        .post(server.url("/v1/batch"))
        .basic_auth(WRITE_KEY, Some(""))
        .json(&body)
        .send()
        .unwrap();
    assert!(response.status().is_success());
    let answer: serde_json::Value = response.json().unwrap();
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(100), Some(1)),
        "{answer}"
    );
    let status = server.stop_gracefully();
    assert!(status.success(), "tributary serve exited with {status}");
    server.restart();
    let stored: HashSet<String> = server
        .stored_events()
        .iter()
        .map(|event| event["messageId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored, ids.into_iter().collect());
    let quarantined = server.quarantined();
    assert_eq!(
        quarantined.len(),
        1,
        "the rejected message survives the restart too"
    );
    assert_eq!(quarantined[0]["messageId"], "bad-1");
    assert_eq!(quarantined[0]["code"], "missing_identity");
}
