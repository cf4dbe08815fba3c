//! The OpenAPI document of `/api/v1` (`GET /api/v1/openapi.json`) against the router that
//! serves it, on a real store (SQLite, or PostgreSQL with `KITSYNC_TEST_DATABASE_URL`):
//!
//! - the document is OpenAPI 3.1, lists exactly the operations the router serves
//!   ([`kitsync_api::api_v1_operations`]), and every `$ref` and schema keyword in it is one
//!   the checker below understands;
//! - every operation, called on a seeded store, answers a status the document lists for it,
//!   with the documented content type, headers and a body valid against the documented schema
//!   (a small JSON Schema checker of the keywords the document uses; CI also runs
//!   `openapi-spec-validator` and `schemathesis` against the real server, see
//!   `tests/tests/openapi.rs` of the workspace);
//! - every documented value of an enumerated, boolean or bounded parameter is accepted, and a
//!   value outside the documented ones is a 400 naming the parameter.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod common;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request};
use common::{fresh_store, grant, strs, tenant, token};
use http_body_util::BodyExt as _;
use kitsync_api::ApiSettings;
use kitsync_domain::{AppChange, Command, KitTime, Op, OrgChange, Scope, SecretText};
use kitsync_store::{ActivityEvent, ActivityKind, GroupMember, GroupWrite, Store};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tower::ServiceExt;

// ---------------------------------------------------------------------------------------------
// A JSON Schema checker for the keywords the document uses
// ---------------------------------------------------------------------------------------------

/// The schema keywords [`validate`] understands (or that do not constrain a value). The
/// document may use no other: `every_schema_keyword_is_checked` fails first.
const KEYWORDS: &[&str] = &[
    "$ref",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "anyOf",
    "oneOf",
    "allOf",
    "format",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "description",
    "title",
    "example",
    "examples",
    "default",
];

fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("a $ref outside the document: {reference}"));
    doc.pointer(pointer)
        .unwrap_or_else(|| panic!("a $ref to nothing: {reference}"))
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        other => panic!("unknown type {other}"),
    }
}

/// Appends to `errors` every way `v` (at `at`) breaks `schema`.
fn validate(doc: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(s) = schema.as_object() else {
        return; // `true` or `{}`: anything
    };
    // The bound keywords: counts and lengths are whole numbers, minimum and maximum any number.
    let count = |key: &str| s.get(key).and_then(Value::as_u64);
    let number = |key: &str| s.get(key).and_then(Value::as_f64);
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        validate(doc, resolve(doc, r), v, at, errors);
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            other => panic!("type {other}"),
        };
        if !types.iter().any(|t| is_type(v, t)) {
            errors.push(format!("{at}: {v} is not of type {types:?}"));
            return;
        }
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        if !values.contains(v) {
            errors.push(format!("{at}: {v} is not one of {values:?}"));
        }
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
        let ok = any.iter().any(|alt| {
            let mut e = Vec::new();
            validate(doc, alt, v, at, &mut e);
            e.is_empty()
        });
        if !ok {
            errors.push(format!("{at}: matches none of anyOf"));
        }
    }
    if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
        let n = one
            .iter()
            .filter(|alt| {
                let mut e = Vec::new();
                validate(doc, alt, v, at, &mut e);
                e.is_empty()
            })
            .count();
        if n != 1 {
            errors.push(format!("{at}: matches {n} of oneOf, not exactly one"));
        }
    }
    for all in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        validate(doc, all, v, at, errors);
    }
    if let Some(obj) = v.as_object() {
        for name in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = name.as_str().unwrap();
            if !obj.contains_key(name) {
                errors.push(format!("{at}: `{name}` is required"));
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, child) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(p) => validate(doc, p, child, &format!("{at}.{k}"), errors),
                None => {
                    if s.get("additionalProperties") == Some(&Value::Bool(false)) {
                        errors.push(format!("{at}: `{k}` is not allowed"));
                    }
                }
            }
        }
    }
    if let Some(items) = v.as_array() {
        if let Some(item) = s.get("items") {
            for (i, child) in items.iter().enumerate() {
                validate(doc, item, child, &format!("{at}[{i}]"), errors);
            }
        }
        let n = items.len() as u64;
        if count("maxItems").is_some_and(|m| n > m) {
            errors.push(format!("{at}: {n} items, more than maxItems"));
        }
        if count("minItems").is_some_and(|m| n < m) {
            errors.push(format!("{at}: {n} items, fewer than minItems"));
        }
    }
    if let Some(text) = v.as_str() {
        let n = text.chars().count() as u64;
        if count("maxLength").is_some_and(|m| n > m) {
            errors.push(format!("{at}: longer than maxLength"));
        }
        if count("minLength").is_some_and(|m| n < m) {
            errors.push(format!("{at}: shorter than minLength"));
        }
        let ok = match s.get("format").and_then(Value::as_str) {
            Some("date") => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok(),
            Some("date-time") => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
            _ => true,
        };
        if !ok {
            errors.push(format!("{at}: `{text}` is not a {}", s["format"]));
        }
    }
    if let Some(x) = v.as_f64() {
        if number("minimum").is_some_and(|m| x < m) {
            errors.push(format!("{at}: {x} is below the minimum"));
        }
        if number("maximum").is_some_and(|m| x > m) {
            errors.push(format!("{at}: {x} is above the maximum"));
        }
    }
}

/// Calls `f` on every schema of the document (components, parameters, bodies, headers, and
/// the schemas inside them), with where it is.
fn each_schema(doc: &Value, f: &mut dyn FnMut(&str, &Value)) {
    fn inner(s: &Value, at: &str, f: &mut dyn FnMut(&str, &Value)) {
        f(at, s);
        let Some(obj) = s.as_object() else { return };
        for (k, v) in obj {
            match k.as_str() {
                "properties" => {
                    for (name, p) in v.as_object().unwrap() {
                        inner(p, &format!("{at}.{name}"), f);
                    }
                }
                "items" | "additionalProperties" => inner(v, &format!("{at}[]"), f),
                "anyOf" | "oneOf" | "allOf" => {
                    for (i, alt) in v.as_array().unwrap().iter().enumerate() {
                        inner(alt, &format!("{at}/{k}/{i}"), f);
                    }
                }
                _ => {}
            }
        }
    }
    fn walk(v: &Value, at: &str, f: &mut dyn FnMut(&str, &Value)) {
        match v {
            Value::Object(obj) => {
                for (k, child) in obj {
                    let here = format!("{at}/{k}");
                    if k == "schema" {
                        inner(child, &here, f);
                    } else {
                        walk(child, &here, f);
                    }
                }
            }
            Value::Array(list) => {
                for (i, child) in list.iter().enumerate() {
                    walk(child, &format!("{at}/{i}"), f);
                }
            }
            _ => {}
        }
    }
    for (name, s) in doc["components"]["schemas"].as_object().unwrap() {
        inner(s, &format!("#/components/schemas/{name}"), f);
    }
    walk(&doc["paths"], "#/paths", f);
}

// ---------------------------------------------------------------------------------------------
// The router, a seeded store, and answers checked against the document
// ---------------------------------------------------------------------------------------------

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every operation of the document: (operationId, (method, path, operation object)).
fn operations(doc: &Value) -> BTreeMap<String, (String, String, Value)> {
    let mut ops = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(METHODS.contains(&method.as_str()), "{path}: {method}");
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path}: no operationId"))
                .to_owned();
            let old = ops.insert(id.clone(), (method.clone(), path.clone(), op.clone()));
            assert!(old.is_none(), "operationId {id} twice");
        }
    }
    ops
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
    raw: Bytes,
}

async fn call(app: &axum::Router, req: Request<Body>) -> Answer {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let raw = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
        raw,
    }
}

fn request(method: &str, uri: &str, token: Option<&str>, body: Body) -> Request<Body> {
    let mut b = Request::builder()
        .method(method.to_uppercase().as_str())
        .uri(uri);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(body).unwrap()
}

/// The URI of an operation: its path with `params` substituted (percent-encoded, unless the
/// value starts with `%`: then it is taken as encoded), and `query` appended.
fn uri(path: &str, params: &[(&str, &str)], query: &str) -> String {
    let mut p = path.to_owned();
    for (name, value) in params {
        if value.starts_with('%') {
            p = p.replace(&format!("{{{name}}}"), value);
            continue;
        }
        let encoded: String = value
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        p = p.replace(&format!("{{{name}}}"), &encoded);
    }
    assert!(!p.contains('{'), "{path}: a path parameter is missing");
    if query.is_empty() {
        p
    } else {
        format!("{p}?{query}")
    }
}

/// What is wrong with `answer` as an answer of `op`: its status must be listed, and the
/// listed content type, headers and body schema must hold.
fn conformance(doc: &Value, op: &Value, answer: &Answer) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(documented) = op["responses"].get(answer.status.to_string()) else {
        return vec![format!(
            "status {} is not documented ({})",
            answer.status,
            String::from_utf8_lossy(&answer.raw)
        )];
    };
    let documented = match documented.get("$ref").and_then(Value::as_str) {
        Some(r) => resolve(doc, r),
        None => documented,
    };
    for name in documented["headers"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|h| h.0)
    {
        if !answer.headers.contains_key(name.as_str()) {
            errors.push(format!("{}: header {name} missing", answer.status));
        }
    }
    match documented["content"].as_object() {
        None => {
            if !answer.raw.is_empty() {
                errors.push(format!(
                    "{}: a body where none is documented",
                    answer.status
                ));
            }
        }
        Some(content) => {
            let ct = answer
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_owned();
            match content.get(&ct) {
                None => errors.push(format!(
                    "{}: content type `{ct}`, documented {:?}",
                    answer.status,
                    content.keys().collect::<Vec<_>>()
                )),
                Some(media) => {
                    if ct == "application/json" && answer.body.is_null() {
                        errors.push(format!("{}: the body is not JSON", answer.status));
                    }
                    validate(doc, &media["schema"], &answer.body, "body", &mut errors);
                }
            }
        }
    }
    errors
}

struct Seeded {
    _db: migrations::testing::TestDb,
    store: Store,
    /// An embedded queue on the same database, holding one dead letter.
    queue: kitsync_queue::Queue,
    /// `admin`, unbound.
    admin: String,
    /// The ids `/admin/v1` paths name: a held plan, a dead letter, a webhook endpoint, a
    /// token, an OIDC client (leaked: the cases' parameters are `'static`).
    ids: &'static [(&'static str, &'static str)],
    /// `planId` of a second held plan.
    second_plan: &'static [(&'static str, &'static str)],
    /// `directory:read,activity:write,stats:read`, unbound.
    all: String,
    /// `stats:read` only.
    stats_only: String,
    /// Every scope, bound to `t1`.
    bound: String,
}

fn org(t: &str, code: &str, parent: Option<&str>, v: i64) -> Command {
    Command::Org(OrgChange {
        tenant_id: t.into(),
        instance_id: None,
        org_code: code.into(),
        org_name: format!("Dept {code}"),
        parent_code: parent.map(Into::into),
        op: Op::Upsert,
        test: false,
        version: KitTime(v),
    })
}

/// Tenant `t1` (two departments and an orphan, app `app` authorising alice and bob, an ISV
/// group, activity today), test tenant `sandbox`, and tokens.
async fn seeded() -> Seeded {
    let (db, store) = fresh_store().await;
    let now = chrono::Utc::now().timestamp_millis();
    let v = now - 3 * 86_400_000;
    store
        .apply_batch(&[
            tenant("t1", false, v),
            tenant("sandbox", true, v),
            Command::App(AppChange {
                tenant_id: "t1".into(),
                instance_id: None,
                app_id: "app".into(),
                client_id: "client-app".into(),
                client_secret: SecretText("v1:sealed".into()),
                secret_fp: None,
                op: Op::Upsert,
                test: false,
                version: KitTime(v + 1),
            }),
            org("t1", "d1", None, v + 2),
            org("t1", "d2", Some("d1"), v + 3),
            org("t1", "d3", Some("gone"), v + 4),
            grant("t1", &["alice", "bob"], v + 5, false),
            grant("sandbox", &["sam"], v + 5, true),
        ])
        .await
        .unwrap();
    store
        .create_group(
            "t1",
            "team",
            &GroupWrite {
                display_name: "Team".into(),
                external_id: None,
                members: vec![GroupMember {
                    value: "alice".into(),
                    kind: None,
                }],
            },
        )
        .await
        .unwrap();
    store
        .record_activity(&[ActivityEvent {
            tenant_id: "t1".into(),
            user_name: "alice".into(),
            kind: ActivityKind::Login,
            at_ms: now - 60_000,
        }])
        .await
        .unwrap();
    const EVERY: &[Scope] = &[Scope::DirectoryRead, Scope::ActivityWrite, Scope::StatsRead];
    let all = token(&store, "all", EVERY, None).await;
    let stats_only = token(&store, "stats", &[Scope::StatsRead], None).await;
    let bound = token(&store, "bound", EVERY, Some("t1")).await;
    let admin = token(&store, "admin", &[Scope::Admin], None).await;

    // What /admin/v1 operates on: a held plan (a full sync keeping one of three departments),
    // a webhook endpoint, a dead letter, a spare token and an OIDC client.
    let full = Command::FullOrg(kitsync_domain::FullOrgSnapshot {
        tenant_id: "t1".into(),
        instance_id: None,
        orgs: vec![kitsync_domain::OrgInfo {
            org_code: "d1".into(),
            org_name: "d1".into(),
            parent_code: None,
        }],
        test: false,
        version: KitTime(v + 10),
    });
    let kitsync_store::Outcome::Held { plan_id } = store.apply(&full).await.unwrap() else {
        panic!("the full sync was not held");
    };
    // A second tenant with a plan of its own (a newer snapshot of the same tenant would
    // supersede the first plan).
    let mut t2 = vec![tenant("t2", false, v)];
    for code in ["e1", "e2", "e3"] {
        t2.push(org("t2", code, None, v + 1));
    }
    store.apply_batch(&t2).await.unwrap();
    let mut later = full.clone();
    if let Command::FullOrg(f) = &mut later {
        f.tenant_id = "t2".into();
        f.orgs[0].org_code = "e1".into();
    }
    let kitsync_store::Outcome::Held { plan_id: second } = store.apply(&later).await.unwrap()
    else {
        panic!("the second full sync was not held");
    };
    let endpoint = store
        .create_webhook(&kitsync_store::NewWebhook {
            url: "https://hooks.example.com/kit".into(),
            sealed_secret: "sealed".into(),
            tenant_id: None,
            types: None,
            include_test: false,
            after: None,
        })
        .await
        .unwrap();
    let queue = kitsync_queue::Queue::connect(
        &kitsync_queue::QueueSettings {
            name: format!("kitsync.test.{}", uuid::Uuid::new_v4().simple()),
            poll_interval_ms: 20,
            ..kitsync_queue::QueueSettings::default()
        },
        db.conn.clone(),
    )
    .await
    .unwrap();
    queue
        .publish(kitsync_queue::OutgoingMessage {
            message_id: "poison".into(),
            body: b"{\"tenant\":\"t1\"}".to_vec(),
            replay: None,
        })
        .await
        .unwrap();
    let consumer = queue.consumer("openapi").await.unwrap();
    let mut got = Vec::new();
    while got.is_empty() {
        got = consumer
            .next_batch(1, Duration::from_millis(50))
            .await
            .unwrap();
    }
    let dead = got.remove(0);
    consumer.dead_letter(dead, "boom").await.unwrap();
    let dead_id = queue.dead_letters().page(None, None, 1).await.unwrap()[0].id;
    let (spare, _) = store
        .create_token(
            &kitsync_store::Actor::Cli,
            "spare",
            &[Scope::StatsRead],
            None,
        )
        .await
        .unwrap();
    let (client, _) = kitsync_login::clients::register(
        store.db(),
        &kitsync_store::Actor::Cli,
        &kitsync_login::clients::NewClient {
            name: String::new(),
            app_id: "app".into(),
            redirect_uris: vec!["https://app.example.com/cb".into()],
            post_logout_redirect_uris: Vec::new(),
            public: true,
        },
    )
    .await
    .unwrap();
    let leak = |v: String| -> &'static str { Box::leak(v.into_boxed_str()) };
    let ids: Vec<(&'static str, &'static str)> = vec![
        ("planId", leak(plan_id.to_string())),
        ("deadLetterId", leak(dead_id.to_string())),
        ("webhookId", leak(endpoint.id)),
        ("tokenId", leak(spare.id)),
        ("clientId", leak(client.client_id)),
    ];
    Seeded {
        _db: db,
        store,
        queue,
        admin,
        ids: Box::leak(ids.into_boxed_slice()),
        second_plan: Box::leak(vec![("planId", leak(second.to_string()))].into_boxed_slice()),
        all,
        stats_only,
        bound,
    }
}

impl Seeded {
    /// The router, serving the seeded queue's dead letters.
    fn app(&self) -> axum::Router {
        kitsync_api::router_with(
            self.store.clone(),
            ApiSettings::default(),
            Some(self.queue.dead_letters()),
        )
    }
}

async fn document(app: &axum::Router) -> Value {
    let a = call(
        app,
        request("get", "/api/v1/openapi.json", None, Body::empty()),
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.raw));
    assert!(a.body.is_object(), "not JSON");
    a.body
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_document_is_public_openapi_3_1_and_lists_exactly_the_routes() {
    let s = seeded().await;
    let app = kitsync_api::router(s.store.clone());
    let doc = document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "kitsync");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&bearer["type"], &bearer["scheme"]),
        (&json!("http"), &json!("bearer"))
    );

    // Exactly the router's operations, and nothing outside /api/v1.
    let ops = operations(&doc);
    let documented: BTreeSet<(String, String)> = ops
        .values()
        .map(|(m, p, _)| (m.to_uppercase(), p.clone()))
        .collect();
    let routed: BTreeSet<(String, String)> = kitsync_api::api_v1_operations().into_iter().collect();
    assert_eq!(
        documented, routed,
        "the document's operations and the router's /api/v1 routes differ"
    );
    assert!(routed.len() >= 14, "{routed:?}");
    assert!(documented
        .iter()
        .all(|(_, p)| p.starts_with("/api/v1/") || p.starts_with("/admin/v1/")));
    // The /api/v1 routes come from `api_v1()` alone: no source file of the crate routes an
    // /api/v1 path written as a literal, where it could bypass the document.
    let mut dirs = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src"
    ))];
    let mut sources = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                sources += 1;
                let code: String = std::fs::read_to_string(&path)
                    .unwrap()
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect();
                assert!(
                    !code.contains("route(\"/api/v1"),
                    "{}: routes an /api/v1 path outside api_v1()",
                    path.display()
                );
            }
        }
    }
    assert!(sources > 10, "{sources} source files");

    let tags: BTreeSet<&str> = strs(&doc["tags"], "name").into_iter().collect();
    for t in ["directory", "events", "activity", "statistics", "admin"] {
        assert!(tags.contains(t), "tag {t}");
    }
    let scopes = ["directory:read", "activity:write", "stats:read", "admin"];
    for (id, (method, path, op)) in &ops {
        let op_tags: Vec<&str> = op["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert!(
            op_tags.len() == 1 && tags.contains(op_tags[0]),
            "{id}: {op_tags:?}"
        );
        assert!(
            op["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{id}"
        );
        // Path parameters: exactly those of the template, required.
        let in_template: BTreeSet<String> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(str::to_owned)
            .collect();
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let in_path: BTreeSet<String> = params
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(p["required"], true, "{id}: {p}");
                p["name"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(in_template, in_path, "{id}: path parameters");
        let mut names = BTreeSet::new();
        for p in &params {
            assert!(
                p["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{id}: parameter {} has no description",
                p["name"]
            );
            assert!(
                names.insert(p["name"].as_str().unwrap()),
                "{id}: {} twice",
                p["name"]
            );
        }
        // Security: the bearer scheme with the scope, which the description names too.
        let responses = op["responses"].as_object().unwrap();
        if id == "getOpenApi" {
            assert_eq!(op["security"], json!([{}]), "{id}");
            continue;
        }
        let security = op["security"].as_array().unwrap();
        assert_eq!(security.len(), 1, "{id}: {security:?}");
        let required = security[0]["bearer"].as_array().unwrap();
        assert_eq!(required.len(), 1, "{id}");
        let scope = required[0].as_str().unwrap();
        assert!(scopes.contains(&scope), "{id}: {scope}");
        assert!(
            op["description"]
                .as_str()
                .unwrap()
                .contains(&format!("`{scope}`")),
            "{id}: the description does not name the scope {scope}"
        );
        assert!(
            responses.keys().any(|k| k.starts_with('2')),
            "{id}: no success answer"
        );
        for status in ["400", "401", "403", "500", "503"] {
            assert!(responses.contains_key(status), "{id}: {status}");
        }
        let body_statuses = responses.contains_key("413") && responses.contains_key("408");
        assert_eq!(
            body_statuses,
            op.get("requestBody").is_some(),
            "{id}: 408/413 are for operations that read a body"
        );
        assert!(
            method != "post" || op.get("requestBody").is_some() || path.starts_with("/admin/v1/"),
            "{id}: a POST without a body"
        );
    }

    // Every reference resolves (`resolve` panics otherwise) and every schema keyword is one
    // the checker enforces.
    each_schema(&doc, &mut |at, schema| {
        for key in schema.as_object().into_iter().flatten().map(|kv| kv.0) {
            assert!(KEYWORDS.contains(&key.as_str()), "{at}: keyword {key}");
        }
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            resolve(&doc, r);
        }
    });
}

#[test]
fn the_checker_refuses_what_the_schemas_forbid() {
    use utoipa::OpenApi as _;
    let doc = serde_json::to_value(kitsync_api::openapi::ApiDoc::openapi()).unwrap();
    let schema = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let errors = |name: &str, v: Value| {
        let mut e = Vec::new();
        validate(&doc, &schema(name), &v, "body", &mut e);
        e
    };
    let tenant = json!({"tenantId": "t", "tenantCode": "t", "name": "T", "domainName": null,
                        "test": false, "instanceIds": []});
    assert_eq!(errors("TenantBody", tenant.clone()), Vec::<String>::new());
    let mut wrong = tenant.clone();
    wrong["tenantId"] = json!(1);
    assert!(!errors("TenantBody", wrong).is_empty());
    let mut missing = tenant.clone();
    missing.as_object_mut().unwrap().remove("domainName");
    assert!(!errors("TenantBody", missing).is_empty(), "required");
    assert!(!errors("Page_TenantBody", json!({"items": [tenant]})).is_empty());
    assert!(!errors("ErrorBody", json!({"code": "teapot", "message": "m"})).is_empty());
    assert!(errors("ErrorBody", json!({"code": "not_found", "message": "m"})).is_empty());
    assert!(!errors(
        "TenantItem",
        json!({"tenantId": "t", "name": "n", "authorized": -1,
                                         "active": 0, "lastActiveAt": null})
    )
    .is_empty());
    assert!(!errors(
        "DateRange",
        json!({"from": "2026-13-01", "to": "2026-01-01"})
    )
    .is_empty());
    // A department page of either form, and not a page of members.
    let list = json!({"items": [{"orgCode": "d", "orgName": "D", "parentCode": null}],
                      "nextCursor": null});
    assert!(errors("DepartmentsBody", list).is_empty());
    assert!(!errors(
        "DepartmentsBody",
        json!({"items": [{"userName": "u"}], "nextCursor": null})
    )
    .is_empty());
}

#[test]
fn the_documented_limits_are_the_enforced_ones() {
    use utoipa::OpenApi as _;
    let doc = serde_json::to_value(kitsync_api::openapi::ApiDoc::openapi()).unwrap();
    let s = &doc["components"]["schemas"];
    assert_eq!(
        s["ActivityBatch"]["properties"]["events"]["maxItems"],
        json!(kitsync_api::activity::MAX_EVENTS)
    );
    for field in ["tenantId", "userName"] {
        assert_eq!(
            s["ActivityIn"]["properties"][field]["maxLength"],
            json!(kitsync_api::activity::MAX_ID_CHARS),
            "{field}"
        );
    }
    let ops = operations(&doc);
    for (id, (_, _, op)) in &ops {
        for p in op["parameters"].as_array().into_iter().flatten() {
            if p["name"] == "limit" {
                assert_eq!(p["schema"]["minimum"], 1, "{id}");
                assert_eq!(
                    p["schema"]["maximum"],
                    json!(kitsync_api::page::MAX_LIMIT),
                    "{id}"
                );
            }
        }
    }
}

/// A call of an operation: its operationId, path parameters, query, token, body, and the
/// status it must answer.
struct Case {
    op: &'static str,
    params: &'static [(&'static str, &'static str)],
    query: String,
    token: Tok,
    body: Option<String>,
    status: u16,
}

#[derive(Clone, Copy)]
enum Tok {
    None,
    All,
    StatsOnly,
    Bound,
    Admin,
}

fn case(
    op: &'static str,
    params: &'static [(&'static str, &'static str)],
    query: &str,
    token: Tok,
    status: u16,
) -> Case {
    Case {
        op,
        params,
        query: query.to_owned(),
        token,
        body: None,
        status,
    }
}

#[tokio::test]
async fn every_operation_answers_a_documented_status_with_a_valid_body() {
    let s = seeded().await;
    let app = s.app();
    let doc = document(&app).await;
    let ops = operations(&doc);
    let t1: &[(&str, &str)] = &[("tenantId", "t1")];
    let now = chrono::Utc::now();
    let at = |offset_s: i64| (now + chrono::Duration::seconds(offset_s)).to_rfc3339();
    let batch = json!({"events": [
        {"tenantId": "t1", "userName": "alice", "kind": "use", "at": at(-5)},
        {"tenantId": "t1", "userName": "stranger", "kind": "login", "at": at(-5)},
        {"tenantId": "t1", "userName": "bob", "kind": "use", "at": at(3600)},
        {"tenantId": "t1", "userName": "bob", "kind": "sleep", "at": at(-5)},
    ]})
    .to_string();
    let today = (now + chrono::Duration::hours(8)).date_naive();
    let period = format!("from={}&to={}", today - chrono::Duration::days(9), today);
    let mut cases = vec![
        case("getOpenApi", &[], "", Tok::None, 200),
        case("listTenants", &[], "", Tok::All, 200),
        case(
            "listTenants",
            &[],
            "includeTest=true&limit=1",
            Tok::All,
            200,
        ),
        case("listTenants", &[], "", Tok::Bound, 200),
        case("listTenants", &[], "limit=0", Tok::All, 400),
        // Refused by axum's extractors as plain text before kitsync_api::extract (schemathesis
        // found the first).
        case("listTenants", &[], "limit=1&limit=2", Tok::All, 400),
        case("getTenant", &[("tenantId", "%FF")], "", Tok::All, 400),
        case("listTenants", &[], "", Tok::None, 401),
        case("listTenants", &[], "", Tok::StatsOnly, 403),
        case("getTenant", t1, "", Tok::All, 200),
        case(
            "getTenant",
            &[("tenantId", "sandbox")],
            "includeTest=true",
            Tok::All,
            200,
        ),
        case("getTenant", &[("tenantId", "sandbox")], "", Tok::All, 404),
        case("getTenant", &[("tenantId", "sandbox")], "", Tok::Bound, 403),
        case("getTenant", t1, "includeTest=yes", Tok::All, 400),
        case("listDepartments", t1, "", Tok::All, 200),
        case("listDepartments", t1, "view=tree", Tok::All, 200),
        case("listDepartments", t1, "view=list&limit=1", Tok::All, 200),
        case("listDepartments", t1, "view=graph", Tok::All, 400),
        case(
            "listDepartments",
            &[("tenantId", "nope")],
            "",
            Tok::All,
            404,
        ),
        case("listMembers", t1, "", Tok::All, 200),
        case(
            "listMembers",
            t1,
            "role=user&enabled=true&appId=app&q=al",
            Tok::All,
            200,
        ),
        case("listMembers", t1, "limit=1", Tok::All, 200),
        case("listMembers", &[("tenantId", "nope")], "", Tok::All, 404),
        case(
            "getMember",
            &[("tenantId", "t1"), ("userName", "alice")],
            "",
            Tok::All,
            200,
        ),
        case(
            "getMember",
            &[("tenantId", "t1"), ("userName", "zed")],
            "",
            Tok::All,
            404,
        ),
        case(
            "listMemberChanges",
            &[("tenantId", "t1"), ("userName", "alice")],
            "limit=1",
            Tok::All,
            200,
        ),
        case("listDepartments", t1, "parent=", Tok::All, 200),
        case("listDepartments", t1, "parent=d1", Tok::All, 200),
        case("listApps", t1, "", Tok::All, 200),
        case("listApps", &[("tenantId", "nope")], "", Tok::All, 404),
        case(
            "listAuthorizations",
            &[("tenantId", "t1"), ("appId", "app")],
            "",
            Tok::All,
            200,
        ),
        case(
            "listAuthorizations",
            &[("tenantId", "t1"), ("appId", "ghost")],
            "",
            Tok::All,
            404,
        ),
        case("listGroups", t1, "", Tok::All, 200),
        case("listGroups", t1, "limit=1", Tok::All, 200),
        case("listEvents", &[], "", Tok::All, 200),
        case(
            "listEvents",
            &[],
            "types=member,department.added&limit=2",
            Tok::All,
            200,
        ),
        case("listEvents", &[], "tenantId=t1&after=3", Tok::Bound, 200),
        case("listEvents", &[], "types=nothing", Tok::All, 400),
        case("listEvents", &[], "", Tok::Bound, 403),
        case("statsOverview", &[], "", Tok::All, 200),
        case("statsOverview", &[], &period, Tok::All, 200),
        case("statsOverview", &[], "preset=day", Tok::All, 200),
        case("statsOverview", &[], "preset=90d", Tok::All, 400),
        case("statsOverview", &[], "", Tok::Bound, 403),
        case("statsDaily", &[], "preset=30d", Tok::All, 200),
        case("statsTenants", &[], "sort=-active", Tok::All, 200),
        case(
            "statsTenants",
            &[],
            "neverActive=true&preset=30d",
            Tok::All,
            200,
        ),
        case("statsTenants", &[], "sort=revenue", Tok::All, 400),
    ];
    let ids = s.ids;
    let admin_cases = [
        case("adminListPlans", &[], "status=held", Tok::Admin, 200),
        case("adminListPlans", &[], "", Tok::All, 403),
        case("adminGetPlan", ids, "", Tok::Admin, 200),
        case("adminGetPlan", &[("planId", "999999")], "", Tok::Admin, 404),
        case("adminApprovePlan", ids, "", Tok::Admin, 200),
        case("adminRejectPlan", ids, "", Tok::Admin, 409),
        case("adminRejectPlan", s.second_plan, "", Tok::Admin, 200),
        case("adminListDeadLetters", &[], "state=all", Tok::Admin, 200),
        case("adminGetDeadLetter", ids, "", Tok::Admin, 200),
        case("adminReplayDeadLetter", ids, "", Tok::Admin, 200),
        case("adminReplayDeadLetter", ids, "", Tok::Admin, 409),
        case("adminReplayAllDeadLetters", &[], "", Tok::Admin, 200),
        case("adminListWebhooks", &[], "", Tok::Admin, 200),
        case(
            "adminListWebhookDeliveries",
            ids,
            "limit=5",
            Tok::Admin,
            200,
        ),
        case("adminDisableWebhook", ids, "", Tok::Admin, 200),
        case("adminRetryWebhook", ids, "", Tok::Admin, 409),
        case("adminEnableWebhook", ids, "", Tok::Admin, 200),
        case("adminRetryWebhook", ids, "", Tok::Admin, 200),
        case("adminListTokens", &[], "", Tok::Admin, 200),
        case("adminRevokeToken", ids, "", Tok::Admin, 200),
        case("adminRevokeToken", ids, "", Tok::Bound, 403),
        case("adminListOidcClients", &[], "", Tok::Admin, 200),
        case("adminDeleteOidcClient", ids, "", Tok::Admin, 204),
        case("adminDeleteOidcClient", ids, "", Tok::Admin, 404),
        case("adminListAudit", &[], "limit=5", Tok::Admin, 200),
    ];
    cases.extend(admin_cases);
    cases.push(Case {
        body: Some(r#"{"name": "ci", "scopes": ["stats:read"]}"#.into()),
        ..case("adminCreateToken", &[], "", Tok::Admin, 201)
    });
    cases.push(Case {
        body: Some(r#"{"name": "ci", "scopes": ["root"]}"#.into()),
        ..case("adminCreateToken", &[], "", Tok::Admin, 400)
    });
    cases.push(Case {
        body: Some(r#"{"appId": "app", "redirectUris": ["https://a.example.com/cb"]}"#.into()),
        ..case("adminCreateOidcClient", &[], "", Tok::Admin, 201)
    });
    for (token, status) in [(Tok::All, 200), (Tok::StatsOnly, 403), (Tok::None, 401)] {
        cases.push(Case {
            body: Some(batch.clone()),
            ..case("postActivity", &[], "", token, status)
        });
    }
    cases.push(Case {
        body: Some(r#"{"nope": 1}"#.into()),
        ..case("postActivity", &[], "", Tok::All, 400)
    });

    let mut failures = Vec::new();
    let mut ok_ops = BTreeSet::new();
    let mut statuses = BTreeSet::new();
    for c in &cases {
        let (method, path, op) = ops
            .get(c.op)
            .unwrap_or_else(|| panic!("no operation {}", c.op));
        let target = uri(path, c.params, &c.query);
        let token = match c.token {
            Tok::None => None,
            Tok::All => Some(s.all.as_str()),
            Tok::StatsOnly => Some(s.stats_only.as_str()),
            Tok::Bound => Some(s.bound.as_str()),
            Tok::Admin => Some(s.admin.as_str()),
        };
        let body = c.body.clone().map_or_else(Body::empty, Body::from);
        let a = call(&app, request(method, &target, token, body)).await;
        let label = format!("{} {target}", method.to_uppercase());
        if a.status != c.status {
            failures.push(format!(
                "{label}: {} instead of {} ({})",
                a.status,
                c.status,
                String::from_utf8_lossy(&a.raw)
            ));
        }
        if a.status == 404 && a.body["code"] != "not_found" {
            failures.push(format!("{label}: a 404 of the router, not of the handler"));
        }
        for e in conformance(&doc, op, &a) {
            failures.push(format!("{label}: {e}"));
        }
        if (200..300).contains(&a.status) {
            ok_ops.insert(c.op);
        }
        statuses.insert(a.status);
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // Nothing left unchecked: every operation succeeded at least once, and the pages and
    // trees above were not empty.
    let all_ops: BTreeSet<&str> = ops.keys().map(String::as_str).collect();
    assert_eq!(ok_ops, all_ops, "operations without a 2xx case");
    assert_eq!(
        statuses,
        [200, 201, 204, 400, 401, 403, 404, 409]
            .into_iter()
            .collect(),
        "statuses seen"
    );
}

#[tokio::test]
async fn body_limits_and_load_shedding_answer_as_documented() {
    let s = seeded().await;
    let app = kitsync_api::router_with(
        s.store.clone(),
        ApiSettings {
            body_limit_bytes: 256,
            body_read_timeout_ms: 300,
            max_concurrent_requests: 1,
            ..ApiSettings::default()
        },
        None,
    );
    let doc = document(&app).await;
    let ops = operations(&doc);
    let post = &ops["postActivity"].2;
    let tenants = &ops["listTenants"].2;
    let check = |op: &Value, a: &Answer, status: u16| {
        assert_eq!(a.status, status, "{}", String::from_utf8_lossy(&a.raw));
        let e = conformance(&doc, op, a);
        assert!(e.is_empty(), "{e:#?}");
    };
    // 413: over the limit.
    let big = json!({"events": [{"tenantId": "t1", "userName": "x".repeat(300),
                                 "kind": "use", "at": "2026-01-01T00:00:00Z"}]});
    let a = call(
        &app,
        request(
            "post",
            "/api/v1/activity",
            Some(&s.all),
            Body::from(big.to_string()),
        ),
    )
    .await;
    check(post, &a, 413);
    // 408: a body that does not arrive; meanwhile it holds the only slot, so another request
    // is shed (503). The body says when it is first read: the slot is taken by then.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    tx.send(Ok(Bytes::from_static(b"{"))).await.unwrap();
    let reading = std::sync::Arc::new(tokio::sync::Notify::new());
    let stream =
        futures_util::stream::unfold((rx, reading.clone()), |(mut rx, reading)| async move {
            reading.notify_one();
            rx.recv().await.map(|item| (item, (rx, reading)))
        });
    let slow = request(
        "post",
        "/api/v1/activity",
        Some(&s.all),
        Body::from_stream(stream),
    );
    let held = tokio::spawn({
        let app = app.clone();
        async move { call(&app, slow).await }
    });
    tokio::time::timeout(Duration::from_secs(5), reading.notified())
        .await
        .expect("the slow body is read");
    let a = call(
        &app,
        request("get", "/api/v1/tenants", Some(&s.all), Body::empty()),
    )
    .await;
    check(tenants, &a, 503);
    let a = held.await.unwrap();
    check(post, &a, 408);
    drop(tx);
}

/// Values a parameter's schema says are valid, and values it says are not (empty when the
/// schema does not say).
fn values(schema: &Value) -> (Vec<String>, Vec<String>) {
    if let Some(e) = schema["enum"].as_array() {
        let good = e.iter().map(|v| v.as_str().unwrap().to_owned()).collect();
        return (good, vec!["not-a-value".into()]);
    }
    match schema["type"].as_str() {
        Some("boolean") => (vec!["true".into(), "false".into()], vec!["maybe".into()]),
        Some("integer") => {
            let mut good = Vec::new();
            let mut bad = vec!["1.5".into(), "ten".into()];
            if let Some(min) = schema["minimum"].as_i64() {
                good.push(min.to_string());
                bad.push((min - 1).to_string());
            }
            if let Some(max) = schema["maximum"].as_i64() {
                good.push(max.to_string());
                bad.push((max + 1).to_string());
            }
            (good, bad)
        }
        Some("string") => match schema["maxLength"].as_u64() {
            Some(n) => {
                let n = usize::try_from(n).unwrap();
                (vec!["a".repeat(n)], vec!["a".repeat(n + 1)])
            }
            None => (Vec::new(), Vec::new()),
        },
        _ => (Vec::new(), Vec::new()),
    }
}

#[tokio::test]
async fn documented_parameter_values_are_accepted_and_others_refused_by_name() {
    let s = seeded().await;
    let app = s.app();
    let doc = document(&app).await;
    let mut params = vec![("tenantId", "t1"), ("userName", "alice"), ("appId", "app")];
    params.extend_from_slice(s.ids);
    let mut failures = Vec::new();
    let mut tried = 0;
    for (id, (method, path, op)) in operations(&doc) {
        if method != "get" {
            continue;
        }
        for p in op["parameters"].as_array().into_iter().flatten() {
            if p["in"] != "query" {
                continue;
            }
            let name = p["name"].as_str().unwrap();
            let (good, bad) = values(&p["schema"]);
            for (value, expect) in good
                .iter()
                .map(|v| (v, 200))
                .chain(bad.iter().map(|v| (v, 400)))
            {
                tried += 1;
                let target = uri(&path, &params, &format!("{name}={value}"));
                let token = if path.starts_with("/admin/") {
                    &s.admin
                } else {
                    &s.all
                };
                let a = call(&app, request(&method, &target, Some(token), Body::empty())).await;
                if a.status != expect {
                    failures.push(format!(
                        "{id} {target}: {} instead of {expect} ({})",
                        a.status,
                        String::from_utf8_lossy(&a.raw)
                    ));
                } else if expect == 400
                    && !a.body["message"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with(&format!("{name}:"))
                {
                    failures.push(format!(
                        "{id} {target}: the 400 does not name {name}: {}",
                        a.body
                    ));
                }
                for e in conformance(&doc, &op, &a) {
                    failures.push(format!("{id} {target}: {e}"));
                }
            }
        }
    }
    // view, role, enabled, q, includeTest, limit, after, preset, sort, neverActive…
    assert!(tried > 100, "only {tried} values tried");
    assert!(failures.is_empty(), "{failures:#?}");
}
