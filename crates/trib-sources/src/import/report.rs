//! [`ImportReport`], the reconciliation of one import run, and [`Progress`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::FileFormat;

/// What an import did, so that every row of the file is accounted for.
///
/// `rows_read == accepted + quarantined + duplicates_skipped` always holds (the engine checks
/// it before returning), across resumed runs too: the counts of rows before the checkpoint come
/// from the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// The source the rows were imported into.
    pub source: String,
    /// The file, as given.
    pub file: String,
    /// Lowercase hex SHA-256 of the file as stored (compressed, for a `.gz`).
    pub sha256: String,
    pub format: FileFormat,
    /// Whether the file was gzip-compressed.
    pub gzip: bool,
    /// Data rows read (the CSV header and blank lines are not rows).
    pub rows_read: u64,
    /// Rows stored in the event log as new events.
    pub accepted: u64,
    /// Rows stored in the quarantine, with a reason.
    pub quarantined: u64,
    /// Rows that the log already held (same source and messageId, or the same quarantined
    /// row): imported before, by an interrupted run or an earlier import of the same file.
    pub duplicates_skipped: u64,
    /// Rows about a person who was erased (and has not come back with consent): not stored.
    #[serde(default)]
    pub erased_skipped: u64,
    /// Quarantined rows by reason code (`invalid_value`, `wrong_column_count`, ...); the counts
    /// add up to `quarantined`.
    pub by_reason: BTreeMap<String, u64>,
    /// Fields left out of accepted rows because of `on_error = "drop"`, by `"<target>: <code>"`.
    #[serde(default)]
    pub fields_dropped: BTreeMap<String, u64>,
    /// When this run continued an interrupted one: the first row it read itself. The counts
    /// above include the rows before it.
    pub resumed_from_row: Option<u64>,
    /// The file had been imported completely into this source before (its ledger entry
    /// exists), so this run read and stored nothing: all `rows_read` are counted as
    /// `duplicates_skipped`, and `previous` holds the report of that import.
    pub already_imported: bool,
    /// The report of the completed earlier import, when `already_imported`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Box<ImportReport>>,
    /// Whether the whole file has been imported; false when the run stopped early
    /// (`stop_after_rows`), in which case a checkpoint is left for the next run.
    pub completed: bool,
    /// The wall-clock time of this run.
    #[serde(with = "seconds")]
    pub elapsed: Duration,
}

/// Where a running import is, for progress bars. Rows and bytes count from the start of the
/// file, also in a resumed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Rows durably handled (stored, quarantined or recognised as duplicates).
    pub rows: u64,
    /// Bytes of the file (as stored, compressed for a `.gz`) read so far.
    pub bytes: u64,
    /// The file's size, when known.
    pub total_bytes: Option<u64>,
}

/// `Duration` as fractional seconds, so the report reads well as JSON.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        duration: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(duration.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let seconds = f64::deserialize(deserializer)?;
        Duration::try_from_secs_f64(seconds).map_err(serde::de::Error::custom)
    }
}
