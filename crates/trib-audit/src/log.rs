//! [`AuditLog`]: the writer. One thread owns the files and does group commit: it drains the
//! queue, chains and writes the entries, `fdatasync`s the segment, replaces the head file, and
//! only then answers every waiting caller.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::AuditError;
use crate::entry::{Action, Actor, AuditEntry, AuditRecord, Outcome, Purpose, Resource};
use crate::key::{AuditKey, hex, parse_hex};

/// The directory under the data directory that holds the log.
pub const AUDIT_DIR: &str = "audit";
/// The head file: the sequence number and mac of the last durable entry.
pub const HEAD_FILE: &str = "head";

/// Domain tag of entry macs.
pub(crate) const ENTRY_TAG: &[u8] = b"tributary-audit-entry\0";
/// Domain tag of the head's mac.
pub(crate) const HEAD_TAG: &[u8] = b"tributary-audit-head\0";
/// The `prev` of the first entry.
pub(crate) const GENESIS: [u8; 32] = [0; 32];
const LOCK_FILE: &str = "lock";
/// Most records written in one group.
const MAX_GROUP_RECORDS: usize = 8192;

/// Tuning of an [`AuditLog`].
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// A new segment file starts when the current one reaches this size (bytes).
    pub max_segment_bytes: u64,
    /// Append requests waiting for the writer, at most; callers wait for room beyond that.
    pub queue_capacity: usize,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            max_segment_bytes: 64 * 1024 * 1024,
            queue_capacity: 1024,
        }
    }
}

/// The hash-chained audit log of a data directory, open for appending.
///
/// Cheap to share behind an `Arc`; one process at a time may hold it open (a lock file).
pub struct AuditLog {
    dir: PathBuf,
    sender: Mutex<Option<mpsc::Sender<Request>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AuditLog")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The head file's contents: the last durable entry, with a mac of its own so that it cannot
/// be rewritten to point at an earlier entry without the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    /// The last durable entry's sequence number.
    pub seq: u64,
    /// Its mac, hexadecimal.
    pub mac: String,
    /// HMAC(key, `tributary-audit-head\0` ‖ seq as 8 big-endian bytes ‖ mac), hexadecimal.
    pub head_mac: String,
}

struct Request {
    records: Vec<AuditRecord>,
    reply: oneshot::Sender<Result<u64, AuditError>>,
}

impl AuditLog {
    /// Opens (creating if needed) the log of a data directory: the key `<data_dir>/audit.key`
    /// (created once) and the entries in `<data_dir>/audit/`.
    pub fn open_in_data_dir(data_dir: &Path) -> Result<Self, AuditError> {
        let key = AuditKey::load_or_create(data_dir)?;
        Self::open(&data_dir.join(AUDIT_DIR), key, AuditOptions::default())
    }

    /// Opens the log in `dir`, resuming the chain after its last entry.
    ///
    /// A torn last line (a group whose write a crash interrupted, so never acknowledged) is
    /// moved to `torn-<segment>-<offset>.partial` and a `recover` entry recording its size is
    /// appended, so the removal is itself in the chain. Any other damage at the tail (a last
    /// entry that fails its mac, a head naming entries that are not there) refuses the open
    /// with [`AuditError::Damaged`]: continuing would bury the evidence.
    pub fn open(dir: &Path, key: AuditKey, options: AuditOptions) -> Result<Self, AuditError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| AuditError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(AuditError::Locked {
                    path: dir.to_owned(),
                });
            }
            Err(fs::TryLockError::Error(source)) => {
                return Err(AuditError::Io {
                    path: lock_path,
                    source,
                });
            }
        }
        let mut writer = Writer::resume(dir, key, options.max_segment_bytes, lock)?;
        if let Some(removed) = writer.torn_bytes_removed {
            writer.commit(&[AuditRecord {
                actor: Actor::System,
                action: Action::Recover,
                purpose: Purpose::INTEGRITY,
                resource: Resource::new("audit log"),
                subject: None,
                outcome: Outcome::TornTailRemoved(removed),
            }])?;
            tracing::warn!(
                dir = %dir.display(),
                bytes = removed,
                "removed a torn last line of the audit log (an unacknowledged write cut by a crash) and recorded it"
            );
        }
        let (sender, receiver) = mpsc::channel(options.queue_capacity.max(1));
        let thread = std::thread::Builder::new()
            .name("audit-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(io(dir))?;
        Ok(Self {
            dir: dir.to_owned(),
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `records` in order and returns the last one's sequence number once they are
    /// durable (written, `fdatasync`ed, head replaced). Waits while the queue is full.
    pub async fn append(&self, records: Vec<AuditRecord>) -> Result<u64, AuditError> {
        let sender = self.sender()?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(Request { records, reply })
            .await
            .map_err(|_| AuditError::Closed)?;
        answer.await.map_err(|_| AuditError::Closed)?
    }

    /// [`AuditLog::append`] for synchronous callers (not on an async runtime thread).
    pub fn append_blocking(&self, records: Vec<AuditRecord>) -> Result<u64, AuditError> {
        let sender = self.sender()?;
        let (reply, answer) = oneshot::channel();
        sender
            .blocking_send(Request { records, reply })
            .map_err(|_| AuditError::Closed)?;
        answer.blocking_recv().map_err(|_| AuditError::Closed)?
    }

    /// Writes what is queued, stops the writer and releases the directory. Later appends
    /// answer [`AuditError::Closed`]. Blocks until the writer has finished.
    pub fn close(&self) {
        let sender = self
            .sender
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(sender);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the audit writer thread panicked");
        }
    }

    fn sender(&self) -> Result<mpsc::Sender<Request>, AuditError> {
        self.sender
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or(AuditError::Closed)
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// The writer thread's state: the open segment and the end of the chain.
struct Writer {
    dir: PathBuf,
    key: AuditKey,
    max_segment_bytes: u64,
    segment: File,
    segment_len: u64,
    next_seq: u64,
    last_mac: [u8; 32],
    last_at: jiff::Timestamp,
    failed: bool,
    torn_bytes_removed: Option<u64>,
    _lock: File,
}

/// The end of the chain found on open.
struct Tail {
    seq: u64,
    mac: [u8; 32],
    at: jiff::Timestamp,
}

impl Writer {
    fn resume(
        dir: &Path,
        key: AuditKey,
        max_segment_bytes: u64,
        lock: File,
    ) -> Result<Self, AuditError> {
        let damaged = |reason: String| AuditError::Damaged {
            path: dir.to_owned(),
            reason,
        };
        let head = read_head(dir)?;
        if let Some(head) = &head
            && !head_is_authentic(&key, head)
        {
            return Err(damaged(format!(
                "the head file (seq {}) fails its mac",
                head.seq
            )));
        }
        let segments = list_segments(dir)?;
        let mut tail: Option<Tail> = None;
        let mut torn: Option<(PathBuf, Vec<u8>, usize)> = None;
        // The newest segment holding an entry gives the tail; newer empty segments are files
        // created just before a crash.
        for (index, (first_seq, path)) in segments.iter().enumerate().rev() {
            let mut bytes = Vec::new();
            File::open(path)
                .and_then(|mut file| file.read_to_end(&mut bytes))
                .map_err(|source| AuditError::Io {
                    path: path.clone(),
                    source,
                })?;
            let complete = bytes
                .iter()
                .rposition(|byte| *byte == b'\n')
                .map_or(0, |at| at + 1);
            if complete < bytes.len() {
                if index + 1 != segments.len() {
                    return Err(damaged(format!(
                        "{} ends with an incomplete line but is not the last segment",
                        file_name(path)
                    )));
                }
                torn = Some((path.clone(), bytes[complete..].to_vec(), complete));
            }
            let Some(line) = bytes[..complete]
                .split(|byte| *byte == b'\n')
                .rfind(|line| !line.is_empty())
            else {
                continue;
            };
            let entry = parse_entry(line).ok_or_else(|| {
                damaged(format!(
                    "the last line of {} is not a valid entry",
                    file_name(path)
                ))
            })?;
            let mac = parse_hex(&entry.mac)
                .filter(|mac| *mac == entry_mac(&key, &entry))
                .ok_or_else(|| {
                    damaged(format!(
                        "the last entry (seq {}) fails its mac: altered, forged, or another key",
                        entry.seq
                    ))
                })?;
            if entry.seq < *first_seq {
                return Err(damaged(format!(
                    "the last entry of {} has seq {}",
                    file_name(path),
                    entry.seq
                )));
            }
            tail = Some(Tail {
                seq: entry.seq,
                mac,
                at: entry.at,
            });
            break;
        }
        let last_seq = tail.as_ref().map_or(0, |tail| tail.seq);
        if let Some(head) = &head {
            if head.seq > last_seq {
                return Err(damaged(format!(
                    "the head names seq {} but the log ends at seq {last_seq}: acknowledged entries are missing",
                    head.seq
                )));
            }
            if let Some(tail) = &tail
                && head.seq == tail.seq
                && head.mac != hex(&tail.mac)
            {
                return Err(damaged(format!(
                    "the head's mac differs from entry {}'s",
                    head.seq
                )));
            }
        }
        // Only a tail the checks above accepted is cut: anything else stays as evidence.
        let torn_bytes_removed = match torn {
            Some((path, bytes, complete)) => {
                Some(set_aside_torn_tail(dir, &path, &bytes, complete)?)
            }
            None => None,
        };
        let next_seq = last_seq + 1;
        // Continue in the newest segment, or start the first one.
        let segment_path = match segments.last() {
            Some((first_seq, path)) if *first_seq <= next_seq => path.clone(),
            Some((first_seq, path)) => {
                return Err(damaged(format!(
                    "{} starts at seq {first_seq} but the chain continues at {next_seq}",
                    file_name(path)
                )));
            }
            None => dir.join(segment_name(next_seq)),
        };
        let segment = open_segment(&segment_path)?;
        if segments.is_empty() {
            sync_directory(dir)?;
        }
        let segment_len = segment
            .metadata()
            .map_err(|source| AuditError::Io {
                path: segment_path.clone(),
                source,
            })?
            .len();
        Ok(Self {
            dir: dir.to_owned(),
            key,
            max_segment_bytes,
            segment,
            segment_len,
            next_seq,
            last_mac: tail.as_ref().map_or(GENESIS, |tail| tail.mac),
            last_at: tail.map_or(jiff::Timestamp::UNIX_EPOCH, |tail| tail.at),
            failed: false,
            torn_bytes_removed,
            _lock: lock,
        })
    }

    fn run(mut self, mut receiver: mpsc::Receiver<Request>) {
        while let Some(first) = receiver.blocking_recv() {
            let mut group = vec![first];
            let mut n_records = group[0].records.len();
            while n_records < MAX_GROUP_RECORDS {
                match receiver.try_recv() {
                    Ok(request) => {
                        n_records += request.records.len();
                        group.push(request);
                    }
                    Err(_) => break,
                }
            }
            let records: Vec<AuditRecord> = group
                .iter()
                .flat_map(|request| request.records.iter().cloned())
                .collect();
            let result = self.commit(&records);
            // Each caller gets the seq of its own last record.
            let mut end = result
                .as_ref()
                .ok()
                .map(|last| last + 1 - records.len() as u64);
            for request in group {
                let answer = match (&result, end.as_mut()) {
                    (Ok(_), Some(next)) => {
                        *next += request.records.len() as u64;
                        Ok(*next - 1)
                    }
                    (Err(AuditError::WriterFailed), _) => Err(AuditError::WriterFailed),
                    (Err(error), _) => {
                        tracing::error!(%error, "audit write failed");
                        Err(AuditError::WriterFailed)
                    }
                    (Ok(_), None) => Err(AuditError::WriterFailed),
                };
                // A caller that stopped waiting (a cancelled request) needs no answer.
                let _ = request.reply.send(answer);
            }
        }
    }

    /// Chains and writes `records` durably; returns the last sequence number.
    fn commit(&mut self, records: &[AuditRecord]) -> Result<u64, AuditError> {
        if self.failed {
            return Err(AuditError::WriterFailed);
        }
        if records.is_empty() {
            return Ok(self.next_seq - 1);
        }
        let result = self.write_group(records);
        if result.is_err() {
            // The file may hold part of the group: stop, and let a reopen judge the tail.
            self.failed = true;
        }
        result
    }

    fn write_group(&mut self, records: &[AuditRecord]) -> Result<u64, AuditError> {
        if self.segment_len >= self.max_segment_bytes {
            let path = self.dir.join(segment_name(self.next_seq));
            self.segment = open_segment(&path)?;
            sync_directory(&self.dir)?;
            self.segment_len = 0;
        }
        // Entry times never decrease along the chain, even when the clock steps back.
        let now = jiff::Timestamp::now().max(self.last_at);
        let mut buffer = Vec::with_capacity(records.len() * 256);
        let mut prev = self.last_mac;
        let mut seq = self.next_seq;
        for record in records {
            let mut entry = AuditEntry {
                seq,
                at: now,
                actor: record.actor.clone(),
                action: record.action,
                purpose: record.purpose.clone(),
                resource: record.resource.clone(),
                subject: record.subject.clone(),
                outcome: record.outcome,
                prev: hex(&prev),
                mac: String::new(),
            };
            let mac = entry_mac(&self.key, &entry);
            entry.mac = hex(&mac);
            buffer.extend_from_slice(&entry.line());
            buffer.push(b'\n');
            prev = mac;
            seq += 1;
        }
        let segment_error = |source| AuditError::Io {
            path: self.dir.join(segment_name(self.next_seq)),
            source,
        };
        self.segment.write_all(&buffer).map_err(segment_error)?;
        self.segment.sync_data().map_err(segment_error)?;
        let last_seq = seq - 1;
        write_head(&self.dir, &self.key, last_seq, &prev)?;
        self.segment_len += buffer.len() as u64;
        self.next_seq = seq;
        self.last_mac = prev;
        self.last_at = now;
        Ok(last_seq)
    }
}

/// The mac an entry must carry, from its own `prev` field and its other fields.
pub(crate) fn entry_mac(key: &AuditKey, entry: &AuditEntry) -> [u8; 32] {
    let prev = parse_hex(&entry.prev).unwrap_or(GENESIS);
    key.mac(&[ENTRY_TAG, &prev, &entry.body_bytes()])
}

pub(crate) fn head_mac(key: &AuditKey, seq: u64, mac: &[u8; 32]) -> [u8; 32] {
    key.mac(&[HEAD_TAG, &seq.to_be_bytes(), mac])
}

pub(crate) fn head_is_authentic(key: &AuditKey, head: &Head) -> bool {
    match parse_hex(&head.mac) {
        Some(mac) => hex(&head_mac(key, head.seq, &mac)) == head.head_mac,
        None => false,
    }
}

/// Parses a stored line, which must be exactly the canonical serialization of the entry it
/// holds (so any byte change is visible, even one JSON would not notice).
pub(crate) fn parse_entry(line: &[u8]) -> Option<AuditEntry> {
    let entry: AuditEntry = serde_json::from_slice(line).ok()?;
    (entry.line() == line).then_some(entry)
}

pub(crate) fn segment_name(first_seq: u64) -> String {
    format!("segment-{first_seq:020}.ndjson")
}

/// The segment files of `dir`, by first sequence number.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, AuditError> {
    let io = |source| AuditError::Io {
        path: dir.to_owned(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io(error)),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(first_seq) = name
            .strip_prefix("segment-")
            .and_then(|rest| rest.strip_suffix(".ndjson"))
            .filter(|digits| digits.len() == 20)
            .and_then(|digits| digits.parse::<u64>().ok())
        {
            segments.push((first_seq, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

pub(crate) fn read_head(dir: &Path) -> Result<Option<Head>, AuditError> {
    let path = dir.join(HEAD_FILE);
    match fs::read(&path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|_| {
            AuditError::Damaged {
                path: dir.to_owned(),
                reason: "the head file is not valid".to_owned(),
            }
        })?)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AuditError::Io { path, source }),
    }
}

/// Replaces the head file atomically: a synced temporary file renamed over it.
///
/// The directory is not synced for the rename: after a crash the head may name the previous
/// group instead of the last one, which open and verify accept (entries past the head are
/// checked by their macs like any other), and it saves one of the three syncs per group.
fn write_head(dir: &Path, key: &AuditKey, seq: u64, mac: &[u8; 32]) -> Result<(), AuditError> {
    let head = Head {
        seq,
        mac: hex(mac),
        head_mac: hex(&head_mac(key, seq, mac)),
    };
    let temporary = dir.join("head.tmp");
    let io = |source| AuditError::Io {
        path: temporary.clone(),
        source,
    };
    let mut bytes = serde_json::to_vec(&head).map_err(|error| io(std::io::Error::other(error)))?;
    bytes.push(b'\n');
    let mut file = File::create(&temporary).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_data().map_err(io)?;
    fs::rename(&temporary, dir.join(HEAD_FILE)).map_err(io)
}

fn open_segment(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| AuditError::Io {
            path: path.to_owned(),
            source,
        })
}

/// Copies the bytes after the last newline (`torn`, starting at byte `complete`) to
/// `torn-<segment>-<offset>.partial`, then cuts them from the segment; returns how many bytes
/// were moved.
fn set_aside_torn_tail(
    dir: &Path,
    segment: &Path,
    torn: &[u8],
    complete: usize,
) -> Result<u64, AuditError> {
    let aside = dir.join(format!("torn-{}-{complete}.partial", file_name(segment)));
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| AuditError::Io { path, source }
    };
    let mut file = File::create(&aside).map_err(io(&aside))?;
    file.write_all(torn).map_err(io(&aside))?;
    file.sync_all().map_err(io(&aside))?;
    let segment_file = OpenOptions::new()
        .write(true)
        .open(segment)
        .map_err(io(segment))?;
    segment_file.set_len(complete as u64).map_err(io(segment))?;
    segment_file.sync_all().map_err(io(segment))?;
    sync_directory(dir)?;
    Ok(torn.len() as u64)
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(crate) fn sync_directory(dir: &Path) -> Result<(), AuditError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|file| file.sync_all())
            .map_err(|source| AuditError::Io {
                path: dir.to_owned(),
                source,
            })
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
