//! The operator endpoints: `/healthz`, `/readyz` and `/metrics` (Prometheus text 0.0.4).
//!
//! `/metrics` has two kinds of figures:
//! - *process counters*, recorded as work happens: the ingress's callbacks by endpoint and
//!   result code with their answer latency ([`IngressMetrics`]), the workers' apply latency,
//!   outcomes, failures and queue lag ([`WorkerStats`]). A process shows the parts it runs
//!   (`serve` both, `ingress` the callbacks, `worker` the apply side).
//! - *scrape-time gauges*, read from the queue and the database: backlog by state and the
//!   age of the oldest message, dead letters not replayed, held plans, and today's and the
//!   last 7 days' statistics (as `GET /api/v1/stats/overview`). They are the same whichever
//!   process answers (aggregate with `max`, not `sum`), and are cached for
//!   `metrics.cache_ms` (5 s) so frequent scrapes from several Prometheus servers cost the
//!   database one refresh; concurrent scrapes wait for the same refresh. A source that
//!   fails leaves its series out and shows `kitsync_metrics_source_up{source} 0`.
use crate::settings::MetricsSettings;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use kitsync_ingress::IngressMetrics;
use kitsync_metrics::{
    count, float_gauge, gauges, register, Family, FloatGauge, Labels, Registry, CONTENT_TYPE,
};
use kitsync_queue::{Backlog, Queue, QueueKind};
use kitsync_store::{utc8_day, PeriodFigures, Store};
use kitsync_worker::WorkerStats;
use sea_orm::{ConnectionTrait as _, DatabaseConnection};
use secrecy::ExposeSecret as _;
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the operator endpoints read.
pub struct Operations {
    db: DatabaseConnection,
    queue: Queue,
    store: Store,
    ingress: Option<Arc<IngressMetrics>>,
    worker: Option<Arc<WorkerStats>>,
    database_kind: &'static str,
    started_at: std::time::SystemTime,
    started: Instant,
    cache_for: Duration,
    /// SHA-256 of the bearer token `/metrics` requires, when one is configured.
    token_digest: Option<[u8; 32]>,
    cache: tokio::sync::Mutex<Option<(Instant, Scraped)>>,
}

/// The scrape-time figures of one refresh; `None` where the source failed.
#[derive(Clone, Default)]
struct Scraped {
    at_ms: i64,
    backlog: Option<Backlog>,
    dead_letters: Option<u64>,
    held_plans: Option<u64>,
    /// Today (UTC+8) and the last 7 days including today.
    stats: Option<[PeriodFigures; 2]>,
}

impl Operations {
    #[must_use]
    pub fn new(
        db: DatabaseConnection,
        queue: Queue,
        store: Store,
        settings: &MetricsSettings,
    ) -> Self {
        let database_kind = match db.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => "postgres",
            sea_orm::DatabaseBackend::Sqlite => "sqlite",
            sea_orm::DatabaseBackend::MySql => "mysql",
        };
        let token_digest = settings
            .bearer_token
            .as_ref()
            .map(|t| t.expose_secret().trim().to_owned())
            .filter(|t| !t.is_empty())
            .map(|t| Sha256::digest(t.as_bytes()).into());
        Self {
            db,
            queue,
            store,
            ingress: None,
            worker: None,
            database_kind,
            started_at: std::time::SystemTime::now(),
            started: Instant::now(),
            cache_for: Duration::from_millis(settings.cache_ms),
            token_digest,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// Renders the ingress's callback counters too.
    #[must_use]
    pub fn with_ingress(mut self, m: Arc<IngressMetrics>) -> Self {
        self.ingress = Some(m);
        self
    }

    /// Renders the workers' apply figures too.
    #[must_use]
    pub fn with_worker(mut self, s: Arc<WorkerStats>) -> Self {
        self.worker = Some(s);
        self
    }

    /// `Authorization: Bearer …` matches the configured token (or none is configured).
    /// Digests are compared, so the comparison's timing says nothing about the token.
    fn authorised(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.token_digest else {
            return true;
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        digest == *expected
    }

    async fn scraped(&self) -> Scraped {
        let mut cache = self.cache.lock().await;
        if let Some((at, s)) = cache.as_ref() {
            if at.elapsed() < self.cache_for {
                return s.clone();
            }
        }
        let s = self.refresh().await;
        *cache = Some((Instant::now(), s.clone()));
        s
    }

    async fn refresh(&self) -> Scraped {
        let backlog = self.queue.backlog().await.map_err(|e| {
            tracing::warn!(error = %e, "metrics: reading the queue backlog failed");
        });
        let dead_letters = self
            .queue
            .dead_letters()
            .count_pending()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "metrics: counting dead letters failed");
            });
        let held_plans = self.store.held_plans().await.map_err(|e| {
            tracing::warn!(error = %e, "metrics: counting held plans failed");
        });
        let now = chrono::Utc::now().timestamp_millis();
        let stats = self.statistics(utc8_day(now)).await.map_err(|e| {
            tracing::warn!(error = %e, "metrics: computing the statistics failed");
        });
        Scraped {
            at_ms: now,
            backlog: backlog.ok(),
            dead_letters: dead_letters.ok(),
            held_plans: held_plans.ok(),
            stats: stats.ok(),
        }
    }

    /// As `GET /api/v1/stats/overview`: the history brought up to date first.
    async fn statistics(
        &self,
        today: i64,
    ) -> Result<[PeriodFigures; 2], kitsync_store::StoreError> {
        self.store.catch_up_stats(50).await?;
        Ok([
            self.store.stats_period(today, today).await?,
            self.store.stats_period(today - 6, today).await?,
        ])
    }

    /// The whole exposition: the process's own metrics and the scrape-time gauges, in one
    /// registry made for this scrape.
    pub async fn render(&self) -> String {
        let s = self.scraped().await;
        let mut r = Registry::default();
        self.register_process(&mut r);
        if let Some(m) = &self.ingress {
            m.register(&mut r);
        }
        if let Some(w) = &self.worker {
            w.register(&mut r);
        }
        register_scraped(&mut r, &s, self.queue.kind());
        kitsync_metrics::encode(&r)
    }

    fn register_process(&self, r: &mut Registry) {
        gauges(
            r,
            "kitsync_build_info",
            "Always 1; the labels say which kitsync runs on which backends.",
            [(
                [
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("queue", self.queue.kind().as_str()),
                    ("database", self.database_kind),
                ],
                1,
            )],
        );
        let start = self
            .started_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        float_gauge(
            r,
            "kitsync_process_start_time_seconds",
            "When this process started, Unix seconds.",
            start,
        );
        float_gauge(
            r,
            "kitsync_uptime_seconds",
            "Seconds since this process started.",
            self.started.elapsed().as_secs_f64(),
        );
    }
}

fn register_scraped(r: &mut Registry, s: &Scraped, kind: QueueKind) {
    let queue_kind = kind.as_str();
    gauges(
        r,
        "kitsync_metrics_source_up",
        "1 when the last refresh of this source's scrape-time gauges succeeded, else 0 (and its series are left out).",
        [
            ("queue", s.backlog.is_some()),
            ("dead_letters", s.dead_letters.is_some()),
            ("plans", s.held_plans.is_some()),
            ("stats", s.stats.is_some()),
        ]
        .map(|(source, up)| ([("source", source)], i64::from(up))),
    );
    if let Some(b) = &s.backlog {
        let mut states = vec![("ready", b.ready), ("delayed", b.delayed)];
        if let Some(n) = b.in_flight {
            states.push(("in_flight", n));
        }
        gauges(
            r,
            "kitsync_queue_depth",
            "Messages not yet applied, by state: ready = deliverable now, delayed = waiting for a retry, in_flight = delivered and not yet acked (embedded queue only).",
            states
                .into_iter()
                .map(|(state, n)| ([("queue", queue_kind), ("state", state)], count(n))),
        );
        // The embedded queue knows every message's publish time; RabbitMQ does not tell
        // without consuming, so the series is absent there.
        if kind == QueueKind::Embedded {
            #[allow(clippy::cast_precision_loss)]
            let age = b.oldest_enqueued_at_ms.map_or(0.0, |at| {
                (s.at_ms.saturating_sub(at)).max(0) as f64 / 1000.0
            });
            let family = Family::<Labels<1>, FloatGauge>::default();
            family.get_or_create(&[("queue", queue_kind)]).set(age);
            register(
                r,
                "kitsync_queue_oldest_age_seconds",
                "Age of the oldest message not yet applied (0 when the queue is empty); embedded queue only.",
                family,
            );
        }
    }
    if let Some(n) = s.dead_letters {
        gauges(
            r,
            "kitsync_dead_letters",
            "Dead letters not replayed yet (kitsync deadletters list).",
            [([], count(n))],
        );
    }
    if let Some(n) = s.held_plans {
        gauges(
            r,
            "kitsync_held_plans",
            "Full department syncs held by the mass-deletion guard (kitsync plans list).",
            [([], count(n))],
        );
    }
    if let Some([day, week]) = &s.stats {
        let figures = [
            (
                "kitsync_projects_opened",
                "Production tenants with an authorised user at the end of the period (UTC+8 days), as GET /api/v1/stats/overview.",
                day.projects_opened,
                week.projects_opened,
            ),
            (
                "kitsync_projects_active",
                "Opened tenants with activity during the period.",
                day.projects_active,
                week.projects_active,
            ),
            (
                "kitsync_members_authorized",
                "Users authorised at the end of the period.",
                day.members_authorized,
                week.members_authorized,
            ),
            (
                "kitsync_members_active",
                "Authorised users with activity during the period.",
                day.members_active,
                week.members_active,
            ),
        ];
        for (name, help, d, w) in figures {
            gauges(
                r,
                name,
                help,
                [
                    ([("period", "day")], count(d)),
                    ([("period", "7d")], count(w)),
                ],
            );
        }
    }
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn routes(ops: Arc<Operations>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ops)
}

/// 200 when the database and the queue answer, 503 otherwise; the body says which.
/// 200 when the process can do its work, else 503; the body names what answers.
///
/// A process that takes Kit callbacks on RabbitMQ is ready while RabbitMQ answers, whatever
/// the database does: accepting a callback touches no database there (decision 0045), so a
/// PostgreSQL outage must not take it out of a load balancer — callbacks then wait in
/// RabbitMQ until the workers can apply them. Every other process needs both.
async fn readyz(State(ops): State<Arc<Operations>>) -> Response {
    let db_ok = ops.db.ping().await.is_ok();
    let q_ok = ops.queue.ping().await.is_ok();
    let body = serde_json::json!({ "database": db_ok, "queue": q_ok });
    let intake_only_needs_the_broker =
        ops.ingress.is_some() && ops.queue.kind() == kitsync_queue::QueueKind::Amqp;
    let status = if q_ok && (db_ok || intake_only_needs_the_broker) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(ops): State<Arc<Operations>>, headers: HeaderMap) -> Response {
    if !ops.authorised(&headers) {
        let mut res =
            (StatusCode::UNAUTHORIZED, "metrics: bearer token required\n").into_response();
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"kitsync metrics\""),
        );
        return res;
    }
    let body = ops.render().await;
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failure is a panic
    use super::*;

    async fn ready(ops: &Arc<Operations>) -> (StatusCode, serde_json::Value) {
        let res = readyz(State(Arc::clone(ops))).await;
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    /// `/readyz` is 503 as soon as the queue or the database stops answering, and names which.
    /// On the embedded queue (or RabbitMQ with `KITSYNC_TEST_AMQP_URL`) and SQLite (or
    /// PostgreSQL with `KITSYNC_TEST_DATABASE_URL`).
    #[tokio::test]
    async fn readyz_is_503_and_names_what_is_down() {
        let test_db = migrations::testing::fresh_db().await.unwrap();
        let db = test_db.conn.clone();
        let settings = kitsync_queue::QueueSettings {
            amqp_url: migrations::testing::amqp_url(),
            ..kitsync_queue::QueueSettings::default()
        };
        let queue = Queue::connect(&settings, db.clone()).await.unwrap();
        let store = Store::new(db.clone(), kitsync_store::StoreSettings::default());
        let ops = Arc::new(Operations::new(
            db.clone(),
            queue.clone(),
            store,
            &MetricsSettings::default(),
        ));
        let up = serde_json::json!({ "database": true, "queue": true });
        assert_eq!(ready(&ops).await, (StatusCode::OK, up));

        queue.close().await;
        let queue_down = serde_json::json!({ "database": true, "queue": false });
        assert_eq!(
            ready(&ops).await,
            (StatusCode::SERVICE_UNAVAILABLE, queue_down)
        );

        // The pool closed: every clone of the connection fails.
        db.close().await.unwrap();
        let (status, body) = ready(&ops).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["database"], false);
        test_db.cleanup().await;
    }

    /// A process that takes callbacks on RabbitMQ stays ready while only the database is
    /// down (its intake does not need it); on the embedded queue it does not.
    #[tokio::test]
    async fn an_ingress_on_rabbitmq_is_ready_without_its_database() {
        let test_db = migrations::testing::fresh_db().await.unwrap();
        let own = migrations::connect(&test_db.url, 2).await.unwrap();
        let settings = kitsync_queue::QueueSettings {
            amqp_url: migrations::testing::amqp_url(),
            name: format!("kitsync.readyz.{}", uuid::Uuid::new_v4().simple()),
            ..kitsync_queue::QueueSettings::default()
        };
        let queue = Queue::connect(&settings, own.clone()).await.unwrap();
        let store = Store::new(own.clone(), kitsync_store::StoreSettings::default());
        let ops = Arc::new(
            Operations::new(
                own.clone(),
                queue.clone(),
                store,
                &MetricsSettings::default(),
            )
            .with_ingress(Arc::default()),
        );
        own.close().await.unwrap();
        let (status, body) = ready(&ops).await;
        assert_eq!(body["database"], false);
        let want = match queue.kind() {
            kitsync_queue::QueueKind::Amqp => StatusCode::OK,
            kitsync_queue::QueueKind::Embedded => StatusCode::SERVICE_UNAVAILABLE,
        };
        assert_eq!((status, queue.kind()), (want, queue.kind()), "{body}");
        if queue.kind() == kitsync_queue::QueueKind::Amqp {
            queue.delete_topology().await.unwrap();
        }
        queue.close().await;
        test_db.cleanup().await;
    }
}
