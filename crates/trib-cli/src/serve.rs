//! `tributary serve`, and the [`Server`] that `demo` runs too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use trib_audit::AuditLog;
use trib_config::{Config, LogStorage, RetentionConfig, StoreConfig};
use trib_consent::{ConsentConsumer, ConsentReader, Ledger};
use trib_identity::consumer::{ConsumerOptions, IdentityConsumer};
use trib_identity::{Engine, Keyer};
use trib_log::{
    Compactable, Durability, EmbeddedLog, EmbeddedLogOptions, EventLog, MemoryLog, MemoryLogOptions,
};
use trib_store::ProfileStore;

/// Arguments of `tributary serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The configuration file. Without one, a source named `default` runs on the data directory,
    /// with keys from TRIBUTARY_WRITE_KEY and TRIBUTARY_ADMIN_KEY or generated once and stored.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Where the embedded store keeps its data (overrides `server.data_dir`).
    #[arg(long, env = "TRIBUTARY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The address to listen on (overrides `server.listen`).
    #[arg(long, env = "TRIBUTARY_LISTEN")]
    listen: Option<SocketAddr>,
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(
        args.config.as_deref(),
        args.data_dir.as_deref(),
        args.listen,
    )?;
    let metrics =
        trib_api::install_metrics_recorder().context("failed to install the metrics recorder")?;
    let server = Server::start(&config, Some(metrics)).await?;
    tracing::info!(
        address = %server.addr(),
        data_dir = %config.server.data_dir.display(),
        n_sources = config.sources.len(),
        "tributary is listening"
    );
    shutdown_signal().await;
    tracing::info!("shutting down: finishing requests and flushing the event log");
    server.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Loads the configuration file, or the no-file defaults, and applies the command-line overrides.
pub(crate) fn load_config(
    config_file: Option<&Path>,
    data_dir_flag: Option<&Path>,
    listen_flag: Option<SocketAddr>,
) -> anyhow::Result<Config> {
    let env = |name: &str| std::env::var(name).ok();
    let mut config = match config_file {
        Some(path) => Config::load(path)?,
        None => {
            let data_dir = data_dir_flag
                .map(Path::to_path_buf)
                .unwrap_or_else(|| trib_config::ServerConfig::default().data_dir);
            let (config, generated) = Config::default_for(&data_dir, &env)?;
            for key in generated {
                println!(
                    "generated {}: {} (stored in {})",
                    key.name,
                    key.value.expose(),
                    key.file.display()
                );
            }
            config
        }
    };
    if let Some(data_dir) = data_dir_flag {
        config.server.data_dir = data_dir.to_path_buf();
    }
    if let Some(listen) = listen_flag {
        config.server.listen = listen;
    }
    Ok(config)
}

/// A running API server and the logs it owns.
pub(crate) struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
    events: Arc<dyn EventLog>,
    quarantine: Arc<dyn EventLog>,
    resolutions: Arc<dyn EventLog>,
    profiles: Arc<dyn ProfileStore>,
    identity: Arc<IdentityConsumer>,
    audit: Arc<AuditLog>,
    consent: ConsentConsumer,
    /// The background retention purge, when `[retention]` sets a TTL.
    retention: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    /// The sync engine, when `[[destinations]]` are configured.
    sync: Option<trib_sync::SyncEngine>,
}

impl Server {
    /// Opens the logs, binds the listener and starts serving.
    pub(crate) async fn start(
        config: &Config,
        metrics: Option<PrometheusHandle>,
    ) -> anyhow::Result<Server> {
        let at_rest = if std::env::var_os(UNENCRYPTED_BENCHMARK_ENV).is_some() {
            tracing::warn!(
                "{UNENCRYPTED_BENCHMARK_ENV} is set: personal data is stored UNENCRYPTED (for measuring the cost of encryption only)"
            );
            None
        } else {
            Some(open_at_rest(&config.server.data_dir)?)
        };
        let (mut events, compactor) = open_compactable_log(
            config,
            &config.server.data_dir.join("events"),
            config.log.partitions,
        )?;
        let mut quarantine = open_log(config, &config.server.data_dir.join("quarantine"), 1)?;
        let mut profiles = open_store(config)?;
        if let Some(at_rest) = &at_rest {
            events = at_rest.seal_log(
                events,
                "events",
                Some(trib_identity::extract::grants_consent),
            );
            quarantine = at_rest.seal_log(quarantine, "quarantine", None);
            profiles = at_rest.seal_store(profiles);
        }
        // Emails of erased people that a destination must still find by email wait sealed
        // under a queue key of the key store (none without encryption at rest).
        let email_sealer: Option<Arc<dyn trib_sync::EmailSealer>> =
            at_rest.as_ref().map(|at_rest| {
                Arc::new(trib_api::QueuedEmails(
                    at_rest.queue_sealer(trib_api::QueuedEmails::QUEUE),
                )) as Arc<dyn trib_sync::EmailSealer>
            });
        let registry = trib_schema::Registry::open(&config.schemas_dir).with_context(|| {
            format!(
                "failed to load the schema registry in {}",
                config.schemas_dir.display()
            )
        })?;
        let registry = Arc::new(std::sync::RwLock::new(registry));
        let resolutions = open_log(
            config,
            &config.server.data_dir.join("quarantine-resolutions"),
            1,
        )?;
        let logs = trib_api::Logs {
            events: events.clone(),
            quarantine: quarantine.clone(),
            resolutions: resolutions.clone(),
        };
        let keyer = Keyer::load_or_create(&config.server.data_dir)?;
        let rules = Arc::new(config.identity.clone());
        // The store is blocking (PostgreSQL's client runs a runtime of its own, which cannot
        // be entered from an async task): set identity resolution up on a blocking thread.
        let identity = {
            let (store, rules, keyer, events) = (
                profiles.clone(),
                rules.clone(),
                keyer.clone(),
                events.clone(),
            );
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || -> anyhow::Result<IdentityConsumer> {
                let engine = Engine::new(store, rules, keyer)
                    .context("failed to start identity resolution")?;
                Ok(IdentityConsumer::spawn(
                    events,
                    engine,
                    ConsumerOptions::default(),
                    runtime,
                )?)
            })
            .await
            .context("the identity setup task failed")??
        };
        let identity = Arc::new(identity);
        let audit = Arc::new(
            AuditLog::open_in_data_dir(&config.server.data_dir).with_context(|| {
                format!(
                    "failed to open the audit log in {}",
                    config.server.data_dir.join(trib_audit::AUDIT_DIR).display()
                )
            })?,
        );
        // The consent ledger beside the identity consumer: it reads the same event log, keys
        // consent by the same identifier keys, and commits its offsets in consent.db.
        let privacy_rules = Arc::new(config.privacy.clone());
        let ledger = {
            let data_dir = config.server.data_dir.clone();
            tokio::task::spawn_blocking(move || Ledger::open_in(&data_dir))
                .await
                .context("the consent ledger task failed")?
                .context("failed to open the consent ledger")?
        };
        let ledger = Arc::new(ledger);
        let consent = ConsentConsumer::spawn(
            events.clone(),
            ledger.clone(),
            ConsentReader::new(keyer.clone(), rules.clone(), privacy_rules.clone()),
            trib_consent::ConsumerOptions::default(),
            tokio::runtime::Handle::current(),
        )
        .context("failed to start the consent consumer")?;
        // What the sync engine owes each destination and what each ESP confirmed.
        let sync_state = {
            let data_dir = config.server.data_dir.clone();
            Arc::new(
                tokio::task::spawn_blocking(move || trib_sync::SyncState::open(&data_dir))
                    .await
                    .context("the sync state task failed")?
                    .context("failed to open the sync state (sync.db)")?,
            )
        };
        let (ledger_for_sync, keyer_for_sync, privacy_rules_for_sync) =
            (ledger.clone(), keyer.clone(), privacy_rules.clone());
        let destination_names: Vec<String> =
            config.destinations.iter().map(|d| d.name.clone()).collect();
        let render = {
            let registry = registry
                .read()
                .map_err(|_| anyhow::anyhow!("the schema registry lock is poisoned"))?;
            let gatekeeper =
                trib_consent::Gatekeeper::new(ledger.clone(), keyer.clone(), privacy_rules.clone());
            crate::render::render_state(config, &registry, gatekeeper)?
        };
        let state = trib_api::AppState::new(config, logs, registry, metrics)?
            .with_profiles(trib_api::ProfilesState {
                store: profiles.clone(),
                keyer: keyer.clone(),
                rules,
                consumer: Some(identity.clone()),
            })
            .with_audit(audit.clone())
            .with_erasure(trib_api::ErasureState {
                at_rest,
                signer: trib_api::signing::DocumentSigner::load_or_create(&config.server.data_dir)?,
                receipts_dir: config.server.data_dir.join("privacy").join("erasures"),
                destinations: destination_names,
                sync: Some(sync_state.clone()),
                email_sealer: email_sealer.clone(),
            })
            .with_destinations(trib_api::destinations::DestinationsState {
                sync: sync_state.clone(),
                destinations: config
                    .destinations
                    .iter()
                    .map(|d| trib_api::destinations::DestinationInfo {
                        name: d.name.clone(),
                        kind: d.kind.as_str().to_owned(),
                        purpose: d.purpose.clone(),
                        mode: match d.mode {
                            trib_config::SyncMode::Upsert => "upsert".to_owned(),
                            trib_config::SyncMode::Mirror => "mirror".to_owned(),
                        },
                    })
                    .collect(),
            })
            .with_render(render)
            .with_consent(trib_api::ConsentState {
                ledger,
                keyer,
                rules: privacy_rules,
            });
        let retention = config.retention.is_enabled().then(|| {
            spawn_retention(
                &config.retention,
                events.clone(),
                compactor,
                identity.clone(),
            )
        });
        let sync = if config.destinations.is_empty() {
            None
        } else {
            let destinations = trib_sync::build::destinations(&config.destinations)
                .context("failed to set up the destinations")?;
            let sync_key = trib_identity::keys::load_or_create_secret(
                &config.server.data_dir.join("sync.key"),
            )?;
            Some(trib_sync::SyncEngine::start(
                destinations,
                profiles.clone(),
                sync_state.clone(),
                trib_consent::Gatekeeper::new(
                    ledger_for_sync,
                    keyer_for_sync,
                    privacy_rules_for_sync,
                ),
                trib_sync::map::Digester::new(&sync_key),
                trib_sync::EngineOptions {
                    audit: Some(audit.clone()),
                    email_sealer,
                    ..trib_sync::EngineOptions::default()
                },
            ))
        };
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("failed to listen on {}", config.server.listen))?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = trib_api::app(Arc::new(state));
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Server {
            addr,
            stop,
            task,
            events,
            quarantine,
            resolutions,
            profiles,
            identity,
            audit,
            consent,
            retention,
            sync,
        })
    }

    /// The profile store.
    pub(crate) fn profiles(&self) -> &Arc<dyn ProfileStore> {
        &self.profiles
    }

    /// Waits until identity resolution has applied every event stored so far.
    pub(crate) async fn identity_caught_up(&self) -> anyhow::Result<()> {
        self.identity.caught_up().await?;
        Ok(())
    }

    /// Returns the address the server listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, lets in-flight requests finish, then flushes and closes the
    /// logs (the audit log included).
    pub(crate) async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("the server task failed")??;
        // The sync workers finish their round (outcomes recorded; the rest stays pending).
        if let Some(sync) = self.sync {
            sync.stop().await;
        }
        // The purge holds a reference to the identity consumer: stop it first.
        if let Some((stop, task)) = self.retention {
            let _ = stop.send(());
            task.await.context("the retention task failed")?;
        }
        // The API held the other reference to the consumer; stopping it finishes its round.
        let consent = self.consent;
        tokio::task::spawn_blocking(move || consent.stop()).await?;
        match Arc::try_unwrap(self.identity) {
            Ok(identity) => tokio::task::spawn_blocking(move || identity.stop()).await?,
            Err(_) => tracing::warn!("identity consumer still referenced at shutdown"),
        }
        // Every request has been answered, so every audit entry is durable; release the files.
        let audit = self.audit;
        tokio::task::spawn_blocking(move || audit.close()).await?;
        self.events.close().await?;
        self.quarantine.close().await?;
        self.resolutions.close().await?;
        Ok(())
    }
}

pub(crate) fn open_log(
    config: &Config,
    dir: &Path,
    partitions: u32,
) -> anyhow::Result<Arc<dyn EventLog>> {
    Ok(open_compactable_log(config, dir, partitions)?.0)
}

/// Opens a log as [`open_log`] does, with a second handle on it that can blank records (for
/// the retention purge, which reads through the sealing decorator but blanks underneath it).
pub(crate) fn open_compactable_log(
    config: &Config,
    dir: &Path,
    partitions: u32,
) -> anyhow::Result<(Arc<dyn EventLog>, Arc<dyn Compactable>)> {
    Ok(match config.log.storage {
        LogStorage::Memory => {
            let mut options = MemoryLogOptions::new(partitions);
            options.dedup_window = config.ingest.dedup_window;
            options.max_queued_records = config.log.max_queued_records;
            let log = Arc::new(MemoryLog::with_options(options));
            (log.clone(), log)
        }
        LogStorage::Embedded => {
            let mut options = EmbeddedLogOptions::new(dir.to_path_buf());
            options.partitions = partitions;
            options.durability = if config.log.fsync {
                Durability::Fsync
            } else {
                Durability::None
            };
            options.dedup_window = config.ingest.dedup_window;
            options.max_queued_records = config.log.max_queued_records;
            let log =
                Arc::new(EmbeddedLog::open(options).with_context(|| {
                    format!("failed to open the event log in {}", dir.display())
                })?);
            (log.clone(), log)
        }
    })
}

/// Starts the retention purge: now, then every `interval`, blank expired events and expire
/// trait observations; returns the stop signal and the task.
fn spawn_retention(
    config: &RetentionConfig,
    events: Arc<dyn EventLog>,
    compactor: Arc<dyn Compactable>,
    identity: Arc<IdentityConsumer>,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (stop, mut stopped) = oneshot::channel::<()>();
    let interval = config.interval;
    let event_policy = config.events.clone();
    let trait_policy = Arc::new(config.traits.clone());
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = ticks.tick() => {}
            }
            let run = run_retention(
                &*events,
                &*compactor,
                &identity,
                &event_policy,
                &trait_policy,
            );
            tokio::select! {
                _ = &mut stopped => return,
                () = run => {}
            }
        }
    });
    (stop, task)
}

/// One retention run; logs counts only (no event or trait values).
async fn run_retention(
    events: &dyn EventLog,
    compactor: &dyn Compactable,
    identity: &IdentityConsumer,
    event_policy: &trib_core::retention::EventRetention,
    trait_policy: &Arc<trib_core::retention::TraitRetention>,
) {
    let started = std::time::Instant::now();
    let now = jiff::Timestamp::now();
    let now_ms = now.as_millisecond();
    match trib_retention::purge_events(events, compactor, event_policy, now_ms).await {
        Ok(report) => tracing::info!(
            scanned = report.scanned,
            blanked = report.blanked_total(),
            deferred = report.deferred,
            unreadable = report.unreadable,
            "retention: event purge done"
        ),
        Err(error) => tracing::warn!(%error, "retention: the event purge failed"),
    }
    if !trait_policy.is_empty() {
        match identity.expire_traits(now_ms, trait_policy.clone()).await {
            Ok(report) => tracing::info!(
                profiles = report.profiles,
                changed = report.changed,
                observations = report.expired.values().sum::<u64>(),
                "retention: trait expiry done"
            ),
            Err(error) => tracing::warn!(%error, "retention: the trait expiry failed"),
        }
    }
    metrics::gauge!("tributary_retention_last_run_timestamp_seconds").set(now.as_second() as f64);
    metrics::histogram!("tributary_retention_run_seconds").record(started.elapsed().as_secs_f64());
}

/// Set (to anything) to run `serve` without encryption at rest, only to measure what
/// encryption costs (BENCHMARKS.md); the server warns at startup.
pub(crate) const UNENCRYPTED_BENCHMARK_ENV: &str = "TRIBUTARY_UNENCRYPTED_BENCHMARK";

/// Opens encryption at rest for a data directory: the key store, the master keys
/// (`TRIBUTARY_MASTER_KEYS` or `<data_dir>/master.keys`) and the blind index key
/// (`<data_dir>/blind.key`), each created on first use.
pub(crate) fn open_at_rest(data_dir: &Path) -> anyhow::Result<trib_privacy::AtRest> {
    let blind_key = trib_identity::keys::load_or_create_secret(&data_dir.join("blind.key"))?;
    trib_privacy::AtRest::open(data_dir, blind_key).with_context(|| {
        format!(
            "failed to open the encryption keys in {}",
            data_dir.display()
        )
    })
}

/// Opens the profile store named by `[store]`.
pub(crate) fn open_store(config: &Config) -> anyhow::Result<Arc<dyn ProfileStore>> {
    Ok(match &config.store {
        StoreConfig::Memory => Arc::new(trib_store::MemoryStore::new()),
        StoreConfig::Embedded => {
            let dir = config.server.data_dir.join("profiles");
            Arc::new(
                trib_store::SqliteStore::open(&dir, trib_store::SqliteOptions::default())
                    .with_context(|| {
                        format!("failed to open the profile store in {}", dir.display())
                    })?,
            )
        }
        StoreConfig::Postgres { url, schema } => {
            let (url, schema) = (url.expose().clone(), schema.clone());
            // The synchronous client runs a runtime of its own: open it off the async runtime.
            let store = std::thread::spawn(move || {
                trib_store::PostgresStore::open(
                    &url,
                    trib_store::PostgresOptions {
                        schema,
                        ..trib_store::PostgresOptions::default()
                    },
                )
            })
            .join()
            .map_err(|_| anyhow::anyhow!("opening the PostgreSQL profile store panicked"))?
            .context("failed to open the PostgreSQL profile store")?;
            Arc::new(store)
        }
    })
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM; stop with Ctrl-C");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
