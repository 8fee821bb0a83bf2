//! [`EmbeddedLog`]: a Kafka-style segmented log on local disk, the default durable storage.
//!
//! Each partition is a directory of segment files named by the offset of their first record;
//! records are appended to the last (active) segment, and a new segment starts when the active
//! one has reached [`EmbeddedLogOptions::segment_max_bytes`]. The byte layout is described in
//! the `format` module: a versioned header per segment, then length-prefixed, CRC-32-checked
//! record frames. The directory layout is in the `files` module.
//!
//! Writes go through one writer thread with group commit (the `writer` module): concurrent
//! appends share one `write` and one `fdatasync` per touched partition, and `append` returns
//! only once its records are durable ([`Durability::Fsync`]). A bounded queue
//! ([`EmbeddedLogOptions::max_queued_records`], [`EmbeddedLogOptions::max_queued_bytes`])
//! turns overload into an immediate [`LogError::Overloaded`] instead of unbounded memory.
//!
//! Deduplication ids are checked and remembered by the writer thread in an in-memory index
//! (see the crate's `dedup` module for its memory cost), rebuilt on open from the segments that
//! can hold ids younger than the window.
//!
//! On open, a torn tail left by a crash is truncated and the log continues at the next
//! consecutive offset; damage anywhere else is reported as [`LogError::Corrupt`] (the
//! `recovery` module).
//!
//! Readers see only acknowledged records, read on blocking threads with their own file handles,
//! and find their starting point through a sparse in-memory index (one entry per ~4 KiB).
//!
//! Records of sealed segments can be blanked ([`Compactable`](crate::Compactable), the
//! `compaction` module): their payloads are emptied by rewriting the segment beside itself and
//! renaming it into place, for retention and erasure.
//!
//! Not done yet, deliberately: deleting old segments, key-based compaction, and replication. Consumer offsets are not checked against the end of the partition.

mod compaction;
mod consumers;
mod files;
mod format;
mod recovery;
mod segment;
#[cfg(test)]
mod tests;
mod writer;

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::oneshot;

use self::consumers::ConsumerOffsetStore;
use self::files::{CONSUMERS_DIR, LOCK_FILE, PARTITIONS_DIR, check_or_create_meta, create_dir};
use self::recovery::recover_partition;
use self::segment::PartitionShared;
use self::writer::{AppendRequest, RecordRouting, WriteSettings, Writer, WriterMessage};
use crate::dedup::{DedupIndex, dedup_hash};
use crate::limits::{QueueBound, check_consumer_name, check_partition, check_record_sizes, now_ms};
use crate::{
    AppendOutcome, BlankReport, Compactable, EventLog, LogError, Record, StoredRecord,
    partition_for,
};

/// Whether `append` waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every group commit is `fdatasync`ed before its appends return: an acknowledged record
    /// survives a crash or power loss.
    #[default]
    Fsync,
    /// Records are handed to the OS but never fsynced (except on close): they survive a crash
    /// of this process but not of the machine, after which any segment (not only the last) may
    /// be damaged and reads may fail with [`LogError::Corrupt`]. For measuring the ceiling of
    /// the write path.
    None,
}

/// Settings of an [`EmbeddedLog`]; [`EmbeddedLogOptions::new`] gives the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedLogOptions {
    /// The log's directory; created if missing.
    pub dir: PathBuf,
    /// Number of partitions, 1 to [`EmbeddedLogOptions::MAX_PARTITIONS`]. Fixed when the log
    /// is created: opening an existing log with another count fails with [`LogError::Config`].
    pub partitions: u32,
    pub durability: Durability,
    /// How long a deduplication id is remembered, measured from the record's timestamp against
    /// the wall clock. Zero turns deduplication off.
    pub dedup_window: Duration,
    /// The most records accepted but not yet answered; beyond it `append` fails with
    /// [`LogError::Overloaded`]. One call with more records fails with
    /// [`LogError::BatchTooLarge`].
    pub max_queued_records: usize,
    /// The same bound for the records' encoded bytes.
    pub max_queued_bytes: u64,
    /// A new segment starts once the active one holds this many bytes, 1 byte to
    /// [`EmbeddedLogOptions::MAX_SEGMENT_BYTES`].
    pub segment_max_bytes: u64,
}

impl EmbeddedLogOptions {
    pub const DEFAULT_PARTITIONS: u32 = 8;
    pub const MAX_PARTITIONS: u32 = 4096;
    pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
    pub const DEFAULT_MAX_QUEUED_RECORDS: usize = 100_000;
    pub const DEFAULT_MAX_QUEUED_BYTES: u64 = 256 * 1024 * 1024;
    pub const DEFAULT_SEGMENT_MAX_BYTES: u64 = 128 * 1024 * 1024;
    /// Sparse index entries hold 32-bit positions, so a segment stays below 4 GiB.
    pub const MAX_SEGMENT_BYTES: u64 = 1024 * 1024 * 1024;

    /// The defaults: 8 partitions, fsync, a 24 h deduplication window, at most 100,000 records
    /// and 256 MiB queued, 128 MiB segments.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            partitions: Self::DEFAULT_PARTITIONS,
            durability: Durability::Fsync,
            dedup_window: Self::DEFAULT_DEDUP_WINDOW,
            max_queued_records: Self::DEFAULT_MAX_QUEUED_RECORDS,
            max_queued_bytes: Self::DEFAULT_MAX_QUEUED_BYTES,
            segment_max_bytes: Self::DEFAULT_SEGMENT_MAX_BYTES,
        }
    }

    fn validate(&self) -> Result<(), LogError> {
        let problem = if !(1..=Self::MAX_PARTITIONS).contains(&self.partitions) {
            format!(
                "partitions must be between 1 and {}, not {}",
                Self::MAX_PARTITIONS,
                self.partitions
            )
        } else if self.max_queued_records == 0 || self.max_queued_bytes == 0 {
            "max_queued_records and max_queued_bytes must be positive".to_owned()
        } else if !(1..=Self::MAX_SEGMENT_BYTES).contains(&self.segment_max_bytes) {
            format!(
                "segment_max_bytes must be between 1 and {}, not {}",
                Self::MAX_SEGMENT_BYTES,
                self.segment_max_bytes
            )
        } else {
            return Ok(());
        };
        Err(LogError::Config(problem))
    }
}

/// A partitioned, durable log in a local directory, with group commit.
///
/// Open it once per directory: the directory is locked (advisory `flock`) from
/// [`EmbeddedLog::open`] until the value is dropped. Dropping it stops the writer thread after
/// it has written everything queued (it blocks for that long).
#[derive(Debug)]
pub struct EmbeddedLog {
    shared: Arc<Shared>,
    sender: Option<mpsc::Sender<WriterMessage>>,
    writer_thread: Option<JoinHandle<()>>,
    /// Held for the advisory lock; dropped after the writer thread has stopped.
    _lock_file: File,
}

impl EmbeddedLog {
    /// Opens the log in `options.dir`, creating it if needed, repairing a torn tail, and
    /// rebuilding the deduplication index; starts the writer thread.
    ///
    /// This does blocking I/O proportional to the last segment of each partition plus the
    /// segments inside the deduplication window; call it before serving, or on a blocking
    /// thread.
    pub fn open(options: EmbeddedLogOptions) -> Result<EmbeddedLog, LogError> {
        let started = Instant::now();
        options.validate()?;
        create_dir(&options.dir)?;
        let lock_file = lock_directory(&options.dir)?;
        check_or_create_meta(&options)?;
        create_dir(&options.dir.join(PARTITIONS_DIR))?;
        create_dir(&options.dir.join(CONSUMERS_DIR))?;

        let now_ms = now_ms();
        let mut dedup = DedupIndex::new(options.dedup_window);
        let mut partition_writers = Vec::with_capacity(options.partitions as usize);
        let mut partitions = Vec::with_capacity(options.partitions as usize);
        for partition in 0..options.partitions {
            let recovered = recover_partition(&options, partition, &mut dedup, now_ms)?;
            partition_writers.push(recovered.writer);
            partitions.push(PartitionShared::new(recovered.view));
        }
        let consumers =
            ConsumerOffsetStore::load(options.dir.join(CONSUMERS_DIR), options.partitions)?;

        let shared = Arc::new(Shared {
            dir: options.dir.clone(),
            partition_count: options.partitions,
            partitions,
            queue: QueueBound::new(options.max_queued_records, options.max_queued_bytes),
            consumers,
            closed: AtomicBool::new(false),
            failure: Mutex::new(None),
            dedup_entries: AtomicUsize::new(dedup.len()),
            batches_written: AtomicU64::new(0),
            compaction: Mutex::new(()),
        });
        let settings = WriteSettings {
            durability: options.durability,
            segment_max_bytes: options.segment_max_bytes,
        };
        let writer = Writer::new(Arc::clone(&shared), partition_writers, dedup, settings);
        let (sender, receiver) = mpsc::channel();
        let writer_thread = std::thread::Builder::new()
            .name("trib-log-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(|error| LogError::io("starting the log writer thread", error))?;

        let records: u64 = shared
            .partitions
            .iter()
            .map(PartitionShared::durable_end_offset)
            .sum();
        tracing::info!(
            dir = %options.dir.display(),
            partitions = options.partitions,
            records,
            dedup_ids = shared.dedup_entries.load(Ordering::Relaxed),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "opened the event log"
        );
        Ok(EmbeddedLog {
            shared,
            sender: Some(sender),
            writer_thread: Some(writer_thread),
            _lock_file: lock_file,
        })
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Records accepted by `append` but not yet answered (for readiness checks).
    pub fn queued_records(&self) -> usize {
        self.shared.queue.queued_records()
    }

    /// The bound on [`EmbeddedLog::queued_records`].
    pub fn max_queued_records(&self) -> usize {
        self.shared.queue.max_records()
    }

    /// Whether appends are accepted: false once closed or after a failed write.
    pub fn is_accepting_appends(&self) -> bool {
        self.check_accepting().is_ok()
    }

    /// How many deduplication ids are remembered (updated after each group commit).
    pub fn dedup_index_len(&self) -> usize {
        self.shared.dedup_entries.load(Ordering::Relaxed)
    }

    /// How many group commits (one write + fsync round) have completed since open.
    pub fn group_commits(&self) -> u64 {
        self.shared.batches_written.load(Ordering::Relaxed)
    }

    fn check_accepting(&self) -> Result<(), LogError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        if let Some(reason) = self.shared.failure() {
            return Err(LogError::WriterFailed { reason });
        }
        Ok(())
    }

    /// The error for a request the writer thread dropped without answering.
    fn writer_gone(&self) -> LogError {
        match self.shared.failure() {
            Some(reason) => LogError::WriterFailed { reason },
            None if self.shared.closed.load(Ordering::Acquire) => LogError::Closed,
            None => LogError::WriterFailed {
                reason: "the writer thread stopped unexpectedly".to_owned(),
            },
        }
    }

    #[cfg(test)]
    fn queue_bound(&self) -> &Arc<QueueBound> {
        &self.shared.queue
    }
}

#[async_trait]
impl EventLog for EmbeddedLog {
    fn partition_count(&self) -> u32 {
        self.shared.partition_count
    }

    async fn append(&self, records: Vec<Record>) -> Result<Vec<AppendOutcome>, LogError> {
        self.check_accepting()?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = check_record_sizes(&records)?;
        let partition_count = self.shared.partition_count;
        let routing = records
            .iter()
            .map(|record| RecordRouting {
                partition: partition_for(&record.key, partition_count),
                dedup_hash: record
                    .dedup_id
                    .as_deref()
                    .map(|id| dedup_hash(id.as_bytes())),
            })
            .collect();
        let permit = self.shared.queue.try_acquire(records.len(), bytes)?;
        let sender = self.sender.as_ref().ok_or(LogError::Closed)?;
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest {
            records,
            routing,
            permit,
            reply,
        };
        if sender.send(WriterMessage::Append(request)).is_err() {
            return Err(self.writer_gone());
        }
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(self.writer_gone()),
        }
    }

    async fn read(
        &self,
        partition: u32,
        from: u64,
        max_records: usize,
    ) -> Result<Vec<StoredRecord>, LogError> {
        check_partition(partition, self.shared.partition_count)?;
        if max_records == 0 {
            return Ok(Vec::new());
        }
        let Some(plan) = self.shared.partitions[partition as usize].read_plan(from) else {
            return Ok(Vec::new());
        };
        tokio::task::spawn_blocking(move || plan.read(from, max_records))
            .await
            .map_err(|error| LogError::io("reading the log", std::io::Error::other(error)))?
    }

    async fn end_offset(&self, partition: u32) -> Result<u64, LogError> {
        check_partition(partition, self.shared.partition_count)?;
        Ok(self.shared.partitions[partition as usize].durable_end_offset())
    }

    async fn committed_offset(
        &self,
        consumer: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError> {
        check_consumer_name(consumer)?;
        check_partition(partition, self.shared.partition_count)?;
        Ok(self.shared.consumers.committed(consumer, partition))
    }

    async fn commit_offset(
        &self,
        consumer: &str,
        partition: u32,
        next: u64,
    ) -> Result<(), LogError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        check_consumer_name(consumer)?;
        check_partition(partition, self.shared.partition_count)?;
        let shared = Arc::clone(&self.shared);
        let consumer = consumer.to_owned();
        tokio::task::spawn_blocking(move || shared.consumers.commit(&consumer, partition, next))
            .await
            .map_err(|error| LogError::io("committing an offset", std::io::Error::other(error)))?
    }

    /// Writes everything queued, stops the writer thread, and refuses later appends and
    /// commits. Reads keep working. Closing twice is fine.
    async fn close(&self) -> Result<(), LogError> {
        self.shared.closed.store(true, Ordering::Release);
        let Some(sender) = self.sender.as_ref() else {
            return Ok(());
        };
        let (reply, answer) = oneshot::channel();
        if sender.send(WriterMessage::Close(reply)).is_err() {
            // The writer already stopped.
            return Ok(());
        }
        let _ = answer.await;
        Ok(())
    }
}

/// Blanks records of sealed segments; when some requested offsets are in a partition's active
/// segment, that segment is sealed first ([`EmbeddedLog::roll`]) and they are blanked too.
/// Offsets past the end come back in [`BlankReport::not_sealed`].
#[async_trait]
impl Compactable for EmbeddedLog {
    async fn blank(&self, partition: u32, offsets: &[u64]) -> Result<BlankReport, LogError> {
        check_partition(partition, self.shared.partition_count)?;
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        if offsets.is_empty() {
            return Ok(BlankReport::default());
        }
        let first = self.blank_sealed(partition, offsets.to_vec()).await?;
        if first.not_sealed.is_empty() || !self.roll(partition).await? {
            return Ok(first);
        }
        let second = self.blank_sealed(partition, first.not_sealed).await?;
        Ok(BlankReport {
            blanked: first.blanked + second.blanked,
            not_sealed: second.not_sealed,
        })
    }
}

impl EmbeddedLog {
    /// Seals `partition`'s active segment, if it holds records, and starts a new one; returns
    /// whether it did. Records appended before the call are in the sealed segment. Retention
    /// uses it so that expired records in a quiet partition can be blanked.
    pub async fn roll(&self, partition: u32) -> Result<bool, LogError> {
        check_partition(partition, self.shared.partition_count)?;
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        let Some(sender) = self.sender.as_ref() else {
            return Err(LogError::Closed);
        };
        let (reply, answer) = oneshot::channel();
        if sender
            .send(WriterMessage::Roll { partition, reply })
            .is_err()
        {
            return Err(LogError::Closed);
        }
        answer.await.map_err(|_| LogError::Closed)?
    }

    async fn blank_sealed(
        &self,
        partition: u32,
        offsets: Vec<u64>,
    ) -> Result<BlankReport, LogError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let _serial = shared
                .compaction
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            compaction::blank_partition(&shared.partitions[partition as usize], &offsets)
        })
        .await
        .map_err(|error| LogError::io("blanking records", std::io::Error::other(error)))?
    }
}

impl Drop for EmbeddedLog {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        // Without senders the writer drains what is queued and stops.
        drop(self.sender.take());
        if let Some(thread) = self.writer_thread.take()
            && thread.join().is_err()
        {
            tracing::error!(dir = %self.shared.dir.display(), "the log writer thread panicked");
        }
    }
}

/// State shared by the log handle, the writer thread and readers.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    partition_count: u32,
    partitions: Vec<PartitionShared>,
    queue: Arc<QueueBound>,
    consumers: ConsumerOffsetStore,
    closed: AtomicBool,
    /// Why the writer stopped, once a write or fsync failed.
    failure: Mutex<Option<String>>,
    dedup_entries: AtomicUsize,
    batches_written: AtomicU64,
    /// Serializes segment rewrites (`blank`).
    compaction: Mutex<()>,
}

impl Shared {
    fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record_failure(&self, reason: &str) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.to_owned());
    }
}

/// Takes the advisory lock on the log directory.
fn lock_directory(dir: &Path) -> Result<File, LogError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|error| LogError::io(format!("opening {}", path.display()), error))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(LogError::DirectoryInUse {
            path: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(error)) => {
            Err(LogError::io(format!("locking {}", path.display()), error))
        }
    }
}

#[cfg(test)]
impl crate::conformance::ConformanceLog for EmbeddedLog {
    fn queue_bound(&self) -> &Arc<QueueBound> {
        EmbeddedLog::queue_bound(self)
    }
}
