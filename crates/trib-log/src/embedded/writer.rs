//! The writer thread: group commit.
//!
//! One dedicated OS thread owns every writable segment file and the deduplication index. It
//! waits for the first queued append, then takes everything else already queued (up to
//! [`MAX_BATCH_RECORDS`]), and for that whole batch:
//!
//! 1. checks each record's deduplication id and remembers the new ones (the only place that
//!    does, so concurrent duplicates cannot race),
//! 2. assigns offsets and encodes the records into one buffer per partition,
//! 3. writes each touched partition's buffer with one `pwrite`, then `fdatasync`s each touched
//!    segment file once ([`Durability::Fsync`]),
//! 4. publishes the new durable end offsets to readers, and answers every request.
//!
//! So N concurrent appends cost one fsync per touched partition, not N. While the thread is in
//! `fdatasync`, new requests queue up and form the next batch.
//!
//! A failed write or fsync stops the writer for good ([`LogError::WriterFailed`]): after a
//! failed fsync the kernel may have dropped the dirty pages, so the only safe way on is to
//! reopen the log, which re-reads what is really on disk and truncates a torn tail.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;

use tokio::sync::oneshot;

use super::files::create_segment;
use super::format::{SEGMENT_HEADER_LEN, SegmentHeader, encode_frame};
use super::segment::{INDEX_INTERVAL_BYTES, PartitionShared, SegmentHandle, SegmentView};
use super::{Durability, Shared};
use crate::dedup::DedupIndex;
use crate::limits::{QueuePermit, now_ms};
use crate::{AppendOutcome, LogError, Record};

/// The most records one group commit takes (a request is never split, so one batch may hold
/// more when its last request is large).
pub(super) const MAX_BATCH_RECORDS: usize = 16_384;

/// Keep at most this much encoding buffer per partition between batches.
const MAX_RETAINED_BUFFER_BYTES: usize = 8 * 1024 * 1024;

pub(super) enum WriterMessage {
    Append(AppendRequest),
    /// Seals the partition's active segment (when it holds records) and starts a new one, after
    /// everything queued before it is written; answers whether it rolled.
    Roll {
        partition: u32,
        reply: oneshot::Sender<Result<bool, LogError>>,
    },
    /// Answered once everything queued before it is written and the thread is about to stop.
    Close(oneshot::Sender<()>),
}

pub(super) struct AppendRequest {
    pub(super) records: Vec<Record>,
    /// Computed by the caller, one per record, so the writer thread does not hash.
    pub(super) routing: Vec<RecordRouting>,
    /// Released once the request is answered.
    pub(super) permit: QueuePermit,
    pub(super) reply: oneshot::Sender<Result<Vec<AppendOutcome>, LogError>>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct RecordRouting {
    pub(super) partition: u32,
    pub(super) dedup_hash: Option<u128>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct WriteSettings {
    pub(super) durability: Durability,
    pub(super) segment_max_bytes: u64,
}

/// The state the writer thread owns.
pub(super) struct Writer {
    shared: Arc<Shared>,
    partitions: Vec<PartitionWriter>,
    dedup: DedupIndex,
    settings: WriteSettings,
    /// Indexes of the partitions the current batch wrote to.
    touched: Vec<usize>,
    failure: Option<String>,
}

/// One partition's writable end: the active segment and the records encoded but not written.
#[derive(Debug)]
pub(super) struct PartitionWriter {
    partition: u32,
    dir: PathBuf,
    next_offset: u64,
    active: Arc<SegmentHandle>,
    active_file: File,
    /// Bytes of the active segment already handed to the OS.
    active_written: u64,
    last_index_position: u64,
    active_max_timestamp_ms: Option<i64>,
    buffer: Vec<u8>,
    /// Segments sealed during the current batch, with their final lengths, oldest first.
    sealed_in_batch: Vec<(Arc<SegmentHandle>, u64)>,
    touched: bool,
}

impl Writer {
    pub(super) fn new(
        shared: Arc<Shared>,
        partitions: Vec<PartitionWriter>,
        dedup: DedupIndex,
        settings: WriteSettings,
    ) -> Self {
        Self {
            shared,
            partitions,
            dedup,
            settings,
            touched: Vec::new(),
            failure: None,
        }
    }

    /// Serves requests until a close request or until every sender is gone.
    pub(super) fn run(mut self, receiver: Receiver<WriterMessage>) {
        let mut batch = Vec::new();
        while let Ok(first) = receiver.recv() {
            let mut close_replies = Vec::new();
            let mut rolls = Vec::new();
            let mut batch_records = 0;
            let mut next_message = Some(first);
            while let Some(message) = next_message.take() {
                match message {
                    WriterMessage::Append(request) => {
                        batch_records += request.records.len();
                        batch.push(request);
                    }
                    WriterMessage::Close(reply) => {
                        close_replies.push(reply);
                        break;
                    }
                    WriterMessage::Roll { partition, reply } => {
                        rolls.push((partition, reply));
                        break;
                    }
                }
                if batch_records < MAX_BATCH_RECORDS {
                    next_message = receiver.try_recv().ok();
                }
            }
            self.process_batch(&mut batch);
            for (partition, reply) in rolls {
                let _ = reply.send(self.roll_partition(partition as usize));
            }
            if !close_replies.is_empty() {
                self.finish();
                // Whatever was queued after the close request is refused.
                while let Ok(message) = receiver.try_recv() {
                    match message {
                        WriterMessage::Append(request) => {
                            let _ = request.reply.send(Err(LogError::Closed));
                        }
                        WriterMessage::Close(reply) => close_replies.push(reply),
                        WriterMessage::Roll { reply, .. } => {
                            let _ = reply.send(Err(LogError::Closed));
                        }
                    }
                }
                for reply in close_replies {
                    let _ = reply.send(());
                }
                return;
            }
        }
        self.finish();
    }

    /// Seals a partition's active segment if it holds records, durably, and publishes the new
    /// segment list; a failure stops the writer as a failed append does.
    fn roll_partition(&mut self, index: usize) -> Result<bool, LogError> {
        if let Some(reason) = &self.failure {
            return Err(LogError::WriterFailed {
                reason: reason.clone(),
            });
        }
        let settings = self.settings;
        let Some(partition) = self.partitions.get_mut(index) else {
            return Ok(false);
        };
        if partition.active_written + partition.buffer.len() as u64 <= SEGMENT_HEADER_LEN {
            return Ok(false);
        }
        let rolled = partition.roll(settings);
        let newly_touched = !partition.touched;
        partition.touched = true;
        if newly_touched {
            self.touched.push(index);
        }
        let result = rolled.and_then(|()| self.write_and_sync());
        match result {
            Ok(()) => {
                self.publish();
                Ok(true)
            }
            Err(error) => {
                let reason = error.to_string();
                tracing::error!(error = %error, "sealing a segment failed; the log accepts no more appends until reopened");
                self.shared.record_failure(&reason);
                self.failure = Some(reason);
                for index in self.touched.drain(..) {
                    self.partitions[index].touched = false;
                }
                Err(error)
            }
        }
    }

    /// Writes one batch durably and answers its requests.
    fn process_batch(&mut self, batch: &mut Vec<AppendRequest>) {
        if batch.is_empty() {
            return;
        }
        if let Some(reason) = &self.failure {
            for request in batch.drain(..) {
                let _ = request.reply.send(Err(LogError::WriterFailed {
                    reason: reason.clone(),
                }));
            }
            return;
        }
        let now_ms = now_ms();
        self.dedup.expire(now_ms);
        let mut outcomes = Vec::with_capacity(batch.len());
        let result = self
            .encode_batch(batch, now_ms, &mut outcomes)
            .and_then(|()| self.write_and_sync());
        match result {
            Ok(()) => {
                self.publish();
                for (request, outcomes) in batch.drain(..).zip(outcomes) {
                    let AppendRequest { reply, permit, .. } = request;
                    drop(permit);
                    let _ = reply.send(Ok(outcomes));
                }
            }
            Err(error) => {
                let reason = error.to_string();
                tracing::error!(error = %error, "writing to the event log failed; it accepts no more appends until reopened");
                self.shared.record_failure(&reason);
                self.failure = Some(reason.clone());
                for index in self.touched.drain(..) {
                    self.partitions[index].touched = false;
                }
                for request in batch.drain(..) {
                    let _ = request.reply.send(Err(LogError::WriterFailed {
                        reason: reason.clone(),
                    }));
                }
            }
        }
    }

    /// Deduplicates, assigns offsets and encodes every record of the batch.
    fn encode_batch(
        &mut self,
        batch: &[AppendRequest],
        now_ms: i64,
        outcomes: &mut Vec<Vec<AppendOutcome>>,
    ) -> Result<(), LogError> {
        for request in batch {
            let mut request_outcomes = Vec::with_capacity(request.records.len());
            for (record, routing) in request.records.iter().zip(&request.routing) {
                if let Some(hash) = routing.dedup_hash
                    && self.dedup.contains(hash)
                {
                    request_outcomes.push(AppendOutcome::Duplicate);
                    continue;
                }
                let index = routing.partition as usize;
                let partition = &mut self.partitions[index];
                if !partition.touched {
                    partition.touched = true;
                    self.touched.push(index);
                }
                let offset = partition.append(record, self.settings)?;
                if let Some(hash) = routing.dedup_hash {
                    self.dedup.insert(hash, record.timestamp_ms, now_ms);
                }
                request_outcomes.push(AppendOutcome::Stored {
                    partition: routing.partition,
                    offset,
                });
            }
            outcomes.push(request_outcomes);
        }
        Ok(())
    }

    /// Hands every touched partition's buffer to the OS, then makes them durable.
    fn write_and_sync(&mut self) -> Result<(), LogError> {
        for &index in &self.touched {
            self.partitions[index].flush()?;
        }
        if self.settings.durability == Durability::Fsync {
            let partitions = &self.partitions;
            match self.touched.as_slice() {
                [] => {}
                [only] => partitions[*only].sync()?,
                // Concurrent fsyncs let the file system fold them into one journal commit;
                // one after another, each waits for its own (measured: 3x the throughput at 8
                // partitions).
                touched => std::thread::scope(|scope| {
                    let mut syncs = Vec::with_capacity(touched.len());
                    for &index in touched {
                        let partition = &partitions[index];
                        match std::thread::Builder::new().spawn_scoped(scope, || partition.sync()) {
                            Ok(sync) => syncs.push(sync),
                            // No thread to be had: sync here instead.
                            Err(_) => partition.sync()?,
                        }
                    }
                    syncs.into_iter().try_for_each(|sync| {
                        sync.join().unwrap_or_else(|_| {
                            Err(LogError::WriterFailed {
                                reason: "an fsync thread panicked".to_owned(),
                            })
                        })
                    })
                })?,
            }
        }
        self.shared.batches_written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Shows readers what the batch wrote.
    fn publish(&mut self) {
        for index in self.touched.drain(..) {
            self.partitions[index].publish(&self.shared.partitions[index]);
        }
        self.shared
            .dedup_entries
            .store(self.dedup.len(), Ordering::Relaxed);
    }

    /// Makes everything written durable even without per-batch fsync.
    fn finish(&mut self) {
        if self.settings.durability == Durability::Fsync || self.failure.is_some() {
            return;
        }
        for partition in &self.partitions {
            if let Err(error) = partition.sync() {
                tracing::warn!(error = %error, partition = partition.partition, "fsync on close failed");
            }
        }
    }
}

impl PartitionWriter {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        partition: u32,
        dir: PathBuf,
        next_offset: u64,
        active: Arc<SegmentHandle>,
        active_file: File,
        active_written: u64,
        last_index_position: u64,
        active_max_timestamp_ms: Option<i64>,
    ) -> Self {
        Self {
            partition,
            dir,
            next_offset,
            active,
            active_file,
            active_written,
            last_index_position,
            active_max_timestamp_ms,
            buffer: Vec::new(),
            sealed_in_batch: Vec::new(),
            touched: false,
        }
    }

    /// Encodes `record` at the next offset, rolling to a new segment first if the active one
    /// is full, and returns the offset.
    fn append(&mut self, record: &Record, settings: WriteSettings) -> Result<u64, LogError> {
        let mut position = self.active_written + self.buffer.len() as u64;
        if position >= settings.segment_max_bytes && position > SEGMENT_HEADER_LEN {
            self.roll(settings)?;
            position = SEGMENT_HEADER_LEN;
        }
        let offset = self.next_offset;
        encode_frame(&mut self.buffer, offset, record)?;
        if position >= self.last_index_position + INDEX_INTERVAL_BYTES {
            self.active.push_index_entry(offset, position);
            self.last_index_position = position;
        }
        self.next_offset += 1;
        self.active_max_timestamp_ms = Some(
            self.active_max_timestamp_ms
                .map_or(record.timestamp_ms, |max| max.max(record.timestamp_ms)),
        );
        Ok(offset)
    }

    /// Seals the active segment (written and, with fsync durability, synced) and starts a new
    /// one at the next offset.
    fn roll(&mut self, settings: WriteSettings) -> Result<(), LogError> {
        self.flush()?;
        if settings.durability == Durability::Fsync {
            // The sealed segment must be complete before a later one exists: open-time recovery
            // only repairs the last segment.
            self.sync()?;
        }
        let header = SegmentHeader {
            partition: self.partition,
            base_offset: self.next_offset,
            previous_segment_max_timestamp_ms: self.active_max_timestamp_ms,
        };
        let (file, path) = create_segment(&self.dir, header, settings.durability)?;
        let handle = Arc::new(SegmentHandle::new(
            self.partition,
            self.next_offset,
            path,
            Some(Vec::new()),
        ));
        let sealed = std::mem::replace(&mut self.active, handle);
        self.sealed_in_batch.push((sealed, self.active_written));
        self.active_file = file;
        self.active_written = SEGMENT_HEADER_LEN;
        self.last_index_position = SEGMENT_HEADER_LEN;
        self.active_max_timestamp_ms = None;
        tracing::debug!(
            partition = self.partition,
            base_offset = self.next_offset,
            "started a new segment"
        );
        Ok(())
    }

    /// Writes the encoded records to the active segment with one `pwrite`.
    fn flush(&mut self) -> Result<(), LogError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.active_file
            .write_all_at(&self.buffer, self.active_written)
            .map_err(|error| {
                LogError::io(format!("writing {}", self.active.path.display()), error)
            })?;
        self.active_written += self.buffer.len() as u64;
        self.buffer.clear();
        if self.buffer.capacity() > MAX_RETAINED_BUFFER_BYTES {
            self.buffer.shrink_to(MAX_RETAINED_BUFFER_BYTES);
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), LogError> {
        self.active_file.sync_data().map_err(|error| {
            LogError::io(format!("fsyncing {}", self.active.path.display()), error)
        })
    }

    /// Publishes the durable end of this partition to readers.
    fn publish(&mut self, shared: &PartitionShared) {
        let mut view = shared
            .view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (handle, readable_len) in self.sealed_in_batch.drain(..) {
            upsert_segment(&mut view.segments, handle, readable_len);
        }
        upsert_segment(
            &mut view.segments,
            Arc::clone(&self.active),
            self.active_written,
        );
        view.durable_end_offset = self.next_offset;
        self.touched = false;
    }
}

/// Updates the readable length of the last segment if it is `handle`, or appends `handle`.
fn upsert_segment(segments: &mut Vec<SegmentView>, handle: Arc<SegmentHandle>, readable_len: u64) {
    match segments.last_mut() {
        Some(last) if Arc::ptr_eq(&last.handle, &handle) => last.readable_len = readable_len,
        _ => segments.push(SegmentView {
            handle,
            readable_len,
        }),
    }
}
