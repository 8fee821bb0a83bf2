//! The in-memory API: [`Matcher`].

use std::collections::HashMap;
use std::hash::Hasher;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;

use crate::MatchError;
use crate::blocking::{Blocking, BlockingStats, candidate_pairs};
use crate::cluster::{UnionFind, cluster_ids};
use crate::config::{EmConfig, KeyPart, MatchConfig};
use crate::em::{self, bound};
use crate::model::{FieldComparator, FieldParameters, Levels, Parameters, compare_records};
use crate::prepared::{FxBuild, FxHasher, Prepared, PreparedBuilder};

/// One record to match: an id and one optional value per configured field, in the order of
/// [`MatchConfig::fields`]. `None` and blank strings are missing values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchRecord {
    /// Unique record id.
    pub id: String,
    /// Field values in configuration order.
    pub fields: Vec<Option<String>>,
}

/// A compared pair of records (indices into the slice given to the matcher, `left < right`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredPair {
    /// Index of the first record.
    pub left: usize,
    /// Index of the second record.
    pub right: usize,
    /// Match weight: sum over fields of log2(m/u) of the field's level.
    pub weight: f64,
    /// Agreement level of each field.
    pub levels: Levels,
}

/// What the thresholds say about a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// At or above `upper_threshold`: merge automatically.
    Merge,
    /// In `[lower_threshold, upper_threshold)`: ask a person.
    Review,
    /// Below `lower_threshold`: different entities.
    Distinct,
}

/// A pair for the review queue.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewPair {
    /// Id of the first record.
    pub left_id: String,
    /// Id of the second record.
    pub right_id: String,
    /// Match weight.
    pub weight: f64,
    /// Agreement level of each field (labels: [`Parameters::fields`]).
    pub levels: Levels,
    /// True when the weight reached `upper_threshold` but the merge was refused by
    /// `max_cluster_size`.
    pub refused_merge: bool,
}

/// Result of [`Matcher::resolve`].
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// Cluster id of every record (the smallest record id of its cluster), in input order.
    pub cluster_ids: Vec<String>,
    /// Number of clusters, singletons included.
    pub clusters: usize,
    /// Pairs at or above `upper_threshold` that were merged.
    pub merged_pairs: u64,
    /// Pairs at or above `upper_threshold` whose merge `max_cluster_size` refused.
    pub refused_merges: u64,
    /// Pairs to review, ordered by record index, not counting pairs whose records ended up in
    /// one cluster anyway.
    pub review: Vec<ReviewPair>,
}

/// What [`Matcher::fit`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct FitReport {
    /// Counters of the blocking step.
    pub blocking: BlockingStats,
    /// Candidate pairs EM ran on (all of them, or a sample of `em.sample_pairs`).
    pub sampled_pairs: u64,
    /// Random record pairs u was initialised from.
    pub random_pairs: u64,
    /// Number of distinct comparison vectors.
    pub patterns: usize,
    /// Largest number of EM iterations over the runs (0 when every field's m/u is fixed).
    pub iterations: u32,
    /// EM iterations of each run: one per blocking rule (or one when there are no rules).
    pub rule_iterations: Vec<u32>,
    /// Fields whose m could not be estimated because every blocking rule blocks on them; they
    /// keep the starting guess. Add a rule that does not use them, or fix their m and u.
    pub unestimated_fields: Vec<String>,
    /// Whether every EM run converged within `em.max_iterations`.
    pub converged: bool,
}

/// Comparison-vector counts for one EM run.
struct EmView {
    /// Fields left out (blocked on by the rule).
    excluded: Vec<bool>,
    /// Distinct packed comparison vectors and their counts, sorted.
    patterns: Vec<(u64, u64)>,
}

fn merge_into(
    mut a: HashMap<u64, u64, FxBuild>,
    b: HashMap<u64, u64, FxBuild>,
) -> HashMap<u64, u64, FxBuild> {
    for (k, v) in b {
        *a.entry(k).or_default() += v;
    }
    a
}

/// Hash threshold keeping about `sample` of `total` pairs.
fn keep_threshold(total: u64, sample: usize) -> u64 {
    if total <= sample as u64 {
        u64::MAX
    } else {
        ((sample as f64 / total as f64) * u64::MAX as f64) as u64
    }
}

/// Deterministic pseudo-random hash of a pair, for sampling.
fn sample_hash(i: u32, j: u32, seed: u64) -> u64 {
    let mut h = FxHasher::default();
    h.write_u64(seed);
    h.write_u64((u64::from(i) << 32) | u64::from(j));
    h.finish()
}

/// Internal result of resolving prepared records.
pub(crate) struct Resolved {
    /// Per record, the index of the record whose id is its cluster id.
    pub(crate) cluster_of: Vec<u32>,
    pub(crate) clusters: usize,
    pub(crate) merged_pairs: u64,
    pub(crate) refused_merges: u64,
    /// `(left, right, weight, packed levels, refused)`.
    pub(crate) review: Vec<(u32, u32, f64, u64, bool)>,
}

/// A configured matcher: blocking, comparison, m/u estimation, scoring and clustering.
///
/// ```
/// use trib_match::{MatchConfig, MatchRecord, Matcher};
///
/// let config = MatchConfig::from_toml_str(r#"
///     id_column = "id"
///     upper_threshold = 6.0
///     lower_threshold = 0.0
///     blocking = [["last:soundex"]]
///     [[fields]]
///     name = "first"
///     comparator = "jaro_winkler"
///     levels = [0.9]
///     nicknames = true
///     m = [0.85, 0.07, 0.05, 0.03]
///     u = [0.01, 0.02, 0.001, 0.969]
///     [[fields]]
///     name = "last"
///     comparator = "jaro_winkler"
///     levels = [0.85]
///     m = [0.9, 0.07, 0.03]
///     u = [0.01, 0.02, 0.97]
/// "#).unwrap();
/// let rec = |id: &str, first: &str, last: &str| MatchRecord {
///     id: id.into(),
///     fields: vec![Some(first.into()), Some(last.into())],
/// };
/// let records = [rec("1", "William", "Smith"), rec("2", "Bill", "Smyth"), rec("3", "Ann", "Jones")];
/// let matcher = Matcher::new(config).unwrap(); // m and u are fixed: no fit() needed
/// let resolution = matcher.resolve(&records).unwrap();
/// assert_eq!(resolution.cluster_ids, ["1", "1", "3"]);
/// ```
#[derive(Debug, Clone)]
pub struct Matcher {
    config: MatchConfig,
    comparators: Vec<FieldComparator>,
    rules: Vec<Vec<KeyPart>>,
    params: Option<Parameters>,
}

impl Matcher {
    /// Validates `config` and builds a matcher. When every field has fixed `m` and `u`, the
    /// matcher is ready to score; otherwise call [`Matcher::fit`] first.
    pub fn new(config: MatchConfig) -> Result<Self, MatchError> {
        config.validate().map_err(MatchError::Config)?;
        let comparators = config.fields.iter().map(FieldComparator::new).collect();
        let rules = config.blocking_rules();
        let params = config
            .fields
            .iter()
            .all(|f| f.m.is_some())
            .then(|| Parameters {
                fields: config
                    .fields
                    .iter()
                    .map(|f| FieldParameters {
                        name: f.name.clone(),
                        labels: f.level_labels(),
                        m: f.m.clone().unwrap_or_default(),
                        u: f.u.clone().unwrap_or_default(),
                        fixed: true,
                    })
                    .collect(),
                match_proportion: None,
            });
        Ok(Matcher {
            config,
            comparators,
            rules,
            params,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MatchConfig {
        &self.config
    }

    /// The current m/u parameters, if fitted or fixed.
    pub fn parameters(&self) -> Option<&Parameters> {
        self.params.as_ref()
    }

    /// Installs parameters saved from an earlier fit. They must have the configured fields
    /// and level counts.
    pub fn set_parameters(&mut self, params: Parameters) -> Result<(), MatchError> {
        let mut problems = Vec::new();
        if params.fields.len() != self.config.fields.len() {
            problems.push(format!(
                "parameters: {} fields, the configuration has {}",
                params.fields.len(),
                self.config.fields.len()
            ));
        }
        for (i, (p, cmp)) in params.fields.iter().zip(&self.comparators).enumerate() {
            let n = usize::from(cmp.levels);
            if p.m.len() != n || p.u.len() != n {
                problems.push(format!("parameters.fields[{i}]: expected {n} levels"));
            }
        }
        if !problems.is_empty() {
            return Err(MatchError::Config(problems));
        }
        self.params = Some(params);
        Ok(())
    }

    /// What the thresholds say about `weight`.
    pub fn decide(&self, weight: f64) -> Decision {
        if weight >= self.config.upper_threshold {
            Decision::Merge
        } else if weight >= self.config.lower_threshold {
            Decision::Review
        } else {
            Decision::Distinct
        }
    }

    /// Estimates m and u by EM on the candidate pairs of `records` (fields with fixed m/u keep
    /// them).
    pub fn fit(&mut self, records: &[MatchRecord]) -> Result<FitReport, MatchError> {
        let prepared = self.prepare(records)?;
        let blocking = self.block(&prepared);
        let gammas = self.compare_all(&prepared, &blocking.pairs);
        Ok(self.fit_prepared(&prepared, &blocking, &gammas))
    }

    /// Candidate pairs of `records` (by blocking), as index pairs `left < right`, sorted.
    pub fn candidate_pairs(
        &self,
        records: &[MatchRecord],
    ) -> Result<Vec<(usize, usize)>, MatchError> {
        let prepared = self.prepare(records)?;
        Ok(self
            .block(&prepared)
            .pairs
            .into_iter()
            .map(|(a, b)| (a as usize, b as usize))
            .collect())
    }

    /// Scores every candidate pair of `records`. Needs parameters (fitted or fixed).
    pub fn score_pairs(&self, records: &[MatchRecord]) -> Result<Vec<ScoredPair>, MatchError> {
        let params = self.require_params()?;
        let table = params.weight_table();
        let prepared = self.prepare(records)?;
        let pairs = self.block(&prepared).pairs;
        let gammas = self.compare_all(&prepared, &pairs);
        let fields = self.config.fields.len();
        Ok(pairs
            .iter()
            .zip(gammas)
            .map(|(&(a, b), g)| ScoredPair {
                left: a as usize,
                right: b as usize,
                weight: table.weight(g),
                levels: Levels::from_packed(g, fields),
            })
            .collect())
    }

    /// Compares two records directly, without blocking. Indices in the result are 0 and 1.
    pub fn compare(&self, a: &MatchRecord, b: &MatchRecord) -> Result<ScoredPair, MatchError> {
        let params = self.require_params()?;
        let prepared = self.prepare(&[a.clone(), b.clone()])?;
        let g = compare_records(&self.comparators, &prepared, 0, 1);
        let levels = Levels::from_packed(g, self.config.fields.len());
        Ok(ScoredPair {
            left: 0,
            right: 1,
            weight: params.weight(levels),
            levels,
        })
    }

    /// Blocks, scores and clusters `records`: pairs at or above `upper_threshold` are merged
    /// (transitively), pairs in `[lower_threshold, upper_threshold)` are listed for review.
    pub fn resolve(&self, records: &[MatchRecord]) -> Result<Resolution, MatchError> {
        let prepared = self.prepare(records)?;
        let pairs = self.block(&prepared).pairs;
        let gammas = self.compare_all(&prepared, &pairs);
        let resolved = self.resolve_prepared(&prepared, &pairs, &gammas)?;
        let fields = self.config.fields.len();
        Ok(Resolution {
            cluster_ids: resolved
                .cluster_of
                .iter()
                .map(|&c| records[c as usize].id.clone())
                .collect(),
            clusters: resolved.clusters,
            merged_pairs: resolved.merged_pairs,
            refused_merges: resolved.refused_merges,
            review: resolved
                .review
                .iter()
                .map(|&(a, b, weight, g, refused_merge)| ReviewPair {
                    left_id: records[a as usize].id.clone(),
                    right_id: records[b as usize].id.clone(),
                    weight,
                    levels: Levels::from_packed(g, fields),
                    refused_merge,
                })
                .collect(),
        })
    }

    fn require_params(&self) -> Result<&Parameters, MatchError> {
        self.params.as_ref().ok_or_else(|| {
            let field = self
                .config
                .fields
                .iter()
                .find(|f| f.m.is_none())
                .map(|f| f.name.clone())
                .unwrap_or_default();
            MatchError::NotFitted(field)
        })
    }

    fn prepare(&self, records: &[MatchRecord]) -> Result<Prepared, MatchError> {
        if records.len() >= u32::MAX as usize {
            return Err(MatchError::TooManyRecords(records.len()));
        }
        let expected = self.config.fields.len();
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(records.len());
        let mut builder = PreparedBuilder::new(&self.config.fields);
        builder.reserve(records.len());
        for (i, rec) in records.iter().enumerate() {
            if rec.fields.len() != expected {
                return Err(MatchError::RecordShape {
                    id: rec.id.clone(),
                    expected,
                    found: rec.fields.len(),
                });
            }
            if let Some(first) = seen.insert(&rec.id, i) {
                return Err(MatchError::DuplicateRecord {
                    id: rec.id.clone(),
                    first,
                    second: i,
                });
            }
            builder.push(rec.id.clone(), rec.fields.iter().map(Option::as_deref));
        }
        Ok(builder.finish())
    }

    pub(crate) fn builder(&self) -> PreparedBuilder {
        PreparedBuilder::new(&self.config.fields)
    }

    pub(crate) fn block(&self, prepared: &Prepared) -> Blocking {
        if self.rules.is_empty() {
            // No blocking: every pair (only sensible for small inputs).
            let n = prepared.len() as u32;
            let pairs: Vec<(u32, u32)> = (0..n)
                .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
                .collect();
            let count = pairs.len() as u64;
            let stats = BlockingStats {
                block_pairs: count,
                candidate_pairs: count,
                ..BlockingStats::default()
            };
            return Blocking {
                pairs,
                rules: Vec::new(),
                stats,
            };
        }
        candidate_pairs(prepared, &self.rules, self.config.max_block_size)
    }

    pub(crate) fn compare_all(&self, prepared: &Prepared, pairs: &[(u32, u32)]) -> Vec<u64> {
        pairs
            .par_iter()
            .with_min_len(4096)
            .map(|&(a, b)| compare_records(&self.comparators, prepared, a as usize, b as usize))
            .collect()
    }

    pub(crate) fn fit_prepared(
        &mut self,
        prepared: &Prepared,
        blocking: &Blocking,
        gammas: &[u64],
    ) -> FitReport {
        let em_cfg = self.config.em.clone();
        let mut rng = StdRng::seed_from_u64(em_cfg.seed);
        let levels: Vec<u8> = self.comparators.iter().map(|c| c.levels).collect();
        let fields = levels.len();

        // u from level frequencies among random record pairs (almost all non-matches).
        let n = prepared.len();
        let random: Vec<(u32, u32)> = if n >= 2 {
            (0..em_cfg.random_pairs)
                .map(|_| {
                    let i = rng.random_range(0..n);
                    let mut j = rng.random_range(0..n - 1);
                    if j >= i {
                        j += 1;
                    }
                    (i as u32, j as u32)
                })
                .collect()
        } else {
            Vec::new()
        };
        let random_gammas = self.compare_all(prepared, &random);
        let u_random = em::frequencies(&random_gammas, &levels);

        let fixed: Vec<bool> = self.config.fields.iter().map(|f| f.m.is_some()).collect();
        let m0: Vec<Vec<f64>> = self
            .config
            .fields
            .iter()
            .zip(&levels)
            .map(|(f, &l)| match &f.m {
                Some(m) => {
                    let mut m = m.clone();
                    bound(&mut m);
                    m
                }
                None => em::initial_m(l),
            })
            .collect();
        let u0: Vec<Vec<f64>> = self
            .config
            .fields
            .iter()
            .zip(u_random)
            .map(|(f, u)| match &f.u {
                Some(fixed_u) => {
                    let mut fixed_u = fixed_u.clone();
                    bound(&mut fixed_u);
                    fixed_u
                }
                None => u,
            })
            .collect();

        // One EM per blocking rule, on the pairs of its blocks, with the fields the rule
        // blocks on left out: inside a block those fields agree by construction, so they
        // carry no information about m and would make the non-matches look like matches.
        let views = self.em_views(blocking, gammas, &em_cfg);
        let all_fixed = fixed.iter().all(|&f| f);
        let mut m_sum: Vec<Vec<f64>> = levels.iter().map(|&l| vec![0.0; usize::from(l)]).collect();
        let mut u_sum = m_sum.clone();
        let mut m_weight = vec![0.0; fields];
        let mut u_weight = vec![0.0; fields];
        let mut rule_iterations = Vec::new();
        let mut converged = true;
        let mut sampled = 0u64;
        let mut patterns_total = 0usize;
        let mut matched = 0.0;
        let mut total = 0.0;
        for view in &views {
            let pairs_in_view: u64 = view.patterns.iter().map(|&(_, c)| c).sum();
            sampled += pairs_in_view;
            patterns_total += view.patterns.len();
            if all_fixed || pairs_in_view == 0 {
                rule_iterations.push(0);
                continue;
            }
            let frozen: Vec<bool> = (0..fields).map(|f| fixed[f] || view.excluded[f]).collect();
            let out = em::estimate(
                &view.patterns,
                &levels,
                m0.clone(),
                u0.clone(),
                &frozen,
                em_cfg.update_u,
                &em_cfg,
            );
            rule_iterations.push(out.iterations);
            converged &= out.converged;
            let pairs = pairs_in_view as f64;
            matched += out.lambda * pairs;
            total += pairs;
            for f in (0..fields).filter(|&f| !frozen[f]) {
                let (wm, wu) = (out.lambda * pairs, (1.0 - out.lambda) * pairs);
                for l in 0..m_sum[f].len() {
                    m_sum[f][l] += wm * out.m[f][l];
                    u_sum[f][l] += wu * out.u[f][l];
                }
                m_weight[f] += wm;
                u_weight[f] += wu;
            }
        }
        let mut unestimated = Vec::new();
        let mut m_final = m0;
        let mut u_final = u0;
        for f in (0..fields).filter(|&f| !fixed[f]) {
            if m_weight[f] > 0.0 {
                let mut m: Vec<f64> = m_sum[f].iter().map(|x| x / m_weight[f]).collect();
                bound(&mut m);
                m_final[f] = m;
                if em_cfg.update_u && u_weight[f] > 0.0 {
                    let mut u: Vec<f64> = u_sum[f].iter().map(|x| x / u_weight[f]).collect();
                    bound(&mut u);
                    u_final[f] = u;
                }
            } else {
                unestimated.push(self.config.fields[f].name.clone());
            }
        }
        self.params = Some(Parameters {
            fields: self
                .config
                .fields
                .iter()
                .zip(m_final)
                .zip(u_final)
                .map(|((f, m), u)| FieldParameters {
                    name: f.name.clone(),
                    labels: f.level_labels(),
                    m,
                    u,
                    fixed: f.m.is_some(),
                })
                .collect(),
            match_proportion: (!all_fixed && total > 0.0).then(|| matched / total),
        });
        FitReport {
            blocking: blocking.stats.clone(),
            sampled_pairs: sampled,
            random_pairs: random.len() as u64,
            patterns: patterns_total,
            iterations: rule_iterations.iter().copied().max().unwrap_or(0),
            rule_iterations,
            converged,
            unestimated_fields: unestimated,
        }
    }

    /// Comparison-vector counts for each EM run: one per blocking rule (pairs of the rule's
    /// blocks, sampled down to `em.sample_pairs`, fields of the rule masked as missing), or one
    /// over all candidate pairs when there are no rules.
    fn em_views(&self, blocking: &Blocking, gammas: &[u64], em_cfg: &EmConfig) -> Vec<EmView> {
        let fields = self.config.fields.len();
        let merge = |a: HashMap<u64, u64, FxBuild>, b: HashMap<u64, u64, FxBuild>| {
            if a.len() < b.len() {
                merge_into(b, a)
            } else {
                merge_into(a, b)
            }
        };
        let sorted = |counts: HashMap<u64, u64, FxBuild>| {
            let mut patterns: Vec<(u64, u64)> = counts.into_iter().collect();
            patterns.sort_unstable();
            patterns
        };
        if blocking.rules.is_empty() {
            let keep = keep_threshold(gammas.len() as u64, em_cfg.sample_pairs);
            let counts = blocking
                .pairs
                .par_iter()
                .zip(gammas)
                .fold(
                    HashMap::default,
                    |mut acc: HashMap<u64, u64, FxBuild>, (&(i, j), &g)| {
                        if sample_hash(i, j, em_cfg.seed) <= keep {
                            *acc.entry(g).or_default() += 1;
                        }
                        acc
                    },
                )
                .reduce(HashMap::default, merge);
            return vec![EmView {
                excluded: vec![false; fields],
                patterns: sorted(counts),
            }];
        }
        self.rules
            .iter()
            .zip(&blocking.rules)
            .map(|(rule, rb)| {
                let mut excluded = vec![false; fields];
                let mut mask = 0u64;
                for part in rule {
                    excluded[part.field] = true;
                    mask |= 0xf << (4 * part.field);
                }
                let in_blocks: u64 = rb
                    .blocks
                    .iter()
                    .map(|&(s, e)| ((e - s) * (e - s - 1) / 2) as u64)
                    .sum();
                let keep = keep_threshold(in_blocks, em_cfg.sample_pairs);
                let counts = rb
                    .blocks
                    .par_iter()
                    .fold(
                        HashMap::default,
                        |mut acc: HashMap<u64, u64, FxBuild>, &(s, e)| {
                            let block = &rb.members[s..e];
                            for (x, &i) in block.iter().enumerate() {
                                for &j in &block[x + 1..] {
                                    let pair = (i.min(j), i.max(j));
                                    if sample_hash(pair.0, pair.1, em_cfg.seed) > keep {
                                        continue;
                                    }
                                    if let Ok(k) = blocking.pairs.binary_search(&pair) {
                                        *acc.entry(gammas[k] | mask).or_default() += 1;
                                    }
                                }
                            }
                            acc
                        },
                    )
                    .reduce(HashMap::default, merge);
                EmView {
                    excluded,
                    patterns: sorted(counts),
                }
            })
            .collect()
    }

    pub(crate) fn resolve_prepared(
        &self,
        prepared: &Prepared,
        pairs: &[(u32, u32)],
        gammas: &[u64],
    ) -> Result<Resolved, MatchError> {
        let params = self.require_params()?;
        let table = params.weight_table();
        let upper = self.config.upper_threshold;
        let lower = self.config.lower_threshold;
        let weights: Vec<f64> = gammas
            .par_iter()
            .with_min_len(4096)
            .map(|&g| table.weight(g))
            .collect();
        let mut merges: Vec<usize> = (0..pairs.len()).filter(|&k| weights[k] >= upper).collect();
        let cap = self.config.max_cluster_size;
        if cap.is_some() {
            // Strongest evidence first, so that the cap refuses the weakest links.
            merges.sort_by(|&x, &y| {
                weights[y]
                    .total_cmp(&weights[x])
                    .then(pairs[x].cmp(&pairs[y]))
            });
        }
        let mut uf = UnionFind::new(prepared.len());
        let mut refused = Vec::new();
        for &k in &merges {
            let (a, b) = pairs[k];
            if !uf.union_capped(a, b, cap) {
                refused.push(k);
            }
        }
        let mut review: Vec<(u32, u32, f64, u64, bool)> = Vec::new();
        for (k, &(a, b)) in pairs.iter().enumerate() {
            let w = weights[k];
            if w >= lower && w < upper && uf.find(a) != uf.find(b) {
                review.push((a, b, w, gammas[k], false));
            }
        }
        for &k in &refused {
            let (a, b) = pairs[k];
            if uf.find(a) != uf.find(b) {
                review.push((a, b, weights[k], gammas[k], true));
            }
        }
        review.sort_by_key(|r| (r.0, r.1));
        let cluster_of = cluster_ids(&mut uf, &prepared.ids);
        let clusters = cluster_of
            .iter()
            .enumerate()
            .filter(|&(i, &c)| i == c as usize)
            .count();
        Ok(Resolved {
            cluster_of,
            clusters,
            merged_pairs: (merges.len() - refused.len()) as u64,
            refused_merges: refused.len() as u64,
            review,
        })
    }
}
