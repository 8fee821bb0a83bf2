//! `POST /v1/quarantine/replay`: runs quarantined messages through validation again, after a
//! schema, mapping or rule fix, and sends the ones that pass on to the event log, exactly once.
//!
//! Exactly once rests on three things: a replayed event keeps its `messageId` and is appended
//! with the API's deduplication id (`<source>\0<messageId>`), so the event log stores it at most
//! once even if a replay is interrupted and run again; every message that reached the event log
//! is recorded in the resolutions log, so later replays skip it; and a message that fails again
//! is left as it is, never quarantined a second time. The last matters for imported rows: they
//! are stored without a log deduplication id (see `trib_sources::import`), so the log would
//! not recognise a second quarantine record of the same row, and a later replay of both records
//! could store the row twice.
//!
//! What can be replayed: messages refused by the gate (normalization, schema, `unknown_events`:
//! origin `gate:*`, stored as the parsed event), messages refused while parsing a Segment call
//! (origin `api`: the raw message is parsed again, as a batch item), imported rows (origin
//! `import:<file>`: the raw row is mapped again with the source's current `[sources.import]`
//! mapping), and webhook elements refused by the mapping (origin `webhook`: mapped again with
//! the source's current `[sources.webhook]` mappings from the delivery context kept in the
//! record, see `trib_sources::webhook::WebhookSource::remap`; the signature is not checked
//! again). A webhook record that stands for a whole body (no mapping applied, `each` selected
//! nothing) replays every event the body maps to now, all or none. Reported as
//! `not_replayable`: webhook records quarantined before delivery contexts were kept, and
//! records of a source whose import or webhook configuration is gone.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use trib_core::{Event, EventGate, QuarantinedMessage};
use trib_log::Record;
use trib_sources::webhook::ReplayContext;

use crate::ingest::{GATE_ORIGIN_PREFIX, Intake, store};
use crate::segment::{self, IngestContext, Route};
use crate::{ApiError, AppState};

/// Messages read from the quarantine per step.
const PAGE: usize = 1000;
/// Webhook bodies remembered during a replay for the refused elements that follow the one
/// keeping their delivery's body (they are appended together, so the last few suffice).
const BODIES_REMEMBERED: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayQuery {
    /// Only messages of this source.
    source: Option<String>,
    /// Only messages refused with this code.
    code: Option<String>,
}

/// The outcome of a replay.
#[derive(Debug, Default, Serialize)]
pub(crate) struct ReplayReport {
    /// Quarantined messages looked at (after the filters), not counting resolved ones.
    examined: usize,
    /// Messages that passed and were stored in the event log.
    replayed: usize,
    /// Events those messages became (a webhook record of a whole body may become several).
    events_stored: usize,
    /// Messages that passed but were already in the event log.
    duplicates: usize,
    /// Messages that still fail, by code.
    still_failing: BTreeMap<String, usize>,
    /// Messages that cannot be replayed here (imports, webhooks), by origin.
    not_replayable: BTreeMap<String, usize>,
    /// Messages skipped because an earlier replay resolved them.
    already_resolved: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct Resolution {
    partition: u32,
    offset: u64,
    message_id: Option<String>,
    resolved_at: jiff::Timestamp,
}

pub(crate) async fn replay(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ReplayQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ReplayReport>, ApiError> {
    let query = crate::page::query(query)?;
    let resolved = resolved_positions(&state).await?;
    let mut report = ReplayReport::default();
    let mut bodies = Bodies::default();
    for partition in 0..state.quarantine.partition_count() {
        let mut from = 0;
        loop {
            let records = state.quarantine.read(partition, from, PAGE).await?;
            let Some(last) = records.last().map(|record| record.offset) else {
                break;
            };
            for record in records {
                let quarantined: QuarantinedMessage = serde_json::from_slice(&record.payload)
                    .map_err(|error| ApiError::internal(&error))?;
                // Whether resolved or filtered out, a record keeping its delivery's body is
                // remembered for the refused elements after it.
                bodies.remember(&quarantined);
                if resolved.contains(&(record.partition, record.offset)) {
                    report.already_resolved += 1;
                    continue;
                }
                if query
                    .source
                    .as_deref()
                    .is_some_and(|source| source != quarantined.source)
                    || query
                        .code
                        .as_deref()
                        .is_some_and(|code| code != quarantined.code)
                {
                    continue;
                }
                report.examined += 1;
                replay_one(
                    &state,
                    record.partition,
                    record.offset,
                    quarantined,
                    &bodies,
                    &mut report,
                )
                .await?;
            }
            from = last + 1;
        }
    }
    Ok(Json(report))
}

async fn replay_one(
    state: &AppState,
    partition: u32,
    offset: u64,
    quarantined: QuarantinedMessage,
    bodies: &Bodies,
    report: &mut ReplayReport,
) -> Result<(), ApiError> {
    let source: Arc<str> = Arc::from(quarantined.source.as_str());
    let origin = quarantined
        .origin
        .clone()
        .unwrap_or_else(|| "api".to_owned());
    let events = if origin.starts_with(GATE_ORIGIN_PREFIX) {
        match serde_json::from_str::<Event>(quarantined.message.get()) {
            Ok(event) => Ok(vec![event]),
            Err(error) => Err(("unreadable_event".to_owned(), error.to_string())),
        }
    } else if origin == "api" {
        reparse(&source, &quarantined).map(|event| vec![event])
    } else if origin.starts_with("import:")
        && let Some((mapping, normalize)) = state.imports.mappings.get(&quarantined.source)
    {
        trib_sources::import::replay_row(&quarantined.source, mapping, normalize, &quarantined)
            .map(|event| vec![event])
            .map_err(|refusal| (refusal.code, refusal.reason))
    } else if let Some(webhook) = state.webhooks.get(&quarantined.source)
        && let Some(context) = ReplayContext::of(&quarantined)
    {
        match context
            .body(&quarantined)
            .or_else(|| bodies.get(&context.delivery_key(&quarantined)))
        {
            Some(body) => webhook
                .remap(&quarantined, &context, body)
                .map_err(|refusal| (refusal.code, refusal.reason)),
            None => Err((
                "missing_delivery_body".to_owned(),
                "the quarantine record keeping this delivery's body was not found".to_owned(),
            )),
        }
    } else {
        *report.not_replayable.entry(origin).or_default() += 1;
        return Ok(());
    };
    let events = match events {
        Ok(events) => events,
        Err((code, _reason)) => {
            *report.still_failing.entry(code).or_default() += 1;
            return Ok(());
        }
    };
    let message_id = quarantined
        .message_id
        .clone()
        .or_else(|| events.first().map(|event| event.message_id.clone()));
    let mut intake = Intake::new(source, quarantined.received_at, events.len());
    intake.events = events
        .into_iter()
        .map(|event| (quarantined.index, event))
        .collect();
    match store_one(state, intake).await? {
        StoreOutcome::Stored(events) => {
            report.replayed += 1;
            report.events_stored += events;
        }
        StoreOutcome::Duplicate => report.duplicates += 1,
        StoreOutcome::Refused(code) => {
            *report.still_failing.entry(code).or_default() += 1;
            return Ok(());
        }
    }
    let resolution = Resolution {
        partition,
        offset,
        message_id,
        resolved_at: jiff::Timestamp::now(),
    };
    let payload = serde_json::to_vec(&resolution).map_err(|error| ApiError::internal(&error))?;
    state
        .resolutions
        .append(vec![Record {
            key: format!("{partition}:{offset}"),
            dedup_id: Some(format!("{partition}:{offset}")),
            timestamp_ms: resolution.resolved_at.as_millisecond(),
            payload: Bytes::from(payload),
        }])
        .await?;
    Ok(())
}

enum StoreOutcome {
    /// This many events were stored (the others were duplicates).
    Stored(usize),
    /// Every event was in the log already.
    Duplicate,
    Refused(String),
}

/// Stores the events of one quarantined message through the gate. The gate is tried first on
/// copies: when an event fails again nothing is stored, nor quarantined a second time (the
/// message's quarantine record stays, unresolved).
async fn store_one(state: &AppState, intake: Intake) -> Result<StoreOutcome, ApiError> {
    if let Some(gate) = state.gates.get(&intake.source) {
        for (_, event) in &intake.events {
            if let Err(refusal) = gate.admit(&mut event.clone()) {
                return Ok(StoreOutcome::Refused(refusal.code));
            }
        }
    }
    let response = store(state, intake, "replay").await?;
    Ok(match response.errors.first() {
        Some(error) => StoreOutcome::Refused(error.code.clone()),
        None if response.accepted > 0 => StoreOutcome::Stored(response.accepted),
        None => StoreOutcome::Duplicate,
    })
}

/// The bodies kept by the first refused element of recent webhook deliveries, by delivery.
#[derive(Default)]
struct Bodies {
    recent: std::collections::VecDeque<(String, Box<RawValue>)>,
}

impl Bodies {
    fn remember(&mut self, quarantined: &QuarantinedMessage) {
        let Some(context) = ReplayContext::of(quarantined) else {
            return;
        };
        if !context.keeps_body_for_others() {
            return;
        }
        if let Some(body) = context.body(quarantined) {
            if self.recent.len() == BODIES_REMEMBERED {
                self.recent.pop_front();
            }
            self.recent
                .push_back((context.delivery_key(quarantined), body.to_owned()));
        }
    }

    fn get(&self, key: &str) -> Option<&RawValue> {
        self.recent
            .iter()
            .rev()
            .find(|(known, _)| known == key)
            .map(|(_, body)| body.as_ref())
    }
}

/// Parses a quarantined Segment message again, as a batch item, at its original receive time.
fn reparse(source: &str, quarantined: &QuarantinedMessage) -> Result<Event, (String, String)> {
    let body = format!("{{\"batch\":[{}]}}", quarantined.message.get());
    let envelope = segment::parse_envelope(body.as_bytes(), Route::Batch)
        .map_err(|error| (error.code().to_owned(), error.to_string()))?;
    let context = IngestContext {
        source,
        received_at: quarantined.received_at,
        limits: segment::Limits::default(),
    };
    match envelope.into_messages(&context).into_iter().next() {
        Some(Ok(event)) => Ok(event),
        Some(Err(rejection)) => Err((rejection.code.to_owned(), rejection.reason)),
        None => Err(("empty".to_owned(), "no message".to_owned())),
    }
}

async fn resolved_positions(state: &AppState) -> Result<HashSet<(u32, u64)>, ApiError> {
    let mut resolved = HashSet::new();
    for partition in 0..state.resolutions.partition_count() {
        let mut from = 0;
        loop {
            let records = state.resolutions.read(partition, from, PAGE).await?;
            let Some(last) = records.last().map(|record| record.offset) else {
                break;
            };
            for record in records {
                let resolution: Resolution = serde_json::from_slice(&record.payload)
                    .map_err(|error| ApiError::internal(&error))?;
                resolved.insert((resolution.partition, resolution.offset));
            }
            from = last + 1;
        }
    }
    Ok(resolved)
}
