//! The profile store: where golden profiles, the identifier index, each person's timeline and
//! the provenance journal live.
//!
//! [`ProfileStore`] is one trait with three implementations: [`MemoryStore`] (tests and the
//! reference behaviour), the embedded default on SQLite (`sqlite` module) and PostgreSQL for
//! deployments that outgrow one machine (`postgres` module). One conformance suite runs
//! against all of them.
//!
//! # What the store knows, and what it does not
//!
//! The store is deliberately ignorant of what a profile *is*. A profile document, a journal
//! entry and an identifier key are opaque bytes chosen by the identity engine. That is what
//! makes encryption at rest a layer rather than a rewrite: the privacy capability encrypts the
//! document bytes (envelope encryption, per-subject data keys) and turns identifier keys into
//! keyed blind indexes (HMAC), and no store implementation has to change. The only clear
//! values a store holds are profile ids (random-looking 128-bit hashes), timestamps, log
//! positions and sequence numbers.
//!
//! # Writes are batches
//!
//! Everything the identity engine changes while it consumes a slice of the event log goes in
//! one [`ChangeBatch`], together with the consumer's next log offsets. [`ProfileStore::apply`]
//! applies a batch atomically: after a crash the store holds either all of a batch (and the
//! offsets after it) or none of it (and the offsets before it), so the consumer resumes
//! exactly where its state left off. Writers are expected to be serialized (one identity
//! engine per store); the change-feed sequence relies on it.

mod memory;
mod postgres;
mod sqlite;
mod types;

#[cfg(test)]
mod conformance;

pub use self::postgres::{PostgresOptions, PostgresStore};
pub use memory::MemoryStore;
pub use sqlite::{SqliteOptions, SqliteStore};
pub use types::{
    Change, ChangeBatch, ChangeKind, ConsumerOffsets, EventRef, IdentKey, JournalEntry,
    NewJournalEntry, ProfileId, ProfileIdError, ProfileRecord, ProfileState, TimelineEntry,
    TimelineSummary,
};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or refused the operation.
    #[error("profile store backend error: {0}")]
    Backend(String),
    /// The stored data is not what this version of Tributary expects.
    #[error("profile store data is corrupt: {0}")]
    Corrupt(String),
    /// The database schema is newer than this binary (a downgrade), or a migration failed.
    #[error("profile store migration error: {0}")]
    Migration(String),
}

/// The profile store. All methods are blocking; async callers use `spawn_blocking`.
pub trait ProfileStore: Send + Sync + 'static {
    /// Applies a batch atomically (see [`ChangeBatch`] for the order of its parts).
    fn apply(&self, batch: &ChangeBatch) -> Result<(), StoreError>;

    /// A hint that `batch` will soon be passed to [`ProfileStore::apply`], given by a caller
    /// that applies batches on another thread (the identity consumer): a store may start slow
    /// preparation now so that it overlaps the apply of the batch before (the sealed store
    /// starts creating the data keys of the batch's new profile ids). It changes nothing
    /// visible; `apply` must be correct whether or not it came first. Does nothing by default.
    fn prepare(&self, _batch: &ChangeBatch) {}

    /// The state of a profile id: active with its document, merged into another id, or
    /// deleted; `None` if the id was never stored.
    fn get(&self, id: &ProfileId) -> Result<Option<ProfileState>, StoreError>;

    /// [`ProfileStore::get`] for many ids at once, in the order given.
    fn get_many(&self, ids: &[ProfileId]) -> Result<Vec<Option<ProfileState>>, StoreError> {
        ids.iter().map(|id| self.get(id)).collect()
    }

    /// The profile an identifier key belongs to.
    fn lookup(&self, key: &IdentKey) -> Result<Option<ProfileId>, StoreError>;

    /// [`ProfileStore::lookup`] for many keys at once, in the order given.
    fn lookup_many(&self, keys: &[IdentKey]) -> Result<Vec<Option<ProfileId>>, StoreError> {
        keys.iter().map(|key| self.lookup(key)).collect()
    }

    /// The change feed: one entry per profile id at its latest change, in change order, with
    /// `seq > after_seq` and, when `since_ms` is given, `updated_at_ms >= since_ms`.
    fn changes(
        &self,
        since_ms: Option<i64>,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError>;

    /// A profile's timeline, newest first (by timestamp, then log position), strictly after
    /// `before` in that order when given.
    fn timeline(
        &self,
        id: &ProfileId,
        before: Option<&TimelineEntry>,
        limit: usize,
    ) -> Result<Vec<TimelineEntry>, StoreError>;

    /// How many events a profile's timeline holds, and the oldest and newest event times.
    fn timeline_summary(&self, id: &ProfileId) -> Result<TimelineSummary, StoreError> {
        let entries = self.timeline(id, None, usize::MAX)?;
        Ok(TimelineSummary {
            events: entries.len() as u64,
            first_ms: entries.last().map(|e| e.timestamp_ms),
            last_ms: entries.first().map(|e| e.timestamp_ms),
        })
    }

    /// A profile's journal (merges, refusals, unmerges), oldest first.
    fn journal(&self, id: &ProfileId, limit: usize) -> Result<Vec<JournalEntry>, StoreError>;

    /// Journal entries of one kind across all profiles, with `seq > after_seq`, oldest first.
    fn journal_by_kind(
        &self,
        kind: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError>;

    /// The next log offset per partition that a consumer committed, sorted by partition.
    fn consumer_offsets(&self, consumer: &str) -> Result<Vec<(u32, u64)>, StoreError>;

    /// The number of active (not merged, not deleted) profiles.
    fn count_active(&self) -> Result<u64, StoreError>;
}

impl<S: ProfileStore + ?Sized> ProfileStore for std::sync::Arc<S> {
    fn apply(&self, batch: &ChangeBatch) -> Result<(), StoreError> {
        (**self).apply(batch)
    }
    fn prepare(&self, batch: &ChangeBatch) {
        (**self).prepare(batch);
    }
    fn get(&self, id: &ProfileId) -> Result<Option<ProfileState>, StoreError> {
        (**self).get(id)
    }
    fn get_many(&self, ids: &[ProfileId]) -> Result<Vec<Option<ProfileState>>, StoreError> {
        (**self).get_many(ids)
    }
    fn lookup(&self, key: &IdentKey) -> Result<Option<ProfileId>, StoreError> {
        (**self).lookup(key)
    }
    fn lookup_many(&self, keys: &[IdentKey]) -> Result<Vec<Option<ProfileId>>, StoreError> {
        (**self).lookup_many(keys)
    }
    fn changes(
        &self,
        since_ms: Option<i64>,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        (**self).changes(since_ms, after_seq, limit)
    }
    fn timeline(
        &self,
        id: &ProfileId,
        before: Option<&TimelineEntry>,
        limit: usize,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        (**self).timeline(id, before, limit)
    }
    fn timeline_summary(&self, id: &ProfileId) -> Result<TimelineSummary, StoreError> {
        (**self).timeline_summary(id)
    }
    fn journal(&self, id: &ProfileId, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
        (**self).journal(id, limit)
    }
    fn journal_by_kind(
        &self,
        kind: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        (**self).journal_by_kind(kind, after_seq, limit)
    }
    fn consumer_offsets(&self, consumer: &str) -> Result<Vec<(u32, u64)>, StoreError> {
        (**self).consumer_offsets(consumer)
    }
    fn count_active(&self) -> Result<u64, StoreError> {
        (**self).count_active()
    }
}
