//! What a browser needs to walk a large directory lazily: one level of the department tree
//! at a time with its counts (`?parent=`), and one member's changes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod common;

use axum::http::StatusCode;
use common::*;
use kitsync_domain::{AuthChange, AuthOp, AuthUser, Command, KitTime, Op, OrgChange, Scope};
use serde_json::Value;

fn org(code: &str, parent: Option<&str>, v: i64) -> Command {
    Command::Org(OrgChange {
        tenant_id: "t".into(),
        instance_id: None,
        org_code: code.into(),
        org_name: format!("Dept {code}"),
        parent_code: parent.map(Into::into),
        op: Op::Upsert,
        test: false,
        version: KitTime(v),
    })
}

/// `users` of tenant `t` in department `org`, by `op`, at version `v`.
fn auth(op: AuthOp, org: &str, users: &[&str], v: i64) -> Command {
    Command::Auth(AuthChange {
        tenant_id: "t".into(),
        instance_id: None,
        app_id: "app".into(),
        op,
        users: users
            .iter()
            .map(|u| AuthUser {
                org_code: Some(org.into()),
                ..AuthUser::named(*u)
            })
            .collect(),
        test: false,
        version: KitTime(v),
        time_stamp: None,
    })
}

fn codes(page: &Value) -> Vec<(String, u64, u64)> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["orgCode"].as_str().unwrap().to_owned(),
                d["memberCount"].as_u64().unwrap(),
                d["childCount"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_tree_comes_one_level_at_a_time_with_its_counts() {
    let (db, store) = fresh_store().await;
    store
        .apply_batch(&[
            tenant("t", false, 1),
            org("r1", None, 2),
            org("c1", Some("r1"), 3),
            org("c2", Some("r1"), 4),
            org("g1", Some("c1"), 5),
            org("o1", Some("ghost"), 6),
            auth(AuthOp::Add, "c1", &["u1", "u2", "u3"], 7),
            auth(AuthOp::Add, "r1", &["u4"], 8),
            auth(AuthOp::Delete, "c1", &["u3"], 9),
        ])
        .await
        .unwrap();
    let app = kitsync_api::router(store.clone());
    let reader = token(&store, "reader", &[Scope::DirectoryRead], None).await;
    let level = |q: &str| format!("/api/v1/tenants/t/departments?{q}");

    let (status, roots) = get(&app, &level("parent="), &reader).await;
    assert_eq!(status, StatusCode::OK, "{roots}");
    let s = |v: &str| v.to_owned();
    assert_eq!(
        codes(&roots),
        [(s("o1"), 0, 0), (s("r1"), 1, 2)],
        "orphans are roots"
    );
    let (_, kids) = get(&app, &level("parent=r1"), &reader).await;
    assert_eq!(
        codes(&kids),
        [(s("c1"), 2, 1), (s("c2"), 0, 0)],
        "u3 is no longer authorised: not counted"
    );
    let (_, grandkids) = get(&app, &level("parent=c1"), &reader).await;
    assert_eq!(codes(&grandkids), [(s("g1"), 0, 0)]);
    let (_, none) = get(&app, &level("parent=nowhere"), &reader).await;
    assert!(none["items"].as_array().unwrap().is_empty());

    let (_, first) = get(&app, &level("parent=r1&limit=1"), &reader).await;
    assert_eq!(codes(&first), [(s("c1"), 2, 1)]);
    let next = first["nextCursor"].as_str().unwrap();
    let (_, second) = get(
        &app,
        &level(&format!("parent=r1&limit=1&cursor={next}")),
        &reader,
    )
    .await;
    assert_eq!(codes(&second), [(s("c2"), 0, 0)]);
    assert!(second["nextCursor"].is_null());

    // The counts agree with the member list of the same department.
    let (_, members) = get(&app, "/api/v1/tenants/t/members?orgCode=c1", &reader).await;
    assert_eq!(strs(&members["items"], "userName"), ["u1", "u2"]);
    // Without `parent`, items carry no counts (the list stays what it was).
    let (_, flat) = get(&app, &level(""), &reader).await;
    assert!(flat["items"][0].get("memberCount").is_none(), "{flat}");
    assert_bad_params(
        &app,
        "/api/v1/tenants/t/departments",
        &reader,
        &[
            ("parent=r1&view=tree", "parent"),
            (&format!("parent={}", "x".repeat(65)), "parent"),
        ],
    )
    .await;
    db.cleanup().await;
}

#[tokio::test]
async fn a_members_changes_come_newest_first_and_page() {
    let (db, store) = fresh_store().await;
    store
        .apply_batch(&[
            tenant("t", false, 1),
            auth(AuthOp::Add, "d1", &["u1", "u2"], 2),
            auth(AuthOp::Modify, "d2", &["u1"], 3),
            auth(AuthOp::Delete, "d2", &["u1"], 4),
        ])
        .await
        .unwrap();
    let app = kitsync_api::router(store.clone());
    let reader = token(&store, "reader", &[Scope::DirectoryRead], None).await;
    let (status, page) = get(&app, "/api/v1/tenants/t/members/u1/changes", &reader).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let kinds = strs(&page["items"], "type");
    assert_eq!(
        kinds,
        [
            "member.deauthorized",
            "member.modified",
            "member.authorized"
        ]
    );
    assert!(page["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["key"] == "u1" && e["tenantId"] == "t"));
    let (_, first) = get(
        &app,
        "/api/v1/tenants/t/members/u1/changes?limit=2",
        &reader,
    )
    .await;
    assert_eq!(
        strs(&first["items"], "type"),
        ["member.deauthorized", "member.modified"]
    );
    let next = first["nextCursor"].as_str().unwrap();
    let (_, rest) = get(
        &app,
        &format!("/api/v1/tenants/t/members/u1/changes?limit=2&cursor={next}"),
        &reader,
    )
    .await;
    assert_eq!(strs(&rest["items"], "type"), ["member.authorized"]);
    assert!(rest["nextCursor"].is_null());
    let (status, _) = get(&app, "/api/v1/tenants/nope/members/u1/changes", &reader).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let other = token(&store, "other", &[Scope::DirectoryRead], Some("elsewhere")).await;
    let (status, _) = get(&app, "/api/v1/tenants/t/members/u1/changes", &other).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    db.cleanup().await;
}

#[tokio::test]
async fn tenants_are_searched_by_id_and_name() {
    let (db, store) = fresh_store().await;
    let named = |id: &str, name: &str| {
        let Command::Tenant(mut t) = tenant(id, false, 1) else {
            unreachable!()
        };
        t.name = name.into();
        Command::Tenant(t)
    };
    let batch = [
        named("acme-1", "Acme Corp"),
        named("beta", "Beta 100%"),
        named("gamma_x", "Gamma"),
    ];
    store.apply_batch(&batch).await.unwrap();
    let app = kitsync_api::router(store.clone());
    let reader = token(&store, "reader", &[Scope::DirectoryRead], None).await;
    for (q, want) in [
        ("ACME", vec!["acme-1"]),
        ("corp", vec!["acme-1"]),
        ("%25", vec!["beta"]),
        ("_", vec!["gamma_x"]),
        ("a", vec!["acme-1", "beta", "gamma_x"]),
        ("nothing", vec![]),
    ] {
        let (status, page) = get(&app, &format!("/api/v1/tenants?q={q}"), &reader).await;
        assert_eq!(status, StatusCode::OK, "{q}: {page}");
        assert_eq!(strs(&page["items"], "tenantId"), want, "{q}");
    }
    let (_, first) = get(&app, "/api/v1/tenants?q=a&limit=2", &reader).await;
    assert_eq!(strs(&first["items"], "tenantId"), ["acme-1", "beta"]);
    let next = first["nextCursor"].as_str().unwrap();
    let (_, rest) = get(
        &app,
        &format!("/api/v1/tenants?q=a&limit=2&cursor={next}"),
        &reader,
    )
    .await;
    assert_eq!(strs(&rest["items"], "tenantId"), ["gamma_x"]);
    let bound = token(&store, "bound", &[Scope::DirectoryRead], Some("beta")).await;
    let (_, own) = get(&app, "/api/v1/tenants?q=BETA", &bound).await;
    assert_eq!(strs(&own["items"], "tenantId"), ["beta"]);
    let (_, none) = get(&app, "/api/v1/tenants?q=acme", &bound).await;
    assert!(none["items"].as_array().unwrap().is_empty());
    assert_bad_params(
        &app,
        "/api/v1/tenants",
        &reader,
        &[(&format!("q={}", "x".repeat(65)), "q")],
    )
    .await;
    db.cleanup().await;
}
