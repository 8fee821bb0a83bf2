//! The Liquid context of one person: only the fields the template reads, all of them allowed
//! for its purpose (the static check saw to that), with `nil` for what the person lacks.
//!
//! ```text
//! profile.id                          the profile id
//! profile.traits.NAME                 a golden trait (objects filled out from the trait schema)
//! profile.IDENTIFIER_TYPE             the first identifier of that type (profile.email)
//! events.recent                       up to RECENT_EVENTS track events, newest first:
//!                                     {name, timestamp, properties}
//! events.last.EVENT_KEY               the person's latest event of that name (order_completed)
//! ```
//!
//! Liquid (the `liquid` crate) refuses to read a key an object lacks, so every path the schema
//! describes is present, `nil` when the person has no value: `default` then applies, `if` is
//! false and `for` loops zero times.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};
use trib_identity::profile::Profile;

use crate::scan::{Scan, Use};
use crate::vocabulary::Vocabulary;

/// How many recent events `events.recent` holds at most.
pub const RECENT_EVENTS: usize = 20;

/// What a render reads about one person: the golden profile and their recent events (stored
/// `Event` JSON, newest first). Rendering takes it only inside a `Permitted`.
#[derive(Debug, Clone)]
pub struct RenderInput {
    pub profile: Profile,
    pub events: Vec<Value>,
}

/// Which fields a compiled template reads, with the schema to fill each out.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContextPlan {
    traits: BTreeMap<String, Value>,
    identifiers: BTreeSet<String>,
    recent: bool,
    /// Event key → (event name, schema of its properties).
    last: BTreeMap<String, (String, Value)>,
    /// Event name → schema, for the events of `events.recent`.
    all_events: BTreeMap<String, Value>,
}

/// A printed path, for the render matrix: whether it fell back or was missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Probe {
    pub(crate) path: Vec<String>,
    pub(crate) has_default: bool,
}

impl ContextPlan {
    /// The plan and probes of the scanned parts of a template.
    pub(crate) fn from_scans(vocabulary: &Vocabulary, scans: &[Scan]) -> (Self, Vec<Probe>) {
        let mut plan = ContextPlan::default();
        let mut probes: Vec<Probe> = Vec::new();
        for scanned in scans {
            for reference in &scanned.references {
                let path = &reference.path;
                let Some(root) = path.first() else { continue };
                if scanned.locals.contains(root) {
                    continue;
                }
                let known = match (root.as_str(), path.get(1).map(String::as_str)) {
                    ("profile", Some("traits")) => match path.get(2) {
                        Some(name) => {
                            let schema = vocabulary
                                .trait_schema(name)
                                .cloned()
                                .unwrap_or(Value::Null);
                            plan.traits.insert(name.clone(), schema);
                            true
                        }
                        None => false,
                    },
                    ("profile", Some("id")) => true,
                    ("profile", Some(kind)) => {
                        plan.identifiers.insert(kind.to_owned());
                        true
                    }
                    ("events", Some("recent")) => {
                        plan.recent = true;
                        false
                    }
                    ("events", Some("last")) => match path
                        .get(2)
                        .and_then(|key| vocabulary.events.get(key).map(|event| (key, event)))
                    {
                        Some((key, event)) => {
                            plan.last.insert(key.clone(), event.clone());
                            true
                        }
                        None => false,
                    },
                    _ => false,
                };
                let probe = Probe {
                    path: path.clone(),
                    has_default: reference.has_default,
                };
                if known
                    && !reference.dynamic
                    && reference.usage == Use::Output
                    && !reference.guarded
                    && !probes.contains(&probe)
                {
                    probes.push(probe);
                }
            }
        }
        if plan.recent {
            plan.all_events = vocabulary
                .events
                .values()
                .map(|(name, schema)| (name.clone(), schema.clone()))
                .collect();
        }
        (plan, probes)
    }

    /// The context of one person as JSON.
    pub(crate) fn build(&self, input: &RenderInput) -> Value {
        let profile = &input.profile;
        let mut traits = Map::new();
        for (name, schema) in &self.traits {
            let value = match profile.traits.get(name) {
                Some(golden) => fill(golden.value.clone(), schema),
                None => skeleton(schema),
            };
            traits.insert(name.clone(), value);
        }
        let mut person = Map::new();
        person.insert("id".into(), Value::String(profile.id.clone()));
        person.insert("traits".into(), Value::Object(traits));
        for kind in &self.identifiers {
            let value = profile
                .identifiers
                .iter()
                .find(|identifier| &identifier.kind == kind)
                .map_or(Value::Null, |identifier| {
                    Value::String(identifier.value.clone())
                });
            person.insert(kind.clone(), value);
        }

        let mut events = Map::new();
        if self.recent {
            let recent: Vec<Value> = input
                .events
                .iter()
                .filter(|event| event.get("type").and_then(Value::as_str) == Some("track"))
                .take(RECENT_EVENTS)
                .map(|event| {
                    let name = event
                        .get("event")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let schema = self.all_events.get(name).unwrap_or(&Value::Null);
                    event_view(event, schema)
                })
                .collect();
            events.insert("recent".into(), Value::Array(recent));
        }
        if !self.last.is_empty() {
            let mut last = Map::new();
            for (key, (name, schema)) in &self.last {
                let found = input.events.iter().find(|event| {
                    event.get("type").and_then(Value::as_str) == Some("track")
                        && event.get("event").and_then(Value::as_str) == Some(name)
                });
                let value = match found {
                    Some(event) => event_view(event, schema),
                    None => {
                        json!({"name": null, "timestamp": null, "properties": skeleton(schema)})
                    }
                };
                last.insert(key.clone(), value);
            }
            events.insert("last".into(), Value::Object(last));
        }
        json!({"profile": person, "events": events})
    }
}

fn event_view(event: &Value, schema: &Value) -> Value {
    let properties = event
        .get("properties")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    json!({
        "name": event.get("event").cloned().unwrap_or(Value::Null),
        "timestamp": event.get("timestamp").cloned().unwrap_or(Value::Null),
        "properties": fill(properties, schema),
    })
}

/// `value` with every property its schema describes present (`nil` when absent), recursively
/// through objects and array items.
fn fill(value: Value, schema: &Value) -> Value {
    match value {
        Value::Object(mut object) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    match object.remove(name) {
                        Some(present) => {
                            object.insert(name.clone(), fill(present, property));
                        }
                        None => {
                            object.insert(name.clone(), skeleton(property));
                        }
                    }
                }
            }
            Value::Object(object)
        }
        Value::Array(items) => match schema.get("items") {
            Some(item_schema) => Value::Array(
                items
                    .into_iter()
                    .map(|item| fill(item, item_schema))
                    .collect(),
            ),
            None => Value::Array(items),
        },
        other => other,
    }
}

/// What an absent value of this schema looks like: `nil`, or an object of `nil`s.
fn skeleton(schema: &Value) -> Value {
    match schema.get("properties").and_then(Value::as_object) {
        Some(properties) => Value::Object(
            properties
                .iter()
                .map(|(name, property)| (name.clone(), skeleton(property)))
                .collect(),
        ),
        None => Value::Null,
    }
}
