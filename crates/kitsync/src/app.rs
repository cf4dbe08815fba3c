//! Wiring: open the database and queue, build the ingress and workers, serve, shut down.
use crate::operations::{self, Operations};
use crate::settings::{redact_url, LogSettings, Settings};
use anyhow::Context as _;
use kitsync_ingress::Acceptor;
use kitsync_queue::{NonceLedger, Queue};
use kitsync_secrets::{RsaDecryptor, Sealer};
use kitsync_store::Store;
use kitsync_webhooks::Dispatcher;
use kitsync_worker::Worker;
use sea_orm::DatabaseConnection;
use secrecy::{ExposeSecret, SecretString};
use sha2::Digest;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Both,
    Ingress,
    Worker,
}

pub fn init_tracing(log: &LogSettings) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr; stdout carries only what scripts read (the `listening on` lines).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    // A second init (tests, bench) is harmless: keep the first subscriber.
    let _ = if log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Opens the database (creating the SQLite file's directory) and applies migrations.
///
/// # Errors
/// The database is unreachable or a migration fails.
pub async fn open_db(settings: &Settings) -> anyhow::Result<DatabaseConnection> {
    let url = settings.database.url.trim();
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = path.split('?').next().unwrap_or_default();
        if let Some(parent) = std::path::Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).with_context(|| {
                    format!("creating the database directory {}", parent.display())
                })?;
            }
        }
    }
    let db = migrations::connect_and_migrate(url, settings.database.max_connections)
        .await
        .with_context(|| format!("opening the database {}", redact_url(url)))?;
    warn_on_linguistic_collation(&db).await;
    Ok(db)
}

/// The directory API's `q` search is a prefix range on indexes, which assumes text sorts by
/// code point; on a PostgreSQL database with a linguistic collation it may miss rows (SCIM
/// filters compare by code point whatever the collation). Say so once at startup.
async fn warn_on_linguistic_collation(db: &DatabaseConnection) {
    use sea_orm::ConnectionTrait as _;
    if db.get_database_backend() != sea_orm::DatabaseBackend::Postgres {
        return;
    }
    let sql = "SELECT datcollate FROM pg_database WHERE datname = current_database()";
    let Ok(Some(row)) = db
        .query_one(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            sql,
        ))
        .await
    else {
        return;
    };
    let collate: String = row.try_get_by_index(0).unwrap_or_default();
    if !matches!(
        collate.as_str(),
        "C" | "POSIX" | "C.UTF-8" | "C.utf8" | "ucs_basic"
    ) {
        tracing::warn!(
            %collate,
            "the database sorts text by a linguistic collation: member name searches by \
             prefix may miss rows; create it with LC_COLLATE 'C.UTF-8' (README)"
        );
    }
}

/// # Errors
/// RabbitMQ is unreachable or its topology cannot be declared.
pub async fn open_queue(settings: &Settings, db: &DatabaseConnection) -> anyhow::Result<Queue> {
    Queue::connect(&settings.queue, db.clone())
        .await
        .with_context(|| match &settings.queue.amqp_url {
            Some(u) => format!("connecting to RabbitMQ at {}", redact_url(u)),
            None => "opening the embedded queue".into(),
        })
}

/// The master key: configured, or created once beside the database and reused.
///
/// # Errors
/// The key file cannot be read or written, or the key is empty.
pub fn sealer(settings: &Settings) -> anyhow::Result<Sealer> {
    let key = match &settings.secrets.master_key {
        Some(k) if !k.expose_secret().trim().is_empty() => k.clone(),
        _ => {
            let path = &settings.secrets.master_key_path;
            match std::fs::read_to_string(path) {
                Ok(k) => SecretString::from(k.trim().to_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let k = Sealer::generate_master_key()?;
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    write_private_file(path, &k).with_context(|| {
                        format!("writing a new master key to {}", path.display())
                    })?;
                    tracing::warn!(path = %path.display(), "no secrets.master_key configured: created one; back it up, sealed secrets need it");
                    SecretString::from(k)
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("reading the master key {}", path.display()))
                }
            }
        }
    };
    Ok(Sealer::from_master_key(&key)?)
}

fn write_private_file(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())
}

/// # Errors
/// The key file is unreadable or not a PKCS#8 RSA key.
pub fn decryptor(settings: &Settings) -> anyhow::Result<Option<Arc<RsaDecryptor>>> {
    let Some(path) = &settings.kit.rsa_private_key_path else {
        return Ok(None);
    };
    let pem = std::fs::read(path)
        .with_context(|| format!("reading the RSA private key {}", path.display()))?;
    let d = RsaDecryptor::from_pem(&pem)
        .with_context(|| format!("loading the RSA private key {}", path.display()))?;
    Ok(Some(Arc::new(d)))
}

/// Short, non-reversible fingerprints of the configured access keys, for the startup log.
fn key_fingerprints(settings: &Settings) -> Vec<String> {
    settings
        .kit
        .access_keys
        .iter()
        .map(|k| hex::encode(&sha2::Sha256::digest(k.expose_secret().as_bytes())[..4]))
        .collect()
}

/// Everything `serve`, `ingress` and `worker` run.
pub struct Running {
    pub addr: Option<std::net::SocketAddr>,
    pub shutdown: watch::Sender<bool>,
    pub done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts the process's parts and returns once they are listening/consuming.
///
/// # Errors
/// The database, queue, keys or listening address cannot be opened.
pub async fn start(settings: Settings, mode: Mode) -> anyhow::Result<Running> {
    let db = open_db(&settings).await?;
    let queue = open_queue(&settings, &db).await?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks: tokio::task::JoinSet<anyhow::Result<()>> = tokio::task::JoinSet::new();
    let mut addr = None;

    tracing::info!(
        database = %redact_url(&settings.database.url),
        queue = queue.kind(),
        mode = ?mode,
        "kitsync starting"
    );

    let worker = (mode != Mode::Ingress).then(|| {
        let store = Store::new(db.clone(), settings.store.clone());
        Worker::new(store, queue.clone(), settings.worker.clone())
    });
    let mut ops = Operations::new(
        db.clone(),
        queue.clone(),
        Store::new(db.clone(), settings.store.clone()),
        &settings.metrics,
    );
    if let Some(w) = &worker {
        ops = ops.with_worker(w.stats());
    }

    let mut acceptor = None;
    if mode != Mode::Worker {
        let sealer = sealer(&settings)?;
        let decryptor = decryptor(&settings)?;
        let fps = key_fingerprints(&settings);
        if fps.is_empty() {
            tracing::warn!("no Kit access key configured (KITSYNC_KIT__ACCESS_KEYS): every callback will be refused with 000001");
        } else {
            tracing::info!(count = fps.len(), fingerprints = ?fps, "Kit access keys configured (SHA-256 prefixes)");
        }
        match &decryptor {
            Some(d) => tracing::info!(bits = d.key_size_bits(), "RSA private key loaded for clientSecret"),
            None => tracing::warn!("no RSA private key (KITSYNC_KIT__RSA_PRIVATE_KEY_PATH): clientSecrets are stored sealed but still RSA-encrypted"),
        }
        let window = Duration::from_secs(settings.kit.timestamp_window_secs.max(1));
        let nonces = NonceLedger::new(db.clone(), window);
        let a = Arc::new(Acceptor::new(
            settings.kit.clone(),
            queue.clone(),
            nonces,
            decryptor,
            sealer,
        ));
        ops = ops.with_ingress(Arc::clone(a.metrics()));
        acceptor = Some(a);
    }
    let ops = Arc::new(ops);

    if let Some(acceptor) = acceptor {
        let prefix = settings.kit.normalized_prefix();
        let api = kitsync_api::router(Store::new(db.clone(), settings.store.clone()));
        let router = kitsync_ingress::router(acceptor)
            .merge(api)
            .merge(operations::routes(Arc::clone(&ops)))
            .layer(axum::extract::DefaultBodyLimit::disable());
        let listener = tokio::net::TcpListener::bind(&settings.http.addr)
            .await
            .with_context(|| format!("listening on {}", settings.http.addr))?;
        let local = listener.local_addr()?;
        addr = Some(local);
        // Scripts and the end-to-end tests read the bound address from stdout.
        println!("listening on http://{local}");
        tracing::info!(addr = %local, callbacks = %format!("http://{local}{prefix}/produceAPI/v2/{{tenantSync,applicationSync,authSync,singleOrgSync,allOrgSync}}"), "listening");
        let mut rx = shutdown_rx.clone();
        tasks.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
                .context("HTTP server")
        });
    }

    let extra = settings.metrics.addr.trim();
    if !extra.is_empty() {
        let listener = tokio::net::TcpListener::bind(extra)
            .await
            .with_context(|| format!("listening on {extra} (metrics.addr)"))?;
        let local = listener.local_addr()?;
        // A second stdout line, for scripts and tests that scrape a worker.
        println!("metrics listening on http://{local}");
        tracing::info!(addr = %local, "serving /healthz, /readyz and /metrics");
        let router = operations::routes(Arc::clone(&ops));
        let mut rx = shutdown_rx.clone();
        tasks.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
                .context("metrics HTTP server")
        });
    }

    if let Some(worker) = worker {
        let rx = shutdown_rx.clone();
        tracing::info!(
            concurrency = settings.worker.concurrency,
            batch = settings.worker.batch_size,
            "worker consuming"
        );
        tasks.spawn(async move { worker.run(rx).await.context("worker") });

        let store = Store::new(db.clone(), settings.store.clone());
        let rx = shutdown_rx.clone();
        tasks.spawn(async move {
            maintain_stats(store, rx).await;
            Ok(())
        });

        if settings.webhooks.enabled {
            let store = Store::new(db.clone(), settings.store.clone());
            let dispatcher = Dispatcher::new(store, sealer(&settings)?, settings.webhooks.clone())
                .context("starting the webhook dispatcher")?;
            let rx = shutdown_rx.clone();
            tracing::info!(
                poll_ms = settings.webhooks.poll_interval_ms,
                concurrency = settings.webhooks.concurrency,
                "webhook dispatcher running"
            );
            tasks.spawn(async move {
                dispatcher.run(rx).await;
                Ok(())
            });
        }
    }

    let done = tokio::spawn(async move {
        let mut first_err = None;
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %format!("{e:#}"), "component stopped with an error");
                    first_err.get_or_insert(e);
                }
                Err(e) => {
                    first_err.get_or_insert(anyhow::anyhow!("task failed: {e}"));
                }
            }
        }
        queue.close().await;
        db.close().await.ok();
        first_err.map_or(Ok(()), Err)
    });
    Ok(Running {
        addr,
        shutdown: shutdown_tx,
        done,
    })
}

/// Background upkeep of the statistics: reads new journal rows into their authorisation
/// history every 2 s (so a stats request has little to catch up), computes the missing
/// statistics windows of the last 31 days (so the presets' requests only read rows), and
/// deletes raw activity
/// events past `store.activity_retention_days` at start and hourly (the daily rollups stay).
/// Several processes may do both at once: the indexer locks its cursor, the delete is
/// idempotent.
async fn maintain_stats(store: Store, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let retention_ms = i64::from(store.settings().activity_retention_days) * kitsync_store::DAY_MS;
    let mut next_prune = tokio::time::Instant::now();
    let interval = std::time::Duration::from_secs(2);
    let mut warmed = None;
    loop {
        let started = tokio::time::Instant::now();
        if let Err(e) = store.catch_up_stats(20).await {
            tracing::warn!(error = %e, "indexing the statistics history failed; will retry");
        }
        // Keep the last 31 days' windows computed, so the presets only read. Under heavy
        // activity every tick recomputes the tenants that changed: the pause after a tick is
        // at least four times the tick, so this stays under a fifth of one core.
        // Skipped while nothing changed (read before the pass: a change during it is seen
        // by the next tick).
        let today = kitsync_store::utc8_day(chrono::Utc::now().timestamp_millis());
        let seen = store.stats_fingerprint().await.ok().map(|f| (today, f));
        if seen.is_none() || seen != warmed {
            match store.warm_stats(today).await {
                Ok(n) => {
                    warmed = seen;
                    if n > 0 {
                        tracing::debug!(tenant_days = n, "statistics windows computed");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "computing statistics windows failed; will retry");
                }
            }
        }
        let pause = interval.max(started.elapsed() * 4);
        if tokio::time::Instant::now() >= next_prune {
            next_prune += std::time::Duration::from_secs(3600);
            let cutoff = chrono::Utc::now().timestamp_millis() - retention_ms;
            match store.prune_activity(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "pruned raw activity events past retention"),
                Err(e) => tracing::warn!(error = %e, "pruning raw activity events failed"),
            }
        }
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Runs until SIGINT/SIGTERM, then stops taking requests, finishes in-flight work and exits.
///
/// # Errors
/// Startup failed, or a component stopped with an error.
pub async fn serve(settings: Settings, mode: Mode) -> anyhow::Result<()> {
    let running = start(settings, mode).await?;
    let shutdown = running.shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: finishing in-flight work");
        let _ = shutdown.send(true);
    });
    let r = running.done.await.context("joining the components")?;
    tracing::info!("stopped");
    r
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
