use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use trib_log::{MemoryLog, Record};

use super::*;

const DAY_MS: i64 = 86_400_000;
const NOW_MS: i64 = 1_800_000_000_000;

fn event(user: &str, kind: &str, name: Option<&str>, age_days: i64) -> Record {
    let timestamp = jiff::Timestamp::from_millisecond(NOW_MS - age_days * DAY_MS).unwrap();
    let mut doc = json!({
        "messageId": format!("{user}-{kind}-{age_days}"),
        "source": "web",
        "type": kind,
        "userId": user,
        "timestamp": timestamp.to_string(),
        "receivedAt": timestamp.to_string(),
    });
    if let Some(name) = name {
        doc["event"] = json!(name);
    }
    Record {
        key: user.to_owned(),
        dedup_id: None,
        timestamp_ms: NOW_MS,
        payload: Bytes::from(doc.to_string()),
    }
}

fn policy() -> EventRetention {
    EventRetention {
        track_events: BTreeMap::from([(
            "Order Completed".to_owned(),
            Duration::from_secs(30 * 86_400),
        )]),
        call_types: HashMap::from([(EventType::Page, Duration::from_secs(7 * 86_400))]),
        default: None,
    }
}

/// Payloads of partition 0, empty ones as `None`.
async fn payloads(log: &MemoryLog) -> Vec<Option<String>> {
    log.read(0, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (!r.payload.is_empty()).then(|| String::from_utf8(r.payload.to_vec()).unwrap()))
        .collect()
}

#[tokio::test]
async fn expired_events_are_blanked_per_type_and_the_rest_is_kept() {
    let log = MemoryLog::new(1);
    log.append(vec![
        event("u1", "track", Some("Order Completed"), 40), // 0: expired
        event("u1", "page", None, 8),                      // 1: expired
        event("u1", "identify", None, 4_000),              // 2: no TTL
        event("u1", "track", Some("Order Completed"), 10), // 3: expires in 20 days
        event("u1", "track", Some("Signed Up"), 4_000),    // 4: no TTL, no default
        event("u1", "page", None, 2),                      // 5: expires in 5 days
    ])
    .await
    .unwrap();
    log.append(vec![Record {
        payload: Bytes::from_static(b"not json"),
        ..event("u1", "page", None, 1)
    }])
    .await
    .unwrap();

    let report = purge_events(&log, &log, &policy(), NOW_MS).await.unwrap();
    assert_eq!(report.scanned, 7);
    assert_eq!(report.unreadable, 1);
    assert_eq!(
        report.blanked,
        BTreeMap::from([("Order Completed".to_owned(), 1), ("page".to_owned(), 1)])
    );
    let kept = payloads(&log).await;
    let blanked: Vec<usize> = (0..kept.len()).filter(|&i| kept[i].is_none()).collect();
    assert_eq!(blanked, vec![0, 1]);
    // The position stops at the first event still waiting for its TTL.
    assert_eq!(log.committed_offset(CONSUMER, 0).await.unwrap(), Some(3));

    // Nothing new expired: a second run blanks nothing and rescans only from offset 3.
    let again = purge_events(&log, &log, &policy(), NOW_MS).await.unwrap();
    assert_eq!((again.scanned, again.blanked_total()), (4, 0));

    // Twenty-one days later offsets 3 and 5 have expired too.
    let later = purge_events(&log, &log, &policy(), NOW_MS + 21 * DAY_MS)
        .await
        .unwrap();
    assert_eq!(later.blanked_total(), 2);
    let kept = payloads(&log).await;
    let blanked: Vec<usize> = (0..kept.len()).filter(|&i| kept[i].is_none()).collect();
    assert_eq!(blanked, vec![0, 1, 3, 5]);
    assert_eq!(log.committed_offset(CONSUMER, 0).await.unwrap(), Some(7));
}

#[tokio::test]
async fn the_default_ttl_covers_every_other_event_and_no_policy_does_nothing() {
    let log = MemoryLog::new(2);
    let users = ["a", "b", "c", "d"];
    log.append(
        users
            .iter()
            .map(|u| event(u, "identify", None, 100))
            .collect(),
    )
    .await
    .unwrap();
    let nothing = purge_events(&log, &log, &EventRetention::default(), NOW_MS)
        .await
        .unwrap();
    assert_eq!(nothing, EventPurgeReport::default());

    let policy = EventRetention {
        default: Some(Duration::from_secs(90 * 86_400)),
        ..EventRetention::default()
    };
    let report = purge_events(&log, &log, &policy, NOW_MS).await.unwrap();
    assert_eq!(report.blanked, BTreeMap::from([("default".to_owned(), 4)]));
    for partition in 0..2 {
        for record in log.read(partition, 0, 10).await.unwrap() {
            assert!(record.payload.is_empty());
        }
    }
}
