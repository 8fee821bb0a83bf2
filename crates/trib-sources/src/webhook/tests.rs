use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::mapping::json_equals;
use super::*;

const BASE: &str = r#"
secret = "s3cr3t"
signature_header = "X-Signature"
[[mappings]]
type = "track"
event = "E"
user_id = "$.user"
"#;

fn config(extra: &str) -> WebhookConfig {
    // Top-level keys must come before the `[[mappings]]` table.
    let text = BASE.replacen("[[mappings]]", &format!("{extra}\n[[mappings]]"), 1);
    toml::from_str(&text).unwrap_or_else(|error| panic!("{error}"))
}

#[track_caller]
fn check_problems(extra: &str, expected: &[(&str, &str)]) {
    let problems = config(extra).validate();
    let problems: Vec<(&str, &str)> = problems
        .iter()
        .map(|(path, message)| (path.as_str(), message.as_str()))
        .collect();
    assert_eq!(problems, expected, "{extra}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[test]
fn the_base_config_is_valid() {
    check_problems("", &[]);
}

#[test]
fn signed_payload_templates_are_checked_against_the_other_settings() {
    check_problems(r#"signed_payload = "{body}""#, &[]);
    check_problems(
        r#"signed_payload = "{body}.{body}""#,
        &[("signed_payload", "must contain `{body}` exactly once")],
    );
    check_problems(
        r#"signed_payload = "{timestamp}""#,
        &[
            ("signed_payload", "must contain `{body}` exactly once"),
            ("signed_payload", "`{timestamp}` needs timestamp_header"),
        ],
    );
    check_problems(
        r#"signed_payload = "{body""#,
        &[("signed_payload", "has a `{` without its `}`")],
    );
    check_problems(
        r#"signed_payload = "}{body}""#,
        &[("signed_payload", "has a `}` without its `{`")],
    );
    check_problems(
        "timestamp_header = \"X-Timestamp\"\nsigned_payload = \"{body}\"",
        &[(
            "signed_payload",
            "must contain `{timestamp}` when timestamp_header is set, or the timestamp is not authenticated",
        )],
    );
    check_problems(
        r#"signed_payload = "{delivery_id}.{body}""#,
        &[(
            "signed_payload",
            "`{delivery_id}` needs `delivery_id = { header = \"...\" }`",
        )],
    );
    check_problems(
        "delivery_id = { path = \"$.id\" }\nsigned_payload = \"{delivery_id}.{body}\"",
        &[(
            "signed_payload",
            "`{delivery_id}` needs a header delivery id (a body one is already signed as part of `{body}`)",
        )],
    );
    check_problems(
        "timestamp_header = \"X-Timestamp\"\ndelivery_id = { header = \"Webhook-Id\" }\nsigned_payload = \"{delivery_id}.{timestamp}.{body}\"",
        &[],
    );
}

#[test]
fn other_config_problems() {
    check_problems(
        "timestamp_header = \"\"\ndelivery_id = { header = \"Bad Header\" }",
        &[
            (
                "delivery_id.header",
                "\"Bad Header\" is not a valid HTTP header name",
            ),
            ("timestamp_header", "must not be empty"),
        ],
    );
    check_problems(
        "timestamp_header = \"X-Timestamp\"\ntolerance = \"0s\"",
        &[("tolerance", "must be positive, got \"0s\"")],
    );
    let mut no_mappings = config("");
    no_mappings.mappings.clear();
    assert_eq!(
        no_mappings.validate(),
        [(
            "mappings".to_owned(),
            "at least one mapping is required, or every delivery is quarantined".to_owned()
        )]
    );
    let mut anonymous = config("");
    anonymous.mappings[0].user_id = None;
    anonymous.mappings[0].kind = trib_core::EventType::Alias;
    anonymous.mappings[0].properties = Some([(" ".to_owned(), "$.x".to_owned())].into());
    anonymous.mappings[0].name = Some(" ".to_owned());
    assert_eq!(
        anonymous.validate(),
        [
            ("mappings[0].name", "must not be blank"),
            ("mappings[0]", "needs `user_id` or `anonymous_id`"),
            ("mappings[0].previous_id", "required for an alias mapping"),
            ("mappings[0].properties.\" \"", "the name must not be blank"),
        ]
        .map(|(path, message)| (path.to_owned(), message.to_owned()))
    );
}

#[test]
fn the_replay_window_follows_the_tolerance_unless_set() {
    let window = |extra: &str| config(extra).compile().unwrap().replay_window;
    assert_eq!(window(""), DEFAULT_REPLAY_WINDOW);
    assert_eq!(
        window("replay_window = \"1h\""),
        SignedDuration::from_hours(1)
    );
    assert_eq!(
        window("timestamp_header = \"X-Timestamp\""),
        SignedDuration::from_mins(10)
    );
    assert_eq!(
        window("timestamp_header = \"X-Timestamp\"\ntolerance = \"30s\""),
        SignedDuration::from_mins(1)
    );
    assert_eq!(
        window("timestamp_header = \"X-Timestamp\"\nreplay_window = \"2h\""),
        SignedDuration::from_hours(2)
    );
}

#[test]
fn a_header_delivery_id_can_be_part_of_the_signed_content() {
    // Standard Webhooks' content (`{id}.{timestamp}.{body}`), with a plain hex signature.
    let source = WebhookSource::new(
        "app",
        &config(
            "timestamp_header = \"Webhook-Timestamp\"\ndelivery_id = { header = \"Webhook-Id\" }\nsigned_payload = \"{delivery_id}.{timestamp}.{body}\"",
        ),
    )
    .unwrap();
    let body = br#"{"user": "u1"}"#;
    let sign = |id: &str| {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"s3cr3t").unwrap();
        mac.update(format!("{id}.1714572000.").as_bytes());
        mac.update(body);
        hex(&mac.finalize().into_bytes())
    };
    let now: Timestamp = "2024-05-01T14:00:30Z".parse().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        "webhook-id",
        HeaderValue::from_static("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
    );
    headers.insert("webhook-timestamp", HeaderValue::from_static("1714572000"));
    headers.insert(
        "x-signature",
        HeaderValue::from_str(&sign("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W")).unwrap(),
    );
    let delivery = source.verify(&headers, body, now).unwrap();
    assert_eq!(
        delivery.delivery_id(),
        Some("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W")
    );

    // Another id under the same signature does not verify.
    headers.insert("webhook-id", HeaderValue::from_static("msg_other"));
    assert_eq!(
        source.verify(&headers, body, now).unwrap_err(),
        WebhookError::BadSignature
    );
    // Without the id, the signed content cannot be built.
    headers.remove("webhook-id");
    assert_eq!(
        source.verify(&headers, body, now).unwrap_err().code(),
        "missing_delivery_id"
    );
}

#[test]
fn the_body_hash_message_id_is_stable_and_short() {
    let id = body_message_id(br#"{"a":1}"#);
    assert_eq!(id, body_message_id(br#"{"a":1}"#));
    assert_ne!(id, body_message_id(br#"{"a": 1}"#));
    assert_eq!(id.len(), BODY_HASH_PREFIX.len() + 32);
    assert!(
        id[BODY_HASH_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
    );
}

#[test]
fn conditions_compare_numbers_by_value() {
    assert!(json_equals(&json!(1), &json!(1.0)));
    assert!(json_equals(
        &json!(820982911946154508_u64),
        &json!(820982911946154508_u64)
    ));
    assert!(!json_equals(&json!("1"), &json!(1)));
    assert!(json_equals(&json!({"a": [1]}), &json!({"a": [1]})));
}

#[test]
fn debug_output_hides_the_secret_and_the_body() {
    let source = WebhookSource::new("app", &config("")).unwrap();
    let debug = format!("{source:?}");
    assert!(!debug.contains("s3cr3t"), "{debug}");

    let body = br#"{"user": "jon@example.com"}"#;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"s3cr3t").unwrap();
    mac.update(body);
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-signature",
        HeaderValue::from_str(&hex(&mac.finalize().into_bytes())).unwrap(),
    );
    let delivery = source
        .verify(&headers, body, Timestamp::UNIX_EPOCH)
        .unwrap();
    let debug = format!("{delivery:?}");
    assert!(!debug.contains("jon@example.com"), "{debug}");
}

#[test]
fn status_hints_by_code() {
    let cases = [
        (WebhookError::BadSignature, 401),
        (WebhookError::Replayed, 409),
        (WebhookError::EmptyBody, 400),
        (
            WebhookError::InvalidConfig {
                problems: Vec::new(),
            },
            500,
        ),
    ];
    for (error, status) in cases {
        assert_eq!(error.status().as_u16(), status, "{}", error.code());
    }
}
