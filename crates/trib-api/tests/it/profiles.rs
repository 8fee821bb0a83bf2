//! The profile API over real HTTP, with the identity consumer running on the event log and
//! the embedded (SQLite) profile store.

use std::sync::Arc;

use serde_json::{Value, json};
use trib_config::Config;
use trib_identity::consumer::{ConsumerOptions, IdentityConsumer};
use trib_identity::{Engine, Keyer};
use trib_log::{EventLog, MemoryLog};
use trib_store::ProfileStore;

use crate::{ADMIN_KEY, WRITE_KEY};

struct ProfileServer {
    base: String,
    http: reqwest::Client,
    consumer: Arc<IdentityConsumer>,
    _dir: tempfile::TempDir,
}

async fn start() -> ProfileServer {
    start_with("").await
}

/// The example [identity.matching] table of trib-match, nested for tributary.toml.
fn matching_toml() -> String {
    let mut out = String::from("[identity.matching]\n");
    for line in trib_match::EXAMPLE_CONFIG_TOML.lines() {
        out.push_str(match line.trim() {
            "[em]" => "[identity.matching.em]",
            "[[fields]]" => "[[identity.matching.fields]]",
            _ => line,
        });
        out.push('\n');
    }
    out
}

async fn start_with(extra_toml: &str) -> ProfileServer {
    start_full(extra_toml, None).await
}

/// A server whose data directory is `dir`, recording accesses in `audit` when given.
async fn start_full(
    extra_toml: &str,
    audit: Option<(tempfile::TempDir, Arc<trib_audit::AuditLog>)>,
) -> ProfileServer {
    let (dir, audit) = match audit {
        Some((dir, log)) => (dir, Some(log)),
        None => (tempfile::tempdir().unwrap(), None),
    };
    let data_dir_line = if audit.is_some() {
        format!("data_dir = {:?}\n", dir.path().display().to_string())
    } else {
        String::new()
    };
    let config = Config::from_toml_str(
        &format!(
            "version = 1\n[server]\n{data_dir_line}admin_key = \"{ADMIN_KEY}\"\n[[sources]]\nname = \"web\"\nwrite_key = \"{WRITE_KEY}\"\n[[sources]]\nname = \"crm\"\nwrite_key = \"wk_crm\"\n\
             [identity]\ntypes = [{{ name = \"user_id\", unique = true }}, {{ name = \"email\", traits = [\"email\"] }}, {{ name = \"anonymous_id\" }}]\n\
             [identity.traits]\nsource_priority = [\"crm\", \"web\"]\nrules = {{ first_name = \"source_priority\" }}\n{extra_toml}"
        ),
        &|_| None,
    )
    .unwrap();
    let events: Arc<dyn EventLog> = Arc::new(MemoryLog::new(4));
    let logs = crate::memory_logs(events.clone());
    let store: Arc<dyn ProfileStore> = Arc::new(
        trib_store::SqliteStore::open(dir.path(), trib_store::SqliteOptions::default()).unwrap(),
    );
    let keyer = Keyer::load_or_create(dir.path()).unwrap();
    let rules = Arc::new(config.identity.clone());
    let engine = Engine::new(store.clone(), rules.clone(), keyer.clone()).unwrap();
    let consumer = Arc::new(
        IdentityConsumer::spawn(
            events,
            engine,
            ConsumerOptions::default(),
            tokio::runtime::Handle::current(),
        )
        .unwrap(),
    );
    let registry = Arc::new(std::sync::RwLock::new(trib_schema::Registry::empty()));
    let mut state = trib_api::AppState::new(&config, logs, registry, None)
        .unwrap()
        .with_profiles(trib_api::ProfilesState {
            store,
            keyer,
            rules,
            consumer: Some(consumer.clone()),
        });
    if let Some(log) = audit {
        state = state.with_audit(log);
    }
    let addr = crate::serve(state).await;
    ProfileServer {
        base: format!("http://{addr}"),
        http: crate::http_client(),
        consumer,
        _dir: dir,
    }
}

impl ProfileServer {
    async fn send(&self, key: &str, batch: Value) {
        let response = self
            .http
            .post(format!("{}/v1/batch", self.base))
            .basic_auth(key, Some(""))
            .json(&json!({"batch": batch}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        crate::admin_get(&self.http, &self.base, path).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journey_is_one_profile_served_by_id_identifier_feed_and_timeline() {
    let server = start().await;
    let before = jiff::Timestamp::now();
    server
        .send(
            WRITE_KEY,
            json!([
                {"type": "page", "anonymousId": "laptop", "name": "Home", "timestamp": "2026-03-01T10:00:00Z"},
                {"type": "page", "anonymousId": "laptop", "name": "Shoes", "timestamp": "2026-03-01T10:01:00Z"},
                {"type": "identify", "userId": "u-1", "anonymousId": "laptop",
                 "traits": {"email": "Ada@Example.com", "first_name": "ada"}, "timestamp": "2026-03-01T10:02:00Z"},
                {"type": "track", "event": "Order Completed", "userId": "u-1", "anonymousId": "phone",
                 "properties": {"revenue": 30}, "timestamp": "2026-03-01T10:03:00Z"}
            ]),
        )
        .await;
    server
        .send(
            "wk_crm",
            json!([{"type": "identify", "anonymousId": "crm-17",
                    "traits": {"email": "ada@example.com", "first_name": "Ada"},
                    "timestamp": "2026-03-01T09:00:00Z"}]),
        )
        .await;
    server.consumer.caught_up().await.unwrap();

    let (status, profile) = server
        .get("/v1/profiles/lookup?email=ADA@example.com")
        .await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["event_count"], 5);
    assert_eq!(profile["traits"]["first_name"], "Ada");
    assert_eq!(
        profile["trait_provenance"]["first_name"]["sources"],
        json!(["crm"])
    );
    assert_eq!(profile["sources"], json!(["crm", "web"]));
    let id = profile["id"].as_str().unwrap().to_owned();
    let (status, by_user) = server.get("/v1/profiles/lookup?user_id=u-1").await;
    assert_eq!((status, by_user["id"].as_str()), (200, Some(id.as_str())));
    let (status, by_id) = server.get(&format!("/v1/profiles/{id}")).await;
    assert_eq!((status, by_id["id"].as_str()), (200, Some(id.as_str())));

    // The person's events, newest first, two per page.
    let (status, page) = server
        .get(&format!("/v1/profiles/{id}/events?limit=2"))
        .await;
    assert_eq!(status, 200, "{page}");
    let names: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["track", "identify"]);
    let next = page["next"].as_str().unwrap();
    let (_, rest) = server
        .get(&format!("/v1/profiles/{id}/events?limit=10&before={next}"))
        .await;
    assert_eq!(rest["events"].as_array().unwrap().len(), 3);
    assert_eq!(rest["next"], Value::Null);

    // The change feed since before the test: the profile with its data, and a cursor that
    // returns nothing new when polled again.
    let since = before.to_string();
    let (status, feed) = server
        .get(&format!("/v1/profiles?updated_since={since}&limit=1000"))
        .await;
    assert_eq!(status, 200, "{feed}");
    let items = feed["profiles"].as_array().unwrap();
    let mine: Vec<&Value> = items.iter().filter(|i| i["id"] == id.as_str()).collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["change"], "upserted");
    assert_eq!(mine[0]["profile"]["traits"]["first_name"], "Ada");
    let cursor = feed["next_cursor"].as_u64().unwrap();
    let (_, again) = server.get(&format!("/v1/profiles?cursor={cursor}")).await;
    assert!(again["profiles"].as_array().unwrap().is_empty(), "{again}");

    let (status, explain) = server.get(&format!("/v1/profiles/{id}/explain")).await;
    assert_eq!(
        (status, explain["profile"].as_str()),
        (200, Some(id.as_str())),
        "{explain}"
    );
    assert!(explain["history"].is_array(), "{explain}");

    // Errors are specific and never echo the identifier.
    let (status, body) = server
        .get("/v1/profiles/lookup?email=nobody@example.com")
        .await;
    assert_eq!(status, 404);
    assert!(!body.to_string().contains("nobody@example.com"), "{body}");
    let (status, body) = server.get("/v1/profiles/lookup?shoe_size=42").await;
    assert_eq!(status, 400);
    assert!(body.to_string().contains("shoe_size"), "{body}");
    let (status, _) = server.get("/v1/profiles/not-an-id").await;
    assert_eq!(status, 400);
    let unauthenticated = server
        .http
        .get(format!("{}/v1/profiles/{id}", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmerge_over_http_splits_a_wrong_link() {
    let server = start().await;
    server
        .send(
            WRITE_KEY,
            json!([
                {"type": "identify", "userId": "alice", "anonymousId": "dev-a", "traits": {"email": "alice@x.example"}, "timestamp": "2026-03-01T10:00:00Z"},
                {"type": "identify", "anonymousId": "dev-b", "traits": {"email": "bob@x.example"}, "timestamp": "2026-03-01T10:01:00Z"},
                {"type": "track", "event": "Shared", "messageId": "the-link", "anonymousId": "dev-b",
                 "context": {"traits": {"email": "alice@x.example"}}, "timestamp": "2026-03-01T10:02:00Z"}
            ]),
        )
        .await;
    server.consumer.caught_up().await.unwrap();
    let (_, merged) = server.get("/v1/profiles/lookup?email=bob@x.example").await;
    let id = merged["id"].as_str().unwrap().to_owned();
    let (_, alice) = server.get("/v1/profiles/lookup?user_id=alice").await;
    assert_eq!(alice["id"].as_str(), Some(id.as_str()));
    // The history names the event and the identifier that caused the merge.
    let (_, explain) = server.get(&format!("/v1/profiles/{id}/explain")).await;
    let merge = explain["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["kind"] == "merge")
        .unwrap_or_else(|| panic!("no merge in {explain}"));
    assert_eq!(merge["detail"]["event"]["message_id"], "the-link");
    assert_eq!(merge["detail"]["linked_by"][0]["type"], "anonymous_id");

    let (status, bad) = server
        .post(&format!("/v1/profiles/{id}/unmerge"), json!({"nothing": 1}))
        .await;
    assert_eq!(status, 400, "{bad}");
    let (status, report) = server
        .post(
            &format!("/v1/profiles/{id}/unmerge"),
            json!({"event": {"source": "web", "message_id": "the-link"}}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["profiles"].as_array().unwrap().len(), 2);
    let (_, bob) = server.get("/v1/profiles/lookup?email=bob@x.example").await;
    let (_, alice) = server.get("/v1/profiles/lookup?user_id=alice").await;
    assert_ne!(bob["id"], alice["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_id_veto_holds_under_concurrent_events() {
    let server = Arc::new(start().await);
    // 8 clients at once: each user id arrives with the same shared email and its own device.
    let mut tasks = Vec::new();
    for client in 0..8 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..5 {
                server
                    .send(
                        WRITE_KEY,
                        json!([{"type": "identify", "userId": format!("u-{client}"), "anonymousId": format!("d-{client}-{round}"),
                                "traits": {"email": "family@x.example"}}]),
                    )
                    .await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    server.consumer.caught_up().await.unwrap();
    let mut ids = std::collections::BTreeSet::new();
    for client in 0..8 {
        let (status, profile) = server
            .get(&format!("/v1/profiles/lookup?user_id=u-{client}"))
            .await;
        assert_eq!(status, 200);
        let user_ids: Vec<&Value> = profile["identifiers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["type"] == "user_id")
            .collect();
        assert_eq!(user_ids.len(), 1, "{profile}");
        assert_eq!(profile["event_count"], 5, "{profile}");
        ids.insert(profile["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_over_http_merges_crm_duplicates_and_serves_the_review_queue() {
    let server = start_with(&matching_toml()).await;
    let mut csv = Vec::new();
    trib_match::generate(300, 11, &mut csv, &trib_match::GenerateOptions::default()).unwrap();
    let text = String::from_utf8(csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Value> = lines
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            let mut traits = serde_json::Map::new();
            for field in ["first_name", "last_name", "dob", "address", "city", "postcode"] {
                let index = header.iter().position(|h| *h == field).unwrap();
                if !cells[index].is_empty() {
                    traits.insert(field.into(), json!(cells[index]));
                }
            }
            json!({"type": "identify", "anonymousId": format!("row-{}", cells[0]), "traits": traits})
        })
        .collect();
    for chunk in rows.chunks(100) {
        server.send("wk_crm", json!(chunk)).await;
    }
    server.consumer.caught_up().await.unwrap();

    let (status, report) = server.post("/v1/identity/match", json!({})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["records"], 300);
    let merges = report["merges"].as_u64().unwrap();
    assert!(merges > 20, "{report}");
    let (_, queue) = server.get("/v1/identity/review").await;
    let items = queue["items"].as_array().unwrap().clone();
    if let Some(item) = items.first() {
        let seq = item["seq"].as_u64().unwrap();
        let (status, answer) = server
            .post(
                &format!("/v1/identity/review/{seq}"),
                json!({"decision": "distinct"}),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        let (_, after) = server.get("/v1/identity/review").await;
        assert_eq!(after["items"].as_array().unwrap().len(), items.len() - 1);
    }
    let (status, bad) = server
        .post("/v1/identity/review/1", json!({"decision": "maybe"}))
        .await;
    assert_eq!(status, 400, "{bad}");
    let (status, unknown) = server
        .post("/v1/identity/review/999999", json!({"decision": "merge"}))
        .await;
    assert_eq!(status, 422, "{unknown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_profile_is_recorded_with_the_key_id_and_profile_id_before_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Arc::new(trib_audit::AuditLog::open_in_data_dir(dir.path()).unwrap());
    let created = trib_api::keys::KeyStore::in_data_dir(dir.path())
        .create("support-desk", &[trib_api::Scope::ProfilesRead])
        .unwrap();
    let key = created.key.expose().clone();
    let data_dir = dir.path().to_owned();
    let server = start_full("", Some((dir, audit.clone()))).await;
    server
        .send(
            WRITE_KEY,
            json!([{"type": "identify", "userId": "u-9",
                    "traits": {"email": "grace@example.com"}, "timestamp": "2026-03-01T10:00:00Z"}]),
        )
        .await;
    server.consumer.caught_up().await.unwrap();
    let get = |path: String, purpose: Option<&'static str>| {
        let mut request = server
            .http
            .get(format!("{}{path}", server.base))
            .bearer_auth(&key);
        if let Some(purpose) = purpose {
            request = request.header(trib_api::PURPOSE_HEADER, purpose);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };

    let (status, found) = get("/v1/profiles/lookup?email=grace@example.com".into(), None).await;
    assert_eq!(status, 200, "{found}");
    let id = found["id"].as_str().unwrap().to_owned();
    let (status, body) = get(format!("/v1/profiles/{id}"), Some("gdpr-request")).await;
    assert_eq!(status, 200, "{body}");
    // Free text as a purpose is refused, and nothing is released or recorded.
    let (status, body) = get(format!("/v1/profiles/{id}"), Some("call grace back")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_purpose"))
    );

    let segment = data_dir.join("audit/segment-00000000000000000001.ndjson");
    let text = std::fs::read_to_string(&segment).unwrap();
    assert!(
        !text.contains("grace"),
        "an identifier reached the audit log: {text}"
    );
    let entries: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(entries.len(), 2, "{text}");
    let actor = format!("key:{}", created.record.id);
    assert_eq!(entries[0]["actor"], actor.as_str());
    assert_eq!(entries[0]["resource"], "/v1/profiles/lookup");
    assert_eq!(
        entries[0]["subject"],
        id.as_str(),
        "the profile the lookup released"
    );
    assert_eq!(entries[0]["purpose"], "support");
    assert_eq!(entries[1]["actor"], actor.as_str());
    assert_eq!(entries[1]["action"], "read");
    assert_eq!(entries[1]["resource"], "/v1/profiles/{id}");
    assert_eq!(entries[1]["subject"], id.as_str());
    assert_eq!(entries[1]["purpose"], "gdpr-request");
    assert_eq!(entries[1]["outcome"], "status:200");
    let report = trib_audit::verify_data_dir(&data_dir).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.entries, 2);

    // Unaudited routes are not recorded; the admin key is recorded as `admin`.
    let (status, _) = server.get("/v1/schemas").await;
    assert_eq!(status, 200);
    let (status, _) = server.get(&format!("/v1/profiles/{id}/explain")).await;
    assert_eq!(status, 200);
    let text = std::fs::read_to_string(&segment).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert_eq!(last["actor"], "admin");
    assert_eq!(last["resource"], "/v1/profiles/{id}/explain");

    // When the access cannot be recorded, the data is not released.
    audit.close();
    let (status, body) = get(format!("/v1/profiles/{id}"), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("audit_unavailable")),
        "{body}"
    );
    assert!(body.get("traits").is_none());
}

#[test]
fn every_route_reading_or_writing_personal_data_is_audited() {
    for route in trib_api::routes() {
        let personal = [
            "/v1/profiles",
            "/v1/identity",
            "/v1/imports",
            "/v1/quarantine/replay",
            "/v1/privacy",
        ]
        .iter()
        .any(|prefix| route.path.starts_with(prefix))
            || route.path == "/v1/events"
            || route.path == "/v1/quarantine"
            || route.path == "/v1/render"
            || route.path == "/v1/render/send";
        assert_eq!(
            route.audit.is_some(),
            personal,
            "{} {}: audit policy {:?}",
            route.method,
            route.path,
            route.audit
        );
    }
}
