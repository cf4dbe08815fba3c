//! The dead-letter store: the `dead_letters` table, shared by both queue adapters.
//!
//! Dead letters live in SQL even with RabbitMQ so operators list and replay them in one place
//! with the directory they concern; the broker's own dead-letter queue is only a safety net
//! that [`crate::Queue::drain_dlx`] empties into this table.
use crate::sql::int;
use crate::{Delivery, OutgoingMessage, Queue, QueueError};
use kitsync_domain::time::now_ms;
use kitsync_sql::audit::{self, Actor};
use kitsync_sql::Sql;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, QueryResult, Statement, TransactionTrait, Value,
};
use serde::{Serialize, Serializer};
use std::borrow::Cow;

/// Longest error text kept per dead letter: enough for any real cause, bounded for a loop
/// that keeps failing with ever longer messages.
const MAX_ERROR_BYTES: usize = 8 * 1024;

/// One message that could not be applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub message_id: String,
    /// The queued bytes; serialised as (lossy) UTF-8 text since bodies are JSON.
    #[serde(serialize_with = "lossy_utf8")]
    pub body: Vec<u8>,
    /// Failed attempts, the last one included.
    pub attempts: u32,
    pub error: String,
    /// `embedded`, `amqp` (dead-lettered by a worker) or `amqp-dlx` (by the broker).
    pub source: String,
    /// When the message was first queued (Unix ms), when known.
    pub enqueued_at: Option<i64>,
    pub dead_at: i64,
    pub replayed_at: Option<i64>,
}

impl DeadLetter {
    /// The body as text, with invalid UTF-8 replaced.
    #[must_use]
    pub fn body_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }
}

fn lossy_utf8<S: Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(body))
}

/// What [`DeadLetters::replay`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ReplayOutcome {
    /// Published again with its attempts reset.
    Replayed,
    NotFound,
    /// Replayed before; replaying twice would apply it twice.
    AlreadyReplayed,
}

/// Lists and replays dead letters; obtained from [`Queue::dead_letters`].
#[derive(Clone)]
pub struct DeadLetters {
    db: DatabaseConnection,
    queue: Queue,
}

const COLUMNS: &str =
    "id, message_id, body, attempts, error, source, enqueued_at, dead_at, replayed_at";

impl DeadLetters {
    pub(crate) fn new(db: DatabaseConnection, queue: Queue) -> Self {
        Self { db, queue }
    }

    /// The newest dead letters first, at most `limit`; replayed ones only when asked.
    ///
    /// # Errors
    /// The database query failed.
    pub async fn list(
        &self,
        include_replayed: bool,
        limit: u64,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let filter = if include_replayed {
            ""
        } else {
            "WHERE replayed_at IS NULL"
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .db
            .query_all(
                Sql::new(self.backend())
                    .push(&format!(
                        "SELECT {COLUMNS} FROM dead_letters {filter} ORDER BY id DESC LIMIT "
                    ))
                    .bind(limit)
                    .take(),
            )
            .await?;
        rows.iter().map(decode).collect()
    }

    /// A page of dead letters, newest first: at most `limit` older than dead letter `before`
    /// (from the newest when `None`); `replayed` picks pending (`false`) or replayed (`true`)
    /// ones, `None` both.
    ///
    /// # Errors
    /// The database query failed.
    pub async fn page(
        &self,
        replayed: Option<bool>,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let mut sql = Sql::new(self.backend());
        sql.push(&format!("SELECT {COLUMNS} FROM dead_letters WHERE TRUE"));
        match replayed {
            Some(true) => {
                sql.push(" AND replayed_at IS NOT NULL");
            }
            Some(false) => {
                sql.push(" AND replayed_at IS NULL");
            }
            None => {}
        }
        if let Some(b) = before {
            sql.push(" AND id < ").bind(b);
        }
        sql.push(" ORDER BY id DESC LIMIT ")
            .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = self.db.query_all(sql.build()).await?;
        rows.iter().map(decode).collect()
    }

    /// One dead letter by id.
    ///
    /// # Errors
    /// The database query failed.
    pub async fn get(&self, id: i64) -> Result<Option<DeadLetter>, QueueError> {
        let row = self
            .db
            .query_one(
                Sql::new(self.backend())
                    .push(&format!("SELECT {COLUMNS} FROM dead_letters WHERE id = "))
                    .bind(id)
                    .take(),
            )
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Publishes the dead letter again, under its original `message_id` (so the worker's
    /// idempotency still recognises it) and with its attempts reset, then marks it replayed.
    ///
    /// The row is marked first, conditionally, so two operators replaying at once publish
    /// it once; the audit log records `actor` replaying it in the same transaction. If the
    /// publish then fails, the mark is taken back and the audit log says so
    /// (`deadletter.replay_undone`, with the error).
    ///
    /// # Errors
    /// The database failed, or the queue refused the publish (the dead letter then stays
    /// pending).
    pub async fn replay(&self, actor: &Actor, id: i64) -> Result<ReplayOutcome, QueueError> {
        let backend = self.backend();
        let txn = self.db.begin().await?;
        let marked = txn
            .query_one(
                Sql::new(backend)
                    .push("UPDATE dead_letters SET replayed_at = ")
                    .bind(now_ms())
                    .push(" WHERE id = ")
                    .bind(id)
                    .push(" AND replayed_at IS NULL RETURNING message_id, body")
                    .take(),
            )
            .await?;
        let Some(row) = marked else {
            let exists = txn
                .query_one(
                    Sql::new(backend)
                        .push("SELECT id FROM dead_letters WHERE id = ")
                        .bind(id)
                        .take(),
                )
                .await?;
            txn.commit().await?;
            return Ok(match exists {
                Some(_) => ReplayOutcome::AlreadyReplayed,
                None => ReplayOutcome::NotFound,
            });
        };
        let message = OutgoingMessage {
            message_id: row.try_get("", "message_id")?,
            body: row.try_get("", "body")?,
            // The body still carries its stamp, which the worker checks; the ledger row the
            // ingress wrote, if any, is this message's own.
            replay: None,
        };
        let tenant = tenant_of(&message.body);
        let target = id.to_string();
        let detail = format!(
            r#"{{"messageId":{}}}"#,
            serde_json::Value::from(message.message_id.as_str())
        );
        let change = audit::Change {
            action: "deadletter.replay",
            target: &target,
            tenant_id: tenant.as_deref(),
            detail,
        };
        audit::record(&txn, actor, &change, now_ms()).await?;
        txn.commit().await?;
        if let Err(e) = self.queue.publish(message).await {
            if let Err(undo) = self.undo_replay(actor, id, tenant.as_deref(), &e).await {
                tracing::error!(id, error = %undo, "dead letter marked replayed but not republished");
            }
            return Err(e);
        }
        Ok(ReplayOutcome::Replayed)
    }

    /// Takes back the replay mark of dead letter `id` whose publish failed with `error`, and
    /// says so in the audit log, in one transaction.
    async fn undo_replay(
        &self,
        actor: &Actor,
        id: i64,
        tenant: Option<&str>,
        error: &QueueError,
    ) -> Result<(), QueueError> {
        let txn = self.db.begin().await?;
        txn.execute(
            Sql::new(self.backend())
                .push("UPDATE dead_letters SET replayed_at = NULL WHERE id = ")
                .bind(id)
                .take(),
        )
        .await?;
        let target = id.to_string();
        let change = audit::Change {
            action: "deadletter.replay_undone",
            target: &target,
            tenant_id: tenant,
            detail: format!(
                r#"{{"error":{}}}"#,
                serde_json::Value::from(error.to_string())
            ),
        };
        audit::record(&txn, actor, &change, now_ms()).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Replays every pending dead letter, oldest first, each as [`DeadLetters::replay`] does
    /// (an audit row each); returns how many were replayed.
    ///
    /// # Errors
    /// Stops at the first failure (those replayed so far stay replayed).
    pub async fn replay_all(&self, actor: &Actor) -> Result<u64, QueueError> {
        let mut replayed = 0;
        let mut after = 0_i64;
        loop {
            let rows = self
                .db
                .query_all(
                    Sql::new(self.backend())
                        .push("SELECT id FROM dead_letters WHERE replayed_at IS NULL AND id > ")
                        .bind(after)
                        .push(" ORDER BY id LIMIT 500")
                        .take(),
                )
                .await?;
            if rows.is_empty() {
                return Ok(replayed);
            }
            for row in rows {
                let id: i64 = row.try_get("", "id")?;
                after = id;
                if self.replay(actor, id).await? == ReplayOutcome::Replayed {
                    replayed += 1;
                }
            }
        }
    }

    /// Dead letters not replayed yet.
    ///
    /// # Errors
    /// The database query failed.
    pub async fn count_pending(&self) -> Result<u64, QueueError> {
        let row = self
            .db
            .query_one(
                Sql::new(self.backend())
                    .push("SELECT COUNT(*) AS n FROM dead_letters WHERE replayed_at IS NULL")
                    .take(),
            )
            .await?;
        let n: i64 = match row {
            Some(r) => r.try_get("", "n")?,
            None => 0,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }
}

/// The tenant a queued body's callback concerns, when the body decodes.
fn tenant_of(body: &[u8]) -> Option<String> {
    kitsync_domain::QueuedCallback::from_bytes(body)
        .ok()
        .map(|q| q.command.tenant_id().to_owned())
}

fn decode(row: &QueryResult) -> Result<DeadLetter, QueueError> {
    let attempts: i32 = row.try_get("", "attempts")?;
    Ok(DeadLetter {
        id: row.try_get("", "id")?,
        message_id: row.try_get("", "message_id")?,
        body: row.try_get("", "body")?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        error: row.try_get("", "error")?,
        source: row.try_get("", "source")?,
        enqueued_at: row.try_get("", "enqueued_at")?,
        dead_at: row.try_get("", "dead_at")?,
        replayed_at: row.try_get("", "replayed_at")?,
    })
}

/// A dead letter about to be written by an adapter.
pub(crate) struct NewDeadLetter<'a> {
    pub message_id: &'a str,
    pub body: &'a [u8],
    pub attempts: u32,
    pub error: &'a str,
    pub source: &'static str,
    pub enqueued_at: Option<i64>,
}

impl<'a> NewDeadLetter<'a> {
    /// The dead letter of delivery `d` after `attempts` attempts, written by adapter `source`.
    pub(crate) fn of(d: &'a Delivery, attempts: u32, error: &'a str, source: &'static str) -> Self {
        NewDeadLetter {
            message_id: &d.message_id,
            body: &d.body,
            attempts,
            error,
            source,
            enqueued_at: d.enqueued_at(),
        }
    }

    pub(crate) fn insert(&self, backend: DbBackend) -> Statement {
        let values: [Value; 7] = [
            self.message_id.into(),
            self.body.to_vec().into(),
            int(self.attempts).into(),
            truncate(self.error, MAX_ERROR_BYTES).into(),
            self.source.into(),
            self.enqueued_at.into(),
            now_ms().into(),
        ];
        let mut sql = Sql::new(backend);
        sql.push(
            "INSERT INTO dead_letters \
             (message_id, body, attempts, error, source, enqueued_at, dead_at) VALUES ",
        )
        .bind_tuple(values);
        sql.build()
    }

    /// Writes the dead letter on its own.
    pub(crate) async fn save(&self, db: &impl ConnectionTrait) -> Result<(), QueueError> {
        db.execute(self.insert(db.get_database_backend())).await?;
        Ok(())
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
