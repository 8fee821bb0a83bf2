//! [`ImportError`]: why a whole import failed or stopped.
//!
//! Problems of single rows are not errors: they are quarantined and counted in the report. An
//! `ImportError` before the first row (mapping, file, header) means nothing was imported; one
//! after it (a read or log failure) leaves the checkpoint, so running the import again resumes.

use std::path::PathBuf;

use trib_log::LogError;

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The mapping has problems; each is `path: message` relative to `[sources.import]`.
    #[error("invalid import mapping: {}", problems.join("; "))]
    InvalidMapping { problems: Vec<String> },

    /// The file does not exist.
    #[error("file {} not found", path.display())]
    FileNotFound { path: PathBuf },

    /// The file name ends in `.gz` but the file does not start with the gzip magic bytes.
    #[error("file {} is named .gz but is not gzip-compressed", path.display())]
    NotGzip { path: PathBuf },

    /// Neither the mapping nor the file name says whether the file is CSV or NDJSON.
    #[error(
        "cannot tell the format of {}: name it .csv, .tsv, .ndjson or .jsonl (optionally .gz), \
         or set format in the import mapping",
        path.display()
    )]
    UnknownFormat { path: PathBuf },

    /// A CSV file without a header row (it is empty).
    #[error("file {} has no header row", path.display())]
    MissingHeader { path: PathBuf },

    /// The CSV header row cannot be used: not UTF-8, or a name given twice.
    #[error("the header row of {} is invalid: {reason}", path.display())]
    InvalidHeader { path: PathBuf, reason: String },

    /// Columns named in the mapping are not in the CSV header.
    #[error(
        "file {} has no column {} (the header has: {header})",
        path.display(),
        missing.join(", ")
    )]
    MissingColumns {
        path: PathBuf,
        /// Each missing column as `` `name` (columns[i]) ``.
        missing: Vec<String>,
        /// The header's column names, shortened when long.
        header: String,
    },

    /// Another import of the same file into the same source is running.
    #[error("file {} is already being imported into source `{source_name}`", path.display())]
    InProgress { path: PathBuf, source_name: String },

    /// Reading the file failed part-way (for example a damaged gzip stream); what was appended
    /// before stays, and the checkpoint lets a later run resume.
    #[error("failed to read {} after row {row}", path.display())]
    Read {
        path: PathBuf,
        /// The last row read successfully (0 before the first).
        row: u64,
        #[source]
        source: std::io::Error,
    },

    /// The checkpoint of an interrupted import cannot be used. Without it the rows the
    /// interrupted run appended could not be told apart, so the import stops instead of
    /// starting over; removing the file starts over (rows appended before are then stored
    /// again).
    #[error(
        "the import checkpoint {} cannot be used ({reason}); remove it to start the import over, \
         which stores again the rows the interrupted run had stored",
        path.display()
    )]
    DamagedCheckpoint { path: PathBuf, reason: String },

    /// A file-system operation failed (opening the file, reading or writing import state).
    #[error("i/o error while {context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// Appending to the event log or the quarantine failed; the checkpoint lets a later run
    /// resume.
    #[error("failed to append to the {log}")]
    Log {
        /// `event log` or `quarantine`.
        log: &'static str,
        #[source]
        source: LogError,
    },

    /// A broken internal invariant (a bug), named in the message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ImportError {
    /// Wraps an I/O error with what the import was doing.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ImportError::Io {
            context: context.into(),
            source,
        }
    }
}
