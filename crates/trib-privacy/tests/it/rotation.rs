//! Master key rotation under load: appenders keep creating keys and sealing records while the
//! key file is rotated and data keys re-wrapped, from this store and from a second handle on
//! the same files (as the CLI would, in another process).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use trib_log::{EmbeddedLog, EmbeddedLogOptions, EventLog, Record};
use trib_privacy::{BlindIndex, SealedLog, master};

use crate::open_store;

const APPENDERS: usize = 4;
const CALLS: usize = 40;
const RECORDS_PER_CALL: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_rewrap_under_load_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("master.keys");
    let keystore = open_store(dir.path());
    let blind = Arc::new(BlindIndex::new([5; 32]));
    let log_dir = dir.path().join("events");
    let log = Arc::new(SealedLog::new(
        EmbeddedLog::open(EmbeddedLogOptions::new(&log_dir)).unwrap(),
        keystore.clone(),
        Arc::clone(&blind),
        "events",
    ));
    // The "CLI": its own keyring and key store on the same files.
    let cli = open_store(dir.path());
    assert_eq!(cli.keyring().active_version(), 1);

    let rotating = Arc::new(AtomicBool::new(true));
    let rotator = {
        let (cli, keystore, rotating, key_file) = (
            cli.clone(),
            keystore.clone(),
            Arc::clone(&rotating),
            key_file.clone(),
        );
        std::thread::spawn(move || {
            let mut rewrapped = 0;
            for round in 0..3 {
                std::thread::sleep(Duration::from_millis(40));
                let version = master::rotate_file(&key_file).unwrap();
                assert_eq!(version, round + 2);
                // Alternate which handle re-wraps; both must be safe.
                let store = if round == 1 { &keystore } else { &cli };
                let report = store.rewrap(16).unwrap();
                assert_eq!(report.active_version, version);
                rewrapped += report.rewrapped;
            }
            rotating.store(false, Ordering::SeqCst);
            rewrapped
        })
    };

    let mut appenders = Vec::new();
    for appender in 0..APPENDERS {
        let log = Arc::clone(&log);
        appenders.push(tokio::spawn(async move {
            let mut expected = Vec::new();
            for call in 0..CALLS {
                let records: Vec<Record> = (0..RECORDS_PER_CALL)
                    .map(|index| {
                        // New identifiers all the time (new keys), and some repeats.
                        let key = format!(
                            "user-{appender}-{}",
                            (call * RECORDS_PER_CALL + index) % 300
                        );
                        let payload = format!("{key} call {call} index {index}");
                        expected.push((key.clone(), payload.clone()));
                        Record {
                            key,
                            dedup_id: None,
                            timestamp_ms: 1_700_000_000_000,
                            payload: Bytes::from(payload),
                        }
                    })
                    .collect();
                log.append(records).await.unwrap();
            }
            expected
        }));
    }
    let mut expected = Vec::new();
    for appender in appenders {
        expected.extend(appender.await.unwrap());
    }
    let rewrapped = tokio::task::spawn_blocking(move || rotator.join().unwrap())
        .await
        .unwrap();
    assert!(!rotating.load(Ordering::SeqCst));
    assert!(rewrapped > 0, "the rotations happened while keys existed");

    // Everything is on the newest version, without a further rewrap.
    let stats = cli.stats().unwrap();
    assert_eq!(
        stats
            .deks_by_kek_version
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![4],
        "{stats:?}"
    );
    assert_eq!(
        stats.deks_by_kek_version[&4],
        (APPENDERS * 300) as u64,
        "one key per identifier"
    );
    assert_eq!(cli.rewrap(16).unwrap().rewrapped, 0);

    // Every record reads back intact, through a freshly opened store (nothing cached) whose
    // keyring has only what is on disk.
    log.close().await.unwrap();
    drop(log);
    drop((keystore, cli));
    let reopened = SealedLog::new(
        EmbeddedLog::open(EmbeddedLogOptions::new(&log_dir)).unwrap(),
        open_store(dir.path()),
        Arc::clone(&blind),
        "events",
    );
    let mut stored_by_key: HashMap<String, Vec<String>> = HashMap::new();
    let mut total = 0;
    for partition in 0..reopened.partition_count() {
        for record in reopened.read(partition, 0, 100_000).await.unwrap() {
            total += 1;
            stored_by_key
                .entry(record.key)
                .or_default()
                .push(String::from_utf8(record.payload.to_vec()).unwrap());
        }
    }
    assert_eq!(total, expected.len());
    for (key, payload) in &expected {
        let stored = &stored_by_key[&reopened.stored_key(key)];
        assert!(stored.contains(payload), "{payload} missing");
    }
}

/// A key store written by the previous schema (version 1, with an index by master key version)
/// is migrated when opened: the index is dropped, the keys stay readable, and a rotation's
/// rewrap, which walks the keys in subject order in small batches, still reaches every key.
#[test]
fn a_schema_1_key_store_is_migrated_and_rewrap_reaches_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let subjects: Vec<trib_privacy::Subject> =
        (0..50u8).map(|n| trib_privacy::Subject([n; 32])).collect();
    let ids: Vec<u64> = {
        let store = open_store(dir.path());
        store
            .deks_for_write(&subjects)
            .unwrap()
            .iter()
            .map(|dek| dek.key_id())
            .collect()
    };
    // Back to what version 1 left on disk.
    let path = dir.path().join("keys").join("subjects.db");
    assert!(path.exists(), "{path:?}");
    {
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch(
                "CREATE INDEX deks_by_kek_version ON deks (kek_version); PRAGMA user_version = 1;",
            )
            .unwrap();
    }

    let store = open_store(dir.path());
    let connection = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 2);
    let indexes: i64 = connection
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'deks_by_kek_version'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 0, "the index is dropped");

    master::rotate_file(&dir.path().join("master.keys")).unwrap();
    let report = store.rewrap(7).unwrap();
    assert_eq!(report.rewrapped, 50);
    assert_eq!(report.batches, 8, "50 keys in batches of 7");
    assert_eq!(store.rewrap(7).unwrap().rewrapped, 0);
    let fresh = open_store(dir.path());
    for (subject, id) in subjects.iter().zip(ids) {
        assert!(
            fresh.dek_for_read(subject, id).unwrap().is_some(),
            "every key reads back under the new master key"
        );
    }
    assert_eq!(
        fresh
            .stats()
            .unwrap()
            .deks_by_kek_version
            .keys()
            .copied()
            .collect::<Vec<u32>>(),
        vec![2]
    );
}
