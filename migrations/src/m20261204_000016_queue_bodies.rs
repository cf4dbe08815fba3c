//! The embedded queue keeps message bodies in a table of their own, `queue_bodies`, keyed by
//! `message_id`.
//!
//! A claim, a release and a retry update a `queue_messages` row (its lease, attempts and
//! availability). SQLite has no partial row update: it rewrites the whole row, and a body of
//! 165 KB with it, into the WAL and then, at the next checkpoint, into the database file, all
//! while holding the one write lock. Apart from the body, a queue row is a few dozen bytes.
//! A body is written once, when the message is queued, read when it is claimed, and deleted
//! with its row on ack or dead-lettering, in the same transaction.
//!
//! Existing bodies move to the new table; `queue_messages.body` is dropped. On PostgreSQL the
//! new table is vacuumed as soon as the queue rows (it turns over as fast).
use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The backend's byte-string type.
fn blob(backend: DbBackend) -> &'static str {
    if backend == DbBackend::Postgres {
        "BYTEA"
    } else {
        "BLOB"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let blob = blob(backend);
        let db = manager.get_connection();
        db.execute_unprepared(&format!(
            "CREATE TABLE queue_bodies (message_id TEXT PRIMARY KEY, body {blob} NOT NULL)"
        ))
        .await?;
        db.execute_unprepared(
            "INSERT INTO queue_bodies (message_id, body) SELECT message_id, body FROM queue_messages",
        )
        .await?;
        db.execute_unprepared("ALTER TABLE queue_messages DROP COLUMN body")
            .await?;
        if backend == DbBackend::Postgres {
            db.execute_unprepared(
                "ALTER TABLE queue_bodies SET (autovacuum_vacuum_scale_factor = 0.02, \
                 autovacuum_vacuum_threshold = 5000)",
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let blob = blob(manager.get_database_backend());
        let db = manager.get_connection();
        // Rows queued meanwhile get their bodies back; the column's default only exists for
        // the moment of adding it.
        db.execute_unprepared(&format!(
            "ALTER TABLE queue_messages ADD COLUMN body {blob} NOT NULL DEFAULT ''"
        ))
        .await?;
        db.execute_unprepared(
            "UPDATE queue_messages SET body = (SELECT b.body FROM queue_bodies b \
             WHERE b.message_id = queue_messages.message_id) \
             WHERE message_id IN (SELECT message_id FROM queue_bodies)",
        )
        .await?;
        db.execute_unprepared("DROP TABLE queue_bodies").await?;
        Ok(())
    }
}
