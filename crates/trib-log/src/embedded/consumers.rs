//! Committed consumer offsets: one small text file per consumer, replaced atomically.
//!
//! A file `<dir>/consumers/<name>.offsets` reads
//!
//! ```text
//! trib-log consumer offsets v1
//! <partition> <next offset>
//! …
//! ```
//!
//! with a line for every partition the consumer committed. The name is kept as is when it
//! consists of ASCII letters, digits, `-` and `_`; every other byte is written as `%XX`. All
//! files are loaded on open, so `committed_offset` never touches the disk; `commit_offset`
//! rewrites the consumer's file (temporary file, fsync, rename, fsync directory).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::LogError;
use crate::limits::{check_consumer_name, check_partition};

use super::files::write_atomically;
use super::segment::corrupt;

const FILE_SUFFIX: &str = ".offsets";
const FILE_HEADER: &str = "trib-log consumer offsets v1";

/// The committed offsets of every consumer.
#[derive(Debug)]
pub(super) struct ConsumerOffsetStore {
    dir: PathBuf,
    partitions: u32,
    consumers: Mutex<HashMap<String, Arc<Mutex<ConsumerOffsets>>>>,
}

/// One consumer's next offset per partition (`None`: never committed).
type ConsumerOffsets = Vec<Option<u64>>;

impl ConsumerOffsetStore {
    /// Loads every consumer's offsets from `dir`, which must exist.
    pub(super) fn load(dir: PathBuf, partitions: u32) -> Result<Self, LogError> {
        let context = || format!("listing {}", dir.display());
        let mut consumers = HashMap::new();
        for entry in fs::read_dir(&dir).map_err(|error| LogError::io(context(), error))? {
            let entry = entry.map_err(|error| LogError::io(context(), error))?;
            let path = entry.path();
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if file_name.ends_with(".tmp") {
                // A commit that crashed before its rename; the previous file is still valid.
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(encoded) = file_name.strip_suffix(FILE_SUFFIX) else {
                continue;
            };
            let Some(name) = decode_name(encoded) else {
                tracing::warn!(file = %path.display(), "ignoring an offsets file with an undecodable name");
                continue;
            };
            let offsets = read_offsets_file(&path, partitions)?;
            consumers.insert(name, Arc::new(Mutex::new(offsets)));
        }
        Ok(Self {
            dir,
            partitions,
            consumers: Mutex::new(consumers),
        })
    }

    pub(super) fn committed(&self, consumer: &str, partition: u32) -> Option<u64> {
        let consumers = self
            .consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let offsets = consumers.get(consumer)?;
        let offsets = offsets.lock().unwrap_or_else(PoisonError::into_inner);
        offsets.get(partition as usize).copied().flatten()
    }

    /// Durably records `next` for `consumer` and `partition` (blocking I/O). Commits of one
    /// consumer are serialized, so none overwrites another's partition.
    pub(super) fn commit(&self, consumer: &str, partition: u32, next: u64) -> Result<(), LogError> {
        check_consumer_name(consumer)?;
        check_partition(partition, self.partitions)?;
        let entry = {
            let mut consumers = self
                .consumers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let partitions = self.partitions as usize;
            Arc::clone(
                consumers
                    .entry(consumer.to_owned())
                    .or_insert_with(|| Arc::new(Mutex::new(vec![None; partitions]))),
            )
        };
        let mut offsets = entry.lock().unwrap_or_else(PoisonError::into_inner);
        let mut updated = offsets.clone();
        updated[partition as usize] = Some(next);
        let mut contents = String::from(FILE_HEADER);
        contents.push('\n');
        for (partition, next) in updated.iter().enumerate() {
            if let Some(next) = next {
                contents.push_str(&format!("{partition} {next}\n"));
            }
        }
        let path = self
            .dir
            .join(format!("{}{FILE_SUFFIX}", encode_name(consumer)));
        write_atomically(&path, contents.as_bytes())?;
        *offsets = updated;
        Ok(())
    }
}

fn read_offsets_file(path: &Path, partitions: u32) -> Result<Vec<Option<u64>>, LogError> {
    let contents = fs::read_to_string(path)
        .map_err(|error| LogError::io(format!("reading {}", path.display()), error))?;
    let mut lines = contents.lines();
    if lines.next() != Some(FILE_HEADER) {
        return Err(corrupt(path, 0, "not a consumer offsets file"));
    }
    let mut offsets = vec![None; partitions as usize];
    for line in lines.filter(|line| !line.trim().is_empty()) {
        let parsed = line.split_once(' ').and_then(|(partition, next)| {
            Some((partition.parse::<u32>().ok()?, next.parse::<u64>().ok()?))
        });
        let Some((partition, next)) = parsed else {
            return Err(corrupt(path, 0, format!("unreadable line {line:?}")));
        };
        let Some(slot) = offsets.get_mut(partition as usize) else {
            return Err(corrupt(
                path,
                0,
                format!("partition {partition} does not exist, the log has {partitions}"),
            ));
        };
        *slot = Some(next);
    }
    Ok(offsets)
}

fn encode_name(name: &str) -> String {
    let mut encoded = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn decode_name(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = encoded.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_file_names() {
        for name in ["warehouse", "a.b/c d", "..", "%41", "ünïcode", "x_y-z"] {
            let encoded = encode_name(name);
            assert!(
                encoded
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"-_%".contains(&byte)),
                "{encoded}"
            );
            assert_eq!(decode_name(&encoded).as_deref(), Some(name));
        }
    }
}
