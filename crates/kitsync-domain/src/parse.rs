//! Tolerant parsing, strict validation (docs/protocol.md §5 and §6).
//!
//! Tolerated: numbers sent as strings and strings sent as numbers, `enable` as `"true"`/`true`/
//! `1`, `userList`/`orgInfoList` as an array or as a JSON-encoded string (even one with
//! unquoted keys, as the allOrgSync example shows), the key variants `orgName`/`OrgName`/`name`
//! and any other difference in key case, empty `instanceId`/`orderId`, unknown fields, V1's
//! `orgInfo` and V1's `extension`-borne `employeeType`/`workPlace`/`entryDate`.
//!
//! Rejected, naming the field: missing mandatory fields, values over the documented lengths,
//! flags or roles outside their enums, malformed times.
//!
//! The body is read into a borrowed tree (`json::J`) rather than a `serde_json::Value`, which
//! cost most of the parse (an `IndexMap` per object, an allocation per string); the answers,
//! error texts included, are the same as `Value`'s (the `differential` tests compare every
//! answer with the former parser, kept in `reference`).
use crate::command::*;
use crate::error::FieldError;
use crate::time::KitTime;
use json::{Obj, J};
use std::borrow::Cow;

mod json;

#[cfg(test)]
mod differential;
#[cfg(test)]
mod reference;

/// Parses and validates one callback body.
///
/// For applicationSync the returned `client_secret` is still the marketplace's ciphertext; the
/// ingress decrypts and seals it before the command is queued.
///
/// # Errors
/// The first problem found, naming the field (`userList[3].role`).
pub fn parse(kind: CallbackKind, body: &[u8]) -> Result<Command, FieldError> {
    let value: J<'_> = serde_json::from_slice(body)
        .map_err(|e| FieldError::new("", format!("body is not valid JSON ({e})")))?;
    let J::Obj(obj) = value else {
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

fn tenant(o: &Obj<'_>) -> Result<TenantChange, FieldError> {
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

fn app(o: &Obj<'_>) -> Result<AppChange, FieldError> {
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

fn auth(o: &Obj<'_>) -> Result<AuthChange, FieldError> {
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

fn auth_user(u: &Obj<'_>, removing: bool) -> Result<AuthUser, FieldError> {
    let ext = get(u, &["extension"]).filter(|v| !v.is_null());
    // An extension sent as a string is read as `serde_json::Map` would read it: an object or
    // nothing (`json::parse_object`).
    let ext_parsed: Option<Obj<'_>> = match ext {
        Some(J::Str(s)) => json::parse_object(s),
        _ => None,
    };
    let ext_obj: Option<&Obj<'_>> = match ext {
        Some(J::Obj(m)) => Some(m),
        _ => ext_parsed.as_ref(),
    };
    let from_ext = |name: &str| ext_obj.and_then(|m| get(m, &[name]));
    let employee_type = match get(u, &["employeeType"]).or_else(|| from_ext("employeeType")) {
        None | Some(J::Null) => None,
        Some(J::Str(s)) if s.trim().is_empty() => None,
        Some(v) => {
            let n = as_int(v)
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
        Some(r) => {
            // `to_ascii_lowercase() == "user"`, without the copy.
            if r.eq_ignore_ascii_case("user") {
                Role::User
            } else if r.eq_ignore_ascii_case("admin") {
                Role::Admin
            } else {
                return Err(FieldError::new(
                    "role",
                    format!("must be `user` or `admin`, got `{r}`"),
                ));
            }
        }
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
                .and_then(scalar_string)
                .map(|s| check_len(field, s, max))
                .transpose(),
        }
    };
    let work_place = here_or_in_ext("workPlace", 255)?;
    let entry_date = here_or_in_ext("entryDate", 64)?;
    // Kept as received, so JSON text may hold line breaks; but U+0000 fits no database
    // column (PostgreSQL text refuses it) and would fail the apply instead of the callback.
    if matches!(ext, Some(J::Str(s)) if s.contains('\0')) {
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
            J::Str(s) => s.as_ref().to_owned(),
            // As `Value` prints it (a repeated key: first position, last value).
            other => other.to_value().to_string(),
        }),
    })
}

fn org(o: &Obj<'_>) -> Result<OrgChange, FieldError> {
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

fn full_org(o: &Obj<'_>) -> Result<FullOrgSnapshot, FieldError> {
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
/// them ignoring ASCII case (the first such key in the order received).
///
/// A key sent twice answers as `serde_json::Value` did (it kept the key at its first position
/// with its last value): [`Obj::get`] searches from the end, [`Obj::get_ignore_ascii_case`]
/// takes the first matching key in order, then that key's last value. Both are linear scans,
/// as before: the object is never deduplicated, which would be quadratic on a hostile body.
fn get<'o, 'a>(o: &'o Obj<'a>, names: &[&str]) -> Option<&'o J<'a>> {
    for n in names {
        if let Some(v) = o.get(n) {
            return Some(v);
        }
    }
    for n in names {
        if let Some(v) = o.get_ignore_ascii_case(n) {
            return Some(v);
        }
    }
    None
}

fn scalar_string(v: &J<'_>) -> Option<String> {
    match v {
        J::Str(s) => Some(s.trim()).filter(|s| !s.is_empty()).map(str::to_owned),
        J::Num(n) => Some(n.to_string()),
        J::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn check_len(field: &str, s: String, max: usize) -> Result<String, FieldError> {
    // No more characters than bytes: only a longer text needs counting.
    if s.len() > max {
        let n = s.chars().count();
        if n > max {
            return Err(FieldError::new(
                field,
                format!("is {n} characters long, at most {max} allowed"),
            ));
        }
    }
    if has_control(&s) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(s)
}

/// `s.chars().any(char::is_control)`, the bytes scanned first: a control character (Cc:
/// U+0000–U+001F, U+007F–U+009F) is a byte below 0x20, 0x7F, or starts with the byte 0xC2.
fn has_control(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2) && s.chars().any(char::is_control)
}

fn opt_str(o: &Obj<'_>, names: &[&str], max: usize) -> Result<Option<String>, FieldError> {
    let field = names.first().copied().unwrap_or_default();
    match get(o, names) {
        None | Some(J::Null) => Ok(None),
        Some(v) => match scalar_string(v) {
            Some(s) => check_len(field, s, max).map(Some),
            None if matches!(v, J::Str(_)) => Ok(None),
            None => Err(FieldError::new(field, "must be a string")),
        },
    }
}

fn req_str_any(o: &Obj<'_>, names: &[&str], max: usize) -> Result<String, FieldError> {
    let field = names.first().copied().unwrap_or_default();
    match get(o, names) {
        None | Some(J::Null) => Err(FieldError::new(field, "is required")),
        Some(v) => match scalar_string(v) {
            Some(s) => check_len(field, s, max),
            None if matches!(v, J::Str(_)) => Err(FieldError::new(field, "must not be empty")),
            None => Err(FieldError::new(field, "must be a string")),
        },
    }
}

fn req_str(o: &Obj<'_>, name: &str, max: usize) -> Result<String, FieldError> {
    req_str_any(o, &[name], max)
}

/// Mandatory on upserts; on deletes it may be absent (kept from the last upsert).
fn str_or_empty(o: &Obj<'_>, name: &str, max: usize, optional: bool) -> Result<String, FieldError> {
    if optional {
        Ok(opt_str(o, &[name], max)?.unwrap_or_default())
    } else {
        req_str(o, name, max)
    }
}

fn as_int(v: &J<'_>) -> Option<i64> {
    match v {
        J::Num(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        J::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_bool(v: &J<'_>) -> Option<bool> {
    match v {
        J::Bool(b) => Some(*b),
        J::Num(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        J::Str(s) => {
            // `to_ascii_lowercase()` matched against "true"/"1"/"false"/"0", without the copy.
            let s = s.trim();
            if s.eq_ignore_ascii_case("true") || s == "1" {
                Some(true)
            } else if s.eq_ignore_ascii_case("false") || s == "0" {
                Some(false)
            } else {
                None
            }
        }
        _ => None,
    }
}

fn flag(o: &Obj<'_>, allowed: &[i64]) -> Result<i64, FieldError> {
    let shown = || {
        allowed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let v = get(o, &["flag"])
        .filter(|v| !v.is_null())
        .ok_or_else(|| FieldError::new("flag", format!("is required (one of {})", shown())))?;
    let n = as_int(v).ok_or_else(|| {
        FieldError::new(
            "flag",
            format!("must be an integer (one of {}), got {v}", shown()),
        )
    })?;
    if allowed.contains(&n) {
        Ok(n)
    } else {
        Err(FieldError::new(
            "flag",
            format!("must be one of {}, got {n}", shown()),
        ))
    }
}

fn upsert_or_delete(o: &Obj<'_>) -> Result<Op, FieldError> {
    Ok(if flag(o, &[0, 1, 2])? == 0 {
        Op::Delete
    } else {
        Op::Upsert
    })
}

fn test_flag(o: &Obj<'_>) -> Result<bool, FieldError> {
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

fn opt_kit_time(o: &Obj<'_>, name: &str) -> Result<Option<KitTime>, FieldError> {
    match get(o, &[name]).and_then(scalar_string) {
        None => Ok(None),
        Some(s) => KitTime::parse(&s)
            .map(Some)
            .map_err(|p| FieldError::new(name, p)),
    }
}

fn kit_time(o: &Obj<'_>, name: &str) -> Result<KitTime, FieldError> {
    opt_kit_time(o, name)?
        .ok_or_else(|| FieldError::new(name, "is required (UTC+8 yyyyMMddHHmmssSSS)"))
}

/// The objects of list `name`, each parsed by `parse`. An entry whose `key` an earlier one
/// has replaces that one in its place: the later entry wins.
fn unique_objects<T>(
    list: &[J<'_>],
    name: &str,
    parse: impl Fn(&Obj<'_>) -> Result<T, FieldError>,
    key: impl Fn(&T) -> &String,
) -> Result<Vec<T>, FieldError> {
    let mut items: Vec<T> = Vec::with_capacity(list.len());
    // std's keyed hasher: the keys are the sender's.
    let mut seen = std::collections::HashMap::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let J::Obj(o) = item else {
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
fn list_field<'o>(o: &'o Obj<'_>, names: &[&str]) -> Result<Option<Cow<'o, [J<'o>]>>, FieldError> {
    let field = names.first().copied().unwrap_or_default();
    match get(o, names) {
        None | Some(J::Null) => Ok(None),
        Some(J::Arr(a)) => Ok(Some(Cow::Borrowed(a.as_slice()))),
        Some(J::Str(s)) if s.trim().is_empty() => Ok(Some(Cow::Owned(Vec::new()))),
        Some(J::Str(s)) => {
            // The second try reads a string made here: it owns what it keeps.
            let parsed = serde_json::from_str::<J<'o>>(s)
                .or_else(|_| serde_json::from_str::<J<'_>>(&quote_bare_keys(s)).map(J::into_owned));
            match parsed {
                Ok(J::Arr(a)) => Ok(Some(Cow::Owned(a))),
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

/// `[{orgCode:"1", orgName:"x"}]` → `[{"orgCode":"1", "orgName":"x"}]`: quotes identifiers
/// that stand where an object key is expected. Strings (with escapes) pass through untouched.
fn quote_bare_keys(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    let mut chars = s.chars().peekable();
    let mut in_string: Option<char> = None;
    let mut last_significant = ' ';
    while let Some(c) = chars.next() {
        if let Some(q) = in_string {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == q {
                in_string = None;
                last_significant = c;
            }
            continue;
        }
        if c == '"' {
            in_string = Some('"');
            out.push(c);
            continue;
        }
        if (c.is_ascii_alphabetic() || c == '_' || c == '$')
            && matches!(last_significant, '{' | ',')
        {
            let mut ident = String::from(c);
            while let Some(&n) = chars.peek() {
                if n.is_ascii_alphanumeric() || n == '_' || n == '$' {
                    ident.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push('"');
            out.push_str(&ident);
            out.push('"');
            last_significant = '"';
            continue;
        }
        if !c.is_whitespace() {
            last_significant = c;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kind: CallbackKind, body: &str) -> Result<Command, FieldError> {
        parse(kind, body.as_bytes())
    }

    #[test]
    fn tenant_sync_documented_example() {
        let c = p(
            CallbackKind::TenantSync,
            r#"{"instanceId":"","orderId":"CS1906666666ABCDE","tenantId":"68cb0e","tenantCode":"huawei","name":"huaiweitest","domainName":"https://example.tenantaccount.com","flag":1,"testFlag":0,"timeStamp":"20220413093539534"}"#,
        )
        .unwrap();
        let Command::Tenant(t) = c else { panic!() };
        assert_eq!(t.instance_id, None);
        assert_eq!(t.op, Op::Upsert);
        assert!(!t.test);
        assert_eq!(t.version, KitTime::parse("20220413093539534").unwrap());
    }

    #[test]
    fn numbers_as_strings_and_key_case() {
        let c = p(
            CallbackKind::TenantSync,
            r#"{"TENANTID":"t","tenantCode":"c","name":"n","domainName":"d","flag":"2","testFlag":"1","timeStamp":20220413093539534,"unknown":{"x":1}}"#,
        )
        .unwrap();
        let Command::Tenant(t) = c else { panic!() };
        assert_eq!(t.tenant_id, "t");
        assert!(t.test);
        assert_eq!(t.op, Op::Upsert);
    }

    #[test]
    fn auth_sync_test_vector_body() {
        let c = p(
            CallbackKind::AuthSync,
            r#"{"appId":"app001","currentSyncTime":"20220420114117642","flag":1,"instanceId":"inst001","tenantId":"tenant001","testFlag":1,"timeStamp":"20220420114117642","userList":[{"userName":"zhangsan01","name":"张三","orgCode":"10000","role":"admin","enable":"true"}]}"#,
        )
        .unwrap();
        let Command::Auth(a) = c else { panic!() };
        assert_eq!(a.op, AuthOp::Add);
        assert_eq!(a.users.len(), 1);
        assert_eq!(a.users[0].role, Role::Admin);
        assert!(a.users[0].enabled);
        assert_eq!(a.instance_id.as_deref(), Some("inst001"));
    }

    #[test]
    fn auth_sync_variants() {
        // V1 userList as a string, enable as bool, employeeType inside extension.
        let body = r#"{"appId":"a","currentSyncTime":"20220420114117642","flag":"3","tenantId":"t","testFlag":0,
            "userList":"[{\"userName\":\"u1\",\"enable\":false},{\"userName\":\"u1\"}]"}"#;
        let Command::Auth(a) = p(CallbackKind::AuthSync, body).unwrap() else {
            panic!()
        };
        assert_eq!(a.op, AuthOp::Cancel);
        assert_eq!(
            a.users.len(),
            1,
            "duplicate userName collapses to the last entry"
        );
        let body = r#"{"appId":"a","currentSyncTime":"20220420114117642","flag":2,"tenantId":"t","testFlag":0,
            "userList":[{"userName":"u1","name":"N","orgCode":"o","role":"USER","enable":true,
              "extension":{"employeeType":"2","workPlace":"Xi'an","entryDate":"2020-1-2","ledger":"A"}}]}"#;
        let Command::Auth(a) = p(CallbackKind::AuthSync, body).unwrap() else {
            panic!()
        };
        let u = &a.users[0];
        assert_eq!(u.employee_type, Some(2));
        assert_eq!(u.work_place.as_deref(), Some("Xi'an"));
        assert_eq!(u.entry_date.as_deref(), Some("2020-1-2"));
        assert!(u.extension.as_deref().unwrap().contains("ledger"));
    }

    #[test]
    fn validation_names_the_field() {
        let base = |user: &str| {
            format!(
                r#"{{"appId":"a","currentSyncTime":"20220420114117642","flag":1,"tenantId":"t","testFlag":0,"userList":[{{"userName":"ok","name":"n","orgCode":"o","role":"user","enable":"true"}},{user}]}}"#
            )
        };
        let e = p(
            CallbackKind::AuthSync,
            &base(r#"{"userName":"u","name":"n","orgCode":"o","role":"boss","enable":"true"}"#),
        )
        .unwrap_err();
        assert_eq!(e.field, "userList[1].role");
        assert!(e.to_string().contains("`boss`"), "{e}");
        let e = p(
            CallbackKind::AuthSync,
            &base(r#"{"userName":"u","name":"n","orgCode":"o","role":"user","enable":"maybe"}"#),
        )
        .unwrap_err();
        assert_eq!(e.field, "userList[1].enable");
        let e = p(
            CallbackKind::AuthSync,
            &base(r#"{"name":"n","orgCode":"o","role":"user","enable":"true"}"#),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "userList[1].userName: is required");
        let long = "x".repeat(65);
        let e = p(
            CallbackKind::AuthSync,
            &base(&format!(
                r#"{{"userName":"{long}","name":"n","orgCode":"o","role":"user","enable":"true"}}"#
            )),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "userList[1].userName: is 65 characters long, at most 64 allowed"
        );
        let e = p(CallbackKind::TenantSync, r#"{"tenantId":"t","tenantCode":"c","name":"n","domainName":"d","flag":7,"testFlag":0,"timeStamp":"20220413093539534"}"#).unwrap_err();
        assert_eq!(e.to_string(), "flag: must be one of 0, 1, 2, got 7");
        let e = p(CallbackKind::TenantSync, r#"{"tenantId":"t","tenantCode":"c","name":"n","domainName":"d","flag":1,"testFlag":0,"timeStamp":"2022-04-13"}"#).unwrap_err();
        assert_eq!(e.field, "timeStamp");
        let e = p(CallbackKind::TenantSync, r#"{"tenantId":"t","tenantCode":"c","name":"n","domainName":"d","flag":1,"timeStamp":"20220413093539534"}"#).unwrap_err();
        assert_eq!(e.field, "testFlag");
        let e = p(CallbackKind::TenantSync, "[1]").unwrap_err();
        assert_eq!(e.to_string(), "body must be a JSON object");
        assert!(p(CallbackKind::TenantSync, "{nope")
            .unwrap_err()
            .to_string()
            .starts_with("body is not valid JSON"));
    }

    #[test]
    fn deletes_need_only_their_key() {
        let Command::Tenant(t) = p(
            CallbackKind::TenantSync,
            r#"{"tenantId":"t","flag":0,"testFlag":0,"timeStamp":"20220413093539534"}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(t.op, Op::Delete);
        let Command::Org(o) = p(CallbackKind::SingleOrgSync, r#"{"tenantId":"t","orgCode":"1","flag":0,"testFlag":0,"timeStamp":"20220413093539534"}"#).unwrap() else { panic!() };
        assert_eq!(o.op, Op::Delete);
        assert!(p(CallbackKind::SingleOrgSync, r#"{"tenantId":"t","orgCode":"1","flag":1,"testFlag":0,"timeStamp":"20220413093539534"}"#).unwrap_err().to_string().contains("orgName"));
    }

    #[test]
    fn single_org_sync_documented_example_with_duplicate_key() {
        let Command::Org(o) = p(
            CallbackKind::SingleOrgSync,
            r#"{"instanceId":"hua56","tenantId":"68cb0e","instanceId":"hua57","orgCode":"10000","orgName":"开发部","parentCode":"","flag":1,"testFlag":0,"timeStamp":"20220413093539534"}"#,
        )
        .unwrap() else { panic!() };
        assert_eq!(o.parent_code, None);
        assert_eq!(o.instance_id.as_deref(), Some("hua57"));
        assert_eq!(o.org_name, "开发部");
    }

    #[test]
    fn all_org_sync_as_lenient_string() {
        let body = r#"{"tenantId":"t","testFlag":0,"flag":1,"timeStamp":"20220413093539534",
            "orgInfoList":"[{orgCode:\"00000001\", orgName:\"产品部\", parentCode:\"265789314\" }, {orgCode:\"2\", OrgName:\"x, y: {z}\"}]"}"#;
        let Command::FullOrg(f) = p(CallbackKind::AllOrgSync, body).unwrap() else {
            panic!()
        };
        assert_eq!(f.orgs.len(), 2);
        assert_eq!(f.orgs[0].org_name, "产品部");
        assert_eq!(f.orgs[0].parent_code.as_deref(), Some("265789314"));
        assert_eq!(f.orgs[1].org_name, "x, y: {z}");
        assert_eq!(f.orgs[1].parent_code, None);
    }

    #[test]
    fn all_org_sync_as_array_and_v1_names() {
        let body = r#"{"tenantId":"t","testFlag":0,"timeStamp":"20220413093539534",
            "orgInfo":"[{\"orgCode\":\"1\",\"name\":\"A\"}]"}"#;
        let Command::FullOrg(f) = p(CallbackKind::AllOrgSync, body).unwrap() else {
            panic!()
        };
        assert_eq!(f.orgs[0].org_name, "A");
        let body = r#"{"tenantId":"t","testFlag":0,"timeStamp":"20220413093539534",
            "orgInfoList":[{"orgCode":"1","orgName":"A"},{"orgCode":"","orgName":"B"}]}"#;
        let e = p(CallbackKind::AllOrgSync, body).unwrap_err();
        assert_eq!(e.to_string(), "orgInfoList[1].orgCode: must not be empty");
    }

    #[test]
    fn quotes_bare_keys_only_outside_strings() {
        assert_eq!(
            quote_bare_keys(r#"[{a:"b:c,{d", e_1 : 2}]"#),
            r#"[{"a":"b:c,{d", "e_1" : 2}]"#
        );
    }

    /// Every kind of command, from a documented-shape body.
    fn one_of_each() -> Vec<Command> {
        [
            (CallbackKind::TenantSync, r#"{"tenantId":"t","tenantCode":"c","name":"n","domainName":"d","flag":1,"testFlag":0,"timeStamp":"20220413093539534"}"#),
            (CallbackKind::ApplicationSync, r#"{"tenantId":"t","appId":"a","clientId":"c","clientSecret":"s","flag":1,"testFlag":0,"timeStamp":"20220413093539534"}"#),
            (CallbackKind::AuthSync, r#"{"appId":"a","currentSyncTime":"20220420114117642","flag":1,"instanceId":"i","tenantId":"t","testFlag":1,"userList":[{"userName":"u","name":"张三","orgCode":"1","role":"admin","enable":"true"}]}"#),
            (CallbackKind::SingleOrgSync, r#"{"tenantId":"t","orgCode":"1","orgName":"x","flag":1,"testFlag":0,"timeStamp":"20220413093539534"}"#),
            (CallbackKind::AllOrgSync, r#"{"tenantId":"t","orgInfoList":[{"orgCode":"1","orgName":"x"}],"testFlag":0,"timeStamp":"20220413093539534"}"#),
        ]
        .into_iter()
        .map(|(kind, body)| p(kind, body).unwrap())
        .collect()
    }

    #[test]
    fn queued_commands_decode_with_the_tag_anywhere() {
        for command in one_of_each() {
            let q = QueuedCallback {
                message_id: "m".into(),
                received_at_ms: 1,
                replay: None,
                command,
            };
            let bytes = q.to_bytes().unwrap();
            // As written here: the tag first, decoded without buffering.
            let text = String::from_utf8(bytes.clone()).unwrap();
            assert!(text.contains(r#""command":{"type":"#), "{text}");
            assert_eq!(QueuedCallback::from_bytes(&bytes).unwrap(), q);
            // The tag last (another writer): decoded through a buffered copy, the same.
            let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let c = v["command"].as_object_mut().unwrap();
            let tag = c.shift_remove("type").unwrap();
            c.insert("type".into(), tag);
            let moved = serde_json::to_vec(&v).unwrap();
            assert!(!String::from_utf8_lossy(&moved).contains(r#""command":{"type":"#));
            assert_eq!(QueuedCallback::from_bytes(&moved).unwrap(), q);
        }
        let bad = |command: &str| {
            let text = format!(r#"{{"messageId":"m","receivedAtMs":1,"command":{command}}}"#);
            QueuedCallback::from_bytes(text.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(bad(r#"{"tenantId":"t"}"#).contains("missing field `type`"));
        let unknown = bad(r#"{"type":"nope","tenantId":"t"}"#);
        assert!(
            unknown.contains("nope") && unknown.contains("fullOrg"),
            "{unknown}"
        );
        assert!(bad(r#"{"tenantId":"t","type":"nope"}"#).contains("nope"));
        assert!(bad(r#"{"type":"auth","tenantId":"t"}"#).contains("missing field"));
        assert!(bad(r#"[1]"#).contains("a command"));
    }

    #[test]
    fn commands_round_trip_through_the_queue_format() {
        let c = p(CallbackKind::ApplicationSync, r#"{"tenantId":"t","appId":"a","clientId":"c","clientSecret":"s3cr3t","flag":1,"testFlag":0,"timeStamp":"20220413093539534"}"#).unwrap();
        assert!(
            !format!("{c:?}").contains("s3cr3t"),
            "Debug must redact the secret"
        );
        let q = QueuedCallback {
            message_id: "m".into(),
            received_at_ms: 1,
            replay: None,
            command: c,
        };
        assert_eq!(
            QueuedCallback::from_bytes(&q.to_bytes().unwrap()).unwrap(),
            q
        );
    }
}
