//! Activity and statistics.
//!
//! - `activity_events`: the raw events of `POST /api/v1/activity`, kept for
//!   `store.activity_retention_days`, unique by (tenant, user, kind, time) so a re-sent batch
//!   counts once.
//! - `activity_daily`: rollups per (tenant, user, UTC+8 day), kept for good (one row per day
//!   a user was active: a year of 100 000 daily users is 36.5 M small rows, usually far fewer).
//! - `auth_spans`: when each (tenant, user, app) authorisation was live and enabled, in
//!   marketplace time (`from_v` inclusive, `to_v` exclusive, NULL while it lasts), built from
//!   the journal by the statistics indexer; `stats_cursor` is how far it has read.
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
        user_name TEXT NOT NULL,
        day INTEGER NOT NULL,
        logins INTEGER NOT NULL DEFAULT 0,
        uses INTEGER NOT NULL DEFAULT 0,
        first_at BIGINT NOT NULL,
        last_at BIGINT NOT NULL,
        PRIMARY KEY (tenant_id, user_name, day)
    )",
    "CREATE INDEX activity_daily_day ON activity_daily (day, tenant_id, user_name)",
    "CREATE TABLE auth_spans (
        tenant_id TEXT NOT NULL,
        user_name TEXT NOT NULL,
        app_id TEXT NOT NULL,
        from_v BIGINT NOT NULL,
        to_v BIGINT NULL,
        test BOOLEAN NOT NULL DEFAULT FALSE,
        PRIMARY KEY (tenant_id, user_name, app_id, from_v)
    )",
    "CREATE INDEX auth_spans_from ON auth_spans (from_v)",
    "CREATE TABLE stats_cursor (
        name TEXT NOT NULL PRIMARY KEY,
        journal_id BIGINT NOT NULL
    )",
    "INSERT INTO stats_cursor (name, journal_id) VALUES ('auth_spans', 0)",
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
        db.execute_unprepared("DROP TABLE IF EXISTS stats_cursor")
            .await?;
        db.execute_unprepared("DROP TABLE IF EXISTS auth_spans")
            .await?;
        db.execute_unprepared("DROP TABLE IF EXISTS activity_daily")
            .await?;
        db.execute_unprepared("DROP TABLE IF EXISTS activity_events")
            .await?;
        Ok(())
    }
}
