//! The identity engine against the reference store: journeys, guard-rails, unmerge,
//! determinism and crash recovery.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::FaultyStore;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use trib_identity::engine::journal;
use trib_identity::{Engine, EngineError, Exclusion, IdentityConfig, Keyer, LogEvent, Profile};
use trib_store::{
    ChangeBatch, ConsumerOffsets, EventRef, MemoryStore, ProfileId, ProfileState, ProfileStore,
    TimelineEntry,
};

const KEY: [u8; 32] = [7; 32];

fn rules(config: Value) -> Arc<trib_identity::IdentityRules> {
    let config: IdentityConfig = serde_json::from_value(config).unwrap();
    Arc::new(config.rules().unwrap())
}

fn default_rules() -> Arc<trib_identity::IdentityRules> {
    rules(json!({
        "types": [
            {"name": "user_id", "unique": true},
            {"name": "email", "max_per_profile": 3, "traits": ["email"]},
            {"name": "crm_id", "unique": true, "traits": ["crm_id"]},
            {"name": "anonymous_id", "max_per_profile": 10}
        ],
        "blocked_values": ["null", "undefined", "test@example.com"],
        "traits": {
            "source_priority": ["crm", "shop", "web"],
            "rules": {"first_name": "source_priority", "lifetime_value": "sum", "plan": "most_recent", "signup_at": "first_seen"}
        }
    }))
}

fn engine(
    store: Arc<MemoryStore>,
    rules: Arc<trib_identity::IdentityRules>,
) -> Engine<Arc<MemoryStore>> {
    Engine::new(store, rules, Keyer::new(&KEY)).unwrap()
}

/// Builds events with consecutive offsets in one partition unless told otherwise.
#[derive(Default)]
struct Log {
    events: Vec<LogEvent>,
    next: BTreeMap<u32, u64>,
}

impl Log {
    fn push(&mut self, partition: u32, mut event: Value) -> EventRef {
        let offset = self.next.entry(partition).or_default();
        let at = EventRef {
            partition,
            offset: *offset,
        };
        *offset += 1;
        let object = event.as_object_mut().unwrap();
        object
            .entry("messageId")
            .or_insert_with(|| json!(format!("m-{partition}-{}", at.offset)));
        object.entry("source").or_insert(json!("web"));
        self.events.push(LogEvent {
            at,
            payload: Bytes::from(event.to_string()),
        });
        at
    }

    fn reader(&self) -> impl FnMut(EventRef) -> Result<Bytes, EngineError> + '_ {
        |at| {
            self.events
                .iter()
                .find(|e| e.at == at)
                .map(|e| e.payload.clone())
                .ok_or(EngineError::Log {
                    partition: at.partition,
                    offset: at.offset,
                    reason: "missing".into(),
                })
        }
    }
}

fn ts(second: u32) -> String {
    format!("2026-03-01T10:{:02}:{:02}Z", second / 60, second % 60)
}

/// Every active profile with its document and timeline.
fn snapshot(store: &dyn ProfileStore) -> BTreeMap<String, (Profile, Vec<TimelineEntry>)> {
    let mut out = BTreeMap::new();
    for change in store.changes(None, 0, usize::MAX).unwrap() {
        if let Some(ProfileState::Active(record)) = store.get(&change.id).unwrap() {
            let profile = trib_identity::engine::decode(&record).unwrap();
            let timeline = store.timeline(&change.id, None, usize::MAX).unwrap();
            out.insert(change.id.to_string(), (profile, timeline));
        }
    }
    out
}

fn lookup(store: &dyn ProfileStore, kind: &str, value: &str) -> Option<ProfileId> {
    store
        .lookup(&Keyer::new(&KEY).ident_key(kind, value))
        .unwrap()
}

fn only_profile(store: &dyn ProfileStore) -> (Profile, Vec<TimelineEntry>) {
    let all = snapshot(store);
    assert_eq!(all.len(), 1, "expected one profile, got {:#?}", all.keys());
    all.into_values().next().unwrap()
}

#[test]
fn a_journey_across_devices_and_a_crm_import_ends_in_one_profile() {
    let mut log = Log::default();
    // Anonymous browsing on a laptop.
    for second in 0..3 {
        log.push(0, json!({"type": "page", "anonymousId": "laptop", "name": "Home", "timestamp": ts(second)}));
    }
    // Sign-up: identify with the anonymous id and traits.
    log.push(1, json!({"type": "identify", "userId": "u-1", "anonymousId": "laptop",
        "traits": {"email": "Ada@Example.com", "first_name": "ada", "plan": "free", "signup_at": "2026-03-01"},
        "timestamp": ts(10)}));
    // A purchase on a phone, signed in.
    log.push(1, json!({"type": "track", "event": "Order Completed", "userId": "u-1", "anonymousId": "phone",
        "properties": {"revenue": 30}, "context": {"traits": {"lifetime_value": 30}}, "source": "shop",
        "timestamp": ts(20)}));
    // A CRM import row: same email, a CRM id, no user id.
    log.push(2, json!({"type": "identify", "source": "crm", "anonymousId": "crm-row-17",
        "traits": {"email": "ada@example.com", "first_name": "Ada", "crm_id": "C-17", "plan": "gold", "lifetime_value": 120},
        "context": {"externalIds": [{"id": "ada@example.com", "type": "email"}]},
        "timestamp": ts(5)}));

    let store = Arc::new(MemoryStore::new());
    let mut engine = engine(store.clone(), default_rules());
    engine.process(&log.events, None).unwrap();

    let (profile, timeline) = only_profile(&*store);
    assert_eq!(timeline.len(), 6);
    let identifiers: Vec<(&str, &str)> = profile
        .identifiers
        .iter()
        .map(|i| (i.kind.as_str(), i.value.as_str()))
        .collect();
    assert_eq!(
        identifiers,
        vec![
            ("user_id", "u-1"),
            ("email", "ada@example.com"),
            ("crm_id", "C-17"),
            ("anonymous_id", "laptop"),
            ("anonymous_id", "crm-row-17"),
            ("anonymous_id", "phone"),
        ]
    );
    // Survivorship: the CRM wins first_name; plan is the most recent (web's identify at 10 s
    // is later than the CRM row's event time of 5 s); lifetime_value sums the sources.
    assert_eq!(profile.traits["first_name"].value, json!("Ada"));
    assert_eq!(profile.traits["first_name"].sources, vec!["crm".to_owned()]);
    assert_eq!(profile.traits["plan"].value, json!("free"));
    assert_eq!(profile.traits["lifetime_value"].value, json!(150));
    assert_eq!(profile.traits["signup_at"].value, json!("2026-03-01"));
    assert_eq!(profile.sources, vec!["crm", "shop", "web"]);
    // The id is the one of the user id, and every identifier finds it.
    let id = Keyer::new(&KEY).profile_id("user_id", "u-1");
    assert_eq!(profile.id, id.to_string());
    for (kind, value) in identifiers {
        assert_eq!(lookup(&*store, kind, value), Some(id), "{kind}");
    }
    // The anonymous profile's id redirects to it.
    let anonymous = Keyer::new(&KEY).profile_id("anonymous_id", "laptop");
    assert_eq!(
        store.get(&anonymous).unwrap(),
        Some(ProfileState::Merged {
            into: id,
            at_ms: match store.get(&anonymous).unwrap() {
                Some(ProfileState::Merged { at_ms, .. }) => at_ms,
                other => panic!("{other:?}"),
            }
        })
    );
}

#[test]
fn blocked_values_never_link() {
    let mut log = Log::default();
    log.push(0, json!({"type": "identify", "anonymousId": "a-1", "traits": {"email": "test@example.com"}, "timestamp": ts(1)}));
    log.push(0, json!({"type": "identify", "anonymousId": "a-2", "traits": {"email": "TEST@example.com"}, "timestamp": ts(2)}));
    log.push(0, json!({"type": "identify", "userId": "undefined", "anonymousId": "a-3", "timestamp": ts(3)}));
    log.push(0, json!({"type": "identify", "userId": "undefined", "anonymousId": "a-4", "timestamp": ts(4)}));
    let store = Arc::new(MemoryStore::new());
    let mut engine = engine(store.clone(), default_rules());
    engine.process(&log.events, None).unwrap();
    assert_eq!(snapshot(&*store).len(), 4);
    assert_eq!(engine.stats().merges, 0);
    assert_eq!(lookup(&*store, "email", "test@example.com"), None);
}

#[test]
fn regex_blocked_values_never_link() {
    let rules = rules(json!({"blocked_patterns": ["@mailinator\\.com$"]}));
    let mut log = Log::default();
    log.push(0, json!({"type": "identify", "anonymousId": "a-1", "traits": {"email": "x@mailinator.com"}, "timestamp": ts(1)}));
    log.push(0, json!({"type": "identify", "anonymousId": "a-2", "traits": {"email": "x@mailinator.com"}, "timestamp": ts(2)}));
    let store = Arc::new(MemoryStore::new());
    engine(store.clone(), rules)
        .process(&log.events, None)
        .unwrap();
    assert_eq!(snapshot(&*store).len(), 2);
}

fn refusals(store: &dyn ProfileStore) -> Vec<Value> {
    store
        .journal_by_kind(journal::MERGE_REFUSED, 0, 100)
        .unwrap()
        .iter()
        .map(|e| serde_json::from_slice(&e.doc).unwrap())
        .collect()
}

#[test]
fn two_user_ids_never_merge() {
    let mut log = Log::default();
    log.push(0, json!({"type": "identify", "userId": "u-1", "traits": {"email": "shared@corp.example"}, "timestamp": ts(1)}));
    log.push(0, json!({"type": "identify", "userId": "u-2", "traits": {"email": "shared@corp.example"}, "timestamp": ts(2)}));
    let store = Arc::new(MemoryStore::new());
    let mut engine = engine(store.clone(), default_rules());
    engine.process(&log.events, None).unwrap();
    let profiles = snapshot(&*store);
    assert_eq!(profiles.len(), 2);
    let keyer = Keyer::new(&KEY);
    assert_eq!(
        lookup(&*store, "email", "shared@corp.example"),
        Some(keyer.profile_id("user_id", "u-1"))
    );
    // u-2's event is on u-2's own profile, and the refusal is recorded with its reason.
    let u2 = &profiles[&keyer.profile_id("user_id", "u-2").to_string()];
    assert_eq!(u2.1.len(), 1);
    let refused = refusals(&*store);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["reason"], "unique_conflict");
    assert_eq!(refused[0]["what"], "merge");
    assert_eq!(refused[0]["event"]["message_id"], "m-0-1");
    assert_eq!(engine.stats().merges_refused, 1);
}

#[test]
fn a_second_value_of_a_unique_type_is_refused_on_one_profile() {
    let mut log = Log::default();
    log.push(0, json!({"type": "identify", "userId": "u-1", "traits": {"crm_id": "C-1"}, "timestamp": ts(1)}));
    log.push(0, json!({"type": "identify", "userId": "u-1", "traits": {"crm_id": "C-2"}, "timestamp": ts(2)}));
    let store = Arc::new(MemoryStore::new());
    let mut engine = engine(store.clone(), default_rules());
    engine.process(&log.events, None).unwrap();
    let (profile, _) = only_profile(&*store);
    assert_eq!(profile.count_of_type("crm_id"), 1);
    assert_eq!(lookup(&*store, "crm_id", "C-2"), None);
    let refused = refusals(&*store);
    assert_eq!(refused[0]["what"], "identifier");
    assert_eq!(refused[0]["reason"], "unique_conflict");
    assert_eq!(engine.stats().identifiers_refused, 1);
}

#[test]
fn per_type_limits_refuse_extra_identifiers_and_merges() {
    let mut log = Log::default();
    // Three emails fit (max 3), the fourth does not.
    for (second, email) in ["a@x.example", "b@x.example", "c@x.example", "d@x.example"]
        .iter()
        .enumerate()
    {
        log.push(0, json!({"type": "identify", "userId": "u-1", "traits": {"email": email}, "timestamp": ts(second as u32)}));
    }
    // A profile with two emails cannot merge with one that has two more.
    log.push(1, json!({"type": "identify", "anonymousId": "v-1", "traits": {"email": "e@x.example"}, "timestamp": ts(10)}));
    log.push(1, json!({"type": "identify", "anonymousId": "v-1", "traits": {"email": "f@x.example"}, "timestamp": ts(11)}));
    log.push(1, json!({"type": "identify", "anonymousId": "v-2", "traits": {"email": "g@x.example"}, "timestamp": ts(12)}));
    log.push(1, json!({"type": "identify", "anonymousId": "v-2", "traits": {"email": "h@x.example"}, "timestamp": ts(13)}));
    log.push(1, json!({"type": "track", "event": "x", "anonymousId": "v-1", "context": {"traits": {"email": "g@x.example"}}, "timestamp": ts(14)}));
    let store = Arc::new(MemoryStore::new());
    let mut engine = engine(store.clone(), default_rules());
    engine.process(&log.events, None).unwrap();
    assert_eq!(lookup(&*store, "email", "d@x.example"), None);
    assert_ne!(
        lookup(&*store, "email", "e@x.example"),
        lookup(&*store, "email", "g@x.example")
    );
    let reasons: Vec<(String, String)> = refusals(&*store)
        .iter()
        .map(|r| {
            (
                r["what"].as_str().unwrap().to_owned(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("identifier".to_owned(), "type_limit".to_owned()),
            ("merge".to_owned(), "type_limit".to_owned())
        ]
    );
}

#[test]
fn identifier_and_merge_caps_hold() {
    let rules = rules(json!({
        "max_identifiers_per_profile": 3,
        "max_merges_per_profile": 1
    }));
    let mut log = Log::default();
    log.push(0, json!({"type": "identify", "userId": "u-1", "anonymousId": "a-1", "traits": {"email": "a@x.example"}, "timestamp": ts(1)}));
    // A fourth identifier is over the cap.
    log.push(0, json!({"type": "track", "event": "x", "userId": "u-1", "anonymousId": "a-2", "timestamp": ts(2)}));
    // Merges: b-1 absorbs b-2 (one merge), then b-3 would be a second merge.
    log.push(
        1,
        json!({"type": "track", "event": "x", "anonymousId": "b-1", "timestamp": ts(3)}),
    );
    log.push(
        1,
        json!({"type": "track", "event": "x", "anonymousId": "b-2", "timestamp": ts(4)}),
    );
    log.push(
        1,
        json!({"type": "track", "event": "x", "anonymousId": "b-3", "timestamp": ts(5)}),
    );
    log.push(1, json!({"type": "identify", "anonymousId": "b-1", "traits": {"email": "b@x.example"}, "timestamp": ts(6)}));
    log.push(1, json!({"type": "identify", "anonymousId": "b-2", "traits": {"email": "b@x.example"}, "timestamp": ts(7)}));
    log.push(1, json!({"type": "identify", "anonymousId": "b-3", "traits": {"email": "b@x.example"}, "timestamp": ts(8)}));
    let store = Arc::new(MemoryStore::new());
    let mut engine = engine(store.clone(), rules);
    engine.process(&log.events, None).unwrap();
    assert_eq!(lookup(&*store, "anonymous_id", "a-2"), None);
    assert_eq!(
        lookup(&*store, "anonymous_id", "b-1"),
        lookup(&*store, "anonymous_id", "b-2")
    );
    assert_ne!(
        lookup(&*store, "anonymous_id", "b-1"),
        lookup(&*store, "anonymous_id", "b-3")
    );
    let reasons: Vec<String> = refusals(&*store)
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(reasons, vec!["identifier_cap", "merge_cap"]);
}

/// Two people, A and B, and one event that wrongly links them (a shared device).
fn two_people_and_a_link(log: &mut Log) -> EventRef {
    log.push(0, json!({"type": "identify", "userId": "alice", "anonymousId": "dev-a", "traits": {"email": "alice@x.example", "first_name": "Alice"}, "timestamp": ts(1)}));
    log.push(
        0,
        json!({"type": "track", "event": "Viewed", "anonymousId": "dev-a", "timestamp": ts(2)}),
    );
    log.push(0, json!({"type": "identify", "anonymousId": "dev-b", "traits": {"email": "bob@x.example", "first_name": "Bob"}, "timestamp": ts(3)}));
    log.push(
        0,
        json!({"type": "track", "event": "Viewed", "anonymousId": "dev-b", "timestamp": ts(4)}),
    );
    // The link: Bob's device sends Alice's email.
    let link = log.push(
        0,
        json!({"messageId": "the-link", "type": "track", "event": "Shared", "anonymousId": "dev-b",
        "context": {"traits": {"email": "alice@x.example"}}, "timestamp": ts(5)}),
    );
    log.push(
        0,
        json!({"type": "track", "event": "Viewed", "anonymousId": "dev-b", "timestamp": ts(6)}),
    );
    link
}

#[test]
fn unmerging_a_link_restores_both_profiles_as_if_it_never_existed() {
    let mut log = Log::default();
    two_people_and_a_link(&mut log);
    let store = Arc::new(MemoryStore::new());
    let mut engine = engine(store.clone(), default_rules());
    engine.process(&log.events, None).unwrap();
    let merged = only_profile(&*store).0;
    assert_eq!(merged.merge_count, 1);
    let merge = store.journal_by_kind(journal::MERGE, 0, 10).unwrap();
    let provenance: Value = serde_json::from_slice(&merge[0].doc).unwrap();
    assert_eq!(provenance["event"]["message_id"], "the-link");
    assert_eq!(provenance["linked_by"][0]["type"], "anonymous_id");

    let id: ProfileId = merged.id.parse().unwrap();
    let report = engine
        .unmerge(
            id,
            Exclusion::Event {
                source: "web".into(),
                message_id: "the-link".into(),
            },
            log.reader(),
        )
        .unwrap();
    assert_eq!(report.events_replayed, 6);
    assert_eq!(report.profiles.len(), 2);

    // A fresh run that never had the link (the same event, its links excluded from the
    // start) gives exactly the same profiles.
    let fresh = Arc::new(MemoryStore::new());
    let mut clean = self::engine(fresh.clone(), default_rules());
    fresh
        .apply(&ChangeBatch {
            journal: vec![trib_store::NewJournalEntry {
                profile: id,
                kind: journal::EXCLUSION.into(),
                at_ms: 0,
                doc: Bytes::from(
                    json!({"remove": "event", "source": "web", "message_id": "the-link"})
                        .to_string(),
                ),
            }],
            ..ChangeBatch::default()
        })
        .unwrap();
    clean = {
        drop(clean);
        self::engine(fresh.clone(), default_rules())
    };
    clean.process(&log.events, None).unwrap();
    let after = snapshot(&*store);
    let expected = snapshot(&*fresh);
    assert_eq!(after.len(), 2);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (id, (profile, timeline)) in &expected {
        let (got, got_timeline) = &after[id];
        assert_eq!(got.identifiers, profile.identifiers, "{id}");
        assert_eq!(got.traits, profile.traits, "{id}");
        assert_eq!(got_timeline, timeline, "{id}");
    }
    // And the lookups point where they should.
    let keyer = Keyer::new(&KEY);
    assert_eq!(
        lookup(&*store, "email", "alice@x.example"),
        Some(keyer.profile_id("user_id", "alice"))
    );
    assert_eq!(
        lookup(&*store, "email", "bob@x.example"),
        Some(keyer.profile_id("email", "bob@x.example"))
    );
    // Replaying the link again later does not re-merge: the exclusion is durable.
    let mut reopened = self::engine(store.clone(), default_rules());
    let link_again: Vec<LogEvent> = log
        .events
        .iter()
        .filter(|e| {
            std::str::from_utf8(&e.payload)
                .unwrap()
                .contains("the-link")
        })
        .cloned()
        .collect();
    reopened.process(&link_again, None).unwrap();
    assert_eq!(snapshot(&*store).len(), 2);
}

#[test]
fn unmerging_an_identifier_splits_the_profile_and_blocks_it() {
    let mut log = Log::default();
    two_people_and_a_link(&mut log);
    let store = Arc::new(MemoryStore::new());
    let mut engine = engine(store.clone(), default_rules());
    engine.process(&log.events, None).unwrap();
    let merged = only_profile(&*store).0;
    let id: ProfileId = merged.id.parse().unwrap();
    // Removing an identifier the profile doesn't hold is an error that changes nothing.
    let error = engine
        .unmerge(
            id,
            Exclusion::Identifier {
                kind: "email".into(),
                value: "nobody@x.example".into(),
            },
            log.reader(),
        )
        .unwrap_err();
    assert!(error.to_string().contains("does not hold"), "{error}");
    assert_eq!(snapshot(&*store).len(), 1);

    engine
        .unmerge(
            id,
            Exclusion::Identifier {
                kind: "anonymous_id".into(),
                value: "dev-b".into(),
            },
            log.reader(),
        )
        .unwrap();
    let after = snapshot(&*store);
    // dev-b linked everything of Bob; without it, Bob's email profile stands alone, and the
    // events that carried only dev-b no longer belong to anyone.
    assert_eq!(after.len(), 2, "{:#?}", after.keys());
    assert_eq!(lookup(&*store, "anonymous_id", "dev-b"), None);
    let explain = store.journal(&id, 100).unwrap();
    let kinds: Vec<&str> = explain.iter().map(|e| e.kind.as_str()).collect();
    assert!(
        kinds.contains(&journal::EXCLUSION) && kinds.contains(&journal::UNMERGE),
        "{kinds:?}"
    );
}

#[test]
fn the_same_events_in_other_slices_and_orders_give_the_same_profiles() {
    let mut log = Log::default();
    two_people_and_a_link(&mut log);
    for n in 0..30u32 {
        log.push(
            n % 3,
            json!({"type": "identify", "anonymousId": format!("v-{}", n % 7),
            "traits": {"email": format!("p{}@x.example", n % 5), "score": n},
            "timestamp": ts(100 + n)}),
        );
    }
    let whole = Arc::new(MemoryStore::new());
    engine(whole.clone(), default_rules())
        .process(&log.events, None)
        .unwrap();
    let sliced = Arc::new(MemoryStore::new());
    let mut e = engine(sliced.clone(), default_rules());
    for chunk in log.events.chunks(4) {
        e.process(chunk, None).unwrap();
    }
    assert_eq!(snapshot(&*whole), snapshot(&*sliced));
    // Without guard-rail conflicts, even the reverse order gives the same ids, identifiers
    // and traits (guard-rail decisions are taken in processing order, by design).
    let lenient = rules(json!({"types": [
        {"name": "user_id", "unique": true},
        {"name": "email", "max_per_profile": 50, "traits": ["email"]},
        {"name": "anonymous_id", "max_per_profile": 50}
    ]}));
    let forward = Arc::new(MemoryStore::new());
    let mut e = engine(forward.clone(), lenient.clone());
    e.process(&log.events, None).unwrap();
    assert_eq!(e.stats().merges_refused + e.stats().identifiers_refused, 0);
    let reversed = Arc::new(MemoryStore::new());
    let events: Vec<LogEvent> = log.events.iter().rev().cloned().collect();
    engine(reversed.clone(), lenient)
        .process(&events, None)
        .unwrap();
    let (a, b) = (snapshot(&*forward), snapshot(&*reversed));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (id, (profile, _)) in &a {
        assert_eq!(profile.identifiers, b[id].0.identifiers, "{id}");
        assert_eq!(profile.traits, b[id].0.traits, "{id}");
    }
}

#[test]
fn a_failed_commit_leaves_nothing_and_a_retry_gives_the_uninterrupted_result() {
    let mut log = Log::default();
    two_people_and_a_link(&mut log);
    for n in 0..40u32 {
        log.push(0, json!({"type": "identify", "userId": format!("u-{}", n % 9), "anonymousId": format!("d-{}", n % 13),
            "traits": {"email": format!("p{}@x.example", n % 11), "lifetime_value": n},
            "timestamp": ts(200 + n)}));
    }
    let slices: Vec<&[LogEvent]> = log.events.chunks(5).collect();
    let uninterrupted = Arc::new(MemoryStore::new());
    let mut e = engine(uninterrupted.clone(), default_rules());
    let mut offset = 0;
    for slice in &slices {
        offset += slice.len() as u64;
        e.process(
            slice,
            Some(ConsumerOffsets {
                consumer: "identity".into(),
                offsets: vec![(0, offset)],
            }),
        )
        .unwrap();
    }

    let crashed = Arc::new(MemoryStore::new());
    // The fourth commit fails, like a crash before it.
    let failing = Arc::new(FaultyStore::new(crashed.clone(), |apply| apply == 4));
    let mut e = Engine::new(failing.clone(), default_rules(), Keyer::new(&KEY)).unwrap();
    let mut offset = 0;
    for slice in &slices {
        let next = offset + slice.len() as u64;
        match e.process(
            slice,
            Some(ConsumerOffsets {
                consumer: "identity".into(),
                offsets: vec![(0, next)],
            }),
        ) {
            Ok(()) => offset = next,
            Err(_) => break,
        }
    }
    assert_eq!(offset, 15, "the fourth commit failed");
    // Restart: a new engine resumes from the committed offset.
    let committed = crashed.consumer_offsets("identity").unwrap();
    assert_eq!(committed, vec![(0, 15)]);
    let mut e = engine(crashed.clone(), default_rules());
    let mut offset = committed[0].1;
    for slice in log.events[offset as usize..].chunks(5) {
        offset += slice.len() as u64;
        e.process(
            slice,
            Some(ConsumerOffsets {
                consumer: "identity".into(),
                offsets: vec![(0, offset)],
            }),
        )
        .unwrap();
    }
    assert_eq!(snapshot(&*crashed), snapshot(&*uninterrupted));
}

#[test]
fn erasure_removes_the_person_and_a_replay_cannot_bring_them_back_without_consent() {
    let mut log = Log::default();
    log.push(
        1,
        json!({"type": "track", "event": "Viewed", "anonymousId": "dev-b", "timestamp": ts(0)}),
    );
    log.push(0, json!({"type": "identify", "userId": "alice", "anonymousId": "dev-a", "traits": {"email": "alice@x.example", "first_name": "Alice"}, "timestamp": ts(1)}));
    log.push(1, json!({"type": "identify", "anonymousId": "dev-b", "traits": {"email": "alice@x.example"}, "timestamp": ts(2)}));
    log.push(
        0,
        json!({"type": "track", "event": "Viewed", "userId": "alice", "timestamp": ts(3)}),
    );
    log.push(2, json!({"type": "identify", "userId": "bob", "traits": {"email": "bob@x.example"}, "timestamp": ts(4)}));
    let store = Arc::new(MemoryStore::new());
    let mut engine = engine(store.clone(), default_rules());
    engine.process(&log.events, None).unwrap();
    let alice = lookup(&*store, "email", "alice@x.example").unwrap();
    let bob = lookup(&*store, "email", "bob@x.example").unwrap();
    assert!(
        !store.journal(&alice, 10).unwrap().is_empty(),
        "alice's merge is journaled"
    );

    let report = engine.erase(alice, log.reader()).unwrap();
    assert_eq!(report.events, 4);
    assert_eq!(report.identifiers, 4, "user id, email, two anonymous ids");
    assert!(
        report.profile_ids.len() >= 2,
        "the merged id is erased too: {report:?}"
    );
    let keys: Vec<&str> = report.log_keys.0.iter().map(String::as_str).collect();
    assert_eq!(keys, ["alice", "dev-b"]);
    assert!(
        !format!("{report:?}").contains("alice"),
        "Debug never prints clear keys"
    );

    for (kind, value) in [
        ("user_id", "alice"),
        ("email", "alice@x.example"),
        ("anonymous_id", "dev-a"),
        ("anonymous_id", "dev-b"),
    ] {
        assert_eq!(lookup(&*store, kind, value), None, "{kind} is unindexed");
    }
    for id in &report.profile_ids {
        let id: ProfileId = id.parse().unwrap();
        assert!(
            matches!(store.get(&id).unwrap(), Some(ProfileState::Deleted { .. })),
            "{id} is deleted"
        );
        assert!(store.timeline(&id, None, 10).unwrap().is_empty());
        let kinds: Vec<String> = store
            .journal(&id, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert!(kinds.iter().all(|k| k == journal::ERASURE), "{kinds:?}");
    }
    let tombstone = store.journal_by_kind(journal::ERASURE, 0, 10).unwrap();
    let text = String::from_utf8(tombstone[0].doc.to_vec()).unwrap();
    assert!(!text.contains("alice") && !text.contains("dev-"), "{text}");
    assert_eq!(snapshot(&*store).len(), 1, "bob is untouched");
    assert!(lookup(&*store, "email", "bob@x.example") == Some(bob));

    // A replay of the same events (a fresh engine, as after a restart) re-creates nothing.
    let mut replay = Log::default();
    for event in &log.events {
        let mut value: Value = serde_json::from_slice(&event.payload).unwrap();
        value["messageId"] = json!(format!("again-{}", value["messageId"].as_str().unwrap()));
        replay.push(3, value);
    }
    let mut restarted = self::engine(store.clone(), default_rules());
    restarted.process(&replay.events, None).unwrap();
    assert_eq!(restarted.stats().events_tombstoned, 4);
    assert_eq!(lookup(&*store, "email", "alice@x.example"), None);
    assert_eq!(snapshot(&*store).len(), 1);

    // The person comes back and grants consent: that event re-creates a profile, and the
    // lifted tombstone stays lifted after a restart.
    let mut back = Log::default();
    back.push(4, json!({"type": "identify", "userId": "alice", "traits": {"email": "alice@x.example"},
        "context": {"consent": {"categoryPreferences": {"email_marketing": true}}}, "timestamp": ts(9)}));
    restarted.process(&back.events, None).unwrap();
    assert!(lookup(&*store, "email", "alice@x.example").is_some());
    let again = self::engine(store.clone(), default_rules());
    drop(again);
    let mut later = Log::default();
    later.push(
        5,
        json!({"type": "track", "event": "Viewed", "userId": "alice", "timestamp": ts(10)}),
    );
    let mut reopened = self::engine(store.clone(), default_rules());
    reopened.process(&later.events, None).unwrap();
    assert_eq!(reopened.stats().events_tombstoned, 0);
}

#[test]
fn erasing_an_unknown_or_erased_profile_is_an_error() {
    let mut log = Log::default();
    log.push(
        0,
        json!({"type": "identify", "userId": "carol", "timestamp": ts(1)}),
    );
    let store = Arc::new(MemoryStore::new());
    let mut engine = engine(store.clone(), default_rules());
    engine.process(&log.events, None).unwrap();
    let carol = lookup(&*store, "user_id", "carol").unwrap();
    engine.erase(carol, log.reader()).unwrap();
    assert!(matches!(
        engine.erase(carol, log.reader()),
        Err(EngineError::DeletedProfile { .. })
    ));
    let unknown = Keyer::new(&KEY).profile_id("user_id", "nobody");
    assert!(matches!(
        engine.erase(unknown, log.reader()),
        Err(EngineError::UnknownProfile(_))
    ));
}

#[test]
fn expired_trait_observations_leave_profiles_with_a_counts_only_journal_entry() {
    use std::time::Duration;
    use trib_core::retention::TraitRetention;

    let mut log = Log::default();
    log.push(
        0,
        json!({"type": "identify", "userId": "u-1",
        "traits": {"email": "old@example.com", "first_name": "Ada", "plan": "free"},
        "timestamp": "2026-03-01T10:00:00Z"}),
    );
    log.push(
        0,
        json!({"type": "identify", "userId": "u-2",
        "traits": {"email": "recent@example.com"}, "timestamp": "2026-04-20T10:00:00Z"}),
    );
    let store = Arc::new(MemoryStore::new());
    let mut engine = engine(store.clone(), default_rules());
    engine.process(&log.events, None).unwrap();

    let mut classes = TraitRetention::default_classes();
    classes[0].ttl = Some(Duration::from_secs(30 * 86_400)); // contact
    let policy = TraitRetention { classes };
    let now_ms = jiff::Timestamp::from_second(1_777_550_400)
        .unwrap()
        .as_millisecond(); // 2026-04-30
    let report = engine.expire_traits(now_ms, &policy).unwrap();
    assert_eq!(report.profiles, 2);
    assert_eq!(report.changed, 1);
    assert_eq!(report.expired, BTreeMap::from([("contact".to_owned(), 1)]));

    let old = store
        .get(&lookup(&*store, "user_id", "u-1").unwrap())
        .unwrap();
    let Some(ProfileState::Active(record)) = old else {
        panic!("u-1 is not active")
    };
    let profile = trib_identity::engine::decode(&record).unwrap();
    assert!(!profile.traits.contains_key("email"));
    assert!(!profile.observations.contains_key("email"));
    assert_eq!(
        profile.traits["first_name"].value,
        json!("Ada"),
        "class without a TTL"
    );
    assert_eq!(
        profile.traits["plan"].value,
        json!("free"),
        "trait in no class"
    );
    let entries = store.journal(&record.id, 100).unwrap();
    let retention: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == journal::RETENTION)
        .collect();
    assert_eq!(retention.len(), 1);
    let doc: Value = serde_json::from_slice(&retention[0].doc).unwrap();
    assert_eq!(doc, json!({"expired": {"contact": 1}, "traits_removed": 1}));

    let recent = store
        .get(&lookup(&*store, "user_id", "u-2").unwrap())
        .unwrap();
    let Some(ProfileState::Active(record)) = recent else {
        panic!("u-2 is not active")
    };
    let profile = trib_identity::engine::decode(&record).unwrap();
    assert_eq!(profile.traits["email"].value, json!("recent@example.com"));

    // A second run finds nothing more.
    let again = engine.expire_traits(now_ms, &policy).unwrap();
    assert_eq!((again.changed, again.expired.len()), (0, 0));
}
