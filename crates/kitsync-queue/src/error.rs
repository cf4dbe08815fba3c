//! The one error type of this crate.

/// Everything a queue operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The broker or the database cannot be reached, is reconnecting, hangs past the
    /// publish timeout, or the queue was closed. Retrying later may succeed.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// A database statement failed for another reason than reachability.
    #[error("queue database: {0}")]
    Database(#[from] sea_orm::DbErr),
    /// The broker refused an operation (nack, unroutable message, channel error).
    #[error("RabbitMQ: {0}")]
    Amqp(String),
    /// The message cannot be queued as given (e.g. a `message_id` over 255 bytes).
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// Embedded queue: the lease on these many deliveries ran out and another consumer
    /// claimed them, so this consumer can no longer settle them; they are delivered again.
    #[error("{0} delivery(ies) no longer leased to this consumer (lease expired); they will be delivered again")]
    LeaseExpired(u64),
    /// A delivery was handed to a consumer of another queue kind.
    #[error("the delivery does not belong to this consumer")]
    ForeignDelivery,
    /// The settings cannot work (e.g. a queue name too long for RabbitMQ).
    #[error("invalid queue settings: {0}")]
    Config(String),
}

impl QueueError {
    /// True when the failure is about reachability, not about the message.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// A lapin error, sorted by whether the broker is gone (retry later) or said no.
pub(crate) fn amqp(context: &str, e: &lapin::Error) -> QueueError {
    use lapin::ErrorKind as K;
    let gone = match e.kind() {
        K::IOError(_)
        | K::RuntimeShutdownError(_)
        | K::InvalidChannelState(..)
        | K::InvalidConnectionState(_)
        | K::InvalidChannel(_)
        | K::MissingHeartbeatError => true,
        K::ProtocolError(_) => e.is_amqp_hard_error(),
        _ => false,
    };
    if gone {
        QueueError::Unavailable(format!("RabbitMQ {context}: {e}"))
    } else {
        QueueError::Amqp(format!("{context}: {e}"))
    }
}
