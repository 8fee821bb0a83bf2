//! The end-to-end harness shared by `tests/end_to_end.rs` and `benches/sync.rs`: a profile
//! store, a `sync.db` in a temporary directory, a gatekeeper, the ESP simulators
//! (`trib-esp-sim`) on loopback and real connectors pointed at them, and the desired state
//! each simulator must end up holding.
//!
//! Every destination maps the same two profile traits, `firstName` and `plan`, to the ESP's
//! own field names (plus one field each ESP refuses for some values, to make invalid
//! records), so one model of the profiles gives every simulator's expected contacts.

// Each user of the module (the test binary, the bench) uses a different part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use trib_config::{DestinationConfig, DestinationType, FieldSource, SyncMode};
use trib_consent::{Gatekeeper, Ledger, LegalBasis, PrivacyRules, Purpose};
use trib_core::Secret;
use trib_esp_sim::{Faults, SimConfig, SimContact, SimKind, Simulator};
use trib_identity::Keyer;
use trib_identity::profile::{GoldenTrait, IdentifierEntry, Profile};
use trib_store::{ChangeBatch, MemoryStore, ProfileId, ProfileRecord, ProfileStore};
use trib_sync::connectors::{
    HubspotConfig, HubspotConnector, MailchimpConfig, MailchimpConnector, SendgridConfig,
    SendgridConnector, WebhookConfig, WebhookConnector,
};
use trib_sync::map::Digester;
use trib_sync::{Connector, Destination, EngineOptions, SyncEngine, SyncState};

/// Every simulator kind, in a fixed order.
pub(crate) const KINDS: [SimKind; 4] = [
    SimKind::Mailchimp,
    SimKind::Hubspot,
    SimKind::Sendgrid,
    SimKind::Webhook,
];

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The profile id of person `n`.
pub(crate) fn profile_id(n: u32) -> ProfileId {
    let mut bytes = [0xA5; 16];
    bytes[12..].copy_from_slice(&n.to_be_bytes());
    ProfileId::from_bytes(bytes)
}

/// A valid email for person `n`.
pub(crate) fn email(n: u32) -> String {
    format!("person{n}@example.com")
}

/// An email every ESP refuses (its domain has no dot).
pub(crate) fn invalid_email(n: u32) -> String {
    format!("broken{n}@invalid")
}

/// One person as the test wants them: the key email and the traits.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Person {
    pub(crate) email: String,
    pub(crate) traits: BTreeMap<String, Value>,
}

impl Person {
    /// A valid person with a first name and a plan.
    pub(crate) fn new(n: u32, plan: &str) -> Self {
        Self {
            email: email(n),
            traits: BTreeMap::from([
                ("firstName".to_owned(), json!(format!("Person{n}"))),
                ("plan".to_owned(), json!(plan)),
            ]),
        }
    }
}

/// The store, `sync.db` and the gatekeeper an engine runs against.
pub(crate) struct Env {
    pub(crate) store: Arc<MemoryStore>,
    pub(crate) state: Arc<SyncState>,
    pub(crate) gate: Gatekeeper,
    pub(crate) digester: Digester,
    pub(crate) dir: tempfile::TempDir,
}

impl Env {
    /// A fresh store and `<tempdir>/sync.db`; `email_marketing` on legitimate interest (no
    /// consent needed), so every profile is permitted.
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Arc::new(Ledger::open_in(dir.path()).expect("ledger"));
        let rules = PrivacyRules {
            purposes: vec![Purpose {
                name: "email_marketing".to_owned(),
                legal_basis: LegalBasis::LegitimateInterest,
                basis_note: Some("end-to-end test".to_owned()),
            }],
            ..PrivacyRules::default()
        };
        let gate = Gatekeeper::new(ledger, Keyer::new(&[7; 32]), Arc::new(rules));
        Self {
            store: Arc::new(MemoryStore::new()),
            state: Arc::new(SyncState::open(dir.path()).expect("sync.db")),
            gate,
            digester: Digester::new(&[9; 32]),
            dir,
        }
    }

    /// Starts an engine over `destinations`.
    pub(crate) fn start(&self, destinations: Vec<Destination>) -> SyncEngine {
        self.start_with(
            destinations,
            EngineOptions {
                poll_interval: Duration::from_millis(20),
                ..EngineOptions::default()
            },
        )
    }

    /// Starts an engine over `destinations` with `options`.
    pub(crate) fn start_with(
        &self,
        destinations: Vec<Destination>,
        options: EngineOptions,
    ) -> SyncEngine {
        SyncEngine::start(
            destinations,
            self.store.clone(),
            self.state.clone(),
            self.gate.clone(),
            self.digester.clone(),
            options,
        )
    }

    /// Writes people's profiles to the store in one batch, as the identity consumer does.
    pub(crate) fn put_many(&self, people: &[(u32, &Person)]) {
        let at_ms = now_ms();
        let upserts = people
            .iter()
            .map(|(n, person)| ProfileRecord {
                id: profile_id(*n),
                updated_at_ms: at_ms,
                doc: document(*n, person).into(),
            })
            .collect();
        self.store
            .apply(&ChangeBatch {
                at_ms,
                upserts,
                ..ChangeBatch::default()
            })
            .expect("store apply");
    }

    /// Writes one person's profile.
    pub(crate) fn put(&self, n: u32, person: &Person) {
        self.put_many(&[(n, person)]);
    }

    /// The last seq of the store's change feed.
    pub(crate) fn last_seq(&self) -> u64 {
        self.store
            .changes(None, 0, usize::MAX)
            .expect("changes")
            .last()
            .map_or(0, |change| change.seq)
    }

    /// Whether `destination` has read the whole feed and has nothing pending or queued.
    pub(crate) fn settled(&self, destination: &str) -> bool {
        let counts = self.state.counts(destination).expect("counts");
        counts.pending == 0
            && counts.deletions_pending == 0
            && self.state.cursor(destination).expect("cursor") >= self.last_seq()
    }

    /// The dead letters of `destination`: profile ids (as text) → class.
    pub(crate) fn dead_letters(&self, destination: &str) -> Vec<(String, String)> {
        self.state
            .dead_letters(Some(destination))
            .expect("dead letters")
            .into_iter()
            .map(|letter| (letter.profile_id, letter.class))
            .collect()
    }
}

/// The encoded golden profile of person `n`.
pub(crate) fn document(n: u32, person: &Person) -> Vec<u8> {
    encoded_profile(profile_id(n), &person.email, &person.traits)
}

/// An encoded golden profile with one email and these traits (each from source `test`).
pub(crate) fn encoded_profile<'a>(
    id: ProfileId,
    email: &str,
    traits: impl IntoIterator<Item = (&'a String, &'a Value)>,
) -> Vec<u8> {
    let profile = Profile {
        id: id.to_string(),
        identifiers: vec![IdentifierEntry {
            kind: "email".to_owned(),
            value: email.to_owned(),
            first_seen_ms: 0,
            source: "test".to_owned(),
            message_id: format!("m-{id}"),
        }],
        traits: traits
            .into_iter()
            .map(|(name, value)| {
                (
                    name.clone(),
                    GoldenTrait {
                        value: value.clone(),
                        rule: "most_recent".to_owned(),
                        sources: vec!["test".to_owned()],
                        at_ms: 0,
                    },
                )
            })
            .collect(),
        observations: BTreeMap::new(),
        sources: vec!["test".to_owned()],
        merged_ids: Vec::new(),
        merge_count: 0,
    };
    trib_identity::engine::encode(&profile).expect("encode")
}

/// The ESP field names of `firstName` and `plan`, and of the trait `bad` whose values (or
/// whose very presence) the ESP refuses.
pub(crate) fn field_names(kind: SimKind) -> [&'static str; 3] {
    match kind {
        // Mailchimp refuses a merge tag the audience does not have.
        SimKind::Mailchimp => ["FNAME", "PLAN", "EXTRA"],
        // HubSpot refuses a property that does not exist (PROPERTY_DOESNT_EXIST).
        SimKind::Hubspot => ["firstname", "plan", "favorite_color"],
        // SendGrid refuses a non-numeric value for the Number field `w2_N`.
        SimKind::Sendgrid => ["first_name", "e1_T", "w2_N"],
        // A webhook receiver takes any fields.
        SimKind::Webhook => ["first_name", "plan", "bad"],
    }
}

/// The name of a kind's destination.
pub(crate) fn kind_name(kind: SimKind) -> &'static str {
    match kind {
        SimKind::Mailchimp => "mailchimp",
        SimKind::Hubspot => "hubspot",
        SimKind::Sendgrid => "sendgrid",
        SimKind::Webhook => "webhook",
    }
}

/// A simulator with the engine's destination for it.
pub(crate) struct Esp {
    pub(crate) kind: SimKind,
    pub(crate) name: String,
    pub(crate) sim: Simulator,
    pub(crate) destination: Destination,
}

/// How to build one [`Esp`].
pub(crate) struct EspSetup {
    pub(crate) kind: SimKind,
    pub(crate) name: String,
    pub(crate) faults: Faults,
    /// The connector's per-call timeout.
    pub(crate) timeout: Duration,
    /// Changes the simulator's config last.
    pub(crate) sim: Box<dyn FnOnce(&mut SimConfig) + Send>,
    /// Changes the destination's config last.
    pub(crate) config: Box<dyn FnOnce(&mut DestinationConfig) + Send>,
    /// Mailchimp: batches above this many records go through `/batches` (default 100).
    pub(crate) mailchimp_batch_threshold: Option<usize>,
}

impl EspSetup {
    /// No faults, a 10 s timeout, SendGrid jobs applied after 20 ms, 20 ms retry base, a long
    /// retry window.
    pub(crate) fn new(kind: SimKind) -> Self {
        Self {
            kind,
            name: kind_name(kind).to_owned(),
            faults: Faults::default(),
            timeout: Duration::from_secs(10),
            sim: Box::new(|_| {}),
            config: Box::new(|_| {}),
            mailchimp_batch_threshold: None,
        }
    }

    pub(crate) async fn start(self) -> Esp {
        let kind = self.kind;
        let mut sim_config = SimConfig::new(kind);
        sim_config.faults = self.faults;
        sim_config.sendgrid_job_delay = Duration::from_millis(20);
        (self.sim)(&mut sim_config);
        let credential = match kind {
            SimKind::Webhook => sim_config.webhook_secret.clone(),
            _ => sim_config.api_key.clone(),
        };
        let sim = Simulator::start(sim_config, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("simulator starts");
        let [first_name, plan, bad] = field_names(kind);
        let mut config = DestinationConfig {
            name: self.name.clone(),
            kind: match kind {
                SimKind::Mailchimp => DestinationType::Mailchimp,
                SimKind::Hubspot => DestinationType::Hubspot,
                SimKind::Sendgrid => DestinationType::Sendgrid,
                SimKind::Webhook => DestinationType::Webhook,
            },
            purpose: DestinationConfig::DEFAULT_PURPOSE.to_owned(),
            mode: SyncMode::Upsert,
            credential: Secret::new(credential),
            list_id: (kind == SimKind::Mailchimp).then(|| "list1".to_owned()),
            list_ids: Vec::new(),
            url: (kind == SimKind::Webhook).then(|| format!("{}/hooks/tributary", sim.base_url())),
            base_url: (kind != SimKind::Webhook).then(|| sim.base_url()),
            fields: vec![
                (
                    first_name.to_owned(),
                    FieldSource::Trait("firstName".to_owned()),
                ),
                (plan.to_owned(), FieldSource::Trait("plan".to_owned())),
                (bad.to_owned(), FieldSource::Trait("bad".to_owned())),
            ],
            batch_window: DestinationConfig::DEFAULT_BATCH_WINDOW,
            reconcile_interval: DestinationConfig::DEFAULT_RECONCILE_INTERVAL,
            resync_interval: None,
            retry_window: Duration::from_secs(3600),
            retry_base: Duration::from_millis(20),
            max_batch: None,
        };
        (self.config)(&mut config);
        let connector = connector(&config, self.timeout, self.mailchimp_batch_threshold);
        Esp {
            kind,
            name: self.name,
            sim,
            destination: Destination { config, connector },
        }
    }
}

/// The connector `trib_sync::build::connector` builds for `config`, with a per-call
/// `timeout` and Mailchimp's `batch_threshold` (which the config file does not set).
pub(crate) fn connector(
    config: &DestinationConfig,
    timeout: Duration,
    mailchimp_batch_threshold: Option<usize>,
) -> Arc<dyn Connector> {
    let credential = config.credential.expose().clone();
    match config.kind {
        DestinationType::Mailchimp => {
            let mut settings =
                MailchimpConfig::new(credential, config.list_id.clone().unwrap_or_default());
            settings.base_url = config.base_url.clone();
            settings.timeout = timeout;
            if let Some(threshold) = mailchimp_batch_threshold {
                settings.batch_threshold = threshold;
            }
            Arc::new(MailchimpConnector::new(&settings).expect("mailchimp connector"))
        }
        DestinationType::Hubspot => {
            let mut settings = HubspotConfig::new(credential);
            settings.base_url = config.base_url.clone();
            settings.timeout = timeout;
            Arc::new(HubspotConnector::new(&settings).expect("hubspot connector"))
        }
        DestinationType::Sendgrid => {
            let mut settings = SendgridConfig::new(credential);
            settings.base_url = config.base_url.clone();
            settings.list_ids = config.list_ids.clone();
            settings.timeout = timeout;
            settings.job_deadline = Duration::from_secs(10);
            Arc::new(SendgridConnector::new(&settings).expect("sendgrid connector"))
        }
        DestinationType::Webhook => {
            let mut settings =
                WebhookConfig::new(config.url.clone().unwrap_or_default(), credential);
            settings.timeout = timeout;
            Arc::new(WebhookConnector::new(&settings).expect("webhook connector"))
        }
    }
}

impl Esp {
    /// The key the simulator holds person `n` under.
    pub(crate) fn key(&self, n: u32, person: &Person) -> String {
        match self.kind {
            SimKind::Webhook => profile_id(n).to_string(),
            _ => person.email.to_lowercase(),
        }
    }

    /// The fields the ESP must hold for `person`, as the simulator reports them.
    pub(crate) fn expected_fields(&self, person: &Person) -> BTreeMap<String, Value> {
        let [first_name, plan, bad] = field_names(self.kind);
        let mut fields = BTreeMap::new();
        for (field, source) in [(first_name, "firstName"), (plan, "plan"), (bad, "bad")] {
            if let Some(value) = person.traits.get(source) {
                fields.insert(field.to_owned(), value.clone());
            }
        }
        fields
    }

    /// The simulator's contacts with fields the ESP reports as empty left out (Mailchimp
    /// lists every merge tag of the audience, `""` when unset).
    pub(crate) fn held(&self) -> BTreeMap<String, SimContact> {
        self.sim
            .contacts()
            .into_iter()
            .map(|(key, mut contact)| {
                contact
                    .fields
                    .retain(|_, value| !matches!(value, Value::String(text) if text.is_empty()));
                (key, contact)
            })
            .collect()
    }

    /// Asserts the simulator holds exactly `expected` (person number → person): every one
    /// present with exactly its fields, nobody else, no two records for one person.
    #[track_caller]
    pub(crate) fn assert_holds_exactly(&self, expected: &BTreeMap<u32, Person>) {
        let held = self.held();
        let wanted: BTreeMap<String, BTreeMap<String, Value>> = expected
            .iter()
            .map(|(n, person)| (self.key(*n, person), self.expected_fields(person)))
            .collect();
        let extra: Vec<&String> = held
            .keys()
            .filter(|key| !wanted.contains_key(*key))
            .collect();
        assert!(
            extra.is_empty(),
            "{}: unexpected contacts {extra:?}",
            self.name
        );
        let mut wrong = Vec::new();
        for (key, fields) in &wanted {
            match held.get(key) {
                None => wrong.push(format!("{key}: missing")),
                Some(contact) if &contact.fields != fields => wrong.push(format!(
                    "{key}: holds {:?}, wanted {fields:?}",
                    contact.fields
                )),
                Some(_) => {}
            }
        }
        assert!(
            wrong.is_empty(),
            "{}: {} of {} contacts wrong, e.g. {:?}",
            self.name,
            wrong.len(),
            wanted.len(),
            &wrong[..wrong.len().min(5)]
        );
        let ids: BTreeSet<&String> = held.values().map(|contact| &contact.id).collect();
        let emails: BTreeSet<&String> = held.values().map(|contact| &contact.email).collect();
        assert_eq!(ids.len(), held.len(), "{}: duplicate ESP ids", self.name);
        assert_eq!(emails.len(), held.len(), "{}: duplicate emails", self.name);
    }
}

/// Waits (polling every 20 ms) until `condition` holds, failing after `limit`.
pub(crate) async fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
