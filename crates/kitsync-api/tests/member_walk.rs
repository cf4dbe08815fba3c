//! Bulk member reads (decision 0047): walking a few thousand members through
//! `GET /api/v1/tenants/{t}/members` by `nextCursor` returns every listed member exactly once,
//! with all its apps, whatever the page size and filter — checked against the store's
//! snapshot, an independent read — including ranges where most members lost their last app;
//! and a page is one statement that never lists the page's members back to the database, so
//! its statements do not grow with the page. SQLite, or PostgreSQL with
//! `KITSYNC_TEST_DATABASE_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod common;

use common::{fresh_store, get, tenant, token};
use kitsync_domain::{AuthChange, AuthOp, AuthUser, Command, KitTime, Role, Scope};
use kitsync_store::{MemberFilter, Store, StoreSettings};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

const T: &str = "walk";
const MEMBERS: usize = 3000;

fn user(i: usize) -> String {
    format!("m{i:05}")
}

/// `app` of tenant [`T`] `op`s `users` at version `v`, with full profiles.
fn auth(app: &str, op: AuthOp, v: i64, test: bool, users: &[(String, usize)]) -> Command {
    Command::Auth(AuthChange {
        tenant_id: T.into(),
        instance_id: None,
        app_id: app.into(),
        op,
        users: users
            .iter()
            .map(|(name, i)| AuthUser {
                name: Some(format!("Member {i}")),
                org_code: Some(format!("D{}", i % 7)),
                position: (i % 2 == 0).then(|| "Engineer".to_owned()),
                employee_code: Some(format!("E{i}")),
                employee_type: Some(1),
                role: if i % 50 == 0 { Role::Admin } else { Role::User },
                enabled: i % 11 != 0,
                email: Some(format!("{name}@example.com")),
                extension: (i % 5 == 0).then(|| format!("{{\"n\":{i}}}")),
                ..AuthUser::named(name.clone())
            })
            .collect(),
        test,
        version: KitTime(v),
        time_stamp: None,
    })
}

/// Tenant [`T`]: app `a1` authorises `m00000`…`m02999` and app `a2` every third of them;
/// `a1` then deauthorises `m01000`…`m01599` and every 97th member, so a run of 400 and a
/// scattering of members keep no app (their profiles stay); test members `m…t` (every 60th
/// position) sit between them.
async fn seeded() -> (migrations::testing::TestDb, Store) {
    let (db, store) = fresh_store().await;
    store.apply(&tenant(T, false, 1)).await.unwrap();
    let all: Vec<(String, usize)> = (0..MEMBERS).map(|i| (user(i), i)).collect();
    let mut v = 10;
    for chunk in all.chunks(500) {
        v += 1;
        store
            .apply(&auth("a1", AuthOp::Add, v, false, chunk))
            .await
            .unwrap();
    }
    let thirds: Vec<_> = all.iter().filter(|(_, i)| i % 3 == 0).cloned().collect();
    v += 1;
    store
        .apply(&auth("a2", AuthOp::Add, v, false, &thirds))
        .await
        .unwrap();
    let dropped: Vec<_> = all
        .iter()
        .filter(|(_, i)| (1000..1600).contains(i) || i % 97 == 0)
        .cloned()
        .collect();
    v += 1;
    store
        .apply(&auth("a1", AuthOp::Delete, v, false, &dropped))
        .await
        .unwrap();
    let tests: Vec<_> = (0..MEMBERS)
        .step_by(60)
        .map(|i| (format!("{}t", user(i)), i))
        .collect();
    v += 1;
    store
        .apply(&auth("a1", AuthOp::Add, v, true, &tests))
        .await
        .unwrap();
    (db, store)
}

/// What the member list must show, from the store's snapshot: every live member some live
/// authorisation names (test members only with `include_test`), in `userName` order, as the
/// API shows it, with those authorisations.
async fn expected(
    store: &Store,
    include_test: bool,
) -> Vec<(Value, Vec<kitsync_store::AuthorizationState>)> {
    let snap = store.snapshot(T).await.unwrap();
    let mut apps: BTreeMap<&str, Vec<&kitsync_store::AuthorizationState>> = BTreeMap::new();
    for a in &snap.authorizations {
        apps.entry(a.user_name.as_str()).or_default().push(a);
    }
    snap.members
        .iter()
        .filter(|m| include_test || !m.test)
        .filter_map(|m| {
            let mut mine: Vec<_> = apps.get(m.user_name.as_str())?.clone();
            mine.sort_by(|a, b| a.app_id.cmp(&b.app_id));
            let body = json!({
                "userName": m.user_name,
                "name": m.name,
                "orgCode": m.org_code,
                "position": m.position,
                "employeeCode": m.employee_code,
                "employeeType": m.employee_type,
                "email": m.email,
                "mobile": m.mobile,
                "workPlace": m.work_place,
                "extension": m.extension,
                "apps": mine
                    .iter()
                    .map(|a| json!({"appId": a.app_id, "role": a.role, "enabled": a.enabled}))
                    .collect::<Vec<_>>(),
            });
            Some((body, mine.into_iter().cloned().collect()))
        })
        .collect()
}

/// Whether a member (as the API shows it, with its authorisations) passes a filter.
type Keep = fn(&Value, &[kitsync_store::AuthorizationState]) -> bool;

/// Every item of the walk from `first` (a path with a query), page by page; each page holds
/// at most `limit` items, and only the last has no `nextCursor`.
async fn walk(app: &axum::Router, first: &str, limit: usize, token: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut path = first.to_owned();
    loop {
        let (status, body) = get(app, &path, token).await;
        assert_eq!(status, 200, "{path}: {body}");
        let items = body["items"].as_array().unwrap();
        assert!(items.len() <= limit, "{path}: {} items", items.len());
        out.extend(items.iter().cloned());
        match body["nextCursor"].as_str() {
            Some(c) => {
                assert_eq!(items.len(), limit, "{path}: a short page before the last");
                path = format!("{first}&cursor={c}");
            }
            None => return out,
        }
    }
}

#[tokio::test]
async fn walks_return_every_member_once_with_all_its_apps() {
    let (db, store) = seeded().await;
    let app = kitsync_api::router(store.clone());
    let reader = token(&store, "reader", &[Scope::DirectoryRead], None).await;
    let base = format!("/api/v1/tenants/{T}/members");
    for include_test in [false, true] {
        let want = expected(&store, include_test).await;
        assert!(want.len() > 2000, "{}", want.len());
        for limit in [1000, 333, 7] {
            let first = format!("{base}?limit={limit}&includeTest={include_test}");
            let got = walk(&app, &first, limit, &reader).await;
            let want: Vec<&Value> = want.iter().map(|(body, _)| body).collect();
            assert_eq!(got.len(), want.len(), "{first}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(&g, w, "{first}");
            }
        }
    }
    // Filtered walks: the same members as the snapshot says, by the filter's own path.
    let want = expected(&store, false).await;
    let filters: [(&str, Keep); 4] = [
        ("orgCode=D3", |m, _| m["orgCode"] == "D3"),
        ("appId=a2", |_, a| a.iter().any(|a| a.app_id == "a2")),
        ("role=admin", |_, a| a.iter().any(|a| a.role == "admin")),
        ("enabled=false&appId=a1", |_, a| {
            a.iter().any(|a| !a.enabled && a.app_id == "a1")
        }),
    ];
    for (query, keep) in filters {
        let first = format!("{base}?limit=100&{query}");
        let got = walk(&app, &first, 100, &reader).await;
        let want: Vec<&Value> = want
            .iter()
            .filter(|(m, a)| keep(m, a))
            .map(|(m, _)| m)
            .collect();
        assert!(!want.is_empty(), "{query}");
        assert_eq!(got.iter().collect::<Vec<_>>(), want, "{query}");
    }
    db.cleanup().await;
}

/// The statements run on a connection, each with how many values it binds.
type Log = Arc<Mutex<Vec<(String, usize)>>>;

fn logged(db: &migrations::testing::TestDb) -> (Store, Log) {
    let log: Log = Arc::default();
    let mut conn = db.conn.clone();
    let sink = Arc::clone(&log);
    conn.set_metric_callback(move |info| {
        let values = info.statement.values.as_ref().map_or(0, |v| v.0.len());
        sink.lock()
            .unwrap()
            .push((info.statement.sql.clone(), values));
    });
    (Store::new(conn, StoreSettings::default()), log)
}

#[tokio::test]
async fn a_page_is_a_few_statements_that_do_not_grow_with_the_page() {
    let (db, seeded_store) = seeded().await;
    let (store, log) = logged(&db);
    let reader = token(&seeded_store, "reader", &[Scope::DirectoryRead], None).await;
    let app = kitsync_api::router(store.clone());
    let filters = [
        MemberFilter::default(),
        MemberFilter {
            org_code: Some("D3".into()),
            ..MemberFilter::default()
        },
        MemberFilter {
            app_id: Some("a2".into()),
            ..MemberFilter::default()
        },
    ];
    // The store: a page binds a few values, never the page's names: as many for 10 members
    // as for 1 000. A filtered page is one statement (so one snapshot, decision 0022); an
    // unfiltered one reads two index ranges, the members then their authorisations, in one
    // read-only snapshot. An unfiltered page whose range holds more members without an app
    // than its margin (after m00990: 400 of the next 600) reads on from where that range
    // ended: a second pair of ranges, a third at most here.
    for filter in &filters {
        for after in [None, Some("m00990")] {
            for limit in [10, 1001] {
                log.lock().unwrap().clear();
                let page = store.members(T, filter, after, limit).await.unwrap();
                assert!(!page.is_empty());
                let ran = std::mem::take(&mut *log.lock().unwrap());
                let continued =
                    after.is_some() && filter.org_code.is_none() && filter.app_id.is_none();
                if filter.org_code.is_none() && filter.app_id.is_none() && limit == 10 {
                    assert_eq!(page.len(), 10, "a continued page is filled");
                }
                let unfiltered = filter.org_code.is_none() && filter.app_id.is_none();
                let statements = match (unfiltered, continued) {
                    (true, true) => 4..=6,
                    (true, false) => 2..=2,
                    (false, _) => 1..=1,
                };
                assert!(
                    statements.contains(&ran.len()),
                    "{filter:?} after {after:?}, {limit}: {} statements {ran:?}",
                    ran.len()
                );
                assert!(
                    ran.iter().all(|(_, values)| *values <= 6),
                    "{filter:?} after {after:?}, {limit}: {ran:?}"
                );
            }
        }
    }
    // Over HTTP: the same statements for a page of 10 as for a page of 1 000.
    let mut per_page = Vec::new();
    for limit in [10, 1000] {
        log.lock().unwrap().clear();
        let (status, body) = get(
            &app,
            &format!("/api/v1/tenants/{T}/members?limit={limit}"),
            &reader,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["items"].as_array().unwrap().len(), limit);
        let ran = std::mem::take(&mut *log.lock().unwrap());
        per_page.push(ran.iter().map(|(_, n)| *n).collect::<Vec<_>>());
    }
    assert_eq!(per_page[0], per_page[1]);
    // The token, the tenant, the two ranges.
    assert!(per_page[1].len() <= 4, "{per_page:?}");
    db.cleanup().await;
}
