//! File system helpers: the directory layout, atomic replacement, and fsync of directories.
//!
//! Layout of a log directory:
//!
//! ```text
//! <dir>/lock                                  advisory lock held while the log is open
//! <dir>/meta.json                             {"format": "trib-log", "version": 1, "partitions": N}
//! <dir>/partitions/<p>/<base offset, 20 digits>.log   segment files
//! <dir>/consumers/<encoded consumer name>.offsets     committed offsets of one consumer
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::format::{SEGMENT_HEADER_LEN, SegmentHeader};
use super::{Durability, EmbeddedLogOptions};
use crate::LogError;

pub(super) const LOCK_FILE: &str = "lock";
pub(super) const META_FILE: &str = "meta.json";
pub(super) const PARTITIONS_DIR: &str = "partitions";
pub(super) const CONSUMERS_DIR: &str = "consumers";
const SEGMENT_SUFFIX: &str = ".log";
const META_FORMAT: &str = "trib-log";
const META_VERSION: u64 = 1;

pub(super) fn partition_dir(dir: &Path, partition: u32) -> PathBuf {
    dir.join(PARTITIONS_DIR).join(partition.to_string())
}

pub(super) fn segment_path(partition_dir: &Path, base_offset: u64) -> PathBuf {
    partition_dir.join(format!("{base_offset:020}{SEGMENT_SUFFIX}"))
}

/// Returns the base offsets of the segment files in `partition_dir`, ascending.
pub(super) fn list_segments(partition_dir: &Path) -> Result<Vec<u64>, LogError> {
    let context = || format!("listing {}", partition_dir.display());
    let mut bases = Vec::new();
    for entry in fs::read_dir(partition_dir).map_err(|error| LogError::io(context(), error))? {
        let entry = entry.map_err(|error| LogError::io(context(), error))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(digits) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        match digits.parse::<u64>() {
            Ok(base) if digits.len() == 20 => bases.push(base),
            _ => {
                tracing::warn!(file = %entry.path().display(), "ignoring a file that is not a segment")
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Creates a segment file with its header, durably (file and directory fsynced) unless
/// durability is off, and returns it opened for reading and writing.
pub(super) fn create_segment(
    partition_dir: &Path,
    header: SegmentHeader,
    durability: Durability,
) -> Result<(File, PathBuf), LogError> {
    let path = segment_path(partition_dir, header.base_offset);
    let context = || format!("creating segment {}", path.display());
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|error| LogError::io(context(), error))?;
    file.write_all(&header.encode())
        .map_err(|error| LogError::io(context(), error))?;
    if durability == Durability::Fsync {
        file.sync_all()
            .map_err(|error| LogError::io(context(), error))?;
        sync_dir(partition_dir)?;
    }
    debug_assert_eq!(SEGMENT_HEADER_LEN, header.encode().len() as u64);
    Ok((file, path))
}

/// Replaces `path` with `contents` atomically: write a temporary file, fsync it, rename it over
/// `path`, fsync the directory. A crash leaves either the old or the new contents.
pub(super) fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), LogError> {
    let context = || format!("writing {}", path.display());
    let parent = path.parent().unwrap_or(Path::new("."));
    let mut temporary_name = path.file_name().unwrap_or_default().to_os_string();
    temporary_name.push(".tmp");
    let temporary = parent.join(temporary_name);
    let mut file = File::create(&temporary).map_err(|error| LogError::io(context(), error))?;
    file.write_all(contents)
        .map_err(|error| LogError::io(context(), error))?;
    file.sync_all()
        .map_err(|error| LogError::io(context(), error))?;
    drop(file);
    fs::rename(&temporary, path).map_err(|error| LogError::io(context(), error))?;
    sync_dir(parent)
}

/// Fsyncs a directory, so that files created, renamed or removed in it stay so after a crash.
pub(super) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| LogError::io(format!("fsyncing directory {}", dir.display()), error))
}

/// Creates `dir` (and its parents) if needed, durably.
pub(super) fn create_dir(dir: &Path) -> Result<(), LogError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)
        .map_err(|error| LogError::io(format!("creating directory {}", dir.display()), error))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Checks the partition count recorded in `meta.json`, or records it for a new log.
pub(super) fn check_or_create_meta(options: &EmbeddedLogOptions) -> Result<(), LogError> {
    let path = options.dir.join(META_FILE);
    match fs::read(&path) {
        Ok(bytes) => check_meta(&path, &bytes, options.partitions),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if options.dir.join(PARTITIONS_DIR).exists() {
                return Err(LogError::Config(format!(
                    "{} holds partition data but no {META_FILE}; refusing to guess its partition count",
                    options.dir.display()
                )));
            }
            let meta = serde_json::json!({
                "format": META_FORMAT,
                "version": META_VERSION,
                "partitions": options.partitions,
            });
            write_atomically(&path, format!("{meta}\n").as_bytes())
        }
        Err(error) => Err(LogError::io(format!("reading {}", path.display()), error)),
    }
}

fn check_meta(path: &Path, bytes: &[u8], requested_partitions: u32) -> Result<(), LogError> {
    let invalid = |reason: &str| LogError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason: reason.to_owned(),
    };
    let meta: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|_| invalid("not valid JSON"))?;
    if meta.get("format").and_then(|value| value.as_str()) != Some(META_FORMAT) {
        return Err(invalid(
            "not a trib-log directory (format is not \"trib-log\")",
        ));
    }
    let version = meta.get("version").and_then(|value| value.as_u64());
    if version != Some(META_VERSION) {
        return Err(invalid("unsupported log directory version"));
    }
    let partitions = meta
        .get("partitions")
        .and_then(|value| value.as_u64())
        .ok_or_else(|| invalid("no partition count"))?;
    if partitions != u64::from(requested_partitions) {
        return Err(LogError::Config(format!(
            "the log in {} has {partitions} partitions but {requested_partitions} were \
             configured; the partition count of an existing log cannot change",
            path.parent().unwrap_or(path).display()
        )));
    }
    Ok(())
}
