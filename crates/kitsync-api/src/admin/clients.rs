//! OpenID Connect clients (the ISV's apps that log users in through kitsync): list, add (a
//! confidential client's secret in that answer only), remove.
use super::tokens::text_field;
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
use kitsync_login::clients::{self, Client, NewClient};
use kitsync_login::LoginError;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

const KIND: &str = "client";

/// An app that logs its users in through kitsync, without its secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientItem {
    /// `kc_…`.
    client_id: String,
    name: String,
    /// The Kit app whose users it admits and whose credentials the Kit login uses.
    app_id: String,
    /// A public client (no secret; PKCE required).
    public: bool,
    redirect_uris: Vec<String>,
    post_logout_redirect_uris: Vec<String>,
    created_at: String,
}

impl From<Client> for ClientItem {
    fn from(c: Client) -> Self {
        ClientItem {
            public: c.secret_hash.is_none(),
            client_id: c.client_id,
            name: c.name,
            app_id: c.app_id,
            redirect_uris: c.redirect_uris,
            post_logout_redirect_uris: c.post_logout_redirect_uris,
            created_at: time(c.created_at),
        }
    }
}

/// A client to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewClientBody {
    /// The Kit `appId` (1–64 characters).
    #[schema(min_length = 1, max_length = 64)]
    app_id: String,
    /// For people (default: the app id).
    #[serde(default)]
    name: Option<String>,
    /// Where kitsync may send the browser back with a code, compared exactly: `https`, or
    /// `http` to localhost / 127.0.0.1 / `[::1]`; no fragment.
    #[schema(min_items = 1)]
    redirect_uris: Vec<String>,
    /// Where `/oidc/logout` may send the browser afterwards.
    #[serde(default)]
    post_logout_redirect_uris: Vec<String>,
    /// A public client (single-page or native app): no secret, PKCE required.
    #[serde(default)]
    public: bool,
}

/// A new client; a confidential client's secret is in this answer only.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedClient {
    client: ClientItem,
    /// `kcs_…`; `null` for a public client.
    #[schema(required = true)]
    client_secret: Option<String>,
}

/// The `{clientId}` of a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ClientPath {
    /// The client's id (`kc_…`).
    #[param(rename = "clientId")]
    #[serde(rename = "clientId")]
    client_id: String,
}

fn login_error(e: LoginError) -> ApiError {
    match e {
        LoginError::Invalid(why) => ApiError::bad_param("body", why),
        other => ApiError::Internal(other.to_string()),
    }
}

/// `GET /admin/v1/oidc-clients`.
///
/// # Errors
/// 401/403 per [`operator`]; 400 for a bad cursor or limit.
#[utoipa::path(
    get,
    path = "/admin/v1/oidc-clients",
    operation_id = "adminListOidcClients",
    tag = "admin",
    summary = "OpenID Connect clients, by client id (never their secrets)",
    description = "Scope `admin`, a token bound to no tenant.",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of clients.", body = Page<ClientItem>),
        crate::openapi::ReadErrors,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<ClientItem>>, ApiError> {
    operator(&caller)?;
    let all: Vec<ClientItem> = clients::list(state.store.db())
        .await
        .map_err(login_error)?
        .into_iter()
        .map(ClientItem::from)
        .collect();
    Ok(Json(by_key(all, &page, KIND, |c| &c.client_id)?))
}

/// `POST /admin/v1/oidc-clients`.
///
/// # Errors
/// 401/403 per [`operator`] (before the body is read); 400 naming the field at fault;
/// 408/413 for a slow or large body.
#[utoipa::path(
    post,
    path = "/admin/v1/oidc-clients",
    operation_id = "adminCreateOidcClient",
    tag = "admin",
    summary = "Register an app as an OpenID Connect client",
    description = "Scope `admin`, a token bound to no tenant. A confidential client's secret \
                   is in this answer only. Audited (without the secret).",
    request_body(content = NewClientBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered.", body = CreatedClient),
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
) -> Result<(StatusCode, Json<CreatedClient>), ApiError> {
    let actor = operator(&caller)?;
    let body = crate::limits::read_body(&headers, body, &state.settings).await?;
    let new: NewClientBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_param("body", format!("not a client to register: {e}")))?;
    let app_id = text_field(&new.app_id, "appId", 64)?;
    let name = new
        .name
        .as_deref()
        .map(|n| text_field(n, "name", 100))
        .transpose()?
        .unwrap_or_default();
    if new.redirect_uris.is_empty() {
        return Err(ApiError::bad_param(
            "redirectUris",
            "at least one redirect URI is needed",
        ));
    }
    for (field, list) in [
        ("redirectUris", &new.redirect_uris),
        ("postLogoutRedirectUris", &new.post_logout_redirect_uris),
    ] {
        for (i, u) in list.iter().enumerate() {
            clients::check_redirect_uri(u)
                .map_err(|why| ApiError::bad_param(&format!("{field}[{i}]"), why))?;
        }
    }
    let registration = NewClient {
        name,
        app_id,
        redirect_uris: new.redirect_uris,
        post_logout_redirect_uris: new.post_logout_redirect_uris,
        public: new.public,
    };
    let (client, secret) = clients::register(state.store.db(), &actor, &registration)
        .await
        .map_err(login_error)?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedClient {
            client: client.into(),
            client_secret: secret
                .as_ref()
                .map(|s| secrecy::ExposeSecret::expose_secret(s).to_owned()),
        }),
    ))
}

/// `DELETE /admin/v1/oidc-clients/{clientId}`.
///
/// # Errors
/// 401/403 per [`operator`]; 404 for an unknown client.
#[utoipa::path(
    delete,
    path = "/admin/v1/oidc-clients/{clientId}",
    operation_id = "adminDeleteOidcClient",
    tag = "admin",
    summary = "Unregister a client and end its sessions",
    description = "Scope `admin`, a token bound to no tenant. Audited.",
    params(ClientPath),
    responses(
        (status = 204, description = "Removed."),
        crate::openapi::AdminErrors,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn remove(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(path): Path<ClientPath>,
) -> Result<StatusCode, ApiError> {
    let actor = operator(&caller)?;
    if clients::remove(state.store.db(), &actor, &path.client_id)
        .await
        .map_err(login_error)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "OIDC client {} not found",
            path.client_id
        )))
    }
}
