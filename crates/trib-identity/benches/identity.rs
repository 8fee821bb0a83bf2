//! Identity throughput: events/s through the engine with a realistic merge rate.
//!
//! `cargo bench -p trib-identity --bench identity -- [EVENTS] [USERS]` (defaults 1,000,000 and
//! 100,000). Each user browses anonymously on one or two devices, identifies on each (linking
//! the device to the user id: renames and merges), and a CRM row per user adds a CRM email
//! link. Runs against the in-memory store (engine cost alone) and the embedded SQLite store.
//! `IDENTITY_BENCH=consumer` runs only the last two lines (the consumer, plain then encrypted at
//! rest), `IDENTITY_BENCH=sealed` only the encrypted one, `IDENTITY_BENCH=engine` only the
//! engine over the in-memory store (its own cost, for profiling).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

// The allocator the `tributary` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use bytes::Bytes;
use serde_json::json;
use trib_identity::consumer::{ConsumerOptions, IdentityConsumer};
use trib_identity::{Engine, IdentityRules, Keyer, LogEvent};
use trib_store::{
    ConsumerOffsets, EventRef, MemoryStore, ProfileStore, SqliteOptions, SqliteStore,
};

fn events(total: usize, users: usize) -> Vec<LogEvent> {
    let mut out = Vec::with_capacity(total);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for n in 0..total {
        let user = (next() % users as u64) as usize;
        let device = next() % 2;
        let roll = next() % 100;
        let ts = format!(
            "2026-03-01T{:02}:{:02}:{:02}Z",
            (n / 3600) % 24,
            (n / 60) % 60,
            n % 60
        );
        let event = if roll < 5 {
            json!({"type": "identify", "messageId": format!("m{n}"), "source": "web", "userId": format!("user-{user}"),
                   "anonymousId": format!("anon-{user}-{device}"), "traits": {"email": format!("u{user}@example.com"), "plan": "pro"}, "timestamp": ts})
        } else if roll < 7 {
            json!({"type": "identify", "messageId": format!("m{n}"), "source": "crm", "anonymousId": format!("crm-{user}"),
                   "traits": {"email": format!("u{user}@example.com"), "first_name": "Ada", "lifetime_value": n % 500}, "timestamp": ts})
        } else if roll < 40 {
            json!({"type": "track", "messageId": format!("m{n}"), "source": "shop", "event": "Order Completed", "userId": format!("user-{user}"),
                   "properties": {"revenue": 20, "products": [{"sku": "a"}, {"sku": "b"}]}, "timestamp": ts})
        } else {
            json!({"type": "page", "messageId": format!("m{n}"), "source": "web", "anonymousId": format!("anon-{user}-{device}"),
                   "name": "Home", "properties": {"path": "/", "title": "Home"}, "context": {"ip": "198.51.100.1"}, "timestamp": ts})
        };
        out.push(LogEvent {
            at: EventRef {
                partition: (n % 8) as u32,
                offset: (n / 8) as u64,
            },
            payload: Bytes::from(event.to_string()),
        });
    }
    out
}

fn run(name: &str, store: Arc<dyn ProfileStore>, events: &[LogEvent], batch: usize) {
    let rules = Arc::new(IdentityRules::default());
    let mut engine = Engine::new(store.clone(), rules, Keyer::new(&[3; 32])).unwrap();
    let started = Instant::now();
    // As the consumer does: rounds of 16,000 events (8 partitions x 2,000) applied in
    // memory, one store commit per `batch` events.
    let mut uncommitted = 0;
    let rounds = events.len().div_ceil(16_000);
    for (index, chunk) in events.chunks(16_000).enumerate() {
        engine.apply(chunk).unwrap();
        uncommitted += chunk.len();
        if uncommitted >= batch || index + 1 == rounds {
            let offsets = ConsumerOffsets {
                consumer: "identity".into(),
                offsets: vec![(0, index as u64)],
            };
            engine.commit(Some(offsets)).unwrap();
            uncommitted = 0;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = engine.stats();
    println!(
        "{name}: {} events in {elapsed:.2} s = {:.0} events/s; profiles {}, merges {}, renames {}, refused {}",
        events.len(),
        events.len() as f64 / elapsed,
        store.count_active().unwrap(),
        stats.merges,
        stats.renames,
        stats.merges_refused + stats.identifiers_refused,
    );
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let total = args.first().copied().unwrap_or(1_000_000);
    let users = args.get(1).copied().unwrap_or(100_000);
    let events = events(total, users);
    match std::env::var("IDENTITY_BENCH").as_deref() {
        Ok("consumer") => {
            consume(&events, false);
            consume(&events, true);
            return;
        }
        Ok("sealed") => {
            consume(&events, true);
            return;
        }
        Ok("engine") => {
            run(
                "memory store",
                Arc::new(MemoryStore::new()),
                &events,
                20_000,
            );
            return;
        }
        _ => {}
    }
    run(
        "memory store",
        Arc::new(MemoryStore::new()),
        &events,
        20_000,
    );
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn ProfileStore> =
        Arc::new(SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap());
    run("embedded SQLite store", sqlite.clone(), &events, 100_000);
    lookups(&*sqlite, users);
    consume(&events, false);
    consume(&events, true);
}

/// Lookup by email as `GET /v1/profiles/lookup?email=` does it (blind-index key, identifier
/// lookup, profile read and decode, timeline summary), for 20,000 random users' emails.
fn lookups(store: &dyn ProfileStore, users: usize) {
    let keyer = Keyer::new(&[3; 32]);
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut latencies = Vec::with_capacity(20_000);
    let mut found = 0;
    for _ in 0..20_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let email = format!("u{}@example.com", state % users as u64);
        let started = Instant::now();
        let result =
            trib_identity::view::find_by_identifier(store, &keyer, "email", &email).unwrap();
        if let trib_identity::view::Found::Active { profile, .. } = result {
            let id: trib_store::ProfileId = profile.id.parse().unwrap();
            store.timeline_summary(&id).unwrap();
            found += 1;
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "lookup by email, SQLite, {} profiles: {found} of 20000 found; p50 {:?}, p99 {:?}, max {:?}",
        store.count_active().unwrap(),
        at(0.50),
        at(0.99),
        latencies[latencies.len() - 1],
    );
}

/// The real consumer (reading an in-memory log, SQLite written on its own thread) until it
/// has caught up; `sealed`: with encryption at rest as `serve` runs it (the log's payloads
/// and the store's documents sealed, data keys in a key store).
fn consume(events: &[LogEvent], sealed: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let at_rest = sealed.then(|| trib_privacy::AtRest::open(keys_dir.path(), [4; 32]).unwrap());
    let mut log: Arc<dyn trib_log::EventLog> = Arc::new(trib_log::MemoryLog::with_options({
        let mut options = trib_log::MemoryLogOptions::new(8);
        options.max_queued_records = events.len() + 1;
        options
    }));
    if let Some(at_rest) = &at_rest {
        log = at_rest.seal_log(log, "events", None);
    }
    runtime.block_on(async {
        for chunk in events.chunks(10_000) {
            let records = chunk
                .iter()
                .map(|e| trib_log::Record {
                    key: format!("{}-{}", e.at.partition, e.at.offset % 1000),
                    dedup_id: None,
                    timestamp_ms: 0,
                    payload: e.payload.clone(),
                })
                .collect();
            log.append(records).await.unwrap();
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut store: Arc<dyn ProfileStore> =
        Arc::new(SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap());
    if let Some(at_rest) = &at_rest {
        store = at_rest.seal_store(store);
    }
    let engine = Engine::new(
        store.clone(),
        Arc::new(IdentityRules::default()),
        Keyer::new(&[3; 32]),
    )
    .unwrap();
    let started = Instant::now();
    let cpu_started = process_cpu_seconds();
    let consumer = IdentityConsumer::spawn(
        log,
        engine,
        ConsumerOptions::default(),
        runtime.handle().clone(),
    )
    .unwrap();
    runtime.block_on(consumer.caught_up()).unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - cpu_started;
    consumer.stop();
    println!(
        "consumer, SQLite written on its own thread{}: {} events in {elapsed:.2} s = {:.0} events/s (CPU {cpu:.1} s); profiles {}",
        if sealed { ", encrypted at rest" } else { "" },
        events.len(),
        events.len() as f64 / elapsed,
        store.count_active().unwrap(),
    );
}

/// User + system CPU time of this process so far (Linux `/proc/self/stat`, 100 ticks per
/// second), 0 where that is unavailable: on a shared machine the CPU a run takes varies less
/// than its wall time.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}
