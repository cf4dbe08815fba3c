//! The statistics API against a real store (SQLite, or PostgreSQL with
//! `KITSYNC_TEST_DATABASE_URL`): the documented shapes, the period rules and their 400s,
//! period-over-period, sorting and the "never active" filter, scopes. The definitions
//! themselves are checked in `kitsync-store/tests/stats.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod common;

use axum::http::StatusCode;
use common::{fresh_store, get, grant, strs, tenant, token};
use kitsync_domain::Scope;
use kitsync_store::{utc8_day, ActivityEvent, ActivityKind, DAY_MS, UTC8_MS};
use serde_json::json;

fn date(day: i64) -> String {
    (chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(day))
        .format("%Y-%m-%d")
        .to_string()
}

#[tokio::test]
async fn statistics_answer_the_documented_shapes_and_refuse_bad_periods() {
    let (db, store) = fresh_store().await;
    let app = kitsync_api::router(store.clone());
    let today = utc8_day(chrono::Utc::now().timestamp_millis());
    let day_ms = |d: i64| d * DAY_MS - UTC8_MS;
    // Three tenants authorised 20 days ago; `quiet` is never active; `sandbox` is test data.
    let v = day_ms(today - 20);
    store
        .apply_batch(&[
            tenant("busy", false, v),
            tenant("some", false, v),
            tenant("quiet", false, v),
            tenant("sandbox", true, v),
            grant("busy", &["a", "b", "c"], v + 1, false),
            grant("some", &["d", "e"], v + 1, false),
            grant("quiet", &["f"], v + 1, false),
            grant("sandbox", &["g"], v + 1, true),
        ])
        .await
        .unwrap();
    // Activity: busy's a and b today, some's d nine days ago (the previous 7-day period),
    // sandbox's g today (never counted), and an unknown user of busy.
    let at = |d: i64| day_ms(d) + 3_600_000;
    let ev = |t: &str, u: &str, d: i64| ActivityEvent {
        tenant_id: t.into(),
        user_name: u.into(),
        kind: ActivityKind::Use,
        at_ms: at(d),
    };
    store
        .record_activity(&[
            ev("busy", "a", today),
            ev("busy", "b", today),
            ev("some", "d", today - 9),
            ev("sandbox", "g", today),
            ev("busy", "stranger", today),
        ])
        .await
        .unwrap();
    let stats = token(&store, "dashboard", &[Scope::StatsRead], None).await;
    let bound = token(&store, "one tenant", &[Scope::StatsRead], Some("busy")).await;
    let reader = token(&store, "reader", &[Scope::DirectoryRead], None).await;
    let s = &stats;

    // The 7-day overview and its previous period.
    let (status, body) = get(&app, "/api/v1/stats/overview?preset=7d", s).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["period"],
        json!({"from": date(today - 6), "to": date(today)})
    );
    assert_eq!(
        body["previousPeriod"],
        json!({"from": date(today - 13), "to": date(today - 7)})
    );
    let p = &body["projects"];
    assert_eq!(
        (p["opened"].as_u64(), p["active"].as_u64()),
        (Some(3), Some(1))
    );
    assert!((p["activeRate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(p["previous"]["active"], 1, "{p}");
    assert_eq!(p["change"]["active"], 0.0);
    let m = &body["members"];
    assert_eq!(
        (m["authorized"].as_u64(), m["active"].as_u64()),
        (Some(6), Some(2))
    );
    assert_eq!(m["previous"]["authorized"], 6);
    assert_eq!(m["previous"]["active"], 1);
    assert!((m["change"]["activeRate"].as_f64().unwrap() - (2.0 - 1.0) / 6.0).abs() < 1e-9);
    assert!(body["asOf"].as_str().unwrap().ends_with('Z'));

    // Before anyone was authorised: rates are null, not a division by zero.
    let long_ago = format!("from={}&to={}", date(today - 60), date(today - 50));
    let (_, body) = get(&app, &format!("/api/v1/stats/overview?{long_ago}"), s).await;
    assert_eq!(body["projects"]["opened"], 0);
    assert!(body["projects"]["activeRate"].is_null(), "{body}");
    assert!(body["members"]["change"]["activeRate"].is_null());

    // Daily series: every day of the period, zeros included.
    let (_, body) = get(&app, "/api/v1/stats/daily?preset=7d", s).await;
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 7);
    assert_eq!(
        items[6],
        json!({"date": date(today), "activeProjects": 1, "activeMembers": 2})
    );
    assert_eq!(items[0]["activeMembers"], 0);

    // Per tenant, sortable; "never active" finds `quiet` only (sandbox is test data).
    let (_, body) = get(&app, "/api/v1/stats/tenants?preset=30d&sort=-active", s).await;
    let ids = strs(&body["items"], "tenantId");
    assert_eq!(ids[0], "busy");
    assert!(!ids.contains(&"sandbox"));
    assert_eq!(body["items"][0]["authorized"], 3);
    assert_eq!(body["items"][0]["name"], "Name busy");
    assert!(body["items"][0]["lastActiveAt"].as_str().is_some());
    let (_, body) = get(&app, "/api/v1/stats/tenants?neverActive=true", s).await;
    assert_eq!(
        body["items"],
        json!([{"tenantId": "quiet", "name": "Name quiet",
        "authorized": 1, "active": 0, "lastActiveAt": null}])
    );
    let (_, page) = get(&app, "/api/v1/stats/tenants?preset=30d&limit=2", s).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let next = page["nextCursor"].as_str().unwrap();
    let (_, rest) = get(
        &app,
        &format!("/api/v1/stats/tenants?preset=30d&limit=2&cursor={next}"),
        s,
    )
    .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["nextCursor"].is_null());

    // Bad periods and parameters: 400 naming what is allowed.
    for (query, param, says) in [
        (
            format!("from={}&to={}", date(today - 30), date(today)),
            "to",
            "at most 30 days",
        ),
        (
            format!("from={}&to={}", date(today), date(today - 1)),
            "from",
            "is after",
        ),
        (
            "from=2026-13-01&to=2026-12-01".to_owned(),
            "from",
            "YYYY-MM-DD",
        ),
        (format!("from={}", date(today)), "to", "required"),
        ("preset=90d".to_owned(), "preset", "day, 7d or 30d"),
        (
            format!("preset=7d&from={}", date(today)),
            "preset",
            "not both",
        ),
    ] {
        let (status, body) = get(&app, &format!("/api/v1/stats/overview?{query}"), s).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let msg = body["message"].as_str().unwrap();
        assert!(
            msg.starts_with(&format!("{param}:")) && msg.contains(says),
            "{query}: {msg}"
        );
    }
    let (status, _) = get(&app, "/api/v1/stats/tenants?sort=revenue", s).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // 30 days exactly is allowed.
    let (status, _) = get(
        &app,
        &format!(
            "/api/v1/stats/daily?from={}&to={}",
            date(today - 29),
            date(today)
        ),
        s,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Scopes: a directory token and a tenant-bound token are 403.
    for t in [&reader, &bound] {
        let (status, _) = get(&app, "/api/v1/stats/overview", t).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    db.cleanup().await;
}
