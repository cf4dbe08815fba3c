//! Applying the migrations one process at a time, and checking the schema without changing it.
//!
//! Several kitsync processes may start together on a new database (a deployment that starts
//! `ingress` and `worker` replicas with `--migrate`, or three `kitsync migrate`): without a
//! lock each sees every migration pending and all of them run the same `CREATE TABLE`s, and
//! all but one fail (`duplicate key value violates unique constraint
//! "pg_type_typname_nsp_index"` on PostgreSQL, `table tenants already exists` on SQLite).
//! [`migrate`] therefore takes a database-wide lock first, and the process that gets it second
//! finds nothing pending.
//!
//! - PostgreSQL: the session-level advisory lock [`MIGRATION_LOCK_KEY`], on a connection of its
//!   own (not one of the pool's, which may have a single connection that the migrator needs).
//!   sea-orm-migration runs all pending migrations in one transaction on a pool connection;
//!   the lock is released after that transaction committed or rolled back, and closing the
//!   lock's session releases it whatever happened.
//! - SQLite: the database's writer lock. sea-orm-migration 1.1 opens no transaction of its own
//!   on SQLite (`exec_with_connection` runs every statement straight on the connection it is
//!   given), so [`migrate`] opens a one-connection pool, starts `BEGIN IMMEDIATE` on it (which
//!   takes the writer lock, waiting for other writers), runs the migrator on that same pool, so
//!   on that same connection inside that transaction, and commits. A second process waits in
//!   `BEGIN IMMEDIATE` and then reads the committed migrations table. The migrations become
//!   atomic on SQLite too.
use crate::{Migrator, MigratorTrait};
use sea_orm::sqlx;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, RuntimeErr, Statement};
use std::collections::BTreeSet;
use std::time::Duration;

/// The key of the PostgreSQL advisory lock held while migrating: the ASCII bytes `kitsmigr`
/// as a big-endian `i64` (7739845473718593394). Advisory locks are per database, so it only
/// serialises processes migrating the same database. (`crates/kitsync-store/src/apply/mod.rs`
/// uses `kitsjrnl` for the journal writers.)
pub const MIGRATION_LOCK_KEY: i64 = i64::from_be_bytes(*b"kitsmigr");

/// How long a SQLite `BEGIN IMMEDIATE` waits for the writer lock before the waiting is
/// reported (then it waits on, without a limit).
const SQLITE_FIRST_WAIT: Duration = Duration::from_millis(250);

/// Each further SQLite attempt waits this long in SQLite's busy handler before trying again.
const SQLITE_WAIT: Duration = Duration::from_secs(10);

/// The migration table sea-orm-migration keeps (`Migrator::migration_table_name`).
const MIGRATION_TABLE: &str = "seaql_migrations";

/// Applies every pending migration while holding the migration lock (see the module docs).
///
/// `waiting` is called once when the lock is held by someone else, before this call blocks
/// until it is free (the binary logs it). Refuses, without changing anything, a database that
/// holds migrations this build does not know (a newer kitsync migrated it).
///
/// # Errors
/// The database is unreachable, the schema is newer than this build, or a migration fails
/// (on both backends the failed run leaves no partial schema behind: it is one transaction).
pub async fn migrate(db: &DatabaseConnection, waiting: impl FnOnce() + Send) -> Result<(), DbErr> {
    match db {
        DatabaseConnection::SqlxPostgresPoolConnection(_) => migrate_postgres(db, waiting).await,
        DatabaseConnection::SqlxSqlitePoolConnection(_) => migrate_sqlite(db, waiting).await,
        // No other backend is built in; a mock or disconnected handle has nothing to lock.
        _ => Err(DbErr::Custom(
            "migrations need a PostgreSQL or SQLite connection".to_owned(),
        )),
    }
}

/// The migrator, after refusing a schema newer than this build.
async fn up(db: &DatabaseConnection) -> Result<(), DbErr> {
    let status = SchemaStatus::read(db).await?;
    if !status.unknown.is_empty() {
        return Err(DbErr::Custom(status.to_string()));
    }
    Migrator::up(db, None).await
}

async fn migrate_postgres(
    db: &DatabaseConnection,
    waiting: impl FnOnce() + Send,
) -> Result<(), DbErr> {
    let options = db.get_postgres_connection_pool().connect_options();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .test_before_acquire(false)
        .connect_with((*options).clone())
        .await
        .map_err(conn_err)?;
    let lock = sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(pool);
    let result = migrate_holding_advisory_lock(db, &lock, waiting).await;
    // Closing the lock's session releases the lock whatever happened above.
    let _ = lock.close().await;
    result
}

/// Takes [`MIGRATION_LOCK_KEY`] on `lock` (a pool of exactly one connection, so one session),
/// migrates `db`, releases the lock.
async fn migrate_holding_advisory_lock(
    db: &DatabaseConnection,
    lock: &DatabaseConnection,
    waiting: impl FnOnce() + Send,
) -> Result<(), DbErr> {
    // A server-wide `lock_timeout` or `statement_timeout` would cut the wait short.
    lock.execute_unprepared("SET lock_timeout = 0; SET statement_timeout = 0")
        .await?;
    let got = lock
        .query_one(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT pg_try_advisory_lock({MIGRATION_LOCK_KEY})"),
        ))
        .await?
        .map(|row| row.try_get_by_index::<bool>(0))
        .transpose()?
        .unwrap_or(false);
    if !got {
        waiting();
        lock.execute_unprepared(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
            .await?;
    }
    let result = up(db).await;
    // A failed unlock means a broken session, which ends when the pool closes, and with it
    // the lock: the migrations' own outcome is what the caller needs.
    let _ = lock
        .execute_unprepared(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
        .await;
    result
}

async fn migrate_sqlite(
    db: &DatabaseConnection,
    waiting: impl FnOnce() + Send,
) -> Result<(), DbErr> {
    let options = db.get_sqlite_connection_pool().connect_options();
    // One connection that is never replaced while the transaction is open: no idle or
    // lifetime limit (a replaced connection would run the rest outside the transaction; the
    // final COMMIT would then fail rather than succeed silently).
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .test_before_acquire(false)
        .connect_with((*options).clone())
        .await
        .map_err(conn_err)?;
    let conn = sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool);
    let result = migrate_in_write_transaction(&conn, waiting).await;
    let _ = conn.close().await;
    result
}

/// `BEGIN IMMEDIATE`, the migrator, `COMMIT` on `conn`, a pool of exactly one connection.
async fn migrate_in_write_transaction(
    conn: &DatabaseConnection,
    waiting: impl FnOnce() + Send,
) -> Result<(), DbErr> {
    // Short first: a process that has to wait says so (then waits on, without a limit).
    set_busy_timeout(conn, SQLITE_FIRST_WAIT).await?;
    let mut waiting = Some(waiting);
    loop {
        match conn.execute_unprepared("BEGIN IMMEDIATE").await {
            Ok(_) => break,
            Err(e) if is_sqlite_busy(&e) => {
                if let Some(report) = waiting.take() {
                    report();
                    set_busy_timeout(conn, SQLITE_WAIT).await?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    match up(conn).await {
        Ok(()) => conn.execute_unprepared("COMMIT").await.map(|_| ()),
        Err(e) => {
            let _ = conn.execute_unprepared("ROLLBACK").await;
            Err(e)
        }
    }
}

async fn set_busy_timeout(conn: &DatabaseConnection, wait: Duration) -> Result<(), DbErr> {
    conn.execute_unprepared(&format!("PRAGMA busy_timeout = {}", wait.as_millis()))
        .await
        .map(|_| ())
}

/// `SQLITE_BUSY` and its extended codes (`SQLITE_BUSY_SNAPSHOT`, …): another connection
/// holds the lock.
fn is_sqlite_busy(e: &DbErr) -> bool {
    let (DbErr::Exec(RuntimeErr::SqlxError(sqlx::Error::Database(d)))
    | DbErr::Query(RuntimeErr::SqlxError(sqlx::Error::Database(d)))
    | DbErr::Conn(RuntimeErr::SqlxError(sqlx::Error::Database(d)))) = e
    else {
        return false;
    };
    d.code()
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| c & 0xff == 5)
}

fn conn_err(e: sqlx::Error) -> DbErr {
    DbErr::Conn(RuntimeErr::SqlxError(e))
}

/// How a database's applied migrations compare with this build's, read without changing
/// anything (sea-orm's `get_pending_migrations` would create the migrations table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// This build's migrations that the database lacks, in order.
    pub pending: Vec<String>,
    /// Migrations recorded in the database that this build does not know, sorted.
    pub unknown: Vec<String>,
}

impl SchemaStatus {
    /// Reads `seaql_migrations`; a database without it has nothing applied.
    ///
    /// # Errors
    /// The database cannot be read.
    pub async fn read(db: &impl ConnectionTrait) -> Result<SchemaStatus, DbErr> {
        let backend = db.get_database_backend();
        let exists_sql = match backend {
            DbBackend::Postgres => {
                format!("SELECT COUNT(*) FROM (SELECT to_regclass('{MIGRATION_TABLE}') AS t) s WHERE t IS NOT NULL")
            }
            _ => format!(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '{MIGRATION_TABLE}'"
            ),
        };
        let exists: i64 = match db
            .query_one(Statement::from_string(backend, exists_sql))
            .await?
        {
            Some(row) => row.try_get_by_index(0)?,
            None => 0,
        };
        let applied: BTreeSet<String> = if exists > 0 {
            db.query_all(Statement::from_string(
                backend,
                format!("SELECT version FROM {MIGRATION_TABLE}"),
            ))
            .await?
            .iter()
            .map(|r| r.try_get_by_index::<String>(0))
            .collect::<Result<_, _>>()?
        } else {
            BTreeSet::new()
        };
        let known: Vec<String> = Migrator::migrations()
            .iter()
            .map(|m| m.name().to_owned())
            .collect();
        Ok(SchemaStatus {
            pending: known
                .iter()
                .filter(|m| !applied.contains(*m))
                .cloned()
                .collect(),
            unknown: applied
                .iter()
                .filter(|m| !known.contains(m))
                .cloned()
                .collect(),
        })
    }

    /// The schema is exactly this build's.
    #[must_use]
    pub fn is_current(&self) -> bool {
        self.pending.is_empty() && self.unknown.is_empty()
    }
}

/// What is wrong, for an error message; empty when the schema is current.
impl std::fmt::Display for SchemaStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(first) = self.unknown.first() {
            let n = self.unknown.len();
            return write!(
                f,
                "the database was migrated by a newer kitsync ({n} migration{} this kitsync \
                 does not know, e.g. {first}): run the newer kitsync",
                if n == 1 { "" } else { "s" }
            );
        }
        if let Some(first) = self.pending.first() {
            let n = self.pending.len();
            return write!(
                f,
                "the database schema is older than this kitsync ({n} migration{} pending, \
                 e.g. {first}): run `kitsync migrate`",
                if n == 1 { "" } else { "s" }
            );
        }
        Ok(())
    }
}

/// Checks, without changing anything, that the database's migrations are exactly this build's.
///
/// # Errors
/// [`DbErr::Custom`] saying what differs and what to do (run `kitsync migrate`, or the newer
/// kitsync), or the driver error when the database cannot be read.
pub async fn ensure_current(db: &impl ConnectionTrait) -> Result<(), DbErr> {
    let status = SchemaStatus::read(db).await?;
    if status.is_current() {
        Ok(())
    } else {
        Err(DbErr::Custom(status.to_string()))
    }
}
