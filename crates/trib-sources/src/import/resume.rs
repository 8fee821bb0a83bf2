//! Finding the rows an interrupted run appended after its last checkpoint.
//!
//! Import rows are appended without a log deduplication id: the log's deduplication index keeps
//! every id of its window in memory, which would make an import's memory grow with the file.
//! Whole-file repeats are caught by the ledger instead, and the rows of an interrupted run by
//! this scan: the checkpoint says from which offsets on the rows after it can have been
//! appended ([`LogPositions`]), and a resumed run reads both logs from there, collects the row
//! numbers of this file's messageIds (`imp-<hash>-<row>`) in this source, and skips those rows.
//!
//! The scan reads every record from those offsets to the end of each partition, so it costs
//! about as much as the records appended since the checkpoint: the interrupted run's last
//! batches, plus, for an import through a running server, what other clients appended
//! meanwhile. A record is only parsed when its payload contains the file's messageId prefix.

use std::borrow::Cow;

use serde::Deserialize;
use trib_log::EventLog;

use super::error::ImportError;
use super::state::LogPositions;

/// Records read per call during the scan.
const SCAN_PAGE: usize = 2_000;

/// Row numbers (from a first row on) that a log already holds for this file: one bit per row.
#[derive(Debug, Default)]
pub(crate) struct Handled {
    first: u64,
    bits: Vec<u64>,
    len: u64,
    last: Option<u64>,
}

impl Handled {
    /// An empty set of rows numbered `first` or more.
    pub(crate) fn new(first: u64) -> Self {
        Self {
            first,
            ..Self::default()
        }
    }

    /// Adds a row; rows before `first` are ignored (the checkpoint counted them already).
    pub(crate) fn insert(&mut self, row: u64) {
        let Some(position) = row.checked_sub(self.first) else {
            return;
        };
        let Ok(word) = usize::try_from(position / 64) else {
            return;
        };
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let mask = 1 << (position % 64);
        if self.bits[word] & mask == 0 {
            self.bits[word] |= mask;
            self.len += 1;
            self.last = Some(self.last.map_or(row, |last| last.max(row)));
        }
    }

    pub(crate) fn contains(&self, row: u64) -> bool {
        let Some(position) = row.checked_sub(self.first) else {
            return false;
        };
        usize::try_from(position / 64)
            .ok()
            .and_then(|word| self.bits.get(word))
            .is_some_and(|bits| bits & (1 << (position % 64)) != 0)
    }

    /// Whether a row numbered `row` or more is in the set.
    pub(crate) fn any_from(&self, row: u64) -> bool {
        self.last.is_some_and(|last| last >= row)
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

/// The end offsets of every partition of both logs: a record appended later lands at or after
/// them.
pub(crate) async fn end_positions(
    events: &dyn EventLog,
    quarantine: &dyn EventLog,
) -> Result<LogPositions, ImportError> {
    Ok(LogPositions {
        events: ends(events, "event log").await?,
        quarantine: ends(quarantine, "quarantine").await?,
    })
}

async fn ends(log: &dyn EventLog, name: &'static str) -> Result<Vec<u64>, ImportError> {
    let mut ends = Vec::with_capacity(log.partition_count() as usize);
    for partition in 0..log.partition_count() {
        ends.push(
            log.end_offset(partition)
                .await
                .map_err(|source| ImportError::Log { log: name, source })?,
        );
    }
    Ok(ends)
}

/// What to look for: this source's records with this file's messageIds.
pub(crate) struct ScanTarget<'a> {
    pub(crate) source: &'a str,
    /// `imp-<first 16 hex digits of the file's SHA-256>-`.
    pub(crate) message_id_prefix: &'a str,
    /// Rows before this one are not collected.
    pub(crate) first_row: u64,
}

/// Reads both logs from `from` (offset 0 where it names no partition, or for `None`) to their
/// end and returns the rows of `target` found in either: a row is handled once it is stored or
/// quarantined, whichever the log.
pub(crate) async fn scan(
    events: &dyn EventLog,
    quarantine: &dyn EventLog,
    from: Option<&LogPositions>,
    target: &ScanTarget<'_>,
) -> Result<(Handled, u64), ImportError> {
    let mut handled = Handled::new(target.first_row);
    let mut read = 0;
    read += scan_log(
        events,
        "event log",
        from.map(|from| from.events.as_slice()),
        target,
        &mut handled,
    )
    .await?;
    read += scan_log(
        quarantine,
        "quarantine",
        from.map(|from| from.quarantine.as_slice()),
        target,
        &mut handled,
    )
    .await?;
    Ok((handled, read))
}

/// The two fields a scanned record is checked by; both events and quarantined messages use
/// these camelCase names.
#[derive(Deserialize)]
struct Ids<'a> {
    #[serde(rename = "messageId", borrow, default)]
    message_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    source: Cow<'a, str>,
}

async fn scan_log(
    log: &dyn EventLog,
    name: &'static str,
    from: Option<&[u64]>,
    target: &ScanTarget<'_>,
    handled: &mut Handled,
) -> Result<u64, ImportError> {
    let finder = memchr::memmem::Finder::new(target.message_id_prefix.as_bytes());
    let failed = |source| ImportError::Log { log: name, source };
    let mut read = 0;
    for partition in 0..log.partition_count() {
        let mut next = from
            .and_then(|from| from.get(partition as usize).copied())
            .unwrap_or(0);
        loop {
            let records = log.read(partition, next, SCAN_PAGE).await.map_err(failed)?;
            let Some(last) = records.last() else { break };
            next = last.offset + 1;
            read += records.len() as u64;
            for record in &records {
                if finder.find(&record.payload).is_none() {
                    continue;
                }
                let Ok(ids) = serde_json::from_slice::<Ids<'_>>(&record.payload) else {
                    continue;
                };
                if ids.source != target.source {
                    continue;
                }
                let row = ids
                    .message_id
                    .as_deref()
                    .and_then(|id| id.strip_prefix(target.message_id_prefix))
                    .and_then(|row| row.parse::<u64>().ok());
                if let Some(row) = row {
                    handled.insert(row);
                }
            }
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handled_rows_are_one_bit_each_from_the_first_row() {
        let mut handled = Handled::new(100);
        assert!(!handled.any_from(0));
        handled.insert(99);
        handled.insert(100);
        handled.insert(163);
        handled.insert(164);
        handled.insert(164);
        assert_eq!(handled.len(), 3);
        assert!(!handled.contains(99), "before the first row");
        assert!(handled.contains(100) && handled.contains(163) && handled.contains(164));
        assert!(!handled.contains(101) && !handled.contains(1_000));
        assert!(handled.any_from(164) && !handled.any_from(165));
    }
}
