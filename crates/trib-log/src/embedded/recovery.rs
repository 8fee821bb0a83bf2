//! Opening a partition: crash recovery and rebuilding the deduplication index.
//!
//! Only the last segment of a partition can be damaged by a crash: the writer fsyncs a segment
//! before it creates the next one. So on open the last segment is read whole, checksums
//! included. The first frame that is not valid ends the good data; if no valid record follows
//! it anywhere in the file, it is a torn tail (a write cut short by SIGKILL or power loss,
//! never acknowledged) and is truncated away. If a valid record does follow, the damage is in
//! the middle of the data, and opening fails with [`LogError::Corrupt`] rather than silently
//! dropping acknowledged records.
//!
//! A last segment shorter than its header (or with an all-zero header and nothing else) is a
//! segment whose creation was cut short; it holds no records and is removed.
//!
//! Earlier (sealed) segments are not re-verified on open; a damaged one fails the reads that
//! reach it. Those that can hold records newer than `now - dedup window` (known from the
//! largest timestamp the next segment's header records) are scanned, headers only, to rebuild
//! the deduplication index and their sparse offset index.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::EmbeddedLogOptions;
use super::files::{
    create_dir, create_segment, list_segments, partition_dir, segment_path, sync_dir,
};
use super::format::{
    FrameScanner, SEGMENT_HEADER_LEN, ScanMode, ScanStep, SegmentHeader, find_valid_frame_after,
};
use super::segment::{
    IndexBuilder, IndexEntry, PartitionView, SCAN_CHUNK_BYTES, SegmentHandle, SegmentView, corrupt,
};
use super::writer::PartitionWriter;
use crate::LogError;
use crate::dedup::{DedupIndex, dedup_hash};

/// A partition ready to serve: the writer's end and the readers' view.
pub(super) struct RecoveredPartition {
    pub(super) writer: PartitionWriter,
    pub(super) view: PartitionView,
}

/// Opens (or creates) one partition's segments, repairing a torn tail and feeding the
/// deduplication index.
pub(super) fn recover_partition(
    options: &EmbeddedLogOptions,
    partition: u32,
    dedup: &mut DedupIndex,
    now_ms: i64,
) -> Result<RecoveredPartition, LogError> {
    let dir = partition_dir(&options.dir, partition);
    create_dir(&dir)?;
    super::compaction::remove_unfinished_copies(&dir)?;
    let mut bases = list_segments(&dir)?;
    remove_unfinished_last_segment(&dir, &mut bases)?;

    let Some((&last_base, sealed_bases)) = bases.split_last() else {
        return create_first_segment(options, partition, dir);
    };

    let mut sealed = Vec::with_capacity(sealed_bases.len());
    for &base in sealed_bases {
        let path = segment_path(&dir, base);
        let (header, len) = read_header(&path, partition, base)?;
        sealed.push((path, header, len));
    }
    let last_path = segment_path(&dir, last_base);
    let (last_header, last_len) = read_header(&last_path, partition, last_base)?;

    let cutoff = dedup.cutoff_ms(now_ms);
    let mut segments = Vec::with_capacity(bases.len());
    for (position, (path, header, len)) in sealed.iter().enumerate() {
        let next_header = sealed
            .get(position + 1)
            .map_or(last_header, |(_, next, _)| *next);
        let may_hold_recent_ids = dedup.is_enabled()
            && next_header
                .previous_segment_max_timestamp_ms
                .is_some_and(|max| max >= cutoff);
        let index = if may_hold_recent_ids {
            Some(scan_sealed_segment(
                path,
                header.base_offset,
                *len,
                next_header.base_offset,
                dedup,
                now_ms,
            )?)
        } else {
            None
        };
        segments.push(SegmentView {
            handle: Arc::new(SegmentHandle::new(
                partition,
                header.base_offset,
                path.clone(),
                index,
            )),
            readable_len: *len,
        });
    }

    let RecoveredSegment {
        file,
        end,
        next_offset,
        index,
        max_timestamp_ms,
    } = recover_last_segment(&last_path, last_base, last_len, dedup, now_ms)?;
    let last_index_position = index.last_position();
    let handle = Arc::new(SegmentHandle::new(
        partition,
        last_base,
        last_path,
        Some(index.finish()),
    ));
    segments.push(SegmentView {
        handle: Arc::clone(&handle),
        readable_len: end,
    });
    Ok(RecoveredPartition {
        writer: PartitionWriter::new(
            partition,
            dir,
            next_offset,
            handle,
            file,
            end,
            last_index_position,
            max_timestamp_ms,
        ),
        view: PartitionView {
            segments,
            durable_end_offset: next_offset,
        },
    })
}

/// What the scan of the last segment found.
struct RecoveredSegment {
    file: File,
    /// Length of the good data; the file is truncated to it.
    end: u64,
    next_offset: u64,
    index: IndexBuilder,
    max_timestamp_ms: Option<i64>,
}

fn create_first_segment(
    options: &EmbeddedLogOptions,
    partition: u32,
    dir: PathBuf,
) -> Result<RecoveredPartition, LogError> {
    let header = SegmentHeader {
        partition,
        base_offset: 0,
        previous_segment_max_timestamp_ms: None,
    };
    let (file, path) = create_segment(&dir, header, options.durability)?;
    let handle = Arc::new(SegmentHandle::new(partition, 0, path, Some(Vec::new())));
    Ok(RecoveredPartition {
        view: PartitionView {
            segments: vec![SegmentView {
                handle: Arc::clone(&handle),
                readable_len: SEGMENT_HEADER_LEN,
            }],
            durable_end_offset: 0,
        },
        writer: PartitionWriter::new(
            partition,
            dir,
            0,
            handle,
            file,
            SEGMENT_HEADER_LEN,
            SEGMENT_HEADER_LEN,
            None,
        ),
    })
}

/// Reads the whole last segment, checksums included; truncates a torn tail.
fn recover_last_segment(
    path: &Path,
    base_offset: u64,
    len: u64,
    dedup: &mut DedupIndex,
    now_ms: i64,
) -> Result<RecoveredSegment, LogError> {
    let io_error = |error| LogError::io(format!("recovering {}", path.display()), error);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_error)?;
    let mut index = IndexBuilder::new(base_offset);
    let mut next_offset = base_offset;
    let mut max_timestamp_ms: Option<i64> = None;
    let mut scanner = FrameScanner::new(
        &file,
        SEGMENT_HEADER_LEN,
        len,
        ScanMode::Verify,
        SCAN_CHUNK_BYTES,
    );
    let end = loop {
        match scanner.next_frame().map_err(io_error)? {
            ScanStep::Frame(frame) => {
                if frame.offset != next_offset {
                    return Err(corrupt(
                        path,
                        frame.position,
                        format!("expected offset {next_offset}, found {}", frame.offset),
                    ));
                }
                index.add(frame.offset, frame.position);
                max_timestamp_ms = Some(
                    max_timestamp_ms.map_or(frame.timestamp_ms, |max| max.max(frame.timestamp_ms)),
                );
                if let Some(id) = frame.dedup_id {
                    dedup.insert(dedup_hash(id), frame.timestamp_ms, now_ms);
                }
                next_offset += 1;
            }
            ScanStep::End => break len,
            ScanStep::Invalid { position, reason } => {
                if let Some(valid) =
                    find_valid_frame_after(&file, position, len, next_offset).map_err(io_error)?
                {
                    return Err(corrupt(
                        path,
                        position,
                        format!("{reason}, yet a valid record follows at byte {valid}"),
                    ));
                }
                tracing::warn!(
                    segment = %path.display(),
                    position,
                    removed_bytes = len - position,
                    reason = %reason,
                    "truncating a torn tail left by a crash"
                );
                file.set_len(position).map_err(io_error)?;
                file.sync_all().map_err(io_error)?;
                break position;
            }
        }
    };
    Ok(RecoveredSegment {
        file,
        end,
        next_offset,
        index,
        max_timestamp_ms,
    })
}

/// Scans a sealed segment's headers: checks its offsets, feeds the deduplication index and
/// returns its sparse index.
fn scan_sealed_segment(
    path: &Path,
    base_offset: u64,
    len: u64,
    next_base_offset: u64,
    dedup: &mut DedupIndex,
    now_ms: i64,
) -> Result<Vec<IndexEntry>, LogError> {
    let io_error = |error| LogError::io(format!("reading {}", path.display()), error);
    let file = File::open(path).map_err(io_error)?;
    let mut index = IndexBuilder::new(base_offset);
    let mut next_offset = base_offset;
    let mut scanner = FrameScanner::new(
        &file,
        SEGMENT_HEADER_LEN,
        len,
        ScanMode::HeadersOnly,
        SCAN_CHUNK_BYTES,
    );
    loop {
        match scanner.next_frame().map_err(io_error)? {
            ScanStep::Frame(frame) => {
                if frame.offset != next_offset {
                    return Err(corrupt(
                        path,
                        frame.position,
                        format!("expected offset {next_offset}, found {}", frame.offset),
                    ));
                }
                index.add(frame.offset, frame.position);
                if let Some(id) = frame.dedup_id {
                    dedup.insert(dedup_hash(id), frame.timestamp_ms, now_ms);
                }
                next_offset += 1;
            }
            ScanStep::End => break,
            ScanStep::Invalid { position, reason } => return Err(corrupt(path, position, reason)),
        }
    }
    if next_offset != next_base_offset {
        return Err(corrupt(
            path,
            len,
            format!(
                "the segment ends before offset {next_offset} but the next segment starts at {next_base_offset}"
            ),
        ));
    }
    Ok(index.finish())
}

/// Reads and checks a segment header; returns it with the file's length.
fn read_header(
    path: &Path,
    partition: u32,
    base_offset: u64,
) -> Result<(SegmentHeader, u64), LogError> {
    let io_error = |error| LogError::io(format!("reading {}", path.display()), error);
    let file = File::open(path).map_err(io_error)?;
    let len = file.metadata().map_err(io_error)?.len();
    let mut bytes = [0_u8; SEGMENT_HEADER_LEN as usize];
    if len < SEGMENT_HEADER_LEN {
        return Err(corrupt(
            path,
            0,
            "the file is shorter than a segment header",
        ));
    }
    file.read_exact_at(&mut bytes, 0).map_err(io_error)?;
    let header = SegmentHeader::decode(&bytes).map_err(|reason| corrupt(path, 0, reason))?;
    if header.partition != partition || header.base_offset != base_offset {
        return Err(corrupt(
            path,
            0,
            format!(
                "the header names partition {} and base offset {}, the file's place says partition {partition} and base offset {base_offset}",
                header.partition, header.base_offset
            ),
        ));
    }
    Ok((header, len))
}

/// Removes a last segment whose creation was cut short by a crash (shorter than a header, or a
/// zero header and nothing else); it cannot hold records.
fn remove_unfinished_last_segment(dir: &Path, bases: &mut Vec<u64>) -> Result<(), LogError> {
    let Some(&base) = bases.last() else {
        return Ok(());
    };
    let path = segment_path(dir, base);
    let io_error = |error| LogError::io(format!("checking {}", path.display()), error);
    let file = File::open(&path).map_err(io_error)?;
    let len = file.metadata().map_err(io_error)?.len();
    let unfinished = if len < SEGMENT_HEADER_LEN {
        true
    } else if len == SEGMENT_HEADER_LEN {
        let mut bytes = [0_u8; SEGMENT_HEADER_LEN as usize];
        file.read_exact_at(&mut bytes, 0).map_err(io_error)?;
        bytes.iter().all(|&byte| byte == 0)
    } else {
        false
    };
    if unfinished {
        tracing::warn!(segment = %path.display(), "removing a segment whose creation was cut short");
        std::fs::remove_file(&path).map_err(io_error)?;
        sync_dir(dir)?;
        bases.pop();
    }
    Ok(())
}
