//! Member reads for the directory API: keyset pages of the members that at least one app
//! authorises, filtered by department, app, role, enabled flag or a name prefix, each with
//! all of its live authorisations. The filters are served by indexes (the primary keys of
//! `members` and `authorizations`, `members_org_user`, `authorizations_user`), so a page is a
//! range scan. A `q` prefix is two ranges, one on the primary key (`userName`) and one on
//! the `members_name_search` expression index (`name`; migration
//! `m20261129_000008_member_name_search` says why an expression).
//!
//! SCIM filters ([`MemberCond`]) compile to SQL over the same tables: `userName eq` is a
//! primary-key probe; other attributes are checked row by row over the tenant.
use crate::entity::members;
use crate::error::StoreError;
use crate::model::MemberState;
use crate::sql::Sql;
use crate::Store;
use sea_orm::{
    AccessMode, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityTrait,
    IsolationLevel, QueryFilter, QueryOrder, TransactionTrait,
};
use serde::Serialize;
use std::collections::HashMap;

/// Which members a page holds. `prefix` matches the start of `userName` or `name`
/// (code-point order, case-sensitive).
#[derive(Debug, Clone, Default)]
pub struct MemberFilter {
    pub org_code: Option<String>,
    pub app_id: Option<String>,
    pub role: Option<String>,
    pub enabled: Option<bool>,
    pub prefix: Option<String>,
    pub include_test: bool,
}

/// One of a member's live authorisations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberApp {
    pub app_id: String,
    pub role: String,
    pub enabled: bool,
}

/// A member with every app that authorises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub profile: MemberState,
    /// Sorted by app id; never empty (an unauthorised member is not listed).
    pub apps: Vec<MemberApp>,
}

/// The end of a prefix range: every string starting with `prefix` sorts below it.
fn prefix_end(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

/// A read-only transaction whose statements all see one snapshot: a page's keys and the rows
/// loaded for them must agree, or a member deauthorised in between would shorten the page and
/// end the pagination early. PostgreSQL: `REPEATABLE READ`; SQLite (WAL): any transaction
/// reads one snapshot from its first read on.
async fn snapshot(db: &DatabaseConnection) -> Result<DatabaseTransaction, StoreError> {
    Ok(
        if db.get_database_backend() == sea_orm::DbBackend::Postgres {
            db.begin_with_config(
                Some(IsolationLevel::RepeatableRead),
                Some(AccessMode::ReadOnly),
            )
            .await?
        } else {
            db.begin().await?
        },
    )
}

pub(crate) async fn page(
    db: &DatabaseConnection,
    tenant: &str,
    filter: &MemberFilter,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<MemberView>, StoreError> {
    // Every read below sees one snapshot.
    let txn = snapshot(db).await?;
    let db = &txn;
    let backend = db.get_database_backend();
    let pg = backend == sea_orm::DbBackend::Postgres;
    let mut sql = Sql::new(backend);
    sql.push("SELECT m.user_name FROM members m");
    // "Some app authorises it" as a probe per member, never a join over the tenant's
    // authorisations: on PostgreSQL a LATERAL … LIMIT 1 (an EXISTS may be planned as a hash
    // semi-join over the whole tenant when statistics lag behind a bulk sync); SQLite, which
    // has no LATERAL, always runs a correlated EXISTS as an index probe per row.
    let authorised = |sql: &mut Sql| {
        sql.push(
            "SELECT 1 FROM authorizations a WHERE a.tenant_id = m.tenant_id \
             AND a.user_name = m.user_name AND a.deleted = FALSE",
        );
        if let Some(app) = &filter.app_id {
            sql.push(" AND a.app_id = ").bind(app.as_str());
        }
        if let Some(role) = &filter.role {
            sql.push(" AND a.role = ").bind(role.as_str());
        }
        if let Some(enabled) = filter.enabled {
            sql.push(" AND a.enabled = ").bind(enabled);
        }
    };
    if pg {
        sql.push(" CROSS JOIN LATERAL (");
        authorised(&mut sql);
        sql.push(" LIMIT 1) AS authorised");
    }
    sql.push(" WHERE m.tenant_id = ")
        .bind(tenant)
        .push(" AND m.deleted = FALSE");
    if !filter.include_test {
        sql.push(" AND m.test = FALSE");
    }
    if let Some(org) = &filter.org_code {
        sql.push(" AND m.org_code = ").bind(org.as_str());
    }
    if let Some(after) = after {
        sql.push(" AND m.user_name > ").bind(after);
    }
    if let Some(p) = filter.prefix.as_deref().filter(|p| !p.is_empty()) {
        // Candidates from two index ranges — the primary key for `userName`, the
        // members_name_search expression index (migration 000008) for `name` — so a narrow
        // prefix reads only its matches instead of walking the tenant in `userName` order;
        // then the exact condition (the expression range alone could match another tenant
        // whose id contains `|`).
        let key = format!("{tenant}|{p}");
        sql.push(" AND m.user_name IN (SELECT s.user_name FROM members s WHERE s.tenant_id = ")
            .bind(tenant)
            .push(" AND s.user_name >= ")
            .bind(p)
            .push(" AND s.user_name < ")
            .bind(prefix_end(p))
            .push(" UNION ALL SELECT s.user_name FROM members s WHERE (s.tenant_id || '|' || s.name) >= ")
            .bind(key.as_str())
            .push(" AND (s.tenant_id || '|' || s.name) < ")
            .bind(prefix_end(&key))
            .push(") AND ((m.user_name >= ")
            .bind(p)
            .push(" AND m.user_name < ")
            .bind(prefix_end(p))
            .push(") OR (m.name >= ")
            .bind(p)
            .push(" AND m.name < ")
            .bind(prefix_end(p))
            .push("))");
    }
    if !pg {
        sql.push(" AND EXISTS (");
        authorised(&mut sql);
        sql.push(")");
    }
    sql.push(" ORDER BY m.user_name LIMIT ")
        .bind(i64::try_from(limit).unwrap_or(i64::MAX));
    let names: Vec<String> = crate::query_rows(db, sql.build()).await?;
    let found = load(db, tenant, &names, filter.include_test).await?;
    txn.commit().await?;
    Ok(found)
}

pub(crate) async fn one(
    db: &DatabaseConnection,
    tenant: &str,
    user_name: &str,
    include_test: bool,
) -> Result<Option<MemberView>, StoreError> {
    Ok(load(db, tenant, &[user_name.to_owned()], include_test)
        .await?
        .pop())
}

/// Profiles and authorisations of `names` (in that order), dropping those no app authorises.
async fn load(
    db: &impl ConnectionTrait,
    tenant: &str,
    names: &[String],
    include_test: bool,
) -> Result<Vec<MemberView>, StoreError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = members::Entity::find()
        .filter(members::Column::TenantId.eq(tenant))
        .filter(members::Column::UserName.is_in(names.iter().cloned()))
        .filter(members::Column::Deleted.eq(false));
    if !include_test {
        q = q.filter(members::Column::Test.eq(false));
    }
    let mut profiles: HashMap<String, MemberState> = q
        .order_by_asc(members::Column::UserName)
        .all(db)
        .await?
        .into_iter()
        .map(|m| (m.user_name.clone(), crate::read::member_state(m)))
        .collect();
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT user_name, app_id, role, enabled FROM authorizations WHERE tenant_id = ")
        .bind(tenant)
        .push(" AND deleted = FALSE AND user_name IN (")
        .bind_list(names.iter().map(String::as_str))
        // No ORDER BY: asked to sort by (user_name, app_id), SQLite walks the primary key
        // (tenant_id, app_id, user_name) over the whole tenant instead of probing
        // authorizations_user per name. The few apps per member are sorted below.
        .push(")");
    let rows: Vec<(String, String, String, bool)> = crate::query_rows(db, sql.build()).await?;
    let mut apps: HashMap<String, Vec<MemberApp>> = HashMap::new();
    for (user, app_id, role, enabled) in rows {
        apps.entry(user).or_default().push(MemberApp {
            app_id,
            role,
            enabled,
        });
    }
    for list in apps.values_mut() {
        list.sort_by(|a, b| a.app_id.cmp(&b.app_id));
    }
    Ok(names
        .iter()
        .filter_map(|n| {
            let apps = apps.remove(n).filter(|a| !a.is_empty())?;
            let profile = profiles.remove(n)?;
            Some(MemberView { profile, apps })
        })
        .collect())
}

/// A member column a [`MemberCond`] can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberField {
    UserName,
    Name,
    OrgCode,
    Position,
    EmployeeCode,
    Email,
    Mobile,
    WorkPlace,
}

impl MemberField {
    fn column(self) -> &'static str {
        match self {
            MemberField::UserName => "m.user_name",
            MemberField::Name => "m.name",
            MemberField::OrgCode => "m.org_code",
            MemberField::Position => "m.position",
            MemberField::EmployeeCode => "m.employee_code",
            MemberField::Email => "m.email",
            MemberField::Mobile => "m.mobile",
            MemberField::WorkPlace => "m.work_place",
        }
    }
}

/// A string comparison (SCIM's operators, RFC 7644 §3.4.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A condition on a member, compiled to SQL by [`crate::Store::query_members`]. String
/// comparisons are exact, or case-insensitive when `ignore_case` (both sides lowered: Unicode
/// case on PostgreSQL, ASCII case on SQLite); an absent (NULL) field satisfies `Ne` and the
/// negation of anything else, never a comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberCond {
    /// Always true or always false (e.g. a test of a constant sub-attribute like an email's
    /// `type`).
    Const(bool),
    And(Box<MemberCond>, Box<MemberCond>),
    Or(Box<MemberCond>, Box<MemberCond>),
    Not(Box<MemberCond>),
    /// The field is set and not empty.
    Present(MemberField),
    Cmp {
        field: MemberField,
        op: CmpOp,
        value: String,
        ignore_case: bool,
    },
    /// Some app's authorisation of the member is enabled (SCIM `active`), or none is.
    Active(bool),
    /// The member is in this role group (`{appId}:{role}`) or ISV group.
    InGroup(String),
}

impl MemberCond {
    fn to_sql(&self, sql: &mut Sql, pg: bool) {
        match self {
            MemberCond::Const(true) => {
                sql.push("1 = 1");
            }
            MemberCond::Const(false) => {
                sql.push("1 = 0");
            }
            MemberCond::And(a, b) | MemberCond::Or(a, b) => {
                sql.push("(");
                a.to_sql(sql, pg);
                sql.push(if matches!(self, MemberCond::And(..)) {
                    " AND "
                } else {
                    " OR "
                });
                b.to_sql(sql, pg);
                sql.push(")");
            }
            MemberCond::Not(c) => {
                // NOT over a comparison of a NULL column is NULL, i.e. false: the coalesce
                // makes "not (title eq x)" true for a member without a title, as SCIM wants.
                sql.push("NOT COALESCE((");
                c.to_sql(sql, pg);
                sql.push("), FALSE)");
            }
            MemberCond::Present(f) => {
                let c = f.column();
                sql.push(&format!("({c} IS NOT NULL AND {c} <> '')"));
            }
            MemberCond::Active(want) => {
                sql.push(if *want { "EXISTS (" } else { "NOT EXISTS (" })
                    .push(
                        "SELECT 1 FROM authorizations ae WHERE ae.tenant_id = m.tenant_id \
                     AND ae.user_name = m.user_name AND ae.deleted = FALSE AND ae.enabled = TRUE)",
                    );
            }
            MemberCond::InGroup(group) => {
                sql.push("(EXISTS (SELECT 1 FROM group_members gm WHERE gm.tenant_id = m.tenant_id AND gm.user_name = m.user_name AND (gm.member_type IS NULL OR lower(gm.member_type) = 'user') AND gm.group_id = ")
                    .bind(group.as_str())
                    .push(") OR EXISTS (SELECT 1 FROM authorizations ag WHERE ag.tenant_id = m.tenant_id AND ag.user_name = m.user_name AND ag.deleted = FALSE AND ")
                    .push("(ag.app_id || ':' || ag.role) = ")
                    .bind(group.as_str())
                    .push("))");
            }
            MemberCond::Cmp {
                field,
                op,
                value,
                ignore_case,
            } => {
                let col = if *ignore_case {
                    format!("lower({})", field.column())
                } else {
                    field.column().to_owned()
                };
                let value = if *ignore_case {
                    value.to_lowercase()
                } else {
                    value.clone()
                };
                // Orderings compare code points, whatever the database's collation (a
                // prefix range or `>` under a linguistic collation is not what SCIM means).
                let collate = if pg { " COLLATE \"C\"" } else { "" };
                let simple = |sql: &mut Sql, o: &str| {
                    sql.push(&format!("{col}{collate} {o} "))
                        .bind(value.clone());
                };
                if value.is_empty() && matches!(op, CmpOp::Co | CmpOp::Sw | CmpOp::Ew) {
                    // Every string contains, starts and ends with "" (and `substr(x, -0)` is
                    // not the empty suffix).
                    sql.push(&format!("{} IS NOT NULL", field.column()));
                    return;
                }
                match op {
                    // Equality needs no collation (and the primary key serves it).
                    CmpOp::Eq => {
                        sql.push(&format!("{col} = ")).bind(value.clone());
                    }
                    CmpOp::Gt => simple(sql, ">"),
                    CmpOp::Ge => simple(sql, ">="),
                    CmpOp::Lt => simple(sql, "<"),
                    CmpOp::Le => simple(sql, "<="),
                    CmpOp::Ne => {
                        sql.push(&format!("({} IS NULL OR {col} <> ", field.column()))
                            .bind(value.clone())
                            .push(")");
                    }
                    CmpOp::Co => {
                        sql.push(if pg { "strpos(" } else { "instr(" })
                            .push(&col)
                            .push(", ")
                            .bind(value.clone())
                            .push(") > 0");
                    }
                    CmpOp::Sw if pg => {
                        sql.push(&format!("starts_with({col}, "))
                            .bind(value.clone())
                            .push(")");
                    }
                    CmpOp::Sw => {
                        // SQLite compares TEXT by code point (BINARY): a range, on the index.
                        sql.push(&format!("({col} >= "))
                            .bind(value.clone())
                            .push(&format!(" AND {col} < "))
                            .bind(prefix_end(&value))
                            .push(")");
                    }
                    CmpOp::Ew => {
                        let n = i32::try_from(value.chars().count()).unwrap_or(i32::MAX);
                        if pg {
                            sql.push(&format!("right({col}, ")).bind(n);
                        } else {
                            sql.push(&format!("substr({col}, -")).bind(n);
                        }
                        sql.push(") = ").bind(value.clone());
                    }
                }
            }
        }
    }
}

/// Listed members matching `cond`, in `userName` order from `offset`, and how many match
/// in all (SCIM's `totalResults`).
pub(crate) async fn query(
    db: &DatabaseConnection,
    tenant: &str,
    cond: &MemberCond,
    offset: u64,
    limit: u64,
) -> Result<(u64, Vec<MemberView>), StoreError> {
    // Every read below sees one snapshot.
    let txn = snapshot(db).await?;
    let db = &txn;
    let backend = db.get_database_backend();
    let pg = backend == sea_orm::DbBackend::Postgres;
    let matching = |sql: &mut Sql| {
        sql.push(" FROM members m WHERE m.tenant_id = ")
            .bind(tenant)
            .push(
                " AND m.deleted = FALSE AND EXISTS (SELECT 1 FROM authorizations a \
                 WHERE a.tenant_id = m.tenant_id AND a.user_name = m.user_name \
                 AND a.deleted = FALSE) AND ",
            );
        cond.to_sql(sql, pg);
    };
    let mut count = Sql::new(backend);
    count.push("SELECT COUNT(*)");
    matching(&mut count);
    let total: i64 = match db.query_one(count.build()).await? {
        Some(row) => row.try_get_by_index(0)?,
        None => 0,
    };
    let mut names = Sql::new(backend);
    names.push("SELECT m.user_name");
    matching(&mut names);
    names
        .push(" ORDER BY m.user_name LIMIT ")
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .push(" OFFSET ")
        .bind(i64::try_from(offset).unwrap_or(i64::MAX));
    let names: Vec<String> = if limit == 0 {
        Vec::new()
    } else {
        crate::query_rows(db, names.build()).await?
    };
    let found = load(db, tenant, &names, true).await?;
    txn.commit().await?;
    Ok((u64::try_from(total).unwrap_or(0), found))
}

impl Store {
    /// Listed members (some app authorises them, test data included) that satisfy `cond`,
    /// in `userName` order from `offset`, with how many satisfy it in all.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn query_members(
        &self,
        tenant_id: &str,
        cond: &MemberCond,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<MemberView>), StoreError> {
        query(&self.db, tenant_id, cond, offset, limit).await
    }

    /// The ISV groups each of `users` is in: `(userName, groupId, displayName)`.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn group_memberships(
        &self,
        tenant_id: &str,
        users: &[String],
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        crate::groups::memberships(&self.db, tenant_id, users).await
    }
}
