//! Identity resolution: turns the event log into one golden profile per person.
//!
//! * [`config`]: `[identity]` — identifier types in priority order, guard-rails, survivorship.
//! * [`extract`]: what an event says about a person (identifiers, trait observations).
//! * [`engine`]: the deterministic identity graph with guard-rails, provenance and unmerge,
//!   writing atomic batches to a [`trib_store::ProfileStore`].
//! * [`consumer`]: the real-time consumer of the event log that drives the engine, resuming
//!   from the offsets committed with the store's state.
//! * [`keys`]: the secret that derives profile ids and identifier index keys.

pub mod config;
pub mod consumer;
pub mod engine;
pub mod extract;
pub mod keys;
pub mod profile;
pub mod view;

pub use config::{IdentityConfig, IdentityRules, Survivorship};
pub use engine::{
    Engine, EngineError, EngineStats, ErasureReport, Exclusion, LogEvent, MatchReport, ReviewItem,
    TraitExpiryReport, UnmergeReport,
};
pub use keys::Keyer;
pub use profile::Profile;
