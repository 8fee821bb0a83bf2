//! The import pipeline: a blocking reader thread, converter threads, and the async appender.
//!
//! ```text
//!  reader thread (spawn_blocking)      converter threads (N)          import_file (async)
//!  file → gunzip → CSV/lines ──chunk──▶ row → Event → gate → JSON ──batch──▶ reorder by seq
//!  (one row at a time, bounded)   (sync_channel(1) each, round robin)  (bounded mpsc)
//!                                                                      append events ‖ quarantine
//!                                                                      checkpoint, progress
//! ```
//!
//! Memory is bounded by the number of chunks in flight (two per converter plus the channel),
//! each at most `batch_rows` rows and about [`MAX_CHUNK_BYTES`], and records carry no log
//! deduplication id, so the log's in-memory deduplication index does not grow with the file
//! either. Batches are appended in file order, and the checkpoint written after a batch's
//! appends have returned names the first row of the next batch, so a resumed run never skips a
//! row. Before its first append a run writes a checkpoint durably; every checkpoint also names
//! the log offsets from which later rows can have been appended (taken before the appends of
//! the batch it follows), and a resumed run scans the logs from there (`resume`) and skips the
//! rows it finds, so no row is appended twice.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use jiff::Timestamp;
use serde_json::value::RawValue;
use trib_core::{EventGate, QuarantinedMessage};
use trib_log::{AppendOutcome, EventLog, LogError, Record};

use super::config::{FileFormat, ImportMapping, parse_delimiter};
use super::convert::{Caches, CsvRow, Plan, Problem, RowInput, csv_row_json, line_json};
use super::error::ImportError;
use super::read::{self, CsvReader, FileInfo, LineReader, ReadOutcome};
use super::report::{ImportReport, Progress};
use super::resume::{self, Handled, ScanTarget};
use super::state::{Checkpoint, Counts, LogPositions, StatePaths};

/// A chunk is sent once its rows hold this many bytes, even with fewer than `batch_rows` rows.
const MAX_CHUNK_BYTES: usize = 8 * 1024 * 1024;
/// How long an overloaded log is retried before the import gives up (and can be resumed).
const OVERLOAD_PATIENCE: Duration = Duration::from_secs(300);
/// Progress is reported at least this often...
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// ...or after this many rows, whichever comes first.
const PROGRESS_ROWS: u64 = 50_000;
/// Batches appended concurrently, so that one fsync can cover several of them.
const APPENDS_IN_FLIGHT: usize = 3;

/// Everything one import run needs. Build it with [`ImportOptions::new`] and adjust the public
/// fields.
#[non_exhaustive]
pub struct ImportOptions<'a> {
    /// The source the rows are imported into: it goes into every event, and deduplication is
    /// per source (as for the HTTP API).
    pub source: &'a str,
    pub mapping: &'a ImportMapping,
    /// Options of the `normalize` rules (default phone region, ...).
    pub normalize: &'a trib_normalize::Options,
    /// The checks every event passes before storage; shared with the converter threads.
    pub gate: Arc<dyn EventGate>,
    /// Where accepted rows go.
    pub events: &'a dyn EventLog,
    /// Where refused rows go.
    pub quarantine: &'a dyn EventLog,
    /// The import state directory, `<data_dir>/imports`: ledger, checkpoints, locks.
    pub state_dir: &'a Path,
    /// Called every ~50,000 rows or 250 ms (on the calling task: keep it cheap), and once at
    /// the end.
    pub progress: Option<&'a (dyn Fn(&Progress) + Sync)>,
    /// Rows per append call (and per checkpoint). Default 5,000.
    pub batch_rows: usize,
    /// Converter threads; 0 means one per available CPU (at most 8). Default 0.
    pub workers: usize,
    /// The longest row (CSV record or NDJSON line) in bytes; a longer one is quarantined
    /// (`row_too_large`) without being kept in memory. Default 1 MiB.
    pub max_row_bytes: usize,
    /// Imports a file again even though the ledger says it was imported completely (after
    /// the log was restored from an older backup, say). Rows keep their messageIds, and the
    /// whole event log and quarantine are read first: rows of this file that either already
    /// holds are skipped, so only missing rows are stored. Reading both logs whole makes this
    /// slow on a large log. Default false.
    pub reimport: bool,
    /// Stops after this many rows of this run, exactly as an interruption would (a checkpoint
    /// is left and the report says `completed: false`). For tests and trial runs.
    pub stop_after_rows: Option<u64>,
}

impl<'a> ImportOptions<'a> {
    /// Options with the defaults for the tuning fields.
    pub fn new(
        source: &'a str,
        mapping: &'a ImportMapping,
        normalize: &'a trib_normalize::Options,
        gate: Arc<dyn EventGate>,
        events: &'a dyn EventLog,
        quarantine: &'a dyn EventLog,
        state_dir: &'a Path,
    ) -> Self {
        Self {
            source,
            mapping,
            normalize,
            gate,
            events,
            quarantine,
            state_dir,
            progress: None,
            batch_rows: 5_000,
            workers: 0,
            max_row_bytes: 1024 * 1024,
            reimport: false,
            stop_after_rows: None,
        }
    }
}

/// Imports one file: every row becomes an event in `options.events` or a quarantined record in
/// `options.quarantine`, and the report accounts for each.
///
/// File-level problems (missing file, unknown format, bad header, a mapped column missing)
/// fail before anything is appended. Re-importing a completed file stores nothing and says so
/// (`already_imported`); an interrupted import resumes from its checkpoint.
pub async fn import_file(
    options: &ImportOptions<'_>,
    path: &Path,
) -> Result<ImportReport, ImportError> {
    let started = Instant::now();
    let problems = options.mapping.validate();
    if !problems.is_empty() {
        return Err(ImportError::InvalidMapping {
            problems: problems
                .into_iter()
                .map(|(path, message)| format!("{path}: {message}"))
                .collect(),
        });
    }
    let setup = Setup {
        path: path.to_path_buf(),
        source: options.source.to_owned(),
        mapping: options.mapping.clone(),
        normalize: options.normalize.clone(),
        state_dir: options.state_dir.to_path_buf(),
        reimport: options.reimport,
        max_row_bytes: options.max_row_bytes,
        received_at: Timestamp::now(),
    };
    let ready = match run_blocking(move || prepare(setup)).await? {
        Prepared::AlreadyImported { info, previous } => {
            tracing::info!(
                source = options.source,
                file = %path.display(),
                sha256 = %info.sha256,
                rows = previous.rows_read,
                "file was already imported completely, nothing to do"
            );
            return Ok(already_imported_report(
                options.source,
                path,
                &info,
                previous,
                started.elapsed(),
            ));
        }
        Prepared::Ready(ready) => ready,
    };
    run(options, path, *ready, started).await
}

/// What the blocking preparation needs, owned.
struct Setup {
    path: PathBuf,
    source: String,
    mapping: ImportMapping,
    normalize: trib_normalize::Options,
    state_dir: PathBuf,
    reimport: bool,
    max_row_bytes: usize,
    received_at: Timestamp,
}

enum Prepared {
    AlreadyImported {
        info: FileInfo,
        previous: Box<ImportReport>,
    },
    Ready(Box<Ready>),
}

/// A file that is hashed, locked, checked and positioned at its first row to read.
struct Ready {
    info: FileInfo,
    paths: Arc<StatePaths>,
    /// Held until the import returns.
    _lock: File,
    checkpoint: Option<Checkpoint>,
    plan: Arc<Plan>,
    reader: RowReader,
    first_row: u64,
    /// Where `first_row` starts in the decompressed stream.
    first_offset: u64,
    raw_bytes: Arc<AtomicU64>,
}

enum RowReader {
    Csv(Box<CsvReader>),
    Lines(LineReader),
}

/// Hashes the file, takes the lock, reads the ledger, checkpoint and header, and opens the
/// row reader at the right place. Blocking.
fn prepare(setup: Setup) -> Result<Prepared, ImportError> {
    let Setup {
        path,
        source,
        mapping,
        normalize,
        state_dir,
        reimport,
        max_row_bytes,
        received_at,
    } = setup;
    let info = read::inspect(&path, mapping.format)?;
    let paths = StatePaths::new(&state_dir, &source, &info.sha256);
    let lock = paths.lock()?.ok_or_else(|| ImportError::InProgress {
        path: path.clone(),
        source_name: source.clone(),
    })?;
    if !reimport && let Some(previous) = paths.read_ledger() {
        return Ok(Prepared::AlreadyImported {
            info,
            previous: Box::new(previous),
        });
    }
    let checkpoint = paths.read_checkpoint(&source, &info.sha256)?;
    let raw_bytes = Arc::new(AtomicU64::new(0));
    let resume_offset = checkpoint
        .as_ref()
        .map_or(0, |checkpoint| checkpoint.offset);

    let (plan, reader, first_row, first_offset) = match info.format {
        FileFormat::Csv => {
            let delimiter = match &mapping.delimiter {
                Some(delimiter) => {
                    parse_delimiter(delimiter).map_err(|message| ImportError::InvalidMapping {
                        problems: vec![format!("delimiter: {message}")],
                    })?
                }
                None => info.default_delimiter,
            };
            let stream = read::open_stream(&path, info.gzip, 0, Arc::clone(&raw_bytes))?;
            let mut reader = CsvReader::new(stream, 0, delimiter, max_row_bytes)
                .map_err(|error| read_error(&path, 0, error))?;
            let header = read_header(&mut reader, &path)?;
            let data_offset = reader.offset();
            let plan = Plan::compile(
                &mapping,
                &source,
                &normalize,
                Some(&header),
                &path,
                &info.sha256,
                received_at,
            )?;
            let reader = match &checkpoint {
                Some(checkpoint) => {
                    let stream = read::open_stream(
                        &path,
                        info.gzip,
                        checkpoint.offset,
                        Arc::clone(&raw_bytes),
                    )?;
                    CsvReader::new(stream, resume_offset, delimiter, max_row_bytes)
                        .map_err(|error| read_error(&path, checkpoint.next_row, error))?
                }
                None => reader,
            };
            // The header is row 1, as in a spreadsheet.
            (plan, RowReader::Csv(Box::new(reader)), 2, data_offset)
        }
        FileFormat::Ndjson => {
            let plan = Plan::compile(
                &mapping,
                &source,
                &normalize,
                None,
                &path,
                &info.sha256,
                received_at,
            )?;
            let stream =
                read::open_stream(&path, info.gzip, resume_offset, Arc::clone(&raw_bytes))?;
            let reader = LineReader::new(stream, resume_offset, max_row_bytes);
            (plan, RowReader::Lines(reader), 1, 0)
        }
    };
    let (first_row, first_offset) = checkpoint
        .as_ref()
        .map_or((first_row, first_offset), |checkpoint| {
            (checkpoint.next_row, checkpoint.offset)
        });
    Ok(Prepared::Ready(Box::new(Ready {
        info,
        paths: Arc::new(paths),
        _lock: lock,
        checkpoint,
        plan: Arc::new(plan),
        reader,
        first_row,
        first_offset,
        raw_bytes,
    })))
}

/// Reads and checks the CSV header row.
fn read_header(reader: &mut CsvReader, path: &Path) -> Result<Vec<String>, ImportError> {
    match reader.read_row() {
        Ok(ReadOutcome::Row) => {}
        Ok(ReadOutcome::End) => {
            return Err(ImportError::MissingHeader {
                path: path.to_path_buf(),
            });
        }
        Ok(ReadOutcome::TooLarge) => {
            return Err(ImportError::InvalidHeader {
                path: path.to_path_buf(),
                reason: "it is longer than the row size limit".to_owned(),
            });
        }
        Err(error) => return Err(read_error(path, 0, error)),
    }
    let mut header = Vec::with_capacity(reader.len());
    for index in 0..reader.len() {
        let name =
            std::str::from_utf8(reader.field(index)).map_err(|_| ImportError::InvalidHeader {
                path: path.to_path_buf(),
                reason: format!("column {} is not valid UTF-8", index + 1),
            })?;
        if !name.trim().is_empty() && header.iter().any(|seen: &String| seen == name) {
            return Err(ImportError::InvalidHeader {
                path: path.to_path_buf(),
                reason: format!("the column name `{name}` appears twice"),
            });
        }
        header.push(name.to_owned());
    }
    Ok(header)
}

fn read_error(path: &Path, row: u64, source: std::io::Error) -> ImportError {
    ImportError::Read {
        path: path.to_path_buf(),
        row,
        source,
    }
}

fn already_imported_report(
    source: &str,
    path: &Path,
    info: &FileInfo,
    mut previous: Box<ImportReport>,
    elapsed: Duration,
) -> ImportReport {
    previous.previous = None;
    ImportReport {
        source: source.to_owned(),
        file: path.display().to_string(),
        sha256: info.sha256.clone(),
        format: info.format,
        gzip: info.gzip,
        rows_read: previous.rows_read,
        accepted: 0,
        quarantined: 0,
        duplicates_skipped: previous.rows_read,
        erased_skipped: 0,
        by_reason: BTreeMap::new(),
        fields_dropped: BTreeMap::new(),
        resumed_from_row: None,
        already_imported: true,
        previous: Some(previous),
        completed: true,
        elapsed,
    }
}

/// Rows read by the reader thread, waiting for a converter.
struct RawChunk {
    seq: u64,
    bytes: Vec<u8>,
    ends: Vec<usize>,
    rows: Vec<RawRow>,
    /// The row number and stream offset of the row after this chunk.
    next_row: u64,
    offset: u64,
    /// File bytes read when the chunk was complete.
    raw_bytes: u64,
}

struct RawRow {
    number: u64,
    kind: RawKind,
    start: usize,
    /// The row's field ends (CSV) or its one end (a line) in `RawChunk::ends`.
    ends: std::ops::Range<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RawKind {
    Csv,
    Line,
    TooLarge,
}

/// Converted rows, ready to append.
struct Batch {
    seq: u64,
    events: EncodedRecords,
    /// For each event, the fields dropped from it.
    event_drops: Vec<Vec<String>>,
    quarantine: EncodedRecords,
    /// For each quarantined record, its code.
    quarantine_codes: Vec<String>,
    /// Rows left out because the logs already hold them (see `resume`).
    skipped: u64,
    next_row: u64,
    offset: u64,
    raw_bytes: u64,
}

enum Message {
    Batch(Batch),
    /// The reader failed after the chunks before `seq`.
    Failed {
        seq: u64,
        error: ImportError,
    },
}

impl Message {
    fn seq(&self) -> u64 {
        match self {
            Message::Batch(batch) => batch.seq,
            Message::Failed { seq, .. } => *seq,
        }
    }
}

impl RawChunk {
    fn new(seq: u64) -> Self {
        Self {
            seq,
            bytes: Vec::new(),
            ends: Vec::new(),
            rows: Vec::new(),
            next_row: 0,
            offset: 0,
            raw_bytes: 0,
        }
    }

    /// An empty chunk with room for a little more than `previous` holds, so that it rarely
    /// grows.
    fn sized_like(seq: u64, previous: &RawChunk) -> Self {
        let room = |len: usize| len + len / 8;
        Self {
            bytes: Vec::with_capacity(room(previous.bytes.len())),
            ends: Vec::with_capacity(room(previous.ends.len())),
            rows: Vec::with_capacity(previous.rows.len()),
            ..Self::new(seq)
        }
    }
}

/// The settings of the reader thread.
struct ReaderSettings {
    path: PathBuf,
    first_row: u64,
    batch_rows: usize,
    workers: usize,
    stop_after_rows: Option<u64>,
    raw_bytes: Arc<AtomicU64>,
}

async fn run(
    options: &ImportOptions<'_>,
    path: &Path,
    ready: Ready,
    started: Instant,
) -> Result<ImportReport, ImportError> {
    let Ready {
        info,
        paths,
        _lock,
        checkpoint,
        plan,
        reader,
        first_row,
        first_offset,
        raw_bytes,
    } = ready;
    let resumed_from_row = checkpoint.as_ref().map(|_| first_row);
    tracing::info!(
        source = options.source,
        file = %path.display(),
        sha256 = %info.sha256,
        format = info.format.as_str(),
        gzip = info.gzip,
        resumed_from_row,
        reimport = options.reimport,
        "importing file"
    );

    // The rows of this file the logs already hold: those an interrupted run appended after its
    // checkpoint, or for a re-import every one. `scan_base` is where they were looked for.
    let scan_base: Option<LogPositions> = match &checkpoint {
        Some(checkpoint) => Some(checkpoint.scan_from.clone().unwrap_or_default()),
        None if options.reimport => Some(LogPositions::default()),
        None => None,
    };
    let handled = match &scan_base {
        Some(from) => {
            let scan_started = Instant::now();
            let target = ScanTarget {
                source: options.source,
                message_id_prefix: plan.message_id_prefix(),
                first_row,
            };
            let (handled, records_read) =
                resume::scan(options.events, options.quarantine, Some(from), &target).await?;
            tracing::info!(
                source = options.source,
                file = %path.display(),
                records_read,
                rows_found = handled.len(),
                elapsed_ms = scan_started.elapsed().as_millis() as u64,
                "scanned the logs for rows this file already stored"
            );
            handled
        }
        None => Handled::new(first_row),
    };
    let handled = Arc::new(handled);
    let scan_base = scan_base.unwrap_or_default();
    // A checkpoint's scan positions: the batch's own, unless rows found by the scan lie ahead
    // (they were appended before those positions), in which case the scan's base.
    let scan_from_for = |next_row: u64, batch_positions: LogPositions| {
        if handled.any_from(next_row) {
            scan_base.clone()
        } else {
            batch_positions
        }
    };
    let mut counts = match checkpoint {
        Some(checkpoint) => checkpoint.counts,
        None => {
            // Before the first append, so that a crash at any later point leaves a checkpoint
            // whose scan finds every row appended.
            let positions = resume::end_positions(options.events, options.quarantine).await?;
            let initial = Checkpoint::new(
                options.source,
                &info.sha256,
                first_row,
                first_offset,
                Counts::default(),
                scan_from_for(first_row, positions),
            );
            let initial_paths = Arc::clone(&paths);
            run_blocking(move || initial_paths.write_checkpoint(&initial, true)).await?;
            Counts::default()
        }
    };

    let workers = if options.workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
    } else {
        options.workers
    };
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Message>(workers * 2 + 2);
    let settings = ReaderSettings {
        path: path.to_path_buf(),
        first_row,
        batch_rows: options.batch_rows.max(1),
        workers,
        stop_after_rows: options.stop_after_rows,
        raw_bytes: Arc::clone(&raw_bytes),
    };
    let gate = Arc::clone(&options.gate);
    let reader_plan = Arc::clone(&plan);
    let reader_handled = Arc::clone(&handled);
    let reader_task = tokio::task::spawn_blocking(move || {
        read_and_convert(reader, settings, reader_plan, reader_handled, gate, sender)
    });

    let mut progress = ProgressTracker::new(options.progress, info.size);
    let mut pending: BTreeMap<u64, Message> = BTreeMap::new();
    let mut next_seq = 0_u64;
    let mut in_flight = InFlight::default();
    let mut checkpointer = Checkpointer::new(Arc::clone(&paths));
    let mut receiving = true;
    let mut reader_failure = None;
    let appended: Result<(), ImportError> = async {
        loop {
            if !receiving && in_flight.is_empty() {
                return Ok(());
            }
            tokio::select! {
                biased;
                done = in_flight.next_done(), if !in_flight.is_empty() => {
                    let mut appended = done?;
                    let (next_row, offset, batch_raw_bytes) =
                        (appended.next_row, appended.offset, appended.raw_bytes);
                    let positions = std::mem::take(&mut appended.scan_from);
                    appended.count(&mut counts)?;
                    counts.check()?;
                    checkpointer
                        .offer(Checkpoint::new(
                            options.source,
                            &info.sha256,
                            next_row,
                            offset,
                            counts.clone(),
                            scan_from_for(next_row, positions),
                        ))
                        .await?;
                    progress.update(counts.rows_read, batch_raw_bytes, false);
                }
                message = next_in_order(&mut receiver, &mut pending, &mut next_seq),
                    if receiving && in_flight.len() < APPENDS_IN_FLIGHT =>
                {
                    match message {
                        Ok(Some(batch)) => in_flight.push(Box::pin(append_batch(options, batch))),
                        Ok(None) => receiving = false,
                        Err(error) => {
                            // Finish the appends already started, so the checkpoint covers them.
                            reader_failure = Some(error);
                            receiving = false;
                        }
                    }
                }
            }
        }
    }
    .await;
    // Stop the reader and converters (they notice the closed channel) and wait for them.
    drop(receiver);
    drop(in_flight);
    let reached_end = reader_task
        .await
        .map_err(|error| ImportError::Internal(format!("the reader thread failed: {error}")))?;
    let checkpointed = checkpointer.finish().await;
    appended?;
    checkpointed?;
    if let Some(error) = reader_failure {
        return Err(error);
    }
    let reached_end = reached_end?;
    progress.update(counts.rows_read, raw_bytes.load(Ordering::Relaxed), true);

    counts.check()?;
    let report = ImportReport {
        source: options.source.to_owned(),
        file: path.display().to_string(),
        sha256: info.sha256.clone(),
        format: info.format,
        gzip: info.gzip,
        rows_read: counts.rows_read,
        accepted: counts.accepted,
        quarantined: counts.quarantined,
        duplicates_skipped: counts.duplicates_skipped,
        erased_skipped: counts.erased_skipped,
        by_reason: counts.by_reason,
        fields_dropped: counts.fields_dropped,
        resumed_from_row,
        already_imported: false,
        previous: None,
        completed: reached_end,
        elapsed: started.elapsed(),
    };
    if reached_end {
        let ledger = report.clone();
        let ledger_paths = Arc::clone(&paths);
        run_blocking(move || ledger_paths.write_ledger(&ledger)).await?;
    }
    tracing::info!(
        source = options.source,
        file = %path.display(),
        rows_read = report.rows_read,
        accepted = report.accepted,
        quarantined = report.quarantined,
        duplicates_skipped = report.duplicates_skipped,
        completed = report.completed,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "import finished"
    );
    Ok(report)
}

/// Appends one batch to both logs.
async fn append_batch(options: &ImportOptions<'_>, batch: Batch) -> Result<Appended, ImportError> {
    // Taken before the appends: every record of this batch and of later ones lands at or after
    // these offsets.
    let scan_from = resume::end_positions(options.events, options.quarantine).await?;
    let n_events = batch.events.len();
    let n_quarantined = batch.quarantine.len();
    let (event_outcomes, quarantine_outcomes) = tokio::try_join!(
        append_patiently(options.events, &batch.events, "event log"),
        append_patiently(options.quarantine, &batch.quarantine, "quarantine"),
    )?;
    if event_outcomes.len() != n_events || quarantine_outcomes.len() != n_quarantined {
        return Err(ImportError::Internal(
            "the log answered a different number of outcomes than records appended".to_owned(),
        ));
    }
    Ok(Appended {
        event_outcomes,
        event_drops: batch.event_drops,
        quarantine_outcomes,
        quarantine_codes: batch.quarantine_codes,
        skipped: batch.skipped,
        next_row: batch.next_row,
        offset: batch.offset,
        raw_bytes: batch.raw_bytes,
        scan_from,
    })
}

/// A batch whose appends have returned: durable.
struct Appended {
    event_outcomes: Vec<AppendOutcome>,
    event_drops: Vec<Vec<String>>,
    quarantine_outcomes: Vec<AppendOutcome>,
    quarantine_codes: Vec<String>,
    /// Rows not appended because the logs already held them.
    skipped: u64,
    next_row: u64,
    offset: u64,
    raw_bytes: u64,
    /// The logs' end offsets before this batch was appended.
    scan_from: LogPositions,
}

impl Appended {
    /// Adds the outcomes to the counts.
    fn count(self, counts: &mut Counts) -> Result<(), ImportError> {
        let rows =
            (self.event_outcomes.len() + self.quarantine_outcomes.len()) as u64 + self.skipped;
        counts.duplicates_skipped += self.skipped;
        for (outcome, drops) in self.event_outcomes.iter().zip(self.event_drops) {
            match outcome {
                AppendOutcome::Stored { .. } => {
                    counts.accepted += 1;
                    for drop in drops {
                        *counts.fields_dropped.entry(drop).or_default() += 1;
                    }
                }
                AppendOutcome::Duplicate => counts.duplicates_skipped += 1,
                AppendOutcome::Erased => counts.erased_skipped += 1,
            }
        }
        for (outcome, code) in self.quarantine_outcomes.iter().zip(self.quarantine_codes) {
            match outcome {
                AppendOutcome::Stored { .. } => {
                    counts.quarantined += 1;
                    *counts.by_reason.entry(code).or_default() += 1;
                }
                AppendOutcome::Duplicate => counts.duplicates_skipped += 1,
                AppendOutcome::Erased => counts.erased_skipped += 1,
            }
        }
        counts.rows_read += rows;
        counts.check()
    }
}

type Appending<'a> = Pin<Box<dyn Future<Output = Result<Appended, ImportError>> + Send + 'a>>;

/// Appends in flight, oldest first. All of them are polled, so a durable log can commit them
/// in one group; they complete in order of submission to the caller.
#[derive(Default)]
struct InFlight<'a> {
    queue: VecDeque<(Appending<'a>, Option<Result<Appended, ImportError>>)>,
}

impl<'a> InFlight<'a> {
    fn push(&mut self, appending: Appending<'a>) {
        self.queue.push_back((appending, None));
    }

    fn len(&self) -> usize {
        self.queue.len()
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Waits for the oldest append, driving the others meanwhile. Cancel safe: results are
    /// kept in the queue.
    async fn next_done(&mut self) -> Result<Appended, ImportError> {
        std::future::poll_fn(|context| {
            for (appending, result) in &mut self.queue {
                if result.is_none()
                    && let Poll::Ready(done) = appending.as_mut().poll(context)
                {
                    *result = Some(done);
                }
            }
            match self.queue.front_mut() {
                Some((_, result)) if result.is_some() => {
                    let result = self.queue.pop_front().and_then(|(_, result)| result);
                    Poll::Ready(result.unwrap_or_else(|| {
                        Err(ImportError::Internal(
                            "an append result went missing".to_owned(),
                        ))
                    }))
                }
                Some(_) => Poll::Pending,
                None => Poll::Ready(Err(ImportError::Internal(
                    "waited for an append with none in flight".to_owned(),
                ))),
            }
        })
        .await
    }
}

/// Returns the next batch in file order; `None` once every sender is gone. Cancel safe.
async fn next_in_order(
    receiver: &mut tokio::sync::mpsc::Receiver<Message>,
    pending: &mut BTreeMap<u64, Message>,
    next_seq: &mut u64,
) -> Result<Option<Batch>, ImportError> {
    loop {
        if let Some(message) = pending.remove(next_seq) {
            *next_seq += 1;
            return match message {
                Message::Batch(batch) => Ok(Some(batch)),
                Message::Failed { error, .. } => Err(error),
            };
        }
        match receiver.recv().await {
            Some(message) => {
                pending.insert(message.seq(), message);
            }
            None if pending.is_empty() => return Ok(None),
            None => {
                return Err(ImportError::Internal(
                    "a converter thread stopped without sending its batch".to_owned(),
                ));
            }
        }
    }
}

/// Writes checkpoints on a blocking thread without holding up the appends: while one write
/// runs, only the newest of the checkpoints offered meanwhile is kept and written next.
struct Checkpointer {
    paths: Arc<StatePaths>,
    running: Option<tokio::task::JoinHandle<Result<(), ImportError>>>,
    latest: Option<Checkpoint>,
}

impl Checkpointer {
    fn new(paths: Arc<StatePaths>) -> Self {
        Self {
            paths,
            running: None,
            latest: None,
        }
    }

    async fn offer(&mut self, checkpoint: Checkpoint) -> Result<(), ImportError> {
        self.latest = Some(checkpoint);
        if let Some(running) = &self.running {
            if !running.is_finished() {
                return Ok(());
            }
            if let Some(running) = self.running.take() {
                join_blocking(running).await?;
            }
        }
        if let Some(checkpoint) = self.latest.take() {
            let paths = Arc::clone(&self.paths);
            self.running = Some(tokio::task::spawn_blocking(move || {
                paths.write_checkpoint(&checkpoint, false)
            }));
        }
        Ok(())
    }

    /// Waits for the running write and writes the newest checkpoint left.
    async fn finish(&mut self) -> Result<(), ImportError> {
        if let Some(running) = self.running.take() {
            join_blocking(running).await?;
        }
        if let Some(checkpoint) = self.latest.take() {
            let paths = Arc::clone(&self.paths);
            run_blocking(move || paths.write_checkpoint(&checkpoint, false)).await?;
        }
        Ok(())
    }
}

async fn join_blocking(
    task: tokio::task::JoinHandle<Result<(), ImportError>>,
) -> Result<(), ImportError> {
    task.await
        .map_err(|error| ImportError::Internal(format!("a blocking task failed: {error}")))?
}

/// Appends, waiting and retrying while the log is overloaded (nothing was stored then).
async fn append_patiently(
    log: &dyn EventLog,
    records: &EncodedRecords,
    name: &'static str,
) -> Result<Vec<AppendOutcome>, ImportError> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let started = Instant::now();
    loop {
        // The log takes the records by value: each attempt gets its own (payloads are shared).
        match log.append(records.to_records()).await {
            Ok(outcomes) => return Ok(outcomes),
            Err(LogError::Overloaded { retry_after }) if started.elapsed() < OVERLOAD_PATIENCE => {
                tracing::debug!(
                    log = name,
                    ?retry_after,
                    "log overloaded, retrying the batch"
                );
                tokio::time::sleep(retry_after).await;
            }
            Err(source) => return Err(ImportError::Log { log: name, source }),
        }
    }
}

async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ImportError> + Send + 'static,
) -> Result<T, ImportError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ImportError::Internal(format!("a blocking task failed: {error}")))?
}

/// Calls the progress callback at most every [`PROGRESS_INTERVAL`] or [`PROGRESS_ROWS`].
struct ProgressTracker<'a> {
    callback: Option<&'a (dyn Fn(&Progress) + Sync)>,
    total_bytes: u64,
    last_rows: u64,
    last_time: Instant,
}

impl<'a> ProgressTracker<'a> {
    fn new(callback: Option<&'a (dyn Fn(&Progress) + Sync)>, total_bytes: u64) -> Self {
        Self {
            callback,
            total_bytes,
            last_rows: 0,
            last_time: Instant::now(),
        }
    }

    fn update(&mut self, rows: u64, bytes: u64, last: bool) {
        let Some(callback) = self.callback else {
            return;
        };
        let due = last
            || rows.saturating_sub(self.last_rows) >= PROGRESS_ROWS
            || self.last_time.elapsed() >= PROGRESS_INTERVAL;
        if due {
            callback(&Progress {
                rows,
                bytes: bytes.min(self.total_bytes),
                total_bytes: Some(self.total_bytes),
            });
            self.last_rows = rows;
            self.last_time = Instant::now();
        }
    }
}

/// The reader thread: reads rows into chunks, hands them to converter threads round robin,
/// and returns whether it reached the end of the file.
fn read_and_convert(
    reader: RowReader,
    settings: ReaderSettings,
    plan: Arc<Plan>,
    handled: Arc<Handled>,
    gate: Arc<dyn EventGate>,
    sender: tokio::sync::mpsc::Sender<Message>,
) -> Result<bool, ImportError> {
    std::thread::scope(|scope| {
        let mut work_senders = Vec::with_capacity(settings.workers);
        for index in 0..settings.workers {
            let (work_sender, work_receiver) = std::sync::mpsc::sync_channel::<RawChunk>(1);
            let sender = sender.clone();
            let plan = Arc::clone(&plan);
            let handled = Arc::clone(&handled);
            let gate = Arc::clone(&gate);
            std::thread::Builder::new()
                .name(format!("trib-import-{index}"))
                .spawn_scoped(scope, move || {
                    convert_chunks(work_receiver, sender, &plan, &handled, gate.as_ref())
                })
                .map_err(|error| ImportError::io("starting an import thread", error))?;
            work_senders.push(work_sender);
        }
        let mut seq = 0_u64;
        let outcome = read_chunks(reader, &settings, |chunk| {
            let worker = (chunk.seq % work_senders.len() as u64) as usize;
            seq = chunk.seq + 1;
            work_senders[worker].send(chunk).is_ok()
        });
        drop(work_senders);
        match outcome {
            Ok(reached_end) => Ok(reached_end),
            Err(error) => {
                // Delivered in order after the chunks before it; if the receiver is gone the
                // import is already failing for another reason.
                let _ = sender.blocking_send(Message::Failed { seq, error });
                Ok(false)
            }
        }
    })
}

/// Reads rows into chunks and passes each full chunk to `send` (false: stop). Returns whether
/// the end of the file was reached.
fn read_chunks(
    mut reader: RowReader,
    settings: &ReaderSettings,
    mut send: impl FnMut(RawChunk) -> bool,
) -> Result<bool, ImportError> {
    let mut number = settings.first_row;
    let mut rows_this_run = 0_u64;
    let mut seq = 0_u64;
    let mut chunk = RawChunk::new(seq);
    let reached_end = loop {
        if settings
            .stop_after_rows
            .is_some_and(|limit| rows_this_run >= limit)
        {
            break false;
        }
        let read = match &mut reader {
            RowReader::Csv(csv) => csv.read_row(),
            RowReader::Lines(lines) => lines.read_line(),
        }
        .map_err(|error| read_error(&settings.path, number.saturating_sub(1), error))?;
        let start = chunk.bytes.len();
        let ends_start = chunk.ends.len();
        let (kind, offset) = match (&reader, read) {
            (_, ReadOutcome::End) => break true,
            (RowReader::Csv(csv), ReadOutcome::TooLarge) => (RawKind::TooLarge, csv.offset()),
            (RowReader::Lines(lines), ReadOutcome::TooLarge) => {
                chunk.bytes.extend_from_slice(lines.line());
                chunk.ends.push(chunk.bytes.len());
                (RawKind::TooLarge, lines.offset())
            }
            (RowReader::Csv(csv), ReadOutcome::Row) => {
                for index in 0..csv.len() {
                    chunk.bytes.extend_from_slice(csv.field(index));
                    chunk.ends.push(chunk.bytes.len());
                }
                (RawKind::Csv, csv.offset())
            }
            (RowReader::Lines(lines), ReadOutcome::Row) => {
                if lines.line().iter().all(u8::is_ascii_whitespace) {
                    // A blank line is not a row, but it has a number.
                    number += 1;
                    continue;
                }
                chunk.bytes.extend_from_slice(lines.line());
                chunk.ends.push(chunk.bytes.len());
                (RawKind::Line, lines.offset())
            }
        };
        chunk.rows.push(RawRow {
            number,
            kind,
            start,
            ends: ends_start..chunk.ends.len(),
        });
        number += 1;
        rows_this_run += 1;
        chunk.next_row = number;
        chunk.offset = offset;
        if chunk.rows.len() >= settings.batch_rows || chunk.bytes.len() >= MAX_CHUNK_BYTES {
            seq += 1;
            let next = RawChunk::sized_like(seq, &chunk);
            let mut full = std::mem::replace(&mut chunk, next);
            full.raw_bytes = settings.raw_bytes.load(Ordering::Relaxed);
            if !send(full) {
                return Ok(false);
            }
        }
    };
    if !chunk.rows.is_empty() {
        chunk.raw_bytes = settings.raw_bytes.load(Ordering::Relaxed);
        if !send(chunk) {
            return Ok(false);
        }
    }
    Ok(reached_end)
}

/// A converter thread: turns chunks into batches until the reader stops or the import does.
fn convert_chunks(
    receiver: std::sync::mpsc::Receiver<RawChunk>,
    sender: tokio::sync::mpsc::Sender<Message>,
    plan: &Plan,
    handled: &Handled,
    gate: &dyn EventGate,
) {
    let mut caches = Caches::default();
    // The payload bytes of the previous batch, to size the next one's buffer.
    let mut payload_bytes_hint = 0;
    while let Ok(chunk) = receiver.recv() {
        let batch = convert_chunk(&chunk, plan, handled, gate, &mut caches, payload_bytes_hint);
        payload_bytes_hint = batch.events.payload_bytes();
        if sender.blocking_send(Message::Batch(batch)).is_err() {
            return;
        }
    }
}

fn convert_chunk(
    chunk: &RawChunk,
    plan: &Plan,
    handled: &Handled,
    gate: &dyn EventGate,
    caches: &mut Caches,
    payload_bytes_hint: usize,
) -> Batch {
    // A little more than the previous batch needed, so the buffer rarely grows.
    let mut events = RecordsBuilder::with_capacity(
        chunk.rows.len(),
        payload_bytes_hint + payload_bytes_hint / 16,
    );
    let mut event_drops = Vec::with_capacity(chunk.rows.len());
    let mut quarantine = RecordsBuilder::with_capacity(0, 0);
    let mut quarantine_codes = Vec::new();
    let mut skipped = 0;
    let timestamp_ms = plan.received_at.as_millisecond();
    for row in &chunk.rows {
        if handled.contains(row.number) {
            skipped += 1;
            continue;
        }
        let csv_row = || CsvRow {
            bytes: &chunk.bytes,
            start: row.start,
            ends: &chunk.ends[row.ends.clone()],
        };
        let line = || {
            &chunk.bytes[row.start..chunk.ends.get(row.ends.start).copied().unwrap_or(row.start)]
        };
        let outcome = match row.kind {
            RawKind::TooLarge => Err(Problem::new(
                "row_too_large",
                None,
                format!(
                    "row {} is longer than the row size limit (often an unbalanced quote); \
                     it is not kept",
                    row.number
                ),
            )),
            RawKind::Csv => {
                convert_and_admit(plan, gate, RowInput::Csv(csv_row()), row.number, caches)
            }
            RawKind::Line => match serde_json::from_slice::<serde_json::Value>(line()) {
                Ok(serde_json::Value::Object(object)) => {
                    convert_and_admit(plan, gate, RowInput::Json(&object), row.number, caches)
                }
                Ok(_) => Err(Problem::new(
                    "invalid_json",
                    None,
                    format!("line {} is JSON but not an object", row.number),
                )),
                Err(_) if std::str::from_utf8(line()).is_err() => Err(Problem::new(
                    "invalid_utf8",
                    None,
                    format!("line {} is not valid UTF-8", row.number),
                )),
                Err(error) => Err(Problem::new(
                    "invalid_json",
                    None,
                    format!("line {} is not valid JSON: {error}", row.number),
                )),
            },
        };
        match outcome.and_then(|(event, dropped)| {
            events
                .push_event(plan, &event, timestamp_ms)
                .map(|()| dropped)
        }) {
            Ok(dropped) => event_drops.push(dropped),
            Err(problem) => {
                let raw = match row.kind {
                    RawKind::Csv => csv_row_json(&plan.header, csv_row()),
                    RawKind::Line => line_json(line()),
                    RawKind::TooLarge => "null".to_owned(),
                };
                quarantine_codes.push(problem.code.clone());
                quarantine.push_quarantined(plan, row.number, problem, raw, timestamp_ms);
            }
        }
    }
    Batch {
        seq: chunk.seq,
        events: events.finish(),
        event_drops,
        quarantine: quarantine.finish(),
        quarantine_codes,
        skipped,
        next_row: chunk.next_row,
        offset: chunk.offset,
        raw_bytes: chunk.raw_bytes,
    }
}

/// Converts a row and passes the event through the gate.
fn convert_and_admit(
    plan: &Plan,
    gate: &dyn EventGate,
    row: RowInput<'_>,
    number: u64,
    caches: &mut Caches,
) -> Result<(trib_core::Event, Vec<String>), Problem> {
    let mut converted = plan.convert(row, number, caches)?;
    gate.admit(&mut converted.event)
        .map_err(|refusal| Problem {
            code: refusal.code,
            field: refusal.field,
            reason: refusal.reason,
            schema: refusal.schema,
        })?;
    Ok((converted.event, converted.dropped))
}

/// Builds the records of one batch for one log: payloads go into one buffer, keys into
/// another, instead of two allocations per record. Import records carry no log deduplication
/// id (see `resume` for how rows are still stored once).
struct RecordsBuilder {
    payloads: Vec<u8>,
    ids: String,
    ends: Vec<RecordEnds>,
}

/// The records of one batch for one log, as built by [`RecordsBuilder`]. Each append attempt
/// makes its own `Record`s with [`EncodedRecords::to_records`]: the payloads are slices of the
/// shared buffer, so only the short keys are copied, and a retry needs no saved copy.
struct EncodedRecords {
    payloads: Bytes,
    ids: String,
    ends: Vec<RecordEnds>,
}

/// Where one record ends in the buffers: it starts where the previous one ends.
#[derive(Clone, Copy)]
struct RecordEnds {
    payload: usize,
    key: usize,
    timestamp_ms: i64,
}

impl RecordsBuilder {
    fn with_capacity(records: usize, payload_bytes: usize) -> Self {
        Self {
            payloads: Vec::with_capacity(payload_bytes),
            ids: String::new(),
            ends: Vec::with_capacity(records),
        }
    }

    /// Adds the event log record of an event.
    fn push_event(
        &mut self,
        plan: &Plan,
        event: &trib_core::Event,
        timestamp_ms: i64,
    ) -> Result<(), Problem> {
        let start = self.payloads.len();
        if let Err(error) = plan.write_event_json(&mut self.payloads, event) {
            self.payloads.truncate(start);
            return Err(Problem::new(
                "unserializable",
                None,
                format!("the event cannot be serialized: {error}"),
            ));
        }
        self.ids.push_str(event.partition_key());
        self.push_ends(timestamp_ms);
        Ok(())
    }

    /// Adds the quarantine record of a refused row.
    fn push_quarantined(
        &mut self,
        plan: &Plan,
        number: u64,
        problem: Problem,
        raw: String,
        timestamp_ms: i64,
    ) {
        let message_id = plan.message_id(number);
        // csv_row_json and line_json only produce JSON; keep the record regardless (as null).
        let message = RawValue::from_string(raw).unwrap_or_default();
        self.ids.push_str(&plan.source);
        let quarantined = QuarantinedMessage {
            source: plan.source.clone(),
            received_at: plan.received_at,
            index: usize::try_from(number).unwrap_or(usize::MAX),
            message_id: Some(message_id),
            field: problem.field,
            code: problem.code,
            reason: problem.reason,
            schema: problem.schema,
            origin: Some(plan.origin.clone()),
            message,
            replay_context: None,
        };
        // A QuarantinedMessage is plain strings and numbers: serializing it cannot fail (if it
        // did, the payload would be empty).
        let start = self.payloads.len();
        if serde_json::to_writer(&mut self.payloads, &quarantined).is_err() {
            self.payloads.truncate(start);
        }
        self.push_ends(timestamp_ms);
    }

    fn push_ends(&mut self, timestamp_ms: i64) {
        self.ends.push(RecordEnds {
            payload: self.payloads.len(),
            key: self.ids.len(),
            timestamp_ms,
        });
    }

    fn finish(self) -> EncodedRecords {
        EncodedRecords {
            payloads: Bytes::from(self.payloads),
            ids: self.ids,
            ends: self.ends,
        }
    }
}

impl EncodedRecords {
    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn payload_bytes(&self) -> usize {
        self.payloads.len()
    }

    fn to_records(&self) -> Vec<Record> {
        let mut records = Vec::with_capacity(self.ends.len());
        let (mut payload_start, mut id_start) = (0, 0);
        for ends in &self.ends {
            records.push(Record {
                key: self.ids[id_start..ends.key].to_owned(),
                dedup_id: None,
                timestamp_ms: ends.timestamp_ms,
                payload: self.payloads.slice(payload_start..ends.payload),
            });
            payload_start = ends.payload;
            id_start = ends.key;
        }
        records
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use trib_log::{MemoryLog, StoredRecord};

    use super::*;

    fn plan() -> Plan {
        let mapping: ImportMapping = serde_json::from_value(serde_json::json!({
            "kind": "identify",
            "columns": [{"column": "id", "target": "user_id"}],
        }))
        .unwrap();
        Plan::compile(
            &mapping,
            "crm",
            &trib_normalize::Options::default(),
            None,
            Path::new("people.ndjson"),
            "0123456789abcdef0123",
            "2026-01-02T03:04:05.5Z".parse().unwrap(),
        )
        .unwrap()
    }

    fn event(message_id: &str, user_id: Option<&str>) -> trib_core::Event {
        serde_json::from_value(serde_json::json!({
            "messageId": message_id,
            "source": "crm",
            "type": "identify",
            "userId": user_id,
            "anonymousId": "anon \"1\"",
            "traits": {"name": "Zoë", "plan": "pro"},
            "timestamp": "2026-01-02T03:04:05.5Z",
            "receivedAt": "2026-01-02T03:04:05.5Z",
        }))
        .unwrap()
    }

    /// The records as they were built before `EncodedRecords`, one allocation each.
    fn expected_records(events: &[trib_core::Event], timestamp_ms: i64) -> Vec<Record> {
        events
            .iter()
            .map(|event| Record {
                key: event.partition_key().to_owned(),
                dedup_id: None,
                timestamp_ms,
                payload: Bytes::from(serde_json::to_vec(event).unwrap()),
            })
            .collect()
    }

    #[test]
    fn encoded_records_are_the_records_of_each_row_every_time() {
        let plan = plan();
        let events = [
            event("imp-0123456789abcdef-2", Some("u1")),
            event("imp-0123456789abcdef-3", None),
            event("imp-0123456789abcdef-4", Some("")),
        ];
        let mut builder = RecordsBuilder::with_capacity(0, 0);
        for event in &events {
            builder.push_event(&plan, event, 42).unwrap();
        }
        let encoded = builder.finish();
        assert_eq!(encoded.len(), 3);
        assert_eq!(encoded.to_records(), expected_records(&events, 42));
        assert_eq!(encoded.to_records(), encoded.to_records(), "a retry");

        let mut quarantine = RecordsBuilder::with_capacity(0, 0);
        let problem = Problem::new("invalid_value", Some("traits.age"), "row 7: no".to_owned());
        quarantine.push_quarantined(&plan, 7, problem.clone(), r#"{"age":"x"}"#.to_owned(), 9);
        let records = quarantine.finish().to_records();
        let message = QuarantinedMessage {
            source: "crm".to_owned(),
            received_at: plan.received_at,
            index: 7,
            message_id: Some("imp-0123456789abcdef-7".to_owned()),
            field: problem.field,
            code: problem.code,
            reason: problem.reason,
            schema: None,
            origin: Some("import:people.ndjson".to_owned()),
            message: RawValue::from_string(r#"{"age":"x"}"#.to_owned()).unwrap(),
            replay_context: None,
        };
        assert_eq!(
            records,
            [Record {
                key: "crm".to_owned(),
                dedup_id: None,
                timestamp_ms: 9,
                payload: Bytes::from(serde_json::to_vec(&message).unwrap()),
            }]
        );
    }

    /// Refuses the first append as overloaded, then appends to a memory log.
    struct OverloadedOnce {
        log: MemoryLog,
        attempts: Mutex<usize>,
    }

    #[async_trait]
    impl EventLog for OverloadedOnce {
        fn partition_count(&self) -> u32 {
            self.log.partition_count()
        }

        async fn append(&self, records: Vec<Record>) -> Result<Vec<AppendOutcome>, LogError> {
            let first = {
                let mut attempts = self.attempts.lock().unwrap();
                *attempts += 1;
                *attempts == 1
            };
            if first {
                return Err(LogError::Overloaded {
                    retry_after: Duration::from_millis(1),
                });
            }
            self.log.append(records).await
        }

        async fn read(
            &self,
            partition: u32,
            from: u64,
            max_records: usize,
        ) -> Result<Vec<StoredRecord>, LogError> {
            self.log.read(partition, from, max_records).await
        }

        async fn end_offset(&self, partition: u32) -> Result<u64, LogError> {
            self.log.end_offset(partition).await
        }

        async fn committed_offset(
            &self,
            consumer: &str,
            partition: u32,
        ) -> Result<Option<u64>, LogError> {
            self.log.committed_offset(consumer, partition).await
        }

        async fn commit_offset(
            &self,
            consumer: &str,
            partition: u32,
            next: u64,
        ) -> Result<(), LogError> {
            self.log.commit_offset(consumer, partition, next).await
        }

        async fn close(&self) -> Result<(), LogError> {
            self.log.close().await
        }
    }

    #[tokio::test]
    async fn an_overloaded_append_is_retried_with_every_record() {
        let plan = plan();
        let events: Vec<_> = (2..7)
            .map(|row| event(&plan.message_id(row), Some(&format!("u{row}"))))
            .collect();
        let mut builder = RecordsBuilder::with_capacity(0, 0);
        for event in &events {
            builder.push_event(&plan, event, 42).unwrap();
        }
        let log = OverloadedOnce {
            log: MemoryLog::new(1),
            attempts: Mutex::new(0),
        };
        let outcomes = append_patiently(&log, &builder.finish(), "event log")
            .await
            .unwrap();
        assert_eq!(*log.attempts.lock().unwrap(), 2);
        assert_eq!(outcomes.len(), events.len());
        let stored = log.read(0, 0, 100).await.unwrap();
        let expected = expected_records(&events, 42);
        assert_eq!(stored.len(), expected.len());
        for (stored, expected) in stored.iter().zip(&expected) {
            assert_eq!(stored.key, expected.key);
            assert_eq!(stored.dedup_id, expected.dedup_id);
            assert_eq!(stored.payload, expected.payload);
        }
    }
}
