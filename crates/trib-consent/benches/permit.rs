//! The cost of a consent permit, the check every record pays before it leaves Tributary (a
//! sync push pays one or two, a render one).
//!
//! `cargo bench -p trib-consent --bench permit -- [PEOPLE]` (default 100,000): a ledger on disk
//! with PEOPLE people of three identifiers each (email, user id, anonymous id), a consent entry
//! for `email_marketing` on half of them (granted on most, withdrawn on some), a global
//! suppression on 1% and a destination suppression on 1%; then permits for random people,
//! for a purpose that needs consent and one with a legitimate-interest basis, with a destination.
//! Prints ns per permit (median of 5 rounds of 100,000) and the share of permits granted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use trib_consent::{
    Gatekeeper, Ledger, LegalBasis, NewEntry, PrivacyRules, Proof, Purpose, Status, Suppression,
    SuppressionScope,
};
use trib_identity::Keyer;
use trib_identity::profile::IdentifierEntry;

const ROUND: usize = 100_000;

fn identifiers(person: usize) -> Vec<IdentifierEntry> {
    let entry = |kind: &str, value: String| IdentifierEntry {
        kind: kind.to_owned(),
        value,
        first_seen_ms: 0,
        source: "bench".to_owned(),
        message_id: format!("m{person}"),
    };
    vec![
        entry("user_id", format!("user-{person}")),
        entry("email", format!("person{person}@example.com")),
        entry("anonymous_id", format!("anon-{person:08x}")),
    ]
}

/// A small deterministic generator (xorshift), so runs compare.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn main() {
    let people: usize = std::env::args()
        .skip(1)
        .find(|argument| !argument.starts_with('-'))
        .and_then(|value| value.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir_in(".").expect("temporary directory");
    let ledger = Arc::new(Ledger::open_in(dir.path()).unwrap());
    let keyer = Keyer::new(&[7; 32]);
    let rules = PrivacyRules {
        purposes: vec![
            Purpose {
                name: "email_marketing".to_owned(),
                legal_basis: LegalBasis::Consent,
                basis_note: None,
            },
            Purpose {
                name: "service".to_owned(),
                legal_basis: LegalBasis::LegitimateInterest,
                basis_note: Some("bench".to_owned()),
            },
        ],
        ..PrivacyRules::default()
    };
    let mut entries = Vec::new();
    for person in (0..people).step_by(2) {
        let email = keyer.ident_key("email", &format!("person{person}@example.com"));
        entries.push(NewEntry {
            ident_key: email,
            purpose: "email_marketing".to_owned(),
            status: if person % 10 == 0 {
                Status::Withdrawn
            } else {
                Status::Granted
            },
            at_ms: 1_000 + person as i64,
            source: "bench".to_owned(),
            legal_basis: LegalBasis::Consent,
            proof: Proof::default(),
        });
        if entries.len() == 10_000 {
            ledger.record(&entries).unwrap();
            entries.clear();
        }
    }
    ledger.record(&entries).unwrap();
    for person in (0..people).step_by(100) {
        ledger
            .suppress(&Suppression {
                ident_key: keyer.ident_key("user_id", &format!("user-{person}")),
                scope: SuppressionScope::Global,
                reason: "hard_bounce".to_owned(),
                at_ms: 1,
                source: "bench".to_owned(),
            })
            .unwrap();
        ledger
            .suppress(&Suppression {
                ident_key: keyer.ident_key("email", &format!("person{}@example.com", person + 1)),
                scope: SuppressionScope::Destination("esp".to_owned()),
                reason: "complaint".to_owned(),
                at_ms: 1,
                source: "bench".to_owned(),
            })
            .unwrap();
    }
    let gate = Gatekeeper::new(ledger, keyer, Arc::new(rules));
    let people_ids: Vec<Vec<IdentifierEntry>> = (0..people).map(identifiers).collect();

    for purpose in ["email_marketing", "service"] {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut rounds = Vec::new();
        let mut granted = 0;
        for _ in 0..5 {
            let picks: Vec<usize> = (0..ROUND)
                .map(|_| (rng.next() % people as u64) as usize)
                .collect();
            let started = Instant::now();
            granted = 0;
            for person in picks {
                if gate
                    .permit(&people_ids[person], purpose, Some("esp"), ())
                    .is_ok()
                {
                    granted += 1;
                }
            }
            rounds.push(started.elapsed().as_nanos() as f64 / ROUND as f64);
        }
        let runs: Vec<String> = rounds.iter().map(|ns| format!("{ns:.0}")).collect();
        rounds.sort_by(f64::total_cmp);
        println!(
            "permit {purpose} ({people} people): {} ns median (rounds {}), {:.1}% granted",
            rounds[2].round(),
            runs.join(" / "),
            granted as f64 * 100.0 / ROUND as f64
        );
    }
}
