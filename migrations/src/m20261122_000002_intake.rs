//! The durable intake: the embedded queue, the dead-letter store and the Kit nonce ledger.
//!
//! - `queue_messages` is the embedded queue (used when no RabbitMQ is configured). A row is
//!   claimable when `available_at` has passed and it holds no live lease; a consumer leases
//!   rows (`lease_owner`, `lease_until`) and deletes them on ack, so a crashed worker's rows
//!   come back when the lease runs out. `message_id` is unique: publishing the same message
//!   twice while it is still queued is a no-op.
//! - `dead_letters` is shared by both queue adapters: what could not be applied, with why,
//!   until an operator replays it (`replayed_at`).
//! - `kit_nonces` remembers every accepted `x-nonce` for the replay window.
//!
//! Times are BIGINT Unix milliseconds. Raw SQL per backend, as in the directory migration.
use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// `{ID}` is the backend's auto-increment primary key, `{BLOB}` its byte-string type.
const UP: &[&str] = &[
    "CREATE TABLE queue_messages (
        id {ID},
        message_id TEXT NOT NULL UNIQUE,
        body {BLOB} NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        available_at BIGINT NOT NULL,
        lease_owner TEXT NULL,
        lease_until BIGINT NULL,
        last_error TEXT NULL,
        enqueued_at BIGINT NOT NULL
    )",
    // The claim query filters on available_at and takes the oldest ids first.
    "CREATE INDEX queue_messages_available ON queue_messages (available_at, id)",
    "CREATE TABLE dead_letters (
        id {ID},
        message_id TEXT NOT NULL,
        body {BLOB} NOT NULL,
        attempts INTEGER NOT NULL,
        error TEXT NOT NULL,
        source TEXT NOT NULL,
        enqueued_at BIGINT NULL,
        dead_at BIGINT NOT NULL,
        replayed_at BIGINT NULL
    )",
    "CREATE TABLE kit_nonces (
        nonce TEXT NOT NULL PRIMARY KEY,
        seen_at BIGINT NOT NULL
    )",
    // The periodic clean-up deletes by age.
    "CREATE INDEX kit_nonces_seen_at ON kit_nonces (seen_at)",
];

const TABLES: &[&str] = &["kit_nonces", "dead_letters", "queue_messages"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let (id, blob) = match manager.get_database_backend() {
            DbBackend::Postgres => ("BIGSERIAL PRIMARY KEY", "BYTEA"),
            DbBackend::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"),
            other => {
                return Err(DbErr::Migration(format!(
                    "kitsync supports PostgreSQL and SQLite, not {other:?}"
                )))
            }
        };
        let db = manager.get_connection();
        for sql in UP {
            db.execute_unprepared(&sql.replace("{ID}", id).replace("{BLOB}", blob))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for table in TABLES {
            db.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}"))
                .await?;
        }
        Ok(())
    }
}
