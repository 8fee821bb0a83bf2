//! Throughput and latency of the SQLite profile store, on a temporary file.
//!
//! `cargo bench -p trib-store --bench store -- [--profiles N] [--batch N] [--page-size N]
//! [--cache-mib N] [--mmap-mib N] [--autocheckpoint N] [--durable] [--lookups N]`
//!
//! 1. ingest: batches of `--batch` events, each event a new profile (random 16-byte id,
//!    300-byte document), a new identifier key (32 random bytes, like a keyed blind index) and
//!    a timeline entry, until `--profiles` profiles exist;
//! 2. steady: batches of events on existing profiles: each adds a timeline entry, one in ten
//!    rewrites the profile's document and one in twenty adds an identifier key;
//! 3. lookups by identifier key at that size: single-threaded, then with 4 reader threads,
//!    then 4 reader threads beside a writer applying steady batches.
//!
//! The last line is a summary, `key=value` separated by spaces, for scripts.

use std::time::{Duration, Instant};

use bytes::Bytes;
use trib_store::{
    ChangeBatch, ConsumerOffsets, EventRef, IdentKey, ProfileId, ProfileRecord, ProfileStore,
    SqliteOptions, SqliteStore, TimelineEntry,
};

/// splitmix64: deterministic and good enough for random keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn id(&mut self) -> ProfileId {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next().to_le_bytes());
        ProfileId::from_bytes(bytes)
    }

    fn key(&mut self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        bytes
    }
}

struct Args {
    profiles: usize,
    batch: usize,
    steady_batches: usize,
    lookups: usize,
    options: SqliteOptions,
}

fn parse_args() -> Args {
    let mut args = Args {
        profiles: 1_000_000,
        batch: 10_000,
        steady_batches: 30,
        lookups: 200_000,
        options: SqliteOptions::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--profiles" => args.profiles = value() as usize,
            "--batch" => args.batch = value() as usize,
            "--steady-batches" => args.steady_batches = value() as usize,
            "--lookups" => args.lookups = value() as usize,
            "--page-size" => args.options.page_size = value() as u32,
            "--cache-mib" => args.options.writer_cache_kib = value() as u32 * 1024,
            "--mmap-mib" => args.options.mmap_size = value() << 20,
            "--autocheckpoint" => args.options.wal_autocheckpoint_pages = value() as u32,
            "--durable" => args.options.durable_commits = true,
            // `cargo bench` passes this to every bench target.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// CPU time (user + system) of this process so far, from /proc (Linux); zero elsewhere.
/// On a shared machine it tells the work done apart from the time spent waiting for a core.
fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which is in parentheses): utime and stime are the 12th
    // and 13th of them, in clock ticks (100 per second on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let args = parse_args();
    let dir = tempfile::Builder::new()
        .prefix("trib-store-bench")
        .tempdir()
        .expect("a temporary directory");
    let store = SqliteStore::open(dir.path(), args.options.clone()).expect("open the store");
    println!("store at {} ({:?})", store.path().display(), args.options);
    let mut rng = Rng(0x5eed);
    let doc = Bytes::from(vec![b'd'; 300]);
    let mut ids: Vec<ProfileId> = Vec::with_capacity(args.profiles);
    let mut keys: Vec<[u8; 32]> = Vec::with_capacity(args.profiles);
    let mut offset = 0u64;
    let event = |rng: &mut Rng, id: ProfileId, offset: &mut u64| {
        *offset += 1;
        (
            id,
            TimelineEntry {
                timestamp_ms: 1_700_000_000_000 + (*offset as i64) - rng.below(60_000) as i64,
                event: EventRef {
                    partition: (*offset % 8) as u32,
                    offset: *offset,
                },
            },
        )
    };

    // 1. Ingest: every event creates a profile and an identifier.
    let started = Instant::now();
    let cpu_started = cpu_time();
    let mut batch_times = Vec::new();
    while ids.len() < args.profiles {
        let n = args.batch.min(args.profiles - ids.len());
        let mut batch = ChangeBatch {
            at_ms: 1,
            offsets: Some(ConsumerOffsets {
                consumer: "identity".to_owned(),
                offsets: vec![(0, offset)],
            }),
            ..ChangeBatch::default()
        };
        for _ in 0..n {
            let id = rng.id();
            let key = rng.key();
            batch.upserts.push(ProfileRecord {
                id,
                updated_at_ms: 1,
                doc: doc.clone(),
            });
            batch
                .identifiers
                .push((IdentKey(Bytes::copy_from_slice(&key)), Some(id)));
            batch.timeline.push(event(&mut rng, id, &mut offset));
            ids.push(id);
            keys.push(key);
        }
        let t = Instant::now();
        store.apply(&batch).expect("apply");
        let took = t.elapsed();
        batch_times.push(took);
    }
    let ingest = started.elapsed();
    let ingest_cpu = cpu_time() - cpu_started;
    let ingest_rate = ids.len() as f64 / ingest.as_secs_f64();
    let last_tenth: Duration = batch_times[batch_times.len() * 9 / 10..].iter().sum();
    let last_tenth_rate = (batch_times.len() - batch_times.len() * 9 / 10) as f64
        * args.batch as f64
        / last_tenth.as_secs_f64();
    batch_times.sort();
    println!(
        "ingest: {} events (each: 1 profile upsert, 1 identifier upsert, 1 timeline entry) in {:.2} s \
         = {:.0} events/s ({:.0}/s over the last tenth; {:.2} s of CPU = {:.0} events per CPU-second); \
         batch p50 {:.0} ms, max {:.0} ms",
        ids.len(),
        ingest.as_secs_f64(),
        ingest_rate,
        last_tenth_rate,
        ingest_cpu.as_secs_f64(),
        ids.len() as f64 / ingest_cpu.as_secs_f64(),
        percentile(&batch_times, 0.5).as_secs_f64() * 1e3,
        percentile(&batch_times, 1.0).as_secs_f64() * 1e3,
    );

    // 2. Steady state: events on existing profiles.
    let steady_batch = |rng: &mut Rng, offset: &mut u64, keys_added: &mut usize| {
        let mut batch = ChangeBatch {
            at_ms: 2,
            offsets: Some(ConsumerOffsets {
                consumer: "identity".to_owned(),
                offsets: vec![(0, *offset)],
            }),
            ..ChangeBatch::default()
        };
        for i in 0..args.batch {
            let id = ids[rng.below(ids.len())];
            batch.timeline.push(event(rng, id, offset));
            if i % 10 == 0 {
                batch.upserts.push(ProfileRecord {
                    id,
                    updated_at_ms: 2,
                    doc: doc.clone(),
                });
            }
            if i % 20 == 0 {
                batch
                    .identifiers
                    .push((IdentKey(Bytes::copy_from_slice(&rng.key())), Some(id)));
                *keys_added += 1;
            }
        }
        batch
    };
    let mut keys_added = 0;
    let mut steady_time = Duration::ZERO;
    let cpu_started = cpu_time();
    for _ in 0..args.steady_batches {
        let batch = steady_batch(&mut rng, &mut offset, &mut keys_added);
        let t = Instant::now();
        store.apply(&batch).expect("apply");
        steady_time += t.elapsed();
    }
    let steady_events = args.steady_batches * args.batch;
    let steady_rate = steady_events as f64 / steady_time.as_secs_f64();
    let steady_cpu = cpu_time() - cpu_started;
    println!(
        "steady: {steady_events} events (each: 1 timeline entry; 10% doc rewrites, 5% new keys) \
         in {:.2} s = {steady_rate:.0} events/s ({:.2} s of CPU = {:.0} events per CPU-second)",
        steady_time.as_secs_f64(),
        steady_cpu.as_secs_f64(),
        steady_events as f64 / steady_cpu.as_secs_f64(),
    );

    // 3. Lookups by identifier key (keys of the ingest; every one is found).
    let lookup_run = |threads: usize, per_thread: usize, seed: u64| -> (Vec<Duration>, f64) {
        let started = Instant::now();
        let mut all: Vec<Duration> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let store = &store;
                    let keys = &keys;
                    scope.spawn(move || {
                        let mut rng = Rng(seed + t as u64);
                        let mut times = Vec::with_capacity(per_thread);
                        for _ in 0..per_thread {
                            let key =
                                IdentKey(Bytes::copy_from_slice(&keys[rng.below(keys.len())]));
                            let t = Instant::now();
                            let found = store.lookup(&key).expect("lookup");
                            times.push(t.elapsed());
                            assert!(found.is_some());
                        }
                        times
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("a lookup thread"))
                .collect()
        });
        let rate = all.len() as f64 / started.elapsed().as_secs_f64();
        all.sort();
        (all, rate)
    };
    let (single, single_rate) = lookup_run(1, args.lookups, 1);
    println!(
        "lookup, 1 thread, {} keys: p50 {:.1} µs, p99 {:.1} µs, max {:.0} µs, {single_rate:.0}/s",
        keys.len(),
        micros(percentile(&single, 0.5)),
        micros(percentile(&single, 0.99)),
        micros(percentile(&single, 1.0)),
    );
    let (four, four_rate) = lookup_run(4, args.lookups / 4, 100);
    println!(
        "lookup, 4 threads: p50 {:.1} µs, p99 {:.1} µs, max {:.0} µs, {four_rate:.0}/s",
        micros(percentile(&four, 0.5)),
        micros(percentile(&four, 0.99)),
        micros(percentile(&four, 1.0)),
    );
    // Readers beside a writer: the writer applies steady batches while 4 threads look up.
    let (busy, busy_rate, writer_rate) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut rng = Rng(7);
            let mut offset = offset;
            let mut added = 0;
            let mut time = Duration::ZERO;
            let rounds = 10;
            for _ in 0..rounds {
                let batch = steady_batch(&mut rng, &mut offset, &mut added);
                let t = Instant::now();
                store.apply(&batch).expect("apply");
                time += t.elapsed();
            }
            (rounds * args.batch) as f64 / time.as_secs_f64()
        });
        let (busy, busy_rate) = lookup_run(4, args.lookups / 4, 200);
        (busy, busy_rate, writer.join().expect("the writer"))
    });
    println!(
        "lookup, 4 threads beside a writer ({writer_rate:.0} events/s): p50 {:.1} µs, p99 {:.1} µs, \
         max {:.0} µs, {busy_rate:.0}/s",
        micros(percentile(&busy, 0.5)),
        micros(percentile(&busy, 0.99)),
        micros(percentile(&busy, 1.0)),
    );
    let db = std::fs::metadata(store.path())
        .map(|m| m.len())
        .unwrap_or(0);
    println!("database file: {:.0} MiB", db as f64 / 1048576.0);
    println!(
        "summary: ingest_eps={ingest_rate:.0} ingest_tail_eps={last_tenth_rate:.0} ingest_cpu_eps={:.0} \
         steady_eps={steady_rate:.0} steady_cpu_eps={:.0} \
         lookup1_p50_us={:.1} lookup1_p99_us={:.1} lookup4_p50_us={:.1} lookup4_p99_us={:.1} \
         lookup4w_p99_us={:.1} writer_beside_readers_eps={writer_rate:.0} db_mib={:.0}",
        ids.len() as f64 / ingest_cpu.as_secs_f64(),
        steady_events as f64 / steady_cpu.as_secs_f64(),
        micros(percentile(&single, 0.5)),
        micros(percentile(&single, 0.99)),
        micros(percentile(&four, 0.5)),
        micros(percentile(&four, 0.99)),
        micros(percentile(&busy, 0.99)),
        db as f64 / 1048576.0
    );
}
