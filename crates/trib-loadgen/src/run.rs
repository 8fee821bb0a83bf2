//! The workers: one per connection, in a closed loop or paced by a shared open-loop schedule.
//!
//! A request counts when its reference time falls in the measured window, `[warm, end)`: the
//! time it was sent in a closed loop, the time it was scheduled in an open loop. Requests in
//! flight at the end are awaited (at most `--timeout`), so a slow tail is measured, not dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::client::{Answer, Connection, Failure, Target};
use crate::payload::Pool;
use crate::stats::{ErrorKind, Stats, json_count};

/// How early an open-loop worker may send: tokio's timer rounds sleeps up to the next
/// millisecond, so waking on time would make most requests late by a fraction of one.
/// Latency is measured from the earlier of the scheduled and the actual send time, so sending
/// early never flatters it.
const EARLY: Duration = Duration::from_millis(1);
/// A request sent later than this after its scheduled time counts as behind schedule. Timer
/// jitter alone makes about 1 request in 20 late by more than 1 ms on an idle machine.
pub(crate) const LATE: Duration = Duration::from_millis(2);
/// A closed-loop worker's pause after a failed connection attempt.
const CONNECT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    /// Each connection sends its next request as soon as the previous one is answered.
    Closed,
    /// Requests are due at fixed intervals, whatever the answers.
    Open { requests_per_sec: f64 },
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) mode: Mode,
    pub(crate) start: Instant,
    pub(crate) warm: Instant,
    pub(crate) end: Instant,
    pub(crate) timeout: Duration,
    pub(crate) gzip: bool,
}

/// What all workers share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) plan: Plan,
    pub(crate) target: Target,
    pub(crate) pool: Pool,
    /// The next request sequence number: unique message ids across workers.
    next_seq: AtomicU64,
    /// The next open-loop slot.
    next_slot: AtomicU64,
    progress: Progress,
    /// Set on a 401 or 403, with the answer: every further request would be refused too, so
    /// the run stops.
    refused: OnceLock<String>,
}

/// Totals since the start, warm-up included, for the per-second progress lines.
#[derive(Debug, Default)]
struct Progress {
    requests: AtomicU64,
    accepted: AtomicU64,
    throttled: AtomicU64,
    failures: AtomicU64,
}

impl Shared {
    pub(crate) fn new(plan: Plan, target: Target, pool: Pool) -> Self {
        Self {
            plan,
            target,
            pool,
            next_seq: AtomicU64::new(0),
            next_slot: AtomicU64::new(0),
            progress: Progress::default(),
            refused: OnceLock::new(),
        }
    }

    /// The server's answer when it refused the write key, which ended the run early.
    pub(crate) fn refused(&self) -> Option<&str> {
        self.refused.get().map(String::as_str)
    }
}

/// Runs `connections` workers to the end of the plan and merges what they counted.
pub(crate) async fn run(shared: &Arc<Shared>, connections: usize, progress: bool) -> Stats {
    let done = Arc::new(AtomicBool::new(false));
    let reporter =
        progress.then(|| tokio::spawn(report_progress(Arc::clone(shared), Arc::clone(&done))));
    let workers: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(worker(Arc::clone(shared))))
        .collect();
    let mut total = Stats::new();
    for worker in workers {
        match worker.await {
            Ok(stats) => total.merge(stats),
            Err(error) => total.error(ErrorKind::Send, || format!("a worker failed: {error}")),
        }
    }
    done.store(true, Relaxed);
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    total
}

async fn worker(shared: Arc<Shared>) -> Stats {
    let plan = shared.plan;
    let mut stats = Stats::new();
    let mut connection = Connection::default();
    let mut gzip = plan.gzip.then(Gzip::new);
    while shared.refused().is_none() {
        let (reference, lag) = match plan.mode {
            Mode::Closed => {
                let now = Instant::now();
                if now >= plan.end {
                    break;
                }
                (now, Duration::ZERO)
            }
            Mode::Open { requests_per_sec } => {
                let slot = shared.next_slot.fetch_add(1, Relaxed);
                let scheduled =
                    plan.start + Duration::from_secs_f64(slot as f64 / requests_per_sec);
                if scheduled >= plan.end {
                    break;
                }
                let wake = scheduled.checked_sub(EARLY).unwrap_or(scheduled);
                if wake > Instant::now() {
                    tokio::time::sleep_until(wake).await;
                }
                let sent = Instant::now();
                (
                    scheduled.min(sent),
                    sent.saturating_duration_since(scheduled),
                )
            }
        };
        let measured = reference >= plan.warm;
        let result = if lag >= plan.timeout {
            // An open-loop backlog: this request would have waited past its timeout anyway.
            // Counting it without sending bounds the drain after the end.
            Err(Failure::new(
                ErrorKind::Timeout,
                format!("not sent within {:?} of its scheduled time", plan.timeout),
            ))
        } else {
            let seq = shared.next_seq.fetch_add(1, Relaxed);
            let body = render(&shared.pool, seq, gzip.as_mut());
            connection.send(&shared.target, body, plan.timeout).await
        };
        let latency = Instant::now().saturating_duration_since(reference);
        shared.progress.requests.fetch_add(1, Relaxed);

        let mut pause = None;
        if measured {
            stats.requests += 1;
            if let Mode::Open { .. } = plan.mode {
                stats.record_lag(lag);
                if lag > LATE {
                    stats.behind += 1;
                }
            }
        }
        match result {
            Ok(answer) => {
                if measured {
                    stats.record_latency(latency);
                }
                pause = count_answer(&shared, &mut stats, &answer, measured);
            }
            Err(failure) => {
                shared.progress.failures.fetch_add(1, Relaxed);
                if failure.kind == ErrorKind::Connect {
                    pause = Some(CONNECT_BACKOFF);
                }
                if measured {
                    stats.error(failure.kind, || failure.detail);
                }
            }
        }
        // A closed loop behaves like a client library: it honours Retry-After and does not
        // hammer a server that refuses connections. An open loop keeps to its schedule.
        if let (Mode::Closed, Some(pause)) = (plan.mode, pause) {
            let until = (Instant::now() + pause).min(plan.end);
            tokio::time::sleep_until(until).await;
        }
    }
    stats.connects = connection.opened;
    stats
}

/// Counts an HTTP answer; returns how long a closed loop should wait before the next request.
fn count_answer(
    shared: &Shared,
    stats: &mut Stats,
    answer: &Answer,
    measured: bool,
) -> Option<Duration> {
    match answer.status {
        200 => {
            let Some(accepted) = json_count(&answer.body, "accepted") else {
                shared.progress.failures.fetch_add(1, Relaxed);
                if measured {
                    stats.error(ErrorKind::BadResponse, || {
                        format!(
                            "200 without `accepted`: {}",
                            String::from_utf8_lossy(&answer.body[..answer.body.len().min(300)])
                        )
                    });
                }
                return None;
            };
            shared.progress.accepted.fetch_add(accepted, Relaxed);
            if measured {
                stats.ok += 1;
                stats.accepted += accepted;
                stats.duplicates += json_count(&answer.body, "duplicates").unwrap_or(0);
                let rejected = json_count(&answer.body, "rejected").unwrap_or(0);
                if rejected > 0 {
                    stats.rejected_sample(&answer.body);
                    stats.rejected += rejected;
                }
            }
            None
        }
        429 => {
            shared.progress.throttled.fetch_add(1, Relaxed);
            if measured {
                stats.throttled += 1;
            }
            Some(answer.retry_after.unwrap_or(Duration::from_secs(1)))
        }
        status => {
            shared.progress.failures.fetch_add(1, Relaxed);
            if status == 401 || status == 403 {
                let _ = shared.refused.set(format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&answer.body[..answer.body.len().min(300)])
                ));
            }
            if measured {
                stats.other_status(status, &answer.body);
            }
            None
        }
    }
}

/// The body of request `seq`: a copy of a template with its digits patched, gzipped if asked.
fn render(pool: &Pool, seq: u64, gzip: Option<&mut Gzip>) -> Bytes {
    let mut body = Vec::with_capacity(pool.max_body_len());
    pool.render_into(seq, &mut body);
    match gzip {
        None => Bytes::from(body),
        Some(gzip) => Bytes::from(gzip.encode(&body)),
    }
}

/// A gzip encoder that keeps its compressor between requests: building a new one per request
/// allocates (and the allocator maps and unmaps) a few hundred kilobytes each time.
pub(crate) struct Gzip {
    compress: flate2::Compress,
    crc: flate2::Crc,
}

impl Gzip {
    pub(crate) fn new() -> Self {
        Self {
            compress: flate2::Compress::new(flate2::Compression::fast(), false),
            crc: flate2::Crc::new(),
        }
    }

    /// A single gzip member (RFC 1952) holding `input`.
    pub(crate) fn encode(&mut self, input: &[u8]) -> Vec<u8> {
        const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
        self.compress.reset();
        let mut out = Vec::with_capacity(input.len() / 3 + 64);
        out.extend_from_slice(&HEADER);
        loop {
            let consumed = self.compress.total_in() as usize;
            match self.compress.compress_vec(
                &input[consumed..],
                &mut out,
                flate2::FlushCompress::Finish,
            ) {
                Ok(flate2::Status::StreamEnd) => break,
                Ok(_) => out.reserve(out.capacity() / 2 + 1024),
                // Compressing into a Vec does not fail; if it ever did, the empty body would
                // be answered with a 400, which the report shows.
                Err(_) => return Vec::new(),
            }
        }
        self.crc.reset();
        self.crc.update(input);
        out.extend_from_slice(&self.crc.sum().to_le_bytes());
        out.extend_from_slice(&(input.len() as u32).to_le_bytes());
        out
    }
}

async fn report_progress(shared: Arc<Shared>, done: Arc<AtomicBool>) {
    let plan = shared.plan;
    let mut ticker =
        tokio::time::interval_at(plan.start + Duration::from_secs(1), Duration::from_secs(1));
    let (mut last_requests, mut last_accepted) = (0, 0);
    let mut last = plan.start;
    while !done.load(Relaxed) {
        let now = ticker.tick().await;
        let requests = shared.progress.requests.load(Relaxed);
        let accepted = shared.progress.accepted.load(Relaxed);
        let seconds = now.saturating_duration_since(last).as_secs_f64().max(1e-9);
        let phase = if now <= plan.warm {
            "warm-up"
        } else if now <= plan.end + Duration::from_millis(500) {
            "measure"
        } else {
            "drain  "
        };
        eprintln!(
            "[{:>4.0}s {phase}] {:>9} events/s {:>8.1} requests/s   429s {}  failures {}",
            now.saturating_duration_since(plan.start).as_secs_f64(),
            crate::stats::group((accepted - last_accepted) as f64 / seconds),
            (requests - last_requests) as f64 / seconds,
            shared.progress.throttled.load(Relaxed),
            shared.progress.failures.load(Relaxed),
        );
        (last_requests, last_accepted, last) = (requests, accepted, now);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn gzip_bodies_inflate_to_the_original_and_the_encoder_is_reusable() {
        let mut gzip = Gzip::new();
        for input in [&b"{\"batch\":[]}"[..], &[b'x'; 100_000][..], b""] {
            let encoded = gzip.encode(input);
            let mut decoded = Vec::new();
            flate2::read::MultiGzDecoder::new(&encoded[..])
                .read_to_end(&mut decoded)
                .unwrap();
            assert_eq!(decoded, input);
        }
    }
}
