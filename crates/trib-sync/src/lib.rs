//! Syncs of golden profiles to email service providers.
//!
//! * [`connector`]: the contract between the engine and one ESP's API ([`Connector`]):
//!   what a destination receives ([`Contact`]), what it answers per record
//!   ([`ItemOutcome`]) and how a failed call is classed ([`ErrorClass`]).

pub mod connector;

pub use connector::{
    CallError, Connector, Contact, DeleteTarget, DestinationKind, ErrorClass, ItemOutcome, Limits,
};
