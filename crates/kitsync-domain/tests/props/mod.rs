//! What the parser tests share: a valid body of each callback, and [`check`], the properties
//! every answer of `kitsync_domain::parse::parse` must have.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses some; a failure is a panic

use kitsync_domain::parse::parse;
use kitsync_domain::signing::canonical_payload;
use kitsync_domain::{CallbackKind, Command, FieldError, QueuedCallback};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Every field name the parser reads (crates/kitsync-domain/src/parse.rs); an error's path
/// is made of these.
pub const FIELDS: &[&str] = &[
    "tenantId",
    "instanceId",
    "orderId",
    "tenantCode",
    "name",
    "domainName",
    "flag",
    "testFlag",
    "timeStamp",
    "appId",
    "clientId",
    "clientSecret",
    "currentSyncTime",
    "userList",
    "userName",
    "orgCode",
    "position",
    "employeeCode",
    "employeeType",
    "role",
    "enable",
    "mobile",
    "email",
    "workPlace",
    "entryDate",
    "extension",
    "orgInfoList",
    "orgName",
    "parentCode",
];

/// A valid body of `kind`, every optional field present (the documented examples, fuller).
pub fn valid(kind: CallbackKind) -> Value {
    match kind {
        CallbackKind::TenantSync => json!({
            "instanceId": "", "orderId": "CS1906666666ABCDE", "tenantId": "68cb0e",
            "tenantCode": "huawei", "name": "huaiweitest",
            "domainName": "https://example.tenantaccount.com", "flag": 1, "testFlag": 0,
            "timeStamp": "20220413093539534",
        }),
        CallbackKind::ApplicationSync => json!({
            "instanceId": "inst001", "tenantId": "68cb0e", "appId": "app001",
            "clientId": "client001", "clientSecret": "Y2lwaGVydGV4dA==", "flag": 1,
            "testFlag": 0, "timeStamp": "20220413093539534",
        }),
        CallbackKind::AuthSync => json!({
            "appId": "app001", "currentSyncTime": "20220420114117642", "flag": 1,
            "instanceId": "inst001", "tenantId": "tenant001", "testFlag": 1,
            "timeStamp": "20220420114117642",
            "userList": [
                {"userName": "zhangsan01", "name": "张三", "orgCode": "10000", "role": "admin",
                 "enable": "true", "position": "engineer", "employeeCode": "E1",
                 "employeeType": 1, "mobile": "13800000000", "email": "z@example.com",
                 "workPlace": "Xi'an", "entryDate": "2020-01-02",
                 "extension": {"ledger": "A"}},
                {"userName": "lisi02", "name": "李四", "orgCode": "10001", "role": "user",
                 "enable": false,
                 "extension": "{\"employeeType\":\"2\",\"workPlace\":\"Shenzhen\"}"},
            ],
        }),
        CallbackKind::SingleOrgSync => json!({
            "instanceId": "hua56", "tenantId": "68cb0e", "orgCode": "10000",
            "orgName": "开发部", "parentCode": "", "flag": 1, "testFlag": 0,
            "timeStamp": "20220413093539534",
        }),
        CallbackKind::AllOrgSync => json!({
            "tenantId": "68cb0e", "instanceId": "hua56", "testFlag": 0, "flag": 1,
            "timeStamp": "20220413093539534",
            "orgInfoList": [
                {"orgCode": "1", "orgName": "总部", "parentCode": ""},
                {"orgCode": "2", "OrgName": "研发", "parentCode": "1"},
            ],
        }),
    }
}

/// How the parser answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Accepted,
    Refused(FieldError),
}

/// Parses `bytes` as `kind` and checks the answer (see the module docs).
pub fn check(kind: CallbackKind, bytes: &[u8]) -> Result<Answer, TestCaseError> {
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
    match parse(kind, bytes) {
        Err(e) => {
            prop_assert!(
                !e.problem.trim().is_empty(),
                "{kind}: empty problem ({shown})"
            );
            if e.field.is_empty() {
                prop_assert!(
                    e.problem.starts_with("body "),
                    "{kind}: an error without a field is about the body: {e} ({shown})"
                );
            } else {
                field_path_is_known(&e, bytes, &shown)?;
            }
            Ok(Answer::Refused(e))
        }
        Ok(command) => {
            prop_assert_eq!(command.kind(), kind);
            validated(&command)
                .map_err(|why| TestCaseError::fail(format!("{kind}: accepted {why} ({shown})")))?;
            let queued = QueuedCallback {
                message_id: "m".into(),
                received_at_ms: 1,
                replay: None,
                command: command.clone(),
            };
            let back = QueuedCallback::from_bytes(&queued.to_bytes().unwrap());
            prop_assert_eq!(back.ok(), Some(queued), "the queue format round-trips");
            // The signature may cover the canonical form; it must mean the same.
            let canonical = canonical_payload(bytes)
                .map_err(|e| TestCaseError::fail(format!("{kind}: no canonical form: {e}")))?;
            prop_assert_eq!(
                parse(kind, &canonical),
                Ok(command),
                "the canonical form parses the same ({})",
                shown
            );
            Ok(Answer::Accepted)
        }
    }
}

/// Each segment of the error's path (`userList[3].role`) is a field the parser reads, and
/// an index is within the list the body sent.
fn field_path_is_known(e: &FieldError, bytes: &[u8], shown: &str) -> Result<(), TestCaseError> {
    for segment in e.field.split('.') {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => (name, rest.strip_suffix(']').map(str::parse::<usize>)),
            None => (segment, None),
        };
        prop_assert!(
            FIELDS.contains(&name),
            "`{}` in `{}` is not a field the parser reads ({})",
            name,
            e,
            shown
        );
        if let Some(index) = index {
            let index = index.map_err(|_| TestCaseError::fail(format!("bad index in {e}")))?;
            if let Some(len) = list_len(bytes, name) {
                prop_assert!(index < len, "{} points past the list of {}", e, len);
            }
        }
    }
    Ok(())
}

/// The length of the list `name` (or a key equal ignoring case, or V1's `orgInfo`), when
/// the body sends it as an array.
fn list_len(bytes: &[u8], name: &str) -> Option<usize> {
    let body: Value = serde_json::from_slice(bytes).ok()?;
    let obj = body.as_object()?;
    let names: &[&str] = if name == "orgInfoList" {
        &["orgInfoList", "orgInfo"]
    } else {
        &[name]
    };
    obj.iter()
        .filter(|(k, _)| names.iter().any(|n| k.eq_ignore_ascii_case(n)))
        .find_map(|(_, v)| v.as_array().map(Vec::len))
}

/// The validation an accepted command claims (crates/kitsync-domain/src/parse.rs): each
/// string within its documented length, without control characters (U+0000 included: no
/// database column could hold it), required ones non-empty.
pub fn validated(c: &Command) -> Result<(), String> {
    fn s(field: &str, v: &str, max: usize, required: bool) -> Result<(), String> {
        let n = v.chars().count();
        if n > max {
            return Err(format!("{field} of {n} characters (at most {max})"));
        }
        if v.chars().any(char::is_control) {
            return Err(format!("{field} with a control character: {v:?}"));
        }
        if required && v.trim().is_empty() {
            return Err(format!("an empty {field}"));
        }
        Ok(())
    }
    fn o(field: &str, v: Option<&String>, max: usize) -> Result<(), String> {
        v.map_or(Ok(()), |v| s(field, v, max, true))
    }
    match c {
        Command::Tenant(t) => {
            let upsert = t.op == kitsync_domain::Op::Upsert;
            s("tenantId", &t.tenant_id, 64, true)?;
            o("instanceId", t.instance_id.as_ref(), 64)?;
            o("orderId", t.order_id.as_ref(), 64)?;
            s("tenantCode", &t.tenant_code, 64, upsert)?;
            s("name", &t.name, 255, upsert)?;
            s("domainName", &t.domain_name, 255, upsert)
        }
        Command::App(a) => {
            let upsert = a.op == kitsync_domain::Op::Upsert;
            s("tenantId", &a.tenant_id, 64, true)?;
            o("instanceId", a.instance_id.as_ref(), 64)?;
            s("appId", &a.app_id, 64, true)?;
            s("clientId", &a.client_id, 64, upsert)?;
            s("clientSecret", &a.client_secret.0, 8192, upsert)
        }
        Command::Auth(a) => {
            s("tenantId", &a.tenant_id, 64, true)?;
            o("instanceId", a.instance_id.as_ref(), 64)?;
            s("appId", &a.app_id, 64, true)?;
            let mut names = std::collections::HashSet::new();
            for u in &a.users {
                s("userName", &u.user_name, 64, true)?;
                if !names.insert(&u.user_name) {
                    return Err(format!("userName {} twice", u.user_name));
                }
                o("name", u.name.as_ref(), 64)?;
                o("orgCode", u.org_code.as_ref(), 64)?;
                o("position", u.position.as_ref(), 64)?;
                o("employeeCode", u.employee_code.as_ref(), 64)?;
                o("mobile", u.mobile.as_ref(), 32)?;
                o("email", u.email.as_ref(), 128)?;
                o("workPlace", u.work_place.as_ref(), 255)?;
                o("entryDate", u.entry_date.as_ref(), 64)?;
                if u.employee_type.is_some_and(|t| !(1..=4).contains(&t)) {
                    return Err(format!("employeeType {:?}", u.employee_type));
                }
                // Kept as received (JSON text: it may hold line breaks), but never U+0000.
                if u.extension.as_ref().is_some_and(|e| e.contains('\0')) {
                    return Err("an extension holding U+0000".into());
                }
                if !a.op.removes() && (u.name.is_none() || u.org_code.is_none()) {
                    return Err(format!("{} without name or orgCode", u.user_name));
                }
            }
            Ok(())
        }
        Command::Org(g) => {
            s("tenantId", &g.tenant_id, 64, true)?;
            o("instanceId", g.instance_id.as_ref(), 64)?;
            s("orgCode", &g.org_code, 64, true)?;
            s(
                "orgName",
                &g.org_name,
                128,
                g.op == kitsync_domain::Op::Upsert,
            )?;
            o("parentCode", g.parent_code.as_ref(), 64)
        }
        Command::FullOrg(f) => {
            s("tenantId", &f.tenant_id, 64, true)?;
            o("instanceId", f.instance_id.as_ref(), 64)?;
            let mut codes = std::collections::HashSet::new();
            for d in &f.orgs {
                s("orgCode", &d.org_code, 64, true)?;
                s("orgName", &d.org_name, 128, true)?;
                o("parentCode", d.parent_code.as_ref(), 64)?;
                if !codes.insert(&d.org_code) {
                    return Err(format!("orgCode {} twice", d.org_code));
                }
            }
            Ok(())
        }
    }
}
