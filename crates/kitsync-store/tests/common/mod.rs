//! Command builders and a fresh store per test (SQLite, or PostgreSQL when
//! `KITSYNC_TEST_DATABASE_URL` is set).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use kitsync_domain::{
    AppChange, AuthChange, AuthOp, AuthUser, Command, FullOrgSnapshot, KitTime, Op, OrgChange,
    OrgInfo, Role, SecretText, TenantChange,
};
use kitsync_store::{Store, StoreSettings};
use migrations::testing::{fresh_db, TestDb};

pub async fn store_with(share: f64) -> (TestDb, Store) {
    let db = fresh_db().await.expect("fresh database");
    let store = Store::new(
        db.conn.clone(),
        StoreSettings {
            mass_delete_share: share,
            ..StoreSettings::default()
        },
    );
    (db, store)
}

pub async fn store() -> (TestDb, Store) {
    store_with(0.5).await
}

/// `c` with its test flag set to `test` (the builders here make live data).
pub fn flagged(mut c: Command, test: bool) -> Command {
    match &mut c {
        Command::Tenant(x) => x.test = test,
        Command::App(x) => x.test = test,
        Command::Auth(x) => x.test = test,
        Command::Org(x) => x.test = test,
        Command::FullOrg(x) => x.test = test,
    }
    c
}

pub fn tenant(t: &str, v: i64) -> Command {
    tenant_named(t, &format!("Tenant {t}"), v)
}

pub fn tenant_named(t: &str, name: &str, v: i64) -> Command {
    Command::Tenant(TenantChange {
        tenant_id: t.into(),
        instance_id: Some(format!("inst-{t}")),
        order_id: Some("order".into()),
        tenant_code: format!("code-{t}"),
        name: name.into(),
        domain_name: "https://example.tenantaccount.com".into(),
        op: Op::Upsert,
        test: false,
        version: KitTime(v),
    })
}

pub fn tenant_del(t: &str, v: i64) -> Command {
    Command::Tenant(TenantChange {
        tenant_id: t.into(),
        instance_id: None,
        order_id: None,
        tenant_code: String::new(),
        name: String::new(),
        domain_name: String::new(),
        op: Op::Delete,
        test: false,
        version: KitTime(v),
    })
}

pub fn app(t: &str, a: &str, client: &str, v: i64) -> Command {
    Command::App(AppChange {
        tenant_id: t.into(),
        instance_id: Some(format!("inst-{t}")),
        app_id: a.into(),
        client_id: client.into(),
        client_secret: SecretText(format!("sealed-{client}")),
        secret_fp: None,
        op: Op::Upsert,
        test: false,
        version: KitTime(v),
    })
}

pub fn app_del(t: &str, a: &str, v: i64) -> Command {
    Command::App(AppChange {
        tenant_id: t.into(),
        instance_id: None,
        app_id: a.into(),
        client_id: String::new(),
        client_secret: SecretText(String::new()),
        secret_fp: None,
        op: Op::Delete,
        test: false,
        version: KitTime(v),
    })
}

pub fn org(t: &str, code: &str, name: &str, parent: Option<&str>, v: i64) -> Command {
    Command::Org(OrgChange {
        tenant_id: t.into(),
        instance_id: None,
        org_code: code.into(),
        org_name: name.into(),
        parent_code: parent.map(Into::into),
        op: Op::Upsert,
        test: false,
        version: KitTime(v),
    })
}

pub fn org_del(t: &str, code: &str, v: i64) -> Command {
    Command::Org(OrgChange {
        tenant_id: t.into(),
        instance_id: None,
        org_code: code.into(),
        org_name: String::new(),
        parent_code: None,
        op: Op::Delete,
        test: false,
        version: KitTime(v),
    })
}

pub fn info(code: &str, name: &str, parent: Option<&str>) -> OrgInfo {
    OrgInfo {
        org_code: code.into(),
        org_name: name.into(),
        parent_code: parent.map(Into::into),
    }
}

pub fn full(t: &str, v: i64, orgs: Vec<OrgInfo>) -> Command {
    Command::FullOrg(FullOrgSnapshot {
        tenant_id: t.into(),
        instance_id: Some(format!("inst-{t}")),
        orgs,
        test: false,
        version: KitTime(v),
    })
}

/// A snapshot of `codes`, each named `name {code}` at the root.
pub fn full_codes(t: &str, v: i64, codes: &[&str]) -> Command {
    full(
        t,
        v,
        codes
            .iter()
            .map(|c| info(c, &format!("name {c}"), None))
            .collect(),
    )
}

pub fn user(name: &str, role: Role) -> AuthUser {
    AuthUser {
        user_name: name.into(),
        name: Some(format!("User {name}")),
        org_code: Some("d1".into()),
        position: Some("Engineer".into()),
        employee_code: None,
        employee_type: Some(1),
        role,
        enabled: true,
        mobile: None,
        email: Some(format!("{name}@example.com")),
        work_place: None,
        entry_date: None,
        extension: None,
    }
}

pub fn auth(t: &str, a: &str, op: AuthOp, v: i64, users: Vec<AuthUser>) -> Command {
    Command::Auth(AuthChange {
        tenant_id: t.into(),
        instance_id: Some(format!("inst-{t}")),
        app_id: a.into(),
        op,
        users,
        test: false,
        version: KitTime(v),
        time_stamp: None,
    })
}

/// An authSync granting `names` the `user` role.
pub fn grant(t: &str, a: &str, v: i64, names: &[&str]) -> Command {
    auth(
        t,
        a,
        AuthOp::Add,
        v,
        names.iter().map(|n| user(n, Role::User)).collect(),
    )
}

pub fn revoke(t: &str, a: &str, v: i64, names: &[&str]) -> Command {
    auth(
        t,
        a,
        AuthOp::Cancel,
        v,
        names.iter().map(|n| user(n, Role::User)).collect(),
    )
}

/// A small deterministic generator (xorshift), so a failure can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
