//! The deduplication index: which deduplication ids were stored within the window.
//!
//! An id is kept as its 128-bit XXH3 hash, never as the string: a false match between two
//! different ids (which would drop a record) needs a 128-bit collision, about n²/2¹²⁹ for n
//! remembered ids, so it does not happen in practice.
//!
//! Hashes sit in one hash set per time bucket, chosen by the record's timestamp; a bucket is
//! 1/24 of the window (one hour for the default 24 h), at least one second and at most one hour.
//! Expiry drops whole buckets once their newest possible timestamp is older than
//! `now - window`, so an id is remembered for at least the window and at most one bucket
//! longer. A lookup checks every live bucket, newest first. An id whose record timestamp lies
//! in the future (a skewed clock) is remembered until that timestamp plus the window.
//!
//! Memory: an entry is a 16-byte hash in a hashbrown slot plus one control byte; with the sets'
//! load factor between 44 % and 87.5 % that is about 19–39 bytes, roughly 26 bytes on average,
//! per remembered id (plus, while a bucket's set grows, its old table until the move ends).
//! One million ids a day with the default 24 h window costs about 26 MB; 100 events/s with ids,
//! about 225 MB.
//!
//! What it does not do: it is not bounded by count. A log that stores far more ids per window
//! than memory allows must use a shorter window.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use crate::limits::duration_ms;

/// The shortest bucket, in milliseconds.
const MIN_BUCKET_MS: i64 = 1_000;
/// The longest bucket, in milliseconds.
const MAX_BUCKET_MS: i64 = 3_600_000;
/// How many buckets one window spans (when that gives a bucket length within the bounds).
const BUCKETS_PER_WINDOW: i64 = 24;

/// Returns the key the index keeps for a deduplication id (its UTF-8 bytes).
pub(crate) fn dedup_hash(id: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id)
}

/// Remembers deduplication ids (by hash) for the deduplication window.
#[derive(Debug)]
pub(crate) struct DedupIndex {
    window_ms: i64,
    bucket_ms: i64,
    /// Bucket number (timestamp divided by `bucket_ms`, rounded down) → the hashes in it.
    buckets: BTreeMap<i64, IdHashSet>,
    entries: usize,
}

impl DedupIndex {
    /// Creates an empty index; a zero window turns deduplication off.
    pub(crate) fn new(window: Duration) -> Self {
        let window_ms = duration_ms(window);
        let bucket_ms = (window_ms / BUCKETS_PER_WINDOW).clamp(MIN_BUCKET_MS, MAX_BUCKET_MS);
        Self {
            window_ms,
            bucket_ms,
            buckets: BTreeMap::new(),
            entries: 0,
        }
    }

    /// Returns the oldest timestamp a remembered id may have at `now_ms`.
    pub(crate) fn cutoff_ms(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.window_ms)
    }

    /// Returns whether deduplication is on (the window is not zero).
    pub(crate) fn is_enabled(&self) -> bool {
        self.window_ms > 0
    }

    /// Forgets the buckets whose every timestamp is older than `now_ms - window`.
    pub(crate) fn expire(&mut self, now_ms: i64) {
        let cutoff = self.cutoff_ms(now_ms);
        while let Some(entry) = self.buckets.first_entry() {
            let bucket_end = entry.key().saturating_add(1).saturating_mul(self.bucket_ms);
            if bucket_end > cutoff {
                break;
            }
            self.entries -= entry.get().len();
            entry.remove();
        }
    }

    /// Returns whether an id with this hash is remembered. Call [`DedupIndex::expire`] first so
    /// that ids older than the window are forgotten.
    pub(crate) fn contains(&self, id_hash: u128) -> bool {
        self.buckets
            .values()
            .rev()
            .any(|bucket| bucket.contains(&id_hash))
    }

    /// Remembers an id stored with `timestamp_ms`, unless that is already older than the window.
    pub(crate) fn insert(&mut self, id_hash: u128, timestamp_ms: i64, now_ms: i64) {
        if !self.is_enabled() || timestamp_ms < self.cutoff_ms(now_ms) {
            return;
        }
        let bucket = timestamp_ms.div_euclid(self.bucket_ms);
        if self.buckets.entry(bucket).or_default().insert(id_hash) {
            self.entries += 1;
        }
    }

    /// Returns how many ids are remembered.
    pub(crate) fn len(&self) -> usize {
        self.entries
    }
}

/// A set of id hashes; the hashes are already uniformly distributed, so the set's hasher just
/// folds them to 64 bits instead of hashing them again.
type IdHashSet = HashSet<u128, BuildHasherDefault<PassThroughHasher>>;

#[derive(Debug, Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than u128, which the index does not use; stay correct.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = (value as u64) ^ ((value >> 64) as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: i64 = 3_600_000;

    #[test]
    fn remembers_ids_within_the_window_and_forgets_older_ones() {
        let mut index = DedupIndex::new(Duration::from_secs(24 * 3600));
        let now = 1_700_000_000_000;
        index.insert(dedup_hash(b"a"), now - HOUR_MS, now);
        index.insert(dedup_hash(b"b"), now - 23 * HOUR_MS, now);
        index.insert(dedup_hash(b"old"), now - 25 * HOUR_MS, now);
        assert!(index.contains(dedup_hash(b"a")));
        assert!(index.contains(dedup_hash(b"b")));
        assert!(!index.contains(dedup_hash(b"old")), "older than the window");
        assert!(!index.contains(dedup_hash(b"c")));
        assert_eq!(index.len(), 2);

        // Two hours later "b" is 25 h old and its bucket has expired; "a" is 3 h old.
        index.expire(now + 2 * HOUR_MS);
        assert!(index.contains(dedup_hash(b"a")));
        assert!(!index.contains(dedup_hash(b"b")));
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn zero_window_disables_deduplication() {
        let mut index = DedupIndex::new(Duration::ZERO);
        index.insert(dedup_hash(b"a"), 0, 0);
        assert!(!index.contains(dedup_hash(b"a")));
        assert_eq!(index.len(), 0);
    }
}
