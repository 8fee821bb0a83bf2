//! [`AtRest`]: everything a server needs to keep personal data encrypted at rest, opened once
//! per data directory, and the crypto-shredding step of an erasure.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use trib_log::EventLog;
use trib_store::{ProfileId, ProfileStore};

use crate::PrivacyError;
use crate::blind::{BlindIndex, Subject};
use crate::keystore::{KeyStore, KeyStoreOptions};
use crate::log::SealedLog;
use crate::master::MasterKeyring;
use crate::seal::{Opened, Sealer};
use crate::store::SealedStore;

/// The blind-index domain of queue keys: no identifier's subject can be one of them.
const QUEUE_DOMAIN: &[u8] = b"tributary/queue/v1\0";

/// The key store and blind index of a data directory.
#[derive(Clone, Debug)]
pub struct AtRest {
    keystore: KeyStore,
    blind: Arc<BlindIndex>,
}

/// Seals values that must wait in a queue outside any person's data key (so that shredding
/// the person does not make them unreadable), e.g. the emails of erased people that the sync
/// engine still has to delete at an ESP. One data key per queue, in the key store (wrapped by
/// the master key, rotated with it), in its own blind-index domain.
#[derive(Clone, Debug)]
pub struct QueueSealer {
    sealer: Sealer,
    subject: Subject,
    context: Vec<u8>,
}

impl QueueSealer {
    /// Seals `clear` (blocking: the queue's key may be created).
    pub fn seal(&self, clear: &[u8]) -> Result<Vec<u8>, PrivacyError> {
        self.sealer.seal(&self.subject, &self.context, clear)
    }

    /// Opens what [`QueueSealer::seal`] made (blocking on a key cache miss).
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, PrivacyError> {
        match self.sealer.open(&self.subject, &self.context, sealed)? {
            Opened::Plain(clear) => Ok(clear),
            Opened::Shredded => Err(PrivacyError::CorruptCiphertext {
                subject: self.subject.to_hex(),
                reason: "the queue's data key was destroyed",
            }),
        }
    }
}

/// What [`AtRest::shred`] destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Shredded {
    /// Data keys of event log subjects (the person's `userId`s and `anonymousId`s): their
    /// events and quarantined messages can no longer be read.
    pub log_keys: usize,
    /// Data keys of profile ids: the sealed documents and journal entries of those ids.
    pub profile_keys: usize,
}

impl AtRest {
    /// Opens the key store `<data_dir>/keys/subjects.db` with the master keys of
    /// `TRIBUTARY_MASTER_KEYS` or `<data_dir>/master.keys` (created on first use), and the
    /// blind index keyed by `blind_key`.
    pub fn open(data_dir: &Path, blind_key: [u8; 32]) -> Result<AtRest, PrivacyError> {
        let keyring = Arc::new(MasterKeyring::load(data_dir)?);
        let keystore = KeyStore::open(KeyStoreOptions::in_data_dir(data_dir), keyring)?;
        Ok(AtRest {
            keystore,
            blind: Arc::new(BlindIndex::new(blind_key)),
        })
    }

    pub fn keystore(&self) -> &KeyStore {
        &self.keystore
    }

    /// The sealer of the queue `name` (see [`QueueSealer`]).
    pub fn queue_sealer(&self, name: &str) -> QueueSealer {
        QueueSealer {
            sealer: Sealer::new(self.keystore.clone(), self.blind.clone()),
            subject: self.blind.subject_in_domain(QUEUE_DOMAIN, name.as_bytes()),
            context: [b"queue:".as_slice(), name.as_bytes()].concat(),
        }
    }

    /// Seals a log: `name` goes into every payload's AAD; `revives` tells from a clear
    /// payload whether it brings an erased person back with new consent.
    pub fn seal_log(
        &self,
        log: Arc<dyn EventLog>,
        name: &str,
        revives: Option<fn(&[u8]) -> bool>,
    ) -> Arc<dyn EventLog> {
        let sealed = SealedLog::new(log, self.keystore.clone(), self.blind.clone(), name);
        Arc::new(match revives {
            Some(revives) => sealed.with_revival(revives),
            None => sealed,
        })
    }

    /// Seals a profile store's documents and journal entries.
    pub fn seal_store(&self, store: Arc<dyn ProfileStore>) -> Arc<dyn ProfileStore> {
        Arc::new(SealedStore::new(
            store,
            self.keystore.clone(),
            self.blind.clone(),
        ))
    }

    /// Destroys the data keys of an erased person (blocking): the subjects of their log keys
    /// and of every profile id they had, recording tombstones under `receipt_id`.
    pub fn shred(
        &self,
        log_keys: &BTreeSet<String>,
        profile_ids: &[ProfileId],
        receipt_id: &str,
    ) -> Result<Shredded, PrivacyError> {
        let log_subjects: Vec<Subject> = log_keys
            .iter()
            .map(|key| self.blind.subject_of_log_key(key))
            .collect();
        let profile_subjects: Vec<Subject> = profile_ids
            .iter()
            .map(|id| SealedStore::<Arc<dyn ProfileStore>>::profile_subject(&self.blind, id))
            .collect();
        let log_keys = self.keystore.shred(&log_subjects, Some(receipt_id))?;
        let profile_keys = self.keystore.shred(&profile_subjects, Some(receipt_id))?;
        Ok(Shredded {
            log_keys,
            profile_keys,
        })
    }
}
