//! Activity of tenants' users (`POST /api/v1/activity`): the raw events, kept for
//! `store.activity_retention_days` and unique by (tenant, user, kind, time) so a re-sent
//! batch counts once; and the daily rollups per (tenant, UTC+8 day, user) the statistics
//! read, kept for good (a year of 100 000 users is at most 36.5 M small rows, far fewer in
//! practice: only days a user was active).
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "CREATE TABLE activity_events (
        tenant_id TEXT NOT NULL,
        user_name TEXT NOT NULL,
        kind TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        received_at BIGINT NOT NULL,
        PRIMARY KEY (tenant_id, user_name, kind, at_ms)
    )",
    "CREATE INDEX activity_events_at ON activity_events (at_ms)",
    // `day`: days since 1970-01-01 in UTC+8.
    "CREATE TABLE activity_daily (
        tenant_id TEXT NOT NULL,
        day INTEGER NOT NULL,
        user_name TEXT NOT NULL,
        logins INTEGER NOT NULL DEFAULT 0,
        uses INTEGER NOT NULL DEFAULT 0,
        first_at BIGINT NOT NULL,
        last_at BIGINT NOT NULL,
        PRIMARY KEY (tenant_id, day, user_name)
    )",
    "CREATE INDEX activity_daily_day ON activity_daily (day, tenant_id)",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in UP {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP TABLE IF EXISTS activity_daily")
            .await?;
        db.execute_unprepared("DROP TABLE IF EXISTS activity_events")
            .await?;
        Ok(())
    }
}
