//! SCIM user filters are compiled to SQL; this checks the compiled filters against the
//! reference evaluator (`scim::filter::Filter::matches` over each user's JSON) on generated
//! filters, on SQLite or PostgreSQL (`KITSYNC_TEST_DATABASE_URL`). Members with and without
//! each optional field, enabled and disabled, in one or two apps, exercise the NULL and
//! multi-valued corners.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod common;

use common::{fresh_store, runner, runtime, strs, token, urlencode};
use kitsync_api::scim::filter::Filter;
use kitsync_api::scim::schema::user_case_exact;
use kitsync_domain::{
    AuthChange, AuthOp, AuthUser, Command, KitTime, Op, Role, Scope, TenantChange,
};
use proptest::prelude::*;

fn member(i: usize) -> AuthUser {
    let some = |on: bool, v: String| on.then_some(v);
    AuthUser {
        user_name: format!(
            "{}{i:02}",
            if i.is_multiple_of(4) { "User" } else { "user" }
        ),
        name: some(
            !i.is_multiple_of(7),
            format!("{} {i}", ["Ann", "bob", "CAROL", "dave"][i % 4]),
        ),
        org_code: some(!i.is_multiple_of(5), format!("d{}", i % 3)),
        position: some(
            !i.is_multiple_of(3),
            ["Engineer", "engineer", "Manager"][i % 3].to_owned(),
        ),
        employee_code: some(i.is_multiple_of(2), format!("E{i:03}")),
        employee_type: Some(1),
        role: if i.is_multiple_of(6) {
            Role::Admin
        } else {
            Role::User
        },
        enabled: i % 4 != 1,
        mobile: some(i % 3 != 1, format!("138{i:04}")),
        email: some(
            i % 5 != 2,
            format!("m{i}@{}.com", ["example", "EXAMPLE", "corp"][i % 3]),
        ),
        work_place: None,
        entry_date: None,
        extension: None,
    }
}

fn auth(app: &str, users: Vec<AuthUser>, v: i64) -> Command {
    Command::Auth(AuthChange {
        tenant_id: "t".into(),
        instance_id: None,
        app_id: app.into(),
        op: AuthOp::Add,
        users,
        test: false,
        version: KitTime(v),
        time_stamp: None,
    })
}

const ATTRS: &[&str] = &[
    "userName",
    "id",
    "displayName",
    "name.formatted",
    "title",
    "emails",
    "emails.value",
    "phoneNumbers.value",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
];
const OPS: &[&str] = &["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"];
const VALUES: &[&str] = &[
    "user01",
    "User",
    "user",
    "ann",
    "CAROL 2",
    "engineer",
    "Manager",
    "example.com",
    "@corp",
    "d1",
    "E00",
    "138",
    "",
    "zz",
    "m1",
    "0",
];

fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (
            prop::sample::select(ATTRS),
            prop::sample::select(OPS),
            prop::sample::select(VALUES)
        )
            .prop_map(|(a, o, v)| format!("{a} {o} \"{v}\"")),
        1 => prop::sample::select(ATTRS).prop_map(|a| format!("{a} pr")),
        1 => (prop::sample::select(&["eq", "ne"][..]), any::<bool>())
            .prop_map(|(o, b)| format!("active {o} {b}")),
        1 => prop::sample::select(&["app-a:user", "app-b:admin", "app-a:admin", "nope"][..])
            .prop_map(|g| format!("groups eq \"{g}\"")),
        1 => (prop::sample::select(OPS), prop::sample::select(VALUES))
            .prop_map(|(o, v)| format!("emails[type eq \"work\" and value {o} \"{v}\"]")),
        1 => Just("nickName pr".to_owned()),
    ]
}

fn filter() -> impl Strategy<Value = String> {
    leaf().prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} and {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) or ({b})")),
            inner.prop_map(|a| format!("not ({a})")),
        ]
    })
}

async fn user_names(app: &axum::Router, token: &str, filter: Option<&str>) -> Vec<String> {
    let mut path = "/scim/v2/t/Users?count=1000".to_owned();
    if let Some(f) = filter {
        path.push_str(&format!("&filter={}", urlencode(f)));
    }
    let (status, body) = common::get(app, &path, token).await;
    assert_eq!(status, 200, "{filter:?}: {body}");
    strs(&body["Resources"], "id")
        .into_iter()
        .map(str::to_owned)
        .collect()
}

#[test]
fn sql_filters_agree_with_the_reference_evaluator() {
    let rt = runtime();
    let (app, token, users, _db) = rt.block_on(async {
        let (db, store) = fresh_store().await;
        store
            .apply(&Command::Tenant(TenantChange {
                tenant_id: "t".into(),
                instance_id: None,
                order_id: None,
                tenant_code: "t".into(),
                name: "T".into(),
                domain_name: "https://t.example.com".into(),
                op: Op::Upsert,
                test: false,
                version: KitTime(1),
            }))
            .await
            .unwrap();
        store
            .apply(&auth("app-a", (0..40).map(member).collect(), 10))
            .await
            .unwrap();
        store
            .apply(&auth("app-b", (0..40).step_by(3).map(member).collect(), 11))
            .await
            .unwrap();
        let token = token(&store, "r", &[Scope::DirectoryRead], None).await;
        let app = kitsync_api::router(store);
        // Every user's full representation, for the reference evaluator.
        let (_, body) = common::get(&app, "/scim/v2/t/Users?count=1000", &token).await;
        let users = body["Resources"].as_array().unwrap().clone();
        (app, token, users, db)
    });
    assert_eq!(users.len(), 40);

    let mut runner = runner(300);
    runner
        .run(&filter(), |text| {
            let parsed =
                Filter::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            let want: Vec<String> = users
                .iter()
                .filter(|u| parsed.matches(u, &user_case_exact))
                .map(|u| u["id"].as_str().unwrap().to_owned())
                .collect();
            let got = rt.block_on(user_names(&app, &token, Some(&text)));
            prop_assert_eq!(got, want, "filter: {}", text);
            Ok(())
        })
        .unwrap();
}
