//! One conformance suite, run against both adapters.
//!
//! The embedded variant always runs (SQLite, or PostgreSQL with `KITSYNC_TEST_DATABASE_URL`);
//! the RabbitMQ variant runs when `KITSYNC_TEST_AMQP_URL` is set and is skipped otherwise,
//! visibly (see [`broker`]): a skipped test cannot pass as a test that ran.
//! Every test gets its own database and its own queue names, so they run in parallel.
// Helpers outside `#[test]` functions are test code too: a panic is how they report failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use kitsync_queue::{
    Delivery, FailOutcome, OutgoingMessage, Published, Queue, QueueError, QueueKind, QueueSettings,
    ReplayKey, ReplayOutcome, ReplayStamp,
};
use kitsync_sql::audit::Actor;
use migrations::sea_orm::ConnectionTrait as _;
use migrations::testing::{amqp_url, fresh_db, TestDb};
use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Adapter {
    Embedded,
    Amqp,
}

struct Fixture {
    queue: Queue,
    settings: QueueSettings,
    db: TestDb,
}

fn test_settings() -> QueueSettings {
    QueueSettings {
        name: format!("kitsync.test.{}", uuid::Uuid::new_v4().simple()),
        max_attempts: 3,
        retry_min_delay_ms: 50,
        retry_max_delay_ms: 400,
        poll_interval_ms: 20,
        ..QueueSettings::default()
    }
}

/// A fresh database and a second pool on it, the test's own to close ("the database is gone").
async fn db_with_own_pool() -> (TestDb, migrations::sea_orm::DatabaseConnection) {
    let db = fresh_db().await.expect("test database");
    let own = migrations::connect(&db.url, 2).await.expect("second pool");
    (db, own)
}

/// The CI flag that turns a skipped RabbitMQ test into a failed one (`.ci/run` sets it
/// wherever it also sets `KITSYNC_TEST_AMQP_URL`).
const REQUIRE_AMQP: &str = "KITSYNC_CI_REQUIRE_AMQP";

/// The marker a skipped test writes; `.ci/run` counts it and refuses it where nothing may skip.
const SKIP_MARKER: &str = "kitsync-test-skipped:";

/// The broker for a RabbitMQ test, or `None`: the test is skipped, and says so.
///
/// Libtest has no run-time skip, so a test without a broker returns early and is counted as
/// passed. To keep that from passing silently, a skip
/// - writes `kitsync-test-skipped: <test>: <why>` straight to the process's stderr (not via
///   `eprintln!`, which the harness captures and drops for a passing test), so the line is in
///   every log, with or without `--nocapture`; `.ci/run` subtracts these from the passed count
///   and fails a leg that has one where RabbitMQ is configured;
/// - fails instead when `KITSYNC_CI_REQUIRE_AMQP=1` is set (`.ci/run` sets it in its
///   PostgreSQL + RabbitMQ leg), so a missing or misspelt broker URL there is a red test.
///
/// `#[ignore]` was the alternative; it is not used because it is fixed at compile time: the
/// README's single `cargo test --workspace` with `KITSYNC_TEST_AMQP_URL` set would then no longer
/// run these tests without `--ignored`.
fn broker() -> Option<String> {
    let url = amqp_url();
    if url.is_none() {
        let current = std::thread::current();
        let test = current.name().unwrap_or("a RabbitMQ test");
        let required = std::env::var(REQUIRE_AMQP).is_ok_and(|v| !matches!(v.trim(), "" | "0"));
        assert!(
            !required,
            "{test}: {REQUIRE_AMQP} is set but KITSYNC_TEST_AMQP_URL is not: \
             this RabbitMQ test would be skipped"
        );
        // Best effort: a lost marker line only makes the skip less visible, not a pass.
        let _ = writeln!(
            std::io::stderr().lock(),
            "{SKIP_MARKER} {test}: KITSYNC_TEST_AMQP_URL is unset"
        );
    }
    url
}

/// The adapter under test, or `None` when it is RabbitMQ and no broker is configured (the
/// test is then skipped, see [`broker`]).
async fn fixture(adapter: Adapter, tweak: impl FnOnce(&mut QueueSettings)) -> Option<Fixture> {
    let mut settings = test_settings();
    if adapter == Adapter::Amqp {
        settings.amqp_url = Some(broker()?);
    }
    tweak(&mut settings);
    let db = fresh_db().await.expect("test database");
    let queue = Queue::connect(&settings, db.conn.clone())
        .await
        .expect("queue connects");
    let expected = match adapter {
        Adapter::Embedded => QueueKind::Embedded,
        Adapter::Amqp => QueueKind::Amqp,
    };
    assert_eq!(queue.kind(), expected);
    Some(Fixture {
        queue,
        settings,
        db,
    })
}

impl Fixture {
    async fn teardown(self) {
        self.queue.delete_topology().await.expect("delete topology");
        self.queue.close().await;
        self.db.cleanup().await;
    }

    /// The `source` of the dead letters this adapter writes.
    fn source(&self) -> &'static str {
        self.queue.kind().as_str()
    }
}

fn msg(id: &str, body: &[u8]) -> OutgoingMessage {
    OutgoingMessage {
        message_id: id.to_owned(),
        body: body.to_vec(),
        replay: None,
    }
}

/// Receives until `n` messages arrived (acking none), failing after `within`.
async fn receive(
    consumer: &mut kitsync_queue::Consumer,
    n: usize,
    within: Duration,
) -> Vec<Delivery> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n {
        let batch = tokio::time::timeout_at(
            deadline,
            consumer.next_batch(n - got.len(), Duration::from_millis(5)),
        )
        .await
        .unwrap_or_else(|_| panic!("only {} of {n} messages arrived in {within:?}", got.len()))
        .expect("next_batch");
        assert!(!batch.is_empty(), "next_batch returned an empty batch");
        got.extend(batch);
    }
    got
}

/// The next delivery, failing after 10 s.
async fn receive_one(consumer: &mut kitsync_queue::Consumer) -> Delivery {
    receive(consumer, 1, Duration::from_secs(10))
        .await
        .remove(0)
}

/// Publishes `id` with `body`; the queue must take it.
async fn publish(queue: &Queue, id: &str, body: &[u8]) {
    queue.publish(msg(id, body)).await.expect("publish");
}

/// Publishes `id`, which must fail as unavailable (`expect_err`ing `why`) within `limit`.
async fn publish_fails_fast(queue: &Queue, id: &str, why: &str, limit: Duration) {
    let started = Instant::now();
    let err = queue.publish(msg(id, b"x")).await.expect_err(why);
    assert!(err.is_unavailable(), "{err}");
    assert!(started.elapsed() < limit, "{:?}", started.elapsed());
}

/// Asserts nothing is delivered within `quiet`.
async fn assert_nothing_within(consumer: &mut kitsync_queue::Consumer, quiet: Duration) {
    if let Ok(batch) = tokio::time::timeout(quiet, consumer.next_batch(10, Duration::ZERO)).await {
        let batch = batch.expect("next_batch");
        panic!(
            "unexpected deliveries: {:?}",
            batch.iter().map(|d| &d.message_id).collect::<Vec<_>>()
        );
    }
}

async fn wait_for_depth(queue: &Queue, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let depth = queue.depth().await.expect("depth");
        if depth == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "depth stayed {depth}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// 1. Concurrent publishes are all delivered exactly once, intact.

async fn publishes_are_delivered_once_and_intact(adapter: Adapter) {
    let Some(f) = fixture(adapter, |_| {}).await else {
        return;
    };
    const N: usize = 500;
    let body_of = |i: usize| {
        let mut b = format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 97)).into_bytes();
        b.extend_from_slice(&[0, 0xff, 0xfe, (i % 251) as u8]);
        b
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let q = f.queue.clone();
        let body = body_of(i);
        tasks.spawn(async move { q.publish(msg(&format!("m-{i}"), &body)).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("publish task").expect("publish");
    }

    // Three consumers compete for the messages, as worker loops do.
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let total = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut workers = tokio::task::JoinSet::new();
    for c in 0..3 {
        let consumer = f.queue.consumer(&format!("c{c}")).await.expect("consumer");
        let (seen, total) = (Arc::clone(&seen), Arc::clone(&total));
        workers.spawn(async move {
            while total.load(Ordering::SeqCst) < N {
                assert!(Instant::now() < deadline, "all messages within 60 s");
                let Ok(batch) = tokio::time::timeout(
                    Duration::from_millis(100),
                    consumer.next_batch(64, Duration::from_millis(5)),
                )
                .await
                else {
                    continue;
                };
                let batch = batch.expect("next_batch");
                assert!(
                    !batch.is_empty() && batch.len() <= 64,
                    "batch of {}",
                    batch.len()
                );
                {
                    let mut seen = seen.lock().expect("lock");
                    for d in &batch {
                        let i: usize = d.message_id.trim_start_matches("m-").parse().expect("id");
                        assert_eq!(d.body, body_of(i), "body of {}", d.message_id);
                        assert_eq!(d.attempts, 0);
                        *seen.entry(d.message_id.clone()).or_default() += 1;
                    }
                }
                consumer.ack(&batch).await.expect("ack");
                total.fetch_add(batch.len(), Ordering::SeqCst);
            }
        });
    }
    while let Some(w) = workers.join_next().await {
        w.expect("consumer task");
    }
    let seen = std::mem::take(&mut *seen.lock().expect("lock"));
    assert_eq!(seen.len(), N, "every message arrived");
    assert!(seen.values().all(|&n| n == 1), "no message arrived twice");
    wait_for_depth(&f.queue, 0).await;
    // Acked means gone: a fresh consumer finds nothing either.
    let mut again = f.queue.consumer("c2").await.expect("consumer");
    assert_nothing_within(&mut again, Duration::from_millis(300)).await;
    drop(again);
    f.teardown().await;
}

// ---------------------------------------------------------------------------------------
// 2. Retry with backoff, dead-lettering, replay.

async fn failures_retry_then_dead_letter_and_replay(adapter: Adapter) {
    let Some(f) = fixture(adapter, |_| {}).await else {
        return;
    };
    let body = b"{\"tenant\":\"t1\"}".to_vec();
    publish(&f.queue, "poison", &body).await;
    let mut consumer = f.queue.consumer("c").await.expect("consumer");

    let mut d = receive_one(&mut consumer).await;
    assert_eq!((d.message_id.as_str(), d.attempts), ("poison", 0));
    for attempt in 1..=2u32 {
        let failed_at = Instant::now();
        let outcome = consumer
            .fail(d, &format!("boom {attempt}"))
            .await
            .expect("fail");
        let delay = f.settings.retry_delay(attempt);
        assert_eq!(outcome, FailOutcome::Retried { attempt, delay });
        d = receive_one(&mut consumer).await;
        let waited = failed_at.elapsed();
        assert!(
            waited >= delay.mul_f64(0.8),
            "attempt {attempt} came back after {waited:?}, before its delay {delay:?}"
        );
        assert_eq!((d.message_id.as_str(), d.attempts), ("poison", attempt));
        assert_eq!(d.body, body);
    }
    let outcome = consumer.fail(d, "final boom").await.expect("fail");
    assert_eq!(outcome, FailOutcome::DeadLettered);
    assert_nothing_within(&mut consumer, Duration::from_millis(600)).await;

    let dl = f.queue.dead_letters();
    assert_eq!(dl.count_pending().await.expect("count"), 1);
    let listed = dl.list(false, 10).await.expect("list");
    assert_eq!(listed.len(), 1);
    let dead = &listed[0];
    assert_eq!(dead.message_id, "poison");
    assert_eq!(dead.body, body);
    assert_eq!(dead.attempts, 3);
    assert!(dead.error.contains("final boom"), "{}", dead.error);
    assert_eq!(dead.source, f.source());
    assert!(dead.enqueued_at.is_some_and(|at| at <= dead.dead_at));
    assert_eq!(dead.replayed_at, None);
    let json = serde_json::to_value(dead).expect("serialise");
    assert_eq!(json["body"], "{\"tenant\":\"t1\"}");

    assert_eq!(
        dl.replay(&Actor::Cli, dead.id).await.expect("replay"),
        ReplayOutcome::Replayed
    );
    let replayed = receive(&mut consumer, 1, Duration::from_secs(10)).await;
    assert_eq!(replayed[0].message_id, "poison");
    assert_eq!(replayed[0].attempts, 0, "a replay starts over");
    assert_eq!(replayed[0].body, body);
    consumer.ack(&replayed).await.expect("ack");
    assert_eq!(
        dl.replay(&Actor::Cli, dead.id).await.expect("replay twice"),
        ReplayOutcome::AlreadyReplayed
    );
    assert_eq!(
        dl.replay(&Actor::Cli, dead.id + 1000)
            .await
            .expect("replay"),
        ReplayOutcome::NotFound
    );
    assert!(dl
        .get(dead.id)
        .await
        .expect("get")
        .is_some_and(|d| d.replayed_at.is_some()));
    assert_eq!(dl.count_pending().await.expect("count"), 0);
    assert!(dl.list(false, 10).await.expect("list").is_empty());
    assert_eq!(dl.list(true, 10).await.expect("list").len(), 1);

    // Non-retryable: dead-lettered at once, then replayed in bulk.
    publish(&f.queue, "garbage", b"\xff not json").await;
    let d = receive_one(&mut consumer).await;
    consumer
        .dead_letter(d, "undecodable message")
        .await
        .expect("dead_letter");
    let dead = dl.list(false, 10).await.expect("list");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].message_id.as_str(), dead[0].attempts),
        ("garbage", 1)
    );
    assert_eq!(dead[0].error, "undecodable message");
    assert_eq!(dl.replay_all(&Actor::Cli).await.expect("replay_all"), 1);
    let back = receive(&mut consumer, 1, Duration::from_secs(10)).await;
    assert_eq!(back[0].message_id, "garbage");
    consumer.ack(&back).await.expect("ack");
    assert_eq!(dl.replay_all(&Actor::Cli).await.expect("replay_all"), 0);
    drop(consumer);
    f.teardown().await;
}

// ---------------------------------------------------------------------------------------
// 3. What a consumer does not settle comes back.

async fn unacked_messages_come_back(adapter: Adapter) {
    let Some(f) = fixture(adapter, |s| s.lease_ms = 300).await else {
        return;
    };
    for i in 0..3 {
        publish(&f.queue, &format!("u-{i}"), b"x").await;
    }
    let ids = |ds: &[Delivery]| {
        ds.iter()
            .map(|d| d.message_id.clone())
            .collect::<HashSet<_>>()
    };
    let want: HashSet<String> = (0..3).map(|i| format!("u-{i}")).collect();

    let mut crashed = f.queue.consumer("crashed").await.expect("consumer");
    let first = receive(&mut crashed, 3, Duration::from_secs(10)).await;
    assert_eq!(ids(&first), want);
    let dropped_at = Instant::now();
    drop(first);
    drop(crashed);

    let mut next = f.queue.consumer("next").await.expect("consumer");
    let again = receive(&mut next, 3, Duration::from_secs(10)).await;
    assert_eq!(ids(&again), want);
    assert!(
        again.iter().all(|d| d.attempts == 0),
        "a crash is not a failed attempt"
    );
    if adapter == Adapter::Embedded {
        assert!(
            dropped_at.elapsed() >= Duration::from_millis(200),
            "came back after {:?}, before the 300 ms lease ran out",
            dropped_at.elapsed()
        );
    }

    // Released deliveries come back at once, to any consumer.
    next.release(&again).await.expect("release");
    let released = receive(&mut next, 3, Duration::from_secs(5)).await;
    assert_eq!(ids(&released), want);
    next.ack(&released).await.expect("ack");
    assert_nothing_within(&mut next, Duration::from_millis(500)).await;
    wait_for_depth(&f.queue, 0).await;
    drop(next);
    f.teardown().await;
}

// ---------------------------------------------------------------------------------------
// 4. Publishing fails fast when the queue cannot take the message.

async fn publish_fails_fast_when_closed(adapter: Adapter) {
    let Some(f) = fixture(adapter, |s| s.publish_timeout_ms = 500).await else {
        return;
    };
    publish(&f.queue, "before", b"x").await;
    f.queue.delete_topology().await.expect("delete topology");
    f.queue.close().await;
    publish_fails_fast(&f.queue, "after", "closed", Duration::from_millis(800)).await;
    assert!(f.queue.ping().await.is_err());
    f.db.cleanup().await;
}

// ---------------------------------------------------------------------------------------
// 5. The backlog `/metrics` reports, by state.

async fn backlog_by_state(adapter: Adapter) {
    // Retries wait a minute, so a failed message stays `delayed` for the whole test.
    let Some(f) = fixture(adapter, |s| {
        s.retry_min_delay_ms = 60_000;
        s.retry_max_delay_ms = 60_000;
        s.prefetch = 1;
    })
    .await
    else {
        return;
    };
    let embedded = adapter == Adapter::Embedded;
    let empty = f.queue.backlog().await.expect("backlog");
    assert_eq!((empty.ready, empty.delayed), (0, 0));
    assert_eq!(empty.in_flight, embedded.then_some(0));
    assert_eq!(empty.oldest_enqueued_at_ms, None);

    let before = chrono::Utc::now().timestamp_millis();
    for i in 0..3 {
        publish(&f.queue, &format!("b-{i}"), b"x").await;
    }
    let after = chrono::Utc::now().timestamp_millis();
    wait_for_depth(&f.queue, 3).await;
    let b = f.queue.backlog().await.expect("backlog");
    assert_eq!((b.ready, b.delayed), (3, 0));
    if embedded {
        assert_eq!(b.in_flight, Some(0));
        let oldest = b.oldest_enqueued_at_ms.expect("oldest");
        assert!(
            (before..=after).contains(&oldest),
            "{before} <= {oldest} <= {after}"
        );
    } else {
        assert_eq!((b.in_flight, b.oldest_enqueued_at_ms), (None, None));
    }

    let mut consumer = f.queue.consumer("c").await.expect("consumer");
    let d = receive_one(&mut consumer).await;
    let outcome = consumer.fail(d, "boom").await.expect("fail");
    assert!(matches!(outcome, FailOutcome::Retried { attempt: 1, .. }));
    let held = receive(&mut consumer, 1, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let b = loop {
        let b = f.queue.backlog().await.expect("backlog");
        // RabbitMQ counts only ready messages: the one delivered (prefetch 1) is not among
        // them, and the broker settles counts asynchronously.
        if b.delayed == 1 && b.ready == 1 {
            break b;
        }
        assert!(Instant::now() < deadline, "backlog stayed {b:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if embedded {
        assert_eq!(b.in_flight, Some(1));
        assert!(b.oldest_enqueued_at_ms.is_some_and(|at| at >= before));
    } else {
        assert_eq!((b.in_flight, b.oldest_enqueued_at_ms), (None, None));
    }
    consumer.ack(&held).await.expect("ack");
    drop(consumer);
    f.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_publish_fails_fast_when_the_database_is_gone() {
    let (db, own) = db_with_own_pool().await;
    let settings = QueueSettings {
        publish_timeout_ms: 500,
        ..test_settings()
    };
    let queue = Queue::connect(&settings, own.clone()).await.expect("queue");
    publish(&queue, "ok", b"x").await;
    own.clone().close().await.expect("close the pool");
    publish_fails_fast(
        &queue,
        "lost",
        "database closed",
        Duration::from_millis(800),
    )
    .await;
    assert!(queue.ping().await.is_err());
    db.cleanup().await;
}

/// A claim whose bodies cannot be read hands its leases back at once: the messages are
/// claimable again, not held until their lease expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_claim_that_cannot_read_bodies_hands_the_leases_back() {
    let db = fresh_db().await.expect("test database");
    let queue = Queue::connect(&test_settings(), db.conn.clone())
        .await
        .expect("queue");
    publish(&queue, "m-1", b"x").await;
    let conn = &db.conn;
    let backend = conn.get_database_backend();
    let exec = |sql: &str| {
        conn.execute(migrations::sea_orm::Statement::from_string(
            backend,
            sql.to_owned(),
        ))
    };
    exec("ALTER TABLE queue_bodies RENAME TO queue_bodies_away")
        .await
        .unwrap();
    let consumer = queue.consumer("unreadable").await.expect("consumer");
    let claimed = tokio::time::timeout(
        Duration::from_secs(5),
        consumer.next_batch(1, Duration::ZERO),
    )
    .await
    .expect("the claim answers");
    assert!(claimed.is_err(), "the bodies cannot be read");
    let row = conn
        .query_one(migrations::sea_orm::Statement::from_string(
            backend,
            "SELECT COUNT(*) FROM queue_messages WHERE lease_owner IS NOT NULL".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.try_get_by_index::<i64>(0).unwrap(),
        0,
        "no lease is left"
    );
    exec("ALTER TABLE queue_bodies_away RENAME TO queue_bodies")
        .await
        .unwrap();
    let got = consumer.next_batch(1, Duration::ZERO).await.expect("claim");
    assert_eq!((got.len(), got[0].body.as_slice()), (1, &b"x"[..]));
    consumer.ack(&got).await.expect("ack");
    drop(consumer);
    queue.close().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_connect_fails_when_the_broker_is_down() {
    let db = fresh_db().await.expect("test database");
    let settings = QueueSettings {
        amqp_url: Some("amqp://guest:guest@127.0.0.1:1/%2f".into()),
        ..test_settings()
    };
    let started = Instant::now();
    let err = Queue::connect(&settings, db.conn.clone())
        .await
        .err()
        .expect("no broker on port 1");
    assert!(err.is_unavailable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    db.cleanup().await;
}

/// A TCP proxy in front of RabbitMQ that the test can make hang, go down and come back.
mod proxy {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinSet;

    pub struct Proxy {
        pub port: u16,
        upstream: String,
        paused: Arc<AtomicBool>,
        tasks: Option<tokio::task::JoinHandle<()>>,
    }

    impl Proxy {
        pub async fn start(upstream: &str) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let mut p = Self {
                port,
                upstream: upstream.to_owned(),
                paused: Arc::new(AtomicBool::new(false)),
                tasks: None,
            };
            p.serve(listener);
            p
        }

        fn serve(&mut self, listener: TcpListener) {
            let upstream = self.upstream.clone();
            let paused = Arc::clone(&self.paused);
            self.tasks = Some(tokio::spawn(async move {
                let mut conns = JoinSet::new();
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        continue;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    conns.spawn(pipe(cr, sw, Arc::clone(&paused)));
                    conns.spawn(pipe(sr, cw, Arc::clone(&paused)));
                }
            }));
        }

        /// Connections stay open but nothing gets through.
        pub fn hang(&self) {
            self.paused.store(true, Ordering::SeqCst);
        }

        pub fn resume(&self) {
            self.paused.store(false, Ordering::SeqCst);
        }

        /// Closes every connection and stops listening.
        pub async fn down(&mut self) {
            if let Some(t) = self.tasks.take() {
                t.abort();
                let _ = t.await;
            }
        }

        /// Listens again on the same port.
        pub async fn up(&mut self) {
            let listener = TcpListener::bind(("127.0.0.1", self.port))
                .await
                .expect("rebind");
            self.serve(listener);
        }
    }

    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        paused: Arc<AtomicBool>,
    ) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let Ok(n) = from.read(&mut buf).await else {
                return;
            };
            if n == 0 {
                return;
            }
            while paused.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
}

/// `amqp://u:p@host:port/vhost` → (`host:port`, the same URL pointing at `127.0.0.1:{port}`).
fn reroute(url: &str, port: u16) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("scheme");
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let (userinfo, hostport) = authority
        .rsplit_once('@')
        .map_or(("", authority), |(u, h)| (u, h));
    let upstream = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:5672")
    };
    let at = if userinfo.is_empty() { "" } else { "@" };
    (
        upstream,
        format!("{scheme}://{userinfo}{at}127.0.0.1:{port}/{path}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_publish_fails_fast_while_the_broker_is_away_and_reconnects_after() {
    let Some(real) = broker() else {
        return;
    };
    let (upstream, _) = reroute(&real, 0);
    let mut proxy = proxy::Proxy::start(&upstream).await;
    let (_, via_proxy) = reroute(&real, proxy.port);
    let Some(f) = fixture(Adapter::Amqp, |s| {
        s.amqp_url = Some(via_proxy);
        s.publish_timeout_ms = 500;
    })
    .await
    else {
        return;
    };
    let limit = Duration::from_millis(500 + 400);
    let mut confirmed = vec!["a-0".to_owned()];
    publish(&f.queue, "a-0", b"x").await;
    // A consumer that lives through the outage, as a worker's does.
    let consumer = f.queue.consumer("c").await.expect("consumer");

    // The broker hangs: the publish gives up on time.
    proxy.hang();
    publish_fails_fast(&f.queue, "hung", "hanging broker", limit).await;
    proxy.resume();
    publish_until_ok(&f.queue, "a-1").await;
    confirmed.push("a-1".into());

    // The broker goes away: publishes fail fast, no panic, no hang.
    proxy.down().await;
    for i in 0..5 {
        publish_fails_fast(&f.queue, &format!("down-{i}"), "broker down", limit).await;
    }
    assert!(f.queue.ping().await.is_err());

    // It comes back: the next publishes reconnect transparently.
    proxy.up().await;
    publish_until_ok(&f.queue, "a-2").await;
    confirmed.push("a-2".into());
    f.queue.ping().await.expect("ping after reconnect");

    // Nothing confirmed was lost, and the consumer recovered by itself (after reporting
    // the outage, as often as it was asked during it).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut got = HashSet::new();
    while !confirmed.iter().all(|id| got.contains(id)) {
        let next =
            tokio::time::timeout_at(deadline, consumer.next_batch(10, Duration::from_millis(20)))
                .await
                .unwrap_or_else(|_| panic!("confirmed messages arrive; got {got:?}"));
        match next {
            Ok(batch) => {
                got.extend(batch.iter().map(|d| d.message_id.clone()));
                consumer.ack(&batch).await.expect("ack");
            }
            Err(e) => {
                assert!(e.is_unavailable(), "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(consumer);
    f.teardown().await;
    proxy.down().await;
}

async fn publish_until_ok(queue: &Queue, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match queue.publish(msg(id, b"x")).await {
            Ok(p) => {
                assert_eq!(p, Published::Queued);
                return;
            }
            Err(e) => {
                assert!(e.is_unavailable(), "{e}");
                assert!(Instant::now() < deadline, "no reconnect: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_a_deleted_queue_is_an_error_not_a_silent_loss() {
    let Some(f) = fixture(Adapter::Amqp, |_| {}).await else {
        return;
    };
    f.queue.delete_topology().await.expect("delete topology");
    let err = f
        .queue
        .publish(msg("nowhere", b"x"))
        .await
        .expect_err("unroutable");
    assert!(matches!(err, QueueError::Amqp(_)), "{err}");
    // The next publish declares the topology again.
    f.queue
        .publish(msg("somewhere", b"x"))
        .await
        .expect("publish after redeclare");
    let mut consumer = f.queue.consumer("c").await.expect("consumer");
    let got = receive(&mut consumer, 1, Duration::from_secs(10)).await;
    assert_eq!(got[0].message_id, "somewhere");
    consumer.ack(&got).await.expect("ack");
    drop(consumer);
    f.teardown().await;
}

// ---------------------------------------------------------------------------------------
// 5. Replay stamps: the embedded queue records them with the row; RabbitMQ carries them to
//    the worker (which records them in its apply transaction, tested in the worker's suite).

/// A distinct replay key per label.
fn key(label: &str) -> ReplayKey {
    let mut k = [0u8; 32];
    for (i, b) in label.bytes().enumerate() {
        k[i % 32] ^= b.wrapping_add(i as u8);
    }
    k[31] ^= label.len() as u8;
    k
}

const EXPIRES: i64 = 1_800_000_060_000;

fn stamped(id: &str, label: &str) -> OutgoingMessage {
    OutgoingMessage {
        replay: Some(ReplayStamp {
            key: key(label),
            expires_at_ms: EXPIRES,
        }),
        ..msg(id, label.as_bytes())
    }
}

async fn publish_stamped(queue: &Queue, id: &str, label: &str) -> Published {
    queue.publish(stamped(id, label)).await.expect("publish")
}

/// The ids of the `n` messages in the queue, which must hold no more (leasing them, acking
/// none).
async fn queued_ids(queue: &Queue, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    // RabbitMQ counts a confirmed message as ready a moment later.
    while queue.depth().await.expect("depth") < n as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        queue.depth().await.expect("depth"),
        n as u64,
        "messages queued"
    );
    let mut consumer = queue.consumer("look").await.expect("consumer");
    let got = receive(&mut consumer, n, Duration::from_secs(10)).await;
    let mut ids: Vec<String> = got.iter().map(|d| d.message_id.clone()).collect();
    consumer.release(&got).await.expect("release");
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_refuses_replays_across_publishers_and_restarts() {
    let f = fixture(Adapter::Embedded, |_| {}).await.expect("embedded");
    assert_eq!(
        publish_stamped(&f.queue, "m-1", "k-1").await,
        Published::Queued
    );
    // Another message with the same key: a replay, and nothing queued.
    assert_eq!(
        publish_stamped(&f.queue, "m-2", "k-1").await,
        Published::Replayed
    );
    // The same message again (a dead letter replayed, a publish retried): still its own key.
    assert_eq!(
        publish_stamped(&f.queue, "m-1", "k-1").await,
        Published::Queued
    );
    // Unstamped messages are not asked about.
    publish(&f.queue, "plain", b"p").await;

    // Concurrent publishers of one key, group-committed together or not: exactly one wins.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let q = f.queue.clone();
        tasks.spawn(async move { publish_stamped(&q, &format!("c-{i}"), "contended").await });
    }
    let mut outcomes = Vec::new();
    while let Some(r) = tasks.join_next().await {
        outcomes.push(r.expect("task"));
    }
    let queued = outcomes.iter().filter(|p| **p == Published::Queued).count();
    assert_eq!(queued, 1, "{outcomes:?}");

    // Another process (or this one restarted) sharing the database sees the same keys.
    let other = Queue::connect(&f.settings, f.db.conn.clone())
        .await
        .expect("second queue");
    assert_eq!(
        publish_stamped(&other, "m-3", "k-1").await,
        Published::Replayed
    );
    assert_eq!(
        publish_stamped(&other, "m-4", "contended").await,
        Published::Replayed
    );
    assert_eq!(
        publish_stamped(&other, "m-5", "brand-new").await,
        Published::Queued
    );
    other.close().await;

    let ids = queued_ids(&f.queue, 4).await;
    assert_eq!(ids.len(), 4);
    assert!(
        ids.contains(&"m-1".to_owned()) && ids.contains(&"m-5".to_owned()),
        "{ids:?}"
    );
    assert!(
        !ids.iter()
            .any(|i| ["m-2", "m-3", "m-4"].contains(&i.as_str())),
        "{ids:?}"
    );
    f.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_records_each_key_with_its_message() {
    let f = fixture(Adapter::Embedded, |_| {}).await.expect("embedded");
    // Two keys published together, one of them twice: exactly one of its publishers owns it.
    // Which one is not fixed: on PostgreSQL two writers commit batches side by side, and
    // the two publishes of `k-a` may land in different ones.
    let (a, b, c) = tokio::join!(
        publish_stamped(&f.queue, "m-a", "k-a"),
        publish_stamped(&f.queue, "m-b", "k-b"),
        publish_stamped(&f.queue, "m-c", "k-a"),
    );
    assert_eq!(b, Published::Queued);
    let owner = match (a, c) {
        (Published::Queued, Published::Replayed) => "m-a",
        (Published::Replayed, Published::Queued) => "m-c",
        other => panic!("one owner of k-a expected: {other:?}"),
    };
    let rows =
        f.db.conn
            .query_all(migrations::sea_orm::Statement::from_string(
                f.db.conn.get_database_backend(),
                "SELECT message_id, expires_at FROM kit_replay_keys ORDER BY message_id",
            ))
            .await
            .expect("ledger rows");
    let rows: Vec<(String, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get("", "message_id").unwrap(),
                r.try_get("", "expires_at").unwrap(),
            )
        })
        .collect();
    let mut expected = vec![(owner.to_owned(), EXPIRES), ("m-b".to_owned(), EXPIRES)];
    expected.sort();
    assert_eq!(rows, expected);
    f.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_carries_stamps_to_the_worker() {
    let Some(f) = fixture(Adapter::Amqp, |_| {}).await else {
        return;
    };
    // The broker keeps no ledger: both copies are queued, and the worker discards one.
    assert_eq!(
        publish_stamped(&f.queue, "m-1", "k-1").await,
        Published::Queued
    );
    assert_eq!(
        publish_stamped(&f.queue, "m-2", "k-1").await,
        Published::Queued
    );
    let ids = queued_ids(&f.queue, 2).await;
    assert_eq!(ids, ["m-1", "m-2"]);
    f.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_stamped_publishes_fail_when_the_database_is_gone() {
    let (db, own) = db_with_own_pool().await;
    let queue = Queue::connect(&test_settings(), own.clone())
        .await
        .expect("queue");
    own.clone().close().await.expect("close");
    let err = queue
        .publish(stamped("m", "x"))
        .await
        .expect_err("database closed");
    assert!(matches!(err, QueueError::Unavailable(_)), "{err}");
    db.cleanup().await;
}

// ---------------------------------------------------------------------------------------
// 6. RabbitMQ's own dead-lettering ends up in the dead-letter store.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_broker_dead_letters_are_drained_into_the_store() {
    let Some(f) = fixture(Adapter::Amqp, |s| s.delivery_limit = 1).await else {
        return;
    };
    // A worker whose dead-letter store is down: the message is rejected without requeue
    // and the broker's dead-letter exchange keeps it.
    let cut_off = migrations::connect(&f.db.url, 2)
        .await
        .expect("second pool");
    let worker_queue = Queue::connect(&f.settings, cut_off.clone())
        .await
        .expect("queue");
    publish(&worker_queue, "rejected", b"r").await;
    let mut consumer = worker_queue.consumer("w").await.expect("consumer");
    let d = receive_one(&mut consumer).await;
    cut_off.clone().close().await.expect("close");
    consumer
        .dead_letter(d, "unparseable")
        .await
        .expect("falls back to the broker's dead-letter queue");

    // A message that crashes every worker hits the delivery limit.
    publish(&f.queue, "crash-loop", b"c").await;
    for _ in 0..2 {
        let d = receive(&mut consumer, 1, Duration::from_secs(10)).await;
        assert_eq!(d[0].message_id, "crash-loop");
        drop(d);
        drop(consumer);
        consumer = worker_queue.consumer("w").await.expect("consumer");
    }
    drop(consumer);
    worker_queue.close().await;

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut moved = 0;
    while moved < 2 {
        moved += f.queue.drain_dlx().await.expect("drain");
        assert!(
            Instant::now() < deadline,
            "only {moved} of 2 reached the dead-letter store"
        );
        if moved < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(f.queue.drain_dlx().await.expect("drain"), 0);
    let dead: HashMap<String, _> = f
        .queue
        .dead_letters()
        .list(false, 10)
        .await
        .expect("list")
        .into_iter()
        .map(|d| (d.message_id.clone(), d))
        .collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead["rejected"].source, "amqp-dlx");
    assert!(
        dead["rejected"].error.contains("rejected"),
        "{}",
        dead["rejected"].error
    );
    assert_eq!(dead["rejected"].body, b"r");
    assert!(
        dead["crash-loop"].error.contains("delivery_limit"),
        "{}",
        dead["crash-loop"].error
    );
    assert_eq!(f.queue.depth().await.expect("depth"), 0);
    f.teardown().await;
}

// ---------------------------------------------------------------------------------------

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Adapter::Embedded).await;
                }
            )*
        }
        mod amqp {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Adapter::Amqp).await;
                }
            )*
        }
    };
}

conformance!(
    publishes_are_delivered_once_and_intact,
    failures_retry_then_dead_letter_and_replay,
    unacked_messages_come_back,
    publish_fails_fast_when_closed,
    backlog_by_state,
);
