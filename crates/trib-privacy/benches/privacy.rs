//! The cost of encryption at rest.
//!
//! `cargo bench -p trib-privacy --bench privacy -- [RECORDS]` (default 200,000).
//!
//! 1. seal and open of a 400-byte payload with a cached data key, ns/op;
//! 2. append + read throughput of `SealedLog<EmbeddedLog>` against a plain `EmbeddedLog`:
//!    fsync durability, 8 concurrent callers appending batches of 100 records of 400 bytes over
//!    10,000 distinct keys (so data keys are created during the run, as in production), then
//!    every partition read back.
//!
//! The last line is a summary, `key=value` separated by spaces, for scripts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use trib_log::{EmbeddedLog, EmbeddedLogOptions, EventLog, Record};
use trib_privacy::seal::{SEAL_OVERHEAD, open_with, seal_with};
use trib_privacy::{BlindIndex, KeyStore, KeyStoreOptions, MasterKeyring, SealedLog};

const PAYLOAD_BYTES: usize = 400;
const BATCH: usize = 100;
const KEYS: usize = 10_000;
const CALLERS: usize = 8;

fn main() {
    let records: usize = std::env::args()
        .skip(1)
        .find(|argument| !argument.starts_with('-'))
        .and_then(|value| value.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir_in(".").expect("temporary directory");
    let keyring = Arc::new(MasterKeyring::open_file(&dir.path().join("master.keys")).unwrap());
    let keystore = KeyStore::open(KeyStoreOptions::in_data_dir(dir.path()), keyring).unwrap();
    let blind = Arc::new(BlindIndex::new([9; 32]));

    let (seal_ns, open_ns) = seal_open(&keystore, &blind);
    println!("seal 400 B: {seal_ns:.0} ns/op, open 400 B: {open_ns:.0} ns/op");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (plain_append, plain_read) = runtime.block_on(async {
        let log = EmbeddedLog::open(EmbeddedLogOptions::new(dir.path().join("plain"))).unwrap();
        throughput(Arc::new(log), records).await
    });
    println!(
        "plain EmbeddedLog: append {plain_append:.0} records/s, read {plain_read:.0} records/s"
    );
    let (sealed_append, sealed_read) = runtime.block_on(async {
        let inner = EmbeddedLog::open(EmbeddedLogOptions::new(dir.path().join("sealed"))).unwrap();
        let log = SealedLog::new(inner, keystore.clone(), Arc::clone(&blind), "events");
        throughput(Arc::new(log), records).await
    });
    println!(
        "SealedLog<EmbeddedLog>: append {sealed_append:.0} records/s ({:+.1}%), read {sealed_read:.0} records/s ({:+.1}%)",
        (sealed_append / plain_append - 1.0) * 100.0,
        (sealed_read / plain_read - 1.0) * 100.0
    );
    println!(
        "summary seal_ns={seal_ns:.0} open_ns={open_ns:.0} plain_append={plain_append:.0} sealed_append={sealed_append:.0} \
         plain_read={plain_read:.0} sealed_read={sealed_read:.0} records={records}"
    );
}

fn seal_open(keystore: &KeyStore, blind: &BlindIndex) -> (f64, f64) {
    const ROUNDS: usize = 200_000;
    let subject = blind.subject_of_log_key("user-bench");
    let dek = keystore.deks_for_write(&[subject]).unwrap().remove(0);
    let payload = vec![b'x'; PAYLOAD_BYTES];
    let mut sealed = Vec::with_capacity(PAYLOAD_BYTES + SEAL_OVERHEAD);
    let started = Instant::now();
    for _ in 0..ROUNDS {
        sealed.clear();
        seal_with(
            &dek,
            &subject,
            b"events",
            std::hint::black_box(&payload),
            &mut sealed,
        )
        .unwrap();
    }
    let seal_ns = started.elapsed().as_nanos() as f64 / ROUNDS as f64;
    let started = Instant::now();
    for _ in 0..ROUNDS {
        let opened = open_with(&dek, &subject, b"events", std::hint::black_box(&sealed)).unwrap();
        std::hint::black_box(opened);
    }
    let open_ns = started.elapsed().as_nanos() as f64 / ROUNDS as f64;
    (seal_ns, open_ns)
}

/// Appends `total` records from concurrent callers, then reads them all; records/s of each.
async fn throughput<L: EventLog>(log: Arc<L>, total: usize) -> (f64, f64) {
    let payload = Bytes::from(vec![b'p'; PAYLOAD_BYTES]);
    let calls = total / BATCH;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let (log, payload) = (Arc::clone(&log), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut state = caller as u64 * 0x9e37_79b9_7f4a_7c15 + 1;
            for _ in (caller..calls).step_by(CALLERS) {
                let records: Vec<Record> = (0..BATCH)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        Record {
                            key: format!("user-{}", state % KEYS as u64),
                            dedup_id: None,
                            timestamp_ms: 1_700_000_000_000,
                            payload: payload.clone(),
                        }
                    })
                    .collect();
                log.append(records).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let append = (calls * BATCH) as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut read = 0;
    for partition in 0..log.partition_count() {
        let mut from = 0;
        loop {
            let records = log.read(partition, from, 1_000).await.unwrap();
            let Some(last) = records.last() else { break };
            from = last.offset + 1;
            read += records.len();
        }
    }
    assert_eq!(read, calls * BATCH);
    let read_rate = read as f64 / started.elapsed().as_secs_f64();
    log.close().await.unwrap();
    (append, read_rate)
}
