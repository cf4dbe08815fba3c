//! Bearer tokens: `Authorization: Bearer kst_…` → the caller's [`ApiToken`], or 401.
use crate::error::ApiError;
use crate::ApiState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use kitsync_domain::Scope;
use kitsync_store::ApiToken;
use std::sync::Arc;

/// An authenticated caller.
#[derive(Debug)]
pub struct Caller(pub ApiToken);

impl Caller {
    /// 403 unless the token holds `scope` and may see `tenant` (`None`: no single tenant).
    ///
    /// # Errors
    /// [`ApiError::Forbidden`], naming what is missing.
    pub fn require(&self, scope: Scope, tenant: Option<&str>) -> Result<(), ApiError> {
        if self.0.allows(scope, tenant) {
            return Ok(());
        }
        Err(ApiError::Forbidden(if !scope.granted_by(&self.0.scopes) {
            format!("this token lacks the scope {scope}")
        } else {
            match (&self.0.tenant_id, tenant) {
                (Some(bound), Some(t)) => {
                    format!("this token is bound to tenant {bound}, not {t}")
                }
                (Some(bound), None) => {
                    format!("this token is bound to tenant {bound}; ask for that tenant")
                }
                (None, _) => format!("this token may not do this ({scope})"),
            }
        }))
    }
}

impl FromRequestParts<Arc<ApiState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::Unauthorized("missing Authorization: Bearer <token>".into())
            })?;
        let bearer = header
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into())
            })?;
        match state.store.authenticate(bearer).await? {
            Some(token) => Ok(Caller(token)),
            None => Err(ApiError::Unauthorized(
                "the token is unknown, malformed or revoked".into(),
            )),
        }
    }
}
