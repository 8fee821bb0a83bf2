//! [`SealedLog`]: an [`EventLog`] decorator that stores records pseudonymized and sealed.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use trib_log::{AppendOutcome, EventLog, LogError, Record, StoredRecord};

use crate::PrivacyError;
use crate::blind::{BlindIndex, Subject};
use crate::keystore::{Dek, KeyStore};
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
/// Appending a record whose subject has a tombstone fails the whole call (nothing stored):
/// callers must drop or quarantine an erased person's new events before appending.
#[derive(Debug)]
pub struct SealedLog<L> {
    inner: L,
    keystore: KeyStore,
    blind: Arc<BlindIndex>,
    name: String,
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
        }
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

    async fn append(&self, mut records: Vec<Record>) -> Result<Vec<AppendOutcome>, LogError> {
        let subjects: Vec<Subject> = records
            .iter()
            .map(|record| self.blind.subject_of_log_key(&record.key))
            .collect();
        let deks = self
            .keystore
            .deks_for_write_async(subjects.clone())
            .await
            .map_err(|error| self.error("sealing", error))?;
        let context = self.name.as_bytes();
        for ((record, subject), dek) in records.iter_mut().zip(&subjects).zip(&deks) {
            let mut sealed = Vec::with_capacity(record.payload.len() + SEAL_OVERHEAD);
            seal_with(dek, subject, context, &record.payload, &mut sealed)
                .map_err(|error| self.error("sealing", error))?;
            record.payload = Bytes::from(sealed);
            record.key.clear();
            subject.write_hex(&mut record.key);
        }
        self.inner.append(records).await
    }

    async fn read(
        &self,
        partition: u32,
        from: u64,
        max_records: usize,
    ) -> Result<Vec<StoredRecord>, LogError> {
        let records = self.inner.read(partition, from, max_records).await?;
        let context: Arc<[u8]> = Arc::from(self.name.as_bytes());
        let all_cached = records.iter().all(|record| {
            Subject::from_hex(&record.key)
                .zip(sealed_key_id(&Subject([0; 32]), &record.payload).ok())
                .is_some_and(|(subject, key_id)| {
                    self.keystore.cached_dek(&subject, key_id).is_some()
                })
        });
        let result = if all_cached {
            open_records(&self.keystore, &context, records)
        } else {
            let keystore = self.keystore.clone();
            tokio::task::spawn_blocking(move || open_records(&keystore, &context, records))
                .await
                .map_err(|error| PrivacyError::KeyCreation {
                    reason: format!("the key lookup task failed: {error}"),
                })
                .and_then(|result| result)
        };
        result.map_err(|error| self.error("opening", error))
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

/// Opens every record's payload in place; shredded ones become empty.
fn open_records(
    keystore: &KeyStore,
    context: &[u8],
    mut records: Vec<StoredRecord>,
) -> Result<Vec<StoredRecord>, PrivacyError> {
    // Records of one subject usually come in runs: keep the last key at hand.
    let mut last: Option<(Subject, u64, Option<Arc<Dek>>)> = None;
    for record in &mut records {
        let subject =
            Subject::from_hex(&record.key).ok_or_else(|| PrivacyError::CorruptCiphertext {
                subject: format!("(unparseable key at offset {})", record.offset),
                reason: "the stored key is not a subject",
            })?;
        let key_id = sealed_key_id(&subject, &record.payload)?;
        let dek = match &last {
            Some((last_subject, last_key_id, dek))
                if *last_subject == subject && *last_key_id == key_id =>
            {
                dek.clone()
            }
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
    Ok(records)
}
