//! Raw-SQL helpers shared by the embedded queue, the dead-letter store and the replay ledger.
//!
//! Statements are written once with PostgreSQL's `$n` placeholders; SQLite gets `?n`, which
//! it reads as the same numbered parameter.
use sea_orm::{DbBackend, Statement, Value};

/// Builds a statement for `backend` from SQL written with `$n` placeholders.
pub(crate) fn stmt(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    let sql = match backend {
        DbBackend::Sqlite => sql.replace('$', "?"),
        _ => sql.to_owned(),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// `($first, $first+1, …)` style lists: `count` groups of `width` consecutive placeholders,
/// e.g. `width = 2` → `($1,$2),($3,$4)`; `width = 1` without parentheses → `$1,$2`.
pub(crate) fn placeholders(first: usize, count: usize, width: usize) -> String {
    let mut out = String::with_capacity(count * (width * 5 + 3));
    let mut n = first;
    for row in 0..count {
        if row > 0 {
            out.push(',');
        }
        if width > 1 {
            out.push('(');
        }
        for col in 0..width {
            if col > 0 {
                out.push(',');
            }
            out.push('$');
            out.push_str(&n.to_string());
            n += 1;
        }
        if width > 1 {
            out.push(')');
        }
    }
    out
}

/// A group commit's batch: `first`, then whatever else is already waiting in `rx`, up to
/// `max`, dropping requests whose caller stopped waiting (it has answered already).
pub(crate) fn gather<T>(
    first: T,
    rx: &mut tokio::sync::mpsc::Receiver<T>,
    max: usize,
    abandoned: impl Fn(&T) -> bool,
) -> Vec<T> {
    let mut batch = vec![first];
    while batch.len() < max {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
    batch.retain(|r| !abandoned(r));
    batch
}

/// Milliseconds as the BIGINT the tables use (saturating; settings are never that large).
pub(crate) fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Attempt counters are `INTEGER` columns.
pub(crate) fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_lists() {
        assert_eq!(placeholders(1, 2, 2), "($1,$2),($3,$4)");
        assert_eq!(placeholders(3, 3, 1), "$3,$4,$5");
        assert_eq!(placeholders(1, 0, 1), "");
    }

    #[test]
    fn sqlite_gets_numbered_question_marks() {
        let s = stmt(DbBackend::Sqlite, "SELECT $1, $2", vec![1.into(), 2.into()]);
        assert_eq!(s.sql, "SELECT ?1, ?2");
        let p = stmt(DbBackend::Postgres, "SELECT $1", vec![1.into()]);
        assert_eq!(p.sql, "SELECT $1");
    }
}
