//! The identity consumer: reads the event log in real time and drives the [`Engine`].
//!
//! It runs on a thread of its own (the engine is CPU work over a blocking store), reads every
//! partition from the offsets committed *in the profile store* (not in the log: the offsets
//! and the state they produced are written in one store transaction, so after a crash the
//! consumer resumes exactly where its state ends), and takes a round of up to
//! `max_records_per_partition` records from each partition in partition order. For a given
//! log, the rounds after a restart are the rounds an uninterrupted run would have made from
//! the same committed point, so the result is the same.
//!
//! Unmerges are commands to the same thread, run between rounds, so they never race with
//! event processing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};
use trib_core::retention::TraitRetention;
use trib_log::EventLog;
use trib_store::{ChangeBatch, ConsumerOffsets, EventRef, ProfileId, ProfileStore, StoreError};

use crate::engine::{
    Engine, EngineError, ErasureReport, Exclusion, LogEvent, MatchReport, TraitExpiryReport,
    UnmergeReport,
};

/// The consumer name under which offsets are committed in the profile store.
pub const CONSUMER_NAME: &str = "identity";

/// How the consumer reads the log.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// The most records read from one partition per round (one store transaction).
    pub max_records_per_partition: usize,
    /// How long to wait when there is nothing new.
    pub idle_wait: Duration,
    /// Commit (one store transaction) once this many events were applied since the last
    /// commit...
    pub commit_events: usize,
    /// ...or this long after the first uncommitted one, or when the log has nothing new.
    pub commit_interval: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            max_records_per_partition: 2_000,
            idle_wait: Duration::from_millis(20),
            commit_events: 100_000,
            commit_interval: Duration::from_millis(250),
        }
    }
}

enum Command {
    Unmerge {
        profile: ProfileId,
        exclusion: Exclusion,
        reply: oneshot::Sender<Result<UnmergeReport, EngineError>>,
    },
    Erase {
        profile: ProfileId,
        reply: oneshot::Sender<Result<ErasureReport, EngineError>>,
    },
    Match {
        reply: oneshot::Sender<Result<MatchReport, EngineError>>,
    },
    Decide {
        item: u64,
        merge: bool,
        reply: oneshot::Sender<Result<bool, EngineError>>,
    },
    ExpireTraits {
        now_ms: i64,
        policy: Arc<TraitRetention>,
        reply: oneshot::Sender<Result<TraitExpiryReport, EngineError>>,
    },
    Stop,
}

/// A running identity consumer.
pub struct IdentityConsumer {
    commands: mpsc::Sender<Command>,
    progress: watch::Receiver<Vec<u64>>,
    log: Arc<dyn EventLog>,
    thread: Option<JoinHandle<()>>,
}

impl IdentityConsumer {
    /// Starts the consumer thread. `runtime` is used to read the (async) log.
    pub fn spawn<S: ProfileStore + Clone>(
        log: Arc<dyn EventLog>,
        engine: Engine<S>,
        options: ConsumerOptions,
        runtime: Handle,
    ) -> Result<Self, EngineError> {
        let partitions = log.partition_count();
        let committed: BTreeMap<u32, u64> = engine
            .store()
            .consumer_offsets(CONSUMER_NAME)?
            .into_iter()
            .collect();
        let next: Vec<u64> = (0..partitions)
            .map(|p| committed.get(&p).copied().unwrap_or(0))
            .collect();
        let (progress_tx, progress) = watch::channel(next.clone());
        let (commands, receiver) = mpsc::channel();
        let thread_log = log.clone();
        let thread = std::thread::Builder::new()
            .name("identity".into())
            .spawn(move || {
                run(
                    engine,
                    thread_log,
                    next,
                    options,
                    runtime,
                    receiver,
                    progress_tx,
                );
            })
            .map_err(|e| EngineError::Invalid(format!("cannot start the identity thread: {e}")))?;
        Ok(Self {
            commands,
            progress,
            log,
            thread: Some(thread),
        })
    }

    /// Waits until every event appended before this call has been applied.
    pub async fn caught_up(&self) -> Result<(), EngineError> {
        let mut ends = Vec::new();
        for partition in 0..self.log.partition_count() {
            let end = self
                .log
                .end_offset(partition)
                .await
                .map_err(|e| EngineError::Invalid(e.to_string()))?;
            ends.push(end);
        }
        let mut progress = self.progress.clone();
        progress
            .wait_for(|next| next.iter().zip(&ends).all(|(n, e)| n >= e))
            .await
            .map_err(|_| EngineError::Invalid("the identity consumer stopped".into()))?;
        Ok(())
    }

    /// The next offset per partition that the consumer will read.
    pub fn position(&self) -> Vec<u64> {
        self.progress.borrow().clone()
    }

    /// Runs an unmerge on the consumer's thread, between rounds.
    pub async fn unmerge(
        &self,
        profile: ProfileId,
        exclusion: Exclusion,
    ) -> Result<UnmergeReport, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Unmerge {
                profile,
                exclusion,
                reply,
            })
            .map_err(|_| EngineError::Invalid("the identity consumer stopped".into()))?;
        answer
            .await
            .map_err(|_| EngineError::Invalid("the identity consumer stopped".into()))?
    }

    /// Erases a profile on the consumer's thread (see [`Engine::erase`]); the batch is written
    /// before this returns.
    pub async fn erase(&self, profile: ProfileId) -> Result<ErasureReport, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Erase { profile, reply })
            .map_err(|_| EngineError::Invalid("the identity consumer stopped".into()))?;
        answer
            .await
            .map_err(|_| EngineError::Invalid("the identity consumer stopped".into()))?
    }

    /// Runs probabilistic matching over the stored profiles on the consumer's thread.
    pub async fn match_profiles(&self) -> Result<MatchReport, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Match { reply })
            .map_err(|_| EngineError::Invalid("the identity consumer stopped".into()))?;
        answer
            .await
            .map_err(|_| EngineError::Invalid("the identity consumer stopped".into()))?
    }

    /// Decides a review item on the consumer's thread; returns whether the profiles merged.
    pub async fn decide_review(&self, item: u64, merge: bool) -> Result<bool, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Decide { item, merge, reply })
            .map_err(|_| EngineError::Invalid("the identity consumer stopped".into()))?;
        answer
            .await
            .map_err(|_| EngineError::Invalid("the identity consumer stopped".into()))?
    }

    /// Drops trait observations older than their class's TTL on the consumer's thread (see
    /// [`Engine::expire_traits`]); the changed profiles are written before this returns.
    pub async fn expire_traits(
        &self,
        now_ms: i64,
        policy: Arc<TraitRetention>,
    ) -> Result<TraitExpiryReport, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::ExpireTraits {
                now_ms,
                policy,
                reply,
            })
            .map_err(|_| EngineError::Invalid("the identity consumer stopped".into()))?;
        answer
            .await
            .map_err(|_| EngineError::Invalid("the identity consumer stopped".into()))?
    }

    /// Stops after the current round and waits for the thread.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for IdentityConsumer {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

fn read_one(log: &dyn EventLog, runtime: &Handle, at: EventRef) -> Result<Bytes, EngineError> {
    let records = runtime
        .block_on(log.read(at.partition, at.offset, 1))
        .map_err(|e| EngineError::Log {
            partition: at.partition,
            offset: at.offset,
            reason: e.to_string(),
        })?;
    match records.into_iter().next() {
        Some(record) if record.offset == at.offset => Ok(record.payload),
        _ => Err(EngineError::Log {
            partition: at.partition,
            offset: at.offset,
            reason: "no such record".into(),
        }),
    }
}

/// The store writer: applies batches on a thread of its own, in order, so that SQLite's or
/// PostgreSQL's commit work overlaps the engine's next rounds. After a failed batch it refuses
/// every later one until reset, so the store never holds a batch whose predecessor is missing.
struct Writer {
    batches: Option<mpsc::SyncSender<WriterMessage>>,
    results: mpsc::Receiver<Result<Vec<u64>, StoreError>>,
    in_flight: usize,
    thread: Option<JoinHandle<()>>,
}

enum WriterMessage {
    Batch(Box<ChangeBatch>, Vec<u64>),
    Reset,
}

impl Writer {
    fn spawn<S: ProfileStore>(store: S) -> Result<Self, EngineError> {
        // One batch queued behind the one being written: at most two in memory.
        let (batches, inbox) = mpsc::sync_channel::<WriterMessage>(1);
        let (outbox, results) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("identity-writer".into())
            .spawn(move || {
                let mut failed = false;
                for message in inbox {
                    match message {
                        WriterMessage::Reset => failed = false,
                        WriterMessage::Batch(batch, next) => {
                            let result = if failed {
                                Err(StoreError::Backend("an earlier batch failed".into()))
                            } else if batch.is_empty() {
                                Ok(next)
                            } else {
                                store.apply(&batch).map(|()| next)
                            };
                            failed = result.is_err();
                            if outbox.send(result).is_err() {
                                return;
                            }
                        }
                    }
                }
            })
            .map_err(|e| EngineError::Invalid(format!("cannot start the identity writer: {e}")))?;
        Ok(Self {
            batches: Some(batches),
            results,
            in_flight: 0,
            thread: Some(thread),
        })
    }

    fn submit(&mut self, batch: ChangeBatch, next: Vec<u64>) -> Result<(), EngineError> {
        let sender = self
            .batches
            .as_ref()
            .ok_or_else(|| EngineError::Invalid("the identity writer stopped".into()))?;
        sender
            .send(WriterMessage::Batch(Box::new(batch), next))
            .map_err(|_| EngineError::Invalid("the identity writer stopped".into()))?;
        self.in_flight += 1;
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(sender) = &self.batches {
            let _ = sender.send(WriterMessage::Reset);
        }
    }

    /// Collects finished batches (waiting for all of them when `wait`): the offsets of the
    /// last one written, and the first failure.
    fn collect(&mut self, wait: bool) -> (Option<Vec<u64>>, Option<StoreError>) {
        let mut written = None;
        let mut failure = None;
        while self.in_flight > 0 {
            let result = if wait {
                match self.results.recv() {
                    Ok(result) => result,
                    Err(_) => Err(StoreError::Backend("the identity writer stopped".into())),
                }
            } else {
                match self.results.try_recv() {
                    Ok(result) => result,
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        Err(StoreError::Backend("the identity writer stopped".into()))
                    }
                }
            };
            self.in_flight -= 1;
            match result {
                Ok(next) => written = Some(next),
                Err(error) => {
                    failure.get_or_insert(error);
                }
            }
        }
        (written, failure)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.batches = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The consumer loop's state besides the engine.
struct Loop<'a> {
    writer: Writer,
    progress: &'a watch::Sender<Vec<u64>>,
    /// The next offsets the store holds (written batches only).
    committed: Vec<u64>,
    /// The next offsets to read (applied in memory, maybe not written yet).
    next: Vec<u64>,
    uncommitted: usize,
    since: Option<Instant>,
    backoff: Duration,
}

impl Loop<'_> {
    /// Hands what was applied to the writer, with the offsets it brings the store to.
    fn commit<S: ProfileStore>(&mut self, engine: &mut Engine<S>) -> Result<(), EngineError> {
        let offsets = ConsumerOffsets {
            consumer: CONSUMER_NAME.to_owned(),
            offsets: self
                .next
                .iter()
                .enumerate()
                .map(|(p, n)| (p as u32, *n))
                .collect(),
        };
        let batch = engine.take_batch(Some(offsets))?;
        // Lets the store start on it (a sealed store creates its data keys) while the writer
        // may still be applying the batch before.
        engine.store().prepare(&batch);
        self.writer.submit(batch, self.next.clone())?;
        self.uncommitted = 0;
        self.since = None;
        Ok(())
    }

    /// Takes in the writer's results; after a failure, rewinds to what the store holds.
    fn settle<S: ProfileStore>(&mut self, engine: &mut Engine<S>, wait: bool) {
        let (written, failure) = self.writer.collect(wait);
        if let Some(next) = written {
            self.committed = next;
            self.progress.send_replace(self.committed.clone());
        }
        if let Some(error) = failure {
            metrics::counter!("tributary_identity_errors_total").increment(1);
            tracing::warn!(%error, "identity: a commit failed; retrying from the committed offsets");
            // Batches taken after the failed one are refused by the writer; wait for them.
            let _ = self.writer.collect(true);
            self.writer.reset();
            self.rewind(engine);
        } else if self.writer.in_flight == 0 {
            engine.evict_if_over_limit();
        }
    }

    /// Forgets everything not written and goes back to the offsets the store holds.
    fn rewind<S: ProfileStore>(&mut self, engine: &mut Engine<S>) {
        engine.reset();
        self.uncommitted = 0;
        self.since = None;
        recover(engine, &self.committed, &mut self.next, &mut self.backoff);
        self.committed.clone_from(&self.next);
    }
}

fn run<S: ProfileStore + Clone>(
    mut engine: Engine<S>,
    log: Arc<dyn EventLog>,
    next: Vec<u64>,
    options: ConsumerOptions,
    runtime: Handle,
    commands: mpsc::Receiver<Command>,
    progress: watch::Sender<Vec<u64>>,
) {
    let writer = match Writer::spawn(engine.store().clone()) {
        Ok(writer) => writer,
        Err(error) => {
            tracing::error!(%error, "identity: cannot start");
            return;
        }
    };
    let mut state = Loop {
        writer,
        progress: &progress,
        committed: next.clone(),
        next,
        uncommitted: 0,
        since: None,
        backoff: Duration::from_millis(50),
    };
    let mut idle = false;
    loop {
        let command = if idle {
            match commands.recv_timeout(options.idle_wait) {
                Ok(command) => Some(command),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => Some(Command::Stop),
            }
        } else {
            match commands.try_recv() {
                Ok(command) => Some(command),
                Err(mpsc::TryRecvError::Empty) => None,
                Err(mpsc::TryRecvError::Disconnected) => Some(Command::Stop),
            }
        };
        if command.is_some() {
            // Commands see (and an unmerge rebuilds from) written state, and write
            // synchronously: first everything applied is handed over and written.
            if state.uncommitted > 0
                && let Err(error) = state.commit(&mut engine)
            {
                tracing::warn!(%error, "identity: cannot hand a batch to the writer");
                state.rewind(&mut engine);
            }
            state.settle(&mut engine, true);
        }
        match command {
            Some(Command::Stop) => return,
            Some(Command::Unmerge {
                profile,
                exclusion,
                reply,
            }) => {
                let result = engine.unmerge(profile, exclusion, |at| read_one(&*log, &runtime, at));
                let _ = reply.send(result);
                continue;
            }
            Some(Command::Erase { profile, reply }) => {
                let result = engine.erase(profile, |at| read_one(&*log, &runtime, at));
                let _ = reply.send(result);
                continue;
            }
            Some(Command::Match { reply }) => {
                let _ = reply.send(engine.match_profiles());
                continue;
            }
            Some(Command::Decide { item, merge, reply }) => {
                let _ = reply.send(engine.decide_review(item, merge));
                continue;
            }
            Some(Command::ExpireTraits {
                now_ms,
                policy,
                reply,
            }) => {
                let _ = reply.send(engine.expire_traits(now_ms, &policy));
                continue;
            }
            None => {}
        }

        let mut events = Vec::new();
        let mut new_next = state.next.clone();
        let mut read_failed = false;
        for (partition, from) in state.next.iter().enumerate() {
            let partition = partition as u32;
            match runtime.block_on(log.read(partition, *from, options.max_records_per_partition)) {
                Ok(records) => {
                    if let Some(last) = records.last() {
                        new_next[partition as usize] = last.offset + 1;
                    }
                    events.extend(records.into_iter().map(|r| LogEvent {
                        at: EventRef {
                            partition: r.partition,
                            offset: r.offset,
                        },
                        payload: r.payload,
                    }));
                }
                Err(error) => {
                    tracing::warn!(partition, %error, "identity: cannot read the event log");
                    read_failed = true;
                    break;
                }
            }
        }
        if read_failed {
            std::thread::sleep(state.backoff);
            state.backoff = (state.backoff * 2).min(Duration::from_secs(5));
            continue;
        }
        let count = events.len();
        // What is left to read after this round: 0 when it read nothing (caught up).
        let behind = if count == 0 {
            Some(0)
        } else {
            (0..log.partition_count())
                .map(|partition| runtime.block_on(log.end_offset(partition)).ok())
                .collect::<Option<Vec<u64>>>()
                .map(|ends| lag(&ends, &new_next))
        };
        if let Some(behind) = behind {
            metrics::gauge!("tributary_identity_lag_events").set(behind as f64);
        }
        if count > 0 {
            if let Err(error) = engine.apply(&events) {
                metrics::counter!("tributary_identity_errors_total").increment(1);
                tracing::warn!(%error, "identity: a round failed; retrying from the committed offsets");
                state.settle(&mut engine, true);
                state.rewind(&mut engine);
                continue;
            }
            state.next = new_next;
            state.uncommitted += count;
            state.since.get_or_insert_with(Instant::now);
            metrics::counter!("tributary_identity_events_total").increment(count as u64);
        }
        let due = state.uncommitted >= options.commit_events
            || state
                .since
                .is_some_and(|t| t.elapsed() >= options.commit_interval)
            || (count == 0 && state.uncommitted > 0);
        if due && let Err(error) = state.commit(&mut engine) {
            tracing::warn!(%error, "identity: cannot hand a batch to the writer");
            state.settle(&mut engine, true);
            state.rewind(&mut engine);
            continue;
        }
        // Wait for the writer only when idle; otherwise take in what it has finished.
        state.settle(&mut engine, count == 0);
        if state.writer.in_flight == 0 {
            state.backoff = Duration::from_millis(50);
        }
        idle = count == 0;
    }
}

/// Events appended to the log (`ends`, per partition) that a reader at `next` has not read.
fn lag(ends: &[u64], next: &[u64]) -> u64 {
    ends.iter()
        .zip(next)
        .map(|(end, next)| end.saturating_sub(*next))
        .sum()
}

/// After a failure (the engine dropped its caches and pending work): waits, then rereads the
/// committed offsets so the next round starts where the stored state ends.
fn recover<S: ProfileStore>(
    engine: &mut Engine<S>,
    committed: &[u64],
    next: &mut [u64],
    backoff: &mut Duration,
) {
    next.copy_from_slice(committed);
    std::thread::sleep(*backoff);
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
    match engine.store().consumer_offsets(CONSUMER_NAME) {
        Ok(committed) => {
            let committed: BTreeMap<u32, u64> = committed.into_iter().collect();
            for (p, n) in next.iter_mut().enumerate() {
                *n = committed.get(&(p as u32)).copied().unwrap_or(0);
            }
        }
        Err(error) => {
            tracing::warn!(%error, "identity: cannot read committed offsets");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lag_counts_what_is_left_in_every_partition_and_never_goes_negative() {
        assert_eq!(super::lag(&[10, 5, 0], &[4, 5, 0]), 6);
        // An end read before the reader's position (a stale end) counts as nothing left.
        assert_eq!(super::lag(&[3, 9], &[7, 1]), 8);
    }
}
