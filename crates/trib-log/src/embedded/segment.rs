//! Segments as readers see them: the shared view of each partition, sparse offset indexes, and
//! the read path.
//!
//! The writer thread publishes, after each fsync, how far every segment is readable and the
//! partition's durable end offset ([`PartitionShared`]). Readers take a snapshot of that view
//! under a short read lock, then read the files with `pread` on their own read-only handles on
//! a blocking thread, never past the snapshot; so they see only acknowledged records, and never
//! wait for the writer's I/O.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Bytes;

use super::format::{FrameScanner, SEGMENT_HEADER_LEN, ScanMode, ScanStep};
use crate::{LogError, StoredRecord};

/// A sparse index entry is added when a record starts at least this many bytes after the
/// previous entry (or the segment header).
pub(super) const INDEX_INTERVAL_BYTES: u64 = 4096;

/// How much a read fetches from a file at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// How much an index build or open-time scan fetches at a time.
pub(super) const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

/// One segment file, shared by the writer and readers.
#[derive(Debug)]
pub(super) struct SegmentHandle {
    pub(super) partition: u32,
    pub(super) base_offset: u64,
    pub(super) path: PathBuf,
    read_file: Mutex<Option<Arc<File>>>,
    /// `None` for a sealed segment nobody has read since the log was opened; built on first use.
    index: Mutex<Option<Vec<IndexEntry>>>,
}

/// Where a record starts: every [`INDEX_INTERVAL_BYTES`] or so, one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IndexEntry {
    /// The record's offset minus the segment's base offset.
    pub(super) relative_offset: u32,
    /// The record's byte position in the segment file.
    pub(super) position: u32,
}

/// What readers may see of one partition.
#[derive(Debug)]
pub(super) struct PartitionShared {
    pub(super) view: RwLock<PartitionView>,
}

#[derive(Debug, Clone)]
pub(super) struct PartitionView {
    /// Oldest first; each segment's records end where the next one's begin.
    pub(super) segments: Vec<SegmentView>,
    /// One past the last durable, acknowledged record.
    pub(super) durable_end_offset: u64,
}

#[derive(Debug, Clone)]
pub(super) struct SegmentView {
    pub(super) handle: Arc<SegmentHandle>,
    /// Bytes of the file that hold acknowledged records (header included).
    pub(super) readable_len: u64,
}

impl SegmentHandle {
    /// A segment whose sparse index is known (`Some`) or will be built on first read (`None`).
    pub(super) fn new(
        partition: u32,
        base_offset: u64,
        path: PathBuf,
        index: Option<Vec<IndexEntry>>,
    ) -> Self {
        Self {
            partition,
            base_offset,
            path,
            read_file: Mutex::new(None),
            index: Mutex::new(index),
        }
    }

    /// Adds an entry to the index of the segment being written.
    pub(super) fn push_index_entry(&self, offset: u64, position: u64) {
        let entry = IndexEntry {
            relative_offset: u32::try_from(offset - self.base_offset).unwrap_or(u32::MAX),
            position: u32::try_from(position).unwrap_or(u32::MAX),
        };
        let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        index.get_or_insert_with(Vec::new).push(entry);
    }

    /// Returns the position of a record at or before `offset` to start reading from.
    fn start_position(&self, offset: u64, readable_len: u64) -> Result<u64, LogError> {
        let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        if index.is_none() {
            *index = Some(self.build_index(readable_len)?);
        }
        let entries = index.as_deref().unwrap_or_default();
        let relative = offset.saturating_sub(self.base_offset);
        let after = entries.partition_point(|entry| u64::from(entry.relative_offset) <= relative);
        Ok(match after.checked_sub(1) {
            Some(found) => u64::from(entries[found].position),
            None => SEGMENT_HEADER_LEN,
        })
    }

    /// Scans the headers of a sealed segment to build its sparse index.
    fn build_index(&self, readable_len: u64) -> Result<Vec<IndexEntry>, LogError> {
        let file = self.read_file()?;
        let mut builder = IndexBuilder::new(self.base_offset);
        let mut scanner = FrameScanner::new(
            &file,
            SEGMENT_HEADER_LEN,
            readable_len,
            ScanMode::HeadersOnly,
            SCAN_CHUNK_BYTES,
        );
        loop {
            let step = scanner
                .next_frame()
                .map_err(|error| LogError::io(format!("reading {}", self.path.display()), error))?;
            match step {
                ScanStep::Frame(frame) => builder.add(frame.offset, frame.position),
                ScanStep::End => return Ok(builder.finish()),
                ScanStep::Invalid { position, reason } => {
                    return Err(corrupt(&self.path, position, reason));
                }
            }
        }
    }

    /// Returns the shared read-only handle, opening it on first use.
    pub(super) fn read_file(&self) -> Result<Arc<File>, LogError> {
        let mut slot = self
            .read_file
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = slot.as_ref() {
            return Ok(Arc::clone(file));
        }
        let file = File::open(&self.path)
            .map_err(|error| LogError::io(format!("opening {}", self.path.display()), error))?;
        let file = Arc::new(file);
        *slot = Some(Arc::clone(&file));
        Ok(file)
    }
}

/// Collects sparse index entries while records are scanned or written in order.
#[derive(Debug)]
pub(super) struct IndexBuilder {
    base_offset: u64,
    last_position: u64,
    entries: Vec<IndexEntry>,
}

impl IndexBuilder {
    pub(super) fn new(base_offset: u64) -> Self {
        Self {
            base_offset,
            last_position: SEGMENT_HEADER_LEN,
            entries: Vec::new(),
        }
    }

    pub(super) fn add(&mut self, offset: u64, position: u64) {
        if position >= self.last_position + INDEX_INTERVAL_BYTES {
            self.entries.push(IndexEntry {
                relative_offset: u32::try_from(offset - self.base_offset).unwrap_or(u32::MAX),
                position: u32::try_from(position).unwrap_or(u32::MAX),
            });
            self.last_position = position;
        }
    }

    /// The position of the last entry (or the header's end), for the writer to continue from.
    pub(super) fn last_position(&self) -> u64 {
        self.last_position
    }

    pub(super) fn finish(self) -> Vec<IndexEntry> {
        self.entries
    }
}

impl PartitionShared {
    pub(super) fn new(view: PartitionView) -> Self {
        Self {
            view: RwLock::new(view),
        }
    }

    pub(super) fn durable_end_offset(&self) -> u64 {
        self.view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .durable_end_offset
    }

    /// Snapshots what a read from `from` needs: the segments from the one holding `from` on,
    /// and the durable end offset. `None` if nothing at or after `from` is durable yet.
    pub(super) fn read_plan(&self, from: u64) -> Option<ReadPlan> {
        let view = self.view.read().unwrap_or_else(PoisonError::into_inner);
        if from >= view.durable_end_offset {
            return None;
        }
        let after = view
            .segments
            .partition_point(|segment| segment.handle.base_offset <= from);
        let first = after.checked_sub(1)?;
        Some(ReadPlan {
            segments: view.segments[first..].to_vec(),
            end_offset: view.durable_end_offset,
        })
    }
}

/// The segments and bounds of one read, detached from the live view.
#[derive(Debug)]
pub(super) struct ReadPlan {
    segments: Vec<SegmentView>,
    end_offset: u64,
}

impl ReadPlan {
    /// Reads up to `max_records` records from `from` (blocking I/O).
    pub(super) fn read(
        &self,
        from: u64,
        max_records: usize,
    ) -> Result<Vec<StoredRecord>, LogError> {
        let wanted = usize::try_from(self.end_offset - from)
            .unwrap_or(usize::MAX)
            .min(max_records);
        let mut records = Vec::with_capacity(wanted.min(4096));
        let mut next = from;
        for (index, segment) in self.segments.iter().enumerate() {
            if records.len() >= wanted {
                break;
            }
            let handle = &segment.handle;
            let start = if index == 0 {
                handle.start_position(from, segment.readable_len)?
            } else {
                SEGMENT_HEADER_LEN
            };
            let file = handle.read_file()?;
            let mut scanner = FrameScanner::new(
                &file,
                start,
                segment.readable_len,
                ScanMode::Verify,
                READ_CHUNK_BYTES,
            );
            while records.len() < wanted {
                let step = scanner.next_frame().map_err(|error| {
                    LogError::io(format!("reading {}", handle.path.display()), error)
                })?;
                let frame = match step {
                    ScanStep::Frame(frame) => frame,
                    ScanStep::End => break,
                    ScanStep::Invalid { position, reason } => {
                        return Err(corrupt(&handle.path, position, reason));
                    }
                };
                if frame.offset < next {
                    continue;
                }
                if frame.offset != next {
                    return Err(corrupt(
                        &handle.path,
                        frame.position,
                        format!("expected offset {next}, found {}", frame.offset),
                    ));
                }
                records.push(stored_record(handle, &frame)?);
                next += 1;
            }
        }
        Ok(records)
    }
}

fn stored_record(
    handle: &SegmentHandle,
    frame: &super::format::FrameView<'_>,
) -> Result<StoredRecord, LogError> {
    let text = |bytes: &[u8], what: &str| {
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            corrupt(
                &handle.path,
                frame.position,
                format!("the {what} is not UTF-8"),
            )
        })
    };
    Ok(StoredRecord {
        partition: handle.partition,
        offset: frame.offset,
        key: text(frame.key, "key")?,
        dedup_id: frame
            .dedup_id
            .map(|id| text(id, "deduplication id"))
            .transpose()?,
        timestamp_ms: frame.timestamp_ms,
        payload: Bytes::copy_from_slice(frame.payload.unwrap_or_default()),
    })
}

pub(super) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> LogError {
    LogError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}
