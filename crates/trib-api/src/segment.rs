//! The Segment HTTP Tracking API wire format: request bodies in, canonical [`Event`]s out.
//!
//! A handler uses this module in three steps:
//!
//! 1. [`parse_envelope`] reads the body. Only request-level problems fail here (not JSON, not an
//!    object, no `batch` array, a `writeKey` that is not a string, ...): the whole request is
//!    answered `400` with [`RequestError::code`].
//! 2. The handler authenticates with [`Envelope::write_key`] (or the `Authorization` header).
//! 3. [`Envelope::into_messages`] validates and normalizes every message. It gives one outcome per
//!    message, in order: an [`Event`] for the event log or a [`Rejection`] for the quarantine.
//!    One bad message never fails its batch.
//!
//! Batch items are kept as raw JSON slices until step 3, so the per-message size limit is checked
//! on each item's exact bytes before the item is parsed, and a rejection keeps the item exactly as
//! it was received.
//!
//! # Decisions
//!
//! Sources: Segment's "HTTP API Source" page (`segment-docs`,
//! `src/connections/sources/catalog/libraries/server/http-api/index.md`, "HTTP API" below),
//! "Spec: Common Fields" (`src/connections/spec/common.md`, "Common Fields" below) and its field
//! tables (`src/_includes/content/spec-field-*.md`), and rudder-server's gateway and processor,
//! the other implementation official SDKs talk to.
//!
//! * **Type.** A batch item must carry `type`, one of `identify`, `track`, `page`, `screen`,
//!   `group`, `alias`, spelled exactly so (HTTP API, Batch: "Each call **must** have an `type`
//!   property with a valid method name"). Absent, `null` or `""` → `missing_type`; any other
//!   string → `unknown_type`. On a single-message route a missing type comes from the route; a
//!   different one is rejected (`invalid_type`) instead of overwritten as rudder-server's gateway
//!   does (`sjson.SetBytes(body, "type", reqType)`): no SDK sends a mismatch, and overwriting would
//!   silently file, say, a track call as an identify.
//! * **Identity.** `userId` or `anonymousId` is required (spec-field-user-id: "A userId or an
//!   anonymousId is required"), else `missing_identity`. `null`, `""` and whitespace-only strings
//!   count as absent, as in rudder-server's gateway (`strings.TrimSpace(...) == ""`). Strings are
//!   kept as sent, not trimmed. Whole-number JSON numbers become their decimal string (`42` →
//!   `"42"`), as rudder-server (`stringify.Any`) and analytics-python do; fractional numbers are
//!   rejected (`invalid_field`): `1e3` and `1000` would otherwise name different people, and
//!   numbers past 2^64 lose digits. Objects, arrays and booleans are rejected (`invalid_field`).
//!   The same rules apply to `groupId` and `previousId`.
//! * **Required per type.** `track` needs a non-blank string `event` (`missing_event`; HTTP API,
//!   Errors: "All Track events sent to Segment must have an `event` field"); `group` needs
//!   `groupId` (`missing_group_id`; spec-field-group-id: *required*); `alias` needs `previousId`
//!   (`missing_previous_id`; spec-field-previous-id: *required*).
//! * **Named fields on every type.** `event`, `name`, `category`, `groupId`, `previousId`,
//!   `traits`, `properties` are read into their [`Event`] fields whatever the type (a `track` with
//!   `traits` keeps them). They are type-checked everywhere, because [`Event::extra`] is
//!   flattened: a stray `"event": {}` left in `extra` would not deserialize back.
//! * **Objects.** `traits`, `properties`, `context`, `integrations` must be objects when present;
//!   `null` counts as absent; anything else → `invalid_field` naming the field.
//! * **Traits.** For `identify`, [`Event::traits`] is `traits` merged over `context.traits`
//!   (`traits` wins; RudderStack's mobile SDKs send identify traits only in `context.traits`). A
//!   `context.traits` that is not an object rejects an identify (`field: "context.traits"`). For
//!   `group`, `context.traits` is **not** merged: Common Fields defines it as "Dictionary of
//!   `traits` of the current user", while a group's `traits` describe the group; merging would
//!   copy the user's email into the company. `context` itself is always kept unchanged.
//! * **Batch-level `context` and `integrations`** "will be merged with any context inside each of
//!   the items in the batch" (HTTP API, Batch). The docs do not say how deep; we merge deeply:
//!   where both sides hold an object (`context.device`, `integrations.Amplitude`) the objects are
//!   merged, and on every other conflict the item wins. A batch-level value of the wrong JSON type
//!   fails the request (`invalid_envelope_field`). Unknown batch-level keys are ignored.
//! * **Timestamps** follow Common Fields, Timestamps: "`receivedAt` - (`sentAt` -
//!   `originalTimestamp`)", where `originalTimestamp` is "Time on the client device when call was
//!   invoked **OR** The `timestamp` value manually passed in through server-side libraries".
//!   So:
//!   - a `timestamp` without `originalTimestamp` (analytics.js, Segment's mobile and server
//!     libraries) is the client's time and is corrected with `sentAt`;
//!   - an `originalTimestamp` without `timestamp` (RudderStack SDKs) is corrected likewise;
//!   - a message with both is taken to be already corrected (a replayed, processed event): its
//!     `timestamp` is kept, as rudder-server's processor does ("use existing timestamp if it exists
//!     in the event", `enhanceWithTimeFields`);
//!   - without `sentAt` no correction is possible and the client time is kept (historical
//!     imports over plain HTTP, HTTP API "Historical import");
//!   - with neither timestamp, `timestamp` is `receivedAt` (spec-field-timestamp: "defaulted to
//!     the current time by the Segment Tracking API").
//!
//!   A message's own `sentAt` wins over the batch-level one. [`Event::original_timestamp`] and
//!   [`Event::sent_at`] keep the strings as sent. A corrected timestamp later than `receivedAt` is
//!   clamped to `receivedAt` (an event cannot happen after it arrived: this catches
//!   `originalTimestamp` later than `sentAt`, and server clocks running ahead); earlier ones are
//!   kept however old, as imports need. A correction leaving jiff's range (years ±9999) is
//!   rejected (`invalid_timestamp`).
//! * **Timestamp syntax.** RFC 3339: `YYYY-MM-DDThh:mm:ss`, an optional `.` and 1 to 9
//!   fractional digits, then `Z` or `±hh:mm`. Accepted leniencies, all unambiguous: lowercase `t`
//!   and `z` and a space instead of `T` (RFC 3339 §5.6 allows each), `±hhmm` offsets (ISO 8601
//!   basic), and second `60` (a leap second, read as `59` like jiff does). Rejected
//!   (`invalid_timestamp`, naming the field): no offset (`2024-01-01 00:00:00`: local time of an
//!   unknown zone), impossible dates (`2024-13-01`, `2023-02-29`), hour `24`, more than 9
//!   fractional digits, a missing zero (`2015-2-02`, though Segment's own batch example shows
//!   one), bare dates, numbers (epoch seconds or milliseconds are ambiguous), words
//!   (`yesterday`). jiff's own parser is not used: it also takes `T00:00Z` (no seconds),
//!   `20240101T000000Z`, `,5` fractions, `[UTC]` annotations and `+24:00`. `null` and `""` count
//!   as absent. A `sentAt` that does not parse rejects the message (`field: "sentAt"`), even when
//!   it came from the batch level.
//! * **`messageId`.** Kept as sent. A whole number becomes its string. Absent, `null` or blank →
//!   generated: `trib-` and a UUID v7 (time-ordered). Longer than 100 characters → `invalid_field`
//!   (spec-field-message-id: "This field is limited to 100 characters"). Other types →
//!   `invalid_field`. A rejection carries the message's own id when it had a usable one, never a
//!   generated one.
//! * **Other top-level fields** (`version`, `channel`, `_metadata`, custom ones) are kept in
//!   [`Event::extra`]. Not kept: `type` (→ [`Event::kind`]), `writeKey`, `batch` and `sentAt`
//!   (envelope fields), and the server-owned `receivedAt` and `source`: Segment sets `receivedAt`
//!   itself (spec-field-received-at: "Automatically set by Segment"), and both names are
//!   [`Event`] fields, so keeping a client's copy in the flattened `extra` would collide with ours.
//! * **Size.** An item longer than [`Limits::max_message_bytes`] is rejected unparsed
//!   (`message_too_large`; HTTP API: "a limit of `32KB` per event in the batch"). On a
//!   single-message route the body is the message: it is parsed by [`parse_envelope`] (its
//!   `writeKey` is needed before authentication) and checked against the limit by
//!   [`Envelope::into_messages`].
//! * **Envelope.** A UTF-8 byte order mark before the JSON is skipped. A `writeKey` that is
//!   `null` or `""` counts as absent (authentication then falls back to the header). A batch item
//!   that is not an object → `not_an_object`. JSON that is invalid anywhere in the body, even
//!   inside one batch item, fails the whole request (`malformed_json`, with line and column), as
//!   Segment answers "Invalid JSON" with `400`.
//! * **`raw`** is the item exactly as received (before any batch-level merge); for a
//!   single-message route it is the whole body without surrounding whitespace, `writeKey`
//!   included.

use std::fmt;

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::Offset;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Number, Value};
use trib_core::{Event, EventType, JsonMap, QuarantinedMessage};

/// The longest `messageId` accepted, in characters (Segment: "limited to 100 characters").
pub const MAX_MESSAGE_ID_CHARS: usize = 100;

/// The prefix of a `messageId` generated by the server, followed by a hyphenated UUID v7.
pub const GENERATED_MESSAGE_ID_PREFIX: &str = "trib-";

/// Segment's per-message limit: "a limit of `32KB` per event in the batch".
pub const SEGMENT_MAX_MESSAGE_BYTES: usize = 32 * 1024;

/// Which route the request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/v1/batch` (and its aliases): a `batch` array of messages of any type.
    Batch,
    /// `/v1/identify`, `/v1/track`, ...: the body is one message of this type.
    Single(EventType),
}

/// A parsed request body: the write key the body carries (if any) and its messages, still raw.
#[derive(Debug)]
pub struct Envelope {
    /// The body's `writeKey`, if it had a non-empty one.
    pub write_key: Option<String>,
    body: Body,
}

#[derive(Debug)]
enum Body {
    Batch {
        items: Vec<Box<RawValue>>,
        context: Option<JsonMap>,
        integrations: Option<JsonMap>,
        sent_at: Option<String>,
    },
    Single {
        kind: EventType,
        /// The body as received, without surrounding whitespace.
        raw: Box<str>,
        /// The body parsed, `writeKey` removed.
        message: JsonMap,
    },
}

/// Per-message limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest message accepted, in bytes of JSON as received.
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: SEGMENT_MAX_MESSAGE_BYTES,
        }
    }
}

/// What normalization needs to know about the request.
#[derive(Debug, Clone)]
pub struct IngestContext<'a> {
    /// The name of the source the write key authenticated.
    pub source: &'a str,
    /// When the server received the request; becomes every event's `receivedAt`.
    pub received_at: Timestamp,
    pub limits: Limits,
}

/// Why one message was not accepted. Kept in quarantine with the raw message.
#[derive(Debug)]
pub struct Rejection {
    /// The position of the message in the batch (0 for single-message routes).
    pub index: usize,
    /// The message's own `messageId`, if it had a usable one.
    pub message_id: Option<String>,
    /// The JSON path of the offending field, e.g. `userId`, `traits`, `context.traits`.
    pub field: Option<String>,
    /// A stable snake_case code, e.g. `missing_identity`.
    pub code: &'static str,
    /// A sentence saying what is wrong, e.g. "`traits` must be an object, got a string".
    pub reason: String,
    /// The message exactly as received.
    pub raw: Box<RawValue>,
}

impl Rejection {
    /// Turns the rejection into the record the quarantine stores.
    pub fn into_quarantined(self, ctx: &IngestContext<'_>) -> QuarantinedMessage {
        QuarantinedMessage {
            source: ctx.source.to_owned(),
            received_at: ctx.received_at,
            index: self.index,
            message_id: self.message_id,
            field: self.field,
            code: self.code.to_owned(),
            reason: self.reason,
            schema: None,
            origin: Some("api".to_owned()),
            message: self.raw,
            replay_context: None,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "message {}: {}", self.index, self.reason)
    }
}

/// Why a whole request was refused. Answered `400`; nothing of it is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the request body is empty")]
    EmptyBody,
    /// `message` is serde_json's, and ends with "at line L column C".
    #[error("the request body is not valid JSON: {message}")]
    MalformedJson {
        message: String,
        line: usize,
        column: usize,
    },
    #[error("the request body must be a JSON object, got {found}")]
    BodyNotObject { found: &'static str },
    #[error("a batch request needs a `batch` array of messages")]
    MissingBatch,
    #[error("`batch` must be an array of messages, got {found}")]
    BatchNotArray { found: &'static str },
    #[error("`writeKey` must be a string, got {found}")]
    InvalidWriteKey { found: &'static str },
    /// A batch-level `context`, `integrations` or `sentAt` of the wrong JSON type.
    #[error("batch-level `{field}` must be {expected}, got {found}")]
    InvalidEnvelopeField {
        field: &'static str,
        expected: &'static str,
        found: &'static str,
    },
}

impl RequestError {
    /// A stable snake_case code for responses and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::EmptyBody => "empty_body",
            RequestError::MalformedJson { .. } => "malformed_json",
            RequestError::BodyNotObject { .. } => "body_not_object",
            RequestError::MissingBatch => "missing_batch",
            RequestError::BatchNotArray { .. } => "batch_not_array",
            RequestError::InvalidWriteKey { .. } => "invalid_write_key",
            RequestError::InvalidEnvelopeField { .. } => "invalid_envelope_field",
        }
    }

    fn malformed(err: &serde_json::Error) -> Self {
        RequestError::MalformedJson {
            message: err.to_string(),
            line: err.line(),
            column: err.column(),
        }
    }
}

/// Parses the request body.
///
/// Fails only for request-level problems: an empty body, JSON that does not parse (with line and
/// column), a top level that is not an object, a missing or non-array `batch` (for
/// [`Route::Batch`]), a `writeKey` that is not a string, and batch-level `context`,
/// `integrations` or `sentAt` of the wrong JSON type. Problems of single messages are left to
/// [`Envelope::into_messages`].
pub fn parse_envelope(body: &[u8], route: Route) -> Result<Envelope, RequestError> {
    let body = trim_json_whitespace(body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body));
    if body.is_empty() {
        return Err(RequestError::EmptyBody);
    }
    match route {
        Route::Batch => parse_batch(body),
        Route::Single(kind) => parse_single(body, kind),
    }
}

fn trim_json_whitespace(bytes: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let start = bytes.iter().position(|b| !is_ws(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ws(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

fn parse_single(body: &[u8], kind: EventType) -> Result<Envelope, RequestError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| RequestError::malformed(&e))?;
    let Value::Object(mut message) = value else {
        return Err(RequestError::BodyNotObject {
            found: trib_core::json_kind(&value),
        });
    };
    let write_key = write_key_from(message.remove("writeKey"))?;
    // serde_json validated the UTF-8 of every string, and JSON outside strings is ASCII.
    let raw = std::str::from_utf8(body).map_err(|e| RequestError::MalformedJson {
        message: e.to_string(),
        line: 1,
        column: e.valid_up_to() + 1,
    })?;
    Ok(Envelope {
        write_key,
        body: Body::Single {
            kind,
            raw: raw.into(),
            message,
        },
    })
}

fn write_key_from(value: Option<Value>) -> Result<Option<String>, RequestError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(key)) => Ok((!key.is_empty()).then_some(key)),
        Some(other) => Err(RequestError::InvalidWriteKey {
            found: trib_core::json_kind(&other),
        }),
    }
}

fn parse_batch(body: &[u8]) -> Result<Envelope, RequestError> {
    let parts = match serde_json::from_slice::<TopLevel>(body) {
        Ok(TopLevel::Object(parts)) => parts,
        Ok(TopLevel::Not(found)) => return Err(RequestError::BodyNotObject { found }),
        Err(e) => return Err(RequestError::malformed(&e)),
    };
    let items = match parts.batch {
        None => return Err(RequestError::MissingBatch),
        Some(Items::Not(found)) => return Err(RequestError::BatchNotArray { found }),
        Some(Items::Array(items)) => items,
    };
    let write_key = write_key_from(parts.write_key)?;
    let context = envelope_object("context", parts.context)?;
    let integrations = envelope_object("integrations", parts.integrations)?;
    let sent_at = match parts.sent_at {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            return Err(RequestError::InvalidEnvelopeField {
                field: "sentAt",
                expected: "an ISO-8601 date string",
                found: trib_core::json_kind(&other),
            });
        }
    };
    Ok(Envelope {
        write_key,
        body: Body::Batch {
            items,
            context,
            integrations,
            sent_at,
        },
    })
}

fn envelope_object(
    field: &'static str,
    value: Option<Value>,
) -> Result<Option<JsonMap>, RequestError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(other) => Err(RequestError::InvalidEnvelopeField {
            field,
            expected: "an object",
            found: trib_core::json_kind(&other),
        }),
    }
}

/// The top level of a batch body, read in one pass: `batch` items are captured as raw slices,
/// the few other envelope fields as values, everything else skipped.
enum TopLevel {
    Object(BatchParts),
    Not(&'static str),
}

#[derive(Default)]
struct BatchParts {
    batch: Option<Items>,
    write_key: Option<Value>,
    sent_at: Option<Value>,
    context: Option<Value>,
    integrations: Option<Value>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum EnvelopeKey {
    Batch,
    WriteKey,
    SentAt,
    Context,
    Integrations,
    #[serde(other)]
    Other,
}

/// The `batch` field: its items as raw JSON, or the kind of the non-array found instead.
enum Items {
    Array(Vec<Box<RawValue>>),
    Not(&'static str),
}

/// Implements the visits of every JSON kind that is not the expected one, answering
/// `$not(kind)` after consuming the value.
macro_rules! visit_other_kinds {
    ($not:path) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($not("a boolean"))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($not("a number"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($not("a number"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($not("a number"))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($not("a string"))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($not("null"))
        }
    };
}

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TopVisitor;
        impl<'de> Visitor<'de> for TopVisitor {
            type Value = TopLevel;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
                let mut parts = BatchParts::default();
                while let Some(key) = map.next_key::<EnvelopeKey>()? {
                    match key {
                        EnvelopeKey::Batch => parts.batch = Some(map.next_value()?),
                        EnvelopeKey::WriteKey => parts.write_key = Some(map.next_value()?),
                        EnvelopeKey::SentAt => parts.sent_at = Some(map.next_value()?),
                        EnvelopeKey::Context => parts.context = Some(map.next_value()?),
                        EnvelopeKey::Integrations => {
                            parts.integrations = Some(map.next_value()?);
                        }
                        EnvelopeKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(TopLevel::Object(parts))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TopLevel::Not("an array"))
            }

            visit_other_kinds!(TopLevel::Not);
        }
        deserializer.deserialize_any(TopVisitor)
    }
}

impl<'de> Deserialize<'de> for Items {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemsVisitor;
        impl<'de> Visitor<'de> for ItemsVisitor {
            type Value = Items;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of messages")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Items, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(item) = seq.next_element::<Box<RawValue>>()? {
                    items.push(item);
                }
                Ok(Items::Array(items))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Items, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Items::Not("an object"))
            }

            visit_other_kinds!(Items::Not);
        }
        deserializer.deserialize_any(ItemsVisitor)
    }
}

impl Envelope {
    /// Returns the body's `writeKey`, if it had a non-empty one.
    pub fn write_key(&self) -> Option<&str> {
        self.write_key.as_deref()
    }

    /// Returns the number of messages.
    pub fn len(&self) -> usize {
        match &self.body {
            Body::Batch { items, .. } => items.len(),
            Body::Single { .. } => 1,
        }
    }

    /// Returns whether there are no messages (an empty `batch`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Validates and normalizes every message; one outcome per message, in order.
    pub fn into_messages(self, ctx: &IngestContext<'_>) -> Vec<Result<Event, Rejection>> {
        match self.body {
            Body::Single { kind, raw, message } => {
                vec![single_message(kind, raw, message, ctx)]
            }
            Body::Batch {
                items,
                context,
                integrations,
                sent_at,
            } => {
                let defaults = Defaults {
                    context: context.as_ref(),
                    integrations: integrations.as_ref(),
                    sent_at: sent_at.as_deref(),
                };
                items
                    .into_iter()
                    .enumerate()
                    .map(|(index, raw)| batch_item(index, raw, &defaults, ctx))
                    .collect()
            }
        }
    }
}

/// What a batch gives each of its items.
#[derive(Default)]
struct Defaults<'a> {
    context: Option<&'a JsonMap>,
    integrations: Option<&'a JsonMap>,
    sent_at: Option<&'a str>,
}

fn too_large(len: usize, ctx: &IngestContext<'_>) -> Option<Problem> {
    (len > ctx.limits.max_message_bytes).then(|| {
        Problem::new(
            "message_too_large",
            None,
            format!(
                "the message is {len} bytes, over the limit of {} bytes",
                ctx.limits.max_message_bytes
            ),
        )
    })
}

fn batch_item(
    index: usize,
    raw: Box<RawValue>,
    defaults: &Defaults<'_>,
    ctx: &IngestContext<'_>,
) -> Result<Event, Rejection> {
    let text = raw.get();
    if let Some(problem) = too_large(text.len(), ctx) {
        let message_id = message_id_of(text);
        return Err(problem.into_rejection(index, message_id, raw));
    }
    if !text.starts_with('{') {
        let problem = Problem::new(
            "not_an_object",
            None,
            format!(
                "a batch item must be a message object, got {}",
                kind_of_raw(text)
            ),
        );
        return Err(problem.into_rejection(index, None, raw));
    }
    let message = match serde_json::from_str::<JsonMap>(text) {
        Ok(message) => message,
        // The envelope parse already validated this slice; kept for robustness.
        Err(e) => {
            let problem = Problem::new("malformed_message", None, e.to_string());
            return Err(problem.into_rejection(index, None, raw));
        }
    };
    normalize(message, Route::Batch, defaults, ctx)
        .map_err(|(message_id, problem)| problem.into_rejection(index, message_id, raw))
}

fn single_message(
    kind: EventType,
    raw: Box<str>,
    message: JsonMap,
    ctx: &IngestContext<'_>,
) -> Result<Event, Rejection> {
    let outcome = match too_large(raw.len(), ctx) {
        Some(problem) => {
            let mut message = message;
            Err((take_message_id(&mut message).ok().flatten(), problem))
        }
        None => normalize(message, Route::Single(kind), &Defaults::default(), ctx),
    };
    outcome.map_err(|(message_id, problem)| problem.into_rejection(0, message_id, raw_value(raw)))
}

fn raw_value(text: Box<str>) -> Box<RawValue> {
    match serde_json::from_str::<&RawValue>(&text) {
        Ok(raw) => raw.to_owned(),
        // Unreachable: the text parsed as JSON already. Keep it as a JSON string, not lose it.
        Err(_) => {
            serde_json::value::to_raw_value(&*text).unwrap_or_else(|_| RawValue::NULL.to_owned())
        }
    }
}

/// One problem of one message.
struct Problem {
    code: &'static str,
    field: Option<&'static str>,
    reason: String,
}

impl Problem {
    fn new(code: &'static str, field: Option<&'static str>, reason: impl Into<String>) -> Self {
        Self {
            code,
            field,
            reason: reason.into(),
        }
    }

    /// A field of the wrong JSON type.
    fn wrong_type(field: &'static str, expected: &str, found: &Value) -> Self {
        Self::new(
            "invalid_field",
            Some(field),
            format!(
                "`{field}` must be {expected}, got {}",
                trib_core::json_kind(found)
            ),
        )
    }

    fn into_rejection(
        self,
        index: usize,
        message_id: Option<String>,
        raw: Box<RawValue>,
    ) -> Rejection {
        Rejection {
            index,
            message_id,
            field: self.field.map(str::to_owned),
            code: self.code,
            reason: self.reason,
            raw,
        }
    }
}

/// Validates one message and builds its event. On failure, returns the message's own
/// `messageId` (when usable) with the first problem found.
fn normalize(
    mut msg: JsonMap,
    route: Route,
    defaults: &Defaults<'_>,
    ctx: &IngestContext<'_>,
) -> Result<Event, (Option<String>, Problem)> {
    let mut message_id = take_message_id(&mut msg).map_err(|p| (None, p))?;
    match build_event(msg, route, defaults, ctx, &mut message_id) {
        Ok(event) => Ok(event),
        Err(problem) => Err((message_id, problem)),
    }
}

fn build_event(
    mut msg: JsonMap,
    route: Route,
    defaults: &Defaults<'_>,
    ctx: &IngestContext<'_>,
    message_id: &mut Option<String>,
) -> Result<Event, Problem> {
    let kind = take_type(&mut msg, route)?;

    let user_id = take_id(&mut msg, "userId")?;
    let anonymous_id = take_id(&mut msg, "anonymousId")?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(Problem::new(
            "missing_identity",
            None,
            "a message needs a `userId` or an `anonymousId`",
        ));
    }

    let event = take_string(&mut msg, "event")?.filter(|s| !s.trim().is_empty());
    if kind == EventType::Track && event.is_none() {
        return Err(Problem::new(
            "missing_event",
            Some("event"),
            "a track call needs an `event` name",
        ));
    }
    let name = take_string(&mut msg, "name")?;
    let category = take_string(&mut msg, "category")?;
    let group_id = take_id(&mut msg, "groupId")?;
    if kind == EventType::Group && group_id.is_none() {
        return Err(Problem::new(
            "missing_group_id",
            Some("groupId"),
            "a group call needs a `groupId`",
        ));
    }
    let previous_id = take_id(&mut msg, "previousId")?;
    if kind == EventType::Alias && previous_id.is_none() {
        return Err(Problem::new(
            "missing_previous_id",
            Some("previousId"),
            "an alias call needs a `previousId`",
        ));
    }

    let mut traits = take_object(&mut msg, "traits")?;
    let properties = take_object(&mut msg, "properties")?;
    let mut context = take_object(&mut msg, "context")?;
    let mut integrations = take_object(&mut msg, "integrations")?;
    merge_batch_level(&mut context, defaults.context);
    merge_batch_level(&mut integrations, defaults.integrations);
    let context = context.unwrap_or_default();
    let integrations = integrations.unwrap_or_default();

    if kind == EventType::Identify {
        match context.get("traits") {
            None | Some(Value::Null) => {}
            Some(Value::Object(context_traits)) => {
                merge_under(traits.get_or_insert_with(JsonMap::new), context_traits);
            }
            Some(other) => {
                return Err(Problem::wrong_type("context.traits", "an object", other));
            }
        }
    }

    let times = take_times(&mut msg, defaults.sent_at, ctx.received_at)?;

    // Envelope and server-owned fields; what remains is kept as sent.
    for key in ["writeKey", "batch", "receivedAt", "source"] {
        msg.remove(key);
    }

    Ok(Event {
        message_id: message_id.take().unwrap_or_else(generate_message_id),
        source: ctx.source.to_owned(),
        kind,
        user_id,
        anonymous_id,
        event,
        name,
        category,
        group_id,
        previous_id,
        traits,
        properties,
        context,
        integrations,
        timestamp: times.timestamp,
        original_timestamp: times.original,
        sent_at: times.sent_at,
        received_at: ctx.received_at,
        extra: msg,
    })
}

fn generate_message_id() -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    let uuid = uuid::Uuid::now_v7();
    let mut id = String::with_capacity(GENERATED_MESSAGE_ID_PREFIX.len() + 36);
    id.push_str(GENERATED_MESSAGE_ID_PREFIX);
    id.push_str(uuid.hyphenated().encode_lower(&mut buf));
    id
}

/// The usable `messageId` of a batch item refused before it was parsed (too large), so that
/// the refusal names it and a retry is recognised in the quarantine; the rest is skipped.
fn message_id_of(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Id {
        #[serde(rename = "messageId")]
        message_id: Option<Value>,
    }
    let id: Id = serde_json::from_str(text).ok()?;
    let mut message = JsonMap::new();
    message.insert("messageId".to_owned(), id.message_id?);
    take_message_id(&mut message).ok().flatten()
}

fn take_message_id(msg: &mut JsonMap) -> Result<Option<String>, Problem> {
    const FIELD: &str = "messageId";
    let id = match msg.remove(FIELD) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => {
            whole_number(&n).ok_or_else(|| not_whole(FIELD, &n, "a string or a whole number"))?
        }
        Some(other) => return Err(Problem::wrong_type(FIELD, "a string", &other)),
    };
    let chars = id.chars().count();
    if chars > MAX_MESSAGE_ID_CHARS {
        return Err(Problem::new(
            "invalid_field",
            Some(FIELD),
            format!(
                "`messageId` is {chars} characters long, over the limit of {MAX_MESSAGE_ID_CHARS}"
            ),
        ));
    }
    Ok(Some(id))
}

fn take_type(msg: &mut JsonMap, route: Route) -> Result<EventType, Problem> {
    let declared = match msg.remove("type") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => return Err(Problem::wrong_type("type", "a string", &other)),
    };
    match (route, declared) {
        (Route::Single(kind), None) => Ok(kind),
        (Route::Single(kind), Some(declared)) if declared == kind.as_str() => Ok(kind),
        (Route::Single(kind), Some(declared)) => Err(Problem::new(
            "invalid_type",
            Some("type"),
            format!(
                "`type` is {}, but the message was sent to /v1/{kind}",
                preview(&declared)
            ),
        )),
        (Route::Batch, None) => Err(Problem::new(
            "missing_type",
            Some("type"),
            "a batch item needs a `type`: identify, track, page, screen, group or alias",
        )),
        (Route::Batch, Some(declared)) => declared.parse().map_err(|_| {
            Problem::new(
                "unknown_type",
                Some("type"),
                format!(
                    "`type` is {}; it must be one of identify, track, page, screen, group, alias",
                    preview(&declared)
                ),
            )
        }),
    }
}

/// Reads an identifier: a string (blank counts as absent) or a whole number (as its string).
fn take_id(msg: &mut JsonMap, field: &'static str) -> Result<Option<String>, Problem> {
    const EXPECTED: &str = "a string or a whole number";
    match msg.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok((!s.trim().is_empty()).then_some(s)),
        Some(Value::Number(n)) => whole_number(&n)
            .map(Some)
            .ok_or_else(|| not_whole(field, &n, EXPECTED)),
        Some(other) => Err(Problem::wrong_type(field, EXPECTED, &other)),
    }
}

fn whole_number(n: &Number) -> Option<String> {
    (n.is_i64() || n.is_u64()).then(|| n.to_string())
}

fn not_whole(field: &'static str, n: &Number, expected: &str) -> Problem {
    Problem::new(
        "invalid_field",
        Some(field),
        format!("`{field}` must be {expected}, got the fractional number {n}"),
    )
}

/// Reads an optional string; `null` and `""` count as absent.
fn take_string(msg: &mut JsonMap, field: &'static str) -> Result<Option<String>, Problem> {
    match msg.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok((!s.is_empty()).then_some(s)),
        Some(other) => Err(Problem::wrong_type(field, "a string", &other)),
    }
}

/// Reads an optional object; `null` counts as absent.
fn take_object(msg: &mut JsonMap, field: &'static str) -> Result<Option<JsonMap>, Problem> {
    match msg.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(other) => Err(Problem::wrong_type(field, "an object", &other)),
    }
}

/// Merges a batch-level object under an item's own (absent → a copy of the batch's).
fn merge_batch_level(own: &mut Option<JsonMap>, batch: Option<&JsonMap>) {
    let Some(batch) = batch else { return };
    match own {
        Some(own) => merge_under(own, batch),
        None => *own = Some(batch.clone()),
    }
}

/// Adds to `target` what `defaults` has and it lacks, recursing where both hold an object;
/// `target` wins every other conflict. Only what is added is cloned.
fn merge_under(target: &mut JsonMap, defaults: &JsonMap) {
    for (key, default) in defaults {
        match target.get_mut(key) {
            None => {
                target.insert(key.clone(), default.clone());
            }
            Some(Value::Object(inner)) => {
                if let Value::Object(default) = default {
                    merge_under(inner, default);
                }
            }
            Some(_) => {}
        }
    }
}

struct Times {
    timestamp: Timestamp,
    original: Option<String>,
    sent_at: Option<String>,
}

fn take_times(
    msg: &mut JsonMap,
    batch_sent_at: Option<&str>,
    received_at: Timestamp,
) -> Result<Times, Problem> {
    let timestamp_raw = take_time_string(msg, "timestamp")?;
    let original_raw = take_time_string(msg, "originalTimestamp")?;
    let own_sent_at = take_time_string(msg, "sentAt")?;
    let from_batch = own_sent_at.is_none() && batch_sent_at.is_some();
    let sent_at_raw = own_sent_at.or_else(|| batch_sent_at.map(str::to_owned));

    let timestamp = parse_field("timestamp", timestamp_raw.as_deref(), false)?;
    let original = parse_field("originalTimestamp", original_raw.as_deref(), false)?;
    let sent_at = parse_field("sentAt", sent_at_raw.as_deref(), from_batch)?;

    let (timestamp, original_raw) = match (timestamp, original) {
        // Both: a processed event whose `timestamp` is already corrected.
        (Some(timestamp), Some(_)) => (timestamp, original_raw),
        (Some(client), None) => (
            correct_skew(client, sent_at, received_at, "timestamp")?,
            timestamp_raw,
        ),
        (None, Some(client)) => (
            correct_skew(client, sent_at, received_at, "originalTimestamp")?,
            original_raw,
        ),
        (None, None) => (received_at, None),
    };
    Ok(Times {
        // An event cannot have happened after the server received it.
        timestamp: timestamp.min(received_at),
        original: original_raw,
        sent_at: sent_at_raw,
    })
}

/// `receivedAt - (sentAt - client)`, Segment's clock-skew correction; `client` without `sentAt`.
fn correct_skew(
    client: Timestamp,
    sent_at: Option<Timestamp>,
    received_at: Timestamp,
    field: &'static str,
) -> Result<Timestamp, Problem> {
    let Some(sent_at) = sent_at else {
        return Ok(client);
    };
    received_at
        .checked_add(client.duration_since(sent_at))
        .map_err(|_| {
            Problem::new(
                "invalid_timestamp",
                Some(field),
                format!(
                    "correcting `{field}` for clock skew with `sentAt` \
                     leaves the supported range of years"
                ),
            )
        })
}

/// Reads a timestamp string; `null` and `""` count as absent.
fn take_time_string(msg: &mut JsonMap, field: &'static str) -> Result<Option<String>, Problem> {
    match msg.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok((!s.is_empty()).then_some(s)),
        Some(other) => Err(Problem::new(
            "invalid_timestamp",
            Some(field),
            format!(
                "`{field}` must be an ISO-8601 date string like 2024-01-31T23:59:59.123Z, got {}",
                trib_core::json_kind(&other)
            ),
        )),
    }
}

fn parse_field(
    field: &'static str,
    text: Option<&str>,
    from_batch: bool,
) -> Result<Option<Timestamp>, Problem> {
    let Some(text) = text else { return Ok(None) };
    parse_rfc3339(text).map(Some).map_err(|why| {
        let level = if from_batch { "batch-level " } else { "" };
        Problem::new(
            "invalid_timestamp",
            Some(field),
            format!(
                "{level}`{field}` is {}, not an ISO-8601 date: {why}",
                preview(text)
            ),
        )
    })
}

/// Parses an RFC 3339 timestamp, with the leniencies listed in the module documentation.
fn parse_rfc3339(text: &str) -> Result<Timestamp, &'static str> {
    const SHAPE: &str = "expected YYYY-MM-DDThh:mm:ss, optional fractional seconds, \
                         then `Z` or an offset like +02:00";
    let mut c = Cursor {
        bytes: text.as_bytes(),
        at: 0,
    };
    let year = c.digits(4).ok_or(SHAPE)?;
    c.expect(b'-').ok_or(SHAPE)?;
    let month = c.digits(2).ok_or(SHAPE)?;
    c.expect(b'-').ok_or(SHAPE)?;
    let day = c.digits(2).ok_or(SHAPE)?;
    if !matches!(c.next(), Some(b'T' | b't' | b' ')) {
        return Err(SHAPE);
    }
    let hour = c.digits(2).ok_or(SHAPE)?;
    c.expect(b':').ok_or(SHAPE)?;
    let minute = c.digits(2).ok_or(SHAPE)?;
    c.expect(b':').ok_or(SHAPE)?;
    let second = c.digits(2).ok_or(SHAPE)?;
    let mut nanosecond = 0;
    if c.eat(b'.') {
        let start = c.at;
        while c.peek().is_some_and(|b| b.is_ascii_digit()) {
            c.at += 1;
        }
        let count = c.at - start;
        if count == 0 {
            return Err(SHAPE);
        }
        if count > 9 {
            return Err("more than 9 fractional digits");
        }
        c.at = start;
        let fraction = c.digits(count).ok_or(SHAPE)?;
        nanosecond = fraction * 10_i32.pow(9 - count as u32);
    }
    let offset_seconds = match c.next() {
        Some(b'Z' | b'z') => 0,
        Some(sign @ (b'+' | b'-')) => {
            let hours = c.digits(2).ok_or(SHAPE)?;
            c.eat(b':');
            let minutes = c.digits(2).ok_or(SHAPE)?;
            if hours > 23 || minutes > 59 {
                return Err("the UTC offset is out of range");
            }
            let seconds = hours * 3600 + minutes * 60;
            if sign == b'-' { -seconds } else { seconds }
        }
        None => return Err("no UTC offset: add `Z` or an offset like +02:00"),
        Some(_) => return Err(SHAPE),
    };
    if c.at != c.bytes.len() {
        return Err(SHAPE);
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err("the time of day is out of range");
    }
    // A leap second (`:60`) is read as `:59`, as jiff does.
    let second = second.min(59);
    let datetime = DateTime::new(
        year as i16,
        month as i8,
        day as i8,
        hour as i8,
        minute as i8,
        second as i8,
        nanosecond,
    )
    .map_err(|_| "no such date")?;
    let offset =
        Offset::from_seconds(offset_seconds).map_err(|_| "the UTC offset is out of range")?;
    offset
        .to_timestamp(datetime)
        .map_err(|_| "out of the supported range of years")
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.at += 1;
        }
        found
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }

    /// Reads exactly `count` ASCII digits (at most 9).
    fn digits(&mut self, count: usize) -> Option<i32> {
        let digits = self.bytes.get(self.at..self.at + count)?;
        let mut value = 0_i32;
        for &d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            value = value * 10 + i32::from(d - b'0');
        }
        self.at += count;
        Some(value)
    }
}

/// Names the JSON kind of valid raw JSON by its first byte.
fn kind_of_raw(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// Quotes a client string for a message, cut to a readable length.
fn preview(text: &str) -> String {
    const MAX_CHARS: usize = 40;
    match text.char_indices().nth(MAX_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RECEIVED: &str = "2024-05-01T12:00:00Z";

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn ctx() -> IngestContext<'static> {
        IngestContext {
            source: "web",
            received_at: ts(RECEIVED),
            limits: Limits::default(),
        }
    }

    fn run(route: Route, body: &str) -> Vec<Result<Event, Rejection>> {
        parse_envelope(body.as_bytes(), route)
            .unwrap()
            .into_messages(&ctx())
    }

    fn run_one(route: Route, body: &str) -> Result<Event, Rejection> {
        let mut outcomes = run(route, body);
        assert_eq!(outcomes.len(), 1, "one outcome expected");
        outcomes.remove(0)
    }

    const BATCH: Route = Route::Batch;
    const IDENTIFY: Route = Route::Single(EventType::Identify);
    const TRACK: Route = Route::Single(EventType::Track);
    const PAGE: Route = Route::Single(EventType::Page);
    const GROUP: Route = Route::Single(EventType::Group);
    const ALIAS: Route = Route::Single(EventType::Alias);

    enum Want {
        /// Accepted; every key of the object must serialize to that value in the event,
        /// and a `null` means the key must be absent.
        Accept(Value),
        /// Rejected with this code and field.
        Reject(&'static str, Option<&'static str>),
    }

    fn accept(fields: Value) -> Want {
        Want::Accept(fields)
    }

    fn reject(code: &'static str, field: Option<&'static str>) -> Want {
        Want::Reject(code, field)
    }

    /// The outcome [`check`] checked, for further assertions.
    struct Checked(Result<Event, Rejection>);

    impl Checked {
        fn event(self) -> Event {
            self.0.unwrap()
        }

        fn rejection(self) -> Rejection {
            self.0.unwrap_err()
        }
    }

    /// Sends one message on `route` (wrapped in `{"batch": [...]}` for [`Route::Batch`]) and
    /// checks the outcome.
    #[track_caller]
    fn check(route: Route, message: Value, want: Want) -> Checked {
        let body = match route {
            Route::Batch => json!({ "batch": [message] }),
            Route::Single(_) => message,
        };
        let outcome = run_one(route, &body.to_string());
        match (&outcome, want) {
            (Ok(event), Want::Accept(fields)) => {
                let got = serde_json::to_value(event).unwrap();
                for (key, want) in fields.as_object().unwrap() {
                    if want.is_null() {
                        assert!(
                            got.get(key).is_none(),
                            "`{key}` should be absent in {got:#}"
                        );
                    } else {
                        assert_eq!(got.get(key), Some(want), "`{key}` in {got:#}");
                    }
                }
            }
            (Err(rejection), Want::Reject(code, field)) => {
                assert_eq!(
                    (rejection.code, rejection.field.as_deref()),
                    (code, field),
                    "{}",
                    rejection.reason
                );
                assert!(!rejection.reason.is_empty());
            }
            (Ok(event), Want::Reject(code, _)) => panic!("expected {code}, accepted {event:#?}"),
            (Err(rejection), Want::Accept(_)) => {
                panic!(
                    "expected acceptance, rejected: {} ({})",
                    rejection.reason, rejection.code
                )
            }
        }
        Checked(outcome)
    }

    #[track_caller]
    fn request_error(route: Route, body: &str) -> RequestError {
        match parse_envelope(body.as_bytes(), route) {
            Ok(envelope) => panic!("expected a request error, parsed {envelope:?}"),
            Err(e) => e,
        }
    }

    // ---- envelope ----

    #[test]
    fn request_errors_have_stable_codes() {
        let cases: [(Route, &str, &str); 18] = [
            (BATCH, "", "empty_body"),
            (TRACK, " \n\t", "empty_body"),
            (BATCH, "not json", "malformed_json"),
            (BATCH, r#"{"batch": [{"type": "track"}"#, "malformed_json"),
            (BATCH, r#"{"batch": [{"type": tru}]}"#, "malformed_json"),
            (BATCH, r#"{"batch": []} trailing"#, "malformed_json"),
            (BATCH, "[1, 2]", "body_not_object"),
            (TRACK, r#""hello""#, "body_not_object"),
            (TRACK, "null", "body_not_object"),
            (BATCH, "{}", "missing_batch"),
            (BATCH, r#"{"batch": {"type": "track"}}"#, "batch_not_array"),
            (BATCH, r#"{"batch": null}"#, "batch_not_array"),
            (
                BATCH,
                r#"{"batch": [], "writeKey": 5}"#,
                "invalid_write_key",
            ),
            (TRACK, r#"{"writeKey": ["k"]}"#, "invalid_write_key"),
            (
                BATCH,
                r#"{"batch": [], "context": "x"}"#,
                "invalid_envelope_field",
            ),
            (
                BATCH,
                r#"{"batch": [], "integrations": []}"#,
                "invalid_envelope_field",
            ),
            (
                BATCH,
                r#"{"batch": [], "sentAt": 1714564800}"#,
                "invalid_envelope_field",
            ),
            (TRACK, "{\"a\": \"\u{1}\"}", "malformed_json"),
        ];
        for (route, body, code) in cases {
            let error = request_error(route, body);
            assert_eq!(error.code(), code, "{body:?}: {error}");
        }
    }

    #[test]
    fn request_error_messages_name_the_problem() {
        let error = request_error(BATCH, r#"{"batch": "nope"}"#);
        assert_eq!(
            error.to_string(),
            "`batch` must be an array of messages, got a string"
        );
        let error = request_error(TRACK, "[]");
        assert_eq!(
            error.to_string(),
            "the request body must be a JSON object, got an array"
        );
        let error = request_error(BATCH, r#"{"batch": [], "context": 1}"#);
        assert_eq!(
            error.to_string(),
            "batch-level `context` must be an object, got a number"
        );
    }

    #[test]
    fn malformed_json_reports_line_and_column() {
        let body = "{\"batch\": [\n  {\"type\": \"track\",}\n]}";
        let error = request_error(BATCH, body);
        let RequestError::MalformedJson { line, column, .. } = &error else {
            panic!("{error:?}");
        };
        assert_eq!((*line, *column), (2, 20));
        assert!(
            error.to_string().ends_with("at line 2 column 20"),
            "{error}"
        );
    }

    #[test]
    fn write_key_is_read_from_the_body() {
        let envelope = parse_envelope(br#"{"batch": [], "writeKey": "wk"}"#, BATCH).unwrap();
        assert_eq!(envelope.write_key(), Some("wk"));
        assert!(envelope.is_empty());
        let envelope = parse_envelope(br#"{"writeKey": "wk", "userId": "u"}"#, IDENTIFY).unwrap();
        assert_eq!(envelope.write_key(), Some("wk"));
        assert_eq!(envelope.len(), 1);
        for body in [
            r#"{"batch": [], "writeKey": null}"#,
            r#"{"batch": [], "writeKey": ""}"#,
            r#"{"batch": []}"#,
        ] {
            assert_eq!(
                parse_envelope(body.as_bytes(), BATCH).unwrap().write_key(),
                None,
                "{body}"
            );
        }
    }

    #[test]
    fn byte_order_mark_and_surrounding_whitespace_are_skipped() {
        let body = b"\xEF\xBB\xBF\n {\"userId\": \"u\", \"event\": \"E\"} \n";
        let outcome = parse_envelope(body, TRACK).unwrap().into_messages(&ctx());
        assert!(outcome[0].is_ok());
    }

    #[test]
    fn empty_batch_has_no_messages() {
        assert!(run(BATCH, r#"{"batch": []}"#).is_empty());
    }

    #[test]
    fn unknown_batch_level_fields_are_ignored() {
        let body = r#"{"batch": [{"type": "track", "userId": "u", "event": "E"}], "requestId": {"a": [1]}}"#;
        let event = run_one(BATCH, body).unwrap();
        assert!(event.extra.is_empty(), "{:?}", event.extra);
    }

    // ---- event types ----

    #[test]
    fn every_event_type_is_accepted_on_its_route_and_in_a_batch() {
        for kind in EventType::ALL {
            let message = json!({
                "type": kind.as_str(),
                "userId": "u1",
                "event": "Order Completed",
                "groupId": "g1",
                "previousId": "p1",
            });
            let want = || accept(json!({ "type": kind.as_str(), "userId": "u1", "source": "web" }));
            let event = check(Route::Single(kind), message.clone(), want()).event();
            assert_eq!(event.kind, kind);
            let event = check(BATCH, message, want()).event();
            assert_eq!(event.kind, kind);
        }
    }

    #[test]
    fn single_route_infers_a_missing_type() {
        check(
            TRACK,
            json!({"userId": "u", "event": "E"}),
            accept(json!({"type": "track"})),
        );
        check(
            PAGE,
            json!({"userId": "u", "type": null}),
            accept(json!({"type": "page"})),
        );
        check(
            IDENTIFY,
            json!({"userId": "u", "type": ""}),
            accept(json!({"type": "identify"})),
        );
        check(
            ALIAS,
            json!({"userId": "u", "previousId": "a", "type": "alias"}),
            accept(json!({"type": "alias"})),
        );
    }

    #[test]
    fn single_route_rejects_a_different_type() {
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "type": "identify"}),
            reject("invalid_type", Some("type")),
        );
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "type": "Track"}),
            reject("invalid_type", Some("type")),
        );
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "type": 1}),
            reject("invalid_field", Some("type")),
        );
    }

    #[test]
    fn batch_items_need_a_known_type() {
        check(
            BATCH,
            json!({"userId": "u"}),
            reject("missing_type", Some("type")),
        );
        check(
            BATCH,
            json!({"userId": "u", "type": null}),
            reject("missing_type", Some("type")),
        );
        check(
            BATCH,
            json!({"userId": "u", "type": ""}),
            reject("missing_type", Some("type")),
        );
        check(
            BATCH,
            json!({"userId": "u", "type": "purchase"}),
            reject("unknown_type", Some("type")),
        );
        check(
            BATCH,
            json!({"userId": "u", "type": "TRACK", "event": "E"}),
            reject("unknown_type", Some("type")),
        );
        check(
            BATCH,
            json!({"userId": "u", "type": ["track"]}),
            reject("invalid_field", Some("type")),
        );
    }

    // ---- identity ----

    #[test]
    fn null_and_blank_ids_count_as_absent() {
        check(
            TRACK,
            json!({"userId": null, "anonymousId": "a1", "event": "E"}),
            accept(json!({"userId": null, "anonymousId": "a1"})),
        );
        check(
            TRACK,
            json!({"userId": "", "anonymousId": "a1", "event": "E"}),
            accept(json!({"userId": null, "anonymousId": "a1"})),
        );
        check(
            TRACK,
            json!({"userId": "u1", "anonymousId": "  ", "event": "E"}),
            accept(json!({"userId": "u1", "anonymousId": null})),
        );
        check(
            TRACK,
            json!({"userId": " u1 ", "event": "E"}),
            accept(json!({"userId": " u1 "})),
        );
    }

    #[test]
    fn missing_identity_is_rejected() {
        check(
            TRACK,
            json!({"event": "E"}),
            reject("missing_identity", None),
        );
        check(
            TRACK,
            json!({"userId": null, "anonymousId": null, "event": "E"}),
            reject("missing_identity", None),
        );
        check(
            BATCH,
            json!({"type": "identify", "userId": "", "anonymousId": " "}),
            reject("missing_identity", None),
        );
    }

    #[test]
    fn whole_number_ids_become_strings() {
        check(
            TRACK,
            json!({"userId": 42, "anonymousId": -7, "event": "E"}),
            accept(json!({"userId": "42", "anonymousId": "-7"})),
        );
        check(
            TRACK,
            json!({"userId": 18446744073709551615_u64, "event": "E"}),
            accept(json!({"userId": "18446744073709551615"})),
        );
        check(
            GROUP,
            json!({"userId": "u", "groupId": 9}),
            accept(json!({"groupId": "9"})),
        );
        check(
            ALIAS,
            json!({"userId": "u", "previousId": 0}),
            accept(json!({"previousId": "0"})),
        );
        check(
            TRACK,
            json!({"userId": 1.5, "event": "E"}),
            reject("invalid_field", Some("userId")),
        );
        check(
            TRACK,
            json!({"anonymousId": 1.0, "event": "E"}),
            reject("invalid_field", Some("anonymousId")),
        );
    }

    #[test]
    fn non_scalar_ids_are_rejected() {
        check(
            TRACK,
            json!({"userId": {"id": 1}, "event": "E"}),
            reject("invalid_field", Some("userId")),
        );
        check(
            TRACK,
            json!({"userId": "u", "anonymousId": ["a"], "event": "E"}),
            reject("invalid_field", Some("anonymousId")),
        );
        check(
            TRACK,
            json!({"userId": true, "event": "E"}),
            reject("invalid_field", Some("userId")),
        );
        check(
            GROUP,
            json!({"userId": "u", "groupId": false}),
            reject("invalid_field", Some("groupId")),
        );
    }

    // ---- required fields per type ----

    #[test]
    fn track_needs_an_event_name() {
        check(
            TRACK,
            json!({"userId": "u"}),
            reject("missing_event", Some("event")),
        );
        check(
            TRACK,
            json!({"userId": "u", "event": null}),
            reject("missing_event", Some("event")),
        );
        check(
            TRACK,
            json!({"userId": "u", "event": ""}),
            reject("missing_event", Some("event")),
        );
        check(
            TRACK,
            json!({"userId": "u", "event": "  "}),
            reject("missing_event", Some("event")),
        );
        check(
            TRACK,
            json!({"userId": "u", "event": 5}),
            reject("invalid_field", Some("event")),
        );
        check(
            TRACK,
            json!({"userId": "u", "event": "Signed Up"}),
            accept(json!({"event": "Signed Up"})),
        );
        // Other types need no event name.
        check(PAGE, json!({"userId": "u"}), accept(json!({"event": null})));
    }

    #[test]
    fn group_needs_a_group_id_and_alias_a_previous_id() {
        check(
            GROUP,
            json!({"userId": "u"}),
            reject("missing_group_id", Some("groupId")),
        );
        check(
            GROUP,
            json!({"userId": "u", "groupId": ""}),
            reject("missing_group_id", Some("groupId")),
        );
        check(
            GROUP,
            json!({"userId": "u", "groupId": "g"}),
            accept(json!({"groupId": "g"})),
        );
        check(
            ALIAS,
            json!({"userId": "u"}),
            reject("missing_previous_id", Some("previousId")),
        );
        check(
            ALIAS,
            json!({"userId": "u", "previousId": null}),
            reject("missing_previous_id", Some("previousId")),
        );
        check(
            ALIAS,
            json!({"userId": "u", "previousId": "anon-1"}),
            accept(json!({"previousId": "anon-1"})),
        );
    }

    #[test]
    fn page_and_screen_keep_name_and_category() {
        check(
            PAGE,
            json!({"userId": "u", "name": "Pricing", "category": "Docs", "properties": {"path": "/pricing"}}),
            accept(
                json!({"name": "Pricing", "category": "Docs", "properties": {"path": "/pricing"}}),
            ),
        );
        check(
            Route::Single(EventType::Screen),
            json!({"userId": "u", "name": "Home"}),
            accept(json!({"name": "Home"})),
        );
        check(
            PAGE,
            json!({"userId": "u", "name": 3}),
            reject("invalid_field", Some("name")),
        );
        check(
            PAGE,
            json!({"userId": "u", "category": {}}),
            reject("invalid_field", Some("category")),
        );
    }

    // ---- objects ----

    #[test]
    fn object_fields_must_be_objects() {
        check(
            IDENTIFY,
            json!({"userId": "u", "traits": "vip"}),
            reject("invalid_field", Some("traits")),
        );
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "properties": [1]}),
            reject("invalid_field", Some("properties")),
        );
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "context": 1}),
            reject("invalid_field", Some("context")),
        );
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "integrations": true}),
            reject("invalid_field", Some("integrations")),
        );
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "traits": null, "properties": null, "context": null, "integrations": null}),
            accept(
                json!({"traits": null, "properties": null, "context": null, "integrations": null}),
            ),
        );
        let rejection = check(
            IDENTIFY,
            json!({"userId": "u", "traits": "vip"}),
            reject("invalid_field", Some("traits")),
        )
        .rejection();
        assert_eq!(rejection.reason, "`traits` must be an object, got a string");
    }

    #[test]
    fn identify_traits_merge_over_context_traits() {
        check(
            IDENTIFY,
            json!({"userId": "u", "traits": {"plan": "pro", "address": {"city": "Oslo"}},
                   "context": {"traits": {"plan": "free", "email": "a@b.c", "address": {"country": "NO", "city": "Bergen"}}}}),
            accept(json!({
                "traits": {"plan": "pro", "email": "a@b.c", "address": {"city": "Oslo", "country": "NO"}},
                // context is kept unchanged
                "context": {"traits": {"plan": "free", "email": "a@b.c", "address": {"country": "NO", "city": "Bergen"}}},
            })),
        );
        // RudderStack's mobile SDKs send identify traits only in context.traits.
        check(
            IDENTIFY,
            json!({"userId": "u", "context": {"traits": {"email": "a@b.c"}}}),
            accept(json!({"traits": {"email": "a@b.c"}})),
        );
        check(
            IDENTIFY,
            json!({"userId": "u", "context": {"traits": null}}),
            accept(json!({"traits": null})),
        );
        check(
            IDENTIFY,
            json!({"userId": "u"}),
            accept(json!({"traits": null})),
        );
        check(
            IDENTIFY,
            json!({"userId": "u", "traits": {}}),
            accept(json!({"traits": {}})),
        );
    }

    #[test]
    fn identify_context_traits_must_be_an_object() {
        check(
            IDENTIFY,
            json!({"userId": "u", "context": {"traits": "x"}}),
            reject("invalid_field", Some("context.traits")),
        );
        // Only identify reads context.traits.
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "context": {"traits": "x"}}),
            accept(json!({"context": {"traits": "x"}})),
        );
    }

    #[test]
    fn group_traits_ignore_the_users_context_traits() {
        check(
            GROUP,
            json!({"userId": "u", "groupId": "g", "traits": {"name": "Initech"}, "context": {"traits": {"email": "peter@initech.com"}}}),
            accept(json!({"traits": {"name": "Initech"}})),
        );
        check(
            GROUP,
            json!({"userId": "u", "groupId": "g", "context": {"traits": {"email": "e"}}}),
            accept(json!({"traits": null})),
        );
    }

    // ---- batch-level fields ----

    #[test]
    fn batch_context_is_merged_deeply_under_each_item_context() {
        let body = json!({
            "context": {"ip": "1.2.3.4", "device": {"type": "phone", "name": "iPhone"}, "library": {"name": "batch-lib"}},
            "integrations": {"All": false, "Amplitude": {"session_id": 1}},
            "batch": [
                {"type": "track", "userId": "u", "event": "E",
                 "context": {"device": {"id": "d1", "name": "Pixel"}, "library": "own"},
                 "integrations": {"Amplitude": {"groups": ["g"]}, "All": true}},
                {"type": "track", "userId": "u", "event": "E"},
            ],
        });
        let outcomes = run(BATCH, &body.to_string());
        let first = outcomes[0].as_ref().unwrap();
        assert_eq!(
            Value::Object(first.context.clone()),
            json!({"ip": "1.2.3.4", "device": {"type": "phone", "name": "Pixel", "id": "d1"}, "library": "own"})
        );
        assert_eq!(
            Value::Object(first.integrations.clone()),
            json!({"All": true, "Amplitude": {"session_id": 1, "groups": ["g"]}})
        );
        let second = outcomes[1].as_ref().unwrap();
        assert_eq!(Value::Object(second.context.clone()), body["context"]);
        assert_eq!(
            Value::Object(second.integrations.clone()),
            body["integrations"]
        );
    }

    #[test]
    fn batch_context_gives_identify_its_context_traits() {
        let body = json!({
            "context": {"traits": {"email": "a@b.c", "plan": "free"}},
            "batch": [{"type": "identify", "userId": "u", "traits": {"plan": "pro"}}],
        });
        let event = run_one(BATCH, &body.to_string()).unwrap();
        assert_eq!(
            Value::Object(event.traits.unwrap()),
            json!({"email": "a@b.c", "plan": "pro"})
        );
    }

    #[test]
    fn an_item_with_a_bad_context_is_rejected_even_with_a_batch_context() {
        let body = json!({"context": {"ip": "1.2.3.4"}, "batch": [{"type": "page", "userId": "u", "context": "x"}]});
        let rejection = run_one(BATCH, &body.to_string()).unwrap_err();
        assert_eq!(
            (rejection.code, rejection.field.as_deref()),
            ("invalid_field", Some("context"))
        );
    }

    // ---- timestamps ----

    fn batch_with_sent_at(sent_at: &str, item: Value) -> String {
        json!({"sentAt": sent_at, "batch": [item]}).to_string()
    }

    #[test]
    fn skew_correction_is_received_minus_sent_minus_original() {
        // The client clock is 1 hour 5 minutes slow; the event happened 5.25 s before sending.
        // timestamp = 12:00:00 - (10:55:05.5 - 10:55:00.25) = 11:59:54.75
        let item = json!({"type": "track", "userId": "u", "event": "E", "originalTimestamp": "2024-05-01T10:55:00.25Z"});
        let event = run_one(BATCH, &batch_with_sent_at("2024-05-01T10:55:05.5Z", item)).unwrap();
        assert_eq!(event.timestamp, ts("2024-05-01T11:59:54.75Z"));
        assert_eq!(
            event.original_timestamp.as_deref(),
            Some("2024-05-01T10:55:00.25Z")
        );
        assert_eq!(event.sent_at.as_deref(), Some("2024-05-01T10:55:05.5Z"));
        assert_eq!(event.received_at, ts(RECEIVED));

        // A client clock that is fast is corrected backwards alike, across offsets.
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "timestamp": "2024-05-01T15:00:00+02:00", "sentAt": "2024-05-01T13:00:30Z"}),
            accept(
                json!({"timestamp": "2024-05-01T11:59:30Z", "originalTimestamp": "2024-05-01T15:00:00+02:00"}),
            ),
        );
    }

    #[test]
    fn a_server_library_timestamp_is_corrected_like_an_original_timestamp() {
        // Segment: originalTimestamp is "the timestamp value manually passed in through
        // server-side libraries", and is corrected with sentAt. A historical import:
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "timestamp": "2012-12-02T00:30:08.276Z", "sentAt": "2024-05-01T11:59:59Z"}),
            accept(
                json!({"timestamp": "2012-12-02T00:30:09.276Z", "originalTimestamp": "2012-12-02T00:30:08.276Z", "sentAt": "2024-05-01T11:59:59Z"}),
            ),
        );
    }

    #[test]
    fn a_message_with_timestamp_and_original_timestamp_keeps_its_timestamp() {
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "timestamp": "2024-05-01T09:00:00Z",
                   "originalTimestamp": "2024-05-01T08:00:00Z", "sentAt": "2024-05-01T08:00:10Z"}),
            accept(
                json!({"timestamp": "2024-05-01T09:00:00Z", "originalTimestamp": "2024-05-01T08:00:00Z"}),
            ),
        );
    }

    #[test]
    fn without_sent_at_the_client_time_is_kept_and_without_any_time_received_at_is_used() {
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "timestamp": "2020-01-01T00:00:00Z"}),
            accept(
                json!({"timestamp": "2020-01-01T00:00:00Z", "originalTimestamp": "2020-01-01T00:00:00Z", "sentAt": null}),
            ),
        );
        check(
            TRACK,
            json!({"userId": "u", "event": "E"}),
            accept(
                json!({"timestamp": RECEIVED, "receivedAt": RECEIVED, "originalTimestamp": null, "sentAt": null}),
            ),
        );
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "timestamp": null, "originalTimestamp": ""}),
            accept(json!({"timestamp": RECEIVED, "originalTimestamp": null})),
        );
        // sentAt alone changes nothing, but is kept.
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "sentAt": "2024-05-01T00:00:00Z"}),
            accept(json!({"timestamp": RECEIVED, "sentAt": "2024-05-01T00:00:00Z"})),
        );
    }

    #[test]
    fn message_sent_at_overrides_batch_sent_at() {
        let body = json!({
            "sentAt": "2024-05-01T11:00:00Z",
            "batch": [
                {"type": "track", "userId": "u", "event": "E", "timestamp": "2024-05-01T10:59:00Z", "sentAt": "2024-05-01T11:00:30Z"},
                {"type": "track", "userId": "u", "event": "E", "timestamp": "2024-05-01T10:59:00Z"},
                {"type": "track", "userId": "u", "event": "E", "timestamp": "2024-05-01T10:59:00Z", "sentAt": null},
            ],
        });
        let outcomes = run(BATCH, &body.to_string());
        let events: Vec<&Event> = outcomes.iter().map(|o| o.as_ref().unwrap()).collect();
        assert_eq!(events[0].timestamp, ts("2024-05-01T11:58:30Z"));
        assert_eq!(events[0].sent_at.as_deref(), Some("2024-05-01T11:00:30Z"));
        assert_eq!(events[1].timestamp, ts("2024-05-01T11:59:00Z"));
        assert_eq!(events[1].sent_at.as_deref(), Some("2024-05-01T11:00:00Z"));
        assert_eq!(events[2].timestamp, ts("2024-05-01T11:59:00Z"));
    }

    #[test]
    fn an_unparseable_sent_at_rejects_the_message() {
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "sentAt": "now"}),
            reject("invalid_timestamp", Some("sentAt")),
        );
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "sentAt": 1714564800}),
            reject("invalid_timestamp", Some("sentAt")),
        );
        // A bad batch-level sentAt rejects only the messages that use it.
        let body = json!({
            "sentAt": "soon",
            "batch": [
                {"type": "track", "userId": "u", "event": "E"},
                {"type": "track", "userId": "u", "event": "E", "sentAt": "2024-05-01T11:00:00Z"},
            ],
        });
        let outcomes = run(BATCH, &body.to_string());
        let rejection = outcomes[0].as_ref().unwrap_err();
        assert_eq!(
            (rejection.code, rejection.field.as_deref()),
            ("invalid_timestamp", Some("sentAt"))
        );
        assert!(
            rejection.reason.starts_with("batch-level `sentAt`"),
            "{}",
            rejection.reason
        );
        assert!(outcomes[1].is_ok());
    }

    #[test]
    fn timestamps_after_received_at_are_clamped() {
        // originalTimestamp after sentAt would put the event 10 s in the future.
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "originalTimestamp": "2024-05-01T08:00:10Z", "sentAt": "2024-05-01T08:00:00Z"}),
            accept(json!({"timestamp": RECEIVED, "originalTimestamp": "2024-05-01T08:00:10Z"})),
        );
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "timestamp": "2030-01-01T00:00:00Z"}),
            accept(json!({"timestamp": RECEIVED})),
        );
        // Exactly receivedAt and older are kept.
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "timestamp": RECEIVED}),
            accept(json!({"timestamp": RECEIVED})),
        );
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "timestamp": "0001-01-01T00:00:00Z"}),
            accept(json!({"timestamp": "0001-01-01T00:00:00Z"})),
        );
    }

    #[test]
    fn a_correction_out_of_range_is_rejected() {
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "originalTimestamp": "9999-12-30T00:00:00Z", "sentAt": "0000-01-01T00:00:00Z"}),
            reject("invalid_timestamp", Some("originalTimestamp")),
        );
    }

    #[test]
    fn fractional_digits_zero_to_nine_are_accepted() {
        let cases = [
            ("2024-05-01T10:00:00Z", 0),
            ("2024-05-01T10:00:00.1Z", 100_000_000),
            ("2024-05-01T10:00:00.12Z", 120_000_000),
            ("2024-05-01T10:00:00.123Z", 123_000_000),
            ("2024-05-01T10:00:00.1234Z", 123_400_000),
            ("2024-05-01T10:00:00.12345Z", 123_450_000),
            ("2024-05-01T10:00:00.123456Z", 123_456_000),
            ("2024-05-01T10:00:00.1234567Z", 123_456_700),
            ("2024-05-01T10:00:00.12345678Z", 123_456_780),
            ("2024-05-01T10:00:00.123456789Z", 123_456_789),
            ("2024-05-01T10:00:00.000000001Z", 1),
        ];
        for (text, nanos) in cases {
            let event = check(
                TRACK,
                json!({"userId": "u", "event": "E", "timestamp": text}),
                accept(json!({})),
            )
            .event();
            assert_eq!(event.timestamp.subsec_nanosecond(), nanos, "{text}");
            assert_eq!(
                event.timestamp.as_second(),
                ts("2024-05-01T10:00:00Z").as_second(),
                "{text}"
            );
        }
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "timestamp": "2024-05-01T10:00:00.1234567891Z"}),
            reject("invalid_timestamp", Some("timestamp")),
        );
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "timestamp": "2024-05-01T10:00:00.Z"}),
            reject("invalid_timestamp", Some("timestamp")),
        );
    }

    #[test]
    fn offsets_and_lenient_forms_are_accepted() {
        let cases = [
            ("2024-05-01T12:00:00+02:00", "2024-05-01T10:00:00Z"),
            ("2024-05-01T12:00:00+0200", "2024-05-01T10:00:00Z"),
            ("2024-05-01T05:30:00-04:30", "2024-05-01T10:00:00Z"),
            ("2024-05-01T10:00:00-00:00", "2024-05-01T10:00:00Z"),
            ("2024-05-01T10:00:00+00:00", "2024-05-01T10:00:00Z"),
            ("2024-05-01t10:00:00z", "2024-05-01T10:00:00Z"),
            ("2024-05-01 10:00:00Z", "2024-05-01T10:00:00Z"),
            ("2024-05-02T09:59:00+23:59", "2024-05-01T10:00:00Z"),
            ("2016-12-31T23:59:60Z", "2016-12-31T23:59:59Z"),
            ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00Z"),
        ];
        for (text, want) in cases {
            assert_eq!(parse_rfc3339(text), Ok(ts(want)), "{text}");
        }
    }

    #[test]
    fn bad_timestamps_are_rejected() {
        let cases = [
            "2024-13-01T00:00:00Z",
            "2024-00-10T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "yesterday",
            "2024-01-01 00:00:00",
            "2024-01-01T00:00:00",
            "2024-01-01",
            "2024-01-01T00:00Z",
            "20240101T000000Z",
            "2015-2-02T00:30:08.276Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T23:60:00Z",
            "2024-01-01T23:59:61Z",
            "2024-01-01T00:00:00+24:00",
            "2024-01-01T00:00:00+02",
            "2024-01-01T00:00:00,5Z",
            "2024-01-01T00:00:00Z[UTC]",
            "2024-01-01T00:00:00ZZ",
            " 2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00Z ",
            "+2024-01-01T00:00:00Z",
            "1714564800",
            "２０２４-01-01T00:00:00Z",
        ];
        for text in cases {
            assert!(parse_rfc3339(text).is_err(), "{text:?} parsed");
            let rejection = check(
                TRACK,
                json!({"userId": "u", "event": "E", "timestamp": text}),
                reject("invalid_timestamp", Some("timestamp")),
            )
            .rejection();
            assert!(
                rejection.reason.contains("not an ISO-8601 date"),
                "{}",
                rejection.reason
            );
        }
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "timestamp": 1714564800000_u64}),
            reject("invalid_timestamp", Some("timestamp")),
        );
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "originalTimestamp": "yesterday"}),
            reject("invalid_timestamp", Some("originalTimestamp")),
        );
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "originalTimestamp": {}}),
            reject("invalid_timestamp", Some("originalTimestamp")),
        );
    }

    #[test]
    fn timestamp_parser_agrees_with_jiff_on_what_both_accept() {
        let cases = [
            "2024-05-01T10:00:00Z",
            "1970-01-01T00:00:00.000000001Z",
            "0000-01-01T00:00:00Z",
            "9999-12-30T21:59:59.999999999Z",
            "2024-05-01T12:00:00.5+02:00",
            "2024-05-01T12:00:00.5-11:45",
            "2024-05-01 12:00:00+0200",
            "2024-05-01t12:00:00z",
            "2016-12-31T23:59:60.5Z",
        ];
        for text in cases {
            assert_eq!(
                parse_rfc3339(text),
                Ok(text.parse::<Timestamp>().unwrap()),
                "{text}"
            );
        }
    }

    // ---- size and shape ----

    #[test]
    fn an_oversize_message_is_rejected_without_being_parsed() {
        let limits = Limits {
            max_message_bytes: 100,
        };
        let ctx = IngestContext { limits, ..ctx() };
        // 100 bytes exactly is accepted.
        let fits = format!(
            r#"{{"type":"track","userId":"u","event":"{}"}}"#,
            "x".repeat(100 - 40)
        );
        assert_eq!(fits.len(), 100);
        // Over the limit: rejected as too large although it has no type and no identity.
        let over = format!(r#"{{"pad":"{}"}}"#, "x".repeat(100));
        let body = format!(r#"{{"batch": [{fits}, {over}]}}"#);
        let outcomes = parse_envelope(body.as_bytes(), BATCH)
            .unwrap()
            .into_messages(&ctx);
        assert!(outcomes[0].is_ok());
        let rejection = outcomes[1].as_ref().unwrap_err();
        assert_eq!(
            (rejection.code, rejection.index, rejection.field.as_deref()),
            ("message_too_large", 1, None)
        );
        assert_eq!(rejection.raw.get(), over);
        assert_eq!(
            rejection.reason,
            "the message is 110 bytes, over the limit of 100 bytes"
        );

        // A single-message route checks the body.
        let body = format!(r#"{{"userId":"u","event":"{}"}}"#, "x".repeat(100));
        let outcomes = parse_envelope(body.as_bytes(), TRACK)
            .unwrap()
            .into_messages(&ctx);
        assert_eq!(outcomes[0].as_ref().unwrap_err().code, "message_too_large");

        // The refusal names the message's own id (so a retry is known in the quarantine).
        let named = format!(r#"{{"messageId":"m-big","pad":"{}"}}"#, "x".repeat(100));
        let body = format!(r#"{{"batch": [{named}]}}"#);
        let outcomes = parse_envelope(body.as_bytes(), BATCH)
            .unwrap()
            .into_messages(&ctx);
        let rejection = outcomes[0].as_ref().unwrap_err();
        assert_eq!(
            (rejection.code, rejection.message_id.as_deref()),
            ("message_too_large", Some("m-big"))
        );
        let body = format!(
            r#"{{"userId":"u","messageId":"m-big","event":"{}"}}"#,
            "x".repeat(100)
        );
        let outcomes = parse_envelope(body.as_bytes(), TRACK)
            .unwrap()
            .into_messages(&ctx);
        assert_eq!(
            outcomes[0].as_ref().unwrap_err().message_id.as_deref(),
            Some("m-big")
        );
    }

    #[test]
    fn non_object_batch_items_are_rejected() {
        let body = r#"{"batch": [1, "x", null, [], true, {"type": "track", "userId": "u", "event": "E"}]}"#;
        let outcomes = run(BATCH, body);
        let kinds = ["a number", "a string", "null", "an array", "a boolean"];
        for (index, kind) in kinds.into_iter().enumerate() {
            let rejection = outcomes[index].as_ref().unwrap_err();
            assert_eq!((rejection.code, rejection.index), ("not_an_object", index));
            assert!(rejection.reason.ends_with(kind), "{}", rejection.reason);
        }
        assert!(outcomes[5].is_ok());
    }

    // ---- messageId ----

    #[test]
    fn a_message_id_is_generated_when_missing() {
        let mut ids = std::collections::HashSet::new();
        let messages = [
            json!({"userId": "u", "event": "E"}),
            json!({"userId": "u", "event": "E", "messageId": null}),
            json!({"userId": "u", "event": "E", "messageId": ""}),
            json!({"userId": "u", "event": "E", "messageId": "   "}),
        ];
        for message in messages {
            let event = check(TRACK, message, accept(json!({}))).event();
            let uuid = event
                .message_id
                .strip_prefix(GENERATED_MESSAGE_ID_PREFIX)
                .unwrap();
            assert_eq!(uuid::Uuid::parse_str(uuid).unwrap().get_version_num(), 7);
            assert!(
                ids.insert(event.message_id.clone()),
                "duplicate {}",
                event.message_id
            );
        }
        // A rejected message gets no generated id.
        let rejection = check(
            TRACK,
            json!({"userId": "u"}),
            reject("missing_event", Some("event")),
        )
        .rejection();
        assert_eq!(rejection.message_id, None);
    }

    #[test]
    fn a_message_id_is_kept_as_sent() {
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "messageId": " ajs-next-1 "}),
            accept(json!({"messageId": " ajs-next-1 "})),
        );
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "messageId": 123}),
            accept(json!({"messageId": "123"})),
        );
        let hundred = "é".repeat(MAX_MESSAGE_ID_CHARS);
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "messageId": hundred}),
            accept(json!({"messageId": hundred})),
        );
    }

    #[test]
    fn an_unusable_message_id_is_rejected() {
        let long = "m".repeat(MAX_MESSAGE_ID_CHARS + 1);
        let rejection = check(
            TRACK,
            json!({"userId": "u", "event": "E", "messageId": long}),
            reject("invalid_field", Some("messageId")),
        )
        .rejection();
        assert_eq!(rejection.message_id, None);
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "messageId": {"id": 1}}),
            reject("invalid_field", Some("messageId")),
        );
        check(
            TRACK,
            json!({"userId": "u", "event": "E", "messageId": 1.5}),
            reject("invalid_field", Some("messageId")),
        );
    }

    // ---- extra fields ----

    #[test]
    fn unknown_fields_are_kept_in_extra() {
        let event = check(
            TRACK,
            json!({"userId": "u", "event": "E", "version": 2, "channel": "server", "_metadata": {"bundled": ["x"]}, "custom": null}),
            accept(json!({"version": 2, "channel": "server", "_metadata": {"bundled": ["x"]}})),
        ).event();
        assert_eq!(
            Value::Object(event.extra),
            json!({"version": 2, "channel": "server", "_metadata": {"bundled": ["x"]}, "custom": null})
        );
    }

    #[test]
    fn envelope_and_server_owned_fields_are_not_kept() {
        let body = json!({
            "writeKey": "wk",
            "sentAt": "2024-05-01T11:59:59Z",
            "batch": [{"type": "track", "userId": "u", "event": "E", "writeKey": "wk", "batch": [1],
                       "receivedAt": "1999-01-01T00:00:00Z", "source": "spoofed", "sentAt": "2024-05-01T11:59:59Z"}],
        });
        let event = run_one(BATCH, &body.to_string()).unwrap();
        assert!(event.extra.is_empty(), "{:?}", event.extra);
        assert_eq!(event.received_at, ts(RECEIVED));
        assert_eq!(event.source, "web");
        let event = run_one(
            TRACK,
            r#"{"writeKey": "wk", "userId": "u", "event": "E", "type": "track"}"#,
        )
        .unwrap();
        assert!(event.extra.is_empty(), "{:?}", event.extra);
    }

    // ---- outcomes ----

    #[test]
    fn one_outcome_per_message_in_order_with_index_id_and_raw() {
        let body = concat!(
            r#"{"batch": [ {"type":"track","userId":"u","event":"A"},"#,
            r#"  {"messageId": "m-2",   "type": "track", "userId": "u"} ,"#,
            r#"{"type":"page","anonymousId":"a"} ]}"#
        );
        let outcomes = run(BATCH, body);
        assert_eq!(outcomes.len(), 3);
        assert_eq!(outcomes[0].as_ref().unwrap().event.as_deref(), Some("A"));
        let rejection = outcomes[1].as_ref().unwrap_err();
        assert_eq!(rejection.index, 1);
        assert_eq!(rejection.message_id.as_deref(), Some("m-2"));
        assert_eq!(rejection.code, "missing_event");
        // Exactly as received: spacing and key order kept, surrounding whitespace dropped.
        assert_eq!(
            rejection.raw.get(),
            r#"{"messageId": "m-2",   "type": "track", "userId": "u"}"#
        );
        assert_eq!(outcomes[2].as_ref().unwrap().kind, EventType::Page);
    }

    #[test]
    fn a_single_route_rejection_keeps_the_whole_body() {
        let body = "{\"writeKey\": \"wk\",\n \"messageId\": 7, \"userId\": \"u\"}";
        let rejection = run_one(TRACK, &format!("  {body}\n")).unwrap_err();
        assert_eq!(rejection.index, 0);
        assert_eq!(rejection.message_id.as_deref(), Some("7"));
        assert_eq!(rejection.raw.get(), body);
        let quarantined = rejection.into_quarantined(&ctx());
        assert_eq!(
            (quarantined.source.as_str(), quarantined.code.as_str()),
            ("web", "missing_event")
        );
        assert_eq!(quarantined.received_at, ts(RECEIVED));
    }

    #[test]
    fn accepted_events_round_trip_through_serde() {
        let body = json!({
            "batch": [
                {"type": "identify", "userId": 5, "traits": {"a": 1}, "context": {"traits": {"b": 2}}, "version": 2},
                {"type": "track", "anonymousId": "a", "event": "E", "properties": {"p": [1]}, "timestamp": "2024-05-01T11:00:00.123456789+01:00", "sentAt": "2024-05-01T10:00:01Z", "extra": {"x": 1}},
                {"type": "page", "userId": "u", "name": "N", "category": "C", "receivedAt": 5, "source": {}},
                {"type": "group", "userId": "u", "groupId": "g", "traits": {"n": 1}},
                {"type": "alias", "userId": "u", "previousId": "p", "integrations": {"All": true}},
                {"type": "screen", "userId": "u", "name": "S"},
            ],
        });
        for outcome in run(BATCH, &body.to_string()) {
            let event = outcome.unwrap();
            let back: Event =
                serde_json::from_value(serde_json::to_value(&event).unwrap()).unwrap();
            assert_eq!(back, event);
        }
    }

    #[test]
    fn real_sdk_payloads_are_accepted() {
        // Shaped like analytics.js (analytics-next) batching: `timestamp` + batch-level `sentAt`,
        // `userId: null`, `writeKey` and `_metadata` in each event.
        let analytics_next = r#"{
          "batch": [{
            "timestamp": "2024-05-01T11:59:58.512Z",
            "integrations": {},
            "type": "page",
            "properties": {"path": "/", "referrer": "", "search": "", "title": "Home", "url": "https://example.com/"},
            "name": null,
            "context": {"page": {"path": "/"}, "userAgent": "Mozilla/5.0", "locale": "en-US", "library": {"name": "analytics.js", "version": "npm:next-1.70.0"}},
            "messageId": "ajs-next-1714564798512-4b6b2f8e-5d2c-4a6f-9d0c-1b5c1b1c2d3e",
            "anonymousId": "b6b2f8e5-d2c4-4a6f-9d0c-1b5c1b1c2d3e",
            "userId": null,
            "writeKey": "WK",
            "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []}
          }],
          "writeKey": "WK",
          "sentAt": "2024-05-01T11:59:59.012Z"
        }"#;
        let envelope = parse_envelope(analytics_next.as_bytes(), BATCH).unwrap();
        assert_eq!(envelope.write_key(), Some("WK"));
        let event = envelope.into_messages(&ctx()).remove(0).unwrap();
        assert_eq!(event.kind, EventType::Page);
        assert_eq!(event.timestamp, ts("2024-05-01T11:59:59.5Z"));
        assert_eq!(event.name, None);
        assert!(event.extra.contains_key("_metadata"));

        // Shaped like RudderStack's JavaScript SDK: `originalTimestamp`, per-event `sentAt`,
        // `channel`, empty `userId`, traits in context.
        let rudder = r#"{
          "batch": [{
            "channel": "web",
            "context": {"app": {"name": "RudderLabs JavaScript SDK"}, "traits": {"email": "a@b.c"}, "library": {"name": "RudderLabs JavaScript SDK", "version": "3.0.0"}},
            "type": "identify",
            "messageId": "5d8b1c5e-8c3f-4c1e-9a57-1c2d3e4f5a6b",
            "originalTimestamp": "2024-05-01T11:59:50.000Z",
            "anonymousId": "anon-1",
            "userId": "",
            "integrations": {"All": true},
            "sentAt": "2024-05-01T11:59:55.000Z"
          }],
          "sentAt": "2024-05-01T11:59:55.100Z"
        }"#;
        let event = run_one(BATCH, rudder).unwrap();
        assert_eq!(event.timestamp, ts("2024-05-01T11:59:55Z"));
        assert_eq!(event.user_id, None);
        assert_eq!(
            Value::Object(event.traits.unwrap()),
            json!({"email": "a@b.c"})
        );
        assert_eq!(event.extra.get("channel"), Some(&json!("web")));

        // Segment's HTTP API identify example, posted to /v1/identify.
        let http_api = r#"{"userId": "019mr8mf4r", "traits": {"email": "pgibbons@example.com", "name": "Peter Gibbons", "industry": "Technology"},
          "context": {"ip": "24.5.68.47"}, "timestamp": "2012-12-02T00:30:08.276Z", "writeKey": "YOUR_WRITE_KEY"}"#;
        let envelope = parse_envelope(http_api.as_bytes(), IDENTIFY).unwrap();
        assert_eq!(envelope.write_key(), Some("YOUR_WRITE_KEY"));
        let event = envelope.into_messages(&ctx()).remove(0).unwrap();
        assert_eq!(event.timestamp, ts("2012-12-02T00:30:08.276Z"));
        assert_eq!(event.traits.unwrap().len(), 3);
    }
}
