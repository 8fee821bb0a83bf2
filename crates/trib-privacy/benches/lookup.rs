//! Lookup latency with and without encryption at rest: identifier key → profile id → golden
//! profile document, as `GET /v1/profiles/lookup` reads it, on the embedded SQLite store.
//!
//! `cargo bench -p trib-privacy --bench lookup -- [PROFILES] [LOOKUPS]` (default 500,000
//! profiles of ~900-byte documents, 200,000 random lookups, alternating plain and sealed in
//! rounds of 20,000 so that both see the same machine).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;
use trib_privacy::AtRest;
use trib_store::{
    ChangeBatch, IdentKey, ProfileId, ProfileRecord, ProfileState, ProfileStore, SqliteOptions,
    SqliteStore,
};

fn id(n: u64) -> ProfileId {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    bytes[8..].copy_from_slice(&n.to_le_bytes());
    ProfileId::from_bytes(bytes)
}

fn key(n: u64) -> IdentKey {
    IdentKey(Bytes::from(
        format!("email\0person-{n}@example.com").into_bytes(),
    ))
}

fn fill(store: &dyn ProfileStore, profiles: u64) {
    let doc = vec![b'd'; 900];
    let mut n = 0;
    while n < profiles {
        let end = (n + 10_000).min(profiles);
        let batch = ChangeBatch {
            at_ms: 1,
            upserts: (n..end)
                .map(|i| ProfileRecord {
                    id: id(i),
                    updated_at_ms: 1,
                    doc: Bytes::from(doc.clone()),
                })
                .collect(),
            identifiers: (n..end).map(|i| (key(i), Some(id(i)))).collect(),
            ..ChangeBatch::default()
        };
        store.apply(&batch).unwrap();
        n = end;
    }
}

fn round(
    store: &dyn ProfileStore,
    profiles: u64,
    lookups: u64,
    state: &mut u64,
    histogram: &mut Histogram<u64>,
) {
    for _ in 0..lookups {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let n = *state % profiles;
        let started = Instant::now();
        let found = store.lookup(&key(n)).unwrap().unwrap();
        let Some(ProfileState::Active(record)) = store.get(&found).unwrap() else {
            panic!("profile {n} is missing");
        };
        std::hint::black_box(record);
        histogram
            .record(started.elapsed().as_nanos() as u64)
            .unwrap();
    }
}

fn main() {
    let mut numbers = std::env::args()
        .skip(1)
        .filter(|argument| !argument.starts_with('-'))
        .filter_map(|value| value.parse::<u64>().ok());
    let profiles = numbers.next().unwrap_or(500_000);
    let lookups = numbers.next().unwrap_or(200_000);
    let dir = tempfile::tempdir_in(".").unwrap();
    let plain: Arc<dyn ProfileStore> =
        Arc::new(SqliteStore::open(dir.path().join("plain"), SqliteOptions::default()).unwrap());
    let at_rest = AtRest::open(dir.path(), [3; 32]).unwrap();
    let sealed = at_rest.seal_store(Arc::new(
        SqliteStore::open(dir.path().join("sealed"), SqliteOptions::default()).unwrap(),
    ));
    let started = Instant::now();
    fill(&*plain, profiles);
    let plain_fill = started.elapsed().as_secs_f64();
    let started = Instant::now();
    fill(&*sealed, profiles);
    let sealed_fill = started.elapsed().as_secs_f64();
    println!("filled {profiles} profiles: plain {plain_fill:.1} s, sealed {sealed_fill:.1} s");

    let mut plain_hist = Histogram::<u64>::new(3).unwrap();
    let mut sealed_hist = Histogram::<u64>::new(3).unwrap();
    let (mut a, mut b) = (0x1234_5678_u64, 0x1234_5678_u64);
    let per_round = 20_000.min(lookups);
    for _ in 0..(lookups / per_round).max(1) {
        round(&*plain, profiles, per_round, &mut a, &mut plain_hist);
        round(&*sealed, profiles, per_round, &mut b, &mut sealed_hist);
    }
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "plain:  p50 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs",
        us(&plain_hist, 0.5),
        us(&plain_hist, 0.99),
        us(&plain_hist, 0.999)
    );
    println!(
        "sealed: p50 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs",
        us(&sealed_hist, 0.5),
        us(&sealed_hist, 0.99),
        us(&sealed_hist, 0.999)
    );
    println!(
        "summary profiles={profiles} plain_p50_us={:.1} plain_p99_us={:.1} sealed_p50_us={:.1} sealed_p99_us={:.1}",
        us(&plain_hist, 0.5),
        us(&plain_hist, 0.99),
        us(&sealed_hist, 0.5),
        us(&sealed_hist, 0.99)
    );
}
