//! Vacuum the high-churn intake tables sooner on PostgreSQL.
//!
//! Every accepted callback inserts a `kit_nonces` row that the ledger deletes two replay
//! windows later, and on the embedded queue every message is a `queue_messages` row deleted
//! on ack: at thousands of callbacks a second both tables turn over completely every few
//! minutes. PostgreSQL's default trigger (20 % of the table dead) lets them bloat between
//! autovacuum runs; 2 % plus a floor keeps them near their live size. SQLite reuses freed pages
//! by itself, so nothing changes there.
use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The tables whose autovacuum settings this migration changes.
pub const CHURN_TABLES: &[&str] = &["kit_nonces", "queue_messages"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        for table in CHURN_TABLES {
            db.execute_unprepared(&format!(
                "ALTER TABLE {table} SET (autovacuum_vacuum_scale_factor = 0.02, \
                 autovacuum_vacuum_threshold = 5000)"
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        for table in CHURN_TABLES {
            db.execute_unprepared(&format!(
                "ALTER TABLE {table} RESET (autovacuum_vacuum_scale_factor, \
                 autovacuum_vacuum_threshold)"
            ))
            .await?;
        }
        Ok(())
    }
}
