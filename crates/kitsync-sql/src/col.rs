//! Reading a column of a raw statement's row.

/// Reads column `i` of a row straight from the driver's row (`Option<T>` for a nullable
/// column).
///
/// sea-orm's own getters build an error message (a `format!`) for every NULL they read before
/// turning it into `None`, and check the column's type on the way: a page of 1 000 members
/// whose optional fields are empty paid thousands of them (a third of the page's CPU).
///
/// # Errors
/// The column is missing, or its type does not decode into `T`.
pub fn get<T>(row: &sea_orm::QueryResult, i: usize) -> Result<T, sea_orm::DbErr>
where
    T: sea_orm::TryGetable
        + for<'r> sea_orm::sqlx::Decode<'r, sea_orm::sqlx::Postgres>
        + sea_orm::sqlx::Type<sea_orm::sqlx::Postgres>
        + for<'r> sea_orm::sqlx::Decode<'r, sea_orm::sqlx::Sqlite>
        + sea_orm::sqlx::Type<sea_orm::sqlx::Sqlite>,
{
    use sea_orm::sqlx::Row as _;
    let driver = |e| sea_orm::DbErr::Query(sea_orm::RuntimeErr::SqlxError(e));
    if let Some(r) = row.try_as_pg_row() {
        return r.try_get(i).map_err(driver);
    }
    if let Some(r) = row.try_as_sqlite_row() {
        return r.try_get(i).map_err(driver);
    }
    T::try_get_by_index(row, i).map_err(Into::into)
}
