//! `<data_dir>/sync.db`: what each destination still has to do and what each ESP confirmed.
//!
//! * `cursors`: per destination, the change-feed position already turned into pending work;
//!   also `<destination>#consent` and `#suppressions` (the consent ledger's positions) and
//!   `#resync` (a resync asked for and not yet carried out).
//! * `pending`: per (destination, profile), one row while the profile's latest state is not
//!   confirmed: the change seq it was enqueued at, the time of its first unconfirmed change
//!   (for freshness), and the retry schedule. Reading the feed and enqueuing commit in one
//!   transaction with the cursor, so a crash never loses a change and the feed is the only
//!   source of work.
//! * `confirmed`: per (destination, profile), the ESP's id for the contact and a keyed digest
//!   of every field value the ESP confirmed — the desired-state diff compares against it, so
//!   an unchanged profile costs no API call. No clear personal data is stored: field values
//!   are HMAC-SHA-256 digests under `<data_dir>/sync.key`.
//! * `deletions`: deletions to carry out at a destination (erasure, mirror mode) by ESP id,
//!   with their status, for the erasure receipt.
//! * `dead_letters`: records that could not be delivered, with the error class and detail;
//!   `replay` moves them back to `pending`.
//!
//! All methods are blocking (rusqlite); the engine calls them from `spawn_blocking`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use trib_store::ProfileId;

/// A sync state error (SQLite or a corrupt row).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("sync state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("sync state row is corrupt: {0}")]
    Corrupt(String),
}

/// One profile's unfinished work at a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub profile: ProfileId,
    /// The change seq it was last enqueued at; a completion for an older seq keeps the row.
    pub seq: u64,
    /// When the first unconfirmed change happened (ms since the Unix epoch).
    pub first_change_ms: i64,
    pub attempts: u32,
    /// When it is due (ms).
    pub next_at_ms: i64,
    /// When it first failed (ms), for the bounded retry window.
    pub first_failed_ms: Option<i64>,
}

/// What an ESP confirmed about one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed {
    pub esp_id: String,
    /// ESP field → keyed digest of the confirmed value.
    pub digests: BTreeMap<String, String>,
    pub subscribed: bool,
    pub confirmed_at_ms: i64,
}

/// A deletion to carry out at a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub id: i64,
    pub profile: ProfileId,
    pub esp_id: String,
    /// `erasure`, or why mirror mode removes the record (`deleted`, `consent`,
    /// `email_changed`, `merged`).
    pub reason: String,
    /// For `merged`: the profile it was merged into. The deletion waits while that profile
    /// has a push pending here, and is superseded if its push confirms the same ESP record.
    pub survivor: Option<ProfileId>,
    /// For an erasure by email (`esp_id` empty): the email, sealed by the [`EmailSealer`].
    pub sealed_email: Option<Vec<u8>>,
    pub attempts: u32,
    pub first_failed_ms: Option<i64>,
}

/// Seals the emails of erased people whose records at a destination must be found by email
/// (see [`SyncState::queue_erasure`]) while their deletions wait, and opens them for the
/// engine. The server's implementation seals under a data key of the privacy key store.
pub trait EmailSealer: std::fmt::Debug + Send + Sync + 'static {
    fn seal(&self, email: &str) -> Result<Vec<u8>, String>;
    fn open(&self, sealed: &[u8]) -> Result<String, String>;
}

/// How one record of a batch ended, for [`SyncState::settle_outcomes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// The ESP confirmed it: its ESP id and digests are recorded and the pending row is
    /// retired unless a newer change arrived meanwhile; if the profile was erased after the
    /// push was prepared, the new ESP record is queued for deletion instead.
    Confirmed {
        profile: ProfileId,
        claimed_seq: u64,
        confirmed: Confirmed,
        /// When the push was prepared: an erasure recorded after it turns the confirmed
        /// record into a deletion; an older one (the person came back with consent) does not.
        prepared_at_ms: i64,
    },
    /// It is retried at `next_at_ms`.
    Retry {
        profile: ProfileId,
        attempts: u32,
        next_at_ms: i64,
        first_failed_ms: i64,
    },
    /// It goes to the dead letters.
    Dead {
        profile: ProfileId,
        class: String,
        detail: String,
        attempts: u32,
        first_failed_ms: i64,
    },
}

/// A dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub destination: String,
    pub profile_id: String,
    /// `upsert` or `delete`.
    pub operation: String,
    pub class: String,
    pub detail: String,
    pub attempts: u32,
    pub first_failed_ms: i64,
    pub dead_at_ms: i64,
}

/// An erasure's deletion at one destination, for its receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErasureDeletion {
    pub destination: String,
    /// `queued`, `deleted` or `dead_lettered`.
    pub status: String,
    pub detail: Option<String>,
    pub updated_at_ms: i64,
}

/// Counts per destination, for the API and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DestinationCounts {
    pub pending: u64,
    pub confirmed: u64,
    pub deletions_pending: u64,
    pub dead_letters: u64,
}

/// The sync state database.
#[derive(Debug)]
pub struct SyncState {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
PRAGMA secure_delete = FAST;
CREATE TABLE IF NOT EXISTS cursors (
    destination TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pending (
    destination TEXT NOT NULL,
    profile BLOB NOT NULL,
    seq INTEGER NOT NULL,
    first_change_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at_ms INTEGER NOT NULL,
    first_failed_ms INTEGER,
    PRIMARY KEY (destination, profile)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pending_due ON pending (destination, next_at_ms);
CREATE TABLE IF NOT EXISTS confirmed (
    destination TEXT NOT NULL,
    profile BLOB NOT NULL,
    esp_id TEXT NOT NULL,
    digests TEXT NOT NULL,
    subscribed INTEGER NOT NULL,
    confirmed_at_ms INTEGER NOT NULL,
    PRIMARY KEY (destination, profile)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deletions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    profile BLOB NOT NULL,
    esp_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    erasure_id TEXT,
    status TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at_ms INTEGER NOT NULL,
    first_failed_ms INTEGER,
    detail TEXT,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deletions_due ON deletions (destination, status, next_at_ms);
CREATE INDEX IF NOT EXISTS deletions_erasure ON deletions (erasure_id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    profile BLOB NOT NULL,
    operation TEXT NOT NULL,
    esp_id TEXT,
    class TEXT NOT NULL,
    detail TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    first_failed_ms INTEGER NOT NULL,
    dead_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_destination ON dead_letters (destination);
";

fn profile_of(bytes: Vec<u8>) -> Result<ProfileId, StateError> {
    ProfileId::from_slice(&bytes).map_err(|e| StateError::Corrupt(e.to_string()))
}

impl SyncState {
    /// Opens (creating) `<data_dir>/sync.db`.
    pub fn open(data_dir: &Path) -> Result<Self, StateError> {
        Self::from_connection(Connection::open(data_dir.join("sync.db"))?)
    }

    /// An in-memory state, for tests.
    pub fn in_memory() -> Result<Self, StateError> {
        Self::from_connection(Connection::open_in_memory()?)
    }

    fn from_connection(conn: Connection) -> Result<Self, StateError> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        // Added after the first release: the survivor of a merge whose merged-away record a
        // mirror-mode deletion removes; the sealed email an erasure finds a record by.
        for column in ["survivor", "sealed_email"] {
            let present: bool = conn.query_row(
                "SELECT COUNT(*) > 0 FROM pragma_table_info('deletions') WHERE name = ?1",
                [column],
                |row| row.get(0),
            )?;
            if !present {
                conn.execute_batch(&format!("ALTER TABLE deletions ADD COLUMN {column} BLOB"))?;
            }
        }
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The feed position already enqueued for `destination` (0 when new).
    pub fn cursor(&self, destination: &str) -> Result<u64, StateError> {
        let seq: Option<i64> = self
            .conn()
            .query_row(
                "SELECT seq FROM cursors WHERE destination = ?1",
                [destination],
                |row| row.get(0),
            )
            .optional()?;
        Ok(seq.unwrap_or(0) as u64)
    }

    /// Asks for a full resync of `destination`, for when the ESP may have drifted from what
    /// it last confirmed (records edited or deleted there, an audience restored from a
    /// backup): records a `<destination>#resync` marker that the destination's worker takes
    /// between rounds (see [`SyncState::forget_confirmed_fields`]). Returns how many records
    /// the destination has confirmed, i.e. will check again at least.
    pub fn request_resync(&self, destination: &str, now_ms: i64) -> Result<usize, StateError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO cursors (destination, seq) VALUES (?1 || '#resync', ?2)
             ON CONFLICT (destination) DO UPDATE SET seq = max(seq + 1, excluded.seq)",
            params![destination, now_ms],
        )?;
        let confirmed: i64 = conn.query_row(
            "SELECT count(*) FROM confirmed WHERE destination = ?1",
            [destination],
            |row| row.get(0),
        )?;
        Ok(confirmed as usize)
    }

    /// The pending resync request of `destination` (its marker), if any.
    pub fn resync_requested(&self, destination: &str) -> Result<Option<i64>, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT seq FROM cursors WHERE destination = ?1 || '#resync'",
                [destination],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Takes the resync request `asked` (from [`SyncState::resync_requested`]); a newer
    /// request made meanwhile stays.
    pub fn resync_done(&self, destination: &str, asked: i64) -> Result<(), StateError> {
        self.conn().execute(
            "DELETE FROM cursors WHERE destination = ?1 || '#resync' AND seq = ?2",
            params![destination, asked],
        )?;
        Ok(())
    }

    /// Makes every record `destination` confirmed forget what it confirmed, keeping the ESP
    /// id, the subscription and the email's digest (the same contact): each field it had, and
    /// each of `fields` (the destination's mapped fields), gets a digest that no value has,
    /// so the next push sends every mapped field and clears those the profile lacks. Returns
    /// how many records were reset.
    pub fn forget_confirmed_fields(
        &self,
        destination: &str,
        fields: &[String],
    ) -> Result<usize, StateError> {
        let seed: BTreeMap<&str, &str> = fields
            .iter()
            .map(|field| (field.as_str(), ""))
            .filter(|(field, _)| *field != crate::map::EMAIL_FIELD)
            .collect();
        let seed = serde_json::to_string(&seed)
            .map_err(|error| StateError::Corrupt(format!("field names: {error}")))?;
        Ok(self.conn().execute(
            "UPDATE confirmed SET digests = json_patch(?2, (
                 SELECT json_group_object(key, CASE WHEN key = '@email' THEN value ELSE '' END)
                 FROM json_each(confirmed.digests)))
             WHERE destination = ?1",
            params![destination, seed],
        )?)
    }

    /// Enqueues changed profiles `(id, seq, changed_at_ms)` and, when given, moves the cursor,
    /// in one transaction. A profile already pending keeps its first change time and retry
    /// schedule but takes the newer seq.
    pub fn enqueue(
        &self,
        destination: &str,
        changes: &[(ProfileId, u64, i64)],
        cursor: Option<u64>,
        now_ms: i64,
    ) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO pending (destination, profile, seq, first_change_ms, next_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (destination, profile) DO UPDATE SET seq = MAX(seq, excluded.seq)",
            )?;
            for (profile, seq, changed_ms) in changes {
                upsert.execute(params![
                    destination,
                    &profile.as_bytes()[..],
                    *seq as i64,
                    changed_ms,
                    now_ms
                ])?;
            }
            if let Some(cursor) = cursor {
                tx.execute(
                    "INSERT INTO cursors (destination, seq) VALUES (?1, ?2)
                     ON CONFLICT (destination) DO UPDATE SET seq = excluded.seq",
                    params![destination, cursor as i64],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Pending work due at `now_ms`, oldest change first.
    pub fn due(
        &self,
        destination: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<Pending>, StateError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(
            "SELECT profile, seq, first_change_ms, attempts, next_at_ms, first_failed_ms
             FROM pending WHERE destination = ?1 AND next_at_ms <= ?2
             ORDER BY first_change_ms, profile LIMIT ?3",
        )?;
        let rows = statement.query_map(params![destination, now_ms, limit as i64], |row| {
            Ok((
                row.get::<_, Vec<u8>>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, Option<i64>>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (profile, seq, first_change_ms, attempts, next_at_ms, first_failed_ms) = row?;
            out.push(Pending {
                profile: profile_of(profile)?,
                seq: seq as u64,
                first_change_ms,
                attempts: attempts as u32,
                next_at_ms,
                first_failed_ms,
            });
        }
        Ok(out)
    }

    /// When the next pending row or deletion of `destination` is due, if any.
    pub fn next_due_ms(&self, destination: &str) -> Result<Option<i64>, StateError> {
        let conn = self.conn();
        let pending: Option<i64> = conn.query_row(
            "SELECT MIN(next_at_ms) FROM pending WHERE destination = ?1",
            [destination],
            |row| row.get(0),
        )?;
        let deletion: Option<i64> = conn.query_row(
            "SELECT MIN(next_at_ms) FROM deletions WHERE destination = ?1 AND status = 'queued'",
            [destination],
            |row| row.get(0),
        )?;
        Ok(match (pending, deletion) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// What the destination confirmed for these profiles.
    pub fn confirmed(
        &self,
        destination: &str,
        profiles: &[ProfileId],
    ) -> Result<HashMap<ProfileId, Confirmed>, StateError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(
            "SELECT esp_id, digests, subscribed, confirmed_at_ms FROM confirmed
             WHERE destination = ?1 AND profile = ?2",
        )?;
        let mut out = HashMap::new();
        for profile in profiles {
            let row = statement
                .query_row(params![destination, &profile.as_bytes()[..]], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, bool>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                })
                .optional()?;
            if let Some((esp_id, digests, subscribed, confirmed_at_ms)) = row {
                let digests = serde_json::from_str(&digests)
                    .map_err(|e| StateError::Corrupt(format!("digests: {e}")))?;
                out.insert(
                    *profile,
                    Confirmed {
                        esp_id,
                        digests,
                        subscribed,
                        confirmed_at_ms,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Records a batch's outcomes in one transaction (one commit per batch, not per record).
    pub fn settle_outcomes(
        &self,
        destination: &str,
        settlements: Vec<Settlement>,
        now_ms: i64,
    ) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for settlement in settlements {
            match settlement {
                Settlement::Confirmed {
                    profile,
                    claimed_seq,
                    confirmed,
                    prepared_at_ms,
                } => Self::complete_in(
                    &tx,
                    destination,
                    profile,
                    claimed_seq,
                    &confirmed,
                    prepared_at_ms,
                    now_ms,
                )?,
                Settlement::Retry {
                    profile,
                    attempts,
                    next_at_ms,
                    first_failed_ms,
                } => Self::reschedule_in(
                    &tx,
                    destination,
                    profile,
                    attempts,
                    next_at_ms,
                    first_failed_ms,
                )?,
                Settlement::Dead {
                    profile,
                    class,
                    detail,
                    attempts,
                    first_failed_ms,
                } => Self::dead_letter_in(
                    &tx,
                    destination,
                    profile,
                    &class,
                    &detail,
                    attempts,
                    first_failed_ms,
                    now_ms,
                )?,
            }
        }
        tx.commit()?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn complete_in(
        tx: &Connection,
        destination: &str,
        profile: ProfileId,
        claimed_seq: u64,
        confirmed: &Confirmed,
        prepared_at_ms: i64,
        now_ms: i64,
    ) -> Result<(), StateError> {
        let key = &profile.as_bytes()[..];
        let erased: Option<String> = tx
            .query_row(
                "SELECT erasure_id FROM deletions
                 WHERE destination = ?1 AND profile = ?2 AND reason = 'erasure'
                     AND created_at_ms >= ?3
                 ORDER BY id DESC LIMIT 1",
                params![destination, key, prepared_at_ms],
                |row| row.get(0),
            )
            .optional()?
            .flatten();
        if let Some(erasure_id) = erased {
            tx.execute(
                "INSERT INTO deletions (destination, profile, esp_id, reason, erasure_id, status,
                     next_at_ms, updated_at_ms, created_at_ms)
                 VALUES (?1, ?2, ?3, 'erasure', ?4, 'queued', ?5, ?5, ?5)",
                params![destination, key, confirmed.esp_id, erasure_id, now_ms],
            )?;
            tx.execute(
                "DELETE FROM pending WHERE destination = ?1 AND profile = ?2",
                params![destination, key],
            )?;
        } else {
            let digests = serde_json::to_string(&confirmed.digests)
                .map_err(|e| StateError::Corrupt(e.to_string()))?;
            tx.execute(
                "INSERT INTO confirmed (destination, profile, esp_id, digests, subscribed,
                     confirmed_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (destination, profile) DO UPDATE SET esp_id = excluded.esp_id,
                     digests = excluded.digests, subscribed = excluded.subscribed,
                     confirmed_at_ms = excluded.confirmed_at_ms",
                params![
                    destination,
                    key,
                    confirmed.esp_id,
                    digests,
                    confirmed.subscribed,
                    confirmed.confirmed_at_ms
                ],
            )?;
            Self::retire(tx, destination, profile, claimed_seq, now_ms)?;
        }
        Ok(())
    }

    /// Retires a pending row that needs no call (unchanged, not permitted, gone), unless a
    /// newer change arrived meanwhile.
    pub fn settle(
        &self,
        destination: &str,
        profile: ProfileId,
        claimed_seq: u64,
        now_ms: i64,
    ) -> Result<(), StateError> {
        let conn = self.conn();
        Self::retire(&conn, destination, profile, claimed_seq, now_ms)
    }

    fn retire(
        conn: &Connection,
        destination: &str,
        profile: ProfileId,
        claimed_seq: u64,
        now_ms: i64,
    ) -> Result<(), StateError> {
        let key = &profile.as_bytes()[..];
        let removed = conn.execute(
            "DELETE FROM pending WHERE destination = ?1 AND profile = ?2 AND seq <= ?3",
            params![destination, key, claimed_seq as i64],
        )?;
        if removed == 0 {
            // A newer change is pending: send it now, as a fresh change.
            conn.execute(
                "UPDATE pending SET attempts = 0, first_failed_ms = NULL, next_at_ms = ?3,
                     first_change_ms = MIN(first_change_ms, ?3)
                 WHERE destination = ?1 AND profile = ?2",
                params![destination, key, now_ms],
            )?;
        }
        Ok(())
    }

    /// Schedules a retry.
    fn reschedule_in(
        conn: &Connection,
        destination: &str,
        profile: ProfileId,
        attempts: u32,
        next_at_ms: i64,
        first_failed_ms: i64,
    ) -> Result<(), StateError> {
        conn.execute(
            "UPDATE pending SET attempts = ?3, next_at_ms = ?4,
                 first_failed_ms = COALESCE(first_failed_ms, ?5)
             WHERE destination = ?1 AND profile = ?2",
            params![
                destination,
                &profile.as_bytes()[..],
                attempts,
                next_at_ms,
                first_failed_ms
            ],
        )?;
        Ok(())
    }

    /// Moves a pending upsert to the dead letters (one letter per record).
    #[allow(clippy::too_many_arguments)]
    fn dead_letter_in(
        tx: &Connection,
        destination: &str,
        profile: ProfileId,
        class: &str,
        detail: &str,
        attempts: u32,
        first_failed_ms: i64,
        now_ms: i64,
    ) -> Result<(), StateError> {
        let key = &profile.as_bytes()[..];
        // One dead letter per record: a reconcile that meets the same refusal again replaces
        // the earlier letter rather than adding another.
        tx.execute(
            "DELETE FROM dead_letters WHERE destination = ?1 AND profile = ?2
                 AND operation = 'upsert'",
            params![destination, key],
        )?;
        tx.execute(
            "INSERT INTO dead_letters (destination, profile, operation, class, detail, attempts,
                 first_failed_ms, dead_at_ms)
             VALUES (?1, ?2, 'upsert', ?3, ?4, ?5, ?6, ?7)",
            params![
                destination,
                key,
                class,
                detail,
                attempts,
                first_failed_ms,
                now_ms
            ],
        )?;
        tx.execute(
            "DELETE FROM pending WHERE destination = ?1 AND profile = ?2",
            params![destination, key],
        )?;
        Ok(())
    }

    /// The dead letters of a destination (all when `None`), oldest first.
    pub fn dead_letters(&self, destination: Option<&str>) -> Result<Vec<DeadLetter>, StateError> {
        self.dead_letters_page(destination, 0, usize::MAX)
    }

    /// One page of dead letters: those with an id above `after_id`, oldest first, at most
    /// `limit` (continue with the last one's id).
    pub fn dead_letters_page(
        &self,
        destination: Option<&str>,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StateError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(
            "SELECT id, destination, profile, operation, class, detail, attempts,
                 first_failed_ms, dead_at_ms
             FROM dead_letters WHERE (?1 IS NULL OR destination = ?1) AND id > ?2
             ORDER BY id LIMIT ?3",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = statement.query_map(params![destination, after_id, limit], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Vec<u8>>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, String>(5)?,
                row.get::<_, i64>(6)?,
                row.get::<_, i64>(7)?,
                row.get::<_, i64>(8)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, destination, profile, operation, class, detail, attempts, first, dead) = row?;
            out.push(DeadLetter {
                id,
                destination,
                profile_id: profile_of(profile)?.to_string(),
                operation,
                class,
                detail,
                attempts: attempts as u32,
                first_failed_ms: first,
                dead_at_ms: dead,
            });
        }
        Ok(out)
    }

    /// Moves dead letters of `destination` (all, or those with these ids) back to work, due
    /// now. Returns how many were replayed.
    pub fn replay(
        &self,
        destination: &str,
        ids: Option<&[i64]>,
        now_ms: i64,
    ) -> Result<usize, StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let rows: Vec<(i64, Vec<u8>, String, Option<String>)> = {
            let mut statement = tx.prepare(
                "SELECT id, profile, operation, esp_id FROM dead_letters WHERE destination = ?1",
            )?;
            statement
                .query_map([destination], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })?
                .collect::<Result<_, _>>()?
        };
        let mut replayed = 0;
        for (id, profile, operation, esp_id) in rows {
            if ids.is_some_and(|ids| !ids.contains(&id)) {
                continue;
            }
            if operation == "delete" {
                tx.execute(
                    "UPDATE deletions SET status = 'queued', attempts = 0, first_failed_ms = NULL,
                         next_at_ms = ?3, updated_at_ms = ?3
                     WHERE destination = ?1 AND profile = ?2 AND esp_id = ?4
                         AND status = 'dead_lettered'",
                    params![destination, profile, now_ms, esp_id],
                )?;
            } else {
                tx.execute(
                    "INSERT INTO pending (destination, profile, seq, first_change_ms, next_at_ms)
                     VALUES (?1, ?2, 0, ?3, ?3)
                     ON CONFLICT (destination, profile) DO UPDATE SET attempts = 0,
                         first_failed_ms = NULL, next_at_ms = ?3",
                    params![destination, profile, now_ms],
                )?;
            }
            tx.execute("DELETE FROM dead_letters WHERE id = ?1", [id])?;
            replayed += 1;
        }
        tx.commit()?;
        Ok(replayed)
    }

    /// Queues the deletion of these profiles' records at every destination that confirmed
    /// one (an erasure), and forgets what was confirmed and pending. Returns, per destination
    /// given, how many deletions were queued (0: it held nothing).
    ///
    /// Where one of the profiles had a push pending (sent with no known outcome, or about to
    /// be), the ESP may hold the person under an id Tributary never saw: a deletion by email
    /// is queued too, one per entry of `sealed_emails` (the person's emails, sealed by the
    /// [`EmailSealer`]); the sealed email is dropped once the deletion is done.
    pub fn queue_erasure(
        &self,
        erasure_id: &str,
        destinations: &[String],
        profiles: &[ProfileId],
        sealed_emails: &[Vec<u8>],
        now_ms: i64,
    ) -> Result<BTreeMap<String, usize>, StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut queued: BTreeMap<String, usize> =
            destinations.iter().map(|d| (d.clone(), 0)).collect();
        for destination in destinations {
            let mut was_pending = false;
            for profile in profiles {
                let key = &profile.as_bytes()[..];
                let esp_id = confirmed_esp_id_in(&tx, destination, key)?;
                // A marker row (status `none_held`) even when nothing was confirmed, so that
                // an upsert in flight during the erasure is deleted when it completes.
                let (esp_id, status) = match esp_id {
                    Some(esp_id) => (esp_id, "queued"),
                    None => (String::new(), "none_held"),
                };
                if status == "queued" {
                    *queued.entry(destination.clone()).or_default() += 1;
                }
                tx.execute(
                    "INSERT INTO deletions (destination, profile, esp_id, reason, erasure_id,
                         status, next_at_ms, updated_at_ms, created_at_ms)
                     VALUES (?1, ?2, ?3, 'erasure', ?4, ?5, ?6, ?6, ?6)",
                    params![destination, key, esp_id, erasure_id, status, now_ms],
                )?;
                was_pending |= tx.execute(
                    "DELETE FROM pending WHERE destination = ?1 AND profile = ?2",
                    params![destination, key],
                )? > 0;
                tx.execute(
                    "DELETE FROM confirmed WHERE destination = ?1 AND profile = ?2",
                    params![destination, key],
                )?;
            }
            // Once per erasure and destination (a later call names profile ids found since).
            // Deletions by email are this erasure's only rows with no ESP id that are not
            // `none_held` markers, whether or not they are done (done ones lose their email).
            let Some(first) = profiles.first().filter(|_| was_pending) else {
                continue;
            };
            let by_email_queued: bool = tx.query_row(
                "SELECT COUNT(*) > 0 FROM deletions
                 WHERE erasure_id = ?1 AND destination = ?2 AND esp_id = ''
                     AND status != 'none_held'",
                params![erasure_id, destination],
                |row| row.get(0),
            )?;
            if by_email_queued {
                continue;
            }
            for sealed in sealed_emails {
                tx.execute(
                    "INSERT INTO deletions (destination, profile, esp_id, reason, erasure_id,
                         status, sealed_email, next_at_ms, updated_at_ms, created_at_ms)
                     VALUES (?1, ?2, '', 'erasure', ?3, 'queued', ?4, ?5, ?5, ?5)",
                    params![
                        destination,
                        &first.as_bytes()[..],
                        erasure_id,
                        sealed,
                        now_ms
                    ],
                )?;
                *queued.entry(destination.clone()).or_default() += 1;
            }
        }
        tx.commit()?;
        Ok(queued)
    }

    /// Queues the deletion of one confirmed record (mirror mode) and forgets it.
    pub fn queue_deletion(
        &self,
        destination: &str,
        profile: ProfileId,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool, StateError> {
        self.queue_mirror_deletion(destination, profile, reason, None, now_ms)
    }

    /// Queues the deletion of the confirmed record of `profile`, merged into `survivor`
    /// (mirror mode), and forgets it. It is carried out once `survivor` has no push pending
    /// here, unless `survivor`'s confirmed record is the same ESP record by then.
    pub fn queue_merge_deletion(
        &self,
        destination: &str,
        profile: ProfileId,
        survivor: ProfileId,
        now_ms: i64,
    ) -> Result<bool, StateError> {
        self.queue_mirror_deletion(destination, profile, "merged", Some(survivor), now_ms)
    }

    fn queue_mirror_deletion(
        &self,
        destination: &str,
        profile: ProfileId,
        reason: &str,
        survivor: Option<ProfileId>,
        now_ms: i64,
    ) -> Result<bool, StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let key = &profile.as_bytes()[..];
        let Some(esp_id) = confirmed_esp_id_in(&tx, destination, key)? else {
            return Ok(false);
        };
        tx.execute(
            "INSERT INTO deletions (destination, profile, esp_id, reason, survivor, status,
                 next_at_ms, updated_at_ms, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?6, ?6)",
            params![
                destination,
                key,
                esp_id,
                reason,
                survivor.map(|s| s.as_bytes().to_vec()),
                now_ms
            ],
        )?;
        tx.execute(
            "DELETE FROM confirmed WHERE destination = ?1 AND profile = ?2",
            params![destination, key],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Whether `profile` has a push pending at `destination`.
    pub fn is_pending(&self, destination: &str, profile: ProfileId) -> Result<bool, StateError> {
        let pending: Option<i64> = self
            .conn()
            .query_row(
                "SELECT 1 FROM pending WHERE destination = ?1 AND profile = ?2",
                params![destination, &profile.as_bytes()[..]],
                |row| row.get(0),
            )
            .optional()?;
        Ok(pending.is_some())
    }

    /// Moves a queued deletion's due time to `next_at_ms` without counting an attempt.
    pub fn postpone_deletion(&self, id: i64, next_at_ms: i64) -> Result<(), StateError> {
        self.conn().execute(
            "UPDATE deletions SET next_at_ms = ?2 WHERE id = ?1",
            params![id, next_at_ms],
        )?;
        Ok(())
    }

    /// Whether another profile's confirmed record at `destination` has this ESP id (then a
    /// deletion would remove a live contact).
    pub fn esp_id_shared(
        &self,
        destination: &str,
        profile: ProfileId,
        esp_id: &str,
    ) -> Result<bool, StateError> {
        let shared: Option<i64> = self
            .conn()
            .query_row(
                "SELECT 1 FROM confirmed WHERE destination = ?1 AND esp_id = ?2 AND profile != ?3
                 LIMIT 1",
                params![destination, esp_id, &profile.as_bytes()[..]],
                |row| row.get(0),
            )
            .optional()?;
        Ok(shared.is_some())
    }

    /// The esp id confirmed for a profile, if any.
    pub fn confirmed_esp_id(
        &self,
        destination: &str,
        profile: ProfileId,
    ) -> Result<Option<String>, StateError> {
        Ok(self
            .confirmed(destination, &[profile])?
            .remove(&profile)
            .map(|c| c.esp_id))
    }

    /// Deletions due at `now_ms`.
    pub fn due_deletions(
        &self,
        destination: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<Deletion>, StateError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(
            "SELECT id, profile, esp_id, attempts, first_failed_ms, reason, survivor,
                 sealed_email
             FROM deletions WHERE destination = ?1 AND status = 'queued' AND next_at_ms <= ?2
             ORDER BY id LIMIT ?3",
        )?;
        let rows = statement.query_map(params![destination, now_ms, limit as i64], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, Vec<u8>>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, Option<i64>>(4)?,
                row.get::<_, String>(5)?,
                row.get::<_, Option<Vec<u8>>>(6)?,
                row.get::<_, Option<Vec<u8>>>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, profile, esp_id, attempts, first_failed_ms, reason, survivor, sealed_email) =
                row?;
            out.push(Deletion {
                id,
                profile: profile_of(profile)?,
                esp_id,
                reason,
                survivor: survivor.map(profile_of).transpose()?,
                sealed_email,
                attempts: attempts as u32,
                first_failed_ms,
            });
        }
        Ok(out)
    }

    /// Records a deletion's end: `deleted`, or `dead_lettered` (also written to the dead
    /// letters with its class and detail).
    pub fn finish_deletion(
        &self,
        destination: &str,
        deletion: &Deletion,
        failure: Option<(&str, &str)>,
        now_ms: i64,
    ) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        match failure {
            None => {
                tx.execute(
                    "UPDATE deletions SET status = 'deleted', detail = NULL, sealed_email = NULL,
                         updated_at_ms = ?2
                     WHERE id = ?1",
                    params![deletion.id, now_ms],
                )?;
            }
            Some((class, detail)) => {
                tx.execute(
                    "UPDATE deletions SET status = 'dead_lettered', detail = ?2,
                         updated_at_ms = ?3 WHERE id = ?1",
                    params![deletion.id, format!("{class}: {detail}"), now_ms],
                )?;
                tx.execute(
                    "INSERT INTO dead_letters (destination, profile, operation, esp_id, class,
                         detail, attempts, first_failed_ms, dead_at_ms)
                     VALUES (?1, ?2, 'delete', ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        destination,
                        &deletion.profile.as_bytes()[..],
                        deletion.esp_id,
                        class,
                        detail,
                        deletion.attempts,
                        deletion.first_failed_ms.unwrap_or(now_ms),
                        now_ms
                    ],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A mirror-mode deletion whose ESP record another profile has confirmed since it was
    /// queued (the email moved to that profile): it is not carried out.
    pub fn supersede_deletion(&self, deletion: &Deletion, now_ms: i64) -> Result<(), StateError> {
        self.conn().execute(
            "UPDATE deletions SET status = 'superseded', updated_at_ms = ?2 WHERE id = ?1",
            params![deletion.id, now_ms],
        )?;
        Ok(())
    }

    /// Forgets what other profiles confirmed under `esp_id` (an erasure deleted that ESP
    /// record), so that the next change or reconcile sends them again in full.
    pub fn forget_esp_id(
        &self,
        destination: &str,
        esp_id: &str,
        except: ProfileId,
    ) -> Result<(), StateError> {
        self.conn().execute(
            "DELETE FROM confirmed WHERE destination = ?1 AND esp_id = ?2 AND profile != ?3",
            params![destination, esp_id, &except.as_bytes()[..]],
        )?;
        Ok(())
    }

    /// Schedules a deletion's retry.
    pub fn reschedule_deletion(
        &self,
        id: i64,
        attempts: u32,
        next_at_ms: i64,
        first_failed_ms: i64,
    ) -> Result<(), StateError> {
        self.conn().execute(
            "UPDATE deletions SET attempts = ?2, next_at_ms = ?3,
                 first_failed_ms = COALESCE(first_failed_ms, ?4)
             WHERE id = ?1",
            params![id, attempts, next_at_ms, first_failed_ms],
        )?;
        Ok(())
    }

    /// The deletions an erasure queued, per destination (the worst status of its records:
    /// `dead_lettered` over `queued` over `deleted` over `none_held`).
    pub fn erasure_status(&self, erasure_id: &str) -> Result<Vec<ErasureDeletion>, StateError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(
            "SELECT destination, status, detail, updated_at_ms FROM deletions
             WHERE erasure_id = ?1 ORDER BY destination, id",
        )?;
        let rows = statement.query_map([erasure_id], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })?;
        let rank = |status: &str| match status {
            "dead_lettered" => 3,
            "queued" => 2,
            "deleted" => 1,
            _ => 0,
        };
        let mut out: Vec<ErasureDeletion> = Vec::new();
        for row in rows {
            let (destination, status, detail, updated_at_ms) = row?;
            match out.last_mut() {
                Some(last) if last.destination == destination => {
                    if rank(&status) > rank(&last.status) {
                        last.status = status;
                        last.detail = detail;
                    }
                    last.updated_at_ms = last.updated_at_ms.max(updated_at_ms);
                }
                _ => out.push(ErasureDeletion {
                    destination,
                    status,
                    detail,
                    updated_at_ms,
                }),
            }
        }
        Ok(out)
    }

    /// Counts for one destination.
    pub fn counts(&self, destination: &str) -> Result<DestinationCounts, StateError> {
        let conn = self.conn();
        let count = |sql: &str| -> Result<u64, StateError> {
            Ok(conn.query_row(sql, [destination], |row| row.get::<_, i64>(0))? as u64)
        };
        Ok(DestinationCounts {
            pending: count("SELECT COUNT(*) FROM pending WHERE destination = ?1")?,
            confirmed: count("SELECT COUNT(*) FROM confirmed WHERE destination = ?1")?,
            deletions_pending: count(
                "SELECT COUNT(*) FROM deletions WHERE destination = ?1 AND status = 'queued'",
            )?,
            dead_letters: count("SELECT COUNT(*) FROM dead_letters WHERE destination = ?1")?,
        })
    }
}

/// The ESP id `destination` confirmed for the profile with these id bytes, read inside a
/// caller's transaction.
fn confirmed_esp_id_in(
    conn: &Connection,
    destination: &str,
    profile: &[u8],
) -> Result<Option<String>, StateError> {
    Ok(conn
        .query_row(
            "SELECT esp_id FROM confirmed WHERE destination = ?1 AND profile = ?2",
            params![destination, profile],
            |row| row.get(0),
        )
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_erasure_finds_by_email_only_where_a_push_was_pending_and_then_drops_the_email() {
        let state = SyncState::in_memory().expect("state");
        let ann = ProfileId::from_bytes([1; 16]);
        let merged = ProfileId::from_bytes([2; 16]);
        state
            .enqueue("a", &[(ann, 1, 0), (merged, 2, 0)], None, 0)
            .expect("enqueue");
        let sealed = vec![b"sealed-1".to_vec(), b"sealed-2".to_vec()];
        let destinations = ["a".to_owned(), "b".to_owned()];
        let queued = state
            .queue_erasure("er_1", &destinations, &[ann], &sealed, 0)
            .expect("erasure");
        assert_eq!(
            queued,
            BTreeMap::from([("a".to_owned(), 2), ("b".to_owned(), 0)])
        );
        // The same erasure again (profile ids found later) queues no second set.
        let again = state
            .queue_erasure("er_1", &destinations, &[merged], &sealed, 0)
            .expect("erasure");
        assert_eq!(
            again,
            BTreeMap::from([("a".to_owned(), 0), ("b".to_owned(), 0)])
        );
        let due = state.due_deletions("a", 1, 10).expect("due");
        assert_eq!(due.len(), 2);
        assert!(due.iter().all(|deletion| deletion.esp_id.is_empty()));
        assert_eq!(
            due.iter()
                .filter_map(|deletion| deletion.sealed_email.clone())
                .collect::<Vec<_>>(),
            sealed
        );
        assert!(state.due_deletions("b", 1, 10).expect("due").is_empty());
        for deletion in &due {
            state
                .finish_deletion("a", deletion, None, 2)
                .expect("finish");
        }
        let left: i64 = state
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM deletions WHERE sealed_email IS NOT NULL",
                [],
                |row| row.get(0),
            )
            .expect("count");
        assert_eq!(left, 0, "a done deletion keeps no sealed email");
        // Nor once those are done (they no longer hold an email).
        state
            .enqueue("a", &[(merged, 3, 0)], None, 0)
            .expect("enqueue");
        let after_done = state
            .queue_erasure("er_1", &destinations, &[merged], &sealed, 0)
            .expect("erasure");
        assert_eq!(after_done["a"], 0);
    }

    #[test]
    fn a_state_written_before_merge_deletions_opens_and_keeps_its_deletions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sync.db");
        let profile = ProfileId::from_bytes([3; 16]);
        {
            // The schema as released, without `deletions.survivor`, holding one deletion.
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(SCHEMA).expect("schema");
            conn.execute(
                "INSERT INTO deletions (destination, profile, esp_id, reason, status,
                     next_at_ms, updated_at_ms)
                 VALUES ('esp', ?1, 'esp-1', 'deleted', 'queued', 0, 0)",
                [&profile.as_bytes()[..]],
            )
            .expect("insert");
        }
        for _ in 0..2 {
            let state = SyncState::open(dir.path()).expect("reopen");
            let due = state.due_deletions("esp", 1, 10).expect("due");
            assert_eq!(due.len(), 1);
            assert_eq!(due[0].profile, profile);
            assert_eq!(due[0].survivor, None);
        }
    }
}
