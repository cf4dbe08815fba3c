//! The worker's retry policy against the real queue and store: the embedded queue on SQLite by
//! default, PostgreSQL with `KITSYNC_TEST_DATABASE_URL`, RabbitMQ with `KITSYNC_TEST_AMQP_URL`.
//!
//! - a poison message in a batch is isolated: the others are applied and acked, the culprit is
//!   retried and finally dead-lettered with its reason;
//! - an undecodable message is dead-lettered at once;
//! - a database that is down is *not* the message's fault: the batch is retried without
//!   counting attempts, and on shutdown it is released for immediate redelivery;
//! - `run` applies everything in several lanes and stops on the shutdown signal; what still
//!   waits for a lane then goes back to the queue at once, none of it applied or lost;
//! - a lane stuck on one tenant does not hold back the other lanes (PostgreSQL).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use kitsync_domain::{AuthChange, AuthOp, AuthUser, Command, KitTime, QueuedCallback};
use kitsync_queue::{Consumer, Delivery, OutgoingMessage, Queue, QueueSettings};
use kitsync_store::{Store, StoreSettings};
use kitsync_worker::{lane_of, Worker, WorkerSettings};
use migrations::testing::{amqp_url, fresh_db, TestDb};
use sea_orm::{ConnectionTrait, Statement};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

const TENANT: &str = "t-worker";
const APP: &str = "app-1";

struct Fixture {
    db: TestDb,
    queue: Queue,
    store: Store,
}

async fn fixture() -> Fixture {
    let db = fresh_db().await.expect("test database");
    let settings = QueueSettings {
        amqp_url: amqp_url(),
        name: format!("kitsync.wtest.{}", uuid::Uuid::new_v4().simple()),
        max_attempts: 3,
        retry_min_delay_ms: 50,
        retry_max_delay_ms: 200,
        poll_interval_ms: 20,
        lease_ms: 60_000,
        ..QueueSettings::default()
    };
    let queue = Queue::connect(&settings, db.conn.clone())
        .await
        .expect("queue connects");
    let store = Store::new(db.conn.clone(), StoreSettings::default());
    Fixture { db, queue, store }
}

impl Fixture {
    async fn teardown(self) {
        self.queue.delete_topology().await.expect("delete topology");
        self.queue.close().await;
        self.db.cleanup().await;
    }

    async fn publish(&self, id: &str, body: Vec<u8>) {
        self.queue
            .publish(OutgoingMessage {
                message_id: id.to_owned(),
                body,
                replay: None,
            })
            .await
            .expect("publish");
    }

    async fn publish_grant(&self, id: &str, version: i64, users: &[&str]) {
        self.publish(id, callback(id, grant(version, users))).await;
    }

    /// Makes applying any change that writes the member `user` fail, non-transiently.
    async fn poison_user(&self, user: &str) {
        let db = &self.db.conn;
        let backend = db.get_database_backend();
        let sql: Vec<String> = if self.db.is_postgres() {
            vec![
                format!(
                    "CREATE FUNCTION kitsync_test_poison() RETURNS trigger AS $$ BEGIN \
                     IF NEW.user_name = '{user}' THEN RAISE EXCEPTION 'poisoned user {user}'; END IF; \
                     RETURN NEW; END $$ LANGUAGE plpgsql"
                ),
                "CREATE TRIGGER kitsync_test_poison BEFORE INSERT OR UPDATE ON members \
                 FOR EACH ROW EXECUTE FUNCTION kitsync_test_poison()"
                    .to_owned(),
            ]
        } else {
            vec![format!(
                "CREATE TRIGGER kitsync_test_poison BEFORE INSERT ON members \
                 WHEN NEW.user_name = '{user}' BEGIN SELECT RAISE(ABORT, 'poisoned user {user}'); END"
            )]
        };
        for s in sql {
            db.execute(Statement::from_string(backend, s))
                .await
                .expect("create poison trigger");
        }
    }

    async fn authorised(&self) -> Vec<String> {
        let state = self.store.snapshot(TENANT).await.expect("snapshot");
        let mut names: Vec<String> = state
            .authorizations
            .into_iter()
            .map(|a| a.user_name)
            .collect();
        names.sort();
        names
    }

    async fn batch(&self, consumer: &Consumer, want: usize) -> Vec<Delivery> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < want {
            assert!(
                Instant::now() < deadline,
                "only {} of {want} messages delivered",
                got.len()
            );
            // `next_batch` waits for a first message; bound the wait so a missing message
            // fails the test instead of hanging it.
            if let Ok(batch) = tokio::time::timeout(
                Duration::from_millis(500),
                consumer.next_batch(want - got.len(), Duration::from_millis(50)),
            )
            .await
            {
                got.extend(batch.expect("next_batch"));
            }
        }
        got
    }
}

fn user(name: &str) -> AuthUser {
    AuthUser {
        name: Some(format!("User {name}")),
        ..AuthUser::named(name)
    }
}

fn grant(version: i64, users: &[&str]) -> Command {
    grant_in(TENANT, version, users)
}

fn grant_in(tenant: &str, version: i64, users: &[&str]) -> Command {
    Command::Auth(AuthChange {
        tenant_id: tenant.into(),
        instance_id: Some("inst-1".into()),
        app_id: APP.into(),
        op: AuthOp::Add,
        users: users.iter().map(|u| user(u)).collect(),
        test: false,
        version: KitTime(version),
        time_stamp: None,
    })
}

fn callback(id: &str, command: Command) -> Vec<u8> {
    QueuedCallback {
        message_id: id.to_owned(),
        received_at_ms: 1_700_000_000_000,
        replay: None,
        command,
    }
    .to_bytes()
    .expect("serialise")
}

type Running = tokio::task::JoinHandle<Result<(), kitsync_worker::WorkerError>>;

/// Runs `w` until [`stop`].
fn start(w: &Worker) -> (watch::Sender<bool>, Running) {
    let (tx, rx) = watch::channel(false);
    let w = w.clone();
    (tx, tokio::spawn(async move { w.run(rx).await }))
}

/// Signals shutdown and waits for `run` to return.
async fn stop(tx: &watch::Sender<bool>, running: Running) {
    tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("run stops on shutdown")
        .unwrap()
        .unwrap();
}

fn worker(store: Store, queue: Queue) -> Worker {
    Worker::new(
        store,
        queue,
        WorkerSettings {
            concurrency: 2,
            batch_size: 16,
            linger_ms: 5,
            transient_max_delay_ms: 100,
            dlx_drain_interval_secs: 1,
            max_transaction_rows: 0,
        },
    )
}

/// A batch above `max_transaction_rows` is applied in several transactions (whole messages
/// each), so one transaction never holds SQLite's write lock for long.
#[tokio::test]
async fn a_large_batch_is_applied_in_bounded_transactions() {
    let f = fixture().await;
    // 2 + 2 + 3 + 1 + 5 users, at most 4 rows a transaction: [m1, m2], [m3, m4], and m5
    // alone (a message is never split).
    f.publish_grant("m1", 1, &["a1", "a2"]).await;
    f.publish_grant("m2", 2, &["b1", "b2"]).await;
    f.publish_grant("m3", 3, &["c1", "c2", "c3"]).await;
    f.publish_grant("m4", 4, &["d1"]).await;
    f.publish_grant("m5", 5, &["e1", "e2", "e3", "e4", "e5"])
        .await;
    let w = Worker::new(
        f.store.clone(),
        f.queue.clone(),
        WorkerSettings {
            batch_size: 16,
            max_transaction_rows: 4,
            ..WorkerSettings::default()
        },
    );
    let (_tx, rx) = watch::channel(false);
    let consumer = f.queue.consumer("bounded").await.unwrap();
    let batch = f.batch(&consumer, 5).await;
    let report = w.process_delivery(&consumer, batch, &rx).await.unwrap();
    assert_eq!((report.transactions, report.acked), (3, 5), "{report:?}");
    assert_eq!(f.authorised().await.len(), 13);
    f.teardown().await;
}

/// A batch's transactions are acked a few at a time: on the embedded queue one ack
/// statement (and commit) for up to eight of them, and every message is acked before the
/// batch returns.
#[tokio::test]
async fn a_batchs_transactions_are_acked_together() {
    let f = fixture().await;
    for i in 0..20 {
        f.publish_grant(&format!("m{i:02}"), i + 1, &[&format!("u{i:02}")])
            .await;
    }
    // The embedded queue's acks are `DELETE`s: counted on a connection of their own.
    let deletes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut conn = f.db.conn.clone();
    let counter = std::sync::Arc::clone(&deletes);
    conn.set_metric_callback(move |info| {
        if info.statement.sql.starts_with("DELETE FROM queue_messages") {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let embedded = amqp_url().is_none();
    let queue = if embedded {
        Queue::connect(&QueueSettings::default(), conn)
            .await
            .unwrap()
    } else {
        f.queue.clone()
    };
    let w = Worker::new(
        f.store.clone(),
        queue.clone(),
        WorkerSettings {
            batch_size: 32,
            max_transaction_rows: 1,
            ..WorkerSettings::default()
        },
    );
    let (_tx, rx) = watch::channel(false);
    let consumer = queue.consumer("acks").await.unwrap();
    let batch = f.batch(&consumer, 20).await;
    let report = w.process_delivery(&consumer, batch, &rx).await.unwrap();
    assert_eq!((report.transactions, report.acked), (20, 20), "{report:?}");
    assert_eq!(f.authorised().await.len(), 20);
    assert_eq!(f.queue.depth().await.unwrap(), 0);
    if embedded {
        // 20 transactions: 8 + 8 + 4.
        assert_eq!(deletes.load(std::sync::atomic::Ordering::Relaxed), 3);
    }
    drop(consumer);
    f.teardown().await;
}

/// Each transaction's rows are built while the one before it is written: a failing
/// transaction in the middle neither loses nor mixes up the rows built for the next one.
#[tokio::test]
async fn a_failing_transaction_between_bounded_ones_leaves_the_next_intact() {
    let f = fixture().await;
    f.poison_user("mallory").await;
    // At most 2 rows a transaction: [m1], [m2], [m3], [m4].
    f.publish_grant("m1", 1, &["a1", "a2"]).await;
    f.publish_grant("m2", 2, &["mallory"]).await;
    f.publish_grant("m3", 3, &["c1", "c2", "c3"]).await;
    f.publish_grant("m4", 4, &["d1", "d2"]).await;
    let w = Worker::new(
        f.store.clone(),
        f.queue.clone(),
        WorkerSettings {
            batch_size: 16,
            max_transaction_rows: 2,
            ..WorkerSettings::default()
        },
    );
    let (_tx, rx) = watch::channel(false);
    let consumer = f.queue.consumer("bounded-poison").await.unwrap();
    let batch = f.batch(&consumer, 4).await;
    let report = w.process_delivery(&consumer, batch, &rx).await.unwrap();
    assert_eq!(
        (report.transactions, report.acked, report.retried),
        (3, 3, 1),
        "{report:?}"
    );
    assert_eq!(
        f.authorised().await,
        ["a1", "a2", "c1", "c2", "c3", "d1", "d2"]
    );
    // Each user's journal row names its own command's version.
    let db = &f.db.conn;
    let rows = db
        .query_all(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT entity_key, version FROM journal WHERE entity = 'member' ORDER BY id",
        ))
        .await
        .unwrap();
    let journal: Vec<(String, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get_by_index(0).unwrap(),
                r.try_get_by_index(1).unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, i64)> = [
        ("a1", 1),
        ("a2", 1),
        ("c1", 3),
        ("c2", 3),
        ("c3", 3),
        ("d1", 4),
        ("d2", 4),
    ]
    .into_iter()
    .map(|(u, v)| (u.to_owned(), v))
    .collect();
    assert_eq!(journal, expected);
    drop(consumer);
    f.teardown().await;
}

/// A stamped message whose key another message holds is acked, not applied, and counted.
#[tokio::test]
async fn a_replay_is_acked_unapplied_and_counted() {
    let f = fixture().await;
    let stamp = kitsync_domain::ReplayStamp {
        key: [9; 32],
        expires_at_ms: 1_700_000_060_000,
    };
    let stamped = |id: &str, version: i64, user: &str| {
        QueuedCallback {
            message_id: id.to_owned(),
            received_at_ms: 1_700_000_000_000,
            replay: Some(stamp),
            command: grant(version, &[user]),
        }
        .to_bytes()
        .unwrap()
    };
    f.publish("m1", stamped("m1", 1, "first")).await;
    // The replay carries the same command in reality; another user makes a wrong apply
    // visible here.
    f.publish("m2", stamped("m2", 1, "replayed")).await;
    let w = worker(f.store.clone(), f.queue.clone());
    let (_tx, rx) = watch::channel(false);
    let consumer = f.queue.consumer("replays").await.unwrap();
    let batch = f.batch(&consumer, 2).await;
    let report = w.process_delivery(&consumer, batch, &rx).await.unwrap();
    assert_eq!(report.acked, 2);
    assert_eq!(f.authorised().await, ["first"]);
    assert_eq!(w.stats().replayed.get(), 1);
    f.teardown().await;
}

#[tokio::test]
async fn poison_is_isolated_retried_then_dead_lettered() {
    let f = fixture().await;
    f.poison_user("mallory").await;
    f.publish_grant("m1", 1, &["alice"]).await;
    f.publish_grant("m2", 2, &["mallory"]).await;
    f.publish_grant("m3", 3, &["bob", "carol"]).await;

    let w = worker(f.store.clone(), f.queue.clone());
    let (_tx, rx) = watch::channel(false);
    let consumer = f.queue.consumer("poison-test").await.unwrap();

    // First delivery: the batch fails as a whole, is isolated, the good two are acked.
    let batch = f.batch(&consumer, 3).await;
    let report = w.process_delivery(&consumer, batch, &rx).await.unwrap();
    assert!(report.isolated);
    assert_eq!(
        (report.acked, report.retried, report.dead_lettered),
        (2, 1, 0)
    );
    assert_eq!(f.authorised().await, ["alice", "bob", "carol"]);

    // The culprit comes back (after its retry delay) until max_attempts, then dead letters.
    let mut dead = 0;
    for _ in 0..2 {
        let batch = f.batch(&consumer, 1).await;
        assert_eq!(batch[0].message_id, "m2");
        let report = w.process_delivery(&consumer, batch, &rx).await.unwrap();
        assert!(!report.isolated, "a single message needs no isolation");
        dead += report.dead_lettered;
    }
    assert_eq!(dead, 1, "dead-lettered on the last attempt");
    let letters = f.queue.dead_letters().list(false, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].message_id, "m2");
    assert_eq!(letters[0].attempts, 3);
    assert!(
        letters[0].error.contains("poisoned user mallory"),
        "reason kept: {}",
        letters[0].error
    );
    assert!(
        letters[0].error.contains("authSync"),
        "{}",
        letters[0].error
    );
    assert_eq!(w.stats().dead_lettered.get(), 1);
    assert_eq!(f.queue.depth().await.unwrap(), 0);
    drop(consumer);
    f.teardown().await;
}

#[tokio::test]
async fn undecodable_message_is_dead_lettered_at_once() {
    let f = fixture().await;
    f.publish("junk", b"{not json".to_vec()).await;
    f.publish_grant("ok", 1, &["alice"]).await;
    let w = worker(f.store.clone(), f.queue.clone());
    let (_tx, rx) = watch::channel(false);
    let consumer = f.queue.consumer("junk-test").await.unwrap();
    let batch = f.batch(&consumer, 2).await;
    let report = w.process_delivery(&consumer, batch, &rx).await.unwrap();
    assert_eq!((report.acked, report.dead_lettered), (1, 1));
    let letters = f.queue.dead_letters().list(false, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, 1, "never retried");
    assert!(
        letters[0].error.starts_with("undecodable message"),
        "{}",
        letters[0].error
    );
    assert_eq!(f.authorised().await, ["alice"]);
    drop(consumer);
    f.teardown().await;
}

#[tokio::test]
async fn database_outage_is_retried_uncounted_and_released_on_shutdown() {
    let f = fixture().await;
    f.publish_grant("m1", 1, &["alice"]).await;
    f.publish_grant("m2", 2, &["bob"]).await;

    // The worker's store has its own pool, closed: every apply fails as "unavailable".
    let broken = migrations::connect(&f.db.url, 1).await.unwrap();
    broken.clone().close().await.unwrap();
    let w = worker(
        Store::new(broken, StoreSettings::default()),
        f.queue.clone(),
    );
    let (tx, rx) = watch::channel(false);
    let consumer = f.queue.consumer("outage-test").await.unwrap();
    let batch = f.batch(&consumer, 2).await;

    let stats = w.stats();
    let shutdown = tokio::spawn(async move {
        // Let it retry a few times, then ask it to stop.
        let deadline = Instant::now() + Duration::from_secs(10);
        while stats.transient_errors.get() < 3 {
            assert!(Instant::now() < deadline, "no transient retries seen");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tx.send(true).unwrap();
    });
    let started = Instant::now();
    let result = w.process_delivery(&consumer, batch, &rx).await;
    shutdown.await.unwrap();
    assert!(
        matches!(result, Err(kitsync_worker::WorkerError::ShuttingDown)),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(w.stats().retried.get(), 0);
    assert_eq!(w.stats().dead_lettered.get(), 0);

    // Released, not failed: they come back at once (not after the 60 s lease, nor when the
    // channel dies), as first attempts, and a healthy worker applies them.
    let good = worker(f.store.clone(), f.queue.clone());
    let started = Instant::now();
    let batch = f.batch(&consumer, 2).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "released messages come back without waiting for the lease"
    );
    assert!(batch.iter().all(|d| d.attempts == 0), "{batch:?}");
    let (_tx2, rx2) = watch::channel(false);
    let report = good.process_delivery(&consumer, batch, &rx2).await.unwrap();
    assert_eq!(report.acked, 2);
    assert_eq!(f.authorised().await, ["alice", "bob"]);
    drop(consumer);
    f.teardown().await;
}

#[tokio::test]
async fn run_applies_everything_and_stops_on_shutdown() {
    let f = fixture().await;
    let mut expected = Vec::new();
    for i in 0..120 {
        let name = format!("user{i:03}");
        f.publish_grant(&format!("m{i}"), 1000 + i, &[&name]).await;
        expected.push(name);
    }
    let w = worker(f.store.clone(), f.queue.clone());
    let stats = w.stats();
    let (tx, running) = start(&w);
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.messages_acked.get() < 120 {
        assert!(
            Instant::now() < deadline,
            "acked {} of 120",
            stats.messages_acked.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop(&tx, running).await;
    assert_eq!(f.authorised().await, expected);
    assert!(stats.batches.get() < 120, "messages are applied in batches");
    assert_eq!(f.queue.depth().await.unwrap(), 0);
    f.teardown().await;
}

/// Shut down mid-stream: every lane finishes its batch in hand, and what was received but
/// still waited for a lane goes back to the queue at once (not after a lease), unapplied;
/// nothing is lost and nothing is applied without being acked.
#[tokio::test]
async fn shutdown_mid_stream_hands_back_what_waits_for_a_lane() {
    let f = fixture().await;
    let total = 300;
    for i in 0..total {
        let id = format!("m{i}");
        let tenant = format!("t-{}", i % 7);
        f.publish(
            &id,
            callback(&id, grant_in(&tenant, 1000 + i, &[&format!("u{i:03}")])),
        )
        .await;
    }
    let w = worker(f.store.clone(), f.queue.clone());
    let stats = w.stats();
    let (tx, running) = start(&w);
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.messages_acked.get() < 20 {
        assert!(Instant::now() < deadline, "nothing applied");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop(&tx, running).await;
    let acked = usize::try_from(stats.messages_acked.get()).unwrap();
    assert!(
        acked < total as usize,
        "everything was applied before the shutdown"
    );
    let mut applied = 0;
    for t in 0..7 {
        applied += f
            .store
            .snapshot(&format!("t-{t}"))
            .await
            .unwrap()
            .authorizations
            .len();
    }
    assert_eq!(applied, acked, "applied and acked differ");
    // The rest comes back to a new consumer at once, whole.
    let consumer = f.queue.consumer("after-shutdown").await.unwrap();
    let started = Instant::now();
    let rest = f.batch(&consumer, total as usize - acked).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut ids: Vec<&str> = rest.iter().map(|d| d.message_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total as usize - acked);
    consumer.ack(&rest).await.unwrap();
    drop(consumer);
    assert_eq!(f.queue.depth().await.unwrap(), 0);
    f.teardown().await;
}

#[tokio::test]
async fn closing_a_consumer_hands_its_messages_back_at_once() {
    let f = fixture().await;
    for i in 0..5 {
        f.publish_grant(&format!("m{i}"), 1 + i, &[&format!("u{i}")])
            .await;
    }
    let first = f.queue.consumer("close-test-1").await.unwrap();
    let held = f.batch(&first, 5).await;
    drop(held); // received, never settled
    first.close().await.unwrap();
    let second = f.queue.consumer("close-test-2").await.unwrap();
    let started = Instant::now();
    let batch = f.batch(&second, 5).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    second.ack(&batch).await.unwrap();
    drop(second);
    assert_eq!(f.queue.depth().await.unwrap(), 0);
    f.teardown().await;
}

/// Lanes do not wait for each other: while one lane is stuck on a tenant (its lock held by
/// another transaction), callbacks of tenants in the other lane keep being applied, however
/// many receives that takes. PostgreSQL only: SQLite applies in one lane.
#[tokio::test]
async fn a_stuck_lane_does_not_hold_back_the_other() {
    let f = fixture().await;
    if !f.db.is_postgres() {
        f.teardown().await;
        return;
    }
    let stuck = "t-stuck";
    let free = (0..)
        .map(|i| format!("t-free-{i}"))
        .find(|t| lane_of(t, 2) != lane_of(stuck, 2))
        .unwrap();
    // Another transaction holds the stuck tenant's lock (the row the store locks it by).
    let holder = sea_orm::TransactionTrait::begin(&f.db.conn).await.unwrap();
    holder
        .execute_unprepared(&format!(
            "INSERT INTO tenant_marks (tenant_id) VALUES ('{stuck}') \
             ON CONFLICT (tenant_id) DO UPDATE SET tenant_id = excluded.tenant_id"
        ))
        .await
        .unwrap();
    let w = worker(f.store.clone(), f.queue.clone());
    let stats = w.stats();
    let (tx, running) = start(&w);
    f.publish("s0", callback("s0", grant_in(stuck, 1, &["blocked"])))
        .await;
    // Then the other tenant's callbacks, one at a time, each applied before the next is sent:
    // every one is a receive of its own after the stuck one.
    for i in 0..5 {
        let id = format!("f{i}");
        f.publish(
            &id,
            callback(&id, grant_in(&free, 10 + i, &[&format!("u{i}")])),
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while stats.messages_acked.get() < u64::try_from(i + 1).unwrap() {
            assert!(
                Instant::now() < deadline,
                "callback {i} of {free} not applied while {stuck} is stuck ({} acked)",
                stats.messages_acked.get()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Released, the stuck lane goes on.
    holder.rollback().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.messages_acked.get() < 6 {
        assert!(
            Instant::now() < deadline,
            "{stuck} not applied once released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop(&tx, running).await;
    assert_eq!(f.queue.depth().await.unwrap(), 0);
    f.teardown().await;
}
