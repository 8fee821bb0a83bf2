use serde_json::{Value, json};
use trib_esp_sim::{SimConfig, SimKind, Simulator};

use crate::{body, client, start, start_kind};

async fn post(sim: &Simulator, path: &str, payload: &Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", sim.base_url()))
        .bearer_auth("test-key")
        .json(payload)
        .send()
        .await
        .expect("post")
}

fn upsert_input(email: &str, properties: Value) -> Value {
    json!({"idProperty": "email", "id": email, "properties": properties})
}

const UPSERT: &str = "/crm/v3/objects/contacts/batch/upsert";
const READ: &str = "/crm/v3/objects/contacts/batch/read";
const GDPR_DELETE: &str = "/crm/v3/objects/contacts/gdpr-delete";

#[tokio::test]
async fn batch_upsert_creates_then_updates_by_email() {
    let sim = start_kind(SimKind::Hubspot).await;
    let first = post(
        &sim,
        UPSERT,
        &json!({"inputs": [
            upsert_input("Ada@Example.com", json!({"firstname": "Ada", "plan": "gold"})),
            upsert_input("grace@example.com", json!({"firstname": "Grace"})),
        ]}),
    )
    .await;
    assert_eq!(first.status(), 200);
    let first = body(first).await;
    assert_eq!(first["status"], "COMPLETE");
    let results = first["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|result| result["new"] == true));
    assert!(results.iter().all(|result| result["archived"] == false));
    let ada_id = results[0]["id"].as_str().expect("id").to_owned();
    assert!(ada_id.parse::<u64>().is_ok(), "numeric id: {ada_id}");
    assert_eq!(results[0]["properties"]["email"], "ada@example.com");
    assert!(first["startedAt"].is_string() && first["completedAt"].is_string());

    let second = body(
        post(
            &sim,
            UPSERT,
            &json!({"inputs": [upsert_input("ADA@example.com", json!({"lastname": "Lovelace"}))]}),
        )
        .await,
    )
    .await;
    assert_eq!(second["results"][0]["new"], false);
    assert_eq!(second["results"][0]["id"], ada_id.as_str());

    let contacts = sim.contacts();
    let ada = &contacts["ada@example.com"];
    assert_eq!(ada.id, ada_id);
    assert_eq!(ada.fields["firstname"], "Ada");
    assert_eq!(ada.fields["lastname"], "Lovelace");
    assert_eq!(ada.fields["plan"], "gold");
    assert!(!ada.fields.contains_key("email"));
    assert_eq!(sim.stats().writes_applied, 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn invalid_inputs_fail_alone_with_207() {
    let sim = start_kind(SimKind::Hubspot).await;
    let response = post(
        &sim,
        UPSERT,
        &json!({"inputs": [
            upsert_input("ada@example.com", json!({"firstname": "Ada"})),
            upsert_input("grace@example.com", json!({"shoe_size": "42"})),
            upsert_input("not-an-email", json!({"firstname": "X"})),
        ]}),
    )
    .await;
    assert_eq!(response.status(), 207);
    let answer = body(response).await;
    assert_eq!(answer["results"].as_array().expect("results").len(), 1);
    assert_eq!(answer["numErrors"], 2);
    let errors = answer["errors"].as_array().expect("errors");
    assert!(
        errors
            .iter()
            .all(|error| error["status"] == "error" && error["category"] == "VALIDATION_ERROR")
    );
    assert_eq!(errors[0]["context"]["ids"], json!(["grace@example.com"]));
    assert_eq!(errors[0]["errors"][0]["code"], "PROPERTY_DOESNT_EXIST");
    assert_eq!(errors[1]["context"]["ids"], json!(["not-an-email"]));
    assert_eq!(errors[1]["errors"][0]["code"], "INVALID_EMAIL");
    assert_eq!(
        sim.contacts().keys().collect::<Vec<_>>(),
        ["ada@example.com"]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn more_than_100_inputs_is_a_400() {
    let sim = start_kind(SimKind::Hubspot).await;
    let inputs: Vec<Value> = (0..101)
        .map(|index| upsert_input(&format!("p{index}@example.com"), json!({})))
        .collect();
    let response = post(&sim, UPSERT, &json!({ "inputs": inputs })).await;
    assert_eq!(response.status(), 400);
    let error = body(response).await;
    assert_eq!(error["status"], "error");
    assert_eq!(error["category"], "VALIDATION_ERROR");
    assert!(sim.contacts().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn batch_read_returns_found_contacts_and_errors_for_missing() {
    let sim = start_kind(SimKind::Hubspot).await;
    post(
        &sim,
        UPSERT,
        &json!({"inputs": [upsert_input("ada@example.com", json!({"firstname": "Ada"}))]}),
    )
    .await;
    let all_found = post(
        &sim,
        READ,
        &json!({"idProperty": "email", "inputs": [{"id": "ADA@example.com"}],
                "properties": ["firstname", "plan", "email"]}),
    )
    .await;
    assert_eq!(all_found.status(), 200);
    let answer = body(all_found).await;
    let properties = &answer["results"][0]["properties"];
    assert_eq!(properties["firstname"], "Ada");
    assert_eq!(properties["plan"], Value::Null);
    assert_eq!(properties["email"], "ada@example.com");

    let some_missing = post(
        &sim,
        READ,
        &json!({"idProperty": "email", "inputs": [{"id": "ada@example.com"}, {"id": "nobody@example.com"}],
                "properties": ["firstname"]}),
    )
    .await;
    assert_eq!(some_missing.status(), 207);
    let answer = body(some_missing).await;
    assert_eq!(answer["results"].as_array().expect("results").len(), 1);
    assert_eq!(answer["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(
        answer["errors"][0]["context"]["ids"],
        json!(["nobody@example.com"])
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn gdpr_delete_by_id_or_email() {
    let sim = start_kind(SimKind::Hubspot).await;
    let created = body(
        post(
            &sim,
            UPSERT,
            &json!({"inputs": [
                upsert_input("ada@example.com", json!({})),
                upsert_input("grace@example.com", json!({})),
            ]}),
        )
        .await,
    )
    .await;
    let ada_id = created["results"][0]["id"].clone();

    let by_id = post(&sim, GDPR_DELETE, &json!({"objectId": ada_id})).await;
    assert_eq!(by_id.status(), 204);
    let by_email = post(
        &sim,
        GDPR_DELETE,
        &json!({"objectId": "Grace@example.com", "idProperty": "email"}),
    )
    .await;
    assert_eq!(by_email.status(), 204);
    assert!(sim.contacts().is_empty());

    let absent = post(&sim, GDPR_DELETE, &json!({"objectId": ada_id})).await;
    assert_eq!(absent.status(), 404);
    assert_eq!(body(absent).await["category"], "OBJECT_NOT_FOUND");
    sim.shutdown().await;
}

#[tokio::test]
async fn auth_needs_the_bearer_token() {
    let sim = start_kind(SimKind::Hubspot).await;
    let client = client();
    let url = format!("{}{READ}", sim.base_url());
    for request in [client.post(&url), client.post(&url).bearer_auth("wrong")] {
        let response = request
            .json(&json!({"inputs": []}))
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 401);
        let error = body(response).await;
        assert_eq!(error["status"], "error");
        assert_eq!(error["category"], "INVALID_AUTHENTICATION");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limit_headers_and_429_after_100_requests() {
    let sim = start_kind(SimKind::Hubspot).await;
    let client = client();
    let url = format!("{}{READ}", sim.base_url());
    for index in 0..100u32 {
        let response = client
            .post(&url)
            .bearer_auth("test-key")
            .json(&json!({"inputs": []}))
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers["x-hubspot-ratelimit-max"], "100");
        assert_eq!(
            headers["x-hubspot-ratelimit-remaining"],
            (99 - index).to_string().as_str()
        );
        assert_eq!(
            headers["x-hubspot-ratelimit-interval-milliseconds"],
            "10000"
        );
    }
    let refused = client
        .post(&url)
        .bearer_auth("test-key")
        .json(&json!({"inputs": []}))
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["x-hubspot-ratelimit-remaining"], "0");
    let error = body(refused).await;
    assert_eq!(error["errorType"], "RATE_LIMIT");
    assert_eq!(error["policyName"], "TEN_SECONDLY_ROLLING");
    assert_eq!(
        error["message"],
        "You have reached your ten_secondly_rolling limit."
    );
    let stats = sim.stats();
    assert_eq!(stats.limit_refusals, 1);
    assert_eq!(stats.injected, 0);
    assert_eq!(stats.requests, 101);
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limit_is_configurable() {
    let mut config = SimConfig::new(SimKind::Hubspot);
    config.rate_max = Some(2);
    let sim = start(config).await;
    let statuses = {
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(
                post(&sim, READ, &json!({"inputs": []}))
                    .await
                    .status()
                    .as_u16(),
            );
        }
        statuses
    };
    assert_eq!(statuses, [200, 200, 429]);
    sim.shutdown().await;
}
