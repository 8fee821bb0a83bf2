//! `[[destinations]]`: the ESPs (and signed webhooks) that golden profiles are synced to.
//!
//! ```toml
//! [[destinations]]
//! name = "newsletter"            # unique; used in metrics, the CLI and suppression lists
//! type = "mailchimp"             # mailchimp | hubspot | sendgrid | webhook
//! purpose = "email_marketing"    # a declared [privacy] purpose; only permitted profiles go
//! mode = "upsert"                # upsert | mirror (mirror also deletes at the ESP)
//! api_key = "${MAILCHIMP_API_KEY}"
//! list_id = "a1b2c3"
//! batch_window = "250ms"         # micro-batch window of streaming changes
//! resync_interval = "7d"         # optional: send everything in full again this often
//! [destinations.fields]          # ESP field = trait (or identifiers.<type>)
//! FNAME = "firstName"
//! PHONE = "identifiers.phone"
//! ```
//!
//! Credentials per type: `api_key` (Mailchimp, SendGrid), `token` (HubSpot), `url` and
//! `secret` (webhook). `base_url` overrides the ESP's address (e.g. a `tributary simulate`
//! server).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Deserialize;
use trib_core::Secret;

use crate::path::TomlPath;
use crate::raw::{Problems, parse_positive_days, parse_positive_duration};

/// The ESP protocol a destination speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DestinationType {
    Mailchimp,
    Hubspot,
    Sendgrid,
    Webhook,
}

impl DestinationType {
    pub const ALL: [DestinationType; 4] = [
        DestinationType::Mailchimp,
        DestinationType::Hubspot,
        DestinationType::Sendgrid,
        DestinationType::Webhook,
    ];

    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationType::Mailchimp => "mailchimp",
            DestinationType::Hubspot => "hubspot",
            DestinationType::Sendgrid => "sendgrid",
            DestinationType::Webhook => "webhook",
        }
    }
}

/// What a destination does with profiles that leave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Create and update only: the ESP keeps contacts Tributary no longer sends.
    #[default]
    Upsert,
    /// Also delete at the ESP a contact whose profile was deleted, merged away under
    /// another email, or lost the destination's consent.
    Mirror,
}

/// Where an ESP field's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldSource {
    /// A golden trait; a dotted path reaches into objects (`address.city`).
    Trait(String),
    /// The profile's first identifier of this type (`identifiers.phone`).
    Identifier(String),
}

/// One `[[destinations]]` entry, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationConfig {
    pub name: String,
    pub kind: DestinationType,
    /// The purpose whose consent a profile needs to be sent. Default `email_marketing`.
    pub purpose: String,
    pub mode: SyncMode,
    /// `api_key` (Mailchimp, SendGrid), `token` (HubSpot) or `secret` (webhook).
    pub credential: Secret<String>,
    /// Mailchimp's audience id.
    pub list_id: Option<String>,
    /// SendGrid lists to add contacts to.
    pub list_ids: Vec<String>,
    /// The webhook's URL.
    pub url: Option<String>,
    /// Overrides the ESP's base URL (simulators, proxies).
    pub base_url: Option<String>,
    /// ESP field name → source, in config order.
    pub fields: Vec<(String, FieldSource)>,
    /// How long streaming changes are gathered before a batch is sent. Default 250 ms.
    pub batch_window: Duration,
    /// How often every profile is compared with what the ESP confirmed. Default 1 h.
    pub reconcile_interval: Duration,
    /// How often a full resync runs (every profile sent in full and confirmed again, which
    /// repairs changes made in the ESP itself); none by default (`tributary destinations
    /// resync` asks for one).
    pub resync_interval: Option<Duration>,
    /// How long a failing record is retried before it is dead-lettered. Default 24 h.
    pub retry_window: Duration,
    /// The first retry delay (doubled per attempt, with jitter, up to 5 min). Default 1 s.
    pub retry_base: Duration,
    /// Fewer records per call than the ESP's maximum, if set.
    pub max_batch: Option<usize>,
}

impl DestinationConfig {
    pub const DEFAULT_PURPOSE: &str = "email_marketing";
    pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_millis(250);
    pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(60 * 60);
    pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
    pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(1);
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDestination {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    purpose: Option<String>,
    mode: Option<String>,
    api_key: Option<String>,
    token: Option<String>,
    secret: Option<String>,
    list_id: Option<String>,
    list_ids: Option<Vec<String>>,
    url: Option<String>,
    base_url: Option<String>,
    fields: Option<BTreeMap<String, String>>,
    batch_window: Option<String>,
    reconcile_interval: Option<String>,
    resync_interval: Option<String>,
    retry_window: Option<String>,
    retry_base: Option<String>,
    max_batch: Option<i64>,
}

/// Validates every `[[destinations]]` entry against the declared purposes.
pub(crate) fn validate_destinations(
    raw: Option<Vec<RawDestination>>,
    purposes: &[String],
    problems: &mut Problems<'_>,
) -> Vec<DestinationConfig> {
    let table = TomlPath::key("destinations");
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (index, raw) in raw.unwrap_or_default().into_iter().enumerate() {
        let path = table.at(index);
        let name = match raw.name {
            None => {
                problems.push(&path.join("name"), "required");
                String::new()
            }
            Some(name) => {
                if name.is_empty()
                    || name.len() > 64
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    problems.push(
                        &path.join("name"),
                        "must be 1 to 64 ASCII letters, digits, '-' or '_'",
                    );
                } else if let Some(first) = names.get(&name) {
                    problems.push(
                        &path.join("name"),
                        format!("duplicate destination name {name:?} (also destinations[{first}])"),
                    );
                } else {
                    names.insert(name.clone(), index);
                }
                name
            }
        };
        let kind = match raw.kind.as_deref() {
            None => {
                problems.push(
                    &path.join("type"),
                    "required: mailchimp, hubspot, sendgrid or webhook",
                );
                DestinationType::Webhook
            }
            Some(text) => match DestinationType::ALL
                .into_iter()
                .find(|k| k.as_str() == text)
            {
                Some(kind) => kind,
                None => {
                    problems.push(
                        &path.join("type"),
                        format!("unknown type {text:?}: mailchimp, hubspot, sendgrid or webhook"),
                    );
                    DestinationType::Webhook
                }
            },
        };
        let purpose = raw
            .purpose
            .unwrap_or_else(|| DestinationConfig::DEFAULT_PURPOSE.to_owned());
        if !purposes.contains(&purpose) {
            problems.push(
                &path.join("purpose"),
                format!("{purpose:?} is not a declared purpose (privacy.purposes)"),
            );
        }
        let mode = match raw.mode.as_deref() {
            None | Some("upsert") => SyncMode::Upsert,
            Some("mirror") => SyncMode::Mirror,
            Some(other) => {
                problems.push(
                    &path.join("mode"),
                    format!("unknown mode {other:?}: upsert or mirror"),
                );
                SyncMode::Upsert
            }
        };

        // Each type takes exactly its own credential and settings.
        let credential_key = match kind {
            DestinationType::Mailchimp | DestinationType::Sendgrid => "api_key",
            DestinationType::Hubspot => "token",
            DestinationType::Webhook => "secret",
        };
        let settings = [
            (
                "api_key",
                raw.api_key.is_some(),
                credential_key == "api_key",
            ),
            ("token", raw.token.is_some(), credential_key == "token"),
            ("secret", raw.secret.is_some(), credential_key == "secret"),
            (
                "list_id",
                raw.list_id.is_some(),
                kind == DestinationType::Mailchimp,
            ),
            (
                "list_ids",
                raw.list_ids.is_some(),
                kind == DestinationType::Sendgrid,
            ),
            ("url", raw.url.is_some(), kind == DestinationType::Webhook),
            (
                "base_url",
                raw.base_url.is_some(),
                kind != DestinationType::Webhook,
            ),
        ];
        for (key, present, allowed) in settings {
            if present && !allowed {
                problems.push(
                    &path.join(key),
                    format!("not a setting of type {:?}", kind.as_str()),
                );
            }
        }
        let credential = match kind {
            DestinationType::Mailchimp | DestinationType::Sendgrid => raw.api_key,
            DestinationType::Hubspot => raw.token,
            DestinationType::Webhook => raw.secret,
        };
        let credential = match credential {
            Some(value) if !value.trim().is_empty() => value,
            _ => {
                problems.push(
                    &path.join(credential_key),
                    format!("required for type {:?}", kind.as_str()),
                );
                String::new()
            }
        };
        if kind == DestinationType::Mailchimp && raw.list_id.as_deref().is_none_or(str::is_empty) {
            problems.push(&path.join("list_id"), "required for type \"mailchimp\"");
        }
        if kind == DestinationType::Webhook && raw.url.as_deref().is_none_or(str::is_empty) {
            problems.push(&path.join("url"), "required for type \"webhook\"");
        }
        for (key, value) in [("url", &raw.url), ("base_url", &raw.base_url)] {
            if let Some(value) = value
                && !(value.starts_with("http://") || value.starts_with("https://"))
            {
                problems.push(&path.join(key), "must be an http:// or https:// URL");
            }
        }

        let mut fields = Vec::new();
        for (esp_field, source) in raw.fields.unwrap_or_default() {
            let field_path = path.join("fields").join(&esp_field);
            if esp_field.is_empty() {
                problems.push(&field_path, "an ESP field name must not be empty");
                continue;
            }
            let source = match source.strip_prefix("identifiers.") {
                Some("") => {
                    problems.push(&field_path, "name an identifier type: identifiers.phone");
                    continue;
                }
                Some(kind) => FieldSource::Identifier(kind.to_owned()),
                None if source.is_empty() || source.split('.').any(str::is_empty) => {
                    problems.push(
                        &field_path,
                        "must name a trait (firstName, address.city) or identifiers.<type>",
                    );
                    continue;
                }
                None => {
                    FieldSource::Trait(source.strip_prefix("traits.").unwrap_or(&source).to_owned())
                }
            };
            fields.push((esp_field, source));
        }

        let mut duration =
            |key: &str, text: Option<String>, default: Duration, days: bool| match text {
                None => default,
                Some(text) => {
                    let parsed = if days {
                        parse_positive_days(&text)
                    } else {
                        parse_positive_duration(&text)
                    };
                    parsed.unwrap_or_else(|message| {
                        problems.push(&path.join(key), message);
                        default
                    })
                }
            };
        let batch_window = duration(
            "batch_window",
            raw.batch_window,
            DestinationConfig::DEFAULT_BATCH_WINDOW,
            false,
        );
        let reconcile_interval = duration(
            "reconcile_interval",
            raw.reconcile_interval,
            DestinationConfig::DEFAULT_RECONCILE_INTERVAL,
            true,
        );
        let resync_interval = raw.resync_interval.map(|text| {
            duration(
                "resync_interval",
                Some(text),
                DestinationConfig::DEFAULT_RECONCILE_INTERVAL,
                true,
            )
        });
        let retry_window = duration(
            "retry_window",
            raw.retry_window,
            DestinationConfig::DEFAULT_RETRY_WINDOW,
            true,
        );
        let retry_base = duration(
            "retry_base",
            raw.retry_base,
            DestinationConfig::DEFAULT_RETRY_BASE,
            false,
        );
        let max_batch = match raw.max_batch {
            None => None,
            Some(n) if n >= 1 => Some(n as usize),
            Some(_) => {
                problems.push(&path.join("max_batch"), "must be at least 1");
                None
            }
        };
        out.push(DestinationConfig {
            name,
            kind,
            purpose,
            mode,
            credential: Secret::new(credential),
            list_id: raw.list_id,
            list_ids: raw.list_ids.unwrap_or_default(),
            url: raw.url,
            base_url: raw.base_url,
            fields,
            batch_window,
            reconcile_interval,
            resync_interval,
            retry_window,
            retry_base,
            max_batch,
        });
    }
    out
}
