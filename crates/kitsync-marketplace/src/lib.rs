//! The marketplace side of the Kit: what KooGallery sends to an ISV, built, signed and sent the
//! way it does, and its answers checked. `kitsync send` is built on it.
//!
//! - [`body`]: valid bodies of the five callbacks from a few facts ([`body::Spec`]), with the
//!   marketplace's UTC+8 timestamps and field names.
//! - [`Marketplace`]: signs a body (`x-nonce` of 64 upper-case hex digits, `x-timestamp` in
//!   Unix milliseconds, `x-sign` = HMAC-SHA256 keyed with the access key over key + nonce +
//!   timestamp + body), POSTs it to `{production address}/produceAPI/v2/{kind}` over HTTP or
//!   HTTPS, and reads the answer: HTTP status, `resultCode`/`resultMsg`, and whether
//!   `Body-Sign` is the HMAC of the answer's exact bytes under the same key.
//!
//! - [`emulate`]: a local marketplace. It plays histories (purchase, binding, authorisation in
//!   batches of 500, department changes, full syncs, a mass deletion, unbinding, a test
//!   purchase) with the faults a real delivery has (duplicates, reordering, delays, replays,
//!   retries) and the attacks it must survive (bad or missing signatures, skewed clocks,
//!   oversize bodies), checks every answer, and — given a kitsync's directory API — that the
//!   directory converged to the marketplace's truth.
//!
//! - [`authcentre`]: a tenant's auth centre (OAuth 2.0 authorization code, userinfo, logout,
//!   the unified login page) whose users are those the emulator authorised, for trying an ISV
//!   app's login locally.
//!
//! It works against any server that implements the Kit callbacks, not only kitsync.
#![forbid(unsafe_code)]

pub mod authcentre;
pub mod body;
pub mod emulate;
pub mod rng;

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kitsync_domain::error::error_chain;
use kitsync_domain::{signing, CallbackKind};
use std::time::{Duration, Instant};

/// The marketplace gives an ISV this long to answer.
pub const MARKETPLACE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("`{0}` is not an http:// or https:// URL")]
    BadUrl(String),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the request failed: {0}")]
    Transport(String),
}

/// One signed request: the three headers and the exact body bytes.
#[derive(Clone, Debug)]
pub struct Signed {
    pub nonce: String,
    pub timestamp: String,
    pub sign: String,
    pub body: Vec<u8>,
}

/// The Kit headers of a request, any of them left out.
#[derive(Clone, Copy, Debug, Default)]
pub struct Headers<'a> {
    pub nonce: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub sign: Option<&'a str>,
}

/// What `Body-Sign` of an answer says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodySign {
    /// `sign_type="HMAC-SHA256", signature="…"` with the HMAC of the exact answer bytes.
    Verified,
    /// Well formed, but not the HMAC of the answer under this key.
    Mismatch,
    /// Not `sign_type="HMAC-SHA256", signature="<base64>"`.
    Malformed,
    Missing,
}

impl BodySign {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            BodySign::Verified => "verified",
            BodySign::Mismatch => "does not match the answer under this key",
            BodySign::Malformed => "malformed",
            BodySign::Missing => "missing",
        }
    }
}

/// An answer to a callback.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    /// `resultCode`, when the body is the JSON object a Kit answer is.
    pub result_code: Option<String>,
    pub result_msg: Option<String>,
    pub body_sign: BodySign,
    pub raw: Vec<u8>,
    pub elapsed: Duration,
}

impl Answer {
    /// HTTP 200, `000000`, and a `Body-Sign` that verifies: what the marketplace accepts.
    #[must_use]
    pub fn accepted(&self) -> bool {
        self.status == 200
            && self.result_code.as_deref() == Some("000000")
            && self.body_sign == BodySign::Verified
    }
}

/// Signs and sends callbacks with one access key to one production address.
#[derive(Clone)]
pub struct Marketplace {
    base: String,
    key: String,
    client: HttpClient,
    timeout: Duration,
}

impl std::fmt::Debug for Marketplace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Marketplace")
            .field("base", &self.base)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Marketplace {
    /// `base` is the ISV's production address (`https://isv.example.com/isv/produce`): the
    /// callbacks go to `{base}/produceAPI/v2/{kind}`.
    ///
    /// # Errors
    /// [`SendError::BadUrl`] unless `base` is an http(s) URL; [`SendError::Tls`] when the
    /// system's trust roots cannot be used.
    pub fn new(base: &str, key: &str) -> Result<Self, SendError> {
        Ok(Self {
            base: http_base(base)?,
            key: key.to_owned(),
            client: https_client()?,
            timeout: MARKETPLACE_TIMEOUT,
        })
    }

    /// Waits this long for an answer instead of the marketplace's 5 s.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where `kind` is sent.
    #[must_use]
    pub fn url(&self, kind: CallbackKind) -> String {
        format!("{}/produceAPI/v2/{}", self.base, kind.path())
    }

    /// Signs `body` now, with a fresh nonce.
    #[must_use]
    pub fn sign(&self, body: &[u8]) -> Signed {
        self.sign_at(body, &nonce(), chrono::Utc::now().timestamp_millis())
    }

    /// Signs `body` with the given nonce and Unix-millisecond timestamp.
    #[must_use]
    pub fn sign_at(&self, body: &[u8], nonce: &str, timestamp_ms: i64) -> Signed {
        let timestamp = timestamp_ms.to_string();
        Signed {
            sign: signing::sign(self.key.as_bytes(), nonce, &timestamp, body),
            nonce: nonce.to_owned(),
            timestamp,
            body: body.to_vec(),
        }
    }

    /// POSTs a signed request and reads the answer.
    ///
    /// # Errors
    /// No answer in time, or the connection failed.
    pub async fn send(&self, kind: CallbackKind, req: &Signed) -> Result<Answer, SendError> {
        let headers = Headers {
            nonce: Some(&req.nonce),
            timestamp: Some(&req.timestamp),
            sign: Some(&req.sign),
        };
        self.send_parts(kind, &headers, req.body.clone()).await
    }

    /// POSTs `body` with exactly these Kit headers (`None`: left out), for the cases a
    /// well-behaved marketplace never sends.
    ///
    /// # Errors
    /// No answer in time, or the connection failed.
    pub async fn send_parts(
        &self,
        kind: CallbackKind,
        headers: &Headers<'_>,
        body: Vec<u8>,
    ) -> Result<Answer, SendError> {
        let mut builder =
            hyper::Request::post(self.url(kind)).header("content-type", "application/json");
        for (name, value) in [
            ("x-nonce", headers.nonce),
            ("x-timestamp", headers.timestamp),
            ("x-sign", headers.sign),
        ] {
            if let Some(v) = value {
                builder = builder.header(name, v);
            }
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError::BadUrl(format!("{}: {e}", self.url(kind))))?;
        let started = Instant::now();
        let exchange = async {
            let res = self
                .client
                .request(request)
                .await
                .map_err(|e| SendError::Transport(error_chain(&e)))?;
            let status = res.status().as_u16();
            let body_sign = res
                .headers()
                .get("body-sign")
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            let raw = res
                .into_body()
                .collect()
                .await
                .map_err(|e| SendError::Transport(error_chain(&e)))?
                .to_bytes()
                .to_vec();
            Ok::<_, SendError>((status, body_sign, raw))
        };
        let (status, body_sign, raw) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| SendError::Timeout(self.timeout))??;
        let json: Option<serde_json::Value> = serde_json::from_slice(&raw).ok();
        let field = |name: &str| {
            json.as_ref()
                .and_then(|v| v.get(name))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        Ok(Answer {
            status,
            result_code: field("resultCode"),
            result_msg: field("resultMsg"),
            body_sign: check_body_sign(body_sign.as_deref(), self.key.as_bytes(), &raw),
            raw,
            elapsed: started.elapsed(),
        })
    }
}

/// A nonce like the marketplace's: 64 upper-case hex digits.
#[must_use]
pub fn nonce() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
    .to_uppercase()
}

/// Checks a `Body-Sign` header value against the answer's exact bytes.
#[must_use]
pub fn check_body_sign(header: Option<&str>, key: &[u8], body: &[u8]) -> BodySign {
    let Some(h) = header else {
        return BodySign::Missing;
    };
    let signature = h
        .split(',')
        .map(str::trim)
        .fold((false, None), |(typed, sig), part| {
            if part == "sign_type=\"HMAC-SHA256\"" {
                (true, sig)
            } else if let Some(s) = part
                .strip_prefix("signature=\"")
                .and_then(|s| s.strip_suffix('"'))
            {
                (typed, Some(s))
            } else {
                (typed, sig)
            }
        });
    let (true, Some(sig)) = signature else {
        return BodySign::Malformed;
    };
    let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(sig) else {
        return BodySign::Malformed;
    };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return BodySign::Malformed;
    };
    mac.update(body);
    if mac.verify_slice(&sig).is_ok() {
        BodySign::Verified
    } else {
        BodySign::Mismatch
    }
}

/// `base` without surrounding space or trailing slashes; [`SendError::BadUrl`] unless it is an
/// http(s) URL.
pub(crate) fn http_base(base: &str) -> Result<String, SendError> {
    let base = base.trim().trim_end_matches('/').to_owned();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(SendError::BadUrl(base));
    }
    Ok(base)
}

/// An HTTP/1.1 client for http:// and https:// URLs.
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub(crate) fn https_client() -> Result<HttpClient, SendError> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config()?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// The system's trust roots, on the aws-lc-rs provider the workspace builds.
fn tls_config() -> Result<rustls::ClientConfig, SendError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SendError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn body_sign_is_checked_against_the_exact_bytes() {
        let body = br#"{"resultCode":"000000","resultMsg":"success"}"#;
        let good = signing::body_sign(b"k", body);
        assert_eq!(check_body_sign(Some(&good), b"k", body), BodySign::Verified);
        assert_eq!(
            check_body_sign(Some(&good), b"other", body),
            BodySign::Mismatch
        );
        let spaced = [&body[..], b" "].concat();
        assert_eq!(
            check_body_sign(Some(&good), b"k", &spaced),
            BodySign::Mismatch
        );
        assert_eq!(check_body_sign(None, b"k", body), BodySign::Missing);
        assert_eq!(
            check_body_sign(Some("signature=\"AAAA\""), b"k", body),
            BodySign::Malformed
        );
    }

    #[test]
    fn signs_like_the_marketplace() {
        let m = Marketplace::new("http://127.0.0.1:1/isv/produce/", "testAccessKey123").unwrap();
        assert_eq!(
            m.url(CallbackKind::AuthSync),
            "http://127.0.0.1:1/isv/produce/produceAPI/v2/authSync"
        );
        // The protocol's worked example (crates/kitsync-domain/src/signing.rs).
        let body = r#"{"appId":"app001","currentSyncTime":"20220420114117642","flag":1,"instanceId":"inst001","tenantId":"tenant001","testFlag":1,"timeStamp":"20220420114117642","userList":[{"userName":"zhangsan01","name":"张三","orgCode":"10000","role":"admin","enable":"true"}]}"#;
        let s = m.sign_at(
            body.as_bytes(),
            "50D83FDECAED6CCD8EF597F2A577950527928BA287D04E6036E92B2806FD17DA",
            1_680_508_066_618,
        );
        assert_eq!(
            s.sign,
            "d1ff44086d782517c89587b5f462bed1fb8195238c4fa1d6860fd8e4cd096846"
        );
        let n = nonce();
        assert_eq!(n.len(), 64);
        assert!(n
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)));
        assert!(Marketplace::new("ftp://x", "k").is_err());
    }
}
