//! [`ApiError`]: every failure the API answers with, as a status, a stable code and a message.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answered to the client as `{"success": false, "code": "...", "message": "..."}`.
///
/// Input errors carry their message as is; internal errors are logged in full and answered with
/// a generic message, so no internal detail leaks.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    message: String,
    retry_after_secs: Option<u64>,
    /// The field at fault, when the error is about one message's field.
    field: Option<String>,
    /// The `messageId` of the message at fault, when it had one.
    message_id: Option<String>,
}

impl ApiError {
    /// Builds an error with a status, a stable snake_case code and a message for the client.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            retry_after_secs: None,
            field: None,
            message_id: None,
        }
    }

    /// Names the message (its own `messageId`) and the field the error is about.
    pub fn for_message(mut self, message_id: Option<String>, field: Option<String>) -> Self {
        self.message_id = message_id;
        self.field = field;
        self
    }

    /// Builds a 500 whose detail is logged, not returned.
    pub fn internal(error: &dyn std::error::Error) -> Self {
        tracing::error!(error = %error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
    }

    /// Builds a 429 asking the client to retry after `seconds`.
    pub fn overloaded(seconds: u64) -> Self {
        Self {
            retry_after_secs: Some(seconds),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "overloaded",
                format!("the event log is busy, retry after {seconds} s"),
            )
        }
    }

    /// Returns the HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Returns the stable code.
    pub fn code(&self) -> &str {
        &self.code
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    success: bool,
    code: &'a str,
    message: &'a str,
    #[serde(rename = "messageId", skip_serializing_if = "Option::is_none")]
    message_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            success: false,
            code: &self.code,
            message: &self.message,
            message_id: self.message_id.as_deref(),
            field: self.field.as_deref(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tributary\""),
            );
        }
        response
    }
}

impl From<trib_log::LogError> for ApiError {
    fn from(error: trib_log::LogError) -> Self {
        match error {
            trib_log::LogError::Overloaded { retry_after } => {
                ApiError::overloaded(retry_after.as_secs().max(1))
            }
            trib_log::LogError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down, retry later",
            ),
            trib_log::LogError::BatchTooLarge { .. }
            | trib_log::LogError::RecordTooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                error.to_string(),
            ),
            other => ApiError::internal(&other),
        }
    }
}

/// Answers routes that do not exist.
pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

pub(crate) async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this route does not accept {method}"),
    )
}
