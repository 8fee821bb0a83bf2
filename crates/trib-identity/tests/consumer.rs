//! The identity consumer on a real event log and the embedded store: a crash (commits failing
//! from some point on, then the process gone) and a restart give the same profiles as an
//! uninterrupted run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::FaultyStore;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use trib_identity::consumer::{ConsumerOptions, IdentityConsumer};
use trib_identity::{Engine, IdentityConfig, Keyer, Profile};
use trib_log::{EmbeddedLog, EmbeddedLogOptions, EventLog, Record};
use trib_store::{ProfileState, ProfileStore, SqliteOptions, SqliteStore, TimelineEntry};

fn rules() -> Arc<trib_identity::IdentityRules> {
    let config: IdentityConfig = serde_json::from_value(json!({
        "types": [
            {"name": "user_id", "unique": true},
            {"name": "email", "max_per_profile": 2, "traits": ["email"]},
            {"name": "anonymous_id", "max_per_profile": 20}
        ],
        "traits": {"rules": {"score": "max", "visits": "sum"}}
    }))
    .unwrap();
    Arc::new(config.rules().unwrap())
}

/// A mix with merges, renames and guard-rail conflicts (shared emails, several user ids).
async fn fill(log: &dyn EventLog) {
    let mut records = Vec::new();
    for n in 0..3_000u32 {
        let user = n % 97;
        let event = match n % 5 {
            0 => {
                json!({"type": "identify", "userId": format!("u-{user}"), "anonymousId": format!("a-{}", n % 211),
                        "traits": {"email": format!("p{}@x.example", n % 131), "score": n % 17, "visits": 1}})
            }
            1 => json!({"type": "identify", "anonymousId": format!("a-{}", n % 211),
                        "traits": {"email": format!("p{}@x.example", n % 89)}}),
            _ => {
                json!({"type": "track", "event": "Viewed", "anonymousId": format!("a-{}", n % 211)})
            }
        };
        let mut event = event;
        let object = event.as_object_mut().unwrap();
        object.insert("messageId".into(), json!(format!("m-{n}")));
        object.insert("source".into(), json!("web"));
        object.insert(
            "timestamp".into(),
            json!(format!(
                "2026-03-01T{:02}:{:02}:{:02}Z",
                n / 3600,
                (n / 60) % 60,
                n % 60
            )),
        );
        let key = object
            .get("userId")
            .or_else(|| object.get("anonymousId"))
            .and_then(|v| v.as_str())
            .unwrap()
            .to_owned();
        records.push(Record {
            key,
            dedup_id: None,
            timestamp_ms: 0,
            payload: Bytes::from(event.to_string()),
        });
    }
    for chunk in records.chunks(500) {
        log.append(chunk.to_vec()).await.unwrap();
    }
}

type Snapshot = BTreeMap<String, (Profile, Vec<TimelineEntry>)>;

fn snapshot(store: &dyn ProfileStore) -> Snapshot {
    let mut out = BTreeMap::new();
    for change in store.changes(None, 0, usize::MAX).unwrap() {
        if let Some(ProfileState::Active(record)) = store.get(&change.id).unwrap() {
            let profile = trib_identity::engine::decode(&record).unwrap();
            let timeline = store.timeline(&change.id, None, usize::MAX).unwrap();
            out.insert(change.id.to_string(), (profile, timeline));
        }
    }
    out
}

fn options() -> ConsumerOptions {
    ConsumerOptions {
        max_records_per_partition: 100,
        idle_wait: Duration::from_millis(5),
        commit_events: 300,
        commit_interval: Duration::from_secs(60),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_and_restart_give_the_profiles_of_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut log_options = EmbeddedLogOptions::new(dir.path().join("events"));
    log_options.partitions = 4;
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(log_options).unwrap());
    fill(&*log).await;
    let keyer = Keyer::new(&[9; 32]);

    // Uninterrupted.
    let clean =
        Arc::new(SqliteStore::open(dir.path().join("clean"), SqliteOptions::default()).unwrap());
    let engine = Engine::new(clean.clone(), rules(), keyer.clone()).unwrap();
    let consumer = IdentityConsumer::spawn(
        log.clone(),
        engine,
        options(),
        tokio::runtime::Handle::current(),
    )
    .unwrap();
    consumer.caught_up().await.unwrap();
    tokio::task::spawn_blocking(move || consumer.stop())
        .await
        .unwrap();
    let expected = snapshot(&*clean);
    assert!(expected.len() > 50, "{} profiles", expected.len());

    // Crash: two commits land, then every commit fails until the process is gone.
    let crashed =
        Arc::new(SqliteStore::open(dir.path().join("crashed"), SqliteOptions::default()).unwrap());
    let crashing = Arc::new(FaultyStore::new(crashed.clone(), |apply| apply > 2));
    let engine = Engine::new(crashing.clone(), rules(), keyer.clone()).unwrap();
    let consumer = IdentityConsumer::spawn(
        log.clone(),
        engine,
        options(),
        tokio::runtime::Handle::current(),
    )
    .unwrap();
    while crashing.applies.load(Ordering::SeqCst) < 4 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::task::spawn_blocking(move || consumer.stop())
        .await
        .unwrap();
    let partial = crashed.consumer_offsets("identity").unwrap();
    let done: u64 = partial.iter().map(|(_, n)| n).sum();
    assert!(
        done > 0 && done < 3_000,
        "committed {done} of 3000 before the crash"
    );

    // Restart on the same store file.
    drop(crashing);
    let reopened =
        Arc::new(SqliteStore::open(dir.path().join("crashed"), SqliteOptions::default()).unwrap());
    drop(crashed);
    let engine = Engine::new(reopened.clone(), rules(), keyer).unwrap();
    let consumer = IdentityConsumer::spawn(
        log.clone(),
        engine,
        options(),
        tokio::runtime::Handle::current(),
    )
    .unwrap();
    consumer.caught_up().await.unwrap();
    tokio::task::spawn_blocking(move || consumer.stop())
        .await
        .unwrap();
    let got = snapshot(&*reopened);
    assert_eq!(got.len(), expected.len());
    assert!(
        got == expected,
        "the restarted run differs from the uninterrupted one"
    );
}
