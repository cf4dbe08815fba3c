//! kitsync-sql: the one way kitsync writes raw SQL. A tiny text builder that numbers
//! placeholders per backend (`$n` for PostgreSQL, anonymous `?` for SQLite), plus the chunking
//! rule for multi-row statements.
//!
//! Statements are written piece by piece, each value bound where it appears, so nothing ever
//! rewrites placeholders afterwards. SQLite gets anonymous `?` because its parser resolves
//! numbered (`?NNN`) and named (`$NNN`) parameters by a linear search per parameter: preparing a
//! 30 000-parameter insert costs about 10 ms with `?` and 1.4 s with `?NNN` (decision 0042 in
//! `docs/decisions/`). The store, the queue and the binary's maintenance commands all use it.
//!
//! It also holds [`audit`], the administration audit log every operator change writes in its
//! own transaction, and [`WriteGate`]: SQLite's one writer per file, taken in arrival order by the
//! writers of one process (the store's apply, the embedded queue) instead of in SQLite's
//! sleeping busy handler.
use sea_orm::{DbBackend, Statement, Value};
use std::fmt::Write as _;

pub mod audit;
mod col;
mod gate;
pub use col::get;
pub use gate::{WriteGate, WriteTurn};

/// Keys per `IN (...)` list or rows per multi-row statement, at most.
pub const MAX_ROWS: usize = 1000;
/// Bound parameters per statement, at most (SQLite's limit is 32 766).
pub const MAX_PARAMS: usize = 30_000;

/// Rows per multi-row statement for a table of `columns` columns.
pub fn rows_per_statement(columns: usize) -> usize {
    (MAX_PARAMS / columns.max(1)).clamp(1, MAX_ROWS)
}

/// SQL text and its bound values, built piece by piece (see the module).
pub struct Sql {
    backend: DbBackend,
    text: String,
    values: Vec<Value>,
}

impl Sql {
    /// An empty statement for `backend`.
    pub fn new(backend: DbBackend) -> Self {
        Sql {
            backend,
            text: String::with_capacity(256),
            values: Vec::new(),
        }
    }

    /// Appends SQL text.
    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    /// Appends one placeholder bound to `v`.
    pub fn bind(&mut self, v: impl Into<Value>) -> &mut Self {
        self.values.push(v.into());
        match self.backend {
            DbBackend::Postgres => {
                let _ = write!(self.text, "${}", self.values.len());
            }
            _ => self.text.push('?'),
        }
        self
    }

    /// Appends one piece per item, written by `each`, with `sep` between them: the one place
    /// a list's separators are handled.
    pub fn joined<T>(
        &mut self,
        items: impl IntoIterator<Item = T>,
        sep: &str,
        mut each: impl FnMut(&mut Self, T),
    ) -> &mut Self {
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.text.push_str(sep);
            }
            each(self, item);
        }
        self
    }

    /// Appends `(p, p, …)`, one placeholder per value.
    pub fn bind_tuple<I, V>(&mut self, values: I) -> &mut Self
    where
        I: IntoIterator<Item = V>,
        V: Into<Value>,
    {
        self.text.push('(');
        self.bind_list(values);
        self.text.push(')');
        self
    }

    /// Appends `p, p, …` (no parentheses).
    pub fn bind_list<I, V>(&mut self, values: I) -> &mut Self
    where
        I: IntoIterator<Item = V>,
        V: Into<Value>,
    {
        self.joined(values, ", ", |sql, v| {
            sql.bind(v);
        })
    }

    /// Appends `(p, …), (p, …)`: one tuple per row.
    pub fn bind_rows<R, V>(&mut self, rows: impl IntoIterator<Item = R>) -> &mut Self
    where
        R: IntoIterator<Item = V>,
        V: Into<Value>,
    {
        self.joined(rows, ", ", |sql, row| {
            sql.bind_tuple(row);
        })
    }

    /// The statement, leaving this builder empty: for a statement written in one chain,
    /// `sql.push(…).bind(…).take()`.
    pub fn take(&mut self) -> Statement {
        let text = std::mem::take(&mut self.text);
        let values = std::mem::take(&mut self.values);
        Statement::from_sql_and_values(self.backend, text, values)
    }

    /// The statement.
    pub fn build(self) -> Statement {
        Statement::from_sql_and_values(self.backend, self.text, self.values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_placeholders_per_backend() {
        let mut pg = Sql::new(DbBackend::Postgres);
        pg.push("SELECT 1 WHERE a = ")
            .bind(1_i64)
            .push(" AND b IN (")
            .bind_list(["x", "y"])
            .push(") AND c = ")
            .bind_tuple([true])
            .push(" AND d IN ")
            .bind_rows([["p", "q"], ["r", "s"]])
            .push(" AND ")
            .joined(["e", "f"], " OR ", |sql, c| {
                sql.push(c).push(" = ").bind(0_i64);
            });
        assert_eq!(
            pg.build().sql,
            "SELECT 1 WHERE a = $1 AND b IN ($2, $3) AND c = ($4) AND d IN ($5, $6), ($7, $8) \
             AND e = $9 OR f = $10"
        );
        let mut lite = Sql::new(DbBackend::Sqlite);
        lite.push("x = ")
            .bind(1_i64)
            .push(", ")
            .bind_tuple(["a", "b"]);
        let st = lite.build();
        assert_eq!(st.sql, "x = ?, (?, ?)");
        assert_eq!(st.values.map(|v| v.0.len()), Some(3));
    }

    #[test]
    fn chunks_stay_under_the_parameter_limit() {
        assert_eq!(rows_per_statement(8), 1000);
        assert_eq!(rows_per_statement(60), 500);
        assert!(rows_per_statement(17) * 17 <= MAX_PARAMS);
        assert_eq!(rows_per_statement(0), 1000);
    }
}
