//! Erasure (the right to be forgotten) inside the identity graph.
//!
//! [`Engine::erase`] removes a person's golden profile, every id it ever had, its identifier
//! index entries, its timeline and its journal in one store batch, and leaves a tombstone: an
//! `erasure` journal entry holding the blind index keys (HMAC, never clear values) of the
//! person's identifiers. While a tombstone stands, an event carrying one of those identifiers
//! cannot attach it to any profile, so replays and re-imports cannot silently re-create the
//! person; the identifier is dropped and counted instead. An event that grants consent
//! (Segment's `context.consent.categoryPreferences` with a purpose set to `true`) lifts the
//! tombstone of its identifiers: the person came back and agreed.
//!
//! What this does not do, because it is not the graph's to do: destroy the data keys of the
//! person's events in the log (the caller shreds them from [`ErasureReport::log_keys`]) and
//! remove the person from destinations.

use std::collections::BTreeSet;
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use trib_store::{EventRef, IdentKey, ProfileId, ProfileStore, StoreError};

use super::{Engine, EngineError, journal, journal_of_kind};

/// What an erasure removed from the identity graph.
#[derive(Debug, Clone, Serialize)]
pub struct ErasureReport {
    /// The profile erased (its id when the erasure ran).
    pub profile: String,
    /// Every id the person's profile had (the current one, merged and renamed ones).
    pub profile_ids: Vec<String>,
    /// How many identifiers the profile held; they are tombstoned.
    pub identifiers: usize,
    /// How many events were on the profile's timeline.
    pub events: usize,
    /// The blind index keys of the tombstoned identifiers.
    #[serde(skip)]
    pub ident_keys: Vec<IdentKey>,
    /// The log partition keys (`userId`, else `anonymousId`) of the person's events, whose data
    /// keys the caller destroys. Clear values: never print or store them.
    #[serde(skip)]
    pub log_keys: LogKeys,
}

/// Clear log partition keys of an erased person; `Debug` prints only how many there are.
#[derive(Clone, Default)]
pub struct LogKeys(pub BTreeSet<String>);

impl fmt::Debug for LogKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogKeys({} keys)", self.0.len())
    }
}

/// The document of an `erasure` journal entry: blind index keys only.
#[derive(Debug, Serialize, Deserialize)]
struct Tombstone {
    ident_keys: Vec<String>,
    profile_ids: Vec<String>,
    events: usize,
}

/// The document of an `erasure_lifted` journal entry.
#[derive(Debug, Serialize, Deserialize)]
struct Lifted {
    ident_key: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The identifier keys under a standing tombstone: every erasure's keys, minus those lifted
/// after it, in journal order.
pub(super) fn load_tombstones(
    store: &dyn ProfileStore,
) -> Result<std::collections::HashSet<IdentKey>, StoreError> {
    let mut entries = journal_of_kind(store, journal::ERASURE)?;
    entries.extend(journal_of_kind(store, journal::ERASURE_LIFTED)?);
    entries.sort_by_key(|e| e.seq);
    let mut keys = std::collections::HashSet::new();
    for entry in entries {
        let corrupt = |e: String| {
            StoreError::Corrupt(format!("{} journal entry {}: {e}", entry.kind, entry.seq))
        };
        let decode = |text: &str| {
            unhex(text)
                .map(|bytes| IdentKey(Bytes::from(bytes)))
                .ok_or_else(|| corrupt("an identifier key is not hexadecimal".into()))
        };
        if entry.kind == journal::ERASURE {
            let doc: Tombstone =
                serde_json::from_slice(&entry.doc).map_err(|e| corrupt(e.to_string()))?;
            for key in &doc.ident_keys {
                keys.insert(decode(key)?);
            }
        } else {
            let doc: Lifted =
                serde_json::from_slice(&entry.doc).map_err(|e| corrupt(e.to_string()))?;
            keys.remove(&decode(&doc.ident_key)?);
        }
    }
    Ok(keys)
}

/// The partition key of a stored event: `userId`, else `anonymousId` (as at ingestion).
fn log_key(payload: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Keys {
        user_id: Option<String>,
        anonymous_id: Option<String>,
    }
    let keys: Keys = serde_json::from_slice(payload).ok()?;
    keys.user_id
        .filter(|id| !id.is_empty())
        .or(keys.anonymous_id.filter(|id| !id.is_empty()))
}

impl<S: ProfileStore> Engine<S> {
    /// Erases a profile: see the module documentation. `read` fetches an event's payload from
    /// the log (an erased record's empty payload is skipped).
    pub fn erase(
        &mut self,
        profile: ProfileId,
        mut read: impl FnMut(EventRef) -> Result<Bytes, EngineError>,
    ) -> Result<ErasureReport, EngineError> {
        let result = self.erase_inner(profile, &mut read);
        if result.is_err() {
            self.reset();
        }
        result
    }

    fn erase_inner(
        &mut self,
        profile: ProfileId,
        read: &mut dyn FnMut(EventRef) -> Result<Bytes, EngineError>,
    ) -> Result<ErasureReport, EngineError> {
        let id = self.require_active(profile)?;
        let Some(current) = self.profiles.remove(&id) else {
            return Err(EngineError::UnknownProfile(id.to_string()));
        };

        let mut log_keys = BTreeSet::new();
        let mut events = 0;
        let mut before = None;
        loop {
            let page = self.store.timeline(&id, before.as_ref(), 10_000)?;
            let Some(last) = page.last().copied() else {
                break;
            };
            before = Some(last);
            for entry in &page {
                events += 1;
                if let Some(key) = log_key(&read(entry.event)?) {
                    log_keys.insert(key);
                }
            }
        }

        let mut ident_keys = Vec::with_capacity(current.identifiers.len());
        for entry in &current.identifiers {
            ident_keys.push(self.keyer.ident_key(&entry.kind, &entry.value));
            if let Some(kind) = self.rules.type_index(&entry.kind) {
                self.set_identifier(kind, &entry.value, None);
            }
        }
        let mut profile_ids = vec![id];
        for merged in &current.merged_ids {
            if let Ok(merged) = merged.parse::<ProfileId>()
                && !profile_ids.contains(&merged)
            {
                profile_ids.push(merged);
            }
        }
        self.pending.dirty.remove(&id);
        self.pending.erased.extend(profile_ids.iter().copied());
        self.pending.deleted.extend(profile_ids.iter().copied());
        let tombstone = Tombstone {
            ident_keys: ident_keys.iter().map(|k| hex(&k.0)).collect(),
            profile_ids: profile_ids.iter().map(ToString::to_string).collect(),
            events,
        };
        self.journal(
            id,
            journal::ERASURE,
            serde_json::to_value(&tombstone).map_err(|e| EngineError::Invalid(e.to_string()))?,
        );
        self.tombstones.extend(ident_keys.iter().cloned());
        self.flush(None)?;
        metrics::counter!("tributary_identity_erasures_total").increment(1);
        Ok(ErasureReport {
            profile: id.to_string(),
            profile_ids: tombstone.profile_ids,
            identifiers: ident_keys.len(),
            events,
            ident_keys,
            log_keys: LogKeys(log_keys),
        })
    }

    /// Whether an event must be skipped because one of its identifiers stands under a
    /// tombstone: an event about an erased person is not processed at all (its traits are the
    /// person's too), unless it grants consent, which lifts the tombstones of its identifiers.
    pub(super) fn screen_tombstoned(
        &mut self,
        identifiers: &[crate::extract::RawIdentifier],
        grants_consent: bool,
    ) -> bool {
        if self.tombstones.is_empty() {
            return false;
        }
        let hits: Vec<IdentKey> = identifiers
            .iter()
            .map(|id| {
                self.keyer
                    .ident_key(&self.rules.types[id.kind].name, &id.value)
            })
            .filter(|key| self.tombstones.contains(key))
            .collect();
        if hits.is_empty() {
            return false;
        }
        if !grants_consent {
            self.stats.events_tombstoned += 1;
            metrics::counter!("tributary_identity_events_tombstoned_total").increment(1);
            return true;
        }
        for key in hits {
            self.tombstones.remove(&key);
            let key_hex = hex(&key.0);
            // Journaled under an id derived from the key itself, not under any profile.
            let under = self.keyer.profile_id(journal::ERASURE_LIFTED, &key_hex);
            self.journal(
                under,
                journal::ERASURE_LIFTED,
                json!({ "ident_key": key_hex }),
            );
            metrics::counter!("tributary_identity_tombstones_lifted_total").increment(1);
        }
        false
    }
}
