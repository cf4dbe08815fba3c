//! Groups the ISV creates through SCIM (the per-app role groups are derived, see
//! [`crate::Store::derived_groups`]).
//!
//! Every write runs in one transaction that first locks the tenant like an apply does (so it
//! never interleaves with a callback for the same tenant, e.g. a tenant delete), checks that
//! the tenant is live, raises the group's `version` (the SCIM ETag) and journals `group` /
//! `created`, `updated` or `deleted` with the group's new state. A write conditioned on a
//! version (`If-Match`) fails with [`GroupWriteError::VersionMismatch`] when the group has
//! moved on.
//!
//! Members are kept as the client wrote them, in order, each with the SCIM `type` it gave:
//! users by `userName`, nested groups by id. Their existence is not checked: the ISV may
//! place a user in a group before the marketplace authorises it, a member the marketplace
//! deauthorises keeps its place for when it comes back, and SCIM clients expect a member id
//! to be taken as given (decision in docs/decisions/0024-scim-semantics.md).
use crate::apply::{json, Cx};
use crate::entity::groups;
use crate::error::StoreError;
use crate::journal::{Action, Entity};
use crate::sql::Sql;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    TransactionTrait,
};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// An ISV group as SCIM shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IsvGroup {
    pub group_id: String,
    pub display_name: String,
    pub external_id: Option<String>,
    /// Raised by every write.
    pub version: i64,
    /// Unix ms, kitsync's clock.
    pub created_at: i64,
    pub updated_at: i64,
    /// In the order written.
    pub members: Vec<GroupMember>,
}

/// One member of an ISV group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupMember {
    /// A user name, or a group id when `kind` is `Group`.
    pub value: String,
    /// SCIM `type` as written (`User` or `Group`), if it was.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl GroupMember {
    /// Whether this member names a user (a `User` type, or none given).
    #[must_use]
    pub fn is_user(&self) -> bool {
        self.kind
            .as_deref()
            .is_none_or(|k| k.eq_ignore_ascii_case("user"))
    }
}

/// The new state of a group (create or replace).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupWrite {
    pub display_name: String,
    pub external_id: Option<String>,
    /// In order; a repeated `value` keeps its first place.
    pub members: Vec<GroupMember>,
}

/// Why a group write was refused.
#[derive(Debug, thiserror::Error)]
pub enum GroupWriteError {
    #[error("tenant {0} not found")]
    TenantNotFound(String),
    #[error("group {0} not found")]
    GroupNotFound(String),
    #[error("displayName must not be empty")]
    EmptyName,
    #[error("another group of this tenant is already named {0:?}")]
    NameTaken(String),
    #[error("a member's value must not be empty")]
    EmptyMember,
    #[error("the group is at version {current}, not {expected}")]
    VersionMismatch { expected: i64, current: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sea_orm::DbErr> for GroupWriteError {
    fn from(e: sea_orm::DbErr) -> Self {
        GroupWriteError::Store(StoreError::Database(e))
    }
}

/// Every ISV group of the tenant, by id.
pub(crate) async fn list(
    db: &impl ConnectionTrait,
    tenant: &str,
) -> Result<Vec<IsvGroup>, StoreError> {
    load(db, tenant, None).await
}

pub(crate) async fn one(
    db: &impl ConnectionTrait,
    tenant: &str,
    group_id: &str,
) -> Result<Option<IsvGroup>, StoreError> {
    Ok(load(db, tenant, Some(group_id)).await?.pop())
}

async fn load(
    db: &impl ConnectionTrait,
    tenant: &str,
    group_id: Option<&str>,
) -> Result<Vec<IsvGroup>, StoreError> {
    let mut q = groups::Entity::find().filter(groups::Column::TenantId.eq(tenant));
    if let Some(id) = group_id {
        q = q.filter(groups::Column::GroupId.eq(id));
    }
    let rows = q.order_by_asc(groups::Column::GroupId).all(db).await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "SELECT gm.group_id, gm.user_name, gm.member_type FROM group_members gm \
         WHERE gm.tenant_id = ",
    )
    .bind(tenant);
    if let Some(id) = group_id {
        sql.push(" AND gm.group_id = ").bind(id);
    }
    sql.push(" ORDER BY gm.group_id, gm.position");
    let mut members: BTreeMap<String, Vec<GroupMember>> = BTreeMap::new();
    for row in db.query_all(sql.build()).await? {
        let group: String = row.try_get_by_index(0)?;
        members.entry(group).or_default().push(GroupMember {
            value: row.try_get_by_index(1)?,
            kind: row.try_get_by_index(2)?,
        });
    }
    Ok(rows
        .into_iter()
        .map(|g| {
            let users = members.remove(&g.group_id).unwrap_or_default();
            IsvGroup {
                group_id: g.group_id,
                display_name: g.display_name,
                external_id: g.external_id,
                version: g.version,
                created_at: g.created_at,
                updated_at: g.updated_at,
                members: users,
            }
        })
        .collect())
}

/// What a write does to an existing group (or creates).
pub(crate) enum Write<'a> {
    Create {
        group_id: &'a str,
        new: &'a GroupWrite,
    },
    Replace {
        group_id: &'a str,
        new: &'a GroupWrite,
        if_version: Option<i64>,
    },
    Delete {
        group_id: &'a str,
        if_version: Option<i64>,
    },
}

/// Runs one group write in its own transaction; `None` for a delete.
pub(crate) async fn write(
    db: &DatabaseConnection,
    tenant: &str,
    w: Write<'_>,
) -> Result<Option<IsvGroup>, GroupWriteError> {
    let txn = db.begin().await?;
    let mut cx = Cx::new(&txn, 1.0);
    cx.lock(&BTreeSet::from([tenant])).await?;
    let mut live = cx.sql();
    live.push("SELECT test FROM tenants WHERE tenant_id = ")
        .bind(tenant)
        .push(" AND deleted = FALSE");
    let test: bool = match cx.query(live).await?.first() {
        Some(row) => row.try_get_by_index(0).map_err(StoreError::from)?,
        None => return Err(GroupWriteError::TenantNotFound(tenant.to_owned())),
    };
    let (group_id, new, if_version, creating) = match w {
        Write::Create { group_id, new } => (group_id, Some(new), None, true),
        Write::Replace {
            group_id,
            new,
            if_version,
        } => (group_id, Some(new), if_version, false),
        Write::Delete {
            group_id,
            if_version,
        } => (group_id, None, if_version, false),
    };
    let current = if creating {
        None
    } else {
        let mut sql = cx.sql();
        sql.push("SELECT version, created_at FROM groups WHERE tenant_id = ")
            .bind(tenant)
            .push(" AND group_id = ")
            .bind(group_id);
        let row = cx
            .query(sql)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| GroupWriteError::GroupNotFound(group_id.to_owned()))?;
        let version: i64 = row.try_get_by_index(0).map_err(StoreError::from)?;
        let created: i64 = row.try_get_by_index(1).map_err(StoreError::from)?;
        if let Some(expected) = if_version.filter(|e| *e != version) {
            return Err(GroupWriteError::VersionMismatch {
                expected,
                current: version,
            });
        }
        Some((version, created))
    };
    let Some(new) = new else {
        delete_rows(&cx, "group_members", tenant, group_id).await?;
        delete_rows(&cx, "groups", tenant, group_id).await?;
        let version = current.map_or(1, |(v, _)| v + 1);
        cx.journal(
            tenant,
            Entity::Group,
            group_id.to_owned(),
            Action::Deleted,
            // The journal's version is when the change happened (the feed's `changedAt`):
            // for the ISV's own groups, kitsync's clock.
            cx.now,
            json(&serde_json::json!({ "groupId": group_id, "deleted": true, "version": version })),
            test,
        );
        cx.flush_journal().await?;
        txn.commit().await?;
        return Ok(None);
    };
    let display_name = new.display_name.trim();
    if display_name.is_empty() {
        return Err(GroupWriteError::EmptyName);
    }
    let mut taken = cx.sql();
    taken
        .push("SELECT 1 FROM groups WHERE tenant_id = ")
        .bind(tenant)
        .push(" AND display_name = ")
        .bind(display_name)
        .push(" AND group_id <> ")
        .bind(group_id);
    if !cx.query(taken).await?.is_empty() {
        return Err(GroupWriteError::NameTaken(display_name.to_owned()));
    }
    let mut seen = BTreeSet::new();
    let mut members: Vec<GroupMember> = Vec::with_capacity(new.members.len());
    for m in &new.members {
        if m.value.is_empty() {
            return Err(GroupWriteError::EmptyMember);
        }
        if seen.insert(m.value.as_str()) {
            members.push(m.clone());
        }
    }
    let (version, created_at) = match current {
        Some((v, created)) => (v + 1, created),
        None => (1, cx.now),
    };
    let mut sql = cx.sql();
    if creating {
        sql.push(
            "INSERT INTO groups (tenant_id, group_id, display_name, source, created_at, \
             updated_at, version, external_id) VALUES ",
        )
        .bind_tuple::<_, sea_orm::Value>([
            tenant.into(),
            group_id.into(),
            display_name.into(),
            "scim".into(),
            cx.now.into(),
            cx.now.into(),
            version.into(),
            new.external_id.clone().into(),
        ]);
    } else {
        sql.push("UPDATE groups SET display_name = ")
            .bind(display_name)
            .push(", external_id = ")
            .bind(new.external_id.clone())
            .push(", version = ")
            .bind(version)
            .push(", updated_at = ")
            .bind(cx.now)
            .push(" WHERE tenant_id = ")
            .bind(tenant)
            .push(" AND group_id = ")
            .bind(group_id);
    }
    cx.exec(sql).await?;
    // Memberships: replace the list.
    delete_rows(&cx, "group_members", tenant, group_id).await?;
    let numbered: Vec<(usize, &GroupMember)> = members.iter().enumerate().collect();
    for chunk in numbered.chunks(crate::sql::rows_per_statement(5)) {
        let mut sql = cx.sql();
        sql.push(
            "INSERT INTO group_members (tenant_id, group_id, user_name, member_type, position) \
             VALUES ",
        );
        sql.joined(chunk.iter(), ", ", |sql, (position, m)| {
            sql.bind_tuple::<_, sea_orm::Value>([
                tenant.into(),
                group_id.into(),
                m.value.clone().into(),
                m.kind.clone().into(),
                i32::try_from(*position).unwrap_or(i32::MAX).into(),
            ]);
        });
        cx.exec(sql).await?;
    }
    let group = IsvGroup {
        group_id: group_id.to_owned(),
        display_name: display_name.to_owned(),
        external_id: new.external_id.clone(),
        version,
        created_at,
        updated_at: cx.now,
        members,
    };
    cx.journal(
        tenant,
        Entity::Group,
        group_id.to_owned(),
        if creating {
            Action::Created
        } else {
            Action::Updated
        },
        cx.now,
        json(&group),
        test,
    );
    cx.flush_journal().await?;
    txn.commit().await?;
    Ok(Some(group))
}

/// Deletes a group's rows from `table` (`groups` or `group_members`).
async fn delete_rows(
    cx: &Cx<'_>,
    table: &str,
    tenant: &str,
    group_id: &str,
) -> Result<(), StoreError> {
    let mut sql = cx.sql();
    sql.push(&format!("DELETE FROM {table} WHERE tenant_id = "))
        .bind(tenant)
        .push(" AND group_id = ")
        .bind(group_id);
    cx.exec(sql).await?;
    Ok(())
}

pub(crate) async fn memberships(
    db: &impl ConnectionTrait,
    tenant: &str,
    users: &[String],
) -> Result<Vec<(String, String, String)>, StoreError> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "SELECT gm.user_name, g.group_id, g.display_name FROM group_members gm \
         JOIN groups g ON g.tenant_id = gm.tenant_id AND g.group_id = gm.group_id \
         WHERE gm.tenant_id = ",
    )
    .bind(tenant)
    .push(" AND (gm.member_type IS NULL OR lower(gm.member_type) = 'user') AND gm.user_name IN (")
    .bind_list(users.iter().map(String::as_str))
    .push(")");
    db.query_all(sql.build())
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.try_get_by_index(0)?,
                r.try_get_by_index(1)?,
                r.try_get_by_index(2)?,
            ))
        })
        .collect()
}
