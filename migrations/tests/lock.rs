//! Migrating under the migration lock, and the read-only schema check, on the configured
//! backend (SQLite, or PostgreSQL with `KITSYNC_TEST_DATABASE_URL`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use migrations::testing::{fresh_db, fresh_db_with, TestDb};
use migrations::{connect, ensure_current, migrate, Migrator, MigratorTrait, SchemaStatus};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);

/// The tables of `db`, sorted.
async fn tables(db: &TestDb) -> Vec<String> {
    let sql = if db.is_postgres() {
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() ORDER BY 1"
    } else {
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         ORDER BY 1"
    };
    db.conn
        .query_all(Statement::from_string(
            db.conn.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .collect()
}

fn all_migrations() -> Vec<String> {
    Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect()
}

/// Takes the lock `migrate` needs, from a connection of its own: the advisory lock on
/// PostgreSQL, the writer lock on SQLite. `release` gives it back.
struct Holder(DatabaseConnection, bool);

impl Holder {
    async fn take(db: &TestDb) -> Holder {
        // One connection, so the release runs in the session/transaction that took the lock.
        let conn = connect(&db.url, 1).await.unwrap();
        let sql = if db.is_postgres() {
            format!(
                "SELECT pg_advisory_lock({})",
                migrations::MIGRATION_LOCK_KEY
            )
        } else {
            "BEGIN IMMEDIATE".to_owned()
        };
        conn.execute_unprepared(&sql).await.unwrap();
        Holder(conn, db.is_postgres())
    }

    async fn release(self) {
        let sql = if self.1 {
            format!(
                "SELECT pg_advisory_unlock({})",
                migrations::MIGRATION_LOCK_KEY
            )
        } else {
            "COMMIT".to_owned()
        };
        self.0.execute_unprepared(&sql).await.unwrap();
        self.0.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_migrating_a_fresh_database_at_once_all_succeed() {
    let db = fresh_db_with(false).await.unwrap();
    // Each call has a pool of its own, like a process: separate sessions / connections.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let url = db.url.clone();
        tasks.spawn(async move {
            let conn = connect(&url, 2).await?;
            let r = migrate(&conn, || {}).await;
            conn.close().await?;
            r
        });
    }
    let mut done = 0;
    while let Some(r) = tokio::time::timeout(DEADLINE, tasks.join_next())
        .await
        .expect("the migrations did not finish within 60 s")
    {
        r.unwrap().unwrap();
        done += 1;
    }
    assert_eq!(done, 8);

    let status = SchemaStatus::read(&db.conn).await.unwrap();
    assert!(status.is_current(), "{status:?}");
    let applied = Migrator::get_applied_migrations(&db.conn).await.unwrap();
    assert_eq!(applied.len(), all_migrations().len());
    // The same tables as a database migrated by one process alone.
    let reference = fresh_db().await.unwrap();
    assert_eq!(tables(&db).await, tables(&reference).await);
    reference.cleanup().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_that_finds_the_lock_taken_says_so_once_then_waits_for_it() {
    let db = fresh_db_with(false).await.unwrap();
    let holder = Holder::take(&db).await;

    let (said, heard) = tokio::sync::oneshot::channel();
    let url = db.url.clone();
    let task = tokio::spawn(async move {
        let conn = connect(&url, 2).await?;
        let r = migrate(&conn, move || {
            said.send(()).unwrap();
        })
        .await;
        conn.close().await?;
        r
    });
    tokio::time::timeout(DEADLINE, heard)
        .await
        .expect("the waiting migration did not say so")
        .unwrap();
    assert!(!task.is_finished(), "it must wait while the lock is held");
    assert!(
        SchemaStatus::read(&db.conn).await.unwrap().pending.len() == all_migrations().len(),
        "nothing may be migrated while the lock is held"
    );

    holder.release().await;
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("the migration did not finish after the lock was released")
        .unwrap()
        .unwrap();
    ensure_current(&db.conn).await.unwrap();
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_migration_leaves_nothing_behind_and_releases_the_lock() {
    let db = fresh_db_with(false).await.unwrap();
    // A table in the way of the first migration: it fails.
    db.conn
        .execute_unprepared("CREATE TABLE tenants (x INTEGER)")
        .await
        .unwrap();
    let err = migrate(&db.conn, || panic!("nobody else holds the lock"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("tenants"), "{err}");
    // One transaction on both backends: not even the migrations table is left.
    assert_eq!(tables(&db).await, ["tenants"]);
    let status = SchemaStatus::read(&db.conn).await.unwrap();
    assert_eq!(status.pending, all_migrations());

    // The lock was released: the next run does not wait (its callback would panic).
    db.conn
        .execute_unprepared("DROP TABLE tenants")
        .await
        .unwrap();
    tokio::time::timeout(
        DEADLINE,
        migrate(&db.conn, || panic!("the lock was not released")),
    )
    .await
    .expect("the second migration hung")
    .unwrap();
    ensure_current(&db.conn).await.unwrap();
    db.cleanup().await;
}

#[tokio::test]
async fn the_schema_check_reads_without_changing_anything() {
    let db = fresh_db_with(false).await.unwrap();
    let status = SchemaStatus::read(&db.conn).await.unwrap();
    assert_eq!(status.pending, all_migrations());
    assert!(status.unknown.is_empty());
    let message = ensure_current(&db.conn).await.unwrap_err().to_string();
    let n = all_migrations().len();
    assert!(
        message.contains(&format!(
            "the database schema is older than this kitsync ({n} migrations pending, e.g. {}): \
             run `kitsync migrate`",
            all_migrations()[0]
        )),
        "{message}"
    );
    assert!(tables(&db).await.is_empty(), "{:?}", tables(&db).await);

    migrate(&db.conn, || {}).await.unwrap();
    ensure_current(&db.conn).await.unwrap();

    // One migration missing: pending, named.
    let last = all_migrations().pop().unwrap();
    db.conn
        .execute_unprepared(&format!(
            "DELETE FROM seaql_migrations WHERE version = '{last}'"
        ))
        .await
        .unwrap();
    let message = ensure_current(&db.conn).await.unwrap_err().to_string();
    assert!(
        message.contains(&format!("(1 migration pending, e.g. {last})")),
        "{message}"
    );
    db.conn
        .execute_unprepared(&format!(
            "INSERT INTO seaql_migrations (version, applied_at) VALUES ('{last}', 0)"
        ))
        .await
        .unwrap();
    ensure_current(&db.conn).await.unwrap();

    // A migration of a newer build: the check and the migrator both refuse, naming it.
    db.conn
        .execute_unprepared(
            "INSERT INTO seaql_migrations (version, applied_at) \
             VALUES ('m29991231_000001_future', 0)",
        )
        .await
        .unwrap();
    let status = SchemaStatus::read(&db.conn).await.unwrap();
    assert_eq!(status.unknown, ["m29991231_000001_future"]);
    assert!(status.pending.is_empty());
    for message in [
        ensure_current(&db.conn).await.unwrap_err().to_string(),
        migrate(&db.conn, || {}).await.unwrap_err().to_string(),
    ] {
        assert!(
            message.contains("migrated by a newer kitsync")
                && message.contains("m29991231_000001_future"),
            "{message}"
        );
    }
    db.cleanup().await;
}
