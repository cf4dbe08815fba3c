//! The public edge of the real binary, tried as an attacker would: huge unauthenticated
//! uploads, many large bodies with a wrong signature, slow headers, too many connections,
//! and replays through the nonce/timestamp boundary and after the ledger used to forget.
//! Each test failed on the code before the hardening it covers.
//!
//! Memory is read from `/proc/PID/status` (`VmHWM`, the peak resident set, after resetting it
//! through `/proc/PID/clear_refs`), so the figures are the process's real peak, not a sample.
//! Runs on the embedded defaults and, when `KITSYNC_TEST_DATABASE_URL` /
//! `KITSYNC_TEST_AMQP_URL` are set, on PostgreSQL / RabbitMQ.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tests::payload::{self, time};
use tests::{now_ms, Env, Signed, TENANT_SYNC};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: u64 = 1024 * 1024;

/// Resident memory of a process: (current, peak since the last reset), in bytes.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak resident set so the next `VmHWM` is the peak from now on.
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

/// What a raw upload saw.
#[derive(Debug)]
struct Upload {
    /// The status line and headers of the answer (empty if none came).
    head: String,
    /// The body of the answer, as far as it was read.
    body: String,
    /// Body bytes written before the answer arrived (or the connection closed).
    sent_before_answer: u64,
    elapsed: Duration,
}

/// Sends `head` (request line and headers, without the final blank line) then up to `total`
/// bytes of body in 1 MiB chunks (`chunked`: as chunked transfer encoding), stopping as soon
/// as an answer arrives or the server closes the connection.
async fn upload(addr: SocketAddr, head: &str, total: u64, chunked: bool) -> Upload {
    let started = Instant::now();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let head = if chunked {
        format!("{head}\r\nTransfer-Encoding: chunked\r\n\r\n")
    } else {
        format!("{head}\r\nContent-Length: {total}\r\n\r\n")
    };
    wr.write_all(head.as_bytes()).await.unwrap();
    let (answered_tx, mut answered) = tokio::sync::watch::channel(false);
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(60), rd.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(4).any(|w| w == b"\r\n\r\n") {
                        let _ = answered_tx.send(true);
                    }
                }
            }
        }
        let _ = answered_tx.send(true);
        got
    });
    let chunk = vec![b'x'; MIB as usize];
    let mut sent = 0u64;
    while sent < total && !*answered.borrow() {
        let n = chunk.len().min((total - sent) as usize);
        let ok = if chunked {
            let mut framed = format!("{n:x}\r\n").into_bytes();
            framed.extend_from_slice(&chunk[..n]);
            framed.extend_from_slice(b"\r\n");
            wr.write_all(&framed).await.is_ok()
        } else {
            wr.write_all(&chunk[..n]).await.is_ok()
        };
        if !ok {
            break;
        }
        sent += n as u64;
        // Give the reader a chance to see an early answer between chunks.
        tokio::task::yield_now().await;
    }
    let sent_before_answer = sent;
    let _ = tokio::time::timeout(Duration::from_secs(30), answered.wait_for(|a| *a)).await;
    drop(wr);
    let got = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&got).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Upload {
        head: head.to_owned(),
        body: body.to_owned(),
        sent_before_answer,
        elapsed: started.elapsed(),
    }
}

const HUGE: u64 = 400 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_huge_unauthenticated_upload_is_answered_before_it_is_sent() {
    let env = Env::new("edge-huge").await;
    let (_, token) = env
        .store
        .create_token(
            &kitsync_store::Actor::Cli,
            "stats only",
            &[kitsync_domain::Scope::StatsRead],
            None,
        )
        .await
        .unwrap();
    let token = secrecy::ExposeSecret::expose_secret(&token).to_owned();
    let server = env.start("serve").await;
    let addr = server.addr.unwrap();
    let pid = server.pid();
    // Warm the process up (first requests allocate pools and buffers).
    assert_eq!(server.kit().api_get("/healthz", None).await.0, 200);
    let ts = now_ms();
    let cases: Vec<(&str, String, bool, &str)> = vec![
        (
            "SCIM group create, no token",
            "POST /scim/v2/x/Groups HTTP/1.1\r\nHost: t\r\nContent-Type: application/scim+json".into(),
            false,
            "HTTP/1.1 401",
        ),
        (
            "SCIM group create, no token, chunked",
            "POST /scim/v2/x/Groups HTTP/1.1\r\nHost: t\r\nContent-Type: application/scim+json".into(),
            true,
            "HTTP/1.1 401",
        ),
        (
            "SCIM user write, no token",
            "PUT /scim/v2/x/Users/u HTTP/1.1\r\nHost: t".into(),
            false,
            "HTTP/1.1 401",
        ),
        (
            "activity, no token",
            "POST /api/v1/activity HTTP/1.1\r\nHost: t\r\nContent-Type: application/json".into(),
            false,
            "HTTP/1.1 401",
        ),
        (
            "activity, token without activity:write",
            format!("POST /api/v1/activity HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json"),
            true,
            "HTTP/1.1 403",
        ),
        (
            "activity, token without activity:write, declared length",
            format!("POST /api/v1/activity HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}"),
            false,
            "HTTP/1.1 403",
        ),
        (
            "Kit callback, declared length over the limit",
            format!("POST /produceAPI/v2/tenantSync HTTP/1.1\r\nHost: t\r\nx-nonce: n1\r\nx-timestamp: {ts}\r\nx-sign: {}", "0".repeat(64)),
            false,
            "HTTP/1.1 200",
        ),
        (
            "Kit callback, chunked, no signature",
            format!("POST /produceAPI/v2/tenantSync HTTP/1.1\r\nHost: t\r\nx-nonce: n2\r\nx-timestamp: {ts}"),
            true,
            "HTTP/1.1 200",
        ),
    ];
    let mut report = Vec::new();
    for (name, head, chunked, status) in cases {
        reset_peak(pid);
        let (before, _) = rss(pid);
        let up = upload(addr, &head, HUGE, chunked).await;
        let (_, peak) = rss(pid);
        let growth = peak.saturating_sub(before);
        report.push(format!(
            "{name}: answered after {} MiB of 400 in {:?}, peak RSS growth {:.1} MiB",
            up.sent_before_answer / MIB,
            up.elapsed,
            growth as f64 / MIB as f64
        ));
        assert!(up.head.starts_with(status), "{name}: {up:?}");
        assert!(
            up.sent_before_answer < 64 * MIB,
            "{name}: the answer came only after {} MiB: {up:?}",
            up.sent_before_answer / MIB
        );
        assert!(
            growth < 32 * MIB,
            "{name}: the process grew by {} MiB",
            growth / MIB
        );
        if status == "HTTP/1.1 200" {
            assert!(
                up.body.contains("\"resultCode\":\"000001\"")
                    || up.body.contains("\"resultCode\":\"000002\""),
                "{name}: {up:?}"
            );
        }
    }
    eprintln!("{}", report.join("\n"));
    assert_eq!(env.queued().await, 0, "nothing unauthenticated was queued");
    env.finish().await;
}

/// One `GET /healthz` on a fresh connection: its latency, or `None` if it was not answered
/// 200.
async fn try_healthz(addr: SocketAddr) -> Option<Duration> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.ok()?;
    out.starts_with(b"HTTP/1.1 200").then(|| started.elapsed())
}

/// [`try_healthz`], which must succeed.
async fn healthz(addr: SocketAddr) -> Duration {
    try_healthz(addr).await.expect("GET /healthz answered 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_large_bodies_with_a_wrong_signature_stay_within_the_body_budget() {
    let env = Env::new("edge-flood").await;
    let server = env.start("serve").await;
    let addr = server.addr.unwrap();
    let pid = server.pid();
    let baseline = healthz(addr).await;
    reset_peak(pid);
    let (before, _) = rss(pid);
    // 64 callers, each an 8 MiB body (the default limit) signed with the wrong key.
    let body_len = 8 * MIB;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                lat.push(healthz(addr).await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            lat
        })
    };
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        tasks.spawn(async move {
            let ts = now_ms();
            let head = format!(
                "POST /produceAPI/v2/allOrgSync HTTP/1.1\r\nHost: t\r\nx-nonce: flood{i}\r\nx-timestamp: {ts}\r\nx-sign: {}",
                "ab".repeat(32)
            );
            upload(addr, &head, body_len, false).await
        });
    }
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    while let Some(r) = tasks.join_next().await {
        let up = r.unwrap();
        assert!(up.head.starts_with("HTTP/1.1 200"), "{up:?}");
        let v: serde_json::Value =
            serde_json::from_str(&up.body).unwrap_or_else(|_| panic!("{up:?}"));
        *codes
            .entry(v["resultCode"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut lat = prober.await.unwrap();
    let (_, peak) = rss(pid);
    lat.sort();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    let growth = peak.saturating_sub(before);
    eprintln!(
        "64 × 8 MiB with a wrong x-sign in {took:?}: codes {codes:?}; peak RSS growth {:.1} MiB; \
         /healthz p50 {:?} p99 {:?} max {:?} over {} probes (idle: {baseline:?})",
        growth as f64 / MIB as f64,
        pct(0.5),
        pct(0.99),
        lat[lat.len() - 1],
        lat.len()
    );
    assert!(
        codes.keys().all(|c| c == "000001" || c == "000005"),
        "refused as a bad signature or shed: {codes:?}"
    );
    // The in-flight body budget (64 MiB by default) bounds what the bodies can take, plus
    // buffers and allocator slack.
    assert!(
        growth < 160 * MIB,
        "the process grew by {} MiB",
        growth / MIB
    );
    assert_eq!(env.queued().await, 0);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_surplus_connections_are_cut_off() {
    let mut env = Env::new("edge-conns").await;
    env.push_var("KITSYNC_HTTP__HEADER_READ_TIMEOUT_MS", "300");
    env.push_var("KITSYNC_HTTP__MAX_CONNECTIONS", "4");
    let server = env.start("serve").await;
    let addr = server.addr.unwrap();

    // A request head trickling in is dropped once the head deadline passes.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
        .await
        .expect("the server must cut a slow head off")
        .unwrap_or(0);
    let cut_after = started.elapsed();
    assert!(
        cut_after >= Duration::from_millis(250),
        "cut after {cut_after:?}"
    );
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    drop(slow);

    // Four open connections hold every slot; a fifth is closed at once, unread.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut b = [0u8; 512];
        let n = s.read(&mut b).await.unwrap();
        assert!(b[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s); // keep-alive: the connection stays open
    }
    let mut fifth = TcpStream::connect(addr).await.unwrap();
    let _ = fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let mut b = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), fifth.read(&mut b))
        .await
        .expect("the surplus connection is closed, not left hanging")
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&b[..n]));
    drop(held);
    // Slots come back once connections close.
    tests::wait_until("a slot is free again", Duration::from_secs(10), || async {
        matches!(
            tokio::time::timeout(Duration::from_secs(1), try_healthz(addr)).await,
            Ok(Some(_))
        )
    })
    .await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_through_the_header_boundary_or_after_receipt_are_refused() {
    let mut env = Env::new("edge-replay").await;
    // A 2 s window keeps the "replayed after the ledger forgot" case short.
    env.push_var("KITSYNC_KIT__TIMESTAMP_WINDOW_SECS", "2");
    let server = env.start("serve").await;
    let kit = server.kit();
    let body = payload::tenant("t-replay", "Replay Co", 1, 0, &time(0));

    // A digit moved from the nonce into the timestamp: the MAC input is the same string.
    let ts = now_ms();
    let captured = kit.signed_at(&body, &format!("{}0", &tests::nonce()[..63]), ts);
    assert!(kit.send_signed(TENANT_SYNC, &captured).await.unwrap().ok());
    let nonce = captured.nonce.clone().unwrap();
    let shifted = Signed {
        nonce: Some(nonce[..63].to_owned()),
        timestamp: Some(format!("0{ts}")),
        ..captured.clone()
    };
    let r = kit.send_signed(TENANT_SYNC, &shifted).await.unwrap();
    assert_eq!(r.code, "000002", "{r:?}");
    assert!(r.body_sign_verifies(env.key()), "{r:?}");

    // Signed 1.5 s ahead (inside the 2 s window), replayed 2.3 s after receipt: the signed
    // timestamp is then 0.8 s old, still acceptable, so the replay must still be refused.
    let ahead = kit.signed_at(&body, &tests::nonce(), now_ms() + 1_500);
    let first = kit.send_signed(TENANT_SYNC, &ahead).await.unwrap();
    assert!(first.ok(), "{first:?}");
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let again = kit.send_signed(TENANT_SYNC, &ahead).await.unwrap();
    assert_eq!(again.code, "000001", "accepted twice: {again:?}");
    let metrics = kit.api("GET", "/metrics", None, &[], None).await;
    let text = String::from_utf8_lossy(&metrics.raw);
    assert!(
        text.contains("kitsync_callbacks_total{endpoint=\"tenantSync\",code=\"000000\"} 2\n"),
        "exactly the two authentic callbacks were accepted:\n{text}"
    );
    env.finish().await;
}

/// The committed vectors: made by OpenSSL's CLI and Python `cryptography`, not by kitsync.
fn oaep_fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/kitsync-secrets/tests/fixtures/oaep")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_oaep_variant_a_marketplace_may_use_binds_the_app() {
    let mut env = Env::new("edge-oaep").await;
    let dir = oaep_fixtures();
    env.rsa_key_path = Some(dir.join("key-3072.pem"));
    let server = env.start("serve").await;
    let kit = server.kit();
    let tsv = std::fs::read_to_string(dir.join("vectors.tsv")).unwrap();
    let mut apps = Vec::new();
    for (i, line) in tsv.lines().skip(1).enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        let [file, key, variant, plaintext] = cols[..] else {
            panic!("bad vectors.tsv line {line}")
        };
        if key != "key-3072.pem" {
            continue;
        }
        let ciphertext = std::fs::read_to_string(dir.join(file)).unwrap();
        let app = format!("app-{i}");
        let body = payload::app("t-oaep", &app, "cid", ciphertext.trim(), &time(i as i64));
        let r = kit.send("applicationSync", &body).await;
        assert!(r.ok(), "{variant} ({file}): {r:?}");
        apps.push((app, plaintext.to_owned(), variant.to_owned()));
    }
    assert!(
        apps.iter().any(|(_, _, v)| v == "sha256-mgf1-sha1"),
        "the Java default is among the vectors"
    );
    let sealer = kitsync_secrets::Sealer::from_master_key(&secrecy::SecretString::from(
        env.master_key.clone(),
    ))
    .unwrap();
    tests::wait_until("every app applied", Duration::from_secs(45), || async {
        env.snapshot("t-oaep").await.apps.len() == apps.len()
    })
    .await;
    let s = env.snapshot("t-oaep").await;
    for (app, plaintext, variant) in &apps {
        let row = s.apps.iter().find(|a| &a.app_id == app).unwrap();
        let (_, plain) = sealer
            .open(
                &row.client_secret.0,
                &kitsync_secrets::Place::app_client_secret("t-oaep", app),
            )
            .unwrap();
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&plain),
            plaintext,
            "{variant}"
        );
    }
    env.finish().await;
}
