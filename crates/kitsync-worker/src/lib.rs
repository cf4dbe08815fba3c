//! The worker: consume batches from the queue, apply them to the store, ack after commit.
//!
//! - [`Worker::run`] runs one consume loop until the shutdown signal. A receiving task
//!   decodes messages and hands each to its tenant's lane; `concurrency` lanes (one on
//!   SQLite) apply side by side, each a task taking whatever waits for it, up to
//!   `batch_size` messages, as one batch. Lanes are split by tenant, so no two wait on each
//!   other's tenant locks, and never wait for each other otherwise. Each lane finishes its
//!   batch in hand before it stops (nothing acked is unapplied, nothing applied is lost: an
//!   unacked message is simply delivered again and applies as a duplicate).
//! - [`Worker::process_delivery`] handles one batch and is public so tests can drive it.
//! - A batch applied in several transactions (SQLite bounds them by rows) builds each
//!   transaction's rows while the one before it is written, and acks its messages a few
//!   transactions at a time, and all of them before the batch ends.
//!
//! Retry policy, in one place:
//! - *Transient* store errors (database unreachable, deadlock, serialisation failure, SQLite
//!   busy) are not the message's fault: the same batch is retried in-process with exponential
//!   backoff (`backon`, 50 ms doubling to `transient_max_delay_ms`, with jitter) for as long as
//!   it takes, without counting attempts; shutdown interrupts the wait and leaves the batch
//!   unacked for redelivery.
//! - Any other error fails the batch's transaction as a whole, so the batch is re-applied one
//!   message per transaction to isolate the culprit: the good ones are acked, the bad one goes
//!   to [`kitsync_queue::Consumer::fail`], which schedules a delayed retry (exponential per
//!   attempt) and dead-letters it with its reason after `queue.max_attempts`.
//! - A message that cannot even be decoded is dead-lettered at once: retrying cannot help.
//!
//! Each batch also records its callbacks' replay keys in the apply transaction (the durable
//! replay ledger): a callback whose key another message holds is a replay accepted by another
//! ingress process, and is acked without being applied (`outcome="replayed"`). A background
//! task deletes keys no replay can need any more.
//!
//! [`WorkerStats`] counts all of it (outcomes, failures, apply transaction latency, and how
//! long messages waited in the queue) for `/metrics`.
#![forbid(unsafe_code)]

use backon::{BackoffBuilder, ExponentialBuilder};
use kitsync_domain::time::now_ms;
use kitsync_domain::{Command, QueuedCallback};
use kitsync_metrics::{
    histogram, observe, register, Counter, Family, Histogram, Labels, Registry, LAG_BUCKETS,
    LATENCY_BUCKETS,
};
use kitsync_queue::{Consumer, Delivery, FailOutcome, Queue, QueueError, QueueKind};
use kitsync_store::{Outcome, Prepared, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often a worker deletes expired replay keys.
const FORGET_EVERY: Duration = Duration::from_secs(30);
/// How long after a key stops being needed it is deleted: covers processes whose clocks
/// differ by up to this much.
const FORGET_SLACK: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct WorkerSettings {
    /// Transactions applied side by side per worker process, each over its own tenants
    /// (PostgreSQL; on SQLite, which applies one transaction at a time, one).
    pub concurrency: usize,
    /// Messages applied per database transaction.
    pub batch_size: usize,
    /// How long to wait for a batch to fill once its first message arrived.
    pub linger_ms: u64,
    /// Cap of the in-process backoff while the database is unavailable.
    pub transient_max_delay_ms: u64,
    /// How often to move RabbitMQ dead-lettered messages into the dead-letter store.
    pub dlx_drain_interval_secs: u64,
    /// Rows (users of an authSync, departments of a full sync, else 1 per message) one apply
    /// transaction takes at most; a batch above it is applied in several transactions (a
    /// single message is never split). 0 (the default): 1 000 on SQLite, where a transaction holds
    /// the one write lock the ingress's queue inserts also need, so a long one would hold
    /// callbacks' answers back; unbounded on PostgreSQL.
    pub max_transaction_rows: usize,
}

/// `worker.max_transaction_rows` on SQLite by default: about 20 ms of applying on the
/// benchmark machine, so a callback's queue insert waits about that long at worst. Measured
/// with `kitsync bench pipeline --during-apply` (16 senders): 1 000 gave a sender p99 of
/// 29 ms with the apply 4 % slower than alone, 500 gave 23 ms but a quarter fewer members/s,
/// each transaction's fixed statements and commit weighing twice as much (decision 0056).
const SQLITE_TRANSACTION_ROWS: usize = 1_000;

/// Committed transactions of a batch whose messages are acked together: one ack statement
/// (and, on the embedded queue, one commit) for up to this many apply transactions.
const ACK_EVERY_TRANSACTIONS: usize = 8;

/// The rows a command writes, roughly: what bounds a transaction's length.
fn weight(c: &Command) -> usize {
    match c {
        Command::Auth(a) => a.users.len().max(1),
        Command::FullOrg(f) => f.orgs.len().max(1),
        _ => 1,
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 2,
            batch_size: 64,
            linger_ms: 5,
            transient_max_delay_ms: 10_000,
            dlx_drain_interval_secs: 30,
            max_transaction_rows: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("shutting down")]
    ShuttingDown,
}

/// Running totals, for logs, tests and `/metrics`.
///
/// The counters exposed by outcome or kind are handles into [`WorkerStats::register`]'s
/// families, taken once at start, so counting never looks a label set up.
#[derive(Debug)]
pub struct WorkerStats {
    pub messages_acked: Counter,
    pub applied: Counter,
    pub duplicates: Counter,
    pub stale: Counter,
    pub superseded: Counter,
    pub held: Counter,
    /// Replays discarded: their key was held by another message in the ledger.
    pub replayed: Counter,
    pub retried: Counter,
    pub dead_lettered: Counter,
    pub transient_errors: Counter,
    pub batches: Counter,
    /// Committed apply transactions (a batch, or one message while isolating a culprit).
    pub apply_duration: Histogram,
    /// From a message's first publish to its ack, for messages whose publish time is known.
    pub queue_lag: Histogram,
    outcomes: Family<Labels<1>, Counter>,
    failures: Family<Labels<1>, Counter>,
}

impl Default for WorkerStats {
    fn default() -> Self {
        let outcomes = Family::<Labels<1>, Counter>::default();
        let failures = Family::<Labels<1>, Counter>::default();
        let outcome = |o| outcomes.get_or_create_owned(&[("outcome", o)]);
        let failure = |k| failures.get_or_create_owned(&[("kind", k)]);
        Self {
            messages_acked: Counter::default(),
            applied: outcome("applied"),
            duplicates: outcome("duplicate"),
            stale: outcome("stale"),
            superseded: outcome("superseded"),
            held: outcome("held"),
            replayed: outcome("replayed"),
            transient_errors: failure("transient"),
            retried: failure("retried"),
            dead_lettered: failure("dead_lettered"),
            batches: Counter::default(),
            apply_duration: histogram(LATENCY_BUCKETS),
            queue_lag: histogram(LAG_BUCKETS),
            outcomes,
            failures,
        }
    }
}

impl WorkerStats {
    /// Registers the worker's families: apply latency, outcomes, failures, batches, lag.
    pub fn register(&self, r: &mut Registry) {
        register(
            r,
            "kitsync_apply_duration_seconds",
            "Duration of committed apply transactions (one batch, or one message while isolating a failure).",
            self.apply_duration.clone(),
        );
        register(
            r,
            "kitsync_applied_messages_total",
            "Messages applied and acked, by outcome (applied, duplicate, stale, superseded, held; \
             replayed = a replay discarded because another message holds its replay key).",
            self.outcomes.clone(),
        );
        register(
            r,
            "kitsync_apply_failures_total",
            "Apply failures: transient = a transaction retried in-process (database unavailable, \
             deadlock, busy); retried = a message sent back for a delayed retry; \
             dead_lettered = a message moved to the dead letters by this process.",
            self.failures.clone(),
        );
        register(
            r,
            "kitsync_apply_batches_total",
            "Batches applied by the workers of this process (a lane's share of what one take from the queue brought).",
            self.batches.clone(),
        );
        register(
            r,
            "kitsync_queue_lag_seconds",
            "Time from a callback being queued to its message being acked after apply.",
            self.queue_lag.clone(),
        );
    }

    /// Counts acked deliveries and how long each waited since it was first queued.
    fn acked(&self, deliveries: &[Delivery]) {
        self.messages_acked.inc_by(deliveries.len() as u64);
        // The clock the queue stamps `enqueued_at` with.
        let now = now_ms();
        for d in deliveries {
            if let Some(at) = d.enqueued_at() {
                let waited = u64::try_from(now.saturating_sub(at)).unwrap_or(0);
                observe(&self.queue_lag, Duration::from_millis(waited));
            }
        }
    }
}

/// [`Store::prepare`] of a group's callbacks; `None` if it panicked (the apply then builds
/// the rows itself, and meets the same panic where the lane reports it).
fn prepare(group: &[(Delivery, QueuedCallback)]) -> Option<Prepared> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Store::prepare(group.iter().map(|(_, q)| &q.command))
    }))
    .ok()
}

/// Deliveries of committed transactions not acked yet (see [`ACK_EVERY_TRANSACTIONS`]).
#[derive(Default)]
struct Unacked {
    deliveries: Vec<Delivery>,
    transactions: usize,
}

/// What one batch came to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    /// Apply transactions committed for the batch's groups (not counting isolation).
    pub transactions: usize,
    pub acked: usize,
    pub retried: usize,
    pub dead_lettered: usize,
    pub isolated: bool,
}

impl BatchReport {
    fn add(&mut self, other: &BatchReport) {
        self.transactions += other.transactions;
        self.acked += other.acked;
        self.retried += other.retried;
        self.dead_lettered += other.dead_lettered;
        self.isolated |= other.isolated;
    }
}

/// Splits decoded messages into `lanes` lanes by tenant (each tenant's messages in one lane,
/// in order), each lane into batches of at most `batch_size`; empty lanes are left out.
fn split_lanes<T>(
    decoded: Vec<(T, QueuedCallback)>,
    lanes: usize,
    batch_size: usize,
) -> Vec<Vec<Vec<(T, QueuedCallback)>>> {
    let mut out: Vec<Vec<Vec<(T, QueuedCallback)>>> =
        (0..lanes.max(1)).map(|_| Vec::new()).collect();
    for item in decoded {
        let lane = &mut out[lane_of(item.1.command.tenant_id(), lanes)];
        match lane.last_mut() {
            Some(batch) if batch.len() < batch_size => batch.push(item),
            _ => lane.push(vec![item]),
        }
    }
    out.retain(|lane| !lane.is_empty());
    out
}

/// The lane of a tenant among `lanes`: FNV-1a of its id, so the choice is the same in every
/// process.
#[must_use]
pub fn lane_of(tenant: &str, lanes: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tenant.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    usize::try_from(h % lanes.max(1) as u64).unwrap_or(0)
}

#[derive(Clone)]
pub struct Worker {
    store: Store,
    queue: Queue,
    settings: WorkerSettings,
    stats: Arc<WorkerStats>,
}

impl Worker {
    #[must_use]
    pub fn new(store: Store, queue: Queue, settings: WorkerSettings) -> Self {
        Self {
            store,
            queue,
            settings,
            stats: Arc::new(WorkerStats::default()),
        }
    }

    #[must_use]
    pub fn stats(&self) -> Arc<WorkerStats> {
        Arc::clone(&self.stats)
    }

    /// Runs the consume loop until `shutdown` turns true; in-flight batches finish first.
    ///
    /// # Errors
    /// A consumer could not be created (the queue is unreachable at start).
    pub async fn run(&self, shutdown: watch::Receiver<bool>) -> Result<(), WorkerError> {
        let mut tasks = tokio::task::JoinSet::new();
        let lanes = self.lanes();
        if self.store.is_sqlite() && self.settings.concurrency > 1 {
            tracing::info!(
                configured = self.settings.concurrency,
                "SQLite has one writer: applying one transaction at a time"
            );
        }
        let consumer = self
            .queue
            .consumer(&format!("kitsync-worker-{}", std::process::id()))
            .await?;
        let me = self.clone();
        let rx = shutdown.clone();
        tracing::debug!(lanes, "consume loop starting");
        tasks.spawn(async move { me.consume_loop(consumer, rx).await });
        if self.queue.kind() == QueueKind::Amqp {
            let me = self.clone();
            let rx = shutdown.clone();
            tasks.spawn(async move { me.drain_dlx_loop(rx).await });
        }
        let me = self.clone();
        let rx = shutdown.clone();
        tasks.spawn(async move { me.forget_replay_keys_loop(rx).await });
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "worker task panicked");
            }
        }
        Ok(())
    }

    /// Deletes the replay ledger's keys that no replay can need any more, every
    /// [`FORGET_EVERY`], [`FORGET_SLACK`] late so a process whose clock runs behind by less
    /// than that still finds the keys it needs.
    async fn forget_replay_keys_loop(&self, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FORGET_EVERY) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let horizon = now_ms()
                .saturating_sub(i64::try_from(FORGET_SLACK.as_millis()).unwrap_or(i64::MAX));
            match self.store.forget_replay_keys(horizon).await {
                Ok(n) => tracing::debug!(deleted = n, "forgot expired replay keys"),
                Err(e) => tracing::warn!(error = %e, "could not delete expired replay keys"),
            }
        }
    }

    async fn drain_dlx_loop(&self, mut shutdown: watch::Receiver<bool>) {
        let every = Duration::from_secs(self.settings.dlx_drain_interval_secs.max(1));
        loop {
            match self.queue.drain_dlx().await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    moved = n,
                    "moved broker dead-lettered messages to the dead-letter store"
                ),
                Err(e) => tracing::warn!(error = %e, "could not drain the dead-letter exchange"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    async fn consume_loop(&self, consumer: Consumer, shutdown: watch::Receiver<bool>) {
        let consumer = Arc::new(consumer);
        self.consume(&consumer, shutdown).await;
        // Hand back whatever is still unsettled (messages waiting for a lane), so another
        // worker (or this one after a restart) gets it now rather than when its lease expires.
        // Every lane has finished, so nothing else holds the consumer.
        let closed = match Arc::try_unwrap(consumer) {
            Ok(consumer) => consumer.close().await,
            Err(_) => Ok(()),
        };
        if let Err(e) = closed {
            tracing::warn!(error = %e, "could not release leased messages on shutdown; they come back when their lease expires");
        }
    }

    /// Receives, decodes and hands each message to its tenant's lane, while the lanes apply
    /// side by side (each a task of its own, see [`Worker::lane_loop`]), until shutdown.
    ///
    /// A lane takes whatever is waiting for it, up to `worker.batch_size` messages, as its
    /// next batch, so under load a lane's batches fill up while it applies the previous one,
    /// and no lane waits for another: receiving, decoding and every lane's statements overlap.
    /// Each lane's channel holds at most one batch; receiving waits while the lane a message
    /// goes to is full.
    async fn consume(&self, consumer: &Arc<Consumer>, shutdown: watch::Receiver<bool>) {
        let batch_size = self.settings.batch_size.max(1);
        let mut lanes = Vec::with_capacity(self.lanes());
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..self.lanes() {
            let (tx, rx) = tokio::sync::mpsc::channel(batch_size);
            lanes.push(tx);
            let (me, consumer, shutdown) = (self.clone(), Arc::clone(consumer), shutdown.clone());
            tasks.spawn(async move { me.lane_loop(&consumer, rx, &shutdown).await });
        }
        self.dispatch(consumer, &lanes, shutdown).await;
        // The lanes finish the batch in hand and stop.
        drop(lanes);
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "worker lane panicked");
            }
        }
    }

    /// The receiving side of [`Worker::consume`]: until shutdown, or until a lane has
    /// stopped.
    async fn dispatch(
        &self,
        consumer: &Consumer,
        lanes: &[tokio::sync::mpsc::Sender<(Delivery, QueuedCallback)>],
        mut shutdown: watch::Receiver<bool>,
    ) {
        let linger = Duration::from_millis(self.settings.linger_ms);
        let mut idle_backoff = self.transient_backoff();
        let want = self.settings.batch_size.max(1) * lanes.len();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let batch = tokio::select! {
                b = consumer.next_batch(want, linger) => b,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(e) => {
                    let wait = idle_backoff.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "cannot receive from the queue");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                    continue;
                }
            };
            idle_backoff = self.transient_backoff();
            for d in batch {
                let q = match QueuedCallback::from_bytes(&d.body) {
                    Ok(q) => q,
                    Err(e) => {
                        if let Err(e) = self.undecodable(consumer, d, &e).await {
                            // Still unsettled: it comes back (and is dead-lettered then).
                            tracing::warn!(error = %e, "could not dead-letter an undecodable message");
                        }
                        continue;
                    }
                };
                let lane = &lanes[lane_of(q.command.tenant_id(), lanes.len())];
                // What is not handed over stays unsettled: closing the consumer hands it back.
                tokio::select! {
                    sent = lane.send((d, q)) => if sent.is_err() { return },
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        }
    }

    /// Dead-letters a message that cannot be decoded: retrying cannot help.
    async fn undecodable(
        &self,
        consumer: &Consumer,
        d: Delivery,
        e: &(dyn std::fmt::Display + Sync),
    ) -> Result<(), QueueError> {
        tracing::error!(message_id = %d.message_id, error = %e, "undecodable message");
        consumer
            .dead_letter(d, &format!("undecodable message: {e}"))
            .await?;
        self.stats.dead_lettered.inc();
        Ok(())
    }

    /// One lane of [`Worker::consume`]: applies what the dispatcher hands it, a batch at a
    /// time, until the dispatcher stops or shutdown; the batch in hand is finished first, what
    /// still waits in the channel stays unsettled (closing the consumer hands it back).
    async fn lane_loop(
        &self,
        consumer: &Consumer,
        mut rx: tokio::sync::mpsc::Receiver<(Delivery, QueuedCallback)>,
        shutdown: &watch::Receiver<bool>,
    ) {
        let batch_size = self.settings.batch_size.max(1);
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < batch_size {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let mut report = BatchReport::default();
            match self
                .process_batch(consumer, batch, shutdown, &mut report)
                .await
            {
                Ok(()) | Err(WorkerError::ShuttingDown) => {}
                Err(e) => {
                    tracing::error!(error = %e, "batch left unacked; it will be delivered again");
                }
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    fn transient_backoff(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_millis(
                self.settings.transient_max_delay_ms.max(50),
            ))
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// Transactions applied side by side: `worker.concurrency` on PostgreSQL, one on SQLite
    /// (which applies one transaction at a time: a second would only queue for the write lock
    /// ahead of the ingress's inserts; measured, sender p99 132 ms with two, 57 ms with one,
    /// at the same members/s).
    fn lanes(&self) -> usize {
        if self.store.is_sqlite() {
            1
        } else {
            self.settings.concurrency.max(1)
        }
    }

    /// Applies what was taken from the queue: decodes it, splits it into
    /// `worker.concurrency` lanes by tenant (one on SQLite; a tenant always falls in the same
    /// lane, its messages in the order received) and applies the lanes side by side, each in batches of `worker.batch_size`
    /// messages, one transaction per batch (retrying transient failures), acking after
    /// commit; on a non-transient failure, a batch is isolated message by message.
    ///
    /// Lanes never share a tenant, so their transactions do not wait on each other's tenant
    /// locks: concurrent batches that each spanned every tenant would apply one after the
    /// other (measured: two consume loops over 64 tenants spent more time waiting for the
    /// other's locks than applying).
    ///
    /// # Errors
    /// [`WorkerError::ShuttingDown`] when shutdown interrupted a transient-retry wait (the
    /// rest stays unacked), or a queue error while acking/failing; the other lanes finish
    /// first.
    #[tracing::instrument(skip_all, fields(size = batch.len()))]
    pub async fn process_delivery(
        &self,
        consumer: &Consumer,
        batch: Vec<Delivery>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<BatchReport, WorkerError> {
        let mut report = BatchReport::default();
        let mut decoded: Vec<(Delivery, QueuedCallback)> = Vec::with_capacity(batch.len());
        let mut batch = batch.into_iter();
        while let Some(d) = batch.next() {
            match QueuedCallback::from_bytes(&d.body) {
                Ok(q) => decoded.push((d, q)),
                Err(e) => {
                    if let Err(e) = self.undecodable(consumer, d, &e).await {
                        // Nothing of this batch is applied: hand it all back now rather than
                        // hold it until the channel closes.
                        let left: Vec<Delivery> =
                            decoded.into_iter().map(|(d, _)| d).chain(batch).collect();
                        self.release(consumer, &left).await;
                        return Err(e.into());
                    }
                    report.dead_lettered += 1;
                }
            }
        }
        let lanes = split_lanes(decoded, self.lanes(), self.settings.batch_size.max(1));
        let done = futures_util::future::join_all(
            lanes
                .into_iter()
                .map(|batches| self.process_lane(consumer, batches, shutdown)),
        )
        .await;
        let mut first_err = None;
        for r in done {
            match r {
                Ok(r) => report.add(&r),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            None => Ok(report),
            Some(e) => Err(e),
        }
    }

    /// Applies one lane's batches in order; after a failed one, hands the rest back.
    async fn process_lane(
        &self,
        consumer: &Consumer,
        batches: Vec<Vec<(Delivery, QueuedCallback)>>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<BatchReport, WorkerError> {
        let mut report = BatchReport::default();
        let mut batches = batches.into_iter();
        while let Some(batch) = batches.next() {
            if let Err(e) = self
                .process_batch(consumer, batch, shutdown, &mut report)
                .await
            {
                let left: Vec<Delivery> = batches.flatten().map(|(d, _)| d).collect();
                self.release(consumer, &left).await;
                return Err(e);
            }
        }
        Ok(report)
    }

    /// Applies one batch: one transaction per group of at most `max_rows` rows (see
    /// `WorkerSettings`).
    async fn process_batch(
        &self,
        consumer: &Consumer,
        batch: Vec<(Delivery, QueuedCallback)>,
        shutdown: &watch::Receiver<bool>,
        report: &mut BatchReport,
    ) -> Result<(), WorkerError> {
        self.stats.batches.inc();
        let max_rows = self.max_transaction_rows();
        let mut groups: Vec<Vec<(Delivery, QueuedCallback)>> = Vec::new();
        let mut rows = 0usize;
        for (d, q) in batch {
            let weight = weight(&q.command);
            match groups.last_mut() {
                Some(group) if rows + weight <= max_rows => {
                    rows += weight;
                    group.push((d, q));
                }
                _ => {
                    rows = weight;
                    groups.push(vec![(d, q)]);
                }
            }
        }
        // Each group's rows are built (`Store::prepare`, CPU only) on a blocking thread while
        // the group before it is written: the lane's CPU and the database's overlap instead
        // of taking turns.
        let mut groups = groups.into_iter();
        // Applied, not yet acked: acked every few transactions and before this returns,
        // whatever happens.
        let mut unacked = Unacked::default();
        let mut next = groups.next().map(|g| {
            let prepared = prepare(&g);
            (g, prepared)
        });
        while let Some((group, prepared)) = next.take() {
            let ahead = groups.next().map(|g| {
                tokio::task::spawn_blocking(move || {
                    let prepared = prepare(&g);
                    (g, prepared)
                })
            });
            let mut applied = self
                .apply_group(consumer, group, prepared, shutdown, report, &mut unacked)
                .await;
            if applied.is_err() || ahead.is_none() || unacked.transactions >= ACK_EVERY_TRANSACTIONS
            {
                // Acked even when this group failed: the transactions before it committed.
                let acked = self.ack(consumer, &mut unacked, report).await;
                applied = applied.and(acked);
            }
            next = match ahead {
                // Only a runtime shutting down cancels it (a panic is caught inside): that
                // group's leases run out, and the rest is handed back now.
                Some(handle) => match handle.await {
                    Ok(prepared) => Some(prepared),
                    Err(_) => {
                        let acked = self.ack(consumer, &mut unacked, report).await;
                        let left: Vec<Delivery> = groups.flatten().map(|(d, _)| d).collect();
                        self.release(consumer, &left).await;
                        return applied.and(acked).and(Err(WorkerError::ShuttingDown));
                    }
                },
                None => None,
            };
            if let Err(e) = applied {
                let left: Vec<Delivery> = next
                    .into_iter()
                    .flat_map(|(g, _)| g)
                    .chain(groups.flatten())
                    .map(|(d, _)| d)
                    .collect();
                self.release(consumer, &left).await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// `worker.max_transaction_rows`, or its default for the database: 1 000 on SQLite,
    /// unbounded on PostgreSQL.
    fn max_transaction_rows(&self) -> usize {
        match self.settings.max_transaction_rows {
            0 if self.store.is_sqlite() => SQLITE_TRANSACTION_ROWS,
            0 => usize::MAX,
            n => n,
        }
    }

    /// Acks what `unacked` holds, in one statement.
    async fn ack(
        &self,
        consumer: &Consumer,
        unacked: &mut Unacked,
        report: &mut BatchReport,
    ) -> Result<(), WorkerError> {
        let deliveries = std::mem::take(&mut unacked.deliveries);
        unacked.transactions = 0;
        if deliveries.is_empty() {
            return Ok(());
        }
        consumer.ack(&deliveries).await?;
        self.stats.acked(&deliveries);
        report.acked += deliveries.len();
        Ok(())
    }

    /// Applies one group in one transaction and leaves it in `unacked`; on a non-transient
    /// failure, isolates the culprit message by message.
    async fn apply_group(
        &self,
        consumer: &Consumer,
        group: Vec<(Delivery, QueuedCallback)>,
        prepared: Option<Prepared>,
        shutdown: &watch::Receiver<bool>,
        report: &mut BatchReport,
        unacked: &mut Unacked,
    ) -> Result<(), WorkerError> {
        // Split without copying: the callbacks go to the store, the deliveries are settled.
        let (deliveries, callbacks): (Vec<Delivery>, Vec<QueuedCallback>) =
            group.into_iter().unzip();
        match self.apply_with_retry(&callbacks, prepared, shutdown).await {
            Ok(outcomes) => {
                report.transactions += 1;
                self.count(&outcomes);
                unacked.deliveries.extend(deliveries);
                unacked.transactions += 1;
                Ok(())
            }
            Err(WorkerError::Store(e)) if deliveries.len() > 1 => {
                tracing::warn!(error = %e, "batch failed; applying its messages one by one");
                report.isolated = true;
                let mut rest = deliveries.into_iter().zip(callbacks);
                while let Some((d, c)) = rest.next() {
                    if let Err(err) = self.one_by_one(consumer, d, c, shutdown, report).await {
                        let left: Vec<Delivery> = rest.map(|(d, _)| d).collect();
                        self.release(consumer, &left).await;
                        return Err(err);
                    }
                }
                Ok(())
            }
            Err(WorkerError::Store(e)) => {
                let (d, c) = deliveries
                    .into_iter()
                    .zip(callbacks)
                    .next()
                    .ok_or(WorkerError::ShuttingDown)?;
                self.fail(consumer, d, &c.command, &e, report).await
            }
            Err(other) => {
                self.release(consumer, &deliveries).await;
                Err(other)
            }
        }
    }

    /// Hands unsettled deliveries back to the queue at once (instead of waiting for a lease to
    /// expire or the channel to close). Best effort: if it fails, redelivery still happens.
    async fn release(&self, consumer: &Consumer, left: &[Delivery]) {
        if let Err(e) = consumer.release(left).await {
            tracing::warn!(error = %e, count = left.len(), "could not release deliveries; they come back when their lease expires");
        }
    }

    /// Applies one message in its own transaction; on shutdown or a queue error the message
    /// is released, on a permanent failure it is failed (retry or dead letter).
    async fn one_by_one(
        &self,
        consumer: &Consumer,
        d: Delivery,
        c: QueuedCallback,
        shutdown: &watch::Receiver<bool>,
        report: &mut BatchReport,
    ) -> Result<(), WorkerError> {
        match self
            .apply_with_retry(std::slice::from_ref(&c), None, shutdown)
            .await
        {
            Ok(outcomes) => {
                self.count(&outcomes);
                consumer.ack(std::slice::from_ref(&d)).await?;
                self.stats.acked(std::slice::from_ref(&d));
                report.acked += 1;
                Ok(())
            }
            Err(WorkerError::Store(e)) => self.fail(consumer, d, &c.command, &e, report).await,
            Err(other) => {
                self.release(consumer, std::slice::from_ref(&d)).await;
                Err(other)
            }
        }
    }

    async fn fail(
        &self,
        consumer: &Consumer,
        d: Delivery,
        c: &Command,
        e: &StoreError,
        report: &mut BatchReport,
    ) -> Result<(), WorkerError> {
        let reason = format!("{} for tenant {}: {e}", c.kind(), c.tenant_id());
        let message_id = d.message_id.clone();
        match consumer.fail(d, &reason).await? {
            FailOutcome::Retried { attempt, delay } => {
                tracing::warn!(%message_id, attempt, delay_ms = delay.as_millis() as u64, %reason, "message failed; will retry");
                self.stats.retried.inc();
                report.retried += 1;
            }
            FailOutcome::DeadLettered => {
                tracing::error!(%message_id, %reason, "message dead-lettered");
                self.stats.dead_lettered.inc();
                report.dead_lettered += 1;
            }
        }
        Ok(())
    }

    /// Applies in one transaction; transient failures are retried with backoff until they
    /// pass or shutdown is requested. Permanent failures are returned at once.
    async fn apply_with_retry(
        &self,
        callbacks: &[QueuedCallback],
        mut prepared: Option<Prepared>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Vec<Outcome>, WorkerError> {
        let mut backoff = self.transient_backoff();
        let mut shutdown = shutdown.clone();
        loop {
            let started = Instant::now();
            // A retry builds its rows again (with a fresh clock reading).
            let prepared = prepared
                .take()
                .unwrap_or_else(|| Store::prepare(callbacks.iter().map(|q| &q.command)));
            match self.store.apply_prepared(callbacks, prepared).await {
                Ok(outcomes) => {
                    observe(&self.stats.apply_duration, started.elapsed());
                    return Ok(outcomes);
                }
                Err(e) if e.is_transient() => {
                    self.stats.transient_errors.inc();
                    let wait = backoff.next().unwrap_or(Duration::from_secs(1));
                    tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "store unavailable; retrying the batch");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.wait_for(|s| *s) => return Err(WorkerError::ShuttingDown),
                    }
                }
                Err(e) => return Err(WorkerError::Store(e)),
            }
        }
    }

    fn count(&self, outcomes: &[Outcome]) {
        for o in outcomes {
            let c = match o {
                Outcome::Applied { .. } => &self.stats.applied,
                Outcome::Duplicate => &self.stats.duplicates,
                Outcome::Stale => &self.stats.stale,
                Outcome::Superseded => &self.stats.superseded,
                Outcome::Held { .. } => &self.stats.held,
                Outcome::Replayed => &self.stats.replayed,
            };
            c.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kitsync_domain::{AuthChange, AuthOp, AuthUser, KitTime};

    fn callback(tenant: &str, n: usize) -> (usize, QueuedCallback) {
        let command = Command::Auth(AuthChange {
            tenant_id: tenant.to_owned(),
            instance_id: None,
            app_id: "a".into(),
            op: AuthOp::Add,
            users: vec![AuthUser::named(format!("u{n}"))],
            test: false,
            version: KitTime(1),
            time_stamp: None,
        });
        let q = QueuedCallback {
            message_id: format!("m{n}"),
            received_at_ms: 0,
            replay: None,
            command,
        };
        (n, q)
    }

    #[test]
    fn a_tenant_stays_in_one_lane_in_order_and_batches_are_bounded() {
        let decoded: Vec<_> = (0..500)
            .map(|n| callback(&format!("t{}", n % 37), n))
            .collect();
        let lanes = split_lanes(decoded, 3, 16);
        assert!(lanes.len() > 1, "37 tenants fell in one lane of 3");
        let mut seen = Vec::new();
        let mut lane_of_tenant = std::collections::HashMap::new();
        for (i, lane) in lanes.iter().enumerate() {
            let mut last: std::collections::HashMap<&str, usize> = Default::default();
            for batch in lane {
                assert!(!batch.is_empty() && batch.len() <= 16);
                for (n, q) in batch {
                    let t = q.command.tenant_id();
                    assert_eq!(
                        *lane_of_tenant.entry(t.to_owned()).or_insert(i),
                        i,
                        "{t} in two lanes"
                    );
                    if let Some(prev) = last.insert(t, *n) {
                        assert!(prev < *n, "{t}: {n} after {prev}");
                    }
                    seen.push(*n);
                }
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..500).collect::<Vec<_>>());
        assert_eq!(split_lanes(vec![callback("t", 0)], 1, 64).len(), 1);
        assert!(split_lanes(Vec::<(usize, QueuedCallback)>::new(), 2, 64).is_empty());
    }
}
