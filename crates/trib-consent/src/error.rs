//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong with the consent ledger or its consumer.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// The ledger file could not be opened or migrated.
    #[error("cannot open the consent ledger {}", path.display())]
    Open {
        /// The ledger file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The ledger was written by a newer build.
    #[error("the consent ledger {} has schema version {found}, this build knows up to {known}", path.display())]
    TooNew {
        /// The ledger file.
        path: PathBuf,
        /// The version in the file.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// A read or write of the ledger failed.
    #[error("consent ledger {operation} failed")]
    Sqlite {
        /// What was being done (`record consent`, `read history`).
        operation: &'static str,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored row does not decode (a corrupt or hand-edited ledger).
    #[error("consent ledger row {seq} is not readable: {reason}")]
    Corrupt {
        /// The row's sequence number.
        seq: i64,
        /// What is wrong (never a personal value).
        reason: String,
    },
    /// An entry to record is not valid; names the field and why, never the value.
    #[error("invalid consent record: {field}: {reason}")]
    Invalid {
        /// The field (`purpose`, `status`, `at`).
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The event log could not be read.
    #[error("cannot read partition {partition} of the event log: {reason}")]
    Log {
        /// The partition.
        partition: u32,
        /// Why.
        reason: String,
    },
    /// The consumer thread stopped or could not start.
    #[error("the consent consumer {0}")]
    Consumer(&'static str),
}

impl ConsentError {
    pub(crate) fn sqlite(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> Self {
        move |source| ConsentError::Sqlite { operation, source }
    }
}
