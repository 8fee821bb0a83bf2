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

use liquid::Object;
use liquid::model::{KString, Value as Liquid};
use serde_json::{Map, Value};
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
    traits: BTreeMap<String, Shape>,
    identifiers: BTreeSet<String>,
    recent: bool,
    /// Event key → (event name, shape of its properties).
    last: BTreeMap<String, (String, Shape)>,
    /// Event name → shape, for the events of `events.recent`.
    all_events: BTreeMap<String, Shape>,
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
                            let shape = vocabulary
                                .trait_schema(name)
                                .map(Shape::of)
                                .unwrap_or_default();
                            plan.traits.insert(name.clone(), shape);
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
                            let (name, schema) = event;
                            plan.last
                                .insert(key.clone(), (name.clone(), Shape::of(schema)));
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
                .map(|(name, schema)| (name.clone(), Shape::of(schema)))
                .collect();
        }
        (plan, probes)
    }

    /// The context of one person as Liquid globals, built straight from the profile and the
    /// events (no intermediate JSON): every path the schemas describe is present, `nil` when
    /// the person lacks it.
    pub(crate) fn build(&self, input: &RenderInput) -> Object {
        let profile = &input.profile;
        let mut traits = Object::new();
        for (name, shape) in &self.traits {
            let value = match profile.traits.get(name) {
                Some(golden) => fill(&golden.value, shape),
                None => shape.skeleton.clone(),
            };
            traits.insert(KString::from_ref(name), value);
        }
        let mut person = Object::new();
        person.insert(
            KString::from_static("id"),
            Liquid::scalar(KString::from_ref(&profile.id)),
        );
        person.insert(KString::from_static("traits"), Liquid::Object(traits));
        for kind in &self.identifiers {
            let value = profile
                .identifiers
                .iter()
                .find(|identifier| &identifier.kind == kind)
                .map_or(Liquid::Nil, |identifier| {
                    Liquid::scalar(KString::from_ref(&identifier.value))
                });
            person.insert(KString::from_ref(kind), value);
        }

        let mut events = Object::new();
        if self.recent {
            let nothing = Shape::default();
            let recent: Vec<Liquid> = input
                .events
                .iter()
                .filter(|event| event.get("type").and_then(Value::as_str) == Some("track"))
                .take(RECENT_EVENTS)
                .map(|event| {
                    let name = event
                        .get("event")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let shape = self.all_events.get(name).unwrap_or(&nothing);
                    event_view(event, shape)
                })
                .collect();
            events.insert(KString::from_static("recent"), Liquid::Array(recent));
        }
        if !self.last.is_empty() {
            let mut last = Object::new();
            for (key, (name, shape)) in &self.last {
                let found = input.events.iter().find(|event| {
                    event.get("type").and_then(Value::as_str) == Some("track")
                        && event.get("event").and_then(Value::as_str) == Some(name)
                });
                let value = match found {
                    Some(event) => event_view(event, shape),
                    None => {
                        let mut view = Object::new();
                        view.insert(KString::from_static("name"), Liquid::Nil);
                        view.insert(KString::from_static("timestamp"), Liquid::Nil);
                        view.insert(KString::from_static("properties"), shape.skeleton.clone());
                        Liquid::Object(view)
                    }
                };
                last.insert(KString::from_ref(key), value);
            }
            events.insert(KString::from_static("last"), Liquid::Object(last));
        }
        let mut globals = Object::new();
        globals.insert(KString::from_static("profile"), Liquid::Object(person));
        globals.insert(KString::from_static("events"), Liquid::Object(events));
        globals
    }
}

/// What the context fills out of a JSON schema, prepared once per template version: its
/// `properties` (each present, `nil` when absent), its `items`, and what an absent value of
/// it looks like.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    properties: Option<BTreeMap<String, Shape>>,
    items: Option<Box<Shape>>,
    /// `nil`, or an object of the properties' skeletons.
    skeleton: Liquid,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            properties: None,
            items: None,
            skeleton: Liquid::Nil,
        }
    }
}

impl Shape {
    /// The shape of a JSON schema (`null` and schemas without `properties`/`items` fill
    /// nothing).
    pub(crate) fn of(schema: &Value) -> Self {
        let properties: Option<BTreeMap<String, Shape>> = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|properties| {
                properties
                    .iter()
                    .map(|(name, property)| (name.clone(), Shape::of(property)))
                    .collect()
            });
        let skeleton = match &properties {
            Some(properties) => {
                let mut object = Object::new();
                for (name, shape) in properties {
                    object.insert(KString::from_ref(name), shape.skeleton.clone());
                }
                Liquid::Object(object)
            }
            None => Liquid::Nil,
        };
        Self {
            properties,
            items: schema.get("items").map(|items| Box::new(Shape::of(items))),
            skeleton,
        }
    }
}

fn event_view(event: &Value, shape: &Shape) -> Liquid {
    let properties = match event.get("properties") {
        Some(properties) => fill(properties, shape),
        None => fill(&Value::Object(Map::new()), shape),
    };
    let mut view = Object::new();
    view.insert(
        KString::from_static("name"),
        event.get("event").map_or(Liquid::Nil, plain),
    );
    view.insert(
        KString::from_static("timestamp"),
        event.get("timestamp").map_or(Liquid::Nil, plain),
    );
    view.insert(KString::from_static("properties"), properties);
    Liquid::Object(view)
}

/// `value` as Liquid with every property its shape describes present (`nil` when absent),
/// recursively through objects and array items.
fn fill(value: &Value, shape: &Shape) -> Liquid {
    match value {
        Value::Object(object) => match &shape.properties {
            Some(properties) => {
                let mut out = Object::new();
                for (name, present) in object {
                    let value = match properties.get(name) {
                        Some(property) => fill(present, property),
                        None => plain(present),
                    };
                    out.insert(KString::from_ref(name), value);
                }
                for (name, property) in properties {
                    if !object.contains_key(name) {
                        out.insert(KString::from_ref(name), property.skeleton.clone());
                    }
                }
                Liquid::Object(out)
            }
            None => plain(value),
        },
        Value::Array(items) => match &shape.items {
            Some(item_shape) => {
                Liquid::Array(items.iter().map(|item| fill(item, item_shape)).collect())
            }
            None => plain(value),
        },
        _ => plain(value),
    }
}

/// JSON as Liquid, as is: integers stay integers, other numbers become floats.
pub(crate) fn plain(value: &Value) -> Liquid {
    match value {
        Value::Null => Liquid::Nil,
        Value::Bool(flag) => Liquid::scalar(*flag),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => Liquid::scalar(integer),
            None => Liquid::scalar(number.as_f64().unwrap_or(0.0)),
        },
        Value::String(text) => Liquid::scalar(KString::from_ref(text)),
        Value::Array(items) => Liquid::Array(items.iter().map(plain).collect()),
        Value::Object(object) => {
            let mut out = Object::new();
            for (key, value) in object {
                out.insert(KString::from_ref(key), plain(value));
            }
            Liquid::Object(out)
        }
    }
}
