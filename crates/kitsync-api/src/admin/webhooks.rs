//! Webhook endpoints: list with their state, an endpoint's latest deliveries, retry now,
//! disable, enable.
use super::{by_key, operator, time};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::page::{Page, PageQuery};
use crate::ApiState;
use axum::extract::State;
use axum::Json;
use kitsync_store::{WebhookDelivery, WebhookEndpoint};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

const KIND: &str = "webhook";

/// A registered receiver of the change feed, and how its deliveries go.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookItem {
    /// `whk_…`.
    id: String,
    url: String,
    /// Only this tenant's events; `null`: every tenant.
    #[schema(required = true)]
    tenant_id: Option<String>,
    /// Only these event types or prefixes; `null`: every type.
    #[schema(required = true)]
    types: Option<Vec<String>>,
    include_test: bool,
    /// `active`, `failing` (failed the threshold number of times in a row; still retried)
    /// or `disabled`.
    state: String,
    /// The last change-feed cursor delivered or skipped.
    cursor: String,
    consecutive_failures: i32,
    /// HTTP status of the last attempt; `null`: no answer, or never attempted.
    #[schema(required = true)]
    last_status: Option<i32>,
    #[schema(required = true)]
    last_error: Option<String>,
    #[schema(required = true)]
    last_attempt_at: Option<String>,
    #[schema(required = true)]
    last_success_at: Option<String>,
    next_attempt_at: String,
    created_at: String,
}

impl From<WebhookEndpoint> for WebhookItem {
    fn from(e: WebhookEndpoint) -> Self {
        WebhookItem {
            id: e.id,
            url: e.url,
            tenant_id: e.tenant_id,
            types: e.types,
            include_test: e.include_test,
            state: e.state.as_str().to_owned(),
            cursor: e.cursor.to_string(),
            consecutive_failures: e.consecutive_failures,
            last_status: e.last_status,
            last_error: e.last_error,
            last_attempt_at: e.last_attempt_at.map(time),
            last_success_at: e.last_success_at.map(time),
            next_attempt_at: time(e.next_attempt_at),
            created_at: time(e.created_at),
        }
    }
}

/// One delivery attempt.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryItem {
    id: i64,
    /// The `webhook-id` header (the same across retries of a batch).
    webhook_id: String,
    first_event_id: i64,
    last_event_id: i64,
    events: i32,
    /// 1 for a batch's first attempt, then 2, 3, …
    attempt: i32,
    /// The receiver's HTTP status; `null`: no answer.
    #[schema(required = true)]
    status: Option<i32>,
    #[schema(required = true)]
    error: Option<String>,
    at: String,
    duration_ms: i64,
}

impl From<WebhookDelivery> for DeliveryItem {
    fn from(d: WebhookDelivery) -> Self {
        DeliveryItem {
            id: d.id,
            webhook_id: d.webhook_id,
            first_event_id: d.first_event_id,
            last_event_id: d.last_event_id,
            events: d.events,
            attempt: d.attempt,
            status: d.status,
            error: d.error,
            at: time(d.at),
            duration_ms: d.duration_ms,
        }
    }
}

/// An endpoint's latest delivery attempts, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deliveries {
    items: Vec<DeliveryItem>,
}

/// The `{webhookId}` of a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WebhookPath {
    /// The endpoint's id (`whk_…`).
    #[param(rename = "webhookId")]
    #[serde(rename = "webhookId")]
    webhook_id: String,
}

/// `?limit=` of the deliveries.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Attempts, from 1 to 1000 (default 20; the log keeps the latest attempts only).
    #[serde(default)]
    #[param(value_type = u64, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// `GET /admin/v1/webhooks`.
///
/// # Errors
/// 401/403 per [`operator`]; 400 for a bad cursor or limit.
#[utoipa::path(
    get,
    path = "/admin/v1/webhooks",
    operation_id = "adminListWebhooks",
    tag = "admin",
    summary = "Webhook endpoints, by id, with their delivery state",
    description = "Scope `admin`, a token bound to no tenant. Never their secrets.",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of endpoints.", body = Page<WebhookItem>),
        crate::openapi::ReadErrors,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<WebhookItem>>, ApiError> {
    operator(&caller)?;
    let all: Vec<WebhookItem> = state
        .store
        .list_webhooks()
        .await?
        .into_iter()
        .map(WebhookItem::from)
        .collect();
    Ok(Json(by_key(all, &page, KIND, |w| &w.id)?))
}

/// `GET /admin/v1/webhooks/{webhookId}/deliveries`.
///
/// # Errors
/// 401/403 per [`operator`]; 400 naming `limit`; 404 for an unknown endpoint.
#[utoipa::path(
    get,
    path = "/admin/v1/webhooks/{webhookId}/deliveries",
    operation_id = "adminListWebhookDeliveries",
    tag = "admin",
    summary = "An endpoint's latest delivery attempts, newest first",
    description = "Scope `admin`, a token bound to no tenant. The log keeps the latest \
                   attempts of each endpoint only.",
    params(WebhookPath, DeliveriesQuery),
    responses(
        (status = 200, description = "The attempts.", body = Deliveries),
        crate::openapi::AdminErrors,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn deliveries(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(path): Path<WebhookPath>,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Json<Deliveries>, ApiError> {
    operator(&caller)?;
    let limit = match q.limit.as_deref() {
        None | Some("") => 20,
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=crate::page::MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_param(
                    "limit",
                    format!(
                        "must be a whole number from 1 to {}, got `{raw}`",
                        crate::page::MAX_LIMIT
                    ),
                )
            })?,
    };
    if state.store.webhook(&path.webhook_id).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "webhook endpoint {} not found",
            path.webhook_id
        )));
    }
    let items = state
        .store
        .webhook_deliveries(&path.webhook_id, limit)
        .await?
        .into_iter()
        .map(DeliveryItem::from)
        .collect();
    Ok(Json(Deliveries { items }))
}

/// `POST /admin/v1/webhooks/{webhookId}/retry`.
///
/// # Errors
/// 401/403 per [`operator`]; 404 for an unknown endpoint; 409 when it is disabled.
#[utoipa::path(
    post,
    path = "/admin/v1/webhooks/{webhookId}/retry",
    operation_id = "adminRetryWebhook",
    tag = "admin",
    summary = "Deliver now: restart the endpoint's backoff and make it due",
    description = "Scope `admin`, a token bound to no tenant. Audited.",
    params(WebhookPath),
    responses(
        (status = 200, description = "The endpoint.", body = WebhookItem),
        crate::openapi::AdminErrors,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn retry(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(path): Path<WebhookPath>,
) -> Result<Json<WebhookItem>, ApiError> {
    let actor = operator(&caller)?;
    let e = state.store.retry_webhook(&actor, &path.webhook_id).await?;
    Ok(Json(e.into()))
}

/// `POST /admin/v1/webhooks/{webhookId}/disable`.
///
/// # Errors
/// 401/403 per [`operator`]; 404 for an unknown endpoint.
#[utoipa::path(
    post,
    path = "/admin/v1/webhooks/{webhookId}/disable",
    operation_id = "adminDisableWebhook",
    tag = "admin",
    summary = "Stop delivering to an endpoint (its cursor stays)",
    description = "Scope `admin`, a token bound to no tenant. Audited.",
    params(WebhookPath),
    responses(
        (status = 200, description = "The endpoint, disabled.", body = WebhookItem),
        crate::openapi::AdminErrors,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn disable(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(path): Path<WebhookPath>,
) -> Result<Json<WebhookItem>, ApiError> {
    set_enabled(&state, &caller, &path, false).await
}

/// `POST /admin/v1/webhooks/{webhookId}/enable`.
///
/// # Errors
/// 401/403 per [`operator`]; 404 for an unknown endpoint.
#[utoipa::path(
    post,
    path = "/admin/v1/webhooks/{webhookId}/enable",
    operation_id = "adminEnableWebhook",
    tag = "admin",
    summary = "Resume delivering to a disabled endpoint, from its cursor",
    description = "Scope `admin`, a token bound to no tenant. Audited.",
    params(WebhookPath),
    responses(
        (status = 200, description = "The endpoint, due now.", body = WebhookItem),
        crate::openapi::AdminErrors,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn enable(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(path): Path<WebhookPath>,
) -> Result<Json<WebhookItem>, ApiError> {
    set_enabled(&state, &caller, &path, true).await
}

/// Disables or enables the endpoint of `path`, for `caller`.
async fn set_enabled(
    state: &ApiState,
    caller: &Caller,
    path: &WebhookPath,
    enabled: bool,
) -> Result<Json<WebhookItem>, ApiError> {
    let actor = operator(caller)?;
    let e = state
        .store
        .set_webhook_enabled(&actor, &path.webhook_id, enabled)
        .await?;
    Ok(Json(e.into()))
}
