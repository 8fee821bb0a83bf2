//! The `Raw*` structs: the shape of `tributary.toml` as serde sees it, and step two of loading,
//! [`RawConfig::validate`].
//!
//! Every field is optional and loosely typed (integers are `i64`, enums are strings) so that
//! serde accepts anything of roughly the right shape and validation can report *all* problems
//! with precise messages, instead of serde stopping at the first one.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use trib_core::Secret;

use crate::config::{
    CONFIG_VERSION, Config, FieldRule, IngestConfig, LogConfig, LogStorage, RetentionConfig,
    ServerConfig, SourceConfig, SourceRules, StoreConfig, UnknownEvents,
};
use crate::error::Problem;
use crate::parse::SourceMap;
use crate::path::TomlPath;

/// The most partitions `log.partitions` accepts.
const MAX_PARTITIONS: i64 = 1024;
/// The longest source name.
const MAX_SOURCE_NAME_CHARS: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    version: Option<i64>,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    ingest: RawIngest,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    schemas: RawSchemas,
    sources: Option<Vec<RawSource>>,
    #[serde(default)]
    identity: trib_identity::IdentityConfig,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    privacy: RawPrivacy,
    #[serde(default)]
    retention: RawRetention,
    destinations: Option<Vec<crate::destinations::RawDestination>>,
    #[serde(default)]
    templates: RawTemplates,
    #[serde(default)]
    render: RawRender,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplates {
    dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRender {
    missing_default: Option<String>,
    seed_list: Option<RawSeedList>,
    smtp: Option<RawSmtp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeedList {
    to: Option<Vec<String>>,
    from: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: Option<String>,
    port: Option<i64>,
    security: Option<String>,
    username: Option<String>,
    password: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    interval: Option<String>,
    events: Option<BTreeMap<String, String>>,
    traits: Option<BTreeMap<String, String>>,
    classes: Option<BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrivacy {
    purposes: Option<Vec<RawPurpose>>,
    segment_categories: Option<BTreeMap<String, String>>,
    consent_event: Option<RawConsentEvent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPurpose {
    name: Option<String>,
    legal_basis: Option<String>,
    basis_note: Option<String>,
    fields: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsentEvent {
    name: Option<String>,
    purpose: Option<String>,
    status: Option<String>,
    proof: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    kind: Option<String>,
    url: Option<String>,
    schema: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchemas {
    dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    data_dir: Option<String>,
    admin_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngest {
    max_message_bytes: Option<i64>,
    max_request_bytes: Option<i64>,
    dedup_window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    storage: Option<String>,
    partitions: Option<i64>,
    fsync: Option<bool>,
    max_queued_records: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: Option<String>,
    write_key: Option<String>,
    unknown_events: Option<String>,
    allowed_fields: Option<Vec<String>>,
    default_region: Option<String>,
    #[serde(default)]
    normalize: BTreeMap<String, RawFieldRule>,
    import: Option<trib_sources::import::ImportMapping>,
    webhook: Option<trib_sources::webhook::WebhookConfig>,
}

/// A normalization rule: a rule name, or a table with the rule and what to do on failure.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawFieldRule {
    Rule(String),
    Full(RawFullFieldRule),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFullFieldRule {
    rule: String,
    on_error: Option<String>,
}

/// Collects problems, each with its path and line.
pub(crate) struct Problems<'a> {
    source_map: &'a SourceMap<'a>,
    problems: Vec<Problem>,
}

impl Problems<'_> {
    pub(crate) fn push(&mut self, path: &TomlPath, message: impl Into<String>) {
        self.problems.push(self.source_map.problem(path, message));
    }
}

impl RawConfig {
    /// Checks every rule and builds the domain [`Config`], or returns every problem found.
    pub(crate) fn validate(self, source_map: &SourceMap<'_>) -> Result<Config, Vec<Problem>> {
        let mut problems = Problems {
            source_map,
            problems: Vec::new(),
        };

        let version = TomlPath::key("version");
        match self.version {
            Some(CONFIG_VERSION) => {}
            None => problems.push(&version, format!("required, must be {CONFIG_VERSION}")),
            Some(other) => problems.push(
                &version,
                format!("unsupported version {other}, must be {CONFIG_VERSION}"),
            ),
        }

        let server = self.server.validate(&mut problems);
        let ingest = self.ingest.validate(&mut problems);
        let log = self.log.validate(&mut problems);
        let sources = validate_sources(self.sources, server.admin_key.as_ref(), &mut problems);
        let identity = match self.identity.rules() {
            Ok(rules) => Some(rules),
            Err(found) => {
                for (relative, message) in found {
                    let mut path = TomlPath::key("identity");
                    append_relative(&mut path, &relative);
                    problems.push(&path, message);
                }
                None
            }
        };
        let store = self.store.validate(&mut problems);
        let (privacy, purpose_fields) = self.privacy.validate(&mut problems);
        let render = self.render.validate(purpose_fields, &mut problems);
        let retention = self.retention.validate(&mut problems);
        let purpose_names: Vec<String> = privacy.purposes.iter().map(|p| p.name.clone()).collect();
        let destinations = crate::destinations::validate_destinations(
            self.destinations,
            &purpose_names,
            &mut problems,
        );

        if let (true, Some(identity)) = (problems.problems.is_empty(), identity) {
            Ok(Config {
                identity,
                store,
                privacy,
                retention,
                destinations,
                server,
                ingest,
                log,
                schemas_dir: PathBuf::from(
                    self.schemas.dir.unwrap_or_else(|| "schemas".to_owned()),
                ),
                templates_dir: PathBuf::from(
                    self.templates.dir.unwrap_or_else(|| "templates".to_owned()),
                ),
                render,
                sources,
            })
        } else {
            Err(problems.problems)
        }
    }
}

impl RawRetention {
    fn validate(self, problems: &mut Problems<'_>) -> RetentionConfig {
        use trib_core::EventType;
        use trib_core::retention::{EventRetention, TraitClass, TraitRetention};
        let table = TomlPath::key("retention");
        let mut config = RetentionConfig::default();
        if let Some(text) = self.interval {
            match parse_positive_days(&text) {
                Ok(interval) => config.interval = interval,
                Err(message) => problems.push(&table.join("interval"), message),
            }
        }

        let mut events = EventRetention::default();
        for (key, text) in self.events.unwrap_or_default() {
            let path = table.join("events").join(&key);
            let ttl = match parse_positive_days(&text) {
                Ok(ttl) => ttl,
                Err(message) => {
                    problems.push(&path, message);
                    continue;
                }
            };
            match key.as_str() {
                "" => problems.push(&path, "an event type or name must not be empty"),
                "default" => events.default = Some(ttl),
                "track" => problems.push(
                    &path,
                    "name the track event (\"Order Completed\") or use `default`",
                ),
                other => match other.parse::<EventType>() {
                    Ok(kind) => {
                        events.call_types.insert(kind, ttl);
                    }
                    Err(_) => {
                        events.track_events.insert(key, ttl);
                    }
                },
            }
        }
        config.events = events;

        let mut classes = TraitRetention::default_classes();
        let mut owner: BTreeMap<String, String> = BTreeMap::new();
        for (name, traits) in self.classes.unwrap_or_default() {
            let path = table.join("classes").join(&name);
            if name.is_empty() {
                problems.push(&path, "a class name must not be empty");
                continue;
            }
            for (index, trait_name) in traits.iter().enumerate() {
                if trait_name.is_empty() {
                    problems.push(&path.at(index), "a trait name must not be empty");
                } else if let Some(other) = owner.insert(trait_name.clone(), name.clone()) {
                    problems.push(
                        &path.at(index),
                        format!("trait {trait_name:?} is already in class {other:?}"),
                    );
                }
            }
            let class = TraitClass {
                name: name.clone(),
                traits,
                ttl: None,
            };
            match classes.iter_mut().find(|existing| existing.name == name) {
                Some(existing) => *existing = class,
                None => classes.push(class),
            }
        }
        // A default class keeps its traits only where no configured class claims them.
        for class in &mut classes {
            let name = class.name.clone();
            class
                .traits
                .retain(|t| owner.get(t).is_none_or(|owner| *owner == name));
        }
        for (name, text) in self.traits.unwrap_or_default() {
            let path = table.join("traits").join(&name);
            let ttl = match parse_positive_days(&text) {
                Ok(ttl) => ttl,
                Err(message) => {
                    problems.push(&path, message);
                    continue;
                }
            };
            match classes.iter_mut().find(|class| class.name == name) {
                Some(class) => class.ttl = Some(ttl),
                None => {
                    let known: Vec<&str> = classes.iter().map(|c| c.name.as_str()).collect();
                    problems.push(
                        &path,
                        format!(
                            "unknown class {name:?}: declare it in [retention.classes] \
                             (known: {})",
                            known.join(", ")
                        ),
                    );
                }
            }
        }
        config.traits = TraitRetention { classes };
        config
    }
}

impl RawPrivacy {
    fn validate(
        self,
        problems: &mut Problems<'_>,
    ) -> (trib_consent::PrivacyRules, BTreeMap<String, Vec<String>>) {
        use trib_consent::{LegalBasis, PrivacyRules, Purpose};
        let mut purpose_fields = BTreeMap::new();
        let table = TomlPath::key("privacy");
        let defaults = PrivacyRules::default();

        let purposes = match self.purposes {
            None => defaults.purposes,
            Some(raw_purposes) => {
                let list = table.join("purposes");
                if raw_purposes.is_empty() {
                    problems.push(&list, "at least one purpose is required");
                }
                let mut seen: HashMap<String, usize> = HashMap::new();
                let mut purposes = Vec::with_capacity(raw_purposes.len());
                for (index, raw) in raw_purposes.into_iter().enumerate() {
                    let path = list.at(index);
                    let name = match raw.name {
                        None => {
                            problems.push(&path.join("name"), "required");
                            String::new()
                        }
                        Some(name) => {
                            if let Some(message) = trib_consent::rules::purpose_name_problem(&name)
                            {
                                problems.push(&path.join("name"), message);
                            } else if let Some(first) = seen.get(&name) {
                                problems.push(
                                    &path.join("name"),
                                    format!("duplicate purpose {name:?} (also privacy.purposes[{first}])"),
                                );
                            } else {
                                seen.insert(name.clone(), index);
                            }
                            name
                        }
                    };
                    let legal_basis = match raw.legal_basis.as_deref() {
                        None => {
                            problems.push(
                                &path.join("legal_basis"),
                                "required: \"consent\", or another basis with a basis_note",
                            );
                            LegalBasis::Consent
                        }
                        Some(text) => text.parse().unwrap_or_else(
                            |error: trib_consent::rules::UnknownLegalBasis| {
                                problems.push(&path.join("legal_basis"), error.to_string());
                                LegalBasis::Consent
                            },
                        ),
                    };
                    let basis_note = raw.basis_note.filter(|note| !note.trim().is_empty());
                    if legal_basis != LegalBasis::Consent && basis_note.is_none() {
                        problems.push(
                            &path.join("basis_note"),
                            format!(
                                "required with legal_basis = \"{legal_basis}\": say where the basis is documented, since this purpose is permitted without consent"
                            ),
                        );
                    }
                    if let Some(fields) = raw.fields {
                        for (field_index, field) in fields.iter().enumerate() {
                            if field.trim().is_empty() || field.contains(char::is_whitespace) {
                                problems.push(
                                    &path.join("fields").at(field_index),
                                    "a trait name, an identifier type, `events` or `events.EVENT_KEY`",
                                );
                            }
                        }
                        purpose_fields.insert(name.clone(), fields);
                    }
                    purposes.push(Purpose {
                        name,
                        legal_basis,
                        basis_note,
                    });
                }
                purposes
            }
        };

        let mut segment_categories = BTreeMap::new();
        for (category, purpose) in self.segment_categories.unwrap_or_default() {
            let path = table.join("segment_categories").join(&category);
            if !purposes.iter().any(|declared| declared.name == purpose) {
                problems.push(
                    &path,
                    format!("{purpose:?} is not a declared purpose (privacy.purposes)"),
                );
            }
            segment_categories.insert(category, purpose);
        }

        let mut consent_event = defaults.consent_event;
        if let Some(raw) = self.consent_event {
            let event_table = table.join("consent_event");
            if let Some(name) = raw.name {
                if name.trim().is_empty() {
                    problems.push(&event_table.join("name"), "must not be empty");
                }
                consent_event.name = name;
            }
            for (key, given, target) in [
                ("purpose", raw.purpose, &mut consent_event.purpose_path),
                ("status", raw.status, &mut consent_event.status_path),
                ("proof", raw.proof, &mut consent_event.proof_path),
            ] {
                if let Some(path) = given {
                    if let Some(message) = field_path_problem(&path, false) {
                        problems.push(&event_table.join(key), message);
                    }
                    *target = path;
                }
            }
        }

        (
            PrivacyRules {
                purposes,
                segment_categories,
                consent_event,
            },
            purpose_fields,
        )
    }
}

impl RawStore {
    fn validate(self, problems: &mut Problems<'_>) -> StoreConfig {
        let table = TomlPath::key("store");
        match self.kind.as_deref() {
            None | Some("embedded") | Some("memory") => {
                for (key, given) in [
                    ("url", self.url.is_some()),
                    ("schema", self.schema.is_some()),
                ] {
                    if given {
                        problems.push(&table.join(key), "only used with kind = \"postgres\"");
                    }
                }
                if self.kind.as_deref() == Some("memory") {
                    StoreConfig::Memory
                } else {
                    StoreConfig::Embedded
                }
            }
            Some("postgres") => {
                let url = match self.url {
                    Some(url)
                        if url.starts_with("postgres://") || url.starts_with("postgresql://") =>
                    {
                        url
                    }
                    Some(_) => {
                        problems.push(
                            &table.join("url"),
                            "must be a postgres:// or postgresql:// URL",
                        );
                        String::new()
                    }
                    None => {
                        problems.push(&table.join("url"), "required with kind = \"postgres\"");
                        String::new()
                    }
                };
                let schema = self.schema.unwrap_or_else(|| "tributary".to_owned());
                let valid = !schema.is_empty()
                    && schema.len() <= 63
                    && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                    && schema
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !valid {
                    problems.push(
                        &table.join("schema"),
                        "use 1 to 63 of a-z, 0-9 and _, not starting with a digit",
                    );
                }
                StoreConfig::Postgres {
                    url: Secret::new(url),
                    schema,
                }
            }
            Some(other) => {
                problems.push(
                    &table.join("kind"),
                    format!(
                        "unknown store {other:?}; use \"embedded\", \"postgres\" or \"memory\""
                    ),
                );
                StoreConfig::Embedded
            }
        }
    }
}

impl RawServer {
    fn validate(self, problems: &mut Problems<'_>) -> ServerConfig {
        let table = TomlPath::key("server");
        let defaults = ServerConfig::default();

        let listen = match self.listen {
            None => defaults.listen,
            Some(listen) => listen.parse::<SocketAddr>().unwrap_or_else(|_| {
                problems.push(
                    &table.join("listen"),
                    format!(
                        "must be an IP address and port such as \"127.0.0.1:8080\", got {listen:?}"
                    ),
                );
                defaults.listen
            }),
        };

        let data_dir = match self.data_dir {
            None => defaults.data_dir,
            Some(data_dir) if data_dir.is_empty() => {
                problems.push(&table.join("data_dir"), "must not be empty");
                defaults.data_dir
            }
            Some(data_dir) => PathBuf::from(data_dir),
        };

        let admin_key = self.admin_key.map(|admin_key| {
            if let Some(message) = key_problem(&admin_key, KeyKind::Admin) {
                problems.push(&table.join("admin_key"), message);
            }
            Secret::new(admin_key)
        });

        ServerConfig {
            listen,
            data_dir,
            admin_key,
        }
    }
}

impl RawIngest {
    fn validate(self, problems: &mut Problems<'_>) -> IngestConfig {
        let table = TomlPath::key("ingest");
        let defaults = IngestConfig::default();

        let max_message_path = table.join("max_message_bytes");
        let max_message_bytes = positive(self.max_message_bytes, &max_message_path, problems)
            .unwrap_or(defaults.max_message_bytes);
        let max_request_bytes = positive(
            self.max_request_bytes,
            &table.join("max_request_bytes"),
            problems,
        )
        .unwrap_or(defaults.max_request_bytes);
        if max_message_bytes > max_request_bytes {
            problems.push(
                &max_message_path,
                format!(
                    "must not exceed ingest.max_request_bytes ({max_request_bytes}), \
                     got {max_message_bytes}"
                ),
            );
        }

        let dedup_window = match self.dedup_window {
            None => defaults.dedup_window,
            Some(text) => parse_positive_duration(&text).unwrap_or_else(|message| {
                problems.push(&table.join("dedup_window"), message);
                defaults.dedup_window
            }),
        };

        IngestConfig {
            max_message_bytes,
            max_request_bytes,
            dedup_window,
        }
    }
}

impl RawLog {
    fn validate(self, problems: &mut Problems<'_>) -> LogConfig {
        let table = TomlPath::key("log");
        let defaults = LogConfig::default();

        let storage = match self.storage.as_deref() {
            None => defaults.storage,
            Some("embedded") => LogStorage::Embedded,
            Some("memory") => LogStorage::Memory,
            Some(other) => {
                problems.push(
                    &table.join("storage"),
                    format!("must be \"embedded\" or \"memory\", got {other:?}"),
                );
                defaults.storage
            }
        };

        let partitions = match self.partitions {
            None => defaults.partitions,
            Some(partitions) => match u32::try_from(partitions) {
                Ok(valid) if (1..=MAX_PARTITIONS).contains(&partitions) => valid,
                _ => {
                    problems.push(
                        &table.join("partitions"),
                        format!("must be between 1 and {MAX_PARTITIONS}, got {partitions}"),
                    );
                    defaults.partitions
                }
            },
        };

        let max_queued_records = positive(
            self.max_queued_records,
            &table.join("max_queued_records"),
            problems,
        )
        .unwrap_or(defaults.max_queued_records);

        LogConfig {
            storage,
            partitions,
            fsync: self.fsync.unwrap_or(defaults.fsync),
            max_queued_records,
        }
    }
}

fn validate_sources(
    raw_sources: Option<Vec<RawSource>>,
    admin_key: Option<&Secret<String>>,
    problems: &mut Problems<'_>,
) -> Vec<SourceConfig> {
    let table = TomlPath::key("sources");
    let raw_sources = raw_sources.unwrap_or_default();
    if raw_sources.is_empty() {
        problems.push(&table, "at least one source is required");
    }

    // First index at which each name and key was seen, to point duplicates at the original.
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut write_keys: HashMap<String, usize> = HashMap::new();
    let mut sources = Vec::with_capacity(raw_sources.len());
    for (index, raw) in raw_sources.into_iter().enumerate() {
        let source_path = table.at(index);

        let name_path = source_path.join("name");
        let name = match raw.name {
            None => {
                problems.push(&name_path, "required");
                String::new()
            }
            Some(name) => {
                if let Some(message) = source_name_problem(&name) {
                    problems.push(&name_path, message);
                } else if let Some(first) = names.get(&name) {
                    problems.push(
                        &name_path,
                        format!("duplicate source name {name:?} (also sources[{first}])"),
                    );
                } else {
                    names.insert(name.clone(), index);
                }
                name
            }
        };

        let key_path = source_path.join("write_key");
        let write_key = match raw.write_key {
            None => {
                problems.push(&key_path, "required");
                String::new()
            }
            Some(write_key) => {
                if let Some(message) = key_problem(&write_key, KeyKind::Write) {
                    problems.push(&key_path, message);
                } else if let Some(first) = write_keys.get(&write_key) {
                    // Never print the key itself.
                    problems.push(
                        &key_path,
                        format!("duplicate write key (also sources[{first}])"),
                    );
                } else if admin_key.is_some_and(|admin_key| admin_key.expose() == &write_key) {
                    problems.push(&key_path, "must differ from server.admin_key");
                } else {
                    write_keys.insert(write_key.clone(), index);
                }
                write_key
            }
        };

        let rules = SourceRules {
            unknown_events: match raw.unknown_events.as_deref() {
                None | Some("accept") => UnknownEvents::Accept,
                Some("quarantine") => UnknownEvents::Quarantine,
                Some(other) => {
                    problems.push(
                        &source_path.join("unknown_events"),
                        format!("must be \"accept\" or \"quarantine\", got {other:?}"),
                    );
                    UnknownEvents::Accept
                }
            },
            allowed_fields: raw.allowed_fields.inspect(|patterns| {
                let fields_path = source_path.join("allowed_fields");
                for (position, pattern) in patterns.iter().enumerate() {
                    if let Some(message) = field_path_problem(pattern, true) {
                        problems.push(&fields_path.at(position), message);
                    }
                }
            }),
            default_region: raw.default_region.map(|region| {
                match trib_normalize::country(&region) {
                    Ok(code) => code.to_owned(),
                    Err(error) => {
                        problems.push(&source_path.join("default_region"), error.reason);
                        region
                    }
                }
            }),
            normalize: validate_field_rules(
                raw.normalize,
                &source_path.join("normalize"),
                problems,
            ),
        };
        for (section, section_problems) in [
            (
                "import",
                raw.import.as_ref().map(|import| import.validate()),
            ),
            (
                "webhook",
                raw.webhook.as_ref().map(|webhook| webhook.validate()),
            ),
        ] {
            for (relative, message) in section_problems.unwrap_or_default() {
                let mut path = source_path.join(section);
                append_relative(&mut path, &relative);
                problems.push(&path, message);
            }
        }
        sources.push(SourceConfig {
            name,
            write_key: Secret::new(write_key),
            rules,
            import: raw.import,
            webhook: raw.webhook,
        });
    }
    sources
}

fn validate_field_rules(
    raw: BTreeMap<String, RawFieldRule>,
    table: &TomlPath,
    problems: &mut Problems<'_>,
) -> Vec<FieldRule> {
    let mut rules = Vec::with_capacity(raw.len());
    for (field, raw_rule) in raw {
        let path = table.join(&field);
        if let Some(message) = field_path_problem(&field, false) {
            problems.push(&path, message);
            continue;
        }
        let (rule_name, on_error) = match raw_rule {
            RawFieldRule::Rule(rule) => (rule, None),
            RawFieldRule::Full(full) => (full.rule, full.on_error),
        };
        let rule = match trib_normalize::Rule::deserialize(serde::de::value::StrDeserializer::<
            serde::de::value::Error,
        >::new(&rule_name))
        {
            Ok(rule) => rule,
            Err(_) => {
                problems.push(
                    &path,
                    format!("unknown normalization rule {rule_name:?}; see trib_normalize::Rule"),
                );
                continue;
            }
        };
        let on_error = match on_error.as_deref() {
            None | Some("reject") => trib_normalize::OnError::Reject,
            Some("drop") => trib_normalize::OnError::Drop,
            Some(other) => {
                problems.push(
                    &path.join("on_error"),
                    format!("must be \"reject\" or \"drop\", got {other:?}"),
                );
                continue;
            }
        };
        rules.push(FieldRule {
            field,
            rule,
            on_error,
        });
    }
    rules
}

/// Appends a path reported by a section's own validation (`columns[2].target`,
/// `mappings[0].properties."unit price"`) to `path`.
fn append_relative(path: &mut TomlPath, relative: &str) {
    let mut chars = relative.chars().peekable();
    let mut key = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                for quoted in chars.by_ref() {
                    if quoted == '"' {
                        break;
                    }
                    key.push(quoted);
                }
            }
            '.' => {
                if !key.is_empty() {
                    path.push_key(&std::mem::take(&mut key));
                }
            }
            '[' => {
                if !key.is_empty() {
                    path.push_key(&std::mem::take(&mut key));
                }
                let digits: String = chars.by_ref().take_while(|c| *c != ']').collect();
                match digits.parse() {
                    Ok(index) => path.push_index(index),
                    Err(_) => path.push_key(&digits),
                }
            }
            other => key.push(other),
        }
    }
    if !key.is_empty() {
        path.push_key(&key);
    }
}

/// What is wrong with a field path such as `traits.email` (or, for patterns, `properties.*`).
fn field_path_problem(path: &str, allow_wildcard: bool) -> Option<String> {
    let segments: Vec<&str> = path.split('.').collect();
    if !matches!(segments[0], "properties" | "traits" | "context") {
        return Some(format!(
            "must start with \"properties.\", \"traits.\" or \"context.\", got {path:?}"
        ));
    }
    if segments.len() < 2 || segments.iter().any(|segment| segment.is_empty()) {
        return Some(format!(
            "must be a dotted path such as \"traits.email\", got {path:?}"
        ));
    }
    let last = segments.len() - 1;
    for (position, segment) in segments.iter().enumerate() {
        if segment.contains('*') && (!allow_wildcard || position != last || *segment != "*") {
            return Some(if allow_wildcard {
                format!("`*` may only be the whole last segment, got {path:?}")
            } else {
                format!("must name one field, without `*`, got {path:?}")
            });
        }
    }
    None
}

/// Which key is checked: they travel in different HTTP headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// A source's write key, the username of HTTP Basic auth, which cannot contain `:`.
    Write,
    /// The admin key, a bearer token.
    Admin,
}

/// What is wrong with a write key or admin key, if anything. Never mentions the value.
pub(crate) fn key_problem(key: &str, kind: KeyKind) -> Option<&'static str> {
    if key.is_empty() {
        Some("must not be empty")
    } else if kind == KeyKind::Write && key.contains(':') {
        Some("must not contain ':' (write keys are sent as the HTTP Basic username)")
    } else if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        // Both keys travel in an HTTP header, where these would be trimmed or rejected.
        Some("must not contain whitespace or control characters")
    } else {
        None
    }
}

/// What is wrong with a source name, if anything.
fn source_name_problem(name: &str) -> Option<String> {
    let n_chars = name.chars().count();
    if n_chars == 0 {
        Some("must not be empty".to_owned())
    } else if n_chars > MAX_SOURCE_NAME_CHARS {
        Some(format!(
            "must be at most {MAX_SOURCE_NAME_CHARS} characters, got {n_chars}"
        ))
    } else if !name.bytes().all(|byte| {
        byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_' || byte == b'-'
    }) {
        Some(format!(
            "must contain only a-z, 0-9, '_' and '-', got {name:?}"
        ))
    } else {
        None
    }
}

/// Validates an optional integer that must be greater than zero.
fn positive(value: Option<i64>, path: &TomlPath, problems: &mut Problems<'_>) -> Option<usize> {
    let value = value?;
    match usize::try_from(value) {
        Ok(valid) if valid > 0 => Some(valid),
        _ => {
            problems.push(path, format!("must be greater than 0, got {value}"));
            None
        }
    }
}

/// Parses a positive retention duration: as [`parse_positive_duration`], plus days and weeks
/// (`"30d"`, `"2w"`, `"P90D"`) counted as 24 hours and 7 days (months and years are refused:
/// their length varies).
pub(crate) fn parse_positive_days(text: &str) -> Result<Duration, String> {
    if let Ok(duration) = parse_positive_duration(text) {
        return Ok(duration);
    }
    let span: jiff::Span = text.parse().map_err(|_| {
        format!("must be a duration such as \"30d\", \"12h\" or \"90m\", got {text:?}")
    })?;
    let signed = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|_| format!("must use weeks, days or smaller units, got {text:?}"))?;
    match Duration::try_from(signed) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => Err(format!("must be positive, got {text:?}")),
    }
}

/// Parses a friendly (`"24h"`, `"1h 30m"`) or ISO 8601 (`"PT24H"`) duration that must be positive.
pub(crate) fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let signed: jiff::SignedDuration = text
        .parse()
        .map_err(|_| format!("must be a duration such as \"24h\" or \"90s\", got {text:?}"))?;
    match Duration::try_from(signed) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => Err(format!("must be positive, got {text:?}")),
    }
}

impl RawRender {
    fn validate(
        self,
        purpose_fields: BTreeMap<String, Vec<String>>,
        problems: &mut Problems<'_>,
    ) -> crate::config::RenderConfig {
        use crate::config::{MissingDefault, RenderConfig, SmtpConfig, SmtpSecurity};
        let table = TomlPath::key("render");
        let mut config = RenderConfig {
            purpose_fields,
            ..RenderConfig::default()
        };
        match self.missing_default.as_deref() {
            None | Some("error") => {}
            Some("warning") => config.missing_default = MissingDefault::Warning,
            Some(other) => problems.push(
                &table.join("missing_default"),
                format!("\"error\" or \"warning\", got {other:?}"),
            ),
        }
        if let Some(seeds) = self.seed_list {
            let path = table.join("seed_list");
            let to = seeds.to.unwrap_or_default();
            if to.is_empty() {
                problems.push(
                    &path.join("to"),
                    "at least one internal address is required",
                );
            }
            for (index, address) in to.iter().enumerate() {
                if !address.contains('@') || address.trim() != address {
                    problems.push(&path.join("to").at(index), "an email address");
                }
            }
            config.seed_list = to;
            match seeds.from {
                Some(from) if from.contains('@') => config.from = Some(from),
                Some(_) => problems.push(&path.join("from"), "an email address"),
                None => problems.push(
                    &path.join("from"),
                    "required: the From address of test sends",
                ),
            }
        }
        if let Some(raw) = self.smtp {
            let path = table.join("smtp");
            let security = match raw.security.as_deref() {
                None | Some("starttls") => SmtpSecurity::StartTls,
                Some("tls") => SmtpSecurity::Tls,
                Some("none") => SmtpSecurity::None,
                Some(other) => {
                    problems.push(
                        &path.join("security"),
                        format!("\"starttls\", \"tls\" or \"none\", got {other:?}"),
                    );
                    SmtpSecurity::StartTls
                }
            };
            let host = raw.host.unwrap_or_default();
            if host.trim().is_empty() {
                problems.push(&path.join("host"), "required");
            }
            let default_port = match security {
                SmtpSecurity::StartTls => 587,
                SmtpSecurity::Tls => 465,
                SmtpSecurity::None => 25,
            };
            let port = match raw.port {
                None => default_port,
                Some(port) => u16::try_from(port)
                    .ok()
                    .filter(|port| *port > 0)
                    .unwrap_or_else(|| {
                        problems.push(&path.join("port"), "between 1 and 65535");
                        default_port
                    }),
            };
            let timeout = match raw.timeout {
                None => Duration::from_secs(30),
                Some(text) => parse_positive_duration(&text).unwrap_or_else(|message| {
                    problems.push(&path.join("timeout"), message);
                    Duration::from_secs(30)
                }),
            };
            if raw.password.is_some() && raw.username.is_none() {
                problems.push(&path.join("username"), "required with a password");
            }
            config.smtp = Some(SmtpConfig {
                host,
                port,
                security,
                username: raw.username,
                password: raw.password.map(Secret::new),
                timeout,
            });
        }
        if config.smtp.is_some() && config.seed_list.is_empty() {
            problems.push(
                &table.join("seed_list"),
                "required with [render.smtp]: test sends go only to the seed list",
            );
        }
        config
    }
}
