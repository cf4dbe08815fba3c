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
//! - raw statements are built with the `kitsync-sql` crate's `Sql` (placeholders per backend,
//!   statement chunking), the builder the queue shares.
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
mod audit;
pub mod entity;
mod error;
pub mod feed;
mod groups;
pub mod journal;
mod members;
mod model;
mod plans;
mod read;
mod stats;
pub mod tables;
mod tokens;
mod tree;
mod webhooks;
mod windows;

use kitsync_sql as sql;

pub use activity::{
    record_in as record_activity_in, utc8_day, ActivityEvent, ActivityKind, DailyRow, Recorded,
    DAY_MS, UTC8_MS,
};
pub use apply::ledger::KEEP_AFTER_APPLY_MS;
pub use apply::Prepared;
pub use audit::AuditEntry;
pub use error::StoreError;
pub use feed::{ChangeEvent, FeedFilter, FeedPage};
pub use groups::{GroupMember, GroupWrite, GroupWriteError, IsvGroup};
pub use kitsync_sql::audit::Actor;
pub use members::{CmpOp, MemberApp, MemberCond, MemberField, MemberFilter, MemberView};
pub use model::{
    AppState, AuthorizationState, Counts, DepartmentState, DerivedGroup, DirectoryState,
    JournalEntry, MemberState, Outcome, Plan, StoreSettings, TenantState, TenantView,
};
pub use plans::{PlanDetail, PlannedDelete};
pub use read::JournalFilter;
pub use stats::{end_of_day_ms, PeriodFigures, TenantFigures};
pub use tokens::ApiToken;
pub use tree::{DepartmentCounts, Level};
pub use webhooks::{
    new_webhook_id, AttemptOutcome, NewWebhook, WebhookAttempt, WebhookDelivery, WebhookEndpoint,
    WebhookLease, WebhookState, DELIVERY_LOG_KEEP,
};
pub use windows::WINDOW_DAYS;

use kitsync_domain::{Command, QueuedCallback};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, TransactionTrait, TryGetableMany};

/// Runs `statement` and reads every row it returns as `T`: its first column's value, or a
/// tuple of its columns in select order.
pub(crate) async fn query_rows<T: TryGetableMany>(
    db: &impl ConnectionTrait,
    statement: Statement,
) -> Result<Vec<T>, StoreError> {
    db.query_all(statement)
        .await?
        .iter()
        .map(|r| Ok(r.try_get_many_by_index()?))
        .collect()
}

/// The directory store: cheap to clone (a connection pool and settings).
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    settings: StoreSettings,
    /// SQLite's one writer, shared with the embedded queue of this process.
    gate: sql::WriteGate,
}

impl Store {
    #[must_use]
    pub fn new(db: DatabaseConnection, settings: StoreSettings) -> Self {
        let gate = sql::WriteGate::of(&db);
        Store { db, settings, gate }
    }

    #[must_use]
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Whether the database is SQLite, whose one write lock every writer shares.
    #[must_use]
    pub fn is_sqlite(&self) -> bool {
        self.db.get_database_backend() == sea_orm::DbBackend::Sqlite
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
        let commands: Vec<&Command> = commands.iter().collect();
        let prepared = Prepared::of(commands.iter().copied());
        self.apply_claimed(&commands, &[], prepared).await
    }

    /// Applies queued callbacks in one transaction, like [`Store::apply_batch`], and records
    /// each one's replay key in the same transaction: a callback whose key another message
    /// already holds is not applied ([`Outcome::Replayed`]). Callbacks without a key (queued
    /// by an earlier release) are applied as they are.
    ///
    /// # Errors
    /// As [`Store::apply_batch`].
    pub async fn apply_queued(
        &self,
        callbacks: &[QueuedCallback],
    ) -> Result<Vec<Outcome>, StoreError> {
        let prepared = Store::prepare(callbacks.iter().map(|q| &q.command));
        self.apply_prepared(callbacks, prepared).await
    }

    /// Builds, without the database, what applying `commands` will write (see
    /// [`Prepared`]), so a caller can do it while an earlier transaction runs, on another
    /// thread; [`Store::apply_prepared`] then only decides and writes.
    #[must_use]
    pub fn prepare<'c>(commands: impl IntoIterator<Item = &'c Command>) -> Prepared {
        Prepared::of(commands)
    }

    /// [`Store::apply_queued`] with the rows [`Store::prepare`] built from the same
    /// `callbacks`.
    ///
    /// # Errors
    /// As [`Store::apply_batch`].
    #[tracing::instrument(skip_all, fields(commands = callbacks.len()))]
    pub async fn apply_prepared(
        &self,
        callbacks: &[QueuedCallback],
        prepared: Prepared,
    ) -> Result<Vec<Outcome>, StoreError> {
        if callbacks.is_empty() {
            return Ok(Vec::new());
        }
        let commands: Vec<&Command> = callbacks.iter().map(|q| &q.command).collect();
        let claims: Vec<apply::ledger::Claim<'_>> = callbacks
            .iter()
            .enumerate()
            .filter_map(|(index, q)| {
                q.replay.as_ref().map(|stamp| apply::ledger::Claim {
                    index,
                    stamp,
                    message_id: &q.message_id,
                })
            })
            .collect();
        self.apply_claimed(&commands, &claims, prepared).await
    }

    async fn apply_claimed(
        &self,
        commands: &[&Command],
        claims: &[apply::ledger::Claim<'_>],
        prepared: Prepared,
    ) -> Result<Vec<Outcome>, StoreError> {
        // On SQLite: after the writers of this process that came first (the ingress's
        // queue inserts among them), so an apply never starves them.
        let _turn = self.gate.turn().await;
        let txn = self.db.begin().await?;
        let outcomes = apply::apply_batch(
            &txn,
            self.settings.mass_delete_share,
            commands,
            claims,
            prepared,
        )
        .await?;
        txn.commit().await?;
        Ok(outcomes)
    }

    /// Deletes the replay keys no replay can need any more: those whose signed window and
    /// post-apply retention both ended before `horizon_ms`. Returns how many.
    ///
    /// # Errors
    /// The statement failed.
    pub async fn forget_replay_keys(&self, horizon_ms: i64) -> Result<u64, StoreError> {
        apply::ledger::forget_before(&self.db, horizon_ms).await
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

    /// Checks the database answers.
    ///
    /// # Errors
    /// [`StoreError::Database`] when it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(self.db.ping().await?)
    }
}
