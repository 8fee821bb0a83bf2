use crate::Event;

/// Why a record was refused before storage: kept with the record in the quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// A stable snake_case code, e.g. `schema_violation`, `invalid_email`.
    pub code: String,
    /// The JSON path of the offending field (`properties.revenue`), when one field is to blame.
    pub field: Option<String>,
    /// A sentence saying what is wrong.
    pub reason: String,
    /// The schema the record was checked against (`Order Completed/1-0-2`), if any.
    pub schema: Option<String>,
}

/// The checks every record passes through before storage, whatever path it came by (HTTP API,
/// file import, webhook): per-source normalization, schema validation and data minimization.
///
/// Implementations change the event in place (normalized values, undeclared fields removed) and
/// either admit it or refuse it with the reason.
pub trait EventGate: Send + Sync {
    /// Normalizes, validates and minimizes `event`; `Err` means it goes to the quarantine.
    fn admit(&self, event: &mut Event) -> Result<(), Refusal>;
}

/// A gate that admits everything unchanged (tests, and sources with no rules).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenGate;

impl EventGate for OpenGate {
    fn admit(&self, _event: &mut Event) -> Result<(), Refusal> {
        Ok(())
    }
}
