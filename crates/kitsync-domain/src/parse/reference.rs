//! The parser as it was before `parse` moved off `serde_json::Value` (commit a696f18), kept
//! verbatim (only `parse` is `pub(super)`, the module docs differ, and `quote_bare_keys`, which
//! never touched a `Value`, is the parser's own) as the oracle of the differential tests
//! (`super::differential`): the new parser must answer every body exactly as this one does.
use super::quote_bare_keys;
use crate::command::*;
use crate::error::FieldError;
use crate::time::KitTime;
use serde_json::{Map, Value};
use std::borrow::Cow;

type Obj = Map<String, Value>;

/// Parses and validates one callback body.
///
/// For applicationSync the returned `client_secret` is still the marketplace's ciphertext; the
/// ingress decrypts and seals it before the command is queued.
///
/// # Errors
/// The first problem found, naming the field (`userList[3].role`).
pub(super) fn parse(kind: CallbackKind, body: &[u8]) -> Result<Command, FieldError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| FieldError::new("", format!("body is not valid JSON ({e})")))?;
    let Value::Object(obj) = value else {
        return Err(FieldError::new("", "body must be a JSON object"));
    };
    match kind {
        CallbackKind::TenantSync => tenant(&obj).map(Command::Tenant),
        CallbackKind::ApplicationSync => app(&obj).map(Command::App),
        CallbackKind::AuthSync => auth(&obj).map(Command::Auth),
        CallbackKind::SingleOrgSync => org(&obj).map(Command::Org),
        CallbackKind::AllOrgSync => full_org(&obj).map(Command::FullOrg),
    }
}

fn tenant(o: &Obj) -> Result<TenantChange, FieldError> {
    let op = upsert_or_delete(o)?;
    let deleting = op == Op::Delete;
    Ok(TenantChange {
        tenant_id: req_str(o, "tenantId", 64)?,
        instance_id: opt_str(o, &["instanceId"], 64)?,
        order_id: opt_str(o, &["orderId"], 64)?,
        // A delete only needs to say which tenant; the rest is kept from the last upsert.
        tenant_code: str_or_empty(o, "tenantCode", 64, deleting)?,
        name: str_or_empty(o, "name", 255, deleting)?,
        domain_name: str_or_empty(o, "domainName", 255, deleting)?,
        op,
        test: test_flag(o)?,
        version: kit_time(o, "timeStamp")?,
    })
}

fn app(o: &Obj) -> Result<AppChange, FieldError> {
    let op = upsert_or_delete(o)?;
    let deleting = op == Op::Delete;
    Ok(AppChange {
        tenant_id: req_str(o, "tenantId", 64)?,
        instance_id: opt_str(o, &["instanceId"], 64)?,
        app_id: req_str(o, "appId", 64)?,
        client_id: str_or_empty(o, "clientId", 64, deleting)?,
        client_secret: SecretText(str_or_empty(o, "clientSecret", 8192, deleting)?),
        secret_fp: None,
        op,
        test: test_flag(o)?,
        version: kit_time(o, "timeStamp")?,
    })
}

fn auth(o: &Obj) -> Result<AuthChange, FieldError> {
    let op = match flag(o, &[0, 1, 2, 3])? {
        0 => AuthOp::Delete,
        1 => AuthOp::Add,
        2 => AuthOp::Modify,
        _ => AuthOp::Cancel,
    };
    // `currentSyncTime` versions the batch (docs/protocol.md §5.3); an old caller that only sends
    // `timeStamp` still gets a usable version.
    let time_stamp = opt_kit_time(o, "timeStamp")?;
    let version = match opt_kit_time(o, "currentSyncTime")? {
        Some(t) => t,
        None => time_stamp.ok_or_else(|| {
            FieldError::new("currentSyncTime", "is required (UTC+8 yyyyMMddHHmmssSSS)")
        })?,
    };
    let list = list_field(o, &["userList"])?
        .ok_or_else(|| FieldError::new("userList", "is required (an array of users)"))?;
    // A user listed twice in one batch: the later entry wins.
    let users = unique_objects(
        &list,
        "userList",
        |u| auth_user(u, op.removes()),
        |u| &u.user_name,
    )?;
    Ok(AuthChange {
        tenant_id: req_str(o, "tenantId", 64)?,
        instance_id: opt_str(o, &["instanceId"], 64)?,
        app_id: req_str(o, "appId", 64)?,
        op,
        users,
        test: test_flag(o)?,
        version,
        time_stamp,
    })
}

fn auth_user(u: &Obj, removing: bool) -> Result<AuthUser, FieldError> {
    let ext = get(u, &["extension"]).filter(|v| !v.is_null());
    let ext_obj: Option<Cow<'_, Obj>> = match ext {
        Some(Value::Object(m)) => Some(Cow::Borrowed(m)),
        Some(Value::String(s)) => serde_json::from_str::<Obj>(s).ok().map(Cow::Owned),
        _ => None,
    };
    let from_ext = |name: &str| ext_obj.as_ref().and_then(|m| get(m, &[name]).cloned());
    let employee_type = match get(u, &["employeeType"])
        .cloned()
        .or_else(|| from_ext("employeeType"))
    {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(v) => {
            let n = as_int(&v)
                .ok_or_else(|| FieldError::new("employeeType", "must be an integer 1-4"))?;
            if !(1..=4).contains(&n) {
                return Err(FieldError::new(
                    "employeeType",
                    format!(
                        "must be 1 (regular), 2 (intern), 3 (agency) or 4 (outsourced), got {n}"
                    ),
                ));
            }
            Some(n as i32)
        }
    };
    let role = match opt_str(u, &["role"], 32)? {
        Some(r) => match r.to_ascii_lowercase().as_str() {
            "user" => Role::User,
            "admin" => Role::Admin,
            _ => {
                return Err(FieldError::new(
                    "role",
                    format!("must be `user` or `admin`, got `{r}`"),
                ))
            }
        },
        None if removing => Role::User,
        None => return Err(FieldError::new("role", "is required (`user` or `admin`)")),
    };
    let enabled = match get(u, &["enable", "enabled"]).filter(|v| !v.is_null()) {
        Some(v) => as_bool(v).ok_or_else(|| {
            FieldError::new("enable", format!("must be \"true\" or \"false\", got {v}"))
        })?,
        None if removing => false,
        None => {
            return Err(FieldError::new(
                "enable",
                "is required (\"true\" or \"false\")",
            ))
        }
    };
    // From the extension too, the same limits hold as for the top-level fields.
    let here_or_in_ext = |field: &str, max: usize| -> Result<Option<String>, FieldError> {
        match opt_str(u, &[field], max)? {
            Some(v) => Ok(Some(v)),
            None => from_ext(field)
                .and_then(|v| scalar_string(&v))
                .map(|s| check_len(field, s, max))
                .transpose(),
        }
    };
    let work_place = here_or_in_ext("workPlace", 255)?;
    let entry_date = here_or_in_ext("entryDate", 64)?;
    // Kept as received, so JSON text may hold line breaks; but U+0000 fits no database
    // column (PostgreSQL text refuses it) and would fail the apply instead of the callback.
    if matches!(ext, Some(Value::String(s)) if s.contains('\0')) {
        return Err(FieldError::new("extension", "must not contain U+0000"));
    }
    Ok(AuthUser {
        user_name: req_str(u, "userName", 64)?,
        name: if removing {
            opt_str(u, &["name"], 64)?
        } else {
            Some(req_str(u, "name", 64)?)
        },
        org_code: if removing {
            opt_str(u, &["orgCode"], 64)?
        } else {
            Some(req_str(u, "orgCode", 64)?)
        },
        position: opt_str(u, &["position"], 64)?,
        employee_code: opt_str(u, &["employeeCode"], 64)?,
        employee_type,
        role,
        enabled,
        mobile: opt_str(u, &["mobile"], 32)?,
        email: opt_str(u, &["email"], 128)?,
        work_place,
        entry_date,
        extension: ext.map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
    })
}

fn org(o: &Obj) -> Result<OrgChange, FieldError> {
    let op = upsert_or_delete(o)?;
    Ok(OrgChange {
        tenant_id: req_str(o, "tenantId", 64)?,
        instance_id: opt_str(o, &["instanceId"], 64)?,
        org_code: req_str(o, "orgCode", 64)?,
        org_name: match op {
            Op::Delete => opt_str(o, &["orgName", "OrgName", "name"], 128)?.unwrap_or_default(),
            Op::Upsert => req_str_any(o, &["orgName", "OrgName", "name"], 128)?,
        },
        parent_code: opt_str(o, &["parentCode"], 64)?,
        op,
        test: test_flag(o)?,
        version: kit_time(o, "timeStamp")?,
    })
}

fn full_org(o: &Obj) -> Result<FullOrgSnapshot, FieldError> {
    let list = list_field(o, &["orgInfoList", "orgInfo"])?
        .ok_or_else(|| FieldError::new("orgInfoList", "is required (an array of departments)"))?;
    let orgs = unique_objects(
        &list,
        "orgInfoList",
        |d| {
            Ok(OrgInfo {
                org_code: req_str(d, "orgCode", 64)?,
                org_name: req_str_any(d, &["orgName", "OrgName", "name"], 128)?,
                parent_code: opt_str(d, &["parentCode"], 64)?,
            })
        },
        |d| &d.org_code,
    )?;
    Ok(FullOrgSnapshot {
        tenant_id: req_str(o, "tenantId", 64)?,
        instance_id: opt_str(o, &["instanceId"], 64)?,
        orgs,
        test: test_flag(o)?,
        version: kit_time(o, "timeStamp")?,
    })
}

// ---- field access -------------------------------------------------------------------------

/// The value under the first of `names` present; failing that, under a key equal to one of
/// them ignoring ASCII case.
fn get<'a>(o: &'a Obj, names: &[&str]) -> Option<&'a Value> {
    for n in names {
        if let Some(v) = o.get(*n) {
            return Some(v);
        }
    }
    for n in names {
        if let Some((_, v)) = o.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)) {
            return Some(v);
        }
    }
    None
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn check_len(field: &str, s: String, max: usize) -> Result<String, FieldError> {
    let n = s.chars().count();
    if n > max {
        return Err(FieldError::new(
            field,
            format!("is {n} characters long, at most {max} allowed"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(s)
}

fn opt_str(o: &Obj, names: &[&str], max: usize) -> Result<Option<String>, FieldError> {
    let field = names.first().copied().unwrap_or_default();
    match get(o, names) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match scalar_string(v) {
            Some(s) => check_len(field, s, max).map(Some),
            None if matches!(v, Value::String(_)) => Ok(None),
            None => Err(FieldError::new(field, "must be a string")),
        },
    }
}

fn req_str_any(o: &Obj, names: &[&str], max: usize) -> Result<String, FieldError> {
    let field = names.first().copied().unwrap_or_default();
    match get(o, names) {
        None | Some(Value::Null) => Err(FieldError::new(field, "is required")),
        Some(v) => match scalar_string(v) {
            Some(s) => check_len(field, s, max),
            None if matches!(v, Value::String(_)) => {
                Err(FieldError::new(field, "must not be empty"))
            }
            None => Err(FieldError::new(field, "must be a string")),
        },
    }
}

fn req_str(o: &Obj, name: &str, max: usize) -> Result<String, FieldError> {
    req_str_any(o, &[name], max)
}

/// Mandatory on upserts; on deletes it may be absent (kept from the last upsert).
fn str_or_empty(o: &Obj, name: &str, max: usize, optional: bool) -> Result<String, FieldError> {
    if optional {
        Ok(opt_str(o, &[name], max)?.unwrap_or_default())
    } else {
        req_str(o, name, max)
    }
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn flag(o: &Obj, allowed: &[i64]) -> Result<i64, FieldError> {
    let shown = allowed
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let v = get(o, &["flag"])
        .filter(|v| !v.is_null())
        .ok_or_else(|| FieldError::new("flag", format!("is required (one of {shown})")))?;
    let n = as_int(v).ok_or_else(|| {
        FieldError::new(
            "flag",
            format!("must be an integer (one of {shown}), got {v}"),
        )
    })?;
    if allowed.contains(&n) {
        Ok(n)
    } else {
        Err(FieldError::new(
            "flag",
            format!("must be one of {shown}, got {n}"),
        ))
    }
}

fn upsert_or_delete(o: &Obj) -> Result<Op, FieldError> {
    Ok(if flag(o, &[0, 1, 2])? == 0 {
        Op::Delete
    } else {
        Op::Upsert
    })
}

fn test_flag(o: &Obj) -> Result<bool, FieldError> {
    let v = get(o, &["testFlag"])
        .filter(|v| !v.is_null())
        .ok_or_else(|| FieldError::new("testFlag", "is required (0 production, 1 test)"))?;
    match as_int(v) {
        Some(0) => Ok(false),
        Some(1) => Ok(true),
        _ => Err(FieldError::new(
            "testFlag",
            format!("must be 0 (production) or 1 (test), got {v}"),
        )),
    }
}

fn opt_kit_time(o: &Obj, name: &str) -> Result<Option<KitTime>, FieldError> {
    match get(o, &[name]).and_then(scalar_string) {
        None => Ok(None),
        Some(s) => KitTime::parse(&s)
            .map(Some)
            .map_err(|p| FieldError::new(name, p)),
    }
}

fn kit_time(o: &Obj, name: &str) -> Result<KitTime, FieldError> {
    opt_kit_time(o, name)?
        .ok_or_else(|| FieldError::new(name, "is required (UTC+8 yyyyMMddHHmmssSSS)"))
}

/// The objects of list `name`, each parsed by `parse`. An entry whose `key` an earlier one
/// has replaces that one in its place: the later entry wins.
fn unique_objects<T>(
    list: &[Value],
    name: &str,
    parse: impl Fn(&Obj) -> Result<T, FieldError>,
    key: impl Fn(&T) -> &String,
) -> Result<Vec<T>, FieldError> {
    let mut items: Vec<T> = Vec::with_capacity(list.len());
    let mut seen = std::collections::HashMap::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let Value::Object(o) = item else {
            return Err(FieldError::new(format!("{name}[{i}]"), "must be an object"));
        };
        let parsed = parse(o).map_err(|e| e.within(&format!("{name}[{i}]")))?;
        match seen.get(key(&parsed)) {
            Some(&at) => items[at] = parsed,
            None => {
                seen.insert(key(&parsed).clone(), items.len());
                items.push(parsed);
            }
        }
    }
    Ok(items)
}

/// A list sent as an array, as a JSON string holding an array, or as a string holding an
/// array written with unquoted keys.
fn list_field<'a>(o: &'a Obj, names: &[&str]) -> Result<Option<Cow<'a, [Value]>>, FieldError> {
    let field = names.first().copied().unwrap_or_default();
    match get(o, names) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(Cow::Borrowed(a.as_slice()))),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Some(Cow::Owned(Vec::new()))),
        Some(Value::String(s)) => {
            let parsed = serde_json::from_str::<Value>(s)
                .or_else(|_| serde_json::from_str::<Value>(&quote_bare_keys(s)));
            match parsed {
                Ok(Value::Array(a)) => Ok(Some(Cow::Owned(a))),
                Ok(_) => Err(FieldError::new(
                    field,
                    "must be an array (or a string holding one)",
                )),
                Err(e) => Err(FieldError::new(
                    field,
                    format!("is a string but not a JSON array ({e})"),
                )),
            }
        }
        Some(_) => Err(FieldError::new(field, "must be an array")),
    }
}
