//! The per-day sums of the statistics windows (`stats_days`, see the store's `windows`
//! module): the all-tenants overview and daily series read one row per day, and that row is
//! exactly the sum of the production tenants' windows — after generated writes (tenants
//! created, renamed, deleted, re-added and flagged as test data; grants, revocations and
//! activity, late activity included), under concurrent writes, and against the same figures
//! computed again from nothing. Also: the tenants table's pages, ordered and cut by the
//! database, equal the whole list ordered as the API always ordered it. Runs on SQLite, or
//! PostgreSQL with `KITSYNC_TEST_DATABASE_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod common;

use common::{flagged, grant, revoke, tenant, tenant_del, tenant_named, Rng};
use kitsync_store::{
    utc8_day, ActivityEvent, ActivityKind, PeriodFigures, Store, TenantFigures, DAY_MS, UTC8_MS,
};
use sea_orm::{ConnectionTrait as _, DatabaseConnection, Statement};

fn today() -> i64 {
    utc8_day(chrono::Utc::now().timestamp_millis())
}

fn start_of(day: i64) -> i64 {
    day * DAY_MS - UTC8_MS
}

/// One random write: a tenant change, an authorisation change or a batch of activity.
async fn random_write(store: &Store, rng: &mut Rng, tenants: &[String], first_day: i64, v: i64) {
    let t = &tenants[rng.below(tenants.len() as u64) as usize];
    let span = (today() - first_day + 1) as u64;
    match rng.below(20) {
        0 => {
            store.apply(&tenant_del(t, v)).await.unwrap();
        }
        1 => {
            // Re-added, or flagged as test data, or back to production.
            let test = rng.below(2) == 0;
            store.apply(&flagged(tenant(t, v), test)).await.unwrap();
        }
        2 => {
            store
                .apply(&tenant_named(t, &format!("Renamed {}", rng.below(100)), v))
                .await
                .unwrap();
        }
        3..=9 => {
            let u = format!("u{}", rng.below(10));
            let c = grant(t, &format!("app{}", rng.below(2)), v, &[u.as_str()]);
            store.apply(&flagged(c, rng.below(8) == 0)).await.unwrap();
        }
        10..=12 => {
            let u = format!("u{}", rng.below(10));
            store
                .apply(&revoke(
                    t,
                    &format!("app{}", rng.below(2)),
                    v,
                    &[u.as_str()],
                ))
                .await
                .unwrap();
        }
        _ => {
            let events: Vec<ActivityEvent> = (0..1 + rng.below(6))
                .map(|_| {
                    let day = first_day + rng.below(span) as i64;
                    let at = (start_of(day) + rng.below(DAY_MS as u64) as i64)
                        .min(chrono::Utc::now().timestamp_millis());
                    ActivityEvent {
                        tenant_id: tenants[rng.below(tenants.len() as u64) as usize].clone(),
                        user_name: format!("u{}", rng.below(12)),
                        kind: if rng.below(2) == 0 {
                            ActivityKind::Login
                        } else {
                            ActivityKind::Use
                        },
                        at_ms: at,
                    }
                })
                .collect();
            store.record_activity(&events).await.unwrap();
        }
    }
}

/// The day rows that are not flagged stale but have a stale window, read in one statement
/// (one snapshot, so it may run while others write): the readers trust the flag and read
/// such a row alone, so there must be none.
const UNFLAGGED_STALE: &str = "SELECT COUNT(*) FROM stats_days d WHERE d.stale = FALSE \
     AND EXISTS (SELECT 1 FROM stats_windows w WHERE w.day = d.day AND w.stale = TRUE)";

async fn unflagged_stale_days(db: &DatabaseConnection) -> i64 {
    db.query_one(Statement::from_string(
        db.get_database_backend(),
        UNFLAGGED_STALE,
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get_by_index::<i64>(0)
    .unwrap()
}

/// Every day row against the sum of its fresh windows of production tenants; no day row
/// with a stale window is unflagged.
async fn check_day_rows_are_sums(db: &DatabaseConnection) {
    let backend = db.get_database_backend();
    assert_eq!(
        unflagged_stale_days(db).await,
        0,
        "a day with a stale window is flagged"
    );
    let rows = db
        .query_all(Statement::from_string(
            backend,
            "SELECT day, authorized, opened, active, projects FROM stats_days ORDER BY day",
        ))
        .await
        .unwrap();
    assert!(!rows.is_empty(), "some day rows exist");
    for row in rows {
        let day: i32 = row.try_get_by_index(0).unwrap();
        let stale = db
            .query_one(Statement::from_string(
                backend,
                format!("SELECT COUNT(*) FROM stats_windows WHERE day = {day} AND stale = TRUE"),
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index::<i64>(0)
            .unwrap();
        if stale > 0 {
            continue; // not exact until computed; the readers compute it first
        }
        // Fresh windows belong to production tenants only.
        let others = db
            .query_one(Statement::from_string(
                backend,
                format!(
                    "SELECT COUNT(*) FROM stats_windows w LEFT JOIN tenants t \
                     ON t.tenant_id = w.tenant_id AND t.deleted = FALSE AND t.test = FALSE \
                     WHERE w.day = {day} AND t.tenant_id IS NULL"
                ),
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index::<i64>(0)
            .unwrap();
        assert_eq!(others, 0, "day {day}: windows of tenants that do not count");
        let mut sum = (0i64, 0i64, [0i64; 30], [0i64; 30]);
        for w in db
            .query_all(Statement::from_string(
                backend,
                format!("SELECT authorized, active FROM stats_windows WHERE day = {day}"),
            ))
            .await
            .unwrap()
        {
            let authorized: i64 = w.try_get_by_index(0).unwrap();
            let active: String = w.try_get_by_index(1).unwrap();
            sum.0 += authorized;
            sum.1 += i64::from(authorized > 0);
            for (i, a) in active.split(',').enumerate() {
                let a: i64 = a.parse().unwrap();
                sum.2[i] += a;
                sum.3[i] += i64::from(a > 0);
            }
        }
        let counts = |s: String| -> Vec<i64> { s.split(',').map(|x| x.parse().unwrap()).collect() };
        let got = (
            row.try_get_by_index::<i64>(1).unwrap(),
            row.try_get_by_index::<i64>(2).unwrap(),
            counts(row.try_get_by_index(3).unwrap()),
            counts(row.try_get_by_index(4).unwrap()),
        );
        assert_eq!(
            got,
            (sum.0, sum.1, sum.2.to_vec(), sum.3.to_vec()),
            "day {day}: the day row is the sum of its windows"
        );
    }
}

/// The period's figures summed from the per-tenant path.
fn summed(tenants: &[TenantFigures]) -> PeriodFigures {
    PeriodFigures {
        projects_opened: tenants.iter().filter(|t| t.authorized > 0).count() as u64,
        projects_active: tenants.iter().filter(|t| t.active > 0).count() as u64,
        members_authorized: tenants.iter().map(|t| t.authorized).sum(),
        members_active: tenants.iter().map(|t| t.active).sum(),
    }
}

type Figures = (
    Vec<(PeriodFigures, Vec<TenantFigures>)>,
    Vec<Vec<(i64, u64, u64)>>,
);

/// Every period's overview (checked against the per-tenant sum) and tenants, and every
/// daily series.
async fn read_all(store: &Store, periods: &[(i64, i64)]) -> Figures {
    let mut overview = Vec::new();
    let mut daily = Vec::new();
    for &(from, to) in periods {
        let f = store.stats_period(from, to).await.unwrap();
        let t = store.stats_tenants(from, to).await.unwrap();
        assert_eq!(
            f,
            summed(&t),
            "days {from}..={to}: overview = sum of tenants"
        );
        overview.push((f, t));
        daily.push(store.stats_daily(from, to).await.unwrap());
    }
    (overview, daily)
}

async fn forget_everything(db: &DatabaseConnection) {
    db.execute_unprepared("DELETE FROM stats_windows")
        .await
        .unwrap();
    db.execute_unprepared("DELETE FROM stats_days")
        .await
        .unwrap();
}

fn periods(today: i64) -> Vec<(i64, i64)> {
    let mut p: Vec<(i64, i64)> = (today - 12..=today).map(|d| (d, d)).collect();
    p.extend([
        (today - 6, today),
        (today - 29, today),
        (today - 59, today - 30),
        (today - 13, today - 7),
    ]);
    p
}

#[tokio::test]
async fn day_rows_stay_the_sum_of_the_windows_through_generated_writes() {
    let (db, store) = common::store().await;
    let mut rng = Rng(0x0dd5_eed5_1234_9876);
    let today = today();
    let first_day = today - 40;
    let tenants: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    let mut v = start_of(first_day);
    for t in &tenants {
        v += 1000;
        store.apply(&tenant(t, v)).await.unwrap();
    }
    let periods = periods(today);
    for round in 0..4 {
        for _ in 0..120 {
            v += 1 + rng.below(4 * 3_600_000 / 120) as i64;
            random_write(&store, &mut rng, &tenants, first_day, v).await;
        }
        while store.index_stats(23).await.unwrap() > 0 {}
        if round % 2 == 0 {
            store.warm_stats(today).await.unwrap();
        }
        check_day_rows_are_sums(&db.conn).await;
        let read = read_all(&store, &periods).await;
        check_day_rows_are_sums(&db.conn).await;
        forget_everything(&db.conn).await;
        let again = read_all(&store, &periods).await;
        assert_eq!(
            read, again,
            "round {round}: the same figures computed from nothing"
        );
    }
    let f = store.stats_period(today - 29, today).await.unwrap();
    assert!(f.members_authorized > 0 && f.members_active > 0, "{f:?}");
    db.cleanup().await;
}

/// The overview reads the day's row, not its tenants' windows: a window changed behind the
/// store's back shows in the tenants table and not in the overview. (Reading every window
/// made the overview's cost grow with the number of tenants.)
#[tokio::test]
async fn the_overview_reads_one_row_per_day_not_one_per_tenant() {
    let (db, store) = common::store().await;
    let today = today();
    let v = start_of(today - 3);
    for t in ["a", "b", "c"] {
        store.apply(&tenant(t, v)).await.unwrap();
        store
            .apply(&grant(t, "app", v + 1, &["u1", "u2"]))
            .await
            .unwrap();
    }
    store.catch_up_stats(10).await.unwrap();
    store.warm_stats(today).await.unwrap();
    let before = store.stats_period(today - 6, today).await.unwrap();
    assert_eq!(before.members_authorized, 6);
    db.conn
        .execute_unprepared(&format!(
            "UPDATE stats_windows SET authorized = 1000 WHERE tenant_id = 'b' AND day = {today}"
        ))
        .await
        .unwrap();
    let b = store.stats_tenants(today - 6, today).await.unwrap();
    assert_eq!(b[1].authorized, 1000, "the tenants table reads the window");
    assert_eq!(
        store.stats_period(today - 6, today).await.unwrap(),
        before,
        "the overview reads the day row"
    );
    // A write marks the window stale, so both are computed again, exactly (the window is
    // put back first: the day row holds what was stored, and takes that out).
    db.conn
        .execute_unprepared(&format!(
            "UPDATE stats_windows SET authorized = 2 WHERE tenant_id = 'b' AND day = {today}"
        ))
        .await
        .unwrap();
    store
        .record_activity(&[ActivityEvent {
            tenant_id: "b".into(),
            user_name: "u1".into(),
            kind: ActivityKind::Use,
            at_ms: chrono::Utc::now().timestamp_millis(),
        }])
        .await
        .unwrap();
    let after = store.stats_period(today - 6, today).await.unwrap();
    assert_eq!(after.members_authorized, 6);
    assert_eq!(after.members_active, 1);
    db.cleanup().await;
}

/// A reader trusts the day row's flag: a row that is not flagged is read alone (its
/// windows are not probed), a flagged one has its stale windows computed, and the flag is
/// cleared only once none is left. Each write that makes a window stale flags its day
/// rows, from the window's day on; one that marks nothing new flags nothing.
#[tokio::test]
async fn readers_trust_the_day_flag_and_writes_set_it() {
    let (db, store) = common::store().await;
    let today = today();
    let v = start_of(today - 3);
    for t in ["a", "b"] {
        store.apply(&tenant(t, v)).await.unwrap();
        store.apply(&grant(t, "app", v + 1, &["u1"])).await.unwrap();
    }
    store.catch_up_stats(10).await.unwrap();
    store.warm_stats(today).await.unwrap();
    let flags = |db: DatabaseConnection| async move {
        let rows = db
            .query_all(Statement::from_string(
                db.get_database_backend(),
                format!(
                    "SELECT day, stale FROM stats_days WHERE day >= {} ORDER BY day",
                    today - 3
                ),
            ))
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                (
                    i64::from(r.try_get_by_index::<i32>(0).unwrap()),
                    r.try_get_by_index::<bool>(1).unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let stale_windows = |db: DatabaseConnection| async move {
        db.query_one(Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) FROM stats_windows WHERE stale = TRUE",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap()
    };
    assert!(flags(db.conn.clone()).await.iter().all(|(_, s)| !s));
    let before = store.stats_period(today - 6, today).await.unwrap();
    // A window made stale behind the store's back, without its flag: not even probed.
    db.conn
        .execute_unprepared(&format!(
            "UPDATE stats_windows SET stale = TRUE WHERE tenant_id = 'b' AND day = {today}"
        ))
        .await
        .unwrap();
    assert_eq!(store.stats_period(today - 6, today).await.unwrap(), before);
    store.stats_daily(today - 6, today).await.unwrap();
    assert_eq!(
        stale_windows(db.conn.clone()).await,
        1,
        "the reader read the row alone"
    );
    db.conn
        .execute_unprepared(&format!(
            "UPDATE stats_windows SET stale = FALSE WHERE tenant_id = 'b' AND day = {today}"
        ))
        .await
        .unwrap();
    // Late activity (two days ago) flags that day and every later one, and nothing before.
    store
        .record_activity(&[ActivityEvent {
            tenant_id: "a".into(),
            user_name: "u1".into(),
            kind: ActivityKind::Use,
            at_ms: start_of(today - 2) + 1000,
        }])
        .await
        .unwrap();
    let flagged: Vec<(i64, bool)> = flags(db.conn.clone()).await;
    assert_eq!(
        flagged,
        (today - 3..=today)
            .map(|d| (d, d >= today - 2))
            .collect::<Vec<_>>()
    );
    // The reader of today computes today's stale window and clears today's flag only.
    let after = store.stats_period(today - 6, today).await.unwrap();
    assert_eq!(after.members_active, 1);
    assert_eq!(
        flags(db.conn.clone()).await,
        (today - 3..=today)
            .map(|d| (d, d == today - 2 || d == today - 1))
            .collect::<Vec<_>>()
    );
    // Activity of a tenant without windows (not in the directory) marks none: no flag.
    store
        .record_activity(&[ActivityEvent {
            tenant_id: "nobody".into(),
            user_name: "u1".into(),
            kind: ActivityKind::Login,
            at_ms: chrono::Utc::now().timestamp_millis(),
        }])
        .await
        .unwrap();
    assert_eq!(flags(db.conn.clone()).await.last(), Some(&(today, false)));
    // A tenant's own row marks all its windows: every day is flagged, and the daily series
    // computes them in one pass and clears the flags of its days.
    store
        .apply(&tenant_named("b", "Renamed", v + 10))
        .await
        .unwrap();
    store.catch_up_stats(10).await.unwrap();
    assert!(flags(db.conn.clone()).await.iter().all(|(_, s)| *s));
    store.stats_daily(today - 29, today).await.unwrap();
    assert!(flags(db.conn.clone()).await.iter().all(|(_, s)| !s));
    check_day_rows_are_sums(&db.conn).await;
    db.cleanup().await;
}

/// Day rows and windows computed while tenants, authorisations and activity change, the
/// indexer runs and readers compute windows are exact afterwards: the same as computed
/// again from nothing, and every day row the sum of its windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn day_rows_computed_during_concurrent_writes_are_exact() {
    let (db, store) = common::store().await;
    let today = today();
    let first_day = today - 35;
    let tenants: Vec<String> = (0..6).map(|i| format!("c{i}")).collect();
    let v0 = start_of(first_day);
    for t in &tenants {
        store.apply(&tenant(t, v0)).await.unwrap();
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2u64 {
        let (store, tenants) = (store.clone(), tenants.clone());
        writers.push(tokio::spawn(async move {
            let mut rng = Rng(0xabcd_0000_1111 + w * 7919);
            let mut v = v0 + 1000 + i64::try_from(w).unwrap();
            for _ in 0..250 {
                v += 2 * (1 + rng.below(3_600_000) as i64);
                random_write(&store, &mut rng, &tenants, first_day, v).await;
            }
        }));
    }
    let background = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                store.index_stats(11).await.unwrap();
                store.warm_stats(today).await.unwrap();
            }
        })
    };
    let periods = periods(today);
    let mut readers = Vec::new();
    for r in 0..2 {
        let (store, done, periods) = (store.clone(), done.clone(), periods.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                for &(from, to) in periods.iter().skip(r) {
                    store.stats_period(from, to).await.unwrap();
                    store.stats_daily(from, to).await.unwrap();
                    reads += 1;
                }
            }
            reads
        }));
    }
    // Meanwhile, no committed state has an unflagged day with a stale window.
    let checker = {
        let (conn, done) = (db.conn.clone(), done.clone());
        tokio::spawn(async move {
            let mut checks = 0u64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                assert_eq!(
                    unflagged_stale_days(&conn).await,
                    0,
                    "check {checks}: a day with a stale window is flagged"
                );
                checks += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            checks
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    background.await.unwrap();
    let mut reads = 0;
    for r in readers {
        reads += r.await.unwrap();
    }
    assert!(reads > 0);
    assert!(checker.await.unwrap() > 0);
    store.catch_up_stats(u32::MAX).await.unwrap();
    let read = read_all(&store, &periods).await;
    check_day_rows_are_sums(&db.conn).await;
    forget_everything(&db.conn).await;
    let again = read_all(&store, &periods).await;
    assert_eq!(read, again, "after {reads} concurrent reads");
    db.cleanup().await;
}

/// The tenants table's order as the API always made it: by tenant id, then a stable sort
/// by the key, reversed for descending.
fn ordered(mut all: Vec<TenantFigures>, sort: &str) -> Vec<TenantFigures> {
    let key = sort.trim_start_matches('-');
    match key {
        "tenantId" => {}
        "name" => all.sort_by(|a, b| a.name.cmp(&b.name)),
        "authorized" => all.sort_by_key(|t| t.authorized),
        "active" => all.sort_by_key(|t| t.active),
        "lastActiveAt" => all.sort_by_key(|t| t.last_active_at),
        other => panic!("{other}"),
    }
    if sort.starts_with('-') {
        all.reverse();
    }
    all
}

#[tokio::test]
async fn tenants_pages_are_ordered_and_cut_by_the_database_as_before() {
    let (db, store) = common::store().await;
    let today = today();
    let v = start_of(today - 5);
    // Names whose byte order differs from a language collation's; ties on every figure.
    let names = [
        "beta", "Beta", "alpha", "Alpha", "gamma", "beta", "Zed", "zed",
    ];
    for (i, name) in names.iter().enumerate() {
        let t = format!("n{i}");
        store.apply(&tenant_named(&t, name, v)).await.unwrap();
        let users: Vec<String> = (0..i % 3).map(|u| format!("u{u}")).collect();
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        if !users.is_empty() {
            store.apply(&grant(&t, "app", v + 1, &users)).await.unwrap();
        }
        if i % 2 == 0 && !users.is_empty() {
            store
                .record_activity(&[ActivityEvent {
                    tenant_id: t.clone(),
                    user_name: "u0".into(),
                    kind: ActivityKind::Use,
                    at_ms: start_of(today - (i as i64 % 4)) + 1000 * i as i64,
                }])
                .await
                .unwrap();
        }
    }
    store.catch_up_stats(10).await.unwrap();
    for (from, to) in [(today - 6, today), (today, today), (today - 29, today - 1)] {
        let all = store.stats_tenants(from, to).await.unwrap();
        assert_eq!(all.len(), names.len());
        for key in ["tenantId", "name", "authorized", "active", "lastActiveAt"] {
            for sort in [key.to_owned(), format!("-{key}")] {
                for never_active in [false, true] {
                    let mut expected = ordered(all.clone(), &sort);
                    if never_active {
                        expected.retain(|t| t.authorized > 0 && t.last_active_at.is_none());
                    }
                    let mut got = Vec::new();
                    let mut offset = 0;
                    loop {
                        let (page, more) = store
                            .stats_tenants_page(from, to, &sort, never_active, offset, 3)
                            .await
                            .unwrap();
                        offset += page.len() as u64;
                        got.extend(page);
                        if !more {
                            break;
                        }
                    }
                    assert_eq!(got, expected, "{sort}, never active {never_active}");
                }
            }
        }
    }
    let e = store
        .stats_tenants_page(today, today, "-size", false, 0, 3)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("`size` is not a sort key"), "{e}");
    // A tenant the indexer has not met yet is listed all the same.
    store.apply(&tenant("fresh", v + 5)).await.unwrap();
    let (page, _) = store
        .stats_tenants_page(today, today, "tenantId", false, 0, 100)
        .await
        .unwrap();
    assert!(page.iter().any(|t| t.tenant_id == "fresh"));
    db.cleanup().await;
}
