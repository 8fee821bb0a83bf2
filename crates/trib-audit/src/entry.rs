//! The entry format: who ([`Actor`]) did what ([`Action`]) to which [`Resource`] and subject
//! ([`ProfileRef`]), why ([`Purpose`]) and with which [`Outcome`].
//!
//! Every field is built from a type that cannot hold a clear email address, phone number or
//! name: actors are key ids or validated user names, purposes and outcomes are short
//! machine words, resources are compile-time route templates or command names, and subjects are
//! profile ids. A caller cannot pass "whatever string it has at hand" into the log.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use trib_store::ProfileId;

use crate::AuditError;

/// Who accessed the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An API key from the key file, by its public id (`key:<id>`).
    ApiKey(String),
    /// The configured `server.admin_key` (`admin`).
    Admin,
    /// A command-line user working on the data directory (`cli:<user>`).
    Cli(String),
    /// The audit log itself, recording its own recovery after a crash (`system`).
    System,
    /// The sync engine sending data to (or deleting it at) a configured destination, by its
    /// name (`sync:<destination>`).
    Destination(String),
}

impl Actor {
    /// An API key by its public id: ASCII letters and digits, at most 64.
    pub fn api_key(id: &str) -> Result<Self, AuditError> {
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
            return Err(AuditError::InvalidField {
                field: "actor",
                reason: "an API key id is 1 to 64 ASCII letters and digits",
            });
        }
        Ok(Self::ApiKey(id.to_owned()))
    }

    /// A command-line user: a login name of 1 to 64 characters among `A-Z a-z 0-9 . _ -`.
    pub fn cli(user: &str) -> Result<Self, AuditError> {
        if user.is_empty()
            || user.len() > 64
            || !user
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
        {
            return Err(AuditError::InvalidField {
                field: "actor",
                reason: "a CLI user is 1 to 64 characters among A-Z a-z 0-9 . _ -",
            });
        }
        Ok(Self::Cli(user.to_owned()))
    }

    /// A destination by its configured name: 1 to 64 characters among `A-Z a-z 0-9 _ -`.
    pub fn destination(name: &str) -> Result<Self, AuditError> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-'))
        {
            return Err(AuditError::InvalidField {
                field: "actor",
                reason: "a destination name is 1 to 64 characters among A-Z a-z 0-9 _ -",
            });
        }
        Ok(Self::Destination(name.to_owned()))
    }

    /// The user running this process (`$USER`, else `$LOGNAME`, else `unknown`).
    pub fn current_cli_user() -> Self {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_default();
        Self::cli(&user).unwrap_or_else(|_| Self::Cli("unknown".to_owned()))
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::ApiKey(id) => write!(formatter, "key:{id}"),
            Actor::Admin => formatter.write_str("admin"),
            Actor::Cli(user) => write!(formatter, "cli:{user}"),
            Actor::System => formatter.write_str("system"),
            Actor::Destination(name) => write!(formatter, "sync:{name}"),
        }
    }
}

impl std::str::FromStr for Actor {
    type Err = AuditError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "admin" => Ok(Actor::Admin),
            "system" => Ok(Actor::System),
            _ => {
                if let Some(id) = text.strip_prefix("key:") {
                    Actor::api_key(id)
                } else if let Some(user) = text.strip_prefix("cli:") {
                    Actor::cli(user)
                } else if let Some(name) = text.strip_prefix("sync:") {
                    Actor::destination(name)
                } else {
                    Err(AuditError::InvalidField {
                        field: "actor",
                        reason: "expected key:<id>, admin, cli:<user>, sync:<destination> or system",
                    })
                }
            }
        }
    }
}

/// What kind of access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Personal data was read (or the attempt was answered).
    Read,
    /// Personal data was changed.
    Write,
    /// The audit log removed a torn last line left by a crash (see the crate docs).
    Recover,
}

/// Why the data was accessed: a short lowercase word such as `support` or `operations`.
///
/// Limited to 1 to 40 characters among `a-z 0-9 _ -`, so a free-text purpose (which could
/// carry a customer's name or address) is refused rather than recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purpose(Cow<'static, str>);

impl Purpose {
    /// Customer support (the default of the profile routes).
    pub const SUPPORT: Purpose = Purpose(Cow::Borrowed("support"));
    /// Running the system: events, quarantine, imports, replays.
    pub const OPERATIONS: Purpose = Purpose(Cow::Borrowed("operations"));
    /// Data subjects' rights: erasure and access requests.
    pub const PRIVACY_REQUEST: Purpose = Purpose(Cow::Borrowed("privacy_request"));
    /// The audit log's own integrity work (recovery entries).
    pub const INTEGRITY: Purpose = Purpose(Cow::Borrowed("integrity"));

    /// Validates a purpose given by a caller (such as the `X-Tributary-Purpose` header).
    pub fn new(text: &str) -> Result<Self, AuditError> {
        if text.is_empty()
            || text.len() > 40
            || !text.bytes().all(|byte| {
                byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'_' | b'-')
            })
        {
            return Err(AuditError::InvalidField {
                field: "purpose",
                reason: "a purpose is 1 to 40 characters among a-z 0-9 _ -",
            });
        }
        Ok(Self(Cow::Owned(text.to_owned())))
    }

    /// The purpose as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What was accessed: an API route template (`/v1/profiles/{id}`) or a CLI command
/// (`tributary profiles show`).
///
/// Built only from `&'static str`, i.e. from text compiled into the program, never from a
/// request path or an argument that could hold personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource(Cow<'static, str>);

impl Resource {
    /// A resource named by a constant.
    pub const fn new(name: &'static str) -> Self {
        Self(Cow::Borrowed(name))
    }

    /// The resource as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whose data: a profile, by its id (`p_` and 32 hexadecimal digits).
///
/// Built only from a [`ProfileId`], which is an HMAC of an identifier, never the identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRef(ProfileId);

impl ProfileRef {
    /// The profile `id`.
    pub fn profile(id: ProfileId) -> Self {
        Self(id)
    }

    /// The profile id.
    pub fn profile_id(&self) -> ProfileId {
        self.0
    }
}

/// How the access ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The HTTP status of the response (`status:200`).
    Status(u16),
    /// A command that succeeded (`ok`).
    Ok,
    /// A command that failed (`failed`).
    Failed,
    /// A recovery removed this many bytes of a torn last line (`torn_tail_removed:<bytes>`).
    TornTailRemoved(u64),
}

impl fmt::Display for Outcome {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Status(status) => write!(formatter, "status:{status}"),
            Outcome::Ok => formatter.write_str("ok"),
            Outcome::Failed => formatter.write_str("failed"),
            Outcome::TornTailRemoved(bytes) => write!(formatter, "torn_tail_removed:{bytes}"),
        }
    }
}

impl std::str::FromStr for Outcome {
    type Err = AuditError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = AuditError::InvalidField {
            field: "outcome",
            reason: "expected status:<code>, ok, failed or torn_tail_removed:<bytes>",
        };
        match text {
            "ok" => Ok(Outcome::Ok),
            "failed" => Ok(Outcome::Failed),
            _ => {
                if let Some(status) = text.strip_prefix("status:") {
                    canonical_number(status)
                        .and_then(|status| u16::try_from(status).ok())
                        .map(Outcome::Status)
                        .ok_or(invalid)
                } else if let Some(bytes) = text.strip_prefix("torn_tail_removed:") {
                    canonical_number(bytes)
                        .map(Outcome::TornTailRemoved)
                        .ok_or(invalid)
                } else {
                    Err(invalid)
                }
            }
        }
    }
}

/// One access, as a caller describes it; the log adds the sequence number, time and chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Who.
    pub actor: Actor,
    /// Read or write.
    pub action: Action,
    /// Why.
    pub purpose: Purpose,
    /// The route template or command.
    pub resource: Resource,
    /// Whose data, when one profile is concerned.
    pub subject: Option<ProfileRef>,
    /// How it ended.
    pub outcome: Outcome,
}

/// One stored entry: a record with its place in the chain.
///
/// Stored as one NDJSON line with the fields in this order; `mac` is
/// HMAC-SHA-256(audit key, `tributary-audit-entry\0` ‖ previous mac ‖ the line without `mac`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// 1 for the first entry, then consecutive.
    pub seq: u64,
    /// When the entry was written (UTC, RFC 3339); never decreases along the chain.
    pub at: jiff::Timestamp,
    /// Who.
    #[serde(with = "as_text")]
    pub actor: Actor,
    /// Read, write or recover.
    pub action: Action,
    /// Why.
    #[serde(with = "purpose_text")]
    pub purpose: Purpose,
    /// The route template or command.
    #[serde(with = "resource_text")]
    pub resource: Resource,
    /// Whose data.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "subject_text"
    )]
    pub subject: Option<ProfileRef>,
    /// How it ended.
    #[serde(with = "as_text")]
    pub outcome: Outcome,
    /// The previous entry's mac, hexadecimal (64 zeros for the first entry).
    pub prev: String,
    /// This entry's mac, hexadecimal.
    pub mac: String,
}

/// The entry without its mac: what the mac covers, serialized in the same field order.
#[derive(Serialize)]
pub(crate) struct EntryBody<'a> {
    seq: u64,
    at: &'a jiff::Timestamp,
    #[serde(with = "as_text")]
    actor: &'a Actor,
    action: Action,
    #[serde(with = "purpose_text")]
    purpose: &'a Purpose,
    #[serde(with = "resource_text")]
    resource: &'a Resource,
    #[serde(skip_serializing_if = "Option::is_none", with = "subject_text")]
    subject: &'a Option<ProfileRef>,
    #[serde(with = "as_text")]
    outcome: &'a Outcome,
    prev: &'a str,
}

impl AuditEntry {
    /// The canonical bytes the mac covers: the compact JSON of the entry without `mac`.
    pub(crate) fn body_bytes(&self) -> Vec<u8> {
        let body = EntryBody {
            seq: self.seq,
            at: &self.at,
            actor: &self.actor,
            action: self.action,
            purpose: &self.purpose,
            resource: &self.resource,
            subject: &self.subject,
            outcome: &self.outcome,
            prev: &self.prev,
        };
        match serde_json::to_vec(&body) {
            Ok(bytes) => bytes,
            Err(_) => {
                unreachable!("an entry body always serializes: it holds only strings and numbers")
            }
        }
    }

    /// The stored line, without the newline.
    pub(crate) fn line(&self) -> Vec<u8> {
        match serde_json::to_vec(self) {
            Ok(bytes) => bytes,
            Err(_) => unreachable!("an entry always serializes: it holds only strings and numbers"),
        }
    }
}

/// Digits without a sign or leading zero (so `status:0200` is not a second spelling of 200).
fn canonical_number(text: &str) -> Option<u64> {
    if text.is_empty() || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    if !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

mod as_text {
    use super::*;

    pub(super) fn serialize<T: fmt::Display, S: Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub(super) fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
    where
        T: std::str::FromStr<Err = AuditError>,
        D: Deserializer<'de>,
    {
        let text = Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

mod purpose_text {
    use super::*;

    pub(super) fn serialize<S: Serializer>(
        value: &Purpose,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Purpose, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        Purpose::new(&text).map_err(serde::de::Error::custom)
    }
}

mod resource_text {
    use super::*;

    pub(super) fn serialize<S: Serializer>(
        value: &Resource,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value.as_str())
    }

    /// A stored resource is read back as it was written; it was a constant when written, and the
    /// mac proves it has not changed since.
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Resource, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() || text.len() > 200 || text.chars().any(char::is_control) {
            return Err(serde::de::Error::custom(
                "a resource is 1 to 200 characters without control characters",
            ));
        }
        Ok(Resource(Cow::Owned(text)))
    }
}

mod subject_text {
    use super::*;

    pub(super) fn serialize<S: Serializer>(
        value: &Option<ProfileRef>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(subject) => serializer.collect_str(&subject.0),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<ProfileRef>, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        text.parse::<ProfileId>()
            .map(|id| Some(ProfileRef(id)))
            .map_err(|_| {
                serde::de::Error::custom("a subject is a profile id (p_ and 32 hexadecimal digits)")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_round_trip_and_refuse_free_text() {
        for text in ["key:ab12", "admin", "cli:ana.m", "system"] {
            let actor: Actor = text.parse().unwrap();
            assert_eq!(actor.to_string(), text);
        }
        assert!("someone@example.com".parse::<Actor>().is_err());
        assert!(Actor::api_key("a@b").is_err());
        assert!(Actor::cli("Ana Smith").is_err());
    }

    #[test]
    fn purposes_are_short_machine_words() {
        assert_eq!(
            Purpose::new("gdpr-request").unwrap().as_str(),
            "gdpr-request"
        );
        assert!(Purpose::new("call back jane@example.com").is_err());
        assert!(Purpose::new("").is_err());
        assert!(Purpose::new(&"a".repeat(41)).is_err());
    }

    #[test]
    fn outcomes_have_one_spelling() {
        for text in ["status:200", "ok", "failed", "torn_tail_removed:17"] {
            assert_eq!(text.parse::<Outcome>().unwrap().to_string(), text);
        }
        assert!("status:0200".parse::<Outcome>().is_err());
        assert!("status:99999".parse::<Outcome>().is_err());
    }
}
