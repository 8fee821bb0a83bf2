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
