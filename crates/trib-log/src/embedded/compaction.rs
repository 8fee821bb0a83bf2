//! Blanking records of sealed segments: the payloads of chosen records are replaced by empty
//! ones, everything else (offsets, keys, deduplication ids, timestamps) is kept.
//!
//! A segment is rewritten to `<base>.log.blanking` beside it (frames re-encoded, checksums
//! recomputed, the header copied), fsynced, renamed over the segment, and the directory
//! fsynced: a crash leaves either the old or the new segment, and a leftover temporary file is
//! removed on open. Readers that already hold the old segment keep reading the old file (its
//! handle is pinned open before the rename); the partition's view then points new reads at a
//! new handle for the new file. Only sealed segments (not the last one of a partition, which
//! the writer thread appends to) are rewritten; blanking never touches the writer.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};

use super::files::sync_dir;
use super::format::{FrameScanner, SEGMENT_HEADER_LEN, ScanMode, ScanStep, encode_frame_parts};
use super::segment::{
    IndexBuilder, PartitionShared, SCAN_CHUNK_BYTES, SegmentHandle, SegmentView, corrupt,
};
use crate::{BlankReport, LogError};

/// The suffix of a segment being rewritten.
pub(super) const BLANKING_SUFFIX: &str = ".blanking";

/// Blanks the records of `partition` at `offsets` that lie in sealed segments (blocking I/O).
/// The caller serializes calls per log.
pub(super) fn blank_partition(
    shared: &PartitionShared,
    offsets: &[u64],
) -> Result<BlankReport, LogError> {
    let segments = shared
        .view
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .segments
        .clone();
    let mut report = BlankReport::default();
    let Some((_, sealed)) = segments.split_last() else {
        report.not_sealed = offsets.to_vec();
        return Ok(report);
    };
    let sealed_end = segments
        .last()
        .map_or(0, |active| active.handle.base_offset);
    let wanted: BTreeSet<u64> = offsets.iter().copied().collect();
    report.not_sealed = wanted.range(sealed_end..).copied().collect();
    for segment in sealed {
        let base = segment.handle.base_offset;
        let end = sealed
            .iter()
            .find(|next| next.handle.base_offset > base)
            .map_or(sealed_end, |next| next.handle.base_offset);
        let chosen: BTreeSet<u64> = wanted.range(base..end).copied().collect();
        if chosen.is_empty() {
            continue;
        }
        let Some(rewritten) = write_blanked_copy(segment, &chosen)? else {
            continue;
        };
        install(
            shared,
            segment,
            rewritten.temporary,
            rewritten.index,
            rewritten.len,
        )?;
        report.blanked += rewritten.blanked;
    }
    Ok(report)
}

/// A blanked copy of a segment, written and fsynced beside it, not yet in place.
#[derive(Debug)]
pub(super) struct BlankedCopy {
    pub(super) temporary: PathBuf,
    index: Vec<super::segment::IndexEntry>,
    len: u64,
    blanked: u64,
}

/// Writes the segment with the payloads at `chosen` emptied to `<segment>.blanking`; `None`
/// when every chosen record is already empty (nothing to do).
pub(super) fn write_blanked_copy(
    segment: &SegmentView,
    chosen: &BTreeSet<u64>,
) -> Result<Option<BlankedCopy>, LogError> {
    let handle = &segment.handle;
    // Pins the old file for readers holding this handle, whatever happens to the path.
    let file = handle.read_file()?;
    let mut header = [0_u8; SEGMENT_HEADER_LEN as usize];
    file.read_exact_at(&mut header, 0)
        .map_err(|error| LogError::io(format!("reading {}", handle.path.display()), error))?;

    let temporary = temporary_path(&handle.path);
    let context = || format!("writing {}", temporary.display());
    let output = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)
        .map_err(|error| LogError::io(context(), error))?;
    let mut output = BufWriter::with_capacity(SCAN_CHUNK_BYTES, output);
    output
        .write_all(&header)
        .map_err(|error| LogError::io(context(), error))?;

    let mut scanner = FrameScanner::new(
        &file,
        SEGMENT_HEADER_LEN,
        segment.readable_len,
        ScanMode::Verify,
        SCAN_CHUNK_BYTES,
    );
    let mut index = IndexBuilder::new(handle.base_offset);
    let mut position = SEGMENT_HEADER_LEN;
    let mut frame_bytes = Vec::new();
    let mut blanked = 0;
    loop {
        let step = scanner
            .next_frame()
            .map_err(|error| LogError::io(format!("reading {}", handle.path.display()), error))?;
        let frame = match step {
            ScanStep::Frame(frame) => frame,
            ScanStep::End => break,
            ScanStep::Invalid { position, reason } => {
                drop(output);
                let _ = fs::remove_file(&temporary);
                return Err(corrupt(&handle.path, position, reason));
            }
        };
        let payload = frame.payload.unwrap_or_default();
        let blank = chosen.contains(&frame.offset) && !payload.is_empty();
        frame_bytes.clear();
        encode_frame_parts(
            &mut frame_bytes,
            frame.offset,
            frame.timestamp_ms,
            frame.key,
            frame.dedup_id,
            if blank { &[] } else { payload },
        )?;
        blanked += u64::from(blank);
        index.add(frame.offset, position);
        output
            .write_all(&frame_bytes)
            .map_err(|error| LogError::io(context(), error))?;
        position += frame_bytes.len() as u64;
    }
    let output = output
        .into_inner()
        .map_err(|error| LogError::io(context(), error.into_error()))?;
    if blanked == 0 {
        drop(output);
        let _ = fs::remove_file(&temporary);
        return Ok(None);
    }
    output
        .sync_all()
        .map_err(|error| LogError::io(context(), error))?;
    Ok(Some(BlankedCopy {
        temporary,
        index: index.finish(),
        len: position,
        blanked,
    }))
}

/// Renames the copy over the segment and points the partition's view at it.
fn install(
    shared: &PartitionShared,
    old: &SegmentView,
    temporary: PathBuf,
    index: Vec<super::segment::IndexEntry>,
    len: u64,
) -> Result<(), LogError> {
    let path = &old.handle.path;
    fs::rename(&temporary, path)
        .map_err(|error| LogError::io(format!("replacing {}", path.display()), error))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    let handle = Arc::new(SegmentHandle::new(
        old.handle.partition,
        old.handle.base_offset,
        path.clone(),
        Some(index),
    ));
    let mut view = shared.view.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(slot) = view
        .segments
        .iter_mut()
        .find(|segment| Arc::ptr_eq(&segment.handle, &old.handle))
    {
        slot.handle = handle;
        slot.readable_len = len;
    }
    Ok(())
}

fn temporary_path(segment: &Path) -> PathBuf {
    let mut name = segment.file_name().unwrap_or_default().to_os_string();
    name.push(BLANKING_SUFFIX);
    segment.with_file_name(name)
}

/// Removes segment copies left by a crash before their rename (the segment itself is intact).
pub(super) fn remove_unfinished_copies(partition_dir: &Path) -> Result<(), LogError> {
    let context = || format!("listing {}", partition_dir.display());
    for entry in fs::read_dir(partition_dir).map_err(|error| LogError::io(context(), error))? {
        let entry = entry.map_err(|error| LogError::io(context(), error))?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.ends_with(BLANKING_SUFFIX))
        {
            let path = entry.path();
            fs::remove_file(&path)
                .map_err(|error| LogError::io(format!("removing {}", path.display()), error))?;
            tracing::warn!(file = %path.display(), "removed an unfinished segment rewrite");
        }
    }
    Ok(())
}
