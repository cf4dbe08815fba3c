//! Schema migrations for kitsync, plus the one place that opens a database connection.
//!
//! Migrations are append-only: one file per migration, listed in [`Migrator::migrations`].
//! Every table is created for both PostgreSQL and SQLite (the embedded default).
//!
//! - `m20261122_000001_directory`: the directory (tenants, apps, departments, members,
//!   authorisations, groups), the change journal and the held full-sync plans.
//! - `m20261122_000002_intake`: the durable intake: embedded queue, dead letters, Kit nonces.
//! - `m20261129_000003_churn`: sooner autovacuum for the high-churn intake tables (PostgreSQL).
//! - `m20261129_000004_api_tokens`: bearer tokens of the read and activity APIs.
//! - `m20261129_000005_directory_reads`: member indexes for the directory API's pages.
//! - `m20261129_000006_scim_groups`: version, `externalId` and unique names of SCIM groups.
//! - `m20261129_000007_webhooks`: webhook endpoints (filters, cursor, retry schedule, lease)
//!   and their recent delivery attempts.
//! - `m20261129_000008_member_name_search`: an expression index for the member name search.
//! - `m20261129_000009_activity`: raw activity events and their daily rollups.
//! - `m20261129_000010_stats_windows`: precomputed statistics per tenant and day.
//! - `m20261203_000011_replay_keys`: the Kit replay ledger keyed by the verified signature.
//! - `m20261203_000012_login`: OpenID Connect clients, signing keys, login flows, sessions and
//!   tokens of the Kit login bridge.
//! - `m20261204_000013_replay_ledger_owner`: the replay ledger's owning message and how long
//!   a key is kept, now that the worker writes it.
//! - `m20261204_000014_stats_days`: global per-day statistics kept with the per-tenant
//!   windows; windows are marked stale instead of deleted.
//! - `m20261204_000015_stats_days_stale`: whether some window of a day may be stale, on the
//!   day's row.
//! - `m20261204_000016_queue_bodies`: the embedded queue's message bodies in a table of their
//!   own, so leasing a message does not rewrite its body.
//! - `m20261205_000017_admin_audit`: the administration audit log, one row per operator change.
//! - `m20261205_000018_member_history`: an index for one member's changes in the journal.
//!
//! [`connect`] applies the SQLite settings kitsync relies on (WAL, busy timeout, foreign keys
//! off, checkpoints by a background task instead of inside writers' commits) and `testing` gives each test its own fresh database (behind the `testing` feature,
//! which only tests enable). [`migrate`] applies the migrations one process at a time (a lock,
//! see `apply.rs`); [`ensure_current`] checks, without changing anything, that a database's
//! schema is this build's.
pub use sea_orm_migration::prelude::*;

mod apply;
mod m20261122_000001_directory;
mod m20261122_000002_intake;
pub mod m20261129_000003_churn;
mod m20261129_000004_api_tokens;
mod m20261129_000005_directory_reads;
mod m20261129_000006_scim_groups;
mod m20261129_000007_webhooks;
mod m20261129_000008_member_name_search;
mod m20261129_000009_activity;
mod m20261129_000010_stats_windows;
mod m20261203_000011_replay_keys;
mod m20261203_000012_login;
mod m20261204_000013_replay_ledger_owner;
mod m20261204_000014_stats_days;
mod m20261204_000015_stats_days_stale;
mod m20261204_000016_queue_bodies;
mod m20261205_000017_admin_audit;
mod m20261205_000018_member_history;
#[cfg(feature = "testing")]
pub mod testing;

pub use apply::{ensure_current, migrate, SchemaStatus, MIGRATION_LOCK_KEY};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use std::time::Duration;

pub struct Migrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_directory::Migration),
            Box::new(m20261122_000002_intake::Migration),
            Box::new(m20261129_000003_churn::Migration),
            Box::new(m20261129_000004_api_tokens::Migration),
            Box::new(m20261129_000005_directory_reads::Migration),
            Box::new(m20261129_000006_scim_groups::Migration),
            Box::new(m20261129_000007_webhooks::Migration),
            Box::new(m20261129_000008_member_name_search::Migration),
            Box::new(m20261129_000009_activity::Migration),
            Box::new(m20261129_000010_stats_windows::Migration),
            Box::new(m20261203_000011_replay_keys::Migration),
            Box::new(m20261203_000012_login::Migration),
            Box::new(m20261204_000013_replay_ledger_owner::Migration),
            Box::new(m20261204_000014_stats_days::Migration),
            Box::new(m20261204_000015_stats_days_stale::Migration),
            Box::new(m20261204_000016_queue_bodies::Migration),
            Box::new(m20261205_000017_admin_audit::Migration),
            Box::new(m20261205_000018_member_history::Migration),
        ]
    }
}

/// Opens a connection pool on `url` (`postgres://…` or `sqlite://path?mode=rwc`).
///
/// Connections are not pinged before each use (see below). SQLite gets WAL journaling (readers never block the writer), a 10 s busy timeout and
/// `synchronous=FULL`, so a committed row in the embedded queue survives a power cut.
///
/// # Errors
/// Returns the driver error when the database cannot be reached or opened.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.max_connections(max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(2))
        .acquire_timeout(Duration::from_secs(2))
        // No ping before every checkout: it is a round trip per statement on the callback
        // path, and a dead connection fails the statement anyway (the caller's error path
        // handles it, and the pool drops the connection).
        .test_before_acquire(false)
        .sqlx_logging(false);
    opts.map_sqlx_sqlite_opts(|o| {
        use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
        o.journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .create_if_missing(true)
            // Checkpoints run in the background (see `checkpointer`); a committing writer
            // only checkpoints when the WAL has outgrown them by far.
            .pragma("wal_autocheckpoint", BACKSTOP_CHECKPOINT_PAGES.to_string())
    });
    let db = Database::connect(opts).await?;
    if let DatabaseConnection::SqlxSqlitePoolConnection(_) = &db {
        tokio::spawn(checkpointer(db.get_sqlite_connection_pool().clone()));
    }
    Ok(db)
}

/// WAL pages (4 KiB each) past which a committing writer checkpoints by itself, SQLite's
/// own rule at ten times its default: the background [`checkpointer`] normally keeps the
/// WAL far below it.
const BACKSTOP_CHECKPOINT_PAGES: u32 = 10_000;
/// How often the [`checkpointer`] looks at the WAL while it has work, and when idle.
const CHECKPOINT_BUSY_TICK: Duration = Duration::from_millis(20);
const CHECKPOINT_IDLE_TICK: Duration = Duration::from_millis(250);

/// Copies committed WAL pages back into the database file, off the writers' path.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses the WAL threshold:
/// that writer copies every page written since the last checkpoint and syncs the database
/// file before it returns, while every other writer waits on the write lock. On the
/// embedded setup that is the worker's apply or a callback's queue insert. A `PASSIVE`
/// checkpoint from another connection does the same copy without taking the write lock, so
/// writers go on appending to the WAL meanwhile, on the other core. It never waits for
/// readers or writers: what it cannot copy yet is copied on a later tick. The task holds
/// the pool, and ends when the pool is closed or the runtime stops.
async fn checkpointer(pool: sea_orm::sqlx::SqlitePool) {
    use sea_orm::sqlx::Row;
    let (mut tick, mut last) = (CHECKPOINT_IDLE_TICK, (0, 0));
    loop {
        tokio::select! {
            () = pool.close_event() => return,
            () = tokio::time::sleep(tick) => {}
        }
        // (busy, frames in the WAL, frames copied back). An error (the pool closing, a disk
        // error a writer meets too) only skips this tick.
        let seen = sea_orm::sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&pool)
            .await
            .ok()
            .and_then(|row| {
                Some((
                    row.try_get::<i64, _>(1).ok()?,
                    row.try_get::<i64, _>(2).ok()?,
                ))
            });
        // Looked at often while the WAL moves, seldom once it stands still.
        tick = match seen {
            Some(now) if now != last => {
                last = now;
                CHECKPOINT_BUSY_TICK
            }
            _ => CHECKPOINT_IDLE_TICK,
        };
    }
}

/// Opens `url` and applies every pending migration under the migration lock ([`migrate`]).
///
/// # Errors
/// Returns the driver error when the database cannot be reached or a migration fails, and
/// refuses a database migrated by a newer build.
pub async fn connect_and_migrate(
    url: &str,
    max_connections: u32,
) -> Result<DatabaseConnection, DbErr> {
    let db = connect(url, max_connections).await?;
    migrate(&db, || {}).await?;
    Ok(db)
}
