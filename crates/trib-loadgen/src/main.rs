//! `trib-loadgen`: a load generator for Tributary's Segment-compatible `POST /v1/batch`.
//!
//! It is built to take as little CPU as it can from the server it measures on the same machine:
//! request bodies are pre-serialized and only their ids are patched per request
//! ([`payload`]), each connection is a bare hyper HTTP/1.1 connection owned by one worker
//! ([`client`]), and by default everything runs on one thread. It reports its own CPU time so a
//! result can be judged against what the generator cost.

mod client;
mod payload;
mod run;
mod stats;

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;

use crate::payload::{PayloadConfig, Pool};
use crate::run::{Mode, Plan, Shared};
use crate::stats::{Report, RunInfo};

/// Sends realistic Segment batches to `POST {url}/v1/batch` and reports events/s, requests/s,
/// latency percentiles and status counts. Exits with status 1 when more than 1% of the
/// measured requests fail (any status but 200 and 429, or a transport error).
#[derive(Debug, Parser)]
#[command(name = "trib-loadgen", version, about)]
struct Args {
    /// The server's base URL; requests go to `{url}/v1/batch`.
    #[arg(
        long,
        env = "TRIB_LOADGEN_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// The source's write key, sent as the HTTP Basic user name with an empty password.
    #[arg(
        long,
        env = "TRIB_LOADGEN_WRITE_KEY",
        required_unless_present = "print_sample"
    )]
    write_key: Option<String>,
    /// Messages per request.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=payload::MAX_BATCH as i64))]
    batch_size: u32,
    /// Concurrent keep-alive connections, one request in flight on each.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connections: u32,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Open loop: send EVENTS_PER_SEC / batch-size requests per second on a fixed schedule and
    /// measure latency from each request's scheduled time, so queueing is not hidden
    /// (no coordinated omission). Without it, each connection sends as fast as it is answered.
    #[arg(long, value_name = "EVENTS_PER_SEC")]
    rate: Option<f64>,
    /// Compresses each body with gzip (costs the generator CPU per request).
    #[arg(long)]
    gzip: bool,
    /// Also prints the result as one JSON object on stdout; the human summary then goes to stderr.
    #[arg(long)]
    json: bool,
    /// Runtime threads. One leaves the other cores to the server.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: u32,
    /// Seconds to wait for an answer before counting a timeout.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Distinct people in userIds and e-mail addresses.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=payload::MAX_USERS as i64))]
    users: u32,
    /// Distinct batches serialized up front; requests cycle through them.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    templates: u32,
    /// Hides the per-second progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Prints one generated request body and exits, sending nothing.
    #[arg(long)]
    print_sample: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("trib-loadgen: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !(args.duration.is_finite() && args.duration > 0.0) {
        bail!("--duration must be a positive number of seconds");
    }
    if !(args.warmup.is_finite() && args.warmup >= 0.0) {
        bail!("--warmup must be zero or more seconds");
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        bail!("--timeout must be a positive number of seconds");
    }
    let batch_size = args.batch_size as usize;
    let mode = match args.rate {
        None => Mode::Closed,
        Some(rate) if rate.is_finite() && rate > 0.0 => Mode::Open {
            requests_per_sec: rate / batch_size as f64,
        },
        Some(_) => bail!("--rate must be a positive number of events per second"),
    };

    let pool = Pool::build(&PayloadConfig {
        batch_size,
        templates: args.templates as usize,
        users: args.users,
        run_id: run_id(),
        seed: 0x7472_6962,
    });
    if args.print_sample {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&pool.render(0))?;
        writeln!(stdout)?;
        return Ok(ExitCode::SUCCESS);
    }
    if pool.max_body_len() > 500 * 1024 {
        eprintln!(
            "trib-loadgen: warning: bodies reach {} KiB, above Segment's 500 KB batch limit",
            pool.max_body_len() / 1024
        );
    }

    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads as usize)
            .enable_all()
            .build()
    }
    .context("cannot start the runtime")?;

    let write_key = args.write_key.clone().unwrap_or_default();
    let report = runtime.block_on(async {
        let target = client::Target::resolve(&args.url, &write_key, args.gzip).await?;
        let start = tokio::time::Instant::now();
        let warm = start + Duration::from_secs_f64(args.warmup);
        let plan = Plan {
            mode,
            start,
            warm,
            end: warm + Duration::from_secs_f64(args.duration),
            timeout: Duration::from_secs_f64(args.timeout),
            gzip: args.gzip,
        };
        let info = RunInfo {
            url: target.display.clone(),
            mode: match mode {
                Mode::Closed => "closed loop".to_owned(),
                Mode::Open { .. } => format!(
                    "open loop at {} events/s",
                    stats::group(args.rate.unwrap_or(0.0))
                ),
            },
            target_requests_per_sec: match mode {
                Mode::Closed => None,
                Mode::Open { requests_per_sec } => Some(requests_per_sec),
            },
            connections: args.connections as usize,
            threads: args.threads as usize,
            batch_size,
            gzip: args.gzip,
            body_bytes: pool.max_body_len(),
            message_bytes: pool.mean_message_len(),
            measured: plan.end - plan.warm,
            warmup: plan.warm - plan.start,
            cpu: None,
        };
        let shared = Arc::new(Shared::new(plan, target, pool));

        // CPU time is sampled at the edges of the measured window by a task of its own.
        let cpu_window = tokio::spawn(async move {
            tokio::time::sleep_until(warm).await;
            let before = process_cpu();
            tokio::time::sleep_until(plan.end).await;
            process_cpu()?.checked_sub(before?)
        });
        let stats = run::run(&shared, args.connections as usize, !args.quiet).await;
        let cpu = if shared.refused().is_some() {
            cpu_window.abort();
            None
        } else {
            cpu_window.await.ok().flatten()
        };
        let report = Report {
            info: RunInfo { cpu, ..info },
            stats,
        };
        anyhow::Ok((report, shared.refused().map(str::to_owned)))
    })?;
    let (report, refused) = report;

    let human = report.human();
    if args.json {
        eprint!("{human}");
        println!("{}", report.json());
    } else {
        print!("{human}");
    }

    if let Some(answer) = refused {
        eprintln!(
            "trib-loadgen: the server refused the write key, so the run stopped early: {answer}"
        );
        return Ok(ExitCode::FAILURE);
    }
    let failures = report.stats.failures();
    if report.stats.requests == 0 {
        eprintln!("trib-loadgen: no request was measured");
        return Ok(ExitCode::FAILURE);
    }
    if failures * 100 > report.stats.requests {
        eprintln!(
            "trib-loadgen: {failures} of {} requests failed (more than 1%)",
            report.stats.requests
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Eight hex digits that differ between runs, so a second run against the same data directory
/// is not deduplicated against the first.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0);
    let mixed = payload::splitmix64(nanos ^ u64::from(std::process::id()).rotate_left(32));
    format!("{:08x}", mixed as u32)
}

/// User plus system CPU time of this process so far, from `/proc/self/stat` (Linux; `None`
/// elsewhere). Fields 14 and 15 count clock ticks, which are 1/100 s on Linux.
fn process_cpu() -> Option<Duration> {
    const TICKS_PER_SEC: u64 = 100;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; the fields after it do not.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis(
        (user + system) * 1000 / TICKS_PER_SEC,
    ))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_documentation() {
        let args = Args::try_parse_from(["trib-loadgen", "--write-key", "wk"]).unwrap();
        assert_eq!(args.batch_size, 100);
        assert_eq!(args.connections, 32);
        assert_eq!(args.duration, 20.0);
        assert_eq!(args.warmup, 3.0);
        assert_eq!(args.threads, 1);
        assert!(args.rate.is_none() && !args.gzip && !args.json);
    }

    #[test]
    fn reads_its_own_cpu_time() {
        if cfg!(target_os = "linux") {
            assert!(process_cpu().is_some());
        }
    }

    #[test]
    fn run_ids_are_eight_hex_digits() {
        let id = run_id();
        assert_eq!(id.len(), 8);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
