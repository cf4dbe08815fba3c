//! The embedded queue: the `queue_messages` table of the application's own database.
//!
//! - Publishes are group-committed: concurrent callers hand their message to a writer task
//!   that inserts whatever is pending (up to [`MAX_PUBLISH_BATCH`]) with one multi-row
//!   `INSERT` — one statement, so one transaction — and only then answers each caller.
//!   Under load this turns N commits into one; idle, it costs nothing extra.
//! - A message with a replay stamp records its key in `kit_replay_keys` in the same
//!   transaction as its row (the key with the message that owns it). A key already held by
//!   another message makes that publish [`Published::Replayed`]: nothing is queued, so every
//!   ingress process sharing the database refuses the replay, as does a restarted one.
//! - Consumers lease rows (`lease_owner` = a random id per consumer, `lease_until`), ack by
//!   deleting them, and fail by pushing `available_at` into the future. A consumer that dies
//!   leaves its lease to expire, and the rows are claimed again.
//! - Bodies live in `queue_bodies`, keyed by message id, written with their row and deleted
//!   with it, in the same transaction. A lease, release or retry updates only the small
//!   `queue_messages` row: SQLite rewrites a whole row on any update, and a claim of 64
//!   messages of 165 KB used to write 10 MB holding the write gate. A claim reads the bodies
//!   after its leases are committed, without the gate.
//! - On SQLite every write takes the file's [`WriteGate`] first (shared with the store of
//!   this process), so a publish waits for at most the transaction in progress instead of
//!   sleeping in SQLite's busy handler while a worker commits back to back.
//! - In-process consumers are woken by a [`Notify`] after each commit; consumers in other
//!   processes poll every `poll_interval_ms`.
use crate::dead_letters::{truncate, NewDeadLetter};
use crate::sql::{gather, int, ms};
use crate::{Delivery, FailOutcome, Handle, OutgoingMessage, Published, QueueError, QueueSettings};
use crate::{ReplayKey, ReplayStamp};
use kitsync_domain::time::now_ms;
use kitsync_sql::{Sql, WriteGate};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, TransactionTrait, Value,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Mutex, Notify};
use tokio::time::Instant;

/// Most messages inserted by one statement.
const MAX_PUBLISH_BATCH: usize = 256;
/// Most ids per `DELETE … IN (…)`.
const MAX_IDS_PER_STATEMENT: usize = 500;
/// `last_error` kept per retried row.
const MAX_LAST_ERROR_BYTES: usize = 1024;

struct PublishRequest {
    message: OutgoingMessage,
    done: oneshot::Sender<Result<Published, String>>,
}

struct Inner {
    db: DatabaseConnection,
    /// SQLite's one writer, shared with the store of this process (kitsync-sql's gate).
    gate: WriteGate,
    settings: QueueSettings,
    publishes: mpsc::Sender<PublishRequest>,
    new_work: Arc<Notify>,
    closed: AtomicBool,
}

/// The table-backed queue; cheap to clone.
#[derive(Clone)]
pub struct EmbeddedQueue {
    inner: Arc<Inner>,
}

impl EmbeddedQueue {
    /// Checks that the table exists and starts the publish writer(s).
    ///
    /// # Errors
    /// The database is unreachable or not migrated.
    pub async fn connect(
        settings: &QueueSettings,
        db: DatabaseConnection,
    ) -> Result<Self, QueueError> {
        db.execute(
            Sql::new(db.get_database_backend())
                .push("SELECT id FROM queue_messages WHERE 1 = 0")
                .take(),
        )
        .await
        .map_err(|e| QueueError::Unavailable(format!("embedded queue table: {e}")))?;
        let (tx, rx) = mpsc::channel(MAX_PUBLISH_BATCH * 8);
        let rx = Arc::new(Mutex::new(rx));
        let new_work = Arc::new(Notify::new());
        // SQLite has a single writer anyway; PostgreSQL gains from one batch committing
        // while the next one gathers.
        let writers = match db.get_database_backend() {
            DbBackend::Sqlite => 1,
            _ => 2,
        };
        let gate = WriteGate::of(&db);
        for _ in 0..writers {
            tokio::spawn(writer(
                db.clone(),
                gate.clone(),
                Arc::clone(&rx),
                Arc::clone(&new_work),
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                gate,
                settings: settings.clone(),
                publishes: tx,
                new_work,
                closed: AtomicBool::new(false),
            }),
        })
    }

    pub(crate) fn db(&self) -> &DatabaseConnection {
        &self.inner.db
    }

    /// `Ok(Published::Queued)` once the row is committed; `Ok(Published::Replayed)` when its
    /// replay key is held by another message (nothing queued).
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when the database fails or the commit does not happen
    /// within `publish_timeout_ms` (the row may still be committed later; downstream
    /// idempotency absorbs the resulting duplicate).
    pub async fn publish(&self, message: OutgoingMessage) -> Result<Published, QueueError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(QueueError::Unavailable("the queue is closed".into()));
        }
        let (done, answer) = oneshot::channel();
        let timeout = self.inner.settings.publish_timeout();
        let outcome = tokio::time::timeout(timeout, async {
            self.inner
                .publishes
                .send(PublishRequest { message, done })
                .await
                .map_err(|_| QueueError::Unavailable("the queue writer stopped".into()))?;
            match answer.await {
                Ok(Ok(published)) => Ok(published),
                Ok(Err(e)) => Err(QueueError::Unavailable(e)),
                Err(_) => Err(QueueError::Unavailable("the queue writer stopped".into())),
            }
        })
        .await;
        match outcome {
            Ok(result) => result,
            Err(_) => Err(QueueError::Unavailable(format!(
                "the database did not commit the message within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    /// A consumer with its own lease identity.
    #[must_use]
    pub fn consumer(&self, consumer_tag: &str) -> EmbeddedConsumer {
        EmbeddedConsumer {
            queue: Arc::clone(&self.inner),
            owner: format!("{consumer_tag}/{}", uuid::Uuid::new_v4().simple()),
            receiving: tokio::sync::Mutex::new(Receiving::default()),
        }
    }

    /// Messages that could be claimed right now.
    ///
    /// # Errors
    /// The database query failed.
    pub async fn depth(&self) -> Result<u64, QueueError> {
        let db = &self.inner.db;
        let row = db
            .query_one({
                let now = now_ms();
                let mut sql = Sql::new(db.get_database_backend());
                sql.push("SELECT COUNT(*) AS n FROM queue_messages WHERE ");
                ready(&mut sql, now);
                sql.build()
            })
            .await?;
        let n: i64 = match row {
            Some(r) => r.try_get("", "n")?,
            None => 0,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Every row by state (ready, waiting for a retry, leased to a consumer) and when the
    /// oldest was first queued, in one scan of the table (it holds only unsettled messages).
    ///
    /// # Errors
    /// The database query failed.
    pub async fn backlog(&self) -> Result<crate::Backlog, QueueError> {
        let db = &self.inner.db;
        let row = db
            .query_one({
                let now = now_ms();
                let mut sql = Sql::new(db.get_database_backend());
                sql.push(
                    "SELECT COUNT(*) AS total, COALESCE(SUM(CASE WHEN lease_until IS NOT NULL \
                     AND lease_until >= ",
                )
                .bind(now)
                .push(" THEN 1 ELSE 0 END), 0) AS leased, COALESCE(SUM(CASE WHEN ");
                ready(&mut sql, now);
                sql.push(
                    " THEN 1 ELSE 0 END), 0) AS ready, MIN(enqueued_at) AS oldest \
                     FROM queue_messages",
                );
                sql.build()
            })
            .await?;
        let Some(row) = row else {
            return Ok(crate::Backlog::default());
        };
        let n = |col: &str| -> Result<u64, QueueError> {
            Ok(u64::try_from(row.try_get::<i64>("", col)?).unwrap_or(0))
        };
        let (total, leased, ready) = (n("total")?, n("leased")?, n("ready")?);
        Ok(crate::Backlog {
            ready,
            delayed: total.saturating_sub(leased).saturating_sub(ready),
            in_flight: Some(leased),
            oldest_enqueued_at_ms: row.try_get("", "oldest")?,
        })
    }

    /// # Errors
    /// [`QueueError::Unavailable`] when closed or the database does not answer.
    pub async fn ping(&self) -> Result<(), QueueError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(QueueError::Unavailable("the queue is closed".into()));
        }
        self.inner
            .db
            .ping()
            .await
            .map_err(|e| QueueError::Unavailable(format!("database: {e}")))
    }

    /// Refuses further publishes; publishes already handed to the writer still complete.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
    }
}

/// Gathers concurrent publishes and commits them together until every queue handle is gone.
async fn writer(
    db: DatabaseConnection,
    gate: WriteGate,
    requests: Arc<Mutex<mpsc::Receiver<PublishRequest>>>,
    new_work: Arc<Notify>,
) {
    loop {
        // A caller that timed out has answered "unavailable" already: writing its message
        // would only create a duplicate of the marketplace's retry.
        // The turn at the write gate is taken once a publish is waiting, and the batch is
        // gathered after it: everything that arrived while an apply held the gate commits
        // in this one transaction, instead of the latecomers waiting for the next turn
        // behind the next apply.
        let (turn, batch) = {
            let mut rx = requests.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            let turn = gate.turn().await;
            let batch = gather(first, &mut rx, MAX_PUBLISH_BATCH, |r| r.done.is_closed());
            (turn, batch)
        };
        if batch.is_empty() {
            continue;
        }
        let result = insert_batch(&db, &batch).await;
        drop(turn);
        match result {
            Ok(published) => {
                if published.contains(&Published::Queued) {
                    new_work.notify_waiters();
                }
                let mut orphans = Vec::new();
                for (r, p) in batch.into_iter().zip(published) {
                    // The caller gave up waiting (and answered 000005): the key recorded for
                    // it would make the marketplace's retry look like a replay. Forget it;
                    // if the retry is queued too, the worker applies one of the two.
                    if r.done.send(Ok(p)).is_err() && p == Published::Queued {
                        orphans.extend(r.message.replay);
                    }
                }
                if !orphans.is_empty() {
                    forget(&db, &orphans).await;
                }
            }
            Err(e) => {
                for r in batch {
                    let _ = r.done.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Commits the batch's rows (and the replay keys of those that carry one, in the same
/// transaction); returns what became of each request, in order.
async fn insert_batch(
    db: &DatabaseConnection,
    batch: &[PublishRequest],
) -> Result<Vec<Published>, String> {
    let database = |e: sea_orm::DbErr| format!("database: {e}");
    let txn = db.begin().await.map_err(database)?;
    let published = if batch.iter().all(|r| r.message.replay.is_none()) {
        vec![Published::Queued; batch.len()]
    } else {
        claim_keys(&txn, batch).await.map_err(database)?
    };
    let queued: Vec<&PublishRequest> = batch
        .iter()
        .zip(&published)
        .filter(|(_, p)| **p == Published::Queued)
        .map(|(r, _)| r)
        .collect();
    if !queued.is_empty() {
        insert_rows(&txn, &queued).await.map_err(database)?;
    }
    txn.commit().await.map_err(database)?;
    Ok(published)
}

/// Deletes the keys of abandoned publishes. Best effort: if it fails, the marketplace's retry
/// of such a callback within the window is refused as a replay (its first copy is queued).
async fn forget(db: &DatabaseConnection, stamps: &[ReplayStamp]) {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("DELETE FROM kit_replay_keys WHERE (expires_at, mac) IN (VALUES ")
        .bind_rows(
            stamps
                .iter()
                .map(|s| -> [Value; 2] { [s.expires_at_ms.into(), s.key.to_vec().into()] }),
        )
        .push(")");
    if let Err(e) = db.execute(sql.build()).await {
        tracing::warn!(error = %e, count = stamps.len(), "could not forget the replay keys of abandoned publishes; their retries will be refused as replays");
    }
}

/// Inserts `requests`' messages, their rows and their bodies, with one multi-row statement
/// each (in the caller's transaction).
async fn insert_rows(
    txn: &DatabaseTransaction,
    requests: &[&PublishRequest],
) -> Result<(), sea_orm::DbErr> {
    let now = now_ms();
    let backend = txn.get_database_backend();
    let mut sql = Sql::new(backend);
    sql.push(
        "INSERT INTO queue_messages (message_id, attempts, available_at, enqueued_at) VALUES ",
    )
    .bind_rows(requests.iter().map(|r| -> [Value; 4] {
        [
            r.message.message_id.as_str().into(),
            0_i32.into(),
            now.into(),
            now.into(),
        ]
    }))
    // Publishing a message that is still queued is a no-op: same id, same message.
    .push(" ON CONFLICT (message_id) DO NOTHING");
    txn.execute(sql.build()).await?;
    let mut sql = Sql::new(backend);
    sql.push("INSERT INTO queue_bodies (message_id, body) VALUES ")
        .bind_rows(requests.iter().map(|r| -> [Value; 2] {
            [
                r.message.message_id.as_str().into(),
                r.message.body.clone().into(),
            ]
        }))
        .push(" ON CONFLICT (message_id) DO NOTHING");
    txn.execute(sql.build()).await?;
    Ok(())
}

/// Records the stamped requests' keys, each owned by its message; a request whose key is
/// held by another message (already, or by an earlier request of this batch) is a replay.
async fn claim_keys(
    txn: &DatabaseTransaction,
    batch: &[PublishRequest],
) -> Result<Vec<Published>, sea_orm::DbErr> {
    let stamped: Vec<(&ReplayStamp, &str)> = batch
        .iter()
        .filter_map(|r| {
            r.message
                .replay
                .as_ref()
                .map(|s| (s, r.message.message_id.as_str()))
        })
        .collect();
    // One row per key (PostgreSQL refuses to touch a row twice in one statement); the first
    // request names the owner.
    let mut owners: HashMap<(i64, ReplayKey), &str> = HashMap::with_capacity(stamped.len());
    for (s, id) in &stamped {
        owners.entry((s.expires_at_ms, s.key)).or_insert(id);
    }
    let mut rows: Vec<((i64, ReplayKey), &str)> = owners.iter().map(|(k, id)| (*k, *id)).collect();
    rows.sort_unstable();
    let key_row =
        |(at, key): &(i64, ReplayKey)| -> [Value; 2] { [(*at).into(), key.to_vec().into()] };
    let mut held: HashMap<(i64, ReplayKey), Option<String>> = HashMap::new();
    let backend = txn.get_database_backend();
    for chunk in rows.chunks(MAX_PUBLISH_BATCH) {
        let mut sql = Sql::new(backend);
        sql.push("INSERT INTO kit_replay_keys (expires_at, mac, message_id) VALUES ")
            .bind_rows(chunk.iter().map(|(k, id)| -> [Value; 3] {
                let [at, key] = key_row(k);
                [at, key, (*id).into()]
            }))
            .push(" ON CONFLICT (expires_at, mac) DO NOTHING");
        txn.execute(sql.build()).await?;
        // Who holds each key now: the batch's owner if the insert took, else whoever did.
        let mut sql = Sql::new(backend);
        sql.push("SELECT expires_at, mac, message_id FROM kit_replay_keys WHERE (expires_at, mac) IN (VALUES ")
            .bind_rows(chunk.iter().map(|(k, _)| key_row(k)))
            .push(")");
        for row in txn.query_all(sql.build()).await? {
            let at: i64 = row.try_get_by_index(0)?;
            let mac: Vec<u8> = row.try_get_by_index(1)?;
            let Ok(key) = ReplayKey::try_from(mac.as_slice()) else {
                continue;
            };
            held.insert((at, key), row.try_get_by_index(2)?);
        }
    }
    Ok(batch
        .iter()
        .map(|r| match &r.message.replay {
            None => Published::Queued,
            Some(s) => match held.get(&(s.expires_at_ms, s.key)) {
                Some(Some(owner)) if *owner == r.message.message_id => Published::Queued,
                _ => Published::Replayed,
            },
        })
        .collect())
}

/// Leases rows of the embedded queue; see [`crate::Consumer`].
///
/// Receiving takes the `receiving` lock; settling (ack, release, retry, dead letter) needs only
/// the lease owner, so it never waits for a receive in progress.
pub struct EmbeddedConsumer {
    queue: Arc<Inner>,
    owner: String,
    receiving: tokio::sync::Mutex<Receiving>,
}

/// The receiving side of a consumer.
#[derive(Default)]
struct Receiving {
    /// Claimed rows not yet returned, so a cancelled `next_batch` loses nothing.
    pending: Vec<Delivery>,
    /// The claim statement in flight, if any. It runs as its own task: a `next_batch` that
    /// is dropped mid-claim (shutdown) does not stop the database from committing the
    /// leases, so [`EmbeddedConsumer::close`] waits for it before clearing them.
    claiming: Option<tokio::task::JoinHandle<Result<Vec<Delivery>, QueueError>>>,
}

impl EmbeddedConsumer {
    pub(crate) async fn next_batch(
        &self,
        max: usize,
        linger: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let max = max.max(1);
        let poll = Duration::from_millis(self.queue.settings.poll_interval_ms.max(1));
        let mut r = self.receiving.lock().await;
        while r.pending.is_empty() {
            // Registered before the claim, so a commit between the claim and the wait
            // still wakes us.
            let queue = Arc::clone(&self.queue);
            let woken = queue.new_work.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let got = self.claim(&mut r, max).await?;
            if !got.is_empty() {
                r.pending = got;
                break;
            }
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
        if r.pending.len() < max && !linger.is_zero() {
            let deadline = Instant::now() + linger;
            loop {
                let queue = Arc::clone(&self.queue);
                let woken = queue.new_work.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                let last = tokio::select! {
                    () = &mut woken => false,
                    () = tokio::time::sleep_until(deadline) => true,
                };
                let want = max - r.pending.len();
                let more = self.claim(&mut r, want).await?;
                r.pending.extend(more);
                if last || r.pending.len() >= max || Instant::now() >= deadline {
                    break;
                }
            }
        }
        Ok(std::mem::take(&mut r.pending))
    }

    /// Claims up to `max` rows (see [`Receiving::claiming`] for why in a task of its own).
    async fn claim(&self, r: &mut Receiving, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let (queue, owner) = (Arc::clone(&self.queue), self.owner.clone());
        let claiming = r.claiming.insert(tokio::spawn(
            async move { claim(&queue, &owner, max).await },
        ));
        let claimed = claiming.await;
        r.claiming = None;
        claimed.map_err(|e| QueueError::Unavailable(format!("the claim task failed: {e}")))?
    }
}

/// Leases up to `max` available rows to `owner`, oldest first.
async fn claim(queue: &Inner, owner: &str, max: usize) -> Result<Vec<Delivery>, QueueError> {
    let db = &queue.db;
    let backend = db.get_database_backend();
    let now = now_ms();
    let lease_until = now.saturating_add(ms(Duration::from_millis(queue.settings.lease_ms)));
    // PostgreSQL: concurrent consumers skip each other's rows instead of queueing on
    // them. SQLite serialises writers, so the plain subquery is already exclusive.
    let lock = match backend {
        DbBackend::Postgres => "FOR UPDATE SKIP LOCKED",
        _ => "",
    };
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    let turn = queue.gate.turn().await;
    let mut sql = Sql::new(backend);
    sql.push("UPDATE queue_messages SET lease_owner = ")
        .bind(owner)
        .push(", lease_until = ")
        .bind(lease_until)
        .push(" WHERE id IN (SELECT id FROM queue_messages WHERE ");
    ready(&mut sql, now);
    sql.push(" ORDER BY id LIMIT ")
        .bind(limit)
        .push(" ")
        .push(lock)
        .push(") RETURNING id, message_id, attempts, enqueued_at");
    let rows = db.query_all(sql.build()).await.map_err(unavailable)?;
    drop(turn);
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let attempts: i32 = row.try_get("", "attempts")?;
        out.push(Delivery {
            message_id: row.try_get("", "message_id")?,
            // Read below.
            body: Vec::new(),
            attempts: u32::try_from(attempts).unwrap_or(0),
            enqueued_at: row.try_get("", "enqueued_at")?,
            handle: Handle::Embedded {
                id: row.try_get("", "id")?,
            },
        });
    }
    // The leases are ours: the bodies are read without the write gate. Should that fail, the
    // leases go back at once rather than hold the messages until they expire.
    let mut bodies = match read_bodies(db, &out).await {
        Ok(bodies) => bodies,
        Err(e) => {
            let ids = ids(&out)?;
            if let Err(unleased) = leased_rows(queue, owner, UNLEASE, &ids).await {
                tracing::warn!(error = %unleased, count = ids.len(), "could not hand claimed messages back; they come back when their lease expires");
            }
            queue.new_work.notify_waiters();
            return Err(e);
        }
    };
    for d in &mut out {
        // A row without its body cannot be decoded, and is dead-lettered as such.
        d.body = bodies.remove(&d.message_id).unwrap_or_default();
    }
    // RETURNING gives no order guarantee; consumers expect the oldest first.
    out.sort_by_key(|d| match d.handle {
        Handle::Embedded { id } => id,
        Handle::Amqp { .. } => 0,
    });
    Ok(out)
}

/// The head of [`leased_rows`] that hands leases back.
const UNLEASE: &str =
    "UPDATE queue_messages SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ";

/// Runs `head` (ending in `lease_owner = `) on `owner`'s rows among `ids`, a statement per
/// chunk of ids, at the write gate; the rows affected.
async fn leased_rows(
    queue: &Inner,
    owner: &str,
    head: &str,
    ids: &[i64],
) -> Result<u64, QueueError> {
    let db = &queue.db;
    let _turn = queue.gate.turn().await;
    let mut affected = 0_u64;
    for chunk in ids.chunks(MAX_IDS_PER_STATEMENT) {
        let mut sql = Sql::new(db.get_database_backend());
        sql.push(head)
            .bind(owner)
            .push(" AND id IN ")
            .bind_tuple(chunk.iter().copied());
        affected += db
            .execute(sql.build())
            .await
            .map_err(unavailable)?
            .rows_affected();
    }
    Ok(affected)
}

/// The bodies of `deliveries`, by message id (a statement per chunk).
async fn read_bodies(
    db: &DatabaseConnection,
    deliveries: &[Delivery],
) -> Result<HashMap<String, Vec<u8>>, QueueError> {
    let mut bodies = HashMap::with_capacity(deliveries.len());
    for chunk in deliveries.chunks(MAX_IDS_PER_STATEMENT) {
        let mut sql = Sql::new(db.get_database_backend());
        sql.push("SELECT message_id, body FROM queue_bodies WHERE message_id IN ")
            .bind_tuple(chunk.iter().map(|d| d.message_id.as_str()));
        for row in db.query_all(sql.build()).await.map_err(unavailable)? {
            bodies.insert(row.try_get_by_index(0)?, row.try_get_by_index(1)?);
        }
    }
    Ok(bodies)
}

/// Deletes the bodies of the messages `ids` (in the caller's transaction).
async fn delete_bodies(txn: &DatabaseTransaction, ids: &[String]) -> Result<(), sea_orm::DbErr> {
    for chunk in ids.chunks(MAX_IDS_PER_STATEMENT) {
        let mut sql = Sql::new(txn.get_database_backend());
        sql.push("DELETE FROM queue_bodies WHERE message_id IN ")
            .bind_tuple(chunk.iter().map(String::as_str));
        txn.execute(sql.build()).await?;
    }
    Ok(())
}

impl EmbeddedConsumer {
    /// Deletes this consumer's rows among the deliveries, and their bodies, in one
    /// transaction.
    pub(crate) async fn ack(&self, deliveries: &[Delivery]) -> Result<(), QueueError> {
        let ids = ids(deliveries)?;
        let _turn = self.queue.gate.turn().await;
        let txn = self.queue.db.begin().await.map_err(unavailable)?;
        let mut deleted: Vec<String> = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_IDS_PER_STATEMENT) {
            let mut sql = Sql::new(txn.get_database_backend());
            sql.push("DELETE FROM queue_messages WHERE lease_owner = ")
                .bind(self.owner.as_str())
                .push(" AND id IN ")
                .bind_tuple(chunk.iter().copied())
                .push(" RETURNING message_id");
            for row in txn.query_all(sql.build()).await.map_err(unavailable)? {
                deleted.push(row.try_get_by_index(0)?);
            }
        }
        delete_bodies(&txn, &deleted).await.map_err(unavailable)?;
        txn.commit().await.map_err(unavailable)?;
        lease_check(ids.len(), deleted.len() as u64)
    }

    pub(crate) async fn fail(&self, d: Delivery, error: &str) -> Result<FailOutcome, QueueError> {
        let attempt = d.attempts.saturating_add(1);
        if attempt >= self.queue.settings.attempts_cap() {
            self.dead_letter(d, attempt, error).await?;
            return Ok(FailOutcome::DeadLettered);
        }
        let [id] = ids(std::slice::from_ref(&d))?[..] else {
            return Err(QueueError::ForeignDelivery);
        };
        let delay = self.queue.settings.retry_delay(attempt);
        let db = &self.queue.db;
        let _turn = self.queue.gate.turn().await;
        let done = db
            .execute(
                Sql::new(db.get_database_backend())
                    .push("UPDATE queue_messages SET attempts = ")
                    .bind(int(attempt))
                    .push(", available_at = ")
                    .bind(now_ms().saturating_add(ms(delay)))
                    .push(", lease_owner = NULL, lease_until = NULL, last_error = ")
                    .bind(truncate(error, MAX_LAST_ERROR_BYTES))
                    .push(" WHERE id = ")
                    .bind(id)
                    .push(" AND lease_owner = ")
                    .bind(self.owner.as_str())
                    .take(),
            )
            .await
            .map_err(unavailable)?;
        lease_check(1, done.rows_affected())?;
        Ok(FailOutcome::Retried { attempt, delay })
    }

    /// Moves the row to `dead_letters` in one transaction: never both, never neither.
    pub(crate) async fn dead_letter(
        &self,
        d: Delivery,
        attempts: u32,
        error: &str,
    ) -> Result<(), QueueError> {
        let [id] = ids(std::slice::from_ref(&d))?[..] else {
            return Err(QueueError::ForeignDelivery);
        };
        let _turn = self.queue.gate.turn().await;
        let txn = self.queue.db.begin().await.map_err(unavailable)?;
        let backend = txn.get_database_backend();
        // Delete first: if the lease was lost, someone else owns the message now and the
        // transaction is abandoned without writing a dead letter.
        let gone = txn
            .execute(
                Sql::new(backend)
                    .push("DELETE FROM queue_messages WHERE id = ")
                    .bind(id)
                    .push(" AND lease_owner = ")
                    .bind(self.owner.as_str())
                    .take(),
            )
            .await?
            .rows_affected();
        lease_check(1, gone)?;
        delete_bodies(&txn, std::slice::from_ref(&d.message_id)).await?;
        NewDeadLetter::of(&d, attempts, error, "embedded")
            .save(&txn)
            .await?;
        txn.commit().await.map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn close(self) -> Result<(), QueueError> {
        // A claim cut short by shutdown still commits its leases: let it finish first.
        if let Some(claiming) = self.receiving.into_inner().claiming.take() {
            let _ = claiming.await;
        }
        let db = &self.queue.db;
        db.execute(
            Sql::new(db.get_database_backend())
                .push(UNLEASE)
                .bind(self.owner.as_str())
                .take(),
        )
        .await
        .map_err(unavailable)?;
        self.queue.new_work.notify_waiters();
        Ok(())
    }

    pub(crate) async fn release(&self, deliveries: &[Delivery]) -> Result<(), QueueError> {
        let ids = ids(deliveries)?;
        leased_rows(&self.queue, &self.owner, UNLEASE, &ids).await?;
        self.queue.new_work.notify_waiters();
        Ok(())
    }
}

/// `available_at <= now AND (lease_until IS NULL OR lease_until < now)`: a row that could be
/// claimed at `now`.
fn ready(sql: &mut Sql, now: i64) {
    sql.push("available_at <= ")
        .bind(now)
        .push(" AND (lease_until IS NULL OR lease_until < ")
        .bind(now)
        .push(")");
}

fn ids(deliveries: &[Delivery]) -> Result<Vec<i64>, QueueError> {
    deliveries
        .iter()
        .map(|d| match d.handle {
            Handle::Embedded { id } => Ok(id),
            Handle::Amqp { .. } => Err(QueueError::ForeignDelivery),
        })
        .collect()
}

fn lease_check(expected: usize, done: u64) -> Result<(), QueueError> {
    let lost = (expected as u64).saturating_sub(done);
    if lost == 0 {
        Ok(())
    } else {
        Err(QueueError::LeaseExpired(lost))
    }
}

fn unavailable(e: sea_orm::DbErr) -> QueueError {
    match e {
        sea_orm::DbErr::Conn(_) | sea_orm::DbErr::ConnectionAcquire(_) => {
            QueueError::Unavailable(format!("database: {e}"))
        }
        other => QueueError::Database(other),
    }
}
