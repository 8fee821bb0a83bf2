//! `tributary demo`: the whole ingestion path on bundled sample data, end to end.
//!
//! It starts a real server on a temporary embedded data directory (or `--data-dir`), sends four
//! sources' sample messages through the real HTTP API exactly as Segment's libraries would
//! (HTTP Basic write keys, batches, gzip for the server-side source), retries one batch to show
//! deduplication, sends one bad message to show the quarantine, then reads the log back through
//! the admin API and prints a summary. It ends with syncs: consent events for the sample's
//! CRM users (three in four opt in), then the golden profiles of those who consented confirmed
//! in three simulated ESPs (Mailchimp, HubSpot, SendGrid; `trib-esp-sim`, in process).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use trib_config::Config;

use crate::serve::Server;

/// The bundled sample: (source name, NDJSON lines). See scripts/generate_demo_data.py.
const SAMPLE: [(&str, &str); 4] = [
    ("website", include_str!("../demo/website.ndjson")),
    ("mobile_app", include_str!("../demo/mobile_app.ndjson")),
    ("backend", include_str!("../demo/backend.ndjson")),
    ("crm", include_str!("../demo/crm.ndjson")),
];

/// Messages per `/v1/batch` request, as Segment's libraries batch them.
const BATCH_SIZE: usize = 50;

/// Arguments of `tributary demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Keep the data here instead of in a temporary directory that is removed at the end.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// After the summary, keep serving on this address until Ctrl-C, for exploring with curl.
    #[arg(long)]
    serve: Option<std::net::SocketAddr>,
}

struct Demo {
    http: reqwest::Client,
    base: String,
    keys: BTreeMap<&'static str, String>,
    admin_key: String,
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let temp = tempfile::tempdir().context("failed to create a temporary directory")?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let keys: BTreeMap<&'static str, String> = SAMPLE
        .iter()
        .map(|(source, _)| {
            (
                *source,
                format!("wk_demo_{}", uuid::Uuid::new_v4().simple()),
            )
        })
        .collect();
    let admin_key = format!("ak_demo_{}", uuid::Uuid::new_v4().simple());
    let simulators = Simulators::start().await?;
    let config = demo_config(&data_dir, args.serve, &keys, &admin_key, &simulators)?;
    let metrics =
        trib_api::install_metrics_recorder().context("failed to install the metrics recorder")?;
    let server = Server::start(&config, Some(metrics)).await?;
    let demo = Demo {
        http: reqwest::Client::new(),
        base: format!("http://{}", server.addr()),
        keys,
        admin_key,
    };
    println!(
        "Tributary demo: a server on {} with its data in {}",
        demo.base,
        data_dir.display()
    );
    println!();

    let started = Instant::now();
    let mut sent = BTreeMap::new();
    let mut totals = Totals::default();
    for (source, ndjson) in SAMPLE {
        let messages = ndjson
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<Vec<Value>, _>>()
            .with_context(|| format!("the bundled sample for {source} is not valid NDJSON"))?;
        let gzip = source == "backend";
        for chunk in messages.chunks(BATCH_SIZE) {
            totals.add(&demo.send_batch(source, chunk, gzip).await?);
        }
        sent.insert(source, messages.len());
    }
    let elapsed = started.elapsed();

    // A library that timed out waiting for the answer sends the same batch again.
    let retry: Vec<Value> = SAMPLE[2]
        .1
        .lines()
        .take(5)
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let retried = demo.send_batch("backend", &retry, false).await?;
    // A buggy integration forgets the user: the message is kept in the quarantine, not lost.
    let bad = vec![
        json!({"type": "track", "event": "Coupon Applied", "properties": {"coupon": "WELCOME10"}}),
        json!({"type": "track", "userId": "user-1001", "event": "Coupon Applied", "timestamp": "yesterday"}),
        json!({"type": "track", "userId": "user-1001", "event": "Coupon Applied", "properties": {"coupon": "WELCOME10"}}),
    ];
    let rejected = demo.send_batch("website", &bad, false).await?;

    let stored = demo.read_all("/v1/events").await?;
    let quarantined = demo.read_all("/v1/quarantine").await?;
    print_summary(
        &sent,
        &totals,
        elapsed,
        &retried,
        &rejected,
        &stored,
        &quarantined,
    );

    // People opt in to email marketing on the website (a few decline): only they may be
    // sent to the ESPs.
    let consents = consent_events()?;
    let granted = consents
        .iter()
        .filter(|event| event["properties"]["status"] == "granted")
        .count();
    demo.send_batch("website", &consents, false).await?;

    server.identity_caught_up().await?;
    let store = server.profiles().clone();
    tokio::task::spawn_blocking(move || print_profiles(&store)).await??;

    println!();
    println!(
        "Consent: {granted} people granted email_marketing, {} declined; syncing to three simulated ESPs...",
        consents.len() - granted
    );
    let synced = demo.wait_for_sync(Duration::from_secs(90)).await?;
    simulators.print(&synced);

    if let Some(addr) = args.serve {
        println!();
        println!("Still serving on http://{addr} (Ctrl-C stops). Try:");
        println!(
            "  curl -s -u {}: http://{addr}/v1/track -d '{{\"userId\":\"user-1000\",\"event\":\"Tried Curl\"}}'",
            demo.keys["website"]
        );
        println!(
            "  curl -s -H 'Authorization: Bearer {}' 'http://{addr}/v1/events?limit=5'",
            demo.admin_key
        );
        println!(
            "  curl -s -H 'Authorization: Bearer {}' http://{addr}/metrics | grep tributary_",
            demo.admin_key
        );
        tokio::signal::ctrl_c().await?;
    }
    server.shutdown().await?;
    simulators.shutdown().await;
    Ok(())
}

/// The ESP simulators the demo syncs to, and the destinations that point at them.
struct Simulators {
    mailchimp: trib_esp_sim::Simulator,
    hubspot: trib_esp_sim::Simulator,
    sendgrid: trib_esp_sim::Simulator,
}

const SIM_KEY: &str = "demo-esp-key";

impl Simulators {
    async fn start() -> anyhow::Result<Self> {
        use trib_esp_sim::{SimConfig, SimKind, Simulator};
        let local: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut mailchimp = SimConfig::new(SimKind::Mailchimp);
        mailchimp.mailchimp_lists = vec!["demo-list".to_owned()];
        mailchimp.mailchimp_merge_fields = ["FNAME", "LNAME", "PLAN", "CITY"]
            .map(str::to_owned)
            .to_vec();
        let mut hubspot = SimConfig::new(SimKind::Hubspot);
        hubspot.hubspot_properties = ["email", "firstname", "lastname", "plan", "city"]
            .map(str::to_owned)
            .to_vec();
        let mut sendgrid = SimConfig::new(SimKind::Sendgrid);
        sendgrid.sendgrid_custom_fields =
            vec![("e1_T".to_owned(), "plan".to_owned(), "Text".to_owned())];
        let mut started = Vec::new();
        for mut config in [mailchimp, hubspot, sendgrid] {
            config.api_key = SIM_KEY.to_owned();
            started.push(
                Simulator::start(config, local)
                    .await
                    .context("failed to start an ESP simulator")?,
            );
        }
        let [mailchimp, hubspot, sendgrid] = <[Simulator; 3]>::try_from(started)
            .map_err(|_| anyhow::anyhow!("three simulators expected"))?;
        Ok(Self {
            mailchimp,
            hubspot,
            sendgrid,
        })
    }

    /// `[[destinations]]` for the three simulators.
    fn destinations_toml(&self) -> String {
        format!(
            r#"
[[destinations]]
name = "mailchimp-newsletter"
type = "mailchimp"
api_key = "{SIM_KEY}"
list_id = "demo-list"
base_url = "{}"
batch_window = "100ms"
[destinations.fields]
FNAME = "firstName"
LNAME = "lastName"
PLAN = "plan"
CITY = "address.city"

[[destinations]]
name = "hubspot-crm"
type = "hubspot"
token = "{SIM_KEY}"
base_url = "{}"
batch_window = "100ms"
[destinations.fields]
firstname = "firstName"
lastname = "lastName"
plan = "plan"
city = "address.city"

[[destinations]]
name = "sendgrid-marketing"
type = "sendgrid"
api_key = "{SIM_KEY}"
base_url = "{}"
batch_window = "100ms"
[destinations.fields]
first_name = "firstName"
last_name = "lastName"
city = "address.city"
e1_T = "plan"
"#,
            self.mailchimp.base_url(),
            self.hubspot.base_url(),
            self.sendgrid.base_url()
        )
    }

    fn print(&self, synced: &[Value]) {
        let sims = [
            ("mailchimp-newsletter", &self.mailchimp),
            ("hubspot-crm", &self.hubspot),
            ("sendgrid-marketing", &self.sendgrid),
        ];
        for (name, sim) in sims {
            let state = synced.iter().find(|d| d["name"] == name);
            let contacts = sim.contacts();
            let stats = sim.stats();
            println!(
                "  {name:<22} {} confirmed in sync.db, {} contacts in the simulated ESP, {} API calls, {} dead letters",
                state.map_or(json!(0), |d| d["confirmed"].clone()),
                contacts.len(),
                stats.requests,
                state.map_or(json!(0), |d| d["dead_letters"].clone()),
            );
            if let Some(contact) = contacts.values().next() {
                let fields: Vec<String> = contact
                    .fields
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!("      e.g. {}: {}", contact.email, fields.join(", "));
            }
        }
        println!("  (tributary destinations list / dlq list NAME on a running server)");
    }

    async fn shutdown(self) {
        self.mailchimp.shutdown().await;
        self.hubspot.shutdown().await;
        self.sendgrid.shutdown().await;
    }
}

/// The consent events of the sample's CRM users: three in four grant email marketing.
fn consent_events() -> anyhow::Result<Vec<Value>> {
    let mut users: Vec<String> = SAMPLE[3]
        .1
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(serde_json::from_str::<Value>)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|message| message["type"] == "identify")
        .filter_map(|message| message["userId"].as_str().map(str::to_owned))
        .collect();
    users.sort();
    users.dedup();
    Ok(users
        .iter()
        .enumerate()
        .map(|(index, user)| {
            let status = if index % 4 == 3 { "denied" } else { "granted" };
            json!({
                "type": "track",
                "messageId": format!("demo-consent-{user}"),
                "userId": user,
                "event": "Consent Updated",
                "properties": {
                    "purpose": "email_marketing",
                    "status": status,
                    "proof": {"form_id": "newsletter-footer", "text_version": "2026-11"}
                },
                "timestamp": "2026-11-23T09:00:00.000Z"
            })
        })
        .collect())
}

fn demo_config(
    data_dir: &std::path::Path,
    serve: Option<std::net::SocketAddr>,
    keys: &BTreeMap<&'static str, String>,
    admin_key: &str,
    simulators: &Simulators,
) -> anyhow::Result<Config> {
    let mut toml = format!(
        "version = 1\n[server]\nlisten = \"{}\"\ndata_dir = {}\nadmin_key = \"{admin_key}\"\n[log]\npartitions = 4\n[schemas]\ndir = {}\n",
        serve.map_or_else(|| "127.0.0.1:0".to_owned(), |addr| addr.to_string()),
        toml_string(&data_dir.display().to_string()),
        toml_string(&data_dir.join("schemas").display().to_string()),
    );
    for (source, key) in keys {
        toml.push_str(&format!(
            "[[sources]]\nname = \"{source}\"\nwrite_key = \"{key}\"\n"
        ));
    }
    toml.push_str(&simulators.destinations_toml());
    Ok(Config::from_toml_str(&toml, &|_| None)?)
}

fn toml_string(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

#[derive(Debug, Default)]
struct Totals {
    requests: usize,
    accepted: u64,
    duplicates: u64,
    rejected: u64,
}

impl Totals {
    fn add(&mut self, response: &Value) {
        self.requests += 1;
        self.accepted += response["accepted"].as_u64().unwrap_or(0);
        self.duplicates += response["duplicates"].as_u64().unwrap_or(0);
        self.rejected += response["rejected"].as_u64().unwrap_or(0);
    }
}

impl Demo {
    async fn send_batch(
        &self,
        source: &str,
        messages: &[Value],
        gzip: bool,
    ) -> anyhow::Result<Value> {
        let body = serde_json::to_vec(&json!({
            "batch": messages,
            "sentAt": jiff::Timestamp::now().to_string(),
        }))?;
        let mut request = self
            .http
            .post(format!("{}/v1/batch", self.base))
            .basic_auth(&self.keys[source], Some(""))
            .header("content-type", "application/json");
        request = if gzip {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&body)?;
            request
                .header("content-encoding", "gzip")
                .body(encoder.finish()?)
        } else {
            request.body(body)
        };
        let response = request.send().await?;
        let status = response.status();
        let answer: Value = response.json().await?;
        if !status.is_success() {
            bail!("the server refused a {source} batch with {status}: {answer}");
        }
        Ok(answer)
    }

    /// Reads every record of a log through the admin API, partition by partition.
    async fn read_all(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let partitions: Vec<Value> = self.admin_get(&format!("{path}/partitions"), &[]).await?;
        let mut records = Vec::new();
        for view in partitions {
            let partition = view["partition"].as_u64().unwrap_or(0).to_string();
            let mut after: Option<String> = None;
            loop {
                let mut query = vec![
                    ("partition", partition.clone()),
                    ("limit", "1000".to_owned()),
                ];
                if let Some(after) = &after {
                    query.push(("after", after.clone()));
                }
                let page: Value = self.admin_get(path, &query).await?;
                let page_records = page["records"].as_array().cloned().unwrap_or_default();
                let last = page_records
                    .last()
                    .and_then(|record| record["offset"].as_u64());
                records.extend(page_records);
                match (last, page["next"]["partition"].as_u64()) {
                    (Some(last), Some(next)) if next.to_string() == partition => {
                        after = Some(last.to_string())
                    }
                    _ => break,
                }
            }
        }
        Ok(records)
    }

    /// Waits until every destination has nothing pending and its confirmed count has held
    /// still for a second (consent and profile changes arrive through two consumers).
    async fn wait_for_sync(&self, timeout: Duration) -> anyhow::Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        let mut previous: Option<Vec<Value>> = None;
        let mut still = 0;
        loop {
            let answer: Value = self.admin_get("/v1/destinations", &[]).await?;
            let destinations = answer["destinations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let idle = destinations
                .iter()
                .all(|d| d["pending"] == 0 && d["deletions_pending"] == 0);
            let confirmed: Vec<Value> = destinations
                .iter()
                .map(|d| d["confirmed"].clone())
                .collect();
            let same = previous.as_ref().is_some_and(|p| {
                p.iter().map(|d| d["confirmed"].clone()).collect::<Vec<_>>() == confirmed
            });
            still = if idle && same { still + 1 } else { 0 };
            if still >= 4 {
                return Ok(destinations);
            }
            if Instant::now() > deadline {
                bail!("the destinations did not settle within {timeout:?}: {answer}");
            }
            previous = Some(destinations);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn admin_get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.admin_key)
            .query(query)
            .timeout(Duration::from_secs(30))
            .send()
            .await?
            .error_for_status()?;
        Ok(response.json().await?)
    }
}

fn print_summary(
    sent: &BTreeMap<&str, usize>,
    totals: &Totals,
    elapsed: Duration,
    retried: &Value,
    rejected: &Value,
    stored: &[Value],
    quarantined: &[Value],
) {
    let mut by_source: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut by_partition: BTreeMap<u64, usize> = BTreeMap::new();
    for record in stored {
        let source = record["data"]["source"].as_str().unwrap_or("?").to_owned();
        let kind = record["data"]["type"].as_str().unwrap_or("?").to_owned();
        *by_source
            .entry(source)
            .or_default()
            .entry(kind)
            .or_default() += 1;
        *by_partition
            .entry(record["partition"].as_u64().unwrap_or(0))
            .or_default() += 1;
    }
    let n_sent: usize = sent.values().sum();
    println!(
        "Sent {n_sent} sample messages from {} sources in {} batch requests in {:.0} ms; every one was acknowledged only once durable.",
        sent.len(),
        totals.requests,
        elapsed.as_secs_f64() * 1000.0
    );
    println!();
    println!(
        "{:<12} {:>6} {:>9} {:>6} {:>6} {:>7} {:>6} {:>6}",
        "source", "sent", "identify", "track", "page", "screen", "group", "alias"
    );
    for (source, n) in sent {
        let kinds = by_source.get(*source).cloned().unwrap_or_default();
        let count = |kind: &str| kinds.get(kind).copied().unwrap_or(0);
        println!(
            "{:<12} {:>6} {:>9} {:>6} {:>6} {:>7} {:>6} {:>6}",
            source,
            n,
            count("identify"),
            count("track"),
            count("page"),
            count("screen"),
            count("group"),
            count("alias")
        );
    }
    println!();
    println!(
        "Event log: {} events in {} partitions ({}), keyed by userId/anonymousId so each person's events stay in order.",
        stored.len(),
        by_partition.len(),
        by_partition
            .iter()
            .map(|(partition, n)| format!("#{partition}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "Retry of a 5-message batch: {} accepted, {} recognised as duplicates by messageId.",
        retried["accepted"], retried["duplicates"]
    );
    println!(
        "Batch of 3 with 2 bad messages: {} accepted, {} kept in the quarantine with the reason:",
        rejected["accepted"], rejected["rejected"]
    );
    for record in quarantined {
        let data = &record["data"];
        println!(
            "  message #{} from {}: {} ({})",
            data["index"],
            data["source"].as_str().unwrap_or("?"),
            data["reason"].as_str().unwrap_or("?"),
            data["code"].as_str().unwrap_or("?")
        );
    }
    if let Some(order) = stored
        .iter()
        .find(|record| record["data"]["event"] == "Order Completed")
    {
        println!();
        println!("One stored event (as `tributary events list` shows it):");
        println!(
            "{}",
            serde_json::to_string_pretty(&order["data"]).unwrap_or_default()
        );
    }
}

/// Prints the golden profiles assembled from the most sources (blocking: the store's calls).
fn print_profiles(store: &Arc<dyn trib_store::ProfileStore>) -> anyhow::Result<()> {
    let mut profiles = Vec::new();
    let mut cursor = 0;
    loop {
        let changes = store.changes(None, cursor, 1_000)?;
        let Some(last) = changes.last() else { break };
        cursor = last.seq;
        for change in &changes {
            if let trib_identity::view::Found::Active { profile, .. } =
                trib_identity::view::find(store.as_ref(), change.id)?
                && profile.id == change.id.to_string()
            {
                let events = store.timeline_summary(&change.id)?.events;
                profiles.push((profile, events));
            }
        }
    }
    let total = profiles.len();
    profiles.sort_by(|(a, a_events), (b, b_events)| {
        b.sources
            .len()
            .cmp(&a.sources.len())
            .then(b_events.cmp(a_events))
            .then(a.id.cmp(&b.id))
    });
    let merged: u32 = profiles.iter().map(|(p, _)| p.merge_count).sum();
    println!();
    println!(
        "Identity resolution: {total} golden profiles ({merged} merges); the three built from the most sources:"
    );
    for (profile, events) in profiles.iter().take(3) {
        let text = |name: &str| {
            profile
                .traits
                .get(name)
                .and_then(|t| t.value.as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        println!(
            "  {}  {} {} <{}>  {} events from {}",
            profile.id,
            text("firstName"),
            text("lastName"),
            text("email"),
            events,
            profile.sources.join(", ")
        );
        let identifiers: Vec<String> = profile
            .identifiers
            .iter()
            .map(|i| format!("{}={}", i.kind, i.value))
            .collect();
        println!("      identifiers: {}", identifiers.join(", "));
        for name in ["plan", "phone"] {
            if let Some(golden) = profile.traits.get(name) {
                println!(
                    "      {name}: {} (rule {}, from {})",
                    golden.value,
                    golden.rule,
                    golden.sources.join("+")
                );
            }
        }
    }
    println!(
        "  (see one with: tributary profiles show <id> / explain <id>, or GET /v1/profiles/<id>)"
    );
    Ok(())
}
