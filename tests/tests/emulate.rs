//! `kitsync emulate` both ways: against kitsync it passes and the directory converges; against
//! endpoints this test breaks on purpose — a wrong `Body-Sign`, a replay accepted, `000000`
//! for a bad signature, an update lost — it fails with a report naming the fault.
//!
//! Runs on the embedded defaults and, when `KITSYNC_TEST_DATABASE_URL` /
//! `KITSYNC_TEST_AMQP_URL` are set, on PostgreSQL / RabbitMQ.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tests::{explain, strs, Env, Server};

/// `kitsync serve` on `env`: the server, its URL and a `directory:read` API token.
async fn serving(env: &Env) -> (Server, String, String) {
    let server = env.start("serve").await;
    let base = server.kit().base_url().to_owned();
    let token = env.create_token("emulate", "directory:read", None).await;
    (server, base, token)
}

/// `kitsync emulate ARGS --json`: the report.
async fn emulate(env: &Env, args: &[&str]) -> (Output, Value) {
    let mut all = vec!["emulate", "--json"];
    all.extend_from_slice(args);
    let out = env.cli(&all).await;
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not a JSON report ({e}): {}", explain(&out)));
    (out, report)
}

/// [`emulate`] for a run that must pass: the report.
async fn emulate_ok(env: &Env, args: &[&str]) -> Value {
    let (out, report) = emulate(env, args).await;
    assert!(
        out.status.success(),
        "{:#?}\n{}",
        failed_cases(&report),
        explain(&out)
    );
    report
}

fn failed_cases(report: &Value) -> Vec<String> {
    report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| {
            format!(
                "{}: expected {}; got {}",
                c["name"], c["expected"], c["got"]
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_kitsync_every_case_passes_and_the_directory_converges() {
    let mut env = Env::new("emulate").await;
    let (_, public) = env.isv_key_pair();
    let (_server, base, token) = serving(&env).await;
    // One history, played twice: a seed and sizes, against kitsync.
    let public = public.display().to_string();
    let history: &[&str] = &[
        "--url",
        &base,
        "--access-key",
        env.key(),
        "--rsa-public-key",
        &public,
        "--seed",
        "7",
        "--tenants",
        "2",
        "--users",
        "700",
    ];
    let checked: &[&str] = &[
        "--api-url",
        &base,
        "--token",
        &token,
        "--duplicates",
        "0.2",
        "--replays",
        "0.2",
        "--concurrency",
        "16",
    ];
    let report = emulate_ok(&env, &[history, checked].concat()).await;
    let conv = &report["convergence"];
    assert_eq!(conv["converged"], true, "{conv}");
    assert_eq!(
        conv["tenants"], 4,
        "two tenants, the test purchase, the probe tenant: {conv}"
    );
    let names: Vec<&str> = strs(&report["cases"], "name");
    for expected in [
        "probe: the same request replayed",
        "probe: signed with another key",
        "probe: x-timestamp 62 s ahead",
        "probe: a 16 MiB body",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:#?}");
    }
    assert!(
        names.iter().any(|n| n.starts_with("replay of")),
        "replays were played: {names:#?}"
    );
    assert!(report["callbacks"].as_u64().unwrap() > 30, "{report}");
    // The same seed plays the same history.
    let (_, again) = emulate(&env, &[history, &["--no-probes"]].concat()).await;
    assert_eq!(again["callbacks"], report["callbacks"]);
    env.finish().await;
}

/// A Kit endpoint broken in one way, for `emulate` to catch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Answers signed with another key.
    WrongBodySign,
    /// Verifies signatures but remembers nothing: a replay is accepted.
    ReplayAccepted,
    /// Answers 000000 whatever the signature.
    AcceptsBadSignatures,
    /// In front of a real kitsync, answers 000000 for one authSync and drops it.
    LosesAnUpdate,
    /// In front of a real kitsync, answers every third callback `000005` without forwarding
    /// it (an overloaded or briefly broken ISV): not a fault, the marketplace retries.
    Flaky,
}

struct Broken {
    fault: Fault,
    key: String,
    /// The real kitsync behind (`LosesAnUpdate`).
    upstream: Option<String>,
    dropped: AtomicBool,
    seen: std::sync::atomic::AtomicUsize,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

fn answer(key: &str, code: &str) -> Response {
    let body = format!(r#"{{"resultCode":"{code}","resultMsg":"from a broken endpoint"}}"#);
    let sign = kitsync_domain::signing::body_sign(key.as_bytes(), body.as_bytes());
    (
        [
            ("Body-Sign", sign),
            ("content-type", "application/json".into()),
        ],
        body,
    )
        .into_response()
}

async fn broken(
    State(b): State<Arc<Broken>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let verified = kitsync_domain::signing::verify(
        &[b.key.as_str()],
        &h("x-nonce"),
        &h("x-timestamp"),
        &body,
        &h("x-sign"),
    )
    .is_ok();
    match b.fault {
        Fault::WrongBodySign => {
            answer("some-other-key", if verified { "000000" } else { "000001" })
        }
        Fault::ReplayAccepted => answer(&b.key, if verified { "000000" } else { "000001" }),
        Fault::AcceptsBadSignatures => answer(&b.key, "000000"),
        Fault::LosesAnUpdate | Fault::Flaky => {
            let is_auth = uri.path().ends_with("/authSync");
            if b.fault == Fault::LosesAnUpdate
                && verified
                && is_auth
                && !b.dropped.swap(true, Ordering::SeqCst)
            {
                return answer(&b.key, "000000");
            }
            if b.fault == Fault::Flaky && b.seen.fetch_add(1, Ordering::SeqCst) % 3 == 2 {
                return answer(&b.key, "000005");
            }
            // Forward everything else, headers and body as they came.
            let mut req =
                hyper::Request::post(format!("{}{}", b.upstream.as_deref().unwrap(), uri.path()));
            for name in ["x-nonce", "x-timestamp", "x-sign", "content-type"] {
                if let Some(v) = headers.get(name) {
                    req = req.header(name, v);
                }
            }
            let res = b
                .client
                .request(req.body(Full::new(body)).unwrap())
                .await
                .unwrap();
            let status = res.status();
            let sign = res.headers().get("Body-Sign").cloned();
            let raw = res.into_body().collect().await.unwrap().to_bytes();
            let mut out = (status, raw).into_response();
            if let Some(s) = sign {
                out.headers_mut().insert("Body-Sign", s);
            }
            out
        }
    }
}

async fn start_broken(fault: Fault, key: &str, upstream: Option<String>) -> SocketAddr {
    let state = Arc::new(Broken {
        fault,
        key: key.to_owned(),
        upstream,
        dropped: AtomicBool::new(false),
        seen: std::sync::atomic::AtomicUsize::new(0),
        client: Client::builder(TokioExecutor::new()).build_http(),
    });
    let app = axum::Router::new()
        .route("/produceAPI/v2/{kind}", axum::routing::post(broken))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_endpoint_makes_emulate_fail_naming_the_fault() {
    let env = Env::new("emulate-broken").await;
    let (_server, base, token) = serving(&env).await;
    let small = ["--tenants", "1", "--users", "20", "--seed", "3"];
    for (fault, names) in [
        (Fault::WrongBodySign, "Body-Sign does not match"),
        (Fault::ReplayAccepted, "probe: the same request replayed"),
        (
            Fault::AcceptsBadSignatures,
            "probe: signed with another key",
        ),
    ] {
        let addr = start_broken(fault, env.key(), None).await;
        let url = format!("http://{addr}");
        let mut args = vec!["--url", url.as_str(), "--access-key", env.key()];
        args.extend_from_slice(&small);
        let (out, report) = emulate(&env, &args).await;
        assert!(!out.status.success(), "{fault:?} passed: {}", explain(&out));
        let failed = failed_cases(&report);
        assert!(
            failed.iter().any(|f| f.contains(names)),
            "{fault:?}: no failed case names `{names}`: {failed:#?}"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("failed case"),
            "{}",
            explain(&out)
        );
    }
    // In front of kitsync, one authSync answered but never forwarded: every answer is right,
    // and only the directory shows the loss. (In history order, one at a time, the first
    // authSync is the first batch of users.)
    let addr = start_broken(Fault::LosesAnUpdate, env.key(), Some(base.clone())).await;
    let url = format!("http://{addr}");
    let mut args = vec![
        "--url",
        url.as_str(),
        "--access-key",
        env.key(),
        "--api-url",
        base.as_str(),
        "--token",
        token.as_str(),
        "--converge-timeout-secs",
        "10",
        "--no-probes",
        "--duplicates",
        "0",
        "--replays",
        "0",
        "--scenario",
        "authorise",
        "--no-reorder",
        "--concurrency",
        "1",
    ];
    args.extend_from_slice(&small);
    let (out, report) = emulate(&env, &args).await;
    assert!(
        !out.status.success(),
        "the lost update passed: {}",
        explain(&out)
    );
    assert!(
        failed_cases(&report).is_empty(),
        "{:#?}",
        failed_cases(&report)
    );
    let conv = &report["convergence"];
    assert_eq!(conv["converged"], false, "{conv}");
    let diffs = conv["differences"].to_string();
    assert!(
        diffs.contains("authorisation") && diffs.contains("missing"),
        "{diffs}"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_answered_000005_are_retried_like_the_marketplace_does() {
    let env = Env::new("emulate-flaky").await;
    let (_server, base, token) = serving(&env).await;
    let addr = start_broken(Fault::Flaky, env.key(), Some(base.clone())).await;
    let url = format!("http://{addr}");
    let report = emulate_ok(
        &env,
        &[
            "--url",
            &url,
            "--access-key",
            env.key(),
            "--api-url",
            &base,
            "--token",
            &token,
            "--tenants",
            "1",
            "--users",
            "20",
            "--no-probes",
            "--replays",
            "0",
        ],
    )
    .await;
    assert!(report["retried"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["convergence"]["converged"], true);
    env.finish().await;
}
