//! Everything that can go wrong with a callback, and its result code (kit-protocol.md §5,
//! product.md §6). This is the only place result codes are chosen.
use kitsync_domain::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("x-timestamp must be Unix time in milliseconds, got `{0}`")]
    BadTimestamp(String),
    #[error(
        "x-timestamp is {skew_ms} ms away from the server clock, at most {window_ms} ms allowed"
    )]
    StaleTimestamp { skew_ms: i64, window_ms: i64 },
    #[error("x-sign does not match the request under any configured access key")]
    BadSignature,
    #[error("no Kit access key is configured on this server")]
    NoKeysConfigured,
    #[error("x-nonce was already used within the replay window")]
    Replayed,
    #[error("body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("body could not be read: {0}")]
    BodyUnreadable(String),
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
    pub fn result_code(&self) -> &'static str {
        match self {
            KitError::MissingHeader(h) if *h == "x-sign" => "000001",
            KitError::MissingHeader(_) => "000002",
            KitError::BadTimestamp(_) => "000002",
            KitError::StaleTimestamp { .. } => "000002",
            KitError::BadSignature => "000001",
            KitError::NoKeysConfigured => "000001",
            KitError::Replayed => "000001",
            KitError::BodyTooLarge { .. } => "000002",
            KitError::BodyUnreadable(_) => "000002",
            KitError::Invalid(_) => "000002",
            KitError::BadSecret(_) => "000002",
            KitError::Unavailable(_) => "000005",
            KitError::Internal(_) => "000005",
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
}
