//! A member's recent changes, read from the journal newest first by tenant, entity and key
//! (the console's member view): `journal_entity (tenant_id, entity, entity_key, id)`. Without
//! it, the read steps through the tenant's whole journal.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX journal_entity ON journal (tenant_id, entity, entity_key, id)",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX journal_entity")
            .await?;
        Ok(())
    }
}
