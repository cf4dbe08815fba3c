//! API failures and their one mapping to HTTP (product.md §1: "every JSON error body has a
//! stable machine-readable code and a human message naming the field or parameter at fault").
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kitsync_store::StoreError;

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

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::BodyTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            StoreError::Database(_) | StoreError::Conflict(_) | StoreError::Corrupt(_) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "API request failed");
        }
        let mut res = (
            status,
            axum::Json(serde_json::json!({ "code": code, "message": self.to_string() })),
        )
            .into_response();
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
