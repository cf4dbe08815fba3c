//! What the API tests share: sending a request through the router and reading its JSON, and
//! the tenant and authorisation commands that seed a store.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses some; a failure is a panic

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use kitsync_domain::{AuthChange, AuthOp, AuthUser, Command, KitTime, Op, TenantChange};
use serde_json::Value;
use tower::ServiceExt;

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
