//! [`SqliteStore`]: the embedded (default) [`ProfileStore`], on SQLite.
//!
//! # Layout
//!
//! One database file (plus its `-wal` and `-shm` files) holds every table; the schema is in
//! `migrations/sqlite/*.sql`, applied in order at [`SqliteStore::open`] and recorded in
//! `schema_migrations` with a checksum of each file. A database that was migrated by a newer
//! build, or whose applied migrations differ from this build's files, is refused
//! ([`StoreError::Migration`]) rather than guessed at.
//!
//! # Concurrency
//!
//! The database runs in WAL mode. One writer connection sits behind a mutex, so
//! [`ProfileStore::apply`] calls are serialized (the identity engine is the only writer, and
//! the change-feed sequence relies on it). Reads go to a small pool of read-only connections:
//! in WAL mode a reader works on the last committed snapshot and never waits for the writer's
//! open transaction, and it never sees part of a batch. Multi-statement reads (`get_many`,
//! `lookup_many`) run in one read transaction, so they see one snapshot too.
//!
//! # Durability: why `synchronous = NORMAL` is enough
//!
//! With `synchronous = NORMAL` in WAL mode a commit appends to the WAL without an fsync; the
//! WAL is synced at checkpoints. A crash of the *process* loses nothing that was committed
//! (the writes are in the operating system's page cache). A crash of the *machine* (power
//! loss, kernel panic) may lose the last few committed batches, but never corrupts the
//! database and never splits a batch: the database comes back as it was after some earlier
//! batch. Every batch commits the consumer's next log offsets in the same transaction as its
//! changes, so the store's state and its offsets always roll back *together*, and the identity
//! engine, on restart, replays the event log (which has its own durability) from the offsets
//! the store still holds. Every write of a batch is idempotent on replay (upserts, inserts
//! that keep one copy), so the replayed batches rebuild exactly what was lost. Syncing every
//! commit ([`SqliteOptions::durable_commits`]) buys nothing for the store's own state.
//!
//! One consequence to keep in mind: after a machine crash, change-feed sequence numbers (and
//! journal sequence numbers) that were handed out by the lost batches are handed out again
//! by the replay, possibly for other ids. A change-feed reader that had already read past them
//! could miss those changes; readers that need exactness across power losses should re-read
//! from a cursor a little behind their last one, or the deployment should set
//! `durable_commits`.
//!
//! The change-feed counter itself is not stored: it is `max(seq)` of `profiles`, read at open
//! (profile rows are never removed, so the maximum only grows), and kept in memory by the
//! writer afterwards.
//!
//! # Performance
//!
//! Profile ids and identifier keys are random by design, so every batch inserts into three
//! B-trees at random places (the profile id index, the identifier index and the timeline).
//! Once those trees have many more leaf pages than a batch has entries, nearly every entry
//! dirties a page of its own, and each dirty page is written twice (to the WAL at commit,
//! to the database at checkpoint): the write cost per event grows with the store and shrinks
//! with the batch size. Rows are written in key order within a batch (neighbours share
//! pages), and the WAL is checkpointed every [`SqliteOptions::wal_autocheckpoint_pages`]
//! rather than SQLite's default of 1000 pages. `benches/store.rs` measures all this; see
//! its figures before promising a throughput.
//!
//! # Personal data
//!
//! Documents and identifier keys may hold personal data: no error message built here includes
//! a bound value, only the name of the operation that failed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use sha2::{Digest, Sha256};

use crate::{
    Change, ChangeBatch, ChangeKind, EventRef, IdentKey, JournalEntry, ProfileId, ProfileRecord,
    ProfileState, ProfileStore, StoreError, TimelineEntry, TimelineSummary,
};

/// Tuning of a [`SqliteStore`]. The defaults suit one identity engine on a small server.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Read-only connections in the pool (at least one); more concurrent readers wait.
    pub readers: usize,
    /// How long a statement waits for a lock held by another connection (or process).
    pub busy_timeout: Duration,
    /// The writer connection's page cache, in KiB. Inserts into the timeline and the
    /// identifier index land on random pages, so the cache should hold their hot part.
    pub writer_cache_kib: u32,
    /// Each reader connection's page cache, in KiB.
    pub reader_cache_kib: u32,
    /// Bytes of the database file that connections read through `mmap` (0: none).
    pub mmap_size: u64,
    /// The page size of a *new* database (a power of two, 512 to 65536); an existing
    /// database keeps its own.
    pub page_size: u32,
    /// WAL size, in pages, at which a commit runs a checkpoint (SQLite's default is 1000).
    pub wal_autocheckpoint_pages: u32,
    /// `synchronous = FULL` instead of `NORMAL`: every commit is synced to disk. Not needed
    /// for the store's consistency (see the module documentation); it keeps change-feed and
    /// journal sequence numbers from being handed out twice after a power loss.
    pub durable_commits: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            readers: 4,
            busy_timeout: Duration::from_secs(5),
            writer_cache_kib: 256 * 1024,
            reader_cache_kib: 16 * 1024,
            mmap_size: 1 << 30,
            page_size: 4096,
            wal_autocheckpoint_pages: 16 * 1024,
            durable_commits: false,
        }
    }
}

/// The embedded [`ProfileStore`]: one SQLite database file in WAL mode.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Writer>,
    readers: Mutex<Vec<Connection>>,
    reader_returned: Condvar,
    #[cfg(test)]
    hook: Mutex<Option<Hook>>,
}

/// Called by `apply` after each phase of a batch, inside its transaction (tests only): it can
/// fail the batch there, or copy the files as a crash would leave them.
#[cfg(test)]
type Hook = Box<dyn Fn(Phase) -> Result<(), StoreError> + Send + Sync>;

/// The phases of `apply`, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Erased,
    Deleted,
    Merged,
    Upserts,
    Identifiers,
    Timeline,
    Journal,
    Offsets,
}

struct Writer {
    conn: Connection,
    /// The last change-feed sequence number handed out by a committed batch.
    last_seq: u64,
    /// The last journal sequence number handed out by a committed batch. Journal rows are
    /// numbered explicitly, not by SQLite's `max(rowid) + 1`, so that an erasure removing the
    /// newest entries cannot make their numbers be handed out again.
    last_journal_seq: u64,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// One migration: a SQL file run once, in a transaction.
#[derive(Debug, Clone, Copy)]
struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

/// The migrations this build knows, in version order. Never edit an applied one: add a file.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "0001_init",
    sql: include_str!("../migrations/sqlite/0001_init.sql"),
}];

const STATE_ACTIVE: i64 = 0;
const STATE_MERGED: i64 = 1;
const STATE_DELETED: i64 = 2;

/// Maps a rusqlite error to [`StoreError::Backend`], naming the operation. Values that were
/// bound or read are never part of the message.
fn backend(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |err| StoreError::Backend(format!("{op}: {}", describe(&err)))
}

fn describe(err: &rusqlite::Error) -> String {
    match err {
        rusqlite::Error::SqliteFailure(code, Some(message)) => format!("{code} ({message})"),
        rusqlite::Error::SqliteFailure(code, None) => code.to_string(),
        rusqlite::Error::ToSqlConversionFailure(_) => "a value could not be bound".to_owned(),
        rusqlite::Error::FromSqlConversionFailure(index, ty, _) => {
            format!("column {index} of type {ty} could not be read")
        }
        other => other.to_string(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while a connection was in use leaves no half-applied batch behind: an open
    // transaction is rolled back when it is dropped during unwinding.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn to_i64(value: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::Backend(format!("{what} is larger than SQLite's INTEGER")))
}

fn to_u64(value: i64, what: &'static str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what} stored")))
}

/// A query limit: SQLite takes an i64, and a larger one means "all".
fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A cursor: nothing is above one that does not fit an i64.
fn cursor_of(after: u64) -> i64 {
    i64::try_from(after).unwrap_or(i64::MAX)
}

fn profile_id(bytes: &[u8], what: &'static str) -> Result<ProfileId, StoreError> {
    ProfileId::from_slice(bytes)
        .map_err(|_| StoreError::Corrupt(format!("{what} is not a 16-byte profile id")))
}

fn decode_state(
    id: ProfileId,
    state: i64,
    merged_into: Option<Vec<u8>>,
    doc: Option<Vec<u8>>,
    updated_at_ms: i64,
) -> Result<ProfileState, StoreError> {
    match state {
        STATE_ACTIVE => {
            let doc = doc.ok_or_else(|| {
                StoreError::Corrupt("an active profile has no document".to_owned())
            })?;
            Ok(ProfileState::Active(ProfileRecord {
                id,
                updated_at_ms,
                doc: Bytes::from(doc),
            }))
        }
        STATE_MERGED => {
            let into = merged_into
                .ok_or_else(|| StoreError::Corrupt("a merged profile has no target".to_owned()))?;
            Ok(ProfileState::Merged {
                into: profile_id(&into, "a merge target")?,
                at_ms: updated_at_ms,
            })
        }
        STATE_DELETED => Ok(ProfileState::Deleted {
            at_ms: updated_at_ms,
        }),
        other => Err(StoreError::Corrupt(format!(
            "unknown profile state {other}"
        ))),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn checksum(sql: &str) -> String {
    Sha256::digest(sql.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Brings the schema up to date, each migration in its own transaction; returns how many
/// were applied. Refuses a database with a migration this build does not know (a newer
/// build's) or one whose applied file differs from this build's.
fn migrate(conn: &mut Connection, migrations: &[Migration]) -> Result<usize, StoreError> {
    let failed = |what: &str, err: rusqlite::Error| {
        StoreError::Migration(format!("{what}: {}", describe(&err)))
    };
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version       INTEGER PRIMARY KEY,
            name          TEXT    NOT NULL,
            checksum      TEXT    NOT NULL,
            applied_at_ms INTEGER NOT NULL
        )",
    )
    .map_err(|err| failed("creating schema_migrations", err))?;
    let known_max = migrations.last().map_or(0, |m| m.version);
    let mut applied_count = 0;
    for migration in migrations {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|err| failed("starting a migration", err))?;
        // Checked inside the write transaction, so that two processes opening the same
        // database cannot both apply a migration.
        let applied: Vec<(i64, String, String)> = {
            let mut stmt = tx
                .prepare("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
                .map_err(|err| failed("reading schema_migrations", err))?;
            stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .and_then(Iterator::collect)
                .map_err(|err| failed("reading schema_migrations", err))?
        };
        for (version, name, sum) in &applied {
            match migrations.iter().find(|m| m.version == *version) {
                None if *version > known_max => {
                    return Err(StoreError::Migration(format!(
                        "the database has schema version {version} ({name}), newer than the \
                         latest this build knows ({known_max}); run a newer Tributary or \
                         restore a backup made by this version"
                    )));
                }
                None => {
                    return Err(StoreError::Migration(format!(
                        "the database has migration {version} ({name}), which this build does \
                         not know"
                    )));
                }
                Some(known) if checksum(known.sql) != *sum => {
                    return Err(StoreError::Migration(format!(
                        "migration {version} ({name}) was applied from a different file than \
                         this build's {} (checksum mismatch); the schema cannot be trusted",
                        known.name
                    )));
                }
                Some(_) => {}
            }
        }
        if applied
            .iter()
            .any(|(version, ..)| *version == migration.version)
        {
            continue;
        }
        tx.execute_batch(migration.sql).map_err(|err| {
            StoreError::Migration(format!(
                "migration {} ({}) failed: {}",
                migration.version,
                migration.name,
                describe(&err)
            ))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at_ms)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                migration.version,
                migration.name,
                checksum(migration.sql),
                now_ms()
            ],
        )
        .map_err(|err| failed("recording a migration", err))?;
        tx.commit()
            .map_err(|err| failed("committing a migration", err))?;
        applied_count += 1;
    }
    Ok(applied_count)
}

/// The database file for `path`: the path itself, or [`SqliteStore::DEFAULT_FILE_NAME`] in it if it is a
/// directory.
fn database_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(SqliteStore::DEFAULT_FILE_NAME)
    } else {
        path.to_path_buf()
    }
}

impl SqliteStore {
    /// The file name used when [`SqliteStore::open`] is given a directory.
    pub const DEFAULT_FILE_NAME: &str = "profiles.sqlite3";

    /// Opens (creating if needed) the store at `path`, a database file or a directory to
    /// keep [`SqliteStore::DEFAULT_FILE_NAME`] in, and applies pending migrations.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        Self::open_with(path.as_ref(), &options, MIGRATIONS)
    }

    fn open_with(
        path: &Path,
        options: &SqliteOptions,
        migrations: &[Migration],
    ) -> Result<Self, StoreError> {
        let path = database_file(path);
        let open = backend("opening the database");
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(&open)?;
        conn.busy_timeout(options.busy_timeout).map_err(&open)?;
        // Only takes effect on a new database, before its first table.
        conn.pragma_update(None, "page_size", options.page_size)
            .map_err(&open)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
            .map_err(&open)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "opening the database: WAL mode refused (journal mode is {mode})"
            )));
        }
        let synchronous = if options.durable_commits {
            "FULL"
        } else {
            "NORMAL"
        };
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(&open)?;
        conn.pragma_update(None, "wal_autocheckpoint", options.wal_autocheckpoint_pages)
            .map_err(&open)?;
        // Freed cells are zeroed where that costs no extra I/O, so an erased profile's bytes
        // do not linger in free pages (its documents are also sealed under a destroyed key).
        conn.pragma_update(None, "secure_delete", "FAST")
            .map_err(&open)?;
        // After a checkpoint, a WAL larger than this is truncated back.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
            .map_err(&open)?;
        configure_cache(&conn, options.writer_cache_kib, options.mmap_size).map_err(&open)?;
        conn.set_prepared_statement_cache_capacity(32);

        migrate(&mut conn, migrations)?;

        let last_seq: i64 = conn
            .query_row("SELECT coalesce(max(seq), 0) FROM profiles", [], |row| {
                row.get(0)
            })
            .map_err(backend("reading the change-feed sequence"))?;
        let last_seq = to_u64(last_seq, "change-feed sequence")?;
        let last_journal_seq: i64 = conn
            .query_row("SELECT coalesce(max(seq), 0) FROM journal", [], |row| {
                row.get(0)
            })
            .map_err(backend("reading the journal sequence"))?;
        let last_journal_seq = to_u64(last_journal_seq, "journal sequence")?;

        let readers = (0..options.readers.max(1))
            .map(|_| open_reader(&path, options))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Self {
            path,
            writer: Mutex::new(Writer {
                conn,
                last_seq,
                last_journal_seq,
            }),
            readers: Mutex::new(readers),
            reader_returned: Condvar::new(),
            #[cfg(test)]
            hook: Mutex::new(None),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes a reader connection from the pool, waiting for one if all are in use.
    fn reader(&self) -> Reader<'_> {
        let mut pool = lock(&self.readers);
        loop {
            if let Some(conn) = pool.pop() {
                return Reader {
                    store: self,
                    conn: Some(conn),
                };
            }
            pool = self
                .reader_returned
                .wait(pool)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    #[cfg(test)]
    fn set_hook(&self, hook: Option<Hook>) {
        *lock(&self.hook) = hook;
    }

    #[cfg(test)]
    fn after_phase(&self, phase: Phase) -> Result<(), StoreError> {
        match &*lock(&self.hook) {
            Some(hook) => hook(phase),
            None => Ok(()),
        }
    }

    #[cfg(not(test))]
    #[inline]
    fn after_phase(&self, _phase: Phase) -> Result<(), StoreError> {
        Ok(())
    }
}

fn configure_cache(conn: &Connection, cache_kib: u32, mmap_size: u64) -> rusqlite::Result<()> {
    // A negative cache_size is in KiB.
    conn.pragma_update(None, "cache_size", -i64::from(cache_kib))?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // mmap_size returns the new value as a row.
    conn.pragma_update_and_check(
        None,
        "mmap_size",
        i64::try_from(mmap_size).unwrap_or(i64::MAX),
        |_| Ok(()),
    )
}

fn open_reader(path: &Path, options: &SqliteOptions) -> Result<Connection, StoreError> {
    let open = backend("opening a reader connection");
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(&open)?;
    conn.busy_timeout(options.busy_timeout).map_err(&open)?;
    configure_cache(&conn, options.reader_cache_kib, options.mmap_size).map_err(&open)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// A reader connection on loan from the pool; returned when dropped.
struct Reader<'a> {
    store: &'a SqliteStore,
    conn: Option<Connection>,
}

impl std::ops::Deref for Reader<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        // Only `drop` takes the connection out.
        match &self.conn {
            Some(conn) => conn,
            None => unreachable!("a reader connection is used after its return"),
        }
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            lock(&self.store.readers).push(conn);
            self.store.reader_returned.notify_one();
        }
    }
}

const UPSERT_PROFILE: &str =
    "INSERT INTO profiles (id, state, merged_into, doc, updated_at_ms, seq)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
     ON CONFLICT (id) DO UPDATE SET state = excluded.state, merged_into = excluded.merged_into,
         doc = excluded.doc, updated_at_ms = excluded.updated_at_ms, seq = excluded.seq";
const SELECT_PROFILE: &str =
    "SELECT state, merged_into, doc, updated_at_ms FROM profiles WHERE id = ?1";
const SELECT_IDENTIFIER: &str = "SELECT profile_id FROM identifiers WHERE key = ?1";

fn read_profile(conn: &Connection, id: &ProfileId) -> Result<Option<ProfileState>, StoreError> {
    let op = backend("reading a profile");
    let mut stmt = conn.prepare_cached(SELECT_PROFILE).map_err(&op)?;
    let row = stmt
        .query_row([id.as_bytes()], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, Option<Vec<u8>>>(1)?,
                row.get::<_, Option<Vec<u8>>>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })
        .optional()
        .map_err(&op)?;
    row.map(|(state, into, doc, at)| decode_state(*id, state, into, doc, at))
        .transpose()
}

fn read_identifier(conn: &Connection, key: &IdentKey) -> Result<Option<ProfileId>, StoreError> {
    let op = backend("looking up an identifier");
    let mut stmt = conn.prepare_cached(SELECT_IDENTIFIER).map_err(&op)?;
    let found = stmt
        .query_row([key.0.as_ref()], |row| row.get::<_, Vec<u8>>(0))
        .optional()
        .map_err(&op)?;
    found
        .map(|bytes| profile_id(&bytes, "an identifier's profile id"))
        .transpose()
}

impl ProfileStore for SqliteStore {
    fn apply(&self, batch: &ChangeBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut writer = lock(&self.writer);
        let writer = &mut *writer;
        let tx = writer
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend("apply: starting the transaction"))?;
        let mut seq = writer.last_seq;
        let mut next_seq = || -> Result<i64, StoreError> {
            seq += 1;
            to_i64(seq, "the change-feed sequence")
        };

        // 0. Erased: the profiles' journal entries are removed.
        if !batch.erased.is_empty() {
            let op = backend("apply: erasing journals");
            let mut erase = tx
                .prepare_cached("DELETE FROM journal WHERE profile_id = ?1")
                .map_err(&op)?;
            for id in &batch.erased {
                erase.execute([id.as_bytes()]).map_err(&op)?;
            }
        }
        self.after_phase(Phase::Erased)?;

        // 1. Deleted: the id becomes Deleted and its timeline is emptied.
        if !batch.deleted.is_empty() {
            let op = backend("apply: deleting profiles");
            let mut upsert = tx.prepare_cached(UPSERT_PROFILE).map_err(&op)?;
            let mut clear = tx
                .prepare_cached("DELETE FROM timeline WHERE profile_id = ?1")
                .map_err(&op)?;
            for id in &batch.deleted {
                upsert
                    .execute(params![
                        id.as_bytes(),
                        STATE_DELETED,
                        None::<&[u8]>,
                        None::<&[u8]>,
                        batch.at_ms,
                        next_seq()?
                    ])
                    .map_err(&op)?;
                clear.execute([id.as_bytes()]).map_err(&op)?;
            }
        }
        self.after_phase(Phase::Deleted)?;

        // 2. Merged: `from` points at `into`, and its timeline moves there.
        if !batch.merged.is_empty() {
            let op = backend("apply: merging profiles");
            let mut upsert = tx.prepare_cached(UPSERT_PROFILE).map_err(&op)?;
            let mut copy = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO timeline (profile_id, ts, log_partition, log_offset)
                     SELECT ?2, ts, log_partition, log_offset FROM timeline
                     WHERE profile_id = ?1",
                )
                .map_err(&op)?;
            let mut clear = tx
                .prepare_cached("DELETE FROM timeline WHERE profile_id = ?1")
                .map_err(&op)?;
            for (from, into) in &batch.merged {
                upsert
                    .execute(params![
                        from.as_bytes(),
                        STATE_MERGED,
                        into.as_bytes(),
                        None::<&[u8]>,
                        batch.at_ms,
                        next_seq()?
                    ])
                    .map_err(&op)?;
                if from != into {
                    copy.execute([from.as_bytes(), into.as_bytes()])
                        .map_err(&op)?;
                    clear.execute([from.as_bytes()]).map_err(&op)?;
                }
            }
        }
        self.after_phase(Phase::Merged)?;

        // 3. Upserts. Sequence numbers follow the batch's order; the rows are written in id
        // order (stable, so the last upsert of an id still wins), which keeps consecutive
        // inserts on neighbouring pages.
        if !batch.upserts.is_empty() {
            let op = backend("apply: upserting profiles");
            let mut upsert = tx.prepare_cached(UPSERT_PROFILE).map_err(&op)?;
            let mut order: Vec<(usize, i64)> = Vec::with_capacity(batch.upserts.len());
            for index in 0..batch.upserts.len() {
                order.push((index, next_seq()?));
            }
            order.sort_by_key(|&(index, _)| batch.upserts[index].id);
            for (index, seq) in order {
                let record = &batch.upserts[index];
                upsert
                    .execute(params![
                        record.id.as_bytes(),
                        STATE_ACTIVE,
                        None::<&[u8]>,
                        record.doc.as_ref(),
                        record.updated_at_ms,
                        seq
                    ])
                    .map_err(&op)?;
            }
        }
        self.after_phase(Phase::Upserts)?;

        // 4. Identifiers, in key order (stable: the last change of a key wins).
        if !batch.identifiers.is_empty() {
            let op = backend("apply: writing identifiers");
            let mut set = tx
                .prepare_cached(
                    "INSERT INTO identifiers (key, profile_id) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET profile_id = excluded.profile_id",
                )
                .map_err(&op)?;
            let mut remove = tx
                .prepare_cached("DELETE FROM identifiers WHERE key = ?1")
                .map_err(&op)?;
            let mut order: Vec<&(IdentKey, Option<ProfileId>)> = batch.identifiers.iter().collect();
            order.sort_by(|a, b| a.0.cmp(&b.0));
            for (key, id) in order {
                match id {
                    Some(id) => set.execute(params![key.0.as_ref(), id.as_bytes()]),
                    None => remove.execute([key.0.as_ref()]),
                }
                .map_err(&op)?;
            }
        }
        self.after_phase(Phase::Identifiers)?;

        // 5. Timeline, in key order; an entry that is there already is kept once.
        if !batch.timeline.is_empty() {
            let op = backend("apply: adding timeline entries");
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO timeline (profile_id, ts, log_partition, log_offset)
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(&op)?;
            let mut order: Vec<&(ProfileId, TimelineEntry)> = batch.timeline.iter().collect();
            order.sort_unstable_by_key(|(id, entry)| (*id, entry.sort_key()));
            for (id, entry) in order {
                insert
                    .execute(params![
                        id.as_bytes(),
                        entry.timestamp_ms,
                        entry.event.partition,
                        to_i64(entry.event.offset, "a timeline entry's log offset")?
                    ])
                    .map_err(&op)?;
            }
        }
        self.after_phase(Phase::Timeline)?;

        // 6. Journal, appended in order.
        let mut journal_seq = writer.last_journal_seq;
        if !batch.journal.is_empty() {
            let op = backend("apply: appending to the journal");
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO journal (seq, profile_id, kind, at_ms, doc)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(&op)?;
            for entry in &batch.journal {
                journal_seq += 1;
                insert
                    .execute(params![
                        to_i64(journal_seq, "the journal sequence")?,
                        entry.profile.as_bytes(),
                        entry.kind,
                        entry.at_ms,
                        entry.doc.as_ref()
                    ])
                    .map_err(&op)?;
            }
        }
        self.after_phase(Phase::Journal)?;

        // 7. The consumer's offsets.
        if let Some(offsets) = &batch.offsets {
            let op = backend("apply: committing consumer offsets");
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO consumer_offsets (consumer, log_partition, next_offset)
                     VALUES (?1, ?2, ?3)
                     ON CONFLICT (consumer, log_partition)
                     DO UPDATE SET next_offset = excluded.next_offset",
                )
                .map_err(&op)?;
            for (partition, next) in &offsets.offsets {
                upsert
                    .execute(params![
                        offsets.consumer,
                        partition,
                        to_i64(*next, "a consumer offset")?
                    ])
                    .map_err(&op)?;
            }
        }
        self.after_phase(Phase::Offsets)?;

        tx.commit().map_err(backend("apply: committing"))?;
        writer.last_seq = seq;
        writer.last_journal_seq = journal_seq;
        Ok(())
    }

    fn get(&self, id: &ProfileId) -> Result<Option<ProfileState>, StoreError> {
        read_profile(&self.reader(), id)
    }

    fn get_many(&self, ids: &[ProfileId]) -> Result<Vec<Option<ProfileState>>, StoreError> {
        let conn = self.reader();
        // One read transaction: every answer comes from the same snapshot.
        let tx = conn
            .unchecked_transaction()
            .map_err(backend("reading profiles"))?;
        ids.iter().map(|id| read_profile(&tx, id)).collect()
    }

    fn lookup(&self, key: &IdentKey) -> Result<Option<ProfileId>, StoreError> {
        read_identifier(&self.reader(), key)
    }

    fn lookup_many(&self, keys: &[IdentKey]) -> Result<Vec<Option<ProfileId>>, StoreError> {
        let conn = self.reader();
        let tx = conn
            .unchecked_transaction()
            .map_err(backend("looking up identifiers"))?;
        keys.iter().map(|key| read_identifier(&tx, key)).collect()
    }

    fn changes(
        &self,
        since_ms: Option<i64>,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let op = backend("reading the change feed");
        let conn = self.reader();
        // Both forms walk the seq index (and filter by time on the way), which returns rows in
        // feed order without sorting.
        let (sql, since) = match since_ms {
            None => (
                "SELECT id, state, merged_into, updated_at_ms, seq FROM profiles
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                i64::MIN,
            ),
            Some(since) => (
                "SELECT id, state, merged_into, updated_at_ms, seq
                 FROM profiles INDEXED BY profiles_seq
                 WHERE seq > ?1 AND updated_at_ms >= ?3 ORDER BY seq LIMIT ?2",
                since,
            ),
        };
        let mut stmt = conn.prepare_cached(sql).map_err(&op)?;
        let mut rows = if since_ms.is_some() {
            stmt.query(params![cursor_of(after_seq), limit_of(limit), since])
        } else {
            stmt.query(params![cursor_of(after_seq), limit_of(limit)])
        }
        .map_err(&op)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(&op)? {
            let id: Vec<u8> = row.get(0).map_err(&op)?;
            let id = profile_id(&id, "a profile id")?;
            let state: i64 = row.get(1).map_err(&op)?;
            let into: Option<Vec<u8>> = row.get(2).map_err(&op)?;
            let updated_at_ms: i64 = row.get(3).map_err(&op)?;
            let seq: i64 = row.get(4).map_err(&op)?;
            let kind = match state {
                STATE_ACTIVE => ChangeKind::Upserted,
                STATE_MERGED => {
                    let into = into.ok_or_else(|| {
                        StoreError::Corrupt("a merged profile has no target".to_owned())
                    })?;
                    ChangeKind::MergedInto(profile_id(&into, "a merge target")?)
                }
                STATE_DELETED => ChangeKind::Deleted,
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "unknown profile state {other}"
                    )));
                }
            };
            out.push(Change {
                seq: to_u64(seq, "change-feed sequence")?,
                id,
                updated_at_ms,
                kind,
            });
        }
        Ok(out)
    }

    fn timeline_summary(&self, id: &ProfileId) -> Result<TimelineSummary, StoreError> {
        let op = backend("summarizing a timeline");
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached("SELECT count(*), min(ts), max(ts) FROM timeline WHERE profile_id = ?1")
            .map_err(&op)?;
        stmt.query_row(params![id.as_bytes()], |row| {
            let events: i64 = row.get(0)?;
            Ok(TimelineSummary {
                events: u64::try_from(events).unwrap_or(0),
                first_ms: row.get(1)?,
                last_ms: row.get(2)?,
            })
        })
        .map_err(&op)
    }

    fn timeline(
        &self,
        id: &ProfileId,
        before: Option<&TimelineEntry>,
        limit: usize,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        let op = backend("reading a timeline");
        let conn = self.reader();
        let mut stmt;
        let mut rows = match before {
            None => {
                stmt = conn
                    .prepare_cached(
                        "SELECT ts, log_partition, log_offset FROM timeline
                         WHERE profile_id = ?1
                         ORDER BY ts DESC, log_partition DESC, log_offset DESC LIMIT ?2",
                    )
                    .map_err(&op)?;
                stmt.query(params![id.as_bytes(), limit_of(limit)])
            }
            Some(before) => {
                stmt = conn
                    .prepare_cached(
                        "SELECT ts, log_partition, log_offset FROM timeline
                         WHERE profile_id = ?1 AND (ts, log_partition, log_offset) < (?3, ?4, ?5)
                         ORDER BY ts DESC, log_partition DESC, log_offset DESC LIMIT ?2",
                    )
                    .map_err(&op)?;
                stmt.query(params![
                    id.as_bytes(),
                    limit_of(limit),
                    before.timestamp_ms,
                    before.event.partition,
                    // An offset past i64::MAX is past every stored one.
                    i64::try_from(before.event.offset).unwrap_or(i64::MAX)
                ])
            }
        }
        .map_err(&op)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(&op)? {
            let partition: i64 = row.get(1).map_err(&op)?;
            let offset: i64 = row.get(2).map_err(&op)?;
            out.push(TimelineEntry {
                timestamp_ms: row.get(0).map_err(&op)?,
                event: EventRef {
                    partition: u32::try_from(partition).map_err(|_| {
                        StoreError::Corrupt("a timeline partition is out of range".to_owned())
                    })?,
                    offset: to_u64(offset, "timeline offset")?,
                },
            });
        }
        Ok(out)
    }

    fn journal(&self, id: &ProfileId, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
        let op = backend("reading a journal");
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, profile_id, kind, at_ms, doc FROM journal
                 WHERE profile_id = ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(&op)?;
        let rows = stmt
            .query(params![id.as_bytes(), limit_of(limit)])
            .map_err(&op)?;
        journal_rows(rows, &op)
    }

    fn journal_by_kind(
        &self,
        kind: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let op = backend("reading the journal by kind");
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, profile_id, kind, at_ms, doc FROM journal
                 WHERE kind = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )
            .map_err(&op)?;
        let rows = stmt
            .query(params![kind, cursor_of(after_seq), limit_of(limit)])
            .map_err(&op)?;
        journal_rows(rows, &op)
    }

    fn consumer_offsets(&self, consumer: &str) -> Result<Vec<(u32, u64)>, StoreError> {
        let op = backend("reading consumer offsets");
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(
                "SELECT log_partition, next_offset FROM consumer_offsets
                 WHERE consumer = ?1 ORDER BY log_partition",
            )
            .map_err(&op)?;
        let mut rows = stmt.query([consumer]).map_err(&op)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(&op)? {
            let partition: i64 = row.get(0).map_err(&op)?;
            let next: i64 = row.get(1).map_err(&op)?;
            let partition = u32::try_from(partition).map_err(|_| {
                StoreError::Corrupt("a consumer partition is out of range".to_owned())
            })?;
            out.push((partition, to_u64(next, "consumer offset")?));
        }
        Ok(out)
    }

    fn count_active(&self) -> Result<u64, StoreError> {
        // All rows (counted from the smallest index) less the inactive ones (a partial index).
        let count: i64 = self
            .reader()
            .query_row(
                "SELECT (SELECT count(*) FROM profiles)
                      - (SELECT count(*) FROM profiles WHERE state <> 0)",
                [],
                |row| row.get(0),
            )
            .map_err(backend("counting active profiles"))?;
        to_u64(count, "count")
    }
}

fn journal_rows(
    mut rows: rusqlite::Rows<'_>,
    op: &impl Fn(rusqlite::Error) -> StoreError,
) -> Result<Vec<JournalEntry>, StoreError> {
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(op)? {
        let seq: i64 = row.get(0).map_err(op)?;
        let profile: Vec<u8> = row.get(1).map_err(op)?;
        let doc: Vec<u8> = row.get(4).map_err(op)?;
        out.push(JournalEntry {
            seq: to_u64(seq, "journal sequence")?,
            profile: profile_id(&profile, "a journal entry's profile id")?,
            kind: row.get(2).map_err(op)?,
            at_ms: row.get(3).map_err(op)?,
            doc: Bytes::from(doc),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use bytes::Bytes;
    use rusqlite::Connection;

    use super::{MIGRATIONS, Migration, Phase, SqliteOptions, SqliteStore, checksum};
    use crate::conformance::Harness;
    use crate::{
        ChangeBatch, ConsumerOffsets, EventRef, IdentKey, NewJournalEntry, ProfileId,
        ProfileRecord, ProfileState, ProfileStore, StoreError, TimelineEntry,
    };

    /// Every `open` opens the same database file: a reopen is a restart.
    struct SqliteHarness {
        dir: tempfile::TempDir,
    }

    impl Harness for SqliteHarness {
        fn open(&self) -> Box<dyn ProfileStore> {
            Box::new(open(self.dir.path()))
        }
    }

    fn harness() -> Option<SqliteHarness> {
        Some(SqliteHarness {
            dir: tempfile::tempdir().unwrap(),
        })
    }

    crate::conformance::conformance_tests!(harness());

    fn small() -> SqliteOptions {
        SqliteOptions {
            readers: 2,
            writer_cache_kib: 4 * 1024,
            reader_cache_kib: 1024,
            mmap_size: 0,
            ..SqliteOptions::default()
        }
    }

    fn open(dir: &Path) -> SqliteStore {
        SqliteStore::open(dir.join("store.db"), small()).unwrap()
    }

    fn id(n: u32) -> ProfileId {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        bytes[15] = 0xee;
        ProfileId::from_bytes(bytes)
    }

    fn key(n: u32) -> IdentKey {
        IdentKey(Bytes::from(format!("email\0user{n}@example.com")))
    }

    fn entry(n: u32) -> TimelineEntry {
        TimelineEntry {
            timestamp_ms: i64::from(n),
            event: EventRef {
                partition: n % 3,
                offset: u64::from(n),
            },
        }
    }

    /// A batch touching every table, for profiles `first..first + count`, committing
    /// offset `first + count` on partition 0.
    fn batch(first: u32, count: u32) -> ChangeBatch {
        let mut batch = ChangeBatch {
            at_ms: i64::from(first),
            offsets: Some(ConsumerOffsets {
                consumer: "identity".to_owned(),
                offsets: vec![(0, u64::from(first + count))],
            }),
            ..ChangeBatch::default()
        };
        for n in first..first + count {
            batch.upserts.push(ProfileRecord {
                id: id(n),
                updated_at_ms: i64::from(n),
                doc: Bytes::from(vec![b'd'; 300]),
            });
            batch.identifiers.push((key(n), Some(id(n))));
            batch.timeline.push((id(n), entry(n)));
            batch.journal.push(NewJournalEntry {
                profile: id(n),
                kind: "merge".to_owned(),
                at_ms: i64::from(n),
                doc: Bytes::from_static(b"why"),
            });
        }
        batch
    }

    fn migration_rows(path: &Path) -> Vec<(i64, String, String, i64)> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare("SELECT version, name, checksum, applied_at_ms FROM schema_migrations ORDER BY version")
            .unwrap();
        stmt.query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    fn migration_error(result: Result<SqliteStore, StoreError>) -> String {
        match result {
            Err(StoreError::Migration(message)) => message,
            Err(other) => panic!("expected a migration error, got {other}"),
            Ok(_) => panic!("expected a migration error, the store opened"),
        }
    }

    #[test]
    fn a_fresh_database_gets_every_migration_and_a_reopen_applies_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        drop(open(dir.path()));
        let rows = migration_rows(&path);
        assert_eq!(rows.len(), MIGRATIONS.len());
        for (row, migration) in rows.iter().zip(MIGRATIONS) {
            assert_eq!(row.0, migration.version);
            assert_eq!(row.1, migration.name);
            assert_eq!(row.2, checksum(migration.sql));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        drop(open(dir.path()));
        assert_eq!(
            migration_rows(&path),
            rows,
            "a reopen applied or rewrote migrations"
        );
    }

    #[test]
    fn a_later_migration_is_applied_alone_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        drop(open(dir.path()));
        let before = migration_rows(&path);
        let mut migrations = MIGRATIONS.to_vec();
        migrations.push(Migration {
            version: 2,
            name: "0002_test",
            sql: "CREATE TABLE test_only (x INTEGER);",
        });
        let store = SqliteStore::open_with(&path, &small(), &migrations).unwrap();
        drop(store);
        let after = migration_rows(&path);
        assert_eq!(after.len(), before.len() + 1);
        assert_eq!(after[..before.len()], before[..]);
        assert_eq!(after.last().unwrap().1, "0002_test");
        // This build does not know migration 2: the database is newer than it.
        let message = migration_error(SqliteStore::open(&path, small()));
        assert!(message.contains("newer"), "{message}");
    }

    #[test]
    fn a_newer_schema_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        drop(open(dir.path()));
        Connection::open(&path)
            .unwrap()
            .execute(
                "INSERT INTO schema_migrations VALUES (9999, '9999_future', 'x', 0)",
                [],
            )
            .unwrap();
        let message = migration_error(SqliteStore::open(&path, small()));
        assert!(message.contains("9999"), "{message}");
        assert!(message.contains("newer"), "{message}");
    }

    #[test]
    fn a_changed_migration_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        drop(open(dir.path()));
        Connection::open(&path)
            .unwrap()
            .execute(
                "UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1",
                [],
            )
            .unwrap();
        let message = migration_error(SqliteStore::open(&path, small()));
        assert!(message.contains("checksum"), "{message}");
    }

    #[test]
    fn a_failed_migration_leaves_the_schema_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        drop(open(dir.path()));
        let mut migrations = MIGRATIONS.to_vec();
        migrations.push(Migration {
            version: 2,
            name: "0002_broken",
            sql: "CREATE TABLE half_done (x INTEGER); THIS IS NOT SQL;",
        });
        let message = migration_error(SqliteStore::open_with(&path, &small(), &migrations));
        assert!(message.contains("0002_broken"), "{message}");
        assert_eq!(migration_rows(&path).len(), MIGRATIONS.len());
        let tables: i64 = Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'half_done'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0);
        open(dir.path());
    }

    #[test]
    fn a_directory_holds_the_default_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), small()).unwrap();
        assert_eq!(
            store.path(),
            dir.path().join(SqliteStore::DEFAULT_FILE_NAME)
        );
        assert!(store.path().exists());
    }

    fn assert_holds_first_batch_only(store: &SqliteStore) {
        assert_eq!(store.count_active().unwrap(), 100);
        assert_eq!(store.lookup(&key(42)).unwrap(), Some(id(42)));
        assert_eq!(store.lookup(&key(142)).unwrap(), None);
        assert_eq!(store.get(&id(142)).unwrap(), None);
        assert_eq!(store.timeline(&id(42), None, 10).unwrap(), vec![entry(42)]);
        assert!(store.timeline(&id(142), None, 10).unwrap().is_empty());
        assert_eq!(store.journal_by_kind("merge", 0, 1_000).unwrap().len(), 100);
        assert_eq!(store.consumer_offsets("identity").unwrap(), vec![(0, 100)]);
        assert_eq!(store.changes(None, 0, 1_000).unwrap().len(), 100);
    }

    /// Copies the database and its WAL (not the shared-memory index, which a reboot loses
    /// too) as a crash would leave them on disk.
    fn snapshot(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for suffix in ["", "-wal"] {
            let source = from.join(format!("store.db{suffix}"));
            if source.exists() {
                std::fs::copy(&source, to.join(format!("store.db{suffix}"))).unwrap();
            }
        }
    }

    #[test]
    fn a_crash_keeps_committed_batches_and_loses_the_one_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let crashed = dir.path().join("crashed");
        let live = dir.path().join("live");
        std::fs::create_dir_all(&live).unwrap();
        // A tiny page cache makes the writer spill the in-flight batch into the WAL before it
        // commits, so the snapshot holds uncommitted frames that recovery must ignore.
        let options = SqliteOptions {
            writer_cache_kib: 64,
            ..small()
        };
        let store = SqliteStore::open(live.join("store.db"), options.clone()).unwrap();
        store.apply(&batch(0, 100)).unwrap();
        {
            let (live, crashed) = (live.clone(), crashed.clone());
            store.set_hook(Some(Box::new(move |phase| {
                if phase == Phase::Journal {
                    snapshot(&live, &crashed);
                }
                Ok(())
            })));
        }
        store.apply(&batch(100, 2_000)).unwrap();
        let wal = std::fs::metadata(crashed.join("store.db-wal"))
            .unwrap()
            .len();
        assert!(
            wal > 64 * 1024,
            "the in-flight batch did not reach the WAL ({wal} bytes)"
        );
        // The process dies: nothing is closed or checkpointed.
        std::mem::forget(store);

        let recovered = SqliteStore::open(crashed.join("store.db"), options.clone()).unwrap();
        assert_holds_first_batch_only(&recovered);
        // The writer goes on from the recovered state, and the feed keeps increasing.
        let last = recovered
            .changes(None, 0, 1_000)
            .unwrap()
            .last()
            .unwrap()
            .seq;
        recovered.apply(&batch(100, 10)).unwrap();
        let after = recovered.changes(None, last, 1_000).unwrap();
        assert_eq!(after.len(), 10);
        assert!(after.iter().all(|change| change.seq > last));

        // The live files, reopened beside the leaked connections, hold both batches.
        let reopened = SqliteStore::open(live.join("store.db"), options).unwrap();
        assert_eq!(reopened.count_active().unwrap(), 2_100);
        assert_eq!(
            reopened.consumer_offsets("identity").unwrap(),
            vec![(0, 2_100)]
        );
    }

    #[test]
    fn a_batch_failing_in_any_phase_leaves_nothing_applied() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(dir.path()));
        store.apply(&batch(0, 100)).unwrap();
        for failing in [
            Phase::Erased,
            Phase::Deleted,
            Phase::Merged,
            Phase::Upserts,
            Phase::Identifiers,
            Phase::Timeline,
            Phase::Journal,
            Phase::Offsets,
        ] {
            store.set_hook(Some(Box::new(move |phase| {
                if phase == failing {
                    Err(StoreError::Backend("injected".to_owned()))
                } else {
                    Ok(())
                }
            })));
            let mut doomed = batch(100, 50);
            doomed.deleted.push(id(1));
            doomed.merged.push((id(2), id(3)));
            doomed.identifiers.push((key(4), None));
            let err = store.apply(&doomed).unwrap_err();
            assert!(
                matches!(err, StoreError::Backend(ref m) if m == "injected"),
                "{failing:?}"
            );
            store.set_hook(None);
            assert_holds_first_batch_only(&store);
            assert!(matches!(
                store.get(&id(1)).unwrap(),
                Some(ProfileState::Active(_))
            ));
            assert_eq!(store.lookup(&key(4)).unwrap(), Some(id(4)));
        }
        // The writer is usable after the failures, and sequences did not skip back.
        let last = store.changes(None, 0, 1_000).unwrap().last().unwrap().seq;
        store.apply(&batch(100, 1)).unwrap();
        assert_eq!(store.changes(None, last, 10).unwrap().len(), 1);
    }

    #[test]
    fn a_value_sqlite_cannot_hold_fails_the_batch_without_leaking_data() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.apply(&batch(0, 100)).unwrap();
        // A real statement failure, no hook: the last phase cannot bind an offset past
        // i64::MAX, after every other phase of the batch has been written.
        let mut doomed = batch(100, 50);
        doomed.offsets = Some(ConsumerOffsets {
            consumer: "identity".to_owned(),
            offsets: vec![(0, u64::MAX)],
        });
        let err = store.apply(&doomed).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, StoreError::Backend(_)), "{message}");
        assert!(message.contains("consumer offset"), "{message}");
        assert!(!message.contains("example.com"), "{message}");
        assert_holds_first_batch_only(&store);
    }

    #[test]
    fn readers_never_see_part_of_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(dir.path()));
        std::thread::scope(|scope| {
            let writer = store.clone();
            scope.spawn(move || {
                for round in 0..20u32 {
                    writer.apply(&batch(round * 500, 500)).unwrap();
                }
            });
            for _ in 0..2 {
                let reader = store.clone();
                scope.spawn(move || {
                    for _ in 0..200 {
                        // Offsets are committed last: a batch is visible whole or not at all.
                        let offsets = reader.consumer_offsets("identity").unwrap();
                        let active = reader.count_active().unwrap();
                        let committed = offsets.first().map_or(0, |&(_, next)| next);
                        assert!(
                            active >= committed,
                            "{active} profiles, offsets at {committed}"
                        );
                        assert_eq!(active % 500, 0, "a reader saw part of a batch");
                    }
                });
            }
        });
        assert_eq!(store.count_active().unwrap(), 10_000);
    }
}
