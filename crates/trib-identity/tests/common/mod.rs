//! A fault-injecting profile store shared by the identity tests.

use std::sync::atomic::{AtomicUsize, Ordering};

use trib_store::{
    Change, ChangeBatch, IdentKey, JournalEntry, ProfileId, ProfileState, ProfileStore, StoreError,
    TimelineEntry,
};

/// Wraps a store and fails the applies (numbered from 1) that `fails` picks, like a crash
/// before a commit; everything else is passed through.
pub(crate) struct FaultyStore<S> {
    pub(crate) inner: S,
    fails: fn(usize) -> bool,
    pub(crate) applies: AtomicUsize,
}

impl<S> FaultyStore<S> {
    pub(crate) fn new(inner: S, fails: fn(usize) -> bool) -> Self {
        Self {
            inner,
            fails,
            applies: AtomicUsize::new(0),
        }
    }
}

impl<S: ProfileStore> ProfileStore for FaultyStore<S> {
    fn apply(&self, batch: &ChangeBatch) -> Result<(), StoreError> {
        if (self.fails)(self.applies.fetch_add(1, Ordering::SeqCst) + 1) {
            return Err(StoreError::Backend("injected crash".into()));
        }
        self.inner.apply(batch)
    }
    fn get(&self, id: &ProfileId) -> Result<Option<ProfileState>, StoreError> {
        self.inner.get(id)
    }
    fn lookup(&self, key: &IdentKey) -> Result<Option<ProfileId>, StoreError> {
        self.inner.lookup(key)
    }
    fn changes(
        &self,
        since: Option<i64>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        self.inner.changes(since, after, limit)
    }
    fn timeline(
        &self,
        id: &ProfileId,
        before: Option<&TimelineEntry>,
        limit: usize,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        self.inner.timeline(id, before, limit)
    }
    fn journal(&self, id: &ProfileId, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
        self.inner.journal(id, limit)
    }
    fn journal_by_kind(
        &self,
        kind: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        self.inner.journal_by_kind(kind, after, limit)
    }
    fn consumer_offsets(&self, consumer: &str) -> Result<Vec<(u32, u64)>, StoreError> {
        self.inner.consumer_offsets(consumer)
    }
    fn count_active(&self) -> Result<u64, StoreError> {
        self.inner.count_active()
    }
}
