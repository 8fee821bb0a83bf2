//! The HTTP layer every connector calls its ESP through: one [`Api`] per destination.
//!
//! [`Api::send`] takes a permit from the destination's [`Limiter`], sends the request with a
//! per-call timeout, reads the whole body, records metrics
//! (`tributary_sync_api_calls_total{destination,endpoint,status}` and the histogram
//! `tributary_sync_api_latency_seconds{destination}`), feeds the response's status and
//! rate-limit headers back to the limiter, and classes failures into [`CallError`].
//!
//! For an ESP whose rate limits are per endpoint (SendGrid: each endpoint has its own
//! `X-RateLimit-*` window), [`Api::rates_per_endpoint`] gives every endpoint label its own
//! limiter for the rate, pauses and 429s it reports, so that one exhausted window (say, the
//! job status polls) neither pauses nor caps calls to another (the contact upserts); the
//! destination's limiter then keeps only the concurrency cap. The classes:
//!
//! | what happened | class |
//! |---|---|
//! | 429 | `Throttled`, with the `Retry-After` (or rate-limit reset) delay |
//! | 5xx, 408, timeout, connect error, reset, body cut short | `Transient` |
//! | 401, 403 | `Auth` |
//! | other 4xx | returned to the connector, which reads the ESP's error ([`ApiResponse`]) |
//!
//! Request and response bodies are never logged (they hold emails and field values); error
//! details quoted from an ESP go through [`redact`] first.
//!
//! TLS: reqwest 0.13's `rustls` feature brings the aws-lc provider (a slow C build); this
//! crate enables `rustls-no-provider` instead and installs rustls's **ring** provider as the
//! process default before building a client ([`install_tls_provider`]). reqwest then
//! verifies certificates with the platform verifier (the system's CA store). The simulators
//! speak plain HTTP.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::connector::{CallError, DestinationKind, ErrorClass, Limits};
use crate::limit::{Feedback, Limiter};

/// The default per-call timeout. Mailchimp documents 120 s for its slowest calls; ours are
/// small (one member, ≤100 contacts, a job status), so a minute is generous.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How a destination authenticates.
#[derive(Clone)]
pub enum Auth {
    /// No `Authorization` header (the webhook signs its body instead).
    None,
    /// HTTP Basic (Mailchimp: any user name, the API key as password).
    Basic { user: String, password: String },
    /// `Authorization: Bearer <token>` (HubSpot, SendGrid).
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::None => "Auth::None",
            Auth::Basic { .. } => "Auth::Basic(***)",
            Auth::Bearer(_) => "Auth::Bearer(***)",
        })
    }
}

type EndpointLimiters =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<&'static str, Limiter>>>;

/// One destination's HTTP client: limiter, timeout, authentication and metrics.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    destination: DestinationKind,
    /// The metrics label: the configured destination name (the ESP kind until named).
    label: std::sync::Arc<str>,
    limiter: Limiter,
    /// Per endpoint label, when the ESP's rate limits are per endpoint.
    endpoints: Option<EndpointLimiters>,
    /// The seed of each endpoint's limiter: no rate until headers tell one.
    endpoint_limits: Limits,
    timeout: Duration,
    auth: Auth,
}

/// A response that reached the connector: a 2xx, or a 4xx that only the ESP's error body can
/// class (400, 404, 409, 422, ...).
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Api {
    /// A client for `destination`, its limiter seeded from `limits`.
    pub fn new(
        destination: DestinationKind,
        limits: &Limits,
        auth: Auth,
        timeout: Duration,
    ) -> Result<Self, CallError> {
        install_tls_provider();
        let client = reqwest::Client::builder()
            .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            // Keep idle connections below Mailchimp's 10-connection cap; the limiter caps
            // what is in flight.
            .pool_max_idle_per_host(limits.max_concurrency.max(1))
            .build()
            .map_err(|error| CallError {
                class: ErrorClass::Fatal,
                status: None,
                retry_after: None,
                detail: format!("cannot build the HTTP client: {error}"),
            })?;
        Ok(Self {
            client,
            destination,
            label: destination.as_str().into(),
            limiter: Limiter::new(limits),
            endpoints: None,
            endpoint_limits: Limits {
                rate_max: None,
                ..*limits
            },
            timeout,
            auth,
        })
    }

    /// Gives each endpoint label its own limiter for rates, pauses and 429s (see the module
    /// doc); the destination's limiter keeps the concurrency cap.
    pub fn rates_per_endpoint(mut self) -> Self {
        self.endpoints = Some(Default::default());
        self
    }

    /// The limiter of `endpoint`, when rates are per endpoint.
    fn endpoint_limiter(&self, endpoint: &'static str) -> Option<Limiter> {
        let endpoints = self.endpoints.as_ref()?;
        let mut endpoints = endpoints
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(
            endpoints
                .entry(endpoint)
                .or_insert_with(|| Limiter::new(&self.endpoint_limits))
                .clone(),
        )
    }

    /// Labels this client's metrics with the configured destination name, so that two
    /// destinations of one ESP are told apart.
    pub fn labelled(mut self, name: &str) -> Self {
        self.label = name.into();
        self
    }

    /// The destination's limiter (for the engine's metrics and tests).
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// A request with the destination's authentication.
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        let builder = self.client.request(method, url);
        match &self.auth {
            Auth::None => builder,
            Auth::Basic { user, password } => builder.basic_auth(user, Some(password)),
            Auth::Bearer(token) => builder.bearer_auth(token),
        }
    }

    /// A request without authentication (a pre-signed download URL such as Mailchimp's
    /// batch results, where an `Authorization` header would be refused).
    pub fn request_without_auth(&self, method: Method, url: &str) -> RequestBuilder {
        self.client.request(method, url)
    }

    /// Sends `request` under the limiter and classes the outcome (see the module doc).
    /// `endpoint` is the metric label: a route template such as `members.put`, never a path
    /// with ids or emails in it.
    pub async fn send(
        &self,
        endpoint: &'static str,
        request: RequestBuilder,
    ) -> Result<ApiResponse, CallError> {
        // The endpoint's window first: a call waiting for it holds no concurrency slot.
        let endpoint_limiter = self.endpoint_limiter(endpoint);
        let endpoint_permit = match &endpoint_limiter {
            Some(limiter) => Some(limiter.acquire().await),
            None => None,
        };
        let permit = self.limiter.acquire().await;
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.timeout, async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        })
        .await;
        let elapsed = started.elapsed();
        let destination = self.label.to_string();
        metrics::histogram!("tributary_sync_api_latency_seconds", "destination" => destination.clone(), "esp" => self.destination.as_str())
            .record(elapsed.as_secs_f64());
        let (status, headers, body) = match outcome {
            Err(_) => {
                self.count(endpoint, "timeout");
                drop(permit);
                return Err(transient(
                    None,
                    format!("{endpoint}: no response within {:?}", self.timeout),
                ));
            }
            Ok(Err(error)) => {
                let label = if error.is_connect() {
                    "connect"
                } else {
                    "transport"
                };
                self.count(endpoint, label);
                drop(permit);
                // reqwest's error text names the URL, which may hold an id (a subscriber
                // hash or contact id), not an email: the URL paths we build never hold one.
                return Err(transient(
                    None,
                    format!("{endpoint}: {}", transport_detail(&error)),
                ));
            }
            Ok(Ok(parts)) => parts,
        };
        self.count(endpoint, &status.to_string());
        let feedback = Feedback::from_response(status, &headers);
        match (&endpoint_limiter, &endpoint_permit) {
            (Some(limiter), Some(endpoint_permit)) => {
                limiter.observe(&feedback, endpoint_permit.started());
            }
            _ => self.limiter.observe(&feedback, permit.started()),
        }
        drop(permit);
        drop(endpoint_permit);
        tracing::debug!(
            destination = %destination,
            endpoint,
            status,
            elapsed_ms = elapsed.as_millis() as u64,
            "api call"
        );
        let response = ApiResponse {
            status,
            headers,
            body,
        };
        match status {
            200..=299 => Ok(response),
            429 => Err(CallError {
                class: ErrorClass::Throttled,
                status: Some(status),
                retry_after: feedback.retry_after.or(feedback.reset_after),
                detail: format!("{endpoint}: throttled ({})", response.error_summary()),
            }),
            401 | 403 => Err(CallError {
                class: ErrorClass::Auth,
                status: Some(status),
                retry_after: None,
                detail: format!("{endpoint}: {}", response.error_summary()),
            }),
            408 | 500..=599 => Err(CallError {
                class: ErrorClass::Transient,
                status: Some(status),
                retry_after: feedback.retry_after,
                detail: format!("{endpoint}: {}", response.error_summary()),
            }),
            _ => Ok(response),
        }
    }

    /// [`Api::send`] for calls where any non-2xx answer fails the whole call: 404 is a setup
    /// problem (an unknown list, a wrong base URL: `Auth`, retried slowly), other 4xx are
    /// `Fatal` (the request itself is wrong).
    pub async fn send_expect_success(
        &self,
        endpoint: &'static str,
        request: RequestBuilder,
    ) -> Result<ApiResponse, CallError> {
        let response = self.send(endpoint, request).await?;
        if response.is_success() {
            return Ok(response);
        }
        let class = if response.status == 404 {
            ErrorClass::Auth
        } else {
            ErrorClass::Fatal
        };
        Err(response.error(class, endpoint))
    }

    /// `GET url` through [`Api::send_expect_success`], its body read as JSON.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        url: &str,
    ) -> Result<T, CallError> {
        self.send_expect_success(endpoint, self.request(Method::GET, url))
            .await?
            .json(endpoint)
    }

    fn count(&self, endpoint: &'static str, status: &str) {
        metrics::counter!(
            "tributary_sync_api_calls_total",
            "destination" => self.label.to_string(),
            "esp" => self.destination.as_str(),
            "endpoint" => endpoint,
            "status" => status.to_owned()
        )
        .increment(1);
    }
}

impl ApiResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON. A 2xx body that does not parse was cut short or garbled in transit:
    /// `Transient`.
    pub fn json<T: DeserializeOwned>(&self, endpoint: &'static str) -> Result<T, CallError> {
        serde_json::from_slice(&self.body).map_err(|error| {
            transient(
                Some(self.status),
                format!(
                    "{endpoint}: unreadable response body ({})",
                    error.classify_name()
                ),
            )
        })
    }

    /// The body as JSON, or `Value::Null` when it is not JSON (error bodies).
    pub fn json_or_null(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A [`CallError`] of `class` for this response.
    pub fn error(&self, class: ErrorClass, endpoint: &'static str) -> CallError {
        CallError {
            class,
            status: Some(self.status),
            retry_after: None,
            detail: format!("{endpoint}: {}", self.error_summary()),
        }
    }

    /// A short, redacted summary of the ESP's error body: the first of Mailchimp's
    /// `title`/`detail`, HubSpot's `category`/`message`, SendGrid's `errors[0].message`.
    pub fn error_summary(&self) -> String {
        let body = self.json_or_null();
        let pick = |key: &str| body.get(key).and_then(|value| value.as_str());
        let first_error = body
            .get("errors")
            .and_then(|errors| errors.get(0))
            .and_then(|error| error.get("message"))
            .and_then(|message| message.as_str());
        let parts: Vec<&str> = [
            pick("title"),
            pick("category"),
            pick("detail"),
            pick("message"),
            first_error,
        ]
        .into_iter()
        .flatten()
        .collect();
        if parts.is_empty() {
            format!("HTTP {}", self.status)
        } else {
            redact(&parts.join(": "))
        }
    }
}

/// Removes personal data an ESP may quote in an error message: every word with an `@` in it
/// becomes `<email>`, and the text is cut to 200 characters.
pub fn redact(text: &str) -> String {
    let words: Vec<&str> = text
        .split_whitespace()
        .map(|word| if word.contains('@') { "<email>" } else { word })
        .collect();
    let joined = words.join(" ");
    match joined.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &joined[..cut]),
        None => joined,
    }
}

/// Installs rustls's ring provider as the process default, once. A provider installed
/// earlier by the embedding program wins (reqwest uses whichever is installed).
pub fn install_tls_provider() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // Err means another provider is already the default: fine, reqwest uses it.
        // rustls 0.23.48 deprecates its ring provider because ring lacks post-quantum key
        // exchange; the project chose ring over aws-lc (a slow C build) for the whole graph.
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let _ = provider.install_default();
    });
}

/// Parses a header value as text (for job ids and the like).
pub fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|value: &HeaderValue| value.to_str().ok())
}

/// A `Transient` [`CallError`].
pub fn transient(status: Option<u16>, detail: String) -> CallError {
    CallError {
        class: ErrorClass::Transient,
        status,
        retry_after: None,
        detail,
    }
}

/// What kind of transport failure it was, without the URL.
fn transport_detail(error: &reqwest::Error) -> &'static str {
    if error.is_connect() {
        "connection failed"
    } else if error.is_timeout() {
        "timed out"
    } else if error.is_body() || error.is_decode() {
        "response body cut short"
    } else if error.is_request() {
        "request failed (connection reset?)"
    } else {
        "transport error"
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "unexpected shape",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn limits() -> Limits {
        Limits {
            max_batch: 10,
            max_delete_batch: 10,
            max_concurrency: 4,
            rate_max: None,
            rate_interval: Duration::from_secs(1),
            partial_updates: true,
        }
    }

    /// A loopback server answering every connection with `raw` (a whole HTTP response, or
    /// a deliberately broken one), then closing it.
    async fn serve_raw(raw: &'static str, delay: Duration) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buffer = vec![0_u8; 16 * 1024];
                    let _ = socket.read(&mut buffer).await;
                    tokio::time::sleep(delay).await;
                    let _ = socket.write_all(raw.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        format!("http://{addr}/")
    }

    async fn call(raw: &'static str) -> Result<ApiResponse, CallError> {
        let url = serve_raw(raw, Duration::ZERO).await;
        let api = Api::new(
            DestinationKind::Hubspot,
            &limits(),
            Auth::Bearer("t".into()),
            DEFAULT_TIMEOUT,
        )
        .expect("client");
        api.send("test", api.request(Method::GET, &url)).await
    }

    #[track_caller]
    fn check_error(
        result: Result<ApiResponse, CallError>,
        class: ErrorClass,
        status: Option<u16>,
    ) -> CallError {
        let error = result.expect_err("call should fail");
        assert_eq!((error.class, error.status), (class, status), "{error}");
        error
    }

    #[tokio::test]
    async fn classes_statuses() {
        let throttled =
            call("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n")
                .await;
        let error = check_error(throttled, ErrorClass::Throttled, Some(429));
        assert_eq!(error.retry_after, Some(Duration::from_secs(7)));

        let unavailable =
            call("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").await;
        check_error(unavailable, ErrorClass::Transient, Some(503));

        let body = "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 57\r\n\r\n{\"title\":\"API Key Invalid\",\"detail\":\"key of a@b.example\"}";
        let error = check_error(call(body).await, ErrorClass::Auth, Some(401));
        assert!(error.detail.contains("API Key Invalid"), "{}", error.detail);
        assert!(
            !error.detail.contains("a@b.example"),
            "redacted: {}",
            error.detail
        );

        let ok = call("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            .await
            .expect("2xx");
        assert_eq!(ok.status, 200);
        let not_found = call("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            .await
            .expect("4xx to the connector");
        assert_eq!(not_found.status, 404);
    }

    /// A window exhausted on one endpoint pauses that endpoint only when rates are per
    /// endpoint, and every call of the destination otherwise.
    #[tokio::test]
    async fn an_exhausted_window_pauses_only_its_endpoint_when_rates_are_per_endpoint() {
        let reset = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 60;
        let raw: &'static str = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\nX-RateLimit-Limit: 5\r\nX-RateLimit-Remaining: 0\r\n\
                 X-RateLimit-Reset: {reset}\r\nContent-Length: 2\r\n\r\n{{}}"
            )
            .into_boxed_str(),
        );
        let url = serve_raw(raw, Duration::ZERO).await;
        let client = || {
            Api::new(
                DestinationKind::Sendgrid,
                &limits(),
                Auth::None,
                DEFAULT_TIMEOUT,
            )
            .expect("client")
        };
        async fn call(
            api: &Api,
            url: &str,
            endpoint: &'static str,
        ) -> Result<Result<ApiResponse, CallError>, tokio::time::error::Elapsed> {
            let request = api.request(Method::GET, url);
            tokio::time::timeout(Duration::from_millis(500), api.send(endpoint, request)).await
        }

        let shared = client();
        call(&shared, &url, "jobs.get")
            .await
            .expect("first call")
            .expect("2xx");
        assert!(
            call(&shared, &url, "contacts.put").await.is_err(),
            "one limiter: the exhausted window pauses every endpoint"
        );

        let per_endpoint = client().rates_per_endpoint();
        call(&per_endpoint, &url, "jobs.get")
            .await
            .expect("first call")
            .expect("2xx");
        call(&per_endpoint, &url, "contacts.put")
            .await
            .expect("another endpoint is not paused")
            .expect("2xx");
        assert!(
            call(&per_endpoint, &url, "jobs.get").await.is_err(),
            "the exhausted endpoint waits for its reset"
        );
    }

    #[tokio::test]
    async fn transport_failures_are_transient() {
        // The body is shorter than Content-Length: cut short.
        let cut = call("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"id\":").await;
        check_error(cut, ErrorClass::Transient, None);
        // The connection closes without a response (a reset, as far as the client knows).
        let closed = call("").await;
        check_error(closed, ErrorClass::Transient, None);
        // Nothing listens.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let api = Api::new(
            DestinationKind::Sendgrid,
            &limits(),
            Auth::None,
            DEFAULT_TIMEOUT,
        )
        .expect("client");
        let refused = api
            .send("test", api.request(Method::GET, &format!("http://{addr}/")))
            .await;
        check_error(refused, ErrorClass::Transient, None);
    }

    #[tokio::test]
    async fn slow_answers_time_out() {
        let url = serve_raw(
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        let api = Api::new(
            DestinationKind::Webhook,
            &limits(),
            Auth::None,
            Duration::from_millis(100),
        )
        .expect("client");
        let error = check_error(
            api.send("test", api.request(Method::GET, &url)).await,
            ErrorClass::Transient,
            None,
        );
        assert!(error.detail.contains("no response"), "{}", error.detail);
    }

    #[test]
    fn redact_removes_emails_and_bounds_length() {
        assert_eq!(redact("ann@x.example looks fake"), "<email> looks fake");
        assert_eq!(redact(&"a".repeat(300)).len(), 203);
    }
}
