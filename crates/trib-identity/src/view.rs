//! Reading golden profiles for people and programs: resolving ids through merges, the JSON
//! shape shared by the HTTP API and the CLI, and a profile's history.

use serde_json::{Value, json};
use trib_store::{JournalEntry, ProfileId, ProfileState, ProfileStore, StoreError};

use crate::engine::decode;
use crate::extract::canonical_value;
use crate::keys::Keyer;
use crate::profile::Profile;

/// A profile found by id or identifier.
#[derive(Debug, Clone)]
pub enum Found {
    /// The active profile, and the id asked for when it was merged into this one.
    Active {
        profile: Box<Profile>,
        updated_at_ms: i64,
        redirected_from: Option<ProfileId>,
    },
    /// The id existed but its profile was deleted (rebuilt under other ids, or erased).
    Deleted {
        at_ms: i64,
    },
    NotFound,
}

/// Follows merges from `id` to the active profile.
pub fn find(store: &dyn ProfileStore, id: ProfileId) -> Result<Found, StoreError> {
    let mut current = id;
    for _ in 0..256 {
        match store.get(&current)? {
            Some(ProfileState::Active(record)) => {
                return Ok(Found::Active {
                    profile: Box::new(decode(&record)?),
                    updated_at_ms: record.updated_at_ms,
                    redirected_from: (current != id).then_some(id),
                });
            }
            Some(ProfileState::Merged { into, .. }) => current = into,
            Some(ProfileState::Deleted { at_ms }) => return Ok(Found::Deleted { at_ms }),
            None => return Ok(Found::NotFound),
        }
    }
    Err(StoreError::Corrupt(format!(
        "profile {id} redirects in a loop"
    )))
}

/// Finds the profile holding an identifier (`type`, `value`; emails in any case).
pub fn find_by_identifier(
    store: &dyn ProfileStore,
    keyer: &Keyer,
    kind: &str,
    value: &str,
) -> Result<Found, StoreError> {
    let value = canonical_value(kind, value);
    match store.lookup(&keyer.ident_key(kind, &value))? {
        Some(id) => find(store, id),
        None => Ok(Found::NotFound),
    }
}

/// RFC 3339 text of a time in ms since the Unix epoch.
pub fn time_text(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// The JSON view of a golden profile, with its timeline's size and span.
pub fn profile_json(
    profile: &Profile,
    updated_at_ms: i64,
    timeline: &trib_store::TimelineSummary,
) -> Value {
    let traits: serde_json::Map<String, Value> = profile
        .traits
        .iter()
        .map(|(name, golden)| (name.clone(), golden.value.clone()))
        .collect();
    let provenance: serde_json::Map<String, Value> = profile
        .traits
        .iter()
        .map(|(name, golden)| {
            (
                name.clone(),
                json!({"rule": golden.rule, "sources": golden.sources, "at": time_text(golden.at_ms)}),
            )
        })
        .collect();
    let identifiers: Vec<Value> = profile
        .identifiers
        .iter()
        .map(|i| {
            json!({"type": i.kind, "value": i.value, "first_seen": time_text(i.first_seen_ms), "source": i.source})
        })
        .collect();
    json!({
        "id": profile.id,
        "traits": traits,
        "trait_provenance": provenance,
        "identifiers": identifiers,
        "first_seen": timeline.first_ms.map(time_text),
        "last_seen": timeline.last_ms.map(time_text),
        "event_count": timeline.events,
        "sources": profile.sources,
        "merged_ids": profile.merged_ids,
        "updated_at": time_text(updated_at_ms),
    })
}

/// A profile's history: its journal and the journals of every id it absorbed, oldest first.
pub fn explain(store: &dyn ProfileStore, profile: &Profile) -> Result<Vec<Value>, StoreError> {
    let mut entries: Vec<JournalEntry> = Vec::new();
    let ids = std::iter::once(&profile.id).chain(profile.merged_ids.iter());
    for id in ids {
        if let Ok(id) = id.parse::<ProfileId>() {
            entries.extend(store.journal(&id, 10_000)?);
        }
    }
    entries.sort_by_key(|e| e.seq);
    entries.dedup_by_key(|e| e.seq);
    Ok(entries
        .into_iter()
        .map(|entry| {
            let detail: Value = serde_json::from_slice(&entry.doc).unwrap_or(Value::Null);
            json!({
                "seq": entry.seq,
                "profile": entry.profile.to_string(),
                "kind": entry.kind,
                "at": time_text(entry.at_ms),
                "detail": detail,
            })
        })
        .collect())
}
