//! The schema registry: versioned JSON Schema documents for track events and profile traits,
//! compatibility rules for publishing new versions, and fast validation.
//!
//! # What it holds
//!
//! A schema describes one [`Subject`]: the `properties` of track events with one `event`
//! name (`Subject::Event("Order Completed")`), or the `traits` of identify calls
//! (`Subject::Traits`). Every subject has versions numbered with [`SchemaVer`]
//! (`MODEL-REVISION-ADDITION`, as in Snowplow's Iglu).
//!
//! On disk (the config directory's `schemas/`, see [`Registry::load`]):
//!
//! ```text
//! schemas/
//!   events/order-completed/1-0-0.json   // slug of "Order Completed", see `slug`
//!   events/order-completed/1-0-1.json
//!   traits/1-0-0.json
//! ```
//!
//! Each file is a JSON Schema 2020-12 document for the `properties` (or `traits`) object,
//! carrying `"$schema": "https://json-schema.org/draft/2020-12/schema"` and an Iglu-like
//! `self` object with the exact name and version:
//! `"self": {"kind": "event", "name": "Order Completed", "version": "1-0-1"}` (`{"kind":
//! "traits", "version": "1-0-0"}` for traits). Validators ignore the unknown keyword `self`; the
//! registry refuses a file whose `self` disagrees with its place. The name inside the file is
//! the authority; the directory slug only has to be filesystem-safe.
//!
//! # Publishing rules
//!
//! [`Registry::check_publish`] and [`Registry::publish`]:
//!
//! 1. A subject's first version is `1-0-0`.
//! 2. Every later version is exactly one step after the latest: ADDITION + 1, REVISION + 1
//!    (addition reset), or MODEL + 1 (both reset).
//! 3. Versions are immutable: republishing an existing version with identical content is a
//!    no-op ([`Change::Unchanged`]), with different content an error.
//! 4. An ADDITION must accept every value the previous version accepted
//!    ([`is_backward_compatible`]); otherwise [`PublishError::Incompatible`] lists the reasons and
//!    says a new MODEL is required.
//! 5. A REVISION must be backward compatible too. Iglu lets a REVISION break some historical
//!    data; the product spec says "a change that breaks old data requires a new MODEL and says
//!    why", so here a REVISION only marks a significant but compatible change.
//! 6. A MODEL may break compatibility; the plan's `breaking` lists what breaks (the "why").
//!    A REVISION or MODEL that turns out compatible is accepted with a warning that an
//!    ADDITION would have been enough.
//!
//! The compatibility checker is conservative: when it cannot prove a change safe (a changed
//! `oneOf`, a rewritten `pattern`, a remote `$ref`) it reports it, with a reason saying it
//! cannot prove it, and the publisher bumps the MODEL. See [`compat`] for the keyword rules
//! and limits. [`check_dir`] re-checks a whole directory, catching hand edits that bypassed
//! publishing.
//!
//! # Validation
//!
//! [`Registry::validate`] (or [`Registry::validate_event`] with a `&str` name) checks a value
//! against the subject's latest version. Schemas are compiled once, at load or publish, with
//! draft 2020-12, `format` asserted (`email`, `date-time`...) and unknown formats refused.
//! A value is first run through the allocation-free `is_valid`; errors are collected only
//! when it fails. The result names the version used (`Order Completed/1-0-2`) and every error
//! with a path relative to the event (`properties.products[0].price`). Payload values are
//! masked in messages. A subject without a schema gives [`Validation::NoSchema`]: the caller
//! applies the source's policy (accept or quarantine).
//!
//! # What it does not do
//!
//! No remote `$ref` fetching (the `jsonschema` crate is built without its HTTP and file
//! resolvers), no HTTP or CLI (the API and the `tributary schemas` commands wrap this), no
//! I/O on the validation path, and no locking between processes beyond the no-clobber file
//! creation: run one publisher at a time per directory.

pub mod compat;
mod datapath;
mod document;
mod error;
mod registry;
mod subject;
mod validation;
mod version;

pub use compat::{Incompatibility, is_backward_compatible};
pub use document::{JSON_SCHEMA_2020_12, MAX_DOCUMENT_BYTES, SelfDescriptor};
pub use error::{PublishError, SchemaError};
pub use registry::{Change, CheckProblem, PublishPlan, Registry, Schema, SchemaInfo, check_dir};
pub use subject::{MAX_EVENT_NAME_CHARS, SchemaId, Subject, SubjectKind, slug};
pub use validation::{FieldError, MAX_ERRORS, Validation};
pub use version::{Bump, SchemaVer};
