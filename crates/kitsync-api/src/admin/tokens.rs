//! API tokens: list (never their secrets), create (the secret in that answer only), revoke.
use super::{by_key, operator, time};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::page::{Page, PageQuery};
use crate::ApiState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use kitsync_domain::Scope;
use kitsync_store::ApiToken;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

const KIND: &str = "token";
/// Longest token name.
const MAX_NAME_CHARS: usize = 100;
/// Longest `tenantId` (the Kit's own limit).
const MAX_TENANT_CHARS: usize = 64;

/// An API token, without its secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenItem {
    /// The 12 hex digits after `kst_`.
    id: String,
    name: String,
    /// `directory:read`, `directory:write`, `activity:write`, `stats:read`, `admin`.
    scopes: Vec<String>,
    /// The only tenant it may see; `null`: every tenant.
    #[schema(required = true)]
    tenant_id: Option<String>,
    created_at: String,
    #[schema(required = true)]
    revoked_at: Option<String>,
    #[schema(required = true)]
    last_used_at: Option<String>,
}

impl From<ApiToken> for TokenItem {
    fn from(t: ApiToken) -> Self {
        TokenItem {
            id: t.id,
            name: t.name,
            scopes: t.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            tenant_id: t.tenant_id,
            created_at: time(t.created_at),
            revoked_at: t.revoked_at.map(time),
            last_used_at: t.last_used_at.map(time),
        }
    }
}

/// A token to issue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewToken {
    /// What it is for (1–100 characters).
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// At least one scope.
    #[schema(min_items = 1, value_type = Vec<ScopeName>)]
    scopes: Vec<String>,
    /// Bind it to one tenant (1–64 characters); absent: every tenant.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    tenant_id: Option<String>,
}

/// A scope a token may hold (`admin`: all of them).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documentation only: the scopes are parsed by `Scope::parse_list`
pub enum ScopeName {
    #[schema(rename = "directory:read")]
    DirectoryRead,
    #[schema(rename = "directory:write")]
    DirectoryWrite,
    #[schema(rename = "activity:write")]
    ActivityWrite,
    #[schema(rename = "stats:read")]
    StatsRead,
    #[schema(rename = "admin")]
    Admin,
}

/// A new token, with its secret: shown in this answer only (kitsync keeps only its hash).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedToken {
    token: TokenItem,
    /// `kst_…`: what the caller sends as `Authorization: Bearer`.
    secret: String,
}

/// The `{tokenId}` of a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TokenPath {
    /// The token's id (the 12 hex digits after `kst_`).
    #[param(rename = "tokenId")]
    #[serde(rename = "tokenId")]
    token_id: String,
}

/// A one-line text field of a body: trimmed, 1–`max` characters, no control characters.
pub(crate) fn text_field(v: &str, field: &str, max: usize) -> Result<String, ApiError> {
    let t = v.trim();
    if t.is_empty() || t.chars().count() > max {
        return Err(ApiError::bad_param(
            field,
            format!("must be 1–{max} characters"),
        ));
    }
    if t.chars().any(char::is_control) {
        return Err(ApiError::bad_param(
            field,
            "must not hold control characters",
        ));
    }
    Ok(t.to_owned())
}

/// `GET /admin/v1/tokens`.
///
/// # Errors
/// 401/403 per [`operator`]; 400 for a bad cursor or limit.
#[utoipa::path(
    get,
    path = "/admin/v1/tokens",
    operation_id = "adminListTokens",
    tag = "admin",
    summary = "API tokens, by id, revoked ones included (never their secrets)",
    description = "Scope `admin`, a token bound to no tenant.",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of tokens.", body = Page<TokenItem>),
        crate::openapi::ReadErrors,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<TokenItem>>, ApiError> {
    operator(&caller)?;
    let all: Vec<TokenItem> = state
        .store
        .list_tokens()
        .await?
        .into_iter()
        .map(TokenItem::from)
        .collect();
    Ok(Json(by_key(all, &page, KIND, |t| &t.id)?))
}

/// `POST /admin/v1/tokens`.
///
/// # Errors
/// 401/403 per [`operator`] (before the body is read); 400 naming the field at fault;
/// 408/413 for a slow or large body.
#[utoipa::path(
    post,
    path = "/admin/v1/tokens",
    operation_id = "adminCreateToken",
    tag = "admin",
    summary = "Issue an API token; its secret is in this answer only",
    description = "Scope `admin`, a token bound to no tenant. Audited (without the secret).",
    request_body(content = NewToken, content_type = "application/json"),
    responses(
        (status = 201, description = "Issued.", body = CreatedToken),
        crate::openapi::BodyErrors,
        crate::openapi::AdminErrors,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn create(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let actor = operator(&caller)?;
    let body = crate::limits::read_body(&headers, body, &state.settings).await?;
    let new: NewToken = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_param("body", format!("not a token to issue: {e}")))?;
    let name = text_field(&new.name, "name", MAX_NAME_CHARS)?;
    if new.scopes.is_empty() {
        return Err(ApiError::bad_param(
            "scopes",
            "at least one scope is needed",
        ));
    }
    let scopes = Scope::parse_list(&new.scopes.join(","))
        .map_err(|e| ApiError::bad_param("scopes", e.problem))?;
    let tenant = new
        .tenant_id
        .as_deref()
        .map(|t| text_field(t, "tenantId", MAX_TENANT_CHARS))
        .transpose()?;
    let (token, secret) = state
        .store
        .create_token(&actor, &name, &scopes, tenant.as_deref())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: token.into(),
            secret: secrecy::ExposeSecret::expose_secret(&secret).to_owned(),
        }),
    ))
}

/// `POST /admin/v1/tokens/{tokenId}/revoke`.
///
/// # Errors
/// 401/403 per [`operator`]; 404 for an unknown token; 409 when it was revoked already.
#[utoipa::path(
    post,
    path = "/admin/v1/tokens/{tokenId}/revoke",
    operation_id = "adminRevokeToken",
    tag = "admin",
    summary = "Revoke an API token (at once, for every request after this one)",
    description = "Scope `admin`, a token bound to no tenant. A token may revoke itself. \
                   Audited.",
    params(TokenPath),
    responses(
        (status = 200, description = "The token, revoked.", body = TokenItem),
        crate::openapi::AdminErrors,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn revoke(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(path): Path<TokenPath>,
) -> Result<Json<TokenItem>, ApiError> {
    let actor = operator(&caller)?;
    state.store.revoke_token(&actor, &path.token_id).await?;
    let token = state
        .store
        .list_tokens()
        .await?
        .into_iter()
        .find(|t| t.id == path.token_id)
        .ok_or_else(|| ApiError::NotFound(format!("token {} not found", path.token_id)))?;
    Ok(Json(token.into()))
}
