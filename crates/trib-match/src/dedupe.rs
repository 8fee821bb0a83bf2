//! The CSV entry point: [`dedupe`].

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::blocking::BlockingStats;
use crate::matcher::Matcher;
use crate::model::Parameters;
use crate::{MatchConfig, MatchError};

/// Wall-clock time of each phase of [`dedupe`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhaseTimings {
    /// Reading the CSV, normalizing and interning values.
    pub read: Duration,
    /// Building blocking keys and candidate pairs.
    pub blocking: Duration,
    /// Comparing candidate pairs (agreement levels of every field).
    pub compare: Duration,
    /// Estimating m and u (random pairs for u, then EM).
    pub fit: Duration,
    /// Scoring, clustering and building the review list.
    pub cluster: Duration,
    /// Writing the output (and the review file).
    pub write: Duration,
}

impl PhaseTimings {
    /// Sum of all phases.
    pub fn total(&self) -> Duration {
        self.read + self.blocking + self.compare + self.fit + self.cluster + self.write
    }
}

/// What [`dedupe`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct DedupeReport {
    /// Records read.
    pub records: u64,
    /// Pairs inside blocks summed over blocking rules (before removing pairs found twice).
    pub candidate_pairs: u64,
    /// Distinct pairs compared.
    pub pairs_compared: u64,
    /// Blocking counters (oversized blocks skipped, ...).
    pub blocking: BlockingStats,
    /// Pairs at or above `upper_threshold` that were merged.
    pub merges: u64,
    /// Pairs at or above `upper_threshold` refused by `max_cluster_size`.
    pub refused_merges: u64,
    /// Pairs listed for review.
    pub review_pairs: u64,
    /// Clusters, singletons included.
    pub clusters: u64,
    /// EM iterations (0 when m/u are fixed).
    pub em_iterations: u32,
    /// Whether EM converged.
    pub em_converged: bool,
    /// The m/u used, per field and level.
    pub parameters: Parameters,
    /// Time per phase.
    pub timings: PhaseTimings,
}

/// Reads a CSV with a header (columns named like the configured fields, plus `id_column`;
/// other columns are ignored), fits m/u by EM unless fixed, clusters, and writes
/// `record_id,cluster_id` for every record, in input order.
pub fn dedupe<R: Read, W: Write>(
    input: R,
    output: W,
    config: &MatchConfig,
) -> Result<DedupeReport, MatchError> {
    dedupe_with_review(input, output, None::<std::io::Sink>, config)
}

/// [`dedupe`], also writing the review queue as CSV to `review` when given:
/// `left_id,right_id,weight,<field>...` where each field column holds the level label
/// (empty when the value is missing on either side).
pub fn dedupe_with_review<R: Read, W: Write, V: Write>(
    input: R,
    output: W,
    review: Option<V>,
    config: &MatchConfig,
) -> Result<DedupeReport, MatchError> {
    let mut matcher = Matcher::new(config.clone())?;
    let mut timings = PhaseTimings::default();

    let t = Instant::now();
    let prepared = read_csv(input, &matcher, config)?;
    timings.read = t.elapsed();

    let t = Instant::now();
    let blocking = matcher.block(&prepared);
    timings.blocking = t.elapsed();

    let t = Instant::now();
    let gammas = matcher.compare_all(&prepared, &blocking.pairs);
    timings.compare = t.elapsed();

    let t = Instant::now();
    let has_fixed_params = matcher.parameters().is_some();
    let (em_iterations, em_converged) = if has_fixed_params {
        (0, true)
    } else {
        let fit = matcher.fit_prepared(&prepared, &blocking, &gammas);
        (fit.iterations, fit.converged)
    };
    timings.fit = t.elapsed();

    let t = Instant::now();
    let resolved = matcher.resolve_prepared(&prepared, &blocking.pairs, &gammas)?;
    timings.cluster = t.elapsed();

    let t = Instant::now();
    let mut out = csv::Writer::from_writer(output);
    out.write_record(["record_id", "cluster_id"])?;
    for (id, &c) in prepared.ids.iter().zip(&resolved.cluster_of) {
        out.write_record([id.as_str(), prepared.ids[c as usize].as_str()])?;
    }
    out.flush()?;
    let parameters = matcher
        .parameters()
        .cloned()
        .ok_or_else(|| MatchError::NotFitted(String::new()))?;
    if let Some(review) = review {
        let mut w = csv::Writer::from_writer(review);
        let mut header = vec![
            "left_id".to_owned(),
            "right_id".to_owned(),
            "weight".to_owned(),
        ];
        header.extend(config.fields.iter().map(|f| f.name.clone()));
        w.write_record(&header)?;
        let mut row: Vec<String> = Vec::with_capacity(header.len());
        for &(a, b, weight, g, _) in &resolved.review {
            row.clear();
            row.push(prepared.ids[a as usize].clone());
            row.push(prepared.ids[b as usize].clone());
            row.push(format!("{weight:.3}"));
            let levels = crate::Levels::from_packed(g, config.fields.len());
            for (level, field) in levels.iter().zip(&parameters.fields) {
                row.push(level.map_or_else(String::new, |l| field.labels[usize::from(l)].clone()));
            }
            w.write_record(&row)?;
        }
        w.flush()?;
    }
    timings.write = t.elapsed();

    Ok(DedupeReport {
        records: prepared.len() as u64,
        candidate_pairs: blocking.stats.block_pairs,
        pairs_compared: blocking.pairs.len() as u64,
        blocking: blocking.stats,
        merges: resolved.merged_pairs,
        refused_merges: resolved.refused_merges,
        review_pairs: resolved.review.len() as u64,
        clusters: resolved.clusters as u64,
        em_iterations,
        em_converged,
        parameters,
        timings,
    })
}

fn read_csv<R: Read>(
    input: R,
    matcher: &Matcher,
    config: &MatchConfig,
) -> Result<crate::prepared::Prepared, MatchError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(input);
    let header = reader.headers()?.clone();
    for (i, name) in header.iter().enumerate() {
        if header.iter().take(i).any(|h| h == name) {
            return Err(MatchError::DuplicateColumn {
                column: name.to_owned(),
            });
        }
    }
    let find = |column: &str, key: String| {
        header
            .iter()
            .position(|h| h == column)
            .ok_or_else(|| MatchError::MissingColumn {
                column: column.to_owned(),
                key,
            })
    };
    let id_col = find(&config.id_column, "id_column".to_owned())?;
    let field_cols = config
        .fields
        .iter()
        .enumerate()
        .map(|(i, f)| find(&f.name, format!("fields[{i}].name")))
        .collect::<Result<Vec<usize>, _>>()?;

    let mut builder = matcher.builder();
    let mut lines: Vec<u64> = Vec::new();
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record)? {
        let line = record.position().map_or(0, csv::Position::line);
        let id = record.get(id_col).unwrap_or_default();
        if record.len() != header.len() {
            return Err(MatchError::RaggedRow {
                line,
                record: if id.is_empty() {
                    format!("#{}", builder.len() + 1)
                } else {
                    format!("\"{id}\"")
                },
                expected: header.len(),
                found: record.len(),
            });
        }
        let id = id.trim();
        if id.is_empty() {
            return Err(MatchError::EmptyId {
                line,
                column: config.id_column.clone(),
            });
        }
        if builder.len() >= (u32::MAX - 1) as usize {
            return Err(MatchError::TooManyRecords(builder.len() + 1));
        }
        builder.push(id.to_owned(), field_cols.iter().map(|&c| record.get(c)));
        lines.push(line);
    }
    let prepared = builder.finish();
    // Duplicate ids: sort indices by id and look at neighbours.
    let mut order: Vec<u32> = (0..prepared.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| {
        prepared.ids[a as usize]
            .cmp(&prepared.ids[b as usize])
            .then(a.cmp(&b))
    });
    let mut first_dup: Option<(u32, u32)> = None;
    for w in order.windows(2) {
        if prepared.ids[w[0] as usize] == prepared.ids[w[1] as usize]
            && first_dup.is_none_or(|(_, second)| w[1] < second)
        {
            first_dup = Some((w[0], w[1]));
        }
    }
    if let Some((first, second)) = first_dup {
        return Err(MatchError::DuplicateId {
            id: prepared.ids[second as usize].clone(),
            line: lines[second as usize],
            first_line: lines[first as usize],
        });
    }
    Ok(prepared)
}
