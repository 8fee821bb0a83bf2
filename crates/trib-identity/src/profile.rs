//! The golden profile document, its identifiers, and per-trait survivorship with provenance.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{IdentityRules, Survivorship};

/// One identifier held by a profile, with where it was first seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentifierEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
    /// Event time of the earliest event that carried it, in ms since the Unix epoch.
    pub first_seen_ms: i64,
    /// The source and messageId of that event.
    pub source: String,
    pub message_id: String,
}

impl IdentifierEntry {
    /// The content-based order used to pick a profile's naming identifier among equals.
    pub(crate) fn seen_key(&self) -> (i64, &str, &str) {
        (self.first_seen_ms, &self.message_id, &self.value)
    }
}

/// One source's say about a trait: a value at an event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub value: Value,
    pub source: String,
    pub at_ms: i64,
    pub message_id: String,
}

impl Observation {
    /// Total order by event time, then messageId: ties never depend on processing order.
    fn time_key(&self) -> (i64, &str) {
        (self.at_ms, &self.message_id)
    }
}

/// What a profile keeps about one trait from one source: enough to evaluate every rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceObservations {
    /// The latest observation, empty or not.
    pub latest: Observation,
    /// The earliest non-empty observation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earliest: Option<Observation>,
    /// The greatest and smallest non-empty values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Observation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Observation>,
}

/// The golden value of a trait and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldenTrait {
    pub value: Value,
    pub rule: String,
    /// The source(s) the value came from (several for `sum`).
    pub sources: Vec<String>,
    /// The event time of the deciding observation (the latest one for `sum`).
    pub at_ms: i64,
}

/// A golden profile as stored (JSON, opaque to the store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub id: String,
    /// Identifiers, in type priority order, then as first seen.
    pub identifiers: Vec<IdentifierEntry>,
    /// The golden record.
    pub traits: BTreeMap<String, GoldenTrait>,
    /// Per trait, per source: the observations the golden record is computed from.
    pub observations: BTreeMap<String, BTreeMap<String, SourceObservations>>,
    /// Sources that sent events about this person.
    pub sources: Vec<String>,
    /// Ids this profile absorbed (merges and renames), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_ids: Vec<String>,
    /// How many merges made this profile.
    #[serde(default)]
    pub merge_count: u32,
}

/// Whether a value counts as empty for the rules that skip empty values.
pub(crate) fn is_empty_value(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Compares two values for max/min: numbers numerically, strings lexicographically (ISO 8601
/// dates compare correctly), booleans false < true; values of different kinds don't compare.
fn compare_values(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

impl SourceObservations {
    /// Keeps what the trait's rule needs besides the latest observation (every rule needs
    /// that), so profiles stay small. A rule changed in config applies fully after a rebuild.
    fn new(observation: Observation, rule: Survivorship) -> Self {
        let keep = !is_empty_value(&observation.value);
        Self {
            earliest: (keep && rule == Survivorship::FirstSeen).then(|| observation.clone()),
            max: (keep && rule == Survivorship::Max).then(|| observation.clone()),
            min: (keep && rule == Survivorship::Min).then(|| observation.clone()),
            latest: observation,
        }
    }

    /// Folds another observation (or another profile's observations of the same source) in.
    fn absorb(&mut self, other: SourceObservations) {
        if other.latest.time_key() > self.latest.time_key() {
            self.latest = other.latest;
        }
        pick(&mut self.earliest, other.earliest, |new, old| {
            new.time_key() < old.time_key()
        });
        pick(&mut self.max, other.max, |new, old| {
            better_extreme(new, old, Ordering::Greater)
        });
        pick(&mut self.min, other.min, |new, old| {
            better_extreme(new, old, Ordering::Less)
        });
    }
}

fn pick(
    slot: &mut Option<Observation>,
    candidate: Option<Observation>,
    better: impl Fn(&Observation, &Observation) -> bool,
) {
    if let Some(candidate) = candidate {
        match slot {
            Some(current) if !better(&candidate, current) => {}
            _ => *slot = Some(candidate),
        }
    }
}

/// Whether `new` beats `old` as a maximum (`want = Greater`) or minimum (`want = Less`). Values
/// that don't compare, and equal values, are decided by the earlier observation, so the result
/// does not depend on processing order.
fn better_extreme(new: &Observation, old: &Observation, want: Ordering) -> bool {
    match compare_values(&new.value, &old.value) {
        Some(ordering) if ordering == want => true,
        Some(Ordering::Equal) | None => new.time_key() < old.time_key(),
        Some(_) => false,
    }
}

impl Profile {
    pub(crate) fn new(id: String) -> Self {
        Self {
            id,
            identifiers: Vec::new(),
            traits: BTreeMap::new(),
            observations: BTreeMap::new(),
            sources: Vec::new(),
            merged_ids: Vec::new(),
            merge_count: 0,
        }
    }

    pub fn has_identifier(&self, kind: &str, value: &str) -> bool {
        self.identifiers
            .iter()
            .any(|i| i.kind == kind && i.value == value)
    }

    pub fn count_of_type(&self, kind: &str) -> usize {
        self.identifiers.iter().filter(|i| i.kind == kind).count()
    }

    /// Records that an event came from `source`; returns whether that is news. (How many
    /// events, and when, is the timeline's business: an event that changes no identifier, trait
    /// or source does not change the document, so it costs no rewrite.)
    pub(crate) fn saw_source(&mut self, source: &str) -> bool {
        match self.sources.binary_search_by(|s| s.as_str().cmp(source)) {
            Ok(_) => false,
            Err(index) => {
                self.sources.insert(index, source.to_owned());
                true
            }
        }
    }

    /// Adds one trait observation; the golden value is recomputed by [`Profile::recompute`].
    pub(crate) fn observe(&mut self, name: &str, observation: Observation, rule: Survivorship) {
        let per_source = self.observations.entry(name.to_owned()).or_default();
        match per_source.get_mut(&observation.source) {
            Some(existing) => existing.absorb(SourceObservations::new(observation, rule)),
            None => {
                per_source.insert(
                    observation.source.clone(),
                    SourceObservations::new(observation, rule),
                );
            }
        }
    }

    /// Folds another profile into this one (a merge). Identifier order is restored by the
    /// caller with [`Profile::sort_identifiers`].
    pub(crate) fn absorb(&mut self, other: Profile) {
        for entry in other.identifiers {
            if !self.has_identifier(&entry.kind, &entry.value) {
                self.identifiers.push(entry);
            }
        }
        for source in other.sources {
            if let Err(index) = self.sources.binary_search(&source) {
                self.sources.insert(index, source);
            }
        }
        for (name, per_source) in other.observations {
            let mine = self.observations.entry(name).or_default();
            for (source, observations) in per_source {
                match mine.get_mut(&source) {
                    Some(existing) => existing.absorb(observations),
                    None => {
                        mine.insert(source, observations);
                    }
                }
            }
        }
        self.merged_ids.push(other.id);
        self.merged_ids.extend(other.merged_ids);
        self.merge_count += other.merge_count + 1;
    }

    /// Orders identifiers by type priority, then as first seen.
    pub(crate) fn sort_identifiers(&mut self, rules: &IdentityRules) {
        let rank = |kind: &str| rules.type_index(kind).unwrap_or(usize::MAX);
        self.identifiers.sort_by(|a, b| {
            rank(&a.kind)
                .cmp(&rank(&b.kind))
                .then_with(|| a.seen_key().cmp(&b.seen_key()))
        });
    }

    /// Drops the observations of trait `name` made before `cutoff_ms` (event time) and
    /// recomputes its golden value; the trait goes when nothing is left. Returns how many
    /// sources' observations of the trait were dropped or trimmed.
    ///
    /// A source whose latest observation is too old goes whole (every observation it keeps is
    /// older). Otherwise its latest stays, and an older earliest, max or min is replaced by the
    /// latest (if it is not empty), the only observation still known.
    pub(crate) fn expire_trait(
        &mut self,
        rules: &IdentityRules,
        name: &str,
        cutoff_ms: i64,
    ) -> u64 {
        let Some(per_source) = self.observations.get_mut(name) else {
            return 0;
        };
        let mut expired = 0;
        per_source.retain(|_, observations| {
            if observations.latest.at_ms < cutoff_ms {
                expired += 1;
                return false;
            }
            let latest = &observations.latest;
            let replacement = (!is_empty_value(&latest.value)).then(|| latest.clone());
            let mut trimmed = false;
            for slot in [
                &mut observations.earliest,
                &mut observations.max,
                &mut observations.min,
            ] {
                if slot.as_ref().is_some_and(|o| o.at_ms < cutoff_ms) {
                    *slot = replacement.clone();
                    trimmed = true;
                }
            }
            expired += u64::from(trimmed);
            true
        });
        if expired == 0 {
            return 0;
        }
        if per_source.is_empty() {
            self.observations.remove(name);
            self.traits.remove(name);
        } else {
            self.recompute(rules, Some(&[name.to_owned()]));
        }
        expired
    }

    /// Recomputes the golden value of the named traits (all when `names` is `None`).
    pub(crate) fn recompute(&mut self, rules: &IdentityRules, names: Option<&[String]>) {
        let names: Vec<String> = match names {
            Some(names) => names.to_vec(),
            None => self.observations.keys().cloned().collect(),
        };
        for name in names {
            let Some(per_source) = self.observations.get(&name) else {
                continue;
            };
            let rule = rules.rule_for(&name);
            match golden(rule, per_source, rules) {
                Some(value) => {
                    self.traits.insert(name, value);
                }
                None => {
                    self.traits.remove(&name);
                }
            }
        }
    }
}

fn golden(
    rule: Survivorship,
    per_source: &BTreeMap<String, SourceObservations>,
    rules: &IdentityRules,
) -> Option<GoldenTrait> {
    let from = |observation: &Observation| GoldenTrait {
        value: observation.value.clone(),
        rule: rule.name().to_owned(),
        sources: vec![observation.source.clone()],
        at_ms: observation.at_ms,
    };
    let all = per_source.values();
    match rule {
        Survivorship::MostRecent => all
            .map(|o| &o.latest)
            .max_by(|a, b| a.time_key().cmp(&b.time_key()))
            .map(from),
        Survivorship::FirstSeen => all
            .filter_map(|o| o.earliest.as_ref())
            .min_by(|a, b| a.time_key().cmp(&b.time_key()))
            .map(from),
        Survivorship::SourcePriority | Survivorship::FirstNonEmpty => {
            let skip_empty = rule == Survivorship::FirstNonEmpty;
            all.map(|o| &o.latest)
                .filter(|o| !(skip_empty && is_empty_value(&o.value)))
                .min_by(|a, b| {
                    rules
                        .source_rank(&a.source)
                        .cmp(&rules.source_rank(&b.source))
                        .then_with(|| b.time_key().cmp(&a.time_key()))
                })
                .map(from)
        }
        Survivorship::Max => all
            .filter_map(|o| o.max.as_ref())
            .reduce(|best, o| {
                if better_extreme(o, best, Ordering::Greater) {
                    o
                } else {
                    best
                }
            })
            .map(from),
        Survivorship::Min => all
            .filter_map(|o| o.min.as_ref())
            .reduce(|best, o| {
                if better_extreme(o, best, Ordering::Less) {
                    o
                } else {
                    best
                }
            })
            .map(from),
        Survivorship::Sum => {
            let mut total = 0.0;
            let mut integral = true;
            let mut sources = Vec::new();
            let mut at_ms = i64::MIN;
            for observations in all {
                let latest = &observations.latest;
                let Some(number) = latest.value.as_f64() else {
                    continue;
                };
                integral &= latest.value.is_i64() || latest.value.is_u64();
                total += number;
                sources.push(latest.source.clone());
                at_ms = at_ms.max(latest.at_ms);
            }
            if sources.is_empty() {
                return None;
            }
            let value = if integral && total.abs() < 9.0e15 {
                Value::from(total as i64)
            } else {
                serde_json::Number::from_f64(total).map_or(Value::Null, Value::Number)
            };
            Some(GoldenTrait {
                value,
                rule: rule.name().to_owned(),
                sources,
                at_ms,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IdentityConfig;
    use serde_json::json;

    fn obs(value: Value, source: &str, at_ms: i64) -> Observation {
        Observation {
            value,
            source: source.to_owned(),
            at_ms,
            message_id: format!("m{at_ms}"),
        }
    }

    fn rules(rule: &str) -> IdentityRules {
        let config: IdentityConfig = serde_json::from_value(json!({
            "traits": {"default": rule, "source_priority": ["crm", "shop"]}
        }))
        .unwrap();
        config.rules().unwrap()
    }

    fn golden_of(rule: &str, observations: &[Observation]) -> Option<Value> {
        let rules = rules(rule);
        let mut forward = Profile::new("p".into());
        for o in observations {
            forward.observe("t", o.clone(), rules.rule_for("t"));
        }
        forward.recompute(&rules, None);
        // Survivorship never depends on the order observations arrive in.
        let mut backward = Profile::new("p".into());
        for o in observations.iter().rev() {
            backward.observe("t", o.clone(), rules.rule_for("t"));
        }
        backward.recompute(&rules, None);
        assert_eq!(forward.traits, backward.traits, "order changed the result");
        forward.traits.get("t").map(|g| g.value.clone())
    }

    #[test]
    fn each_rule_picks_its_value() {
        let observations = [
            obs(json!(5), "web", 300),
            obs(json!(20), "shop", 100),
            obs(json!(""), "crm", 400),
            obs(json!(7), "crm", 200),
            obs(json!(1), "web", 50),
        ];
        assert_eq!(golden_of("most_recent", &observations), Some(json!("")));
        assert_eq!(golden_of("first_seen", &observations), Some(json!(1)));
        assert_eq!(golden_of("source_priority", &observations), Some(json!("")));
        assert_eq!(golden_of("first_non_empty", &observations), Some(json!(20)));
        assert_eq!(golden_of("max", &observations), Some(json!(20)));
        assert_eq!(golden_of("min", &observations), Some(json!(1)));
        // Latest per source: web 5, shop 20, crm "" (not a number).
        assert_eq!(golden_of("sum", &observations), Some(json!(25)));
    }

    #[test]
    fn dates_compare_as_text_and_ties_are_decided_by_time() {
        let observations = [
            obs(json!("2024-03-01T00:00:00Z"), "shop", 10),
            obs(json!("2025-01-15T00:00:00Z"), "crm", 20),
            obs(json!("2023-12-31T00:00:00Z"), "web", 30),
        ];
        assert_eq!(
            golden_of("max", &observations),
            Some(json!("2025-01-15T00:00:00Z"))
        );
        assert_eq!(
            golden_of("min", &observations),
            Some(json!("2023-12-31T00:00:00Z"))
        );
        let tied = [obs(json!(3), "a", 20), obs(json!(3.0), "b", 10)];
        let rules = rules("max");
        let mut profile = Profile::new("p".into());
        for o in &tied {
            profile.observe("t", o.clone(), Survivorship::Max);
        }
        profile.recompute(&rules, None);
        assert_eq!(profile.traits["t"].sources, vec!["b".to_owned()]);
    }

    #[test]
    fn expiring_a_trait_drops_old_observations_and_recomputes_the_golden_value() {
        let rules = rules("first_seen");
        let mut profile = Profile::new("p".into());
        profile.observe(
            "email",
            obs(json!("old@example.com"), "crm", 100),
            Survivorship::FirstSeen,
        );
        profile.observe(
            "email",
            obs(json!("new@example.com"), "crm", 900),
            Survivorship::FirstSeen,
        );
        profile.observe(
            "email",
            obs(json!("web@example.com"), "web", 50),
            Survivorship::FirstSeen,
        );
        profile.recompute(&rules, None);
        assert_eq!(profile.traits["email"].value, json!("web@example.com"));

        // web goes whole, crm's earliest is replaced by its latest.
        assert_eq!(profile.expire_trait(&rules, "email", 500), 2);
        assert_eq!(profile.traits["email"].value, json!("new@example.com"));
        assert_eq!(profile.observations["email"].len(), 1);
        assert_eq!(profile.expire_trait(&rules, "email", 500), 0, "idempotent");

        assert_eq!(profile.expire_trait(&rules, "email", 1_000), 1);
        assert!(!profile.traits.contains_key("email"));
        assert!(!profile.observations.contains_key("email"));
    }

    #[test]
    fn merging_profiles_equals_observing_everything_in_one() {
        let rules = rules("max");
        let all = [
            obs(json!(3), "shop", 1),
            obs(json!(9), "shop", 2),
            obs(json!(4), "web", 3),
        ];
        let mut one = Profile::new("a".into());
        for o in &all {
            one.observe("t", o.clone(), Survivorship::Max);
        }
        one.recompute(&rules, None);
        let mut a = Profile::new("a".into());
        a.observe("t", all[0].clone(), Survivorship::Max);
        a.observe("t", all[2].clone(), Survivorship::Max);
        let mut b = Profile::new("b".into());
        b.observe("t", all[1].clone(), Survivorship::Max);
        a.absorb(b);
        a.recompute(&rules, None);
        assert_eq!(a.traits, one.traits);
        assert_eq!(a.observations, one.observations);
        assert_eq!(a.merged_ids, vec!["b".to_owned()]);
    }
}
