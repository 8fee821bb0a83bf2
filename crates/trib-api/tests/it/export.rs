//! Subject access exports over real HTTP, with the identity and consent consumers on the event
//! log, the audit log and the signing key of a data directory: an export holds the person's
//! profile, events, consent and the audit entries about all of their profile ids, verifies,
//! shows any change, holds nothing of another person, and is itself recorded. Also an erasure
//! whose person had a push pending at a destination: its deletion by email is queued sealed.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};
use trib_config::Config;
use trib_consent::{ConsentConsumer, ConsentReader, Ledger};
use trib_identity::consumer::{ConsumerOptions, IdentityConsumer};
use trib_identity::{Engine, Keyer};
use trib_log::{EventLog, MemoryLog};
use trib_store::{ProfileId, ProfileStore};

use crate::{ADMIN_KEY, WRITE_KEY};

struct ExportServer {
    base: String,
    http: reqwest::Client,
    identity: Arc<IdentityConsumer>,
    consent: ConsentConsumer,
    /// A key with only `privacy:export`, and one with only `profiles:read`.
    export_key: String,
    read_key: String,
    /// With [`start_with_sync`]: the sync state of the destination `esp` and the sealer of
    /// the emails erasures queue there.
    sync: Option<(Arc<trib_sync::SyncState>, Arc<dyn trib_sync::EmailSealer>)>,
    dir: tempfile::TempDir,
}

async fn start() -> ExportServer {
    start_with(false).await
}

/// A server whose erasures queue deletions for one destination, `esp`.
async fn start_with_sync() -> ExportServer {
    start_with(true).await
}

async fn start_with(with_sync: bool) -> ExportServer {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml_str(
        &format!(
            "version = 1\n[server]\nadmin_key = \"{ADMIN_KEY}\"\ndata_dir = {data_dir:?}\n[[sources]]\nname = \"web\"\nwrite_key = \"{WRITE_KEY}\"\n\
             [[privacy.purposes]]\nname = \"email_marketing\"\nlegal_basis = \"consent\"\n\
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
    let audit = Arc::new(trib_audit::AuditLog::open_in_data_dir(dir.path()).unwrap());
    let keys = trib_api::keys::KeyStore::in_data_dir(dir.path());
    let export_key = keys
        .create("dpo", &[trib_api::Scope::PrivacyExport])
        .unwrap();
    let read_key = keys
        .create("support", &[trib_api::Scope::ProfilesRead])
        .unwrap();
    let sync: Option<(Arc<trib_sync::SyncState>, Arc<dyn trib_sync::EmailSealer>)> = with_sync
        .then(|| {
            let at_rest = trib_privacy::AtRest::open(dir.path(), [5; 32]).unwrap();
            let sealer: Arc<dyn trib_sync::EmailSealer> = Arc::new(trib_api::QueuedEmails(
                at_rest.queue_sealer(trib_api::QueuedEmails::QUEUE),
            ));
            (
                Arc::new(trib_sync::SyncState::open(dir.path()).unwrap()),
                sealer,
            )
        });
    let registry = Arc::new(std::sync::RwLock::new(trib_schema::Registry::empty()));
    let state = trib_api::AppState::new(&config, logs, registry, None)
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
        .with_erasure(trib_api::ErasureState {
            at_rest: None,
            signer: trib_api::signing::DocumentSigner::load_or_create(dir.path()).unwrap(),
            receipts_dir: dir.path().join("privacy").join("erasures"),
            destinations: sync.iter().map(|_| "esp".to_owned()).collect(),
            sync: sync.as_ref().map(|(state, _)| state.clone()),
            email_sealer: sync.as_ref().map(|(_, sealer)| sealer.clone()),
        });
    let addr = crate::serve(state).await;
    ExportServer {
        base: format!("http://{addr}"),
        http: crate::http_client(),
        identity,
        consent,
        export_key: export_key.key.expose().clone(),
        read_key: read_key.key.expose().clone(),
        sync,
        dir,
    }
}

impl ExportServer {
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

    async fn get(&self, path: &str) -> (u16, Value) {
        crate::admin_get(&self.http, &self.base, path).await
    }

    /// `POST /v1/privacy/exports` with `key`: the status, the headers and the exact body.
    async fn export(&self, key: &str, body: Value) -> (u16, reqwest::header::HeaderMap, String) {
        let response = self
            .http
            .post(format!("{}/v1/privacy/exports", self.base))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }

    fn audit_entries_about(&self, id: &str) -> Vec<Value> {
        let subjects: BTreeSet<ProfileId> = [id.parse().unwrap()].into();
        trib_audit::entries_about(&self.dir.path().join("audit"), &subjects)
            .unwrap()
            .entries
            .iter()
            .map(|entry| serde_json::to_value(entry).unwrap())
            .collect()
    }
}

fn person(user: &str, anonymous: &str, email: &str, first_name: &str) -> Vec<Value> {
    let mut events = vec![json!({
        "type": "identify", "userId": user, "anonymousId": anonymous,
        "traits": {"email": email, "firstName": first_name},
        "timestamp": "2026-03-01T10:00:00Z",
        "context": {"consent": {"categoryPreferences": {"Marketing": true}}}
    })];
    for n in 0..5 {
        events.push(json!({
            "type": "track", "userId": user, "event": "Order Completed",
            "properties": {"order_id": format!("{user}-order-{n}")},
            "timestamp": format!("2026-03-0{}T12:00:00Z", 5 - n)
        }));
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_holds_the_person_verifies_shows_changes_and_is_audited() {
    let server = start().await;
    // Ann browses anonymously first: a profile under her anonymous id, read by support.
    server
        .send(
            json!([{"type": "page", "anonymousId": "a-ann-77", "name": "Pricing",
                      "timestamp": "2026-02-27T09:00:00Z"}]),
        )
        .await;
    let (status, anonymous) = server
        .get("/v1/profiles/lookup?anonymous_id=a-ann-77")
        .await;
    assert_eq!(status, 200, "{anonymous}");
    let anonymous_id = anonymous["id"].as_str().unwrap().to_owned();
    let (status, _) = server.get(&format!("/v1/profiles/{anonymous_id}")).await;
    assert_eq!(status, 200);
    // Then she signs in (the profile absorbs the anonymous one), and Bob exists too.
    server
        .send(Value::Array(person(
            "u-ann",
            "a-ann-77",
            "ann.export@example.com",
            "Annabel",
        )))
        .await;
    server
        .send(Value::Array(person(
            "u-bob",
            "a-bob-12",
            "bob.other@example.com",
            "Bartholomew",
        )))
        .await;
    let (status, ann) = server.get("/v1/profiles/lookup?user_id=u-ann").await;
    assert_eq!(status, 200, "{ann}");
    let ann_id = ann["id"].as_str().unwrap().to_owned();
    assert_ne!(ann_id, anonymous_id);
    let (status, _) = server.get(&format!("/v1/profiles/{ann_id}")).await;
    assert_eq!(status, 200);
    let (status, bob) = server.get("/v1/profiles/lookup?user_id=u-bob").await;
    assert_eq!(status, 200, "{bob}");
    let bob_id = bob["id"].as_str().unwrap().to_owned();
    let (status, _) = server.get(&format!("/v1/profiles/{bob_id}/events")).await;
    assert_eq!(status, 200);

    // An export by identifier, with a key holding only `privacy:export`.
    let (status, headers, text) = server
        .export(
            &server.export_key,
            json!({"identifier": {"type": "email", "value": "ANN.Export@example.com"}}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        headers["content-disposition"].to_str().unwrap(),
        format!("attachment; filename=\"tributary-export-{ann_id}.json\"")
    );
    let document = trib_api::signing::verify_signed(&text, None).expect("a valid signature");
    let export: Value = serde_json::from_str(&document).unwrap();
    assert!(export["export_id"].as_str().unwrap().starts_with("ex_"));
    assert!(
        export["generated_at"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );
    assert_eq!(export["subject"]["profile_id"], ann_id.as_str());
    let profile_ids: Vec<&str> = export["subject"]["profile_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    assert_eq!(profile_ids, vec![ann_id.as_str(), anonymous_id.as_str()]);
    assert_eq!(export["profile"]["id"], ann_id.as_str());
    assert_eq!(export["profile"]["traits"]["firstName"], "Annabel");
    assert_eq!(export["profile"]["event_count"], 7);
    let identifier_types: BTreeSet<&str> = export["identifiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|identifier| identifier["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        identifier_types,
        ["anonymous_id", "email", "user_id"].into()
    );

    // Every event of the timeline, oldest first, as stored.
    let events = export["events"].as_array().unwrap();
    assert_eq!(events.len(), 7, "{events:#?}");
    let times: Vec<&str> = events
        .iter()
        .map(|event| event["timestamp"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "oldest first");
    assert_eq!(events[0]["data"]["type"], "page");
    assert_eq!(events[0]["data"]["anonymousId"], "a-ann-77");
    let orders: BTreeSet<&str> = events
        .iter()
        .filter_map(|event| event["data"]["properties"]["order_id"].as_str())
        .collect();
    assert_eq!(orders.len(), 5);
    assert!(orders.iter().all(|order| order.starts_with("u-ann-order-")));

    // Consent: the grant from the event on each identifier, and the state per purpose.
    let consent = &export["consent"];
    assert_eq!(consent["profile_id"], ann_id.as_str());
    let history = consent["history"].as_array().unwrap();
    assert_eq!(history.len(), 3, "{history:#?}");
    assert!(history.iter().all(|entry| entry["status"] == "granted"));
    let marketing = consent["purposes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|purpose| purpose["purpose"] == "email_marketing")
        .unwrap();
    assert_eq!(marketing["status"], "granted");
    assert_eq!(export["destinations"], json!([]));
    assert!(
        export["notes"]["destinations"]
            .as_str()
            .unwrap()
            .contains("no destinations")
    );

    // The audit entries about both of her ids: the read of the anonymous profile and of hers.
    let audit = export["audit"].as_array().unwrap();
    let reads: Vec<(&str, &str)> = audit
        .iter()
        .map(|entry| {
            (
                entry["resource"].as_str().unwrap(),
                entry["subject"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        reads.contains(&("/v1/profiles/{id}", anonymous_id.as_str())),
        "{reads:?}"
    );
    assert!(
        reads.contains(&("/v1/profiles/{id}", ann_id.as_str())),
        "{reads:?}"
    );
    assert!(
        reads
            .iter()
            .all(|(_, subject)| [ann_id.as_str(), anonymous_id.as_str()].contains(subject)),
        "{reads:?}"
    );

    // Nothing of Bob.
    for value in [
        "u-bob",
        "a-bob-12",
        "bob.other@example.com",
        "Bartholomew",
        bob_id.as_str(),
    ] {
        assert!(!text.contains(value), "the export holds {value}");
    }

    // Any change shows: a trait, an event, a byte of the signature.
    for (from, to) in [
        ("Annabel", "Annabelle"),
        ("u-ann-order-3", "u-ann-order-9"),
        ("\"status\":\"granted\"", "\"status\":\"denied\""),
    ] {
        assert!(text.contains(from), "{from}");
        let altered = text.replacen(from, to, 1);
        let error = trib_api::signing::verify_signed(&altered, None).unwrap_err();
        assert!(error.contains("does not match"), "{error}");
    }

    // The export itself is recorded, with the key, the purpose and the person.
    let about_ann = server.audit_entries_about(&ann_id);
    let recorded = about_ann.last().unwrap();
    assert_eq!(recorded["resource"], "/v1/privacy/exports");
    assert_eq!(recorded["action"], "read");
    assert_eq!(recorded["purpose"], "privacy_request");
    assert_eq!(recorded["outcome"], "status:200");
    assert!(recorded["actor"].as_str().unwrap().starts_with("key:"));
    let report = trib_audit::verify_data_dir(server.dir.path()).unwrap();
    assert!(report.is_intact(), "{report:?}");
    // A second export (by profile id, an absorbed one) lists the first one.
    let (status, _, again) = server
        .export(ADMIN_KEY, json!({"profile_id": anonymous_id}))
        .await;
    assert_eq!(status, 200, "{again}");
    let again: Value =
        serde_json::from_str(&trib_api::signing::verify_signed(&again, None).unwrap()).unwrap();
    assert_eq!(again["subject"]["profile_id"], ann_id.as_str());
    assert!(
        again["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry["resource"] == "/v1/privacy/exports"),
        "{:#}",
        again["audit"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_refuse_unknown_people_bad_bodies_and_keys_without_the_scope() {
    let server = start().await;
    server
        .send(Value::Array(person(
            "u-cy",
            "a-cy-1",
            "cy@example.com",
            "Cyprian",
        )))
        .await;
    let code = |text: &str| -> String {
        serde_json::from_str::<Value>(text).unwrap()["code"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (status, _, text) = server
        .export(
            ADMIN_KEY,
            json!({"identifier": {"type": "email", "value": "nobody@example.com"}}),
        )
        .await;
    assert_eq!((status, code(&text)), (404, "person_not_found".into()));
    assert!(!text.contains("nobody@example.com"), "{text}");
    let (status, _, text) = server
        .export(
            ADMIN_KEY,
            json!({"profile_id": "p_00000000000000000000000000000000",
                   "identifier": {"type": "email", "value": "cy@example.com"}}),
        )
        .await;
    assert_eq!(
        (status, code(&text)),
        (400, "invalid_body".into()),
        "{text}"
    );
    let (status, _, text) = server
        .export(
            ADMIN_KEY,
            json!({"identifier": {"type": "shoe_size", "value": "44"}}),
        )
        .await;
    assert_eq!(
        (status, code(&text)),
        (400, "invalid_body".into()),
        "{text}"
    );
    let (status, _, text) = server
        .export(
            &server.read_key,
            json!({"identifier": {"type": "email", "value": "cy@example.com"}}),
        )
        .await;
    assert_eq!(
        (status, code(&text)),
        (403, "insufficient_scope".into()),
        "{text}"
    );
    assert!(text.contains("privacy:export"), "{text}");
    assert_eq!(trib_api::MAX_EXPORT_EVENTS, 1_000_000);
}

/// An erasure of a person whose push to a destination had no known outcome (pending, no id
/// confirmed) queues a deletion by email there, the email sealed in `sync.db`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_queues_a_sealed_deletion_by_email_where_a_push_was_pending() {
    let server = start_with_sync().await;
    server
        .send(json!(person(
            "u-erin",
            "a-erin",
            "erin@example.com",
            "Erin"
        )))
        .await;
    let (status, profile) = server
        .get("/v1/profiles/lookup?email=erin@example.com")
        .await;
    assert_eq!(status, 200, "{profile}");
    let id: ProfileId = profile["id"].as_str().unwrap().parse().unwrap();
    let (sync, sealer) = server.sync.as_ref().unwrap();
    sync.enqueue("esp", &[(id, 1, 0)], None, 0).unwrap();

    let response = server
        .http
        .post(format!("{}/v1/privacy/erasures", server.base))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"identifier": {"type": "email", "value": "erin@example.com"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());

    let due = sync.due_deletions("esp", i64::MAX, 10).unwrap();
    assert_eq!(due.len(), 1, "{due:?}");
    assert!(due[0].esp_id.is_empty());
    let sealed = due[0].sealed_email.clone().expect("a sealed email");
    assert_eq!(sealer.open(&sealed).unwrap(), "erin@example.com");
    for file in ["sync.db", "sync.db-wal"] {
        let bytes = std::fs::read(server.dir.path().join(file)).unwrap_or_default();
        assert!(
            !bytes
                .windows(b"erin@example.com".len())
                .any(|window| window == b"erin@example.com"),
            "{file} holds the email in clear"
        );
    }
}
