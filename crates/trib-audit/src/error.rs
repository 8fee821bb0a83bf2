//! The crate's one error type.

use std::path::PathBuf;

/// Why the audit log could not be opened, written, verified or exported.
///
/// Tampering found by [`crate::verify`] is not an error: it is reported in the
/// [`crate::VerifyReport`]. Messages name files and sequence numbers, never entry contents.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file of the log (or the key) could not be read or written.
    #[error("audit log i/o on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The audit key file exists but is not 64 hexadecimal digits.
    #[error("the audit key {} is not 64 hexadecimal characters", path.display())]
    KeyFormat {
        /// The key file.
        path: PathBuf,
    },
    /// The audit key file is missing (verification never creates one).
    #[error("the audit key {} does not exist", path.display())]
    KeyMissing {
        /// The key file.
        path: PathBuf,
    },
    /// The operating system's random source failed while creating the key.
    #[error("cannot generate an audit key: {0}")]
    Random(getrandom::Error),
    /// Another process holds the log open for writing.
    #[error("the audit log {} is open in another process", path.display())]
    Locked {
        /// The audit directory.
        path: PathBuf,
    },
    /// The log's tail is damaged in a way a crash cannot explain, so it is not continued;
    /// run `tributary audit verify` and keep the directory as evidence.
    #[error("the audit log {} is damaged and was not opened for writing: {reason}", path.display())]
    Damaged {
        /// The audit directory.
        path: PathBuf,
        /// What is wrong (sequence numbers and file names only).
        reason: String,
    },
    /// A record field failed validation.
    #[error("invalid audit {field}: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// An earlier write failed, so the writer stopped: the chain cannot continue past an
    /// unknown state. Reopen the log.
    #[error("the audit writer stopped after a failed write; reopen the log")]
    WriterFailed,
    /// The log was closed.
    #[error("the audit log is closed")]
    Closed,
}
