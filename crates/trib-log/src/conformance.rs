//! The conformance suite: the behaviour every [`EventLog`] implementation must show, written
//! once against a [`LogFactory`] and run against [`MemoryLog`] and [`EmbeddedLog`] (see the
//! `conformance_tests!` invocation at the end for the list of cases).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;

use crate::limits::{QueueBound, now_ms};
use crate::{
    AppendOutcome, EmbeddedLog, EmbeddedLogOptions, EventLog, LogError, MemoryLog,
    MemoryLogOptions, Record, partition_for,
};

/// What the suite needs beyond [`EventLog`]: access to the queue bound, to fill it
/// deterministically.
pub(crate) trait ConformanceLog: EventLog {
    fn queue_bound(&self) -> &Arc<QueueBound>;
}

/// The knobs a case may turn; everything else is the implementation's default.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) partitions: u32,
    pub(crate) max_queued_records: usize,
    pub(crate) dedup_window: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            partitions: 4,
            max_queued_records: 10_000,
            dedup_window: Duration::from_secs(24 * 3600),
        }
    }
}

/// Opens a fresh, empty log for each call.
pub(crate) trait LogFactory {
    type Log: ConformanceLog;
    fn open(&self, settings: Settings) -> Self::Log;
}

pub(crate) struct MemoryFactory;

impl LogFactory for MemoryFactory {
    type Log = MemoryLog;

    fn open(&self, settings: Settings) -> MemoryLog {
        MemoryLog::with_options(MemoryLogOptions {
            partitions: settings.partitions,
            dedup_window: settings.dedup_window,
            max_queued_records: settings.max_queued_records,
            ..MemoryLogOptions::new(settings.partitions)
        })
    }
}

/// Opens embedded logs in subdirectories of one temporary directory, with small segments so
/// that every case also crosses segment boundaries.
pub(crate) struct EmbeddedFactory {
    root: tempfile::TempDir,
    opened: AtomicUsize,
}

impl EmbeddedFactory {
    pub(crate) fn new() -> Self {
        Self {
            root: tempfile::tempdir().unwrap(),
            opened: AtomicUsize::new(0),
        }
    }
}

impl LogFactory for EmbeddedFactory {
    type Log = EmbeddedLog;

    fn open(&self, settings: Settings) -> EmbeddedLog {
        let number = self.opened.fetch_add(1, Ordering::Relaxed);
        EmbeddedLog::open(EmbeddedLogOptions {
            partitions: settings.partitions,
            dedup_window: settings.dedup_window,
            max_queued_records: settings.max_queued_records,
            segment_max_bytes: 16 * 1024,
            ..EmbeddedLogOptions::new(self.root.path().join(number.to_string()))
        })
        .unwrap()
    }
}

pub(crate) fn record(key: &str, dedup_id: Option<&str>, payload: &str) -> Record {
    Record {
        key: key.to_owned(),
        dedup_id: dedup_id.map(str::to_owned),
        timestamp_ms: now_ms(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    }
}

fn stored(outcome: AppendOutcome) -> (u32, u64) {
    match outcome {
        AppendOutcome::Stored { partition, offset } => (partition, offset),
        other => panic!("expected the record to be stored, got {other:?}"),
    }
}

async fn total_end_offset(log: &impl EventLog) -> u64 {
    let mut total = 0;
    for partition in 0..log.partition_count() {
        total += log.end_offset(partition).await.unwrap();
    }
    total
}

async fn read_all(log: &impl EventLog, partition: u32) -> Vec<crate::StoredRecord> {
    log.read(partition, 0, usize::MAX).await.unwrap()
}

async fn partitioning_is_stable_and_keeps_per_key_order(factory: &impl LogFactory) {
    let log = factory.open(Settings::default());
    assert_eq!(log.partition_count(), 4);
    let keys: Vec<String> = (0..10).map(|key| format!("user-{key}")).collect();
    for call in 0..4 {
        let records: Vec<Record> = (0..5)
            .flat_map(|sequence| {
                keys.iter()
                    .map(move |key| record(key, None, &format!("{key}:{}", call * 5 + sequence)))
            })
            .collect();
        let outcomes = log.append(records.clone()).await.unwrap();
        for (record, outcome) in records.iter().zip(outcomes) {
            let (partition, _) = stored(outcome);
            assert_eq!(partition, partition_for(&record.key, 4), "{}", record.key);
        }
    }
    let mut sequences: HashMap<String, Vec<u32>> = HashMap::new();
    for partition in 0..4 {
        for stored in read_all(&log, partition).await {
            assert_eq!(stored.partition, partition);
            assert_eq!(partition_for(&stored.key, 4), partition);
            let payload = String::from_utf8(stored.payload.to_vec()).unwrap();
            let (key, sequence) = payload.split_once(':').unwrap();
            assert_eq!(key, stored.key);
            sequences
                .entry(stored.key.clone())
                .or_default()
                .push(sequence.parse().unwrap());
        }
    }
    assert_eq!(sequences.len(), keys.len());
    for (key, sequence) in sequences {
        assert_eq!(sequence, (0..20).collect::<Vec<_>>(), "order of {key}");
    }
}

async fn offsets_are_consecutive_from_zero(factory: &impl LogFactory) {
    let log = factory.open(Settings::default());
    for partition in 0..4 {
        assert_eq!(log.end_offset(partition).await.unwrap(), 0);
    }
    let mut next_expected = [0_u64; 4];
    for call in 0..30 {
        let records: Vec<Record> = (0..7)
            .map(|index| record(&format!("k{}", (call * 7 + index) % 13), None, "x"))
            .collect();
        for outcome in log.append(records).await.unwrap() {
            let (partition, offset) = stored(outcome);
            assert_eq!(offset, next_expected[partition as usize]);
            next_expected[partition as usize] += 1;
        }
    }
    for partition in 0..4u32 {
        let end = log.end_offset(partition).await.unwrap();
        assert_eq!(end, next_expected[partition as usize]);
        let offsets: Vec<u64> = read_all(&log, partition)
            .await
            .iter()
            .map(|stored| stored.offset)
            .collect();
        assert_eq!(offsets, (0..end).collect::<Vec<_>>());
    }
    assert_eq!(total_end_offset(&log).await, 210);
}

async fn concurrent_appends_get_unique_consecutive_offsets(factory: &impl LogFactory) {
    let log = Arc::new(factory.open(Settings::default()));
    let mut tasks = Vec::new();
    for task in 0..8 {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            let mut placed = Vec::new();
            for call in 0..20 {
                let records: Vec<Record> = (0..10)
                    .map(|index| {
                        let payload = format!("{task}-{call}-{index}");
                        record(&format!("key-{}", index % 5 + task), None, &payload)
                    })
                    .collect();
                let payloads: Vec<Bytes> = records.iter().map(|r| r.payload.clone()).collect();
                let outcomes = log.append(records).await.unwrap();
                placed.extend(outcomes.into_iter().map(stored).zip(payloads));
            }
            placed
        }));
    }
    let mut placed: BTreeMap<(u32, u64), Bytes> = BTreeMap::new();
    for task in tasks {
        for (position, payload) in task.await.unwrap() {
            assert!(
                placed.insert(position, payload).is_none(),
                "{position:?} given twice"
            );
        }
    }
    assert_eq!(placed.len(), 1600);
    for partition in 0..4 {
        let records = read_all(log.as_ref(), partition).await;
        assert_eq!(
            records.len() as u64,
            log.end_offset(partition).await.unwrap()
        );
        for (index, stored) in records.iter().enumerate() {
            assert_eq!(stored.offset, index as u64);
            assert_eq!(
                Some(&stored.payload),
                placed.get(&(partition, stored.offset))
            );
        }
    }
}

async fn reads_honour_start_and_limit(factory: &impl LogFactory) {
    let log = factory.open(Settings {
        partitions: 1,
        ..Settings::default()
    });
    let records: Vec<Record> = (0..50)
        .map(|index| record("key", None, &format!("payload-{index}")))
        .collect();
    log.append(records).await.unwrap();

    let middle = log.read(0, 10, 5).await.unwrap();
    let offsets: Vec<u64> = middle.iter().map(|stored| stored.offset).collect();
    assert_eq!(offsets, vec![10, 11, 12, 13, 14]);
    assert_eq!(middle[0].payload, Bytes::from_static(b"payload-10"));

    assert_eq!(
        log.read(0, 45, 100).await.unwrap().len(),
        5,
        "limited by the end"
    );
    assert_eq!(log.read(0, 0, 1).await.unwrap()[0].offset, 0);
    assert!(log.read(0, 0, 0).await.unwrap().is_empty(), "max 0");
    assert!(log.read(0, 50, 10).await.unwrap().is_empty(), "at the end");
    assert!(
        log.read(0, 1_000, 10).await.unwrap().is_empty(),
        "past the end"
    );
    assert_eq!(log.read(0, 0, usize::MAX).await.unwrap().len(), 50);
}

async fn reads_return_what_was_appended(factory: &impl LogFactory) {
    let log = factory.open(Settings::default());
    let original = Record {
        key: "customer-ü".to_owned(),
        dedup_id: Some("message-1".to_owned()),
        timestamp_ms: 1_234_567,
        payload: Bytes::from_static(&[0, 1, 2, 255, 254]),
    };
    let without_id = Record {
        dedup_id: None,
        payload: Bytes::new(),
        ..original.clone()
    };
    let outcomes = log
        .append(vec![original.clone(), without_id.clone()])
        .await
        .unwrap();
    let (partition, offset) = stored(outcomes[0]);
    let read = log.read(partition, offset, 2).await.unwrap();
    assert_eq!(read.len(), 2);
    for (stored, expected) in read.iter().zip([&original, &without_id]) {
        assert_eq!(stored.partition, partition);
        assert_eq!(stored.key, expected.key);
        assert_eq!(stored.dedup_id, expected.dedup_id);
        assert_eq!(stored.timestamp_ms, expected.timestamp_ms);
        assert_eq!(stored.payload, expected.payload);
    }
    assert_eq!(read[1].offset, offset + 1);
}

async fn duplicates_within_one_call_are_stored_once(factory: &impl LogFactory) {
    let log = factory.open(Settings::default());
    let outcomes = log
        .append(vec![
            record("a", Some("id-1"), "first"),
            record("b", Some("id-1"), "same id, other key"),
            record("a", Some("id-2"), "second"),
            record("a", Some("id-1"), "again"),
        ])
        .await
        .unwrap();
    assert!(matches!(outcomes[0], AppendOutcome::Stored { .. }));
    assert_eq!(outcomes[1], AppendOutcome::Duplicate);
    assert!(matches!(outcomes[2], AppendOutcome::Stored { .. }));
    assert_eq!(outcomes[3], AppendOutcome::Duplicate);
    assert_eq!(total_end_offset(&log).await, 2);
    let (partition, offset) = stored(outcomes[0]);
    let first = log.read(partition, offset, 1).await.unwrap();
    assert_eq!(first[0].payload, Bytes::from_static(b"first"));
}

async fn duplicates_across_calls_are_stored_once(factory: &impl LogFactory) {
    let log = factory.open(Settings::default());
    let first = log
        .append(vec![
            record("a", Some("id-1"), "x"),
            record("a", None, "no id"),
        ])
        .await
        .unwrap();
    assert!(
        first
            .iter()
            .all(|outcome| matches!(outcome, AppendOutcome::Stored { .. }))
    );
    let second = log
        .append(vec![
            record("a", Some("id-1"), "retry"),
            record("a", None, "no id"),
            record("a", Some("id-3"), "new"),
        ])
        .await
        .unwrap();
    assert_eq!(second[0], AppendOutcome::Duplicate);
    assert!(
        matches!(second[1], AppendOutcome::Stored { .. }),
        "records without an id are never duplicates"
    );
    assert!(matches!(second[2], AppendOutcome::Stored { .. }));
    assert_eq!(total_end_offset(&log).await, 4);
}

async fn concurrent_duplicates_are_stored_exactly_once(factory: &impl LogFactory) {
    let log = Arc::new(factory.open(Settings::default()));
    let ids: Vec<String> = (0..25).map(|id| format!("event-{id}")).collect();
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for task in 0..16 {
        let log = Arc::clone(&log);
        let ids = ids.clone();
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            let records: Vec<Record> = ids
                .iter()
                .map(|id| record(&format!("user-{task}"), Some(id), "payload"))
                .collect();
            barrier.wait().await;
            log.append(records).await.unwrap()
        }));
    }
    let mut stored_per_id = vec![0; ids.len()];
    for task in tasks {
        for (index, outcome) in task.await.unwrap().into_iter().enumerate() {
            if matches!(outcome, AppendOutcome::Stored { .. }) {
                stored_per_id[index] += 1;
            }
        }
    }
    assert_eq!(stored_per_id, vec![1; ids.len()]);
    assert_eq!(total_end_offset(log.as_ref()).await, ids.len() as u64);
}

async fn ids_older_than_the_window_are_not_deduplicated(factory: &impl LogFactory) {
    let log = factory.open(Settings {
        dedup_window: Duration::from_secs(3600),
        ..Settings::default()
    });
    let now = now_ms();
    let at = |id: &str, timestamp_ms: i64| Record {
        timestamp_ms,
        ..record("key", Some(id), "payload")
    };
    let three_hours_ago = now - 3 * 3_600_000;
    let half_an_hour_ago = now - 1_800_000;
    let outcomes = log
        .append(vec![
            at("old", three_hours_ago),
            at("recent", half_an_hour_ago),
        ])
        .await
        .unwrap();
    assert!(
        outcomes
            .iter()
            .all(|outcome| matches!(outcome, AppendOutcome::Stored { .. }))
    );

    let outcomes = log
        .append(vec![at("old", now), at("recent", now), at("old", now)])
        .await
        .unwrap();
    assert!(
        matches!(outcomes[0], AppendOutcome::Stored { .. }),
        "the first \"old\" is outside the window"
    );
    assert_eq!(outcomes[1], AppendOutcome::Duplicate, "inside the window");
    assert_eq!(
        outcomes[2],
        AppendOutcome::Duplicate,
        "stored again just now"
    );
}

async fn zero_window_disables_deduplication(factory: &impl LogFactory) {
    let log = factory.open(Settings {
        dedup_window: Duration::ZERO,
        ..Settings::default()
    });
    let outcomes = log
        .append(vec![
            record("a", Some("id"), "1"),
            record("a", Some("id"), "2"),
        ])
        .await
        .unwrap();
    assert!(
        outcomes
            .iter()
            .all(|outcome| matches!(outcome, AppendOutcome::Stored { .. }))
    );
}

async fn consumer_offsets_are_kept_per_consumer_and_partition(factory: &impl LogFactory) {
    let log = factory.open(Settings::default());
    assert_eq!(log.committed_offset("warehouse", 0).await.unwrap(), None);
    log.commit_offset("warehouse", 0, 5).await.unwrap();
    log.commit_offset("warehouse", 2, 7).await.unwrap();
    log.commit_offset("team/crm sync", 0, 1).await.unwrap();
    assert_eq!(log.committed_offset("warehouse", 0).await.unwrap(), Some(5));
    assert_eq!(log.committed_offset("warehouse", 1).await.unwrap(), None);
    assert_eq!(log.committed_offset("warehouse", 2).await.unwrap(), Some(7));
    assert_eq!(
        log.committed_offset("team/crm sync", 0).await.unwrap(),
        Some(1)
    );
    assert_eq!(log.committed_offset("other", 0).await.unwrap(), None);
    log.commit_offset("warehouse", 0, 3).await.unwrap();
    assert_eq!(
        log.committed_offset("warehouse", 0).await.unwrap(),
        Some(3),
        "a later commit replaces an earlier one, even a smaller one"
    );
    assert_eq!(log.committed_offset("warehouse", 2).await.unwrap(), Some(7));
}

async fn invalid_arguments_are_rejected(factory: &impl LogFactory) {
    let log = factory.open(Settings::default());
    let invalid_partition = |error: LogError| {
        matches!(
            error,
            LogError::InvalidPartition {
                partition: 4,
                count: 4
            }
        )
    };
    assert!(invalid_partition(log.read(4, 0, 1).await.unwrap_err()));
    assert!(invalid_partition(log.end_offset(4).await.unwrap_err()));
    assert!(invalid_partition(
        log.committed_offset("c", 4).await.unwrap_err()
    ));
    assert!(invalid_partition(
        log.commit_offset("c", 4, 0).await.unwrap_err()
    ));
    let long_name = "n".repeat(65);
    for name in ["", long_name.as_str()] {
        assert!(matches!(
            log.commit_offset(name, 0, 0).await,
            Err(LogError::InvalidConsumerName { .. })
        ));
        assert!(matches!(
            log.committed_offset(name, 0).await,
            Err(LogError::InvalidConsumerName { .. })
        ));
    }
    assert!(log.append(Vec::new()).await.unwrap().is_empty());
}

async fn oversized_record_is_rejected_whole(factory: &impl LogFactory) {
    let log = factory.open(Settings::default());
    let huge = Record {
        payload: Bytes::from(vec![0_u8; crate::MAX_RECORD_BYTES as usize]),
        ..record("a", Some("huge"), "")
    };
    let result = log
        .append(vec![record("a", Some("small"), "x"), huge])
        .await;
    assert!(
        matches!(result, Err(LogError::RecordTooLarge { .. })),
        "{result:?}"
    );
    assert_eq!(total_end_offset(&log).await, 0);
    // Nothing was remembered either.
    let outcomes = log
        .append(vec![record("a", Some("small"), "x")])
        .await
        .unwrap();
    assert!(matches!(outcomes[0], AppendOutcome::Stored { .. }));
}

async fn call_larger_than_queue_bound_is_rejected_whole(factory: &impl LogFactory) {
    let log = factory.open(Settings {
        max_queued_records: 10,
        ..Settings::default()
    });
    let records = |count: usize| -> Vec<Record> {
        (0..count)
            .map(|index| record(&format!("k{index}"), Some(&format!("id-{index}")), "x"))
            .collect()
    };
    let result = log.append(records(11)).await;
    assert!(
        matches!(
            result,
            Err(LogError::BatchTooLarge {
                records: 11,
                max_records: 10,
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(
        total_end_offset(&log).await,
        0,
        "nothing of the call is stored"
    );
    let outcomes = log.append(records(10)).await.unwrap();
    assert!(
        outcomes
            .iter()
            .all(|outcome| matches!(outcome, AppendOutcome::Stored { .. })),
        "the ids of the refused call were not remembered"
    );
    assert_eq!(log.queue_bound().queued_records(), 0);
}

async fn full_queue_rejects_with_overloaded_and_stores_nothing(factory: &impl LogFactory) {
    let log = factory.open(Settings {
        max_queued_records: 10,
        ..Settings::default()
    });
    // Stands for 8 records other callers have queued.
    let occupied = log.queue_bound().try_acquire(8, 0).unwrap();
    let records: Vec<Record> = (0..3)
        .map(|index| record("k", Some(&format!("id-{index}")), "x"))
        .collect();
    match log.append(records.clone()).await {
        Err(LogError::Overloaded { retry_after }) => assert!(retry_after > Duration::ZERO),
        other => panic!("expected Overloaded, got {other:?}"),
    }
    assert_eq!(total_end_offset(&log).await, 0);
    let two = log.append(records[..2].to_vec()).await.unwrap();
    assert_eq!(two.len(), 2, "two records still fit");
    drop(occupied);
    let outcomes = log.append(records).await.unwrap();
    assert_eq!(outcomes[0], AppendOutcome::Duplicate);
    assert_eq!(outcomes[1], AppendOutcome::Duplicate);
    assert!(matches!(outcomes[2], AppendOutcome::Stored { .. }));
    assert_eq!(log.queue_bound().queued_records(), 0);
}

async fn close_refuses_appends_and_commits_but_not_reads(factory: &impl LogFactory) {
    let log = factory.open(Settings::default());
    let outcomes = log.append(vec![record("a", None, "kept")]).await.unwrap();
    let (partition, offset) = stored(outcomes[0]);
    log.close().await.unwrap();
    assert!(matches!(
        log.append(vec![record("a", None, "late")]).await,
        Err(LogError::Closed)
    ));
    assert!(matches!(
        log.append(Vec::new()).await,
        Err(LogError::Closed)
    ));
    assert!(matches!(
        log.commit_offset("c", 0, 1).await,
        Err(LogError::Closed)
    ));
    let read = log.read(partition, offset, 10).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].payload, Bytes::from_static(b"kept"));
    assert_eq!(log.end_offset(partition).await.unwrap(), offset + 1);
    log.close().await.unwrap();
}

macro_rules! conformance_tests {
    ($($case:ident),* $(,)?) => {
        mod memory_log {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&super::MemoryFactory).await;
                }
            )*
        }

        mod embedded_log {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&super::EmbeddedFactory::new()).await;
                }
            )*
        }
    };
}

conformance_tests!(
    partitioning_is_stable_and_keeps_per_key_order,
    offsets_are_consecutive_from_zero,
    concurrent_appends_get_unique_consecutive_offsets,
    reads_honour_start_and_limit,
    reads_return_what_was_appended,
    duplicates_within_one_call_are_stored_once,
    duplicates_across_calls_are_stored_once,
    concurrent_duplicates_are_stored_exactly_once,
    ids_older_than_the_window_are_not_deduplicated,
    zero_window_disables_deduplication,
    consumer_offsets_are_kept_per_consumer_and_partition,
    invalid_arguments_are_rejected,
    oversized_record_is_rejected_whole,
    call_larger_than_queue_bound_is_rejected_whole,
    full_queue_rejects_with_overloaded_and_stores_nothing,
    close_refuses_appends_and_commits_but_not_reads,
);
