//! The engine's behaviour against a scripted connector (a test double of the `Connector`
//! trait, not of an ESP: ESP contracts are tested against the simulators).

mod common;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trib_config::{DestinationConfig, DestinationType, FieldSource, SyncMode};
use trib_consent::{
    Gatekeeper, Ledger, LegalBasis, NewEntry, Permitted, PrivacyRules, Proof, Purpose, Status,
    Suppression, SuppressionScope,
};
use trib_core::Secret;
use trib_identity::Keyer;
use trib_store::{ChangeBatch, MemoryStore, ProfileId, ProfileRecord, ProfileStore};
use trib_sync::map::Digester;
use trib_sync::{
    CallError, Connector, Contact, DeleteTarget, Destination, DestinationKind, EmailSealer,
    EngineOptions, ErrorClass, ItemOutcome, Limits, SyncEngine, SyncState,
};

/// What the scripted connector was asked, and what it holds.
#[derive(Default)]
struct Script {
    /// Email → outcomes to answer before applying (front first).
    failures: HashMap<String, VecDeque<ItemOutcome>>,
    /// Every upsert call: (email, fields sent).
    calls: Vec<Vec<(String, BTreeMap<String, Value>)>>,
    deletes: Vec<Vec<String>>,
    /// When set, every call fails as a whole (the ESP answers 503), after being recorded.
    down: bool,
    /// Emails whose pushes the ESP applies but whose answers are lost (a timeout).
    applied_then_lost: std::collections::HashSet<String>,
    /// email → fields held.
    held: BTreeMap<String, BTreeMap<String, Value>>,
}

#[derive(Clone, Default)]
struct Scripted(Arc<Mutex<Script>>);

impl Scripted {
    fn with<T>(&self, f: impl FnOnce(&mut Script) -> T) -> T {
        f(&mut self.0.lock().expect("script lock"))
    }
}

#[async_trait::async_trait]
impl Connector for Scripted {
    fn kind(&self) -> DestinationKind {
        DestinationKind::Webhook
    }

    fn limits(&self) -> Limits {
        Limits {
            max_batch: 2,
            max_delete_batch: 10,
            max_concurrency: 2,
            rate_max: None,
            rate_interval: Duration::from_secs(1),
            partial_updates: true,
        }
    }

    async fn upsert(&self, batch: Vec<Permitted<Contact>>) -> Result<Vec<ItemOutcome>, CallError> {
        self.with(|script| {
            script.calls.push(
                batch
                    .iter()
                    .map(|p| (p.value().email.clone(), p.value().fields.clone()))
                    .collect(),
            );
            if script.down {
                return Err(unavailable());
            }
            Ok(batch
                .into_iter()
                .map(|permit| {
                    let contact = permit.into_inner();
                    if let Some(outcome) = script
                        .failures
                        .get_mut(&contact.email)
                        .and_then(VecDeque::pop_front)
                    {
                        return outcome;
                    }
                    let lost = script.applied_then_lost.contains(&contact.email);
                    let held = script.held.entry(contact.email.clone()).or_default();
                    held.extend(contact.fields);
                    if lost {
                        return ItemOutcome::Failed {
                            class: ErrorClass::Transient,
                            detail: "no answer within the timeout".to_owned(),
                        };
                    }
                    ItemOutcome::Confirmed {
                        esp_id: format!("esp-{}", contact.email),
                    }
                })
                .collect())
        })
    }

    async fn delete(&self, targets: Vec<DeleteTarget>) -> Result<Vec<ItemOutcome>, CallError> {
        self.with(|script| {
            script
                .deletes
                .push(targets.iter().map(|t| t.esp_id.clone()).collect());
            if script.down {
                return Err(unavailable());
            }
            Ok(targets
                .into_iter()
                .map(|target| {
                    let email = match &target.email {
                        Some(email) if target.esp_id.is_empty() => email.expose().clone(),
                        _ => target.esp_id.trim_start_matches("esp-").to_owned(),
                    };
                    script.held.remove(&email);
                    ItemOutcome::Confirmed {
                        esp_id: target.esp_id,
                    }
                })
                .collect())
        })
    }
}

/// A stand-in for the server's sealer: the email reversed behind a prefix.
#[derive(Debug)]
struct ReversedSealer;

impl EmailSealer for ReversedSealer {
    fn seal(&self, email: &str) -> Result<Vec<u8>, String> {
        Ok(format!("sealed:{}", email.chars().rev().collect::<String>()).into_bytes())
    }
    fn open(&self, sealed: &[u8]) -> Result<String, String> {
        let text = std::str::from_utf8(sealed).map_err(|e| e.to_string())?;
        let reversed = text.strip_prefix("sealed:").ok_or("not sealed here")?;
        Ok(reversed.chars().rev().collect())
    }
}

fn unavailable() -> CallError {
    CallError {
        class: ErrorClass::Transient,
        status: Some(503),
        retry_after: None,
        detail: "service unavailable".to_owned(),
    }
}

struct Harness {
    store: Arc<MemoryStore>,
    state: Arc<SyncState>,
    ledger: Arc<Ledger>,
    keyer: Keyer,
    connector: Scripted,
    engine: Option<SyncEngine>,
    audit: Option<Arc<trib_audit::AuditLog>>,
    _dir: tempfile::TempDir,
}

fn config(purpose: &str, mode: SyncMode) -> DestinationConfig {
    DestinationConfig {
        name: "esp".to_owned(),
        kind: DestinationType::Webhook,
        purpose: purpose.to_owned(),
        mode,
        credential: Secret::new("secret".to_owned()),
        list_id: None,
        list_ids: Vec::new(),
        url: Some("http://127.0.0.1:9".to_owned()),
        base_url: None,
        fields: vec![
            (
                "FNAME".to_owned(),
                FieldSource::Trait("firstName".to_owned()),
            ),
            ("PLAN".to_owned(), FieldSource::Trait("plan".to_owned())),
            (
                "CITY".to_owned(),
                FieldSource::Trait("address.city".to_owned()),
            ),
        ],
        batch_window: Duration::from_millis(20),
        reconcile_interval: Duration::from_secs(3600),
        resync_interval: None,
        retry_window: Duration::from_secs(60),
        retry_base: Duration::from_millis(10),
        max_batch: None,
    }
}

impl Harness {
    fn start(config: DestinationConfig) -> Self {
        Self::start_with(config, false)
    }

    fn start_with(config: DestinationConfig, audited: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = audited.then(|| {
            Arc::new(trib_audit::AuditLog::open_in_data_dir(dir.path()).expect("audit log"))
        });
        let ledger = Arc::new(Ledger::open_in(dir.path()).expect("ledger"));
        let keyer = Keyer::new(&[7; 32]);
        let rules = PrivacyRules {
            purposes: vec![
                Purpose {
                    name: "email_marketing".to_owned(),
                    legal_basis: LegalBasis::LegitimateInterest,
                    basis_note: Some("test".to_owned()),
                },
                Purpose {
                    name: "personalization".to_owned(),
                    legal_basis: LegalBasis::Consent,
                    basis_note: None,
                },
            ],
            ..PrivacyRules::default()
        };
        let gate = Gatekeeper::new(ledger.clone(), keyer.clone(), Arc::new(rules));
        let store = Arc::new(MemoryStore::new());
        let state = Arc::new(SyncState::in_memory().expect("state"));
        let connector = Scripted::default();
        let engine = SyncEngine::start(
            vec![Destination {
                config,
                connector: Arc::new(connector.clone()),
            }],
            store.clone(),
            state.clone(),
            gate,
            Digester::new(&[9; 32]),
            EngineOptions {
                poll_interval: Duration::from_millis(10),
                feed_page: 100,
                audit: audit.clone(),
                email_sealer: Some(Arc::new(ReversedSealer)),
            },
        );
        Self {
            store,
            state,
            ledger,
            keyer,
            connector,
            engine: Some(engine),
            audit,
            _dir: dir,
        }
    }

    fn put(&self, n: u8, traits: Value) -> ProfileId {
        let id = ProfileId::from_bytes([n; 16]);
        self.store
            .apply(&ChangeBatch {
                at_ms: 1,
                upserts: vec![record(id, &email(n), traits)],
                identifiers: vec![(self.keyer.ident_key("email", &email(n)), Some(id))],
                ..ChangeBatch::default()
            })
            .expect("apply");
        id
    }

    /// Merges `from` into `into`, whose golden record then has `email` and `traits`.
    fn merge(&self, from: ProfileId, into: ProfileId, email: &str, traits: Value) {
        self.store
            .apply(&ChangeBatch {
                at_ms: 2,
                merged: vec![(from, into)],
                upserts: vec![record(into, email, traits)],
                identifiers: vec![(self.keyer.ident_key("email", email), Some(into))],
                ..ChangeBatch::default()
            })
            .expect("merge");
    }

    fn settled(&self) -> bool {
        let counts = self.state.counts("esp").expect("counts");
        counts.pending == 0 && counts.deletions_pending == 0
    }

    fn wait(&self, what: &str, condition: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn calls(&self) -> usize {
        self.connector.with(|s| s.calls.len())
    }

    async fn stop(mut self) {
        if let Some(engine) = self.engine.take() {
            engine.stop().await;
        }
    }
}

/// A stored golden profile with one email and these traits.
fn record(id: ProfileId, email: &str, traits: Value) -> ProfileRecord {
    ProfileRecord {
        id,
        updated_at_ms: 1,
        doc: common::encoded_profile(id, email, traits.as_object().expect("traits object")).into(),
    }
}

fn email(n: u8) -> String {
    format!("person{n}@example.com")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_pushed_once_and_unchanged_profiles_cost_no_call() {
    let h = Harness::start(config("email_marketing", SyncMode::Upsert));
    for n in 1..=3 {
        h.put(
            n,
            json!({"firstName": format!("P{n}"), "plan": "pro", "address": {"city": "Oslo"}}),
        );
    }
    h.wait("3 contacts", |h| {
        h.connector.with(|s| s.held.len()) == 3 && h.settled()
    });
    // Two per batch at most (the connector's limit).
    assert!(h.connector.with(|s| s.calls.iter().all(|c| c.len() <= 2)));
    assert_eq!(
        h.connector.with(|s| s.held[&email(2)].clone()),
        BTreeMap::from([
            ("CITY".to_owned(), json!("Oslo")),
            ("FNAME".to_owned(), json!("P2")),
            ("PLAN".to_owned(), json!("pro")),
        ])
    );
    let calls = h.calls();

    // The same state again: a feed entry, but no call.
    h.put(
        1,
        json!({"firstName": "P1", "plan": "pro", "address": {"city": "Oslo"}}),
    );
    h.wait("the unchanged profile to settle", |h| {
        h.settled() && h.state.cursor("esp").expect("cursor") >= 4
    });
    assert_eq!(
        h.calls(),
        calls,
        "an unchanged profile must cost no API call"
    );

    // One field changed, one removed: only those are sent (the removed one cleared).
    h.put(2, json!({"firstName": "Pat", "plan": "pro"}));
    h.wait("the update", |h| h.calls() == calls + 1 && h.settled());
    let last = h
        .connector
        .with(|s| s.calls.last().cloned().expect("a call"));
    assert_eq!(
        last,
        vec![(
            email(2),
            BTreeMap::from([
                ("CITY".to_owned(), json!("")),
                ("FNAME".to_owned(), json!("Pat")),
            ])
        )]
    );
    h.stop().await;
}

/// Drift in the ESP (a record edited there, another deleted, a field set that the profile
/// lacks) is invisible to the diff; a resync sends every mapped field of every profile again,
/// clears the mapped fields a profile lacks, and confirms it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_repairs_records_changed_or_deleted_in_the_esp() {
    let h = Harness::start(config("email_marketing", SyncMode::Upsert));
    for n in 1..=2 {
        h.put(
            n,
            json!({"firstName": format!("P{n}"), "plan": "pro", "address": {"city": "Oslo"}}),
        );
    }
    h.put(3, json!({"firstName": "P3", "plan": "pro"}));
    h.wait("3 contacts", |h| {
        h.connector.with(|s| s.held.len()) == 3 && h.settled()
    });
    let synced = h.connector.with(|s| s.held.clone());
    // Someone edits one record in the ESP, deletes another, and sets a city on the third.
    h.connector.with(|s| {
        let held = &mut s.held;
        held.get_mut(&email(1))
            .expect("held")
            .insert("PLAN".to_owned(), json!("free"));
        held.remove(&email(2));
        held.get_mut(&email(3))
            .expect("held")
            .insert("CITY".to_owned(), json!("Rome"));
    });
    let calls = h.calls();

    // A resync of another destination changes nothing here.
    let confirmed = h
        .state
        .request_resync("other-destination", 1)
        .expect("resync");
    assert_eq!(confirmed, 0);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(h.calls(), calls);

    let confirmed = h.state.request_resync("esp", 1).expect("resync");
    assert_eq!(confirmed, 3);
    let mut repaired = synced.clone();
    repaired
        .get_mut(&email(3))
        .expect("synced")
        .insert("CITY".to_owned(), json!(""));
    h.wait("the resync", |h| {
        h.settled() && h.connector.with(|s| s.held == repaired)
    });
    let sent: Vec<_> = h.connector.with(|s| s.calls[calls..].concat());
    assert_eq!(sent.len(), 3, "each profile sent once: {sent:?}");
    for (email, fields) in &sent {
        assert_eq!(fields, &repaired[email], "every mapped field is sent again");
    }
    assert_eq!(
        h.state.resync_requested("esp").expect("read"),
        None,
        "the request was taken"
    );
    // Confirmed again: a later unchanged state costs nothing.
    let calls = h.calls();
    h.put(
        2,
        json!({"firstName": "P2", "plan": "pro", "address": {"city": "Oslo"}}),
    );
    std::thread::sleep(Duration::from_millis(200));
    h.wait("settled", Harness::settled);
    assert_eq!(h.calls(), calls);
    h.stop().await;
}

/// With `resync_interval`, drift in the ESP is repaired without anyone asking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_resync_repairs_drift_on_its_own() {
    let mut config = config("email_marketing", SyncMode::Upsert);
    config.resync_interval = Some(Duration::from_millis(300));
    let h = Harness::start(config);
    h.put(1, json!({"firstName": "P1", "plan": "pro"}));
    h.wait("the contact", |h| {
        h.connector.with(|s| s.held.len()) == 1 && h.settled()
    });
    h.connector.with(|s| s.held.clear());
    // Sent in full: the mapped field the profile lacks is cleared too.
    let repaired = BTreeMap::from([
        ("CITY".to_owned(), json!("")),
        ("FNAME".to_owned(), json!("P1")),
        ("PLAN".to_owned(), json!("pro")),
    ]);
    h.wait("the scheduled resync", |h| {
        h.connector
            .with(|s| s.held.get(&email(1)) == Some(&repaired))
    });
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_and_unapplied_pushes_are_retried_until_confirmed() {
    let h = Harness::start(config("email_marketing", SyncMode::Upsert));
    h.connector.with(|s| {
        s.failures.insert(
            email(1),
            VecDeque::from([
                ItemOutcome::Failed {
                    class: ErrorClass::Transient,
                    detail: "503".to_owned(),
                },
                ItemOutcome::NotApplied {
                    detail: "empty result".to_owned(),
                },
            ]),
        );
    });
    h.put(1, json!({"firstName": "Ann"}));
    h.wait("confirmation", |h| {
        h.connector.with(|s| s.held.contains_key(&email(1))) && h.settled()
    });
    assert_eq!(h.calls(), 3, "two failures, then the push that applied");
    assert!(h.state.dead_letters(None).expect("dlq").is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_records_are_dead_lettered_at_once_and_replayed_on_request() {
    let h = Harness::start(config("email_marketing", SyncMode::Upsert));
    h.connector.with(|s| {
        s.failures.insert(
            email(1),
            VecDeque::from([ItemOutcome::Failed {
                class: ErrorClass::InvalidRecord,
                detail: "merge field PLAN is invalid".to_owned(),
            }]),
        );
    });
    h.put(1, json!({"firstName": "Ann", "plan": "???"}));
    h.put(2, json!({"firstName": "Bob"}));
    h.wait("a dead letter", |h| {
        h.state.dead_letters(Some("esp")).expect("dlq").len() == 1 && h.settled()
    });
    let letters = h.state.dead_letters(Some("esp")).expect("dlq");
    assert_eq!(letters[0].class, "invalid_record");
    assert_eq!(
        letters[0].profile_id,
        ProfileId::from_bytes([1; 16]).to_string()
    );
    assert_eq!(letters[0].attempts, 1, "an invalid record is not retried");
    assert!(
        h.connector.with(|s| s.held.contains_key(&email(2))),
        "the other record went through"
    );

    assert_eq!(h.state.replay("esp", None, 0).expect("replay"), 1);
    h.wait("the replayed record", |h| {
        h.connector.with(|s| s.held.contains_key(&email(1))) && h.settled()
    });
    assert!(h.state.dead_letters(None).expect("dlq").is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_errors_are_dead_lettered_when_the_retry_window_ends() {
    let mut config = config("email_marketing", SyncMode::Upsert);
    config.retry_window = Duration::from_millis(50);
    let h = Harness::start(config);
    h.connector.with(|s| {
        s.failures.insert(
            email(1),
            (0..1000)
                .map(|_| ItemOutcome::Failed {
                    class: ErrorClass::Auth,
                    detail: "401".to_owned(),
                })
                .collect(),
        );
    });
    h.put(1, json!({"firstName": "Ann"}));
    h.wait("a dead letter", |h| {
        h.state.dead_letters(None).expect("dlq").len() == 1
    });
    let letter = &h.state.dead_letters(None).expect("dlq")[0];
    assert_eq!(letter.class, "auth");
    assert!(
        letter.attempts >= 2,
        "retried within the window: {}",
        letter.attempts
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_without_consent_for_the_purpose_are_never_sent() {
    let h = Harness::start(config("personalization", SyncMode::Upsert));
    h.put(1, json!({"firstName": "Ann"}));
    h.put(2, json!({"firstName": "Bob"}));
    h.wait("both settled", |h| {
        h.settled() && h.state.cursor("esp").expect("cursor") >= 2
    });
    assert_eq!(h.calls(), 0, "nobody consented to personalization");

    h.ledger
        .record(&[NewEntry {
            ident_key: h.keyer.ident_key("email", &email(2)),
            purpose: "personalization".to_owned(),
            status: Status::Granted,
            at_ms: 5,
            source: "api:test".to_owned(),
            legal_basis: LegalBasis::Consent,
            proof: Proof::default(),
        }])
        .expect("grant");
    // The grant alone (no profile change) gets the person sent.
    h.wait("the consented profile", |h| {
        h.connector.with(|s| s.held.contains_key(&email(2))) && h.settled()
    });
    assert!(!h.connector.with(|s| s.held.contains_key(&email(1))));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_deletes_the_contact_at_every_destination_that_holds_it() {
    let h = Harness::start(config("email_marketing", SyncMode::Upsert));
    let ann = h.put(1, json!({"firstName": "Ann"}));
    let bob = h.put(2, json!({"firstName": "Bob"}));
    h.wait("both confirmed", |h| {
        h.connector.with(|s| s.held.len()) == 2 && h.settled()
    });
    let queued = h
        .state
        .queue_erasure(
            "er_1",
            &["esp".to_owned(), "other".to_owned()],
            &[ann],
            &[],
            0,
        )
        .expect("queue");
    assert_eq!(
        queued,
        BTreeMap::from([("esp".to_owned(), 1), ("other".to_owned(), 0)])
    );
    h.wait("the deletion", |h| {
        h.settled() && !h.connector.with(|s| s.held.contains_key(&email(1)))
    });
    assert_eq!(
        h.connector.with(|s| s.deletes.clone()),
        vec![vec![format!("esp-{}", email(1))]]
    );
    let status = h.state.erasure_status("er_1").expect("status");
    let by_destination: BTreeMap<_, _> = status
        .iter()
        .map(|d| (d.destination.as_str(), d.status.as_str()))
        .collect();
    assert_eq!(
        by_destination,
        BTreeMap::from([("esp", "deleted"), ("other", "none_held")])
    );
    assert!(
        h.connector.with(|s| s.held.contains_key(&email(2))),
        "only the erased person is deleted"
    );
    let _ = bob;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_mode_deletes_contacts_of_deleted_profiles_and_upsert_mode_keeps_them() {
    for mode in [SyncMode::Mirror, SyncMode::Upsert] {
        let h = Harness::start(config("email_marketing", mode));
        let ann = h.put(1, json!({"firstName": "Ann"}));
        h.wait("confirmed", |h| {
            h.connector.with(|s| s.held.len()) == 1 && h.settled()
        });
        h.store
            .apply(&ChangeBatch {
                at_ms: 2,
                deleted: vec![ann],
                ..ChangeBatch::default()
            })
            .expect("delete");
        h.wait("the deletion to be seen", |h| {
            h.settled() && h.state.cursor("esp").expect("cursor") >= 2
        });
        let held = h.connector.with(|s| s.held.contains_key(&email(1)));
        assert_eq!(held, mode == SyncMode::Upsert, "{mode:?}");
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_mode_removes_the_record_of_a_profile_merged_into_another() {
    for mode in [SyncMode::Mirror, SyncMode::Upsert] {
        let h = Harness::start(config("email_marketing", mode));
        let ann = h.put(1, json!({"firstName": "Ann"}));
        let bob = h.put(2, json!({"firstName": "Bob"}));
        h.wait("both confirmed", |h| {
            h.connector.with(|s| s.held.len()) == 2 && h.settled()
        });
        // Bob turns out to be Ann, who keeps her email: Bob's record is a duplicate.
        h.merge(
            bob,
            ann,
            &email(1),
            json!({"firstName": "Ann", "plan": "pro"}),
        );
        h.wait("the merge to be carried out", |h| {
            h.settled() && h.state.cursor("esp").expect("cursor") >= 4
        });
        let held = h.connector.with(|s| s.held.clone());
        assert_eq!(held[&email(1)]["PLAN"], json!("pro"), "{mode:?}");
        assert_eq!(
            held.contains_key(&email(2)),
            mode == SyncMode::Upsert,
            "{mode:?}: {held:?}"
        );
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_away_record_the_survivor_takes_over_is_never_deleted() {
    let h = Harness::start(config("email_marketing", SyncMode::Mirror));
    let ann = h.put(1, json!({"firstName": "Ann"}));
    let bob = h.put(2, json!({"firstName": "Bob"}));
    h.wait("both confirmed", |h| {
        h.connector.with(|s| s.held.len()) == 2 && h.settled()
    });
    // The survivor takes the merged-away profile's email, and its first push after the
    // merge is not applied: the merged-away record's deletion must wait for the retry,
    // then find the survivor holding that record and not delete it.
    h.connector.with(|s| {
        s.failures.insert(
            email(2),
            VecDeque::from([ItemOutcome::NotApplied {
                detail: "not yet".to_owned(),
            }]),
        )
    });
    h.merge(bob, ann, &email(2), json!({"firstName": "Ann"}));
    h.wait("the merge to be carried out", |h| {
        h.settled()
            && h.state.cursor("esp").expect("cursor") >= 4
            && h.connector
                .with(|s| s.failures.values().all(VecDeque::is_empty))
    });
    let deleted: Vec<String> = h.connector.with(|s| s.deletes.concat());
    assert!(
        !deleted.contains(&format!("esp-{}", email(2))),
        "the survivor's record was deleted: {deleted:?}"
    );
    let held = h.connector.with(|s| s.held.clone());
    assert_eq!(held[&email(2)]["FNAME"], json!("Ann"));
    // Ann's former record went with her email change.
    assert!(!held.contains_key(&email(1)), "{held:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suppression_acts_at_once_and_lifting_it_sends_the_person_again() {
    let h = Harness::start(config("email_marketing", SyncMode::Mirror));
    h.put(1, json!({"firstName": "Ann"}));
    h.wait("confirmed", |h| {
        h.connector.with(|s| s.held.len()) == 1 && h.settled()
    });
    let key = h.keyer.ident_key("email", &email(1));
    let suppression = |scope: SuppressionScope| Suppression {
        ident_key: key.clone(),
        scope,
        reason: "complaint".to_owned(),
        at_ms: 3,
        source: "api:test".to_owned(),
    };
    // Another destination's suppression changes nothing here.
    h.ledger
        .suppress(&suppression(SuppressionScope::Destination(
            "other".to_owned(),
        )))
        .expect("suppress elsewhere");
    h.wait("the suppression feed read", |h| {
        h.state.cursor("esp#suppressions").expect("cursor") >= 1
    });
    let calls = h.calls();
    // A global one removes the contact without any change to the profile.
    h.ledger
        .suppress(&suppression(SuppressionScope::Global))
        .expect("suppress");
    h.wait("the contact removed", |h| {
        h.connector.with(|s| s.held.is_empty()) && h.settled()
    });
    assert_eq!(h.calls(), calls, "a suppressed person was pushed");
    // Lifted: the person is sent again, still without a profile change.
    assert!(
        h.ledger
            .unsuppress(&key, &SuppressionScope::Global)
            .expect("unsuppress")
    );
    h.wait("the contact back", |h| {
        h.connector.with(|s| s.held.contains_key(&email(1))) && h.settled()
    });
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_after_a_push_with_no_known_outcome_deletes_the_contact_by_email() {
    let h = Harness::start(config("email_marketing", SyncMode::Upsert));
    // The ESP applies Ann's pushes but its answers are lost: Tributary never learns an id.
    h.connector.with(|s| s.applied_then_lost.insert(email(1)));
    let ann = h.put(1, json!({"firstName": "Ann"}));
    h.wait("the push applied, unconfirmed", |h| {
        h.connector.with(|s| s.held.contains_key(&email(1)))
    });
    assert!(
        h.state
            .confirmed("esp", &[ann])
            .expect("confirmed")
            .is_empty()
    );
    let sealed = ReversedSealer.seal(&email(1)).expect("seal");
    let queued = h
        .state
        .queue_erasure("er_9", &["esp".to_owned()], &[ann], &[sealed], 1)
        .expect("queue erasure");
    assert_eq!(queued["esp"], 1, "one deletion by email");
    h.wait("the contact deleted by email", |h| {
        h.settled() && !h.connector.with(|s| s.held.contains_key(&email(1)))
    });
    let statuses: Vec<String> = h
        .state
        .erasure_status("er_9")
        .expect("status")
        .into_iter()
        .map(|deletion| deletion.status)
        .collect();
    assert_eq!(statuses, vec!["deleted".to_owned()]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_profiles_with_one_email_never_share_a_batch() {
    let h = Harness::start(config("email_marketing", SyncMode::Upsert));
    // Two profile ids whose first email is the same address, changed together.
    let first = ProfileId::from_bytes([1; 16]);
    let doc = |n: u8, name: &str| {
        record(
            ProfileId::from_bytes([n; 16]),
            &email(1),
            json!({ "firstName": name }),
        )
    };
    h.store
        .apply(&ChangeBatch {
            at_ms: 1,
            upserts: vec![doc(1, "One"), doc(2, "Two")],
            ..ChangeBatch::default()
        })
        .expect("apply");
    h.wait("both settled", |h| {
        h.settled() && h.state.cursor("esp").expect("cursor") >= 2
    });
    let calls = h.connector.with(|s| s.calls.clone());
    for call in &calls {
        let mut emails: Vec<&String> = call.iter().map(|(e, _)| e).collect();
        emails.dedup();
        assert_eq!(
            emails.len(),
            call.len(),
            "one email twice in a batch: {call:?}"
        );
    }
    assert_eq!(
        h.state
            .confirmed("esp", &[first, ProfileId::from_bytes([2; 16])])
            .expect("confirmed")
            .len(),
        2
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_push_and_deletion_is_audited_before_it_is_sent() {
    let h = Harness::start_with(config("email_marketing", SyncMode::Upsert), true);
    let ann = h.put(1, json!({"firstName": "Ann"}));
    h.wait("confirmed", |h| {
        h.connector.with(|s| s.held.len()) == 1 && h.settled()
    });
    h.state
        .queue_erasure("er_2", &["esp".to_owned()], &[ann], &[], 0)
        .expect("queue");
    h.wait("deleted", |h| {
        h.settled() && h.connector.with(|s| s.held.is_empty())
    });
    let dir = h._dir.path().join(trib_audit::AUDIT_DIR);
    let found =
        trib_audit::entries_about(&dir, &std::collections::BTreeSet::from([ann])).expect("entries");
    let seen: Vec<(String, String, String)> = found
        .entries
        .iter()
        .map(|e| {
            (
                e.actor.to_string(),
                e.resource.as_str().to_owned(),
                e.purpose.as_str().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                "sync:esp".to_owned(),
                "sync:upsert".to_owned(),
                "email_marketing".to_owned()
            ),
            (
                "sync:esp".to_owned(),
                "sync:delete".to_owned(),
                "email_marketing".to_owned()
            ),
        ]
    );

    // When the audit log cannot record, nothing is sent.
    h.audit.as_ref().expect("audit").close();
    let calls = h.calls();
    h.put(2, json!({"firstName": "Bob"}));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(h.calls(), calls, "a push without a durable audit entry");
    assert_eq!(
        h.state.counts("esp").expect("counts").pending,
        1,
        "kept pending"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_who_comes_back_after_an_erasure_is_synced_again() {
    let h = Harness::start(config("email_marketing", SyncMode::Upsert));
    let ann = h.put(1, json!({"firstName": "Ann"}));
    h.wait("confirmed", |h| {
        h.connector.with(|s| s.held.len()) == 1 && h.settled()
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    h.state
        .queue_erasure("er_3", &["esp".to_owned()], &[ann], &[], now)
        .expect("queue");
    h.wait("deleted", |h| {
        h.settled() && h.connector.with(|s| s.held.is_empty())
    });
    // The same inputs give the same profile id: the person came back (with consent).
    std::thread::sleep(Duration::from_millis(5));
    h.put(1, json!({"firstName": "Ann"}));
    h.wait("synced again", |h| {
        h.settled() && h.connector.with(|s| s.held.contains_key(&email(1)))
    });
    assert_eq!(h.state.counts("esp").expect("counts").confirmed, 1);
    assert_eq!(
        h.connector.with(|s| s.deletes.len()),
        1,
        "deleted once, not again"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_answers_no_call_is_probed_not_hammered_and_loses_nothing() {
    let mut config = config("email_marketing", SyncMode::Upsert);
    config.retry_base = Duration::from_millis(50);
    let h = Harness::start(config);
    h.connector.with(|s| s.down = true);
    for n in 1..=40 {
        h.put(n, json!({"firstName": format!("P{n}")}));
    }
    // Without the circuit, 40 records retried on their own schedules (50 ms base) make a call
    // every few milliseconds; with it, the first call is a probe (one batch: two records
    // here), and after it fails one probe goes out per opening (50 ms, 100 ms, 200 ms, ...
    // with jitter).
    h.wait("the first probe", |h| h.calls() >= 1);
    std::thread::sleep(Duration::from_millis(1_500));
    let calls = h.connector.with(|s| s.calls.clone());
    assert!(
        calls.len() <= 16,
        "an unreachable ESP is probed, not hammered: {} calls in 1.5 s",
        calls.len()
    );
    assert!(
        calls.len() >= 3,
        "the circuit probes the ESP again: {}",
        calls.len()
    );
    assert!(
        h.state.dead_letters(None).expect("dlq").is_empty(),
        "an outage within the retry window dead-letters nothing"
    );
    assert_eq!(h.state.counts("esp").expect("counts").pending, 40);

    // The ESP answers again: the next probe closes the circuit and everything is delivered.
    h.connector.with(|s| s.down = false);
    h.wait("every record confirmed", |h| {
        h.connector.with(|s| s.held.len() == 40) && h.settled()
    });
    assert!(h.state.dead_letters(None).expect("dlq").is_empty());
    h.stop().await;
}
