//! The replay ledger keyed by the verified signature.
//!
//! `kit_replay_keys` holds the 32-byte `x-sign` of every accepted Kit callback until its
//! signed timestamp leaves the acceptance window (`expires_at`, Unix ms), keyed by
//! `(expires_at, mac)`: a replay has the same signed timestamp, so the pair is as unique as the
//! MAC, and keys arrive in expiry order (a SQLite `WITHOUT ROWID` table: the key is the row). It replaces
//! `kit_nonces`, whose key (the nonce alone) a replay could change by moving a digit between
//! nonce and timestamp, and whose expiry counted from receipt. `kit_nonces` is left in place
//! (unused) so that ingress processes of the previous release keep answering during a rolling
//! upgrade; a later migration drops it.
//!
//! Every accepted callback inserts a row and the ledger deletes it about two minutes later, so
//! on PostgreSQL the table is vacuumed at 2 % dead rows plus a floor, like the other intake
//! tables.
use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        // Keyed by expiry first: new keys append at the end of the one index, the clean-up
        // deletes a range at its start (see `kitsync-queue`'s replay ledger).
        let (blob, without_rowid) = match manager.get_database_backend() {
            DbBackend::Postgres => ("BYTEA", ""),
            _ => ("BLOB", " WITHOUT ROWID"),
        };
        db.execute_unprepared(&format!(
            "CREATE TABLE kit_replay_keys (
                expires_at BIGINT NOT NULL,
                mac {blob} NOT NULL,
                PRIMARY KEY (expires_at, mac)
            ){without_rowid}"
        ))
        .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared(
                "ALTER TABLE kit_replay_keys SET (autovacuum_vacuum_scale_factor = 0.02, \
                 autovacuum_vacuum_threshold = 5000)",
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE IF EXISTS kit_replay_keys")
            .await?;
        Ok(())
    }
}
