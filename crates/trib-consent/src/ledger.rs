//! The consent ledger: an append-only SQLite history of consent per identifier key and
//! purpose, the suppression lists, and the consent consumer's log offsets, in
//! `<data_dir>/consent.db`.
//!
//! Rows are keyed by identifier index keys ([`IdentKey`], the HMAC that
//! `trib_identity::Keyer` derives from an identifier's type and value), so the ledger holds no
//! clear identifier, and consent follows identifiers through merges and unmerges: a profile's
//! consent for a purpose is the latest entry (by event time, ties by ledger sequence) over all
//! of its identifiers. Triggers refuse updates and deletes of consent rows.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::{Map, Value};
use trib_store::IdentKey;

use crate::error::ConsentError;
use crate::rules::{LegalBasis, PROOF_FIELDS};

/// The ledger's file name in the data directory.
pub const LEDGER_FILE: &str = "consent.db";

/// The longest proof value kept, in characters; longer values are dropped.
const MAX_PROOF_CHARS: usize = 512;

/// The schema, one migration per entry; `PRAGMA user_version` counts those applied.
const MIGRATIONS: [&str; 2] = [
    include_str!("../migrations/0001_ledger.sql"),
    include_str!("../migrations/0002_suppression_changes.sql"),
];

/// A consent status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The person agreed.
    Granted,
    /// The person declined (or never agreed, when recorded from a `false` preference).
    Denied,
    /// The person took back an earlier grant.
    Withdrawn,
}

/// A consent entry to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    /// The identifier the entry is about.
    pub ident_key: IdentKey,
    /// A declared purpose.
    pub purpose: String,
    pub status: Status,
    /// When the person expressed it (event time), ms since the Unix epoch.
    pub at_ms: i64,
    /// Where it came from: `event:<source>:<messageId>`, `import:...`, `api:<key id>`.
    pub source: String,
    pub legal_basis: LegalBasis,
    pub proof: Proof,
}

/// A recorded consent entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The ledger sequence number, increasing with every entry.
    pub seq: i64,
    pub ident_key: IdentKey,
    pub purpose: String,
    pub status: Status,
    pub at_ms: i64,
    pub source: String,
    /// As recorded (`consent`, `contract`, ...).
    pub legal_basis: String,
    pub proof: Proof,
    /// When the ledger stored it, ms since the Unix epoch.
    pub recorded_at_ms: i64,
}

/// Proof of consent: only the fields in [`PROOF_FIELDS`], as short strings; a `url` keeps
/// neither its query nor its fragment (which can carry personal data).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proof(Map<String, Value>);

/// Where a suppression applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SuppressionScope {
    /// Every destination.
    Global,
    /// One destination, by its configured name.
    Destination(String),
}

/// A suppression of one identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    pub ident_key: IdentKey,
    pub scope: SuppressionScope,
    /// Why (`hard_bounce`, `complaint`, `request`), short and without personal data.
    pub reason: String,
    pub at_ms: i64,
    /// Who added it (`api:<key id>`).
    pub source: String,
}

/// One consent observation of the consumer, before it is compared with the ledger.
#[derive(Debug, Clone)]
pub(crate) struct Observation {
    pub(crate) keys: Vec<IdentKey>,
    pub(crate) purpose: String,
    pub(crate) kind: Observed,
    pub(crate) at_ms: i64,
    pub(crate) source: String,
    pub(crate) legal_basis: LegalBasis,
    pub(crate) proof: Proof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Observed {
    /// A Segment category preference (`true`/`false`), sent with many events: recorded only
    /// when it changes the identifier's state.
    Preference(bool),
    /// A consent event's explicit status: always recorded.
    Explicit(Status),
}

/// The consent ledger. Cheap to share behind an `Arc`; every call is a short SQLite
/// transaction on one connection (callers on an async runtime use `spawn_blocking`).
pub struct Ledger {
    connection: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("path", &self.path).finish()
    }
}

impl Ledger {
    /// Opens (creating and migrating) `<data_dir>/consent.db`.
    pub fn open_in(data_dir: &Path) -> Result<Ledger, ConsentError> {
        std::fs::create_dir_all(data_dir).map_err(|error| ConsentError::Open {
            path: data_dir.to_owned(),
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(error)),
        })?;
        Self::open(&data_dir.join(LEDGER_FILE))
    }

    /// Opens (creating and migrating) a ledger file: WAL, `synchronous = FULL` (a recorded
    /// withdrawal survives a power cut), foreign writers wait up to 5 s.
    pub fn open(path: &Path) -> Result<Ledger, ConsentError> {
        let open_error = |source| ConsentError::Open {
            path: path.to_owned(),
            source,
        };
        let mut connection = Connection::open(path).map_err(open_error)?;
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_error)?;
        connection
            .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get::<_, String>(0))
            .map_err(open_error)?;
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(open_error)?;
        // Plans do not depend on bound values: without this, SQLite re-prepares the consent
        // lookup (a range on `at_ms`) whenever a binding changes, which made it ~50x slower.
        connection
            .set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
                true,
            )
            .map_err(open_error)?;
        let version: i64 = connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(open_error)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(ConsentError::TooNew {
                path: path.to_owned(),
                found: version,
                known,
            });
        }
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let transaction = connection.transaction().map_err(open_error)?;
            transaction.execute_batch(migration).map_err(open_error)?;
            transaction
                .pragma_update(None, "user_version", index as i64 + 1)
                .map_err(open_error)?;
            transaction.commit().map_err(open_error)?;
        }
        Ok(Ledger {
            connection: Mutex::new(connection),
            path: path.to_owned(),
        })
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic inside a transaction rolls it back when the transaction drops, so the
        // connection is consistent even if the lock was poisoned.
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends entries in one transaction and returns their sequence numbers.
    pub fn record(&self, entries: &[NewEntry]) -> Result<Vec<i64>, ConsentError> {
        let mut connection = self.lock();
        let transaction = connection
            .transaction()
            .map_err(ConsentError::sqlite("record consent"))?;
        let now = now_ms();
        let mut seqs = Vec::with_capacity(entries.len());
        for entry in entries {
            seqs.push(insert(&transaction, entry, now)?);
        }
        transaction
            .commit()
            .map_err(ConsentError::sqlite("record consent"))?;
        Ok(seqs)
    }

    /// Every entry about these identifier keys, oldest first (by event time, then sequence).
    pub fn history(&self, keys: &[IdentKey]) -> Result<Vec<Entry>, ConsentError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached(
                "SELECT seq, ident_key, purpose, status, at_ms, source, legal_basis, proof, \
                 recorded_at_ms FROM consent WHERE ident_key = ?1",
            )
            .map_err(ConsentError::sqlite("read history"))?;
        let mut entries = Vec::new();
        for key in keys {
            let rows = statement
                .query_map(params![&key.0[..]], raw_entry)
                .map_err(ConsentError::sqlite("read history"))?;
            for row in rows {
                entries.push(decode(row.map_err(ConsentError::sqlite("read history"))?)?);
            }
        }
        entries.sort_by_key(|entry| (entry.at_ms, entry.seq));
        entries.dedup_by_key(|entry| entry.seq);
        Ok(entries)
    }

    /// The latest entry for `purpose` over these identifier keys (by event time, ties by
    /// sequence): the current consent of the person they identify. Read live from the file.
    pub fn latest(&self, keys: &[IdentKey], purpose: &str) -> Result<Option<Entry>, ConsentError> {
        latest_of(&self.lock(), keys, purpose)
    }

    /// What a permit needs, read in one read transaction (one snapshot, one lock of the
    /// write-ahead log instead of one per statement): the first suppression of these keys
    /// (global before the destination's), and, when `consent_purpose` is given and nothing is
    /// suppressed, the latest consent entry for it.
    pub fn standing(
        &self,
        keys: &[IdentKey],
        destination: Option<&str>,
        consent_purpose: Option<&str>,
    ) -> Result<(Option<Suppression>, Option<Entry>), ConsentError> {
        let connection = self.lock();
        let snapshot = connection
            .unchecked_transaction()
            .map_err(ConsentError::sqlite("read consent"))?;
        let suppression = suppression_of(&snapshot, keys, destination)?;
        let latest = match consent_purpose {
            Some(purpose) if suppression.is_none() => latest_of(&snapshot, keys, purpose)?,
            _ => None,
        };
        snapshot
            .commit()
            .map_err(ConsentError::sqlite("read consent"))?;
        Ok((suppression, latest))
    }

    /// The identifier keys of entries recorded after sequence `after_seq`, oldest first, at
    /// most `limit`: `(seq, key)`, for consumers that act on consent changes (the sync
    /// engine re-evaluates the profiles they identify).
    pub fn changed_after(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, IdentKey)>, ConsentError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached(
                "SELECT seq, ident_key FROM consent WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(ConsentError::sqlite("read changes"))?;
        let rows = statement
            .query_map(params![after_seq, limit as i64], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
            })
            .map_err(ConsentError::sqlite("read changes"))?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, key) = row.map_err(ConsentError::sqlite("read changes"))?;
            out.push((seq, IdentKey(Bytes::from(key))));
        }
        Ok(out)
    }

    /// Adds (or replaces the reason of) a suppression.
    pub fn suppress(&self, suppression: &Suppression) -> Result<(), ConsentError> {
        if suppression.reason.trim().is_empty() || suppression.reason.chars().count() > 200 {
            return Err(ConsentError::Invalid {
                field: "reason",
                reason: "must be 1 to 200 characters".into(),
            });
        }
        let mut connection = self.lock();
        let transaction = connection
            .transaction()
            .map_err(ConsentError::sqlite("add suppression"))?;
        transaction
            .execute(
                "INSERT INTO suppressions (ident_key, scope, reason, at_ms, source) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (ident_key, scope) DO UPDATE SET \
                 reason = excluded.reason, at_ms = excluded.at_ms, source = excluded.source",
                params![
                    &suppression.ident_key.0[..],
                    suppression.scope.as_text(),
                    suppression.reason,
                    suppression.at_ms,
                    suppression.source
                ],
            )
            .map_err(ConsentError::sqlite("add suppression"))?;
        note_suppression_change(&transaction, &suppression.ident_key, &suppression.scope)
            .map_err(ConsentError::sqlite("add suppression"))?;
        transaction
            .commit()
            .map_err(ConsentError::sqlite("add suppression"))
    }

    /// Removes a suppression; returns whether there was one.
    pub fn unsuppress(
        &self,
        ident_key: &IdentKey,
        scope: &SuppressionScope,
    ) -> Result<bool, ConsentError> {
        let mut connection = self.lock();
        let transaction = connection
            .transaction()
            .map_err(ConsentError::sqlite("remove suppression"))?;
        let removed = transaction
            .execute(
                "DELETE FROM suppressions WHERE ident_key = ?1 AND scope = ?2",
                params![&ident_key.0[..], scope.as_text()],
            )
            .map_err(ConsentError::sqlite("remove suppression"))?;
        if removed > 0 {
            note_suppression_change(&transaction, ident_key, scope)
                .map_err(ConsentError::sqlite("remove suppression"))?;
        }
        transaction
            .commit()
            .map_err(ConsentError::sqlite("remove suppression"))?;
        Ok(removed > 0)
    }

    /// Suppressions added, changed or removed after sequence `after_seq`, oldest first, at
    /// most `limit`: `(seq, key, scope)`, for consumers that act on them (the sync engine
    /// re-evaluates the profiles they identify, at once).
    pub fn suppression_changes_after(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, IdentKey, SuppressionScope)>, ConsentError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached(
                "SELECT seq, ident_key, scope FROM suppression_changes WHERE seq > ?1
                 ORDER BY seq LIMIT ?2",
            )
            .map_err(ConsentError::sqlite("read suppression changes"))?;
        let rows = statement
            .query_map(params![after_seq, limit as i64], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .map_err(ConsentError::sqlite("read suppression changes"))?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, key, scope) =
                row.map_err(ConsentError::sqlite("read suppression changes"))?;
            let scope = SuppressionScope::parse(&scope).ok_or(ConsentError::Invalid {
                field: "scope",
                reason: format!("unknown suppression scope in the ledger: {scope:?}"),
            })?;
            out.push((seq, IdentKey(Bytes::from(key)), scope));
        }
        Ok(out)
    }

    /// The suppression that stops these identifier keys from reaching `destination` (or any
    /// destination when `None`): a global one first, then one for the destination.
    pub fn suppression_for(
        &self,
        keys: &[IdentKey],
        destination: Option<&str>,
    ) -> Result<Option<Suppression>, ConsentError> {
        suppression_of(&self.lock(), keys, destination)
    }

    /// Every suppression of these identifier keys.
    pub fn suppressions_of(&self, keys: &[IdentKey]) -> Result<Vec<Suppression>, ConsentError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached(
                "SELECT ident_key, scope, reason, at_ms, source FROM suppressions \
                 WHERE ident_key = ?1 ORDER BY rowid",
            )
            .map_err(ConsentError::sqlite("read suppressions"))?;
        let mut found = Vec::new();
        for key in keys {
            let rows = statement
                .query_map(params![&key.0[..]], raw_suppression)
                .map_err(ConsentError::sqlite("read suppressions"))?;
            for row in rows {
                found.push(decode_suppression(
                    row.map_err(ConsentError::sqlite("read suppressions"))?,
                )?);
            }
        }
        Ok(found)
    }

    /// Suppressions in the order they were first added, after `cursor` (a position returned
    /// with an earlier page), at most `limit`; each with its position.
    pub fn suppressions(
        &self,
        cursor: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Suppression)>, ConsentError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached(
                "SELECT rowid, ident_key, scope, reason, at_ms, source FROM suppressions \
                 WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
            )
            .map_err(ConsentError::sqlite("list suppressions"))?;
        let rows = statement
            .query_map(params![cursor, limit as i64], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    (
                        row.get::<_, Vec<u8>>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, i64>(4)?,
                        row.get::<_, String>(5)?,
                    ),
                ))
            })
            .map_err(ConsentError::sqlite("list suppressions"))?;
        let mut page = Vec::new();
        for row in rows {
            let (position, raw) = row.map_err(ConsentError::sqlite("list suppressions"))?;
            page.push((position, decode_suppression(raw)?));
        }
        Ok(page)
    }

    /// The consumer's committed next offsets, by partition.
    pub fn consumer_offsets(&self, consumer: &str) -> Result<Vec<(u32, u64)>, ConsentError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached(
                "SELECT partition, next_offset FROM consumer_offsets WHERE consumer = ?1 \
                 ORDER BY partition",
            )
            .map_err(ConsentError::sqlite("read offsets"))?;
        let rows = statement
            .query_map(params![consumer], |row| {
                Ok((row.get::<_, i64>(0)? as u32, row.get::<_, i64>(1)? as u64))
            })
            .map_err(ConsentError::sqlite("read offsets"))?;
        rows.collect::<Result<_, _>>()
            .map_err(ConsentError::sqlite("read offsets"))
    }

    /// Records a consumer round: the observations (compared with the ledger, see
    /// [`Observed`]) and the next offsets, in one transaction, so a crash loses or repeats
    /// nothing. Returns how many entries were appended.
    pub(crate) fn commit_round(
        &self,
        consumer: &str,
        observations: &[Observation],
        next_offsets: &[(u32, u64)],
    ) -> Result<usize, ConsentError> {
        let mut connection = self.lock();
        let transaction = connection
            .transaction()
            .map_err(ConsentError::sqlite("commit a consumer round"))?;
        let now = now_ms();
        let mut appended = 0;
        for observation in observations {
            for key in &observation.keys {
                let before =
                    latest_before(&transaction, key, &observation.purpose, observation.at_ms)?;
                let previous = before.map(|entry| entry.status);
                let status = match (observation.kind, previous) {
                    (Observed::Preference(true), Some(Status::Granted)) => continue,
                    (Observed::Preference(true), _) => Status::Granted,
                    (Observed::Preference(false), Some(Status::Granted)) => Status::Withdrawn,
                    (Observed::Preference(false), Some(_)) => continue,
                    (Observed::Preference(false), None) => Status::Denied,
                    (Observed::Explicit(Status::Denied), Some(Status::Granted)) => {
                        Status::Withdrawn
                    }
                    (Observed::Explicit(status), _) => status,
                };
                insert(
                    &transaction,
                    &NewEntry {
                        ident_key: key.clone(),
                        purpose: observation.purpose.clone(),
                        status,
                        at_ms: observation.at_ms,
                        source: observation.source.clone(),
                        legal_basis: observation.legal_basis,
                        proof: observation.proof.clone(),
                    },
                    now,
                )?;
                appended += 1;
            }
        }
        for (partition, next) in next_offsets {
            transaction
                .execute(
                    "INSERT INTO consumer_offsets (consumer, partition, next_offset) \
                     VALUES (?1, ?2, ?3) ON CONFLICT (consumer, partition) \
                     DO UPDATE SET next_offset = excluded.next_offset",
                    params![consumer, i64::from(*partition), *next as i64],
                )
                .map_err(ConsentError::sqlite("commit a consumer round"))?;
        }
        transaction
            .commit()
            .map_err(ConsentError::sqlite("commit a consumer round"))?;
        Ok(appended)
    }
}

impl Status {
    /// The name used in the ledger and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Granted => "granted",
            Status::Denied => "denied",
            Status::Withdrawn => "withdrawn",
        }
    }

    /// Parses `granted`, `denied` or `withdrawn`.
    pub fn parse(text: &str) -> Option<Status> {
        match text {
            "granted" => Some(Status::Granted),
            "denied" => Some(Status::Denied),
            "withdrawn" => Some(Status::Withdrawn),
            _ => None,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Proof {
    /// Keeps the proof fields of a JSON object: [`PROOF_FIELDS`] with a string or number
    /// value of at most 512 characters; a `url` loses its query and fragment. Anything else
    /// is dropped.
    pub fn from_json(value: &Value) -> Proof {
        let mut kept = Map::new();
        if let Value::Object(object) = value {
            for field in PROOF_FIELDS {
                let text = match object.get(field) {
                    Some(Value::String(text)) => text.trim().to_owned(),
                    Some(Value::Number(number)) => number.to_string(),
                    _ => continue,
                };
                let text = if field == "url" {
                    text.split(['?', '#']).next().unwrap_or_default().to_owned()
                } else {
                    text
                };
                if !text.is_empty() && text.chars().count() <= MAX_PROOF_CHARS {
                    kept.insert(field.to_owned(), Value::String(text));
                }
            }
        }
        Proof(kept)
    }

    /// The kept fields.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The kept fields as a JSON object.
    pub fn to_json(&self) -> Value {
        Value::Object(self.0.clone())
    }
}

impl SuppressionScope {
    /// `global`, or `destination:<name>`.
    pub fn as_text(&self) -> String {
        match self {
            SuppressionScope::Global => "global".to_owned(),
            SuppressionScope::Destination(name) => format!("destination:{name}"),
        }
    }

    /// Parses [`SuppressionScope::as_text`].
    pub fn parse(text: &str) -> Option<SuppressionScope> {
        match text {
            "global" => Some(SuppressionScope::Global),
            _ => text
                .strip_prefix("destination:")
                .filter(|name| !name.is_empty())
                .map(|name| SuppressionScope::Destination(name.to_owned())),
        }
    }
}

/// The current time in ms since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

type RawEntry = (
    i64,
    Vec<u8>,
    String,
    String,
    i64,
    String,
    String,
    String,
    i64,
);
type RawSuppression = (Vec<u8>, String, String, i64, String);

fn raw_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawEntry> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
    ))
}

fn raw_suppression(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawSuppression> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn decode(raw: RawEntry) -> Result<Entry, ConsentError> {
    let (seq, key, purpose, status, at_ms, source, legal_basis, proof, recorded_at_ms) = raw;
    let corrupt = |reason: &str| ConsentError::Corrupt {
        seq,
        reason: reason.to_owned(),
    };
    let status = Status::parse(&status).ok_or_else(|| corrupt("unknown status"))?;
    let proof = match serde_json::from_str(&proof) {
        Ok(Value::Object(map)) => Proof(map),
        _ => return Err(corrupt("proof is not a JSON object")),
    };
    Ok(Entry {
        seq,
        ident_key: IdentKey(Bytes::from(key)),
        purpose,
        status,
        at_ms,
        source,
        legal_basis,
        proof,
        recorded_at_ms,
    })
}

fn decode_suppression(raw: RawSuppression) -> Result<Suppression, ConsentError> {
    let (key, scope, reason, at_ms, source) = raw;
    let scope = SuppressionScope::parse(&scope).ok_or_else(|| ConsentError::Corrupt {
        seq: 0,
        reason: "a suppression has an unknown scope".into(),
    })?;
    Ok(Suppression {
        ident_key: IdentKey(Bytes::from(key)),
        scope,
        reason,
        at_ms,
        source,
    })
}

fn insert(transaction: &Transaction<'_>, entry: &NewEntry, now: i64) -> Result<i64, ConsentError> {
    if crate::rules::purpose_name_problem(&entry.purpose).is_some() {
        return Err(ConsentError::Invalid {
            field: "purpose",
            reason: "must be 1 to 64 of a-z, 0-9 and _".into(),
        });
    }
    if entry.source.is_empty() {
        return Err(ConsentError::Invalid {
            field: "source",
            reason: "must not be empty".into(),
        });
    }
    transaction
        .execute(
            "INSERT INTO consent (ident_key, purpose, status, at_ms, source, legal_basis, proof, \
             recorded_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                &entry.ident_key.0[..],
                entry.purpose,
                entry.status.as_str(),
                entry.at_ms,
                entry.source,
                entry.legal_basis.as_str(),
                entry.proof.to_json().to_string(),
                now
            ],
        )
        .map_err(ConsentError::sqlite("record consent"))?;
    Ok(transaction.last_insert_rowid())
}

/// The latest entry of one key and purpose at or before `at_ms`.
/// The latest entry for `purpose` over `keys` (by event time, ties by sequence).
fn latest_of(
    connection: &Connection,
    keys: &[IdentKey],
    purpose: &str,
) -> Result<Option<Entry>, ConsentError> {
    let mut latest: Option<Entry> = None;
    for key in keys {
        if let Some(entry) = latest_before(connection, key, purpose, i64::MAX)?
            && latest
                .as_ref()
                .is_none_or(|best| (entry.at_ms, entry.seq) > (best.at_ms, best.seq))
        {
            latest = Some(entry);
        }
    }
    Ok(latest)
}

/// The first suppression of `keys`: global ones first, then the destination's.
fn note_suppression_change(
    transaction: &rusqlite::Transaction<'_>,
    ident_key: &IdentKey,
    scope: &SuppressionScope,
) -> rusqlite::Result<usize> {
    transaction.execute(
        "INSERT INTO suppression_changes (ident_key, scope) VALUES (?1, ?2)",
        params![&ident_key.0[..], scope.as_text()],
    )
}

fn suppression_of(
    connection: &Connection,
    keys: &[IdentKey],
    destination: Option<&str>,
) -> Result<Option<Suppression>, ConsentError> {
    let mut statement = connection
        .prepare_cached(
            "SELECT ident_key, scope, reason, at_ms, source FROM suppressions \
             WHERE ident_key = ?1 AND scope = ?2",
        )
        .map_err(ConsentError::sqlite("read suppressions"))?;
    let mut scopes = vec![SuppressionScope::Global];
    if let Some(destination) = destination {
        scopes.push(SuppressionScope::Destination(destination.to_owned()));
    }
    for scope in &scopes {
        let scope = scope.as_text();
        for key in keys {
            let found = statement
                .query_row(params![&key.0[..], &scope], raw_suppression)
                .optional()
                .map_err(ConsentError::sqlite("read suppressions"))?;
            if let Some(raw) = found {
                return decode_suppression(raw).map(Some);
            }
        }
    }
    Ok(None)
}

fn latest_before(
    connection: &Connection,
    key: &IdentKey,
    purpose: &str,
    at_ms: i64,
) -> Result<Option<Entry>, ConsentError> {
    let mut statement = connection
        .prepare_cached(
            "SELECT seq, ident_key, purpose, status, at_ms, source, legal_basis, proof, \
             recorded_at_ms FROM consent WHERE ident_key = ?1 AND purpose = ?2 AND at_ms <= ?3 \
             ORDER BY at_ms DESC, seq DESC LIMIT 1",
        )
        .map_err(ConsentError::sqlite("read consent"))?;
    let raw = statement
        .query_row(params![&key.0[..], purpose, at_ms], raw_entry)
        .optional()
        .map_err(ConsentError::sqlite("read consent"))?;
    raw.map(decode).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(n: u8) -> IdentKey {
        IdentKey(Bytes::from(vec![n; 16]))
    }

    fn entry(key_n: u8, purpose: &str, status: Status, at_ms: i64) -> NewEntry {
        NewEntry {
            ident_key: key(key_n),
            purpose: purpose.into(),
            status,
            at_ms,
            source: "api:test".into(),
            legal_basis: LegalBasis::Consent,
            proof: Proof::default(),
        }
    }

    #[test]
    fn standing_reads_global_suppressions_first_and_consent_only_when_unsuppressed() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open_in(dir.path()).unwrap();
        ledger
            .record(&[
                entry(1, "email_marketing", Status::Granted, 2_000),
                entry(2, "email_marketing", Status::Granted, 2_000),
            ])
            .unwrap();
        let suppress = |key_n: u8, scope: SuppressionScope| {
            ledger
                .suppress(&Suppression {
                    ident_key: key(key_n),
                    scope,
                    reason: "complaint".to_owned(),
                    at_ms: 1,
                    source: "api:test".to_owned(),
                })
                .unwrap();
        };
        suppress(2, SuppressionScope::Destination("esp".to_owned()));
        suppress(3, SuppressionScope::Global);

        let (suppression, latest) = ledger
            .standing(&[key(1)], Some("esp"), Some("email_marketing"))
            .unwrap();
        assert!(suppression.is_none());
        assert_eq!(latest.unwrap().status, Status::Granted);

        let (suppression, latest) = ledger.standing(&[key(1)], Some("esp"), None).unwrap();
        assert!(
            suppression.is_none() && latest.is_none(),
            "no consent asked"
        );

        let (suppression, latest) = ledger
            .standing(&[key(2)], Some("esp"), Some("email_marketing"))
            .unwrap();
        assert_eq!(
            suppression.unwrap().scope,
            SuppressionScope::Destination("esp".to_owned())
        );
        assert!(
            latest.is_none(),
            "a suppressed person's consent is not read"
        );
        let (suppression, _) = ledger
            .standing(&[key(2)], Some("other"), Some("email_marketing"))
            .unwrap();
        assert!(suppression.is_none(), "another destination's list");

        // The global list wins over the destination's, whichever key holds it.
        let (suppression, _) = ledger
            .standing(&[key(2), key(3)], Some("esp"), Some("email_marketing"))
            .unwrap();
        assert_eq!(suppression.unwrap().scope, SuppressionScope::Global);
    }

    #[test]
    fn the_latest_entry_over_all_keys_wins_by_event_time_then_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open_in(dir.path()).unwrap();
        ledger
            .record(&[
                entry(1, "email_marketing", Status::Granted, 2_000),
                // Older event time, recorded later: history, not the current state.
                entry(2, "email_marketing", Status::Denied, 1_000),
            ])
            .unwrap();
        let current = ledger
            .latest(&[key(1), key(2)], "email_marketing")
            .unwrap()
            .unwrap();
        assert_eq!(current.status, Status::Granted);
        // A tie in event time: the later sequence wins.
        ledger
            .record(&[entry(2, "email_marketing", Status::Withdrawn, 2_000)])
            .unwrap();
        let current = ledger
            .latest(&[key(1), key(2)], "email_marketing")
            .unwrap()
            .unwrap();
        assert_eq!(current.status, Status::Withdrawn);
        assert!(
            ledger
                .latest(&[key(3)], "email_marketing")
                .unwrap()
                .is_none()
        );
        assert!(ledger.latest(&[key(1)], "analytics").unwrap().is_none());
        let history = ledger.history(&[key(1), key(2)]).unwrap();
        let statuses: Vec<_> = history.iter().map(|e| (e.at_ms, e.status)).collect();
        assert_eq!(
            statuses,
            vec![
                (1_000, Status::Denied),
                (2_000, Status::Granted),
                (2_000, Status::Withdrawn)
            ]
        );
    }

    #[test]
    fn history_is_append_only_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ledger = Ledger::open_in(dir.path()).unwrap();
            ledger
                .record(&[entry(1, "analytics", Status::Granted, 5)])
                .unwrap();
            let connection = ledger.lock();
            let update = connection.execute("UPDATE consent SET status = 'denied'", []);
            assert!(update.is_err(), "updates are refused");
            let delete = connection.execute("DELETE FROM consent", []);
            assert!(delete.is_err(), "deletes are refused");
        }
        let ledger = Ledger::open_in(dir.path()).unwrap();
        let current = ledger.latest(&[key(1)], "analytics").unwrap().unwrap();
        assert_eq!(current.status, Status::Granted);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEDGER_FILE);
        drop(Ledger::open(&path).unwrap());
        let connection = Connection::open(&path).unwrap();
        connection.pragma_update(None, "user_version", 99).unwrap();
        drop(connection);
        assert!(matches!(
            Ledger::open(&path),
            Err(ConsentError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn proof_keeps_declared_fields_only() {
        let proof = Proof::from_json(&json!({
            "form_id": "newsletter-footer",
            "text_version": 3,
            "url": "https://shop.example/signup?email=ann%40example.com#top",
            "ip": "203.0.113.9",
            "note": "called us on Tuesday",
            "huge": "x".repeat(1000)
        }));
        assert_eq!(
            proof.to_json(),
            json!({"form_id": "newsletter-footer", "text_version": "3", "url": "https://shop.example/signup"})
        );
        assert_eq!(Proof::from_json(&json!("free text")), Proof::default());
    }

    #[test]
    fn suppression_changes_are_listed_in_order_from_a_position() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open_in(dir.path()).unwrap();
        let suppression = |n: u8, scope: SuppressionScope, reason: &str| Suppression {
            ident_key: key(n),
            scope,
            reason: reason.into(),
            at_ms: 1,
            source: "api:test".into(),
        };
        let mailchimp = SuppressionScope::Destination("mailchimp".into());
        ledger
            .suppress(&suppression(1, SuppressionScope::Global, "complaint"))
            .unwrap();
        ledger
            .suppress(&suppression(2, mailchimp.clone(), "hard_bounce"))
            .unwrap();
        // A new reason is a change too; removing nothing is not.
        ledger
            .suppress(&suppression(1, SuppressionScope::Global, "request"))
            .unwrap();
        assert!(
            !ledger
                .unsuppress(&key(3), &SuppressionScope::Global)
                .unwrap()
        );
        assert!(ledger.unsuppress(&key(2), &mailchimp).unwrap());
        let changes = ledger.suppression_changes_after(0, 10).unwrap();
        let listed: Vec<(IdentKey, SuppressionScope)> = changes
            .iter()
            .map(|(_, key, scope)| (key.clone(), scope.clone()))
            .collect();
        assert_eq!(
            listed,
            vec![
                (key(1), SuppressionScope::Global),
                (key(2), mailchimp.clone()),
                (key(1), SuppressionScope::Global),
                (key(2), mailchimp),
            ]
        );
        assert!(changes.windows(2).all(|pair| pair[0].0 < pair[1].0));
        let after_second = ledger.suppression_changes_after(changes[1].0, 1).unwrap();
        assert_eq!(after_second.len(), 1);
        assert_eq!(after_second[0].0, changes[2].0);
    }

    #[test]
    fn suppressions_are_global_or_per_destination() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open_in(dir.path()).unwrap();
        let suppression = |n: u8, scope: SuppressionScope| Suppression {
            ident_key: key(n),
            scope,
            reason: "hard_bounce".into(),
            at_ms: 1,
            source: "api:test".into(),
        };
        ledger
            .suppress(&suppression(
                1,
                SuppressionScope::Destination("mailchimp".into()),
            ))
            .unwrap();
        assert!(ledger.suppression_for(&[key(1)], None).unwrap().is_none());
        assert!(
            ledger
                .suppression_for(&[key(1)], Some("sendgrid"))
                .unwrap()
                .is_none()
        );
        let found = ledger
            .suppression_for(&[key(2), key(1)], Some("mailchimp"))
            .unwrap()
            .unwrap();
        assert_eq!(
            found.scope,
            SuppressionScope::Destination("mailchimp".into())
        );
        ledger
            .suppress(&suppression(2, SuppressionScope::Global))
            .unwrap();
        let found = ledger
            .suppression_for(&[key(1), key(2)], Some("mailchimp"))
            .unwrap()
            .unwrap();
        assert_eq!(found.scope, SuppressionScope::Global, "global comes first");
        assert_eq!(ledger.suppressions(0, 10).unwrap().len(), 2);
        assert!(
            ledger
                .unsuppress(&key(2), &SuppressionScope::Global)
                .unwrap()
        );
        assert!(
            !ledger
                .unsuppress(&key(2), &SuppressionScope::Global)
                .unwrap()
        );
        assert!(
            ledger
                .suppression_for(&[key(2)], Some("x"))
                .unwrap()
                .is_none()
        );
        let mut empty_reason = suppression(3, SuppressionScope::Global);
        empty_reason.reason = " ".into();
        assert!(matches!(
            ledger.suppress(&empty_reason),
            Err(ConsentError::Invalid {
                field: "reason",
                ..
            })
        ));
    }
}
