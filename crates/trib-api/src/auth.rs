//! Authentication: sources by write key, admin calls by the admin key.
//!
//! Segment's libraries send the write key as the HTTP Basic user name with an empty password
//! (`base64("KEY:")`); some omit the colon; the browser library puts `writeKey` in the JSON body
//! instead. All three are accepted.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use trib_config::SourceConfig;
use trib_core::Secret;

use crate::ApiError;

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

/// Checks the admin key, sent as `Authorization: Bearer KEY` or as the Basic user name.
pub(crate) fn require_admin(
    headers: &HeaderMap,
    admin_key: Option<&Secret<String>>,
) -> Result<(), ApiError> {
    let Some(admin_key) = admin_key else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "admin endpoints are disabled: set server.admin_key in the configuration",
        ));
    };
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
    match presented {
        Some(key) if constant_time_eq(key.as_bytes(), admin_key.expose().as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_admin_key",
            "the admin key is not valid",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_admin_key",
            "admin endpoints need the admin key as `Authorization: Bearer KEY`",
        )),
    }
}

fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter()
        .zip(right)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

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
    fn admin_key_is_checked() {
        let key = Secret::new("ak_1".to_owned());
        assert!(require_admin(&headers_with("Bearer ak_1"), Some(&key)).is_ok());
        assert!(require_admin(&basic("ak_1:"), Some(&key)).is_ok());
        assert_eq!(
            require_admin(&headers_with("Bearer nope"), Some(&key))
                .unwrap_err()
                .code(),
            "invalid_admin_key"
        );
        assert_eq!(
            require_admin(&HeaderMap::new(), Some(&key))
                .unwrap_err()
                .code(),
            "missing_admin_key"
        );
        assert_eq!(
            require_admin(&headers_with("Bearer ak_1"), None)
                .unwrap_err()
                .code(),
            "admin_disabled"
        );
    }
}
