//! Schema documents: the `$schema` and `self` keys every stored document carries, and compiling.

use serde_json::{Map, Value};

use crate::error::SchemaError;
use crate::subject::{Subject, SubjectKind, check_event_name};
use crate::version::SchemaVer;

/// The only JSON Schema dialect the registry accepts.
pub const JSON_SCHEMA_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// Largest schema document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: u64 = 1024 * 1024;

/// The `self` object of a schema document: which subject and version it is.
///
/// Written as `"self": {"kind": "event", "name": "Order Completed", "version": "1-0-0"}` or
/// `"self": {"kind": "traits", "version": "1-0-0"}`. JSON Schema validators ignore unknown
/// keywords, so `self` does not change what the document accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfDescriptor {
    /// What the document describes.
    pub subject: Subject,
    /// Its version.
    pub version: SchemaVer,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelf {
    kind: SubjectKind,
    #[serde(default)]
    name: Option<String>,
    version: String,
}

impl SelfDescriptor {
    /// Reads the `self` object of a document, e.g. a body posted to the API or a file given
    /// to `tributary schemas publish`.
    pub fn from_document(document: &Value) -> Result<SelfDescriptor, SchemaError> {
        read_self(document, "document")?.ok_or_else(|| SchemaError::InvalidDocument {
            origin: "document".to_owned(),
            reason: "it has no `self` object naming its subject and version".to_owned(),
        })
    }

    /// Returns the `self` object as JSON.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        let kind = match self.subject.kind() {
            SubjectKind::Event => "event",
            SubjectKind::Traits => "traits",
        };
        object.insert("kind".to_owned(), Value::from(kind));
        if let Some(name) = self.subject.event_name() {
            object.insert("name".to_owned(), Value::from(name));
        }
        object.insert("version".to_owned(), Value::from(self.version.to_string()));
        Value::Object(object)
    }
}

/// Reads `self` if present. `origin` names the file or document in errors.
pub(crate) fn read_self(
    document: &Value,
    origin: &str,
) -> Result<Option<SelfDescriptor>, SchemaError> {
    let invalid = |reason: String| SchemaError::InvalidDocument {
        origin: origin.to_owned(),
        reason,
    };
    let Some(root) = document.as_object() else {
        return Err(invalid("the document must be a JSON object".to_owned()));
    };
    let Some(raw) = root.get("self") else {
        return Ok(None);
    };
    let raw: RawSelf = serde_json::from_value(raw.clone())
        .map_err(|error| invalid(format!("`self` is malformed: {error}")))?;
    let version: SchemaVer = raw
        .version
        .parse()
        .map_err(|error| invalid(format!("`self.version`: {error}")))?;
    let subject = match (raw.kind, raw.name) {
        (SubjectKind::Event, Some(name)) => {
            check_event_name(&name).map_err(|error| invalid(format!("`self.name`: {error}")))?;
            Subject::Event(name)
        }
        (SubjectKind::Event, None) => {
            return Err(invalid(
                "`self.name` is required for an event schema".to_owned(),
            ));
        }
        (SubjectKind::Traits, None) => Subject::Traits,
        (SubjectKind::Traits, Some(_)) => {
            return Err(invalid(
                "`self.name` must be absent for the trait schema".to_owned(),
            ));
        }
    };
    Ok(Some(SelfDescriptor { subject, version }))
}

/// Returns the document as stored: `$schema` and `self` filled in when absent, and checked
/// against `subject`/`version` when present.
pub(crate) fn normalize(
    subject: &Subject,
    version: &SchemaVer,
    schema: &Value,
    origin: &str,
) -> Result<Value, SchemaError> {
    let invalid = |reason: String| SchemaError::InvalidDocument {
        origin: origin.to_owned(),
        reason,
    };
    let expected = SelfDescriptor {
        subject: subject.clone(),
        version: *version,
    };
    if let Some(found) = read_self(schema, origin)?
        && found != expected
    {
        return Err(invalid(format!(
            "its `self` says {} {} but it is published as {} {}",
            found.subject, found.version, expected.subject, expected.version
        )));
    }
    let Some(root) = schema.as_object() else {
        return Err(invalid("the document must be a JSON object".to_owned()));
    };
    let mut root = root.clone();
    check_dialect(root.get("$schema"), origin)?;
    root.insert("$schema".to_owned(), Value::from(JSON_SCHEMA_2020_12));
    root.insert("self".to_owned(), expected.to_json());
    Ok(Value::Object(root))
}

/// Checks a stored document: a JSON object with the 2020-12 `$schema` and a `self` object.
pub(crate) fn check_stored(document: &Value, origin: &str) -> Result<SelfDescriptor, SchemaError> {
    let descriptor = read_self(document, origin)?.ok_or_else(|| SchemaError::InvalidDocument {
        origin: origin.to_owned(),
        reason: "it has no `self` object naming its subject and version".to_owned(),
    })?;
    let dialect = document.get("$schema");
    if dialect.is_none() {
        return Err(SchemaError::InvalidDocument {
            origin: origin.to_owned(),
            reason: format!("`$schema` is missing: it must be \"{JSON_SCHEMA_2020_12}\""),
        });
    }
    check_dialect(dialect, origin)?;
    Ok(descriptor)
}

/// Compiles a document with the registry's options (draft 2020-12, `format` asserted, unknown
/// formats refused, no remote references).
pub(crate) fn compile(
    document: &Value,
    origin: &str,
) -> Result<jsonschema::Validator, SchemaError> {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .should_ignore_unknown_formats(false)
        .build(document)
        .map_err(|error| SchemaError::InvalidDocument {
            origin: origin.to_owned(),
            reason: format!("it does not compile: {error}"),
        })
}

/// Compares two documents ignoring `self` (used to spot a version identical to its
/// predecessor).
pub(crate) fn same_content_ignoring_self(left: &Value, right: &Value) -> bool {
    match (left.as_object(), right.as_object()) {
        (Some(left), Some(right)) => {
            left.len() == right.len()
                && left
                    .iter()
                    .filter(|(key, _)| key.as_str() != "self")
                    .all(|(key, value)| right.get(key) == Some(value))
        }
        _ => left == right,
    }
}

fn check_dialect(dialect: Option<&Value>, origin: &str) -> Result<(), SchemaError> {
    match dialect {
        None => Ok(()),
        Some(Value::String(uri))
            if uri == JSON_SCHEMA_2020_12 || uri.strip_suffix('#') == Some(JSON_SCHEMA_2020_12) =>
        {
            Ok(())
        }
        Some(other) => Err(SchemaError::InvalidDocument {
            origin: origin.to_owned(),
            reason: format!(
                "`$schema` is {other} but only \"{JSON_SCHEMA_2020_12}\" (JSON Schema 2020-12) is supported"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn normalize_fills_in_dialect_and_self() {
        let subject = Subject::Event("Order Completed".into());
        let document = normalize(
            &subject,
            &SchemaVer::INITIAL,
            &json!({"type": "object"}),
            "test",
        )
        .unwrap();
        assert_eq!(
            document,
            json!({
                "$schema": JSON_SCHEMA_2020_12,
                "self": {"kind": "event", "name": "Order Completed", "version": "1-0-0"},
                "type": "object"
            })
        );
        assert_eq!(
            SelfDescriptor::from_document(&document).unwrap(),
            SelfDescriptor {
                subject,
                version: SchemaVer::INITIAL
            }
        );
    }

    #[test]
    fn normalize_refuses_a_disagreeing_self_or_dialect() {
        let subject = Subject::Event("Order Completed".into());
        let wrong_version =
            json!({"self": {"kind": "event", "name": "Order Completed", "version": "1-0-1"}});
        let message = normalize(&subject, &SchemaVer::INITIAL, &wrong_version, "x")
            .unwrap_err()
            .to_string();
        assert!(message.contains("its `self` says"), "{message}");

        let draft7 = json!({"$schema": "http://json-schema.org/draft-07/schema#"});
        let message = normalize(&subject, &SchemaVer::INITIAL, &draft7, "x")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("only \"https://json-schema.org/draft/2020-12/schema\""),
            "{message}"
        );

        let message = normalize(&subject, &SchemaVer::INITIAL, &json!(true), "x")
            .unwrap_err()
            .to_string();
        assert!(message.contains("must be a JSON object"), "{message}");
    }

    #[test]
    fn self_is_strict() {
        let typo = json!({"self": {"kind": "event", "name": "A", "verison": "1-0-0"}});
        assert!(SelfDescriptor::from_document(&typo).is_err());
        let traits_with_name = json!({"self": {"kind": "traits", "name": "A", "version": "1-0-0"}});
        assert!(SelfDescriptor::from_document(&traits_with_name).is_err());
        let event_without_name = json!({"self": {"kind": "event", "version": "1-0-0"}});
        assert!(SelfDescriptor::from_document(&event_without_name).is_err());
        let traits = json!({"self": {"kind": "traits", "version": "2-1-0"}});
        assert_eq!(
            SelfDescriptor::from_document(&traits).unwrap().subject,
            Subject::Traits
        );
    }

    #[test]
    fn compile_refuses_unknown_formats_and_remote_refs() {
        assert!(compile(&json!({"format": "email"}), "x").is_ok());
        let message = compile(&json!({"format": "emial"}), "x")
            .unwrap_err()
            .to_string();
        assert!(message.contains("does not compile"), "{message}");
        assert!(compile(&json!({"$ref": "https://example.com/schema.json"}), "x").is_err());
    }
}
