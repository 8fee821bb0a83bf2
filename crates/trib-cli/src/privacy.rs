//! `tributary privacy consent|record|suppress|unsuppress|suppressions`: the consent ledger and
//! suppression lists of a running server (scopes `consent:read` and `consent:write`).
//!
//! A person is named by a profile id (`p_...`) or by one identifier as `TYPE:VALUE`
//! (`email:ann@example.com`). Identifier values are sent in the request body or query, and the
//! server never prints them back.

use anyhow::bail;
use reqwest::Method;
use serde_json::{Value, json};

use crate::events::send_json;
use crate::profiles::{Connect, split_pair};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum PrivacyCommand {
    /// Prints a person's current consent per purpose, the full history and suppressions.
    Consent {
        #[command(flatten)]
        connect: Connect,
        /// A profile id (p_...) or TYPE:VALUE, such as email:ann@example.com.
        id: String,
        /// Print the server's JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Records consent for one purpose (source `api:<key id>`).
    Record {
        #[command(flatten)]
        connect: Connect,
        /// A profile id (p_...) or TYPE:VALUE.
        id: String,
        #[arg(long)]
        purpose: String,
        /// granted, denied or withdrawn.
        #[arg(long)]
        status: String,
        /// Proof: the form the person used.
        #[arg(long)]
        form_id: Option<String>,
        /// Proof: the version of the consent text they saw.
        #[arg(long)]
        text_version: Option<String>,
    },
    /// Suppresses a person globally, or for one destination with --destination.
    Suppress {
        #[command(flatten)]
        connect: Connect,
        /// A profile id (p_...) or TYPE:VALUE.
        id: String,
        #[arg(long)]
        destination: Option<String>,
        /// Why, such as hard_bounce, complaint or request.
        #[arg(long)]
        reason: String,
    },
    /// Lifts a suppression (global, or for --destination).
    Unsuppress {
        #[command(flatten)]
        connect: Connect,
        id: String,
        #[arg(long)]
        destination: Option<String>,
    },
    /// Lists the suppression lists by identifier key, one JSON line each.
    Suppressions {
        #[command(flatten)]
        connect: Connect,
        #[arg(long)]
        cursor: Option<i64>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// The body fields naming a person: `profile_id`, or `identifier`.
fn person(id: &str) -> anyhow::Result<Value> {
    if id.starts_with("p_") {
        return Ok(json!({"profile_id": id}));
    }
    let (kind, value) = split_pair(id, "the person")?;
    Ok(json!({"identifier": {"type": kind, "value": value}}))
}

fn merge(mut body: Value, extra: Value) -> Value {
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    body
}

pub(crate) async fn run(command: PrivacyCommand) -> anyhow::Result<()> {
    match command {
        PrivacyCommand::Consent { connect, id, json } => {
            let (request, url) = if id.starts_with("p_") {
                connect.request(Method::GET, &format!("/v1/privacy/consent/{id}"))?
            } else {
                let (kind, value) = split_pair(&id, "the person")?;
                let (request, url) = connect.request(Method::GET, "/v1/privacy/consent/lookup")?;
                (request.query(&[("type", kind), ("value", value)]), url)
            };
            let view: Value = send_json(request, &url).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{}", render(&view));
            }
        }
        PrivacyCommand::Record {
            connect,
            id,
            purpose,
            status,
            form_id,
            text_version,
        } => {
            let mut proof = serde_json::Map::new();
            if let Some(form_id) = form_id {
                proof.insert("form_id".into(), json!(form_id));
            }
            if let Some(text_version) = text_version {
                proof.insert("text_version".into(), json!(text_version));
            }
            let body = merge(
                person(&id)?,
                json!({"purpose": purpose, "status": status, "proof": proof}),
            );
            let (request, url) = connect.request(Method::POST, "/v1/privacy/consent")?;
            let answer: Value = send_json(request.json(&body), &url).await?;
            println!("{answer}");
        }
        PrivacyCommand::Suppress {
            connect,
            id,
            destination,
            reason,
        } => {
            let body = merge(
                person(&id)?,
                json!({"destination": destination, "reason": reason}),
            );
            let (request, url) = connect.request(Method::POST, "/v1/privacy/suppressions")?;
            let answer: Value = send_json(request.json(&body), &url).await?;
            println!("{answer}");
        }
        PrivacyCommand::Unsuppress {
            connect,
            id,
            destination,
        } => {
            let body = merge(person(&id)?, json!({"destination": destination}));
            let (request, url) = connect.request(Method::DELETE, "/v1/privacy/suppressions")?;
            let answer: Value = send_json(request.json(&body), &url).await?;
            if answer["removed"] == 0 {
                bail!("no such suppression");
            }
            println!("{answer}");
        }
        PrivacyCommand::Suppressions {
            connect,
            cursor,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(cursor) = cursor {
                query.push(("cursor", cursor.to_string()));
            }
            let (request, url) = connect.request(Method::GET, "/v1/privacy/suppressions")?;
            let page: Value = send_json(request.query(&query), &url).await?;
            for item in page["suppressions"].as_array().into_iter().flatten() {
                println!("{item}");
            }
            println!("{}", json!({"next_cursor": page["next_cursor"]}));
        }
    }
    Ok(())
}

/// The consent view as text: current state per purpose, history oldest first, suppressions.
fn render(view: &Value) -> String {
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let mut out = String::new();
    out.push_str(&format!("profile: {}\n\n", text(&view["profile_id"])));
    out.push_str(&format!(
        "{:<20} {:<20} {:<10} {:<26} {:<26} {}\n",
        "PURPOSE", "LEGAL BASIS", "STATUS", "PERMITTED", "SINCE", "SOURCE"
    ));
    for purpose in view["purposes"].as_array().into_iter().flatten() {
        let permitted = if purpose["permitted"] == true {
            "yes".to_owned()
        } else {
            format!("no ({})", text(&purpose["denied_reason"]))
        };
        out.push_str(&format!(
            "{:<20} {:<20} {:<10} {:<26} {:<26} {}\n",
            text(&purpose["purpose"]),
            text(&purpose["legal_basis"]),
            text(&purpose["status"]),
            permitted,
            text(&purpose["since"]),
            text(&purpose["source"]),
        ));
    }
    let history = view["history"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!(
        "\nhistory ({} entries, oldest first):\n",
        history.len()
    ));
    for entry in &history {
        out.push_str(&format!(
            "  #{:<6} {:<26} {:<20} {:<10} via {:<13} {:<30} basis {} proof {}\n",
            text(&entry["seq"]),
            text(&entry["at"]),
            text(&entry["purpose"]),
            text(&entry["status"]),
            text(&entry["identifier_type"]),
            text(&entry["source"]),
            text(&entry["legal_basis"]),
            entry["proof"],
        ));
    }
    let suppressions = view["suppressions"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!("\nsuppressions ({}):\n", suppressions.len()));
    for suppression in &suppressions {
        out.push_str(&format!(
            "  {} {} via {}: {} ({}, {})\n",
            text(&suppression["scope"]),
            text(&suppression["destination"]),
            text(&suppression["identifier_type"]),
            text(&suppression["reason"]),
            text(&suppression["at"]),
            text(&suppression["source"]),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_are_named_by_profile_id_or_type_and_value() {
        assert_eq!(person("p_01").unwrap(), json!({"profile_id": "p_01"}));
        assert_eq!(
            person("email:ann@example.com").unwrap(),
            json!({"identifier": {"type": "email", "value": "ann@example.com"}})
        );
        assert!(person("ann@example.com").is_err());
    }

    #[test]
    fn the_view_prints_state_history_and_suppressions() {
        let view = json!({
            "profile_id": "p_01",
            "purposes": [
                {"purpose": "email_marketing", "legal_basis": "consent", "status": "withdrawn",
                 "since": "2026-03-01T10:00:00Z", "source": "api:admin", "permitted": false,
                 "denied_reason": "withdrawn"},
                {"purpose": "receipts", "legal_basis": "contract", "status": "unknown",
                 "since": null, "source": null, "permitted": true, "denied_reason": null}
            ],
            "history": [{"seq": 1, "at": "2026-03-01T09:00:00Z", "purpose": "email_marketing",
                         "status": "granted", "identifier_type": "email", "source": "event:web:m-1",
                         "legal_basis": "consent", "proof": {"form_id": "footer"}}],
            "suppressions": [{"scope": "destination", "destination": "sendgrid",
                              "identifier_type": "email", "reason": "complaint",
                              "at": "2026-03-02T00:00:00Z", "source": "api:admin"}]
        });
        let text = render(&view);
        assert!(text.contains("no (withdrawn)"), "{text}");
        assert!(text.contains("history (1 entries"), "{text}");
        assert!(text.contains("event:web:m-1"), "{text}");
        assert!(
            text.contains("destination sendgrid via email: complaint"),
            "{text}"
        );
    }
}
