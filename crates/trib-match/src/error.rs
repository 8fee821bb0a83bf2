//! The crate's error type.

use std::io;

/// Everything that can go wrong while matching, generating or evaluating.
///
/// Messages name the line (1-based, the header being line 1), the record id and the column
/// concerned, but never a field value: values are personal data and errors end up in logs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MatchError {
    /// The configuration failed [`MatchConfig::validate`](crate::MatchConfig::validate); one
    /// message per problem, each starting with its key path.
    #[error("invalid matching configuration: {}", .0.join("; "))]
    Config(Vec<String>),
    /// The configuration could not be parsed as TOML.
    #[error("cannot parse matching configuration: {0}")]
    ConfigSyntax(String),
    /// Reading or writing failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The CSV reader or writer failed (bad quoting, invalid UTF-8, ...).
    #[error("CSV error{}: {message}", line.map(|l| format!(" on line {l}")).unwrap_or_default())]
    Csv {
        /// Line of the input where the error was found, when known.
        line: Option<u64>,
        /// What the CSV library reported.
        message: String,
    },
    /// A column required by the configuration is not in the CSV header.
    #[error("CSV header has no column \"{column}\" (required by {key})")]
    MissingColumn {
        /// The missing column.
        column: String,
        /// The configuration key that requires it, e.g. `id_column` or `fields[2].name`.
        key: String,
    },
    /// A header names the same column twice.
    #[error("CSV header names column \"{column}\" more than once")]
    DuplicateColumn {
        /// The repeated column.
        column: String,
    },
    /// A row has more or fewer cells than the header.
    #[error(
        "line {line} (record {record}): expected {expected} fields as in the header, found {found}"
    )]
    RaggedRow {
        /// 1-based line number.
        line: u64,
        /// The record id, or `#n` (the row number) when the id cell itself is missing.
        record: String,
        /// Number of header columns.
        expected: usize,
        /// Number of cells in the row.
        found: usize,
    },
    /// A row has an empty id.
    #[error("line {line}: empty record id in column \"{column}\"")]
    EmptyId {
        /// 1-based line number.
        line: u64,
        /// The id column.
        column: String,
    },
    /// Two rows share a record id.
    #[error("line {line}: duplicate record id \"{id}\" (first seen on line {first_line})")]
    DuplicateId {
        /// The repeated id (ids are identifiers, not personal data).
        id: String,
        /// Line of the second occurrence.
        line: u64,
        /// Line of the first occurrence.
        first_line: u64,
    },
    /// An in-memory record has the wrong number of field values.
    #[error("record {id}: has {found} field values, the configuration has {expected} fields")]
    RecordShape {
        /// The record id.
        id: String,
        /// Number of configured fields.
        expected: usize,
        /// Number of values in the record.
        found: usize,
    },
    /// Two in-memory records share an id.
    #[error("duplicate record id \"{id}\" (records {first} and {second})")]
    DuplicateRecord {
        /// The repeated id.
        id: String,
        /// Index of the first record.
        first: usize,
        /// Index of the second record.
        second: usize,
    },
    /// Scoring needs m/u parameters: call [`Matcher::fit`](crate::Matcher::fit) first, or fix
    /// `m` and `u` for every field in the configuration.
    #[error(
        "matcher has no m/u parameters for field \"{0}\": call fit() first or set m and u in the configuration"
    )]
    NotFitted(String),
    /// There are more records than the matcher can index (`u32::MAX - 1`).
    #[error("too many records: {0} (at most {max})", max = u32::MAX - 1)]
    TooManyRecords(usize),
    /// Evaluation input is inconsistent (unknown record, missing column, ...).
    #[error("evaluation: {0}")]
    Evaluate(String),
}

impl From<csv::Error> for MatchError {
    fn from(err: csv::Error) -> Self {
        let line = err.position().map(csv::Position::line);
        match err.into_kind() {
            csv::ErrorKind::Io(io) => MatchError::Io(io),
            kind => MatchError::Csv {
                line,
                message: describe_csv_kind(&kind),
            },
        }
    }
}

fn describe_csv_kind(kind: &csv::ErrorKind) -> String {
    match kind {
        csv::ErrorKind::Utf8 { err, .. } => {
            format!("invalid UTF-8 in field {} of the row", err.field() + 1)
        }
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("expected {expected_len} fields, found {len}"),
        other => format!("{other:?}"),
    }
}
