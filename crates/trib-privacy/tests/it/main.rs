//! Integration tests of trib-privacy over real files: the SQLite key store, the key file and
//! the embedded event log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod crash;
mod log;
mod rotation;
mod tombstones;

use std::path::Path;
use std::sync::Arc;

use trib_privacy::{KeyStore, KeyStoreOptions, MasterKeyring};

/// A key store in `dir` with the key file `dir/master.keys`, as the server opens it.
pub(crate) fn open_store(dir: &Path) -> KeyStore {
    let keyring = Arc::new(MasterKeyring::open_file(&dir.join("master.keys")).unwrap());
    KeyStore::open(KeyStoreOptions::in_data_dir(dir), keyring).unwrap()
}

/// Every byte of every file under `dir`.
pub(crate) fn raw_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        } else {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    out
}

pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
