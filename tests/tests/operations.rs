//! Operator endpoints of the real binary: `/healthz`, `/readyz` and `/metrics`.
//!
//! Runs on the embedded defaults and, when `KITSYNC_TEST_DATABASE_URL` /
//! `KITSYNC_TEST_AMQP_URL` are set, on PostgreSQL / RabbitMQ.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use std::collections::BTreeMap;
use std::time::Duration;
use tests::payload::{self, time, User};
use tests::{wait_until, Env, Kit, Signed, ALL_ORG_SYNC, AUTH_SYNC, TENANT_SYNC};

const APPLY_TIMEOUT: Duration = Duration::from_secs(45);

/// One scrape: every sample by its series (`name{labels}`), and the families' `# TYPE`s.
struct Scrape {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
    text: String,
}

impl Scrape {
    fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    fn value(&self, series: &str) -> f64 {
        self.get(series)
            .unwrap_or_else(|| panic!("no series {series} in:\n{}", self.text))
    }
}

async fn scrape(kit: &Kit, token: Option<&str>) -> Scrape {
    let r = kit.api("GET", "/metrics", token, &[], None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.raw));
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = String::from_utf8(r.raw).expect("UTF-8 exposition");
    let mut samples = BTreeMap::new();
    let mut types = BTreeMap::new();
    let mut helps = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "family {name} declared twice"
            );
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            helps.push(rest.split_once(' ').expect("# HELP name text").0.to_owned());
        } else if !line.is_empty() {
            let (series, value) = line.rsplit_once(' ').expect("series value");
            let v: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
            };
            assert!(
                samples.insert(series.to_owned(), v).is_none(),
                "duplicate series {series}"
            );
        }
    }
    // Every sample belongs to a declared family, and every family has its help.
    for series in samples.keys() {
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "{series} has no # TYPE");
    }
    let mut declared: Vec<_> = types.keys().cloned().collect();
    declared.sort();
    helps.sort();
    assert_eq!(
        declared, helps,
        "every family has one # HELP and one # TYPE"
    );
    Scrape {
        samples,
        types,
        text,
    }
}

/// Scrapes until `done` holds for a scrape, and returns that scrape.
async fn scrape_until(
    kit: &Kit,
    token: Option<&str>,
    what: &str,
    done: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let deadline = std::time::Instant::now() + APPLY_TIMEOUT;
    loop {
        let s = scrape(kit, token).await;
        if done(&s) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}; last scrape:\n{}",
            s.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn callbacks(endpoint: &str, code: &str) -> String {
    format!("kitsync_callbacks_total{{endpoint=\"{endpoint}\",code=\"{code}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_readiness_on_serve() {
    let mut env = Env::new("metrics").await;
    // Every scrape reads the queue and the database afresh.
    env.push_var("KITSYNC_METRICS__CACHE_MS", "0");
    let server = env.start("serve").await;
    let kit = server.kit();

    let r = kit.api("GET", "/healthz", None, &[], None).await;
    assert_eq!((r.status, r.raw.as_slice()), (200, b"ok".as_slice()));
    let r = kit.api("GET", "/readyz", None, &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        serde_json::json!({ "database": true, "queue": true })
    );

    // Before any callback: every endpoint × code series exists at 0.
    let s = scrape(&kit, None).await;
    for endpoint in [
        "tenantSync",
        "applicationSync",
        "authSync",
        "singleOrgSync",
        "allOrgSync",
    ] {
        for code in ["000000", "000001", "000002", "000005"] {
            assert_eq!(s.value(&callbacks(endpoint, code)), 0.0);
        }
    }
    assert_eq!(s.types["kitsync_callbacks_total"], "counter");
    assert_eq!(s.types["kitsync_apply_duration_seconds"], "histogram");
    assert_eq!(s.types["kitsync_queue_depth"], "gauge");

    // Accepted: a production tenant, its two authorised users, a 4-department snapshot,
    // then a snapshot deleting 3 of them, which the mass-deletion guard holds.
    let tenant = "t-metrics";
    let accepted = [
        (
            TENANT_SYNC,
            payload::tenant(tenant, "Metrics Co", 1, 0, &time(0)),
        ),
        (
            AUTH_SYNC,
            payload::auth(
                tenant,
                "app-1",
                1,
                &[
                    User::new("alice", "d1", "user", true),
                    User::new("bob", "d1", "admin", true),
                ],
                &time(1_000),
            ),
        ),
        (
            ALL_ORG_SYNC,
            payload::all_org(
                tenant,
                &[
                    ("d1", "One", ""),
                    ("d2", "Two", "d1"),
                    ("d3", "Three", "d1"),
                    ("d4", "Four", "d1"),
                ],
                &time(2_000),
            ),
        ),
    ];
    for (kind, body) in &accepted {
        let r = kit.send(kind, body).await;
        assert_eq!(r.code, "000000", "{kind}: {r:?}");
    }
    wait_until("the snapshot is applied", APPLY_TIMEOUT, || async {
        env.scalar(&format!(
            "SELECT COUNT(*) FROM departments WHERE tenant_id = '{tenant}' AND deleted = FALSE"
        ))
        .await
            == 4
    })
    .await;
    let r = kit
        .send(
            ALL_ORG_SYNC,
            &payload::all_org(tenant, &[("d1", "One", "")], &time(3_000)),
        )
        .await;
    assert_eq!(r.code, "000000", "{r:?}");

    // Refused: a wrong signature on authSync (000001) and a missing timestamp (000002).
    let body = payload::auth(
        tenant,
        "app-1",
        1,
        &[User::new("eve", "d1", "user", true)],
        &time(4_000),
    );
    let r = kit.with_key("not-the-key").send(AUTH_SYNC, &body).await;
    assert_eq!(r.code, "000001", "{r:?}");
    let unsigned_time = Signed {
        timestamp: None,
        ..kit.signed(&body)
    };
    let r = kit.send_signed(AUTH_SYNC, &unsigned_time).await.unwrap();
    assert_eq!(r.code, "000002", "{r:?}");

    // Drained: five messages acked (the held snapshot counts as applied-and-held).
    wait_until("the held plan is recorded", APPLY_TIMEOUT, || async {
        env.scalar("SELECT COUNT(*) FROM org_plans WHERE status = 'held'")
            .await
            == 1
    })
    .await;
    let queue = if env.is_amqp() { "amqp" } else { "embedded" };
    let ready = format!("kitsync_queue_depth{{queue=\"{queue}\",state=\"ready\"}}");
    let s = scrape_until(
        &kit,
        None,
        "the queue is drained and every message acked",
        |s| {
            let acked: f64 = ["applied", "duplicate", "stale", "superseded", "held"]
                .iter()
                .map(|o| {
                    s.value(&format!(
                        "kitsync_applied_messages_total{{outcome=\"{o}\"}}"
                    ))
                })
                .sum();
            // The lag is observed after the ack, which follows the outcome counts.
            s.value(&ready) == 0.0
                && acked >= 4.0
                && s.value("kitsync_queue_lag_seconds_count") >= 4.0
        },
    )
    .await;

    // Callbacks by endpoint and code.
    assert_eq!(s.value(&callbacks("tenantSync", "000000")), 1.0);
    assert_eq!(s.value(&callbacks("authSync", "000000")), 1.0);
    assert_eq!(s.value(&callbacks("allOrgSync", "000000")), 2.0);
    assert_eq!(s.value(&callbacks("authSync", "000001")), 1.0);
    assert_eq!(s.value(&callbacks("authSync", "000002")), 1.0);
    assert_eq!(s.value(&callbacks("tenantSync", "000001")), 0.0);
    assert_eq!(
        s.value("kitsync_callback_duration_seconds_count{endpoint=\"authSync\"}"),
        3.0
    );
    assert_eq!(
        s.value("kitsync_callback_duration_seconds_bucket{endpoint=\"authSync\",le=\"+Inf\"}"),
        3.0
    );
    assert!(s.value("kitsync_callback_duration_seconds_sum{endpoint=\"authSync\"}") > 0.0);

    // The apply side.
    assert!(s.value("kitsync_apply_duration_seconds_count") >= 1.0);
    assert!(s.value("kitsync_apply_duration_seconds_sum") > 0.0);
    assert!(s.value("kitsync_applied_messages_total{outcome=\"applied\"}") >= 3.0);
    assert_eq!(
        s.value("kitsync_applied_messages_total{outcome=\"held\"}"),
        1.0
    );
    assert_eq!(
        s.value("kitsync_apply_failures_total{kind=\"dead_lettered\"}"),
        0.0
    );
    assert!(s.value("kitsync_apply_batches_total") >= 1.0);
    assert!(s.value("kitsync_queue_lag_seconds_count") >= 4.0);
    // Buckets are cumulative.
    let buckets: Vec<f64> = s
        .samples
        .iter()
        .filter(|(k, _)| k.starts_with("kitsync_queue_lag_seconds_bucket"))
        .map(|(_, v)| *v)
        .collect();
    assert!(buckets.len() > 2);
    assert!(
        s.value("kitsync_queue_lag_seconds_bucket{le=\"+Inf\"}")
            == s.value("kitsync_queue_lag_seconds_count")
    );
    assert!(buckets
        .iter()
        .all(|b| *b <= s.value("kitsync_queue_lag_seconds_count")));

    // Scrape-time gauges.
    assert_eq!(
        s.value(&format!(
            "kitsync_queue_depth{{queue=\"{queue}\",state=\"delayed\"}}"
        )),
        0.0
    );
    let oldest = format!("kitsync_queue_oldest_age_seconds{{queue=\"{queue}\"}}");
    let in_flight = format!("kitsync_queue_depth{{queue=\"{queue}\",state=\"in_flight\"}}");
    if env.is_amqp() {
        assert_eq!(
            s.get(&oldest),
            None,
            "RabbitMQ does not tell the oldest message's age"
        );
        assert_eq!(s.get(&in_flight), None);
    } else {
        assert_eq!(s.value(&oldest), 0.0);
        assert_eq!(s.value(&in_flight), 0.0);
    }
    assert_eq!(s.value("kitsync_dead_letters"), 0.0);
    assert_eq!(s.value("kitsync_held_plans"), 1.0);
    for source in ["queue", "dead_letters", "plans", "stats"] {
        assert_eq!(
            s.value(&format!("kitsync_metrics_source_up{{source=\"{source}\"}}")),
            1.0
        );
    }
    // The statistics: one production tenant with two authorised users, no activity yet.
    let s = scrape_until(&kit, None, "the statistics see the authorisations", |s| {
        s.value("kitsync_members_authorized{period=\"day\"}") == 2.0
    })
    .await;
    for period in ["day", "7d"] {
        let g = |name: &str| s.value(&format!("{name}{{period=\"{period}\"}}"));
        assert_eq!(g("kitsync_projects_opened"), 1.0, "{period}");
        assert_eq!(g("kitsync_projects_active"), 0.0, "{period}");
        assert_eq!(g("kitsync_members_authorized"), 2.0, "{period}");
        assert_eq!(g("kitsync_members_active"), 0.0, "{period}");
    }
    let info = format!(
        "kitsync_build_info{{version=\"{}\",queue=\"{queue}\",database=\"{}\"}}",
        env!("CARGO_PKG_VERSION"),
        if env.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        }
    );
    assert_eq!(s.value(&info), 1.0);
    assert!(s.value("kitsync_uptime_seconds") > 0.0);

    // A dead letter counts until it is replayed.
    env.exec(
        "INSERT INTO dead_letters (message_id, body, attempts, error, source, dead_at, replayed_at) \
         VALUES ('m-dead', 'x', 5, 'boom', 'embedded', 1, NULL), \
                ('m-replayed', 'x', 5, 'boom', 'embedded', 1, 2)",
    )
    .await;
    assert_eq!(scrape(&kit, None).await.value("kitsync_dead_letters"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_metrics_listener_and_bearer_token() {
    let mut env = Env::new("metrics-split").await;
    env.extra_env.extend([
        ("KITSYNC_METRICS__ADDR".into(), "127.0.0.1:0".into()),
        (
            "KITSYNC_METRICS__BEARER_TOKEN".into(),
            "scrape-secret".into(),
        ),
        ("KITSYNC_METRICS__CACHE_MS".into(), "0".into()),
    ]);
    let ingress = env.start("ingress").await;
    let kit = ingress.kit();

    // No worker yet: the callback waits in the queue, and the backlog says so.
    let r = kit
        .send(
            TENANT_SYNC,
            &payload::tenant("t-split", "Split", 1, 0, &time(0)),
        )
        .await;
    assert_eq!(r.code, "000000", "{r:?}");
    let queue = if env.is_amqp() { "amqp" } else { "embedded" };
    let ready = format!("kitsync_queue_depth{{queue=\"{queue}\",state=\"ready\"}}");
    let oldest = format!("kitsync_queue_oldest_age_seconds{{queue=\"{queue}\"}}");
    let s = scrape_until(&kit, Some("scrape-secret"), "the message is counted", |s| {
        // The embedded queue also tells how long it has been waiting.
        s.value(&ready) == 1.0 && (env.is_amqp() || s.value(&oldest) > 0.05)
    })
    .await;
    if env.is_amqp() {
        assert_eq!(s.get(&oldest), None);
    } else {
        assert!(s.value(&oldest) < 60.0);
    }

    // The message waits at least this long before a worker exists, so the worker's queue
    // lag below is more than 0.05 s whichever queue (the RabbitMQ branch above does not wait).
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let worker = env.start("worker").await;
    assert!(worker.addr.is_none());
    let w = worker.metrics_client();

    // The token guards /metrics only, on every listener.
    for client in [&kit, &ingress.metrics_client(), &w] {
        let r = client.api("GET", "/metrics", None, &[], None).await;
        assert_eq!(r.status, 401);
        let r = client
            .api("GET", "/metrics", Some("wrong"), &[], None)
            .await;
        assert_eq!(r.status, 401);
        let r = client.api("GET", "/readyz", None, &[], None).await;
        assert_eq!(r.status, 200);
        let r = client.api("GET", "/healthz", None, &[], None).await;
        assert_eq!(r.status, 200);
    }
    // The metrics listener serves nothing else.
    let r = w.api("GET", "/api/v1/tenants", None, &[], None).await;
    assert_eq!(r.status, 404);

    // Each process shows the counters of what it runs; both show the shared gauges.
    // The lag is observed after the ack, which follows the applied count: wait for both.
    let ws = scrape_until(
        &w,
        Some("scrape-secret"),
        "the worker applied and acked it",
        |s| {
            s.value("kitsync_applied_messages_total{outcome=\"applied\"}") == 1.0
                && s.value(&ready) == 0.0
                && s.value("kitsync_queue_lag_seconds_count") == 1.0
        },
    )
    .await;
    assert!(ws.value("kitsync_queue_lag_seconds_sum") > 0.05);
    assert!(!ws.types.contains_key("kitsync_callbacks_total"));
    assert!(ws.value("kitsync_apply_duration_seconds_count") >= 1.0);
    assert_eq!(ws.value("kitsync_dead_letters"), 0.0);
    let is = scrape(&kit, Some("scrape-secret")).await;
    assert_eq!(is.value(&callbacks("tenantSync", "000000")), 1.0);
    assert!(!is.types.contains_key("kitsync_apply_duration_seconds"));
    assert_eq!(is.value("kitsync_held_plans"), 0.0);
}
