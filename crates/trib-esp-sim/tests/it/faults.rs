use std::time::Duration;

use serde_json::{Value, json};
use trib_esp_sim::{Faults, SimConfig, SimKind, Simulator};

use crate::{body, client, eventually, mailchimp_member, start};

const ADA_HASH: &str = "3e3417d7ef77d5932a6734b916515ed5";

async fn with_faults(kind: SimKind, faults: Faults) -> Simulator {
    let mut config = SimConfig::new(kind);
    config.faults = faults;
    config.sendgrid_job_delay = Duration::from_millis(20);
    config.timeout_hold = Duration::from_secs(5);
    start(config).await
}

async fn put_ada(sim: &Simulator) -> Result<reqwest::Response, reqwest::Error> {
    client()
        .put(format!(
            "{}/3.0/lists/list1/members/{ADA_HASH}",
            sim.base_url()
        ))
        .basic_auth("u", Some("test-key"))
        .json(&mailchimp_member(
            "ada@example.com",
            json!({"FNAME": "Ada"}),
        ))
        .send()
        .await
}

async fn hubspot_upsert(sim: &Simulator, emails: &[&str]) -> reqwest::Response {
    let inputs: Vec<Value> = emails
        .iter()
        .map(|email| json!({"idProperty": "email", "id": email, "properties": {"firstname": "X"}}))
        .collect();
    client()
        .post(format!(
            "{}/crm/v3/objects/contacts/batch/upsert",
            sim.base_url()
        ))
        .bearer_auth("test-key")
        .json(&json!({ "inputs": inputs }))
        .send()
        .await
        .expect("post")
}

fn last_fault(sim: &Simulator) -> Option<String> {
    sim.requests()
        .last()
        .and_then(|request| request.fault.clone())
}

#[tokio::test]
async fn throttle_answers_the_kinds_429_and_counts_as_injected() {
    let sim = with_faults(
        SimKind::Mailchimp,
        Faults {
            throttle: 1.0,
            ..Faults::default()
        },
    )
    .await;
    let response = put_ada(&sim).await.expect("answer");
    assert_eq!(response.status(), 429);
    assert_eq!(body(response).await["title"], "Too Many Requests");
    let stats = sim.stats();
    assert_eq!((stats.injected, stats.limit_refusals), (1, 0));
    assert_eq!(last_fault(&sim).as_deref(), Some("throttle"));
    assert!(sim.contacts().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn server_errors_use_the_kinds_error_body() {
    let sim = with_faults(
        SimKind::Hubspot,
        Faults {
            server_error: 1.0,
            ..Faults::default()
        },
    )
    .await;
    let response = hubspot_upsert(&sim, &["ada@example.com"]).await;
    assert!(matches!(response.status().as_u16(), 500 | 503));
    let error = body(response).await;
    assert_eq!(error["status"], "error");
    assert_eq!(error["category"], "INTERNAL_ERROR");
    assert!(sim.contacts().is_empty());
    assert_eq!(last_fault(&sim).as_deref(), Some("server_error"));
    sim.shutdown().await;
}

#[tokio::test]
async fn reset_drops_the_connection_without_answering() {
    let sim = with_faults(
        SimKind::Mailchimp,
        Faults {
            reset: 1.0,
            ..Faults::default()
        },
    )
    .await;
    let error = put_ada(&sim).await.expect_err("no response");
    assert!(!error.is_timeout(), "{error:?}");
    assert!(
        error.is_request() || error.is_connect() || error.is_body(),
        "{error:?}"
    );
    assert!(sim.contacts().is_empty());
    let recorded = sim.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].status, 0);
    assert_eq!(recorded[0].fault.as_deref(), Some("reset"));
    assert_eq!(sim.stats().injected, 1);

    // The next connection works again once the fault is off.
    sim.set_faults(Faults::default());
    assert_eq!(put_ada(&sim).await.expect("answer").status(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn timeout_holds_the_request() {
    let sim = with_faults(
        SimKind::Mailchimp,
        Faults {
            timeout: 1.0,
            ..Faults::default()
        },
    )
    .await;
    let error = crate::client_builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client")
        .get(format!(
            "{}/3.0/lists/list1/members/{ADA_HASH}",
            sim.base_url()
        ))
        .basic_auth("u", Some("test-key"))
        .send()
        .await
        .expect_err("held");
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(last_fault(&sim).as_deref(), Some("timeout"));
    sim.shutdown().await;
}

#[tokio::test]
async fn partial_fails_a_subset_with_internal_errors_without_applying_it() {
    let sim = with_faults(
        SimKind::Hubspot,
        Faults {
            partial: 1.0,
            seed: 3,
            ..Faults::default()
        },
    )
    .await;
    let emails: Vec<String> = (0..10)
        .map(|index| format!("p{index}@example.com"))
        .collect();
    let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
    let response = hubspot_upsert(&sim, &refs).await;
    assert_eq!(response.status(), 207);
    let answer = body(response).await;
    let errors = answer["errors"].as_array().expect("errors");
    let results = answer["results"].as_array().expect("results");
    assert!(!errors.is_empty());
    assert_eq!(errors.len() + results.len(), 10);
    assert!(
        errors
            .iter()
            .all(|error| error["category"] == "INTERNAL_ERROR")
    );
    let failed: Vec<&str> = errors
        .iter()
        .filter_map(|error| error["context"]["ids"][0].as_str())
        .collect();
    let contacts = sim.contacts();
    assert_eq!(contacts.len(), results.len());
    assert!(failed.iter().all(|email| !contacts.contains_key(*email)));
    assert_eq!(last_fault(&sim).as_deref(), Some("partial"));
    assert_eq!(sim.stats().injected, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn not_applied_answers_success_but_writes_nothing() {
    let faults = Faults {
        not_applied: 1.0,
        ..Faults::default()
    };

    let mailchimp = with_faults(SimKind::Mailchimp, faults).await;
    let response = put_ada(&mailchimp).await.expect("answer");
    assert_eq!(response.status(), 200);
    assert_eq!(body(response).await, json!({}));
    assert!(mailchimp.contacts().is_empty());
    assert_eq!(last_fault(&mailchimp).as_deref(), Some("not_applied"));
    mailchimp.shutdown().await;

    let hubspot = with_faults(SimKind::Hubspot, faults).await;
    let response = hubspot_upsert(&hubspot, &["ada@example.com"]).await;
    assert_eq!(response.status(), 200);
    let answer = body(response).await;
    assert_eq!(answer["status"], "COMPLETE");
    assert_eq!(answer["results"], json!([]));
    assert!(hubspot.contacts().is_empty());
    hubspot.shutdown().await;

    let sendgrid = with_faults(SimKind::Sendgrid, faults).await;
    let accepted = client()
        .put(format!("{}/v3/marketing/contacts", sendgrid.base_url()))
        .bearer_auth("test-key")
        .json(&json!({"contacts": [{"email": "ada@example.com"}]}))
        .send()
        .await
        .expect("put");
    assert_eq!(accepted.status(), 202);
    let job_id = body(accepted).await["job_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let job_url = format!(
        "{}/v3/marketing/contacts/imports/{job_id}",
        sendgrid.base_url()
    );
    let job = eventually(|| {
        let request = client().get(&job_url).bearer_auth("test-key");
        async move {
            let job = body(request.send().await.expect("get")).await;
            (job["status"] != "pending").then_some(job)
        }
    })
    .await;
    assert_eq!(job["status"], "completed");
    assert!(sendgrid.contacts().is_empty());
    assert_eq!(sendgrid.stats().writes_applied, 0);
    sendgrid.shutdown().await;
}

/// Statuses of `n` sequential Mailchimp GETs.
async fn statuses(sim: &Simulator, n: usize) -> Vec<u16> {
    let client = client();
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        let status = client
            .get(format!(
                "{}/3.0/lists/list1/members/{ADA_HASH}",
                sim.base_url()
            ))
            .basic_auth("u", Some("test-key"))
            .send()
            .await
            .map_or(0, |response| response.status().as_u16());
        statuses.push(status);
    }
    statuses
}

#[tokio::test]
async fn seeded_faults_are_reproducible() {
    let faults = Faults {
        throttle: 0.2,
        server_error: 0.2,
        reset: 0.1,
        seed: 7,
        ..Faults::default()
    };
    let first = with_faults(SimKind::Mailchimp, faults).await;
    let run_one = statuses(&first, 30).await;
    let second = with_faults(SimKind::Mailchimp, faults).await;
    let run_two = statuses(&second, 30).await;
    assert_eq!(run_one, run_two);
    assert!(run_one.contains(&429) && run_one.contains(&404) && run_one.contains(&0));
    assert!(run_one.iter().any(|status| matches!(status, 500 | 503)));

    // `set_faults` re-seeds: the same sequence again.
    first.set_faults(faults);
    assert_eq!(statuses(&first, 30).await, run_one);
    let stats = first.stats();
    assert_eq!(stats.limit_refusals, 0);
    assert_eq!(
        stats.injected,
        2 * run_one.iter().filter(|status| **status != 404).count() as u64
    );
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test]
async fn faults_can_be_switched_at_runtime() {
    let sim = with_faults(SimKind::Hubspot, Faults::default()).await;
    assert_eq!(hubspot_upsert(&sim, &["a@example.com"]).await.status(), 200);
    sim.set_faults(Faults {
        throttle: 1.0,
        ..Faults::default()
    });
    let throttled = hubspot_upsert(&sim, &["a@example.com"]).await;
    assert_eq!(throttled.status(), 429);
    assert!(
        throttled
            .headers()
            .contains_key("x-hubspot-ratelimit-remaining")
    );
    assert_eq!(body(throttled).await["policyName"], "TEN_SECONDLY_ROLLING");
    sim.set_faults(Faults::default());
    assert_eq!(hubspot_upsert(&sim, &["a@example.com"]).await.status(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_endpoints_expose_contacts_and_stats() {
    let sim = with_faults(SimKind::Mailchimp, Faults::default()).await;
    put_ada(&sim).await.expect("answer");
    let contacts = body(
        client()
            .get(format!("{}/_sim/contacts", sim.base_url()))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(contacts["ada@example.com"]["id"], ADA_HASH);
    let stats = body(
        client()
            .get(format!("{}/_sim/stats", sim.base_url()))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(stats["requests"], 1);
    assert_eq!(stats["writes_applied"], 1);
    sim.shutdown().await;
}
