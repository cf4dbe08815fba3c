//! `[queue]` settings and the retry schedule derived from them.
use backon::{BackoffBuilder, ExponentialBuilder};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How the intake queue is reached and how failed messages are retried.
#[derive(Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct QueueSettings {
    /// `amqp://user:pass@host:5672/%2f`; `None` keeps the queue in the SQL database.
    pub amqp_url: Option<String>,
    /// RabbitMQ queue name; the dead-letter exchange, dead-letter queue and retry queues are
    /// named after it (`{name}.dlx`, `{name}.dead`, `{name}.retry.{attempt}`).
    pub name: String,
    /// Confirm-mode channels publishes are spread over (RabbitMQ only).
    pub publish_channels: usize,
    /// A publish that is not durable within this time fails with `Unavailable`, so the
    /// ingress can still answer `000005` well inside the marketplace's 5 s timeout.
    pub publish_timeout_ms: u64,
    /// Unacknowledged deliveries a RabbitMQ consumer may hold.
    pub prefetch: u16,
    /// Failed attempts after which a message is dead-lettered instead of retried.
    pub max_attempts: u32,
    /// Delay before the first retry; each further attempt doubles it…
    pub retry_min_delay_ms: u64,
    /// …up to this cap.
    pub retry_max_delay_ms: u64,
    /// Embedded queue: a claimed message that is not acked within this time is delivered
    /// again (the worker that claimed it is presumed dead).
    pub lease_ms: u64,
    /// Embedded queue: how often an idle consumer looks for work written by other processes
    /// (work published in-process wakes it at once).
    pub poll_interval_ms: u64,
    /// RabbitMQ quorum-queue `x-delivery-limit`: a message redelivered this often without
    /// being acked or failed (a worker crash loop) goes to the dead-letter exchange.
    pub delivery_limit: u32,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            amqp_url: None,
            name: "kitsync.sync".into(),
            publish_channels: 8,
            publish_timeout_ms: 1500,
            prefetch: 256,
            max_attempts: 6,
            retry_min_delay_ms: 1000,
            retry_max_delay_ms: 300_000,
            lease_ms: 60_000,
            poll_interval_ms: 50,
            delivery_limit: 20,
        }
    }
}

/// The password of `amqp_url` must never reach a log line.
impl std::fmt::Debug for QueueSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueSettings")
            .field("amqp_url", &self.amqp_url.as_deref().map(redact_url))
            .field("name", &self.name)
            .field("publish_channels", &self.publish_channels)
            .field("publish_timeout_ms", &self.publish_timeout_ms)
            .field("prefetch", &self.prefetch)
            .field("max_attempts", &self.max_attempts)
            .field("retry_min_delay_ms", &self.retry_min_delay_ms)
            .field("retry_max_delay_ms", &self.retry_max_delay_ms)
            .field("lease_ms", &self.lease_ms)
            .field("poll_interval_ms", &self.poll_interval_ms)
            .field("delivery_limit", &self.delivery_limit)
            .finish()
    }
}

impl QueueSettings {
    /// The fixed delay before retry number `attempt` (1-based): `retry_min_delay_ms`
    /// doubling per attempt, capped at `retry_max_delay_ms`, without jitter.
    ///
    /// Fixed delays are what let RabbitMQ use one TTL queue per attempt number; the embedded
    /// queue uses the same schedule so both adapters behave alike.
    #[must_use]
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let min = Duration::from_millis(self.retry_min_delay_ms);
        let max = Duration::from_millis(self.retry_max_delay_ms.max(self.retry_min_delay_ms));
        ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_factor(2.0)
            .without_max_times()
            .build()
            .nth(attempt.max(1) as usize - 1)
            .unwrap_or(max)
    }

    pub(crate) fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms.max(1))
    }

    /// `max_attempts`, never below one (zero would dead-letter before the first try).
    pub(crate) fn attempts_cap(&self) -> u32 {
        self.max_attempts.max(1)
    }
}

/// `scheme://user:secret@host/…` → `scheme://user:***@host/…`, for every URL kitsync logs
/// (the broker's and the database's).
///
/// The userinfo ends at the last `@` of the authority (RFC 3986), so an unencoded `@` in the
/// password is hidden too. A password holding an unencoded `/`, `?` or `#` ends the authority
/// early; the userinfo then ends at the first `@`, so such a URL — one the drivers refuse, and
/// whose error names it — does not show its password either.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@').or_else(|| rest.find('@')) else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    if user.len() == userinfo.len() {
        return url.to_owned();
    }
    format!("{}{user}:***{}", &url[..scheme_end], &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(min: u64, max: u64) -> QueueSettings {
        QueueSettings {
            retry_min_delay_ms: min,
            retry_max_delay_ms: max,
            ..QueueSettings::default()
        }
    }

    #[test]
    fn each_attempt_has_a_fixed_doubling_delay() {
        let s = settings(1000, 300_000);
        let got: Vec<u64> = (1..=11)
            .map(|a| s.retry_delay(a).as_millis() as u64)
            .collect();
        assert_eq!(
            got,
            [1000, 2000, 4000, 8000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000, 300_000]
        );
        // Deterministic: asking again gives the same answer (no jitter).
        assert_eq!(s.retry_delay(3), s.retry_delay(3));
    }

    #[test]
    fn the_delay_is_capped_and_never_overflows() {
        let s = settings(50, 400);
        assert_eq!(s.retry_delay(1), Duration::from_millis(50));
        assert_eq!(s.retry_delay(4), Duration::from_millis(400));
        assert_eq!(s.retry_delay(1000), Duration::from_millis(400));
        assert_eq!(s.retry_delay(0), Duration::from_millis(50));
        let inverted = settings(500, 100);
        assert_eq!(inverted.retry_delay(5), Duration::from_millis(500));
    }

    #[test]
    fn debug_redacts_the_amqp_password() {
        let s = QueueSettings {
            amqp_url: Some("amqp://guest:hunter2@rabbit:5672/%2f".into()),
            ..QueueSettings::default()
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("amqp://guest:***@rabbit:5672/%2f"),
            "{shown}"
        );
    }

    #[test]
    fn redact_url_leaves_urls_without_password_alone() {
        assert_eq!(redact_url("amqp://rabbit/%2f"), "amqp://rabbit/%2f");
        assert_eq!(redact_url("amqp://guest@rabbit/"), "amqp://guest@rabbit/");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(redact_url("amqp://u:p@h/a@b"), "amqp://u:***@h/a@b");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://data/x"), "sqlite://data/x");
    }

    #[test]
    fn redact_url_hides_passwords_written_without_percent_encoding() {
        assert_eq!(
            redact_url("postgres://kitsync:p@ss@db:5432/kitsync"),
            "postgres://kitsync:***@db:5432/kitsync"
        );
        assert_eq!(
            redact_url("postgres://kitsync:ab/cd+e?f#g@db/kitsync"),
            "postgres://kitsync:***@db/kitsync"
        );
    }
}
