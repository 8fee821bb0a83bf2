//! SchemaVer (`MODEL-REVISION-ADDITION`), the versioning scheme of Snowplow's Iglu registry.

use std::fmt;
use std::str::FromStr;

use crate::error::SchemaError;

/// A schema version `MODEL-REVISION-ADDITION`, e.g. `1-0-2`.
///
/// * ADDITION: a change that accepts every event the previous version accepted.
/// * REVISION: a significant change that is still backward compatible (this registry refuses
///   breaking REVISIONs, see the crate docs).
/// * MODEL: a change that may reject data the previous version accepted.
///
/// Versions order numerically, by model, then revision, then addition. MODEL starts at 1;
/// parts have no leading zeros (`01-0-0` is rejected, as Iglu does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SchemaVer {
    /// The MODEL part, at least 1.
    pub model: u32,
    /// The REVISION part.
    pub revision: u32,
    /// The ADDITION part.
    pub addition: u32,
}

/// Which part of the version a publish increments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bump {
    /// ADDITION + 1 (same model and revision).
    Addition,
    /// REVISION + 1, addition reset to 0.
    Revision,
    /// MODEL + 1, revision and addition reset to 0.
    Model,
}

impl SchemaVer {
    /// The first version of every subject, `1-0-0`.
    pub const INITIAL: SchemaVer = SchemaVer::new(1, 0, 0);

    /// Builds a version from its parts. Does not check that `model` is at least 1; use
    /// [`str::parse`] for untrusted input.
    pub const fn new(model: u32, revision: u32, addition: u32) -> Self {
        Self {
            model,
            revision,
            addition,
        }
    }

    /// Returns the next ADDITION (`1-0-2` → `1-0-3`).
    pub fn next_addition(&self) -> SchemaVer {
        Self::new(self.model, self.revision, self.addition.saturating_add(1))
    }

    /// Returns the next REVISION (`1-0-2` → `1-1-0`).
    pub fn next_revision(&self) -> SchemaVer {
        Self::new(self.model, self.revision.saturating_add(1), 0)
    }

    /// Returns the next MODEL (`1-0-2` → `2-0-0`).
    pub fn next_model(&self) -> SchemaVer {
        Self::new(self.model.saturating_add(1), 0, 0)
    }

    /// Tells which single step leads from `previous` to `self`, or `None` when `self` is not one
    /// of the three direct successors of `previous`.
    pub fn bump_from(&self, previous: &SchemaVer) -> Option<Bump> {
        let successors = [
            (
                previous
                    .addition
                    .checked_add(1)
                    .map(|addition| Self::new(previous.model, previous.revision, addition)),
                Bump::Addition,
            ),
            (
                previous
                    .revision
                    .checked_add(1)
                    .map(|revision| Self::new(previous.model, revision, 0)),
                Bump::Revision,
            ),
            (
                previous
                    .model
                    .checked_add(1)
                    .map(|model| Self::new(model, 0, 0)),
                Bump::Model,
            ),
        ];
        successors
            .into_iter()
            .find_map(|(successor, bump)| (successor == Some(*self)).then_some(bump))
    }
}

impl fmt::Display for SchemaVer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}-{}-{}",
            self.model, self.revision, self.addition
        )
    }
}

impl fmt::Display for Bump {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Bump::Addition => "addition",
            Bump::Revision => "revision",
            Bump::Model => "model",
        })
    }
}

impl FromStr for SchemaVer {
    type Err = SchemaError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| SchemaError::InvalidVersion {
            input: input.to_owned(),
            reason,
        };
        let mut parts = input.split('-');
        let mut numbers = [0u32; 3];
        for number in &mut numbers {
            let part = parts
                .next()
                .ok_or_else(|| invalid("expected MODEL-REVISION-ADDITION, such as 1-0-0"))?;
            *number = parse_part(part).map_err(invalid)?;
        }
        if parts.next().is_some() {
            return Err(invalid("expected exactly three parts, such as 1-0-0"));
        }
        let [model, revision, addition] = numbers;
        if model == 0 {
            return Err(invalid("MODEL starts at 1"));
        }
        Ok(Self::new(model, revision, addition))
    }
}

impl serde::Serialize for SchemaVer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SchemaVer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn parse_part(part: &str) -> Result<u32, &'static str> {
    if part.is_empty() {
        return Err("expected MODEL-REVISION-ADDITION, such as 1-0-0 (a part is empty)");
    }
    if !part.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err("each part must be a non-negative decimal number");
    }
    if part.len() > 1 && part.starts_with('0') {
        return Err("parts must not have leading zeros");
    }
    part.parse().map_err(|_| "a part is too large")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_parse(input: &str, expect: Result<(u32, u32, u32), &str>) {
        let parsed = input.parse::<SchemaVer>();
        match (parsed, expect) {
            (Ok(version), Ok((model, revision, addition))) => {
                assert_eq!(version, SchemaVer::new(model, revision, addition));
                assert_eq!(version.to_string(), input);
            }
            (Err(error), Err(fragment)) => {
                let message = error.to_string();
                assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
            }
            (parsed, expect) => panic!("{input:?}: got {parsed:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn parses_and_displays_versions() {
        check_parse("1-0-0", Ok((1, 0, 0)));
        check_parse("1-0-2", Ok((1, 0, 2)));
        check_parse("12-10-305", Ok((12, 10, 305)));
        check_parse("01-0-0", Err("leading zeros"));
        check_parse("1-00-0", Err("leading zeros"));
        check_parse("-1-0-0", Err("part is empty"));
        check_parse("1--1-0", Err("part is empty"));
        check_parse("1-0", Err("expected MODEL-REVISION-ADDITION"));
        check_parse("1-0-", Err("part is empty"));
        check_parse("1-0-0-0", Err("exactly three parts"));
        check_parse("", Err("part is empty"));
        check_parse("1-0-a", Err("non-negative decimal"));
        check_parse("1-0-+1", Err("non-negative decimal"));
        check_parse("1.0.0", Err("non-negative decimal"));
        check_parse("0-1-0", Err("MODEL starts at 1"));
        check_parse("1-0-99999999999", Err("too large"));
    }

    #[test]
    fn orders_numerically() {
        let mut versions: Vec<SchemaVer> = ["2-0-0", "1-0-10", "1-1-0", "1-0-2", "1-0-0"]
            .iter()
            .map(|text| text.parse().unwrap())
            .collect();
        versions.sort();
        let sorted: Vec<String> = versions.iter().map(ToString::to_string).collect();
        assert_eq!(sorted, ["1-0-0", "1-0-2", "1-0-10", "1-1-0", "2-0-0"]);
    }

    #[test]
    fn recognises_single_steps_only() {
        let previous = SchemaVer::new(1, 2, 3);
        assert_eq!(
            SchemaVer::new(1, 2, 4).bump_from(&previous),
            Some(Bump::Addition)
        );
        assert_eq!(
            SchemaVer::new(1, 3, 0).bump_from(&previous),
            Some(Bump::Revision)
        );
        assert_eq!(
            SchemaVer::new(2, 0, 0).bump_from(&previous),
            Some(Bump::Model)
        );
        assert_eq!(SchemaVer::new(1, 2, 5).bump_from(&previous), None);
        assert_eq!(SchemaVer::new(1, 3, 1).bump_from(&previous), None);
        assert_eq!(SchemaVer::new(2, 0, 1).bump_from(&previous), None);
        assert_eq!(SchemaVer::new(3, 0, 0).bump_from(&previous), None);
        assert_eq!(previous.bump_from(&previous), None);
    }

    #[test]
    fn serializes_as_a_string() {
        let version = SchemaVer::new(1, 0, 2);
        assert_eq!(serde_json::to_string(&version).unwrap(), "\"1-0-2\"");
        let back: SchemaVer = serde_json::from_str("\"1-0-2\"").unwrap();
        assert_eq!(back, version);
        assert!(serde_json::from_str::<SchemaVer>("\"1-0\"").is_err());
    }
}
