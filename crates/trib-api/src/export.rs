//! The right of access: `POST /v1/privacy/exports` answers everything Tributary holds about a
//! person, named by a profile id or any identifier, as one signed JSON document (scope
//! `privacy:export`).
//!
//! The document holds `generated_at`, the `subject` (the profile id and every id it absorbed),
//! the golden `profile` as `GET /v1/profiles/{id}` shows it, the `identifiers`, every `events`
//! record of the profile's timeline oldest first (read back through the log like the profile
//! events route, so decrypted; erased records are skipped and counted), the `consent` history
//! and current state per purpose, the `destinations` the person's data went to, and the `audit`
//! entries about any of the person's profile ids. It is signed with the deployment's key like
//! erasure receipts ([`crate::signing`]), so `tributary privacy verify` can check it offline.
//!
//! The export is built in memory, so it is capped at [`MAX_EXPORT_EVENTS`] events: a larger
//! timeline answers 413 `export_too_large`. It is not stored on the server; the access itself
//! is recorded in the audit log by the route's `Audited` policy, after the document is made
//! (so it does not list itself).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use trib_audit::ProfileRef;
use trib_identity::view::{self, Found};
use trib_log::EventLog;
use trib_store::{ProfileId, ProfileStore, TimelineEntry};

use crate::erasure::{PersonBody, find_person, not_found};
use crate::keys::Principal;
use crate::privacy::{blocking, consent_of_profile, parse_body};
use crate::profiles::profiles;
use crate::signing::{DocumentSigner, sign_document};
use crate::{ApiError, AppState};

/// The most events one export holds; a person with more gets 413 `export_too_large`.
pub const MAX_EXPORT_EVENTS: u64 = 1_000_000;

/// Timeline entries read from the store at once.
const TIMELINE_PAGE: usize = 10_000;

/// Most records read from the log at once.
const READ_RUN: usize = 1_000;

const DESTINATIONS_NOTE: &str = "no destinations are configured in this version: Tributary has sent nothing about this person to third parties";
const NO_CONSENT_NOTE: &str =
    "this server runs without a consent ledger: no consent is recorded for anyone";
const NO_AUDIT_NOTE: &str =
    "this server runs without an audit log: accesses to personal data are not recorded";

/// `POST /v1/privacy/exports` with `{"profile_id": ...}` or `{"identifier": {"type", "value"}}`:
/// answers 200 with the signed export as an `application/json` attachment.
pub(crate) async fn export(
    State(state): State<Arc<AppState>>,
    principal: Option<Extension<Principal>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let signer = signer(&state)?.clone();
    let profiles = profiles(&state)?;
    let body: PersonBody = parse_body(&body, "export")?;
    let (profile, updated_at_ms) = match find_person(profiles, body).await? {
        Found::Active {
            profile,
            updated_at_ms,
            ..
        } => (profile, updated_at_ms),
        Found::Deleted { .. } => {
            return Err(ApiError::new(
                StatusCode::GONE,
                "profile_deleted",
                "that profile was erased or deleted: nothing is held about it to export",
            ));
        }
        Found::NotFound => return Err(not_found("id or identifier")),
    };
    let profile_id: ProfileId = profile.id.parse().map_err(|e| ApiError::internal(&e))?;
    let mut profile_ids = vec![profile_id];
    profile_ids.extend(
        profile
            .merged_ids
            .iter()
            .filter_map(|id| id.parse::<ProfileId>().ok()),
    );

    let store = profiles.store.clone();
    let (summary, timeline) = blocking(move || {
        let summary = store
            .timeline_summary(&profile_id)
            .map_err(|e| ApiError::internal(&e))?;
        if summary.events > MAX_EXPORT_EVENTS {
            return Err(too_large(profile_id, summary.events));
        }
        let timeline = timeline_oldest_first(&*store, profile_id)?;
        Ok((summary, timeline))
    })
    .await?;
    let events = read_events(state.events.as_ref(), &timeline).await?;

    let consent = match state.consent.as_ref() {
        Some(_) => {
            let (state, profile) = (state.clone(), profile.clone());
            Some(
                blocking(move || match state.consent.as_ref() {
                    Some(consent) => consent_of_profile(consent, &profile),
                    None => Ok(Value::Null),
                })
                .await?,
            )
        }
        None => None,
    };
    let audit = match state.audit.as_ref() {
        Some(log) => {
            let dir = log.dir().to_owned();
            let subjects: BTreeSet<ProfileId> = profile_ids.iter().copied().collect();
            Some(
                blocking(move || {
                    trib_audit::entries_about(&dir, &subjects).map_err(|e| ApiError::internal(&e))
                })
                .await?,
            )
        }
        None => None,
    };

    let identifiers: Vec<Value> = profile
        .identifiers
        .iter()
        .map(|identifier| {
            json!({
                "type": identifier.kind,
                "value": identifier.value,
                "first_seen": view::time_text(identifier.first_seen_ms),
                "source": identifier.source,
                "message_id": identifier.message_id,
            })
        })
        .collect();
    let mut notes = serde_json::Map::new();
    notes.insert(
        "events".into(),
        json!(format!(
            "{} of {} timeline events included, oldest first, as stored; {} erased and {} unreadable records skipped",
            events.included.len(),
            timeline.len(),
            events.erased,
            events.unreadable
        )),
    );
    if consent.is_none() {
        notes.insert("consent".into(), json!(NO_CONSENT_NOTE));
    }
    notes.insert("destinations".into(), json!(DESTINATIONS_NOTE));
    match &audit {
        None => {
            notes.insert("audit".into(), json!(NO_AUDIT_NOTE));
        }
        Some(found) => {
            let mut note = format!(
                "{} entries about the person's profile ids among {} scanned, as stored in the hash-chained audit log (seq, prev and mac let an auditor check them); this export is recorded after it was made",
                found.entries.len(),
                found.scanned
            );
            if found.unreadable > 0 {
                note.push_str(&format!(
                    "; {} damaged lines were skipped (run `tributary audit verify`)",
                    found.unreadable
                ));
            }
            notes.insert("audit".into(), json!(note));
        }
    }
    let document = json!({
        "export_id": export_id()?,
        "generated_at": jiff::Timestamp::now().to_string(),
        "requested_by": requested_by(principal.as_deref()),
        "subject": {
            "profile_id": profile_id.to_string(),
            "profile_ids": profile_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        },
        "profile": view::profile_json(&profile, updated_at_ms, &summary),
        "identifiers": identifiers,
        "events": events.included,
        "consent": consent,
        "destinations": [],
        "audit": audit.map(|found| found.entries),
        "notes": notes,
    });
    let n_events = events.included.len();
    let signed = sign_document(&signer, &document);
    metrics::counter!("tributary_privacy_exports_total").increment(1);
    tracing::info!(profile = %profile_id, n_events, bytes = signed.len(), "subject access export made");

    let disposition = format!("attachment; filename=\"tributary-export-{profile_id}.json\"");
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        signed,
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    response
        .extensions_mut()
        .insert(ProfileRef::profile(profile_id));
    Ok(response)
}

/// The signing key: the one erasure receipts are signed with.
fn signer(state: &AppState) -> Result<&DocumentSigner, ApiError> {
    state
        .erasure
        .as_ref()
        .map(|erasure| &erasure.signer)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "export_disabled",
                "this server runs without a signing key (no data directory), so it cannot sign exports",
            )
        })
}

fn too_large(profile_id: ProfileId, events: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "export_too_large",
        format!(
            "profile {profile_id} has {events} events; one export holds at most {MAX_EXPORT_EVENTS}"
        ),
    )
}

fn export_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|error| ApiError::internal(&error))?;
    Ok(format!(
        "ex_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

fn requested_by(principal: Option<&Principal>) -> String {
    match principal {
        Some(Principal::Key(key)) => format!("key:{key}"),
        Some(Principal::Admin) => "admin".to_owned(),
        None => "unknown".to_owned(),
    }
}

/// The whole timeline of a profile, oldest first, read newest first in pages; refuses a
/// timeline that grew past the cap while it was read.
fn timeline_oldest_first(
    store: &dyn ProfileStore,
    profile_id: ProfileId,
) -> Result<Vec<TimelineEntry>, ApiError> {
    let mut entries: Vec<TimelineEntry> = Vec::new();
    loop {
        let page = store
            .timeline(&profile_id, entries.last(), TIMELINE_PAGE)
            .map_err(|e| ApiError::internal(&e))?;
        let done = page.len() < TIMELINE_PAGE;
        entries.extend(page);
        if entries.len() as u64 > MAX_EXPORT_EVENTS {
            return Err(too_large(profile_id, entries.len() as u64));
        }
        if done {
            break;
        }
    }
    entries.reverse();
    Ok(entries)
}

/// The events of a timeline, as read back from the log.
struct ReadEvents {
    included: Vec<Value>,
    /// Records whose payload is empty: erased (their data key destroyed).
    erased: u64,
    /// Records missing from the log or whose payload is not JSON.
    unreadable: u64,
}

/// Reads the events of a timeline from the log. Offsets are read in runs: consecutive offsets
/// of one partition (a person's events sent together) come back in one read, and records of
/// other people are never read.
async fn read_events(
    log: &dyn EventLog,
    timeline: &[TimelineEntry],
) -> Result<ReadEvents, ApiError> {
    let mut wanted: Vec<(u32, u64)> = timeline
        .iter()
        .map(|entry| (entry.event.partition, entry.event.offset))
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut payloads: HashMap<(u32, u64), Bytes> = HashMap::with_capacity(wanted.len());
    let mut index = 0;
    while index < wanted.len() {
        let (partition, first) = wanted[index];
        let mut end = index + 1;
        while end < wanted.len()
            && end - index < READ_RUN
            && wanted[end] == (partition, wanted[end - 1].1 + 1)
        {
            end += 1;
        }
        let until = first + (end - index) as u64;
        let mut from = first;
        while from < until {
            let records = log
                .read(partition, from, (until - from) as usize)
                .await
                .map_err(|e| ApiError::internal(&e))?;
            let Some(last) = records.last().map(|record| record.offset) else {
                break;
            };
            for record in records {
                if (from..until).contains(&record.offset) {
                    payloads.insert((partition, record.offset), record.payload);
                }
            }
            if last < from {
                break;
            }
            from = last + 1;
        }
        index = end;
    }

    let mut read = ReadEvents {
        included: Vec::with_capacity(timeline.len()),
        erased: 0,
        unreadable: 0,
    };
    for entry in timeline {
        let at = entry.event;
        let Some(payload) = payloads.get(&(at.partition, at.offset)) else {
            read.unreadable += 1;
            continue;
        };
        if payload.is_empty() {
            read.erased += 1;
            continue;
        }
        match serde_json::from_slice::<Value>(payload) {
            Ok(data) => read.included.push(json!({
                "partition": at.partition,
                "offset": at.offset,
                "timestamp": view::time_text(entry.timestamp_ms),
                "data": data,
            })),
            Err(_) => read.unreadable += 1,
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use trib_log::{MemoryLog, Record};
    use trib_store::EventRef;

    use super::*;

    fn entry(timestamp_ms: i64, offset: u64) -> TimelineEntry {
        TimelineEntry {
            timestamp_ms,
            event: EventRef {
                partition: 0,
                offset,
            },
        }
    }

    #[tokio::test]
    async fn events_are_read_in_runs_in_timeline_order_skipping_erased_and_missing_ones() {
        let log = MemoryLog::new(1);
        // Offsets 0..2400: the person's records are 0..1500 (longer than one run), 1600, 1601
        // (erased: empty payload), 2000 (not JSON); the others belong to someone else.
        let records = (0..2400)
            .map(|n: u64| Record {
                key: "k".to_owned(),
                dedup_id: None,
                timestamp_ms: 0,
                payload: match n {
                    1601 => Bytes::new(),
                    2000 => Bytes::from_static(b"\xff not json"),
                    _ => Bytes::from(json!({"n": n}).to_string()),
                },
            })
            .collect();
        log.append(records).await.unwrap();
        let mut timeline: Vec<TimelineEntry> = (0..1500).map(|n| entry(n as i64, n)).collect();
        // The newest event sits earlier in the log (timeline order is event time).
        timeline.insert(0, entry(-1, 1600));
        timeline.extend([entry(2000, 1601), entry(2001, 2000), entry(2002, 9999)]);
        let read = read_events(&log, &timeline).await.unwrap();
        assert_eq!((read.erased, read.unreadable), (1, 2));
        let numbers: Vec<u64> = read
            .included
            .iter()
            .map(|event| event["data"]["n"].as_u64().unwrap())
            .collect();
        let mut expected = vec![1600];
        expected.extend(0..1500);
        assert_eq!(numbers, expected);
        assert_eq!(read.included[1]["offset"], 0);
        assert_eq!(read.included[1]["timestamp"], "1970-01-01T00:00:00Z");
    }
}
