//! Tributary's HTTP API.
//!
//! [`app`] builds the axum [`Router`]:
//! - the Segment-compatible ingestion routes (`POST /v1/identify`, `/v1/track`, `/v1/page`,
//!   `/v1/screen`, `/v1/group`, `/v1/alias`, `/v1/batch`, and analytics.js's short aliases),
//!   which authenticate a source by its write key, validate each message ([`segment`]), and
//!   answer only after accepted events are durable in the event log and rejected ones in the
//!   quarantine;
//! - `POST /v1/webhooks/{source}`: signed webhooks, verified and mapped per source;
//! - admin endpoints (events, quarantine, imports, schemas, profiles, identity), each of which
//!   needs an API key with its [`Scope`] ([`keys`]);
//! - operations: `GET /healthz`, `GET /readyz` (open) and `GET /metrics` (`metrics:read`).
//!
//! Every route is declared once, with its [`Access`], in the route table that [`app`] builds the
//! router from and [`routes`] lists (the table-driven auth test walks it), so a route cannot be
//! added without saying who may call it.
//!
//! | Method | Path | Access |
//! |---|---|---|
//! | POST | `/v1/{batch,b,import,identify,i,track,t,page,p,screen,s,group,g,alias,a}` | source write key |
//! | POST | `/v1/webhooks/{source}` | the source's webhook signature (HMAC) |
//! | POST | `/v1/imports` | `imports:write` |
//! | GET | `/v1/imports/{id}` | `imports:write` |
//! | GET | `/v1/schemas`, `/v1/schemas/traits`, `/v1/schemas/events/{name}` | `schemas:read` |
//! | POST | `/v1/schemas` | `schemas:write` |
//! | GET | `/v1/profiles`, `/v1/profiles/lookup`, `/v1/profiles/{id}`, `/v1/profiles/{id}/events`, `/v1/profiles/{id}/explain` | `profiles:read` |
//! | POST | `/v1/profiles/{id}/unmerge` | `profiles:write` |
//! | POST | `/v1/identity/match` | `profiles:write` |
//! | GET | `/v1/identity/review` | `profiles:read` |
//! | POST | `/v1/identity/review/{item}` | `profiles:write` |
//! | GET | `/v1/events`, `/v1/events/partitions` | `events:read` |
//! | GET | `/v1/quarantine`, `/v1/quarantine/partitions` | `quarantine:read` |
//! | POST | `/v1/quarantine/replay` | `quarantine:write` |
//! | GET | `/v1/privacy/consent/{id}`, `/v1/privacy/consent/lookup`, `/v1/privacy/suppressions` | `consent:read` |
//! | POST | `/v1/privacy/consent`, `/v1/privacy/suppressions` | `consent:write` |
//! | DELETE | `/v1/privacy/suppressions` | `consent:write` |
//! | POST | `/v1/privacy/erasures` | `privacy:erase` |
//! | GET | `/v1/privacy/erasures/{id}` | `privacy:erase` |
//! | GET | `/v1/privacy/erasures/{id}/destinations` | `privacy:erase` |
//! | POST | `/v1/privacy/exports` | `privacy:export` |
//! | GET | `/v1/destinations`, `/v1/destinations/{name}/dlq` | `destinations:read` |
//! | POST | `/v1/destinations/{name}/dlq/replay`, `/v1/destinations/{name}/resync` | `destinations:write` |
//! | POST | `/v1/render` | `templates:render` |
//! | POST | `/v1/render/send` | `templates:send` |
//! | PUT | `/v1/templates/{name}` | `templates:write` |
//! | GET | `/metrics` | `metrics:read` |
//! | GET | `/healthz`, `/readyz` | open |
//!
//! `privacy:erase` guards erasures and their receipts, `privacy:export` subject access exports;
//! `admin` grants every scope.
//!
//! This crate is the only one that knows the HTTP and JSON wire shapes. It owns no storage: the
//! logs come in through [`AppState`].

mod admin;
pub mod audit;
mod auth;
mod body;
pub mod destinations;
mod erasure;
mod error;
mod export;
mod imports;
mod ingest;
pub mod keys;
mod page;
mod privacy;
mod profiles;
mod quarantine;
mod render;
mod schemas;
pub mod segment;
pub mod signing;
mod telemetry;
mod webhook;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::routing::{MethodRouter, delete, get, post};
use trib_config::Config;
use trib_log::EventLog;
use trib_pipeline::{Gates, SharedRegistry};
use trib_sources::webhook::WebhookSource;

pub use audit::{Audited, PURPOSE_HEADER};
pub use erasure::{ErasureState, QueuedEmails};
pub use error::ApiError;
pub use export::MAX_EXPORT_EVENTS;
pub use keys::{Principal, Scope};
pub use privacy::ConsentState;
pub use profiles::ProfilesState;
pub use render::{RenderState, SeedSend};
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

/// Why [`AppState::new`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A source's webhook configuration cannot be built.
    #[error(transparent)]
    Webhook(#[from] trib_sources::webhook::WebhookError),
    /// The API key file cannot be read.
    #[error(transparent)]
    Keys(#[from] keys::KeyStoreError),
}

/// What the handlers share: configuration, the logs and the metrics handle.
pub struct AppState {
    sources: auth::SourceKeys,
    api_keys: keys::ApiKeys,
    limits: ingest::Limits,
    events: Arc<dyn EventLog>,
    quarantine: Arc<dyn EventLog>,
    resolutions: Arc<dyn EventLog>,
    gates: Gates,
    webhooks: HashMap<String, WebhookSource>,
    imports: imports::Imports,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    profiles: Option<ProfilesState>,
    audit: Option<Arc<trib_audit::AuditLog>>,
    consent: Option<ConsentState>,
    erasure: Option<ErasureState>,
    destinations: Option<destinations::DestinationsState>,
    render: Option<RenderState>,
}

impl AppState {
    /// Builds the shared state from a validated configuration and open logs.
    ///
    /// `metrics` renders `/metrics`; without it the route answers 404.
    ///
    /// API keys come from `server.admin_key` (scope `admin`) and the key file
    /// `<data_dir>/api-keys.json`, re-read when it changes.
    ///
    /// Fails when a source's webhook configuration cannot be built or the key file exists and
    /// cannot be read.
    pub fn new(
        config: &Config,
        logs: Logs,
        registry: SharedRegistry,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> Result<Self, StateError> {
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
            api_keys: keys::ApiKeys::load(
                config.server.admin_key.clone(),
                Some(keys::KeyStore::in_data_dir(&config.server.data_dir)),
            )?,
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
            audit: None,
            consent: None,
            erasure: None,
            destinations: None,
            render: None,
        })
    }

    /// Enables the profile routes over a profile store.
    pub fn with_profiles(mut self, profiles: ProfilesState) -> Self {
        self.profiles = Some(profiles);
        self
    }

    /// Records every access to personal data (the routes with an [`Audited`] policy) in `log`
    /// before answering; without it nothing is recorded.
    pub fn with_audit(mut self, log: Arc<trib_audit::AuditLog>) -> Self {
        self.audit = Some(log);
        self
    }

    /// Enables the erasure routes (`/v1/privacy/erasures`).
    pub fn with_erasure(mut self, erasure: ErasureState) -> Self {
        self.erasure = Some(erasure);
        self
    }

    /// Enables the destination routes (sync state, dead letters) over the sync state.
    pub fn with_destinations(mut self, destinations: destinations::DestinationsState) -> Self {
        self.destinations = Some(destinations);
        self
    }

    /// Enables rendering (`POST /v1/render`) and template saves (`PUT /v1/templates/{name}`).
    pub fn with_render(mut self, render: RenderState) -> Self {
        self.render = Some(render);
        self
    }

    /// Enables the privacy routes (consent and suppression) over a consent ledger.
    pub fn with_consent(mut self, consent: ConsentState) -> Self {
        self.consent = Some(consent);
        self
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the health checks only.
    Open,
    /// A source's write key (Basic user name or body `writeKey`); grants ingestion into that
    /// source only. Checked by the ingestion handlers, which need the body.
    WriteKey,
    /// The source's webhook signature (HMAC over the body), checked by the webhook handler.
    WebhookSignature,
    /// An API key holding this scope (or `admin`), checked by a layer before the handler runs.
    Scope(Scope),
}

/// One route of the API: its method, its path template and who may call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// The HTTP method.
    pub method: Method,
    /// The path template (`/v1/profiles/{id}`).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// How calls are recorded in the audit log: every route that reads or writes personal
    /// data has a policy.
    pub audit: Option<Audited>,
}

/// Every route of [`app`], from the same table the router is built from.
pub fn routes() -> Vec<RouteInfo> {
    table().into_iter().map(|route| route.info).collect()
}

struct Route {
    info: RouteInfo,
    handler: MethodRouter<Arc<AppState>>,
}

impl Route {
    /// Records calls to this route in the audit log, with `default_purpose` when the request
    /// names none.
    fn audited(mut self, action: trib_audit::Action, default_purpose: trib_audit::Purpose) -> Self {
        self.info.audit = Some(Audited {
            action,
            default_purpose,
        });
        self
    }
}

fn route(
    method: Method,
    path: &'static str,
    access: Access,
    handler: MethodRouter<Arc<AppState>>,
) -> Route {
    Route {
        info: RouteInfo {
            method,
            path,
            access,
            audit: None,
        },
        handler,
    }
}

fn on_get<H, T>(path: &'static str, access: Access, handler: H) -> Route
where
    H: Handler<T, Arc<AppState>>,
    T: 'static,
{
    route(Method::GET, path, access, get(handler))
}

fn on_post<H, T>(path: &'static str, access: Access, handler: H) -> Route
where
    H: Handler<T, Arc<AppState>>,
    T: 'static,
{
    route(Method::POST, path, access, post(handler))
}

fn on_delete<H, T>(path: &'static str, access: Access, handler: H) -> Route
where
    H: Handler<T, Arc<AppState>>,
    T: 'static,
{
    route(Method::DELETE, path, access, delete(handler))
}

/// The route table: every route, its handler and its [`Access`]. Add routes here only.
fn table() -> Vec<Route> {
    use Access::{Open, WebhookSignature, WriteKey};
    use Scope::{
        ConsentRead, ConsentWrite, DestinationsRead, DestinationsWrite, EventsRead, ImportsWrite,
        MetricsRead, PrivacyErase, PrivacyExport, ProfilesRead, ProfilesWrite, QuarantineRead,
        QuarantineWrite, SchemasRead, SchemasWrite, TemplatesRender, TemplatesSend, TemplatesWrite,
    };
    use trib_audit::Action::{Read, Write};
    use trib_audit::Purpose;
    let scope = Access::Scope;
    vec![
        on_post("/v1/batch", WriteKey, ingest::batch),
        on_post("/v1/b", WriteKey, ingest::batch),
        on_post("/v1/import", WriteKey, ingest::batch),
        on_post("/v1/identify", WriteKey, ingest::identify),
        on_post("/v1/i", WriteKey, ingest::identify),
        on_post("/v1/track", WriteKey, ingest::track),
        on_post("/v1/t", WriteKey, ingest::track),
        on_post("/v1/page", WriteKey, ingest::page),
        on_post("/v1/p", WriteKey, ingest::page),
        on_post("/v1/screen", WriteKey, ingest::screen),
        on_post("/v1/s", WriteKey, ingest::screen),
        on_post("/v1/group", WriteKey, ingest::group),
        on_post("/v1/g", WriteKey, ingest::group),
        on_post("/v1/alias", WriteKey, ingest::alias),
        on_post("/v1/a", WriteKey, ingest::alias),
        on_post("/v1/webhooks/{source}", WebhookSignature, webhook::receive),
        on_post("/v1/imports", scope(ImportsWrite), imports::start)
            .audited(Write, Purpose::OPERATIONS),
        on_get("/v1/imports/{id}", scope(ImportsWrite), imports::status)
            .audited(Read, Purpose::OPERATIONS),
        on_get("/v1/schemas", scope(SchemasRead), schemas::list),
        on_post("/v1/schemas", scope(SchemasWrite), schemas::publish),
        on_get(
            "/v1/schemas/traits",
            scope(SchemasRead),
            schemas::show_traits,
        ),
        on_get(
            "/v1/schemas/events/{name}",
            scope(SchemasRead),
            schemas::show_event,
        ),
        on_get("/v1/profiles", scope(ProfilesRead), profiles::list).audited(Read, Purpose::SUPPORT),
        on_get("/v1/profiles/lookup", scope(ProfilesRead), profiles::lookup)
            .audited(Read, Purpose::SUPPORT),
        on_get("/v1/profiles/{id}", scope(ProfilesRead), profiles::show)
            .audited(Read, Purpose::SUPPORT),
        on_get(
            "/v1/profiles/{id}/events",
            scope(ProfilesRead),
            profiles::events,
        )
        .audited(Read, Purpose::SUPPORT),
        on_get(
            "/v1/profiles/{id}/explain",
            scope(ProfilesRead),
            profiles::explain,
        )
        .audited(Read, Purpose::SUPPORT),
        on_post(
            "/v1/profiles/{id}/unmerge",
            scope(ProfilesWrite),
            profiles::unmerge,
        )
        .audited(Write, Purpose::SUPPORT),
        on_post(
            "/v1/identity/match",
            scope(ProfilesWrite),
            profiles::run_match,
        )
        .audited(Write, Purpose::OPERATIONS),
        on_get(
            "/v1/identity/review",
            scope(ProfilesRead),
            profiles::review_queue,
        )
        .audited(Read, Purpose::SUPPORT),
        on_post(
            "/v1/identity/review/{item}",
            scope(ProfilesWrite),
            profiles::decide,
        )
        .audited(Write, Purpose::SUPPORT),
        on_get(
            "/v1/privacy/consent/lookup",
            scope(ConsentRead),
            privacy::lookup,
        )
        .audited(Read, Purpose::SUPPORT),
        on_get(
            "/v1/privacy/consent/{id}",
            scope(ConsentRead),
            privacy::show,
        )
        .audited(Read, Purpose::SUPPORT),
        on_post("/v1/privacy/consent", scope(ConsentWrite), privacy::record)
            .audited(Write, Purpose::SUPPORT),
        on_get(
            "/v1/privacy/suppressions",
            scope(ConsentRead),
            privacy::list_suppressions,
        )
        .audited(Read, Purpose::OPERATIONS),
        on_post(
            "/v1/privacy/suppressions",
            scope(ConsentWrite),
            privacy::suppress,
        )
        .audited(Write, Purpose::OPERATIONS),
        on_delete(
            "/v1/privacy/suppressions",
            scope(ConsentWrite),
            privacy::unsuppress,
        )
        .audited(Write, Purpose::OPERATIONS),
        on_post("/v1/privacy/erasures", scope(PrivacyErase), erasure::erase)
            .audited(Write, Purpose::PRIVACY_REQUEST),
        on_get(
            "/v1/privacy/erasures/{id}",
            scope(PrivacyErase),
            erasure::receipt,
        )
        .audited(Read, Purpose::PRIVACY_REQUEST),
        on_get(
            "/v1/privacy/erasures/{id}/destinations",
            scope(PrivacyErase),
            destinations::erasure_status,
        )
        .audited(Read, Purpose::PRIVACY_REQUEST),
        on_get(
            "/v1/destinations",
            scope(DestinationsRead),
            destinations::list,
        ),
        on_get(
            "/v1/destinations/{name}/dlq",
            scope(DestinationsRead),
            destinations::dead_letters,
        ),
        on_post(
            "/v1/destinations/{name}/dlq/replay",
            scope(DestinationsWrite),
            destinations::replay,
        ),
        on_post(
            "/v1/destinations/{name}/resync",
            scope(DestinationsWrite),
            destinations::resync,
        ),
        on_post("/v1/privacy/exports", scope(PrivacyExport), export::export)
            .audited(Read, Purpose::PRIVACY_REQUEST),
        on_post("/v1/render", scope(TemplatesRender), render::render)
            .audited(Read, Purpose::OPERATIONS),
        on_post("/v1/render/send", scope(TemplatesSend), render::send)
            .audited(Read, Purpose::OPERATIONS),
        route(
            Method::PUT,
            "/v1/templates/{name}",
            scope(TemplatesWrite),
            axum::routing::put(render::save),
        ),
        on_get("/v1/events", scope(EventsRead), admin::list_events)
            .audited(Read, Purpose::OPERATIONS),
        on_get(
            "/v1/events/partitions",
            scope(EventsRead),
            admin::event_partitions,
        ),
        on_get(
            "/v1/quarantine",
            scope(QuarantineRead),
            admin::list_quarantine,
        )
        .audited(Read, Purpose::OPERATIONS),
        on_post(
            "/v1/quarantine/replay",
            scope(QuarantineWrite),
            quarantine::replay,
        )
        .audited(Write, Purpose::OPERATIONS),
        on_get(
            "/v1/quarantine/partitions",
            scope(QuarantineRead),
            admin::quarantine_partitions,
        ),
        on_get("/healthz", Open, admin::healthz),
        on_get("/readyz", Open, admin::readyz),
        on_get("/metrics", scope(MetricsRead), admin::metrics),
    ]
}

/// Builds the router with every route of the API, from the route table.
pub fn app(state: Arc<AppState>) -> Router {
    let mut ingestion = Router::new();
    let mut router = Router::new();
    for Route { info, handler } in table() {
        let handler = match info.access {
            Access::Scope(scope) => {
                let state = state.clone();
                let policy = info.audit.clone();
                let route = info.path;
                handler.route_layer(middleware::from_fn(
                    move |mut request: Request, next: Next| {
                        let state = state.clone();
                        let policy = policy.clone();
                        async move {
                            let principal =
                                auth::require(&state.api_keys, request.headers(), scope)?;
                            match (&state.audit, &policy) {
                                (Some(log), Some(policy)) => {
                                    audit::record(log, policy, route, principal, request, next)
                                        .await
                                }
                                _ => {
                                    request.extensions_mut().insert(principal);
                                    Ok::<_, ApiError>(next.run(request).await)
                                }
                            }
                        }
                    },
                ))
            }
            Access::Open | Access::WriteKey | Access::WebhookSignature => handler,
        };
        if info.access == Access::WriteKey {
            ingestion = ingestion.route(info.path, handler);
        } else {
            router = router.route(info.path, handler);
        }
    }
    // Browsers send events cross-origin; write keys are public in web pages anyway.
    let ingestion = ingestion.layer(tower_http::cors::CorsLayer::very_permissive());
    router
        .merge(ingestion)
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
}
