//! Indexes for the directory API's member pages: by department in `userName` order, and by
//! display-name prefix (the `q` search). They replace `members_org`, which the first one
//! covers.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for sql in [
            "CREATE INDEX members_org_user ON members (tenant_id, org_code, user_name)",
            "CREATE INDEX members_name ON members (tenant_id, name)",
            "DROP INDEX members_org",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for sql in [
            "CREATE INDEX members_org ON members (tenant_id, org_code)",
            "DROP INDEX members_name",
            "DROP INDEX members_org_user",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}
