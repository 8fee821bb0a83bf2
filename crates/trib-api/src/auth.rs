//! Authentication: sources by write key, every other endpoint (but health checks) by an API key
//! with the endpoint's scope ([`crate::keys`]).
//!
//! Segment's libraries send the write key as the HTTP Basic user name with an empty password
//! (`base64("KEY:")`); some omit the colon; the browser library puts `writeKey` in the JSON body
//! instead. All three are accepted.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use trib_config::SourceConfig;

use crate::ApiError;
use crate::keys::{ApiKeys, Principal, Scope};

/// The configured sources, looked up by write key.
pub(crate) struct SourceKeys {
    by_key: HashMap<String, Arc<str>>,
}

impl SourceKeys {
    pub(crate) fn new(sources: &[SourceConfig]) -> Self {
        let by_key = sources
            .iter()
            .map(|source| {
                (
                    source.write_key.expose().clone(),
                    Arc::from(source.name.as_str()),
                )
            })
            .collect();
        Self { by_key }
    }

    /// Returns the source name for a request, from its Basic credentials or, failing that, the
    /// write key in its body.
    pub(crate) fn authenticate(
        &self,
        basic_user: Option<&str>,
        body_write_key: Option<&str>,
    ) -> Result<Arc<str>, ApiError> {
        let (key, origin) = match (basic_user, body_write_key) {
            (Some(user), _) => (user, "the HTTP Basic user name"),
            (None, Some(key)) => (key, "`writeKey` in the body"),
            (None, None) => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing_write_key",
                    "no write key: send it as the HTTP Basic user name with an empty password, or as `writeKey` in the body",
                ));
            }
        };
        self.by_key.get(key).cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_write_key",
                format!("the write key in {origin} does not belong to any configured source"),
            )
        })
    }
}

/// Returns the user name of an `Authorization: Basic` header, `None` when there is no
/// `Authorization` header, and an error when the header is present but unreadable.
pub(crate) fn basic_user(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = |why: &str| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "malformed_authorization",
            format!("the Authorization header is not valid HTTP Basic credentials: {why}"),
        )
    };
    let value = value.to_str().map_err(|_| malformed("not ASCII"))?;
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return Err(malformed("expected `Basic <base64>`"));
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(malformed("expected the Basic scheme"));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| malformed("not base64"))?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed("not UTF-8"))?;
    let user = match decoded.split_once(':') {
        Some((user, _password)) => user.to_owned(),
        None => decoded,
    };
    Ok(Some(user))
}

/// Checks that a request carries an API key granting `scope`: a key from the key file
/// (`tk_<id>_<secret>`) or the configured admin key (which has the `admin` scope), sent as
/// `Authorization: Bearer KEY` or as the HTTP Basic user name.
///
/// Answers 401 `missing_api_key` without a key, 401 `invalid_api_key` for an unknown, wrong or
/// revoked key, and 403 `insufficient_scope` (naming the scope) for a key without `scope`.
/// Returns who the key belongs to.
pub(crate) fn require(
    keys: &ApiKeys,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<Principal, ApiError> {
    let Some(presented) = presented_key(headers)? else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
            format!(
                "this endpoint needs an API key with the `{scope}` scope as `Authorization: Bearer KEY`"
            ),
        ));
    };
    let (principal, scopes) = keys.authenticate(&presented).map_err(|_| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "the API key is not valid (unknown, wrong or revoked)",
        )
    })?;
    if scope.granted_by(&scopes) {
        Ok(principal)
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("the API key lacks the `{scope}` scope this endpoint needs"),
        ))
    }
}

/// The API key presented in `Authorization` (Bearer, or the Basic user name), if any.
fn presented_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let presented = match headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
    {
        Some(value) if value.len() > 7 && value[..7].eq_ignore_ascii_case("bearer ") => {
            Some(value[7..].trim().to_owned())
        }
        Some(_) => basic_user(headers)?,
        None => None,
    };
    Ok(presented.filter(|key| !key.is_empty()))
}

/// The id of the API key that authenticated a request, for provenance (`api:<key id>`): the
/// id part of `tk_<id>_<secret>`, or `admin` for the configured admin key. Never the secret.
/// Call it only on routes whose scope layer already accepted the key.
pub(crate) fn caller_key_id(headers: &HeaderMap) -> String {
    match presented_key(headers) {
        Ok(Some(key)) => key
            .strip_prefix("tk_")
            .and_then(|rest| rest.split_once('_'))
            .map_or_else(|| "admin".to_owned(), |(id, _)| id.to_owned()),
        _ => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use trib_core::Secret;

    use super::*;

    fn headers_with(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(authorization).unwrap(),
        );
        headers
    }

    fn basic(credentials: &str) -> HeaderMap {
        headers_with(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        ))
    }

    #[test]
    fn basic_user_reads_the_key_with_or_without_the_colon() {
        assert_eq!(
            basic_user(&basic("wk_1:")).unwrap().as_deref(),
            Some("wk_1")
        );
        assert_eq!(basic_user(&basic("wk_1")).unwrap().as_deref(), Some("wk_1"));
        assert_eq!(basic_user(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn basic_user_rejects_other_schemes_and_garbage() {
        assert_eq!(
            basic_user(&headers_with("Token abc")).unwrap_err().code(),
            "malformed_authorization"
        );
        assert_eq!(
            basic_user(&headers_with("Basic !!!")).unwrap_err().code(),
            "malformed_authorization"
        );
    }

    #[test]
    fn api_keys_are_checked_with_their_scope() {
        let keys = ApiKeys::load(Some(Secret::new("ak_1".to_owned())), None).unwrap();
        assert_eq!(
            require(&keys, &headers_with("Bearer ak_1"), Scope::ProfilesRead).unwrap(),
            Principal::Admin
        );
        assert!(require(&keys, &basic("ak_1:"), Scope::MetricsRead).is_ok());
        assert_eq!(
            require(&keys, &headers_with("Bearer nope"), Scope::EventsRead)
                .unwrap_err()
                .code(),
            "invalid_api_key"
        );
        assert_eq!(
            require(&keys, &HeaderMap::new(), Scope::EventsRead)
                .unwrap_err()
                .code(),
            "missing_api_key"
        );
    }
}
