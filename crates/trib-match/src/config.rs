//! Configuration: the `[identity.matching]` table of `tributary.toml`.

use serde::Deserialize;

use crate::MatchError;

/// Highest number of agreement levels a field may have (levels are packed in 4 bits, the
/// 16th value meaning "missing").
pub const MAX_LEVELS: usize = 15;
/// Highest number of compared fields.
pub const MAX_FIELDS: usize = 16;

/// The matching configuration (`[identity.matching]`). See the crate documentation for the
/// meaning of every key, and [`MatchConfig::example`] for a working example.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Column holding the record id (CSV input of [`dedupe`](crate::dedupe)).
    pub id_column: String,
    /// Match weight (sum of log2(m/u)) at or above which a pair is merged automatically.
    pub upper_threshold: f64,
    /// Pairs weighing at least this much, but less than `upper_threshold`, go to review.
    pub lower_threshold: f64,
    /// Blocking rules. Each rule is a list of key parts `"field"` or `"field:transform[:transform]"`;
    /// two records are compared when, for at least one rule, all parts are present and equal.
    #[serde(default)]
    pub blocking: Vec<Vec<String>>,
    /// Blocks (records sharing one key of one rule) larger than this are skipped: such keys are
    /// not discriminating (think "same birth year") and would cost a quadratic number of pairs.
    #[serde(default = "default_max_block_size")]
    pub max_block_size: usize,
    /// Cap on cluster size. Merges are applied strongest first; a merge that would create a
    /// cluster larger than this is not applied (its pair goes to review instead). `None`: no cap.
    #[serde(default)]
    pub max_cluster_size: Option<usize>,
    /// Parameters of the EM estimation of m and u.
    #[serde(default)]
    pub em: EmConfig,
    /// Compared fields, in the order of [`MatchRecord::fields`](crate::MatchRecord::fields).
    pub fields: Vec<FieldConfig>,
}

fn default_max_block_size() -> usize {
    1000
}

/// EM settings (`[identity.matching.em]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmConfig {
    /// Stop after this many iterations even if not converged.
    pub max_iterations: u32,
    /// Stop when no parameter (m, u, match proportion) moves by more than this.
    pub tolerance: f64,
    /// Number of pairs of each blocking rule (sampled at random if there are more) that EM
    /// runs on.
    pub sample_pairs: usize,
    /// Number of random record pairs used to initialise u.
    pub random_pairs: usize,
    /// Starting guess of the proportion of candidate pairs that are matches.
    pub initial_match_proportion: f64,
    /// Seed of the sampling, so that a run is reproducible.
    pub seed: u64,
    /// Whether EM re-estimates u on the candidate pairs (true), or keeps u as measured on
    /// random record pairs (false, the default). Candidate pairs are chosen for agreeing, so
    /// their non-matches are not typical of all non-matches, and a free u tends to let EM
    /// split the pairs on something other than identity (for instance "same address").
    pub update_u: bool,
}

impl Default for EmConfig {
    fn default() -> Self {
        EmConfig {
            max_iterations: 100,
            tolerance: 1e-5,
            sample_pairs: 2_000_000,
            random_pairs: 200_000,
            initial_match_proportion: 0.1,
            seed: 0x5eed_1e55,
            update_u: false,
        }
    }
}

/// One compared field (`[[identity.matching.fields]]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    /// Field name; also the CSV column it is read from.
    pub name: String,
    /// `exact`, `jaro_winkler`, `levenshtein`, `date` or `numeric`.
    pub comparator: String,
    /// Thresholds of the intermediate agreement levels: similarities, decreasing, in (0, 1] for
    /// `jaro_winkler` and `levenshtein`; tolerances, increasing, for `numeric`; none for `exact`
    /// and `date`.
    #[serde(default)]
    pub levels: Vec<f64>,
    /// Adds a `nickname` level (bill ~ william) after the similarity levels. Text comparators only.
    #[serde(default)]
    pub nicknames: bool,
    /// `numeric` only: tolerances are relative to the larger absolute value.
    #[serde(default)]
    pub relative: bool,
    /// How values are normalized before comparison and blocking: `text` (default: trim,
    /// lowercase, collapse white space), `alnum` (lowercase letters and digits only) or
    /// `digits` (digits only).
    #[serde(default)]
    pub normalize: Option<String>,
    /// Fixed m probabilities, one per level (see [`FieldConfig::level_labels`]); EM then leaves
    /// this field alone. Must be given together with `u`.
    #[serde(default)]
    pub m: Option<Vec<f64>>,
    /// Fixed u probabilities, one per level.
    #[serde(default)]
    pub u: Option<Vec<f64>>,
}

/// The comparators a field can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ComparatorKind {
    Exact,
    JaroWinkler,
    Levenshtein,
    Date,
    Numeric,
}

impl ComparatorKind {
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "exact" => ComparatorKind::Exact,
            "jaro_winkler" => ComparatorKind::JaroWinkler,
            "levenshtein" => ComparatorKind::Levenshtein,
            "date" => ComparatorKind::Date,
            "numeric" => ComparatorKind::Numeric,
            _ => return None,
        })
    }

    fn is_text(self) -> bool {
        matches!(
            self,
            ComparatorKind::Exact | ComparatorKind::JaroWinkler | ComparatorKind::Levenshtein
        )
    }
}

/// How a field's values are normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Normalize {
    Text,
    Alnum,
    Digits,
}

impl Normalize {
    fn parse(name: Option<&str>) -> Option<Self> {
        Some(match name {
            None | Some("text") => Normalize::Text,
            Some("alnum") => Normalize::Alnum,
            Some("digits") => Normalize::Digits,
            Some(_) => return None,
        })
    }
}

/// Transforms that build blocking key parts from a field value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transform {
    /// The normalized value itself.
    Value,
    /// First N characters.
    First(usize),
    /// Last N characters.
    Last(usize),
    /// American Soundex code (letter + 3 digits).
    Soundex,
    /// Year of a date (`YYYY-MM-DD`, `YYYY/MM/DD`, `YYYYMMDD`).
    Year,
    /// Digits only.
    Digits,
    /// Part before the `@` of an email address.
    Local,
    /// Part after the `@` of an email address.
    Domain,
}

impl Transform {
    pub(crate) fn parse(name: &str) -> Option<Self> {
        let count = |rest: &str| rest.parse::<usize>().ok().filter(|n| (1..=64).contains(n));
        Some(match name {
            "value" | "exact" | "lower" => Transform::Value,
            "soundex" => Transform::Soundex,
            "year" => Transform::Year,
            "digits" => Transform::Digits,
            "local" => Transform::Local,
            "domain" => Transform::Domain,
            _ => {
                if let Some(rest) = name.strip_prefix("first") {
                    Transform::First(count(rest)?)
                } else if let Some(rest) = name.strip_prefix("last") {
                    Transform::Last(count(rest)?)
                } else {
                    return None;
                }
            }
        })
    }
}

/// A parsed blocking key part: field index and transforms applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyPart {
    pub(crate) field: usize,
    pub(crate) transforms: Vec<Transform>,
}

/// The example configuration shipped in `examples/matching.toml`, tuned for the data of
/// [`generate`](crate::generate).
pub const EXAMPLE_CONFIG_TOML: &str = include_str!("../examples/matching.toml");

impl MatchConfig {
    /// Parses the content of the `[identity.matching]` table (top-level keys, `[em]` and
    /// `[[fields]]`) and validates it.
    pub fn from_toml_str(text: &str) -> Result<Self, MatchError> {
        let config: MatchConfig =
            toml::from_str(text).map_err(|e| MatchError::ConfigSyntax(e.to_string()))?;
        config.validate().map_err(MatchError::Config)?;
        Ok(config)
    }

    /// The example configuration ([`EXAMPLE_CONFIG_TOML`]).
    pub fn example() -> Self {
        match Self::from_toml_str(EXAMPLE_CONFIG_TOML) {
            Ok(config) => config,
            // The example is checked by the crate's tests.
            Err(err) => panic!("built-in example configuration is invalid: {err}"),
        }
    }

    /// Checks everything serde cannot: known comparators and transforms, level thresholds,
    /// m/u shapes, blocking keys naming known fields. Each message starts with its key path,
    /// e.g. `fields[2].comparator: unknown comparator "foo"`.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        if self.id_column.trim().is_empty() {
            errs.push("id_column: must not be empty".to_owned());
        }
        if !self.upper_threshold.is_finite() {
            errs.push("upper_threshold: must be a finite number".to_owned());
        }
        if !self.lower_threshold.is_finite() {
            errs.push("lower_threshold: must be a finite number".to_owned());
        }
        if self.lower_threshold > self.upper_threshold {
            errs.push(format!(
                "lower_threshold: {} is above upper_threshold {}",
                self.lower_threshold, self.upper_threshold
            ));
        }
        if self.max_block_size < 2 {
            errs.push("max_block_size: must be at least 2".to_owned());
        }
        if let Some(cap) = self.max_cluster_size
            && cap < 2
        {
            errs.push("max_cluster_size: must be at least 2".to_owned());
        }
        let em = &self.em;
        if em.max_iterations == 0 {
            errs.push("em.max_iterations: must be at least 1".to_owned());
        }
        if !(em.tolerance > 0.0 && em.tolerance.is_finite()) {
            errs.push("em.tolerance: must be a positive number".to_owned());
        }
        if em.sample_pairs == 0 {
            errs.push("em.sample_pairs: must be at least 1".to_owned());
        }
        if !(em.initial_match_proportion > 0.0 && em.initial_match_proportion < 1.0) {
            errs.push(
                "em.initial_match_proportion: must be between 0 and 1 (exclusive)".to_owned(),
            );
        }
        if self.fields.is_empty() {
            errs.push("fields: at least one field is required".to_owned());
        }
        if self.fields.len() > MAX_FIELDS {
            errs.push(format!("fields: at most {MAX_FIELDS} fields are supported"));
        }
        for (i, field) in self.fields.iter().enumerate() {
            validate_field(i, field, &mut errs);
            if field.name == self.id_column {
                errs.push(format!(
                    "fields[{i}].name: \"{}\" is the id_column",
                    field.name
                ));
            }
            if self.fields[..i].iter().any(|f| f.name == field.name) {
                errs.push(format!(
                    "fields[{i}].name: field \"{}\" is defined twice",
                    field.name
                ));
            }
        }
        for (r, rule) in self.blocking.iter().enumerate() {
            if rule.is_empty() {
                errs.push(format!("blocking[{r}]: a rule needs at least one key part"));
            }
            for (p, part) in rule.iter().enumerate() {
                if let Err(msg) = self.parse_key_part(part) {
                    errs.push(format!("blocking[{r}][{p}]: {msg}"));
                }
            }
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    pub(crate) fn parse_key_part(&self, part: &str) -> Result<KeyPart, String> {
        let mut pieces = part.split(':');
        let name = pieces.next().unwrap_or_default();
        let field = self
            .fields
            .iter()
            .position(|f| f.name == name)
            .ok_or_else(|| format!("unknown field \"{name}\""))?;
        let mut transforms = Vec::new();
        for t in pieces {
            transforms.push(Transform::parse(t).ok_or_else(|| {
                format!(
                    "unknown transform \"{t}\" (expected value, firstN, lastN, soundex, year, digits, local or domain)"
                )
            })?);
        }
        Ok(KeyPart { field, transforms })
    }

    pub(crate) fn blocking_rules(&self) -> Vec<Vec<KeyPart>> {
        self.blocking
            .iter()
            .map(|rule| {
                rule.iter()
                    .filter_map(|p| self.parse_key_part(p).ok())
                    .collect()
            })
            .collect()
    }
}

fn validate_field(i: usize, field: &FieldConfig, errs: &mut Vec<String>) {
    let key = |k: &str| format!("fields[{i}].{k}");
    if field.name.trim().is_empty() {
        errs.push(format!("{}: must not be empty", key("name")));
    }
    let Some(kind) = ComparatorKind::parse(&field.comparator) else {
        errs.push(format!(
            "{}: unknown comparator \"{}\" (expected exact, jaro_winkler, levenshtein, date or numeric)",
            key("comparator"),
            field.comparator
        ));
        return;
    };
    match kind {
        ComparatorKind::Exact | ComparatorKind::Date => {
            if !field.levels.is_empty() {
                errs.push(format!(
                    "{}: the {} comparator has fixed levels; remove this key",
                    key("levels"),
                    field.comparator
                ));
            }
        }
        ComparatorKind::JaroWinkler | ComparatorKind::Levenshtein => {
            if field.levels.iter().any(|t| !(*t > 0.0 && *t <= 1.0)) {
                errs.push(format!(
                    "{}: similarity thresholds must be in (0, 1]",
                    key("levels")
                ));
            }
            if field.levels.windows(2).any(|w| w[0] <= w[1]) {
                errs.push(format!(
                    "{}: similarity thresholds must be strictly decreasing",
                    key("levels")
                ));
            }
        }
        ComparatorKind::Numeric => {
            if field.levels.iter().any(|t| !(*t >= 0.0 && t.is_finite())) {
                errs.push(format!(
                    "{}: tolerances must be non-negative numbers",
                    key("levels")
                ));
            }
            if field.levels.windows(2).any(|w| w[0] >= w[1]) {
                errs.push(format!(
                    "{}: tolerances must be strictly increasing",
                    key("levels")
                ));
            }
        }
    }
    if field.nicknames && !kind.is_text() {
        errs.push(format!(
            "{}: only exact, jaro_winkler and levenshtein fields can use nicknames",
            key("nicknames")
        ));
    }
    if field.relative && kind != ComparatorKind::Numeric {
        errs.push(format!(
            "{}: only numeric fields can be relative",
            key("relative")
        ));
    }
    if Normalize::parse(field.normalize.as_deref()).is_none() {
        errs.push(format!(
            "{}: unknown normalization \"{}\" (expected text, alnum or digits)",
            key("normalize"),
            field.normalize.as_deref().unwrap_or_default()
        ));
    }
    let labels = field.level_labels();
    if labels.len() > MAX_LEVELS {
        errs.push(format!(
            "{}: at most {MAX_LEVELS} levels (including exact and else) are supported",
            key("levels")
        ));
    }
    match (&field.m, &field.u) {
        (None, None) => {}
        (Some(_), None) | (None, Some(_)) => {
            errs.push(format!("{}: m and u must be given together", key("m")));
        }
        (Some(m), Some(u)) => {
            for (name, probs) in [("m", m), ("u", u)] {
                if probs.len() != labels.len() {
                    errs.push(format!(
                        "{}: expected {} probabilities (levels {}), found {}",
                        key(name),
                        labels.len(),
                        labels.join(", "),
                        probs.len()
                    ));
                } else if probs.iter().any(|p| !(*p > 0.0 && *p < 1.0)) {
                    errs.push(format!(
                        "{}: probabilities must be between 0 and 1 (exclusive)",
                        key(name)
                    ));
                } else if (probs.iter().sum::<f64>() - 1.0).abs() > 1e-3 {
                    errs.push(format!("{}: probabilities must sum to 1", key(name)));
                }
            }
        }
    }
}

impl FieldConfig {
    /// Labels of this field's agreement levels, from strongest to weakest; the last is always
    /// `else` (disagreement). Fixed `m` and `u` lists follow this order.
    ///
    /// * `exact`: `exact`, [`nickname`], `else`
    /// * `jaro_winkler` / `levenshtein` with `levels = [a, b]`: `exact`, `jw>=a` / `lev>=a`,
    ///   `jw>=b` / `lev>=b`, [`nickname`], `else`
    /// * `date`: `exact`, `transposed_day_month`, `one_digit`, `same_year`, `else`
    /// * `numeric` with `levels = [a, b]`: `exact`, `within_a`, `within_b`, `else`
    pub fn level_labels(&self) -> Vec<String> {
        let mut labels = vec!["exact".to_owned()];
        match ComparatorKind::parse(&self.comparator) {
            Some(ComparatorKind::JaroWinkler) => {
                labels.extend(self.levels.iter().map(|t| format!("jw>={t}")));
            }
            Some(ComparatorKind::Levenshtein) => {
                labels.extend(self.levels.iter().map(|t| format!("lev>={t}")));
            }
            Some(ComparatorKind::Date) => {
                labels
                    .extend(["transposed_day_month", "one_digit", "same_year"].map(str::to_owned));
            }
            Some(ComparatorKind::Numeric) => {
                labels.extend(self.levels.iter().map(|t| format!("within_{t}")));
            }
            Some(ComparatorKind::Exact) | None => {}
        }
        if self.nicknames {
            labels.push("nickname".to_owned());
        }
        labels.push("else".to_owned());
        labels
    }

    pub(crate) fn kind(&self) -> ComparatorKind {
        ComparatorKind::parse(&self.comparator).unwrap_or(ComparatorKind::Exact)
    }

    pub(crate) fn normalization(&self) -> Normalize {
        Normalize::parse(self.normalize.as_deref()).unwrap_or(Normalize::Text)
    }
}
