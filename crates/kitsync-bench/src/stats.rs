//! `kitsync bench stats`: the 30-day statistics overview over 100 000 members and 1 000 000
//! activity events, next to the raw time of the equivalent single aggregate SQL query —
//! the same four figures computed straight from the raw events and the current
//! authorisations — measured in the same run on the same database.
//!
//! The overview and the daily series read one precomputed row per day whatever the number
//! of tenants, so `--tenants 50000 --members 1000000` is a case to run: the tenants are
//! seeded many to a transaction, and the first overview (nothing precomputed yet) and the
//! tenants table ordered by a figure are measured too.
use crate::percentile_ms;
use crate::read::{drive, serve_on_loopback, Client};
use crate::Service;
use anyhow::Context as _;
use clap::Args;
use kitsync_domain::{AuthChange, AuthOp, AuthUser, Command, KitTime, Role, Scope, TenantChange};
use kitsync_store::Actor;
use kitsync_store::{ActivityEvent, ActivityKind, Store, DAY_MS};
use sea_orm::{ConnectionTrait as _, Statement};
use secrecy::ExposeSecret;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Members, spread over `tenants` tenants.
    #[arg(long, default_value_t = 100_000)]
    members: usize,
    /// Production tenants the members are spread over.
    #[arg(long, default_value_t = 50)]
    tenants: usize,
    /// Activity events over the last 30 days.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Requests per measurement (one caller: latency, not throughput).
    #[arg(long, default_value_t = 200)]
    requests: usize,
}

/// # Errors
/// The database could not be set up or the server could not start.
pub(crate) async fn run<S: Service>(settings: S, a: StatsArgs) -> anyhow::Result<()> {
    let db = settings.open_db().await?;
    let store = Store::new(db.clone(), settings.store().clone());
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let tenants: Vec<String> = (0..a.tenants.max(1))
        .map(|i| format!("bench-stats-{}-{i:03}", &run_id[..8]))
        .collect();
    let per_tenant = a.members / tenants.len();
    let started = Instant::now();
    seed_tenants(&store, &tenants, per_tenant).await?;
    let seeded = started.elapsed();

    // 1 000 000 events: every member active on some days, over the last 30 days.
    let now = chrono::Utc::now().timestamp_millis();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let started = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..a.events {
        let t = usize::try_from(next() % tenants.len() as u64).unwrap_or(0);
        let m = next() % per_tenant.max(1) as u64;
        let ago = i64::try_from(next() % u64::try_from(30 * DAY_MS).unwrap_or(1)).unwrap_or(0);
        batch.push(ActivityEvent {
            tenant_id: tenants[t].clone(),
            user_name: format!("m{m:07}"),
            kind: if i % 3 == 0 {
                ActivityKind::Login
            } else {
                ActivityKind::Use
            },
            at_ms: now - ago,
        });
        if batch.len() == 1000 {
            store.record_activity(&batch).await?;
            batch.clear();
        }
    }
    store.record_activity(&batch).await?;
    let ingested = started.elapsed();
    let started = Instant::now();
    store.catch_up_stats(u32::MAX).await?;
    let indexed = started.elapsed();
    let pg = db.get_database_backend() == sea_orm::DatabaseBackend::Postgres;
    if pg {
        db.execute_unprepared(
            "ANALYZE members; ANALYZE authorizations; ANALYZE activity_events; \
             ANALYZE activity_daily; ANALYZE auth_spans; ANALYZE tenants",
        )
        .await?;
    }

    let (_, token) = store
        .create_token(&Actor::Cli, "bench stats", &[Scope::StatsRead], None)
        .await?;
    let token = token.expose_secret().to_owned();
    let router = kitsync_api::router(store.clone());
    let (base, stop, server) = serve_on_loopback(router).await?;
    let client: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();

    // The raw baseline: the same four figures for the last 30 days in one aggregate query
    // over the raw events and the current authorisations.
    let from_ms = now - 30 * DAY_MS;
    let raw_sql = format!(
        "WITH auth AS (SELECT DISTINCT a.tenant_id, a.user_name FROM authorizations a \
         JOIN tenants t ON t.tenant_id = a.tenant_id AND t.deleted = FALSE AND t.test = FALSE \
         WHERE a.deleted = FALSE AND a.enabled = TRUE AND a.test = FALSE), \
         act AS (SELECT DISTINCT e.tenant_id, e.user_name FROM activity_events e \
         JOIN auth ON auth.tenant_id = e.tenant_id AND auth.user_name = e.user_name \
         WHERE e.at_ms >= {from_ms}) \
         SELECT (SELECT COUNT(DISTINCT tenant_id) FROM auth), (SELECT COUNT(DISTINCT tenant_id) FROM act), \
         (SELECT COUNT(*) FROM auth), (SELECT COUNT(*) FROM act)"
    );
    let backend = db.get_database_backend();
    let n = a.requests.max(1);
    let overview = vec![format!("{base}/api/v1/stats/overview?preset=30d"); n];
    // The first overview, before anything is precomputed (a fresh start: the maintainer has
    // not run yet): it creates today's and the previous period's day rows and computes
    // every tenant's window of both days.
    let first = drive(&client, &overview[..1], &token, 1).await?;
    // What `serve`'s statistics maintainer does in the background: the windows of the
    // last 31 days (every preset, its previous period and its daily series).
    let today = kitsync_store::utc8_day(chrono::Utc::now().timestamp_millis());
    let started = Instant::now();
    let windows = store.warm_stats(today).await?;
    let warmed = started.elapsed();
    // The worst case after a change: every tenant's window of today marked stale (as
    // activity in every tenant since the last request would), so the request computes all
    // of them again. A write that marks a window flags its day row in the same transaction.
    let mut cold_runs: Vec<Duration> = Vec::new();
    let mut cold_errors = 0;
    for _ in 0..5 {
        for table in ["stats_windows", "stats_days"] {
            db.execute_unprepared(&format!(
                "UPDATE {table} SET stale = TRUE WHERE day = {today}"
            ))
            .await?;
        }
        let r = drive(&client, &overview[..1], &token, 1).await?;
        cold_runs.push(Duration::from_secs_f64(r.p50 / 1000.0));
        cold_errors += r.errors;
    }
    cold_runs.sort();
    let cold = percentile_ms(&cold_runs, 0.5);
    if pg {
        // Statistics for the planner, and no vacuum: the mass marking and computing above
        // left every window's old versions in the stale-window index (a server with
        // autovacuum off keeps them), and the readers must not depend on their removal (a
        // day row that is not flagged is read alone, decision 0049).
        db.execute_unprepared("ANALYZE stats_windows, stats_days")
            .await?;
    }
    let _ = drive(&client, &overview[..n.min(10)], &token, 1).await?;
    for _ in 0..3 {
        db.query_one(Statement::from_string(backend, raw_sql.clone()))
            .await?;
    }
    let kitsync = drive(&client, &overview, &token, 1).await?;
    let quarter = (n / 4).max(1);
    let daily = drive(
        &client,
        &vec![format!("{base}/api/v1/stats/daily?preset=30d"); quarter],
        &token,
        1,
    )
    .await?;
    let by_tenant = drive(
        &client,
        &vec![format!("{base}/api/v1/stats/tenants?preset=30d&limit=100"); quarter],
        &token,
        1,
    )
    .await?;
    let by_active = drive(
        &client,
        &vec![format!("{base}/api/v1/stats/tenants?preset=30d&limit=100&sort=-active"); quarter],
        &token,
        1,
    )
    .await?;
    // The overview again, one request every 20 ms for 10 s, while activity keeps arriving:
    // one event every 50 ms (20 a second, 50 times this data set's average rate), each
    // deleting its tenant's window of today, which the next request computes again.
    let (stop_writes, mut writes_stopped) = tokio::sync::watch::channel(false);
    let writer = {
        let (store, tenants) = (store.clone(), tenants.clone());
        tokio::spawn(async move {
            let mut written = 0u64;
            let mut i = 0usize;
            loop {
                let event = ActivityEvent {
                    tenant_id: tenants[i % tenants.len()].clone(),
                    user_name: format!("m{:07}", (i * 7919) % per_tenant.max(1)),
                    kind: ActivityKind::Use,
                    at_ms: chrono::Utc::now().timestamp_millis(),
                };
                if store.record_activity(&[event]).await.is_ok() {
                    written += 1;
                }
                i += 1;
                tokio::select! {
                    _ = writes_stopped.wait_for(|s| *s) => return written,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        })
    };
    let mut live: Vec<Duration> = Vec::new();
    let mut live_errors = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let r = drive(&client, &overview[..1], &token, 1).await?;
        live.push(Duration::from_secs_f64(r.p50 / 1000.0));
        live_errors += r.errors;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    live.sort();
    let live_pct = |p: f64| percentile_ms(&live, p);
    let _ = stop_writes.send(true);
    let live_events = writer.await.unwrap_or(0);
    // At most 30 runs of the raw query: each takes 0.5–2 s.
    let mut raw: Vec<Duration> = Vec::with_capacity(n);
    let mut raw_row = None;
    for _ in 0..n.min(30) {
        let t = Instant::now();
        raw_row = db
            .query_one(Statement::from_string(backend, raw_sql.clone()))
            .await
            .context("the raw aggregate query")?;
        raw.push(t.elapsed());
    }
    raw.sort();
    let pct = |p: f64| percentile_ms(&raw, p);
    let _ = stop.send(());
    let _ = server.await;
    let figures = raw_row
        .map(|r| {
            (0..4)
                .map(|i| r.try_get_by_index::<i64>(i).unwrap_or(-1).to_string())
                .collect::<Vec<_>>()
                .join(" / ")
        })
        .unwrap_or_default();
    println!(
        "kitsync bench stats: {} members in {} tenants, {} activity events over 30 days, database {}",
        per_tenant * tenants.len(),
        tenants.len(),
        a.events,
        if pg { "PostgreSQL" } else { "SQLite" }
    );
    println!(
        "  setup: members {:.1} s, events {:.1} s ({:.0} events/s), history indexed in {:.1} s",
        seeded.as_secs_f64(),
        ingested.as_secs_f64(),
        a.events as f64 / ingested.as_secs_f64(),
        indexed.as_secs_f64()
    );
    println!(
        "  windows of the last 31 days            {:>7.2} s  ({windows} tenant-days; serve computes them in the background)",
        warmed.as_secs_f64()
    );
    println!(
        "  first 30-day overview, nothing precomputed  {:>7.2} ms (creates 2 day rows, computes {} windows)",
        first.p50,
        2 * tenants.len()
    );
    println!(
        "  30-day overview after every tenant changed  {cold:>7.2} ms (median of 5: computes today's {} windows)",
        tenants.len()
    );
    println!(
        "  30-day overview (HTTP, both periods)   p50 {:>7.2} ms   p99 {:>7.2} ms   (errors: {})",
        kitsync.p50, kitsync.p99, kitsync.errors
    );
    println!(
        "  ... while activity arrives             p50 {:>7.2} ms   p99 {:>7.2} ms   ({} requests, {live_events} events)",
        live_pct(0.5),
        live_pct(0.99),
        live.len()
    );
    println!(
        "  30-day daily series                    p50 {:>7.2} ms   p99 {:>7.2} ms",
        daily.p50, daily.p99
    );
    println!(
        "  30-day tenants table (100 rows)        p50 {:>7.2} ms   p99 {:>7.2} ms",
        by_tenant.p50, by_tenant.p99
    );
    println!(
        "  ... ordered by active users (-active)  p50 {:>7.2} ms   p99 {:>7.2} ms",
        by_active.p50, by_active.p99
    );
    println!(
        "  raw aggregate SQL (one period)         p50 {:>7.2} ms   p99 {:>7.2} ms   (figures {figures})",
        pct(0.5),
        pct(0.99)
    );
    let f = store.stats_period(today - 29, today).await?;
    println!(
        "  kitsync's figures (opened / active projects / authorised / active users): {} / {} / {} / {}",
        f.projects_opened, f.projects_active, f.members_authorized, f.members_active
    );
    println!(
        "  ratio raw / kitsync (p50)              {:.2}",
        pct(0.5) / kitsync.p50
    );
    if first.errors
        + kitsync.errors
        + cold_errors
        + live_errors
        + daily.errors
        + by_tenant.errors
        + by_active.errors
        > 0
    {
        anyhow::bail!("some requests did not answer 200");
    }
    Ok(())
}

/// Users per seeding transaction (a tenant's users stay in one transaction).
const USERS_PER_SEED_BATCH: usize = 10_000;

/// Seeds every tenant with `members` authorised members of one app, as the read
/// benchmarks' seed does, many tenants to a transaction (one transaction per tenant made
/// 50 000 tenants a matter of 100 000 commits).
async fn seed_tenants(store: &Store, tenants: &[String], members: usize) -> anyhow::Result<()> {
    let v = chrono::Utc::now().timestamp_millis();
    let mut batch: Vec<Command> = Vec::new();
    let mut users_in_batch = 0;
    for tenant in tenants {
        batch.push(Command::Tenant(TenantChange {
            tenant_id: tenant.clone(),
            instance_id: Some("bench".into()),
            order_id: None,
            tenant_code: "bench".into(),
            name: "Bench tenant".into(),
            domain_name: "https://bench.example.com".into(),
            op: kitsync_domain::Op::Upsert,
            test: false,
            version: KitTime(v),
        }));
        let ids: Vec<usize> = (0..members).collect();
        for (b, chunk) in ids.chunks(500).enumerate() {
            let users = chunk
                .iter()
                .map(|&i| AuthUser {
                    name: Some(format!("Member {i}")),
                    org_code: Some(format!("D{:04}", i % 20)),
                    position: Some("Engineer".into()),
                    employee_type: Some(1),
                    role: if i % 50 == 0 { Role::Admin } else { Role::User },
                    email: Some(format!("m{i}@example.com")),
                    ..AuthUser::named(format!("m{i:07}"))
                })
                .collect();
            batch.push(Command::Auth(AuthChange {
                tenant_id: tenant.clone(),
                instance_id: None,
                app_id: "bench-app".into(),
                op: AuthOp::Add,
                users,
                test: false,
                version: KitTime(v + 1 + i64::try_from(b).unwrap_or(0)),
                time_stamp: None,
            }));
        }
        users_in_batch += members;
        if users_in_batch >= USERS_PER_SEED_BATCH {
            store
                .apply_batch(&batch)
                .await
                .context("seeding tenants and members")?;
            batch.clear();
            users_in_batch = 0;
        }
    }
    store
        .apply_batch(&batch)
        .await
        .context("seeding tenants and members")?;
    Ok(())
}
