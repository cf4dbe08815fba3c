//! `SignedKit`: the extractor that authenticates a Kit callback before anything reads its body.
use crate::accept::Acceptor;
use crate::error::KitError;
use crate::reply::KitReply;
use axum::extract::{FromRequest, Request};
use axum::http::HeaderMap;
use kitsync_domain::{signing, CallbackKind, Command};
use secrecy::ExposeSecret;
use std::sync::Arc;

/// An authenticated, validated callback.
#[derive(Debug)]
pub struct SignedKit {
    pub kind: CallbackKind,
    pub command: Command,
    pub nonce: String,
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

const MAX_NONCE_LEN: usize = 128;

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

        // Headers first: cheap, and a stale or replay-shaped request never costs an HMAC.
        let ts = header(&parts.headers, "x-timestamp").map_err(reject)?;
        let ts_ms: i64 = ts
            .parse()
            .map_err(|_| reject(KitError::BadTimestamp(ts.chars().take(32).collect())))?;
        let window_ms =
            i64::try_from(settings.timestamp_window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let skew_ms = acceptor.now_ms() - ts_ms;
        if skew_ms.abs() > window_ms {
            return Err(reject(KitError::StaleTimestamp { skew_ms, window_ms }));
        }
        let nonce = header(&parts.headers, "x-nonce").map_err(reject)?;
        if nonce.len() > MAX_NONCE_LEN {
            return Err(reject(KitError::Invalid(kitsync_domain::FieldError::new(
                "x-nonce",
                format!("is longer than {MAX_NONCE_LEN} characters"),
            ))));
        }
        let nonce = nonce.to_owned();
        let sign = header(&parts.headers, "x-sign").map_err(reject)?.to_owned();

        let limit = settings.body_limit_bytes;
        let declared = parts
            .headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(reject(KitError::BodyTooLarge { limit }));
        }
        let body = axum::body::to_bytes(body, limit).await.map_err(|e| {
            let too_large =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            if too_large {
                reject(KitError::BodyTooLarge { limit })
            } else {
                reject(KitError::BodyUnreadable(e.to_string()))
            }
        })?;

        let keys: Vec<&[u8]> = settings
            .access_keys
            .iter()
            .map(|k| k.expose_secret().as_bytes())
            .collect();
        let key_index = signing::verify(&keys, &nonce, ts, &body, &sign).map_err(|e| {
            reject(match e {
                signing::SignatureError::Mismatch => KitError::BadSignature,
                signing::SignatureError::NoKeys => KitError::NoKeysConfigured,
            })
        })?;
        // Authenticated from here on: errors are signed with the key that verified.
        let command = kitsync_domain::parse::parse(kind, &body).map_err(|e| KitRejection {
            error: KitError::Invalid(e),
            key_index: Some(key_index),
        })?;
        Ok(SignedKit {
            kind,
            command,
            nonce,
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
