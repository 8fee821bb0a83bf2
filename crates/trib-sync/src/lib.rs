//! Syncs of golden profiles to email service providers.
//!
//! * [`connector`]: the contract between the engine and one ESP's API ([`Connector`]):
//!   what a destination receives ([`Contact`]), what it answers per record
//!   ([`ItemOutcome`]) and how a failed call is classed ([`ErrorClass`]).
//! * [`map`]: profile → the fields a destination should hold, and their keyed digests.
//! * [`state`]: `<data_dir>/sync.db` — pending work, what each ESP confirmed, deletions and
//!   dead letters.
//! * [`engine`]: one worker per destination: feed → diff → permit → batch → push →
//!   confirm → record, with retries and dead letters.
//! * [`breaker`]: the circuit that stops a worker from preparing and sending while its ESP
//!   answers no call, and probes it with a small batch.
//! * [`limit`]: the adaptive concurrency and rate limiter in front of each destination.
//! * [`http`]: [`Api`], the HTTP client every connector calls through (limiter, timeout,
//!   metrics, failure classes).
//! * [`connectors`]: Mailchimp, HubSpot, SendGrid and the signed webhook.

pub mod breaker;
pub mod build;
pub mod connector;
pub mod connectors;
pub mod engine;
pub mod http;
pub mod limit;
pub mod map;
pub mod state;

pub use connector::{
    CallError, Connector, Contact, DeleteTarget, DestinationKind, ErrorClass, ItemOutcome, Limits,
};
pub use engine::{Destination, EngineOptions, SyncEngine};
pub use http::Api;
pub use limit::Limiter;
pub use state::{DeadLetter, EmailSealer, SyncState};
