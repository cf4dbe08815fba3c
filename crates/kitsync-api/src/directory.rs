//! Directory reads (product.md §1, "Shapes that clients … rely on").
use crate::auth::Caller;
use crate::error::ApiError;
use crate::ApiState;
use axum::extract::{Path, Query, State};
use axum::Json;
use kitsync_domain::Scope;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `?includeTest=true` shows test tenants' data (hidden otherwise).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestFilter {
    #[serde(default)]
    include_test: Option<String>,
}

impl TestFilter {
    fn include_test(&self) -> Result<bool, ApiError> {
        match self.include_test.as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ApiError::bad_param(
                "includeTest",
                format!("must be `true` or `false`, got `{other}`"),
            )),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantBody {
    tenant_id: String,
    tenant_code: String,
    name: String,
    domain_name: Option<String>,
    test: bool,
    instance_ids: Vec<String>,
}

/// `GET /api/v1/tenants/{tenantId}`.
///
/// # Errors
/// 401/403 per [`Caller`]; 404 for an unknown or deleted tenant, or a test tenant without
/// `includeTest=true`.
pub async fn tenant(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(tenant_id): Path<String>,
    Query(filter): Query<TestFilter>,
) -> Result<Json<TenantBody>, ApiError> {
    caller.require(Scope::DirectoryRead, Some(&tenant_id))?;
    let include_test = filter.include_test()?;
    let found = state.store.tenant(&tenant_id).await?;
    match found {
        Some(t) if include_test || !t.test => Ok(Json(TenantBody {
            tenant_id: t.tenant_id,
            tenant_code: t.tenant_code,
            name: t.name,
            domain_name: t.domain_name,
            test: t.test,
            instance_ids: t.instance_ids,
        })),
        _ => Err(ApiError::NotFound(format!("tenant {tenant_id} not found"))),
    }
}
