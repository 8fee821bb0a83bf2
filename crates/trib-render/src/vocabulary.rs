//! What templates may name: the traits of the trait schema, the identifier types, the events of
//! the schema registry ([`Vocabulary`]), and per purpose which of them a template may use
//! ([`PurposeFields`], from `fields` in `[[privacy.purposes]]`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use trib_schema::{Registry, Subject};

/// The names a template can refer to, from the schema registry and the identity config.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    /// Trait name → its JSON Schema (from the latest trait schema's `properties`).
    pub(crate) traits: BTreeMap<String, Value>,
    /// Traits listed in the trait schema's `required`: present on every profile.
    pub(crate) required_traits: BTreeSet<String>,
    /// Event key (`order_completed`) → the event name and the latest schema of its properties.
    pub(crate) events: BTreeMap<String, (String, Value)>,
    /// Configured identifier types (`email`, `user_id`, ...).
    pub(crate) identifier_types: BTreeSet<String>,
}

impl Vocabulary {
    /// The vocabulary of a trait schema document, event schema documents by event name, and
    /// identifier types.
    pub fn new(
        traits_schema: Option<&Value>,
        events: impl IntoIterator<Item = (String, Value)>,
        identifier_types: impl IntoIterator<Item = String>,
    ) -> Self {
        let mut vocabulary = Vocabulary {
            identifier_types: identifier_types.into_iter().collect(),
            ..Vocabulary::default()
        };
        if let Some(schema) = traits_schema {
            let schema = &inline_refs(schema, schema, 0);
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    vocabulary.traits.insert(name.clone(), property.clone());
                }
            }
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                vocabulary.required_traits = required
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect();
            }
        }
        for (name, schema) in events {
            let schema = inline_refs(&schema, &schema, 0);
            vocabulary.events.insert(event_key(&name), (name, schema));
        }
        vocabulary
    }

    /// The vocabulary of the latest schemas of a registry, with these identifier types.
    pub fn from_registry(
        registry: &Registry,
        identifier_types: impl IntoIterator<Item = String>,
    ) -> Self {
        let traits = registry
            .latest(&Subject::Traits)
            .map(|schema| schema.document());
        let mut events = Vec::new();
        for info in registry.list() {
            if let Subject::Event(name) = &info.subject
                && let Some(schema) = registry.latest(&info.subject)
            {
                events.push((name.clone(), schema.document().clone()));
            }
        }
        Vocabulary::new(traits, events, identifier_types)
    }

    /// The schema of a trait, if the trait schema lists it.
    pub(crate) fn trait_schema(&self, name: &str) -> Option<&Value> {
        self.traits.get(name)
    }
}

/// The key of an event in `events.last`: its schema slug with `_` for `-`
/// (`Order Completed` → `order_completed`).
pub fn event_key(name: &str) -> String {
    trib_schema::slug(name).replace('-', "_")
}

/// Per declared purpose, the fields its templates may use (`fields` in `[[privacy.purposes]]`).
///
/// A field name allows the trait of that name (`profile.traits.NAME`) and the identifier type of
/// that name (`profile.NAME`); `events` allows every event, `events.KEY` one event. A purpose
/// without `fields` allows every trait of the trait schema, the `email` identifier and every
/// event.
#[derive(Debug, Clone, Default)]
pub struct PurposeFields {
    purposes: BTreeMap<String, Option<BTreeSet<String>>>,
}

/// What a purpose allows of one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Allowance {
    Allowed,
    NotAllowed,
    UndeclaredPurpose,
}

impl PurposeFields {
    /// Declares a purpose, with its `fields` list or `None` for the default.
    pub fn declare(&mut self, purpose: &str, fields: Option<Vec<String>>) {
        self.purposes.insert(
            purpose.to_owned(),
            fields.map(|fields| fields.into_iter().collect()),
        );
    }

    /// Every declared purpose with its default fields (no `fields` lists).
    pub fn defaults_for<'a>(purposes: impl IntoIterator<Item = &'a str>) -> Self {
        let mut fields = PurposeFields::default();
        for purpose in purposes {
            fields.declare(purpose, None);
        }
        fields
    }

    /// Whether `purpose` is declared.
    pub fn is_declared(&self, purpose: &str) -> bool {
        self.purposes.contains_key(purpose)
    }

    /// The explicit `fields` list of a purpose, if it has one.
    pub(crate) fn explicit(&self, purpose: &str) -> Option<&BTreeSet<String>> {
        self.purposes.get(purpose).and_then(Option::as_ref)
    }

    pub(crate) fn trait_allowed(
        &self,
        vocabulary: &Vocabulary,
        purpose: &str,
        name: &str,
    ) -> Allowance {
        match self.purposes.get(purpose) {
            None => Allowance::UndeclaredPurpose,
            Some(None) => allow(vocabulary.traits.contains_key(name)),
            Some(Some(fields)) => allow(fields.contains(name)),
        }
    }

    pub(crate) fn identifier_allowed(&self, purpose: &str, kind: &str) -> Allowance {
        match self.purposes.get(purpose) {
            None => Allowance::UndeclaredPurpose,
            Some(None) => allow(kind == "email"),
            Some(Some(fields)) => allow(fields.contains(kind)),
        }
    }

    pub(crate) fn event_allowed(&self, purpose: &str, key: Option<&str>) -> Allowance {
        match self.purposes.get(purpose) {
            None => Allowance::UndeclaredPurpose,
            Some(None) => Allowance::Allowed,
            Some(Some(fields)) => allow(
                fields.contains("events")
                    || key.is_some_and(|key| fields.contains(&format!("events.{key}"))),
            ),
        }
    }
}

fn allow(yes: bool) -> Allowance {
    if yes {
        Allowance::Allowed
    } else {
        Allowance::NotAllowed
    }
}

/// `node` with local references (`{"$ref": "#/$defs/product"}`) replaced by what they point
/// to, so that paths can be followed through them; recursion stops after a few levels.
fn inline_refs(node: &Value, root: &Value, depth: usize) -> Value {
    match node {
        Value::Object(object) => {
            if let Some(target) = object
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|reference| reference.strip_prefix('#'))
                .and_then(|pointer| root.pointer(pointer))
                && depth < 8
            {
                return inline_refs(target, root, depth + 1);
            }
            Value::Object(
                object
                    .iter()
                    .map(|(key, value)| (key.clone(), inline_refs(value, root, depth)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| inline_refs(item, root, depth))
                .collect(),
        ),
        other => other.clone(),
    }
}
