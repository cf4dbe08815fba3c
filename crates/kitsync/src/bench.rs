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
//!
//! Both use the configured database and queue (`KITSYNC_DATABASE__URL`,
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
}

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// Concurrent callers.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Measured callbacks (after a warm-up of 10 %).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Users per authSync body (5 ≈ 2 KiB).
    #[arg(long, default_value_t = 5)]
    users: usize,
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// authSync callbacks of `--batch` users each.
    #[arg(long, default_value_t = 200)]
    callbacks: usize,
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
    }
}

/// A throwaway SQLite database unless one is configured; a queue name of its own.
fn bench_settings(mut s: Settings) -> anyhow::Result<(Settings, Option<tempfile::TempDir>)> {
    let mut tmp = None;
    if std::env::var("KITSYNC_DATABASE__URL").is_err() && s.database.url.starts_with("sqlite") {
        let dir = tempfile::tempdir()?;
        s.database.url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.sqlite").display()
        );
        s.secrets.master_key_path = dir.path().join("master.key");
        tmp = Some(dir);
    }
    s.queue.name = format!("kitsync.bench.{}", uuid::Uuid::new_v4().simple());
    s.http.addr = "127.0.0.1:0".into();
    Ok((s, tmp))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
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

    let running = app::start(settings.clone(), app::Mode::Ingress).await?;
    let addr = running
        .addr
        .context("the ingress did not report its address")?;
    let uri = format!("http://{addr}/produceAPI/v2/authSync");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http::<Full<Bytes>>();

    let warmup = (a.requests / 10).max(concurrency);
    let _ = drive(&client, &uri, key, concurrency, warmup, a.users).await?;
    let started = Instant::now();
    let (mut lat, errors) = drive(&client, &uri, key, concurrency, a.requests, a.users).await?;
    let elapsed = started.elapsed();
    lat.sort();
    let rate = a.requests as f64 / elapsed.as_secs_f64();
    let _ = running.shutdown.send(true);
    let _ = running.done.await;
    if let Ok(q) = Queue::connect(&settings.queue, db.clone()).await {
        let _ = q.delete_topology().await;
    }

    println!("kitsync bench ingest: {concurrency} concurrent callers, {} measured callbacks of {body_len} B, queue {}",
        a.requests, if settings.queue.amqp_url.is_some() { "RabbitMQ" } else { "embedded" });
    println!("  callbacks/s            {rate:>10.0}   (errors: {errors})");
    println!(
        "  latency p50 / p99      {:>7.1} ms / {:.1} ms",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    );
    println!("  baseline msgs/s        {raw_rate:>10.0}   ({raw_label}, same concurrency)");
    println!(
        "  ratio                  {:>10.2}   (target ≥ 0.60, p99 < 50 ms)",
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
    total: usize,
    users: usize,
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
        tasks.spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= total {
                    return lat;
                }
                let body = auth_body("bench-tenant", i, users);
                let nonce = format!("{seed}{i:016X}");
                let ts = chrono::Utc::now().timestamp_millis().to_string();
                let sign = kitsync_domain::signing::sign(key.as_bytes(), &nonce, &ts, &body);
                let req = hyper::Request::post(&uri)
                    .header("content-type", "application/json")
                    .header("x-sign", sign)
                    .header("x-nonce", nonce)
                    .header("x-timestamp", ts)
                    .body(Full::new(Bytes::from(body)));
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
    let mut all = Vec::with_capacity(total);
    while let Some(r) = tasks.join_next().await {
        all.extend(r.context("bench caller task")?);
    }
    Ok((all, errors.load(Ordering::Relaxed)))
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

    // Raw baseline: the same member rows, 1 000 per INSERT … ON CONFLICT, into a scratch table.
    let raw_rate = raw_member_upserts(&db, &tenant, a.callbacks, a.batch).await?;

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
    println!("  baseline rows/s        {raw_rate:>10.0}   (raw INSERT … ON CONFLICT, 1 000 rows per statement)");
    println!(
        "  ratio                  {:>10.2}   (target ≥ 0.50 on PostgreSQL)",
        rate / raw_rate
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

async fn raw_member_upserts(
    db: &DatabaseConnection,
    tenant: &str,
    callbacks: usize,
    batch: usize,
) -> anyhow::Result<f64> {
    let backend = db.get_database_backend();
    let table = format!("bench_members_{}", uuid::Uuid::new_v4().simple());
    db.execute(Statement::from_string(
        backend,
        format!(
            "CREATE TABLE {table} (tenant_id TEXT NOT NULL, user_name TEXT NOT NULL, name TEXT, org_code TEXT, \
             position TEXT, employee_code TEXT, employee_type INTEGER, mobile TEXT, email TEXT, work_place TEXT, \
             version BIGINT NOT NULL, PRIMARY KEY (tenant_id, user_name))"
        ),
    ))
    .await?;
    let users: Vec<AuthUser> = (0..callbacks)
        .flat_map(|i| member_users(i, batch))
        .collect();
    let started = Instant::now();
    for chunk in users.chunks(1000) {
        let mut sql = format!(
            "INSERT INTO {table} (tenant_id, user_name, name, org_code, position, employee_code, employee_type, mobile, email, work_place, version) VALUES "
        );
        let mut values: Vec<sea_orm::Value> = Vec::with_capacity(chunk.len() * 11);
        for (r, u) in chunk.iter().enumerate() {
            if r > 0 {
                sql.push(',');
            }
            sql.push('(');
            for c in 0..11 {
                if c > 0 {
                    sql.push(',');
                }
                match backend {
                    sea_orm::DatabaseBackend::Postgres => {
                        sql.push_str(&format!("${}", r * 11 + c + 1))
                    }
                    _ => sql.push('?'),
                }
            }
            sql.push(')');
            values.extend([
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
            ]);
        }
        sql.push_str(
            " ON CONFLICT (tenant_id, user_name) DO UPDATE SET name = excluded.name, org_code = excluded.org_code, \
             position = excluded.position, employee_code = excluded.employee_code, employee_type = excluded.employee_type, \
             mobile = excluded.mobile, email = excluded.email, work_place = excluded.work_place, version = excluded.version",
        );
        db.execute(Statement::from_sql_and_values(backend, &sql, values))
            .await?;
    }
    let rate = users.len() as f64 / started.elapsed().as_secs_f64();
    db.execute(Statement::from_string(
        backend,
        format!("DROP TABLE {table}"),
    ))
    .await?;
    Ok(rate)
}
