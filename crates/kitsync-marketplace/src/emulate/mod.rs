//! A local KooGallery: plays a history against an ISV's Kit endpoint the way the marketplace
//! delivers it, and judges every answer.
//!
//! - [`world`]: the history and the truth it leads to (scenarios).
//! - Delivery: phase by phase; within a phase callbacks are reordered, delayed, duplicated (a
//!   marketplace retry: the same body, a fresh signature, which must be accepted again) and
//!   replayed (the same bytes and headers, which must be refused), sent `concurrency` at a
//!   time and at most `rate` a second. An answer of `000005`, or none within 5 s, is retried
//!   like the marketplace's "re-send" (fresh signature, backing off).
//! - Probes: the requests a marketplace never sends but an attacker does — wrong or missing
//!   signatures, tampered bodies, clocks skewed inside and past the 60 s window, missing
//!   headers, an invalid body, an oversize body — each with the answer it must get.
//! - Every answer must be HTTP 200, carry a `Body-Sign` that verifies under the access key, and
//!   come within 5 s.
//! - With a directory API ([`directory`]), the directory must converge to the truth; the time
//!   it took is reported.
//!
//! The report names every failed case with the request that exposed it.
pub mod directory;
pub mod world;

use crate::authcentre::{SavedApp, SavedAuthorization, SavedTenant, SavedUser, UsersFile};
use crate::rng::Rng;
use crate::{Answer, BodySign, Headers, Marketplace, SendError, Signed, MARKETPLACE_TIMEOUT};
use kitsync_domain::CallbackKind;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use world::{Accounts, Scenario, Size, Step, TenantTruth};

/// How a run is played.
#[derive(Clone, Debug)]
pub struct Options {
    pub scenarios: BTreeSet<Scenario>,
    pub size: Size,
    pub seed: u64,
    /// Part of every tenant id, so runs against one endpoint do not meet.
    pub run_id: String,
    /// Callbacks in flight at once.
    pub concurrency: usize,
    /// Callbacks started per second, at most (`None`: as fast as answers come).
    pub rate: Option<f64>,
    /// Share of callbacks delivered a second time as a marketplace retry.
    pub duplicates: f64,
    /// Share of accepted callbacks re-sent byte for byte (a replay).
    pub replays: f64,
    pub reorder: bool,
    /// Each send waits up to this long first.
    pub max_delay_ms: u64,
    /// Re-sends of a callback answered `000005` or not at all.
    pub retries: u32,
    /// Play the protocol probes.
    pub probes: bool,
    /// Size of the oversize probe's body.
    pub oversize_bytes: usize,
    /// A kitsync directory API and a `directory:read` token, to check convergence.
    pub directory: Option<(String, String)>,
    pub converge_timeout: Duration,
    /// A `kitsync emulate auth-centre` URL: every tenant's `domainName` is `URL/{tenantId}`
    /// (default: `https://{tenantId}.tenant.example.com`).
    pub auth_centre_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            scenarios: Scenario::ALL.into_iter().collect(),
            size: Size {
                tenants: 3,
                users: 600,
                departments: 12,
            },
            seed: 1,
            run_id: "run".into(),
            concurrency: 8,
            rate: None,
            duplicates: 0.05,
            replays: 0.05,
            reorder: true,
            max_delay_ms: 20,
            retries: 3,
            probes: true,
            oversize_bytes: 16 * 1024 * 1024,
            directory: None,
            converge_timeout: Duration::from_secs(60),
            auth_centre_url: None,
        }
    }
}

/// The request behind a failed case.
#[derive(Clone, Debug, Serialize)]
pub struct RequestReport {
    pub kind: String,
    pub url: String,
    pub nonce: Option<String>,
    pub timestamp: Option<String>,
    pub sign: Option<String>,
    /// The body, cut at 2 000 characters.
    pub body: String,
}

/// One check.
#[derive(Clone, Debug, Serialize)]
pub struct CaseReport {
    pub name: String,
    pub expected: String,
    pub got: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestReport>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConvergenceReport {
    pub converged: bool,
    /// From the last answer to the first read that equalled the truth.
    pub after_ms: u128,
    pub tenants: usize,
    /// What still differed at the deadline.
    pub differences: Vec<String>,
}

/// Everything a run saw.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub endpoint: String,
    pub seed: u64,
    pub run_id: String,
    pub scenarios: Vec<String>,
    /// Requests sent (history, duplicates, replays, retries, probes).
    pub requests: usize,
    /// History callbacks, each accepted once it was.
    pub callbacks: usize,
    pub retried: usize,
    pub elapsed_ms: u128,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub cases: Vec<CaseReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub convergence: Option<ConvergenceReport>,
    /// What the tenants' auth centre needs (`--save-users`); never part of the printed
    /// report, since it holds the apps' plaintext secrets.
    #[serde(skip)]
    pub users: UsersFile,
}

impl Report {
    /// Every case passed (and the directory converged, when checked).
    #[must_use]
    pub fn ok(&self) -> bool {
        self.cases.iter().all(|c| c.ok) && self.convergence.as_ref().is_none_or(|c| c.converged)
    }

    /// The failed cases.
    pub fn failures(&self) -> impl Iterator<Item = &CaseReport> {
        self.cases.iter().filter(|c| !c.ok)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "kitsync emulate → {} (seed {}, run {}; scenarios {})",
            self.endpoint,
            self.seed,
            self.run_id,
            self.scenarios.join(", ")
        )?;
        writeln!(
            f,
            "  {} requests ({} history callbacks, {} retried) in {} ms; answers p50 {:.1} ms, p99 {:.1} ms",
            self.requests, self.callbacks, self.retried, self.elapsed_ms, self.latency_p50_ms, self.latency_p99_ms
        )?;
        for c in &self.cases {
            writeln!(
                f,
                "  {} {}: expected {}; got {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.expected,
                c.got
            )?;
            if let (false, Some(r)) = (c.ok, &c.request) {
                writeln!(f, "       POST {} ({})", r.url, r.kind)?;
                for (h, v) in [
                    ("x-nonce", &r.nonce),
                    ("x-timestamp", &r.timestamp),
                    ("x-sign", &r.sign),
                ] {
                    match v {
                        Some(v) => writeln!(f, "       {h}: {v}")?,
                        None => writeln!(f, "       ({h} left out)")?,
                    }
                }
                writeln!(f, "       {}", r.body)?;
            }
        }
        if let Some(c) = &self.convergence {
            if c.converged {
                writeln!(
                    f,
                    "  ok   directory: {} tenants equal the marketplace's truth {} ms after the last answer",
                    c.tenants, c.after_ms
                )?;
            } else {
                writeln!(
                    f,
                    "  FAIL directory: not equal to the marketplace's truth after {} ms:",
                    c.after_ms
                )?;
                for d in &c.differences {
                    writeln!(f, "       {d}")?;
                }
            }
        }
        write!(
            f,
            "{}",
            if self.ok() {
                "the endpoint behaved"
            } else {
                "the endpoint did not behave"
            }
        )
    }
}

/// What one send produced, with what was sent.
struct Sent {
    signed: Option<Signed>,
    headers: (Option<String>, Option<String>, Option<String>),
    body: Vec<u8>,
    kind: CallbackKind,
    answer: Result<Answer, SendError>,
}

impl Sent {
    fn request(&self, market: &Marketplace) -> RequestReport {
        let mut body = String::from_utf8_lossy(&self.body).to_string();
        if body.len() > 2000 {
            let cut = (0..=2000)
                .rev()
                .find(|i| body.is_char_boundary(*i))
                .unwrap_or(0);
            body.truncate(cut);
            body.push_str(&format!("… ({} bytes)", self.body.len()));
        }
        RequestReport {
            kind: self.kind.path().to_owned(),
            url: market.url(self.kind),
            nonce: self.headers.0.clone(),
            timestamp: self.headers.1.clone(),
            sign: self.headers.2.clone(),
            body,
        }
    }
}

/// What an answer must be: `Ok` or why not.
fn judge(answer: &Result<Answer, SendError>, expected: &[&str]) -> Result<String, String> {
    let a = answer.as_ref().map_err(|e| format!("no answer: {e}"))?;
    let code = a.result_code.as_deref().unwrap_or("none");
    let got = format!(
        "HTTP {}, resultCode {code}{}",
        a.status,
        a.result_msg
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default()
    );
    if a.elapsed > MARKETPLACE_TIMEOUT {
        return Err(format!(
            "{got} after {} ms: the marketplace gives up at 5 s",
            a.elapsed.as_millis()
        ));
    }
    if a.status != 200 {
        return Err(format!("{got}: a Kit answer is always HTTP 200"));
    }
    if a.body_sign != BodySign::Verified {
        return Err(format!("{got}; Body-Sign {}", a.body_sign.as_str()));
    }
    if !expected.contains(&code) {
        return Err(got);
    }
    Ok(got)
}

fn retryable(answer: &Result<Answer, SendError>) -> bool {
    match answer {
        Err(_) => true,
        Ok(a) => a.result_code.as_deref() == Some("000005"),
    }
}

async fn send_signed(market: &Marketplace, kind: CallbackKind, signed: Signed) -> Sent {
    let answer = market.send(kind, &signed).await;
    Sent {
        headers: (
            Some(signed.nonce.clone()),
            Some(signed.timestamp.clone()),
            Some(signed.sign.clone()),
        ),
        body: signed.body.clone(),
        signed: Some(signed),
        kind,
        answer,
    }
}

/// A history callback delivered like the marketplace: signed now, re-sent after `000005` or
/// silence. Returns every attempt; the last one is the outcome.
async fn deliver(market: &Marketplace, step: &Step, retries: u32) -> Vec<Sent> {
    let body = serde_json::to_vec(&step.body).unwrap_or_default();
    let mut attempts = Vec::new();
    for attempt in 0..=retries {
        let sent = send_signed(market, step.kind, market.sign(&body)).await;
        let again = retryable(&sent.answer) && attempt < retries;
        attempts.push(sent);
        if !again {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
    }
    attempts
}

/// How a history callback is sent in a phase.
#[derive(Clone, Copy)]
enum Delivery {
    Original,
    /// The marketplace sending it again (fresh signature): must be accepted again.
    Duplicate,
}

struct Tally {
    requests: usize,
    retried: usize,
    latencies: Vec<Duration>,
    cases: Vec<CaseReport>,
    failed_history: Vec<CaseReport>,
    failed_history_count: usize,
    accepted: Vec<(CallbackKind, Signed, String)>,
}

impl Tally {
    fn record_latency(&mut self, answer: &Result<Answer, SendError>) {
        if let Ok(a) = answer {
            self.latencies.push(a.elapsed);
        }
    }
}

/// Plays the history and the probes against `market`.
///
/// # Errors
/// The history could not be built (e.g. the secret could not be encrypted).
pub async fn run(
    market: &Marketplace,
    opts: &Options,
    encrypt: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Report, String> {
    let started = Instant::now();
    let now = chrono::Utc::now().timestamp_millis();
    let history = world::generate(
        &opts.scenarios,
        opts.size,
        opts.seed,
        &opts.run_id,
        now,
        encrypt,
        opts.auth_centre_url.as_deref(),
    )?;
    let mut truth = history.truth.clone();
    let mut rng = Rng::new(opts.seed ^ 0x5EED_F00D);
    let market = Arc::new(market.clone());
    let mut tally = Tally {
        requests: 0,
        retried: 0,
        latencies: Vec::new(),
        cases: Vec::new(),
        failed_history: Vec::new(),
        failed_history_count: 0,
        accepted: Vec::new(),
    };
    let callbacks: usize = history.phases.iter().map(Vec::len).sum();
    let mut duplicates = 0usize;
    let gap = opts
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    for phase in &history.phases {
        let mut plan: Vec<(usize, Delivery)> =
            (0..phase.len()).map(|i| (i, Delivery::Original)).collect();
        for i in 0..phase.len() {
            if rng.chance(opts.duplicates) {
                plan.push((i, Delivery::Duplicate));
                duplicates += 1;
            }
        }
        if opts.reorder {
            rng.shuffle(&mut plan);
        }
        let slots = Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, how) in plan {
            if let Some(gap) = gap {
                tokio::time::sleep(gap).await;
            }
            let delay = Duration::from_millis(rng.next_u64() % (opts.max_delay_ms + 1));
            let step = phase[i].clone();
            let (market, slots, retries) = (Arc::clone(&market), Arc::clone(&slots), opts.retries);
            let Ok(slot) = slots.acquire_owned().await else {
                break;
            };
            tasks.spawn(async move {
                tokio::time::sleep(delay).await;
                let attempts = deliver(&market, &step, retries).await;
                drop(slot);
                (step, how, attempts)
            });
        }
        while let Some(done) = tasks.join_next().await {
            let Ok((step, how, attempts)) = done else {
                continue;
            };
            tally.requests += attempts.len();
            tally.retried += attempts.len().saturating_sub(1);
            for a in &attempts {
                tally.record_latency(&a.answer);
            }
            let Some(last) = attempts.last() else {
                continue;
            };
            match judge(&last.answer, &["000000"]) {
                Ok(_) => {
                    if let (Delivery::Original, Some(s)) = (how, &last.signed) {
                        tally
                            .accepted
                            .push((step.kind, s.clone(), step.what.clone()));
                    }
                }
                Err(got) => {
                    tally.failed_history_count += 1;
                    if tally.failed_history.len() < 20 {
                        tally.failed_history.push(CaseReport {
                            name: match how {
                                Delivery::Original => step.what.clone(),
                                Delivery::Duplicate => format!("{} (delivered again)", step.what),
                            },
                            expected: "HTTP 200, 000000, a Body-Sign that verifies, within 5 s"
                                .into(),
                            got,
                            ok: false,
                            request: Some(last.request(&market)),
                        });
                    }
                }
            }
        }
        // Replays of this phase's accepted callbacks: the same bytes and headers again.
        let accepted = std::mem::take(&mut tally.accepted);
        for (kind, signed, what) in &accepted {
            if !rng.chance(opts.replays) {
                continue;
            }
            let sent = send_signed(&market, *kind, signed.clone()).await;
            tally.requests += 1;
            tally.record_latency(&sent.answer);
            let verdict = judge(&sent.answer, &["000001"]);
            let ok = verdict.is_ok();
            tally.cases.push(CaseReport {
                name: format!("replay of \"{what}\""),
                expected: "000001 (refused: the same signature again), signed, within 5 s".into(),
                got: verdict.unwrap_or_else(|e| e),
                ok,
                request: (!ok).then(|| sent.request(&market)),
            });
        }
    }
    let accepted_all = callbacks + duplicates - tally.failed_history_count;
    let mut cases = vec![CaseReport {
        name: format!("history: {callbacks} callbacks and {duplicates} marketplace re-deliveries"),
        expected: "every one answered 000000, signed, within 5 s (after retries of 000005)".into(),
        got: format!(
            "{accepted_all} of {} accepted, {} retried",
            callbacks + duplicates,
            tally.retried
        ),
        ok: tally.failed_history_count == 0,
        request: None,
    }];
    if tally.failed_history_count > tally.failed_history.len() {
        cases.push(CaseReport {
            name: "history: further failures".into(),
            expected: "none".into(),
            got: format!(
                "{} more like the ones below",
                tally.failed_history_count - tally.failed_history.len()
            ),
            ok: false,
            request: None,
        });
    }
    cases.append(&mut tally.failed_history);
    cases.append(&mut tally.cases);
    if opts.probes {
        let (probe_cases, probe_truth, sent) = probe(&market, opts, now).await;
        tally.requests += sent.len();
        for s in &sent {
            tally.record_latency(&s.answer);
        }
        cases.extend(probe_cases);
        truth.extend(probe_truth);
    }
    let last_answer = Instant::now();
    let convergence = match &opts.directory {
        Some((url, token)) => {
            Some(converge(url, token, &truth, opts.converge_timeout, last_answer).await)
        }
        None => None,
    };
    tally.latencies.sort_unstable();
    let pct = |p: f64| {
        tally
            .latencies
            .get(((tally.latencies.len().saturating_sub(1)) as f64 * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(Report {
        endpoint: market
            .url(CallbackKind::TenantSync)
            .trim_end_matches("/tenantSync")
            .to_owned(),
        seed: opts.seed,
        run_id: opts.run_id.clone(),
        scenarios: opts
            .scenarios
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect(),
        requests: tally.requests,
        callbacks,
        retried: tally.retried,
        elapsed_ms: started.elapsed().as_millis(),
        latency_p50_ms: pct(0.5),
        latency_p99_ms: pct(0.99),
        users: users_file(&truth, &history.accounts, opts.auth_centre_url.as_deref()),
        cases,
        convergence,
    })
}

/// The users file of the tenants that are not deleted: their apps with the plaintext secrets,
/// and every user ever authorised with the authorisation each bound app gives it now.
#[must_use]
pub fn users_file(
    truth: &BTreeMap<String, TenantTruth>,
    accounts: &BTreeMap<String, Accounts>,
    auth_centre_url: Option<&str>,
) -> UsersFile {
    let mut tenants = BTreeMap::new();
    for (t, tt) in truth.iter().filter(|(_, tt)| !tt.deleted) {
        let acc = accounts.get(t).cloned().unwrap_or_else(|| Accounts {
            domain_name: world::domain_name(auth_centre_url, t),
            ..Accounts::default()
        });
        let apps = tt
            .apps
            .iter()
            .map(|(app, client_id)| {
                let secret = acc.secrets.get(app).cloned().unwrap_or_default();
                (
                    app.clone(),
                    SavedApp {
                        client_id: client_id.clone(),
                        client_secret: secret,
                    },
                )
            })
            .collect();
        let users = acc
            .users
            .iter()
            .map(|(user, (name, org))| {
                let apps = tt
                    .apps
                    .keys()
                    .map(|app| {
                        let auth = tt.authorizations.get(&(app.clone(), user.clone())).map(
                            |(role, enabled)| SavedAuthorization {
                                role: role.clone(),
                                enabled: *enabled,
                            },
                        );
                        (app.clone(), auth)
                    })
                    .collect();
                (
                    user.clone(),
                    SavedUser {
                        name: name.clone(),
                        org_code: org.clone(),
                        email: None,
                        mobile: None,
                        apps,
                    },
                )
            })
            .collect();
        tenants.insert(
            t.clone(),
            SavedTenant {
                name: tt.name.clone(),
                domain_name: acc.domain_name.clone(),
                test: tt.test,
                apps,
                departments: tt
                    .departments
                    .iter()
                    .map(|(code, (name, _))| (code.clone(), name.clone()))
                    .collect(),
                users,
            },
        );
    }
    UsersFile { tenants }
}

/// Reads the directory until it equals `truth` or `timeout` passes.
async fn converge(
    url: &str,
    token: &str,
    truth: &BTreeMap<String, TenantTruth>,
    timeout: Duration,
    since: Instant,
) -> ConvergenceReport {
    let dir = match directory::Directory::new(url, token) {
        Ok(d) => d,
        Err(e) => {
            return ConvergenceReport {
                converged: false,
                after_ms: 0,
                tenants: truth.len(),
                differences: vec![e.to_string()],
            }
        }
    };
    let deadline = since + timeout;
    loop {
        let mut differences = Vec::new();
        for (t, want) in truth {
            let apps: Vec<String> = want.apps.keys().cloned().collect();
            match dir.read(t, &apps).await {
                Ok(got) => differences.extend(directory::differences(t, want, &got)),
                Err(e) => differences.push(format!("{t}: {e}")),
            }
        }
        if differences.is_empty() || Instant::now() >= deadline {
            return ConvergenceReport {
                converged: differences.is_empty(),
                after_ms: since.elapsed().as_millis(),
                tenants: truth.len(),
                differences,
            };
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The requests a marketplace never sends, each with the answer it must get, against a test
/// tenant of its own. Returns the cases, the probe tenant's truth and what was sent.
async fn probe(
    market: &Marketplace,
    opts: &Options,
    now: i64,
) -> (Vec<CaseReport>, BTreeMap<String, TenantTruth>, Vec<Sent>) {
    let t = format!("emu-{}-probe", opts.run_id);
    let mut cases = Vec::new();
    let mut all = Vec::new();
    let mut clock = now - 1_800_000;
    let mut body = |name: &str| {
        clock += 1000;
        let mut s = crate::body::Spec::new(&t);
        s.name = Some(name.to_owned());
        s.domain_name = Some(world::domain_name(opts.auth_centre_url.as_deref(), &t));
        s.test = true;
        s.at = kitsync_domain::KitTime::from_millis(clock);
        crate::body::build(CallbackKind::TenantSync, &s)
            .map(|v| serde_json::to_vec(&v).unwrap_or_default())
            .unwrap_or_default()
    };
    let kind = CallbackKind::TenantSync;
    let wall = || chrono::Utc::now().timestamp_millis();
    let mut final_name = String::new();
    let mut check = |name: &str, expected: &[&str], sent: Sent, cases: &mut Vec<CaseReport>| {
        let verdict = judge(&sent.answer, expected);
        let ok = verdict.is_ok();
        cases.push(CaseReport {
            name: name.to_owned(),
            expected: format!("{}, signed, within 5 s", expected.join(" or ")),
            got: verdict.unwrap_or_else(|e| e),
            ok,
            request: (!ok).then(|| sent.request(market)),
        });
        all.push(sent);
        ok
    };
    let raw = |headers: (Option<String>, Option<String>, Option<String>), body: Vec<u8>| async move {
        let h = Headers {
            nonce: headers.0.as_deref(),
            timestamp: headers.1.as_deref(),
            sign: headers.2.as_deref(),
        };
        let answer = market.send_parts(kind, &h, body.clone()).await;
        (answer, body)
    };
    let parts = |s: &Signed| {
        (
            Some(s.nonce.clone()),
            Some(s.timestamp.clone()),
            Some(s.sign.clone()),
        )
    };

    // The baseline: an authentic callback.
    let first = market.sign(&body("Probe tenant"));
    let sent = send_signed(market, kind, first.clone()).await;
    if check(
        "probe: an authentic callback",
        &["000000"],
        sent,
        &mut cases,
    ) {
        final_name = "Probe tenant".into();
    }
    // The same bytes and headers again.
    let sent = send_signed(market, kind, first.clone()).await;
    check(
        "probe: the same request replayed",
        &["000001"],
        sent,
        &mut cases,
    );
    // Clocks inside the window are accepted, past it refused.
    for (label, offset, expected, name) in [
        (
            "x-timestamp 58 s behind",
            -58_000,
            "000000",
            "Probe tenant (behind)",
        ),
        (
            "x-timestamp 58 s ahead",
            58_000,
            "000000",
            "Probe tenant (ahead)",
        ),
        ("x-timestamp 62 s behind", -62_000, "000002", "stale"),
        ("x-timestamp 62 s ahead", 62_000, "000002", "future"),
    ] {
        let s = market.sign_at(&body(name), &crate::nonce(), wall() + offset);
        let sent = send_signed(market, kind, s).await;
        if check(&format!("probe: {label}"), &[expected], sent, &mut cases) && expected == "000000"
        {
            final_name = name.to_owned();
        }
    }
    // Authentication failures.
    let wrong = Marketplace {
        key: format!("{}-wrong", market.key),
        ..market.clone()
    };
    let sent = send_signed(market, kind, wrong.sign(&body("wrong key"))).await;
    check(
        "probe: signed with another key",
        &["000001"],
        sent,
        &mut cases,
    );
    let mut tampered = market.sign(&body("tampered"));
    tampered.body = body("tampered after signing");
    let sent = send_signed(market, kind, tampered).await;
    check(
        "probe: body changed after signing",
        &["000001"],
        sent,
        &mut cases,
    );
    for (label, drop, expected) in [
        ("x-sign left out", 2, "000001"),
        ("x-nonce left out", 0, "000002"),
        ("x-timestamp left out", 1, "000002"),
    ] {
        let s = market.sign(&body(label));
        let mut h = parts(&s);
        match drop {
            0 => h.0 = None,
            1 => h.1 = None,
            _ => h.2 = None,
        }
        let (answer, b) = raw(h.clone(), s.body.clone()).await;
        let sent = Sent {
            signed: None,
            headers: h,
            body: b,
            kind,
            answer,
        };
        check(&format!("probe: {label}"), &[expected], sent, &mut cases);
    }
    // Authentic but invalid: no tenantId.
    let invalid =
        br#"{"name":"no tenant id","flag":1,"testFlag":1,"timeStamp":"20260101000000000"}"#
            .to_vec();
    let sent = send_signed(market, kind, market.sign(&invalid)).await;
    check(
        "probe: an authentic body without tenantId",
        &["000002"],
        sent,
        &mut cases,
    );
    // Oversize: a signed body far larger than any callback.
    let mut big = b"{\"tenantId\":\"".to_vec();
    big.extend(std::iter::repeat_n(b'x', opts.oversize_bytes));
    big.extend_from_slice(b"\"}");
    let s = market.sign(&big);
    let answer = market.send(kind, &s).await;
    let closed = matches!(&answer, Err(SendError::Transport(_)));
    let sent = Sent {
        headers: parts(&s),
        body: big[..64].to_vec(),
        signed: None,
        kind,
        answer,
    };
    let label = format!("probe: a {} MiB body", opts.oversize_bytes / (1024 * 1024));
    if closed {
        // Refusing to read it all and closing the connection is a refusal too.
        cases.push(CaseReport {
            name: label,
            expected: "000002, or the connection closed unread".into(),
            got: "the connection was closed before the whole body was sent".into(),
            ok: true,
            request: None,
        });
        all.push(sent);
    } else {
        check(&label, &["000002"], sent, &mut cases);
    }
    let mut truth = BTreeMap::new();
    if !final_name.is_empty() {
        truth.insert(
            t,
            TenantTruth {
                name: final_name,
                test: true,
                ..TenantTruth::default()
            },
        );
    }
    (cases, truth, all)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_users_file_has_the_live_tenants_their_secrets_and_every_user() {
        let encrypt = |s: &str| Ok(format!("rsa({s})"));
        let url = Some("http://127.0.0.1:8090");
        let h = world::test_history(40, 6, 5, &encrypt, url).unwrap();
        let mut truth = h.truth.clone();
        // A tenant the history does not know (the probe tenant): no apps, no users.
        truth.insert(
            "emu-r-probe".into(),
            TenantTruth {
                name: "Probe tenant".into(),
                test: true,
                ..TenantTruth::default()
            },
        );
        let file = users_file(&truth, &h.accounts, url);
        // emu-r-t2 was deleted (unbind); the test purchase and the probe stay.
        let ids: Vec<&str> = file.tenants.keys().map(String::as_str).collect();
        assert_eq!(ids, ["emu-r-probe", "emu-r-t1", "emu-r-test"]);
        let probe = &file.tenants["emu-r-probe"];
        assert_eq!(probe.domain_name, "http://127.0.0.1:8090/emu-r-probe");
        assert!(probe.apps.is_empty() && probe.users.is_empty());
        let t1 = &file.tenants["emu-r-t1"];
        assert_eq!(t1.domain_name, "http://127.0.0.1:8090/emu-r-t1");
        assert_eq!(t1.name, "Emulated tenant emu-r-t1");
        // app-2 was unbound: only app-1, with the plaintext secret.
        assert_eq!(t1.apps.keys().collect::<Vec<_>>(), ["app-1"]);
        assert_eq!(t1.apps["app-1"].client_id, "app-1-client");
        assert_eq!(t1.apps["app-1"].client_secret, "secret-of-emu-r-t1-app-1");
        assert_eq!(t1.users.len(), 40);
        let tt = &h.truth["emu-r-t1"];
        for (name, u) in &t1.users {
            assert_eq!(u.apps.keys().collect::<Vec<_>>(), ["app-1"], "{name}");
            let want = tt
                .authorizations
                .get(&("app-1".to_owned(), name.clone()))
                .map(|(role, enabled)| (role.clone(), *enabled));
            let got = u.apps["app-1"]
                .as_ref()
                .map(|a| (a.role.clone(), a.enabled));
            assert_eq!(got, want, "{name}");
        }
        assert!(
            t1.users.values().any(|u| u.apps["app-1"].is_none()),
            "cancelled and deleted users are kept, without an authorisation"
        );
        assert_eq!(
            t1.departments.get("d000").map(String::as_str),
            Some("Department 0")
        );
        let back: UsersFile = serde_json::from_str(&serde_json::to_string(&file).unwrap()).unwrap();
        assert_eq!(back, file);
    }
}
