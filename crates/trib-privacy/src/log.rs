//! [`SealedLog`]: an [`EventLog`] decorator that stores records pseudonymized and sealed.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use trib_log::{AppendOutcome, BlankReport, Compactable, EventLog, LogError, Record, StoredRecord};

use crate::PrivacyError;
use crate::blind::{BlindIndex, Subject};
use crate::keystore::{Dek, KeyStore, run_blocking};
use crate::seal::{SEAL_OVERHEAD, open_with, seal_with, sealed_key_id};

/// Wraps an event log so that it never stores a clear key or payload.
///
/// On `append`, each record's key (the `userId` or `anonymousId`) is replaced by its subject's
/// hex blind index, so partitioning stays stable per identifier while the identifier never
/// reaches disk, and its payload is sealed under the subject's data key with the log's name in
/// the AAD. On `read`, payloads are opened and the key returned is the subject's hex blind index,
/// not the original identifier.
///
/// **Erased records read back with an empty payload.** After the subject's key is shredded,
/// its records are still returned (offsets stay consecutive) but with `payload` empty; real
/// payloads are never empty, so callers treat an empty payload as "erased" and skip it.
///
/// A record whose subject has a tombstone (an erased person) is not stored: its outcome is
/// [`AppendOutcome::Erased`], and the other records of the call are stored as usual. When a
/// revival check is set ([`SealedLog::with_revival`]) and says the record's payload grants
/// new consent, the tombstone is cleared and the record stored under a new data key.
pub struct SealedLog<L> {
    inner: L,
    keystore: KeyStore,
    blind: Arc<BlindIndex>,
    name: String,
    revives: Option<fn(&[u8]) -> bool>,
}

impl<L> std::fmt::Debug for SealedLog<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedLog")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<L: EventLog> SealedLog<L> {
    /// Wraps `inner`; `log_name` (e.g. "events", "quarantine") is bound into every payload's
    /// AAD, so a payload copied into another log does not open.
    pub fn new(
        inner: L,
        keystore: KeyStore,
        blind: Arc<BlindIndex>,
        log_name: &str,
    ) -> SealedLog<L> {
        SealedLog {
            inner,
            keystore,
            blind,
            name: log_name.to_owned(),
            revives: None,
        }
    }

    /// Sets the check that tells whether a record of an erased subject grants new consent
    /// (which lifts the tombstone) from its clear payload.
    pub fn with_revival(mut self, revives: fn(&[u8]) -> bool) -> SealedLog<L> {
        self.revives = Some(revives);
        self
    }

    /// The wrapped log, which holds the sealed records.
    pub fn inner(&self) -> &L {
        &self.inner
    }

    /// The key store the log seals with.
    pub fn keystore(&self) -> &KeyStore {
        &self.keystore
    }

    /// Returns the key the wrapped log stores for a record with key `log_key`.
    pub fn stored_key(&self, log_key: &str) -> String {
        self.blind.subject_of_log_key(log_key).to_hex()
    }

    fn error(&self, doing: &str, error: PrivacyError) -> LogError {
        let kind = match error {
            PrivacyError::CorruptCiphertext { .. } | PrivacyError::UnknownDataKey { .. } => {
                std::io::ErrorKind::InvalidData
            }
            _ => std::io::ErrorKind::Other,
        };
        LogError::Io {
            context: format!("{doing} records of log `{}`", self.name),
            source: std::io::Error::new(kind, error),
        }
    }
}

#[async_trait]
impl<L: EventLog> EventLog for SealedLog<L> {
    fn partition_count(&self) -> u32 {
        self.inner.partition_count()
    }

    async fn append(&self, records: Vec<Record>) -> Result<Vec<AppendOutcome>, LogError> {
        let subjects: Vec<Subject> = records
            .iter()
            .map(|record| self.blind.subject_of_log_key(&record.key))
            .collect();
        let mut deks = self
            .keystore
            .deks_for_write_async(subjects.clone())
            .await
            .map_err(|error| self.error("sealing", error))?;
        if let Some(revives) = self.revives {
            let returning: Vec<Subject> = deks
                .iter()
                .zip(&records)
                .zip(&subjects)
                .filter(|((dek, record), _)| dek.is_none() && revives(&record.payload))
                .map(|(_, subject)| *subject)
                .collect();
            if !returning.is_empty() {
                let keystore = self.keystore.clone();
                let all = subjects.clone();
                deks = run_blocking(move || {
                    for subject in &returning {
                        keystore.clear_tombstone(subject)?;
                    }
                    keystore.deks_for_write_partial(&all)
                })
                .await
                .map_err(|error| self.error("sealing", error))?;
            }
        }
        let context = self.name.as_bytes();
        let mut kept = Vec::with_capacity(records.len());
        for ((mut record, subject), dek) in records.into_iter().zip(&subjects).zip(&deks) {
            let Some(dek) = dek else { continue };
            let mut sealed = Vec::with_capacity(record.payload.len() + SEAL_OVERHEAD);
            seal_with(dek, subject, context, &record.payload, &mut sealed)
                .map_err(|error| self.error("sealing", error))?;
            record.payload = Bytes::from(sealed);
            record.key.clear();
            subject.write_hex(&mut record.key);
            kept.push(record);
        }
        if kept.len() == deks.len() {
            return self.inner.append(kept).await;
        }
        let mut stored = if kept.is_empty() {
            Vec::new()
        } else {
            self.inner.append(kept).await?
        }
        .into_iter();
        deks.iter()
            .map(|dek| match dek {
                Some(_) => stored.next().ok_or_else(|| LogError::Io {
                    context: format!("appending to log `{}`", self.name),
                    source: std::io::Error::other("the log answered fewer outcomes than records"),
                }),
                None => Ok(AppendOutcome::Erased),
            })
            .collect()
    }

    async fn read(
        &self,
        partition: u32,
        from: u64,
        max_records: usize,
    ) -> Result<Vec<StoredRecord>, LogError> {
        let mut records = self.inner.read(partition, from, max_records).await?;
        // One pass on this thread with the keys in the cache; only records whose key is not
        // cached go to a blocking task (the key store may have to read SQLite).
        let context = self.name.as_bytes();
        let missing = open_cached(&self.keystore, context, &mut records)
            .map_err(|error| self.error("opening", error))?;
        if missing.is_empty() {
            return Ok(records);
        }
        let keystore = self.keystore.clone();
        let context: Arc<[u8]> = Arc::from(context);
        run_blocking(move || {
            open_records(&keystore, &context, &mut records, &missing).map(|()| records)
        })
        .await
        .map_err(|error| self.error("opening", error))
    }

    async fn end_offset(&self, partition: u32) -> Result<u64, LogError> {
        self.inner.end_offset(partition).await
    }

    async fn committed_offset(
        &self,
        consumer: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError> {
        self.inner.committed_offset(consumer, partition).await
    }

    async fn commit_offset(
        &self,
        consumer: &str,
        partition: u32,
        next: u64,
    ) -> Result<(), LogError> {
        self.inner.commit_offset(consumer, partition, next).await
    }

    async fn close(&self) -> Result<(), LogError> {
        self.inner.close().await
    }
}

/// Blanking goes straight to the wrapped log: a blanked record has no sealed payload left, and
/// reads back empty like an erased one.
#[async_trait]
impl<L: EventLog + Compactable> Compactable for SealedLog<L> {
    async fn blank(&self, partition: u32, offsets: &[u64]) -> Result<BlankReport, LogError> {
        self.inner.blank(partition, offsets).await
    }
}

fn subject_of(record: &StoredRecord) -> Result<Subject, PrivacyError> {
    Subject::from_hex(&record.key).ok_or_else(|| PrivacyError::CorruptCiphertext {
        subject: format!("(unparseable key at offset {})", record.offset),
        reason: "the stored key is not a subject",
    })
}

/// Opens in place every record whose data key is in the cache (keeping the last key at hand:
/// records of one subject often come in runs); returns the indexes of the others. Blanked
/// records (empty payloads, retention) are left as they are.
fn open_cached(
    keystore: &KeyStore,
    context: &[u8],
    records: &mut [StoredRecord],
) -> Result<Vec<usize>, PrivacyError> {
    let mut missing = Vec::new();
    let mut last: Option<(Subject, u64, Arc<Dek>)> = None;
    for (index, record) in records.iter_mut().enumerate() {
        if record.payload.is_empty() {
            continue;
        }
        let subject = subject_of(record)?;
        let key_id = sealed_key_id(&subject, &record.payload)?;
        let dek = match &last {
            Some((s, k, dek)) if *s == subject && *k == key_id => Some(dek.clone()),
            _ => keystore.cached_dek(&subject, key_id),
        };
        match dek {
            Some(dek) => {
                record.payload = Bytes::from(open_with(&dek, &subject, context, &record.payload)?);
                last = Some((subject, key_id, dek));
            }
            None => missing.push(index),
        }
    }
    Ok(missing)
}

/// Opens in place the records at `indexes`, reading keys from the key store (blocking);
/// shredded ones become empty.
fn open_records(
    keystore: &KeyStore,
    context: &[u8],
    records: &mut [StoredRecord],
    indexes: &[usize],
) -> Result<(), PrivacyError> {
    let mut last: Option<(Subject, u64, Option<Arc<Dek>>)> = None;
    for &index in indexes {
        let record = &mut records[index];
        let subject = subject_of(record)?;
        let key_id = sealed_key_id(&subject, &record.payload)?;
        let dek = match &last {
            Some((s, k, dek)) if *s == subject && *k == key_id => dek.clone(),
            _ => {
                let dek = keystore.dek_for_read(&subject, key_id)?;
                last = Some((subject, key_id, dek.clone()));
                dek
            }
        };
        record.payload = match dek {
            Some(dek) => Bytes::from(open_with(&dek, &subject, context, &record.payload)?),
            None => Bytes::new(),
        };
    }
    Ok(())
}
