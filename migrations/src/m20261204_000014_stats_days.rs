//! Global per-day statistics, so the all-tenants overview and daily series read one row per
//! day instead of one window per tenant (see `kitsync_store`'s `windows` module).
//!
//! - `stats_days`: per UTC+8 day `D`, the sum over every tenant's window of `D`: authorised
//!   users, projects opened (windows with an authorised user), and for `n` = 1‥30 the active
//!   users and active projects of the `n` days ending on `D` (`active`, `projects`: 30
//!   comma-separated counts each). Only the code that stores a tenant's window changes it,
//!   by the difference it makes, in the same transaction.
//! - `stats_windows.stale`: a write that may change a window now marks it stale instead of
//!   deleting it, so the values the day's row holds for it are still there to be taken out
//!   when it is computed again. A stale window is never read as a figure.
//! - `stats_windows_stale`: the stale windows of a day, found without reading its others.
//!
//! The windows are a cache: they are emptied here, so every window is stored again with a day
//! row that counts it (the statistics maintainer and the first requests compute them).
use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "DELETE FROM stats_windows",
    "ALTER TABLE stats_windows ADD COLUMN stale BOOLEAN NOT NULL DEFAULT FALSE",
    "CREATE INDEX stats_windows_stale ON stats_windows (day, tenant_id) WHERE stale = TRUE",
    "CREATE TABLE stats_days (
        day INTEGER NOT NULL PRIMARY KEY,
        authorized BIGINT NOT NULL,
        opened BIGINT NOT NULL,
        active TEXT NOT NULL,
        projects TEXT NOT NULL,
        updated_at BIGINT NOT NULL
    )",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in UP {
            db.execute_unprepared(statement).await?;
        }
        if manager.get_database_backend() == DbBackend::Postgres {
            // Today's row is updated by every window computation: vacuum it like the windows.
            db.execute_unprepared(
                "ALTER TABLE stats_days SET (autovacuum_vacuum_scale_factor = 0.02, \
                 autovacuum_vacuum_threshold = 1000)",
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in [
            "DROP TABLE IF EXISTS stats_days",
            "DROP INDEX IF EXISTS stats_windows_stale",
            // The previous schema's windows are deleted, not kept stale.
            "DELETE FROM stats_windows",
            "ALTER TABLE stats_windows DROP COLUMN stale",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}
