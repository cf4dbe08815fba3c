//! `kitsync bench login`: Kit account logins bridged to OpenID Connect, per second, through
//! the whole flow, next to the auth centre's own code exchange measured in the same run.
//!
//! An emulated auth centre (`kitsync_marketplace::authcentre`) serves 4 tenants × 64 users on
//! loopback; kitsync runs in-process (`serve`: ingress, API, login bridge and worker) and learns
//! the same tenants, their app (`clientId`, RSA-encrypted `clientSecret`) and its authorised
//! members from real signed Kit callbacks. `--concurrency` browsers then log in distinct users
//! round-robin, each login played step by step (no redirect followed automatically, the flow
//! cookie passed by hand):
//!
//! 1. `GET /oidc/authorize` (PKCE S256, `login_hint` = the tenant) → 302 to the auth centre;
//! 2. the auth centre's login form: `GET` it, `POST` its hidden inputs and `user_name` → 302
//!    to kitsync's Kit callback;
//! 3. `GET /login/kit/callback` → kitsync exchanges the Kit code (token + userinfo at the auth
//!    centre), checks the directory, writes the session → 302 to the app with a code;
//! 4. `POST /oidc/token` (Basic client authentication, `code_verifier`) → ID token;
//! 5. `GET /oidc/userinfo` with the access token.
//!
//! The baseline is the auth centre alone, same concurrency and client: per iteration
//! `authorize?login_hint=<user>` (302 with a code), `token`, `userinfo` — what any Kit login
//! costs at the auth centre, with no kitsync in the path. Rounds alternate baseline and
//! kitsync; the rates are medians over rounds, the latencies percentiles over every round.
//! Every login must succeed: the app's redirect must carry a code, the token answer an ID
//! token, userinfo the user; anything else stops the run, naming the step.
//!
//! Like the other benches it uses the configured database and queue (`KITSYNC_DATABASE__URL`,
//! `KITSYNC_QUEUE__AMQP_URL`; by default a throwaway SQLite file and the embedded queue) and a
//! throwaway master key. The ID-token signing keys belong to the database, so it refuses one
//! that already has a live key (sealed with another master key, it could not sign); it removes
//! its OIDC client (revoking its sessions) and the signing key it created when it ends.
use crate::{Mode, Service};
use anyhow::{bail, ensure, Context as _};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use hyper::StatusCode;
use kitsync_domain::CallbackKind;
use kitsync_marketplace::authcentre::{
    AuthCentre, SavedApp, SavedAuthorization, SavedTenant, SavedUser, UsersFile,
};
use kitsync_marketplace::body::{self, Spec, User};
use kitsync_marketplace::Marketplace;
use kitsync_queue::Queue;
use kitsync_secrets::{OaepVariant, TestKeyPair};
use kitsync_sql::Sql;
use kitsync_store::Actor;
use kitsync_store::Store;
use sea_orm::{ConnectionTrait as _, Statement};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::Digest as _;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Concurrent browsers, each playing one login after another (the baseline runs as many
    /// concurrent callers).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Logins per round, and exchanges per baseline round (after one warm-up of 10 % of each).
    #[arg(long, default_value_t = 2000)]
    logins: usize,
    /// Rounds, each the auth centre's own exchange then kitsync's logins; the medians are
    /// compared.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// Tenants served by the auth centre and known to kitsync.
const TENANTS: usize = 4;
/// Enterprise users per tenant, all authorised (enabled) for [`APP`].
const USERS: usize = 64;
/// The Kit app the OIDC client is bound to.
const APP: &str = "app-1";
/// The app's registered redirect URI (never followed).
const APP_CB: &str = "https://app.example/cb";
const ACCESS_KEY: &str = "bench-access-key";
/// The cookie kitsync binds a login flow to the browser with.
const FLOW_COOKIE: &str = "kitsync_login";

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// What every browser and baseline caller shares.
struct World {
    http: Client,
    /// kitsync's base URL, which is also its issuer.
    kitsync: String,
    /// The auth centre's base URL.
    auth: String,
    client_id: String,
    /// `Basic …` of the OIDC client.
    basic: String,
    tenants: Vec<BenchTenant>,
}

struct BenchTenant {
    id: String,
    /// The Kit app's `clientId` and plaintext `clientSecret` (for the baseline).
    kit_client_id: String,
    kit_secret: String,
    users: Vec<String>,
}

/// One login (or one baseline exchange): who, and the values a browser or app makes up.
struct Attempt {
    tenant: usize,
    user: usize,
    state: String,
    nonce: String,
    verifier: String,
    challenge: String,
}

/// The latencies of one login's requests, and its whole duration.
#[derive(Clone, Copy, Default)]
struct Steps {
    authorize: Duration,
    form_get: Duration,
    form_post: Duration,
    callback: Duration,
    token: Duration,
    userinfo: Duration,
    total: Duration,
}

impl Steps {
    /// The four kitsync requests.
    fn kitsync(&self) -> Duration {
        self.authorize + self.callback + self.token + self.userinfo
    }
}

/// What a run measured.
struct Measured {
    seeded: Duration,
    rates: Vec<f64>,
    base_rates: Vec<f64>,
    steps: Vec<Steps>,
    base_lat: Vec<Duration>,
}

/// # Errors
/// Setting up the database, queue, auth centre or server failed, the database holds ID-token
/// signing keys of another master key, the directory was not applied in time, or a login
/// failed (the error names its step).
pub(crate) async fn run<S: Service>(mut settings: S, a: LoginArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // The apps' secrets arrive RSA-encrypted, as from the marketplace; kitsync decrypts them
    // with the private half.
    let keys = TestKeyPair::generate_3072().context("generating the bench's RSA key pair")?;
    let private = dir.path().join("isv-private.pem");
    create_private_file_if_missing(&private)?;
    std::fs::write(&private, keys.private_pem()?)?;
    settings.kit_mut().rsa_private_key_path = Some(private);
    settings.kit_mut().access_keys = vec![SecretString::from(ACCESS_KEY.to_owned())];
    // A throwaway master key (as every bench): it seals the apps' secrets, the Kit tokens
    // and the ID-token signing key this run creates.
    settings.set_master_key(SecretString::from(
        kitsync_secrets::Sealer::generate_master_key()?,
    ));
    settings.login_mut().public_url = String::new();

    let db = settings.open_db().await?;
    // The signing keys are the database's: one sealed with another master key would sign
    // every ID token, and this run cannot open it.
    let keys_before = signing_keys(&db).await?;
    if keys_before.iter().any(|(_, live)| *live) {
        bail!(
            "the database {} already has ID-token signing keys (oidc_keys), sealed with its \
             own master key; the bench seals with a throwaway key and cannot sign with them. \
             Run it on the embedded default or on a database of its own (KITSYNC_DATABASE__URL)",
            settings.redacted_database_url()
        );
    }
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let (client, secret) = kitsync_login::clients::register(
        &db,
        &Actor::Cli,
        &kitsync_login::clients::NewClient {
            name: format!("bench login {}", &run_id[..8]),
            app_id: APP.into(),
            redirect_uris: vec![APP_CB.into()],
            post_logout_redirect_uris: Vec::new(),
            public: false,
        },
    )
    .await
    .context("registering the bench's OIDC client")?;
    let secret = secret.context("a confidential client has a secret")?;

    let measured = measure(&settings, &db, &a, &run_id, &client, &secret, &keys).await;

    // Whatever happened, the database is left without the bench's client (its sessions
    // revoked) or the signing key it created, so the next run (or a real kitsync) finds it
    // as before.
    let cleaned = async {
        kitsync_login::clients::remove(&db, &Actor::Cli, &client.client_id).await?;
        for (kid, _) in signing_keys(&db).await? {
            if !keys_before.iter().any(|(k, _)| *k == kid) {
                db.execute(
                    Sql::new(db.get_database_backend())
                        .push("DELETE FROM oidc_keys WHERE kid = ")
                        .bind(kid)
                        .take(),
                )
                .await?;
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await
    .context("removing the bench's OIDC client and signing key");
    if let Ok(q) = Queue::connect(settings.queue(), db.clone()).await {
        let _ = q.delete_topology().await;
    }
    let m = measured?;
    cleaned?;
    report(&settings, &db, &a, m);
    db.close().await.ok();
    Ok(())
}

/// Every ID-token signing key of the database, and whether it may sign (not retired).
async fn signing_keys(db: &sea_orm::DatabaseConnection) -> anyhow::Result<Vec<(String, bool)>> {
    let now = chrono::Utc::now().timestamp_millis();
    let rows = db
        .query_all(Statement::from_string(
            db.get_database_backend(),
            format!(
                "SELECT kid, CASE WHEN retired_at IS NULL OR retired_at > {now} THEN 1 ELSE 0 END \
                 FROM oidc_keys"
            ),
        ))
        .await?;
    rows.iter()
        .map(|r| {
            let live: i32 = r.try_get_by_index(1)?;
            Ok((r.try_get_by_index(0)?, live == 1))
        })
        .collect()
}

/// The auth centre and kitsync, the seeding, the warm-up and the rounds.
async fn measure<S: Service>(
    settings: &S,
    db: &sea_orm::DatabaseConnection,
    a: &LoginArgs,
    run_id: &str,
    client: &kitsync_login::clients::Client,
    secret: &SecretString,
    keys: &TestKeyPair,
) -> anyhow::Result<Measured> {
    let concurrency = a.concurrency.max(1);
    let logins = a.logins.max(1);

    // The auth centre: its address first, since it is every tenant's domainName.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let auth = format!("http://{}", listener.local_addr()?);
    let tenants: Vec<BenchTenant> = (0..TENANTS)
        .map(|t| BenchTenant {
            id: format!("bench-login-{}-{t}", &run_id[..8]),
            kit_client_id: format!("{APP}-client-{t}"),
            kit_secret: format!("kit-secret-{}", uuid::Uuid::new_v4().simple()),
            users: (0..USERS).map(|u| format!("user{u:03}")).collect(),
        })
        .collect();
    let centre = AuthCentre::new(users_file(&tenants, &auth)).map_err(anyhow::Error::msg)?;
    let (stop_auth, auth_stopped) = tokio::sync::oneshot::channel::<()>();
    let auth_server = tokio::spawn(centre.serve(listener, async {
        let _ = auth_stopped.await;
    }));

    // kitsync as `serve` runs it: ingress, API and login bridge, and the worker.
    let running = settings.clone().start(Mode::Both).await?;
    let addr = running.addr.context("kitsync did not report its address")?;
    let kitsync = format!("http://{addr}");
    let store = Store::new(db.clone(), settings.store().clone());
    let seeded = Instant::now();
    seed(settings, &kitsync, &auth, &tenants, keys).await?;
    wait_for_directory(&store, &tenants).await?;
    let seeded = seeded.elapsed();

    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let http: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(concurrency)
            .build(connector);
    let world = Arc::new(World {
        http,
        basic: format!(
            "Basic {}",
            b64(
                format!("{}:{}", enc(&client.client_id), enc(secret.expose_secret())).as_bytes(),
                false
            )
        ),
        client_id: client.client_id.clone(),
        kitsync,
        auth,
        tenants,
    });

    // Warm-up (connections, caches, the signing key), then alternating rounds.
    let warm = (logins / 10).max(concurrency);
    drive(&world, plan(warm, 0), concurrency, exchange)
        .await
        .context("baseline warm-up")?;
    drive(&world, plan(warm, 0), concurrency, login)
        .await
        .context("login warm-up")?;
    let mut m = Measured {
        seeded,
        rates: Vec::new(),
        base_rates: Vec::new(),
        steps: Vec::new(),
        base_lat: Vec::new(),
    };
    for r in 1..=a.rounds.max(1) {
        let (lat, secs) = drive(&world, plan(logins, r), concurrency, exchange)
            .await
            .with_context(|| format!("baseline round {r}"))?;
        m.base_rates.push(logins as f64 / secs);
        m.base_lat.extend(lat);
        let (s, secs) = drive(&world, plan(logins, r), concurrency, login)
            .await
            .with_context(|| format!("login round {r}"))?;
        m.rates.push(logins as f64 / secs);
        m.steps.extend(s);
    }

    let _ = running.shutdown.send(true);
    let _ = running.done.await;
    let _ = stop_auth.send(());
    let _ = auth_server.await;
    Ok(m)
}

fn report<S: Service>(settings: &S, db: &sea_orm::DatabaseConnection, a: &LoginArgs, m: Measured) {
    let rate = crate::median(&mut m.rates.clone());
    let base_rate = crate::median(&mut m.base_rates.clone());
    let pct = |mut v: Vec<Duration>| {
        v.sort();
        (
            crate::percentile_ms(&v, 0.5),
            crate::percentile_ms(&v, 0.99),
        )
    };
    let col = |f: fn(&Steps) -> Duration| pct(m.steps.iter().map(f).collect());
    let lat = |label: &str, (p50, p99): (f64, f64), note: &str| {
        let note = if note.is_empty() {
            String::new()
        } else {
            format!("   ({note})")
        };
        println!("  {label:<28}{p50:>8.2} ms / {p99:.2} ms{note}");
    };

    println!(
        "kitsync bench login: {} concurrent browsers, {} rounds of {} logins, \
         {TENANTS} tenants × {USERS} users (seeded by Kit callbacks in {:.1} s), database {}, queue {}",
        a.concurrency.max(1),
        a.rounds.max(1),
        a.logins.max(1),
        m.seeded.as_secs_f64(),
        match db.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => "PostgreSQL",
            _ => "SQLite",
        },
        if settings.queue().amqp_url.is_some() {
            "RabbitMQ"
        } else {
            "embedded"
        }
    );
    println!(
        "  {:<28}{rate:>8.0}   (median; rounds {}; steps 1–5: 7 requests, the auth centre's form GET + POST included)",
        "logins/s",
        crate::list(&m.rates)
    );
    lat("login p50 / p99", col(|s| s.total), "the whole flow");
    lat(
        "kitsync part p50 / p99",
        col(Steps::kitsync),
        "its four requests, summed per login",
    );
    lat("  authorize", col(|s| s.authorize), "");
    lat(
        "  callback",
        col(|s| s.callback),
        "incl. kitsync's Kit token + userinfo round trips",
    );
    lat("  token", col(|s| s.token), "");
    lat("  userinfo", col(|s| s.userinfo), "");
    lat(
        "auth centre login form",
        col(|s| s.form_get + s.form_post),
        "GET + POST, in the flow",
    );
    println!(
        "  {:<28}{base_rate:>8.0}   (median; rounds {}; authorize?login_hint (302 with a code) + token + userinfo, same client and concurrency)",
        "auth centre exchanges/s",
        crate::list(&m.base_rates)
    );
    lat("exchange p50 / p99", pct(m.base_lat), "");
    println!(
        "  {:<28}{:>8.2}   (logins/s ÷ the auth centre's exchanges/s)",
        "ratio",
        rate / base_rate
    );
}

/// What the auth centre serves: the same tenants, app credentials and users kitsync is told.
fn users_file(tenants: &[BenchTenant], auth: &str) -> UsersFile {
    let tenants = tenants
        .iter()
        .map(|t| {
            let users = t
                .users
                .iter()
                .enumerate()
                .map(|(i, u)| {
                    (
                        u.clone(),
                        SavedUser {
                            name: format!("Bench User {i}"),
                            org_code: "root".into(),
                            email: Some(format!("{u}@{}.example.com", t.id)),
                            mobile: None,
                            apps: BTreeMap::from([(
                                APP.to_owned(),
                                Some(SavedAuthorization {
                                    role: "user".into(),
                                    enabled: true,
                                }),
                            )]),
                        },
                    )
                })
                .collect();
            (
                t.id.clone(),
                SavedTenant {
                    name: format!("Bench tenant {}", t.id),
                    domain_name: format!("{auth}/{}", t.id),
                    test: false,
                    apps: BTreeMap::from([(
                        APP.to_owned(),
                        SavedApp {
                            client_id: t.kit_client_id.clone(),
                            client_secret: t.kit_secret.clone(),
                        },
                    )]),
                    departments: BTreeMap::new(),
                    users,
                },
            )
        })
        .collect();
    UsersFile { tenants }
}

/// Tells kitsync about the tenants the way the marketplace does: tenantSync (domainName = the
/// tenant's auth centre), applicationSync (the `clientSecret` RSA-encrypted), authSync.
async fn seed<S: Service>(
    settings: &S,
    kitsync: &str,
    auth: &str,
    tenants: &[BenchTenant],
    keys: &TestKeyPair,
) -> anyhow::Result<()> {
    let market = Marketplace::new(
        &format!("{kitsync}{}", settings.kit().normalized_prefix()),
        ACCESS_KEY,
    )?;
    for t in tenants {
        let mut tenant = Spec::new(&t.id);
        tenant.name = Some(format!("Bench tenant {}", t.id));
        tenant.domain_name = Some(format!("{auth}/{}", t.id));
        let mut app = Spec::new(&t.id);
        app.app_id = Some(APP.into());
        app.client_id = Some(t.kit_client_id.clone());
        app.client_secret = Some(keys.encrypt(&t.kit_secret, OaepVariant::Sha256Mgf1Sha1)?);
        let mut auth_sync = Spec::new(&t.id);
        auth_sync.app_id = Some(APP.into());
        auth_sync.users = t
            .users
            .iter()
            .map(|u| User {
                user_name: u.clone(),
                role: "user".into(),
                enabled: true,
            })
            .collect();
        for (kind, spec) in [
            (CallbackKind::TenantSync, tenant),
            (CallbackKind::ApplicationSync, app),
            (CallbackKind::AuthSync, auth_sync),
        ] {
            let body = body::build(kind, &spec).map_err(anyhow::Error::msg)?;
            let answer = market
                .send(kind, &market.sign(body.to_string().as_bytes()))
                .await
                .with_context(|| format!("seeding: sending {kind} for tenant {}", t.id))?;
            ensure!(
                answer.accepted(),
                "seeding: kitsync did not accept {kind} for tenant {}: HTTP {}, {}",
                t.id,
                answer.status,
                String::from_utf8_lossy(&answer.raw)
            );
        }
    }
    Ok(())
}

/// Waits until the worker applied every tenant, its app and every member's authorisation.
async fn wait_for_directory(store: &Store, tenants: &[BenchTenant]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    for t in tenants {
        for u in &t.users {
            loop {
                let tenant = store.tenant(&t.id).await?;
                let app = store.app_credentials(&t.id, APP).await?;
                let member = store.member(&t.id, u, true).await?;
                let authorised =
                    member.is_some_and(|m| m.apps.iter().any(|g| g.app_id == APP && g.enabled));
                if tenant.is_some() && app.is_some() && authorised {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "the worker did not apply tenant {}, its app and user {u} within 120 s",
                        t.id
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    Ok(())
}

/// `n` attempts: users round-robin over the tenants (tenant 0 user 0, tenant 1 user 0, …),
/// with fresh state, nonce and PKCE verifier each. Made before anything is timed.
fn plan(n: usize, round: usize) -> Arc<Vec<Attempt>> {
    Arc::new(
        (0..n)
            .map(|i| {
                let verifier = format!(
                    "{}{}",
                    uuid::Uuid::new_v4().simple(),
                    uuid::Uuid::new_v4().simple()
                );
                Attempt {
                    tenant: i % TENANTS,
                    user: (i / TENANTS) % USERS,
                    state: format!("r{round}-{i}"),
                    nonce: uuid::Uuid::new_v4().simple().to_string(),
                    challenge: b64(&sha2::Sha256::digest(verifier.as_bytes()), true),
                    verifier,
                }
            })
            .collect(),
    )
}

/// Runs every attempt, `concurrency` at a time; the results and the seconds it took. The
/// first failure stops the run (the other callers are dropped).
async fn drive<T, F, Fut>(
    world: &Arc<World>,
    attempts: Arc<Vec<Attempt>>,
    concurrency: usize,
    f: F,
) -> anyhow::Result<(Vec<T>, f64)>
where
    T: Send + 'static,
    F: Fn(Arc<World>, Arc<Vec<Attempt>>, usize) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (world, attempts, next) = (Arc::clone(world), Arc::clone(&attempts), Arc::clone(&next));
        tasks.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= attempts.len() {
                    return Ok::<_, anyhow::Error>(out);
                }
                out.push(f(Arc::clone(&world), Arc::clone(&attempts), i).await?);
            }
        });
    }
    let mut all = Vec::with_capacity(attempts.len());
    while let Some(r) = tasks.join_next().await {
        all.extend(r.context("bench browser task")??);
    }
    Ok((all, started.elapsed().as_secs_f64()))
}

/// An answer, read to the end.
struct Reply {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn location(&self) -> Option<&str> {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok())
    }

    /// What a failed step shows: the status, where it pointed, what kitsync's error page or
    /// JSON error says.
    fn describe(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let mut out = format!("HTTP {}", self.status.as_u16());
        if let Some(l) = self.location() {
            let _ = write!(out, " to {l}");
        }
        if let Some(code) = text
            .split("data-error=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        {
            let _ = write!(out, ", error page {code}");
            if let Some(p) = text
                .split("<p>")
                .nth(1)
                .and_then(|r| r.split("</p>").next())
            {
                let _ = write!(out, ": {}", unescape(p));
            }
        } else if !text.is_empty() {
            let _ = write!(out, ": {}", text.chars().take(300).collect::<String>());
        }
        out
    }

    /// The JSON of a 200 answer.
    fn ok_json(&self) -> Option<serde_json::Value> {
        (self.status == StatusCode::OK)
            .then(|| serde_json::from_slice(&self.body).ok())
            .flatten()
    }

    /// The string `name` of a 200 answer's JSON.
    fn ok_str(&self, name: &str) -> Option<String> {
        str_field(self.ok_json().as_ref(), name).map(str::to_owned)
    }

    /// The `Location` of a 302 that starts with `prefix`.
    fn redirect_to(&self, prefix: &str) -> Option<&str> {
        (self.status == StatusCode::FOUND)
            .then(|| self.location())
            .flatten()
            .filter(|l| l.starts_with(prefix))
    }
}

impl World {
    /// Sends a request and reads the whole answer; the time from sending to the last byte.
    async fn send(
        &self,
        req: hyper::http::request::Builder,
        body: Option<String>,
    ) -> anyhow::Result<(Reply, Duration)> {
        let req = match body {
            Some(b) => req
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(b)))?,
            None => req.body(Full::new(Bytes::new()))?,
        };
        let t = Instant::now();
        let res = self.http.request(req).await?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok((
            Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            },
            t.elapsed(),
        ))
    }
}

/// One browser login, steps 1–5, each answer checked.
async fn login(world: Arc<World>, attempts: Arc<Vec<Attempt>>, i: usize) -> anyhow::Result<Steps> {
    let a = &attempts[i];
    let tenant = &world.tenants[a.tenant];
    let user = &tenant.users[a.user];
    let who = || format!("tenant {}, user {user}", tenant.id);
    let started = Instant::now();
    let mut s = Steps::default();

    // 1. The app sends the browser to kitsync.
    let uri = format!(
        "{}/oidc/authorize?response_type=code&client_id={}&redirect_uri={}&scope=openid&state={}\
         &nonce={}&code_challenge={}&code_challenge_method=S256&login_hint={}",
        world.kitsync,
        enc(&world.client_id),
        enc(APP_CB),
        enc(&a.state),
        enc(&a.nonce),
        a.challenge,
        enc(&tenant.id)
    );
    let (r, t) = world
        .send(hyper::Request::get(&uri), None)
        .await
        .with_context(|| format!("step 1, GET /oidc/authorize ({})", who()))?;
    s.authorize = t;
    let at_kit = format!("{}/{}/api/v1/oauth2/authorize?", world.auth, tenant.id);
    let Some(kit_url) = r.redirect_to(&at_kit).map(str::to_owned) else {
        bail!(
            "step 1, GET /oidc/authorize ({}): expected a 302 to {at_kit}…, got {}",
            who(),
            r.describe()
        );
    };
    let flow = r
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{FLOW_COOKIE}=")))
        .and_then(|v| v.split(';').next())
        .filter(|v| !v.is_empty())
        .map(|v| format!("{FLOW_COOKIE}={v}"));
    let Some(flow) = flow else {
        bail!(
            "step 1, GET /oidc/authorize ({}): no {FLOW_COOKIE} cookie was set",
            who()
        );
    };

    // 2. The auth centre's login form: shown, then posted with the user name.
    let (r, t) = world
        .send(hyper::Request::get(&kit_url), None)
        .await
        .with_context(|| format!("step 2, GET the auth centre's login form ({})", who()))?;
    s.form_get = t;
    let html = String::from_utf8_lossy(&r.body);
    let fields = hidden_inputs(&html);
    if r.status != StatusCode::OK
        || !html.contains("name=\"user_name\"")
        || !fields.iter().any(|(k, _)| k == "state")
    {
        bail!(
            "step 2, GET the auth centre's login form ({}): expected the form, got {}",
            who(),
            r.describe()
        );
    }
    let mut form = String::new();
    for (k, v) in &fields {
        let _ = write!(form, "{}={}&", enc(k), enc(v));
    }
    let _ = write!(form, "user_name={}", enc(user));
    let action = kit_url.split('?').next().unwrap_or_default();
    let (r, t) = world
        .send(hyper::Request::post(action), Some(form))
        .await
        .with_context(|| format!("step 2, POST the auth centre's login form ({})", who()))?;
    s.form_post = t;
    let at_callback = format!("{}/login/kit/callback?", world.kitsync);
    let Some(callback) = r.redirect_to(&at_callback).map(str::to_owned) else {
        bail!(
            "step 2, POST the auth centre's login form ({}): expected a 302 to {at_callback}…, got {}",
            who(),
            r.describe()
        );
    };

    // 3. Back at kitsync with the Kit code and the flow cookie.
    let (r, t) = world
        .send(hyper::Request::get(&callback).header(COOKIE, &flow), None)
        .await
        .with_context(|| format!("step 3, GET /login/kit/callback ({})", who()))?;
    s.callback = t;
    let at_app = format!("{APP_CB}?");
    let back = r.redirect_to(&at_app).map(query).transpose()?;
    let code = back.as_ref().and_then(|q| q.get("code"));
    let Some(code) = code else {
        bail!(
            "step 3, GET /login/kit/callback ({}): expected a 302 to {at_app}code=…, got {}",
            who(),
            r.describe()
        );
    };
    let back = back.as_ref().context("checked above")?;
    ensure!(
        back.get("state") == Some(&a.state) && back.get("iss") == Some(&world.kitsync),
        "step 3, GET /login/kit/callback ({}): the app got state {:?} and iss {:?}, not {:?} and {:?}",
        who(),
        back.get("state"),
        back.get("iss"),
        a.state,
        world.kitsync
    );

    // 4. The app redeems the code.
    let form = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={}",
        enc(code),
        enc(APP_CB),
        enc(&a.verifier)
    );
    let (r, t) = world
        .send(
            hyper::Request::post(format!("{}/oidc/token", world.kitsync))
                .header(AUTHORIZATION, &world.basic),
            Some(form),
        )
        .await
        .with_context(|| format!("step 4, POST /oidc/token ({})", who()))?;
    s.token = t;
    let tokens = r.ok_json();
    let field = |name: &str| str_field(tokens.as_ref(), name).filter(|s| !s.is_empty());
    let (Some(id_token), Some(access)) = (field("id_token"), field("access_token")) else {
        bail!(
            "step 4, POST /oidc/token ({}): expected an id_token and an access_token, got {}",
            who(),
            r.describe()
        );
    };
    ensure!(
        id_token.split('.').count() == 3,
        "step 4, POST /oidc/token ({}): the id_token is not a JWS: {id_token}",
        who()
    );

    // 5. The app asks who logged in.
    let (r, t) = world
        .send(
            hyper::Request::get(format!("{}/oidc/userinfo", world.kitsync))
                .header(AUTHORIZATION, format!("Bearer {access}")),
            None,
        )
        .await
        .with_context(|| format!("step 5, GET /oidc/userinfo ({})", who()))?;
    s.userinfo = t;
    let claims = r.ok_json();
    let claim = |name: &str| str_field(claims.as_ref(), name);
    ensure!(
        claim("user_name") == Some(user.as_str()) && claim("tenant_id") == Some(tenant.id.as_str()),
        "step 5, GET /oidc/userinfo ({}): expected the user's claims, got {}",
        who(),
        r.describe()
    );
    s.total = started.elapsed();
    Ok(s)
}

/// The baseline: one Kit login at the auth centre alone — `authorize` with `login_hint`
/// (302 with a code at once), the code exchange, userinfo. Its whole duration.
async fn exchange(
    world: Arc<World>,
    attempts: Arc<Vec<Attempt>>,
    i: usize,
) -> anyhow::Result<Duration> {
    let a = &attempts[i];
    let tenant = &world.tenants[a.tenant];
    let user = &tenant.users[a.user];
    let who = || format!("tenant {}, user {user}", tenant.id);
    let base = format!("{}/{}/api/v1/oauth2", world.auth, tenant.id);
    let callback = format!("{}/login/kit/callback", world.kitsync);
    let started = Instant::now();

    let uri = format!(
        "{base}/authorize?client_id={}&redirect_uri={}&response_type=code&scope=get_user_info&state={}&login_hint={}",
        enc(&tenant.kit_client_id),
        enc(&callback),
        enc(&a.state),
        enc(user)
    );
    let (r, _) = world
        .send(hyper::Request::get(&uri), None)
        .await
        .with_context(|| format!("baseline authorize ({})", who()))?;
    let back = r
        .redirect_to(&format!("{callback}?"))
        .map(query)
        .transpose()?;
    let Some(code) = back.as_ref().and_then(|q| q.get("code")) else {
        bail!(
            "baseline authorize ({}): expected a 302 with a code, got {}",
            who(),
            r.describe()
        );
    };

    let form = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&client_id={}&client_secret={}",
        enc(code),
        enc(&callback),
        enc(&tenant.kit_client_id),
        enc(&tenant.kit_secret)
    );
    let (r, _) = world
        .send(hyper::Request::post(format!("{base}/token")), Some(form))
        .await
        .with_context(|| format!("baseline token ({})", who()))?;
    let access = r.ok_str("access_token");
    let Some(access) = access else {
        bail!(
            "baseline token ({}): expected an access_token, got {}",
            who(),
            r.describe()
        );
    };

    let (r, _) = world
        .send(
            hyper::Request::get(format!("{base}/userinfo"))
                .header(AUTHORIZATION, format!("Bearer {access}")),
            None,
        )
        .await
        .with_context(|| format!("baseline userinfo ({})", who()))?;
    let name = r.ok_str("userName");
    ensure!(
        name.as_deref() == Some(user.as_str()),
        "baseline userinfo ({}): expected userName {user}, got {}",
        who(),
        r.describe()
    );
    Ok(started.elapsed())
}

/// Creates `path` empty and 0600 unless it exists, as kitsync creates its key files (the
/// bench's RSA private key is written into it).
fn create_private_file_if_missing(path: &std::path::Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The string `name` of a JSON object, if there is one.
fn str_field<'a>(json: Option<&'a serde_json::Value>, name: &str) -> Option<&'a str> {
    json.and_then(|v| v.get(name))
        .and_then(serde_json::Value::as_str)
}

/// The query of a URL, decoded.
fn query(url: &str) -> anyhow::Result<HashMap<String, String>> {
    let uri: axum::http::Uri = url.parse().with_context(|| format!("{url} is not a URI"))?;
    let axum::extract::Query(q) =
        axum::extract::Query::<HashMap<String, String>>::try_from_uri(&uri)
            .with_context(|| format!("the query of {url}"))?;
    Ok(q)
}

/// The hidden inputs of the first form of an HTML page, unescaped.
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let form = html.split("</form>").next().unwrap_or_default();
    form.split("<input type=\"hidden\" ")
        .skip(1)
        .filter_map(|chunk| {
            let name = chunk.split("name=\"").nth(1)?.split('"').next()?;
            let value = chunk.split("value=\"").nth(1)?.split('"').next()?;
            Some((unescape(name), unescape(value)))
        })
        .collect()
}

/// Text of an HTML attribute value or element, unescaped.
fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Percent-encodes everything but the unreserved characters (a query or form value).
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b));
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// Base64: the URL-safe alphabet without padding (PKCE), or the standard one with it (Basic).
fn b64(bytes: &[u8], url: bool) -> String {
    let alphabet: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |k: usize| u32::from(chunk.get(k).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(alphabet[((n >> (18 - 6 * k)) & 63) as usize]));
            } else if !url {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_pkce_match_the_rfcs() {
        // RFC 4648 §10.
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64(plain.as_bytes(), false), encoded);
        }
        // RFC 7636, appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            b64(&sha2::Sha256::digest(verifier.as_bytes()), true),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn values_are_encoded_and_queries_decoded() {
        assert_eq!(
            enc("https://a.example/cb?x=1 2"),
            "https%3A%2F%2Fa.example%2Fcb%3Fx%3D1%202"
        );
        let q = query("https://app.example/cb?code=a%2Bb&state=s+1&iss=http%3A%2F%2Fk").unwrap();
        assert_eq!(q["code"], "a+b");
        assert_eq!(q["state"], "s 1");
        assert_eq!(q["iss"], "http://k");
        let html = "<form method=\"post\" action=\"authorize\"><input type=\"hidden\" name=\"state\" value=\"a&amp;b\"><input name=\"user_name\"></form>";
        assert_eq!(hidden_inputs(html), vec![("state".into(), "a&b".into())]);
    }
}
