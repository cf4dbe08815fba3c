//! One SQLite writer at a time per database file, taken in arrival order within the process.
//!
//! SQLite lets one connection write at a time. A writer that finds the file locked waits in
//! SQLite's busy handler, which sleeps and retries (1, 2, 5, 10 … up to 100 ms between
//! tries). Against a writer that commits and immediately begins again (a worker draining a
//! backlog: apply, ack, claim, apply …) the sleeper keeps missing the gaps: the embedded
//! ingress's queue insert waited most of a second behind the worker while nothing else was
//! slow. So the writers of one process queue for a [`WriteGate`] first, a fair (FIFO) async
//! lock, and only the holder touches the file: the insert waits for at most the transaction
//! in progress, and never sleeps past its end.
//!
//! The gate is per file and per process: [`WriteGate::of`] returns the same lock for every
//! pool opened on the same file, so the store and the embedded queue share it without being
//! wired together. Other processes on the same file still meet in SQLite's busy handler.
//! On PostgreSQL the gate is open: [`WriteGate::turn`] returns at once.
use sea_orm::{ConnectionTrait as _, DatabaseConnection, DbBackend};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

type Lock = Arc<AsyncMutex<()>>;

/// Every gate handed out, by file; entries die with their last holder.
fn gates() -> &'static Mutex<HashMap<PathBuf, Weak<AsyncMutex<()>>>> {
    static GATES: OnceLock<Mutex<HashMap<PathBuf, Weak<AsyncMutex<()>>>>> = OnceLock::new();
    GATES.get_or_init(Mutex::default)
}

/// The write gate of one database; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct WriteGate(Option<Lock>);

/// The right to write, held until dropped.
#[must_use = "the turn ends when it is dropped"]
pub struct WriteTurn(#[allow(dead_code)] Option<OwnedMutexGuard<()>>);

impl WriteGate {
    /// The gate of `db`'s file (shared by every pool on that file in this process), or an
    /// open gate for PostgreSQL.
    #[must_use]
    pub fn of(db: &DatabaseConnection) -> Self {
        if db.get_database_backend() != DbBackend::Sqlite {
            return Self(None);
        }
        let file = db
            .get_sqlite_connection_pool()
            .connect_options()
            .get_filename()
            .to_path_buf();
        // A file opened under two spellings of its path gets two gates: correct, only less
        // fair. Canonicalise when the file exists.
        let file = std::fs::canonicalize(&file).unwrap_or(file);
        let mut gates = gates()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        gates.retain(|_, g| g.strong_count() > 0);
        if let Some(lock) = gates.get(&file).and_then(Weak::upgrade) {
            return Self(Some(lock));
        }
        let lock: Lock = Arc::default();
        gates.insert(file, Arc::downgrade(&lock));
        Self(Some(lock))
    }

    /// Waits for this process's earlier writers of the file, then holds the turn.
    pub async fn turn(&self) -> WriteTurn {
        match &self.0 {
            Some(lock) => WriteTurn(Some(Arc::clone(lock).lock_owned().await)),
            None => WriteTurn(None),
        }
    }
}
