//! `tributary profiles show|list|events|explain|unmerge`: golden profiles of a running server.

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::events::{http_client, send_json};

#[derive(Debug, clap::Args)]
pub(crate) struct Connect {
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
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ProfilesCommand {
    /// Prints a golden profile, by id or by one identifier (--email, --user-id, --phone, --id TYPE:VALUE).
    Show {
        #[command(flatten)]
        connect: Connect,
        /// A profile id (p_...), or an email address.
        id_or_email: Option<String>,
        #[arg(long, conflicts_with = "id_or_email")]
        email: Option<String>,
        #[arg(long, conflicts_with = "id_or_email")]
        user_id: Option<String>,
        #[arg(long, conflicts_with = "id_or_email")]
        phone: Option<String>,
        /// Any configured identifier type: TYPE:VALUE, such as crm_id:C-17.
        #[arg(long, conflicts_with = "id_or_email")]
        identifier: Option<String>,
    },
    /// Lists profiles changed since a time, in change order (the change feed), one JSON line each.
    List {
        #[command(flatten)]
        connect: Connect,
        /// RFC 3339 time, such as 2026-11-28T00:00:00Z.
        #[arg(long)]
        updated_since: Option<String>,
        /// Continue after this cursor (printed last as `next_cursor`).
        #[arg(long)]
        cursor: Option<u64>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Prints a person's events, newest first.
    Events {
        #[command(flatten)]
        connect: Connect,
        id: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Prints how a profile was assembled: merges, the identifiers and events behind them,
    /// refused merges and why, renames and unmerges.
    Explain {
        #[command(flatten)]
        connect: Connect,
        id: String,
    },
    /// Removes an identifier or one event's links from a profile and rebuilds it from the log.
    Unmerge {
        #[command(flatten)]
        connect: Connect,
        id: String,
        /// TYPE:VALUE of the identifier to remove, such as email:shared@example.com.
        #[arg(long, conflicts_with = "event", required_unless_present = "event")]
        identifier: Option<String>,
        /// SOURCE:MESSAGE_ID of the event whose links to remove.
        #[arg(long)]
        event: Option<String>,
    },
}

impl Connect {
    /// A request to `path` on the server, authenticated with the key, and its URL.
    pub(crate) fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<(reqwest::RequestBuilder, String)> {
        let (http, base) = client(self)?;
        let url = format!("{base}{path}");
        Ok((http.request(method, &url).bearer_auth(&self.admin_key), url))
    }
}

pub(crate) fn split_pair(text: &str, what: &str) -> anyhow::Result<(String, String)> {
    match text.split_once(':') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_owned(), b.to_owned())),
        _ => bail!(
            "{what} must look like {}",
            if what == "--event" {
                "SOURCE:MESSAGE_ID"
            } else {
                "TYPE:VALUE"
            }
        ),
    }
}

fn client(connect: &Connect) -> anyhow::Result<(reqwest::Client, String)> {
    Ok((
        http_client(connect.purpose.as_deref())?,
        connect.url.trim_end_matches('/').to_owned(),
    ))
}

pub(crate) async fn run(command: ProfilesCommand) -> anyhow::Result<()> {
    match command {
        ProfilesCommand::Show {
            connect,
            id_or_email,
            email,
            user_id,
            phone,
            identifier,
        } => {
            let (http, base) = client(&connect)?;
            let request = match (id_or_email, email, user_id, phone, identifier) {
                (Some(id), None, None, None, None) if id.starts_with("p_") => {
                    let url = format!("{base}/v1/profiles/{id}");
                    (http.get(&url), url)
                }
                (Some(email), None, None, None, None) | (None, Some(email), None, None, None) => {
                    let url = format!("{base}/v1/profiles/lookup");
                    (http.get(&url).query(&[("email", email)]), url)
                }
                (None, None, Some(user_id), None, None) => {
                    let url = format!("{base}/v1/profiles/lookup");
                    (http.get(&url).query(&[("user_id", user_id)]), url)
                }
                (None, None, None, Some(phone), None) => {
                    let url = format!("{base}/v1/profiles/lookup");
                    (http.get(&url).query(&[("phone", phone)]), url)
                }
                (None, None, None, None, Some(identifier)) => {
                    let (kind, value) = split_pair(&identifier, "--identifier")?;
                    let url = format!("{base}/v1/profiles/lookup");
                    (
                        http.get(&url).query(&[("type", kind), ("value", value)]),
                        url,
                    )
                }
                _ => bail!("name one profile: an id, an email, --user-id, --phone or --identifier"),
            };
            let (request, url) = request;
            let profile: Value = send_json(request.bearer_auth(&connect.admin_key), &url).await?;
            println!("{}", serde_json::to_string_pretty(&profile)?);
        }
        ProfilesCommand::List {
            connect,
            updated_since,
            cursor,
            limit,
        } => {
            let (http, base) = client(&connect)?;
            let url = format!("{base}/v1/profiles");
            let mut query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
            if let Some(since) = updated_since {
                query.push(("updated_since", since));
            }
            if let Some(cursor) = cursor {
                query.push(("cursor", cursor.to_string()));
            }
            let page: Value = send_json(
                http.get(&url).query(&query).bearer_auth(&connect.admin_key),
                &url,
            )
            .await?;
            for item in page["profiles"].as_array().into_iter().flatten() {
                println!("{}", serde_json::to_string(item)?);
            }
            println!("{}", json!({"next_cursor": page["next_cursor"]}));
        }
        ProfilesCommand::Events { connect, id, limit } => {
            let (http, base) = client(&connect)?;
            let url = format!("{base}/v1/profiles/{id}/events");
            let page: Value = send_json(
                http.get(&url)
                    .query(&[("limit", limit.to_string())])
                    .bearer_auth(&connect.admin_key),
                &url,
            )
            .await?;
            for event in page["events"].as_array().into_iter().flatten() {
                println!("{}", serde_json::to_string(event)?);
            }
        }
        ProfilesCommand::Explain { connect, id } => {
            let (http, base) = client(&connect)?;
            let url = format!("{base}/v1/profiles/{id}/explain");
            let page: Value =
                send_json(http.get(&url).bearer_auth(&connect.admin_key), &url).await?;
            println!("profile {}", page["profile"].as_str().unwrap_or("?"));
            for entry in page["history"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<14} {}",
                    entry["at"].as_str().unwrap_or(""),
                    entry["kind"].as_str().unwrap_or(""),
                    entry["detail"]
                );
            }
        }
        ProfilesCommand::Unmerge {
            connect,
            id,
            identifier,
            event,
        } => {
            let body = match (identifier, event) {
                (Some(identifier), None) => {
                    let (kind, value) = split_pair(&identifier, "--identifier")?;
                    json!({"identifier": {"type": kind, "value": value}})
                }
                (None, Some(event)) => {
                    let (source, message_id) = split_pair(&event, "--event")?;
                    json!({"event": {"source": source, "message_id": message_id}})
                }
                _ => bail!("give --identifier or --event"),
            };
            let (http, base) = client(&connect)?;
            let url = format!("{base}/v1/profiles/{id}/unmerge");
            let report: Value = send_json(
                http.post(&url).json(&body).bearer_auth(&connect.admin_key),
                &url,
            )
            .await
            .context("unmerge failed")?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(())
}
