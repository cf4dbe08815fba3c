//! `kitsync bench ingest`: `--concurrency` callers send signed authSync callbacks (~2 KiB) to
//! a real in-process ingress (HTTP → signature → nonce ledger → durable publish), next to a raw
//! handler (HMAC check, then publish-with-confirm or one committed row), the same after a
//! one-row nonce insert, and raw persistent publishes with confirms on the same broker at the
//! same concurrency (or, on the embedded queue, raw one-row committed inserts into the same
//! database).
use crate::{list, median, percentile, Mode, Service};
use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use kitsync_domain::KitTime;
use kitsync_queue::Queue;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

fn kit_now() -> String {
    KitTime::from_millis(chrono::Utc::now().timestamp_millis()).to_kit_string()
}

/// An authSync body granting `users` users (`user-{i}-{u}`) of `tenant` the app `bench-app`.
pub(crate) fn auth_body(tenant: &str, i: usize, users: usize) -> Vec<u8> {
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

pub(crate) async fn run<S: Service>(mut settings: S, a: IngestArgs) -> anyhow::Result<()> {
    let key = "bench-access-key";
    settings.kit_mut().access_keys = vec![secrecy::SecretString::from(key.to_owned())];
    let concurrency = a.concurrency.max(1);
    let db = settings.open_db().await?;

    // Raw baseline first, while the machine is quiet.
    let body_len = auth_body("t", 0, a.users).len();
    let handler_label = if settings.queue().amqp_url.is_some() {
        "persistent publish + confirm"
    } else {
        "one-row committed INSERT"
    };
    let (raw_label, raw_rate) = match &settings.queue().amqp_url {
        Some(url) => (
            "raw RabbitMQ persistent publish + confirm (quorum queue)",
            raw_amqp_publish(
                url,
                concurrency,
                a.requests,
                body_len,
                settings.queue().publish_channels,
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
    let running = settings.clone().start(Mode::Ingress).await?;
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
    if let Ok(q) = Queue::connect(settings.queue(), db.clone()).await {
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
        if settings.queue().amqp_url.is_some() { "RabbitMQ" } else { "embedded" }
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
        "  ratio to raw handler   {:>10.2}   (target ≥ 0.70, p99 < 50 ms)",
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

pub(crate) type HttpClient = hyper_util::client::legacy::Client<
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
    let seed = uuid::Uuid::new_v4().simple().to_string();
    let (uri, key, all) = (uri.to_owned(), key.to_owned(), Arc::clone(bodies));
    let build = move |i: usize| signed_request(&uri, &key, &format!("{seed}{i:016X}"), &all[i]);
    crate::callers(client, bodies.len(), concurrency, build, acknowledged).await
}

/// A Kit callback of `body` to `uri`, signed with `key` as the marketplace signs it, now.
pub(crate) fn signed_request(
    uri: &str,
    key: &str,
    nonce: &str,
    body: &Bytes,
) -> Option<hyper::Request<Full<Bytes>>> {
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    let sign = kitsync_domain::signing::sign(key.as_bytes(), nonce, &ts, body);
    hyper::Request::post(uri)
        .header("content-type", "application/json")
        .header("x-sign", sign)
        .header("x-nonce", nonce)
        .header("x-timestamp", ts)
        .body(Full::new(body.clone()))
        .ok()
}

/// The answer says `000000` (accepted, durably queued).
pub(crate) async fn acknowledged(res: hyper::Response<hyper::body::Incoming>) -> bool {
    match res.into_body().collect().await {
        Ok(b) => b.to_bytes().windows(8).any(|w| w == b"\"000000\""),
        Err(_) => false,
    }
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
/// With `NONCE` (the `/raw-nonce` route), plus the least a replay check must do: one committed
/// `INSERT … ON CONFLICT DO NOTHING` of the nonce per request, before queueing.
async fn raw_route<const NONCE: bool>(
    axum::extract::State(state): axum::extract::State<Arc<RawHandlerState>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> &'static str {
    raw_handle(&state, &headers, body, NONCE).await
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
pub(crate) struct RawHandler {
    pub(crate) uri: String,
    nonce_uri: String,
    name: String,
    state: Arc<RawHandlerState>,
    conn: Option<lapin::Connection>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RawHandler {
    /// Where `/raw` puts what it accepts: the quorum queue (RabbitMQ) or the table (embedded
    /// queue) of that name, with columns `id` and `body`.
    pub(crate) fn sink_name(&self) -> String {
        match self.state.sink {
            RawSink::Amqp { .. } => self.name.clone(),
            RawSink::Sql { .. } => self.name.replace('.', "_"),
        }
    }

    pub(crate) async fn start<S: Service>(
        settings: &S,
        db: &DatabaseConnection,
        key: &str,
    ) -> anyhow::Result<Self> {
        let name = format!("kitsync.bench.handler.{}", uuid::Uuid::new_v4().simple());
        let mut conn = None;
        let sink = match &settings.queue().amqp_url {
            Some(url) => {
                let c =
                    lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
                let mut channels = Vec::new();
                for _ in 0..settings.queue().publish_channels.max(1) {
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
            .route("/raw", axum::routing::post(raw_route::<false>))
            .route("/raw-nonce", axum::routing::post(raw_route::<true>))
            .with_state(Arc::clone(&state));
        let (base, stop, server) = crate::read::serve_on_loopback(router).await?;
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

    pub(crate) async fn stop(self, db: &DatabaseConnection) -> anyhow::Result<()> {
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
