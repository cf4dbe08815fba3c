//! Benchmarks (programs, not tests). Each prints its figure, the raw baseline measured in the
//! same run on the same machine, and their ratio.
//!
//! - `kitsync bench ingest`: `--concurrency` callers send signed authSync callbacks (~2 KiB)
//!   to a real in-process ingress (HTTP → signature → nonce ledger → durable publish), next
//!   to raw persistent publishes with confirms on the same broker at the same concurrency
//!   (or, on the embedded queue, raw one-row committed inserts into the same database).
//! - `kitsync bench apply`: a 100 000-member tenant (200 authSync batches of 500) plus a
//!   10 000-department full sync, queued first, then drained by a real worker; next to a raw
//!   batched `INSERT … ON CONFLICT` of the same member rows (1 000 per statement).
//! - `read`, `stats` and `login` live in `bench_read`, `bench_stats` and `bench_login`
//!   (`login`: OpenID Connect logins through the Kit login bridge, 16 concurrent browsers
//!   against an emulated auth centre, next to the auth centre's own code exchange).
//!
//! All use the configured database and queue (`KITSYNC_DATABASE__URL`,
//! `KITSYNC_QUEUE__AMQP_URL`); with no configuration, a throwaway SQLite file.
use crate::app;
use crate::settings::Settings;
use anyhow::Context as _;
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use kitsync_domain::{
    AuthChange, AuthOp, AuthUser, Command, FullOrgSnapshot, KitTime, OrgInfo, QueuedCallback, Role,
};
use kitsync_queue::{OutgoingMessage, Queue};
use kitsync_store::Store;
use kitsync_worker::Worker;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Concurrent signed callbacks against a real ingress, next to raw publish-with-confirm.
    Ingest(IngestArgs),
    /// Applying a 100 000-member tenant, next to a raw batched upsert of the same rows.
    Apply(ApplyArgs),
    /// Directory API reads on a 100 000-member tenant, next to a trivial route.
    Read(crate::bench_read::ReadArgs),
    /// The 30-day statistics over 100 000 members and 1 000 000 activity events, next to
    /// the equivalent single aggregate SQL query.
    Stats(crate::bench_stats::StatsArgs),
    /// Kit account logins bridged to OpenID Connect through the whole flow (emulated auth
    /// centre on loopback), next to the auth centre's own token + userinfo exchange.
    Login(crate::bench_login::LoginArgs),
}

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// Concurrent callers.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Callbacks per round (after one warm-up of 10 %).
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// Rounds, each the raw handler then kitsync; the medians are compared.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Users per authSync body (5 ≈ 2 KiB).
    #[arg(long, default_value_t = 5)]
    users: usize,
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// authSync callbacks of `--batch` users each.
    #[arg(long, default_value_t = 200)]
    callbacks: usize,
    /// Users per authSync callback.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Departments in the full sync.
    #[arg(long, default_value_t = 10_000)]
    departments: usize,
}

/// # Errors
/// The benchmark could not set up its database, queue or server.
pub async fn run(settings: Settings, command: BenchCmd) -> anyhow::Result<()> {
    let (settings, _tmp) = bench_settings(settings)?;
    match command {
        BenchCmd::Ingest(a) => ingest(settings, a).await,
        BenchCmd::Apply(a) => apply(settings, a).await,
        BenchCmd::Read(a) => crate::bench_read::run(settings, a).await,
        BenchCmd::Stats(a) => crate::bench_stats::run(settings, a).await,
        BenchCmd::Login(a) => crate::bench_login::run(settings, a).await,
    }
}

/// A throwaway SQLite database unless one is configured; a queue name of its own.
fn bench_settings(mut s: Settings) -> anyhow::Result<(Settings, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    if std::env::var("KITSYNC_DATABASE__URL").is_err() && s.database.url.starts_with("sqlite") {
        s.database.url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.sqlite").display()
        );
    }
    // The benchmarks seal no real secret: never create or read the operator's master key.
    s.secrets.master_key_path = dir.path().join("master.key");
    s.secrets.master_key = Some(secrecy::SecretString::from(
        kitsync_secrets::Sealer::generate_master_key()?,
    ));
    s.queue.name = format!("kitsync.bench.{}", uuid::Uuid::new_v4().simple());
    s.http.addr = "127.0.0.1:0".into();
    Ok((s, dir))
}

/// The `p` quantile (0‥1, nearest rank) of sorted durations; zero when there are none.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// [`percentile`] in milliseconds.
pub(crate) fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    percentile(sorted, p).as_secs_f64() * 1000.0
}

fn kit_now() -> String {
    KitTime::from_millis(chrono::Utc::now().timestamp_millis()).to_kit_string()
}

fn auth_body(tenant: &str, i: usize, users: usize) -> Vec<u8> {
    let list: Vec<serde_json::Value> = (0..users)
        .map(|u| {
            serde_json::json!({
                "userName": format!("user-{i}-{u}"), "name": format!("Bench User {i} {u}"),
                "orgCode": format!("org-{}", u % 50), "position": "Engineer", "employeeCode": format!("E{i:07}{u:02}"),
                "employeeType": 1, "role": if u == 0 { "admin" } else { "user" }, "enable": "true",
                "mobile": "13800000000", "email": format!("user{i}.{u}@example.com"), "workPlace": "Shenzhen Bantian Base F3",
            })
        })
        .collect();
    serde_json::json!({
        "instanceId": "bench-instance", "tenantId": tenant, "appId": "bench-app",
        "userList": list, "currentSyncTime": kit_now(), "flag": 1, "testFlag": 0, "timeStamp": kit_now(),
    })
    .to_string()
    .into_bytes()
}

async fn ingest(mut settings: Settings, a: IngestArgs) -> anyhow::Result<()> {
    let key = "bench-access-key";
    settings.kit.access_keys = vec![secrecy::SecretString::from(key.to_owned())];
    let concurrency = a.concurrency.max(1);
    let db = app::open_db(&settings).await?;

    // Raw baseline first, while the machine is quiet.
    let body_len = auth_body("t", 0, a.users).len();
    let handler_label = if settings.queue.amqp_url.is_some() {
        "persistent publish + confirm"
    } else {
        "one-row committed INSERT"
    };
    let (raw_label, raw_rate) = match &settings.queue.amqp_url {
        Some(url) => (
            "raw RabbitMQ persistent publish + confirm (quorum queue)",
            raw_amqp_publish(
                url,
                concurrency,
                a.requests,
                body_len,
                settings.queue.publish_channels,
            )
            .await?,
        ),
        None => (
            "raw one-row committed INSERT into the same database",
            raw_sql_inserts(&db, concurrency, a.requests, body_len).await?,
        ),
    };

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http::<Full<Bytes>>();
    // The bodies are made before anything is timed: the load generator shares the machine's
    // two cores with the servers, and it should spend them on sending, not on building JSON.
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..a.requests)
            .map(|i| Bytes::from(auth_body("bench-tenant", i, a.users)))
            .collect(),
    );
    let warmup: Arc<Vec<Bytes>> = Arc::new(
        bodies
            .iter()
            .take((a.requests / 10).max(concurrency))
            .cloned()
            .collect(),
    );

    let raw = RawHandler::start(&settings, &db, key).await?;
    let running = app::start(settings.clone(), app::Mode::Ingress).await?;
    let addr = running
        .addr
        .context("the ingress did not report its address")?;
    let uri = format!("http://{addr}/produceAPI/v2/authSync");

    // Alternating rounds, so both sides see the same broker and machine state; medians.
    let mut rates = Vec::new();
    let mut handler_rates = Vec::new();
    let mut nonce_rates = Vec::new();
    let mut lat = Vec::new();
    let mut errors = 0;
    let _ = drive(&client, &raw.uri, key, concurrency, &warmup).await?;
    let _ = drive(&client, &raw.nonce_uri, key, concurrency, &warmup).await?;
    let _ = drive(&client, &uri, key, concurrency, &warmup).await?;
    for _ in 0..a.rounds.max(1) {
        for (target, out) in [
            (&raw.uri, &mut handler_rates),
            (&raw.nonce_uri, &mut nonce_rates),
        ] {
            let started = Instant::now();
            let (_, raw_errors) = drive(&client, target, key, concurrency, &bodies).await?;
            out.push(a.requests as f64 / started.elapsed().as_secs_f64());
            if raw_errors > 0 {
                anyhow::bail!("the raw handler ({target}) failed {raw_errors} requests");
            }
        }
        let started = Instant::now();
        let (l, e) = drive(&client, &uri, key, concurrency, &bodies).await?;
        rates.push(a.requests as f64 / started.elapsed().as_secs_f64());
        lat.extend(l);
        errors += e;
    }
    raw.stop(&db).await?;
    let _ = running.shutdown.send(true);
    let _ = running.done.await;
    if let Ok(q) = Queue::connect(&settings.queue, db.clone()).await {
        let _ = q.delete_topology().await;
    }
    lat.sort();
    let rate = median(&mut rates);
    let handler_rate = median(&mut handler_rates);
    let nonce_rate = median(&mut nonce_rates);

    println!(
        "kitsync bench ingest: {concurrency} concurrent callers, {} rounds of {} callbacks of {body_len} B, queue {}",
        a.rounds.max(1),
        a.requests,
        if settings.queue.amqp_url.is_some() { "RabbitMQ" } else { "embedded" }
    );
    println!(
        "  callbacks/s            {rate:>10.0}   (median; rounds {}; errors: {errors})",
        list(&rates)
    );
    println!(
        "  latency p50 / p99      {:>7.1} ms / {:.1} ms",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    );
    println!(
        "  raw handler req/s      {handler_rate:>10.0}   (median; rounds {}; axum route: HMAC check, then {handler_label}; same client)",
        list(&handler_rates)
    );
    println!(
        "  raw handler + nonce    {nonce_rate:>10.0}   (median; rounds {}; the same, after a one-row committed INSERT of the nonce)",
        list(&nonce_rates)
    );
    println!(
        "  raw queue msgs/s       {raw_rate:>10.0}   ({raw_label}, same concurrency, no HTTP)"
    );
    println!(
        "  ratio to raw handler   {:>10.2}   (target ≥ 0.60, p99 < 50 ms)",
        rate / handler_rate
    );
    println!(
        "  ratio to raw + nonce   {:>10.2}   (kitsync next to the least a durable replay check costs)",
        rate / nonce_rate
    );
    println!(
        "  ratio to raw queue     {:>10.2}   (the queue alone)",
        rate / raw_rate
    );
    if errors > 0 {
        anyhow::bail!("{errors} callbacks were not acknowledged with 000000");
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

async fn drive(
    client: &HttpClient,
    uri: &str,
    key: &str,
    concurrency: usize,
    bodies: &Arc<Vec<Bytes>>,
) -> anyhow::Result<(Vec<Duration>, u64)> {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let seed = uuid::Uuid::new_v4().simple().to_string();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let uri = uri.to_owned();
        let key = key.to_owned();
        let next = Arc::clone(&next);
        let errors = Arc::clone(&errors);
        let seed = seed.clone();
        let bodies = Arc::clone(bodies);
        tasks.spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(body) = bodies.get(i) else {
                    return lat;
                };
                let nonce = format!("{seed}{i:016X}");
                let ts = chrono::Utc::now().timestamp_millis().to_string();
                let sign = kitsync_domain::signing::sign(key.as_bytes(), &nonce, &ts, body);
                let req = hyper::Request::post(&uri)
                    .header("content-type", "application/json")
                    .header("x-sign", sign)
                    .header("x-nonce", nonce)
                    .header("x-timestamp", ts)
                    .body(Full::new(body.clone()));
                let Ok(req) = req else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let t = Instant::now();
                let ok = match client.request(req).await {
                    Ok(res) => match res.into_body().collect().await {
                        Ok(b) => b.to_bytes().windows(8).any(|w| w == b"\"000000\""),
                        Err(_) => false,
                    },
                    Err(_) => false,
                };
                lat.push(t.elapsed());
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let mut all = Vec::with_capacity(bodies.len());
    while let Some(r) = tasks.join_next().await {
        all.extend(r.context("bench caller task")?);
    }
    Ok((all, errors.load(Ordering::Relaxed)))
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub(crate) fn list(v: &[f64]) -> String {
    v.iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Where the raw handler puts what it accepts: a quorum queue over `channels` confirming
/// channels, or one committed row per request.
enum RawSink {
    Amqp {
        channels: Vec<lapin::Channel>,
        queue: String,
        next: AtomicU64,
    },
    Sql {
        db: DatabaseConnection,
        insert: String,
    },
}

impl RawSink {
    async fn put(&self, body: Bytes) -> Result<(), String> {
        match self {
            RawSink::Amqp {
                channels,
                queue,
                next,
            } => {
                let ch = &channels[next.fetch_add(1, Ordering::Relaxed) as usize % channels.len()];
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        lapin::options::BasicPublishOptions::default(),
                        &body,
                        lapin::BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                confirm.await.map(|_| ()).map_err(|e| e.to_string())
            }
            RawSink::Sql { db, insert } => db
                .execute(Statement::from_sql_and_values(
                    db.get_database_backend(),
                    insert,
                    [
                        uuid::Uuid::new_v4().to_string().into(),
                        String::from_utf8_lossy(&body).into_owned().into(),
                    ],
                ))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }
}

struct RawHandlerState {
    key: String,
    sink: RawSink,
    /// The nonce table of the `/raw-nonce` route and its one-row insert.
    nonces: (String, String),
    db: DatabaseConnection,
}

/// The raw handler: an axum route that checks the Kit HMAC and durably queues the raw body
/// before answering, with nothing else (no parsing, validation, nonce ledger or envelope).
async fn raw_handler_route(
    axum::extract::State(state): axum::extract::State<Arc<RawHandlerState>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> &'static str {
    raw_handle(&state, &headers, body, false).await
}

/// The raw handler plus the least a replay check must do: one committed
/// `INSERT … ON CONFLICT DO NOTHING` of the nonce per request, before queueing.
async fn raw_nonce_route(
    axum::extract::State(state): axum::extract::State<Arc<RawHandlerState>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> &'static str {
    raw_handle(&state, &headers, body, true).await
}

async fn raw_handle(
    state: &RawHandlerState,
    headers: &axum::http::HeaderMap,
    body: Bytes,
    nonce: bool,
) -> &'static str {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let keys = [state.key.as_bytes()];
    if kitsync_domain::signing::verify(&keys, h("x-nonce"), h("x-timestamp"), &body, h("x-sign"))
        .is_err()
    {
        return r#"{"resultCode":"000001","resultMsg":"bad signature"}"#;
    }
    if nonce {
        let fresh = state
            .db
            .query_all(Statement::from_sql_and_values(
                state.db.get_database_backend(),
                &state.nonces.1,
                [
                    h("x-nonce").into(),
                    chrono::Utc::now().timestamp_millis().into(),
                ],
            ))
            .await;
        match fresh {
            Ok(rows) if rows.len() == 1 => {}
            Ok(_) => return r#"{"resultCode":"000001","resultMsg":"replayed"}"#,
            Err(_) => return r#"{"resultCode":"000005","resultMsg":"unavailable"}"#,
        }
    }
    match state.sink.put(body).await {
        Ok(()) => r#"{"resultCode":"000000","resultMsg":"success"}"#,
        Err(_) => r#"{"resultCode":"000005","resultMsg":"unavailable"}"#,
    }
}

/// The raw handler-with-confirm server (README.md, "Benchmarks"), on a port of its own.
struct RawHandler {
    uri: String,
    nonce_uri: String,
    name: String,
    state: Arc<RawHandlerState>,
    conn: Option<lapin::Connection>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RawHandler {
    async fn start(
        settings: &Settings,
        db: &DatabaseConnection,
        key: &str,
    ) -> anyhow::Result<Self> {
        let name = format!("kitsync.bench.handler.{}", uuid::Uuid::new_v4().simple());
        let mut conn = None;
        let sink = match &settings.queue.amqp_url {
            Some(url) => {
                let c =
                    lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
                let mut channels = Vec::new();
                for _ in 0..settings.queue.publish_channels.max(1) {
                    let ch = c.create_channel().await?;
                    ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
                        .await?;
                    channels.push(ch);
                }
                let mut args = lapin::types::FieldTable::default();
                args.insert(
                    "x-queue-type".into(),
                    lapin::types::AMQPValue::LongString("quorum".into()),
                );
                channels[0]
                    .queue_declare(
                        name.as_str().into(),
                        lapin::options::QueueDeclareOptions {
                            durable: true,
                            ..Default::default()
                        },
                        args,
                    )
                    .await?;
                conn = Some(c);
                RawSink::Amqp {
                    channels,
                    queue: name.clone(),
                    next: AtomicU64::new(0),
                }
            }
            None => {
                let table = name.replace('.', "_");
                let backend = db.get_database_backend();
                db.execute(Statement::from_string(
                    backend,
                    format!("CREATE TABLE {table} (id TEXT PRIMARY KEY, body TEXT NOT NULL)"),
                ))
                .await?;
                RawSink::Sql {
                    db: db.clone(),
                    insert: match backend {
                        sea_orm::DatabaseBackend::Postgres => {
                            format!("INSERT INTO {table} (id, body) VALUES ($1, $2)")
                        }
                        _ => format!("INSERT INTO {table} (id, body) VALUES (?, ?)"),
                    },
                }
            }
        };
        let backend = db.get_database_backend();
        let nonce_table = format!("{}_nonces", name.replace('.', "_"));
        for sql in [
            format!("CREATE TABLE {nonce_table} (nonce TEXT NOT NULL PRIMARY KEY, seen_at BIGINT NOT NULL)"),
            format!("CREATE INDEX {nonce_table}_seen_at ON {nonce_table} (seen_at)"),
        ] {
            db.execute(Statement::from_string(backend, sql)).await?;
        }
        let nonce_insert = match backend {
            sea_orm::DatabaseBackend::Postgres => format!(
                "INSERT INTO {nonce_table} (nonce, seen_at) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING nonce"
            ),
            _ => format!(
                "INSERT INTO {nonce_table} (nonce, seen_at) VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING nonce"
            ),
        };
        let state = Arc::new(RawHandlerState {
            key: key.to_owned(),
            sink,
            nonces: (nonce_table, nonce_insert),
            db: db.clone(),
        });
        let router = axum::Router::new()
            .route("/raw", axum::routing::post(raw_handler_route))
            .route("/raw-nonce", axum::routing::post(raw_nonce_route))
            .with_state(Arc::clone(&state));
        let (base, stop, server) = crate::bench_read::serve_on_loopback(router).await?;
        let uri = format!("{base}/raw");
        let nonce_uri = format!("{base}/raw-nonce");
        Ok(Self {
            uri,
            nonce_uri,
            name,
            state,
            conn,
            stop,
            server,
        })
    }

    async fn stop(self, db: &DatabaseConnection) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        let _ = self.server.await;
        db.execute(Statement::from_string(
            db.get_database_backend(),
            format!("DROP TABLE {}", self.state.nonces.0),
        ))
        .await?;
        match (&self.state.sink, self.conn) {
            (RawSink::Amqp { channels, .. }, Some(c)) => {
                channels[0]
                    .queue_delete(
                        self.name.as_str().into(),
                        lapin::options::QueueDeleteOptions::default(),
                    )
                    .await?;
                c.close(200, "bench done".into()).await.ok();
            }
            _ => {
                db.execute(Statement::from_string(
                    db.get_database_backend(),
                    format!("DROP TABLE {}", self.name.replace('.', "_")),
                ))
                .await?;
            }
        }
        Ok(())
    }
}

/// Raw persistent publishes with confirms: `concurrency` tasks over `channels` channels.
async fn raw_amqp_publish(
    url: &str,
    concurrency: usize,
    total: usize,
    size: usize,
    channels: usize,
) -> anyhow::Result<f64> {
    use lapin::options::{
        BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::{AMQPValue, FieldTable};
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let name = format!("kitsync.bench.raw.{}", uuid::Uuid::new_v4().simple());
    let mut chans = Vec::new();
    for _ in 0..channels.max(1) {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        chans.push(ch);
    }
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    chans[0]
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await?;
    let payload = Arc::new(vec![b'x'; size]);
    let run = |n: usize| {
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..concurrency {
            let ch = chans[t % chans.len()].clone();
            let next = Arc::clone(&next);
            let payload = Arc::clone(&payload);
            let name = name.clone();
            tasks.spawn(async move {
                while (next.fetch_add(1, Ordering::Relaxed) as usize) < n {
                    let confirm = ch
                        .basic_publish(
                            "".into(),
                            name.as_str().into(),
                            BasicPublishOptions::default(),
                            &payload,
                            BasicProperties::default().with_delivery_mode(2),
                        )
                        .await?;
                    confirm.await?;
                }
                Ok::<(), lapin::Error>(())
            });
        }
        tasks
    };
    let mut warm = run((total / 10).max(concurrency));
    while let Some(r) = warm.join_next().await {
        r??;
    }
    let started = Instant::now();
    let mut tasks = run(total);
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    chans[0]
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await?;
    conn.close(200, "bench done".into()).await.ok();
    Ok(rate)
}

/// Raw committed one-row inserts, `concurrency` at a time, into a scratch table.
async fn raw_sql_inserts(
    db: &DatabaseConnection,
    concurrency: usize,
    total: usize,
    size: usize,
) -> anyhow::Result<f64> {
    let backend = db.get_database_backend();
    let table = format!("bench_raw_{}", uuid::Uuid::new_v4().simple());
    db.execute(Statement::from_string(
        backend,
        format!("CREATE TABLE {table} (id TEXT PRIMARY KEY, body TEXT NOT NULL)"),
    ))
    .await?;
    let payload = "x".repeat(size);
    let insert = match backend {
        sea_orm::DatabaseBackend::Postgres => {
            format!("INSERT INTO {table} (id, body) VALUES ($1, $2)")
        }
        _ => format!("INSERT INTO {table} (id, body) VALUES (?, ?)"),
    };
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let db = db.clone();
        let next = Arc::clone(&next);
        let insert = insert.clone();
        let payload = payload.clone();
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= total {
                    return Ok::<(), sea_orm::DbErr>(());
                }
                db.execute(Statement::from_sql_and_values(
                    backend,
                    &insert,
                    [i.to_string().into(), payload.clone().into()],
                ))
                .await?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    db.execute(Statement::from_string(
        backend,
        format!("DROP TABLE {table}"),
    ))
    .await?;
    Ok(rate)
}

fn member_users(i: usize, batch: usize) -> Vec<AuthUser> {
    (0..batch)
        .map(|u| AuthUser {
            user_name: format!("m{:07}", i * batch + u),
            name: Some(format!("Member {i} {u}")),
            org_code: Some(format!("d{:05}", (i * batch + u) % 10_000)),
            position: Some("Engineer".into()),
            employee_code: Some(format!("E{:07}", i * batch + u)),
            employee_type: Some(1),
            role: if u == 0 { Role::Admin } else { Role::User },
            enabled: true,
            mobile: Some("13800000000".into()),
            email: Some(format!("m{}@example.com", i * batch + u)),
            work_place: Some("Shenzhen".into()),
            entry_date: None,
            extension: None,
        })
        .collect()
}

async fn apply(settings: Settings, a: ApplyArgs) -> anyhow::Result<()> {
    let db = app::open_db(&settings).await?;
    let queue = app::open_queue(&settings, &db).await?;
    let tenant = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let base = chrono::Utc::now().timestamp_millis();
    let members = a.callbacks * a.batch;

    // The raw baselines, on the same users (see `raw_member_rows` and `raw_same_rows`).
    let users: Vec<AuthUser> = (0..a.callbacks)
        .flat_map(|i| member_users(i, a.batch))
        .collect();
    let raw_members = raw_member_rows(&db, &tenant, &users).await?;
    let raw_same = raw_same_rows(&db, &tenant, &users).await?;
    drop(users);

    // Queue everything first, so the measurement is the worker alone.
    let mut commands = vec![Command::FullOrg(FullOrgSnapshot {
        tenant_id: tenant.clone(),
        instance_id: Some("bench-instance".into()),
        orgs: (0..a.departments)
            .map(|d| OrgInfo {
                org_code: format!("d{d:05}"),
                org_name: format!("Department {d}"),
                parent_code: (d > 0).then(|| format!("d{:05}", (d - 1) / 10)),
            })
            .collect(),
        test: false,
        version: KitTime::from_millis(base),
    })];
    for i in 0..a.callbacks {
        commands.push(Command::Auth(AuthChange {
            tenant_id: tenant.clone(),
            instance_id: Some("bench-instance".into()),
            app_id: "bench-app".into(),
            op: AuthOp::Add,
            users: member_users(i, a.batch),
            test: false,
            version: KitTime::from_millis(base + 1 + i as i64),
            time_stamp: None,
        }));
    }
    let total_messages = commands.len() as u64;
    for c in commands {
        let q = QueuedCallback {
            message_id: uuid::Uuid::now_v7().to_string(),
            received_at_ms: base,
            command: c,
        };
        queue
            .publish(OutgoingMessage {
                message_id: q.message_id.clone(),
                body: q.to_bytes()?,
            })
            .await?;
    }

    let store = Store::new(db.clone(), settings.store.clone());
    let worker = Worker::new(store.clone(), queue.clone(), settings.worker.clone());
    let stats = worker.stats();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let handle = tokio::spawn(async move { worker.run(rx).await });
    let deadline = Instant::now() + Duration::from_secs(1800);
    while stats.messages_acked.load(Ordering::Relaxed) < total_messages {
        if Instant::now() > deadline {
            anyhow::bail!("the worker did not drain the queue within 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let _ = tx.send(true);
    let _ = handle.await;
    let snapshot = store.snapshot(&tenant).await?;
    let rate = members as f64 / elapsed.as_secs_f64();
    let _ = queue.delete_topology().await;

    println!(
        "kitsync bench apply: {} authSync × {} users + one {}-department full sync, database {}, queue {}",
        a.callbacks,
        a.batch,
        a.departments,
        match db.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => "PostgreSQL",
            _ => "SQLite",
        },
        queue.kind()
    );
    println!(
        "  applied                {:>10} members, {} departments in {:.2} s (worker batch {})",
        snapshot.members.len(),
        snapshot.departments.len(),
        elapsed.as_secs_f64(),
        settings.worker.batch_size
    );
    println!(
        "  members/s              {rate:>10.0}   (each: member + authorisation + journal rows)"
    );
    println!("  raw same rows          {raw_same:>10.0}   members/s (its member, authorisation and journal rows, batched INSERT … ON CONFLICT into copies of the tables)");
    println!("  raw member rows        {raw_members:>10.0}   members/s (the member row alone, 1 000 per INSERT … ON CONFLICT, bare table)");
    println!(
        "  ratio to same rows     {:>10.2}   (target ≥ 0.50 on PostgreSQL)",
        rate / raw_same
    );
    println!(
        "  ratio to member rows   {:>10.2}   (what the authorisation and journal rows cost on top)",
        rate / raw_members
    );
    if snapshot.members.len() != members {
        anyhow::bail!(
            "expected {members} members, found {}",
            snapshot.members.len()
        );
    }
    queue.close().await;
    Ok(())
}

/// A scratch table for a raw baseline.
struct Scratch {
    name: String,
    extra: Vec<String>,
}

impl Scratch {
    /// A bare member table: the member columns, keyed by (tenant, user), no other index.
    async fn bare_members(db: &DatabaseConnection) -> anyhow::Result<Self> {
        let name = format!("bench_members_{}", uuid::Uuid::new_v4().simple());
        db.execute(Statement::from_string(
            db.get_database_backend(),
            format!(
                "CREATE TABLE {name} (tenant_id TEXT NOT NULL, user_name TEXT NOT NULL, name TEXT, org_code TEXT, \
                 position TEXT, employee_code TEXT, employee_type INTEGER, mobile TEXT, email TEXT, work_place TEXT, \
                 version BIGINT NOT NULL, PRIMARY KEY (tenant_id, user_name))"
            ),
        ))
        .await?;
        Ok(Self {
            name,
            extra: Vec::new(),
        })
    }

    /// An empty copy of a directory table with the same columns, keys and indexes (and,
    /// for the journal, an id sequence of its own).
    async fn copy_of(db: &DatabaseConnection, table: &str) -> anyhow::Result<Self> {
        let backend = db.get_database_backend();
        let name = format!("bench_{table}_{}", uuid::Uuid::new_v4().simple());
        let mut extra = Vec::new();
        let mut ddl = Vec::new();
        match backend {
            sea_orm::DatabaseBackend::Postgres => {
                ddl.push(format!(
                    "CREATE TABLE {name} (LIKE {table} INCLUDING ALL EXCLUDING DEFAULTS)"
                ));
                if table == "journal" {
                    let seq = format!("{name}_id_seq");
                    ddl.push(format!("CREATE SEQUENCE {seq}"));
                    ddl.push(format!(
                        "ALTER TABLE {name} ALTER COLUMN id SET DEFAULT nextval('{seq}')"
                    ));
                    extra.push(format!("DROP SEQUENCE IF EXISTS {seq}"));
                }
            }
            _ => {
                // SQLite has no LIKE: replay the table's own DDL under the new name.
                let rows = db
                    .query_all(Statement::from_sql_and_values(
                        backend,
                        "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL ORDER BY type DESC",
                        [table.into()],
                    ))
                    .await?;
                for row in rows {
                    let kind: String = row.try_get_by_index(0)?;
                    let object: String = row.try_get_by_index(1)?;
                    let sql: String = row.try_get_by_index(2)?;
                    ddl.push(if kind == "table" {
                        sql.replacen(
                            &format!("CREATE TABLE {table}"),
                            &format!("CREATE TABLE {name}"),
                            1,
                        )
                    } else {
                        sql.replacen(
                            &format!("{object} ON {table}"),
                            &format!("{name}_{object} ON {name}"),
                            1,
                        )
                    });
                }
            }
        }
        for sql in ddl {
            db.execute(Statement::from_string(backend, sql)).await?;
        }
        Ok(Self { name, extra })
    }

    /// Writes `rows` (`columns` each), 1 000 per statement (fewer if the parameters would
    /// exceed SQLite's limit), as `INSERT … ON CONFLICT (conflict) DO UPDATE` of every other
    /// column, or a plain `INSERT` when `conflict` is empty. Returns the seconds it took.
    async fn write(
        &self,
        db: &DatabaseConnection,
        columns: &[&str],
        conflict: &[&str],
        rows: Vec<Vec<sea_orm::Value>>,
    ) -> anyhow::Result<f64> {
        let backend = db.get_database_backend();
        let per_statement = (30_000 / columns.len()).min(1000);
        let update: Vec<String> = columns
            .iter()
            .filter(|c| !conflict.contains(c))
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        let started = Instant::now();
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let mut sql = format!("INSERT INTO {} ({}) VALUES ", self.name, columns.join(", "));
            let mut values: Vec<sea_orm::Value> = Vec::with_capacity(per_statement * columns.len());
            for (r, row) in rows.by_ref().take(per_statement).enumerate() {
                if r > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for (c, v) in row.into_iter().enumerate() {
                    if c > 0 {
                        sql.push(',');
                    }
                    values.push(v);
                    match backend {
                        sea_orm::DatabaseBackend::Postgres => {
                            sql.push_str(&format!("${}", values.len()))
                        }
                        _ => sql.push('?'),
                    }
                }
                sql.push(')');
            }
            if !conflict.is_empty() {
                sql.push_str(&format!(
                    " ON CONFLICT ({}) DO UPDATE SET {}",
                    conflict.join(", "),
                    update.join(", ")
                ));
            }
            db.execute(Statement::from_sql_and_values(backend, &sql, values))
                .await?;
        }
        Ok(started.elapsed().as_secs_f64())
    }

    async fn drop(self, db: &DatabaseConnection) -> anyhow::Result<()> {
        let backend = db.get_database_backend();
        db.execute(Statement::from_string(
            backend,
            format!("DROP TABLE {}", self.name),
        ))
        .await?;
        for sql in self.extra {
            db.execute(Statement::from_string(backend, sql)).await?;
        }
        Ok(())
    }
}

/// Baseline A: the member rows alone (the profile columns and a version), into a bare
/// table keyed by (tenant, user). Members per second.
async fn raw_member_rows(
    db: &DatabaseConnection,
    tenant: &str,
    users: &[AuthUser],
) -> anyhow::Result<f64> {
    let table = Scratch::bare_members(db).await?;
    let rows = users
        .iter()
        .map(|u| {
            vec![
                tenant.into(),
                u.user_name.clone().into(),
                u.name.clone().into(),
                u.org_code.clone().into(),
                u.position.clone().into(),
                u.employee_code.clone().into(),
                u.employee_type.into(),
                u.mobile.clone().into(),
                u.email.clone().into(),
                u.work_place.clone().into(),
                1_i64.into(),
            ]
        })
        .collect();
    let secs = table
        .write(
            db,
            &[
                "tenant_id",
                "user_name",
                "name",
                "org_code",
                "position",
                "employee_code",
                "employee_type",
                "mobile",
                "email",
                "work_place",
                "version",
            ],
            &["tenant_id", "user_name"],
            rows,
        )
        .await?;
    table.drop(db).await?;
    Ok(users.len() as f64 / secs)
}

/// Baseline B: every row kitsync writes for these members — the member, its
/// authorisation and its journal row — into empty copies of the real tables (same keys and
/// indexes). Members per second.
async fn raw_same_rows(
    db: &DatabaseConnection,
    tenant: &str,
    users: &[AuthUser],
) -> anyhow::Result<f64> {
    let now = chrono::Utc::now().timestamp_millis();
    let members = Scratch::copy_of(db, "members").await?;
    let auths = Scratch::copy_of(db, "authorizations").await?;
    let journal = Scratch::copy_of(db, "journal").await?;
    let mut secs = 0.0;
    for chunk in users.chunks(500) {
        let member_rows = chunk
            .iter()
            .map(|u| {
                vec![
                    tenant.into(),
                    u.user_name.clone().into(),
                    u.name.clone().into(),
                    u.org_code.clone().into(),
                    u.position.clone().into(),
                    u.employee_code.clone().into(),
                    u.employee_type.into(),
                    u.mobile.clone().into(),
                    u.email.clone().into(),
                    u.work_place.clone().into(),
                    u.entry_date.clone().into(),
                    u.extension.clone().into(),
                    false.into(),
                    false.into(),
                    1_i64.into(),
                    7_i64.into(),
                    now.into(),
                ]
            })
            .collect();
        secs += members
            .write(
                db,
                &[
                    "tenant_id",
                    "user_name",
                    "name",
                    "org_code",
                    "position",
                    "employee_code",
                    "employee_type",
                    "mobile",
                    "email",
                    "work_place",
                    "entry_date",
                    "extension",
                    "test",
                    "deleted",
                    "version",
                    "fp",
                    "updated_at",
                ],
                &["tenant_id", "user_name"],
                member_rows,
            )
            .await?;
        let auth_rows = chunk
            .iter()
            .map(|u| {
                vec![
                    tenant.into(),
                    "bench-app".into(),
                    u.user_name.clone().into(),
                    u.role.as_str().into(),
                    u.enabled.into(),
                    false.into(),
                    false.into(),
                    1_i64.into(),
                    7_i64.into(),
                    now.into(),
                ]
            })
            .collect();
        secs += auths
            .write(
                db,
                &[
                    "tenant_id",
                    "app_id",
                    "user_name",
                    "role",
                    "enabled",
                    "test",
                    "deleted",
                    "version",
                    "fp",
                    "updated_at",
                ],
                &["tenant_id", "app_id", "user_name"],
                auth_rows,
            )
            .await?;
        let journal_rows = chunk
            .iter()
            .map(|u| {
                let data = serde_json::json!({
                    "userName": u.user_name, "appId": "bench-app",
                    "authorization": {"role": u.role.as_str(), "enabled": u.enabled},
                    "profile": {"name": u.name, "orgCode": u.org_code, "position": u.position,
                        "employeeCode": u.employee_code, "employeeType": u.employee_type,
                        "mobile": u.mobile, "email": u.email, "workPlace": u.work_place,
                        "entryDate": u.entry_date, "extension": u.extension},
                });
                vec![
                    tenant.into(),
                    "member".into(),
                    u.user_name.clone().into(),
                    "authorized".into(),
                    1_i64.into(),
                    data.to_string().into(),
                    false.into(),
                    now.into(),
                ]
            })
            .collect();
        secs += journal
            .write(
                db,
                &[
                    "tenant_id",
                    "entity",
                    "entity_key",
                    "action",
                    "version",
                    "data",
                    "test",
                    "applied_at",
                ],
                &[],
                journal_rows,
            )
            .await?;
    }
    for t in [members, auths, journal] {
        t.drop(db).await?;
    }
    Ok(users.len() as f64 / secs)
}
