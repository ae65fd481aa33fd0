//! What the lambda-ml services share over HTTP: the error answer every route gives, the OpenAPI pieces both
//! documents hold ([`api`]), and the Prometheus metrics with the middleware that counts requests ([`telemetry`]).
//! The batch layer does not depend on it, so it compiles no HTTP stack.

pub mod api;
pub mod telemetry;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error answer, `{"error": "..."}` with its status: 4xx for the caller's mistakes, 5xx for ours, 503 with
/// `Retry-After` for "busy, come back". Every route of both services answers its errors through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// What was wrong, in words.
    pub message: String,
    /// Seconds after which a retry may succeed.
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// An error answer with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), retry_after: None }
    }

    /// 503 with `Retry-After: seconds`.
    pub fn unavailable(message: impl Into<String>, seconds: u32) -> ApiError {
        ApiError { retry_after: Some(seconds), ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(serde_json::json!({"error": self.message}))).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// The answer of an [`ApiError`] with `status` and `message`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    ApiError::new(status, message).into_response()
}
