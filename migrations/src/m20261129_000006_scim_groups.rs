//! ISV groups managed through SCIM: a version counter for ETags and `If-Match`, the client's
//! `externalId`, one display name per tenant (SCIM `uniqueness`), and members as the client
//! wrote them: in order, each with its SCIM `type` (`User`, `Group`, or none given).
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "ALTER TABLE groups ADD COLUMN version BIGINT NOT NULL DEFAULT 1",
    "ALTER TABLE groups ADD COLUMN external_id TEXT NULL",
    "CREATE UNIQUE INDEX groups_display_name ON groups (tenant_id, display_name)",
    "ALTER TABLE group_members ADD COLUMN member_type TEXT NULL",
    "ALTER TABLE group_members ADD COLUMN position INTEGER NOT NULL DEFAULT 0",
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
        db.execute_unprepared("ALTER TABLE group_members DROP COLUMN position")
            .await?;
        db.execute_unprepared("ALTER TABLE group_members DROP COLUMN member_type")
            .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS groups_display_name")
            .await?;
        db.execute_unprepared("ALTER TABLE groups DROP COLUMN external_id")
            .await?;
        db.execute_unprepared("ALTER TABLE groups DROP COLUMN version")
            .await?;
        Ok(())
    }
}
