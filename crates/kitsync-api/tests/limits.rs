//! What a request may cost the API before and after it is authenticated: no body is read
//! before the token and scope are checked, bodies are bounded in size and arrival time, and
//! load beyond the concurrency limit or a request running too long gets a 503 at once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod common;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use common::send;
use http_body_util::BodyExt as _;
use kitsync_api::ApiSettings;
use kitsync_domain::Scope;
use kitsync_store::Store;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// A body that counts what was read of it and never ends until `tx` is dropped.
fn watched_body(
    read: Arc<AtomicUsize>,
) -> (
    tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    Body,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let stream = futures_util::stream::poll_fn(move |cx| {
        let next = rx.poll_recv(cx);
        if let std::task::Poll::Ready(Some(Ok(b))) = &next {
            read.fetch_add(b.len(), Ordering::SeqCst);
        }
        next
    });
    (tx, Body::from_stream(stream))
}

struct Fixture {
    app: axum::Router,
    store: Store,
    _db: migrations::testing::TestDb,
}

async fn fixture(settings: ApiSettings) -> Fixture {
    let (db, store) = common::fresh_store().await;
    Fixture {
        app: kitsync_api::router_with(store.clone(), settings, None),
        store,
        _db: db,
    }
}

impl Fixture {
    async fn token(&self, scopes: &[Scope]) -> String {
        common::token(&self.store, "t", scopes, None).await
    }
}

#[tokio::test]
async fn no_body_is_read_before_the_caller_is_admitted() {
    let f = fixture(ApiSettings::default()).await;
    let stats = f.token(&[Scope::StatsRead]).await;
    let routes: [(&str, &str, Option<&str>, StatusCode); 6] = [
        ("POST", "/scim/v2/x/Groups", None, StatusCode::UNAUTHORIZED),
        (
            "PATCH",
            "/scim/v2/x/Groups/g",
            None,
            StatusCode::UNAUTHORIZED,
        ),
        ("PUT", "/scim/v2/x/Users/u", None, StatusCode::UNAUTHORIZED),
        (
            "POST",
            "/scim/v2/x/Users/.search",
            None,
            StatusCode::UNAUTHORIZED,
        ),
        ("POST", "/api/v1/activity", None, StatusCode::UNAUTHORIZED),
        (
            "POST",
            "/api/v1/activity",
            Some(&stats),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (method, path, token, expected) in routes {
        let read = Arc::new(AtomicUsize::new(0));
        let (tx, body) = watched_body(Arc::clone(&read));
        tx.send(Ok(Bytes::from(vec![b' '; 4096]))).await.unwrap();
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        // The body never ends: a handler that read it before refusing would hang here.
        let (status, v) = tokio::time::timeout(
            Duration::from_secs(5),
            send(&f.app, req.body(body).unwrap()),
        )
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: the refusal waited for the body"));
        assert_eq!(status, expected, "{method} {path}: {v}");
        assert_eq!(
            read.load(Ordering::SeqCst),
            0,
            "{method} {path}: body was read"
        );
        drop(tx);
    }
}

#[tokio::test]
async fn bodies_are_bounded_in_size_and_arrival_time() {
    let f = fixture(ApiSettings {
        body_limit_bytes: 1000,
        body_read_timeout_ms: 200,
        ..ApiSettings::default()
    })
    .await;
    let writer = f
        .token(&[Scope::ActivityWrite, Scope::DirectoryWrite])
        .await;
    let auth = format!("Bearer {writer}");

    // A declared length over the limit: 413 naming the limit, before a byte is read.
    let read = Arc::new(AtomicUsize::new(0));
    let (tx, body) = watched_body(Arc::clone(&read));
    let req = Request::post("/api/v1/activity")
        .header("authorization", &auth)
        .header("content-length", "5000")
        .body(body)
        .unwrap();
    let (status, v) = send(&f.app, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["code"], "payload_too_large");
    assert!(v["message"].as_str().unwrap().contains("1000 bytes"), "{v}");
    assert_eq!(read.load(Ordering::SeqCst), 0);
    drop(tx);

    // No declared length: reading stops at the limit.
    let req = Request::post("/api/v1/activity")
        .header("authorization", &auth)
        .body(Body::from(vec![b' '; 1001]))
        .unwrap();
    let (status, v) = send(&f.app, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");

    // A body that stops arriving: 408 after the deadline.
    let read = Arc::new(AtomicUsize::new(0));
    let (tx, body) = watched_body(read);
    tx.send(Ok(Bytes::from_static(b"{\"events\":[")))
        .await
        .unwrap();
    let req = Request::post("/api/v1/activity")
        .header("authorization", &auth)
        .body(body)
        .unwrap();
    let (status, v) = send(&f.app, req).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{v}");
    assert!(v["message"].as_str().unwrap().contains("200 ms"), "{v}");
    drop(tx);
}

#[tokio::test]
async fn scim_bodies_over_the_limit_get_a_scim_error() {
    let f = fixture(ApiSettings {
        body_limit_bytes: 1000,
        ..ApiSettings::default()
    })
    .await;
    f.store
        .apply_batch(&[common::tenant("t1", false, 1)])
        .await
        .unwrap();
    let writer = f.token(&[Scope::DirectoryWrite]).await;
    let req = Request::post("/scim/v2/t1/Groups")
        .header("authorization", format!("Bearer {writer}"))
        .body(Body::from(vec![b' '; 1001]))
        .unwrap();
    let res = f.app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        res.headers()["content-type"],
        "application/scim+json",
        "a SCIM client gets a SCIM error"
    );
    let raw = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(v["status"], "413", "{v}");
}

#[tokio::test]
async fn load_beyond_the_limit_and_slow_requests_get_503() {
    let f = fixture(ApiSettings {
        max_concurrent_requests: 1,
        body_read_timeout_ms: 60_000,
        request_timeout_ms: 300,
        ..ApiSettings::default()
    })
    .await;
    let writer = f.token(&[Scope::ActivityWrite]).await;
    // One request whose body never finishes holds the only slot…
    let read = Arc::new(AtomicUsize::new(0));
    let (tx, body) = watched_body(read);
    tx.send(Ok(Bytes::from_static(b"{"))).await.unwrap();
    let req = Request::post("/api/v1/activity")
        .header("authorization", format!("Bearer {writer}"))
        .body(body)
        .unwrap();
    let held = tokio::spawn({
        let app = f.app.clone();
        async move { send(&app, req).await }
    });
    // …so the next is shed at once (poll until the first has taken the slot).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, v) = send(
            &f.app,
            Request::get("/api/v1/tenants").body(Body::empty()).unwrap(),
        )
        .await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(v["code"], "unavailable", "{v}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never shed: {status} {v}"
        );
        tokio::task::yield_now().await;
    }
    // The held request itself is cut off by the request deadline with a 503.
    let (status, v) = held.await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v["message"].as_str().unwrap().contains("too long"), "{v}");
    drop(tx);
    // And the slot is free again.
    let (status, _) = send(
        &f.app,
        Request::get("/api/v1/tenants").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "admitted again (and refused: no token)"
    );
}

#[tokio::test]
async fn an_encoded_nul_in_a_path_or_query_is_a_400_not_a_database_error() {
    let f = fixture(ApiSettings::default()).await;
    let reader = f.token(&[Scope::DirectoryRead]).await;
    for path in [
        "/api/v1/tenants/a%00b",
        "/api/v1/events?tenantId=%00",
        "/scim/v2/%00/Users",
        "/scim/v2/t1/Users/u%00",
    ] {
        let req = Request::get(path)
            .header("authorization", format!("Bearer {reader}"))
            .body(Body::empty())
            .unwrap();
        let (status, v) = send(&f.app, req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {v}");
    }
}
