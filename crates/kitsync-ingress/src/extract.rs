//! `SignedKit`: the extractor that authenticates a Kit callback before anything parses its body.
//!
//! Cheap checks first, and every step bounded:
//! 1. the three headers, strictly shaped (`x-timestamp` 13 digits, `x-nonce` printable and
//!    short, `x-sign` 64 hex digits), and the timestamp within the window;
//! 2. a declared `Content-Length` over the limit is refused before a byte is read;
//! 3. the body's share of the in-flight byte budget is reserved (or the request is shed);
//! 4. the body is read under its size limit and arrival deadline, and the raw-form MAC of every
//!    key is computed as the chunks arrive;
//! 5. only if the raw form did not verify, the canonical form is tried — for bodies up to
//!    `kit.canonical_max_bytes`, a few at a time, off the async threads;
//! 6. the bytes that verified (raw or canonical) are parsed into a [`Command`].
use crate::accept::Acceptor;
use crate::error::KitError;
use crate::reply::KitReply;
use axum::extract::{FromRequest, Request};
use axum::http::HeaderMap;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use kitsync_domain::signing::{self, MacBytes, RawVerifier};
use kitsync_domain::{CallbackKind, Command};
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::SemaphorePermit;

/// An authenticated, validated callback.
#[derive(Debug)]
pub struct SignedKit {
    /// The validated callback; its kind is [`Command::kind`].
    pub command: Command,
    /// The verified `x-sign`: the replay key.
    pub mac: MacBytes,
    /// The signed `x-timestamp` (Unix ms): the replay key is kept until it leaves the window.
    pub timestamp_ms: i64,
    /// Index of the access key that verified the request (signs the response).
    pub key_index: usize,
}

/// A refused request, answered by [`KitReply`] (HTTP 200, result code, `Body-Sign`).
#[derive(Debug)]
pub struct KitRejection {
    pub error: KitError,
    pub key_index: Option<usize>,
}

impl axum::response::IntoResponse for KitRejection {
    fn into_response(self) -> axum::response::Response {
        // Rejections never carry an acceptor, so the reply is signed by `reply::handle`;
        // this impl only exists for completeness of the extractor contract.
        KitReply::unsigned(&self.error).into_response()
    }
}

/// How long a request may wait for its share of the body budget or for a canonical-check
/// slot before it is shed with `000005`.
const QUEUE_WAIT: Duration = Duration::from_secs(1);
/// The body budget is counted in KiB.
const KIB: usize = 1024;
/// A chunked body (no `Content-Length`) reserves its budget in steps of this many KiB.
const GROWTH_KIB: usize = 64;
/// Bodies larger than this are parsed off the async threads.
const PARSE_INLINE_MAX: usize = 256 * KIB;

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, KitError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(KitError::MissingHeader(name))
}

/// The callback kind a path ends with.
fn kind_of(path: &str) -> Option<CallbackKind> {
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    CallbackKind::ALL.into_iter().find(|k| k.path() == last)
}

/// The shape-checked headers.
struct KitHeaders {
    timestamp: String,
    timestamp_ms: i64,
    nonce: String,
    mac: MacBytes,
}

fn kit_headers(headers: &HeaderMap, acceptor: &Acceptor) -> Result<KitHeaders, KitError> {
    let settings = acceptor.settings();
    let ts = header(headers, "x-timestamp")?;
    let timestamp_ms = signing::parse_timestamp(ts).ok_or(KitError::BadTimestamp)?;
    let window_ms = settings.timestamp_window_secs.saturating_mul(1000);
    // Both values are bounded (13 digits; a sane clock), but an insane clock must not panic.
    let skew_ms = acceptor
        .now_ms()
        .saturating_sub(timestamp_ms)
        .unsigned_abs();
    if skew_ms > window_ms {
        return Err(KitError::StaleTimestamp {
            window_secs: settings.timestamp_window_secs,
        });
    }
    let nonce = header(headers, "x-nonce")?;
    if !signing::valid_nonce(nonce) {
        return Err(KitError::BadNonce {
            max: signing::MAX_NONCE_LEN,
        });
    }
    let mac = signing::parse_sign(header(headers, "x-sign")?).ok_or(KitError::BadSign)?;
    if settings.access_keys.is_empty() {
        return Err(KitError::NoKeysConfigured);
    }
    Ok(KitHeaders {
        timestamp: ts.to_owned(),
        timestamp_ms,
        nonce: nonce.to_owned(),
        mac,
    })
}

/// Reads the body under the size limit, the arrival deadline and the in-flight budget, feeding
/// the raw-form MACs as it goes. Returns the body and the key the raw form verified under.
async fn read_body<'a>(
    body: axum::body::Body,
    declared: Option<usize>,
    acceptor: &'a Acceptor,
    h: &KitHeaders,
) -> Result<(Bytes, Option<usize>, BudgetShare<'a>), KitError> {
    let settings = acceptor.settings();
    let limit = settings.body_limit_bytes;
    let mut share = BudgetShare::reserve(acceptor, declared).await?;
    let mut verifier = settings.signature_mode.tries_raw().then(|| {
        let keys: Vec<&[u8]> = settings
            .access_keys
            .iter()
            .map(|k| k.expose_secret().as_bytes())
            .collect();
        RawVerifier::new(&keys, &h.nonce, &h.timestamp)
    });
    let read = async {
        let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0).min(limit));
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| KitError::BodyUnreadable(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            if buf.len() + data.len() > limit {
                return Err(KitError::BodyTooLarge { limit });
            }
            share.cover(buf.len() + data.len())?;
            if let Some(v) = verifier.as_mut() {
                v.update(&data);
            }
            buf.extend_from_slice(&data);
        }
        Ok(buf)
    };
    let ms = settings.body_read_timeout_ms;
    let buf = tokio::time::timeout(Duration::from_millis(ms), read)
        .await
        .map_err(|_| KitError::BodyTimeout { ms })??;
    let raw_key = verifier.and_then(|v| v.finish(&h.mac));
    Ok((Bytes::from(buf), raw_key, share))
}

/// A request's reservation in the in-flight body budget, returned on drop.
struct BudgetShare<'a> {
    permit: SemaphorePermit<'a>,
    kib: usize,
    acceptor: &'a Acceptor,
}

impl<'a> BudgetShare<'a> {
    /// Reserves the declared length (waiting up to [`QUEUE_WAIT`]), or a first step of a
    /// chunked body.
    async fn reserve(acceptor: &'a Acceptor, declared: Option<usize>) -> Result<Self, KitError> {
        let total = acceptor.body_budget_kib();
        let kib = declared
            .map_or(GROWTH_KIB, |n| n.div_ceil(KIB).max(1))
            .min(total);
        let permits = u32::try_from(kib).unwrap_or(u32::MAX);
        let permit = tokio::time::timeout(QUEUE_WAIT, acceptor.body_budget().acquire_many(permits))
            .await
            .map_err(|_| KitError::Overloaded("body budget"))?
            .map_err(|_| KitError::Overloaded("body budget closed"))?;
        Ok(Self {
            permit,
            kib,
            acceptor,
        })
    }

    /// Makes sure `len` bytes are covered, growing a chunked body's share without waiting
    /// (a request that waited while holding a share could starve the others).
    fn cover(&mut self, len: usize) -> Result<(), KitError> {
        let need = len.div_ceil(KIB);
        if need <= self.kib {
            return Ok(());
        }
        let more = (need - self.kib).max(GROWTH_KIB);
        let permits = u32::try_from(more).map_err(|_| KitError::Overloaded("body budget"))?;
        let extra = self
            .acceptor
            .body_budget()
            .try_acquire_many(permits)
            .map_err(|_| KitError::Overloaded("body budget"))?;
        self.permit.merge(extra);
        self.kib += more;
        Ok(())
    }
}

/// Tries the canonical form of `body`: bounded in size and in concurrency, computed on a
/// blocking thread. Returns the key that verified and the canonical bytes.
async fn verify_canonical(
    body: &Bytes,
    acceptor: &Arc<Acceptor>,
    h: &KitHeaders,
    raw_tried: bool,
) -> Result<(usize, Bytes), KitError> {
    let max = acceptor.settings().canonical_max_bytes;
    if body.len() > max {
        return Err(KitError::BadSignature {
            canonical_limit: Some(max),
        });
    }
    let _slot = tokio::time::timeout(QUEUE_WAIT, acceptor.canonical_slots().acquire())
        .await
        .map_err(|_| KitError::Overloaded("canonical check"))?
        .map_err(|_| KitError::Overloaded("canonical check closed"))?;
    let (a, body, nonce, ts, mac) = (
        Arc::clone(acceptor),
        body.clone(),
        h.nonce.clone(),
        h.timestamp.clone(),
        h.mac,
    );
    let verified = tokio::task::spawn_blocking(move || {
        let canonical = signing::canonical_payload(&body).ok()?;
        if raw_tried && canonical == body {
            return None; // the raw check already covered these very bytes
        }
        let keys: Vec<&[u8]> = a
            .settings()
            .access_keys
            .iter()
            .map(|k| k.expose_secret().as_bytes())
            .collect();
        let i = signing::verify_payload(&keys, &nonce, &ts, &canonical, &mac)?;
        Some((i, Bytes::from(canonical)))
    })
    .await
    .map_err(|e| KitError::Internal(format!("canonical check: {e}")))?;
    verified.ok_or(KitError::BadSignature {
        canonical_limit: None,
    })
}

async fn parse(kind: CallbackKind, payload: Bytes) -> Result<Command, KitError> {
    if payload.len() <= PARSE_INLINE_MAX {
        return kitsync_domain::parse::parse(kind, &payload).map_err(KitError::Invalid);
    }
    tokio::task::spawn_blocking(move || kitsync_domain::parse::parse(kind, &payload))
        .await
        .map_err(|e| KitError::Internal(format!("parsing: {e}")))?
        .map_err(KitError::Invalid)
}

impl FromRequest<Arc<Acceptor>> for SignedKit {
    type Rejection = KitRejection;

    async fn from_request(req: Request, acceptor: &Arc<Acceptor>) -> Result<Self, Self::Rejection> {
        let reject = |error| KitRejection {
            error,
            key_index: None,
        };
        let kind = kind_of(req.uri().path())
            .ok_or_else(|| reject(KitError::Internal("route without a callback kind".into())))?;
        let (parts, body) = req.into_parts();
        let settings = acceptor.settings();

        let h = kit_headers(&parts.headers, acceptor).map_err(reject)?;
        let limit = settings.body_limit_bytes;
        let declared = parts
            .headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(reject(KitError::BodyTooLarge { limit }));
        }
        let declared = declared.and_then(|n| usize::try_from(n).ok());
        let (body, raw_key, _share) = read_body(body, declared, acceptor, &h)
            .await
            .map_err(reject)?;

        let (key_index, payload) = match raw_key {
            Some(i) => (i, body),
            None if settings.signature_mode.tries_canonical() => {
                verify_canonical(&body, acceptor, &h, settings.signature_mode.tries_raw())
                    .await
                    .map_err(reject)?
            }
            None => {
                return Err(reject(KitError::BadSignature {
                    canonical_limit: None,
                }))
            }
        };
        // Authenticated from here on: errors are signed with the key that verified.
        let command = parse(kind, payload).await.map_err(|error| KitRejection {
            error,
            key_index: Some(key_index),
        })?;
        Ok(SignedKit {
            command,
            mac: h.mac,
            timestamp_ms: h.timestamp_ms,
            key_index,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::kind_of;
    use kitsync_domain::CallbackKind;

    #[test]
    fn kind_from_path() {
        assert_eq!(
            kind_of("/isv/produce/produceAPI/v2/authSync"),
            Some(CallbackKind::AuthSync)
        );
        assert_eq!(
            kind_of("/produceAPI/v2/allOrgSync/"),
            Some(CallbackKind::AllOrgSync)
        );
        assert_eq!(kind_of("/produceAPI/v2/appSync"), None);
    }
}
