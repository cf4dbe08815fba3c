//! The public edge of the ingress, tried as an attacker would: strict headers, replays through
//! the nonce/timestamp boundary and after the window, the replay key being the MAC, the
//! canonical-form fallback and its bounds, and load shedding. Each test failed on the code
//! before the hardening it covers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use kitsync_domain::{signing, Command, QueuedCallback};
use kitsync_ingress::{router, Acceptor, KitSettings};
use kitsync_queue::{Queue, QueueSettings};
use kitsync_secrets::Sealer;
use secrecy::SecretString;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const KEY: &str = "edge-key";

struct Fixture {
    app: axum::Router,
    queue: Queue,
    clock: Arc<AtomicI64>,
    acceptor: Arc<Acceptor>,
    db: migrations::testing::TestDb,
}

async fn fixture(tune: impl FnOnce(&mut KitSettings)) -> Fixture {
    let db = migrations::testing::fresh_db().await.unwrap();
    let queue = Queue::connect(&QueueSettings::default(), db.conn.clone())
        .await
        .unwrap();
    let mut settings = KitSettings {
        access_keys: vec![SecretString::from(KEY.to_owned())],
        ..KitSettings::default()
    };
    tune(&mut settings);
    let sealer =
        Sealer::from_master_key(&SecretString::from("test master key".to_owned())).unwrap();
    let clock = Arc::new(AtomicI64::new(chrono::Utc::now().timestamp_millis()));
    let c = Arc::clone(&clock);
    let acceptor = Arc::new(
        Acceptor::new(settings, queue.clone(), None, sealer)
            .with_clock(move || c.load(Ordering::SeqCst)),
    );
    Fixture {
        app: router(Arc::clone(&acceptor)),
        queue,
        clock,
        acceptor,
        db,
    }
}

impl Fixture {
    fn now(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }

    fn advance(&self, ms: i64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct Answer {
    code: String,
    msg: String,
}

/// Sends `body` with exactly these header values (`None`: header absent).
async fn send_raw(
    app: &axum::Router,
    kind: &str,
    nonce: Option<&str>,
    ts: Option<&str>,
    sign: Option<&str>,
    body: impl Into<Body>,
) -> Answer {
    let mut req =
        Request::post(format!("/produceAPI/v2/{kind}")).header("content-type", "application/json");
    for (name, value) in [("x-nonce", nonce), ("x-timestamp", ts), ("x-sign", sign)] {
        if let Some(v) = value {
            req = req.header(name, v);
        }
    }
    let res = app
        .clone()
        .oneshot(req.body(body.into()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "always HTTP 200");
    assert!(
        res.headers().contains_key("Body-Sign"),
        "every answer is signed"
    );
    let raw = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    Answer {
        code: v["resultCode"].as_str().unwrap().to_owned(),
        msg: v["resultMsg"].as_str().unwrap().to_owned(),
    }
}

/// Sends a tenantSync `body` with all three headers, as given.
async fn send_with(
    app: &axum::Router,
    nonce: &str,
    ts: &str,
    sign: &str,
    body: impl Into<Body>,
) -> Answer {
    send_raw(app, "tenantSync", Some(nonce), Some(ts), Some(sign), body).await
}

/// Signs `payload` (which may differ from the body sent) like the marketplace.
async fn send_signed(
    app: &axum::Router,
    kind: &str,
    nonce: &str,
    ts: &str,
    payload: &str,
    body: &str,
) -> Answer {
    let sign = signing::sign(KEY.as_bytes(), nonce, ts, payload.as_bytes());
    send_raw(
        app,
        kind,
        Some(nonce),
        Some(ts),
        Some(&sign),
        body.to_owned(),
    )
    .await
}

async fn send(app: &axum::Router, kind: &str, nonce: &str, ts: i64, body: &str) -> Answer {
    let ts = ts.to_string();
    send_signed(app, kind, nonce, &ts, body, body).await
}

fn tenant_body(id: &str) -> String {
    format!(
        r#"{{"instanceId":"i1","orderId":"o1","tenantId":"{id}","tenantCode":"c","name":"Acme","domainName":"https://acme.example.com","flag":1,"testFlag":0,"timeStamp":"20240101120000000"}}"#
    )
}

const NONCE: &str = "50D83FDECAED6CCD8EF597F2A577950527928BA287D04E6036E92B2806FD17DA";

#[tokio::test]
async fn a_digit_moved_across_the_nonce_timestamp_boundary_is_not_a_new_request() {
    let f = fixture(|_| {}).await;
    let ts = f.now().to_string();
    let body = tenant_body("t1");
    // The captured request: nonce ending in 0, timestamp T.
    let nonce0 = format!("{}0", &NONCE[..63]);
    let sign = signing::sign(KEY.as_bytes(), &nonce0, &ts, body.as_bytes());
    let first = send_with(&f.app, &nonce0, &ts, &sign, body.clone()).await;
    assert_eq!(first.code, "000000", "{}", first.msg);
    // The replay: nonce without its last 0, timestamp 0T — the MAC input is the same string.
    let shifted_ts = format!("0{ts}");
    let replay = send_with(&f.app, &NONCE[..63], &shifted_ts, &sign, body).await;
    assert_ne!(
        replay.code, "000000",
        "replayed through the boundary: {replay:?}"
    );
    assert_eq!(
        replay.code, "000002",
        "a 14-digit timestamp is malformed: {replay:?}"
    );
    assert!(replay.msg.contains("x-timestamp"), "{}", replay.msg);
    assert_eq!(f.queue.depth().await.unwrap(), 1);
}

#[tokio::test]
async fn a_replay_is_remembered_until_its_signed_timestamp_leaves_the_window() {
    let f = fixture(|_| {}).await;
    // Signed 50 s ahead of our clock (inside the window), replayed 63 s later: the signed
    // timestamp is then 13 s old, still inside the window, so it must still be a replay.
    let ts = f.now() + 50_000;
    let body = tenant_body("t1");
    let first = send(&f.app, "tenantSync", NONCE, ts, &body).await;
    assert_eq!(first.code, "000000", "{}", first.msg);
    f.advance(63_000);
    let again = send(&f.app, "tenantSync", NONCE, ts, &body).await;
    assert_eq!(
        again.code, "000001",
        "accepted again after the ledger forgot: {again:?}"
    );
    // Once the signed timestamp is out of the window the request is stale anyway.
    f.advance(50_000);
    let late = send(&f.app, "tenantSync", NONCE, ts, &body).await;
    assert_eq!(late.code, "000002", "{late:?}");
    assert_eq!(f.queue.depth().await.unwrap(), 1);
}

#[tokio::test]
async fn the_replay_key_is_the_mac_not_the_nonce() {
    let f = fixture(|_| {}).await;
    let ts = f.now();
    let first = send(&f.app, "tenantSync", NONCE, ts, &tenant_body("t1")).await;
    assert_eq!(first.code, "000000", "{}", first.msg);
    // The same x-sign in upper case is the same MAC: a replay.
    let ts_s = ts.to_string();
    let body = tenant_body("t1");
    let upper = signing::sign(KEY.as_bytes(), NONCE, &ts_s, body.as_bytes()).to_uppercase();
    let again = send_with(&f.app, NONCE, &ts_s, &upper, body).await;
    assert_eq!(again.code, "000001", "{again:?}");
    assert!(again.msg.contains("replay"), "{}", again.msg);
    // A different authentic request that happens to reuse the nonce is not a replay of it.
    let other = send(&f.app, "tenantSync", NONCE, ts, &tenant_body("t2")).await;
    assert_eq!(other.code, "000000", "{other:?}");
    assert_eq!(f.queue.depth().await.unwrap(), 2);
}

/// The replay ledger's keys (`kit_replay_keys.mac`), sorted.
async fn replay_keys(f: &Fixture) -> Vec<Vec<u8>> {
    use migrations::sea_orm::{ConnectionTrait, Statement};
    let conn = &f.db.conn;
    let sql = "SELECT mac FROM kit_replay_keys ORDER BY mac";
    let rows = conn
        .query_all(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.try_get_by_index::<Vec<u8>>(0).unwrap())
        .collect()
}

#[tokio::test]
async fn a_request_that_does_not_verify_claims_nothing() {
    let f = fixture(|_| {}).await;
    let ts = f.now().to_string();
    let body = tenant_body("t1");
    let sign = signing::sign(KEY.as_bytes(), NONCE, &ts, body.as_bytes());
    // Forgeries with the authentic request's nonce and timestamp, sent before it. The last
    // carries its very x-sign, the replay key, over another body: an ingress that recorded
    // the key before the signature verified would refuse the authentic request as a replay.
    let forgeries = [
        ("an arbitrary x-sign", "ab".repeat(32), body.clone()),
        (
            "signed under another key",
            signing::sign(b"not-the-key", NONCE, &ts, body.as_bytes()),
            body.clone(),
        ),
        (
            "the authentic x-sign over another body",
            sign.clone(),
            tenant_body("t2"),
        ),
    ];
    for (name, x_sign, forged) in forgeries {
        let a = send_with(&f.app, NONCE, &ts, &x_sign, forged).await;
        assert_eq!(a.code, "000001", "{name}: {a:?}");
        assert!(!a.msg.contains("replay"), "{name}: {a:?}");
    }
    assert!(
        replay_keys(&f).await.is_empty(),
        "a request that did not verify recorded a replay key"
    );
    let authentic = send_with(&f.app, NONCE, &ts, &sign, body).await;
    assert_eq!(authentic.code, "000000", "{authentic:?}");
    assert_eq!(
        replay_keys(&f).await,
        vec![hex::decode(&sign).unwrap()],
        "the authentic request's x-sign, alone"
    );
    assert_eq!(f.queue.depth().await.unwrap(), 1);
    let Fixture { db, .. } = f;
    db.cleanup().await;
}

#[tokio::test]
async fn headers_are_strict_and_errors_name_them() {
    let f = fixture(|_| {}).await;
    let body = tenant_body("t1");
    let ts = f.now().to_string();
    let good_sign = signing::sign(KEY.as_bytes(), NONCE, &ts, body.as_bytes());
    // (case, x-nonce, x-timestamp, x-sign (None: a correct one), result code, named header)
    type Case<'a> = (
        &'a str,
        Option<String>,
        Option<String>,
        Option<String>,
        &'a str,
        &'a str,
    );
    // Each case gets one header wrong; the other two are as the good request has them.
    let bad_timestamp = |name, t: Option<String>| -> Case {
        (name, Some(NONCE.into()), t, None, "000002", "x-timestamp")
    };
    let bad_nonce = |name, n: Option<String>| -> Case {
        (name, n, Some(ts.clone()), None, "000002", "x-nonce")
    };
    let bad_sign = |name, s: String| -> Case {
        (
            name,
            Some(NONCE.into()),
            Some(ts.clone()),
            Some(s),
            "000001",
            "x-sign",
        )
    };
    let cases: Vec<Case> = vec![
        bad_timestamp("plus sign", Some(format!("+{ts}"))),
        bad_timestamp("leading zero", Some(format!("0{}", &ts[1..]))),
        bad_timestamp("12 digits", Some(ts[1..].into())),
        bad_timestamp("seconds", Some(ts[..10].into())),
        bad_timestamp("huge", Some("9".repeat(19))),
        bad_timestamp("i64 min", Some(i64::MIN.to_string())),
        bad_nonce("nonce with space", Some("a b".into())),
        bad_nonce("nonce too long", Some("n".repeat(129))),
        bad_sign("short sign", good_sign[1..].into()),
        bad_sign("long sign", format!("{good_sign}00")),
        bad_sign("non-hex sign", format!("{}zz", &good_sign[2..])),
        bad_nonce("no nonce", None),
        bad_timestamp("no timestamp", None),
    ];
    for (name, nonce, ts, sign, code, names) in cases {
        let sign = sign.unwrap_or_else(|| {
            signing::sign(
                KEY.as_bytes(),
                nonce.as_deref().unwrap_or(""),
                ts.as_deref().unwrap_or(""),
                body.as_bytes(),
            )
        });
        let a = send_raw(
            &f.app,
            "tenantSync",
            nonce.as_deref(),
            ts.as_deref(),
            Some(&sign),
            body.clone(),
        )
        .await;
        assert_eq!(a.code, code, "{name}: {a:?}");
        assert!(a.msg.contains(names), "{name}: {a:?}");
        assert!(
            !a.msg.contains(&"9".repeat(19)),
            "{name}: input is not echoed: {a:?}"
        );
    }
    assert_eq!(
        f.queue.depth().await.unwrap(),
        0,
        "nothing refused was queued"
    );
}

/// A body whose raw bytes differ from its canonical form (spaces, key order, a top-level null,
/// a duplicated key whose last value wins in the canonical form).
fn uncanonical_tenant() -> (String, String) {
    let raw = r#"{ "tenantId" : "decoy", "name":"Acme", "tenantCode":"c", "domainName":"https://acme.example.com", "flag":1, "testFlag":0, "extra": null, "timeStamp":"20240101120000000", "tenantId":"t-canonical" }"#;
    let canonical = String::from_utf8(signing::canonical_payload(raw.as_bytes()).unwrap()).unwrap();
    assert!(canonical.contains("t-canonical") && !canonical.contains("decoy"));
    (raw.to_owned(), canonical)
}

async fn queued_tenant(queue: &Queue) -> String {
    let consumer = queue.consumer("edge-test").await.unwrap();
    let batch = consumer
        .next_batch(10, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(batch.len(), 1);
    let Command::Tenant(t) = QueuedCallback::from_bytes(&batch[0].body).unwrap().command else {
        panic!("expected a tenant command")
    };
    t.tenant_id
}

#[tokio::test]
async fn a_canonical_signature_is_parsed_from_the_canonical_bytes() {
    let f = fixture(|_| {}).await;
    let (raw, canonical) = uncanonical_tenant();
    let ts = f.now().to_string();
    let a = send_signed(&f.app, "tenantSync", NONCE, &ts, &canonical, &raw).await;
    assert_eq!(a.code, "000000", "{a:?}");
    assert_eq!(queued_tenant(&f.queue).await, "t-canonical");
}

#[tokio::test]
async fn signature_mode_limits_the_forms_tried() {
    let raw_only = fixture(|s| s.signature_mode = signing::SignatureMode::Raw).await;
    let (raw, canonical) = uncanonical_tenant();
    let ts = raw_only.now().to_string();
    let a = send_signed(&raw_only.app, "tenantSync", NONCE, &ts, &canonical, &raw).await;
    assert_eq!(
        a.code, "000001",
        "raw mode never tries the canonical form: {a:?}"
    );
    let a = send_signed(&raw_only.app, "tenantSync", NONCE, &ts, &raw, &raw).await;
    assert_eq!(a.code, "000000", "{a:?}");

    let canonical_only = fixture(|s| s.signature_mode = signing::SignatureMode::Canonical).await;
    let ts = canonical_only.now().to_string();
    let a = send_signed(&canonical_only.app, "tenantSync", NONCE, &ts, &raw, &raw).await;
    assert_eq!(
        a.code, "000001",
        "canonical mode never trusts the raw bytes: {a:?}"
    );
    let a = send_signed(
        &canonical_only.app,
        "tenantSync",
        NONCE,
        &ts,
        &canonical,
        &raw,
    )
    .await;
    assert_eq!(a.code, "000000", "{a:?}");
}

#[tokio::test]
async fn the_canonical_fallback_is_bounded_by_size() {
    let f = fixture(|s| s.canonical_max_bytes = 512).await;
    let (raw, canonical) = uncanonical_tenant();
    let padded = raw.replacen(
        "\"extra\": null",
        &format!("\"extra\": null, \"pad\": \"{}\"", "x".repeat(600)),
        1,
    );
    let padded_canonical =
        String::from_utf8(signing::canonical_payload(padded.as_bytes()).unwrap()).unwrap();
    let ts = f.now().to_string();
    let a = send_signed(&f.app, "tenantSync", NONCE, &ts, &padded_canonical, &padded).await;
    assert_eq!(a.code, "000001", "{a:?}");
    assert!(a.msg.contains("512"), "the message says why: {a:?}");
    // Under the cap it still verifies.
    let a = send_signed(&f.app, "tenantSync", NONCE, &ts, &canonical, &raw).await;
    assert_eq!(a.code, "000000", "{a:?}");
}

#[tokio::test]
async fn load_beyond_the_concurrency_limit_is_shed_with_000005() {
    let f = fixture(|s| s.max_concurrent_requests = 2).await;
    // Two callbacks whose bodies never finish arriving hold both slots.
    let mut held = Vec::new();
    for i in 0..2 {
        let (tx, body) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
        tx.send(Ok(axum::body::Bytes::from_static(b"{")))
            .await
            .unwrap();
        let stream = tokio_stream_from(body);
        let app = f.app.clone();
        let ts = f.now().to_string();
        held.push((
            tx,
            tokio::spawn(async move {
                send_with(&app, &format!("n{i}"), &ts, &"0".repeat(64), stream).await
            }),
        ));
    }
    // Wait until both are inside (polling the acceptor, no sleeps).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while f.acceptor.in_flight() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the held requests never started"
        );
        tokio::task::yield_now().await;
    }
    let shed = send(&f.app, "tenantSync", NONCE, f.now(), &tenant_body("t1")).await;
    assert_eq!(shed.code, "000005", "{shed:?}");
    for (tx, task) in held {
        drop(tx);
        let a = task.await.unwrap();
        assert_ne!(a.code, "000000");
    }
    let ok = send(&f.app, "tenantSync", NONCE, f.now(), &tenant_body("t1")).await;
    assert_eq!(ok.code, "000000", "slots are given back: {ok:?}");
}

/// A request body fed from a channel (so a test controls when it ends).
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<axum::body::Bytes, std::io::Error>>,
) -> Body {
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Body::from_stream(stream)
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_refused() {
    let f = fixture(|s| s.body_read_timeout_ms = 200).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
    tx.send(Ok(axum::body::Bytes::from_static(b"{")))
        .await
        .unwrap();
    let ts = f.now().to_string();
    let a = send_with(&f.app, NONCE, &ts, &"0".repeat(64), tokio_stream_from(rx)).await;
    drop(tx);
    assert_eq!(a.code, "000002", "{a:?}");
    assert!(a.msg.contains("200 ms"), "{a:?}");
}
