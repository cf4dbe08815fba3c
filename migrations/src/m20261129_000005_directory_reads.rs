//! An index for the directory API's member pages by department, in `userName` order. It
//! replaces `members_org`, which it covers.
//!
//! Deliberately no `(tenant_id, name)` index for the `q` search: while a tenant's first big
//! sync outruns the statistics, PostgreSQL took such an index (smaller than the primary key,
//! and "as good" for a tenant it believes tiny) for the write path's primary-key probes and
//! scanned the whole tenant per probe. The name-prefix search walks the primary key instead.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for sql in [
            "CREATE INDEX members_org_user ON members (tenant_id, org_code, user_name)",
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
            "DROP INDEX members_org_user",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}
