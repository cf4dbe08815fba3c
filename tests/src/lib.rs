//! End-to-end harness: the real `kitsync` binary as a subprocess, a fresh database per test
//! (SQLite, or PostgreSQL with `KITSYNC_TEST_DATABASE_URL`), the embedded queue or RabbitMQ
//! (`KITSYNC_TEST_AMQP_URL`), and a Kit client that signs callbacks like the marketplace.
//!
//! - [`Env`]: one test's world — database, working directory, queue settings (a unique queue
//!   name), access keys, master key — and the SQL/CLI helpers to observe it.
//! - [`Server`]: one `kitsync serve|ingress|worker` process; its stderr is kept and printed
//!   when the test fails; killed on drop.
//! - [`Kit`]: signs and sends callbacks, returns the [`Reply`] (result code, `Body-Sign`).
//! - [`payload`]: the five callback bodies.
//! - [`TcpProxy`]: a cuttable TCP forwarder (RabbitMQ outage without touching the broker).
//! - [`wait_until`]: polling with a deadline.
//! - [`browser`]: headless chromium and a reader of the DOM it dumps (the dashboard test).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failure is a panic

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kitsync_queue::{Queue, QueueSettings};
use kitsync_secrets::TestKeyPair;
use kitsync_store::{DirectoryState, Store, StoreSettings};
use migrations::testing::TestDb;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use std::future::Future;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use migrations::testing::amqp_url;

pub mod browser;
pub mod web;

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

static BIN: OnceLock<PathBuf> = OnceLock::new();

/// The `kitsync` executable, built once per test process with the cargo that runs the tests.
///
/// `kitsync` is a binary-only crate of another package, so `CARGO_BIN_EXE_kitsync` is not
/// available here: this runs `cargo build -p kitsync --bin kitsync` and reads the path from
/// the `compiler-artifact` message. `KITSYNC_TEST_BIN` names another one instead (a release
/// build, for `examples/console_timings.rs`).
///
/// # Panics
/// The build fails or reports no executable.
pub fn kitsync_bin() -> &'static Path {
    BIN.get_or_init(|| {
        // A binary built elsewhere (a release build, for measurements), when named.
        std::env::var_os("KITSYNC_TEST_BIN").map_or_else(build_kitsync, PathBuf::from)
    })
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

fn build_kitsync() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args([
        "build",
        "-p",
        "kitsync",
        "--bin",
        "kitsync",
        "--message-format=json-render-diagnostics",
    ]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .expect("running cargo build");
    assert!(out.status.success(), "cargo build -p kitsync failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "kitsync")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .expect("cargo build reported no kitsync executable")
}

// ---------------------------------------------------------------------------------------------
// One test's world
// ---------------------------------------------------------------------------------------------

/// Which callback, by its path segment.
pub const TENANT_SYNC: &str = "tenantSync";
pub const APPLICATION_SYNC: &str = "applicationSync";
pub const AUTH_SYNC: &str = "authSync";
pub const SINGLE_ORG_SYNC: &str = "singleOrgSync";
pub const ALL_ORG_SYNC: &str = "allOrgSync";
/// The user whose authorisation [`Env::install_poison_trigger`] refuses.
pub const POISON_USER: &str = "poison-user";

/// A test's database, working directory and configuration; servers started from it share
/// them. Change the public fields before starting servers.
pub struct Env {
    pub db: TestDb,
    pub store: Store,
    dir: tempfile::TempDir,
    /// Given to every process (`KITSYNC_QUEUE__*`). `amqp_url` is the real broker (or `None`
    /// for the embedded queue); `name` is unique to the test.
    pub queue: QueueSettings,
    /// Overrides `queue.amqp_url` for the processes only (e.g. a [`TcpProxy`]).
    pub server_amqp_url: Option<String>,
    /// `KITSYNC_KIT__ACCESS_KEYS`; the first one signs by default.
    pub access_keys: Vec<String>,
    /// `KITSYNC_SECRETS__MASTER_KEY`.
    pub master_key: String,
    /// `KITSYNC_KIT__RSA_PRIVATE_KEY_PATH`.
    pub rsa_key_path: Option<PathBuf>,
    /// `KITSYNC_LOG__FILTER`.
    pub log_filter: String,
    /// Further `KITSYNC_*` variables.
    pub extra_env: Vec<(String, String)>,
    test_queue: tokio::sync::OnceCell<Queue>,
}

impl Env {
    /// A fresh database and directory; `label` names the queue (`kitsync-e2e.LABEL.RANDOM`).
    ///
    /// # Panics
    /// The database cannot be created.
    pub async fn new(label: &str) -> Env {
        // Build (or find) the binary before anything else, off the async threads.
        tokio::task::spawn_blocking(kitsync_bin)
            .await
            .expect("building kitsync");
        let db = migrations::testing::fresh_db()
            .await
            .expect("creating the test database");
        let store = Store::new(db.conn.clone(), StoreSettings::default());
        let id = uuid::Uuid::new_v4().simple().to_string();
        let queue = QueueSettings {
            amqp_url: amqp_url(),
            name: format!("kitsync-e2e.{label}.{}", &id[..12]),
            ..QueueSettings::default()
        };
        let master = base64::engine::general_purpose::STANDARD
            .encode(uuid::Uuid::new_v4().as_bytes().repeat(2));
        Env {
            db,
            store,
            dir: tempfile::tempdir().expect("temp dir"),
            queue,
            server_amqp_url: None,
            access_keys: vec![format!("kit-key-{}", &id[..16])],
            master_key: master,
            rsa_key_path: None,
            log_filter: "info".into(),
            extra_env: Vec::new(),
            test_queue: tokio::sync::OnceCell::new(),
        }
    }

    /// Like [`Env::new`], on a fresh *empty* database: no tables, not even sea-orm's
    /// `seaql_migrations` (what `kitsync migrate` and the schema check see on a new install).
    ///
    /// # Panics
    /// The database cannot be created.
    pub async fn unmigrated(label: &str) -> Env {
        tokio::task::spawn_blocking(kitsync_bin)
            .await
            .expect("building kitsync");
        let db = migrations::testing::fresh_db_with(false)
            .await
            .expect("creating the test database");
        let store = Store::new(db.conn.clone(), StoreSettings::default());
        let id = uuid::Uuid::new_v4().simple().to_string();
        Env {
            db,
            store,
            dir: tempfile::tempdir().expect("temp dir"),
            queue: QueueSettings {
                amqp_url: amqp_url(),
                name: format!("kitsync-e2e.{label}.{}", &id[..12]),
                ..QueueSettings::default()
            },
            server_amqp_url: None,
            access_keys: vec![format!("kit-key-{}", &id[..16])],
            master_key: base64::engine::general_purpose::STANDARD
                .encode(uuid::Uuid::new_v4().as_bytes().repeat(2)),
            rsa_key_path: None,
            log_filter: "info".into(),
            extra_env: Vec::new(),
            test_queue: tokio::sync::OnceCell::new(),
        }
    }

    /// The names of the tables in the test's database (sorted), to see what a command
    /// created.
    ///
    /// # Panics
    /// The catalog cannot be read.
    pub async fn tables(&self) -> Vec<String> {
        let sql = if self.is_postgres() {
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() ORDER BY 1"
        } else {
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' ORDER BY 1"
        };
        self.strings(sql).await
    }

    /// True when the processes use PostgreSQL.
    #[must_use]
    pub fn is_postgres(&self) -> bool {
        self.db.is_postgres()
    }

    /// True when the processes use RabbitMQ.
    #[must_use]
    pub fn is_amqp(&self) -> bool {
        self.queue.amqp_url.is_some()
    }

    /// The processes' working directory (where `data/` would go).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The first access key (what [`Server::kit`] signs with).
    #[must_use]
    pub fn key(&self) -> &str {
        &self.access_keys[0]
    }

    /// Every variable a `kitsync` process of this test gets.
    #[must_use]
    pub fn process_env(&self) -> Vec<(String, String)> {
        let q = &self.queue;
        let mut v: Vec<(String, String)> = vec![
            ("KITSYNC_HTTP__ADDR".into(), "127.0.0.1:0".into()),
            ("KITSYNC_DATABASE__URL".into(), self.db.url.clone()),
            (
                "KITSYNC_KIT__ACCESS_KEYS".into(),
                self.access_keys.join(","),
            ),
            (
                "KITSYNC_SECRETS__MASTER_KEY".into(),
                self.master_key.clone(),
            ),
            ("KITSYNC_LOG__FILTER".into(), self.log_filter.clone()),
            ("KITSYNC_LOG__FORMAT".into(), "text".into()),
            ("KITSYNC_QUEUE__NAME".into(), q.name.clone()),
        ];
        let queue_numbers = [
            ("PUBLISH_CHANNELS", q.publish_channels.to_string()),
            ("PUBLISH_TIMEOUT_MS", q.publish_timeout_ms.to_string()),
            ("PREFETCH", q.prefetch.to_string()),
            ("MAX_ATTEMPTS", q.max_attempts.to_string()),
            ("RETRY_MIN_DELAY_MS", q.retry_min_delay_ms.to_string()),
            ("RETRY_MAX_DELAY_MS", q.retry_max_delay_ms.to_string()),
            ("LEASE_MS", q.lease_ms.to_string()),
            ("POLL_INTERVAL_MS", q.poll_interval_ms.to_string()),
            ("DELIVERY_LIMIT", q.delivery_limit.to_string()),
        ];
        v.extend(
            queue_numbers
                .into_iter()
                .map(|(name, n)| (format!("KITSYNC_QUEUE__{name}"), n)),
        );
        v.push(("NO_COLOR".into(), "1".into()));
        if let Some(url) = self.server_amqp_url.clone().or_else(|| q.amqp_url.clone()) {
            v.push(("KITSYNC_QUEUE__AMQP_URL".into(), url));
        }
        if let Some(p) = &self.rsa_key_path {
            v.push((
                "KITSYNC_KIT__RSA_PRIVATE_KEY_PATH".into(),
                p.display().to_string(),
            ));
        }
        v.extend(self.extra_env.iter().cloned());
        v
    }

    /// [`Env::process_env`] with `overrides` applied in order: `(name, Some(value))` sets or
    /// replaces a variable, `(name, None)` removes it. For processes configured from elsewhere
    /// (the deploy test takes `deploy/compose.yaml`'s settings) while keeping the test's own
    /// database, queue name and keys unless an override replaces them.
    #[must_use]
    pub fn process_env_with(
        &self,
        overrides: &[(String, Option<String>)],
    ) -> Vec<(String, String)> {
        let mut v = self.process_env();
        for (name, value) in overrides {
            v.retain(|(k, _)| k != name);
            if let Some(value) = value {
                v.push((name.clone(), value.clone()));
            }
        }
        v
    }

    /// `kitsync ARGS` with this test's environment (and nothing from the caller's
    /// `KITSYNC_*`/`RUST_LOG`), in the test's directory.
    #[must_use]
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_with(args, &[])
    }

    /// [`Env::command`] with [`Env::process_env_with`]`(overrides)`; a removed variable is
    /// not inherited from the test process either.
    #[must_use]
    pub fn command_with(&self, args: &[&str], overrides: &[(String, Option<String>)]) -> Command {
        let mut cmd = Command::new(kitsync_bin());
        for (k, _) in std::env::vars_os() {
            let name = k.to_string_lossy();
            if name.starts_with("KITSYNC_") || name == "RUST_LOG" {
                cmd.env_remove(&k);
            }
        }
        for (name, value) in overrides {
            if value.is_none() {
                cmd.env_remove(name);
            }
        }
        cmd.envs(self.process_env_with(overrides))
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a one-shot CLI command (`deadletters list`, …) to completion.
    ///
    /// # Panics
    /// The process cannot be started, or runs longer than 60 s.
    pub async fn cli(&self, args: &[&str]) -> Output {
        self.cli_with(args, &[]).await
    }

    /// [`Env::cli`] with [`Env::process_env_with`]`(overrides)`.
    ///
    /// # Panics
    /// The process cannot be started, or runs longer than 60 s.
    pub async fn cli_with(&self, args: &[&str], overrides: &[(String, Option<String>)]) -> Output {
        let mut cmd = self.command_with(args, overrides);
        let label = args.join(" ");
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::task::spawn_blocking(move || cmd.output()),
        )
        .await
        .unwrap_or_else(|_| panic!("`kitsync {label}` did not finish within 60 s"))
        .expect("joining the CLI")
        .expect("running kitsync");
        out
    }

    /// Adds `name=value` to [`Env::extra_env`] (for the processes started after).
    pub fn push_var(&mut self, name: &str, value: impl Into<String>) {
        self.extra_env.push((name.to_owned(), value.into()));
    }

    /// [`Env::cli`] for a command that must succeed.
    ///
    /// # Panics
    /// As [`Env::cli`]; the command fails (its status and output are in the message).
    pub async fn cli_ok(&self, args: &[&str]) -> Output {
        let out = self.cli(args).await;
        assert!(
            out.status.success(),
            "kitsync {}: {}",
            args.join(" "),
            explain(&out)
        );
        out
    }

    /// `kitsync token create --name NAME --scope SCOPES [--tenant TENANT]`: the printed token.
    ///
    /// # Panics
    /// As [`Env::cli_ok`].
    pub async fn create_token(&self, name: &str, scopes: &str, tenant: Option<&str>) -> String {
        let mut args = vec!["token", "create", "--name", name, "--scope", scopes];
        if let Some(t) = tenant {
            args.extend(["--tenant", t]);
        }
        let out = self.cli_ok(&args).await;
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// A fresh ISV key pair for `clientSecret` encryption: its private half is written to the
    /// test's directory and becomes [`Env::rsa_key_path`]; the pair and its public PEM's path.
    ///
    /// # Panics
    /// The key cannot be generated or written.
    pub fn isv_key_pair(&mut self) -> (TestKeyPair, PathBuf) {
        let kp = TestKeyPair::generate_3072().unwrap();
        let private = self.dir().join("isv-private.pem");
        let public = self.dir().join("isv-public.pem");
        std::fs::write(&private, kp.private_pem().unwrap()).unwrap();
        std::fs::write(&public, kp.public_pem()).unwrap();
        self.rsa_key_path = Some(private);
        (kp, public)
    }

    /// Starts `kitsync MODE` (`serve`, `ingress` or `worker`) and waits until it is ready:
    /// the `listening on http://…` line for `serve`/`ingress`, the `worker consuming` log
    /// line for `serve`/`worker`.
    ///
    /// # Panics
    /// The process exits or is not ready within 60 s (its stderr is in the message).
    pub async fn start(&self, mode: &str) -> Server {
        Server::start(self, &[mode], &[]).await
    }

    /// [`Env::start`] for `kitsync ARGS` — `ARGS[0]` is `serve`, `ingress` or `worker`, the
    /// rest its flags (`--no-migrate`) — with [`Env::process_env_with`]`(overrides)`. The
    /// logs may be text or JSON (`KITSYNC_LOG__FORMAT`); the process must still run on the
    /// test's database and queue.
    ///
    /// # Panics
    /// As [`Env::start`]; `args` is empty.
    pub async fn start_with(
        &self,
        args: &[&str],
        overrides: &[(String, Option<String>)],
    ) -> Server {
        Server::start(self, args, overrides).await
    }

    /// The database connection the test observes with.
    #[must_use]
    pub fn conn(&self) -> &DatabaseConnection {
        &self.db.conn
    }

    /// Runs `sql` (DDL, DML) on the test's database.
    ///
    /// # Panics
    /// The statement fails.
    pub async fn exec(&self, sql: &str) {
        self.db
            .conn
            .execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A trigger refusing every authorisation of [`POISON_USER`]: a callback granting it
    /// fails to apply, retries and ends dead-lettered (until [`Env::drop_poison_trigger`]).
    ///
    /// # Panics
    /// As [`Env::exec`].
    pub async fn install_poison_trigger(&self) {
        if self.is_postgres() {
            self.exec(&format!(
                "CREATE FUNCTION e2e_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF NEW.user_name = '{POISON_USER}' THEN \
                 RAISE EXCEPTION 'e2e poison: insert refused by trigger'; END IF; RETURN NEW; END $$"
            ))
            .await;
            self.exec(
                "CREATE TRIGGER e2e_poison BEFORE INSERT ON authorizations \
                 FOR EACH ROW EXECUTE FUNCTION e2e_poison()",
            )
            .await;
        } else {
            self.exec(&format!(
                "CREATE TRIGGER e2e_poison BEFORE INSERT ON authorizations FOR EACH ROW \
                 WHEN NEW.user_name = '{POISON_USER}' \
                 BEGIN SELECT RAISE(ABORT, 'e2e poison: insert refused by trigger'); END"
            ))
            .await;
        }
    }

    /// Removes [`Env::install_poison_trigger`]'s trigger.
    ///
    /// # Panics
    /// As [`Env::exec`].
    pub async fn drop_poison_trigger(&self) {
        if self.is_postgres() {
            self.exec("DROP TRIGGER e2e_poison ON authorizations").await;
            self.exec("DROP FUNCTION e2e_poison()").await;
        } else {
            self.exec("DROP TRIGGER e2e_poison").await;
        }
    }

    /// The first column of the first row of `sql`, as an integer (`COUNT(*)` and the like).
    ///
    /// # Panics
    /// The query fails or returns no row.
    pub async fn scalar(&self, sql: &str) -> i64 {
        let backend = self.db.conn.get_database_backend();
        let row = self
            .db
            .conn
            .query_one(Statement::from_string(backend, sql.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .unwrap_or_else(|| panic!("{sql}: no row"));
        row.try_get_by_index::<i64>(0)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The first column of every row of `sql`, as text.
    ///
    /// # Panics
    /// The query fails or the column is not text.
    pub async fn strings(&self, sql: &str) -> Vec<String> {
        let backend = self.db.conn.get_database_backend();
        self.db
            .conn
            .query_all(Statement::from_string(backend, sql.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .into_iter()
            .map(|r| {
                r.try_get_by_index::<String>(0)
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
            })
            .collect()
    }

    /// The live directory of a tenant.
    ///
    /// # Panics
    /// The database fails.
    pub async fn snapshot(&self, tenant: &str) -> DirectoryState {
        self.store.snapshot(tenant).await.expect("snapshot")
    }

    /// Live (non-deleted) authorisations in the whole database.
    pub async fn live_authorizations(&self) -> i64 {
        self.scalar("SELECT COUNT(*) FROM authorizations WHERE deleted = FALSE")
            .await
    }

    /// A queue handle of the test's own, with the processes' settings (the real broker).
    ///
    /// # Panics
    /// The queue cannot be opened.
    pub async fn test_queue(&self) -> &Queue {
        self.test_queue
            .get_or_init(|| async {
                Queue::connect(&self.queue, self.db.conn.clone())
                    .await
                    .expect("opening the test's queue handle")
            })
            .await
    }

    /// Messages still waiting in the intake: every row of `queue_messages` (embedded; ready,
    /// leased or delayed), or the ready messages of the main RabbitMQ queue.
    ///
    /// # Panics
    /// The queue cannot be read.
    pub async fn queued(&self) -> u64 {
        if self.is_amqp() {
            self.test_queue().await.depth().await.expect("queue depth")
        } else {
            u64::try_from(self.scalar("SELECT COUNT(*) FROM queue_messages").await).unwrap_or(0)
        }
    }

    /// Drops what the test created outside its temp directories — the PostgreSQL database,
    /// the RabbitMQ queues — off the async threads. Dropping an [`Env`] does the same (also
    /// when a test panics); stop the servers first.
    pub async fn finish(self) {
        tokio::task::spawn_blocking(move || drop(self))
            .await
            .expect("cleaning up");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let pg = self.is_postgres().then(|| self.db.url.clone());
        let queue = self.queue.amqp_url.is_some().then(|| self.queue.clone());
        if pg.is_none() && queue.is_none() {
            return; // SQLite: the temp directories go with the fields.
        }
        let db_url = self.db.url.clone();
        // A runtime of its own on a thread of its own: this may run inside the test's runtime,
        // whose connections must not be driven from here.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Some(settings) = queue {
                    if let Ok(db) = migrations::connect(&db_url, 1).await {
                        if let Ok(Queue::Amqp(q)) = Queue::connect(&settings, db).await {
                            let _ = q.delete_topology().await;
                            q.close().await;
                        }
                    }
                }
                let admin = migrations::testing::postgres_url();
                if let (Some(url), Some(admin)) = (pg, admin) {
                    let name = url
                        .split('?')
                        .next()
                        .and_then(|u| u.rsplit('/').next())
                        .unwrap_or_default()
                        .to_owned();
                    if name.starts_with("kitsync_t_") {
                        if let Ok(conn) = migrations::connect(&admin, 1).await {
                            let _ = conn
                                .execute_unprepared(&format!(
                                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                                ))
                                .await;
                        }
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

// ---------------------------------------------------------------------------------------------
// A kitsync process
// ---------------------------------------------------------------------------------------------

enum Event {
    Starting(String),
    Listening(SocketAddr),
    MetricsListening(SocketAddr),
    WorkerReady,
}

/// A running `kitsync` process. Killed (SIGKILL) on drop; its stderr is printed when the
/// test is failing.
pub struct Server {
    pub mode: String,
    pub addr: Option<SocketAddr>,
    /// The `metrics.addr` listener, when `KITSYNC_METRICS__ADDR` was given.
    pub metrics_addr: Option<SocketAddr>,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    key: String,
}

impl Server {
    async fn start(env: &Env, args: &[&str], overrides: &[(String, Option<String>)]) -> Server {
        let mode = *args.first().expect("kitsync needs a subcommand");
        let mut cmd = env.command_with(args, overrides);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning kitsync");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        {
            let log = Arc::clone(&log);
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(addr) = line
                        .strip_prefix("listening on http://")
                        .and_then(|a| a.trim().parse().ok())
                    {
                        let _ = tx.send(Event::Listening(addr));
                    }
                    if let Some(addr) = line
                        .strip_prefix("metrics listening on http://")
                        .and_then(|a| a.trim().parse().ok())
                    {
                        let _ = tx.send(Event::MetricsListening(addr));
                    }
                    push_line(&log, "stdout", &line);
                }
            });
        }
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("kitsync starting") {
                        let _ = tx.send(Event::Starting(line.clone()));
                    }
                    if line.contains("worker consuming") {
                        let _ = tx.send(Event::WorkerReady);
                    }
                    push_line(&log, "stderr", &line);
                }
            });
        }
        let mut server = Server {
            mode: mode.to_owned(),
            addr: None,
            metrics_addr: None,
            child: Some(child),
            log,
            key: env.key().to_owned(),
        };
        let wants_addr = mode != "worker";
        let wants_worker = mode != "ingress";
        let wants_metrics = env
            .process_env_with(overrides)
            .iter()
            .any(|(k, v)| k == "KITSYNC_METRICS__ADDR" && !v.trim().is_empty());
        let mut worker_ready = false;
        let mut starting = None;
        let (started, within) = (Instant::now(), Duration::from_secs(60));
        loop {
            while let Ok(ev) = rx.try_recv() {
                match ev {
                    Event::Starting(line) => starting = Some(line),
                    Event::Listening(a) => server.addr = Some(a),
                    Event::MetricsListening(a) => server.metrics_addr = Some(a),
                    Event::WorkerReady => worker_ready = true,
                }
            }
            if let (Some(line), true, true, true) = (
                &starting,
                !wants_addr || server.addr.is_some(),
                !wants_worker || worker_ready,
                !wants_metrics || server.metrics_addr.is_some(),
            ) {
                // The environment decides the backends: make sure the process uses them.
                let queue = if env.is_amqp() { "amqp" } else { "embedded" };
                let database = if env.is_postgres() {
                    "postgres://"
                } else {
                    "sqlite:"
                };
                // The `kitsync starting` line, as text (`queue="amqp" database=postgres://…`)
                // or as JSON (`"queue":"amqp"`, `"database":"postgres://…"`).
                let on_queue = line.contains(&format!("queue=\"{queue}\""))
                    || line.contains(&format!("\"queue\":\"{queue}\""));
                let on_database = line.contains(&format!("database={database}"))
                    || line.contains(&format!("\"database\":\"{database}"));
                assert!(
                    on_queue && on_database,
                    "kitsync {mode} should run on {database} with the {queue} queue:\n{}",
                    server.logs()
                );
                return server;
            }
            let exited = server.try_wait();
            startup_pause(&format!("kitsync {mode}"), exited, started, within, || {
                server.logs()
            })
            .await;
        }
    }

    /// The process id.
    ///
    /// # Panics
    /// The process was already reaped.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("process running").id()
    }

    /// Everything the process wrote so far (stdout and stderr lines, tagged).
    #[must_use]
    pub fn logs(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A Kit client for this server, signing with the environment's first access key.
    ///
    /// # Panics
    /// The server does not listen (a worker).
    #[must_use]
    pub fn kit(&self) -> Kit {
        Kit::new(
            self.addr.expect("this server has no HTTP listener"),
            &self.key,
        )
    }

    /// A client of the `metrics.addr` listener (for its plain `api` GETs).
    ///
    /// # Panics
    /// No `KITSYNC_METRICS__ADDR` was given.
    #[must_use]
    pub fn metrics_client(&self) -> Kit {
        Kit::new(
            self.metrics_addr
                .expect("this server has no metrics listener (KITSYNC_METRICS__ADDR)"),
            &self.key,
        )
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("waiting for kitsync"))
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL on Unix
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits up to `within` for the process to exit and returns its status.
    ///
    /// # Panics
    /// The process does not exit in time (it is then killed).
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        let pid = self.pid();
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("running kill -TERM");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                let logs = self.logs();
                self.kill9();
                panic!(
                    "kitsync {} did not exit within {within:?} of SIGTERM:\n{logs}",
                    self.mode
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn push_line(log: &Mutex<String>, stream: &str, line: &str) {
    let mut l = log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    l.push_str(stream);
    l.push_str("| ");
    l.push_str(line);
    l.push('\n');
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            let tail = &lines[lines.len().saturating_sub(200)..];
            eprintln!(
                "----- kitsync {} output (last {} lines) -----\n{}\n----- end of kitsync {} output -----",
                self.mode,
                tail.len(),
                tail.join("\n"),
                self.mode
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The marketplace side
// ---------------------------------------------------------------------------------------------

/// The request headers of one callback; `None` leaves a header out.
#[derive(Clone, Debug)]
pub struct Signed {
    pub nonce: Option<String>,
    pub timestamp: Option<String>,
    pub sign: Option<String>,
    pub body: String,
}

/// A callback's answer.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub code: String,
    pub msg: String,
    pub body_sign: Option<String>,
    pub raw: Vec<u8>,
    pub elapsed: Duration,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("code", &self.code)
            .field("msg", &self.msg)
            .field("body", &String::from_utf8_lossy(&self.raw))
            .field("body_sign", &self.body_sign)
            .field("elapsed", &self.elapsed)
            .finish()
    }
}

impl Reply {
    /// True for `000000`.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.code == "000000"
    }

    /// True when `Body-Sign` is `sign_type="HMAC-SHA256", signature="BASE64"` with BASE64 the
    /// HMAC-SHA256 of the exact body bytes under `key`.
    #[must_use]
    pub fn body_sign_verifies(&self, key: &str) -> bool {
        let Some(h) = &self.body_sign else {
            return false;
        };
        if !h.contains("sign_type=\"HMAC-SHA256\"") {
            return false;
        }
        let Some(sig) = h
            .split("signature=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            return false;
        };
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(sig) else {
            return false;
        };
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("HMAC key");
        mac.update(&self.raw);
        mac.verify_slice(&sig).is_ok()
    }
}

/// An API answer.
#[derive(Debug, Clone)]
pub struct ApiReply {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    /// `null` when the body is not JSON.
    pub body: serde_json::Value,
    pub raw: Vec<u8>,
}

impl ApiReply {
    /// The first value of a header.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A marketplace: signs callbacks with one access key and sends them to a server.
#[derive(Clone)]
pub struct Kit {
    base: String,
    pub key: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A fresh 64-hex-digit nonce, like the marketplace's.
#[must_use]
pub fn nonce() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
    .to_uppercase()
}

/// Between two looks at a process that is starting: panics, with its `logs`, if it has
/// `exited` or is still not ready `within` of `started`; otherwise waits 20 ms.
pub(crate) async fn startup_pause(
    what: &str,
    exited: Option<ExitStatus>,
    started: Instant,
    within: Duration,
    logs: impl Fn() -> String,
) {
    if let Some(status) = exited {
        panic!("{what} exited during startup ({status}):\n{}", logs());
    }
    assert!(
        started.elapsed() < within,
        "{what} not ready within {within:?}:\n{}",
        logs()
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// An answer's headers as name–value pairs (a value that is not text as empty).
pub(crate) fn header_pairs(headers: &hyper::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect()
}

/// A finished process's exit status and output, for assertion messages.
#[must_use]
pub fn explain(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a tool to completion (in `dir`, or the test's current directory): its exit status and
/// its output (stdout, then stderr).
///
/// # Panics
/// The tool cannot be started.
#[must_use]
pub fn run_tool(program: &Path, args: &[&str], dir: Option<&Path>) -> (ExitStatus, String) {
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    (
        out.status,
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The string `field` of every object in the JSON array `array` (ids, names), in order.
///
/// # Panics
/// `array` is not an array, or an item's `field` is not a string.
pub fn strs<'a, C: FromIterator<&'a str>>(array: &'a serde_json::Value, field: &str) -> C {
    array
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {array}"))
        .iter()
        .map(|item| {
            item[field]
                .as_str()
                .unwrap_or_else(|| panic!("no string {field} in {item}"))
        })
        .collect()
}

/// Unix milliseconds now.
#[must_use]
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Kit {
    #[must_use]
    pub fn new(addr: SocketAddr, key: &str) -> Kit {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Kit {
            base: format!("http://{addr}"),
            key: key.to_owned(),
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// The same server, another key.
    #[must_use]
    pub fn with_key(&self, key: &str) -> Kit {
        Kit {
            key: key.to_owned(),
            ..self.clone()
        }
    }

    /// Headers for `body` as the marketplace sends them now: fresh nonce, current time,
    /// `x-sign` over the raw body with this key.
    #[must_use]
    pub fn signed(&self, body: &str) -> Signed {
        self.signed_at(body, &nonce(), now_ms())
    }

    /// Headers for `body` with a given nonce and timestamp, correctly signed.
    #[must_use]
    pub fn signed_at(&self, body: &str, nonce: &str, ts_ms: i64) -> Signed {
        let ts = ts_ms.to_string();
        Signed {
            sign: Some(kitsync_domain::signing::sign(
                self.key.as_bytes(),
                nonce,
                &ts,
                body.as_bytes(),
            )),
            nonce: Some(nonce.to_owned()),
            timestamp: Some(ts),
            body: body.to_owned(),
        }
    }

    /// The server's base URL (`http://127.0.0.1:port`).
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET {path}` on the same server's API, with an optional bearer token: the HTTP status
    /// and the JSON body (`null` when the body is not JSON).
    ///
    /// # Panics
    /// The request fails at the HTTP level.
    pub async fn api_get(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        let r = self.api("GET", path, token, &[], None).await;
        (r.status, r.body)
    }

    /// `method path` on the same server's API with an optional bearer token, no extra headers
    /// and no body.
    ///
    /// # Panics
    /// As [`Kit::api`].
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>) -> ApiReply {
        self.api(method, path, token, &[], None).await
    }

    /// Any request on the same server's API: method, path, optional bearer token, extra
    /// headers and an optional JSON body (sent as `application/json`).
    ///
    /// # Panics
    /// The request fails at the HTTP level or takes over 30 s.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> ApiReply {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))
            .expect("request");
        let res = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .expect("API answer within 30 s")
            .expect("API request");
        let status = res.status().as_u16();
        let headers = header_pairs(res.headers());
        let raw = res
            .into_body()
            .collect()
            .await
            .expect("API body")
            .to_bytes();
        ApiReply {
            status,
            headers,
            body: serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null),
            raw: raw.to_vec(),
        }
    }

    /// Signs and sends `body` to `POST /produceAPI/v2/{kind}`.
    ///
    /// # Panics
    /// The request fails at the HTTP level or the answer is not a Kit answer.
    pub async fn send(&self, kind: &str, body: &str) -> Reply {
        let req = self.signed(body);
        self.send_signed(kind, &req)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"))
    }

    /// Sends prepared headers and body.
    ///
    /// # Errors
    /// The connection failed, the request took over 30 s, or the answer is not the
    /// HTTP 200 JSON `{"resultCode","resultMsg"}` a Kit callback always gets.
    pub async fn send_signed(&self, kind: &str, req: &Signed) -> Result<Reply, String> {
        let mut b = hyper::Request::post(format!("{}/produceAPI/v2/{kind}", self.base))
            .header("content-type", "application/json");
        if let Some(n) = &req.nonce {
            b = b.header("x-nonce", n);
        }
        if let Some(t) = &req.timestamp {
            b = b.header("x-timestamp", t);
        }
        if let Some(s) = &req.sign {
            b = b.header("x-sign", s);
        }
        let request = b
            .body(Full::new(Bytes::from(req.body.clone())))
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let res = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .map_err(|_| "no answer within 30 s".to_owned())?
            .map_err(|e| format!("request failed: {e}"))?;
        let status = res.status().as_u16();
        let body_sign = res
            .headers()
            .get("body-sign")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let raw = tokio::time::timeout(Duration::from_secs(30), res.into_body().collect())
            .await
            .map_err(|_| "no body within 30 s".to_owned())?
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes()
            .to_vec();
        let elapsed = started.elapsed();
        let v: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| {
            format!(
                "HTTP {status}, body is not JSON ({e}): {}",
                String::from_utf8_lossy(&raw)
            )
        })?;
        if status != 200 {
            return Err(format!(
                "HTTP {status} (Kit answers are always 200): {}",
                String::from_utf8_lossy(&raw)
            ));
        }
        let code = v["resultCode"]
            .as_str()
            .ok_or_else(|| format!("no resultCode: {v}"))?
            .to_owned();
        Ok(Reply {
            status,
            code,
            msg: v["resultMsg"].as_str().unwrap_or_default().to_owned(),
            body_sign,
            raw,
            elapsed,
        })
    }
}

/// The five callback bodies (docs/protocol.md §5), as JSON text.
pub mod payload {
    use serde_json::{json, Value};

    /// A marketplace time (`yyyyMMddHHmmssSSS`, UTC+8) `offset_ms` after 2025-01-01 12:00.
    #[must_use]
    pub fn time(offset_ms: i64) -> String {
        let base = chrono::NaiveDate::from_ymd_opt(2025, 1, 1)
            .and_then(|d| d.and_hms_opt(12, 0, 0))
            .expect("valid date");
        (base + chrono::Duration::milliseconds(offset_ms))
            .format("%Y%m%d%H%M%S%3f")
            .to_string()
    }

    #[must_use]
    pub fn tenant(tenant_id: &str, name: &str, flag: u8, test_flag: u8, ts: &str) -> String {
        json!({
            "instanceId": format!("inst-{tenant_id}"),
            "orderId": format!("order-{tenant_id}"),
            "tenantId": tenant_id,
            "tenantCode": format!("code-{tenant_id}"),
            "name": name,
            "domainName": format!("https://{tenant_id}.tenantaccount.example.com"),
            "flag": flag,
            "testFlag": test_flag,
            "timeStamp": ts,
        })
        .to_string()
    }

    #[must_use]
    pub fn app(tenant_id: &str, app_id: &str, client_id: &str, secret: &str, ts: &str) -> String {
        json!({
            "instanceId": format!("inst-{tenant_id}"),
            "tenantId": tenant_id,
            "appId": app_id,
            "clientId": client_id,
            "clientSecret": secret,
            "flag": 1,
            "testFlag": 0,
            "timeStamp": ts,
        })
        .to_string()
    }

    /// One user of an authSync.
    #[derive(Clone, Debug)]
    pub struct User {
        pub user_name: String,
        pub name: String,
        pub org_code: String,
        pub role: &'static str,
        pub enable: bool,
    }

    impl User {
        #[must_use]
        pub fn new(user_name: &str, org_code: &str, role: &'static str, enable: bool) -> User {
            User {
                user_name: user_name.to_owned(),
                name: format!("Name of {user_name}"),
                org_code: org_code.to_owned(),
                role,
                enable,
            }
        }

        #[must_use]
        pub fn json(&self) -> Value {
            json!({
                "userName": self.user_name,
                "name": self.name,
                "orgCode": self.org_code,
                "role": self.role,
                "enable": if self.enable { "true" } else { "false" },
                "position": "engineer",
                "employeeType": 1,
            })
        }
    }

    #[must_use]
    pub fn auth(tenant_id: &str, app_id: &str, flag: u8, users: &[User], ts: &str) -> String {
        json!({
            "instanceId": format!("inst-{tenant_id}"),
            "tenantId": tenant_id,
            "appId": app_id,
            "userList": users.iter().map(User::json).collect::<Vec<_>>(),
            "currentSyncTime": ts,
            "flag": flag,
            "testFlag": 0,
            "timeStamp": ts,
        })
        .to_string()
    }

    #[must_use]
    pub fn single_org(
        tenant_id: &str,
        org_code: &str,
        org_name: &str,
        parent: &str,
        flag: u8,
        ts: &str,
    ) -> String {
        json!({
            "instanceId": format!("inst-{tenant_id}"),
            "tenantId": tenant_id,
            "orgCode": org_code,
            "orgName": org_name,
            "parentCode": parent,
            "flag": flag,
            "testFlag": 0,
            "timeStamp": ts,
        })
        .to_string()
    }

    /// `orgs` = (orgCode, orgName, parentCode; `""` for a root).
    #[must_use]
    pub fn all_org(tenant_id: &str, orgs: &[(&str, &str, &str)], ts: &str) -> String {
        json!({
            "instanceId": format!("inst-{tenant_id}"),
            "tenantId": tenant_id,
            "orgInfoList": orgs
                .iter()
                .map(|(c, n, p)| json!({"orgCode": c, "orgName": n, "parentCode": p}))
                .collect::<Vec<_>>(),
            "testFlag": 0,
            "timeStamp": ts,
        })
        .to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------------

/// Polls `cond` every 50 ms until it holds.
///
/// # Panics
/// `cond` is still false after `timeout` (the message names `what`).
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// A cuttable TCP proxy
// ---------------------------------------------------------------------------------------------

const FLOWING: u8 = 0;
const CUT: u8 = 1;
const FROZEN: u8 = 2;

/// Forwards TCP connections to a target, and simulates its outages: [`TcpProxy::cut`] drops
/// every connection and closes new ones at once (a broker that is down);
/// [`TcpProxy::freeze`] keeps connections open but forwards nothing, in either direction (a
/// broker that hangs, a network partition); [`TcpProxy::restore`] forwards again.
pub struct TcpProxy {
    pub addr: SocketAddr,
    state: tokio::sync::watch::Sender<u8>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// # Panics
    /// No local port can be bound.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (state, state_rx) = tokio::sync::watch::channel(FLOWING);
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let accept = {
            let conns = Arc::clone(&conns);
            tokio::spawn(async move {
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if *state_rx.borrow() == CUT {
                        drop(inbound);
                        continue;
                    }
                    let rx = state_rx.clone();
                    let task = tokio::spawn(async move {
                        let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                            return;
                        };
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let (ir, iw) = inbound.into_split();
                        let (or, ow) = outbound.into_split();
                        tokio::select! {
                            () = pump(ir, ow, rx.clone()) => {}
                            () = pump(or, iw, rx) => {}
                        }
                    });
                    let mut c = conns
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    c.retain(|h| !h.is_finished());
                    c.push(task.abort_handle());
                }
            })
        };
        TcpProxy {
            addr,
            state,
            conns,
            accept,
        }
    }

    /// Drops every forwarded connection and closes new ones as soon as they are accepted.
    pub fn cut(&self) {
        self.state.send_replace(CUT);
        for h in self
            .conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            h.abort();
        }
    }

    /// Keeps every connection (and accepts new ones) but forwards no byte.
    pub fn freeze(&self) {
        self.state.send_replace(FROZEN);
    }

    /// Forwards again (connections dropped by [`TcpProxy::cut`] stay dropped).
    pub fn restore(&self) {
        self.state.send_replace(FLOWING);
    }

    /// `url` (`scheme://user:pass@host:port/path`) with its host and port replaced by the
    /// proxy's.
    ///
    /// # Panics
    /// `url` has no `scheme://` prefix.
    #[must_use]
    pub fn rewrite_url(&self, url: &str) -> String {
        let scheme_end = url.find("://").expect("URL with a scheme") + 3;
        let rest = &url[scheme_end..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let userinfo = authority.rfind('@').map_or("", |at| &authority[..=at]);
        format!(
            "{}{userinfo}{}{}",
            &url[..scheme_end],
            self.addr,
            &rest[authority_end..]
        )
    }
}

/// Copies `from` → `to` while the proxy is flowing; holds the bytes while it is frozen.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: tokio::sync::watch::Receiver<u8>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if state.wait_for(|s| *s != FROZEN).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if state.wait_for(|s| *s != FROZEN).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The `host:port` of a URL, resolved (for pointing a [`TcpProxy`] at a broker).
///
/// # Panics
/// The URL has no authority or does not resolve.
#[must_use]
pub fn url_socket_addr(url: &str, default_port: u16) -> SocketAddr {
    use std::net::ToSocketAddrs as _;
    let scheme_end = url.find("://").expect("URL with a scheme") + 3;
    let rest = &url[scheme_end..];
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let hostport = authority.rsplit('@').next().unwrap_or(authority);
    let with_port = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:{default_port}")
    };
    with_port
        .to_socket_addrs()
        .expect("resolving the broker address")
        .next()
        .expect("an address for the broker")
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
