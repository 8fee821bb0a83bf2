//! `tributary.toml`: reading, `${ENV}` interpolation and validation into [`Config`].
//!
//! This is the only crate that knows the configuration format. Loading happens in two steps:
//!
//! 1. **Parse.** The text is parsed into a spanned TOML tree. Every string value has `${NAME}`
//!    replaced by an environment variable (`$${` is a literal `${`); the environment is passed in
//!    as a lookup function, so tests never touch the process environment. The tree is then
//!    deserialized into private `Raw*` structs with `#[serde(deny_unknown_fields)]`, so a typo in
//!    a key is an error rather than a silently ignored setting.
//! 2. **Validate.** `RawConfig::validate` checks every rule, fills in defaults and builds the
//!    domain [`Config`]: socket addresses are parsed, durations are [`std::time::Duration`],
//!    keys are [`Secret`](trib_core::Secret)s.
//!
//! Every problem names its TOML path and, when known, its line: `line 12:
//! sources[1].write_key: must not be empty`. Validation reports all problems at once
//! ([`ConfigError::Invalid`]); an unknown key or a wrong type stops deserialization, so it is
//! reported alone.
//!
//! Without a config file, [`Config::default_for`] builds a working configuration with one source
//! named `default`, taking its keys from the environment or generating them once into
//! `<data_dir>/keys.toml`.
//!
//! The crate does no logging and starts nothing: what the configuration *means* is up to the
//! crates that receive a [`Config`].

mod config;
pub mod destinations;
mod error;
mod interpolate;
mod keys;
mod parse;
mod path;
mod raw;

pub use config::{
    CONFIG_VERSION, Config, DEFAULT_DATA_DIR, FieldRule, IngestConfig, LogConfig, LogStorage,
    MissingDefault, RenderConfig, RetentionConfig, ServerConfig, SmtpConfig, SmtpSecurity,
    SourceConfig, SourceRules, StoreConfig, UnknownEvents, process_env,
};
pub use destinations::{DestinationConfig, DestinationType, FieldSource, SyncMode};
pub use error::{ConfigError, Problem};
pub use interpolate::EnvLookup;
pub use keys::{ADMIN_KEY_ENV, DEFAULT_SOURCE_NAME, GeneratedKey, KEYS_FILE_NAME, WRITE_KEY_ENV};
#[cfg(test)]
mod tests;
