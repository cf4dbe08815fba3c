//! The response: HTTP 200, `{"resultCode","resultMsg"}`, signed with `Body-Sign`.
use crate::accept::Acceptor;
use crate::error::KitError;
use crate::extract::{KitRejection, SignedKit};
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kitsync_domain::{signing, CallbackKind, ResultCode};
use secrecy::ExposeSecret;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A result body, signed or not.
pub struct KitReply {
    body: Vec<u8>,
    body_sign: Option<String>,
}

impl KitReply {
    fn body_for(code: ResultCode, msg: &str) -> Vec<u8> {
        serde_json::json!({ "resultCode": code.as_str(), "resultMsg": msg })
            .to_string()
            .into_bytes()
    }

    /// A reply with no `Body-Sign` (only when no key is configured at all).
    #[must_use]
    pub fn unsigned(error: &KitError) -> Self {
        Self {
            body: Self::body_for(error.result_code(), &error.result_msg()),
            body_sign: None,
        }
    }

    /// Success or failure, signed with access key `key_index` (or the first key).
    #[must_use]
    pub fn signed(
        acceptor: &Acceptor,
        result: Result<(), &KitError>,
        key_index: Option<usize>,
    ) -> Self {
        let body = match result {
            Ok(()) => Self::body_for(ResultCode::Success, "success"),
            Err(e) => Self::body_for(e.result_code(), &e.result_msg()),
        };
        let keys = &acceptor.settings().access_keys;
        let key = key_index.and_then(|i| keys.get(i)).or_else(|| keys.first());
        let body_sign = key.map(|k| signing::body_sign(k.expose_secret().as_bytes(), &body));
        Self { body, body_sign }
    }
}

impl IntoResponse for KitReply {
    fn into_response(self) -> Response {
        let mut res = (StatusCode::OK, self.body).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;charset=UTF-8"),
        );
        if let Some(sign) = self.body_sign.and_then(|s| HeaderValue::from_str(&s).ok()) {
            h.insert("Body-Sign", sign);
        }
        res
    }
}

/// The one handler behind the five routes: admit → extract → accept → reply.
#[tracing::instrument(name = "kit_callback", skip_all, fields(kind = %kind, code))]
pub async fn handle(
    State(acceptor): State<Arc<Acceptor>>,
    kind: CallbackKind,
    req: Request,
) -> Response {
    let started = std::time::Instant::now();
    let (result, key_index) = match acceptor.admit() {
        None => (Err(KitError::Overloaded("concurrent callbacks")), None),
        Some(_slot) => match SignedKit::from_request(req, &acceptor).await {
            Ok(kit) => {
                let key = kit.key_index;
                (acceptor.accept(kit).await, Some(key))
            }
            Err(KitRejection { error, key_index }) => (Err(error), key_index),
        },
    };
    let code = match &result {
        Ok(()) => ResultCode::Success,
        Err(e) => e.result_code(),
    };
    tracing::Span::current().record("code", code.as_str());
    match &result {
        Ok(()) => tracing::debug!("accepted"),
        Err(KitError::Unavailable(cause) | KitError::Internal(cause)) => {
            tracing::error!(%cause, "callback not accepted");
        }
        Err(e) if e.authenticated() => tracing::warn!(reason = %e, "callback refused"),
        Err(e) => {
            acceptor.refusals().record(e);
        }
    }
    let reply = KitReply::signed(&acceptor, result.as_ref().map(|_| ()), key_index);
    acceptor.metrics().record(kind, code, started.elapsed());
    reply.into_response()
}

/// Logs refusals of unauthenticated callbacks at warn level at most once per
/// [`RefusalLog::INTERVAL`], with how many were refused since; the others at debug. Anyone
/// can send those requests, so one warning each would let them fill the log.
#[derive(Debug)]
pub struct RefusalLog {
    started: std::time::Instant,
    /// Milliseconds since `started` before which no warning is written.
    next_warn_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self {
            started: std::time::Instant::now(),
            next_warn_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }
}

impl RefusalLog {
    pub const INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

    /// Records one refusal; returns whether it was written at warn level.
    pub fn record(&self, e: &KitError) -> bool {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_warn_ms.load(Ordering::Relaxed);
        let interval = u64::try_from(Self::INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if now >= next
            && self
                .next_warn_ms
                .compare_exchange(
                    next,
                    now.saturating_add(interval),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            tracing::warn!(
                reason = %e,
                code = e.result_code().as_str(),
                refused_without_warning_since_last = suppressed,
                "unauthenticated callback refused (such warnings are written at most every 10 s)"
            );
            true
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(reason = %e, code = e.result_code().as_str(), "unauthenticated callback refused");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthenticated_refusals_warn_at_a_bounded_rate() {
        let log = RefusalLog::default();
        let e = KitError::BadSignature {
            canonical_limit: None,
        };
        assert!(log.record(&e), "the first one is written");
        for _ in 0..1000 {
            assert!(!log.record(&e), "then none within the interval");
        }
        assert_eq!(log.suppressed.load(Ordering::Relaxed), 1000);
    }
}
