//! The validated, domain-level configuration and how to load it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use trib_core::Secret;

use crate::error::ConfigError;
use crate::interpolate::EnvLookup;
use crate::parse::parse_raw;
use crate::raw::RawConfig;

/// The directory used for data when neither the file nor the command line names one.
pub const DEFAULT_DATA_DIR: &str = "tributary-data";

/// The only `version` this build understands.
pub const CONFIG_VERSION: i64 = 1;

/// A validated `tributary.toml`.
///
/// Built by [`Config::load`] or [`Config::from_toml_str`] from a file, or by
/// [`Config::default_for`] when there is no file. Every value has been checked; consumers do not
/// need to validate again.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`: where the HTTP API listens, where data lives, the admin key.
    pub server: ServerConfig,
    /// `[ingest]`: limits of the Segment-compatible ingestion API.
    pub ingest: IngestConfig,
    /// `[log]`: the event log that accepted events are appended to.
    pub log: LogConfig,
    /// `[schemas] dir`: the schema registry's directory. Default `schemas` beside the config
    /// file (a relative path is relative to the config file's directory); without a config
    /// file, `<data_dir>/schemas`.
    pub schemas_dir: PathBuf,
    /// `[templates] dir`: the directory of email templates (`NAME.toml`). Default `templates`
    /// beside the config file, like `[schemas] dir`; without a config file,
    /// `<data_dir>/templates`.
    pub templates_dir: PathBuf,
    /// `[render]` and the `fields` of `[[privacy.purposes]]`: the static check's policy, the
    /// seed list and SMTP server of test sends.
    pub render: RenderConfig,
    /// `[[sources]]`: who may send events, each with its own write key. Never empty.
    pub sources: Vec<SourceConfig>,
    /// `[identity]`: identifier types, guard-rails and survivorship rules (see
    /// [`trib_identity::config`]).
    pub identity: trib_identity::IdentityRules,
    /// `[store]`: where golden profiles live.
    pub store: StoreConfig,
    /// `[privacy]`: declared purposes and their legal basis, Segment consent categories, the
    /// consent event (see [`trib_consent::rules`]). Absent: `email_marketing`,
    /// `personalization` and `analytics`, each needing consent.
    pub privacy: trib_consent::PrivacyRules,
    /// `[retention]`: how long events and profile traits are kept. Absent: everything is kept
    /// forever.
    pub retention: RetentionConfig,
    /// `[[destinations]]`: the ESPs profiles are synced to (see [`crate::destinations`]).
    /// Absent: none.
    pub destinations: Vec<crate::destinations::DestinationConfig>,
}

/// The `[retention]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// `interval`: how often the background purge runs, a positive duration. Default `"1h"`.
    pub interval: Duration,
    /// `[retention.events]`: TTL per track event name, per call type (`page`, `screen`,
    /// `identify`, `group`, `alias`) and `default` for every other event. Absent: kept forever.
    pub events: trib_core::retention::EventRetention,
    /// `[retention.traits]` (TTL per class) over `[retention.classes]` (trait names per class;
    /// defaults `contact` and `name`). A trait in no class with a TTL is kept forever.
    pub traits: trib_core::retention::TraitRetention,
}

impl RetentionConfig {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60 * 60);

    /// Whether anything can expire (the purge has work to do).
    pub fn is_enabled(&self) -> bool {
        !self.events.is_empty() || !self.traits.is_empty()
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            interval: Self::DEFAULT_INTERVAL,
            events: trib_core::retention::EventRetention::default(),
            traits: trib_core::retention::TraitRetention {
                classes: trib_core::retention::TraitRetention::default_classes(),
            },
        }
    }
}

/// The `[render]` table, with the `fields` of each `[[privacy.purposes]]`.
#[derive(Debug, Clone, Default)]
pub struct RenderConfig {
    /// `missing_default`: whether an optional field printed without `default` fails the
    /// template check (`"error"`, the default) or is reported (`"warning"`).
    pub missing_default: MissingDefault,
    /// `fields` of `[[privacy.purposes]]`, by purpose: the traits, identifier types and events
    /// (`events`, `events.EVENT_KEY`) its templates may use. A purpose without `fields` allows
    /// every trait of the trait schema, the `email` identifier and every event.
    pub purpose_fields: std::collections::BTreeMap<String, Vec<String>>,
    /// `[render.seed_list] to`: the internal addresses test sends go to (never the person).
    pub seed_list: Vec<String>,
    /// `[render.seed_list] from`: the From address of test sends.
    pub from: Option<String>,
    /// `[render.smtp]`: the SMTP server of test sends.
    pub smtp: Option<SmtpConfig>,
}

/// `[render] missing_default`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MissingDefault {
    #[default]
    Error,
    Warning,
}

/// `[render.smtp]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    /// `host`: the server's name (checked against its TLS certificate).
    pub host: String,
    /// `port`: default 587 with STARTTLS, 465 with TLS, 25 without.
    pub port: u16,
    /// `security`: `"starttls"` (default, required), `"tls"` (implicit) or `"none"`.
    pub security: SmtpSecurity,
    /// `username` and `password`: AUTH credentials, if the server needs them.
    pub username: Option<String>,
    pub password: Option<Secret<String>>,
    /// `timeout`: per connection step, default `"30s"`.
    pub timeout: Duration,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    None,
    StartTls,
    Tls,
}

/// The `[store]` table: the profile store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoreConfig {
    /// `kind = "embedded"` (default): SQLite under `<data_dir>/profiles/`.
    #[default]
    Embedded,
    /// `kind = "postgres"`: PostgreSQL at `url` (`postgres://user@host:port/db`), tables in
    /// `schema` (default `tributary`).
    Postgres { url: Secret<String>, schema: String },
    /// `kind = "memory"`: nothing survives a restart (tests and benchmarks).
    Memory,
}

/// The `[server]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// `listen`: the IP address and port of the HTTP API, such as `"0.0.0.0:8080"`.
    /// Host names are not accepted. Default `"127.0.0.1:8080"`.
    pub listen: SocketAddr,
    /// `data_dir`: the directory for the event log and generated keys. A relative path is
    /// relative to the current directory of the process, not to the config file.
    /// Default `"tributary-data"`. The `--data-dir` command-line flag overrides it.
    pub data_dir: PathBuf,
    /// `admin_key`: the key that grants access to the admin endpoints, sent as a bearer token; it
    /// has the `admin` scope (every endpoint). Narrower keys with scopes live in
    /// `<data_dir>/api-keys.json` (`tributary keys`). Non-empty, without whitespace, different
    /// from every write key. When a config file is used and this key is absent, only keys
    /// created with `tributary keys` are accepted; no key is generated.
    /// Without a config file, it comes from `TRIBUTARY_ADMIN_KEY` or is generated (see
    /// [`Config::default_for`]).
    pub admin_key: Option<Secret<String>>,
}

/// The `[ingest]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestConfig {
    /// `max_message_bytes`: the largest single message accepted, measured on decompressed bytes.
    /// Default 32768 (32 KiB, Segment's limit). Must not exceed `max_request_bytes`.
    pub max_message_bytes: usize,
    /// `max_request_bytes`: the largest request body accepted, such as one batch.
    /// Default 512000 (500 KB, Segment's batch limit).
    pub max_request_bytes: usize,
    /// `dedup_window`: for how long a `messageId` is remembered so that a retried message is
    /// stored once. A duration such as `"24h"`, `"90s"` or `"1h 30m"`; must be positive.
    /// Default `"24h"`.
    pub dedup_window: Duration,
}

/// The `[log]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `storage`: `"embedded"` (default) keeps the log durably on disk under `data_dir`;
    /// `"memory"` keeps nothing across restarts and is meant for benchmarks and tests.
    pub storage: LogStorage,
    /// `partitions`: how many partitions the log is split into, 1 to 1024. Default 8.
    pub partitions: u32,
    /// `fsync`: whether appends are flushed to disk before they are acknowledged. `false` lets the
    /// operating system decide when data reaches disk, which is faster but can lose
    /// acknowledged events on a crash. Default `true`.
    pub fsync: bool,
    /// `max_queued_records`: how many records may wait to be written before ingestion applies
    /// backpressure. Must be greater than 0. Default 100000.
    pub max_queued_records: usize,
}

/// Where the event log keeps its records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum LogStorage {
    /// Durable, on disk under `server.data_dir`.
    #[default]
    Embedded,
    /// In memory only; everything is lost when the process stops.
    Memory,
}

/// One `[[sources]]` table: a sender of events and its write key.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// `name`: 1 to 64 characters from `a-z`, `0-9`, `_` and `-`, unique among sources.
    /// Used in metrics and stored with each event.
    pub name: String,
    /// `write_key`: the key the sender authenticates with, sent as the HTTP Basic username like
    /// Segment's. Non-empty, unique among sources, without `:` or whitespace.
    /// Use `"${VARIABLE}"` rather than writing the key into the file.
    pub write_key: Secret<String>,
    /// What happens to this source's events before storage: normalization, schema policy and
    /// data minimization.
    pub rules: SourceRules,
    /// `[sources.import]`: how rows of files imported for this source become events.
    pub import: Option<trib_sources::import::ImportMapping>,
    /// `[sources.webhook]`: how webhook deliveries to `/v1/webhooks/<name>` are verified and
    /// mapped to events.
    pub webhook: Option<trib_sources::webhook::WebhookConfig>,
}

/// Per-source rules applied to every event of the source, whatever path it came by.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceRules {
    /// `unknown_events`: what happens to a `track` event whose name has no schema in the
    /// registry, or an `identify` call when there is no trait schema: `"accept"` (default) or
    /// `"quarantine"`. Other call types are not validated against schemas.
    pub unknown_events: UnknownEvents,
    /// `allowed_fields`: the fields the source may bring, as dotted paths under `properties`,
    /// `traits` or `context`, where a last segment `*` allows everything below
    /// (`["properties.*", "traits.email", "context.page.*"]`). Other fields are removed before
    /// storage and counted in metrics. Absent: every field is kept.
    pub allowed_fields: Option<Vec<String>>,
    /// `default_region`: the ISO 3166-1 alpha-2 country for phone numbers written without a
    /// country code (`"US"`).
    pub default_region: Option<String>,
    /// `[sources.normalize]`: a normalization rule per field path, such as
    /// `"traits.email" = "email"` or `"traits.phone" = { rule = "phone", on_error = "drop" }`.
    pub normalize: Vec<FieldRule>,
}

/// What happens to events that have no schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownEvents {
    /// They are stored as they are.
    #[default]
    Accept,
    /// They go to the quarantine with the code `no_schema`.
    Quarantine,
}

/// One normalization rule of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRule {
    /// The dotted path of the field (`traits.email`).
    pub field: String,
    /// How the value is normalized.
    pub rule: trib_normalize::Rule,
    /// What happens when the value cannot be normalized: the event is quarantined (`reject`,
    /// default) or the field is removed (`drop`).
    pub on_error: trib_normalize::OnError,
}

impl SourceConfig {
    /// A source with a name, a write key and no rules.
    pub fn new(name: impl Into<String>, write_key: Secret<String>) -> SourceConfig {
        SourceConfig {
            name: name.into(),
            write_key,
            rules: SourceRules::default(),
            import: None,
            webhook: None,
        }
    }
}

impl Config {
    /// Parses and validates the text of a `tributary.toml`, substituting `${NAME}` with
    /// `env(NAME)`.
    ///
    /// Returns [`ConfigError::Invalid`] listing every problem found.
    pub fn from_toml_str(text: &str, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
        parse_and_validate(text, env).map_err(|problems| ConfigError::Invalid {
            file: None,
            problems,
        })
    }

    /// Reads, parses and validates a `tributary.toml`, substituting `${NAME}` from the process
    /// environment. Errors name the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, &process_env)
    }

    /// Like [`Config::load`], with `${NAME}` looked up by `env` instead of the process
    /// environment.
    pub fn load_with_env(path: &Path, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config =
            parse_and_validate(&text, env).map_err(|problems| ConfigError::Invalid {
                file: Some(path.to_owned()),
                problems,
            })?;
        if config.schemas_dir.is_relative()
            && let Some(parent) = path.parent()
        {
            config.schemas_dir = parent.join(&config.schemas_dir);
        }
        if config.templates_dir.is_relative()
            && let Some(parent) = path.parent()
        {
            config.templates_dir = parent.join(&config.templates_dir);
        }
        Ok(config)
    }

    /// Replaces `server.data_dir`, for the `--data-dir` command-line flag.
    #[must_use]
    pub fn with_data_dir(mut self, data_dir: impl Into<PathBuf>) -> Config {
        self.server.data_dir = data_dir.into();
        self
    }

    /// Replaces `server.listen`, for the `--listen` command-line flag.
    #[must_use]
    pub fn with_listen(mut self, listen: SocketAddr) -> Config {
        self.server.listen = listen;
        self
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            admin_key: None,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 32 * 1024,
            max_request_bytes: 500 * 1024,
            dedup_window: Duration::from_secs(24 * 60 * 60),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            storage: LogStorage::default(),
            partitions: 8,
            fsync: true,
            max_queued_records: 100_000,
        }
    }
}

impl LogStorage {
    /// The value used in the file: `"embedded"` or `"memory"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Memory => "memory",
        }
    }
}

impl std::fmt::Display for LogStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Looks a variable up in the process environment. A value that is not valid UTF-8 counts as
/// not set.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn parse_and_validate(text: &str, env: EnvLookup<'_>) -> Result<Config, Vec<crate::Problem>> {
    let (raw, source_map): (RawConfig, _) = parse_raw(text, Some(env))?;
    raw.validate(&source_map)
}
