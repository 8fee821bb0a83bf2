//! The HTTP server under every simulator: an HTTP/1.1 accept loop that can drop a connection
//! without answering (fault `reset`/`timeout`), and the gate every API request passes:
//! concurrency limit, authentication, rate limit, fault draw, added latency, recording.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use crate::common::{
    AbortConnection, AppliedFault, FaultPlan, MAX_BODY_BYTES, hex, json as json_response, lock,
};
use crate::faults::Drawn;
use crate::state::Shared;
use crate::{RecordedRequest, SimKind, hubspot, mailchimp, sendgrid, webhook};

/// How far a webhook signature's timestamp may be from the receiver's clock.
const WEBHOOK_TOLERANCE_SECS: u64 = 300;

/// Builds the router of the configured kind, with the gate and the `/_sim` routes.
pub(crate) fn app(shared: Arc<Shared>) -> Router {
    let routes = match shared.config.kind {
        SimKind::Mailchimp => mailchimp::routes(),
        SimKind::Hubspot => hubspot::routes(),
        SimKind::Sendgrid => sendgrid::routes(),
        SimKind::Webhook => webhook::routes(),
    };
    routes
        .route("/_sim/contacts", get(sim_contacts))
        .route("/_sim/stats", get(sim_stats))
        .route("/_sim/requests", get(sim_requests))
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), gate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

/// Accepts connections until `stop` turns true, then drops every open connection.
pub(crate) async fn serve(listener: TcpListener, app: Router, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "simulator accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let app = app.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let app = app.clone();
                        async move {
                            let response = match app.oneshot(request).await {
                                Ok(response) => response,
                                Err(never) => match never {},
                            };
                            // An error from the service makes hyper close the connection
                            // without writing a response: the client sees a reset or an
                            // incomplete message.
                            if response.extensions().get::<AbortConnection>().is_some() {
                                return Err(AbortConnection);
                            }
                            Ok::<_, AbortConnection>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
}

/// Rate-limit bookkeeping.
#[derive(Default)]
pub(crate) struct RateState {
    /// Admitted request times in the rolling window (HubSpot, and kinds without headers).
    rolling: VecDeque<Instant>,
    /// Fixed windows per endpoint (SendGrid).
    windows: HashMap<String, Window>,
}

struct Window {
    started: Instant,
    reset_epoch: u64,
    count: u32,
}

/// Why the gate refused a request (real limits and injected faults alike).
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Unauthorized { missing: bool },
    Throttled,
    ServerError(u16),
    TooLarge,
}

struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

async fn gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if request.uri().path().starts_with("/_sim/") {
        return next.run(request).await;
    }
    let in_flight = shared.enter();
    let _guard = InFlight(&shared);
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let endpoint = format!(
        "{method} {}",
        request
            .extensions()
            .get::<MatchedPath>()
            .map_or(path.as_str(), MatchedPath::as_str)
    );
    let mut record = RecordedRequest {
        method,
        path,
        query: request.uri().query().map(str::to_owned),
        body: None,
        status: 0,
        fault: None,
    };
    let (mut parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        let response = refusal(&shared, Refusal::TooLarge);
        record.status = response.status().as_u16();
        shared.record(record);
        return response;
    };
    record.body = serde_json::from_slice::<Value>(&bytes).ok();

    let response = 'answer: {
        if let Some(max) = shared.config.max_concurrency
            && in_flight > max as u64
        {
            lock(&shared.stats).limit_refusals += 1;
            break 'answer refusal(&shared, Refusal::Throttled);
        }
        if let Err(missing) = authenticate(&shared, &parts.headers, &bytes) {
            break 'answer refusal(&shared, Refusal::Unauthorized { missing });
        }
        let (allowed, rate_headers) = check_rate(&shared, &endpoint);
        let drawn = if allowed {
            Some(lock(&shared.faults).draw())
        } else {
            lock(&shared.stats).limit_refusals += 1;
            None
        };
        let mut response = match drawn {
            None => refusal(&shared, Refusal::Throttled),
            Some(Drawn::Pass {
                partial,
                not_applied,
            }) => {
                if !shared.config.response_delay.is_zero() {
                    tokio::time::sleep(shared.config.response_delay).await;
                }
                parts.extensions.insert(FaultPlan {
                    partial,
                    not_applied,
                });
                let response = next
                    .run(Request::from_parts(parts, Body::from(bytes)))
                    .await;
                if let Some(AppliedFault(name)) = response.extensions().get::<AppliedFault>() {
                    lock(&shared.stats).injected += 1;
                    record.fault = Some((*name).to_owned());
                }
                response
            }
            Some(Drawn::Throttle) => {
                lock(&shared.stats).injected += 1;
                record.fault = Some("throttle".to_owned());
                refusal(&shared, Refusal::Throttled)
            }
            Some(Drawn::ServerError(status)) => {
                lock(&shared.stats).injected += 1;
                record.fault = Some("server_error".to_owned());
                refusal(&shared, Refusal::ServerError(status))
            }
            Some(drawn @ (Drawn::Timeout | Drawn::Reset)) => {
                lock(&shared.stats).injected += 1;
                let timeout = drawn == Drawn::Timeout;
                record.fault = Some(if timeout { "timeout" } else { "reset" }.to_owned());
                // Recorded before the hold: the client may give up and drop the
                // connection, which cancels this future.
                shared.record(record);
                if timeout {
                    tokio::time::sleep(shared.config.timeout_hold).await;
                }
                let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
                response.extensions_mut().insert(AbortConnection);
                return response;
            }
        };
        for (name, value) in rate_headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    };
    record.status = response.status().as_u16();
    shared.record(record);
    response
}

/// Checks the kind's credentials; `Err(true)` when none were given.
fn authenticate(shared: &Shared, headers: &HeaderMap, body: &Bytes) -> Result<(), bool> {
    let key = shared.config.api_key.as_str();
    if shared.config.kind == SimKind::Webhook {
        return verify_signature(&shared.config.webhook_secret, headers, body);
    }
    let Some(authorization) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
    else {
        return Err(true);
    };
    let (scheme, credentials) = authorization.split_once(' ').unwrap_or((authorization, ""));
    let credentials = credentials.trim();
    let ok = if scheme.eq_ignore_ascii_case("bearer") {
        // Mailchimp also takes OAuth tokens as Bearer; the simulator's one key stands in.
        credentials == key
    } else if scheme.eq_ignore_ascii_case("basic") && shared.config.kind == SimKind::Mailchimp {
        base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()
            .and_then(|decoded| String::from_utf8(decoded).ok())
            .and_then(|pair| pair.split_once(':').map(|(_, password)| password == key))
            .unwrap_or(false)
    } else {
        false
    };
    if ok { Ok(()) } else { Err(false) }
}

/// Verifies `X-Tributary-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
fn verify_signature(secret: &str, headers: &HeaderMap, body: &Bytes) -> Result<(), bool> {
    let Some(signature) = headers
        .get("x-tributary-signature")
        .and_then(|value| value.to_str().ok())
    else {
        return Err(true);
    };
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in signature.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<u64>().ok(),
            Some(("v1", value)) => candidates.push(value.to_ascii_lowercase()),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return Err(false);
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    if now.abs_diff(timestamp) > WEBHOOK_TOLERANCE_SECS {
        return Err(false);
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return Err(false);
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = hex(&mac.finalize().into_bytes());
    // Compared in constant time over equal lengths.
    let matches = candidates.iter().any(|candidate| {
        candidate.len() == expected.len()
            && candidate
                .bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if matches { Ok(()) } else { Err(false) }
}

/// Counts the request against the rate limit; returns whether it is admitted and the
/// headers every answer carries.
fn check_rate(shared: &Shared, endpoint: &str) -> (bool, Vec<(HeaderName, String)>) {
    let Some(max) = shared.config.rate_max else {
        return (true, Vec::new());
    };
    let interval = shared.config.rate_interval;
    let now = Instant::now();
    let mut rate = lock(&shared.rate);
    match shared.config.kind {
        SimKind::Sendgrid => {
            let window = rate
                .windows
                .entry(endpoint.to_owned())
                .or_insert_with(|| new_window(now, interval));
            if now.duration_since(window.started) >= interval {
                *window = new_window(now, interval);
            }
            let allowed = window.count < max;
            if allowed {
                window.count += 1;
            }
            let headers = vec![
                (
                    HeaderName::from_static("x-ratelimit-limit"),
                    max.to_string(),
                ),
                (
                    HeaderName::from_static("x-ratelimit-remaining"),
                    (max - window.count).to_string(),
                ),
                (
                    HeaderName::from_static("x-ratelimit-reset"),
                    window.reset_epoch.to_string(),
                ),
            ];
            (allowed, headers)
        }
        kind => {
            while rate
                .rolling
                .front()
                .is_some_and(|admitted| now.duration_since(*admitted) >= interval)
            {
                rate.rolling.pop_front();
            }
            let allowed = rate.rolling.len() < max as usize;
            if allowed {
                rate.rolling.push_back(now);
            }
            let remaining = (max as usize).saturating_sub(rate.rolling.len());
            let headers = if kind == SimKind::Hubspot {
                vec![
                    (
                        HeaderName::from_static("x-hubspot-ratelimit-max"),
                        max.to_string(),
                    ),
                    (
                        HeaderName::from_static("x-hubspot-ratelimit-remaining"),
                        remaining.to_string(),
                    ),
                    (
                        HeaderName::from_static("x-hubspot-ratelimit-interval-milliseconds"),
                        interval.as_millis().to_string(),
                    ),
                ]
            } else {
                Vec::new()
            };
            (allowed, headers)
        }
    }
}

fn new_window(now: Instant, interval: Duration) -> Window {
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    Window {
        started: now,
        reset_epoch: epoch + interval.as_secs().max(1),
        count: 0,
    }
}

/// The kind's answer to a refused request.
fn refusal(shared: &Shared, refusal: Refusal) -> Response {
    match shared.config.kind {
        SimKind::Mailchimp => match refusal {
            Refusal::Unauthorized { .. } => mailchimp::problem(
                StatusCode::UNAUTHORIZED,
                "API Key Invalid",
                "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
            ),
            Refusal::Throttled => mailchimp::problem(
                StatusCode::TOO_MANY_REQUESTS,
                "Too Many Requests",
                &format!(
                    "You have exceeded the limit of {} simultaneous connections.",
                    shared.config.max_concurrency.unwrap_or(10)
                ),
            ),
            Refusal::ServerError(status) => mailchimp::problem(
                status_code(status),
                if status == 503 {
                    "Service Unavailable"
                } else {
                    "Internal Server Error"
                },
                "An unexpected internal error has occurred. Please contact Support for more information.",
            ),
            Refusal::TooLarge => mailchimp::problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request Entity Too Large",
                "The request body is too large.",
            ),
        },
        SimKind::Hubspot => match refusal {
            Refusal::Unauthorized { missing } => hubspot::error(
                StatusCode::UNAUTHORIZED,
                "INVALID_AUTHENTICATION",
                if missing {
                    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
                } else {
                    "The access token provided is invalid."
                },
            ),
            Refusal::Throttled => {
                let body = json!({
                    "status": "error",
                    "message": "You have reached your ten_secondly_rolling limit.",
                    "errorType": "RATE_LIMIT",
                    "correlationId": uuid::Uuid::new_v4().to_string(),
                    "policyName": "TEN_SECONDLY_ROLLING",
                    "groupName": "api-calls",
                });
                json_response(StatusCode::TOO_MANY_REQUESTS, &body)
            }
            Refusal::ServerError(status) => hubspot::error(
                status_code(status),
                "INTERNAL_ERROR",
                "internal error, please try again",
            ),
            Refusal::TooLarge => hubspot::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "VALIDATION_ERROR",
                "request body too large",
            ),
        },
        SimKind::Sendgrid => match refusal {
            Refusal::Unauthorized { missing } => sendgrid::errors(
                StatusCode::UNAUTHORIZED,
                None,
                if missing {
                    "authorization required"
                } else {
                    "The provided authorization grant is invalid, expired, or revoked"
                },
            ),
            Refusal::Throttled => {
                sendgrid::errors(StatusCode::TOO_MANY_REQUESTS, None, "too many requests")
            }
            Refusal::ServerError(status) => {
                sendgrid::errors(status_code(status), None, "internal error")
            }
            // The docs say "6MB of data, whichever is lower" without naming the refusal; a
            // 413 with SendGrid's error shape is the simulator's choice.
            Refusal::TooLarge => sendgrid::errors(
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                "request body is larger than 6MB",
            ),
        },
        SimKind::Webhook => {
            let (status, message) = match refusal {
                Refusal::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "invalid signature"),
                Refusal::Throttled => (StatusCode::TOO_MANY_REQUESTS, "too many requests"),
                Refusal::ServerError(status) => (status_code(status), "internal error"),
                Refusal::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
            };
            let mut response = json_response(status, &json!({ "error": message }));
            if status == StatusCode::TOO_MANY_REQUESTS {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            response
        }
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

async fn sim_contacts(State(shared): State<Arc<Shared>>) -> Response {
    let contacts = serde_json::to_value(shared.contacts()).unwrap_or(Value::Null);
    json_response(StatusCode::OK, &contacts)
}

async fn sim_stats(State(shared): State<Arc<Shared>>) -> Response {
    let stats = serde_json::to_value(*lock(&shared.stats)).unwrap_or(Value::Null);
    json_response(StatusCode::OK, &stats)
}

async fn sim_requests(State(shared): State<Arc<Shared>>) -> Response {
    let requests: Vec<RecordedRequest> = lock(&shared.requests).iter().cloned().collect();
    json_response(
        StatusCode::OK,
        &serde_json::to_value(requests).unwrap_or(Value::Null),
    )
}
