//! The directory: tenants, apps, departments, members, authorisations, groups, the change
//! journal and the held full-sync plans.
//!
//! Every directory row keeps the rank of the change that last wrote it: `version` (the
//! marketplace time of the change, Unix ms) and `fp` (a content fingerprint; `i64::MAX` marks
//! a delete). Deletes leave the row behind as a tombstone (`deleted = TRUE`) so a late, older
//! add cannot resurrect it. Times are BIGINT Unix milliseconds.
//!
//! Raw SQL per backend: the two dialects differ only in the auto-increment key, and hand-written
//! DDL keeps the row-value comparisons and partial updates of the store's write path in view.
use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// `{ID}` is replaced by the backend's auto-increment primary key.
const UP: &[&str] = &[
    // A tombstone keeps the fields of the last upsert (a delete only names the tenant).
    "CREATE TABLE tenants (
        tenant_id TEXT NOT NULL PRIMARY KEY,
        tenant_code TEXT NOT NULL,
        name TEXT NOT NULL,
        domain_name TEXT NULL,
        test BOOLEAN NOT NULL DEFAULT FALSE,
        deleted BOOLEAN NOT NULL DEFAULT FALSE,
        version BIGINT NOT NULL,
        fp BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    )",
    // One row per tenant any command ever named, written first by every apply transaction: the
    // upsert row-locks it (per-tenant serialisation) and returns the tenant's cutoffs.
    "CREATE TABLE tenant_marks (
        tenant_id TEXT NOT NULL PRIMARY KEY,
        purged_version BIGINT NOT NULL DEFAULT 0,
        org_snapshot_version BIGINT NOT NULL DEFAULT 0
    )",
    // Every non-empty instanceId seen for the tenant, from any callback kind, whatever the
    // change's outcome: a set, so the result does not depend on arrival order.
    "CREATE TABLE tenant_instances (
        tenant_id TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        first_seen_at BIGINT NOT NULL,
        PRIMARY KEY (tenant_id, instance_id)
    )",
    // client_secret is sealed by the ingress (encrypted at rest); cleared on delete.
    "CREATE TABLE apps (
        tenant_id TEXT NOT NULL,
        app_id TEXT NOT NULL,
        client_id TEXT NOT NULL,
        client_secret TEXT NOT NULL,
        test BOOLEAN NOT NULL DEFAULT FALSE,
        deleted BOOLEAN NOT NULL DEFAULT FALSE,
        version BIGINT NOT NULL,
        fp BIGINT NOT NULL,
        purged_version BIGINT NOT NULL DEFAULT 0,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (tenant_id, app_id)
    )",
    "CREATE TABLE departments (
        tenant_id TEXT NOT NULL,
        org_code TEXT NOT NULL,
        org_name TEXT NOT NULL,
        parent_code TEXT NULL,
        test BOOLEAN NOT NULL DEFAULT FALSE,
        deleted BOOLEAN NOT NULL DEFAULT FALSE,
        version BIGINT NOT NULL,
        fp BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (tenant_id, org_code)
    )",
    "CREATE INDEX departments_parent ON departments (tenant_id, parent_code)",
    "CREATE TABLE members (
        tenant_id TEXT NOT NULL,
        user_name TEXT NOT NULL,
        name TEXT NULL,
        org_code TEXT NULL,
        position TEXT NULL,
        employee_code TEXT NULL,
        employee_type INTEGER NULL,
        mobile TEXT NULL,
        email TEXT NULL,
        work_place TEXT NULL,
        entry_date TEXT NULL,
        extension TEXT NULL,
        test BOOLEAN NOT NULL DEFAULT FALSE,
        deleted BOOLEAN NOT NULL DEFAULT FALSE,
        version BIGINT NOT NULL,
        fp BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (tenant_id, user_name)
    )",
    "CREATE INDEX members_org ON members (tenant_id, org_code)",
    "CREATE TABLE authorizations (
        tenant_id TEXT NOT NULL,
        app_id TEXT NOT NULL,
        user_name TEXT NOT NULL,
        role TEXT NOT NULL,
        enabled BOOLEAN NOT NULL,
        test BOOLEAN NOT NULL DEFAULT FALSE,
        deleted BOOLEAN NOT NULL DEFAULT FALSE,
        version BIGINT NOT NULL,
        fp BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (tenant_id, app_id, user_name)
    )",
    "CREATE INDEX authorizations_user ON authorizations (tenant_id, user_name)",
    // Groups the ISV creates through SCIM. The per-app role groups are derived from
    // authorizations by a query and are not stored.
    "CREATE TABLE groups (
        tenant_id TEXT NOT NULL,
        group_id TEXT NOT NULL,
        display_name TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT 'scim',
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (tenant_id, group_id)
    )",
    "CREATE TABLE group_members (
        tenant_id TEXT NOT NULL,
        group_id TEXT NOT NULL,
        user_name TEXT NOT NULL,
        PRIMARY KEY (tenant_id, group_id, user_name)
    )",
    "CREATE INDEX group_members_user ON group_members (tenant_id, user_name)",
    // One row per directory row written, in commit order per tenant (see kitsync-store).
    "CREATE TABLE journal (
        id {ID},
        tenant_id TEXT NOT NULL,
        entity TEXT NOT NULL,
        entity_key TEXT NOT NULL,
        action TEXT NOT NULL,
        version BIGINT NOT NULL,
        data TEXT NOT NULL,
        test BOOLEAN NOT NULL DEFAULT FALSE,
        applied_at BIGINT NOT NULL
    )",
    "CREATE INDEX journal_tenant ON journal (tenant_id, id)",
    // Full department snapshots held by the mass-deletion guard, and what became of them.
    "CREATE TABLE org_plans (
        id {ID},
        tenant_id TEXT NOT NULL,
        version BIGINT NOT NULL,
        snapshot TEXT NOT NULL,
        deletes TEXT NOT NULL,
        delete_count INTEGER NOT NULL,
        live_before INTEGER NOT NULL,
        org_count INTEGER NOT NULL,
        status TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        decided_at BIGINT NULL,
        reason TEXT NULL
    )",
    "CREATE INDEX org_plans_tenant_status ON org_plans (tenant_id, status)",
];

const TABLES: &[&str] = &[
    "org_plans",
    "journal",
    "group_members",
    "groups",
    "authorizations",
    "members",
    "departments",
    "apps",
    "tenant_instances",
    "tenant_marks",
    "tenants",
];

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
        for sql in UP {
            db.execute_unprepared(&sql.replace("{ID}", id)).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for table in TABLES {
            db.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}"))
                .await?;
        }
        Ok(())
    }
}
