//! The change feed: a consumer polling from its last cursor while writers keep applying sees
//! every journal row exactly once, in order; filters and tenant binding hold.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod common;

use axum::http::StatusCode;
use common::{assert_bad_params, fresh_store, get, grant, token};
use kitsync_domain::Scope;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_polling_consumer_sees_every_change_once_while_writes_continue() {
    let (db, store) = fresh_store().await;
    let app = kitsync_api::router(store.clone());
    let token = token(&store, "feed", &[Scope::DirectoryRead], None).await;

    let done = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for b in 0..30 {
                let v = 100 + b as i64;
                let users: Vec<String> = (0..(1 + (b * 13 + w * 7) % 120))
                    .map(|u| format!("u{v}-{u}"))
                    .collect();
                let users: Vec<&str> = users.iter().map(String::as_str).collect();
                let change = grant(&format!("t{w}"), &users, v, false);
                store.apply(&change).await.unwrap();
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
    let all = migrations::testing::journal_ids(store.db()).await.unwrap();
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
    let bound = &common::token(&store, "t1 only", &[Scope::DirectoryRead], Some("t1")).await;
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
    let bad = [
        ("after=x", "after:"),
        ("types=member.exploded", "types:"),
        ("limit=0", "limit:"),
    ];
    assert_bad_params(&app, "/api/v1/events", &token, &bad).await;
    db.cleanup().await;
}
