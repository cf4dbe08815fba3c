//! The HTTP API the ISV's own apps and dashboards call (`/api/v1/…`, README.md), and the
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
//! - [`openapi`]: the OpenAPI 3.1 document of `/api/v1` (`GET /api/v1/openapi.json`), derived
//!   from the handlers' annotations and types; the router serves exactly its operations
//!   ([`api_v1_operations`]).
//! - [`dashboard`]: the HTML dashboard at `/dashboard` (one embedded page over [`stats`]).
//! - [`console`]: the HTML console at `/console` (one embedded page over `/api/v1` and
//!   `/admin/v1`).
//! - [`admin`]: `/admin/v1`, operating kitsync (held plans, dead letters, webhook endpoints,
//!   tokens, OIDC clients, the audit log), scope `admin`; in the same document.
//! - [`scim`]: SCIM 2.0 at `/scim/v2/{tenantId}/` (Users read-only, Groups CRUD).
//!
//! Handlers are thin: extract, call one store query, map the result.
#![forbid(unsafe_code)]

pub mod activity;
pub mod admin;
pub mod auth;
pub mod console;
pub mod dashboard;
pub mod directory;
pub mod error;
pub mod events;
pub mod extract;
pub mod limits;
pub mod openapi;
pub mod page;
pub mod scim;
pub mod stats;

pub use error::ApiError;
pub use limits::ApiSettings;

use axum::handler::Handler;
use axum::routing::{get, MethodFilter, MethodRouter};
use axum::Router;
use kitsync_store::Store;
use std::sync::Arc;
use utoipa::openapi::path::HttpMethod;

/// What every handler shares.
pub struct ApiState {
    pub store: Store,
    pub settings: ApiSettings,
    /// The queue's dead letters, where this process has a queue (`/admin/v1/dead-letters`).
    pub dead_letters: Option<kitsync_queue::DeadLetters>,
    /// One permit per request being handled ([`limits::limit`]).
    slots: tokio::sync::Semaphore,
}

/// The `/api/v1`, `/admin/v1` and `/scim/v2` routes, and `/dashboard`, with the default
/// [`ApiSettings`] and no queue (the dead-letter operations answer 404).
pub fn router(store: Store) -> Router {
    router_with(store, ApiSettings::default(), None)
}

/// The `/api/v1`, `/admin/v1` and `/scim/v2` routes, and `/dashboard`; `dead_letters` serves
/// `/admin/v1/dead-letters` (`None`: 404).
pub fn router_with(
    store: Store,
    settings: ApiSettings,
    dead_letters: Option<kitsync_queue::DeadLetters>,
) -> Router {
    let slots = tokio::sync::Semaphore::new(
        settings
            .max_concurrent_requests
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
    );
    let body_limit = settings.body_limit_bytes;
    let state = Arc::new(ApiState {
        store,
        settings,
        dead_letters,
        slots,
    });
    // `/api/v1` only from `api_v1()`: a route there without a documented operation does not
    // compile, and one missing from the document fails tests/openapi.rs.
    let api = api_v1()
        .into_iter()
        .fold(Router::new(), |r, op| r.route(&op.path, op.route));
    api.route("/dashboard", get(dashboard::page))
        .route("/console", get(console::page))
        .with_state(state.clone())
        .merge(scim::router(state.clone()))
        // Handlers read bodies themselves after authorising (`limits::read_body`); this limit
        // is the net under any extractor that reads one on its own.
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state, limits::limit))
}

/// One `/api/v1` operation, served at the path and with the methods its `#[utoipa::path]`
/// documents.
struct Operation {
    methods: Vec<HttpMethod>,
    path: String,
    route: MethodRouter<Arc<ApiState>>,
}

/// `handler`, routed as its documented operation `P` (the `__path_…` type that
/// `#[utoipa::path]` generates beside it) says.
fn operation<P, H, T>(handler: H) -> Operation
where
    P: utoipa::Path,
    H: Handler<T, Arc<ApiState>>,
    T: 'static,
{
    let methods = P::methods();
    let route = methods.iter().fold(MethodRouter::new(), |route, m| {
        route.on(method_filter(m), handler.clone())
    });
    Operation {
        methods,
        path: P::path(),
        route,
    }
}

fn method_filter(m: &HttpMethod) -> MethodFilter {
    match m {
        HttpMethod::Get => MethodFilter::GET,
        HttpMethod::Post => MethodFilter::POST,
        HttpMethod::Put => MethodFilter::PUT,
        HttpMethod::Delete => MethodFilter::DELETE,
        HttpMethod::Options => MethodFilter::OPTIONS,
        HttpMethod::Head => MethodFilter::HEAD,
        HttpMethod::Patch => MethodFilter::PATCH,
        HttpMethod::Trace => MethodFilter::TRACE,
    }
}

/// The one list of `/api/v1` operations; [`openapi::ApiDoc`] must list the same handlers.
fn api_v1() -> Vec<Operation> {
    vec![
        operation::<directory::__path_tenants, _, _>(directory::tenants),
        operation::<directory::__path_tenant, _, _>(directory::tenant),
        operation::<directory::__path_departments, _, _>(directory::departments),
        operation::<directory::__path_members, _, _>(directory::members),
        operation::<directory::__path_member, _, _>(directory::member),
        operation::<directory::__path_member_changes, _, _>(directory::member_changes),
        operation::<directory::__path_apps, _, _>(directory::apps),
        operation::<directory::__path_authorizations, _, _>(directory::authorizations),
        operation::<directory::__path_groups, _, _>(directory::groups),
        operation::<events::__path_events, _, _>(events::events),
        operation::<activity::__path_post, _, _>(activity::post),
        operation::<stats::__path_overview, _, _>(stats::overview),
        operation::<stats::__path_daily, _, _>(stats::daily),
        operation::<stats::__path_tenants, _, _>(stats::tenants),
        operation::<openapi::__path_document, _, _>(openapi::document),
        operation::<admin::plans::__path_list, _, _>(admin::plans::list),
        operation::<admin::plans::__path_get, _, _>(admin::plans::get),
        operation::<admin::plans::__path_approve, _, _>(admin::plans::approve),
        operation::<admin::plans::__path_reject, _, _>(admin::plans::reject),
        operation::<admin::dead_letters::__path_list, _, _>(admin::dead_letters::list),
        operation::<admin::dead_letters::__path_get, _, _>(admin::dead_letters::get),
        operation::<admin::dead_letters::__path_replay, _, _>(admin::dead_letters::replay),
        operation::<admin::dead_letters::__path_replay_all, _, _>(admin::dead_letters::replay_all),
        operation::<admin::webhooks::__path_list, _, _>(admin::webhooks::list),
        operation::<admin::webhooks::__path_deliveries, _, _>(admin::webhooks::deliveries),
        operation::<admin::webhooks::__path_retry, _, _>(admin::webhooks::retry),
        operation::<admin::webhooks::__path_disable, _, _>(admin::webhooks::disable),
        operation::<admin::webhooks::__path_enable, _, _>(admin::webhooks::enable),
        operation::<admin::tokens::__path_list, _, _>(admin::tokens::list),
        operation::<admin::tokens::__path_create, _, _>(admin::tokens::create),
        operation::<admin::tokens::__path_revoke, _, _>(admin::tokens::revoke),
        operation::<admin::clients::__path_list, _, _>(admin::clients::list),
        operation::<admin::clients::__path_create, _, _>(admin::clients::create),
        operation::<admin::clients::__path_remove, _, _>(admin::clients::remove),
        operation::<admin::audit::__path_list, _, _>(admin::audit::list),
    ]
}

/// Every `/api/v1` operation the router serves, as (method in capitals, path template):
/// `("GET", "/api/v1/tenants/{tenantId}")`.
#[must_use]
pub fn api_v1_operations() -> Vec<(String, String)> {
    api_v1()
        .into_iter()
        .flat_map(|op| {
            let path = op.path;
            op.methods
                .into_iter()
                .map(move |m| (method_filter_name(&m).to_owned(), path.clone()))
        })
        .collect()
}

fn method_filter_name(m: &HttpMethod) -> &'static str {
    match m {
        HttpMethod::Get => "GET",
        HttpMethod::Post => "POST",
        HttpMethod::Put => "PUT",
        HttpMethod::Delete => "DELETE",
        HttpMethod::Options => "OPTIONS",
        HttpMethod::Head => "HEAD",
        HttpMethod::Patch => "PATCH",
        HttpMethod::Trace => "TRACE",
    }
}
