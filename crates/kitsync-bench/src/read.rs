//! `kitsync bench read`: the directory API on a 100 000-member tenant — filtered member
//! pages and single-member lookups — next to a trivial route on the same server, measured in
//! the same run with the same client and callers.
//!
//! `kitsync bench read --walk`: one caller walks every member of the tenant through
//! `GET /api/v1/tenants/{t}/members` with the largest page the API allows, following
//! `nextCursor` until it is `null`; each page is fetched, its body read and parsed (a client
//! must read `nextCursor`) and checked: `userName`s strictly increasing across the walk, each
//! member with at least one app, every member once. Its baseline, in the same run on the same
//! database, is the issue's: **the one raw query that selects the same member rows and their
//! authorisations** (`members` joined to its live `authorizations`: the ten served columns
//! and `appId`, `role`, `enabled`, in `userName` order), every value decoded, as a program
//! that wanted the whole directory at once would read it. That is the fair baseline for a
//! walk rather than raw keyset pages of the same size: it is what the walk competes with (a
//! bulk export), and it holds exactly the database's own costs (reading the rows in order,
//! the join, transferring and decoding the same values) and none of paging's; raw pages
//! would credit the walk with the per-statement costs it chose to pay. Walks and raw queries
//! alternate for `--rounds` rounds, after one of each to warm up; medians are reported.
use crate::Service;
use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Empty};
use kitsync_domain::{AuthChange, AuthOp, AuthUser, Command, KitTime, Role, Scope, TenantChange};
use kitsync_store::Actor;
use kitsync_store::Store;
use sea_orm::ConnectionTrait as _;
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct ReadArgs {
    /// Members of the tenant.
    #[arg(long, default_value_t = 100_000)]
    members: usize,
    /// Departments the members are spread over.
    #[arg(long, default_value_t = 200)]
    departments: usize,
    /// Concurrent callers.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Requests per measurement.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Instead of the concurrent reads: walk every member with the largest page, one caller,
    /// next to the raw query of the same rows and authorisations.
    #[arg(long)]
    walk: bool,
    /// `--walk`: alternating rounds of a walk and the raw queries (medians reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

pub(crate) type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
>;

/// `n` request URLs, the `i`th made by `url` from `(i * step) % rows`: a spread over the rows.
fn spread(n: usize, step: usize, rows: usize, url: impl Fn(usize) -> String) -> Vec<String> {
    (0..n).map(|i| url((i * step) % rows)).collect()
}

/// # Errors
/// The database could not be set up or the server could not start.
pub(crate) async fn run<S: Service>(settings: S, a: ReadArgs) -> anyhow::Result<()> {
    let db = settings.open_db().await?;
    let store = Store::new(db.clone(), settings.store().clone());
    let tenant = format!("bench-read-{}", uuid::Uuid::new_v4().simple());
    let depts = a.departments.max(1);
    seed(&store, &tenant, a.members, depts).await?;
    if db.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        // What autovacuum's auto-analyze does after a bulk load (this machine's PostgreSQL
        // runs with autovacuum off): without statistics the planner guesses a handful of
        // rows per department and sorts instead of walking members_org_user.
        db.execute_unprepared("ANALYZE members; ANALYZE authorizations")
            .await?;
    }
    let (_, token) = store
        .create_token(&Actor::Cli, "bench read", &[Scope::DirectoryRead], None)
        .await?;
    let token = token.expose_secret().to_owned();

    let router = kitsync_api::router(store.clone()).route(
        "/trivial",
        axum::routing::get(|| async { axum::Json(serde_json::json!({"ok": true})) }),
    );
    let (base, stop, server) = serve_on_loopback(router).await?;
    let client: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(a.concurrency)
            .build_http();
    if a.walk {
        let result = walk_rounds(&client, &db, &base, &tenant, &token, a.members, a.rounds).await;
        let _ = stop.send(());
        let _ = server.await;
        return result;
    }

    // The request lists are made before anything is timed.
    let n = a.requests.max(1);
    let members = a.members.max(1);
    let pages = spread(n, 7919, depts, |d| {
        format!("{base}/api/v1/tenants/{tenant}/members?orgCode=D{d:04}&limit=50")
    });
    let lookups = spread(n, 104_729, members, |m| {
        format!("{base}/api/v1/tenants/{tenant}/members/m{m:07}")
    });
    let searches = spread(n, 7919, members, |m| {
        format!("{base}/api/v1/tenants/{tenant}/members?q=Member%20{m}&limit=50")
    });
    let scim = spread(n, 104_729, members, |m| {
        format!("{base}/scim/v2/{tenant}/Users?filter=userName%20eq%20%22m{m:07}%22")
    });
    let trivial: Vec<String> = (0..n).map(|_| format!("{base}/trivial")).collect();

    let c = a.concurrency.max(1);
    let warm: Vec<String> = pages.iter().chain(&lookups).take(n / 5).cloned().collect();
    let _ = drive(&client, &warm, &token, c).await?;
    let trivial_run = drive(&client, &trivial, &token, c).await?;
    let page_run = drive(&client, &pages, &token, c).await?;
    let lookup_run = drive(&client, &lookups, &token, c).await?;
    let search_run = drive(&client, &searches, &token, c).await?;
    let scim_run = drive(&client, &scim, &token, c).await?;

    let _ = stop.send(());
    let _ = server.await;
    println!(
        "kitsync bench read: a {}-member tenant over {depts} departments, {c} concurrent callers, {n} requests each, database {}",
        a.members,
        match db.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => "PostgreSQL",
            _ => "SQLite",
        }
    );
    for (label, r) in [
        ("member page (orgCode, 50)", &page_run),
        ("single member", &lookup_run),
        ("name search (q, 50)", &search_run),
        ("SCIM userName eq", &scim_run),
        ("raw trivial route", &trivial_run),
    ] {
        println!(
            "  {label:<26} {:>8.0} req/s   p50 {:>5.2} ms   p99 {:>5.2} ms   (errors: {})",
            r.rate, r.p50, r.p99, r.errors
        );
    }
    println!(
        "  ratio to the trivial route  pages {:.2}, lookups {:.2}, searches {:.2}, SCIM {:.2}",
        page_run.rate / trivial_run.rate,
        lookup_run.rate / trivial_run.rate,
        search_run.rate / trivial_run.rate,
        scim_run.rate / trivial_run.rate
    );
    let errors = [&page_run, &lookup_run, &search_run, &scim_run, &trivial_run]
        .iter()
        .map(|r| r.errors)
        .sum::<u64>();
    if errors > 0 {
        anyhow::bail!("some requests did not answer 200");
    }
    Ok(())
}

/// `--walk`: `rounds` alternating walks and raw reads of the whole tenant; prints the medians.
async fn walk_rounds(
    client: &Client,
    db: &sea_orm::DatabaseConnection,
    base: &str,
    tenant: &str,
    token: &str,
    members: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let limit = kitsync_api::page::MAX_LIMIT;
    // Warm both paths (caches, prepared statements, the connection pools) before timing.
    raw_all(db, tenant, members).await?;
    walk(client, base, tenant, token, limit, members).await?;
    let (mut walks, mut raws, mut parses, mut p50s, mut p99s) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut pages = 0;
    for _ in 0..rounds.max(1) {
        let w = walk(client, base, tenant, token, limit, members).await?;
        walks.push(w.seconds);
        parses.push(w.parse);
        p50s.push(w.p50);
        p99s.push(w.p99);
        pages = w.pages;
        raws.push(raw_all(db, tenant, members).await?);
    }
    println!(
        "kitsync bench read --walk: every member of a {members}-member tenant, one caller, \
         limit={limit} ({pages} pages), {} rounds, database {}",
        walks.len(),
        backend_name(db)
    );
    let rate = |s: f64| members as f64 / s;
    let (walk_s, raw_s) = (
        crate::median(&mut walks.clone()),
        crate::median(&mut raws.clone()),
    );
    let secs = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.3}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    println!(
        "  walk (API)                 {walk_s:>7.3} s  {:>9.0} rows/s   page p50 {:.2} ms   p99 {:.2} ms   (runs {} s)",
        rate(walk_s),
        crate::median(&mut p50s),
        crate::median(&mut p99s),
        secs(&walks)
    );
    println!(
        "    of which the client parsing the pages' JSON {:.3} s",
        crate::median(&mut parses)
    );
    println!(
        "  raw query, one statement   {raw_s:>7.3} s  {:>9.0} rows/s   (runs {} s)",
        rate(raw_s),
        secs(&raws)
    );
    println!(
        "  ratio raw / walk           {:.2}   (target >= 0.3, moonshot >= 0.5)",
        raw_s / walk_s
    );
    Ok(())
}

fn backend_name(db: &sea_orm::DatabaseConnection) -> &'static str {
    match db.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => "PostgreSQL",
        _ => "SQLite",
    }
}

/// What the walking client reads of a page, as a typed client would: every item's
/// `userName` and how many apps it has, and `nextCursor` (the rest of the JSON is checked for
/// syntax and skipped, without building values).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct WalkPage<'a> {
    #[serde(borrow)]
    items: Vec<WalkItem<'a>>,
    #[serde(borrow)]
    next_cursor: Option<std::borrow::Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct WalkItem<'a> {
    #[serde(borrow)]
    user_name: std::borrow::Cow<'a, str>,
    apps: Count,
}

/// The length of a JSON array whose elements are skipped.
struct Count(usize);

impl<'de> serde::Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Count, A::Error> {
                let mut n = 0;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(Count(n))
            }
        }
        d.deserialize_seq(V)
    }
}

/// One timed walk.
struct Walk {
    seconds: f64,
    /// Of which parsing the pages' JSON ([`WalkPage`]).
    parse: f64,
    pages: usize,
    p50: f64,
    p99: f64,
}

/// Walks every member of `tenant` in pages of `limit`, sequentially, following `nextCursor`;
/// checks that `members` members came back, in strictly increasing `userName` order, each
/// with an app.
async fn walk(
    client: &Client,
    base: &str,
    tenant: &str,
    token: &str,
    limit: u64,
    members: usize,
) -> anyhow::Result<Walk> {
    let auth = format!("Bearer {token}");
    let first = format!("{base}/api/v1/tenants/{tenant}/members?limit={limit}");
    let mut url = first.clone();
    let mut lat = Vec::new();
    let mut seen = 0_usize;
    let mut last: Option<String> = None;
    let mut parse = std::time::Duration::ZERO;
    let started = Instant::now();
    loop {
        let t = Instant::now();
        let req = hyper::Request::get(url.as_str())
            .header("authorization", auth.as_str())
            .body(Empty::<Bytes>::new())?;
        let res = client.request(req).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        lat.push(t.elapsed());
        anyhow::ensure!(
            status.is_success(),
            "{url}: {status}: {}",
            String::from_utf8_lossy(&body)
        );
        let parsing = Instant::now();
        let page: WalkPage<'_> = serde_json::from_slice(&body)?;
        parse += parsing.elapsed();
        for item in &page.items {
            let name = item.user_name.as_ref();
            anyhow::ensure!(
                last.as_deref().is_none_or(|l| l < name),
                "{name} after {last:?}: not in strictly increasing order"
            );
            anyhow::ensure!(item.apps.0 > 0, "{name} without apps");
            last = Some(name.to_owned());
        }
        seen += page.items.len();
        match page.next_cursor {
            Some(c) => url = format!("{first}&cursor={c}"),
            None => break,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(seen == members, "the walk saw {seen} members of {members}");
    lat.sort();
    Ok(Walk {
        seconds,
        parse: parse.as_secs_f64(),
        pages: lat.len(),
        p50: crate::percentile_ms(&lat, 0.5),
        p99: crate::percentile_ms(&lat, 0.99),
    })
}

/// The served columns of a member and of each of its authorisations.
const RAW_COLUMNS: &str = "m.user_name, m.name, m.org_code, m.position, m.employee_code, \
     m.employee_type, m.email, m.mobile, m.work_place, m.extension, a.app_id, a.role, a.enabled";

/// The raw rows, decoded as a program would: how many members they hold.
fn decode_raw(rows: &[sea_orm::QueryResult]) -> anyhow::Result<usize> {
    use kitsync_sql::get;
    let mut distinct = 0;
    let mut last: Option<String> = None;
    for r in rows {
        // Read as the store reads a page (`kitsync_sql::get`, straight from the driver's row).
        let user: String = get(r, 0)?;
        for i in [1, 2, 3, 4, 6, 7, 8, 9] {
            let _: Option<String> = get(r, i)?;
        }
        let _: Option<i32> = get(r, 5)?;
        let _: (String, String, bool) = (get(r, 10)?, get(r, 11)?, get(r, 12)?);
        if last.as_deref() != Some(user.as_str()) {
            distinct += 1;
            last = Some(user);
        }
    }
    Ok(distinct)
}

/// The baseline: one raw query of every member row of the walk (live, not test data) with
/// its live authorisations, in `userName` order, all values decoded. Seconds. SQLite is told
/// to walk `members` in key order and probe the authorisations (`CROSS JOIN`), its fastest
/// plan; PostgreSQL plans the join itself.
async fn raw_all(
    db: &sea_orm::DatabaseConnection,
    tenant: &str,
    members: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let backend = db.get_database_backend();
    let join = if backend == sea_orm::DatabaseBackend::Postgres {
        " JOIN"
    } else {
        " CROSS JOIN"
    };
    let mut sql = kitsync_sql::Sql::new(backend);
    sql.push("SELECT ")
        .push(RAW_COLUMNS)
        .push(" FROM members m")
        .push(join)
        .push(
            " authorizations a ON a.tenant_id = m.tenant_id AND a.user_name = m.user_name \
             AND a.deleted = FALSE WHERE m.tenant_id = ",
        )
        .bind(tenant)
        .push(" AND m.deleted = FALSE AND m.test = FALSE ORDER BY m.user_name");
    let rows = db.query_all(sql.build()).await?;
    let distinct = decode_raw(&rows)?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(distinct == members, "the raw query saw {distinct} members");
    Ok(seconds)
}

/// A tenant with `members` members (one app authorises them all) spread over `depts`
/// departments, applied in batches of 500 as authSync would be.
pub(crate) async fn seed(
    store: &Store,
    tenant: &str,
    members: usize,
    depts: usize,
) -> anyhow::Result<()> {
    let v = chrono::Utc::now().timestamp_millis();
    store
        .apply(&Command::Tenant(TenantChange {
            tenant_id: tenant.to_owned(),
            instance_id: Some("bench".into()),
            order_id: None,
            tenant_code: "bench".into(),
            name: "Bench tenant".into(),
            domain_name: "https://bench.example.com".into(),
            op: kitsync_domain::Op::Upsert,
            test: false,
            version: KitTime(v),
        }))
        .await?;
    let ids: Vec<usize> = (0..members).collect();
    for (b, chunk) in ids.chunks(500).enumerate() {
        let users = chunk
            .iter()
            .map(|&i| AuthUser {
                name: Some(format!("Member {i}")),
                org_code: Some(format!("D{:04}", i % depts)),
                position: Some("Engineer".into()),
                employee_type: Some(1),
                role: if i % 50 == 0 { Role::Admin } else { Role::User },
                email: Some(format!("m{i}@example.com")),
                ..AuthUser::named(format!("m{i:07}"))
            })
            .collect();
        store
            .apply(&Command::Auth(AuthChange {
                tenant_id: tenant.to_owned(),
                instance_id: None,
                app_id: "bench-app".into(),
                op: AuthOp::Add,
                users,
                test: false,
                version: KitTime(v + 1 + b as i64),
                time_stamp: None,
            }))
            .await
            .context("seeding members")?;
    }
    Ok(())
}

/// A benchmark's server on `127.0.0.1:0`: its base URL, the sender that stops it, its task.
pub(crate) type LoopbackServer = (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
);

/// Serves `router` on a free loopback port until the returned sender fires.
///
/// # Errors
/// The port could not be bound.
pub(crate) async fn serve_on_loopback(router: axum::Router) -> anyhow::Result<LoopbackServer> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    Ok((base, stop, server))
}

pub(crate) struct Run {
    pub rate: f64,
    pub p50: f64,
    pub p99: f64,
    pub errors: u64,
}

pub(crate) async fn drive(
    client: &Client,
    uris: &[String],
    token: &str,
    concurrency: usize,
) -> anyhow::Result<Run> {
    let auth = format!("Bearer {token}");
    let all = Arc::new(uris.to_vec());
    let build = move |i: usize| {
        hyper::Request::get(all[i].as_str())
            .header("authorization", auth.as_str())
            .body(Empty::<Bytes>::new())
            .ok()
    };
    let judge = |res: hyper::Response<hyper::body::Incoming>| async move {
        let status = res.status();
        res.into_body().collect().await.is_ok() && status.is_success()
    };
    let started = Instant::now();
    let (mut lat, errors) = crate::callers(client, uris.len(), concurrency, build, judge).await?;
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| crate::percentile_ms(&lat, p);
    Ok(Run {
        rate: uris.len() as f64 / elapsed,
        p50: pct(0.5),
        p99: pct(0.99),
        errors,
    })
}
