//! `tributary privacy consent|record|suppress|unsuppress|suppressions`: the consent ledger and
//! suppression lists of a running server (scopes `consent:read` and `consent:write`);
//! `tributary privacy export|erase`: subject access exports (`privacy:export`) and erasures
//! (`privacy:erase`), whose signed documents are written exactly as received; and
//! `tributary privacy verify`, which checks such a document offline.
//!
//! A person is named by a profile id (`p_...`) or by one identifier as `TYPE:VALUE`
//! (`email:ann@example.com`). Identifier values are sent in the request body or query, and the
//! server never prints them back; neither do these commands (an export's content goes to its
//! file only, summaries name profile ids and counts).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
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
    /// Writes everything the server holds about a person to a file, as the signed document the
    /// server answered (scope `privacy:export`); check it with `tributary privacy verify`.
    Export {
        #[command(flatten)]
        connect: Connect,
        /// A profile id (p_...) or TYPE:VALUE.
        id: String,
        /// The file to write (mode 0600: it holds the person's data).
        #[arg(long)]
        out: PathBuf,
    },
    /// Erases a person everywhere and prints the signed receipt's summary (scope
    /// `privacy:erase`). Asks for confirmation on a terminal unless --yes is given.
    Erase {
        #[command(flatten)]
        connect: Connect,
        /// A profile id (p_...) or TYPE:VALUE.
        id: String,
        /// Do not ask for confirmation (needed when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
        /// Also write the signed receipt to this file, exactly as received.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Checks the signature of an erasure receipt or an export offline; prints OK or the
    /// reason, and exits with 1 when it does not verify.
    Verify {
        /// The signed document, as written by `privacy export` or `privacy erase --out`.
        file: PathBuf,
        /// The deployment's public key (base64) the document must be signed with; without it
        /// the key embedded in the document is used, which proves integrity but not origin.
        #[arg(long)]
        public_key: Option<String>,
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
        PrivacyCommand::Export { connect, id, out } => {
            let (request, url) = connect.request(Method::POST, "/v1/privacy/exports")?;
            let text = send_text(request.json(&person(&id)?), &url).await?;
            let export = signed_document(&text)?;
            write_private(&out, &text)?;
            println!("{}", export_summary(&export, &out));
        }
        PrivacyCommand::Erase {
            connect,
            id,
            yes,
            out,
        } => {
            let body = person(&id)?;
            if !yes {
                confirm(&id)?;
            }
            let (request, url) = connect.request(Method::POST, "/v1/privacy/erasures")?;
            let text = send_text(request.json(&body), &url).await?;
            if let Some(out) = &out {
                write_private(out, &text)?;
            }
            let receipt = signed_document(&text)?;
            print!("{}", receipt_summary(&receipt));
            if let Some(out) = &out {
                println!("signed receipt written to {}", out.display());
            }
        }
        PrivacyCommand::Verify { file, public_key } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            match trib_api::signing::verify_signed(&text, public_key.as_deref()) {
                Ok(document) => println!("OK: {}", describe(&text, &document)),
                Err(reason) => bail!("{}: does not verify: {reason}", file.display()),
            }
        }
    }
    Ok(())
}

/// Sends a request and returns the body's exact text; any status but 2xx is an error.
async fn send_text(request: reqwest::RequestBuilder, url: &str) -> anyhow::Result<String> {
    let response = request
        .send()
        .await
        .with_context(|| format!("failed to reach {url}"))?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        bail!("{url} answered {status}: {body}");
    }
    Ok(body)
}

/// Checks what the server signed (so a file is written only for a document that verifies)
/// and parses the document.
fn signed_document(text: &str) -> anyhow::Result<Value> {
    let document = trib_api::signing::verify_signed(text, None)
        .map_err(|reason| anyhow::anyhow!("the server's answer does not verify: {reason}"))?;
    Ok(serde_json::from_str(&document)?)
}

/// Asks on the terminal before an erasure; refuses when stdin is not a terminal.
fn confirm(id: &str) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("refusing to erase without confirmation: stdin is not a terminal; pass --yes");
    }
    // The identifier's value is not echoed: only its type, or the profile id.
    let named = if id.starts_with("p_") {
        format!("profile {id}")
    } else {
        let kind = id.split_once(':').map_or(id, |(kind, _)| kind);
        format!("the person with that {kind}")
    };
    let mut stderr = std::io::stderr();
    write!(
        stderr,
        "Erase {named}: their profile, identifiers and events, everywhere, for good? Type `yes` to confirm: "
    )?;
    stderr.flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        bail!("not confirmed: nothing was erased");
    }
    Ok(())
}

/// Writes `text` to `path` with mode 0600, replacing it atomically.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&temporary)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot write {}", path.display()))
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn count(value: &Value) -> usize {
    value.as_array().map_or(0, Vec::len)
}

/// One line about a written export: ids and counts, no personal value.
fn export_summary(export: &Value, out: &Path) -> String {
    format!(
        "export {} of profile {} written to {}: {} profile ids, {} identifiers, {} events, {} consent entries, {} audit entries",
        text_of(&export["export_id"]),
        text_of(&export["subject"]["profile_id"]),
        out.display(),
        count(&export["subject"]["profile_ids"]),
        count(&export["identifiers"]),
        count(&export["events"]),
        count(&export["consent"]["history"]),
        count(&export["audit"]),
    )
}

/// The receipt as text: its id, the person's profile id and counts, each store and its status.
fn receipt_summary(receipt: &Value) -> String {
    let mut out = format!(
        "receipt {}
profile {} ({} profile ids, {} identifiers, {} events)
",
        text_of(&receipt["receipt_id"]),
        text_of(&receipt["subject"]["profile_id"]),
        count(&receipt["subject"]["profile_ids"]),
        text_of(&receipt["subject"]["identifiers"]),
        text_of(&receipt["subject"]["events"]),
    );
    for store in receipt["stores"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<18} {}\n",
            text_of(&store["store"]),
            text_of(&store["status"])
        ));
    }
    for destination in receipt["destinations"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  destination {:<6} {}\n",
            text_of(&destination["destination"]),
            text_of(&destination["status"])
        ));
    }
    out
}

/// What a verified document is, for the OK line.
fn describe(text: &str, document: &str) -> String {
    let key = serde_json::from_str::<Value>(text)
        .ok()
        .map(|signed| text_of(&signed["signature"]["public_key"]))
        .unwrap_or_default();
    let document: Value = serde_json::from_str(document).unwrap_or(Value::Null);
    let what = if let Some(id) = document["receipt_id"].as_str() {
        format!("erasure receipt {id}")
    } else if let Some(id) = document["export_id"].as_str() {
        format!("subject access export {id}")
    } else {
        "signed document".to_owned()
    };
    format!("{what}, signed with Ed25519 key {key}")
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
    fn receipts_and_exports_are_summarized_by_ids_and_counts_only() {
        let receipt = json!({
            "receipt_id": "er_0a",
            "subject": {"profile_id": "p_01", "profile_ids": ["p_01", "p_02"],
                        "identifiers": 3, "events": 22},
            "stores": [{"store": "identity_graph", "status": "erased", "detail": "x"},
                       {"store": "event_log", "status": "crypto_shredded"}],
            "destinations": [{"destination": "mailchimp", "status": "queued"}],
        });
        let text = receipt_summary(&receipt);
        assert!(
            text.starts_with(
                "receipt er_0a\nprofile p_01 (2 profile ids, 3 identifiers, 22 events)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  event_log          crypto_shredded\n"),
            "{text}"
        );
        assert!(text.contains("destination mailchimp queued"), "{text}");
        let export = json!({
            "export_id": "ex_0b", "subject": {"profile_id": "p_01", "profile_ids": ["p_01"]},
            "identifiers": [{"type": "email", "value": "ann@example.com"}],
            "events": [{}, {}], "consent": null, "audit": [{}],
        });
        let line = export_summary(&export, Path::new("out.json"));
        assert_eq!(
            line,
            "export ex_0b of profile p_01 written to out.json: 1 profile ids, 1 identifiers, 2 events, 0 consent entries, 1 audit entries"
        );
        let signer = trib_api::signing::DocumentSigner::from_secret(&[5; 32]);
        let signed = trib_api::signing::sign_document(&signer, &export);
        let document = trib_api::signing::verify_signed(&signed, None).unwrap();
        let described = describe(&signed, &document);
        assert!(
            described.starts_with("subject access export ex_0b, signed with Ed25519 key "),
            "{described}"
        );
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
