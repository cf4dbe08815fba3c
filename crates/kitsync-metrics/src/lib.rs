//! Process metrics in the Prometheus text exposition format (version 0.0.4), without a
//! metrics framework: the ingress and the worker own their counters and histograms, and the
//! `/metrics` handler in the binary asks each of them to write itself into one [`Encoder`].
//!
//! - [`Counter`] — one atomic `u64`; recording is a relaxed `fetch_add`.
//! - [`Histogram`] — fixed bucket bounds chosen at compile time, one atomic per bucket plus
//!   the sum in nanoseconds: recording a duration is three relaxed atomic additions, no lock
//!   and no allocation (the callback path runs it ~10 000 times a second).
//! - [`Encoder`] — writes `# HELP` / `# TYPE` once per family, then its samples, escaping
//!   label values (`\\`, `\"`, `\n`) and help text (`\\`, `\n`); a histogram becomes
//!   cumulative `_bucket{le="…"}` samples ending in `le="+Inf"`, then `_sum` and `_count`.
//!
//! Labels are fixed sets known to the recorder (endpoint × result code, outcome, …), so
//! series never grow with traffic.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The `Content-Type` of [`Encoder::finish`]'s text.
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

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[must_use]
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    #[must_use]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A distribution of durations over fixed bucket bounds (seconds, ascending).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket, *not* cumulative (one increment per observation); the last one is `+Inf`.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// `bounds` must be ascending and finite; the `+Inf` bucket is implied.
    #[must_use]
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(
            bounds.windows(2).all(|w| w[0] < w[1]) && bounds.iter().all(|b| b.is_finite()),
            "histogram bounds must be finite and strictly ascending"
        );
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        // `le` is inclusive: a value equal to a bound belongs to that bound's bucket.
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// A consistent-enough copy: the count is the sum of the buckets, so `_count` always
    /// equals the `+Inf` bucket even while observations are being recorded.
    #[must_use]
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0u64;
        let buckets = self
            .counts
            .iter()
            .map(|c| {
                cumulative = cumulative.saturating_add(c.load(Ordering::Relaxed));
                cumulative
            })
            .collect();
        #[allow(clippy::cast_precision_loss)] // seconds as f64 is what Prometheus stores
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        HistogramSnapshot {
            bounds: self.bounds,
            cumulative: buckets,
            sum,
        }
    }
}

/// What [`Histogram::snapshot`] read.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    bounds: &'static [f64],
    /// Cumulative counts, one per bound, then `+Inf`.
    cumulative: Vec<u64>,
    /// Sum of the observations, in seconds.
    pub sum: f64,
}

impl HistogramSnapshot {
    /// Observations so far.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }
}

/// The kind of a metric family (`# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample value: integers are written exactly, floats as Prometheus spells them.
pub trait Value {
    fn write_to(&self, out: &mut String);
}

impl Value for u64 {
    fn write_to(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for i64 {
    fn write_to(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for f64 {
    fn write_to(&self, out: &mut String) {
        write_float(out, *self);
    }
}

fn write_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Builds one exposition. Call [`Encoder::family`] before the samples of each family, and
/// keep a family's samples together.
#[derive(Debug, Default)]
pub struct Encoder {
    out: String,
}

impl Encoder {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// `# HELP name help` and `# TYPE name kind`.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        debug_assert!(valid_name(name, true), "bad metric name {name:?}");
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind.as_str());
        self.out.push('\n');
        self
    }

    /// One sample: `name{label="value",…} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Value) -> &mut Self {
        self.head(name, "", labels, None);
        value.write_to(&mut self.out);
        self.out.push('\n');
        self
    }

    /// A histogram's samples: cumulative `_bucket`s (`le` last), `_sum`, `_count`.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        h: &HistogramSnapshot,
    ) -> &mut Self {
        let mut le = String::new();
        for (i, n) in h.cumulative.iter().enumerate() {
            le.clear();
            match h.bounds.get(i) {
                Some(b) => write_float(&mut le, *b),
                None => le.push_str("+Inf"),
            }
            self.head(name, "_bucket", labels, Some(&le));
            n.write_to(&mut self.out);
            self.out.push('\n');
        }
        self.head(name, "_sum", labels, None);
        h.sum.write_to(&mut self.out);
        self.out.push('\n');
        self.head(name, "_count", labels, None);
        h.count().write_to(&mut self.out);
        self.out.push('\n');
        self
    }

    /// The text, ready to serve with [`CONTENT_TYPE`].
    #[must_use]
    pub fn finish(self) -> String {
        self.out
    }

    fn head(&mut self, name: &str, suffix: &str, labels: &[(&str, &str)], le: Option<&str>) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        let extra = le.map(|v| ("le", v));
        let mut all = labels.iter().copied().chain(extra).peekable();
        if all.peek().is_some() {
            self.out.push('{');
            for (i, (k, v)) in all.enumerate() {
                debug_assert!(valid_name(k, false), "bad label name {k:?}");
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label_value(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
    }
}

fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*` for metric names; label names may not contain `:`.
fn valid_name(name: &str, colons: bool) -> bool {
    let ok = |c: char, first: bool| {
        c.is_ascii_alphabetic()
            || c == '_'
            || (colons && c == ':')
            || (!first && c.is_ascii_digit())
    };
    let mut chars = name.chars();
    chars.next().is_some_and(|c| ok(c, true)) && chars.all(|c| ok(c, false))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn counter_family_with_escaped_labels() {
        let c = Counter::new();
        c.inc();
        c.add(2);
        let mut e = Encoder::new();
        e.family(
            "kitsync_things_total",
            Kind::Counter,
            "Things, with a \\ and a\nnewline.",
        )
        .sample(
            "kitsync_things_total",
            &[("a", "x\"y"), ("b", "back\\slash\nnl")],
            c.get(),
        )
        .sample("kitsync_things_total", &[], 0u64);
        assert_eq!(
            e.finish(),
            "# HELP kitsync_things_total Things, with a \\\\ and a\\nnewline.\n\
             # TYPE kitsync_things_total counter\n\
             kitsync_things_total{a=\"x\\\"y\",b=\"back\\\\slash\\nnl\"} 3\n\
             kitsync_things_total 0\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_le_inclusive() {
        static BOUNDS: &[f64] = &[0.1, 1.0, 2.5];
        let h = Histogram::new(BOUNDS);
        for ms in [50, 100, 100, 700, 2500, 3000, 60_000] {
            h.observe(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 7);
        let mut e = Encoder::new();
        e.family("x_seconds", Kind::Histogram, "X.").histogram(
            "x_seconds",
            &[("endpoint", "authSync")],
            &s,
        );
        let text = e.finish();
        assert_eq!(
            text,
            "# HELP x_seconds X.\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{endpoint=\"authSync\",le=\"0.1\"} 3\n\
             x_seconds_bucket{endpoint=\"authSync\",le=\"1\"} 4\n\
             x_seconds_bucket{endpoint=\"authSync\",le=\"2.5\"} 5\n\
             x_seconds_bucket{endpoint=\"authSync\",le=\"+Inf\"} 7\n\
             x_seconds_sum{endpoint=\"authSync\"} 66.45\n\
             x_seconds_count{endpoint=\"authSync\"} 7\n"
        );
    }

    #[test]
    fn empty_histogram_without_labels() {
        let h = Histogram::new(LATENCY_BUCKETS);
        let mut e = Encoder::new();
        e.histogram("y_seconds", &[], &h.snapshot());
        let text = e.finish();
        assert_eq!(text.lines().count(), LATENCY_BUCKETS.len() + 3);
        assert!(text.starts_with("y_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(
            text.contains("y_seconds_bucket{le=\"+Inf\"} 0\ny_seconds_sum 0\ny_seconds_count 0\n")
        );
    }

    #[test]
    fn floats_are_spelled_as_prometheus_reads_them() {
        let mut e = Encoder::new();
        e.sample("a", &[], 0.25f64)
            .sample("b", &[], f64::INFINITY)
            .sample("c", &[], f64::NEG_INFINITY)
            .sample("d", &[], f64::NAN)
            .sample("e", &[], -3i64)
            .sample("f", &[], 1.0f64);
        assert_eq!(e.finish(), "a 0.25\nb +Inf\nc -Inf\nd NaN\ne -3\nf 1\n");
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("kitsync_queue_depth", true));
        assert!(valid_name("ns:metric", true));
        assert!(!valid_name("ns:label", false));
        assert!(!valid_name("9lives", true));
        assert!(!valid_name("", true));
        assert!(!valid_name("with-dash", true));
    }
}
