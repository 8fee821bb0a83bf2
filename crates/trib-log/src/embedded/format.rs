//! The byte layout of segment files, and a scanner that walks their records.
//!
//! A segment file starts with a 40-byte header (all integers little-endian):
//!
//! | bytes  | field                                                                 |
//! |--------|-----------------------------------------------------------------------|
//! | 0..8   | magic `TRIBSEG\0`                                                     |
//! | 8      | format version, 1                                                     |
//! | 9..12  | reserved, zero                                                        |
//! | 12..16 | partition, u32                                                        |
//! | 16..24 | base offset (offset of the first record), u64                         |
//! | 24..32 | largest record timestamp of the previous segment, i64 (`i64::MIN`: none) |
//! | 32..36 | reserved, zero                                                        |
//! | 36..40 | CRC-32 (IEEE) of bytes 0..36                                          |
//!
//! and continues with records, each one frame:
//!
//! | bytes      | field                                                  |
//! |------------|--------------------------------------------------------|
//! | 0..4       | body length, u32 (the bytes after the checksum)        |
//! | 4..8       | CRC-32 (IEEE) of the body                              |
//! | body 0..8  | offset, u64                                            |
//! | body 8..16 | timestamp, milliseconds since the Unix epoch, i64      |
//! | body 16    | flags: bit 0 = has a deduplication id; others zero     |
//! | body 17..21| key length, u32                                        |
//! | body 21..25| deduplication id length, u32                           |
//! | body 25..  | key (UTF-8), deduplication id (UTF-8), payload (rest)  |
//!
//! The previous segment's largest timestamp lets the deduplication index skip, on open, every
//! segment whose records are all older than the window without reading it.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::limits::{MAX_RECORD_BYTES, RECORD_OVERHEAD_BYTES};
use crate::{LogError, Record};

pub(super) const SEGMENT_MAGIC: [u8; 8] = *b"TRIBSEG\0";
pub(super) const SEGMENT_FORMAT_VERSION: u8 = 1;
pub(super) const SEGMENT_HEADER_LEN: u64 = 40;

const FRAME_PREFIX_LEN: usize = 8;
const BODY_FIXED_LEN: usize = 25;
const FRAME_FIXED_LEN: usize = FRAME_PREFIX_LEN + BODY_FIXED_LEN;
const MAX_BODY_LEN: u64 = MAX_RECORD_BYTES - FRAME_PREFIX_LEN as u64;
const FLAG_HAS_DEDUP_ID: u8 = 1;

const _: () = assert!(FRAME_FIXED_LEN as u64 == RECORD_OVERHEAD_BYTES);

/// The header at the start of every segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SegmentHeader {
    pub(super) partition: u32,
    pub(super) base_offset: u64,
    pub(super) previous_segment_max_timestamp_ms: Option<i64>,
}

impl SegmentHeader {
    pub(super) fn encode(&self) -> [u8; SEGMENT_HEADER_LEN as usize] {
        let mut bytes = [0_u8; SEGMENT_HEADER_LEN as usize];
        bytes[0..8].copy_from_slice(&SEGMENT_MAGIC);
        bytes[8] = SEGMENT_FORMAT_VERSION;
        bytes[12..16].copy_from_slice(&self.partition.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.base_offset.to_le_bytes());
        let previous_max = self.previous_segment_max_timestamp_ms.unwrap_or(i64::MIN);
        bytes[24..32].copy_from_slice(&previous_max.to_le_bytes());
        let checksum = crc32fast::hash(&bytes[0..36]);
        bytes[36..40].copy_from_slice(&checksum.to_le_bytes());
        bytes
    }

    /// Parses a header, or says what is wrong with it.
    pub(super) fn decode(bytes: &[u8; SEGMENT_HEADER_LEN as usize]) -> Result<Self, String> {
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err("not a segment file (bad magic)".to_owned());
        }
        if bytes[8] != SEGMENT_FORMAT_VERSION {
            return Err(format!("unsupported segment format version {}", bytes[8]));
        }
        if crc32fast::hash(&bytes[0..36]) != read_u32(bytes, 36) {
            return Err("segment header checksum mismatch".to_owned());
        }
        let previous_max = read_i64(bytes, 24);
        Ok(Self {
            partition: read_u32(bytes, 12),
            base_offset: read_u64(bytes, 16),
            previous_segment_max_timestamp_ms: (previous_max != i64::MIN).then_some(previous_max),
        })
    }
}

/// Appends the frame of `record` at `offset` to `buffer`.
///
/// The caller has checked the record against [`MAX_RECORD_BYTES`]; a record over the limit
/// still fails here instead of writing a frame the reader would refuse.
pub(super) fn encode_frame(
    buffer: &mut Vec<u8>,
    offset: u64,
    record: &Record,
) -> Result<(), LogError> {
    encode_frame_parts(
        buffer,
        offset,
        record.timestamp_ms,
        record.key.as_bytes(),
        record.dedup_id.as_deref().map(str::as_bytes),
        &record.payload,
    )
}

/// Appends the frame of a record given by its parts to `buffer` (also used to rewrite frames
/// of a sealed segment).
pub(super) fn encode_frame_parts(
    buffer: &mut Vec<u8>,
    offset: u64,
    timestamp_ms: i64,
    key: &[u8],
    dedup_id: Option<&[u8]>,
    payload: &[u8],
) -> Result<(), LogError> {
    let flags = if dedup_id.is_some() {
        FLAG_HAS_DEDUP_ID
    } else {
        0
    };
    let dedup_id = dedup_id.unwrap_or_default();
    let body_len = BODY_FIXED_LEN + key.len() + dedup_id.len() + payload.len();
    let (Ok(body_len_u32), Ok(key_len), Ok(dedup_id_len)) = (
        u32::try_from(body_len),
        u32::try_from(key.len()),
        u32::try_from(dedup_id.len()),
    ) else {
        return Err(too_large(body_len));
    };
    if body_len as u64 > MAX_BODY_LEN {
        return Err(too_large(body_len));
    }

    let start = buffer.len();
    buffer.reserve(FRAME_PREFIX_LEN + body_len);
    buffer.extend_from_slice(&body_len_u32.to_le_bytes());
    buffer.extend_from_slice(&[0; 4]);
    buffer.extend_from_slice(&offset.to_le_bytes());
    buffer.extend_from_slice(&timestamp_ms.to_le_bytes());
    buffer.push(flags);
    buffer.extend_from_slice(&key_len.to_le_bytes());
    buffer.extend_from_slice(&dedup_id_len.to_le_bytes());
    buffer.extend_from_slice(key);
    buffer.extend_from_slice(dedup_id);
    buffer.extend_from_slice(payload);
    let checksum = crc32fast::hash(&buffer[start + FRAME_PREFIX_LEN..]);
    buffer[start + 4..start + FRAME_PREFIX_LEN].copy_from_slice(&checksum.to_le_bytes());
    Ok(())
}

/// One record frame as found by [`FrameScanner`], borrowing the scanner's buffer.
#[derive(Debug)]
pub(super) struct FrameView<'a> {
    /// Byte position of the frame in the file.
    pub(super) position: u64,
    pub(super) offset: u64,
    pub(super) timestamp_ms: i64,
    pub(super) key: &'a [u8],
    pub(super) dedup_id: Option<&'a [u8]>,
    /// `None` when the scan skips payloads ([`ScanMode::HeadersOnly`]).
    pub(super) payload: Option<&'a [u8]>,
}

/// What [`FrameScanner::next_frame`] found.
#[derive(Debug)]
pub(super) enum ScanStep<'a> {
    Frame(FrameView<'a>),
    /// The scan reached its end position exactly after a frame.
    End,
    /// The bytes at `position` are not a valid frame (or run past the end position).
    Invalid {
        position: u64,
        reason: String,
    },
}

/// How much of each frame a scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ScanMode {
    /// Read whole frames and check their checksums.
    Verify,
    /// Read only the fixed fields, key and deduplication id; skip payloads and checksums.
    HeadersOnly,
}

/// Walks the frames of a file between two byte positions, reading it in chunks with `pread`.
#[derive(Debug)]
pub(super) struct FrameScanner<'f> {
    file: &'f File,
    mode: ScanMode,
    position: u64,
    end: u64,
    chunk_bytes: usize,
    buffer: Vec<u8>,
    buffer_start: u64,
}

impl<'f> FrameScanner<'f> {
    /// Scans `file` from `start` (the position of a frame) to `end` (exclusive).
    pub(super) fn new(
        file: &'f File,
        start: u64,
        end: u64,
        mode: ScanMode,
        chunk_bytes: usize,
    ) -> Self {
        Self {
            file,
            mode,
            position: start,
            end,
            chunk_bytes,
            buffer: Vec::new(),
            buffer_start: start,
        }
    }

    /// Returns the next frame, [`ScanStep::End`], or where and why the bytes are not a frame.
    pub(super) fn next_frame(&mut self) -> std::io::Result<ScanStep<'_>> {
        let position = self.position;
        let remaining = self.end.saturating_sub(position);
        if remaining == 0 {
            return Ok(ScanStep::End);
        }
        if remaining < FRAME_FIXED_LEN as u64 {
            return Ok(invalid(position, "incomplete frame at the end of the data"));
        }
        self.fill(position, FRAME_FIXED_LEN)?;
        let fixed = self.slice(position, FRAME_FIXED_LEN);
        let body_len = u64::from(read_u32(fixed, 0));
        let stored_checksum = read_u32(fixed, 4);
        let flags = fixed[FRAME_PREFIX_LEN + 16];
        let key_len = u64::from(read_u32(fixed, FRAME_PREFIX_LEN + 17));
        let dedup_id_len = u64::from(read_u32(fixed, FRAME_PREFIX_LEN + 21));
        if !(BODY_FIXED_LEN as u64..=MAX_BODY_LEN).contains(&body_len) {
            return Ok(invalid(
                position,
                format!("implausible frame length {body_len}"),
            ));
        }
        let frame_len = FRAME_PREFIX_LEN as u64 + body_len;
        if frame_len > remaining {
            return Ok(invalid(
                position,
                format!("frame of {frame_len} bytes runs past the end of the data"),
            ));
        }
        if flags & !FLAG_HAS_DEDUP_ID != 0 {
            return Ok(invalid(
                position,
                format!("unknown frame flags {flags:#04x}"),
            ));
        }
        if key_len + dedup_id_len > body_len - BODY_FIXED_LEN as u64 {
            return Ok(invalid(
                position,
                "key and deduplication id lengths exceed the frame",
            ));
        }
        let wanted = match self.mode {
            ScanMode::Verify => frame_len,
            ScanMode::HeadersOnly => FRAME_FIXED_LEN as u64 + key_len + dedup_id_len,
        };
        // Bounded by MAX_RECORD_BYTES, so it fits in usize.
        let wanted = wanted as usize;
        self.fill(position, wanted)?;
        let start = (position - self.buffer_start) as usize;
        let frame = &self.buffer[start..start + wanted];
        if self.mode == ScanMode::Verify
            && crc32fast::hash(&frame[FRAME_PREFIX_LEN..]) != stored_checksum
        {
            return Ok(invalid(position, "record checksum mismatch"));
        }
        self.position = position + frame_len;

        let key_end = FRAME_FIXED_LEN + key_len as usize;
        let dedup_id_end = key_end + dedup_id_len as usize;
        Ok(ScanStep::Frame(FrameView {
            position,
            offset: read_u64(frame, FRAME_PREFIX_LEN),
            timestamp_ms: read_i64(frame, FRAME_PREFIX_LEN + 8),
            key: &frame[FRAME_FIXED_LEN..key_end],
            dedup_id: (flags & FLAG_HAS_DEDUP_ID != 0).then(|| &frame[key_end..dedup_id_end]),
            payload: (self.mode == ScanMode::Verify).then(|| &frame[dedup_id_end..]),
        }))
    }

    /// Makes `len` bytes from `position` available in the buffer; the caller has checked that
    /// they lie before `end`.
    fn fill(&mut self, position: u64, len: usize) -> std::io::Result<()> {
        let buffered_end = self.buffer_start + self.buffer.len() as u64;
        if position >= self.buffer_start && position + len as u64 <= buffered_end {
            return Ok(());
        }
        let available = self.end - position;
        let read_len = (len.max(self.chunk_bytes) as u64).min(available) as usize;
        self.buffer.resize(read_len, 0);
        self.file.read_exact_at(&mut self.buffer, position)?;
        self.buffer_start = position;
        Ok(())
    }

    fn slice(&self, position: u64, len: usize) -> &[u8] {
        let start = (position - self.buffer_start) as usize;
        &self.buffer[start..start + len]
    }
}

/// Looks for a valid frame that starts after `after` and before `end`, whose offset is at least
/// `min_offset`. Used on open to tell a torn tail (nothing valid follows) from damage in the
/// middle of a segment. Reads the rest of the file into memory, so call it only after a scan
/// failed.
pub(super) fn find_valid_frame_after(
    file: &File,
    after: u64,
    end: u64,
    min_offset: u64,
) -> std::io::Result<Option<u64>> {
    let start = after + 1;
    if end <= start {
        return Ok(None);
    }
    let mut bytes = vec![0_u8; (end - start) as usize];
    file.read_exact_at(&mut bytes, start)?;
    // A frame is at least FRAME_FIXED_LEN bytes, so no later frame can have an offset beyond this.
    let max_offset = min_offset.saturating_add(bytes.len() as u64 / FRAME_FIXED_LEN as u64 + 1);
    for candidate in 0..bytes.len().saturating_sub(FRAME_FIXED_LEN - 1) {
        let fixed = &bytes[candidate..candidate + FRAME_FIXED_LEN];
        let body_len = read_u32(fixed, 0) as usize;
        let offset = read_u64(fixed, FRAME_PREFIX_LEN);
        let plausible = body_len >= BODY_FIXED_LEN
            && candidate + FRAME_PREFIX_LEN + body_len <= bytes.len()
            && (min_offset..=max_offset).contains(&offset)
            && fixed[FRAME_PREFIX_LEN + 16] & !FLAG_HAS_DEDUP_ID == 0;
        if !plausible {
            continue;
        }
        let body = &bytes[candidate + FRAME_PREFIX_LEN..candidate + FRAME_PREFIX_LEN + body_len];
        if crc32fast::hash(body) == read_u32(fixed, 4) {
            return Ok(Some(start + candidate as u64));
        }
    }
    Ok(None)
}

fn too_large(body_len: usize) -> LogError {
    LogError::RecordTooLarge {
        bytes: (body_len + FRAME_PREFIX_LEN) as u64,
        max: MAX_RECORD_BYTES,
    }
}

fn invalid(position: u64, reason: impl Into<String>) -> ScanStep<'static> {
    ScanStep::Invalid {
        position,
        reason: reason.into(),
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0_u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0_u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

fn read_i64(bytes: &[u8], at: usize) -> i64 {
    let mut raw = [0_u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    i64::from_le_bytes(raw)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use bytes::Bytes;

    use super::*;

    fn record(key: &str, dedup_id: Option<&str>, payload: &[u8]) -> Record {
        Record {
            key: key.to_owned(),
            dedup_id: dedup_id.map(str::to_owned),
            timestamp_ms: 1_700_000_000_123,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn header_round_trips_and_detects_damage() {
        let header = SegmentHeader {
            partition: 3,
            base_offset: 42,
            previous_segment_max_timestamp_ms: Some(-5),
        };
        let mut bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        bytes[17] ^= 1;
        assert!(SegmentHeader::decode(&bytes).is_err());
    }

    #[test]
    fn frames_round_trip_in_both_scan_modes() {
        let records = [
            record("user-1", Some("id-1"), b"{\"a\":1}"),
            record("", None, b""),
            record("user-2", Some(""), &[7; 5000]),
        ];
        let mut buffer = Vec::new();
        for (offset, record) in records.iter().enumerate() {
            encode_frame(&mut buffer, offset as u64 + 10, record).unwrap();
        }
        let expected_len: u64 = records
            .iter()
            .map(crate::limits::encoded_record_bytes)
            .sum();
        assert_eq!(buffer.len() as u64, expected_len);

        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&buffer).unwrap();
        for mode in [ScanMode::Verify, ScanMode::HeadersOnly] {
            // A small chunk forces refills in the middle of frames.
            let mut scanner = FrameScanner::new(&file, 0, buffer.len() as u64, mode, 16);
            for (index, original) in records.iter().enumerate() {
                let ScanStep::Frame(frame) = scanner.next_frame().unwrap() else {
                    panic!("expected frame {index}");
                };
                assert_eq!(frame.offset, index as u64 + 10);
                assert_eq!(frame.timestamp_ms, original.timestamp_ms);
                assert_eq!(frame.key, original.key.as_bytes());
                assert_eq!(
                    frame.dedup_id,
                    original.dedup_id.as_deref().map(str::as_bytes)
                );
                match mode {
                    ScanMode::Verify => assert_eq!(frame.payload, Some(&original.payload[..])),
                    ScanMode::HeadersOnly => assert_eq!(frame.payload, None),
                }
            }
            assert!(matches!(scanner.next_frame().unwrap(), ScanStep::End));
        }
    }

    #[test]
    fn damaged_frames_are_invalid_and_later_frames_can_be_found() {
        let mut buffer = Vec::new();
        for offset in 0..3 {
            encode_frame(&mut buffer, offset, &record("k", None, b"payload")).unwrap();
        }
        let frame_len = buffer.len() / 3;
        buffer[frame_len + 20] ^= 0xff;
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&buffer).unwrap();

        let mut scanner = FrameScanner::new(&file, 0, buffer.len() as u64, ScanMode::Verify, 64);
        assert!(matches!(scanner.next_frame().unwrap(), ScanStep::Frame(_)));
        let ScanStep::Invalid { position, reason } = scanner.next_frame().unwrap() else {
            panic!("expected the damaged frame to be invalid");
        };
        assert_eq!(position, frame_len as u64);
        assert!(reason.contains("checksum"), "{reason}");

        let found = find_valid_frame_after(&file, position, buffer.len() as u64, 1).unwrap();
        assert_eq!(found, Some(2 * frame_len as u64));
        let none = find_valid_frame_after(&file, 2 * frame_len as u64, buffer.len() as u64, 3);
        assert_eq!(none.unwrap(), None);
    }
}
