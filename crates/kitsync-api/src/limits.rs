//! Bounds on what a request may cost, and `[api]` settings.
//!
//! - No body is read before its caller is authenticated and authorised: handlers that take a
//!   body take it as [`axum::body::Body`] (which reads nothing) and call [`read_body`] after
//!   their token and scope checks. A declared `Content-Length` over the limit is refused
//!   before a byte is read; otherwise reading stops at the limit and at a deadline.
//! - At most `api.max_concurrent_requests` requests run at once; more are answered 503 at
//!   once ([`limit`]) instead of queuing without bound, and a request running longer than
//!   `api.request_timeout_ms` is cut off with a 503.
use crate::error::ApiError;
use crate::ApiState;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// `[api]`: the directory, SCIM, events, activity and statistics API.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct ApiSettings {
    /// Largest request body, in bytes. 1 MiB holds a full activity batch (1 000 events of up
    /// to 1 KiB each) and a SCIM group of 10 000 members with Kit-sized (64-character) ids;
    /// raise it for groups whose member values are longer.
    pub body_limit_bytes: usize,
    /// Time allowed for a request body to arrive once the headers are in.
    pub body_read_timeout_ms: u64,
    /// Requests handled at once; more are answered 503 with `Retry-After: 1`.
    pub max_concurrent_requests: usize,
    /// Longest a request may run (body, database, answer) before it is answered 503.
    pub request_timeout_ms: u64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            body_limit_bytes: 1024 * 1024,
            body_read_timeout_ms: 10_000,
            max_concurrent_requests: 256,
            request_timeout_ms: 30_000,
        }
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body was not received within {ms} ms")]
    Timeout { ms: u64 },
    #[error("the request body could not be read: {0}")]
    Unreadable(String),
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge { limit } => ApiError::PayloadTooLarge { limit },
            BodyError::Timeout { ms } => ApiError::BodyTimeout { ms },
            BodyError::Unreadable(m) => ApiError::bad_param("body", m),
        }
    }
}

/// Reads a body of at most `settings.body_limit_bytes`, within `body_read_timeout_ms`.
///
/// # Errors
/// [`BodyError::TooLarge`] as soon as the declared or received length passes the limit (the
/// rest is never read), [`BodyError::Timeout`], or a transport error.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    settings: &ApiSettings,
) -> Result<Bytes, BodyError> {
    let limit = settings.body_limit_bytes;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let read = async {
        let mut buf: Vec<u8> = Vec::new();
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Unreadable(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(BodyError::TooLarge { limit });
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(Bytes::from(buf))
    };
    let ms = settings.body_read_timeout_ms;
    tokio::time::timeout(Duration::from_millis(ms), read)
        .await
        .map_err(|_| BodyError::Timeout { ms })?
}

/// The concurrency and time bounds of every API request (a `from_fn_with_state` layer).
/// SCIM clients get the refusal as a SCIM error, everyone else as an API error.
///
/// Also refuses a path (or a REST query) holding an encoded NUL (`%00`): no identifier contains
/// one, and PostgreSQL cannot even compare text with it, so it would surface as a 500.
pub async fn limit(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let scim = req.uri().path().starts_with("/scim/");
    let refuse = |e: ApiError| {
        if scim {
            crate::scim::error::ScimError::from(e).into_response()
        } else {
            e.into_response()
        }
    };
    // SCIM's query parameters are parsed (a filter with a NUL is an `invalidFilter`); the
    // REST API's reach the store as they are.
    let nul_in_query = !scim && req.uri().query().is_some_and(|q| q.contains("%00"));
    if req.uri().path().contains("%00") || nul_in_query {
        return refuse(ApiError::bad_param(
            "path",
            "the path or query contains an encoded NUL character (%00)",
        ));
    }
    let Ok(_slot) = state.slots.try_acquire() else {
        return refuse(ApiError::Unavailable("too many requests at once"));
    };
    let budget = Duration::from_millis(state.settings.request_timeout_ms.max(1));
    match tokio::time::timeout(budget, next.run(req)).await {
        Ok(res) => res,
        Err(_) => refuse(ApiError::Unavailable("the request took too long")),
    }
}
