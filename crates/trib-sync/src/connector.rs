//! The contract between the sync engine and one ESP's API.
//!
//! The engine decides *what* to send (the desired-state diff), *when* (micro-batches, rate
//! limits, retries) and records what each ESP confirmed. A [`Connector`] only speaks one
//! ESP's protocol: it pushes a batch, **confirms** it (reads it back, or polls the ESP's job)
//! and answers one [`ItemOutcome`] per record, in the order given. A call that the ESP
//! accepted but did not apply is [`ItemOutcome::NotApplied`], never `Confirmed`.
//!
//! Upserts arrive as [`Permitted<Contact>`]: the consent and suppression check ran for the
//! destination's purpose just before the batch was built, so a connector cannot send data
//! that was not permitted. Deletions (erasure, mirror mode) carry only the ESP-side key.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use trib_consent::Permitted;
use trib_core::Secret;

/// The ESP a destination talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationKind {
    Mailchimp,
    Hubspot,
    Sendgrid,
    Webhook,
}

impl DestinationKind {
    /// The config and metrics name (`mailchimp`, `hubspot`, `sendgrid`, `webhook`).
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Mailchimp => "mailchimp",
            DestinationKind::Hubspot => "hubspot",
            DestinationKind::Sendgrid => "sendgrid",
            DestinationKind::Webhook => "webhook",
        }
    }
}

impl fmt::Display for DestinationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One person as a destination receives it: the ESP's key (the email) and the mapped fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    /// The profile id the record stands for (never sent to the ESP; used in outcomes and
    /// the webhook payload's `profile_id`).
    pub profile_id: String,
    /// The email the ESP keys the contact by (lower-cased, normalized by identity).
    pub email: String,
    /// ESP field name (a Mailchimp merge tag, a HubSpot property, a SendGrid reserved field
    /// name or custom field id) to value. Only the fields to send: when the destination
    /// supports partial updates, the engine leaves out fields the ESP already confirmed.
    pub fields: BTreeMap<String, Value>,
    /// Every mapped field's value (what the ESP must hold after the push), for connectors
    /// whose API replaces a record rather than patching it, and for confirmation.
    pub desired: BTreeMap<String, Value>,
    /// Whether the person consented to the destination's purpose: Mailchimp's
    /// `status_if_new` (`subscribed` or `transactional`), and mirror mode's unsubscribe.
    pub subscribed: bool,
    /// The ESP's id for the contact, if an earlier push confirmed one.
    pub esp_id: Option<String>,
}

/// A record to delete at the ESP (erasure, or a profile that left the destination in mirror
/// mode): by the id the ESP confirmed earlier or, for an erasure of a person whose push had no
/// known outcome (the ESP may hold them under an id Tributary never saw), by email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTarget {
    /// The profile id the record stood for.
    pub profile_id: String,
    /// The ESP's id: Mailchimp's subscriber hash (MD5 of the lower-cased email), HubSpot's
    /// contact id, SendGrid's contact id, or the webhook's profile id. Empty: find the record
    /// by [`DeleteTarget::email`].
    pub esp_id: String,
    /// The email to find the record by when `esp_id` is empty (never logged).
    pub email: Option<Secret<String>>,
    /// An erasure (forget the person for good, e.g. Mailchimp's delete-permanent), rather
    /// than a mirror-mode removal that must not stop the person from being re-added later
    /// (Mailchimp: archive).
    pub permanent: bool,
}

/// What happened to one record of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemOutcome {
    /// The ESP holds the record as sent (read back or reported by a completed job), under
    /// this id (see [`DeleteTarget::esp_id`]). For a deletion: the ESP no longer has it
    /// (deleting a record the ESP never had is confirmed too).
    Confirmed { esp_id: String },
    /// The ESP accepted the call but the record is not (or not yet) as sent: retried.
    NotApplied { detail: String },
    /// The ESP refused this record.
    Failed { class: ErrorClass, detail: String },
}

/// How a failure is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// 429 or a documented concurrency/rate refusal: wait (Retry-After or backoff), slow the
    /// limiter, retry.
    Throttled,
    /// 5xx, timeouts, connection resets, a job still running past its deadline: retry with
    /// backoff.
    Transient,
    /// The ESP refuses this record's content (400 on one contact, a 207 error for it, a
    /// permanently deleted email): dead-lettered at once, never retried automatically.
    InvalidRecord,
    /// 401/403, unknown list or field: the destination's setup is wrong. Retried slowly
    /// (someone may fix the key) and dead-lettered when the retry window ends.
    Auth,
    /// Anything else that retrying cannot fix: dead-lettered.
    Fatal,
}

impl ErrorClass {
    /// The metrics label (`throttled`, `transient`, `invalid_record`, `auth`, `fatal`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Throttled => "throttled",
            ErrorClass::Transient => "transient",
            ErrorClass::InvalidRecord => "invalid_record",
            ErrorClass::Auth => "auth",
            ErrorClass::Fatal => "fatal",
        }
    }

    /// Whether the engine retries it (within the retry window).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorClass::Throttled | ErrorClass::Transient | ErrorClass::Auth
        )
    }
}

/// A whole call failed (no per-record answer).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{class:?} error{}: {detail}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
pub struct CallError {
    pub class: ErrorClass,
    /// The HTTP status, when there was a response.
    pub status: Option<u16>,
    /// When the ESP said to come back (`Retry-After`, or a rate-limit reset header).
    pub retry_after: Option<Duration>,
    /// What went wrong, without personal data (no emails or field values).
    pub detail: String,
}

/// An ESP's documented limits, the seeds of the engine's batching and rate limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most records per upsert call.
    pub max_batch: usize,
    /// Most records per delete call.
    pub max_delete_batch: usize,
    /// Most calls in flight at once (Mailchimp: 10 connections per key).
    pub max_concurrency: usize,
    /// Most calls per `rate_interval` (HubSpot: 100 per 10 s), `None` when the ESP documents
    /// none (then the engine learns from 429s and rate-limit headers).
    pub rate_max: Option<u32>,
    pub rate_interval: Duration,
    /// Whether an upsert may carry only the changed fields (the ESP keeps the others).
    pub partial_updates: bool,
}

/// One ESP's API.
#[async_trait::async_trait]
pub trait Connector: Send + Sync + 'static {
    fn kind(&self) -> DestinationKind;

    /// The documented limits (seeds; the engine adapts its limiter from responses).
    fn limits(&self) -> Limits;

    /// Upserts `batch` (at most [`Limits::max_batch`] records) and confirms it. `Ok` holds
    /// one outcome per record, in order; `Err` means no record can be counted as applied.
    async fn upsert(&self, batch: Vec<Permitted<Contact>>) -> Result<Vec<ItemOutcome>, CallError>;

    /// Deletes `targets` (at most [`Limits::max_delete_batch`]) permanently, as the ESP's
    /// erasure call does, and confirms it.
    async fn delete(&self, targets: Vec<DeleteTarget>) -> Result<Vec<ItemOutcome>, CallError>;
}
