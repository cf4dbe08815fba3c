//! API failures and their one mapping to HTTP: every JSON error body has a stable
//! machine-readable code and a human message naming the field or parameter at fault.
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kitsync_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No token, or one that is unknown, malformed or revoked.
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token without the scope, or bound to another tenant.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The resource's state refuses the change (a plan no longer held, a token revoked
    /// already, …); the message says which.
    #[error("{0}")]
    Conflict(String),
    /// A bad query or path parameter; the message names it.
    #[error("{param}: {message}")]
    BadRequest { param: String, message: String },
    /// The body is (or declares itself) larger than the route accepts.
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The body did not arrive in time.
    #[error("the request body was not received within {ms} ms")]
    BodyTimeout { ms: u64 },
    /// Too many requests at once, or one that took too long: shed, try again.
    #[error("the server is busy ({0}); retry")]
    Unavailable(&'static str),
    /// The database failed; the cause is logged, not returned.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    #[must_use]
    pub fn bad_param(param: &str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            param: param.to_owned(),
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, ErrorCode::Conflict),
            ApiError::BadRequest { .. } => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge)
            }
            ApiError::BodyTimeout { .. } => {
                (StatusCode::REQUEST_TIMEOUT, ErrorCode::RequestTimeout)
            }
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        }
    }
}

/// The stable, machine-readable part of an error: one per HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    BadRequest,
    PayloadTooLarge,
    RequestTimeout,
    Unavailable,
    Internal,
}

/// The body of every `/api/v1` error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// `unauthorized` (401), `forbidden` (403), `not_found` (404), `conflict` (409),
    /// `bad_request` (400),
    /// `payload_too_large` (413), `request_timeout` (408), `unavailable` (503) or `internal`
    /// (500).
    pub code: ErrorCode,
    /// For people: what went wrong. A 400 names the parameter at fault first
    /// (`limit: must be a whole number from 1 to 1000, got `0``).
    pub message: String,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            StoreError::Conflict(why) => ApiError::Conflict(why),
            StoreError::Database(_) | StoreError::Corrupt(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "API request failed");
        }
        let body = ErrorBody {
            code,
            message: self.to_string(),
        };
        let mut res = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        res
    }
}
