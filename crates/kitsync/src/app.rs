//! Wiring: open the database and queue, build the ingress and workers, serve, shut down.
use crate::operations::{self, Operations};
use crate::settings::{redact_url, LogSettings, Settings};
use anyhow::Context as _;
use kitsync_ingress::Acceptor;
use kitsync_queue::Queue;
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
    // Colour only for a person at a terminal: files and log collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second init (tests, bench) is harmless: keep the first subscriber.
    let _ = if log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// What opening the database does with its schema. Only `kitsync migrate`, the serving
/// commands with `--migrate` (the default of `serve` on the embedded SQLite database) and
/// `bench` (which sets up its own databases) change it; every other command checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Apply the pending migrations, one process at a time (`migrations::migrate`'s lock).
    Migrate,
    /// Change nothing; refuse a schema that is not exactly this build's (pending migrations,
    /// or migrations of a newer kitsync).
    Check,
}

/// Opens the database (creating a missing SQLite file and its directory, private to kitsync's
/// user), then migrates it or checks its schema.
///
/// # Errors
/// The database is unreachable, a migration fails, or (checking) the schema is not this
/// build's.
pub async fn open_db_with(
    settings: &Settings,
    schema: Schema,
) -> anyhow::Result<DatabaseConnection> {
    let url = settings.database.url.trim();
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        // Private from the start: SQLite's -wal/-shm files take the database file's mode.
        crate::files::prepare_sqlite_file(path).with_context(|| {
            format!(
                "creating the database file {}",
                path.split('?').next().unwrap_or(path)
            )
        })?;
    }
    let db = migrations::connect(url, settings.database.max_connections)
        .await
        .with_context(|| format!("opening the database {}", redact_url(url)))?;
    match schema {
        Schema::Migrate => {
            migrations::migrate(&db, || {
                tracing::info!(
                    "waiting for the migration lock: another process is migrating this \
                     database (or, on SQLite, writing to it)"
                );
            })
            .await
            .with_context(|| format!("migrating the database {}", redact_url(url)))?;
            // Secrets sealed by an older kitsync are re-sealed bound to their rows. Only with
            // a master key that exists: a migration job without one must not invent one (the
            // workers' upkeep re-seals them then).
            match existing_sealer(settings)? {
                Some(sealer) => {
                    // The RSA key only decrypts stored ciphertexts here; a migration job
                    // without it (a Kubernetes init container mounts no key) still migrates,
                    // and the workers' upkeep decrypts them.
                    let rsa = decryptor(settings).unwrap_or_else(|e| {
                        tracing::info!(
                            error = %format!("{e:#}"),
                            "no usable RSA key here: stored RSA ciphertexts are decrypted by \
                             the workers"
                        );
                        None
                    });
                    reseal(&db, &sealer, rsa.as_deref()).await?;
                }
                None => tracing::info!(
                    "no master key here: secrets sealed by an older kitsync are re-sealed by \
                     the workers"
                ),
            }
        }
        Schema::Check => {
            let status = migrations::SchemaStatus::read(&db)
                .await
                .with_context(|| format!("reading the migrations of {}", redact_url(url)))?;
            // Says what differs and what to run.
            anyhow::ensure!(status.is_current(), "{status}");
        }
    }
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

/// What a new user can do next, once `serve` listens: at a terminal, a few lines to copy;
/// otherwise one log line (a log collector wants no prose).
fn next_steps(addr: std::net::SocketAddr, prefix: &str, no_key: bool, issuer: &str) {
    let base = format!("http://{addr}");
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        tracing::info!(callbacks = %format!("{base}{prefix}/produceAPI/v2/…"), dashboard = %format!("{base}/dashboard"), "ready");
        return;
    }
    // The program as it was started (`target/release/kitsync` under `cargo run`), so the
    // lines run as they are from the same directory.
    let bin = std::env::args().next().unwrap_or_else(|| "kitsync".into());
    let key = if no_key {
        "KITSYNC_KIT__ACCESS_KEYS=your-kit-access-key "
    } else {
        ""
    };
    eprintln!(
        "
kitsync is ready.
  The marketplace calls   {base}{prefix}/produceAPI/v2/{{tenantSync,applicationSync,authSync,singleOrgSync,allOrgSync}}
  Send one like it does   {key}{bin} send tenantSync --tenant t1 --name Acme --url {base}{prefix}
  Create an API token     {bin} token create --name me --scope directory:read,stats:read
  Read the directory      curl -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/tenants/t1
  Dashboard               {base}/dashboard
  Log users in (OIDC)     {bin} oidc-client add --app APP_ID --redirect-uri https://app.example.com/cb
                          issuer {issuer} (login.public_url: the address apps and browsers use)
"
    );
}

/// Re-seals stored secrets (`crate::reseal`), logging what it did.
async fn reseal(
    db: &DatabaseConnection,
    sealer: &Sealer,
    rsa: Option<&RsaDecryptor>,
) -> anyhow::Result<crate::reseal::Resealed> {
    let r = crate::reseal::reseal_secrets(db, sealer, rsa)
        .await
        .context("re-sealing stored secrets")?;
    if r.rewritten() > 0 {
        tracing::info!(
            legacy = r.legacy,
            from_previous_key = r.from_previous_key,
            decrypted = r.decrypted,
            "re-sealed stored secrets for their rows under the current master key"
        );
    }
    if r.unopenable > 0 {
        tracing::warn!(
            count = r.unopenable,
            "stored secrets open with no configured master key (see `kitsync reseal`)"
        );
    }
    Ok(r)
}

/// `kitsync reseal`: one pass now, and a report an operator can act on.
///
/// # Errors
/// No master key, the database, or values only a removed key opens.
pub async fn reseal_command(settings: &Settings) -> anyhow::Result<()> {
    let db = open_db_with(settings, Schema::Check).await?;
    let sealer = existing_sealer(settings)?.context(
        "no master key here (secrets.master_key or secrets.master_key_path): nothing can be re-sealed",
    )?;
    let rsa = decryptor(settings)?;
    let r = reseal(&db, &sealer, rsa.as_deref()).await?;
    println!(
        "re-sealed {} stored secrets: {} sealed by an older kitsync (v1), {} under a previous \
         master key, {} RSA ciphertexts stored decrypted",
        r.rewritten(),
        r.legacy,
        r.from_previous_key,
        r.decrypted
    );
    if r.undecryptable > 0 {
        println!(
            "{} stored RSA ciphertexts decrypt with no configured RSA key: configure the key \
             they were encrypted to (kit.previous_rsa_private_key_paths) and run this again",
            r.undecryptable
        );
    }
    if r.raced > 0 {
        println!(
            "{} rows changed while they were re-sealed: run this again",
            r.raced
        );
    }
    anyhow::ensure!(
        r.unopenable == 0,
        "{} stored secrets open with no configured master key (their rows are in the log \
         above): configure the key they were sealed with in secrets.previous_master_keys and \
         run this again",
        r.unopenable
    );
    if sealer.previous_keys() > 0 && r.raced == 0 {
        println!(
            "every stored secret is sealed under the current master key: once no process runs \
             with an older configuration and no queued or dead-lettered message predates the \
             rotation, the previous master keys can be removed"
        );
    }
    Ok(())
}

/// The configured master key, or the key file if it exists; `None` without creating one.
///
/// # Errors
/// The key file exists but cannot be read, or the key is empty.
pub fn existing_sealer(settings: &Settings) -> anyhow::Result<Option<Sealer>> {
    let configured = settings
        .secrets
        .master_key
        .as_ref()
        .is_some_and(|k| !k.expose_secret().trim().is_empty());
    if configured || settings.secrets.master_key_path.exists() {
        sealer(settings).map(Some)
    } else {
        Ok(None)
    }
}

fn is_sqlite(url: &str) -> bool {
    url.trim().starts_with("sqlite:")
}

/// The master key: configured, or (embedded database only) created once beside the database
/// and reused.
///
/// # Errors
/// The key file cannot be read or written, or the key is empty.
pub fn sealer(settings: &Settings) -> anyhow::Result<Sealer> {
    let key = match &settings.secrets.master_key {
        Some(k) if !k.expose_secret().trim().is_empty() => k.clone(),
        _ => {
            let path = &settings.secrets.master_key_path;
            match std::fs::read_to_string(path) {
                Ok(k) => {
                    crate::files::warn_if_exposed(path, "the master key file");
                    SecretString::from(k.trim().to_owned())
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // A key made here is this process's own: right beside an embedded
                    // database, wrong for a shared one, where every process must seal and
                    // open with the same key (an ingress's secrets would not open in a
                    // worker with another).
                    anyhow::ensure!(
                        is_sqlite(&settings.database.url),
                        "no master key: secrets.master_key is not set and {} does not exist. \
                         On a shared database every process must use the same master key, so \
                         kitsync does not create one: set KITSYNC_SECRETS__MASTER_KEY (the \
                         same for every process; `openssl rand -base64 32` makes one) or put \
                         it in that file",
                        path.display()
                    );
                    let k = Sealer::generate_master_key()?;
                    if let Some(parent) = path.parent() {
                        crate::files::create_private_dir_all(parent)?;
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
    let mut previous = settings.secrets.previous_master_keys.clone();
    for path in &settings.secrets.previous_master_key_paths {
        let k = std::fs::read_to_string(path)
            .with_context(|| format!("reading the previous master key {}", path.display()))?;
        crate::files::warn_if_exposed(path, "a previous master key file");
        previous.push(SecretString::from(k.trim().to_owned()));
    }
    Sealer::from_master_key(&key)?
        .with_previous(&previous)
        .context("secrets.previous_master_keys")
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

/// The plaintext `clientSecret` of an app from its sealed value: opened with the master key
/// (bound to the app's row), and — when it was stored as the marketplace's ciphertext because
/// no RSA key was configured then — decrypted with the RSA key configured now.
///
/// # Errors
/// No master key, a seal that does not open here, or a ciphertext no configured key decrypts.
pub fn reveal_client_secret(
    settings: &Settings,
    tenant: &str,
    app: &str,
    sealed: &str,
) -> anyhow::Result<SecretString> {
    let sealer = existing_sealer(settings)?.context(
        "no master key here (secrets.master_key or secrets.master_key_path): the secret cannot be opened",
    )?;
    let rsa = decryptor(settings)?;
    kitsync_secrets::reveal_client_secret(&sealer, rsa.as_deref(), tenant, app, sealed)
        .with_context(|| format!("the clientSecret of app {app} of tenant {tenant}"))
}

/// # Errors
/// The key file is unreadable or not a PKCS#8 RSA key.
pub fn decryptor(settings: &Settings) -> anyhow::Result<Option<Arc<RsaDecryptor>>> {
    let kit = &settings.kit;
    let Some(path) = &kit.rsa_private_key_path else {
        anyhow::ensure!(
            kit.previous_rsa_private_key_paths.is_empty(),
            "kit.previous_rsa_private_key_paths is set but kit.rsa_private_key_path is not: \
             configure the current key too"
        );
        return Ok(None);
    };
    let mut d = rsa_key(path, "the RSA private key")?;
    for previous in &kit.previous_rsa_private_key_paths {
        d = d.with_previous(rsa_key(previous, "a previous RSA private key")?);
    }
    Ok(Some(Arc::new(d)))
}

fn rsa_key(path: &std::path::Path, what: &str) -> anyhow::Result<RsaDecryptor> {
    let pem = std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))?;
    crate::files::warn_if_exposed(path, &format!("{what} file"));
    RsaDecryptor::from_pem(&pem).with_context(|| format!("loading {what} {}", path.display()))
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
    /// Where the HTTP server listens (read by the benchmarks, which bind port 0).
    #[cfg_attr(not(feature = "bench"), allow(dead_code))]
    pub addr: Option<std::net::SocketAddr>,
    pub shutdown: watch::Sender<bool>,
    pub done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts the process's parts and returns once they are listening/consuming.
///
/// # Errors
/// The database, queue, keys or listening address cannot be opened, or the schema is not
/// this build's and `schema` does not migrate it.
pub async fn start_with(settings: Settings, mode: Mode, schema: Schema) -> anyhow::Result<Running> {
    let db = open_db_with(&settings, schema).await?;
    let queue = open_queue(&settings, &db).await?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks: tokio::task::JoinSet<anyhow::Result<()>> = tokio::task::JoinSet::new();
    let mut addr = None;

    tracing::info!(
        database = %redact_url(&settings.database.url),
        queue = queue.kind().as_str(),
        mode = ?mode,
        "kitsync starting"
    );

    // One store (a pool and settings, cheap to clone) for every part of the process.
    let store = Store::new(db.clone(), settings.store.clone());
    let worker = (mode != Mode::Ingress)
        .then(|| Worker::new(store.clone(), queue.clone(), settings.worker.clone()));
    let mut ops = Operations::new(db.clone(), queue.clone(), store.clone(), &settings.metrics);
    if let Some(w) = &worker {
        ops = ops.with_worker(w.stats());
    }

    // The keys, read once: every part that seals or decrypts shares them.
    let sealer = sealer(&settings)?;
    let decryptor = decryptor(&settings)?;

    let mut acceptor = None;
    if mode != Mode::Worker {
        let fps = key_fingerprints(&settings);
        if fps.is_empty() {
            tracing::warn!("no Kit access key configured (KITSYNC_KIT__ACCESS_KEYS): every callback will be refused with 000001");
        } else {
            tracing::info!(count = fps.len(), fingerprints = ?fps, "Kit access keys configured (SHA-256 prefixes)");
        }
        match &decryptor {
            Some(d) => tracing::info!(bits = d.key_size_bits(), keys = d.key_count(), "RSA private key loaded for clientSecret (keys: the current one, then previous ones)"),
            None => tracing::warn!("no RSA private key (KITSYNC_KIT__RSA_PRIVATE_KEY_PATH): clientSecrets are stored sealed but still RSA-encrypted"),
        }
        let a = Arc::new(Acceptor::new(
            settings.kit.clone(),
            queue.clone(),
            decryptor.clone(),
            sealer.clone(),
        ));
        ops = ops.with_ingress(Arc::clone(a.metrics()));
        acceptor = Some(a);
    }
    let ops = Arc::new(ops);

    // The listeners, bound (and announced) first, then served together: what they serve and
    // its name in errors.
    let mut servers: Vec<(tokio::net::TcpListener, axum::Router, &str)> = Vec::new();
    if let Some(acceptor) = acceptor {
        let prefix = settings.kit.normalized_prefix();
        // Each part bounds its own bodies, concurrency and time, answering in its own terms
        // (the ingress `000005`, the API 413/503); the listener bounds connections and heads.
        let api = kitsync_api::router_with(
            store.clone(),
            settings.api.clone(),
            Some(queue.dead_letters()),
        );
        let listener = tokio::net::TcpListener::bind(&settings.http.addr)
            .await
            .with_context(|| format!("listening on {}", settings.http.addr))?;
        let local = listener.local_addr()?;
        let login = login_bridge(&settings, &store, local, &sealer, decryptor.clone()).await?;
        let issuer = login.issuer().to_owned();
        let router = kitsync_ingress::router(acceptor)
            .merge(api)
            .merge(kitsync_login::router(login))
            .merge(operations::routes(Arc::clone(&ops)));
        addr = Some(local);
        // Scripts and the end-to-end tests read the bound address from stdout.
        println!("listening on http://{local}");
        tracing::info!(addr = %local, callbacks = %format!("http://{local}{prefix}/produceAPI/v2/{{tenantSync,applicationSync,authSync,singleOrgSync,allOrgSync}}"), "listening");
        if mode == Mode::Both {
            next_steps(local, &prefix, settings.kit.access_keys.is_empty(), &issuer);
        }
        servers.push((listener, router, "HTTP server"));
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
        servers.push((listener, router, "metrics HTTP server"));
    }
    for (listener, router, what) in servers {
        let rx = shutdown_rx.clone();
        let http = settings.http.clone();
        tasks.spawn(async move {
            crate::http::serve(listener, router, &http, rx)
                .await
                .context(what)
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

        let (stats, rx) = (store.clone(), shutdown_rx.clone());
        tasks.spawn(async move {
            stats.maintain_stats(rx).await;
            Ok(())
        });

        let (db2, rx) = (db.clone(), shutdown_rx.clone());
        tasks.spawn(async move {
            prune_logins(db2, rx).await;
            Ok(())
        });

        // Messages sealed by an ingress of an older release may be applied after `migrate`
        // re-sealed the rows: the workers re-seal what such messages wrote.
        let (db2, upkeep_sealer, rx) = (db.clone(), sealer.clone(), shutdown_rx.clone());
        let upkeep_rsa = decryptor.clone();
        tasks.spawn(async move {
            reseal_periodically(db2, upkeep_sealer, upkeep_rsa, rx).await;
            Ok(())
        });

        if settings.webhooks.enabled {
            let dispatcher =
                Dispatcher::new(store.clone(), sealer.clone(), settings.webhooks.clone())
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

/// The Kit login bridge of this process: its issuer is `login.public_url`, or — for a local
/// trial — `http://` and the address just bound.
async fn login_bridge(
    settings: &Settings,
    store: &Store,
    local: std::net::SocketAddr,
    sealer: &Sealer,
    rsa: Option<Arc<RsaDecryptor>>,
) -> anyhow::Result<kitsync_login::Login> {
    let issuer = if settings.login.public_url.trim().is_empty() {
        let host = if local.ip().is_unspecified() {
            std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), local.port())
        } else {
            local
        };
        format!("http://{host}")
    } else {
        settings.login.public_url.clone()
    };
    let login = kitsync_login::Login::new(
        store.clone(),
        sealer.clone(),
        rsa,
        settings.login.clone(),
        &issuer,
    )
    .context("login.public_url")?;
    login
        .ensure_signing_key()
        .await
        .context("creating the first ID-token signing key")?;
    tracing::info!(issuer = %login.issuer(), kit_callback = %login.kit_callback_url(), "OpenID Connect login bridge ready");
    Ok(login)
}

/// Deletes ended login flows, codes, tokens and sessions every ten minutes (the first pass a
/// minute after start). Several workers may run it at once: the deletes are idempotent.
async fn prune_logins(db: DatabaseConnection, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut pause = Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            () = tokio::time::sleep(pause) => {}
        }
        match kitsync_login::prune(&db).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "pruned ended login rows"),
            Err(e) => tracing::warn!(error = %e, "pruning ended login rows failed; will retry"),
        }
        pause = Duration::from_secs(600);
    }
}

/// Re-seals stored secrets a minute after start, then hourly (see `crate::reseal`): values
/// written by messages an ingress sealed before a rotation (or by an older release) are
/// sealed again under the current key without an operator's step.
async fn reseal_periodically(
    db: DatabaseConnection,
    sealer: Sealer,
    rsa: Option<Arc<RsaDecryptor>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut pause = Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            () = tokio::time::sleep(pause) => {}
        }
        if let Err(e) = reseal(&db, &sealer, rsa.as_deref()).await {
            tracing::warn!(error = %format!("{e:#}"), "re-sealing secrets failed; will retry");
        }
        pause = Duration::from_secs(3600);
    }
}

/// Runs until SIGINT/SIGTERM, then stops taking requests, finishes in-flight work and exits.
///
/// # Errors
/// Startup failed, or a component stopped with an error.
pub async fn serve(settings: Settings, mode: Mode, schema: Schema) -> anyhow::Result<()> {
    // Registered before anything starts: a SIGTERM that arrives while the process is still
    // starting (an orchestrator stopping a pod that just came up) is a graceful stop too,
    // not the default action that kills the process.
    let signal = shutdown_signal()?;
    let running = start_with(settings, mode, schema).await?;
    let shutdown = running.shutdown.clone();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutdown requested: finishing in-flight work");
        let _ = shutdown.send(true);
    });
    let r = running.done.await.context("joining the components")?;
    tracing::info!("stopped");
    r
}

/// SIGINT or SIGTERM, with both handlers installed now.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
