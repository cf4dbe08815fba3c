//! The statistics definitions (docs/statistics.md) checked against an independent computation on
//! generated histories: several tenants (one of them test data, one deleted at the end),
//! members authorised, disabled, deauthorised and re-authorised over 40 days, app deletes,
//! and activity across UTC+8 midnights — including users that are never authorised. The
//! reference replays the generated changes in marketplace time; the store answers from its
//! journal-built history and daily rollups. Runs on SQLite, or PostgreSQL with
//! `KITSYNC_TEST_DATABASE_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod common;

use common::Rng;
use kitsync_domain::{
    AppChange, AuthChange, AuthOp, AuthUser, Command, KitTime, Op, SecretText, TenantChange,
};
use kitsync_store::{end_of_day_ms, utc8_day, ActivityEvent, ActivityKind, DAY_MS, UTC8_MS};
use sea_orm::ConnectionTrait as _;
use std::collections::{BTreeMap, BTreeSet};

/// One generated change, in marketplace time.
#[derive(Debug, Clone)]
enum Change {
    /// (tenant, app, user, enabled) granted or updated.
    Grant(String, String, String, bool),
    Revoke(String, String, String),
    DeleteApp(String, String),
    DeleteTenant(String),
}

fn user(name: &str, enabled: bool) -> AuthUser {
    AuthUser {
        enabled,
        ..AuthUser::named(name)
    }
}

fn command(c: &Change, v: i64, test: bool) -> Command {
    match c {
        Change::Grant(t, a, u, enabled) => Command::Auth(AuthChange {
            tenant_id: t.clone(),
            instance_id: None,
            app_id: a.clone(),
            op: AuthOp::Modify,
            users: vec![user(u, *enabled)],
            test,
            version: KitTime(v),
            time_stamp: None,
        }),
        Change::Revoke(t, a, u) => Command::Auth(AuthChange {
            tenant_id: t.clone(),
            instance_id: None,
            app_id: a.clone(),
            op: AuthOp::Delete,
            users: vec![user(u, false)],
            test,
            version: KitTime(v),
            time_stamp: None,
        }),
        Change::DeleteApp(t, a) => Command::App(AppChange {
            tenant_id: t.clone(),
            instance_id: None,
            app_id: a.clone(),
            client_id: "c".into(),
            client_secret: SecretText(String::new()),
            secret_fp: None,
            op: Op::Delete,
            test,
            version: KitTime(v),
        }),
        Change::DeleteTenant(t) => tenant(t, Op::Delete, v, test),
    }
}

fn tenant(t: &str, op: Op, v: i64, test: bool) -> Command {
    Command::Tenant(TenantChange {
        tenant_id: t.into(),
        instance_id: None,
        order_id: None,
        tenant_code: t.into(),
        name: format!("Tenant {t}"),
        domain_name: format!("https://{t}.example.com"),
        op,
        test,
        version: KitTime(v),
    })
}

/// The reference: which (tenant, user) hold an enabled authorisation at `at`.
fn authorised_at(history: &[(i64, Change)], at: i64) -> BTreeSet<(String, String)> {
    let mut live: BTreeMap<(String, String, String), bool> = BTreeMap::new();
    for (_, c) in history.iter().filter(|(v, _)| *v <= at) {
        match c {
            Change::Grant(t, a, u, e) => {
                live.insert((t.clone(), a.clone(), u.clone()), *e);
            }
            Change::Revoke(t, a, u) => {
                live.remove(&(t.clone(), a.clone(), u.clone()));
            }
            Change::DeleteApp(t, a) => live.retain(|(lt, la, _), _| !(lt == t && la == a)),
            Change::DeleteTenant(t) => live.retain(|(lt, _, _), _| lt != t),
        }
    }
    live.into_iter()
        .filter(|(_, e)| *e)
        .map(|((t, _, u), _)| (t, u))
        .collect()
}

#[tokio::test]
async fn statistics_match_an_independent_computation_on_generated_histories() {
    let (db, store) = common::store().await;
    let mut rng = Rng(0x5eed_1234_abcd_0042);
    // Day 0 of the generated history: 2026-10-01 in UTC+8.
    let day0 = utc8_day(
        chrono::DateTime::parse_from_rfc3339("2026-10-01T00:00:00+08:00")
            .unwrap()
            .timestamp_millis(),
    );
    let start_ms = day0 * DAY_MS - UTC8_MS;
    let tenants = ["acme", "bolt", "cask", "sandbox", "gone"];
    let test_tenant = "sandbox";
    let deleted_tenant = "gone";
    for t in tenants {
        store
            .apply(&tenant(t, Op::Upsert, start_ms - 1000, t == test_tenant))
            .await
            .unwrap();
    }
    // Changes at random times, often right around UTC+8 midnight, in increasing time.
    let mut history: Vec<(i64, Change)> = Vec::new();
    let mut v = start_ms;
    for _ in 0..600 {
        v += if rng.below(3) == 0 {
            // land within a second of the next UTC+8 midnight, on either side
            let next_midnight = (utc8_day(v) + 1) * DAY_MS - UTC8_MS;
            (next_midnight - v) + rng.below(2000) as i64 - 1000
        } else {
            1 + rng.below(3 * 3_600_000) as i64
        }
        .max(1);
        let t = tenants[rng.below(tenants.len() as u64) as usize].to_owned();
        let a = format!("app{}", rng.below(2));
        let u = format!("u{}", rng.below(8));
        let c = match rng.below(20) {
            0..=10 => Change::Grant(t, a, u, true),
            11..=14 => Change::Grant(t, a, u, false),
            15..=18 => Change::Revoke(t, a, u),
            _ => Change::DeleteApp(t, a),
        };
        history.push((v, c));
    }
    let end_ms = v;
    history.push((end_ms + 1, Change::DeleteTenant(deleted_tenant.into())));
    // Activity: users (some never authorised: u8, u9) of every tenant, across the days.
    let last_day = utc8_day(end_ms);
    let mut activity: Vec<ActivityEvent> = Vec::new();
    for _ in 0..3000 {
        let d = day0 + rng.below((last_day - day0 + 1) as u64) as i64;
        // Often within a few seconds of the day's edges.
        let in_day = match rng.below(3) {
            0 => rng.below(5000) as i64,
            1 => DAY_MS - 1 - rng.below(5000) as i64,
            _ => rng.below(DAY_MS as u64) as i64,
        };
        activity.push(ActivityEvent {
            tenant_id: tenants[rng.below(tenants.len() as u64) as usize].into(),
            user_name: format!("u{}", rng.below(10)),
            kind: if rng.below(2) == 0 {
                ActivityKind::Login
            } else {
                ActivityKind::Use
            },
            at_ms: d * DAY_MS - UTC8_MS + in_day,
        });
    }
    let mut periods: Vec<(i64, i64)> = (day0..=last_day).map(|d| (d, d)).collect();
    periods.extend([
        (day0 + 3, day0 + 9),
        (day0 + 10, day0 + 39),
        (last_day - 6, last_day),
        (last_day - 29, last_day),
    ]);
    let world = World {
        tenants: &tenants,
        test_tenant,
        deleted_tenant,
    };
    // In three steps, every figure asked (so every day's window computed) after each: half
    // the changes and half the activity; the other half of the changes (later in
    // marketplace time); the other half of the activity (on every day: late for most). What
    // each step adds must show in the figures asked again.
    let (changes_mid, activity_mid) = (history.len() / 2, activity.len() / 2);
    for (from, to, act) in [
        (0, changes_mid, 0..activity_mid),
        (changes_mid, history.len(), activity_mid..activity_mid),
        (history.len(), history.len(), activity_mid..activity.len()),
    ] {
        for (v, c) in &history[from..to] {
            let test = matches!(c, Change::Grant(t, ..) | Change::Revoke(t, ..) | Change::DeleteApp(t, _) | Change::DeleteTenant(t) if t == test_tenant);
            store.apply(&command(c, *v, test)).await.unwrap();
        }
        for chunk in activity[act.clone()].chunks(700) {
            store.record_activity(chunk).await.unwrap();
        }
        // Index in small batches, so spans opened in one batch are closed in a later one.
        while store.index_stats(37).await.unwrap() > 0 {}
        world
            .check(&store, &history[..to], &activity[..act.end], &periods)
            .await;
    }
    // Something to count: the generated history is not trivially empty.
    let busy = store.stats_period(day0 + 10, day0 + 39).await.unwrap();
    assert!(
        busy.members_authorized > 5 && busy.members_active > 0,
        "{busy:?}"
    );
    // A longer period is refused by the store (the API refuses it with a 400 first).
    assert!(store.stats_period(day0, day0 + 30).await.is_err());
    db.cleanup().await;
}

struct World<'a> {
    /// Every tenant added (by a tenantSync before the history).
    tenants: &'a [&'static str],
    test_tenant: &'static str,
    deleted_tenant: &'static str,
}

impl World<'_> {
    /// Every figure of every period against the reference over `history` and `activity`.
    async fn check(
        &self,
        store: &kitsync_store::Store,
        history: &[(i64, Change)],
        activity: &[ActivityEvent],
        periods: &[(i64, i64)],
    ) {
        // Test data never counts; once the tenant delete has arrived, neither does that
        // tenant, for any period: "deleted" is the tenant's state now.
        let deleted = history
            .iter()
            .any(|(_, c)| matches!(c, Change::DeleteTenant(t) if t == self.deleted_tenant));
        let counted = |t: &str| t != self.test_tenant && !(deleted && t == self.deleted_tenant);
        let active_on = |t: &str, u: &str, from: i64, to: i64| {
            activity.iter().any(|e| {
                e.tenant_id == t && e.user_name == u && (from..=to).contains(&utc8_day(e.at_ms))
            })
        };
        // The daily series first computed from the history (no windows exist after a write
        // round, for most days), then read from the windows the periods below compute.
        let from_history: Vec<_> = {
            let mut out = Vec::new();
            for &(from, to) in periods {
                out.push(store.stats_daily(from, to).await.unwrap());
            }
            out
        };
        for (i, &(from, to)) in periods.iter().enumerate() {
            let auth: BTreeSet<(String, String)> = authorised_at(history, end_of_day_ms(to))
                .into_iter()
                .filter(|(t, _)| counted(t))
                .collect();
            let active: BTreeSet<&(String, String)> = auth
                .iter()
                .filter(|(t, u)| active_on(t, u, from, to))
                .collect();
            let opened: BTreeSet<&String> = auth.iter().map(|(t, _)| t).collect();
            let active_projects: BTreeSet<&String> = active.iter().map(|(t, _)| t).collect();
            let got = store.stats_period(from, to).await.unwrap();
            assert_eq!(
                (
                    got.projects_opened,
                    got.projects_active,
                    got.members_authorized,
                    got.members_active
                ),
                (
                    opened.len() as u64,
                    active_projects.len() as u64,
                    auth.len() as u64,
                    active.len() as u64
                ),
                "days {from}..={to}, {} changes, {} events",
                history.len(),
                activity.len()
            );
            // Per tenant: every production tenant, whatever its figures, by tenant id.
            let listed = store.stats_tenants(from, to).await.unwrap();
            let mut production: Vec<&str> = self
                .tenants
                .iter()
                .copied()
                .filter(|t| counted(t))
                .collect();
            production.sort_unstable();
            assert_eq!(
                listed
                    .iter()
                    .map(|f| f.tenant_id.as_str())
                    .collect::<Vec<_>>(),
                production,
                "days {from}..={to}: the tenants listed"
            );
            for f in listed {
                let a = auth.iter().filter(|(t, _)| *t == f.tenant_id).count() as u64;
                let act = active.iter().filter(|(t, _)| *t == f.tenant_id).count() as u64;
                let last = activity
                    .iter()
                    .filter(|e| e.tenant_id == f.tenant_id && utc8_day(e.at_ms) <= to)
                    .map(|e| e.at_ms)
                    .max();
                assert_eq!(
                    (f.authorized, f.active, f.last_active_at),
                    (a, act, last),
                    "{} days {from}..={to}, {} changes, {} events",
                    f.tenant_id,
                    history.len(),
                    activity.len()
                );
            }
            // Per day, both ways.
            let daily = store.stats_daily(from, to).await.unwrap();
            assert_eq!(
                daily, from_history[i],
                "days {from}..={to}: windows, history"
            );
            for d in from..=to {
                let members: BTreeSet<(String, String)> = authorised_at(history, end_of_day_ms(d))
                    .into_iter()
                    .filter(|(t, u)| counted(t) && active_on(t, u, d, d))
                    .collect();
                let projects: BTreeSet<&String> = members.iter().map(|(t, _)| t).collect();
                let got = daily
                    .iter()
                    .find(|(day, _, _)| *day == d)
                    .map_or((0, 0), |r| (r.1, r.2));
                assert_eq!(
                    got,
                    (members.len() as u64, projects.len() as u64),
                    "day {d}"
                );
            }
        }
    }
}

/// Windows computed while activity, authorisation changes and the indexer write are never
/// left stale: after the writes, every figure read from the windows equals the figure
/// computed again from nothing. (Each computation and each write that deletes windows takes
/// the tenant's `stats_marks` lock; without it, a window read just before a write commits
/// could be stored just after the write's delete.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn windows_computed_during_writes_are_never_left_stale() {
    let (db, store) = common::store().await;
    let day0 = utc8_day(
        chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00+08:00")
            .unwrap()
            .timestamp_millis(),
    );
    let start_ms = day0 * DAY_MS - UTC8_MS;
    let tenants = ["t1", "t2", "t3"];
    for t in tenants {
        store
            .apply(&tenant(t, Op::Upsert, start_ms - 1000, false))
            .await
            .unwrap();
    }
    let days = 10;
    let periods: Vec<(i64, i64)> = (day0..day0 + days)
        .flat_map(|d| [(d, d), (d - 6, d), (d - 29, d)])
        .collect();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let store = store.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut rng = Rng(0xdead_beef_0042_1234);
            let rounds = 600;
            for round in 0..rounds {
                let t = tenants[rng.below(3) as usize];
                let v = start_ms + round * (days * DAY_MS / rounds);
                let c = if rng.below(3) == 0 {
                    Change::Revoke(t.into(), "app".into(), format!("u{}", rng.below(12)))
                } else {
                    Change::Grant(t.into(), "app".into(), format!("u{}", rng.below(12)), true)
                };
                store.apply(&command(&c, v, false)).await.unwrap();
                let events: Vec<ActivityEvent> = (0..5)
                    .map(|_| ActivityEvent {
                        tenant_id: tenants[rng.below(3) as usize].into(),
                        user_name: format!("u{}", rng.below(12)),
                        kind: ActivityKind::Use,
                        at_ms: start_ms + rng.below((days * DAY_MS) as u64) as i64,
                    })
                    .collect();
                store.record_activity(&events).await.unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let indexer = {
        let store = store.clone();
        let done = done.clone();
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                store.index_stats(7).await.unwrap();
            }
        })
    };
    let mut readers = Vec::new();
    for r in 0..2 {
        let store = store.clone();
        let done = done.clone();
        let periods = periods.clone();
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                for &(from, to) in periods.iter().skip(r) {
                    store.stats_period(from, to).await.unwrap();
                    reads += 1;
                }
            }
            reads
        }));
    }
    writer.await.unwrap();
    indexer.await.unwrap();
    let mut reads = 0;
    for r in readers {
        reads += r.await.unwrap();
    }
    assert!(reads > 0);
    store.catch_up_stats(u32::MAX).await.unwrap();
    let mut read = Vec::new();
    for &(from, to) in &periods {
        read.push((
            store.stats_period(from, to).await.unwrap(),
            store.stats_tenants(from, to).await.unwrap(),
        ));
    }
    // The windows and their per-day sums, forgotten together.
    for table in ["stats_windows", "stats_days"] {
        db.conn
            .execute_unprepared(&format!("DELETE FROM {table}"))
            .await
            .unwrap();
    }
    for (i, &(from, to)) in periods.iter().enumerate() {
        let again = (
            store.stats_period(from, to).await.unwrap(),
            store.stats_tenants(from, to).await.unwrap(),
        );
        assert_eq!(read[i], again, "days {from}..={to} after {reads} reads");
    }
    // The maintainer's fingerprint: reads and computations leave it, a write moves it.
    let before = store.stats_fingerprint().await.unwrap();
    assert_eq!(before.1, 3, "three production tenants");
    store.stats_period(day0, day0).await.unwrap();
    store.warm_stats(day0 + days).await.unwrap();
    assert_eq!(store.stats_fingerprint().await.unwrap(), before);
    store
        .record_activity(&[ActivityEvent {
            tenant_id: "t1".into(),
            user_name: "late".into(),
            kind: ActivityKind::Login,
            at_ms: start_ms,
        }])
        .await
        .unwrap();
    assert!(store.stats_fingerprint().await.unwrap().0 > before.0);
    db.cleanup().await;
}
