//! What the ingress counts: answered callbacks by endpoint and result code, and how long
//! each endpoint took to answer. Each series' handle is taken once, at start, into fixed
//! arrays indexed by endpoint and code, so the callback path never looks a label set up.
use kitsync_domain::{CallbackKind, ResultCode};
use kitsync_metrics::{
    latency_family, observe, register, Counter, Family, Histogram, HistogramFamily, Labels,
    Registry,
};
use std::time::Duration;

const ENDPOINTS: usize = CallbackKind::ALL.len();
const CODES: usize = ResultCode::ALL.len();
/// The RSA keys a `clientSecret` can be decrypted with.
const KEYS: [&str; 2] = ["current", "previous"];

/// Callback counters and latencies, shared by every request.
#[derive(Debug)]
pub struct IngressMetrics {
    callbacks: Family<Labels<2>, Counter>,
    duration: HistogramFamily<1>,
    decrypted: Family<Labels<1>, Counter>,
    /// Handles into the families above, by endpoint and code, taken once at start.
    callback_series: [[Counter; CODES]; ENDPOINTS],
    duration_series: [Histogram; ENDPOINTS],
    /// `clientSecret`s decrypted with the current RSA key, and with a previous one.
    decrypted_series: [Counter; 2],
}

impl Default for IngressMetrics {
    fn default() -> Self {
        let callbacks = Family::<Labels<2>, Counter>::default();
        let duration = latency_family::<1>();
        let decrypted = Family::<Labels<1>, Counter>::default();
        // Every endpoint × code series exists from the start (at 0), so rates work at once.
        let callback_series = CallbackKind::ALL.map(|kind| {
            ResultCode::ALL.map(|code| {
                callbacks.get_or_create_owned(&[("endpoint", kind.path()), ("code", code.as_str())])
            })
        });
        let duration_series = CallbackKind::ALL
            .map(|kind| duration.get_or_create_owned(&[("endpoint", kind.path())]));
        let decrypted_series = KEYS.map(|key| decrypted.get_or_create_owned(&[("key", key)]));
        Self {
            callbacks,
            duration,
            decrypted,
            callback_series,
            duration_series,
            decrypted_series,
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
        if let Some(counter) = self
            .callback_series
            .get(k)
            .and_then(|row| row.get(code.index()))
        {
            counter.inc();
        }
        if let Some(h) = self.duration_series.get(k) {
            observe(h, took);
        }
    }

    /// Counts one `clientSecret` decrypted, with the current RSA key or a previous one.
    pub fn record_decrypted(&self, with_previous_key: bool) {
        self.decrypted_series[usize::from(with_previous_key)].inc();
    }

    /// Answered callbacks so far for `kind` and `code`.
    #[must_use]
    pub fn count(&self, kind: CallbackKind, code: ResultCode) -> u64 {
        self.callback_series
            .get(kind_index(kind))
            .and_then(|row| row.get(code.index()))
            .map_or(0, Counter::get)
    }

    /// Registers `kitsync_callbacks_total`, `kitsync_callback_duration_seconds` and
    /// `kitsync_client_secrets_decrypted_total`.
    pub fn register(&self, r: &mut Registry) {
        register(
            r,
            "kitsync_callbacks_total",
            "Kit callbacks answered, by endpoint and result code (000000 = durably queued).",
            self.callbacks.clone(),
        );
        register(
            r,
            "kitsync_callback_duration_seconds",
            "Time from receiving a Kit callback to its answer, by endpoint.",
            self.duration.clone(),
        );
        register(
            r,
            "kitsync_client_secrets_decrypted_total",
            "App clientSecrets decrypted, by RSA key (current, or previous: while it grows, \
             the marketplace still encrypts to a previous public key).",
            self.decrypted.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn exposition(m: &IngressMetrics) -> String {
        let mut r = Registry::default();
        m.register(&mut r);
        kitsync_metrics::encode(&r)
    }

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
        let text = exposition(&m);
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
        let text = exposition(&m);
        assert!(text.contains("kitsync_client_secrets_decrypted_total{key=\"previous\"} 1\n"));
        assert!(text.contains("kitsync_client_secrets_decrypted_total{key=\"current\"} 0\n"));
    }
}
