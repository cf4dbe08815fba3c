//! The directory tables as the write path sees them: one typed row per table.
//!
//! Each table is declared once, with `table!`: the row struct's fields *are* the insert
//! columns, in order, so [`Row::COLUMNS`] and [`Row::values`] cannot drift apart, and the
//! conflict key, the key column and the update sets name fields the compiler checks. Adding
//! a member field is the migration, the field here and the domain type; the compiler finds
//! the rest.
//!
//! Public so that code writing the same rows outside the write path (the benchmarks' raw
//! baselines) builds them the same way; only the store's write path applies them.
use crate::error::StoreError;
use kitsync_domain::decide::Rank;
use sea_orm::{QueryResult, TryGetable, Value};

mod apps;
mod authorizations;
mod departments;
mod members;
mod tenants;

pub use apps::AppRow;
pub use authorizations::AuthorizationRow;
pub use departments::DepartmentRow;
pub use members::MemberRow;
pub use tenants::TenantRow;

/// One row of a directory table, as an upsert writes it.
pub trait Row {
    /// The table's name.
    const TABLE: &'static str;
    /// Insert columns, in [`Row::values`] order: the struct's fields.
    const COLUMNS: &'static [&'static str];
    /// The primary key, for `ON CONFLICT`.
    const CONFLICT: &'static [&'static str];
    /// The key column that varies within one command's scope (returned by writes).
    const KEY: &'static str;
    /// What an upsert rewrites on an existing row.
    const UPSERT: &'static [&'static str];
    /// What a tombstone rewrites on an existing row; its other fields keep the last upsert.
    const TOMBSTONE: &'static [&'static str];

    /// The value of [`Row::KEY`].
    fn key(&self) -> &str;
    /// The row's identity across scopes: its [`Row::CONFLICT`] values, each prefixed with its
    /// length, in one text.
    fn identity(&self) -> String;
    /// The row's rank: its version and fingerprint.
    fn rank(&self) -> Rank;
    /// Whether the row came from a test callback.
    fn test(&self) -> bool;
    /// Every column's value, in [`Row::COLUMNS`] order.
    fn values(self) -> Vec<Value>;
}

/// Which of a row's update sets a write uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Update {
    Upsert,
    Tombstone,
}

impl Update {
    pub(crate) fn columns<R: Row>(self) -> &'static [&'static str] {
        match self {
            Update::Upsert => R::UPSERT,
            Update::Tombstone => R::TOMBSTONE,
        }
    }
}

/// What most tables' tombstones rewrite.
pub(crate) const TOMBSTONE: &[&str] = &["deleted", "version", "fp", "updated_at"];

/// One text for the values of a conflict key (in [`Row::CONFLICT`] order), usable as a map
/// key across tenants and apps: each value is prefixed with its length, so no two different
/// keys share a text whatever characters the values hold.
pub(crate) fn identity<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(64);
    for v in values {
        // Writing to a String cannot fail.
        let _ = write!(out, "{}:{v}", v.len());
    }
    out
}

/// Reads column `column` of table `R` from a row a query returned, by name; a name that is
/// not one of the table's columns is an error, not a silent NULL.
pub(crate) fn read<R: Row, T: TryGetable>(
    row: &QueryResult,
    column: &str,
) -> Result<T, StoreError> {
    if !R::COLUMNS.contains(&column) {
        return Err(StoreError::Corrupt(format!(
            "{} has no column {column}",
            R::TABLE
        )));
    }
    Ok(row.try_get::<T>("", column)?)
}

/// Declares a table's row (see the module).
macro_rules! table {
    (
        $(#[$doc:meta])*
        $row:ident = $name:literal {
            conflict: [$($pk:ident),+],
            key: $key:ident,
            upsert: [$($up:ident),+],
            tombstone: $tomb:expr,
            fields: { $($(#[$fdoc:meta])* $field:ident: $ty:ty),+ $(,)? }
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $row {
            $($(#[$fdoc])* pub $field: $ty),+
        }

        impl $crate::tables::Row for $row {
            const TABLE: &'static str = $name;
            const COLUMNS: &'static [&'static str] = &[$(stringify!($field)),+];
            const CONFLICT: &'static [&'static str] = &[$(stringify!($pk)),+];
            const KEY: &'static str = stringify!($key);
            const UPSERT: &'static [&'static str] = &[$(stringify!($up)),+];
            const TOMBSTONE: &'static [&'static str] = $tomb;

            fn key(&self) -> &str {
                &self.$key
            }

            fn identity(&self) -> String {
                $crate::tables::identity([$(self.$pk.as_str()),+])
            }

            fn rank(&self) -> kitsync_domain::decide::Rank {
                kitsync_domain::decide::Rank {
                    version: self.version,
                    fp: self.fp,
                }
            }

            fn test(&self) -> bool {
                self.test
            }

            fn values(self) -> Vec<sea_orm::Value> {
                vec![$(self.$field.into()),+]
            }
        }

        // The conflict key and the upsert set name fields: a typo does not compile.
        const _: fn(&$row) = |r: &$row| {
            $(let _ = &r.$pk;)+
            $(let _ = &r.$up;)+
        };
    };
}
pub(crate) use table;

#[cfg(test)]
mod tests {
    use super::*;

    fn named_columns<R: Row>() {
        for set in [R::CONFLICT, R::UPSERT, R::TOMBSTONE, &[R::KEY][..]] {
            for c in set {
                assert!(R::COLUMNS.contains(c), "{}: {c} is no column", R::TABLE);
            }
        }
        for c in R::UPSERT.iter().chain(R::TOMBSTONE) {
            assert!(!R::CONFLICT.contains(c), "{}: {c} is in the key", R::TABLE);
        }
    }

    #[test]
    fn every_update_set_names_columns_outside_the_key() {
        named_columns::<TenantRow>();
        named_columns::<AppRow>();
        named_columns::<DepartmentRow>();
        named_columns::<MemberRow>();
        named_columns::<AuthorizationRow>();
    }
}
