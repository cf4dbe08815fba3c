//! A fresh, migrated database per test, so tests run in parallel.
//!
//! With `KITSYNC_TEST_DATABASE_URL=postgres://…/db` set, each call creates a new PostgreSQL
//! database next to `db` (named `kitsync_t_<uuid>`); without it, a new SQLite file in a temp
//! directory. The database is dropped when the [`TestDb`] is dropped only for SQLite (the temp
//! directory goes); PostgreSQL test databases are dropped by [`TestDb::cleanup`].
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, Statement};

/// One test's database.
pub struct TestDb {
    pub conn: DatabaseConnection,
    /// URL to reach the same database from another process (the e2e tests pass it to the binary).
    pub url: String,
    admin_url: Option<String>,
    name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// True when this test runs on PostgreSQL.
    #[must_use]
    pub fn is_postgres(&self) -> bool {
        self.admin_url.is_some()
    }

    /// Drops a PostgreSQL test database (best effort); a no-op on SQLite.
    pub async fn cleanup(self) {
        let (Some(admin_url), Some(name)) = (self.admin_url, self.name) else {
            return;
        };
        drop(self.conn);
        if let Ok(admin) = crate::connect(&admin_url, 1).await {
            let _ = admin
                .execute(Statement::from_string(
                    admin.get_database_backend(),
                    format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
                ))
                .await;
        }
    }
}

/// The PostgreSQL URL tests should use, if any.
#[must_use]
pub fn postgres_url() -> Option<String> {
    std::env::var("KITSYNC_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// The RabbitMQ URL tests should use, if any.
#[must_use]
pub fn amqp_url() -> Option<String> {
    std::env::var("KITSYNC_TEST_AMQP_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// Creates and migrates a fresh database for one test.
///
/// # Errors
/// Returns the driver error when the server is unreachable or a migration fails.
pub async fn fresh_db() -> Result<TestDb, DbErr> {
    fresh_db_with(true).await
}

/// Like [`fresh_db`], optionally without running the migrations.
///
/// # Errors
/// Returns the driver error when the server is unreachable or a migration fails.
pub async fn fresh_db_with(migrate: bool) -> Result<TestDb, DbErr> {
    let pool = 8;
    if let Some(admin_url) = postgres_url() {
        let name = format!("kitsync_t_{}", uuid::Uuid::new_v4().simple());
        let admin = crate::connect(&admin_url, 1).await?;
        admin
            .execute(Statement::from_string(
                admin.get_database_backend(),
                format!("CREATE DATABASE \"{name}\""),
            ))
            .await?;
        drop(admin);
        let url = replace_db_name(&admin_url, &name);
        let conn = if migrate {
            crate::connect_and_migrate(&url, pool).await?
        } else {
            crate::connect(&url, pool).await?
        };
        return Ok(TestDb {
            conn,
            url,
            admin_url: Some(admin_url),
            name: Some(name),
            _dir: None,
        });
    }
    let dir = tempfile::tempdir().map_err(|e| DbErr::Custom(format!("temp dir: {e}")))?;
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("test.sqlite").display()
    );
    let conn = if migrate {
        crate::connect_and_migrate(&url, pool).await?
    } else {
        crate::connect(&url, pool).await?
    };
    Ok(TestDb {
        conn,
        url,
        admin_url: None,
        name: None,
        _dir: Some(dir),
    })
}

/// Appends `n` bare journal rows, row `i` being `(tenant, entity, action)` of `row(i)`, written
/// directly in batches of 1000: for the feed tests, which need many rows, not the directory
/// changes behind them.
///
/// # Errors
/// Returns the driver error of a failed insert.
pub async fn append_journal(
    db: &impl ConnectionTrait,
    n: usize,
    row: impl Fn(usize) -> (&'static str, &'static str, &'static str),
) -> Result<(), DbErr> {
    for start in (0..n).step_by(1000) {
        let values: Vec<String> = (start..n.min(start + 1000))
            .map(|i| {
                let (tenant, entity, action) = row(i);
                format!("('{tenant}', '{entity}', 'k{i}', '{action}', 0, '{{}}', FALSE, 0)")
            })
            .collect();
        db.execute(Statement::from_string(
            db.get_database_backend(),
            format!(
                "INSERT INTO journal (tenant_id, entity, entity_key, action, version, data, \
                 test, applied_at) VALUES {}",
                values.join(", ")
            ),
        ))
        .await?;
    }
    Ok(())
}

/// The id of every journal row, in order.
///
/// # Errors
/// Returns the driver error of the query.
pub async fn journal_ids(db: &impl ConnectionTrait) -> Result<Vec<i64>, DbErr> {
    let rows = db
        .query_all(Statement::from_string(
            db.get_database_backend(),
            "SELECT id FROM journal ORDER BY id",
        ))
        .await?;
    rows.iter().map(|r| r.try_get_by_index(0)).collect()
}

/// `postgres://u@h:5432/test?x=y` with the database name replaced by `name`.
fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let head = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{head}/{name}?{q}"),
        None => format!("{head}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::replace_db_name;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            replace_db_name("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            replace_db_name("postgres://127.0.0.1/test?sslmode=disable", "x"),
            "postgres://127.0.0.1/x?sslmode=disable"
        );
        assert_eq!(replace_db_name("postgres://h:1", "x"), "postgres://h:1/x");
    }
}
