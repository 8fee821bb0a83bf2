//! Every endpoint refuses a missing key, a wrong key and a key without its scope.
//!
//! The test walks [`trib_api::routes`], the table the router is built from, so a new route joins
//! it automatically: one without a scope check, or with a scope it does not enforce, fails here.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use trib_api::keys::KeyStore;
use trib_api::{Access, RouteInfo, Scope};
use trib_config::Config;
use trib_log::MemoryLog;

use crate::{ADMIN_KEY, WRITE_KEY};

const WEBHOOK: &str = r#"
[sources.webhook]
secret = "whsec_test_only"
signature_header = "X-Shop-Hmac-Sha256"
algorithm = "sha256"
encoding = "base64"

[[sources.webhook.mappings]]
when = { path = "$.topic", equals = "orders/create" }
type = "track"
event = "Order Completed"
user_id = "$.customer.id"
"#;

struct KeyServer {
    base: String,
    http: reqwest::Client,
    store: KeyStore,
    _dir: tempfile::TempDir,
}

/// A server whose data directory holds an API key file, with the admin key configured too.
async fn start() -> KeyServer {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml_str(
        &format!(
            "version = 1\n[server]\nadmin_key = \"{ADMIN_KEY}\"\ndata_dir = {data_dir:?}\n[[sources]]\nname = \"web\"\nwrite_key = \"{WRITE_KEY}\"\n{WEBHOOK}\n",
            data_dir = dir.path().display().to_string(),
        ),
        &|_| None,
    )
    .unwrap();
    let registry = Arc::new(std::sync::RwLock::new(trib_schema::Registry::empty()));
    let logs = crate::memory_logs(Arc::new(MemoryLog::new(2)));
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let state = trib_api::AppState::new(&config, logs, registry, Some(metrics)).unwrap();
    let addr = crate::serve(state).await;
    KeyServer {
        base: format!("http://{addr}"),
        http: crate::http_client(),
        store: KeyStore::in_data_dir(dir.path()),
        _dir: dir,
    }
}

/// How a request authenticates.
#[derive(Debug, Clone)]
enum Credential {
    None,
    Bearer(String),
    Basic(String),
}

impl KeyServer {
    async fn call(&self, route: &RouteInfo, credential: &Credential) -> (u16, Value) {
        let method = Method::from_bytes(route.method.as_str().as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method, format!("{}{}", self.base, sample_path(route.path)))
            .header("content-type", "application/json")
            .body(sample_body(route));
        request = match credential {
            Credential::None => request,
            Credential::Bearer(key) => request.bearer_auth(key),
            Credential::Basic(key) => request.basic_auth(key, Some("")),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }
}

/// A well-formed body, so that ingestion routes (which read the body before the write key, as
/// it may hold `writeKey`) get as far as authentication.
fn sample_body(route: &RouteInfo) -> String {
    let message = r#"{"type":"track","userId":"u-auth","event":"Auth Checked","previousId":"u-old","groupId":"g-1","name":"Home"}"#;
    match (route.access, route.path) {
        (Access::WriteKey, "/v1/batch" | "/v1/b" | "/v1/import") => {
            format!(r#"{{"batch":[{message}]}}"#)
        }
        (Access::WriteKey, _) => message.to_owned(),
        _ => "{}".to_owned(),
    }
}

/// The route's path with sample values for its parameters.
fn sample_path(template: &str) -> String {
    let samples = [
        ("{source}", "web"),
        ("{id}", "p_sample"),
        ("{name}", "Signed Up"),
        ("{item}", "r_sample"),
    ];
    let mut path = template.to_owned();
    for (parameter, value) in samples {
        path = path.replace(parameter, value);
    }
    assert!(
        !path.contains('{'),
        "{template}: add a sample value for its parameter to sample_path"
    );
    path
}

fn code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn every_route_refuses_a_missing_key_a_wrong_key_and_a_key_without_its_scope() {
    let server = start().await;
    let routes = trib_api::routes();
    assert!(routes.len() > 30, "the table lists every route");
    let mut seen = HashSet::new();
    for route in &routes {
        assert!(
            seen.insert((route.method.clone(), route.path)),
            "{} {} is listed twice",
            route.method,
            route.path
        );
    }

    // For each scope a key with only that scope, and one with every other scope but `admin`.
    let mut exact = HashMap::new();
    let mut all_but = HashMap::new();
    for scope in Scope::ALL
        .into_iter()
        .filter(|scope| *scope != Scope::Admin)
    {
        let others: Vec<Scope> = Scope::ALL
            .into_iter()
            .filter(|other| *other != scope && *other != Scope::Admin)
            .collect();
        let only = server
            .store
            .create(&format!("only-{scope}"), &[scope])
            .unwrap();
        let lacking = server
            .store
            .create(&format!("all-but-{scope}"), &others)
            .unwrap();
        exact.insert(scope, only.key.expose().clone());
        all_but.insert(scope, lacking.key.expose().clone());
    }
    let admin_file_key = server.store.create("admin", &[Scope::Admin]).unwrap();
    let some_id = server.store.list().unwrap()[0].id.clone();
    let wrong_keys = [
        "wrong".to_owned(),
        format!("tk_{some_id}_{}", "0".repeat(48)),
        format!("tk_0000000000000000_{}", "0".repeat(48)),
        WRITE_KEY.to_owned(),
    ];
    // The keys were created after the server started: give it time to notice.
    tokio::time::sleep(trib_api::keys::RELOAD_INTERVAL + Duration::from_millis(100)).await;

    let mut checked_scopes = HashSet::new();
    for route in &routes {
        let name = format!("{} {}", route.method, route.path);
        let allowed = |status: u16, body: &Value| {
            assert!(
                status != 401 && status != 403,
                "{name}: a permitted call was refused: {status} {body}"
            );
            assert_ne!(code(body), "not_found", "{name}: the route is not mounted");
            assert_ne!(
                status, 405,
                "{name}: the route is not mounted for its method"
            );
        };
        match route.access {
            Access::Open => {
                assert!(
                    matches!(route.path, "/healthz" | "/readyz"),
                    "{name}: only health checks may be open"
                );
                let (status, body) = server.call(route, &Credential::None).await;
                allowed(status, &body);
            }
            Access::WriteKey => {
                let (status, body) = server.call(route, &Credential::None).await;
                assert_eq!((status, code(&body)), (401, "missing_write_key"), "{name}");
                for wrong in ["wrong", ADMIN_KEY, exact[&Scope::EventsRead].as_str()] {
                    let (status, body) = server
                        .call(route, &Credential::Basic(wrong.to_owned()))
                        .await;
                    assert_eq!((status, code(&body)), (401, "invalid_write_key"), "{name}");
                }
                let (status, body) = server
                    .call(route, &Credential::Basic(WRITE_KEY.to_owned()))
                    .await;
                allowed(status, &body);
            }
            Access::WebhookSignature => {
                for credential in [
                    Credential::None,
                    Credential::Bearer(ADMIN_KEY.to_owned()),
                    Credential::Basic(WRITE_KEY.to_owned()),
                ] {
                    let (status, body) = server.call(route, &credential).await;
                    assert_eq!(status, 401, "{name} with {credential:?}: {body}");
                }
            }
            Access::Scope(scope) => {
                checked_scopes.insert(scope);
                let (status, body) = server.call(route, &Credential::None).await;
                assert_eq!((status, code(&body)), (401, "missing_api_key"), "{name}");
                for wrong in &wrong_keys {
                    for credential in [
                        Credential::Bearer(wrong.clone()),
                        Credential::Basic(wrong.clone()),
                    ] {
                        let (status, body) = server.call(route, &credential).await;
                        assert_eq!(
                            (status, code(&body)),
                            (401, "invalid_api_key"),
                            "{name} with {credential:?}"
                        );
                    }
                }
                let (status, body) = server
                    .call(route, &Credential::Bearer(all_but[&scope].clone()))
                    .await;
                assert_eq!(
                    (status, code(&body)),
                    (403, "insufficient_scope"),
                    "{name}: a key without `{scope}`"
                );
                assert!(
                    body["message"].as_str().unwrap().contains(scope.as_str()),
                    "{name}: the refusal names the scope: {body}"
                );
                for key in [
                    exact[&scope].clone(),
                    admin_file_key.key.expose().clone(),
                    ADMIN_KEY.to_owned(),
                ] {
                    let (status, body) = server.call(route, &Credential::Bearer(key)).await;
                    allowed(status, &body);
                }
            }
        }
    }
    // Every scope but the reserved and the all-powerful ones guards at least one route.
    for scope in Scope::ALL {
        if !matches!(scope, Scope::Admin | Scope::PrivacyErase) {
            assert!(checked_scopes.contains(&scope), "no route needs `{scope}`");
        }
    }
}

#[tokio::test]
async fn created_keys_work_and_revoked_keys_are_refused_within_a_second_without_restart() {
    let server = start().await;
    let events = RouteInfo {
        method: axum::http::Method::GET,
        path: "/v1/events",
        access: Access::Scope(Scope::EventsRead),
        audit: None,
    };
    let created = server.store.create("reader", &[Scope::EventsRead]).unwrap();
    let key = Credential::Bearer(created.key.expose().clone());
    let within = |deadline: Duration| {
        let start = Instant::now();
        move || start.elapsed() < deadline
    };

    let in_time = within(Duration::from_millis(1100));
    loop {
        let (status, _) = server.call(&events, &key).await;
        if status == 200 {
            break;
        }
        assert!(
            in_time(),
            "a created key is still refused after 1 s: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    server.store.revoke(&created.record.id).unwrap();
    let in_time = within(Duration::from_millis(1100));
    loop {
        let (status, body) = server.call(&events, &key).await;
        if status == 401 {
            assert_eq!(code(&body), "invalid_api_key");
            break;
        }
        assert!(
            in_time(),
            "a revoked key is still accepted after 1 s: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The configured admin key is unaffected.
    let (status, _) = server
        .call(&events, &Credential::Bearer(ADMIN_KEY.to_owned()))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_malformed_key_file_stops_the_server_from_starting_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(trib_api::keys::KEYS_FILE_NAME);
    std::fs::write(&file, "{\"version\": 1, \"keys\": [").unwrap();
    let config = Config::from_toml_str(
        &format!(
            "version = 1\n[server]\ndata_dir = {:?}\n[[sources]]\nname = \"web\"\nwrite_key = \"{WRITE_KEY}\"\n",
            dir.path().display().to_string()
        ),
        &|_| None,
    )
    .unwrap();
    let logs = crate::memory_logs(Arc::new(MemoryLog::new(1)));
    let registry = Arc::new(std::sync::RwLock::new(trib_schema::Registry::empty()));
    let Err(error) = trib_api::AppState::new(&config, logs, registry, None) else {
        panic!("a malformed key file was accepted");
    };
    let message = error.to_string();
    assert!(
        message.contains(&file.display().to_string()) && message.contains("malformed"),
        "{message}"
    );
}
