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
//!   `imp-<first 16 hex digits of the hash>-<n>` and the HTTP API's deduplication id
//!   (`<source>\0<messageId>`), so the log stores each row once per source. A completed import
//!   is recorded in a ledger (`<state_dir>/<source>/<sha256>.json`): importing the same file
//!   again stores nothing and reports `already_imported`, even after the log's deduplication
//!   window has passed.
//! * **Resumable.** After each durable batch a checkpoint records the next row, its byte offset
//!   and the counts so far; a later `import_file` of the same file continues there
//!   (`resumed_from_row`). Rows appended between the last checkpoint and a crash are appended
//!   again and recognised as duplicates (within the log's deduplication window).
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
mod state;

pub use config::{
    ColumnMapping, FileFormat, ImportKind, ImportMapping, TimestampColumn, ValueType,
};
pub use engine::{ImportOptions, import_file};
pub use error::ImportError;
pub use replay::replay_row;
pub use report::{ImportReport, Progress};
