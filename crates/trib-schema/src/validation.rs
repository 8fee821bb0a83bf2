//! Validating one event's `properties` or one identify call's `traits`.

use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

use crate::datapath::{push_index, push_key};
use crate::subject::SchemaId;

/// Most errors reported for one value; the rest are counted by `truncated` only, so a
/// pathological payload cannot make the report huge.
pub const MAX_ERRORS: usize = 50;

/// The outcome of validating one value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Validation<'r> {
    /// The value conforms to `schema` (the subject's latest version).
    Valid {
        /// The schema used, e.g. `Order Completed/1-0-2`.
        schema: &'r SchemaId,
    },
    /// The value does not conform to `schema`.
    Invalid {
        /// The schema used.
        schema: &'r SchemaId,
        /// Every error (at most [`MAX_ERRORS`]), in the validator's order.
        errors: Vec<FieldError>,
        /// More errors existed than were reported.
        truncated: bool,
    },
    /// The registry has no schema for the subject: the caller applies the source's policy
    /// (accept or quarantine).
    NoSchema,
}

/// One validation error.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// Where, relative to the event: `properties.products[0].price`, `traits.email`,
    /// `traits["first name"]`. For a missing required property or a property the schema does not
    /// allow, the path names that property.
    pub path: String,
    /// The JSON Schema keyword that failed (`type`, `required`, `format`...), for grouping.
    pub keyword: String,
    /// What is wrong. Values from the payload are masked as `value` so personal data does not
    /// reach logs or quarantine reasons.
    pub message: String,
}

impl Validation<'_> {
    /// Returns true for [`Validation::Valid`].
    pub fn is_valid(&self) -> bool {
        matches!(self, Validation::Valid { .. })
    }

    /// Returns the schema used, `None` for [`Validation::NoSchema`].
    pub fn schema(&self) -> Option<&SchemaId> {
        match self {
            Validation::Valid { schema } | Validation::Invalid { schema, .. } => Some(schema),
            Validation::NoSchema => None,
        }
    }

    /// Returns the errors (empty unless [`Validation::Invalid`]).
    pub fn errors(&self) -> &[FieldError] {
        match self {
            Validation::Invalid { errors, .. } => errors,
            Validation::Valid { .. } | Validation::NoSchema => &[],
        }
    }
}

/// Validates `instance`, reporting paths under `field` (`properties` or `traits`).
pub(crate) fn validate<'r>(
    validator: &jsonschema::Validator,
    schema: &'r SchemaId,
    field: &str,
    instance: &Value,
) -> Validation<'r> {
    // The fast path: no error collection, no allocation.
    if validator.is_valid(instance) {
        return Validation::Valid { schema };
    }
    let mut errors = Vec::new();
    let mut truncated = false;
    for error in validator.iter_errors(instance) {
        if errors.len() >= MAX_ERRORS {
            truncated = true;
            break;
        }
        let pointer = error.instance_path().as_str();
        match error.kind() {
            ValidationErrorKind::Required { property } => {
                let name = property.as_str().unwrap_or_default();
                errors.push(FieldError {
                    path: data_path(field, pointer, instance, Some(name)),
                    keyword: "required".to_owned(),
                    message: "required property is missing".to_owned(),
                });
            }
            ValidationErrorKind::AdditionalProperties { unexpected }
            | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
                for name in unexpected {
                    errors.push(FieldError {
                        path: data_path(field, pointer, instance, Some(name)),
                        keyword: error.kind().keyword().to_owned(),
                        message: "property is not allowed by the schema".to_owned(),
                    });
                }
            }
            kind => errors.push(FieldError {
                path: data_path(field, pointer, instance, None),
                keyword: kind.keyword().to_owned(),
                message: error.masked().to_string(),
            }),
        }
    }
    if errors.len() > MAX_ERRORS {
        errors.truncate(MAX_ERRORS);
        truncated = true;
    }
    Validation::Invalid {
        schema,
        errors,
        truncated,
    }
}

/// Turns a JSON pointer into a dotted path, walking the instance so that an object key that
/// looks like a number (`"2024"`) is not mistaken for an array index.
fn data_path(field: &str, pointer: &str, instance: &Value, last_key: Option<&str>) -> String {
    let mut path = field.to_owned();
    let mut current = Some(instance);
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        match current {
            Some(Value::Array(items)) => match segment.parse::<usize>() {
                Ok(index) => {
                    push_index(&mut path, index);
                    current = items.get(index);
                }
                Err(_) => {
                    push_key(&mut path, &segment);
                    current = None;
                }
            },
            Some(Value::Object(object)) => {
                push_key(&mut path, &segment);
                current = object.get(&segment);
            }
            _ => {
                push_key(&mut path, &segment);
                current = None;
            }
        }
    }
    if let Some(key) = last_key {
        push_key(&mut path, key);
    }
    path
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pointers_become_dotted_paths() {
        let instance = json!({"products": [{"price": "x"}], "2024": {"a/b": 1}});
        assert_eq!(
            data_path("properties", "/products/0/price", &instance, None),
            "properties.products[0].price"
        );
        assert_eq!(
            data_path("traits", "/2024/a~1b", &instance, None),
            "traits[\"2024\"][\"a/b\"]"
        );
        assert_eq!(
            data_path("traits", "", &instance, Some("email")),
            "traits.email"
        );
    }
}
