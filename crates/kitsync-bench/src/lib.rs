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
//! - `kitsync bench pipeline`: sustained end to end — `--concurrency` callers send signed
//!   authSync callbacks (`--members` users each) for `--seconds` to kitsync started as
//!   `kitsync serve` (ingress and workers), until they stop and the queue is drained;
//!   callbacks/s and members/s (÷ the time until drained), answer p50/p99, queue lag; next to
//!   a raw pipeline (`ingest`'s raw handler and a raw consumer writing `apply`'s same rows, 64
//!   messages per transaction). `--during-apply`: small callbacks from 16 senders while the
//!   workers apply a 100 000-member tenant, next to that apply alone (`pipeline.rs`).
//! - `read`, `stats` and `login` live in `read.rs`, `stats.rs` and `login.rs`
//!   (`login`: OpenID Connect logins through the Kit login bridge, 16 concurrent browsers
//!   against an emulated auth centre, next to the auth centre's own code exchange).
//!
//! All use the configured database and queue (`KITSYNC_DATABASE__URL`,
//! `KITSYNC_QUEUE__AMQP_URL`); with no configuration, a throwaway SQLite file.
//!
//! The benchmarks are not part of the production binary: `kitsync` links this crate only with
//! its `bench` feature (`cargo run --release --features bench -- bench ingest`). They measure
//! the real service in-process, which the binary lends them through [`Service`].
use anyhow::Context as _;
use clap::Subcommand;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use kitsync_ingress::KitSettings;
use kitsync_login::LoginSettings;
use kitsync_queue::{Queue, QueueSettings};
use kitsync_store::StoreSettings;
use kitsync_worker::WorkerSettings;
use sea_orm::DatabaseConnection;
use secrecy::SecretString;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod apply;
mod ingest;
mod login;
mod pipeline;
mod read;
mod stats;

pub use apply::ApplyArgs;
pub use ingest::IngestArgs;
pub use login::LoginArgs;
pub use pipeline::PipelineArgs;
pub use read::ReadArgs;
pub use stats::StatsArgs;

/// What the benchmarks need of the kitsync binary, which implements it for its `Settings`:
/// the configuration they read and adjust (a throwaway database and master key, an access key,
/// a loopback address, …) and the service they start in-process with it.
pub trait Service: Clone + Send + Sync + 'static {
    /// `database.url`.
    fn database_url(&self) -> &str;
    /// Sets `database.url`.
    fn set_database_url(&mut self, url: String);
    /// `database.url` without its password, for messages.
    fn redacted_database_url(&self) -> String;
    /// `[queue]`.
    fn queue(&self) -> &QueueSettings;
    /// `[queue]`, to adjust.
    fn queue_mut(&mut self) -> &mut QueueSettings;
    /// `[kit]`.
    fn kit(&self) -> &KitSettings;
    /// `[kit]`, to adjust.
    fn kit_mut(&mut self) -> &mut KitSettings;
    /// `[login]`, to adjust.
    fn login_mut(&mut self) -> &mut LoginSettings;
    /// `[store]`.
    fn store(&self) -> &StoreSettings;
    /// `[worker]`.
    fn worker(&self) -> &WorkerSettings;
    /// Sets `secrets.master_key`.
    fn set_master_key(&mut self, key: SecretString);
    /// Sets `secrets.master_key_path`.
    fn set_master_key_path(&mut self, path: PathBuf);
    /// Sets `http.addr`.
    fn set_http_addr(&mut self, addr: String);

    /// Opens the database and migrates it, as `kitsync migrate` does.
    fn open_db(&self) -> impl Future<Output = anyhow::Result<DatabaseConnection>> + Send;
    /// Opens the configured queue on `db`.
    fn open_queue(
        &self,
        db: &DatabaseConnection,
    ) -> impl Future<Output = anyhow::Result<Queue>> + Send;
    /// Starts kitsync's parts as the serving command of `mode` does, on a database
    /// [`Service::open_db`] already migrated; returns once they listen and consume.
    fn start(self, mode: Mode) -> impl Future<Output = anyhow::Result<Running>> + Send;
}

/// Which parts of kitsync a benchmark starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As `kitsync serve`: the ingress, the API, the login bridge and the worker.
    Both,
    /// As `kitsync ingress`: the Kit ingress only.
    Ingress,
}

/// kitsync running in-process.
pub struct Running {
    /// Where it listens (`http.addr` with the port it was given).
    pub addr: Option<std::net::SocketAddr>,
    /// Sending `true` stops it.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Ends once it stopped.
    pub done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Concurrent signed callbacks against a real ingress, next to raw publish-with-confirm.
    Ingest(IngestArgs),
    /// Applying a 100 000-member tenant, next to a raw batched upsert of the same rows.
    Apply(ApplyArgs),
    /// Sustained callbacks through the ingress and the workers until drained, next to a raw
    /// pipeline (raw handler + raw batched consumer); `--during-apply`: callback latency while
    /// a 100 000-member tenant is applied.
    Pipeline(PipelineArgs),
    /// Directory API reads on a 100 000-member tenant, next to a trivial route.
    Read(ReadArgs),
    /// The 30-day statistics over 100 000 members and 1 000 000 activity events, next to
    /// the equivalent single aggregate SQL query.
    Stats(StatsArgs),
    /// Kit account logins bridged to OpenID Connect through the whole flow (emulated auth
    /// centre on loopback), next to the auth centre's own token + userinfo exchange.
    Login(LoginArgs),
}

/// # Errors
/// The benchmark could not set up its database, queue or server.
pub async fn run<S: Service>(settings: S, command: BenchCmd) -> anyhow::Result<()> {
    let (settings, _tmp) = bench_settings(settings)?;
    match command {
        BenchCmd::Ingest(a) => ingest::run(settings, a).await,
        BenchCmd::Apply(a) => apply::run(settings, a).await,
        BenchCmd::Pipeline(a) => pipeline::run(settings, a).await,
        BenchCmd::Read(a) => read::run(settings, a).await,
        BenchCmd::Stats(a) => stats::run(settings, a).await,
        BenchCmd::Login(a) => login::run(settings, a).await,
    }
}

/// A throwaway SQLite database unless one is configured; a queue name of its own.
fn bench_settings<S: Service>(mut s: S) -> anyhow::Result<(S, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    if std::env::var("KITSYNC_DATABASE__URL").is_err() && s.database_url().starts_with("sqlite") {
        s.set_database_url(format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.sqlite").display()
        ));
    }
    // The benchmarks seal no real secret: never create or read the operator's master key.
    s.set_master_key_path(dir.path().join("master.key"));
    s.set_master_key(SecretString::from(
        kitsync_secrets::Sealer::generate_master_key()?,
    ));
    s.queue_mut().name = format!("kitsync.bench.{}", uuid::Uuid::new_v4().simple());
    s.set_http_addr("127.0.0.1:0".into());
    Ok((s, dir))
}

/// Runs `concurrency` callers on `client` that share the items `0..len`, each item taken once:
/// `build(i)` makes its request (`None` is an error, not timed); the exchange and `judge` of
/// its answer are timed (no answer, or `false`, is an error). The latencies, unsorted, and the
/// number of errors.
///
/// # Errors
/// A caller task panicked.
pub(crate) async fn callers<Body, B, J, F>(
    client: &Client<HttpConnector, Body>,
    len: usize,
    concurrency: usize,
    build: B,
    judge: J,
) -> anyhow::Result<(Vec<Duration>, u64)>
where
    Body: hyper::body::Body + Send + Unpin + 'static,
    Body::Data: Send,
    Body::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Fn(usize) -> Option<hyper::Request<Body>> + Send + Sync + 'static,
    J: Fn(hyper::Response<hyper::body::Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = bool> + Send,
{
    let calls = calls(client, concurrency, move |i| i < len, build, judge).await?;
    let errors = calls.iter().filter(|c| !c.ok).count() as u64;
    let lat = calls
        .into_iter()
        .filter(|c| c.answered.is_some())
        .map(|c| c.latency)
        .collect();
    Ok((lat, errors))
}

/// One exchange of [`calls`].
pub(crate) struct Call {
    /// Its item.
    pub(crate) item: usize,
    /// When its answer was judged; `None` when its request could not be built.
    pub(crate) answered: Option<Instant>,
    /// From sending to the judged answer.
    pub(crate) latency: Duration,
    /// Answered and judged good.
    pub(crate) ok: bool,
}

/// [`callers`] for as long as `more(i)` says the next item `i` is to be sent (a count, a
/// deadline, a flag): every exchange, unsorted.
///
/// # Errors
/// A caller task panicked.
pub(crate) async fn calls<Body, M, B, J, F>(
    client: &Client<HttpConnector, Body>,
    concurrency: usize,
    more: M,
    build: B,
    judge: J,
) -> anyhow::Result<Vec<Call>>
where
    Body: hyper::body::Body + Send + Unpin + 'static,
    Body::Data: Send,
    Body::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    M: Fn(usize) -> bool + Send + Sync + 'static,
    B: Fn(usize) -> Option<hyper::Request<Body>> + Send + Sync + 'static,
    J: Fn(hyper::Response<hyper::body::Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = bool> + Send,
{
    let (more, build, judge) = (Arc::new(more), Arc::new(build), Arc::new(judge));
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, more, build, judge, next) = (
            client.clone(),
            Arc::clone(&more),
            Arc::clone(&build),
            Arc::clone(&judge),
            Arc::clone(&next),
        );
        tasks.spawn(async move {
            let mut done = Vec::new();
            loop {
                let item = next.fetch_add(1, Ordering::Relaxed) as usize;
                if !more(item) {
                    return done;
                }
                let Some(req) = build(item) else {
                    done.push(Call {
                        item,
                        answered: None,
                        latency: Duration::ZERO,
                        ok: false,
                    });
                    continue;
                };
                let t = Instant::now();
                let ok = match client.request(req).await {
                    Ok(res) => judge(res).await,
                    Err(_) => false,
                };
                let answered = Instant::now();
                done.push(Call {
                    item,
                    answered: Some(answered),
                    latency: answered - t,
                    ok,
                });
            }
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.context("bench caller task")?);
    }
    Ok(all)
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
