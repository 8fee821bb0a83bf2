//! The bodies the tests send to Mailchimp's PUT member and SendGrid's PUT contacts are valid
//! per the vendors' OpenAPI documents (copied under `tests/specs/`), and the validator
//! catches the mistakes a connector could make.

use std::path::PathBuf;
use std::sync::LazyLock;

use serde_json::json;
use trib_esp_sim::spec::{OpenApi, SpecError};

use crate::mailchimp_member;
use crate::sendgrid::upsert_body;

const MAILCHIMP_PUT: &str = "/lists/{list_id}/members/{subscriber_hash}";
const SENDGRID_PUT: &str = "/v3/marketing/contacts";

fn spec_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/specs")
        .join(relative)
}

/// Parsed once: the Mailchimp document is 1.6 MB of YAML.
static MAILCHIMP: LazyLock<OpenApi> = LazyLock::new(|| {
    OpenApi::load(spec_path(
        "mailchimp-marketing/openapi.merge-fields-patched.yaml",
    ))
    .expect("Mailchimp spec loads")
});

static SENDGRID: LazyLock<OpenApi> = LazyLock::new(|| {
    OpenApi::load(spec_path(
        "sendgrid-marketing-contacts/tsg_mc_contacts_v3.yaml",
    ))
    .expect("SendGrid spec loads")
});

#[test]
fn mailchimp_member_bodies_match_add_list_members_2() {
    let validator = MAILCHIMP
        .request_validator("PUT", MAILCHIMP_PUT)
        .expect("schema compiles");
    for body in [
        mailchimp_member("ada@example.com", json!({"FNAME": "Ada", "PLAN": "gold"})),
        mailchimp_member("ada@example.com", json!({"LNAME": "Lovelace"})),
        {
            let mut body = mailchimp_member("ada@example.com", json!({}));
            body["status"] = json!("unsubscribed");
            body
        },
    ] {
        validator.validate(&body).expect("valid member body");
    }
    // A concrete path with the API prefix finds the same operation.
    MAILCHIMP
        .validate_request(
            "put",
            "/3.0/lists/list1/members/3e3417d7ef77d5932a6734b916515ed5",
            &mailchimp_member("ada@example.com", json!({})),
        )
        .expect("valid");

    let missing_status = validator.validate(&json!({"email_address": "ada@example.com"}));
    let bad_status = validator.validate(&json!({
        "email_address": "ada@example.com", "status_if_new": "maybe",
    }));
    for result in [missing_status, bad_status] {
        assert!(matches!(result, Err(SpecError::Invalid(_))), "{result:?}");
    }
}

#[test]
fn sendgrid_upsert_bodies_match_the_spec() {
    let validator = SENDGRID
        .request_validator("PUT", SENDGRID_PUT)
        .expect("schema compiles");
    for contacts in [
        json!([{"email": "Ada@Example.com", "first_name": "Ada", "custom_fields": {"e1_T": "gold", "w2_N": 3}}]),
        json!([{"email": "ada@example.com", "last_name": "Lovelace", "custom_fields": {"w2_N": 4}}]),
        json!([{"email": "ada@example.com"}, {"email": "grace@example.com"}]),
    ] {
        validator
            .validate(&upsert_body(contacts))
            .expect("valid upsert body");
    }
    let no_contacts = validator.validate(&json!({"list_ids": []}));
    let bad_list = validator
        .validate(&json!({"list_ids": ["not-a-uuid"], "contacts": [{"email": "a@example.com"}]}));
    let long_name = validator
        .validate(&json!({"contacts": [{"email": "a@example.com", "first_name": "x".repeat(51)}]}));
    for result in [no_contacts, bad_list, long_name] {
        assert!(matches!(result, Err(SpecError::Invalid(_))), "{result:?}");
    }
}
