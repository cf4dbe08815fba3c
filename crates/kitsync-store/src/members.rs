//! Member reads for the directory API: keyset pages of the members that at least one app
//! authorises, filtered by department, app, role, enabled flag or a name prefix, each with
//! all of its live authorisations. The filters are served by indexes (the primary keys of
//! `members` and `authorizations`, `members_org_user`, `authorizations_user`), so a page is a
//! range scan; only a `q` prefix that matches a `name` but few `userName`s walks the tenant's
//! members in `userName` order until the page is full (see migration
//! `m20261129_000005_directory_reads` for why there is no name index).
use crate::entity::members;
use crate::error::StoreError;
use crate::model::MemberState;
use crate::sql::Sql;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
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

pub(crate) async fn page(
    db: &DatabaseConnection,
    tenant: &str,
    filter: &MemberFilter,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<MemberView>, StoreError> {
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
        sql.push(" AND ((m.user_name >= ")
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
    let names: Vec<String> = db
        .query_all(sql.build())
        .await?
        .iter()
        .map(|r| r.try_get_by_index::<String>(0))
        .collect::<Result<_, _>>()?;
    load(db, tenant, &names, filter.include_test).await
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
    db: &DatabaseConnection,
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
    let mut apps: HashMap<String, Vec<MemberApp>> = HashMap::new();
    for row in db.query_all(sql.build()).await? {
        let user: String = row.try_get_by_index(0)?;
        apps.entry(user).or_default().push(MemberApp {
            app_id: row.try_get_by_index(1)?,
            role: row.try_get_by_index(2)?,
            enabled: row.try_get_by_index(3)?,
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
