use std::io::Read as _;
use std::time::Duration;

use serde_json::{Value, json};
use trib_esp_sim::{SimConfig, SimKind};

use crate::{body, client, eventually, mailchimp_member, start, start_kind};

const ADA_HASH: &str = "3e3417d7ef77d5932a6734b916515ed5"; // md5("ada@example.com")

fn member_url(base: &str, list: &str, hash: &str) -> String {
    format!("{base}/3.0/lists/{list}/members/{hash}")
}

#[tokio::test]
async fn put_creates_then_updates_keeping_missing_merge_fields_and_status() {
    let sim = start_kind(SimKind::Mailchimp).await;
    let client = client();
    let url = member_url(&sim.base_url(), "list1", ADA_HASH);
    let created = client
        .put(&url)
        .basic_auth("anystring", Some("test-key"))
        .json(&mailchimp_member(
            "Ada@Example.com",
            json!({"FNAME": "Ada", "PLAN": "gold"}),
        ))
        .send()
        .await
        .expect("put");
    assert_eq!(created.status(), 200);
    let created = body(created).await;
    assert_eq!(created["id"], ADA_HASH);
    assert_eq!(created["email_address"], "ada@example.com");
    assert_eq!(created["status"], "subscribed");
    assert_eq!(
        created["merge_fields"],
        json!({"FNAME": "Ada", "LNAME": "", "PLAN": "gold"})
    );
    assert!(created["last_changed"].is_string());

    // Existing member: `status_if_new` ignored, FNAME kept, LNAME set.
    let mut update = mailchimp_member("ada@example.com", json!({"LNAME": "Lovelace"}));
    update["status_if_new"] = json!("unsubscribed");
    let updated = body(
        client
            .put(&url)
            .basic_auth("u", Some("test-key"))
            .json(&update)
            .send()
            .await
            .expect("put"),
    )
    .await;
    assert_eq!(updated["status"], "subscribed");
    assert_eq!(
        updated["merge_fields"],
        json!({"FNAME": "Ada", "LNAME": "Lovelace", "PLAN": "gold"})
    );

    // `status` changes an existing member's status.
    update["status"] = json!("unsubscribed");
    let unsubscribed = body(
        client
            .put(&url)
            .basic_auth("u", Some("test-key"))
            .json(&update)
            .send()
            .await
            .expect("put"),
    )
    .await;
    assert_eq!(unsubscribed["status"], "unsubscribed");

    let fetched = client
        .get(&url)
        .basic_auth("u", Some("test-key"))
        .send()
        .await
        .expect("get");
    assert_eq!(fetched.status(), 200);
    assert_eq!(body(fetched).await["merge_fields"]["LNAME"], "Lovelace");

    let contacts = sim.contacts();
    let ada = &contacts["ada@example.com"];
    assert_eq!(ada.id, ADA_HASH);
    assert_eq!(ada.status.as_deref(), Some("unsubscribed"));
    assert_eq!(ada.fields["PLAN"], "gold");
    assert_eq!(sim.stats().writes_applied, 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn put_refusals_are_problem_documents() {
    let sim = start_kind(SimKind::Mailchimp).await;
    let client = client();
    let base = sim.base_url();
    let put = |url: String, body: Value| {
        let client = client.clone();
        async move {
            client
                .put(url)
                .basic_auth("u", Some("test-key"))
                .json(&body)
                .send()
                .await
                .expect("put")
        }
    };

    // The hash does not match the email.
    let response = put(
        member_url(&base, "list1", "0123456789abcdef0123456789abcdef"),
        mailchimp_member("ada@example.com", json!({})),
    )
    .await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json; charset=utf-8"
    );
    let problem = body(response).await;
    assert_eq!(problem["title"], "Invalid Resource");
    assert_eq!(problem["errors"][0]["field"], "email_address");
    assert!(problem["instance"].is_string());

    // An unknown merge tag.
    let problem = body(
        put(
            member_url(&base, "list1", ADA_HASH),
            mailchimp_member("ada@example.com", json!({"SHOE": "42"})),
        )
        .await,
    )
    .await;
    assert_eq!(problem["status"], 400);
    assert_eq!(
        problem["errors"],
        json!([{"field": "SHOE", "message": "This merge field does not exist on this audience."}])
    );

    // `status_if_new` is required by `Add_List_Members_2`.
    let response = put(
        member_url(&base, "list1", ADA_HASH),
        json!({"email_address": "ada@example.com"}),
    )
    .await;
    assert_eq!(response.status(), 400);
    assert_eq!(body(response).await["errors"][0]["field"], "status_if_new");

    // An unknown list.
    let response = put(
        member_url(&base, "nope", ADA_HASH),
        mailchimp_member("ada@example.com", json!({})),
    )
    .await;
    assert_eq!(response.status(), 404);
    assert_eq!(body(response).await["title"], "Resource Not Found");

    // A member that does not exist.
    let response = client
        .get(member_url(&base, "list1", ADA_HASH))
        .basic_auth("u", Some("test-key"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 404);
    assert!(sim.contacts().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn auth_needs_the_api_key_as_basic_password() {
    let sim = start_kind(SimKind::Mailchimp).await;
    let url = member_url(&sim.base_url(), "list1", ADA_HASH);
    let client = client();
    for request in [
        client.get(&url),
        client.get(&url).basic_auth("anystring", Some("wrong")),
        client.get(&url).bearer_auth("wrong"),
    ] {
        let response = request.send().await.expect("get");
        assert_eq!(response.status(), 401);
        let problem = body(response).await;
        assert_eq!(problem["title"], "API Key Invalid");
        assert_eq!(problem["status"], 401);
    }
    let response = client
        .get(&url)
        .basic_auth("anything-at-all", Some("test-key"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn delete_permanent_forgets_the_email() {
    let sim = start_kind(SimKind::Mailchimp).await;
    let client = client();
    let url = member_url(&sim.base_url(), "list1", ADA_HASH);
    let delete_url = format!("{url}/actions/delete-permanent");
    let absent = client
        .post(&delete_url)
        .basic_auth("u", Some("test-key"))
        .send()
        .await
        .expect("delete");
    assert_eq!(absent.status(), 404);

    let put = client
        .put(&url)
        .basic_auth("u", Some("test-key"))
        .json(&mailchimp_member(
            "ada@example.com",
            json!({"FNAME": "Ada"}),
        ))
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), 200);
    let deleted = client
        .post(&delete_url)
        .basic_auth("u", Some("test-key"))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 204);
    assert!(sim.contacts().is_empty());

    let again = client
        .put(&url)
        .basic_auth("u", Some("test-key"))
        .json(&mailchimp_member("ada@example.com", json!({})))
        .send()
        .await
        .expect("put");
    assert_eq!(again.status(), 400);
    assert_eq!(body(again).await["title"], "Forgotten Email Not Subscribed");
    assert!(sim.contacts().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn merge_fields_lists_the_configured_tags() {
    let sim = start_kind(SimKind::Mailchimp).await;
    let fields = body(
        client()
            .get(format!("{}/3.0/lists/list1/merge-fields", sim.base_url()))
            .basic_auth("u", Some("test-key"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    let tags: Vec<&str> = fields["merge_fields"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|field| field["tag"].as_str())
        .collect();
    assert_eq!(tags, ["FNAME", "LNAME", "PLAN"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_eleventh_simultaneous_request_gets_429() {
    let mut config = SimConfig::new(SimKind::Mailchimp);
    config.response_delay = Duration::from_millis(400);
    let sim = start(config).await;
    let client = client();
    let url = member_url(&sim.base_url(), "list1", ADA_HASH);
    let requests = (0..11).map(|_| {
        let request = client.get(&url).basic_auth("u", Some("test-key"));
        async move {
            let response = request.send().await.expect("get");
            let status = response.status().as_u16();
            (status, body(response).await)
        }
    });
    let answers = futures_join_all(requests).await;
    let throttled: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == 429)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(throttled.len(), 1, "{answers:?}");
    assert_eq!(throttled[0]["title"], "Too Many Requests");
    assert_eq!(
        throttled[0]["detail"],
        "You have exceeded the limit of 10 simultaneous connections."
    );
    assert_eq!(
        answers.iter().filter(|(status, _)| *status == 404).count(),
        10
    );
    let stats = sim.stats();
    assert_eq!(stats.limit_refusals, 1);
    assert_eq!(stats.injected, 0);
    assert_eq!(stats.max_concurrent, 11);
    sim.shutdown().await;
}

/// Runs futures concurrently (one task each) and collects their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}

#[tokio::test]
async fn batches_run_in_the_background_and_return_a_tar_gz() {
    let sim = start_kind(SimKind::Mailchimp).await;
    let client = client();
    let grace_hash = "a1aa8f4cb5eb3a5d7bc1e4e0b0e4a1a9"; // not Grace's hash: refused
    let operations = json!({"operations": [
        {
            "method": "PUT",
            "path": format!("/lists/list1/members/{ADA_HASH}"),
            "body": mailchimp_member("ada@example.com", json!({"FNAME": "Ada"})).to_string(),
            "operation_id": "op-ada",
        },
        {
            "method": "PUT",
            "path": format!("/lists/list1/members/{grace_hash}"),
            "body": mailchimp_member("grace@example.com", json!({})).to_string(),
            "operation_id": "op-grace",
        },
        {
            "method": "GET",
            "path": format!("/lists/list1/members/{ADA_HASH}"),
            "operation_id": "op-read",
        },
    ]});
    let created = client
        .post(format!("{}/3.0/batches", sim.base_url()))
        .basic_auth("u", Some("test-key"))
        .json(&operations)
        .send()
        .await
        .expect("post");
    assert_eq!(created.status(), 200);
    let created = body(created).await;
    assert_eq!(created["status"], "pending");
    assert_eq!(created["total_operations"], 3);
    let id = created["id"].as_str().expect("id").to_owned();

    let batch_url = format!("{}/3.0/batches/{id}", sim.base_url());
    let finished = eventually(|| {
        let request = client.get(&batch_url).basic_auth("u", Some("test-key"));
        async move {
            let batch = body(request.send().await.expect("get")).await;
            (batch["status"] == "finished").then_some(batch)
        }
    })
    .await;
    assert_eq!(finished["finished_operations"], 3);
    assert_eq!(finished["errored_operations"], 1);
    let url = finished["response_body_url"].as_str().expect("url");
    assert!(url.starts_with(&sim.base_url()), "{url}");

    // The archive needs no Mailchimp auth (like the real pre-signed URL).
    let archive = client.get(url).send().await.expect("download");
    assert_eq!(archive.status(), 200);
    let bytes = archive.bytes().await.expect("bytes");
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let mut results = Vec::new();
    for entry in tar.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let mut text = String::new();
        entry.read_to_string(&mut text).expect("read");
        let items: Vec<Value> = serde_json::from_str(&text).expect("JSON array");
        results.extend(items);
    }
    assert_eq!(results.len(), 3);
    let by_operation = |id: &str| {
        results
            .iter()
            .find(|result| result["operation_id"] == id)
            .expect("result")
            .clone()
    };
    let ada = by_operation("op-ada");
    assert_eq!(ada["status_code"], 200);
    let response: Value =
        serde_json::from_str(ada["response"].as_str().expect("string")).expect("member");
    assert_eq!(response["email_address"], "ada@example.com");
    assert_eq!(by_operation("op-grace")["status_code"], 400);
    assert_eq!(by_operation("op-read")["status_code"], 200);
    assert_eq!(sim.contacts().len(), 1);

    let unknown = client
        .get(format!("{}/3.0/batches/nope", sim.base_url()))
        .basic_auth("u", Some("test-key"))
        .send()
        .await
        .expect("get");
    assert_eq!(unknown.status(), 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn archive_removes_the_member_but_lets_the_email_come_back() {
    let sim = start_kind(SimKind::Mailchimp).await;
    let client = client();
    let url = member_url(&sim.base_url(), "list1", ADA_HASH);
    let put = || {
        client
            .put(&url)
            .basic_auth("u", Some("test-key"))
            .json(&mailchimp_member(
                "ada@example.com",
                json!({"FNAME": "Ada"}),
            ))
            .send()
    };
    assert_eq!(put().await.expect("put").status(), 200);
    let archived = client
        .delete(&url)
        .basic_auth("u", Some("test-key"))
        .send()
        .await
        .expect("archive");
    assert_eq!(archived.status(), 204);
    assert!(sim.contacts().is_empty());
    assert_eq!(put().await.expect("put again").status(), 200);
    assert_eq!(sim.contacts().len(), 1);
}
