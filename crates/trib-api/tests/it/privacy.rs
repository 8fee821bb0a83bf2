//! The privacy API over real HTTP, with the identity and consent consumers running on the event
//! log: consent from Segment events and the API, the history per profile, suppressions, and a
//! gatekeeper on the same ledger that follows every change at once.

use std::sync::Arc;

use serde_json::{Value, json};
use trib_config::Config;
use trib_consent::{ConsentConsumer, ConsentReader, DenyReason, Gatekeeper, Ledger};
use trib_identity::consumer::{ConsumerOptions, IdentityConsumer};
use trib_identity::{Engine, Keyer, Profile};
use trib_log::{EventLog, MemoryLog};
use trib_store::ProfileStore;

use crate::{ADMIN_KEY, WRITE_KEY};

struct PrivacyServer {
    base: String,
    http: reqwest::Client,
    identity: Arc<IdentityConsumer>,
    consent: ConsentConsumer,
    gatekeeper: Gatekeeper,
    store: Arc<dyn ProfileStore>,
    _dir: tempfile::TempDir,
}

async fn start() -> PrivacyServer {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml_str(
        &format!(
            "version = 1\n[server]\nadmin_key = \"{ADMIN_KEY}\"\ndata_dir = {data_dir:?}\n[[sources]]\nname = \"web\"\nwrite_key = \"{WRITE_KEY}\"\n\
             [[privacy.purposes]]\nname = \"email_marketing\"\nlegal_basis = \"consent\"\n\
             [[privacy.purposes]]\nname = \"analytics\"\nlegal_basis = \"consent\"\n\
             [[privacy.purposes]]\nname = \"receipts\"\nlegal_basis = \"contract\"\nbasis_note = \"terms of sale\"\n\
             [privacy.segment_categories]\nMarketing = \"email_marketing\"\n",
            data_dir = dir.path().display().to_string(),
        ),
        &|_| None,
    )
    .unwrap();
    let events: Arc<dyn EventLog> = Arc::new(MemoryLog::new(4));
    let logs = crate::memory_logs(events.clone());
    let store: Arc<dyn ProfileStore> = Arc::new(
        trib_store::SqliteStore::open(dir.path().join("profiles"), Default::default()).unwrap(),
    );
    let keyer = Keyer::load_or_create(dir.path()).unwrap();
    let identity_rules = Arc::new(config.identity.clone());
    let privacy_rules = Arc::new(config.privacy.clone());
    let engine = Engine::new(store.clone(), identity_rules.clone(), keyer.clone()).unwrap();
    let identity = Arc::new(
        IdentityConsumer::spawn(
            events.clone(),
            engine,
            ConsumerOptions::default(),
            tokio::runtime::Handle::current(),
        )
        .unwrap(),
    );
    let ledger = Arc::new(Ledger::open_in(dir.path()).unwrap());
    let consent = ConsentConsumer::spawn(
        events,
        ledger.clone(),
        ConsentReader::new(keyer.clone(), identity_rules.clone(), privacy_rules.clone()),
        trib_consent::ConsumerOptions::default(),
        tokio::runtime::Handle::current(),
    )
    .unwrap();
    let gatekeeper = Gatekeeper::new(ledger.clone(), keyer.clone(), privacy_rules.clone());
    let registry = Arc::new(std::sync::RwLock::new(trib_schema::Registry::empty()));
    let state = trib_api::AppState::new(&config, logs, registry, None)
        .unwrap()
        .with_profiles(trib_api::ProfilesState {
            store: store.clone(),
            keyer: keyer.clone(),
            rules: identity_rules,
            consumer: Some(identity.clone()),
        })
        .with_consent(trib_api::ConsentState {
            ledger,
            keyer,
            rules: privacy_rules,
        });
    let addr = crate::serve(state).await;
    PrivacyServer {
        base: format!("http://{addr}"),
        http: crate::http_client(),
        identity,
        consent,
        gatekeeper,
        store,
        _dir: dir,
    }
}

impl PrivacyServer {
    async fn send(&self, batch: Value) {
        let response = self
            .http
            .post(format!("{}/v1/batch", self.base))
            .basic_auth(WRITE_KEY, Some(""))
            .json(&json!({"batch": batch}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        self.identity.caught_up().await.unwrap();
        self.consent.caught_up().await.unwrap();
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN_KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert!(
            !path.starts_with("/v1/privacy") || !text.to_lowercase().contains("ann@example.com"),
            "{path} echoed an identifier value: {text}"
        );
        (status, serde_json::from_str(&text).unwrap())
    }

    fn profile(&self, id: &str) -> Profile {
        match trib_identity::view::find(&*self.store, id.parse().unwrap()).unwrap() {
            trib_identity::view::Found::Active { profile, .. } => *profile,
            other => panic!("{other:?}"),
        }
    }
}

fn purpose<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["purposes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|purpose| purpose["purpose"] == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_from_events_and_the_api_is_shown_enforced_and_withdrawn_at_once() {
    use reqwest::Method;
    let server = start().await;
    server
        .send(json!([
            {"type": "identify", "userId": "u-ann", "anonymousId": "a-1",
             "traits": {"email": "Ann@Example.com"}, "timestamp": "2026-03-01T10:00:00Z",
             "context": {"consent": {"categoryPreferences": {"Marketing": true, "analytics": false}}}}
        ]))
        .await;
    let (status, profile) = server
        .call(Method::GET, "/v1/profiles/lookup?user_id=u-ann", None)
        .await;
    assert_eq!(status, 200, "{profile}");
    let id = profile["id"].as_str().unwrap().to_owned();

    let (status, view) = server
        .call(Method::GET, &format!("/v1/privacy/consent/{id}"), None)
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["profile_id"], id.as_str());
    let marketing = purpose(&view, "email_marketing");
    assert_eq!(
        (&marketing["status"], &marketing["permitted"]),
        (&json!("granted"), &json!(true))
    );
    assert_eq!(purpose(&view, "analytics")["denied_reason"], "denied");
    let receipts = purpose(&view, "receipts");
    assert_eq!(
        (
            &receipts["status"],
            &receipts["permitted"],
            &receipts["basis_note"]
        ),
        (&json!("unknown"), &json!(true), &json!("terms of sale"))
    );
    // One grant and one denial per identifier (user id, email, anonymous id).
    assert_eq!(view["history"].as_array().unwrap().len(), 6);
    let profile = server.profile(&id);
    let gate = &server.gatekeeper;
    let permit = gate
        .permit(
            &profile.identifiers,
            "email_marketing",
            Some("mailchimp"),
            "hello",
        )
        .unwrap();
    assert_eq!(permit.into_inner(), "hello");

    // The same view by identifier.
    let (status, by_email) = server
        .call(
            Method::GET,
            "/v1/privacy/consent/lookup?type=email&value=ANN@example.com",
            None,
        )
        .await;
    assert_eq!(status, 200, "{by_email}");
    assert_eq!(by_email["profile_id"], id.as_str());

    // Withdrawal through the API: the very next check refuses.
    let (status, recorded) = server
        .call(
            Method::POST,
            "/v1/privacy/consent",
            Some(
                json!({"identifier": {"type": "email", "value": "ann@example.com"},
                        "purpose": "email_marketing", "status": "withdrawn",
                        "proof": {"form_id": "preferences-page", "ip": "203.0.113.9"}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{recorded}");
    assert_eq!(recorded["recorded"], 3);
    let denied = gate
        .permit(
            &profile.identifiers,
            "email_marketing",
            Some("mailchimp"),
            "hello",
        )
        .unwrap_err();
    assert_eq!(denied.reason, DenyReason::Withdrawn);

    let (_, view) = server
        .call(Method::GET, &format!("/v1/privacy/consent/{id}"), None)
        .await;
    let marketing = purpose(&view, "email_marketing");
    assert_eq!(
        (
            &marketing["status"],
            &marketing["source"],
            &marketing["denied_reason"]
        ),
        (
            &json!("withdrawn"),
            &json!("api:admin"),
            &json!("withdrawn")
        )
    );
    let last = view["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["proof"], json!({"form_id": "preferences-page"}));
    assert_eq!(last["legal_basis"], "consent");
    let types: Vec<&str> = view["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["identifier_type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"email") && types.contains(&"user_id"),
        "{types:?}"
    );

    // A suppression for one destination; listed by identifier key only.
    let (status, body) = server
        .call(
            Method::POST,
            "/v1/privacy/suppressions",
            Some(json!({"profile_id": id, "destination": "sendgrid", "reason": "complaint"})),
        )
        .await;
    assert_eq!((status, &body["suppressed"]), (201, &json!(3)), "{body}");
    let denied = gate
        .permit(&profile.identifiers, "receipts", Some("sendgrid"), ())
        .unwrap_err();
    assert_eq!(denied.reason, DenyReason::SuppressedDestination);
    let (status, list) = server
        .call(Method::GET, "/v1/privacy/suppressions?limit=2", None)
        .await;
    assert_eq!(status, 200, "{list}");
    let items = list["suppressions"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["ident_key"].as_str().unwrap().len(), 32);
    assert_eq!(items[0]["destination"], "sendgrid");
    let (_, rest) = server
        .call(
            Method::GET,
            &format!("/v1/privacy/suppressions?cursor={}", list["next_cursor"]),
            None,
        )
        .await;
    assert_eq!(rest["suppressions"].as_array().unwrap().len(), 1);
    let (status, body) = server
        .call(
            Method::DELETE,
            "/v1/privacy/suppressions",
            Some(json!({"profile_id": id, "destination": "sendgrid"})),
        )
        .await;
    assert_eq!((status, &body["removed"]), (200, &json!(3)), "{body}");
    let permit = gate
        .permit(&profile.identifiers, "receipts", Some("sendgrid"), ())
        .unwrap();
    assert_eq!(permit.purpose(), "receipts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_privacy_requests_get_specific_answers() {
    use reqwest::Method;
    let server = start().await;
    let email = json!({"type": "email", "value": "ann@example.com"});
    let cases = [
        (
            json!({"identifier": email, "purpose": "telepathy", "status": "granted"}),
            400,
            "unknown_purpose",
        ),
        (
            json!({"identifier": email, "purpose": "analytics", "status": "yes"}),
            400,
            "invalid_status",
        ),
        (
            json!({"identifier": email, "profile_id": "p_x", "purpose": "analytics", "status": "granted"}),
            400,
            "invalid_body",
        ),
        (
            json!({"identifier": {"type": "shoe_size", "value": "9"}, "purpose": "analytics", "status": "granted"}),
            400,
            "invalid_body",
        ),
        (
            json!({"identifier": email, "purpose": "analytics", "status": "granted", "legal_basis": "vibes"}),
            400,
            "invalid_body",
        ),
        (
            json!({"identifier": email, "purpose": "analytics", "status": "granted", "at": "yesterday"}),
            400,
            "invalid_body",
        ),
        (
            json!({"profile_id": "p_0123456789abcdef0123456789abcdef", "purpose": "analytics", "status": "granted"}),
            404,
            "profile_not_found",
        ),
    ];
    for (body, expected_status, expected_code) in cases {
        let (status, answer) = server
            .call(Method::POST, "/v1/privacy/consent", Some(body.clone()))
            .await;
        assert_eq!(
            (status, answer["code"].as_str().unwrap_or("")),
            (expected_status, expected_code),
            "{body}: {answer}"
        );
    }
    let (status, answer) = server
        .call(
            Method::POST,
            "/v1/privacy/suppressions",
            Some(json!({"identifier": email})),
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("invalid_body"))
    );
    assert!(answer["message"].as_str().unwrap().contains("reason"));

    // Consent for an identifier no profile holds yet is recorded on its key and applies later.
    let (status, _) = server
        .call(
            Method::POST,
            "/v1/privacy/consent",
            Some(
                json!({"identifier": {"type": "email", "value": "ann@example.com"},
                        "purpose": "analytics", "status": "granted"}),
            ),
        )
        .await;
    assert_eq!(status, 201);
    let (status, view) = server
        .call(
            Method::GET,
            "/v1/privacy/consent/lookup?type=email&value=ann@example.com",
            None,
        )
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["profile_id"], Value::Null);
    assert_eq!(purpose(&view, "analytics")["status"], "granted");
}
