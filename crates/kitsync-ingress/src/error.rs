//! Everything that can go wrong with a callback, and its result code. This is the only place
//! result codes are chosen.
//!
//! Two kinds of refusal: before the MAC verified (headers, body size and arrival, signature,
//! load) the message is one of a fixed set of texts that never repeat the caller's input, so
//! an unauthenticated caller cannot get our `Body-Sign` over bytes of its choosing; after it
//! verified, the message names the field at fault.
use kitsync_domain::{FieldError, ResultCode};

#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("x-timestamp must be Unix time in milliseconds: 13 digits, no sign, no leading zero")]
    BadTimestamp,
    #[error("x-timestamp is more than {window_secs} s away from the server clock")]
    StaleTimestamp { window_secs: u64 },
    #[error("x-nonce must be 1 to {max} visible ASCII characters")]
    BadNonce { max: usize },
    #[error("x-sign must be 64 hexadecimal digits")]
    BadSign,
    #[error("x-sign does not match the request under any configured access key{}",
        .canonical_limit.map(|n| format!(" (the canonical form is only tried for bodies up to {n} bytes)")).unwrap_or_default())]
    BadSignature { canonical_limit: Option<usize> },
    #[error("no Kit access key is configured on this server")]
    NoKeysConfigured,
    #[error("this request was already accepted: a replay of the same signature")]
    Replayed,
    #[error("body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the body could not be read")]
    BodyUnreadable(String),
    #[error("the body was not received within {ms} ms")]
    BodyTimeout { ms: u64 },
    #[error("the server is busy, the request was not accepted; retry")]
    Overloaded(&'static str),
    #[error("{0}")]
    Invalid(FieldError),
    #[error("clientSecret: {0}")]
    BadSecret(String),
    #[error("the queue is unavailable, try again")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl KitError {
    /// The marketplace result code.
    #[must_use]
    pub fn result_code(&self) -> ResultCode {
        use ResultCode::{BadRequest, Unauthenticated, Unavailable};
        match self {
            KitError::MissingHeader(h) if *h == "x-sign" => Unauthenticated,
            KitError::MissingHeader(_) => BadRequest,
            KitError::BadTimestamp => BadRequest,
            KitError::StaleTimestamp { .. } => BadRequest,
            KitError::BadNonce { .. } => BadRequest,
            KitError::BadSign => Unauthenticated,
            KitError::BadSignature { .. } => Unauthenticated,
            KitError::NoKeysConfigured => Unauthenticated,
            KitError::Replayed => Unauthenticated,
            KitError::BodyTooLarge { .. } => BadRequest,
            KitError::BodyUnreadable(_) => BadRequest,
            KitError::BodyTimeout { .. } => BadRequest,
            KitError::Overloaded(_) => Unavailable,
            KitError::Invalid(_) => BadRequest,
            KitError::BadSecret(_) => BadRequest,
            KitError::Unavailable(_) => Unavailable,
            KitError::Internal(_) => Unavailable,
        }
    }

    /// The `resultMsg`: names what is wrong, never internal causes.
    #[must_use]
    pub fn result_msg(&self) -> String {
        match self {
            KitError::Unavailable(_) => {
                "service temporarily unavailable, the request was not accepted; retry".into()
            }
            KitError::Internal(_) => "internal error, the request was not accepted; retry".into(),
            other => other.to_string(),
        }
    }

    /// Whether the caller was authenticated (its MAC verified) when this was decided. Refusals
    /// of unauthenticated requests are what an attacker can produce at will: they are logged
    /// at a bounded rate, not one warning each.
    #[must_use]
    pub fn authenticated(&self) -> bool {
        match self {
            KitError::MissingHeader(_)
            | KitError::BadTimestamp
            | KitError::StaleTimestamp { .. }
            | KitError::BadNonce { .. }
            | KitError::BadSign
            | KitError::BadSignature { .. }
            | KitError::NoKeysConfigured
            | KitError::BodyTooLarge { .. }
            | KitError::BodyUnreadable(_)
            | KitError::BodyTimeout { .. }
            | KitError::Overloaded(_) => false,
            // A replay carries a valid MAC, but anyone who captured one can send it again.
            KitError::Replayed => false,
            KitError::Invalid(_)
            | KitError::BadSecret(_)
            | KitError::Unavailable(_)
            | KitError::Internal(_) => true,
        }
    }
}
