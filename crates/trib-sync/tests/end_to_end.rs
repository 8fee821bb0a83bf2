//! The sync engine with the real connectors against the ESP simulators, over loopback HTTP:
//! convergence to the desired state under injected faults, isolation of a failing
//! destination, no calls for unchanged profiles, and erasure propagation (issue 6).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;
use trib_config::SyncMode;
use trib_consent::{Suppression, SuppressionScope};
use trib_esp_sim::{Faults, SimKind};
use trib_identity::Keyer;
use trib_store::{ChangeBatch, ProfileRecord, ProfileStore};
use trib_sync::EngineOptions;

use common::{
    Env, Esp, EspSetup, KINDS, Person, document, email, invalid_email, now_ms, profile_id,
    wait_until,
};

/// How long a test waits for the engine to settle before failing.
const SETTLE_LIMIT: Duration = Duration::from_secs(45);

/// Faults summing to 0.3 per request, with every kind the simulator supports.
fn faults(kind: SimKind) -> Faults {
    match kind {
        // A 2xx confirms a webhook delivery, so a receiver that answers 200 without
        // applying (`not_applied`) cannot be detected, and it has no partial answers.
        SimKind::Webhook => Faults {
            throttle: 0.08,
            server_error: 0.10,
            timeout: 0.05,
            reset: 0.07,
            seed: 6,
            ..Faults::default()
        },
        // Mailchimp's `partial` hits the operations of `/batches` calls (on single PUTs it
        // does nothing), and a run makes only a few of them: a higher share.
        SimKind::Mailchimp => Faults {
            throttle: 0.03,
            server_error: 0.04,
            timeout: 0.03,
            reset: 0.03,
            not_applied: 0.05,
            partial: 0.12,
            seed: 6,
        },
        _ => Faults {
            throttle: 0.05,
            server_error: 0.05,
            timeout: 0.04,
            reset: 0.05,
            not_applied: 0.05,
            partial: 0.06,
            seed: 6,
        },
    }
}

/// The value of the trait `bad` that `kind` refuses (see `common::field_names`).
fn refused_value(kind: SimKind) -> Option<serde_json::Value> {
    match kind {
        SimKind::Mailchimp | SimKind::Hubspot => Some(json!("purple")),
        SimKind::Sendgrid => Some(json!("lots")),
        SimKind::Webhook => None,
    }
}

/// A few hundred profiles (some changed twice while the engine runs) and a few records the
/// ESP refuses, against a simulator failing 30% of requests: the simulator ends up holding
/// exactly the desired state and the dead letters are exactly the refused records.
async fn converges_under_faults(kind: SimKind) {
    let env = Env::new();
    let mut setup = EspSetup::new(kind);
    setup.faults = faults(kind);
    // The connector gives up on a held request well before the simulator drops it.
    setup.timeout = Duration::from_millis(500);
    setup.sim = Box::new(|config| {
        config.timeout_hold = Duration::from_millis(1500);
        // SendGrid's 429 says to come back at the end of its fixed window: keep it short.
        if config.kind == SimKind::Sendgrid {
            config.rate_interval = Duration::from_secs(1);
        }
    });
    // Small batches, so that the run makes enough calls for the faults to matter. Mailchimp
    // sends batches of 20 through `/batches` (where `partial` applies) and retries of up to
    // 10 records as single PUTs.
    setup.config = Box::new(move |config| {
        config.max_batch = Some(if kind == SimKind::Mailchimp { 20 } else { 10 })
    });
    setup.mailchimp_batch_threshold = Some(10);
    let esp = setup.start().await;
    let engine = env.start(vec![esp.destination.clone()]);

    let mut valid: BTreeMap<u32, Person> =
        (1..=300).map(|n| (n, Person::new(n, "basic"))).collect();
    let mut invalid: BTreeMap<u32, Person> = BTreeMap::new();
    for n in 1001..=1003 {
        let mut person = Person::new(n, "basic");
        if kind != SimKind::Webhook {
            person.email = invalid_email(n);
            invalid.insert(n, person);
        }
    }
    if let Some(value) = refused_value(kind) {
        for n in 1004..=1005 {
            let mut person = Person::new(n, "basic");
            person.traits.insert("bad".to_owned(), value.clone());
            invalid.insert(n, person);
        }
    }
    let everyone: Vec<(u32, &Person)> = valid
        .iter()
        .chain(invalid.iter())
        .map(|(n, person)| (*n, person))
        .collect();
    env.put_many(&everyone);

    // Changes while the first pushes are in flight or being retried: every fifth profile,
    // one at a time, then every tenth again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in (5..=300).step_by(5) {
        let person = valid.get_mut(&n).expect("person");
        person.traits.insert("plan".to_owned(), json!("pro"));
        env.put(n, person);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    for n in (10..=300).step_by(10) {
        let person = valid.get_mut(&n).expect("person");
        person.traits.insert("plan".to_owned(), json!("enterprise"));
        person
            .traits
            .insert("firstName".to_owned(), json!(format!("Renamed{n}")));
        env.put(n, person);
    }

    wait_until("nothing pending in sync.db", SETTLE_LIMIT, || {
        env.settled(&esp.name)
    })
    .await;
    engine.stop().await;

    let stats = esp.sim.stats();
    let mut met: BTreeMap<String, usize> = BTreeMap::new();
    for request in esp.sim.requests() {
        if let Some(fault) = request.fault {
            *met.entry(fault).or_default() += 1;
        }
    }
    println!("{kind:?}: {stats:?}, faults met: {met:?}");
    assert!(
        stats.injected >= 8,
        "{kind:?}: faults were injected: {stats:?}"
    );
    esp.assert_holds_exactly(&valid);
    let letters = env.dead_letters(&esp.name);
    let dead: BTreeSet<String> = letters.iter().map(|(id, _)| id.clone()).collect();
    let wanted: BTreeSet<String> = invalid.keys().map(|n| profile_id(*n).to_string()).collect();
    assert_eq!(
        dead, wanted,
        "{kind:?}: dead letters are the refused records"
    );
    assert_eq!(letters.len(), wanted.len(), "{kind:?}: one letter each");
    for (_, class) in &letters {
        assert_eq!(class, "invalid_record", "{kind:?}: {letters:?}");
    }
    esp.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailchimp_converges_to_the_desired_state_under_30_percent_faults() {
    converges_under_faults(SimKind::Mailchimp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_converges_to_the_desired_state_under_30_percent_faults() {
    converges_under_faults(SimKind::Hubspot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendgrid_converges_to_the_desired_state_under_30_percent_faults() {
    converges_under_faults(SimKind::Sendgrid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_converges_to_the_desired_state_under_30_percent_faults() {
    converges_under_faults(SimKind::Webhook).await;
}

/// A destination whose ESP fails every call does not hold back a healthy one, and keeps
/// retrying its own records (no dead letter before its retry window ends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_does_not_hold_back_a_healthy_one() {
    let env = Env::new();
    let healthy = EspSetup::new(SimKind::Hubspot).start().await;
    let mut failing = EspSetup::new(SimKind::Mailchimp);
    failing.faults = Faults {
        server_error: 1.0,
        ..Faults::default()
    };
    let failing = failing.start().await;
    let engine = env.start(vec![
        healthy.destination.clone(),
        failing.destination.clone(),
    ]);
    let people: BTreeMap<u32, Person> = (1..=200).map(|n| (n, Person::new(n, "basic"))).collect();
    let all: Vec<(u32, &Person)> = people.iter().map(|(n, person)| (*n, person)).collect();
    env.put_many(&all);

    wait_until(
        "the healthy destination to confirm everyone",
        SETTLE_LIMIT,
        || env.settled(&healthy.name),
    )
    .await;
    healthy.assert_holds_exactly(&people);
    let counts = env.state.counts(&healthy.name).expect("counts");
    assert_eq!(counts.confirmed, 200);

    // The failing one is still retrying: more calls arrive, nothing confirmed or dead.
    let calls = failing.sim.stats().requests;
    wait_until("the failing destination to retry", SETTLE_LIMIT, || {
        failing.sim.stats().requests > calls + 1
    })
    .await;
    let counts = env.state.counts(&failing.name).expect("counts");
    assert_eq!(counts.confirmed, 0, "{counts:?}");
    assert_eq!(counts.pending, 200, "{counts:?}");
    assert_eq!(counts.dead_letters, 0, "{counts:?}");
    assert!(failing.sim.contacts().is_empty());
    engine.stop().await;
}

/// A backlog larger than a feed page is sent in batches of the destination's maximum, not
/// one batch per feed page (a round reads the feed until it can fill every batch in flight).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_sent_in_full_batches_whatever_the_feed_page() {
    let env = Env::new();
    let esp = EspSetup::new(SimKind::Webhook).start().await;
    let engine = env.start_with(
        vec![esp.destination.clone()],
        EngineOptions {
            poll_interval: Duration::from_millis(20),
            feed_page: 100,
            ..EngineOptions::default()
        },
    );
    let people: BTreeMap<u32, Person> = (1..=1000).map(|n| (n, Person::new(n, "basic"))).collect();
    let all: Vec<(u32, &Person)> = people.iter().map(|(n, person)| (*n, person)).collect();
    env.put_many(&all);
    wait_until("the backlog to be sent", SETTLE_LIMIT, || {
        env.settled(&esp.name)
    })
    .await;
    engine.stop().await;
    esp.assert_holds_exactly(&people);
    // The webhook's maximum batch is 500.
    assert_eq!(esp.sim.stats().requests, 2);
}

/// Starts one destination per simulator kind and syncs `people` to all of them.
async fn synced(env: &Env, people: &BTreeMap<u32, Person>) -> (Vec<Esp>, trib_sync::SyncEngine) {
    let mut esps = Vec::new();
    for kind in KINDS {
        esps.push(EspSetup::new(kind).start().await);
    }
    let engine = env.start(esps.iter().map(|esp| esp.destination.clone()).collect());
    let all: Vec<(u32, &Person)> = people.iter().map(|(n, person)| (*n, person)).collect();
    env.put_many(&all);
    wait_until("every destination to settle", SETTLE_LIMIT, || {
        esps.iter().all(|esp| env.settled(&esp.name))
    })
    .await;
    for esp in &esps {
        esp.assert_holds_exactly(people);
    }
    (esps, engine)
}

/// After a full sync, the same documents again (a store re-apply) and every profile
/// re-enqueued (as the scheduled reconcile does) cost no API call at any ESP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_profiles_cause_no_api_calls() {
    let env = Env::new();
    let people: BTreeMap<u32, Person> = (1..=100).map(|n| (n, Person::new(n, "basic"))).collect();
    let (esps, engine) = synced(&env, &people).await;
    let before: Vec<u64> = esps.iter().map(|esp| esp.sim.stats().requests).collect();

    let all: Vec<(u32, &Person)> = people.iter().map(|(n, person)| (*n, person)).collect();
    env.put_many(&all);
    let seq = env.last_seq();
    let reconcile: Vec<_> = people
        .keys()
        .map(|n| (profile_id(*n), seq, now_ms()))
        .collect();
    for esp in &esps {
        env.state
            .enqueue(&esp.name, &reconcile, None, now_ms())
            .expect("enqueue");
    }
    wait_until("the re-enqueued profiles to settle", SETTLE_LIMIT, || {
        esps.iter().all(|esp| env.settled(&esp.name))
    })
    .await;
    let after: Vec<u64> = esps.iter().map(|esp| esp.sim.stats().requests).collect();
    assert_eq!(
        after, before,
        "requests per ESP (mailchimp, hubspot, sendgrid, webhook)"
    );
    engine.stop().await;
}

/// An erasure queued for a synced profile deletes its contact at every ESP and reports
/// `deleted` for each destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_deletes_the_contact_at_every_esp() {
    let env = Env::new();
    let mut people: BTreeMap<u32, Person> =
        (1..=20).map(|n| (n, Person::new(n, "basic"))).collect();
    let (esps, engine) = synced(&env, &people).await;

    let names: Vec<String> = esps.iter().map(|esp| esp.name.clone()).collect();
    let queued = env
        .state
        .queue_erasure("er_1", &names, &[profile_id(7)], &[], now_ms())
        .expect("queue erasure");
    assert!(queued.values().all(|count| *count == 1), "{queued:?}");
    people.remove(&7);
    wait_until("the deletions", SETTLE_LIMIT, || {
        esps.iter().all(|esp| env.settled(&esp.name))
    })
    .await;
    for esp in &esps {
        esp.assert_holds_exactly(&people);
    }
    let status: BTreeMap<String, String> = env
        .state
        .erasure_status("er_1")
        .expect("status")
        .into_iter()
        .map(|deletion| (deletion.destination, deletion.status))
        .collect();
    let expected: BTreeMap<String, String> = names
        .iter()
        .map(|name| (name.clone(), "deleted".to_owned()))
        .collect();
    assert_eq!(status, expected);
    engine.stop().await;
}

/// Mirror mode at every ESP: a suppression removes the person's contact at once and lifting it
/// sends them again, without any profile change; a profile merged into another loses its
/// contact once the survivor has been pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_mode_follows_suppressions_and_merges_at_every_esp() {
    let env = Env::new();
    let mut people: BTreeMap<u32, Person> =
        (1..=20).map(|n| (n, Person::new(n, "basic"))).collect();
    let mut esps = Vec::new();
    for kind in KINDS {
        let mut setup = EspSetup::new(kind);
        setup.config = Box::new(|config| config.mode = SyncMode::Mirror);
        esps.push(setup.start().await);
    }
    let engine = env.start(esps.iter().map(|esp| esp.destination.clone()).collect());
    let all: Vec<(u32, &Person)> = people.iter().map(|(n, person)| (*n, person)).collect();
    env.put_many(&all);
    // The identity graph's entry for person 7's email, which a suppression is keyed by.
    let key = Keyer::new(&[7; 32]).ident_key("email", &email(7));
    env.store
        .apply(&ChangeBatch {
            at_ms: now_ms(),
            identifiers: vec![(key.clone(), Some(profile_id(7)))],
            ..ChangeBatch::default()
        })
        .expect("identifier");
    let settle = |what: &'static str| {
        wait_until(what, SETTLE_LIMIT, || {
            esps.iter().all(|esp| env.settled(&esp.name))
        })
    };
    settle("the first sync").await;
    for esp in &esps {
        esp.assert_holds_exactly(&people);
    }

    env.gate
        .ledger()
        .suppress(&Suppression {
            ident_key: key.clone(),
            scope: SuppressionScope::Global,
            reason: "complaint".to_owned(),
            at_ms: now_ms(),
            source: "api:test".to_owned(),
        })
        .expect("suppress");
    let seven = people.remove(&7).expect("person 7");
    wait_until("the suppressed contact removed", SETTLE_LIMIT, || {
        esps.iter()
            .all(|esp| env.settled(&esp.name) && !esp.held().contains_key(&esp.key(7, &seven)))
    })
    .await;
    for esp in &esps {
        esp.assert_holds_exactly(&people);
    }

    // Person 9 turns out to be person 8, who keeps their email and gets a new plan.
    let eight = Person::new(8, "pro");
    env.store
        .apply(&ChangeBatch {
            at_ms: now_ms(),
            merged: vec![(profile_id(9), profile_id(8))],
            upserts: vec![ProfileRecord {
                id: profile_id(8),
                updated_at_ms: now_ms(),
                doc: document(8, &eight).into(),
            }],
            ..ChangeBatch::default()
        })
        .expect("merge");
    people.remove(&9);
    people.insert(8, eight);
    settle("the merge").await;
    for esp in &esps {
        esp.assert_holds_exactly(&people);
    }

    assert!(
        env.gate
            .ledger()
            .unsuppress(&key, &SuppressionScope::Global)
            .expect("unsuppress")
    );
    people.insert(7, seven);
    wait_until("the person sent again", SETTLE_LIMIT, || {
        esps.iter()
            .all(|esp| env.settled(&esp.name) && esp.held().contains_key(&esp.key(7, &people[&7])))
    })
    .await;
    for esp in &esps {
        esp.assert_holds_exactly(&people);
    }
    engine.stop().await;
}
