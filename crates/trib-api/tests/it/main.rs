//! The ingestion API over real HTTP: every kind of bad input gets its specific answer, nothing
//! accepted is lost, and the server keeps serving afterwards.

// Test helpers outside #[test] functions unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod bad_input;
mod destinations;
mod export;
mod ingest;
mod privacy;
mod profiles;
mod registry;
mod render;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

use trib_config::Config;
use trib_log::{EventLog, MemoryLog};

pub(crate) const WRITE_KEY: &str = "wk_web";
pub(crate) const ADMIN_KEY: &str = "ak_admin";

/// A test server's logs: `events`, and empty in-memory quarantine and resolutions logs.
pub(crate) fn memory_logs(events: Arc<dyn EventLog>) -> trib_api::Logs {
    trib_api::Logs {
        events,
        quarantine: Arc::new(MemoryLog::new(1)),
        resolutions: Arc::new(MemoryLog::new(1)),
    }
}

/// `GET {base}{path}` with the admin key: the status and the JSON body.
pub(crate) async fn admin_get(
    http: &reqwest::Client,
    base: &str,
    path: &str,
) -> (u16, serde_json::Value) {
    let response = http
        .get(format!("{base}{path}"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Serves the API of `state` on a loopback port until the test ends.
pub(crate) async fn serve(state: trib_api::AppState) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, trib_api::app(Arc::new(state)))
            .await
            .unwrap()
    });
    addr
}

/// A server on a loopback port over in-memory logs.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) events: Arc<dyn EventLog>,
    pub(crate) quarantine: Arc<dyn EventLog>,
    pub(crate) http: reqwest::Client,
}

impl TestServer {
    pub(crate) async fn start() -> TestServer {
        Self::start_with_logs(Arc::new(MemoryLog::new(4)), Arc::new(MemoryLog::new(1))).await
    }

    pub(crate) async fn start_with_logs(
        events: Arc<dyn EventLog>,
        quarantine: Arc<dyn EventLog>,
    ) -> TestServer {
        Self::start_with(events, quarantine, "").await
    }

    /// Starts a server whose `web` source table ends with `web_toml` (rules, `[sources.webhook]`).
    pub(crate) async fn start_with(
        events: Arc<dyn EventLog>,
        quarantine: Arc<dyn EventLog>,
        web_toml: &str,
    ) -> TestServer {
        Self::start_with_resolutions(events, quarantine, Arc::new(MemoryLog::new(1)), web_toml)
            .await
    }

    /// As [`TestServer::start_with`], with the quarantine resolutions log given too, so that a
    /// second server (a restart with another configuration) can share all three logs.
    pub(crate) async fn start_with_resolutions(
        events: Arc<dyn EventLog>,
        quarantine: Arc<dyn EventLog>,
        resolutions: Arc<dyn EventLog>,
        web_toml: &str,
    ) -> TestServer {
        let config = Config::from_toml_str(
            &format!(
                "version = 1\n[server]\nadmin_key = \"{ADMIN_KEY}\"\n[[sources]]\nname = \"ios\"\nwrite_key = \"wk_ios\"\n[[sources]]\nname = \"web\"\nwrite_key = \"{WRITE_KEY}\"\n{web_toml}\n"
            ),
            &|_| None,
        )
        .unwrap();
        let registry = Arc::new(std::sync::RwLock::new(trib_schema::Registry::empty()));
        let logs = trib_api::Logs {
            events: events.clone(),
            quarantine: quarantine.clone(),
            resolutions,
        };
        let state = trib_api::AppState::new(&config, logs, registry, None).unwrap();
        let addr = crate::serve(state).await;
        TestServer {
            addr,
            events,
            quarantine,
            http: crate::http_client(),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Posts a body with the `web` source's write key as Basic credentials.
    pub(crate) async fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(self.url(path))
            .basic_auth(WRITE_KEY, Some(""))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Returns every stored event's JSON, partition by partition.
    pub(crate) async fn stored(&self) -> Vec<serde_json::Value> {
        read_all(self.events.as_ref()).await
    }

    /// Returns every quarantined message's JSON.
    pub(crate) async fn quarantined(&self) -> Vec<serde_json::Value> {
        read_all(self.quarantine.as_ref()).await
    }

    /// Checks that a good message is still accepted, i.e. the server keeps serving.
    pub(crate) async fn assert_still_serving(&self) {
        let (status, body) = self
            .post("/v1/track", r#"{"userId":"u-ok","event":"Still Serving"}"#)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["accepted"], 1);
    }
}

async fn read_all(log: &dyn EventLog) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for partition in 0..log.partition_count() {
        for record in log.read(partition, 0, usize::MAX).await.unwrap() {
            all.push(serde_json::from_slice(&record.payload).unwrap());
        }
    }
    all
}

/// An HTTP client for the tests. The workspace's reqwest uses rustls without a built-in
/// crypto provider (see trib-sync's http.rs), so the ring provider is installed first.
pub(crate) fn http_client() -> reqwest::Client {
    trib_sync::http::install_tls_provider();
    reqwest::Client::new()
}
