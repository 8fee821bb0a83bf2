//! The sync engine with the real connectors against the ESP simulators (loopback HTTP),
//! measured end to end.
//!
//! `cargo bench -p trib-sync --bench sync -- [freshness|calls|rate|isolation|all] [runs]`
//! (default `all 3`). Each measure runs `runs` times and prints every run and the median.
//!
//! * **freshness**: 600 profiles synced to one destination per simulator kind (one engine,
//!   default 250 ms batch window, feed polled every 100 ms), then 20 changes per second for 30 s, one profile at a
//!   time, each a profile not changed before. Latency from the store write to (a) the value
//!   being visible in the simulator (`contacts()` polled every 10 ms) and (b) the engine's
//!   confirmation (`confirmed_at_ms` in sync.db, recorded after the connector confirmed),
//!   p50/p95/max per kind. Event ingest → profile change (identity) is not included.
//! * **calls**: 10,000 new profiles per destination (one engine and simulator per kind in
//!   turn, no faults): write calls and all API calls the simulator received, against
//!   ⌈10,000 / max batch⌉ + 1, and the time until sync.db has nothing pending.
//! * **rate**: the HubSpot simulator limited to 20 calls per rolling 1 s (its headers say
//!   so), 3,000 profiles in batches of 10 (300 calls): achieved calls/s between 2 s and 12 s
//!   after the first write, against 20/s allowed, and the 429s from the real limit.
//! * **isolation**: 20,000 profiles to a webhook receiver alone, then beside a Mailchimp
//!   destination whose simulator fails every call (default 1 s retry base): the webhook
//!   destination's profiles/s in both cases.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use trib_config::DestinationConfig;
use trib_esp_sim::{Faults, SimKind};
use trib_sync::{Destination, EngineOptions, SyncEngine};

use common::{Env, Esp, EspSetup, KINDS, Person, now_ms, profile_id, wait_until};

/// Long enough for any measure to settle.
const LIMIT: Duration = Duration::from_secs(300);

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let which = args.first().map_or("all", String::as_str).to_owned();
    let runs: usize = args.get(1).and_then(|runs| runs.parse().ok()).unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        if matches!(which.as_str(), "freshness" | "all") {
            freshness(runs).await;
        }
        if matches!(which.as_str(), "calls" | "all") {
            calls(runs).await;
        }
        if matches!(which.as_str(), "rate" | "all") {
            rate(runs).await;
        }
        if matches!(which.as_str(), "isolation" | "all") {
            isolation(runs).await;
        }
    });
}

/// An ESP set up as a deployment would run it: the simulator's defaults (SendGrid jobs
/// applied after 200 ms) and the destination's default retry settings and batch window.
fn realistic(kind: SimKind) -> EspSetup {
    let mut setup = EspSetup::new(kind);
    // SENDGRID_RATE_MAX=N: the SendGrid simulator admits N calls per endpoint per second
    // (its fixed windows, advertised in `X-RateLimit-*`).
    let sendgrid_rate = std::env::var("SENDGRID_RATE_MAX")
        .ok()
        .and_then(|max| max.parse::<u32>().ok())
        .filter(|_| kind == SimKind::Sendgrid);
    setup.sim = Box::new(move |config| {
        config.sendgrid_job_delay = Duration::from_millis(200);
        if let Some(max) = sendgrid_rate {
            config.rate_max = Some(max);
            config.rate_interval = Duration::from_secs(1);
        }
    });
    setup.config = Box::new(|config| {
        config.retry_base = DestinationConfig::DEFAULT_RETRY_BASE;
        config.retry_window = DestinationConfig::DEFAULT_RETRY_WINDOW;
    });
    setup
}

/// Starts an engine with the default options (the change feed polled every 100 ms), as
/// `tributary serve` does.
fn start(env: &Env, destinations: Vec<Destination>) -> SyncEngine {
    env.start_with(destinations, EngineOptions::default())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50, p95 and max of latencies (ms).
type Summary = [f64; 3];

/// p50, p95, max of `values` (ms).
fn summary(mut values: Vec<f64>) -> Summary {
    values.sort_by(f64::total_cmp);
    [
        percentile(&values, 50.0),
        percentile(&values, 95.0),
        values.last().copied().unwrap_or(f64::NAN),
    ]
}

fn everyone(people: &BTreeMap<u32, Person>) -> Vec<(u32, &Person)> {
    people.iter().map(|(n, person)| (*n, person)).collect()
}

// ---- freshness ---------------------------------------------------------------------------

const FRESH_PROFILES: u32 = 600;
const FRESH_RATE: u32 = 20;
const FRESH_SECONDS: u32 = 30;

async fn freshness(runs: usize) {
    println!(
        "freshness: {FRESH_PROFILES} profiles, then {FRESH_RATE} changes/s for {FRESH_SECONDS} s, \
         batch_window 250 ms, all four destinations in one engine"
    );
    // kind → (visible, confirmed) → one [p50, p95, max] per run.
    let mut results: BTreeMap<&str, (Vec<Summary>, Vec<Summary>)> = BTreeMap::new();
    for run in 1..=runs {
        for (kind, visible, confirmed) in freshness_run().await {
            let name = common::kind_name(kind);
            println!(
                "  run {run} {name:9}: visible p50 {:6.0} p95 {:6.0} max {:6.0} ms | confirmed p50 {:6.0} p95 {:6.0} max {:6.0} ms",
                visible[0], visible[1], visible[2], confirmed[0], confirmed[1], confirmed[2]
            );
            let entry = results.entry(name).or_default();
            entry.0.push(visible);
            entry.1.push(confirmed);
        }
    }
    for (name, (visible, confirmed)) in results {
        let med = |runs: &[Summary], index: usize| {
            median(&mut runs.iter().map(|r| r[index]).collect::<Vec<_>>())
        };
        println!(
            "  median {name:9}: visible p50 {:.0} p95 {:.0} max {:.0} ms | confirmed p50 {:.0} p95 {:.0} max {:.0} ms",
            med(&visible, 0),
            med(&visible, 1),
            med(&visible, 2),
            med(&confirmed, 0),
            med(&confirmed, 1),
            med(&confirmed, 2)
        );
    }
}

/// One freshness run: per kind, [p50, p95, max] of visible and of confirmed latency (ms).
async fn freshness_run() -> Vec<(SimKind, Summary, Summary)> {
    let env = Env::new();
    let mut esps = Vec::new();
    for kind in KINDS {
        esps.push(realistic(kind).start().await);
    }
    let engine = start(
        &env,
        esps.iter().map(|esp| esp.destination.clone()).collect(),
    );
    let mut people: BTreeMap<u32, Person> = (1..=FRESH_PROFILES)
        .map(|n| (n, Person::new(n, "basic")))
        .collect();
    env.put_many(&everyone(&people));
    wait_until("the initial sync", LIMIT, || {
        esps.iter().all(|esp| env.settled(&esp.name))
    })
    .await;

    // Changes at a steady rate; the poller notes when each value shows in each simulator.
    let total = FRESH_RATE * FRESH_SECONDS;
    let interval = Duration::from_secs(1) / FRESH_RATE;
    let started = Instant::now();
    let mut changed_at: BTreeMap<u32, (Instant, i64)> = BTreeMap::new();
    let mut seen: Vec<BTreeMap<u32, Instant>> = vec![BTreeMap::new(); esps.len()];
    let mut next = 0u32;
    loop {
        let due = started + interval * next;
        if next < total && Instant::now() >= due {
            let n = next + 1;
            let person = people.get_mut(&n).expect("person");
            person
                .traits
                .insert("plan".to_owned(), json!(format!("changed-{n}")));
            env.put(n, person);
            changed_at.insert(n, (Instant::now(), now_ms()));
            next += 1;
            continue;
        }
        poll_visible(&esps, &people, &changed_at, &mut seen);
        let all_seen = seen.iter().all(|seen| seen.len() == total as usize);
        if next == total && all_seen {
            break;
        }
        assert!(
            started.elapsed() < LIMIT,
            "changes not visible in time: {:?}",
            seen.iter().map(BTreeMap::len).collect::<Vec<_>>()
        );
        let wake = if next < total {
            (started + interval * next).min(Instant::now() + Duration::from_millis(10))
        } else {
            Instant::now() + Duration::from_millis(10)
        };
        tokio::time::sleep_until(wake.into()).await;
    }
    wait_until("the changes to be confirmed", LIMIT, || {
        esps.iter().all(|esp| env.settled(&esp.name))
    })
    .await;
    engine.stop().await;

    let ids: Vec<_> = changed_at.keys().map(|n| profile_id(*n)).collect();
    let mut out = Vec::new();
    for (esp, seen) in esps.iter().zip(&seen) {
        let visible = changed_at
            .iter()
            .map(|(n, (at, _))| seen[n].duration_since(*at).as_secs_f64() * 1000.0)
            .collect();
        let confirmed_rows = env.state.confirmed(&esp.name, &ids).expect("confirmed");
        let confirmed = changed_at
            .iter()
            .map(|(n, (_, at_ms))| (confirmed_rows[&profile_id(*n)].confirmed_at_ms - at_ms) as f64)
            .collect();
        out.push((esp.kind, summary(visible), summary(confirmed)));
    }
    out
}

/// Notes, per simulator, the first time each changed profile's new plan is visible.
fn poll_visible(
    esps: &[Esp],
    people: &BTreeMap<u32, Person>,
    changed_at: &BTreeMap<u32, (Instant, i64)>,
    seen: &mut [BTreeMap<u32, Instant>],
) {
    for (esp, seen) in esps.iter().zip(seen.iter_mut()) {
        if seen.len() == changed_at.len() {
            continue;
        }
        let contacts = esp.sim.contacts();
        let now = Instant::now();
        let [_, plan_field, _] = common::field_names(esp.kind);
        for n in changed_at.keys() {
            if seen.contains_key(n) {
                continue;
            }
            let person = &people[n];
            let held = contacts
                .get(&esp.key(*n, person))
                .and_then(|contact| contact.fields.get(plan_field));
            if held == person.traits.get("plan") {
                seen.insert(*n, now);
            }
        }
    }
}

// ---- calls -------------------------------------------------------------------------------

const CALL_PROFILES: u32 = 10_000;

async fn calls(runs: usize) {
    println!("calls: {CALL_PROFILES} new profiles per destination, no faults");
    for kind in KINDS {
        let mut seconds = Vec::new();
        let mut line = String::new();
        for run in 1..=runs {
            let (writes, all, by_endpoint, elapsed, max_batch) = calls_run(kind).await;
            let bound = CALL_PROFILES.div_ceil(max_batch as u32) + 1;
            line = format!(
                "writes {writes}, all calls {all} (bound ⌈{CALL_PROFILES}/{max_batch}⌉+1 = {bound}); {by_endpoint:?}"
            );
            println!(
                "  run {run} {:9}: {line}; {:.2} s",
                common::kind_name(kind),
                elapsed.as_secs_f64()
            );
            seconds.push(elapsed.as_secs_f64());
        }
        println!(
            "  median {:9}: {line}; {:.2} s = {:.0} profiles/s",
            common::kind_name(kind),
            median(&mut seconds),
            f64::from(CALL_PROFILES) / median(&mut seconds)
        );
    }
}

/// One calls run: write calls, all calls, calls per endpoint, time to settle, max batch.
async fn calls_run(kind: SimKind) -> (usize, usize, BTreeMap<String, usize>, Duration, usize) {
    let env = Env::new();
    let esp = realistic(kind).start().await;
    let max_batch = esp.destination.connector.limits().max_batch;
    let engine = start(&env, vec![esp.destination.clone()]);
    let people: BTreeMap<u32, Person> = (1..=CALL_PROFILES)
        .map(|n| (n, Person::new(n, "basic")))
        .collect();
    let started = Instant::now();
    env.put_many(&everyone(&people));
    wait_until("the sync", LIMIT, || env.settled(&esp.name)).await;
    let elapsed = started.elapsed();
    engine.stop().await;
    esp.assert_holds_exactly(&people);
    let requests = esp.sim.requests();
    assert!(
        requests.len() < 10_000,
        "the simulator keeps the last 10,000"
    );
    let mut by_endpoint: BTreeMap<String, usize> = BTreeMap::new();
    let mut writes = 0;
    for request in &requests {
        let endpoint = endpoint(kind, &request.method, &request.path);
        if matches!(
            endpoint.as_str(),
            "POST batches" | "PUT member" | "POST batch/upsert" | "PUT contacts" | "POST hook"
        ) {
            writes += 1;
        }
        *by_endpoint.entry(endpoint).or_default() += 1;
    }
    // The simulator does not record downloads of Mailchimp's batch results (they are not
    // API requests); the connector makes one per finished batch.
    let mut all = requests.len();
    if kind == SimKind::Mailchimp {
        let downloads = by_endpoint.get("POST batches").copied().unwrap_or_default();
        by_endpoint.insert("GET results (not recorded)".to_owned(), downloads);
        all += downloads;
    }
    (writes, all, by_endpoint, elapsed, max_batch)
}

/// A short name for a request's route.
fn endpoint(kind: SimKind, method: &str, path: &str) -> String {
    let route = match kind {
        SimKind::Mailchimp if path == "/3.0/batches" => "batches",
        SimKind::Mailchimp if path.starts_with("/3.0/batches/") => "batch status",
        SimKind::Mailchimp if path.contains("/members/") => "member",
        SimKind::Hubspot if path.ends_with("/batch/upsert") => "batch/upsert",
        SimKind::Sendgrid if path == "/v3/marketing/contacts" => "contacts",
        SimKind::Sendgrid if path.contains("/imports/") => "job status",
        SimKind::Sendgrid if path.ends_with("/search/emails") => "search/emails",
        SimKind::Sendgrid if path.ends_with("/field_definitions") => "field_definitions",
        SimKind::Webhook => "hook",
        _ => path,
    };
    format!("{method} {route}")
}

// ---- rate --------------------------------------------------------------------------------

const RATE_MAX: u32 = 20;
const RATE_PROFILES: u32 = 3_000;
const RATE_BATCH: usize = 10;

async fn rate(runs: usize) {
    println!(
        "rate: HubSpot simulator at {RATE_MAX} calls per rolling 1 s, {RATE_PROFILES} profiles in batches of {RATE_BATCH}"
    );
    let mut rates = Vec::new();
    for run in 1..=runs {
        let (achieved, refusals, calls, elapsed) = rate_run().await;
        println!(
            "  run {run}: {achieved:.2} calls/s between 2 s and 12 s = {:.1}% of {RATE_MAX}/s; \
             {refusals} real 429s; {calls} calls in {:.1} s",
            achieved / f64::from(RATE_MAX) * 100.0,
            elapsed.as_secs_f64()
        );
        rates.push(achieved);
    }
    let achieved = median(&mut rates);
    println!(
        "  median: {achieved:.2} calls/s = {:.1}% of the allowed rate",
        achieved / f64::from(RATE_MAX) * 100.0
    );
}

/// One rate run: calls/s in the steady window, real 429s, all calls, time to settle.
async fn rate_run() -> (f64, u64, u64, Duration) {
    let env = Env::new();
    let mut setup = realistic(SimKind::Hubspot);
    setup.sim = Box::new(|config| {
        config.rate_max = Some(RATE_MAX);
        config.rate_interval = Duration::from_secs(1);
    });
    setup.config = Box::new(|config| config.max_batch = Some(RATE_BATCH));
    let esp = setup.start().await;
    let engine = start(&env, vec![esp.destination.clone()]);
    let people: BTreeMap<u32, Person> = (1..=RATE_PROFILES)
        .map(|n| (n, Person::new(n, "basic")))
        .collect();
    let started = Instant::now();
    env.put_many(&everyone(&people));
    tokio::time::sleep_until((started + Duration::from_secs(2)).into()).await;
    let at_two = esp.sim.stats().requests;
    tokio::time::sleep_until((started + Duration::from_secs(12)).into()).await;
    let at_twelve = esp.sim.stats().requests;
    wait_until("the sync", LIMIT, || env.settled(&esp.name)).await;
    let elapsed = started.elapsed();
    engine.stop().await;
    esp.assert_holds_exactly(&people);
    let stats = esp.sim.stats();
    (
        (at_twelve - at_two) as f64 / 10.0,
        stats.limit_refusals,
        stats.requests,
        elapsed,
    )
}

// ---- isolation ---------------------------------------------------------------------------

const ISOLATION_PROFILES: u32 = 20_000;

async fn isolation(runs: usize) {
    println!(
        "isolation: {ISOLATION_PROFILES} profiles to a webhook receiver, alone and beside a Mailchimp destination failing every call"
    );
    let mut alone = Vec::new();
    let mut beside = Vec::new();
    for run in 1..=runs {
        let rate_alone = isolation_run(false).await;
        let rate_beside = isolation_run(true).await;
        println!(
            "  run {run}: alone {rate_alone:.0} profiles/s, beside the failing one {rate_beside:.0} profiles/s"
        );
        alone.push(rate_alone);
        beside.push(rate_beside);
    }
    println!(
        "  median: alone {:.0} profiles/s, beside the failing one {:.0} profiles/s",
        median(&mut alone),
        median(&mut beside)
    );
}

/// One isolation run: the webhook destination's profiles/s.
async fn isolation_run(with_failing_neighbour: bool) -> f64 {
    let env = Env::new();
    let healthy = realistic(SimKind::Webhook).start().await;
    let mut destinations = vec![healthy.destination.clone()];
    let mut failing = None;
    if with_failing_neighbour {
        let mut setup = realistic(SimKind::Mailchimp);
        setup.faults = Faults {
            server_error: 1.0,
            ..Faults::default()
        };
        let esp = setup.start().await;
        destinations.push(esp.destination.clone());
        failing = Some(esp);
    }
    let engine = start(&env, destinations);
    let people: BTreeMap<u32, Person> = (1..=ISOLATION_PROFILES)
        .map(|n| (n, Person::new(n, "basic")))
        .collect();
    let started = Instant::now();
    env.put_many(&everyone(&people));
    wait_until("the healthy destination", LIMIT, || {
        env.settled(&healthy.name)
    })
    .await;
    let elapsed = started.elapsed();
    engine.stop().await;
    healthy.assert_holds_exactly(&people);
    if let Some(failing) = failing {
        let counts = env.state.counts(&failing.name).expect("counts");
        assert_eq!(counts.confirmed, 0);
        assert_eq!(counts.dead_letters, 0);
        assert!(failing.sim.stats().requests > 0);
    }
    f64::from(ISOLATION_PROFILES) / elapsed.as_secs_f64()
}
