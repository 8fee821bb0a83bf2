//! The consent consumer: reads the event log (named consumer `consent`) and records consent
//! from every event's `context.consent.categoryPreferences` and from the configured consent
//! event.
//!
//! It runs on a thread of its own and reads each partition from the offsets committed *in the
//! ledger*: a round's entries and its next offsets are written in one SQLite transaction, so
//! after a crash it resumes exactly after the last recorded round (no entry lost, none
//! doubled).
//!
//! Segment sends the preferences with every event, so a preference is recorded only when it
//! changes an identifier's state: `true` over no grant is `granted`, `false` over a grant is
//! `withdrawn`, `false` with nothing recorded is `denied`, anything else is a repeat. A
//! consent event is an explicit act and always recorded (a denial of a granted purpose is
//! recorded as `withdrawn`). Entries are keyed by every identifier of the event (`userId`,
//! `anonymousId`, external ids and identifier traits, as identity resolution reads them).
//!
//! Imports become events, so an import carries consent through the same path when its rows
//! are mapped to the consent event (`kind = "track"`, `event = "Consent Updated"`, columns to
//! `properties.purpose` and `properties.status`).

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use memchr::memmem;
use serde_json::Value;
use tokio::runtime::Handle;
use tokio::sync::watch;
use trib_identity::{IdentityRules, Keyer};
use trib_log::EventLog;
use trib_store::IdentKey;

use crate::error::ConsentError;
use crate::ledger::{Ledger, Observation, Observed, Proof, Status};
use crate::rules::PrivacyRules;

/// The consumer name under which offsets are committed in the ledger.
pub const CONSUMER_NAME: &str = "consent";

/// How the consumer reads the log.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// The most records read from one partition per round (one ledger transaction).
    pub max_records_per_partition: usize,
    /// How long to wait when there is nothing new.
    pub idle_wait: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            max_records_per_partition: 2_000,
            idle_wait: Duration::from_millis(20),
        }
    }
}

/// What the consumer needs to turn an event into consent observations.
#[derive(Clone)]
pub struct ConsentReader {
    keyer: Keyer,
    identity: Arc<IdentityRules>,
    rules: Arc<PrivacyRules>,
    /// Finds `categoryPreferences` and the consent event's name in raw payload bytes.
    preferences_finder: memmem::Finder<'static>,
    event_finder: memmem::Finder<'static>,
}

/// A running consent consumer.
pub struct ConsentConsumer {
    stop: Option<mpsc::Sender<()>>,
    progress: watch::Receiver<Vec<u64>>,
    log: Arc<dyn EventLog>,
    thread: Option<JoinHandle<()>>,
}

impl ConsentReader {
    /// `keyer` must be the deployment's identity key; `identity` says which fields hold
    /// identifiers.
    pub fn new(keyer: Keyer, identity: Arc<IdentityRules>, rules: Arc<PrivacyRules>) -> Self {
        let event_finder = memmem::Finder::new(rules.consent_event.name.as_bytes()).into_owned();
        Self {
            keyer,
            identity,
            rules,
            preferences_finder: memmem::Finder::new(b"categoryPreferences").into_owned(),
            event_finder,
        }
    }

    /// Whether an event's raw bytes can express consent: they name `categoryPreferences` or
    /// the consent event, or hold an escape sequence (`\u0063ategoryPreferences` is the same
    /// key), so anything else is skipped without parsing it (most events: a page view, a
    /// purchase).
    fn may_express_consent(&self, payload: &[u8]) -> bool {
        memchr::memchr(b'\\', payload).is_some()
            || self.preferences_finder.find(payload).is_some()
            || self.event_finder.find(payload).is_some()
    }

    /// The consent an event expresses, one observation per purpose. Unreadable events and
    /// events without identifiers express none.
    pub(crate) fn observe(&self, payload: &[u8]) -> Vec<Observation> {
        if !self.may_express_consent(payload) {
            return Vec::new();
        }
        let Ok(event) = serde_json::from_slice::<Value>(payload) else {
            ignored("unreadable");
            return Vec::new();
        };
        let preferences = event.pointer("/context/consent/categoryPreferences");
        let is_consent_event = event.get("type").and_then(Value::as_str) == Some("track")
            && event.get("event").and_then(Value::as_str)
                == Some(self.rules.consent_event.name.as_str());
        if preferences.is_none() && !is_consent_event {
            return Vec::new();
        }
        let observed = match trib_identity::extract::extract(payload, &self.identity) {
            Ok(observed) => observed,
            Err(_) => {
                ignored("unreadable");
                return Vec::new();
            }
        };
        let keys: Vec<IdentKey> = observed
            .identifiers
            .iter()
            .map(|identifier| {
                self.keyer.ident_key(
                    &self.identity.types[identifier.kind].name,
                    &identifier.value,
                )
            })
            .collect();
        if keys.is_empty() {
            ignored("no_identifier");
            return Vec::new();
        }
        let origin = if observed.message_id.starts_with("imp-") {
            "import"
        } else {
            "event"
        };
        let source = format!("{origin}:{}:{}", observed.source, observed.message_id);
        let mut observations = Vec::new();
        if let Some(Value::Object(preferences)) = preferences {
            for (category, granted) in preferences {
                let (Some(purpose), Some(granted)) =
                    (self.rules.purpose_of_category(category), granted.as_bool())
                else {
                    ignored("unknown_category");
                    continue;
                };
                observations.push(Observation {
                    keys: keys.clone(),
                    purpose: purpose.name.clone(),
                    kind: Observed::Preference(granted),
                    at_ms: observed.timestamp_ms,
                    source: source.clone(),
                    legal_basis: purpose.legal_basis,
                    proof: Proof::default(),
                });
            }
        }
        if is_consent_event {
            let rule = &self.rules.consent_event;
            let purpose = at_path(&event, &rule.purpose_path)
                .and_then(Value::as_str)
                .and_then(|name| self.rules.purpose(name));
            let status = match at_path(&event, &rule.status_path) {
                Some(Value::Bool(true)) => Some(Status::Granted),
                Some(Value::Bool(false)) => Some(Status::Denied),
                Some(Value::String(text)) => Status::parse(text.trim()),
                _ => None,
            };
            match (purpose, status) {
                (Some(purpose), Some(status)) => observations.push(Observation {
                    keys,
                    purpose: purpose.name.clone(),
                    kind: Observed::Explicit(status),
                    at_ms: observed.timestamp_ms,
                    source,
                    legal_basis: purpose.legal_basis,
                    proof: at_path(&event, &rule.proof_path)
                        .map(Proof::from_json)
                        .unwrap_or_default(),
                }),
                (None, _) => ignored("unknown_purpose"),
                (_, None) => ignored("invalid_status"),
            }
        }
        observations
    }
}

impl ConsentConsumer {
    /// Starts the consumer thread, resuming from the offsets committed in the ledger.
    /// `runtime` is used to read the (async) log.
    pub fn spawn(
        log: Arc<dyn EventLog>,
        ledger: Arc<Ledger>,
        reader: ConsentReader,
        options: ConsumerOptions,
        runtime: Handle,
    ) -> Result<Self, ConsentError> {
        let committed = ledger.consumer_offsets(CONSUMER_NAME)?;
        let next: Vec<u64> = (0..log.partition_count())
            .map(|partition| {
                committed
                    .iter()
                    .find(|(p, _)| *p == partition)
                    .map_or(0, |(_, next)| *next)
            })
            .collect();
        let (progress_tx, progress) = watch::channel(next.clone());
        let (stop, stopped) = mpsc::channel();
        let thread_log = log.clone();
        let worker = Worker {
            log: thread_log,
            ledger,
            reader,
            options,
            runtime,
        };
        let thread = std::thread::Builder::new()
            .name("consent".into())
            .spawn(move || worker.run(next, &stopped, &progress_tx))
            .map_err(|_| ConsentError::Consumer("cannot start its thread"))?;
        Ok(Self {
            stop: Some(stop),
            progress,
            log,
            thread: Some(thread),
        })
    }

    /// Waits until every event appended before this call has been recorded.
    pub async fn caught_up(&self) -> Result<(), ConsentError> {
        let mut ends = Vec::new();
        for partition in 0..self.log.partition_count() {
            let end = self
                .log
                .end_offset(partition)
                .await
                .map_err(|error| ConsentError::Log {
                    partition,
                    reason: error.to_string(),
                })?;
            ends.push(end);
        }
        let mut progress = self.progress.clone();
        progress
            .wait_for(|next| next.iter().zip(&ends).all(|(next, end)| next >= end))
            .await
            .map_err(|_| ConsentError::Consumer("stopped"))?;
        Ok(())
    }

    /// The next offset per partition that the consumer will read.
    pub fn position(&self) -> Vec<u64> {
        self.progress.borrow().clone()
    }

    /// Stops after the current round and waits for the thread.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.stop = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ConsentConsumer {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// The consumer thread's context.
struct Worker {
    log: Arc<dyn EventLog>,
    ledger: Arc<Ledger>,
    reader: ConsentReader,
    options: ConsumerOptions,
    runtime: Handle,
}

impl Worker {
    fn run(
        &self,
        mut next: Vec<u64>,
        stopped: &mpsc::Receiver<()>,
        progress: &watch::Sender<Vec<u64>>,
    ) {
        let mut backoff = Duration::from_millis(50);
        let mut wait = Duration::ZERO;
        loop {
            // A message or a dropped sender both mean stop.
            match stopped.recv_timeout(wait) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            match self.round(&next) {
                Ok(None) => wait = self.options.idle_wait,
                Ok(Some(advanced)) => {
                    next = advanced;
                    progress.send_replace(next.clone());
                    backoff = Duration::from_millis(50);
                    wait = Duration::ZERO;
                }
                Err(error) => {
                    metrics::counter!("tributary_consent_errors_total").increment(1);
                    tracing::warn!(%error, "consent: a round failed; retrying from the committed offsets");
                    wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Reads one round from every partition and records it with the next offsets; `None`
    /// when there was nothing new.
    fn round(&self, next: &[u64]) -> Result<Option<Vec<u64>>, ConsentError> {
        let mut advanced = next.to_vec();
        let mut observations = Vec::new();
        let mut n_events = 0u64;
        for (partition, from) in next.iter().enumerate() {
            let partition = partition as u32;
            let records = self
                .runtime
                .block_on(
                    self.log
                        .read(partition, *from, self.options.max_records_per_partition),
                )
                .map_err(|error| ConsentError::Log {
                    partition,
                    reason: error.to_string(),
                })?;
            if let Some(last) = records.last() {
                advanced[partition as usize] = last.offset + 1;
            }
            n_events += records.len() as u64;
            for record in &records {
                observations.extend(self.reader.observe(&record.payload));
            }
        }
        if n_events == 0 {
            return Ok(None);
        }
        let offsets: Vec<(u32, u64)> = advanced
            .iter()
            .enumerate()
            .filter(|(partition, offset)| next[*partition] != **offset)
            .map(|(partition, offset)| (partition as u32, *offset))
            .collect();
        let appended = self
            .ledger
            .commit_round(CONSUMER_NAME, &observations, &offsets)?;
        metrics::counter!("tributary_consent_events_total").increment(n_events);
        metrics::counter!("tributary_consent_entries_total").increment(appended as u64);
        Ok(Some(advanced))
    }
}

/// The value at a dotted path (`properties.proof`) of an event.
fn at_path<'a>(event: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(event, |value, segment| value.get(segment))
}

fn ignored(reason: &'static str) {
    metrics::counter!("tributary_consent_ignored_total", "reason" => reason).increment(1);
}
