//! Limits and argument checks shared by both implementations.
//!
//! [`QueueBound`] is the backpressure bound: an append reserves room for all its records (and
//! their bytes) before anything is queued and gives it back when the call is answered, so a log
//! never holds more than the bound no matter how many callers there are. A call that does not
//! fit is refused whole, before anything is stored.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{LogError, Record};

/// The largest record the log accepts, counting its key, deduplication id, payload and the
/// [`RECORD_OVERHEAD_BYTES`] of framing.
pub const MAX_RECORD_BYTES: u64 = 16 * 1024 * 1024;

/// The framing bytes every stored record costs besides its key, deduplication id and payload.
pub const RECORD_OVERHEAD_BYTES: u64 = 33;

/// The longest consumer name, in bytes.
pub const MAX_CONSUMER_NAME_BYTES: usize = 64;

/// The retry hint of [`LogError::Overloaded`].
pub(crate) const OVERLOAD_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Returns how many bytes `record` takes in a segment file.
pub(crate) fn encoded_record_bytes(record: &Record) -> u64 {
    let dedup_id_len = record.dedup_id.as_ref().map_or(0, String::len);
    RECORD_OVERHEAD_BYTES
        + record.key.len() as u64
        + dedup_id_len as u64
        + record.payload.len() as u64
}

/// Checks every record against [`MAX_RECORD_BYTES`] and returns the encoded size of all of them.
pub(crate) fn check_record_sizes(records: &[Record]) -> Result<u64, LogError> {
    let mut total = 0_u64;
    for record in records {
        let bytes = encoded_record_bytes(record);
        if bytes > MAX_RECORD_BYTES {
            return Err(LogError::RecordTooLarge {
                bytes,
                max: MAX_RECORD_BYTES,
            });
        }
        total += bytes;
    }
    Ok(total)
}

/// Fails with [`LogError::InvalidPartition`] unless `partition < count`.
pub(crate) fn check_partition(partition: u32, count: u32) -> Result<(), LogError> {
    if partition < count {
        Ok(())
    } else {
        Err(LogError::InvalidPartition { partition, count })
    }
}

/// Fails with [`LogError::InvalidConsumerName`] for an empty or too long name.
pub(crate) fn check_consumer_name(name: &str) -> Result<(), LogError> {
    let reason = if name.is_empty() {
        "the name is empty"
    } else if name.len() > MAX_CONSUMER_NAME_BYTES {
        "the name is longer than 64 bytes"
    } else {
        return Ok(());
    };
    Err(LogError::InvalidConsumerName {
        name: name.to_owned(),
        reason,
    })
}

/// Returns the wall clock in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// Returns `duration` in whole milliseconds, saturating.
pub(crate) fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// How many records and bytes a log may hold between accepting an append and answering it.
#[derive(Debug)]
pub(crate) struct QueueBound {
    max_records: usize,
    max_bytes: u64,
    usage: Mutex<QueueUsage>,
}

#[derive(Debug, Default)]
struct QueueUsage {
    records: usize,
    bytes: u64,
}

/// Room reserved in a [`QueueBound`]; dropping it gives the room back.
#[derive(Debug)]
pub(crate) struct QueuePermit {
    bound: Arc<QueueBound>,
    records: usize,
    bytes: u64,
}

impl QueueBound {
    pub(crate) fn new(max_records: usize, max_bytes: u64) -> Arc<Self> {
        Arc::new(Self {
            max_records,
            max_bytes,
            usage: Mutex::new(QueueUsage::default()),
        })
    }

    /// Reserves room for `records` records of `bytes` bytes, or explains why not.
    pub(crate) fn try_acquire(
        self: &Arc<Self>,
        records: usize,
        bytes: u64,
    ) -> Result<QueuePermit, LogError> {
        if records > self.max_records || bytes > self.max_bytes {
            return Err(LogError::BatchTooLarge {
                records,
                bytes,
                max_records: self.max_records,
                max_bytes: self.max_bytes,
            });
        }
        let mut usage = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
        if usage.records + records > self.max_records || usage.bytes + bytes > self.max_bytes {
            return Err(LogError::Overloaded {
                retry_after: OVERLOAD_RETRY_AFTER,
            });
        }
        usage.records += records;
        usage.bytes += bytes;
        Ok(QueuePermit {
            bound: Arc::clone(self),
            records,
            bytes,
        })
    }

    /// Returns how many records are accepted but not yet answered.
    pub(crate) fn queued_records(&self) -> usize {
        self.usage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .records
    }

    pub(crate) fn max_records(&self) -> usize {
        self.max_records
    }
}

impl Drop for QueuePermit {
    fn drop(&mut self) {
        let mut usage = self
            .bound
            .usage
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        usage.records = usage.records.saturating_sub(self.records);
        usage.bytes = usage.bytes.saturating_sub(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_counted_and_returned() {
        let bound = QueueBound::new(10, 1_000);
        let first = bound.try_acquire(6, 100).unwrap();
        assert_eq!(bound.queued_records(), 6);
        assert!(matches!(
            bound.try_acquire(5, 100),
            Err(LogError::Overloaded { .. })
        ));
        let second = bound.try_acquire(4, 100).unwrap();
        assert_eq!(bound.queued_records(), 10);
        drop(first);
        drop(second);
        assert_eq!(bound.queued_records(), 0);
        assert!(matches!(
            bound.try_acquire(1, 1_001),
            Err(LogError::BatchTooLarge { .. })
        ));
        assert!(matches!(
            bound.try_acquire(11, 1),
            Err(LogError::BatchTooLarge { .. })
        ));
    }
}
