//! What the API tests share: a fresh store and its tokens, sending a request through the
//! router and reading its JSON, and the tenant and authorisation commands that seed a store.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses some; a failure is a panic

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use kitsync_domain::{AuthChange, AuthOp, AuthUser, Command, KitTime, Op, Scope, TenantChange};
use kitsync_store::Actor;
use kitsync_store::{Store, StoreSettings};
use migrations::testing::TestDb;
use proptest::test_runner::{Config, TestRunner};
use secrecy::ExposeSecret;
use serde_json::Value;
use tower::ServiceExt;

/// A fresh database (SQLite, or PostgreSQL with `KITSYNC_TEST_DATABASE_URL`) and a store on it.
pub async fn fresh_store() -> (TestDb, Store) {
    let db = migrations::testing::fresh_db().await.unwrap();
    let store = Store::new(db.conn.clone(), StoreSettings::default());
    (db, store)
}

/// The secret of a new token `name` with `scopes`, bound to `tenant` when given.
pub async fn token(store: &Store, name: &str, scopes: &[Scope], tenant: Option<&str>) -> String {
    let (_, secret) = store
        .create_token(&Actor::Cli, name, scopes, tenant)
        .await
        .unwrap();
    secret.expose_secret().to_owned()
}

/// A fresh store holding tenant `t` whose app authorises `users` (see [`seed`]).
pub async fn seeded_store(t: &str, users: &[&str]) -> (TestDb, Store) {
    let (db, store) = fresh_store().await;
    store.apply_batch(&seed(t, users)).await.unwrap();
    (db, store)
}

/// A two-worker runtime, for the property tests that drive the async router from a runner.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A property-test runner of `cases` cases.
pub fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        ..Config::default()
    })
}

/// Each `(query, param)` on `path` answers 400 with a message that starts with `param`.
pub async fn assert_bad_params(
    app: &axum::Router,
    path: &str,
    token: &str,
    cases: &[(&str, &str)],
) {
    for (query, param) in cases {
        let (status, body) = get(app, &format!("{path}?{query}"), token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(
            body["message"].as_str().unwrap().starts_with(param),
            "{query}: {body}"
        );
    }
}

/// The string field `key` of every element of the JSON array `list`.
pub fn strs<'a>(list: &'a Value, key: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v[key].as_str().unwrap())
        .collect()
}

/// `s` percent-encoded but for ASCII letters and digits, for a query string.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Sends `req` through `app`; the status and the JSON body (`Null` when it is not JSON).
pub async fn send(app: &axum::Router, req: Request<Body>) -> (StatusCode, Value) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// `GET path` with a bearer token.
pub async fn get(app: &axum::Router, path: &str, token: &str) -> (StatusCode, Value) {
    let req = Request::get(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    send(app, req).await
}

/// Tenant `t`, named `Name {t}`, at version `v`.
pub fn tenant(t: &str, test: bool, v: i64) -> Command {
    Command::Tenant(TenantChange {
        tenant_id: t.into(),
        instance_id: None,
        order_id: None,
        tenant_code: t.into(),
        name: format!("Name {t}"),
        domain_name: format!("https://{t}.example.com"),
        op: Op::Upsert,
        test,
        version: KitTime(v),
    })
}

/// Tenant `t` (version 1) whose `app` authorises `users` (version 2): live data.
pub fn seed(t: &str, users: &[&str]) -> [Command; 2] {
    [tenant(t, false, 1), grant(t, users, 2, false)]
}

/// `app` of tenant `t` authorises `users` (enabled, role user, no profile) at version `v`.
pub fn grant(t: &str, users: &[&str], v: i64, test: bool) -> Command {
    Command::Auth(AuthChange {
        tenant_id: t.into(),
        instance_id: None,
        app_id: "app".into(),
        op: AuthOp::Add,
        users: users.iter().map(|u| AuthUser::named(*u)).collect(),
        test,
        version: KitTime(v),
        time_stamp: None,
    })
}
