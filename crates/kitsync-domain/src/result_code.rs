//! The Kit's result codes, as kitsync answers them (docs/protocol.md §3).

/// The `resultCode` of an answer to a Kit callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResultCode {
    /// `000000`: verified, valid, not a replay, and durably queued.
    Success,
    /// `000001`: not authenticated: the signature is missing, malformed or does not verify, no
    /// access key is configured, or the request is a replay.
    Unauthenticated,
    /// `000002`: a bad request: a header, the body's size or arrival, or a field.
    BadRequest,
    /// `000005`: not accepted now (busy, or the queue is unavailable); the marketplace retries.
    Unavailable,
}

impl ResultCode {
    /// Every code, in exposition order.
    pub const ALL: [ResultCode; 4] = [
        ResultCode::Success,
        ResultCode::Unauthenticated,
        ResultCode::BadRequest,
        ResultCode::Unavailable,
    ];

    /// The code as the Kit writes it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            ResultCode::Success => "000000",
            ResultCode::Unauthenticated => "000001",
            ResultCode::BadRequest => "000002",
            ResultCode::Unavailable => "000005",
        }
    }

    /// Its position in [`ResultCode::ALL`].
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The code written `s` (`None`: not one kitsync answers).
    #[must_use]
    pub fn parse(s: &str) -> Option<ResultCode> {
        ResultCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for ResultCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_index_all() {
        for (i, c) in ResultCode::ALL.into_iter().enumerate() {
            assert_eq!(c.index(), i);
            assert_eq!(ResultCode::parse(c.as_str()), Some(c));
        }
        assert_eq!(ResultCode::parse("000003"), None);
        assert_eq!(ResultCode::Unavailable.to_string(), "000005");
    }
}
