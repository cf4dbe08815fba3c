//! Full department syncs held by the mass-deletion guard: listed, approved, rejected.
use crate::error::StoreError;
use crate::model::{Outcome, Plan};
use crate::Store;
use sea_orm::{EntityTrait, TransactionTrait};

impl Store {
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
    /// already covers it, otherwise marks it `approved`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown plan, [`StoreError::Conflict`] when the plan is
    /// not held, [`StoreError::Database`]/[`StoreError::Corrupt`] as for [`Store::apply_batch`].
    #[tracing::instrument(skip(self))]
    pub async fn approve_plan(&self, id: i64) -> Result<Outcome, StoreError> {
        let tenant = self.plan_tenant(id).await?;
        let txn = self.db.begin().await?;
        let outcome = crate::apply::approve_plan(&txn, &tenant, id).await?;
        txn.commit().await?;
        tracing::info!(plan = id, ?outcome, "plan approved");
        Ok(outcome)
    }

    /// Marks held plan `id` rejected; its snapshot is never applied (a later snapshot still is).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown plan, [`StoreError::Conflict`] when the plan is
    /// not held, [`StoreError::Database`] when the database fails.
    #[tracing::instrument(skip(self))]
    pub async fn reject_plan(&self, id: i64) -> Result<(), StoreError> {
        let tenant = self.plan_tenant(id).await?;
        let txn = self.db.begin().await?;
        crate::apply::reject_plan(&txn, &tenant, id).await?;
        txn.commit().await?;
        tracing::info!(plan = id, "plan rejected");
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
