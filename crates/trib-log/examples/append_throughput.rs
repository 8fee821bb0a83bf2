//! Measures append throughput: concurrent callers each appending 100-record batches of
//! ~650-byte payloads with unique deduplication ids, for a few seconds; then times a reopen.
//! The log lives in a temporary directory under the current directory.
//!
//! `cargo run --release -p trib-log --example append_throughput -- [fsync|none|memory] [seconds] [callers] [partitions]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use trib_log::{Durability, EmbeddedLog, EmbeddedLogOptions, EventLog, MemoryLog, Record};

const RECORDS_PER_CALL: usize = 100;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let arguments: Vec<String> = std::env::args().collect();
    let mode = arguments.get(1).map_or("fsync", String::as_str);
    let seconds: u64 = arguments
        .get(2)
        .and_then(|value| value.parse().ok())
        .unwrap_or(5);
    let callers: usize = arguments
        .get(3)
        .and_then(|value| value.parse().ok())
        .unwrap_or(32);
    let partitions: u32 = arguments
        .get(4)
        .and_then(|value| value.parse().ok())
        .unwrap_or(8);

    let dir = tempfile::tempdir_in(".").expect("temporary directory");
    let embedded = (mode != "memory").then(|| {
        Arc::new(
            EmbeddedLog::open(EmbeddedLogOptions {
                partitions,
                durability: if mode == "none" {
                    Durability::None
                } else {
                    Durability::Fsync
                },
                ..EmbeddedLogOptions::new(dir.path())
            })
            .expect("open the log"),
        )
    });
    let log: Arc<dyn EventLog> = match &embedded {
        Some(embedded) => Arc::clone(embedded) as Arc<dyn EventLog>,
        None => Arc::new(MemoryLog::new(partitions)),
    };

    let payload = Bytes::from(format!(
        "{{\"type\":\"track\",\"event\":\"Order Completed\",\"properties\":{{{}}}}}",
        "\"k\":\"v\",".repeat(75)
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let stored = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let (log, stop, stored, calls, payload) = (
            Arc::clone(&log),
            Arc::clone(&stop),
            Arc::clone(&stored),
            Arc::clone(&calls),
            payload.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut sequence = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                // The memory log never waits, so give the timer a chance.
                tokio::task::yield_now().await;
                let timestamp_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| since.as_millis() as i64);
                let records: Vec<Record> = (0..RECORDS_PER_CALL)
                    .map(|index| {
                        sequence += 1;
                        Record {
                            key: format!("user-{}", (caller * 7919 + index) % 10_000),
                            dedup_id: Some(format!("{caller}-{sequence}")),
                            timestamp_ms,
                            payload: payload.clone(),
                        }
                    })
                    .collect();
                match log.append(records).await {
                    Ok(outcomes) => {
                        stored.fetch_add(outcomes.len() as u64, Ordering::Relaxed);
                        calls.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        eprintln!("append failed: {error}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("caller task");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stored = stored.load(Ordering::Relaxed);
    println!(
        "{mode}: {callers} callers, {partitions} partitions, payload {} bytes: {:.0} records/s, {:.0} calls/s over {elapsed:.1} s",
        payload.len(),
        stored as f64 / elapsed,
        calls.load(Ordering::Relaxed) as f64 / elapsed,
    );
    if let Some(embedded) = &embedded {
        let commits = embedded.group_commits();
        println!(
            "  {commits} group commits, {:.0} records per commit, {:.0} commits/s",
            stored as f64 / commits as f64,
            commits as f64 / elapsed
        );
    }
    log.close().await.expect("close");
    drop(log);
    if let Some(embedded) = embedded {
        drop(embedded);
        let reopen_started = Instant::now();
        let reopened = EmbeddedLog::open(EmbeddedLogOptions {
            partitions,
            ..EmbeddedLogOptions::new(dir.path())
        })
        .expect("reopen the log");
        println!(
            "  reopened in {:.0} ms with {} deduplication ids",
            reopen_started.elapsed().as_secs_f64() * 1000.0,
            reopened.dedup_index_len()
        );
    }
}
