use http::StatusCode;
use jiff::SignedDuration;

/// Why a webhook source could not be built, or why a whole request was refused.
///
/// Problems of single events are not errors: they come back from
/// [`WebhookSource::map`](super::WebhookSource::map) as quarantine records. Messages never
/// contain the secret, a signature, or values from the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The configuration has problems, each with its path relative to `[sources.webhook]`.
    #[error("invalid webhook configuration: {}", join_problems(.problems))]
    InvalidConfig {
        /// `(path, message)` pairs, as [`WebhookConfig::validate`](super::WebhookConfig::validate) returns them.
        problems: Vec<(String, String)>,
    },
    /// The signature header is absent.
    #[error("the request has no `{header}` signature header")]
    MissingSignature { header: String },
    /// The signature header is present but cannot be read (bad hex or base64, wrong length,
    /// missing prefix).
    #[error("the `{header}` signature header is malformed: {reason}")]
    MalformedSignature { header: String, reason: String },
    /// The signature is well formed but does not match the request.
    #[error("the signature does not match the request")]
    BadSignature,
    /// A timestamp header is configured and the request has none.
    #[error("the request has no `{header}` timestamp header")]
    MissingTimestamp { header: String },
    /// The timestamp header is neither Unix seconds nor an RFC 3339 date.
    #[error("the `{header}` timestamp header must be Unix seconds or an RFC 3339 date")]
    MalformedTimestamp { header: String },
    /// The signed timestamp is further from the server's clock than the tolerance allows.
    #[error(
        "the request was signed {} the server's clock, beyond the tolerance of {tolerance:#}",
        describe_skew(*.skew)
    )]
    Stale {
        /// The server's time minus the request's: positive when the request is old.
        skew: SignedDuration,
        tolerance: SignedDuration,
    },
    /// The delivery was already accepted within the replay window.
    #[error("this delivery was already accepted")]
    Replayed,
    /// A delivery id is configured and the request has none.
    #[error("the request has no delivery id at `{location}`")]
    MissingDeliveryId {
        /// The header name or the JSON path the id is read from.
        location: String,
    },
    /// The delivery id is not a usable `messageId`.
    #[error("the delivery id at `{location}` is unusable: {reason}")]
    InvalidDeliveryId { location: String, reason: String },
    /// The body is empty.
    #[error("the request body is empty")]
    EmptyBody,
    /// The body is not JSON. `message` is serde_json's (it names a line and column, no content).
    #[error("the request body is not valid JSON: {message}")]
    MalformedBody { message: String },
}

impl WebhookError {
    /// Returns a stable snake_case code for responses and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::InvalidConfig { .. } => "invalid_webhook_config",
            WebhookError::MissingSignature { .. } => "missing_signature",
            WebhookError::MalformedSignature { .. } => "malformed_signature",
            WebhookError::BadSignature => "bad_signature",
            WebhookError::MissingTimestamp { .. } => "missing_timestamp",
            WebhookError::MalformedTimestamp { .. } => "malformed_timestamp",
            WebhookError::Stale { .. } => "stale_timestamp",
            WebhookError::Replayed => "replayed_delivery",
            WebhookError::MissingDeliveryId { .. } => "missing_delivery_id",
            WebhookError::InvalidDeliveryId { .. } => "invalid_delivery_id",
            WebhookError::EmptyBody => "empty_body",
            WebhookError::MalformedBody { .. } => "malformed_json",
        }
    }

    /// Returns the HTTP status to answer with.
    ///
    /// * `401` for everything that makes the request unauthenticated: a missing, malformed or
    ///   wrong signature, and a missing, malformed or out-of-tolerance timestamp (the timestamp is
    ///   part of what is signed).
    /// * `409` for a replayed delivery: the sender (or an attacker) sent an accepted delivery
    ///   again; answering a conflict rather than an auth error tells an honest sender to stop.
    /// * `400` for an authentic request that cannot be read: no usable delivery id, an empty
    ///   or non-JSON body.
    /// * `500` for a configuration error, which only [`WebhookSource::new`](super::WebhookSource::new) returns.
    ///
    /// No error is answered `422`: an authentic JSON body whose events cannot be mapped is
    /// accepted and its events are quarantined, so the sender does not retry it forever.
    pub fn status(&self) -> StatusCode {
        match self {
            WebhookError::InvalidConfig { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            WebhookError::MissingSignature { .. }
            | WebhookError::MalformedSignature { .. }
            | WebhookError::BadSignature
            | WebhookError::MissingTimestamp { .. }
            | WebhookError::MalformedTimestamp { .. }
            | WebhookError::Stale { .. } => StatusCode::UNAUTHORIZED,
            WebhookError::Replayed => StatusCode::CONFLICT,
            WebhookError::MissingDeliveryId { .. }
            | WebhookError::InvalidDeliveryId { .. }
            | WebhookError::EmptyBody
            | WebhookError::MalformedBody { .. } => StatusCode::BAD_REQUEST,
        }
    }
}

fn join_problems(problems: &[(String, String)]) -> String {
    let mut text = String::new();
    for (index, (path, message)) in problems.iter().enumerate() {
        if index > 0 {
            text.push_str("; ");
        }
        text.push_str(path);
        text.push_str(": ");
        text.push_str(message);
    }
    text
}

fn describe_skew(skew: SignedDuration) -> String {
    if skew.is_negative() {
        format!("{:#} ahead of", skew.abs())
    } else {
        format!("{skew:#} behind")
    }
}
