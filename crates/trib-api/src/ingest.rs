//! The Segment-compatible ingestion handlers.
//!
//! Every route runs the same steps: authenticate, read the body within its limits, parse the
//! envelope, validate each message, then append accepted events to the event log and rejected
//! messages to the quarantine, both durably, before answering. A batch with some invalid
//! messages is not refused: the response counts what was accepted, deduplicated and rejected,
//! and lists each rejection with its index.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde::Serialize;
use trib_core::{Event, EventGate, EventType, QuarantinedMessage};
use trib_log::{AppendOutcome, Record};

use crate::segment::{self, IngestContext, Route};
use crate::telemetry::{
    ACK_LATENCY, EVENTS_ACCEPTED, EVENTS_DUPLICATE, EVENTS_ERASED, EVENTS_RECEIVED,
    EVENTS_REJECTED, REQUESTS_REFUSED,
};
use crate::{ApiError, AppState, auth, body};

/// Size limits of ingestion requests, measured on decompressed bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_message_bytes: usize,
    pub(crate) max_request_bytes: usize,
}

/// The answer to an ingestion request. `success` stays `true` when some messages were
/// rejected, as Segment's libraries read any 200 as delivered.
#[derive(Debug, Serialize)]
pub(crate) struct IngestResponse {
    success: bool,
    pub(crate) accepted: usize,
    pub(crate) duplicates: usize,
    /// Messages about an erased person, not stored (absent when zero).
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) erased: usize,
    rejected: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) errors: Vec<RejectionSummary>,
}

fn is_zero(count: &usize) -> bool {
    *count == 0
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RejectionSummary {
    pub(crate) index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) field: Option<String>,
    pub(crate) code: String,
    pub(crate) reason: String,
}

pub(crate) async fn batch(
    state: State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    ingest(state, Route::Batch, headers, body).await
}

pub(crate) async fn identify(
    state: State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    ingest(state, Route::Single(EventType::Identify), headers, body).await
}

pub(crate) async fn track(
    state: State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    ingest(state, Route::Single(EventType::Track), headers, body).await
}

pub(crate) async fn page(
    state: State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    ingest(state, Route::Single(EventType::Page), headers, body).await
}

pub(crate) async fn screen(
    state: State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    ingest(state, Route::Single(EventType::Screen), headers, body).await
}

pub(crate) async fn group(
    state: State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    ingest(state, Route::Single(EventType::Group), headers, body).await
}

pub(crate) async fn alias(
    state: State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    ingest(state, Route::Single(EventType::Alias), headers, body).await
}

async fn ingest(
    State(state): State<Arc<AppState>>,
    route: Route,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    let started = Instant::now();
    let result = accept(&state, route, &headers, body).await;
    match &result {
        Ok((source, _)) => {
            metrics::histogram!(ACK_LATENCY, "source" => source.to_string())
                .record(started.elapsed().as_secs_f64());
        }
        Err(error) => {
            metrics::counter!(REQUESTS_REFUSED, "code" => error.code().to_owned()).increment(1);
        }
    }
    let (_, response) = result?;
    if let Route::Single(_) = route
        && response.rejected > 0
        && let Some(rejection) = response.errors.first()
    {
        // A single-message call whose message was quarantined is answered as a client error, so
        // the caller learns of it; the message is kept all the same.
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            rejection.code.clone(),
            format!(
                "{} (the message was kept in the quarantine)",
                rejection.reason
            ),
        )
        .for_message(rejection.message_id.clone(), rejection.field.clone()));
    }
    Ok(Json(response))
}

async fn accept(
    state: &AppState,
    route: Route,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Arc<str>, IngestResponse), ApiError> {
    // With Basic credentials, refuse a wrong key before reading the body.
    let basic_user = auth::basic_user(headers)?;
    let early_source = match basic_user.as_deref() {
        Some(user) => Some(state.sources.authenticate(Some(user), None)?),
        None => None,
    };
    let bytes = body::read_body(headers, body, state.limits.max_request_bytes).await?;
    let envelope = segment::parse_envelope(&bytes, route)
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, error.code(), error.to_string()))?;
    let source = match early_source {
        Some(source) => source,
        None => state.sources.authenticate(None, envelope.write_key())?,
    };

    let received_at = jiff::Timestamp::now();
    let context = IngestContext {
        source: &source,
        received_at,
        limits: segment::Limits {
            max_message_bytes: state.limits.max_message_bytes,
        },
    };
    let mut intake = Intake::new(source.clone(), received_at, envelope.len());
    for (index, outcome) in envelope.into_messages(&context).into_iter().enumerate() {
        match outcome {
            Ok(event) => intake.events.push((index, event)),
            Err(rejection) => {
                intake.errors.push(RejectionSummary {
                    index: rejection.index,
                    message_id: rejection.message_id.clone(),
                    field: rejection.field.clone(),
                    code: rejection.code.to_owned(),
                    reason: rejection.reason.clone(),
                });
                intake
                    .quarantined
                    .push(rejection.into_quarantined(&context));
            }
        }
    }
    let response = store(state, intake, "api").await?;
    Ok((source, response))
}

/// What one request brought, before the gate and storage.
pub(crate) struct Intake {
    pub(crate) source: Arc<str>,
    pub(crate) received_at: jiff::Timestamp,
    /// How many messages the request held.
    pub(crate) n_messages: usize,
    /// Parsed events with their position in the request.
    pub(crate) events: Vec<(usize, Event)>,
    /// Messages already refused, kept for the quarantine.
    pub(crate) quarantined: Vec<QuarantinedMessage>,
    /// What the response says about each refused message.
    pub(crate) errors: Vec<RejectionSummary>,
}

impl Intake {
    pub(crate) fn new(source: Arc<str>, received_at: jiff::Timestamp, n_messages: usize) -> Intake {
        Intake {
            source,
            received_at,
            n_messages,
            events: Vec::with_capacity(n_messages),
            quarantined: Vec::new(),
            errors: Vec::new(),
        }
    }
}

/// Passes every event through its source's gate, then appends the admitted events to the event
/// log and everything refused to the quarantine, both durably, and counts the outcome.
///
/// `origin` names the path the messages came by (`api`, `webhook`), stored with refusals.
pub(crate) async fn store(
    state: &AppState,
    intake: Intake,
    origin: &str,
) -> Result<IngestResponse, ApiError> {
    let Intake {
        source,
        received_at,
        n_messages,
        events,
        mut quarantined,
        mut errors,
    } = intake;
    let gate = state.gates.get(&source);
    let timestamp_ms = received_at.as_millisecond();
    let mut records = Vec::with_capacity(events.len());
    for (index, mut event) in events {
        let admitted = match gate {
            Some(gate) => gate.admit(&mut event),
            None => Ok(()),
        };
        match admitted {
            Ok(()) => {
                let payload =
                    serde_json::to_vec(&event).map_err(|error| ApiError::internal(&error))?;
                records.push(Record {
                    key: event.partition_key().to_owned(),
                    dedup_id: Some(dedup_id(&source, &event.message_id)),
                    timestamp_ms,
                    payload: Bytes::from(payload),
                });
            }
            Err(refusal) => {
                let raw = serde_json::value::to_raw_value(&event)
                    .map_err(|error| ApiError::internal(&error))?;
                errors.push(RejectionSummary {
                    index,
                    message_id: Some(event.message_id.clone()),
                    field: refusal.field.clone(),
                    code: refusal.code.clone(),
                    reason: refusal.reason.clone(),
                });
                quarantined.push(QuarantinedMessage {
                    source: source.to_string(),
                    received_at,
                    index,
                    message_id: Some(event.message_id),
                    field: refusal.field,
                    code: refusal.code,
                    reason: refusal.reason,
                    schema: refusal.schema,
                    // A gate refusal keeps the parsed event, so a replay runs the gate again.
                    origin: Some(format!("{GATE_ORIGIN_PREFIX}{origin}")),
                    message: raw,
                    replay_context: None,
                });
            }
        }
    }
    let quarantine_records = quarantined
        .iter()
        .map(quarantine_record)
        .collect::<Result<Vec<_>, _>>()?;

    let n_events = records.len();
    let (appended, _) = tokio::try_join!(
        state.events.append(records),
        append_unless_empty(state, quarantine_records),
    )?;
    let duplicates = appended
        .iter()
        .filter(|outcome| matches!(outcome, AppendOutcome::Duplicate))
        .count();
    let erased = appended
        .iter()
        .filter(|outcome| matches!(outcome, AppendOutcome::Erased))
        .count();

    let source_label = source.to_string();
    metrics::counter!(EVENTS_RECEIVED, "source" => source_label.clone())
        .increment(n_messages as u64);
    metrics::counter!(EVENTS_ACCEPTED, "source" => source_label.clone())
        .increment((n_events - duplicates - erased) as u64);
    metrics::counter!(EVENTS_DUPLICATE, "source" => source_label.clone())
        .increment(duplicates as u64);
    for error in &errors {
        metrics::counter!(EVENTS_REJECTED, "source" => source_label.clone(), "code" => error.code.clone()).increment(1);
    }

    if erased > 0 {
        metrics::counter!(EVENTS_ERASED, "source" => source_label.clone()).increment(erased as u64);
    }

    Ok(IngestResponse {
        success: true,
        accepted: n_events - duplicates - erased,
        duplicates,
        erased,
        rejected: errors.len(),
        errors,
    })
}

/// The `origin` of a quarantined message that passed parsing but was refused by the gate: its
/// `message` is the parsed [`Event`].
pub(crate) const GATE_ORIGIN_PREFIX: &str = "gate:";

async fn append_unless_empty(
    state: &AppState,
    records: Vec<Record>,
) -> Result<Vec<AppendOutcome>, trib_log::LogError> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    state.quarantine.append(records).await
}

/// Deduplication is per source: two sources may use the same `messageId`.
fn dedup_id(source: &str, message_id: &str) -> String {
    let mut id = String::with_capacity(source.len() + 1 + message_id.len());
    id.push_str(source);
    id.push('\u{0}');
    id.push_str(message_id);
    id
}

fn quarantine_record(quarantined: &QuarantinedMessage) -> Result<Record, ApiError> {
    let payload = serde_json::to_vec(quarantined).map_err(|error| ApiError::internal(&error))?;
    Ok(Record {
        // The person's key, so that the record is sealed under their data key and erased
        // with them; the source when the message names nobody.
        key: quarantined
            .person_key()
            .unwrap_or_else(|| quarantined.source.clone()),
        // A client retrying a batch must not quarantine its invalid messages twice; the index
        // is part of the id because an invalid message may lack a usable messageId.
        dedup_id: quarantined.message_id.as_deref().map(|message_id| {
            format!(
                "{}\u{0}{}",
                dedup_id(&quarantined.source, message_id),
                quarantined.index
            )
        }),
        timestamp_ms: quarantined.received_at.as_millisecond(),
        payload: Bytes::from(payload),
    })
}
