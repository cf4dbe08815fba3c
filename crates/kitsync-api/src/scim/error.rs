//! SCIM error responses (RFC 7644 §3.12): `{"schemas":[Error],"status":"400","scimType",
//! "detail"}` with `application/scim+json`.
use super::schema::ERROR;
use crate::ApiError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kitsync_store::{GroupWriteError, StoreError};

/// The `scimType` of an error (RFC 7644 §3.12, Table 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimType {
    InvalidFilter,
    TooMany,
    Uniqueness,
    Mutability,
    InvalidSyntax,
    InvalidPath,
    NoTarget,
    InvalidValue,
    InvalidVers,
    Sensitive,
}

impl ScimType {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            ScimType::InvalidFilter => "invalidFilter",
            ScimType::TooMany => "tooMany",
            ScimType::Uniqueness => "uniqueness",
            ScimType::Mutability => "mutability",
            ScimType::InvalidSyntax => "invalidSyntax",
            ScimType::InvalidPath => "invalidPath",
            ScimType::NoTarget => "noTarget",
            ScimType::InvalidValue => "invalidValue",
            ScimType::InvalidVers => "invalidVers",
            ScimType::Sensitive => "sensitive",
        }
    }
}

#[derive(Debug)]
pub struct ScimError {
    pub status: StatusCode,
    pub scim_type: Option<ScimType>,
    pub detail: String,
}

impl ScimError {
    pub fn new(status: StatusCode, scim_type: Option<ScimType>, detail: impl Into<String>) -> Self {
        ScimError {
            status,
            scim_type,
            detail: detail.into(),
        }
    }

    pub fn bad(scim_type: ScimType, detail: impl Into<String>) -> Self {
        ScimError::new(StatusCode::BAD_REQUEST, Some(scim_type), detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        ScimError::new(StatusCode::NOT_FOUND, None, detail)
    }

    /// A write to something the marketplace owns (Users, per-app role groups).
    pub fn read_only(what: &str) -> Self {
        ScimError::bad(
            ScimType::Mutability,
            format!(
                "{what} belong to the marketplace: they change only through Kit callbacks and \
                 are read-only here"
            ),
        )
    }
}

impl From<ApiError> for ScimError {
    fn from(e: ApiError) -> Self {
        let status = match &e {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "SCIM request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let scim_type = (status == StatusCode::BAD_REQUEST).then_some(ScimType::InvalidValue);
        ScimError::new(status, scim_type, e.to_string())
    }
}

impl From<StoreError> for ScimError {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<GroupWriteError> for ScimError {
    fn from(e: GroupWriteError) -> Self {
        match e {
            GroupWriteError::TenantNotFound(_) | GroupWriteError::GroupNotFound(_) => {
                ScimError::not_found(e.to_string())
            }
            GroupWriteError::EmptyName | GroupWriteError::EmptyMember => {
                ScimError::bad(ScimType::InvalidValue, e.to_string())
            }
            GroupWriteError::NameTaken(_) => ScimError::new(
                StatusCode::CONFLICT,
                Some(ScimType::Uniqueness),
                e.to_string(),
            ),
            GroupWriteError::VersionMismatch { .. } => ScimError::new(
                StatusCode::PRECONDITION_FAILED,
                None,
                format!("If-Match does not match: {e}"),
            ),
            GroupWriteError::Store(s) => s.into(),
        }
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "schemas": [ERROR],
            "status": self.status.as_u16().to_string(),
            "detail": self.detail,
        });
        if let Some(t) = self.scim_type {
            body["scimType"] = t.as_str().into();
        }
        let mut res = (self.status, super::scim_json(&body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}
