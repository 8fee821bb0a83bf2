//! Sources other than the Segment-compatible API: file imports and signed webhooks.
//!
//! Each source turns what it receives into canonical [`trib_core::Event`]s and passes every one
//! through the same [`trib_core::EventGate`] (normalization, schema validation, minimization)
//! before it reaches the event log; what the gate refuses goes to the quarantine.

pub mod import;
pub mod webhook;
