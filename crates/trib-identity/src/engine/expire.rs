//! Retention of profile traits: [`Engine::expire_traits`] drops trait observations older than
//! their field class's time-to-live (`[retention.traits]`) from every active profile.

use std::collections::BTreeMap;

use serde_json::json;
use trib_core::retention::TraitRetention;
use trib_store::{ChangeKind, ProfileId, ProfileState, ProfileStore};

use super::{Engine, EngineError, decode, journal};

/// Profiles changed per store batch.
const PROFILES_PER_BATCH: usize = 1_000;
/// Change feed entries read per page.
const PAGE: usize = 10_000;

/// What one trait expiry did; counts only, never values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraitExpiryReport {
    /// Active profiles looked at.
    pub profiles: u64,
    /// Profiles that lost observations (each rewritten, with a `retention` journal entry).
    pub changed: u64,
    /// Sources' observations of a trait dropped or trimmed, per class.
    pub expired: BTreeMap<String, u64>,
}

impl<S: ProfileStore> Engine<S> {
    /// Drops, from every active profile, the trait observations whose event time is older than
    /// their class's TTL at `now_ms`, recomputes the golden values, and writes the changed
    /// profiles in batches of [`PROFILES_PER_BATCH`], each with a `retention` journal entry
    /// holding counts per class. Counts go to
    /// `tributary_retention_observations_expired_total{class}`.
    pub fn expire_traits(
        &mut self,
        now_ms: i64,
        policy: &TraitRetention,
    ) -> Result<TraitExpiryReport, EngineError> {
        let result = self.expire_inner(now_ms, policy);
        if result.is_err() {
            self.reset();
        }
        result
    }

    fn expire_inner(
        &mut self,
        now_ms: i64,
        policy: &TraitRetention,
    ) -> Result<TraitExpiryReport, EngineError> {
        let mut report = TraitExpiryReport::default();
        if policy.is_empty() {
            return Ok(report);
        }
        let mut after = 0;
        let mut in_batch = 0;
        loop {
            let changes = self.store.changes(None, after, PAGE)?;
            let Some(last) = changes.last() else { break };
            after = last.seq;
            let ids: Vec<ProfileId> = changes
                .iter()
                .filter(|c| c.kind == ChangeKind::Upserted)
                .map(|c| c.id)
                .collect();
            for (id, state) in ids.iter().zip(self.store.get_many(&ids)?) {
                let Some(ProfileState::Active(record)) = state else {
                    continue;
                };
                report.profiles += 1;
                // Decide on the stored document; load into the cache only what changes.
                let stored = decode(&record)?;
                let expiring: Vec<(String, &str, i64)> = stored
                    .observations
                    .keys()
                    .filter_map(|name| {
                        let (class, ttl) = policy.class_of(name)?;
                        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
                        Some((name.clone(), class, now_ms.saturating_sub(ttl_ms)))
                    })
                    .collect();
                if expiring.is_empty() {
                    continue;
                }
                let Some(active) = self.resolve_active(*id)? else {
                    continue;
                };
                let rules = self.rules.clone();
                let Some(profile) = self.profiles.get_mut(&active) else {
                    continue;
                };
                let mut per_class: BTreeMap<&str, u64> = BTreeMap::new();
                let mut traits_removed = 0;
                for (name, class, cutoff_ms) in &expiring {
                    let count = profile.expire_trait(&rules, name, *cutoff_ms);
                    if count > 0 {
                        *per_class.entry(class).or_default() += count;
                        traits_removed += u64::from(!profile.traits.contains_key(name));
                    }
                }
                if per_class.is_empty() {
                    continue;
                }
                report.changed += 1;
                for (class, count) in &per_class {
                    *report.expired.entry((*class).to_owned()).or_default() += count;
                }
                self.pending.dirty.insert(active);
                self.journal(
                    active,
                    journal::RETENTION,
                    json!({"expired": per_class, "traits_removed": traits_removed}),
                );
                in_batch += 1;
                if in_batch >= PROFILES_PER_BATCH {
                    self.flush(None)?;
                    in_batch = 0;
                }
            }
        }
        self.flush(None)?;
        for (class, count) in &report.expired {
            metrics::counter!(
                "tributary_retention_observations_expired_total",
                "class" => class.clone()
            )
            .increment(*count);
        }
        Ok(report)
    }
}
