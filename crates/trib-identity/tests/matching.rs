//! Probabilistic matching over stored profiles: CRM rows that share no identifier are merged
//! above the upper threshold (with provenance) and queued for review between the thresholds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use trib_identity::engine::journal;
use trib_identity::{Engine, IdentityConfig, Keyer, LogEvent};
use trib_store::{EventRef, MemoryStore, ProfileState, ProfileStore};

const FIELDS: [&str; 6] = [
    "first_name",
    "last_name",
    "dob",
    "address",
    "city",
    "postcode",
];

/// Generated people as CRM identify events (one anonymous id per row, so no identifier is
/// shared), and each row's true entity.
fn crm_rows(records: usize) -> (Vec<LogEvent>, BTreeMap<String, String>) {
    let mut csv = Vec::new();
    trib_match::generate(
        records,
        7,
        &mut csv,
        &trib_match::GenerateOptions::default(),
    )
    .unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_slice());
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let mut events = Vec::new();
    let mut truth = BTreeMap::new();
    for (n, row) in reader.records().enumerate() {
        let row = row.unwrap();
        let record_id = row[column("record_id")].to_owned();
        let mut traits = serde_json::Map::new();
        for field in FIELDS {
            let value = &row[column(field)];
            if !value.is_empty() {
                traits.insert(field.to_owned(), json!(value));
            }
        }
        let event = json!({
            "type": "identify", "messageId": format!("crm-{record_id}"), "source": "crm",
            "anonymousId": format!("crm-row-{record_id}"), "traits": traits,
            "timestamp": "2026-03-01T10:00:00Z",
        });
        truth.insert(
            format!("crm-row-{record_id}"),
            row[column("entity_id")].to_owned(),
        );
        events.push(LogEvent {
            at: EventRef {
                partition: 0,
                offset: n as u64,
            },
            payload: Bytes::from(event.to_string()),
        });
    }
    (events, truth)
}

fn rules(lower: f64) -> Arc<trib_identity::IdentityRules> {
    let mut matching = trib_match::MatchConfig::example();
    matching.lower_threshold = lower;
    let mut config: IdentityConfig = serde_json::from_value(json!({})).unwrap();
    config.matching = Some(matching);
    Arc::new(config.rules().unwrap())
}

/// For every active profile, the true entities of the CRM rows it holds.
fn entities_per_profile(
    store: &dyn ProfileStore,
    truth: &BTreeMap<String, String>,
) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for change in store.changes(None, 0, usize::MAX).unwrap() {
        if let Some(ProfileState::Active(record)) = store.get(&change.id).unwrap() {
            let profile = trib_identity::engine::decode(&record).unwrap();
            let entities: Vec<String> = profile
                .identifiers
                .iter()
                .filter_map(|i| truth.get(&i.value).cloned())
                .collect();
            out.push(entities);
        }
    }
    out
}

#[test]
fn matching_merges_likely_duplicates_with_provenance_and_queues_the_uncertain() {
    let (events, truth) = crm_rows(600);
    let store = Arc::new(MemoryStore::new());
    let mut engine = Engine::new(store.clone(), rules(4.0), Keyer::new(&[5; 32])).unwrap();
    engine.process(&events, None).unwrap();
    assert_eq!(
        store.count_active().unwrap(),
        600,
        "no identifier is shared"
    );

    let report = engine.match_profiles().unwrap();
    assert_eq!(report.records, 600);
    assert!(report.merges > 50, "{report:?}");

    // Merges are right: the rows a profile holds are one person's (pairwise precision).
    let groups = entities_per_profile(&*store, &truth);
    let (mut right, mut wrong) = (0u64, 0u64);
    for group in &groups {
        for (i, a) in group.iter().enumerate() {
            for b in &group[i + 1..] {
                if a == b {
                    right += 1;
                } else {
                    wrong += 1;
                }
            }
        }
    }
    assert!(right > 50, "{right} right pairs");
    let precision = right as f64 / (right + wrong) as f64;
    assert!(precision >= 0.95, "precision {precision}");
    assert_eq!(
        store.count_active().unwrap(),
        600 - report.merges,
        "{report:?}"
    );

    // Provenance: the weight and the field agreements behind the merge.
    let merges = store.journal_by_kind(journal::MERGE, 0, 10).unwrap();
    let first: Value = serde_json::from_slice(&merges[0].doc).unwrap();
    assert!(
        first["probabilistic"]["weight"].as_f64().unwrap() >= 10.0,
        "{first}"
    );
    assert!(
        first["probabilistic"]["fields"]["last_name"].is_string(),
        "{first}"
    );

    // A second run compares the merged golden records again (it may find more), never
    // queues a pair twice, and stays precise.
    engine.match_profiles().unwrap();
    let queue = engine.review_queue().unwrap();
    let mut pairs: Vec<(String, String)> = queue
        .iter()
        .map(|i| (i.left.clone(), i.right.clone()))
        .collect();
    pairs.sort();
    let before = pairs.len();
    pairs.dedup();
    assert_eq!(pairs.len(), before, "a pair was queued twice");
    let groups = entities_per_profile(&*store, &truth);
    let wrong: usize = groups
        .iter()
        .map(|g| {
            let mut distinct = g.clone();
            distinct.sort();
            distinct.dedup();
            distinct.len() - 1
        })
        .sum();
    assert!(wrong <= 5, "{wrong} wrong merges after the second run");
}

#[test]
fn review_decisions_merge_or_keep_apart_once() {
    let (events, _) = crm_rows(300);
    let store = Arc::new(MemoryStore::new());
    // A very low lower threshold: every compared pair below the upper one is queued.
    let mut engine = Engine::new(store.clone(), rules(-1000.0), Keyer::new(&[5; 32])).unwrap();
    engine.process(&events, None).unwrap();
    engine.match_profiles().unwrap();
    let queue = engine.review_queue().unwrap();
    assert!(queue.len() >= 2, "{} items", queue.len());
    assert!(queue.windows(2).all(|w| w[0].weight >= w[1].weight));

    let before = store.count_active().unwrap();
    let top = queue[0].clone();
    assert!(engine.decide_review(top.seq, true).unwrap());
    assert_eq!(store.count_active().unwrap(), before - 1);
    let bottom = queue.last().unwrap().clone();
    assert!(!engine.decide_review(bottom.seq, false).unwrap());
    assert_eq!(store.count_active().unwrap(), before - 1);
    let open = engine.review_queue().unwrap();
    assert_eq!(open.len(), queue.len() - 2);
    assert!(open.iter().all(|i| i.seq != top.seq && i.seq != bottom.seq));
    let error = engine.decide_review(top.seq, true).unwrap_err();
    assert!(error.to_string().contains("already decided"), "{error}");
    assert!(engine.decide_review(999_999, true).is_err());
}
