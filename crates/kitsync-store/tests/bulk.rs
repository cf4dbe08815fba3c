//! Bulk changes are set-based: a 500-user authSync and a 10 000-department full sync apply
//! correctly in a handful of statements (counted with sea-orm's metric callback, so the check
//! is deterministic; timings are printed, never asserted — run with `--nocapture`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic
mod common;

use common::*;
use kitsync_domain::{AuthOp, Command, OrgInfo, Role};
use kitsync_store::{Outcome, Store, StoreSettings};
use migrations::testing::{fresh_db, TestDb};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A store whose statements are counted, and the backend it runs on, for the printed timings.
struct Counted {
    store: Store,
    statements: Arc<AtomicUsize>,
    backend: &'static str,
}

async fn counted_store() -> (TestDb, Counted) {
    let db = fresh_db().await.unwrap();
    let statements = Arc::new(AtomicUsize::new(0));
    let mut conn = db.conn.clone();
    let counter = Arc::clone(&statements);
    conn.set_metric_callback(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let store = Store::new(conn, StoreSettings::default());
    let backend = if db.is_postgres() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let counted = Counted {
        store,
        statements,
        backend,
    };
    (db, counted)
}

impl Counted {
    /// Applies one command, returning its outcome and the statements it took.
    async fn measured(&self, what: &str, c: &Command) -> (Outcome, usize) {
        self.statements.store(0, Ordering::Relaxed);
        let started = Instant::now();
        let outcome = self.store.apply(c).await.unwrap();
        let n = self.statements.load(Ordering::Relaxed);
        eprintln!(
            "{} {what}: {outcome:?} in {:?}, {n} statements",
            self.backend,
            started.elapsed()
        );
        (outcome, n)
    }
}

#[tokio::test]
async fn a_500_user_auth_sync_is_a_handful_of_statements() {
    let (db, counted) = counted_store().await;
    let store = &counted.store;
    let users: Vec<_> = (0..500)
        .map(|i| {
            user(
                &format!("user{i:04}"),
                if i == 0 { Role::Admin } else { Role::User },
            )
        })
        .collect();

    let add = auth("t", "app", AuthOp::Add, 1_000, users.clone());
    let (outcome, n) = counted.measured("authSync add 500", &add).await;
    assert_eq!(outcome, Outcome::Applied { changed: 1000 });
    assert!(n <= 12, "{n} statements for 500 users");
    let c = store.counts().await.unwrap();
    // One journal row per user (its profile and authorisation together), and the tenant's
    // instance id.
    assert_eq!((c.members, c.authorizations, c.journal), (500, 500, 501));

    // A newer modify rewrites every row, still set-based.
    let mut modified = users.clone();
    for u in &mut modified {
        u.position = Some("Lead".into());
    }
    let modify = auth("t", "app", AuthOp::Modify, 2_000, modified);
    let (outcome, n) = counted.measured("authSync modify 500", &modify).await;
    assert_eq!(outcome, Outcome::Applied { changed: 1000 });
    assert!(n <= 12, "{n} statements for 500 users");

    // A repeat reads and writes nothing.
    let (outcome, n) = counted.measured("authSync repeat 500", &modify).await;
    assert_eq!(outcome, Outcome::Duplicate);
    assert!(n <= 8, "{n} statements for a repeat");

    let cancel = auth("t", "app", AuthOp::Cancel, 3_000, users);
    let (outcome, n) = counted.measured("authSync cancel 500", &cancel).await;
    assert_eq!(outcome, Outcome::Applied { changed: 500 });
    assert!(n <= 10, "{n} statements for 500 users");
    let c = store.counts().await.unwrap();
    assert_eq!((c.members, c.authorizations), (500, 0));
    db.cleanup().await;
}

#[tokio::test]
async fn a_10000_department_full_sync_is_set_based() {
    let (db, counted) = counted_store().await;
    let store = &counted.store;
    let tree = |n: usize, label: &str| -> Vec<OrgInfo> {
        (0..n)
            .map(|d| {
                let parent = (d > 0).then(|| format!("d{:05}", (d - 1) / 10));
                info(
                    &format!("d{d:05}"),
                    &format!("{label} {d}"),
                    parent.as_deref(),
                )
            })
            .collect()
    };

    let first = full("t", 1_000, tree(10_000, "Department"));
    let (outcome, n) = counted.measured("allOrgSync 10 000", &first).await;
    assert_eq!(outcome, Outcome::Applied { changed: 10_000 });
    assert!(n <= 40, "{n} statements for 10 000 departments");
    assert_eq!(store.counts().await.unwrap().departments, 10_000);

    // The next snapshot keeps 6 000 (renaming them) and drops 4 000: within the 50 % guard.
    let second = full("t", 2_000, tree(6_000, "Renamed"));
    let (outcome, n) = counted
        .measured("allOrgSync 6 000 kept, 4 000 removed", &second)
        .await;
    assert_eq!(outcome, Outcome::Applied { changed: 10_000 });
    assert!(n <= 40, "{n} statements for 10 000 departments");
    let state = store.snapshot("t").await.unwrap();
    assert_eq!(state.departments.len(), 6_000);
    assert!(state
        .departments
        .iter()
        .all(|d| d.org_name.starts_with("Renamed") && d.version == 2_000));

    let (outcome, n) = counted.measured("allOrgSync repeat", &second).await;
    assert_eq!(outcome, Outcome::Duplicate);
    assert!(n <= 8, "{n} statements for a repeat");

    // Dropping everything is held by the guard, and costs no department writes.
    let empty = full("t", 3_000, Vec::new());
    let (outcome, n) = counted.measured("allOrgSync empty (held)", &empty).await;
    assert!(matches!(outcome, Outcome::Held { .. }), "{outcome:?}");
    assert!(n <= 12, "{n} statements");

    // A tenant delete purges them all, set-based.
    let (outcome, n) = counted
        .measured("tenantSync delete (purge 6 000)", &tenant_del("t", 4_000))
        .await;
    assert_eq!(outcome, Outcome::Applied { changed: 6_001 });
    assert!(n <= 20, "{n} statements for the purge");
    assert_eq!(store.counts().await.unwrap().departments, 0);
    db.cleanup().await;
}
