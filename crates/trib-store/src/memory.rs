//! [`MemoryStore`]: the reference implementation, in memory, for tests and benchmarks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use crate::{
    Change, ChangeBatch, ChangeKind, IdentKey, JournalEntry, ProfileId, ProfileRecord,
    ProfileState, ProfileStore, StoreError, TimelineEntry,
};

/// A [`ProfileStore`] that keeps everything in memory and nothing across restarts.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    profiles: HashMap<ProfileId, ProfileState>,
    /// Per profile id: its change-feed seq and updated time.
    change_of: HashMap<ProfileId, (u64, i64)>,
    /// seq → profile id, the feed in order.
    feed: BTreeMap<u64, ProfileId>,
    next_seq: u64,
    identifiers: HashMap<IdentKey, ProfileId>,
    timelines: HashMap<ProfileId, BTreeSet<(i64, u32, u64)>>,
    journal: Vec<JournalEntry>,
    last_journal_seq: u64,
    offsets: HashMap<String, BTreeMap<u32, u64>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied batch visible: `apply`
        // builds nothing outside the lock and every mutation below is infallible.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inner {
    fn touch(&mut self, id: ProfileId, at_ms: i64) {
        self.next_seq += 1;
        if let Some((old, _)) = self.change_of.insert(id, (self.next_seq, at_ms)) {
            self.feed.remove(&old);
        }
        self.feed.insert(self.next_seq, id);
    }
}

fn entry_of(key: &(i64, u32, u64)) -> TimelineEntry {
    TimelineEntry {
        timestamp_ms: key.0,
        event: crate::EventRef {
            partition: key.1,
            offset: key.2,
        },
    }
}

impl ProfileStore for MemoryStore {
    fn apply(&self, batch: &ChangeBatch) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if !batch.erased.is_empty() {
            inner
                .journal
                .retain(|entry| !batch.erased.contains(&entry.profile));
        }
        for id in &batch.deleted {
            inner.timelines.remove(id);
            inner
                .profiles
                .insert(*id, ProfileState::Deleted { at_ms: batch.at_ms });
            inner.touch(*id, batch.at_ms);
        }
        for (from, into) in &batch.merged {
            if let Some(entries) = inner.timelines.remove(from) {
                inner.timelines.entry(*into).or_default().extend(entries);
            }
            inner.profiles.insert(
                *from,
                ProfileState::Merged {
                    into: *into,
                    at_ms: batch.at_ms,
                },
            );
            inner.touch(*from, batch.at_ms);
        }
        for record in &batch.upserts {
            inner
                .profiles
                .insert(record.id, ProfileState::Active(record.clone()));
            inner.touch(record.id, record.updated_at_ms);
        }
        for (key, id) in &batch.identifiers {
            match id {
                Some(id) => inner.identifiers.insert(key.clone(), *id),
                None => inner.identifiers.remove(key),
            };
        }
        for (id, entry) in &batch.timeline {
            inner
                .timelines
                .entry(*id)
                .or_default()
                .insert(entry.sort_key());
        }
        for entry in &batch.journal {
            inner.last_journal_seq += 1;
            let seq = inner.last_journal_seq;
            inner.journal.push(JournalEntry {
                seq,
                profile: entry.profile,
                kind: entry.kind.clone(),
                at_ms: entry.at_ms,
                doc: entry.doc.clone(),
            });
        }
        if let Some(offsets) = &batch.offsets {
            let committed = inner.offsets.entry(offsets.consumer.clone()).or_default();
            committed.extend(offsets.offsets.iter().copied());
        }
        Ok(())
    }

    fn get(&self, id: &ProfileId) -> Result<Option<ProfileState>, StoreError> {
        Ok(self.lock().profiles.get(id).cloned())
    }

    fn lookup(&self, key: &IdentKey) -> Result<Option<ProfileId>, StoreError> {
        Ok(self.lock().identifiers.get(key).copied())
    }

    fn changes(
        &self,
        since_ms: Option<i64>,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let inner = self.lock();
        let mut out = Vec::new();
        for (&seq, id) in inner.feed.range(after_seq.saturating_add(1)..) {
            if out.len() >= limit {
                break;
            }
            let (_, updated_at_ms) = inner.change_of[id];
            if since_ms.is_some_and(|since| updated_at_ms < since) {
                continue;
            }
            let kind = match inner.profiles.get(id) {
                Some(ProfileState::Merged { into, .. }) => ChangeKind::MergedInto(*into),
                Some(ProfileState::Deleted { .. }) => ChangeKind::Deleted,
                _ => ChangeKind::Upserted,
            };
            out.push(Change {
                seq,
                id: *id,
                updated_at_ms,
                kind,
            });
        }
        Ok(out)
    }

    fn timeline(
        &self,
        id: &ProfileId,
        before: Option<&TimelineEntry>,
        limit: usize,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        let inner = self.lock();
        let Some(entries) = inner.timelines.get(id) else {
            return Ok(Vec::new());
        };
        let entries: Vec<TimelineEntry> = match before {
            Some(before) => entries
                .range(..before.sort_key())
                .rev()
                .take(limit)
                .map(entry_of)
                .collect(),
            None => entries.iter().rev().take(limit).map(entry_of).collect(),
        };
        Ok(entries)
    }

    fn journal(&self, id: &ProfileId, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .journal
            .iter()
            .filter(|entry| entry.profile == *id)
            .take(limit)
            .cloned()
            .collect())
    }

    fn journal_by_kind(
        &self,
        kind: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .journal
            .iter()
            .filter(|entry| entry.seq > after_seq && entry.kind == kind)
            .take(limit)
            .cloned()
            .collect())
    }

    fn consumer_offsets(&self, consumer: &str) -> Result<Vec<(u32, u64)>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .offsets
            .get(consumer)
            .map(|offsets| offsets.iter().map(|(p, o)| (*p, *o)).collect())
            .unwrap_or_default())
    }

    fn count_active(&self) -> Result<u64, StoreError> {
        let inner = self.lock();
        Ok(inner
            .profiles
            .values()
            .filter(|state| matches!(state, ProfileState::Active(_)))
            .count() as u64)
    }
}

impl From<ProfileRecord> for ProfileState {
    fn from(record: ProfileRecord) -> Self {
        Self::Active(record)
    }
}
