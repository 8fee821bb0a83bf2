//! The identity engine: applies events to the identity graph and the golden profiles, with
//! guard-rails, provenance and unmerge, and writes each step to the profile store atomically.
//!
//! # Determinism
//!
//! * A profile's id is derived (HMAC) from its naming identifier: the identifier of the highest
//!   priority type, earliest first seen (event time, then messageId, then value). Identifiers
//!   and their first-seen times are content, so the same events give the same ids, whatever the
//!   order in which they were processed, and a rebuild after an unmerge gives back the ids the
//!   profiles would have had if the removed link had never existed. When the naming identifier
//!   changes (an anonymous visitor identifies), the profile is renamed: the old id redirects to
//!   the new one, like a merge.
//! * Golden traits are computed from observations with event times (see
//!   [`Survivorship`](crate::Survivorship)), so they do not depend on processing order either.
//! * Guard-rail decisions (a unique-type veto, a limit) are taken in processing order: when two
//!   conflicting links arrive, the first processed wins and the second is refused and recorded.
//!   The consumer processes the log in a deterministic order for a given log, so a crash and
//!   restart reprocesses the same slices the same way.
//!
//! # Caching
//!
//! The engine is the only writer of its store, so what it has read or written stays true:
//! identifiers and profiles are cached between batches (up to a limit, then the cache is
//! dropped), and a batch first fetches what its events need in two round trips.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use trib_store::{
    ChangeBatch, ConsumerOffsets, EventRef, IdentKey, NewJournalEntry, ProfileId, ProfileRecord,
    ProfileState, ProfileStore, StoreError, TimelineEntry,
};

use crate::config::{ANONYMOUS_ID, IdentityRules, USER_ID};
use crate::extract::{Observed, RawIdentifier, extract};
use crate::keys::Keyer;
use crate::profile::{IdentifierEntry, Observation, Profile};

/// Journal kinds written by the engine.
pub mod journal {
    /// Another profile was merged into this one.
    pub const MERGE: &str = "merge";
    /// A merge or an identifier was refused by a guard-rail.
    pub const MERGE_REFUSED: &str = "merge_refused";
    /// The profile's naming identifier changed and with it its id.
    pub const RENAMED: &str = "renamed";
    /// An identifier or an event's links were excluded (by an unmerge).
    pub const EXCLUSION: &str = "exclusion";
    /// The profile was rebuilt after an exclusion.
    pub const UNMERGE: &str = "unmerge";
    /// A probabilistic pair between the thresholds, waiting for a person's decision.
    pub const REVIEW_PENDING: &str = "review_pending";
    /// A decision on a review item.
    pub const REVIEW_DECIDED: &str = "review_decided";
    /// A person was erased; the entry holds the blind index keys of their identifiers.
    pub const ERASURE: &str = "erasure";
    /// An erased identifier came back with consent; its tombstone no longer stands.
    pub const ERASURE_LIFTED: &str = "erasure_lifted";
    /// Trait observations older than their class's TTL were dropped (counts per class only).
    pub const RETENTION: &str = "retention";
}

mod erase;
mod expire;
pub use erase::{ErasureReport, LogKeys};
pub use expire::TraitExpiryReport;

/// Why the engine stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("profile {0} is not in the store")]
    UnknownProfile(String),
    #[error("profile {id} was deleted")]
    DeletedProfile { id: String },
    #[error("cannot read event {partition}/{offset} from the log: {reason}")]
    Log {
        partition: u32,
        offset: u64,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// What an unmerge removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "remove", rename_all = "snake_case")]
pub enum Exclusion {
    /// An identifier: it no longer links anything, anywhere (like a blocked value).
    Identifier {
        #[serde(rename = "type")]
        kind: String,
        value: String,
    },
    /// The links an event made: it stays on the profile of its highest-priority identifier.
    Event { source: String, message_id: String },
}

/// The outcome of an unmerge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnmergeReport {
    pub profile: String,
    pub events_replayed: usize,
    /// The profiles the events ended up on, sorted.
    pub profiles: Vec<String>,
}

/// Counters of one engine, for tests, benchmarks and the demo.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub events: u64,
    pub events_without_identifiers: u64,
    pub unreadable_events: u64,
    pub profiles_created: u64,
    pub merges: u64,
    pub merges_refused: u64,
    pub identifiers_refused: u64,
    pub renames: u64,
    /// Events skipped because an identifier of theirs stands under an erasure tombstone.
    pub events_tombstoned: u64,
}

/// A guard-rail's verdict on a merge or an identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    UniqueConflict(String),
    TypeLimit(String),
    IdentifierCap,
    MergeCap,
}

impl Refusal {
    fn reason(&self) -> &'static str {
        match self {
            Self::UniqueConflict(_) => "unique_conflict",
            Self::TypeLimit(_) => "type_limit",
            Self::IdentifierCap => "identifier_cap",
            Self::MergeCap => "merge_cap",
        }
    }

    fn describe(&self, rules: &IdentityRules) -> String {
        match self {
            Self::UniqueConflict(kind) => {
                format!("both profiles hold a different {kind}, a unique identifier type")
            }
            Self::TypeLimit(kind) => {
                let max = rules
                    .type_index(kind)
                    .map_or(0, |i| rules.types[i].max_per_profile);
                format!("a profile holds at most {max} {kind} identifiers")
            }
            Self::IdentifierCap => format!(
                "a profile holds at most {} identifiers",
                rules.max_identifiers_per_profile
            ),
            Self::MergeCap => format!(
                "a profile takes part in at most {} merges",
                rules.max_merges_per_profile
            ),
        }
    }
}

/// Where an event is in the log and what it says.
#[derive(Debug, Clone)]
pub struct LogEvent {
    pub at: EventRef,
    pub payload: Bytes,
}

/// An identifier's slot in the engine's index: 128 bits of xxh3 over its type index and value,
/// so lookups hash once and never clone the value.
type Slot = u128;

fn slot(kind: usize, value: &str) -> Slot {
    xxhash_rust::xxh3::xxh3_128_with_seed(value.as_bytes(), kind as u64)
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// An identifier whose profile changed in the pending batch.
#[derive(Debug)]
struct PendingIdentifier {
    kind: usize,
    value: String,
    profile: Option<ProfileId>,
}

#[derive(Debug, Default)]
struct Pending {
    dirty: BTreeSet<ProfileId>,
    erased: Vec<ProfileId>,
    deleted: Vec<ProfileId>,
    merged: Vec<(ProfileId, ProfileId)>,
    identifiers: FastMap<Slot, PendingIdentifier>,
    timeline: Vec<(ProfileId, TimelineEntry)>,
    journal: Vec<NewJournalEntry>,
}

/// The identity engine over a profile store.
pub struct Engine<S: ProfileStore> {
    store: S,
    rules: Arc<IdentityRules>,
    keyer: Keyer,
    index: FastMap<Slot, ProfileId>,
    profiles: FastMap<ProfileId, Profile>,
    excluded_events: HashSet<(String, String)>,
    excluded_identifiers: FastSet<Slot>,
    /// Identifier keys of erased people (see `erase`).
    tombstones: HashSet<IdentKey>,
    pending: Pending,
    cache_limit: usize,
    stats: EngineStats,
    now_ms: fn() -> i64,
}

fn wall_clock_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl<S: ProfileStore> Engine<S> {
    /// Opens the engine over a store, loading the exclusions recorded by earlier unmerges.
    pub fn new(store: S, rules: Arc<IdentityRules>, keyer: Keyer) -> Result<Self, EngineError> {
        let mut engine = Self {
            store,
            rules,
            keyer,
            index: FastMap::default(),
            profiles: FastMap::default(),
            excluded_events: HashSet::new(),
            excluded_identifiers: FastSet::default(),
            tombstones: HashSet::new(),
            pending: Pending::default(),
            cache_limit: 2_000_000,
            stats: EngineStats::default(),
            now_ms: wall_clock_ms,
        };
        for entry in journal_of_kind(&engine.store, journal::EXCLUSION)? {
            let exclusion: Exclusion = serde_json::from_slice(&entry.doc).map_err(|e| {
                StoreError::Corrupt(format!("exclusion journal entry {}: {e}", entry.seq))
            })?;
            engine.remember(exclusion);
        }
        engine.tombstones = erase::load_tombstones(&engine.store)?;
        Ok(engine)
    }

    /// Caps the number of cached identifiers (the profile cache follows it).
    pub fn set_cache_limit(&mut self, limit: usize) {
        self.cache_limit = limit.max(1);
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn rules(&self) -> &IdentityRules {
        &self.rules
    }

    pub fn keyer(&self) -> &Keyer {
        &self.keyer
    }

    fn remember(&mut self, exclusion: Exclusion) {
        match exclusion {
            Exclusion::Identifier { kind, value } => {
                // A type no longer configured cannot link anything anyway.
                if let Some(index) = self.rules.type_index(&kind) {
                    self.excluded_identifiers.insert(slot(index, &value));
                }
            }
            Exclusion::Event { source, message_id } => {
                self.excluded_events.insert((source, message_id));
            }
        }
    }

    /// Applies a slice of the log and commits it, with the consumer's next offsets, in one
    /// store batch. On error nothing of the slice is stored and the caches are dropped, so the
    /// caller can retry from the committed offsets.
    pub fn process(
        &mut self,
        events: &[LogEvent],
        offsets: Option<ConsumerOffsets>,
    ) -> Result<(), EngineError> {
        self.apply(events)?;
        self.commit(offsets)
    }

    /// Applies a slice of the log in memory; [`Engine::commit`] writes everything applied
    /// since the last commit in one store batch. On error nothing is kept (see `process`).
    pub fn apply(&mut self, events: &[LogEvent]) -> Result<(), EngineError> {
        let result = self.apply_inner(events);
        if result.is_err() {
            self.reset();
        }
        result
    }

    /// Writes what was applied since the last commit, with the consumer's next offsets, in one
    /// store batch.
    pub fn commit(&mut self, offsets: Option<ConsumerOffsets>) -> Result<(), EngineError> {
        let result = self.flush(offsets);
        if result.is_err() {
            self.reset();
        }
        result
    }

    /// Whether anything applied is waiting for a commit.
    pub fn has_pending(&self) -> bool {
        !self.pending.dirty.is_empty()
            || !self.pending.deleted.is_empty()
            || !self.pending.merged.is_empty()
            || !self.pending.identifiers.is_empty()
            || !self.pending.timeline.is_empty()
            || !self.pending.journal.is_empty()
    }

    fn apply_inner(&mut self, events: &[LogEvent]) -> Result<(), EngineError> {
        let mut observed = Vec::with_capacity(events.len());
        for event in events {
            match extract(&event.payload, &self.rules) {
                Ok(o) => observed.push((event.at, o)),
                Err(error) => {
                    // The log only holds events that passed validation; this is a bug or a
                    // damaged record. Count it and go on rather than stall the graph.
                    self.stats.unreadable_events += 1;
                    metrics::counter!("tributary_identity_unreadable_events_total").increment(1);
                    tracing::warn!(
                        partition = event.at.partition,
                        offset = event.at.offset,
                        %error,
                        "identity: skipped an unreadable event"
                    );
                }
            }
        }
        self.prefetch(observed.iter().map(|(_, o)| o))?;
        for (at, o) in observed {
            self.apply_event(at, o);
        }
        Ok(())
    }

    fn prefetch<'a>(
        &mut self,
        observed: impl Iterator<Item = &'a Observed>,
    ) -> Result<(), EngineError> {
        let user_id = self.rules.type_index(USER_ID);
        let anonymous_id = self.rules.type_index(ANONYMOUS_ID);
        let mut wanted: FastMap<Slot, (usize, String)> = FastMap::default();
        // What this batch already changed is known; the store still has the old values.
        let mut want = |engine: &Self, kind: usize, value: &str| {
            let key = slot(kind, value);
            if !engine.index.contains_key(&key) && !engine.pending.identifiers.contains_key(&key) {
                wanted
                    .entry(key)
                    .or_insert_with(|| (kind, value.to_owned()));
            }
        };
        for o in observed {
            for id in &o.identifiers {
                want(self, id.kind, &id.value);
            }
            if let Some(previous) = &o.previous_id {
                for kind in [user_id, anonymous_id].into_iter().flatten() {
                    want(self, kind, previous);
                }
            }
        }
        self.fetch_identifiers(wanted.into_iter().collect())
    }

    fn fetch_identifiers(
        &mut self,
        wanted: Vec<(Slot, (usize, String))>,
    ) -> Result<(), EngineError> {
        if wanted.is_empty() {
            return Ok(());
        }
        let keys: Vec<_> = wanted
            .iter()
            .map(|(_, (kind, value))| self.keyer.ident_key(&self.rules.types[*kind].name, value))
            .collect();
        let found = self.store.lookup_many(&keys)?;
        let mut profiles_wanted = BTreeSet::new();
        let mut mapped = Vec::new();
        for ((key, identifier), profile) in wanted.into_iter().zip(found) {
            if let Some(profile) = profile {
                if !self.profiles.contains_key(&profile) {
                    profiles_wanted.insert(profile);
                }
                self.index.insert(key, profile);
                mapped.push((identifier, profile));
            }
        }
        let ids: Vec<ProfileId> = profiles_wanted.into_iter().collect();
        let states = self.store.get_many(&ids)?;
        let mut redirected = Vec::new();
        for (id, state) in ids.into_iter().zip(states) {
            if self.pending.deleted.contains(&id) {
                redirected.push((id, None));
                continue;
            }
            match state {
                Some(ProfileState::Active(record)) => {
                    let profile = decode(&record)?;
                    self.profiles.insert(id, profile);
                }
                // An identifier never points at a merged or deleted profile: merges re-point
                // identifiers in the same batch. Repair such an entry rather than trust it.
                Some(ProfileState::Merged { into, .. }) => redirected.push((id, Some(into))),
                Some(ProfileState::Deleted { .. }) | None => redirected.push((id, None)),
            }
        }
        for (stale, into) in redirected {
            let target = match into {
                Some(into) => self.resolve_active(into)?,
                None => None,
            };
            for ((kind, value), profile) in &mapped {
                if *profile == stale {
                    self.set_identifier(*kind, value, target);
                }
            }
        }
        Ok(())
    }

    /// Points an identifier at a profile (or at nothing), in the cache and the pending batch.
    fn set_identifier(&mut self, kind: usize, value: &str, profile: Option<ProfileId>) {
        let key = slot(kind, value);
        match profile {
            Some(profile) => {
                self.index.insert(key, profile);
            }
            None => {
                self.index.remove(&key);
            }
        }
        self.pending.identifiers.insert(
            key,
            PendingIdentifier {
                kind,
                value: value.to_owned(),
                profile,
            },
        );
    }

    /// Follows merges from `id` to an active profile, loading it into the cache.
    fn resolve_active(&mut self, mut id: ProfileId) -> Result<Option<ProfileId>, EngineError> {
        for _ in 0..=self.rules.max_merges_per_profile.saturating_add(64) {
            if self.profiles.contains_key(&id) {
                return Ok(Some(id));
            }
            // A merge or rename in the pending batch: the store does not know it yet.
            if let Some((_, into)) = self
                .pending
                .merged
                .iter()
                .rev()
                .find(|(from, _)| *from == id)
            {
                id = *into;
                continue;
            }
            if self.pending.deleted.contains(&id) {
                return Ok(None);
            }
            match self.store.get(&id)? {
                Some(ProfileState::Active(record)) => {
                    self.profiles.insert(id, decode(&record)?);
                    return Ok(Some(id));
                }
                Some(ProfileState::Merged { into, .. }) => id = into,
                Some(ProfileState::Deleted { .. }) | None => return Ok(None),
            }
        }
        Err(EngineError::Invalid(format!(
            "profile {id} redirects in a loop"
        )))
    }

    /// The active id `profile` resolves to (following merges), or why there is none.
    fn require_active(&mut self, profile: ProfileId) -> Result<ProfileId, EngineError> {
        match self.resolve_active(profile)? {
            Some(id) => Ok(id),
            None => Err(match self.store.get(&profile)? {
                None => EngineError::UnknownProfile(profile.to_string()),
                Some(_) => EngineError::DeletedProfile {
                    id: profile.to_string(),
                },
            }),
        }
    }

    fn type_name(&self, kind: usize) -> &str {
        &self.rules.types[kind].name
    }

    fn apply_event(&mut self, at: EventRef, observed: Observed) {
        self.stats.events += 1;
        let Observed {
            message_id,
            source,
            timestamp_ms,
            mut identifiers,
            previous_id,
            traits,
            blocked,
            grants_consent,
        } = observed;
        for kind in blocked {
            metrics::counter!("tributary_identity_blocked_identifiers_total", "type" => kind)
                .increment(1);
        }
        if let Some(previous) = previous_id {
            // An alias's previousId is a user id when one is known, else an anonymous id.
            let as_user = self
                .rules
                .type_index(USER_ID)
                .filter(|kind| self.index.contains_key(&slot(*kind, &previous)));
            if let Some(kind) = as_user.or_else(|| self.rules.type_index(ANONYMOUS_ID)) {
                identifiers.push(RawIdentifier {
                    kind,
                    value: previous,
                });
                identifiers.sort();
                identifiers.dedup();
            }
        }
        if !self.excluded_identifiers.is_empty() {
            identifiers.retain(|id| {
                !self
                    .excluded_identifiers
                    .contains(&slot(id.kind, &id.value))
            });
        }
        if self.screen_tombstoned(&identifiers, grants_consent) {
            return;
        }
        if !self.excluded_events.is_empty()
            && self
                .excluded_events
                .contains(&(source.clone(), message_id.clone()))
        {
            identifiers.truncate(1);
        }
        let Some(primary) = identifiers.first().cloned() else {
            self.stats.events_without_identifiers += 1;
            metrics::counter!("tributary_identity_events_without_identifiers_total").increment(1);
            return;
        };
        let event = EventInfo {
            source,
            message_id,
            timestamp_ms,
            at,
        };

        let owner = |engine: &Self, id: &RawIdentifier| {
            engine.index.get(&slot(id.kind, &id.value)).copied()
        };
        let mut owners: Vec<ProfileId> = Vec::new();
        for id in &identifiers {
            if let Some(profile) = owner(self, id)
                && !owners.contains(&profile)
            {
                owners.push(profile);
            }
        }
        // The event belongs to the profile of its highest-priority identifier. When that
        // identifier is new, it joins the profile of the next identifier if the guard-rails
        // allow, else it starts a profile of its own.
        let target = match owner(self, &primary) {
            Some(profile) => profile,
            None => match owners.first() {
                Some(first) if self.check_identifier(*first, &primary).is_none() => *first,
                _ => self.create(&primary, &event),
            },
        };
        for other in owners {
            if other != target {
                self.try_merge(target, other, &identifiers, &event);
            }
        }
        for id in &identifiers {
            match owner(self, id) {
                None => self.try_add_identifier(target, id, &event),
                Some(profile) if profile == target => self.saw_identifier(target, id, &event),
                Some(_) => {}
            }
        }

        let Some(profile) = self.profiles.get_mut(&target) else {
            return;
        };
        let mut changed = profile.saw_source(&event.source);
        if !traits.is_empty() {
            changed = true;
            let names: Vec<String> = traits.keys().cloned().collect();
            for (name, value) in traits {
                let rule = self.rules.rule_for(&name);
                profile.observe(
                    &name,
                    Observation {
                        value,
                        source: event.source.clone(),
                        at_ms: timestamp_ms,
                        message_id: event.message_id.clone(),
                    },
                    rule,
                );
            }
            profile.recompute(&self.rules, Some(&names));
        }
        self.pending.timeline.push((
            target,
            TimelineEntry {
                timestamp_ms,
                event: at,
            },
        ));
        if changed {
            self.pending.dirty.insert(target);
        }
        self.rename_if_needed(target);
    }

    fn create(&mut self, primary: &RawIdentifier, event: &EventInfo) -> ProfileId {
        let id = self
            .keyer
            .profile_id(self.type_name(primary.kind), &primary.value);
        self.profiles.insert(id, Profile::new(id.to_string()));
        self.pending.dirty.insert(id);
        self.stats.profiles_created += 1;
        metrics::counter!("tributary_identity_profiles_created_total").increment(1);
        self.add_identifier(id, primary, event);
        id
    }

    fn check_identifier(&self, profile: ProfileId, id: &RawIdentifier) -> Option<Refusal> {
        let profile = self.profiles.get(&profile)?;
        let id_type = &self.rules.types[id.kind];
        let count = profile.count_of_type(&id_type.name);
        if id_type.unique && count > 0 {
            return Some(Refusal::UniqueConflict(id_type.name.clone()));
        }
        if count >= id_type.max_per_profile as usize {
            return Some(Refusal::TypeLimit(id_type.name.clone()));
        }
        if profile.identifiers.len() >= self.rules.max_identifiers_per_profile as usize {
            return Some(Refusal::IdentifierCap);
        }
        None
    }

    fn check_merge(&self, target: &Profile, other: &Profile) -> Option<Refusal> {
        if target.merge_count + other.merge_count + 1 > self.rules.max_merges_per_profile {
            return Some(Refusal::MergeCap);
        }
        for id_type in &self.rules.types {
            let mine = target.count_of_type(&id_type.name);
            let theirs = other.count_of_type(&id_type.name);
            if id_type.unique && mine > 0 && theirs > 0 {
                // Two distinct profiles never share an identifier, so the values differ.
                return Some(Refusal::UniqueConflict(id_type.name.clone()));
            }
            if mine + theirs > id_type.max_per_profile as usize {
                return Some(Refusal::TypeLimit(id_type.name.clone()));
            }
        }
        if target.identifiers.len() + other.identifiers.len()
            > self.rules.max_identifiers_per_profile as usize
        {
            return Some(Refusal::IdentifierCap);
        }
        None
    }

    fn try_add_identifier(&mut self, target: ProfileId, id: &RawIdentifier, event: &EventInfo) {
        match self.check_identifier(target, id) {
            None => self.add_identifier(target, id, event),
            Some(refusal) => {
                self.stats.identifiers_refused += 1;
                self.refuse(
                    target,
                    &refusal,
                    json!({
                        "what": "identifier",
                        "identifier": {"type": self.type_name(id.kind), "value": id.value},
                        "event": event.to_json(),
                    }),
                );
            }
        }
    }

    fn add_identifier(&mut self, target: ProfileId, id: &RawIdentifier, event: &EventInfo) {
        let name = self.rules.types[id.kind].name.clone();
        let Some(profile) = self.profiles.get_mut(&target) else {
            return;
        };
        profile.identifiers.push(IdentifierEntry {
            kind: name,
            value: id.value.clone(),
            first_seen_ms: event.timestamp_ms,
            source: event.source.clone(),
            message_id: event.message_id.clone(),
        });
        profile.sort_identifiers(&self.rules);
        self.set_identifier(id.kind, &id.value, Some(target));
        self.pending.dirty.insert(target);
    }

    /// An identifier the profile already holds was seen again: keep its earliest sighting.
    fn saw_identifier(&mut self, target: ProfileId, id: &RawIdentifier, event: &EventInfo) {
        let name = &self.rules.types[id.kind].name;
        let Some(profile) = self.profiles.get_mut(&target) else {
            return;
        };
        // Only an entry first seen no earlier than this event can change: comparing the
        // inline time first spares most events (they come in time order) two string reads.
        let Some(entry) = profile.identifiers.iter_mut().find(|e| {
            e.first_seen_ms >= event.timestamp_ms && e.kind == *name && e.value == id.value
        }) else {
            return;
        };
        if (event.timestamp_ms, event.message_id.as_str())
            < (entry.first_seen_ms, entry.message_id.as_str())
        {
            entry.first_seen_ms = event.timestamp_ms;
            entry.source.clone_from(&event.source);
            entry.message_id.clone_from(&event.message_id);
            profile.sort_identifiers(&self.rules);
            self.pending.dirty.insert(target);
        }
    }

    fn try_merge(
        &mut self,
        target: ProfileId,
        other: ProfileId,
        linking: &[RawIdentifier],
        event: &EventInfo,
    ) {
        let (Some(mine), Some(theirs)) = (self.profiles.get(&target), self.profiles.get(&other))
        else {
            return;
        };
        let links: Vec<serde_json::Value> = linking
            .iter()
            .filter(|id| self.index.get(&slot(id.kind, &id.value)) == Some(&other))
            .map(|id| json!({"type": self.type_name(id.kind), "value": id.value}))
            .collect();
        if let Some(refusal) = self.check_merge(mine, theirs) {
            self.stats.merges_refused += 1;
            self.refuse(
                target,
                &refusal,
                json!({
                    "what": "merge",
                    "other_profile": other.to_string(),
                    "identifiers": links,
                    "event": event.to_json(),
                }),
            );
            return;
        }
        self.absorb_profile(
            target,
            other,
            json!({"linked_by": links, "event": event.to_json()}),
        );
    }

    /// Merges `other` into `target` (guard-rails already checked) and journals it with
    /// `provenance` (what caused it) plus the absorbed profile and identifiers.
    fn absorb_profile(
        &mut self,
        target: ProfileId,
        other: ProfileId,
        mut provenance: serde_json::Value,
    ) {
        let Some(absorbed) = self.profiles.remove(&other) else {
            return;
        };
        for entry in &absorbed.identifiers {
            if let Some(kind) = self.rules.type_index(&entry.kind) {
                self.set_identifier(kind, &entry.value, Some(target));
            }
        }
        // Pending timeline entries of `other` are re-pointed at flush, through `merged`.
        self.pending.merged.push((other, target));
        self.pending.dirty.remove(&other);
        self.pending.dirty.insert(target);
        let absorbed_identifiers: Vec<serde_json::Value> = absorbed
            .identifiers
            .iter()
            .map(|e| json!({"type": e.kind, "value": e.value}))
            .collect();
        let Some(profile) = self.profiles.get_mut(&target) else {
            return;
        };
        profile.absorb(absorbed);
        profile.sort_identifiers(&self.rules);
        profile.recompute(&self.rules, None);
        self.stats.merges += 1;
        metrics::counter!("tributary_identity_merges_total").increment(1);
        if let Some(object) = provenance.as_object_mut() {
            object.insert("absorbed_profile".into(), json!(other.to_string()));
            object.insert("absorbed_identifiers".into(), json!(absorbed_identifiers));
        }
        self.journal(target, journal::MERGE, provenance);
    }

    fn refuse(&mut self, profile: ProfileId, refusal: &Refusal, mut detail: serde_json::Value) {
        metrics::counter!("tributary_identity_merges_refused_total", "reason" => refusal.reason())
            .increment(1);
        if let Some(object) = detail.as_object_mut() {
            object.insert("reason".into(), json!(refusal.reason()));
            object.insert("explanation".into(), json!(refusal.describe(&self.rules)));
        }
        self.journal(profile, journal::MERGE_REFUSED, detail);
    }

    fn journal(&mut self, profile: ProfileId, kind: &str, doc: serde_json::Value) {
        self.pending.journal.push(NewJournalEntry {
            profile,
            kind: kind.to_owned(),
            at_ms: (self.now_ms)(),
            doc: Bytes::from(doc.to_string()),
        });
    }

    /// Gives the profile the id of its naming identifier, if that changed.
    fn rename_if_needed(&mut self, id: ProfileId) {
        let Some(profile) = self.profiles.get(&id) else {
            return;
        };
        let Some(anchor) = profile.identifiers.first() else {
            return;
        };
        let new_id = self.keyer.profile_id(&anchor.kind, &anchor.value);
        if new_id == id {
            return;
        }
        let Some(mut profile) = self.profiles.remove(&id) else {
            return;
        };
        profile.id = new_id.to_string();
        profile.merged_ids.push(id.to_string());
        // A rename back to an id the profile had before (its anchor came back with a merge).
        let own = profile.id.clone();
        profile.merged_ids.retain(|m| *m != own);
        for entry in &profile.identifiers {
            if let Some(kind) = self.rules.type_index(&entry.kind) {
                self.set_identifier(kind, &entry.value, Some(new_id));
            }
        }
        self.pending.merged.push((id, new_id));
        self.pending.dirty.remove(&id);
        self.pending.dirty.insert(new_id);
        self.profiles.insert(new_id, profile);
        self.stats.renames += 1;
        self.journal(
            new_id,
            journal::RENAMED,
            json!({"from": id.to_string(), "to": new_id.to_string()}),
        );
    }

    fn flush(&mut self, offsets: Option<ConsumerOffsets>) -> Result<(), EngineError> {
        let batch = self.build_batch(offsets)?;
        if !batch.is_empty() {
            self.store.apply(&batch)?;
        }
        self.evict_if_over_limit();
        Ok(())
    }

    /// Takes what was applied since the last commit as a store batch, without writing it, so
    /// the caller can write it on another thread while the engine goes on. The engine's caches
    /// already reflect it: if the write fails, the caller must [`Engine::reset`] the engine and
    /// rewind to the offsets the store holds.
    pub fn take_batch(
        &mut self,
        offsets: Option<ConsumerOffsets>,
    ) -> Result<ChangeBatch, EngineError> {
        let result = self.build_batch(offsets);
        if result.is_err() {
            self.reset();
        }
        result
    }

    /// Drops caches and anything pending, after a failed write, so the next step reads the
    /// store's state again.
    pub fn reset(&mut self) {
        self.index.clear();
        self.profiles.clear();
        self.pending = Pending::default();
    }

    fn build_batch(
        &mut self,
        offsets: Option<ConsumerOffsets>,
    ) -> Result<ChangeBatch, EngineError> {
        let pending = std::mem::take(&mut self.pending);
        let at_ms = (self.now_ms)();
        let mut batch = ChangeBatch {
            at_ms,
            erased: pending.erased,
            deleted: pending.deleted,
            offsets,
            journal: pending.journal,
            ..ChangeBatch::default()
        };
        // Timeline entries were recorded under the id their profile had then; merges and
        // renames since are followed here to the profile's id at the end of the batch. A
        // `from` that is active again at the end (a rename back) is not a redirect.
        let redirects: HashMap<ProfileId, ProfileId> = pending.merged.iter().copied().collect();
        let resolve = |id| resolve_pending(&redirects, &self.profiles, id);
        for (from, into) in pending.merged {
            if !self.profiles.contains_key(&from) {
                batch.merged.push((from, resolve(into)));
            }
        }
        batch.timeline = pending
            .timeline
            .into_iter()
            .map(|(id, entry)| (resolve(id), entry))
            .collect();
        for id in pending.dirty {
            if let Some(profile) = self.profiles.get(&id) {
                let doc = encode(profile)
                    .map_err(|e| EngineError::Invalid(format!("cannot encode a profile: {e}")))?;
                batch.upserts.push(ProfileRecord {
                    id,
                    updated_at_ms: at_ms,
                    doc: Bytes::from(doc),
                });
            }
        }
        batch.identifiers = pending
            .identifiers
            .into_values()
            .map(|pending| {
                (
                    self.keyer
                        .ident_key(&self.rules.types[pending.kind].name, &pending.value),
                    pending.profile,
                )
            })
            .collect();
        Ok(batch)
    }

    /// Drops the caches when they outgrew the limit. Only call it when every batch taken
    /// has been written (the caches may hold what the store does not have yet).
    pub fn evict_if_over_limit(&mut self) {
        if self.index.len() > self.cache_limit {
            self.index.clear();
            self.profiles.clear();
        }
    }

    /// Removes an identifier or an event's links from a profile and rebuilds the profiles its
    /// events make without it. `read` fetches an event's payload from the log.
    pub fn unmerge(
        &mut self,
        profile: ProfileId,
        exclusion: Exclusion,
        mut read: impl FnMut(EventRef) -> Result<Bytes, EngineError>,
    ) -> Result<UnmergeReport, EngineError> {
        let result = self.unmerge_inner(profile, exclusion, &mut read);
        if result.is_err() {
            self.reset();
        }
        result
    }

    fn unmerge_inner(
        &mut self,
        profile: ProfileId,
        exclusion: Exclusion,
        read: &mut dyn FnMut(EventRef) -> Result<Bytes, EngineError>,
    ) -> Result<UnmergeReport, EngineError> {
        let id = self.require_active(profile)?;
        let Some(current) = self.profiles.get(&id) else {
            return Err(EngineError::UnknownProfile(id.to_string()));
        };
        if let Exclusion::Identifier { kind, value } = &exclusion
            && !current.has_identifier(kind, value)
        {
            return Err(EngineError::Invalid(format!(
                "profile {id} does not hold that {kind} identifier"
            )));
        }
        let mut entries = Vec::new();
        let mut before = None;
        loop {
            let page = self.store.timeline(&id, before.as_ref(), 10_000)?;
            let Some(last) = page.last().copied() else {
                break;
            };
            before = Some(last);
            entries.extend(page);
        }
        if let Exclusion::Event { source, message_id } = &exclusion {
            let mut found = false;
            for entry in &entries {
                let payload = read(entry.event)?;
                if let Ok(o) = extract(&payload, &self.rules)
                    && o.source == *source
                    && o.message_id == *message_id
                {
                    found = true;
                    break;
                }
            }
            if !found {
                return Err(EngineError::Invalid(format!(
                    "event {message_id} of source {source} is not on profile {id}"
                )));
            }
        }

        // Record the exclusion, forget the profile, and replay its events without it.
        self.journal(
            id,
            journal::EXCLUSION,
            serde_json::to_value(&exclusion).map_err(|e| EngineError::Invalid(e.to_string()))?,
        );
        self.remember(exclusion.clone());
        let Some(old) = self.profiles.remove(&id) else {
            return Err(EngineError::UnknownProfile(id.to_string()));
        };
        for entry in &old.identifiers {
            if let Some(kind) = self.rules.type_index(&entry.kind) {
                self.set_identifier(kind, &entry.value, None);
            }
        }
        self.pending.deleted.push(id);
        self.pending.dirty.remove(&id);

        let mut events = Vec::with_capacity(entries.len());
        for entry in &entries {
            let payload = read(entry.event)?;
            match extract(&payload, &self.rules) {
                Ok(o) => events.push((entry.sort_key(), entry.event, o)),
                Err(_) => self.stats.unreadable_events += 1,
            }
        }
        events.sort_by_key(|e| e.0);
        self.prefetch(events.iter().map(|(_, _, o)| o))?;
        let replayed = events.len();
        for (_, at, o) in events {
            self.apply_event(at, o);
        }
        let mut profiles: BTreeSet<String> = BTreeSet::new();
        let redirects: HashMap<ProfileId, ProfileId> =
            self.pending.merged.iter().copied().collect();
        for (profile, _) in &self.pending.timeline {
            profiles.insert(resolve_pending(&redirects, &self.profiles, *profile).to_string());
        }
        let report = UnmergeReport {
            profile: id.to_string(),
            events_replayed: replayed,
            profiles: profiles.into_iter().collect(),
        };
        self.journal(
            id,
            journal::UNMERGE,
            json!({"exclusion": exclusion, "events_replayed": replayed, "profiles": report.profiles}),
        );
        self.flush(None)?;
        Ok(report)
    }
}

/// What a probabilistic matching run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MatchReport {
    /// Active profiles read.
    pub profiles: usize,
    /// Profiles with at least one matching field, i.e. the records matched.
    pub records: usize,
    /// Merges made because a pair scored at or above the upper threshold.
    pub merges: u64,
    /// Merges the guard-rails refused (recorded as `merge_refused`).
    pub merges_refused: u64,
    /// New pairs put in the review queue.
    pub review_pairs: u64,
}

/// A pair of profiles waiting for a person's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewItem {
    /// The journal sequence number of the entry: the item's id.
    #[serde(default)]
    pub seq: u64,
    pub left: String,
    pub right: String,
    pub weight: f64,
    /// Agreement level per field (`exact`, `jw>=0.92`, ..., `else`, or `missing`).
    pub levels: BTreeMap<String, String>,
}

impl<S: ProfileStore> Engine<S> {
    /// Runs probabilistic matching (`[identity.matching]`) over the active profiles' traits:
    /// pairs at or above the upper threshold are merged (journaled with the weight and the
    /// field agreements, subject to the guard-rails), pairs between the thresholds go to the
    /// review queue.
    pub fn match_profiles(&mut self) -> Result<MatchReport, EngineError> {
        let result = self.match_inner();
        if result.is_err() {
            self.reset();
        }
        result
    }

    fn match_inner(&mut self) -> Result<MatchReport, EngineError> {
        let Some(config) = self.rules.matching.clone() else {
            return Err(EngineError::Invalid(
                "probabilistic matching is not configured: add [identity.matching]".into(),
            ));
        };
        let mut report = MatchReport::default();
        let mut records = Vec::new();
        let mut after = 0;
        loop {
            let changes = self.store.changes(None, after, 10_000)?;
            let Some(last) = changes.last() else { break };
            after = last.seq;
            let ids: Vec<ProfileId> = changes
                .iter()
                .filter(|c| c.kind == trib_store::ChangeKind::Upserted)
                .map(|c| c.id)
                .collect();
            for (id, state) in ids.iter().zip(self.store.get_many(&ids)?) {
                let Some(ProfileState::Active(record)) = state else {
                    continue;
                };
                report.profiles += 1;
                let profile = decode(&record)?;
                let fields: Vec<Option<String>> = config
                    .fields
                    .iter()
                    .map(|field| {
                        profile
                            .traits
                            .get(&field.name)
                            .and_then(|golden| match &golden.value {
                                serde_json::Value::String(text) if !text.trim().is_empty() => {
                                    Some(text.clone())
                                }
                                serde_json::Value::Number(number) => Some(number.to_string()),
                                _ => None,
                            })
                    })
                    .collect();
                if fields.iter().any(Option::is_some) {
                    records.push(trib_match::MatchRecord {
                        id: id.to_string(),
                        fields,
                    });
                }
            }
        }
        report.records = records.len();
        if records.len() < 2 {
            return Ok(report);
        }
        let mut matcher = trib_match::Matcher::new(config.clone())
            .map_err(|e| EngineError::Invalid(format!("matching: {e}")))?;
        matcher
            .fit(&records)
            .map_err(|e| EngineError::Invalid(format!("matching: {e}")))?;
        let resolution = matcher
            .resolve(&records)
            .map_err(|e| EngineError::Invalid(format!("matching: {e}")))?;
        let labels: Vec<(String, Vec<String>)> = config
            .fields
            .iter()
            .map(|f| (f.name.clone(), f.level_labels()))
            .collect();
        let describe = |levels: trib_match::Levels| -> BTreeMap<String, String> {
            labels
                .iter()
                .enumerate()
                .map(|(index, (name, names))| {
                    let level = levels
                        .get(index)
                        .and_then(|l| names.get(usize::from(l)).cloned())
                        .unwrap_or_else(|| "missing".into());
                    (name.clone(), level)
                })
                .collect()
        };

        // Merges: every member of a cluster into its first record's profile.
        let mut clusters: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (index, cluster) in resolution.cluster_ids.iter().enumerate() {
            clusters.entry(cluster.as_str()).or_default().push(index);
        }
        let ids: Vec<ProfileId> = records
            .iter()
            .map(|r| {
                r.id.parse()
                    .map_err(|_| EngineError::Invalid(format!("bad id {}", r.id)))
            })
            .collect::<Result<_, _>>()?;
        self.load_profiles(&ids)?;
        for members in clusters.values().filter(|m| m.len() > 1) {
            let first = members[0];
            for &other in &members[1..] {
                let pair = matcher
                    .compare(&records[first], &records[other])
                    .map_err(|e| EngineError::Invalid(format!("matching: {e}")))?;
                let evidence = json!({
                    "probabilistic": {
                        "weight": pair.weight,
                        "upper_threshold": config.upper_threshold,
                        "fields": describe(pair.levels),
                    }
                });
                match self.link(ids[first], ids[other], evidence)? {
                    Linked::Merged => report.merges += 1,
                    Linked::Refused => report.merges_refused += 1,
                    Linked::AlreadyOne => {}
                }
            }
        }

        // Review: pairs between the thresholds not already queued or decided.
        let known: HashSet<(String, String)> = self
            .review_entries()?
            .into_iter()
            .map(|(item, _)| (item.left, item.right))
            .collect();
        for pair in &resolution.review {
            let (left, right) = if pair.left_id <= pair.right_id {
                (pair.left_id.clone(), pair.right_id.clone())
            } else {
                (pair.right_id.clone(), pair.left_id.clone())
            };
            if known.contains(&(left.clone(), right.clone())) {
                continue;
            }
            let Ok(left_id) = left.parse::<ProfileId>() else {
                continue;
            };
            let item = ReviewItem {
                seq: 0,
                left,
                right,
                weight: pair.weight,
                levels: describe(pair.levels),
            };
            self.journal(
                left_id,
                journal::REVIEW_PENDING,
                serde_json::to_value(&item).unwrap_or_default(),
            );
            report.review_pairs += 1;
        }
        metrics::counter!("tributary_identity_review_pairs_total").increment(report.review_pairs);
        self.flush(None)?;
        Ok(report)
    }

    fn load_profiles(&mut self, ids: &[ProfileId]) -> Result<(), EngineError> {
        for id in ids {
            self.resolve_active(*id)?;
        }
        Ok(())
    }

    /// Merges two profiles on outside evidence (a probabilistic match, a review decision),
    /// under the same guard-rails as merges caused by events.
    fn link(
        &mut self,
        a: ProfileId,
        b: ProfileId,
        evidence: serde_json::Value,
    ) -> Result<Linked, EngineError> {
        let (Some(a), Some(b)) = (self.resolve_active(a)?, self.resolve_active(b)?) else {
            return Ok(Linked::AlreadyOne);
        };
        if a == b {
            return Ok(Linked::AlreadyOne);
        }
        let (Some(left), Some(right)) = (self.profiles.get(&a), self.profiles.get(&b)) else {
            return Ok(Linked::AlreadyOne);
        };
        if let Some(refusal) = self.check_merge(left, right) {
            self.stats.merges_refused += 1;
            let mut detail = evidence;
            if let Some(object) = detail.as_object_mut() {
                object.insert("what".into(), json!("merge"));
                object.insert("other_profile".into(), json!(b.to_string()));
            }
            self.refuse(a, &refusal, detail);
            return Ok(Linked::Refused);
        }
        self.absorb_profile(a, b, evidence);
        self.rename_if_needed(a);
        Ok(Linked::Merged)
    }

    /// Queued review items and decided ones: `(item, decided)`.
    fn review_entries(&self) -> Result<Vec<(ReviewItem, bool)>, EngineError> {
        review_entries(&self.store)
    }

    /// The review queue: pairs waiting for a decision, strongest first.
    pub fn review_queue(&self) -> Result<Vec<ReviewItem>, EngineError> {
        review_queue(&self.store)
    }

    /// Decides a review item: merge the two profiles (guard-rails still apply) or keep them
    /// apart. Returns whether they were merged.
    pub fn decide_review(&mut self, seq: u64, merge: bool) -> Result<bool, EngineError> {
        let result = self.decide_inner(seq, merge);
        if result.is_err() {
            self.reset();
        }
        result
    }

    fn decide_inner(&mut self, seq: u64, merge: bool) -> Result<bool, EngineError> {
        let Some((item, decided)) = self
            .review_entries()?
            .into_iter()
            .find(|(item, _)| item.seq == seq)
        else {
            return Err(EngineError::Invalid(format!("no review item {seq}")));
        };
        if decided {
            return Err(EngineError::Invalid(format!(
                "review item {seq} was already decided"
            )));
        }
        let parse = |text: &str| {
            text.parse::<ProfileId>()
                .map_err(|_| EngineError::Invalid(format!("bad profile id {text}")))
        };
        let (left, right) = (parse(&item.left)?, parse(&item.right)?);
        let merged = if merge {
            let evidence =
                json!({"review": {"item": seq, "weight": item.weight, "fields": item.levels}});
            self.link(left, right, evidence)? == Linked::Merged
        } else {
            false
        };
        self.journal(
            left,
            journal::REVIEW_DECIDED,
            json!({"item": seq, "decision": if merge { "merge" } else { "distinct" }, "merged": merged}),
        );
        self.flush(None)?;
        Ok(merged)
    }
}

/// Every journal entry of one kind, oldest first, read page by page.
fn journal_of_kind(
    store: &dyn ProfileStore,
    kind: &str,
) -> Result<Vec<trib_store::JournalEntry>, StoreError> {
    let mut entries = Vec::new();
    let mut after = 0;
    loop {
        let page = store.journal_by_kind(kind, after, 10_000)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        entries.extend(page);
    }
    Ok(entries)
}

/// Follows the merges and renames of the pending batch from `id` to the profile's id at the end
/// of it (a `from` that is active again, after a rename back, is not a redirect).
fn resolve_pending(
    redirects: &HashMap<ProfileId, ProfileId>,
    active: &FastMap<ProfileId, Profile>,
    mut id: ProfileId,
) -> ProfileId {
    for _ in 0..=redirects.len() {
        if active.contains_key(&id) {
            break;
        }
        match redirects.get(&id) {
            Some(next) => id = *next,
            None => break,
        }
    }
    id
}

/// Queued review items and whether each was decided.
fn review_entries(store: &dyn ProfileStore) -> Result<Vec<(ReviewItem, bool)>, EngineError> {
    let mut items: Vec<ReviewItem> = Vec::new();
    for entry in journal_of_kind(store, journal::REVIEW_PENDING)? {
        if let Ok(mut item) = serde_json::from_slice::<ReviewItem>(&entry.doc) {
            item.seq = entry.seq;
            items.push(item);
        }
    }
    let mut decided = HashSet::new();
    for entry in journal_of_kind(store, journal::REVIEW_DECIDED)? {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&entry.doc)
            && let Some(seq) = value["item"].as_u64()
        {
            decided.insert(seq);
        }
    }
    Ok(items
        .into_iter()
        .map(|item| {
            let done = decided.contains(&item.seq);
            (item, done)
        })
        .collect())
}

/// The review queue of a store: pairs waiting for a decision, strongest first.
pub fn review_queue(store: &dyn ProfileStore) -> Result<Vec<ReviewItem>, EngineError> {
    let mut open: Vec<ReviewItem> = review_entries(store)?
        .into_iter()
        .filter(|(_, decided)| !decided)
        .map(|(item, _)| item)
        .collect();
    open.sort_by(|a, b| b.weight.total_cmp(&a.weight).then(a.seq.cmp(&b.seq)));
    Ok(open)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Linked {
    Merged,
    Refused,
    AlreadyOne,
}

/// Where an event came from, for provenance.
struct EventInfo {
    source: String,
    message_id: String,
    timestamp_ms: i64,
    at: EventRef,
}

impl EventInfo {
    fn to_json(&self) -> serde_json::Value {
        json!({
            "source": self.source,
            "message_id": self.message_id,
            "timestamp_ms": self.timestamp_ms,
            "partition": self.at.partition,
            "offset": self.at.offset,
        })
    }
}

/// Encodes a profile document: MessagePack with field names (compact, fast, and tolerant of
/// added fields), so a later version reads what an earlier one wrote.
pub fn encode(profile: &Profile) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    // Sized up front from the profile's shape: growing from empty re-allocated and copied the
    // buffer several times per profile (a fifth of the engine's time went to `malloc` and
    // `memcpy`).
    let estimate = 256
        + 128 * profile.identifiers.len()
        + 96 * profile.traits.len()
        + 160
            * profile
                .observations
                .values()
                .map(BTreeMap::len)
                .sum::<usize>()
        + 32 * (profile.sources.len() + profile.merged_ids.len());
    let mut buffer = Vec::with_capacity(estimate);
    rmp_serde::encode::write_named(&mut buffer, profile)?;
    Ok(buffer)
}

/// Decodes a stored profile document.
pub fn decode(record: &ProfileRecord) -> Result<Profile, StoreError> {
    rmp_serde::from_slice(&record.doc)
        .map_err(|e| StoreError::Corrupt(format!("profile {}: {e}", record.id)))
}
