//! Reads what identity resolution needs from a stored event: its identifiers and trait
//! observations. Only these fields are parsed; properties and the rest are skipped.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use crate::config::{ANONYMOUS_ID, EMAIL, IdentityRules, PHONE, USER_ID};

/// An identifier as read from an event: a type index into the rules' types and a value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawIdentifier {
    pub kind: usize,
    pub value: String,
}

/// What an event says about a person.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub message_id: String,
    pub source: String,
    pub timestamp_ms: i64,
    /// Distinct identifiers, highest type priority first, then by value; blocked ones removed.
    pub identifiers: Vec<RawIdentifier>,
    /// An alias call's `previousId`, typed by the engine (a known user id or an anonymous id).
    pub previous_id: Option<String>,
    /// Trait observations: an identify call's traits, or `context.traits` of other calls.
    pub traits: Map<String, Value>,
    /// Identifiers dropped because their value is blocked: `(type name, reason)`.
    pub blocked: Vec<String>,
    /// Whether the event grants consent for some purpose
    /// (`context.consent.categoryPreferences` with a category set to `true`).
    pub grants_consent: bool,
}

/// Why a stored record could not be read as an event.
#[derive(Debug, thiserror::Error)]
#[error("stored event is not readable: {0}")]
pub struct ExtractError(String);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    message_id: String,
    source: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    anonymous_id: Option<String>,
    #[serde(default)]
    previous_id: Option<String>,
    #[serde(default)]
    traits: Option<Map<String, Value>>,
    #[serde(default)]
    context: Option<Context>,
    timestamp: String,
    #[serde(default, rename = "properties")]
    _properties: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Context {
    #[serde(default)]
    traits: Option<Map<String, Value>>,
    #[serde(default)]
    consent: Option<Consent>,
    #[serde(default)]
    external_ids: Option<Vec<ExternalId>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Consent {
    #[serde(default)]
    category_preferences: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct ExternalId {
    id: Value,
    #[serde(rename = "type")]
    kind: String,
}

/// Canonical form of an identifier value for its type: trimmed; emails lowercased; phone
/// numbers with a country code in E.164 (`+1 (512) 555-0100` → `+15125550100`), so that any
/// spelling links and looks up the same person. A national number without a country code is
/// kept as given: normalize it at the source, with the source's `default_region`.
pub fn canonical_value(kind: &str, value: &str) -> String {
    let value = value.trim();
    match kind {
        EMAIL => value.to_lowercase(),
        PHONE if value.starts_with('+') => {
            trib_normalize::phone(value, None).unwrap_or_else(|_| value.to_owned())
        }
        _ => value.to_owned(),
    }
}

fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether a stored event grants consent for some purpose
/// (`context.consent.categoryPreferences` with a category set to `true`): such an event brings
/// an erased person back.
pub fn grants_consent(payload: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Outer {
        #[serde(default)]
        context: Option<Inner>,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default)]
        consent: Option<Consent>,
    }
    serde_json::from_slice::<Outer>(payload)
        .ok()
        .and_then(|outer| outer.context?.consent?.category_preferences)
        .is_some_and(|preferences| preferences.values().any(|v| *v == Value::Bool(true)))
}

/// Reads one stored event.
pub fn extract(payload: &[u8], rules: &IdentityRules) -> Result<Observed, ExtractError> {
    let envelope: Envelope =
        serde_json::from_slice(payload).map_err(|e| ExtractError(e.to_string()))?;
    let timestamp_ms = envelope
        .timestamp
        .parse::<jiff::Timestamp>()
        .map_err(|e| ExtractError(format!("timestamp: {e}")))?
        .as_millisecond();

    let mut identifiers = Vec::new();
    let mut blocked = Vec::new();
    let mut push = |kind: usize, raw: &str| {
        let name = &rules.types[kind].name;
        let value = canonical_value(name, raw);
        if rules.is_blocked(&value) {
            blocked.push(name.clone());
        } else {
            identifiers.push(RawIdentifier { kind, value });
        }
    };
    if let (Some(kind), Some(user_id)) = (rules.type_index(USER_ID), &envelope.user_id) {
        push(kind, user_id);
    }
    if let (Some(kind), Some(anonymous_id)) =
        (rules.type_index(ANONYMOUS_ID), &envelope.anonymous_id)
    {
        push(kind, anonymous_id);
    }
    let context = envelope.context.unwrap_or(Context {
        traits: None,
        consent: None,
        external_ids: None,
    });
    let grants_consent = context
        .consent
        .and_then(|c| c.category_preferences)
        .is_some_and(|preferences| preferences.values().any(|v| *v == Value::Bool(true)));
    for external in context.external_ids.iter().flatten() {
        if let (Some(kind), Some(id)) = (rules.type_index(&external.kind), id_text(&external.id)) {
            push(kind, &id);
        }
    }

    // Trait observations: an identify call's traits (which already include context.traits),
    // or context.traits of any other call. A group call's own traits describe the group.
    let traits = match (envelope.kind.as_str(), envelope.traits, context.traits) {
        ("identify", Some(traits), _) => traits,
        (_, _, Some(context_traits)) => context_traits,
        _ => Map::new(),
    };
    for (kind, id_type) in rules.types.iter().enumerate() {
        for name in &id_type.traits {
            if let Some(raw) = traits.get(name).and_then(id_text) {
                push(kind, &raw);
            }
        }
    }
    identifiers.sort();
    identifiers.dedup();

    let previous_id = match envelope.kind.as_str() {
        "alias" => envelope
            .previous_id
            .map(|p| p.trim().to_owned())
            .filter(|p| !rules.is_blocked(p)),
        _ => None,
    };
    Ok(Observed {
        message_id: envelope.message_id,
        source: envelope.source,
        timestamp_ms,
        identifiers,
        previous_id,
        traits,
        blocked,
        grants_consent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IdentityConfig;
    use serde_json::json;

    fn rules() -> IdentityRules {
        let config: IdentityConfig = serde_json::from_value(json!({
            "types": [
                {"name": "user_id", "unique": true},
                {"name": "email", "traits": ["email"]},
                {"name": "crm_id", "unique": true, "traits": ["crm_id"]},
                {"name": "anonymous_id"}
            ],
            "blocked_values": ["null", "test@example.com"]
        }))
        .unwrap();
        config.rules().unwrap()
    }

    fn names(observed: &Observed, rules: &IdentityRules) -> Vec<(String, String)> {
        observed
            .identifiers
            .iter()
            .map(|i| (rules.types[i.kind].name.clone(), i.value.clone()))
            .collect()
    }

    #[test]
    fn identifiers_come_from_the_envelope_traits_and_external_ids() {
        let rules = rules();
        let payload = json!({
            "messageId": "m1", "source": "web", "type": "identify",
            "userId": " u-1 ", "anonymousId": "a-1",
            "traits": {"email": "Alice@Example.COM", "crm_id": 42, "name": "Alice"},
            "context": {"externalIds": [{"id": "c-9", "type": "crm_id"}, {"id": "x", "type": "unknown"}]},
            "properties": {"huge": [1, 2, 3]},
            "timestamp": "2026-01-02T03:04:05.678Z"
        });
        let observed = extract(payload.to_string().as_bytes(), &rules).unwrap();
        assert_eq!(
            names(&observed, &rules),
            vec![
                ("user_id".into(), "u-1".into()),
                ("email".into(), "alice@example.com".into()),
                ("crm_id".into(), "42".into()),
                ("crm_id".into(), "c-9".into()),
                ("anonymous_id".into(), "a-1".into()),
            ]
        );
        assert_eq!(observed.timestamp_ms, 1_767_323_045_678);
        assert_eq!(observed.traits["name"], json!("Alice"));
        assert_eq!(observed.previous_id, None);
    }

    #[test]
    fn blocked_values_are_dropped_and_reported_by_type_only() {
        let rules = rules();
        let payload = json!({
            "messageId": "m2", "source": "web", "type": "track", "event": "x",
            "userId": "NULL", "anonymousId": "a-2",
            "context": {"traits": {"email": "test@example.com"}},
            "timestamp": "2026-01-02T03:04:05Z"
        });
        let observed = extract(payload.to_string().as_bytes(), &rules).unwrap();
        assert_eq!(
            names(&observed, &rules),
            vec![("anonymous_id".into(), "a-2".into())]
        );
        assert_eq!(
            observed.blocked,
            vec!["user_id".to_owned(), "email".to_owned()]
        );
    }

    #[test]
    fn group_traits_are_not_the_persons_and_alias_keeps_previous_id() {
        let rules = rules();
        let group = json!({
            "messageId": "m3", "source": "web", "type": "group", "groupId": "g",
            "userId": "u-3", "traits": {"email": "team@corp.example"},
            "timestamp": "2026-01-02T03:04:05Z"
        });
        let observed = extract(group.to_string().as_bytes(), &rules).unwrap();
        assert!(observed.traits.is_empty());
        assert_eq!(observed.identifiers.len(), 1);
        let alias = json!({
            "messageId": "m4", "source": "web", "type": "alias",
            "userId": "u-4", "previousId": "old-anon",
            "timestamp": "2026-01-02T03:04:05Z"
        });
        let observed = extract(alias.to_string().as_bytes(), &rules).unwrap();
        assert_eq!(observed.previous_id.as_deref(), Some("old-anon"));
    }

    #[test]
    fn emails_and_international_phones_have_one_canonical_spelling() {
        assert_eq!(
            canonical_value("email", " Ada@Example.COM "),
            "ada@example.com"
        );
        assert_eq!(
            canonical_value("phone", "+1 (512) 555-0100"),
            "+15125550100"
        );
        assert_eq!(canonical_value("phone", "+15125550100"), "+15125550100");
        assert_eq!(
            canonical_value("phone", "+44 20 7946 0958"),
            "+442079460958"
        );
        // Without a country code there is no way to know the country: kept as given.
        assert_eq!(canonical_value("phone", "(512) 555-0100"), "(512) 555-0100");
        assert_eq!(canonical_value("user_id", " U-1 "), "U-1");
    }

    #[test]
    fn unreadable_records_are_errors() {
        let rules = rules();
        assert!(extract(b"not json", &rules).is_err());
        let bad_time =
            json!({"messageId": "m", "source": "s", "type": "track", "timestamp": "yesterday"});
        let error = extract(bad_time.to_string().as_bytes(), &rules).unwrap_err();
        assert!(error.to_string().contains("timestamp"));
    }
}
