//! Data key creation: what a profile store batch pays for its new profile ids.
//!
//! `cargo bench -p trib-privacy --bench keys -- [KEYS] [BATCH]` (defaults 256,000 and 16,000):
//! `KEYS` new random subjects asked for through [`KeyStore::deks_for_write`] in calls of
//! `BATCH` (as the identity consumer's sealed profile store does for one commit's new profile
//! ids), then the same subjects again with an empty cache (every key read back from SQLite).
//! The key store is a fresh file in the current directory (a real disk, `synchronous = FULL`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use trib_privacy::{BlindIndex, KeyStore, KeyStoreOptions, MasterKeyring, Subject};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let keys = args.first().copied().unwrap_or(256_000);
    let batch = args.get(1).copied().unwrap_or(16_000).max(1);
    let dir = tempfile::tempdir_in(".").expect("temporary directory");
    let keyring = Arc::new(MasterKeyring::open_file(&dir.path().join("master.keys")).unwrap());
    let blind = BlindIndex::new([7; 32]);
    let subjects: Vec<Subject> = (0..keys)
        .map(|n| blind.subject_of_log_key(&format!("profile-{n}")))
        .collect();

    let keystore = KeyStore::open(
        KeyStoreOptions::in_data_dir(dir.path()),
        Arc::clone(&keyring),
    )
    .unwrap();
    let started = Instant::now();
    for chunk in subjects.chunks(batch) {
        keystore.deks_for_write(chunk).unwrap();
    }
    let create = started.elapsed().as_secs_f64();
    drop(keystore);

    let mut options = KeyStoreOptions::in_data_dir(dir.path());
    options.cache_entries = 1;
    let keystore = KeyStore::open(options, keyring).unwrap();
    let started = Instant::now();
    for chunk in subjects.chunks(batch) {
        keystore.deks_for_write(chunk).unwrap();
    }
    let read = started.elapsed().as_secs_f64();
    println!(
        "create {keys} keys in calls of {batch}: {create:.2} s = {:.0} keys/s ({:.1} µs/key); read back uncached: {read:.2} s = {:.0} keys/s",
        keys as f64 / create,
        create * 1e6 / keys as f64,
        keys as f64 / read,
    );
}
