//! The consent consumer over a real event log, and the gatekeeper over the ledger it writes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use trib_consent::{
    ConsentConsumer, ConsentReader, ConsumerOptions, DenyReason, Gatekeeper, Ledger, LegalBasis,
    NewEntry, PrivacyRules, Proof, Purpose, Status, Suppression, SuppressionScope,
};
use trib_identity::profile::IdentifierEntry;
use trib_identity::{IdentityRules, Keyer};
use trib_log::{EventLog, MemoryLog, Record};

fn keyer() -> Keyer {
    Keyer::new(&[7; 32])
}

fn identity() -> Arc<IdentityRules> {
    Arc::new(IdentityRules::default())
}

fn identifier(kind: &str, value: &str) -> IdentifierEntry {
    IdentifierEntry {
        kind: kind.into(),
        value: value.into(),
        first_seen_ms: 0,
        source: "web".into(),
        message_id: "m".into(),
    }
}

/// Ann as identity resolution would hold her: a user id, an email and an anonymous id.
fn ann() -> Vec<IdentifierEntry> {
    vec![
        identifier("user_id", "u-ann"),
        identifier("email", "ann@example.com"),
        identifier("anonymous_id", "a-ann"),
    ]
}

fn event(n: u32, body: Value) -> Value {
    let mut event = body;
    let object = event.as_object_mut().unwrap();
    object.insert("messageId".into(), json!(format!("m-{n}")));
    object.insert("source".into(), json!("web"));
    object.insert(
        "timestamp".into(),
        json!(format!("2026-03-01T10:{:02}:{:02}Z", n / 60, n % 60)),
    );
    event
}

async fn append(log: &dyn EventLog, events: &[Value]) {
    let records = events
        .iter()
        .map(|event| Record {
            key: event["userId"]
                .as_str()
                .or(event["anonymousId"].as_str())
                .unwrap()
                .to_owned(),
            dedup_id: None,
            timestamp_ms: 0,
            payload: Bytes::from(event.to_string()),
        })
        .collect();
    log.append(records).await.unwrap();
}

fn preferences(n: u32, user: &str, email_marketing: bool, analytics: bool) -> Value {
    event(
        n,
        json!({"type": "track", "event": "Page Viewed", "userId": user,
               "context": {"consent": {"categoryPreferences": {
                   "email_marketing": email_marketing, "analytics": analytics, "Functional": true}}}}),
    )
}

struct Setup {
    log: Arc<dyn EventLog>,
    ledger: Arc<Ledger>,
    gatekeeper: Gatekeeper,
    _dir: tempfile::TempDir,
}

fn setup(rules: PrivacyRules) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open_in(dir.path()).unwrap());
    Setup {
        log: Arc::new(MemoryLog::new(3)),
        gatekeeper: Gatekeeper::new(ledger.clone(), keyer(), Arc::new(rules)),
        ledger,
        _dir: dir,
    }
}

fn spawn(setup: &Setup, rules: PrivacyRules) -> ConsentConsumer {
    ConsentConsumer::spawn(
        setup.log.clone(),
        setup.ledger.clone(),
        ConsentReader::new(keyer(), identity(), Arc::new(rules)),
        ConsumerOptions {
            max_records_per_partition: 2,
            idle_wait: Duration::from_millis(5),
        },
        tokio::runtime::Handle::current(),
    )
    .unwrap()
}

async fn caught_up(consumer: &ConsentConsumer) {
    tokio::time::timeout(Duration::from_secs(10), consumer.caught_up())
        .await
        .expect("the consumer keeps up")
        .unwrap();
}

/// The permitted value; fails the test when refused.
fn permitted<T: std::fmt::Debug>(
    result: Result<trib_consent::Permitted<T>, trib_consent::Denied>,
) -> T {
    result.unwrap().into_inner()
}

fn reason<T: std::fmt::Debug>(result: Result<T, trib_consent::Denied>) -> DenyReason {
    result.expect_err("should be denied").reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_preferences_grant_and_withdraw_and_the_gatekeeper_follows_immediately() {
    let setup = setup(PrivacyRules::default());
    let consumer = spawn(&setup, PrivacyRules::default());
    let gate = &setup.gatekeeper;

    // No consent recorded: unknown means no.
    assert_eq!(
        reason(gate.permit(&ann(), "email_marketing", Some("mailchimp"), "newsletter")),
        DenyReason::NoConsent
    );

    append(&*setup.log, &[preferences(1, "u-ann", true, false)]).await;
    caught_up(&consumer).await;
    let permit = gate
        .permit(&ann(), "email_marketing", Some("mailchimp"), "newsletter")
        .unwrap();
    assert_eq!(permit.purpose(), "email_marketing");
    assert_eq!(permit.destination(), Some("mailchimp"));
    assert_eq!(permit.into_inner(), "newsletter");
    assert_eq!(
        reason(gate.permit(&ann(), "analytics", None, ())),
        DenyReason::Denied
    );

    // Repeated preferences (sent with every event) add no history.
    append(
        &*setup.log,
        &[
            preferences(2, "u-ann", true, false),
            preferences(3, "u-ann", true, false),
        ],
    )
    .await;
    caught_up(&consumer).await;
    let keys: Vec<_> = ann()
        .iter()
        .map(|i| keyer().ident_key(&i.kind, &i.value))
        .collect();
    assert_eq!(setup.ledger.history(&keys).unwrap().len(), 2);

    // Withdrawal: the very next permit is refused.
    append(&*setup.log, &[preferences(4, "u-ann", false, false)]).await;
    caught_up(&consumer).await;
    assert_eq!(
        reason(gate.permit(&ann(), "email_marketing", Some("mailchimp"), "newsletter")),
        DenyReason::Withdrawn
    );
    let history = setup.ledger.history(&keys).unwrap();
    let statuses: Vec<_> = history
        .iter()
        .map(|e| (e.purpose.as_str(), e.status, e.source.as_str()))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("analytics", Status::Denied, "event:web:m-1"),
            ("email_marketing", Status::Granted, "event:web:m-1"),
            ("email_marketing", Status::Withdrawn, "event:web:m-4"),
        ]
    );
    consumer.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consent_event_records_status_and_declared_proof_only() {
    let setup = setup(PrivacyRules::default());
    let consumer = spawn(&setup, PrivacyRules::default());
    append(
        &*setup.log,
        &[
            event(
                1,
                json!({"type": "track", "event": "Consent Updated", "anonymousId": "a-ann",
                       "context": {"traits": {"email": "Ann@Example.com"}},
                       "properties": {"purpose": "email_marketing", "status": "granted",
                                      "proof": {"form_id": "footer", "text_version": "v3", "ip": "203.0.113.9"}}}),
            ),
            // Not a declared purpose, and a status that is none: ignored.
            event(
                2,
                json!({"type": "track", "event": "Consent Updated", "anonymousId": "a-ann",
                       "properties": {"purpose": "telepathy", "status": "granted"}}),
            ),
            event(
                3,
                json!({"type": "track", "event": "Consent Updated", "anonymousId": "a-ann",
                       "properties": {"purpose": "analytics", "status": "maybe"}}),
            ),
        ],
    )
    .await;
    caught_up(&consumer).await;
    // Keyed by the email trait too: a profile holding only the email is covered.
    let by_email = [identifier("email", "ann@example.com")];
    let permit = setup
        .gatekeeper
        .permit(&by_email, "email_marketing", None, 1)
        .unwrap();
    assert_eq!(*permit.value(), 1);
    let keys = [keyer().ident_key("email", "ann@example.com")];
    let history = setup.ledger.history(&keys).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        history[0].proof.to_json(),
        json!({"form_id": "footer", "text_version": "v3"})
    );
    assert_eq!(history[0].legal_basis, "consent");

    // An explicit denial of a granted purpose is a withdrawal.
    append(
        &*setup.log,
        &[event(
            4,
            json!({"type": "track", "event": "Consent Updated", "userId": "u-other",
                   "context": {"traits": {"email": "ann@example.com"}},
                   "properties": {"purpose": "email_marketing", "status": false}}),
        )],
    )
    .await;
    caught_up(&consumer).await;
    assert_eq!(
        reason(setup.gatekeeper.permit(&ann(), "email_marketing", None, ())),
        DenyReason::Withdrawn
    );
    consumer.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_consumer_resumes_after_its_committed_offsets() {
    let setup = setup(PrivacyRules::default());
    let consumer = spawn(&setup, PrivacyRules::default());
    // Seven users over three partitions, two records per partition and round.
    let users: Vec<String> = (0..7).map(|n| format!("u-{n}")).collect();
    let first: Vec<Value> = users
        .iter()
        .enumerate()
        .map(|(n, user)| preferences(n as u32, user, true, true))
        .collect();
    append(&*setup.log, &first).await;
    caught_up(&consumer).await;
    let position = consumer.position();
    consumer.stop();

    // While stopped: every user withdraws email marketing.
    let second: Vec<Value> = users
        .iter()
        .enumerate()
        .map(|(n, user)| preferences(100 + n as u32, user, false, true))
        .collect();
    append(&*setup.log, &second).await;

    let consumer = spawn(&setup, PrivacyRules::default());
    assert_eq!(consumer.position(), position, "resumes from the ledger");
    caught_up(&consumer).await;
    let mut total = 0;
    for user in &users {
        let me = [identifier("user_id", user)];
        assert_eq!(
            reason(setup.gatekeeper.permit(&me, "email_marketing", None, ())),
            DenyReason::Withdrawn
        );
        permitted(setup.gatekeeper.permit(&me, "analytics", None, ()));
        total += setup
            .ledger
            .history(&[keyer().ident_key("user_id", user)])
            .unwrap()
            .len();
    }
    // Exactly once: grant + grant per user, then one withdrawal each; nothing repeated.
    assert_eq!(total, users.len() * 3);
    consumer.stop();
}

#[test]
fn a_documented_legal_basis_permits_without_consent_but_not_past_suppression() {
    let mut rules = PrivacyRules::default();
    rules.purposes.push(Purpose {
        name: "transactional".into(),
        legal_basis: LegalBasis::Contract,
        basis_note: Some("order confirmations: terms of sale, section 4".into()),
    });
    let setup = setup(rules);
    let gate = &setup.gatekeeper;
    permitted(gate.permit(&ann(), "transactional", Some("sendgrid"), "receipt"));
    assert_eq!(
        reason(gate.permit(&ann(), "no_such_purpose", None, ())),
        DenyReason::UnknownPurpose
    );

    let suppress = |scope: SuppressionScope| Suppression {
        ident_key: keyer().ident_key("email", "ann@example.com"),
        scope,
        reason: "hard_bounce".into(),
        at_ms: 1,
        source: "api:test".into(),
    };
    setup
        .ledger
        .suppress(&suppress(SuppressionScope::Destination("sendgrid".into())))
        .unwrap();
    assert_eq!(
        reason(gate.permit(&ann(), "transactional", Some("sendgrid"), ())),
        DenyReason::SuppressedDestination
    );
    permitted(gate.permit(&ann(), "transactional", Some("mailchimp"), ()));

    // A grant does not override suppression either.
    setup
        .ledger
        .record(&[NewEntry {
            ident_key: keyer().ident_key("user_id", "u-ann"),
            purpose: "email_marketing".into(),
            status: Status::Granted,
            at_ms: 10,
            source: "api:test".into(),
            legal_basis: LegalBasis::Consent,
            proof: Proof::default(),
        }])
        .unwrap();
    permitted(gate.permit(&ann(), "email_marketing", Some("mailchimp"), ()));
    setup
        .ledger
        .suppress(&suppress(SuppressionScope::Global))
        .unwrap();
    for (purpose, destination) in [
        ("email_marketing", Some("mailchimp")),
        ("transactional", None),
        ("transactional", Some("sendgrid")),
    ] {
        let denied = gate.permit(&ann(), purpose, destination, ()).unwrap_err();
        assert_eq!(denied.reason, DenyReason::SuppressedGlobal);
        // The refusal names purpose, destination and reason, never the person.
        let text = denied.to_string();
        assert!(
            text.contains(purpose) && text.contains("suppressed_global"),
            "{text}"
        );
        assert!(!text.contains("ann"), "{text}");
    }
    // Removing the suppression restores the permit at once.
    setup
        .ledger
        .unsuppress(
            &keyer().ident_key("email", "ann@example.com"),
            &SuppressionScope::Global,
        )
        .unwrap();
    permitted(gate.permit(&ann(), "email_marketing", Some("mailchimp"), ()));
}

/// The consumer skips events without consent unparsed (a byte search), but a key written with
/// JSON escapes is the same key and still counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_written_with_json_escapes_counts_and_other_events_record_nothing() {
    let setup = setup(PrivacyRules::default());
    let consumer = spawn(&setup, PrivacyRules::default());
    let keys: Vec<_> = ann()
        .iter()
        .map(|i| keyer().ident_key(&i.kind, &i.value))
        .collect();
    let page = event(
        1,
        json!({"type": "page", "name": "Home", "userId": "u-ann",
               "properties": {"consent": "categoryPreference"}}),
    );
    append(&*setup.log, &[page]).await;
    caught_up(&consumer).await;
    assert!(setup.ledger.history(&keys).unwrap().is_empty());

    // `\u0063ategoryPreferences` and `Consent\u0020Updated` as a client might escape them.
    let escaped = r#"{"type":"track","event":"Page Viewed","userId":"u-ann","messageId":"m-2",
        "source":"web","timestamp":"2026-03-01T10:00:02Z",
        "context":{"consent":{"\u0063ategoryPreferences":{"email_marketing":true}}}}"#;
    let escaped_event = r#"{"type":"track","event":"Consent\u0020Updated","userId":"u-ann",
        "messageId":"m-3","source":"web","timestamp":"2026-03-01T10:00:03Z",
        "properties":{"purpose":"analytics","status":"granted"}}"#;
    let records = [escaped, escaped_event]
        .iter()
        .map(|payload| Record {
            key: "u-ann".to_owned(),
            dedup_id: None,
            timestamp_ms: 0,
            payload: Bytes::from(payload.to_string()),
        })
        .collect();
    setup.log.append(records).await.unwrap();
    caught_up(&consumer).await;
    let mut recorded: Vec<_> = setup
        .ledger
        .history(&keys)
        .unwrap()
        .iter()
        .map(|entry| (entry.purpose.clone(), entry.status))
        .collect();
    recorded.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        recorded,
        vec![
            ("analytics".to_owned(), Status::Granted),
            ("email_marketing".to_owned(), Status::Granted),
        ]
    );
    consumer.stop();
}
