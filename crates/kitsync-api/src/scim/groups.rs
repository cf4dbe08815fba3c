//! SCIM Groups: the per-app role groups (derived from the authorisations, read-only, id
//! `{appId}:{role}`) and the ISV's own groups (full CRUD, PATCH, ETag `W/"{version}"`).
//!
//! Members come back exactly as written (`value`, and `$ref`/`type` when a `type` was given),
//! in the order written, with no server-added `display`: SCIM clients compare what they
//! wrote with what they read.
//!
//! A write is built in a [`Draft`], whose members are indexed by `value`: merging a repeated
//! member, adding one or removing `members[value eq "…"]` costs the same whatever the group's
//! size, so a request's work is linear in its size. The limits (`super::MAX_*`, documented in
//! `scim/mod.rs`) are checked as the request is read.
use super::error::{ScimError, ScimType};
use super::filter::{AttrPath, Filter};
use super::schema::{group_case_exact, GROUP, PATCH_OP};
use super::{encode_segment, optional_str, Admitted, Listing, Projection, Read, Shared, Write};
use super::{MAX_GROUP_MEMBERS, MAX_ID_CHARS, MAX_PATCH_OPERATIONS, MAX_STRING_CHARS};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing;
use axum::Router;
use kitsync_store::{DerivedGroup, GroupMember, GroupWrite, GroupWriteError, IsvGroup};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

fn member_json(base: &str, m: &GroupMember) -> Value {
    match m.kind.as_deref() {
        Some(kind) => {
            let endpoint = if kind.eq_ignore_ascii_case("group") {
                "Groups"
            } else {
                "Users"
            };
            json!({
                "value": m.value,
                "$ref": format!("{base}/{endpoint}/{}", encode_segment(&m.value)),
                "type": kind,
            })
        }
        None => json!({ "value": m.value }),
    }
}

fn location(base: &str, id: &str) -> String {
    format!("{base}/Groups/{}", encode_segment(id))
}

pub(crate) fn isv_json(base: &str, g: &IsvGroup) -> Value {
    let mut o = Map::new();
    o.insert("schemas".into(), json!([GROUP]));
    o.insert("id".into(), json!(g.group_id));
    if let Some(e) = &g.external_id {
        o.insert("externalId".into(), json!(e));
    }
    o.insert("displayName".into(), json!(g.display_name));
    o.insert(
        "members".into(),
        Value::Array(g.members.iter().map(|m| member_json(base, m)).collect()),
    );
    let mut meta = json!({
        "resourceType": "Group",
        "location": location(base, &g.group_id),
        "version": format!("W/\"{}\"", g.version),
    });
    if let Some(t) = super::rfc3339(g.created_at) {
        meta["created"] = json!(t);
    }
    if let Some(t) = super::rfc3339(g.updated_at) {
        meta["lastModified"] = json!(t);
    }
    o.insert("meta".into(), meta);
    Value::Object(o)
}

pub(crate) fn derived_json(base: &str, g: &DerivedGroup) -> Value {
    let mut o = Map::new();
    o.insert("schemas".into(), json!([GROUP]));
    o.insert("id".into(), json!(g.group_id));
    o.insert("displayName".into(), json!(g.display_name));
    o.insert(
        "members".into(),
        Value::Array(
            g.members
                .iter()
                .map(|u| {
                    json!({
                        "value": u,
                        "$ref": format!("{base}/Users/{}", encode_segment(u)),
                        "type": "User",
                    })
                })
                .collect(),
        ),
    );
    let etag = super::content_etag(&Value::Object(o.clone()));
    o.insert(
        "meta".into(),
        json!({
            "resourceType": "Group",
            "location": location(base, &g.group_id),
            "version": etag,
        }),
    );
    Value::Object(o)
}

/// Every group of the tenant (role groups and ISV groups), by id.
async fn all(state: &Shared, base: &str, tenant: &str) -> Result<Vec<Value>, ScimError> {
    let mut out: Vec<(String, Value)> = state
        .store
        .derived_groups(tenant)
        .await?
        .iter()
        .map(|g| (g.group_id.clone(), derived_json(base, g)))
        .collect();
    out.extend(
        state
            .store
            .isv_groups(tenant)
            .await?
            .iter()
            .map(|g| (g.group_id.clone(), isv_json(base, g))),
    );
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

/// `/Groups`, `/Groups/.search` and `/Groups/{id}`.
pub(crate) fn routes() -> Router<Shared> {
    let one = routing::get(get).put(replace).patch(patch).delete(delete);
    super::resource_routes("Groups", list, routing::post(create), one)
}

/// `GET /Groups` and `POST /Groups/.search`.
pub(crate) async fn list(l: Listing) -> Result<Response, ScimError> {
    let params = l.params;
    let matching: Vec<Value> = all(&l.state, &l.base, &l.tenant)
        .await?
        .into_iter()
        .filter(|g| {
            params
                .filter
                .as_ref()
                .is_none_or(|f| f.matches(g, &group_case_exact))
        })
        .collect();
    let total = matching.len() as u64;
    let resources = matching
        .into_iter()
        .skip(usize::try_from(params.start_index - 1).unwrap_or(usize::MAX))
        .take(usize::try_from(params.count).unwrap_or(usize::MAX))
        .map(|g| params.projection.apply(g))
        .collect();
    Ok(super::list_response(total, params.start_index, resources))
}

/// One group, ISV or derived.
enum Found {
    Isv(IsvGroup),
    Derived(DerivedGroup),
}

async fn find(state: &Shared, tenant: &str, id: &str) -> Result<Found, ScimError> {
    check_path_id(id)?;
    if let Some(g) = state.store.isv_group(tenant, id).await? {
        return Ok(Found::Isv(g));
    }
    if id.contains(':') {
        if let Some(g) = state
            .store
            .derived_groups(tenant)
            .await?
            .into_iter()
            .find(|g| g.group_id == id)
        {
            return Ok(Found::Derived(g));
        }
    }
    Err(ScimError::not_found(format!("Group {id} not found")))
}

/// `GET /Groups/{id}`.
pub(crate) async fn get(
    req: Admitted<Read, (String, String)>,
    projection: Projection,
) -> Result<Response, ScimError> {
    let (tenant, id) = &req.path;
    let full = match find(&req.state, tenant, id).await? {
        Found::Isv(g) => isv_json(&req.base, &g),
        Found::Derived(g) => derived_json(&req.base, &g),
    };
    if super::not_modified(
        &req.headers,
        full["meta"]["version"].as_str().unwrap_or_default(),
    ) {
        return Ok(super::get_response(&req.headers, &full));
    }
    let shown = projection.apply(full.clone());
    let mut res = super::resource_response(StatusCode::OK, &full);
    *res.body_mut() = axum::body::Body::from(shown.to_string());
    Ok(res)
}

/// A group id from a path: at most [`MAX_ID_CHARS`] characters (400 beyond), and 404 when it
/// holds U+0000, which no stored id can (PostgreSQL text cannot, and asking would be a 500).
fn check_path_id(id: &str) -> Result<(), ScimError> {
    at_most("id", id, MAX_ID_CHARS)?;
    if id.contains('\0') {
        return Err(ScimError::not_found(
            "Group not found (its id holds U+0000)",
        ));
    }
    Ok(())
}

/// A string attribute as stored: at most [`MAX_STRING_CHARS`] characters, and no U+0000
/// (PostgreSQL text cannot hold it, and the write would fail as a 500).
fn bounded(what: &str, s: &str) -> Result<(), ScimError> {
    at_most(what, s, MAX_STRING_CHARS)?;
    if s.contains('\0') {
        return Err(ScimError::bad(
            ScimType::InvalidValue,
            format!("{what}: must not contain U+0000"),
        ));
    }
    Ok(())
}

/// 400 naming `what` when `s` is longer than `max` characters.
fn at_most(what: &str, s: &str, max: usize) -> Result<(), ScimError> {
    // A string has no more characters than bytes: most are decided without counting.
    if s.len() > max {
        let n = s.chars().count();
        if n > max {
            return Err(ScimError::bad(
                ScimType::InvalidValue,
                format!("{what}: {n} characters, at most {max} allowed"),
            ));
        }
    }
    Ok(())
}

/// A group's state while a request is applied to it. Members keep their order in `slots`
/// (a removed one leaves `None` behind) and are found by `value` through `index`, so adding,
/// merging a repeat and removing by value never scan the list.
struct Draft {
    display_name: String,
    external_id: Option<String>,
    slots: Vec<Option<GroupMember>>,
    /// `value` → its place in `slots`, for every member present.
    index: HashMap<String, usize>,
}

impl Draft {
    fn new(display_name: String, external_id: Option<String>) -> Draft {
        Draft {
            display_name,
            external_id,
            slots: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn from_group(g: &IsvGroup) -> Draft {
        let mut d = Draft::new(g.display_name.clone(), g.external_id.clone());
        d.slots.reserve(g.members.len());
        for m in &g.members {
            d.push(m.clone());
        }
        d
    }

    /// Appends `m` unless a member with its `value` is there (the first keeps its place).
    fn push(&mut self, m: GroupMember) {
        if !self.index.contains_key(&m.value) {
            self.index.insert(m.value.clone(), self.slots.len());
            self.slots.push(Some(m));
        }
    }

    /// Like [`Draft::push`], refused when the group would exceed [`MAX_GROUP_MEMBERS`].
    fn add(&mut self, m: GroupMember) -> Result<(), ScimError> {
        if self.index.len() >= MAX_GROUP_MEMBERS && !self.index.contains_key(&m.value) {
            return Err(ScimError::bad(
                ScimType::InvalidValue,
                format!("members: a group has at most {MAX_GROUP_MEMBERS} members"),
            ));
        }
        self.push(m);
        Ok(())
    }

    fn remove_value(&mut self, value: &str) {
        if let Some(i) = self.index.remove(value) {
            if let Some(slot) = self.slots.get_mut(i) {
                *slot = None;
            }
        }
    }

    /// Removes the members `f` selects; `members[value eq "…"]`, what IdPs send to remove
    /// one member, is a lookup rather than an evaluation per member.
    fn remove_where(&mut self, f: &Filter) {
        if let Some(value) = value_eq(f) {
            self.remove_value(value);
            return;
        }
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|m| member_matches(f, m)) {
                if let Some(m) = slot.take() {
                    self.index.remove(&m.value);
                }
            }
        }
    }

    fn clear(&mut self) {
        self.slots.clear();
        self.index.clear();
    }

    fn into_write(self) -> GroupWrite {
        GroupWrite {
            display_name: self.display_name,
            external_id: self.external_id,
            members: self.slots.into_iter().flatten().collect(),
        }
    }
}

/// Whether the member filter `f` selects `m`.
fn member_matches(f: &Filter, m: &GroupMember) -> bool {
    let v = json!({ "value": m.value, "type": m.kind });
    f.matches(&v, &|k| k == "value")
}

/// The `"…"` of a member filter `value eq "…"` (member values compare exactly, as in
/// [`member_matches`]).
fn value_eq(f: &Filter) -> Option<&str> {
    match f {
        Filter::Compare(p, super::filter::Op::Eq, super::filter::CompValue::Str(s))
            if p.uri.is_none() && p.sub.is_none() && p.attr.eq_ignore_ascii_case("value") =>
        {
            Some(s)
        }
        _ => None,
    }
}

/// The group's new state from a POST or PUT body.
fn group_write(body: &Value) -> Result<GroupWrite, ScimError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ScimError::bad(ScimType::InvalidSyntax, "a Group must be a JSON object"))?;
    let schemas: Vec<&str> = obj
        .get("schemas")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !schemas.iter().any(|s| s.eq_ignore_ascii_case(GROUP)) {
        return Err(ScimError::bad(
            ScimType::InvalidSyntax,
            format!("`schemas` must include {GROUP}"),
        ));
    }
    let get = |name: &str| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    let display_name = match get("displayName") {
        Some(Value::String(s)) if !s.trim().is_empty() => {
            bounded("displayName", s)?;
            s.clone()
        }
        _ => {
            return Err(ScimError::bad(
                ScimType::InvalidValue,
                "displayName is required (a non-empty string)",
            ))
        }
    };
    let mut w = Draft::new(display_name, external_id(get("externalId"))?);
    if let Some(m) = get("members") {
        add_members(&mut w, m)?;
    }
    Ok(w.into_write())
}

fn external_id(v: Option<&Value>) -> Result<Option<String>, ScimError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            bounded("externalId", s)?;
            Ok(Some(s.clone()))
        }
        Some(_) => Err(ScimError::bad(
            ScimType::InvalidValue,
            "externalId must be a string",
        )),
    }
}

/// Parses members (an array, or one member object) and appends those not already there.
fn add_members(w: &mut Draft, v: &Value) -> Result<(), ScimError> {
    for m in parse_members(v)? {
        w.add(m)?;
    }
    Ok(())
}

fn parse_members(v: &Value) -> Result<Vec<GroupMember>, ScimError> {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![v],
        Value::Null => Vec::new(),
        _ => {
            return Err(ScimError::bad(
                ScimType::InvalidValue,
                "members must be an array of {\"value\": …} objects",
            ))
        }
    };
    items
        .into_iter()
        .map(|item| {
            let value = item
                .get("value")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    ScimError::bad(
                        ScimType::InvalidValue,
                        "every member needs a non-empty string `value`",
                    )
                })?;
            bounded("members.value", value)?;
            for (name, what) in [("type", "members.type"), ("display", "members.display")] {
                if let Some(Value::String(s)) = item.get(name) {
                    bounded(what, s)?;
                }
            }
            let kind = match item.get("type") {
                None | Some(Value::Null) => None,
                Some(Value::String(t))
                    if t.eq_ignore_ascii_case("user") || t.eq_ignore_ascii_case("group") =>
                {
                    Some(t.clone())
                }
                Some(other) => {
                    return Err(ScimError::bad(
                        ScimType::InvalidValue,
                        format!("a member's type is \"User\" or \"Group\", not {other}"),
                    ))
                }
            };
            Ok(GroupMember {
                value: value.to_owned(),
                kind,
            })
        })
        .collect()
}

/// `If-Match`: `None` when absent or `*`; a version that cannot match when it is not ours.
fn if_match(headers: &HeaderMap) -> Option<i64> {
    let v = headers.get(header::IF_MATCH)?.to_str().ok()?.trim();
    if v == "*" {
        return None;
    }
    let tag = v.split(',').next().unwrap_or(v).trim();
    Some(
        tag.trim_start_matches("W/")
            .trim_matches('"')
            .parse::<i64>()
            .unwrap_or(-1),
    )
}

fn created(base: &str, g: &IsvGroup) -> Response {
    let body = isv_json(base, g);
    let mut res = super::resource_response(StatusCode::CREATED, &body);
    if let Ok(h) = HeaderValue::from_str(&location(base, &g.group_id)) {
        res.headers_mut().insert(header::LOCATION, h);
    }
    res
}

/// `POST /Groups`.
pub(crate) async fn create(req: Admitted<Write>, body: Body) -> Result<Response, ScimError> {
    let w = group_write(&req.json(body).await?)?;
    let id = uuid::Uuid::new_v4().to_string();
    let g = req.state.store.create_group(req.tenant(), &id, &w).await?;
    Ok(created(&req.base, &g))
}

/// The ISV group `id`, or the proper refusal for a role group.
async fn writable(state: &Shared, tenant: &str, id: &str) -> Result<IsvGroup, ScimError> {
    match find(state, tenant, id).await? {
        Found::Isv(g) => Ok(g),
        Found::Derived(_) => Err(ScimError::read_only("Per-app role groups")),
    }
}

/// `PUT /Groups/{id}`.
pub(crate) async fn replace(
    req: Admitted<Write, (String, String)>,
    body: Body,
) -> Result<Response, ScimError> {
    let (tenant, id) = &req.path;
    writable(&req.state, tenant, id).await?;
    let w = group_write(&req.json(body).await?)?;
    let g = req
        .state
        .store
        .replace_group(tenant, id, &w, if_match(&req.headers))
        .await?;
    Ok(super::resource_response(
        StatusCode::OK,
        &isv_json(&req.base, &g),
    ))
}

/// `DELETE /Groups/{id}`: 204.
pub(crate) async fn delete(req: Admitted<Write, (String, String)>) -> Result<Response, ScimError> {
    let (tenant, id) = &req.path;
    match find(&req.state, tenant, id).await? {
        Found::Isv(_) => {}
        Found::Derived(_) => {
            return Err(ScimError::new(
                StatusCode::FORBIDDEN,
                None,
                "per-app role groups follow the marketplace's authorisations and cannot be deleted",
            ))
        }
    }
    req.state
        .store
        .delete_group(tenant, id, if_match(&req.headers))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// What a PATCH path names (RFC 7644 §3.5.2).
#[derive(Debug)]
enum Target {
    Whole,
    DisplayName,
    ExternalId,
    Members,
    MembersWhere(Filter),
}

fn target(path: Option<&str>) -> Result<Target, ScimError> {
    let Some(path) = path.map(str::trim).filter(|p| !p.is_empty()) else {
        return Ok(Target::Whole);
    };
    let bad = || {
        ScimError::bad(
            ScimType::InvalidPath,
            format!("`{path}` is not a path this Group has"),
        )
    };
    let (name, selector) = match path.find('[') {
        Some(i) => {
            let rest = &path[i + 1..];
            let inner = rest.strip_suffix(']').ok_or_else(bad)?;
            (&path[..i], Some(inner))
        }
        None => (path, None),
    };
    let name = AttrPath::parse(name).map_err(|_| bad())?;
    if name
        .uri
        .as_deref()
        .is_some_and(|u| !u.eq_ignore_ascii_case(GROUP))
        || name.sub.is_some()
    {
        return Err(bad());
    }
    match (name.attr.to_ascii_lowercase().as_str(), selector) {
        ("displayname", None) => Ok(Target::DisplayName),
        ("externalid", None) => Ok(Target::ExternalId),
        ("members", None) => Ok(Target::Members),
        ("members", Some(f)) => Ok(Target::MembersWhere(
            Filter::parse(f).map_err(|e| ScimError::bad(ScimType::InvalidFilter, e))?,
        )),
        _ => Err(bad()),
    }
}

fn string_value(v: Option<&Value>, what: &str) -> Result<String, ScimError> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        _ => Err(ScimError::bad(
            ScimType::InvalidValue,
            format!("{what} needs a non-empty string value"),
        )),
    }
}

/// Applies one operation to the group's state.
fn apply_op(w: &mut Draft, op: &str, t: Target, value: Option<&Value>) -> Result<(), ScimError> {
    match (op, t) {
        ("add" | "replace", Target::Whole) => {
            let obj = value.and_then(Value::as_object).ok_or_else(|| {
                ScimError::bad(
                    ScimType::InvalidValue,
                    "an operation without a path needs an object value",
                )
            })?;
            for (k, v) in obj {
                let t = match k.to_ascii_lowercase().as_str() {
                    "schemas" | "id" | "meta" => continue,
                    _ => target(Some(k))?,
                };
                apply_op(w, op, t, Some(v))?;
            }
        }
        ("add" | "replace", Target::DisplayName) => {
            let name = string_value(value, "displayName")?;
            bounded("displayName", &name)?;
            w.display_name = name;
        }
        ("add" | "replace", Target::ExternalId) => w.external_id = external_id(value)?,
        ("add", Target::Members) => add_members(w, value.unwrap_or(&Value::Null))?,
        ("replace", Target::Members) => {
            w.clear();
            add_members(w, value.unwrap_or(&Value::Null))?;
        }
        ("replace", Target::MembersWhere(f)) => {
            w.remove_where(&f);
            add_members(w, value.unwrap_or(&Value::Null))?;
        }
        ("add", Target::MembersWhere(_)) => {
            return Err(ScimError::bad(
                ScimType::InvalidPath,
                "add takes the path `members`, not a filtered one",
            ))
        }
        ("remove", Target::Whole) => {
            return Err(ScimError::bad(ScimType::NoTarget, "remove needs a path"));
        }
        ("remove", Target::DisplayName) => {
            return Err(ScimError::bad(
                ScimType::Mutability,
                "displayName is required and cannot be removed",
            ))
        }
        ("remove", Target::ExternalId) => w.external_id = None,
        ("remove", Target::Members) => match value {
            // Some clients name the members to remove in the value instead of a filter.
            Some(v) if !v.is_null() => {
                for gone in parse_members(v)? {
                    w.remove_value(&gone.value);
                }
            }
            _ => w.clear(),
        },
        ("remove", Target::MembersWhere(f)) => w.remove_where(&f),
        (other, _) => {
            return Err(ScimError::bad(
                ScimType::InvalidValue,
                format!("`{other}` is not a PATCH op (add, remove, replace)"),
            ))
        }
    }
    Ok(())
}

/// One PATCH operation: `op` lowercased, its path and value.
struct Operation {
    op: String,
    path: Option<String>,
    value: Option<Value>,
}

/// Parses a PatchOp body into its operations.
fn operations(body: &Value) -> Result<Vec<Operation>, ScimError> {
    let obj = body.as_object().ok_or_else(|| {
        ScimError::bad(ScimType::InvalidSyntax, "a PatchOp must be a JSON object")
    })?;
    let schemas_ok = obj
        .get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|s| s.as_str() == Some(PATCH_OP)));
    if !schemas_ok {
        return Err(ScimError::bad(
            ScimType::InvalidSyntax,
            format!("`schemas` must be [\"{PATCH_OP}\"]"),
        ));
    }
    let ops = obj
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Operations"))
        .and_then(|(_, v)| v.as_array())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            ScimError::bad(
                ScimType::InvalidSyntax,
                "`Operations` must be a non-empty array",
            )
        })?;
    if ops.len() > MAX_PATCH_OPERATIONS {
        return Err(ScimError::bad(
            ScimType::InvalidValue,
            format!(
                "Operations: {} operations, at most {MAX_PATCH_OPERATIONS} per request",
                ops.len()
            ),
        ));
    }
    ops.iter()
        .map(|o| {
            let field = |name: &str| {
                o.as_object().and_then(|m| {
                    m.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v)
                })
            };
            let op = field("op")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ScimError::bad(ScimType::InvalidSyntax, "every operation needs an `op`")
                })?
                .to_ascii_lowercase();
            let path = optional_str(
                field("path"),
                ScimType::InvalidPath,
                "`path` must be a string",
            )?;
            Ok(Operation {
                op,
                path: path.map(str::to_owned),
                value: field("value").cloned(),
            })
        })
        .collect()
}

/// `PATCH /Groups/{id}`: 200 with the group.
pub(crate) async fn patch(
    req: Admitted<Write, (String, String)>,
    body: Body,
) -> Result<Response, ScimError> {
    let (tenant, id) = &req.path;
    let ops = operations(&req.json(body).await?)?;
    let asked = if_match(&req.headers);
    // Read, apply, write conditioned on the version read; a concurrent writer in between
    // makes the write fail, and (unless the client pinned a version) it is redone.
    for _ in 0..5 {
        let current = writable(&req.state, tenant, id).await?;
        let mut w = Draft::from_group(&current);
        for o in &ops {
            apply_op(&mut w, &o.op, target(o.path.as_deref())?, o.value.as_ref())?;
        }
        let expected = asked.unwrap_or(current.version);
        match req
            .state
            .store
            .replace_group(tenant, id, &w.into_write(), Some(expected))
            .await
        {
            Ok(g) => {
                return Ok(super::resource_response(
                    StatusCode::OK,
                    &isv_json(&req.base, &g),
                ))
            }
            Err(GroupWriteError::VersionMismatch { .. }) if asked.is_none() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ScimError::new(
        StatusCode::CONFLICT,
        None,
        "the group kept changing under this PATCH; try again",
    ))
}
