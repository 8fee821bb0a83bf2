//! What the workers count, merged at the end into the report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// How many distinct examples of failures are kept for the report.
const SAMPLES: usize = 5;

/// The kinds of transport failure; a request that failed this way got no HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ErrorKind {
    /// The TCP connection could not be opened.
    Connect,
    /// The connection failed while sending or waiting for the response head.
    Send,
    /// The response body could not be read.
    Body,
    /// No complete response within `--timeout`.
    Timeout,
    /// A 200 whose body had no `accepted` count.
    BadResponse,
}

impl ErrorKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Send => "send",
            Self::Body => "body",
            Self::Timeout => "timeout",
            Self::BadResponse => "bad_response",
        }
    }
}

/// Counts of one worker, or of all after merging. Only measured requests (after the warm-up)
/// are counted here.
#[derive(Debug)]
pub(crate) struct Stats {
    /// Microseconds, from the scheduled time in open-loop mode.
    pub(crate) latency: Histogram<u64>,
    pub(crate) requests: u64,
    pub(crate) ok: u64,
    pub(crate) throttled: u64,
    pub(crate) other_statuses: BTreeMap<u16, u64>,
    pub(crate) errors: BTreeMap<ErrorKind, u64>,
    pub(crate) accepted: u64,
    pub(crate) duplicates: u64,
    pub(crate) rejected: u64,
    /// Open loop: requests sent later than their schedule allowed.
    pub(crate) behind: u64,
    /// Open loop: how late each request was sent, in microseconds.
    pub(crate) lag: Histogram<u64>,
    /// Connections opened, the first ones included.
    pub(crate) connects: u64,
    pub(crate) samples: Vec<String>,
}

impl Stats {
    pub(crate) fn new() -> Self {
        Self {
            // 1 µs to 1 h at three significant digits; `saturating_record` clamps beyond.
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            requests: 0,
            ok: 0,
            throttled: 0,
            other_statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            accepted: 0,
            duplicates: 0,
            rejected: 0,
            behind: 0,
            lag: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
            connects: 0,
            samples: Vec::new(),
        }
    }

    pub(crate) fn record_latency(&mut self, latency: Duration) {
        self.latency
            .saturating_record((latency.as_micros() as u64).max(1));
    }

    pub(crate) fn record_lag(&mut self, lag: Duration) {
        self.lag.saturating_record((lag.as_micros() as u64).max(1));
    }

    pub(crate) fn error(&mut self, kind: ErrorKind, detail: impl FnOnce() -> String) {
        let count = self.errors.entry(kind).or_default();
        *count += 1;
        if *count <= SAMPLES as u64 {
            self.sample(format!("{}: {}", kind.as_str(), detail()));
        }
    }

    pub(crate) fn other_status(&mut self, status: u16, body: &[u8]) {
        let count = self.other_statuses.entry(status).or_default();
        *count += 1;
        if *count <= SAMPLES as u64 {
            self.sample(format!("HTTP {status}: {}", excerpt(body)));
        }
    }

    /// Keeps the first response that rejected messages, so a generator bug or a server
    /// validation change is visible.
    pub(crate) fn rejected_sample(&mut self, body: &[u8]) {
        if self.rejected == 0 {
            self.sample(format!("HTTP 200 with rejections: {}", excerpt(body)));
        }
    }

    fn sample(&mut self, text: String) {
        if self.samples.len() < SAMPLES && !self.samples.contains(&text) {
            self.samples.push(text);
        }
    }

    pub(crate) fn merge(&mut self, other: Stats) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.requests += other.requests;
        self.ok += other.ok;
        self.throttled += other.throttled;
        for (status, count) in other.other_statuses {
            *self.other_statuses.entry(status).or_default() += count;
        }
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.rejected += other.rejected;
        self.behind += other.behind;
        let _ = self.lag.add(&other.lag);
        self.connects += other.connects;
        for sample in other.samples {
            self.sample(sample);
        }
    }

    /// Requests answered with an HTTP status, whatever it was.
    pub(crate) fn answered(&self) -> u64 {
        self.ok + self.throttled + self.other_statuses.values().sum::<u64>()
    }

    /// Requests that failed: any status but 200 and 429, and every transport error.
    pub(crate) fn failures(&self) -> u64 {
        self.other_statuses.values().sum::<u64>() + self.errors.values().sum::<u64>()
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    let text = text.trim();
    if body.len() > 300 {
        format!("{text}…")
    } else {
        text.to_owned()
    }
}

/// Reads a non-negative integer field of a flat JSON object without parsing the whole body:
/// the ingestion answer is tiny and fixed in shape.
pub(crate) fn json_count(body: &[u8], key: &str) -> Option<u64> {
    let pattern = format!("\"{key}\":");
    let at = body
        .windows(pattern.len())
        .position(|window| window == pattern.as_bytes())?;
    let digits: Vec<u8> = body[at + pattern.len()..]
        .iter()
        .copied()
        .skip_while(|byte| *byte == b' ')
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// The run's settings, for the report.
#[derive(Debug)]
pub(crate) struct RunInfo {
    pub(crate) url: String,
    pub(crate) mode: String,
    pub(crate) target_requests_per_sec: Option<f64>,
    pub(crate) connections: usize,
    pub(crate) threads: usize,
    pub(crate) batch_size: usize,
    pub(crate) gzip: bool,
    pub(crate) body_bytes: usize,
    pub(crate) message_bytes: usize,
    pub(crate) measured: Duration,
    pub(crate) warmup: Duration,
    /// CPU time of this process during the measured window.
    pub(crate) cpu: Option<Duration>,
}

/// The final figures, printed for people and as JSON.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) info: RunInfo,
    pub(crate) stats: Stats,
}

impl Report {
    fn seconds(&self) -> f64 {
        self.info.measured.as_secs_f64().max(1e-9)
    }

    pub(crate) fn events_per_sec(&self) -> f64 {
        self.stats.accepted as f64 / self.seconds()
    }

    /// Requests answered with any HTTP status, per second.
    pub(crate) fn requests_per_sec(&self) -> f64 {
        self.stats.answered() as f64 / self.seconds()
    }

    fn quantile_ms(&self, quantile: f64) -> f64 {
        self.stats.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn max_ms(&self) -> f64 {
        self.stats.latency.max() as f64 / 1000.0
    }

    fn cpu_share(&self) -> Option<f64> {
        self.info.cpu.map(|cpu| cpu.as_secs_f64() / self.seconds())
    }

    pub(crate) fn human(&self) -> String {
        let info = &self.info;
        let stats = &self.stats;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "trib-loadgen {} → {}: {} connections, {} thread(s), batches of {} ({} KiB{}, ~{} B/message), {:.0} s measured after {:.0} s warm-up",
            info.mode,
            info.url,
            info.connections,
            info.threads,
            info.batch_size,
            info.body_bytes / 1024,
            if info.gzip { " before gzip" } else { "" },
            info.message_bytes,
            info.measured.as_secs_f64(),
            info.warmup.as_secs_f64(),
        );
        let _ = writeln!(
            out,
            "  events/s     {:>12}   (accepted {}, duplicates {}, rejected {})",
            group(self.events_per_sec()),
            group(stats.accepted as f64),
            group(stats.duplicates as f64),
            group(stats.rejected as f64),
        );
        let _ = writeln!(
            out,
            "  requests/s   {:>12}   ({} answered of {} requests)",
            format!("{:.1}", self.requests_per_sec()),
            group(stats.answered() as f64),
            group(stats.requests as f64),
        );
        if stats.latency.is_empty() {
            let _ = writeln!(out, "  latency      no response");
        } else {
            let _ = writeln!(
                out,
                "  latency ms   p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}{}",
                self.quantile_ms(0.50),
                self.quantile_ms(0.90),
                self.quantile_ms(0.99),
                self.quantile_ms(0.999),
                self.max_ms(),
                if info.target_requests_per_sec.is_some() {
                    "   (from the scheduled send time)"
                } else {
                    ""
                },
            );
        }
        let others = if stats.other_statuses.is_empty() {
            "none".to_owned()
        } else {
            stats
                .other_statuses
                .iter()
                .map(|(status, count)| format!("{status}×{count}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let errors = if stats.errors.is_empty() {
            "none".to_owned()
        } else {
            stats
                .errors
                .iter()
                .map(|(kind, count)| format!("{}×{count}", kind.as_str()))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            out,
            "  statuses     200: {}  429: {}  other: {others}  errors: {errors}  (connections opened: {})",
            stats.ok, stats.throttled, stats.connects,
        );
        if let Some(target) = info.target_requests_per_sec {
            let _ = writeln!(
                out,
                "  schedule     {target:.1} requests/s wanted; {} sent more than {} ms late ({:.2}%); lateness ms p50 {:.2}  p99 {:.2}  max {:.2}",
                stats.behind,
                crate::run::LATE.as_millis(),
                percent(stats.behind, stats.requests),
                stats.lag.value_at_quantile(0.5) as f64 / 1000.0,
                stats.lag.value_at_quantile(0.99) as f64 / 1000.0,
                stats.lag.max() as f64 / 1000.0,
            );
        }
        if let Some(share) = self.cpu_share() {
            let _ = writeln!(
                out,
                "  loadgen CPU  {:.1}% of one core ({:.2} s user+sys in the measured window)",
                share * 100.0,
                info.cpu.unwrap_or_default().as_secs_f64(),
            );
        }
        for sample in &stats.samples {
            let _ = writeln!(out, "  example      {sample}");
        }
        let failures = stats.failures();
        if failures > 0 {
            let _ = writeln!(
                out,
                "  FAILED       {failures} of {} requests ({:.2}%)",
                stats.requests,
                percent(failures, stats.requests),
            );
        }
        out
    }

    pub(crate) fn json(&self) -> Value {
        let info = &self.info;
        let stats = &self.stats;
        let latency = if stats.latency.is_empty() {
            Value::Null
        } else {
            json!({
                "p50": self.quantile_ms(0.50),
                "p90": self.quantile_ms(0.90),
                "p99": self.quantile_ms(0.99),
                "p999": self.quantile_ms(0.999),
                "max": self.max_ms(),
                "mean": stats.latency.mean() / 1000.0,
            })
        };
        json!({
            "url": info.url,
            "mode": info.mode,
            "target_requests_per_sec": info.target_requests_per_sec,
            "connections": info.connections,
            "threads": info.threads,
            "batch_size": info.batch_size,
            "gzip": info.gzip,
            "body_bytes": info.body_bytes,
            "message_bytes": info.message_bytes,
            "measured_secs": info.measured.as_secs_f64(),
            "warmup_secs": info.warmup.as_secs_f64(),
            "events_per_sec": self.events_per_sec(),
            "requests_per_sec": self.requests_per_sec(),
            "requests": stats.requests,
            "answered": stats.answered(),
            "accepted": stats.accepted,
            "duplicates": stats.duplicates,
            "rejected": stats.rejected,
            "latency_ms": latency,
            "status_200": stats.ok,
            "status_429": stats.throttled,
            "other_statuses": stats.other_statuses.iter().map(|(status, count)| (status.to_string(), json!(count))).collect::<serde_json::Map<_, _>>(),
            "errors": stats.errors.iter().map(|(kind, count)| (kind.as_str().to_owned(), json!(count))).collect::<serde_json::Map<_, _>>(),
            "failures": stats.failures(),
            "behind_schedule": info.target_requests_per_sec.map(|_| stats.behind),
            "schedule_lateness_ms": info.target_requests_per_sec.map(|_| json!({
                "p50": stats.lag.value_at_quantile(0.5) as f64 / 1000.0,
                "p99": stats.lag.value_at_quantile(0.99) as f64 / 1000.0,
                "max": stats.lag.max() as f64 / 1000.0,
            })),
            "connections_opened": stats.connects,
            "loadgen_cpu_secs": info.cpu.map(|cpu| cpu.as_secs_f64()),
            "loadgen_cpu_share": self.cpu_share(),
            "samples": stats.samples,
        })
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// `1234567.8` → `1,234,568`.
pub(crate) fn group(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counts_from_the_ingestion_answer() {
        let body = br#"{"success":true,"accepted":98,"duplicates":2,"rejected":0}"#;
        assert_eq!(json_count(body, "accepted"), Some(98));
        assert_eq!(json_count(body, "duplicates"), Some(2));
        assert_eq!(json_count(body, "rejected"), Some(0));
        assert_eq!(json_count(body, "missing"), None);
        assert_eq!(json_count(br#"{"accepted": 7}"#, "accepted"), Some(7));
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(group(0.0), "0");
        assert_eq!(group(999.0), "999");
        assert_eq!(group(1000.0), "1,000");
        assert_eq!(group(1_234_567.6), "1,234,568");
    }

    #[test]
    fn failures_count_other_statuses_and_errors_but_not_429() {
        let mut stats = Stats::new();
        stats.throttled = 5;
        stats.other_status(500, b"boom");
        stats.error(ErrorKind::Timeout, || "slow".to_owned());
        assert_eq!(stats.failures(), 2);
        let mut total = Stats::new();
        total.merge(stats);
        assert_eq!(total.failures(), 2);
        assert_eq!(total.samples.len(), 2);
        let mut again = Stats::new();
        again.other_status(500, b"boom");
        total.merge(again);
        assert_eq!(total.samples.len(), 2, "identical examples are kept once");
    }
}
