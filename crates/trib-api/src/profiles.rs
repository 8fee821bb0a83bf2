//! The profile API: golden profiles by id and by identifier, the change feed, a person's
//! timeline, provenance, and unmerge. Reads need `profiles:read`, changes `profiles:write`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use trib_identity::consumer::IdentityConsumer;
use trib_identity::view::{self, Found};
use trib_identity::{Exclusion, IdentityRules, Keyer};
use trib_log::EventLog;
use trib_store::{ChangeKind, EventRef, ProfileId, ProfileStore, TimelineEntry};

use crate::{ApiError, AppState, page};

/// What the profile routes need; absent when the server runs without a profile store.
pub struct ProfilesState {
    pub store: Arc<dyn ProfileStore>,
    pub keyer: Keyer,
    pub rules: Arc<IdentityRules>,
    /// The running identity consumer; unmerges are sent to it.
    pub consumer: Option<Arc<IdentityConsumer>>,
}

pub(crate) fn profiles(state: &AppState) -> Result<&ProfilesState, ApiError> {
    state.profiles.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "profiles_disabled",
            "this server runs without a profile store",
        )
    })
}

pub(crate) fn parse_id(text: &str) -> Result<ProfileId, ApiError> {
    text.parse().map_err(|e: trib_store::ProfileIdError| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_profile_id",
            format!("{text:?}: {e}"),
        )
    })
}

/// Runs blocking store work off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, trib_store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(ApiError::internal(&error)),
        Err(error) => Err(ApiError::internal(&error)),
    }
}

/// Finds a profile and the summary of its timeline (for the JSON view).
type Summarized = (Found, trib_store::TimelineSummary);

fn summarize(store: &dyn ProfileStore, found: Found) -> Result<Summarized, trib_store::StoreError> {
    let summary = match &found {
        Found::Active { profile, .. } => match profile.id.parse::<ProfileId>() {
            Ok(id) => store.timeline_summary(&id)?,
            Err(_) => trib_store::TimelineSummary::default(),
        },
        _ => trib_store::TimelineSummary::default(),
    };
    Ok((found, summary))
}

/// The profile as JSON; the response names the profile it released for the audit log (the one
/// a lookup found, or the one a merged id redirects to).
fn found_response((found, summary): Summarized, asked: &str) -> Result<Response, ApiError> {
    match found {
        Found::Active {
            profile,
            updated_at_ms,
            redirected_from,
        } => {
            let mut body = view::profile_json(&profile, updated_at_ms, &summary);
            if let (Some(from), Some(object)) = (redirected_from, body.as_object_mut()) {
                object.insert("redirected_from".into(), json!(from.to_string()));
            }
            let mut response = Json(body).into_response();
            if let Ok(id) = profile.id.parse::<ProfileId>() {
                response
                    .extensions_mut()
                    .insert(trib_audit::ProfileRef::profile(id));
            }
            Ok(response)
        }
        Found::Deleted { at_ms } => Err(ApiError::new(
            StatusCode::GONE,
            "profile_deleted",
            format!("profile {asked} was deleted at {}", view::time_text(at_ms)),
        )),
        Found::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "profile_not_found",
            format!("no profile {asked}"),
        )),
    }
}

/// `GET /v1/profiles/{id}`: a golden profile; a merged id answers with the profile it was
/// merged into and `redirected_from`.
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let profiles = profiles(&state)?;
    let pid = parse_id(&id)?;
    let store = profiles.store.clone();
    let found = blocking(move || summarize(&*store, view::find(&*store, pid)?)).await?;
    found_response(found, &id)
}

/// `GET /v1/profiles/lookup?email=...` (or `user_id`, `phone`, `anonymous_id`, any configured
/// type; or `type=...&value=...`).
pub(crate) async fn lookup(
    State(state): State<Arc<AppState>>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let profiles = profiles(&state)?;
    let (kind, value) = match (query.get("type"), query.get("value")) {
        (Some(kind), Some(value)) if query.len() == 2 => (kind.clone(), value.clone()),
        _ if query.len() == 1 => {
            let (kind, value) = query
                .iter()
                .next()
                .map(|(k, v)| (k.clone(), v.clone()))
                .ok_or_else(|| page::bad_query("name one identifier"))?;
            (kind, value)
        }
        _ => {
            return Err(page::bad_query(
                "name exactly one identifier, such as ?email=... or ?type=crm_id&value=...",
            ));
        }
    };
    if profiles.rules.type_index(&kind).is_none() {
        let known: Vec<&str> = profiles
            .rules
            .types
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        return Err(page::bad_query(format!(
            "{kind:?} is not an identifier type; configured types: {}",
            known.join(", ")
        )));
    }
    let store = profiles.store.clone();
    let keyer = profiles.keyer.clone();
    let found = blocking(move || {
        summarize(
            &*store,
            view::find_by_identifier(&*store, &keyer, &kind, &value)?,
        )
    })
    .await?;
    // The identifier's value is personal data: it is not echoed in the error.
    found_response(found, "with that identifier")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangesQuery {
    /// Only profiles changed at or after this time (RFC 3339).
    updated_since: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<u64>,
    limit: Option<usize>,
}

/// `GET /v1/profiles?updated_since=...&cursor=...`: the change feed. Each profile id appears
/// once, at its latest change; poll with the returned `next_cursor`.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ChangesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let profiles = profiles(&state)?;
    let query = page::query(query)?;
    let limit = page::limit(query.limit)?;
    let since = match &query.updated_since {
        None => None,
        Some(text) => Some(
            text.parse::<jiff::Timestamp>()
                .map_err(|e| {
                    page::bad_query(format!(
                        "updated_since: {text:?} is not an RFC 3339 time: {e}"
                    ))
                })?
                .as_millisecond(),
        ),
    };
    let cursor = query.cursor.unwrap_or(0);
    let store = profiles.store.clone();
    let page = blocking(move || {
        let changes = store.changes(since, cursor, limit)?;
        let mut items = Vec::with_capacity(changes.len());
        for change in &changes {
            let mut item = json!({
                "id": change.id.to_string(),
                "updated_at": view::time_text(change.updated_at_ms),
                "seq": change.seq,
            });
            match change.kind {
                ChangeKind::Upserted => {
                    if let Found::Active {
                        profile,
                        updated_at_ms,
                        ..
                    } = view::find(&*store, change.id)?
                    {
                        let summary = store.timeline_summary(&change.id)?;
                        item["change"] = json!("upserted");
                        item["profile"] = view::profile_json(&profile, updated_at_ms, &summary);
                    } else {
                        item["change"] = json!("deleted");
                    }
                }
                ChangeKind::MergedInto(into) => {
                    item["change"] = json!("merged");
                    item["merged_into"] = json!(into.to_string());
                }
                ChangeKind::Deleted => item["change"] = json!("deleted"),
            }
            items.push(item);
        }
        let next = changes.last().map_or(cursor, |c| c.seq);
        Ok(json!({"profiles": items, "next_cursor": next}))
    })
    .await?;
    Ok(Json(page))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// The `next` of the previous page.
    before: Option<String>,
    limit: Option<usize>,
}

fn parse_timeline_cursor(text: &str) -> Option<TimelineEntry> {
    let mut parts = text.split('.');
    let timestamp_ms = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some(TimelineEntry {
        timestamp_ms,
        event: EventRef { partition, offset },
    })
}

/// `GET /v1/profiles/{id}/events?before=...&limit=...`: the person's events, newest first.
pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let profiles = profiles(&state)?;
    let query = page::query(query)?;
    let limit = page::limit(query.limit)?;
    let before = match &query.before {
        None => None,
        Some(text) => Some(parse_timeline_cursor(text).ok_or_else(|| {
            page::bad_query(format!(
                "before: {text:?} is not a cursor returned as `next`"
            ))
        })?),
    };
    let pid = parse_id(&id)?;
    let store = profiles.store.clone();
    let (canonical, entries) = blocking(move || {
        let canonical = match view::find(&*store, pid)? {
            Found::Active { profile, .. } => profile.id.parse::<ProfileId>().ok(),
            _ => None,
        };
        let entries = match canonical {
            Some(canonical) => store.timeline(&canonical, before.as_ref(), limit)?,
            None => Vec::new(),
        };
        Ok((canonical, entries))
    })
    .await?;
    let Some(canonical) = canonical else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "profile_not_found",
            format!("no profile {id}"),
        ));
    };
    let mut events = Vec::with_capacity(entries.len());
    for entry in &entries {
        events.push(read_event(state.events.as_ref(), entry.event).await?);
    }
    let next = (entries.len() == limit)
        .then(|| entries.last())
        .flatten()
        .map(|e| {
            format!(
                "{}.{}.{}",
                e.timestamp_ms, e.event.partition, e.event.offset
            )
        });
    Ok(Json(json!({
        "profile": canonical.to_string(),
        "events": events,
        "next": next,
    })))
}

async fn read_event(log: &dyn EventLog, at: EventRef) -> Result<Value, ApiError> {
    let records = log
        .read(at.partition, at.offset, 1)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    match records.first() {
        Some(record) if record.offset == at.offset => {
            let data: Value = serde_json::from_slice(&record.payload).unwrap_or(Value::Null);
            Ok(json!({"partition": at.partition, "offset": at.offset, "data": data}))
        }
        _ => Ok(
            json!({"partition": at.partition, "offset": at.offset, "data": null, "missing": true}),
        ),
    }
}

/// `GET /v1/profiles/{id}/explain`: how the profile came to be — merges with the identifiers
/// and events that caused them, refused merges with their reason, renames and unmerges.
pub(crate) async fn explain(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let profiles = profiles(&state)?;
    let pid = parse_id(&id)?;
    let store = profiles.store.clone();
    let result = blocking(move || match view::find(&*store, pid)? {
        Found::Active { profile, .. } => Ok(Some((
            profile.id.clone(),
            view::explain(&*store, &profile)?,
        ))),
        _ => Ok(None),
    })
    .await?;
    match result {
        Some((canonical, history)) => Ok(Json(json!({"profile": canonical, "history": history}))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "profile_not_found",
            format!("no profile {id}"),
        )),
    }
}

/// Body of `POST /v1/profiles/{id}/unmerge`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UnmergeBody {
    identifier: Option<IdentifierBody>,
    event: Option<EventBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentifierBody {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    source: String,
    message_id: String,
}

/// `POST /v1/profiles/{id}/unmerge` with `{"identifier": {"type", "value"}}` or
/// `{"event": {"source", "message_id"}}`: removes it and rebuilds the profile from the log.
pub(crate) async fn unmerge(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let profiles = profiles(&state)?;
    let pid = parse_id(&id)?;
    let body: UnmergeBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("unmerge body: {e}"),
        )
    })?;
    let exclusion = match (body.identifier, body.event) {
        (Some(identifier), None) => {
            if profiles.rules.type_index(&identifier.kind).is_none() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    format!(
                        "identifier.type: {:?} is not a configured identifier type",
                        identifier.kind
                    ),
                ));
            }
            Exclusion::Identifier {
                value: trib_identity::extract::canonical_value(&identifier.kind, &identifier.value),
                kind: identifier.kind,
            }
        }
        (None, Some(event)) => Exclusion::Event {
            source: event.source,
            message_id: event.message_id,
        },
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "give exactly one of `identifier` and `event`",
            ));
        }
    };
    match consumer_of(profiles)?.unmerge(pid, exclusion).await {
        Ok(report) => Ok(Json(json!(report))),
        Err(trib_identity::EngineError::UnknownProfile(_)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "profile_not_found",
            format!("no profile {id}"),
        )),
        Err(trib_identity::EngineError::DeletedProfile { .. }) => Err(ApiError::new(
            StatusCode::GONE,
            "profile_deleted",
            format!("profile {id} was deleted"),
        )),
        Err(trib_identity::EngineError::Invalid(message)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "cannot_unmerge",
            message,
        )),
        Err(error) => Err(ApiError::internal(&error)),
    }
}

pub(crate) fn consumer_of(profiles: &ProfilesState) -> Result<&Arc<IdentityConsumer>, ApiError> {
    profiles.consumer.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "identity_not_running",
            "the identity consumer is not running on this server",
        )
    })
}

fn engine_error(error: trib_identity::EngineError) -> ApiError {
    match error {
        trib_identity::EngineError::Invalid(message) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "identity_refused",
            message,
        ),
        other => ApiError::internal(&other),
    }
}

/// `POST /v1/identity/match`: probabilistic matching over the stored profiles; merges above
/// the upper threshold, queues pairs between the thresholds for review.
pub(crate) async fn run_match(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let profiles = profiles(&state)?;
    let report = consumer_of(profiles)?
        .match_profiles()
        .await
        .map_err(engine_error)?;
    Ok(Json(json!(report)))
}

/// `GET /v1/identity/review`: pairs waiting for a decision, strongest first.
pub(crate) async fn review_queue(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Value>, ApiError> {
    let profiles = profiles(&state)?;
    let store = profiles.store.clone();
    let queue =
        match tokio::task::spawn_blocking(move || trib_identity::engine::review_queue(&*store))
            .await
        {
            Ok(Ok(queue)) => queue,
            Ok(Err(error)) => return Err(engine_error(error)),
            Err(error) => return Err(ApiError::internal(&error)),
        };
    Ok(Json(json!({"items": queue})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecisionBody {
    /// `merge` or `distinct`.
    decision: String,
}

/// `POST /v1/identity/review/{item}` with `{"decision": "merge" | "distinct"}`.
pub(crate) async fn decide(
    State(state): State<Arc<AppState>>,
    Path(item): Path<u64>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let profiles = profiles(&state)?;
    let body: DecisionBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("decision body: {e}"),
        )
    })?;
    let merge = match body.decision.as_str() {
        "merge" => true,
        "distinct" => false,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("decision: {other:?} is neither \"merge\" nor \"distinct\""),
            ));
        }
    };
    let merged = consumer_of(profiles)?
        .decide_review(item, merge)
        .await
        .map_err(engine_error)?;
    Ok(Json(
        json!({"item": item, "decision": body.decision, "merged": merged}),
    ))
}
