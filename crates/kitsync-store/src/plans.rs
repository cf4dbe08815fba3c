//! Full department syncs held by the mass-deletion guard: listed, approved, rejected.
use crate::error::StoreError;
use crate::model::{Outcome, Plan};
use crate::Store;
use kitsync_domain::FullOrgSnapshot;
use kitsync_sql::audit::Actor;
use kitsync_sql::{Sql, MAX_ROWS};
use sea_orm::ConnectionTrait;
use sea_orm::{EntityTrait, TransactionTrait};
use serde::Serialize;
use std::collections::HashMap;

/// One plan with what an operator needs to decide on it (see [`Store::plan`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanDetail {
    pub plan: Plan,
    /// The departments it would delete (as planned when held), in code order, as they are
    /// now: name and parent (`None` for one deleted since), and their live members.
    pub deletes: Vec<PlannedDelete>,
    /// The full snapshot it came from.
    pub snapshot: FullOrgSnapshot,
}

/// A department a held plan would delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedDelete {
    pub org_code: String,
    /// `None` when the department is gone already.
    pub org_name: Option<String>,
    pub parent_code: Option<String>,
    /// Live members whose department it is.
    pub member_count: u64,
}

impl Store {
    /// Plan `id` with the departments it would delete (names, member counts) and its
    /// snapshot; `None` for an unknown plan.
    ///
    /// # Errors
    /// [`StoreError::Database`], or [`StoreError::Corrupt`] for an unreadable plan.
    pub async fn plan(&self, id: i64) -> Result<Option<PlanDetail>, StoreError> {
        let Some(model) = crate::entity::org_plans::Entity::find_by_id(id)
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let (plan, snapshot) = crate::read::plan_and_snapshot(model)?;
        let snapshot: FullOrgSnapshot = serde_json::from_str(&snapshot)
            .map_err(|e| StoreError::Corrupt(format!("plan {id}: snapshot: {e}")))?;
        let tenant = plan.tenant_id.clone();
        let mut codes = plan.deletes.clone();
        codes.sort();
        codes.dedup();
        let refs: Vec<&str> = codes.iter().map(String::as_str).collect();
        let mut found: HashMap<String, (String, Option<String>)> = HashMap::new();
        for chunk in refs.chunks(MAX_ROWS) {
            let mut sql = Sql::new(self.db.get_database_backend());
            sql.push("SELECT org_code, org_name, parent_code FROM departments WHERE tenant_id = ")
                .bind(tenant.as_str())
                .push(" AND deleted = FALSE AND org_code IN (")
                .bind_list(chunk.iter().copied())
                .push(")");
            for r in self.db.query_all(sql.build()).await? {
                found.insert(
                    r.try_get_by_index(0)?,
                    (r.try_get_by_index(1)?, r.try_get_by_index(2)?),
                );
            }
        }
        let counts = self.department_member_counts(&tenant, &refs).await?;
        let deletes = codes
            .into_iter()
            .map(|code| {
                let (name, parent) = match found.remove(&code) {
                    Some((n, p)) => (Some(n), p.filter(|p| !p.is_empty())),
                    None => (None, None),
                };
                PlannedDelete {
                    member_count: counts.get(&code).copied().unwrap_or(0),
                    org_code: code,
                    org_name: name,
                    parent_code: parent,
                }
            })
            .collect();
        Ok(Some(PlanDetail {
            plan,
            deletes,
            snapshot,
        }))
    }

    /// Live members of `tenant` per department, for the departments `codes` (absent: none).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn department_member_counts(
        &self,
        tenant: &str,
        codes: &[&str],
    ) -> Result<HashMap<String, u64>, StoreError> {
        let mut out = HashMap::new();
        for chunk in codes.chunks(MAX_ROWS) {
            let mut sql = Sql::new(self.db.get_database_backend());
            sql.push("SELECT org_code, COUNT(*) FROM members WHERE tenant_id = ")
                .bind(tenant)
                .push(" AND deleted = FALSE AND org_code IN (")
                .bind_list(chunk.iter().copied())
                .push(") GROUP BY org_code");
            for r in self.db.query_all(sql.build()).await? {
                let n: i64 = r.try_get_by_index(1)?;
                out.insert(r.try_get_by_index(0)?, u64::try_from(n).unwrap_or(0));
            }
        }
        Ok(out)
    }

    /// Full-sync plans, oldest first; only those with `status` when given.
    ///
    /// # Errors
    /// [`StoreError::Database`], or [`StoreError::Corrupt`] for an unreadable plan.
    pub async fn list_plans(
        &self,
        status: Option<crate::journal::PlanStatus>,
    ) -> Result<Vec<Plan>, StoreError> {
        crate::read::list_plans(&self.db, status).await
    }

    /// How many full-sync plans the mass-deletion guard holds (`kitsync plans list`).
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn held_plans(&self) -> Result<u64, StoreError> {
        crate::read::held_plans(&self.db).await
    }

    /// Applies held plan `id` now, bypassing the mass-deletion guard: the snapshot is
    /// re-planned against the current departments (changes newer than it are kept). Returns
    /// [`Outcome::Superseded`] (and marks the plan so) when a newer snapshot or tenant delete
    /// already covers it, otherwise marks it `approved` (its reason names `actor`). The
    /// audit log records it, in the same transaction.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown plan, [`StoreError::Conflict`] when the plan is
    /// not held, [`StoreError::Database`]/[`StoreError::Corrupt`] as for [`Store::apply_batch`].
    #[tracing::instrument(skip(self))]
    pub async fn approve_plan(&self, actor: &Actor, id: i64) -> Result<Outcome, StoreError> {
        let tenant = self.plan_tenant(id).await?;
        let txn = self.db.begin().await?;
        let outcome = crate::apply::approve_plan(&txn, &tenant, id, &actor.describe()).await?;
        let detail = serde_json::json!({ "outcome": outcome });
        crate::audit::record(
            &txn,
            actor,
            "plan.approve",
            &id.to_string(),
            Some(&tenant),
            detail,
        )
        .await?;
        txn.commit().await?;
        tracing::info!(plan = id, ?outcome, by = %actor.describe(), "plan approved");
        Ok(outcome)
    }

    /// Marks held plan `id` rejected; its snapshot is never applied (a later snapshot still is).
    /// Its reason names `actor`; the audit log records it, in the same transaction.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown plan, [`StoreError::Conflict`] when the plan is
    /// not held, [`StoreError::Database`] when the database fails.
    #[tracing::instrument(skip(self))]
    pub async fn reject_plan(&self, actor: &Actor, id: i64) -> Result<(), StoreError> {
        let tenant = self.plan_tenant(id).await?;
        let txn = self.db.begin().await?;
        crate::apply::reject_plan(&txn, &tenant, id, &actor.describe()).await?;
        let detail = serde_json::json!({});
        crate::audit::record(
            &txn,
            actor,
            "plan.reject",
            &id.to_string(),
            Some(&tenant),
            detail,
        )
        .await?;
        txn.commit().await?;
        tracing::info!(plan = id, by = %actor.describe(), "plan rejected");
        Ok(())
    }

    /// The tenant plan `id` belongs to.
    async fn plan_tenant(&self, id: i64) -> Result<String, StoreError> {
        crate::entity::org_plans::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(|p| p.tenant_id)
            .ok_or_else(|| StoreError::NotFound(format!("plan {id}")))
    }
}
