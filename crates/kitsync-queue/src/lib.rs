//! The durable intake between the Kit callbacks and the workers: a queue port with two
//! adapters and the dead-letter store.
//!
//! The ingress answers the marketplace `000000` only after [`Queue::publish`] returned `Ok`,
//! which means *durable*: a RabbitMQ publisher confirm for a persistent message on a quorum
//! queue, or a committed row in the embedded queue. Workers take batches from a
//! [`Consumer`], apply them, and ack only after their own commit; a message they cannot
//! apply goes through [`Consumer::fail`] (delayed retry with a fixed per-attempt backoff,
//! then the dead-letter store). Bodies are opaque bytes here.
//!
//! A message may carry its callback's replay stamp ([`OutgoingMessage::replay`]). RabbitMQ
//! ignores it (the worker records it in the apply transaction); the embedded queue commits it
//! into the replay ledger with the queue row, in one transaction, and answers
//! [`Published::Replayed`] when another message holds the key already.
//!
//! Layout:
//! - `settings.rs` — [`QueueSettings`] and the retry schedule ([`QueueSettings::retry_delay`]);
//! - `amqp.rs` — [`AmqpQueue`]: quorum queue, per-attempt TTL retry queues, dead-letter
//!   exchange, confirm channels, lazy reconnect;
//! - `embedded.rs` — [`EmbeddedQueue`]: the `queue_messages` table (SQLite or PostgreSQL),
//!   group-committed publishes, leases;
//! - `dead_letters.rs` — [`DeadLetters`]: the `dead_letters` table both adapters write, list
//!   and replay;
//! - `sql.rs`, `error.rs` — raw-SQL helpers and [`QueueError`].
//!
//! [`Queue`] and [`Consumer`] dispatch over the two adapters with an enum (no trait objects);
//! the tables come from the `m20261122_000002_intake` migration.
#![forbid(unsafe_code)]

mod amqp;
mod dead_letters;
mod embedded;
mod error;
mod settings;
mod sql;

pub use amqp::{AmqpConsumer, AmqpQueue};
pub use dead_letters::{DeadLetter, DeadLetters, ReplayOutcome};
pub use embedded::{EmbeddedConsumer, EmbeddedQueue};
pub use error::QueueError;
pub use kitsync_domain::{ReplayKey, ReplayStamp};
pub use settings::{redact_url, QueueSettings};

use sea_orm::DatabaseConnection;
use std::sync::Arc;
use std::time::Duration;

/// The adapter behind a [`Queue`]: RabbitMQ or the embedded table queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueKind {
    Amqp,
    Embedded,
}

impl QueueKind {
    /// `"amqp"` or `"embedded"`: the `queue` label of the metrics and the startup log line.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            QueueKind::Amqp => "amqp",
            QueueKind::Embedded => "embedded",
        }
    }
}

impl std::fmt::Display for QueueKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message to queue.
#[derive(Clone, Debug)]
pub struct OutgoingMessage {
    /// Unique per message (at most 255 bytes); kept across retries and replays.
    pub message_id: String,
    pub body: Vec<u8>,
    /// The callback's replay stamp, if it has one: the embedded queue records it with the
    /// row (RabbitMQ leaves it to the worker).
    pub replay: Option<ReplayStamp>,
}

/// What [`Queue::publish`] did with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    /// Durably queued.
    Queued,
    /// Not queued: the embedded queue's replay ledger holds its key for another message.
    Replayed,
}

/// A message handed to a worker; settle it with [`Consumer::ack`], [`Consumer::fail`],
/// [`Consumer::dead_letter`] or [`Consumer::release`] on the consumer that produced it.
pub struct Delivery {
    pub message_id: String,
    pub body: Vec<u8>,
    /// Failed attempts before this one (0 on the first delivery and after a replay).
    pub attempts: u32,
    enqueued_at: Option<i64>,
    handle: Handle,
}

impl Delivery {
    /// When the message was first published (Unix ms), when known.
    #[must_use]
    pub fn enqueued_at(&self) -> Option<i64> {
        self.enqueued_at
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The body may hold personal data: its size is enough for a log line.
        f.debug_struct("Delivery")
            .field("message_id", &self.message_id)
            .field("body_len", &self.body.len())
            .field("attempts", &self.attempts)
            .field("enqueued_at", &self.enqueued_at)
            .finish_non_exhaustive()
    }
}

/// Where a delivery came from, to settle it.
pub(crate) enum Handle {
    Embedded {
        id: i64,
    },
    Amqp {
        tag: u64,
        chan: Arc<amqp::ConsumerChannel>,
    },
}

/// Messages not yet settled, by state ([`Queue::backlog`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Ready to be delivered now (what [`Queue::depth`] counts).
    pub ready: u64,
    /// Waiting for a retry delay (RabbitMQ: in the `N.retry.K` queues).
    pub delayed: u64,
    /// Delivered to a consumer and not yet settled; `None` where the adapter cannot tell
    /// (RabbitMQ's passive declare counts ready messages only).
    pub in_flight: Option<u64>,
    /// When the oldest unsettled message was first queued (Unix ms); `None` when the queue
    /// is empty or the adapter cannot tell without consuming (RabbitMQ).
    pub oldest_enqueued_at_ms: Option<i64>,
}

/// What [`Consumer::fail`] did with the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOutcome {
    /// Will be delivered again after `delay`, as failed attempt number `attempt`.
    Retried { attempt: u32, delay: Duration },
    /// `max_attempts` reached: moved to the dead-letter store.
    DeadLettered,
}

/// The intake queue: RabbitMQ when `amqp_url` is set, else the embedded table. Cheap to
/// clone; clones share connections.
#[derive(Clone)]
pub enum Queue {
    Amqp(AmqpQueue),
    Embedded(EmbeddedQueue),
}

impl Queue {
    /// Opens the queue the settings describe. For RabbitMQ this connects, declares the
    /// topology and opens the publishing channels now, so a broker that is down at start
    /// is an error rather than a surprise at the first callback.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when RabbitMQ or the database cannot be reached (or the
    /// intake tables are missing); [`QueueError::Amqp`] when RabbitMQ refuses the topology;
    /// [`QueueError::Config`] for unusable settings.
    pub async fn connect(
        settings: &QueueSettings,
        db: DatabaseConnection,
    ) -> Result<Queue, QueueError> {
        match settings.amqp_url.as_deref().map(str::trim) {
            Some(url) if !url.is_empty() => {
                Ok(Queue::Amqp(AmqpQueue::connect(settings, url, db).await?))
            }
            _ => Ok(Queue::Embedded(EmbeddedQueue::connect(settings, db).await?)),
        }
    }

    /// Queues `message`; `Ok(Published::Queued)` only once it is durable,
    /// `Ok(Published::Replayed)` when the embedded queue's ledger refused its replay stamp.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] within `publish_timeout_ms` when the broker or database
    /// is unreachable or hangs (RabbitMQ is reconnected lazily by a later publish);
    /// [`QueueError::Amqp`] when the broker refuses the message;
    /// [`QueueError::InvalidMessage`] for a `message_id` RabbitMQ cannot carry.
    pub async fn publish(&self, message: OutgoingMessage) -> Result<Published, QueueError> {
        match self {
            Queue::Amqp(q) => q.publish(message).await.map(|()| Published::Queued),
            Queue::Embedded(q) => q.publish(message).await,
        }
    }

    /// A new consumer. `consumer_tag` names it on the broker (or in lease owners).
    ///
    /// # Errors
    /// The broker is unreachable or refuses the consumer.
    pub async fn consumer(&self, consumer_tag: &str) -> Result<Consumer, QueueError> {
        Ok(Consumer(match self {
            Queue::Amqp(q) => ConsumerKind::Amqp(q.consumer(consumer_tag).await?),
            Queue::Embedded(q) => ConsumerKind::Embedded(q.consumer(consumer_tag)),
        }))
    }

    /// Messages ready for consumption (not those waiting for a retry or held by a consumer).
    ///
    /// # Errors
    /// The broker or database is unreachable.
    pub async fn depth(&self) -> Result<u64, QueueError> {
        match self {
            Queue::Amqp(q) => q.depth().await,
            Queue::Embedded(q) => q.depth().await,
        }
    }

    /// What is waiting, for `/metrics`: see [`Backlog`] for what each adapter can tell.
    ///
    /// # Errors
    /// The broker or database is unreachable.
    pub async fn backlog(&self) -> Result<Backlog, QueueError> {
        match self {
            Queue::Amqp(q) => q.backlog().await,
            Queue::Embedded(q) => q.backlog().await,
        }
    }

    /// The dead-letter store (SQL for both adapters), able to replay into this queue.
    #[must_use]
    pub fn dead_letters(&self) -> DeadLetters {
        let db = match self {
            Queue::Amqp(q) => q.db().clone(),
            Queue::Embedded(q) => q.db().clone(),
        };
        DeadLetters::new(db, self.clone())
    }

    /// Which adapter this is.
    #[must_use]
    pub fn kind(&self) -> QueueKind {
        match self {
            Queue::Amqp(_) => QueueKind::Amqp,
            Queue::Embedded(_) => QueueKind::Embedded,
        }
    }

    /// Readiness: the broker connection (re)established, or the database answering.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] otherwise, or when the queue was closed.
    pub async fn ping(&self) -> Result<(), QueueError> {
        match self {
            Queue::Amqp(q) => q.ping().await,
            Queue::Embedded(q) => q.ping().await,
        }
    }

    /// Graceful shutdown: outstanding confirms are awaited briefly, then connections close.
    /// Publishing afterwards fails with `Unavailable` (a closed queue does not reconnect).
    pub async fn close(&self) {
        match self {
            Queue::Amqp(q) => q.close().await,
            Queue::Embedded(q) => q.close(),
        }
    }

    /// Deletes the RabbitMQ queues and exchange named after `settings.name` (tests and
    /// benchmarks); a no-op for the embedded queue.
    ///
    /// # Errors
    /// The broker is unreachable or refuses a deletion.
    pub async fn delete_topology(&self) -> Result<(), QueueError> {
        match self {
            Queue::Amqp(q) => q.delete_topology().await,
            Queue::Embedded(_) => Ok(()),
        }
    }

    /// Moves messages the broker dead-lettered into the dead-letter store; returns how many.
    /// Always 0 for the embedded queue, which dead-letters straight into the table.
    ///
    /// # Errors
    /// The broker or database is unreachable.
    pub async fn drain_dlx(&self) -> Result<u64, QueueError> {
        match self {
            Queue::Amqp(q) => q.drain_dlx().await,
            Queue::Embedded(_) => Ok(0),
        }
    }
}

/// Receives batches from a [`Queue`]; one per consume loop.
///
/// One receive runs at a time ([`Consumer::next_batch`] waits for a receive in progress);
/// settling ([`Consumer::ack`], [`Consumer::fail`], …) never waits for one, so a consumer can be
/// shared (`Arc`) between a task that receives and tasks that apply and settle.
///
/// Dropping a consumer gives its unsettled messages back: RabbitMQ requeues them when the
/// channel closes, the embedded queue when their lease (`lease_ms`) runs out.
pub struct Consumer(ConsumerKind);

enum ConsumerKind {
    Amqp(AmqpConsumer),
    Embedded(EmbeddedConsumer),
}

impl Consumer {
    /// Waits until at least one message is available, then gathers up to `max`, waiting at
    /// most `linger` for more after the first. Never returns an empty batch.
    ///
    /// Cancel-safe: to stop waiting (shutdown), drop the future — e.g. race it against the
    /// shutdown signal in `tokio::select!`. Messages received before the cancellation are
    /// kept and returned by the next call.
    ///
    /// # Errors
    /// The broker or database became unreachable. The consumer stays usable: the next call
    /// reopens its channel (RabbitMQ) or retries the claim, so callers back off and retry.
    pub async fn next_batch(
        &self,
        max: usize,
        linger: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        match &self.0 {
            ConsumerKind::Amqp(c) => c.next_batch(max, linger).await,
            ConsumerKind::Embedded(c) => c.next_batch(max, linger).await,
        }
    }

    /// Settles the deliveries as done; call only after their effects are committed.
    ///
    /// # Errors
    /// The channel closed or the lease expired meanwhile ([`QueueError::Unavailable`],
    /// [`QueueError::LeaseExpired`]): the messages will be delivered again, and since they
    /// were applied, applying them again must be (and in kitsync is) a no-op.
    pub async fn ack(&self, deliveries: &[Delivery]) -> Result<(), QueueError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        match &self.0 {
            ConsumerKind::Amqp(c) => c.ack(deliveries).await,
            ConsumerKind::Embedded(c) => c.ack(deliveries).await,
        }
    }

    /// Records a failed attempt: schedules a retry after [`QueueSettings::retry_delay`] of
    /// attempt `d.attempts + 1`, or dead-letters the message once that reaches
    /// `max_attempts`.
    ///
    /// # Errors
    /// The broker or database is unreachable; the message is then delivered again later
    /// (RabbitMQ requeues it at once, the embedded queue after the lease).
    pub async fn fail(&self, d: Delivery, error: &str) -> Result<FailOutcome, QueueError> {
        match &self.0 {
            ConsumerKind::Amqp(c) => c.fail(d, error).await,
            ConsumerKind::Embedded(c) => c.fail(d, error).await,
        }
    }

    /// Dead-letters the message at once (retrying cannot help, e.g. it cannot be decoded).
    ///
    /// # Errors
    /// The broker or database is unreachable. With RabbitMQ a dead-letter store that cannot
    /// be written is not an error: the message is rejected into the broker's dead-letter
    /// queue instead, from which [`Queue::drain_dlx`] recovers it.
    pub async fn dead_letter(&self, d: Delivery, error: &str) -> Result<(), QueueError> {
        let attempts = d.attempts.saturating_add(1);
        match &self.0 {
            ConsumerKind::Amqp(c) => c.dead_letter(d, attempts, error).await,
            ConsumerKind::Embedded(c) => c.dead_letter(d, attempts, error).await,
        }
    }

    /// Gives deliveries back for redelivery now, without counting an attempt (e.g. a batch
    /// abandoned at shutdown or after a transient failure).
    ///
    /// # Errors
    /// The broker or database is unreachable (the messages come back anyway: RabbitMQ when
    /// the channel closes, the embedded queue when the lease runs out).
    pub async fn release(&self, deliveries: &[Delivery]) -> Result<(), QueueError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        match &self.0 {
            ConsumerKind::Amqp(c) => c.release(deliveries).await,
            ConsumerKind::Embedded(c) => c.release(deliveries).await,
        }
    }

    /// Stops consuming and hands back everything this consumer holds but has not settled
    /// (received-but-unreturned messages and leased rows), so another worker gets them at
    /// once instead of after the lease (embedded) or the channel's death (RabbitMQ). Call it
    /// on shutdown; dropping a consumer without it loses nothing, it only delays redelivery.
    ///
    /// # Errors
    /// The database statement failed (embedded); the leases then simply expire.
    pub async fn close(self) -> Result<(), QueueError> {
        match self.0 {
            ConsumerKind::Amqp(c) => {
                c.close().await;
                Ok(())
            }
            ConsumerKind::Embedded(c) => c.close().await,
        }
    }
}
