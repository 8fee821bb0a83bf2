//! From a golden profile to what a destination should hold: the ESP key (email), the mapped
//! fields, and their keyed digests for the desired-state diff.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use trib_config::FieldSource;
use trib_identity::profile::Profile;

/// What a destination should hold for one profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// The ESP key: the profile's first email (identifiers are in priority order).
    pub email: String,
    /// ESP field → value, for the mapped sources the profile has.
    pub fields: BTreeMap<String, Value>,
}

/// Why a profile is not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsendable {
    /// ESPs key contacts by email; the profile has none.
    NoEmail,
}

impl Unsendable {
    pub fn code(self) -> &'static str {
        match self {
            Unsendable::NoEmail => "no_email",
        }
    }
}

/// Maps a profile through a destination's `[destinations.fields]`.
pub fn desired(profile: &Profile, fields: &[(String, FieldSource)]) -> Result<Desired, Unsendable> {
    let email = profile
        .identifiers
        .iter()
        .find(|identifier| identifier.kind == "email")
        .map(|identifier| identifier.value.clone())
        .ok_or(Unsendable::NoEmail)?;
    let mut out = BTreeMap::new();
    for (esp_field, source) in fields {
        let value = match source {
            FieldSource::Trait(path) => {
                let mut parts = path.split('.');
                let first = parts.next().unwrap_or_default();
                let mut value = profile.traits.get(first).map(|golden| &golden.value);
                for part in parts {
                    value = value.and_then(|v| v.get(part));
                }
                value.filter(|v| !v.is_null()).cloned()
            }
            FieldSource::Identifier(kind) => profile
                .identifiers
                .iter()
                .find(|identifier| &identifier.kind == kind)
                .map(|identifier| Value::String(identifier.value.clone())),
        };
        if let Some(value) = value {
            out.insert(esp_field.clone(), value);
        }
    }
    Ok(Desired { email, fields: out })
}

/// Keyed digests of field values, so `sync.db` can tell what changed without holding the
/// values. The email is digested under the reserved name `@email`.
#[derive(Clone)]
pub struct Digester {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Digester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digester")
    }
}

/// The digest name of the ESP key.
pub const EMAIL_FIELD: &str = "@email";

impl Digester {
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            mac: Hmac::new_from_slice(key).expect("HMAC takes a key of any length"),
        }
    }

    /// One value's digest (16 bytes, hex), bound to its field name.
    pub fn digest(&self, field: &str, value: &Value) -> String {
        let mut mac = self.mac.clone();
        mac.update(field.as_bytes());
        mac.update(&[0]);
        mac.update(value.to_string().as_bytes());
        let bytes = mac.finalize().into_bytes();
        bytes[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Every field's digest, and the email's.
    pub fn digests(&self, desired: &Desired) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = desired
            .fields
            .iter()
            .map(|(field, value)| (field.clone(), self.digest(field, value)))
            .collect();
        out.insert(
            EMAIL_FIELD.to_owned(),
            self.digest(EMAIL_FIELD, &Value::String(desired.email.clone())),
        );
        out
    }
}

/// The fields to send given what the ESP confirmed: changed or new fields, and `""` for a
/// field the ESP holds but the profile no longer has (clearing it). Empty: nothing changed.
pub fn changed_fields(
    desired: &Desired,
    digests: &BTreeMap<String, String>,
    confirmed: &BTreeMap<String, String>,
) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (field, value) in &desired.fields {
        if confirmed.get(field) != digests.get(field) {
            out.insert(field.clone(), value.clone());
        }
    }
    for field in confirmed.keys() {
        if field != EMAIL_FIELD && !desired.fields.contains_key(field) {
            out.insert(field.clone(), Value::String(String::new()));
        }
    }
    out
}
