//! The monitoring that ships in `deploy/`, checked against the real binary:
//!
//! - every metric (and every label value it selects) that an alert of
//!   `deploy/prometheus/alerts.yaml` or a query of the Grafana dashboard
//!   `deploy/grafana/kitsync.json` uses is one a running kitsync serves on `/metrics`;
//! - every alert is complete (`for`, severity, summary, description) and its `runbook_url` is
//!   a `###` section of `docs/operations.md` named after the alert;
//! - the dashboard is templated on its Prometheus data source, job and instance;
//! - (ignored in the plain run: it needs `KITSYNC_CI_PROMETHEUS`, see its test) a real
//!   Prometheus scrapes a kitsync that received callbacks, loads every rule healthy, and
//!   `KitsyncDown` goes pending once that kitsync stops.
//!
//! `promtool test rules deploy/prometheus/alerts.test.yaml` tests each alert's logic on
//! synthetic series; `.ci/run` runs it.
//!
//! Runs on the embedded defaults and, when `KITSYNC_TEST_DATABASE_URL` /
//! `KITSYNC_TEST_AMQP_URL` are set, on PostgreSQL / RabbitMQ.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tests::payload::{self, time, User};
use tests::web::enc;
use tests::{wait_until, Env, Kit, APPLICATION_SYNC, AUTH_SYNC, TENANT_SYNC};

const APPLY_TIMEOUT: Duration = Duration::from_secs(45);

/// Served only with the embedded queue: RabbitMQ cannot tell the oldest message's age without
/// consuming, so kitsync leaves the series out there (README.md, "Operations / Metrics"). On
/// RabbitMQ the test checks that they are indeed absent; on the embedded queue that they are
/// served like every other name.
const EMBEDDED_QUEUE_ONLY: &[&str] = &["kitsync_queue_oldest_age_seconds"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// The rules file, by line scanning (no YAML parser in this crate)
// ---------------------------------------------------------------------------------------------

/// One alerting rule: its name and its scalar fields (`expr`, `for`, `severity`, `summary`,
/// `description`, `runbook_url`, …), block scalars (`|`, `>-`) joined.
#[derive(Debug)]
struct Rule {
    name: String,
    fields: BTreeMap<String, String>,
}

impl Rule {
    fn field(&self, key: &str) -> &str {
        self.fields.get(key).map_or("", String::as_str)
    }
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
        .to_owned()
}

/// The alerting rules of a rules file, in order.
fn rules(yaml: &str) -> Vec<Rule> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out: Vec<Rule> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim_start();
        i += 1;
        if t.starts_with('#') {
            continue;
        }
        if let Some(name) = t.strip_prefix("- alert:") {
            out.push(Rule {
                name: unquote(name),
                fields: BTreeMap::new(),
            });
            continue;
        }
        let (Some(rule), Some((key, value))) = (out.last_mut(), t.split_once(':')) else {
            continue;
        };
        let mut value = value.trim().to_owned();
        if matches!(value.as_str(), "|" | "|-" | ">" | ">-") {
            let folded = value.starts_with('>');
            let mut block = Vec::new();
            while i < lines.len() && (lines[i].trim().is_empty() || indent(lines[i]) > indent(line))
            {
                block.push(lines[i].trim());
                i += 1;
            }
            value = block
                .join(if folded { " " } else { "\n" })
                .trim()
                .to_owned();
        }
        rule.fields.insert(key.trim().to_owned(), unquote(&value));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Metric names and label matchers in PromQL
// ---------------------------------------------------------------------------------------------

/// A `kitsync_…` metric a query selects, with its label matchers (`label`, `op`, `value`).
#[derive(Debug, Clone, PartialEq)]
struct Selector {
    name: String,
    matchers: Vec<(String, String, String)>,
}

/// Every identifier of `expr` that starts with `kitsync_` (not inside a longer word; the
/// whole identifier, so that `kitsync_deadLetters` is checked as such), with the matchers of
/// the `{…}` right after it.
fn selectors(expr: &str) -> Vec<Selector> {
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = expr[i..].find("kitsync_").map(|p| p + i) {
        let mut end = at + "kitsync_".len();
        while end < b.len() && ident(b[end]) {
            end += 1;
        }
        i = end;
        if at > 0 && ident(b[at - 1]) {
            continue;
        }
        let mut matchers = Vec::new();
        if expr[end..].starts_with('{') {
            let close = expr[end..].find('}').map(|p| p + end).unwrap();
            for m in expr[end + 1..close]
                .split(',')
                .filter(|m| !m.trim().is_empty())
            {
                let op_at = m.find(['=', '!']).unwrap_or_else(|| panic!("matcher {m}"));
                let (label, rest) = m.split_at(op_at);
                let op_len =
                    if rest.starts_with("=~") || rest.starts_with("!=") || rest.starts_with("!~") {
                        2
                    } else {
                        1
                    };
                matchers.push((
                    label.trim().to_owned(),
                    rest[..op_len].to_owned(),
                    unquote(&rest[op_len..]),
                ));
            }
            i = close;
        }
        out.push(Selector {
            name: expr[at..end].to_owned(),
            matchers,
        });
    }
    out
}

/// Every PromQL query of the dashboard: panel targets' `expr` and the template variables'
/// `query`/`definition`.
fn dashboard_queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_queries(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/kitsync.json")).expect("kitsync.json is JSON")
}

// ---------------------------------------------------------------------------------------------
// What a kitsync serves
// ---------------------------------------------------------------------------------------------

/// One `/metrics` exposition: the families (`# TYPE`) and the label values of every sample
/// name.
struct Exposition {
    types: BTreeMap<String, String>,
    /// sample name → label → values seen.
    labels: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

fn exposition(text: &str) -> Exposition {
    let mut types = BTreeMap::new();
    let mut labels: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), kind.to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let series = line.rsplit_once(' ').unwrap().0;
            let (name, rest) = series.split_once('{').unwrap_or((series, ""));
            let entry = labels.entry(name.to_owned()).or_default();
            for pair in rest
                .trim_end_matches('}')
                .split(',')
                .filter(|p| !p.is_empty())
            {
                let (k, v) = pair.split_once('=').unwrap();
                entry.entry(k.to_owned()).or_default().insert(unquote(v));
            }
        }
    }
    Exposition { types, labels }
}

impl Exposition {
    /// The family a sample name belongs to (`…_bucket`/`_sum`/`_count` of a histogram), if
    /// served.
    fn family(&self, name: &str) -> Option<String> {
        if self.types.contains_key(name) {
            return Some(name.to_owned());
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            (self.types.get(base)? == "histogram").then(|| base.to_owned())
        })
    }

    /// What is wrong with a selector against this exposition: an unknown name, or a matcher
    /// on a label value no sample has (`job`/`instance` are Prometheus's target labels and
    /// `$…` are dashboard variables: not checked). Empty when it is served.
    fn problems(&self, s: &Selector) -> Vec<String> {
        if self.family(&s.name).is_none() {
            return vec![format!("{} is not served", s.name)];
        }
        let Some(labels) = self.labels.get(&s.name) else {
            return vec![format!("{} is declared but has no sample", s.name)];
        };
        let mut out = Vec::new();
        for (label, _op, value) in &s.matchers {
            if label == "job" || label == "instance" || value.contains('$') {
                continue;
            }
            let Some(seen) = labels.get(label) else {
                out.push(format!("{} has no label {label}", s.name));
                continue;
            };
            // A plain value or an alternation of plain values: each must be served.
            for v in value.split('|') {
                if !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    continue; // a real regular expression: not checked
                }
                if !seen.contains(v) {
                    out.push(format!(
                        "{}{{{label}}} never has the value {v:?} (served: {seen:?})",
                        s.name
                    ));
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerts_and_the_dashboard_query_is_served() {
    let alert_rules = rules(&read("deploy/prometheus/alerts.yaml"));
    let mut queries: Vec<(String, String)> = alert_rules
        .iter()
        .map(|r| {
            (
                format!("alerts.yaml {}", r.name),
                r.field("expr").to_owned(),
            )
        })
        .collect();
    let mut dash = Vec::new();
    dashboard_queries(&dashboard(), &mut dash);
    queries.extend(dash.into_iter().map(|q| ("kitsync.json".to_owned(), q)));

    let env = Env::new("monitoring").await;
    let server = env.start("serve").await;
    let r = server.kit().api("GET", "/metrics", None, &[], None).await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.raw).unwrap();
    let served = exposition(&text);

    // The check itself: a misspelt name, a histogram suffix on a counter, and a label value
    // kitsync never exports are all caught.
    for (wrong, expr) in [
        ("kitsync_dead_leters", "max(kitsync_dead_leters) > 0"),
        (
            "kitsync_callbacks_total_bucket",
            "kitsync_callbacks_total_bucket",
        ),
        ("code", "kitsync_callbacks_total{code=\"00005\"}"),
        (
            "kind",
            "kitsync_apply_failures_total{kind=~\"retried|retry\"}",
        ),
        ("kitsync_dead_Letters", "max(kitsync_dead_Letters)"),
    ] {
        let p: Vec<String> = selectors(expr)
            .iter()
            .flat_map(|s| served.problems(s))
            .collect();
        assert!(
            p.iter().any(|p| p.contains(wrong)),
            "{expr} should be refused: {p:?}"
        );
    }
    assert_eq!(
        selectors("max(kitsync_dead_letters) > 0 and my_kitsync_dead_letters"),
        vec![Selector {
            name: "kitsync_dead_letters".into(),
            matchers: vec![]
        }],
        "only whole identifiers are metric names"
    );

    let mut problems = Vec::new();
    let mut families: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (source, query) in &queries {
        let file = source.split(' ').next().unwrap();
        for s in selectors(query) {
            if EMBEDDED_QUEUE_ONLY.contains(&s.name.as_str()) && env.is_amqp() {
                families.entry(file).or_default().insert(s.name.clone());
                continue;
            }
            for p in served.problems(&s) {
                problems.push(format!("{source}: {p} (in {query:?})"));
            }
            if let Some(f) = served.family(&s.name) {
                families.entry(file).or_default().insert(f);
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{problems:#?}\n--- /metrics ---\n{text}"
    );
    // The key families are there (so the extraction did find the queries): those of the
    // callbacks, the queue and the applying in both, then each file's own.
    let in_both = [
        "kitsync_callbacks_total",
        "kitsync_callback_duration_seconds",
        "kitsync_queue_depth",
        "kitsync_queue_oldest_age_seconds",
        "kitsync_queue_lag_seconds",
        "kitsync_applied_messages_total",
        "kitsync_apply_failures_total",
    ];
    for (file, own) in [
        (
            "alerts.yaml",
            &[
                "kitsync_dead_letters",
                "kitsync_held_plans",
                "kitsync_metrics_source_up",
            ][..],
        ),
        (
            "kitsync.json",
            &[
                "kitsync_apply_duration_seconds",
                "kitsync_apply_batches_total",
                "kitsync_dead_letters",
                "kitsync_held_plans",
                "kitsync_projects_opened",
                "kitsync_projects_active",
                "kitsync_members_authorized",
                "kitsync_members_active",
                "kitsync_build_info",
                "kitsync_metrics_source_up",
            ][..],
        ),
    ] {
        let got = families.get(file).cloned().unwrap_or_default();
        for f in in_both.iter().chain(own) {
            assert!(
                got.contains(*f),
                "{file} queries no {f}; it queries {got:?}"
            );
        }
    }
    // The allow-list is honest: those names are absent on RabbitMQ (the README says why),
    // and served on the embedded queue (checked above with everything else).
    for name in EMBEDDED_QUEUE_ONLY {
        assert_eq!(
            served.family(name).is_some(),
            !env.is_amqp(),
            "{name} on the {} queue:\n{text}",
            if env.is_amqp() { "amqp" } else { "embedded" }
        );
    }
    drop(server);
    env.finish().await;
}

/// GitHub's anchor of a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_alert_is_complete_and_its_runbook_is_a_section_of_the_operations_guide() {
    let yaml = read("deploy/prometheus/alerts.yaml");
    assert!(
        yaml.lines().any(|l| l.trim() == "- name: kitsync"),
        "alerts.yaml has the group kitsync"
    );
    let alert_rules = rules(&yaml);
    assert!(
        alert_rules.len() >= 4,
        "alerts.yaml has the README's suggested alerts at least: {alert_rules:#?}"
    );
    assert_eq!(anchor("KitsyncDeadLetters"), "kitsyncdeadletters");
    assert_eq!(anchor("Alerts: what to do"), "alerts-what-to-do");

    let doc = std::fs::read_to_string(root().join("docs/operations.md")).unwrap_or_else(|e| {
        panic!(
            "docs/operations.md ({e}) must have a `### Name` section for each alert: {:?}",
            alert_rules.iter().map(|r| &r.name).collect::<Vec<_>>()
        )
    });
    let headings: BTreeMap<String, String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| (anchor(h), h.trim().to_owned()))
        .collect();
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for r in &alert_rules {
        if !names.insert(&r.name) {
            problems.push(format!("{} is defined twice", r.name));
        }
        for key in ["expr", "for", "summary", "description"] {
            if r.field(key).is_empty() {
                problems.push(format!("{} has no {key}", r.name));
            }
        }
        if !matches!(r.field("severity"), "critical" | "warning") {
            problems.push(format!(
                "{}: severity {:?} is not critical or warning",
                r.name,
                r.field("severity")
            ));
        }
        let url = r.field("runbook_url");
        let expected = format!("docs/operations.md#{}", r.name.to_lowercase());
        if url != expected {
            problems.push(format!(
                "{}: runbook_url {url:?}, expected {expected:?}",
                r.name
            ));
        }
        let Some((file, fragment)) = url.split_once('#') else {
            continue;
        };
        if !root().join(file).is_file() {
            problems.push(format!("{}: {file} does not exist", r.name));
        }
        match headings.get(fragment) {
            Some(h) if *h == r.name => {}
            Some(h) => problems.push(format!(
                "{}: #{fragment} is the heading {h:?}, not the alert's name",
                r.name
            )),
            None => problems.push(format!(
                "{}: docs/operations.md has no `### {}` (anchor #{fragment})",
                r.name, r.name
            )),
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_dashboard_is_templated_on_its_data_source_job_and_instance() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36, "schemaVersion");
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let vars = d["templating"]["list"].as_array().unwrap();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name}"))
    };
    assert_eq!(var("DS_PROMETHEUS")["type"], "datasource");
    assert_eq!(var("DS_PROMETHEUS")["query"], "prometheus");
    for name in ["job", "instance"] {
        assert_eq!(var(name)["type"], "query");
        assert_eq!(var(name)["datasource"]["uid"], "${DS_PROMETHEUS}");
    }

    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    let mut queried = 0;
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "panel id of {title} reused"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24, "{title} is wider than the grid");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel");
            }
        }
        if p["type"] == "row" {
            continue;
        }
        assert!(!title.is_empty(), "a panel without a title");
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            let expr = t["expr"].as_str().unwrap();
            // Every selector of a kitsync metric follows the job and instance variables.
            for s in selectors(expr) {
                for (label, var) in [("job", "$job"), ("instance", "$instance")] {
                    assert!(
                        s.matchers
                            .iter()
                            .any(|(l, op, v)| l == label && op == "=~" && v == var),
                        "{title}: {} in {expr:?} is not filtered by {label}=~\"{var}\"",
                        s.name
                    );
                }
            }
            queried += 1;
        }
    }
    assert!(queried >= 15, "only {queried} queries");
}

// ---------------------------------------------------------------------------------------------
// A real Prometheus
// ---------------------------------------------------------------------------------------------

/// A Prometheus process, killed (and reaped) on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `GET path` on its HTTP API: the JSON `data`.
    async fn api(&self, path: &str) -> Value {
        let r = Kit::new(self.addr, "")
            .api("GET", path, None, &[], None)
            .await;
        assert_eq!(
            (r.status, &r.body["status"]),
            (200, &Value::from("success")),
            "GET {path}: {}\n{}",
            String::from_utf8_lossy(&r.raw),
            self.log_tail()
        );
        r.body["data"].clone()
    }

    /// The result vector of an instant query.
    async fn query(&self, promql: &str) -> Vec<Value> {
        let q = enc(promql);
        self.api(&format!("/api/v1/query?query={q}")).await["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- prometheus log (last lines) -----\n{}\n----- end -----",
                self.log_tail()
            );
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn value(sample: &Value) -> f64 {
    sample["value"][1].as_str().unwrap().parse().unwrap()
}

/// A real Prometheus (`KITSYNC_CI_PROMETHEUS`: the `prometheus` binary, or a directory with
/// `prometheus` and `promtool`) scrapes a kitsync that applied three callbacks, every second,
/// with `deploy/prometheus/alerts.yaml` as its rules: it sees the callbacks, every rule is
/// loaded and evaluates without error, no alert is active on the healthy kitsync, and
/// `KitsyncDown` goes pending for that target once kitsync is stopped (its job selector
/// matches the scrape job).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Prometheus: KITSYNC_CI_PROMETHEUS=/usr/bin/prometheus (Debian's package prometheus)"]
async fn a_real_prometheus_scrapes_kitsync_and_loads_every_alert() {
    let given = PathBuf::from(std::env::var("KITSYNC_CI_PROMETHEUS").expect(
        "KITSYNC_CI_PROMETHEUS: the prometheus binary, or a directory with prometheus and promtool",
    ));
    let bin = if given.is_dir() {
        given.join("prometheus")
    } else {
        given
    };
    assert!(bin.is_file(), "{} is not a file", bin.display());
    let promtool = bin.with_file_name("promtool");
    let alerts_path = root().join("deploy/prometheus/alerts.yaml");
    let expected: BTreeSet<String> = rules(&std::fs::read_to_string(&alerts_path).unwrap())
        .into_iter()
        .map(|r| r.name)
        .collect();

    let mut env = Env::new("prometheus").await;
    // Scraped on the metrics listener (as a worker's would be), with fresh shared gauges.
    env.extra_env.extend([
        ("KITSYNC_METRICS__ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ("KITSYNC_METRICS__CACHE_MS".to_owned(), "0".to_owned()),
    ]);
    let mut server = env.start("serve").await;
    let kit = server.kit();
    let t = "prom-acme";
    let users = [
        User::new("alice", "D1", "admin", true),
        User::new("bob", "D1", "user", true),
    ];
    for (kind, body) in [
        (TENANT_SYNC, payload::tenant(t, "Acme", 1, 0, &time(0))),
        (
            APPLICATION_SYNC,
            payload::app(t, "app-p", "client-p", "c2VjcmV0", &time(1)),
        ),
        (AUTH_SYNC, payload::auth(t, "app-p", 1, &users, &time(2))),
    ] {
        let r = kit.send(kind, &body).await;
        assert_eq!(r.code, "000000", "{kind}: {r:?}");
    }
    wait_until("both users are applied", APPLY_TIMEOUT, || async {
        env.live_authorizations().await == 2
    })
    .await;

    let target = server.metrics_client().base_url().replace("http://", "");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: kitsync\n    metrics_path: /metrics\n    \
             static_configs:\n      - targets: [\"{target}\"]\n",
            alerts_path.display()
        ),
    )
    .unwrap();
    if promtool.is_file() {
        let out = Command::new(&promtool)
            .args(["check", "config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool check config: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let port = free_port();
    let log = dir.path().join("prometheus.log");
    let out = std::fs::File::create(&log).unwrap();
    let err = out.try_clone().unwrap();
    let child = Command::new(&bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let prom = Prometheus {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        log,
    };
    let started = Instant::now();
    wait_until("prometheus listens", Duration::from_secs(60), || async {
        tokio::net::TcpStream::connect(prom.addr).await.is_ok()
    })
    .await;
    // It listens before its storage is open, answering 503 until then.
    let prom_http = Kit::new(prom.addr, "");
    wait_until("prometheus is ready", Duration::from_secs(60), || async {
        prom_http
            .api("GET", "/-/ready", None, &[], None)
            .await
            .status
            == 200
    })
    .await;

    // The callbacks, every rule healthy, and no alert on the healthy kitsync.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (series, rules_ok) = loop {
        let series = prom.query("kitsync_callbacks_total").await;
        let accepted: f64 = series
            .iter()
            .filter(|s| s["metric"]["code"] == "000000")
            .map(value)
            .sum();
        let groups = prom.api("/api/v1/rules").await;
        let loaded: Vec<Value> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["name"] == "kitsync")
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect();
        let names: BTreeSet<String> = loaded
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect();
        let unhealthy: Vec<String> = loaded
            .iter()
            .filter(|r| r["health"] != "ok" || r["type"] != "alerting")
            .map(|r| format!("{} {} {}", r["name"], r["health"], r["lastError"]))
            .collect();
        let active = prom.api("/api/v1/alerts").await["alerts"]
            .as_array()
            .unwrap()
            .clone();
        if accepted == 3.0 && names == expected && unhealthy.is_empty() && active.is_empty() {
            break (series.len(), loaded.len());
        }
        assert!(
            Instant::now() < deadline,
            "after 90 s: {accepted} callbacks accepted (3 expected) in {} series; rules loaded \
             {names:?} (expected {expected:?}); not healthy: {unhealthy:?}; active alerts: \
             {active:#?}\n{}",
            series.len(),
            prom.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(series, 20, "5 endpoints × 4 result codes");
    let up = prom.query("up{job=\"kitsync\"}").await;
    assert_eq!(up.len(), 1);
    assert_eq!(value(&up[0]), 1.0);

    // kitsync stops: KitsyncDown goes pending for its target.
    server.kill9();
    let stopped = Instant::now();
    let deadline = stopped + Duration::from_secs(60);
    loop {
        let active = prom.api("/api/v1/alerts").await["alerts"]
            .as_array()
            .unwrap()
            .clone();
        if active.iter().any(|a| {
            a["labels"]["alertname"] == "KitsyncDown"
                && a["labels"]["instance"] == target.as_str()
                && a["labels"]["severity"] == "critical"
                && a["state"] == "pending"
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "KitsyncDown not pending 60 s after kitsync stopped: {active:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "prometheus: {rules_ok} rules loaded (health ok), kitsync_callbacks_total {series} series \
         (3 accepted), no alert on the healthy kitsync, KitsyncDown pending {:.1}s after it \
         stopped ({:.1}s in all)",
        stopped.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    drop(prom);
    drop(server);
    env.finish().await;
}
