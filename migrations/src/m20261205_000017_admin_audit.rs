//! The administration audit log: `admin_audit`, one row per change an operator made (a held
//! plan approved or rejected, a dead letter replayed, a webhook endpoint retried, disabled,
//! enabled or removed, an API token created or revoked, an OIDC client added or removed),
//! written in the change's own transaction.
//!
//! `token_id` is the API token of an `/admin/v1` request (NULL: the command line), `actor`
//! says the same for people, `action` what was done (`plan.approve`, …), `target` to what,
//! `tenant_id` the tenant it concerns (when one), `detail` a JSON object of the rest. Rows are
//! read newest first (`id`).
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
        db.execute_unprepared(&format!(
            "CREATE TABLE admin_audit (
                id {id},
                at BIGINT NOT NULL,
                token_id TEXT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                target TEXT NOT NULL,
                tenant_id TEXT NULL,
                detail TEXT NOT NULL
            )"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE admin_audit")
            .await?;
        Ok(())
    }
}
