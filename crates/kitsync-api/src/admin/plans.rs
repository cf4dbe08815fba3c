//! Held full department syncs: list, one with its deletions and snapshot, approve, reject.
use super::{numeric_id, operator, time};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::page::{Page, PageQuery};
use crate::ApiState;
use axum::extract::State;
use axum::Json;
use kitsync_store::journal::PlanStatus;
use kitsync_store::{Outcome, Plan, PlanDetail};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

const KIND: &str = "plan";

/// A full department snapshot the mass-deletion guard held, and what became of it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanItem {
    id: i64,
    tenant_id: String,
    /// `held` (waiting for an operator), `approved`, `rejected`, `confirmed` (a later
    /// snapshot deleted the same) or `superseded` (a later snapshot or tenant delete covered
    /// it).
    status: String,
    /// The snapshot's `timeStamp` (RFC 3339).
    version: String,
    /// Departments in the snapshot.
    org_count: i32,
    /// Live departments when it was held.
    live_before: i32,
    /// Departments it would delete.
    delete_count: i32,
    created_at: String,
    #[schema(required = true)]
    decided_at: Option<String>,
    /// Why it was decided so (an operator's decision names the token).
    #[schema(required = true)]
    reason: Option<String>,
}

impl From<Plan> for PlanItem {
    fn from(p: Plan) -> Self {
        PlanItem {
            id: p.id,
            tenant_id: p.tenant_id,
            status: p.status.as_str().to_owned(),
            version: time(p.version),
            org_count: p.org_count,
            live_before: p.live_before,
            delete_count: p.delete_count,
            created_at: time(p.created_at),
            decided_at: p.decided_at.map(time),
            reason: p.reason,
        }
    }
}

/// A department a held plan would delete, as it is now.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedDeleteBody {
    org_code: String,
    /// `null` when the department is gone already.
    #[schema(required = true)]
    org_name: Option<String>,
    #[schema(required = true)]
    parent_code: Option<String>,
    /// Its live members, whose department would go.
    member_count: u64,
}

/// A department of the snapshot.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotOrg {
    org_code: String,
    org_name: String,
    #[schema(required = true)]
    parent_code: Option<String>,
}

/// One plan, with what it would delete and the snapshot it came from.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanBody {
    #[serde(flatten)]
    plan: PlanItem,
    /// In code order.
    deletes: Vec<PlannedDeleteBody>,
    /// The snapshot's departments, as the marketplace sent them.
    snapshot: Vec<SnapshotOrg>,
}

impl From<PlanDetail> for PlanBody {
    fn from(d: PlanDetail) -> Self {
        PlanBody {
            plan: d.plan.into(),
            deletes: d
                .deletes
                .into_iter()
                .map(|x| PlannedDeleteBody {
                    org_code: x.org_code,
                    org_name: x.org_name,
                    parent_code: x.parent_code,
                    member_count: x.member_count,
                })
                .collect(),
            snapshot: d
                .snapshot
                .orgs
                .into_iter()
                .map(|o| SnapshotOrg {
                    org_code: o.org_code,
                    org_name: o.org_name,
                    parent_code: o.parent_code.filter(|p| !p.is_empty()),
                })
                .collect(),
        }
    }
}

/// What approving did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approved {
    /// `applied` (its deletions were made; `status` is `approved`) or `superseded` (a later
    /// snapshot or tenant delete covers it: nothing was applied; `status` is `superseded`).
    outcome: String,
    plan: PlanItem,
}

/// `?status=`: a plan's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlanStatusName {
    Held,
    Approved,
    Rejected,
    Confirmed,
    Superseded,
}

/// `?status=&cursor=&limit=`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PlanQuery {
    /// Only plans in this state (absent: all).
    #[serde(default)]
    #[param(inline, value_type = PlanStatusName)]
    status: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    page: PageQuery,
}

/// The `{planId}` of a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PlanPath {
    /// The plan's id.
    #[param(rename = "planId", value_type = i64, minimum = 1)]
    #[serde(rename = "planId")]
    plan_id: String,
}

/// `GET /admin/v1/plans`.
///
/// # Errors
/// 401/403 per [`operator`]; 400 naming `status`, `cursor` or `limit`.
#[utoipa::path(
    get,
    path = "/admin/v1/plans",
    operation_id = "adminListPlans",
    tag = "admin",
    summary = "Full department syncs held by the mass-deletion guard, oldest first",
    description = "Scope `admin`, a token bound to no tenant.",
    params(PlanQuery, PageQuery),
    responses(
        (status = 200, description = "A page of plans.", body = Page<PlanItem>),
        crate::openapi::ReadErrors,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(q): Query<PlanQuery>,
) -> Result<Json<Page<PlanItem>>, ApiError> {
    operator(&caller)?;
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(PlanStatus::parse(raw).ok_or_else(|| {
            ApiError::bad_param(
                "status",
                format!(
                    "must be one of held, approved, rejected, confirmed, superseded; got `{raw}`"
                ),
            )
        })?),
    };
    let limit = q.page.limit()?;
    let after = q
        .page
        .after(KIND)?
        .map(|a| numeric_id(&a, "cursor"))
        .transpose()?;
    let plans: Vec<Plan> = state
        .store
        .list_plans(status)
        .await?
        .into_iter()
        .filter(|p| after.is_none_or(|a| p.id > a))
        .take(
            usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        )
        .collect();
    let more = plans.len() as u64 > limit;
    let items: Vec<PlanItem> = plans
        .into_iter()
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(PlanItem::from)
        .collect();
    let next_cursor = more
        .then(|| {
            items
                .last()
                .map(|p| crate::page::cursor(KIND, &p.id.to_string()))
        })
        .flatten();
    Ok(Json(Page { items, next_cursor }))
}

/// `GET /admin/v1/plans/{planId}`.
///
/// # Errors
/// 401/403 per [`operator`]; 400 for a malformed id; 404 for an unknown plan.
#[utoipa::path(
    get,
    path = "/admin/v1/plans/{planId}",
    operation_id = "adminGetPlan",
    tag = "admin",
    summary = "One plan, the departments it would delete and the snapshot it came from",
    description = "Scope `admin`, a token bound to no tenant. The departments it would \
                   delete are named as they are now, with their live members.",
    params(PlanPath),
    responses(
        (status = 200, description = "The plan.", body = PlanBody),
        crate::openapi::AdminErrors,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn get(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(path): Path<PlanPath>,
) -> Result<Json<PlanBody>, ApiError> {
    operator(&caller)?;
    let id = numeric_id(&path.plan_id, "planId")?;
    match state.store.plan(id).await? {
        Some(detail) => Ok(Json(detail.into())),
        None => Err(ApiError::NotFound(format!("plan {id} not found"))),
    }
}

/// The plan as it is now (after a decision).
async fn current(state: &ApiState, id: i64) -> Result<PlanItem, ApiError> {
    match state.store.plan(id).await? {
        Some(detail) => Ok(detail.plan.into()),
        None => Err(ApiError::NotFound(format!("plan {id} not found"))),
    }
}

/// `POST /admin/v1/plans/{planId}/approve`.
///
/// # Errors
/// 401/403 per [`operator`]; 404 for an unknown plan; 409 when it is no longer held.
#[utoipa::path(
    post,
    path = "/admin/v1/plans/{planId}/approve",
    operation_id = "adminApprovePlan",
    tag = "admin",
    summary = "Apply a held plan, deletions and all",
    description = "Scope `admin`, a token bound to no tenant. The snapshot is planned again \
                   against the departments as they are now (changes newer than it are kept). \
                   Audited; the plan's reason names the token.",
    params(PlanPath),
    responses(
        (status = 200, description = "Decided.", body = Approved),
        crate::openapi::AdminErrors,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn approve(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(path): Path<PlanPath>,
) -> Result<Json<Approved>, ApiError> {
    let actor = operator(&caller)?;
    let id = numeric_id(&path.plan_id, "planId")?;
    let outcome = state.store.approve_plan(&actor, id).await?;
    let outcome = match outcome {
        Outcome::Superseded => "superseded",
        _ => "applied",
    };
    Ok(Json(Approved {
        outcome: outcome.to_owned(),
        plan: current(&state, id).await?,
    }))
}

/// `POST /admin/v1/plans/{planId}/reject`.
///
/// # Errors
/// 401/403 per [`operator`]; 404 for an unknown plan; 409 when it is no longer held.
#[utoipa::path(
    post,
    path = "/admin/v1/plans/{planId}/reject",
    operation_id = "adminRejectPlan",
    tag = "admin",
    summary = "Discard a held plan",
    description = "Scope `admin`, a token bound to no tenant. Its snapshot is never applied \
                   (a later snapshot still is). Audited; the plan's reason names the token.",
    params(PlanPath),
    responses(
        (status = 200, description = "The plan, rejected.", body = PlanItem),
        crate::openapi::AdminErrors,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn reject(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(path): Path<PlanPath>,
) -> Result<Json<PlanItem>, ApiError> {
    let actor = operator(&caller)?;
    let id = numeric_id(&path.plan_id, "planId")?;
    state.store.reject_plan(&actor, id).await?;
    Ok(Json(current(&state, id).await?))
}
