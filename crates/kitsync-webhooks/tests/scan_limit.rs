//! The dispatcher over a journal longer than the feed's scan limit
//! (`kitsync_store::feed::MAX_SCAN_ROWS`) whose only match is its last row: pages that find
//! nothing move the endpoint's cursor without sending and the dispatcher goes on at once,
//! nothing loops, and the match is delivered once. On SQLite, or PostgreSQL with `KITSYNC_TEST_DATABASE_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use kitsync_secrets::Sealer;
use kitsync_store::feed::MAX_SCAN_ROWS;
use kitsync_store::{Store, StoreSettings};
use kitsync_webhooks::{register, Dispatcher, Registration, WebhookSettings};
use secrecy::SecretString;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

type Log = Arc<Mutex<Vec<Value>>>;

async fn hook(State(log): State<Log>, body: Bytes) -> StatusCode {
    log.lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap());
    StatusCode::NO_CONTENT
}

/// `n` department rows of tenant t1, then one `group.deleted` of tenant t2.
async fn journal(store: &Store, n: usize) {
    migrations::testing::append_journal(store.db(), n + 1, |i| {
        if i == n {
            ("t2", "group", "deleted")
        } else {
            ("t1", "department", "updated")
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rare_match_past_the_scan_limit_is_delivered_after_bounded_skips() {
    let db = migrations::testing::fresh_db().await.unwrap();
    let store = Store::new(db.conn.clone(), StoreSettings::default());
    let cap = usize::try_from(MAX_SCAN_ROWS).unwrap();
    let n = 2 * cap + 10;
    journal(&store, n).await;
    let ids = migrations::testing::journal_ids(store.db()).await.unwrap();
    assert_eq!(ids.len(), n + 1);

    let log = Log::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .with_state(Arc::clone(&log));
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let master = SecretString::from(Sealer::generate_master_key().unwrap());
    let sealer = Sealer::from_master_key(&master).unwrap();
    let (endpoint, _) = register(
        &store,
        &sealer,
        &Registration {
            url: format!("http://{addr}/hook"),
            tenant_id: None,
            types: Some("group.deleted".into()),
            include_test: false,
            after: Some(0),
        },
    )
    .await
    .unwrap();
    let dispatcher = Dispatcher::new(store.clone(), sealer, WebhookSettings::default()).unwrap();
    let (_stop, shutdown) = watch::channel(false);

    // One turn skips twice (each page scans at most the limit, to a row that exists: the store
    // tests check the pages), goes on at once instead of a poll later, and delivers the match.
    let report = dispatcher.deliver(&endpoint.id, &shutdown).await.unwrap();
    assert!(report.skipped, "{report:?}");
    assert_eq!((report.delivered, report.events), (1, 1), "{report:?}");
    let sent = log.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    let events = sent[0]["data"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["id"], ids[n].to_string());
    assert_eq!(events[0]["type"], "group.deleted");
    assert_eq!(
        store.webhook(&endpoint.id).await.unwrap().unwrap().cursor,
        ids[n]
    );
    let report = dispatcher.deliver(&endpoint.id, &shutdown).await.unwrap();
    assert_eq!((report.delivered, report.skipped), (0, false), "{report:?}");
    assert_eq!(log.lock().unwrap().len(), 1);
    server.abort();
    db.cleanup().await;
}
