//! The dispatcher against a real HTTP receiver (axum on 127.0.0.1:0) and a real database
//! (SQLite, or PostgreSQL with `KITSYNC_TEST_DATABASE_URL`): signatures verified
//! independently of the crate's code, every event once and in order, retries of the same
//! batch with growing delays, `failing` and recovery, one dispatcher per endpoint, shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use kitsync_domain::{AuthChange, AuthOp, AuthUser, Command, KitTime};
use kitsync_secrets::Sealer;
use kitsync_store::feed::ChangeEvent;
use kitsync_store::Actor;
use kitsync_store::{Store, StoreSettings, WebhookEndpoint, WebhookState};
use kitsync_webhooks::{register, Dispatcher, Registration, WebhookSettings};
use migrations::testing::TestDb;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const DEADLINE: Duration = Duration::from_secs(40);

// ---------------------------------------------------------------------------------------------
// A receiver
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Request {
    path: String,
    id: String,
    timestamp: String,
    signature: String,
    body: Bytes,
    at: Instant,
    status: u16,
}

impl Request {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Behaviour {
    /// Statuses for the next requests to `script_path`, then `status`.
    script: VecDeque<u16>,
    script_path: String,
    status: u16,
    body: String,
    delay: Duration,
    in_flight: usize,
    max_in_flight: usize,
}

#[derive(Clone, Default)]
struct Shared {
    log: Arc<Mutex<Vec<Request>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

async fn hook(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let (status, reply, delay) = {
        let mut b = shared.behaviour.lock().unwrap();
        b.in_flight += 1;
        b.max_in_flight = b.max_in_flight.max(b.in_flight);
        let scripted = if uri.path() == b.script_path {
            b.script.pop_front()
        } else {
            None
        };
        let status = scripted.unwrap_or(b.status);
        (status, b.body.clone(), b.delay)
    };
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let request = Request {
        path: uri.path().to_owned(),
        id: h("webhook-id"),
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
        body,
        at: Instant::now(),
        status,
    };
    shared.log.lock().unwrap().push(request);
    tokio::time::sleep(delay).await;
    shared.behaviour.lock().unwrap().in_flight -= 1;
    (StatusCode::from_u16(status).unwrap(), reply)
}

struct Receiver {
    addr: SocketAddr,
    shared: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    async fn start(status: u16) -> Receiver {
        let shared = Shared::default();
        shared.behaviour.lock().unwrap().status = status;
        Receiver::serve("127.0.0.1:0".parse().unwrap(), shared).await
    }

    /// A receiver that answers 200 after `delay`.
    async fn slow(delay: Duration) -> Receiver {
        let receiver = Receiver::start(200).await;
        receiver.behave(|b| b.delay = delay);
        receiver
    }

    async fn serve(addr: SocketAddr, shared: Shared) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(axum::routing::post(hook))
            .with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Receiver {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn behave(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.shared.behaviour.lock().unwrap());
    }

    fn requests(&self) -> Vec<Request> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Stops listening: connections are refused from now on.
    async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("the receiver stops")
                .unwrap();
        }
    }

    /// Listens again on the same address, with the same log.
    async fn restart(&mut self) {
        self.stop().await;
        let again = Receiver::serve(self.addr, self.shared.clone()).await;
        *self = again;
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The receiver's own check, written from the Standard Webhooks spec (not the crate's code).
fn signature_ok(secret: &str, r: &Request) -> bool {
    let key = B64
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", r.id, r.timestamp).as_bytes());
    mac.update(&r.body);
    let expected = format!("v1,{}", B64.encode(mac.finalize().into_bytes()));
    r.signature.split(' ').any(|s| s == expected)
}

fn grant(t: &str, v: i64, users: std::ops::Range<usize>, test: bool) -> Command {
    Command::Auth(AuthChange {
        tenant_id: t.into(),
        instance_id: None,
        app_id: "app".into(),
        op: AuthOp::Add,
        users: users
            .map(|u| AuthUser {
                name: Some(format!("User {u}")),
                org_code: Some("D1".into()),
                ..AuthUser::named(format!("u{v}-{u}"))
            })
            .collect(),
        test,
        version: KitTime(v),
        time_stamp: None,
    })
}

/// A registration that delivers the journal from its first row.
fn from_start() -> Registration {
    Registration {
        after: Some(0),
        ..Registration::default()
    }
}

struct World {
    db: TestDb,
    store: Store,
    sealer: Sealer,
}

impl World {
    async fn new() -> World {
        let db = migrations::testing::fresh_db().await.unwrap();
        let store = Store::new(db.conn.clone(), StoreSettings::default());
        let master = SecretString::from(Sealer::generate_master_key().unwrap());
        World {
            db,
            store,
            sealer: Sealer::from_master_key(&master).unwrap(),
        }
    }

    async fn add(&self, url: String, r: Registration) -> (WebhookEndpoint, String) {
        let (e, secret) = register(&self.store, &self.sealer, &Registration { url, ..r })
            .await
            .unwrap();
        (e, secret.expose_secret().to_owned())
    }

    fn dispatcher(&self, settings: WebhookSettings) -> Dispatcher {
        Dispatcher::new(self.store.clone(), self.sealer.clone(), settings).unwrap()
    }

    async fn endpoint(&self, id: &str) -> WebhookEndpoint {
        self.store.webhook(id).await.unwrap().unwrap()
    }

    /// The feed events an endpoint with `keep` should get, in order.
    async fn expected(&self, keep: impl Fn(&ChangeEvent) -> bool) -> Vec<Value> {
        self.store
            .journal_after(0, 100_000)
            .await
            .unwrap()
            .into_iter()
            .map(|row| ChangeEvent::try_from(row).unwrap())
            .filter(|e| keep(e))
            .map(|e| serde_json::to_value(e).unwrap())
            .collect()
    }
}

fn fast() -> WebhookSettings {
    WebhookSettings {
        poll_interval_ms: 20,
        batch_size: 5,
        timeout_ms: 3_000,
        retry_min_delay_ms: 150,
        retry_max_delay_ms: 2_000,
        failing_after: 5,
        ..WebhookSettings::default()
    }
}

struct Running {
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn run(d: Dispatcher) -> Running {
    let (shutdown, rx) = watch::channel(false);
    let task = tokio::spawn(async move { d.run(rx).await });
    Running { shutdown, task }
}

impl Running {
    async fn stop(self, within: Duration) {
        let _ = self.shutdown.send(true);
        tokio::time::timeout(within, self.task)
            .await
            .expect("the dispatcher stops in time")
            .unwrap();
    }
}

async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The events of the 2xx-answered requests to `path`, each batch once (dedupe by
/// `webhook-id`), checking that batches follow each other without overlapping.
fn delivered_events(requests: &[Request], path: &str) -> Vec<Value> {
    let mut seen = HashSet::new();
    let mut events = Vec::new();
    let mut cursor: Option<i64> = None;
    for r in requests
        .iter()
        .filter(|r| r.path == path && (200..300).contains(&r.status))
    {
        if !seen.insert(r.id.clone()) {
            continue;
        }
        let v = r.json();
        assert_eq!(v["type"], "kitsync.changes");
        let data = &v["data"];
        let after: i64 = data["after"].as_str().unwrap().parse().unwrap();
        let next: i64 = data["nextCursor"].as_str().unwrap().parse().unwrap();
        if let Some(c) = cursor {
            // Equal, or past it when the rows in between did not match the filter.
            assert!(
                after >= c,
                "batches do not overlap: after {after}, previous {c}"
            );
        }
        assert!(next > after);
        cursor = Some(next);
        assert_eq!(
            r.id,
            format!(
                "msg_{}_{}_{}",
                data["endpointId"].as_str().unwrap(),
                data["after"].as_str().unwrap(),
                data["nextCursor"].as_str().unwrap()
            )
        );
        let batch = data["events"].as_array().unwrap();
        assert!(!batch.is_empty(), "no empty deliveries");
        assert_eq!(v["timestamp"], batch.last().unwrap()["appliedAt"]);
        events.extend(batch.iter().cloned());
    }
    events
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_arrives_once_in_order_signed_and_retried_with_growing_delays() {
    let w = World::new().await;
    let receiver = Receiver::start(200).await;
    receiver.behave(|b| {
        b.script = VecDeque::from([500, 500]);
        b.script_path = "/all".into();
        b.body = "boom".into();
    });
    w.store
        .apply_batch(&[grant("t1", 1, 0..3, false), grant("t2", 1, 0..2, false)])
        .await
        .unwrap();
    let (all, secret) = w.add(receiver.url("/all"), from_start()).await;
    let (filtered, filtered_secret) = w
        .add(
            receiver.url("/filtered"),
            Registration {
                tenant_id: Some("t1".into()),
                types: Some("member.authorized".into()),
                ..from_start()
            },
        )
        .await;
    assert_ne!(secret, filtered_secret, "one secret per endpoint");
    let running = run(w.dispatcher(fast()));

    // Writers keep applying while the dispatcher delivers; one test tenant is in the mix.
    let mut writers = Vec::new();
    for t in ["t1", "t2", "sandbox"] {
        let store = w.store.clone();
        writers.push(tokio::spawn(async move {
            for v in 2..14 {
                let users = 0..(1 + (v as usize * 7) % 6);
                store
                    .apply(&grant(t, v, users, t == "sandbox"))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }));
    }
    for h in writers {
        h.await.unwrap();
    }
    let head = w.store.journal_head().await.unwrap();
    wait_until("both endpoints are caught up", || async {
        let a = w.endpoint(&all.id).await;
        let f = w.endpoint(&filtered.id).await;
        a.cursor == head && f.cursor == head
    })
    .await;
    running.stop(Duration::from_secs(10)).await;

    let requests = receiver.requests();
    // Signed per Standard Webhooks, with a current timestamp, under each endpoint's secret.
    let now = chrono::Utc::now().timestamp();
    for r in &requests {
        let key = if r.path == "/all" {
            &secret
        } else {
            &filtered_secret
        };
        assert!(signature_ok(key, r), "signature of {}", r.id);
        let other = if r.path == "/all" {
            &filtered_secret
        } else {
            &secret
        };
        assert!(!signature_ok(other, r), "another secret must not verify");
        let ts: i64 = r.timestamp.parse().unwrap();
        assert!((now - ts).abs() < 120, "webhook-timestamp {ts} is current");
    }

    // The first batch of /all failed twice: the retries carry the same id and body, after
    // growing delays (150 ms, then 300 ms, each at most 10 % earlier).
    let first: Vec<&Request> = requests
        .iter()
        .filter(|r| r.path == "/all")
        .take(3)
        .collect();
    assert_eq!(
        first.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 500, 200],
        "{first:?}"
    );
    assert!(first
        .iter()
        .all(|r| r.id == first[0].id && r.body == first[0].body));
    let gap1 = first[1].at - first[0].at;
    let gap2 = first[2].at - first[1].at;
    assert!(
        gap1 >= Duration::from_millis(130),
        "first retry after {gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(265),
        "second retry after {gap2:?}"
    );
    assert!(gap2 > gap1, "delays grow: {gap1:?} then {gap2:?}");

    // Every event exactly once, in journal order, in the feed's shape; test data left out.
    let got = delivered_events(&requests, "/all");
    let want = w.expected(|e| !e.test).await;
    assert!(
        want.len() > 30,
        "a meaningful number of events: {}",
        want.len()
    );
    assert_eq!(got, want);
    let got = delivered_events(&requests, "/filtered");
    let want = w
        .expected(|e| !e.test && e.tenant_id == "t1" && e.kind == "member.authorized")
        .await;
    assert!(!want.is_empty());
    assert_eq!(got, want, "only the filter's events");
    for r in &requests {
        let n = r.json()["data"]["events"].as_array().unwrap().len();
        assert!(n <= 5, "batches of at most batch_size: {n}");
    }

    // What operators see.
    let a = w.endpoint(&all.id).await;
    assert_eq!(
        (
            a.state,
            a.consecutive_failures,
            a.pending_until,
            a.last_error
        ),
        (WebhookState::Active, 0, None, None)
    );
    let log = w.store.webhook_deliveries(&all.id, 1_000).await.unwrap();
    let oldest: Vec<(i32, Option<i32>, Option<&str>)> = log
        .iter()
        .rev()
        .take(3)
        .map(|d| (d.attempt, d.status, d.error.as_deref()))
        .collect();
    assert_eq!(
        oldest,
        [
            (1, Some(500), Some("HTTP 500: boom")),
            (2, Some(500), Some("HTTP 500: boom")),
            (3, Some(200), None)
        ]
    );
    w.db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_endpoint_is_visible_and_recovers_when_the_receiver_is_back() {
    let w = World::new().await;
    let mut receiver = Receiver::start(503).await;
    receiver.behave(|b| b.body = "maintenance until 10:00".into());
    w.store
        .apply_batch(&[grant("t1", 1, 0..4, false), grant("t2", 2, 0..3, false)])
        .await
        .unwrap();
    let (e, _) = w.add(receiver.url("/hook"), from_start()).await;
    let settings = WebhookSettings {
        retry_min_delay_ms: 40,
        retry_max_delay_ms: 160,
        failing_after: 3,
        ..fast()
    };
    let running = run(w.dispatcher(settings));

    wait_until("the endpoint shows failing", || async {
        w.endpoint(&e.id).await.state == WebhookState::Failing
    })
    .await;
    let f = w.endpoint(&e.id).await;
    assert!(f.consecutive_failures >= 3, "{f:?}");
    assert_eq!(f.last_status, Some(503));
    assert_eq!(
        f.last_error.as_deref(),
        Some("HTTP 503: maintenance until 10:00")
    );
    assert_eq!(f.cursor, 0, "nothing acknowledged, nothing skipped");
    assert!(f.pending_until.is_some());
    assert!(f.last_success_at.is_none());

    // The receiver goes away entirely: connection errors, still failing, still retried.
    receiver.stop().await;
    let before = receiver.requests().len();
    let seen = w.endpoint(&e.id).await.consecutive_failures;
    wait_until("connection failures are recorded", || async {
        let f = w.endpoint(&e.id).await;
        f.consecutive_failures >= seen + 2 && f.last_status.is_none()
    })
    .await;
    let f = w.endpoint(&e.id).await;
    assert_eq!(f.state, WebhookState::Failing);
    let err = f.last_error.clone().unwrap_or_default();
    assert!(err.starts_with("request failed"), "{err}");
    assert_eq!(receiver.requests().len(), before);
    // Capped: retries keep coming at most `retry_max_delay_ms` apart.
    assert!(
        f.next_attempt_at - f.last_attempt_at.unwrap() <= 160 + 200,
        "{f:?}"
    );

    // Back, and healthy: the endpoint catches up and is active again.
    receiver.behave(|b| {
        b.status = 200;
        b.body.clear();
    });
    receiver.restart().await;
    let head = w.store.journal_head().await.unwrap();
    wait_until("the endpoint recovers", || async {
        let f = w.endpoint(&e.id).await;
        f.state == WebhookState::Active && f.cursor == head
    })
    .await;
    running.stop(Duration::from_secs(10)).await;
    let f = w.endpoint(&e.id).await;
    assert_eq!(
        (f.consecutive_failures, f.last_status, f.last_error),
        (0, Some(200), None)
    );
    assert!(f.last_success_at.is_some());
    assert_eq!(
        delivered_events(&receiver.requests(), "/hook"),
        w.expected(|_| true).await
    );
    let log = w.store.webhook_deliveries(&e.id, 1_000).await.unwrap();
    assert!(log.iter().any(|d| d.status == Some(503)));
    assert!(log.iter().any(|d| d.status.is_none()
        && d.error
            .as_deref()
            .is_some_and(|e| e.starts_with("request failed"))));
    w.db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_dispatchers_never_deliver_one_endpoint_at_the_same_time() {
    let w = World::new().await;
    let receiver = Receiver::slow(Duration::from_millis(25)).await;
    for v in 1..8 {
        w.store
            .apply(&grant("t1", v, 0..(v as usize), false))
            .await
            .unwrap();
    }
    let (e, _) = w.add(receiver.url("/one"), from_start()).await;
    let settings = WebhookSettings {
        batch_size: 3,
        ..fast()
    };
    let a = run(w.dispatcher(settings.clone()));
    let b = run(w.dispatcher(settings));
    let head = w.store.journal_head().await.unwrap();
    wait_until("caught up", || async {
        w.endpoint(&e.id).await.cursor == head
    })
    .await;
    a.stop(Duration::from_secs(10)).await;
    b.stop(Duration::from_secs(10)).await;
    let max = receiver.shared.behaviour.lock().unwrap().max_in_flight;
    assert_eq!(max, 1, "one request at a time for one endpoint");
    let requests = receiver.requests();
    let ids: Vec<&str> = requests.iter().map(|r| r.id.as_str()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "no batch sent twice: {ids:?}");
    assert_eq!(
        delivered_events(&requests, "/one"),
        w.expected(|_| true).await
    );
    w.db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_cuts_a_hanging_request_and_hands_the_endpoint_back() {
    let w = World::new().await;
    let receiver = Receiver::slow(Duration::from_secs(60)).await;
    w.store.apply(&grant("t1", 1, 0..2, false)).await.unwrap();
    let (e, _) = w.add(receiver.url("/slow"), from_start()).await;
    let running = run(w.dispatcher(WebhookSettings {
        timeout_ms: 50_000,
        ..fast()
    }));
    wait_until("the request is in flight", || async {
        !receiver.requests().is_empty()
    })
    .await;
    let started = Instant::now();
    running.stop(Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let f = w.endpoint(&e.id).await;
    assert_eq!((f.cursor, f.consecutive_failures), (0, 0), "{f:?}");
    assert!(w
        .store
        .webhook_deliveries(&e.id, 10)
        .await
        .unwrap()
        .is_empty());
    let now = chrono::Utc::now().timestamp_millis();
    assert!(
        w.store
            .claim_webhook(&e.id, "next", now, 1_000)
            .await
            .unwrap()
            .is_some(),
        "the lease was handed back"
    );
    w.db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_secret_copied_to_another_endpoint_does_not_sign_there() {
    use migrations::sea_orm::ConnectionTrait as _;
    let w = World::new().await;
    let receiver = Receiver::start(200).await;
    w.store.apply(&grant("t1", 1, 0..2, false)).await.unwrap();
    let (a, secret_a) = w.add(receiver.url("/a"), from_start()).await;
    let (b, _) = w.add(receiver.url("/b"), from_start()).await;
    // What someone with write access to the database could do to make `b` sign with a
    // secret they learned from `a`.
    w.db.conn
        .execute_unprepared(&format!(
            "UPDATE webhook_endpoints SET secret = \
             (SELECT secret FROM webhook_endpoints WHERE id = '{}') WHERE id = '{}'",
            a.id, b.id
        ))
        .await
        .unwrap();
    let head = w.store.journal_head().await.unwrap();
    let running = run(w.dispatcher(fast()));
    wait_until("a is caught up and b has failed", || async {
        w.endpoint(&a.id).await.cursor >= head && w.endpoint(&b.id).await.consecutive_failures >= 1
    })
    .await;
    running.stop(Duration::from_secs(10)).await;
    let eb = w.endpoint(&b.id).await;
    assert_eq!(eb.cursor, 0, "{eb:?}");
    assert!(
        eb.last_error
            .as_deref()
            .is_some_and(|m| m.contains("cannot open the signing secret")),
        "{eb:?}"
    );
    let log = receiver.requests();
    assert!(log.iter().all(|r| r.path == "/a"), "nothing sent to /b");
    assert!(!log.is_empty());
    for r in &log {
        assert!(signature_ok(&secret_a, r), "{r:?}");
    }
    w.db.cleanup().await;
}

#[tokio::test]
async fn registration_refuses_other_schemes_and_unknown_types() {
    let w = World::new().await;
    let err = register(
        &w.store,
        &w.sealer,
        &Registration {
            url: "ftp://example.com/hook".into(),
            ..Registration::default()
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("scheme `ftp` is not supported"), "{err}");
    let err = register(
        &w.store,
        &w.sealer,
        &Registration {
            url: "http://127.0.0.1:1/hook".into(),
            types: Some("member,widgets".into()),
            ..Registration::default()
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("`widgets` is not an event type"), "{err}");
    assert!(w.store.list_webhooks().await.unwrap().is_empty());
    w.db.cleanup().await;
}

/// The same receiver behind TLS (tokio-rustls, a certificate for `localhost` issued by a test
/// CA in `tests/tls/`).
async fn tls_receiver(shared: Shared) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .fallback(axum::routing::post(hook))
        .with_state(shared);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                // A client that does not trust the certificate fails the handshake here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_get_signed_deliveries_and_untrusted_certificates_fail_visibly() {
    let w = World::new().await;
    let shared = Shared::default();
    shared.behaviour.lock().unwrap().status = 200;
    let (addr, server) = tls_receiver(shared.clone()).await;
    let url = format!("https://localhost:{}/tls", addr.port());
    let (endpoint, secret) = w.add(url.clone(), from_start()).await;
    w.store.apply(&grant("t1", 1, 0..3, false)).await.unwrap();

    // Without the test CA (system roots only) the handshake fails: visible, retried.
    let untrusting = run(w.dispatcher(fast()));
    wait_until("a failed TLS attempt is recorded", || async {
        w.endpoint(&endpoint.id).await.consecutive_failures >= 1
    })
    .await;
    untrusting.stop(Duration::from_secs(10)).await;
    let e = w.endpoint(&endpoint.id).await;
    assert_eq!(e.cursor, 0, "nothing delivered");
    assert!(
        e.last_error.as_deref().is_some_and(|m| !m.is_empty()),
        "the failure says why: {e:?}"
    );
    assert!(
        shared.log.lock().unwrap().is_empty(),
        "no request got through"
    );

    // With `webhooks.ca_file` naming the CA, the delivery arrives over TLS, signed.
    w.store
        .retry_webhook(&Actor::Cli, &endpoint.id)
        .await
        .unwrap();
    let trusting = run(w.dispatcher(WebhookSettings {
        ca_file: Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls/ca.pem")),
        ..fast()
    }));
    let head = w.store.journal_head().await.unwrap();
    wait_until("the endpoint is caught up over https", || async {
        w.endpoint(&endpoint.id).await.cursor >= head
    })
    .await;
    trusting.stop(Duration::from_secs(10)).await;
    let log = shared.log.lock().unwrap().clone();
    assert!(!log.is_empty());
    for r in &log {
        assert!(signature_ok(&secret, r), "signed: {r:?}");
        assert_eq!(r.path, "/tls");
    }
    let events: usize = log
        .iter()
        .map(|r| r.json()["data"]["events"].as_array().unwrap().len())
        .sum();
    assert_eq!(events, 3, "the three authorisations, once each");
    assert_eq!(w.endpoint(&endpoint.id).await.state, WebhookState::Active);

    // A ca_file that is not PEM is a clear error at start.
    let err = Dispatcher::new(
        w.store.clone(),
        w.sealer.clone(),
        WebhookSettings {
            ca_file: Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")),
            ..fast()
        },
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(err.starts_with("webhooks.ca_file:"), "{err}");
    server.abort();
    w.db.cleanup().await;
}
