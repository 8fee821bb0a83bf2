//! Signed webhooks: third-party services (shops, payment providers, code hosts, email
//! providers) `POST` JSON to `/v1/webhooks/{source}`, and each configured source turns the
//! verified body into Segment-style [`Event`]s.
//!
//! This module is a library without I/O: the HTTP handler (in `trib-api`) reads the request and
//! stores the results. A handler runs four steps:
//!
//! 1. [`WebhookSource::verify`] checks the request: the HMAC signature over the configured
//!    signed content, the timestamp's freshness (when a timestamp header is configured), the
//!    body's JSON, the delivery id, and that the delivery was not accepted before. Any failure
//!    refuses the whole request with a [`WebhookError`] (its [`code`](WebhookError::code) and
//!    [`status`](WebhookError::status)); nothing of it is stored.
//! 2. [`WebhookSource::map`] turns the verified body into one outcome per event: an [`Event`]
//!    for the event log (after the [`trib_core::EventGate`]) or a [`QuarantinedMessage`] for the
//!    quarantine. A body no mapping applies to, or an element without identity, is quarantined,
//!    not refused: the sender could not fix it by retrying.
//! 3. The handler stores both durably.
//! 4. [`WebhookSource::mark_accepted`] records the delivery for replay refusal. Only a stored
//!    delivery is recorded, so a delivery that failed to store can be retried by its sender.
//!
//! ```text
//! verify(headers, body, now) ──► VerifiedDelivery ──► map(received_at) ──► Vec<Result<Event, QuarantinedMessage>>
//!                                         │                                        │ stored
//!                                         └──────────────► mark_accepted(now) ◄────┘
//! ```
//!
//! # Decisions
//!
//! * **Constant-time comparison.** The signature is decoded and compared with
//!   `Mac::verify_slice` (RustCrypto `hmac`), never with `==`. Its length is not secret and is
//!   checked first (a wrong length is `malformed_signature`).
//! * **Order of checks.** Signature, then timestamp freshness, then body and delivery id, then
//!   replay. So an unauthenticated request learns nothing but `401`, and `stale_timestamp` or
//!   `replayed_delivery` are only ever answered to authentic requests. The timestamp is only
//!   trusted when it is signed: validation refuses a `timestamp_header` whose value is not part
//!   of `signed_payload`.
//! * **`messageId`.** The delivery id when one is configured, else `trib-` and the first 128
//!   bits of the body's SHA-256 in hex. A mapping with `each` appends `-<n>` (the element's
//!   position, from 0) to every event, whatever the number of elements, so an id does not change
//!   with the size of the batch.
//! * **Replay refusal is layered.** In memory, each [`WebhookSource`] remembers the deliveries it
//!   accepted (by delivery id, else by signature) for the replay window, and refuses them again
//!   with `409 replayed_delivery`. The set is bounded ([`MAX_REMEMBERED_DELIVERIES`], oldest
//!   forgotten first) and lost on restart. Behind it, the event log deduplicates `messageId`s per
//!   source within its own window, and the `messageId` is the delivery id (or the body hash), so a
//!   delivery replayed after a restart, after eviction, or concurrently with its first copy
//!   (both pass [`verify`](WebhookSource::verify) before either is marked) still yields no second
//!   event. With a timestamp header, a delivery older than the tolerance is refused as stale
//!   whatever the set says.
//! * **Replay key without a delivery id.** The signature: with a signed timestamp, every send
//!   has its own, so a sender's retry (new timestamp) is accepted and then deduplicated by the
//!   event log through the body-hash `messageId`; without one, resending an identical body is
//!   refused within the window.
//! * **Mapping selection.** Mappings are tried in order; the first whose `when` holds for the
//!   body (conditions read `$` paths and headers) is used for the whole body. With `each`, it
//!   emits one event per selected element; its field paths may read the element (`@`) and the
//!   whole body (`$`), e.g. a line item's SKU with the order's customer id. No applicable
//!   mapping → one quarantine record `unmapped`; an `each` that selects nothing →
//!   `nothing_selected` (a typo in a path must not drop deliveries silently).
//! * **Values** are copied as sent: identifiers (whole numbers become their decimal string),
//!   emails and properties are normalized by the source's [`trib_core::EventGate`], not here.
//!   Identifiers go to `context.externalIds` as `{id, type}` (email and phone also to `traits`
//!   of an identify). The event time is clamped to `receivedAt`, as in the Segment API.
//! * **Quarantine records** keep the whole body for whole-body mappings (as received), and the
//!   element (re-serialized, keys sorted) for `each` mappings; `origin` is `webhook`, `index` the
//!   element's position, `messageId` the would-be event's, so a retried delivery is not
//!   quarantined twice. Their `replayContext` keeps what mapping them again needs: the
//!   delivery id, the delivery's `messageId`, the values of the headers that conditions read
//!   (never the signature header's: at replay it only counts as present), the element's position, and, in the first refused element
//!   of a delivery, the body (the delivery's other refused elements follow it in the
//!   quarantine and leave it out). [`WebhookSource::remap`] maps such a record again with the
//!   source's *current* mappings, without checking the signature again (it was checked at
//!   receipt), giving the same `messageId`s as at receipt, so a replay and a later retry of
//!   the delivery by its sender do not both store an event.
//! * **No `422`.** An authentic, well-formed delivery is always accepted (`2xx`) even when all
//!   its events are quarantined: refusing it would only make the sender retry it.
//!
//! # JSON paths
//!
//! A subset of RFC 9535: `$` (the body), `@` (the element of `each`), `.name` and `['name']`
//! members, `[0]` and `[-1]` indexes, and the `[*]` / `.*` wildcard in `each` only. Descendants
//! (`..`), slices, filters and unions are refused by validation. A path that selects nothing
//! leaves its field out; a `null` counts as nothing for identifiers and names.
//!
//! # Not supported
//!
//! Signature schemes that put several values in one header (Stripe's `t=...,v1=...`, Standard
//! Webhooks' space-separated `v1,<sig>` list) or that use a base64-encoded secret; several
//! secrets at once (rotation); asymmetric signatures. Logs never contain the secret,
//! signatures or body values; this module logs nothing above `debug`.

mod config;
mod error;
mod mapping;
mod path;
mod verify;

use http::{HeaderMap, HeaderName};
use jiff::Timestamp;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use trib_core::{Event, QuarantinedMessage, Refusal};

pub use config::{
    Algorithm, ConditionConfig, DEFAULT_REPLAY_WINDOW, DEFAULT_TOLERANCE, DeliveryIdConfig,
    MAX_DELIVERY_ID_CHARS, MappingConfig, SignatureEncoding, WebhookConfig, When,
};
pub use error::WebhookError;
pub use verify::MAX_REMEMBERED_DELIVERIES;

use config::{Compiled, DeliveryId};
use mapping::{DeliveryContext, Input, Mapping};
use verify::{ReplayGuard, ReplayKey, Verifier};

/// The outcome for one event of a delivery: an event for the event log (still to pass the
/// source's [`trib_core::EventGate`]) or a record for the quarantine.
pub type MappedEvent = Result<Event, QuarantinedMessage>;

/// The prefix of a `messageId` derived from the body when there is no delivery id.
pub const BODY_HASH_PREFIX: &str = "trib-";

/// A configured webhook source, shared by all requests to it (its methods take `&self`).
#[derive(Debug)]
pub struct WebhookSource {
    name: String,
    verifier: Verifier,
    delivery_id: Option<DeliveryId>,
    mappings: Vec<Mapping>,
    condition_headers: Vec<HeaderName>,
    replay: ReplayGuard,
}

/// A request that passed [`WebhookSource::verify`]: authentic, fresh, not a replay, with a JSON
/// body. The only way to reach [`WebhookSource::map`] and [`WebhookSource::mark_accepted`].
#[derive(Clone)]
pub struct VerifiedDelivery {
    delivery_id: Option<String>,
    message_id: String,
    replay_key: ReplayKey,
    document: Value,
    raw: Box<RawValue>,
    headers: Vec<(HeaderName, Option<String>)>,
}

impl WebhookSource {
    /// Builds the source named `name` (the `{source}` of the route and every event's `source`).
    ///
    /// Fails with [`WebhookError::InvalidConfig`] listing the problems that
    /// [`WebhookConfig::validate`] reports.
    pub fn new(name: impl Into<String>, config: &WebhookConfig) -> Result<Self, WebhookError> {
        let Compiled {
            verifier,
            delivery_id,
            replay_window,
            mappings,
            condition_headers,
        } = config
            .compile()
            .map_err(|problems| WebhookError::InvalidConfig { problems })?;
        Ok(Self {
            name: name.into(),
            verifier,
            delivery_id,
            mappings,
            condition_headers,
            replay: ReplayGuard::new(replay_window, MAX_REMEMBERED_DELIVERIES),
        })
    }

    /// Returns the source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks a request: signature, timestamp, body, delivery id, replay (in that order; see
    /// the module docs). `now` is the server's clock, which the timestamp must be within the
    /// tolerance of, and against which the replay window is measured.
    ///
    /// Nothing is recorded: call [`mark_accepted`](Self::mark_accepted) once the delivery's
    /// events are stored.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<VerifiedDelivery, WebhookError> {
        let outcome = self.check(headers, body, now);
        if let Err(error) = &outcome {
            tracing::debug!(source = %self.name, code = error.code(), "webhook refused");
        }
        outcome
    }

    /// Maps a verified delivery to one outcome per event, in order; see the module docs for
    /// how the mapping is chosen. `received_at` becomes every event's `receivedAt`.
    pub fn map(&self, delivery: &VerifiedDelivery, received_at: Timestamp) -> Vec<MappedEvent> {
        let input = Input {
            source: &self.name,
            document: &delivery.document,
            raw: &delivery.raw,
            headers: &delivery.headers,
            message_id: &delivery.message_id,
            received_at,
            delivery_id: delivery.delivery_id.as_deref(),
            signature_header: Some(&self.verifier.signature_header),
        };
        mapping::map_body(&self.mappings, &input)
    }

    /// Maps a quarantined webhook record again with this source's current mappings, for a
    /// replay after a mapping fix: as at receipt (the record's `receivedAt`, the delivery's
    /// `messageId`s, the header values kept), but without checking the signature, which was
    /// checked when the delivery arrived.
    ///
    /// `body` is the delivery's body: [`ReplayContext::body`], or for a refused element whose
    /// record does not keep it, the body kept by the delivery's first refused element. Returns
    /// the events the record stands for, still to pass the source's gate: the element's one
    /// event, or every event of the body for a record of the whole body (unmapped, nothing
    /// selected, a whole-body mapping refused). Fails with the first refusal when the current
    /// mappings still refuse any of them, so a record is replayed whole or not at all.
    pub fn remap(
        &self,
        quarantined: &QuarantinedMessage,
        context: &ReplayContext,
        body: &RawValue,
    ) -> Result<Vec<Event>, Refusal> {
        let refuse = |code: &str, reason: String| Refusal {
            code: code.to_owned(),
            field: None,
            reason,
            schema: None,
        };
        let document: Value = serde_json::from_str(body.get()).map_err(|error| {
            refuse(
                "unreadable_body",
                format!("the kept webhook body is not JSON: {error}"),
            )
        })?;
        let mut headers: Vec<(HeaderName, Option<String>)> = context
            .inner
            .headers
            .iter()
            .filter_map(|(name, value)| {
                HeaderName::from_bytes(name.as_bytes())
                    .ok()
                    .map(|name| (name, value.clone()))
            })
            .collect();
        // The signature header was present (it was verified); its value is not kept, so a
        // condition can only learn that it exists.
        headers.push((self.verifier.signature_header.clone(), Some(String::new())));
        let input = Input {
            source: &self.name,
            document: &document,
            raw: body,
            headers: &headers,
            message_id: &context.inner.message_id,
            received_at: quarantined.received_at,
            delivery_id: context.inner.delivery_id.as_deref(),
            signature_header: Some(&self.verifier.signature_header),
        };
        let outcomes = mapping::map_body(&self.mappings, &input);
        let refusal = |refused: QuarantinedMessage| Refusal {
            code: refused.code,
            field: refused.field,
            reason: refused.reason,
            schema: refused.schema,
        };
        match context.inner.element {
            Some(index) => {
                let wanted = quarantined.message_id.as_deref();
                let outcome = outcomes.into_iter().find(|outcome| {
                    let id = match outcome {
                        Ok(event) => Some(event.message_id.as_str()),
                        Err(refused) => refused.message_id.as_deref(),
                    };
                    id == wanted
                });
                match outcome {
                    Some(Ok(event)) => Ok(vec![event]),
                    Some(Err(refused)) => Err(refusal(refused)),
                    None => Err(refuse(
                        "element_not_mapped",
                        format!(
                            "the current mapping does not produce element {index} of this \
                             delivery any more"
                        ),
                    )),
                }
            }
            None => outcomes
                .into_iter()
                .map(|outcome| outcome.map_err(refusal))
                .collect(),
        }
    }

    /// Records that `delivery` was durably stored, so that it is refused as a replay for the
    /// replay window from `now`. Recording the same delivery twice is harmless.
    pub fn mark_accepted(&self, delivery: &VerifiedDelivery, now: Timestamp) {
        self.replay.remember(delivery.replay_key, now);
    }

    fn check(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<VerifiedDelivery, WebhookError> {
        // A header delivery id may be part of the signed content, so it is read first; it is
        // only required after the signature is checked.
        let header_id = match &self.delivery_id {
            Some(DeliveryId::Header(name)) => Some(header_delivery_id(headers, name)),
            _ => None,
        };
        let signed_header_id = match &header_id {
            Some(Ok(Some(id))) => Some(id.as_str()),
            _ => None,
        };
        let signed = self.verifier.verify(headers, body, signed_header_id, now)?;

        let (document, raw) = parse_body(body)?;
        let delivery_id = match &self.delivery_id {
            None => None,
            Some(DeliveryId::Header(name)) => match header_id {
                Some(Ok(Some(id))) => Some(id),
                Some(Err(error)) => return Err(error),
                _ => {
                    return Err(WebhookError::MissingDeliveryId {
                        location: name.as_str().to_owned(),
                    });
                }
            },
            Some(DeliveryId::Path(path)) => Some(body_delivery_id(&document, path)?),
        };

        let replay_key = verify::replay_key(delivery_id.as_deref(), &signed.signature);
        if self.replay.contains(&replay_key, now) {
            return Err(WebhookError::Replayed);
        }

        let message_id = match &delivery_id {
            Some(id) => id.clone(),
            None => body_message_id(body),
        };
        let headers = self
            .condition_headers
            .iter()
            .map(|name| {
                let value = headers
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                (name.clone(), value)
            })
            .collect();
        Ok(VerifiedDelivery {
            delivery_id,
            message_id,
            replay_key,
            document,
            raw,
            headers,
        })
    }
}

/// The delivery context of a quarantined webhook record, read back for a replay.
#[derive(Debug, Clone)]
pub struct ReplayContext {
    inner: DeliveryContext,
}

impl ReplayContext {
    /// Reads the context of a quarantined webhook record; `None` when it has none (a record
    /// from before contexts were kept, or from another origin) or it cannot be read.
    pub fn of(quarantined: &QuarantinedMessage) -> Option<ReplayContext> {
        if quarantined.origin.as_deref() != Some(mapping::ORIGIN) {
            return None;
        }
        let raw = quarantined.replay_context.as_deref()?;
        serde_json::from_str(raw.get())
            .ok()
            .map(|inner| ReplayContext { inner })
    }

    /// The delivery's body, when this record has it: the `message` of a record of the whole
    /// body, or the body kept by the first refused element of a delivery.
    pub fn body<'a>(&'a self, quarantined: &'a QuarantinedMessage) -> Option<&'a RawValue> {
        match (&self.inner.element, &self.inner.body) {
            (None, _) => Some(&quarantined.message),
            (Some(_), Some(body)) => Some(body),
            (Some(_), None) => None,
        }
    }

    /// Whether this record keeps its delivery's body for the other refused elements of the
    /// delivery (which do not).
    pub fn keeps_body_for_others(&self) -> bool {
        self.inner.element.is_some() && self.inner.body.is_some()
    }

    /// A key shared by the quarantine records of one delivery: source, delivery `messageId`
    /// and receive time.
    pub fn delivery_key(&self, quarantined: &QuarantinedMessage) -> String {
        format!(
            "{}\u{0}{}\u{0}{}",
            quarantined.source,
            self.inner.message_id,
            quarantined.received_at.as_millisecond()
        )
    }
}

impl VerifiedDelivery {
    /// Returns the sender's delivery id, when the source configures one.
    pub fn delivery_id(&self) -> Option<&str> {
        self.delivery_id.as_deref()
    }

    /// Returns the `messageId` of the delivery's events (before any `-<n>` suffix).
    pub fn message_id(&self) -> &str {
        &self.message_id
    }
}

impl std::fmt::Debug for VerifiedDelivery {
    /// Leaves the body out: it holds personal data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedDelivery")
            .field("delivery_id", &self.delivery_id)
            .field("message_id", &self.message_id)
            .finish_non_exhaustive()
    }
}

/// Reads a header delivery id: `Ok(None)` when absent or blank.
fn header_delivery_id(
    headers: &HeaderMap,
    name: &HeaderName,
) -> Result<Option<String>, WebhookError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let invalid = |reason: &str| WebhookError::InvalidDeliveryId {
        location: name.as_str().to_owned(),
        reason: reason.to_owned(),
    };
    let text = value
        .to_str()
        .map_err(|_| invalid("it contains characters other than visible ASCII"))?
        .trim();
    if text.is_empty() {
        return Ok(None);
    }
    check_delivery_id_length(text, name.as_str())?;
    Ok(Some(text.to_owned()))
}

fn body_delivery_id(document: &Value, path: &path::JsonPath) -> Result<String, WebhookError> {
    let location = path.to_string();
    let id = match path.select_one(document, document) {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => (!text.trim().is_empty()).then(|| text.clone()),
        Some(Value::Number(number)) if number.is_i64() || number.is_u64() => {
            Some(number.to_string())
        }
        Some(_) => {
            return Err(WebhookError::InvalidDeliveryId {
                location,
                reason: "it must be a string or a whole number".to_owned(),
            });
        }
    };
    let id = id.ok_or_else(|| WebhookError::MissingDeliveryId {
        location: location.clone(),
    })?;
    check_delivery_id_length(&id, &location)?;
    Ok(id)
}

fn check_delivery_id_length(id: &str, location: &str) -> Result<(), WebhookError> {
    let n_chars = id.chars().count();
    if n_chars > MAX_DELIVERY_ID_CHARS {
        return Err(WebhookError::InvalidDeliveryId {
            location: location.to_owned(),
            reason: format!(
                "it is {n_chars} characters long, over the limit of {MAX_DELIVERY_ID_CHARS}"
            ),
        });
    }
    Ok(())
}

/// Parses the body as JSON (a UTF-8 byte order mark is skipped) and keeps it as received.
fn parse_body(body: &[u8]) -> Result<(Value, Box<RawValue>), WebhookError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(WebhookError::EmptyBody);
    }
    let malformed = |error: serde_json::Error| WebhookError::MalformedBody {
        message: error.to_string(),
    };
    let raw: Box<RawValue> = serde_json::from_slice(body).map_err(malformed)?;
    let document: Value = serde_json::from_str(raw.get()).map_err(malformed)?;
    Ok((document, raw))
}

/// `trib-` and the first 128 bits of the body's SHA-256, in hex.
fn body_message_id(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut id = String::with_capacity(BODY_HASH_PREFIX.len() + 32);
    id.push_str(BODY_HASH_PREFIX);
    for byte in &digest[..16] {
        id.push(char::from(HEX[usize::from(byte >> 4)]));
        id.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    id
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests;
