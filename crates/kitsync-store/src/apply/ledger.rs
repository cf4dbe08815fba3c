//! The durable replay ledger, written by the worker in the transaction that applies the
//! callbacks (`kit_replay_keys`, migrations `m20261203_000011` and `m20261204_000013`).
//!
//! Each ingress process refuses the replays it has seen itself (in memory). A replay that
//! reaches another ingress process, or one that restarted, is queued; it is stopped here:
//! the batch inserts the keys of its callbacks, each with the message that claims it, after
//! the tenant locks and before any change. A key already held by *another* message is a
//! replay: that callback is not applied, and its outcome is [`Outcome::Replayed`](crate::Outcome::Replayed). A key
//! held by the *same* message is that message delivered again (the worker stopped between
//! commit and ack, or the embedded queue's ingress recorded it with the queue row), which
//! applies as the duplicate it is. A key without an owner was claimed by an ingress of an
//! earlier release, which queued the original without a stamp: a stamped copy is a replay.
//!
//! Both copies of a replayed callback belong to the same tenant, and the tenant lock comes
//! first, so two workers holding the two copies do not race: the second waits for the
//! first's commit and then finds its key. Inside one batch the first copy wins.
//!
//! **How long a key is kept.** A replay can be accepted until its signed timestamp leaves
//! the window (`expires_at`), so it is queued at most about two windows after the original.
//! A callback applied after it expired (it waited in RabbitMQ through a database outage)
//! keeps its key [`KEEP_AFTER_APPLY_MS`] past the apply (`kept_until`), long enough for a
//! replay queued behind it to arrive. [`forget_before`] deletes keys past both.
use super::Cx;
use crate::error::StoreError;
use crate::sql::{rows_per_statement, Sql};
use kitsync_domain::ReplayStamp;
use sea_orm::{ConnectionTrait, DatabaseConnection, Value};
use std::collections::{HashMap, HashSet};

/// How long after it was applied a key is kept at least (see the module docs).
pub const KEEP_AFTER_APPLY_MS: i64 = 5 * 60 * 1000;

/// A callback's claim on its key: its index in the batch, its stamp, its message.
pub(crate) struct Claim<'a> {
    pub index: usize,
    pub stamp: &'a ReplayStamp,
    pub message_id: &'a str,
}

type Row = (i64, [u8; 32]);

fn row_of(s: &ReplayStamp) -> Row {
    (s.expires_at_ms, s.key)
}

/// Records the claims' keys; returns the indexes of the callbacks that are replays (their
/// key is held by another message), which the caller must not apply.
///
/// Each key gets one owner: the message already holding it in the table, or else the first
/// claim of it in the batch (whose row this inserts). Every claim by another message is a
/// replay, wherever it stands in the batch.
pub(crate) async fn record(
    cx: &Cx<'_>,
    claims: &[Claim<'_>],
) -> Result<HashSet<usize>, StoreError> {
    if claims.is_empty() {
        return Ok(HashSet::new());
    }
    let mut first: HashMap<Row, &Claim<'_>> = HashMap::with_capacity(claims.len());
    for c in claims {
        first.entry(row_of(c.stamp)).or_insert(c);
    }
    let mut candidates: Vec<&Claim<'_>> = first.into_values().collect();
    // Key order, so that two transactions inserting the same keys wait on each other instead
    // of deadlocking (the tenant locks already order replays of one callback; this keeps it
    // true if that ever changes).
    candidates.sort_by_key(|c| row_of(c.stamp));
    // Key → its owner (`None`: a row without one).
    let mut owners: HashMap<Row, Option<&str>> = HashMap::with_capacity(candidates.len());
    let mut conflicted: Vec<&Claim<'_>> = Vec::new();
    for chunk in candidates.chunks(rows_per_statement(4)) {
        let mut sql = cx.sql();
        sql.push("INSERT INTO kit_replay_keys (expires_at, mac, message_id, kept_until) VALUES ")
            .bind_rows(chunk.iter().map(|c| -> [Value; 4] {
                let kept_until = c.stamp.expires_at_ms.max(cx.now + KEEP_AFTER_APPLY_MS);
                [
                    c.stamp.expires_at_ms.into(),
                    c.stamp.key.to_vec().into(),
                    c.message_id.into(),
                    kept_until.into(),
                ]
            }))
            .push(" ON CONFLICT (expires_at, mac) DO NOTHING RETURNING expires_at, mac");
        let inserted: HashSet<Row> = cx
            .query(sql)
            .await?
            .iter()
            .map(|r| Ok((r.try_get_by_index(0)?, key_of(r.try_get_by_index(1)?)?)))
            .collect::<Result<_, StoreError>>()?;
        for c in chunk {
            if inserted.contains(&row_of(c.stamp)) {
                owners.insert(row_of(c.stamp), Some(c.message_id));
            } else {
                conflicted.push(c);
            }
        }
    }
    // Keys already present: held by this message (the embedded queue's ingress recorded it
    // with the queue row, or the worker stopped before its ack) or by another one.
    let mut held: HashMap<Row, Option<String>> = HashMap::new();
    for chunk in conflicted.chunks(rows_per_statement(2)) {
        let mut sql = cx.sql();
        sql.push("SELECT expires_at, mac, message_id FROM kit_replay_keys WHERE (expires_at, mac) IN (VALUES ")
            .bind_rows(chunk.iter().map(|c| -> [Value; 2] {
                [c.stamp.expires_at_ms.into(), c.stamp.key.to_vec().into()]
            }))
            .push(")");
        for r in cx.query(sql).await? {
            held.insert(
                (r.try_get_by_index(0)?, key_of(r.try_get_by_index(1)?)?),
                r.try_get_by_index(2)?,
            );
        }
    }
    for c in &conflicted {
        let row = row_of(c.stamp);
        // A key without an owner was claimed by an ingress of an earlier release, which
        // queued the original without a stamp.
        owners.insert(row, held.get(&row).and_then(|o| o.as_deref()));
    }
    Ok(claims
        .iter()
        .filter(|c| owners.get(&row_of(c.stamp)).copied().flatten() != Some(c.message_id))
        .map(|c| c.index)
        .collect())
}

fn key_of(bytes: Vec<u8>) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| StoreError::Corrupt(format!("a replay key of {} bytes", bytes.len())))
}

/// Deletes the keys whose `expires_at` and `kept_until` are both before `horizon_ms`;
/// returns how many.
///
/// # Errors
/// The statement failed.
pub(crate) async fn forget_before(
    db: &DatabaseConnection,
    horizon_ms: i64,
) -> Result<u64, StoreError> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("DELETE FROM kit_replay_keys WHERE expires_at < ")
        .bind(horizon_ms)
        .push(" AND (kept_until IS NULL OR kept_until < ")
        .bind(horizon_ms)
        .push(")");
    Ok(db.execute(sql.build()).await?.rows_affected())
}
