//! Benchmarks `PostgresStore`: `apply` throughput and lookup latency.
//!
//! ```text
//! nice cargo run --release -p trib-store --bin trib-store-pg-bench -- \
//!     [--url postgres://postgres@127.0.0.1:5432/test] [--runs 3] [--batches 10] \
//!     [--identifiers 1000000] [--lookups 20000]
//! ```
//!
//! * apply: batches of 2,000 upserts (400-byte documents, half of them updates of the
//!   previous batch's profiles) and 10,000 timeline entries (5 per upserted profile), plus a
//!   consumer-offset commit; each run on a fresh schema.
//! * lookup: `lookup` of random keys among N identifiers (32-byte keys, like the HMAC blind
//!   indexes they will become), on one thread and on 4 threads; p50 and p99 per call.
//!
//! Every figure is the median of the runs. Schemas are named `trib_bench_*` and dropped.

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use postgres::NoTls;
use sha2::{Digest, Sha256};
use trib_store::{
    ChangeBatch, ConsumerOffsets, EventRef, IdentKey, PostgresOptions, PostgresStore, ProfileId,
    ProfileRecord, ProfileStore, TimelineEntry,
};

const UPSERTS_PER_BATCH: u64 = 2_000;
const TIMELINE_PER_PROFILE: u64 = 5;
const IDENTIFIERS_PER_BATCH: u64 = 20_000;

struct Args {
    url: String,
    runs: usize,
    batches: u64,
    identifiers: u64,
    lookups: usize,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        url: std::env::var("TRIBUTARY_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
        runs: 3,
        batches: 10,
        identifiers: 1_000_000,
        lookups: 20_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => args.url = value,
            "--runs" => args.runs = value.parse()?,
            "--batches" => args.batches = value.parse()?,
            "--identifiers" => args.identifiers = value.parse()?,
            "--lookups" => args.lookups = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(args)
}

fn profile_id(n: u64) -> ProfileId {
    let digest = Sha256::digest(n.to_be_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    ProfileId::from_bytes(bytes)
}

fn ident_key(n: u64) -> IdentKey {
    let digest = Sha256::digest(format!("email\0user{n}@example.com").as_bytes());
    IdentKey(Bytes::copy_from_slice(&digest))
}

/// splitmix64: a reproducible stream of random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn drop_schema(url: &str, schema: &str) -> Result<(), Box<dyn Error>> {
    let mut client = postgres::Client::connect(url, NoTls)?;
    client.batch_execute(&format!(
        "SET client_min_messages TO warning; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    ))?;
    Ok(())
}

fn open(url: &str, schema: &str) -> Result<PostgresStore, Box<dyn Error>> {
    drop_schema(url, schema)?;
    Ok(PostgresStore::open(
        url,
        PostgresOptions {
            schema: schema.to_owned(),
            pool_size: 8,
            ..PostgresOptions::default()
        },
    )?)
}

fn apply_batch(b: u64) -> ChangeBatch {
    let doc = Bytes::from(vec![b'd'; 400]);
    // Half the profiles are the previous batch's (updates), half are new.
    let first = b * UPSERTS_PER_BATCH / 2;
    let mut batch = ChangeBatch {
        at_ms: 1_700_000_000_000 + i64::try_from(b).unwrap_or(0),
        ..ChangeBatch::default()
    };
    for n in first..first + UPSERTS_PER_BATCH {
        let id = profile_id(n);
        batch.upserts.push(ProfileRecord {
            id,
            updated_at_ms: batch.at_ms,
            doc: doc.clone(),
        });
        for k in 0..TIMELINE_PER_PROFILE {
            let offset = b * UPSERTS_PER_BATCH * TIMELINE_PER_PROFILE
                + (n - first) * TIMELINE_PER_PROFILE
                + k;
            batch.timeline.push((
                id,
                TimelineEntry {
                    timestamp_ms: batch.at_ms - i64::try_from(k).unwrap_or(0),
                    event: EventRef {
                        partition: u32::try_from(n % 8).unwrap_or(0),
                        offset,
                    },
                },
            ));
        }
    }
    batch.offsets = Some(ConsumerOffsets {
        consumer: "identity".to_owned(),
        offsets: (0..8).map(|p| (p, (b + 1) * 10_000)).collect(),
    });
    batch
}

fn bench_apply(args: &Args) -> Result<(), Box<dyn Error>> {
    println!(
        "== apply: {} batches of {} upserts + {} timeline entries, {} runs",
        args.batches,
        UPSERTS_PER_BATCH,
        UPSERTS_PER_BATCH * TIMELINE_PER_PROFILE,
        args.runs
    );
    let batches: Vec<ChangeBatch> = (0..args.batches).map(apply_batch).collect();
    let (mut per_batch_ms, mut worst_ms, mut timeline_per_s) = (vec![], vec![], vec![]);
    for run in 0..args.runs {
        let schema = format!("trib_bench_apply_{}_{run}", std::process::id());
        let store = open(&args.url, &schema)?;
        let mut times = Vec::with_capacity(batches.len());
        let started = Instant::now();
        for batch in &batches {
            let t = Instant::now();
            store.apply(batch)?;
            times.push(t.elapsed());
        }
        let total = started.elapsed();
        drop(store);
        drop_schema(&args.url, &schema)?;
        let n = batches.len() as f64;
        let mean = total.as_secs_f64() * 1e3 / n;
        let worst = times
            .iter()
            .max()
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3;
        let rate = n * (UPSERTS_PER_BATCH * TIMELINE_PER_PROFILE) as f64 / total.as_secs_f64();
        println!(
            "run {}: {mean:.0} ms/batch (worst {worst:.0} ms), {rate:.0} timeline entries/s, \
             {:.0} upserts/s",
            run + 1,
            n * UPSERTS_PER_BATCH as f64 / total.as_secs_f64()
        );
        per_batch_ms.push(mean);
        worst_ms.push(worst);
        timeline_per_s.push(rate);
    }
    let batch_ms = median(&mut per_batch_ms);
    println!(
        "median: {batch_ms:.0} ms/batch (worst batch {:.0} ms), {:.1} batches/s, \
         {:.0} timeline entries/s, {:.0} upserts/s",
        median(&mut worst_ms),
        1e3 / batch_ms,
        median(&mut timeline_per_s),
        UPSERTS_PER_BATCH as f64 * 1e3 / batch_ms
    );
    Ok(())
}

fn lookups(store: &PostgresStore, count: usize, identifiers: u64, seed: u64) -> Vec<Duration> {
    let mut rng = Rng(seed);
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let n = rng.next() % identifiers;
        let key = ident_key(n);
        let t = Instant::now();
        let found = store.lookup(&key);
        latencies.push(t.elapsed());
        match found {
            Ok(Some(id)) if id == profile_id(n / 2) => {}
            other => panic!("lookup of identifier {n} returned {other:?}"),
        }
    }
    latencies
}

fn bench_lookup(args: &Args) -> Result<(), Box<dyn Error>> {
    let schema = format!("trib_bench_lookup_{}", std::process::id());
    let store = Arc::new(open(&args.url, &schema)?);
    println!("== lookup: populating {} identifiers", args.identifiers);
    let started = Instant::now();
    let mut next = 0;
    while next < args.identifiers {
        let end = (next + IDENTIFIERS_PER_BATCH).min(args.identifiers);
        let batch = ChangeBatch {
            // Two identifiers per profile.
            identifiers: (next..end)
                .map(|n| (ident_key(n), Some(profile_id(n / 2))))
                .collect(),
            ..ChangeBatch::default()
        };
        store.apply(&batch)?;
        next = end;
    }
    let populate = started.elapsed();
    println!(
        "populated in {:.1} s ({:.0} identifiers/s, batches of {IDENTIFIERS_PER_BATCH})",
        populate.as_secs_f64(),
        args.identifiers as f64 / populate.as_secs_f64()
    );
    {
        let mut client = postgres::Client::connect(&args.url, NoTls)?;
        client.batch_execute(&format!("VACUUM ANALYZE \"{schema}\".identifiers"))?;
    }
    // Warm the pool and the caches.
    lookups(&store, 2_000, args.identifiers, 1);

    let (mut p50_1, mut p99_1, mut rate_1) = (vec![], vec![], vec![]);
    let (mut p50_4, mut p99_4, mut rate_4) = (vec![], vec![], vec![]);
    for run in 0..args.runs {
        let seed = 100 + run as u64;
        let t = Instant::now();
        let mut single = lookups(&store, args.lookups, args.identifiers, seed);
        let elapsed = t.elapsed();
        single.sort_unstable();
        p50_1.push(micros(percentile(&single, 0.50)));
        p99_1.push(micros(percentile(&single, 0.99)));
        rate_1.push(single.len() as f64 / elapsed.as_secs_f64());

        let per_thread = args.lookups / 4;
        let t = Instant::now();
        let mut all: Vec<Duration> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4u64)
                .map(|thread| {
                    let store = store.clone();
                    let identifiers = args.identifiers;
                    scope
                        .spawn(move || lookups(&store, per_thread, identifiers, seed * 10 + thread))
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let elapsed = t.elapsed();
        all.sort_unstable();
        p50_4.push(micros(percentile(&all, 0.50)));
        p99_4.push(micros(percentile(&all, 0.99)));
        rate_4.push(all.len() as f64 / elapsed.as_secs_f64());
        println!(
            "run {}: 1 thread p50 {:.0} µs p99 {:.0} µs {:.0}/s; 4 threads p50 {:.0} µs p99 {:.0} µs {:.0}/s",
            run + 1,
            p50_1[run],
            p99_1[run],
            rate_1[run],
            p50_4[run],
            p99_4[run],
            rate_4[run]
        );
    }
    println!(
        "median: 1 thread p50 {:.0} µs p99 {:.0} µs {:.0} lookups/s; \
         4 threads p50 {:.0} µs p99 {:.0} µs {:.0} lookups/s",
        median(&mut p50_1),
        median(&mut p99_1),
        median(&mut rate_1),
        median(&mut p50_4),
        median(&mut p99_4),
        median(&mut rate_4)
    );
    drop(store);
    drop_schema(&args.url, &schema)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    bench_apply(&args)?;
    bench_lookup(&args)?;
    Ok(())
}
