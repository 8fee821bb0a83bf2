//! Retention policies: how long events and profile traits are kept (`[retention]`).
//!
//! Plain data with the matching rules; `trib-config` builds them from `tributary.toml`, the
//! event purge and the identity engine's trait expiry apply them.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::EventType;

/// Time-to-live per event type. An event with no TTL (no entry and no `default`) is kept
/// forever.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventRetention {
    /// Per track event name (`"Order Completed"`).
    pub track_events: BTreeMap<String, Duration>,
    /// Per call type other than `track` (`page`, `screen`, `identify`, `group`, `alias`).
    pub call_types: HashMap<EventType, Duration>,
    /// For every event that matches neither.
    pub default: Option<Duration>,
}

/// The TTL that applies to one event, with the policy key it came from (the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTtl<'a> {
    /// The `[retention.events]` key: a track event name, a call type, or `default`.
    pub label: &'a str,
    pub ttl: Duration,
}

impl EventRetention {
    /// Whether any event can expire.
    pub fn is_empty(&self) -> bool {
        self.track_events.is_empty() && self.call_types.is_empty() && self.default.is_none()
    }

    /// The TTL of an event of type `kind` (and, for `track`, named `name`), if it has one.
    pub fn ttl_for(&self, kind: EventType, name: Option<&str>) -> Option<EventTtl<'_>> {
        if kind == EventType::Track
            && let Some((label, ttl)) = name.and_then(|name| self.track_events.get_key_value(name))
        {
            return Some(EventTtl {
                label: label.as_str(),
                ttl: *ttl,
            });
        }
        if kind != EventType::Track
            && let Some(ttl) = self.call_types.get(&kind)
        {
            return Some(EventTtl {
                label: kind.as_str(),
                ttl: *ttl,
            });
        }
        self.default.map(|ttl| EventTtl {
            label: "default",
            ttl,
        })
    }
}

/// One field class: the traits it names and how long their observations are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraitClass {
    pub name: String,
    pub traits: Vec<String>,
    /// `None`: the class is defined but its traits are kept forever.
    pub ttl: Option<Duration>,
}

/// Time-to-live per field class of profile traits. A trait in no class is kept forever.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraitRetention {
    pub classes: Vec<TraitClass>,
}

impl TraitRetention {
    /// The default classes, without TTLs: `contact` (email, phone, address) and `name`
    /// (first_name, last_name, firstName, lastName, name).
    pub fn default_classes() -> Vec<TraitClass> {
        let class = |name: &str, traits: &[&str]| TraitClass {
            name: name.to_owned(),
            traits: traits.iter().map(|t| (*t).to_owned()).collect(),
            ttl: None,
        };
        vec![
            class("contact", &["email", "phone", "address"]),
            class(
                "name",
                &["first_name", "last_name", "firstName", "lastName", "name"],
            ),
        ]
    }

    /// Whether any trait can expire.
    pub fn is_empty(&self) -> bool {
        self.classes.iter().all(|class| class.ttl.is_none())
    }

    /// The class of `trait_name` that has a TTL, with the TTL.
    pub fn class_of(&self, trait_name: &str) -> Option<(&str, Duration)> {
        self.classes.iter().find_map(|class| {
            let ttl = class.ttl?;
            class
                .traits
                .iter()
                .any(|t| t == trait_name)
                .then_some((class.name.as_str(), ttl))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ttl_prefers_the_track_name_then_the_call_type_then_the_default() {
        let day = Duration::from_secs(86_400);
        let policy = EventRetention {
            track_events: BTreeMap::from([("Order Completed".to_owned(), day)]),
            call_types: HashMap::from([(EventType::Page, 2 * day)]),
            default: Some(3 * day),
        };
        let ttl = |kind, name| policy.ttl_for(kind, name).map(|t| (t.label, t.ttl));
        assert_eq!(
            ttl(EventType::Track, Some("Order Completed")),
            Some(("Order Completed", day))
        );
        assert_eq!(ttl(EventType::Page, None), Some(("page", 2 * day)));
        assert_eq!(
            ttl(EventType::Track, Some("Other")),
            Some(("default", 3 * day))
        );
        assert_eq!(ttl(EventType::Identify, None), Some(("default", 3 * day)));
        let keep = EventRetention::default();
        assert!(keep.is_empty());
        assert_eq!(
            keep.ttl_for(EventType::Track, Some("Order Completed")),
            None
        );
    }

    #[test]
    fn traits_in_no_class_with_a_ttl_are_kept() {
        let mut classes = TraitRetention::default_classes();
        classes[0].ttl = Some(Duration::from_secs(60));
        let policy = TraitRetention { classes };
        assert_eq!(
            policy.class_of("email"),
            Some(("contact", Duration::from_secs(60)))
        );
        assert_eq!(policy.class_of("firstName"), None, "class without a TTL");
        assert_eq!(policy.class_of("plan"), None);
    }
}
