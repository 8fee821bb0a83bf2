//! Unsupervised estimation of m and u by expectation-maximisation.
//!
//! The candidate pairs are a mixture of matches and non-matches; with the usual conditional
//! independence assumption (fields agree independently given the match status), EM finds the
//! mixture's parameters. It runs on distinct comparison vectors with their counts, so an
//! iteration costs the number of distinct patterns (thousands), not the number of pairs.

use crate::config::EmConfig;
use crate::model::{LEVEL_MISSING, level_of};

/// Probabilities are kept within [FLOOR, 1 - FLOOR], so that no weight is infinite and EM
/// cannot lock a level at 0.
pub(crate) const FLOOR: f64 = 1e-6;

pub(crate) struct EmOutcome {
    pub(crate) m: Vec<Vec<f64>>,
    pub(crate) u: Vec<Vec<f64>>,
    pub(crate) lambda: f64,
    pub(crate) iterations: u32,
    pub(crate) converged: bool,
}

/// Clamps a distribution into [FLOOR, 1 - FLOOR] and renormalizes it.
pub(crate) fn bound(probs: &mut [f64]) {
    for p in probs.iter_mut() {
        if !p.is_finite() {
            *p = FLOOR;
        }
        *p = p.clamp(FLOOR, 1.0 - FLOOR);
    }
    let sum: f64 = probs.iter().sum();
    for p in probs.iter_mut() {
        *p /= sum;
    }
}

/// Starting m: most mass on exact agreement, some on the intermediate levels, a little on
/// `else`.
pub(crate) fn initial_m(levels: u8) -> Vec<f64> {
    let n = usize::from(levels);
    let mut m = vec![0.0; n];
    if n == 2 {
        m[0] = 0.9;
        m[1] = 0.1;
    } else {
        m[0] = 0.8;
        m[n - 1] = 0.05;
        let middle = 0.15 / (n - 2) as f64;
        for p in &mut m[1..n - 1] {
            *p = middle;
        }
    }
    bound(&mut m);
    m
}

/// Level frequencies over comparison vectors (random record pairs), with add-one smoothing.
pub(crate) fn frequencies(gammas: &[u64], levels: &[u8]) -> Vec<Vec<f64>> {
    levels
        .iter()
        .enumerate()
        .map(|(f, &n)| {
            let mut counts = vec![1.0; usize::from(n)];
            for &g in gammas {
                let l = level_of(g, f);
                if l != LEVEL_MISSING {
                    counts[usize::from(l)] += 1.0;
                }
            }
            let total: f64 = counts.iter().sum();
            let mut probs: Vec<f64> = counts.iter().map(|c| c / total).collect();
            bound(&mut probs);
            probs
        })
        .collect()
}

/// Runs EM over `patterns` (distinct packed comparison vectors and their counts, sorted so
/// that sums are reproducible). Fields with `fixed[f]` keep their starting m and u.
pub(crate) fn estimate(
    patterns: &[(u64, u64)],
    levels: &[u8],
    mut m: Vec<Vec<f64>>,
    mut u: Vec<Vec<f64>>,
    fixed: &[bool],
    update_u: bool,
    cfg: &EmConfig,
) -> EmOutcome {
    let fields = levels.len();
    let mut lambda = cfg.initial_match_proportion;
    let mut iterations = 0;
    let mut converged = false;
    let total: f64 = patterns.iter().map(|&(_, c)| c as f64).sum();
    if total == 0.0 {
        return EmOutcome {
            m,
            u,
            lambda,
            iterations,
            converged: true,
        };
    }
    let mut m_acc: Vec<Vec<f64>> = levels.iter().map(|&n| vec![0.0; usize::from(n)]).collect();
    let mut u_acc = m_acc.clone();
    while iterations < cfg.max_iterations {
        iterations += 1;
        for acc in m_acc.iter_mut().chain(u_acc.iter_mut()) {
            acc.fill(0.0);
        }
        let mut matched = 0.0;
        // E step: posterior match probability of each pattern; accumulate expected counts.
        for &(g, count) in patterns {
            let mut pm = lambda;
            let mut pu = 1.0 - lambda;
            for f in 0..fields {
                let l = level_of(g, f);
                if l != LEVEL_MISSING {
                    pm *= m[f][usize::from(l)];
                    pu *= u[f][usize::from(l)];
                }
            }
            let post = pm / (pm + pu);
            let c = count as f64;
            matched += c * post;
            for f in 0..fields {
                let l = level_of(g, f);
                if l != LEVEL_MISSING {
                    m_acc[f][usize::from(l)] += c * post;
                    u_acc[f][usize::from(l)] += c * (1.0 - post);
                }
            }
        }
        // M step.
        let mut change: f64 = 0.0;
        let new_lambda = (matched / total).clamp(FLOOR, 1.0 - FLOOR);
        change = change.max((new_lambda - lambda).abs());
        lambda = new_lambda;
        for f in 0..fields {
            if fixed[f] {
                continue;
            }
            for (dist, acc, update) in [
                (&mut m[f], &m_acc[f], true),
                (&mut u[f], &u_acc[f], update_u),
            ] {
                if !update {
                    continue;
                }
                let sum: f64 = acc.iter().sum();
                if sum <= 0.0 {
                    continue;
                }
                let mut new: Vec<f64> = acc.iter().map(|a| a / sum).collect();
                bound(&mut new);
                for (old, new) in dist.iter_mut().zip(new) {
                    change = change.max((*old - new).abs());
                    *old = new;
                }
            }
        }
        if change < cfg.tolerance {
            converged = true;
            break;
        }
    }
    EmOutcome {
        m,
        u,
        lambda,
        iterations,
        converged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use std::collections::BTreeMap;

    /// Draws pairs from a known two-field mixture and checks EM finds its parameters.
    #[test]
    fn recovers_a_known_mixture() {
        let true_m = [vec![0.85, 0.1, 0.05], vec![0.9, 0.1]];
        let true_u = [vec![0.02, 0.08, 0.9], vec![0.05, 0.95]];
        let third_m = [0.8, 0.2];
        let third_u = [0.1, 0.9];
        let lambda = 0.2;
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
        let draw = |rng: &mut StdRng, probs: &[f64]| {
            let r: f64 = rng.random();
            let mut acc = 0.0;
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if r < acc {
                    return i as u64;
                }
            }
            probs.len() as u64 - 1
        };
        for _ in 0..200_000 {
            let is_match = rng.random_bool(lambda);
            let (a, b, c) = if is_match {
                (&true_m[0][..], &true_m[1][..], &third_m[..])
            } else {
                (&true_u[0][..], &true_u[1][..], &third_u[..])
            };
            let g = draw(&mut rng, a) | draw(&mut rng, b) << 4 | draw(&mut rng, c) << 8;
            *counts.entry(g).or_default() += 1;
        }
        let patterns: Vec<(u64, u64)> = counts.into_iter().collect();
        let levels = [3u8, 2, 2];
        let m0 = levels.iter().map(|&n| initial_m(n)).collect();
        let u0 = levels
            .iter()
            .map(|&n| vec![1.0 / f64::from(n); usize::from(n)])
            .collect();
        let out = estimate(
            &patterns,
            &levels,
            m0,
            u0,
            &[false; 3],
            true,
            &EmConfig::default(),
        );
        assert!(out.converged);
        assert!((out.lambda - lambda).abs() < 0.02, "lambda {}", out.lambda);
        for (f, (tm, tu)) in true_m.iter().zip(&true_u).enumerate() {
            for l in 0..tm.len() {
                assert!(
                    (out.m[f][l] - tm[l]).abs() < 0.03,
                    "m[{f}][{l}] = {}",
                    out.m[f][l]
                );
                assert!(
                    (out.u[f][l] - tu[l]).abs() < 0.03,
                    "u[{f}][{l}] = {}",
                    out.u[f][l]
                );
            }
        }
    }

    #[test]
    fn bounds_keep_probabilities_off_zero_and_one() {
        let mut p = vec![1.0, 0.0, 0.0];
        bound(&mut p);
        assert!(p.iter().all(|x| (FLOOR * 0.99..1.0).contains(x)));
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
