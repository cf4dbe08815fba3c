//! `kitsync emulate`: a local KooGallery against any Kit endpoint (see
//! `kitsync_marketplace::emulate`): plays histories with delivery faults and attacks, judges
//! every answer and, given a kitsync's directory API, checks that it converged.
//!
//! `kitsync emulate auth-centre`: the emulated tenants' auth centre (see
//! `kitsync_marketplace::authcentre`), serving the users file `kitsync emulate --save-users`
//! wrote.
use crate::send::parse_oaep;
use crate::settings::Settings;
use anyhow::Context as _;
use clap::{Args, Subcommand};
use kitsync_marketplace::authcentre::AuthCentre;
use kitsync_marketplace::emulate::world::{Scenario, Size};
use kitsync_marketplace::emulate::{self, Options};
use kitsync_marketplace::Marketplace;
use kitsync_secrets::{OaepVariant, RsaEncryptor};
use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

// Without a subcommand it plays a history; the flags of that run and a subcommand exclude
// each other, so `kitsync emulate …` parses as it always did. (A plain comment: a doc comment
// here would become the command's help text over the one in main.rs.)
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EmulateArgs {
    #[command(subcommand)]
    command: Option<EmulateCmd>,
    /// The endpoint's production address (callbacks go to URL/produceAPI/v2/KIND). Default:
    /// this configuration's `http.addr` and `kit.prefix`.
    #[arg(long)]
    url: Option<String>,
    /// The Kit access key the endpoint verifies. Default: the first of `kit.access_keys`.
    #[arg(long)]
    access_key: Option<String>,
    /// The endpoint's RSA public key (X.509 PEM): client secrets are encrypted with it, as the
    /// marketplace does. Without it they are sent as plain strings (fine for an endpoint with
    /// no RSA key configured).
    #[arg(long)]
    rsa_public_key: Option<PathBuf>,
    /// The RSA-OAEP variant: `sha256-mgf1-sha1` (Java's default), `sha256` or `sha1`.
    #[arg(long, default_value = "sha256-mgf1-sha1", value_parser = parse_oaep)]
    oaep: OaepVariant,
    /// Scenarios to play (repeatable; default all): purchase, bind, authorise, departments,
    /// full-sync, mass-delete, unbind, test-purchase. Purchase and bind are always played.
    #[arg(long = "scenario", value_parser = Scenario::parse)]
    scenarios: Vec<Scenario>,
    /// The history and its faults are the same for the same seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Part of every tenant id (`emu-RUN-t1`); default: random, so runs do not meet.
    #[arg(long)]
    run_id: Option<String>,
    /// Tenants bought.
    #[arg(long, default_value_t = 3)]
    tenants: usize,
    /// Users authorised per tenant (in batches of 500).
    #[arg(long, default_value_t = 600)]
    users: usize,
    /// Departments of a tenant's first full sync.
    #[arg(long, default_value_t = 12)]
    departments: usize,
    /// Callbacks in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Callbacks started per second, at most (default: as fast as they are answered).
    #[arg(long)]
    rate: Option<f64>,
    /// Share of callbacks the marketplace delivers twice (0–1).
    #[arg(long, default_value_t = 0.05)]
    duplicates: f64,
    /// Share of accepted callbacks replayed byte for byte (0–1).
    #[arg(long, default_value_t = 0.05)]
    replays: f64,
    /// Send each phase in history order instead of shuffled.
    #[arg(long)]
    no_reorder: bool,
    /// Each callback waits up to this many milliseconds before it is sent.
    #[arg(long, default_value_t = 20)]
    max_delay_ms: u64,
    /// Re-sends of a callback answered 000005 or not within 5 s.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// Skip the attack probes (bad signatures, skewed clocks, oversize and invalid bodies).
    #[arg(long)]
    no_probes: bool,
    /// A kitsync's base URL (`http://host:8080`) whose directory must converge to the truth.
    #[arg(long, requires = "token")]
    api_url: Option<String>,
    /// A bearer token with `directory:read` for --api-url.
    #[arg(long, requires = "api_url")]
    token: Option<String>,
    /// How long the directory may take to converge, in seconds.
    #[arg(long, default_value_t = 60)]
    converge_timeout_secs: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// A `kitsync emulate auth-centre` base URL (`http://127.0.0.1:8090`): every tenant's
    /// `domainName` becomes URL/{tenantId}, where that auth centre serves it. Default:
    /// `https://{tenantId}.tenant.example.com`.
    #[arg(long)]
    auth_centre_url: Option<String>,
    /// After the run, write the tenants that were not deleted to FILE (mode 0600: it holds the
    /// apps' plaintext client secrets): name, domainName, apps with clientId and clientSecret,
    /// and every user ever authorised with name, orgCode and each app's authorisation now.
    /// `kitsync emulate auth-centre --users FILE` serves them.
    #[arg(long, value_name = "FILE")]
    save_users: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum EmulateCmd {
    /// The emulated tenants' auth centre: OAuth 2.0 authorization code (authorize, token,
    /// userinfo, logout) under /{tenantId}, and the unified login page, for the users a
    /// `kitsync emulate --save-users` run authorised; runs until SIGINT/SIGTERM.
    AuthCentre(AuthCentreArgs),
}

#[derive(Args, Debug)]
struct AuthCentreArgs {
    /// Where to listen; port 0 takes a free port. The address is printed as
    /// `auth centre listening on http://ADDR`.
    #[arg(long, default_value = "127.0.0.1:8090")]
    addr: SocketAddr,
    /// The users file `kitsync emulate --save-users FILE` wrote.
    #[arg(long, value_name = "FILE")]
    users: PathBuf,
}

/// # Errors
/// No access key, an unreadable public key, or an endpoint that did not behave (the report
/// says how).
pub async fn run(settings: &Settings, mut args: EmulateArgs) -> anyhow::Result<()> {
    if let Some(EmulateCmd::AuthCentre(a)) = args.command.take() {
        return auth_centre(a).await;
    }
    if let Some(url) = &args.auth_centre_url {
        anyhow::ensure!(
            url.starts_with("http://") || url.starts_with("https://"),
            "--auth-centre-url must be an http:// or https:// URL, got `{url}`"
        );
    }
    let key = crate::send::access_key(settings, args.access_key.as_deref(), "--access-key")?;
    let base = args
        .url
        .clone()
        .unwrap_or_else(|| crate::send::local_url(settings));
    let market = Marketplace::new(&base, &key)?;
    let encryptor = match &args.rsa_public_key {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the RSA public key {}", path.display()))?;
            Some(
                RsaEncryptor::from_pem(&pem)
                    .with_context(|| format!("loading the RSA public key {}", path.display()))?,
            )
        }
        None => None,
    };
    let variant = args.oaep;
    let encrypt = move |plain: &str| -> Result<String, String> {
        match &encryptor {
            Some(e) => e.encrypt(plain, variant).map_err(|e| e.to_string()),
            None => Ok(plain.to_owned()),
        }
    };
    for (name, share) in [
        ("--duplicates", args.duplicates),
        ("--replays", args.replays),
    ] {
        anyhow::ensure!(
            (0.0..=1.0).contains(&share),
            "{name} is a share from 0 to 1, got {share}"
        );
    }
    let mut scenarios: BTreeSet<Scenario> = args.scenarios.iter().copied().collect();
    if scenarios.is_empty() {
        scenarios = Scenario::ALL.into_iter().collect();
    }
    scenarios.extend([Scenario::Purchase, Scenario::Bind]);
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..8].to_owned());
    let opts = Options {
        scenarios,
        size: Size {
            tenants: args.tenants,
            users: args.users,
            departments: args.departments,
        },
        seed: args.seed,
        run_id,
        concurrency: args.concurrency,
        rate: args.rate,
        duplicates: args.duplicates,
        replays: args.replays,
        reorder: !args.no_reorder,
        max_delay_ms: args.max_delay_ms,
        retries: args.retries,
        probes: !args.no_probes,
        directory: args.api_url.clone().zip(args.token.clone()),
        converge_timeout: Duration::from_secs(args.converge_timeout_secs),
        auth_centre_url: args.auth_centre_url.clone(),
        ..Options::default()
    };
    let report = emulate::run(&market, &opts, &encrypt)
        .await
        .map_err(anyhow::Error::msg)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    // Written whatever the endpoint did: it is the marketplace's truth, not the endpoint's.
    if let Some(path) = &args.save_users {
        write_private(path, &serde_json::to_vec_pretty(&report.users)?)
            .with_context(|| format!("writing the users file {}", path.display()))?;
        eprintln!(
            "{} tenants' apps and users written to {} (0600: it holds the client secrets); \
             serve them with `kitsync emulate auth-centre --users {}`",
            report.users.tenants.len(),
            path.display(),
            path.display()
        );
    }
    anyhow::ensure!(
        report.ok(),
        "{} failed case(s){}",
        report.failures().count(),
        if report.convergence.as_ref().is_some_and(|c| !c.converged) {
            ", and the directory did not converge"
        } else {
            ""
        }
    );
    Ok(())
}

/// Writes `bytes` to `path`, the file 0600 (also when it existed: it is truncated and made
/// private before anything is written).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut file = opts.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)?;
    file.flush()
}

/// `kitsync emulate auth-centre`: serves the users file until SIGINT or SIGTERM.
async fn auth_centre(args: AuthCentreArgs) -> anyhow::Result<()> {
    let centre = AuthCentre::from_file(&args.users)?;
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("listening on {}", args.addr))?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");
    for (t, tenant) in &centre.users().tenants {
        let apps: Vec<String> = tenant
            .apps
            .iter()
            .map(|(app, a)| format!("{app} (clientId {})", a.client_id))
            .collect();
        eprintln!(
            "tenant {t} ({}): {} users, apps: {}; {base}/{t}/api/v1/oauth2/authorize",
            tenant.name,
            tenant.users.len(),
            if apps.is_empty() {
                "none".to_owned()
            } else {
                apps.join(", ")
            }
        );
        if !tenant.domain_name.starts_with(&format!("{base}/")) {
            eprintln!(
                "  note: its domainName is {}, not under {base} (give `kitsync emulate \
                 --auth-centre-url {base}` to point the tenants here)",
                tenant.domain_name
            );
        }
    }
    println!("auth centre listening on {base}");
    std::io::stdout().flush()?;
    centre.serve(listener, wait_for_signal()).await?;
    eprintln!("auth centre stopped");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `emulate` as `kitsync` wires it: a subcommand taking [`EmulateArgs`].
    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Top {
        Emulate(EmulateArgs),
    }

    fn parse(args: &[&str]) -> Result<EmulateArgs, clap::Error> {
        let all = ["kitsync", "emulate"]
            .into_iter()
            .chain(args.iter().copied());
        Cli::try_parse_from(all).map(|c| match c.command {
            Top::Emulate(a) => a,
        })
    }

    #[test]
    fn emulate_parses_with_and_without_the_auth_centre_subcommand() {
        let plain = parse(&[]).unwrap();
        assert!(plain.command.is_none());
        assert_eq!(plain.tenants, 3);
        let run = parse(&[
            "--tenants",
            "1",
            "--users",
            "20",
            "--auth-centre-url",
            "http://127.0.0.1:8090",
            "--save-users",
            "users.json",
            "--json",
        ])
        .unwrap();
        assert!(run.command.is_none());
        assert_eq!((run.tenants, run.users, run.json), (1, 20, true));
        assert_eq!(
            run.auth_centre_url.as_deref(),
            Some("http://127.0.0.1:8090")
        );
        assert_eq!(run.save_users, Some(PathBuf::from("users.json")));
        // The run's flags keep their rules.
        assert!(parse(&["--api-url", "http://x"]).is_err());

        let centre = parse(&["auth-centre", "--users", "users.json"]).unwrap();
        let Some(EmulateCmd::AuthCentre(a)) = centre.command else {
            panic!("no auth-centre: {centre:?}");
        };
        assert_eq!(a.users, PathBuf::from("users.json"));
        assert_eq!(a.addr, "127.0.0.1:8090".parse::<SocketAddr>().unwrap());
        let centre = parse(&["auth-centre", "--addr", "127.0.0.1:0", "--users", "u"]).unwrap();
        let Some(EmulateCmd::AuthCentre(a)) = centre.command else {
            panic!("no auth-centre: {centre:?}");
        };
        assert_eq!(a.addr.port(), 0);
        assert!(parse(&["auth-centre"]).is_err(), "--users is required");
        // A run's flags and the subcommand exclude each other, in either order.
        assert!(parse(&["--tenants", "1", "auth-centre", "--users", "u"]).is_err());
        assert!(parse(&["auth-centre", "--users", "u", "--tenants", "1"]).is_err());
    }

    #[test]
    fn the_users_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        std::fs::write(&path, "old").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        write_private(&path, b"{}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
