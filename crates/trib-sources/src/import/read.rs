//! Reading an imported file: format and compression detection, the SHA-256 pass, and two
//! streaming row readers with a bounded row size.
//!
//! Both readers work on a fixed-size buffer over any [`Read`] (the file, or a gzip decoder over
//! it) and never hold more than one row: a row longer than the limit (typically an unbalanced
//! quote that swallows the rest of a CSV file) is consumed and reported as too large instead of
//! growing memory. Each reader counts the bytes of the decompressed stream it has consumed, so
//! a checkpoint can name the exact start of the next row, and a resumed import starts a fresh
//! reader there.
//!
//! The CSV reader drives `csv_core` (the parser inside the `csv` crate, RFC 4180: quoted fields,
//! doubled quotes, embedded line breaks, CRLF or LF) directly, because the `csv` crate has no
//! bound on the size of one record.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use csv_core::ReadRecordResult;
use sha2::{Digest, Sha256};

use super::config::FileFormat;
use super::error::ImportError;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
const READ_BUFFER_BYTES: usize = 256 * 1024;
/// The most fields a CSV row may have; more is reported like an overlong row.
const MAX_FIELDS: usize = 16_384;

/// What the engine needs to know about a file before importing it.
#[derive(Debug, Clone)]
pub(crate) struct FileInfo {
    pub(crate) size: u64,
    pub(crate) gzip: bool,
    pub(crate) format: FileFormat,
    /// The default delimiter implied by the name (`\t` for `.tsv`).
    pub(crate) default_delimiter: u8,
    /// Lowercase hex SHA-256 of the file's bytes as stored (compressed, for a `.gz`).
    pub(crate) sha256: String,
}

/// Detects compression and format, and hashes the file.
pub(crate) fn inspect(path: &Path, format: Option<FileFormat>) -> Result<FileInfo, ImportError> {
    let mut file = open_file(path)?;
    let size = file
        .metadata()
        .map_err(|error| ImportError::io(format!("reading the size of {}", path.display()), error))?
        .len();
    let mut magic = [0_u8; 2];
    let magic_len = read_up_to(&mut file, &mut magic)
        .map_err(|error| ImportError::io(format!("reading {}", path.display()), error))?;
    let gzip = magic_len == 2 && magic == GZIP_MAGIC;

    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let (stem, named_gz) = match name.strip_suffix(".gz") {
        Some(stem) => (stem, true),
        None => (name.as_str(), false),
    };
    if named_gz && !gzip {
        return Err(ImportError::NotGzip {
            path: path.to_path_buf(),
        });
    }
    let from_name = if stem.ends_with(".csv") || stem.ends_with(".tsv") {
        Some(FileFormat::Csv)
    } else if stem.ends_with(".ndjson") || stem.ends_with(".jsonl") {
        Some(FileFormat::Ndjson)
    } else {
        None
    };
    let format = format
        .or(from_name)
        .ok_or_else(|| ImportError::UnknownFormat {
            path: path.to_path_buf(),
        })?;
    let default_delimiter = if stem.ends_with(".tsv") { b'\t' } else { b',' };

    file.seek(SeekFrom::Start(0))
        .map_err(|error| ImportError::io(format!("reading {}", path.display()), error))?;
    let sha256 = hash_file(&mut file)
        .map_err(|error| ImportError::io(format!("hashing {}", path.display()), error))?;
    Ok(FileInfo {
        size,
        gzip,
        format,
        default_delimiter,
        sha256,
    })
}

/// Opens `path` for reading, mapping "not found" to its own error.
pub(crate) fn open_file(path: &Path) -> Result<File, ImportError> {
    File::open(path).map_err(|error| {
        if error.kind() == io::ErrorKind::NotFound {
            ImportError::FileNotFound {
                path: path.to_path_buf(),
            }
        } else {
            ImportError::io(format!("opening {}", path.display()), error)
        }
    })
}

/// Opens the decompressed byte stream of the file, positioned at `offset` of that stream.
///
/// `raw_bytes` counts the bytes read from the file itself (for progress).
pub(crate) fn open_stream(
    path: &Path,
    gzip: bool,
    offset: u64,
    raw_bytes: Arc<AtomicU64>,
) -> Result<Box<dyn Read + Send>, ImportError> {
    let mut file = open_file(path)?;
    let reading = |error| ImportError::io(format!("reading {}", path.display()), error);
    if !gzip {
        file.seek(SeekFrom::Start(offset)).map_err(reading)?;
        raw_bytes.store(offset, Ordering::Relaxed);
        return Ok(Box::new(CountingReader {
            inner: file,
            count: raw_bytes,
        }));
    }
    let counting = CountingReader {
        inner: file,
        count: raw_bytes,
    };
    let mut decoder: Box<dyn Read + Send> = Box::new(flate2::read::MultiGzDecoder::new(
        io::BufReader::with_capacity(READ_BUFFER_BYTES, counting),
    ));
    if offset > 0 {
        // A gzip stream cannot seek: decompress and discard up to the checkpoint.
        let skipped =
            io::copy(&mut decoder.as_mut().take(offset), &mut io::sink()).map_err(reading)?;
        if skipped != offset {
            return Err(ImportError::Internal(format!(
                "the checkpoint offset {offset} is past the end of {} ({skipped} bytes)",
                path.display()
            )));
        }
    }
    Ok(decoder)
}

/// Returns the lowercase hex SHA-256 of everything `reader` yields.
fn hash_file(reader: &mut impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0_u8; 1024 * 1024];
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..n]);
    }
    Ok(to_hex(&hasher.finalize()))
}

/// Lowercase hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
}

fn read_up_to(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Counts the bytes read through it into a shared counter.
struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A fixed-size read buffer over a stream, counting consumed bytes.
struct Input {
    inner: Box<dyn Read + Send>,
    buffer: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
    /// Bytes of the stream consumed so far, including the offset the stream started at.
    offset: u64,
}

impl Input {
    fn new(inner: Box<dyn Read + Send>, offset: u64) -> Self {
        Self {
            inner,
            buffer: vec![0_u8; READ_BUFFER_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            offset,
        }
    }

    /// Returns the unconsumed bytes, reading more when none are left; empty means the end.
    fn fill(&mut self) -> io::Result<&[u8]> {
        if self.start == self.end && !self.eof {
            self.start = 0;
            self.end = 0;
            loop {
                match self.inner.read(&mut self.buffer) {
                    Ok(0) => {
                        self.eof = true;
                        break;
                    }
                    Ok(n) => {
                        self.end = n;
                        break;
                    }
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(&self.buffer[self.start..self.end])
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.offset += n as u64;
    }
}

/// What one call to a reader found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadOutcome {
    /// A row; its content is in the reader.
    Row,
    /// A row longer than the limit was consumed; its content is not kept (only its prefix).
    TooLarge,
    /// The end of the stream.
    End,
}

/// An RFC 4180 CSV reader that reads one row at a time into reusable buffers.
pub(crate) struct CsvReader {
    input: Input,
    core: csv_core::Reader,
    /// The unescaped bytes of the current row's fields, back to back.
    fields: Vec<u8>,
    /// The end of each field in `fields`.
    ends: Vec<usize>,
    n_fields: usize,
    max_row_bytes: usize,
}

impl CsvReader {
    /// Starts reading `stream` (which is at byte `offset` of the decompressed file); a UTF-8
    /// byte order mark at offset 0 is skipped.
    pub(crate) fn new(
        stream: Box<dyn Read + Send>,
        offset: u64,
        delimiter: u8,
        max_row_bytes: usize,
    ) -> io::Result<Self> {
        let input = if offset == 0 {
            let mut stream = stream;
            let mut head = [0_u8; 3];
            let head_len = read_up_to(&mut stream, &mut head)?;
            if head[..head_len] == *UTF8_BOM {
                Input::new(stream, UTF8_BOM.len() as u64)
            } else {
                let replay = io::Cursor::new(head[..head_len].to_vec());
                Input::new(Box::new(replay.chain(stream)), 0)
            }
        } else {
            Input::new(stream, offset)
        };
        let core = csv_core::ReaderBuilder::new().delimiter(delimiter).build();
        let max_row_bytes = max_row_bytes.max(1);
        Ok(Self {
            input,
            core,
            fields: vec![0; max_row_bytes.min(4096)],
            ends: vec![0; 64],
            n_fields: 0,
            max_row_bytes,
        })
    }

    /// Reads the next row. Blank lines are skipped, as RFC 4180 readers do.
    pub(crate) fn read_row(&mut self) -> io::Result<ReadOutcome> {
        let mut out_len = 0;
        let mut n_ends = 0;
        let mut too_large = false;
        loop {
            let input = self.input.fill()?;
            let (result, n_in, n_out, n_end) =
                self.core
                    .read_record(input, &mut self.fields[out_len..], &mut self.ends[n_ends..]);
            self.input.consume(n_in);
            out_len += n_out;
            n_ends += n_end;
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    if too_large || self.fields.len() >= self.max_row_bytes {
                        too_large = true;
                        out_len = 0;
                        n_ends = 0;
                    } else {
                        let grown = (self.fields.len() * 2).min(self.max_row_bytes);
                        self.fields.resize(grown, 0);
                    }
                }
                ReadRecordResult::OutputEndsFull => {
                    if too_large || self.ends.len() >= MAX_FIELDS {
                        too_large = true;
                        out_len = 0;
                        n_ends = 0;
                    } else {
                        let grown = (self.ends.len() * 2).min(MAX_FIELDS);
                        self.ends.resize(grown, 0);
                    }
                }
                ReadRecordResult::Record => {
                    if too_large {
                        self.n_fields = 0;
                        return Ok(ReadOutcome::TooLarge);
                    }
                    self.n_fields = n_ends;
                    return Ok(ReadOutcome::Row);
                }
                ReadRecordResult::End => {
                    self.n_fields = 0;
                    return Ok(ReadOutcome::End);
                }
            }
        }
    }

    /// The number of fields of the current row.
    pub(crate) fn len(&self) -> usize {
        self.n_fields
    }

    /// Field `index` of the current row.
    pub(crate) fn field(&self, index: usize) -> &[u8] {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.fields[start..self.ends[index]]
    }

    /// The byte offset (in the decompressed stream) where the next row starts.
    pub(crate) fn offset(&self) -> u64 {
        self.input.offset
    }
}

/// A reader of `\n`-terminated lines (a trailing `\r` is removed), for NDJSON.
pub(crate) struct LineReader {
    input: Input,
    line: Vec<u8>,
    max_row_bytes: usize,
}

impl LineReader {
    /// Starts reading `stream`, which is at byte `offset` of the decompressed file.
    pub(crate) fn new(stream: Box<dyn Read + Send>, offset: u64, max_row_bytes: usize) -> Self {
        Self {
            input: Input::new(stream, offset),
            line: Vec::with_capacity(4096),
            max_row_bytes: max_row_bytes.max(1),
        }
    }

    /// Reads the next line, blank or not; a too-long line keeps only its first bytes.
    pub(crate) fn read_line(&mut self) -> io::Result<ReadOutcome> {
        self.line.clear();
        let mut too_large = false;
        let mut read_any = false;
        loop {
            let available = self.input.fill()?;
            if available.is_empty() {
                if !read_any {
                    return Ok(ReadOutcome::End);
                }
                break;
            }
            read_any = true;
            let (chunk_len, found) = match memchr::memchr(b'\n', available) {
                Some(newline) => (newline, true),
                None => (available.len(), false),
            };
            let room = self.max_row_bytes.saturating_sub(self.line.len());
            if chunk_len > room {
                too_large = true;
            }
            self.line
                .extend_from_slice(&available[..chunk_len.min(room)]);
            self.input.consume(chunk_len + usize::from(found));
            if found {
                break;
            }
        }
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        Ok(if too_large {
            ReadOutcome::TooLarge
        } else {
            ReadOutcome::Row
        })
    }

    /// The current line, without its line break (a prefix, after [`ReadOutcome::TooLarge`]).
    pub(crate) fn line(&self) -> &[u8] {
        &self.line
    }

    /// The byte offset (in the decompressed stream) where the next line starts.
    pub(crate) fn offset(&self) -> u64 {
        self.input.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_rows(text: &[u8], delimiter: u8, max: usize) -> Vec<Result<Vec<String>, ReadOutcome>> {
        let mut reader =
            CsvReader::new(Box::new(io::Cursor::new(text.to_vec())), 0, delimiter, max).unwrap();
        let mut rows = Vec::new();
        loop {
            match reader.read_row().unwrap() {
                ReadOutcome::End => return rows,
                ReadOutcome::TooLarge => rows.push(Err(ReadOutcome::TooLarge)),
                ReadOutcome::Row => rows.push(Ok((0..reader.len())
                    .map(|index| String::from_utf8_lossy(reader.field(index)).into_owned())
                    .collect())),
            }
        }
    }

    #[test]
    fn csv_reader_handles_quotes_newlines_bom_and_crlf() {
        let rows = csv_rows(
            b"\xEF\xBB\xBFa,b\r\n\"x, y\",\"line1\nline2\"\r\n\n\"say \"\"hi\"\"\",2",
            b',',
            1024,
        );
        assert_eq!(
            rows,
            vec![
                Ok(vec!["a".to_owned(), "b".to_owned()]),
                Ok(vec!["x, y".to_owned(), "line1\nline2".to_owned()]),
                Ok(vec!["say \"hi\"".to_owned(), "2".to_owned()]),
            ]
        );
    }

    #[test]
    fn csv_reader_reports_a_row_over_the_limit_and_goes_on() {
        let long = "z".repeat(100);
        let text = format!("a;b\n{long};1\nc;d\n");
        let rows = csv_rows(text.as_bytes(), b';', 50);
        assert_eq!(
            rows,
            vec![
                Ok(vec!["a".to_owned(), "b".to_owned()]),
                Err(ReadOutcome::TooLarge),
                Ok(vec!["c".to_owned(), "d".to_owned()]),
            ]
        );
    }

    #[test]
    fn csv_reader_offsets_resume_at_the_next_row() {
        let text = b"h1,h2\n1,\"a\nb\"\n2,c\n";
        let mut reader =
            CsvReader::new(Box::new(io::Cursor::new(text.to_vec())), 0, b',', 1024).unwrap();
        assert_eq!(reader.read_row().unwrap(), ReadOutcome::Row);
        assert_eq!(reader.read_row().unwrap(), ReadOutcome::Row);
        let offset = reader.offset();
        assert_eq!(&text[offset as usize..], b"2,c\n");
    }

    #[test]
    fn line_reader_splits_lines_and_bounds_them() {
        let text = b"{\"a\":1}\r\n\n0123456789abcdef\nlast";
        let mut reader = LineReader::new(Box::new(io::Cursor::new(text.to_vec())), 0, 10);
        assert_eq!(reader.read_line().unwrap(), ReadOutcome::Row);
        assert_eq!(reader.line(), b"{\"a\":1}");
        assert_eq!(reader.read_line().unwrap(), ReadOutcome::Row);
        assert_eq!(reader.line(), b"");
        assert_eq!(reader.read_line().unwrap(), ReadOutcome::TooLarge);
        assert_eq!(reader.line(), b"0123456789");
        assert_eq!(reader.read_line().unwrap(), ReadOutcome::Row);
        assert_eq!(reader.line(), b"last");
        assert_eq!(reader.offset(), text.len() as u64);
        assert_eq!(reader.read_line().unwrap(), ReadOutcome::End);
    }
}
