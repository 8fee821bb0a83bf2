//! What every list endpoint shares: the query string checked into a 400 `invalid_query` that
//! says what is wrong, and the `limit` of one page (default 100, at most 1,000).

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;

use crate::ApiError;

/// Items in a page when the request gives no `limit`.
pub(crate) const DEFAULT_LIMIT: usize = 100;
/// The most items one page returns.
pub(crate) const MAX_LIMIT: usize = 1000;

/// A 400 `invalid_query` with this message.
pub(crate) fn bad_query(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
}

/// The parsed query string, or a 400 naming the parameter that could not be read.
pub(crate) fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(query)| query)
        .map_err(|rejection| bad_query(rejection.body_text()))
}

/// A page's `limit`: [`DEFAULT_LIMIT`] when absent, else between 1 and [`MAX_LIMIT`].
pub(crate) fn limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad_query(format!(
            "limit: must be between 1 and {MAX_LIMIT}, got {limit}"
        )));
    }
    Ok(limit)
}
