//! A plain HTTP client for browser-like flows (no redirect followed, cookies passed by hand),
//! and `kitsync emulate auth-centre` as a child process: the auth centre and login tests
//! share them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failure is a panic

use crate::Env;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Percent-encodes a form or query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn form(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The query parameters of a URL, decoded.
pub fn query_params(url: &str) -> Vec<(String, String)> {
    let dec = |s: &str| {
        let s = s.replace('+', " ");
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                if let Ok(v) = u8::from_str_radix(hex, 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8(out).unwrap()
    };
    url.split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (dec(k), dec(v))
        })
        .collect()
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn location(&self) -> Option<&str> {
        self.header("location")
    }

    pub fn param(&self, name: &str) -> Option<String> {
        query_params(self.location()?)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): HTTP {} {}", self.status, self.body))
    }

    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }

    /// `name=value` of the `Set-Cookie` header.
    pub fn cookie(&self) -> Option<String> {
        self.header("set-cookie")
            .map(|c| c.split(';').next().unwrap().to_owned())
    }
}

/// A plain HTTP client: no redirects followed, no cookies kept.
pub struct Http {
    pub base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Http {
    pub fn new(base: &str) -> Http {
        Http {
            base: base.to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Reply {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if body.is_some() {
            b = b.header("content-type", "application/x-www-form-urlencoded");
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let res = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer within 30 s"))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = res.status().as_u16();
        let headers = crate::header_pairs(res.headers());
        let raw = res.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&raw).into_owned(),
        }
    }

    pub async fn get(&self, path: &str, params: &[(&str, &str)], cookie: Option<&str>) -> Reply {
        let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
        self.send("GET", &format!("{path}?{}", form(params)), &headers, None)
            .await
    }

    pub async fn post(&self, path: &str, params: &[(&str, &str)]) -> Reply {
        self.send("POST", path, &[], Some(form(params))).await
    }
}

/// A running `kitsync emulate auth-centre`: killed on drop, its output printed when the test
/// fails.
pub struct AuthCentreProcess {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    pub base: String,
}

impl AuthCentreProcess {
    pub async fn start(env: &Env, addr: &str, users: &str) -> AuthCentreProcess {
        let mut cmd = env.command(&["emulate", "auth-centre", "--addr", addr, "--users", users]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning kitsync emulate auth-centre");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(url) = line.strip_prefix("auth centre listening on ") {
                        let _ = tx.send(url.trim().to_owned());
                    }
                    log.lock().unwrap().push_str(&format!("stdout| {line}\n"));
                }
            });
        }
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    log.lock().unwrap().push_str(&format!("stderr| {line}\n"));
                }
            });
        }
        let mut p = AuthCentreProcess {
            child: Some(child),
            log,
            base: String::new(),
        };
        let (started, within) = (Instant::now(), Duration::from_secs(30));
        loop {
            if let Ok(url) = rx.try_recv() {
                p.base = url;
                return p;
            }
            let exited = p.child.as_mut().unwrap().try_wait().unwrap();
            crate::startup_pause("the auth centre", exited, started, within, || p.logs()).await;
        }
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM; the exit status within 10 s.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the auth centre did not stop within 10 s of SIGTERM:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for AuthCentreProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- auth centre output -----\n{}----- end -----",
                self.logs()
            );
        }
    }
}

/// `kitsync emulate --json` against `base` (the callbacks, and the directory API read with
/// `token`), its tenants pointed at the auth centre at `auth_url` and every user saved to
/// `users.json` in the test's directory, then `args`: the output (it must succeed), the
/// users file's path and what it holds.
pub async fn emulate_saving_users(
    env: &Env,
    base: &str,
    token: &str,
    auth_url: &str,
    args: &[&str],
) -> (Output, String, Value) {
    let users_arg = env.dir().join("users.json").display().to_string();
    let mut all = vec![
        "emulate",
        "--json",
        "--url",
        base,
        "--access-key",
        env.key(),
        "--api-url",
        base,
        "--token",
        token,
        "--auth-centre-url",
        auth_url,
        "--save-users",
        &users_arg,
    ];
    all.extend_from_slice(args);
    let out = env.cli_ok(&all).await;
    let users = serde_json::from_slice(&std::fs::read(&users_arg).unwrap()).unwrap();
    (out, users_arg, users)
}

/// A port free a moment ago (bound and released), for the URL the tenants get before the
/// auth centre runs.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
