//! The change feed: a consumer polling from its last cursor while writers keep applying sees
//! every journal row exactly once, in order; filters and tenant binding hold.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod common;

use axum::http::StatusCode;
use common::get;
use kitsync_domain::{AuthChange, AuthOp, AuthUser, Command, KitTime, Scope};
use kitsync_store::{Store, StoreSettings};
use secrecy::ExposeSecret;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn grant(t: &str, v: i64, users: std::ops::Range<usize>) -> Command {
    Command::Auth(AuthChange {
        tenant_id: t.into(),
        instance_id: None,
        app_id: "app".into(),
        op: AuthOp::Add,
        users: users
            .map(|u| AuthUser {
                name: Some(format!("User {u}")),
                org_code: Some("D1".into()),
                ..AuthUser::named(format!("u{v}-{u}"))
            })
            .collect(),
        test: false,
        version: KitTime(v),
        time_stamp: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_polling_consumer_sees_every_change_once_while_writes_continue() {
    let db = migrations::testing::fresh_db().await.unwrap();
    let store = Store::new(db.conn.clone(), StoreSettings::default());
    let app = kitsync_api::router(store.clone());
    let (_, token) = store
        .create_token("feed", &[Scope::DirectoryRead], None)
        .await
        .unwrap();
    let token = token.expose_secret().to_owned();

    let done = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for b in 0..30 {
                let users = 0..(1 + (b * 13 + w * 7) % 120);
                store
                    .apply(&grant(&format!("t{w}"), 100 + b as i64, users))
                    .await
                    .unwrap();
            }
        }));
    }
    let reader = {
        let app = app.clone();
        let done = Arc::clone(&done);
        let token = token.clone();
        tokio::spawn(async move {
            let mut seen: Vec<i64> = Vec::new();
            let mut cursor = "0".to_owned();
            loop {
                let finished = done.load(Ordering::SeqCst);
                let (status, body) = get(
                    &app,
                    &format!("/api/v1/events?after={cursor}&limit=50"),
                    &token,
                )
                .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let items = body["items"].as_array().unwrap();
                for e in items {
                    seen.push(e["id"].as_str().unwrap().parse().unwrap());
                }
                cursor = body["nextCursor"].as_str().unwrap().to_owned();
                if finished && items.is_empty() {
                    return seen;
                }
            }
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();
    let all: Vec<i64> = store
        .journal_after(0, 1_000_000)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert!(all.len() > 500, "a real stream ({} rows)", all.len());
    assert_eq!(seen, all, "every journal row exactly once, in order");

    // Filters: one tenant, one type; a tenant-bound token must ask for its own tenant.
    let (_, body) = get(
        &app,
        "/api/v1/events?tenantId=t1&types=member.authorized&limit=1000",
        &token,
    )
    .await;
    let items = body["items"].as_array().unwrap();
    assert!(!items.is_empty());
    assert!(items
        .iter()
        .all(|e| e["tenantId"] == "t1" && e["type"] == "member.authorized"));
    let first = &items[0];
    assert_eq!(first["data"]["appId"], "app");
    assert!(first["changedAt"].as_str().unwrap().contains('T'));
    let (_, bound) = store
        .create_token("t1 only", &[Scope::DirectoryRead], Some("t1"))
        .await
        .unwrap();
    let bound = bound.expose_secret();
    assert_eq!(
        get(&app, "/api/v1/events", bound).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&app, "/api/v1/events?tenantId=t2", bound).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&app, "/api/v1/events?tenantId=t1", bound).await.0,
        StatusCode::OK
    );
    for (query, param) in [
        ("after=x", "after:"),
        ("types=member.exploded", "types:"),
        ("limit=0", "limit:"),
    ] {
        let (status, body) = get(&app, &format!("/api/v1/events?{query}"), &token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(
            body["message"].as_str().unwrap().starts_with(param),
            "{body}"
        );
    }
    db.cleanup().await;
}
