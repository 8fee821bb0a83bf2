//! The connector conformance suite: the same cases run against every connector and its
//! simulator (`trib-esp-sim`) over loopback HTTP, plus OpenAPI validation of every request
//! body the Mailchimp and SendGrid connectors sent, and the limiter against a rate limit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trib_consent::ledger::Ledger;
use trib_consent::rules::{LegalBasis, PrivacyRules, Purpose};
use trib_consent::{Gatekeeper, Permitted};
use trib_core::Secret;
use trib_esp_sim::{Faults, SimConfig, SimContact, SimKind, Simulator};
use trib_identity::Keyer;
use trib_sync::connectors::{
    HubspotConfig, HubspotConnector, MailchimpConfig, MailchimpConnector, SendgridConfig,
    SendgridConnector, WebhookConfig, WebhookConnector, mailchimp, values_match,
};
use trib_sync::{CallError, Connector, Contact, DeleteTarget, ErrorClass, ItemOutcome};

/// A simulator, a connector pointed at it, and a gatekeeper to permit contacts.
struct Harness {
    kind: SimKind,
    sim: Simulator,
    connector: Box<dyn Connector>,
    gatekeeper: Gatekeeper,
    _dir: tempfile::TempDir,
}

const TIMEOUT: Duration = Duration::from_secs(3);

async fn harness(kind: SimKind) -> Harness {
    harness_with(kind, |_| {}, |_| {}).await
}

/// `sim` adjusts the simulator's config; `key` the credential the connector uses.
async fn harness_with(
    kind: SimKind,
    sim: impl FnOnce(&mut SimConfig),
    key: impl FnOnce(&mut String),
) -> Harness {
    let mut config = SimConfig::new(kind);
    config.sendgrid_job_delay = Duration::from_millis(20);
    config.timeout_hold = Duration::from_secs(5);
    if kind == SimKind::Sendgrid {
        // A 429 pauses until `X-RateLimit-Reset`, the end of the fixed window: keep it short.
        config.rate_interval = Duration::from_secs(2);
    }
    sim(&mut config);
    let mut credential = match kind {
        SimKind::Webhook => config.webhook_secret.clone(),
        _ => config.api_key.clone(),
    };
    key(&mut credential);
    let sim = Simulator::start(config, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator starts");
    let base = sim.base_url();
    let connector: Box<dyn Connector> = match kind {
        SimKind::Mailchimp => {
            let mut config = MailchimpConfig::new(credential, "list1");
            config.base_url = Some(base);
            config.timeout = TIMEOUT;
            Box::new(MailchimpConnector::new(&config).expect("connector"))
        }
        SimKind::Hubspot => {
            let mut config = HubspotConfig::new(credential);
            config.base_url = Some(base);
            config.timeout = TIMEOUT;
            Box::new(HubspotConnector::new(&config).expect("connector"))
        }
        SimKind::Sendgrid => {
            let mut config = SendgridConfig::new(credential);
            config.base_url = Some(base);
            config.timeout = TIMEOUT;
            config.job_deadline = Duration::from_secs(10);
            Box::new(SendgridConnector::new(&config).expect("connector"))
        }
        SimKind::Webhook => {
            let mut config = WebhookConfig::new(format!("{base}/hooks/tributary"), credential);
            config.timeout = TIMEOUT;
            Box::new(WebhookConnector::new(&config).expect("connector"))
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Arc::new(Ledger::open_in(dir.path()).expect("ledger"));
    let rules = PrivacyRules {
        purposes: vec![Purpose {
            name: "crm_sync".to_owned(),
            legal_basis: LegalBasis::Contract,
            basis_note: Some("customer contract, section 4".to_owned()),
        }],
        ..PrivacyRules::default()
    };
    let gatekeeper = Gatekeeper::new(ledger, Keyer::new(&[7; 32]), Arc::new(rules));
    Harness {
        kind,
        sim,
        connector,
        gatekeeper,
        _dir: dir,
    }
}

impl Harness {
    /// The ESP field names standing for "first name" and "plan".
    fn field(&self, logical: &str) -> &'static str {
        match (self.kind, logical) {
            (SimKind::Mailchimp, "first_name") => "FNAME",
            (SimKind::Mailchimp, _) => "PLAN",
            (SimKind::Hubspot, "first_name") => "firstname",
            (SimKind::Hubspot, _) => "plan",
            (SimKind::Sendgrid, "first_name") => "first_name",
            (SimKind::Sendgrid, _) => "e1_T",
            (SimKind::Webhook, "first_name") => "first_name",
            (SimKind::Webhook, _) => "plan",
        }
    }

    fn contact(&self, name: &str, plan: &str) -> Contact {
        let fields: BTreeMap<String, Value> = [
            (self.field("first_name").to_owned(), json!(name)),
            (self.field("plan").to_owned(), json!(plan)),
        ]
        .into_iter()
        .collect();
        Contact {
            profile_id: format!("profile-{}", name.to_lowercase()),
            email: format!("{}@example.com", name.to_lowercase()),
            desired: fields.clone(),
            fields,
            subscribed: true,
            esp_id: None,
        }
    }

    /// A record the ESP refuses: an invalid email (the webhook receiver refuses an empty
    /// profile id instead).
    fn invalid_contact(&self) -> Contact {
        let mut contact = self.contact("Broken", "gold");
        match self.kind {
            SimKind::Webhook => contact.profile_id = String::new(),
            _ => contact.email = "not an email".to_owned(),
        }
        contact
    }

    fn permit(&self, contacts: Vec<Contact>) -> Vec<Permitted<Contact>> {
        contacts
            .into_iter()
            .map(|contact| {
                self.gatekeeper
                    .permit(&[], "crm_sync", Some(self.kind_name()), contact)
                    .expect("a contract purpose needs no consent")
            })
            .collect()
    }

    fn kind_name(&self) -> &'static str {
        self.connector.kind().as_str()
    }

    async fn upsert(&self, contacts: Vec<Contact>) -> Result<Vec<ItemOutcome>, CallError> {
        self.connector.upsert(self.permit(contacts)).await
    }

    /// The simulator's record of `contact`.
    fn held(&self, contact: &Contact) -> Option<SimContact> {
        let key = match self.kind {
            SimKind::Webhook => contact.profile_id.clone(),
            _ => contact.email.to_lowercase(),
        };
        self.sim.contacts().get(&key).cloned()
    }

    /// Asserts the simulator holds `contact` with every field as sent.
    #[track_caller]
    fn assert_held(&self, contact: &Contact) {
        let held = self
            .held(contact)
            .unwrap_or_else(|| panic!("{:?}: {} not held", self.kind, contact.profile_id));
        for (name, value) in &contact.fields {
            assert!(
                values_match(value, held.fields.get(name)),
                "{:?}: field {name} is {:?}, sent {value}",
                self.kind,
                held.fields.get(name)
            );
        }
    }

    /// The id the ESP confirmed must be the simulator's id for the record.
    #[track_caller]
    fn assert_confirmed(&self, outcome: &ItemOutcome, contact: &Contact) {
        let ItemOutcome::Confirmed { esp_id } = outcome else {
            panic!("{:?}: expected Confirmed, got {outcome:?}", self.kind);
        };
        let held = self.held(contact).expect("held");
        assert_eq!(*esp_id, held.id, "{:?}: esp_id", self.kind);
        if self.kind == SimKind::Mailchimp {
            assert_eq!(*esp_id, mailchimp::subscriber_hash(&contact.email));
        }
    }
}

// ---- the cases, each run for every kind ----------------------------------------------

async fn upsert_new(kind: SimKind) {
    let h = harness(kind).await;
    let ann = h.contact("Ann", "gold");
    let outcomes = h.upsert(vec![ann.clone()]).await.expect("upsert");
    assert_eq!(outcomes.len(), 1);
    h.assert_confirmed(&outcomes[0], &ann);
    h.assert_held(&ann);
}

async fn update_changed_field(kind: SimKind) {
    let h = harness(kind).await;
    let ann = h.contact("Ann", "gold");
    h.upsert(vec![ann.clone()]).await.expect("first upsert");
    // Only the changed field, as the engine sends it to partial-update destinations.
    let mut changed = h.contact("Ann", "platinum");
    if h.connector.limits().partial_updates {
        changed.fields.remove(h.field("first_name"));
    }
    let outcomes = h.upsert(vec![changed.clone()]).await.expect("update");
    h.assert_confirmed(&outcomes[0], &ann);
    h.assert_held(&h.contact("Ann", "platinum"));
}

async fn upsert_unchanged(kind: SimKind) {
    let h = harness(kind).await;
    let ann = h.contact("Ann", "gold");
    let first = h.upsert(vec![ann.clone()]).await.expect("first");
    let second = h.upsert(vec![ann.clone()]).await.expect("again");
    assert_eq!(first, second, "{kind:?}: same record, same outcome and id");
    h.assert_held(&ann);
    assert_eq!(h.sim.contacts().len(), 1, "{kind:?}: no duplicate");
}

async fn invalid_record(kind: SimKind) {
    let h = harness(kind).await;
    let ann = h.contact("Ann", "gold");
    let outcomes = h
        .upsert(vec![ann.clone(), h.invalid_contact()])
        .await
        .expect("upsert");
    h.assert_confirmed(&outcomes[0], &ann);
    assert!(
        matches!(
            outcomes[1],
            ItemOutcome::Failed {
                class: ErrorClass::InvalidRecord,
                ..
            }
        ),
        "{kind:?}: {:?}",
        outcomes[1]
    );
    for outcome in &outcomes {
        if let ItemOutcome::Failed { detail, .. } = outcome {
            assert!(!detail.contains('@'), "no email in details: {detail}");
        }
    }
}

async fn delete(kind: SimKind) {
    let h = harness(kind).await;
    let ann = h.contact("Ann", "gold");
    let bob = h.contact("Bob", "gold");
    let outcomes = h
        .upsert(vec![ann.clone(), bob.clone()])
        .await
        .expect("upsert");
    let ItemOutcome::Confirmed { esp_id } = &outcomes[0] else {
        panic!("{outcomes:?}");
    };
    let target = DeleteTarget {
        profile_id: ann.profile_id.clone(),
        esp_id: esp_id.clone(),
        email: None,
        permanent: true,
    };
    let deleted = h.connector.delete(vec![target]).await.expect("delete");
    assert_eq!(
        deleted,
        vec![ItemOutcome::Confirmed {
            esp_id: esp_id.clone()
        }]
    );
    assert!(h.held(&ann).is_none(), "{kind:?}: deleted");
    h.assert_held(&bob);
}

async fn delete_absent(kind: SimKind) {
    let h = harness(kind).await;
    let esp_id = match kind {
        SimKind::Mailchimp => mailchimp::subscriber_hash("ghost@example.com"),
        SimKind::Hubspot => "999999".to_owned(),
        SimKind::Sendgrid => "0b0e7a4e-2f5c-4a59-9d0e-4c1c2b1f0a11".to_owned(),
        SimKind::Webhook => "profile-ghost".to_owned(),
    };
    let target = DeleteTarget {
        profile_id: "profile-ghost".to_owned(),
        esp_id: esp_id.clone(),
        email: None,
        permanent: true,
    };
    let outcomes = h.connector.delete(vec![target]).await.expect("delete");
    assert_eq!(outcomes, vec![ItemOutcome::Confirmed { esp_id }]);
}

/// An erasure of a person whose push had no known outcome: the record is found by email (and
/// an email the ESP does not hold is already gone), in the order given.
async fn delete_by_email(kind: SimKind) {
    let h = harness(kind).await;
    let ann = h.contact("Ann", "gold");
    let bob = h.contact("Bob", "gold");
    h.upsert(vec![ann.clone(), bob.clone()])
        .await
        .expect("upsert");
    let by_email = |contact: &Contact| DeleteTarget {
        profile_id: contact.profile_id.clone(),
        esp_id: String::new(),
        email: Some(Secret::new(contact.email.to_uppercase())),
        permanent: true,
    };
    let ghost = h.contact("Ghost", "gold");
    let outcomes = h
        .connector
        .delete(vec![by_email(&ghost), by_email(&ann)])
        .await
        .expect("delete");
    assert_eq!(outcomes.len(), 2, "{kind:?}");
    assert!(
        outcomes
            .iter()
            .all(|outcome| matches!(outcome, ItemOutcome::Confirmed { .. })),
        "{kind:?}: {outcomes:?}"
    );
    assert!(h.held(&ann).is_none(), "{kind:?}: deleted");
    h.assert_held(&bob);
}

async fn throttled(kind: SimKind) {
    let h = harness(kind).await;
    h.sim.set_faults(Faults {
        throttle: 1.0,
        ..Faults::default()
    });
    let error = h
        .upsert(vec![h.contact("Ann", "gold")])
        .await
        .expect_err("every call throttled");
    assert_eq!(error.class, ErrorClass::Throttled, "{kind:?}: {error}");
    assert_eq!(error.status, Some(429));
    // Handled: once the ESP stops refusing, the next push (after the limiter's pause) lands.
    h.sim.set_faults(Faults::default());
    let ann = h.contact("Ann", "gold");
    let outcomes = h.upsert(vec![ann.clone()]).await.expect("after the pause");
    h.assert_confirmed(&outcomes[0], &ann);
}

async fn server_error(kind: SimKind) {
    let h = harness(kind).await;
    h.sim.set_faults(Faults {
        server_error: 1.0,
        ..Faults::default()
    });
    let error = h
        .upsert(vec![h.contact("Ann", "gold")])
        .await
        .expect_err("5xx");
    assert_eq!(error.class, ErrorClass::Transient, "{kind:?}: {error}");
    assert!(matches!(error.status, Some(500 | 503)), "{error:?}");
}

async fn connection_reset(kind: SimKind) {
    let h = harness(kind).await;
    h.sim.set_faults(Faults {
        reset: 1.0,
        ..Faults::default()
    });
    let error = h
        .upsert(vec![h.contact("Ann", "gold")])
        .await
        .expect_err("reset");
    assert_eq!(error.class, ErrorClass::Transient, "{kind:?}: {error}");
    assert_eq!(error.status, None);
}

async fn not_applied(kind: SimKind) {
    let h = harness(kind).await;
    h.sim.set_faults(Faults {
        not_applied: 1.0,
        ..Faults::default()
    });
    let outcomes = h
        .upsert(vec![h.contact("Ann", "gold")])
        .await
        .expect("accepted");
    assert!(
        matches!(outcomes[0], ItemOutcome::NotApplied { .. }),
        "{kind:?}: {outcomes:?}"
    );
    assert!(h.sim.contacts().is_empty());
}

async fn auth_error(kind: SimKind) {
    let h = harness_with(kind, |_| {}, |key| key.push_str("-wrong")).await;
    let error = h
        .upsert(vec![h.contact("Ann", "gold")])
        .await
        .expect_err("refused");
    assert_eq!(error.class, ErrorClass::Auth, "{kind:?}: {error}");
    assert!(matches!(error.status, Some(401 | 403)));
}

/// Partial results: some records fail transiently, the others are confirmed, and the
/// outcomes agree with the simulator's state.
async fn partial(kind: SimKind) {
    let h = harness(kind).await;
    h.sim.set_faults(Faults {
        partial: 1.0,
        seed: 7,
        ..Faults::default()
    });
    let contacts: Vec<Contact> = ["Ann", "Bob", "Cat", "Dan", "Eve", "Fay", "Gus", "Hal"]
        .iter()
        .map(|name| h.contact(name, "gold"))
        .collect();
    let outcomes = h.upsert(contacts.clone()).await.expect("multi-status");
    let mut confirmed = 0;
    for (contact, outcome) in contacts.iter().zip(&outcomes) {
        match outcome {
            ItemOutcome::Confirmed { .. } => {
                confirmed += 1;
                h.assert_confirmed(outcome, contact);
            }
            ItemOutcome::Failed {
                class: ErrorClass::Transient,
                ..
            }
            | ItemOutcome::NotApplied { .. } => {
                assert!(h.held(contact).is_none(), "{kind:?}: failed but held")
            }
            other => panic!("{kind:?}: {other:?}"),
        }
    }
    assert!(
        confirmed < contacts.len(),
        "{kind:?}: the fault hit someone"
    );
}

macro_rules! conformance {
    ($($case:ident: [$($kind:ident),*];)*) => {
        $(
            mod $case {
                $(
                    #[allow(non_snake_case)]
                    #[tokio::test]
                    async fn $kind() {
                        super::$case(trib_esp_sim::SimKind::$kind).await;
                    }
                )*
            }
        )*
    };
}

conformance! {
    upsert_new: [Mailchimp, Hubspot, Sendgrid, Webhook];
    update_changed_field: [Mailchimp, Hubspot, Sendgrid, Webhook];
    upsert_unchanged: [Mailchimp, Hubspot, Sendgrid, Webhook];
    invalid_record: [Mailchimp, Hubspot, Sendgrid, Webhook];
    delete: [Mailchimp, Hubspot, Sendgrid, Webhook];
    delete_absent: [Mailchimp, Hubspot, Sendgrid, Webhook];
    delete_by_email: [Mailchimp, Hubspot, Sendgrid, Webhook];
    throttled: [Mailchimp, Hubspot, Sendgrid, Webhook];
    server_error: [Mailchimp, Hubspot, Sendgrid, Webhook];
    connection_reset: [Mailchimp, Hubspot, Sendgrid, Webhook];
    // The webhook's contract is "a 2xx confirms": a receiver that lies cannot be detected.
    not_applied: [Mailchimp, Hubspot, Sendgrid];
    auth_error: [Mailchimp, Hubspot, Sendgrid, Webhook];
    // Mailchimp's partial fault hits `/batches` operations (see the batch test below).
    partial: [Hubspot, Sendgrid];
}

// ---- kind-specific cases ---------------------------------------------------------------

/// Large Mailchimp batches go through `POST /batches`; results are read from the archive.
#[tokio::test]
async fn mailchimp_large_batches_use_the_batch_endpoint() {
    let h = harness(SimKind::Mailchimp).await;
    let base = h.sim.base_url();
    let mut config = MailchimpConfig::new("test-key", "list1");
    config.base_url = Some(base);
    config.batch_threshold = 2;
    let connector = MailchimpConnector::new(&config).expect("connector");
    let mut contacts: Vec<Contact> = ["Ann", "Bob", "Cat", "Dan"]
        .iter()
        .map(|name| h.contact(name, "gold"))
        .collect();
    contacts.push(h.invalid_contact());
    let outcomes = connector
        .upsert(h.permit(contacts.clone()))
        .await
        .expect("batch");
    for (contact, outcome) in contacts.iter().zip(&outcomes).take(4) {
        h.assert_confirmed(outcome, contact);
    }
    assert!(matches!(
        outcomes[4],
        ItemOutcome::Failed {
            class: ErrorClass::InvalidRecord,
            ..
        }
    ));
    let requests = h.sim.requests();
    assert!(
        requests
            .iter()
            .any(|request| request.method == "POST" && request.path == "/3.0/batches")
    );
    assert!(
        !requests.iter().any(|request| request.method == "PUT"),
        "no single PUTs"
    );

    // The partial fault fails some operations with 500: Failed(Transient), not held.
    h.sim.set_faults(Faults {
        partial: 1.0,
        seed: 3,
        ..Faults::default()
    });
    let more: Vec<Contact> = ["Eve", "Fay", "Gus", "Hal"]
        .iter()
        .map(|name| h.contact(name, "gold"))
        .collect();
    let outcomes = connector
        .upsert(h.permit(more.clone()))
        .await
        .expect("batch");
    let mut failed = 0;
    for (contact, outcome) in more.iter().zip(&outcomes) {
        match outcome {
            ItemOutcome::Confirmed { .. } => h.assert_held(contact),
            ItemOutcome::Failed {
                class: ErrorClass::Transient,
                ..
            } => {
                failed += 1;
                assert!(h.held(contact).is_none());
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(failed > 0);
}

/// A `/batches` job still running at the connector's deadline may apply later: until it
/// has finished, the connector writes nothing (a newer write would be overwritten by it).
#[tokio::test]
async fn mailchimp_writes_nothing_while_a_batch_abandoned_at_its_deadline_runs() {
    let h = harness_with(
        SimKind::Mailchimp,
        |config| config.mailchimp_batch_delay = Duration::from_millis(1_500),
        |_| {},
    )
    .await;
    let mut config = MailchimpConfig::new("test-key", "list1");
    config.base_url = Some(h.sim.base_url());
    config.batch_threshold = 2;
    config.batch_deadline = Duration::from_millis(200);
    let connector = MailchimpConnector::new(&config).expect("connector");
    let names = ["Ann", "Bob", "Cat"];
    let old: Vec<Contact> = names.iter().map(|name| h.contact(name, "gold")).collect();
    let error = connector
        .upsert(h.permit(old))
        .await
        .expect_err("the batch is still pending at the deadline");
    assert_eq!(error.class, ErrorClass::Transient, "{error}");

    // A newer value for one of them, as a single PUT: not sent while the batch runs.
    let newer = vec![h.contact("Ann", "platinum")];
    let writes = |h: &Harness| {
        h.sim
            .requests()
            .iter()
            .filter(|request| request.method == "PUT" || request.path == "/3.0/batches")
            .count()
    };
    let before = writes(&h);
    let error = connector
        .upsert(h.permit(newer.clone()))
        .await
        .expect_err("held back by the running batch");
    assert_eq!(error.class, ErrorClass::Transient, "{error}");
    assert_eq!(
        writes(&h),
        before,
        "nothing written while the old batch runs"
    );
    // A mirror-mode archive waits too (the batch could re-create the member); an erasure
    // does not (delete-permanent cannot be undone).
    let archive = DeleteTarget {
        profile_id: "profile-bob".to_owned(),
        esp_id: mailchimp::subscriber_hash("bob@example.com"),
        email: None,
        permanent: false,
    };
    let error = connector
        .delete(vec![archive])
        .await
        .expect_err("held back by the running batch");
    assert_eq!(error.class, ErrorClass::Transient, "{error}");
    let erasure = DeleteTarget {
        profile_id: "profile-dan".to_owned(),
        esp_id: mailchimp::subscriber_hash("dan@example.com"),
        email: None,
        permanent: true,
    };
    let outcomes = connector
        .delete(vec![erasure])
        .await
        .expect("not held back");
    assert!(
        matches!(outcomes[0], ItemOutcome::Confirmed { .. }),
        "{outcomes:?}"
    );

    // Once the batch has applied, the newer value goes through and stays.
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.held(&h.contact("Cat", "gold")).is_none() {
        assert!(Instant::now() < deadline, "the old batch never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let outcomes = until_ok(deadline, "never written", || {
        connector.upsert(h.permit(newer.clone()))
    })
    .await;
    h.assert_confirmed(&outcomes[0], &newer[0]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.assert_held(&newer[0]);
}

/// Calls `call` until it succeeds (each failure must be transient: held back), at most until
/// `deadline`.
async fn until_ok<T, F>(deadline: Instant, what: &str, mut call: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Result<T, CallError>>,
{
    loop {
        match call().await {
            Ok(value) => return value,
            Err(error) => {
                assert_eq!(error.class, ErrorClass::Transient, "{error}");
                assert!(Instant::now() < deadline, "{what}: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// After a restart the abandoned batch's id is gone from memory: the new connector finds it
/// running through `GET /batches` and still writes nothing until it has finished.
#[tokio::test]
async fn mailchimp_after_a_restart_still_waits_for_a_batch_the_previous_process_abandoned() {
    let h = harness_with(
        SimKind::Mailchimp,
        |config| config.mailchimp_batch_delay = Duration::from_millis(1_500),
        |_| {},
    )
    .await;
    let mut config = MailchimpConfig::new("test-key", "list1");
    config.base_url = Some(h.sim.base_url());
    config.batch_threshold = 2;
    config.batch_deadline = Duration::from_millis(200);
    let old: Vec<Contact> = ["Ann", "Bob", "Cat"]
        .iter()
        .map(|name| h.contact(name, "gold"))
        .collect();
    let error = MailchimpConnector::new(&config)
        .expect("connector")
        .upsert(h.permit(old))
        .await
        .expect_err("the batch is still pending at the deadline");
    assert_eq!(error.class, ErrorClass::Transient, "{error}");

    // The process restarts: a new connector, nothing in memory.
    let restarted = MailchimpConnector::new(&config).expect("connector");
    let newer = vec![h.contact("Ann", "platinum")];
    let puts = |h: &Harness| {
        h.sim
            .requests()
            .iter()
            .filter(|request| request.method == "PUT")
            .count()
    };
    let error = restarted
        .upsert(h.permit(newer.clone()))
        .await
        .expect_err("held back by the batch of the previous process");
    assert_eq!(error.class, ErrorClass::Transient, "{error}");
    assert_eq!(puts(&h), 0, "nothing written while the old batch runs");

    let deadline = Instant::now() + Duration::from_secs(10);
    let outcomes = until_ok(deadline, "never written", || {
        restarted.upsert(h.permit(newer.clone()))
    })
    .await;
    assert!(
        h.held(&h.contact("Cat", "gold")).is_some(),
        "written only after the old batch applied"
    );
    h.assert_confirmed(&outcomes[0], &newer[0]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.assert_held(&newer[0]);
}

/// A SendGrid import job still running at its deadline: nothing is written or deleted (an
/// erasure included) until it has finished, so it cannot overwrite a newer value or
/// re-create a deleted contact.
#[tokio::test]
async fn sendgrid_writes_and_deletes_nothing_while_a_job_abandoned_at_its_deadline_runs() {
    let h = harness_with(
        SimKind::Sendgrid,
        |config| config.sendgrid_job_delay = Duration::from_millis(1_500),
        |_| {},
    )
    .await;
    let mut config = SendgridConfig::new("test-key");
    config.base_url = Some(h.sim.base_url());
    config.job_deadline = Duration::from_millis(200);
    let connector = SendgridConnector::new(&config).expect("connector");
    let old = vec![h.contact("Ann", "gold"), h.contact("Bob", "gold")];
    let error = connector
        .upsert(h.permit(old))
        .await
        .expect_err("the job is still running at the deadline");
    assert_eq!(error.class, ErrorClass::Transient, "{error}");

    let writes = |h: &Harness| {
        h.sim
            .requests()
            .iter()
            .filter(|request| request.method == "PUT" || request.method == "DELETE")
            .count()
    };
    let before = writes(&h);
    let newer = vec![h.contact("Ann", "platinum")];
    let error = connector
        .upsert(h.permit(newer.clone()))
        .await
        .expect_err("held back by the running job");
    assert_eq!(error.class, ErrorClass::Transient, "{error}");
    let erasure = DeleteTarget {
        profile_id: "profile-bob".to_owned(),
        esp_id: String::new(),
        email: Some(trib_core::Secret::new("bob@example.com".to_owned())),
        permanent: true,
    };
    let error = connector
        .delete(vec![erasure.clone()])
        .await
        .expect_err("held back by the running job");
    assert_eq!(error.class, ErrorClass::Transient, "{error}");
    assert_eq!(writes(&h), before, "nothing written while the old job runs");

    // Once the old job has applied, the newer value is sent (its own job outlives the short
    // deadline too, so it is not confirmed here) and then held.
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.held(&h.contact("Ann", "gold")).is_none() {
        assert!(Instant::now() < deadline, "the old job never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = connector.upsert(h.permit(newer.clone())).await;
    assert_eq!(
        writes(&h),
        before + 1,
        "the newer value is sent once the old job is done"
    );
    // The erasure waits for that job in turn, then removes Bob.
    let outcomes = until_ok(deadline, "never deleted", || {
        connector.delete(vec![erasure.clone()])
    })
    .await;
    assert!(
        matches!(outcomes[0], ItemOutcome::Confirmed { .. }),
        "{outcomes:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.assert_held(&newer[0]);
    assert!(
        h.held(&h.contact("Bob", "gold")).is_none(),
        "Bob stays erased"
    );
}

/// A confirmation search that is refused fails only the contacts it was for: the others of
/// the same batch stay confirmed (a 30,000-contact batch is not sent again for one 429).
#[tokio::test]
async fn sendgrid_a_refused_confirmation_search_fails_only_its_contacts() {
    // Two calls per endpoint per window: the four searches of 400 contacts go out at once
    // (the endpoint's limit is not known yet), so two of them are refused with 429.
    let h = harness_with(
        SimKind::Sendgrid,
        |config| {
            config.rate_max = Some(2);
            config.sendgrid_job_delay = Duration::from_millis(0);
        },
        |_| {},
    )
    .await;
    let contacts: Vec<Contact> = (0..400)
        .map(|n| h.contact(&format!("P{n:03}"), "gold"))
        .collect();
    let outcomes = h
        .upsert(contacts.clone())
        .await
        .expect("not a whole failure");
    let confirmed = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, ItemOutcome::Confirmed { .. }))
        .count();
    let throttled = outcomes
        .iter()
        .filter(|outcome| {
            matches!(
                outcome,
                ItemOutcome::Failed {
                    class: ErrorClass::Throttled,
                    ..
                }
            )
        })
        .count();
    assert_eq!(confirmed + throttled, 400, "{outcomes:?}");
    assert!(
        confirmed >= 100 && throttled >= 100,
        "some searches answered, some refused: {confirmed} confirmed, {throttled} throttled"
    );
    // Searches answer in chunks of 100, in order: each chunk is all confirmed or all failed.
    for chunk in outcomes.chunks(100) {
        let first = matches!(chunk[0], ItemOutcome::Confirmed { .. });
        assert!(
            chunk
                .iter()
                .all(|outcome| matches!(outcome, ItemOutcome::Confirmed { .. }) == first)
        );
    }
    for (outcome, contact) in outcomes.iter().zip(&contacts) {
        if matches!(outcome, ItemOutcome::Confirmed { .. }) {
            h.assert_confirmed(outcome, contact);
        }
    }
}

/// Mailchimp's 10-connection cap: 40 concurrent PUTs never exceed it (no 429).
#[tokio::test]
async fn mailchimp_stays_within_ten_connections() {
    let h = harness_with(
        SimKind::Mailchimp,
        |config| config.response_delay = Duration::from_millis(20),
        |_| {},
    )
    .await;
    let contacts: Vec<Contact> = (0..40)
        .map(|index| h.contact(&format!("User{index}"), "gold"))
        .collect();
    let outcomes = h.upsert(contacts).await.expect("upsert");
    assert!(
        outcomes
            .iter()
            .all(|outcome| matches!(outcome, ItemOutcome::Confirmed { .. }))
    );
    let stats = h.sim.stats();
    assert_eq!(stats.limit_refusals, 0, "{stats:?}");
    assert!(stats.max_concurrent <= 10, "{stats:?}");
    assert!(
        stats.max_concurrent >= 5,
        "calls ran concurrently: {stats:?}"
    );
}

/// Against HubSpot's rolling-window limit (here 20 per second, advertised in headers), the
/// limiter learns the limit, causes no 429, and reaches ≥90% of the allowed rate.
#[tokio::test]
async fn hubspot_rate_limit_is_reached_without_429s() {
    let h = harness_with(
        SimKind::Hubspot,
        |config| {
            config.rate_max = Some(20);
            config.rate_interval = Duration::from_secs(1);
        },
        |_| {},
    )
    .await;
    let calls = 80;
    let started = Instant::now();
    let mut tasks = Vec::new();
    let connector: Arc<dyn Connector> = Arc::from(h.connector);
    for index in 0..calls {
        let connector = connector.clone();
        let batch = {
            let contact = Contact {
                profile_id: format!("p{index}"),
                email: format!("user{index}@example.com"),
                fields: BTreeMap::from([("plan".to_owned(), json!("gold"))]),
                desired: BTreeMap::new(),
                subscribed: true,
                esp_id: None,
            };
            vec![
                h.gatekeeper
                    .permit(&[], "crm_sync", Some("hubspot"), contact)
                    .expect("permit"),
            ]
        };
        tasks.push(tokio::spawn(async move { connector.upsert(batch).await }));
    }
    for task in tasks {
        let outcomes = task.await.expect("task").expect("upsert");
        assert!(matches!(outcomes[0], ItemOutcome::Confirmed { .. }));
    }
    let elapsed = started.elapsed();
    let stats = h.sim.stats();
    assert_eq!(stats.limit_refusals, 0, "no self-caused 429: {stats:?}");
    // The first 20 go at once; each further 20 needs one more interval.
    let ideal = Duration::from_secs(calls / 20 - 1);
    let efficiency = ideal.as_secs_f64() / elapsed.as_secs_f64();
    println!(
        "hubspot: {calls} calls in {elapsed:?}, {:.1}% of the allowed rate",
        efficiency * 100.0
    );
    assert!(efficiency >= 0.9, "{elapsed:?} for {calls} calls");
}

// ---- request bodies against the OpenAPI documents --------------------------------------

/// The vendor OpenAPI documents, as copied into the repository with the simulators.
fn spec(relative: &str) -> trib_esp_sim::spec::OpenApi {
    let path = format!(
        "{}/../trib-esp-sim/tests/specs/{relative}",
        env!("CARGO_MANIFEST_DIR")
    );
    trib_esp_sim::spec::OpenApi::load(&path).expect("spec loads")
}

/// Runs a representative workload and returns every recorded request with a JSON body.
async fn workload(kind: SimKind, batch_threshold: usize) -> Vec<trib_esp_sim::RecordedRequest> {
    let h = harness(kind).await;
    let contacts: Vec<Contact> = ["Ann", "Bob", "Cat"]
        .iter()
        .map(|name| h.contact(name, "gold"))
        .collect();
    let outcomes = if kind == SimKind::Mailchimp {
        let mut config = MailchimpConfig::new("test-key", "list1");
        config.base_url = Some(h.sim.base_url());
        config.batch_threshold = batch_threshold;
        let connector = MailchimpConnector::new(&config).expect("connector");
        let mut unsubscribed = h.contact("Dan", "silver");
        unsubscribed.subscribed = false;
        let mut all = contacts.clone();
        all.push(unsubscribed);
        connector.upsert(h.permit(all)).await.expect("upsert")
    } else {
        let mut with_number = contacts.clone();
        with_number[0].fields.insert("w2_N".to_owned(), json!(42));
        with_number[1]
            .fields
            .insert("postal_code".to_owned(), json!(12345));
        h.upsert(with_number).await.expect("upsert")
    };
    let targets: Vec<DeleteTarget> = contacts
        .iter()
        .zip(&outcomes)
        .filter_map(|(contact, outcome)| match outcome {
            ItemOutcome::Confirmed { esp_id } => Some(DeleteTarget {
                profile_id: contact.profile_id.clone(),
                esp_id: esp_id.clone(),
                email: None,
                permanent: true,
            }),
            _ => None,
        })
        .collect();
    assert_eq!(targets.len(), 3, "{outcomes:?}");
    h.connector.delete(targets).await.expect("delete");
    h.sim
        .requests()
        .into_iter()
        .filter(|request| request.body.is_some())
        .collect()
}

#[tokio::test]
async fn mailchimp_request_bodies_follow_the_openapi_document() {
    let document = spec("mailchimp-marketing/openapi.merge-fields-patched.yaml");
    let mut checked = 0;
    for threshold in [100, 0] {
        for request in workload(SimKind::Mailchimp, threshold).await {
            let body = request.body.as_ref().expect("filtered");
            document
                .validate_request(&request.method, &request.path, body)
                .unwrap_or_else(|error| panic!("{} {}: {error}", request.method, request.path));
            checked += 1;
            // The operations inside a batch carry member PUT bodies as strings.
            for operation in body
                .get("operations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let method = operation["method"].as_str().expect("method");
                let path = operation["path"].as_str().expect("path");
                let inner: Value =
                    serde_json::from_str(operation["body"].as_str().expect("body")).expect("json");
                document
                    .validate_request(method, path, &inner)
                    .unwrap_or_else(|error| panic!("batch op {method} {path}: {error}"));
                checked += 1;
            }
        }
    }
    assert!(checked >= 8, "{checked} bodies checked");
}

#[tokio::test]
async fn sendgrid_request_bodies_follow_the_openapi_document() {
    let document = spec("sendgrid-marketing-contacts/tsg_mc_contacts_v3.yaml");
    let requests = workload(SimKind::Sendgrid, 0).await;
    let mut paths: Vec<String> = Vec::new();
    for request in &requests {
        let body = request.body.as_ref().expect("filtered");
        document
            .validate_request(&request.method, &request.path, body)
            .unwrap_or_else(|error| panic!("{} {}: {error}", request.method, request.path));
        paths.push(format!("{} {}", request.method, request.path));
    }
    assert!(
        paths.contains(&"PUT /v3/marketing/contacts".to_owned()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"POST /v3/marketing/contacts/search/emails".to_owned()),
        "{paths:?}"
    );
}
