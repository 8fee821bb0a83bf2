//! [`SealedStore`]: a [`ProfileStore`] decorator that seals profile documents and journal
//! entries, so that no clear personal value reaches the profile store's files.
//!
//! Each profile id is a subject with its own data key (`profile\0` domain of the blind index):
//! its document and the journal entries written under it are sealed with that key, with
//! `profiles` or `journal` in the AAD. Identifier keys are already blind indexes (HMAC) made by
//! the identity layer, and timelines hold only log positions, so they pass through unchanged.
//!
//! Erasure shreds the profile subjects ([`SealedStore::profile_subject`]) of every id a person
//! had; a document or journal entry sealed under a destroyed key reads back as deleted or
//! without its document. A profile id that comes back later (the person returned with new
//! consent: the identity layer decided) gets a new data key.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use trib_store::{
    Change, ChangeBatch, IdentKey, JournalEntry, ProfileId, ProfileRecord, ProfileState,
    ProfileStore, StoreError, TimelineEntry, TimelineSummary,
};

use crate::PrivacyError;
use crate::blind::{BlindIndex, Subject};
use crate::keystore::{Dek, KeyStore, PendingDeks};
use crate::seal::{SEAL_OVERHEAD, open_with, seal_with, sealed_key_id};

const PROFILE_DOMAIN: &[u8] = b"profile\0";
const DOC_CONTEXT: &[u8] = b"profiles";
const JOURNAL_CONTEXT: &[u8] = b"journal";

/// Key creations started by [`ProfileStore::prepare`] kept for later applies; past this the
/// oldest is dropped (its keys are still created, and cached).
const MAX_PENDING: usize = 4;

/// Wraps a profile store so that documents and journal entries are stored sealed.
pub struct SealedStore<S> {
    inner: S,
    keystore: KeyStore,
    blind: Arc<BlindIndex>,
    /// Key creations started by `prepare`, oldest first.
    pending: Mutex<VecDeque<PendingDeks>>,
}

impl<S> std::fmt::Debug for SealedStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedStore").finish_non_exhaustive()
    }
}

fn backend(error: PrivacyError) -> StoreError {
    match error {
        PrivacyError::CorruptCiphertext { .. } | PrivacyError::UnknownDataKey { .. } => {
            StoreError::Corrupt(error.to_string())
        }
        other => StoreError::Backend(format!("encryption at rest: {other}")),
    }
}

impl<S: ProfileStore> SealedStore<S> {
    pub fn new(inner: S, keystore: KeyStore, blind: Arc<BlindIndex>) -> SealedStore<S> {
        SealedStore {
            inner,
            keystore,
            blind,
            pending: Mutex::new(VecDeque::new()),
        }
    }

    /// The wrapped store, which holds the sealed documents.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The subject whose data key seals a profile id's document and journal.
    pub fn profile_subject(blind: &BlindIndex, id: &ProfileId) -> Subject {
        blind.subject_in_domain(PROFILE_DOMAIN, id.as_bytes())
    }

    /// The profile ids of a batch's documents and journal entries, sorted, once each.
    fn batch_ids(batch: &ChangeBatch) -> Vec<ProfileId> {
        let mut ids: Vec<ProfileId> = batch.upserts.iter().map(|r| r.id).collect();
        ids.extend(batch.journal.iter().map(|e| e.profile));
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Data keys for profile `subjects`, creating missing ones; a profile id whose key was shredded gets a
    /// new one (whether a person may come back is the identity layer's decision).
    ///
    /// Keys come from the cache, then from the requests `prepare` made (waited for oldest
    /// first, only until every key is there: a later batch's request may be queued behind),
    /// then from the key store.
    fn write_keys(&self, subjects: &[Subject]) -> Result<Vec<Arc<Dek>>, StoreError> {
        let mut deks: Vec<Option<Arc<Dek>>> = subjects
            .iter()
            .map(|subject| self.keystore.cached_current(subject))
            .collect();
        let mut missing = deks.iter().filter(|dek| dek.is_none()).count();
        while missing > 0 {
            let next = self
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front();
            let Some(pending) = next else { break };
            let created: HashMap<Subject, Arc<Dek>> = match pending.wait() {
                Ok(created) => created.into_iter().collect(),
                Err(error) => {
                    // Asked again below, where a failure fails the batch.
                    tracing::debug!(%error, "creating a batch's data keys ahead failed");
                    continue;
                }
            };
            for (dek, subject) in deks.iter_mut().zip(subjects) {
                if dek.is_none()
                    && let Some(found) = created.get(subject)
                {
                    *dek = Some(Arc::clone(found));
                    missing -= 1;
                }
            }
        }
        if missing == 0 {
            return Ok(deks.into_iter().flatten().collect());
        }
        let mut deks = self
            .keystore
            .deks_for_write_partial(subjects)
            .map_err(backend)?;
        if deks.iter().any(Option::is_none) {
            for (dek, subject) in deks.iter().zip(subjects) {
                if dek.is_none() {
                    self.keystore.clear_tombstone(subject).map_err(backend)?;
                }
            }
            deks = self
                .keystore
                .deks_for_write_partial(subjects)
                .map_err(backend)?;
        }
        deks.into_iter()
            .map(|dek| {
                dek.ok_or_else(|| {
                    StoreError::Backend("encryption at rest: no data key was created".into())
                })
            })
            .collect()
    }

    fn seal(dek: &Dek, subject: &Subject, context: &[u8], doc: &[u8]) -> Result<Bytes, StoreError> {
        let mut out = Vec::with_capacity(doc.len() + SEAL_OVERHEAD);
        seal_with(dek, subject, context, doc, &mut out).map_err(backend)?;
        Ok(Bytes::from(out))
    }

    /// Opens a sealed document of `id`; `None` when its key was destroyed.
    fn open(
        &self,
        id: &ProfileId,
        context: &[u8],
        sealed: &[u8],
    ) -> Result<Option<Bytes>, StoreError> {
        let subject = Self::profile_subject(&self.blind, id);
        let key_id = sealed_key_id(&subject, sealed).map_err(backend)?;
        match self
            .keystore
            .dek_for_read(&subject, key_id)
            .map_err(backend)?
        {
            Some(dek) => open_with(&dek, &subject, context, sealed)
                .map(|plain| Some(Bytes::from(plain)))
                .map_err(backend),
            None => Ok(None),
        }
    }

    fn open_state(&self, id: &ProfileId, state: ProfileState) -> Result<ProfileState, StoreError> {
        match state {
            ProfileState::Active(record) => match self.open(id, DOC_CONTEXT, &record.doc)? {
                Some(doc) => Ok(ProfileState::Active(ProfileRecord { doc, ..record })),
                None => Ok(ProfileState::Deleted {
                    at_ms: record.updated_at_ms,
                }),
            },
            other => Ok(other),
        }
    }

    fn open_journal(&self, entries: Vec<JournalEntry>) -> Result<Vec<JournalEntry>, StoreError> {
        entries
            .into_iter()
            .map(|entry| {
                let doc = self
                    .open(&entry.profile, JOURNAL_CONTEXT, &entry.doc)?
                    .unwrap_or_default();
                Ok(JournalEntry { doc, ..entry })
            })
            .collect()
    }
}

impl<S: ProfileStore> ProfileStore for SealedStore<S> {
    /// Takes the batch's cached data keys and starts creating the others (the batch's new
    /// profile ids) on the key store's writer thread, so that their commit overlaps the apply
    /// of the batch before; `apply` waits for that commit before sealing anything under them.
    fn prepare(&self, batch: &ChangeBatch) {
        let subjects: Vec<Subject> = Self::batch_ids(batch)
            .iter()
            .map(|id| Self::profile_subject(&self.blind, id))
            .collect();
        match self.keystore.request_deks(&subjects) {
            Ok(pending) => {
                let mut queue = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                if queue.len() >= MAX_PENDING {
                    queue.pop_front();
                }
                queue.push_back(pending);
            }
            // `apply` gets the keys itself, and reports a failure.
            Err(error) => tracing::debug!(%error, "cannot start creating a batch's data keys"),
        }
        self.inner.prepare(batch);
    }

    fn apply(&self, batch: &ChangeBatch) -> Result<(), StoreError> {
        let ids = Self::batch_ids(batch);
        if ids.is_empty() {
            return self.inner.apply(batch);
        }
        let subjects: Vec<Subject> = ids
            .iter()
            .map(|id| Self::profile_subject(&self.blind, id))
            .collect();
        let deks = self.write_keys(&subjects)?;
        let key_of = |id: &ProfileId| -> Result<(&Arc<Dek>, &Subject), StoreError> {
            let index = ids
                .binary_search(id)
                .map_err(|_| StoreError::Backend("encryption at rest: missing key".into()))?;
            Ok((&deks[index], &subjects[index]))
        };
        let mut sealed = batch.clone();
        for record in &mut sealed.upserts {
            let (dek, subject) = key_of(&record.id)?;
            record.doc = Self::seal(dek, subject, DOC_CONTEXT, &record.doc)?;
        }
        for entry in &mut sealed.journal {
            let (dek, subject) = key_of(&entry.profile)?;
            entry.doc = Self::seal(dek, subject, JOURNAL_CONTEXT, &entry.doc)?;
        }
        self.inner.apply(&sealed)
    }

    fn get(&self, id: &ProfileId) -> Result<Option<ProfileState>, StoreError> {
        self.inner
            .get(id)?
            .map(|state| self.open_state(id, state))
            .transpose()
    }

    fn get_many(&self, ids: &[ProfileId]) -> Result<Vec<Option<ProfileState>>, StoreError> {
        self.inner
            .get_many(ids)?
            .into_iter()
            .zip(ids)
            .map(|(state, id)| state.map(|state| self.open_state(id, state)).transpose())
            .collect()
    }

    fn lookup(&self, key: &IdentKey) -> Result<Option<ProfileId>, StoreError> {
        self.inner.lookup(key)
    }

    fn lookup_many(&self, keys: &[IdentKey]) -> Result<Vec<Option<ProfileId>>, StoreError> {
        self.inner.lookup_many(keys)
    }

    fn changes(
        &self,
        since_ms: Option<i64>,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        self.inner.changes(since_ms, after_seq, limit)
    }

    fn timeline(
        &self,
        id: &ProfileId,
        before: Option<&TimelineEntry>,
        limit: usize,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        self.inner.timeline(id, before, limit)
    }

    fn timeline_summary(&self, id: &ProfileId) -> Result<TimelineSummary, StoreError> {
        self.inner.timeline_summary(id)
    }

    fn journal(&self, id: &ProfileId, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
        self.open_journal(self.inner.journal(id, limit)?)
    }

    fn journal_by_kind(
        &self,
        kind: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        self.open_journal(self.inner.journal_by_kind(kind, after_seq, limit)?)
    }

    fn consumer_offsets(&self, consumer: &str) -> Result<Vec<(u32, u64)>, StoreError> {
        self.inner.consumer_offsets(consumer)
    }

    fn count_active(&self) -> Result<u64, StoreError> {
        self.inner.count_active()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::KeyStoreOptions;
    use crate::master::MasterKeyring;
    use trib_store::{MemoryStore, NewJournalEntry, SqliteOptions, SqliteStore};

    fn keystore(dir: &std::path::Path) -> KeyStore {
        let keyring = Arc::new(MasterKeyring::open_file(&dir.join("master.keys")).unwrap());
        KeyStore::open(KeyStoreOptions::in_data_dir(dir), keyring).unwrap()
    }

    fn id(n: u8) -> ProfileId {
        ProfileId::from_bytes([n; 16])
    }

    fn raw_bytes(dir: &std::path::Path) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                out.extend(std::fs::read(path).unwrap());
            }
        }
        out
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    fn batch(n: u8, doc: &str, note: &str) -> ChangeBatch {
        ChangeBatch {
            at_ms: 1,
            upserts: vec![ProfileRecord {
                id: id(n),
                updated_at_ms: 1,
                doc: Bytes::copy_from_slice(doc.as_bytes()),
            }],
            journal: vec![NewJournalEntry {
                profile: id(n),
                kind: "merge".into(),
                at_ms: 1,
                doc: Bytes::copy_from_slice(note.as_bytes()),
            }],
            ..ChangeBatch::default()
        }
    }

    #[test]
    fn documents_and_journals_are_sealed_on_disk_and_read_back_clear() {
        let dir = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let blind = Arc::new(BlindIndex::new([3; 32]));
        let inner = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
        let store = SealedStore::new(inner, keystore(keys.path()), blind.clone());
        store
            .apply(&batch(
                1,
                "ada@example.com Lovelace",
                "merged ada@example.com",
            ))
            .unwrap();
        store
            .apply(&batch(2, "bob@example.com", "note about bob"))
            .unwrap();
        let Some(ProfileState::Active(record)) = store.get(&id(1)).unwrap() else {
            panic!("profile 1 is active");
        };
        assert_eq!(record.doc.as_ref(), b"ada@example.com Lovelace");
        assert_eq!(
            store.journal(&id(1), 10).unwrap()[0].doc.as_ref(),
            b"merged ada@example.com"
        );
        let many = store.get_many(&[id(2), id(9)]).unwrap();
        assert!(
            matches!(&many[0], Some(ProfileState::Active(r)) if r.doc.as_ref() == b"bob@example.com")
        );
        assert!(many[1].is_none());
        drop(store);
        let bytes = raw_bytes(dir.path());
        for clear in [
            "ada@example.com",
            "Lovelace",
            "bob@example.com",
            "note about bob",
        ] {
            assert!(
                !contains(&bytes, clear.as_bytes()),
                "{clear} is on disk in clear"
            );
        }
    }

    fn doc_of(store: &SealedStore<MemoryStore>, n: u8) -> Option<Vec<u8>> {
        match store.get(&id(n)).unwrap() {
            Some(ProfileState::Active(record)) => Some(record.doc.to_vec()),
            _ => None,
        }
    }

    #[test]
    fn batches_prepared_ahead_are_sealed_under_their_committed_keys() {
        let keys = tempfile::tempdir().unwrap();
        let blind = Arc::new(BlindIndex::new([3; 32]));
        let keystore = keystore(keys.path());
        let store = SealedStore::new(MemoryStore::new(), keystore.clone(), blind.clone());
        // Prepared in order, some twice, more than are kept, applied later (as the identity
        // consumer does when the writer lags).
        let batches: Vec<ChangeBatch> = (1..=7)
            .map(|n| batch(n, &format!("doc {n}"), &format!("note {n}")))
            .collect();
        for batch in batches.iter().chain(&batches[..2]) {
            store.prepare(batch);
        }
        for batch in &batches {
            store.apply(batch).unwrap();
        }
        for n in 1..=7 {
            assert_eq!(doc_of(&store, n), Some(format!("doc {n}").into_bytes()));
        }
        // After a restart (no cache) the keys are read from the key store.
        drop(store);
        drop(keystore);
        let store = SealedStore::new(
            MemoryStore::new(),
            super::tests::keystore(keys.path()),
            blind,
        );
        store.apply(&batch(1, "doc 1 again", "note")).unwrap();
        assert_eq!(doc_of(&store, 1), Some(b"doc 1 again".to_vec()));
    }

    #[test]
    fn a_profile_erased_between_prepare_and_apply_is_sealed_under_a_new_key() {
        let keys = tempfile::tempdir().unwrap();
        let blind = Arc::new(BlindIndex::new([3; 32]));
        let keystore = keystore(keys.path());
        let store = SealedStore::new(MemoryStore::new(), keystore.clone(), blind.clone());
        let returning = batch(3, "ida, back with consent", "consented");
        store.prepare(&returning);
        let subject = SealedStore::<MemoryStore>::profile_subject(&blind, &id(3));
        // The key the prepare created is destroyed before the batch is applied.
        assert_eq!(keystore.shred(&[subject], Some("r3")).unwrap(), 1);
        store.apply(&returning).unwrap();
        assert_eq!(doc_of(&store, 3), Some(b"ida, back with consent".to_vec()));
    }

    #[test]
    fn a_shredded_profile_reads_as_deleted_and_its_id_can_come_back_with_a_new_key() {
        let keys = tempfile::tempdir().unwrap();
        let blind = Arc::new(BlindIndex::new([3; 32]));
        let keystore = keystore(keys.path());
        let store = SealedStore::new(MemoryStore::new(), keystore.clone(), blind.clone());
        store.apply(&batch(1, "erin", "erin's merge")).unwrap();
        store.apply(&batch(2, "frank", "frank's merge")).unwrap();
        let subject = SealedStore::<MemoryStore>::profile_subject(&blind, &id(1));
        assert_eq!(keystore.shred(&[subject], Some("r1")).unwrap(), 1);

        assert!(matches!(
            store.get(&id(1)).unwrap(),
            Some(ProfileState::Deleted { .. })
        ));
        assert!(store.journal(&id(1), 10).unwrap()[0].doc.is_empty());
        assert!(matches!(
            store.get(&id(2)).unwrap(),
            Some(ProfileState::Active(_))
        ));

        store.apply(&batch(1, "erin again", "consented")).unwrap();
        let Some(ProfileState::Active(record)) = store.get(&id(1)).unwrap() else {
            panic!("profile 1 is back");
        };
        assert_eq!(record.doc.as_ref(), b"erin again");
    }
}
