//! The values a [`ProfileStore`](crate::ProfileStore) stores and returns.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

/// The id of a golden profile: 128 bits, shown as `p_` and 32 lowercase hex digits.
///
/// Ids are derived by the identity engine from a profile's inputs (never random), so the same
/// inputs always give the same id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProfileId([u8; 16]);

impl ProfileId {
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Reads an id from a 16-byte slice (as stored in a database column).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ProfileIdError> {
        <[u8; 16]>::try_from(bytes)
            .map(Self)
            .map_err(|_| ProfileIdError::Length)
    }
}

impl fmt::Display for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("p_")?;
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a profile id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProfileIdError {
    #[error("a profile id is `p_` followed by 32 lowercase hex digits")]
    Format,
    #[error("a profile id has 16 bytes")]
    Length,
}

impl FromStr for ProfileId {
    type Err = ProfileIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hex = text.strip_prefix("p_").ok_or(ProfileIdError::Format)?;
        if hex.len() != 32 {
            return Err(ProfileIdError::Format);
        }
        let mut bytes = [0u8; 16];
        for (index, byte) in bytes.iter_mut().enumerate() {
            let pair = &hex[index * 2..index * 2 + 2];
            if !pair
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(ProfileIdError::Format);
            }
            *byte = u8::from_str_radix(pair, 16).map_err(|_| ProfileIdError::Format)?;
        }
        Ok(Self(bytes))
    }
}

/// The key under which an identifier is indexed. Opaque to the store: today the engine's
/// `type` + value bytes, later a keyed blind index (HMAC) so that no store holds a clear
/// email address in its index.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdentKey(pub Bytes);

impl fmt::Debug for IdentKey {
    // Identifier keys may hold personal data: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentKey({} bytes)", self.0.len())
    }
}

/// The position of an event in the event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventRef {
    pub partition: u32,
    pub offset: u64,
}

/// One event on a profile's timeline. Timelines are ordered newest first by
/// `(timestamp_ms, event)`, both descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimelineEntry {
    /// When the event happened (its `timestamp`), in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    pub event: EventRef,
}

impl TimelineEntry {
    /// The timeline's sort key, ascending; timelines are read in descending order of it.
    pub fn sort_key(&self) -> (i64, u32, u64) {
        (self.timestamp_ms, self.event.partition, self.event.offset)
    }
}

/// The size and time range of a profile's timeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimelineSummary {
    pub events: u64,
    /// The oldest and newest event times, in ms since the Unix epoch.
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
}

/// An active profile: its id, when it last changed and its document (opaque bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRecord {
    pub id: ProfileId,
    /// When the profile last changed, in milliseconds since the Unix epoch (processing time).
    pub updated_at_ms: i64,
    pub doc: Bytes,
}

/// What a profile id stands for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileState {
    Active(ProfileRecord),
    /// The profile was merged into another one; lookups by this id are redirected there.
    Merged {
        into: ProfileId,
        at_ms: i64,
    },
    /// The profile was removed (an unmerge rebuilt it under other ids, or it was erased).
    Deleted {
        at_ms: i64,
    },
}

/// What changed about a profile id, in the change feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Upserted,
    MergedInto(ProfileId),
    Deleted,
}

/// One entry of the change feed: a profile id at its latest change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// Increases with every applied change; the feed's cursor.
    pub seq: u64,
    pub id: ProfileId,
    pub updated_at_ms: i64,
    pub kind: ChangeKind,
}

/// A journal entry to write: provenance (a merge and what caused it), a refused merge, an
/// unmerge. `kind` is a short machine-readable name; `doc` is opaque to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJournalEntry {
    pub profile: ProfileId,
    pub kind: String,
    pub at_ms: i64,
    pub doc: Bytes,
}

/// A stored journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// Increases with every written entry, across profiles.
    pub seq: u64,
    pub profile: ProfileId,
    pub kind: String,
    pub at_ms: i64,
    pub doc: Bytes,
}

/// The next offset to read per partition, for a named consumer of the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerOffsets {
    pub consumer: String,
    /// `(partition, next offset)`; partitions not listed keep their committed offset.
    pub offsets: Vec<(u32, u64)>,
}

/// Everything one step of the identity engine changes, applied atomically, in this order:
///
/// 0. `erased`: every journal entry of these profiles is removed (the right to erasure; the
///    only way journal entries are ever removed). The engine lists the ids in `deleted` too,
///    and may journal the erasure itself under one of them later in the same batch;
/// 1. `deleted`: the profile becomes [`ProfileState::Deleted`], its timeline is emptied;
/// 2. `merged`: `(from, into)`: `from` becomes [`ProfileState::Merged`] into `into` and its
///    timeline entries move to `into`;
/// 3. `upserts`: each profile becomes [`ProfileState::Active`] with the given document,
///    whatever it was before (an unmerge may bring a merged or deleted id back);
/// 4. `identifiers`: each key points at the profile, or at nothing for `None`;
/// 5. `timeline`: entries are added (adding an entry twice keeps one);
/// 6. `journal`: entries are appended;
/// 7. `offsets`: the consumer's offsets are committed.
///
/// Every profile id touched by 1–3 gets a new change-feed sequence number and its
/// `updated_at_ms` (for merges and deletions, the batch's `at_ms`).
#[derive(Debug, Clone, Default)]
pub struct ChangeBatch {
    /// When the batch was made (processing time), for merges and deletions.
    pub at_ms: i64,
    pub erased: Vec<ProfileId>,
    pub deleted: Vec<ProfileId>,
    pub merged: Vec<(ProfileId, ProfileId)>,
    pub upserts: Vec<ProfileRecord>,
    pub identifiers: Vec<(IdentKey, Option<ProfileId>)>,
    pub timeline: Vec<(ProfileId, TimelineEntry)>,
    pub journal: Vec<NewJournalEntry>,
    pub offsets: Option<ConsumerOffsets>,
}

impl ChangeBatch {
    pub fn is_empty(&self) -> bool {
        self.erased.is_empty()
            && self.deleted.is_empty()
            && self.merged.is_empty()
            && self.upserts.is_empty()
            && self.identifiers.is_empty()
            && self.timeline.is_empty()
            && self.journal.is_empty()
            && self.offsets.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_ids_round_trip_through_text() {
        let id = ProfileId::from_bytes([0xab; 16]);
        let text = id.to_string();
        assert_eq!(text, format!("p_{}", "ab".repeat(16)));
        assert_eq!(text.parse::<ProfileId>(), Ok(id));
    }

    #[test]
    fn malformed_profile_ids_are_refused() {
        for text in [
            "",
            "p_",
            "q_abababababababababababababababab",
            "p_ABABABABABABABABABABABABABABABAB",
            "p_abababababababababababababababa",
            "p_ababababababababababababababababab",
            "p_zzabababababababababababababababab",
            "p_+bababababababababababababababab",
        ] {
            assert_eq!(
                text.parse::<ProfileId>(),
                Err(ProfileIdError::Format),
                "{text:?}"
            );
        }
        assert_eq!(
            ProfileId::from_slice(&[1, 2, 3]),
            Err(ProfileIdError::Length)
        );
    }

    #[test]
    fn ident_keys_never_print_their_bytes() {
        let key = IdentKey(Bytes::from_static(b"email\0alice@example.com"));
        assert_eq!(format!("{key:?}"), "IdentKey(23 bytes)");
    }
}
