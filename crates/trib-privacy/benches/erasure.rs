//! Erasure latency: one person with 10,000 events among 90,000 events of 9,000 others.
//!
//! `cargo bench -p trib-privacy --bench erasure -- [RUNS] [EVENTS_OF_THE_PERSON]`
//! (default 5 runs, 10,000 events).
//!
//! Each run builds a fresh data directory the way `tributary serve` does (a sealed
//! `EmbeddedLog` with fsync, a sealed `SqliteStore`, the key store), resolves identities, then
//! times the erasure itself as the API runs it: the identity engine's erase (reads the
//! person's events back from the log, removes the graph entries in one batch) plus
//! crypto-shredding of the person's data keys. Prints each run and the median in ms.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::json;
use trib_identity::{Engine, EngineError, IdentityConfig, Keyer, LogEvent};
use trib_log::{EmbeddedLog, EmbeddedLogOptions, EventLog, Record};
use trib_privacy::AtRest;
use trib_store::{EventRef, ProfileId, ProfileStore, SqliteOptions, SqliteStore};

const OTHERS: usize = 9_000;
const EVENTS_PER_OTHER: usize = 10;

fn main() {
    let mut numbers = std::env::args()
        .skip(1)
        .filter(|argument| !argument.starts_with('-'))
        .filter_map(|value| value.parse::<usize>().ok());
    let runs = numbers.next().unwrap_or(5);
    let events_of_person = numbers.next().unwrap_or(10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut times = Vec::new();
    for run in 0..runs {
        let ms = one_run(&runtime, events_of_person);
        println!("run {run}: erasure of one person with {events_of_person} events took {ms:.1} ms");
        times.push(ms);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!("summary erasure_ms_median={median:.1} events={events_of_person} runs={runs}");
}

fn event(user: &str, n: usize) -> serde_json::Value {
    if n == 0 {
        json!({"type": "identify", "userId": user, "messageId": format!("{user}-{n}"), "source": "bench",
            "traits": {"email": format!("{user}@example.com"), "firstName": "Bench"},
            "timestamp": "2026-11-01T10:00:00Z"})
    } else {
        json!({"type": "track", "event": "Viewed Page", "userId": user, "messageId": format!("{user}-{n}"),
            "source": "bench", "properties": {"path": format!("/p/{n}")}, "timestamp": "2026-11-01T10:00:01Z"})
    }
}

fn one_run(runtime: &tokio::runtime::Runtime, events_of_person: usize) -> f64 {
    let dir = tempfile::tempdir_in(".").unwrap();
    let at_rest = AtRest::open(dir.path(), [7; 32]).unwrap();
    let mut options = EmbeddedLogOptions::new(dir.path().join("events"));
    options.partitions = 4;
    let log = at_rest.seal_log(
        Arc::new(EmbeddedLog::open(options).unwrap()),
        "events",
        None,
    );
    let store = at_rest.seal_store(Arc::new(
        SqliteStore::open(dir.path().join("profiles"), SqliteOptions::default()).unwrap(),
    ));

    // The person's events interleaved with everybody else's, appended in batches of 1,000.
    let mut records = Vec::new();
    let total = events_of_person + OTHERS * EVENTS_PER_OTHER;
    let mut person_n = 0;
    let mut other_n = 0;
    for i in 0..total {
        let person_turn =
            person_n < events_of_person && (i % 10 == 0 || other_n >= OTHERS * EVENTS_PER_OTHER);
        let value = if person_turn {
            person_n += 1;
            event("the-person", person_n - 1)
        } else {
            let (user, n) = (other_n % OTHERS, other_n / OTHERS);
            other_n += 1;
            event(&format!("other-{user}"), n)
        };
        records.push(Record {
            key: value["userId"].as_str().unwrap().to_owned(),
            dedup_id: None,
            timestamp_ms: 0,
            payload: Bytes::from(value.to_string()),
        });
    }
    runtime.block_on(async {
        for chunk in records.chunks(1_000) {
            log.append(chunk.to_vec()).await.unwrap();
        }
    });

    let config: IdentityConfig = serde_json::from_value(json!({
        "types": [{"name": "user_id", "unique": true}, {"name": "email", "traits": ["email"]}]
    }))
    .unwrap();
    let keyer = Keyer::new(&[5; 32]);
    let mut engine = Engine::new(
        store.clone(),
        Arc::new(config.rules().unwrap()),
        keyer.clone(),
    )
    .unwrap();
    for partition in 0..log.partition_count() {
        let mut from = 0;
        loop {
            let page = runtime.block_on(log.read(partition, from, 10_000)).unwrap();
            let Some(last) = page.last() else { break };
            from = last.offset + 1;
            let events: Vec<LogEvent> = page
                .into_iter()
                .map(|r| LogEvent {
                    at: EventRef {
                        partition: r.partition,
                        offset: r.offset,
                    },
                    payload: r.payload,
                })
                .collect();
            engine.process(&events, None).unwrap();
        }
    }
    let person: ProfileId = store
        .lookup(&keyer.ident_key("user_id", "the-person"))
        .unwrap()
        .expect("the person has a profile");

    let read = |at: EventRef| -> Result<Bytes, EngineError> {
        let records = runtime
            .block_on(log.read(at.partition, at.offset, 1))
            .unwrap();
        Ok(records
            .into_iter()
            .next()
            .map(|r| r.payload)
            .unwrap_or_default())
    };
    let started = Instant::now();
    let report = engine.erase(person, read).unwrap();
    let ids: Vec<ProfileId> = report
        .profile_ids
        .iter()
        .map(|id| id.parse().unwrap())
        .collect();
    let shredded = at_rest.shred(&report.log_keys.0, &ids, "bench").unwrap();
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(report.events, events_of_person);
    assert_eq!(shredded.log_keys, 1);
    elapsed
}
