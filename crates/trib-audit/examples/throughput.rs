//! Append throughput with group commit: `cargo run -p trib-audit --example throughput [DIR]`.
//!
//! Appends single-record requests from 1, 8, 64 and 256 concurrent tasks for a few seconds each
//! and prints durable entries per second. DIR (default: a temporary directory) decides which
//! file system's fsync is measured.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use trib_audit::{
    Action, Actor, AuditKey, AuditLog, AuditOptions, AuditRecord, Outcome, Purpose, Resource,
};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let temporary = tempfile::tempdir().unwrap();
    let root = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temporary.path().to_owned());
    let record = AuditRecord {
        actor: Actor::api_key("0123456789abcdef").unwrap(),
        action: Action::Read,
        purpose: Purpose::SUPPORT,
        resource: Resource::new("/v1/profiles/{id}"),
        subject: None,
        outcome: Outcome::Status(200),
    };
    for concurrency in [1_usize, 8, 64, 256] {
        let dir = root.join(format!("audit-{concurrency}"));
        let log = Arc::new(
            AuditLog::open(&dir, AuditKey::new(&[1; 32]), AuditOptions::default()).unwrap(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (log, stop, done, record) =
                (log.clone(), stop.clone(), done.clone(), record.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    log.append(vec![record.clone()]).await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = started.elapsed().as_secs_f64();
        let entries = done.load(Ordering::Relaxed);
        log.close();
        let report = trib_audit::verify(&dir, &AuditKey::new(&[1; 32])).unwrap();
        assert!(report.is_intact());
        println!(
            "{concurrency:>4} concurrent appenders: {entries:>7} entries in {elapsed:.1} s = {:>8.0} entries/s (mean wait {:.2} ms); verify intact",
            entries as f64 / elapsed,
            elapsed * 1000.0 * concurrency as f64 / entries as f64
        );
    }
}
