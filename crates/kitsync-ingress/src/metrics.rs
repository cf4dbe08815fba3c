//! What the ingress counts: answered callbacks by endpoint and result code, and how long
//! each endpoint took to answer. Fixed arrays indexed by endpoint and code, so recording is
//! two relaxed atomic additions per counter and histogram, with no lookup, lock or
//! allocation on the callback path.
use kitsync_domain::{CallbackKind, ResultCode};
use kitsync_metrics::{Counter, Encoder, Histogram, Kind, LATENCY_BUCKETS};
use std::time::Duration;

/// Callback counters and latencies, shared by every request.
#[derive(Debug)]
pub struct IngressMetrics {
    callbacks: [[Counter; ResultCode::ALL.len()]; CallbackKind::ALL.len()],
    duration: [Histogram; CallbackKind::ALL.len()],
    /// `clientSecret`s decrypted with the current RSA key, and with a previous one.
    decrypted: [Counter; 2],
}

impl Default for IngressMetrics {
    fn default() -> Self {
        Self {
            callbacks: std::array::from_fn(|_| std::array::from_fn(|_| Counter::new())),
            duration: std::array::from_fn(|_| Histogram::new(LATENCY_BUCKETS)),
            decrypted: std::array::from_fn(|_| Counter::new()),
        }
    }
}

fn kind_index(kind: CallbackKind) -> usize {
    match kind {
        CallbackKind::TenantSync => 0,
        CallbackKind::ApplicationSync => 1,
        CallbackKind::AuthSync => 2,
        CallbackKind::SingleOrgSync => 3,
        CallbackKind::AllOrgSync => 4,
    }
}

impl IngressMetrics {
    /// Counts one answered callback with its result code and time to answer.
    pub fn record(&self, kind: CallbackKind, code: ResultCode, took: Duration) {
        let k = kind_index(kind);
        if let Some(counter) = self.callbacks.get(k).and_then(|row| row.get(code.index())) {
            counter.inc();
        }
        if let Some(h) = self.duration.get(k) {
            h.observe(took);
        }
    }

    /// Counts one `clientSecret` decrypted, with the current RSA key or a previous one.
    pub fn record_decrypted(&self, with_previous_key: bool) {
        self.decrypted[usize::from(with_previous_key)].inc();
    }

    /// Answered callbacks so far for `kind` and `code`.
    #[must_use]
    pub fn count(&self, kind: CallbackKind, code: ResultCode) -> u64 {
        self.callbacks
            .get(kind_index(kind))
            .and_then(|row| row.get(code.index()))
            .map_or(0, Counter::get)
    }

    /// Writes `kitsync_callbacks_total` and `kitsync_callback_duration_seconds`; every
    /// endpoint × code series is present from the start (at 0), so rates work at once.
    pub fn encode(&self, e: &mut Encoder) {
        e.family(
            "kitsync_callbacks_total",
            Kind::Counter,
            "Kit callbacks answered, by endpoint and result code (000000 = durably queued).",
        );
        for kind in CallbackKind::ALL {
            for code in ResultCode::ALL {
                e.sample(
                    "kitsync_callbacks_total",
                    &[("endpoint", kind.path()), ("code", code.as_str())],
                    self.count(kind, code),
                );
            }
        }
        e.family(
            "kitsync_callback_duration_seconds",
            Kind::Histogram,
            "Time from receiving a Kit callback to its answer, by endpoint.",
        );
        for kind in CallbackKind::ALL {
            if let Some(h) = self.duration.get(kind_index(kind)) {
                e.histogram(
                    "kitsync_callback_duration_seconds",
                    &[("endpoint", kind.path())],
                    &h.snapshot(),
                );
            }
        }
        e.family(
            "kitsync_client_secrets_decrypted_total",
            Kind::Counter,
            "App clientSecrets decrypted, by RSA key (current, or previous: while it grows, \
             the marketplace still encrypts to a previous public key).",
        );
        for (key, counter) in ["current", "previous"].into_iter().zip(&self.decrypted) {
            e.sample(
                "kitsync_client_secrets_decrypted_total",
                &[("key", key)],
                counter.get(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn counts_by_endpoint_and_code() {
        let m = IngressMetrics::default();
        let ms3 = Duration::from_millis(3);
        m.record(CallbackKind::AuthSync, ResultCode::Success, ms3);
        m.record(CallbackKind::AuthSync, ResultCode::Success, ms3);
        let ms1 = Duration::from_millis(1);
        m.record(CallbackKind::TenantSync, ResultCode::Unauthenticated, ms1);
        assert_eq!(m.count(CallbackKind::AuthSync, ResultCode::Success), 2);
        assert_eq!(
            m.count(CallbackKind::TenantSync, ResultCode::Unauthenticated),
            1
        );
        assert_eq!(m.count(CallbackKind::TenantSync, ResultCode::Success), 0);
        let mut e = Encoder::new();
        m.encode(&mut e);
        let text = e.finish();
        assert!(text.contains("kitsync_callbacks_total{endpoint=\"authSync\",code=\"000000\"} 2\n"));
        assert!(
            text.contains("kitsync_callbacks_total{endpoint=\"tenantSync\",code=\"000001\"} 1\n")
        );
        assert!(
            text.contains("kitsync_callbacks_total{endpoint=\"allOrgSync\",code=\"000005\"} 0\n")
        );
        assert!(text.contains("kitsync_callback_duration_seconds_count{endpoint=\"authSync\"} 2\n"));
        assert_eq!(text.matches("# TYPE ").count(), 3);
        m.record_decrypted(true);
        let mut e = Encoder::new();
        m.encode(&mut e);
        let text = e.finish();
        assert!(text.contains("kitsync_client_secrets_decrypted_total{key=\"previous\"} 1\n"));
        assert!(text.contains("kitsync_client_secrets_decrypted_total{key=\"current\"} 0\n"));
    }
}
