//! The RabbitMQ adapter (lapin).
//!
//! Topology for a queue named `N`:
//! - `N`: durable quorum queue (`x-delivery-limit`, dead-lettering to `N.dlx`) — the work;
//! - `N.dlx` → `N.dead`: direct exchange and quorum queue where the broker puts messages it
//!   gives up on (delivery limit reached, rejected without requeue); [`AmqpQueue::drain_dlx`]
//!   moves them into the SQL dead-letter store;
//! - `N.retry.K` (K = 1 … max_attempts−1): classic queues with `x-message-ttl` = the fixed
//!   delay of retry K, dead-lettering back to `N` through the default exchange. One queue
//!   per attempt number keeps every message in a queue on the same TTL, so none waits
//!   behind a longer-delayed one.
//!
//! Publishing: persistent messages (`delivery_mode` 2), `mandatory` (an unroutable message
//! is an error, not a silent loss), spread round-robin over `publish_channels` confirm-mode
//! channels; each caller awaits its own confirm. The connection is rebuilt lazily by the
//! first caller that finds it dead; concurrent callers fail fast with `Unavailable` instead
//! of piling up behind the reconnect.
use crate::dead_letters::{truncate, NewDeadLetter};
use crate::error::amqp;
use crate::{Delivery, FailOutcome, Handle, OutgoingMessage, QueueError, QueueSettings};
use futures_util::{FutureExt as _, StreamExt as _};
use kitsync_domain::time::now_ms;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use sea_orm::DatabaseConnection;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// Failed attempts recorded so far (absent on a first delivery).
const H_ATTEMPTS: &str = "x-kitsync-attempts";
/// Why the last attempt failed (at most [`MAX_HEADER_ERROR_BYTES`]).
const H_LAST_ERROR: &str = "x-kitsync-last-error";
/// When the message was first published (Unix ms); kept across retries.
const H_ENQUEUED_AT: &str = "x-kitsync-enqueued-at";
const MAX_HEADER_ERROR_BYTES: usize = 1024;
/// After a failed reconnect, callers within this pause fail fast instead of hammering a
/// broker that is down.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// Most messages [`AmqpQueue::drain_dlx`] moves per call, so one call stays bounded.
const MAX_DRAIN: u64 = 10_000;

/// Queue, exchange and retry-queue names derived from `settings.name`.
struct Names {
    main: String,
    dlx: String,
    dead: String,
    /// `retry[k - 1]` holds retry k.
    retry: Vec<(String, Duration)>,
}

impl Names {
    fn new(settings: &QueueSettings) -> Result<Self, QueueError> {
        let main = settings.name.trim().to_owned();
        if main.is_empty() {
            return Err(QueueError::Config("queue.name is empty".into()));
        }
        let retry = (1..settings.attempts_cap())
            .map(|k| (format!("{main}.retry.{k}"), settings.retry_delay(k)))
            .collect::<Vec<_>>();
        let names = Self {
            dlx: format!("{main}.dlx"),
            dead: format!("{main}.dead"),
            main,
            retry,
        };
        // lapin panics on names over 255 bytes; refuse them here instead.
        let longest = names
            .retry
            .last()
            .map_or(names.dead.len(), |(n, _)| n.len().max(names.dead.len()));
        if longest > 255 {
            return Err(QueueError::Config(format!(
                "queue.name `{}` is too long for RabbitMQ (derived names must fit in 255 bytes)",
                names.main
            )));
        }
        Ok(names)
    }
}

/// One live connection with its confirm-mode publishing channels.
struct Link {
    conn: Connection,
    publishers: Vec<Channel>,
}

/// A new channel on `conn`.
async fn open_channel(conn: &Connection) -> Result<Channel, QueueError> {
    conn.create_channel()
        .await
        .map_err(|e| amqp("opening a channel", &e))
}

/// Messages ready in queue `name`, by a passive declare (the queue must exist).
async fn ready_messages(ch: &Channel, name: &str) -> Result<u64, QueueError> {
    let q = ch
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| amqp(&format!("passive declare of {name}"), &e))?;
    Ok(u64::from(q.message_count()))
}

/// Queue arguments for a queue of type `kind` (`quorum`, `classic`).
fn queue_type(kind: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
    args
}

impl Link {
    fn healthy(&self) -> bool {
        self.conn.status().connected() && self.publishers.iter().all(|c| c.status().connected())
    }
}

struct Inner {
    settings: QueueSettings,
    url: String,
    db: DatabaseConnection,
    names: Names,
    link: std::sync::Mutex<Option<Arc<Link>>>,
    /// Held by the one task rebuilding the link.
    reconnecting: tokio::sync::Mutex<()>,
    last_failed_connect: std::sync::Mutex<Option<Instant>>,
    next_channel: AtomicUsize,
    closed: AtomicBool,
}

/// The RabbitMQ-backed queue; cheap to clone.
#[derive(Clone)]
pub struct AmqpQueue {
    inner: Arc<Inner>,
}

impl AmqpQueue {
    /// Connects, declares the topology and opens the publishing channels.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when RabbitMQ cannot be reached; [`QueueError::Amqp`] when
    /// it refuses the topology (e.g. a queue exists with other arguments);
    /// [`QueueError::Config`] for unusable settings.
    pub async fn connect(
        settings: &QueueSettings,
        url: &str,
        db: DatabaseConnection,
    ) -> Result<Self, QueueError> {
        let inner = Arc::new(Inner {
            names: Names::new(settings)?,
            settings: settings.clone(),
            url: url.to_owned(),
            db,
            link: std::sync::Mutex::new(None),
            reconnecting: tokio::sync::Mutex::new(()),
            last_failed_connect: std::sync::Mutex::new(None),
            next_channel: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        });
        let link = with_timeout(inner.op_timeout(), "connecting", inner.open_link()).await?;
        *inner.link.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(link));
        Ok(Self { inner })
    }

    pub(crate) fn db(&self) -> &DatabaseConnection {
        &self.inner.db
    }

    /// Publishes persistently and waits for the broker's confirm.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when the broker is unreachable, reconnecting or does not
    /// confirm within `publish_timeout_ms`; [`QueueError::Amqp`] on a nack or an unroutable
    /// message; [`QueueError::InvalidMessage`] for a `message_id` over 255 bytes.
    pub async fn publish(&self, message: OutgoingMessage) -> Result<(), QueueError> {
        let mut headers = FieldTable::default();
        headers.insert(H_ENQUEUED_AT.into(), AMQPValue::LongLongInt(now_ms()));
        let props = properties(&message.message_id, headers)?;
        self.inner
            .publish_to(&self.inner.names.main, &message.body, props)
            .await
    }

    /// A consumer on its own channel, `prefetch` set before consuming.
    ///
    /// # Errors
    /// The broker is unreachable or refuses the consumer.
    pub async fn consumer(&self, consumer_tag: &str) -> Result<AmqpConsumer, QueueError> {
        let tag = ShortString::try_new(consumer_tag)
            .map_err(|e| QueueError::Config(format!("consumer tag: {e}")))?;
        let mut receiving = Receiving {
            current: None,
            stream: None,
            pending: Vec::new(),
        };
        receiving.open(&self.inner, &tag).await?;
        Ok(AmqpConsumer {
            queue: Arc::clone(&self.inner),
            tag,
            receiving: tokio::sync::Mutex::new(receiving),
        })
    }

    /// Messages ready in the main queue (not those waiting in retry queues).
    ///
    /// # Errors
    /// The broker is unreachable or the queue is missing.
    pub async fn depth(&self) -> Result<u64, QueueError> {
        let inner = &self.inner;
        with_timeout(inner.op_timeout(), "reading the queue depth", async {
            let link = inner.link().await?;
            let ch = open_channel(&link.conn).await?;
            let ready = ready_messages(&ch, &inner.names.main).await?;
            let _ = ch.close(200, "done".into()).await;
            Ok(ready)
        })
        .await
    }

    /// Ready messages in the main queue and, as `delayed`, the messages waiting in the retry
    /// queues (passive declares on one channel). Messages delivered but not yet acked, and
    /// the age of the oldest message, are not visible through AMQP without consuming.
    ///
    /// # Errors
    /// The broker is unreachable or a queue is missing.
    pub async fn backlog(&self) -> Result<crate::Backlog, QueueError> {
        let inner = &self.inner;
        with_timeout(inner.op_timeout(), "reading the queue backlog", async {
            let link = inner.link().await?;
            let ch = open_channel(&link.conn).await?;
            let names = std::iter::once(inner.names.main.as_str())
                .chain(inner.names.retry.iter().map(|(n, _)| n.as_str()));
            let mut counts = Vec::with_capacity(inner.names.retry.len() + 1);
            for name in names {
                counts.push(ready_messages(&ch, name).await?);
            }
            let _ = ch.close(200, "done".into()).await;
            Ok(crate::Backlog {
                ready: counts.first().copied().unwrap_or(0),
                delayed: counts.iter().skip(1).sum(),
                in_flight: None,
                oldest_enqueued_at_ms: None,
            })
        })
        .await
    }

    /// A round trip to the broker: a passive declare of the main queue on a fresh channel.
    /// The link's own state is not enough: a connection cut a moment ago still looks
    /// connected until its I/O loop notices.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when closed or the broker cannot be reached (within
    /// `publish_timeout_ms`); [`QueueError::Amqp`] when the queue is missing.
    pub async fn ping(&self) -> Result<(), QueueError> {
        self.depth().await.map(|_| ())
    }

    /// Waits briefly for outstanding confirms, then closes the channels and the connection.
    /// Later publishes fail with `Unavailable`: a closed queue does not reconnect.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let link = self
            .inner
            .link
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(link) = link else { return };
        let timeout = self.inner.settings.publish_timeout();
        for ch in &link.publishers {
            let _ = tokio::time::timeout(timeout, ch.wait_for_confirms()).await;
            let _ = ch.close(200, "closing".into()).await;
        }
        let _ = tokio::time::timeout(timeout, link.conn.close(200, "closing".into())).await;
    }

    /// Deletes every queue and the exchange of this topology (tests, benchmarks), over a
    /// connection of its own so it also works after [`AmqpQueue::close`].
    ///
    /// # Errors
    /// The broker is unreachable or refuses a deletion.
    pub async fn delete_topology(&self) -> Result<(), QueueError> {
        let inner = &self.inner;
        with_timeout(inner.op_timeout(), "deleting the topology", async {
            let conn = Connection::connect(&inner.url, ConnectionProperties::default())
                .await
                .map_err(|e| amqp("connecting", &e))?;
            let ch = open_channel(&conn).await?;
            let names = &inner.names;
            let queues = [names.main.as_str(), names.dead.as_str()]
                .into_iter()
                .chain(names.retry.iter().map(|(n, _)| n.as_str()));
            for q in queues {
                ch.queue_delete(q.into(), QueueDeleteOptions::default())
                    .await
                    .map_err(|e| amqp(&format!("deleting queue {q}"), &e))?;
            }
            ch.exchange_delete(names.dlx.as_str().into(), ExchangeDeleteOptions::default())
                .await
                .map_err(|e| amqp("deleting the dead-letter exchange", &e))?;
            let _ = conn.close(200, "done".into()).await;
            Ok(())
        })
        .await
    }

    /// Moves what the broker dead-lettered (`N.dead`) into the SQL dead-letter store
    /// (source `amqp-dlx`), acking each message only after its row is written.
    /// Returns how many were moved; at most 10 000 per call, so one call stays bounded.
    ///
    /// # Errors
    /// The broker or the database is unreachable; messages not yet moved stay in `N.dead`.
    pub async fn drain_dlx(&self) -> Result<u64, QueueError> {
        let inner = &self.inner;
        let link = with_timeout(inner.op_timeout(), "connecting", inner.link()).await?;
        let ch = with_timeout(
            inner.op_timeout(),
            "opening a channel",
            open_channel(&link.conn),
        )
        .await?;
        let result = drain(inner, &ch).await;
        let _ = ch.close(200, "drained".into()).await;
        result
    }
}

async fn drain(inner: &Inner, ch: &Channel) -> Result<u64, QueueError> {
    let mut moved = 0;
    while moved < MAX_DRAIN {
        let got = with_timeout(inner.op_timeout(), "basic.get", async {
            ch.basic_get(inner.names.dead.as_str().into(), BasicGetOptions::default())
                .await
                .map_err(|e| amqp("basic.get", &e))
        })
        .await?;
        let Some(message) = got else { break };
        let d = message.delivery;
        let headers = d.properties.headers().clone().unwrap_or_default();
        let reason = death_reason(&headers, &inner.names.main);
        let error = match header_str(&headers, H_LAST_ERROR) {
            Some(last) => format!("dead-lettered by RabbitMQ ({reason}); last error: {last}"),
            None => format!("dead-lettered by RabbitMQ ({reason})"),
        };
        let message_id = d
            .properties
            .message_id()
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let saved = NewDeadLetter {
            message_id: &message_id,
            body: &d.data,
            attempts: attempts_of(&headers),
            error: &error,
            source: "amqp-dlx",
            enqueued_at: header_i64(&headers, H_ENQUEUED_AT),
        }
        .save(&inner.db)
        .await;
        if let Err(e) = saved {
            let _ = d
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
            return Err(e);
        }
        d.acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(|e| amqp("acking a drained message", &e))?;
        moved += 1;
    }
    Ok(moved)
}

impl Inner {
    /// Bound for operations other than publish (connect, declare, depth, …).
    fn op_timeout(&self) -> Duration {
        self.settings.publish_timeout().max(Duration::from_secs(5))
    }

    fn current(&self) -> Option<Arc<Link>> {
        self.link
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Drops `link` as the current one (if it still is), so the next caller rebuilds it.
    fn forget(&self, link: &Arc<Link>) {
        let mut current = self.link.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, link)) {
            *current = None;
        }
    }

    /// The live link, rebuilt if it died.
    async fn link(&self) -> Result<Arc<Link>, QueueError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(QueueError::Unavailable("the queue is closed".into()));
        }
        if let Some(link) = self.current().filter(|l| l.healthy()) {
            return Ok(link);
        }
        let Ok(_guard) = self.reconnecting.try_lock() else {
            return Err(QueueError::Unavailable("reconnecting to RabbitMQ".into()));
        };
        // Another task may have finished reconnecting between our check and the lock.
        if let Some(link) = self.current().filter(|l| l.healthy()) {
            return Ok(link);
        }
        let recently_failed = self
            .last_failed_connect
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|t| t.elapsed() < RECONNECT_PAUSE);
        if recently_failed {
            return Err(QueueError::Unavailable(
                "RabbitMQ is unreachable (retrying shortly)".into(),
            ));
        }
        match self.open_link().await {
            Ok(link) => {
                let link = Arc::new(link);
                *self.link.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&link));
                *self
                    .last_failed_connect
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
                tracing::info!("connected to RabbitMQ");
                Ok(link)
            }
            Err(e) => {
                *self
                    .last_failed_connect
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                Err(e)
            }
        }
    }

    async fn open_link(&self) -> Result<Link, QueueError> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("kitsync {}", self.names.main).into());
        let conn = Connection::connect(&self.url, props)
            .await
            .map_err(|e| amqp("connecting", &e))?;
        let mut publishers = Vec::with_capacity(self.settings.publish_channels.max(1));
        for _ in 0..self.settings.publish_channels.max(1) {
            let ch = open_channel(&conn).await?;
            if publishers.is_empty() {
                // Declared on every (re)connect: idempotent, and it recreates what an
                // operator deleted while we were away instead of losing messages to it.
                self.declare(&ch).await?;
            }
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| amqp("confirm.select", &e))?;
            publishers.push(ch);
        }
        Ok(Link { conn, publishers })
    }

    async fn declare(&self, ch: &Channel) -> Result<(), QueueError> {
        let n = &self.names;
        let durable = QueueDeclareOptions::durable();
        let mut main = queue_type("quorum");
        main.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(n.dlx.as_str().into()),
        );
        if self.settings.delivery_limit > 0 {
            main.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(i64::from(self.settings.delivery_limit)),
            );
        }
        ch.queue_declare(n.main.as_str().into(), durable, main)
            .await
            .map_err(|e| amqp(&format!("declaring queue {}", n.main), &e))?;

        ch.exchange_declare(
            n.dlx.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| amqp(&format!("declaring exchange {}", n.dlx), &e))?;
        ch.queue_declare(n.dead.as_str().into(), durable, queue_type("quorum"))
            .await
            .map_err(|e| amqp(&format!("declaring queue {}", n.dead), &e))?;
        // Dead-lettered messages keep their routing key, the main queue's name.
        ch.queue_bind(
            n.dead.as_str().into(),
            n.dlx.as_str().into(),
            n.main.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| amqp(&format!("binding {} to {}", n.dead, n.dlx), &e))?;

        for (name, delay) in &n.retry {
            let mut args = queue_type("classic");
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString("".into()),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(n.main.as_str().into()),
            );
            ch.queue_declare(name.as_str().into(), durable, args)
                .await
                .map_err(|e| {
                    amqp(
                        &format!(
                            "declaring retry queue {name} (if its delay changed, delete the \
                             queue once it is empty and restart)"
                        ),
                        &e,
                    )
                })?;
        }
        Ok(())
    }

    /// Publishes to `queue` through the default exchange and awaits the confirm, all within
    /// `publish_timeout_ms`.
    async fn publish_to(
        &self,
        queue: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), QueueError> {
        let timeout = self.settings.publish_timeout();
        let attempt = async {
            let link = self.link().await?;
            let i = self.next_channel.fetch_add(1, Ordering::Relaxed) % link.publishers.len();
            let confirm = link.publishers[i]
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    body,
                    props,
                )
                .await
                .map_err(|e| amqp("publish", &e))?
                .await
                .map_err(|e| amqp("publisher confirm", &e))?;
            match confirm {
                Confirmation::Ack(None) => Ok(()),
                Confirmation::Ack(Some(returned)) => {
                    // Someone deleted the queue under us: rebuild the link on the next call,
                    // which declares the topology again.
                    self.forget(&link);
                    Err(QueueError::Amqp(format!(
                        "message returned unroutable ({}): queue {queue} is missing",
                        returned.reply_text
                    )))
                }
                Confirmation::Nack(_) => Err(QueueError::Amqp(format!(
                    "RabbitMQ refused the message for {queue} (nack)"
                ))),
                Confirmation::NotRequested => Err(QueueError::Amqp(
                    "publisher confirms are not enabled on the channel".into(),
                )),
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(QueueError::Unavailable(format!(
                "RabbitMQ did not confirm within {} ms",
                timeout.as_millis()
            ))),
        }
    }
}

/// `fut` bounded by `timeout`; running out is `Unavailable`.
async fn with_timeout<T>(
    timeout: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, QueueError>>,
) -> Result<T, QueueError> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| {
            Err(QueueError::Unavailable(format!(
                "RabbitMQ: {what} took longer than {} ms",
                timeout.as_millis()
            )))
        })
}

fn properties(message_id: &str, headers: FieldTable) -> Result<BasicProperties, QueueError> {
    let id = ShortString::try_new(message_id)
        .map_err(|e| QueueError::InvalidMessage(format!("message_id: {e}")))?;
    Ok(BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(id)
        .with_headers(headers))
}

/// The consumer's channel and the delivery tags it has handed out but not settled.
pub(crate) struct ConsumerChannel {
    channel: Channel,
    outstanding: std::sync::Mutex<BTreeSet<u64>>,
    /// Serialises acks: a multiple-ack must not overtake a single ack it covers.
    settling: tokio::sync::Mutex<()>,
}

impl ConsumerChannel {
    fn dead(&self) -> QueueError {
        QueueError::Unavailable(
            "the consumer channel closed; RabbitMQ will deliver these messages again".into(),
        )
    }

    async fn ack(&self, mut tags: Vec<u64>) -> Result<(), QueueError> {
        let _order = self.settling.lock().await;
        tags.sort_unstable();
        // One `multiple` ack when the batch is exactly the oldest unsettled deliveries
        // (the common case: a whole batch applied in one transaction).
        let multiple = {
            let mut out = self
                .outstanding
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let oldest = out
                .iter()
                .take(tags.len())
                .copied()
                .eq(tags.iter().copied());
            for t in &tags {
                out.remove(t);
            }
            oldest && tags.len() > 1
        };
        if !self.channel.status().connected() {
            return Err(self.dead());
        }
        if multiple {
            if let Some(&last) = tags.last() {
                return self
                    .channel
                    .basic_ack(last, BasicAckOptions { multiple: true })
                    .await
                    .map_err(|e| amqp("basic.ack", &e));
            }
        }
        for t in tags {
            self.channel
                .basic_ack(t, BasicAckOptions::default())
                .await
                .map_err(|e| amqp("basic.ack", &e))?;
        }
        Ok(())
    }

    async fn nack(&self, tags: Vec<u64>, requeue: bool) -> Result<(), QueueError> {
        let _order = self.settling.lock().await;
        {
            let mut out = self
                .outstanding
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for t in &tags {
                out.remove(t);
            }
        }
        if !self.channel.status().connected() {
            return Err(self.dead());
        }
        for t in tags {
            self.channel
                .basic_nack(
                    t,
                    BasicNackOptions {
                        multiple: false,
                        requeue,
                    },
                )
                .await
                .map_err(|e| amqp("basic.nack", &e))?;
        }
        Ok(())
    }
}

/// Consumes the main queue on a channel of its own; see [`crate::Consumer`].
///
/// Receiving takes the `receiving` lock; settling (ack, nack, retry, dead letter) goes through
/// each delivery's own channel handle, so it never waits for a receive in progress.
pub struct AmqpConsumer {
    queue: Arc<Inner>,
    tag: ShortString,
    receiving: tokio::sync::Mutex<Receiving>,
}

/// The receiving side of a consumer: its current channel and what it has received.
struct Receiving {
    current: Option<Arc<ConsumerChannel>>,
    stream: Option<lapin::Consumer>,
    /// Deliveries received but not yet returned, so a cancelled `next_batch` loses nothing.
    pending: Vec<Delivery>,
}

impl Receiving {
    async fn open(&mut self, queue: &Arc<Inner>, tag: &ShortString) -> Result<(), QueueError> {
        let q = Arc::clone(queue);
        let tag = tag.clone();
        let (channel, stream) = with_timeout(q.op_timeout(), "opening a consumer", async {
            let link = q.link().await?;
            let ch = open_channel(&link.conn).await?;
            ch.basic_qos(q.settings.prefetch.max(1), BasicQosOptions::default())
                .await
                .map_err(|e| amqp("basic.qos", &e))?;
            let stream = ch
                .basic_consume(
                    q.names.main.as_str().into(),
                    tag,
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| amqp("basic.consume", &e))?;
            Ok((ch, stream))
        })
        .await?;
        self.current = Some(Arc::new(ConsumerChannel {
            channel,
            outstanding: std::sync::Mutex::new(BTreeSet::new()),
            settling: tokio::sync::Mutex::new(()),
        }));
        self.stream = Some(stream);
        Ok(())
    }

    /// Forgets a dead channel: its unsettled deliveries go back to the queue broker-side.
    fn reset(&mut self) -> QueueError {
        self.stream = None;
        self.pending.clear();
        let err = self.current.take().map_or_else(
            || QueueError::Unavailable("no consumer channel".into()),
            |c| c.dead(),
        );
        tracing::warn!(error = %err, "RabbitMQ consumer stopped; it will reconnect");
        err
    }

    fn accept(&mut self, d: lapin::message::Delivery) {
        let Some(chan) = self.current.as_ref() else {
            return;
        };
        chan.outstanding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(d.delivery_tag);
        let headers = d.properties.headers().clone().unwrap_or_default();
        let message_id = d
            .properties
            .message_id()
            .as_ref()
            .map_or_else(|| format!("amqp-{}", d.delivery_tag), ToString::to_string);
        self.pending.push(Delivery {
            message_id,
            attempts: attempts_of(&headers),
            enqueued_at: header_i64(&headers, H_ENQUEUED_AT),
            handle: Handle::Amqp {
                tag: d.delivery_tag,
                chan: Arc::clone(chan),
            },
            body: d.data,
        });
    }
}

impl AmqpConsumer {
    pub(crate) async fn next_batch(
        &self,
        max: usize,
        linger: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let max = max.max(1);
        let mut r = self.receiving.lock().await;
        while r.pending.is_empty() {
            if r.stream.is_none() {
                r.open(&self.queue, &self.tag).await?;
            }
            let Some(stream) = r.stream.as_mut() else {
                continue;
            };
            match stream.next().await {
                Some(Ok(d)) => r.accept(d),
                Some(Err(_)) | None => return Err(r.reset()),
            }
        }
        let deadline = Instant::now() + linger;
        while r.pending.len() < max {
            let Some(stream) = r.stream.as_mut() else {
                break;
            };
            // Take what is already buffered without waiting, then linger for the rest.
            let next = match stream.next().now_or_never() {
                Some(next) => next,
                None if Instant::now() >= deadline => break,
                None => match tokio::time::timeout_at(deadline, stream.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
            };
            match next {
                Some(Ok(d)) => r.accept(d),
                Some(Err(_)) | None => return Err(r.reset()),
            }
        }
        Ok(std::mem::take(&mut r.pending))
    }

    pub(crate) async fn ack(&self, deliveries: &[Delivery]) -> Result<(), QueueError> {
        for (chan, tags) in by_channel(deliveries)? {
            chan.ack(tags).await?;
        }
        Ok(())
    }

    /// Closes the consumer's channel: RabbitMQ requeues every unacked delivery at once.
    pub(crate) async fn close(self) {
        let mut r = self.receiving.into_inner();
        r.stream = None;
        r.pending.clear();
        if let Some(chan) = r.current.take() {
            let _ = tokio::time::timeout(
                self.queue.op_timeout(),
                chan.channel.close(200, "consumer closed".into()),
            )
            .await;
        }
    }

    pub(crate) async fn release(&self, deliveries: &[Delivery]) -> Result<(), QueueError> {
        for (chan, tags) in by_channel(deliveries)? {
            chan.nack(tags, true).await?;
        }
        Ok(())
    }

    pub(crate) async fn fail(&self, d: Delivery, error: &str) -> Result<FailOutcome, QueueError> {
        let attempt = d.attempts.saturating_add(1);
        let retry = usize::try_from(attempt - 1)
            .ok()
            .and_then(|i| self.queue.names.retry.get(i));
        let Some((retry_queue, delay)) = retry else {
            self.dead_letter(d, attempt, error).await?;
            return Ok(FailOutcome::DeadLettered);
        };
        let mut headers = FieldTable::default();
        headers.insert(
            H_ATTEMPTS.into(),
            AMQPValue::LongLongInt(i64::from(attempt)),
        );
        headers.insert(
            H_LAST_ERROR.into(),
            AMQPValue::LongString(truncate(error, MAX_HEADER_ERROR_BYTES).into()),
        );
        if let Some(at) = d.enqueued_at {
            headers.insert(H_ENQUEUED_AT.into(), AMQPValue::LongLongInt(at));
        }
        let published = match properties(&d.message_id, headers) {
            Ok(props) => self.queue.publish_to(retry_queue, &d.body, props).await,
            Err(e) => Err(e),
        };
        match published {
            Ok(()) => {
                self.ack(std::slice::from_ref(&d)).await?;
                Ok(FailOutcome::Retried {
                    attempt,
                    delay: *delay,
                })
            }
            Err(e) => {
                // Back to the queue now rather than stuck unacked on this channel; the
                // delivery limit bounds how often this can repeat.
                if let Err(nack) = self.release(std::slice::from_ref(&d)).await {
                    tracing::warn!(error = %nack, "could not requeue a message whose retry failed");
                }
                Err(e)
            }
        }
    }

    /// Writes the dead letter, then acks. If the database cannot take it, the message is
    /// rejected without requeue so the broker's dead-letter exchange keeps it in `N.dead`
    /// (and [`AmqpQueue::drain_dlx`] brings it over later).
    pub(crate) async fn dead_letter(
        &self,
        d: Delivery,
        attempts: u32,
        error: &str,
    ) -> Result<(), QueueError> {
        let saved = NewDeadLetter::of(&d, attempts, error, "amqp")
            .save(&self.queue.db)
            .await;
        match saved {
            Ok(()) => self.ack(std::slice::from_ref(&d)).await,
            Err(e) => {
                tracing::error!(
                    message_id = %d.message_id,
                    %error,
                    db_error = %e,
                    "dead-letter store unavailable; leaving the message to the broker's dead-letter queue"
                );
                for (chan, tags) in by_channel(std::slice::from_ref(&d))? {
                    chan.nack(tags, false).await?;
                }
                Ok(())
            }
        }
    }
}

type ChannelTags = Vec<(Arc<ConsumerChannel>, Vec<u64>)>;

fn by_channel(deliveries: &[Delivery]) -> Result<ChannelTags, QueueError> {
    let mut groups: ChannelTags = Vec::new();
    for d in deliveries {
        let Handle::Amqp { tag, chan } = &d.handle else {
            return Err(QueueError::ForeignDelivery);
        };
        match groups.iter_mut().find(|(c, _)| Arc::ptr_eq(c, chan)) {
            Some((_, tags)) => tags.push(*tag),
            None => groups.push((Arc::clone(chan), vec![*tag])),
        }
    }
    Ok(groups)
}

fn attempts_of(headers: &FieldTable) -> u32 {
    header_i64(headers, H_ATTEMPTS)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// An integer header, whatever integer type the broker or another client encoded it with.
fn header_i64(headers: &FieldTable, key: &str) -> Option<i64> {
    int_value(headers.inner().get(key)?)
}

fn int_value(v: &AMQPValue) -> Option<i64> {
    Some(match v {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok()?,
        _ => return None,
    })
}

fn header_str(headers: &FieldTable, key: &str) -> Option<String> {
    str_value(headers.inner().get(key)?)
}

fn str_value(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Why the broker dead-lettered a message: the `x-death` entry for the main queue (a retried
/// message also carries `expired` entries from the retry queues), else the newest entry.
fn death_reason(headers: &FieldTable, main: &str) -> String {
    if let Some(reason) = header_str(headers, "x-last-death-reason") {
        return reason;
    }
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        return "unknown reason".into();
    };
    let tables: Vec<&FieldTable> = deaths
        .as_slice()
        .iter()
        .filter_map(|v| match v {
            AMQPValue::FieldTable(t) => Some(t),
            _ => None,
        })
        .collect();
    let chosen = tables
        .iter()
        .find(|t| header_str(t, "queue").as_deref() == Some(main))
        .or_else(|| tables.first());
    chosen
        .and_then(|t| header_str(t, "reason"))
        .unwrap_or_else(|| "unknown reason".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn death(queue: &str, reason: &str) -> AMQPValue {
        let mut t = FieldTable::default();
        t.insert("queue".into(), AMQPValue::LongString(queue.into()));
        t.insert("reason".into(), AMQPValue::LongString(reason.into()));
        t.insert("count".into(), AMQPValue::LongLongInt(1));
        AMQPValue::FieldTable(t)
    }

    #[test]
    fn death_reason_prefers_the_main_queue_entry() {
        let mut h = FieldTable::default();
        h.insert(
            "x-death".into(),
            AMQPValue::FieldArray(
                vec![death("q.retry.1", "expired"), death("q", "delivery_limit")].into(),
            ),
        );
        assert_eq!(death_reason(&h, "q"), "delivery_limit");
        assert_eq!(death_reason(&h, "other"), "expired");
        assert_eq!(death_reason(&FieldTable::default(), "q"), "unknown reason");
    }

    #[test]
    fn integer_headers_of_any_width() {
        let mut h = FieldTable::default();
        h.insert("a".into(), AMQPValue::LongInt(3));
        h.insert("b".into(), AMQPValue::ShortShortUInt(2));
        h.insert("c".into(), AMQPValue::LongString("x".into()));
        assert_eq!(header_i64(&h, "a"), Some(3));
        assert_eq!(header_i64(&h, "b"), Some(2));
        assert_eq!(header_i64(&h, "c"), None);
        assert_eq!(attempts_of(&h), 0);
    }

    #[test]
    fn names_fit_rabbitmq_limits() {
        let s = QueueSettings {
            max_attempts: 3,
            ..QueueSettings::default()
        };
        let n = Names::new(&s).unwrap();
        assert_eq!(n.dlx, "kitsync.sync.dlx");
        assert_eq!(n.dead, "kitsync.sync.dead");
        let retry: Vec<&str> = n.retry.iter().map(|(q, _)| q.as_str()).collect();
        assert_eq!(retry, ["kitsync.sync.retry.1", "kitsync.sync.retry.2"]);
        assert_eq!(n.retry[1].1, s.retry_delay(2));
        let long = QueueSettings {
            name: "x".repeat(250),
            ..QueueSettings::default()
        };
        assert!(matches!(Names::new(&long), Err(QueueError::Config(_))));
    }
}
