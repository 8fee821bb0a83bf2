//! Syncs of golden profiles to email service providers.
//!
//! * [`connector`]: the contract between the engine and one ESP's API ([`Connector`]):
//!   what a destination receives ([`Contact`]), what it answers per record
//!   ([`ItemOutcome`]) and how a failed call is classed ([`ErrorClass`]).
//! * [`limit`]: the adaptive concurrency and rate limiter in front of each destination.
//! * [`http`]: [`Api`], the HTTP client every connector calls through (limiter, timeout,
//!   metrics, failure classes).
//! * [`connectors`]: Mailchimp, HubSpot, SendGrid and the signed webhook.

pub mod connector;
pub mod connectors;
pub mod http;
pub mod limit;

pub use connector::{
    CallError, Connector, Contact, DeleteTarget, DestinationKind, ErrorClass, ItemOutcome, Limits,
};
pub use http::Api;
pub use limit::Limiter;
