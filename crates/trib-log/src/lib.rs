//! The event log: an append-only, partitioned, durable sequence of records.
//!
//! [`EventLog`] is shaped like a partitioned broker (Kafka, NATS JetStream): a record's key
//! chooses its partition with a stable hash, every partition numbers its records with
//! consecutive offsets from 0, and named consumers commit the next offset they will read, so
//! they resume where they left off after a restart. A broker-backed implementation can follow
//! without changing callers.
//!
//! Like JetStream's `Nats-Msg-Id`, a record may carry a deduplication id: within the log's
//! deduplication window a second record with the same id is not stored, and
//! [`AppendOutcome::Duplicate`] is returned instead.
//!
//! Two implementations live here: [`EmbeddedLog`], segment files on local disk with group commit
//! (the default, and durable: `append` returns only after the records are fsynced), and
//! [`MemoryLog`], which keeps nothing across restarts (tests and the benchmark ceiling).
//!
//! The log stores opaque payload bytes; it does not know what an event is.

#[cfg(test)]
mod conformance;
mod dedup;
mod embedded;
mod error;
mod limits;
mod memory;

use async_trait::async_trait;
use bytes::Bytes;

pub use embedded::{Durability, EmbeddedLog, EmbeddedLogOptions};
pub use error::LogError;
pub use limits::{MAX_CONSUMER_NAME_BYTES, MAX_RECORD_BYTES, RECORD_OVERHEAD_BYTES};
pub use memory::{MemoryLog, MemoryLogOptions};

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Chooses the partition (see [`partition_for`]); records with one key keep their order.
    pub key: String,
    /// Records with the same id within the deduplication window are stored once.
    pub dedup_id: Option<String>,
    /// Milliseconds since the Unix epoch at which the record was received.
    pub timestamp_ms: i64,
    pub payload: Bytes,
}

/// What happened to one appended record, in the order the records were given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The record is stored durably at this position.
    Stored { partition: u32, offset: u64 },
    /// A record with the same deduplication id is already in the log; nothing was stored.
    Duplicate,
    /// Nothing was stored because the record's subject was erased (the right to erasure) and
    /// has not come back with new consent. Only a decorator that knows of erasure (the
    /// privacy layer's `SealedLog`) returns it; the logs here never do.
    Erased,
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub partition: u32,
    pub offset: u64,
    pub key: String,
    pub dedup_id: Option<String>,
    pub timestamp_ms: i64,
    pub payload: Bytes,
}

/// An append-only, partitioned, durable log of records.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Returns the number of partitions, fixed when the log was created.
    fn partition_count(&self) -> u32;

    /// Appends records; each one goes to the partition chosen by its key.
    ///
    /// When this returns `Ok`, every `Stored` record is durable (for a durable log) and visible to
    /// readers. Records of one call that share a partition get consecutive offsets in the order
    /// given. On `Err`, some records may have been stored; a retry with the same deduplication ids
    /// stores each of them at most once. [`LogError::Overloaded`] means nothing was stored and the
    /// caller should retry later; [`LogError::BatchTooLarge`] and [`LogError::RecordTooLarge`]
    /// also mean nothing was stored, but the same call will fail again.
    async fn append(&self, records: Vec<Record>) -> Result<Vec<AppendOutcome>, LogError>;

    /// Reads up to `max_records` records of `partition` starting at offset `from`.
    ///
    /// Returns fewer, or none, when the partition ends first. Only records whose append has
    /// completed are visible.
    async fn read(
        &self,
        partition: u32,
        from: u64,
        max_records: usize,
    ) -> Result<Vec<StoredRecord>, LogError>;

    /// Returns the offset the next record appended to `partition` will get.
    async fn end_offset(&self, partition: u32) -> Result<u64, LogError>;

    /// Returns the next offset `consumer` will read from `partition`, if it ever committed one.
    async fn committed_offset(
        &self,
        consumer: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError>;

    /// Durably records that `consumer` has processed `partition` up to, not including, `next`.
    ///
    /// A later commit replaces an earlier one, even with a smaller offset. Consumer names are 1
    /// to [`MAX_CONSUMER_NAME_BYTES`] bytes of any UTF-8.
    async fn commit_offset(
        &self,
        consumer: &str,
        partition: u32,
        next: u64,
    ) -> Result<(), LogError>;

    /// Flushes and stops accepting appends; later appends (and offset commits) fail with
    /// [`LogError::Closed`]. Reads keep working. Closing twice is fine.
    async fn close(&self) -> Result<(), LogError>;
}

/// A shared log is a log, so decorators (such as the privacy layer's sealing log) can wrap an
/// `Arc<dyn EventLog>`.
#[async_trait]
impl<T: EventLog + ?Sized> EventLog for std::sync::Arc<T> {
    fn partition_count(&self) -> u32 {
        (**self).partition_count()
    }
    async fn append(&self, records: Vec<Record>) -> Result<Vec<AppendOutcome>, LogError> {
        (**self).append(records).await
    }
    async fn read(
        &self,
        partition: u32,
        from: u64,
        max_records: usize,
    ) -> Result<Vec<StoredRecord>, LogError> {
        (**self).read(partition, from, max_records).await
    }
    async fn end_offset(&self, partition: u32) -> Result<u64, LogError> {
        (**self).end_offset(partition).await
    }
    async fn committed_offset(
        &self,
        consumer: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError> {
        (**self).committed_offset(consumer, partition).await
    }
    async fn commit_offset(
        &self,
        consumer: &str,
        partition: u32,
        next: u64,
    ) -> Result<(), LogError> {
        (**self).commit_offset(consumer, partition, next).await
    }
    async fn close(&self) -> Result<(), LogError> {
        (**self).close().await
    }
}

/// What [`Compactable::blank`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlankReport {
    /// Records whose payload was emptied (records already empty are not counted).
    pub blanked: u64,
    /// Requested offsets that could not be blanked: past the partition's end, or (for logs that
    /// cannot seal on demand) in its active segment; ascending.
    pub not_sealed: Vec<u64>,
}

/// A log whose records can be blanked in place: the payload becomes empty while the offset,
/// key, deduplication id and timestamp stay, so offsets stay consecutive, consumers' positions
/// stay valid and deduplication still recognises the record. An empty payload is the log's
/// contract for "removed" (retention, erasure); readers skip it.
#[async_trait]
pub trait Compactable: Send + Sync {
    /// Empties the payloads of the records of `partition` at `offsets`, durably before it
    /// returns. Offsets that cannot be blanked now are reported, not an error.
    async fn blank(&self, partition: u32, offsets: &[u64]) -> Result<BlankReport, LogError>;
}

#[async_trait]
impl<T: Compactable + ?Sized> Compactable for std::sync::Arc<T> {
    async fn blank(&self, partition: u32, offsets: &[u64]) -> Result<BlankReport, LogError> {
        (**self).blank(partition, offsets).await
    }
}

/// Returns the partition of `key` among `partition_count` partitions.
///
/// The hash (XXH3-64, seed 0) is part of the on-disk contract: changing it would move keys
/// between partitions of an existing log.
pub fn partition_for(key: &str, partition_count: u32) -> u32 {
    let hash = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
    (hash % u64::from(partition_count.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::partition_for;

    /// The partition of a key is part of the on-disk contract: these values must never change.
    #[test]
    fn partition_for_is_pinned() {
        assert_eq!(partition_for("", 8), 2);
        assert_eq!(partition_for("user-42", 8), 5);
        assert_eq!(partition_for("user-42", 16), 13);
        assert_eq!(partition_for("anonymous-1f0c", 16), 14);
        assert_eq!(partition_for("user-42", 1), 0);
        assert_eq!(partition_for("user-42", 0), 0, "0 partitions is taken as 1");
    }
}
