//! Fault injection: per-request probabilities drawn from a seeded RNG.
//!
//! Every API request that passes the real limits and authentication draws the same three
//! values (outcome, auxiliary, sub-seed) whatever the probabilities, so a sequence of
//! requests sent one after another meets the same faults for the same seed.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// Fault probabilities, each per request in `0..=1`. Faults that answer at once (throttle,
/// server error, timeout, reset) are exclusive and checked in that order; `partial` and
/// `not_applied` are drawn separately and applied by the endpoint when it writes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// Answer the kind's 429 (as for a real limit, but counted as injected).
    pub throttle: f64,
    /// Answer 500 or 503 with the kind's error body.
    pub server_error: f64,
    /// Hold the request for `SimConfig::timeout_hold`, then drop the connection.
    pub timeout: f64,
    /// Drop the connection without answering.
    pub reset: f64,
    /// Fail a random subset of the otherwise-valid items without applying them (HubSpot
    /// 207 with `INTERNAL_ERROR`; SendGrid job `errored`; Mailchimp batch operations 500).
    pub partial: f64,
    /// Answer success as if applied, apply nothing.
    pub not_applied: f64,
    /// Seed of the RNG (re-seeded by `Simulator::set_faults`).
    pub seed: u64,
}

/// What one request met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drawn {
    /// No immediate fault; the plan may still hold `partial`/`not_applied`.
    Pass {
        partial: Option<u64>,
        not_applied: bool,
    },
    Throttle,
    ServerError(u16),
    Timeout,
    Reset,
}

/// The configured faults and their RNG.
pub(crate) struct FaultState {
    faults: Faults,
    rng: StdRng,
}

impl FaultState {
    pub(crate) fn new(faults: Faults) -> Self {
        FaultState {
            faults,
            rng: StdRng::seed_from_u64(faults.seed),
        }
    }

    pub(crate) fn draw(&mut self) -> Drawn {
        let outcome: f64 = self.rng.random();
        let aux: f64 = self.rng.random();
        let sub_seed: u64 = self.rng.random();
        let faults = self.faults;
        let mut threshold = faults.throttle;
        if outcome < threshold {
            return Drawn::Throttle;
        }
        threshold += faults.server_error;
        if outcome < threshold {
            return Drawn::ServerError(if sub_seed.is_multiple_of(2) { 500 } else { 503 });
        }
        threshold += faults.timeout;
        if outcome < threshold {
            return Drawn::Timeout;
        }
        threshold += faults.reset;
        if outcome < threshold {
            return Drawn::Reset;
        }
        if aux < faults.partial {
            return Drawn::Pass {
                partial: Some(sub_seed),
                not_applied: false,
            };
        }
        Drawn::Pass {
            partial: None,
            not_applied: aux < faults.partial + faults.not_applied,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_draws() {
        let faults = Faults {
            throttle: 0.2,
            server_error: 0.2,
            reset: 0.1,
            not_applied: 0.3,
            seed: 42,
            ..Faults::default()
        };
        let first: Vec<Drawn> = {
            let mut state = FaultState::new(faults);
            (0..50).map(|_| state.draw()).collect()
        };
        let mut state = FaultState::new(faults);
        let second: Vec<Drawn> = (0..50).map(|_| state.draw()).collect();
        assert_eq!(first, second);
        assert!(first.contains(&Drawn::Throttle));
        assert!(first.contains(&Drawn::Reset));
    }

    #[test]
    fn no_faults_by_default() {
        let mut state = FaultState::new(Faults::default());
        for _ in 0..100 {
            assert_eq!(
                state.draw(),
                Drawn::Pass {
                    partial: None,
                    not_applied: false
                }
            );
        }
    }
}
