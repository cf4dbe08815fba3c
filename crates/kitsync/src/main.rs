//! `kitsync`: the one binary. Subcommands wire the library crates together:
//! `serve` (ingress + worker), `ingress`, `worker`, `migrate`, `config print-default`,
//! `deadletters`, `plans`, `token`, `webhooks`, `apps`, `send` (one signed callback, as the
//! marketplace sends it), `emulate` (a local marketplace; `emulate auth-centre`, its tenants'
//! auth centre), `bench` (the benchmarks of `kitsync-bench`, only with the `bench` feature).
#![forbid(unsafe_code)]

mod app;
#[cfg(feature = "bench")]
mod bench;
mod emulate;
mod files;
mod health;
mod http;
mod operations;
mod reseal;
mod send;
mod settings;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kitsync_store::journal::PlanStatus;
use kitsync_store::Actor;
use settings::Settings;
use std::path::PathBuf;
use std::str::FromStr;

/// mimalloc instead of the system allocator: the callback path (HTTP, JSON, AMQP frames) is
/// allocation-heavy, and glibc's malloc was a sixth of its CPU time in `bench ingest`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "kitsync",
    version,
    about = "Huawei KooGallery joint-operation Kit sync engine"
)]
struct Cli {
    /// TOML configuration file (default: ./kitsync.toml when present).
    #[arg(long, short, global = true, env = "KITSYNC_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the Kit ingress and the workers in one process.
    Serve {
        #[command(flatten)]
        schema: MigrateFlags,
    },
    /// Run only the Kit ingress (HTTP → queue); scale out with several.
    Ingress {
        #[command(flatten)]
        schema: MigrateFlags,
    },
    /// Run only the workers (queue → database); scale out with several.
    Worker {
        #[command(flatten)]
        schema: MigrateFlags,
    },
    /// Apply pending database migrations and exit (several at once are safe: they take
    /// turns).
    Migrate,
    /// Seal every stored secret for its row under the current master key (after a master key
    /// rotation, or once an RSA key is configured: stored RSA ciphertexts are decrypted), and
    /// say whether the previous keys are still needed. Safe beside running processes.
    Reseal,
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCmd,
    },
    /// Messages that could not be applied.
    Deadletters {
        #[command(subcommand)]
        command: DeadLetterCmd,
    },
    /// Full department syncs held by the mass-deletion guard.
    Plans {
        #[command(subcommand)]
        command: PlanCmd,
    },
    /// Bearer tokens of the directory, activity and statistics APIs.
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// Webhook endpoints that receive the change feed as signed pushes.
    Webhooks {
        #[command(subcommand)]
        command: WebhookCmd,
    },
    /// The apps the marketplace bound, and their credentials.
    Apps {
        #[command(subcommand)]
        command: AppCmd,
    },
    /// The ISV's apps registered as OpenID Connect clients of kitsync's Kit login bridge.
    OidcClient {
        #[command(subcommand)]
        command: OidcClientCmd,
    },
    /// The keys that sign kitsync's ID tokens.
    OidcKey {
        #[command(subcommand)]
        command: OidcKeyCmd,
    },
    /// Probe a running kitsync (a container health check without curl): GET one URL, exit 0
    /// only on a 2xx answer within the timeout. Reads no configuration.
    Health(health::HealthArgs),
    /// Sign and send one Kit callback as the marketplace does, and check the answer.
    Send(send::SendArgs),
    /// A local marketplace: play purchase-to-unbinding histories with delivery faults and
    /// attacks against a Kit endpoint, judge every answer, and check that a kitsync's
    /// directory converged; exits 0 only if the endpoint behaved. `emulate auth-centre`
    /// serves the emulated tenants' auth centre (OAuth 2.0 login of their users).
    Emulate(emulate::EmulateArgs),
    /// Benchmarks (programs, not tests): each prints its figure next to a raw baseline.
    #[cfg(feature = "bench")]
    Bench {
        #[command(subcommand)]
        command: kitsync_bench::BenchCmd,
    },
    /// Benchmarks: not in this build; `cargo run --release --features bench -- bench ingest`.
    ///
    /// The production binary does not carry the benchmarks and their raw baselines
    /// (crates/kitsync-bench): build kitsync with its `bench` feature to run them.
    #[cfg(not(feature = "bench"))]
    Bench {
        /// The benchmark and its arguments: ingest, apply, read, stats or login.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Whether a serving command migrates the database before it starts. Without either flag:
/// `serve` on the embedded SQLite database migrates (one command for a new install), every
/// other case only checks the schema and refuses to start when it is not this build's.
#[derive(clap::Args, Debug, Clone, Copy)]
struct MigrateFlags {
    /// Apply pending migrations first (safe with several processes starting at once).
    #[arg(long, overrides_with = "no_migrate")]
    migrate: bool,
    /// Do not migrate: refuse to start unless `kitsync migrate` already ran.
    #[arg(long, overrides_with = "migrate")]
    no_migrate: bool,
}

impl MigrateFlags {
    fn schema(self, migrate_by_default: bool) -> app::Schema {
        if self.migrate || (migrate_by_default && !self.no_migrate) {
            app::Schema::Migrate
        } else {
            app::Schema::Check
        }
    }
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Print every setting with its default value, as TOML.
    PrintDefault,
}

#[derive(Subcommand, Debug)]
enum DeadLetterCmd {
    /// List dead letters (not yet replayed, unless --all).
    List {
        /// Also the ones already replayed.
        #[arg(long)]
        all: bool,
        /// At most this many, newest first.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Put a dead letter (or all of them) back on the queue.
    Replay {
        /// Dead-letter id, as shown by `list`.
        id: Option<i64>,
        /// Every dead letter not yet replayed.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// Issue a token and print it (once: only its hash is stored).
    Create {
        /// What the token is for (shown by `list`).
        #[arg(long)]
        name: String,
        /// Comma-separated: directory:read (the directory API, SCIM reads, the change feed),
        /// directory:write (SCIM group writes), activity:write (POST /api/v1/activity),
        /// stats:read (the statistics and the dashboard), admin (all of them).
        #[arg(long)]
        scope: String,
        /// Bind the token to one tenant; it then sees nothing else.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List tokens (never their secrets), as JSON lines with RFC 3339 times.
    List,
    /// Revoke a token.
    Revoke {
        /// The token's id: the 12 hex digits after `kst_`, as shown by `list`.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum OidcClientCmd {
    /// Register an app; prints its client_id, then (unless --public) its client_secret, shown
    /// once (only its hash is stored).
    Add {
        /// The Kit appId whose users log in through this client: its Kit clientId and
        /// clientSecret are used at the tenant's auth centre, and only the users that app
        /// authorises are admitted.
        #[arg(long)]
        app: String,
        /// Where kitsync may send the browser back with a code (repeatable; compared exactly):
        /// https, or http to localhost / 127.0.0.1 / `[::1]`.
        #[arg(long = "redirect-uri", required = true)]
        redirect_uris: Vec<String>,
        /// Where /oidc/logout may send the browser afterwards (repeatable; compared exactly).
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        /// A name for `list` (default: the app id).
        #[arg(long, default_value = "")]
        name: String,
        /// A public client (single-page or native app): no secret, PKCE required.
        #[arg(long)]
        public: bool,
    },
    /// List clients (never their secrets), as JSON lines with RFC 3339 times.
    List,
    /// Unregister a client and end its sessions.
    Remove {
        /// The client_id (`kc_…`), as shown by `list`.
        client_id: String,
    },
}

#[derive(Subcommand, Debug)]
enum OidcKeyCmd {
    /// Add a new signing key; the others stop signing but stay published until the tokens
    /// they signed have expired.
    Rotate,
    /// List the published keys, newest first, as JSON lines with RFC 3339 times.
    List,
}

#[derive(Subcommand, Debug)]
enum WebhookCmd {
    /// Register an endpoint; prints its id, then its signing secret (shown once).
    Add {
        /// The receiver, `http://host:port/path` or `https://…` (trusted by the system's roots
        /// or `webhooks.ca_file`).
        url: String,
        /// Only this tenant's events.
        #[arg(long)]
        tenant: Option<String>,
        /// Comma-separated event types or prefixes, e.g. `member,department.added`.
        #[arg(long)]
        types: Option<String>,
        /// Also events of test tenants (testFlag=1).
        #[arg(long)]
        include_test: bool,
        /// Start after this change-feed cursor (0: the whole journal); default: only changes
        /// applied from now on.
        #[arg(long)]
        after: Option<i64>,
    },
    /// List endpoints (never their secrets), as JSON lines.
    List,
    /// Remove an endpoint and its delivery log.
    Remove {
        /// The endpoint's id, as `add` and `list` show it.
        id: String,
    },
    /// An endpoint's latest delivery attempts, newest first, as JSON lines.
    Deliveries {
        /// The endpoint's id.
        id: String,
        /// At most this many attempts.
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// Deliver now: restart the endpoint's backoff and make it due at once.
    Retry {
        /// The endpoint's id.
        id: String,
    },
    /// Stop delivering to an endpoint (its cursor stays; `enable` resumes from it).
    Disable {
        /// The endpoint's id.
        id: String,
    },
    /// Resume delivering to a disabled endpoint.
    Enable {
        /// The endpoint's id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum AppCmd {
    /// An app's `clientId`, test flag and version, as JSON; with --reveal-secret also its
    /// decrypted `clientSecret` (what the app needs to call the tenant's auth centre).
    Show {
        /// The tenant's id.
        tenant: String,
        /// The app's id.
        app: String,
        /// Print the decrypted `clientSecret`. Logged (without the secret) as an audit line.
        #[arg(long)]
        reveal_secret: bool,
    },
}

#[derive(Subcommand, Debug)]
enum PlanCmd {
    /// List plans, as JSON lines.
    List {
        /// Only plans in this state.
        #[arg(long, default_value = "held", value_parser = PlanStatus::from_str)]
        status: PlanStatus,
    },
    /// Apply a held plan.
    Approve {
        /// The plan's id, as `list` shows it.
        id: i64,
    },
    /// Discard a held plan.
    Reject {
        /// The plan's id, as `list` shows it.
        id: i64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Cmd::Config {
        command: ConfigCmd::PrintDefault,
    } = cli.command
    {
        print!("{}", Settings::default_toml()?);
        return Ok(());
    }
    if let Cmd::Health(args) = &cli.command {
        return health::run(args);
    }
    #[cfg(not(feature = "bench"))]
    if let Cmd::Bench { args } = &cli.command {
        return Err(no_bench(args));
    }
    let settings = Settings::load(cli.config.as_deref())?;
    app::init_tracing(&settings.log);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(cli.command, settings))
}

async fn run(command: Cmd, settings: Settings) -> anyhow::Result<()> {
    match command {
        Cmd::Serve { schema } => {
            let embedded = settings.database.url.trim().starts_with("sqlite:");
            app::serve(settings, app::Mode::Both, schema.schema(embedded)).await
        }
        Cmd::Ingress { schema } => {
            app::serve(settings, app::Mode::Ingress, schema.schema(false)).await
        }
        Cmd::Worker { schema } => {
            app::serve(settings, app::Mode::Worker, schema.schema(false)).await
        }
        Cmd::Migrate => {
            let db = app::open_db_with(&settings, app::Schema::Migrate).await?;
            db.close().await.ok();
            println!("migrations applied");
            Ok(())
        }
        Cmd::Config { .. } | Cmd::Health(_) => Ok(()),
        Cmd::Deadletters { command } => deadletters(settings, command).await,
        Cmd::Plans { command } => plans(settings, command).await,
        Cmd::Token { command } => token(settings, command).await,
        Cmd::Webhooks { command } => webhooks(settings, command).await,
        Cmd::Send(args) => send::run(&settings, args).await,
        Cmd::Emulate(args) => emulate::run(&settings, args).await,
        Cmd::Reseal => app::reseal_command(&settings).await,
        Cmd::Apps { command } => apps(settings, command).await,
        Cmd::OidcClient { command } => oidc_client(settings, command).await,
        Cmd::OidcKey { command } => oidc_key(settings, command).await,
        #[cfg(feature = "bench")]
        Cmd::Bench { command } => kitsync_bench::run(settings, command).await,
        #[cfg(not(feature = "bench"))]
        Cmd::Bench { args } => Err(no_bench(&args)),
    }
}

/// `kitsync bench …` in a build without the `bench` feature: the command that runs it.
#[cfg(not(feature = "bench"))]
fn no_bench(args: &[String]) -> anyhow::Error {
    let args = if args.is_empty() {
        "ingest".to_owned()
    } else {
        args.join(" ")
    };
    anyhow::anyhow!(
        "this kitsync was built without its benchmarks (the production binary does not carry \
         them); from the source tree, run `cargo run --release --features bench -- bench {args}`"
    )
}

async fn token(settings: Settings, command: TokenCmd) -> anyhow::Result<()> {
    let store = open_store(&settings).await?;
    match command {
        TokenCmd::Create {
            name,
            scope,
            tenant,
        } => {
            let scopes = kitsync_domain::Scope::parse_list(&scope)?;
            let (t, secret) = store
                .create_token(&Actor::Cli, &name, &scopes, tenant.as_deref())
                .await?;
            eprintln!(
                "token {} ({}) for {}; shown once, keep it:",
                t.id,
                scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                t.tenant_id.as_deref().unwrap_or("every tenant")
            );
            println!("{}", secrecy::ExposeSecret::expose_secret(&secret));
        }
        TokenCmd::List => {
            for t in store.list_tokens().await? {
                print_with_times(
                    &t,
                    [
                        ("createdAt", Some(t.created_at)),
                        ("revokedAt", t.revoked_at),
                        ("lastUsedAt", t.last_used_at),
                    ],
                )?;
            }
        }
        TokenCmd::Revoke { id } => {
            store.revoke_token(&Actor::Cli, &id).await?;
            println!("token {id} revoked");
        }
    }
    Ok(())
}

async fn apps(settings: Settings, command: AppCmd) -> anyhow::Result<()> {
    let AppCmd::Show {
        tenant,
        app,
        reveal_secret,
    } = command;
    let store = open_store(&settings).await?;
    let found = store
        .app_credentials(&tenant, &app)
        .await?
        .with_context(|| format!("no app {app} in tenant {tenant}"))?;
    let mut v = serde_json::json!({
        "tenantId": tenant,
        "appId": found.app_id,
        "clientId": found.client_id,
        "test": found.test,
        "changedAt": fmt_ms(found.version),
    });
    if reveal_secret {
        let secret = app::reveal_client_secret(&settings, &tenant, &app, &found.client_secret.0)?;
        tracing::warn!(%tenant, %app, "clientSecret revealed on the command line");
        v["clientSecret"] = secrecy::ExposeSecret::expose_secret(&secret).into();
    }
    println!("{v}");
    Ok(())
}

async fn oidc_client(settings: Settings, command: OidcClientCmd) -> anyhow::Result<()> {
    let db = app::open_db_with(&settings, app::Schema::Check).await?;
    match command {
        OidcClientCmd::Add {
            app,
            redirect_uris,
            post_logout_redirect_uris,
            name,
            public,
        } => {
            let new = kitsync_login::clients::NewClient {
                name,
                app_id: app,
                redirect_uris,
                post_logout_redirect_uris,
                public,
            };
            let (client, secret) = kitsync_login::clients::register(&db, &Actor::Cli, &new).await?;
            println!("{}", client.client_id);
            let public_url = settings.login.public_url.trim().trim_end_matches('/');
            let base = if public_url.is_empty() {
                format!("http://{}", settings.http.addr)
            } else {
                public_url.to_owned()
            };
            eprintln!(
                "OIDC client {} for Kit app {}; issuer {base} (discovery: {base}/.well-known/openid-configuration).\n\
                 Register {base}/login/kit/callback as the app's callback URL in the marketplace console.",
                client.client_id, client.app_id
            );
            if let Some(secret) = secret {
                eprintln!("its client_secret follows, shown once, keep it:");
                println!("{}", secrecy::ExposeSecret::expose_secret(&secret));
            } else {
                eprintln!("a public client: no secret; it must use PKCE (S256)");
            }
        }
        OidcClientCmd::List => {
            for c in kitsync_login::clients::list(&db).await? {
                let mut v = serde_json::to_value(&c)?;
                v["public"] = c.is_public().into();
                v["createdAt"] = fmt_ms(c.created_at).into();
                println!("{v}");
            }
        }
        OidcClientCmd::Remove { client_id } => {
            if !kitsync_login::clients::remove(&db, &Actor::Cli, &client_id).await? {
                anyhow::bail!("no OIDC client {client_id}");
            }
            println!("OIDC client {client_id} removed; its sessions are ended");
        }
    }
    Ok(())
}

async fn oidc_key(settings: Settings, command: OidcKeyCmd) -> anyhow::Result<()> {
    let db = app::open_db_with(&settings, app::Schema::Check).await?;
    match command {
        OidcKeyCmd::Rotate => {
            let sealer = app::sealer(&settings)?;
            let kid = kitsync_login::keys::rotate(&db, &sealer, &settings.login).await?;
            println!("{kid}");
            eprintln!(
                "new signing key {kid}; running processes sign with it within 30 s, and the \
                 previous keys stay published until the tokens they signed have expired"
            );
        }
        OidcKeyCmd::List => {
            for k in kitsync_login::keys::list(&db).await? {
                print_with_times(
                    &k,
                    [
                        ("createdAt", Some(k.created_at)),
                        ("retiredAt", k.retired_at),
                        ("publishUntil", k.publish_until),
                    ],
                )?;
            }
        }
    }
    Ok(())
}

async fn webhooks(settings: Settings, command: WebhookCmd) -> anyhow::Result<()> {
    let store = open_store(&settings).await?;
    match command {
        WebhookCmd::Add {
            url,
            tenant,
            types,
            include_test,
            after,
        } => {
            let sealer = app::sealer(&settings)?;
            let registration = kitsync_webhooks::Registration {
                url,
                tenant_id: tenant,
                types,
                include_test,
                after,
            };
            let (endpoint, secret) =
                kitsync_webhooks::register(&store, &sealer, &registration).await?;
            println!("{}", endpoint.id);
            eprintln!(
                "webhook {} → {} from cursor {}; its signing secret follows, shown once, keep it:",
                endpoint.id, endpoint.url, endpoint.cursor
            );
            println!("{}", secrecy::ExposeSecret::expose_secret(&secret));
        }
        WebhookCmd::List => {
            let endpoints = store.list_webhooks().await?;
            if endpoints.is_empty() {
                eprintln!("no webhook endpoints");
            }
            for e in endpoints {
                println!("{}", serde_json::to_string(&webhook_view(&e))?);
            }
        }
        WebhookCmd::Remove { id } => {
            store.remove_webhook(&Actor::Cli, &id).await?;
            println!("webhook {id} removed");
        }
        WebhookCmd::Deliveries { id, limit } => {
            let rows = store.webhook_deliveries(&id, limit).await?;
            if rows.is_empty() {
                eprintln!("no delivery attempts yet");
            }
            for d in rows {
                let mut v = serde_json::to_value(&d)?;
                v["at"] = serde_json::Value::String(fmt_ms(d.at));
                println!("{v}");
            }
        }
        WebhookCmd::Retry { id } => {
            let e = store.retry_webhook(&Actor::Cli, &id).await?;
            println!("webhook {id} ({}) is due now", e.state);
        }
        WebhookCmd::Disable { id } => {
            store.set_webhook_enabled(&Actor::Cli, &id, false).await?;
            println!("webhook {id} disabled");
        }
        WebhookCmd::Enable { id } => {
            let e = store.set_webhook_enabled(&Actor::Cli, &id, true).await?;
            println!("webhook {id} enabled ({})", e.state);
        }
    }
    Ok(())
}

/// An endpoint for `webhooks list`: times as RFC 3339.
fn webhook_view(e: &kitsync_store::WebhookEndpoint) -> serde_json::Value {
    let t = |ms: Option<i64>| ms.map(fmt_ms);
    serde_json::json!({
        "id": e.id,
        "url": e.url,
        "tenantId": e.tenant_id,
        "types": e.types,
        "includeTest": e.include_test,
        "state": e.state,
        "cursor": e.cursor.to_string(),
        "pendingUntil": e.pending_until.map(|c| c.to_string()),
        "consecutiveFailures": e.consecutive_failures,
        "lastStatus": e.last_status,
        "lastError": e.last_error,
        "lastAttemptAt": t(e.last_attempt_at),
        "lastSuccessAt": t(e.last_success_at),
        "nextAttemptAt": fmt_ms(e.next_attempt_at),
        "createdAt": fmt_ms(e.created_at),
    })
}

async fn deadletters(settings: Settings, command: DeadLetterCmd) -> anyhow::Result<()> {
    let db = app::open_db_with(&settings, app::Schema::Check).await?;
    let queue = app::open_queue(&settings, &db).await?;
    let dl = queue.dead_letters();
    match command {
        DeadLetterCmd::List { all, limit } => {
            let rows = dl.list(all, limit).await?;
            if rows.is_empty() {
                println!("no dead letters");
            }
            for r in rows {
                let state = match r.replayed_at {
                    Some(_) => "replayed",
                    None => "pending",
                };
                println!(
                    "{:>6}  {}  {}  attempts={}  source={}  {}\n        error: {}",
                    r.id,
                    fmt_ms(r.dead_at),
                    state,
                    r.attempts,
                    r.source,
                    r.message_id,
                    r.error
                );
            }
        }
        DeadLetterCmd::Replay { id: Some(id), .. } => {
            let outcome = dl.replay(&Actor::Cli, id).await?;
            println!("dead letter {id}: {outcome:?}");
        }
        DeadLetterCmd::Replay {
            id: None,
            all: true,
        } => {
            let n = dl.replay_all(&Actor::Cli).await?;
            println!("replayed {n} dead letters");
        }
        DeadLetterCmd::Replay {
            id: None,
            all: false,
        } => {
            anyhow::bail!("give a dead-letter id or --all");
        }
    }
    queue.close().await;
    Ok(())
}

async fn plans(settings: Settings, command: PlanCmd) -> anyhow::Result<()> {
    let store = open_store(&settings).await?;
    match command {
        PlanCmd::List { status } => {
            let plans = store.list_plans(Some(status)).await?;
            if plans.is_empty() {
                println!("no {status} plans");
            }
            for p in plans {
                println!("{}", serde_json::to_string(&p)?);
            }
        }
        PlanCmd::Approve { id } => {
            let outcome = store.approve_plan(&Actor::Cli, id).await?;
            println!("plan {id} approved: {outcome:?}");
        }
        PlanCmd::Reject { id } => {
            store.reject_plan(&Actor::Cli, id).await?;
            println!("plan {id} rejected");
        }
    }
    Ok(())
}

/// The store on the database, whose schema must already be current: for the admin commands.
async fn open_store(settings: &Settings) -> anyhow::Result<kitsync_store::Store> {
    let db = app::open_db_with(settings, app::Schema::Check).await?;
    Ok(kitsync_store::Store::new(db, settings.store.clone()))
}

/// Prints `row` as one JSON line, its Unix-millisecond `times` as RFC 3339 (null when unset).
fn print_with_times<const N: usize>(
    row: &impl serde::Serialize,
    times: [(&str, Option<i64>); N],
) -> anyhow::Result<()> {
    let mut v = serde_json::to_value(row)?;
    for (field, ms) in times {
        v[field] = ms.map(fmt_ms).into();
    }
    println!("{v}");
    Ok(())
}

fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema policy `kitsync ARGS` gets, on the embedded database and on PostgreSQL.
    fn schema_of(args: &[&str]) -> (app::Schema, app::Schema) {
        let cli =
            Cli::try_parse_from(std::iter::once("kitsync").chain(args.iter().copied())).unwrap();
        let (Cmd::Serve { schema: f } | Cmd::Ingress { schema: f } | Cmd::Worker { schema: f }) =
            cli.command
        else {
            panic!("not a serving command: {args:?}");
        };
        let serve = matches!(args[0], "serve");
        (f.schema(serve), f.schema(false))
    }

    #[test]
    fn only_serve_on_the_embedded_database_migrates_without_a_flag() {
        use app::Schema::{Check, Migrate};
        assert_eq!(schema_of(&["serve"]), (Migrate, Check));
        assert_eq!(schema_of(&["ingress"]), (Check, Check));
        assert_eq!(schema_of(&["worker"]), (Check, Check));
        assert_eq!(schema_of(&["serve", "--no-migrate"]), (Check, Check));
        assert_eq!(schema_of(&["worker", "--migrate"]), (Migrate, Migrate));
        // The last flag wins, as with --color/--no-color.
        assert_eq!(
            schema_of(&["serve", "--migrate", "--no-migrate"]),
            (Check, Check)
        );
        assert_eq!(
            schema_of(&["ingress", "--no-migrate", "--migrate"]),
            (Migrate, Migrate)
        );
        assert!(Cli::try_parse_from(["kitsync", "token", "list", "--migrate"]).is_err());
    }

    /// Every command and every argument says what it is for in `--help` (the bench's
    /// programs included).
    #[test]
    fn every_command_and_argument_is_described() {
        use clap::CommandFactory as _;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_name() != "help" && sub.get_about().is_none() {
                    missing.push(sub_path.clone());
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "kitsync", &mut missing);
        assert!(missing.is_empty(), "undescribed: {missing:#?}");
    }

    #[test]
    fn a_plan_status_outside_the_known_ones_is_refused() {
        let e =
            Cli::try_parse_from(["kitsync", "plans", "list", "--status", "pending"]).unwrap_err();
        assert!(e.to_string().contains("held"), "{e}");
        assert!(Cli::try_parse_from(["kitsync", "plans", "list", "--status", "approved"]).is_ok());
    }
}
