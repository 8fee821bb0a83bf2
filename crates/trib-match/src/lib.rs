//! Probabilistic record matching for records that share no identifier: which rows of a CRM
//! export (name, address, date of birth, ...) describe the same person?
//!
//! The crate implements the **Fellegi–Sunter** model with parameters estimated without labels
//! by **expectation–maximisation**, in four steps.
//!
//! 1. **Blocking.** Comparing every pair is quadratic, so a pair is only compared when the two
//!    records share the key of at least one *blocking rule*. A rule is a list of key parts,
//!    `"field"` or `"field:transform[:transform...]"`; a record has no key for a rule when a
//!    part is missing. Transforms apply to the normalized value:
//!
//!    | transform | key part | example |
//!    |---|---|---|
//!    | `value` (also `exact`, `lower`; the default) | the normalized value (trimmed, lowercase) | `Smith` → `smith` |
//!    | `firstN` / `lastN` | first / last N characters | `first3`: `smith` → `smi` |
//!    | `soundex` | American Soundex code | `smyth` → `S530` |
//!    | `year` | year of a date | `1980-03-07` → `1980` |
//!    | `digits` | digits only | `(415) 555-0101` → `4155550101` |
//!    | `local` / `domain` | part before / after the `@` of an email | `ann@x.org` → `ann` |
//!
//!    Transforms chain left to right (`"phone:digits:last4"`). Blocks larger than
//!    `max_block_size` are skipped. A pair found by several rules is compared once.
//!
//! 2. **Comparison.** Each field has a comparator that sorts a pair into one of a few
//!    *agreement levels*, from `exact` to `else` (see [`FieldConfig::level_labels`]):
//!    `exact`; `jaro_winkler` and `levenshtein` (normalized to a similarity) with descending
//!    thresholds, plus an optional `nickname` level from a built-in table
//!    ([`nicknames::NICKNAMES`]: bill ~ william, liz ~ elizabeth); `date` (exact, day and month
//!    transposed, one digit off, same year); `numeric` (absolute or relative tolerances).
//!    A value missing on either side gives the field **no level**: it adds nothing to the
//!    weight, since absence is not evidence of disagreement.
//!
//! 3. **Weights.** For field *f* at level *l*, `m = P(l | match)` and `u = P(l | non-match)`;
//!    the pair's *match weight* is `Σ log2(m/u)` over its non-missing fields, the log2 of the
//!    likelihood ratio under the assumption that fields agree independently given the match
//!    status. m and u are either fixed in the configuration or estimated by EM on (a sample
//!    of) the candidate pairs: u starts from level frequencies among random record pairs
//!    (almost all non-matches), m from a guess favouring agreement; EM alternates the posterior
//!    match probability of each distinct comparison vector with re-estimating m, u and the
//!    match proportion, until no parameter moves by more than `em.tolerance` (or
//!    `em.max_iterations`). Probabilities are kept within `[1e-6, 1 - 1e-6]`.
//!
//! 4. **Decision and clustering.** Pairs weighing at least `upper_threshold` are merged, and
//!    merges are transitive (union–find). Transitivity lets a chain of individually plausible
//!    links join unrelated records, so only above-threshold pairs link (never review pairs),
//!    and with `max_cluster_size` merges are applied strongest first and a merge that would
//!    exceed the cap is refused and sent to review. Pairs in `[lower_threshold,
//!    upper_threshold)` whose records did not end up in one cluster form the review queue. A
//!    cluster's id is the smallest record id (byte order) in it.
//!
//! # Entry points
//!
//! * [`dedupe`] / [`dedupe_with_review`]: CSV in, `record_id,cluster_id` out, with a
//!   [`DedupeReport`].
//! * [`Matcher`]: the same on in-memory [`MatchRecord`]s ([`Matcher::fit`],
//!   [`Matcher::score_pairs`], [`Matcher::resolve`], [`Matcher::compare`]).
//! * [`generate`] writes labelled synthetic person records; [`evaluate`] computes exact pairwise
//!   precision, recall and F1 of a clustering.
//!
//! # Configuration
//!
//! [`MatchConfig`] is the `[identity.matching]` table of `tributary.toml`; unknown keys are
//! rejected and [`MatchConfig::validate`] reports every problem with its key path. A complete
//! example, tuned for [`generate`]'s data, is [`EXAMPLE_CONFIG_TOML`]:
//!
//! ```toml
#![doc = include_str!("../examples/matching.toml")]
//! ```
//!
//! # Privacy
//!
//! Errors and reports name lines, record ids, columns and counts, never field values.

mod blocking;
mod cluster;
mod config;
mod dedupe;
mod em;
mod error;
mod evaluate;
mod generate;
mod matcher;
mod model;
pub mod nicknames;
mod prepared;
mod text;

pub use blocking::BlockingStats;
pub use config::{EXAMPLE_CONFIG_TOML, EmConfig, FieldConfig, MAX_FIELDS, MAX_LEVELS, MatchConfig};
pub use dedupe::{DedupeReport, PhaseTimings, dedupe, dedupe_with_review};
pub use error::MatchError;
pub use evaluate::{PairwiseScores, evaluate};
pub use generate::{GENERATED_COLUMNS, GenerateOptions, GenerateStats, generate};
pub use matcher::{Decision, FitReport, MatchRecord, Matcher, Resolution, ReviewPair, ScoredPair};
pub use model::{FieldParameters, Levels, Parameters};
pub use text::{jaro_winkler, normalized_levenshtein, soundex};
