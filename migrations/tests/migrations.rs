//! The migrations on the configured backend (SQLite, or PostgreSQL with
//! `KITSYNC_TEST_DATABASE_URL`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use migrations::m20261129_000003_churn::CHURN_TABLES;
use migrations::testing::fresh_db;
use migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, Statement};

#[tokio::test]
async fn all_apply_and_the_churn_tables_vacuum_sooner_on_postgres() {
    let db = fresh_db().await.unwrap();
    let applied = Migrator::get_applied_migrations(&db.conn).await.unwrap();
    assert_eq!(applied.len(), Migrator::migrations().len());
    if db.is_postgres() {
        for table in CHURN_TABLES {
            let row = db
                .conn
                .query_one(Statement::from_string(
                    db.conn.get_database_backend(),
                    format!("SELECT array_to_string(reloptions, ',') FROM pg_class WHERE relname = '{table}'"),
                ))
                .await
                .unwrap()
                .unwrap();
            let options: String = row.try_get_by_index(0).unwrap();
            assert!(
                options.contains("autovacuum_vacuum_scale_factor=0.02"),
                "{table}: {options}"
            );
        }
        // And back: the down migration resets them (undoing it and everything after it).
        let all = Migrator::migrations();
        let at = all
            .iter()
            .position(|m| m.name() == "m20261129_000003_churn")
            .unwrap();
        Migrator::down(&db.conn, Some((all.len() - at) as u32))
            .await
            .unwrap();
        let row = db
            .conn
            .query_one(Statement::from_string(
                db.conn.get_database_backend(),
                "SELECT COALESCE(array_to_string(reloptions, ','), '') FROM pg_class WHERE relname = 'kit_nonces'".to_owned(),
            ))
            .await
            .unwrap()
            .unwrap();
        let options: String = row.try_get_by_index(0).unwrap();
        assert!(!options.contains("autovacuum"), "after down: {options}");
    }
    db.cleanup().await;
}
