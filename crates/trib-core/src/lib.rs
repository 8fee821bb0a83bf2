//! Domain types shared by every Tributary crate.
//!
//! This crate holds plain data: the canonical [`Event`] that the ingestion API produces and the
//! event log stores, the [`EventType`] of a Segment-style call, and [`Secret`] for values that
//! must never be printed. It depends on no other `trib-*` crate and does no I/O.

mod event;
mod secret;

pub use event::{Event, EventType, JsonMap, json_kind};
pub use secret::Secret;

mod gate;
mod quarantine;

pub use gate::{EventGate, OpenGate, Refusal};
pub use quarantine::QuarantinedMessage;

pub mod retention;
