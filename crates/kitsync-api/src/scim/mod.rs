//! SCIM 2.0 (RFC 7643/7644) at `/scim/v2/{tenantId}/…`, one SCIM service provider per tenant.
//!
//! - Users are the tenant's listed members (some app authorises them), read-only: the
//!   marketplace owns them. `id` = `userName`; the mapping is README.md's (SCIM 2.0). A write is
//!   checked for syntax first (400 `invalidSyntax`/`invalidValue`), then refused with 400
//!   `mutability` (every User attribute is published `readOnly`); a DELETE gets 403.
//! - Groups are the derived per-app role groups (id `{appId}:{role}`, read-only like Users)
//!   and the ISV's own groups (full CRUD and PATCH, ETag `W/"{version}"`, `If-Match`).
//! - Discovery: `ServiceProviderConfig`, `ResourceTypes`, `Schemas` ([`schema`]).
//! - Lists: `filter` ([`filter`]; Users in SQL, Groups in memory), `startIndex`/`count`,
//!   `attributes`/`excludedAttributes`, by GET or `POST …/.search`; no sorting (announced).
//! - Every answer, errors included, is `application/scim+json`; errors carry `scimType`.
//!
//! Tokens: `directory:read` to read, `directory:write` to write groups; a tenant-bound token
//! sees only its tenant.
//!
//! Limits on ISV group writes, so that one request's work stays linear in its size and
//! bounded (the members are merged through a set, never by scanning the list per member):
//! [`MAX_GROUP_MEMBERS`] members per group, [`MAX_PATCH_OPERATIONS`] operations per PATCH,
//! [`MAX_STRING_CHARS`] characters for `displayName`, `externalId` and a member's `value`,
//! `type` and `display`, [`MAX_ID_CHARS`] for a group id in a path. A request over one is 400
//! `invalidValue` whose `detail` names the attribute and the limit. A write may still shrink a
//! group that is over the member limit (one stored before the limit existed).
pub mod error;
pub mod filter;
mod groups;
pub mod schema;
mod users;

use crate::auth::Caller;
use crate::extract::TenantPath;
use crate::{ApiError, ApiState};
use axum::extract::{FromRequestParts, Path, Query};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, MethodRouter};
use axum::Router;
use error::{ScimError, ScimType};
use kitsync_domain::Scope;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

pub(crate) type Shared = Arc<ApiState>;

/// Members of one ISV group, at most (counted after repeated `value`s are merged): a write
/// that would make a group larger is refused.
pub const MAX_GROUP_MEMBERS: usize = 10_000;
/// Operations in one PATCH request, at most.
pub const MAX_PATCH_OPERATIONS: usize = 1_000;
/// Characters of a group's `displayName` and `externalId`, and of a member's `value`, `type`
/// and `display`, at most.
pub const MAX_STRING_CHARS: usize = 256;
/// Characters of a group id in a path, at most.
pub const MAX_ID_CHARS: usize = 256;

/// The `/scim/v2/{tenantId}` routes.
pub fn router(state: Shared) -> Router {
    let discovery = |h: MethodRouter<Shared>| h.fallback(method_not_allowed);
    Router::new()
        .route(
            "/scim/v2/{tenant_id}/ServiceProviderConfig",
            discovery(get(service_provider_config)),
        )
        .route(
            "/scim/v2/{tenant_id}/ResourceTypes",
            discovery(get(resource_types)),
        )
        .route(
            "/scim/v2/{tenant_id}/ResourceTypes/{id}",
            discovery(get(resource_types)),
        )
        .route("/scim/v2/{tenant_id}/Schemas", discovery(get(schemas)))
        .route("/scim/v2/{tenant_id}/Schemas/{id}", discovery(get(schemas)))
        .merge(users::routes())
        .merge(groups::routes())
        .route("/scim/v2/{tenant_id}/.search", any(root_search))
        .route("/scim/v2/{tenant_id}/{*rest}", any(unknown_path))
        .with_state(state)
}

/// A resource type's routes: `/{name}` (`list` by GET, `create`), `/{name}/.search` (`list`
/// by POST) and `/{name}/{id}` (`one`), each 405 for any other method.
fn resource_routes<H, T>(
    name: &str,
    list: H,
    create: MethodRouter<Shared>,
    one: MethodRouter<Shared>,
) -> Router<Shared>
where
    H: Handler<T, Shared>,
    T: 'static,
{
    let path = format!("/scim/v2/{{tenant_id}}/{name}");
    Router::new()
        .route(&path, create.get(list.clone()).fallback(method_not_allowed))
        .route(
            &format!("{path}/.search"),
            post(list).fallback(method_not_allowed),
        )
        .route(&format!("{path}/{{id}}"), one.fallback(method_not_allowed))
}

pub(crate) const CONTENT_TYPE: &str = "application/scim+json";

/// A JSON body served as `application/scim+json`.
pub(crate) fn scim_json(body: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        body.to_string(),
    )
        .into_response()
}

/// A resource with its `ETag` (= `meta.version`) header.
pub(crate) fn resource_response(status: StatusCode, body: &Value) -> Response {
    let mut res = (status, scim_json(body)).into_response();
    if let Some(v) = body.pointer("/meta/version").and_then(Value::as_str) {
        if let Ok(h) = HeaderValue::from_str(v) {
            res.headers_mut().insert(header::ETAG, h);
        }
    }
    res
}

async fn method_not_allowed() -> ScimError {
    ScimError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        None,
        "this method is not allowed on this SCIM endpoint",
    )
}

async fn unknown_path(Path((_, rest)): Path<(String, String)>) -> ScimError {
    ScimError::not_found(format!(
        "no SCIM endpoint /{rest} (there are /Users, /Groups, /ServiceProviderConfig, \
         /ResourceTypes and /Schemas)"
    ))
}

async fn root_search() -> ScimError {
    ScimError::new(
        StatusCode::NOT_IMPLEMENTED,
        None,
        "search across resource types is not supported: use /Users/.search or /Groups/.search",
    )
}

/// The caller, allowed `scope` on `tenant`, and the tenant live (test tenants included: the
/// path names the tenant explicitly). Returns the tenant's SCIM base URL.
pub(crate) async fn admit(
    state: &ApiState,
    caller: Result<Caller, ApiError>,
    scope: Scope,
    tenant: &str,
    headers: &HeaderMap,
) -> Result<String, ScimError> {
    let caller = caller?;
    caller.require(scope, Some(tenant))?;
    if state.store.tenant(tenant).await?.is_none() {
        return Err(ScimError::not_found(format!("tenant {tenant} not found")));
    }
    Ok(base_url(headers, tenant))
}

/// The scope a SCIM handler needs, for [`Admitted`].
pub(crate) trait Access {
    const SCOPE: Scope;
}

/// `directory:read`: Users, Groups and the discovery documents, read.
pub(crate) struct Read;

/// `directory:write`: ISV groups, written.
pub(crate) struct Write;

impl Access for Read {
    const SCOPE: Scope = Scope::DirectoryRead;
}

impl Access for Write {
    const SCOPE: Scope = Scope::DirectoryWrite;
}

/// A SCIM request whose caller [`admit`] let in with `A`'s scope on the tenant of its path
/// (parameters `P`), before anything else of it is read.
pub(crate) struct Admitted<A, P = String> {
    pub state: Shared,
    pub path: P,
    pub headers: HeaderMap,
    /// The tenant's SCIM base URL.
    pub base: String,
    access: PhantomData<A>,
}

impl<A: Access, P: TenantPath> FromRequestParts<Shared> for Admitted<A, P> {
    /// axum's own answer to a path it cannot read, or the [`ScimError`] of [`admit`].
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Response> {
        let caller = Caller::from_request_parts(parts, state).await;
        let Path(path) = Path::<P>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let base = admit(state, caller, A::SCOPE, path.tenant(), &parts.headers)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Admitted {
            state: state.clone(),
            path,
            headers: parts.headers.clone(),
            base,
            access: PhantomData,
        })
    }
}

impl<A, P: TenantPath> Admitted<A, P> {
    /// The tenant of the path.
    pub(crate) fn tenant(&self) -> &str {
        self.path.tenant()
    }

    /// The request's body as JSON ([`read_json`]).
    pub(crate) async fn json(&self, body: axum::body::Body) -> Result<Value, ScimError> {
        read_json(&self.state, &self.headers, body).await
    }
}

/// `{scheme}://{host}/scim/v2/{tenant}`, from `X-Forwarded-Proto`/`X-Forwarded-Host` when a
/// proxy sets them, else `Host`.
fn base_url(headers: &HeaderMap, tenant: &str) -> String {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or(v).trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let scheme = get("x-forwarded-proto").unwrap_or_else(|| "http".into());
    let host = get("x-forwarded-host")
        .or_else(|| get("host"))
        .unwrap_or_else(|| "localhost".into());
    format!("{scheme}://{host}/scim/v2/{}", encode_segment(tenant))
}

/// Percent-encodes a path segment (RFC 3986 `pchar` stays as is).
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// RFC 3339 (UTC, milliseconds) of a Unix-ms time.
pub(crate) fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// A weak ETag over a representation: `W/"<64 bits of its SHA-256>"`.
pub(crate) fn content_etag(body: &Value) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(body.to_string().as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("W/\"{hex}\"")
}

/// Whether an `If-None-Match` header names `etag` (weak comparison), or is `*`.
pub(crate) fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    let Some(v) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    v.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag.trim_start_matches("W/"))
}

/// The resource or a 304 when `If-None-Match` names its ETag.
pub(crate) fn get_response(headers: &HeaderMap, body: &Value) -> Response {
    let etag = body.pointer("/meta/version").and_then(Value::as_str);
    if let Some(tag) = etag.filter(|t| not_modified(headers, t)) {
        let mut res = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(h) = HeaderValue::from_str(tag) {
            res.headers_mut().insert(header::ETAG, h);
        }
        return res;
    }
    resource_response(StatusCode::OK, body)
}

/// A JSON member that must be a string when given (`null` is not given): 400 `scim_type`
/// with `detail` when it is something else.
pub(crate) fn optional_str<'a>(
    v: Option<&'a Value>,
    scim_type: ScimType,
    detail: &str,
) -> Result<Option<&'a str>, ScimError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ScimError::bad(scim_type, detail)),
    }
}

/// The query or `.search` parameters of a list request.
#[derive(Debug, Default)]
pub(crate) struct ListParams {
    pub filter: Option<filter::Filter>,
    /// 1-based.
    pub start_index: u64,
    pub count: u64,
    pub projection: Projection,
}

impl ListParams {
    /// From `?filter=&startIndex=&count=&attributes=&excludedAttributes=` (names are matched
    /// case-insensitively). `sortBy`/`sortOrder` are ignored: sorting is announced as not
    /// supported and lists come in id order.
    pub(crate) fn from_query(q: &HashMap<String, String>) -> Result<ListParams, ScimError> {
        let get = |name: &str| {
            q.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let int = |name: &str| -> Result<Option<i64>, ScimError> {
            get(name)
                .map(|v| {
                    v.trim().parse::<i64>().map_err(|_| {
                        ScimError::bad(
                            ScimType::InvalidValue,
                            format!("{name} must be an integer, got `{v}`"),
                        )
                    })
                })
                .transpose()
        };
        let list = |name: &str| get(name).map(|v| v.split(',').map(str::to_owned).collect());
        Self::build(
            get("filter"),
            int("startIndex")?,
            int("count")?,
            list("attributes"),
            list("excludedAttributes"),
        )
    }

    /// From a `SearchRequest` body (RFC 7644 §3.4.3).
    pub(crate) fn from_search(body: &Value) -> Result<ListParams, ScimError> {
        let obj = body.as_object().ok_or_else(|| {
            ScimError::bad(ScimType::InvalidSyntax, "a SearchRequest must be an object")
        })?;
        let get = |name: &str| {
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        };
        let int = |name: &str| -> Result<Option<i64>, ScimError> {
            get(name)
                .map(|v| {
                    v.as_i64().ok_or_else(|| {
                        ScimError::bad(ScimType::InvalidValue, format!("{name} must be an integer"))
                    })
                })
                .transpose()
        };
        let list = |name: &str| -> Result<Option<Vec<String>>, ScimError> {
            match get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| {
                        v.as_str().map(str::to_owned).ok_or_else(|| {
                            ScimError::bad(
                                ScimType::InvalidValue,
                                format!("{name} must list strings"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Some(Value::String(s)) => Ok(Some(s.split(',').map(str::to_owned).collect())),
                Some(_) => Err(ScimError::bad(
                    ScimType::InvalidValue,
                    format!("{name} must be an array of attribute paths"),
                )),
            }
        };
        let filter = optional_str(
            get("filter"),
            ScimType::InvalidFilter,
            "filter must be a string",
        )?;
        Self::build(
            filter,
            int("startIndex")?,
            int("count")?,
            list("attributes")?,
            list("excludedAttributes")?,
        )
    }

    fn build(
        filter: Option<&str>,
        start_index: Option<i64>,
        count: Option<i64>,
        attributes: Option<Vec<String>>,
        excluded: Option<Vec<String>>,
    ) -> Result<ListParams, ScimError> {
        let filter = filter
            .filter(|f| !f.trim().is_empty())
            .map(|f| {
                filter::Filter::parse(f).map_err(|e| ScimError::bad(ScimType::InvalidFilter, e))
            })
            .transpose()?;
        Ok(ListParams {
            filter,
            // RFC 7644 §3.4.2.4: below 1 is read as 1; a negative count as 0.
            start_index: u64::try_from(start_index.unwrap_or(1).max(1)).unwrap_or(1),
            count: u64::try_from(count.unwrap_or(100).max(0))
                .unwrap_or(0)
                .min(schema::MAX_RESULTS),
            projection: Projection::new(attributes, excluded)?,
        })
    }
}

/// A list request: `GET` with query parameters, or `POST …/.search` with a `SearchRequest`
/// body; admitted with `directory:read` on the path's tenant.
pub(crate) struct Listing {
    pub state: Shared,
    pub base: String,
    pub tenant: String,
    pub params: ListParams,
}

impl axum::extract::FromRequest<Shared> for Listing {
    type Rejection = ScimError;

    async fn from_request(req: axum::extract::Request, state: &Shared) -> Result<Self, ScimError> {
        let (mut parts, body) = req.into_parts();
        let caller = Caller::from_request_parts(&mut parts, state).await;
        let Path(tenant) = Path::<String>::from_request_parts(&mut parts, state)
            .await
            .map_err(|e| ScimError::bad(ScimType::InvalidValue, e.body_text()))?;
        let base = admit(state, caller, Scope::DirectoryRead, &tenant, &parts.headers).await?;
        let params = if parts.method == axum::http::Method::POST {
            ListParams::from_search(&read_json(state, &parts.headers, body).await?)?
        } else {
            ListParams::from_query(&query_map(&mut parts, state).await?)?
        };
        Ok(Listing {
            state: state.clone(),
            base,
            tenant,
            params,
        })
    }
}

/// A `ListResponse` of already projected resources.
pub(crate) fn list_response(total: u64, start_index: u64, resources: Vec<Value>) -> Response {
    scim_json(&serde_json::json!({
        "schemas": [schema::LIST],
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    }))
}

/// `attributes` / `excludedAttributes` (RFC 7644 §3.9). `id` and `schemas` are always
/// returned; `meta` only without `attributes` or when asked for.
#[derive(Debug, Default, Clone)]
pub(crate) struct Projection {
    include: Option<Vec<filter::AttrPath>>,
    exclude: Vec<filter::AttrPath>,
}

impl Projection {
    pub(crate) fn new(
        attributes: Option<Vec<String>>,
        excluded: Option<Vec<String>>,
    ) -> Result<Projection, ScimError> {
        let parse = |list: Vec<String>| -> Result<Vec<filter::AttrPath>, ScimError> {
            list.iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(|s| {
                    filter::AttrPath::parse(s)
                        .map_err(|e| ScimError::bad(ScimType::InvalidValue, e))
                })
                .collect()
        };
        let include = attributes.map(parse).transpose()?.filter(|v| !v.is_empty());
        let exclude = excluded.map(parse).transpose()?.unwrap_or_default();
        Ok(Projection { include, exclude })
    }

    pub(crate) fn from_query(q: &HashMap<String, String>) -> Result<Projection, ScimError> {
        let list = |name: &str| {
            q.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.split(',').map(str::to_owned).collect())
        };
        Projection::new(list("attributes"), list("excludedAttributes"))
    }

    /// Applies the projection to a resource.
    pub(crate) fn apply(&self, resource: Value) -> Value {
        let Value::Object(obj) = resource else {
            return resource;
        };
        let mut out = Map::new();
        for (key, value) in obj {
            if key == "schemas" || key == "id" {
                out.insert(key, value);
                continue;
            }
            let kept = if key.starts_with("urn:") {
                self.extension(&key, value)
            } else {
                self.attribute(None, &key, value)
            };
            if let Some(v) = kept {
                out.insert(key, v);
            }
        }
        Value::Object(out)
    }

    /// Whether `p` names the attribute `key` (of the extension `ext`, or of the core schema).
    fn names(p: &filter::AttrPath, ext: Option<&str>, key: &str) -> bool {
        let uri_ok = match (&p.uri, ext) {
            (None, None) => true,
            (Some(u), None) => u.to_ascii_lowercase().contains(":core:"),
            (Some(u), Some(e)) => u.eq_ignore_ascii_case(e),
            (None, Some(_)) => false,
        };
        uri_ok && p.attr.eq_ignore_ascii_case(key)
    }

    fn attribute(&self, ext: Option<&str>, key: &str, value: Value) -> Option<Value> {
        let excluded: Vec<&filter::AttrPath> = self
            .exclude
            .iter()
            .filter(|p| Self::names(p, ext, key))
            .collect();
        if excluded.iter().any(|p| p.sub.is_none()) {
            return None;
        }
        let value = drop_subs(value, excluded.iter().filter_map(|p| p.sub.as_deref()));
        let Some(include) = &self.include else {
            return Some(value);
        };
        let wanted: Vec<&filter::AttrPath> = include
            .iter()
            .filter(|p| Self::names(p, ext, key))
            .collect();
        if wanted.is_empty() {
            return None;
        }
        if wanted.iter().any(|p| p.sub.is_none()) {
            return Some(value);
        }
        Some(keep_subs(
            value,
            wanted.iter().filter_map(|p| p.sub.as_deref()),
        ))
    }

    fn extension(&self, urn: &str, value: Value) -> Option<Value> {
        let whole = |p: &filter::AttrPath| {
            p.sub.is_none()
                && p.uri
                    .as_deref()
                    .is_some_and(|u| format!("{u}:{}", p.attr).eq_ignore_ascii_case(urn))
        };
        if self.exclude.iter().any(whole) {
            return None;
        }
        let included_whole = self.include.as_ref().is_some_and(|i| i.iter().any(whole));
        let Value::Object(obj) = value else {
            return Some(value);
        };
        let mut out = Map::new();
        for (k, v) in obj {
            let kept = if included_whole {
                Projection {
                    include: None,
                    exclude: self.exclude.clone(),
                }
                .attribute(Some(urn), &k, v)
            } else {
                self.attribute(Some(urn), &k, v)
            };
            if let Some(v) = kept {
                out.insert(k, v);
            }
        }
        (!out.is_empty()).then_some(Value::Object(out))
    }
}

/// `?attributes=&excludedAttributes=` of a request for one resource.
impl FromRequestParts<Shared> for Projection {
    type Rejection = ScimError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ScimError> {
        Projection::from_query(&query_map(parts, state).await?)
    }
}

/// Applies `f` to the object, or to each object of an array.
fn each_object(value: Value, f: &dyn Fn(Map<String, Value>) -> Map<String, Value>) -> Value {
    match value {
        Value::Object(o) => Value::Object(f(o)),
        Value::Array(a) => Value::Array(
            a.into_iter()
                .map(|v| match v {
                    Value::Object(o) => Value::Object(f(o)),
                    other => other,
                })
                .collect(),
        ),
        other => other,
    }
}

fn drop_subs<'a>(value: Value, subs: impl Iterator<Item = &'a str>) -> Value {
    let subs: Vec<&str> = subs.collect();
    if subs.is_empty() {
        return value;
    }
    each_object(value, &|mut o| {
        o.retain(|k, _| !subs.iter().any(|s| s.eq_ignore_ascii_case(k)));
        o
    })
}

fn keep_subs<'a>(value: Value, subs: impl Iterator<Item = &'a str>) -> Value {
    let subs: Vec<&str> = subs.collect();
    each_object(value, &|mut o| {
        o.retain(|k, _| subs.iter().any(|s| s.eq_ignore_ascii_case(k)));
        o
    })
}

/// Parses a request body as JSON (`application/scim+json` or `application/json`).
/// Reads a write's body (the caller already admitted: nothing is read before) and parses it.
pub(crate) async fn read_json(
    state: &ApiState,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Value, ScimError> {
    let bytes = crate::limits::read_body(headers, body, &state.settings)
        .await
        .map_err(ApiError::from)?;
    json_body(&bytes)
}

pub(crate) fn json_body(body: &[u8]) -> Result<Value, ScimError> {
    if body.is_empty() {
        return Err(ScimError::bad(
            ScimType::InvalidSyntax,
            "the request body is empty",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ScimError::bad(
            ScimType::InvalidSyntax,
            format!("the body is not JSON: {e}"),
        )
    })
}

async fn service_provider_config(req: Admitted<Read>) -> Result<Response, ScimError> {
    Ok(scim_json(&schema::service_provider_config(&req.base)))
}

/// `{tenant_id}`, and `{id}` for one discovery document.
#[derive(Deserialize)]
struct DiscoveryPath {
    tenant_id: String,
    id: Option<String>,
}

impl TenantPath for DiscoveryPath {
    fn tenant(&self) -> &str {
        &self.tenant_id
    }
}

/// A list of discovery documents, or the one whose `id` is `id` (404 naming `what`).
fn discovery_answer(docs: Vec<Value>, id: Option<&str>, what: &str) -> Result<Response, ScimError> {
    match id {
        None => Ok(list_response(docs.len() as u64, 1, docs)),
        Some(id) => docs
            .into_iter()
            .find(|d| d["id"] == id)
            .map(|d| scim_json(&d))
            .ok_or_else(|| ScimError::not_found(format!("no {what} {id}"))),
    }
}

/// `GET /ResourceTypes` and `GET /ResourceTypes/{id}`.
async fn resource_types(req: Admitted<Read, DiscoveryPath>) -> Result<Response, ScimError> {
    let id = req.path.id.as_deref();
    discovery_answer(
        schema::resource_types(&req.base),
        id,
        "resource type (User, Group)",
    )
}

/// `GET /Schemas` and `GET /Schemas/{id}`.
async fn schemas(req: Admitted<Read, DiscoveryPath>) -> Result<Response, ScimError> {
    discovery_answer(schema::schemas(&req.base), req.path.id.as_deref(), "schema")
}

/// The query string as a map (400 `invalidValue` when it is not one).
async fn query_map(
    parts: &mut Parts,
    state: &Shared,
) -> Result<HashMap<String, String>, ScimError> {
    let Query(q) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map_err(|e| ScimError::bad(ScimType::InvalidValue, e.body_text()))?;
    Ok(q)
}
