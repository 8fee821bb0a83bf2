//! [`entries_about`]: the entries whose subject is one of a set of profiles, for a subject
//! access export ("every access to my data").
//!
//! A read-only scan of the segment files: it takes no lock, needs no key and never writes, so it
//! runs while a server appends and leaves the chain and [`crate::verify`] untouched. It does not
//! verify macs either: each returned entry carries its `seq`, `prev` and `mac`, so an auditor
//! holding the key (or an exported head) can check them against the chain.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use trib_store::ProfileId;

use crate::AuditError;
use crate::entry::AuditEntry;
use crate::log::{list_segments, parse_entry};

/// What [`entries_about`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectEntries {
    /// The matching entries, in chain order (by sequence number).
    pub entries: Vec<AuditEntry>,
    /// Complete lines scanned.
    pub scanned: u64,
    /// Complete lines that are not entries in the writer's form (damage `verify` reports);
    /// they are skipped, whatever their subject.
    pub unreadable: u64,
}

/// Scans every segment of the log in `dir` and returns the entries whose subject is one of
/// `subjects`, oldest first.
///
/// A last line without its newline (a write in progress, or one a crash cut) is not read.
/// Memory grows with the matching entries only: segments are read line by line.
///
/// Fails only when a segment cannot be read; a missing directory holds no entries.
pub fn entries_about(
    dir: &Path,
    subjects: &BTreeSet<ProfileId>,
) -> Result<SubjectEntries, AuditError> {
    let mut found = SubjectEntries::default();
    if subjects.is_empty() {
        return Ok(found);
    }
    for (_, path) in list_segments(dir)? {
        let io = |source| AuditError::Io {
            path: path.clone(),
            source,
        };
        let file = match File::open(&path) {
            Ok(file) => file,
            // Segments are never removed by the writer; a vanished one was removed by hand,
            // which verify reports.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(io(error)),
        };
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = reader.read_until(b'\n', &mut line).map_err(io)?;
            if read == 0 || line.last() != Some(&b'\n') {
                break;
            }
            line.pop();
            found.scanned += 1;
            match parse_entry(&line) {
                Some(entry) => {
                    let matches = entry
                        .subject
                        .as_ref()
                        .is_some_and(|subject| subjects.contains(&subject.profile_id()));
                    if matches {
                        found.entries.push(entry);
                    }
                }
                None => found.unreadable += 1,
            }
        }
    }
    Ok(found)
}
