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

/// Messages queued before the bodies moved to `queue_bodies` keep their bodies, and get them
/// back if the migration is undone.
#[tokio::test]
async fn queued_bodies_move_to_their_own_table_and_back() {
    let db = fresh_db().await.unwrap();
    let conn = &db.conn;
    let backend = conn.get_database_backend();
    let run = |sql: &str| conn.execute(Statement::from_string(backend, sql.to_owned()));
    let body_of = |table: &'static str| async move {
        let row = conn
            .query_one(Statement::from_string(
                backend,
                format!("SELECT body FROM {table} WHERE message_id = 'm-1'"),
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index::<Vec<u8>>(0).unwrap()
    };
    // Undoes the migration that moved them, and any after it.
    let all = Migrator::migrations();
    let at = all
        .iter()
        .position(|m| m.name() == "m20261204_000016_queue_bodies")
        .unwrap();
    let undo = Some(u32::try_from(all.len() - at).unwrap());
    Migrator::down(conn, undo).await.unwrap();
    let blob = if db.is_postgres() {
        "'\\x6b69742d626f6479'::bytea"
    } else {
        "X'6b69742d626f6479'"
    };
    run(&format!(
        "INSERT INTO queue_messages (message_id, body, attempts, available_at, enqueued_at) \
         VALUES ('m-1', {blob}, 0, 1, 1)"
    ))
    .await
    .unwrap();
    Migrator::up(conn, None).await.unwrap();
    assert_eq!(body_of("queue_bodies").await, b"kit-body");
    assert!(
        run("SELECT body FROM queue_messages").await.is_err(),
        "queue_messages.body is gone"
    );
    // Published since: a row and a body.
    run(
        "INSERT INTO queue_messages (message_id, attempts, available_at, enqueued_at) \
         VALUES ('m-2', 0, 1, 1)",
    )
    .await
    .unwrap();
    Migrator::down(conn, undo).await.unwrap();
    assert_eq!(body_of("queue_messages").await, b"kit-body");
    db.cleanup().await;
}
