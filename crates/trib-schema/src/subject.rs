//! What a schema describes: one track event (by name) or the profile's trait set.

use std::fmt;

use crate::error::SchemaError;
use crate::version::SchemaVer;

/// Longest accepted event name, in characters.
pub const MAX_EVENT_NAME_CHARS: usize = 200;

/// Longest directory name [`Subject::slug`] produces, in bytes.
const MAX_SLUG_LEN: usize = 64;

/// What a schema describes.
///
/// Serialized as `{"kind": "event", "name": "Order Completed"}` or `{"kind": "traits"}`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Subject {
    /// The `properties` of track events with this exact (case-sensitive) `event` name.
    Event(String),
    /// The `traits` of identify calls (the profile trait set).
    Traits,
}

/// The kind of a [`Subject`], as written in a document's `self.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    /// A track event's `properties`.
    Event,
    /// An identify call's `traits`.
    Traits,
}

/// One schema version of one subject, displayed as `Order Completed/1-0-2` or `traits/1-0-0`.
///
/// The display form is for people and logs; an event literally named `traits` displays like
/// the trait schema, so programs should use the fields.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct SchemaId {
    /// What the schema describes.
    pub subject: Subject,
    /// Its version.
    pub version: SchemaVer,
}

impl Subject {
    /// Builds an event subject after checking the name (non-blank, at most
    /// [`MAX_EVENT_NAME_CHARS`] characters, no control characters).
    pub fn event(name: impl Into<String>) -> Result<Subject, SchemaError> {
        let name = name.into();
        check_event_name(&name)?;
        Ok(Subject::Event(name))
    }

    /// Returns the kind of subject.
    pub fn kind(&self) -> SubjectKind {
        match self {
            Subject::Event(_) => SubjectKind::Event,
            Subject::Traits => SubjectKind::Traits,
        }
    }

    /// Returns the event name, `None` for traits.
    pub fn event_name(&self) -> Option<&str> {
        match self {
            Subject::Event(name) => Some(name),
            Subject::Traits => None,
        }
    }

    /// Returns the field of a Segment call that the schema validates: `properties` for events,
    /// `traits` for traits. Validation error paths start with it.
    pub fn field(&self) -> &'static str {
        match self {
            Subject::Event(_) => "properties",
            Subject::Traits => "traits",
        }
    }

    /// Returns the directory of this subject relative to the registry directory:
    /// `events/<slug>` or `traits`.
    pub fn relative_dir(&self) -> std::path::PathBuf {
        match self {
            Subject::Event(name) => std::path::Path::new("events").join(slug(name)),
            Subject::Traits => std::path::PathBuf::from("traits"),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Event(name) => write!(formatter, "event {name:?}"),
            Subject::Traits => formatter.write_str("the trait schema"),
        }
    }
}

impl fmt::Display for SchemaId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.subject {
            Subject::Event(name) => write!(formatter, "{name}/{}", self.version),
            Subject::Traits => write!(formatter, "traits/{}", self.version),
        }
    }
}

/// Returns the filesystem-safe directory name of an event: ASCII letters and digits lowercased,
/// every other run of characters turned into one `-`, at most 64 bytes
/// (`"Order Completed"` → `order-completed`). A name with no ASCII letter or digit gets
/// `x-` and the hex of its first 24 bytes.
///
/// Different names can share a slug (`Order Completed` and `order completed`); the document's
/// `self.name` is the authority, and the registry refuses a second name for a taken slug.
pub fn slug(name: &str) -> String {
    let mut slug = String::with_capacity(name.len().min(MAX_SLUG_LEN));
    let mut pending_dash = false;
    for character in name.chars() {
        if character.is_ascii_alphanumeric() {
            if pending_dash && !slug.is_empty() {
                slug.push('-');
            }
            pending_dash = false;
            slug.push(character.to_ascii_lowercase());
            if slug.len() >= MAX_SLUG_LEN {
                break;
            }
        } else {
            pending_dash = true;
        }
    }
    if slug.is_empty() {
        slug.push_str("x-");
        for byte in name.as_bytes().iter().take(24) {
            slug.push_str(&format!("{byte:02x}"));
        }
    }
    slug
}

pub(crate) fn check_event_name(name: &str) -> Result<(), SchemaError> {
    let invalid = |reason| SchemaError::InvalidEventName {
        name: name.to_owned(),
        reason,
    };
    if name.trim().is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.chars().count() > MAX_EVENT_NAME_CHARS {
        return Err(invalid("it is longer than 200 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid("it contains control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_filesystem_safe() {
        assert_eq!(slug("Order Completed"), "order-completed");
        assert_eq!(
            slug("  Checkout Step 2 / Viewed!  "),
            "checkout-step-2-viewed"
        );
        assert_eq!(slug("product_viewed"), "product-viewed");
        assert_eq!(slug("../../etc/passwd"), "etc-passwd");
        assert_eq!(slug("Café"), "caf");
        assert_eq!(slug("注文"), "x-e6b3a8e69687");
        assert_eq!(slug(&"a".repeat(300)).len(), 64);
    }

    #[test]
    fn event_names_are_checked() {
        assert!(Subject::event("Order Completed").is_ok());
        let message = Subject::event("  ").unwrap_err().to_string();
        assert!(message.contains("empty"), "{message}");
        let message = Subject::event("a\nb").unwrap_err().to_string();
        assert!(message.contains("control characters"), "{message}");
        let message = Subject::event("x".repeat(201)).unwrap_err().to_string();
        assert!(message.contains("longer than 200"), "{message}");
    }

    #[test]
    fn ids_and_subjects_display_and_serialize() {
        let id = SchemaId {
            subject: Subject::Event("Order Completed".into()),
            version: SchemaVer::new(1, 0, 2),
        };
        assert_eq!(id.to_string(), "Order Completed/1-0-2");
        let traits = SchemaId {
            subject: Subject::Traits,
            version: SchemaVer::INITIAL,
        };
        assert_eq!(traits.to_string(), "traits/1-0-0");
        assert_eq!(
            serde_json::to_value(&id.subject).unwrap(),
            serde_json::json!({"kind": "event", "name": "Order Completed"})
        );
        assert_eq!(
            serde_json::to_value(Subject::Traits).unwrap(),
            serde_json::json!({"kind": "traits"})
        );
    }
}
