//! The key store: one data key (DEK) per subject, wrapped by a master key, in SQLite.
//!
//! Tables (schema version in `PRAGMA user_version`):
//! - `deks(subject, key_id, kek_version, wrapped, created_ms)`: the current data key of each
//!   subject, XChaCha20-Poly1305-wrapped under master key `kek_version` (24-byte nonce, key,
//!   tag; the AAD binds subject and key id);
//! - `tombstones(subject, erased_ms, receipt_id)`: erased subjects, by blind index;
//! - `destroyed_keys(subject, key_id)`: the ids of destroyed keys, so that a payload sealed
//!   under one reads as shredded while a payload naming a key that never existed is reported
//!   as corrupt;
//! - `meta(name, value)`: `active_kek_version`, the highest master key version a rotation has
//!   announced; creators read it in their write transaction and use that version, so a
//!   rotation in another process is never raced by a data key wrapped under an older version.
//!
//! Creation goes through one writer thread with group commit: it drains its queue, creates
//! every missing key of every waiting request in one `synchronous = FULL` transaction, and only
//! then answers, so a data key is durable before anything is sealed with it. Shredding and
//! tombstone changes go through the same thread, in order with creations. A caller that can
//! work meanwhile starts a creation with [`KeyStore::request_deks`] and waits for its commit
//! later ([`PendingDeks::wait`]); the sealed profile store does so for the identity consumer's
//! next batch while the one before is being applied.
//!
//! Unwrapped data keys are kept in a bounded in-memory cache. Shredding evicts in this
//! process only: erase through the process that serves reads (another process's cache keeps a
//! shredded key until it is evicted or the process restarts).
//!
//! `PRAGMA secure_delete = ON` overwrites deleted rows, and a `wal_checkpoint(TRUNCATE)` after
//! shredding leaves no copy of a destroyed wrapped key in the write-ahead log.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use aes_gcm::Aes256Gcm;
use chacha20poly1305::KeyInit;
use quick_cache::sync::Cache;

/// Subjects are HMAC outputs, uniformly random: their first eight bytes are a perfect hash,
/// so the cache (looked up for every record sealed or opened) skips hashing 32 bytes.
#[derive(Default)]
struct SubjectHasher(u64);

impl std::hash::Hasher for SubjectHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut first = [0u8; 8];
        let n = bytes.len().min(8);
        first[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(first);
    }
}

type KeyCache = Cache<
    Subject,
    Arc<Dek>,
    quick_cache::UnitWeighter,
    std::hash::BuildHasherDefault<SubjectHasher>,
>;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use zeroize::Zeroizing;

use crate::PrivacyError;
use crate::blind::Subject;
use crate::master::{KEY_BYTES, Kek, MasterKeyring, NONCE_BYTES};

const SCHEMA_VERSION: i64 = 2;
const MIGRATION_1: &str = "
CREATE TABLE deks (
    subject BLOB PRIMARY KEY,
    key_id INTEGER NOT NULL,
    kek_version INTEGER NOT NULL,
    wrapped BLOB NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX deks_by_kek_version ON deks (kek_version);
CREATE TABLE tombstones (
    subject BLOB PRIMARY KEY,
    erased_ms INTEGER NOT NULL,
    receipt_id TEXT
) WITHOUT ROWID;
CREATE TABLE destroyed_keys (
    subject BLOB NOT NULL,
    key_id INTEGER NOT NULL,
    PRIMARY KEY (subject, key_id)
) WITHOUT ROWID;
CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
";
/// Version 2 drops the index by master key version: every new key paid for it (about 15% of
/// key creation), and only a rewrap read it, which now walks the keys in subject order.
const MIGRATION_2: &str = "DROP INDEX IF EXISTS deks_by_kek_version;";
const ACTIVE_KEK_VERSION: &str = "active_kek_version";
/// The most creation requests one group commit takes.
const MAX_GROUP_REQUESTS: usize = 1024;
/// Random bytes drawn per new data key: the key, its id, the nonce that wraps it.
const RANDOM_PER_KEY: usize = KEY_BYTES + 8 + NONCE_BYTES;
/// Idle read connections kept for reuse.
const MAX_IDLE_READERS: usize = 8;

/// Settings of a [`KeyStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStoreOptions {
    /// The SQLite file; its directory is created (mode 0700) if missing.
    pub path: PathBuf,
    /// How many unwrapped data keys the in-memory cache holds.
    pub cache_entries: usize,
    /// How long a statement waits for another connection's write lock.
    pub busy_timeout: Duration,
}

impl KeyStoreOptions {
    pub const DEFAULT_CACHE_ENTRIES: usize = 250_000;

    /// Default settings for the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> KeyStoreOptions {
        KeyStoreOptions {
            path: path.into(),
            cache_entries: Self::DEFAULT_CACHE_ENTRIES,
            busy_timeout: Duration::from_secs(30),
        }
    }

    /// Default settings for `<data_dir>/keys/subjects.db`.
    pub fn in_data_dir(data_dir: &Path) -> KeyStoreOptions {
        KeyStoreOptions::new(data_dir.join("keys").join("subjects.db"))
    }
}

/// A subject's data key, unwrapped; its bytes are zeroized on drop and never printed.
pub struct Dek {
    key_id: u64,
    pub(crate) cipher: Aes256Gcm,
}

impl Dek {
    /// The key's random id, stored in every payload sealed with it.
    pub fn key_id(&self) -> u64 {
        self.key_id
    }
}

impl fmt::Debug for Dek {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Dek(key id {}, ***)", self.key_id)
    }
}

/// Data keys being got by [`KeyStore::request_deks`].
pub struct PendingDeks {
    inner: Arc<Inner>,
    /// The shred epoch when the request was made.
    epoch: u64,
    /// The keys that were in the cache.
    cached: Vec<(Subject, Arc<Dek>)>,
    /// The writer's answer for the others.
    receive: Option<mpsc::Receiver<CreateAnswer>>,
}

impl fmt::Debug for PendingDeks {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PendingDeks")
            .field("cached", &self.cached.len())
            .finish_non_exhaustive()
    }
}

impl PendingDeks {
    /// Waits for the creation's commit; returns each requested subject that has a key (those
    /// under a tombstone are missing) with its key. Returns no key at all when a shred
    /// committed since the request: keys kept that long may have been destroyed, and the
    /// caller asks again.
    pub fn wait(self) -> Result<Vec<(Subject, Arc<Dek>)>, PrivacyError> {
        let mut deks = self.cached;
        if let Some(receive) = self.receive {
            deks.extend(receive.recv().map_err(|_| self.inner.writer_gone())??);
        }
        if self.inner.shred_epoch.load(Ordering::SeqCst) != self.epoch {
            return Ok(Vec::new());
        }
        Ok(deks)
    }
}

/// What [`KeyStore::rewrap`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// The master key version every data key is now wrapped under.
    pub active_version: u32,
    /// Data keys re-wrapped by this call.
    pub rewrapped: u64,
    /// Transactions committed.
    pub batches: u64,
}

/// Counts of the key store's rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyStats {
    /// Data keys per master key version.
    pub deks_by_kek_version: BTreeMap<u32, u64>,
    pub tombstones: u64,
}

/// Data keys per subject in a SQLite file; cheap to clone (one shared store).
#[derive(Clone)]
pub struct KeyStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    busy_timeout: Duration,
    keyring: Arc<MasterKeyring>,
    cache: KeyCache,
    readers: Mutex<Vec<Connection>>,
    /// Incremented after every shred commit; see `remember`.
    shred_epoch: AtomicU64,
    sender: Mutex<Option<mpsc::Sender<Message>>>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
}

type Task = Box<dyn FnOnce(&mut Connection) + Send>;
/// The answer to one creation request: each requested subject with its key.
type CreateAnswer = Result<Vec<(Subject, Arc<Dek>)>, PrivacyError>;

enum Message {
    Create {
        subjects: Vec<Subject>,
        reply: mpsc::SyncSender<CreateAnswer>,
    },
    Task(Task),
}

struct Row {
    key_id: u64,
    kek_version: u32,
    wrapped: Vec<u8>,
}

impl KeyStore {
    /// Opens (creating and migrating) the key store and starts its writer thread.
    pub fn open(
        options: KeyStoreOptions,
        keyring: Arc<MasterKeyring>,
    ) -> Result<KeyStore, PrivacyError> {
        if let Some(parent) = options.path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|error| {
                    PrivacyError::io(format!("creating {}", parent.display()), error)
                })?;
        }
        let mut connection = open_connection(&options.path, options.busy_timeout)?;
        migrate(&mut connection, &options.path)?;
        let inner = Arc::new(Inner {
            path: options.path.clone(),
            busy_timeout: options.busy_timeout,
            keyring,
            cache: KeyCache::with(
                options.cache_entries.max(1),
                options.cache_entries.max(1) as u64,
                quick_cache::UnitWeighter,
                std::hash::BuildHasherDefault::default(),
                quick_cache::sync::DefaultLifecycle::default(),
            ),
            readers: Mutex::new(Vec::new()),
            shred_epoch: AtomicU64::new(0),
            sender: Mutex::new(None),
            writer_thread: Mutex::new(None),
        });
        let (sender, receiver) = mpsc::channel();
        // The thread holds only a weak reference, so dropping the last `KeyStore` stops it.
        let weak = Arc::downgrade(&inner);
        let thread = std::thread::Builder::new()
            .name("trib-privacy-keys".to_owned())
            .spawn(move || run_writer(weak, connection, receiver))
            .map_err(|error| PrivacyError::io("starting the key store writer thread", error))?;
        *inner.sender.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender);
        *inner
            .writer_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(thread);
        Ok(KeyStore { inner })
    }

    /// The master keys this store wraps with.
    pub fn keyring(&self) -> &Arc<MasterKeyring> {
        &self.inner.keyring
    }

    /// Returns the data key of each subject (same order, duplicates allowed), creating the
    /// missing ones durably before returning. Fails with [`PrivacyError::Erased`] when a
    /// subject has a tombstone; blocks on SQLite for keys not in the cache.
    pub fn deks_for_write(&self, subjects: &[Subject]) -> Result<Vec<Arc<Dek>>, PrivacyError> {
        self.deks_for_write_partial(subjects)?
            .into_iter()
            .zip(subjects)
            .map(|(dek, subject)| {
                dek.ok_or_else(|| PrivacyError::Erased {
                    subject: subject.to_hex(),
                })
            })
            .collect()
    }

    /// [`KeyStore::deks_for_write`], with `None` for each subject under a tombstone instead of
    /// failing the whole call.
    pub fn deks_for_write_partial(
        &self,
        subjects: &[Subject],
    ) -> Result<Vec<Option<Arc<Dek>>>, PrivacyError> {
        let inner = &self.inner;
        let cached: Vec<Option<Arc<Dek>>> = subjects.iter().map(|s| inner.cache.get(s)).collect();
        if cached.iter().all(Option::is_some) {
            return Ok(cached);
        }
        let mut found: HashMap<Subject, Arc<Dek>> = HashMap::new();
        let epoch = inner.shred_epoch.load(Ordering::SeqCst);
        inner.with_reader(|connection| {
            for (subject, cached) in subjects.iter().zip(&cached) {
                if cached.is_some() || found.contains_key(subject) {
                    continue;
                }
                if let Some(row) = select_dek(connection, &inner.path, subject)? {
                    let dek = inner.unwrap_row(subject, &row)?;
                    found.insert(*subject, dek);
                }
            }
            Ok(())
        })?;
        inner.remember(epoch, found.iter());
        // A set, not `Vec::contains`: a profile store batch asks for tens of thousands of new
        // subjects at once, and a linear check made that quadratic.
        let mut seen = std::collections::HashSet::with_capacity(subjects.len());
        let mut missing: Vec<Subject> = Vec::new();
        for (subject, cached) in subjects.iter().zip(&cached) {
            if cached.is_none() && !found.contains_key(subject) && seen.insert(*subject) {
                missing.push(*subject);
            }
        }
        if !missing.is_empty() {
            let (reply, receive) = mpsc::sync_channel(1);
            inner.send(Message::Create {
                subjects: missing,
                reply,
            })?;
            let created = receive.recv().map_err(|_| inner.writer_gone())??;
            found.extend(created);
        }
        Ok(subjects
            .iter()
            .zip(cached)
            .map(|(subject, cached)| cached.or_else(|| found.get(subject).cloned()))
            .collect())
    }

    /// Starts getting the data keys of `subjects` without waiting: cached keys are taken now,
    /// the others are created (or found in SQLite) by the writer thread in its next group
    /// commit, and [`PendingDeks::wait`] returns them all once that commit is durable. Lets a
    /// caller overlap key creation with other work. Subjects under a tombstone are left out of
    /// the answer.
    pub fn request_deks(&self, subjects: &[Subject]) -> Result<PendingDeks, PrivacyError> {
        let inner = &self.inner;
        let epoch = inner.shred_epoch.load(Ordering::SeqCst);
        let mut seen = std::collections::HashSet::with_capacity(subjects.len());
        let mut cached = Vec::with_capacity(subjects.len());
        let mut missing = Vec::new();
        for subject in subjects {
            if !seen.insert(*subject) {
                continue;
            }
            match inner.cache.get(subject) {
                Some(dek) => cached.push((*subject, dek)),
                None => missing.push(*subject),
            }
        }
        let receive = if missing.is_empty() {
            None
        } else {
            let (reply, receive) = mpsc::sync_channel(1);
            inner.send(Message::Create {
                subjects: missing,
                reply,
            })?;
            Some(receive)
        };
        Ok(PendingDeks {
            inner: Arc::clone(inner),
            epoch,
            cached,
            receive,
        })
    }

    /// [`KeyStore::deks_for_write_partial`] for async callers: cache hits answer at once,
    /// misses run on a blocking thread.
    pub async fn deks_for_write_async(
        &self,
        subjects: Vec<Subject>,
    ) -> Result<Vec<Option<Arc<Dek>>>, PrivacyError> {
        let cached: Option<Vec<Arc<Dek>>> =
            subjects.iter().map(|s| self.inner.cache.get(s)).collect();
        if let Some(deks) = cached {
            return Ok(deks.into_iter().map(Some).collect());
        }
        let store = self.clone();
        run_blocking(move || store.deks_for_write_partial(&subjects)).await
    }

    /// Returns the data key `key_id` of `subject`, or `None` when that key was destroyed
    /// (the subject was erased, possibly given a new key since). A key id the subject never
    /// had is [`PrivacyError::UnknownDataKey`]: damage, not erasure.
    pub fn dek_for_read(
        &self,
        subject: &Subject,
        key_id: u64,
    ) -> Result<Option<Arc<Dek>>, PrivacyError> {
        if let Some(dek) = self.cached_dek(subject, key_id) {
            return Ok(Some(dek));
        }
        let inner = &self.inner;
        let epoch = inner.shred_epoch.load(Ordering::SeqCst);
        let dek = inner.with_reader(|connection| {
            if let Some(row) = select_dek(connection, &inner.path, subject)?
                && row.key_id == key_id
            {
                return inner.unwrap_row(subject, &row).map(Some);
            }
            let destroyed: bool = connection
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM destroyed_keys WHERE subject = ?1 AND key_id = ?2)",
                )
                .and_then(|mut statement| {
                    statement.query_row(params![subject.0, key_id as i64], |row| row.get(0))
                })
                .map_err(|source| inner.database("looking up destroyed keys", source))?;
            if destroyed {
                Ok(None)
            } else {
                Err(PrivacyError::UnknownDataKey {
                    subject: subject.to_hex(),
                    key_id,
                })
            }
        })?;
        if let Some(dek) = &dek {
            inner.remember(epoch, std::iter::once((subject, dek)));
        }
        Ok(dek)
    }

    /// Returns the cached data key of `subject`, whatever its id; never touches SQLite.
    pub(crate) fn cached_current(&self, subject: &Subject) -> Option<Arc<Dek>> {
        self.inner.cache.get(subject)
    }

    /// Returns the cached data key of `subject` if it has id `key_id`; never touches SQLite.
    pub fn cached_dek(&self, subject: &Subject, key_id: u64) -> Option<Arc<Dek>> {
        self.inner
            .cache
            .get(subject)
            .filter(|dek| dek.key_id == key_id)
    }

    /// Destroys the data keys of `subjects` (crypto-shredding) and records tombstones with
    /// `receipt_id`; returns how many keys were destroyed. Afterwards no copy of the wrapped
    /// keys remains in the database or its write-ahead log.
    pub fn shred(
        &self,
        subjects: &[Subject],
        receipt_id: Option<&str>,
    ) -> Result<usize, PrivacyError> {
        let subjects = subjects.to_vec();
        let receipt_id = receipt_id.map(str::to_owned);
        let path = self.inner.path.clone();
        let weak = Arc::downgrade(&self.inner);
        self.run_on_writer(move |connection| {
            let destroyed = shred_rows(connection, &path, &subjects, receipt_id.as_deref())?;
            if let Some(inner) = weak.upgrade() {
                inner.shred_epoch.fetch_add(1, Ordering::SeqCst);
                for subject in &subjects {
                    inner.cache.remove(subject);
                }
            }
            checkpoint_truncate(connection, &path)?;
            Ok(destroyed)
        })
    }

    /// Returns whether `subject` has a tombstone.
    pub fn is_tombstoned(&self, subject: &Subject) -> Result<bool, PrivacyError> {
        self.inner.with_reader(|connection| {
            connection
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM tombstones WHERE subject = ?1)")
                .and_then(|mut statement| statement.query_row([subject.0], |row| row.get(0)))
                .map_err(|source| self.inner.database("looking up a tombstone", source))
        })
    }

    /// Removes the tombstone of `subject` (the person came back with new consent); the next
    /// [`KeyStore::deks_for_write`] creates a new key with a new id. Returns whether there was
    /// one.
    pub fn clear_tombstone(&self, subject: &Subject) -> Result<bool, PrivacyError> {
        let subject = *subject;
        let path = self.inner.path.clone();
        self.run_on_writer(move |connection| {
            connection
                .execute("DELETE FROM tombstones WHERE subject = ?1", [subject.0])
                .map(|deleted| deleted > 0)
                .map_err(|source| database(&path, "clearing a tombstone", source))
        })
    }

    /// Re-wraps every data key under an older master key version with the active one, in
    /// transactions of `batch_size` keys; safe while this or another process creates, reads
    /// and shreds keys.
    pub fn rewrap(&self, batch_size: usize) -> Result<RewrapReport, PrivacyError> {
        self.rewrap_with_progress(batch_size, |_| {})
    }

    /// [`KeyStore::rewrap`], calling `progress` after every committed batch.
    pub fn rewrap_with_progress(
        &self,
        batch_size: usize,
        mut progress: impl FnMut(&RewrapReport),
    ) -> Result<RewrapReport, PrivacyError> {
        let inner = &self.inner;
        inner.keyring.refresh()?;
        let kek = inner.keyring.active();
        let mut connection = open_connection(&inner.path, inner.busy_timeout)?;
        // Announce the version first: creators that commit after this use it, so the sweep
        // below cannot be outrun by keys wrapped under an older version.
        connection
            .execute(
                "INSERT INTO meta (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
                params![ACTIVE_KEK_VERSION, kek.version],
            )
            .map_err(|source| inner.database("announcing the active master key", source))?;
        let announced = read_announced_version(&connection, &inner.path)?;
        let kek = if announced > kek.version {
            inner.keyring.get(announced)?
        } else {
            kek
        };
        let mut report = RewrapReport {
            active_version: kek.version,
            ..RewrapReport::default()
        };
        // In subject order from where the last batch ended, so the sweep reads the table once
        // (keys created meanwhile are wrapped under the announced version already).
        let mut after: Vec<u8> = Vec::new();
        loop {
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|source| inner.database("starting a rewrap batch", source))?;
            let rows: Vec<(Subject, Row)> = {
                let mut statement = transaction
                    .prepare_cached(
                        "SELECT subject, key_id, kek_version, wrapped FROM deks
                         WHERE subject > ?3 AND kek_version < ?1 ORDER BY subject LIMIT ?2",
                    )
                    .map_err(|source| inner.database("selecting keys to rewrap", source))?;
                statement
                    .query_map(
                        params![kek.version, batch_size.max(1) as i64, &after[..]],
                        |row| {
                            Ok((
                                Subject(row.get(0)?),
                                Row {
                                    key_id: row.get::<_, i64>(1)? as u64,
                                    kek_version: row.get(2)?,
                                    wrapped: row.get(3)?,
                                },
                            ))
                        },
                    )
                    .and_then(|rows| rows.collect::<Result<_, _>>())
                    .map_err(|source| inner.database("selecting keys to rewrap", source))?
            };
            let Some((last, _)) = rows.last() else {
                break;
            };
            after = last.0.to_vec();
            for (subject, row) in &rows {
                let old = inner.keyring.get(row.kek_version)?;
                let key = old.unwrap(subject, row.key_id, &row.wrapped)?;
                let wrapped = kek.wrap(subject, row.key_id, &key)?;
                transaction
                    .prepare_cached(
                        "UPDATE deks SET kek_version = ?1, wrapped = ?2
                         WHERE subject = ?3 AND key_id = ?4",
                    )
                    .and_then(|mut statement| {
                        statement.execute(params![
                            kek.version,
                            &wrapped[..],
                            subject.0,
                            row.key_id as i64
                        ])
                    })
                    .map_err(|source| inner.database("rewrapping a key", source))?;
            }
            transaction
                .commit()
                .map_err(|source| inner.database("committing a rewrap batch", source))?;
            report.rewrapped += rows.len() as u64;
            report.batches += 1;
            progress(&report);
        }
        Ok(report)
    }

    /// Counts data keys per master key version, and tombstones.
    pub fn stats(&self) -> Result<KeyStats, PrivacyError> {
        self.inner.with_reader(|connection| {
            let mut stats = KeyStats::default();
            let mut statement = connection
                .prepare_cached("SELECT kek_version, count(*) FROM deks GROUP BY kek_version")
                .map_err(|source| self.inner.database("counting keys", source))?;
            let rows = statement
                .query_map([], |row| Ok((row.get::<_, u32>(0)?, row.get::<_, i64>(1)?)))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(|source| self.inner.database("counting keys", source))?;
            for (version, count) in rows {
                stats.deks_by_kek_version.insert(version, count as u64);
            }
            stats.tombstones = connection
                .query_row("SELECT count(*) FROM tombstones", [], |row| {
                    row.get::<_, i64>(0)
                })
                .map_err(|source| self.inner.database("counting tombstones", source))?
                as u64;
            Ok(stats)
        })
    }

    /// The SQLite file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn run_on_writer<T: Send + 'static>(
        &self,
        task: impl FnOnce(&mut Connection) -> Result<T, PrivacyError> + Send + 'static,
    ) -> Result<T, PrivacyError> {
        let (reply, receive) = mpsc::sync_channel(1);
        self.inner.send(Message::Task(Box::new(move |connection| {
            let _ = reply.send(task(connection));
        })))?;
        receive.recv().map_err(|_| self.inner.writer_gone())?
    }
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("KeyStore")
            .field("path", &self.inner.path)
            .field("cached_keys", &self.inner.cache.len())
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn send(&self, message: Message) -> Result<(), PrivacyError> {
        let sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        match sender.as_ref() {
            Some(sender) => sender.send(message).map_err(|_| self.writer_gone()),
            None => Err(self.writer_gone()),
        }
    }

    fn writer_gone(&self) -> PrivacyError {
        PrivacyError::WriterStopped {
            reason: "its thread has exited".to_owned(),
        }
    }

    fn database(&self, context: &'static str, source: rusqlite::Error) -> PrivacyError {
        database(&self.path, context, source)
    }

    fn with_reader<T>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, PrivacyError>,
    ) -> Result<T, PrivacyError> {
        let pooled = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let connection = match pooled {
            Some(connection) => connection,
            None => open_connection(&self.path, self.busy_timeout)?,
        };
        let result = work(&connection);
        let mut readers = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if readers.len() < MAX_IDLE_READERS {
            readers.push(connection);
        }
        result
    }

    fn unwrap_row(&self, subject: &Subject, row: &Row) -> Result<Arc<Dek>, PrivacyError> {
        let kek = self.keyring.get(row.kek_version)?;
        let key = kek.unwrap(subject, row.key_id, &row.wrapped)?;
        Ok(Arc::new(Dek {
            key_id: row.key_id,
            cipher: Aes256Gcm::new(&(*key).into()),
        }))
    }

    /// Caches keys read outside the writer thread, unless a shred committed meanwhile: a
    /// reader that saw a row before the shred's commit must not leave its key in the cache.
    /// The shred commits, increments the epoch, then evicts; so either its eviction comes after
    /// this insert, or this check sees the new epoch.
    fn remember<'a>(&self, epoch: u64, deks: impl Iterator<Item = (&'a Subject, &'a Arc<Dek>)>) {
        let deks: Vec<(&Subject, &Arc<Dek>)> = deks.collect();
        for (subject, dek) in &deks {
            self.cache.insert(**subject, Arc::clone(dek));
        }
        if self.shred_epoch.load(Ordering::SeqCst) != epoch {
            for (subject, _) in &deks {
                self.cache.remove(*subject);
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let thread = self
            .writer_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

fn run_writer(
    inner: std::sync::Weak<Inner>,
    mut connection: Connection,
    receiver: mpsc::Receiver<Message>,
) {
    let mut creates = Vec::new();
    while let Ok(first) = receiver.recv() {
        let mut messages = vec![first];
        while messages.len() < MAX_GROUP_REQUESTS {
            match receiver.try_recv() {
                Ok(message) => messages.push(message),
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        // In arrival order, with consecutive creations in one transaction.
        for message in messages {
            match message {
                Message::Create { subjects, reply } => creates.push((subjects, reply)),
                Message::Task(task) => {
                    create_group(&inner, &mut connection, &mut creates);
                    task(&mut connection);
                }
            }
        }
        create_group(&inner, &mut connection, &mut creates);
    }
}

type CreateRequest = (Vec<Subject>, mpsc::SyncSender<CreateAnswer>);

/// Creates the missing keys of every request in one transaction and answers them.
fn create_group(inner: &Inner, connection: &mut Connection, requests: &mut Vec<CreateRequest>) {
    if requests.is_empty() {
        return;
    }
    let mut answers: Vec<CreateAnswer> = Vec::with_capacity(requests.len());
    let outcome = (|| -> Result<(), PrivacyError> {
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|source| inner.database("starting to create keys", source))?;
        let kek = writing_kek(inner, &transaction)?;
        let mut created: HashMap<Subject, Arc<Dek>> = HashMap::new();
        let now_ms = now_ms();
        for (subjects, _) in requests.iter() {
            answers.push(create_for_request(
                inner,
                &transaction,
                &kek,
                subjects,
                &mut created,
                now_ms,
            ));
        }
        transaction
            .commit()
            .map_err(|source| inner.database("committing new keys", source))
    })();
    match outcome {
        Ok(()) => {
            for ((_, reply), answer) in requests.drain(..).zip(answers) {
                if let Ok(deks) = &answer {
                    for (subject, dek) in deks {
                        inner.cache.insert(*subject, Arc::clone(dek));
                    }
                }
                let _ = reply.send(answer);
            }
        }
        Err(error) => {
            tracing::error!(%error, "creating data keys failed");
            let reason = error.to_string();
            for (_, reply) in requests.drain(..) {
                let _ = reply.send(Err(PrivacyError::KeyCreation {
                    reason: reason.clone(),
                }));
            }
        }
    }
}

fn create_for_request(
    inner: &Inner,
    transaction: &rusqlite::Transaction<'_>,
    kek: &Kek,
    subjects: &[Subject],
    created: &mut HashMap<Subject, Arc<Dek>>,
    now_ms: i64,
) -> Result<Vec<(Subject, Arc<Dek>)>, PrivacyError> {
    let mut out = Vec::with_capacity(subjects.len());
    let mut fresh: Vec<&Subject> = Vec::with_capacity(subjects.len());
    for subject in subjects {
        match created.get(subject) {
            Some(dek) => out.push((*subject, Arc::clone(dek))),
            None => fresh.push(subject),
        }
    }
    // In key order: consecutive inserts land on neighbouring B-tree pages.
    fresh.sort_unstable();
    fresh.dedup();
    // The key, id and wrapping nonce of every new key in one draw from the OS.
    let mut random = Zeroizing::new(vec![0_u8; fresh.len() * RANDOM_PER_KEY]);
    getrandom::fill(&mut random).map_err(PrivacyError::Random)?;
    for (subject, random) in fresh.into_iter().zip(random.chunks_exact(RANDOM_PER_KEY)) {
        let (key_bytes, rest) = random.split_at(KEY_BYTES);
        let (id_bytes, nonce) = rest.split_at(8);
        let key: &[u8; KEY_BYTES] = key_bytes
            .try_into()
            .unwrap_or_else(|_| unreachable!("the key slice has the key length"));
        let nonce: &[u8; NONCE_BYTES] = nonce
            .try_into()
            .unwrap_or_else(|_| unreachable!("the nonce slice has the nonce length"));
        // Stored as SQLite's signed 64-bit integer; keep ids positive and non-zero.
        let mut key_id = u64::from_le_bytes(
            id_bytes
                .try_into()
                .unwrap_or_else(|_| unreachable!("eight bytes")),
        ) >> 1;
        while key_id == 0 {
            let mut bytes = [0_u8; 8];
            getrandom::fill(&mut bytes).map_err(PrivacyError::Random)?;
            key_id = u64::from_le_bytes(bytes) >> 1;
        }
        let wrapped = kek.wrap_with_nonce(subject, key_id, key, nonce)?;
        // One statement for the common case, a new subject: it inserts unless the subject has
        // a key already (another request, or another process, created it since the caller
        // looked) or a tombstone.
        let inserted = transaction
            .prepare_cached(
                "INSERT INTO deks (subject, key_id, kek_version, wrapped, created_ms)
                 SELECT ?1, ?2, ?3, ?4, ?5
                 WHERE NOT EXISTS (SELECT 1 FROM tombstones WHERE subject = ?1)
                 ON CONFLICT (subject) DO NOTHING",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    subject.0,
                    key_id as i64,
                    kek.version,
                    &wrapped[..],
                    now_ms
                ])
            })
            .map_err(|source| inner.database("storing a new key", source))?;
        if inserted == 0 {
            // It has a key: use it. It has none: it has a tombstone, and the caller learns
            // the subject was erased while other requests go on.
            if let Some(row) = select_dek(transaction, &inner.path, subject)? {
                let dek = inner.unwrap_row(subject, &row)?;
                created.insert(*subject, Arc::clone(&dek));
                out.push((*subject, dek));
            }
            continue;
        }
        let dek = Arc::new(Dek {
            key_id,
            cipher: Aes256Gcm::new(&(*key).into()),
        });
        created.insert(*subject, Arc::clone(&dek));
        out.push((*subject, dek));
    }
    Ok(out)
}

/// The master key new data keys are wrapped under: the keyring's active one, or the version a
/// rotation announced in the database if that is higher (the key file was rotated by another
/// process and this keyring has not noticed yet).
fn writing_kek(inner: &Inner, connection: &Connection) -> Result<Arc<Kek>, PrivacyError> {
    let kek = inner.keyring.active();
    let announced = read_announced_version(connection, &inner.path)?;
    if announced <= kek.version {
        return Ok(kek);
    }
    match inner.keyring.get(announced) {
        Ok(newer) => Ok(newer),
        Err(error) => {
            tracing::warn!(%error, announced, "a rotation announced a master key this process cannot load; wrapping with its active key");
            Ok(kek)
        }
    }
}

fn read_announced_version(connection: &Connection, path: &Path) -> Result<u32, PrivacyError> {
    connection
        .prepare_cached("SELECT value FROM meta WHERE name = ?1")
        .and_then(|mut statement| {
            statement
                .query_row([ACTIVE_KEK_VERSION], |row| row.get::<_, u32>(0))
                .optional()
        })
        .map(Option::unwrap_or_default)
        .map_err(|source| database(path, "reading the announced master key version", source))
}

fn shred_rows(
    connection: &mut Connection,
    path: &Path,
    subjects: &[Subject],
    receipt_id: Option<&str>,
) -> Result<usize, PrivacyError> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|source| database(path, "starting to shred", source))?;
    let now_ms = now_ms();
    let mut destroyed = 0;
    for subject in subjects {
        let fail = |source| database(path, "shredding a key", source);
        transaction
            .prepare_cached(
                "INSERT OR IGNORE INTO destroyed_keys (subject, key_id)
                 SELECT subject, key_id FROM deks WHERE subject = ?1",
            )
            .and_then(|mut statement| statement.execute([subject.0]))
            .map_err(fail)?;
        destroyed += transaction
            .prepare_cached("DELETE FROM deks WHERE subject = ?1")
            .and_then(|mut statement| statement.execute([subject.0]))
            .map_err(fail)?;
        transaction
            .prepare_cached(
                "INSERT INTO tombstones (subject, erased_ms, receipt_id) VALUES (?1, ?2, ?3)
                 ON CONFLICT (subject) DO UPDATE SET erased_ms = excluded.erased_ms,
                     receipt_id = excluded.receipt_id",
            )
            .and_then(|mut statement| statement.execute(params![subject.0, now_ms, receipt_id]))
            .map_err(fail)?;
    }
    transaction
        .commit()
        .map_err(|source| database(path, "committing a shred", source))?;
    Ok(destroyed)
}

/// Copies the WAL into the database and truncates it, retrying while readers of other
/// connections keep it busy.
fn checkpoint_truncate(connection: &Connection, path: &Path) -> Result<(), PrivacyError> {
    for attempt in 0..50 {
        let busy: i64 = connection
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
            .map_err(|source| database(path, "checkpointing the write-ahead log", source))?;
        if busy == 0 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10 * (attempt + 1).min(10)));
    }
    tracing::warn!(path = %path.display(), "the write-ahead log stayed busy; destroyed keys remain in it until the next checkpoint");
    Ok(())
}

fn select_dek(
    connection: &Connection,
    path: &Path,
    subject: &Subject,
) -> Result<Option<Row>, PrivacyError> {
    connection
        .prepare_cached("SELECT key_id, kek_version, wrapped FROM deks WHERE subject = ?1")
        .and_then(|mut statement| {
            statement
                .query_row([subject.0], |row| {
                    Ok(Row {
                        key_id: row.get::<_, i64>(0)? as u64,
                        kek_version: row.get(1)?,
                        wrapped: row.get(2)?,
                    })
                })
                .optional()
        })
        .map_err(|source| database(path, "looking up a key", source))
}

/// Runs key store work (SQLite, blocking) off the async runtime.
pub(crate) async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PrivacyError> + Send + 'static,
) -> Result<T, PrivacyError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| PrivacyError::KeyCreation {
            reason: format!("the key lookup task failed: {error}"),
        })?
}

fn open_connection(path: &Path, busy_timeout: Duration) -> Result<Connection, PrivacyError> {
    let connection = Connection::open(path).map_err(|source| database(path, "opening", source))?;
    connection
        .busy_timeout(busy_timeout)
        .and_then(|()| {
            // A 32 MiB page cache and memory-mapped reads: data keys are found by random
            // 32-byte subjects, so without them nearly every lookup and insert copies pages
            // in and out of the kernel (most of the key writer's time under load).
            connection.execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 PRAGMA secure_delete = ON;
                 PRAGMA cache_size = -32768;
                 PRAGMA mmap_size = 268435456;
                 PRAGMA wal_autocheckpoint = 4000;",
            )
        })
        .map_err(|source| database(path, "configuring", source))?;
    Ok(connection)
}

fn migrate(connection: &mut Connection, path: &Path) -> Result<(), PrivacyError> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|source| database(path, "starting the migration", source))?;
    let version: i64 = transaction
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|source| database(path, "reading the schema version", source))?;
    if version > SCHEMA_VERSION {
        return Err(PrivacyError::SchemaTooNew {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        transaction
            .execute_batch(MIGRATION_1)
            .and_then(|()| transaction.execute_batch("PRAGMA user_version = 1"))
            .map_err(|source| database(path, "migrating to schema version 1", source))?;
    }
    if version < 2 {
        transaction
            .execute_batch(MIGRATION_2)
            .and_then(|()| transaction.execute_batch("PRAGMA user_version = 2"))
            .map_err(|source| database(path, "migrating to schema version 2", source))?;
    }
    transaction
        .commit()
        .map_err(|source| database(path, "committing the migration", source))
}

fn database(path: &Path, context: &'static str, source: rusqlite::Error) -> PrivacyError {
    PrivacyError::Database {
        path: path.to_owned(),
        context,
        source,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}
