//! Tombstones: an erased subject gets no new key until its tombstone is cleared.

use std::sync::Arc;

use trib_privacy::{BlindIndex, Opened, PrivacyError, Sealer};

use crate::open_store;

#[test]
fn tombstones_block_new_keys_until_cleared_and_old_data_stays_shredded() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = Sealer::new(open_store(dir.path()), Arc::new(BlindIndex::new([4; 32])));
    let keystore = sealer.keystore();
    let erin = sealer.blind().subject_of_log_key("erin");
    let frank = sealer.blind().subject_of_log_key("frank");
    let old = sealer.seal(&erin, b"events", b"before erasure").unwrap();
    let old_key_id = keystore.deks_for_write(&[erin]).unwrap()[0].key_id();
    assert!(!keystore.is_tombstoned(&erin).unwrap());

    assert_eq!(
        keystore.shred(&[erin, frank], Some("erasure-42")).unwrap(),
        1
    );
    assert!(keystore.is_tombstoned(&erin).unwrap());
    assert!(
        keystore.is_tombstoned(&frank).unwrap(),
        "a subject without a key gets a tombstone too"
    );
    assert_eq!(keystore.stats().unwrap().tombstones, 2);
    assert_eq!(
        sealer.open(&erin, b"events", &old).unwrap(),
        Opened::Shredded
    );
    assert!(keystore.dek_for_read(&erin, old_key_id).unwrap().is_none());
    let error = keystore.deks_for_write(&[erin]).unwrap_err();
    assert!(matches!(error, PrivacyError::Erased { .. }), "{error}");
    assert!(!error.to_string().contains("erin"));
    // Shredding again is harmless.
    assert_eq!(keystore.shred(&[erin], None).unwrap(), 0);

    assert!(keystore.clear_tombstone(&erin).unwrap());
    assert!(!keystore.clear_tombstone(&erin).unwrap());
    assert!(!keystore.is_tombstoned(&erin).unwrap());
    let new_key_id = keystore.deks_for_write(&[erin]).unwrap()[0].key_id();
    assert_ne!(new_key_id, old_key_id);
    let new = sealer.seal(&erin, b"events", b"after consent").unwrap();
    assert_eq!(
        sealer.open(&erin, b"events", &new).unwrap(),
        Opened::Plain(b"after consent".to_vec())
    );
    assert_eq!(
        sealer.open(&erin, b"events", &old).unwrap(),
        Opened::Shredded
    );

    // The same holds after a restart (no cache).
    drop(sealer);
    let sealer = Sealer::new(open_store(dir.path()), Arc::new(BlindIndex::new([4; 32])));
    assert_eq!(
        sealer.open(&erin, b"events", &old).unwrap(),
        Opened::Shredded
    );
    assert!(sealer.keystore().is_tombstoned(&frank).unwrap());
    assert!(matches!(
        sealer.keystore().deks_for_write(&[frank]),
        Err(PrivacyError::Erased { .. })
    ));
}

#[tokio::test]
async fn a_sealed_log_skips_an_erased_subjects_records_and_stores_the_others() {
    use bytes::Bytes;
    use trib_log::{AppendOutcome, EventLog, MemoryLog, Record};
    use trib_privacy::SealedLog;

    fn grants(payload: &[u8]) -> bool {
        payload.windows(7).any(|w| w == b"consent")
    }
    let dir = tempfile::tempdir().unwrap();
    let keystore = open_store(dir.path());
    let blind = Arc::new(BlindIndex::new([5; 32]));
    let log = SealedLog::new(MemoryLog::new(2), keystore.clone(), blind.clone(), "events")
        .with_revival(grants);
    let record = |key: &str, payload: &'static str| Record {
        key: key.to_owned(),
        dedup_id: None,
        timestamp_ms: 1,
        payload: Bytes::from_static(payload.as_bytes()),
    };
    log.append(vec![record("gina", "first")]).await.unwrap();
    keystore
        .shred(&[blind.subject_of_log_key("gina")], Some("r1"))
        .unwrap();

    let outcomes = log
        .append(vec![
            record("hal", "h1"),
            record("gina", "replayed"),
            record("hal", "h2"),
        ])
        .await
        .unwrap();
    assert!(matches!(outcomes[0], AppendOutcome::Stored { .. }));
    assert_eq!(outcomes[1], AppendOutcome::Erased);
    assert!(matches!(outcomes[2], AppendOutcome::Stored { .. }));

    // New consent lifts the tombstone: stored under a new key; the old record stays erased.
    let outcomes = log
        .append(vec![record("gina", "back with consent")])
        .await
        .unwrap();
    assert!(matches!(outcomes[0], AppendOutcome::Stored { .. }));
    assert!(
        !keystore
            .is_tombstoned(&blind.subject_of_log_key("gina"))
            .unwrap()
    );
    let mut payloads = Vec::new();
    for partition in 0..log.partition_count() {
        for stored in log.read(partition, 0, 100).await.unwrap() {
            payloads.push(String::from_utf8(stored.payload.to_vec()).unwrap());
        }
    }
    payloads.sort();
    assert_eq!(payloads, ["", "back with consent", "h1", "h2"]);
}

#[test]
fn keys_requested_ahead_are_durable_when_answered_and_skip_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let blind = BlindIndex::new([4; 32]);
    let ada = blind.subject_of_log_key("ada");
    let bob = blind.subject_of_log_key("bob");
    let erin = blind.subject_of_log_key("erin");
    let first = open_store(dir.path());
    let bob_key_id = first.deks_for_write(&[bob]).unwrap()[0].key_id();
    first.shred(&[erin], Some("erasure-1")).unwrap();

    // Another process (its own cache): bob's key is found, ada's created, erin's refused.
    let second = open_store(dir.path());
    let answer = second
        .request_deks(&[ada, bob, erin, ada])
        .unwrap()
        .wait()
        .unwrap();
    let key_id_of = |subject: &trib_privacy::Subject| {
        answer
            .iter()
            .find(|(s, _)| s == subject)
            .map(|(_, dek)| dek.key_id())
    };
    assert_eq!(answer.len(), 2);
    assert_eq!(key_id_of(&bob), Some(bob_key_id));
    let ada_key_id = key_id_of(&ada).expect("ada has a new key");
    assert_eq!(key_id_of(&erin), None);
    assert!(matches!(
        second.deks_for_write(&[erin]),
        Err(PrivacyError::Erased { .. })
    ));

    // Answered means committed: a third process reads ada's key.
    drop(second);
    let third = open_store(dir.path());
    assert_eq!(
        third
            .dek_for_read(&ada, ada_key_id)
            .unwrap()
            .unwrap()
            .key_id(),
        ada_key_id
    );
    // Cached keys are answered from the cache, the same keys.
    let again = first.request_deks(&[bob]).unwrap().wait().unwrap();
    assert_eq!(again[0].1.key_id(), bob_key_id);
}

#[test]
fn keys_requested_before_a_shred_are_not_answered_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let blind = BlindIndex::new([4; 32]);
    let ada = blind.subject_of_log_key("ada");
    let bob = blind.subject_of_log_key("bob");
    let keystore = open_store(dir.path());
    keystore.deks_for_write(&[bob]).unwrap();
    let pending = keystore.request_deks(&[ada, bob]).unwrap();
    // The writer thread takes the creation first, then the shred.
    assert_eq!(keystore.shred(&[ada], Some("erasure-2")).unwrap(), 1);
    assert!(
        pending.wait().unwrap().is_empty(),
        "an answer from before a shred may hold destroyed keys"
    );
}
