//! `POST /v1/render` and `PUT /v1/templates/{name}` over real HTTP, with the identity and
//! consent consumers on the event log and the audit log: a person with consent is rendered
//! (with their events), one without is refused, every render is audited with the template's
//! purpose, the matrix covers sparse profiles, and a save runs the static check.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use trib_config::Config;
use trib_consent::{ConsentConsumer, ConsentReader, Gatekeeper, Ledger};
use trib_identity::consumer::{ConsumerOptions, IdentityConsumer};
use trib_identity::{Engine, Keyer};
use trib_log::{EventLog, MemoryLog};
use trib_render::{CheckOptions, Compiler, Limits, PurposeFields, Templates, Vocabulary};
use trib_store::{ProfileId, ProfileStore};

use crate::{ADMIN_KEY, WRITE_KEY};

struct Server {
    base: String,
    http: reqwest::Client,
    identity: Arc<IdentityConsumer>,
    consent: ConsentConsumer,
    render_key: String,
    dir: tempfile::TempDir,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml_str(
        &format!(
            "version = 1\n[server]\nadmin_key = \"{ADMIN_KEY}\"\ndata_dir = {data_dir:?}\n[[sources]]\nname = \"web\"\nwrite_key = \"{WRITE_KEY}\"\n\
             [[privacy.purposes]]\nname = \"email_marketing\"\nlegal_basis = \"consent\"\n\
             [privacy.segment_categories]\nMarketing = \"email_marketing\"\n",
            data_dir = dir.path().display().to_string(),
        ),
        &|_| None,
    )
    .unwrap();
    let events: Arc<dyn EventLog> = Arc::new(MemoryLog::new(4));
    let logs = trib_api::Logs {
        events: events.clone(),
        quarantine: Arc::new(MemoryLog::new(1)),
        resolutions: Arc::new(MemoryLog::new(1)),
    };
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
    let audit = Arc::new(trib_audit::AuditLog::open_in_data_dir(dir.path()).unwrap());
    let render_key = trib_api::keys::KeyStore::in_data_dir(dir.path())
        .create("marketing", &[trib_api::Scope::TemplatesRender])
        .unwrap();

    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/examples");
    let registry = trib_schema::Registry::load(examples.join("schemas")).unwrap();
    let compiler = Compiler::new(
        Vocabulary::from_registry(
            &registry,
            config.identity.types.iter().map(|t| t.name.clone()),
        ),
        PurposeFields::defaults_for(["email_marketing"]),
        CheckOptions::default(),
        Limits::default(),
    );
    let sources = vec![
        trib_render::source::load_file(&examples.join("templates/weekly.toml")).unwrap(),
        trib_render::source::load_file(&examples.join("templates/welcome.toml")).unwrap(),
    ];
    let (templates, failures) = Templates::compile_all(&compiler, &sources, None);
    assert!(failures.is_empty(), "{failures:?}");
    let render = trib_api::RenderState {
        compiler,
        templates: std::sync::RwLock::new(templates),
        templates_dir: Some(dir.path().join("templates")),
        gatekeeper: Gatekeeper::new(ledger.clone(), keyer.clone(), privacy_rules.clone()),
    };
    let state = trib_api::AppState::new(
        &config,
        logs,
        Arc::new(std::sync::RwLock::new(registry)),
        None,
    )
    .unwrap()
    .with_profiles(trib_api::ProfilesState {
        store,
        keyer: keyer.clone(),
        rules: identity_rules,
        consumer: Some(identity.clone()),
    })
    .with_consent(trib_api::ConsentState {
        ledger,
        keyer,
        rules: privacy_rules,
    })
    .with_audit(audit)
    .with_render(render);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, trib_api::app(Arc::new(state)))
            .await
            .unwrap()
    });
    Server {
        base: format!("http://{addr}"),
        http: crate::http_client(),
        identity,
        consent,
        render_key: render_key.key.expose().clone(),
        dir,
    }
}

impl Server {
    async fn send(&self, batch: Value) {
        let response = self
            .http
            .post(format!("{}/v1/batch", self.base))
            .basic_auth(WRITE_KEY, Some(""))
            .json(&json!({"batch": batch}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        self.identity.caught_up().await.unwrap();
        self.consent.caught_up().await.unwrap();
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: reqwest::Body,
    ) -> (u16, Value) {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn render(&self, body: Value) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            "/v1/render",
            &self.render_key,
            body.to_string().into(),
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renders_only_with_consent_and_audits_every_person() {
    let server = start().await;
    server
        .send(json!([
            {"type": "identify", "userId": "u-ann", "traits": {"email": "ann@example.com", "firstName": "Ann", "plan": "pro"},
             "timestamp": "2026-03-01T10:00:00Z", "context": {"consent": {"categoryPreferences": {"Marketing": true}}}},
            {"type": "track", "userId": "u-ann", "event": "Order Completed", "timestamp": "2026-03-02T10:00:00Z",
             "properties": {"order_id": "A-1", "total": 12.0, "currency": "EUR", "products": [{"product_id": "p1", "name": "Scarf <wool>", "price": 12.0, "quantity": 1}]}},
            {"type": "identify", "userId": "u-bob", "traits": {"email": "bob@example.com"}, "timestamp": "2026-03-01T10:00:00Z"}
        ]))
        .await;

    let (status, ann) = server
        .render(json!({"template": "weekly", "identifier": {"type": "email", "value": "ann@example.com"}}))
        .await;
    assert_eq!(status, 200, "{ann}");
    assert_eq!(ann["subject"], "Ann, your picks this week");
    assert!(ann["html"].as_str().unwrap().contains("Scarf &lt;wool&gt;"));
    assert!(ann["text"].as_str().unwrap().contains("Scarf <wool>"));
    assert!(ann["html"].as_str().unwrap().contains("As a Pro member"));

    // Bob never consented to email marketing.
    let (status, bob) = server
        .render(json!({"template": "weekly", "identifier": {"type": "email", "value": "bob@example.com"}}))
        .await;
    assert_eq!(
        (status, bob["code"].as_str()),
        (403, Some("consent_denied")),
        "{bob}"
    );

    // The matrix renders Ann and reports Bob as refused.
    let (status, matrix) = server
        .render(json!({"template": "welcome", "sample": 5}))
        .await;
    assert_eq!(status, 200, "{matrix}");
    let rows = matrix["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().any(|row| row["denied"] == "no_consent"));
    assert!(rows.iter().any(|row| row["subject"] == "Welcome, Ann!"));

    // Every render of Ann is in the audit log with the template's purpose.
    let ann_id: ProfileId = ann["profile_id"].as_str().unwrap().parse().unwrap();
    let found =
        trib_audit::entries_about(&server.dir.path().join("audit"), &BTreeSet::from([ann_id]))
            .unwrap();
    let renders: Vec<Value> = found
        .entries
        .iter()
        .map(|entry| serde_json::to_value(entry).unwrap())
        .filter(|entry| entry["resource"] == "/v1/render")
        .collect();
    assert_eq!(renders.len(), 2, "{renders:?}");
    assert!(
        renders
            .iter()
            .all(|entry| entry["purpose"] == "email_marketing"),
        "{renders:?}"
    );

    // An unknown template is a 404.
    let (status, _) = server
        .render(json!({"template": "nope", "profile_id": ann_id.to_string()}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saving_a_template_runs_the_static_check() {
    let server = start().await;
    let bad = "purpose = \"email_marketing\"\nversion = 1\nsubject = \"Hi {{ profile.traits.shoeSize }}\"\nhtml = \"<p>x</p>\"\n";
    let (status, body) = server
        .call(
            reqwest::Method::PUT,
            "/v1/templates/promo",
            ADMIN_KEY,
            bad.into(),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("template_invalid")),
        "{body}"
    );
    let diagnostic = &body["diagnostics"][0];
    assert_eq!(
        (
            diagnostic["kind"].as_str(),
            diagnostic["part"].as_str(),
            diagnostic["line"].as_u64(),
            diagnostic["column"].as_u64()
        ),
        (Some("unknown_variable"), Some("subject"), Some(1), Some(7))
    );
    let good = "purpose = \"email_marketing\"\nversion = 1\nsubject = \"Hi {{ profile.traits.firstName | default: 'you' }}\"\nhtml = \"<p>x</p>\"\n";
    let (status, body) = server
        .call(
            reqwest::Method::PUT,
            "/v1/templates/promo",
            ADMIN_KEY,
            good.into(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(server.dir.path().join("templates/promo.toml").exists());
    // The render key cannot save templates.
    let (status, _) = server
        .call(
            reqwest::Method::PUT,
            "/v1/templates/promo",
            &server.render_key,
            good.into(),
        )
        .await;
    assert_eq!(status, 403);
}
