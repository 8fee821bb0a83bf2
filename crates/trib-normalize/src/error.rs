//! The one error type of the crate, and its stable codes.

/// Why a value could not be normalized.
///
/// `code` is stable and machine-readable (see [`codes`]); `reason` is a lowercase sentence for
/// people, without a trailing period. Reasons never contain the rejected email address or phone
/// number, because they end up in logs and quarantine listings: they say *what* is wrong
/// ("not a valid email address: the domain has no dot"), not *which* value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct NormalizeError {
    /// A stable snake_case code, one of [`codes`].
    pub code: &'static str,
    /// A sentence for people.
    pub reason: String,
}

impl NormalizeError {
    /// Creates an error from a code in [`codes`] and a reason.
    pub fn new(code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    pub(crate) fn email(detail: &str) -> Self {
        Self::new(
            codes::INVALID_EMAIL,
            format!("not a valid email address: {detail}"),
        )
    }

    pub(crate) fn phone(detail: &str) -> Self {
        Self::new(
            codes::INVALID_PHONE,
            format!("not a valid phone number: {detail}"),
        )
    }

    pub(crate) fn wrong_type(rule: &str, expected: &str, value: &serde_json::Value) -> Self {
        let found = match value {
            serde_json::Value::Null => "null",
            serde_json::Value::Bool(_) => "a boolean",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Array(_) => "an array",
            serde_json::Value::Object(_) => "an object",
        };
        Self::new(
            codes::WRONG_TYPE,
            format!("the {rule} rule expects {expected}, not {found}"),
        )
    }
}

/// The stable error codes. Callers match on these; they never change meaning.
pub mod codes {
    /// An email address failed the syntax or policy checks.
    pub const INVALID_EMAIL: &str = "invalid_email";
    /// A phone number could not be parsed, or is not a valid number for its country.
    pub const INVALID_PHONE: &str = "invalid_phone";
    /// A country name or code is not recognized.
    pub const UNKNOWN_COUNTRY: &str = "unknown_country";
    /// A currency code, name or symbol is not recognized, or is ambiguous.
    pub const UNKNOWN_CURRENCY: &str = "unknown_currency";
    /// A date-time or date could not be parsed.
    pub const INVALID_TIMESTAMP: &str = "invalid_timestamp";
    /// A monetary amount could not be parsed, is ambiguous, or is too large.
    pub const INVALID_AMOUNT: &str = "invalid_amount";
    /// The JSON value has a type the rule does not accept (e.g. a phone given as an object).
    pub const WRONG_TYPE: &str = "wrong_type";
    /// The [`Options`](crate::Options) are unusable for the rule (unknown default region,
    /// missing currency for amounts, bad timestamp format). A configuration error: it affects
    /// every value, so callers should check options up front with
    /// [`Options::check`](crate::Options::check).
    pub const INVALID_OPTIONS: &str = "invalid_options";
}
