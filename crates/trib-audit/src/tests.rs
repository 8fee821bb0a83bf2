//! Tampering of every kind is detected; crashes are recovered without hiding anything.

use std::fs;
use std::path::{Path, PathBuf};

use trib_store::ProfileId;

use super::*;

const KEY: [u8; 32] = [7; 32];

fn key() -> AuditKey {
    AuditKey::new(&KEY)
}

fn record(status: u16) -> AuditRecord {
    AuditRecord {
        actor: Actor::api_key("k1").unwrap(),
        action: Action::Read,
        purpose: Purpose::SUPPORT,
        resource: Resource::new("/v1/profiles/{id}"),
        subject: Some(ProfileRef::profile(ProfileId::from_bytes(
            [status as u8; 16],
        ))),
        outcome: Outcome::Status(status),
    }
}

/// A log in a temporary directory with `n` entries (statuses 200, 201, ...), closed.
fn log_with(n: u16) -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("audit");
    let log = AuditLog::open(&dir, key(), AuditOptions::default()).unwrap();
    for index in 0..n {
        log.append_blocking(vec![record(200 + index)]).unwrap();
    }
    log.close();
    (root, dir)
}

fn segment(dir: &Path) -> PathBuf {
    dir.join("segment-00000000000000000001.ndjson")
}

fn lines(dir: &Path) -> Vec<String> {
    fs::read_to_string(segment(dir))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(dir: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(segment(dir), text).unwrap();
}

#[track_caller]
fn assert_bad(dir: &Path, seq: u64, reason_part: &str) {
    let report = verify(dir, &key()).unwrap();
    let (bad_seq, reason) = report.first_bad.clone().expect("tampering went unnoticed");
    assert_eq!(bad_seq, seq, "{reason}");
    assert!(
        reason.contains(reason_part),
        "reason `{reason}` lacks `{reason_part}`"
    );
}

#[test]
fn an_untouched_log_verifies_and_exports_with_a_summary() {
    let (_root, dir) = log_with(5);
    let report = verify(&dir, &key()).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.entries, 5);
    assert_eq!(report.head.as_ref().unwrap().seq, 5);
    let first: AuditEntry = serde_json::from_str(&lines(&dir)[0]).unwrap();
    assert_eq!(first.seq, 1);
    assert_eq!(first.prev, "0".repeat(64));
    assert_eq!(first.actor.to_string(), "key:k1");
    assert_eq!(
        first.subject.unwrap().profile_id().to_string(),
        format!("p_{}", "c8".repeat(16))
    );

    let mut out = Vec::new();
    let summary = export(&dir, &key(), None, None, &mut out).unwrap();
    assert_eq!(summary.exported, 5);
    let text = String::from_utf8(out).unwrap();
    let exported: Vec<&str> = text.lines().collect();
    assert_eq!(exported.len(), 6);
    assert_eq!(
        exported[..5],
        lines(&dir).iter().map(String::as_str).collect::<Vec<_>>()[..]
    );
    let last: serde_json::Value = serde_json::from_str(exported[5]).unwrap();
    assert_eq!(last["summary"]["intact"], true);
    assert_eq!(last["summary"]["entries"], 5);
    assert_eq!(last["summary"]["head"]["seq"], 5);

    // A time range excludes what is outside it.
    let future = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    let mut out = Vec::new();
    let summary = export(&dir, &key(), Some(future), None, &mut out).unwrap();
    assert_eq!(summary.exported, 0);
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 1);
}

#[test]
fn an_edited_field_is_detected_at_its_entry() {
    let (_root, dir) = log_with(5);
    let mut edited = lines(&dir);
    edited[2] = edited[2].replace("status:202", "status:404");
    write_lines(&dir, &edited);
    assert_bad(&dir, 3, "mac does not match");
}

#[test]
fn an_equivalent_json_rewrite_is_detected_too() {
    let (_root, dir) = log_with(5);
    let mut edited = lines(&dir);
    edited[1] = edited[1].replacen("{\"seq\":2", "{ \"seq\": 2", 1);
    write_lines(&dir, &edited);
    assert_bad(&dir, 2, "edited");
}

#[test]
fn a_deleted_line_is_detected() {
    let (_root, dir) = log_with(5);
    let mut edited = lines(&dir);
    edited.remove(2);
    write_lines(&dir, &edited);
    assert_bad(&dir, 3, "seq 4 where seq 3 was expected");
}

#[test]
fn swapped_lines_are_detected() {
    let (_root, dir) = log_with(5);
    let mut edited = lines(&dir);
    edited.swap(1, 2);
    write_lines(&dir, &edited);
    assert_bad(&dir, 2, "reordered");
}

#[test]
fn a_swap_that_renumbers_the_entries_is_detected() {
    let (_root, dir) = log_with(5);
    let mut edited = lines(&dir);
    edited.swap(1, 2);
    edited[1] = edited[1].replace("\"seq\":3", "\"seq\":2");
    edited[2] = edited[2].replace("\"seq\":2", "\"seq\":3");
    write_lines(&dir, &edited);
    assert_bad(&dir, 2, "prev does not match");
}

#[test]
fn a_truncated_tail_is_detected_through_the_head() {
    let (_root, dir) = log_with(5);
    let mut edited = lines(&dir);
    edited.truncate(3);
    write_lines(&dir, &edited);
    assert_bad(&dir, 4, "the head names seq 5 but the log ends at seq 3");

    // Pointing the head at the new last entry needs the key.
    let last: AuditEntry = serde_json::from_str(&edited[2]).unwrap();
    let mut head = read_head_file(&dir);
    head["seq"] = 3.into();
    head["mac"] = last.mac.into();
    fs::write(dir.join(HEAD_FILE), head.to_string()).unwrap();
    assert_bad(&dir, 3, "the head file fails its mac");

    fs::remove_file(dir.join(HEAD_FILE)).unwrap();
    assert_bad(&dir, 3, "the head file is missing");
}

fn read_head_file(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join(HEAD_FILE)).unwrap()).unwrap()
}

#[test]
fn a_forged_inserted_line_is_detected() {
    let (_root, dir) = log_with(5);
    let mut edited = lines(&dir);
    // The forger copies entry 3, claims to be it, and renumbers the rest, but cannot compute
    // a mac without the key.
    let mut forged: AuditEntry = serde_json::from_str(&edited[2]).unwrap();
    forged.outcome = Outcome::Status(403);
    forged.mac = "ab".repeat(32);
    edited.insert(2, String::from_utf8(forged.line()).unwrap());
    write_lines(&dir, &edited);
    assert_bad(&dir, 3, "mac does not match");
}

#[test]
fn another_key_fails_at_the_first_entry() {
    let (_root, dir) = log_with(3);
    let report = verify(&dir, &AuditKey::new(&[8; 32])).unwrap();
    let (seq, reason) = report.first_bad.unwrap();
    assert_eq!(seq, 1);
    assert!(reason.contains("audit key"), "{reason}");
}

#[test]
fn a_removed_segment_is_detected() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("audit");
    let options = AuditOptions {
        max_segment_bytes: 600,
        ..AuditOptions::default()
    };
    let log = AuditLog::open(&dir, key(), options.clone()).unwrap();
    for index in 0..12 {
        log.append_blocking(vec![record(200 + index)]).unwrap();
    }
    log.close();
    let segments = log::list_segments(&dir).unwrap();
    assert!(segments.len() >= 3, "{segments:?}");
    assert!(verify(&dir, &key()).unwrap().is_intact());
    let (first_of_second, second) = segments[1].clone();
    let (first_of_third, _) = segments[2].clone();
    fs::remove_file(second).unwrap();
    let report = verify(&dir, &key()).unwrap();
    let (seq, reason) = report.first_bad.unwrap();
    assert_eq!(seq, first_of_second, "{reason}");
    assert!(
        reason.contains(&format!("starts at seq {first_of_third}")),
        "{reason}"
    );
}

#[test]
fn reopening_continues_the_chain() {
    let (_root, dir) = log_with(3);
    let log = AuditLog::open(&dir, key(), AuditOptions::default()).unwrap();
    assert_eq!(
        log.append_blocking(vec![record(300), record(301)]).unwrap(),
        5
    );
    log.close();
    let report = verify(&dir, &key()).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.entries, 5);
    assert!(report.recoveries.is_empty());
    let fourth: AuditEntry = serde_json::from_str(&lines(&dir)[3]).unwrap();
    let third: AuditEntry = serde_json::from_str(&lines(&dir)[2]).unwrap();
    assert_eq!(fourth.prev, third.mac);
}

#[test]
fn a_torn_last_line_is_reported_then_recorded_as_recovered_on_open() {
    let (_root, dir) = log_with(3);
    let mut bytes = fs::read(segment(&dir)).unwrap();
    bytes.extend_from_slice(b"{\"seq\":4,\"at\":\"20");
    fs::write(segment(&dir), &bytes).unwrap();
    assert_bad(&dir, 4, "torn last line");

    let log = AuditLog::open(&dir, key(), AuditOptions::default()).unwrap();
    assert_eq!(log.append_blocking(vec![record(250)]).unwrap(), 5);
    log.close();
    let report = verify(&dir, &key()).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.recoveries, vec![4]);
    let recovery: AuditEntry = serde_json::from_str(&lines(&dir)[3]).unwrap();
    assert_eq!(recovery.actor, Actor::System);
    assert_eq!(recovery.outcome, Outcome::TornTailRemoved(17));
    let aside: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            name.starts_with("torn-").then_some(name)
        })
        .collect();
    assert_eq!(aside.len(), 1, "the torn bytes are kept aside");
}

#[test]
fn a_damaged_tail_is_not_continued() {
    let (_root, dir) = log_with(3);
    let mut edited = lines(&dir);
    edited[2] = edited[2].replace("status:202", "status:500");
    write_lines(&dir, &edited);
    let error = AuditLog::open(&dir, key(), AuditOptions::default()).unwrap_err();
    assert!(matches!(error, AuditError::Damaged { .. }), "{error}");
    assert!(error.to_string().contains("seq 3"), "{error}");

    let (_root, dir) = log_with(3);
    let mut edited = lines(&dir);
    edited.truncate(2);
    write_lines(&dir, &edited);
    let error = AuditLog::open(&dir, key(), AuditOptions::default()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("acknowledged entries are missing"),
        "{error}"
    );
}

#[test]
fn one_process_at_a_time_writes_the_log() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("audit");
    let first = AuditLog::open(&dir, key(), AuditOptions::default()).unwrap();
    let second = AuditLog::open(&dir, key(), AuditOptions::default());
    assert!(matches!(second, Err(AuditError::Locked { .. })));
    first.close();
    assert!(matches!(
        first.append_blocking(vec![record(200)]),
        Err(AuditError::Closed)
    ));
    AuditLog::open(&dir, key(), AuditOptions::default()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_group_committed_into_one_chain() {
    let root = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(AuditLog::open_in_data_dir(root.path()).unwrap());
    let mut tasks = Vec::new();
    for task in 0..50_u16 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for index in 0..20 {
                seqs.push(
                    log.append(vec![record(200 + (task + index) % 300)])
                        .await
                        .unwrap(),
                );
            }
            seqs
        }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.extend(task.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=1000).collect::<Vec<u64>>());
    log.close();
    let report = verify_data_dir(root.path()).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.entries, 1000);
}

#[test]
fn the_key_file_is_private_created_once_and_never_printed() {
    let root = tempfile::tempdir().unwrap();
    assert!(matches!(
        AuditKey::load(root.path()),
        Err(AuditError::KeyMissing { .. })
    ));
    let created = AuditKey::load_or_create(root.path()).unwrap();
    let loaded = AuditKey::load(root.path()).unwrap();
    assert_eq!(created.mac(&[b"x"]), loaded.mac(&[b"x"]));
    assert_eq!(format!("{created:?}"), "AuditKey(***)");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(root.path().join(AUDIT_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn entries_about_a_set_of_profiles_are_read_without_touching_the_chain() {
    // Entries with statuses 200..=205 name profiles [200; 16] .. [205; 16]; a system entry has none.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("audit");
    let log = AuditLog::open(&dir, key(), AuditOptions::default()).unwrap();
    for index in 0..6 {
        log.append_blocking(vec![record(200 + index)]).unwrap();
    }
    log.append_blocking(vec![AuditRecord {
        subject: None,
        ..record(299)
    }])
    .unwrap();
    // A second entry about profile 201, later in the chain.
    log.append_blocking(vec![record(201)]).unwrap();
    let wanted: std::collections::BTreeSet<ProfileId> = [201u8, 204]
        .into_iter()
        .map(|byte| ProfileId::from_bytes([byte; 16]))
        .collect();

    // While the log is open (a server appending), then after a torn last line.
    let found = entries_about(&dir, &wanted).unwrap();
    assert_eq!(found.scanned, 8);
    assert_eq!(found.unreadable, 0);
    let seqs: Vec<u64> = found.entries.iter().map(|entry| entry.seq).collect();
    assert_eq!(seqs, vec![2, 5, 8]);
    assert!(found.entries.iter().all(|entry| {
        entry
            .subject
            .as_ref()
            .is_some_and(|subject| wanted.contains(&subject.profile_id()))
    }));
    log.close();
    let mut bytes = fs::read(segment(&dir)).unwrap();
    bytes.extend_from_slice(br#"{"seq":9,"at":"#);
    fs::write(segment(&dir), &bytes).unwrap();
    let after = entries_about(&dir, &wanted).unwrap();
    assert_eq!(after.entries, found.entries, "a torn last line is not read");
    assert_bad(&dir, 9, "torn last line");

    // An edited line is skipped and counted, not returned; nothing asked, nothing read.
    let mut edited = lines(&dir);
    edited.truncate(8);
    edited[1] = edited[1].replace("\"status:201\"", "\"status:202\"");
    write_lines(&dir, &edited);
    let damaged = entries_about(&dir, &wanted).unwrap();
    assert_eq!(damaged.unreadable, 0, "still in the writer's form");
    assert_eq!(damaged.entries.len(), 3, "the reader does not check macs");
    assert_bad(&dir, 2, "mac does not match");
    edited[1].insert(0, ' ');
    write_lines(&dir, &edited);
    let damaged = entries_about(&dir, &wanted).unwrap();
    assert_eq!(damaged.unreadable, 1);
    assert_eq!(
        damaged.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![5, 8]
    );
    assert!(
        entries_about(&dir, &Default::default())
            .unwrap()
            .entries
            .is_empty()
    );
    assert!(
        entries_about(&root.path().join("none"), &wanted)
            .unwrap()
            .entries
            .is_empty()
    );
}
