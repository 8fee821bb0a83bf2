//! The circuit breaker in front of a destination's worker.
//!
//! When an ESP answers no call (every call fails as a whole with a retryable error: a 5xx, a
//! timeout, a reset connection, a refused API key), retrying each record on its own schedule
//! keeps the worker loading, mapping and permitting the same profiles again and again, and
//! takes CPU from the healthy destinations beside it. After [`TRIP_AFTER`] such failures in a
//! row the circuit opens: the worker stops preparing and sending anything (the records stay
//! pending, their retry windows do not run while nothing is attempted) until a probe is due.
//! The probe is one batch of at most [`PROBE_BATCH`] records; an answer from the ESP closes the circuit,
//! another failure opens it again for twice as long (exponential, with jitter, at most
//! [`MAX_OPEN`]).
//!
//! A worker starts half-open: its first call is a probe, so a destination that is down (or
//! misconfigured) when the server starts costs the preparation of one batch, not of the whole
//! backlog, and a healthy one waits one call before its other batches go out in parallel.
//!
//! Throttling (429) does not count: the limiter already waits as the ESP says. Nor do failures
//! of single records inside an answered call: the ESP is up.

use std::time::Duration;

use rand::RngExt;
use tokio::time::Instant;

use crate::connector::ErrorClass;

/// Whole-call failures in a row that open the circuit.
pub const TRIP_AFTER: u32 = 3;
/// Most records in the probe batch sent when the circuit half-opens (fewer when the
/// destination's batches are smaller). Small enough that a failing destination prepares little,
/// large enough that the probe is one full call at every ESP (a HubSpot batch holds 100; a
/// Mailchimp batch above 100 records is one `/batches` call), so a healthy destination's
/// backlog needs no call more than without the probe.
pub const PROBE_BATCH: usize = 500;
/// The longest the circuit stays open before a probe.
pub const MAX_OPEN: Duration = Duration::from_secs(60);

/// What the worker may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Closed: send as usual.
    Closed,
    /// Open: send nothing until the given instant.
    Open(Instant),
    /// Half-open: send one probe of at most [`PROBE_BATCH`] records.
    Probe,
}

/// One destination's circuit.
#[derive(Debug)]
pub struct Breaker {
    base: Duration,
    failures: u32,
    /// Times the circuit opened since it last closed.
    trips: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    /// A half-open circuit (the first call is a probe) whose first opening lasts about `base`
    /// (the destination's retry base).
    pub fn new(base: Duration) -> Self {
        Self {
            base: base.max(Duration::from_millis(10)),
            failures: 0,
            trips: 0,
            open_until: Some(Instant::now()),
        }
    }

    /// What the worker may do at `now`.
    pub fn gate(&self, now: Instant) -> Gate {
        match self.open_until {
            None => Gate::Closed,
            Some(until) if now < until => Gate::Open(until),
            Some(_) => Gate::Probe,
        }
    }

    /// Whether the circuit is open or half-open.
    pub fn is_open(&self) -> bool {
        self.open_until.is_some()
    }

    /// Whether it opened since it last closed (a worker's first probe is half-open without
    /// having tripped).
    pub fn has_tripped(&self) -> bool {
        self.trips > 0
    }

    /// Records one call's result: `None` if the ESP answered it (whatever it said about each
    /// record), else the class of the whole-call failure. Returns `true` when this opened the
    /// circuit (or kept it open after a failed probe).
    pub fn record(&mut self, failure: Option<ErrorClass>, now: Instant) -> bool {
        match failure {
            None => {
                self.failures = 0;
                self.trips = 0;
                self.open_until = None;
                false
            }
            Some(ErrorClass::Transient | ErrorClass::Auth) => {
                self.failures += 1;
                let probing = self.open_until.is_some_and(|until| now >= until);
                if self.failures >= TRIP_AFTER || probing {
                    self.open_until = Some(now + self.open_for());
                    self.trips = self.trips.saturating_add(1);
                    true
                } else {
                    false
                }
            }
            // Throttling is the limiter's; invalid records and fatal errors are dead-lettered
            // at once and say nothing about whether the ESP is up.
            Some(_) => false,
        }
    }

    /// How long the next opening lasts: `base·2^trips`, at most [`MAX_OPEN`], jittered down
    /// to half so that destinations failing together do not probe together.
    fn open_for(&self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.trips.min(16))
            .min(MAX_OPEN);
        let millis = ceiling.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failed_calls_in_a_row_and_an_answer_closes_it() {
        let mut breaker = Breaker::new(Duration::from_secs(1));
        let now = Instant::now();
        assert_eq!(breaker.gate(now), Gate::Probe, "the first call is a probe");
        assert!(!breaker.has_tripped());
        assert!(!breaker.record(None, now));
        assert!(!breaker.record(Some(ErrorClass::Transient), now));
        assert!(!breaker.record(Some(ErrorClass::Auth), now));
        // An answered call in between starts the count again.
        assert!(!breaker.record(None, now));
        assert!(!breaker.record(Some(ErrorClass::Transient), now));
        assert!(!breaker.record(Some(ErrorClass::Transient), now));
        assert_eq!(breaker.gate(now), Gate::Closed);
        assert!(breaker.record(Some(ErrorClass::Transient), now));
        let Gate::Open(until) = breaker.gate(now) else {
            panic!("open after {TRIP_AFTER} failures");
        };
        assert!(until >= now + Duration::from_millis(500) && until <= now + Duration::from_secs(1));
        assert!(breaker.has_tripped());
        assert_eq!(breaker.gate(until), Gate::Probe);
        assert!(!breaker.record(None, until));
        assert_eq!(breaker.gate(until), Gate::Closed);
        assert!(!breaker.is_open() && !breaker.has_tripped());
    }

    #[test]
    fn a_failed_probe_reopens_for_longer_up_to_the_cap() {
        let mut breaker = Breaker::new(Duration::from_secs(1));
        let mut now = Instant::now();
        assert!(
            breaker.record(Some(ErrorClass::Transient), now),
            "a failed first call opens the circuit"
        );
        let mut last = Duration::ZERO;
        for trip in 1..12u32 {
            let Gate::Open(until) = breaker.gate(now) else {
                panic!("open");
            };
            let open = until - now;
            let ceiling = Duration::from_secs(1 << (trip - 1).min(16)).min(MAX_OPEN);
            assert!(
                open >= ceiling / 2 && open <= ceiling,
                "trip {trip}: {open:?}"
            );
            last = open;
            now = until;
            assert_eq!(breaker.gate(now), Gate::Probe);
            assert!(
                breaker.record(Some(ErrorClass::Transient), now),
                "a failed probe opens it again at once"
            );
        }
        assert!(last <= MAX_OPEN);
    }

    #[test]
    fn throttling_and_record_failures_do_not_count() {
        let mut breaker = Breaker::new(Duration::from_secs(1));
        let now = Instant::now();
        breaker.record(None, now);
        for _ in 0..10 {
            breaker.record(Some(ErrorClass::Throttled), now);
            breaker.record(Some(ErrorClass::InvalidRecord), now);
            breaker.record(Some(ErrorClass::Fatal), now);
        }
        assert_eq!(breaker.gate(now), Gate::Closed);
    }
}
