//! Reads for tests, the CLI and (later) the directory API. Live rows only, sorted in Rust so
//! the order does not depend on the backend's collation.
use crate::entity::{
    apps, authorizations, departments, journal, members, org_plans, tenant_instances, tenants,
};
use crate::error::StoreError;
use crate::journal::PlanStatus;
use crate::members::{MemberFilter, MemberView};
use crate::model::{
    AppState, AuthorizationState, Counts, DepartmentState, DerivedGroup, DirectoryState,
    JournalEntry, MemberState, Plan, TenantState, TenantView,
};
use crate::Store;
use kitsync_domain::SecretText;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect, Select, Statement,
};
use std::collections::{BTreeMap, BTreeSet};

/// A stored member row as the store hands it out.
pub(crate) fn member_state(m: members::Model) -> MemberState {
    MemberState {
        user_name: m.user_name,
        name: m.name,
        org_code: m.org_code,
        position: m.position,
        employee_code: m.employee_code,
        employee_type: m.employee_type,
        mobile: m.mobile,
        email: m.email,
        work_place: m.work_place,
        entry_date: m.entry_date,
        extension: m.extension,
        test: m.test,
        version: m.version,
    }
}

/// A tenant's instance ids, sorted.
async fn instance_ids(db: &DatabaseConnection, t: &str) -> Result<Vec<String>, StoreError> {
    let mut ids: Vec<String> = tenant_instances::Entity::find()
        .filter(tenant_instances::Column::TenantId.eq(t))
        .all(db)
        .await?
        .into_iter()
        .map(|m| m.instance_id)
        .collect();
    ids.sort();
    Ok(ids)
}

/// Tenant `t`'s row, unless unknown or deleted.
async fn live_tenant(
    db: &DatabaseConnection,
    t: &str,
) -> Result<Option<tenants::Model>, StoreError> {
    Ok(tenants::Entity::find_by_id(t.to_owned())
        .filter(tenants::Column::Deleted.eq(false))
        .one(db)
        .await?)
}

pub(crate) async fn tenant(
    db: &DatabaseConnection,
    t: &str,
) -> Result<Option<TenantView>, StoreError> {
    let Some(m) = live_tenant(db, t).await? else {
        return Ok(None);
    };
    let instance_ids = instance_ids(db, t).await?;
    Ok(Some(tenant_view(m, instance_ids)))
}

/// Whether tenant `t` is live, and not test data unless `include_test`: one primary-key probe
/// (what a list of the tenant's rows checks first; [`tenant`] reads its instances as well).
pub(crate) async fn tenant_visible(
    db: &DatabaseConnection,
    t: &str,
    include_test: bool,
) -> Result<bool, StoreError> {
    let statement = crate::sql::Sql::new(db.get_database_backend())
        .push("SELECT test FROM tenants WHERE tenant_id = ")
        .bind(t)
        .push(" AND deleted = FALSE")
        .take();
    let test: Vec<bool> = crate::query_rows(db, statement).await?;
    Ok(test.first().is_some_and(|&test| include_test || !test))
}

/// A stored tenant row with its (sorted) instance ids, as the directory API shows it.
fn tenant_view(m: tenants::Model, instance_ids: Vec<String>) -> TenantView {
    TenantView {
        tenant_id: m.tenant_id,
        tenant_code: m.tenant_code,
        name: m.name,
        domain_name: m.domain_name,
        test: m.test,
        instance_ids,
    }
}

/// One keyset page of `q`'s live rows: not `deleted`, not `test` unless `include_test`,
/// after `after` in `key` order, at most `limit` (all when `None`). A primary-key range scan
/// where `q` narrows the key's prefix.
async fn live_page<E: EntityTrait>(
    db: &DatabaseConnection,
    q: Select<E>,
    [deleted, test, key]: [E::Column; 3],
    after: Option<&str>,
    limit: Option<u64>,
    include_test: bool,
) -> Result<Vec<E::Model>, StoreError> {
    let mut q = q.filter(deleted.eq(false));
    if !include_test {
        q = q.filter(test.eq(false));
    }
    if let Some(after) = after {
        q = q.filter(key.gt(after));
    }
    Ok(q.order_by_asc(key).limit(limit).all(db).await?)
}

/// Live tenants in `tenant_id` order after `after`, at most `limit`; test tenants only with
/// `include_test`. A primary-key range scan, and one instance query for the page.
pub(crate) async fn tenants_page(
    db: &DatabaseConnection,
    after: Option<&str>,
    limit: u64,
    include_test: bool,
    search: Option<&str>,
) -> Result<Vec<TenantView>, StoreError> {
    use sea_orm::sea_query::{Expr, Func, LikeExpr};
    use tenants::Column as C;
    let mut find = tenants::Entity::find();
    if let Some(text) = search.filter(|t| !t.is_empty()) {
        // Contains, ignoring ASCII case, on both backends: both sides lowered, the text's
        // own wildcards escaped.
        let escaped: String = text
            .to_lowercase()
            .chars()
            .flat_map(|c| match c {
                '%' | '_' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        let like = || LikeExpr::new(format!("%{escaped}%")).escape('\\');
        find = find.filter(
            sea_orm::Condition::any()
                .add(Expr::expr(Func::lower(Expr::col(C::TenantId))).like(like()))
                .add(Expr::expr(Func::lower(Expr::col(C::Name))).like(like())),
        );
    }
    let rows = live_page(
        db,
        find,
        [C::Deleted, C::Test, C::TenantId],
        after,
        Some(limit),
        include_test,
    )
    .await?;
    let mut instances: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if !rows.is_empty() {
        for i in tenant_instances::Entity::find()
            .filter(
                tenant_instances::Column::TenantId.is_in(rows.iter().map(|t| t.tenant_id.clone())),
            )
            .all(db)
            .await?
        {
            instances
                .entry(i.tenant_id)
                .or_default()
                .push(i.instance_id);
        }
    }
    Ok(rows
        .into_iter()
        .map(|m| {
            let mut instance_ids = instances.remove(&m.tenant_id).unwrap_or_default();
            instance_ids.sort();
            tenant_view(m, instance_ids)
        })
        .collect())
}

/// Live departments of a tenant in `org_code` order after `after`, at most `limit`
/// (all when `None`); test rows only when `include_test`. A primary-key range scan.
pub(crate) async fn departments(
    db: &DatabaseConnection,
    t: &str,
    after: Option<&str>,
    limit: Option<u64>,
    include_test: bool,
) -> Result<Vec<DepartmentState>, StoreError> {
    use departments::Column as C;
    Ok(live_page(
        db,
        departments::Entity::find().filter(C::TenantId.eq(t)),
        [C::Deleted, C::Test, C::OrgCode],
        after,
        limit,
        include_test,
    )
    .await?
    .into_iter()
    .map(department_state)
    .collect())
}

fn app_state(m: apps::Model) -> AppState {
    AppState {
        app_id: m.app_id,
        client_id: m.client_id,
        client_secret: SecretText(m.client_secret.0),
        test: m.test,
        version: m.version,
    }
}

fn department_state(m: departments::Model) -> DepartmentState {
    DepartmentState {
        org_code: m.org_code,
        org_name: m.org_name,
        parent_code: m.parent_code,
        test: m.test,
        version: m.version,
    }
}

fn authorization_state(m: authorizations::Model) -> AuthorizationState {
    AuthorizationState {
        app_id: m.app_id,
        user_name: m.user_name,
        role: m.role,
        enabled: m.enabled,
        test: m.test,
        version: m.version,
    }
}

/// One live app of a tenant, with its sealed secret.
pub(crate) async fn app(
    db: &DatabaseConnection,
    tenant_id: &str,
    app_id: &str,
) -> Result<Option<AppState>, StoreError> {
    Ok(apps::Entity::find()
        .filter(apps::Column::TenantId.eq(tenant_id))
        .filter(apps::Column::AppId.eq(app_id))
        .filter(apps::Column::Deleted.eq(false))
        .one(db)
        .await?
        .map(app_state))
}

/// Tenant `t`'s live rows of one table (`tenant_id` and `deleted` name its columns), as the
/// store hands them out; unordered.
async fn tenant_rows<C, T>(
    db: &DatabaseConnection,
    t: &str,
    [tenant_id, deleted]: [C; 2],
    state: fn(<C::EntityName as EntityTrait>::Model) -> T,
) -> Result<Vec<T>, StoreError>
where
    C: ColumnTrait,
    C::EntityName: EntityTrait<Column = C>,
{
    Ok(C::EntityName::find()
        .filter(tenant_id.eq(t))
        .filter(deleted.eq(false))
        .all(db)
        .await?
        .into_iter()
        .map(state)
        .collect())
}

pub(crate) async fn snapshot(
    db: &DatabaseConnection,
    t: &str,
) -> Result<DirectoryState, StoreError> {
    use {apps::Column as A, authorizations::Column as Z};
    use {departments::Column as D, members::Column as M};
    let tenant = live_tenant(db, t).await?.map(|m| TenantState {
        tenant_code: m.tenant_code,
        name: m.name,
        domain_name: m.domain_name,
        test: m.test,
        version: m.version,
    });
    let instance_ids = instance_ids(db, t).await?;
    let mut apps = tenant_rows(db, t, [A::TenantId, A::Deleted], app_state).await?;
    apps.sort_by(|a, b| a.app_id.cmp(&b.app_id));
    let mut departments = tenant_rows(db, t, [D::TenantId, D::Deleted], department_state).await?;
    departments.sort_by(|a, b| a.org_code.cmp(&b.org_code));
    let mut members = tenant_rows(db, t, [M::TenantId, M::Deleted], member_state).await?;
    members.sort_by(|a, b| a.user_name.cmp(&b.user_name));
    let mut authorizations =
        tenant_rows(db, t, [Z::TenantId, Z::Deleted], authorization_state).await?;
    authorizations.sort_by(|a, b| (&a.app_id, &a.user_name).cmp(&(&b.app_id, &b.user_name)));
    Ok(DirectoryState {
        tenant,
        instance_ids,
        apps,
        departments,
        members,
        authorizations,
    })
}

pub(crate) async fn tenant_ids(db: &DatabaseConnection) -> Result<Vec<String>, StoreError> {
    let statement = Statement::from_string(
        db.get_database_backend(),
        "SELECT tenant_id FROM tenant_marks UNION SELECT tenant_id FROM tenants",
    );
    let ids: BTreeSet<String> = crate::query_rows(db, statement)
        .await?
        .into_iter()
        .collect();
    Ok(ids.into_iter().collect())
}

/// Live apps of a tenant in `app_id` order after `after`, at most `limit`.
pub(crate) async fn apps_page(
    db: &DatabaseConnection,
    t: &str,
    after: Option<&str>,
    limit: u64,
    include_test: bool,
) -> Result<Vec<AppState>, StoreError> {
    use apps::Column as C;
    Ok(live_page(
        db,
        apps::Entity::find().filter(C::TenantId.eq(t)),
        [C::Deleted, C::Test, C::AppId],
        after,
        Some(limit),
        include_test,
    )
    .await?
    .into_iter()
    .map(app_state)
    .collect())
}

/// Live authorisations of one app in `user_name` order after `after`, at most `limit` (a
/// primary-key range scan).
pub(crate) async fn authorizations_page(
    db: &DatabaseConnection,
    t: &str,
    app: &str,
    after: Option<&str>,
    limit: u64,
    include_test: bool,
) -> Result<Vec<AuthorizationState>, StoreError> {
    use authorizations::Column as C;
    Ok(live_page(
        db,
        authorizations::Entity::find()
            .filter(C::TenantId.eq(t))
            .filter(C::AppId.eq(app)),
        [C::Deleted, C::Test, C::UserName],
        after,
        Some(limit),
        include_test,
    )
    .await?
    .into_iter()
    .map(authorization_state)
    .collect())
}

pub(crate) async fn derived_groups(
    db: &DatabaseConnection,
    t: &str,
) -> Result<Vec<DerivedGroup>, StoreError> {
    let rows: Vec<(String, String, String)> = authorizations::Entity::find()
        .select_only()
        .column(authorizations::Column::AppId)
        .column(authorizations::Column::Role)
        .column(authorizations::Column::UserName)
        .filter(authorizations::Column::TenantId.eq(t))
        .filter(authorizations::Column::Deleted.eq(false))
        .into_tuple()
        .all(db)
        .await?;
    let mut groups: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (app, role, user) in rows {
        groups.entry((app, role)).or_default().push(user);
    }
    Ok(groups
        .into_iter()
        .map(|((app_id, role), mut members)| {
            members.sort();
            DerivedGroup {
                group_id: format!("{app_id}:{role}"),
                display_name: format!("{app_id} {role}s"),
                app_id,
                role,
                members,
            }
        })
        .collect())
}

/// Which journal rows a change-feed page reads.
#[derive(Debug, Clone, Default)]
pub struct JournalFilter {
    /// Only this tenant's rows (the `(tenant_id, id)` index).
    pub tenant_id: Option<String>,
    /// Only these entities (`member`, `department`, …).
    pub entities: Option<Vec<String>>,
    pub include_test: bool,
}

pub(crate) async fn journal_after(
    db: &DatabaseConnection,
    after_id: i64,
    limit: u64,
) -> Result<Vec<JournalEntry>, StoreError> {
    journal_page(
        db,
        after_id,
        &JournalFilter {
            include_test: true,
            ..JournalFilter::default()
        },
        limit,
    )
    .await
}

pub(crate) async fn journal_page(
    db: &DatabaseConnection,
    after_id: i64,
    filter: &JournalFilter,
    limit: u64,
) -> Result<Vec<JournalEntry>, StoreError> {
    journal_range(db, after_id, None, filter, limit).await
}

/// Like [`journal_page`], and only up to id `until` (included) when given.
/// The journal entries about one entity of a tenant (`entity`, `entity_key`), newest first:
/// at most `limit` below id `before` (from the newest when `None`). An index range.
pub(crate) async fn entity_history(
    db: &DatabaseConnection,
    tenant: &str,
    entity: &str,
    key: &str,
    before: Option<i64>,
    limit: u64,
) -> Result<Vec<JournalEntry>, StoreError> {
    let mut q = journal::Entity::find()
        .filter(journal::Column::TenantId.eq(tenant))
        .filter(journal::Column::Entity.eq(entity))
        .filter(journal::Column::EntityKey.eq(key));
    if let Some(b) = before {
        q = q.filter(journal::Column::Id.lt(b));
    }
    q.order_by_desc(journal::Column::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(journal_entry)
        .collect()
}

fn journal_entry(m: journal::Model) -> Result<JournalEntry, StoreError> {
    let data = serde_json::from_str(&m.data)
        .map_err(|e| StoreError::Corrupt(format!("journal {}: data: {e}", m.id)))?;
    Ok(JournalEntry {
        id: m.id,
        tenant_id: m.tenant_id,
        entity: m.entity,
        entity_key: m.entity_key,
        action: m.action,
        version: m.version,
        data,
        test: m.test,
        applied_at: m.applied_at,
    })
}

pub(crate) async fn journal_range(
    db: &DatabaseConnection,
    after_id: i64,
    until: Option<i64>,
    filter: &JournalFilter,
    limit: u64,
) -> Result<Vec<JournalEntry>, StoreError> {
    let mut q = journal::Entity::find().filter(journal::Column::Id.gt(after_id));
    if let Some(until) = until {
        q = q.filter(journal::Column::Id.lte(until));
    }
    if let Some(t) = &filter.tenant_id {
        q = q.filter(journal::Column::TenantId.eq(t.as_str()));
    }
    if let Some(entities) = &filter.entities {
        q = q.filter(journal::Column::Entity.is_in(entities.iter().cloned()));
    }
    if !filter.include_test {
        q = q.filter(journal::Column::Test.eq(false));
    }
    q.order_by_asc(journal::Column::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(journal_entry)
        .collect()
}

pub(crate) async fn held_plans(db: &DatabaseConnection) -> Result<u64, StoreError> {
    let sql = "SELECT COUNT(*) FROM org_plans WHERE status = 'held'"; // PlanStatus::Held
    let row = db
        .query_one(Statement::from_string(db.get_database_backend(), sql))
        .await?
        .ok_or_else(|| StoreError::Corrupt("count returned no row".into()))?;
    Ok(u64::try_from(row.try_get_by_index::<i64>(0)?).unwrap_or(0))
}

pub(crate) async fn counts(db: &DatabaseConnection) -> Result<Counts, StoreError> {
    let sql = "SELECT \
        (SELECT COUNT(*) FROM tenants WHERE deleted = FALSE), \
        (SELECT COUNT(*) FROM apps WHERE deleted = FALSE), \
        (SELECT COUNT(*) FROM departments WHERE deleted = FALSE), \
        (SELECT COUNT(*) FROM members WHERE deleted = FALSE), \
        (SELECT COUNT(*) FROM authorizations WHERE deleted = FALSE), \
        (SELECT COUNT(*) FROM journal), \
        (SELECT COUNT(*) FROM org_plans WHERE status = 'held')";
    let row = db
        .query_one(Statement::from_string(db.get_database_backend(), sql))
        .await?
        .ok_or_else(|| StoreError::Corrupt("counts returned no row".into()))?;
    let n = |i: usize| -> Result<u64, StoreError> {
        Ok(u64::try_from(row.try_get_by_index::<i64>(i)?).unwrap_or(0))
    };
    Ok(Counts {
        tenants: n(0)?,
        apps: n(1)?,
        departments: n(2)?,
        members: n(3)?,
        authorizations: n(4)?,
        journal: n(5)?,
        held_plans: n(6)?,
    })
}

/// A plan without its (possibly large) snapshot.
#[derive(FromQueryResult)]
struct PlanRow {
    id: i64,
    tenant_id: String,
    version: i64,
    deletes: String,
    delete_count: i32,
    live_before: i32,
    org_count: i32,
    status: String,
    created_at: i64,
    decided_at: Option<i64>,
    reason: Option<String>,
}

pub(crate) async fn list_plans(
    db: &DatabaseConnection,
    status: Option<PlanStatus>,
) -> Result<Vec<Plan>, StoreError> {
    use org_plans::Column as C;
    let mut q = org_plans::Entity::find()
        .select_only()
        .columns([
            C::Id,
            C::TenantId,
            C::Version,
            C::Deletes,
            C::DeleteCount,
            C::LiveBefore,
            C::OrgCount,
            C::Status,
            C::CreatedAt,
            C::DecidedAt,
            C::Reason,
        ])
        .order_by_asc(C::Id);
    if let Some(s) = status {
        q = q.filter(C::Status.eq(s.as_str()));
    }
    q.into_model::<PlanRow>()
        .all(db)
        .await?
        .into_iter()
        .map(plan_of)
        .collect()
}

/// A plan as read (its snapshot left out).
fn plan_of(m: PlanRow) -> Result<Plan, StoreError> {
    let deletes: Vec<String> = serde_json::from_str(&m.deletes)
        .map_err(|e| StoreError::Corrupt(format!("plan {}: deletes: {e}", m.id)))?;
    Ok(Plan {
        id: m.id,
        tenant_id: m.tenant_id,
        version: m.version,
        status: PlanStatus::parse(&m.status)
            .ok_or_else(|| StoreError::Corrupt(format!("plan {}: status {:?}", m.id, m.status)))?,
        org_count: m.org_count,
        live_before: m.live_before,
        delete_count: m.delete_count,
        deletes,
        created_at: m.created_at,
        decided_at: m.decided_at,
        reason: m.reason,
    })
}

/// A whole `org_plans` row: the plan, and its snapshot's JSON.
pub(crate) fn plan_and_snapshot(m: org_plans::Model) -> Result<(Plan, String), StoreError> {
    let row = PlanRow {
        id: m.id,
        tenant_id: m.tenant_id,
        version: m.version,
        deletes: m.deletes,
        delete_count: m.delete_count,
        live_before: m.live_before,
        org_count: m.org_count,
        status: m.status,
        created_at: m.created_at,
        decided_at: m.decided_at,
        reason: m.reason,
    };
    Ok((plan_of(row)?, m.snapshot))
}

impl Store {
    /// One live tenant with its instance ids (`None` when unknown or deleted).
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn tenant(&self, tenant_id: &str) -> Result<Option<TenantView>, StoreError> {
        tenant(&self.db, tenant_id).await
    }

    /// Whether a tenant is live, and not test data unless `include_test`.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn tenant_visible(
        &self,
        tenant_id: &str,
        include_test: bool,
    ) -> Result<bool, StoreError> {
        tenant_visible(&self.db, tenant_id, include_test).await
    }

    /// A page of live tenants in `tenant_id` order after `after` (keyset pagination); test
    /// tenants only with `include_test`; with `search`, only those whose id or name contains
    /// it (ASCII case ignored; it reads every live tenant, for an operator's search).
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn tenants(
        &self,
        after: Option<&str>,
        limit: u64,
        include_test: bool,
        search: Option<&str>,
    ) -> Result<Vec<TenantView>, StoreError> {
        tenants_page(&self.db, after, limit, include_test, search).await
    }

    /// A page of a tenant's live departments in `org_code` order, after `after` (keyset
    /// pagination: stable while others write); `limit: None` reads them all. Test rows only
    /// with `include_test`.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn departments(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: Option<u64>,
        include_test: bool,
    ) -> Result<Vec<DepartmentState>, StoreError> {
        departments(&self.db, tenant_id, after, limit, include_test).await
    }

    /// A keyset page (after `after`, at most `limit`) of the tenant's members that at least
    /// one app authorises and that match `filter`, in `userName` order, each with its apps.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn members(
        &self,
        tenant_id: &str,
        filter: &MemberFilter,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<MemberView>, StoreError> {
        crate::members::page(&self.db, tenant_id, filter, after, limit).await
    }

    /// One member, if live and authorised by at least one app.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn member(
        &self,
        tenant_id: &str,
        user_name: &str,
        include_test: bool,
    ) -> Result<Option<MemberView>, StoreError> {
        crate::members::one(&self.db, tenant_id, user_name, include_test).await
    }

    /// A keyset page of the tenant's live apps (secrets stay sealed; callers never show them).
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn apps(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: u64,
        include_test: bool,
    ) -> Result<Vec<AppState>, StoreError> {
        apps_page(&self.db, tenant_id, after, limit, include_test).await
    }

    /// A keyset page of one app's live authorisations, in `userName` order.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn authorizations(
        &self,
        tenant_id: &str,
        app_id: &str,
        after: Option<&str>,
        limit: u64,
        include_test: bool,
    ) -> Result<Vec<AuthorizationState>, StoreError> {
        authorizations_page(&self.db, tenant_id, app_id, after, limit, include_test).await
    }

    /// One live app with its sealed `clientSecret` (`kitsync apps show`; never served over
    /// HTTP).
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn app_credentials(
        &self,
        tenant_id: &str,
        app_id: &str,
    ) -> Result<Option<AppState>, StoreError> {
        app(&self.db, tenant_id, app_id).await
    }

    /// The live directory of one tenant (tombstones absent), deterministically ordered.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn snapshot(&self, tenant_id: &str) -> Result<DirectoryState, StoreError> {
        snapshot(&self.db, tenant_id).await
    }

    /// Every tenant id any applied command named (deleted tenants included), sorted.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn tenant_ids(&self) -> Result<Vec<String>, StoreError> {
        tenant_ids(&self.db).await
    }

    /// The per-app role groups of a tenant, derived from its live authorisations (enabled or
    /// not): id `{appId}:{role}`, display name `{appId} {role}s`.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn derived_groups(&self, tenant_id: &str) -> Result<Vec<DerivedGroup>, StoreError> {
        derived_groups(&self.db, tenant_id).await
    }

    /// Live rows per directory table, journal rows and held plans.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        counts(&self.db).await
    }
}
