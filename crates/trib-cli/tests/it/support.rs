//! Runs the real `tributary` binary as a child process for end-to-end tests.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub(crate) const WRITE_KEY: &str = "wk_test_web";
pub(crate) const SERVER_KEY: &str = "wk_test_server";
pub(crate) const ADMIN_KEY: &str = "ak_test_admin";

/// A `tributary serve` child process on a free loopback port.
pub(crate) struct ServerProcess {
    pub(crate) addr: SocketAddr,
    config_path: PathBuf,
    child: Option<Child>,
}

impl ServerProcess {
    /// Starts a server with two sources (`web`, `server`) on `data_dir` and waits until ready.
    pub(crate) fn start(data_dir: &Path) -> ServerProcess {
        Self::start_with(data_dir, "")
    }

    /// Starts a server with extra TOML (more sources) appended to the test configuration.
    pub(crate) fn start_with(data_dir: &Path, extra_toml: &str) -> ServerProcess {
        let addr = free_port();
        let config_path = data_dir.with_extension("toml");
        let config = format!(
            r#"version = 1
[server]
listen = "{addr}"
data_dir = "{data_dir}"
admin_key = "{ADMIN_KEY}"

[[sources]]
name = "web"
write_key = "{WRITE_KEY}"

[[sources]]
name = "server"
write_key = "{SERVER_KEY}"
{extra_toml}
"#,
            data_dir = data_dir.display()
        );
        std::fs::write(&config_path, config).unwrap();
        let mut server = ServerProcess {
            addr,
            config_path,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_tributary"))
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .env("TRIBUTARY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("failed to start tributary serve");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Kills the process with SIGKILL (no flush, no shutdown) and waits for it to die.
    pub(crate) fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts the process again on the same configuration and data.
    pub(crate) fn restart(&mut self) {
        self.kill_hard();
        self.spawn();
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub(crate) fn stop_gracefully(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server not running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop within 20 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Returns the configuration file the server runs with.
    pub(crate) fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = crate::support::blocking_client();
        loop {
            if let Ok(response) = client.get(self.url("/readyz")).send()
                && response.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server on {} not ready within 30 s",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The Prometheus text of `/metrics`, read with the admin key.
    pub(crate) fn metrics(&self) -> String {
        blocking_client()
            .get(self.url("/metrics"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// Reads every stored event through the admin API.
    pub(crate) fn stored_events(&self) -> Vec<Value> {
        read_all(&self.url(""), "/v1/events")
    }

    /// Reads every quarantined message through the admin API.
    pub(crate) fn quarantined(&self) -> Vec<Value> {
        read_all(&self.url(""), "/v1/quarantine")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

fn read_all(base: &str, path: &str) -> Vec<Value> {
    let client = crate::support::blocking_client();
    let get = |url: String| -> Value {
        let response = client.get(url).bearer_auth(ADMIN_KEY).send().unwrap();
        assert!(
            response.status().is_success(),
            "{}",
            response.text().unwrap()
        );
        response.json().unwrap()
    };
    let partitions = get(format!("{base}{path}/partitions"));
    let mut records = Vec::new();
    for view in partitions.as_array().unwrap() {
        let partition = view["partition"].as_u64().unwrap();
        let mut after: Option<u64> = None;
        loop {
            let mut url = format!("{base}{path}?partition={partition}&limit=1000");
            if let Some(after) = after {
                url.push_str(&format!("&after={after}"));
            }
            let page = get(url);
            let page_records = page["records"].as_array().unwrap().clone();
            let last = page_records
                .last()
                .map(|record| record["offset"].as_u64().unwrap());
            records.extend(
                page_records
                    .into_iter()
                    .map(|record| record["data"].clone()),
            );
            match (last, page["next"]["partition"].as_u64()) {
                (Some(last), Some(next)) if next == partition => after = Some(last),
                _ => break,
            }
        }
    }
    records
}

/// Returns a loopback address that was free a moment ago.
pub(crate) fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// The profile `GET /v1/profiles/lookup?{query}` answers, or `None` on 404.
pub(crate) fn lookup(server: &ServerProcess, query: &str) -> Option<Value> {
    let response = crate::support::blocking_client()
        .get(server.url(&format!("/v1/profiles/lookup?{query}")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .unwrap();
    match response.status().as_u16() {
        200 => Some(response.json().unwrap()),
        404 => None,
        other => panic!("lookup answered {other}: {}", response.text().unwrap()),
    }
}

/// The value of one series (`name{labels}` exactly as exposed) in a Prometheus text.
pub(crate) fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

/// Polls the lookup until a profile passes `check` (20 s at most).
pub(crate) fn wait_for(
    server: &ServerProcess,
    query: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(profile) = lookup(server, query)
            && check(&profile)
        {
            return profile;
        }
        assert!(Instant::now() < deadline, "no matching profile for {query}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends a batch to `/v1/batch` with the `web` source's write key; expects 200.
pub(crate) fn send(server: &ServerProcess, batch: Value) {
    let response = crate::support::blocking_client()
        .post(server.url("/v1/batch"))
        .basic_auth(WRITE_KEY, Some(""))
        .json(&json!({ "batch": batch }))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());
}

/// HTTP clients for the tests. The workspace's reqwest uses rustls without a built-in crypto
/// provider (see trib-sync's http.rs), so the ring provider is installed first.
pub(crate) fn blocking_builder() -> reqwest::blocking::ClientBuilder {
    trib_sync::http::install_tls_provider();
    reqwest::blocking::Client::builder()
}

pub(crate) fn blocking_client() -> reqwest::blocking::Client {
    blocking_builder().build().expect("an HTTP client")
}

pub(crate) fn async_client() -> reqwest::Client {
    trib_sync::http::install_tls_provider();
    reqwest::Client::new()
}
