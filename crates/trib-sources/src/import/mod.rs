//! File imports: CSV and NDJSON files (optionally gzip-compressed) into the event log.
//!
//! A source with an `[sources.import]` table ([`ImportMapping`]) can import files: each row
//! becomes an `identify` or `track` [`trib_core::Event`] of that source, passes the same
//! [`trib_core::EventGate`] as events sent over the HTTP API, and is appended to the event log;
//! a row that cannot become an event, or that the gate refuses, goes to the quarantine as a
//! [`trib_core::QuarantinedMessage`] whose `index` is the row number, `origin` is
//! `import:<file name>`, and `message` is the raw row as JSON. Nothing is dropped silently:
//! the [`ImportReport`] accounts for every row.
//!
//! # Guarantees
//!
//! * **Streaming, bounded memory.** The file is read one row at a time on blocking threads and
//!   appended in batches; memory does not depend on the file size (see `engine`).
//! * **Idempotent.** The file's SHA-256 is computed first; row `n` gets the messageId
//!   `imp-<first 16 hex digits of the hash>-<n>`. A completed import is recorded in a ledger
//!   (`<state_dir>/<source>/<sha256>.json`): importing the same file again stores nothing and
//!   reports `already_imported`, however long after. Rows are appended *without* a log
//!   deduplication id, so that the log's in-memory deduplication index (which keeps every id
//!   of its 24 h window) does not grow with the file; exactly-once storage of each row rests on
//!   the ledger and on the resume scan below instead.
//! * **Resumable, exactly.** Before its first append a run writes a checkpoint durably; after
//!   each durable batch the checkpoint records the next row, its byte offset, the counts so far
//!   and the log offsets (per partition, in both logs) from which the rows after it can have
//!   been appended. A later `import_file` of the same file continues there
//!   (`resumed_from_row`): it first reads both logs from those offsets, finds the rows of this
//!   file that the interrupted run appended after its last checkpoint (by messageId), and skips
//!   them (counted as `duplicates_skipped`), so no row is stored twice, whatever the time
//!   between the runs.
//!
//! # Row numbers
//!
//! CSV: the header is row 1 and the first data record row 2, as a spreadsheet shows them (a
//! quoted field with line breaks is still one row; blank lines are not rows). NDJSON: the line
//! number (blank lines are skipped but keep their number).
//!
//! # What it does not do
//!
//! Character encodings other than UTF-8 (a row with invalid UTF-8 in a mapped column is
//! quarantined as `invalid_utf8`); spreadsheets (`.xlsx`); files without a CSV header; event
//! types other than `identify` and `track`. The file is identified by its bytes as stored, so
//! the same data compressed differently counts as another file.

mod config;
mod convert;
mod engine;
mod error;
mod read;
mod replay;
mod report;
mod resume;
mod state;

pub use config::{
    ColumnMapping, FileFormat, ImportKind, ImportMapping, TimestampColumn, ValueType,
};
pub use engine::{ImportOptions, import_file};
pub use error::ImportError;
pub use replay::replay_row;
pub use report::{ImportReport, Progress};
