//! Retention of events: [`purge_events`] blanks the events whose `timestamp` is older than the
//! time-to-live of their type (`[retention.events]`, a [`EventRetention`]).
//!
//! The purge reads each partition through the given log (for the sealed event log, clear
//! payloads: the type, name and timestamp are inside), collects the expired offsets and blanks
//! them through [`Compactable`], which keeps offsets, keys and deduplication ids. Its position
//! per partition is a committed consumer offset named [`CONSUMER`]: the first offset that is
//! not settled yet, i.e. an event that will expire later, or an expired one in the active
//! segment that cannot be blanked yet. Events without a TTL, blanked or erased events (empty
//! payloads) and unreadable ones are settled. So a run rescans from the oldest event still
//! waiting for its TTL; a TTL lengthened or added later applies to events after the
//! committed positions only (reset the `retention` consumer offsets to rescan everything).
//!
//! Traits expire in the identity engine (`trib_identity`'s `ExpireTraits` command); this
//! crate does no profile work.

use std::collections::BTreeMap;

use serde::Deserialize;
use trib_core::EventType;
use trib_core::retention::EventRetention;
use trib_log::{Compactable, EventLog, LogError};

/// The consumer name under which the purge commits its position per partition.
pub const CONSUMER: &str = "retention";

/// How many records one read fetches.
const READ_BATCH: usize = 2_000;
/// Expired offsets are blanked once this many are collected (bounds memory).
const BLANK_BATCH: usize = 100_000;

/// Why a purge stopped.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("retention purge of partition {partition}: {source}")]
    Log {
        partition: u32,
        #[source]
        source: LogError,
    },
}

/// What one [`purge_events`] run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventPurgeReport {
    /// Records read (from the committed positions to the ends of the partitions).
    pub scanned: u64,
    /// Events blanked, per `[retention.events]` key (a track event name, a call type or
    /// `default`).
    pub blanked: BTreeMap<String, u64>,
    /// Expired events in active segments, blanked by a later run.
    pub deferred: u64,
    /// Records whose payload is not an event (counted, skipped).
    pub unreadable: u64,
}

impl EventPurgeReport {
    pub fn blanked_total(&self) -> u64 {
        self.blanked.values().sum()
    }
}

/// The fields of a stored event the purge needs.
#[derive(Deserialize)]
struct EventHead {
    #[serde(rename = "type")]
    kind: EventType,
    #[serde(default)]
    event: Option<String>,
    timestamp: jiff::Timestamp,
}

/// Blanks every event of `log` older than its type's TTL at `now_ms`; `compactor` is the same
/// log (or the log it wraps) and does the blanking. Counts go to
/// `tributary_retention_events_blanked_total{type}`.
pub async fn purge_events(
    log: &dyn EventLog,
    compactor: &dyn Compactable,
    policy: &EventRetention,
    now_ms: i64,
) -> Result<EventPurgeReport, RetentionError> {
    let mut report = EventPurgeReport::default();
    if policy.is_empty() {
        return Ok(report);
    }
    for partition in 0..log.partition_count() {
        purge_partition(log, compactor, policy, now_ms, partition, &mut report)
            .await
            .map_err(|source| RetentionError::Log { partition, source })?;
    }
    Ok(report)
}

async fn purge_partition(
    log: &dyn EventLog,
    compactor: &dyn Compactable,
    policy: &EventRetention,
    now_ms: i64,
    partition: u32,
    report: &mut EventPurgeReport,
) -> Result<(), LogError> {
    let start = log
        .committed_offset(CONSUMER, partition)
        .await?
        .unwrap_or(0);
    let end = log.end_offset(partition).await?;
    // The first offset not settled yet; everything before it is.
    let mut unsettled: Option<u64> = None;
    let mut expired: Vec<(u64, String)> = Vec::new();
    let mut next = start;
    while next < end {
        let records = log.read(partition, next, READ_BATCH).await?;
        let Some(last) = records.last() else { break };
        next = last.offset + 1;
        for record in &records {
            report.scanned += 1;
            if record.payload.is_empty() {
                continue;
            }
            let head: EventHead = match serde_json::from_slice(&record.payload) {
                Ok(head) => head,
                Err(_) => {
                    report.unreadable += 1;
                    tracing::warn!(
                        partition,
                        offset = record.offset,
                        "retention: a record is not an event; skipped"
                    );
                    continue;
                }
            };
            let Some(ttl) = policy.ttl_for(head.kind, head.event.as_deref()) else {
                continue;
            };
            let ttl_ms = i64::try_from(ttl.ttl.as_millis()).unwrap_or(i64::MAX);
            if now_ms.saturating_sub(head.timestamp.as_millisecond()) > ttl_ms {
                expired.push((record.offset, ttl.label.to_owned()));
            } else if unsettled.is_none() {
                unsettled = Some(record.offset);
            }
        }
        if expired.len() >= BLANK_BATCH {
            blank(compactor, partition, &mut expired, &mut unsettled, report).await?;
        }
    }
    blank(compactor, partition, &mut expired, &mut unsettled, report).await?;
    let position = unsettled.unwrap_or(next).max(start);
    if position != start {
        log.commit_offset(CONSUMER, partition, position).await?;
    }
    Ok(())
}

/// Blanks the collected offsets, counts them per label, and keeps the first deferred one
/// unsettled.
async fn blank(
    compactor: &dyn Compactable,
    partition: u32,
    expired: &mut Vec<(u64, String)>,
    unsettled: &mut Option<u64>,
    report: &mut EventPurgeReport,
) -> Result<(), LogError> {
    if expired.is_empty() {
        return Ok(());
    }
    let offsets: Vec<u64> = expired.iter().map(|(offset, _)| *offset).collect();
    let outcome = compactor.blank(partition, &offsets).await?;
    if let Some(&first) = outcome.not_sealed.first() {
        *unsettled = Some(unsettled.map_or(first, |u| u.min(first)));
    }
    report.deferred += outcome.not_sealed.len() as u64;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for (offset, label) in expired.drain(..) {
        if outcome.not_sealed.binary_search(&offset).is_err() {
            *counts.entry(label).or_default() += 1;
        }
    }
    for (label, count) in counts {
        *report.blanked.entry(label.clone()).or_default() += count;
        metrics::counter!("tributary_retention_events_blanked_total", "type" => label)
            .increment(count);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
