//! Shared setup: the example schemas and templates, a real consent ledger and gatekeeper.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use trib_consent::ledger::Proof;
use trib_consent::{Gatekeeper, Ledger, LegalBasis, NewEntry, PrivacyRules, Purpose, Status};
use trib_identity::Keyer;
use trib_identity::profile::Profile;
use trib_render::{
    CheckOptions, Compiler, Limits, PurposeFields, RenderInput, TemplateSource, Vocabulary,
};

pub(crate) fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/examples")
}

pub(crate) fn vocabulary() -> Vocabulary {
    let registry =
        trib_schema::Registry::load(examples().join("schemas")).expect("example schemas load");
    Vocabulary::from_registry(
        &registry,
        ["user_id", "email", "phone", "crm_id", "anonymous_id"].map(str::to_owned),
    )
}

pub(crate) fn fields() -> PurposeFields {
    let mut fields = PurposeFields::defaults_for(["email_marketing", "analytics"]);
    fields.declare(
        "order_emails",
        Some(vec![
            "firstName".into(),
            "email".into(),
            "events.order_completed".into(),
        ]),
    );
    fields
}

pub(crate) fn compiler(options: CheckOptions) -> Compiler {
    Compiler::new(vocabulary(), fields(), options, Limits::default())
}

pub(crate) fn template(name: &str) -> TemplateSource {
    trib_render::source::load_file(&examples().join("templates").join(format!("{name}.toml")))
        .expect("example template loads")
}

pub(crate) fn keyer() -> Keyer {
    Keyer::new(&[7; 32])
}

/// A gatekeeper over a fresh ledger; `email_marketing` needs consent, `order_emails` is a
/// contract.
pub(crate) struct Consent {
    pub(crate) gatekeeper: Gatekeeper,
    pub(crate) ledger: Arc<Ledger>,
    _dir: tempfile::TempDir,
}

impl Consent {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Arc::new(Ledger::open_in(dir.path()).expect("ledger opens"));
        let mut rules = PrivacyRules::default();
        rules.purposes.push(Purpose {
            name: "order_emails".into(),
            legal_basis: LegalBasis::Contract,
            basis_note: Some("terms of sale, section 4".into()),
        });
        Self {
            gatekeeper: Gatekeeper::new(ledger.clone(), keyer(), Arc::new(rules)),
            ledger,
            _dir: dir,
        }
    }

    pub(crate) fn grant(&self, profile: &Profile, purpose: &str) {
        let entries: Vec<NewEntry> = profile
            .identifiers
            .iter()
            .map(|identifier| NewEntry {
                ident_key: keyer().ident_key(&identifier.kind, &identifier.value),
                purpose: purpose.to_owned(),
                status: Status::Granted,
                at_ms: 1,
                source: "api:test".into(),
                legal_basis: LegalBasis::Consent,
                proof: Proof::default(),
            })
            .collect();
        self.ledger.record(&entries).expect("consent recorded");
    }
}

/// A profile and events from a compact description:
/// `{"id", "identifiers": {"email": "..."}, "traits": {...}, "events": [...]}`.
pub(crate) fn person(description: &Value) -> RenderInput {
    let identifiers: Vec<Value> = description["identifiers"]
        .as_object()
        .map(|object| {
            object
                .iter()
                .map(|(kind, value)| {
                    json!({"type": kind, "value": value, "first_seen_ms": 1, "source": "test", "message_id": "m1"})
                })
                .collect()
        })
        .unwrap_or_default();
    let traits: serde_json::Map<String, Value> = description["traits"]
        .as_object()
        .map(|object| {
            object
                .iter()
                .map(|(name, value)| {
                    (
                        name.clone(),
                        json!({"value": value, "rule": "latest", "sources": ["test"], "at_ms": 1}),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let profile: Profile = serde_json::from_value(json!({
        "id": description["id"].as_str().unwrap_or("p_00000000000000000000000000000001"),
        "identifiers": identifiers,
        "traits": traits,
        "observations": {},
        "sources": ["test"],
    }))
    .expect("profile document");
    let events = description["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    RenderInput { profile, events }
}
