//! A data key is durable before anything is sealed with it: a process that dies right after
//! sealing, without any shutdown, leaves data that still opens.

use std::process::Command;
use std::sync::Arc;

use trib_privacy::{BlindIndex, Opened, Sealer, Subject};

use crate::open_store;

const CHILD_ENV: &str = "TRIB_PRIVACY_CRASH_CHILD_DIR";

/// The child half: seals a payload, writes it out, and aborts (no destructors, no close).
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let sealer = Sealer::new(open_store(&dir), Arc::new(BlindIndex::new([1; 32])));
    let subject = sealer.blind().subject_of_log_key("user-crash");
    let sealed = sealer
        .seal(&subject, b"events", b"sealed before the crash")
        .unwrap();
    std::fs::write(dir.join("sealed.bin"), &sealed).unwrap();
    std::fs::write(dir.join("subject.hex"), subject.to_hex()).unwrap();
    std::process::abort();
}

#[test]
fn a_created_key_survives_a_crash_of_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash::crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must have aborted");
    let sealed = std::fs::read(dir.path().join("sealed.bin")).unwrap();
    let subject =
        Subject::from_hex(&std::fs::read_to_string(dir.path().join("subject.hex")).unwrap())
            .unwrap();

    let sealer = Sealer::new(open_store(dir.path()), Arc::new(BlindIndex::new([1; 32])));
    assert_eq!(
        sealer.open(&subject, b"events", &sealed).unwrap(),
        Opened::Plain(b"sealed before the crash".to_vec())
    );
    // The same key is used for new data: the subject still has one key.
    let stats = sealer.keystore().stats().unwrap();
    assert_eq!(stats.deks_by_kek_version.values().sum::<u64>(), 1);
}
