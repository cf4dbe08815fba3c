//! `POST /api/v1/activity` against a real store (SQLite, or PostgreSQL with
//! `KITSYNC_TEST_DATABASE_URL`): per-event validation, idempotent re-sends, unmatched users,
//! UTC+8 daily rollups, tenant-bound tokens, retention pruning.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{fresh_store, seed, send, token};
use kitsync_domain::Scope;
use kitsync_store::utc8_day;
use serde_json::{json, Value};

async fn post(app: &axum::Router, token: &str, body: &str) -> (StatusCode, Value) {
    let req = Request::post("/api/v1/activity")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    send(app, req).await
}

fn ev(t: &str, u: &str, kind: &str, at: &str) -> Value {
    json!({"tenantId": t, "userName": u, "kind": kind, "at": at})
}

#[tokio::test]
async fn activity_is_validated_per_event_idempotent_and_rolled_up_by_utc8_day() {
    let (db, store) = fresh_store().await;
    store
        .apply_batch(&seed("t1", &["alice", "bob"]))
        .await
        .unwrap();
    store.apply_batch(&seed("t2", &["carol"])).await.unwrap();
    let app = kitsync_api::router(store.clone());
    let writer = token(&store, "app", &[Scope::ActivityWrite], None).await;
    let bound = token(&store, "t2 app", &[Scope::ActivityWrite], Some("t2")).await;
    let reader = token(&store, "reader", &[Scope::DirectoryRead], None).await;
    let w = &writer;

    // Around UTC+8 midnight: 15:59:59Z is still the 28th there, 16:00:00Z the 29th.
    let now = chrono::Utc::now();
    let recent = |h: i64| (now - chrono::Duration::hours(h)).to_rfc3339();
    let future = (now + chrono::Duration::hours(1)).to_rfc3339();
    let ancient = (now - chrono::Duration::days(500)).to_rfc3339();
    let before_midnight = "2026-11-28T15:59:59Z";
    let after_midnight = "2026-11-28T16:00:00+00:00";
    let batch = json!({"events": [
        ev("t1", "alice", "login", before_midnight),
        ev("t1", "alice", "use", after_midnight),
        ev("t1", "alice", "use", "2026-11-29T01:00:00+08:00"),
        ev("t1", "alice", "use", "2026-11-29T01:00:00+08:00"),   // the same event twice
        ev("t1", "bob", "login", &recent(1)),
        ev("t1", "nobody", "login", &recent(1)),                  // unknown user
        ev("t9", "alice", "login", &recent(1)),                   // unknown tenant
        ev("t1", "bob", "logout", &recent(1)),                    // bad kind
        ev("t1", "bob", "use", "yesterday"),                      // bad time
        ev("t1", "bob", "use", &future),                          // future
        ev("t1", "bob", "use", &ancient),                         // beyond retention
        json!({"tenantId": "t1", "kind": "use", "at": recent(1)}),  // no userName
    ]})
    .to_string();
    let (status, body) = post(&app, w, &batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 7, "{body}");
    assert_eq!(body["new"], 6, "{body}");
    assert_eq!(body["duplicates"], 1, "{body}");
    let unmatched: Vec<u64> = body["unmatched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["index"].as_u64().unwrap())
        .collect();
    assert_eq!(unmatched, [5, 6]);
    let reasons: Vec<(u64, String)> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expect = [
        (7, "events[7].kind: must be \"login\" or \"use\""),
        (8, "events[8].at: not an RFC 3339 time"),
        (9, "is in the future"),
        (10, "older than the retention window (400 days)"),
        (11, "events[11].userName: is required"),
    ];
    assert_eq!(reasons.len(), expect.len(), "{reasons:?}");
    for ((i, reason), (want_i, want)) in reasons.iter().zip(expect) {
        assert_eq!(*i, want_i);
        assert!(reason.contains(want), "{reason} should say {want}");
    }

    // Re-sending the batch counts nothing twice.
    let (_, again) = post(&app, w, &batch).await;
    assert_eq!(
        (again["accepted"].as_u64(), again["new"].as_u64()),
        (Some(7), Some(0))
    );
    assert_eq!(again["duplicates"], 7);

    // Rollups per (tenant, UTC+8 day, user).
    let day = |s: &str| {
        utc8_day(
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_millis(),
        )
    };
    assert_eq!(day(after_midnight) - day(before_midnight), 1);
    let rows = store.activity_daily("t1").await.unwrap();
    let alice: Vec<(i64, i32, i32)> = rows
        .iter()
        .filter(|r| r.2 == "alice")
        .map(|r| (r.1, r.3, r.4))
        .collect();
    assert_eq!(
        alice,
        [(day(before_midnight), 1, 0), (day(after_midnight), 0, 2)],
        "the login on the 28th, two uses on the 29th (UTC+8)"
    );
    assert!(
        rows.iter().any(|r| r.2 == "nobody"),
        "unmatched events are kept"
    );

    // A tenant-bound token writes only its tenant's events; a reader may not write.
    let (_, body) = post(
        &app,
        &bound,
        &json!({"events": [ev("t2", "carol", "use", &recent(2)), ev("t1", "bob", "use", &recent(2))]})
            .to_string(),
    )
    .await;
    assert_eq!(body["accepted"], 1, "{body}");
    assert!(body["rejected"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("bound to tenant t2"));
    let (status, _) = post(&app, &reader, &batch).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The whole body is refused only when it is not a batch, or too big.
    for (body, says) in [
        ("not json", "body: not JSON"),
        ("{\"items\": []}", "events: the body must be"),
    ] {
        let (status, answer) = post(&app, w, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(
            answer["message"].as_str().unwrap().starts_with(says),
            "{answer}"
        );
    }
    let big: Vec<Value> = (0..1001)
        .map(|i| ev("t1", &format!("u{i}"), "use", &recent(1)))
        .collect();
    let (status, answer) = post(&app, w, &json!({"events": big}).to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        answer["message"].as_str().unwrap().contains("at most 1000"),
        "{answer}"
    );

    // A full batch of 1 000 is taken in one go.
    let full: Vec<Value> = (0..1000)
        .map(|i| ev("t1", &format!("u{i}"), "use", &recent(3)))
        .collect();
    let (status, answer) = post(&app, w, &json!({"events": full}).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["new"], 1000);

    // Pruning drops raw events only: the rollups stay.
    let before = store.activity_daily("t1").await.unwrap();
    let pruned = store
        .prune_activity(chrono::Utc::now().timestamp_millis() + 1)
        .await
        .unwrap();
    assert!(pruned >= 1006, "{pruned}");
    assert_eq!(store.activity_daily("t1").await.unwrap(), before);
    db.cleanup().await;
}
