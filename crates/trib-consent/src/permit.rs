//! [`Permitted<T>`]: a value that may leave Tributary for one purpose (and destination), and
//! [`Gatekeeper::permit`], the only way to make one.
//!
//! Destinations, rendering and exports to third parties accept only `Permitted<_>`, so the
//! consent and suppression check is something the compiler enforces rather than something
//! a caller has to remember. The check reads the ledger every time (no cache), so a
//! withdrawal recorded a moment ago already refuses the next permit.

use std::fmt;
use std::sync::Arc;

use trib_identity::Keyer;
use trib_identity::profile::IdentifierEntry;
use trib_store::IdentKey;

use crate::error::ConsentError;
use crate::ledger::{Ledger, Status, SuppressionScope, now_ms};
use crate::rules::{LegalBasis, PrivacyRules};

/// A value the privacy layer checked for one purpose (and destination): the person's consent
/// (or the purpose's documented legal basis) and the suppression lists allowed it.
///
/// Its fields are private and it has no public constructor, so code outside this crate
/// cannot build one; it is not `Clone`, so a permit is used once rather than kept around
/// past a withdrawal.
///
/// ```compile_fail
/// // Outside trib-consent, a permit cannot be built by hand:
/// let forged = trib_consent::Permitted {
///     value: "ann@example.com",
///     purpose: "email_marketing".to_owned(),
///     destination: None,
///     checked_at_ms: 0,
/// };
/// ```
#[derive(Debug)]
#[must_use = "a permit exists to be handed to a destination or renderer"]
pub struct Permitted<T> {
    value: T,
    purpose: String,
    destination: Option<String>,
    checked_at_ms: i64,
}

/// Why [`Gatekeeper::permit`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", DeniedDisplay(self))]
pub struct Denied {
    /// The purpose asked for.
    pub purpose: String,
    /// The destination asked for, if any.
    pub destination: Option<String>,
    pub reason: DenyReason,
}

/// The reason of a [`Denied`], with a stable snake_case name ([`DenyReason::code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// No consent is recorded and the purpose needs consent (unknown means no).
    NoConsent,
    /// The latest entry is a denial.
    Denied,
    /// The latest entry withdraws an earlier grant.
    Withdrawn,
    /// An identifier of the person is on the global suppression list.
    SuppressedGlobal,
    /// An identifier of the person is suppressed for this destination.
    SuppressedDestination,
    /// The purpose is not declared in `[privacy]`.
    UnknownPurpose,
    /// The ledger could not be read: refused rather than guessed (fail closed).
    LedgerUnavailable,
}

/// Checks consent and suppression, and makes [`Permitted`] values.
#[derive(Clone)]
pub struct Gatekeeper {
    ledger: Arc<Ledger>,
    keyer: Keyer,
    rules: Arc<PrivacyRules>,
}

impl fmt::Debug for Gatekeeper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gatekeeper")
            .field("ledger", &self.ledger)
            .finish_non_exhaustive()
    }
}

impl Gatekeeper {
    /// A gatekeeper over a ledger; `keyer` must be the deployment's identity key, so that
    /// identifier keys match the ones the ledger was written with.
    pub fn new(ledger: Arc<Ledger>, keyer: Keyer, rules: Arc<PrivacyRules>) -> Self {
        Self {
            ledger,
            keyer,
            rules,
        }
    }

    /// The ledger the checks read (for consumers that follow consent changes).
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// Permits `value` for `purpose` (and `destination`, when it goes to one) on behalf of the
    /// person with these identifiers (pass all of the profile's identifiers: the latest
    /// consent over all of them counts, and a suppression of any of them refuses).
    ///
    /// Refuses when an identifier is suppressed globally or for the destination, when the
    /// purpose is not declared, and, for a purpose whose legal basis is consent, unless the
    /// latest consent entry grants it. A purpose with another (documented) legal basis needs
    /// no consent but still honours suppression.
    pub fn permit<T>(
        &self,
        profile_identifiers: &[IdentifierEntry],
        purpose: &str,
        destination: Option<&str>,
        value: T,
    ) -> Result<Permitted<T>, Denied> {
        let keys: Vec<IdentKey> = profile_identifiers
            .iter()
            .map(|identifier| self.keyer.ident_key(&identifier.kind, &identifier.value))
            .collect();
        let deny = |reason: DenyReason| Denied {
            purpose: purpose.to_owned(),
            destination: destination.map(str::to_owned),
            reason,
        };
        let unavailable = |error: ConsentError| {
            tracing::warn!(%error, purpose, "consent check failed; refusing");
            deny(DenyReason::LedgerUnavailable)
        };
        let Some(declared) = self.rules.purpose(purpose) else {
            return Err(deny(DenyReason::UnknownPurpose));
        };
        let needs_consent = declared.legal_basis == LegalBasis::Consent;
        let (suppression, latest) = self
            .ledger
            .standing(&keys, destination, needs_consent.then_some(purpose))
            .map_err(unavailable)?;
        if let Some(suppression) = suppression {
            return Err(deny(match suppression.scope {
                SuppressionScope::Global => DenyReason::SuppressedGlobal,
                SuppressionScope::Destination(_) => DenyReason::SuppressedDestination,
            }));
        }
        if needs_consent {
            match latest.map(|entry| entry.status) {
                Some(Status::Granted) => {}
                Some(Status::Denied) => return Err(deny(DenyReason::Denied)),
                Some(Status::Withdrawn) => return Err(deny(DenyReason::Withdrawn)),
                None => return Err(deny(DenyReason::NoConsent)),
            }
        }
        metrics::counter!("tributary_consent_permits_total", "purpose" => purpose.to_owned())
            .increment(1);
        Ok(Permitted {
            value,
            purpose: purpose.to_owned(),
            destination: destination.map(str::to_owned),
            checked_at_ms: now_ms(),
        })
    }
}

impl<T> Permitted<T> {
    /// The permitted value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The value, for the destination or renderer that was handed the permit.
    pub fn into_inner(self) -> T {
        self.value
    }

    /// The purpose it was permitted for.
    pub fn purpose(&self) -> &str {
        &self.purpose
    }

    /// The destination it was permitted for, if it was checked for one.
    pub fn destination(&self) -> Option<&str> {
        self.destination.as_deref()
    }

    /// When the check ran, ms since the Unix epoch.
    pub fn checked_at_ms(&self) -> i64 {
        self.checked_at_ms
    }
}

impl DenyReason {
    /// The stable snake_case name (`no_consent`, `suppressed_global`, ...).
    pub fn code(self) -> &'static str {
        match self {
            DenyReason::NoConsent => "no_consent",
            DenyReason::Denied => "denied",
            DenyReason::Withdrawn => "withdrawn",
            DenyReason::SuppressedGlobal => "suppressed_global",
            DenyReason::SuppressedDestination => "suppressed_destination",
            DenyReason::UnknownPurpose => "unknown_purpose",
            DenyReason::LedgerUnavailable => "ledger_unavailable",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

struct DeniedDisplay<'a>(&'a Denied);

impl fmt::Display for DeniedDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let denied = self.0;
        write!(f, "purpose `{}`", denied.purpose)?;
        if let Some(destination) = &denied.destination {
            write!(f, " for destination `{destination}`")?;
        }
        write!(f, " not permitted: {}", denied.reason)
    }
}
