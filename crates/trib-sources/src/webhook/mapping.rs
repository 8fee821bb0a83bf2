//! Mappings: a verified JSON body in, Segment-style events (or quarantine records) out.

use http::HeaderName;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use trib_core::{Event, EventType, JsonMap, QuarantinedMessage};

use super::MappedEvent;
use super::path::JsonPath;

/// The `origin` of every quarantine record this source writes.
pub(crate) const ORIGIN: &str = "webhook";

/// A validated `[[sources.webhook.mappings]]` entry.
#[derive(Debug)]
pub(crate) struct Mapping {
    pub(crate) when: Vec<Condition>,
    pub(crate) each: Option<JsonPath>,
    pub(crate) kind: EventType,
    pub(crate) event: Option<Text>,
    pub(crate) name: Option<Text>,
    pub(crate) user_id: Option<JsonPath>,
    pub(crate) anonymous_id: Option<JsonPath>,
    pub(crate) group_id: Option<JsonPath>,
    pub(crate) previous_id: Option<JsonPath>,
    pub(crate) email: Option<JsonPath>,
    pub(crate) phone: Option<JsonPath>,
    pub(crate) external_ids: Vec<(String, JsonPath)>,
    pub(crate) timestamp: Option<JsonPath>,
    pub(crate) properties: Option<Vec<(String, JsonPath)>>,
    pub(crate) traits: Option<Vec<(String, JsonPath)>>,
    pub(crate) context: Vec<(String, JsonPath)>,
}

/// A constant string or a path to one.
#[derive(Debug)]
pub(crate) enum Text {
    Constant(String),
    Path(JsonPath),
}

/// One test of a mapping's `when`.
#[derive(Debug)]
pub(crate) enum Condition {
    Path { path: JsonPath, test: Test },
    Header { name: HeaderName, test: Test },
}

#[derive(Debug)]
pub(crate) enum Test {
    Equals(Value),
    Exists(bool),
}

/// Everything a mapping reads besides its configuration.
pub(crate) struct Input<'a> {
    pub(crate) source: &'a str,
    pub(crate) document: &'a Value,
    /// The body as received, kept in quarantine records of whole-body events.
    pub(crate) raw: &'a RawValue,
    /// The values of the headers that conditions test.
    pub(crate) headers: &'a [(HeaderName, Option<String>)],
    /// The delivery's `messageId` (suffixed `-<n>` for each element of an `each`).
    pub(crate) message_id: &'a str,
    pub(crate) received_at: Timestamp,
    /// The sender's delivery id, when the source configures one (kept for replays).
    pub(crate) delivery_id: Option<&'a str>,
    /// The signature header, never kept in a quarantine record even if a condition reads it.
    pub(crate) signature_header: Option<&'a HeaderName>,
}

/// What a webhook quarantine record keeps besides its `message`, so that a replay can map it
/// again with the source's current mappings exactly as at receipt: same `receivedAt` (the
/// record's), same `messageId`s, same header values. The signature was verified at receipt and
/// is not kept (nor the secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DeliveryContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) delivery_id: Option<String>,
    /// The delivery's `messageId`, before any `-<n>` suffix.
    pub(crate) message_id: String,
    /// The values (at receipt) of the headers the mappings' conditions read, the signature
    /// header excepted.
    #[serde(default)]
    pub(crate) headers: Vec<(String, Option<String>)>,
    /// The element's position in `each`; absent for a record that stands for the whole body
    /// (its `message` is then the body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) element: Option<usize>,
    /// The body as received, kept by the first refused element of a delivery only: the
    /// delivery's other refused elements are appended right after it and leave it out, so a
    /// delivery whose elements all fail is not stored once per element.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) body: Option<Box<RawValue>>,
}

impl DeliveryContext {
    fn new(input: &Input<'_>, element: Option<usize>, body: Option<Box<RawValue>>) -> Self {
        Self {
            delivery_id: input.delivery_id.map(str::to_owned),
            message_id: input.message_id.to_owned(),
            headers: input
                .headers
                .iter()
                .filter(|(name, _)| Some(name) != input.signature_header)
                .map(|(name, value)| (name.as_str().to_owned(), value.clone()))
                .collect(),
            element,
            body,
        }
    }
}

/// Maps a body with the first mapping whose `when` holds; see the module docs of `webhook`.
pub(crate) fn map_body(mappings: &[Mapping], input: &Input<'_>) -> Vec<MappedEvent> {
    let Some(mapping) = mappings.iter().find(|mapping| mapping.applies(input)) else {
        let problem = Problem::new(
            "unmapped",
            None,
            format!(
                "no mapping applies to this webhook ({} tried)",
                match mappings.len() {
                    1 => "1 mapping".to_owned(),
                    n => format!("{n} mappings"),
                }
            ),
        );
        return vec![Err(problem.into_quarantined(
            input,
            0,
            input.message_id.to_owned(),
            input.raw.to_owned(),
            DeliveryContext::new(input, None, None),
        ))];
    };
    let Some(each) = &mapping.each else {
        let outcome = mapping.build(input, input.document, input.message_id.to_owned());
        return vec![outcome.map_err(|problem| {
            problem.into_quarantined(
                input,
                0,
                input.message_id.to_owned(),
                input.raw.to_owned(),
                DeliveryContext::new(input, None, None),
            )
        })];
    };
    let elements = each.select_all(input.document, input.document);
    if elements.is_empty() {
        // A wrong `each` path must not drop deliveries without a trace.
        let problem = Problem::new(
            "nothing_selected",
            Some(each.to_string()),
            format!("`each` ({each}) selected no elements"),
        );
        return vec![Err(problem.into_quarantined(
            input,
            0,
            input.message_id.to_owned(),
            input.raw.to_owned(),
            DeliveryContext::new(input, None, None),
        ))];
    }
    let mut outcomes = Vec::with_capacity(elements.len());
    let mut body_kept = false;
    for (index, element) in elements.into_iter().enumerate() {
        let message_id = format!("{}-{index}", input.message_id);
        match mapping.build(input, element, message_id.clone()) {
            Ok(event) => outcomes.push(Ok(event)),
            Err(problem) => {
                // The element alone, re-serialized: its exact bytes are not kept by the parse.
                let raw = serde_json::value::to_raw_value(element)
                    .unwrap_or_else(|_| RawValue::NULL.to_owned());
                let body = (!body_kept).then(|| input.raw.to_owned());
                body_kept = true;
                let context = DeliveryContext::new(input, Some(index), body);
                outcomes.push(Err(
                    problem.into_quarantined(input, index, message_id, raw, context)
                ));
            }
        }
    }
    outcomes
}

impl Mapping {
    fn applies(&self, input: &Input<'_>) -> bool {
        self.when.iter().all(|condition| match condition {
            Condition::Path { path, test } => {
                let value = path.select_one(input.document, input.document);
                match test {
                    Test::Equals(expected) => {
                        value.is_some_and(|value| json_equals(value, expected))
                    }
                    Test::Exists(exists) => value.is_some_and(|value| !value.is_null()) == *exists,
                }
            }
            Condition::Header { name, test } => {
                let value = input
                    .headers
                    .iter()
                    .find(|(header, _)| header == name)
                    .and_then(|(_, value)| value.as_deref());
                match test {
                    Test::Equals(Value::String(expected)) => value == Some(expected.as_str()),
                    // Validation allows only strings for headers.
                    Test::Equals(_) => false,
                    Test::Exists(exists) => value.is_some() == *exists,
                }
            }
        })
    }

    /// Builds one event from `current` (the body, or one element of `each`).
    fn build(
        &self,
        input: &Input<'_>,
        current: &Value,
        message_id: String,
    ) -> Result<Event, Problem> {
        let select = |path: &JsonPath| path.select_one(input.document, current);

        let user_id = self
            .user_id
            .as_ref()
            .map(|path| identifier(path, select(path), "userId"))
            .transpose()?
            .flatten();
        let anonymous_id = self
            .anonymous_id
            .as_ref()
            .map(|path| identifier(path, select(path), "anonymousId"))
            .transpose()?
            .flatten();
        if user_id.is_none() && anonymous_id.is_none() {
            let configured: Vec<String> = [
                ("user_id", &self.user_id),
                ("anonymous_id", &self.anonymous_id),
            ]
            .into_iter()
            .filter_map(|(key, path)| path.as_ref().map(|path| format!("{key} ({path})")))
            .collect();
            return Err(Problem::new(
                "missing_identity",
                None,
                format!(
                    "an event needs a userId or an anonymousId: {} selected nothing",
                    configured.join(" and ")
                ),
            ));
        }

        let event = self.text(self.event.as_ref(), input, current, "event")?;
        if self.kind == EventType::Track && event.is_none() {
            let field = match &self.event {
                Some(Text::Path(path)) => Some(path.to_string()),
                _ => None,
            };
            return Err(Problem::new(
                "missing_event",
                field,
                "a track event needs an event name",
            ));
        }
        let name = self.text(self.name.as_ref(), input, current, "name")?;
        let group_id = self.required_id(
            self.group_id.as_ref(),
            input,
            current,
            "groupId",
            EventType::Group,
        )?;
        let previous_id = self.required_id(
            self.previous_id.as_ref(),
            input,
            current,
            "previousId",
            EventType::Alias,
        )?;

        let email = self
            .email
            .as_ref()
            .map(|path| string(path, select(path), "email"))
            .transpose()?
            .flatten();
        let phone = self
            .phone
            .as_ref()
            .map(|path| string(path, select(path), "phone"))
            .transpose()?
            .flatten();
        let mut external_ids = Vec::new();
        for (kind, value) in [("email", &email), ("phone", &phone)] {
            if let Some(value) = value {
                external_ids.push(json!({"id": value, "type": kind}));
            }
        }
        for (kind, path) in &self.external_ids {
            if let Some(id) = identifier(path, select(path), kind)? {
                external_ids.push(json!({"id": id, "type": kind}));
            }
        }

        let properties = self
            .properties
            .as_ref()
            .map(|fields| object(fields, input.document, current));
        let mut traits = self
            .traits
            .as_ref()
            .map(|fields| object(fields, input.document, current));
        if self.kind == EventType::Identify {
            for (key, value) in [("email", email), ("phone", phone)] {
                if let Some(value) = value {
                    // A trait mapped explicitly wins over the identifier.
                    traits
                        .get_or_insert_with(JsonMap::new)
                        .entry(key)
                        .or_insert(Value::String(value));
                }
            }
        }
        let mut context = object(&self.context, input.document, current);
        if !external_ids.is_empty() {
            context.insert("externalIds".to_owned(), Value::Array(external_ids));
        }

        let (timestamp, original_timestamp) = match &self.timestamp {
            None => (input.received_at, None),
            Some(path) => match select(path) {
                None | Some(Value::Null) => (input.received_at, None),
                Some(value) => {
                    let (parsed, original) = parse_timestamp(path, value)?;
                    // An event cannot have happened after the server received it.
                    (parsed.min(input.received_at), Some(original))
                }
            },
        };

        Ok(Event {
            message_id,
            source: input.source.to_owned(),
            kind: self.kind,
            user_id,
            anonymous_id,
            event,
            name,
            category: None,
            group_id,
            previous_id,
            traits,
            properties,
            context,
            integrations: JsonMap::new(),
            timestamp,
            original_timestamp,
            sent_at: None,
            received_at: input.received_at,
            extra: JsonMap::new(),
        })
    }

    fn text(
        &self,
        text: Option<&Text>,
        input: &Input<'_>,
        current: &Value,
        field: &str,
    ) -> Result<Option<String>, Problem> {
        match text {
            None => Ok(None),
            Some(Text::Constant(value)) => Ok(Some(value.clone())),
            Some(Text::Path(path)) => string(path, path.select_one(input.document, current), field),
        }
    }

    fn required_id(
        &self,
        path: Option<&JsonPath>,
        input: &Input<'_>,
        current: &Value,
        field: &str,
        required_for: EventType,
    ) -> Result<Option<String>, Problem> {
        let Some(path) = path else { return Ok(None) };
        let id = identifier(path, path.select_one(input.document, current), field)?;
        if id.is_none() && self.kind == required_for {
            return Err(Problem::new(
                if required_for == EventType::Group {
                    "missing_group_id"
                } else {
                    "missing_previous_id"
                },
                Some(path.to_string()),
                format!("a {required_for} event needs a {field}: {path} selected nothing"),
            ));
        }
        Ok(id)
    }
}

/// Why one event could not be built.
struct Problem {
    code: &'static str,
    /// The JSON path in the body that is to blame.
    field: Option<String>,
    reason: String,
}

impl Problem {
    fn new(code: &'static str, field: Option<String>, reason: impl Into<String>) -> Self {
        Self {
            code,
            field,
            reason: reason.into(),
        }
    }

    fn wrong_type(path: &JsonPath, field: &str, expected: &str, found: &Value) -> Self {
        Self::new(
            "invalid_field",
            Some(path.to_string()),
            format!(
                "`{field}` ({path}) must be {expected}, got {}",
                trib_core::json_kind(found)
            ),
        )
    }

    fn into_quarantined(
        self,
        input: &Input<'_>,
        index: usize,
        message_id: String,
        raw: Box<RawValue>,
        context: DeliveryContext,
    ) -> QuarantinedMessage {
        // A context is strings and numbers: it always serializes.
        let replay_context = serde_json::value::to_raw_value(&context).ok();
        QuarantinedMessage {
            source: input.source.to_owned(),
            received_at: input.received_at,
            index,
            message_id: Some(message_id),
            field: self.field,
            code: self.code.to_owned(),
            reason: self.reason,
            schema: None,
            origin: Some(ORIGIN.to_owned()),
            message: raw,
            replay_context,
        }
    }
}

/// Reads an identifier: a non-blank string, or a whole number as its decimal string (Shopify
/// and Stripe ids are numbers). Absent, `null` and blank count as no value.
fn identifier(
    path: &JsonPath,
    value: Option<&Value>,
    field: &str,
) -> Result<Option<String>, Problem> {
    const EXPECTED: &str = "a string or a whole number";
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok((!text.trim().is_empty()).then(|| text.clone())),
        Some(Value::Number(number)) if number.is_i64() || number.is_u64() => {
            Ok(Some(number.to_string()))
        }
        Some(other) => Err(Problem::wrong_type(path, field, EXPECTED, other)),
    }
}

/// Reads a string; absent, `null` and blank count as no value.
fn string(path: &JsonPath, value: Option<&Value>, field: &str) -> Result<Option<String>, Problem> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok((!text.trim().is_empty()).then(|| text.clone())),
        Some(other) => Err(Problem::wrong_type(path, field, "a string", other)),
    }
}

/// Builds an object from `key = path` pairs; keys whose path selects nothing are left out.
fn object(fields: &[(String, JsonPath)], document: &Value, current: &Value) -> JsonMap {
    let mut map = JsonMap::new();
    for (key, path) in fields {
        if let Some(value) = path.select_one(document, current) {
            map.insert(key.clone(), value.clone());
        }
    }
    map
}

/// Reads an event time: an RFC 3339 date with an offset (`2024-05-01T10:00:00-04:00`) or whole
/// Unix seconds (`1714564800`). Returns it parsed and as sent.
fn parse_timestamp(path: &JsonPath, value: &Value) -> Result<(Timestamp, String), Problem> {
    let parsed = match value {
        Value::String(text) => text
            .parse::<Timestamp>()
            .ok()
            .map(|parsed| (parsed, text.clone())),
        Value::Number(number) => number
            .as_i64()
            .and_then(|seconds| Timestamp::from_second(seconds).ok())
            .map(|parsed| (parsed, number.to_string())),
        _ => None,
    };
    parsed.ok_or_else(|| {
        let found = match value {
            Value::String(_) => "a string that is not such a date",
            Value::Number(_) => "a number that is not whole Unix seconds in range",
            other => trib_core::json_kind(other),
        };
        Problem::new(
            "invalid_timestamp",
            Some(path.to_string()),
            format!(
                "`timestamp` ({path}) must be an RFC 3339 date with an offset or whole Unix seconds, got {found}"
            ),
        )
    })
}

/// JSON equality, except that numbers compare by value (`1` equals `1.0`).
pub(crate) fn json_equals(value: &Value, expected: &Value) -> bool {
    match (value, expected) {
        (Value::Number(left), Value::Number(right)) if left.is_f64() || right.is_f64() => {
            left.as_f64() == right.as_f64()
        }
        _ => value == expected,
    }
}
