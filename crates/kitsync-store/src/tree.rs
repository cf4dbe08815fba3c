//! A tenant's department tree one level at a time, for a browser that expands it lazily:
//! the roots, or a department's children, each with how many live members are in it and how
//! many departments under it.
use crate::error::StoreError;
use crate::Store;
use kitsync_sql::Sql;
use sea_orm::ConnectionTrait;
use serde::Serialize;

/// A department with its counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DepartmentCounts {
    pub org_code: String,
    pub org_name: String,
    pub parent_code: Option<String>,
    /// Live members of this department (not of those under it) that some app authorises: the
    /// members `Store::members` lists for it.
    pub member_count: u64,
    /// Live departments whose parent it is.
    pub child_count: u64,
}

/// Which level of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level<'a> {
    /// Departments without a parent, or whose parent is not a live department (orphans).
    Roots,
    /// The departments whose parent is this one.
    ChildrenOf(&'a str),
}

impl Store {
    /// A keyset page (after `after`, at most `limit`, in `org_code` order) of one level of
    /// `tenant`'s live departments, with their counts; test rows only with `include_test`.
    /// Each count is an index range (`members_org` with a probe of `authorizations_user` per
    /// member, `departments_parent`), so a level costs what it shows, not the tenant's size.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn department_level(
        &self,
        tenant: &str,
        level: Level<'_>,
        after: Option<&str>,
        limit: u64,
        include_test: bool,
    ) -> Result<Vec<DepartmentCounts>, StoreError> {
        let test = |sql: &mut Sql, alias: &str| {
            if !include_test {
                sql.push(" AND ").push(alias).push(".test = FALSE");
            }
        };
        let mut sql = Sql::new(self.db.get_database_backend());
        sql.push(
            "SELECT d.org_code, d.org_name, d.parent_code, \
             (SELECT COUNT(*) FROM members m WHERE m.tenant_id = d.tenant_id \
             AND m.org_code = d.org_code AND m.deleted = FALSE",
        );
        test(&mut sql, "m");
        sql.push(
            " AND EXISTS (SELECT 1 FROM authorizations z WHERE z.tenant_id = m.tenant_id \
             AND z.user_name = m.user_name AND z.deleted = FALSE)), \
             (SELECT COUNT(*) FROM departments c WHERE c.tenant_id = d.tenant_id \
             AND c.parent_code = d.org_code AND c.org_code <> d.org_code AND c.deleted = FALSE",
        );
        test(&mut sql, "c");
        sql.push(") FROM departments d WHERE d.tenant_id = ")
            .bind(tenant)
            .push(" AND d.deleted = FALSE");
        test(&mut sql, "d");
        match level {
            Level::Roots => {
                sql.push(
                    " AND (d.parent_code IS NULL OR d.parent_code = '' \
                     OR d.parent_code = d.org_code OR NOT EXISTS (SELECT 1 FROM departments p \
                     WHERE p.tenant_id = d.tenant_id AND p.org_code = d.parent_code \
                     AND p.deleted = FALSE",
                );
                test(&mut sql, "p");
                sql.push("))");
            }
            Level::ChildrenOf(parent) => {
                sql.push(" AND d.parent_code = ")
                    .bind(parent)
                    .push(" AND d.org_code <> ")
                    .bind(parent);
            }
        }
        if let Some(a) = after {
            sql.push(" AND d.org_code > ").bind(a);
        }
        sql.push(" ORDER BY d.org_code LIMIT ")
            .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = self.db.query_all(sql.build()).await?;
        rows.iter()
            .map(|r| {
                let members: i64 = r.try_get_by_index(3)?;
                let children: i64 = r.try_get_by_index(4)?;
                let parent: Option<String> = r.try_get_by_index(2)?;
                Ok(DepartmentCounts {
                    org_code: r.try_get_by_index(0)?,
                    org_name: r.try_get_by_index(1)?,
                    parent_code: parent.filter(|p| !p.is_empty()),
                    member_count: u64::try_from(members).unwrap_or(0),
                    child_count: u64::try_from(children).unwrap_or(0),
                })
            })
            .collect()
    }
}
