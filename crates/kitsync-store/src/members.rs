//! Member reads for the directory API: keyset pages of the members that at least one app
//! authorises, filtered by department, app, role, enabled flag or a name prefix, each with
//! all of its live authorisations. The filters are served by indexes (the primary keys of
//! `members` and `authorizations`, `members_org_user`, `authorizations_user`), so a page is a
//! range scan. A `q` prefix is two ranges, one on the primary key (`userName`) and one on
//! the `members_name_search` expression index (`name`; migration
//! `m20261129_000008_member_name_search` says why an expression).
//!
//! Every read here is **one statement** that selects the members together with their
//! authorisations, so it is one snapshot on both backends without a transaction (decision
//! 0022), and it never lists a page's names back to the database: an `IN` list of a large
//! page's names is what PostgreSQL, knowing the tenant to be most of the table, answered with
//! a sequential scan of the whole table per page (decision 0047). An unfiltered page — the
//! walk of a whole directory — reads two index ranges, members by primary key and their
//! authorisations by `authorizations_user` over the same `userName` range, and keeps the
//! members some app authorises ([`range_page`]); a filtered page, or an unfiltered one whose
//! range holds too many members no app authorises, probes each candidate's authorisations
//! ([`probe_page`]).
//!
//! SCIM filters ([`MemberCond`]) compile to SQL over the same tables: `userName eq` is a
//! primary-key probe; other attributes are checked row by row over the tenant.
use crate::error::StoreError;
use crate::model::MemberState;
use crate::sql::Sql;
use crate::Store;
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, IsolationLevel,
    QueryResult, TransactionTrait,
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

impl MemberFilter {
    /// The `q` prefix, unless empty.
    fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref().filter(|p| !p.is_empty())
    }

    /// True when the filter selects every listed member (the test flag aside): a page is then
    /// a dense range of `userName`s.
    fn selects_all(&self) -> bool {
        self.org_code.is_none()
            && self.app_id.is_none()
            && self.role.is_none()
            && self.enabled.is_none()
            && self.prefix().is_none()
    }
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

/// A read-only transaction whose statements all see one snapshot (a SCIM list's count and
/// page must agree). PostgreSQL: `REPEATABLE READ`; SQLite (WAL): any transaction reads one
/// snapshot from its first read on.
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

/// A member's columns (`m` is `members`), in [`MemberState`]'s order: the first 13 columns
/// of every statement here, which [`member_at`] reads.
const MEMBER_COLUMNS: &str = "m.user_name, m.name, m.org_code, m.position, m.employee_code, \
     m.employee_type, m.mobile, m.email, m.work_place, m.entry_date, m.extension, m.test, \
     m.version";
/// The same columns of a page subquery `p` that selected `m.tenant_id` and [`MEMBER_COLUMNS`].
const PAGE_COLUMNS: &str = "p.user_name, p.name, p.org_code, p.position, p.employee_code, \
     p.employee_type, p.mobile, p.email, p.work_place, p.entry_date, p.extension, p.test, \
     p.version";
/// Where an authorisation's `app_id`, `role` and `enabled` are, after the member's columns.
const APP_AT: usize = 13;

/// The member of a row whose first columns are [`MEMBER_COLUMNS`].
fn member_at(row: &QueryResult) -> Result<MemberState, StoreError> {
    use crate::sql::get;
    Ok(MemberState {
        user_name: get(row, 0)?,
        name: get(row, 1)?,
        org_code: get(row, 2)?,
        position: get(row, 3)?,
        employee_code: get(row, 4)?,
        employee_type: get(row, 5)?,
        mobile: get(row, 6)?,
        email: get(row, 7)?,
        work_place: get(row, 8)?,
        entry_date: get(row, 9)?,
        extension: get(row, 10)?,
        test: get(row, 11)?,
        version: get(row, 12)?,
    })
}

/// The authorisation of a row (its columns from [`APP_AT`] on).
fn app_at(row: &QueryResult) -> Result<MemberApp, StoreError> {
    use crate::sql::get;
    Ok(MemberApp {
        app_id: get(row, APP_AT)?,
        role: get(row, APP_AT + 1)?,
        enabled: get(row, APP_AT + 2)?,
    })
}

/// Sorts each member's apps by app id (the order the API shows; code-point order, whatever
/// the database's collation).
fn sorted(mut views: Vec<MemberView>) -> Vec<MemberView> {
    for v in &mut views {
        v.apps.sort_by(|a, b| a.app_id.cmp(&b.app_id));
    }
    views
}

/// Appends "the live authorisation `a` of the member of `p`" to a statement that selects from
/// a page subquery `p` (which selected `m.tenant_id`): a probe of `authorizations_user` per
/// member. On PostgreSQL a LATERAL subquery behind `OFFSET 0`, which the planner cannot turn
/// into a hash join over the tenant's authorisations when statistics lag behind a bulk sync;
/// SQLite runs a `CROSS JOIN` in the order written, `p` outside.
fn join_apps(sql: &mut Sql, pg: bool) {
    if pg {
        sql.push(
            " CROSS JOIN LATERAL (SELECT a.app_id, a.role, a.enabled FROM authorizations a \
             WHERE a.tenant_id = p.tenant_id AND a.user_name = p.user_name \
             AND a.deleted = FALSE OFFSET 0) a",
        );
    } else {
        sql.push(
            " CROSS JOIN authorizations a ON a.tenant_id = p.tenant_id \
             AND a.user_name = p.user_name AND a.deleted = FALSE",
        );
    }
}

/// The members (with their apps) of one statement that selects [`PAGE_COLUMNS`] and then an
/// authorisation's `app_id, role, enabled`, one row per authorisation, in member order:
/// a member per run of rows.
async fn with_apps(db: &impl ConnectionTrait, sql: Sql) -> Result<Vec<MemberView>, StoreError> {
    let rows = db.query_all(sql.build()).await?;
    let mut views: Vec<MemberView> = Vec::new();
    for row in &rows {
        let user: String = crate::sql::get(row, 0)?;
        let app = app_at(row)?;
        match views.last_mut() {
            Some(v) if v.profile.user_name == user => v.apps.push(app),
            _ => views.push(MemberView {
                profile: member_at(row)?,
                apps: vec![app],
            }),
        }
    }
    Ok(sorted(views))
}

/// `SELECT` [`PAGE_COLUMNS`] and each live authorisation `FROM` the member rows that
/// `members` selects (`m.tenant_id` and [`MEMBER_COLUMNS`] `FROM members m …`), in
/// `userName` order.
fn members_with_apps(backend: sea_orm::DbBackend, members: impl FnOnce(&mut Sql)) -> Sql {
    let pg = backend == sea_orm::DbBackend::Postgres;
    let mut sql = Sql::new(backend);
    sql.push("SELECT ")
        .push(PAGE_COLUMNS)
        .push(", a.app_id, a.role, a.enabled FROM (SELECT m.tenant_id, ")
        .push(MEMBER_COLUMNS);
    members(&mut sql);
    sql.push(") p");
    join_apps(&mut sql, pg);
    sql.push(" ORDER BY p.user_name");
    sql
}

/// The members of one page: after `after`, at most `limit`, matching `filter`, in `userName`
/// order, each with all its live authorisations. One snapshot: a filtered page is one
/// statement, an unfiltered one two range scans in a read-only transaction, unless many
/// members in a row are listed without any live authorisation (see below).
pub(crate) async fn page(
    db: &DatabaseConnection,
    tenant: &str,
    filter: &MemberFilter,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<MemberView>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    if !filter.selects_all() {
        return probe_page(db, tenant, filter, after, limit).await;
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    // Members no app authorises any more keep their profiles but are not listed, so a range
    // of `limit` members may list fewer. Read a sixteenth more than needed; should the range
    // still fall short, read on from its end, each time twice as far (bounded), until the page
    // is full or the tenant ends. Each range is its own snapshot: a page made of two is the
    // same as two pages read one after the other, which a walk tolerates anyway.
    let mut views: Vec<MemberView> = Vec::new();
    let mut from = after.map(str::to_owned);
    let mut extra = limit / 16 + 1;
    loop {
        let need = limit - views.len();
        let take = need.saturating_add(extra);
        let (got, last) =
            range_page(db, tenant, from.as_deref(), take, filter.include_test).await?;
        views.extend(got);
        match last {
            Some(last) if views.len() < limit => from = Some(last),
            // A short range: the tenant ends here.
            _ => {
                views.truncate(limit);
                return Ok(views);
            }
        }
        extra = extra.saturating_mul(2).min(MAX_RANGE);
    }
}

/// The most members one range reads beyond what its page still needs.
const MAX_RANGE: usize = 10_000;

/// An unfiltered page from two index ranges, in one read-only snapshot: the next `take` live
/// members after `after` (primary key, in its order), then every live authorisation of a
/// `userName` in their range (`authorizations_user`), put together here. Two plain range
/// scans cost a third of what one statement doing both did (a CTE numbering the members and a
/// `UNION ALL` of the two: 1.6 ms of execution and 0.6 ms of planning per page of 1 000,
/// against 0.25 + 0.35 ms for the ranges alone), round trips included. The members some app
/// authorises, in order, and the `userName` of the last member read when `take` were read
/// (`None`: fewer, the tenant ends in this range).
async fn range_page(
    db: &DatabaseConnection,
    tenant: &str,
    after: Option<&str>,
    take: usize,
    include_test: bool,
) -> Result<(Vec<MemberView>, Option<String>), StoreError> {
    let backend = db.get_database_backend();
    let mut sql = Sql::new(backend);
    sql.push("SELECT ")
        .push(MEMBER_COLUMNS)
        .push(" FROM members m WHERE m.tenant_id = ")
        .bind(tenant)
        .push(" AND m.deleted = FALSE");
    if !include_test {
        sql.push(" AND m.test = FALSE");
    }
    if let Some(after) = after {
        sql.push(" AND m.user_name > ").bind(after);
    }
    sql.push(" ORDER BY m.user_name LIMIT ")
        .bind(i64::try_from(take).unwrap_or(i64::MAX));
    let txn = snapshot(db).await?;
    let rows = txn.query_all(sql.build()).await?;
    let members = rows.iter().map(member_at).collect::<Result<Vec<_>, _>>()?;
    drop(rows);
    let Some(last) = members.last().map(|m| m.user_name.clone()) else {
        txn.commit().await?;
        return Ok((Vec::new(), None));
    };
    let mut sql = Sql::new(backend);
    sql.push(
        "SELECT a.user_name, a.app_id, a.role, a.enabled FROM authorizations a \
         WHERE a.tenant_id = ",
    )
    .bind(tenant)
    .push(" AND a.deleted = FALSE");
    if let Some(after) = after {
        sql.push(" AND a.user_name > ").bind(after);
    }
    sql.push(" AND a.user_name <= ").bind(last.as_str());
    let rows = txn.query_all(sql.build()).await?;
    txn.commit().await?;
    // An authorisation of a member read, or of a `userName` in the range that is not listed
    // (a deleted or hidden test member): the latter are never looked up.
    let mut apps: HashMap<String, Vec<MemberApp>> = HashMap::with_capacity(members.len());
    for row in &rows {
        use crate::sql::get;
        apps.entry(get(row, 0)?).or_default().push(MemberApp {
            app_id: get(row, 1)?,
            role: get(row, 2)?,
            enabled: get(row, 3)?,
        });
    }
    let full = members.len() >= take;
    let views = members
        .into_iter()
        .filter_map(|profile| {
            let apps = apps.remove(&profile.user_name)?;
            Some(MemberView { profile, apps })
        })
        .collect();
    Ok((sorted(views), full.then_some(last)))
}

/// Any page: the candidates in `userName` order (by the filter's index), each kept if a live
/// authorisation matching the filter exists (a probe per candidate), the first `limit` of
/// them joined to their live authorisations (a probe each).
async fn probe_page(
    db: &DatabaseConnection,
    tenant: &str,
    filter: &MemberFilter,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<MemberView>, StoreError> {
    let backend = db.get_database_backend();
    let pg = backend == sea_orm::DbBackend::Postgres;
    // "Some app authorises it" as a probe per member, never a join over the tenant's
    // authorisations: on PostgreSQL a LATERAL … LIMIT 1 (an EXISTS may be planned as a hash
    // semi-join over the whole tenant when statistics lag behind a bulk sync); SQLite, which
    // has no LATERAL, always runs a correlated EXISTS as an index probe per row.
    let authorised = |sql: &mut Sql| {
        sql.push(
            "SELECT 1 FROM authorizations z WHERE z.tenant_id = m.tenant_id \
             AND z.user_name = m.user_name AND z.deleted = FALSE",
        );
        if let Some(app) = &filter.app_id {
            sql.push(" AND z.app_id = ").bind(app.as_str());
        }
        if let Some(role) = &filter.role {
            sql.push(" AND z.role = ").bind(role.as_str());
        }
        if let Some(enabled) = filter.enabled {
            sql.push(" AND z.enabled = ").bind(enabled);
        }
    };
    let sql = members_with_apps(backend, |sql| {
        sql.push(" FROM members m");
        if pg {
            sql.push(" CROSS JOIN LATERAL (");
            authorised(sql);
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
        if let Some(p) = filter.prefix() {
            // Candidates from two index ranges — the primary key for `userName`, the
            // members_name_search expression index (migration 000008) for `name` — so a
            // narrow prefix reads only its matches instead of walking the tenant in
            // `userName` order; then the exact condition (the expression range alone could
            // match another tenant whose id contains `|`).
            let key = format!("{tenant}|{p}");
            sql.push(" AND m.user_name IN (SELECT s.user_name FROM members s WHERE s.tenant_id = ")
                .bind(tenant)
                .push(" AND s.user_name >= ")
                .bind(p)
                .push(" AND s.user_name < ")
                .bind(prefix_end(p))
                .push(
                    " UNION ALL SELECT s.user_name FROM members s \
                 WHERE (s.tenant_id || '|' || s.name) >= ",
                )
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
            authorised(sql);
            sql.push(")");
        }
        sql.push(" ORDER BY m.user_name LIMIT ")
            .bind(i64::try_from(limit).unwrap_or(i64::MAX));
    });
    with_apps(db, sql).await
}

/// One member with its apps, if live (and not test data unless `include_test`) and some app
/// authorises it: a primary-key probe and its authorisations, one statement.
pub(crate) async fn one(
    db: &DatabaseConnection,
    tenant: &str,
    user_name: &str,
    include_test: bool,
) -> Result<Option<MemberView>, StoreError> {
    let sql = members_with_apps(db.get_database_backend(), |sql| {
        sql.push(" FROM members m WHERE m.tenant_id = ")
            .bind(tenant)
            .push(" AND m.user_name = ")
            .bind(user_name)
            .push(" AND m.deleted = FALSE");
        if !include_test {
            sql.push(" AND m.test = FALSE");
        }
    });
    Ok(with_apps(db, sql).await?.pop())
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
    let found = if limit == 0 {
        Vec::new()
    } else {
        let page = members_with_apps(backend, |sql| {
            matching(sql);
            sql.push(" ORDER BY m.user_name LIMIT ")
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .push(" OFFSET ")
                .bind(i64::try_from(offset).unwrap_or(i64::MAX));
        });
        with_apps(db, page).await?
    };
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
