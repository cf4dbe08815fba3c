//! The replay ledger moves to the worker: each key records the message that owns it and how
//! long it must be kept.
//!
//! The worker records a callback's key in the transaction that applies the callback, so a
//! replay accepted by another ingress process (or by one that restarted and forgot) is
//! discarded when it reaches a worker. Two columns make that work:
//! - `message_id`: the queue message that claimed the key. A key already present with the
//!   *same* message id is that message delivered again (after a crash between commit and
//!   ack), which is not a replay; one with another message id is. Rows written by an
//!   ingress of the previous release have none: their ingress refused replays itself.
//! - `kept_until`: when the clean-up may delete the row. A callback applied long after it was
//!   signed (it waited in RabbitMQ through a database outage) keeps its key a while after
//!   it was applied, so a replay queued behind it is still found. `NULL` means
//!   `expires_at`.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        db.execute_unprepared("ALTER TABLE kit_replay_keys ADD COLUMN message_id TEXT")
            .await?;
        db.execute_unprepared("ALTER TABLE kit_replay_keys ADD COLUMN kept_until BIGINT")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("ALTER TABLE kit_replay_keys DROP COLUMN kept_until")
            .await?;
        db.execute_unprepared("ALTER TABLE kit_replay_keys DROP COLUMN message_id")
            .await?;
        Ok(())
    }
}
