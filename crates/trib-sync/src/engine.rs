//! The sync engine: one worker per destination, so a failing or slow ESP never slows the
//! others.
//!
//! A worker loops over:
//! 1. **Feed → pending.** Read the profile change feed after the destination's cursor and
//!    enqueue each changed profile in `sync.db` (same transaction as the cursor).
//! 2. **Deletions** due (erasure, mirror mode): in batches, through [`Connector::delete`].
//! 3. **Upserts** due: wait up to `batch_window` for more changes (micro-batching), load the
//!    profiles, map them, drop those whose digests equal what the ESP confirmed (zero calls),
//!    ask the [`Gatekeeper`] for a permit per profile (consent and suppression for the
//!    destination's purpose, checked now, not when the change happened), and push the rest in
//!    batches of the connector's maximum, several batches in flight up to its concurrency.
//! 4. **Outcomes.** Confirmed → record the ESP id and digests, observe freshness; not applied
//!    or a retryable class → back off exponentially with full jitter (honouring the ESP's
//!    `Retry-After`) within the retry window; an invalid record, a fatal error or an expired
//!    window → dead letter.
//!
//! Ordering per (profile, destination) holds because a profile is in at most one batch at a
//! time and every push sends the profile's *latest* state (read when the batch is built).
//! A scheduled reconcile re-enqueues every profile; the diff makes that cheap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use trib_config::{DestinationConfig, SyncMode};
use trib_consent::{Gatekeeper, Permitted, SuppressionScope};
use trib_core::Secret;
use trib_store::{ChangeKind, ProfileId, ProfileState, ProfileStore};

use crate::breaker::{Breaker, Gate, PROBE_BATCH};
use crate::connector::{CallError, Connector, Contact, DeleteTarget, ErrorClass, ItemOutcome};
use crate::map::{Digester, EMAIL_FIELD, changed_fields, desired};
use crate::state::{Confirmed, Deletion, EmailSealer, Pending, Settlement, SyncState};

/// The consent ledger's change feeds a worker follows.
#[derive(Debug, Clone, Copy)]
enum LedgerFeed {
    Consent,
    Suppressions,
}

impl LedgerFeed {
    /// The suffix of its cursor's name in the sync state (`<destination>#consent`).
    fn cursor_suffix(self) -> &'static str {
        match self {
            LedgerFeed::Consent => "consent",
            LedgerFeed::Suppressions => "suppressions",
        }
    }
}

/// How long a merged-away record's deletion waits before looking again at its survivor's
/// pending push.
const MERGE_WAIT_MS: i64 = 200;
/// Most upsert records one round prepares and holds (all its batches in flight): with
/// SendGrid's 30,000-contact batches, the connector's concurrency alone would allow 120,000.
const MAX_ROUND_RECORDS: usize = 60_000;
/// The longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);

/// One configured destination and its connector.
#[derive(Clone)]
pub struct Destination {
    pub config: DestinationConfig,
    pub connector: Arc<dyn Connector>,
}

/// Engine-wide settings.
#[derive(Clone)]
pub struct EngineOptions {
    /// How often an idle worker looks at the change feed.
    pub poll_interval: Duration,
    /// Changes read from the feed per page.
    pub feed_page: usize,
    /// Where every push and deletion is recorded (actor `sync:<destination>`, the profile id,
    /// the destination's purpose) before it is sent; a batch whose records cannot be made
    /// durable is not sent. `None`: nothing is recorded (tests, benchmarks).
    pub audit: Option<Arc<trib_audit::AuditLog>>,
    /// Opens the emails that erasures by email carry (see `SyncState::queue_erasure`).
    /// `None`: such deletions are dead-lettered as fatal.
    pub email_sealer: Option<Arc<dyn EmailSealer>>,
}

impl std::fmt::Debug for EngineOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineOptions")
            .field("poll_interval", &self.poll_interval)
            .field("feed_page", &self.feed_page)
            .field("audit", &self.audit.is_some())
            .field("email_sealer", &self.email_sealer.is_some())
            .finish()
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(100),
            feed_page: 2_000,
            audit: None,
            email_sealer: None,
        }
    }
}

/// Why the engine could not do its work (the worker logs it and tries again).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("profile store: {0}")]
    Store(#[from] trib_store::StoreError),
    #[error("audit log: {0}")]
    Audit(String),
    #[error("consent ledger: {0}")]
    Consent(String),
    #[error("a blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The running engine: its workers and the switch that stops them.
pub struct SyncEngine {
    stop: watch::Sender<bool>,
    workers: JoinSet<()>,
}

/// What a worker shares with its batches.
struct Worker {
    destination: Destination,
    store: Arc<dyn ProfileStore>,
    state: Arc<SyncState>,
    gate: Gatekeeper,
    digester: Digester,
    options: EngineOptions,
    /// Opens when the ESP answers no call; see [`crate::breaker`].
    breaker: std::sync::Mutex<Breaker>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl SyncEngine {
    /// Starts one worker per destination.
    pub fn start(
        destinations: Vec<Destination>,
        store: Arc<dyn ProfileStore>,
        state: Arc<SyncState>,
        gate: Gatekeeper,
        digester: Digester,
        options: EngineOptions,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let mut workers = JoinSet::new();
        for destination in destinations {
            let worker = Arc::new(Worker {
                breaker: std::sync::Mutex::new(Breaker::new(destination.config.retry_base)),
                destination,
                store: store.clone(),
                state: state.clone(),
                gate: gate.clone(),
                digester: digester.clone(),
                options: options.clone(),
            });
            workers.spawn(worker.run(stopped.clone()));
        }
        Self { stop, workers }
    }

    /// Stops the workers after their current round (in-flight batches finish and record
    /// their outcomes; what was not sent stays pending in `sync.db`).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.workers.join_next().await.is_some() {}
    }
}

/// The outcome of building one pending profile's push.
enum Prepared {
    Push {
        pending: Pending,
        permit: Box<Permitted<Contact>>,
        digests: BTreeMap<String, String>,
    },
    /// Nothing to send (unchanged, not permitted, gone): retire the pending row.
    Settle(Pending),
}

impl Worker {
    fn name(&self) -> &str {
        &self.destination.config.name
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&SyncState) -> Result<T, crate::state::StateError> + Send + 'static,
    ) -> Result<T, EngineError> {
        let state = self.state.clone();
        Ok(tokio::task::spawn_blocking(move || work(&state)).await??)
    }

    async fn run(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let mut next_reconcile =
            tokio::time::Instant::now() + self.destination.config.reconcile_interval;
        let resync_interval = self.destination.config.resync_interval;
        let mut next_resync = resync_interval.map(|every| tokio::time::Instant::now() + every);
        loop {
            if *stopped.borrow() {
                return;
            }
            let idle = match self.round().await {
                Ok(idle) => idle,
                Err(error) => {
                    tracing::warn!(destination = self.name(), %error, "sync round failed; retrying");
                    metrics::counter!("tributary_sync_round_errors_total", "destination" => self.name().to_owned()).increment(1);
                    true
                }
            };
            if let (Some(at), Some(every)) = (next_resync, resync_interval)
                && tokio::time::Instant::now() >= at
            {
                next_resync = Some(tokio::time::Instant::now() + every);
                let name = self.name().to_owned();
                if let Err(error) = self
                    .blocking(move |s| s.request_resync(&name, now_ms()))
                    .await
                {
                    tracing::warn!(destination = self.name(), %error, "scheduling a resync failed");
                }
            }
            if let Err(error) = self.resync_if_asked().await {
                tracing::warn!(destination = self.name(), %error, "resync failed; retrying");
            }
            if tokio::time::Instant::now() >= next_reconcile {
                next_reconcile =
                    tokio::time::Instant::now() + self.destination.config.reconcile_interval;
                if let Err(error) = self.reconcile().await {
                    tracing::warn!(destination = self.name(), %error, "reconcile failed");
                }
            }
            if idle {
                tokio::select! {
                    _ = tokio::time::sleep(self.options.poll_interval) => {}
                    _ = stopped.changed() => {}
                }
            }
        }
    }

    /// One round; `Ok(true)` when there was nothing to do.
    async fn round(&self) -> Result<bool, EngineError> {
        let fed = self.feed().await?;
        let consented = self.consent_feed().await?;
        let deleted = self.deletions().await?;
        let pushed = self.upserts().await?;
        self.publish_counts().await?;
        Ok(!fed && !consented && !deleted && !pushed)
    }

    /// Consent recorded, and suppressions added or removed, since the last round: the
    /// profiles they name are evaluated again (a grant or a lifted suppression sends a
    /// profile that was refused; a withdrawal or a suppression, in mirror mode, deletes it).
    async fn consent_feed(&self) -> Result<bool, EngineError> {
        let consent = self.ledger_feed(LedgerFeed::Consent).await?;
        let suppressions = self.ledger_feed(LedgerFeed::Suppressions).await?;
        Ok(consent || suppressions)
    }

    /// One page of one of the ledger's change feeds, after its cursor in the sync state.
    async fn ledger_feed(&self, feed: LedgerFeed) -> Result<bool, EngineError> {
        let cursor_name = format!("{}#{}", self.name(), feed.cursor_suffix());
        let name = cursor_name.clone();
        let cursor = self.blocking(move |s| s.cursor(&name)).await? as i64;
        let ledger = self.gate.ledger().clone();
        let page = self.options.feed_page;
        let destination = self.name().to_owned();
        let changed = tokio::task::spawn_blocking(move || match feed {
            LedgerFeed::Consent => ledger.changed_after(cursor, page).map(|changes| {
                changes
                    .into_iter()
                    .map(|(seq, key)| (seq, Some(key)))
                    .collect()
            }),
            LedgerFeed::Suppressions => {
                ledger
                    .suppression_changes_after(cursor, page)
                    .map(|changes| {
                        changes
                            .into_iter()
                            .map(|(seq, key, scope)| {
                                let here = match scope {
                                    SuppressionScope::Global => true,
                                    SuppressionScope::Destination(name) => name == destination,
                                };
                                (seq, here.then_some(key))
                            })
                            .collect::<Vec<_>>()
                    })
            }
        })
        .await?
        .map_err(|e| EngineError::Consent(e.to_string()))?;
        let Some(last) = changed.last().map(|(seq, _)| *seq) else {
            return Ok(false);
        };
        let keys: Vec<_> = changed.into_iter().filter_map(|(_, key)| key).collect();
        let store = self.store.clone();
        let profiles = tokio::task::spawn_blocking(move || store.lookup_many(&keys)).await??;
        let now = now_ms();
        let mut enqueue: Vec<_> = profiles
            .into_iter()
            .flatten()
            .map(|id| (id, 0, now))
            .collect();
        enqueue.sort();
        enqueue.dedup();
        let name = self.name().to_owned();
        self.blocking(move |s| {
            s.enqueue(&name, &enqueue, None, now)?;
            s.enqueue(&cursor_name, &[], Some(last as u64), now)
        })
        .await?;
        Ok(true)
    }

    /// Moves feed entries after the cursor into `pending`, page by page, until the feed is
    /// read or there is enough to fill every batch in flight (so that a backlog is sent in
    /// batches of the destination's maximum, not one batch per page). `Ok(true)` if any.
    async fn feed(&self) -> Result<bool, EngineError> {
        let enough = self.max_batch() * self.batches_in_flight();
        let mut fed = 0;
        loop {
            let read = self.feed_page().await?;
            fed += read;
            if read < self.options.feed_page || fed >= enough {
                return Ok(fed > 0);
            }
        }
    }

    /// Moves one page of the feed into `pending`; returns how many entries it read.
    async fn feed_page(&self) -> Result<usize, EngineError> {
        let name = self.name().to_owned();
        let cursor = self.blocking(move |s| s.cursor(&name)).await?;
        let store = self.store.clone();
        let page = self.options.feed_page;
        let changes =
            tokio::task::spawn_blocking(move || store.changes(None, cursor, page)).await??;
        let Some(last) = changes.last().map(|c| c.seq) else {
            return Ok(0);
        };
        let mirror = self.destination.config.mode == SyncMode::Mirror;
        let mut enqueue = Vec::with_capacity(changes.len());
        let mut gone = Vec::new();
        let mut merged = Vec::new();
        for change in &changes {
            match change.kind {
                ChangeKind::Upserted => enqueue.push((change.id, change.seq, change.updated_at_ms)),
                // Mirror mode removes the merged-away id's ESP record, but only after the
                // survivor's push: it is enqueued here (it also appears in the feed on its
                // own, perhaps on the next page), and the deletion waits for it and is
                // superseded when the survivor confirmed the same ESP record (same email).
                ChangeKind::MergedInto(into) if mirror => {
                    merged.push((change.id, into, change.seq, change.updated_at_ms));
                }
                ChangeKind::MergedInto(_) => {}
                ChangeKind::Deleted => gone.push(change.id),
            }
        }
        // Deletions are queued before the cursor moves past them, so a crash in between
        // reads them again (queueing is idempotent: the confirmed record is gone after).
        if mirror {
            for profile in gone {
                self.mirror_delete(profile, "deleted").await?;
            }
            let name = self.name().to_owned();
            let now = now_ms();
            let survivors: Vec<_> = merged
                .iter()
                .map(|&(_, into, seq, changed_ms)| (into, seq, changed_ms))
                .collect();
            self.blocking(move |s| {
                // The survivors first: a deletion must never find its survivor not yet
                // pending.
                s.enqueue(&name, &survivors, None, now)?;
                for (profile, into, _, _) in merged {
                    s.queue_merge_deletion(&name, profile, into, now)?;
                }
                Ok(())
            })
            .await?;
        }
        let name = self.name().to_owned();
        let now = now_ms();
        self.blocking(move |s| s.enqueue(&name, &enqueue, Some(last), now))
            .await?;
        Ok(changes.len())
    }

    /// Mirror mode: queue the deletion of a profile's ESP record unless another live
    /// profile's record has the same ESP id.
    async fn mirror_delete(
        &self,
        profile: ProfileId,
        reason: &'static str,
    ) -> Result<(), EngineError> {
        let name = self.name().to_owned();
        self.blocking(move |s| {
            if let Some(esp_id) = s.confirmed_esp_id(&name, profile)?
                && !s.esp_id_shared(&name, profile, &esp_id)?
            {
                s.queue_deletion(&name, profile, reason, now_ms())?;
            }
            Ok(())
        })
        .await
    }

    async fn deletions(&self) -> Result<bool, EngineError> {
        let limits = self.destination.connector.limits();
        let name = self.name().to_owned();
        let limit = match self.gate() {
            Gate::Open(_) => return Ok(false),
            Gate::Probe => limits.max_delete_batch.clamp(1, PROBE_BATCH),
            Gate::Closed => limits.max_delete_batch.max(1) * limits.max_concurrency.max(1),
        };
        let candidates = self
            .blocking(move |s| s.due_deletions(&name, now_ms(), limit))
            .await?;
        if candidates.is_empty() {
            return Ok(false);
        }
        // Checked again now: a mirror-mode deletion of an ESP record that another profile has
        // confirmed since (its email moved there) would delete a live contact.
        let name = self.name().to_owned();
        let due = self
            .blocking(move |s| {
                let mut due = Vec::with_capacity(candidates.len());
                for deletion in candidates {
                    if deletion.reason != "erasure"
                        && s.esp_id_shared(&name, deletion.profile, &deletion.esp_id)?
                    {
                        s.supersede_deletion(&deletion, now_ms())?;
                    } else if let Some(survivor) = deletion.survivor
                        && s.is_pending(&name, survivor)?
                    {
                        s.postpone_deletion(deletion.id, now_ms() + MERGE_WAIT_MS)?;
                    } else {
                        due.push(deletion);
                    }
                }
                Ok(due)
            })
            .await?;
        if due.is_empty() {
            return Ok(true);
        }
        self.audit(
            "sync:delete",
            trib_audit::Action::Write,
            due.iter().map(|d| d.profile),
        )
        .await?;
        // Erasures by email: the email is opened now (a blocking key store read), held only
        // while the call is made.
        let mut due_targets = Vec::with_capacity(due.len());
        for deletion in due {
            let Some(sealed) = deletion.sealed_email.clone() else {
                due_targets.push((deletion, None));
                continue;
            };
            let sealer = self.options.email_sealer.clone();
            let opened = tokio::task::spawn_blocking(move || match sealer {
                Some(sealer) => sealer.open(&sealed),
                None => Err("this server has no key to open queued emails with".to_owned()),
            })
            .await?;
            match opened {
                Ok(email) => due_targets.push((deletion, Some(Secret::new(email)))),
                Err(reason) => {
                    let outcome = ItemOutcome::Failed {
                        class: ErrorClass::Fatal,
                        detail: format!("the queued email cannot be opened: {reason}"),
                    };
                    self.record_deletions(vec![deletion], Ok(vec![outcome]))
                        .await?;
                }
            }
        }
        let mut calls = JoinSet::new();
        for chunk in due_targets.chunks(limits.max_delete_batch.max(1)) {
            let targets: Vec<DeleteTarget> = chunk
                .iter()
                .map(|(d, email)| DeleteTarget {
                    profile_id: d.profile.to_string(),
                    esp_id: d.esp_id.clone(),
                    email: email.clone(),
                    permanent: d.reason == "erasure",
                })
                .collect();
            let chunk: Vec<Deletion> = chunk.iter().map(|(d, _)| d.clone()).collect();
            let connector = self.destination.connector.clone();
            calls.spawn(async move {
                let result = connector.delete(targets).await;
                (chunk, result)
            });
        }
        while let Some(joined) = calls.join_next().await {
            let (chunk, result) = joined?;
            self.record_deletions(chunk, result).await?;
        }
        Ok(true)
    }

    async fn record_deletions(
        &self,
        chunk: Vec<Deletion>,
        result: Result<Vec<ItemOutcome>, CallError>,
    ) -> Result<(), EngineError> {
        self.observe(&result);
        let outcomes = outcomes_for(chunk.len(), result);
        for (deletion, (outcome, retry_after)) in chunk.into_iter().zip(outcomes) {
            let name = self.name().to_owned();
            let now = now_ms();
            let decision = self.decide(
                &outcome,
                deletion.attempts,
                deletion.first_failed_ms,
                retry_after,
            );
            match decision {
                Decision::Done => {
                    self.count("tributary_sync_deleted_total");
                    self.blocking(move |s| {
                        s.finish_deletion(&name, &deletion, None, now)?;
                        if deletion.reason == "erasure" && !deletion.esp_id.is_empty() {
                            s.forget_esp_id(&name, &deletion.esp_id, deletion.profile)?;
                        }
                        Ok(())
                    })
                    .await?;
                }
                Decision::Retry { at_ms, class } => {
                    self.count_class("tributary_sync_retried_total", class);
                    let attempts = deletion.attempts + 1;
                    let first = deletion.first_failed_ms.unwrap_or(now);
                    self.blocking(move |s| {
                        s.reschedule_deletion(deletion.id, attempts, at_ms, first)
                    })
                    .await?;
                }
                Decision::Dead { class, detail } => {
                    self.count_class("tributary_sync_dead_lettered_total", class);
                    tracing::warn!(
                        destination = self.name(),
                        class = class.as_str(),
                        "deletion dead-lettered"
                    );
                    self.blocking(move |s| {
                        s.finish_deletion(&name, &deletion, Some((class.as_str(), &detail)), now)
                    })
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Most records per upsert call: the connector's maximum, or the configured one if lower.
    fn max_batch(&self) -> usize {
        let limits = self.destination.connector.limits();
        self.destination
            .config
            .max_batch
            .map_or(limits.max_batch, |m| m.min(limits.max_batch))
            .max(1)
    }

    /// Upsert batches sent at once in a round: the connector's concurrency, fewer where
    /// that many full batches would exceed [`MAX_ROUND_RECORDS`] (but at least two, so that
    /// one batch's confirmation overlaps another's call).
    fn batches_in_flight(&self) -> usize {
        let concurrency = self.destination.connector.limits().max_concurrency.max(1);
        concurrency.min((MAX_ROUND_RECORDS / self.max_batch()).max(2))
    }

    async fn upserts(&self) -> Result<bool, EngineError> {
        let (max_batch, in_flight) = match self.gate() {
            Gate::Open(_) => return Ok(false),
            Gate::Probe => (self.max_batch().min(PROBE_BATCH), 1),
            Gate::Closed => (self.max_batch(), self.batches_in_flight()),
        };
        let name = self.name().to_owned();
        let limit = max_batch * in_flight;
        let mut due = self
            .blocking(move |s| s.due(&name, now_ms(), limit))
            .await?;
        if due.is_empty() {
            return Ok(false);
        }
        // Micro-batching: a fresh change waits up to the window for companions, unless a
        // full batch is already waiting.
        let window = self.destination.config.batch_window;
        let oldest = due
            .iter()
            .map(|p| p.next_at_ms.max(p.first_change_ms))
            .min()
            .unwrap_or(0);
        let ready_at = oldest + window.as_millis() as i64;
        if due.len() < max_batch && ready_at > now_ms() {
            tokio::time::sleep(Duration::from_millis((ready_at - now_ms()).max(0) as u64)).await;
            // Changes that arrived during the window join this batch rather than waiting for
            // the next round's window.
            self.feed().await?;
            let name = self.name().to_owned();
            due = self
                .blocking(move |s| s.due(&name, now_ms(), limit))
                .await?;
        }

        let prepared_at = now_ms();
        let prepared = self.prepare(due).await?;
        let mut pushes = Vec::new();
        // One record per ESP key per round: two profiles with the same email (a merge the
        // guard-rails refused) would make one batch name a contact twice, which HubSpot
        // refuses whole. The second waits, still pending, for the next round.
        let mut emails = std::collections::HashSet::new();
        for item in prepared {
            if let Prepared::Push { permit, .. } = &item
                && !emails.insert(permit.value().email.to_lowercase())
            {
                continue;
            }
            match item {
                Prepared::Settle(pending) => {
                    let name = self.name().to_owned();
                    self.blocking(move |s| s.settle(&name, pending.profile, pending.seq, now_ms()))
                        .await?;
                }
                Prepared::Push {
                    pending,
                    permit,
                    digests,
                } => pushes.push((pending, permit, digests)),
            }
        }
        self.audit(
            "sync:upsert",
            trib_audit::Action::Read,
            pushes.iter().map(|(pending, _, _)| pending.profile),
        )
        .await?;
        let mut calls = JoinSet::new();
        while !pushes.is_empty() {
            let rest = pushes.split_off(pushes.len().min(max_batch));
            let batch = std::mem::replace(&mut pushes, rest);
            let connector = self.destination.connector.clone();
            let mut meta = Vec::with_capacity(batch.len());
            let mut permits = Vec::with_capacity(batch.len());
            for (pending, permit, digests) in batch {
                let subscribed = permit.value().subscribed;
                meta.push((pending, digests, subscribed));
                permits.push(*permit);
            }
            metrics::counter!("tributary_sync_sent_total", "destination" => self.name().to_owned())
                .increment(meta.len() as u64);
            calls.spawn(async move {
                let result = connector.upsert(permits).await;
                (meta, result)
            });
        }
        while let Some(joined) = calls.join_next().await {
            let (meta, result) = joined?;
            self.record_upserts(meta, result, prepared_at).await?;
        }
        Ok(true)
    }

    /// Loads, maps, diffs and permits the due profiles.
    async fn prepare(&self, due: Vec<Pending>) -> Result<Vec<Prepared>, EngineError> {
        let ids: Vec<ProfileId> = due.iter().map(|p| p.profile).collect();
        let store = self.store.clone();
        let states = {
            let ids = ids.clone();
            tokio::task::spawn_blocking(move || store.get_many(&ids)).await??
        };
        let name = self.name().to_owned();
        let confirmed = self.blocking(move |s| s.confirmed(&name, &ids)).await?;
        let config = &self.destination.config;
        let partial = self.destination.connector.limits().partial_updates;
        let mut out = Vec::with_capacity(due.len());
        for (pending, state) in due.into_iter().zip(states) {
            let record = match state {
                Some(ProfileState::Active(record)) => record,
                // Merged or deleted meanwhile: the feed carries what follows.
                _ => {
                    out.push(Prepared::Settle(pending));
                    continue;
                }
            };
            let profile = match trib_identity::engine::decode(&record) {
                Ok(profile) => profile,
                Err(error) => {
                    tracing::warn!(destination = self.name(), %error, "undecodable profile skipped");
                    self.skip("undecodable");
                    out.push(Prepared::Settle(pending));
                    continue;
                }
            };
            let wanted = match desired(&profile, &config.fields) {
                Ok(wanted) => wanted,
                Err(reason) => {
                    self.skip(reason.code());
                    out.push(Prepared::Settle(pending));
                    continue;
                }
            };
            let digests = self.digester.digests(&wanted);
            let previous = confirmed.get(&pending.profile);
            // Marketing status: whether the person consented to email marketing itself
            // (the destination's purpose may be another one).
            let subscribed = config.purpose == "email_marketing"
                || self
                    .gate
                    .permit(
                        &profile.identifiers,
                        "email_marketing",
                        Some(&config.name),
                        (),
                    )
                    .is_ok();
            let same_contact =
                previous.is_some_and(|c| c.digests.get(EMAIL_FIELD) == digests.get(EMAIL_FIELD));
            let unchanged = previous.is_some_and(|c| {
                same_contact && c.digests == digests && c.subscribed == subscribed
            });
            let fields = match previous {
                Some(confirmed) if same_contact && partial => {
                    changed_fields(&wanted, &digests, &confirmed.digests)
                }
                _ => wanted.fields.clone(),
            };
            let contact = Contact {
                profile_id: pending.profile.to_string(),
                email: wanted.email,
                fields,
                desired: wanted.fields,
                subscribed,
                esp_id: previous.filter(|_| same_contact).map(|c| c.esp_id.clone()),
            };
            // Checked now, for this destination: a withdrawal or suppression recorded since the
            // change refuses the push.
            let permit = self.gate.permit(
                &profile.identifiers,
                &config.purpose,
                Some(&config.name),
                contact,
            );
            let permit = match permit {
                Ok(permit) => permit,
                Err(denied) => {
                    self.skip(denied.reason.code());
                    if config.mode == SyncMode::Mirror && previous.is_some() {
                        self.mirror_delete(pending.profile, "consent").await?;
                    }
                    out.push(Prepared::Settle(pending));
                    continue;
                }
            };
            if unchanged {
                metrics::counter!("tributary_sync_unchanged_total", "destination" => self.name().to_owned()).increment(1);
                out.push(Prepared::Settle(pending));
                continue;
            }
            if !same_contact && config.mode == SyncMode::Mirror && previous.is_some() {
                // The key email changed: the old contact leaves the destination.
                self.mirror_delete(pending.profile, "email_changed").await?;
            }
            out.push(Prepared::Push {
                pending,
                permit: Box::new(permit),
                digests,
            });
        }
        Ok(out)
    }

    async fn record_upserts(
        &self,
        meta: Vec<(Pending, BTreeMap<String, String>, bool)>,
        result: Result<Vec<ItemOutcome>, CallError>,
        prepared_at_ms: i64,
    ) -> Result<(), EngineError> {
        self.observe(&result);
        let outcomes = outcomes_for(meta.len(), result);
        let now = now_ms();
        let mut settlements = Vec::with_capacity(meta.len());
        for ((pending, digests, subscribed), (outcome, retry_after)) in
            meta.into_iter().zip(outcomes)
        {
            match self.decide(
                &outcome,
                pending.attempts,
                pending.first_failed_ms,
                retry_after,
            ) {
                Decision::Done => {
                    let ItemOutcome::Confirmed { esp_id } = outcome else {
                        unreachable!("Done is decided for Confirmed only")
                    };
                    self.count("tributary_sync_confirmed_total");
                    let freshness = (now - pending.first_change_ms).max(0) as f64 / 1000.0;
                    metrics::histogram!("tributary_sync_freshness_seconds", "destination" => self.name().to_owned())
                        .record(freshness);
                    settlements.push(Settlement::Confirmed {
                        profile: pending.profile,
                        claimed_seq: pending.seq,
                        confirmed: Confirmed {
                            esp_id,
                            digests,
                            subscribed,
                            confirmed_at_ms: now,
                        },
                        prepared_at_ms,
                    });
                }
                Decision::Retry { at_ms, class } => {
                    self.count_class("tributary_sync_retried_total", class);
                    settlements.push(Settlement::Retry {
                        profile: pending.profile,
                        attempts: pending.attempts + 1,
                        next_at_ms: at_ms,
                        first_failed_ms: pending.first_failed_ms.unwrap_or(now),
                    });
                }
                Decision::Dead { class, detail } => {
                    self.count_class("tributary_sync_dead_lettered_total", class);
                    tracing::warn!(
                        destination = self.name(),
                        class = class.as_str(),
                        "record dead-lettered"
                    );
                    settlements.push(Settlement::Dead {
                        profile: pending.profile,
                        class: class.as_str().to_owned(),
                        detail,
                        attempts: pending.attempts + 1,
                        first_failed_ms: pending.first_failed_ms.unwrap_or(now),
                    });
                }
            }
        }
        let name = self.name().to_owned();
        self.blocking(move |s| s.settle_outcomes(&name, settlements, now))
            .await?;
        Ok(())
    }

    /// What the circuit allows now.
    fn gate(&self) -> Gate {
        self.breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .gate(tokio::time::Instant::now())
    }

    /// Feeds one call's result to the circuit, and reports it opening and closing.
    fn observe<T>(&self, result: &Result<T, CallError>) {
        let failure = result.as_ref().err().map(|error| error.class);
        let mut breaker = self
            .breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let was_open = breaker.is_open();
        let had_tripped = breaker.has_tripped();
        let opened = breaker.record(failure, tokio::time::Instant::now());
        drop(breaker);
        let label = self.name().to_owned();
        if opened {
            if !had_tripped {
                tracing::warn!(
                    destination = self.name(),
                    class = failure.map_or("", ErrorClass::as_str),
                    "destination answers no call: circuit open, records wait pending"
                );
                metrics::counter!("tributary_sync_circuit_trips_total", "destination" => label.clone())
                    .increment(1);
            }
            metrics::gauge!("tributary_sync_circuit_open", "destination" => label).set(1.0);
        } else if was_open && failure.is_none() {
            if had_tripped {
                tracing::info!(
                    destination = self.name(),
                    "destination answers again: circuit closed"
                );
            }
            metrics::gauge!("tributary_sync_circuit_open", "destination" => label).set(0.0);
        }
    }

    /// What to do with one record's outcome.
    fn decide(
        &self,
        outcome: &ItemOutcome,
        attempts: u32,
        first_failed_ms: Option<i64>,
        retry_after: Option<Duration>,
    ) -> Decision {
        let (class, detail) = match outcome {
            ItemOutcome::Confirmed { .. } => return Decision::Done,
            ItemOutcome::NotApplied { detail } => {
                (ErrorClass::Transient, format!("not applied: {detail}"))
            }
            ItemOutcome::Failed { class, detail } => (*class, detail.clone()),
        };
        self.count_class("tributary_sync_failed_total", class);
        let now = now_ms();
        let first = first_failed_ms.unwrap_or(now);
        let window = self.destination.config.retry_window.as_millis() as i64;
        if !class.is_retryable() || now - first >= window {
            return Decision::Dead { class, detail };
        }
        let at_ms = now
            + backoff(self.destination.config.retry_base, attempts, retry_after).as_millis() as i64;
        Decision::Retry { at_ms, class }
    }

    /// Carries out a resync asked for with [`SyncState::request_resync`], between rounds (no
    /// batch of this worker is in flight, so no confirmation can restore what the reset
    /// forgot): every confirmed record forgets its field digests (each mapped field counts as
    /// changed, and one the profile lacks is cleared), then the reconcile enqueues every
    /// profile. The request is taken only once the reconcile has succeeded.
    async fn resync_if_asked(&self) -> Result<(), EngineError> {
        let name = self.name().to_owned();
        let Some(asked) = self.blocking(move |s| s.resync_requested(&name)).await? else {
            return Ok(());
        };
        tracing::info!(
            destination = self.name(),
            "resync: every profile is sent again"
        );
        let name = self.name().to_owned();
        let fields: Vec<String> = self
            .destination
            .config
            .fields
            .iter()
            .map(|(field, _)| field.clone())
            .collect();
        let reset = self
            .blocking(move |s| s.forget_confirmed_fields(&name, &fields))
            .await?;
        metrics::counter!("tributary_sync_resync_reset_total", "destination" => self.name().to_owned())
            .increment(reset as u64);
        self.reconcile().await?;
        let name = self.name().to_owned();
        self.blocking(move |s| s.resync_done(&name, asked)).await?;
        Ok(())
    }

    /// A profile that is re-enqueued by the scheduled reconcile.
    async fn reconcile(&self) -> Result<(), EngineError> {
        let mut after = 0;
        loop {
            let store = self.store.clone();
            let page = self.options.feed_page;
            let changes =
                tokio::task::spawn_blocking(move || store.changes(None, after, page)).await??;
            let Some(last) = changes.last().map(|c| c.seq) else {
                return Ok(());
            };
            after = last;
            let enqueue: Vec<_> = changes
                .iter()
                .filter(|c| c.kind == ChangeKind::Upserted)
                .map(|c| (c.id, c.seq, now_ms()))
                .collect();
            let name = self.name().to_owned();
            self.blocking(move |s| s.enqueue(&name, &enqueue, None, now_ms()))
                .await?;
        }
    }

    async fn publish_counts(&self) -> Result<(), EngineError> {
        let name = self.name().to_owned();
        let counts = self.blocking(move |s| s.counts(&name)).await?;
        let label = self.name().to_owned();
        metrics::gauge!("tributary_sync_pending", "destination" => label.clone())
            .set(counts.pending as f64);
        metrics::gauge!("tributary_sync_dead_letters", "destination" => label)
            .set(counts.dead_letters as f64);
        Ok(())
    }

    /// Records that these profiles' data is about to leave for (or be deleted at) the
    /// destination. `Err` when the audit log cannot make it durable: then nothing is sent.
    async fn audit(
        &self,
        resource: &'static str,
        action: trib_audit::Action,
        profiles: impl Iterator<Item = ProfileId>,
    ) -> Result<(), EngineError> {
        let Some(log) = &self.options.audit else {
            return Ok(());
        };
        let actor = trib_audit::Actor::destination(self.name())
            .map_err(|e| EngineError::Audit(e.to_string()))?;
        let purpose = trib_audit::Purpose::new(&self.destination.config.purpose)
            .map_err(|e| EngineError::Audit(e.to_string()))?;
        let records: Vec<trib_audit::AuditRecord> = profiles
            .map(|profile| trib_audit::AuditRecord {
                actor: actor.clone(),
                action,
                purpose: purpose.clone(),
                resource: trib_audit::Resource::new(resource),
                subject: Some(trib_audit::ProfileRef::profile(profile)),
                outcome: trib_audit::Outcome::Ok,
            })
            .collect();
        if records.is_empty() {
            return Ok(());
        }
        log.append(records)
            .await
            .map_err(|e| EngineError::Audit(e.to_string()))?;
        Ok(())
    }

    fn skip(&self, reason: &str) {
        metrics::counter!("tributary_sync_skipped_total", "destination" => self.name().to_owned(), "reason" => reason.to_owned())
            .increment(1);
    }

    fn count(&self, metric: &'static str) {
        metrics::counter!(metric, "destination" => self.name().to_owned()).increment(1);
    }

    fn count_class(&self, metric: &'static str, class: ErrorClass) {
        metrics::counter!(metric, "destination" => self.name().to_owned(), "class" => class.as_str())
            .increment(1);
    }
}

enum Decision {
    Done,
    Retry { at_ms: i64, class: ErrorClass },
    Dead { class: ErrorClass, detail: String },
}

/// One outcome per record: the connector's, or the call's error for every record.
fn outcomes_for(
    len: usize,
    result: Result<Vec<ItemOutcome>, CallError>,
) -> Vec<(ItemOutcome, Option<Duration>)> {
    match result {
        Ok(outcomes) if outcomes.len() == len => outcomes.into_iter().map(|o| (o, None)).collect(),
        Ok(outcomes) => {
            let detail = format!(
                "connector answered {} outcomes for {len} records",
                outcomes.len()
            );
            (0..len)
                .map(|_| {
                    (
                        ItemOutcome::Failed {
                            class: ErrorClass::Transient,
                            detail: detail.clone(),
                        },
                        None,
                    )
                })
                .collect()
        }
        Err(error) => (0..len)
            .map(|_| {
                (
                    ItemOutcome::Failed {
                        class: error.class,
                        detail: error.to_string(),
                    },
                    error.retry_after,
                )
            })
            .collect(),
    }
}

/// Exponential backoff with full jitter: a random delay in `[base·2ⁿ/2, base·2ⁿ]`, capped,
/// and never sooner than the ESP asked.
pub fn backoff(base: Duration, attempts: u32, retry_after: Option<Duration>) -> Duration {
    let ceiling = base
        .saturating_mul(1u32 << attempts.min(16))
        .min(MAX_BACKOFF);
    let millis = ceiling.as_millis() as u64;
    let jittered = Duration::from_millis(rand::rng().random_range(millis / 2..=millis.max(1)));
    retry_after.map_or(jittered, |after| jittered.max(after))
}
