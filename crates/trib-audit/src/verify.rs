//! [`verify`] walks the chain and reports the first entry that is not what the writer wrote;
//! [`export`] writes entries for auditors with a summary line carrying the head and the
//! verification result.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::AuditError;
use crate::entry::{Action, AuditEntry};
use crate::key::{AuditKey, hex, parse_hex};
use crate::log::{
    GENESIS, Head, entry_mac, file_name, head_is_authentic, list_segments, parse_entry, read_head,
};

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries that verified, in order, before the first problem (all of them when intact).
    pub entries: u64,
    /// The first problem: the sequence number where it is and why (names and numbers only).
    pub first_bad: Option<(u64, String)>,
    /// The head file, when there is one.
    pub head: Option<Head>,
    /// Sequence numbers of `recover` entries: torn last lines removed after crashes.
    pub recoveries: Vec<u64>,
}

impl VerifyReport {
    /// Whether the log is intact: every entry verified and the head matches.
    pub fn is_intact(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// Verifies the log in `dir` with `key`: every entry's sequence number, `prev` link and mac,
/// the segment file names, times that never decrease, and the head file (its own mac, and that
/// the entry it names is present with that mac).
///
/// Detects an altered, removed, inserted or reordered entry, a removed tail (the head names an
/// entry that is missing), a torn last line, and a wrong key. It cannot detect the removal of
/// the whole directory, or a rewrite by someone holding the key; compare the head with one
/// exported earlier for that (see the crate docs).
///
/// Reads the head before the segments, so it may run while a server appends: entries written
/// after the head was read verify like any other. A read that overlaps an append can see a
/// torn last line; run it again.
///
/// Fails only when a file cannot be read.
pub fn verify(dir: &Path, key: &AuditKey) -> Result<VerifyReport, AuditError> {
    let mut report = VerifyReport {
        entries: 0,
        first_bad: None,
        head: None,
        recoveries: Vec::new(),
    };
    let head = match read_head(dir) {
        Ok(head) => head,
        Err(AuditError::Damaged { .. }) => {
            report.first_bad = Some((1, "the head file is not valid".to_owned()));
            return Ok(report);
        }
        Err(error) => return Err(error),
    };
    report.head = head.clone();
    let mut expected = 1_u64;
    let mut prev = GENESIS;
    let mut last_at: Option<jiff::Timestamp> = None;
    let mut mac_at_head: Option<[u8; 32]> = None;
    let segments = list_segments(dir)?;
    let n_segments = segments.len();
    for (index, (first_seq, path)) in segments.into_iter().enumerate() {
        let name = file_name(&path);
        macro_rules! bad {
            ($($reason:tt)*) => {{
                report_bad(&mut report, expected, format!($($reason)*));
                return Ok(report);
            }};
        }
        if first_seq != expected {
            bad!(
                "{name} starts at seq {first_seq} but the chain continues at seq {expected}: entries removed or segments renamed"
            );
        }
        let bytes = fs::read(&path).map_err(|source| AuditError::Io {
            path: path.clone(),
            source,
        })?;
        let complete = bytes
            .iter()
            .rposition(|byte| *byte == b'\n')
            .map_or(0, |at| at + 1);
        for (line_index, line) in bytes[..complete]
            .split_inclusive(|byte| *byte == b'\n')
            .enumerate()
        {
            let line = &line[..line.len() - 1];
            let line_number = line_index + 1;
            let entry: AuditEntry = match serde_json::from_slice(line) {
                Ok(entry) => entry,
                Err(error) => {
                    bad!(
                        "line {line_number} of {name} is not a valid entry ({:?} error at column {})",
                        error.classify(),
                        error.column()
                    );
                }
            };
            if entry.line() != line {
                bad!("line {line_number} of {name} is not in the form the writer produces: edited");
            }
            if entry.seq != expected {
                bad!(
                    "line {line_number} of {name} has seq {} where seq {expected} was expected: entries removed, inserted or reordered",
                    entry.seq
                );
            }
            if entry.prev != hex(&prev) {
                let previous = if expected == 1 {
                    "the start of the chain".to_owned()
                } else {
                    format!("entry {}'s mac", expected - 1)
                };
                bad!("prev does not match {previous}: entries removed, inserted or reordered");
            }
            let mac = entry_mac(key, &entry);
            if parse_hex(&entry.mac) != Some(mac) {
                let hint = if report.entries == 0 {
                    " (or the audit key is not this log's)"
                } else {
                    ""
                };
                bad!("mac does not match: the entry was altered or forged{hint}");
            }
            if last_at.is_some_and(|last| entry.at < last) {
                bad!("time goes backwards: entries reordered or altered");
            }
            if entry.action == Action::Recover {
                report.recoveries.push(entry.seq);
            }
            if head.as_ref().is_some_and(|head| head.seq == entry.seq) {
                mac_at_head = Some(mac);
            }
            last_at = Some(entry.at);
            prev = mac;
            expected += 1;
            report.entries += 1;
        }
        if complete < bytes.len() {
            let what = if index + 1 == n_segments {
                "torn last line: a write cut by a crash (never acknowledged); the next open moves it aside and records a `recover` entry"
            } else {
                "incomplete line inside the chain"
            };
            bad!(
                "{name} ends with {} bytes without a newline: {what}",
                bytes.len() - complete
            );
        }
    }
    let last_seq = expected - 1;
    match &head {
        None if last_seq > 0 => {
            report_bad(&mut report, last_seq, "the head file is missing".to_owned())
        }
        None => {}
        Some(head) if !head_is_authentic(key, head) => report_bad(
            &mut report,
            head.seq,
            "the head file fails its mac: rewritten, or not this log's key".to_owned(),
        ),
        Some(head) if head.seq > last_seq => report_bad(
            &mut report,
            last_seq + 1,
            format!(
                "the head names seq {} but the log ends at seq {last_seq}: the tail was removed",
                head.seq
            ),
        ),
        Some(head) if mac_at_head.map(|mac| hex(&mac)).as_deref() != Some(head.mac.as_str()) => {
            report_bad(
                &mut report,
                head.seq,
                "the head's mac differs from this entry's".to_owned(),
            )
        }
        Some(_) => {}
    }
    Ok(report)
}

fn report_bad(report: &mut VerifyReport, seq: u64, reason: String) {
    if report.first_bad.is_none() {
        report.first_bad = Some((seq, reason));
    }
}

/// What [`export`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// Entries written (those in the time range, among the verified ones).
    pub exported: u64,
    /// The verification of the whole log.
    pub report: VerifyReport,
}

/// Writes the verified entries of `dir` whose time is in `[from, to)` to `out`, one line each
/// exactly as stored, then one summary line:
/// `{"summary":{"exported":N,"from":..,"to":..,"entries":N,"intact":true,"first_bad":null,"head":{..},"recoveries":[..]}}`.
///
/// Entries after the first bad one are not exported (their place in the chain is unknown);
/// the summary says where and why the chain broke. Keeping the summary's `head` somewhere the
/// data directory's administrators cannot write is what makes a later rewrite detectable.
pub fn export(
    dir: &Path,
    key: &AuditKey,
    from: Option<jiff::Timestamp>,
    to: Option<jiff::Timestamp>,
    out: &mut dyn Write,
) -> Result<ExportSummary, AuditError> {
    let report = verify(dir, key)?;
    let write_error = |source| AuditError::Io {
        path: "export output".into(),
        source,
    };
    let mut exported = 0_u64;
    'segments: for (_, path) in list_segments(dir)? {
        let bytes = fs::read(&path).map_err(|source| AuditError::Io {
            path: path.clone(),
            source,
        })?;
        for line in bytes.split(|byte| *byte == b'\n') {
            let Some(entry) = parse_entry(line) else {
                continue;
            };
            if entry.seq > report.entries {
                break 'segments;
            }
            if from.is_some_and(|from| entry.at < from) || to.is_some_and(|to| entry.at >= to) {
                continue;
            }
            out.write_all(line).map_err(write_error)?;
            out.write_all(b"\n").map_err(write_error)?;
            exported += 1;
        }
    }
    #[derive(Serialize)]
    struct FirstBad<'a> {
        seq: u64,
        reason: &'a str,
    }
    #[derive(Serialize)]
    struct Summary<'a> {
        exported: u64,
        from: Option<jiff::Timestamp>,
        to: Option<jiff::Timestamp>,
        entries: u64,
        intact: bool,
        first_bad: Option<FirstBad<'a>>,
        head: Option<&'a Head>,
        recoveries: &'a [u64],
    }
    #[derive(Serialize)]
    struct SummaryLine<'a> {
        summary: Summary<'a>,
    }
    let line = SummaryLine {
        summary: Summary {
            exported,
            from,
            to,
            entries: report.entries,
            intact: report.is_intact(),
            first_bad: report
                .first_bad
                .as_ref()
                .map(|(seq, reason)| FirstBad { seq: *seq, reason }),
            head: report.head.as_ref(),
            recoveries: &report.recoveries,
        },
    };
    let mut bytes =
        serde_json::to_vec(&line).map_err(|error| write_error(std::io::Error::other(error)))?;
    bytes.push(b'\n');
    out.write_all(&bytes).map_err(write_error)?;
    out.flush().map_err(write_error)?;
    Ok(ExportSummary { exported, report })
}

/// Convenience for callers holding a data directory: verifies `<data_dir>/audit` with
/// `<data_dir>/audit.key`.
pub fn verify_data_dir(data_dir: &Path) -> Result<VerifyReport, AuditError> {
    let key = AuditKey::load(data_dir)?;
    verify(&data_dir.join(crate::AUDIT_DIR), &key)
}
