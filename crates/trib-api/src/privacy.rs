//! The privacy API: a person's consent history and current state per purpose, recording
//! consent, and the suppression lists. Reads need `consent:read`, changes `consent:write`.
//!
//! A person is named by a profile id (every identifier of the profile counts) or by one
//! identifier (`{"type": "email", "value": "..."}`); the ledger is keyed by identifier keys,
//! so consent recorded for an identifier no profile holds yet still applies once one does.
//! Identifier values are never echoed back: history rows name the identifier's type only, and
//! suppression listings show identifier keys (HMAC) in hex.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use trib_consent::{
    Gatekeeper, Ledger, LegalBasis, NewEntry, PrivacyRules, Proof, Status, Suppression,
    SuppressionScope,
};
use trib_identity::Keyer;
use trib_identity::profile::IdentifierEntry;
use trib_identity::view::{self, Found};
use trib_store::{IdentKey, ProfileId};

use crate::{ApiError, AppState};

/// What the privacy routes need; absent when the server runs without a consent ledger.
pub struct ConsentState {
    pub ledger: Arc<Ledger>,
    /// The deployment's identity key (the one the ledger's identifier keys were made with).
    pub keyer: Keyer,
    pub rules: Arc<PrivacyRules>,
}

/// A person named in a request body: a profile id or one identifier.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IdentifierBody {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordBody {
    profile_id: Option<String>,
    identifier: Option<IdentifierBody>,
    purpose: String,
    status: String,
    /// Kept fields: `form_id`, `text_version`, `url` (without query); others are dropped.
    #[serde(default)]
    proof: Value,
    /// Default: the purpose's declared basis.
    legal_basis: Option<String>,
    /// When the person expressed it (RFC 3339); default now.
    at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuppressionBody {
    profile_id: Option<String>,
    identifier: Option<IdentifierBody>,
    /// A destination name; absent for the global list.
    destination: Option<String>,
    /// Required to add; ignored when removing.
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    cursor: Option<i64>,
    limit: Option<usize>,
}

/// A person resolved from a request: identifiers (type and value) with their keys.
struct Person {
    profile_id: Option<String>,
    identifiers: Vec<IdentifierEntry>,
    keys: Vec<IdentKey>,
}

fn consent(state: &AppState) -> Result<&ConsentState, ApiError> {
    state.consent.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "consent_disabled",
            "this server runs without a consent ledger",
        )
    })
}

pub(crate) fn invalid_body(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", message)
}

pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &str,
) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| invalid_body(format!("{what} body: {error}")))
}

/// Runs blocking ledger or store work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ApiError::internal(&error))?
}

fn ledger_error(error: trib_consent::ConsentError) -> ApiError {
    match error {
        trib_consent::ConsentError::Invalid { .. } => invalid_body(error.to_string()),
        other => ApiError::internal(&other),
    }
}

fn time_ms(text: Option<&str>, field: &str) -> Result<i64, ApiError> {
    match text {
        None => Ok(jiff::Timestamp::now().as_millisecond()),
        Some(text) => text
            .parse::<jiff::Timestamp>()
            .map(|t| t.as_millisecond())
            .map_err(|_| {
                invalid_body(format!(
                    "{field}: must be an RFC 3339 time such as 2026-03-01T10:00:00Z"
                ))
            }),
    }
}

/// Resolves a profile id (through merges) or one identifier to a person. An identifier that a
/// profile holds stands for the whole profile.
fn resolve(
    state: &AppState,
    keyer: &Keyer,
    profile_id: Option<String>,
    identifier: Option<IdentifierBody>,
) -> Result<Person, ApiError> {
    let profiles = state.profiles.as_ref();
    let found = match (profile_id, identifier) {
        (Some(id), None) => {
            let profiles = profiles.ok_or_else(|| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "profiles_disabled",
                    "this server runs without a profile store; name an identifier instead",
                )
            })?;
            let pid: ProfileId = id.parse().map_err(|e: trib_store::ProfileIdError| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_profile_id",
                    format!("{id:?}: {e}"),
                )
            })?;
            match view::find(&*profiles.store, pid).map_err(|e| ApiError::internal(&e))? {
                Found::Active { profile, .. } => profile,
                Found::Deleted { .. } => {
                    return Err(ApiError::new(
                        StatusCode::GONE,
                        "profile_deleted",
                        format!("profile {id} was deleted"),
                    ));
                }
                Found::NotFound => {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "profile_not_found",
                        format!("no profile {id}"),
                    ));
                }
            }
        }
        (None, Some(identifier)) => {
            if identifier.kind.is_empty() || identifier.value.trim().is_empty() {
                return Err(invalid_body(
                    "identifier: `type` and `value` must not be empty",
                ));
            }
            if let Some(profiles) = profiles {
                if profiles.rules.type_index(&identifier.kind).is_none() {
                    return Err(invalid_body(format!(
                        "identifier.type: {:?} is not a configured identifier type",
                        identifier.kind
                    )));
                }
                let found = view::find_by_identifier(
                    &*profiles.store,
                    keyer,
                    &identifier.kind,
                    &identifier.value,
                )
                .map_err(|e| ApiError::internal(&e))?;
                if let Found::Active { profile, .. } = found {
                    profile
                } else {
                    return Ok(lone(keyer, identifier));
                }
            } else {
                return Ok(lone(keyer, identifier));
            }
        }
        _ => {
            return Err(invalid_body(
                "name the person with exactly one of `profile_id` and `identifier`",
            ));
        }
    };
    let keys = found
        .identifiers
        .iter()
        .map(|identifier| keyer.ident_key(&identifier.kind, &identifier.value))
        .collect();
    Ok(Person {
        profile_id: Some(found.id.clone()),
        identifiers: found.identifiers.clone(),
        keys,
    })
}

/// The consent view of a profile's person (every identifier of the profile counts), for a
/// subject access export.
pub(crate) fn consent_of_profile(
    consent: &ConsentState,
    profile: &trib_identity::Profile,
) -> Result<Value, ApiError> {
    let person = Person {
        profile_id: Some(profile.id.clone()),
        identifiers: profile.identifiers.clone(),
        keys: profile
            .identifiers
            .iter()
            .map(|identifier| consent.keyer.ident_key(&identifier.kind, &identifier.value))
            .collect(),
    };
    consent_view(consent, &person)
}

/// A person known only by one identifier (no profile holds it yet).
fn lone(keyer: &Keyer, identifier: IdentifierBody) -> Person {
    let value = trib_identity::extract::canonical_value(&identifier.kind, &identifier.value);
    let entry = IdentifierEntry {
        kind: identifier.kind,
        value,
        first_seen_ms: 0,
        source: String::new(),
        message_id: String::new(),
    };
    Person {
        profile_id: None,
        keys: vec![keyer.ident_key(&entry.kind, &entry.value)],
        identifiers: vec![entry],
    }
}

/// The consent view of a person: current state per purpose, history, suppressions.
fn consent_view(consent: &ConsentState, person: &Person) -> Result<Value, ApiError> {
    let type_of = |key: &IdentKey| -> &str {
        person
            .keys
            .iter()
            .position(|known| known == key)
            .map_or("unknown", |index| person.identifiers[index].kind.as_str())
    };
    let gatekeeper = Gatekeeper::new(
        consent.ledger.clone(),
        consent.keyer.clone(),
        consent.rules.clone(),
    );
    let mut purposes = Vec::new();
    for purpose in &consent.rules.purposes {
        let latest = consent
            .ledger
            .latest(&person.keys, &purpose.name)
            .map_err(ledger_error)?;
        let check = gatekeeper.permit(&person.identifiers, &purpose.name, None, ());
        purposes.push(json!({
            "purpose": purpose.name,
            "legal_basis": purpose.legal_basis.as_str(),
            "basis_note": purpose.basis_note,
            "status": latest.as_ref().map_or("unknown", |entry| entry.status.as_str()),
            "since": latest.as_ref().map(|entry| view::time_text(entry.at_ms)),
            "source": latest.as_ref().map(|entry| entry.source.clone()),
            "permitted": check.is_ok(),
            "denied_reason": check.err().map(|denied| denied.reason.code()),
        }));
    }
    let history: Vec<Value> = consent
        .ledger
        .history(&person.keys)
        .map_err(ledger_error)?
        .into_iter()
        .map(|entry| {
            json!({
                "seq": entry.seq,
                "identifier_type": type_of(&entry.ident_key),
                "purpose": entry.purpose,
                "status": entry.status.as_str(),
                "at": view::time_text(entry.at_ms),
                "source": entry.source,
                "legal_basis": entry.legal_basis,
                "proof": entry.proof.to_json(),
                "recorded_at": view::time_text(entry.recorded_at_ms),
            })
        })
        .collect();
    let suppressions: Vec<Value> = consent
        .ledger
        .suppressions_of(&person.keys)
        .map_err(ledger_error)?
        .iter()
        .map(|suppression| {
            let mut body = suppression_json(suppression);
            body["identifier_type"] = json!(type_of(&suppression.ident_key));
            body
        })
        .collect();
    Ok(json!({
        "profile_id": person.profile_id,
        "purposes": purposes,
        "history": history,
        "suppressions": suppressions,
    }))
}

fn suppression_json(suppression: &Suppression) -> Value {
    let (scope, destination) = match &suppression.scope {
        SuppressionScope::Global => ("global", None),
        SuppressionScope::Destination(name) => ("destination", Some(name.clone())),
    };
    json!({
        "ident_key": hex(&suppression.ident_key.0),
        "scope": scope,
        "destination": destination,
        "reason": suppression.reason,
        "at": view::time_text(suppression.at_ms),
        "source": suppression.source,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn scope_of(destination: Option<String>) -> Result<SuppressionScope, ApiError> {
    match destination {
        None => Ok(SuppressionScope::Global),
        Some(name) if !name.is_empty() && !name.chars().any(char::is_whitespace) => {
            Ok(SuppressionScope::Destination(name))
        }
        Some(_) => Err(invalid_body(
            "destination: must be a destination name without whitespace",
        )),
    }
}

/// `GET /v1/privacy/consent/{id}`: a profile's consent history and current state per purpose.
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    consent(&state)?;
    blocking(move || {
        let consent = consent(&state)?;
        let person = resolve(&state, &consent.keyer, Some(id), None)?;
        consent_view(consent, &person)
    })
    .await
    .map(Json)
}

/// `GET /v1/privacy/consent/lookup?type=email&value=...`: the same for one identifier (its
/// whole profile when a profile holds it).
pub(crate) async fn lookup(
    State(state): State<Arc<AppState>>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    consent(&state)?;
    let (Some(kind), Some(value), 2) = (query.get("type"), query.get("value"), query.len()) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "give `type` and `value`, such as ?type=email&value=...",
        ));
    };
    let identifier = IdentifierBody {
        kind: kind.clone(),
        value: value.clone(),
    };
    blocking(move || {
        let consent = consent(&state)?;
        let person = resolve(&state, &consent.keyer, None, Some(identifier))?;
        consent_view(consent, &person)
    })
    .await
    .map(Json)
}

/// `POST /v1/privacy/consent`: records one purpose's consent for a person, on every
/// identifier of the profile (or the one identifier), with source `api:<key id>`.
pub(crate) async fn record(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let consent_state = consent(&state)?;
    let body: RecordBody = parse_body(&body, "consent")?;
    let Some(purpose) = consent_state.rules.purpose(&body.purpose) else {
        let known: Vec<&str> = consent_state
            .rules
            .purposes
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_purpose",
            format!(
                "purpose: {:?} is not declared; declared purposes: {}",
                body.purpose,
                known.join(", ")
            ),
        ));
    };
    let status = Status::parse(&body.status).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_status",
            "status: must be \"granted\", \"denied\" or \"withdrawn\"",
        )
    })?;
    let legal_basis = match &body.legal_basis {
        None => purpose.legal_basis,
        Some(text) => text
            .parse::<LegalBasis>()
            .map_err(|error| invalid_body(format!("legal_basis: {error}")))?,
    };
    if !matches!(body.proof, Value::Null | Value::Object(_)) {
        return Err(invalid_body("proof: must be an object"));
    }
    let at_ms = time_ms(body.at.as_deref(), "at")?;
    let source = format!("api:{}", crate::auth::caller_key_id(&headers));
    let purpose_name = purpose.name.clone();
    let proof = Proof::from_json(&body.proof);
    let (profile_id, identifier) = (body.profile_id, body.identifier);
    blocking(move || {
        let consent = consent(&state)?;
        let person = resolve(&state, &consent.keyer, profile_id, identifier)?;
        let entries: Vec<NewEntry> = person
            .keys
            .iter()
            .map(|key| NewEntry {
                ident_key: key.clone(),
                purpose: purpose_name.clone(),
                status,
                at_ms,
                source: source.clone(),
                legal_basis,
                proof: proof.clone(),
            })
            .collect();
        let seqs = consent.ledger.record(&entries).map_err(ledger_error)?;
        tracing::info!(
            profile = person.profile_id.as_deref().unwrap_or("none"),
            purpose = %purpose_name,
            status = %status,
            %source,
            n_identifiers = seqs.len(),
            "consent recorded"
        );
        Ok((
            StatusCode::CREATED,
            Json(json!({"profile_id": person.profile_id, "recorded": seqs.len(), "seqs": seqs})),
        ))
    })
    .await
}

/// `POST /v1/privacy/suppressions`: suppresses every identifier of a profile (or the one
/// identifier), globally or for one destination.
pub(crate) async fn suppress(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    consent(&state)?;
    let body: SuppressionBody = parse_body(&body, "suppression")?;
    let reason = body
        .reason
        .filter(|reason| !reason.trim().is_empty())
        .ok_or_else(|| invalid_body("reason: required, such as \"hard_bounce\""))?;
    let scope = scope_of(body.destination)?;
    let source = format!("api:{}", crate::auth::caller_key_id(&headers));
    let at_ms = jiff::Timestamp::now().as_millisecond();
    let (profile_id, identifier) = (body.profile_id, body.identifier);
    blocking(move || {
        let consent = consent(&state)?;
        let person = resolve(&state, &consent.keyer, profile_id, identifier)?;
        for key in &person.keys {
            consent
                .ledger
                .suppress(&Suppression {
                    ident_key: key.clone(),
                    scope: scope.clone(),
                    reason: reason.clone(),
                    at_ms,
                    source: source.clone(),
                })
                .map_err(ledger_error)?;
        }
        tracing::info!(
            profile = person.profile_id.as_deref().unwrap_or("none"),
            scope = %scope.as_text(),
            %source,
            n_identifiers = person.keys.len(),
            "suppression added"
        );
        Ok((
            StatusCode::CREATED,
            Json(json!({"profile_id": person.profile_id, "suppressed": person.keys.len()})),
        ))
    })
    .await
}

/// `DELETE /v1/privacy/suppressions`: lifts a suppression (same body, without `reason`).
pub(crate) async fn unsuppress(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    consent(&state)?;
    let body: SuppressionBody = parse_body(&body, "suppression")?;
    let scope = scope_of(body.destination)?;
    let source = format!("api:{}", crate::auth::caller_key_id(&headers));
    let (profile_id, identifier) = (body.profile_id, body.identifier);
    blocking(move || {
        let consent = consent(&state)?;
        let person = resolve(&state, &consent.keyer, profile_id, identifier)?;
        let mut removed = 0;
        for key in &person.keys {
            if consent
                .ledger
                .unsuppress(key, &scope)
                .map_err(ledger_error)?
            {
                removed += 1;
            }
        }
        tracing::info!(
            profile = person.profile_id.as_deref().unwrap_or("none"),
            scope = %scope.as_text(),
            %source,
            removed,
            "suppression removed"
        );
        Ok(Json(
            json!({"profile_id": person.profile_id, "removed": removed}),
        ))
    })
    .await
}

/// `GET /v1/privacy/suppressions?cursor=...&limit=...`: the suppression lists, by identifier
/// key (hex), oldest first; continue with `next_cursor`.
pub(crate) async fn list_suppressions(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    consent(&state)?;
    let query = crate::page::query(query)?;
    let limit = crate::page::limit(query.limit)?;
    let cursor = query.cursor.unwrap_or(0);
    blocking(move || {
        let consent = consent(&state)?;
        let page = consent
            .ledger
            .suppressions(cursor, limit)
            .map_err(ledger_error)?;
        let next_cursor = page.last().map_or(cursor, |(position, _)| *position);
        let items: Vec<Value> = page
            .iter()
            .map(|(_, suppression)| suppression_json(suppression))
            .collect();
        Ok(Json(
            json!({"suppressions": items, "next_cursor": next_cursor}),
        ))
    })
    .await
}
