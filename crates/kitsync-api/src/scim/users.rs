//! SCIM Users: the tenant's listed members, read-only.
use super::error::{ScimError, ScimType};
use super::filter::{AttrPath, CompValue, Filter, Op};
use super::schema::{ENTERPRISE, USER};
use super::{encode_segment, Admitted, Listing, Projection, Read, Shared};
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing;
use axum::Router;
use kitsync_store::{MemberCond, MemberField, MemberView};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The SCIM representation of a member; `isv_groups` are the (id, name) of its ISV groups.
pub(crate) fn user_json(base: &str, v: &MemberView, isv_groups: &[(String, String)]) -> Value {
    let p = &v.profile;
    let id = encode_segment(&p.user_name);
    let mut o = Map::new();
    o.insert("schemas".into(), json!([USER, ENTERPRISE]));
    o.insert("id".into(), json!(p.user_name));
    o.insert("userName".into(), json!(p.user_name));
    if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
        o.insert("name".into(), json!({ "formatted": name }));
        o.insert("displayName".into(), json!(name));
    }
    if let Some(t) = p.position.as_deref().filter(|t| !t.is_empty()) {
        o.insert("title".into(), json!(t));
    }
    o.insert("active".into(), json!(v.apps.iter().any(|a| a.enabled)));
    if let Some(e) = p.email.as_deref().filter(|e| !e.is_empty()) {
        o.insert(
            "emails".into(),
            json!([{ "value": e, "type": "work", "primary": true }]),
        );
    }
    if let Some(m) = p.mobile.as_deref().filter(|m| !m.is_empty()) {
        o.insert(
            "phoneNumbers".into(),
            json!([{ "value": m, "type": "mobile", "primary": true }]),
        );
    }
    let mut groups: BTreeMap<String, String> = v
        .apps
        .iter()
        .map(|a| {
            (
                format!("{}:{}", a.app_id, a.role),
                format!("{} {}s", a.app_id, a.role),
            )
        })
        .collect();
    groups.extend(isv_groups.iter().cloned());
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(gid, display)| {
            json!({
                "value": gid,
                "$ref": format!("{base}/Groups/{}", encode_segment(&gid)),
                "display": display,
                "type": "direct",
            })
        })
        .collect();
    o.insert("groups".into(), Value::Array(groups));
    let mut ent = Map::new();
    if let Some(c) = p.employee_code.as_deref().filter(|c| !c.is_empty()) {
        ent.insert("employeeNumber".into(), json!(c));
    }
    if let Some(d) = p.org_code.as_deref().filter(|d| !d.is_empty()) {
        ent.insert("department".into(), json!(d));
    }
    if !ent.is_empty() {
        o.insert(ENTERPRISE.into(), Value::Object(ent));
    }
    let mut meta = json!({
        "resourceType": "User",
        "location": format!("{base}/Users/{id}"),
    });
    if let Some(t) = super::rfc3339(p.version) {
        meta["lastModified"] = json!(t);
    }
    let etag = super::content_etag(&Value::Object(o.clone()));
    meta["version"] = json!(etag);
    o.insert("meta".into(), meta);
    Value::Object(o)
}

/// The member field a user attribute path maps to, and whether it compares case-exactly.
fn field(key: &str) -> Option<(MemberField, bool)> {
    Some(match key {
        "id" | "username" => (MemberField::UserName, true),
        "displayname" | "name" | "name.formatted" => (MemberField::Name, false),
        "title" => (MemberField::Position, false),
        "emails" | "emails.value" => (MemberField::Email, false),
        "phonenumbers" | "phonenumbers.value" => (MemberField::Mobile, false),
        "employeenumber" => (MemberField::EmployeeCode, false),
        "department" => (MemberField::OrgCode, true),
        _ => return None,
    })
}

/// The lowercased key of a path as a User attribute, or `None` for another schema.
fn user_key(p: &AttrPath) -> Option<String> {
    match p.uri.as_deref() {
        None => Some(p.key()),
        Some(u) if u.eq_ignore_ascii_case(USER) => Some(p.key()),
        Some(u) if u.eq_ignore_ascii_case(ENTERPRISE) => Some(p.key()),
        Some(_) => None,
    }
}

/// Compiles a filter over Users to a member condition (`prefix`: the multi-valued attribute
/// of an enclosing `attr[…]`).
pub(crate) fn compile(f: &Filter, prefix: Option<&str>) -> Result<MemberCond, String> {
    let key_of = |p: &AttrPath| -> Result<String, String> {
        let k = user_key(p).ok_or_else(|| format!("`{}` is not a User attribute", p.key()))?;
        Ok(match prefix {
            Some(pre) => format!("{pre}.{k}"),
            None => k,
        })
    };
    let and = |a: MemberCond, b: MemberCond| MemberCond::And(Box::new(a), Box::new(b));
    Ok(match f {
        Filter::And(a, b) => and(compile(a, prefix)?, compile(b, prefix)?),
        Filter::Or(a, b) => {
            MemberCond::Or(Box::new(compile(a, prefix)?), Box::new(compile(b, prefix)?))
        }
        Filter::Not(a) => MemberCond::Not(Box::new(compile(a, prefix)?)),
        Filter::ValuePath(p, inner) => {
            if prefix.is_some() {
                return Err("value filters do not nest".into());
            }
            let k = key_of(p)?;
            if !matches!(k.as_str(), "emails" | "phonenumbers" | "groups") {
                return Err(format!("`{k}` is not a multi-valued attribute"));
            }
            compile(inner, Some(&k))?
        }
        Filter::Present(p) => {
            let k = key_of(p)?;
            match k.as_str() {
                // Every listed member is active or not, and is in at least one role group.
                "active" | "groups" | "groups.value" | "meta" | "meta.lastmodified" => {
                    MemberCond::Const(true)
                }
                "emails.type" | "emails.primary" => MemberCond::Present(MemberField::Email),
                "phonenumbers.type" | "phonenumbers.primary" => {
                    MemberCond::Present(MemberField::Mobile)
                }
                "externalid" | "nickname" | "usertype" | "locale" | "timezone" => {
                    MemberCond::Const(false)
                }
                _ => MemberCond::Present(
                    field(&k)
                        .ok_or_else(|| format!("`{k}` cannot be filtered on"))?
                        .0,
                ),
            }
        }
        Filter::Compare(p, o, v) => {
            let k = key_of(p)?;
            compare(&k, *o, v)?
        }
    })
}

fn compare(k: &str, o: Op, v: &CompValue) -> Result<MemberCond, String> {
    let constant_type = |present: MemberField, canonical: &str| -> Result<MemberCond, String> {
        let CompValue::Str(s) = v else {
            return Err(format!("`{k}` compares with a string"));
        };
        let equal = s.eq_ignore_ascii_case(canonical);
        Ok(match (o, equal) {
            (Op::Eq, true) => MemberCond::Present(present),
            (Op::Ne, true) | (Op::Eq, false) => MemberCond::Const(false),
            (Op::Ne, false) => MemberCond::Present(present),
            _ => return Err(format!("`{k}` supports eq and ne")),
        })
    };
    match k {
        "active" => {
            let CompValue::Bool(b) = v else {
                return Err("`active` compares with true or false".into());
            };
            return match o {
                Op::Eq => Ok(MemberCond::Active(*b)),
                Op::Ne => Ok(MemberCond::Active(!*b)),
                _ => Err("`active` supports eq and ne".into()),
            };
        }
        "emails.type" => return constant_type(MemberField::Email, "work"),
        "phonenumbers.type" => return constant_type(MemberField::Mobile, "mobile"),
        "groups" | "groups.value" => {
            let (Op::Eq, CompValue::Str(g)) = (o, v) else {
                return Err(format!("`{k}` supports eq with a group id"));
            };
            return Ok(MemberCond::InGroup(g.clone()));
        }
        "externalid" => {
            return Ok(MemberCond::Const(
                o == Op::Ne || (o == Op::Eq && *v == CompValue::Null),
            ))
        }
        _ => {}
    }
    let (field, exact) = field(k).ok_or_else(|| format!("`{k}` cannot be filtered on"))?;
    match v {
        CompValue::Str(s) => Ok(MemberCond::Cmp {
            field,
            op: o,
            value: s.clone(),
            ignore_case: !exact,
        }),
        CompValue::Null => match o {
            Op::Eq => Ok(MemberCond::Not(Box::new(MemberCond::Present(field)))),
            Op::Ne => Ok(MemberCond::Present(field)),
            _ => Err(format!("`{k}` compares with null only by eq or ne")),
        },
        _ => Err(format!("`{k}` is a string: compare it with a \"string\"")),
    }
}

/// `/Users`, `/Users/.search` and `/Users/{id}`: reads, and writes refused.
pub(crate) fn routes() -> Router<Shared> {
    let one = routing::get(get).put(write).patch(write).delete(delete);
    super::resource_routes("Users", list, routing::post(create), one)
}

/// `GET /Users` and `POST /Users/.search`.
pub(crate) async fn list(l: Listing) -> Result<Response, ScimError> {
    let Listing {
        state,
        base,
        tenant,
        params,
    } = l;
    let cond = match &params.filter {
        Some(f) => compile(f, None).map_err(|e| ScimError::bad(ScimType::InvalidFilter, e))?,
        None => MemberCond::Const(true),
    };
    let (total, members) = state
        .store
        .query_members(&tenant, &cond, params.start_index - 1, params.count)
        .await?;
    let names: Vec<String> = members
        .iter()
        .map(|m| m.profile.user_name.clone())
        .collect();
    let mut memberships: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (user, gid, display) in state.store.group_memberships(&tenant, &names).await? {
        memberships.entry(user).or_default().push((gid, display));
    }
    let resources = members
        .iter()
        .map(|m| {
            let groups = memberships
                .get(&m.profile.user_name)
                .map_or(&[][..], Vec::as_slice);
            params.projection.apply(user_json(&base, m, groups))
        })
        .collect();
    Ok(super::list_response(total, params.start_index, resources))
}

/// `GET /Users/{id}`.
pub(crate) async fn get(
    req: Admitted<Read, (String, String)>,
    projection: Projection,
) -> Result<Response, ScimError> {
    let (tenant, id) = &req.path;
    let member = req
        .state
        .store
        .member(tenant, id, true)
        .await?
        .ok_or_else(|| ScimError::not_found(format!("User {id} not found")))?;
    let groups: Vec<(String, String)> = req
        .state
        .store
        .group_memberships(tenant, std::slice::from_ref(id))
        .await?
        .into_iter()
        .map(|(_, g, d)| (g, d))
        .collect();
    let full = user_json(&req.base, &member, &groups);
    if super::not_modified(
        &req.headers,
        full["meta"]["version"].as_str().unwrap_or_default(),
    ) {
        return Ok(super::get_response(&req.headers, &full));
    }
    let mut shown = projection.apply(full.clone());
    if shown.get("meta").is_none() {
        // Keep the ETag header even when `meta` is not asked for.
        let mut res = super::resource_response(StatusCode::OK, &full);
        *res.body_mut() = axum::body::Body::from(shown.take().to_string());
        return Ok(res);
    }
    Ok(super::get_response(&req.headers, &shown))
}

/// Checks a User write's body like a server that took writes would (so a malformed request
/// hears what is malformed), then refuses it: the marketplace owns Users.
fn refuse_user_write(value: &Value, needs_user_name: bool) -> ScimError {
    let Some(obj) = value.as_object() else {
        return ScimError::bad(ScimType::InvalidSyntax, "the body must be a JSON object");
    };
    let schemas: Vec<&str> = obj
        .get("schemas")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if schemas.is_empty() {
        return ScimError::bad(ScimType::InvalidSyntax, "the body has no `schemas`");
    }
    if needs_user_name {
        if !schemas.iter().any(|s| s.eq_ignore_ascii_case(USER)) {
            return ScimError::bad(
                ScimType::InvalidSyntax,
                format!("`schemas` must include {USER}"),
            );
        }
        if obj
            .get("userName")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return ScimError::bad(ScimType::InvalidValue, "userName is required");
        }
    }
    ScimError::read_only("Users")
}

/// `POST /Users`: refused (after a syntax check).
pub(crate) async fn create(req: Admitted<Read>, body: Body) -> Result<Response, ScimError> {
    Err(refuse_user_write(&req.json(body).await?, true))
}

/// 404 unless the user of the path exists (a write to an unknown user is a 404).
async fn existing(req: &Admitted<Read, (String, String)>) -> Result<(), ScimError> {
    let (tenant, id) = &req.path;
    if req.state.store.member(tenant, id, true).await?.is_none() {
        return Err(ScimError::not_found(format!("User {id} not found")));
    }
    Ok(())
}

/// `PUT` / `PATCH /Users/{id}`: refused (after a syntax check).
pub(crate) async fn write(
    req: Admitted<Read, (String, String)>,
    method: axum::http::Method,
    body: Body,
) -> Result<Response, ScimError> {
    existing(&req).await?;
    let body = req.json(body).await?;
    Err(refuse_user_write(&body, method == axum::http::Method::PUT))
}

/// `DELETE /Users/{id}`: 403 (404 for an unknown user).
pub(crate) async fn delete(req: Admitted<Read, (String, String)>) -> Result<Response, ScimError> {
    existing(&req).await?;
    Err(ScimError::new(
        StatusCode::FORBIDDEN,
        None,
        "Users belong to the marketplace: a user leaves when the marketplace deauthorises it",
    ))
}
