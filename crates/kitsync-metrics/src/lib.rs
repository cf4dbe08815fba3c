//! Process metrics in the Prometheus text exposition format (version 0.0.4), on the Prometheus
//! project's `prometheus-client` crate: the ingress and the worker own their metrics, and the
//! `/metrics` handler in the binary registers them, with the gauges it reads at scrape time,
//! into one [`Registry`] per scrape and encodes it with [`encode`].
//!
//! What this crate adds to the library:
//! - the bucket bounds kitsync uses ([`LATENCY_BUCKETS`], [`LAG_BUCKETS`]);
//! - [`register`], which takes the name as it is exposed (`…_total` for a counter; the
//!   library appends that suffix itself) and help text as written (the library appends a
//!   full stop);
//! - [`observe`], recording a [`Duration`] in seconds.
//!
//! Recorders hold handles taken from a [`Family`] once, at start (`get_or_create_owned`), in
//! arrays indexed by their fixed label values (endpoint × result code, outcome, …), so
//! recording is one relaxed atomic addition per counter, and a short uncontended lock per
//! histogram, with no label lookup; and series never grow with traffic.
#![forbid(unsafe_code)]

use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Metric;
use std::time::Duration;

pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;
pub use prometheus_client::registry::Registry;

/// A gauge of a float value (seconds, Unix times).
pub type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The labels of one series: fixed names and values known to the recorder.
pub type Labels<const N: usize> = [(&'static str, &'static str); N];

/// The `Content-Type` of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bucket bounds (seconds) for request and transaction latencies: 1 ms … 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket bounds (seconds) for how long a message waited between being queued and being
/// applied: 10 ms … 1 h (retries and backlogs take minutes).
pub const LAG_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// A histogram over `bounds` (seconds, ascending; `+Inf` is implied).
#[must_use]
pub fn histogram(bounds: &'static [f64]) -> Histogram {
    Histogram::new(bounds.iter().copied())
}

/// Records `d` in seconds.
pub fn observe(h: &Histogram, d: Duration) {
    h.observe(d.as_secs_f64());
}

/// Registers `metric` as `name` with `help`, both as they appear in the exposition: a
/// counter's `_total` suffix and the help's final full stop are the library's to add.
pub fn register(registry: &mut Registry, name: &str, help: &str, metric: impl Metric) {
    let name = match metric.metric_type() {
        MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    };
    registry.register(name, help.trim_end_matches('.'), metric);
}

/// A family of histograms over `bounds`, one per label set.
pub type HistogramFamily<const N: usize> = Family<Labels<N>, Histogram, fn() -> Histogram>;

/// A histogram family whose series use [`LATENCY_BUCKETS`].
#[must_use]
pub fn latency_family<const N: usize>() -> HistogramFamily<N> {
    Family::new_with_constructor(|| histogram(LATENCY_BUCKETS))
}

/// Registers a gauge family whose series are set once: for figures read at scrape time into
/// a registry made for that scrape.
pub fn gauges<const N: usize>(
    r: &mut Registry,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels<N>, i64)>,
) {
    let family = Family::<Labels<N>, Gauge>::default();
    for (labels, v) in series {
        family.get_or_create(&labels).set(v);
    }
    register(r, name, help, family);
}

/// Registers one unlabelled float gauge set to `value` (see [`gauges`]).
pub fn float_gauge(r: &mut Registry, name: &str, help: &str, value: f64) {
    let g = FloatGauge::default();
    g.set(value);
    register(r, name, help, g);
}

/// A count as a gauge value (saturating; counts are never that large).
#[must_use]
pub fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The exposition of `registry`, ready to serve with [`CONTENT_TYPE`].
#[must_use]
pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(8 * 1024);
    // Writing into a String cannot fail; an encoder error would be a library bug, and the
    // scrape then shows what was written so far.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        out.push_str(&format!("# encoding failed: {e}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_and_help_are_written_as_registered() {
        let mut r = Registry::default();
        let c = Counter::<u64>::default();
        c.inc_by(3);
        register(&mut r, "x_requests_total", "Requests, by path.", c.clone());
        let g = Family::<Labels<1>, Gauge>::default();
        g.get_or_create(&[("path", "a\"b\\c\nd")]).set(-2);
        register(&mut r, "x_depth", "Depth.\nSecond line", g);
        gauges(&mut r, "x_plain", "No labels.", [([], 7)]);
        float_gauge(&mut r, "x_seconds", "Float.", 1.5);
        let text = encode(&r);
        assert!(
            text.contains("# HELP x_requests_total Requests, by path.\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE x_requests_total counter\n"), "{text}");
        assert!(text.contains("\nx_requests_total 3\n"), "{text}");
        assert!(text.contains("# TYPE x_depth gauge\n"), "{text}");
        assert!(
            text.contains("x_depth{path=\"a\\\"b\\\\c\\nd\"} -2\n"),
            "{text}"
        );
        assert!(text.contains("\nx_plain 7\n"), "{text}");
        assert!(text.contains("\nx_seconds 1.5\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_le_inclusive() {
        let mut r = Registry::default();
        let h = histogram(&[0.01, 0.1]);
        observe(&h, Duration::from_millis(10));
        observe(&h, Duration::from_millis(50));
        observe(&h, Duration::from_secs(1));
        register(&mut r, "x_seconds", "Latency.", h);
        let text = encode(&r);
        for line in [
            "x_seconds_bucket{le=\"0.01\"} 1\n",
            "x_seconds_bucket{le=\"0.1\"} 2\n",
            "x_seconds_bucket{le=\"+Inf\"} 3\n",
            "x_seconds_count 3\n",
            "x_seconds_sum 1.06\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }
}
