//! The write path: one transaction per batch, set-based statements per entity.
//!
//! Per command and entity: (1) one `SELECT` of the current ranks of every key the command
//! touches (chunks of 1 000 keys: an `IN` list on SQLite, a `VALUES` list probing the primary
//! key on PostgreSQL), (2) the pure [`decide`] per row, (3) one multi-row
//! `INSERT … ON CONFLICT DO UPDATE … WHERE (excluded.version, excluded.fp) > (t.version, t.fp)
//! RETURNING key` per chunk — the `WHERE` is a safety net, the tenant lock already serialises
//! writers — and (4) the journal rows of what was actually written, buffered and inserted
//! multi-row at the end of the batch. Purges are set-based `UPDATE … RETURNING`.
use crate::error::StoreError;
use crate::journal::{Action, Entity};
use crate::model::Outcome;
use crate::sql::{rows_per_statement, Sql, MAX_ROWS};
use crate::tables::{Row, Update};
use kitsync_domain::decide::{decide, Decision, Rank, DELETE_FP};
use kitsync_domain::Command;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, QueryResult, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

mod app;
mod auth;
pub(crate) mod ledger;
mod org;
mod tenant;

pub(crate) use org::{approve_plan, reject_plan};

/// The PostgreSQL advisory lock key that orders journal writers ("kitsjrnl").
const JOURNAL_LOCK: i64 = 0x6b69_7473_6a72_6e6c;

/// A tenant's cutoffs, as locked at the start of the transaction and moved by it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Marks {
    /// Highest tenant-delete version: every change to the tenant's rows at or below it is
    /// superseded.
    pub purged: i64,
    /// Highest applied full department snapshot.
    pub snapshot: i64,
}

impl Marks {
    /// Department changes strictly older than the last applied snapshot are superseded: in
    /// timestamp order the snapshot would have overwritten or removed them. A change at the
    /// snapshot's own version is still decided by rank, exactly as if it had arrived first
    /// (the snapshot only removes departments older than itself), so ties converge too.
    pub(crate) fn department_cutoff(self) -> i64 {
        self.purged.max(self.snapshot.saturating_sub(1))
    }
}

/// How the row decisions of one command add up to its [`Outcome`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    pub applied: u32,
    pub duplicate: u32,
    pub stale: u32,
    pub superseded: u32,
    /// A purge or snapshot cutoff moved.
    pub moved: bool,
}

impl Tally {
    pub(crate) fn note(&mut self, d: Decision) {
        match d {
            Decision::Apply => self.applied += 1,
            Decision::Duplicate => self.duplicate += 1,
            Decision::Stale => self.stale += 1,
            Decision::Superseded => self.superseded += 1,
        }
    }

    pub(crate) fn outcome(self) -> Outcome {
        if self.applied > 0 || self.moved {
            Outcome::Applied {
                changed: self.applied,
            }
        } else if self.stale > 0 {
            Outcome::Stale
        } else if self.superseded > 0 {
            Outcome::Superseded
        } else {
            Outcome::Duplicate
        }
    }
}

/// A stored row's rank, tombstone flag and the extra columns asked for.
pub(crate) struct Current {
    pub rank: Rank,
    pub deleted: bool,
    pub row: QueryResult,
}

impl Current {
    /// The rank and tombstone flag at columns `at`, `at + 1` and `at + 2` of a loaded row.
    fn read(row: QueryResult, at: usize) -> Result<Self, StoreError> {
        let rank = Rank {
            version: row.try_get_by_index(at)?,
            fp: row.try_get_by_index(at + 1)?,
        };
        let deleted: bool = row.try_get_by_index(at + 2)?;
        Ok(Current { rank, deleted, row })
    }

    /// Column `column` of table `R`, as read back with the rank (see [`Cx::load_current`]).
    pub(crate) fn get<R: Row, T: sea_orm::TryGetable>(
        &self,
        column: &str,
    ) -> Result<T, StoreError> {
        crate::tables::read::<R, T>(&self.row, column)
    }
}

/// One row a command wants to write.
pub(crate) struct Change<R> {
    pub row: R,
    pub journal_key: String,
    /// The journal's JSON of the new state (see [`json`]).
    pub data: String,
}

impl<R: Row> Change<R> {
    pub(crate) fn key(&self) -> &str {
        self.row.key()
    }
}

/// What the journal keeps of a change [`Cx::write_changes`] wrote, and what it did to the
/// row (`created`, …).
pub(crate) struct Written {
    /// The row's [`Row::KEY`].
    pub key: String,
    /// The row's [`Row::identity`], kept where the write names the rows it stored
    /// ([`Cx::names_written`]).
    pub identity: Option<String>,
    pub journal_key: String,
    pub data: String,
    pub version: i64,
    pub test: bool,
    pub action: Action,
}

/// JSON text of a journal payload. The payloads are plain structs of strings, numbers and
/// booleans, whose serialisation cannot fail; `null` keeps the column valid regardless.
pub(crate) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Journal action for a written change, given what was stored before.
pub(crate) type ActionFn<R> = fn(Option<&Current>, &Change<R>) -> Result<Action, StoreError>;

pub(crate) fn upsert_action<R>(cur: Option<&Current>, _: &Change<R>) -> Result<Action, StoreError> {
    Ok(match cur {
        Some(c) if !c.deleted => Action::Updated,
        _ => Action::Created,
    })
}

pub(crate) fn tombstone_action<R>(
    _: Option<&Current>,
    _: &Change<R>,
) -> Result<Action, StoreError> {
    Ok(Action::Deleted)
}

struct JournalRow {
    tenant_id: String,
    entity: Entity,
    key: String,
    action: Action,
    version: i64,
    data: String,
    test: bool,
}

/// The state of one apply transaction.
pub(crate) struct Cx<'a> {
    pub txn: &'a DatabaseTransaction,
    pub backend: DbBackend,
    pub now: i64,
    marks: HashMap<String, Marks>,
    app_purges: HashMap<(String, String), i64>,
    journal: Vec<JournalRow>,
}

impl<'a> Cx<'a> {
    pub(crate) fn new(txn: &'a DatabaseTransaction) -> Self {
        Cx {
            txn,
            backend: txn.get_database_backend(),
            now: chrono::Utc::now().timestamp_millis(),
            marks: HashMap::new(),
            app_purges: HashMap::new(),
            journal: Vec::new(),
        }
    }

    pub(crate) fn sql(&self) -> Sql {
        Sql::new(self.backend)
    }

    pub(crate) async fn query(&self, sql: Sql) -> Result<Vec<QueryResult>, StoreError> {
        Ok(self.txn.query_all(sql.build()).await?)
    }

    pub(crate) async fn exec(&self, sql: Sql) -> Result<u64, StoreError> {
        Ok(self.txn.execute(sql.build()).await?.rows_affected())
    }

    /// Locks the tenants, in sorted order, with one upsert per chunk: the `DO UPDATE` row-locks
    /// each `tenant_marks` row until commit (PostgreSQL), so concurrent workers never
    /// interleave on a tenant and, locking in the same order, never deadlock. It also returns
    /// the cutoffs. On SQLite the first write takes the database's write lock.
    pub(crate) async fn lock(&mut self, tenants: &BTreeSet<&str>) -> Result<(), StoreError> {
        let sorted: Vec<&str> = tenants.iter().copied().collect();
        for chunk in sorted.chunks(MAX_ROWS) {
            let mut sql = self.sql();
            sql.push("INSERT INTO tenant_marks (tenant_id) VALUES ");
            sql.joined(chunk.iter(), ", ", |sql, t| {
                sql.bind_tuple([*t]);
            });
            sql.push(
                " ON CONFLICT (tenant_id) DO UPDATE SET tenant_id = excluded.tenant_id \
                 RETURNING tenant_id, purged_version, org_snapshot_version",
            );
            for row in self.query(sql).await? {
                let tenant: String = row.try_get_by_index(0)?;
                let marks = Marks {
                    purged: row.try_get_by_index(1)?,
                    snapshot: row.try_get_by_index(2)?,
                };
                self.marks.insert(tenant, marks);
            }
        }
        Ok(())
    }

    pub(crate) fn marks(&self, tenant: &str) -> Result<Marks, StoreError> {
        self.marks
            .get(tenant)
            .copied()
            .ok_or_else(|| StoreError::Corrupt(format!("tenant {tenant} was not locked")))
    }

    /// Raises the tenant's purge cutoff (the caller checked it is higher).
    pub(crate) async fn set_purged(&mut self, tenant: &str, v: i64) -> Result<(), StoreError> {
        self.raise_mark(tenant, "purged_version", |m| &mut m.purged, v)
            .await
    }

    /// Raises the tenant's snapshot cutoff (the caller checked it is higher).
    pub(crate) async fn set_snapshot(&mut self, tenant: &str, v: i64) -> Result<(), StoreError> {
        self.raise_mark(tenant, "org_snapshot_version", |m| &mut m.snapshot, v)
            .await
    }

    /// Raises one cutoff of the tenant's marks to `v`, never lowering it: `column` in
    /// `tenant_marks`, `field` in the cached [`Marks`].
    async fn raise_mark(
        &mut self,
        tenant: &str,
        column: &str,
        field: fn(&mut Marks) -> &mut i64,
        v: i64,
    ) -> Result<(), StoreError> {
        let mut sql = self.sql();
        sql.push("UPDATE tenant_marks SET ")
            .push(column)
            .push(" = ")
            .bind(v)
            .push(" WHERE tenant_id = ")
            .bind(tenant)
            .push(" AND ")
            .push(column)
            .push(" < ")
            .bind(v);
        self.exec(sql).await?;
        if let Some(m) = self.marks.get_mut(tenant) {
            let mark = field(m);
            *mark = (*mark).max(v);
        }
        Ok(())
    }

    /// The app's purge cutoff (0 when the app has no row), cached for the transaction.
    pub(crate) async fn app_purge(&mut self, tenant: &str, app: &str) -> Result<i64, StoreError> {
        self.load_app_purges([(tenant, app)]).await?;
        Ok(self
            .app_purges
            .get(&(tenant.to_owned(), app.to_owned()))
            .copied()
            .unwrap_or(0))
    }

    /// Caches the purge cutoffs of the `(tenant, app)` pairs not cached yet, with one
    /// statement per chunk of tenants (see [`Cx::app_purge`]).
    pub(crate) async fn load_app_purges(
        &mut self,
        pairs: impl IntoIterator<Item = (&str, &str)>,
    ) -> Result<(), StoreError> {
        let missing: BTreeSet<(String, String)> = pairs
            .into_iter()
            .map(|(t, a)| (t.to_owned(), a.to_owned()))
            .filter(|k| !self.app_purges.contains_key(k))
            .collect();
        let tenants: BTreeSet<&str> = missing.iter().map(|(t, _)| t.as_str()).collect();
        let tenants: Vec<&str> = tenants.into_iter().collect();
        let mut found: HashMap<(String, String), i64> = HashMap::new();
        for chunk in tenants.chunks(MAX_ROWS) {
            let mut sql = self.sql();
            sql.push("SELECT tenant_id, app_id, purged_version FROM apps WHERE tenant_id IN (");
            sql.bind_list(chunk.iter().copied());
            sql.push(")");
            for row in self.query(sql).await? {
                let k = (row.try_get_by_index(0)?, row.try_get_by_index(1)?);
                found.insert(k, row.try_get_by_index(2)?);
            }
        }
        for k in missing {
            let v = found.get(&k).copied().unwrap_or(0);
            self.app_purges.insert(k, v);
        }
        Ok(())
    }

    pub(crate) fn set_app_purge(&mut self, tenant: &str, app: &str, v: i64) {
        let e = self
            .app_purges
            .entry((tenant.to_owned(), app.to_owned()))
            .or_insert(v);
        *e = (*e).max(v);
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn journal(
        &mut self,
        tenant: &str,
        entity: Entity,
        key: String,
        action: Action,
        version: i64,
        data: String,
        test: bool,
    ) {
        self.journal.push(JournalRow {
            tenant_id: tenant.to_owned(),
            entity,
            key,
            action,
            version,
            data,
            test,
        });
    }

    /// Writes the buffered journal rows, in the order the changes were made. Must be the
    /// transaction's last write: on PostgreSQL it first takes the journal lock, held until
    /// commit, so journal ids are handed out in commit order across all writers — a reader
    /// that has seen id N never later sees a smaller one appear (a sequence alone hands ids out
    /// in the order the inserts run, and interleaves concurrent inserts). SQLite has one
    /// writer at a time already.
    pub(crate) async fn flush_journal(&mut self) -> Result<(), StoreError> {
        if self.journal.is_empty() {
            return Ok(());
        }
        if self.backend == DbBackend::Postgres {
            let mut sql = self.sql();
            sql.push("SELECT pg_advisory_xact_lock(")
                .bind(JOURNAL_LOCK)
                .push(")");
            self.query(sql).await?;
        }
        let mut rows = std::mem::take(&mut self.journal).into_iter();
        let per_statement = rows_per_statement(8);
        loop {
            let chunk: Vec<JournalRow> = rows.by_ref().take(per_statement).collect();
            if chunk.is_empty() {
                return Ok(());
            }
            let mut sql = self.sql();
            sql.push(
                "INSERT INTO journal (tenant_id, entity, entity_key, action, version, data, test, applied_at) VALUES ",
            );
            sql.joined(chunk, ", ", |sql, r| {
                sql.bind_tuple::<_, Value>([
                    r.tenant_id.into(),
                    r.entity.as_str().into(),
                    r.key.into(),
                    r.action.as_str().into(),
                    r.version.into(),
                    r.data.into(),
                    r.test.into(),
                    self.now.into(),
                ]);
            });
            self.exec(sql).await?;
        }
    }

    /// Current ranks of `keys` (all rows of the scope when `None`) in table `R`, restricted
    /// by the `scope` equalities, with the `extra` columns (read with [`Current::get`]). The
    /// scope's columns and [`Row::KEY`] are the table's conflict key, in order.
    pub(crate) async fn load_current<R: Row>(
        &self,
        scope: &[(&str, &str)],
        keys: Option<&[&str]>,
        extra: &[&str],
    ) -> Result<HashMap<String, Current>, StoreError> {
        let Some(keys) = keys else {
            let mut out = HashMap::new();
            for row in self.query(self.select_scope::<R>(scope, extra)).await? {
                let key: String = row.try_get_by_index(0)?;
                out.insert(key, Current::read(row, 1)?);
            }
            return Ok(out);
        };
        let columns: Vec<&str> = scope.iter().map(|(c, _)| *c).chain([R::KEY]).collect();
        if columns != R::CONFLICT {
            return Err(StoreError::Corrupt(format!(
                "{}: {columns:?} is not the conflict key",
                R::TABLE
            )));
        }
        let mut by_identity: HashMap<String, &str> = HashMap::with_capacity(keys.len());
        let wanted: Vec<Vec<&str>> = keys
            .iter()
            .map(|k| {
                let id: Vec<&str> = scope.iter().map(|(_, v)| *v).chain([*k]).collect();
                by_identity.insert(crate::tables::identity(id.iter().copied()), k);
                id
            })
            .collect();
        let mut found = self.load_rows::<R>(&wanted, extra).await?;
        Ok(by_identity
            .into_iter()
            .filter_map(|(id, k)| found.remove(&id).map(|c| (k.to_owned(), c)))
            .collect())
    }

    /// Current ranks of the rows of table `R` whose conflict keys are `wanted` (each in
    /// [`Row::CONFLICT`] order, across any tenants and apps), by identity
    /// ([`crate::tables::identity`]), with the `extra` columns. One statement per chunk:
    /// a primary-key probe per key on both backends.
    pub(crate) async fn load_rows<R: Row>(
        &self,
        wanted: &[Vec<&str>],
        extra: &[&str],
    ) -> Result<HashMap<String, Current>, StoreError> {
        let n = R::CONFLICT.len();
        let mut out = HashMap::with_capacity(wanted.len());
        if wanted.is_empty() {
            return Ok(out);
        }
        // PostgreSQL plans the probes for the table as it is now, not once for all: both the
        // primary key and `members_org_user` (tenant, department, user) serve a full-key
        // probe, and while a first large sync fills an empty table the planner rates them
        // alike; a prepared statement's cached generic plan then kept the one that scans the
        // whole tenant for every key (measured: a 100 000-member tenant took 87 s instead of
        // 5). Only the probes: planning every write per execution cost a fifth of the apply.
        let pg = self.backend == DbBackend::Postgres;
        if pg {
            self.txn
                .execute_unprepared("SET LOCAL plan_cache_mode = force_custom_plan")
                .await?;
        }
        for chunk in wanted.chunks(rows_per_statement(n)) {
            let sql = self.probe_rows::<R>(chunk, extra);
            for row in self.query(sql).await? {
                let mut parts: Vec<String> = Vec::with_capacity(n);
                for i in 0..n {
                    parts.push(row.try_get_by_index(i)?);
                }
                let id = crate::tables::identity(parts.iter().map(String::as_str));
                out.insert(id, Current::read(row, n)?);
            }
        }
        if pg {
            self.txn
                .execute_unprepared("SET LOCAL plan_cache_mode = auto")
                .await?;
        }
        Ok(out)
    }

    /// `SELECT key, version, fp, deleted, extra… FROM table WHERE scope`.
    fn select_scope<R: Row>(&self, scope: &[(&str, &str)], extra: &[&str]) -> Sql {
        let mut sql = self.sql();
        sql.push("SELECT ")
            .push(R::KEY)
            .push(", version, fp, deleted");
        for e in extra {
            sql.push(", ").push(e);
        }
        sql.push(" FROM ").push(R::TABLE).push(" WHERE TRUE");
        for (col, v) in scope {
            sql.push(" AND ").push(col).push(" = ").bind(*v);
        }
        sql
    }

    /// `SELECT k.column1…, t.version, t.fp, t.deleted, t.extra…` for the wanted conflict
    /// keys, `k` being a `VALUES` list. On PostgreSQL a `LATERAL … LIMIT 1` equality on the
    /// full key: a plain join or `IN` list is planned from table statistics, and while a table
    /// grows quickly (the first big sync) they lag behind, and the planner then scans the whole
    /// tenant through another index for every batch; this form can only be an index probe. On
    /// SQLite a `CROSS JOIN`, which keeps the list as the outer loop (a probe per key).
    fn probe_rows<R: Row>(&self, wanted: &[Vec<&str>], extra: &[&str]) -> Sql {
        let mut sql = self.sql();
        sql.push("SELECT ");
        for i in 1..=R::CONFLICT.len() {
            sql.push("k.column").push(&i.to_string()).push(", ");
        }
        sql.push("t.version, t.fp, t.deleted");
        for e in extra {
            sql.push(", t.").push(e);
        }
        sql.push(" FROM (VALUES ");
        sql.joined(wanted.iter(), ", ", |sql, id| {
            sql.bind_tuple(id.iter().copied());
        });
        let on = |sql: &mut Sql, alias: &str| {
            for (i, col) in R::CONFLICT.iter().enumerate() {
                if i > 0 {
                    sql.push(" AND ");
                }
                sql.push(alias)
                    .push(col)
                    .push(" = k.column")
                    .push(&(i + 1).to_string());
            }
        };
        if self.backend == DbBackend::Postgres {
            sql.push(") AS k CROSS JOIN LATERAL (SELECT version, fp, deleted");
            for e in extra {
                sql.push(", ").push(e);
            }
            sql.push(" FROM ").push(R::TABLE).push(" WHERE ");
            on(&mut sql, "");
            sql.push(" LIMIT 1) AS t");
        } else {
            sql.push(") AS k CROSS JOIN ")
                .push(R::TABLE)
                .push(" AS t WHERE ");
            on(&mut sql, "t.");
        }
        sql
    }

    /// Decides every change against the stored rows, writes the winners set-based (`update`
    /// picks the row's columns an existing row takes from the change), tallies the decisions
    /// and returns what was written, with its journal action (see [`Cx::journal_written`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn write_changes<R: Row>(
        &mut self,
        update: Update,
        cutoff: i64,
        current: &HashMap<String, Current>,
        changes: Vec<Change<R>>,
        action: ActionFn<R>,
        tally: &mut Tally,
    ) -> Result<Vec<Written>, StoreError> {
        let named = self.names_written();
        let (rows, sent) = pick(
            cutoff,
            changes,
            |r| current.get(r.key()),
            named,
            action,
            tally,
        )?;
        let written = self.write_rows(update, rows).await?;
        Ok(confirm(sent, &written, tally))
    }

    /// Writes `rows` (any tenants and apps; each conflict key at most once) with multi-row
    /// `INSERT … ON CONFLICT DO UPDATE … WHERE` the row ranks higher; `update` picks the
    /// columns an existing row takes. Returns what it stored (see [`Stored`]).
    pub(crate) async fn write_rows<R: Row>(
        &self,
        update: Update,
        rows: Vec<R>,
    ) -> Result<Stored, StoreError> {
        let update = update.columns::<R>();
        let returning = self.names_written();
        let mut written: HashSet<String> =
            HashSet::with_capacity(if returning { rows.len() } else { 0 });
        let per_statement = rows_per_statement(R::COLUMNS.len());
        let mut pending = rows.into_iter().peekable();
        while pending.peek().is_some() {
            let mut sql = self.sql();
            sql.push("INSERT INTO ")
                .push(R::TABLE)
                .push(" (")
                .push(&R::COLUMNS.join(", "))
                .push(") VALUES ");
            sql.joined(pending.by_ref().take(per_statement), ", ", |sql, row| {
                sql.bind_tuple(row.values());
            });
            sql.push(" ON CONFLICT (")
                .push(&R::CONFLICT.join(", "))
                .push(") DO UPDATE SET ");
            sql.joined(update.iter(), ", ", |sql, col| {
                sql.push(col).push(" = excluded.").push(col);
            });
            sql.push(" WHERE (excluded.version, excluded.fp) > (")
                .push(R::TABLE)
                .push(".version, ")
                .push(R::TABLE)
                .push(".fp)");
            if !returning {
                self.exec(sql).await?;
                continue;
            }
            sql.push(" RETURNING ").push(&R::CONFLICT.join(", "));
            let n = R::CONFLICT.len();
            for row in self.query(sql).await? {
                let mut parts: Vec<String> = Vec::with_capacity(n);
                for i in 0..n {
                    parts.push(row.try_get_by_index(i)?);
                }
                written.insert(crate::tables::identity(parts.iter().map(String::as_str)));
            }
        }
        Ok(if returning {
            Stored::Only(written)
        } else {
            Stored::All
        })
    }

    /// Whether [`Cx::write_rows`] names the rows it stored ([`Stored::Only`], PostgreSQL)
    /// rather than storing all it was given ([`Stored::All`], SQLite).
    pub(crate) fn names_written(&self) -> bool {
        self.backend == DbBackend::Postgres
    }

    /// Journals written changes, one row each, in the order they were made.
    pub(crate) fn journal_written(&mut self, entity: Entity, tenant: &str, written: Vec<Written>) {
        for w in written {
            self.journal(
                tenant,
                entity,
                w.journal_key,
                w.action,
                w.version,
                w.data,
                w.test,
            );
        }
    }

    /// Tombstones, set-based, every live row of `table` in the scope whose version is at or
    /// below `version` (a purge), journaling each. `keys` are the columns that identify a row
    /// within the scope (joined with `:` for the journal key). Returns how many rows.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn purge(
        &mut self,
        table: &str,
        entity: Entity,
        scope: &[(&str, &str)],
        keys: &[(&str, &str)],
        extra_set: &str,
        tenant: &str,
        version: i64,
    ) -> Result<u32, StoreError> {
        let mut sql = self.sql();
        sql.push("UPDATE ")
            .push(table)
            .push(" SET deleted = TRUE, version = ")
            .bind(version)
            .push(", fp = ")
            .bind(DELETE_FP)
            .push(", updated_at = ")
            .bind(self.now)
            .push(extra_set)
            .push(" WHERE ");
        for (col, v) in scope {
            sql.push(col).push(" = ").bind(*v).push(" AND ");
        }
        sql.push("deleted = FALSE AND version <= ")
            .bind(version)
            .push(" RETURNING test");
        for (col, _) in keys {
            sql.push(", ").push(col);
        }
        let mut rows: Vec<(Vec<String>, bool)> = Vec::new();
        for row in self.query(sql).await? {
            let test: bool = row.try_get_by_index(0)?;
            let mut k = Vec::with_capacity(keys.len());
            for i in 0..keys.len() {
                k.push(row.try_get_by_index::<String>(i + 1)?);
            }
            rows.push((k, test));
        }
        // RETURNING order is unspecified: journal in key order, for determinism.
        rows.sort();
        let n = rows.len() as u32;
        for (k, test) in rows {
            let mut data = serde_json::Map::new();
            for ((_, field), v) in keys.iter().zip(&k) {
                data.insert((*field).to_owned(), v.clone().into());
            }
            data.insert("deleted".into(), true.into());
            self.journal(
                tenant,
                entity,
                k.join(":"),
                Action::Deleted,
                version,
                serde_json::Value::Object(data).to_string(),
                test,
            );
        }
        Ok(n)
    }

    /// Records the batch's instance ids (a set per tenant), journaling the new ones.
    async fn record_instances(&mut self, commands: &[&Command]) -> Result<(), StoreError> {
        // (tenant, instance) → (version, test) of the first command naming it.
        let mut pairs: BTreeMap<(&str, &str), (i64, bool)> = BTreeMap::new();
        for c in commands {
            if let Some(i) = c.instance_id().filter(|i| !i.trim().is_empty()) {
                pairs
                    .entry((c.tenant_id(), i))
                    .or_insert((c.version().millis(), c.is_test()));
            }
        }
        let pairs: Vec<_> = pairs.into_iter().collect();
        for chunk in pairs.chunks(rows_per_statement(3)) {
            let mut sql = self.sql();
            sql.push(
                "INSERT INTO tenant_instances (tenant_id, instance_id, first_seen_at) VALUES ",
            );
            sql.joined(chunk.iter(), ", ", |sql, ((t, inst), _)| {
                sql.bind_tuple::<_, Value>([(*t).into(), (*inst).into(), self.now.into()]);
            });
            sql.push(
                " ON CONFLICT (tenant_id, instance_id) DO NOTHING RETURNING tenant_id, instance_id",
            );
            let mut added: Vec<(String, String)> = Vec::new();
            for row in self.query(sql).await? {
                added.push((row.try_get_by_index(0)?, row.try_get_by_index(1)?));
            }
            added.sort();
            for (t, inst) in added {
                let (version, test) = chunk
                    .iter()
                    .find(|((ct, ci), _)| *ct == t && *ci == inst)
                    .map(|(_, vt)| *vt)
                    .unwrap_or((0, false));
                let data = serde_json::json!({ "tenantId": t, "instanceId": inst });
                self.journal(
                    &t,
                    Entity::Tenant,
                    t.clone(),
                    Action::InstanceAdded,
                    version,
                    data.to_string(),
                    test,
                );
            }
        }
        Ok(())
    }
}

/// Decides each change against its stored row (`current`), tallying the losers: the winners'
/// rows, to write, and what the journal will keep of each (with each row's identity when
/// `named`: the write will name what it stored, see [`Cx::names_written`]).
pub(crate) fn pick<'c, R: Row>(
    cutoff: i64,
    changes: Vec<Change<R>>,
    current: impl Fn(&R) -> Option<&'c Current>,
    named: bool,
    action: ActionFn<R>,
    tally: &mut Tally,
) -> Result<(Vec<R>, Vec<Written>), StoreError> {
    let mut rows = Vec::with_capacity(changes.len());
    let mut sent = Vec::with_capacity(changes.len());
    for c in changes {
        let cur = current(&c.row);
        match decide(cur.map(|c| c.rank), c.row.rank(), cutoff) {
            Decision::Apply => {}
            d => {
                tally.note(d);
                continue;
            }
        }
        let rank = c.row.rank();
        sent.push(Written {
            key: c.key().to_owned(),
            identity: named.then(|| c.row.identity()),
            action: action(cur, &c)?,
            journal_key: c.journal_key,
            data: c.data,
            version: rank.version,
            test: c.row.test(),
        });
        rows.push(c.row);
    }
    Ok((rows, sent))
}

/// What a [`Cx::write_rows`] stored of the rows it was given.
pub(crate) enum Stored {
    /// All of them (SQLite). A transaction there writes only while it holds the database's
    /// one write lock, and only if nothing was committed since it first read (WAL refuses to
    /// turn a stale reader into a writer), so rows decided against its probes are stored as
    /// decided; asking the database to name them (`RETURNING`) cost a sixth of the apply.
    All,
    /// Those named, by identity (PostgreSQL's `RETURNING`): a writer that bypassed the tenant
    /// lock may have stored a newer row meanwhile.
    Only(HashSet<String>),
}

impl Stored {
    fn contains(&self, identity: Option<&str>) -> bool {
        match self {
            Stored::All => true,
            Stored::Only(written) => identity.is_some_and(|id| written.contains(id)),
        }
    }
}

/// What of `sent` the write stored (`written`), tallied as applied; a row it did not store
/// lost to a concurrent writer that bypassed the tenant lock: older after all.
pub(crate) fn confirm(sent: Vec<Written>, written: &Stored, tally: &mut Tally) -> Vec<Written> {
    let mut out = Vec::with_capacity(sent.len());
    for w in sent {
        if written.contains(w.identity.as_deref()) {
            tally.note(Decision::Apply);
            out.push(w);
        } else {
            tally.note(Decision::Stale);
        }
    }
    out
}

/// The part of applying a batch of commands that needs no database, done before its
/// transaction (see [`crate::Store::prepare`]): the rows each authSync command would write,
/// with their fingerprints and journal data, all stamped with one clock reading that the
/// transaction then uses for everything it writes.
pub struct Prepared {
    now: i64,
    /// By the command's position in the batch; `None` for other kinds.
    auth: Vec<Option<auth::Planned>>,
}

impl Prepared {
    pub(crate) fn of<'c>(commands: impl IntoIterator<Item = &'c Command>) -> Self {
        let now = chrono::Utc::now().timestamp_millis();
        let auth = commands
            .into_iter()
            .map(|c| match c {
                Command::Auth(a) => Some(auth::Planned::of(a, now)),
                _ => None,
            })
            .collect();
        Prepared { now, auth }
    }
}

/// Applies the commands in one transaction (see [`crate::Store::apply_batch`]), except those
/// whose replay key `claims` finds held by another message ([`Outcome::Replayed`]).
/// `prepared` holds their rows built ahead (for these `commands`, in order).
pub(crate) async fn apply_batch(
    txn: &DatabaseTransaction,
    mass_delete_share: f64,
    commands: &[&Command],
    claims: &[ledger::Claim<'_>],
    prepared: Prepared,
) -> Result<Vec<Outcome>, StoreError> {
    let mut cx = Cx::new(txn);
    cx.now = prepared.now;
    let mut planned = prepared.auth;
    planned.resize_with(commands.len(), || None);
    let tenants: BTreeSet<&str> = commands.iter().map(|c| c.tenant_id()).collect();
    cx.lock(&tenants).await?;
    let replayed = ledger::record(&cx, claims).await?;
    let applying: Vec<&Command> = commands
        .iter()
        .enumerate()
        .filter(|(i, _)| !replayed.contains(i))
        .map(|(_, c)| *c)
        .collect();
    cx.record_instances(&applying).await?;
    let mut outcomes: Vec<Option<Outcome>> = vec![None; commands.len()];
    let mut i = 0;
    while i < commands.len() {
        let c = commands[i];
        if replayed.contains(&i) {
            outcomes[i] = Some(discard(c));
            i += 1;
            continue;
        }
        let outcome = match c {
            Command::Auth(_) => {
                // The authSync commands that follow, up to one writing a row already written:
                // applied together (a replayed one among them applies nothing).
                let mut keys = auth::GroupKeys::default();
                let mut group: Vec<(usize, &kitsync_domain::AuthChange)> = Vec::new();
                while let Some(next) = commands.get(i) {
                    match next {
                        _ if replayed.contains(&i) => outcomes[i] = Some(discard(next)),
                        Command::Auth(a) if keys.admit(a) => group.push((i, a)),
                        _ => break,
                    }
                    i += 1;
                }
                let changes: Vec<_> = group.iter().map(|(_, a)| *a).collect();
                let rows = group.iter().map(|(at, _)| planned[*at].take()).collect();
                let applied = auth::apply_group(&mut cx, &changes, rows).await?;
                for ((at, _), outcome) in group.into_iter().zip(applied) {
                    let c = commands[at];
                    tracing::debug!(tenant = %c.tenant_id(), kind = %c.kind(), version = c.version().millis(), ?outcome, "applied");
                    outcomes[at] = Some(outcome);
                }
                continue;
            }
            Command::Tenant(c) => tenant::apply(&mut cx, c).await?,
            Command::App(c) => app::apply(&mut cx, c).await?,
            Command::Org(c) => org::apply_incremental(&mut cx, c).await?,
            Command::FullOrg(c) => {
                let mode = org::Mode::Callback {
                    guard: mass_delete_share,
                };
                org::apply_full(&mut cx, c, mode).await?
            }
        };
        tracing::debug!(tenant = %c.tenant_id(), kind = %c.kind(), version = c.version().millis(), ?outcome, "applied");
        outcomes[i] = Some(outcome);
        i += 1;
    }
    cx.flush_journal().await?;
    outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| StoreError::Corrupt("a command was left unapplied".into())))
        .collect()
}

/// A replayed command: logged, applied nothing.
fn discard(c: &Command) -> Outcome {
    tracing::warn!(tenant = %c.tenant_id(), kind = %c.kind(), version = c.version().millis(), "replayed callback discarded: another message holds its replay key");
    Outcome::Replayed
}

/// `"1"`/`"0"` for fingerprints.
pub(crate) fn flag(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_add_up_to_outcomes() {
        let mut t = Tally::default();
        assert_eq!(t.outcome(), Outcome::Duplicate);
        t.note(Decision::Superseded);
        assert_eq!(t.outcome(), Outcome::Superseded);
        t.note(Decision::Stale);
        assert_eq!(t.outcome(), Outcome::Stale);
        t.note(Decision::Apply);
        assert_eq!(t.outcome(), Outcome::Applied { changed: 1 });
        let moved = Tally {
            moved: true,
            ..Tally::default()
        };
        assert_eq!(moved.outcome(), Outcome::Applied { changed: 0 });
    }

    #[test]
    fn department_cutoff_lets_ties_with_the_snapshot_through() {
        let m = Marks {
            purged: 5,
            snapshot: 10,
        };
        assert_eq!(m.department_cutoff(), 9);
        let m = Marks {
            purged: 20,
            snapshot: 10,
        };
        assert_eq!(m.department_cutoff(), 20);
        assert_eq!(Marks::default().department_cutoff(), 0);
    }
}
