//! `POST /v1/render` and `PUT /v1/templates/{name}` over real HTTP, with the identity and
//! consent consumers on the event log and the audit log: a person with consent is rendered
//! (with their events), one without is refused, every render is audited with the template's
//! purpose, the matrix covers sparse profiles, a save runs the static check, a URL taken
//! from a person's data is blocked and reported, and a test send is made and audited by the
//! server (to a small SMTP sink in this file).

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use trib_config::Config;
use trib_consent::{ConsentConsumer, ConsentReader, Gatekeeper, Ledger};
use trib_identity::consumer::{ConsumerOptions, IdentityConsumer};
use trib_identity::{Engine, Keyer};
use trib_log::{EventLog, MemoryLog};
use trib_render::{
    CheckOptions, Compiler, Limits, PurposeFields, SmtpSecurity, SmtpSettings, Templates,
    Vocabulary,
};
use trib_store::{ProfileId, ProfileStore};

use crate::{ADMIN_KEY, WRITE_KEY};

struct Server {
    base: String,
    http: reqwest::Client,
    identity: Arc<IdentityConsumer>,
    consent: ConsentConsumer,
    render_key: String,
    send_key: String,
    dir: tempfile::TempDir,
}

async fn start() -> Server {
    start_with(None).await
}

async fn start_with(seeds: Option<trib_api::SeedSend>) -> Server {
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
    let audit = Arc::new(trib_audit::AuditLog::open_in_data_dir(dir.path()).unwrap());
    let render_key = trib_api::keys::KeyStore::in_data_dir(dir.path())
        .create("marketing", &[trib_api::Scope::TemplatesRender])
        .unwrap();
    let send_key = trib_api::keys::KeyStore::in_data_dir(dir.path())
        .create("qa", &[trib_api::Scope::TemplatesSend])
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
        seeds,
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
    let addr = crate::serve(state).await;
    Server {
        base: format!("http://{addr}"),
        http: crate::http_client(),
        identity,
        consent,
        render_key: render_key.key.expose().clone(),
        send_key: send_key.key.expose().clone(),
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

    /// `POST /v1/render/send` of the weekly template for the person with this email.
    async fn test_send(&self, key: &str, email: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            "/v1/render/send",
            key,
            json!({"template": "weekly", "identifier": {"type": "email", "value": email}})
                .to_string()
                .into(),
        )
        .await
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

    // This server has no seed list: a test send is refused.
    let (status, refused) = server
        .call(
            reqwest::Method::POST,
            "/v1/render/send",
            &server.send_key,
            json!({"template": "weekly", "profile_id": ann_id.to_string()})
                .to_string()
                .into(),
        )
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (503, Some("send_disabled")),
        "{refused}"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_taken_from_a_persons_data_is_blocked_and_reported() {
    let server = start().await;
    let template = "purpose = \"email_marketing\"\nversion = 1\nsubject = \"Hi\"\n\
        html = '''<a href=\"{{ profile.traits.lastName | default: '#' }}\">me</a>'''\n";
    let (status, saved) = server
        .call(
            reqwest::Method::PUT,
            "/v1/templates/link",
            ADMIN_KEY,
            template.into(),
        )
        .await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["diagnostics"][0]["kind"], "unsafe_url", "{saved}");
    server
        .send(json!([
            {"type": "identify", "userId": "u-eve", "traits": {"email": "eve@example.com", "lastName": "javascript:alert(1)"},
             "timestamp": "2026-03-01T10:00:00Z", "context": {"consent": {"categoryPreferences": {"Marketing": true}}}}
        ]))
        .await;
    let (status, eve) = server
        .render(json!({"template": "link", "identifier": {"type": "email", "value": "eve@example.com"}}))
        .await;
    assert_eq!(status, 200, "{eve}");
    assert_eq!(
        eve["html"].as_str().unwrap().trim_end(),
        "<a href=\"about:blank\">me</a>"
    );
    assert_eq!(
        eve["blocked_urls"],
        json!([{"part": "html", "attribute": "href", "variable": "profile.traits.lastName"}])
    );
    assert!(
        eve["warnings"][0].as_str().unwrap().contains("unsafe_url"),
        "{eve}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_send_is_made_and_audited_as_a_send_by_the_server() {
    let (port, received) = smtp_sink();
    let server = start_with(Some(trib_api::SeedSend {
        to: vec!["qa@example.com".to_owned()],
        smtp: SmtpSettings {
            host: "127.0.0.1".to_owned(),
            port,
            security: SmtpSecurity::None,
            username: None,
            password: None,
            from: "QA <qa@example.com>".to_owned(),
            timeout: Duration::from_secs(10),
        },
    }))
    .await;
    server
        .send(json!([
            {"type": "identify", "userId": "u-ann", "traits": {"email": "ann@example.com", "firstName": "Ann"},
             "timestamp": "2026-03-01T10:00:00Z", "context": {"consent": {"categoryPreferences": {"Marketing": true}}}},
            {"type": "identify", "userId": "u-bob", "traits": {"email": "bob@example.com"}, "timestamp": "2026-03-01T10:00:00Z"}
        ]))
        .await;
    // Rendering is not sending: the render scope alone is refused.
    let (status, _) = server
        .test_send(&server.render_key, "ann@example.com")
        .await;
    assert_eq!(status, 403);
    // Without consent nothing is rendered or sent.
    let (status, bob) = server.test_send(&server.send_key, "bob@example.com").await;
    assert_eq!(
        (status, bob["code"].as_str()),
        (403, Some("consent_denied")),
        "{bob}"
    );
    assert!(received.lock().unwrap().is_empty());

    let (status, ann) = server.test_send(&server.send_key, "ann@example.com").await;
    assert_eq!(status, 200, "{ann}");
    assert_eq!(ann["sent_to"], 1);
    assert_eq!(ann["subject"], "Ann, your picks this week");
    let messages = received.lock().unwrap().clone();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].contains("Subject: Ann, your picks this week"),
        "{}",
        messages[0]
    );
    assert!(
        messages[0].contains("To: qa@example.com"),
        "{}",
        messages[0]
    );
    assert!(!messages[0].contains("ann@example.com"), "{}", messages[0]);

    // The server recorded the send, with the template's purpose, and no separate render.
    let ann_id: ProfileId = ann["profile_id"].as_str().unwrap().parse().unwrap();
    let found =
        trib_audit::entries_about(&server.dir.path().join("audit"), &BTreeSet::from([ann_id]))
            .unwrap();
    let entries: Vec<Value> = found
        .entries
        .iter()
        .map(|entry| serde_json::to_value(entry).unwrap())
        .collect();
    let sends: Vec<&Value> = entries
        .iter()
        .filter(|entry| entry["resource"] == "/v1/render/send")
        .collect();
    assert_eq!(sends.len(), 1, "{entries:?}");
    assert_eq!(sends[0]["purpose"], "email_marketing", "{entries:?}");
    assert_eq!(sends[0]["outcome"], "ok", "{entries:?}");
    assert!(
        entries
            .iter()
            .all(|entry| entry["resource"] != "/v1/render"),
        "{entries:?}"
    );
}

/// A minimal SMTP server on a free loopback port that keeps each message it receives.
fn smtp_sink() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut writer = stream.try_clone().unwrap();
            let mut reader = std::io::BufReader::new(stream);
            writer.write_all(b"220 sink ESMTP\r\n").unwrap();
            let mut message: Option<String> = None;
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(text) = message.as_mut() {
                    if line == ".\r\n" {
                        sink.lock().unwrap().push(message.take().unwrap());
                        writer.write_all(b"250 queued\r\n").unwrap();
                    } else {
                        text.push_str(&line);
                    }
                    continue;
                }
                let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                let reply: &[u8] = match verb.as_str() {
                    "EHLO" | "HELO" => b"250 sink\r\n",
                    "DATA" => {
                        message = Some(String::new());
                        b"354 go on\r\n"
                    }
                    "QUIT" => {
                        let _ = writer.write_all(b"221 bye\r\n");
                        break;
                    }
                    _ => b"250 ok\r\n",
                };
                writer.write_all(reply).unwrap();
            }
        }
    });
    (port, received)
}
