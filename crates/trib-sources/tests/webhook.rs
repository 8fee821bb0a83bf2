//! The webhook source end to end, as the HTTP handler uses it: config from TOML, `verify`,
//! `map`, `mark_accepted`. Signatures are computed here with the same RustCrypto crates, over
//! payloads shaped like real senders' (Shopify, GitHub, Slack, an email provider's batches).

// Test helpers outside #[test] functions unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use jiff::Timestamp;
use serde_json::{Value, json};
use trib_core::{Event, EventType, QuarantinedMessage};
use trib_sources::webhook::{
    MappedEvent, VerifiedDelivery, WebhookConfig, WebhookError, WebhookSource,
};

const SHOP_SECRET: &str = "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";
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

const NOW: &str = "2024-05-01T14:00:05Z";
const RECEIVED: &str = "2024-05-01T14:00:05.250Z";

// ---- helpers ----

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn config(toml_text: &str) -> WebhookConfig {
    toml::from_str(toml_text).unwrap_or_else(|error| panic!("{error}"))
}

fn source(toml_text: &str) -> WebhookSource {
    WebhookSource::new("shop", &config(toml_text)).unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn hmac_sha256(secret: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn hmac_sha1(secret: &str, data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hmac_sha512(secret: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha512>::new_from_slice(secret.as_bytes()).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn object(value: Value) -> trib_core::JsonMap {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

#[track_caller]
fn verified(source: &WebhookSource, headers: &HeaderMap, body: &[u8]) -> VerifiedDelivery {
    source
        .verify(headers, body, ts(NOW))
        .unwrap_or_else(|error| panic!("refused: {} ({error})", error.code()))
}

#[track_caller]
fn refused(source: &WebhookSource, headers: &HeaderMap, body: &[u8], code: &str) -> WebhookError {
    let error = source.verify(headers, body, ts(NOW)).unwrap_err();
    assert_eq!(error.code(), code, "{error}");
    error
}

#[track_caller]
fn event(outcome: &MappedEvent) -> &Event {
    outcome
        .as_ref()
        .unwrap_or_else(|refusal| panic!("quarantined: {} {}", refusal.code, refusal.reason))
}

#[track_caller]
fn quarantined(outcome: &MappedEvent) -> &QuarantinedMessage {
    match outcome {
        Ok(event) => panic!("mapped: {event:?}"),
        Err(quarantined) => quarantined,
    }
}

// ---- Shopify-like: base64 HMAC-SHA256, topic and delivery id in headers ----

const SHOP_CONFIG: &str = r#"
secret = "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"
signature_header = "X-Shopify-Hmac-Sha256"
algorithm = "sha256"
encoding = "base64"
delivery_id = { header = "X-Shopify-Webhook-Id" }

[[mappings]]
when = { header = "X-Shopify-Topic", equals = "orders/create" }
type = "track"
event = "Order Completed"
user_id = "$.customer.id"
email = "$.customer.email"
timestamp = "$.created_at"
properties = { order_id = "$.id", revenue = "$.total_price", currency = "$.currency", products = "$.line_items", discount_codes = "$.missing_field" }
context = { ip = "$.browser_ip" }

[[mappings]]
when = { header = "X-Shopify-Topic", equals = "customers/create" }
type = "identify"
user_id = "$.id"
email = "$.email"
phone = "$.phone"
timestamp = "$.created_at"
traits = { first_name = "$.first_name", last_name = "$.last_name", accepts_marketing = "$.email_marketing_consent.state" }
external_ids = { shopify_customer_id = "$.id" }

[[mappings]]
when = { header = "X-Shopify-Topic", equals = "orders/paid" }
each = "$.line_items[*]"
type = "track"
event = "Product Purchased"
user_id = "$.customer.id"
properties = { order_id = "$.id", sku = "@.sku", price = "@.price", quantity = "@.quantity" }
"#;

fn shop_order() -> Vec<u8> {
    // Pretty-printed on purpose: the signature covers the exact bytes.
    serde_json::to_vec_pretty(&json!({
        "id": 820982911946154508_u64,
        "admin_graphql_api_id": "gid://shopify/Order/820982911946154508",
        "browser_ip": "203.0.113.7",
        "created_at": "2024-05-01T10:00:00-04:00",
        "currency": "USD",
        "email": "jon@example.com",
        "financial_status": "paid",
        "name": "#1001",
        "total_price": "199.00",
        "customer": {
            "id": 115310627314723954_u64,
            "email": "jon@example.com",
            "first_name": "Jon",
            "last_name": "Snow"
        },
        "line_items": [
            {"id": 866550311766439020_u64, "sku": "IPOD-342-N", "title": "IPod Nano", "price": "199.00", "quantity": 1},
            {"id": 141249953214522974_u64, "sku": "CASE-01", "title": "Case", "price": "0.00", "quantity": 2}
        ]
    }))
    .unwrap()
}

fn shop_headers(topic: &str, delivery_id: &str, body: &[u8]) -> HeaderMap {
    let signature = BASE64.encode(hmac_sha256(SHOP_SECRET, &[body]));
    headers(&[
        ("X-Shopify-Topic", topic),
        ("X-Shopify-Hmac-Sha256", &signature),
        ("X-Shopify-Shop-Domain", "example.myshopify.com"),
        ("X-Shopify-Webhook-Id", delivery_id),
        ("Content-Type", "application/json"),
    ])
}

#[test]
fn a_shopify_order_is_verified_and_mapped_to_a_track_event() {
    let source = source(SHOP_CONFIG);
    let body = shop_order();
    let delivery_id = "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043";
    let delivery = verified(
        &source,
        &shop_headers("orders/create", delivery_id, &body),
        &body,
    );
    assert_eq!(delivery.delivery_id(), Some(delivery_id));
    assert_eq!(delivery.message_id(), delivery_id);

    let outcomes = source.map(&delivery, ts(RECEIVED));
    assert_eq!(outcomes.len(), 1);
    let expected = Event {
        message_id: delivery_id.to_owned(),
        source: "shop".to_owned(),
        kind: EventType::Track,
        user_id: Some("115310627314723954".to_owned()),
        anonymous_id: None,
        event: Some("Order Completed".to_owned()),
        name: None,
        category: None,
        group_id: None,
        previous_id: None,
        traits: None,
        properties: Some(object(json!({
            "order_id": 820982911946154508_u64,
            "revenue": "199.00",
            "currency": "USD",
            "products": [
                {"id": 866550311766439020_u64, "sku": "IPOD-342-N", "title": "IPod Nano", "price": "199.00", "quantity": 1},
                {"id": 141249953214522974_u64, "sku": "CASE-01", "title": "Case", "price": "0.00", "quantity": 2}
            ],
        }))),
        context: object(json!({
            "ip": "203.0.113.7",
            "externalIds": [{"id": "jon@example.com", "type": "email"}],
        })),
        integrations: trib_core::JsonMap::new(),
        timestamp: ts("2024-05-01T14:00:00Z"),
        original_timestamp: Some("2024-05-01T10:00:00-04:00".to_owned()),
        sent_at: None,
        received_at: ts(RECEIVED),
        extra: trib_core::JsonMap::new(),
    };
    assert_eq!(event(&outcomes[0]), &expected);

    // The stored form reads like a Segment track call.
    let stored = serde_json::to_value(event(&outcomes[0])).unwrap();
    assert_eq!(stored["type"], "track");
    assert_eq!(stored["messageId"], delivery_id);
    assert_eq!(stored["receivedAt"], "2024-05-01T14:00:05.25Z");
}

#[test]
fn a_shopify_customer_becomes_an_identify_with_traits_and_external_ids() {
    let source = source(SHOP_CONFIG);
    let body = serde_json::to_vec(&json!({
        "id": 706405506930370084_u64,
        "email": "bob@example.com",
        "phone": "+13125551212",
        "created_at": "2024-05-01T09:59:00-04:00",
        "first_name": "Bob",
        "last_name": "Norman",
        "email_marketing_consent": {"state": "subscribed", "opt_in_level": "single_opt_in"}
    }))
    .unwrap();
    let delivery = verified(
        &source,
        &shop_headers(
            "customers/create",
            "0b5c7b7e-5f7a-4a53-9d43-52b43b4d5a8e",
            &body,
        ),
        &body,
    );
    let outcomes = source.map(&delivery, ts(RECEIVED));
    let identify = event(&outcomes[0]);
    assert_eq!(identify.kind, EventType::Identify);
    assert_eq!(identify.user_id.as_deref(), Some("706405506930370084"));
    assert_eq!(identify.event, None);
    assert_eq!(identify.properties, None);
    assert_eq!(
        identify.traits,
        Some(object(json!({
            "first_name": "Bob",
            "last_name": "Norman",
            "accepts_marketing": "subscribed",
            "email": "bob@example.com",
            "phone": "+13125551212",
        })))
    );
    assert_eq!(
        identify.context,
        object(json!({"externalIds": [
            {"id": "bob@example.com", "type": "email"},
            {"id": "+13125551212", "type": "phone"},
            {"id": "706405506930370084", "type": "shopify_customer_id"},
        ]}))
    );
    assert_eq!(identify.timestamp, ts("2024-05-01T13:59:00Z"));
}

#[test]
fn each_fans_out_one_event_per_line_item_with_suffixed_message_ids() {
    let source = source(SHOP_CONFIG);
    let body = shop_order();
    let delivery_id = "6f1e2a1c-31b4-4d8e-9f0a-7c2b8d5e4a10";
    let delivery = verified(
        &source,
        &shop_headers("orders/paid", delivery_id, &body),
        &body,
    );
    let outcomes = source.map(&delivery, ts(RECEIVED));
    assert_eq!(outcomes.len(), 2);
    let first = event(&outcomes[0]);
    let second = event(&outcomes[1]);
    assert_eq!(first.message_id, format!("{delivery_id}-0"));
    assert_eq!(second.message_id, format!("{delivery_id}-1"));
    assert_eq!(first.event.as_deref(), Some("Product Purchased"));
    // `@` reads the element, `$` still reads the whole order.
    assert_eq!(
        first.properties,
        Some(object(
            json!({"order_id": 820982911946154508_u64, "sku": "IPOD-342-N", "price": "199.00", "quantity": 1})
        ))
    );
    assert_eq!(second.properties.as_ref().unwrap()["sku"], "CASE-01");
    assert_eq!(second.user_id.as_deref(), Some("115310627314723954"));
    // No timestamp mapped: the event time is the receipt time.
    assert_eq!(first.timestamp, ts(RECEIVED));
    assert_eq!(first.original_timestamp, None);
}

#[test]
fn a_topic_no_mapping_handles_is_quarantined_as_unmapped() {
    let source = source(SHOP_CONFIG);
    let body = br#"{"id": 1, "title": "Spring"}"#;
    let delivery_id = "41d3c4c2-2f5d-4d52-8a67-0b0c3b7b1f55";
    let delivery = verified(
        &source,
        &shop_headers("collections/create", delivery_id, body),
        body,
    );
    let outcomes = source.map(&delivery, ts(RECEIVED));
    assert_eq!(outcomes.len(), 1);
    let refusal = quarantined(&outcomes[0]);
    assert_eq!(refusal.code, "unmapped");
    assert_eq!(refusal.field, None);
    assert_eq!(
        refusal.reason,
        "no mapping applies to this webhook (3 mappings tried)"
    );
    assert_eq!(refusal.source, "shop");
    assert_eq!(refusal.index, 0);
    assert_eq!(refusal.message_id.as_deref(), Some(delivery_id));
    assert_eq!(refusal.origin.as_deref(), Some("webhook"));
    assert_eq!(refusal.received_at, ts(RECEIVED));
    assert_eq!(refusal.message.get(), r#"{"id": 1, "title": "Spring"}"#);
}

#[test]
fn an_order_without_a_customer_is_quarantined_for_its_missing_identity() {
    let source = source(SHOP_CONFIG);
    let body = br#"{"id": 5, "created_at": "2024-05-01T10:00:00-04:00", "total_price": "5.00"}"#;
    let delivery = verified(&source, &shop_headers("orders/create", "d-5", body), body);
    let refusal = source.map(&delivery, ts(RECEIVED)).remove(0).unwrap_err();
    assert_eq!(refusal.code, "missing_identity");
    assert_eq!(
        refusal.reason,
        "an event needs a userId or an anonymousId: user_id ($.customer.id) selected nothing"
    );
}

#[test]
fn a_bad_timestamp_or_identifier_is_quarantined_with_its_path() {
    let source = source(SHOP_CONFIG);
    let body = br#"{"id": 5, "customer": {"id": 7}, "created_at": "last tuesday"}"#;
    let delivery = verified(&source, &shop_headers("orders/create", "d-6", body), body);
    let refusal = source.map(&delivery, ts(RECEIVED)).remove(0).unwrap_err();
    assert_eq!(refusal.code, "invalid_timestamp");
    assert_eq!(refusal.field.as_deref(), Some("$.created_at"));

    let body = br#"{"id": 5, "customer": {"id": {"nested": true}}}"#;
    let delivery = verified(&source, &shop_headers("orders/create", "d-7", body), body);
    let refusal = source.map(&delivery, ts(RECEIVED)).remove(0).unwrap_err();
    assert_eq!(refusal.code, "invalid_field");
    assert_eq!(refusal.field.as_deref(), Some("$.customer.id"));
    assert_eq!(
        refusal.reason,
        "`userId` ($.customer.id) must be a string or a whole number, got an object"
    );
}

// ---- refusals of the request ----

#[test]
fn a_wrong_signature_is_refused() {
    let source = source(SHOP_CONFIG);
    let body = shop_order();
    let headers = shop_headers("orders/create", "d-1", &body);

    // The body was changed after signing.
    let mut tampered = body.clone();
    let position = tampered.windows(6).position(|w| w == b"199.00").unwrap();
    tampered[position] = b'0';
    let error = refused(&source, &headers, &tampered, "bad_signature");
    assert_eq!(error.status(), http::StatusCode::UNAUTHORIZED);

    // Signed with another secret.
    let mut other = headers.clone();
    let signature = BASE64.encode(hmac_sha256("another secret", &[&body]));
    other.insert(
        "x-shopify-hmac-sha256",
        HeaderValue::from_str(&signature).unwrap(),
    );
    refused(&source, &other, &body, "bad_signature");
}

#[test]
fn a_missing_signature_is_refused() {
    let source = source(SHOP_CONFIG);
    let body = shop_order();
    let mut headers = shop_headers("orders/create", "d-1", &body);
    headers.remove("x-shopify-hmac-sha256");
    let error = refused(&source, &headers, &body, "missing_signature");
    assert_eq!(error.status(), http::StatusCode::UNAUTHORIZED);
    assert_eq!(
        error.to_string(),
        "the request has no `x-shopify-hmac-sha256` signature header"
    );
    headers.insert("x-shopify-hmac-sha256", HeaderValue::from_static("  "));
    refused(&source, &headers, &body, "missing_signature");
}

#[test]
fn a_malformed_signature_is_refused() {
    let source = source(SHOP_CONFIG);
    let body = shop_order();
    let mut headers = shop_headers("orders/create", "d-1", &body);
    let valid = BASE64.encode(hmac_sha256(SHOP_SECRET, &[&body]));
    for (signature, reason) in [
        ("not base64!", "it is not base64"),
        (&valid[..20], "it decodes to 15 bytes, the HMAC has 32"),
        (&valid[..21], "it is not base64"),
        ("AAAA", "it decodes to 3 bytes, the HMAC has 32"),
        (
            &hex(&hmac_sha256(SHOP_SECRET, &[&body])),
            "it decodes to 48 bytes, the HMAC has 32",
        ),
    ] {
        headers.insert(
            "x-shopify-hmac-sha256",
            HeaderValue::from_str(signature).unwrap(),
        );
        let error = refused(&source, &headers, &body, "malformed_signature");
        assert!(error.to_string().ends_with(reason), "{signature}: {error}");
        assert_eq!(error.status(), http::StatusCode::UNAUTHORIZED);
        // The signature itself is never echoed.
        assert!(!error.to_string().contains(signature), "{error}");
    }
    // Unpadded base64 is accepted.
    headers.insert(
        "x-shopify-hmac-sha256",
        HeaderValue::from_str(valid.trim_end_matches('=')).unwrap(),
    );
    verified(&source, &headers, &body);
}

#[test]
fn a_missing_delivery_id_is_refused_after_the_signature() {
    let source = source(SHOP_CONFIG);
    let body = shop_order();
    let mut headers = shop_headers("orders/create", "d-1", &body);
    headers.remove("x-shopify-webhook-id");
    let error = refused(&source, &headers, &body, "missing_delivery_id");
    assert_eq!(error.status(), http::StatusCode::BAD_REQUEST);
    // Without a valid signature the answer is 401, whatever else is missing.
    headers.insert("x-shopify-hmac-sha256", HeaderValue::from_static("AAAA"));
    refused(&source, &headers, &body, "malformed_signature");

    let long = "x".repeat(101);
    let headers = shop_headers("orders/create", &long, &body);
    refused(&source, &headers, &body, "invalid_delivery_id");
}

#[test]
fn a_body_that_is_not_json_is_refused() {
    let source = source(SHOP_CONFIG);
    for (body, code) in [
        (&b"topic=orders/create"[..], "malformed_json"),
        (b"{\"id\": 1", "malformed_json"),
        (b"", "empty_body"),
        (b" \n", "empty_body"),
    ] {
        let headers = shop_headers("orders/create", "d-1", body);
        let error = refused(&source, &headers, body, code);
        assert_eq!(error.status(), http::StatusCode::BAD_REQUEST);
    }
}

#[test]
fn a_replayed_delivery_is_refused_once_it_was_stored() {
    let source = source(SHOP_CONFIG);
    let body = shop_order();
    let headers = shop_headers(
        "orders/create",
        "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        &body,
    );

    // Storing failed, so the delivery was never marked: the sender's retry is accepted.
    verified(&source, &headers, &body);
    let delivery = verified(&source, &headers, &body);
    source.mark_accepted(&delivery, ts(NOW));

    let error = refused(&source, &headers, &body, "replayed_delivery");
    assert_eq!(error.status(), http::StatusCode::CONFLICT);

    // The same delivery id with another topic and body is still the same delivery.
    let other = br#"{"id": 2}"#;
    let headers = shop_headers("orders/paid", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043", other);
    refused(&source, &headers, other, "replayed_delivery");

    // A day later (the default window without a timestamp header), it is forgotten here; the
    // event log's messageId deduplication is what keeps it from being stored twice then.
    let later = ts("2024-05-02T14:00:05Z");
    assert!(source.verify(&headers, other, later).is_ok());

    // Another delivery is not affected.
    let headers = shop_headers(
        "orders/create",
        "2b5d4e1a-0000-4c3b-9d8e-1f2a3b4c5d6e",
        &body,
    );
    verified(&source, &headers, &body);
}

// ---- GitHub-like: `sha256=` prefixed hex, event in a header ----

const GITHUB_CONFIG: &str = r#"
secret = "It's a Secret to Everybody"
signature_header = "X-Hub-Signature-256"
signature_prefix = "sha256="
delivery_id = { header = "X-GitHub-Delivery" }

[[mappings]]
when = [
  { header = "X-GitHub-Event", equals = "issues" },
  { path = "$.action", equals = "opened" },
]
type = "track"
event = "Issue Opened"
user_id = "$.sender.id"
external_ids = { github_login = "$.sender.login" }
properties = { number = "$.issue.number", repository = "$.repository.full_name" }
timestamp = "$.issue.created_at"
"#;

fn github_body() -> &'static [u8] {
    br#"{"action":"opened","issue":{"number":1347,"title":"Found a bug","created_at":"2024-05-01T13:58:00Z"},"repository":{"id":1296269,"full_name":"octocat/Hello-World"},"sender":{"login":"octocat","id":1}}"#
}

fn github_headers(event: &str, body: &[u8]) -> HeaderMap {
    let signature = format!("sha256={}", hex(&hmac_sha256(GITHUB_SECRET, &[body])));
    headers(&[
        ("X-GitHub-Event", event),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("X-Hub-Signature-256", &signature),
        ("User-Agent", "GitHub-Hookshot/044aadd"),
    ])
}

#[test]
fn github_prefixed_hex_signature_is_accepted_and_conditions_combine() {
    let source = source(GITHUB_CONFIG);
    let body = github_body();
    let delivery = verified(&source, &github_headers("issues", body), body);
    let outcomes = source.map(&delivery, ts(RECEIVED));
    let issue = event(&outcomes[0]);
    assert_eq!(issue.message_id, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
    assert_eq!(issue.event.as_deref(), Some("Issue Opened"));
    assert_eq!(issue.user_id.as_deref(), Some("1"));
    assert_eq!(
        issue.properties,
        Some(object(
            json!({"number": 1347, "repository": "octocat/Hello-World"})
        ))
    );
    assert_eq!(
        issue.context,
        object(json!({"externalIds": [{"id": "octocat", "type": "github_login"}]}))
    );
    assert_eq!(issue.timestamp, ts("2024-05-01T13:58:00Z"));

    // Upper-case hex is accepted too.
    let mut upper = github_headers("issues", body);
    let signature = format!(
        "sha256={}",
        hex(&hmac_sha256(GITHUB_SECRET, &[body])).to_uppercase()
    );
    upper.insert(
        "x-hub-signature-256",
        HeaderValue::from_str(&signature).unwrap(),
    );
    verified(&source, &upper, body);

    // Another event type does not meet the header condition.
    let delivery = verified(&source, &github_headers("star", body), body);
    assert_eq!(
        quarantined(&source.map(&delivery, ts(RECEIVED))[0]).code,
        "unmapped"
    );
}

#[test]
fn github_signature_without_its_prefix_is_malformed() {
    let source = source(GITHUB_CONFIG);
    let body = github_body();
    let mut headers = github_headers("issues", body);
    let bare = hex(&hmac_sha256(GITHUB_SECRET, &[body]));
    headers.insert("x-hub-signature-256", HeaderValue::from_str(&bare).unwrap());
    let error = refused(&source, &headers, body, "malformed_signature");
    assert!(
        error
            .to_string()
            .ends_with("it does not start with \"sha256=\""),
        "{error}"
    );
    headers.insert("x-hub-signature-256", HeaderValue::from_static("sha256=zz"));
    refused(&source, &headers, body, "malformed_signature");
}

// ---- Slack-like: signed timestamp, `v0:{timestamp}:{body}`, delivery id in the body ----

const SLACK_CONFIG: &str = r#"
secret = "8f742231b10e8888abcd99yyyzzz85a5"
signature_header = "X-Slack-Signature"
signature_prefix = "v0="
timestamp_header = "X-Slack-Request-Timestamp"
signed_payload = "v0:{timestamp}:{body}"
tolerance = "5m"
delivery_id = { path = "$.event_id" }

[[mappings]]
when = { path = "$.type", equals = "event_callback" }
type = "track"
event_path = "$.event.type"
user_id = "$.event.user"
timestamp = "$.event_time"
properties = { channel = "$.event.channel", team = "$.team_id" }
"#;

fn slack_body() -> &'static [u8] {
    br#"{"token":"XXYYZZ","team_id":"T123ABC456","api_app_id":"A123ABC456","event":{"type":"app_mention","user":"U123ABC456","text":"<@U0LAN0Z89> is it everything a river should be?","ts":"1714571990.000200","channel":"C123ABC456"},"type":"event_callback","event_id":"Ev123ABC456","event_time":1714571990}"#
}

fn slack_headers(timestamp: &str, body: &[u8]) -> HeaderMap {
    let base = format!("v0:{timestamp}:");
    let signature = format!(
        "v0={}",
        hex(&hmac_sha256(SLACK_SECRET, &[base.as_bytes(), body]))
    );
    headers(&[
        ("X-Slack-Request-Timestamp", timestamp),
        ("X-Slack-Signature", &signature),
    ])
}

#[test]
fn a_slack_timestamped_signature_is_accepted_within_the_tolerance() {
    let source = source(SLACK_CONFIG);
    let body = slack_body();
    let now = ts(NOW).as_second();
    for offset in [0, -300, 300, -5] {
        let headers = slack_headers(&(now + offset).to_string(), body);
        verified(&source, &headers, body);
    }
    let delivery = verified(&source, &slack_headers(&now.to_string(), body), body);
    assert_eq!(delivery.delivery_id(), Some("Ev123ABC456"));
    let mention = event(&source.map(&delivery, ts(RECEIVED))[0]).clone();
    assert_eq!(mention.message_id, "Ev123ABC456");
    assert_eq!(mention.event.as_deref(), Some("app_mention"));
    assert_eq!(mention.user_id.as_deref(), Some("U123ABC456"));
    assert_eq!(
        mention.timestamp,
        Timestamp::from_second(1714571990).unwrap()
    );
    assert_eq!(mention.original_timestamp.as_deref(), Some("1714571990"));
    assert_eq!(
        mention.properties,
        Some(object(
            json!({"channel": "C123ABC456", "team": "T123ABC456"})
        ))
    );
}

#[test]
fn a_stale_or_future_timestamp_is_refused() {
    let source = source(SLACK_CONFIG);
    let body = slack_body();
    let now = ts(NOW).as_second();
    let error = refused(
        &source,
        &slack_headers(&(now - 301).to_string(), body),
        body,
        "stale_timestamp",
    );
    assert_eq!(error.status(), http::StatusCode::UNAUTHORIZED);
    assert_eq!(
        error.to_string(),
        "the request was signed 5m 1s behind the server's clock, beyond the tolerance of 5m"
    );
    let error = refused(
        &source,
        &slack_headers(&(now + 3600).to_string(), body),
        body,
        "stale_timestamp",
    );
    assert_eq!(
        error.to_string(),
        "the request was signed 1h ahead of the server's clock, beyond the tolerance of 5m"
    );
}

#[test]
fn a_timestamp_that_is_not_signed_as_sent_is_refused() {
    let source = source(SLACK_CONFIG);
    let body = slack_body();
    let now = ts(NOW).as_second().to_string();
    // A captured request replayed with a fresh timestamp: the signature no longer matches.
    let mut headers = slack_headers("1714000000", body);
    headers.insert(
        "x-slack-request-timestamp",
        HeaderValue::from_str(&now).unwrap(),
    );
    refused(&source, &headers, body, "bad_signature");
}

#[test]
fn a_missing_or_malformed_timestamp_is_refused() {
    let source = source(SLACK_CONFIG);
    let body = slack_body();
    let mut headers = slack_headers(&ts(NOW).as_second().to_string(), body);
    headers.remove("x-slack-request-timestamp");
    let error = refused(&source, &headers, body, "missing_timestamp");
    assert_eq!(error.status(), http::StatusCode::UNAUTHORIZED);
    for bad in [
        "yesterday",
        "-1714571990",
        "1714571990.5",
        "99999999999999999999",
    ] {
        let headers = slack_headers(bad, body);
        refused(&source, &headers, body, "malformed_timestamp");
    }
    // An RFC 3339 timestamp is accepted as well.
    let headers = slack_headers("2024-05-01T14:00:00Z", body);
    verified(&source, &headers, body);
}

#[test]
fn a_replayed_slack_event_id_is_refused_within_twice_the_tolerance() {
    let source = source(SLACK_CONFIG);
    let body = slack_body();
    let signed_at = ts(NOW).as_second();
    let delivery = verified(&source, &slack_headers(&signed_at.to_string(), body), body);
    source.mark_accepted(&delivery, ts(NOW));
    // Slack's retry: the same event id, a new timestamp and signature.
    let retry = slack_headers(&(signed_at + 60).to_string(), body);
    let one_minute_later = ts("2024-05-01T14:01:05Z");
    let error = source.verify(&retry, body, one_minute_later).unwrap_err();
    assert_eq!(error.code(), "replayed_delivery");
    // The replay window is twice the tolerance: after it, the id is forgotten in memory.
    let retry = slack_headers(&(signed_at + 600).to_string(), body);
    assert!(
        source
            .verify(&retry, body, ts("2024-05-01T14:10:05Z"))
            .is_ok()
    );
}

// ---- batches: `each = "$[*]"`, no delivery id, SHA-1 hex, per-element outcomes ----

const BATCH_CONFIG: &str = r#"
secret = "mailer-webhook-secret"
signature_header = "X-Mailer-Signature"
algorithm = "sha1"
encoding = "hex"

[[mappings]]
each = "$[*]"
type = "track"
event_path = "@.event"
user_id = "@.user_id"
email = "@.email"
timestamp = "@.timestamp"
properties = { campaign = "@.category", url = "@.url", provider_event_id = "@.sg_event_id" }
"#;

fn batch_body() -> &'static [u8] {
    br#"[
  {"email":"a@example.com","user_id":"u-1","timestamp":1714571000,"event":"open","category":"newsletter","sg_event_id":"ZWxpdmVyZWQt"},
  {"email":"b@example.com","timestamp":1714571001,"event":"click","url":"https://example.com/sale","sg_event_id":"Y2xpY2st"},
  {"email":"c@example.com","user_id":42,"timestamp":1714571002,"event":"bounce","sg_event_id":"Ym91bmNl"}
]"#
}

#[test]
fn a_batch_maps_each_element_and_quarantines_the_bad_one() {
    let source = source(BATCH_CONFIG);
    let body = batch_body();
    let headers = headers(&[(
        "X-Mailer-Signature",
        &hex(&hmac_sha1("mailer-webhook-secret", body)),
    )]);
    let delivery = verified(&source, &headers, body);
    assert_eq!(delivery.delivery_id(), None);
    let base = delivery.message_id().to_owned();
    assert!(base.starts_with("trib-") && base.len() == 5 + 32, "{base}");

    let outcomes = source.map(&delivery, ts(RECEIVED));
    assert_eq!(outcomes.len(), 3);
    let open = event(&outcomes[0]);
    assert_eq!(open.message_id, format!("{base}-0"));
    assert_eq!(open.event.as_deref(), Some("open"));
    assert_eq!(open.user_id.as_deref(), Some("u-1"));
    assert_eq!(open.timestamp, Timestamp::from_second(1714571000).unwrap());
    assert_eq!(
        open.properties,
        Some(object(
            json!({"campaign": "newsletter", "provider_event_id": "ZWxpdmVyZWQt"})
        ))
    );
    assert_eq!(
        open.context,
        object(json!({"externalIds": [{"id": "a@example.com", "type": "email"}]}))
    );

    let click = quarantined(&outcomes[1]);
    assert_eq!(click.code, "missing_identity");
    assert_eq!(click.index, 1);
    assert_eq!(
        click.message_id.as_deref(),
        Some(format!("{base}-1").as_str())
    );
    let kept: Value = serde_json::from_str(click.message.get()).unwrap();
    assert_eq!(kept["url"], "https://example.com/sale");

    let bounce = event(&outcomes[2]);
    assert_eq!(bounce.user_id.as_deref(), Some("42"));
    assert_eq!(bounce.message_id, format!("{base}-2"));

    // The same body again: refused by its signature, and it would get the same messageIds.
    source.mark_accepted(&delivery, ts(NOW));
    refused(&source, &headers, body, "replayed_delivery");
}

#[test]
fn an_each_that_selects_nothing_is_quarantined() {
    let source = source(BATCH_CONFIG);
    // An empty batch (or a body of another shape) leaves a trace rather than nothing.
    let body = b"[]";
    let headers = headers(&[(
        "X-Mailer-Signature",
        &hex(&hmac_sha1("mailer-webhook-secret", body)),
    )]);
    let delivery = verified(&source, &headers, body);
    let outcomes = source.map(&delivery, ts(RECEIVED));
    let refusal = quarantined(&outcomes[0]);
    assert_eq!(refusal.code, "nothing_selected");
    assert_eq!(refusal.field.as_deref(), Some("$[*]"));
}

// ---- a body topic, `{timestamp}.{body}` by default, SHA-512 base64 ----

#[test]
fn a_body_topic_condition_and_the_default_timestamped_payload() {
    let source = source(
        r#"
        secret = "whsec_shop"
        signature_header = "X-Shop-Hmac-Sha512"
        algorithm = "sha512"
        encoding = "base64"
        timestamp_header = "X-Shop-Timestamp"
        delivery_id = { path = "$.id" }

        [[mappings]]
        when = { path = "$.topic", equals = "orders/create" }
        type = "track"
        event = "Order Completed"
        anonymous_id = "$.payload.browser_id"
        properties = { total = "$.payload.total" }

        [[mappings]]
        when = { path = "$.payload.customer", exists = true }
        type = "identify"
        user_id = "$.payload.customer.id"
        email = "$.payload.customer.email"
        traits = { email = "$.payload.customer.contact_email" }
        "#,
    );
    let signed_at = "1714572000";
    let sign = |body: &[u8]| {
        let signature = hmac_sha512("whsec_shop", &[signed_at.as_bytes(), b".", body]);
        headers(&[
            ("X-Shop-Timestamp", signed_at),
            ("X-Shop-Hmac-Sha512", &BASE64.encode(signature)),
        ])
    };

    let body = br#"{"id": 9001, "topic": "orders/create", "payload": {"browser_id": "anon-7", "total": 12.5}}"#;
    let delivery = verified(&source, &sign(body), body);
    assert_eq!(delivery.delivery_id(), Some("9001"));
    let order = event(&source.map(&delivery, ts(RECEIVED))[0]).clone();
    assert_eq!(order.anonymous_id.as_deref(), Some("anon-7"));
    assert_eq!(order.user_id, None);
    assert_eq!(order.properties, Some(object(json!({"total": 12.5}))));
    assert_eq!(order.context, trib_core::JsonMap::new());

    // The first mapping's condition fails; the second one applies. An explicit trait wins over
    // the identifier's copy.
    let body = br#"{"id": "9002", "topic": "customers/update", "payload": {"customer": {"id": 3, "email": "x@example.com", "contact_email": "y@example.com"}}}"#;
    let delivery = verified(&source, &sign(body), body);
    let identify = event(&source.map(&delivery, ts(RECEIVED))[0]).clone();
    assert_eq!(identify.kind, EventType::Identify);
    assert_eq!(
        identify.traits,
        Some(object(json!({"email": "y@example.com"})))
    );
    assert_eq!(
        identify.context,
        object(json!({"externalIds": [{"id": "x@example.com", "type": "email"}]}))
    );

    // A body delivery id is required.
    let body = br#"{"topic": "orders/create"}"#;
    let error = refused(&source, &sign(body), body, "missing_delivery_id");
    assert_eq!(
        error.to_string(),
        "the request has no delivery id at `$.id`"
    );
}

// ---- configuration ----

#[test]
fn the_documented_example_parses_as_the_webhook_table_of_a_source() {
    #[derive(serde::Deserialize)]
    struct File {
        sources: Vec<RawSource>,
    }
    #[derive(serde::Deserialize)]
    struct RawSource {
        #[allow(dead_code)]
        name: String,
        webhook: WebhookConfig,
    }
    let file: File = toml::from_str(
        r#"
        [[sources]]
        name = "shop"

        [sources.webhook]
        secret = "s3cr3t-from-the-environment"
        signature_header = "X-Shop-Hmac-Sha256"
        algorithm = "sha256"
        encoding = "base64"
        signature_prefix = "sha256="
        timestamp_header = "X-Shop-Timestamp"
        signed_payload = "{timestamp}.{body}"
        tolerance = "5m"
        delivery_id = { header = "X-Shop-Webhook-Id" }

        [[sources.webhook.mappings]]
        when = { path = "$.topic", equals = "orders/create" }
        type = "track"
        event = "Order Completed"
        user_id = "$.customer.id"
        anonymous_id = "$.browser_id"
        email = "$.customer.email"
        timestamp = "$.created_at"
        properties = { order_id = "$.id", revenue = "$.total_price", currency = "$.currency", products = "$.line_items" }
        traits = { first_name = "$.customer.first_name" }
        "#,
    )
    .unwrap();
    let config = &file.sources[0].webhook;
    assert_eq!(config.validate(), Vec::<(String, String)>::new());
    // The secret never shows in debug output.
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cr3t"), "{debug}");
    assert!(WebhookSource::new("shop", config).is_ok());
}

#[test]
fn unknown_fields_are_refused_when_parsing() {
    let error = toml::from_str::<WebhookConfig>(
        r#"
        secret = "s"
        signature_header = "X-Sig"
        algoritm = "sha256"
        "#,
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("unknown field `algoritm`"),
        "{error}"
    );
    let error = toml::from_str::<WebhookConfig>(
        r#"
        secret = "s"
        signature_header = "X-Sig"
        algorithm = "md5"
        "#,
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("unknown variant `md5`"),
        "{error}"
    );
    let error = toml::from_str::<WebhookConfig>(
        r#"
        secret = "s"
        signature_header = "X-Sig"
        [[mappings]]
        type = "track"
        event = "E"
        user_id = "$.u"
        when = { path = "$.a", equal = 1 }
        "#,
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("unknown field `equal`"),
        "{error}"
    );
}

#[test]
fn validation_names_every_problem_with_its_path() {
    let config = config(
        r#"
        secret = ""
        signature_header = "X Sig"
        signature_prefix = ""
        tolerance = "soon"
        replay_window = "-5m"
        signed_payload = "{timestamp}.{payload}"
        delivery_id = { path = "$.events[*].id" }

        [[mappings]]
        type = "track"
        user_id = "@.user"
        properties = { revenue = "total", "unit price" = "$..price" }

        [[mappings]]
        when = [{ path = "$.topic" }, { header = "X-Topic", equals = 5 }, { path = "$.a", header = "X-A", exists = true }]
        each = "$.events"
        type = "group"
        event = "E"
        event_path = "$.name"
        anonymous_id = "@.anon"
        "#,
    );
    let problems = config.validate();
    let expected = [
        ("secret", "must not be empty"),
        (
            "signature_header",
            "\"X Sig\" is not a valid HTTP header name",
        ),
        (
            "signature_prefix",
            "must not be empty (leave it out instead)",
        ),
        (
            "delivery_id.path",
            "\"$.events[*].id\" must select a single value (no wildcards)",
        ),
        ("tolerance", "is only used with timestamp_header"),
        (
            "tolerance",
            "must be a duration such as \"5m\" or \"300s\", got \"soon\"",
        ),
        ("replay_window", "must be positive, got \"-5m\""),
        (
            "signed_payload",
            "unknown placeholder `{payload}`; use {body}, {timestamp} or {delivery_id}",
        ),
        (
            "mappings[0].user_id",
            "\"@.user\" starts with `@`, which is only allowed in the fields of a mapping with `each`",
        ),
        (
            "mappings[0].event",
            "a track mapping needs `event` or `event_path`",
        ),
        (
            "mappings[0].properties.revenue",
            "must start with `$` (or `@`), got \"total\"",
        ),
        (
            "mappings[0].properties.\"unit price\"",
            "descendant segments (`..`) are not supported, in \"$..price\"",
        ),
        (
            "mappings[1].each",
            "must select several elements with a wildcard, e.g. \"$.events[*]\"",
        ),
        ("mappings[1].event", "set `event` or `event_path`, not both"),
        ("mappings[1].group_id", "required for a group mapping"),
        ("mappings[1].when[0]", "needs `equals` or `exists`"),
        (
            "mappings[1].when[1].equals",
            "must be a string for a header",
        ),
        ("mappings[1].when[2]", "set `path` or `header`, not both"),
    ];
    let problems: Vec<(&str, &str)> = problems
        .iter()
        .map(|(path, message)| (path.as_str(), message.as_str()))
        .collect();
    assert_eq!(problems, expected);

    let error = WebhookSource::new("shop", &config).unwrap_err();
    assert_eq!(error.code(), "invalid_webhook_config");
    assert!(
        error
            .to_string()
            .starts_with("invalid webhook configuration: secret: must not be empty; "),
        "{error}"
    );
}
