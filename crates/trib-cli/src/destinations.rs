//! `tributary destinations list|resync|dlq list|dlq replay`: the sync state of a running server's
//! destinations (scopes `destinations:read` and `destinations:write`).
//!
//! Dead letters name profile ids, error classes and the ESP's error detail, never personal
//! values.

use reqwest::Method;
use serde_json::{Value, json};

use crate::events::send_json;
use crate::profiles::Connect;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum DestinationsCommand {
    /// Lists the configured destinations with their pending, confirmed and dead-lettered counts.
    List {
        #[command(flatten)]
        connect: Connect,
        /// Prints the server's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sends every profile's mapped fields to a destination again and confirms them, for an
    /// ESP that drifted from what it confirmed (records edited or deleted there). The server
    /// queues the work; `destinations list` shows it pending.
    Resync {
        #[command(flatten)]
        connect: Connect,
        /// The destination's configured name.
        destination: String,
    },
    /// The dead-letter queue of a destination.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

/// Dead letters per request of `dlq list` (the server's most).
const DLQ_PAGE: usize = 1000;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum DlqCommand {
    /// Lists a destination's dead letters, oldest first.
    List {
        #[command(flatten)]
        connect: Connect,
        /// The destination's configured name.
        destination: String,
        #[arg(long)]
        json: bool,
    },
    /// Sends dead letters again (all of the destination's, or those given with --id).
    Replay {
        #[command(flatten)]
        connect: Connect,
        destination: String,
        /// A dead letter's id (repeatable); all when absent.
        #[arg(long = "id")]
        ids: Vec<i64>,
    },
}

pub(crate) async fn run(command: DestinationsCommand) -> anyhow::Result<()> {
    match command {
        DestinationsCommand::List { connect, json } => {
            let (request, url) = connect.request(Method::GET, "/v1/destinations")?;
            let answer: Value = send_json(request, &url).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            println!(
                "{:<24} {:<10} {:<18} {:<7} {:>9} {:>10} {:>10} {:>6}",
                "NAME", "TYPE", "PURPOSE", "MODE", "PENDING", "CONFIRMED", "DELETIONS", "DLQ"
            );
            for d in answer["destinations"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<10} {:<18} {:<7} {:>9} {:>10} {:>10} {:>6}",
                    text(&d["name"]),
                    text(&d["type"]),
                    text(&d["purpose"]),
                    text(&d["mode"]),
                    // `Value`'s Display ignores widths: print the text.
                    text(&d["pending"]),
                    text(&d["confirmed"]),
                    text(&d["deletions_pending"]),
                    text(&d["dead_letters"])
                );
            }
        }
        DestinationsCommand::Resync {
            connect,
            destination,
        } => {
            let (request, url) = connect.request(
                Method::POST,
                &format!("/v1/destinations/{destination}/resync"),
            )?;
            let answer: Value = send_json(request, &url).await?;
            println!(
                "resync of {destination} queued: every profile it should hold is sent again \
                 ({} record(s) confirmed so far)",
                answer["confirmed"]
            );
        }
        DestinationsCommand::Dlq {
            command:
                DlqCommand::List {
                    connect,
                    destination,
                    json,
                },
        } => {
            // Every page, oldest first (the server answers at most 1,000 per request).
            let mut letters = Vec::new();
            let mut cursor = 0;
            loop {
                let (request, url) = connect.request(
                    Method::GET,
                    &format!("/v1/destinations/{destination}/dlq?cursor={cursor}&limit={DLQ_PAGE}"),
                )?;
                let answer: Value = send_json(request, &url).await?;
                let page = answer["dead_letters"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let full = page.len() == DLQ_PAGE;
                letters.extend(page);
                match answer["next_cursor"].as_i64() {
                    Some(next) if full && next > cursor => cursor = next,
                    _ => break,
                }
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "dead_letters": letters }))?
                );
                return Ok(());
            }
            if letters.is_empty() {
                println!("no dead letters for {destination}");
            }
            for letter in letters {
                println!(
                    "#{} {} {} {} after {} attempt(s): {}",
                    letter["id"],
                    text(&letter["operation"]),
                    text(&letter["profile_id"]),
                    text(&letter["class"]),
                    letter["attempts"],
                    text(&letter["detail"])
                );
            }
        }
        DestinationsCommand::Dlq {
            command:
                DlqCommand::Replay {
                    connect,
                    destination,
                    ids,
                },
        } => {
            let (request, url) = connect.request(
                Method::POST,
                &format!("/v1/destinations/{destination}/dlq/replay"),
            )?;
            let body = if ids.is_empty() {
                json!({})
            } else {
                json!({ "ids": ids })
            };
            let answer: Value = send_json(request.json(&body), &url).await?;
            println!(
                "replayed {} dead letter(s) of {destination}",
                answer["replayed"]
            );
        }
    }
    Ok(())
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}
