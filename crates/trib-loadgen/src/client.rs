//! One keep-alive HTTP/1.1 connection per worker, on hyper's low-level client.
//!
//! A closed-loop worker has at most one request in flight, so a connection pool (hyper-util's
//! legacy client, reqwest) would only add locking, a checkout per request and a task per
//! connection lookup. Each worker owns its `SendRequest` instead and reconnects when the server
//! closes it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::stats::ErrorKind;

/// Where requests go and the headers every request carries, built once.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) display: String,
    addr: SocketAddr,
    path: Uri,
    host: HeaderValue,
    authorization: HeaderValue,
    gzip: bool,
}

impl Target {
    /// `base` is the server's base URL (`http://127.0.0.1:8080`); requests go to
    /// `{base}/v1/batch`.
    pub(crate) async fn resolve(base: &str, write_key: &str, gzip: bool) -> anyhow::Result<Self> {
        let uri: Uri = base
            .parse()
            .with_context(|| format!("`{base}` is not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => bail!(
                "only http:// is supported (the target is a server on this machine), not {other}://"
            ),
            None => bail!("`{base}` has no scheme: write http://HOST:PORT"),
        }
        let authority = uri
            .authority()
            .with_context(|| format!("`{base}` has no host"))?
            .clone();
        let port = authority.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((authority.host().trim_matches(['[', ']']), port))
            .await
            .with_context(|| format!("cannot resolve {}", authority.host()))?
            .next()
            .with_context(|| format!("{} resolves to no address", authority.host()))?;
        let path = format!("{}/v1/batch", uri.path().trim_end_matches('/'));
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"));
        Ok(Self {
            display: format!("http://{authority}{path}"),
            addr,
            path: path.parse().context("the URL path is not valid")?,
            host: HeaderValue::from_str(authority.as_str())
                .context("the host is not a valid header")?,
            authorization: HeaderValue::from_str(&format!("Basic {credentials}"))
                .context("the write key cannot be sent in a header")?,
            gzip,
        })
    }

    fn request(&self, body: Bytes) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.path.clone();
        let headers = request.headers_mut();
        headers.insert(header::HOST, self.host.clone());
        headers.insert(header::AUTHORIZATION, self.authorization.clone());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.gzip {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        request
    }
}

/// A response, read to the end.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: Bytes,
}

/// A failed request, with what is known about why.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) kind: ErrorKind,
    pub(crate) detail: String,
}

impl Failure {
    pub(crate) fn new(kind: ErrorKind, detail: impl std::fmt::Display) -> Self {
        Self {
            kind,
            detail: detail.to_string(),
        }
    }
}

/// A worker's connection, opened on first use and again after a failure.
#[derive(Debug, Default)]
pub(crate) struct Connection {
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Connections opened so far.
    pub(crate) opened: u64,
}

impl Connection {
    /// Sends one request and reads its answer. Gives up after `timeout`, dropping the
    /// connection, since an HTTP/1.1 connection cannot be reused with a request in flight.
    pub(crate) async fn send(
        &mut self,
        target: &Target,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, Failure> {
        match tokio::time::timeout(timeout, self.send_inner(target, body)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(failure)) => {
                self.sender = None;
                Err(failure)
            }
            Err(_) => {
                self.sender = None;
                Err(Failure::new(
                    ErrorKind::Timeout,
                    format!("no answer within {timeout:?}"),
                ))
            }
        }
    }

    async fn send_inner(&mut self, target: &Target, body: Bytes) -> Result<Answer, Failure> {
        if self.sender.as_ref().is_some_and(SendRequest::is_closed) {
            self.sender = None;
        }
        let sender = match &mut self.sender {
            Some(sender) => sender,
            None => {
                let sender = connect(target).await?;
                self.opened += 1;
                self.sender.insert(sender)
            }
        };
        sender
            .ready()
            .await
            .map_err(|error| Failure::new(ErrorKind::Send, error))?;
        let response = sender
            .send_request(target.request(body))
            .await
            .map_err(|error| Failure::new(ErrorKind::Send, error))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<f64>().ok())
            .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
            .map(Duration::from_secs_f64);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| Failure::new(ErrorKind::Body, error))?
            .to_bytes();
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }
}

async fn connect(target: &Target) -> Result<SendRequest<Full<Bytes>>, Failure> {
    let stream = TcpStream::connect(target.addr)
        .await
        .map_err(|error| Failure::new(ErrorKind::Connect, format!("{}: {error}", target.addr)))?;
    stream
        .set_nodelay(true)
        .map_err(|error| Failure::new(ErrorKind::Connect, error))?;
    let (sender, connection) = http1::Builder::new()
        .writev(true)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|error| Failure::new(ErrorKind::Connect, error))?;
    tokio::spawn(async move {
        // The error, if any, reaches the worker through its next `send_request`.
        let _ = connection.await;
    });
    Ok(sender)
}
