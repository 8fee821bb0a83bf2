//! The right to erasure: `POST /v1/privacy/erasures` erases a person named by a profile id or
//! any identifier, and answers a signed receipt listing every store with what was done there;
//! `GET /v1/privacy/erasures/{id}` serves a receipt again.
//!
//! The steps, in order: the identity consumer removes the person from the graph (profile ids,
//! identifier index, timeline, journal) and leaves a tombstone of blind-index keys; then the
//! data keys of the person's log keys and profile ids are destroyed (crypto-shredding), which
//! makes their events, quarantined messages, documents and journal entries unreadable wherever
//! copies of the sealed bytes are; then the receipt is signed and written under
//! `<data_dir>/privacy/erasures/`. An erasure interrupted after the first step can be asked for
//! again by identifier only if the identifier still resolves; the tombstone already stops the
//! person's data from coming back.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use trib_audit::ProfileRef;
use trib_identity::view::{self, Found};
use trib_privacy::AtRest;
use trib_store::ProfileId;

use crate::keys::Principal;
use crate::privacy::{IdentifierBody, blocking, invalid_body, parse_body};
use crate::profiles::{ProfilesState, consumer_of, parse_id, profiles};
use crate::signing::{DocumentSigner, sign_document};
use crate::{ApiError, AppState};

/// What the erasure routes need.
#[derive(Clone, Debug)]
pub struct ErasureState {
    /// The keys of encryption at rest; `None` where data is not encrypted (then the receipt
    /// says so for the log stores).
    pub at_rest: Option<AtRest>,
    pub signer: DocumentSigner,
    /// Where receipts are kept: `<data_dir>/privacy/erasures`.
    pub receipts_dir: PathBuf,
    /// The configured destinations, each of which gets a deletion queued.
    pub destinations: Vec<String>,
    /// The sync state where deletions are queued for the sync engine; `None` without one.
    pub sync: Option<Arc<trib_sync::SyncState>>,
    /// Seals the person's emails for deletions by email (a push with no known outcome);
    /// `None` (no encryption at rest): no deletion by email is queued.
    pub email_sealer: Option<Arc<dyn trib_sync::EmailSealer>>,
}

/// The sync engine's [`trib_sync::EmailSealer`] over a queue key of the privacy key store.
#[derive(Debug)]
pub struct QueuedEmails(pub trib_privacy::QueueSealer);

impl QueuedEmails {
    /// The queue the sync engine's erasure emails are sealed for.
    pub const QUEUE: &'static str = "sync-erasures";
}

impl trib_sync::EmailSealer for QueuedEmails {
    fn seal(&self, email: &str) -> Result<Vec<u8>, String> {
        self.0.seal(email.as_bytes()).map_err(|e| e.to_string())
    }

    fn open(&self, sealed: &[u8]) -> Result<String, String> {
        let clear = self.0.open(sealed).map_err(|e| e.to_string())?;
        String::from_utf8(clear).map_err(|_| "the queued email is not UTF-8".to_owned())
    }
}

/// A person named in the body of an erasure or export: a profile id or one identifier.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PersonBody {
    profile_id: Option<String>,
    identifier: Option<IdentifierBody>,
}

fn erasure(state: &AppState) -> Result<&ErasureState, ApiError> {
    state.erasure.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "erasure_disabled",
            "this server runs without erasure (no data directory for receipts)",
        )
    })
}

pub(crate) fn not_found(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "person_not_found",
        format!("no profile holds that {what}"),
    )
}

fn receipt_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|error| ApiError::internal(&error))?;
    Ok(format!(
        "er_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// `POST /v1/privacy/erasures`: erases a person; answers 201 with the signed receipt.
pub(crate) async fn erase(
    State(state): State<Arc<AppState>>,
    principal: Option<Extension<Principal>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let erasure = erasure(&state)?.clone();
    let profiles = profiles(&state)?;
    let body: PersonBody = parse_body(&body, "erasure")?;
    let found = find_person(profiles, body).await?;
    let (profile_id, known_ids, emails) = match found {
        Found::Active { profile, .. } => {
            let id = profile
                .id
                .parse::<ProfileId>()
                .map_err(|e| ApiError::internal(&e))?;
            let mut known: Vec<ProfileId> = profile
                .merged_ids
                .iter()
                .filter_map(|merged| merged.parse().ok())
                .collect();
            known.push(id);
            let emails: Vec<String> = profile
                .identifiers
                .iter()
                .filter(|identifier| identifier.kind == "email")
                .map(|identifier| identifier.value.clone())
                .collect();
            (id, known, emails)
        }
        Found::Deleted { .. } => {
            return Err(ApiError::new(
                StatusCode::GONE,
                "profile_deleted",
                "that profile was already erased or deleted",
            ));
        }
        Found::NotFound => return Err(not_found("id or identifier")),
    };

    let id = receipt_id()?;
    let requested_at = jiff::Timestamp::now();
    // The person's emails, sealed, for destinations where a push of theirs had no known
    // outcome (the ESP may hold them under an id Tributary never saw): found by email there.
    let sealed_emails: Vec<Vec<u8>> = match (&erasure.email_sealer, &erasure.sync) {
        (Some(sealer), Some(_)) if !emails.is_empty() => {
            let sealer = sealer.clone();
            blocking(move || {
                emails
                    .iter()
                    .map(|email| sealer.seal(email))
                    .collect::<Result<Vec<_>, String>>()
                    .map_err(|error| ApiError::internal(&std::io::Error::other(error)))
            })
            .await?
        }
        _ => Vec::new(),
    };
    // Destination deletions are queued (durably) before anything is erased: once the graph
    // entries are gone, the person can no longer be found to queue them, and a second request
    // answers 410. An in-flight push that the ESP confirms later is turned into a deletion too.
    let queue = |ids: Vec<ProfileId>| {
        let sync = erasure.sync.clone();
        let (receipt, names) = (id.clone(), erasure.destinations.clone());
        let sealed_emails = sealed_emails.clone();
        async move {
            match sync {
                Some(sync) if !ids.is_empty() => {
                    let now = jiff::Timestamp::now().as_millisecond();
                    blocking(move || {
                        sync.queue_erasure(&receipt, &names, &ids, &sealed_emails, now)
                            .map_err(|e| ApiError::internal(&e))
                    })
                    .await
                }
                _ => Ok(Default::default()),
            }
        }
    };
    let mut queued: std::collections::BTreeMap<String, usize> = queue(known_ids.clone()).await?;
    let report = consumer_of(profiles)?
        .erase(profile_id)
        .await
        .map_err(|error| match error {
            trib_identity::EngineError::UnknownProfile(_) => not_found("id"),
            trib_identity::EngineError::DeletedProfile { .. } => ApiError::new(
                StatusCode::GONE,
                "profile_deleted",
                "that profile was already erased or deleted",
            ),
            other => ApiError::internal(&other),
        })?;
    let profile_ids: Vec<ProfileId> = report
        .profile_ids
        .iter()
        .filter_map(|id| id.parse().ok())
        .collect();
    let shredded = match &erasure.at_rest {
        Some(at_rest) => {
            let (at_rest, log_keys, ids, receipt) = (
                at_rest.clone(),
                report.log_keys.0.clone(),
                profile_ids.clone(),
                id.clone(),
            );
            Some(
                blocking(move || {
                    at_rest
                        .shred(&log_keys, &ids, &receipt)
                        .map_err(|e| ApiError::internal(&e))
                })
                .await?,
            )
        }
        None => None,
    };
    metrics::counter!("tributary_privacy_erasures_total").increment(1);
    // Profile ids the erasure found beyond those known before (merged ids not listed).
    let extra: Vec<ProfileId> = profile_ids
        .iter()
        .filter(|id| !known_ids.contains(id))
        .copied()
        .collect();
    for (destination, count) in queue(extra).await? {
        *queued.entry(destination).or_default() += count;
    }

    let (log_status, profile_status) = match shredded {
        Some(_) => ("crypto_shredded", "crypto_shredded"),
        None => ("not_encrypted", "deleted"),
    };
    let requested_by = match principal.as_deref() {
        Some(Principal::Key(key)) => format!("key:{key}"),
        Some(Principal::Admin) => "admin".to_owned(),
        None => "unknown".to_owned(),
    };
    let receipt = json!({
        "receipt_id": id,
        "requested_at": requested_at.to_string(),
        "completed_at": jiff::Timestamp::now().to_string(),
        "requested_by": requested_by,
        "subject": {
            "profile_id": report.profile,
            "profile_ids": report.profile_ids,
            "identifiers": report.identifiers,
            "events": report.events,
        },
        "stores": [
            {
                "store": "identity_graph",
                "status": "erased",
                "detail": format!(
                    "{} identifier index entries, and the document, timeline and journal of {} profile ids, removed; a tombstone of blind-index keys stops replays and re-imports from re-creating the person until they give consent again",
                    report.identifiers, report.profile_ids.len()
                ),
            },
            {
                "store": "profile_documents",
                "status": profile_status,
                "keys_destroyed": shredded.map(|s| s.profile_keys),
            },
            {
                "store": "event_log",
                "status": log_status,
                "keys_destroyed": shredded.map(|s| s.log_keys),
                "detail": format!(
                    "the {} events of the person's {} userId/anonymousId keys can no longer be read; their records stay as empty placeholders so offsets do not move",
                    report.events, report.log_keys.0.len()
                ),
            },
            {
                "store": "quarantine",
                "status": log_status,
                "detail": "quarantined messages naming the same keys are sealed under the same data keys; rows of imported files are sealed under their source's key and are not covered",
            },
            {
                "store": "consent_ledger",
                "status": "kept",
                "detail": "consent history is keyed by blind index only and kept as proof of consent and its withdrawal",
            },
            {
                "store": "audit_log",
                "status": "kept",
                "detail": "entries name profile ids, never personal values",
            },
        ],
        "destinations": erasure
            .destinations
            .iter()
            .map(|name| match queued.get(name) {
                Some(0) => json!({"destination": name, "status": "none_held", "records": 0}),
                Some(records) => json!({
                    "destination": name,
                    "status": "deletion_queued",
                    "records": records,
                    "detail": format!("see GET /v1/privacy/erasures/{id}/destinations for the outcome"),
                }),
                None => json!({"destination": name, "status": "not_synced", "detail": "the sync engine is not running"}),
            })
            .collect::<Vec<Value>>(),
    });
    let signed = sign_document(&erasure.signer, &receipt);
    let path = erasure.receipts_dir.join(format!("{id}.json"));
    let text = signed.clone();
    blocking(move || write_receipt(&path, &text).map_err(|e| ApiError::internal(&e))).await?;

    let mut response = (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        signed,
    )
        .into_response();
    response
        .extensions_mut()
        .insert(ProfileRef::profile(profile_id));
    Ok(response)
}

/// Resolves the person a body names: a profile id (through merges) or one identifier.
pub(crate) async fn find_person(
    profiles: &ProfilesState,
    body: PersonBody,
) -> Result<Found, ApiError> {
    let store = profiles.store.clone();
    let keyer = profiles.keyer.clone();
    let found = match (body.profile_id, body.identifier) {
        (Some(id), None) => {
            let id = parse_id(&id)?;
            blocking(move || view::find(&*store, id).map_err(|e| ApiError::internal(&e))).await?
        }
        (None, Some(identifier)) => {
            if profiles.rules.type_index(&identifier.kind).is_none() {
                return Err(invalid_body(format!(
                    "identifier.type: {:?} is not a configured identifier type",
                    identifier.kind
                )));
            }
            blocking(move || {
                view::find_by_identifier(&*store, &keyer, &identifier.kind, &identifier.value)
                    .map_err(|e| ApiError::internal(&e))
            })
            .await?
        }
        _ => {
            return Err(invalid_body(
                "give exactly one of `profile_id` and `identifier`",
            ));
        }
    };
    Ok(found)
}

fn write_receipt(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

/// `GET /v1/privacy/erasures/{id}`: a receipt, as signed when the erasure ran.
pub(crate) async fn receipt(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let erasure = erasure(&state)?;
    let valid =
        id.len() == 27 && id.starts_with("er_") && id[3..].bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_receipt_id",
            "a receipt id looks like er_ followed by 24 hexadecimal characters",
        ));
    }
    let path = erasure.receipts_dir.join(format!("{id}.json"));
    let text = blocking(move || match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(ApiError::internal(&error)),
    })
    .await?
    .ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "receipt_not_found",
            format!("no erasure receipt {id}"),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], text).into_response())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use trib_sync::EmailSealer;

    use super::*;

    #[test]
    fn queued_emails_are_sealed_under_their_own_key_and_survive_any_erasure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let at_rest = AtRest::open(dir.path(), [3; 32]).expect("at rest");
        let sealer = QueuedEmails(at_rest.queue_sealer(QueuedEmails::QUEUE));
        let sealed = sealer.seal("ann@example.com").expect("seal");
        assert!(
            !sealed
                .windows(b"ann@example.com".len())
                .any(|window| window == b"ann@example.com")
        );
        assert_eq!(sealer.open(&sealed).expect("open"), "ann@example.com");
        // Another queue's key does not open it.
        let other = QueuedEmails(at_rest.queue_sealer("other"));
        assert!(other.open(&sealed).is_err());
        // Erasing a person whose identifier is spelled like the queue leaves the queue's key.
        at_rest
            .shred(
                &BTreeSet::from([QueuedEmails::QUEUE.to_owned()]),
                &[],
                "er_test",
            )
            .expect("shred");
        assert_eq!(sealer.open(&sealed).expect("open"), "ann@example.com");
    }
}
