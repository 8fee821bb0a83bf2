//! Stateful simulators of the ESP APIs Tributary syncs golden profiles to.
//!
//! Each [`Simulator`] is an HTTP/1.1 server on a given address that follows one ESP's
//! published contract (paths, methods, auth, bodies, status codes, error bodies, headers),
//! keeps the contacts it was sent in memory, enforces the ESP's documented limits and injects
//! faults on demand ([`Faults`]). Connectors and the sync engine are tested against them, and
//! `tributary simulate` serves them to users. They deliberately do not persist anything, do
//! not implement endpoints Tributary does not call, and are not secure servers (plain HTTP,
//! one configured key).
//!
//! # Kinds
//!
//! * **Mailchimp Marketing API 3.0** ([`SimKind::Mailchimp`], prefix `/3.0`): HTTP Basic auth
//!   (any user, the API key as password); `PUT`/`GET /3.0/lists/{list_id}/members/{hash}`,
//!   `POST .../actions/delete-permanent`, `GET /3.0/lists/{list_id}/merge-fields`,
//!   `POST /3.0/batches` + `GET /3.0/batches` (list) + `GET /3.0/batches/{id}` with a gzipped tar of results at
//!   `response_body_url`; at most 10 simultaneous requests per key (429 problem+json, no
//!   rate-limit headers) and 500 pending batches.
//! * **HubSpot CRM v3 contacts** ([`SimKind::Hubspot`]): Bearer token;
//!   `POST /crm/v3/objects/contacts/batch/upsert` (≤100 inputs, 200 or 207),
//!   `POST .../batch/read`, `POST .../gdpr-delete`, `GET /crm/v3/objects/contacts/{id}`;
//!   100 requests per rolling 10 s with `X-HubSpot-RateLimit-*` headers on every answer.
//! * **SendGrid Marketing Contacts** ([`SimKind::Sendgrid`]): Bearer key;
//!   `PUT /v3/marketing/contacts` (202 + job applied after [`SimConfig::sendgrid_job_delay`]),
//!   `GET /v3/marketing/contacts/imports/{id}`, `POST /v3/marketing/contacts/search/emails`,
//!   `DELETE /v3/marketing/contacts?ids=`, `GET /v3/marketing/field_definitions`; a fixed
//!   window per endpoint with `X-RateLimit-Limit/Remaining/Reset` on every answer. Note: as
//!   in SendGrid's API, contacts are *written* with `custom_fields` keyed by field-definition
//!   id (`e1_T`) but *read back* (search) with `custom_fields` keyed by field **name**.
//! * **Signed webhook receiver** ([`SimKind::Webhook`]), the format Tributary's webhook
//!   destination sends:
//!
//!   ```text
//!   POST <any path>
//!   Content-Type: application/json
//!   X-Tributary-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
//!
//!   {"type":"upsert","profile_id":"p1","email":"ada@example.com","fields":{"plan":"gold"}}
//!   {"type":"delete","profile_id":"p1"}
//!   [ ...any number of the above... ]
//!   ```
//!
//!   `t` must be within 300 s of the receiver's clock. Answers: 200 `{"received":N}`
//!   (applied in order: an upsert stores/replaces the profile's record, a delete removes it,
//!   a delete of an unknown profile is fine); 400 `{"error":"..."}` for a body that is not
//!   this format (nothing applied); 401 `{"error":"invalid signature"}`; 429
//!   `{"error":"too many requests"}` with `Retry-After: 1`; 500/503 `{"error":"..."}`.
//!
//! # Inspection
//!
//! [`Simulator::contacts`], [`Simulator::stats`] and [`Simulator::requests`] in process, and
//! without auth over HTTP: `GET /_sim/contacts`, `GET /_sim/stats`, `GET /_sim/requests`.
//! These and the batch result files are not counted as API requests.

mod common;
mod faults;
mod hubspot;
mod mailchimp;
mod sendgrid;
mod server;
#[cfg(feature = "spec")]
pub mod spec;
mod state;
mod webhook;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use faults::Faults;

use crate::common::lock;
use crate::state::Shared;

/// Which ESP a simulator plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimKind {
    Mailchimp,
    Hubspot,
    Sendgrid,
    Webhook,
}

/// How a simulator behaves. Build it with [`SimConfig::new`] and change fields as needed.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The ESP to play.
    pub kind: SimKind,
    /// The one accepted credential (Mailchimp: Basic password; HubSpot, SendGrid: Bearer).
    pub api_key: String,
    /// Faults at start (change them later with [`Simulator::set_faults`]).
    pub faults: Faults,
    /// Mailchimp list (audience) ids that exist.
    pub mailchimp_lists: Vec<String>,
    /// Mailchimp merge tags every list has (`FNAME`, `LNAME`, ...); others are refused.
    pub mailchimp_merge_fields: Vec<String>,
    /// HubSpot contact property names that exist (`email`, `firstname`, ...).
    pub hubspot_properties: Vec<String>,
    /// SendGrid custom field definitions: (id such as `e1_T`, name, `Text|Number|Date`).
    pub sendgrid_custom_fields: Vec<(String, String, String)>,
    /// How long a SendGrid job stays `pending` before it is applied.
    pub sendgrid_job_delay: Duration,
    /// How long a Mailchimp `/batches` job stays `pending` before its operations run (the
    /// real service takes minutes under load).
    pub mailchimp_batch_delay: Duration,
    /// Most requests per `rate_interval` (HubSpot: rolling; SendGrid: fixed window per
    /// endpoint; others: rolling, without headers). `None`: no rate limit.
    pub rate_max: Option<u32>,
    pub rate_interval: Duration,
    /// The webhook receiver's HMAC secret.
    pub webhook_secret: String,
    /// Most requests in flight at once; the next one gets the kind's 429 (Mailchimp: 10).
    pub max_concurrency: Option<usize>,
    /// How long the `timeout` fault holds a request before dropping the connection.
    pub timeout_hold: Duration,
    /// Added latency before each API request is handled (while it counts as in flight), to
    /// simulate a slow ESP or to exercise concurrency limits.
    pub response_delay: Duration,
}

impl SimConfig {
    /// The defaults: api key `test-key`, no faults; Mailchimp list `list1` with merge tags
    /// `FNAME`, `LNAME`, `PLAN` and 10 concurrent requests; HubSpot properties `email`,
    /// `firstname`, `lastname`, `plan` and 100 requests per 10 s; SendGrid custom fields
    /// `e1_T` (`plan`, Text) and `w2_N` (`score`, Number), jobs applied after 200 ms and 600
    /// requests per 60 s per endpoint; webhook secret `test-secret`; timeout hold 30 s.
    pub fn new(kind: SimKind) -> Self {
        let (rate_max, rate_interval, max_concurrency) = match kind {
            SimKind::Mailchimp => (None, Duration::from_secs(10), Some(10)),
            SimKind::Hubspot => (Some(100), Duration::from_secs(10), None),
            SimKind::Sendgrid => (Some(600), Duration::from_secs(60), None),
            SimKind::Webhook => (None, Duration::from_secs(10), None),
        };
        SimConfig {
            kind,
            api_key: "test-key".to_owned(),
            faults: Faults::default(),
            mailchimp_lists: vec!["list1".to_owned()],
            mailchimp_merge_fields: ["FNAME", "LNAME", "PLAN"].map(str::to_owned).to_vec(),
            hubspot_properties: ["email", "firstname", "lastname", "plan"]
                .map(str::to_owned)
                .to_vec(),
            sendgrid_custom_fields: vec![
                ("e1_T".to_owned(), "plan".to_owned(), "Text".to_owned()),
                ("w2_N".to_owned(), "score".to_owned(), "Number".to_owned()),
            ],
            sendgrid_job_delay: Duration::from_millis(200),
            mailchimp_batch_delay: Duration::ZERO,
            rate_max,
            rate_interval,
            webhook_secret: "test-secret".to_owned(),
            max_concurrency,
            timeout_hold: Duration::from_secs(30),
            response_delay: Duration::ZERO,
        }
    }
}

/// One contact as the simulator holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimContact {
    /// The ESP's id: Mailchimp subscriber hash, HubSpot numeric id, SendGrid UUID, webhook
    /// profile id.
    pub id: String,
    /// The lower-cased email.
    pub email: String,
    /// Mailchimp's member status; `None` elsewhere.
    pub status: Option<String>,
    /// Mailchimp merge tags (all configured ones, `""` when unset); HubSpot properties
    /// without `email` (string values); SendGrid reserved fields by name and custom fields by
    /// id; webhook: the `fields` object.
    pub fields: BTreeMap<String, serde_json::Value>,
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// API requests received (not `/_sim/...`).
    pub requests: u64,
    /// Real 429s from the rate or concurrency limits (and Mailchimp's pending batches).
    pub limit_refusals: u64,
    /// Faults injected (answered or applied).
    pub injected: u64,
    /// Most API requests in flight at once.
    pub max_concurrent: u64,
    /// Contact writes applied (one per created, updated or deleted record).
    pub writes_applied: u64,
}

/// One API request and how it was answered, for assertions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// The body, when it was JSON.
    pub body: Option<serde_json::Value>,
    /// The status answered; 0 when the connection was dropped (reset, timeout).
    pub status: u16,
    /// The injected fault (`throttle`, `server_error`, `timeout`, `reset`, `partial`,
    /// `not_applied`), if any.
    pub fault: Option<String>,
}

/// A running simulator. Dropping it stops the server without waiting; prefer
/// [`Simulator::shutdown`].
pub struct Simulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
}

impl Simulator {
    /// Binds `listen` (port 0 picks a free port) and starts serving.
    pub async fn start(config: SimConfig, listen: SocketAddr) -> std::io::Result<Simulator> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let host = if addr.ip().is_unspecified() {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
        } else {
            addr
        };
        let shared = Arc::new(Shared::new(config, format!("http://{host}")));
        let (stop, stopped) = watch::channel(false);
        let app = server::app(Arc::clone(&shared));
        let server = tokio::spawn(server::serve(listener, app, stopped));
        Ok(Simulator {
            shared,
            addr: host,
            stop,
            server,
        })
    }

    /// The address it listens on (loopback when bound to an unspecified address).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the base URL to give a connector (Mailchimp's API root is
    /// `{base_url}/3.0`).
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The contacts held now, by lower-cased email (webhook: by profile id).
    pub fn contacts(&self) -> BTreeMap<String, SimContact> {
        self.shared.contacts()
    }

    /// The counters now.
    pub fn stats(&self) -> SimStats {
        *lock(&self.shared.stats)
    }

    /// The API requests received, oldest first (the most recent 10,000).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).iter().cloned().collect()
    }

    /// Replaces the faults and re-seeds their RNG with `faults.seed`.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = faults::FaultState::new(faults);
    }

    /// Stops accepting, drops open connections and background jobs, and waits for the
    /// server task.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let _ = (&mut self.server).await;
        self.shared.abort_background();
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.shared.abort_background();
    }
}

/// Serves a simulator on `listen` until Ctrl-C, for `tributary simulate`.
pub async fn run(config: SimConfig, listen: SocketAddr) -> std::io::Result<()> {
    let kind = config.kind;
    let simulator = Simulator::start(config, listen).await?;
    tracing::info!(kind = ?kind, base_url = %simulator.base_url(), "esp simulator listening");
    tokio::signal::ctrl_c().await?;
    simulator.shutdown().await;
    Ok(())
}
