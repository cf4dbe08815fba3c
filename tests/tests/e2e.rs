//! End-to-end scenarios: the real `kitsync` binary, a real database and queue.
//!
//! Every scenario runs on the embedded defaults (SQLite + the queue table) and, when
//! `KITSYNC_TEST_DATABASE_URL` / `KITSYNC_TEST_AMQP_URL` are set, on PostgreSQL / RabbitMQ:
//! the environment decides, the test is the same.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use kitsync_secrets::{OaepVariant, Place, SealedKind, Sealer, TestKeyPair};
use sea_orm::{ConnectionTrait as _, TransactionTrait as _};
use secrecy::{ExposeSecret as _, SecretString};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tests::payload::{self, time, User};
use tests::{
    amqp_url, now_ms, url_socket_addr, wait_until, Env, Kit, Reply, TcpProxy, ALL_ORG_SYNC,
    APPLICATION_SYNC, AUTH_SYNC, POISON_USER, SINGLE_ORG_SYNC, TENANT_SYNC,
};

/// Generous for a loaded 2-core machine, short enough that a stuck pipeline fails the test.
const APPLY_TIMEOUT: Duration = Duration::from_secs(45);

fn assert_accepted(what: &str, r: &Reply, key: &str) {
    assert_eq!(
        (r.code.as_str(), r.msg.as_str()),
        ("000000", "success"),
        "{what}: {r:?}"
    );
    assert!(
        r.body_sign_verifies(key),
        "{what}: Body-Sign must be the base64 HMAC-SHA256 of the body under the access key: {r:?}"
    );
}

/// The users holding a live authorisation in `tenant`, sorted (in Rust: collations differ).
async fn users(env: &Env, tenant: &str) -> Vec<String> {
    let mut v = env
        .strings(&format!(
            "SELECT user_name FROM authorizations WHERE tenant_id = '{tenant}' AND deleted = FALSE"
        ))
        .await;
    v.sort();
    v
}

/// Scenario 1: the five callbacks are accepted, signed, and applied; the client secret is
/// decrypted with the RSA key and only ever stored sealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_five_callbacks_apply() {
    let kp = TestKeyPair::generate_3072().unwrap();
    let mut env = Env::new("five").await;
    let pem = env.dir().join("clientsecret-rsa.pem");
    std::fs::write(&pem, kp.private_pem().unwrap()).unwrap();
    env.rsa_key_path = Some(pem);
    // Every component at debug level: the secret must not show up even there.
    env.log_filter = "debug,lapin=info,hyper=info,hyper_util=info,h2=info,sqlx=info".into();
    let server = env.start("serve").await;
    let kit = server.kit();

    let t = "tenant-five";
    let sandbox = "tenant-five-sandbox";
    let app = "app-five";
    let secret = format!("plain-client-secret-{}", uuid::Uuid::new_v4().simple());
    let ciphertext = kp.encrypt(&secret, OaepVariant::Sha256).unwrap();
    let users = [
        User::new("alice", "D1", "admin", true),
        User::new("bob", "D2", "user", true),
        User::new("carol", "D2", "user", false),
    ];
    let calls = [
        (TENANT_SYNC, payload::tenant(t, "Acme Corp", 1, 0, &time(0))),
        (
            TENANT_SYNC,
            payload::tenant(sandbox, "Sandbox Corp", 1, 1, &time(0)),
        ),
        (
            APPLICATION_SYNC,
            payload::app(t, app, "client-five", &ciphertext, &time(1_000)),
        ),
        (AUTH_SYNC, payload::auth(t, app, 1, &users, &time(2_000))),
        (
            ALL_ORG_SYNC,
            payload::all_org(
                t,
                &[
                    ("D1", "Head office", ""),
                    ("D2", "Engineering", "D1"),
                    ("D3", "Sales", "D1"),
                ],
                &time(3_000),
            ),
        ),
        (
            SINGLE_ORG_SYNC,
            payload::single_org(t, "D4", "Research", "D2", 1, &time(4_000)),
        ),
    ];
    for (kind, body) in &calls {
        let r = kit.send(kind, body).await;
        assert_accepted(kind, &r, env.key());
        assert!(
            !r.body_sign_verifies("some-other-key"),
            "the Body-Sign check must be able to fail"
        );
    }

    wait_until(
        "the directory shows all five callbacks",
        APPLY_TIMEOUT,
        || async {
            let s = env.snapshot(t).await;
            let sb = env.snapshot(sandbox).await;
            s.tenant.is_some()
                && s.apps.len() == 1
                && s.authorizations.len() == 3
                && s.members.len() == 3
                && s.departments.len() == 4
                && sb.tenant.is_some()
        },
    )
    .await;

    let s = env.snapshot(t).await;
    let tenant = s.tenant.as_ref().unwrap();
    assert_eq!(tenant.name, "Acme Corp");
    assert_eq!(tenant.tenant_code, "code-tenant-five");
    assert_eq!(
        tenant.domain_name.as_deref(),
        Some("https://tenant-five.tenantaccount.example.com")
    );
    assert!(!tenant.test, "testFlag=0 is production data");
    assert!(s.instance_ids.contains(&"inst-tenant-five".to_owned()));
    let sb = env.snapshot(sandbox).await;
    assert!(
        sb.tenant.as_ref().unwrap().test,
        "testFlag=1 is stored with test=true"
    );

    // The app: the secret was decrypted (the sealed value opens to the plaintext) and is
    // stored sealed, neither as plaintext nor as the marketplace's ciphertext.
    let a = &s.apps[0];
    assert_eq!(
        (a.app_id.as_str(), a.client_id.as_str()),
        (app, "client-five")
    );
    let sealed = &a.client_secret.0;
    assert!(
        sealed.starts_with("v2:"),
        "sealed secret, got {sealed:.12}…"
    );
    assert!(!sealed.contains(&secret) && !sealed.contains(&ciphertext));
    let sealer = Sealer::from_master_key(&SecretString::from(env.master_key.clone())).unwrap();
    let (kind, plain) = sealer
        .open(sealed, &Place::app_client_secret(t, app))
        .unwrap();
    assert_eq!(
        kind,
        SealedKind::Plain,
        "decrypted with the RSA key, then sealed"
    );
    assert_eq!(plain.expose_secret(), secret);

    let auths: Vec<(&str, &str, &str, bool)> = s
        .authorizations
        .iter()
        .map(|a| {
            (
                a.app_id.as_str(),
                a.user_name.as_str(),
                a.role.as_str(),
                a.enabled,
            )
        })
        .collect();
    assert_eq!(
        auths,
        [
            (app, "alice", "admin", true),
            (app, "bob", "user", true),
            (app, "carol", "user", false),
        ]
    );
    let members: Vec<(&str, Option<&str>, Option<&str>)> = s
        .members
        .iter()
        .map(|m| {
            (
                m.user_name.as_str(),
                m.name.as_deref(),
                m.org_code.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        members,
        [
            ("alice", Some("Name of alice"), Some("D1")),
            ("bob", Some("Name of bob"), Some("D2")),
            ("carol", Some("Name of carol"), Some("D2")),
        ]
    );
    let depts: Vec<(&str, &str, Option<&str>)> = s
        .departments
        .iter()
        .map(|d| {
            (
                d.org_code.as_str(),
                d.org_name.as_str(),
                d.parent_code.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        depts,
        [
            ("D1", "Head office", None),
            ("D2", "Engineering", Some("D1")),
            ("D3", "Sales", Some("D1")),
            ("D4", "Research", Some("D2")),
        ]
    );

    // The plaintext is nowhere: not in any table, not in the server's logs (at debug level).
    assert_secret_not_stored(&env, &secret).await;
    let logs = server.logs();
    assert!(
        logs.contains("RSA private key loaded"),
        "the server logged at the expected level"
    );
    assert!(
        !logs.contains(&secret),
        "the plaintext clientSecret appeared in the server's output"
    );
    assert!(
        !logs.contains(env.key()),
        "the access key appeared in the server's output"
    );

    drop(server);
    env.finish().await;
}

/// No table holds `secret`; on SQLite not even a free page of the database files.
async fn assert_secret_not_stored(env: &Env, secret: &str) {
    if env.is_postgres() {
        for table in [
            "tenants",
            "tenant_marks",
            "tenant_instances",
            "apps",
            "departments",
            "members",
            "authorizations",
            "journal",
            "org_plans",
            "kit_nonces",
        ] {
            let n = env
                .scalar(&format!(
                    "SELECT COUNT(*) FROM {table} t WHERE CAST(t AS TEXT) LIKE '%{secret}%'"
                ))
                .await;
            assert_eq!(n, 0, "the plaintext clientSecret is stored in {table}");
        }
        for table in ["queue_bodies", "dead_letters"] {
            let n = env
                .scalar(&format!(
                    "SELECT COUNT(*) FROM {table} WHERE position(convert_to('{secret}', 'UTF8') in body) > 0"
                ))
                .await;
            assert_eq!(n, 0, "the plaintext clientSecret is queued in {table}");
        }
    } else {
        let n = env
            .scalar(&format!(
                "SELECT COUNT(*) FROM journal WHERE data LIKE '%{secret}%'"
            ))
            .await;
        assert_eq!(n, 0, "the plaintext clientSecret is in the journal");
        let path = env
            .db
            .url
            .strip_prefix("sqlite://")
            .and_then(|p| p.split('?').next())
            .unwrap();
        let dir = std::path::Path::new(path).parent().unwrap();
        let mut scanned = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            scanned += bytes.len();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the plaintext clientSecret is in {}",
                p.display()
            );
        }
        assert!(scanned > 0, "scanned the SQLite files");
    }
}

/// An authSync of tenant `t` at time 0: `app` authorises `user` (in D1, role user, enabled).
fn one_user(t: &str, app: &str, user: &str) -> String {
    payload::auth(t, app, 1, &[User::new(user, "D1", "user", true)], &time(0))
}

/// Scenario 2: what is not authentic, stale, incomplete or replayed is refused with the
/// documented code and queues nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_queue_nothing() {
    let env = Env::new("refusals").await;
    let ingress = env.start("ingress").await;
    let kit = ingress.kit();
    let t = "tenant-refusals";
    let app = "app-refusals";
    let body = |user: &str| one_user(t, app, user);

    let good = kit.signed(&body("good-user"));
    let r = kit.send_signed(AUTH_SYNC, &good).await.unwrap();
    assert_accepted("the one valid callback", &r, env.key());

    let mut cases: Vec<(&str, &str, &str, tests::Signed)> = Vec::new();
    cases.push((
        "signed with another key",
        "000001",
        "x-sign",
        kit.with_key("not-the-access-key")
            .signed(&body("refused-wrong-key")),
    ));
    let mut tampered = kit.signed(&body("refused-tampered"));
    tampered.body = body("refused-tampered-other");
    cases.push(("body changed after signing", "000001", "x-sign", tampered));
    let mut unsigned = kit.signed(&body("refused-unsigned"));
    unsigned.sign = None;
    cases.push(("missing x-sign", "000001", "x-sign", unsigned));
    cases.push((
        "stale timestamp",
        "000002",
        "x-timestamp",
        kit.signed_at(&body("refused-stale"), &tests::nonce(), now_ms() - 120_000),
    ));
    cases.push((
        "timestamp from the future",
        "000002",
        "x-timestamp",
        kit.signed_at(&body("refused-future"), &tests::nonce(), now_ms() + 120_000),
    ));
    let mut no_ts = kit.signed(&body("refused-no-timestamp"));
    no_ts.timestamp = None;
    cases.push(("missing x-timestamp", "000002", "x-timestamp", no_ts));
    let mut no_nonce = kit.signed(&body("refused-no-nonce"));
    no_nonce.nonce = None;
    cases.push(("missing x-nonce", "000002", "x-nonce", no_nonce));
    // Validly signed, but a mandatory field is missing.
    let no_name = serde_json::json!({
        "instanceId": "inst", "tenantId": t, "appId": app, "flag": 1, "testFlag": 0,
        "currentSyncTime": time(0), "timeStamp": time(0),
        "userList": [{"userName": "refused-no-name", "orgCode": "D1", "role": "user", "enable": "true"}],
    })
    .to_string();
    cases.push((
        "user without name",
        "000002",
        "userList[0].name",
        kit.signed(&no_name),
    ));
    let no_app = serde_json::json!({
        "instanceId": "inst", "tenantId": t, "flag": 1, "testFlag": 0,
        "currentSyncTime": time(0), "timeStamp": time(0),
        "userList": [User::new("refused-no-app", "D1", "user", true).json()],
    })
    .to_string();
    cases.push(("missing appId", "000002", "appId", kit.signed(&no_app)));
    // A replay: the accepted request again. (Its nonce on another authentic body is not a
    // replay — the replay key is the signature; crates/kitsync-ingress/tests/edge.rs.)
    cases.push(("replayed request", "000001", "replay", good.clone()));
    let mut shifted = good.clone();
    let ts = shifted.timestamp.clone().unwrap();
    let nonce = shifted.nonce.clone().unwrap();
    shifted.nonce = Some(format!("{nonce}{}", &ts[..1]));
    shifted.timestamp = Some(ts[1..].to_owned());
    cases.push((
        "replayed with a digit moved from the timestamp into the nonce",
        "000002",
        "x-timestamp",
        shifted,
    ));

    for (what, code, names, req) in &cases {
        let r = kit.send_signed(AUTH_SYNC, req).await.unwrap();
        assert_eq!(r.code, *code, "{what}: {r:?}");
        assert!(
            r.msg.contains(names),
            "{what}: resultMsg should name `{names}`: {:?}",
            r.msg
        );
        assert!(
            r.body_sign_verifies(env.key()),
            "{what}: a refusal is signed too: {r:?}"
        );
    }

    // Only the valid callback is queued, and nothing reached the directory (no worker runs).
    if env.is_amqp() {
        wait_until(
            "the valid callback is visible in the queue",
            Duration::from_secs(10),
            || async { env.queued().await >= 1 },
        )
        .await;
    }
    assert_eq!(
        env.queued().await,
        1,
        "only the accepted callback is queued"
    );
    assert_eq!(env.live_authorizations().await, 0);

    // A worker applies exactly the valid one.
    let worker = env.start("worker").await;
    wait_until("the valid callback is applied", APPLY_TIMEOUT, || async {
        env.live_authorizations().await >= 1
    })
    .await;
    wait_until("the queue is drained", APPLY_TIMEOUT, || async {
        env.queued().await == 0
    })
    .await;
    assert_eq!(users(&env, t).await, ["good-user"]);
    assert_eq!(env.scalar("SELECT COUNT(*) FROM members").await, 1);
    assert_eq!(env.scalar("SELECT COUNT(*) FROM dead_letters").await, 0);

    drop(worker);
    drop(ingress);
    env.finish().await;
}

/// Holds the embedded queue's database so that publishing cannot commit: an open write
/// transaction on SQLite (one writer at a time), an exclusive lock on `queue_messages` on
/// PostgreSQL.
async fn block_embedded_queue(env: &Env) -> sea_orm::DatabaseTransaction {
    let txn = env.conn().begin().await.unwrap();
    let sql = if env.is_postgres() {
        "LOCK TABLE queue_messages IN EXCLUSIVE MODE"
    } else {
        "INSERT INTO kit_nonces (nonce, seen_at) VALUES ('e2e-write-lock', 0)"
    };
    txn.execute_unprepared(sql).await.unwrap();
    txn
}

/// Sends `n` callbacks while the queue is down; each must be answered 000005 (signed) within
/// 2 s. Returns the requests (for retries) and records every deviation in `problems`.
async fn during_outage(
    env: &Env,
    kit: &Kit,
    what: &str,
    body: impl Fn(&str) -> String,
    n: usize,
    problems: &mut Vec<String>,
) -> Vec<tests::Signed> {
    let mut sent = Vec::new();
    for i in 0..n {
        let req = kit.signed(&body(&format!("{what}-{i}")));
        let r = kit.send_signed(AUTH_SYNC, &req).await.unwrap();
        if r.code != "000005" {
            problems.push(format!("{what} {i}: expected 000005, got {r:?}"));
        }
        if r.elapsed >= Duration::from_secs(2) {
            problems.push(format!(
                "{what} {i}: 000005 must come within 2 s, took {:?} ({})",
                r.elapsed, r.msg
            ));
        }
        if !r.body_sign_verifies(env.key()) {
            problems.push(format!("{what} {i}: Body-Sign does not verify: {r:?}"));
        }
        sent.push(req);
    }
    sent
}

/// Retries a new callback until it is accepted (the queue is back), for up to 20 s.
async fn accepted_again(env: &Env, kit: &Kit, body: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let r = kit.send(AUTH_SYNC, body).await;
        if r.ok() {
            assert_accepted("after the outage", &r, env.key());
            return;
        }
        assert!(
            r.code == "000005" && std::time::Instant::now() < deadline,
            "callbacks not accepted again within 20 s of the queue coming back \
             ({attempts} attempts, last {r:?})"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Scenario 3: when the queue cannot take a callback the answer is 000005 within 2 s, and
/// the same process accepts callbacks again once the queue is back.
///
/// Outages: RabbitMQ behind a [`TcpProxy`] that drops every connection and refuses new ones,
/// then one that stops forwarding (a hanging broker); the embedded queue with its database
/// write-locked by the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_down_answers_000005_quickly_and_recovers() {
    let mut env = Env::new("queue-down").await;
    let proxy = match amqp_url() {
        Some(url) => {
            let proxy = TcpProxy::start(url_socket_addr(&url, 5672)).await;
            env.server_amqp_url = Some(proxy.rewrite_url(&url));
            Some(proxy)
        }
        None => None,
    };
    let ingress = env.start("ingress").await;
    let kit = ingress.kit();
    let t = "tenant-down";
    let app = "app-down";
    let body = |user: &str| one_user(t, app, user);
    let mut problems = Vec::new();
    let mut expected = vec!["before-outage".to_owned()];

    let r = kit.send(AUTH_SYNC, &body("before-outage")).await;
    assert_accepted("before the outage", &r, env.key());

    let r = kit.api("GET", "/readyz", None, &[], None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // The queue is down.
    let lock = match &proxy {
        Some(p) => {
            p.cut();
            // RabbitMQ unreachable: not ready, and the body says which.
            let r = kit.api("GET", "/readyz", None, &[], None).await;
            assert_eq!(
                (r.status, r.body.clone()),
                (503, serde_json::json!({ "database": true, "queue": false }))
            );
            None
        }
        None => Some(block_embedded_queue(&env).await),
    };
    let refused = during_outage(&env, &kit, "during-outage", body, 3, &mut problems).await;
    match (&proxy, lock) {
        (Some(p), _) => p.restore(),
        (None, Some(txn)) => txn.rollback().await.unwrap(),
        (None, None) => unreachable!(),
    }
    accepted_again(&env, &kit, &body("after-outage")).await;
    let r = kit.api("GET", "/readyz", None, &[], None).await;
    assert_eq!(r.status, 200, "ready again after the outage: {:?}", r.body);
    let r = kit.send(AUTH_SYNC, &body("after-outage-2")).await;
    assert_accepted("the next callback after the outage", &r, env.key());
    expected.extend(["after-outage".to_owned(), "after-outage-2".to_owned()]);

    // The marketplace retrying a callback answered 000005 as it was (same nonce) must not be
    // refused as a replay (docs/decisions/0005-replay-key-is-the-verified-mac.md: a failed
    // publish releases its replay key).
    let r = kit.send_signed(AUTH_SYNC, &refused[0]).await.unwrap();
    if r.ok() {
        expected.push("during-outage-0".to_owned());
    } else {
        problems.push(format!(
            "the unchanged retry of a callback answered 000005 was not accepted: {r:?}"
        ));
    }

    // RabbitMQ hangs: connections stay open, nothing is forwarded.
    if let Some(p) = &proxy {
        p.freeze();
        during_outage(&env, &kit, "broker-hangs", body, 2, &mut problems).await;
        p.restore();
        accepted_again(&env, &kit, &body("after-hang")).await;
        expected.push("after-hang".to_owned());
    }

    // What was acknowledged is applied.
    let worker = env.start("worker").await;
    wait_until(
        "the acknowledged callbacks are applied",
        APPLY_TIMEOUT,
        || async {
            let applied = users(&env, t).await;
            expected.iter().all(|u| applied.contains(u))
        },
    )
    .await;

    assert!(
        problems.is_empty(),
        "queue outage handling:\n{}\n----- ingress output -----\n{}",
        problems.join("\n"),
        ingress.logs()
    );
    drop(worker);
    drop(ingress);
    drop(proxy);
    env.finish().await;
}

/// Scenario 4: a worker killed with SIGKILL while applying loses nothing and duplicates
/// nothing: its unacknowledged messages are applied once by the next worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_loses_and_doubles_nothing() {
    const CALLBACKS: usize = 300;
    const SENDERS: usize = 16;
    let mut env = Env::new("kill-worker").await;
    // The embedded queue gives a dead worker's leases back after this long.
    env.queue.lease_ms = 3_000;
    let ingress = env.start("ingress").await;
    let (mut worker, mut db_proxy) = killable_worker(&env).await;
    let kit = ingress.kit();
    let t = "tenant-kill";
    let app = "app-kill";
    let users_of =
        |i: usize| -> Vec<String> { (0..1 + i % 3).map(|j| format!("user-{i:03}-{j}")).collect() };

    // The senders send at least `CALLBACKS`, and go on until both kills have landed: a worker
    // faster than the callbacks would otherwise have drained them all before the second kill
    // and never hold a message again (seen: "timed out waiting until the worker holds
    // messages").
    let answered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = tokio::task::JoinSet::new();
    for k in 0..SENDERS {
        let kit = kit.clone();
        let answered = Arc::clone(&answered);
        let stop = Arc::clone(&stop);
        senders.spawn(async move {
            let mut replies = Vec::new();
            for i in (k..20 * CALLBACKS).step_by(SENDERS) {
                if i >= CALLBACKS && stop.load(Ordering::SeqCst) {
                    break;
                }
                let users: Vec<User> = users_of(i)
                    .iter()
                    .map(|u| User::new(u, "D1", "user", true))
                    .collect();
                let r = kit
                    .send(
                        AUTH_SYNC,
                        &payload::auth(t, app, 1, &users, &time(i as i64)),
                    )
                    .await;
                answered.fetch_add(1, Ordering::SeqCst);
                replies.push((i, r));
            }
            replies
        });
    }

    // Kill the worker twice while it is applying, with callbacks still coming in; each time a
    // new worker takes over. A kill must land while the worker holds messages it has not
    // acknowledged (mid-batch); one that lands between batches does not count, and the next
    // worker is killed again.
    let mut kills = Vec::new();
    for (round, share) in [(1, 4), (2, 2)] {
        let before = env.live_authorizations().await;
        wait_until("the worker applies callbacks", APPLY_TIMEOUT, || async {
            env.live_authorizations().await > before
                && answered.load(Ordering::SeqCst) >= CALLBACKS / share
        })
        .await;
        let mut attempts = 0;
        let (at_kill, held) = loop {
            attempts += 1;
            let held = if let Some(proxy) = &db_proxy {
                // RabbitMQ: the broker requeues a dead consumer's messages at once, so count
                // them before the kill, with the worker's database frozen: it can neither
                // commit nor acknowledge, so what it holds now it holds when killed.
                proxy.freeze();
                wait_until(
                    "the frozen worker holds messages",
                    APPLY_TIMEOUT,
                    || async { unacknowledged(&env).await > 0 },
                )
                .await;
                let held = unacknowledged(&env).await;
                worker.kill9();
                proxy.cut();
                held
            } else {
                // Embedded queue: the dead worker's leases, counted after the kill (exact:
                // nobody clears them before `queue.lease_ms`).
                wait_until("the worker holds messages", APPLY_TIMEOUT, || async {
                    unacknowledged(&env).await > 0
                })
                .await;
                worker.kill9();
                unacknowledged(&env).await
            };
            let at_kill = env.live_authorizations().await;
            (worker, db_proxy) = killable_worker(&env).await;
            if held > 0 {
                break (at_kill, held);
            }
            assert!(
                attempts < 5,
                "no kill landed mid-batch in {attempts} attempts"
            );
        };
        eprintln!(
            "kill {round}: worker killed with {at_kill} authorisations applied, {} callbacks answered, {held} messages held unacknowledged, attempt {attempts}",
            answered.load(Ordering::SeqCst)
        );
        kills.push(at_kill);
    }
    stop.store(true, Ordering::SeqCst);
    let mut worker2 = worker;

    let mut sent = Vec::new();
    while let Some(done) = senders.join_next().await {
        for (i, r) in done.unwrap() {
            assert_accepted(&format!("callback {i}"), &r, env.key());
            sent.push(i);
        }
    }
    let mut expected: Vec<String> = sent.into_iter().flat_map(users_of).collect();
    expected.sort();
    for at_kill in kills {
        assert!(
            at_kill < expected.len() as i64,
            "the worker was killed mid-stream ({at_kill} of {} applied)",
            expected.len()
        );
    }

    wait_until(
        "every authorisation is applied",
        Duration::from_secs(90),
        || async { env.live_authorizations().await >= expected.len() as i64 },
    )
    .await;
    wait_until("the queue is empty", APPLY_TIMEOUT, || async {
        env.queued().await == 0
    })
    .await;
    // Stop the worker gracefully: on RabbitMQ anything it still held unacked would be back
    // in the queue now.
    let status = worker2.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "worker exit status {status}");

    assert_eq!(
        users(&env, t).await,
        expected,
        "exactly the sent authorisations"
    );
    let n = expected.len() as i64;
    assert_eq!(
        env.scalar("SELECT COUNT(*) FROM journal WHERE entity = 'member'")
            .await,
        n,
        "one journal row per authorised member (no double applies)"
    );
    assert_eq!(
        env.scalar(
            "SELECT COUNT(DISTINCT entity_key) FROM journal WHERE entity = 'member' AND action = 'authorized'"
        )
        .await,
        n,
        "one authorisation per member"
    );
    assert_eq!(env.queued().await, 0, "nothing left in the queue");
    assert_eq!(env.scalar("SELECT COUNT(*) FROM dead_letters").await, 0);

    drop(ingress);
    env.finish().await;
}

/// A worker; on RabbitMQ + PostgreSQL it reaches the database through a proxy of its own, so
/// that the test can freeze it mid-batch.
async fn killable_worker(env: &Env) -> (tests::Server, Option<TcpProxy>) {
    if !(env.is_amqp() && env.is_postgres()) {
        return (env.start("worker").await, None);
    }
    let proxy = TcpProxy::start(url_socket_addr(&env.db.url, 5432)).await;
    let url = proxy.rewrite_url(&env.db.url);
    let worker = env
        .start_with(&["worker"], &[("KITSYNC_DATABASE__URL".into(), Some(url))])
        .await;
    (worker, Some(proxy))
}

/// Messages delivered to a worker and not yet acknowledged: the embedded queue's leases, or
/// RabbitMQ's `messages_unacknowledged` of the test's queue (`rabbitmqctl`, on this machine).
async fn unacknowledged(env: &Env) -> i64 {
    if !env.is_amqp() {
        return env
            .scalar("SELECT COUNT(*) FROM queue_messages WHERE lease_owner IS NOT NULL")
            .await;
    }
    let out = tokio::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_unacknowledged",
        ])
        .output()
        .await
        .expect("rabbitmqctl (RabbitMQ's CLI) runs on the machine of the RabbitMQ tests");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next()? == env.queue.name).then(|| f.next()?.parse().ok())?
        })
        .unwrap_or(0)
}

/// Scenario 5: a message that cannot be applied does not block the others, ends in the
/// dead letters with its reason after `max_attempts`, and applies once replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_is_dead_lettered_and_replayed() {
    let mut env = Env::new("poison").await;
    // The worker's own /metrics listener, read afresh on every scrape.
    env.extra_env.extend([
        ("KITSYNC_METRICS__ADDR".into(), "127.0.0.1:0".into()),
        ("KITSYNC_METRICS__CACHE_MS".into(), "0".into()),
    ]);
    env.queue.max_attempts = 3;
    env.queue.retry_min_delay_ms = 200;
    env.queue.retry_max_delay_ms = 400;
    env.install_poison_trigger().await;
    let ingress = env.start("ingress").await;
    let kit = ingress.kit();
    let t = "tenant-poison";
    let app = "app-poison";
    let auth = |user: &str, v: i64| {
        payload::auth(t, app, 1, &[User::new(user, "D1", "user", true)], &time(v))
    };

    // Queue the poison among good callbacks before any worker runs, so they share a batch.
    let r = kit.send(AUTH_SYNC, &auth(POISON_USER, 0)).await;
    assert_accepted("the poison callback", &r, env.key());
    let good: Vec<String> = (0..5).map(|i| format!("good-{i}")).collect();
    for (i, u) in good.iter().enumerate() {
        let r = kit.send(AUTH_SYNC, &auth(u, i as i64 + 1)).await;
        assert_accepted(u, &r, env.key());
    }
    let worker = env.start("worker").await;

    wait_until("the good callbacks are applied", APPLY_TIMEOUT, || async {
        env.live_authorizations().await >= 5
    })
    .await;
    wait_until(
        "the poison callback is dead-lettered",
        APPLY_TIMEOUT,
        || async { env.scalar("SELECT COUNT(*) FROM dead_letters").await >= 1 },
    )
    .await;
    assert_eq!(users(&env, t).await, good);

    let out = env.cli_ok(&["deadletters", "list"]).await;
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("kitsync deadletters list:\n{listed}");
    let first = listed.lines().next().unwrap_or_default();
    let id: i64 = first
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("a dead-letter id first: {listed}"));
    assert_eq!(
        env.scalar("SELECT id FROM dead_letters").await,
        id,
        "{listed}"
    );
    assert_eq!(
        listed.lines().filter(|l| l.contains("pending")).count(),
        1,
        "exactly one pending dead letter: {listed}"
    );
    assert!(listed.contains("attempts=3"), "{listed}");
    assert!(
        listed.contains("e2e poison: insert refused by trigger"),
        "the reason is listed: {listed}"
    );
    // /metrics counts it: the worker's counter and the shared gauge.
    let metrics = worker.metrics_client();
    let dead_lettered = "kitsync_apply_failures_total{kind=\"dead_lettered\"}";
    assert_eq!(metric(&metrics, dead_lettered).await, Some(1.0));
    assert_eq!(metric(&metrics, "kitsync_dead_letters").await, Some(1.0));

    // Repair, replay, and the user appears.
    env.drop_poison_trigger().await;
    let out = env.cli_ok(&["deadletters", "replay", "--all"]).await;
    let replayed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(replayed.contains("replayed 1 dead letter"), "{replayed}");
    wait_until(
        "the replayed callback is applied",
        APPLY_TIMEOUT,
        || async { users(&env, t).await.iter().any(|u| u == POISON_USER) },
    )
    .await;
    let mut all = good.clone();
    all.push(POISON_USER.to_owned());
    all.sort();
    assert_eq!(users(&env, t).await, all);

    let out = env.cli(&["deadletters", "list"]).await;
    let pending = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(pending.contains("no dead letters"), "{pending}");
    // Replayed: no dead letter is pending; the counter of what happened stays.
    assert_eq!(metric(&metrics, "kitsync_dead_letters").await, Some(0.0));
    assert_eq!(metric(&metrics, dead_lettered).await, Some(1.0));
    let out = env.cli(&["deadletters", "list", "--all"]).await;
    let history = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(history.contains("replayed"), "{history}");
    wait_until("the queue is drained", APPLY_TIMEOUT, || async {
        env.queued().await == 0
    })
    .await;

    drop(worker);
    drop(ingress);
    env.finish().await;
}

/// A user and what sending its callback came to.
type Sent = (String, Result<Reply, String>);

/// Scenario 6: SIGTERM stops the service promptly with exit code 0, and every callback it
/// acknowledged is applied after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_graceful_and_loses_nothing() {
    const CALLBACKS: usize = 400;
    const SENDERS: usize = 8;
    let mut env = Env::new("sigterm").await;
    // Shorter than the default 60 s so that a stranded lease (see below) costs less time.
    env.queue.lease_ms = 15_000;
    let mut server = env.start("serve").await;
    let kit = server.kit();
    let t = "tenant-sigterm";
    let app = "app-sigterm";

    let answered_ok = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let mut senders = tokio::task::JoinSet::new();
    for k in 0..SENDERS {
        let kit: Kit = kit.clone();
        let answered_ok = Arc::clone(&answered_ok);
        let results = Arc::clone(&results);
        senders.spawn(async move {
            for i in (k..CALLBACKS).step_by(SENDERS) {
                let user = format!("user-{i:03}");
                let body = payload::auth(
                    t,
                    app,
                    1,
                    &[User::new(&user, "D1", "user", true)],
                    &time(i as i64),
                );
                let r = kit.send_signed(AUTH_SYNC, &kit.signed(&body)).await;
                if r.as_ref().is_ok_and(Reply::ok) {
                    answered_ok.fetch_add(1, Ordering::SeqCst);
                }
                let failed = r.is_err();
                results.lock().unwrap().push((user, r));
                if failed {
                    // The server is gone; the rest would fail the same way.
                    break;
                }
            }
        });
    }
    wait_until("some callbacks are accepted", APPLY_TIMEOUT, || async {
        answered_ok.load(Ordering::SeqCst) >= 60
    })
    .await;
    let status = server.terminate(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}\n{}",
        server.logs()
    );
    while let Some(r) = senders.join_next().await {
        r.unwrap();
    }
    let results = std::mem::take(&mut *results.lock().unwrap());
    let accepted: Vec<String> = results
        .iter()
        .filter(|(_, r)| r.as_ref().is_ok_and(Reply::ok))
        .map(|(u, _)| u.clone())
        .collect();
    for (u, r) in &results {
        if let Ok(r) = r {
            assert!(
                r.ok() || r.code == "000005",
                "{u}: only 000000 or 000005 while shutting down: {r:?}"
            );
            assert!(r.body_sign_verifies(env.key()), "{u}: {r:?}");
        }
    }
    assert!(
        accepted.len() >= 60 && accepted.len() < CALLBACKS,
        "SIGTERM came mid-stream ({} accepted)",
        accepted.len()
    );

    // Embedded queue: rows still leased by the stopped process only come back when the
    // lease expires, as if it had crashed. A graceful stop should leave none.
    let stranded = if env.is_amqp() {
        0
    } else {
        env.scalar(&format!(
            "SELECT COUNT(*) FROM queue_messages WHERE lease_until > {}",
            now_ms()
        ))
        .await
    };
    eprintln!(
        "SIGTERM: {} of {CALLBACKS} callbacks acknowledged, {} applied before the restart, \
         {} still queued, {stranded} of them leased by the stopped process",
        accepted.len(),
        users(&env, t).await.len(),
        env.queued().await,
    );
    let restarted = env.start("serve").await;
    // Wait out stranded leases too, so a failure says whether messages were delayed or lost.
    let patience = if stranded > 0 {
        APPLY_TIMEOUT + Duration::from_millis(env.queue.lease_ms)
    } else {
        APPLY_TIMEOUT
    };
    wait_until(
        "every callback acknowledged before SIGTERM is applied",
        patience,
        || async {
            let applied = users(&env, t).await;
            accepted.iter().all(|u| applied.binary_search(u).is_ok())
        },
    )
    .await;
    assert_eq!(
        stranded, 0,
        "the gracefully stopped process left {stranded} queued messages leased: the restarted \
         process could apply them only after queue.lease_ms ({} ms)",
        env.queue.lease_ms
    );

    drop(restarted);
    env.finish().await;
}

/// Scenario 7: during a key rotation both keys are accepted, and each answer is signed with
/// the key that verified its request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_accepts_both_keys_and_signs_with_the_one_used() {
    let mut env = Env::new("rotation").await;
    let old_key = format!("rotation-old-{}", uuid::Uuid::new_v4().simple());
    let new_key = format!("rotation-new-{}", uuid::Uuid::new_v4().simple());
    env.access_keys = vec![old_key.clone(), new_key.clone()];
    let server = env.start("serve").await;
    let old = server.kit();
    assert_eq!(old.key, old_key);
    let new = old.with_key(&new_key);

    for (kit, key, other, tenant, name, what) in [
        (
            &new,
            &new_key,
            &old_key,
            "tenant-new-key",
            "New",
            "the second key",
        ),
        (
            &old,
            &old_key,
            &new_key,
            "tenant-old-key",
            "Old",
            "the first key",
        ),
    ] {
        let body = payload::tenant(tenant, name, 1, 0, &time(0));
        let r = kit.send(TENANT_SYNC, &body).await;
        assert_accepted(&format!("signed with {what}"), &r, key);
        assert!(!r.body_sign_verifies(other), "answer keyed with {what}");
    }

    let r = old
        .with_key("retired-key")
        .send(
            TENANT_SYNC,
            &payload::tenant("tenant-unknown-key", "Nope", 1, 0, &time(0)),
        )
        .await;
    assert_eq!(r.code, "000001", "{r:?}");
    assert!(
        r.body_sign_verifies(&old_key),
        "a request no key verified is answered with the first key: {r:?}"
    );

    wait_until("both tenants are applied", APPLY_TIMEOUT, || async {
        env.snapshot("tenant-new-key").await.tenant.is_some()
            && env.snapshot("tenant-old-key").await.tenant.is_some()
    })
    .await;
    assert!(env.snapshot("tenant-unknown-key").await.tenant.is_none());
    assert_eq!(env.scalar("SELECT COUNT(*) FROM tenants").await, 2);

    drop(server);
    env.finish().await;
}

/// Scenario: `ingress` and `worker` scaled out as separate processes, two of each, sharing
/// one database and queue. Callbacks sent to either ingress are all applied exactly once,
/// and a request accepted by one ingress and replayed to the other is never applied: on the
/// embedded queue the second ingress refuses it (the key is committed with the queue row);
/// on RabbitMQ it is acknowledged, and the worker discards it (the ledger is written in the
/// apply transaction) and counts it as `outcome="replayed"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingresses_and_two_workers_share_the_work() {
    const CALLBACKS: usize = 120;
    // Users per callback: enough work per message that the backlog outlasts one worker
    // starting after the other, even with the rest of the suite running beside it.
    const USERS: usize = 30;
    let mut env = Env::new("scale-out").await;
    let ingress_a = env.start("ingress").await;
    let ingress_b = env.start("ingress").await;
    let (kit_a, kit_b) = (ingress_a.kit(), ingress_b.kit());
    let tenants = ["tenant-so-1", "tenant-so-2", "tenant-so-3"];

    // A request accepted by A is a replay for B.
    let first = kit_a.signed(&payload::auth(
        tenants[0],
        "app-so",
        1,
        &[User::new("first-user", "D1", "user", true)],
        &time(0),
    ));
    assert_accepted(
        "first request via A",
        &kit_a.send_signed(AUTH_SYNC, &first).await.unwrap(),
        env.key(),
    );
    let replay = kit_b.send_signed(AUTH_SYNC, &first).await.unwrap();
    if env.is_amqp() {
        assert_accepted("replay via B, on RabbitMQ", &replay, env.key());
    } else {
        assert_eq!(replay.code, "000001", "replay via B: {replay:?}");
        assert!(
            replay.msg.contains("replay"),
            "replay via B says so: {replay:?}"
        );
    }
    // Via A again: A remembers what it accepted, on either queue.
    let again = kit_a.send_signed(AUTH_SYNC, &first).await.unwrap();
    assert_eq!(again.code, "000001", "replay via A: {again:?}");

    let mut senders = tokio::task::JoinSet::new();
    for k in 0..8 {
        let kit = if k % 2 == 0 {
            kit_a.clone()
        } else {
            kit_b.clone()
        };
        senders.spawn(async move {
            let mut replies = Vec::new();
            for i in (k..CALLBACKS).step_by(8) {
                let t = tenants[i % tenants.len()];
                let users: Vec<User> = (0..USERS)
                    .map(|u| User::new(&format!("user-{i:03}-{u:02}"), "D1", "user", true))
                    .collect();
                let body = payload::auth(t, "app-so", 1, &users, &time(1 + i as i64));
                replies.push((i, kit.send(AUTH_SYNC, &body).await));
            }
            replies
        });
    }
    while let Some(done) = senders.join_next().await {
        for (i, r) in done.unwrap() {
            assert_accepted(&format!("callback {i}"), &r, env.key());
        }
    }

    // The workers start together on the backlog, each with its own counters to show that
    // both took part, one message per transaction (and on RabbitMQ two in hand at most) so
    // that the backlog outlasts the time one takes to start after the other. (Started before the burst, with batches of 4, one of
    // them now and then applied every callback as it came, faster than they arrived, and
    // left the other nothing: seen 121 and 0.)
    env.push_var("KITSYNC_METRICS__ADDR", "127.0.0.1:0");
    env.push_var("KITSYNC_WORKER__BATCH_SIZE", "1");
    // RabbitMQ pushes a backlog to the first consumer up to its prefetch: keep it small.
    env.push_var("KITSYNC_QUEUE__PREFETCH", "2");
    let (mut worker_1, mut worker_2) = tokio::join!(env.start("worker"), env.start("worker"));

    let expected = (CALLBACKS * USERS) as i64 + 1;
    wait_until("every authorisation is applied", APPLY_TIMEOUT, || async {
        env.live_authorizations().await >= expected
    })
    .await;
    wait_until("the queue is empty", APPLY_TIMEOUT, || async {
        env.queued().await == 0
    })
    .await;
    assert_eq!(env.live_authorizations().await, expected);
    assert_eq!(
        env.scalar(
            "SELECT COUNT(*) FROM journal WHERE entity = 'member' AND action = 'authorized'"
        )
        .await,
        expected,
        "each authorisation applied once, whichever worker took it"
    );
    for t in tenants {
        assert!(!users(&env, t).await.is_empty(), "{t} has members");
    }
    assert_eq!(env.scalar("SELECT COUNT(*) FROM dead_letters").await, 0);
    let shares = [
        applied_by(&worker_1.metrics_client()).await,
        applied_by(&worker_2.metrics_client()).await,
    ];
    eprintln!("messages applied by worker 1 and worker 2: {shares:?}");
    // On RabbitMQ the broker spreads the backlog over both consumers. On the embedded queue
    // the two processes meet in SQLite's busy handler, which sleeps while the other worker
    // commits and begins again at once (the unfairness the in-process write gate removes,
    // decision 0048): one of them may apply nearly everything, now and then everything
    // (seen: 121 and 0, 119 and 2), so only exactly-once is asserted there.
    if env.is_amqp() {
        assert!(
            shares.iter().all(|n| *n > 0.0),
            "both workers applied messages: {shares:?}"
        );
    }
    assert!(
        shares.iter().sum::<f64>() >= (CALLBACKS + 1) as f64,
        "together they applied every message: {shares:?}"
    );
    let replayed_series = "kitsync_applied_messages_total{outcome=\"replayed\"}";
    let mut replayed = 0.0;
    for w in [&worker_1, &worker_2] {
        replayed += metric(&w.metrics_client(), replayed_series)
            .await
            .unwrap_or(0.0);
    }
    let want = if env.is_amqp() { 1.0 } else { 0.0 };
    assert_eq!(replayed, want, "replays discarded by the workers");

    for w in [&mut worker_1, &mut worker_2] {
        let status = w.terminate(Duration::from_secs(15)).await;
        assert!(status.success(), "worker exit status {status}");
    }
    drop((ingress_a, ingress_b));
    env.finish().await;
}

/// Scenario: a replay reaching an ingress that did not accept the original — this process
/// after a restart — is never applied. On RabbitMQ it is acknowledged and discarded by the
/// worker (`outcome="replayed"`), on the embedded queue it is refused (`000001`). A replay to
/// the process that accepted it is refused on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_a_restart_is_never_applied() {
    let mut env = Env::new("replay-restart").await;
    env.push_var("KITSYNC_METRICS__ADDR", "127.0.0.1:0");
    let t = "tenant-replay";
    let mut server = env.start("serve").await;
    let kit = server.kit();
    let original = kit.signed(&payload::auth(
        t,
        "app-replay",
        1,
        &[User::new("only-once", "D1", "user", true)],
        &time(0),
    ));
    assert_accepted(
        "the original",
        &kit.send_signed(AUTH_SYNC, &original).await.unwrap(),
        env.key(),
    );
    let again = kit.send_signed(AUTH_SYNC, &original).await.unwrap();
    assert_eq!(
        again.code, "000001",
        "replay to the same process: {again:?}"
    );
    wait_until("the original is applied", APPLY_TIMEOUT, || async {
        users(&env, t).await == ["only-once"]
    })
    .await;
    let status = server.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status}");

    let server = env.start("serve").await;
    let kit = server.kit();
    let replay = kit.send_signed(AUTH_SYNC, &original).await.unwrap();
    // A later, different callback, to know when the worker has passed the replay.
    let marker = kit
        .send(AUTH_SYNC, &one_user(t, "app-replay-2", "after-restart"))
        .await;
    assert_accepted("a new callback after the restart", &marker, env.key());
    wait_until("the later callback is applied", APPLY_TIMEOUT, || async {
        users(&env, t).await.contains(&"after-restart".to_owned())
    })
    .await;
    wait_until("the queue is empty", APPLY_TIMEOUT, || async {
        env.queued().await == 0
    })
    .await;
    let replayed = metric(
        &server.metrics_client(),
        "kitsync_applied_messages_total{outcome=\"replayed\"}",
    )
    .await
    .unwrap_or(0.0);
    if env.is_amqp() {
        assert_accepted(
            "the replay after a restart, on RabbitMQ",
            &replay,
            env.key(),
        );
        assert_eq!(
            replayed, 1.0,
            "the worker discarded the replay and counted it"
        );
    } else {
        assert_eq!(replay.code, "000001", "replay after a restart: {replay:?}");
        assert_eq!(replayed, 0.0, "nothing reached the worker to discard");
    }
    assert_eq!(
        env.scalar(&format!(
            "SELECT COUNT(*) FROM journal WHERE tenant_id = '{t}' AND entity = 'member' \
             AND action = 'authorized' AND entity_key LIKE '%only-once%'"
        ))
        .await,
        1,
        "the original was applied once, the replay never"
    );
    drop(server);
    env.finish().await;
}

/// Scenario: PostgreSQL goes away behind a [`TcpProxy`] while callbacks keep coming. On
/// RabbitMQ accepting a callback touches no database, so every one is answered `000000`, and
/// everything is applied once the database is back. On the embedded queue the queue *is*
/// the database: callbacks are refused with `000005` in time, and accepted again after.
/// (SQLite cannot be cut off; this scenario needs PostgreSQL.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_does_not_stop_callbacks_on_rabbitmq() {
    let env = Env::new("pg-outage").await;
    if !env.is_postgres() {
        eprintln!("a_postgres_outage_does_not_stop_callbacks_on_rabbitmq: needs PostgreSQL (KITSYNC_TEST_DATABASE_URL); nothing to cut on SQLite");
        env.finish().await;
        return;
    }
    let proxy = TcpProxy::start(url_socket_addr(&env.db.url, 5432)).await;
    let url = proxy.rewrite_url(&env.db.url);
    let server = env
        .start_with(&["serve"], &[("KITSYNC_DATABASE__URL".into(), Some(url))])
        .await;
    let kit = server.kit();
    let t = "tenant-pg-outage";
    let r = kit.send(AUTH_SYNC, &one_user(t, "app-o", "before")).await;
    assert_accepted("before the outage", &r, env.key());
    wait_until("the first callback is applied", APPLY_TIMEOUT, || async {
        users(&env, t).await == ["before"]
    })
    .await;

    proxy.cut();
    let mut expected = vec!["before".to_owned()];
    let mut problems = Vec::new();
    // Ready while it can take callbacks: on RabbitMQ the database is not needed for that.
    let r = kit.api("GET", "/readyz", None, &[], None).await;
    let want = if env.is_amqp() { 200 } else { 503 };
    if (r.status, r.body["database"].as_bool()) != (want, Some(false)) {
        problems.push(format!(
            "/readyz during the outage: expected {want} with database false, got {} {:?}",
            r.status, r.body
        ));
    }
    if env.is_amqp() {
        for i in 0..20 {
            let user = format!("during-{i:02}");
            let r = kit.send(AUTH_SYNC, &one_user(t, "app-o", &user)).await;
            if r.ok() && r.elapsed < Duration::from_secs(2) {
                expected.push(user);
            } else {
                problems.push(format!("{user}: expected 000000 within 2 s, got {r:?}"));
            }
        }
        // Nothing can be applied meanwhile; the callbacks wait in RabbitMQ.
        tokio::time::sleep(Duration::from_secs(1)).await;
    } else {
        during_outage(
            &env,
            &kit,
            "during",
            |u| one_user(t, "app-o", u),
            2,
            &mut problems,
        )
        .await;
    }
    proxy.restore();
    let r = kit.send(AUTH_SYNC, &one_user(t, "app-o", "after")).await;
    if r.ok() {
        expected.push("after".to_owned());
    } else {
        accepted_again(&env, &kit, &one_user(t, "app-o", "after-retry")).await;
        expected.push("after-retry".to_owned());
    }
    expected.sort();
    wait_until(
        "everything acknowledged is applied once the database is back",
        Duration::from_secs(90),
        || async { users(&env, t).await == expected },
    )
    .await;
    assert!(
        problems.is_empty(),
        "callbacks during a PostgreSQL outage:\n{}\n----- server output -----\n{}",
        problems.join("\n"),
        server.logs()
    );
    drop(server);
    drop(proxy);
    env.finish().await;
}

/// Scenario: the directory API on the running binary. Tokens come from `kitsync token create`
/// (printed once), the tenant arrives through a signed tenantSync, and a tenant-bound token
/// sees only its tenant; `token revoke` takes effect on the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_from_the_cli_guard_the_directory() {
    let env = Env::new("api-tokens").await;
    let server = env.start("serve").await;
    let kit = server.kit();
    for t in ["tenant-api-1", "tenant-api-2"] {
        let r = kit
            .send(
                TENANT_SYNC,
                &payload::tenant(t, &format!("Name {t}"), 1, 0, &time(0)),
            )
            .await;
        assert_accepted(t, &r, env.key());
    }
    let all = env.create_token("reader", "directory:read", None).await;
    let bound = env
        .create_token("app", "directory:read", Some("tenant-api-1"))
        .await;
    for token in [&all, &bound] {
        assert!(token.starts_with("kst_"), "printed token: {token:?}");
    }

    wait_until("both tenants are applied", APPLY_TIMEOUT, || async {
        kit.api_get("/api/v1/tenants/tenant-api-2", Some(&all))
            .await
            .0
            == 200
    })
    .await;
    let (status, body) = kit
        .api_get("/api/v1/tenants/tenant-api-1", Some(&all))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "Name tenant-api-1");
    assert_eq!(body["tenantId"], "tenant-api-1");

    let (status, body) = kit.api_get("/api/v1/tenants/tenant-api-1", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    assert_eq!(
        kit.api_get("/api/v1/tenants/tenant-api-1", Some(&bound))
            .await
            .0,
        200
    );
    let (status, body) = kit
        .api_get("/api/v1/tenants/tenant-api-2", Some(&bound))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );

    // Bad scope names are refused by the CLI, naming the scope.
    let out = env
        .cli(&[
            "token",
            "create",
            "--name",
            "x",
            "--scope",
            "directory:delete",
        ])
        .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`directory:delete` is not a scope"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Revocation: `token list` shows the id, `token revoke` ends it.
    let out = env.cli(&["token", "list"]).await;
    let listed = String::from_utf8(out.stdout).unwrap();
    assert!(!listed.contains(&all), "token list never prints secrets");
    let id = all
        .trim_start_matches("kst_")
        .split('_')
        .next()
        .unwrap()
        .to_owned();
    assert!(listed.contains(&id), "{listed}");
    assert!(env.cli(&["token", "revoke", &id]).await.status.success());
    assert_eq!(
        kit.api_get("/api/v1/tenants/tenant-api-1", Some(&all))
            .await
            .0,
        401
    );

    drop(server);
    env.finish().await;
}

/// Scenario: webhook push through the real binary. `kitsync webhooks add` registers a local
/// receiver while `serve` runs; a signed authSync is applied and its member events arrive
/// signed per Standard Webhooks (checked here with a plain HMAC); `webhooks list` and
/// `webhooks deliveries` show it, never the secret; `https` is refused; SIGTERM is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_push_signed_member_events() {
    use axum::body::Bytes;
    use axum::http::HeaderMap;
    use base64::Engine as _;
    use hmac::Mac as _;

    type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;
    let received: Received = Arc::default();
    let app = axum::Router::new()
        .route(
            "/kitsync",
            axum::routing::post(
                |axum::extract::State(r): axum::extract::State<Received>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    r.lock().unwrap().push((headers, body));
                    axum::http::StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = listener.local_addr().unwrap();
    let receiver_task = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut env = Env::new("webhooks").await;
    env.push_var("KITSYNC_WEBHOOKS__POLL_INTERVAL_MS", "50");
    let mut server = env.start("serve").await;
    let kit = server.kit();

    let out = env
        .cli_ok(&[
            "webhooks",
            "add",
            &format!("http://{receiver}/kitsync"),
            "--types",
            "member",
        ])
        .await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines = stdout.lines();
    let id = lines.next().unwrap().trim().to_owned();
    let secret = lines.next().unwrap().trim().to_owned();
    assert!(id.starts_with("whk_"), "{stdout}");
    assert!(secret.starts_with("whsec_"), "{stdout}");

    let t = "tenant-hooks";
    let r = kit
        .send(
            TENANT_SYNC,
            &payload::tenant(t, "Hooks Inc", 1, 0, &time(0)),
        )
        .await;
    assert_accepted("tenantSync", &r, env.key());
    let users = [
        User::new("alice", "D1", "admin", true),
        User::new("bob", "D1", "user", true),
    ];
    let r = kit
        .send(
            AUTH_SYNC,
            &payload::auth(t, "app-hooks", 1, &users, &time(1_000)),
        )
        .await;
    assert_accepted("authSync", &r, env.key());

    let events = |received: &Received| -> Vec<serde_json::Value> {
        received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, body)| {
                let v: serde_json::Value = serde_json::from_slice(body).unwrap();
                v["data"]["events"].as_array().cloned().unwrap_or_default()
            })
            .collect()
    };
    wait_until("both member events are pushed", APPLY_TIMEOUT, || async {
        events(&received).len() >= 2
    })
    .await;

    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    for (headers, body) in received.lock().unwrap().iter() {
        let h = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_owned();
        let (msg_id, ts, sig) = (
            h("webhook-id"),
            h("webhook-timestamp"),
            h("webhook-signature"),
        );
        assert!(msg_id.starts_with(&format!("msg_{id}_")), "{msg_id}");
        assert!((now_ms() / 1000 - ts.parse::<i64>().unwrap()).abs() < 120);
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{msg_id}.{ts}.").as_bytes());
        mac.update(body);
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(sig, format!("v1,{expected}"), "Standard Webhooks signature");
        assert_eq!(h("content-type"), "application/json");
    }
    let got = events(&received);
    let summary: Vec<(&str, &str, &str)> = got
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["tenantId"].as_str().unwrap(),
                e["key"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("member.authorized", t, "alice"),
            ("member.authorized", t, "bob")
        ],
        "only member events (the tenant's own event is filtered out), in order"
    );
    assert_eq!(got[0]["data"]["userName"], "alice");

    // What operators see: state, cursor, attempts; never the secret.
    let out = env.cli(&["webhooks", "list"]).await;
    assert!(out.status.success());
    let listed = String::from_utf8(out.stdout).unwrap();
    assert!(
        !listed.contains(&secret[6..]),
        "list never prints the secret"
    );
    let row: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(row["id"], id.as_str());
    assert_eq!(row["state"], "active");
    assert_eq!(row["types"], serde_json::json!(["member"]));
    assert_eq!(row["consecutiveFailures"], 0);
    let out = env.cli(&["webhooks", "deliveries", &id]).await;
    assert!(out.status.success());
    let attempts = String::from_utf8(out.stdout).unwrap();
    let first: serde_json::Value = serde_json::from_str(attempts.lines().next().unwrap()).unwrap();
    assert_eq!(first["status"], 204, "{attempts}");
    let stored = env
        .strings("SELECT secret FROM webhook_endpoints")
        .await
        .join("");
    assert!(
        stored.starts_with("v2:") && !stored.contains(&secret[6..]),
        "stored sealed (bound to its endpoint)"
    );

    let out = env
        .cli(&["webhooks", "add", "ftp://hooks.example.com/kitsync"])
        .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scheme `ftp` is not supported"), "{err}");

    let status = server.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "serve exit status {status}");
    assert!(env.cli(&["webhooks", "remove", &id]).await.status.success());
    let out = env.cli(&["webhooks", "remove", &id]).await;
    assert!(!out.status.success(), "removing twice is an error");
    receiver_task.abort();
    env.finish().await;
}

/// Messages one worker applied and acknowledged, whatever their outcome.
async fn applied_by(client: &Kit) -> f64 {
    let r = client.api("GET", "/metrics", None, &[], None).await;
    assert_eq!(r.status, 200);
    String::from_utf8_lossy(&r.raw)
        .lines()
        .filter(|l| l.starts_with("kitsync_applied_messages_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The value of one series in `/metrics`, written exactly as the exposition names it.
async fn metric(client: &Kit, series: &str) -> Option<f64> {
    let r = client.api("GET", "/metrics", None, &[], None).await;
    assert_eq!(r.status, 200);
    String::from_utf8_lossy(&r.raw).lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
