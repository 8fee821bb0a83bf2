//! Pairwise evaluation of a clustering against ground truth.

use std::collections::HashMap;
use std::io::Read;

use crate::MatchError;
use crate::prepared::FxBuild;

/// Pairwise precision, recall and F1: a pair of records counts as predicted when both are in
/// one cluster, as true when both belong to one entity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairwiseScores {
    /// true_pos / (true_pos + false_pos); 1 when nothing is predicted.
    pub precision: f64,
    /// true_pos / (true_pos + false_neg); 1 when there is nothing to find.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Pairs in one cluster and one entity.
    pub true_pos: u64,
    /// Pairs in one cluster but different entities.
    pub false_pos: u64,
    /// Pairs of one entity split across clusters.
    pub false_neg: u64,
}

impl PairwiseScores {
    /// Scores from pair counts.
    pub fn from_counts(true_pos: u64, false_pos: u64, false_neg: u64) -> Self {
        let ratio = |num: u64, den: u64| {
            if den == 0 {
                1.0
            } else {
                num as f64 / den as f64
            }
        };
        let precision = ratio(true_pos, true_pos + false_pos);
        let recall = ratio(true_pos, true_pos + false_neg);
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        PairwiseScores {
            precision,
            recall,
            f1,
            true_pos,
            false_pos,
            false_neg,
        }
    }
}

fn pairs(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// Reads `(record_id, group)` from a CSV with a header containing both columns.
fn read_groups<R: Read>(
    input: R,
    what: &str,
    id_col: &str,
    group_col: &str,
) -> Result<Vec<(String, String)>, MatchError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(input);
    let header = reader.headers()?.clone();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| MatchError::Evaluate(format!("{what} CSV has no column \"{name}\"")))
    };
    let (ic, gc) = (col(id_col)?, col(group_col)?);
    let mut out = Vec::new();
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record)? {
        let line = record.position().map_or(0, csv::Position::line);
        let (Some(id), Some(group)) = (record.get(ic), record.get(gc)) else {
            return Err(MatchError::Evaluate(format!(
                "{what} CSV line {line}: missing cells"
            )));
        };
        out.push((id.to_owned(), group.to_owned()));
    }
    Ok(out)
}

/// Compares `clusters` (`record_id,cluster_id`, as written by [`dedupe`](crate::dedupe)) with
/// `truth` (`record_id,entity_id`, e.g. the file of [`generate`](crate::generate); other
/// columns are ignored). Counts are exact and computed from the contingency table of
/// (entity, cluster) sizes, so the cost is linear in the number of records. Every record must
/// appear exactly once in each input.
pub fn evaluate<T: Read, C: Read>(truth: T, clusters: C) -> Result<PairwiseScores, MatchError> {
    let truth = read_groups(truth, "truth", "record_id", "entity_id")?;
    let clusters = read_groups(clusters, "clusters", "record_id", "cluster_id")?;
    if truth.len() != clusters.len() {
        return Err(MatchError::Evaluate(format!(
            "truth has {} records, clusters has {}",
            truth.len(),
            clusters.len()
        )));
    }
    let intern = |map: &mut HashMap<String, u32, FxBuild>, key: String| {
        let next = map.len() as u32;
        *map.entry(key).or_insert(next)
    };
    let mut entities: HashMap<String, u32, FxBuild> = HashMap::default();
    let mut record_entity: HashMap<String, u32, FxBuild> = HashMap::default();
    for (id, entity) in truth {
        let e = intern(&mut entities, entity);
        if record_entity.insert(id.clone(), e).is_some() {
            return Err(MatchError::Evaluate(format!(
                "truth lists record \"{id}\" twice"
            )));
        }
    }
    let mut cluster_ids: HashMap<String, u32, FxBuild> = HashMap::default();
    let mut cells: HashMap<(u32, u32), u64, FxBuild> = HashMap::default();
    let mut cluster_sizes: Vec<u64> = Vec::new();
    let mut entity_sizes: Vec<u64> = vec![0; entities.len()];
    let mut seen = 0usize;
    for (id, cluster) in clusters {
        let c = intern(&mut cluster_ids, cluster);
        let Some(e) = record_entity.get_mut(&id) else {
            return Err(MatchError::Evaluate(format!(
                "clusters list record \"{id}\", which is not in truth (or is listed twice)"
            )));
        };
        let entity = *e;
        // Mark as consumed so that a repeated record is caught.
        *e = u32::MAX;
        if entity == u32::MAX {
            return Err(MatchError::Evaluate(format!(
                "clusters list record \"{id}\" twice"
            )));
        }
        seen += 1;
        if cluster_sizes.len() <= c as usize {
            cluster_sizes.resize(c as usize + 1, 0);
        }
        cluster_sizes[c as usize] += 1;
        entity_sizes[entity as usize] += 1;
        *cells.entry((entity, c)).or_default() += 1;
    }
    debug_assert_eq!(seen, record_entity.len());
    let true_pos: u64 = cells.values().map(|&n| pairs(n)).sum();
    let predicted: u64 = cluster_sizes.iter().map(|&n| pairs(n)).sum();
    let actual: u64 = entity_sizes.iter().map(|&n| pairs(n)).sum();
    Ok(PairwiseScores::from_counts(
        true_pos,
        predicted - true_pos,
        actual - true_pos,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_pairs_from_the_contingency_table() {
        // Entities: A = {1,2,3}, B = {4,5}, C = {6}. Clusters: {1,2}, {3,4,5}, {6}.
        let truth = "record_id,entity_id\n1,A\n2,A\n3,A\n4,B\n5,B\n6,C\n";
        let clusters = "record_id,cluster_id\n1,1\n2,1\n3,3\n4,3\n5,3\n6,6\n";
        let s = evaluate(truth.as_bytes(), clusters.as_bytes()).unwrap();
        // Predicted pairs: (1,2), (3,4), (3,5), (4,5): true are (1,2) and (4,5).
        // True pairs: (1,2), (1,3), (2,3), (4,5): found (1,2) and (4,5).
        assert_eq!((s.true_pos, s.false_pos, s.false_neg), (2, 2, 2));
        assert!((s.precision - 0.5).abs() < 1e-12);
        assert!((s.recall - 0.5).abs() < 1e-12);
        assert!((s.f1 - 0.5).abs() < 1e-12);
    }

    #[test]
    fn perfect_and_degenerate_clusterings() {
        let truth = "record_id,entity_id\na,1\nb,1\nc,2\n";
        let perfect = evaluate(
            truth.as_bytes(),
            "record_id,cluster_id\na,a\nb,a\nc,c\n".as_bytes(),
        )
        .unwrap();
        assert_eq!(perfect.f1, 1.0);
        let singletons = evaluate(
            truth.as_bytes(),
            "record_id,cluster_id\na,a\nb,b\nc,c\n".as_bytes(),
        )
        .unwrap();
        assert_eq!((singletons.true_pos, singletons.false_neg), (0, 1));
        assert_eq!(singletons.recall, 0.0);
        assert_eq!(singletons.f1, 0.0);
    }

    #[test]
    fn rejects_inconsistent_inputs() {
        let truth = "record_id,entity_id\na,1\nb,1\n";
        let err = evaluate(
            truth.as_bytes(),
            "record_id,cluster_id\na,a\nz,a\n".as_bytes(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"z\""), "{err}");
        let err = evaluate(
            truth.as_bytes(),
            "record_id,cluster_id\na,a\na,a\n".as_bytes(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("twice"), "{err}");
        let err = evaluate(truth.as_bytes(), "id,cluster\na,a\nb,a\n".as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("record_id"), "{err}");
    }
}
