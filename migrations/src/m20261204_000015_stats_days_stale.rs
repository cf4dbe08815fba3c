//! Whether a day's statistics are up to date, read from its own row (see `kitsync_store`'s
//! `windows` module).
//!
//! - `stats_days.stale`: `TRUE` while some window of the day may be stale. A write that marks
//!   a window stale sets it in the same transaction; it is cleared only by a computation
//!   that found none of the day's windows stale, with the writers that may still mark one
//!   shut out. A reader whose day row is not stale reads it and nothing else: it no longer
//!   probes the stale-window index, whose dead entries (every mark and every computation
//!   leaves one on PostgreSQL) a reader would scan until a vacuum.
//!
//! Existing rows start stale: the first computation that finds their windows fresh clears
//! them.
use sea_orm::ConnectionTrait;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE stats_days ADD COLUMN stale BOOLEAN NOT NULL DEFAULT TRUE",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE stats_days DROP COLUMN stale")
            .await?;
        Ok(())
    }
}
