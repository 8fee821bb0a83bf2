//! `[sources.webhook]`: the configuration of a webhook source, and its validation.

use std::collections::BTreeMap;
use std::fmt;

use http::HeaderName;
use jiff::SignedDuration;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use trib_core::{EventType, Secret};

use super::mapping::{Condition, Mapping, Test, Text};
use super::path::{JsonPath, Root};
use super::verify::{Key, PayloadPart, TimestampCheck, Verifier};

/// How far a signed timestamp may be from the server's clock when `tolerance` is not set.
pub const DEFAULT_TOLERANCE: SignedDuration = SignedDuration::from_mins(5);

/// How long accepted deliveries are remembered when neither `replay_window` nor a timestamp
/// header is set: the event log's default deduplication window.
pub const DEFAULT_REPLAY_WINDOW: SignedDuration = SignedDuration::from_hours(24);

/// The longest delivery id accepted, in characters (the Segment API's `messageId` limit).
pub const MAX_DELIVERY_ID_CHARS: usize = 100;

/// `[sources.webhook]`: how requests to `POST /v1/webhooks/{source}` are authenticated and
/// turned into events.
///
/// ```toml
/// [sources.webhook]
/// secret = "${SHOP_WEBHOOK_SECRET}"
/// signature_header = "X-Shopify-Hmac-Sha256"
/// algorithm = "sha256"
/// encoding = "base64"
/// delivery_id = { header = "X-Shopify-Webhook-Id" }
///
/// [[sources.webhook.mappings]]
/// when = { header = "X-Shopify-Topic", equals = "orders/create" }
/// type = "track"
/// event = "Order Completed"
/// user_id = "$.customer.id"
/// email = "$.customer.email"
/// timestamp = "$.created_at"
/// properties = { order_id = "$.id", revenue = "$.total_price", currency = "$.currency" }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The shared secret the sender signs with, usually `"${ENV_VAR}"`. Its UTF-8 bytes are the
    /// HMAC key, as GitHub, Shopify, Slack and most senders use it.
    #[serde(deserialize_with = "deserialize_secret")]
    pub secret: Secret<String>,
    /// The header that carries the signature, e.g. `X-Hub-Signature-256` (GitHub),
    /// `X-Shopify-Hmac-Sha256` (Shopify). Matched case-insensitively.
    pub signature_header: String,
    /// The HMAC's hash function: `sha256` (the default), `sha1` or `sha512`.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// How the signature is written: `hex` (the default; either case) or `base64` (standard
    /// alphabet, padding optional).
    #[serde(default)]
    pub encoding: SignatureEncoding,
    /// A prefix the signature header starts with, removed before decoding: `sha256=` (GitHub),
    /// `v0=` (Slack). A header without it is refused as malformed.
    #[serde(default)]
    pub signature_prefix: Option<String>,
    /// A header carrying when the request was signed, as Unix seconds or an RFC 3339 date, e.g.
    /// `X-Slack-Request-Timestamp`. When set, the timestamp must be part of the signed content
    /// (see `signed_payload`) and requests further than `tolerance` from the server's clock are
    /// refused, which bounds how long a captured request can be replayed.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// What exactly is signed, as a template of the placeholders `{body}` (the raw body,
    /// exactly once), `{timestamp}` (the timestamp header as sent) and `{delivery_id}` (a header
    /// delivery id as sent) around literal text. Defaults to `"{body}"`, or
    /// `"{timestamp}.{body}"` when `timestamp_header` is set. Slack: `"v0:{timestamp}:{body}"`;
    /// Standard Webhooks: `"{delivery_id}.{timestamp}.{body}"`.
    #[serde(default)]
    pub signed_payload: Option<String>,
    /// How far the signed timestamp may be from the server's clock, either way, as a duration
    /// (`"5m"`, `"300s"`, `"PT5M"`). Defaults to 5 minutes. Only with `timestamp_header`.
    #[serde(default)]
    pub tolerance: Option<String>,
    /// How long an accepted delivery is remembered to refuse its replay, as a duration.
    /// Defaults to twice the `tolerance` with a timestamp header (older requests are refused as
    /// stale anyway), else to 24 hours.
    #[serde(default)]
    pub replay_window: Option<String>,
    /// Where the sender's unique delivery id is: `{ header = "X-GitHub-Delivery" }` or
    /// `{ path = "$.id" }`. It becomes the events' `messageId` and the key of replay refusal.
    /// Without it, a hash of the body is the `messageId` and the signature is the replay key.
    #[serde(default)]
    pub delivery_id: Option<DeliveryIdConfig>,
    /// How bodies become events; the first mapping whose `when` holds is used.
    #[serde(default)]
    pub mappings: Vec<MappingConfig>,
}

/// The hash function of the HMAC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// HMAC-SHA1 (GitHub's legacy `X-Hub-Signature`, Twilio).
    Sha1,
    /// HMAC-SHA256 (GitHub, Shopify, Slack, Stripe and most others).
    #[default]
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

/// How the signature bytes are written in the header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    /// Hexadecimal, upper or lower case.
    #[default]
    Hex,
    /// Standard base64 (`+` and `/`), with or without `=` padding.
    Base64,
}

/// Where a delivery's unique id is read from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum DeliveryIdConfig {
    /// A request header, e.g. `X-GitHub-Delivery`, `X-Shopify-Webhook-Id`.
    Header(String),
    /// A JSON path into the body, e.g. `$.id` (Stripe's `evt_...`); whole numbers are read as
    /// their decimal string.
    Path(String),
}

/// `[[sources.webhook.mappings]]`: how one kind of body becomes events.
///
/// Fields holding JSON paths use the subset of RFC 9535 that the module docs describe: `$` is
/// the body and, with `each`, `@` is the current element. A path that selects nothing leaves
/// its field out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// A condition on the body or a header, or an array of them that must all hold:
    /// `{ path = "$.topic", equals = "orders/create" }`, `{ header = "X-GitHub-Event",
    /// equals = "push" }`, `{ path = "$.customer", exists = true }`. Without it the mapping
    /// applies to every body. Conditions use `$` paths only.
    #[serde(default)]
    pub when: Option<When>,
    /// A path with a wildcard selecting several elements, e.g. `"$.events[*]"` or `"$[*]"` for a
    /// body that is an array: one event per element, whose paths may use `@` for the element.
    #[serde(default)]
    pub each: Option<String>,
    /// The event type: `identify`, `track`, `page`, `screen`, `group` or `alias`.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The event name, a constant (required for `track`, unless `event_path` is set).
    #[serde(default)]
    pub event: Option<String>,
    /// A path to the event name, e.g. `"$.topic"`.
    #[serde(default)]
    pub event_path: Option<String>,
    /// The page or screen name, a constant.
    #[serde(default)]
    pub name: Option<String>,
    /// A path to the page or screen name.
    #[serde(default)]
    pub name_path: Option<String>,
    /// A path to the `userId`. `user_id` or `anonymous_id` is required.
    #[serde(default)]
    pub user_id: Option<String>,
    /// A path to the `anonymousId`.
    #[serde(default)]
    pub anonymous_id: Option<String>,
    /// A path to the `groupId` (required for `group`).
    #[serde(default)]
    pub group_id: Option<String>,
    /// A path to the `previousId` (required for `alias`).
    #[serde(default)]
    pub previous_id: Option<String>,
    /// A path to an email address: added to `context.externalIds` as `{id, type = "email"}`,
    /// and for `identify` to `traits.email` unless `traits` maps `email` itself.
    #[serde(default)]
    pub email: Option<String>,
    /// A path to a phone number: like `email`, with type `phone`.
    #[serde(default)]
    pub phone: Option<String>,
    /// Further identifiers for `context.externalIds`: `{ shopify_customer_id = "$.customer.id" }`
    /// adds `{id, type = "shopify_customer_id"}`.
    #[serde(default)]
    pub external_ids: BTreeMap<String, String>,
    /// A path to when the event happened: an RFC 3339 date with an offset or whole Unix
    /// seconds. Without it, or when it selects nothing, the event time is `receivedAt`.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// `properties` of the event: `{ name = "path" }`; any JSON value is copied as is.
    #[serde(default)]
    pub properties: Option<BTreeMap<String, String>>,
    /// `traits` of the event: `{ name = "path" }`.
    #[serde(default)]
    pub traits: Option<BTreeMap<String, String>>,
    /// Top-level `context` fields: `{ ip = "$.browser_ip" }`.
    #[serde(default)]
    pub context: BTreeMap<String, String>,
}

/// A mapping's `when`: one condition, or an array of conditions that must all hold.
#[derive(Debug, Clone, PartialEq)]
pub enum When {
    /// `when = { ... }`.
    One(ConditionConfig),
    /// `when = [{ ... }, { ... }]`.
    All(Vec<ConditionConfig>),
}

/// One condition of `when`: exactly one of `path` and `header`, and one of `equals` and `exists`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    /// A `$` path into the body (it must select a single value).
    #[serde(default)]
    pub path: Option<String>,
    /// A request header name.
    #[serde(default)]
    pub header: Option<String>,
    /// The value to compare with: any JSON value for a path (numbers compare by value), a
    /// string for a header (compared exactly).
    #[serde(default)]
    pub equals: Option<Value>,
    /// `true`: the value is present (and, for a path, not `null`); `false`: it is not.
    #[serde(default)]
    pub exists: Option<bool>,
}

/// A validated configuration, ready to run.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) verifier: Verifier,
    pub(crate) delivery_id: Option<DeliveryId>,
    pub(crate) replay_window: SignedDuration,
    pub(crate) mappings: Vec<Mapping>,
    /// Every header some condition tests, once each.
    pub(crate) condition_headers: Vec<HeaderName>,
}

/// Where the delivery id is read from, validated.
#[derive(Debug)]
pub(crate) enum DeliveryId {
    Header(HeaderName),
    Path(JsonPath),
}

impl WebhookConfig {
    /// Returns every problem of the configuration as `(path, message)`, with paths relative to
    /// `[sources.webhook]` (`signature_header`, `mappings[0].user_id`); empty when it is valid.
    /// Messages never contain the secret.
    pub fn validate(&self) -> Vec<(String, String)> {
        match self.compile() {
            Ok(_) => Vec::new(),
            Err(problems) => problems,
        }
    }

    /// Validates and builds the running form, in one pass so the two cannot disagree.
    pub(crate) fn compile(&self) -> Result<Compiled, Vec<(String, String)>> {
        let mut problems = Problems::default();

        let secret = self.secret.expose();
        if secret.is_empty() {
            problems.push("secret", "must not be empty");
        }
        let key = Key::new(self.algorithm, secret.as_bytes());
        if key.is_none() {
            problems.push("secret", "cannot be used as an HMAC key");
        }
        let signature_header = problems.header("signature_header", &self.signature_header);
        if self.signature_prefix.as_deref() == Some("") {
            problems.push(
                "signature_prefix",
                "must not be empty (leave it out instead)",
            );
        }

        let delivery_id = match &self.delivery_id {
            None => None,
            Some(DeliveryIdConfig::Header(name)) => problems
                .header("delivery_id.header", name)
                .map(DeliveryId::Header),
            Some(DeliveryIdConfig::Path(text)) => problems
                .path("delivery_id.path", text, Paths::DOCUMENT_SINGULAR)
                .map(DeliveryId::Path),
        };

        let timestamp_header = self
            .timestamp_header
            .as_ref()
            .and_then(|name| problems.header("timestamp_header", name));
        let tolerance = match &self.tolerance {
            None => DEFAULT_TOLERANCE,
            Some(text) => {
                if self.timestamp_header.is_none() {
                    problems.push("tolerance", "is only used with timestamp_header");
                }
                problems
                    .duration("tolerance", text)
                    .unwrap_or(DEFAULT_TOLERANCE)
            }
        };
        let replay_window = match &self.replay_window {
            Some(text) => problems
                .duration("replay_window", text)
                .unwrap_or(DEFAULT_REPLAY_WINDOW),
            None if self.timestamp_header.is_some() => {
                tolerance.checked_mul(2).unwrap_or(DEFAULT_REPLAY_WINDOW)
            }
            None => DEFAULT_REPLAY_WINDOW,
        };

        let default_payload = if self.timestamp_header.is_some() {
            "{timestamp}.{body}"
        } else {
            "{body}"
        };
        let template = self.signed_payload.as_deref().unwrap_or(default_payload);
        let payload = self.payload(template, &mut problems);

        let mut mappings = Vec::with_capacity(self.mappings.len());
        let mut condition_headers: Vec<HeaderName> = Vec::new();
        if self.mappings.is_empty() {
            problems.push(
                "mappings",
                "at least one mapping is required, or every delivery is quarantined",
            );
        }
        for (index, mapping) in self.mappings.iter().enumerate() {
            let at = format!("mappings[{index}]");
            if let Some(mapping) = mapping.compile(&at, &mut problems) {
                for condition in &mapping.when {
                    if let Condition::Header { name, .. } = condition
                        && !condition_headers.contains(name)
                    {
                        condition_headers.push(name.clone());
                    }
                }
                mappings.push(mapping);
            }
        }

        match (problems.0.is_empty(), key, signature_header, payload) {
            (true, Some(key), Some(signature_header), Some(payload)) => Ok(Compiled {
                verifier: Verifier {
                    key,
                    signature_header,
                    encoding: self.encoding,
                    prefix: self.signature_prefix.clone(),
                    timestamp: timestamp_header.map(|header| TimestampCheck { header, tolerance }),
                    payload,
                },
                delivery_id,
                replay_window,
                mappings,
                condition_headers,
            }),
            _ => Err(problems.0),
        }
    }

    /// Parses the `signed_payload` template and checks it against the other settings.
    fn payload(&self, template: &str, problems: &mut Problems) -> Option<Vec<PayloadPart>> {
        const AT: &str = "signed_payload";
        let mut parts = Vec::new();
        let mut rest = template;
        let mut literal = String::new();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('{') {
                let Some(end) = after.find('}') else {
                    problems.push(AT, "has a `{` without its `}`");
                    return None;
                };
                if !literal.is_empty() {
                    parts.push(PayloadPart::Literal(std::mem::take(&mut literal)));
                }
                let part = match &after[..end] {
                    "body" => PayloadPart::Body,
                    "timestamp" => PayloadPart::Timestamp,
                    "delivery_id" => match &self.delivery_id {
                        Some(DeliveryIdConfig::Header(name)) => {
                            PayloadPart::DeliveryId(HeaderName::from_bytes(name.as_bytes()).ok()?)
                        }
                        Some(DeliveryIdConfig::Path(_)) => {
                            problems.push(
                                AT,
                                "`{delivery_id}` needs a header delivery id (a body one is already signed as part of `{body}`)",
                            );
                            return None;
                        }
                        None => {
                            problems.push(
                                AT,
                                "`{delivery_id}` needs `delivery_id = { header = \"...\" }`",
                            );
                            return None;
                        }
                    },
                    other => {
                        problems.push(
                            AT,
                            format!("unknown placeholder `{{{other}}}`; use {{body}}, {{timestamp}} or {{delivery_id}}"),
                        );
                        return None;
                    }
                };
                parts.push(part);
                rest = &after[end + 1..];
            } else if rest.starts_with('}') {
                problems.push(AT, "has a `}` without its `{`");
                return None;
            } else {
                let end = rest.find(['{', '}']).unwrap_or(rest.len());
                literal.push_str(&rest[..end]);
                rest = &rest[end..];
            }
        }
        if !literal.is_empty() {
            parts.push(PayloadPart::Literal(literal));
        }

        let n_bodies = parts
            .iter()
            .filter(|part| **part == PayloadPart::Body)
            .count();
        let has_timestamp = parts.contains(&PayloadPart::Timestamp);
        if n_bodies != 1 {
            problems.push(AT, "must contain `{body}` exactly once");
        }
        match (has_timestamp, self.timestamp_header.is_some()) {
            (true, false) => problems.push(AT, "`{timestamp}` needs timestamp_header"),
            // An unsigned timestamp could be replaced by an attacker, defeating the tolerance.
            (false, true) => problems.push(
                AT,
                "must contain `{timestamp}` when timestamp_header is set, or the timestamp is not authenticated",
            ),
            _ => {}
        }
        (n_bodies == 1).then_some(parts)
    }
}

impl MappingConfig {
    fn compile(&self, at: &str, problems: &mut Problems) -> Option<Mapping> {
        let n_problems = problems.0.len();
        let each = self.each.as_ref().and_then(|text| {
            let path = problems.path(&format!("{at}.each"), text, Paths::DOCUMENT_MANY)?;
            if path.is_singular() {
                problems.push(
                    &format!("{at}.each"),
                    format!("must select several elements with a wildcard, e.g. \"{text}[*]\""),
                );
                return None;
            }
            Some(path)
        });
        let value_paths = if self.each.is_some() {
            Paths::CURRENT_SINGULAR
        } else {
            Paths::DOCUMENT_SINGULAR
        };
        let mut path = |key: &str, text: &Option<String>| {
            text.as_ref()
                .and_then(|text| problems.path(&format!("{at}.{key}"), text, value_paths))
        };
        let user_id = path("user_id", &self.user_id);
        let anonymous_id = path("anonymous_id", &self.anonymous_id);
        let group_id = path("group_id", &self.group_id);
        let previous_id = path("previous_id", &self.previous_id);
        let email = path("email", &self.email);
        let phone = path("phone", &self.phone);
        let timestamp = path("timestamp", &self.timestamp);
        let event_path = path("event_path", &self.event_path);
        let name_path = path("name_path", &self.name_path);

        let event = text_field(at, "event", &self.event, event_path, problems);
        let name = text_field(at, "name", &self.name, name_path, problems);
        if self.kind == EventType::Track && self.event.is_none() && self.event_path.is_none() {
            problems.push(
                &format!("{at}.event"),
                "a track mapping needs `event` or `event_path`",
            );
        }
        if self.user_id.is_none() && self.anonymous_id.is_none() {
            problems.push(at, "needs `user_id` or `anonymous_id`");
        }
        if self.kind == EventType::Group && self.group_id.is_none() {
            problems.push(&format!("{at}.group_id"), "required for a group mapping");
        }
        if self.kind == EventType::Alias && self.previous_id.is_none() {
            problems.push(
                &format!("{at}.previous_id"),
                "required for an alias mapping",
            );
        }

        let external_ids = problems.fields(
            &format!("{at}.external_ids"),
            &self.external_ids,
            value_paths,
        );
        let properties = self
            .properties
            .as_ref()
            .map(|fields| problems.fields(&format!("{at}.properties"), fields, value_paths));
        let traits = self
            .traits
            .as_ref()
            .map(|fields| problems.fields(&format!("{at}.traits"), fields, value_paths));
        let context = problems.fields(&format!("{at}.context"), &self.context, value_paths);

        let when = match &self.when {
            None => Vec::new(),
            Some(When::One(condition)) => condition_of(&format!("{at}.when"), condition, problems)
                .into_iter()
                .collect(),
            Some(When::All(conditions)) => conditions
                .iter()
                .enumerate()
                .filter_map(|(index, condition)| {
                    condition_of(&format!("{at}.when[{index}]"), condition, problems)
                })
                .collect(),
        };

        (problems.0.len() == n_problems).then_some(Mapping {
            when,
            each,
            kind: self.kind,
            event,
            name,
            user_id,
            anonymous_id,
            group_id,
            previous_id,
            email,
            phone,
            external_ids,
            timestamp,
            properties,
            traits,
            context,
        })
    }
}

fn text_field(
    at: &str,
    key: &str,
    constant: &Option<String>,
    path: Option<JsonPath>,
    problems: &mut Problems,
) -> Option<Text> {
    match (constant, path) {
        (Some(_), Some(_)) => {
            problems.push(
                &format!("{at}.{key}"),
                format!("set `{key}` or `{key}_path`, not both"),
            );
            None
        }
        (Some(constant), None) => {
            if constant.trim().is_empty() {
                problems.push(&format!("{at}.{key}"), "must not be blank");
            }
            Some(Text::Constant(constant.clone()))
        }
        (None, Some(path)) => Some(Text::Path(path)),
        (None, None) => None,
    }
}

fn condition_of(
    at: &str,
    condition: &ConditionConfig,
    problems: &mut Problems,
) -> Option<Condition> {
    let test = match (&condition.equals, condition.exists) {
        (Some(expected), None) => Test::Equals(expected.clone()),
        (None, Some(exists)) => Test::Exists(exists),
        (Some(_), Some(_)) => {
            problems.push(at, "set `equals` or `exists`, not both");
            return None;
        }
        (None, None) => {
            problems.push(at, "needs `equals` or `exists`");
            return None;
        }
    };
    match (&condition.path, &condition.header) {
        (Some(text), None) => {
            let path = problems.path(&format!("{at}.path"), text, Paths::DOCUMENT_SINGULAR)?;
            Some(Condition::Path { path, test })
        }
        (None, Some(name)) => {
            let name = problems.header(&format!("{at}.header"), name)?;
            if let Test::Equals(expected) = &test
                && !expected.is_string()
            {
                problems.push(&format!("{at}.equals"), "must be a string for a header");
                return None;
            }
            Some(Condition::Header { name, test })
        }
        (Some(_), Some(_)) => {
            problems.push(at, "set `path` or `header`, not both");
            None
        }
        (None, None) => {
            problems.push(at, "needs `path` or `header`");
            None
        }
    }
}

/// Which paths a field accepts.
#[derive(Debug, Clone, Copy)]
struct Paths {
    current: bool,
    many: bool,
}

impl Paths {
    const DOCUMENT_SINGULAR: Paths = Paths {
        current: false,
        many: false,
    };
    const DOCUMENT_MANY: Paths = Paths {
        current: false,
        many: true,
    };
    const CURRENT_SINGULAR: Paths = Paths {
        current: true,
        many: false,
    };
}

/// Collects `(path, message)` problems.
#[derive(Debug, Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn push(&mut self, path: &str, message: impl Into<String>) {
        self.0.push((path.to_owned(), message.into()));
    }

    fn header(&mut self, at: &str, name: &str) -> Option<HeaderName> {
        if name.is_empty() {
            self.push(at, "must not be empty");
            return None;
        }
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(header) => Some(header),
            Err(_) => {
                self.push(at, format!("{name:?} is not a valid HTTP header name"));
                None
            }
        }
    }

    fn path(&mut self, at: &str, text: &str, allowed: Paths) -> Option<JsonPath> {
        let path = match JsonPath::parse(text) {
            Ok(path) => path,
            Err(message) => {
                self.push(at, message);
                return None;
            }
        };
        if path.root() == Root::Current && !allowed.current {
            self.push(
                at,
                format!("{text:?} starts with `@`, which is only allowed in the fields of a mapping with `each`"),
            );
            return None;
        }
        if !path.is_singular() && !allowed.many {
            self.push(
                at,
                format!("{text:?} must select a single value (no wildcards)"),
            );
            return None;
        }
        Some(path)
    }

    fn fields(
        &mut self,
        at: &str,
        fields: &BTreeMap<String, String>,
        allowed: Paths,
    ) -> Vec<(String, JsonPath)> {
        let mut compiled = Vec::with_capacity(fields.len());
        for (key, text) in fields {
            let field_at = format!("{at}.{}", toml_key(key));
            if key.trim().is_empty() {
                self.push(&field_at, "the name must not be blank");
                continue;
            }
            if let Some(path) = self.path(&field_at, text, allowed) {
                compiled.push((key.clone(), path));
            }
        }
        compiled
    }

    fn duration(&mut self, at: &str, text: &str) -> Option<SignedDuration> {
        match text.parse::<SignedDuration>() {
            Ok(duration) if duration.is_positive() => Some(duration),
            Ok(_) => {
                self.push(at, format!("must be positive, got {text:?}"));
                None
            }
            Err(_) => {
                self.push(
                    at,
                    format!("must be a duration such as \"5m\" or \"300s\", got {text:?}"),
                );
                None
            }
        }
    }
}

/// Writes a table key as TOML would: bare when it can be, else quoted.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

fn deserialize_secret<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Secret<String>, D::Error> {
    String::deserialize(deserializer).map(Secret::new)
}

impl<'de> Deserialize<'de> for When {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WhenVisitor;

        impl<'de> Visitor<'de> for WhenVisitor {
            type Value = When;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a condition table or an array of condition tables")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<When, A::Error> {
                ConditionConfig::deserialize(MapAccessDeserializer::new(map)).map(When::One)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<When, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(When::All)
            }
        }

        deserializer.deserialize_any(WhenVisitor)
    }
}
