//! Behaviour only the embedded log has: surviving reopen, crash recovery, segments, the
//! directory contract. The behaviour shared with the memory log is in the conformance suite.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::files::{partition_dir, segment_path};
use super::format::SEGMENT_HEADER_LEN;
use super::*;
use crate::conformance::record;
use crate::limits::encoded_record_bytes;

fn options(dir: &Path, partitions: u32) -> EmbeddedLogOptions {
    EmbeddedLogOptions {
        partitions,
        ..EmbeddedLogOptions::new(dir)
    }
}

fn open(options: &EmbeddedLogOptions) -> EmbeddedLog {
    EmbeddedLog::open(options.clone()).unwrap()
}

/// `count` records of key "key" (so all in one partition), each of the same encoded size.
fn numbered(count: usize, first: usize) -> Vec<Record> {
    (first..first + count)
        .map(|number| {
            record(
                "key",
                Some(&format!("id-{number:06}")),
                &format!("payload-{number:06}"),
            )
        })
        .collect()
}

fn offsets_of(outcomes: &[AppendOutcome]) -> Vec<u64> {
    outcomes
        .iter()
        .map(|outcome| match outcome {
            AppendOutcome::Stored { offset, .. } => *offset,
            other => panic!("expected stored, got {other:?}"),
        })
        .collect()
}

fn segment_files(dir: &Path, partition: u32) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(partition_dir(dir, partition))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    files.sort();
    files
}

fn last_segment(dir: &Path, partition: u32) -> PathBuf {
    segment_files(dir, partition).pop().unwrap()
}

async fn payloads(log: &EmbeddedLog, partition: u32) -> Vec<String> {
    log.read(partition, 0, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(index, stored)| {
            assert_eq!(stored.offset, index as u64);
            String::from_utf8(stored.payload.to_vec()).unwrap()
        })
        .collect()
}

fn expected_payloads(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|number| format!("payload-{number:06}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_and_dedup_index_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path(), 3);
    let records: Vec<Record> = (0..60)
        .map(|number| {
            record(
                &format!("user-{}", number % 7),
                Some(&format!("id-{number}")),
                &format!("payload-{number}"),
            )
        })
        .collect();
    let first_outcomes = {
        let log = open(&options);
        let outcomes = log.append(records.clone()).await.unwrap();
        log.close().await.unwrap();
        outcomes
    };

    let log = open(&options);
    assert_eq!(log.dedup_index_len(), 60);
    for (record, outcome) in records.iter().zip(&first_outcomes) {
        let AppendOutcome::Stored { partition, offset } = *outcome else {
            panic!("expected stored");
        };
        let read = log.read(partition, offset, 1).await.unwrap();
        assert_eq!(read[0].payload, record.payload);
        assert_eq!(read[0].dedup_id, record.dedup_id);
    }
    let again = log.append(records).await.unwrap();
    assert!(
        again
            .iter()
            .all(|outcome| *outcome == AppendOutcome::Duplicate)
    );

    let before: Vec<u64> = {
        let mut ends = Vec::new();
        for partition in 0..3 {
            ends.push(log.end_offset(partition).await.unwrap());
        }
        ends
    };
    let fresh = log
        .append(vec![record("user-1", Some("new"), "new")])
        .await
        .unwrap();
    let AppendOutcome::Stored { partition, offset } = fresh[0] else {
        panic!("expected stored");
    };
    assert_eq!(
        offset, before[partition as usize],
        "offsets continue after reopen"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_without_close_keeps_acknowledged_records() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path(), 1);
    {
        let log = open(&options);
        log.append(numbered(10, 0)).await.unwrap();
    }
    let log = open(&options);
    assert_eq!(payloads(&log, 0).await, expected_payloads(0..10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_outside_the_window_are_forgotten_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedLogOptions {
        dedup_window: Duration::from_secs(3600),
        // One record per segment: the rebuild must read sealed segments too.
        segment_max_bytes: 1,
        ..options(dir.path(), 1)
    };
    let now = crate::limits::now_ms();
    let at = |id: &str, timestamp_ms: i64| Record {
        timestamp_ms,
        ..record("key", Some(id), "payload")
    };
    {
        let log = open(&options);
        log.append(vec![
            at("old-1", now - 5 * 3_600_000),
            at("old-2", now - 4 * 3_600_000),
            at("recent-1", now - 1_800_000),
            at("recent-2", now),
            at("tail", now),
        ])
        .await
        .unwrap();
        log.close().await.unwrap();
    }
    assert_eq!(segment_files(dir.path(), 0).len(), 5);
    let log = open(&options);
    assert_eq!(log.dedup_index_len(), 3);
    let outcomes = log
        .append(vec![
            at("old-1", now),
            at("old-2", now),
            at("recent-1", now),
            at("recent-2", now),
            at("tail", now),
        ])
        .await
        .unwrap();
    assert!(matches!(
        outcomes[0],
        AppendOutcome::Stored { offset: 5, .. }
    ));
    assert!(matches!(
        outcomes[1],
        AppendOutcome::Stored { offset: 6, .. }
    ));
    assert_eq!(outcomes[2..], [AppendOutcome::Duplicate; 3]);
}

/// Appends 10 records to one partition, closes, damages the tail with `damage`, reopens and
/// checks that `survivors` records remain and the log goes on at the next offset.
async fn check_torn_tail(damage: impl FnOnce(&Path, u64), survivors: usize) {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path(), 1);
    let record_len = encoded_record_bytes(&numbered(1, 0)[0]);
    {
        let log = open(&options);
        log.append(numbered(10, 0)).await.unwrap();
        log.close().await.unwrap();
    }
    let segment = last_segment(dir.path(), 0);
    assert_eq!(
        fs::metadata(&segment).unwrap().len(),
        SEGMENT_HEADER_LEN + 10 * record_len
    );
    damage(&segment, record_len);

    {
        let log = open(&options);
        assert_eq!(payloads(&log, 0).await, expected_payloads(0..survivors));
        assert_eq!(log.end_offset(0).await.unwrap(), survivors as u64);
        assert_eq!(
            fs::metadata(&segment).unwrap().len(),
            SEGMENT_HEADER_LEN + survivors as u64 * record_len,
            "the torn tail is truncated away"
        );
        let outcomes = log.append(numbered(2, 100)).await.unwrap();
        assert_eq!(
            offsets_of(&outcomes),
            vec![survivors as u64, survivors as u64 + 1]
        );
        // A record lost with the tail was never stored, so its id is not remembered.
        if survivors < 10 {
            let retry = log.append(numbered(1, 9)).await.unwrap();
            assert!(matches!(retry[0], AppendOutcome::Stored { .. }));
        }
    }
    let log = open(&options);
    let mut expected = expected_payloads(0..survivors);
    expected.extend(expected_payloads(100..102));
    if survivors < 10 {
        expected.extend(expected_payloads(9..10));
    }
    assert_eq!(payloads(&log, 0).await, expected);
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn truncate_by(path: &Path, bytes: u64) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len - bytes).unwrap();
}

fn flip_byte(path: &Path, position: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[position as usize] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_of_garbage_bytes_is_truncated() {
    check_torn_tail(|path, _| append_bytes(path, &[0xab; 37]), 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_of_zero_bytes_is_truncated() {
    check_torn_tail(|path, _| append_bytes(path, &[0; 4096]), 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_of_a_partial_length_prefix_is_truncated() {
    check_torn_tail(|path, _| append_bytes(path, &[7, 0, 0]), 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_cut_in_the_middle_is_truncated() {
    check_torn_tail(|path, record_len| truncate_by(path, record_len / 2), 9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_record_failing_its_checksum_is_truncated() {
    check_torn_tail(
        |path, _| flip_byte(path, fs::metadata(path).unwrap().len() - 3),
        9,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_record_before_valid_ones_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path(), 1);
    let record_len = encoded_record_bytes(&numbered(1, 0)[0]);
    {
        let log = open(&options);
        log.append(numbered(5, 0)).await.unwrap();
    }
    let segment = last_segment(dir.path(), 0);
    let third_record = SEGMENT_HEADER_LEN + 2 * record_len;
    flip_byte(&segment, third_record + record_len - 2);

    match EmbeddedLog::open(options.clone()) {
        Err(LogError::Corrupt {
            path,
            offset,
            reason,
        }) => {
            assert_eq!(path, segment);
            assert_eq!(offset, third_record);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(
        fs::metadata(&segment).unwrap().len(),
        SEGMENT_HEADER_LEN + 5 * record_len,
        "nothing was truncated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_length_before_valid_records_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path(), 1);
    let record_len = encoded_record_bytes(&numbered(1, 0)[0]);
    {
        let log = open(&options);
        log.append(numbered(5, 0)).await.unwrap();
    }
    let segment = last_segment(dir.path(), 0);
    // The length prefix of the second record now claims far more than the file holds.
    flip_byte(&segment, SEGMENT_HEADER_LEN + record_len + 3);
    assert!(matches!(
        EmbeddedLog::open(options.clone()),
        Err(LogError::Corrupt { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_record_in_a_sealed_segment_fails_the_read() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedLogOptions {
        segment_max_bytes: 1024,
        ..options(dir.path(), 1)
    };
    {
        let log = open(&options);
        log.append(numbered(100, 0)).await.unwrap();
    }
    let first_segment = segment_files(dir.path(), 0).remove(0);
    let record_len = encoded_record_bytes(&numbered(1, 0)[0]);
    // In the payload of the second record: the header-only scan on open does not notice.
    flip_byte(&first_segment, SEGMENT_HEADER_LEN + 2 * record_len - 3);

    let log = open(&options);
    match log.read(0, 0, 10).await {
        Err(LogError::Corrupt { path, offset, .. }) => {
            assert_eq!(path, first_segment);
            assert_eq!(offset, SEGMENT_HEADER_LEN + record_len);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let later = log.read(0, 50, 10).await.unwrap();
    assert_eq!(later.len(), 10, "other segments stay readable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_segment_creation_is_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path(), 1);
    {
        let log = open(&options);
        log.append(numbered(3, 0)).await.unwrap();
    }
    let partition = partition_dir(dir.path(), 0);
    fs::write(segment_path(&partition, 3), [b'T', b'R', b'I']).unwrap();

    let log = open(&options);
    assert_eq!(segment_files(dir.path(), 0).len(), 1);
    let outcomes = log.append(numbered(2, 3)).await.unwrap();
    assert_eq!(offsets_of(&outcomes), vec![3, 4]);
    assert_eq!(payloads(&log, 0).await, expected_payloads(0..5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_roll_over_and_reads_span_them() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedLogOptions {
        segment_max_bytes: 1024,
        ..options(dir.path(), 1)
    };
    let record_len = encoded_record_bytes(&numbered(1, 0)[0]);
    let per_segment = (1024 - SEGMENT_HEADER_LEN).div_ceil(record_len);
    {
        let log = open(&options);
        for call in 0..10 {
            let outcomes = log.append(numbered(20, call * 20)).await.unwrap();
            let first = call as u64 * 20;
            assert_eq!(
                offsets_of(&outcomes),
                (first..first + 20).collect::<Vec<_>>()
            );
        }
        assert_eq!(payloads(&log, 0).await, expected_payloads(0..200));
        let middle = log.read(0, 137, 30).await.unwrap();
        assert_eq!(
            middle
                .iter()
                .map(|stored| stored.offset)
                .collect::<Vec<_>>(),
            (137..167).collect::<Vec<_>>()
        );
    }
    let files = segment_files(dir.path(), 0);
    assert_eq!(files.len() as u64, 200_u64.div_ceil(per_segment));
    let names: Vec<String> = files
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names[0], "00000000000000000000.log");
    assert_eq!(names[1], format!("{per_segment:020}.log"));
    for path in &files[..files.len() - 1] {
        let len = fs::metadata(path).unwrap().len();
        assert!(len >= 1024 && len < 1024 + record_len, "{len}");
    }

    let log = open(&options);
    assert_eq!(payloads(&log, 0).await, expected_payloads(0..200));
    let middle = log.read(0, 137, 30).await.unwrap();
    assert_eq!(middle[0].offset, 137);
    assert_eq!(middle.len(), 30);
    let outcomes = log.append(numbered(5, 200)).await.unwrap();
    assert_eq!(offsets_of(&outcomes), (200..205).collect::<Vec<_>>());
    assert_eq!(payloads(&log, 0).await, expected_payloads(0..205));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_index_finds_records_in_large_segments() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedLogOptions {
        segment_max_bytes: 256 * 1024,
        // Without deduplication nothing scans sealed segments on open.
        dedup_window: Duration::ZERO,
        ..options(dir.path(), 1)
    };
    let big = |number: usize| Record {
        payload: Bytes::from(format!("payload-{number:06}-{}", "x".repeat(480))),
        ..record("key", None, "")
    };
    let check = |log: EmbeddedLog| async move {
        for from in [0_u64, 1, 499, 500, 1234, 1999, 2999] {
            let read = log.read(0, from, 3).await.unwrap();
            assert_eq!(read.len(), 3.min(3000 - from as usize));
            for (index, stored) in read.iter().enumerate() {
                let number = from as usize + index;
                assert_eq!(stored.offset, number as u64);
                assert!(
                    stored
                        .payload
                        .starts_with(format!("payload-{number:06}-").as_bytes())
                );
            }
        }
    };
    {
        let log = open(&options);
        for call in 0..30 {
            log.append((call * 100..call * 100 + 100).map(big).collect())
                .await
                .unwrap();
        }
        check(log).await;
    }
    assert!(segment_files(dir.path(), 0).len() >= 5);
    // After reopen, sealed segments build their index lazily on first read.
    check(open(&options)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_during_writes_see_only_complete_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(&EmbeddedLogOptions {
        segment_max_bytes: 8 * 1024,
        ..options(dir.path(), 1)
    }));
    let writer = {
        let log = Arc::clone(&log);
        tokio::spawn(async move {
            for call in 0..100 {
                log.append(numbered(20, call * 20)).await.unwrap();
            }
        })
    };
    let mut next = 0_u64;
    while next < 2000 {
        let read = log.read(0, next, 64).await.unwrap();
        let end = log.end_offset(0).await.unwrap();
        assert!(
            next + read.len() as u64 <= end,
            "read past the published end"
        );
        for stored in read {
            assert_eq!(stored.offset, next);
            assert_eq!(
                stored.payload,
                Bytes::from(format!("payload-{next:06}")),
                "record {next}"
            );
            next += 1;
        }
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    assert_eq!(log.end_offset(0).await.unwrap(), 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_group_commits() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(&options(dir.path(), 4)));
    let barrier = Arc::new(tokio::sync::Barrier::new(400));
    let mut tasks = Vec::new();
    for task in 0..400 {
        let log = Arc::clone(&log);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            log.append(vec![record(&format!("user-{task}"), None, "x")])
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let commits = log.group_commits();
    assert!(
        commits <= 200,
        "400 concurrent appends took {commits} group commits"
    );
    let mut total = 0;
    for partition in 0..4 {
        total += log.end_offset(partition).await.unwrap();
    }
    assert_eq!(total, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overloaded_calls_under_concurrency_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(&EmbeddedLogOptions {
        max_queued_records: 30,
        ..options(dir.path(), 2)
    }));
    let mut tasks = Vec::new();
    for task in 0..40 {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            let records: Vec<Record> = (0..10)
                .map(|index| {
                    let id = format!("{task}-{index}");
                    record(&format!("user-{index}"), Some(&id), &id)
                })
                .collect();
            (task, log.append(records).await)
        }));
    }
    let mut accepted = std::collections::HashSet::new();
    let mut overloaded = 0;
    for task in tasks {
        match task.await.unwrap() {
            (task, Ok(outcomes)) => {
                assert_eq!(offsets_of(&outcomes).len(), 10);
                accepted.insert(task);
            }
            (_, Err(LogError::Overloaded { .. })) => overloaded += 1,
            (_, Err(other)) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(accepted.len() + overloaded, 40);
    let mut stored_tasks = std::collections::HashMap::<usize, usize>::new();
    for partition in 0..2 {
        for stored in log.read(partition, 0, usize::MAX).await.unwrap() {
            let payload = String::from_utf8(stored.payload.to_vec()).unwrap();
            let task: usize = payload.split_once('-').unwrap().0.parse().unwrap();
            *stored_tasks.entry(task).or_default() += 1;
        }
    }
    assert_eq!(stored_tasks.len(), accepted.len());
    for (task, count) in stored_tasks {
        assert!(
            accepted.contains(&task),
            "task {task} was refused but stored"
        );
        assert_eq!(count, 10);
    }
    assert_eq!(log.queued_records(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_offsets_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path(), 2);
    {
        let log = open(&options);
        log.commit_offset("warehouse", 1, 42).await.unwrap();
        log.commit_offset("a/b c", 0, 7).await.unwrap();
        log.commit_offset("warehouse", 0, 3).await.unwrap();
    }
    let names: Vec<String> = fs::read_dir(dir.path().join(CONSUMERS_DIR))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}: no temporary files are left");
    let log = open(&options);
    assert_eq!(log.committed_offset("warehouse", 0).await.unwrap(), Some(3));
    assert_eq!(
        log.committed_offset("warehouse", 1).await.unwrap(),
        Some(42)
    );
    assert_eq!(log.committed_offset("a/b c", 0).await.unwrap(), Some(7));
    assert_eq!(log.committed_offset("a/b c", 1).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_with_another_partition_count_fails() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&options(dir.path(), 4)));
    match EmbeddedLog::open(options(dir.path(), 8)) {
        Err(LogError::Config(message)) => {
            assert!(message.contains("has 4 partitions but 8"), "{message}");
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
    drop(open(&options(dir.path(), 4)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_is_opened_once_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&options(dir.path(), 1));
    assert!(matches!(
        EmbeddedLog::open(options(dir.path(), 1)),
        Err(LogError::DirectoryInUse { .. })
    ));
    log.close().await.unwrap();
    drop(log);
    drop(open(&options(dir.path(), 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_options_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for options in [
        options(dir.path(), 0),
        options(dir.path(), EmbeddedLogOptions::MAX_PARTITIONS + 1),
        EmbeddedLogOptions {
            segment_max_bytes: 0,
            ..options(dir.path(), 1)
        },
        EmbeddedLogOptions {
            max_queued_records: 0,
            ..options(dir.path(), 1)
        },
    ] {
        assert!(matches!(
            EmbeddedLog::open(options),
            Err(LogError::Config(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fsync_records_are_still_stored_and_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedLogOptions {
        durability: Durability::None,
        segment_max_bytes: 2048,
        ..options(dir.path(), 1)
    };
    {
        let log = open(&options);
        log.append(numbered(100, 0)).await.unwrap();
        log.close().await.unwrap();
    }
    let log = open(&options);
    assert_eq!(payloads(&log, 0).await, expected_payloads(0..100));
}

/// A one-partition log whose segments roll after about three records.
fn small_segments(dir: &Path) -> EmbeddedLogOptions {
    EmbeddedLogOptions {
        segment_max_bytes: 3 * encoded_record_bytes(&numbered(1, 0)[0]),
        ..options(dir, 1)
    }
}

async fn read_all(log: &EmbeddedLog) -> Vec<StoredRecord> {
    log.read(0, 0, 1_000).await.unwrap()
}

#[tokio::test]
async fn blanking_empties_chosen_payloads_of_sealed_segments_and_keeps_everything_else() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(dir.path());
    let log = open(&options);
    for number in 0..10 {
        log.append(numbered(1, number)).await.unwrap();
    }
    assert!(segment_files(dir.path(), 0).len() >= 3);
    let before = read_all(&log).await;

    // 9 is in the active segment, which is sealed first; 42 does not exist.
    let files_before = segment_files(dir.path(), 0).len();
    let report = log.blank(0, &[1, 4, 9, 42]).await.unwrap();
    assert_eq!(report.blanked, 3);
    assert_eq!(report.not_sealed, vec![42]);
    assert_eq!(segment_files(dir.path(), 0).len(), files_before + 1);
    let check = |after: &[StoredRecord]| {
        assert_eq!(after.len(), before.len());
        for (old, new) in before.iter().zip(after) {
            assert_eq!(
                (old.offset, &old.key, &old.dedup_id, old.timestamp_ms),
                (new.offset, &new.key, &new.dedup_id, new.timestamp_ms)
            );
            if [1, 4, 9].contains(&new.offset) {
                assert!(new.payload.is_empty(), "offset {} not blanked", new.offset);
            } else {
                assert_eq!(new.payload, old.payload, "offset {} changed", new.offset);
            }
        }
    };
    check(&read_all(&log).await);
    // Reads from the middle of a rewritten segment find their start again.
    assert_eq!(log.read(0, 4, 2).await.unwrap()[0].offset, 4);
    // Blanking again changes nothing, and an empty active segment is not sealed again.
    assert_eq!(log.blank(0, &[1, 4, 9]).await.unwrap().blanked, 0);
    assert!(!log.roll(0).await.unwrap());
    assert_eq!(segment_files(dir.path(), 0).len(), files_before + 1);
    // The deduplication id of a blanked record is still known...
    assert_eq!(
        log.append(numbered(1, 1)).await.unwrap(),
        vec![AppendOutcome::Duplicate]
    );
    log.close().await.unwrap();
    drop(log);

    // ...and after a reopen, which rebuilds the index from the rewritten segments.
    let log = open(&options);
    check(&read_all(&log).await[..10]);
    assert_eq!(
        log.append(numbered(1, 4)).await.unwrap(),
        vec![AppendOutcome::Duplicate]
    );
    let appended = log.append(numbered(1, 10)).await.unwrap();
    assert_eq!(offsets_of(&appended), vec![10]);
}

#[tokio::test]
async fn a_reader_holding_the_old_segment_keeps_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&small_segments(dir.path()));
    for number in 0..7 {
        log.append(numbered(1, number)).await.unwrap();
    }
    // A read planned before the rewrite (it has the old segment's handle, not yet opened).
    let plan = log.shared.partitions[0].read_plan(0).unwrap();
    log.blank(0, &[0]).await.unwrap();
    let old = plan.read(0, 100).unwrap();
    assert_eq!(old[0].payload, Bytes::from("payload-000000"));
    assert!(read_all(&log).await[0].payload.is_empty());
}

#[tokio::test]
async fn a_crash_between_the_copy_and_the_rename_leaves_the_old_segment() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(dir.path());
    let log = open(&options);
    for number in 0..7 {
        log.append(numbered(1, number)).await.unwrap();
    }
    let before = read_all(&log).await;
    let first = log.shared.partitions[0].view.read().unwrap().segments[0].clone();
    let copy = super::compaction::write_blanked_copy(&first, &[0].into())
        .unwrap()
        .expect("a record to blank");
    assert!(copy.temporary.exists());
    // The process dies here: no rename.
    drop(log);

    let log = open(&options);
    assert!(!copy.temporary.exists(), "the unfinished copy is removed");
    assert_eq!(read_all(&log).await, before);
}
