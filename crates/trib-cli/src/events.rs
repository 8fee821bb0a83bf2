//! `tributary events list|tail`: reads what a running server stored, through its admin API.
//!
//! The server owns its data directory while it runs, so the CLI asks it over HTTP
//! (`GET /v1/events`) rather than opening the files itself.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// Subcommands of `tributary events`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum EventsCommand {
    /// Prints stored events as JSON lines, oldest first, partition by partition.
    List(ReadArgs),
    /// Prints the newest events, then follows new ones as they arrive (Ctrl-C stops).
    Tail(TailArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ConnectArgs {
    /// The server's base URL.
    #[arg(long, env = "TRIBUTARY_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The server's admin key, or an API key with the scope the command needs (`tributary keys`).
    #[arg(long, env = "TRIBUTARY_ADMIN_KEY", hide_env_values = true)]
    admin_key: String,
    /// Why you read the data (a word such as `support` or `gdpr-request`), recorded with your
    /// key in the server's audit log; the route's default purpose when absent.
    #[arg(
        long = "access-purpose",
        id = "access_purpose",
        env = "TRIBUTARY_PURPOSE"
    )]
    purpose: Option<String>,
    /// Read the quarantine (rejected messages and why) instead of the event log.
    #[arg(long)]
    quarantine: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ReadArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Only this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// Only records after this offset (needs --partition).
    #[arg(long, requires = "partition")]
    after: Option<u64>,
    /// At most this many records.
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

#[derive(Debug, clap::Args)]
pub(crate) struct TailArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// How often to ask for new events, in milliseconds.
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
}

#[derive(Debug, Deserialize)]
struct ReadResponse {
    records: Vec<RecordView>,
    next: Option<Cursor>,
}

#[derive(Debug, Deserialize)]
struct RecordView {
    partition: u32,
    offset: u64,
    data: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct Cursor {
    partition: u32,
    after: Option<u64>,
}

pub(crate) async fn run(command: EventsCommand) -> anyhow::Result<()> {
    match command {
        EventsCommand::List(args) => list(args).await,
        EventsCommand::Tail(args) => tail(args).await,
    }
}

async fn list(args: ReadArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.connect)?;
    let partitions = match args.partition {
        Some(partition) => vec![partition],
        None => client
            .partitions()
            .await?
            .iter()
            .map(|view| view.partition)
            .collect(),
    };
    let mut remaining = args.limit;
    for partition in partitions {
        let mut after = if Some(partition) == args.partition {
            args.after
        } else {
            None
        };
        while remaining > 0 {
            let page = client.read(partition, after, remaining.min(1000)).await?;
            for record in &page.records {
                print_record(record)?;
            }
            remaining -= page.records.len();
            match page.next {
                Some(next) if next.partition == partition && next.after.is_some() => {
                    after = next.after
                }
                _ => break,
            }
        }
    }
    Ok(())
}

async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.connect)?;
    // Start at the end of every partition, then poll each for what comes after.
    let mut positions: Vec<(u32, Option<u64>)> = client
        .partitions()
        .await?
        .iter()
        .map(|view| (view.partition, view.end_offset.checked_sub(1)))
        .collect();
    loop {
        let mut printed = false;
        for (partition, after) in &mut positions {
            let page = client.read(*partition, *after, 1000).await?;
            for record in &page.records {
                print_record(record)?;
                *after = Some(record.offset);
                printed = true;
            }
        }
        if !printed {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(args.interval_ms)) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    }
}

fn print_record(record: &RecordView) -> anyhow::Result<()> {
    let line = serde_json::json!({
        "partition": record.partition,
        "offset": record.offset,
        "data": record.data,
    });
    println!("{}", serde_json::to_string(&line)?);
    Ok(())
}

pub(crate) struct Client {
    http: reqwest::Client,
    endpoint: String,
    admin_key: String,
}

impl Client {
    pub(crate) fn new(args: &ConnectArgs) -> anyhow::Result<Self> {
        let path = if args.quarantine {
            "/v1/quarantine"
        } else {
            "/v1/events"
        };
        Ok(Self {
            http: http_client(args.purpose.as_deref())?,
            endpoint: format!("{}{path}", args.url.trim_end_matches('/')),
            admin_key: args.admin_key.clone(),
        })
    }

    async fn read(
        &self,
        partition: u32,
        after: Option<u64>,
        limit: usize,
    ) -> anyhow::Result<ReadResponse> {
        let mut query = vec![
            ("partition", partition.to_string()),
            ("limit", limit.to_string()),
        ];
        if let Some(after) = after {
            query.push(("after", after.to_string()));
        }
        let request = self
            .http
            .get(&self.endpoint)
            .bearer_auth(&self.admin_key)
            .query(&query);
        send_json(request, &self.endpoint).await
    }

    /// Returns every partition with its end offset.
    async fn partitions(&self) -> anyhow::Result<Vec<PartitionView>> {
        let url = format!("{}/partitions", self.endpoint);
        send_json(self.http.get(&url).bearer_auth(&self.admin_key), &url).await
    }
}

#[derive(Debug, Deserialize)]
struct PartitionView {
    partition: u32,
    end_offset: u64,
}

impl ReadArgs {
    /// The same read, of the quarantine.
    pub(crate) fn of_quarantine(mut self) -> ReadArgs {
        self.connect.quarantine = true;
        self
    }
}

/// Subcommands of `tributary quarantine`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum QuarantineCommand {
    /// Prints quarantined messages with their reason, as JSON lines.
    List(ReadArgs),
    /// Prints one quarantined message in full.
    Show {
        #[command(flatten)]
        connect: ConnectArgs,
        /// Its offset (as `list` prints it).
        offset: u64,
    },
    /// Runs quarantined messages through validation again and stores the ones that pass,
    /// exactly once. Use after fixing a schema or a source's rules.
    Replay {
        #[command(flatten)]
        connect: ConnectArgs,
        /// Only messages of this source.
        #[arg(long)]
        source: Option<String>,
        /// Only messages refused with this code (e.g. schema_violation).
        #[arg(long)]
        code: Option<String>,
    },
}

pub(crate) async fn run_quarantine(command: QuarantineCommand) -> anyhow::Result<()> {
    match command {
        QuarantineCommand::List(args) => list(args.of_quarantine()).await,
        QuarantineCommand::Show {
            mut connect,
            offset,
        } => {
            connect.quarantine = true;
            let client = Client::new(&connect)?;
            let page = client.read(0, offset.checked_sub(1), 1).await?;
            let Some(record) = page
                .records
                .first()
                .filter(|record| record.offset == offset)
            else {
                bail!("no quarantined message at offset {offset}");
            };
            println!("{}", serde_json::to_string_pretty(&record.data)?);
            Ok(())
        }
        QuarantineCommand::Replay {
            connect,
            source,
            code,
        } => {
            let url = format!("{}/v1/quarantine/replay", connect.url.trim_end_matches('/'));
            let mut query = Vec::new();
            if let Some(source) = source {
                query.push(("source", source));
            }
            if let Some(code) = code {
                query.push(("code", code));
            }
            let request = http_client(connect.purpose.as_deref())?
                .post(&url)
                .bearer_auth(&connect.admin_key)
                .query(&query);
            let report: serde_json::Value = send_json(request, &url).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

/// Sends an admin request and parses its JSON answer; a non-2xx answer is an error that quotes
/// the server's body (which names the problem and its code).
/// An HTTP client that names the purpose of every request (`X-Tributary-Purpose`), which the
/// server records in its audit log with the key.
pub(crate) fn http_client(purpose: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(purpose) = purpose {
        let value = reqwest::header::HeaderValue::from_str(purpose)
            .context("--access-purpose must be a word such as `support`")?;
        headers.insert("x-tributary-purpose", value);
    }
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

pub(crate) async fn send_json<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    url: &str,
) -> anyhow::Result<T> {
    let response = request
        .send()
        .await
        .with_context(|| format!("failed to reach {url}"))?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        bail!("{url} answered {status}: {body}");
    }
    Ok(serde_json::from_str(&body)?)
}
