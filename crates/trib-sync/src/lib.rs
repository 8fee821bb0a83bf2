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

pub mod connector;
pub mod engine;
pub mod map;
pub mod state;

pub use connector::{
    CallError, Connector, Contact, DeleteTarget, DestinationKind, ErrorClass, ItemOutcome, Limits,
};
pub use engine::{Destination, EngineOptions, SyncEngine};
pub use state::{DeadLetter, SyncState};
