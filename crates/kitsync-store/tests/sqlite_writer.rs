//! What the SQLite apply relies on to write without `RETURNING` (`Stored::All` in
//! `src/apply/mod.rs`): in a transaction that has read, a write fails, instead of going
//! ahead, when another connection committed after that read. So rows the apply decided
//! against its probes are stored as decided, or the transaction fails (transiently) and is
//! retried.
//! SQLite only (PostgreSQL names the rows it wrote).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use migrations::testing::fresh_db;
use sea_orm::{ConnectionTrait as _, DbBackend, Statement, TransactionTrait as _};

fn sql(s: &str) -> Statement {
    Statement::from_string(DbBackend::Sqlite, s)
}

#[tokio::test]
async fn a_transaction_that_read_cannot_write_over_a_later_commit() {
    let db = fresh_db().await.expect("test database");
    if db.is_postgres() {
        db.cleanup().await;
        return;
    }
    let conn = &db.conn;
    conn.execute(sql("INSERT INTO tenant_marks (tenant_id) VALUES ('t')"))
        .await
        .unwrap();
    let txn = conn.begin().await.unwrap();
    // The probe: this transaction's snapshot starts here.
    let before = txn
        .query_all(sql("SELECT tenant_id FROM tenant_marks"))
        .await
        .unwrap();
    assert_eq!(before.len(), 1);
    // Another writer commits meanwhile (the pool hands out another connection).
    conn.execute(sql("INSERT INTO tenant_marks (tenant_id) VALUES ('u')"))
        .await
        .unwrap();
    // The write decided on the stale probe is refused, not applied.
    let refused = txn
        .execute(sql("INSERT INTO tenant_marks (tenant_id) VALUES ('v')"))
        .await;
    let Err(refused) = refused else {
        panic!("a stale reader was allowed to write");
    };
    // And the worker retries it (a busy database is not the message's fault).
    assert!(
        kitsync_store::StoreError::from(refused).is_transient(),
        "refused, but not as a transient error"
    );
    drop(txn);
    // Whereas a transaction whose first statement writes holds the write lock until it ends.
    let txn = conn.begin().await.unwrap();
    txn.execute(sql(
        "INSERT INTO tenant_marks (tenant_id) VALUES ('t') ON CONFLICT (tenant_id) DO UPDATE SET tenant_id = excluded.tenant_id",
    ))
    .await
    .unwrap();
    let other = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        conn.execute(sql("INSERT INTO tenant_marks (tenant_id) VALUES ('w')")),
    )
    .await;
    assert!(
        other.is_err(),
        "another connection wrote while a write transaction was open"
    );
    txn.commit().await.unwrap();
    db.cleanup().await;
}
