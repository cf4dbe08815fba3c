//! Idempotency, order-insensitivity scenarios and the mass-deletion guard, against a real
//! database (SQLite, or PostgreSQL with `KITSYNC_TEST_DATABASE_URL`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic
mod common;

use common::*;
use kitsync_domain::{AuthOp, Command, Role};
use kitsync_store::journal::PlanStatus;
use kitsync_store::Actor;
use kitsync_store::{JournalEntry, Outcome, Store, StoreError};
use migrations::testing::TestDb;

fn applied(o: &Outcome) -> bool {
    matches!(o, Outcome::Applied { .. })
}

/// A fresh store whose tenant `t` has the departments `codes` (a snapshot at version 10).
async fn store_of(codes: &[&str]) -> (TestDb, Store) {
    let (db, s) = store().await;
    s.apply(&full_codes("t", 10, codes)).await.unwrap();
    (db, s)
}

/// Applies `c`, which the mass-deletion guard must hold; the held plan's id.
async fn held(s: &Store, c: &Command) -> i64 {
    let Outcome::Held { plan_id } = s.apply(c).await.unwrap() else {
        panic!("expected a held plan");
    };
    plan_id
}

/// The department codes of tenant `t`, in the snapshot's order.
async fn dept_codes(s: &Store, t: &str) -> Vec<String> {
    let state = s.snapshot(t).await.unwrap();
    state.departments.into_iter().map(|d| d.org_code).collect()
}

/// The journal entries after `after` about `entity`, in order.
async fn journal_of(s: &Store, after: i64, entity: &str) -> Vec<JournalEntry> {
    let journal = s.journal_after(after, 1000).await.unwrap();
    journal.into_iter().filter(|j| j.entity == entity).collect()
}

/// Whether `r` is the conflict a plan no longer held answers.
fn conflict<T>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict(_)))
}

#[tokio::test]
async fn repeats_are_duplicates_and_change_nothing() {
    let (db, s) = store().await;
    let commands = vec![
        tenant("t", 10),
        app("t", "a", "client", 11),
        org("t", "d1", "One", None, 12),
        org("t", "d2", "Two", Some("d1"), 12),
        full_codes("t", 13, &["d1", "d2", "d3"]),
        grant("t", "a", 14, &["u1", "u2"]),
        auth("t", "a", AuthOp::Modify, 15, vec![user("u1", Role::Admin)]),
        revoke("t", "a", 16, &["u2"]),
        org_del("t", "d3", 17),
        // Deletes of rows that never existed succeed and leave a tombstone.
        app_del("t", "never", 18),
        org_del("t", "never", 18),
        revoke("t", "a", 18, &["never"]),
        tenant_del("ghost", 18),
        app_del("t", "a", 19),
        tenant_del("t", 20),
    ];
    for c in &commands {
        let first = s.apply(c).await.unwrap();
        assert!(applied(&first), "{c:?} → {first:?}");
        let before = s.snapshot(c.tenant_id()).await.unwrap();
        let journal = s.counts().await.unwrap().journal;
        let second = s.apply(c).await.unwrap();
        assert_eq!(second, Outcome::Duplicate, "repeat of {c:?}");
        assert_eq!(s.snapshot(c.tenant_id()).await.unwrap(), before);
        assert_eq!(
            s.counts().await.unwrap().journal,
            journal,
            "journal grew on a repeat"
        );
    }
    // The whole history again, as one batch: nothing applies (older changes to the deleted
    // tenant are superseded now) and nothing is journaled.
    let journal = s.counts().await.unwrap().journal;
    let again = s.apply_batch(&commands).await.unwrap();
    assert!(again.iter().all(|o| !applied(o)), "{again:?}");
    assert_eq!(s.counts().await.unwrap().journal, journal);
    assert_eq!(
        s.tenant_ids().await.unwrap(),
        vec!["ghost".to_string(), "t".to_string()]
    );
    db.cleanup().await;
}

/// The same binding sent again carries the same secret, but sealed afresh (and, with no RSA
/// key, encrypted afresh by the marketplace): the secret's fingerprint, not its sealing, makes
/// it a repeat.
#[tokio::test]
async fn a_binding_repeated_with_a_resealed_secret_is_a_duplicate() {
    let (db, s) = store().await;
    let bound = |sealed: &str, fp: &str| {
        let kitsync_domain::Command::App(mut a) = app("t", "a", "client", 11) else {
            unreachable!()
        };
        a.client_secret = kitsync_domain::SecretText(sealed.into());
        a.secret_fp = Some(fp.into());
        kitsync_domain::Command::App(a)
    };
    assert!(applied(
        &s.apply(&bound("v2:first-sealing", "fp-1")).await.unwrap()
    ));
    let journal = s.journal_after(0, 1000).await.unwrap().len();
    assert_eq!(
        s.apply(&bound("v2:second-sealing", "fp-1")).await.unwrap(),
        Outcome::Duplicate
    );
    assert_eq!(
        s.journal_after(0, 1000).await.unwrap().len(),
        journal,
        "nothing journaled"
    );
    // Another secret at the same version is a change (ordered by content).
    assert_ne!(
        s.apply(&bound("v2:third-sealing", "fp-2")).await.unwrap(),
        Outcome::Duplicate
    );
    db.cleanup().await;
}

#[tokio::test]
async fn outcomes_and_counts_of_a_simple_history() {
    let (db, s) = store().await;
    let out = s
        .apply_batch(&[
            tenant("t", 10),
            app("t", "a", "c", 10),
            grant("t", "a", 11, &["u1", "u2"]),
            full_codes("t", 12, &["d1", "d2"]),
        ])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            Outcome::Applied { changed: 1 },
            Outcome::Applied { changed: 1 },
            Outcome::Applied { changed: 4 },
            Outcome::Applied { changed: 2 },
        ]
    );
    let c = s.counts().await.unwrap();
    assert_eq!(
        (
            c.tenants,
            c.apps,
            c.departments,
            c.members,
            c.authorizations
        ),
        (1, 1, 2, 2, 2)
    );
    // Tenant, app, one row per member (profile and authorisation together), two
    // departments, and the instance id.
    assert_eq!(c.journal, 7);
    let members = journal_of(&s, 0, "member").await;
    assert_eq!(members.len(), 2);
    assert_eq!(
        (members[0].entity_key.as_str(), members[0].action.as_str()),
        ("u1", "authorized")
    );
    assert_eq!(members[0].data["appId"], "a");
    assert_eq!(members[0].data["authorization"]["role"], "user");
    assert_eq!(members[0].data["authorization"]["enabled"], true);
    assert!(members[0].data["profile"]["name"].is_string());

    // A newer removal journals `deauthorized`, without a profile.
    s.apply(&revoke("t", "a", 13, &["u1"])).await.unwrap();
    let last = s.journal_after(0, 100).await.unwrap().pop().unwrap();
    assert_eq!(
        (
            last.entity.as_str(),
            last.entity_key.as_str(),
            last.action.as_str()
        ),
        ("member", "u1", "deauthorized")
    );
    assert_eq!(last.data["authorization"]["deleted"], true);
    assert!(last.data["profile"].is_null());
    let state = s.snapshot("t").await.unwrap();
    assert_eq!(state.instance_ids, vec!["inst-t".to_string()]);
    let t = state.tenant.unwrap();
    assert_eq!((t.name.as_str(), t.version), ("Tenant t", 10));
    assert_eq!(state.apps[0].client_secret.0, "sealed-c");
    assert!(
        !format!("{:?}", state.apps[0]).contains("sealed-c"),
        "Debug must not show the secret"
    );
    s.ping().await.unwrap();
    db.cleanup().await;
}

#[tokio::test]
async fn late_add_after_delete_does_not_resurrect() {
    let (db, s) = store().await;
    assert!(applied(&s.apply(&org_del("t", "d", 20)).await.unwrap()));
    assert_eq!(
        s.apply(&org("t", "d", "D", None, 10)).await.unwrap(),
        Outcome::Stale
    );
    assert!(applied(&s.apply(&app_del("t", "a", 20)).await.unwrap()));
    assert_eq!(
        s.apply(&app("t", "a", "c", 10)).await.unwrap(),
        Outcome::Stale
    );
    assert!(applied(
        &s.apply(&revoke("t", "a2", 20, &["u"])).await.unwrap()
    ));
    // The member profile is new (applied); the authorisation is older than its tombstone.
    assert_eq!(
        s.apply(&grant("t", "a2", 10, &["u"])).await.unwrap(),
        Outcome::Applied { changed: 1 }
    );
    assert!(applied(&s.apply(&tenant_del("t", 20)).await.unwrap()));
    assert_eq!(
        s.apply(&tenant("t", 15)).await.unwrap(),
        Outcome::Superseded
    );
    let state = s.snapshot("t").await.unwrap();
    assert!(state.tenant.is_none() && state.departments.is_empty() && state.apps.is_empty());
    assert!(state.authorizations.is_empty());
    // A newer add does bring it back.
    assert!(applied(
        &s.apply(&org("t", "d", "D", None, 30)).await.unwrap()
    ));
    assert_eq!(s.snapshot("t").await.unwrap().departments.len(), 1);
    db.cleanup().await;
}

#[tokio::test]
async fn older_modify_is_ignored_whatever_the_order() {
    let (db, s) = store().await;
    s.apply(&tenant_named("t", "new", 20)).await.unwrap();
    assert_eq!(
        s.apply(&tenant_named("t", "old", 10)).await.unwrap(),
        Outcome::Stale
    );
    assert_eq!(s.snapshot("t").await.unwrap().tenant.unwrap().name, "new");
    s.apply(&org("t", "d", "Renamed", None, 20)).await.unwrap();
    assert_eq!(
        s.apply(&org("t", "d", "Original", None, 10)).await.unwrap(),
        Outcome::Stale
    );
    s.apply(&app("t", "a", "new", 20)).await.unwrap();
    assert_eq!(
        s.apply(&app("t", "a", "old", 10)).await.unwrap(),
        Outcome::Stale
    );
    let state = s.snapshot("t").await.unwrap();
    assert_eq!(state.departments[0].org_name, "Renamed");
    assert_eq!(state.apps[0].client_id, "new");
    db.cleanup().await;
}

#[tokio::test]
async fn tenant_delete_purges_and_blocks_older_late_changes() {
    let (db, s) = store().await;
    s.apply_batch(&[
        tenant("t", 1),
        app("t", "a", "c", 2),
        org("t", "d1", "D1", None, 3),
        grant("t", "a", 4, &["u1", "u2"]),
        // Newer than the delete below, applied before it.
        app("t", "late", "c2", 15),
        org("t", "d2", "D2", None, 15),
        tenant("other", 1),
        grant("other", "a", 4, &["u1"]),
    ])
    .await
    .unwrap();
    let out = s.apply(&tenant_del("t", 10)).await.unwrap();
    // tenant + app a + d1 + 2 members + 2 authorisations.
    assert_eq!(out, Outcome::Applied { changed: 7 });
    let state = s.snapshot("t").await.unwrap();
    assert!(state.tenant.is_none());
    assert!(state.members.is_empty() && state.authorizations.is_empty());
    assert_eq!(
        state
            .apps
            .iter()
            .map(|a| a.app_id.as_str())
            .collect::<Vec<_>>(),
        ["late"]
    );
    assert_eq!(dept_codes(&s, "t").await, ["d2"]);
    // Older late changes are superseded, newer ones apply.
    for c in [
        app("t", "a", "c", 5),
        grant("t", "a", 6, &["u3"]),
        org("t", "d3", "D3", None, 7),
        full_codes("t", 8, &["d4"]),
        tenant("t", 9),
        app_del("t", "late", 9),
        tenant_del("t", 9),
    ] {
        assert_eq!(s.apply(&c).await.unwrap(), Outcome::Superseded, "{c:?}");
    }
    assert!(applied(&s.apply(&tenant("t", 12)).await.unwrap()));
    assert!(applied(
        &s.apply(&grant("t", "a", 13, &["u1"])).await.unwrap()
    ));
    let state = s.snapshot("t").await.unwrap();
    assert_eq!(state.tenant.unwrap().version, 12);
    assert_eq!(state.members.len(), 1);
    // Another tenant is untouched.
    let other = s.snapshot("other").await.unwrap();
    assert_eq!((other.members.len(), other.authorizations.len()), (1, 1));
    db.cleanup().await;
}

#[tokio::test]
async fn app_delete_removes_only_its_authorisations() {
    let (db, s) = store().await;
    s.apply_batch(&[
        app("t", "a1", "c1", 1),
        app("t", "a2", "c2", 1),
        grant("t", "a1", 5, &["u1", "u2"]),
        grant("t", "a2", 6, &["u1"]),
        grant("t", "a1", 12, &["u9"]),
    ])
    .await
    .unwrap();
    assert_eq!(
        s.apply(&app_del("t", "a1", 10)).await.unwrap(),
        Outcome::Applied { changed: 3 }
    );
    let state = s.snapshot("t").await.unwrap();
    let auths: Vec<(&str, &str)> = state
        .authorizations
        .iter()
        .map(|a| (a.app_id.as_str(), a.user_name.as_str()))
        .collect();
    assert_eq!(auths, [("a1", "u9"), ("a2", "u1")]);
    assert_eq!(state.members.len(), 3, "profiles stay");
    assert_eq!(state.apps.len(), 1);
    // Late, older grants for the deleted app are superseded; newer ones apply.
    assert_eq!(
        s.apply(&revoke("t", "a1", 8, &["u9"])).await.unwrap(),
        Outcome::Superseded
    );
    assert_eq!(
        s.apply(&auth(
            "t",
            "a1",
            AuthOp::Add,
            8,
            vec![user("u3", Role::User)]
        ))
        .await
        .unwrap(),
        Outcome::Applied { changed: 1 },
        "the member profile is new, the authorisation is superseded"
    );
    assert_eq!(s.snapshot("t").await.unwrap().authorizations.len(), 2);
    // An app delete older than a re-add still purges the older authorisations.
    s.apply(&grant("t", "a2", 20, &["u5"])).await.unwrap();
    s.apply(&app("t", "a2", "c2", 30)).await.unwrap();
    assert_eq!(
        s.apply(&app_del("t", "a2", 25)).await.unwrap(),
        Outcome::Applied { changed: 2 }
    );
    let state = s.snapshot("t").await.unwrap();
    assert!(
        state.apps.iter().any(|a| a.app_id == "a2"),
        "the re-add at 30 stays"
    );
    assert!(!state.authorizations.iter().any(|a| a.app_id == "a2"));
    db.cleanup().await;
}

#[tokio::test]
async fn cancel_removes_one_app_and_profiles_are_newest_wins() {
    let (db, s) = store().await;
    let mut newer = user("u1", Role::Admin);
    newer.name = Some("Newer".into());
    let mut older = user("u1", Role::User);
    older.name = Some("Older".into());
    s.apply(&auth("t", "a1", AuthOp::Add, 10, vec![newer]))
        .await
        .unwrap();
    // From another app, older: its authorisation applies, its profile is stale.
    assert_eq!(
        s.apply(&auth("t", "a2", AuthOp::Add, 9, vec![older]))
            .await
            .unwrap(),
        Outcome::Applied { changed: 1 }
    );
    let state = s.snapshot("t").await.unwrap();
    assert_eq!(state.members[0].name.as_deref(), Some("Newer"));
    assert_eq!(state.members[0].version, 10);
    assert_eq!(state.authorizations.len(), 2);
    let groups = s.derived_groups("t").await.unwrap();
    let ids: Vec<&str> = groups.iter().map(|g| g.group_id.as_str()).collect();
    assert_eq!(ids, ["a1:admin", "a2:user"]);
    assert_eq!(groups[0].display_name, "a1 admins");
    assert_eq!(groups[0].members, ["u1"]);

    assert_eq!(
        s.apply(&revoke("t", "a1", 11, &["u1"])).await.unwrap(),
        Outcome::Applied { changed: 1 }
    );
    let state = s.snapshot("t").await.unwrap();
    assert_eq!(state.authorizations.len(), 1);
    assert_eq!(state.authorizations[0].app_id, "a2");
    assert_eq!(
        state.members.len(),
        1,
        "the profile is untouched by a cancel"
    );
    // flag 0 behaves like 3.
    let del = auth("t", "a2", AuthOp::Delete, 12, vec![user("u1", Role::User)]);
    assert!(applied(&s.apply(&del).await.unwrap()));
    assert!(s.snapshot("t").await.unwrap().authorizations.is_empty());
    assert!(s.derived_groups("t").await.unwrap().is_empty());
    db.cleanup().await;
}

#[tokio::test]
async fn full_sync_reconciles_with_incremental_changes() {
    let (db, s) = store_with(1.0).await;
    s.apply_batch(&[
        org("t", "d1", "D1", None, 5),
        org("t", "d2", "D2", None, 5),
        org("t", "d3", "D3", None, 20),
        org_del("t", "d4", 20),
    ])
    .await
    .unwrap();
    let snap = full(
        "t",
        10,
        vec![
            info("d1", "D1 renamed", None),
            info("d4", "D4", None),
            info("d5", "D5", Some("d1")),
        ],
    );
    let mark = s.journal_after(0, 1000).await.unwrap().last().unwrap().id;
    // d1 renamed, d5 created, d2 deleted; d3 (newer, absent) kept; d4 (newer tombstone) stays.
    assert_eq!(
        s.apply(&snap).await.unwrap(),
        Outcome::Applied { changed: 3 }
    );
    assert_eq!(dept_codes(&s, "t").await, ["d1", "d3", "d5"]);
    let state = s.snapshot("t").await.unwrap();
    assert_eq!(state.departments[0].org_name, "D1 renamed");
    // Late, older incremental changes are superseded by the snapshot.
    assert_eq!(
        s.apply(&org("t", "d6", "D6", None, 8)).await.unwrap(),
        Outcome::Superseded
    );
    assert_eq!(
        s.apply(&org_del("t", "d1", 9)).await.unwrap(),
        Outcome::Superseded
    );
    assert_eq!(
        s.apply(&full_codes("t", 9, &["x"])).await.unwrap(),
        Outcome::Superseded
    );
    assert_eq!(s.apply(&snap).await.unwrap(), Outcome::Duplicate);
    // The journal names what happened to each department; the snapshot's deletions are
    // stamped just before it.
    let journal = s.journal_after(0, 1000).await.unwrap();
    let dept: Vec<(String, String, i64)> = journal_of(&s, mark, "department")
        .await
        .into_iter()
        .map(|j| (j.entity_key, j.action, j.version))
        .collect();
    assert_eq!(
        dept,
        [
            ("d1".to_string(), "renamed".to_string(), 10),
            ("d5".into(), "created".into(), 10),
            ("d2".into(), "deleted".into(), 9),
        ]
    );
    s.apply(&org("t", "d5", "D5", None, 30)).await.unwrap();
    let last = s.journal_after(0, 1000).await.unwrap().pop().unwrap();
    assert_eq!(
        (last.action.as_str(), last.data["parentCode"].is_null()),
        ("moved", true)
    );
    // Paging.
    let page = s.journal_after(journal[1].id, 2).await.unwrap();
    assert_eq!(
        page.iter().map(|j| j.id).collect::<Vec<_>>(),
        [journal[2].id, journal[3].id]
    );
    db.cleanup().await;
}

#[tokio::test]
async fn mass_deletion_is_held_until_approved() {
    let (db, s) = store_of(&["a", "b", "c", "d"]).await;
    let plan_id = held(&s, &full_codes("t", 20, &["a", "x"])).await;
    assert_eq!(
        s.snapshot("t").await.unwrap().departments.len(),
        4,
        "nothing applied"
    );
    // The same snapshot again is a duplicate, not a second plan.
    assert_eq!(
        s.apply(&full_codes("t", 20, &["a", "x"])).await.unwrap(),
        Outcome::Duplicate
    );
    let held = s.list_plans(Some(PlanStatus::Held)).await.unwrap();
    assert_eq!(held.len(), 1);
    let p = &held[0];
    assert_eq!(
        (p.id, p.version, p.delete_count, p.live_before, p.org_count),
        (plan_id, 20, 3, 4, 2)
    );
    assert_eq!(p.deletes, ["b", "c", "d"]);
    assert_eq!(s.counts().await.unwrap().held_plans, 1);
    // A newer incremental change arriving meanwhile is kept by the approval.
    s.apply(&org("t", "c", "C newer", None, 25)).await.unwrap();
    // a rewritten, x created, b and d deleted; c is newer than the snapshot.
    assert_eq!(
        s.approve_plan(&Actor::Cli, plan_id).await.unwrap(),
        Outcome::Applied { changed: 4 }
    );
    assert_eq!(dept_codes(&s, "t").await, ["a", "c", "x"]);
    // The plan's life is in the change feed, under types the feed documents.
    let plan_feed = kitsync_store::FeedFilter {
        types: Some(vec!["plan".into()]),
        include_test: true,
        ..Default::default()
    };
    let kinds: Vec<String> = s
        .feed_page(0, None, &plan_feed, 100)
        .await
        .unwrap()
        .events
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["plan.held", "plan.approved"]);
    assert_eq!(
        s.list_plans(Some(PlanStatus::Approved))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(conflict(s.approve_plan(&Actor::Cli, plan_id).await));
    assert!(conflict(s.reject_plan(&Actor::Cli, plan_id).await));
    assert!(matches!(
        s.approve_plan(&Actor::Cli, 9999).await,
        Err(StoreError::NotFound(_))
    ));
    // Approval set the snapshot cutoff.
    assert_eq!(
        s.apply(&org("t", "b", "B", None, 15)).await.unwrap(),
        Outcome::Superseded
    );
    let plans = journal_of(&s, 0, "plan").await;
    assert_eq!(
        plans.iter().map(|j| j.action.as_str()).collect::<Vec<_>>(),
        ["held", "approved"]
    );
    db.cleanup().await;
}

#[tokio::test]
async fn rejected_plans_stay_unapplied() {
    let (db, s) = store_of(&["a", "b", "c"]).await;
    let plan_id = held(&s, &full_codes("t", 20, &[])).await;
    s.reject_plan(&Actor::Cli, plan_id).await.unwrap();
    assert_eq!(
        s.list_plans(Some(PlanStatus::Rejected)).await.unwrap()[0].id,
        plan_id
    );
    assert!(s
        .list_plans(Some(PlanStatus::Held))
        .await
        .unwrap()
        .is_empty());
    // Redelivered: still not applied, not held again.
    assert_eq!(
        s.apply(&full_codes("t", 20, &[])).await.unwrap(),
        Outcome::Duplicate
    );
    assert_eq!(s.snapshot("t").await.unwrap().departments.len(), 3);
    // A later snapshot within the guard applies normally.
    assert!(applied(
        &s.apply(&full_codes("t", 30, &["a", "b"])).await.unwrap()
    ));
    assert_eq!(s.snapshot("t").await.unwrap().departments.len(), 2);
    db.cleanup().await;
}

#[tokio::test]
async fn the_next_snapshot_confirms_the_same_deletions() {
    let (db, s) = store_of(&["a", "b", "c", "d"]).await;
    let plan_id = held(&s, &full_codes("t", 20, &["a"])).await;
    // The next snapshot deletes (at least) the same departments: both are believed.
    assert_eq!(
        s.apply(&full_codes("t", 30, &["a", "e"])).await.unwrap(),
        Outcome::Applied { changed: 5 }
    );
    let plans = s.list_plans(None).await.unwrap();
    assert_eq!(
        (plans[0].id, plans[0].status.as_str()),
        (plan_id, "confirmed")
    );
    assert_eq!(plans.len(), 1);
    assert_eq!(dept_codes(&s, "t").await, ["a", "e"]);
    db.cleanup().await;
}

#[tokio::test]
async fn plans_are_superseded_by_newer_snapshots() {
    let (db, s) = store_of(&["a", "b", "c", "d"]).await;
    let p1 = held(&s, &full_codes("t", 20, &["a"])).await;
    // A newer mass deletion that does not cover p1's deletions: held, p1 superseded.
    let p2 = held(&s, &full_codes("t", 30, &["b"])).await;
    // An older one arriving late is recorded as superseded at once.
    assert_eq!(
        s.apply(&full_codes("t", 25, &["c"])).await.unwrap(),
        Outcome::Superseded
    );
    let status: Vec<(i64, PlanStatus)> = s
        .list_plans(None)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.id, p.status))
        .collect();
    assert_eq!(status[0], (p1, PlanStatus::Superseded));
    assert_eq!(status[1], (p2, PlanStatus::Held));
    assert_eq!(status[2].1, PlanStatus::Superseded);
    assert!(conflict(s.approve_plan(&Actor::Cli, p1).await));
    // A snapshot within the guard applies and supersedes the held plan.
    assert!(applied(
        &s.apply(&full_codes("t", 40, &["a", "b", "c"]))
            .await
            .unwrap()
    ));
    assert!(s
        .list_plans(Some(PlanStatus::Held))
        .await
        .unwrap()
        .is_empty());
    // A tenant delete supersedes the held plans it overtakes.
    s.apply(&full_codes("t", 50, &["a", "b", "c", "d"]))
        .await
        .unwrap();
    let p3 = held(&s, &full_codes("t", 60, &[])).await;
    s.apply(&tenant_del("t", 70)).await.unwrap();
    let last = s.list_plans(None).await.unwrap().pop().unwrap();
    assert_eq!((last.id, last.status.as_str()), (p3, "superseded"));
    assert!(conflict(s.approve_plan(&Actor::Cli, p3).await));
    db.cleanup().await;
}

/// A deterministic history over two tenants, under `prefix`.
fn history(prefix: &str) -> Vec<kitsync_domain::Command> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    (0..240)
        .map(|i| {
            let v = 1_000 + i;
            let t = format!("{prefix}t{}", next(2));
            let a = format!("a{}", next(2));
            let u = format!("u{}", next(6));
            let d = format!("d{}", next(6));
            match next(10) {
                0 => tenant_named(&t, "Tenant", v),
                1 => app(&t, &a, &format!("c{}", next(3)), v),
                2 if next(4) == 0 => app_del(&t, &a, v),
                3 => org(&t, &d, &format!("n{}", next(3)), None, v),
                4 => org_del(&t, &d, v),
                5 => full_codes(&t, v, &["d0", "d1", "d2"][..1 + next(3) as usize]),
                6 | 7 => grant(&t, &a, v, &[&u, "u0"]),
                8 => revoke(&t, &a, v, &[&u]),
                _ if next(8) == 0 => tenant_del(&t, v),
                _ => grant(&t, &a, v, &[&u]),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_on_shared_tenants_converge_without_errors() {
    let (db, s) = store_with(1.0).await;
    for c in history("seq-") {
        s.apply(&c).await.unwrap();
    }
    // Four workers, each with every other command of a different rotation, in batches that
    // span both tenants: they contend for the same tenant locks.
    let commands = history("par-");
    let mut tasks = Vec::new();
    for w in 0..4 {
        let s = s.clone();
        let mine: Vec<_> = commands
            .iter()
            .cloned()
            .enumerate()
            .filter(|(i, _)| (i + w) % 2 == 0)
            .map(|(_, c)| c)
            .rev()
            .collect();
        tasks.push(tokio::spawn(async move {
            for batch in mine.chunks(3 + w) {
                s.apply_batch(batch).await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for t in ["t0", "t1"] {
        let mut seq = s.snapshot(&format!("seq-{t}")).await.unwrap();
        let mut par = s.snapshot(&format!("par-{t}")).await.unwrap();
        // The builders derive instance ids and tenant codes from the (prefixed) tenant id.
        assert_eq!(seq.instance_ids, [format!("inst-seq-{t}")]);
        assert_eq!(par.instance_ids, [format!("inst-par-{t}")]);
        for state in [&mut seq, &mut par] {
            state.instance_ids.clear();
            if let Some(tenant) = state.tenant.as_mut() {
                tenant.tenant_code.clear();
            }
        }
        assert!(
            !seq.members.is_empty() || !seq.departments.is_empty(),
            "a meaningful history"
        );
        assert_eq!(seq, par, "{t}");
    }
    db.cleanup().await;
}

#[tokio::test]
async fn tenant_delete_removes_isv_groups_created_before_it() {
    use kitsync_store::entity::{group_members, groups};
    use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
    let (db, s) = store().await;
    for (id, created) in [("old", 5), ("new", 50)] {
        groups::Entity::insert(groups::ActiveModel {
            tenant_id: Set("t".into()),
            group_id: Set(id.into()),
            display_name: Set(format!("{id} group")),
            source: Set("scim".into()),
            created_at: Set(created),
            updated_at: Set(created),
            version: Set(1),
            external_id: Set(None),
        })
        .exec(s.db())
        .await
        .unwrap();
        group_members::Entity::insert(group_members::ActiveModel {
            tenant_id: Set("t".into()),
            group_id: Set(id.into()),
            user_name: Set("u1".into()),
            member_type: Set(None),
            position: Set(0),
        })
        .exec(s.db())
        .await
        .unwrap();
    }
    s.apply(&tenant_del("t", 10)).await.unwrap();
    let left: Vec<String> = groups::Entity::find()
        .filter(groups::Column::TenantId.eq("t"))
        .all(s.db())
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.group_id)
        .collect();
    assert_eq!(left, ["new"]);
    let members = group_members::Entity::find().all(s.db()).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].group_id, "new");
    let journal = s.journal_after(0, 100).await.unwrap();
    assert!(journal
        .iter()
        .any(|j| j.entity == "group" && j.entity_key == "old" && j.action == "deleted"));
    db.cleanup().await;
}
