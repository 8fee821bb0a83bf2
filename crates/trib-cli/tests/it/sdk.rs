//! The official Segment and RudderStack Python SDKs against a running `tributary serve`.
//!
//! The SDKs are installed from PyPI into a virtualenv under the target directory on first use.
//! Without network access or Python the tests print a notice and skip, unless
//! `TRIBUTARY_REQUIRE_SDK_TESTS=1` (set by `.ci/run`) makes that a failure.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

use crate::support::{ServerProcess, WRITE_KEY};

const SDK_PACKAGES: [&str; 2] = [
    "segment-analytics-python==2.4.0",
    "rudder-sdk-python==2.1.9",
];

/// Returns the virtualenv's python, creating the virtualenv once; `None` to skip.
fn sdk_python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let venv = std::env::var_os("TRIBUTARY_SDK_VENV")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sdk-venv"));
            let python = venv.join("bin").join("python");
            let ready = venv.join(".installed");
            if !ready.exists() {
                let created = Command::new("python3")
                    .arg("-m")
                    .arg("venv")
                    .arg(&venv)
                    .status();
                let installed = created.is_ok_and(|status| status.success())
                    && Command::new(&python)
                        .args([
                            "-m",
                            "pip",
                            "install",
                            "--quiet",
                            "--disable-pip-version-check",
                        ])
                        .args(SDK_PACKAGES)
                        .status()
                        .is_ok_and(|status| status.success());
                if !installed {
                    let message =
                        format!("cannot install {SDK_PACKAGES:?} into {}", venv.display());
                    assert!(
                        std::env::var_os("TRIBUTARY_REQUIRE_SDK_TESTS").is_none(),
                        "{message}"
                    );
                    eprintln!("notice: skipping the SDK tests: {message}");
                    return None;
                }
                std::fs::write(&ready, SDK_PACKAGES.join("\n")).unwrap();
            }
            Some(python)
        })
        .clone()
}

/// Runs the SDK script and returns the messages the SDK says it sent.
fn send_with_sdk(python: &PathBuf, sdk: &str, host: &str, gzip: bool) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/sdk_send.py");
    let mut command = Command::new(python);
    command.arg(script).arg(sdk).arg(host).arg(WRITE_KEY);
    if gzip {
        command.arg("--gzip");
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "sdk script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["errors"],
        Value::Array(vec![]),
        "the SDK reported errors"
    );
    report["sent"].as_array().unwrap().clone()
}

fn by_message_id(events: &[Value]) -> HashMap<String, Vec<Value>> {
    let mut map: HashMap<String, Vec<Value>> = HashMap::new();
    for event in events {
        map.entry(event["messageId"].as_str().unwrap().to_owned())
            .or_default()
            .push(event.clone());
    }
    map
}

/// Checks that every sent message is stored exactly once with its fields intact.
fn assert_stored_exactly_once(sent: &[Value], stored: &[Value], library: &str) {
    let stored = by_message_id(stored);
    for message in sent {
        let id = message["messageId"].as_str().unwrap();
        let copies = stored
            .get(id)
            .unwrap_or_else(|| panic!("message {id} ({}) not stored", message["type"]));
        assert_eq!(
            copies.len(),
            1,
            "message {id} stored {} times",
            copies.len()
        );
        let event = &copies[0];
        assert_eq!(event["type"], message["type"], "{id}");
        assert_eq!(event["source"], "web");
        assert_eq!(event["context"]["library"]["name"], library);
        for field in [
            "userId",
            "anonymousId",
            "event",
            "name",
            "category",
            "groupId",
            "previousId",
        ] {
            if let Some(value) = message.get(field).filter(|value| !value.is_null()) {
                assert_eq!(&event[field], value, "{id}: field {field}");
            }
        }
        for field in ["properties", "traits"] {
            if let Some(value) = message
                .get(field)
                .filter(|value| value.as_object().is_some_and(|map| !map.is_empty()))
            {
                assert_eq!(&event[field], value, "{id}: field {field}");
            }
        }
        assert!(
            event["receivedAt"].is_string() && event["timestamp"].is_string(),
            "{id}: {event}"
        );
    }
}

#[test]
fn segment_sdk_calls_are_stored_exactly_once_with_their_fields() {
    let Some(python) = sdk_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let plain = send_with_sdk(&python, "segment", &server.url(""), false);
    let gzipped = send_with_sdk(&python, "segment", &server.url(""), true);
    let sent: Vec<Value> = plain.into_iter().chain(gzipped).collect();
    assert_eq!(sent.len(), 2 * 47);
    let stored = server.stored_events();
    assert_eq!(stored.len(), sent.len(), "events in the log");
    assert_stored_exactly_once(&sent, &stored, "analytics-python");
    let types: std::collections::BTreeSet<&str> = stored
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types.into_iter().collect::<Vec<_>>(),
        ["alias", "group", "identify", "page", "screen", "track"]
    );
}

#[test]
fn rudderstack_sdk_calls_are_stored_exactly_once_with_their_fields() {
    let Some(python) = sdk_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let sent = send_with_sdk(&python, "rudder", &server.url(""), true);
    let stored = server.stored_events();
    assert_eq!(stored.len(), sent.len());
    let library = stored[0]["context"]["library"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(library.contains("python"), "library {library}");
    assert_stored_exactly_once(&sent, &stored, &library);
}

/// A proxy in front of the server that lets each request through but answers the client's
/// first attempt of every batch (identified by its messageIds: the SDK stamps a new `sentAt` on
/// each attempt) with a 503, as a load balancer that lost the answer would: the server has
/// stored the batch, and the SDK retries it.
struct LossyProxy {
    addr: std::net::SocketAddr,
    retries_seen: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

impl LossyProxy {
    fn start(upstream: String) -> LossyProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let seen: Arc<Mutex<std::collections::HashSet<Vec<String>>>> = Arc::default();
        let retries_seen = Arc::new(AtomicUsize::new(0));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let counter = retries_seen.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (seen, counter, upstream) = (seen.clone(), counter.clone(), upstream.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 10 << 20).await.unwrap();
                let mut forward = crate::support::async_client()
                    .post(format!("{upstream}{}", parts.uri.path()))
                    .body(body.clone());
                for name in [
                    "authorization",
                    "content-type",
                    "content-encoding",
                    "user-agent",
                ] {
                    if let Some(value) = parts.headers.get(name) {
                        forward = forward.header(name, value.as_bytes());
                    }
                }
                let response = forward.send().await.unwrap();
                let status = response.status().as_u16();
                let answer = response.bytes().await.unwrap();
                let first_attempt = seen
                    .lock()
                    .unwrap()
                    .insert(batch_identity(&parts.headers, &body));
                if !first_attempt {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                if first_attempt {
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        axum::body::Bytes::from_static(b"lost"),
                    )
                } else {
                    (axum::http::StatusCode::from_u16(status).unwrap(), answer)
                }
            }
        });
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        LossyProxy {
            addr,
            retries_seen,
            _runtime: runtime,
        }
    }
}

/// Returns the messageIds of a (possibly gzipped) batch body.
fn batch_identity(headers: &axum::http::HeaderMap, body: &[u8]) -> Vec<String> {
    let mut json = Vec::new();
    if headers
        .get("content-encoding")
        .is_some_and(|value| value == "gzip")
    {
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut json).unwrap();
    } else {
        json.extend_from_slice(body);
    }
    let value: Value = serde_json::from_slice(&json).unwrap();
    value["batch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["messageId"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn sdk_retries_of_an_already_stored_batch_create_no_duplicates() {
    let Some(python) = sdk_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let proxy = LossyProxy::start(server.url(""));
    let sent = send_with_sdk(&python, "segment", &format!("http://{}", proxy.addr), true);
    assert!(
        proxy.retries_seen.load(Ordering::SeqCst) >= 1,
        "the SDK never retried"
    );
    let stored = server.stored_events();
    assert_eq!(
        stored.len(),
        sent.len(),
        "a retried batch created duplicates or lost events"
    );
    assert_stored_exactly_once(&sent, &stored, "analytics-python");
}
