//! Validates request bodies against an OpenAPI document (feature `spec`, for tests).
//!
//! Loads an OpenAPI 3.0 or 3.1 YAML (or JSON) document, finds an operation by method and
//! path (a template such as `/lists/{list_id}/members/{subscriber_hash}`, or a concrete path,
//! optionally with a prefix the document's paths lack, such as `/3.0`), turns its JSON request
//! body schema into a JSON Schema 2020-12 document and validates bodies with `jsonschema`.
//!
//! The conversion copies every `#/components/schemas/...` the body reaches into `$defs`
//! (unreached schemas are left out, so a dangling reference elsewhere in the document does not
//! matter), turns OpenAPI 3.0 `nullable: true` into a `null` type (or enum member, or an
//! `anyOf` with `{"type":"null"}`), and OpenAPI 3.0 boolean `exclusiveMinimum`/`exclusiveMaximum`
//! into their numeric form. `format` is asserted (`uuid`, `date-time`, ...). It does not
//! validate parameters, headers or responses.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};

/// Why a document could not be used or a body is invalid.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read `{path}`")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a YAML/JSON OpenAPI document: {0}")]
    Parse(String),
    #[error("no operation `{method} {path}` in the document")]
    NoOperation { method: String, path: String },
    #[error("operation `{method} {path}` has no JSON request body")]
    NoRequestBody { method: String, path: String },
    #[error("unresolvable reference `{0}`")]
    BadReference(String),
    #[error("the request body schema does not compile: {0}")]
    Compile(String),
    #[error("request body is invalid: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// An OpenAPI document, parsed.
#[derive(Debug, Clone)]
pub struct OpenApi {
    document: Value,
}

/// The compiled request body schema of one operation, reusable for many bodies.
pub struct RequestValidator {
    schema: Value,
    validator: jsonschema::Validator,
}

impl OpenApi {
    /// Reads and parses a document file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, SpecError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Parses a document (YAML, or JSON, which is YAML).
    pub fn from_yaml(text: &str) -> Result<Self, SpecError> {
        let yaml: serde_norway::Value =
            serde_norway::from_str(text).map_err(|error| SpecError::Parse(error.to_string()))?;
        let document = yaml_to_json(yaml);
        if document.get("paths").and_then(Value::as_object).is_none() {
            return Err(SpecError::Parse("it has no `paths` object".to_owned()));
        }
        Ok(OpenApi { document })
    }

    /// The JSON Schema 2020-12 document of the operation's JSON request body.
    pub fn request_schema(&self, method: &str, path: &str) -> Result<Value, SpecError> {
        let operation = self.operation(method, path)?;
        let no_body = || SpecError::NoRequestBody {
            method: method.to_uppercase(),
            path: path.to_owned(),
        };
        let mut request_body = operation.get("requestBody").ok_or_else(no_body)?;
        if let Some(reference) = request_body.get("$ref").and_then(Value::as_str) {
            request_body = self.resolve(reference)?;
        }
        let content = request_body
            .get("content")
            .and_then(Value::as_object)
            .ok_or_else(no_body)?;
        let media = content
            .get("application/json")
            .or_else(|| {
                content
                    .iter()
                    .find(|(media_type, _)| media_type.contains("json"))
                    .map(|(_, media)| media)
            })
            .ok_or_else(no_body)?;
        let schema = media.get("schema").ok_or_else(no_body)?;
        let mut defs = BTreeMap::new();
        let root = self.convert(schema, &mut defs)?;
        let mut document = match root {
            Value::Object(object) => object,
            other => {
                let mut wrapper = Map::new();
                wrapper.insert("allOf".to_owned(), json!([other]));
                wrapper
            }
        };
        document.insert(
            "$schema".to_owned(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        if !defs.is_empty() {
            document.insert(
                "$defs".to_owned(),
                Value::Object(defs.into_iter().collect()),
            );
        }
        Ok(Value::Object(document))
    }

    /// Compiles the operation's request body schema.
    pub fn request_validator(
        &self,
        method: &str,
        path: &str,
    ) -> Result<RequestValidator, SpecError> {
        let schema = self.request_schema(method, path)?;
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|error| SpecError::Compile(error.to_string()))?;
        Ok(RequestValidator { schema, validator })
    }

    /// Validates one body against the operation's request body schema.
    pub fn validate_request(
        &self,
        method: &str,
        path: &str,
        body: &Value,
    ) -> Result<(), SpecError> {
        self.request_validator(method, path)?.validate(body)
    }

    fn operation(&self, method: &str, path: &str) -> Result<&Value, SpecError> {
        let not_found = || SpecError::NoOperation {
            method: method.to_uppercase(),
            path: path.to_owned(),
        };
        let paths = self
            .document
            .get("paths")
            .and_then(Value::as_object)
            .ok_or_else(not_found)?;
        let path_only = path.split('?').next().unwrap_or(path);
        let segments: Vec<&str> = path_only.trim_matches('/').split('/').collect();
        // Try the whole path, then without leading segments (a base path such as `/3.0`).
        for skip in 0..segments.len() {
            let wanted = &segments[skip..];
            for (template, item) in paths {
                let parts: Vec<&str> = template.trim_matches('/').split('/').collect();
                let matches = parts.len() == wanted.len()
                    && parts.iter().zip(wanted).all(|(part, segment)| {
                        part == segment
                            || (part.starts_with('{') && part.ends_with('}') && !segment.is_empty())
                    });
                if matches && let Some(operation) = item.get(method.to_lowercase()) {
                    return Ok(operation);
                }
            }
        }
        Err(not_found())
    }

    fn resolve(&self, reference: &str) -> Result<&Value, SpecError> {
        let pointer = reference
            .strip_prefix('#')
            .ok_or_else(|| SpecError::BadReference(reference.to_owned()))?;
        self.document
            .pointer(pointer)
            .ok_or_else(|| SpecError::BadReference(reference.to_owned()))
    }

    /// Converts one OpenAPI schema object into JSON Schema 2020-12, collecting the component
    /// schemas it reaches into `defs`.
    fn convert(
        &self,
        node: &Value,
        defs: &mut BTreeMap<String, Value>,
    ) -> Result<Value, SpecError> {
        let Some(object) = node.as_object() else {
            return Ok(node.clone());
        };
        let mut out = Map::new();
        for (keyword, value) in object {
            let converted = match keyword.as_str() {
                "$ref" => {
                    let reference = value
                        .as_str()
                        .ok_or_else(|| SpecError::BadReference(value.to_string()))?;
                    let name = reference
                        .strip_prefix("#/components/schemas/")
                        .ok_or_else(|| SpecError::BadReference(reference.to_owned()))?;
                    if !defs.contains_key(name) {
                        // Placeholder first, so recursive schemas terminate.
                        defs.insert(name.to_owned(), Value::Bool(true));
                        let target = self.resolve(reference)?.clone();
                        let converted = self.convert(&target, defs)?;
                        defs.insert(name.to_owned(), converted);
                    }
                    let escaped = name.replace('~', "~0").replace('/', "~1");
                    Value::String(format!("#/$defs/{escaped}"))
                }
                "properties" | "patternProperties" | "dependentSchemas" => {
                    let mut schemas = Map::new();
                    if let Some(map) = value.as_object() {
                        for (name, schema) in map {
                            schemas.insert(name.clone(), self.convert(schema, defs)?);
                        }
                    }
                    Value::Object(schemas)
                }
                "allOf" | "anyOf" | "oneOf" | "prefixItems" => {
                    let mut schemas = Vec::new();
                    for schema in value.as_array().into_iter().flatten() {
                        schemas.push(self.convert(schema, defs)?);
                    }
                    Value::Array(schemas)
                }
                "items"
                | "additionalProperties"
                | "not"
                | "contains"
                | "propertyNames"
                | "if"
                | "then"
                | "else"
                | "unevaluatedProperties"
                | "unevaluatedItems" => self.convert(value, defs)?,
                // Data, not schemas: copied untouched.
                _ => value.clone(),
            };
            out.insert(keyword.clone(), converted);
        }
        Ok(Value::Object(openapi30_keywords(out)))
    }
}

impl RequestValidator {
    /// The JSON Schema document it validates with.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Validates a body; the error lists every violation with its JSON path.
    pub fn validate(&self, body: &Value) -> Result<(), SpecError> {
        let problems: Vec<String> = self
            .validator
            .iter_errors(body)
            .map(|error| format!("{}: {error}", error.instance_path()))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SpecError::Invalid(problems))
        }
    }
}

/// Rewrites OpenAPI 3.0 `nullable` and boolean `exclusiveMinimum`/`exclusiveMaximum`.
fn openapi30_keywords(mut schema: Map<String, Value>) -> Map<String, Value> {
    for (exclusive, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        if let Some(Value::Bool(flag)) = schema.get(exclusive).cloned() {
            schema.remove(exclusive);
            if flag && let Some(limit) = schema.remove(bound) {
                schema.insert(exclusive.to_owned(), limit);
            }
        }
    }
    let nullable = schema.remove("nullable") == Some(Value::Bool(true));
    if !nullable {
        return schema;
    }
    if let Some(Value::Array(values)) = schema.get_mut("enum")
        && !values.contains(&Value::Null)
    {
        values.push(Value::Null);
    }
    match schema.get("type").cloned() {
        Some(Value::String(single)) => {
            schema.insert("type".to_owned(), json!([single, "null"]));
            schema
        }
        Some(Value::Array(mut types)) => {
            if !types.contains(&json!("null")) {
                types.push(json!("null"));
            }
            schema.insert("type".to_owned(), Value::Array(types));
            schema
        }
        _ => {
            let mut wrapper = Map::new();
            wrapper.insert(
                "anyOf".to_owned(),
                json!([Value::Object(schema), { "type": "null" }]),
            );
            wrapper
        }
    }
}

/// YAML → JSON, with non-string mapping keys (`200:`) turned into strings.
fn yaml_to_json(value: serde_norway::Value) -> Value {
    use serde_norway::Value as Yaml;
    match value {
        Yaml::Null => Value::Null,
        Yaml::Bool(flag) => Value::Bool(flag),
        Yaml::Number(number) => {
            if let Some(integer) = number.as_i64() {
                json!(integer)
            } else if let Some(integer) = number.as_u64() {
                json!(integer)
            } else {
                number
                    .as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        Yaml::String(text) => Value::String(text),
        Yaml::Sequence(items) => Value::Array(items.into_iter().map(yaml_to_json).collect()),
        Yaml::Mapping(mapping) => Value::Object(
            mapping
                .into_iter()
                .map(|(key, value)| {
                    let key = match yaml_to_json(key) {
                        Value::String(text) => text,
                        other => other.to_string(),
                    };
                    (key, yaml_to_json(value))
                })
                .collect(),
        ),
        Yaml::Tagged(tagged) => yaml_to_json(tagged.value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r##"
openapi: 3.0.1
paths:
  /things/{id}:
    put:
      requestBody:
        content:
          application/json:
            schema:
              $ref: '#/components/schemas/Thing'
components:
  schemas:
    Thing:
      type: object
      required: [name]
      properties:
        name: { type: string }
        note: { type: string, nullable: true }
        size: { type: integer, minimum: 0, exclusiveMinimum: true }
        child: { $ref: '#/components/schemas/Thing' }
        example: { type: string }
      example:
        nullable: true
    Broken:
      $ref: '#/components/schemas/Missing'
"##;

    #[test]
    fn validates_with_refs_nullable_and_exclusive_bounds() {
        let spec = OpenApi::from_yaml(DOC).expect("parses");
        let validator = spec
            .request_validator("PUT", "/v1/things/42")
            .expect("compiles");
        validator
            .validate(&json!({"name": "a", "note": null, "size": 1, "child": {"name": "b"}}))
            .expect("valid");
        let error = validator
            .validate(&json!({"note": 3, "size": 0, "child": {}}))
            .expect_err("invalid");
        let SpecError::Invalid(problems) = error else {
            panic!("unexpected error {error}");
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    #[test]
    fn unknown_operations_are_errors() {
        let spec = OpenApi::from_yaml(DOC).expect("parses");
        assert!(matches!(
            spec.request_schema("POST", "/things/1"),
            Err(SpecError::NoOperation { .. })
        ));
    }
}
