//! The gate every event passes before storage, whatever path it came by (the Segment-compatible
//! API, file imports, webhooks, quarantine replays): [`SourceGate`] implements
//! [`trib_core::EventGate`] from a source's rules in `tributary.toml` and the schema registry.
//!
//! In order, for one event:
//! 1. **Normalization**: each `[sources.normalize]` rule rewrites its field (email, phone to
//!    E.164, country to ISO 3166-1 alpha-2, ...). A value that cannot be normalized either
//!    refuses the event (`on_error = "reject"`, the default) or is removed (`"drop"`); a dropped
//!    field is listed under `context.tributary.dropped` with its code and counted in
//!    `tributary_fields_dropped_total`.
//! 2. **Minimization**: with `allowed_fields`, every field under `properties`, `traits` and
//!    `context` that no pattern allows is removed and counted per source and field in
//!    `tributary_fields_removed_total`, so a team sees what it is not collecting. Top-level
//!    fields outside those three objects (`channel`, `version`) are kept.
//! 3. **Validation**: a `track` event is checked against the newest schema of its event name, an
//!    `identify` call's traits against the newest trait schema. A failure refuses the event
//!    (`schema_violation`, with the first failing field's path and every error in the reason);
//!    an event with no schema follows the source's `unknown_events` policy. The schema id is
//!    stored with accepted events (`context.tributary.schema`).
//!
//! The crate is pure: no I/O, no async. The registry is shared behind a lock so a published
//! schema applies to the next event.

mod minimize;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use serde_json::{Value, json};
use trib_config::{Config, SourceConfig, UnknownEvents};
use trib_core::{Event, EventGate, EventType, JsonMap, Refusal};
use trib_normalize::OnError;
use trib_schema::{Registry, Subject, Validation};

pub use minimize::FieldFilter;

/// Fields removed by minimization, per source and field.
pub const FIELDS_REMOVED: &str = "tributary_fields_removed_total";
/// Fields removed because they could not be normalized, per source, field and code.
pub const FIELDS_DROPPED: &str = "tributary_fields_dropped_total";

/// At most this many distinct field names are used as metric labels per source; the rest are
/// counted as `(other)`, so a client sending random keys cannot blow up the metrics.
const MAX_FIELD_LABELS: usize = 200;

/// The schema registry, shared by the gates and the schema endpoints.
pub type SharedRegistry = Arc<RwLock<Registry>>;

/// The gates of every configured source.
pub struct Gates {
    by_source: HashMap<String, Arc<SourceGate>>,
    registry: SharedRegistry,
}

impl Gates {
    /// Builds one gate per source of `config`.
    pub fn new(config: &Config, registry: SharedRegistry) -> Gates {
        let by_source = config
            .sources
            .iter()
            .map(|source| {
                (
                    source.name.clone(),
                    Arc::new(SourceGate::new(source, registry.clone())),
                )
            })
            .collect();
        Gates {
            by_source,
            registry,
        }
    }

    /// Returns the gate of a source, if it is configured.
    pub fn get(&self, source: &str) -> Option<&Arc<SourceGate>> {
        self.by_source.get(source)
    }

    /// Returns the shared registry.
    pub fn registry(&self) -> &SharedRegistry {
        &self.registry
    }
}

/// The rules of one source.
pub struct SourceGate {
    source: String,
    unknown_events: UnknownEvents,
    filter: Option<FieldFilter>,
    normalize: Vec<trib_config::FieldRule>,
    options: trib_normalize::Options,
    registry: SharedRegistry,
    field_labels: Mutex<std::collections::HashSet<String>>,
}

impl SourceGate {
    /// Builds the gate of one source.
    pub fn new(source: &SourceConfig, registry: SharedRegistry) -> SourceGate {
        SourceGate {
            source: source.name.clone(),
            unknown_events: source.rules.unknown_events,
            filter: source.rules.allowed_fields.as_deref().map(FieldFilter::new),
            normalize: source.rules.normalize.clone(),
            options: trib_normalize::Options {
                default_region: source.rules.default_region.clone(),
                ..trib_normalize::Options::default()
            },
            registry,
            field_labels: Mutex::default(),
        }
    }

    fn normalize(&self, event: &mut Event) -> Result<(), Refusal> {
        let mut dropped = Vec::new();
        for rule in &self.normalize {
            let Some(value) = field_mut(event, &rule.field) else {
                continue;
            };
            if value.is_null() {
                continue;
            }
            match trib_normalize::normalize_value(rule.rule, value, &self.options) {
                Ok(normalized) => *value = normalized,
                Err(error) => match rule.on_error {
                    OnError::Reject => {
                        return Err(Refusal {
                            code: error.code.to_owned(),
                            field: Some(rule.field.clone()),
                            reason: format!("`{}`: {}", rule.field, error.reason),
                            schema: None,
                        });
                    }
                    OnError::Drop => {
                        remove_field(event, &rule.field);
                        metrics::counter!(FIELDS_DROPPED, "source" => self.source.clone(), "field" => rule.field.clone(), "code" => error.code)
                            .increment(1);
                        dropped.push(json!({"field": rule.field, "code": error.code, "reason": error.reason}));
                    }
                },
            }
        }
        if !dropped.is_empty() {
            tributary_context(event).insert("dropped".to_owned(), Value::Array(dropped));
        }
        Ok(())
    }

    fn minimize(&self, event: &mut Event) {
        let Some(filter) = &self.filter else { return };
        let mut removed = Vec::new();
        if let Some(properties) = &mut event.properties {
            filter.retain(properties, "properties", &mut removed);
        }
        if let Some(traits) = &mut event.traits {
            filter.retain(traits, "traits", &mut removed);
        }
        // Tributary's own annotations are not the source's fields.
        let own = event.context.remove("tributary");
        filter.retain(&mut event.context, "context", &mut removed);
        if let Some(own) = own {
            event.context.insert("tributary".to_owned(), own);
        }
        for field in removed {
            metrics::counter!(FIELDS_REMOVED, "source" => self.source.clone(), "field" => self.field_label(field))
                .increment(1);
        }
    }

    fn field_label(&self, field: String) -> String {
        let Ok(mut labels) = self.field_labels.lock() else {
            return "(other)".to_owned();
        };
        if labels.contains(&field) || labels.len() < MAX_FIELD_LABELS {
            labels.insert(field.clone());
            field
        } else {
            "(other)".to_owned()
        }
    }

    fn validate(&self, event: &mut Event) -> Result<(), Refusal> {
        let Ok(registry) = self.registry.read() else {
            return Err(Refusal {
                code: "internal_error".to_owned(),
                field: None,
                reason: "the schema registry is unavailable".to_owned(),
                schema: None,
            });
        };
        // The object is moved into a `Value` for the validator and back, not copied.
        let subject = match (event.kind, &event.event) {
            (EventType::Track, Some(name)) => Subject::Event(name.clone()),
            (EventType::Identify, _) => Subject::Traits,
            _ => return Ok(()),
        };
        let slot = validated_object(event);
        let was_present = slot.is_some();
        let value = Value::Object(slot.take().unwrap_or_default());
        let verdict = match registry.validate(&subject, &value) {
            Validation::Valid { schema } => Ok(Some(schema.to_string())),
            Validation::NoSchema => match self.unknown_events {
                UnknownEvents::Accept => Ok(None),
                UnknownEvents::Quarantine => Err(Refusal {
                    code: "no_schema".to_owned(),
                    field: None,
                    reason: format!(
                        "no schema is published for {}, and source `{}` quarantines such events",
                        describe(&subject),
                        self.source
                    ),
                    schema: None,
                }),
            },
            Validation::Invalid {
                schema,
                errors,
                truncated,
            } => Err(Refusal {
                code: "schema_violation".to_owned(),
                field: errors.first().map(|error| error.path.clone()),
                reason: format!(
                    "{}{}",
                    errors
                        .iter()
                        .map(|error| format!("{}: {}", error.path, error.message))
                        .collect::<Vec<_>>()
                        .join("; "),
                    if truncated { "; and more" } else { "" }
                ),
                schema: Some(schema.to_string()),
            }),
        };
        drop(registry);
        if let Value::Object(map) = value
            && was_present
        {
            *validated_object(event) = Some(map);
        }
        let schema = verdict?;
        if let Some(schema) = schema {
            tributary_context(event).insert("schema".to_owned(), Value::String(schema));
        }
        Ok(())
    }
}

/// The object a schema describes: the traits of an identify call, else the properties.
fn validated_object(event: &mut Event) -> &mut Option<JsonMap> {
    match event.kind {
        EventType::Identify => &mut event.traits,
        _ => &mut event.properties,
    }
}

fn describe(subject: &Subject) -> String {
    match subject {
        Subject::Event(name) => format!("the event {name:?}"),
        Subject::Traits => "profile traits".to_owned(),
    }
}

impl EventGate for SourceGate {
    fn admit(&self, event: &mut Event) -> Result<(), Refusal> {
        self.normalize(event)?;
        self.minimize(event);
        self.validate(event)
    }
}

/// Returns `context.tributary`, Tributary's own annotations, creating it.
fn tributary_context(event: &mut Event) -> &mut JsonMap {
    let entry = event
        .context
        .entry("tributary")
        .or_insert_with(|| Value::Object(JsonMap::new()));
    if !entry.is_object() {
        *entry = Value::Object(JsonMap::new());
    }
    match entry {
        Value::Object(map) => map,
        _ => unreachable!("replaced by an object above"),
    }
}

/// Returns the root object of a field path (`traits.email` → the traits) and the rest.
fn root_mut<'a>(event: &'a mut Event, path: &'a str) -> Option<(&'a mut JsonMap, &'a str)> {
    let (root, rest) = path.split_once('.')?;
    let map = match root {
        "properties" => event.properties.as_mut()?,
        "traits" => event.traits.as_mut()?,
        "context" => &mut event.context,
        _ => return None,
    };
    Some((map, rest))
}

/// Returns the value at a dotted field path, if present.
fn field_mut<'a>(event: &'a mut Event, path: &'a str) -> Option<&'a mut Value> {
    let (mut map, rest) = root_mut(event, path)?;
    let mut segments = rest.split('.').peekable();
    while let Some(segment) = segments.next() {
        let value = map.get_mut(segment)?;
        if segments.peek().is_none() {
            return Some(value);
        }
        map = value.as_object_mut()?;
    }
    None
}

/// Removes the value at a dotted field path, if present.
fn remove_field(event: &mut Event, path: &str) {
    let Some((map, rest)) = root_mut(event, path) else {
        return;
    };
    match rest.rsplit_once('.') {
        None => {
            map.remove(rest);
        }
        Some((parent, last)) => {
            let mut current = map;
            for segment in parent.split('.') {
                match current.get_mut(segment).and_then(Value::as_object_mut) {
                    Some(next) => current = next,
                    None => return,
                }
            }
            current.remove(last);
        }
    }
}
