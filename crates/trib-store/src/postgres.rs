//! [`PostgresStore`]: the profile store on PostgreSQL, for deployments that outgrow one machine.
//!
//! The tables, their partitioning and how they map onto Citus are described in
//! `crates/trib-store/POSTGRES.md`. In short: `profiles`, `timeline` and `journal` are hash
//! partitioned by profile id, `identifiers` by identifier key, and `consumer_offsets`,
//! `schema_migrations` and `store_settings` are small unpartitioned tables.
//!
//! # Blocking client, and tokio
//!
//! The store uses the synchronous `postgres` crate (a wrapper around `tokio-postgres` that
//! gives every connection its own current-thread tokio runtime and calls `block_on` on it)
//! and an `r2d2` pool. Like every [`ProfileStore`], it is called from async code through
//! `tokio::task::spawn_blocking`, which works (tested: `usable_from_spawn_blocking`). Calling
//! it directly on a tokio worker thread panics ("Cannot start a runtime from within a
//! runtime"), as any nested `block_on` does. Dropping the store is safe anywhere: its pool,
//! whose connections send a goodbye with `block_on` when dropped, is dropped on a short-lived
//! thread of its own.
//!
//! # Migrations
//!
//! [`PostgresStore::open`] applies the SQL files of `migrations/postgres/` (embedded in the
//! binary) that the database does not have yet, each in its own transaction holding a
//! transaction-level advisory lock for the schema, and records them in `schema_migrations`
//! with a SHA-256 checksum. It refuses a database that has a migration this binary does not
//! know (a downgrade) or whose recorded checksum differs from the embedded file (an edited
//! migration).
//!
//! # Writes
//!
//! [`ProfileStore::apply`] is one transaction of about a dozen statements whatever the batch
//! size: every part of the batch is sent as arrays and expanded with `unnest` on the server.
//! The transaction first takes a transaction-level advisory lock (per schema), so two writers
//! that should not exist, but do (a rolling restart), cannot interleave: change-feed and
//! journal sequence numbers are drawn under the lock, hence committed in increasing order,
//! and a reader polling `changes(after_seq)` never sees seq 11 commit after it has read 12.
//!
//! # TLS
//!
//! Connections use `NoTls`: a URL with `sslmode=require` fails to connect. TLS (through
//! `postgres-rustls`) is future work; until then run PostgreSQL on a private network or
//! loopback.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use postgres::types::Type;
use postgres::{Client, NoTls, Row};
use r2d2::{CustomizeConnection, Pool, PooledConnection};
use r2d2_postgres::PostgresConnectionManager;
use sha2::{Digest, Sha256};

use crate::{
    Change, ChangeBatch, ChangeKind, EventRef, IdentKey, JournalEntry, ProfileId, ProfileRecord,
    ProfileState, ProfileStore, StoreError, TimelineEntry, TimelineSummary,
};

type Manager = PostgresConnectionManager<NoTls>;

/// How to open a [`PostgresStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// The PostgreSQL schema holding the store's tables; created if missing.
    pub schema: String,
    /// The number of hash partitions of `profiles`, `timeline`, `identifiers` and `journal`.
    /// Only used when the store is created: it is fixed from then on.
    pub partitions: u32,
    /// The maximum number of connections the store keeps open.
    pub pool_size: u32,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: "tributary".to_owned(),
            partitions: 16,
            pool_size: 8,
        }
    }
}

/// A [`ProfileStore`] on PostgreSQL (see the module documentation).
pub struct PostgresStore {
    /// `Some` until dropped (see `Drop`).
    pool: Option<Pool<Manager>>,
    schema: String,
    /// The advisory-lock key `apply` serializes on.
    apply_lock: i64,
    /// The migration versions `open` applied (empty when the schema was up to date).
    applied_at_open: Vec<i32>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Dropping a `postgres::Client` runs `block_on`, which panics on a tokio worker thread.
        // The store may well be dropped there (the last `Arc` held by an async task), so the
        // pool goes away on a thread of its own.
        if let Some(pool) = self.pool.take() {
            let dropper = std::thread::Builder::new()
                .name("trib-store-pg-close".to_owned())
                .spawn(move || drop(pool));
            if let Ok(handle) = dropper {
                let _ = handle.join();
            }
        }
    }
}

/// One embedded migration.
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// Every migration this binary knows, in order; versions are 1, 2, 3, …
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "init",
    sql: include_str!("../migrations/postgres/0001_init.sql"),
}];

fn checksum(sql: &str) -> String {
    let digest = Sha256::digest(sql.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// A 64-bit advisory-lock key for one purpose on one schema (locks are per database, and
/// several stores may share a database).
fn lock_key(purpose: &str, schema: &str) -> i64 {
    let digest = Sha256::digest(format!("tributary\0{purpose}\0{schema}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A backend error for `op`. Only the server's severity, message and SQLSTATE are kept: the
/// DETAIL of, say, a unique violation quotes the offending key, which may be personal data.
fn backend(op: &str, err: &postgres::Error) -> StoreError {
    StoreError::Backend(describe(op, err))
}

fn describe(op: &str, err: &postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!(
            "{op}: {} {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => {
            // The kind ("error connecting to server") and its causes ("Connection refused").
            let mut text = format!("{op}: {err}");
            let mut source = std::error::Error::source(err);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    }
}

/// Keeps the pool's latest connection error in full (r2d2 itself keeps only its `Display`,
/// which for `postgres::Error` omits the cause) and logs it.
#[derive(Debug, Clone, Default)]
struct ConnectErrors(std::sync::Arc<std::sync::Mutex<Option<String>>>);

impl ConnectErrors {
    fn latest(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl r2d2::HandleError<postgres::Error> for ConnectErrors {
    fn handle_error(&self, err: postgres::Error) {
        let text = describe("connect", &err);
        tracing::warn!(error = %text, "profile store connection failed");
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(text);
    }
}

fn corrupt(op: &str, what: impl fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{op}: {what}"))
}

/// Sets up every new pooled connection.
#[derive(Debug)]
struct SessionSetup {
    quoted_schema: String,
}

impl CustomizeConnection<Client, postgres::Error> for SessionSetup {
    fn on_acquire(&self, client: &mut Client) -> Result<(), postgres::Error> {
        client.batch_execute(&format!(
            "SET search_path TO {}; SET client_min_messages TO warning",
            self.quoted_schema
        ))
    }
}

impl PostgresStore {
    /// Connects to `url` (a `postgres://` URL or a `key=value` connection string), creates the
    /// schema if missing and applies the migrations the database does not have yet.
    pub fn open(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let PostgresOptions {
            schema,
            partitions,
            pool_size,
        } = options;
        if schema.is_empty() || schema.len() > 63 || schema.contains('\0') {
            return Err(StoreError::Backend(
                "open: a schema name has 1 to 63 bytes and no NUL".to_owned(),
            ));
        }
        if !(1..=4096).contains(&partitions) {
            return Err(StoreError::Backend(
                "open: the partition count must be between 1 and 4096".to_owned(),
            ));
        }
        let mut config: postgres::Config = url.parse().map_err(|err: postgres::Error| {
            StoreError::Backend(format!("open: invalid PostgreSQL connection string: {err}"))
        })?;
        if config.get_application_name().is_none() {
            config.application_name("tributary");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let errors = ConnectErrors::default();
        let pool = Pool::builder()
            .error_handler(Box::new(errors.clone()))
            .max_size(pool_size.max(1))
            .min_idle(Some(1))
            // A check-out test costs a round trip per operation; a dead connection fails one
            // operation instead and is then discarded (`has_broken`).
            .test_on_check_out(false)
            .connection_timeout(Duration::from_secs(15))
            .connection_customizer(Box::new(SessionSetup {
                quoted_schema: quote_ident(&schema),
            }))
            .build(Manager::new(config, NoTls))
            .map_err(|err| {
                let reason = errors.latest().unwrap_or_else(|| err.to_string());
                StoreError::Backend(format!("open: cannot connect: {reason}"))
            })?;
        let mut store = Self {
            pool: Some(pool),
            apply_lock: lock_key("apply", &schema),
            schema,
            applied_at_open: Vec::new(),
        };
        let mut conn = store.conn("open")?;
        store.applied_at_open = migrate(&mut conn, &store.schema, partitions)?;
        let rows = conn
            .query(
                "SELECT value FROM store_settings WHERE name = 'partitions'",
                &[],
            )
            .map_err(|err| backend("open: read settings", &err))?;
        let stored: Option<String> = rows.first().map(|row| row.get(0));
        if stored.as_deref() != Some(partitions.to_string().as_str()) {
            tracing::warn!(
                schema = %store.schema,
                stored = stored.as_deref().unwrap_or("?"),
                requested = partitions,
                "the store's partition count is fixed at creation; the requested count is ignored"
            );
        }
        drop(conn);
        Ok(store)
    }

    /// The schema the store lives in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    fn conn(&self, op: &str) -> Result<PooledConnection<Manager>, StoreError> {
        let pool = self
            .pool
            .as_ref()
            .ok_or_else(|| StoreError::Backend(format!("{op}: the store is closed")))?;
        pool.get()
            .map_err(|err| StoreError::Backend(format!("{op}: no database connection: {err}")))
    }
}

/// Applies the pending migrations, one transaction each; returns the versions applied.
fn migrate(client: &mut Client, schema: &str, partitions: u32) -> Result<Vec<i32>, StoreError> {
    let lock = lock_key("migrate", schema);
    let quoted = quote_ident(schema);
    let latest = MIGRATIONS.last().map_or(0, |m| m.version);
    let mut applied_now = Vec::new();
    loop {
        let mut tx = client
            .transaction()
            .map_err(|err| backend("migrate: begin", &err))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])
            .map_err(|err| backend("migrate: lock", &err))?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {quoted};
             SET LOCAL search_path TO {quoted};
             CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    integer     PRIMARY KEY,
                 name       text        NOT NULL,
                 checksum   text        NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )"
        ))
        .map_err(|err| backend("migrate: create schema", &err))?;
        let rows = tx
            .query(
                "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
                &[],
            )
            .map_err(|err| backend("migrate: read schema_migrations", &err))?;
        let mut applied = Vec::with_capacity(rows.len());
        for row in &rows {
            let version: i32 = row.get(0);
            let name: String = row.get(1);
            let recorded: String = row.get(2);
            let Some(known) = MIGRATIONS.iter().find(|m| m.version == version) else {
                return Err(StoreError::Migration(format!(
                    "schema {schema:?} is at migration {version:04}_{name}, newer than this \
                     binary knows (up to {latest:04}); refusing to open it with an older \
                     Tributary"
                )));
            };
            let expected = checksum(known.sql);
            if recorded != expected {
                return Err(StoreError::Migration(format!(
                    "migration {version:04}_{} of schema {schema:?} was applied with checksum \
                     {recorded}, but this binary's file has {expected}: a released migration \
                     was edited; restore it and add a new migration instead",
                    known.name
                )));
            }
            applied.push(version);
        }
        let next = MIGRATIONS.iter().find(|m| !applied.contains(&m.version));
        let Some(migration) = next else {
            tx.commit()
                .map_err(|err| backend("migrate: commit", &err))?;
            return Ok(applied_now);
        };
        if let Some(&later) = applied.iter().find(|&&v| v > migration.version) {
            return Err(StoreError::Migration(format!(
                "schema {schema:?} has migration {later:04} but not {:04}_{}; refusing to apply \
                 migrations out of order",
                migration.version, migration.name
            )));
        }
        let failed = |err: postgres::Error| {
            StoreError::Migration(describe(
                &format!(
                    "applying migration {:04}_{}",
                    migration.version, migration.name
                ),
                &err,
            ))
        };
        tx.execute(
            "SELECT set_config('tributary.partitions', $1, true)",
            &[&partitions.to_string()],
        )
        .map_err(failed)?;
        tx.batch_execute(migration.sql).map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[
                &migration.version,
                &migration.name,
                &checksum(migration.sql),
            ],
        )
        .map_err(failed)?;
        tx.commit().map_err(failed)?;
        tracing::info!(
            schema,
            version = migration.version,
            name = migration.name,
            "applied profile store migration"
        );
        applied_now.push(migration.version);
    }
}

const STATE_ACTIVE: i16 = 0;
const STATE_MERGED: i16 = 1;
const STATE_DELETED: i16 = 2;

fn to_i64(op: &str, what: &str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| {
        StoreError::Backend(format!(
            "{op}: a {what} above {} does not fit PostgreSQL's bigint",
            i64::MAX
        ))
    })
}

/// The final state of a profile id touched by a batch.
struct Touch<'a> {
    id: &'a ProfileId,
    state: i16,
    merged_into: Option<&'a [u8]>,
    doc: Option<&'a [u8]>,
    updated_at_ms: i64,
}

/// A batch turned into column arrays, in the order of [`ChangeBatch`]'s documentation.
#[derive(Default)]
struct Columns<'a> {
    erased: Vec<&'a [u8]>,
    deleted: Vec<&'a [u8]>,
    move_from: Vec<&'a [u8]>,
    move_to: Vec<&'a [u8]>,
    profile_id: Vec<&'a [u8]>,
    profile_state: Vec<i16>,
    profile_merged_into: Vec<Option<&'a [u8]>>,
    profile_doc: Vec<Option<&'a [u8]>>,
    profile_updated: Vec<i64>,
    ident_removed: Vec<&'a [u8]>,
    ident_key: Vec<&'a [u8]>,
    ident_profile: Vec<&'a [u8]>,
    timeline_id: Vec<&'a [u8]>,
    timeline_ts: Vec<i64>,
    timeline_partition: Vec<i64>,
    timeline_offset: Vec<i64>,
    journal_id: Vec<&'a [u8]>,
    journal_kind: Vec<&'a str>,
    journal_at: Vec<i64>,
    journal_doc: Vec<&'a [u8]>,
    offset_partition: Vec<i64>,
    offset_next: Vec<i64>,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a ChangeBatch) -> Result<Self, StoreError> {
        let mut cols = Columns::default();
        let mut touches: Vec<Touch<'a>> = Vec::new();
        cols.erased = batch
            .erased
            .iter()
            .map(|id| id.as_bytes().as_slice())
            .collect();
        for id in &batch.deleted {
            cols.deleted.push(id.as_bytes());
            touches.push(Touch {
                id,
                state: STATE_DELETED,
                merged_into: None,
                doc: None,
                updated_at_ms: batch.at_ms,
            });
        }
        // Merges apply in order, so a chain (a into b, then b into c) moves a's entries on to
        // c. Simulate where each id's current timeline ends up and move every entry once.
        let mut holds: BTreeMap<&'a ProfileId, Vec<&'a ProfileId>> = BTreeMap::new();
        for (from, into) in &batch.merged {
            holds.entry(from).or_insert_with(|| vec![from]);
            holds.entry(into).or_insert_with(|| vec![into]);
            if from != into {
                let moving = holds.get_mut(from).map(std::mem::take).unwrap_or_default();
                holds.entry(into).or_default().extend(moving);
            }
            touches.push(Touch {
                id: from,
                state: STATE_MERGED,
                merged_into: Some(into.as_bytes()),
                doc: None,
                updated_at_ms: batch.at_ms,
            });
        }
        for (holder, origins) in &holds {
            for origin in origins {
                if origin != holder {
                    cols.move_from.push(origin.as_bytes());
                    cols.move_to.push(holder.as_bytes());
                }
            }
        }
        for record in &batch.upserts {
            touches.push(Touch {
                id: &record.id,
                state: STATE_ACTIVE,
                merged_into: None,
                doc: Some(&record.doc),
                updated_at_ms: record.updated_at_ms,
            });
        }
        // Each id keeps its last touch; the change feed orders ids by it.
        let mut last: HashMap<&ProfileId, usize> = HashMap::with_capacity(touches.len());
        for (index, touch) in touches.iter().enumerate() {
            last.insert(touch.id, index);
        }
        for (index, touch) in touches.iter().enumerate() {
            if last.get(touch.id) == Some(&index) {
                cols.profile_id.push(touch.id.as_bytes());
                cols.profile_state.push(touch.state);
                cols.profile_merged_into.push(touch.merged_into);
                cols.profile_doc.push(touch.doc);
                cols.profile_updated.push(touch.updated_at_ms);
            }
        }
        // Identifiers: the last write of a key wins.
        let mut last_key: HashMap<&IdentKey, Option<&ProfileId>> =
            HashMap::with_capacity(batch.identifiers.len());
        for (key, id) in &batch.identifiers {
            last_key.insert(key, id.as_ref());
        }
        for (key, _) in &batch.identifiers {
            if let Some(target) = last_key.remove(key) {
                match target {
                    Some(id) => {
                        cols.ident_key.push(&key.0);
                        cols.ident_profile.push(id.as_bytes());
                    }
                    None => cols.ident_removed.push(&key.0),
                }
            }
        }
        for (id, entry) in &batch.timeline {
            cols.timeline_id.push(id.as_bytes());
            cols.timeline_ts.push(entry.timestamp_ms);
            cols.timeline_partition
                .push(i64::from(entry.event.partition));
            cols.timeline_offset
                .push(to_i64("apply", "log offset", entry.event.offset)?);
        }
        for entry in &batch.journal {
            cols.journal_id.push(entry.profile.as_bytes());
            cols.journal_kind.push(&entry.kind);
            cols.journal_at.push(entry.at_ms);
            cols.journal_doc.push(&entry.doc);
        }
        if let Some(offsets) = &batch.offsets {
            let mut last_partition: HashMap<u32, u64> = HashMap::new();
            for &(partition, offset) in &offsets.offsets {
                last_partition.insert(partition, offset);
            }
            let mut sorted: Vec<(u32, u64)> = last_partition.into_iter().collect();
            sorted.sort_unstable();
            for (partition, offset) in sorted {
                cols.offset_partition.push(i64::from(partition));
                cols.offset_next
                    .push(to_i64("apply", "consumer offset", offset)?);
            }
        }
        Ok(cols)
    }
}

fn count(len: usize) -> i64 {
    i64::try_from(len).unwrap_or(i64::MAX)
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn profile_id_of(op: &str, bytes: &[u8]) -> Result<ProfileId, StoreError> {
    ProfileId::from_slice(bytes).map_err(|err| corrupt(op, format!("a stored profile id: {err}")))
}

fn get_col<'a, T: postgres::types::FromSql<'a>>(
    op: &str,
    row: &'a Row,
    index: usize,
) -> Result<T, StoreError> {
    row.try_get(index)
        .map_err(|err| corrupt(op, format!("column {index}: {err}")))
}

/// Decodes `(state, merged_into, doc, updated_at_ms)` starting at column `first`.
fn state_of(op: &str, id: ProfileId, row: &Row, first: usize) -> Result<ProfileState, StoreError> {
    let state: i16 = get_col(op, row, first)?;
    let updated_at_ms: i64 = get_col(op, row, first + 3)?;
    match state {
        STATE_ACTIVE => {
            let doc: &[u8] = get_col(op, row, first + 2)?;
            Ok(ProfileState::Active(ProfileRecord {
                id,
                updated_at_ms,
                doc: Bytes::copy_from_slice(doc),
            }))
        }
        STATE_MERGED => {
            let into: &[u8] = get_col(op, row, first + 1)?;
            Ok(ProfileState::Merged {
                into: profile_id_of(op, into)?,
                at_ms: updated_at_ms,
            })
        }
        STATE_DELETED => Ok(ProfileState::Deleted {
            at_ms: updated_at_ms,
        }),
        other => Err(corrupt(op, format!("unknown profile state {other}"))),
    }
}

fn journal_entry_of(op: &str, row: &Row) -> Result<JournalEntry, StoreError> {
    let seq: i64 = get_col(op, row, 0)?;
    let profile: &[u8] = get_col(op, row, 1)?;
    let doc: &[u8] = get_col(op, row, 4)?;
    Ok(JournalEntry {
        seq: u64::try_from(seq).map_err(|_| corrupt(op, "a negative journal seq"))?,
        profile: profile_id_of(op, profile)?,
        kind: get_col(op, row, 2)?,
        at_ms: get_col(op, row, 3)?,
        doc: Bytes::copy_from_slice(doc),
    })
}

const SELECT_PROFILE: &str =
    "SELECT profile_id, state, merged_into, doc, updated_at_ms FROM profiles";

impl ProfileStore for PostgresStore {
    fn apply(&self, batch: &ChangeBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // Everything that can be refused without the database is refused before it.
        let cols = Columns::of(batch)?;
        let mut conn = self.conn("apply")?;
        let mut tx = conn
            .transaction()
            .map_err(|err| backend("apply: begin", &err))?;
        tx.execute_typed(
            "SELECT pg_advisory_xact_lock($1)",
            &[(&self.apply_lock, Type::INT8)],
        )
        .map_err(|err| backend("apply: lock", &err))?;

        // Reserve consecutive sequence numbers (under the lock nobody else draws any).
        let profiles = count(cols.profile_id.len());
        let journal = count(cols.journal_id.len());
        let row = tx
            .query_typed(
                "SELECT
                   CASE WHEN $1 > 0 THEN setval('change_seq', nextval('change_seq') + $1 - 1) END,
                   CASE WHEN $2 > 0 THEN setval('journal_seq', nextval('journal_seq') + $2 - 1) END",
                &[(&profiles, Type::INT8), (&journal, Type::INT8)],
            )
            .map_err(|err| backend("apply: reserve sequence numbers", &err))?;
        let first_of = |index: usize, n: i64| -> Result<i64, StoreError> {
            let last: Option<i64> = row
                .first()
                .map(|row| get_col("apply", row, index))
                .transpose()?
                .flatten();
            Ok(last.map_or(0, |last| last - n + 1))
        };
        let first_change = first_of(0, profiles)?;
        let first_journal = first_of(1, journal)?;

        if !cols.erased.is_empty() {
            tx.execute_typed(
                "DELETE FROM journal WHERE profile_id = ANY($1)",
                &[(&cols.erased, Type::BYTEA_ARRAY)],
            )
            .map_err(|err| backend("apply: erase journals", &err))?;
        }
        if !cols.deleted.is_empty() {
            tx.execute_typed(
                "DELETE FROM timeline WHERE profile_id = ANY($1)",
                &[(&cols.deleted, Type::BYTEA_ARRAY)],
            )
            .map_err(|err| backend("apply: delete timelines", &err))?;
        }
        if !cols.move_from.is_empty() {
            // Three statements, not one `DELETE … RETURNING` feeding an `INSERT`: inside one
            // statement an entry moving *to* an id could be checked against that id's own
            // entry before the latter is deleted (when the id is itself merged away), and be
            // dropped as a duplicate. Here every move-away is deleted before anything arrives.
            let moved = |err: postgres::Error| backend("apply: move merged timelines", &err);
            tx.batch_execute(
                "CREATE TEMP TABLE IF NOT EXISTS trib_timeline_moves (
                    profile_id    bytea  NOT NULL,
                    timestamp_ms  bigint NOT NULL,
                    log_partition bigint NOT NULL,
                    log_offset    bigint NOT NULL
                 ) ON COMMIT DELETE ROWS",
            )
            .map_err(moved)?;
            tx.execute_typed(
                "WITH moves AS (
                    SELECT * FROM unnest($1::bytea[], $2::bytea[]) AS m(from_id, to_id)
                 ), taken AS (
                    DELETE FROM timeline t USING moves m WHERE t.profile_id = m.from_id
                    RETURNING m.to_id, t.timestamp_ms, t.log_partition, t.log_offset
                 )
                 INSERT INTO pg_temp.trib_timeline_moves SELECT * FROM taken",
                &[
                    (&cols.move_from, Type::BYTEA_ARRAY),
                    (&cols.move_to, Type::BYTEA_ARRAY),
                ],
            )
            .map_err(moved)?;
            tx.execute_typed(
                "INSERT INTO timeline (profile_id, timestamp_ms, log_partition, log_offset)
                 SELECT * FROM pg_temp.trib_timeline_moves
                 ON CONFLICT DO NOTHING",
                &[],
            )
            .map_err(moved)?;
        }
        if !cols.profile_id.is_empty() {
            let seqs: Vec<i64> = (first_change..).take(cols.profile_id.len()).collect();
            tx.execute_typed(
                "INSERT INTO profiles (profile_id, state, merged_into, doc, updated_at_ms, seq)
                 SELECT * FROM unnest($1::bytea[], $2::int2[], $3::bytea[], $4::bytea[],
                                      $5::int8[], $6::int8[])
                 ON CONFLICT (profile_id) DO UPDATE SET
                    state = EXCLUDED.state,
                    merged_into = EXCLUDED.merged_into,
                    doc = EXCLUDED.doc,
                    updated_at_ms = EXCLUDED.updated_at_ms,
                    seq = EXCLUDED.seq",
                &[
                    (&cols.profile_id, Type::BYTEA_ARRAY),
                    (&cols.profile_state, Type::INT2_ARRAY),
                    (&cols.profile_merged_into, Type::BYTEA_ARRAY),
                    (&cols.profile_doc, Type::BYTEA_ARRAY),
                    (&cols.profile_updated, Type::INT8_ARRAY),
                    (&seqs, Type::INT8_ARRAY),
                ],
            )
            .map_err(|err| backend("apply: write profiles", &err))?;
        }
        if !cols.ident_removed.is_empty() {
            tx.execute_typed(
                "DELETE FROM identifiers WHERE key = ANY($1)",
                &[(&cols.ident_removed, Type::BYTEA_ARRAY)],
            )
            .map_err(|err| backend("apply: remove identifiers", &err))?;
        }
        if !cols.ident_key.is_empty() {
            tx.execute_typed(
                "INSERT INTO identifiers (key, profile_id)
                 SELECT * FROM unnest($1::bytea[], $2::bytea[])
                 ON CONFLICT (key) DO UPDATE SET profile_id = EXCLUDED.profile_id
                 WHERE identifiers.profile_id <> EXCLUDED.profile_id",
                &[
                    (&cols.ident_key, Type::BYTEA_ARRAY),
                    (&cols.ident_profile, Type::BYTEA_ARRAY),
                ],
            )
            .map_err(|err| backend("apply: write identifiers", &err))?;
        }
        if !cols.timeline_id.is_empty() {
            tx.execute_typed(
                "INSERT INTO timeline (profile_id, timestamp_ms, log_partition, log_offset)
                 SELECT * FROM unnest($1::bytea[], $2::int8[], $3::int8[], $4::int8[])
                 ON CONFLICT DO NOTHING",
                &[
                    (&cols.timeline_id, Type::BYTEA_ARRAY),
                    (&cols.timeline_ts, Type::INT8_ARRAY),
                    (&cols.timeline_partition, Type::INT8_ARRAY),
                    (&cols.timeline_offset, Type::INT8_ARRAY),
                ],
            )
            .map_err(|err| backend("apply: add timeline entries", &err))?;
        }
        if !cols.journal_id.is_empty() {
            let seqs: Vec<i64> = (first_journal..).take(cols.journal_id.len()).collect();
            tx.execute_typed(
                "INSERT INTO journal (profile_id, seq, kind, at_ms, doc)
                 SELECT * FROM unnest($1::bytea[], $2::int8[], $3::text[], $4::int8[],
                                      $5::bytea[])",
                &[
                    (&cols.journal_id, Type::BYTEA_ARRAY),
                    (&seqs, Type::INT8_ARRAY),
                    (&cols.journal_kind, Type::TEXT_ARRAY),
                    (&cols.journal_at, Type::INT8_ARRAY),
                    (&cols.journal_doc, Type::BYTEA_ARRAY),
                ],
            )
            .map_err(|err| backend("apply: append journal entries", &err))?;
        }
        if let Some(offsets) = &batch.offsets
            && !cols.offset_partition.is_empty()
        {
            tx.execute_typed(
                "INSERT INTO consumer_offsets (consumer, log_partition, next_offset)
                 SELECT $1, * FROM unnest($2::int8[], $3::int8[])
                 ON CONFLICT (consumer, log_partition) DO UPDATE
                 SET next_offset = EXCLUDED.next_offset",
                &[
                    (&offsets.consumer, Type::TEXT),
                    (&cols.offset_partition, Type::INT8_ARRAY),
                    (&cols.offset_next, Type::INT8_ARRAY),
                ],
            )
            .map_err(|err| backend("apply: commit consumer offsets", &err))?;
        }
        tx.commit().map_err(|err| backend("apply: commit", &err))
    }

    fn get(&self, id: &ProfileId) -> Result<Option<ProfileState>, StoreError> {
        let op = "get";
        let mut conn = self.conn(op)?;
        let rows = conn
            .query_typed(
                &format!("{SELECT_PROFILE} WHERE profile_id = $1"),
                &[(&id.as_bytes().as_slice(), Type::BYTEA)],
            )
            .map_err(|err| backend(op, &err))?;
        rows.first()
            .map(|row| state_of(op, *id, row, 1))
            .transpose()
    }

    fn get_many(&self, ids: &[ProfileId]) -> Result<Vec<Option<ProfileState>>, StoreError> {
        let op = "get_many";
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<&[u8]> = ids.iter().map(|id| id.as_bytes().as_slice()).collect();
        let mut conn = self.conn(op)?;
        let rows = conn
            .query_typed(
                &format!("{SELECT_PROFILE} WHERE profile_id = ANY($1)"),
                &[(&keys, Type::BYTEA_ARRAY)],
            )
            .map_err(|err| backend(op, &err))?;
        drop(conn);
        let mut found: HashMap<ProfileId, ProfileState> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let id = profile_id_of(op, get_col(op, row, 0)?)?;
            found.insert(id, state_of(op, id, row, 1)?);
        }
        Ok(ids.iter().map(|id| found.get(id).cloned()).collect())
    }

    fn lookup(&self, key: &IdentKey) -> Result<Option<ProfileId>, StoreError> {
        let op = "lookup";
        let mut conn = self.conn(op)?;
        let rows = conn
            .query_typed(
                "SELECT profile_id FROM identifiers WHERE key = $1",
                &[(&key.0.as_ref(), Type::BYTEA)],
            )
            .map_err(|err| backend(op, &err))?;
        rows.first()
            .map(|row| profile_id_of(op, get_col(op, row, 0)?))
            .transpose()
    }

    fn lookup_many(&self, keys: &[IdentKey]) -> Result<Vec<Option<ProfileId>>, StoreError> {
        let op = "lookup_many";
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: Vec<&[u8]> = keys.iter().map(|key| key.0.as_ref()).collect();
        let mut conn = self.conn(op)?;
        let rows = conn
            .query_typed(
                "SELECT key, profile_id FROM identifiers WHERE key = ANY($1)",
                &[(&wanted, Type::BYTEA_ARRAY)],
            )
            .map_err(|err| backend(op, &err))?;
        drop(conn);
        let mut found: HashMap<&[u8], ProfileId> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let key: &[u8] = get_col(op, row, 0)?;
            found.insert(key, profile_id_of(op, get_col(op, row, 1)?)?);
        }
        Ok(keys
            .iter()
            .map(|key| found.get(key.0.as_ref()).copied())
            .collect())
    }

    fn changes(
        &self,
        since_ms: Option<i64>,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let op = "changes";
        let Ok(after) = i64::try_from(after_seq) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let since = since_ms.unwrap_or(i64::MIN);
        let mut conn = self.conn(op)?;
        let rows = conn
            .query_typed(
                "SELECT seq, profile_id, updated_at_ms, state, merged_into FROM profiles
                 WHERE seq > $1 AND updated_at_ms >= $2
                 ORDER BY seq LIMIT $3",
                &[
                    (&after, Type::INT8),
                    (&since, Type::INT8),
                    (&limit_of(limit), Type::INT8),
                ],
            )
            .map_err(|err| backend(op, &err))?;
        drop(conn);
        rows.iter()
            .map(|row| {
                let seq: i64 = get_col(op, row, 0)?;
                let state: i16 = get_col(op, row, 3)?;
                let kind = match state {
                    STATE_ACTIVE => ChangeKind::Upserted,
                    STATE_MERGED => {
                        ChangeKind::MergedInto(profile_id_of(op, get_col::<&[u8]>(op, row, 4)?)?)
                    }
                    STATE_DELETED => ChangeKind::Deleted,
                    other => return Err(corrupt(op, format!("unknown profile state {other}"))),
                };
                Ok(Change {
                    seq: u64::try_from(seq).map_err(|_| corrupt(op, "a negative change seq"))?,
                    id: profile_id_of(op, get_col(op, row, 1)?)?,
                    updated_at_ms: get_col(op, row, 2)?,
                    kind,
                })
            })
            .collect()
    }

    fn timeline_summary(&self, id: &ProfileId) -> Result<TimelineSummary, StoreError> {
        let op = "timeline summary";
        let id_bytes = id.as_bytes().as_slice();
        let mut conn = self.conn(op)?;
        let row = conn
            .query_typed_one(
                "SELECT count(*), min(timestamp_ms), max(timestamp_ms) FROM timeline
                 WHERE profile_id = $1",
                &[(&id_bytes, Type::BYTEA)],
            )
            .map_err(|err| backend(op, &err))?;
        drop(conn);
        let events: i64 = get_col(op, &row, 0)?;
        Ok(TimelineSummary {
            events: u64::try_from(events).unwrap_or(0),
            first_ms: get_col(op, &row, 1)?,
            last_ms: get_col(op, &row, 2)?,
        })
    }

    fn timeline(
        &self,
        id: &ProfileId,
        before: Option<&TimelineEntry>,
        limit: usize,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        let op = "timeline";
        if limit == 0 {
            return Ok(Vec::new());
        }
        let id_bytes = id.as_bytes().as_slice();
        let limit = limit_of(limit);
        let mut conn = self.conn(op)?;
        let rows = match before {
            None => conn.query_typed(
                "SELECT timestamp_ms, log_partition, log_offset FROM timeline
                 WHERE profile_id = $1
                 ORDER BY timestamp_ms DESC, log_partition DESC, log_offset DESC
                 LIMIT $2",
                &[(&id_bytes, Type::BYTEA), (&limit, Type::INT8)],
            ),
            Some(before) => {
                // An offset beyond bigint sorts after every stored one.
                let offset = i64::try_from(before.event.offset).unwrap_or(i64::MAX);
                let partition = i64::from(before.event.partition);
                let inclusive = i64::try_from(before.event.offset).is_err();
                conn.query_typed(
                    "SELECT timestamp_ms, log_partition, log_offset FROM timeline
                     WHERE profile_id = $1
                       AND ((timestamp_ms, log_partition, log_offset) < ($2, $3, $4)
                            OR ($5 AND (timestamp_ms, log_partition, log_offset) = ($2, $3, $4)))
                     ORDER BY timestamp_ms DESC, log_partition DESC, log_offset DESC
                     LIMIT $6",
                    &[
                        (&id_bytes, Type::BYTEA),
                        (&before.timestamp_ms, Type::INT8),
                        (&partition, Type::INT8),
                        (&offset, Type::INT8),
                        (&inclusive, Type::BOOL),
                        (&limit, Type::INT8),
                    ],
                )
            }
        }
        .map_err(|err| backend(op, &err))?;
        drop(conn);
        rows.iter()
            .map(|row| {
                let partition: i64 = get_col(op, row, 1)?;
                let offset: i64 = get_col(op, row, 2)?;
                Ok(TimelineEntry {
                    timestamp_ms: get_col(op, row, 0)?,
                    event: EventRef {
                        partition: u32::try_from(partition)
                            .map_err(|_| corrupt(op, "a log partition out of range"))?,
                        offset: u64::try_from(offset)
                            .map_err(|_| corrupt(op, "a negative log offset"))?,
                    },
                })
            })
            .collect()
    }

    fn journal(&self, id: &ProfileId, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
        let op = "journal";
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn(op)?;
        let rows = conn
            .query_typed(
                "SELECT seq, profile_id, kind, at_ms, doc FROM journal
                 WHERE profile_id = $1 ORDER BY seq LIMIT $2",
                &[
                    (&id.as_bytes().as_slice(), Type::BYTEA),
                    (&limit_of(limit), Type::INT8),
                ],
            )
            .map_err(|err| backend(op, &err))?;
        drop(conn);
        rows.iter().map(|row| journal_entry_of(op, row)).collect()
    }

    fn journal_by_kind(
        &self,
        kind: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let op = "journal_by_kind";
        let Ok(after) = i64::try_from(after_seq) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn(op)?;
        let rows = conn
            .query_typed(
                "SELECT seq, profile_id, kind, at_ms, doc FROM journal
                 WHERE kind = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[
                    (&kind, Type::TEXT),
                    (&after, Type::INT8),
                    (&limit_of(limit), Type::INT8),
                ],
            )
            .map_err(|err| backend(op, &err))?;
        drop(conn);
        rows.iter().map(|row| journal_entry_of(op, row)).collect()
    }

    fn consumer_offsets(&self, consumer: &str) -> Result<Vec<(u32, u64)>, StoreError> {
        let op = "consumer_offsets";
        let mut conn = self.conn(op)?;
        let rows = conn
            .query_typed(
                "SELECT log_partition, next_offset FROM consumer_offsets
                 WHERE consumer = $1 ORDER BY log_partition",
                &[(&consumer, Type::TEXT)],
            )
            .map_err(|err| backend(op, &err))?;
        drop(conn);
        rows.iter()
            .map(|row| {
                let partition: i64 = get_col(op, row, 0)?;
                let offset: i64 = get_col(op, row, 1)?;
                Ok((
                    u32::try_from(partition)
                        .map_err(|_| corrupt(op, "a log partition out of range"))?,
                    u64::try_from(offset).map_err(|_| corrupt(op, "a negative offset"))?,
                ))
            })
            .collect()
    }

    fn count_active(&self) -> Result<u64, StoreError> {
        let op = "count_active";
        let mut conn = self.conn(op)?;
        let rows = conn
            .query_typed(
                "SELECT count(*) FROM profiles WHERE state = $1",
                &[(&STATE_ACTIVE, Type::INT2)],
            )
            .map_err(|err| backend(op, &err))?;
        let active: i64 = match rows.first() {
            Some(row) => get_col(op, row, 0)?,
            None => 0,
        };
        u64::try_from(active).map_err(|_| corrupt(op, "a negative count"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Barrier, OnceLock};

    use super::*;
    use crate::conformance::Harness;
    use crate::{ConsumerOffsets, NewJournalEntry};

    const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    fn test_url() -> String {
        std::env::var("TRIBUTARY_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
    }

    /// Whether PostgreSQL answers at the test URL, asked once per test binary.
    fn reachable() -> Result<(), String> {
        static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
        PROBE
            .get_or_init(|| {
                let mut config: postgres::Config = test_url()
                    .parse()
                    .map_err(|err| format!("bad URL: {err}"))?;
                config.connect_timeout(Duration::from_secs(3));
                let mut client = config
                    .connect(NoTls)
                    .map_err(|err| describe("connect", &err))?;
                client
                    .simple_query("SELECT 1")
                    .map(|_| ())
                    .map_err(|err| describe("probe", &err))
            })
            .clone()
    }

    /// A fresh schema per test, dropped when the harness is.
    struct PgHarness {
        url: String,
        schema: String,
    }

    fn fresh_schema() -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!(
            "trib_test_{}_{}_{}",
            std::process::id(),
            nanos,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn harness() -> Option<PgHarness> {
        match reachable() {
            Ok(()) => Some(PgHarness {
                url: test_url(),
                schema: fresh_schema(),
            }),
            Err(err) => {
                if std::env::var("TRIBUTARY_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                    panic!(
                        "TRIBUTARY_REQUIRE_POSTGRES=1 but PostgreSQL is unreachable at \
                         TRIBUTARY_TEST_POSTGRES_URL (default {DEFAULT_URL}): {err}"
                    );
                }
                eprintln!(
                    "PostgreSQL unreachable ({err}); set TRIBUTARY_TEST_POSTGRES_URL to run the \
                     PostgreSQL store tests"
                );
                None
            }
        }
    }

    impl PgHarness {
        fn options(&self) -> PostgresOptions {
            PostgresOptions {
                schema: self.schema.clone(),
                pool_size: 4,
                ..PostgresOptions::default()
            }
        }

        fn try_open(&self) -> Result<PostgresStore, StoreError> {
            PostgresStore::open(&self.url, self.options())
        }

        fn store(&self) -> PostgresStore {
            self.try_open().unwrap()
        }

        /// A plain connection with the harness's schema on its search path.
        fn client(&self) -> Client {
            let mut client = postgres::Client::connect(&self.url, NoTls).unwrap();
            client
                .batch_execute(&format!(
                    "SET search_path TO {}; SET client_min_messages TO warning",
                    quote_ident(&self.schema)
                ))
                .unwrap();
            client
        }
    }

    impl Harness for PgHarness {
        fn open(&self) -> Box<dyn ProfileStore> {
            Box::new(self.store())
        }
    }

    impl Drop for PgHarness {
        fn drop(&mut self) {
            let dropped = postgres::Client::connect(&self.url, NoTls).and_then(|mut client| {
                client.batch_execute(&format!(
                    "SET client_min_messages TO warning; DROP SCHEMA IF EXISTS {} CASCADE",
                    quote_ident(&self.schema)
                ))
            });
            if let Err(err) = dropped {
                eprintln!("could not drop test schema {}: {err}", self.schema);
            }
        }
    }

    crate::conformance::conformance_tests!(harness());

    fn id(n: u8) -> ProfileId {
        ProfileId::from_bytes([n; 16])
    }

    fn migrations_in(harness: &PgHarness) -> Vec<(i32, String, String)> {
        harness
            .client()
            .query(
                "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect()
    }

    fn known_migrations() -> Vec<(i32, String, String)> {
        MIGRATIONS
            .iter()
            .map(|m| (m.version, m.name.to_owned(), checksum(m.sql)))
            .collect()
    }

    #[test]
    fn migration_files_are_numbered_in_order() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(usize::try_from(migration.version).unwrap(), index + 1);
        }
    }

    #[test]
    fn a_fresh_schema_gets_every_migration_and_a_reopen_none() {
        let Some(harness) = harness() else { return };
        let store = harness.store();
        let all: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(store.applied_at_open, all);
        assert_eq!(migrations_in(&harness), known_migrations());
        drop(store);
        let reopened = harness.store();
        assert!(reopened.applied_at_open.is_empty());
        assert_eq!(migrations_in(&harness), known_migrations());
        // The partitions exist, and the partition count is recorded.
        let mut client = harness.client();
        let partitions: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'profiles'::regclass",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(partitions, 16);
        let stored: String = client
            .query_one(
                "SELECT value FROM store_settings WHERE name = 'partitions'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(stored, "16");
    }

    #[test]
    fn a_schema_newer_than_the_binary_is_refused() {
        let Some(harness) = harness() else { return };
        drop(harness.store());
        harness
            .client()
            .execute(
                "INSERT INTO schema_migrations (version, name, checksum) \
                 VALUES (9999, 'from_the_future', 'x')",
                &[],
            )
            .unwrap();
        let Err(StoreError::Migration(message)) = harness.try_open() else {
            panic!("a newer schema was opened");
        };
        assert!(message.contains("9999_from_the_future"), "{message}");
        assert!(message.contains("newer than this binary"), "{message}");
    }

    #[test]
    fn an_edited_migration_is_refused() {
        let Some(harness) = harness() else { return };
        drop(harness.store());
        harness
            .client()
            .execute(
                "UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1",
                &[],
            )
            .unwrap();
        let Err(StoreError::Migration(message)) = harness.try_open() else {
            panic!("a schema with a mismatched checksum was opened");
        };
        assert!(message.contains("0001_init"), "{message}");
        assert!(message.contains("checksum"), "{message}");
    }

    #[test]
    fn concurrent_opens_of_a_fresh_schema_both_succeed() {
        let Some(harness) = harness() else { return };
        let barrier = Barrier::new(3);
        let applied: Vec<Vec<i32>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        harness.store().applied_at_open.clone()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // Exactly one opener applied each migration; the others found it done.
        let mut all: Vec<i32> = applied.into_iter().flatten().collect();
        all.sort_unstable();
        let expected: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(all, expected);
        assert_eq!(migrations_in(&harness), known_migrations());
    }

    #[test]
    fn a_failing_batch_leaves_nothing_applied() {
        let Some(harness) = harness() else { return };
        let store = harness.store();
        let secret_key = IdentKey(Bytes::from_static(b"email\0secret@example.com"));
        let good = ChangeBatch {
            at_ms: 1,
            upserts: vec![ProfileRecord {
                id: id(1),
                updated_at_ms: 1,
                doc: Bytes::from_static(b"before"),
            }],
            offsets: Some(ConsumerOffsets {
                consumer: "identity".to_owned(),
                offsets: vec![(0, 5)],
            }),
            ..ChangeBatch::default()
        };
        store.apply(&good).unwrap();
        let changes_before = store.changes(None, 0, 100).unwrap();
        // Every part but the journal is fine; PostgreSQL refuses the NUL in the journal kind,
        // after the profiles, identifiers and timeline statements have run.
        let failing = ChangeBatch {
            at_ms: 2,
            erased: vec![id(1)],
            deleted: vec![id(9)],
            merged: vec![(id(3), id(1))],
            upserts: vec![ProfileRecord {
                id: id(1),
                updated_at_ms: 2,
                doc: Bytes::from_static(b"secret document"),
            }],
            identifiers: vec![(secret_key.clone(), Some(id(1)))],
            timeline: vec![(
                id(1),
                TimelineEntry {
                    timestamp_ms: 1,
                    event: EventRef {
                        partition: 0,
                        offset: 1,
                    },
                },
            )],
            journal: vec![NewJournalEntry {
                profile: id(1),
                kind: "bad\0kind".to_owned(),
                at_ms: 2,
                doc: Bytes::from_static(b"secret journal"),
            }],
            offsets: Some(ConsumerOffsets {
                consumer: "identity".to_owned(),
                offsets: vec![(0, 9)],
            }),
        };
        let Err(StoreError::Backend(message)) = store.apply(&failing) else {
            panic!("the failing batch applied");
        };
        assert!(
            message.starts_with("apply: append journal entries"),
            "{message}"
        );
        assert!(!message.contains("secret"), "{message}");
        let Some(ProfileState::Active(record)) = store.get(&id(1)).unwrap() else {
            panic!("profile 1 changed state");
        };
        assert_eq!(record.doc.as_ref(), b"before");
        assert_eq!(store.get(&id(3)).unwrap(), None);
        assert_eq!(store.get(&id(9)).unwrap(), None);
        assert_eq!(store.lookup(&secret_key).unwrap(), None);
        assert!(store.timeline(&id(1), None, 10).unwrap().is_empty());
        assert!(store.journal(&id(1), 10).unwrap().is_empty());
        assert_eq!(store.consumer_offsets("identity").unwrap(), vec![(0, 5)]);
        assert_eq!(store.changes(None, 0, 100).unwrap(), changes_before);
        // The store (and its pooled connections) keep working.
        let mut fixed = failing;
        fixed.journal[0].kind = "merge".to_owned();
        store.apply(&fixed).unwrap();
        assert_eq!(store.lookup(&secret_key).unwrap(), Some(id(1)));
        assert_eq!(store.consumer_offsets("identity").unwrap(), vec![(0, 9)]);
    }

    #[test]
    fn offsets_beyond_bigint_are_refused_before_the_database() {
        let Some(harness) = harness() else { return };
        let store = harness.store();
        let batch = ChangeBatch {
            timeline: vec![(
                id(1),
                TimelineEntry {
                    timestamp_ms: 1,
                    event: EventRef {
                        partition: u32::MAX,
                        offset: u64::MAX,
                    },
                },
            )],
            ..ChangeBatch::default()
        };
        assert!(matches!(store.apply(&batch), Err(StoreError::Backend(_))));
        // Partitions use the whole u32 range.
        let mut batch = batch;
        batch.timeline[0].1.event.offset = 7;
        store.apply(&batch).unwrap();
        let entries = store.timeline(&id(1), None, 10).unwrap();
        assert_eq!(entries[0].event.partition, u32::MAX);
    }

    #[test]
    fn merge_chains_in_one_batch_move_timelines_like_the_reference() {
        let Some(harness) = harness() else { return };
        let store = harness.store();
        let reference = crate::MemoryStore::new();
        let entry = |offset: u64| TimelineEntry {
            timestamp_ms: 10,
            event: EventRef {
                partition: 0,
                offset,
            },
        };
        // 1 into 2, then 2 into 3 (1's entries follow), then 4 into 1 (the id 1 now holds
        // only 4's entries, one of them equal to one 1 had), and an id merged into itself;
        // with the ids relabelled by every permutation, so that whatever order the moves are
        // sent in, some round hits each.
        let mut permutations = vec![vec![1u8, 2, 3, 4]];
        for _ in 0..23 {
            let mut next = permutations[permutations.len() - 1].clone();
            // The next lexicographic permutation.
            let i = (0..3).rev().find(|&i| next[i] < next[i + 1]).unwrap();
            let j = (i + 1..4).rev().find(|&j| next[j] > next[i]).unwrap();
            next.swap(i, j);
            next[i + 1..].reverse();
            permutations.push(next);
        }
        for (round, perm) in permutations.iter().enumerate() {
            let base = u8::try_from(round * 10).unwrap();
            let label = |logical: u8| id(base + perm[usize::from(logical - 1)]);
            let setup = ChangeBatch {
                timeline: (1..=4u8)
                    .map(|n| (label(n), entry(u64::from(n))))
                    .chain([(label(4), entry(1))])
                    .collect(),
                ..ChangeBatch::default()
            };
            let chain = ChangeBatch {
                at_ms: 5,
                merged: vec![
                    (label(1), label(2)),
                    (label(2), label(3)),
                    (label(4), label(1)),
                    (id(base + 5), id(base + 5)),
                ],
                ..ChangeBatch::default()
            };
            for s in [&store as &dyn ProfileStore, &reference] {
                s.apply(&setup).unwrap();
                s.apply(&chain).unwrap();
            }
            for n in base + 1..=base + 5 {
                assert_eq!(
                    store.timeline(&id(n), None, 10).unwrap(),
                    reference.timeline(&id(n), None, 10).unwrap(),
                    "timeline of {n} in {perm:?}"
                );
                assert_eq!(store.get(&id(n)).unwrap(), reference.get(&id(n)).unwrap());
            }
        }
        let ids = |changes: Vec<Change>| -> Vec<(ProfileId, ChangeKind)> {
            changes.into_iter().map(|c| (c.id, c.kind)).collect()
        };
        assert_eq!(
            ids(store.changes(None, 0, 1_000).unwrap()),
            ids(reference.changes(None, 0, 1_000).unwrap())
        );
    }

    #[test]
    fn usable_from_spawn_blocking() {
        let Some(harness) = harness() else { return };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let harness = Arc::new(harness);
        runtime.block_on(async {
            let opener = harness.clone();
            let store = tokio::task::spawn_blocking(move || Arc::new(opener.store()))
                .await
                .unwrap();
            let tasks: Vec<_> = (0..4u8)
                .map(|n| {
                    let store = store.clone();
                    tokio::task::spawn_blocking(move || {
                        store
                            .apply(&ChangeBatch {
                                upserts: vec![ProfileRecord {
                                    id: id(n),
                                    updated_at_ms: 1,
                                    doc: Bytes::from_static(b"doc"),
                                }],
                                ..ChangeBatch::default()
                            })
                            .unwrap();
                        store.get(&id(n)).unwrap()
                    })
                })
                .collect();
            for task in tasks {
                assert!(matches!(task.await.unwrap(), Some(ProfileState::Active(_))));
            }
            // The last reference dropped on a worker thread: must not panic.
            drop(store);
        });
    }
}
