//! `kitsync bench pipeline`: the whole path under sustained load. `--concurrency` callers
//! send signed authSync callbacks of `--members` users each (spread over `--tenants`
//! tenants, every user new) for `--seconds` to kitsync started in-process as `kitsync serve`
//! starts it (ingress, workers and the rest of `serve`), until the callers stop and the queue
//! is drained. The figure is end to end: callbacks accepted (`000000`) ÷ the time from the
//! first send until the last accepted callback was applied and acked (the workers'
//! `kitsync_applied_messages_total`, read from `/metrics` every 20 ms, reaching the accepted
//! count), and the same in members. Next to it, in the same run on the same database and
//! broker, the raw pipeline:
//!
//! - `bench ingest`'s raw handler: an axum route that checks the HMAC, then publishes the raw
//!   body persistently with a confirm to a quorum queue of its own (RabbitMQ), or inserts it
//!   as one committed row into a table of its own (embedded queue), and answers `000000`;
//! - a raw consumer, as many consume loops as `worker.concurrency` (kitsync's lanes), each taking up to
//!   `worker.batch_size` messages at a time (RabbitMQ: `queue.prefetch`, lingering
//!   `worker.linger_ms` for a batch to fill, then acking each after the commit; embedded:
//!   `DELETE … RETURNING` of the oldest rows inside the transaction itself, polling every
//!   `queue.poll_interval_ms` when there are none), parsing each body and writing, in one
//!   transaction per batch, the same rows `bench apply`'s "raw same rows" baseline writes (each
//!   user's member row, its authorisation and its journal row, batched `INSERT … ON
//!   CONFLICT` into empty copies of the real tables with the same keys and indexes).
//!
//! Queue lag is read from the rows themselves: for every accepted callback, from the moment
//! its caller got `000000` to the `updated_at` of its first user's member row, the clock the
//! applying transaction stamps when it starts (its own duration comes on top; the workers'
//! `kitsync_queue_lag_seconds` histogram, to the ack, is printed as its bucket bound).
//!
//! `--during-apply`: a 100 000-member tenant (`--callbacks` authSync of `--batch` users, as
//! `bench apply` queues them) is queued, then kitsync starts and its workers apply it while
//! `--senders` senders send small callbacks (`--sender-users` users) to its ingress until the
//! apply is done; their answer latency and the apply's members/s (÷ the time from start until
//! every callback's rows are committed, probed every 20 ms), next to the same apply in the
//! same run without senders (rounds alternate which comes first).
use crate::apply::{auth_commands, member_users, publish, SameRows};
use crate::ingest::{acknowledged, auth_body, signed_request, HttpClient, RawHandler};
use crate::{calls, list, median, percentile, percentile_ms, Call, Mode, Service};
use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt as _, Full};
use kitsync_domain::{AuthUser, Role};
use kitsync_sql::Sql;
use kitsync_store::tables::{MemberRow, Row as _};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, TransactionTrait};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct PipelineArgs {
    /// Concurrent callers.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Users per authSync callback. 8 by default: a toy pipeline measured alone on the
    /// 2-core benchmark machine moved about 10k calls/s and 82k members/s, 8 users a call.
    #[arg(long, default_value_t = 8)]
    members: usize,
    /// How long the callers send, per measurement.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Tenants the callbacks are spread over (callback i goes to tenant i mod tenants).
    #[arg(long, default_value_t = 64)]
    tenants: usize,
    /// Rounds, each the raw pipeline then kitsync (with `--during-apply`: the apply without
    /// and with senders, alternating which comes first); medians are compared.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Instead: small callbacks from `--senders` senders while the workers apply a
    /// `--callbacks` × `--batch` tenant, next to the same apply without senders.
    #[arg(long)]
    during_apply: bool,
    /// `--during-apply`: concurrent senders.
    #[arg(long, default_value_t = 16)]
    senders: usize,
    /// `--during-apply`: users per sender callback (5 ≈ 2 KiB).
    #[arg(long, default_value_t = 5)]
    sender_users: usize,
    /// `--during-apply`: authSync callbacks of the applied tenant.
    #[arg(long, default_value_t = 200)]
    callbacks: usize,
    /// `--during-apply`: users per callback of the applied tenant.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

const KEY: &str = "bench-access-key";

pub(crate) async fn run<S: Service>(mut settings: S, a: PipelineArgs) -> anyhow::Result<()> {
    settings.kit_mut().access_keys = vec![secrecy::SecretString::from(KEY.to_owned())];
    let db = settings.open_db().await?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(a.concurrency.max(a.senders).max(1))
        .build_http::<Full<Bytes>>();
    let result = if a.during_apply {
        during_apply(&settings, &db, &client, &a).await
    } else {
        pipeline(&settings, &db, &client, &a).await
    };
    let queue = settings.open_queue(&db).await;
    if let Ok(q) = queue {
        let _ = q.delete_topology().await;
        q.close().await;
    }
    result
}

fn backend_name(db: &DatabaseConnection) -> &'static str {
    match db.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => "PostgreSQL",
        _ => "SQLite",
    }
}

fn queue_name<S: Service>(settings: &S) -> &'static str {
    if settings.queue().amqp_url.is_some() {
        "RabbitMQ"
    } else {
        "embedded"
    }
}

/// The authSync bodies of one tenant: [`auth_body`] for a marker index, with the marker's
/// places found once; each callback's body is a copy with its own index written there, so
/// the callers spend the machine's cores on sending, not on building JSON.
struct Template {
    body: Vec<u8>,
    at: Vec<usize>,
}

/// The marker index: nine digits, as every written index (`FIRST + i`).
const MARK: usize = 987_654_321;
const FIRST: usize = 100_000_000;

impl Template {
    fn new(tenant: &str, users: usize) -> anyhow::Result<Self> {
        let body = auth_body(tenant, MARK, users);
        let mark = MARK.to_string();
        let at: Vec<usize> = body
            .windows(mark.len())
            .enumerate()
            .filter(|(_, w)| *w == mark.as_bytes())
            .map(|(i, _)| i)
            .collect();
        // userName, name, employeeCode and email of each user.
        anyhow::ensure!(
            at.len() == 4 * users,
            "the authSync body template has {} index places, expected {}",
            at.len(),
            4 * users
        );
        Ok(Self { body, at })
    }

    /// Callback `i`'s body: its users are `user-{FIRST + i}-{u}`.
    fn body(&self, i: usize) -> Bytes {
        let mut b = self.body.clone();
        let digits = format!("{:09}", FIRST + i);
        for &p in &self.at {
            b[p..p + digits.len()].copy_from_slice(digits.as_bytes());
        }
        Bytes::from(b)
    }
}

/// The item of a `user-{FIRST + i}-…` user name.
fn item_of(user_name: &str) -> Option<usize> {
    let n: usize = user_name
        .strip_prefix("user-")?
        .split('-')
        .next()?
        .parse()
        .ok()?;
    n.checked_sub(FIRST)
}

/// Wall-clock milliseconds of [`Instant`]s (the clock `updated_at` is stamped with).
#[derive(Clone, Copy)]
struct Clock {
    at: Instant,
    ms: i64,
}

impl Clock {
    fn now() -> Self {
        Self {
            at: Instant::now(),
            ms: chrono::Utc::now().timestamp_millis(),
        }
    }

    fn ms_at(self, t: Instant) -> i64 {
        let since = t.saturating_duration_since(self.at).as_millis();
        self.ms
            .saturating_add(i64::try_from(since).unwrap_or(i64::MAX))
    }
}

/// `concurrency` callers send callback after callback of `templates` (item i to tenant
/// i mod their number) to `uri` while `more` holds. Every exchange.
async fn send(
    client: &HttpClient,
    uri: &str,
    concurrency: usize,
    templates: &Arc<Vec<Template>>,
    more: impl Fn(usize) -> bool + Send + Sync + 'static,
) -> anyhow::Result<Vec<Call>> {
    let seed = uuid::Uuid::new_v4().simple().to_string();
    let (uri, templates) = (uri.to_owned(), Arc::clone(templates));
    let build = move |i: usize| {
        let body = templates[i % templates.len()].body(i);
        signed_request(&uri, KEY, &format!("{seed}{i:016X}"), &body)
    };
    calls(client, concurrency.max(1), more, build, acknowledged).await
}

/// What one side did in one measurement.
struct Measured {
    accepted: u64,
    errors: u64,
    /// From the first send to the last answer.
    sending: Duration,
    /// From the first send until every accepted callback was applied.
    drained: Duration,
    /// Answer latencies, sorted.
    latency: Vec<Duration>,
    /// Accept → applying transaction, per applied callback, sorted.
    lag: Vec<Duration>,
    /// Accepted callbacks whose rows were not found.
    missing: usize,
    /// kitsync only: the `kitsync_queue_lag_seconds` bucket every message fell in.
    lag_bucket: Option<f64>,
    dead_lettered: u64,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.accepted as f64 / self.drained.as_secs_f64()
    }
}

/// The sustained end-to-end runs, `--rounds` times the raw pipeline then kitsync.
async fn pipeline<S: Service>(
    settings: &S,
    db: &DatabaseConnection,
    client: &HttpClient,
    a: &PipelineArgs,
) -> anyhow::Result<()> {
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let tenants = a.tenants.max(1);
    let mut raw_runs = Vec::new();
    let mut kit_runs = Vec::new();
    let raw = RawHandler::start(settings, db, KEY).await?;
    let rows = Arc::new(SameRows::create(db).await?);
    let body_len = Template::new("t", a.members)?.body.len();
    for round in 0..a.rounds.max(1) {
        let names = |side: &str| -> Vec<String> {
            (0..tenants)
                .map(|t| format!("pipe-{run}-{round}-{side}-{t:03}"))
                .collect()
        };
        // The raw pipeline.
        let tenant_ids = names("raw");
        let bodies = templates(&tenant_ids, a.members)?;
        let consumer = RawConsumer::start(settings, db, raw.sink_name(), Arc::clone(&rows)).await?;
        let (applied, broken) = (Arc::clone(&consumer.applied), Arc::clone(&consumer.broken));
        let m = sustain(client, &raw.uri, a, &bodies, || {
            let n = applied.load(Ordering::Relaxed);
            let broken = broken.load(Ordering::Relaxed);
            async move {
                anyhow::ensure!(!broken, "the raw consumer stopped");
                Ok((n, 0, None))
            }
        })
        .await;
        consumer.stop().await?;
        let m = m?;
        raw_runs.push(with_lag(db, rows.members_table(), &tenant_ids, m).await?);

        // kitsync, started as `kitsync serve` starts it, for this measurement only.
        let tenant_ids = names("kit");
        let bodies = templates(&tenant_ids, a.members)?;
        let running = settings.clone().start(Mode::Both).await?;
        let addr = running.addr.context("kitsync did not report its address")?;
        let prefix = settings.kit().normalized_prefix();
        let uri = format!("http://{addr}{prefix}/produceAPI/v2/authSync");
        let metrics = format!("http://{addr}/metrics");
        let m = sustain(client, &uri, a, &bodies, || scrape(client, &metrics)).await;
        let _ = running.shutdown.send(true);
        let _ = running.done.await;
        kit_runs.push(with_lag(db, MemberRow::TABLE, &tenant_ids, m?).await?);
    }
    raw.stop(db).await?;
    if let Ok(rows) = Arc::try_unwrap(rows) {
        rows.drop(db).await?;
    }

    println!(
        "kitsync bench pipeline: {} callers for {} s, authSync of {} users ({body_len} B) over {tenants} tenants, \
         database {}, queue {}, {} lanes × batch {}, {} round(s)",
        a.concurrency,
        a.seconds,
        a.members,
        backend_name(db),
        queue_name(settings),
        settings.worker().concurrency,
        settings.worker().batch_size,
        a.rounds.max(1)
    );
    let kit = report("kitsync", &kit_runs, a.members);
    let raw = report("raw pipeline", &raw_runs, a.members);
    println!(
        "  ratio callbacks/s        {:>10.2}   (kitsync ÷ raw pipeline; target ≥ 0.60)",
        kit / raw
    );
    println!(
        "  ratio members/s          {:>10.2}   (the same: both apply every user of every accepted callback)",
        kit / raw
    );
    let errors: u64 = kit_runs.iter().map(|m| m.errors).sum();
    let missing: usize = kit_runs.iter().chain(&raw_runs).map(|m| m.missing).sum();
    anyhow::ensure!(
        missing == 0,
        "{missing} accepted callbacks were not found applied"
    );
    if errors > 0 {
        println!("  note: {errors} kitsync callbacks were not acknowledged with 000000");
    }
    Ok(())
}

fn templates(tenants: &[String], users: usize) -> anyhow::Result<Arc<Vec<Template>>> {
    Ok(Arc::new(
        tenants
            .iter()
            .map(|t| Template::new(t, users))
            .collect::<anyhow::Result<_>>()?,
    ))
}

/// Sends for `--seconds`, then waits until `applied` (acked messages, dead-lettered ones,
/// the lag histogram's bound) reaches what was accepted.
async fn sustain<P, F>(
    client: &HttpClient,
    uri: &str,
    a: &PipelineArgs,
    templates: &Arc<Vec<Template>>,
    applied: P,
) -> anyhow::Result<(Measured, Vec<Call>, Clock)>
where
    P: Fn() -> F,
    F: std::future::Future<Output = anyhow::Result<(u64, u64, Option<f64>)>>,
{
    let clock = Clock::now();
    let until = clock.at + Duration::from_secs(a.seconds.max(1));
    let calls = send(client, uri, a.concurrency, templates, move |_| {
        Instant::now() < until
    })
    .await?;
    let sending = clock.at.elapsed();
    let accepted = calls.iter().filter(|c| c.ok).count() as u64;
    let deadline = Instant::now() + Duration::from_secs(1800);
    let (dead_lettered, lag_bucket) = loop {
        let (acked, dead, bucket) = applied().await?;
        if acked + dead >= accepted {
            break (dead, bucket);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the queue was not drained within 30 minutes ({acked} of {accepted} applied)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let drained = clock.at.elapsed();
    let mut latency: Vec<Duration> = calls
        .iter()
        .filter(|c| c.answered.is_some())
        .map(|c| c.latency)
        .collect();
    latency.sort();
    let m = Measured {
        accepted,
        errors: calls.len() as u64 - accepted,
        sending,
        drained,
        latency,
        lag: Vec::new(),
        missing: 0,
        lag_bucket,
        dead_lettered,
    };
    Ok((m, calls, clock))
}

/// `m` with its queue lags, read from the member rows in `table` of `tenants`.
async fn with_lag(
    db: &DatabaseConnection,
    table: &str,
    tenants: &[String],
    (mut m, calls, clock): (Measured, Vec<Call>, Clock),
) -> anyhow::Result<Measured> {
    let accepted: HashMap<usize, i64> = calls
        .iter()
        .filter(|c| c.ok)
        .filter_map(|c| Some((c.item, clock.ms_at(c.answered?))))
        .collect();
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(&format!(
        "SELECT user_name, updated_at FROM {table} WHERE tenant_id IN "
    ))
    .bind_tuple(tenants.iter().cloned())
    .push(" AND user_name LIKE 'user-%-0'");
    let mut found = 0;
    for row in db.query_all(sql.build()).await? {
        let user: String = row.try_get_by_index(0)?;
        let at: i64 = row.try_get_by_index(1)?;
        if let Some(acc) = item_of(&user).and_then(|i| accepted.get(&i)) {
            found += 1;
            let ms = u64::try_from(at - acc).unwrap_or(0);
            m.lag.push(Duration::from_millis(ms));
        }
    }
    m.lag.sort();
    m.missing = accepted.len() - found;
    Ok(m)
}

/// Prints one side's lines; its median callbacks/s.
fn report(side: &str, runs: &[Measured], members: usize) -> f64 {
    let mut rates: Vec<f64> = runs.iter().map(Measured::rate).collect();
    let shown = list(&rates);
    let rate = median(&mut rates);
    let Some(mid) = runs
        .iter()
        .min_by(|x, y| (x.rate() - rate).abs().total_cmp(&(y.rate() - rate).abs()))
    else {
        return rate;
    };
    println!(
        "  {side:<24} {rate:>10.0} callbacks/s   (median; rounds {shown}; accepted ÷ time from the first send until the last accepted one was applied)"
    );
    println!("  {:<24} {:>10.0} members/s", "", rate * members as f64);
    println!(
        "  {:<24} {:>10} accepted in {:.1} s of sending ({:.0}/s), drained {:.1} s later; {} not acknowledged, {} dead-lettered",
        "",
        mid.accepted,
        mid.sending.as_secs_f64(),
        mid.accepted as f64 / mid.sending.as_secs_f64(),
        (mid.drained - mid.sending).as_secs_f64(),
        mid.errors,
        mid.dead_lettered
    );
    println!(
        "  {:<24} answer p50 {:.1} ms, p99 {:.1} ms",
        "",
        percentile_ms(&mid.latency, 0.5),
        percentile_ms(&mid.latency, 0.99)
    );
    let bucket = match mid.lag_bucket {
        Some(b) if b.is_finite() => {
            format!("; kitsync_queue_lag_seconds (to the ack): all ≤ {b} s")
        }
        Some(_) => "; kitsync_queue_lag_seconds (to the ack): some above its largest bound".into(),
        None => String::new(),
    };
    println!(
        "  {:<24} queue lag max {:.2} s, p99 {:.2} s, p50 {:.2} s (000000 → start of the applying transaction){bucket}",
        "",
        percentile(&mid.lag, 1.0).as_secs_f64(),
        percentile(&mid.lag, 0.99).as_secs_f64(),
        percentile(&mid.lag, 0.5).as_secs_f64(),
    );
    rate
}

/// kitsync's `/metrics`: messages applied and acked (every outcome), dead-lettered, and the
/// smallest `kitsync_queue_lag_seconds` bound every message so far fell under.
async fn scrape(client: &HttpClient, uri: &str) -> anyhow::Result<(u64, u64, Option<f64>)> {
    let req = hyper::Request::get(uri).body(Full::new(Bytes::new()))?;
    let res = client.request(req).await.context("GET /metrics")?;
    anyhow::ensure!(
        res.status().is_success(),
        "GET /metrics answered {} (the bench reads it without a token: unset metrics.bearer_token)",
        res.status()
    );
    let body = res.into_body().collect().await?.to_bytes();
    let (mut acked, mut dead, mut count) = (0.0, 0.0, 0.0);
    let mut buckets = Vec::new();
    for line in String::from_utf8_lossy(&body).lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        if series.starts_with("kitsync_applied_messages_total{") {
            acked += v;
        } else if series == "kitsync_apply_failures_total{kind=\"dead_lettered\"}" {
            dead += v;
        } else if series == "kitsync_queue_lag_seconds_count" {
            count = v;
        } else if let Some(le) = series
            .strip_prefix("kitsync_queue_lag_seconds_bucket{le=\"")
            .and_then(|r| r.strip_suffix("\"}"))
        {
            buckets.push((le.parse::<f64>().unwrap_or(f64::INFINITY), v));
        }
    }
    let bound = buckets
        .into_iter()
        .filter(|&(_, n)| count > 0.0 && n >= count)
        .map(|(le, _)| le)
        .min_by(f64::total_cmp);
    Ok((acked as u64, dead as u64, bound))
}

/// The raw consumer of the raw handler's queue or table (see the module's doc).
struct RawConsumer {
    /// Messages applied and committed.
    applied: Arc<AtomicU64>,
    /// A consume loop stopped with an error ([`RawConsumer::stop`] returns it).
    broken: Arc<AtomicBool>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: tokio::task::JoinSet<anyhow::Result<()>>,
    conn: Option<lapin::Connection>,
}

impl RawConsumer {
    async fn start<S: Service>(
        settings: &S,
        db: &DatabaseConnection,
        sink: String,
        rows: Arc<SameRows>,
    ) -> anyhow::Result<Self> {
        let applied = Arc::new(AtomicU64::new(0));
        let broken = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let w = settings.worker();
        let (batch, linger) = (w.batch_size.max(1), Duration::from_millis(w.linger_ms));
        let mut conn = None;
        match &settings.queue().amqp_url {
            Some(url) => {
                let c =
                    lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
                for i in 0..w.concurrency.max(1) {
                    let ch = c.create_channel().await?;
                    ch.basic_qos(
                        settings.queue().prefetch.max(1),
                        lapin::options::BasicQosOptions::default(),
                    )
                    .await?;
                    let consumer = ch
                        .basic_consume(
                            sink.as_str().into(),
                            format!("raw-consumer-{i}").as_str().into(),
                            lapin::options::BasicConsumeOptions::default(),
                            lapin::types::FieldTable::default(),
                        )
                        .await?;
                    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                    consumer.set_delegate(move |d: lapin::message::DeliveryResult| {
                        let tx = tx.clone();
                        async move {
                            if let Ok(Some(d)) = d {
                                let _ = tx.send(d);
                            }
                        }
                    });
                    let loop_ = AmqpLoop {
                        ch,
                        rx,
                        _consumer: consumer,
                        batch,
                        linger,
                    };
                    let (db, rows, applied, stopped, broken) = (
                        db.clone(),
                        Arc::clone(&rows),
                        Arc::clone(&applied),
                        stopped.clone(),
                        Arc::clone(&broken),
                    );
                    tasks.spawn(async move {
                        let r = loop_.run(&db, &rows, &applied, stopped).await;
                        broken.fetch_or(r.is_err(), Ordering::Relaxed);
                        r
                    });
                }
                conn = Some(c);
            }
            None => {
                let poll = Duration::from_millis(settings.queue().poll_interval_ms.max(1));
                let take = match db.get_database_backend() {
                    sea_orm::DatabaseBackend::Postgres => format!(
                        "DELETE FROM {sink} WHERE id IN (SELECT id FROM {sink} LIMIT {batch} FOR UPDATE SKIP LOCKED) RETURNING body"
                    ),
                    _ => format!(
                        "DELETE FROM {sink} WHERE rowid IN (SELECT rowid FROM {sink} ORDER BY rowid LIMIT {batch}) RETURNING body"
                    ),
                };
                for _ in 0..w.concurrency.max(1) {
                    let (db, rows, applied, stopped, take, broken) = (
                        db.clone(),
                        Arc::clone(&rows),
                        Arc::clone(&applied),
                        stopped.clone(),
                        take.clone(),
                        Arc::clone(&broken),
                    );
                    tasks.spawn(async move {
                        let r = table_loop(&db, &take, poll, &rows, &applied, stopped).await;
                        broken.fetch_or(r.is_err(), Ordering::Relaxed);
                        r
                    });
                }
            }
        }
        Ok(Self {
            applied,
            broken,
            stop,
            tasks,
            conn,
        })
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let mut first = Ok(());
        while let Some(r) = self.tasks.join_next().await {
            if let Err(e) = r.context("raw consumer task").and_then(|r| r) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        if let Some(c) = self.conn {
            c.close(200, "bench done".into()).await.ok();
        }
        first
    }
}

/// One raw consume loop on RabbitMQ: its channel and the deliveries its consumer hands over.
struct AmqpLoop {
    ch: lapin::Channel,
    rx: tokio::sync::mpsc::UnboundedReceiver<lapin::message::Delivery>,
    _consumer: lapin::Consumer,
    batch: usize,
    linger: Duration,
}

impl AmqpLoop {
    async fn run(
        mut self,
        db: &DatabaseConnection,
        rows: &SameRows,
        applied: &AtomicU64,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        loop {
            let first = tokio::select! {
                d = self.rx.recv() => d,
                _ = stop.wait_for(|s| *s) => None,
            };
            let Some(first) = first else {
                return Ok(());
            };
            let mut got = vec![first];
            // Take what is already there, then linger for the rest, as the worker does.
            let deadline = tokio::time::Instant::now() + self.linger;
            while got.len() < self.batch {
                match self.rx.try_recv() {
                    Ok(d) => got.push(d),
                    Err(_) => match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                        Ok(Some(d)) => got.push(d),
                        _ => break,
                    },
                }
            }
            let txn = db.begin().await?;
            apply_bodies(&txn, rows, got.iter().map(|d| d.data.as_slice())).await?;
            txn.commit().await?;
            // One ack per delivery: the consumer's delegate hands them over from tasks of
            // their own, so they may come out of tag order and a multiple-ack could cover a
            // delivery not yet applied.
            for d in &got {
                self.ch
                    .basic_ack(d.delivery_tag, lapin::options::BasicAckOptions::default())
                    .await?;
            }
            applied.fetch_add(got.len() as u64, Ordering::Relaxed);
        }
    }
}

/// One raw consume loop on the raw handler's table: take and apply in one transaction.
async fn table_loop(
    db: &DatabaseConnection,
    take: &str,
    poll: Duration,
    rows: &SameRows,
    applied: &AtomicU64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    while !*stop.borrow() {
        let txn = db.begin().await?;
        let taken = txn
            .query_all(Statement::from_string(txn.get_database_backend(), take))
            .await?;
        if taken.is_empty() {
            txn.rollback().await?;
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            continue;
        }
        let bodies = taken
            .iter()
            .map(|r| r.try_get_by_index::<String>(0))
            .collect::<Result<Vec<_>, _>>()?;
        apply_bodies(&txn, rows, bodies.iter().map(String::as_bytes)).await?;
        txn.commit().await?;
        applied.fetch_add(bodies.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// Parses authSync bodies and writes their users' rows ([`SameRows::write`]) on `txn`.
async fn apply_bodies<'a>(
    txn: &impl ConnectionTrait,
    rows: &SameRows,
    bodies: impl Iterator<Item = &'a [u8]>,
) -> anyhow::Result<()> {
    let parsed = bodies.map(users_of).collect::<anyhow::Result<Vec<_>>>()?;
    let mut users: Vec<(&str, &AuthUser)> = Vec::new();
    for (tenant, list) in &parsed {
        users.extend(list.iter().map(|u| (tenant.as_str(), u)));
    }
    rows.write(
        txn,
        users.iter().copied(),
        chrono::Utc::now().timestamp_millis(),
    )
    .await?;
    Ok(())
}

/// The tenant and users of an authSync body, as the raw consumer reads them.
fn users_of(body: &[u8]) -> anyhow::Result<(String, Vec<AuthUser>)> {
    let v: serde_json::Value = serde_json::from_slice(body)?;
    let text = |u: &serde_json::Value, k: &str| u[k].as_str().map(str::to_owned);
    let tenant = text(&v, "tenantId").context("no tenantId")?;
    let users = v["userList"]
        .as_array()
        .context("no userList")?
        .iter()
        .map(|u| {
            Ok(AuthUser {
                user_name: text(u, "userName").context("no userName")?,
                name: text(u, "name"),
                org_code: text(u, "orgCode"),
                position: text(u, "position"),
                employee_code: text(u, "employeeCode"),
                employee_type: u["employeeType"]
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok()),
                role: if u["role"] == "admin" {
                    Role::Admin
                } else {
                    Role::User
                },
                enabled: u["enable"] != "false",
                mobile: text(u, "mobile"),
                email: text(u, "email"),
                work_place: text(u, "workPlace"),
                entry_date: text(u, "entryDate"),
                extension: None,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((tenant, users))
}

/// One apply of `--during-apply`.
struct Apply {
    members_per_s: f64,
    latency: Vec<Duration>,
    sent: usize,
    errors: u64,
}

/// `--during-apply`: rounds of the apply without and with senders.
async fn during_apply<S: Service>(
    settings: &S,
    db: &DatabaseConnection,
    client: &HttpClient,
    a: &PipelineArgs,
) -> anyhow::Result<()> {
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let queue = settings.open_queue(db).await?;
    let (mut quiet, mut busy) = (Vec::new(), Vec::new());
    for round in 0..a.rounds.max(1) {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with_senders in order {
            let tenant = format!("apply-{run}-{round}-{}", u8::from(with_senders));
            let base = chrono::Utc::now().timestamp_millis();
            publish(
                &queue,
                auth_commands(&tenant, a.callbacks, a.batch, base),
                base,
            )
            .await?;
            let m = apply_once(settings, db, client, a, &tenant, with_senders).await?;
            if with_senders {
                busy.push(m);
            } else {
                quiet.push(m);
            }
        }
    }
    queue.close().await;

    let members = a.callbacks * a.batch;
    println!(
        "kitsync bench pipeline --during-apply: a {members}-member tenant ({} authSync × {} users) applied by kitsync \
         (as `serve`: {} lanes × batch {}), database {}, queue {}, {} round(s)",
        a.callbacks,
        a.batch,
        settings.worker().concurrency,
        settings.worker().batch_size,
        backend_name(db),
        queue_name(settings),
        a.rounds.max(1)
    );
    let mut alone: Vec<f64> = quiet.iter().map(|m| m.members_per_s).collect();
    let mut during: Vec<f64> = busy.iter().map(|m| m.members_per_s).collect();
    let (alone_list, during_list) = (list(&alone), list(&during));
    let (alone, during) = (median(&mut alone), median(&mut during));
    let mut p50s: Vec<f64> = busy
        .iter()
        .map(|m| percentile_ms(&m.latency, 0.5))
        .collect();
    let mut p99s: Vec<f64> = busy
        .iter()
        .map(|m| percentile_ms(&m.latency, 0.99))
        .collect();
    let p99_list = p99s
        .iter()
        .map(|v| format!("{v:.1}"))
        .collect::<Vec<_>>()
        .join(" / ");
    let sent: usize = busy.iter().map(|m| m.sent).sum();
    let errors: u64 = busy.iter().map(|m| m.errors).sum();
    println!(
        "  senders                  {} senders, callbacks of {} users: {sent} sent during the applies, {errors} not acknowledged with 000000",
        a.senders, a.sender_users
    );
    println!(
        "  sender answer p50 / p99  {:.1} ms / {:.1} ms   (medians; p99 of the rounds {p99_list} ms; target p99 < 50 ms)",
        median(&mut p50s),
        median(&mut p99s)
    );
    println!(
        "  apply with senders       {during:>10.0} members/s   (median; rounds {during_list})"
    );
    println!("  apply alone              {alone:>10.0} members/s   (median; rounds {alone_list}; same run, no senders)");
    println!(
        "  apply drop               {:>9.1} %   (target ≤ 20 %)",
        (1.0 - during / alone) * 100.0
    );
    Ok(())
}

/// Starts kitsync on the queued `tenant`, with senders or not, until the tenant is applied
/// (then, with senders, until their callbacks are applied too, so the next measurement starts
/// on an empty queue).
async fn apply_once<S: Service>(
    settings: &S,
    db: &DatabaseConnection,
    client: &HttpClient,
    a: &PipelineArgs,
    tenant: &str,
    with_senders: bool,
) -> anyhow::Result<Apply> {
    // The first user of each callback: found, its callback's transaction committed.
    let probes: Vec<String> = (0..a.callbacks)
        .filter_map(|i| member_users(i, a.batch).into_iter().next())
        .map(|u| u.user_name)
        .collect();
    let running = settings.clone().start(Mode::Both).await?;
    let started = Instant::now();
    let addr = running.addr.context("kitsync did not report its address")?;
    let prefix = settings.kit().normalized_prefix();
    let uri = format!("http://{addr}{prefix}/produceAPI/v2/authSync");
    let done = Arc::new(AtomicBool::new(false));
    let senders = with_senders.then(|| {
        let bodies = templates(&[format!("{tenant}-senders")], a.sender_users);
        let (client, uri, done, n) = (client.clone(), uri.clone(), Arc::clone(&done), a.senders);
        tokio::spawn(async move {
            send(&client, &uri, n, &bodies?, move |_| {
                !done.load(Ordering::Relaxed)
            })
            .await
        })
    });
    let deadline = Instant::now() + Duration::from_secs(1800);
    let result = async {
        while applied_callbacks(db, tenant, &probes).await? < probes.len() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the tenant was not applied within 30 minutes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(started.elapsed())
    }
    .await;
    done.store(true, Ordering::Relaxed);
    let calls = match senders {
        Some(s) => s.await.context("sender task")??,
        None => Vec::new(),
    };
    let accepted = calls.iter().filter(|c| c.ok).count() as u64;
    let metrics = format!("http://{addr}/metrics");
    let drained = async {
        loop {
            let (acked, dead, _) = scrape(client, &metrics).await?;
            if acked + dead >= probes.len() as u64 + accepted {
                return anyhow::Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the queue was not drained within 30 minutes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    .await;
    let _ = running.shutdown.send(true);
    let _ = running.done.await;
    let elapsed = result?;
    drained?;
    let mut latency: Vec<Duration> = calls
        .iter()
        .filter(|c| c.answered.is_some())
        .map(|c| c.latency)
        .collect();
    latency.sort();
    Ok(Apply {
        members_per_s: (a.callbacks * a.batch) as f64 / elapsed.as_secs_f64(),
        latency,
        sent: calls.len(),
        errors: calls.len() as u64 - accepted,
    })
}

/// How many of `probes` (one user of each callback) `tenant` has: callbacks applied.
async fn applied_callbacks(
    db: &DatabaseConnection,
    tenant: &str,
    probes: &[String],
) -> anyhow::Result<usize> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(&format!(
        "SELECT COUNT(*) FROM {} WHERE tenant_id = ",
        MemberRow::TABLE
    ))
    .bind(tenant)
    .push(" AND user_name IN ")
    .bind_tuple(probes.iter().cloned());
    let row = db
        .query_one(sql.build())
        .await?
        .context("COUNT(*) returned no row")?;
    let n: i64 = row.try_get_by_index(0)?;
    Ok(usize::try_from(n).unwrap_or(0))
}
