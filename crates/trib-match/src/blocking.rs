//! Blocking: which pairs get compared.
//!
//! Each rule maps a record to a key (a hash of its key parts; no key when a part is missing).
//! Records sharing a key form a block and every pair inside a block is a candidate. A pair found
//! by several rules is emitted once, by the first rule that finds it: a pair of rule `r` is
//! skipped when an earlier rule gives both records the same key, which needs no hash set.

use std::hash::Hasher;

use rayon::prelude::*;

use crate::config::{KeyPart, Transform};
use crate::prepared::{FxHasher, Prepared, hash_str};
use crate::text::{Ymd, soundex};

/// Key of a record without a key for a rule.
const NO_KEY: u64 = 0;

/// Counters of a blocking run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockingStats {
    /// Pairs inside blocks, summed over rules (a pair found by two rules counts twice).
    pub block_pairs: u64,
    /// Distinct candidate pairs.
    pub candidate_pairs: u64,
    /// Blocks skipped for exceeding `max_block_size`.
    pub oversized_blocks: u64,
    /// Records in skipped blocks, summed over rules.
    pub oversized_records: u64,
}

/// Applies `transforms` to a normalized value.
pub(crate) fn apply_transforms(value: &str, transforms: &[Transform]) -> Option<String> {
    let mut cur = value.to_owned();
    for t in transforms {
        cur = match *t {
            Transform::Value => cur,
            Transform::First(n) => cur.chars().take(n).collect(),
            Transform::Last(n) => {
                let len = cur.chars().count();
                cur.chars().skip(len.saturating_sub(n)).collect()
            }
            Transform::Soundex => soundex(&cur)?,
            Transform::Year => Ymd::parse(&cur)?.year.to_string(),
            Transform::Digits => cur.chars().filter(char::is_ascii_digit).collect(),
            Transform::Local => cur.split_once('@')?.0.to_owned(),
            Transform::Domain => cur.split_once('@')?.1.to_owned(),
        };
        if cur.is_empty() {
            return None;
        }
    }
    Some(cur)
}

/// Keys of every record for every rule ([`NO_KEY`] when absent).
fn rule_keys(prepared: &Prepared, rules: &[Vec<KeyPart>]) -> Vec<Vec<u64>> {
    // Hash of each distinct key part over each distinct value, computed once.
    let mut parts: Vec<&KeyPart> = Vec::new();
    for part in rules.iter().flatten() {
        if !parts.contains(&part) {
            parts.push(part);
        }
    }
    let part_hashes: Vec<Vec<u64>> = parts
        .par_iter()
        .map(|part| {
            prepared.columns[part.field]
                .values
                .iter()
                .map(|v| {
                    apply_transforms(v, &part.transforms).map_or(NO_KEY, |s| hash_str(&s).max(1))
                })
                .collect()
        })
        .collect();
    rules
        .par_iter()
        .map(|rule| {
            let slots: Vec<usize> = rule
                .iter()
                .map(|p| parts.iter().position(|q| *q == p).unwrap_or(0))
                .collect();
            (0..prepared.len())
                .map(|i| {
                    let mut h = FxHasher::default();
                    for &slot in &slots {
                        let code = prepared.columns[parts[slot].field].codes[i];
                        let part = part_hashes[slot]
                            .get(code as usize)
                            .copied()
                            .unwrap_or(NO_KEY);
                        if part == NO_KEY {
                            return NO_KEY;
                        }
                        h.write_u64(part);
                    }
                    h.finish().max(1)
                })
                .collect()
        })
        .collect()
}

/// The blocks of one rule: record indices sorted by key, and the `(start, end)` ranges of
/// blocks with at least two records and at most `max_block_size`.
#[derive(Debug, Default)]
pub(crate) struct RuleBlocks {
    pub(crate) members: Vec<u32>,
    pub(crate) blocks: Vec<(usize, usize)>,
}

/// Candidate pairs and the blocks they came from.
#[derive(Debug, Default)]
pub(crate) struct Blocking {
    /// Distinct candidate pairs `(i, j)`, `i < j`, sorted.
    pub(crate) pairs: Vec<(u32, u32)>,
    /// Blocks of each rule (empty when there are no rules and every pair is a candidate).
    pub(crate) rules: Vec<RuleBlocks>,
    pub(crate) stats: BlockingStats,
}

/// Runs the blocking rules.
pub(crate) fn candidate_pairs(
    prepared: &Prepared,
    rules: &[Vec<KeyPart>],
    max_block_size: usize,
) -> Blocking {
    let mut stats = BlockingStats::default();
    let mut keys = rule_keys(prepared, rules);
    // Sort each rule's records by key; drop the keys of oversized blocks so that they neither
    // produce pairs nor suppress pairs of later rules.
    let mut blocks_per_rule: Vec<RuleBlocks> = Vec::new();
    for rule_keys in &mut keys {
        let mut order: Vec<(u64, u32)> = rule_keys
            .iter()
            .enumerate()
            .filter(|(_, k)| **k != NO_KEY)
            .map(|(i, &k)| (k, i as u32))
            .collect();
        order.par_sort_unstable();
        let mut blocks = Vec::new();
        let mut start = 0;
        while start < order.len() {
            let key = order[start].0;
            let mut end = start + 1;
            while end < order.len() && order[end].0 == key {
                end += 1;
            }
            let size = end - start;
            if size > max_block_size {
                stats.oversized_blocks += 1;
                stats.oversized_records += size as u64;
                for &(_, i) in &order[start..end] {
                    rule_keys[i as usize] = NO_KEY;
                }
            } else if size > 1 {
                blocks.push((start, end));
                stats.block_pairs += (size * (size - 1) / 2) as u64;
            }
            start = end;
        }
        let members = order.into_iter().map(|(_, i)| i).collect();
        blocks_per_rule.push(RuleBlocks { members, blocks });
    }
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    for (r, rb) in blocks_per_rule.iter().enumerate() {
        let earlier = &keys[..r];
        let found: Vec<(u32, u32)> = rb
            .blocks
            .par_iter()
            .fold(Vec::new, |mut acc, &(start, end)| {
                let block = &rb.members[start..end];
                for (x, &i) in block.iter().enumerate() {
                    for &j in &block[x + 1..] {
                        let (iu, ju) = (i as usize, j as usize);
                        let seen = earlier.iter().any(|k| k[iu] != NO_KEY && k[iu] == k[ju]);
                        if !seen {
                            acc.push((i.min(j), i.max(j)));
                        }
                    }
                }
                acc
            })
            .reduce(Vec::new, |mut a, mut b| {
                if a.len() < b.len() {
                    std::mem::swap(&mut a, &mut b);
                }
                a.extend(b);
                a
            });
        pairs.extend(found);
    }
    pairs.par_sort_unstable();
    stats.candidate_pairs = pairs.len() as u64;
    Blocking {
        pairs,
        rules: blocks_per_rule,
        stats,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transforms() {
        let t = |v: &str, ts: &[Transform]| apply_transforms(v, ts);
        assert_eq!(t("smith", &[Transform::Soundex]).as_deref(), Some("S530"));
        assert_eq!(t("smith", &[Transform::First(2)]).as_deref(), Some("sm"));
        assert_eq!(t("smith", &[Transform::Last(3)]).as_deref(), Some("ith"));
        assert_eq!(t("1980-03-07", &[Transform::Year]).as_deref(), Some("1980"));
        assert_eq!(t("garbage", &[Transform::Year]), None);
        assert_eq!(
            t("(415) 555-0101", &[Transform::Digits, Transform::Last(4)]).as_deref(),
            Some("0101")
        );
        assert_eq!(
            t("ann.lee@mail.com", &[Transform::Local]).as_deref(),
            Some("ann.lee")
        );
        assert_eq!(
            t("ann.lee@mail.com", &[Transform::Domain]).as_deref(),
            Some("mail.com")
        );
        assert_eq!(t("no-at-sign", &[Transform::Local]), None);
        assert_eq!(t("abc", &[Transform::Digits]), None);
    }
}
