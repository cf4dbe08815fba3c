//! The OpenAPI 3.1 document of `/api/v1`, served at `GET /api/v1/openapi.json`.
//!
//! Nothing in it is written by hand apart from prose: every operation comes from its
//! handler's `#[utoipa::path]`, every schema from the type the handler serialises (`ToSchema`
//! on the response bodies, `IntoParams` on the query structs the handlers deserialise), and
//! the router serves each handler at the path and method its annotation documents
//! ([`crate::api_v1_operations`]). `tests/openapi.rs` checks that the document and the router
//! list the same operations and that every answer matches its schema; CI also runs
//! `openapi-spec-validator` and `schemathesis` against the real server
//! (`tests/tests/openapi.rs` of the workspace).
use crate::admin;
use crate::error::ErrorBody;
use crate::{activity, directory, events, stats};
use axum::Json;
use std::collections::BTreeMap;
use std::sync::LazyLock;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Ref, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

/// The security scheme every authenticated operation names, with its scope.
pub const BEARER: &str = "bearer";

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "kitsync",
        version = env!("CARGO_PKG_VERSION"),
        description = "The directory, change feed, activity and statistics API of kitsync, \
                       and its administration (`/admin/v1`). \
                       Every operation but this document's takes `Authorization: Bearer \
                       kst_…` (`kitsync token create`) and names the scope it needs. Lists \
                       answer `{\"items\",\"nextCursor\"}` and take `cursor`/`limit`; every \
                       error body is `{\"code\",\"message\"}`.",
    ),
    paths(
        directory::tenants,
        directory::tenant,
        directory::departments,
        directory::members,
        directory::member,
        directory::member_changes,
        directory::apps,
        directory::authorizations,
        directory::groups,
        events::events,
        activity::post,
        stats::overview,
        stats::daily,
        stats::tenants,
        document,
        admin::plans::list,
        admin::plans::get,
        admin::plans::approve,
        admin::plans::reject,
        admin::dead_letters::list,
        admin::dead_letters::get,
        admin::dead_letters::replay,
        admin::dead_letters::replay_all,
        admin::webhooks::list,
        admin::webhooks::deliveries,
        admin::webhooks::retry,
        admin::webhooks::disable,
        admin::webhooks::enable,
        admin::tokens::list,
        admin::tokens::create,
        admin::tokens::revoke,
        admin::clients::list,
        admin::clients::create,
        admin::clients::remove,
        admin::audit::list,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerScheme),
    tags(
        (name = "directory", description = "Tenants, departments, members, apps and groups, \
                                            as the Kit callbacks built them (scope \
                                            `directory:read`)."),
        (name = "events", description = "The change feed (scope `directory:read`)."),
        (name = "activity", description = "Logins and uses of tenants' users (scope \
                                           `activity:write`)."),
        (name = "statistics", description = "Opened and active projects and users (scope \
                                             `stats:read`, a token bound to no tenant)."),
        (name = "documentation", description = "This document (no token)."),
        (name = "admin", description = "Operating kitsync: held plans, dead letters, webhook \
                                        endpoints, API tokens, OIDC clients and the audit log \
                                        of every change made to them (scope `admin`, a token \
                                        bound to no tenant)."),
    ),
)]
pub struct ApiDoc;

/// Adds the bearer scheme the operations' `security` names.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("kst_…")
                    .description(Some(
                        "An API token (`kitsync token create --scope …`). Its scopes: \
                         `directory:read`, `directory:write`, `activity:write`, `stats:read`, \
                         `admin` (all of them); `--tenant` binds it to one tenant. Each \
                         operation's security requirement names the scope it needs.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, built once.
static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);

/// An error answer: an [`ErrorBody`], and its headers.
fn error(description: &str, headers: &[(&str, &str)]) -> RefOr<Response> {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(ErrorBody::name())))
            .build(),
    );
    for (name, what) in headers {
        response = response.header(
            *name,
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .description(Some(*what))
                .build(),
        );
    }
    response.build().into()
}

fn responses(list: &[(&str, RefOr<Response>)]) -> BTreeMap<String, RefOr<Response>> {
    list.iter()
        .map(|(status, r)| ((*status).to_owned(), r.clone()))
        .collect()
}

fn bad_request() -> (&'static str, RefOr<Response>) {
    (
        "400",
        error(
            "`bad_request`: a parameter or the body is malformed or out of range (the message \
             names it first), or the path or query holds an encoded NUL (`%00`).",
            &[],
        ),
    )
}

fn unavailable() -> (&'static str, RefOr<Response>) {
    (
        "503",
        error(
            "`unavailable`: more requests at once than `api.max_concurrent_requests`, or this \
             one ran longer than `api.request_timeout_ms`. Retry.",
            &[("Retry-After", "`1`: seconds to wait before retrying.")],
        ),
    )
}

/// What any authenticated operation may answer besides its success: 400, 401, 403, 500, 503.
pub struct ReadErrors;

impl IntoResponses for ReadErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses(&[
            bad_request(),
            (
                "401",
                error(
                    "`unauthorized`: no token, or one that is unknown, malformed or revoked.",
                    &[("WWW-Authenticate", "`Bearer`")],
                ),
            ),
            (
                "403",
                error(
                    "`forbidden`: the token lacks the operation's scope, or is bound to another \
                     tenant (or, for statistics, to any tenant).",
                    &[],
                ),
            ),
            (
                "500",
                error(
                    "`internal`: the database failed (the cause is logged, not returned); \
                     nothing was written.",
                    &[],
                ),
            ),
            unavailable(),
        ])
    }
}

/// 404, for operations on one tenant.
pub struct NotFound;

impl IntoResponses for NotFound {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses(&[(
            "404",
            error(
                "`not_found`: the tenant is unknown or deleted, or a test tenant without \
                 `includeTest=true`; or the member or app named in the path is unknown.",
                &[],
            ),
        )])
    }
}

/// [`NotFound`] and [`ReadErrors`]: what an operation on one tenant may answer besides its
/// success.
pub struct TenantReadErrors;

impl IntoResponses for TenantReadErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut all = NotFound::responses();
        all.extend(ReadErrors::responses());
        all
    }
}

/// What an `/admin/v1` operation on one resource may answer besides its success: 404 and
/// 409, and [`ReadErrors`].
pub struct AdminErrors;

impl IntoResponses for AdminErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut all = responses(&[
            (
                "404",
                error(
                    "`not_found`: the plan, dead letter, endpoint, token or client named in \
                     the path is unknown (or, for dead letters, this process serves no queue).",
                    &[],
                ),
            ),
            (
                "409",
                error(
                    "`conflict`: its state refuses the change (a plan no longer held, a dead \
                     letter replayed already, a token revoked already, an endpoint disabled); \
                     nothing was changed.",
                    &[],
                ),
            ),
        ]);
        all.extend(ReadErrors::responses());
        all
    }
}

/// 408 and 413, for operations that read a body.
pub struct BodyErrors;

impl IntoResponses for BodyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses(&[
            (
                "408",
                error(
                    "`request_timeout`: the body did not arrive within \
                     `api.body_read_timeout_ms`.",
                    &[],
                ),
            ),
            (
                "413",
                error(
                    "`payload_too_large`: the body is (or declares itself) larger than \
                     `api.body_limit_bytes`; it is not read.",
                    &[],
                ),
            ),
        ])
    }
}

/// What the unauthenticated document route may answer besides 200: 400, 503.
pub struct PublicErrors;

impl IntoResponses for PublicErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses(&[bad_request(), unavailable()])
    }
}

/// `GET /api/v1/openapi.json`: this document. Public: it describes the API, not its data.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "getOpenApi",
    tag = "documentation",
    summary = "This OpenAPI 3.1 document",
    description = "No token needed.",
    responses(
        (status = 200, description = "The document.", body = Object),
        PublicErrors,
    ),
    security(()),
)]
pub async fn document() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(&DOCUMENT)
}
