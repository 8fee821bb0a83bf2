//! Consent and suppression: the privacy layer that every piece of data passes before it
//! leaves Tributary.
//!
//! * [`rules`]: `[privacy]` — declared purposes with their legal basis, Segment consent
//!   categories, the consent event (parsed by `trib-config`).
//! * [`ledger`]: `<data_dir>/consent.db`, the append-only consent history per identifier key
//!   and purpose, the global and per-destination suppression lists, and the consumer offsets.
//! * [`consumer`]: records consent from the event log (Segment's
//!   `context.consent.categoryPreferences` and the configured consent event), exactly once.
//! * [`permit`]: [`Permitted<T>`], made only by [`Gatekeeper::permit`] after checking the
//!   ledger and the suppression lists live. Destinations and rendering accept only
//!   `Permitted<_>`, so no other code path can send data out.
//!
//! Unknown consent means no, unless the purpose declares another documented legal basis.
//! The crate stores no clear identifier (only HMAC identifier keys) and logs no personal data.
//! It does not decide *what* is sent, nor erase data (erasure is a separate feature).

pub mod consumer;
mod error;
pub mod ledger;
pub mod permit;
pub mod rules;

pub use consumer::{ConsentConsumer, ConsentReader, ConsumerOptions};
pub use error::ConsentError;
pub use ledger::{Entry, Ledger, NewEntry, Proof, Status, Suppression, SuppressionScope};
pub use permit::{Denied, DenyReason, Gatekeeper, Permitted};
pub use rules::{ConsentEventRule, LegalBasis, PrivacyRules, Purpose};
