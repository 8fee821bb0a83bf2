//! [`MemoryLog`]: the event log with persistence switched off.
//!
//! Same semantics as [`EmbeddedLog`](crate::EmbeddedLog) — partitioning by key, consecutive
//! offsets, deduplication within the window, consumer offsets, the queue bound and
//! [`LogError::Overloaded`], [`LogError::Closed`] after close — but everything lives in one
//! mutex-protected structure and is gone when the value is dropped. It is the ceiling for
//! benchmarks and a fast backend for tests.
//!
//! What it does not do: it never forgets records, so memory grows with everything appended.
//! Appends are handled inline under the lock, so the queue bound is only reached by one call
//! larger than it ([`LogError::BatchTooLarge`]) or by many concurrent calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use crate::dedup::{DedupIndex, dedup_hash};
use crate::limits::{QueueBound, check_consumer_name, check_partition, check_record_sizes, now_ms};
use crate::{
    AppendOutcome, BlankReport, Compactable, EmbeddedLogOptions, EventLog, LogError, Record,
    StoredRecord, partition_for,
};

/// Settings of a [`MemoryLog`]; [`MemoryLogOptions::new`] gives the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLogOptions {
    /// Number of partitions; 0 is taken as 1.
    pub partitions: u32,
    /// How long a deduplication id is remembered; zero turns deduplication off.
    pub dedup_window: Duration,
    /// The most records in appends that have not returned yet; 0 is taken as 1.
    pub max_queued_records: usize,
    /// The same bound for the records' encoded bytes; 0 is taken as 1.
    pub max_queued_bytes: u64,
}

impl MemoryLogOptions {
    /// The defaults, as for [`EmbeddedLogOptions`](crate::EmbeddedLogOptions): a 24 h window,
    /// at most 100,000 records and 256 MiB queued.
    pub fn new(partitions: u32) -> Self {
        Self {
            partitions,
            dedup_window: EmbeddedLogOptions::DEFAULT_DEDUP_WINDOW,
            max_queued_records: EmbeddedLogOptions::DEFAULT_MAX_QUEUED_RECORDS,
            max_queued_bytes: EmbeddedLogOptions::DEFAULT_MAX_QUEUED_BYTES,
        }
    }
}

/// An in-memory [`EventLog`]; nothing survives the value.
#[derive(Debug)]
pub struct MemoryLog {
    partition_count: u32,
    queue: Arc<QueueBound>,
    closed: AtomicBool,
    state: Mutex<MemoryState>,
}

#[derive(Debug)]
struct MemoryState {
    partitions: Vec<Vec<StoredRecord>>,
    dedup: DedupIndex,
    consumers: HashMap<String, Vec<Option<u64>>>,
}

impl MemoryLog {
    /// A log with `partitions` partitions (0 is taken as 1) and the default options.
    pub fn new(partitions: u32) -> Self {
        Self::with_options(MemoryLogOptions::new(partitions))
    }

    pub fn with_options(options: MemoryLogOptions) -> Self {
        let partition_count = options.partitions.max(1);
        Self {
            partition_count,
            queue: QueueBound::new(
                options.max_queued_records.max(1),
                options.max_queued_bytes.max(1),
            ),
            closed: AtomicBool::new(false),
            state: Mutex::new(MemoryState {
                partitions: vec![Vec::new(); partition_count as usize],
                dedup: DedupIndex::new(options.dedup_window),
                consumers: HashMap::new(),
            }),
        }
    }

    /// Records in appends that have not returned yet.
    pub fn queued_records(&self) -> usize {
        self.queue.queued_records()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn queue_bound(&self) -> &Arc<QueueBound> {
        &self.queue
    }
}

#[async_trait]
impl EventLog for MemoryLog {
    fn partition_count(&self) -> u32 {
        self.partition_count
    }

    async fn append(&self, records: Vec<Record>) -> Result<Vec<AppendOutcome>, LogError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = check_record_sizes(&records)?;
        let _permit = self.queue.try_acquire(records.len(), bytes)?;
        let now_ms = now_ms();
        let mut state = self.lock();
        state.dedup.expire(now_ms);
        let mut outcomes = Vec::with_capacity(records.len());
        for record in records {
            let hash = record
                .dedup_id
                .as_deref()
                .map(|id| dedup_hash(id.as_bytes()));
            if let Some(hash) = hash
                && state.dedup.contains(hash)
            {
                outcomes.push(AppendOutcome::Duplicate);
                continue;
            }
            if let Some(hash) = hash {
                state.dedup.insert(hash, record.timestamp_ms, now_ms);
            }
            let partition = partition_for(&record.key, self.partition_count);
            let stored = &mut state.partitions[partition as usize];
            let offset = stored.len() as u64;
            stored.push(StoredRecord {
                partition,
                offset,
                key: record.key,
                dedup_id: record.dedup_id,
                timestamp_ms: record.timestamp_ms,
                payload: record.payload,
            });
            outcomes.push(AppendOutcome::Stored { partition, offset });
        }
        Ok(outcomes)
    }

    async fn read(
        &self,
        partition: u32,
        from: u64,
        max_records: usize,
    ) -> Result<Vec<StoredRecord>, LogError> {
        check_partition(partition, self.partition_count)?;
        let state = self.lock();
        let stored = &state.partitions[partition as usize];
        let start = usize::try_from(from)
            .unwrap_or(usize::MAX)
            .min(stored.len());
        let end = start.saturating_add(max_records).min(stored.len());
        Ok(stored[start..end].to_vec())
    }

    async fn end_offset(&self, partition: u32) -> Result<u64, LogError> {
        check_partition(partition, self.partition_count)?;
        Ok(self.lock().partitions[partition as usize].len() as u64)
    }

    async fn committed_offset(
        &self,
        consumer: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError> {
        check_consumer_name(consumer)?;
        check_partition(partition, self.partition_count)?;
        let state = self.lock();
        Ok(state
            .consumers
            .get(consumer)
            .and_then(|offsets| offsets[partition as usize]))
    }

    async fn commit_offset(
        &self,
        consumer: &str,
        partition: u32,
        next: u64,
    ) -> Result<(), LogError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        check_consumer_name(consumer)?;
        check_partition(partition, self.partition_count)?;
        let partition_count = self.partition_count as usize;
        let mut state = self.lock();
        let offsets = state
            .consumers
            .entry(consumer.to_owned())
            .or_insert_with(|| vec![None; partition_count]);
        offsets[partition as usize] = Some(next);
        Ok(())
    }

    /// Refuses later appends and commits; reads keep working.
    async fn close(&self) -> Result<(), LogError> {
        self.closed.store(true, Ordering::Release);
        Ok(())
    }
}

/// Every stored record can be blanked (there are no segments); offsets past the end are
/// reported in [`BlankReport::not_sealed`].
#[async_trait]
impl Compactable for MemoryLog {
    async fn blank(&self, partition: u32, offsets: &[u64]) -> Result<BlankReport, LogError> {
        check_partition(partition, self.partition_count)?;
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        let mut state = self.lock();
        let stored = &mut state.partitions[partition as usize];
        let mut report = BlankReport::default();
        for &offset in offsets {
            match usize::try_from(offset)
                .ok()
                .and_then(|index| stored.get_mut(index))
            {
                Some(record) if !record.payload.is_empty() => {
                    record.payload = bytes::Bytes::new();
                    report.blanked += 1;
                }
                Some(_) => {}
                None => report.not_sealed.push(offset),
            }
        }
        report.not_sealed.sort_unstable();
        report.not_sealed.dedup();
        Ok(report)
    }
}

#[cfg(test)]
impl crate::conformance::ConformanceLog for MemoryLog {
    fn queue_bound(&self) -> &Arc<QueueBound> {
        MemoryLog::queue_bound(self)
    }
}
