//! The crate's errors: [`SchemaError`] for reading and parsing schemas, [`PublishError`] for
//! publishing a new version.

use std::path::PathBuf;

use crate::compat::Incompatibility;
use crate::subject::Subject;
use crate::version::SchemaVer;

/// A schema document, file or directory that cannot be read or is not a valid registry entry.
///
/// Errors about files name the file (`origin` or `path`), so `tributary schemas check` can point
/// at the one to fix.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// A file or directory could not be read, created or written.
    #[error("failed to access `{}`: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A schema document is not valid JSON.
    #[error("`{origin}` is not valid json: {source}")]
    Json {
        /// The file path, or `<subject>/<version>` for a document that is not a file yet.
        origin: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A schema document is well-formed JSON but not an acceptable schema: it does not compile,
    /// its `self` descriptor is missing or disagrees with where it is stored, and so on.
    #[error("schema `{origin}` is invalid: {reason}")]
    InvalidDocument {
        /// The file path, or `<subject>/<version>` for a document that is not a file yet.
        origin: String,
        /// What is wrong, in lowercase.
        reason: String,
    },
    /// A file or directory in the registry directory does not fit the layout
    /// (`events/<slug>/<MODEL-REVISION-ADDITION>.json`, `traits/<MODEL-REVISION-ADDITION>.json`).
    #[error("unexpected entry `{}` in the schema directory: {reason}", path.display())]
    UnexpectedEntry {
        /// The entry.
        path: PathBuf,
        /// Why it does not belong there.
        reason: String,
    },
    /// A string is not a SchemaVer (`MODEL-REVISION-ADDITION`, e.g. `1-0-2`).
    #[error("invalid schema version `{input}`: {reason}")]
    InvalidVersion {
        /// The rejected input.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An event name that cannot be a schema subject (empty, too long, control characters).
    #[error("invalid event name {name:?}: {reason}")]
    InvalidEventName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A publish that the registry refuses. Nothing was written when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The document itself is unacceptable (does not compile, wrong `$schema`, `self` mismatch).
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The first version of a subject must be `1-0-0`.
    #[error("the first version of {subject} must be 1-0-0, not {version}")]
    FirstVersion {
        /// The subject.
        subject: Subject,
        /// The version that was offered.
        version: SchemaVer,
    },
    /// The version does not follow the latest one by exactly one step.
    #[error(
        "version {version} of {subject} does not follow the latest version {latest}: \
         publish {} (addition), {} (revision) or {} (model)",
        latest.next_addition(), latest.next_revision(), latest.next_model()
    )]
    NotNextVersion {
        /// The subject.
        subject: Subject,
        /// The version that was offered.
        version: SchemaVer,
        /// The newest version in the registry.
        latest: SchemaVer,
    },
    /// The version already exists with different content; versions are immutable.
    #[error(
        "version {version} of {subject} already exists with different content: \
         versions are immutable, publish a new version instead"
    )]
    Immutable {
        /// The subject.
        subject: Subject,
        /// The existing version.
        version: SchemaVer,
    },
    /// An ADDITION or REVISION that could reject data the previous version accepted.
    #[error(
        "version {version} of {subject} is not backward compatible with {previous} \
         ({}); a change that breaks old data requires a new MODEL: publish {}",
        crate::compat::summarize(reasons), previous.next_model()
    )]
    Incompatible {
        /// The subject.
        subject: Subject,
        /// The version that was offered.
        version: SchemaVer,
        /// The version it was compared with (the latest).
        previous: SchemaVer,
        /// Every reason found, each with the data path it concerns.
        reasons: Vec<Incompatibility>,
    },
    /// Two different event names would share one directory.
    #[error(
        "event {name:?} cannot be stored: its directory `events/{slug}` already belongs to event {existing:?}"
    )]
    SlugCollision {
        /// The event name being published.
        name: String,
        /// The event name that owns the directory.
        existing: String,
        /// The shared directory name.
        slug: String,
    },
}
