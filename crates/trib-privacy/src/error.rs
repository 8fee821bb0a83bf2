//! The one error type of the crate.
//!
//! Messages name the file, subject (as its blind index, never the clear identifier) or key
//! version involved and why; they never contain key material or personal values.

use std::path::PathBuf;

/// Why a privacy operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// The master key file or environment variable cannot be used.
    #[error("invalid master keys in {origin}: {reason}")]
    MasterKeys { origin: String, reason: String },

    /// A data key is wrapped under a master key version the keyring does not have.
    #[error("master key version {version} is unknown (the keyring has versions {known})")]
    UnknownMasterKey { version: u32, known: String },

    /// Master keys come from `TRIBUTARY_MASTER_KEYS`, which this process cannot rewrite.
    #[error(
        "master keys come from the environment variable {variable}; rotate by adding a higher \
         version to it and restarting, not with the key file"
    )]
    KeysFromEnvironment { variable: &'static str },

    /// A file system operation failed.
    #[error("i/o error while {context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The key store database failed.
    #[error("key store {} failed while {context}", path.display())]
    Database {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    /// The key store's schema is newer than this program.
    #[error("key store {} has schema version {found}, newer than the supported {supported}", path.display())]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    /// A wrapped data key failed authentication: the key store row is damaged or was moved to
    /// another subject.
    #[error(
        "the data key of subject {subject} (key id {key_id}) failed authentication under master key version {kek_version}"
    )]
    CorruptDataKey {
        subject: String,
        key_id: u64,
        kek_version: u32,
    },

    /// A sealed payload is damaged: wrong magic byte, unknown format version, too short, or a
    /// failed authentication tag (including a wrong subject or context).
    #[error("sealed payload of subject {subject} is corrupt: {reason}")]
    CorruptCiphertext {
        subject: String,
        reason: &'static str,
    },

    /// Data keys are not created for an erased subject until its tombstone is cleared.
    #[error(
        "subject {subject} was erased; clear its tombstone (new consent) before storing new data"
    )]
    Erased { subject: String },

    /// The operating system's random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Random(getrandom::Error),

    /// The key store's writer thread is gone (it failed or the store was closed).
    #[error("the key store writer stopped: {reason}")]
    WriterStopped { reason: String },

    /// A batch of data key creations failed; nothing of it was committed.
    #[error("creating data keys failed: {reason}")]
    KeyCreation { reason: String },

    /// A sealed payload names a data key the key store never had for its subject: the payload
    /// is damaged, or the key store is not the one the data was written with (e.g. an older
    /// backup). Data of an erased subject is reported as shredded, not as this error.
    #[error("sealed payload of subject {subject} names unknown data key {key_id}")]
    UnknownDataKey { subject: String, key_id: u64 },

    /// Encryption failed (a payload too large for the AEAD).
    #[error("encryption failed for subject {subject}")]
    Encrypt { subject: String },
}

impl PrivacyError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        PrivacyError::Io {
            context: context.into(),
            source,
        }
    }
}
