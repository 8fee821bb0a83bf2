//! Admin and operations endpoints: reading the event log and the quarantine, health, readiness
//! and metrics.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use trib_log::{EventLog, StoredRecord};

use crate::{ApiError, AppState};

/// Query of `GET /v1/events` and `GET /v1/quarantine`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadQuery {
    /// One partition; all partitions in order when absent.
    partition: Option<u32>,
    /// Return records after this offset (exclusive); from the start when absent. Needs
    /// `partition`.
    after: Option<u64>,
    /// Continues a read of all partitions: the `next_cursor` of the previous page.
    cursor: Option<String>,
    /// At most this many records (default 100, at most 1000).
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ReadResponse {
    records: Vec<RecordView>,
    /// A one-partition read (`partition` given) that has more: pass it back as `partition`
    /// and `after`.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<Cursor>,
    /// A read of all partitions that has more: pass it back as `cursor` (it goes on into
    /// the later partitions).
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

#[derive(Debug, Serialize)]
struct RecordView {
    partition: u32,
    offset: u64,
    #[serde(rename = "data")]
    payload: Box<RawValue>,
}

#[derive(Debug, Serialize)]
struct Cursor {
    partition: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<u64>,
}

impl Cursor {
    /// `P:O` (after offset O of partition P) or `P:` (from the start of partition P).
    fn encode(&self) -> String {
        match self.after {
            Some(after) => format!("{}:{after}", self.partition),
            None => format!("{}:", self.partition),
        }
    }

    fn decode(text: &str) -> Option<Cursor> {
        let (partition, after) = text.split_once(':')?;
        Some(Cursor {
            partition: partition.parse().ok()?,
            after: match after {
                "" => None,
                after => Some(after.parse().ok()?),
            },
        })
    }
}

pub(crate) async fn list_events(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ReadResponse>, ApiError> {
    read_log(state.events.as_ref(), query).await
}

pub(crate) async fn list_quarantine(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ReadResponse>, ApiError> {
    read_log(state.quarantine.as_ref(), query).await
}

async fn read_log(
    log: &dyn EventLog,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ReadResponse>, ApiError> {
    let query = crate::page::query(query)?;
    let limit = crate::page::limit(query.limit)?;
    let partition_count = log.partition_count();
    let invalid =
        |message: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message);
    let cursor = match &query.cursor {
        Some(_) if query.partition.is_some() || query.after.is_some() => {
            return Err(invalid(
                "cursor: continues a read of all partitions; do not combine it with \
                 `partition` or `after`"
                    .to_owned(),
            ));
        }
        Some(text) => Some(Cursor::decode(text).ok_or_else(|| {
            invalid(format!(
                "cursor: expected the `next_cursor` of a previous page (`P:O`), got {text:?}"
            ))
        })?),
        None => None,
    };
    let first = query
        .partition
        .or(cursor.as_ref().map(|cursor| cursor.partition));
    if let Some(partition) = first.filter(|partition| *partition >= partition_count) {
        return Err(invalid(format!(
            "partition: must be below {partition_count}, got {partition}"
        )));
    }
    let partitions = match (query.partition, &cursor) {
        (Some(partition), _) => partition..partition + 1,
        (None, Some(cursor)) => cursor.partition..partition_count,
        (None, None) => 0..partition_count,
    };
    if query.partition.is_none() && query.after.is_some() {
        return Err(invalid(
            "after: needs `partition`, as offsets are per partition".to_owned(),
        ));
    }
    let after = query.after.or(cursor.and_then(|cursor| cursor.after));
    let from = after.map_or(0, |after| after.saturating_add(1));

    let mut records: Vec<StoredRecord> = Vec::new();
    let mut next = None;
    for partition in partitions.clone() {
        let start = if partition == partitions.start {
            from
        } else {
            0
        };
        let batch = log.read(partition, start, limit - records.len()).await?;
        records.extend(batch);
        if records.len() >= limit {
            let last = records.last().map_or(start, |record| record.offset);
            next = if last + 1 < log.end_offset(partition).await? {
                Some(Cursor {
                    partition,
                    after: Some(last),
                })
            } else if partition + 1 < partitions.end {
                Some(Cursor {
                    partition: partition + 1,
                    after: None,
                })
            } else {
                None
            };
            break;
        }
    }
    // A one-partition read answers `next`; a read of all partitions a cursor that stays one.
    let (next, next_cursor) = if query.partition.is_some() {
        (next, None)
    } else {
        (None, next.map(|next| next.encode()))
    };
    let records = records
        .into_iter()
        // An empty payload is an erased or blanked (retention) record: nothing to show.
        .filter(|record| !record.payload.is_empty())
        .map(|record| {
            let text = String::from_utf8(record.payload.to_vec())
                .map_err(|error| ApiError::internal(&error))?;
            let payload =
                RawValue::from_string(text).map_err(|error| ApiError::internal(&error))?;
            Ok(RecordView {
                partition: record.partition,
                offset: record.offset,
                payload,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(ReadResponse {
        records,
        next,
        next_cursor,
    }))
}

/// One partition of a log and the offset its next record will get.
#[derive(Debug, Serialize)]
pub(crate) struct PartitionView {
    partition: u32,
    end_offset: u64,
}

pub(crate) async fn event_partitions(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Vec<PartitionView>>, ApiError> {
    partitions(state.events.as_ref()).await
}

pub(crate) async fn quarantine_partitions(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Vec<PartitionView>>, ApiError> {
    partitions(state.quarantine.as_ref()).await
}

async fn partitions(log: &dyn EventLog) -> Result<Json<Vec<PartitionView>>, ApiError> {
    let mut views = Vec::new();
    for partition in 0..log.partition_count() {
        views.push(PartitionView {
            partition,
            end_offset: log.end_offset(partition).await?,
        });
    }
    Ok(Json(views))
}

pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Ready when both logs answer.
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let events = state.events.end_offset(0).await;
    let quarantine = state.quarantine.end_offset(0).await;
    match (events, quarantine) {
        (Ok(_), Ok(_)) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        (Err(error), _) | (_, Err(error)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "unavailable", "reason": error.to_string() })),
        )
            .into_response(),
    }
}

pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "metrics_disabled",
            "metrics are not enabled",
        )
        .into_response(),
    }
}
