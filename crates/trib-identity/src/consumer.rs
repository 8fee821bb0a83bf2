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
use trib_log::EventLog;
use trib_store::{ConsumerOffsets, EventRef, ProfileId, ProfileStore};

use crate::engine::{Engine, EngineError, Exclusion, LogEvent, MatchReport, UnmergeReport};

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
    Match {
        reply: oneshot::Sender<Result<MatchReport, EngineError>>,
    },
    Decide {
        item: u64,
        merge: bool,
        reply: oneshot::Sender<Result<bool, EngineError>>,
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
    pub fn spawn<S: ProfileStore>(
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

fn run<S: ProfileStore>(
    mut engine: Engine<S>,
    log: Arc<dyn EventLog>,
    mut next: Vec<u64>,
    options: ConsumerOptions,
    runtime: Handle,
    commands: mpsc::Receiver<Command>,
    progress: watch::Sender<Vec<u64>>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut idle = false;
    // Applied but not yet committed: how many events, since when.
    let mut uncommitted = 0usize;
    let mut since: Option<Instant> = None;
    // The offsets the store holds: where to restart after a failure.
    let mut committed = next.clone();
    loop {
        let command = if idle {
            match commands.recv_timeout(options.idle_wait) {
                Ok(command) => Some(command),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match commands.try_recv() {
                Ok(command) => Some(command),
                Err(mpsc::TryRecvError::Empty) => None,
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        };
        if command.is_some() && uncommitted > 0 {
            // Commands see (and an unmerge rebuilds from) committed state only.
            if commit(&mut engine, &next, &progress).is_ok() {
                committed.clone_from(&next);
            } else {
                // The command still runs, on the committed state.
                recover(&mut engine, &committed, &mut next, &mut backoff);
            }
            uncommitted = 0;
            since = None;
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
            Some(Command::Match { reply }) => {
                let _ = reply.send(engine.match_profiles());
                continue;
            }
            Some(Command::Decide { item, merge, reply }) => {
                let _ = reply.send(engine.decide_review(item, merge));
                continue;
            }
            None => {}
        }

        let mut events = Vec::new();
        let mut new_next = next.clone();
        let mut read_failed = false;
        for (partition, from) in next.iter().enumerate() {
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
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        }
        let count = events.len();
        if count > 0 {
            if let Err(error) = engine.apply(&events) {
                metrics::counter!("tributary_identity_errors_total").increment(1);
                tracing::warn!(%error, "identity: a round failed; retrying from the committed offsets");
                recover(&mut engine, &committed, &mut next, &mut backoff);
                uncommitted = 0;
                since = None;
                continue;
            }
            next = new_next;
            uncommitted += count;
            since.get_or_insert_with(Instant::now);
            metrics::counter!("tributary_identity_events_total").increment(count as u64);
        }
        let due = uncommitted >= options.commit_events
            || since.is_some_and(|t| t.elapsed() >= options.commit_interval)
            || (count == 0 && uncommitted > 0);
        if due {
            match commit(&mut engine, &next, &progress) {
                Ok(()) => {
                    backoff = Duration::from_millis(50);
                    committed.clone_from(&next);
                }
                Err(error) => {
                    metrics::counter!("tributary_identity_errors_total").increment(1);
                    tracing::warn!(%error, "identity: a commit failed; retrying from the committed offsets");
                    recover(&mut engine, &committed, &mut next, &mut backoff);
                }
            }
            uncommitted = 0;
            since = None;
        }
        idle = count == 0;
    }
}

/// Commits what was applied, with every partition's next offset, and publishes the progress.
fn commit<S: ProfileStore>(
    engine: &mut Engine<S>,
    next: &[u64],
    progress: &watch::Sender<Vec<u64>>,
) -> Result<(), EngineError> {
    let offsets = ConsumerOffsets {
        consumer: CONSUMER_NAME.to_owned(),
        offsets: next
            .iter()
            .enumerate()
            .map(|(p, n)| (p as u32, *n))
            .collect(),
    };
    engine.commit(Some(offsets))?;
    progress.send_replace(next.to_vec());
    Ok(())
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
