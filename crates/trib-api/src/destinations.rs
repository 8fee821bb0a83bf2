//! The destinations' sync state: `GET /v1/destinations` (each destination with its pending,
//! confirmed and dead-lettered counts), `GET /v1/destinations/{name}/dlq` (dead letters, paged
//! by `cursor` and `limit`),
//! `POST /v1/destinations/{name}/dlq/replay` (back to work: all, or `{"ids": [...]}`),
//! `POST /v1/destinations/{name}/resync` (send every profile's mapped fields again, for an
//! ESP that drifted from what it confirmed), and
//! `GET /v1/privacy/erasures/{id}/destinations` (where an erasure's deletions stand now).
//!
//! Dead letters name profile ids and error classes, never personal values.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use trib_sync::SyncState;

use crate::privacy::{blocking, parse_body};
use crate::{ApiError, AppState, page};

/// What the destination routes need.
#[derive(Clone, Debug)]
pub struct DestinationsState {
    pub sync: Arc<SyncState>,
    /// The configured destinations: name, type, purpose, mode.
    pub destinations: Vec<DestinationInfo>,
}

/// One configured destination, as listed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DestinationInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub purpose: String,
    pub mode: String,
}

fn destinations(state: &AppState) -> Result<&DestinationsState, ApiError> {
    state.destinations.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "sync_disabled",
            "this server runs without the sync engine",
        )
    })
}

fn known<'a>(state: &'a DestinationsState, name: &str) -> Result<&'a DestinationInfo, ApiError> {
    state
        .destinations
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "destination_not_found",
                format!("no destination named {name:?} is configured"),
            )
        })
}

fn state_error(error: trib_sync::state::StateError) -> ApiError {
    ApiError::internal(&error)
}

/// `GET /v1/destinations`.
pub(crate) async fn list(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let destinations = destinations(&state)?.clone();
    let listed = blocking(move || {
        destinations
            .destinations
            .iter()
            .map(|info| {
                let counts = destinations.sync.counts(&info.name).map_err(state_error)?;
                Ok(json!({
                    "name": info.name,
                    "type": info.kind,
                    "purpose": info.purpose,
                    "mode": info.mode,
                    "pending": counts.pending,
                    "confirmed": counts.confirmed,
                    "deletions_pending": counts.deletions_pending,
                    "dead_letters": counts.dead_letters,
                }))
            })
            .collect::<Result<Vec<Value>, ApiError>>()
    })
    .await?;
    Ok(Json(json!({ "destinations": listed })))
}

/// Query of `GET /v1/destinations/{name}/dlq`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DlqQuery {
    /// The `next_cursor` of the previous page (a dead letter id); from the oldest when absent.
    cursor: Option<i64>,
    /// At most this many (default 100, at most 1,000).
    limit: Option<usize>,
}

/// `GET /v1/destinations/{name}/dlq?cursor=...&limit=...`: dead letters, oldest first;
/// continue with `next_cursor` (a page shorter than `limit` is the last).
pub(crate) async fn dead_letters(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    query: Result<Query<DlqQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = page::query(query)?;
    let limit = page::limit(query.limit)?;
    let cursor = query.cursor.unwrap_or(0);
    let destinations = destinations(&state)?;
    known(destinations, &name)?;
    let sync = destinations.sync.clone();
    let letters = blocking(move || {
        sync.dead_letters_page(Some(&name), cursor, limit)
            .map_err(state_error)
    })
    .await?;
    let next_cursor = letters.last().map_or(cursor, |letter| letter.id);
    Ok(Json(
        json!({ "dead_letters": letters, "next_cursor": next_cursor }),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    ids: Option<Vec<i64>>,
}

/// `POST /v1/destinations/{name}/dlq/replay`.
pub(crate) async fn replay(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let destinations = destinations(&state)?;
    known(destinations, &name)?;
    let body: ReplayBody = if body.is_empty() {
        ReplayBody::default()
    } else {
        parse_body(&body, "replay")?
    };
    let sync = destinations.sync.clone();
    let now = jiff::Timestamp::now().as_millisecond();
    let replayed = blocking(move || {
        sync.replay(&name, body.ids.as_deref(), now)
            .map_err(state_error)
    })
    .await?;
    Ok(Json(json!({ "replayed": replayed })))
}

/// `POST /v1/destinations/{name}/resync`: the destination's worker, between two rounds, makes
/// every record it confirmed forget what was confirmed and reconciles, so each profile it
/// should hold is sent in full and confirmed again (202: the work is queued, not done;
/// `confirmed` is how many records the ESP had confirmed when asked).
pub(crate) async fn resync(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let destinations = destinations(&state)?;
    known(destinations, &name)?;
    let sync = destinations.sync.clone();
    let now = jiff::Timestamp::now().as_millisecond();
    let confirmed = blocking(move || sync.request_resync(&name, now).map_err(state_error)).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "resync": "queued", "confirmed": confirmed })),
    ))
}

/// `GET /v1/privacy/erasures/{id}/destinations`: the erasure's deletions, per destination,
/// as they stand now (the signed receipt shows them as queued when the erasure ran).
pub(crate) async fn erasure_status(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let destinations = destinations(&state)?;
    let sync = destinations.sync.clone();
    let status = blocking(move || sync.erasure_status(&id).map_err(state_error)).await?;
    Ok(Json(json!({ "destinations": status })))
}
