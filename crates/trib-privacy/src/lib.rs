//! Encryption at rest for personal data (issue 5).
//!
//! Envelope encryption: every subject (a person's identifier, as a [`Subject`] blind index)
//! has its own random data key ([`Dek`]) in the [`KeyStore`], wrapped by a master key from
//! [`MasterKeyring`]. Payloads are sealed with AES-256-GCM under the subject's data key
//! ([`seal`]); [`SealedLog`] does this for every record of an event log, so neither clear
//! identifiers nor clear payloads reach the log's files.
//!
//! Master keys have versions; `tributary keys rotate` adds one with [`master::rotate_file`] and
//! [`KeyStore::rewrap`] re-wraps the data keys online. Erasure is crypto-shredding:
//! [`KeyStore::shred`] destroys a subject's data key, which makes every copy of its sealed data
//! unreadable wherever it is stored, and leaves a tombstone keyed by the blind index.
//!
//! Not here: deciding which fields are personal, consent checks, and the erasure endpoint.

mod at_rest;
mod blind;
mod error;
pub mod keystore;
mod log;
pub mod master;
pub mod seal;
mod store;

pub use at_rest::{AtRest, QueueSealer, Shredded};
pub use blind::{BlindIndex, Subject};
pub use error::PrivacyError;
pub use keystore::{Dek, KeyStats, KeyStore, KeyStoreOptions, PendingDeks, RewrapReport};
pub use log::SealedLog;
pub use master::MasterKeyring;
pub use seal::{Opened, Sealer};
pub use store::SealedStore;
