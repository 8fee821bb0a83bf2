//! SealedLog over the real EmbeddedLog.

use std::sync::Arc;

use bytes::Bytes;
use trib_log::{EmbeddedLog, EmbeddedLogOptions, EventLog, Record, partition_for};
use trib_privacy::{BlindIndex, SealedLog};

use crate::{contains, open_store, raw_bytes};

const MARKER: &str = "PLAINTEXT-MARKER";

fn record(key: &str, number: usize) -> Record {
    Record {
        key: key.to_owned(),
        dedup_id: Some(format!("m-{number}")),
        timestamp_ms: 1_700_000_000_000,
        payload: Bytes::from(format!("{{\"n\":{number},\"note\":\"{MARKER} of {key}\"}}")),
    }
}

async fn read_all(log: &impl EventLog) -> Vec<trib_log::StoredRecord> {
    let mut out = Vec::new();
    for partition in 0..log.partition_count() {
        out.extend(log.read(partition, 0, 10_000).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_clear_reaches_disk_and_shredding_erases_one_subject() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("events");
    let keystore = open_store(dir.path());
    let blind = Arc::new(BlindIndex::new([2; 32]));
    let inner = EmbeddedLog::open(EmbeddedLogOptions::new(&log_dir)).unwrap();
    let log = SealedLog::new(inner, keystore.clone(), Arc::clone(&blind), "events");

    let keys = ["alice@example.com", "bob-user-7", "carol-anon-3"];
    let mut records = Vec::new();
    for number in 0..30 {
        records.push(record(keys[number % 3], number));
    }
    let outcomes = log.append(records).await.unwrap();
    assert_eq!(outcomes.len(), 30);
    // Partitioning is stable per identifier: by the stored (blind) key.
    for key in keys {
        let stored = log.stored_key(key);
        let expected = partition_for(&stored, log.partition_count());
        let read = read_all(&log).await;
        assert!(
            read.iter()
                .filter(|r| r.key == stored)
                .all(|r| r.partition == expected)
        );
    }

    let read = read_all(&log).await;
    assert_eq!(read.len(), 30);
    for stored in &read {
        let text = std::str::from_utf8(&stored.payload).unwrap();
        let key = keys
            .iter()
            .find(|key| log.stored_key(key) == stored.key)
            .unwrap();
        assert!(text.contains(&format!("{MARKER} of {key}")), "{text}");
    }

    // Nothing clear on disk: neither in the log nor in the key store.
    let log_bytes = raw_bytes(&log_dir);
    let key_bytes = raw_bytes(&dir.path().join("keys"));
    for bytes in [&log_bytes, &key_bytes] {
        assert!(!contains(bytes, MARKER.as_bytes()));
        for key in keys {
            assert!(!contains(bytes, key.as_bytes()), "{key} found on disk");
        }
    }

    // Capture Alice's wrapped key as stored, then shred her.
    let alice = blind.subject_of_log_key(keys[0]);
    let wrapped: Vec<u8> = rusqlite::Connection::open(keystore.path())
        .unwrap()
        .query_row(
            "SELECT wrapped FROM deks WHERE subject = ?1",
            [alice.0],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(wrapped.len(), 72);
    assert!(contains(&raw_bytes(&dir.path().join("keys")), &wrapped));
    assert_eq!(keystore.shred(&[alice], Some("receipt-1")).unwrap(), 1);
    assert!(
        !contains(&raw_bytes(&dir.path().join("keys")), &wrapped),
        "the wrapped key must be gone from the database and its WAL"
    );

    let read = read_all(&log).await;
    assert_eq!(read.len(), 30, "erased records keep their offsets");
    for stored in &read {
        if stored.key == alice.to_hex() {
            assert!(stored.payload.is_empty(), "an erased record reads empty");
        } else {
            assert!(contains(&stored.payload, MARKER.as_bytes()));
        }
    }
    assert_eq!(read.iter().filter(|r| r.payload.is_empty()).count(), 10);

    // Reopened from disk (no cache), the result is the same.
    log.close().await.unwrap();
    drop(log);
    let keystore = open_store(dir.path());
    let inner = EmbeddedLog::open(EmbeddedLogOptions::new(&log_dir)).unwrap();
    let log = SealedLog::new(inner, keystore, blind, "events");
    let read = read_all(&log).await;
    assert_eq!(read.iter().filter(|r| r.payload.is_empty()).count(), 10);
    assert_eq!(read.iter().filter(|r| !r.payload.is_empty()).count(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_copied_into_another_log_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let keystore = open_store(dir.path());
    let blind = Arc::new(BlindIndex::new([2; 32]));
    let events = SealedLog::new(
        EmbeddedLog::open(EmbeddedLogOptions::new(dir.path().join("events"))).unwrap(),
        keystore.clone(),
        Arc::clone(&blind),
        "events",
    );
    let quarantine = SealedLog::new(
        EmbeddedLog::open(EmbeddedLogOptions::new(dir.path().join("quarantine"))).unwrap(),
        keystore,
        blind,
        "quarantine",
    );
    events.append(vec![record("dave", 1)]).await.unwrap();
    let sealed = read_all(events.inner()).await.remove(0);
    quarantine
        .inner()
        .append(vec![Record {
            key: sealed.key,
            dedup_id: None,
            timestamp_ms: sealed.timestamp_ms,
            payload: sealed.payload,
        }])
        .await
        .unwrap();
    let mut partition = None;
    for candidate in 0..quarantine.partition_count() {
        if quarantine.inner().end_offset(candidate).await.unwrap() > 0 {
            partition = Some(candidate);
        }
    }
    let partition = partition.unwrap();
    let error = quarantine.read(partition, 0, 10).await.unwrap_err();
    assert!(error.to_string().contains("quarantine"), "{error}");
}

/// Blanking through the sealed log empties records in the wrapped log; they read back empty,
/// like erased ones, and the other records still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blanked_records_read_back_empty_through_the_sealed_log() {
    use trib_log::Compactable;
    let dir = tempfile::tempdir().unwrap();
    let keystore = open_store(dir.path());
    let blind = Arc::new(BlindIndex::new([3; 32]));
    let inner = EmbeddedLog::open(EmbeddedLogOptions {
        partitions: 1,
        segment_max_bytes: 400,
        ..EmbeddedLogOptions::new(dir.path().join("events"))
    })
    .unwrap();
    let log = SealedLog::new(inner, keystore, blind, "events");
    for number in 0..12 {
        log.append(vec![record("dora@example.com", number)])
            .await
            .unwrap();
    }
    let report = log.blank(0, &[0, 2]).await.unwrap();
    assert_eq!(report.blanked, 2);
    let read = read_all(&log).await;
    assert_eq!(read.len(), 12);
    for stored in &read {
        let blanked = [0, 2].contains(&stored.offset);
        assert_eq!(
            stored.payload.is_empty(),
            blanked,
            "offset {}",
            stored.offset
        );
        assert_eq!(stored.dedup_id, Some(format!("m-{}", stored.offset)));
    }
}
