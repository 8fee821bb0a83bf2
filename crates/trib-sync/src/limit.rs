//! The adaptive limiter in front of one destination's API.
//!
//! Every call first takes a [`Permit`] from the destination's [`Limiter`], which enforces two
//! caps at once:
//!
//! * **concurrency**: at most `concurrency` calls in flight (Mailchimp allows 10 connections
//!   per key). A counter under the same lock as the rate state does the work of a semaphore,
//!   so that the cap can shrink and grow at runtime (a 429 with no documented rate halves it);
//! * **rate**: at most `max` calls per rolling `interval` (HubSpot: 100 per 10 s), kept as a
//!   sliding-window log. A call occupies its slot from the moment it is sent and is stamped
//!   with the time its response **arrived** (the server received it at some instant between
//!   the two), so the log over-counts rather than under-counts what a rolling-window server
//!   sees: it never exceeds the server's limit, and in steady state it reaches it, less the
//!   share of one round trip in the interval (10 ms in 10 s is 0.1%).
//!
//! The limits are seeded from [`Limits`] and adapt to what the ESP says ([`Feedback`]):
//!
//! * rate-limit headers (`X-HubSpot-RateLimit-Max`/`-Remaining`/`-Interval-Milliseconds`,
//!   `X-RateLimit-Limit`/`-Remaining`/`-Reset`) set the advertised ceiling, and a
//!   `Remaining: 0` with a reset time pauses calls until the reset;
//! * `Retry-After` and 429s pause **every** call of the destination until the retry time;
//! * a 429 that was not expected (the call started after the last reaction) is a sign that
//!   the limit is lower than believed: multiplicative decrease (halve the rate cap, or the
//!   concurrency cap when no rate is known). 429s from calls that were already in flight when
//!   the limiter reacted only extend the pause;
//! * after a quiet period (two intervals without a 429), additive increase (a tenth of the
//!   ceiling per quiet period) brings the caps back to the documented or advertised maximum.
//!
//! `governor` was the candidate crate (see the research notes), but it does not fit: its
//! quota is fixed when the limiter is built (adapting means replacing the limiter and losing
//! its state), it is GCRA (a smoothed rate whose burst allowance can exceed a rolling-window
//! server limit at the window's edges), and it has no concurrency cap or pause. The hand-written
//! log is about a hundred lines under one mutex; a destination makes at most a few hundred
//! calls per second, so the lock is not contended.
//!
//! The limiter is per process: several Tributary processes sharing one ESP account would
//! each believe they own the whole limit.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::connector::Limits;

/// How long calls pause after a 429 that names no retry time.
pub const DEFAULT_THROTTLE_PAUSE: Duration = Duration::from_secs(1);

/// The longest pause a header may impose (a bogus reset far in the future must not stall a
/// destination for hours; the engine's retry window handles longer outages).
pub const MAX_PAUSE: Duration = Duration::from_secs(300);

/// One destination's adaptive concurrency and rate limiter. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Limiter {
    shared: Arc<Shared>,
}

/// The right to make one call. Dropping it ends the call (the slot's log entry is stamped
/// with the drop time), so keep it until the whole response has been read.
pub struct Permit {
    shared: Arc<Shared>,
    started: Instant,
}

/// What a response says about the destination's limits, parsed from its status and headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Feedback {
    /// Whether the call was refused with 429.
    pub throttled: bool,
    /// `Retry-After` (seconds or an HTTP date), as a delay from now.
    pub retry_after: Option<Duration>,
    /// The advertised number of calls per window (`X-HubSpot-RateLimit-Max`,
    /// `X-RateLimit-Limit`).
    pub limit: Option<u32>,
    /// Calls left in the current window.
    pub remaining: Option<u32>,
    /// The window's length (`X-HubSpot-RateLimit-Interval-Milliseconds`).
    pub interval: Option<Duration>,
    /// When the current window resets (`X-RateLimit-Reset`, Unix seconds), as a delay.
    pub reset_after: Option<Duration>,
}

/// A point-in-time view of a limiter, for metrics, logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterState {
    /// The current concurrency cap.
    pub concurrency: usize,
    /// The current rate cap (calls per `interval`), `None` when no rate is known.
    pub rate_max: Option<u32>,
    /// The documented or advertised rate the cap returns to.
    pub rate_ceiling: Option<u32>,
    pub interval: Duration,
    /// Calls in flight.
    pub in_flight: usize,
    /// How long calls are paused for from now (zero when not paused).
    pub paused_for: Duration,
}

struct Shared {
    state: Mutex<State>,
    /// Woken when a call ends, a pause is lifted early or a cap grows.
    changed: Notify,
}

struct State {
    concurrency: usize,
    concurrency_ceiling: usize,
    rate_max: Option<u32>,
    rate_ceiling: Option<u32>,
    interval: Duration,
    in_flight: usize,
    /// End times of calls that ended within the last `interval`, oldest first.
    ended: VecDeque<Instant>,
    paused_until: Option<Instant>,
    /// The last decrease: 429s of calls started before it are expected (already reacted to).
    last_decrease: Option<Instant>,
    /// The last decrease or increase: additive increase waits a quiet period after it.
    last_change: Instant,
}

impl Limiter {
    /// A limiter seeded from an ESP's documented limits.
    pub fn new(limits: &Limits) -> Self {
        let concurrency = limits.max_concurrency.max(1);
        let state = State {
            concurrency,
            concurrency_ceiling: concurrency,
            rate_max: limits.rate_max.map(|max| max.max(1)),
            rate_ceiling: limits.rate_max.map(|max| max.max(1)),
            interval: nonzero(limits.rate_interval),
            in_flight: 0,
            ended: VecDeque::new(),
            paused_until: None,
            last_decrease: None,
            last_change: Instant::now(),
        };
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                changed: Notify::new(),
            }),
        }
    }

    /// Waits until a call may start (not paused, under the concurrency cap, a free slot in
    /// the rate window) and takes its slot.
    pub async fn acquire(&self) -> Permit {
        loop {
            // Registered before the state is read, so a wake-up between the check and the
            // wait is not lost.
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wait_until = {
                let mut state = self.shared.lock();
                let now = Instant::now();
                match state.try_start(now) {
                    Ok(()) => {
                        return Permit {
                            shared: self.shared.clone(),
                            started: now,
                        };
                    }
                    Err(wait_until) => wait_until,
                }
            };
            match wait_until {
                Some(deadline) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {}
                        () = &mut changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// Feeds one response's [`Feedback`] to the limiter (see the module doc). `call_started`
    /// is [`Permit::started`] of the call, which tells an expected 429 from a new one.
    pub fn observe(&self, feedback: &Feedback, call_started: Instant) {
        let mut state = self.shared.lock();
        let now = Instant::now();
        if let Some(limit) = feedback.limit.filter(|limit| *limit > 0) {
            if let Some(interval) = feedback.interval.filter(|interval| !interval.is_zero()) {
                state.interval = interval;
            }
            state.rate_ceiling = Some(limit);
            state.rate_max = Some(state.rate_max.map_or(limit, |max| max.min(limit)));
        }
        if feedback.remaining == Some(0)
            && !feedback.throttled
            && let Some(reset) = feedback.reset_after
        {
            state.pause(now, reset);
        }
        if feedback.throttled {
            let pause = feedback
                .retry_after
                .or(feedback.reset_after)
                .unwrap_or(DEFAULT_THROTTLE_PAUSE);
            state.pause(now, pause);
            if state
                .last_decrease
                .is_none_or(|decrease| call_started >= decrease)
            {
                state.decrease(now);
            }
        } else if let Some(retry_after) = feedback.retry_after {
            // A Retry-After on another status (503) asks for the same pause.
            state.pause(now, retry_after);
        }
        drop(state);
        self.shared.changed.notify_waiters();
    }

    /// The current caps and pause.
    pub fn state(&self) -> LimiterState {
        let mut state = self.shared.lock();
        let now = Instant::now();
        state.relax(now);
        LimiterState {
            concurrency: state.concurrency,
            rate_max: state.rate_max,
            rate_ceiling: state.rate_ceiling,
            interval: state.interval,
            in_flight: state.in_flight,
            paused_for: state
                .paused_until
                .map_or(Duration::ZERO, |until| until.saturating_duration_since(now)),
        }
    }
}

impl Permit {
    /// When the call took its slot.
    pub fn started(&self) -> Instant {
        self.started
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        state.ended.push_back(Instant::now());
        drop(state);
        self.shared.changed.notify_waiters();
    }
}

impl Feedback {
    /// Reads a response's status and rate-limit headers. Unparsable headers are ignored.
    pub fn from_response(status: u16, headers: &HeaderMap) -> Self {
        let number = |name: &str| -> Option<u64> {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .and_then(|text| text.trim().parse::<u64>().ok())
        };
        let as_u32 = |value: u64| u32::try_from(value).unwrap_or(u32::MAX);
        let hubspot_max = number("x-hubspot-ratelimit-max").map(as_u32);
        let limit = hubspot_max.or_else(|| number("x-ratelimit-limit").map(as_u32));
        let remaining = number("x-hubspot-ratelimit-remaining")
            .or_else(|| number("x-ratelimit-remaining"))
            .map(as_u32);
        let interval =
            number("x-hubspot-ratelimit-interval-milliseconds").map(Duration::from_millis);
        let reset_after = number("x-ratelimit-reset").map(|epoch_seconds| {
            let reset = UNIX_EPOCH + Duration::from_secs(epoch_seconds);
            reset
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .min(MAX_PAUSE)
        });
        let retry_after = headers
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_retry_after);
        Self {
            throttled: status == 429,
            retry_after,
            limit,
            remaining,
            interval,
            reset_after,
        }
    }
}

/// Parses `Retry-After`: delay seconds, or an HTTP date (a date in the past means now).
pub fn parse_retry_after(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds).min(MAX_PAUSE));
    }
    if let Ok(seconds) = text.parse::<f64>()
        && seconds.is_finite()
        && seconds >= 0.0
    {
        return Some(Duration::from_secs_f64(
            seconds.min(MAX_PAUSE.as_secs_f64()),
        ));
    }
    let when = httpdate::parse_http_date(text).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(MAX_PAUSE),
    )
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counters half-updated in a way
        // that matters more than stalling every call of the destination would.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    /// Takes a slot, or says until when to wait (`None`: until a call ends).
    fn try_start(&mut self, now: Instant) -> Result<(), Option<Instant>> {
        if let Some(until) = self.paused_until {
            if until > now {
                return Err(Some(until));
            }
            self.paused_until = None;
        }
        self.relax(now);
        while let Some(ended) = self.ended.front() {
            if *ended + self.interval <= now {
                self.ended.pop_front();
            } else {
                break;
            }
        }
        if self.in_flight >= self.concurrency {
            return Err(None);
        }
        if let Some(max) = self.rate_max {
            let used = self.in_flight + self.ended.len();
            if used >= max as usize {
                // Full: the oldest ended call leaves the window first. When every slot is
                // in flight, the first call to end frees nothing at once, but wakes us to
                // compute the new deadline.
                return Err(self.ended.front().map(|ended| *ended + self.interval));
            }
        }
        self.in_flight += 1;
        Ok(())
    }

    fn pause(&mut self, now: Instant, pause: Duration) {
        let until = now + pause.min(MAX_PAUSE);
        if self.paused_until.is_none_or(|current| current < until) {
            self.paused_until = Some(until);
        }
    }

    /// Multiplicative decrease after an unexpected 429.
    fn decrease(&mut self, now: Instant) {
        match self.rate_max {
            Some(max) => self.rate_max = Some((max / 2).max(1)),
            None => self.concurrency = (self.concurrency / 2).max(1),
        }
        self.last_decrease = Some(now);
        self.last_change = now;
        tracing::debug!(
            rate_max = ?self.rate_max,
            concurrency = self.concurrency,
            "unexpected 429: limits decreased"
        );
    }

    /// Additive increase towards the ceilings, one step per quiet period.
    fn relax(&mut self, now: Instant) {
        let quiet = self.interval.max(Duration::from_millis(500)) * 2;
        let below_rate = matches!((self.rate_max, self.rate_ceiling), (Some(max), Some(ceiling)) if max < ceiling);
        let below_concurrency = self.concurrency < self.concurrency_ceiling;
        if !(below_rate || below_concurrency) || now.duration_since(self.last_change) < quiet {
            return;
        }
        if let (Some(max), Some(ceiling)) = (self.rate_max, self.rate_ceiling) {
            let step = (ceiling / 10).max(1);
            self.rate_max = Some(max.saturating_add(step).min(ceiling));
        }
        self.concurrency = (self.concurrency + 1).min(self.concurrency_ceiling);
        self.last_change = now;
    }
}

fn nonzero(interval: Duration) -> Duration {
    if interval.is_zero() {
        Duration::from_secs(1)
    } else {
        interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn limits(concurrency: usize, rate: Option<u32>, interval_ms: u64) -> Limits {
        Limits {
            max_batch: 100,
            max_delete_batch: 100,
            max_concurrency: concurrency,
            rate_max: rate,
            rate_interval: Duration::from_millis(interval_ms),
            partial_updates: true,
        }
    }

    /// Runs `n` calls, each holding its permit for `hold`, and returns their start offsets.
    async fn run_calls(limiter: &Limiter, n: usize, hold: Duration) -> Vec<Duration> {
        let origin = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..n {
            let limiter = limiter.clone();
            tasks.push(tokio::spawn(async move {
                let permit = limiter.acquire().await;
                let started = permit.started();
                tokio::time::sleep(hold).await;
                drop(permit);
                started
            }));
        }
        let mut starts = Vec::new();
        for task in tasks {
            starts.push(task.await.expect("call task").duration_since(origin));
        }
        starts.sort();
        starts
    }

    /// The most starts within any window of `interval` (the server's rolling count).
    fn max_in_window(starts: &[Duration], interval: Duration) -> usize {
        let mut best = 0;
        for (index, start) in starts.iter().enumerate() {
            let count = starts[index..]
                .iter()
                .take_while(|later| **later < *start + interval)
                .count();
            best = best.max(count);
        }
        best
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_cap_holds() {
        let limiter = Limiter::new(&limits(3, None, 1000));
        let starts = run_calls(&limiter, 9, Duration::from_millis(100)).await;
        // Three waves of three calls, 100 ms apart.
        let waves: Vec<u128> = starts.iter().map(|start| start.as_millis() / 100).collect();
        assert_eq!(waves, vec![0, 0, 0, 1, 1, 1, 2, 2, 2]);
        assert_eq!(limiter.state().in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_cap_never_exceeds_a_rolling_window_and_reaches_it() {
        let interval = Duration::from_secs(10);
        let limiter = Limiter::new(&limits(50, Some(100), 10_000));
        let hold = Duration::from_millis(10);
        let starts = run_calls(&limiter, 400, hold).await;
        assert!(max_in_window(&starts, interval) <= 100);
        // 400 calls at 100 per (10 s + one 10 ms round trip): the last wave starts after
        // three windows, not later.
        let last = *starts.last().expect("calls ran");
        assert!(last >= Duration::from_secs(30), "{last:?}");
        assert!(last < Duration::from_millis(30_100), "{last:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_pauses_every_call_until_retry_after() {
        let limiter = Limiter::new(&limits(4, Some(100), 10_000));
        let permit = limiter.acquire().await;
        let feedback = Feedback {
            throttled: true,
            retry_after: Some(Duration::from_secs(3)),
            ..Feedback::default()
        };
        limiter.observe(&feedback, permit.started());
        drop(permit);
        let before = Instant::now();
        let next = limiter.acquire().await;
        assert_eq!(
            next.started().duration_since(before),
            Duration::from_secs(3)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unexpected_429_halves_the_rate_once_then_recovers_additively() {
        let limiter = Limiter::new(&limits(4, Some(100), 1_000));
        // Two calls in flight when the first 429 arrives: the second 429 is expected.
        let first = limiter.acquire().await;
        let second = limiter.acquire().await;
        let throttled = Feedback {
            throttled: true,
            ..Feedback::default()
        };
        tokio::time::advance(Duration::from_millis(1)).await;
        limiter.observe(&throttled, first.started());
        limiter.observe(&throttled, second.started());
        assert_eq!(limiter.state().rate_max, Some(50));
        assert_eq!(limiter.state().paused_for, DEFAULT_THROTTLE_PAUSE);
        drop((first, second));
        // A call started after the reaction and throttled again halves again.
        let third = limiter.acquire().await;
        limiter.observe(&throttled, third.started());
        assert_eq!(limiter.state().rate_max, Some(25));
        drop(third);
        // Quiet periods (2 intervals each) add a tenth of the ceiling each.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(limiter.state().rate_max, Some(35));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(limiter.state().rate_max, Some(45));
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..10 {
            limiter.state();
            tokio::time::advance(Duration::from_secs(2)).await;
        }
        assert_eq!(limiter.state().rate_max, Some(100), "capped at the ceiling");
    }

    #[tokio::test(start_paused = true)]
    async fn unexpected_429_without_a_rate_halves_concurrency() {
        let limiter = Limiter::new(&limits(10, None, 1_000));
        let permit = limiter.acquire().await;
        tokio::time::advance(Duration::from_millis(1)).await;
        let throttled = Feedback {
            throttled: true,
            ..Feedback::default()
        };
        limiter.observe(&throttled, permit.started());
        assert_eq!(limiter.state().concurrency, 5);
        assert_eq!(limiter.state().rate_max, None);
        drop(permit);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(limiter.state().concurrency, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn advertised_headers_set_the_ceiling_and_a_zero_remaining_pauses() {
        let limiter = Limiter::new(&limits(10, Some(100), 10_000));
        let mut headers = HeaderMap::new();
        headers.insert("X-HubSpot-RateLimit-Max", HeaderValue::from_static("190"));
        headers.insert(
            "X-HubSpot-RateLimit-Remaining",
            HeaderValue::from_static("189"),
        );
        headers.insert(
            "X-HubSpot-RateLimit-Interval-Milliseconds",
            HeaderValue::from_static("10000"),
        );
        let feedback = Feedback::from_response(200, &headers);
        assert_eq!(feedback.limit, Some(190));
        assert_eq!(feedback.interval, Some(Duration::from_secs(10)));
        limiter.observe(&feedback, Instant::now());
        let state = limiter.state();
        // The ceiling rises at once; the cap climbs to it in quiet periods.
        assert_eq!((state.rate_max, state.rate_ceiling), (Some(100), Some(190)));

        let mut headers = HeaderMap::new();
        headers.insert("X-RateLimit-Limit", HeaderValue::from_static("600"));
        headers.insert("X-RateLimit-Remaining", HeaderValue::from_static("0"));
        let reset = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
            + 5;
        headers.insert(
            "X-RateLimit-Reset",
            HeaderValue::from_str(&reset.to_string()).expect("digits"),
        );
        let feedback = Feedback::from_response(200, &headers);
        assert_eq!(feedback.remaining, Some(0));
        let reset_after = feedback.reset_after.expect("reset parsed");
        assert!(reset_after > Duration::from_secs(3) && reset_after <= Duration::from_secs(5));
        limiter.observe(&feedback, Instant::now());
        assert_eq!(limiter.state().rate_ceiling, Some(600));
        assert_eq!(
            limiter.state().rate_max,
            Some(100),
            "never above the current cap"
        );
        assert!(limiter.state().paused_for >= Duration::from_secs(3));
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("99999"), Some(MAX_PAUSE));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let parsed = parse_retry_after(&future).expect("http date");
        assert!(parsed > Duration::from_secs(100) && parsed <= Duration::from_secs(120));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
