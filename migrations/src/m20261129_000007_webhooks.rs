//! Webhook push of the change feed: registered endpoints and a bounded log of their recent
//! delivery attempts.
//!
//! `webhook_endpoints` keeps, per endpoint, its filters (`tenant_id`, `types`,
//! `include_test`), its position in the journal (`journal_cursor`: the last journal id
//! delivered or skipped), the batch being retried (`pending_until`: the last journal id of a
//! batch that failed, so a retry sends exactly the same events under the same `webhook-id`),
//! the retry schedule that survives restarts (`consecutive_failures`, `next_attempt_at`), what
//! operators look at (`state`, `last_status`, `last_error`, `last_attempt_at`,
//! `last_success_at`) and the lease that lets one dispatcher at a time deliver it
//! (`lease_owner`, `lease_until`). `secret` is the signing secret sealed with the master key.
//!
//! `webhook_deliveries` holds the latest attempts per endpoint (the dispatcher prunes older
//! ones in the same transaction).
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let id = match manager.get_database_backend() {
            DbBackend::Postgres => "BIGSERIAL PRIMARY KEY",
            DbBackend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            other => {
                return Err(DbErr::Migration(format!(
                    "kitsync supports PostgreSQL and SQLite, not {other:?}"
                )))
            }
        };
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE TABLE webhook_endpoints (
                id TEXT NOT NULL PRIMARY KEY,
                url TEXT NOT NULL,
                secret TEXT NOT NULL,
                tenant_id TEXT NULL,
                types TEXT NULL,
                include_test BOOLEAN NOT NULL DEFAULT FALSE,
                journal_cursor BIGINT NOT NULL,
                pending_until BIGINT NULL,
                state TEXT NOT NULL,
                consecutive_failures INTEGER NOT NULL DEFAULT 0,
                last_status INTEGER NULL,
                last_error TEXT NULL,
                last_attempt_at BIGINT NULL,
                last_success_at BIGINT NULL,
                next_attempt_at BIGINT NOT NULL,
                lease_owner TEXT NULL,
                lease_until BIGINT NULL,
                created_at BIGINT NOT NULL
            )",
        )
        .await?;
        db.execute_unprepared(&format!(
            "CREATE TABLE webhook_deliveries (
                id {id},
                endpoint_id TEXT NOT NULL,
                webhook_id TEXT NOT NULL,
                first_event_id BIGINT NOT NULL,
                last_event_id BIGINT NOT NULL,
                events INTEGER NOT NULL,
                attempt INTEGER NOT NULL,
                status INTEGER NULL,
                error TEXT NULL,
                at BIGINT NOT NULL,
                duration_ms BIGINT NOT NULL
            )"
        ))
        .await?;
        db.execute_unprepared(
            "CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id)",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP TABLE IF EXISTS webhook_deliveries")
            .await?;
        db.execute_unprepared("DROP TABLE IF EXISTS webhook_endpoints")
            .await?;
        Ok(())
    }
}
