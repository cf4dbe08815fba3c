//! The audit log: every change made through `/admin/v1` or the command line, newest first.
use super::{before, newest_first, operator, time};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::Query;
use crate::page::{Page, PageQuery};
use crate::ApiState;
use axum::extract::State;
use axum::Json;
use kitsync_store::AuditEntry;
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

const KIND: &str = "audit";

/// One change an operator made.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditItem {
    id: i64,
    at: String,
    /// The API token that made it; `null`: the command line.
    #[schema(required = true)]
    token_id: Option<String>,
    /// Who, for people: `token 0123456789ab (ops)` or `the command line`.
    actor: String,
    /// `plan.approve`, `plan.reject`, `deadletter.replay`, `deadletter.replay_undone`,
    /// `webhook.retry`, `webhook.disable`, `webhook.enable`, `webhook.remove`,
    /// `token.create`, `token.revoke`, `oidc_client.add`, `oidc_client.remove`.
    action: String,
    /// The plan, dead letter, endpoint, token or client it was done to.
    target: String,
    #[schema(required = true)]
    tenant_id: Option<String>,
    /// The rest (never a secret).
    #[schema(value_type = Object)]
    detail: serde_json::Value,
}

impl From<AuditEntry> for AuditItem {
    fn from(e: AuditEntry) -> Self {
        AuditItem {
            id: e.id,
            at: time(e.at),
            token_id: e.token_id,
            actor: e.actor,
            action: e.action,
            target: e.target,
            tenant_id: e.tenant_id,
            detail: e.detail,
        }
    }
}

/// `GET /admin/v1/audit`.
///
/// # Errors
/// 401/403 per [`operator`]; 400 for a bad cursor or limit.
#[utoipa::path(
    get,
    path = "/admin/v1/audit",
    operation_id = "adminListAudit",
    tag = "admin",
    summary = "Changes operators made, newest first",
    description = "Scope `admin`, a token bound to no tenant.",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of the audit log.", body = Page<AuditItem>),
        crate::openapi::ReadErrors,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<AuditItem>>, ApiError> {
    operator(&caller)?;
    let limit = page.limit()?;
    let before = before(&page, KIND)?;
    let rows = state.store.audit_log(before, limit + 1).await?;
    let items = rows.into_iter().map(AuditItem::from).collect();
    Ok(Json(newest_first(items, limit, KIND, |a: &AuditItem| a.id)))
}
