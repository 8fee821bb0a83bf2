//! The errors of every [`EventLog`](crate::EventLog) operation.
//!
//! Each variant says what the caller can do about it: [`LogError::Overloaded`] is the only one
//! worth retrying as is; the argument errors ([`LogError::InvalidPartition`],
//! [`LogError::BatchTooLarge`], [`LogError::RecordTooLarge`], [`LogError::InvalidConsumerName`])
//! will fail again; the storage errors ([`LogError::Io`], [`LogError::Corrupt`],
//! [`LogError::WriterFailed`]) need an operator.

use std::path::PathBuf;
use std::time::Duration;

/// Why an event log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Too many records are queued for writing; nothing of this call was stored.
    #[error("the log is overloaded: too many records are queued, retry after {retry_after:?}")]
    Overloaded {
        /// A hint for how long the caller should wait before retrying.
        retry_after: Duration,
    },

    /// One append call is larger than the whole queue bound, so it could never be accepted;
    /// nothing of this call was stored. Split the call instead of retrying it.
    #[error(
        "one append of {records} records ({bytes} bytes) exceeds the queue bound of \
         {max_records} records ({max_bytes} bytes)"
    )]
    BatchTooLarge {
        records: usize,
        bytes: u64,
        max_records: usize,
        max_bytes: u64,
    },

    /// One record is larger than [`MAX_RECORD_BYTES`](crate::MAX_RECORD_BYTES); nothing of this
    /// call was stored.
    #[error("a record of {bytes} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { bytes: u64, max: u64 },

    /// The log was closed; it accepts no more appends.
    #[error("the log is closed")]
    Closed,

    /// The partition number is not below the log's partition count.
    #[error("partition {partition} does not exist, the log has {count} partitions")]
    InvalidPartition { partition: u32, count: u32 },

    /// A consumer name the log cannot store.
    #[error("invalid consumer name {name:?}: {reason}")]
    InvalidConsumerName { name: String, reason: &'static str },

    /// A file system operation failed.
    #[error("i/o error while {context}")]
    Io {
        /// What the log was doing, e.g. "fsyncing /var/lib/tributary/events/partitions/0/….log".
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// Stored data is damaged in a way that is not a torn tail left by a crash (which is
    /// repaired on open): for example a record that fails its checksum while valid records
    /// follow it. The log does not skip such data silently.
    #[error("corrupt log data in {} at byte {offset}: {reason}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// The byte offset within the file where the damage starts (not a record offset).
        offset: u64,
        reason: String,
    },

    /// The options do not fit each other or the existing log directory.
    #[error("invalid log configuration: {0}")]
    Config(String),

    /// Another process (or another open log in this process) holds the log directory.
    #[error("the log directory {} is in use by another process", path.display())]
    DirectoryInUse { path: PathBuf },

    /// A write or fsync failed earlier; the log accepts no more appends until it is reopened
    /// (reopening truncates whatever was half written).
    #[error("the log writer stopped after a failed write: {reason}")]
    WriterFailed { reason: String },
}

impl LogError {
    /// Wraps an I/O error with what the log was doing when it happened.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        LogError::Io {
            context: context.into(),
            source,
        }
    }
}
