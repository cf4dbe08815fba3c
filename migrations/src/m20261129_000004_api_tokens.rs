//! API bearer tokens for the directory, activity and statistics APIs.
//!
//! `id` is the token's public part; only the SHA-256 of its secret part is stored
//! (`kitsync_secrets::token`). `scopes` is a comma-separated list; `tenant_id` binds the token
//! to one tenant (NULL: every tenant). A revoked token keeps its row, for the audit trail.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE TABLE api_tokens (
                    id TEXT NOT NULL PRIMARY KEY,
                    name TEXT NOT NULL,
                    scopes TEXT NOT NULL,
                    tenant_id TEXT NULL,
                    secret_hash TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    revoked_at BIGINT NULL,
                    last_used_at BIGINT NULL
                )",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE IF EXISTS api_tokens")
            .await?;
        Ok(())
    }
}
