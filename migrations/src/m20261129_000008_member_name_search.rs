//! The directory API's `q` search on member names, index-backed without the trap that
//! migration `m20261129_000005_directory_reads` describes: the index is on an expression,
//! `tenant_id || '|' || name`, that only the name search writes. No other query mentions the
//! expression, so no planner can take this index for the write path's primary-key probes,
//! however stale its statistics; the search asks for the range
//! `'{tenant}|{prefix}' <= key < '{tenant}|{prefix}\u{10FFFF}'` (and still checks the
//! tenant and the name, so a `|` in a tenant id cannot mix tenants).
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX members_name_search ON members ((tenant_id || '|' || name))",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX IF EXISTS members_name_search")
            .await?;
        Ok(())
    }
}
