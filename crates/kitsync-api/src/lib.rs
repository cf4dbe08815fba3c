//! The HTTP API the ISV's own apps and dashboards call (`/api/v1/…`, product.md §1), and the
//! dashboard page that reads it, as an axum router over [`kitsync_store::Store`].
//!
//! - [`auth`]: the bearer-token extractor ([`auth::Caller`]) and the scope/tenant checks:
//!   no or a bad token is 401, a token without the scope or bound to another tenant is 403.
//! - [`limits`]: `[api]` settings and the bounds on a request: no body is read before its
//!   caller is authenticated and authorised, every body has a size limit and a deadline,
//!   and load beyond the concurrency limit is answered 503 at once.
//! - [`error`]: the one mapping from failures to HTTP statuses and JSON error bodies
//!   `{"code","message"}`, where the message names the parameter at fault.
//! - [`page`]: cursor pagination (`?cursor=&limit=` → `{"items","nextCursor"}`).
//! - [`directory`]: the directory read endpoints.
//! - [`events`]: the change feed over the journal.
//! - [`activity`]: activity ingestion (`POST /api/v1/activity`).
//! - [`stats`]: the statistics (`/api/v1/stats/overview`, `daily`, `tenants`).
//! - [`dashboard`]: the HTML dashboard at `/dashboard` (one embedded page over [`stats`]).
//! - [`scim`]: SCIM 2.0 at `/scim/v2/{tenantId}/` (Users read-only, Groups CRUD).
//!
//! Handlers are thin: extract, call one store query, map the result.
#![forbid(unsafe_code)]

pub mod activity;
pub mod auth;
pub mod dashboard;
pub mod directory;
pub mod error;
pub mod events;
pub mod limits;
pub mod page;
pub mod scim;
pub mod stats;

pub use error::ApiError;
pub use limits::ApiSettings;

use axum::routing::{get, post};
use axum::Router;
use kitsync_store::Store;
use std::sync::Arc;

/// What every handler shares.
pub struct ApiState {
    pub store: Store,
    pub settings: ApiSettings,
    /// One permit per request being handled ([`limits::limit`]).
    slots: tokio::sync::Semaphore,
}

/// The `/api/v1` and `/scim/v2` routes, and `/dashboard`, with the default [`ApiSettings`].
pub fn router(store: Store) -> Router {
    router_with(store, ApiSettings::default())
}

/// The `/api/v1` and `/scim/v2` routes, and `/dashboard`.
pub fn router_with(store: Store, settings: ApiSettings) -> Router {
    let slots = tokio::sync::Semaphore::new(
        settings
            .max_concurrent_requests
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
    );
    let body_limit = settings.body_limit_bytes;
    let state = Arc::new(ApiState {
        store,
        settings,
        slots,
    });
    Router::new()
        .route("/api/v1/tenants", get(directory::tenants))
        .route("/api/v1/tenants/{tenant_id}", get(directory::tenant))
        .route(
            "/api/v1/tenants/{tenant_id}/departments",
            get(directory::departments),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/members",
            get(directory::members),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/members/{user_name}",
            get(directory::member),
        )
        .route("/api/v1/tenants/{tenant_id}/apps", get(directory::apps))
        .route(
            "/api/v1/tenants/{tenant_id}/apps/{app_id}/authorizations",
            get(directory::authorizations),
        )
        .route("/api/v1/tenants/{tenant_id}/groups", get(directory::groups))
        .route("/api/v1/events", get(events::events))
        .route("/api/v1/activity", post(activity::post))
        .route("/api/v1/stats/overview", get(stats::overview))
        .route("/api/v1/stats/daily", get(stats::daily))
        .route("/api/v1/stats/tenants", get(stats::tenants))
        .route("/dashboard", get(dashboard::page))
        .with_state(state.clone())
        .merge(scim::router(state.clone()))
        // Handlers read bodies themselves after authorising (`limits::read_body`); this limit
        // is the net under any extractor that reads one on its own.
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state, limits::limit))
}
