//! `tributary identity dedupe|generate|evaluate|review`: probabilistic matching of records that
//! share no identifier, on CSV files.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum IdentityCommand {
    /// Clusters the records of a CSV file; writes `record_id,cluster_id` for every record.
    Dedupe {
        /// The CSV file (header row; columns named as in [identity.matching]).
        file: PathBuf,
        /// The tributary.toml whose [identity.matching] table configures matching; the
        /// built-in example configuration when absent.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Where to write `record_id,cluster_id` (standard output when absent).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Where to write the review queue: pairs between the two thresholds.
        #[arg(long)]
        review: Option<PathBuf>,
    },
    /// Writes a labelled test file: realistic people with duplicates (typos, nicknames,
    /// swapped names, transposed dates, missing values) and an `entity_id` column.
    Generate {
        /// How many records.
        #[arg(long, short, default_value_t = 10_000)]
        records: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        output: PathBuf,
    },
    /// Pairwise precision, recall and F1 of a clustering against labelled data.
    Evaluate {
        /// The labelled file (`record_id`, `entity_id` columns).
        truth: PathBuf,
        /// The `record_id,cluster_id` file written by `dedupe`.
        clusters: PathBuf,
    },
    /// Lists the review queue, strongest first: a running server's (pairs of stored profiles
    /// between the thresholds), or the CSV written by `dedupe --review FILE`.
    Review {
        /// A review CSV written by `dedupe --review`; without it, the server's queue.
        file: Option<PathBuf>,
        #[command(flatten)]
        server: Server,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Runs probabilistic matching over a running server's profiles: merges pairs above the
    /// upper threshold (recorded as merges with the weight and field agreements), queues the
    /// pairs between the thresholds for review.
    Match {
        #[command(flatten)]
        server: Server,
    },
    /// Decides a review item of a running server: `merge` or `distinct`.
    Decide {
        item: u64,
        #[arg(value_parser = ["merge", "distinct"])]
        decision: String,
        #[command(flatten)]
        server: Server,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct Server {
    /// The server's base URL.
    #[arg(long, env = "TRIBUTARY_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The server's admin key, or an API key with the scope the command needs (`tributary keys`).
    #[arg(long, env = "TRIBUTARY_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
}

impl Server {
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<(reqwest::RequestBuilder, String)> {
        let Some(key) = &self.admin_key else {
            bail!("give the server's admin key with --admin-key or TRIBUTARY_ADMIN_KEY");
        };
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        Ok((
            reqwest::Client::new()
                .request(method, &url)
                .bearer_auth(key),
            url,
        ))
    }
}

pub(crate) async fn run_server(command: IdentityCommand) -> anyhow::Result<()> {
    match command {
        IdentityCommand::Match { server } => {
            let (request, url) = server.request(reqwest::Method::POST, "/v1/identity/match")?;
            let report: serde_json::Value = crate::events::send_json(request, &url).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        IdentityCommand::Review { server, limit, .. } => {
            let (request, url) = server.request(reqwest::Method::GET, "/v1/identity/review")?;
            let queue: serde_json::Value = crate::events::send_json(request, &url).await?;
            let items = queue["items"].as_array().cloned().unwrap_or_default();
            for item in items.iter().take(limit) {
                println!(
                    "#{:<6} {:>7.2}  {}  {}  {}",
                    item["seq"],
                    item["weight"].as_f64().unwrap_or(0.0),
                    item["left"].as_str().unwrap_or(""),
                    item["right"].as_str().unwrap_or(""),
                    item["levels"]
                );
            }
            eprintln!(
                "{} pairs waiting for review (decide with: tributary identity decide ITEM merge|distinct)",
                items.len()
            );
        }
        IdentityCommand::Decide {
            item,
            decision,
            server,
        } => {
            let (request, url) = server.request(
                reqwest::Method::POST,
                &format!("/v1/identity/review/{item}"),
            )?;
            let answer: serde_json::Value = crate::events::send_json(
                request.json(&serde_json::json!({"decision": decision})),
                &url,
            )
            .await?;
            println!("{answer}");
        }
        _ => unreachable!("file commands run synchronously"),
    }
    Ok(())
}

impl IdentityCommand {
    /// Whether the command talks to a running server.
    pub(crate) fn needs_server(&self) -> bool {
        matches!(
            self,
            IdentityCommand::Match { .. }
                | IdentityCommand::Decide { .. }
                | IdentityCommand::Review { file: None, .. }
        )
    }
}

fn matching_config(config: Option<&PathBuf>) -> anyhow::Result<trib_match::MatchConfig> {
    match config {
        None => Ok(trib_match::MatchConfig::example()),
        Some(path) => {
            let config = trib_config::Config::load(path)?;
            match config.identity.matching {
                Some(matching) => Ok(matching),
                None => bail!("{} has no [identity.matching] table", path.display()),
            }
        }
    }
}

fn open(path: &PathBuf) -> anyhow::Result<BufReader<File>> {
    Ok(BufReader::new(File::open(path).with_context(|| {
        format!("cannot open {}", path.display())
    })?))
}

fn create(path: &PathBuf) -> anyhow::Result<BufWriter<File>> {
    Ok(BufWriter::new(File::create(path).with_context(|| {
        format!("cannot create {}", path.display())
    })?))
}

pub(crate) fn run(command: IdentityCommand) -> anyhow::Result<()> {
    match command {
        IdentityCommand::Dedupe {
            file,
            config,
            output,
            review,
        } => {
            let config = matching_config(config.as_ref())?;
            let input = open(&file)?;
            let review = review.as_ref().map(create).transpose()?;
            let report = match &output {
                Some(path) => trib_match::dedupe_with_review(input, create(path)?, review, &config),
                None => {
                    trib_match::dedupe_with_review(input, std::io::stdout().lock(), review, &config)
                }
            }
            .with_context(|| format!("cannot deduplicate {}", file.display()))?;
            eprintln!(
                "{} records, {} pairs compared, {} merges, {} clusters, {} pairs for review",
                report.records,
                report.pairs_compared,
                report.merges,
                report.clusters,
                report.review_pairs
            );
        }
        IdentityCommand::Generate {
            records,
            seed,
            output,
        } => {
            let mut writer = create(&output)?;
            let stats = trib_match::generate(
                records,
                seed,
                &mut writer,
                &trib_match::GenerateOptions::default(),
            )?;
            writer.flush()?;
            eprintln!("{stats:?}");
        }
        IdentityCommand::Evaluate { truth, clusters } => {
            let scores = trib_match::evaluate(open(&truth)?, open(&clusters)?)?;
            println!(
                "precision {:.4}  recall {:.4}  F1 {:.4}  (true pairs found {}, false pairs {}, missed pairs {})",
                scores.precision,
                scores.recall,
                scores.f1,
                scores.true_pos,
                scores.false_pos,
                scores.false_neg
            );
        }
        IdentityCommand::Review {
            file: Some(file),
            limit,
            ..
        } => {
            let mut reader = csv::Reader::from_reader(open(&file)?);
            let headers = reader.headers()?.clone();
            let mut rows: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>()?;
            let weight = |row: &csv::StringRecord| {
                row.get(2)
                    .and_then(|w| w.parse::<f64>().ok())
                    .unwrap_or(f64::MIN)
            };
            rows.sort_by(|a, b| weight(b).total_cmp(&weight(a)));
            println!("{}", headers.iter().collect::<Vec<_>>().join("\t"));
            for row in rows.iter().take(limit) {
                println!("{}", row.iter().collect::<Vec<_>>().join("\t"));
            }
            eprintln!("{} pairs waiting for review", rows.len());
        }
        IdentityCommand::Review { file: None, .. }
        | IdentityCommand::Match { .. }
        | IdentityCommand::Decide { .. } => {
            unreachable!("server commands run on the async runtime")
        }
    }
    Ok(())
}
