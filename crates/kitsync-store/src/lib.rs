//! kitsync-store: the relational directory and the one place that writes it.
//!
//! The worker hands [`Store::apply_batch`] the validated [`Command`]s of several Kit callbacks;
//! they are applied in one transaction, idempotently and order-insensitively: every row keeps
//! the rank (marketplace version, content fingerprint) of the change that last wrote it,
//! deletes leave tombstones, tenant and app deletes set purge cutoffs and full department
//! snapshots a snapshot cutoff (the rules are pure functions in `kitsync_domain::decide`).
//! The final state after any delivery order and duplication equals the state after applying
//! the same changes in timestamp order; `tests/convergence.rs` checks that property.
//!
//! Layout:
//! - [`entity`]: sea-orm entities of the directory tables (migration
//!   `m20261122_000001_directory`), for reads.
//! - `apply`: the write path, hand-written set-based SQL — per command and entity one `SELECT`
//!   of the current ranks, the pure decisions, one multi-row upsert guarded by
//!   `WHERE (excluded.version, excluded.fp) > (t.version, t.fp)`, and the journal rows, so a
//!   500-user authSync or a 10 000-department full sync is a handful of statements.
//!   `apply/{tenant,app,org,auth}.rs` hold the per-callback rules; `org.rs` also holds the
//!   mass-deletion guard's plans.
//! - `read`: [`Store::snapshot`], [`Store::derived_groups`], [`Store::journal_after`], and the
//!   directory API's keyset pages ([`Store::departments`], [`Store::apps`],
//!   [`Store::journal_page`], …).
//! - `members`: member pages with their filters ([`Store::members`], [`Store::member`]).
//! - `groups`: the ISV's SCIM groups ([`Store::create_group`], …); `members` also compiles
//!   SCIM user filters ([`MemberCond`], [`Store::query_members`]).
//! - `activity`: activity events and their UTC+8 daily rollups ([`Store::record_activity`]).
//! - `stats`: the statistics' authorisation history (`auth_spans`, built from the journal by
//!   [`Store::index_stats`]) and the per-day series ([`Store::stats_daily`]).
//! - `windows`: precomputed per-tenant, per-day statistics that answer any period of up to
//!   30 days by reading one row per tenant ([`Store::stats_period`], [`Store::stats_tenants`],
//!   [`Store::warm_stats`]).
//! - `tokens`: API bearer tokens ([`Store::create_token`], [`Store::authenticate`]).
//! - [`feed`]: the change feed's event shape and pages ([`Store::feed_page`]), shared by the
//!   pull feed (`GET /api/v1/events`) and the webhook push.
//! - `webhooks`: webhook endpoints, their cursor, retry schedule and lease, and the log of
//!   their recent attempts ([`Store::create_webhook`], [`Store::claim_webhook`],
//!   [`Store::record_webhook_attempt`], …).
//! - `sql`: placeholder numbering per backend (`$n` / `?`) and statement chunking.
//!
//! Concurrency: each transaction first upserts the `tenant_marks` rows of its tenants in
//! sorted order in one statement; on PostgreSQL that row-locks them until commit, so workers
//! on different machines never interleave on a tenant and never deadlock. On SQLite the
//! database has one writer at a time anyway.
//!
//! Journal order: `journal.id` follows commit order across all writers. Each transaction
//! writes its journal rows last, under a transaction-scoped lock on PostgreSQL (SQLite has one
//! writer anyway), so a reader that has seen id N never later sees a smaller id appear, and
//! `id > cursor` polling misses nothing (`tests/journal.rs`). The price: the journal write
//! and commit of concurrent transactions take turns.
//!
//! Decisions beyond the domain rules:
//! - Purges tombstone live rows with `version <= V` (the cutoff is inclusive too), so a child
//!   change carrying exactly the delete's timestamp ends deleted whatever the arrival order.
//! - The snapshot cutoff for department changes is `org_snapshot_version - 1`, and a full
//!   snapshot at `V` tombstones the departments it removes at `(V - 1, DELETE_FP)`: it removes
//!   what is older than itself, so an incremental change stamped exactly `V` survives whether
//!   it arrives before or after the snapshot, and two different snapshots with the same `V`
//!   merge the same way in either order (their union; a department in both keeps the entry
//!   with the higher fingerprint).
//! - A tenant delete also marks the tenant's held plans at or below it `superseded`.
//! - Instance ids are recorded for every command whatever its outcome, in `tenant_instances`
//!   (a set, so order-insensitive); a new one is journaled (`tenant`/`instance_added`) but does
//!   not change the command's [`Outcome`].
//! - An app tombstone clears the stored `client_secret`.
//! - A tenant delete also removes the ISV-created groups created (wall clock) before its
//!   timestamp.
#![forbid(unsafe_code)]

mod activity;
mod apply;
pub mod entity;
mod error;
pub mod feed;
mod groups;
pub mod journal;
mod members;
mod model;
mod read;
pub mod sql;
mod stats;
mod tables;
mod tokens;
mod webhooks;
mod windows;

pub use activity::{
    record_in as record_activity_in, utc8_day, ActivityEvent, ActivityKind, DailyRow, Recorded,
    DAY_MS, UTC8_MS,
};
pub use error::StoreError;
pub use feed::{ChangeEvent, FeedFilter, FeedPage};
pub use groups::{GroupMember, GroupWrite, GroupWriteError, IsvGroup};
pub use members::{CmpOp, MemberApp, MemberCond, MemberField, MemberFilter, MemberView};
pub use model::{
    AppState, AuthorizationState, Counts, DepartmentState, DerivedGroup, DirectoryState,
    JournalEntry, MemberState, Outcome, Plan, StoreSettings, TenantState, TenantView,
};
pub use read::JournalFilter;
pub use stats::{end_of_day_ms, PeriodFigures, TenantFigures};
pub use tokens::ApiToken;
pub use webhooks::{
    new_webhook_id, AttemptOutcome, NewWebhook, WebhookAttempt, WebhookDelivery, WebhookEndpoint,
    WebhookLease, WebhookState, DELIVERY_LOG_KEEP,
};
pub use windows::WINDOW_DAYS;

use kitsync_domain::Command;
use sea_orm::{DatabaseConnection, EntityTrait, TransactionTrait};

/// The directory store: cheap to clone (a connection pool and settings).
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    settings: StoreSettings,
}

impl Store {
    #[must_use]
    pub fn new(db: DatabaseConnection, settings: StoreSettings) -> Self {
        Store { db, settings }
    }

    #[must_use]
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    #[must_use]
    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// Applies the commands in one transaction, all or nothing, and returns one outcome per
    /// command in input order. Commands are order-insensitive, so the batch may hold changes
    /// of any tenants and kinds in any order, repeats included.
    ///
    /// # Errors
    /// [`StoreError::Database`] when a statement or the commit fails (nothing is applied;
    /// [`StoreError::is_transient`] says whether a retry may succeed), [`StoreError::Corrupt`]
    /// when stored data cannot be read back.
    #[tracing::instrument(skip_all, fields(commands = commands.len()))]
    pub async fn apply_batch(&self, commands: &[Command]) -> Result<Vec<Outcome>, StoreError> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.db.begin().await?;
        let outcomes = apply::apply_batch(&txn, self.settings.mass_delete_share, commands).await?;
        txn.commit().await?;
        Ok(outcomes)
    }

    /// Applies one command in its own transaction.
    ///
    /// # Errors
    /// As [`Store::apply_batch`].
    pub async fn apply(&self, command: &Command) -> Result<Outcome, StoreError> {
        let mut outcomes = self.apply_batch(std::slice::from_ref(command)).await?;
        outcomes
            .pop()
            .ok_or_else(|| StoreError::Corrupt("no outcome for the command".into()))
    }

    /// Full-sync plans, oldest first; only those with `status` when given.
    ///
    /// # Errors
    /// [`StoreError::Database`], or [`StoreError::Corrupt`] for an unreadable plan.
    pub async fn list_plans(
        &self,
        status: Option<journal::PlanStatus>,
    ) -> Result<Vec<Plan>, StoreError> {
        read::list_plans(&self.db, status).await
    }

    /// How many full-sync plans the mass-deletion guard holds (`kitsync plans list`).
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn held_plans(&self) -> Result<u64, StoreError> {
        read::held_plans(&self.db).await
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
        let outcome =
            apply::approve_plan(&txn, self.settings.mass_delete_share, &tenant, id).await?;
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
        apply::reject_plan(&txn, self.settings.mass_delete_share, &tenant, id).await?;
        txn.commit().await?;
        tracing::info!(plan = id, "plan rejected");
        Ok(())
    }

    async fn plan_tenant(&self, id: i64) -> Result<String, StoreError> {
        entity::org_plans::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(|p| p.tenant_id)
            .ok_or_else(|| StoreError::NotFound(format!("plan {id}")))
    }

    /// One live tenant with its instance ids (`None` when unknown or deleted).
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn tenant(&self, tenant_id: &str) -> Result<Option<TenantView>, StoreError> {
        read::tenant(&self.db, tenant_id).await
    }

    /// A page of live tenants in `tenant_id` order after `after` (keyset pagination); test
    /// tenants only with `include_test`.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn tenants(
        &self,
        after: Option<&str>,
        limit: u64,
        include_test: bool,
    ) -> Result<Vec<TenantView>, StoreError> {
        read::tenants_page(&self.db, after, limit, include_test).await
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
        read::departments(&self.db, tenant_id, after, limit, include_test).await
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
        members::page(&self.db, tenant_id, filter, after, limit).await
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
        members::one(&self.db, tenant_id, user_name, include_test).await
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
        read::apps_page(&self.db, tenant_id, after, limit, include_test).await
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
        read::authorizations_page(&self.db, tenant_id, app_id, after, limit, include_test).await
    }

    /// Records a batch of activity events in one transaction (see the `activity` module):
    /// repeats of stored events change nothing.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails; nothing of the batch is kept then.
    pub async fn record_activity(&self, events: &[ActivityEvent]) -> Result<Recorded, StoreError> {
        activity::record(&self.db, events, chrono::Utc::now().timestamp_millis()).await
    }

    /// Deletes raw activity events that happened before `before_ms` (the daily rollups stay).
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn prune_activity(&self, before_ms: i64) -> Result<u64, StoreError> {
        activity::prune(&self.db, before_ms).await
    }

    /// A tenant's activity rollups, by UTC+8 day then user.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn activity_daily(&self, tenant_id: &str) -> Result<Vec<DailyRow>, StoreError> {
        activity::daily(&self.db, tenant_id).await
    }

    /// Reads journal rows into the statistics' authorisation history, up to `limit` per call
    /// (see the `stats` module); how many it read (0: caught up).
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails (nothing of the batch is kept).
    pub async fn index_stats(&self, limit: u64) -> Result<u64, StoreError> {
        stats::index(&self.db, limit).await
    }

    /// Indexes until caught up with the journal, at most `max_rounds` batches of 5 000.
    ///
    /// # Errors
    /// As [`Store::index_stats`].
    pub async fn catch_up_stats(&self, max_rounds: u32) -> Result<(), StoreError> {
        for _ in 0..max_rounds {
            if self.index_stats(5000).await? < 5000 {
                break;
            }
        }
        Ok(())
    }

    /// The statistics of UTC+8 days `[from_day, to_day]` (days since 1970-01-01), at most
    /// [`WINDOW_DAYS`] days: read from the precomputed windows, computing those missing.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] for a period of more than [`WINDOW_DAYS`] days or none;
    /// [`StoreError::Database`] when the database fails.
    pub async fn stats_period(
        &self,
        from_day: i64,
        to_day: i64,
    ) -> Result<PeriodFigures, StoreError> {
        windows::period(&self.db, from_day, to_day).await
    }

    /// Computes the statistics windows of the 31 UTC+8 days up to `today` that do not exist
    /// yet — what the presets (`day`, `7d`, `30d`), their previous periods and their daily
    /// series read — so their requests only read; how many tenant-days it computed.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn warm_stats(&self, today: i64) -> Result<usize, StoreError> {
        windows::warm(&self.db, today).await
    }

    /// A value that changes whenever a statistics window may have been deleted or a
    /// production tenant was added or removed: while it stays the same (and so does the
    /// day), [`Store::warm_stats`] has nothing to do.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn stats_fingerprint(&self) -> Result<(i64, i64), StoreError> {
        windows::fingerprint(&self.db).await
    }

    /// Per day of `[from_day, to_day]`: `(day, active members, active projects)`, days with
    /// activity only.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn stats_daily(
        &self,
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<(i64, u64, u64)>, StoreError> {
        windows::daily(&self.db, from_day, to_day).await
    }

    /// Every production tenant's figures for `[from_day, to_day]` (at most [`WINDOW_DAYS`]
    /// days), by tenant id.
    ///
    /// # Errors
    /// As [`Store::stats_period`].
    pub async fn stats_tenants(
        &self,
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<TenantFigures>, StoreError> {
        windows::tenants(&self.db, from_day, to_day).await
    }

    /// The groups the ISV created through SCIM, by id, each with its members in order.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn isv_groups(&self, tenant_id: &str) -> Result<Vec<IsvGroup>, StoreError> {
        groups::list(&self.db, tenant_id).await
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
        groups::one(&self.db, tenant_id, group_id).await
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
        groups::write(&self.db, tenant_id, groups::Write::Create { group_id, new })
            .await?
            .ok_or_else(|| GroupWriteError::GroupNotFound(group_id.to_owned()))
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
        groups::write(
            &self.db,
            tenant_id,
            groups::Write::Replace {
                group_id,
                new,
                if_version,
            },
        )
        .await?
        .ok_or_else(|| GroupWriteError::GroupNotFound(group_id.to_owned()))
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
        groups::write(
            &self.db,
            tenant_id,
            groups::Write::Delete {
                group_id,
                if_version,
            },
        )
        .await
        .map(|_| ())
    }

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
        members::query(&self.db, tenant_id, cond, offset, limit).await
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
        groups::memberships(&self.db, tenant_id, users).await
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
        read::app(&self.db, tenant_id, app_id).await
    }

    /// The live directory of one tenant (tombstones absent), deterministically ordered.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn snapshot(&self, tenant_id: &str) -> Result<DirectoryState, StoreError> {
        read::snapshot(&self.db, tenant_id).await
    }

    /// Every tenant id any applied command named (deleted tenants included), sorted.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn tenant_ids(&self) -> Result<Vec<String>, StoreError> {
        read::tenant_ids(&self.db).await
    }

    /// The per-app role groups of a tenant, derived from its live authorisations (enabled or
    /// not): id `{appId}:{role}`, display name `{appId} {role}s`.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn derived_groups(&self, tenant_id: &str) -> Result<Vec<DerivedGroup>, StoreError> {
        read::derived_groups(&self.db, tenant_id).await
    }

    /// Up to `limit` journal entries with id above `after_id` that match `filter`, in id
    /// order, which is commit order (see "Journal order" above): polling from the last id seen
    /// misses nothing.
    ///
    /// # Errors
    /// [`StoreError::Database`], or [`StoreError::Corrupt`] for an unreadable entry.
    pub async fn journal_page(
        &self,
        after_id: i64,
        filter: &JournalFilter,
        limit: u64,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        read::journal_page(&self.db, after_id, filter, limit).await
    }

    /// A page of the change feed: up to `limit` events after journal id `after` (and not
    /// past `until`, when given) that match `filter`, with the cursor to resume from (the
    /// last journal row read, matching or not; `until` when the page ends before `limit`
    /// events). See [`feed`].
    ///
    /// # Errors
    /// [`StoreError::Database`], or [`StoreError::Corrupt`] for an unreadable entry.
    pub async fn feed_page(
        &self,
        after: i64,
        until: Option<i64>,
        filter: &FeedFilter,
        limit: u64,
    ) -> Result<FeedPage, StoreError> {
        feed::page(&self.db, after, until, filter, limit).await
    }

    /// The newest journal id (0 for an empty journal). Every row up to it is committed, so a
    /// reader bounded by it misses nothing below it (see "Journal order" above).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn journal_head(&self) -> Result<i64, StoreError> {
        webhooks::max_journal_id(&self.db).await
    }

    /// Up to `limit` journal entries with id above `after_id`, in id order.
    ///
    /// # Errors
    /// [`StoreError::Database`], or [`StoreError::Corrupt`] for an unreadable entry.
    pub async fn journal_after(
        &self,
        after_id: i64,
        limit: u64,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        read::journal_after(&self.db, after_id, limit).await
    }

    /// Live rows per directory table, journal rows and held plans.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        read::counts(&self.db).await
    }

    /// Issues an API token; the returned secret is shown once and never stored.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] without scopes; [`StoreError::Database`] when the insert fails.
    pub async fn create_token(
        &self,
        name: &str,
        scopes: &[kitsync_domain::Scope],
        tenant_id: Option<&str>,
    ) -> Result<(ApiToken, secrecy::SecretString), StoreError> {
        tokens::create(&self.db, name, scopes, tenant_id).await
    }

    /// Every token issued, revoked ones included, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        tokens::list(&self.db).await
    }

    /// Revokes token `id`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id, [`StoreError::Conflict`] when already revoked.
    pub async fn revoke_token(&self, id: &str) -> Result<(), StoreError> {
        tokens::revoke(&self.db, id).await
    }

    /// The live token a bearer string is, or `None` (unknown, malformed, revoked, wrong
    /// secret: the caller cannot tell which).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn authenticate(&self, bearer: &str) -> Result<Option<ApiToken>, StoreError> {
        tokens::authenticate(&self.db, bearer).await
    }

    /// Registers a webhook endpoint (`active`, due now) starting after `new.after`, or after
    /// the newest journal row.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] for a negative cursor; [`StoreError::Database`].
    pub async fn create_webhook(&self, new: &NewWebhook) -> Result<WebhookEndpoint, StoreError> {
        webhooks::create(&self.db, new_webhook_id(), new).await
    }

    /// [`Store::create_webhook`] under an id taken beforehand with [`new_webhook_id`], for a
    /// secret that is sealed bound to its endpoint before the row exists.
    ///
    /// # Errors
    /// As [`Store::create_webhook`]; [`StoreError::Database`] when the id is already taken.
    pub async fn create_webhook_with_id(
        &self,
        id: &str,
        new: &NewWebhook,
    ) -> Result<WebhookEndpoint, StoreError> {
        webhooks::create(&self.db, id.to_owned(), new).await
    }

    /// Every webhook endpoint, oldest first (never their secrets).
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`] for an unreadable row.
    pub async fn list_webhooks(&self) -> Result<Vec<WebhookEndpoint>, StoreError> {
        webhooks::list(&self.db).await
    }

    /// One webhook endpoint.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`] for an unreadable row.
    pub async fn webhook(&self, id: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
        webhooks::get(&self.db, id).await
    }

    /// Removes a webhook endpoint and its delivery log.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id; [`StoreError::Database`].
    pub async fn remove_webhook(&self, id: &str) -> Result<(), StoreError> {
        webhooks::remove(&self.db, id).await
    }

    /// Disables a webhook endpoint (`enabled = false`: nothing is sent, its cursor stays) or
    /// enables it again (due now).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id; [`StoreError::Database`].
    pub async fn set_webhook_enabled(
        &self,
        id: &str,
        enabled: bool,
    ) -> Result<WebhookEndpoint, StoreError> {
        webhooks::set_enabled(&self.db, id, enabled).await
    }

    /// Makes a webhook endpoint due now and restarts its backoff.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id, [`StoreError::Conflict`] when it is
    /// disabled; [`StoreError::Database`].
    pub async fn retry_webhook(&self, id: &str) -> Result<WebhookEndpoint, StoreError> {
        webhooks::retry_now(&self.db, id).await
    }

    /// The latest delivery attempts of an endpoint, newest first.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id; [`StoreError::Database`].
    pub async fn webhook_deliveries(
        &self,
        id: &str,
        limit: u64,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        webhooks::deliveries(&self.db, id, limit).await
    }

    /// Ids of the endpoints due at `now` (Unix ms) with something to send and no live lease,
    /// most overdue first.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn due_webhooks(&self, now: i64, limit: u64) -> Result<Vec<String>, StoreError> {
        webhooks::due(&self.db, now, limit).await
    }

    /// Leases endpoint `id` to `owner` for `lease_ms` if it is due and no live lease holds
    /// it; `None` otherwise (another dispatcher has it, or it is not due or disabled).
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`] for an unreadable row.
    pub async fn claim_webhook(
        &self,
        id: &str,
        owner: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<Option<WebhookLease>, StoreError> {
        webhooks::claim(&self.db, id, owner, now, lease_ms).await
    }

    /// Moves a leased endpoint's cursor to `cursor` without sending (the rows up to it do not
    /// match its filter) and releases the lease. False when the lease was lost.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn skip_webhook_to(
        &self,
        lease: &WebhookLease,
        cursor: i64,
    ) -> Result<bool, StoreError> {
        webhooks::skip_to(&self.db, lease, cursor).await
    }

    /// Records a delivery attempt and releases the lease, in one transaction (see
    /// [`AttemptOutcome`]). False, with nothing written, when the lease was lost.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn record_webhook_attempt(
        &self,
        lease: &WebhookLease,
        attempt: &WebhookAttempt,
    ) -> Result<bool, StoreError> {
        webhooks::record(&self.db, lease, attempt).await
    }

    /// Releases a lease without recording anything.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn release_webhook(&self, lease: &WebhookLease) -> Result<(), StoreError> {
        webhooks::release(&self.db, lease).await
    }

    /// Checks the database answers.
    ///
    /// # Errors
    /// [`StoreError::Database`] when it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(self.db.ping().await?)
    }
}
