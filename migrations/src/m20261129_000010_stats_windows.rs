//! Precomputed statistics: per production tenant and UTC+8 day `D`, what every period ending
//! on `D` needs (see `kitsync_store`'s `windows` module).
//!
//! - `stats_windows`: per (tenant, `D`): the users authorised at the end of `D`; how many of
//!   them were active within the last `n` days, for `n` = 1‥30 (`active`, 30 comma-separated
//!   counts); the tenant's last activity up to `D`. A row is deleted when a change could alter
//!   it and recomputed when next needed.
//! - `stats_marks`: one row per tenant, the lock that orders a row's computation against the
//!   writes that delete it (`changes` counts them, for diagnostics).
//! - `activity_daily`'s secondary index becomes (tenant, day, user): every statistics query
//!   now reads one tenant's days, never one day's tenants.
//!
//! Both new tables are small and turn over all day (activity deletes today's windows, which
//! are computed again; every activity batch updates its tenants' marks), so on PostgreSQL
//! they are vacuumed at 2 % dead rows plus a floor of 1 000, like the intake tables.
use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "CREATE TABLE stats_windows (
        tenant_id TEXT NOT NULL,
        day INTEGER NOT NULL,
        authorized BIGINT NOT NULL,
        active TEXT NOT NULL,
        last_active_at BIGINT NULL,
        computed_at BIGINT NOT NULL,
        PRIMARY KEY (tenant_id, day)
    )",
    "CREATE TABLE stats_marks (
        tenant_id TEXT NOT NULL PRIMARY KEY,
        changes BIGINT NOT NULL DEFAULT 0
    )",
    "DROP INDEX IF EXISTS activity_daily_day",
    "CREATE INDEX activity_daily_tenant_day ON activity_daily (tenant_id, day, user_name)",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in UP {
            db.execute_unprepared(statement).await?;
        }
        if manager.get_database_backend() == DbBackend::Postgres {
            for table in ["stats_windows", "stats_marks"] {
                db.execute_unprepared(&format!(
                    "ALTER TABLE {table} SET (autovacuum_vacuum_scale_factor = 0.02, \
                     autovacuum_vacuum_threshold = 1000)"
                ))
                .await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in [
            "DROP INDEX IF EXISTS activity_daily_tenant_day",
            "CREATE INDEX activity_daily_day ON activity_daily (day, tenant_id, user_name)",
            "DROP TABLE IF EXISTS stats_marks",
            "DROP TABLE IF EXISTS stats_windows",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}
