use sea_orm::{ConnAcquireErr, DbErr, RuntimeErr};

/// What can go wrong in the store. Messages never carry row contents or secrets.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] DbErr),
    #[error("not found: {0}")]
    NotFound(String),
    /// The request contradicts the stored state (e.g. approving a plan that is not held).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Stored data the store cannot read back (e.g. a plan's snapshot that is not JSON).
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// True when retrying the same work later may succeed: the database is unreachable, the
    /// pool is exhausted, or the transaction lost a race (PostgreSQL serialization failure
    /// `40001`, deadlock `40P01`, SQLite busy/locked). Workers retry these without counting
    /// them against the message.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(e) => db_err_is_transient(e),
            StoreError::NotFound(_) | StoreError::Conflict(_) | StoreError::Corrupt(_) => false,
        }
    }
}

fn db_err_is_transient(e: &DbErr) -> bool {
    match e {
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout | ConnAcquireErr::ConnectionClosed) => {
            true
        }
        DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            sqlx_is_transient(e)
        }
        _ => false,
    }
}

fn sqlx_is_transient(e: &sea_orm::SqlxError) -> bool {
    use sea_orm::SqlxError as E;
    match e {
        E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => true,
        E::Database(db) => {
            let Some(code) = db.code() else {
                return false;
            };
            if db.try_downcast_ref::<sea_orm::SqlxSqliteError>().is_some() {
                sqlite_code_is_transient(&code)
            } else {
                sqlstate_is_transient(&code)
            }
        }
        _ => false,
    }
}

/// SQLite extended result codes worth a retry: SQLITE_BUSY (5) and SQLITE_LOCKED (6), with
/// their extended variants (the primary code is the low byte).
fn sqlite_code_is_transient(code: &str) -> bool {
    code.parse::<i32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
}

/// PostgreSQL SQLSTATE codes worth a retry.
fn sqlstate_is_transient(code: &str) -> bool {
    matches!(
        code,
        "40001" // serialization_failure
            | "40P01" // deadlock_detected
            | "55P03" // lock_not_available
            | "57P01" // admin_shutdown
            | "57P02" // crash_shutdown
            | "57P03" // cannot_connect_now
            | "53300" // too_many_connections
    ) || code.starts_with("08") // connection exceptions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_codes() {
        for c in ["40001", "40P01", "08006", "57P01", "53300"] {
            assert!(sqlstate_is_transient(c), "{c}");
        }
        for c in ["23505", "42P01", "22P02", "57014"] {
            assert!(!sqlstate_is_transient(c), "{c}");
        }
        for c in ["5", "6", "517", "262"] {
            assert!(sqlite_code_is_transient(c), "{c}");
        }
        for c in ["1", "19", "2067", "11"] {
            assert!(!sqlite_code_is_transient(c), "{c}");
        }
    }

    #[test]
    fn classifies_errors() {
        assert!(
            StoreError::Database(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)).is_transient()
        );
        assert!(!StoreError::Database(DbErr::Custom("x".into())).is_transient());
        assert!(!StoreError::Conflict("x".into()).is_transient());
        assert!(StoreError::Database(DbErr::Exec(RuntimeErr::SqlxError(
            sea_orm::SqlxError::PoolTimedOut
        )))
        .is_transient());
    }
}
