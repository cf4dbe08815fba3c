//! The API router against a real store (SQLite, or PostgreSQL with
//! `KITSYNC_TEST_DATABASE_URL`): authentication, scopes, tenant binding, error bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{assert_bad_params, fresh_store, strs, token};
use kitsync_domain::{Command, KitTime, Op, Scope, TenantChange};
use kitsync_store::Actor;
use kitsync_store::Store;
use secrecy::ExposeSecret;
use serde_json::Value;

fn tenant(t: &str, test: bool, v: i64) -> Command {
    Command::Tenant(TenantChange {
        tenant_id: t.into(),
        instance_id: Some(format!("inst-{t}")),
        order_id: None,
        tenant_code: format!("code-{t}"),
        name: format!("Tenant {t}"),
        domain_name: format!("https://{t}.example.com"),
        op: Op::Upsert,
        test,
        version: KitTime(v),
    })
}

async fn get(app: &axum::Router, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut req = Request::get(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    common::send(app, req.body(Body::empty()).unwrap()).await
}

/// `GET path` with `token`, which must answer 200: its body.
async fn get_ok(app: &axum::Router, path: &str, token: &str) -> Value {
    let (status, body) = get(app, path, Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

/// The page after `body`, which has a `nextCursor`: `GET path&cursor=…`, which must answer 200.
async fn next_page(app: &axum::Router, path: &str, body: &Value, token: &str) -> Value {
    let next = body["nextCursor"].as_str().unwrap();
    get_ok(app, &format!("{path}&cursor={next}"), token).await
}

/// The `message` of an error body.
fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap()
}

/// A router on `store` and the secret of an unbound `directory:read` token.
async fn reader_app(store: &Store) -> (axum::Router, String) {
    let app = kitsync_api::router(store.clone());
    let reader = token(store, "reader", &[Scope::DirectoryRead], None).await;
    (app, reader)
}

#[tokio::test]
async fn tenant_reads_are_authenticated_scoped_and_tenant_bound() {
    let (db, store) = fresh_store().await;
    store.apply(&tenant("t1", false, 10)).await.unwrap();
    store.apply(&tenant("t2", false, 10)).await.unwrap();
    store.apply(&tenant("sandbox", true, 10)).await.unwrap();
    let app = kitsync_api::router(store.clone());
    let reader = token(&store, "reader", &[Scope::DirectoryRead], None).await;
    let bound = token(&store, "t1 app", &[Scope::DirectoryRead], Some("t1")).await;
    let stats = token(&store, "dashboard", &[Scope::StatsRead], None).await;
    let (revoked_token, revoked) = store
        .create_token(&Actor::Cli, "old", &[Scope::Admin], None)
        .await
        .unwrap();
    store
        .revoke_token(&Actor::Cli, &revoked_token.id)
        .await
        .unwrap();

    // 401: no token, a malformed one, a revoked one.
    for token in [None, Some("nonsense"), Some(revoked.expose_secret())] {
        let (status, body) = get(&app, "/api/v1/tenants/t1", token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}: {body}");
        assert_eq!(body["code"], "unauthorized");
        assert!(message(&body).contains("token") || token.is_none());
    }

    // 403: the wrong scope, or another tenant than the token's.
    let (status, body) = get(&app, "/api/v1/tenants/t1", Some(&stats)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(message(&body).contains("directory:read"), "{body}");
    let (status, body) = get(&app, "/api/v1/tenants/t2", Some(&bound)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(message(&body).contains("bound to tenant t1"), "{body}");

    // 200 with the documented shape, for an unbound token and for the bound one.
    for token in [&reader, &bound] {
        let (status, body) = get(&app, "/api/v1/tenants/t1", Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body,
            serde_json::json!({
                "tenantId": "t1", "tenantCode": "code-t1", "name": "Tenant t1",
                "domainName": "https://t1.example.com", "test": false, "instanceIds": ["inst-t1"],
            })
        );
    }

    // 404: unknown; a test tenant unless asked for; 400 for a bad includeTest.
    let r = reader.as_str();
    let (status, body) = get(&app, "/api/v1/tenants/nope", Some(r)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, _) = get(&app, "/api/v1/tenants/sandbox", Some(r)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body = get_ok(&app, "/api/v1/tenants/sandbox?includeTest=true", r).await;
    assert_eq!(body["test"], true);
    // The tenant list: keyset pages; test tenants only when asked; a bound token sees its own.
    let body = get_ok(&app, "/api/v1/tenants", r).await;
    assert_eq!(strs(&body["items"], "tenantId"), ["t1", "t2"]);
    assert_eq!(
        body["items"][0]["instanceIds"],
        serde_json::json!(["inst-t1"])
    );
    let first = "/api/v1/tenants?includeTest=true&limit=2";
    let body = get_ok(&app, first, r).await;
    assert_eq!(strs(&body["items"], "tenantId"), ["sandbox", "t1"]);
    let body = next_page(&app, first, &body, r).await;
    assert_eq!(strs(&body["items"], "tenantId"), ["t2"]);
    assert!(body["nextCursor"].is_null());
    let (_, body) = get(&app, "/api/v1/tenants", Some(&bound)).await;
    assert_eq!(strs(&body["items"], "tenantId"), ["t1"]);
    let (status, _) = get(&app, "/api/v1/tenants", Some(&stats)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, body) = get(&app, "/api/v1/tenants/t1?includeTest=yes", Some(r)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(message(&body).starts_with("includeTest:"), "{body}");
    db.cleanup().await;
}

fn departments(t: &str, codes: &[(&str, Option<&str>)], v: i64) -> Command {
    Command::FullOrg(kitsync_domain::FullOrgSnapshot {
        tenant_id: t.into(),
        instance_id: None,
        orgs: codes
            .iter()
            .map(|(c, p)| kitsync_domain::OrgInfo {
                org_code: (*c).into(),
                org_name: format!("Dept {c}"),
                parent_code: p.map(Into::into),
            })
            .collect(),
        test: false,
        version: KitTime(v),
    })
}

#[tokio::test]
async fn departments_page_through_every_row_and_nest_as_a_tree() {
    let (db, store) = fresh_store().await;
    store.apply(&tenant("t1", false, 10)).await.unwrap();
    let mut codes: Vec<(String, Option<String>)> = vec![("root".into(), None)];
    for i in 0..11 {
        codes.push((format!("d{i:02}"), Some("root".into())));
    }
    codes.push(("lost".into(), Some("nowhere".into())));
    let refs: Vec<(&str, Option<&str>)> = codes
        .iter()
        .map(|(c, p)| (c.as_str(), p.as_deref()))
        .collect();
    store.apply(&departments("t1", &refs, 11)).await.unwrap();
    let (app, token) = &reader_app(&store).await;

    // Pages of 5: every department exactly once, in order, and then no cursor.
    let first = "/api/v1/tenants/t1/departments?limit=5";
    let seen = all_pages(app, first, 5, token, "orgCode").await;
    let mut expected: Vec<String> = codes.iter().map(|(c, _)| c.clone()).collect();
    expected.sort();
    assert_eq!(seen, expected);
    let body = get_ok(app, "/api/v1/tenants/t1/departments?limit=1", token).await;
    assert_eq!(
        body["items"][0],
        serde_json::json!({"orgCode": "d00", "orgName": "Dept d00", "parentCode": "root"})
    );

    // The tree: root with its 11 children, and the orphan at the root, flagged.
    let body = get_ok(app, "/api/v1/tenants/t1/departments?view=tree", token).await;
    let roots = body["items"].as_array().unwrap();
    assert_eq!(roots.len(), 2, "{body}");
    assert_eq!(roots[0]["orgCode"], "lost");
    assert_eq!(roots[0]["orphan"], true);
    assert_eq!(roots[1]["orgCode"], "root");
    assert!(roots[1].get("orphan").is_none());
    assert_eq!(roots[1]["children"].as_array().unwrap().len(), 11);
    assert!(body["nextCursor"].is_null());

    // Bad parameters name themselves; unknown tenants are 404.
    let bad = [
        ("view=graph", "view:"),
        ("limit=0", "limit:"),
        ("limit=5000", "limit:"),
        ("cursor=bm90LWEtY3Vyc29y", "cursor:"),
    ];
    assert_bad_params(app, "/api/v1/tenants/t1/departments", token, &bad).await;
    let (status, _) = get(app, "/api/v1/tenants/nope/departments", Some(token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    db.cleanup().await;
}

/// Applies an authSync of tenant t1 at version `v`: `app` `op`s `users` (name, department,
/// enabled, role).
async fn authorise(
    store: &Store,
    app: &str,
    op: kitsync_domain::AuthOp,
    v: i64,
    users: &[(&str, &str, bool, &str)],
) {
    let change = Command::Auth(kitsync_domain::AuthChange {
        tenant_id: "t1".into(),
        instance_id: None,
        app_id: app.into(),
        op,
        users: users
            .iter()
            .map(|(name, org, enabled, role)| kitsync_domain::AuthUser {
                user_name: (*name).into(),
                name: Some(format!("Name {name}")),
                org_code: Some((*org).into()),
                position: Some("Engineer".into()),
                employee_code: None,
                employee_type: Some(1),
                role: if *role == "admin" {
                    kitsync_domain::Role::Admin
                } else {
                    kitsync_domain::Role::User
                },
                enabled: *enabled,
                mobile: None,
                email: Some(format!("{name}@example.com")),
                work_place: None,
                entry_date: None,
                extension: None,
            })
            .collect(),
        test: false,
        version: KitTime(v),
        time_stamp: None,
    });
    store.apply(&change).await.unwrap();
}

/// Follows `nextCursor` from `first` (a path with a query) to the last page: the string `key`
/// of every item. Every page is 200, with at most `limit` items.
async fn all_pages(
    app: &axum::Router,
    first: &str,
    limit: usize,
    token: &str,
    key: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut path = first.to_owned();
    loop {
        let body = get_ok(app, &path, token).await;
        let items = strs(&body["items"], key);
        assert!(items.len() <= limit, "{path}: {body}");
        out.extend(items.into_iter().map(str::to_owned));
        match body["nextCursor"].as_str() {
            Some(c) => path = format!("{first}&cursor={c}"),
            None => return out,
        }
    }
}

/// The members of tenant t1 that `query` (`&name=value`…) selects, by pages of 4.
async fn names(app: &axum::Router, query: &str, token: &str) -> Vec<String> {
    let first = format!("/api/v1/tenants/t1/members?limit=4{query}");
    all_pages(app, &first, 4, token, "userName").await
}

#[tokio::test]
async fn members_filter_page_and_show_every_app() {
    use kitsync_domain::AuthOp;
    let (db, store) = fresh_store().await;
    store.apply(&tenant("t1", false, 10)).await.unwrap();
    let a1: Vec<(String, &str, bool, &str)> = (0..10)
        .map(|i| {
            (
                format!("u{i:02}"),
                if i < 4 { "D1" } else { "D2" },
                true,
                if i == 0 { "admin" } else { "user" },
            )
        })
        .collect();
    let a1: Vec<(&str, &str, bool, &str)> = a1
        .iter()
        .map(|(n, o, e, r)| (n.as_str(), *o, *e, *r))
        .collect();
    authorise(&store, "a1", AuthOp::Add, 11, &a1).await;
    authorise(
        &store,
        "a2",
        AuthOp::Add,
        12,
        &[("u01", "D1", false, "admin"), ("zed", "D3", true, "user")],
    )
    .await;
    // u09 loses its only app: no longer listed.
    authorise(
        &store,
        "a1",
        AuthOp::Delete,
        13,
        &[("u09", "D2", true, "user")],
    )
    .await;
    let (app, token) = &reader_app(&store).await;

    let everyone: Vec<String> = (0..9)
        .map(|i| format!("u{i:02}"))
        .chain(["zed".to_owned()])
        .collect();
    assert_eq!(names(app, "", token).await, everyone);
    assert_eq!(
        names(app, "&orgCode=D1", token).await,
        ["u00", "u01", "u02", "u03"]
    );
    assert_eq!(names(app, "&appId=a2", token).await, ["u01", "zed"]);
    assert_eq!(names(app, "&role=admin", token).await, ["u00", "u01"]);
    assert_eq!(names(app, "&appId=a1&role=admin", token).await, ["u00"]);
    assert_eq!(names(app, "&enabled=false", token).await, ["u01"]);
    assert_eq!(names(app, "&q=u0", token).await, &everyone[..9]);
    assert_eq!(names(app, "&q=Name%20z", token).await, ["zed"]);
    assert!(names(app, "&orgCode=D9", token).await.is_empty());

    let body = get_ok(app, "/api/v1/tenants/t1/members/u01", token).await;
    assert_eq!(body["name"], "Name u01");
    assert_eq!(body["orgCode"], "D1");
    assert_eq!(body["email"], "u01@example.com");
    assert_eq!(
        body["apps"],
        serde_json::json!([
            {"appId": "a1", "role": "user", "enabled": true},
            {"appId": "a2", "role": "admin", "enabled": false},
        ])
    );
    let (status, _) = get(app, "/api/v1/tenants/t1/members/u09", Some(token)).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "an unauthorised member is not shown"
    );

    let bad = [("role=owner", "role:"), ("enabled=yes", "enabled:")];
    assert_bad_params(app, "/api/v1/tenants/t1/members", token, &bad).await;
    db.cleanup().await;
}

#[tokio::test]
async fn apps_authorizations_and_groups() {
    use kitsync_domain::AuthOp;
    let (db, store) = fresh_store().await;
    store.apply(&tenant("t1", false, 10)).await.unwrap();
    store
        .apply(&Command::App(kitsync_domain::AppChange {
            tenant_id: "t1".into(),
            instance_id: None,
            app_id: "a1".into(),
            client_id: "client-a1".into(),
            client_secret: kitsync_domain::SecretText("v1:sealed-never-shown".into()),
            secret_fp: None,
            op: Op::Upsert,
            test: false,
            version: KitTime(10),
        }))
        .await
        .unwrap();
    authorise(
        &store,
        "a1",
        AuthOp::Add,
        11,
        &[
            ("ann", "D1", true, "admin"),
            ("bob", "D1", true, "user"),
            ("cy", "D2", false, "user"),
        ],
    )
    .await;
    // Authorisations of an app whose applicationSync has not arrived yet.
    authorise(
        &store,
        "a2",
        AuthOp::Add,
        12,
        &[("bob", "D1", true, "user")],
    )
    .await;
    let (app, token) = &reader_app(&store).await;

    let body = get_ok(app, "/api/v1/tenants/t1/apps", token).await;
    assert_eq!(
        body,
        serde_json::json!({"items": [{"appId": "a1", "clientId": "client-a1"}], "nextCursor": null})
    );
    assert!(!body.to_string().contains("sealed"), "never the secret");

    let first = "/api/v1/tenants/t1/apps/a1/authorizations?limit=2";
    let body = get_ok(app, first, token).await;
    assert_eq!(
        body["items"],
        serde_json::json!([
            {"userName": "ann", "role": "admin", "enabled": true},
            {"userName": "bob", "role": "user", "enabled": true},
        ])
    );
    let body = next_page(app, first, &body, token).await;
    assert_eq!(body["items"][0]["userName"], "cy");
    assert!(body["nextCursor"].is_null());
    let body = get_ok(app, "/api/v1/tenants/t1/apps/a2/authorizations", token).await;
    assert_eq!(body["items"][0]["userName"], "bob");
    let (status, _) = get(
        app,
        "/api/v1/tenants/t1/apps/nope/authorizations",
        Some(token),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let body = get_ok(app, "/api/v1/tenants/t1/groups", token).await;
    assert_eq!(
        body["items"],
        serde_json::json!([
            {"groupId": "a1:admin", "displayName": "a1 admins", "members": ["ann"]},
            {"groupId": "a1:user", "displayName": "a1 users", "members": ["bob", "cy"]},
            {"groupId": "a2:user", "displayName": "a2 users", "members": ["bob"]},
        ])
    );
    let body = get_ok(app, "/api/v1/tenants/t1/groups?limit=1", token).await;
    let body = next_page(app, "/api/v1/tenants/t1/groups?limit=5", &body, token).await;
    assert_eq!(body["items"].as_array().unwrap().len(), 2);
    assert_eq!(body["items"][0]["groupId"], "a1:user");
    db.cleanup().await;
}

#[tokio::test]
async fn a_token_for_one_tenant_sees_no_other_by_any_path() {
    let (db, store) = fresh_store().await;
    for t in ["t1", "t2"] {
        store.apply(&tenant(t, false, 10)).await.unwrap();
    }
    let app = kitsync_api::router(store.clone());
    let bound = &token(&store, "t1 app", &[Scope::Admin], Some("t1")).await;
    let paths = |t: &str| {
        vec![
            format!("/api/v1/tenants/{t}"),
            format!("/api/v1/tenants/{t}/departments"),
            format!("/api/v1/tenants/{t}/departments?view=tree"),
            format!("/api/v1/tenants/{t}/members"),
            format!("/api/v1/tenants/{t}/members/someone"),
            format!("/api/v1/tenants/{t}/apps"),
            format!("/api/v1/tenants/{t}/apps/a1/authorizations"),
            format!("/api/v1/tenants/{t}/groups"),
            format!("/api/v1/events?tenantId={t}"),
        ]
    };
    for path in paths("t2") {
        let (status, body) = get(&app, &path, Some(bound)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(body["code"], "forbidden", "{path}");
        let (status, body) = get(&app, &path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
    }
    // The same paths for its own tenant pass the access check (some answer 404: nothing
    // there), and the unfiltered feed is refused: it would show every tenant.
    for path in paths("t1") {
        let (status, body) = get(&app, &path, Some(bound)).await;
        assert!(
            status == StatusCode::OK || status == StatusCode::NOT_FOUND,
            "{path}: {status} {body}"
        );
    }
    assert_eq!(
        get(&app, "/api/v1/events", Some(bound)).await.0,
        StatusCode::FORBIDDEN
    );
    db.cleanup().await;
}
