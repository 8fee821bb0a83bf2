//! `[identity]` in `tributary.toml`: identifier types and their guard-rails, and the
//! survivorship rules of the golden record.
//!
//! ```toml
//! [identity]
//! # Identifier types, highest priority first. Priority decides which profile an event that
//! # touches several belongs to, which identifier names a profile, and which identifiers are
//! # dropped first when a limit is reached.
//! types = [
//!   { name = "user_id", unique = true },                 # from the envelope's userId
//!   { name = "email", max_per_profile = 5, traits = ["email"] },
//!   { name = "phone", max_per_profile = 5, traits = ["phone"] },
//!   { name = "crm_id", unique = true, traits = ["crm_id"] },
//!   { name = "anonymous_id", max_per_profile = 50 },     # from anonymousId (and alias previousId)
//! ]
//! blocked_values = ["null", "undefined", "test@example.com"]
//! blocked_patterns = ["^n/?a$", "@mailinator\\.com$"]
//! max_identifiers_per_profile = 100
//! max_merges_per_profile = 50
//!
//! [identity.traits]
//! default = "most_recent"
//! source_priority = ["crm", "shop", "web"]
//! rules = { first_name = "source_priority", lifetime_value = "sum", first_order_at = "first_seen", max_order_total = "max" }
//! ```
//!
//! Identifier values come from the event envelope (`userId`, `anonymousId`, an alias call's
//! `previousId`), from `context.externalIds` entries whose `type` is a configured type, and from
//! the trait names listed in `traits` (an identify call's traits, or `context.traits` of any
//! call).

use std::collections::{BTreeMap, HashSet};

use regex::RegexSet;
use serde::Deserialize;

/// The built-in type fed by the envelope's `userId`.
pub const USER_ID: &str = "user_id";
/// The built-in type fed by the envelope's `anonymousId`.
pub const ANONYMOUS_ID: &str = "anonymous_id";
/// Email addresses: compared case-insensitively (lowercased before use).
pub const EMAIL: &str = "email";
/// Phone numbers: expected in E.164 (normalize them at the source).
pub const PHONE: &str = "phone";

/// The `[identity]` table as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Identifier types, highest priority first. Default: user_id (unique), email (5), phone
    /// (5), anonymous_id (50).
    pub types: Option<Vec<IdTypeConfig>>,
    /// Values never used as identifiers, of any type, compared case-insensitively after trimming.
    #[serde(default)]
    pub blocked_values: Vec<String>,
    /// Regular expressions (Rust `regex` syntax); a value matching any is never used.
    #[serde(default)]
    pub blocked_patterns: Vec<String>,
    /// The most identifiers one profile may hold. Default 100.
    pub max_identifiers_per_profile: Option<u32>,
    /// The most merges one profile may take part in. Default 50.
    pub max_merges_per_profile: Option<u32>,
    #[serde(default)]
    pub traits: TraitsConfig,
    /// `[identity.matching]`: probabilistic matching of records that share no identifier
    /// (see [`trib_match`]).
    pub matching: Option<trib_match::MatchConfig>,
}

/// One identifier type.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdTypeConfig {
    pub name: String,
    /// A profile holds at most one value of a unique type, and two profiles with different
    /// values never merge.
    #[serde(default)]
    pub unique: bool,
    /// The most values of this type one profile may hold (1 for unique types).
    pub max_per_profile: Option<u32>,
    /// Trait names whose values are identifiers of this type.
    #[serde(default)]
    pub traits: Vec<String>,
}

/// `[identity.traits]`: survivorship of the golden record.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraitsConfig {
    /// The rule for traits without their own. Default `most_recent`.
    pub default: Option<String>,
    /// Source names, most trusted first, for `source_priority` and `first_non_empty`.
    #[serde(default)]
    pub source_priority: Vec<String>,
    /// Per-trait rules.
    #[serde(default)]
    pub rules: BTreeMap<String, String>,
}

/// How the golden value of a trait is chosen among what the sources said.
///
/// Every rule is a function of the set of observations (each with its event time), never of the
/// order in which events were processed, so replays and rebuilds give the same golden record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Survivorship {
    /// The value of the latest observation (by event time), even an empty one: a source can
    /// clear a trait.
    MostRecent,
    /// The value of the earliest non-empty observation.
    FirstSeen,
    /// The latest value of the most trusted source that sent the trait (even an empty one);
    /// sources missing from `source_priority` rank after the listed ones, by recency.
    SourcePriority,
    /// As `source_priority`, skipping empty values.
    FirstNonEmpty,
    /// The greatest value seen (numbers numerically, strings such as dates lexicographically).
    Max,
    /// The smallest value seen.
    Min,
    /// The sum over sources of each source's latest numeric value (so a repeated identify does
    /// not count twice).
    Sum,
}

impl Survivorship {
    pub const NAMES: &'static str =
        "most_recent, first_seen, source_priority, first_non_empty, max, min, sum";

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "most_recent" => Self::MostRecent,
            "first_seen" => Self::FirstSeen,
            "source_priority" => Self::SourcePriority,
            "first_non_empty" => Self::FirstNonEmpty,
            "max" => Self::Max,
            "min" => Self::Min,
            "sum" => Self::Sum,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::MostRecent => "most_recent",
            Self::FirstSeen => "first_seen",
            Self::SourcePriority => "source_priority",
            Self::FirstNonEmpty => "first_non_empty",
            Self::Max => "max",
            Self::Min => "min",
            Self::Sum => "sum",
        }
    }
}

/// An identifier type after validation.
#[derive(Debug, Clone)]
pub struct IdType {
    pub name: String,
    pub unique: bool,
    pub max_per_profile: u32,
    pub traits: Vec<String>,
}

/// The validated identity rules the engine runs with.
#[derive(Debug, Clone)]
pub struct IdentityRules {
    /// Highest priority first; an identifier's type is an index into this list.
    pub types: Vec<IdType>,
    blocked_values: HashSet<String>,
    blocked_patterns: Option<RegexSet>,
    pub max_identifiers_per_profile: u32,
    pub max_merges_per_profile: u32,
    pub default_rule: Survivorship,
    pub source_priority: Vec<String>,
    pub rules: BTreeMap<String, Survivorship>,
    pub matching: Option<trib_match::MatchConfig>,
}

impl Default for IdentityRules {
    fn default() -> Self {
        match IdentityConfig::default().rules() {
            Ok(rules) => rules,
            Err(problems) => unreachable!("the default identity config is valid: {problems:?}"),
        }
    }
}

impl IdentityRules {
    /// The index of a type by name.
    pub fn type_index(&self, name: &str) -> Option<usize> {
        self.types.iter().position(|t| t.name == name)
    }

    /// Whether a (trimmed) value is blocked.
    pub fn is_blocked(&self, value: &str) -> bool {
        if value.is_empty() {
            return true;
        }
        if !self.blocked_values.is_empty() && self.blocked_values.contains(&value.to_lowercase()) {
            return true;
        }
        self.blocked_patterns
            .as_ref()
            .is_some_and(|set| set.is_match(value))
    }

    /// The survivorship rule of a trait.
    pub fn rule_for(&self, name: &str) -> Survivorship {
        self.rules.get(name).copied().unwrap_or(self.default_rule)
    }

    /// A source's rank for `source_priority`: listed sources first, in order.
    pub fn source_rank(&self, source: &str) -> usize {
        self.source_priority
            .iter()
            .position(|s| s == source)
            .unwrap_or(self.source_priority.len())
    }
}

fn default_types() -> Vec<IdTypeConfig> {
    let t = |name: &str, unique: bool, max: u32, traits: &[&str]| IdTypeConfig {
        name: name.to_owned(),
        unique,
        max_per_profile: Some(max),
        traits: traits.iter().map(|t| (*t).to_owned()).collect(),
    };
    vec![
        t(USER_ID, true, 1, &[]),
        t(EMAIL, false, 5, &["email"]),
        t(PHONE, false, 5, &["phone"]),
        t(ANONYMOUS_ID, false, 50, &[]),
    ]
}

impl IdentityConfig {
    /// Every problem, as `(path relative to [identity], message)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        match self.rules() {
            Ok(_) => Vec::new(),
            Err(problems) => problems,
        }
    }

    /// Validates and builds the rules.
    pub fn rules(&self) -> Result<IdentityRules, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut push = |path: String, message: String| problems.push((path, message));

        let types_given = self.types.is_some();
        let raw_types = self.types.clone().unwrap_or_else(default_types);
        if raw_types.is_empty() {
            push(
                "types".into(),
                "must list at least one identifier type".into(),
            );
        }
        let mut types = Vec::new();
        let mut seen = HashSet::new();
        let mut trait_owner: BTreeMap<&str, &str> = BTreeMap::new();
        for (index, raw) in raw_types.iter().enumerate() {
            let at = format!("types[{index}]");
            let valid_name = !raw.name.is_empty()
                && raw.name.len() <= 64
                && raw
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid_name {
                push(
                    format!("{at}.name"),
                    format!(
                        "{:?} is not a valid type name: use 1 to 64 of a-z, 0-9 and _",
                        raw.name
                    ),
                );
            }
            if !seen.insert(raw.name.clone()) {
                push(
                    format!("{at}.name"),
                    format!("type {:?} is listed twice", raw.name),
                );
            }
            let max = match (raw.unique, raw.max_per_profile) {
                (true, Some(max)) if max != 1 => {
                    push(
                        format!("{at}.max_per_profile"),
                        format!("a unique type holds exactly one value per profile, not {max}"),
                    );
                    1
                }
                (true, _) => 1,
                (false, Some(0)) => {
                    push(format!("{at}.max_per_profile"), "must be at least 1".into());
                    1
                }
                (false, Some(max)) => max,
                (false, None) => 20,
            };
            for name in &raw.traits {
                if let Some(owner) = trait_owner.insert(name, &raw.name) {
                    push(
                        format!("{at}.traits"),
                        format!("trait {name:?} already feeds type {owner:?}"),
                    );
                }
            }
            types.push(IdType {
                name: raw.name.clone(),
                unique: raw.unique,
                max_per_profile: max,
                traits: raw.traits.clone(),
            });
        }
        if types_given
            && !types
                .iter()
                .any(|t| t.name == USER_ID || t.name == ANONYMOUS_ID)
        {
            push(
                "types".into(),
                "list user_id or anonymous_id: events from the Segment API are identified by them"
                    .into(),
            );
        }

        let blocked_values = self
            .blocked_values
            .iter()
            .map(|v| v.trim().to_lowercase())
            .collect();
        let mut patterns = Vec::new();
        for (index, pattern) in self.blocked_patterns.iter().enumerate() {
            match regex::Regex::new(pattern) {
                Ok(_) => patterns.push(pattern.clone()),
                Err(error) => push(
                    format!("blocked_patterns[{index}]"),
                    format!("not a valid regular expression: {error}"),
                ),
            }
        }
        let blocked_patterns = if patterns.is_empty() {
            None
        } else {
            RegexSet::new(&patterns).ok()
        };

        let max_identifiers_per_profile = self.max_identifiers_per_profile.unwrap_or(100);
        if max_identifiers_per_profile == 0 {
            push(
                "max_identifiers_per_profile".into(),
                "must be at least 1".into(),
            );
        }
        let max_merges_per_profile = self.max_merges_per_profile.unwrap_or(50);

        let default_rule = match self.traits.default.as_deref() {
            None => Survivorship::MostRecent,
            Some(name) => Survivorship::parse(name).unwrap_or_else(|| {
                push(
                    "traits.default".into(),
                    format!("unknown rule {name:?}; one of {}", Survivorship::NAMES),
                );
                Survivorship::MostRecent
            }),
        };
        let mut rules = BTreeMap::new();
        for (name, rule) in &self.traits.rules {
            match Survivorship::parse(rule) {
                Some(rule) => {
                    rules.insert(name.clone(), rule);
                }
                None => push(
                    format!("traits.rules.{name}"),
                    format!("unknown rule {rule:?}; one of {}", Survivorship::NAMES),
                ),
            }
        }
        let needs_priority = rules.values().chain([&default_rule]).any(|r| {
            matches!(
                r,
                Survivorship::SourcePriority | Survivorship::FirstNonEmpty
            )
        });
        if needs_priority && self.traits.source_priority.is_empty() {
            push(
                "traits.source_priority".into(),
                "source_priority and first_non_empty rules need the list of sources, most trusted first"
                    .into(),
            );
        }

        if let Some(matching) = &self.matching
            && let Err(found) = matching.validate()
        {
            for message in found {
                problems.push(("matching".into(), message));
            }
        }

        if problems.is_empty() {
            Ok(IdentityRules {
                matching: self.matching.clone(),
                types,
                blocked_values,
                blocked_patterns,
                max_identifiers_per_profile,
                max_merges_per_profile,
                default_rule,
                source_priority: self.traits.source_priority.clone(),
                rules,
            })
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> IdentityConfig {
        toml_from_str(text)
    }

    fn toml_from_str(text: &str) -> IdentityConfig {
        // The crate does not depend on a TOML parser; JSON has the same shape for these tests.
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn the_default_rules_are_valid_and_ordered() {
        let rules = IdentityRules::default();
        let names: Vec<&str> = rules.types.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, vec!["user_id", "email", "phone", "anonymous_id"]);
        assert!(rules.types[0].unique);
        assert_eq!(rules.types[0].max_per_profile, 1);
        assert_eq!(rules.rule_for("anything"), Survivorship::MostRecent);
    }

    #[test]
    fn blocked_values_are_case_insensitive_and_patterns_match() {
        let config = parse(
            r#"{"blocked_values": ["NULL", " test@example.com "], "blocked_patterns": ["^n/?a$", "@mailinator\\.com$"]}"#,
        );
        let rules = config.rules().unwrap();
        for blocked in [
            "null",
            "Null",
            "TEST@example.com",
            "n/a",
            "na",
            "x@mailinator.com",
            "",
        ] {
            assert!(rules.is_blocked(blocked), "{blocked:?} should be blocked");
        }
        for allowed in ["nullable", "alice@example.com", "nan", "x@mailinator.co"] {
            assert!(!rules.is_blocked(allowed), "{allowed:?} should be allowed");
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let config = parse(
            r#"{
              "types": [
                {"name": "Email"},
                {"name": "crm_id", "unique": true, "max_per_profile": 3, "traits": ["crm"]},
                {"name": "crm_id", "traits": ["crm"]},
                {"name": "web", "max_per_profile": 0}
              ],
              "blocked_patterns": ["("],
              "max_identifiers_per_profile": 0,
              "traits": {"default": "newest", "rules": {"first_name": "source_priority", "ltv": "total"}}
            }"#,
        );
        let problems = config.validate();
        let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "types[0].name",
                "types[1].max_per_profile",
                "types[2].name",
                "types[2].traits",
                "types[3].max_per_profile",
                "types",
                "blocked_patterns[0]",
                "max_identifiers_per_profile",
                "traits.default",
                "traits.rules.ltv",
                "traits.source_priority",
            ],
            "{problems:#?}"
        );
        assert!(problems[0].1.contains("\"Email\""));
        assert!(problems[9].1.contains("\"total\""));
    }
}
