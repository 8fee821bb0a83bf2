//! Recording access to personal data in the audit log ([`trib_audit`]).
//!
//! Routes whose table entry carries an [`Audited`] policy pass, after authentication, through
//! [`record`]: it runs the handler, then appends one entry (the key's id, the route template,
//! the purpose, the profile concerned and the response status) and sends the response only once
//! the entry is durable. When the entry cannot be written the response is replaced by a 503
//! `audit_unavailable`, so no data leaves without a record. A write route's change has happened
//! by then: the client sees a 503 and the log a missing entry only if the log itself failed.
//!
//! Only authenticated and authorized requests are recorded; refusals (401, 403) release no
//! data, and recording them would let anyone fill the log.

use axum::extract::{FromRequestParts, RawPathParams, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use trib_audit::{Action, Actor, AuditLog, AuditRecord, Outcome, ProfileRef, Purpose, Resource};
use trib_store::ProfileId;

use crate::ApiError;
use crate::keys::Principal;

/// The request header naming why data is accessed (`support`, `gdpr-request`, ...).
pub const PURPOSE_HEADER: &str = "x-tributary-purpose";

/// How a route is recorded in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audited {
    /// Read or write.
    pub action: Action,
    /// The purpose when the request names none in `X-Tributary-Purpose`.
    pub default_purpose: Purpose,
}

/// Runs the handler and records the access; see the module docs.
pub(crate) async fn record(
    log: &AuditLog,
    policy: &Audited,
    route: &'static str,
    principal: Principal,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let purpose = purpose_of(request.headers(), &policy.default_purpose)?;
    let actor = match &principal {
        Principal::Admin => Actor::Admin,
        Principal::Key(id) => Actor::api_key(id).map_err(|error| unavailable(route, &error))?,
    };
    let (mut parts, body) = request.into_parts();
    // The profile named in the path; a handler that resolves another one (a lookup by
    // identifier, a merged id) names it in a response extension, which takes precedence.
    let path_subject = if route.starts_with("/v1/profiles/{id}") {
        RawPathParams::from_request_parts(&mut parts, &())
            .await
            .ok()
            .and_then(|params| {
                params
                    .iter()
                    .find(|(name, _)| *name == "id")
                    .and_then(|(_, value)| value.parse::<ProfileId>().ok())
            })
            .map(ProfileRef::profile)
    } else {
        None
    };
    let mut request = Request::from_parts(parts, body);
    request.extensions_mut().insert(principal);
    let response = next.run(request).await;
    let subject = response
        .extensions()
        .get::<ProfileRef>()
        .cloned()
        .or(path_subject);
    let entry = AuditRecord {
        actor,
        action: policy.action,
        purpose,
        resource: Resource::new(route),
        subject,
        outcome: Outcome::Status(response.status().as_u16()),
    };
    match log.append(vec![entry]).await {
        Ok(_) => Ok(response),
        Err(error) => Err(unavailable(route, &error)),
    }
}

fn purpose_of(headers: &HeaderMap, default: &Purpose) -> Result<Purpose, ApiError> {
    let Some(value) = headers.get(PURPOSE_HEADER) else {
        return Ok(default.clone());
    };
    value
        .to_str()
        .ok()
        .and_then(|text| Purpose::new(text.trim()).ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_purpose",
                "X-Tributary-Purpose must be 1 to 40 characters among a-z 0-9 _ - (a word such as `support`, not free text)",
            )
        })
}

fn unavailable(route: &'static str, error: &trib_audit::AuditError) -> ApiError {
    tracing::error!(route, %error, "cannot record an access in the audit log; the response is withheld");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "audit_unavailable",
        "the access could not be recorded in the audit log, so no data is released; retry later",
    )
}
