//! `kitsync bench read`: the directory API on a 100 000-member tenant — filtered member
//! pages and single-member lookups — next to a trivial route on the same server, measured in
//! the same run with the same client and callers.
use crate::Service;
use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Empty};
use kitsync_domain::{AuthChange, AuthOp, AuthUser, Command, KitTime, Role, Scope, TenantChange};
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
        .create_token("bench read", &[Scope::DirectoryRead], None)
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
