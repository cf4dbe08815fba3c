//! `Path` and `Query` for the `/api/v1` handlers: axum's extractors, whose refusals are
//! [`ApiError`]s — `{"code","message"}` naming the parameter, like every other error of the
//! API — instead of axum's plain-text 400s (found by schemathesis, see `openapi`: a repeated
//! query parameter, or a path segment that is not UTF-8 once percent-decoded).
//!
//! `TenantPath`: the path parameters of a route under one tenant, which start with it.
use crate::error::ApiError;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// The query string, deserialised as [`axum::extract::Query`] does.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(q)) => Ok(Query(q)),
            Err(e) => Err(query_error(parts.uri.query().unwrap_or_default(), &e)),
        }
    }
}

/// A parameter given twice is the one way a query of optional strings fails to deserialise;
/// name it.
fn query_error(query: &str, e: &QueryRejection) -> ApiError {
    let mut seen = std::collections::HashSet::new();
    let repeated = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split('=').next().unwrap_or_default())
        .find(|name| !seen.insert(*name));
    match repeated {
        Some(name) => ApiError::bad_param(name, "is given more than once"),
        None => ApiError::bad_param("query", e.body_text()),
    }
}

/// The path parameters, deserialised as [`axum::extract::Path`] does.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(p)) => Ok(Path(p)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(match e.kind() {
                ErrorKind::InvalidUtf8InPathParam { key } => {
                    ApiError::bad_param(key, "is not UTF-8 once percent-decoded")
                }
                // A handler asking for a type no path can give: our bug, not the caller's.
                ErrorKind::UnsupportedType { .. } | ErrorKind::WrongNumberOfParameters { .. } => {
                    ApiError::Internal(e.body_text())
                }
                _ => ApiError::bad_param("path", e.body_text()),
            }),
            Err(e) => Err(ApiError::Internal(e.body_text())),
        }
    }
}

/// The parameters of a path which start with its tenant (`/api/v1/tenants/{tenantId}/…`,
/// `/scim/v2/{tenantId}/…`).
pub(crate) trait TenantPath: DeserializeOwned + Send {
    fn tenant(&self) -> &str;
}

/// `{tenantId}`.
impl TenantPath for String {
    fn tenant(&self) -> &str {
        self
    }
}

/// `{tenantId}` and a resource's id.
impl TenantPath for (String, String) {
    fn tenant(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Probe {
        limit: Option<String>,
    }

    #[test]
    fn a_repeated_parameter_is_named() {
        let uri = "/x?limit=1&limit=2".parse().unwrap();
        let rejection = axum::extract::Query::<Probe>::try_from_uri(&uri).unwrap_err();
        let msg = query_error("limit=1&limit=2", &rejection).to_string();
        assert_eq!(msg, "limit: is given more than once");
        let msg = query_error("limit=1", &rejection).to_string();
        assert!(msg.starts_with("query: "), "{msg}");
    }
}
