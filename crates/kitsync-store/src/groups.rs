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
use crate::Store;
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
    let listed: Vec<(String, String, Option<String>)> = crate::query_rows(db, sql.build()).await?;
    let mut members: BTreeMap<String, Vec<GroupMember>> = BTreeMap::new();
    for (group, value, kind) in listed {
        members
            .entry(group)
            .or_default()
            .push(GroupMember { value, kind });
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

/// What a group write does.
#[derive(Debug, Clone, Copy)]
enum WriteMode {
    /// Creates a group that does not exist yet.
    Create,
    /// Replaces a stored group, at this version when given.
    Replace(Option<i64>),
}

/// Creates or replaces group `group_id` in its own transaction, journaled.
async fn write(
    db: &DatabaseConnection,
    tenant: &str,
    group_id: &str,
    new: &GroupWrite,
    mode: WriteMode,
) -> Result<IsvGroup, GroupWriteError> {
    let txn = db.begin().await?;
    let mut cx = Cx::new(&txn);
    let test = lock_live_tenant(&mut cx, tenant).await?;
    let (current, action) = match mode {
        WriteMode::Create => (None, Action::Created),
        WriteMode::Replace(if_version) => (
            Some(current(&cx, tenant, group_id, if_version).await?),
            Action::Updated,
        ),
    };
    let group = save(&cx, tenant, group_id, new, current).await?;
    journal(&mut cx, tenant, group_id, action, json(&group), test);
    cx.flush_journal().await?;
    txn.commit().await?;
    Ok(group)
}

/// Deletes group `group_id` (at version `if_version`, when given) in its own transaction.
pub(crate) async fn delete(
    db: &DatabaseConnection,
    tenant: &str,
    group_id: &str,
    if_version: Option<i64>,
) -> Result<(), GroupWriteError> {
    let txn = db.begin().await?;
    let mut cx = Cx::new(&txn);
    let test = lock_live_tenant(&mut cx, tenant).await?;
    let current = current(&cx, tenant, group_id, if_version).await?;
    delete_rows(&cx, "group_members", tenant, group_id).await?;
    delete_rows(&cx, "groups", tenant, group_id).await?;
    let data = json(&serde_json::json!({
        "groupId": group_id,
        "deleted": true,
        "version": current.version + 1,
    }));
    journal(&mut cx, tenant, group_id, Action::Deleted, data, test);
    cx.flush_journal().await?;
    txn.commit().await?;
    Ok(())
}

/// Locks the tenant for the write and returns its test flag; a tenant that is not live is
/// [`GroupWriteError::TenantNotFound`].
async fn lock_live_tenant(cx: &mut Cx<'_>, tenant: &str) -> Result<bool, GroupWriteError> {
    cx.lock(&BTreeSet::from([tenant])).await?;
    let mut live = cx.sql();
    live.push("SELECT test FROM tenants WHERE tenant_id = ")
        .bind(tenant)
        .push(" AND deleted = FALSE");
    match cx.query(live).await?.first() {
        Some(row) => Ok(row.try_get_by_index(0).map_err(StoreError::from)?),
        None => Err(GroupWriteError::TenantNotFound(tenant.to_owned())),
    }
}

/// A stored group's version and creation time.
#[derive(Debug, Clone, Copy)]
struct Current {
    version: i64,
    created_at: i64,
}

/// The stored group, checked against `if_version` when given.
async fn current(
    cx: &Cx<'_>,
    tenant: &str,
    group_id: &str,
    if_version: Option<i64>,
) -> Result<Current, GroupWriteError> {
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
    let created_at: i64 = row.try_get_by_index(1).map_err(StoreError::from)?;
    if let Some(expected) = if_version.filter(|e| *e != version) {
        return Err(GroupWriteError::VersionMismatch {
            expected,
            current: version,
        });
    }
    Ok(Current {
        version,
        created_at,
    })
}

/// Writes the group row (inserted when `current` is `None`, else updated) and replaces its
/// memberships, after checking the name and the members.
async fn save(
    cx: &Cx<'_>,
    tenant: &str,
    group_id: &str,
    new: &GroupWrite,
    current: Option<Current>,
) -> Result<IsvGroup, GroupWriteError> {
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
        Some(c) => (c.version + 1, c.created_at),
        None => (1, cx.now),
    };
    let mut sql = cx.sql();
    if current.is_none() {
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
    delete_rows(cx, "group_members", tenant, group_id).await?;
    let numbered: Vec<(usize, &GroupMember)> = members.iter().enumerate().collect();
    for chunk in numbered.chunks(crate::sql::rows_per_statement(5)) {
        let mut sql = cx.sql();
        sql.push(
            "INSERT INTO group_members (tenant_id, group_id, user_name, member_type, position) \
             VALUES ",
        );
        sql.bind_rows(chunk.iter().map(|(position, m)| {
            [
                sea_orm::Value::from(tenant),
                group_id.into(),
                m.value.clone().into(),
                m.kind.clone().into(),
                i32::try_from(*position).unwrap_or(i32::MAX).into(),
            ]
        }));
        cx.exec(sql).await?;
    }
    Ok(IsvGroup {
        group_id: group_id.to_owned(),
        display_name: display_name.to_owned(),
        external_id: new.external_id.clone(),
        version,
        created_at,
        updated_at: cx.now,
        members,
    })
}

/// Journals a group change. Its version is when the change happened (the feed's
/// `changedAt`): for the ISV's own groups, kitsync's clock.
fn journal(
    cx: &mut Cx<'_>,
    tenant: &str,
    group_id: &str,
    action: Action,
    data: String,
    test: bool,
) {
    let now = cx.now;
    cx.journal(
        tenant,
        Entity::Group,
        group_id.to_owned(),
        action,
        now,
        data,
        test,
    );
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
    crate::query_rows(db, sql.build()).await
}

impl Store {
    /// The groups the ISV created through SCIM, by id, each with its members in order.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn isv_groups(&self, tenant_id: &str) -> Result<Vec<IsvGroup>, StoreError> {
        list(&self.db, tenant_id).await
    }

    /// One ISV group.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn isv_group(
        &self,
        tenant_id: &str,
        group_id: &str,
    ) -> Result<Option<IsvGroup>, StoreError> {
        one(&self.db, tenant_id, group_id).await
    }

    /// Creates an ISV group with the id the caller chose (a fresh UUID for SCIM).
    ///
    /// # Errors
    /// [`GroupWriteError`]: the tenant is not live, the name is empty or taken, a member's
    /// value is empty, or the database failed.
    pub async fn create_group(
        &self,
        tenant_id: &str,
        group_id: &str,
        new: &GroupWrite,
    ) -> Result<IsvGroup, GroupWriteError> {
        write(&self.db, tenant_id, group_id, new, WriteMode::Create).await
    }

    /// Replaces an ISV group's name, external id and members; when `if_version` is given the
    /// group must still be at that version.
    ///
    /// # Errors
    /// As [`Store::create_group`], plus [`GroupWriteError::GroupNotFound`] and
    /// [`GroupWriteError::VersionMismatch`].
    pub async fn replace_group(
        &self,
        tenant_id: &str,
        group_id: &str,
        new: &GroupWrite,
        if_version: Option<i64>,
    ) -> Result<IsvGroup, GroupWriteError> {
        write(
            &self.db,
            tenant_id,
            group_id,
            new,
            WriteMode::Replace(if_version),
        )
        .await
    }

    /// Deletes an ISV group (at `if_version`, when given).
    ///
    /// # Errors
    /// [`GroupWriteError::TenantNotFound`], [`GroupWriteError::GroupNotFound`],
    /// [`GroupWriteError::VersionMismatch`], or the database failed.
    pub async fn delete_group(
        &self,
        tenant_id: &str,
        group_id: &str,
        if_version: Option<i64>,
    ) -> Result<(), GroupWriteError> {
        delete(&self.db, tenant_id, group_id, if_version).await
    }
}
