use std::time::Duration;

use serde_json::{Value, json};
use trib_esp_sim::{SimConfig, SimKind, Simulator};

use crate::{body, client, eventually, start};

const CONTACTS: &str = "/v3/marketing/contacts";
const LIST: &str = "2c7e4d8a-6f1b-4c2e-9a3d-5b6c7d8e9f01";

async fn sendgrid() -> Simulator {
    let mut config = SimConfig::new(SimKind::Sendgrid);
    config.sendgrid_job_delay = Duration::from_millis(50);
    start(config).await
}

/// The upsert body the SendGrid tests send (validated against the spec in `spec.rs`).
pub(crate) fn upsert_body(contacts: Value) -> Value {
    json!({"list_ids": [LIST], "contacts": contacts})
}

async fn put(sim: &Simulator, payload: &Value) -> reqwest::Response {
    client()
        .put(format!("{}{CONTACTS}", sim.base_url()))
        .bearer_auth("test-key")
        .json(payload)
        .send()
        .await
        .expect("put")
}

async fn job(sim: &Simulator, id: &str) -> Value {
    body(
        client()
            .get(format!("{}{CONTACTS}/imports/{id}", sim.base_url()))
            .bearer_auth("test-key")
            .send()
            .await
            .expect("get"),
    )
    .await
}

async fn finished_job(sim: &Simulator, id: &str) -> Value {
    eventually(|| async {
        let job = job(sim, id).await;
        (job["status"] != "pending").then_some(job)
    })
    .await
}

async fn search(sim: &Simulator, emails: &[&str]) -> reqwest::Response {
    client()
        .post(format!("{}{CONTACTS}/search/emails", sim.base_url()))
        .bearer_auth("test-key")
        .json(&json!({ "emails": emails }))
        .send()
        .await
        .expect("search")
}

#[tokio::test]
async fn upsert_job_lifecycle_and_search() {
    let sim = sendgrid().await;
    let accepted = put(
        &sim,
        &upsert_body(json!([
            {"email": "Ada@Example.com", "first_name": "Ada", "custom_fields": {"e1_T": "gold", "w2_N": 3}},
        ])),
    )
    .await;
    assert_eq!(accepted.status(), 202);
    let job_id = body(accepted).await["job_id"]
        .as_str()
        .expect("job id")
        .to_owned();
    let pending = job(&sim, &job_id).await;
    assert_eq!(pending["status"], "pending");
    assert_eq!(pending["job_type"], "upsert");
    assert!(sim.contacts().is_empty(), "applied only after the delay");

    let done = finished_job(&sim, &job_id).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["results"]["requested_count"], 1);
    assert_eq!(done["results"]["created_count"], 1);
    assert_eq!(done["results"]["updated_count"], 0);
    assert_eq!(done["results"]["errored_count"], 0);
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());

    // A partial update keeps fields that are left out.
    let second = body(
        put(
            &sim,
            &upsert_body(json!([{"email": "ada@example.com", "last_name": "Lovelace", "custom_fields": {"w2_N": 4}}])),
        )
        .await,
    )
    .await;
    let done = finished_job(&sim, second["job_id"].as_str().expect("job id")).await;
    assert_eq!(done["results"]["updated_count"], 1);

    let contacts = sim.contacts();
    let ada = &contacts["ada@example.com"];
    assert_eq!(ada.fields["first_name"], "Ada");
    assert_eq!(ada.fields["last_name"], "Lovelace");
    assert_eq!(ada.fields["e1_T"], "gold");
    assert_eq!(ada.fields["w2_N"], 4);

    let found = search(&sim, &["ADA@example.com", "nobody@example.com"]).await;
    assert_eq!(found.status(), 200);
    let found = body(found).await;
    let contact = &found["result"]["ada@example.com"]["contact"];
    assert_eq!(contact["id"], ada.id.as_str());
    assert_eq!(contact["email"], "ada@example.com");
    assert_eq!(contact["first_name"], "Ada");
    assert_eq!(contact["list_ids"], json!([LIST]));
    // Read back by field name, as SendGrid does.
    assert_eq!(
        contact["custom_fields"],
        json!({"plan": "gold", "score": 4})
    );
    assert_eq!(
        found["result"]["nobody@example.com"],
        json!({"error": "contact not found"})
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn request_validation_refuses_the_whole_call() {
    let sim = sendgrid().await;
    let cases = [
        (
            json!([{"email": "ada@example.com", "custom_fields": {"x9_T": "?"}}]),
            "contacts[0].custom_fields.x9_T",
        ),
        (json!([{"first_name": "Nobody"}]), "contacts[0]"),
        (
            json!([{"email": "ada@example.com", "shoe": "42"}]),
            "contacts[0].shoe",
        ),
        (
            json!([{"email": "ada@example.com", "custom_fields": {"w2_N": "many"}}]),
            "contacts[0].custom_fields.w2_N",
        ),
        (
            json!([{"email": "ada@example.com", "first_name": "x".repeat(51)}]),
            "contacts[0].first_name",
        ),
        (json!([]), "contacts"),
    ];
    for (contacts, field) in cases {
        let response = put(&sim, &upsert_body(contacts)).await;
        assert_eq!(response.status(), 400, "{field}");
        let errors = body(response).await;
        assert_eq!(errors["errors"][0]["field"], field);
        assert!(errors["errors"][0]["message"].is_string());
    }
    let too_many: Vec<Value> = (0..30_001)
        .map(|index| json!({"external_id": index.to_string()}))
        .collect();
    let response = put(&sim, &json!({ "contacts": too_many })).await;
    assert_eq!(response.status(), 400);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(sim.contacts().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn invalid_emails_error_in_the_job() {
    let sim = sendgrid().await;
    let accepted = body(
        put(
            &sim,
            &upsert_body(json!([{"email": "ada@example.com"}, {"email": "not-an-email"}])),
        )
        .await,
    )
    .await;
    let done = finished_job(&sim, accepted["job_id"].as_str().expect("id")).await;
    assert_eq!(done["status"], "errored");
    assert_eq!(done["results"]["created_count"], 1);
    assert_eq!(done["results"]["errored_count"], 1);
    assert_eq!(sim.contacts().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn delete_job_removes_contacts_by_id() {
    let sim = sendgrid().await;
    let accepted = body(
        put(
            &sim,
            &upsert_body(json!([{"email": "ada@example.com"}, {"email": "grace@example.com"}])),
        )
        .await,
    )
    .await;
    finished_job(&sim, accepted["job_id"].as_str().expect("id")).await;
    let ada_id = sim.contacts()["ada@example.com"].id.clone();

    let response = client()
        .delete(format!("{}{CONTACTS}", sim.base_url()))
        .query(&[("ids", format!("{ada_id},unknown-id"))])
        .bearer_auth("test-key")
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 202);
    let job_id = body(response).await["job_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let done = finished_job(&sim, &job_id).await;
    assert_eq!(done["job_type"], "delete");
    assert_eq!(done["status"], "completed");
    assert_eq!(done["results"]["requested_count"], 2);
    assert_eq!(done["results"]["deleted_count"], 1);
    assert_eq!(
        sim.contacts().keys().collect::<Vec<_>>(),
        ["grace@example.com"]
    );

    let neither = client()
        .delete(format!("{}{CONTACTS}", sim.base_url()))
        .bearer_auth("test-key")
        .send()
        .await
        .expect("delete");
    assert_eq!(neither.status(), 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn search_errors() {
    let sim = sendgrid().await;
    let none = search(&sim, &["nobody@example.com"]).await;
    assert_eq!(none.status(), 404);
    assert!(body(none).await["errors"][0]["message"].is_string());
    let emails: Vec<String> = (0..101)
        .map(|index| format!("p{index}@example.com"))
        .collect();
    let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
    assert_eq!(search(&sim, &refs).await.status(), 400);
    assert_eq!(search(&sim, &["not-an-email"]).await.status(), 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn field_definitions_list_reserved_and_custom_fields() {
    let sim = sendgrid().await;
    let definitions = body(
        client()
            .get(format!("{}/v3/marketing/field_definitions", sim.base_url()))
            .bearer_auth("test-key")
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(
        definitions["custom_fields"],
        json!([
            {"id": "e1_T", "name": "plan", "field_type": "Text"},
            {"id": "w2_N", "name": "score", "field_type": "Number"},
        ])
    );
    let reserved = definitions["reserved_fields"].as_array().expect("array");
    assert!(reserved.iter().any(|field| field["name"] == "first_name"));
    sim.shutdown().await;
}

#[tokio::test]
async fn auth_refusals() {
    let sim = sendgrid().await;
    let url = format!("{}/v3/marketing/field_definitions", sim.base_url());
    for request in [client().get(&url), client().get(&url).bearer_auth("wrong")] {
        let response = request.send().await.expect("get");
        assert_eq!(response.status(), 401);
        assert!(body(response).await["errors"][0]["message"].is_string());
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limit_per_endpoint_with_headers() {
    let mut config = SimConfig::new(SimKind::Sendgrid);
    config.rate_max = Some(3);
    let sim = start(config).await;
    let client = client();
    let url = format!("{}/v3/marketing/field_definitions", sim.base_url());
    for remaining in ["2", "1", "0"] {
        let response = client
            .get(&url)
            .bearer_auth("test-key")
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers["x-ratelimit-limit"], "3");
        assert_eq!(headers["x-ratelimit-remaining"], remaining);
        let reset: u64 = headers["x-ratelimit-reset"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("epoch seconds");
        assert!(reset > 1_700_000_000);
    }
    let refused = client
        .get(&url)
        .bearer_auth("test-key")
        .send()
        .await
        .expect("get");
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(
        body(refused).await,
        json!({"errors": [{"field": null, "message": "too many requests"}]})
    );
    // Another endpoint has its own window.
    let other = search(&sim, &["nobody@example.com"]).await;
    assert_eq!(other.status(), 404);
    assert_eq!(other.headers()["x-ratelimit-remaining"], "2");
    assert_eq!(sim.stats().limit_refusals, 1);
    sim.shutdown().await;
}
