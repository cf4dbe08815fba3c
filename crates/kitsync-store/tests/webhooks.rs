//! Webhook endpoints in the store: registration, the lease (one dispatcher at a time), the
//! cursor and the retry state, the bounded delivery log, and feed pages with an upper bound.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod common;

use common::*;
use kitsync_domain::Command;
use kitsync_store::Actor;
use kitsync_store::{
    AttemptOutcome, FeedFilter, NewWebhook, Store, StoreError, WebhookAttempt, WebhookEndpoint,
    WebhookLease, WebhookState, DELIVERY_LOG_KEEP,
};
use migrations::testing::TestDb;
use sea_orm::{ConnectionTrait, Statement};

fn new_hook(after: Option<i64>) -> NewWebhook {
    NewWebhook {
        url: "http://127.0.0.1:9/hook".into(),
        sealed_secret: "v1:sealed".into(),
        tenant_id: None,
        types: None,
        include_test: false,
        after,
    }
}

/// A fresh store after `commands`, and an endpoint that delivers from the journal's start.
async fn store_with_hook(commands: &[Command]) -> (TestDb, Store, WebhookEndpoint) {
    let (db, s) = store().await;
    s.apply_batch(commands).await.unwrap();
    let e = s.create_webhook(&new_hook(Some(0))).await.unwrap();
    (db, s, e)
}

fn attempt(lease: &WebhookLease, until: i64, at: i64, outcome: AttemptOutcome) -> WebhookAttempt {
    WebhookAttempt {
        webhook_id: format!(
            "msg_{}_{}_{until}",
            lease.endpoint.id, lease.endpoint.cursor
        ),
        first_event_id: lease.endpoint.cursor + 1,
        last_event_id: until,
        events: 1,
        until,
        attempt: lease.endpoint.consecutive_failures + 1,
        at,
        duration_ms: 3,
        outcome,
    }
}

fn failed(retry_at: i64) -> AttemptOutcome {
    AttemptOutcome::Failed {
        status: Some(500),
        error: "HTTP 500: boom".into(),
        retry_at,
        failing_after: 3,
    }
}

#[tokio::test]
async fn endpoints_are_created_listed_and_removed_without_their_secret() {
    let (db, s) = store().await;
    s.apply_batch(&[tenant("t1", 1), grant("t1", "a", 2, &["alice", "bob"])])
        .await
        .unwrap();
    let max = s.journal_after(0, 1000).await.unwrap().last().unwrap().id;

    let from_now = s.create_webhook(&new_hook(None)).await.unwrap();
    assert_eq!(from_now.cursor, max, "by default only changes from now on");
    assert!(from_now.id.starts_with("whk_") && from_now.id.len() == 16);
    assert_eq!(from_now.state, WebhookState::Active);
    let everything = s
        .create_webhook(&NewWebhook {
            tenant_id: Some("t1".into()),
            types: Some(vec!["member".into(), "tenant.created".into()]),
            include_test: true,
            ..new_hook(Some(0))
        })
        .await
        .unwrap();
    assert_eq!(everything.cursor, 0);
    assert!(matches!(
        s.create_webhook(&new_hook(Some(-1))).await,
        Err(StoreError::Conflict(_))
    ));

    let listed = s.list_webhooks().await.unwrap();
    // Oldest first; within one millisecond, by id.
    let mut expected = vec![from_now.clone(), everything.clone()];
    expected.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    assert_eq!(listed, expected);
    assert_eq!(
        s.webhook(&everything.id).await.unwrap().unwrap().types,
        Some(vec!["member".to_owned(), "tenant.created".to_owned()])
    );
    let json = serde_json::to_string(&listed).unwrap();
    assert!(!json.contains("v1:sealed"), "{json}");

    s.remove_webhook(&Actor::Cli, &from_now.id).await.unwrap();
    assert!(matches!(
        s.remove_webhook(&Actor::Cli, &from_now.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.list_webhooks().await.unwrap(), vec![everything]);
    db.cleanup().await;
}

#[tokio::test]
async fn one_claimer_at_a_time_until_the_lease_expires() {
    let (db, s) = store().await;
    let e = s.create_webhook(&new_hook(Some(0))).await.unwrap();
    let now = e.next_attempt_at;
    assert!(
        s.due_webhooks(now, 10).await.unwrap().is_empty(),
        "nothing in the journal: not due"
    );
    s.apply(&tenant("t1", 1)).await.unwrap();
    assert_eq!(s.due_webhooks(now, 10).await.unwrap(), vec![e.id.clone()]);

    let a = s
        .claim_webhook(&e.id, "a", now, 30_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.sealed_secret, "v1:sealed");
    assert!(s
        .claim_webhook(&e.id, "b", now + 29_999, 30_000)
        .await
        .unwrap()
        .is_none());
    assert!(s.due_webhooks(now, 10).await.unwrap().is_empty(), "leased");

    // Expired: b takes over, and a can no longer write.
    let b = s
        .claim_webhook(&e.id, "b", now + 30_001, 30_000)
        .await
        .unwrap()
        .unwrap();
    let done = attempt(&a, 1, now, AttemptOutcome::Delivered { status: 200 });
    assert!(!s.record_webhook_attempt(&a, &done).await.unwrap());
    assert!(!s.skip_webhook_to(&a, 1).await.unwrap());
    assert_eq!(s.webhook(&e.id).await.unwrap().unwrap().cursor, 0);
    assert!(s.webhook_deliveries(&e.id, 10).await.unwrap().is_empty());

    let done = attempt(&b, 1, now, AttemptOutcome::Delivered { status: 204 });
    assert!(s.record_webhook_attempt(&b, &done).await.unwrap());
    let after = s.webhook(&e.id).await.unwrap().unwrap();
    assert_eq!(
        (after.cursor, after.last_status, after.last_success_at),
        (1, Some(204), Some(now))
    );
    // Released: claimable again at once.
    assert!(s
        .claim_webhook(&e.id, "c", now + 30_002, 30_000)
        .await
        .unwrap()
        .is_some());
    db.cleanup().await;
}

#[tokio::test]
async fn failures_schedule_retries_turn_failing_and_a_success_recovers() {
    let (db, s, e) = store_with_hook(&[tenant("t1", 1), grant("t1", "a", 2, &["alice"])]).await;
    let mut now = e.next_attempt_at;
    for n in 1..=4 {
        let lease = s
            .claim_webhook(&e.id, "d", now, 30_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(lease.endpoint.consecutive_failures, n - 1);
        assert!(s
            .record_webhook_attempt(&lease, &attempt(&lease, 2, now, failed(now + 1_000)))
            .await
            .unwrap());
        let got = s.webhook(&e.id).await.unwrap().unwrap();
        assert_eq!(got.consecutive_failures, n);
        assert_eq!(got.pending_until, Some(2), "the failed batch is kept");
        assert_eq!(got.cursor, 0, "the cursor does not move on failure");
        assert_eq!(got.next_attempt_at, now + 1_000);
        assert_eq!(got.last_error.as_deref(), Some("HTTP 500: boom"));
        let expected = if n >= 3 {
            WebhookState::Failing
        } else {
            WebhookState::Active
        };
        assert_eq!(got.state, expected, "after {n} failures");
        // Not due before its retry time.
        assert!(s
            .claim_webhook(&e.id, "d", now + 999, 30_000)
            .await
            .unwrap()
            .is_none());
        assert!(s.due_webhooks(now + 999, 10).await.unwrap().is_empty());
        now += 1_000;
    }
    let log = s.webhook_deliveries(&e.id, 10).await.unwrap();
    assert_eq!(
        log.iter().map(|d| d.attempt).collect::<Vec<_>>(),
        vec![4, 3, 2, 1],
        "newest first"
    );
    assert!(log.iter().all(|d| d.status == Some(500)));

    // `retry`: due now, backoff restarted, still failing until a success.
    let r = s.retry_webhook(&Actor::Cli, &e.id).await.unwrap();
    assert_eq!(
        (r.consecutive_failures, r.state),
        (0, WebhookState::Failing)
    );
    let lease = s
        .claim_webhook(&e.id, "d", r.next_attempt_at, 30_000)
        .await
        .unwrap()
        .unwrap();
    assert!(s
        .record_webhook_attempt(
            &lease,
            &attempt(&lease, 2, now, AttemptOutcome::Delivered { status: 200 })
        )
        .await
        .unwrap());
    let got = s.webhook(&e.id).await.unwrap().unwrap();
    assert_eq!(got.state, WebhookState::Active);
    assert_eq!(
        (
            got.cursor,
            got.pending_until,
            got.consecutive_failures,
            got.last_error
        ),
        (2, None, 0, None)
    );
    db.cleanup().await;
}

#[tokio::test]
async fn disabled_endpoints_are_never_due_and_retry_refuses_them() {
    let (db, s, e) = store_with_hook(&[tenant("t1", 1)]).await;
    let d = s
        .set_webhook_enabled(&Actor::Cli, &e.id, false)
        .await
        .unwrap();
    assert_eq!(d.state, WebhookState::Disabled);
    let later = d.next_attempt_at + 1;
    assert!(s.due_webhooks(later, 10).await.unwrap().is_empty());
    assert!(s
        .claim_webhook(&e.id, "x", later, 1_000)
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        s.retry_webhook(&Actor::Cli, &e.id).await,
        Err(StoreError::Conflict(_))
    ));
    let d = s
        .set_webhook_enabled(&Actor::Cli, &e.id, true)
        .await
        .unwrap();
    assert_eq!(d.state, WebhookState::Active);
    assert_eq!(
        s.due_webhooks(d.next_attempt_at, 10).await.unwrap(),
        vec![e.id.clone()]
    );
    for missing in [
        s.set_webhook_enabled(&Actor::Cli, "whk_nope", true)
            .await
            .err(),
        s.retry_webhook(&Actor::Cli, "whk_nope").await.err(),
        s.webhook_deliveries("whk_nope", 1).await.err(),
    ] {
        assert!(
            matches!(missing, Some(StoreError::NotFound(_))),
            "{missing:?}"
        );
    }
    db.cleanup().await;
}

#[tokio::test]
async fn the_delivery_log_keeps_the_latest_attempts() {
    let (db, s, e) = store_with_hook(&[tenant("t1", 1)]).await;
    let now = e.next_attempt_at;
    let total = DELIVERY_LOG_KEEP + 5;
    for i in 0..total {
        let lease = s
            .claim_webhook(&e.id, "d", now + i, 30_000)
            .await
            .unwrap()
            .unwrap();
        assert!(s
            .record_webhook_attempt(&lease, &attempt(&lease, 1, now + i, failed(now + i + 1)))
            .await
            .unwrap());
    }
    let log = s.webhook_deliveries(&e.id, 1_000).await.unwrap();
    assert_eq!(log.len() as i64, DELIVERY_LOG_KEEP);
    assert_eq!(log[0].attempt as i64, total, "the newest is kept");
    assert_eq!(
        log.last().unwrap().attempt as i64,
        total - DELIVERY_LOG_KEEP + 1
    );
    s.remove_webhook(&Actor::Cli, &e.id).await.unwrap();
    let left = db
        .conn
        .query_one(Statement::from_string(
            db.conn.get_database_backend(),
            "SELECT COUNT(*) FROM webhook_deliveries",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap();
    assert_eq!(left, 0, "removing an endpoint removes its log");
    db.cleanup().await;
}

#[tokio::test]
async fn feed_pages_filter_skip_and_stop_at_an_upper_bound() {
    let (db, s) = store().await;
    s.apply_batch(&[
        tenant("t1", 1),
        tenant("t2", 1),
        grant("t1", "a", 2, &["alice", "bob"]),
        grant("t2", "a", 2, &["carol"]),
        org("t1", "D1", "Head", None, 3),
    ])
    .await
    .unwrap();
    let all = s.journal_after(0, 1000).await.unwrap();
    let last = all.last().unwrap().id;

    let page = s
        .feed_page(0, None, &FeedFilter::default(), 1000)
        .await
        .unwrap();
    assert_eq!(page.events.len(), all.len());
    assert_eq!(page.next_cursor, last);

    let members_t1 = FeedFilter {
        tenant_id: Some("t1".into()),
        types: Some(vec!["member.authorized".into()]),
        include_test: false,
    };
    let page = s.feed_page(0, None, &members_t1, 1000).await.unwrap();
    let keys: Vec<&str> = page.events.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["alice", "bob"]);
    assert!(page.events.iter().all(|e| e.kind == "member.authorized"));
    assert_eq!(
        page.next_cursor,
        all.iter()
            .rfind(|j| j.tenant_id == "t1" && j.entity == "member")
            .unwrap()
            .id,
        "unbounded, the cursor is the last row read"
    );
    let page = s.feed_page(0, Some(last), &members_t1, 1000).await.unwrap();
    assert_eq!(page.events.len(), 2);
    assert_eq!(
        page.next_cursor, last,
        "bounded by the head, the cursor passes over what the filter excludes"
    );
    assert_eq!(s.journal_head().await.unwrap(), last);

    // A page that fills up stops at its last event; an upper bound stops the read.
    let page = s.feed_page(0, None, &members_t1, 1).await.unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.next_cursor, page.events[0].journal_id);
    let bound = page.events[0].journal_id;
    let page = s
        .feed_page(0, Some(bound), &FeedFilter::default(), 1000)
        .await
        .unwrap();
    assert_eq!(page.next_cursor, bound);
    assert!(page.events.iter().all(|e| e.journal_id <= bound));
    let nothing = s
        .feed_page(last, None, &FeedFilter::default(), 10)
        .await
        .unwrap();
    assert!(nothing.events.is_empty());
    assert_eq!(
        nothing.next_cursor, last,
        "an empty page stays where it was"
    );
    db.cleanup().await;
}
