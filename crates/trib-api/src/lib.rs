//! Tributary's HTTP API.
//!
//! [`app`] builds the axum [`Router`]:
//! - the Segment-compatible ingestion routes (`POST /v1/identify`, `/v1/track`, `/v1/page`,
//!   `/v1/screen`, `/v1/group`, `/v1/alias`, `/v1/batch`, and analytics.js's short aliases),
//!   which authenticate a source by its write key, validate each message ([`segment`]), and
//!   answer only after accepted events are durable in the event log and rejected ones in the
//!   quarantine;
//! - `POST /v1/webhooks/{source}`: signed webhooks, verified and mapped per source;
//! - admin endpoints (`GET /v1/events`, `GET /v1/quarantine`, `GET|POST /v1/schemas`), which
//!   take the admin key;
//! - operations: `GET /healthz`, `GET /readyz`, `GET /metrics`.
//!
//! This crate is the only one that knows the HTTP and JSON wire shapes. It owns no storage: the
//! logs come in through [`AppState`].

mod admin;
mod auth;
mod body;
mod error;
mod imports;
mod ingest;
mod profiles;
mod quarantine;
mod schemas;
pub mod segment;
mod telemetry;
mod webhook;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use trib_config::Config;
use trib_log::EventLog;
use trib_pipeline::{Gates, SharedRegistry};
use trib_sources::webhook::WebhookSource;

pub use error::ApiError;
pub use profiles::ProfilesState;
pub use telemetry::install_metrics_recorder;

/// The logs the API writes to and reads from.
pub struct Logs {
    /// Accepted events.
    pub events: Arc<dyn EventLog>,
    /// Refused messages, with the reason.
    pub quarantine: Arc<dyn EventLog>,
    /// Which quarantined messages were replayed successfully (one record per resolved message).
    pub resolutions: Arc<dyn EventLog>,
}

/// What the handlers share: configuration, the logs and the metrics handle.
pub struct AppState {
    sources: auth::SourceKeys,
    admin_key: Option<trib_core::Secret<String>>,
    limits: ingest::Limits,
    events: Arc<dyn EventLog>,
    quarantine: Arc<dyn EventLog>,
    resolutions: Arc<dyn EventLog>,
    gates: Gates,
    webhooks: HashMap<String, WebhookSource>,
    imports: imports::Imports,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    profiles: Option<ProfilesState>,
}

impl AppState {
    /// Builds the shared state from a validated configuration and open logs.
    ///
    /// `metrics` renders `/metrics`; without it the route answers 404.
    ///
    /// Fails when a source's webhook configuration cannot be built.
    pub fn new(
        config: &Config,
        logs: Logs,
        registry: SharedRegistry,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> Result<Self, trib_sources::webhook::WebhookError> {
        let mut mappings = HashMap::new();
        for source in &config.sources {
            if let Some(mapping) = &source.import {
                let normalize = trib_normalize::Options {
                    default_region: source.rules.default_region.clone(),
                    ..trib_normalize::Options::default()
                };
                mappings.insert(source.name.clone(), (mapping.clone(), normalize));
            }
        }
        let mut webhooks = HashMap::new();
        for source in &config.sources {
            if let Some(webhook) = &source.webhook {
                webhooks.insert(
                    source.name.clone(),
                    WebhookSource::new(&source.name, webhook)?,
                );
            }
        }
        Ok(Self {
            sources: auth::SourceKeys::new(&config.sources),
            admin_key: config.server.admin_key.clone(),
            limits: ingest::Limits {
                max_message_bytes: config.ingest.max_message_bytes,
                max_request_bytes: config.ingest.max_request_bytes,
            },
            events: logs.events,
            quarantine: logs.quarantine,
            resolutions: logs.resolutions,
            gates: Gates::new(config, registry),
            webhooks,
            imports: imports::Imports::new(config.server.data_dir.join("imports"), mappings),
            metrics,
            profiles: None,
        })
    }

    /// Enables the profile routes over a profile store.
    pub fn with_profiles(mut self, profiles: ProfilesState) -> Self {
        self.profiles = Some(profiles);
        self
    }
}

/// Builds the router with every route of the API.
pub fn app(state: Arc<AppState>) -> Router {
    let ingestion = Router::new()
        .route("/v1/batch", post(ingest::batch))
        .route("/v1/b", post(ingest::batch))
        .route("/v1/import", post(ingest::batch))
        .route("/v1/identify", post(ingest::identify))
        .route("/v1/i", post(ingest::identify))
        .route("/v1/track", post(ingest::track))
        .route("/v1/t", post(ingest::track))
        .route("/v1/page", post(ingest::page))
        .route("/v1/p", post(ingest::page))
        .route("/v1/screen", post(ingest::screen))
        .route("/v1/s", post(ingest::screen))
        .route("/v1/group", post(ingest::group))
        .route("/v1/g", post(ingest::group))
        .route("/v1/alias", post(ingest::alias))
        .route("/v1/a", post(ingest::alias))
        // Browsers send events cross-origin; write keys are public in web pages anyway.
        .layer(tower_http::cors::CorsLayer::very_permissive());

    Router::new()
        .merge(ingestion)
        .route("/v1/webhooks/{source}", post(webhook::receive))
        .route("/v1/imports", post(imports::start))
        .route("/v1/imports/{id}", get(imports::status))
        .route("/v1/schemas", get(schemas::list).post(schemas::publish))
        .route("/v1/schemas/traits", get(schemas::show_traits))
        .route("/v1/schemas/events/{name}", get(schemas::show_event))
        .route("/v1/profiles", get(profiles::list))
        .route("/v1/profiles/lookup", get(profiles::lookup))
        .route("/v1/profiles/{id}", get(profiles::show))
        .route("/v1/profiles/{id}/events", get(profiles::events))
        .route("/v1/profiles/{id}/explain", get(profiles::explain))
        .route("/v1/profiles/{id}/unmerge", post(profiles::unmerge))
        .route("/v1/identity/match", post(profiles::run_match))
        .route("/v1/identity/review", get(profiles::review_queue))
        .route("/v1/identity/review/{item}", post(profiles::decide))
        .route("/v1/events", get(admin::list_events))
        .route("/v1/events/partitions", get(admin::event_partitions))
        .route("/v1/quarantine", get(admin::list_quarantine))
        .route("/v1/quarantine/replay", post(quarantine::replay))
        .route(
            "/v1/quarantine/partitions",
            get(admin::quarantine_partitions),
        )
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/metrics", get(admin::metrics))
        .fallback(error::not_found)
        .with_state(state)
}
