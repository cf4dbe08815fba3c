//! `kitsync`: the one binary. Subcommands wire the library crates together:
//! `serve` (ingress + worker), `ingress`, `worker`, `migrate`, `config print-default`,
//! `deadletters`, `plans`, `bench`.
#![forbid(unsafe_code)]

mod app;
mod bench;
mod bench_read;
mod settings;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use settings::Settings;
use std::path::PathBuf;

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
    Serve,
    /// Run only the Kit ingress (HTTP → queue); scale out with several.
    Ingress,
    /// Run only the workers (queue → database); scale out with several.
    Worker,
    /// Apply pending database migrations and exit.
    Migrate,
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
    /// Benchmarks (programs, not tests): each prints its figure next to a raw baseline.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCmd,
    },
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
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Put a dead letter (or all of them) back on the queue.
    Replay {
        /// Dead-letter id, as shown by `list`.
        id: Option<i64>,
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
        /// Comma-separated: directory:read, activity:write, stats:read, admin.
        #[arg(long)]
        scope: String,
        /// Bind the token to one tenant; it then sees nothing else.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List tokens (never their secrets), as JSON lines.
    List,
    /// Revoke a token by id (the part after `kst_`, as shown by `list`).
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
enum PlanCmd {
    /// List plans (held ones unless --status is given).
    List {
        #[arg(long)]
        status: Option<String>,
    },
    /// Apply a held plan.
    Approve { id: i64 },
    /// Discard a held plan.
    Reject { id: i64 },
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
        Cmd::Serve => app::serve(settings, app::Mode::Both).await,
        Cmd::Ingress => app::serve(settings, app::Mode::Ingress).await,
        Cmd::Worker => app::serve(settings, app::Mode::Worker).await,
        Cmd::Migrate => {
            let db = app::open_db(&settings).await?;
            db.close().await.ok();
            println!("migrations applied");
            Ok(())
        }
        Cmd::Config { .. } => Ok(()),
        Cmd::Deadletters { command } => deadletters(settings, command).await,
        Cmd::Plans { command } => plans(settings, command).await,
        Cmd::Token { command } => token(settings, command).await,
        Cmd::Bench { command } => bench::run(settings, command).await,
    }
}

async fn token(settings: Settings, command: TokenCmd) -> anyhow::Result<()> {
    let db = app::open_db(&settings).await?;
    let store = kitsync_store::Store::new(db, settings.store.clone());
    match command {
        TokenCmd::Create {
            name,
            scope,
            tenant,
        } => {
            let scopes = kitsync_domain::Scope::parse_list(&scope)?;
            let (t, secret) = store
                .create_token(&name, &scopes, tenant.as_deref())
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
                println!("{}", serde_json::to_string(&t)?);
            }
        }
        TokenCmd::Revoke { id } => {
            store.revoke_token(&id).await?;
            println!("token {id} revoked");
        }
    }
    Ok(())
}

async fn deadletters(settings: Settings, command: DeadLetterCmd) -> anyhow::Result<()> {
    let db = app::open_db(&settings).await?;
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
            let outcome = dl.replay(id).await?;
            println!("dead letter {id}: {outcome:?}");
        }
        DeadLetterCmd::Replay {
            id: None,
            all: true,
        } => {
            let n = dl.replay_all().await?;
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
    let db = app::open_db(&settings).await?;
    let store = kitsync_store::Store::new(db, settings.store.clone());
    match command {
        PlanCmd::List { status } => {
            let status = status.unwrap_or_else(|| "held".into());
            let plans = store.list_plans(Some(status.as_str())).await?;
            if plans.is_empty() {
                println!("no {status} plans");
            }
            for p in plans {
                println!("{}", serde_json::to_string(&p)?);
            }
        }
        PlanCmd::Approve { id } => {
            let outcome = store.approve_plan(id).await?;
            println!("plan {id} approved: {outcome:?}");
        }
        PlanCmd::Reject { id } => {
            store.reject_plan(id).await?;
            println!("plan {id} rejected");
        }
    }
    Ok(())
}

fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}
