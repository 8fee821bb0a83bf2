//! Import state under `<data_dir>/imports`: the ledger of completed imports, the checkpoint of
//! a running one, and a lock file so that one file is imported into one source once at a time.
//!
//! Layout, per source and file (`<sha256>` is the file's hash):
//!
//! ```text
//! <state_dir>/<source>/<sha256>.json             the final ImportReport of a completed import
//! <state_dir>/<source>/<sha256>.checkpoint.json  the resume point of an unfinished one
//! <state_dir>/<source>/<sha256>.lock             held (flock) while an import runs
//! ```
//!
//! Both JSON files are replaced atomically (write a temporary file, fsync it, rename it over),
//! so a crash leaves either the old or the new content, never a torn file. The ledger's rename
//! is made durable too (the directory is fsynced), and so is the first checkpoint of a run,
//! written before anything is appended: from then on some checkpoint always survives a crash.
//! A later checkpoint's rename is not synced: losing it only means resuming from the one before,
//! which is just as exact (see [`Checkpoint::scan_from`]). A ledger that cannot be read is
//! ignored with a warning (the file is imported again, and rows the log already holds are found
//! by the scan); an unreadable checkpoint fails the import with a clear error instead, since
//! without it the rows of the interrupted run could not be found.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::ImportError;
use super::report::ImportReport;

/// Version 2 added `scan_from`; a version 1 checkpoint (written while import rows still carried
/// log deduplication ids) is read as scanning from offset 0.
const CHECKPOINT_VERSION: u32 = 2;

/// The state files of one (source, file) pair.
#[derive(Debug, Clone)]
pub(crate) struct StatePaths {
    dir: PathBuf,
    ledger: PathBuf,
    checkpoint: PathBuf,
    lock: PathBuf,
}

/// Where a run stopped and what it had counted: enough to continue after a crash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    pub(crate) version: u32,
    pub(crate) source: String,
    pub(crate) sha256: String,
    /// The row number of the next row to read.
    pub(crate) next_row: u64,
    /// Where that row starts in the decompressed stream.
    pub(crate) offset: u64,
    pub(crate) counts: Counts,
    /// Where, in each partition of the event log and of the quarantine, the records of rows
    /// from `next_row` on can start: every row at or after `next_row` that any run appended was
    /// appended at or after these offsets. A resumed run reads both logs from here to their end
    /// and skips the rows of this file it finds (import rows carry no log deduplication id, so
    /// the log itself does not recognise them). `None` (a version 1 checkpoint) means from 0.
    #[serde(default)]
    pub(crate) scan_from: Option<LogPositions>,
}

/// Offsets, one per partition, in the event log and in the quarantine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogPositions {
    pub(crate) events: Vec<u64>,
    pub(crate) quarantine: Vec<u64>,
}

/// The running totals of an import.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counts {
    pub(crate) rows_read: u64,
    pub(crate) accepted: u64,
    pub(crate) quarantined: u64,
    pub(crate) duplicates_skipped: u64,
    #[serde(default)]
    pub(crate) erased_skipped: u64,
    pub(crate) by_reason: BTreeMap<String, u64>,
    pub(crate) fields_dropped: BTreeMap<String, u64>,
}

impl Counts {
    /// Checks the reconciliation invariant.
    pub(crate) fn check(&self) -> Result<(), ImportError> {
        let handled =
            self.accepted + self.quarantined + self.duplicates_skipped + self.erased_skipped;
        let by_reason: u64 = self.by_reason.values().sum();
        if handled != self.rows_read || by_reason != self.quarantined {
            return Err(ImportError::Internal(format!(
                "reconciliation invariant broken: rows_read {} != accepted {} + quarantined {} \
                 + duplicates_skipped {} + erased_skipped {}, or quarantined != the sum of \
                 by_reason ({by_reason})",
                self.rows_read,
                self.accepted,
                self.quarantined,
                self.duplicates_skipped,
                self.erased_skipped
            )));
        }
        Ok(())
    }
}

impl Checkpoint {
    pub(crate) fn new(
        source: &str,
        sha256: &str,
        next_row: u64,
        offset: u64,
        counts: Counts,
        scan_from: LogPositions,
    ) -> Self {
        Self {
            version: CHECKPOINT_VERSION,
            source: source.to_owned(),
            sha256: sha256.to_owned(),
            next_row,
            offset,
            counts,
            scan_from: Some(scan_from),
        }
    }
}

impl StatePaths {
    pub(crate) fn new(state_dir: &Path, source: &str, sha256: &str) -> Self {
        let dir = state_dir.join(file_name_safe(source));
        Self {
            ledger: dir.join(format!("{sha256}.json")),
            checkpoint: dir.join(format!("{sha256}.checkpoint.json")),
            lock: dir.join(format!("{sha256}.lock")),
            dir,
        }
    }

    /// Creates the directory and takes the lock; `None` when another import holds it.
    pub(crate) fn lock(&self) -> Result<Option<File>, ImportError> {
        fs::create_dir_all(&self.dir)
            .map_err(|error| ImportError::io(format!("creating {}", self.dir.display()), error))?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(|error| ImportError::io(format!("opening {}", self.lock.display()), error))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(error)) => Err(ImportError::io(
                format!("locking {}", self.lock.display()),
                error,
            )),
        }
    }

    /// Reads the ledger entry of a completed import, if any.
    pub(crate) fn read_ledger(&self) -> Option<ImportReport> {
        read_json(&self.ledger)
    }

    /// Reads the checkpoint, if there is one.
    ///
    /// A checkpoint that cannot be read, or that belongs to another file or source, is an
    /// error: starting over without it would append the rows of the interrupted run again.
    pub(crate) fn read_checkpoint(
        &self,
        source: &str,
        sha256: &str,
    ) -> Result<Option<Checkpoint>, ImportError> {
        let bytes = match fs::read(&self.checkpoint) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(ImportError::io(
                    format!("reading {}", self.checkpoint.display()),
                    error,
                ));
            }
        };
        let damaged = |reason: String| ImportError::DamagedCheckpoint {
            path: self.checkpoint.clone(),
            reason,
        };
        let checkpoint: Checkpoint =
            serde_json::from_slice(&bytes).map_err(|error| damaged(error.to_string()))?;
        if !(1..=CHECKPOINT_VERSION).contains(&checkpoint.version) {
            return Err(damaged(format!(
                "unknown checkpoint version {}",
                checkpoint.version
            )));
        }
        if checkpoint.source != source || checkpoint.sha256 != sha256 {
            return Err(damaged(
                "it names another source or file than its path".to_owned(),
            ));
        }
        checkpoint
            .counts
            .check()
            .map_err(|_| damaged("its counts do not add up".to_owned()))?;
        Ok(Some(checkpoint))
    }

    /// Replaces the checkpoint atomically; `durable` also syncs the rename (see the module
    /// docs).
    pub(crate) fn write_checkpoint(
        &self,
        checkpoint: &Checkpoint,
        durable: bool,
    ) -> Result<(), ImportError> {
        write_json_atomically(&self.checkpoint, checkpoint, durable)
    }

    /// Records a completed import durably and removes its checkpoint.
    pub(crate) fn write_ledger(&self, report: &ImportReport) -> Result<(), ImportError> {
        write_json_atomically(&self.ledger, report, true)?;
        match fs::remove_file(&self.checkpoint) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(ImportError::io(
                format!("removing {}", self.checkpoint.display()),
                error,
            )),
        }
    }
}

/// Source names are already `a-z0-9_-`; anything else is replaced so the name stays one path
/// component.
fn file_name_safe(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() {
        "_".to_owned()
    } else {
        safe
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read import state, ignoring it");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "damaged import state, ignoring it");
            None
        }
    }
}

/// Writes a temporary file, fsyncs it and renames it over `path`; `sync_rename` also fsyncs the
/// directory, so that the rename itself survives a power failure.
fn write_json_atomically<T: Serialize>(
    path: &Path,
    value: &T,
    sync_rename: bool,
) -> Result<(), ImportError> {
    let json = serde_json::to_vec_pretty(value).map_err(|error| {
        ImportError::Internal(format!("import state does not serialize: {error}"))
    })?;
    let temporary = path.with_extension("json.tmp");
    let writing = |error| ImportError::io(format!("writing {}", temporary.display()), error);
    let mut file = File::create(&temporary).map_err(writing)?;
    file.write_all(&json).map_err(writing)?;
    // Always: a renamed file whose data never reached the disk could be empty after a crash.
    file.sync_all().map_err(writing)?;
    drop(file);
    fs::rename(&temporary, path).map_err(|error| {
        ImportError::io(
            format!("renaming {} to {}", temporary.display(), path.display()),
            error,
        )
    })?;
    if sync_rename && let Some(dir) = path.parent() {
        // Makes the rename itself durable.
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|error| ImportError::io(format!("syncing {}", dir.display()), error))?;
    }
    Ok(())
}
