//! Statistics (docs/statistics.md): the authorisation history they need, and their queries.
//!
//! **History.** "Authorised at the end of the period" is judged in marketplace time, so the
//! current directory is not enough. `auth_spans` holds, per (tenant, user, app), the spans of
//! marketplace time during which the authorisation was live and enabled. The indexer
//! ([`index`]) builds them from the journal, after the `stats_cursor`, off the apply path (the
//! write path stays as fast as it was): a `member` row whose `authorization` is
//! `{"enabled":true,…}` opens a span at its version (unless one is open), one that is disabled
//! or deleted — or an `authorization` tombstone of a tenant or app delete — closes the open
//! span at its version. Per key, journal order is version order (a change older than the
//! stored row is never applied, so never journaled), so the spans are well formed. Several
//! processes may index: the cursor row is locked for the batch.
//!
//! **Figures** for a period of whole UTC+8 days `[from, to]`, with `E` the period's last
//! millisecond, counting production tenants only (not test, not deleted now):
//! - authorised users: (tenant, user) pairs with some app's span covering `E`;
//! - projects opened: tenants with at least one of those;
//! - active users: authorised users with activity on a day in `[from, to]`;
//! - active projects: opened projects with at least one active user.
//!
//! The period, per-tenant and per-day figures are read from precomputed windows and their
//! per-day sums (the `windows` module; the indexer marks windows stale when it changes
//! spans, and all of a tenant's windows when it meets the tenant's own row in the journal,
//! since whether a tenant counts is judged when its windows are computed); days without
//! precomputed sums are computed here, from the history.
use crate::activity::{utc8_day, DAY_MS, UTC8_MS};
use crate::error::StoreError;
use crate::journal::Entity;
use crate::sql::{rows_per_statement, Sql};
use crate::windows;
use crate::Store;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, TransactionTrait, Value};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The last millisecond of UTC+8 day `day`.
#[must_use]
pub fn end_of_day_ms(day: i64) -> i64 {
    (day + 1) * DAY_MS - UTC8_MS - 1
}

/// Journal rows a statistics indexing transaction reads (see [`Store::catch_up_stats`]).
const INDEX_ROWS: u64 = 5000;
/// The same on SQLite, where the transaction holds the one write lock.
const SQLITE_INDEX_ROWS: u64 = 500;

/// Reads up to `limit` journal rows after the cursor into `auth_spans`; how many it read.
/// The transaction takes its turn at `gate` (SQLite's writers of this process).
pub(crate) async fn index(
    db: &DatabaseConnection,
    gate: &crate::sql::WriteGate,
    limit: u64,
) -> Result<u64, StoreError> {
    let backend = db.get_database_backend();
    // Nothing new: answer without taking the cursor's lock (a write on SQLite). `MAX(id)` is
    // one step of the primary key; `id > (subquery) LIMIT 1` made PostgreSQL, which cannot
    // know the subquery's value when planning, scan the whole journal to find nothing.
    let pending = db
        .query_one(sea_orm::Statement::from_string(
            backend,
            "SELECT 1 WHERE (SELECT MAX(id) FROM journal) > (SELECT journal_id FROM stats_cursor \
             WHERE name = 'auth_spans')",
        ))
        .await?;
    if pending.is_none() {
        return Ok(0);
    }
    let _turn = gate.turn().await;
    let txn = db.begin().await?;
    // Locks the cursor (row lock on PostgreSQL, the write lock on SQLite) for the batch.
    let mut sql = Sql::new(backend);
    sql.push(
        "UPDATE stats_cursor SET journal_id = journal_id WHERE name = 'auth_spans' RETURNING journal_id",
    );
    let cursor: i64 = match txn.query_one(sql.build()).await? {
        Some(row) => row.try_get_by_index(0)?,
        None => {
            return Err(StoreError::Corrupt(
                "stats_cursor has no auth_spans row".into(),
            ))
        }
    };
    let mut sql = Sql::new(backend);
    sql.push(
        "SELECT id, tenant_id, entity, entity_key, version, data, test FROM journal WHERE id > ",
    )
    .bind(cursor)
    .push(" ORDER BY id LIMIT ")
    .bind(i64::try_from(limit).unwrap_or(i64::MAX));
    let rows = txn.query_all(sql.build()).await?;
    let Some(last) = rows.last() else {
        txn.commit().await?;
        return Ok(0);
    };
    let last_id: i64 = last.try_get_by_index(0)?;
    // In journal order.
    let mut changes: Vec<SpanChange> = Vec::new();
    // Tenants whose row changed (created, renamed, deleted, flagged as test data): whether
    // they count is judged when their windows are computed, so all of them are marked.
    let mut tenants_changed: BTreeSet<String> = BTreeSet::new();
    for row in &rows {
        let tenant: String = row.try_get_by_index(1)?;
        let entity: String = row.try_get_by_index(2)?;
        let key: String = row.try_get_by_index(3)?;
        let version: i64 = row.try_get_by_index(4)?;
        let data: String = row.try_get_by_index(5)?;
        let test: bool = row.try_get_by_index(6)?;
        match Entity::parse(&entity) {
            Some(Entity::Tenant) => {
                tenants_changed.insert(tenant);
            }
            Some(Entity::Member) => {
                let Ok(d) = serde_json::from_str::<Json>(&data) else {
                    continue;
                };
                let (Some(app), Some(auth)) = (d["appId"].as_str(), d.get("authorization")) else {
                    continue;
                };
                if auth.is_null() {
                    continue; // a profile-only change
                }
                let enabled = auth["enabled"].as_bool().unwrap_or(false)
                    && !auth["deleted"].as_bool().unwrap_or(false);
                changes.push(((tenant, key, app.to_owned()), enabled, version, test));
            }
            Some(Entity::Authorization) => {
                // A tombstone of a tenant or app delete: key `{appId}:{userName}`.
                let Some((app, user)) = key.split_once(':') else {
                    continue;
                };
                changes.push((
                    (tenant, user.to_owned(), app.to_owned()),
                    false,
                    version,
                    test,
                ));
            }
            _ => {}
        }
    }
    let mut changed = if changes.is_empty() {
        BTreeMap::new()
    } else {
        apply_spans(&txn, backend, &changes).await?
    };
    for t in &tenants_changed {
        windows::note_change(&mut changed, t, i64::MIN);
    }
    windows::invalidate_tenants(&txn, backend, &changed, &tenants_changed).await?;
    let mut sql = Sql::new(backend);
    sql.push("UPDATE stats_cursor SET journal_id = ")
        .bind(last_id)
        .push(" WHERE name = 'auth_spans'");
    txn.execute(sql.build()).await?;
    txn.commit().await?;
    Ok(rows.len() as u64)
}

/// (tenant, user, app).
type SpanKey = (String, String, String);
/// A change of a key: enabled after it?, its version, test data?
type SpanChange = (SpanKey, bool, i64, bool);

/// A span's key, start and end (`None`: open) as statement values, in `auth_spans` column
/// order.
fn span_values((t, u, a): &SpanKey, from: i64, to: Option<i64>) -> Vec<Value> {
    vec![
        t.clone().into(),
        u.clone().into(),
        a.clone().into(),
        from.into(),
        to.into(),
    ]
}

/// Applies the changes to `auth_spans`; per tenant, the first UTC+8 day whose windows they
/// may change.
async fn apply_spans(
    txn: &impl ConnectionTrait,
    backend: DbBackend,
    changes: &[SpanChange],
) -> Result<BTreeMap<String, i64>, StoreError> {
    // The open span of each key, if any: its start.
    let keys: Vec<&SpanKey> = {
        let mut k: Vec<&SpanKey> = changes.iter().map(|c| &c.0).collect();
        k.sort();
        k.dedup();
        k
    };
    let mut open: HashMap<SpanKey, i64> = HashMap::new();
    for chunk in keys.chunks(rows_per_statement(3)) {
        let mut sql = Sql::new(backend);
        let keys = |sql: &mut Sql| {
            sql.joined(chunk.iter(), ", ", |sql, (t, u, a)| {
                sql.bind_tuple([t.as_str(), u.as_str(), a.as_str()]);
            });
        };
        if backend == DbBackend::Postgres {
            // A probe of the primary key per key. As `(…) IN (VALUES …)`, PostgreSQL hashed
            // the list and scanned every open span of every tenant, for each batch: the
            // indexer's cost grew with the table (24 ms a batch at 265 000 spans, a third
            // of the database's time under `bench pipeline`).
            sql.push("SELECT k.column1, k.column2, k.column3, s.from_v FROM (VALUES ");
            keys(&mut sql);
            sql.push(
                ") AS k CROSS JOIN LATERAL (SELECT from_v FROM auth_spans s \
                 WHERE s.tenant_id = k.column1 AND s.user_name = k.column2 \
                 AND s.app_id = k.column3 AND s.to_v IS NULL OFFSET 0) s",
            );
        } else {
            sql.push(
                "SELECT tenant_id, user_name, app_id, from_v FROM auth_spans WHERE to_v IS NULL \
                 AND (tenant_id, user_name, app_id) IN (VALUES ",
            );
            keys(&mut sql);
            sql.push(")");
        }
        for row in txn.query_all(sql.build()).await? {
            open.insert(
                (
                    row.try_get_by_index(0)?,
                    row.try_get_by_index(1)?,
                    row.try_get_by_index(2)?,
                ),
                row.try_get_by_index(3)?,
            );
        }
    }
    // Replay the changes in order over the open spans.
    let mut opened: BTreeMap<(SpanKey, i64), (Option<i64>, bool)> = BTreeMap::new();
    // (key, from_v, to_v) of stored spans.
    let mut closed: Vec<(SpanKey, i64, i64)> = Vec::new();
    // Per tenant, the first UTC+8 day whose end a span now covers or no longer covers.
    let mut changed: BTreeMap<String, i64> = BTreeMap::new();
    for (key, enabled, v, test) in changes {
        match (open.get(key).copied(), *enabled) {
            (None, true) => {
                windows::note_change(&mut changed, &key.0, utc8_day(*v));
                open.insert(key.clone(), *v);
                opened.insert((key.clone(), *v), (None, *test));
            }
            (Some(from), false) => {
                windows::note_change(&mut changed, &key.0, utc8_day(*v));
                open.remove(key);
                match opened.get_mut(&(key.clone(), from)) {
                    Some(span) => span.0 = Some(*v),
                    None => closed.push((key.clone(), from, *v)),
                }
            }
            _ => {}
        }
    }
    // Close the stored spans, set-based (a tenant delete closes thousands in one batch).
    for chunk in closed.chunks(rows_per_statement(5)) {
        let mut sql = Sql::new(backend);
        sql.push("WITH v (t, u, a, f, e) AS (VALUES ");
        sql.joined(chunk.iter(), ", ", |sql, (key, from, to)| {
            sql.bind_tuple(span_values(key, *from, Some(*to)));
        });
        sql.push(
            ") UPDATE auth_spans SET to_v = (SELECT v.e FROM v WHERE v.t = auth_spans.tenant_id \
             AND v.u = auth_spans.user_name AND v.a = auth_spans.app_id \
             AND v.f = auth_spans.from_v) \
             WHERE (tenant_id, user_name, app_id, from_v) IN (SELECT t, u, a, f FROM v)",
        );
        txn.execute(sql.build()).await?;
    }
    let new: Vec<_> = opened.into_iter().collect();
    for chunk in new.chunks(rows_per_statement(6)) {
        let mut sql = Sql::new(backend);
        sql.push(
            "INSERT INTO auth_spans (tenant_id, user_name, app_id, from_v, to_v, test) VALUES ",
        );
        sql.joined(chunk.iter(), ", ", |sql, ((key, from), (to, test))| {
            let mut values = span_values(key, *from, *to);
            values.push((*test).into());
            sql.bind_tuple(values);
        });
        // A span re-opened at the very version another one started (a repeat): keep one.
        sql.push(" ON CONFLICT (tenant_id, user_name, app_id, from_v) DO NOTHING");
        txn.execute(sql.build()).await?;
    }
    Ok(changed)
}

/// The four figures of one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeriodFigures {
    pub projects_opened: u64,
    pub projects_active: u64,
    pub members_authorized: u64,
    pub members_active: u64,
}

fn day_value(day: i64) -> i32 {
    i32::try_from(day).unwrap_or(i32::MAX)
}

/// Per UTC+8 day of `[from_day, to_day]`: users authorised at the end of that day with
/// activity on it, and their tenants. Days without any are absent. Computed from the
/// history and the rollups (the `windows` module answers the days whose windows exist).
pub(crate) async fn daily_from_history(
    db: &DatabaseConnection,
    from_day: i64,
    to_day: i64,
) -> Result<Vec<(i64, u64, u64)>, StoreError> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "SELECT d.day, COUNT(*), COUNT(DISTINCT d.tenant_id) FROM activity_daily d \
         JOIN tenants t ON t.tenant_id = d.tenant_id AND t.deleted = FALSE AND t.test = FALSE \
         WHERE d.day >= ",
    )
    .bind(day_value(from_day))
    .push(" AND d.day <= ")
    .bind(day_value(to_day))
    .push(&format!(
        " AND EXISTS (SELECT 1 FROM auth_spans s WHERE s.tenant_id = d.tenant_id \
         AND s.user_name = d.user_name AND s.test = FALSE \
         AND s.from_v <= (CAST(d.day AS BIGINT) + 1) * {DAY_MS} - {UTC8_MS} - 1 \
         AND (s.to_v IS NULL OR s.to_v > (CAST(d.day AS BIGINT) + 1) * {DAY_MS} - {UTC8_MS} - 1)) \
         GROUP BY d.day ORDER BY d.day"
    ));
    let rows: Vec<(i32, i64, i64)> = crate::query_rows(db, sql.build()).await?;
    Ok(rows
        .into_iter()
        .map(|(day, users, tenants)| {
            (
                i64::from(day),
                u64::try_from(users).unwrap_or(0),
                u64::try_from(tenants).unwrap_or(0),
            )
        })
        .collect())
}

/// One tenant's figures for a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantFigures {
    pub tenant_id: String,
    pub name: String,
    pub authorized: u64,
    pub active: u64,
    /// The last activity (Unix ms) of any of its users up to the period's end, if any.
    pub last_active_at: Option<i64>,
}

impl Store {
    /// Reads journal rows into the statistics' authorisation history, up to `limit` per call
    /// (see the `stats` module); how many it read (0: caught up).
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails (nothing of the batch is kept).
    pub async fn index_stats(&self, limit: u64) -> Result<u64, StoreError> {
        index(&self.db, &self.gate, limit).await
    }

    /// Indexes until caught up with the journal, at most `max_rounds` × 5 000 rows. On
    /// SQLite each transaction takes 500 rows and its turn at the write gate, like an apply,
    /// so a callback's queue insert waits for at most one short transaction (5 000 rows held
    /// the one write lock for about 100 ms).
    ///
    /// # Errors
    /// As [`Store::index_stats`].
    pub async fn catch_up_stats(&self, max_rounds: u32) -> Result<(), StoreError> {
        let per_txn = if self.is_sqlite() {
            SQLITE_INDEX_ROWS
        } else {
            INDEX_ROWS
        };
        for _ in 0..u64::from(max_rounds) * (INDEX_ROWS / per_txn) {
            if self.index_stats(per_txn).await? < per_txn {
                break;
            }
        }
        Ok(())
    }

    /// The statistics of UTC+8 days `[from_day, to_day]` (days since 1970-01-01), at most
    /// [`WINDOW_DAYS`](crate::WINDOW_DAYS) days: read from the precomputed sum of `to_day`'s
    /// windows (one row, whatever the number of tenants), once its stale windows are computed.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] for a period of more than [`WINDOW_DAYS`](crate::WINDOW_DAYS) days or none;
    /// [`StoreError::Database`] when the database fails.
    pub async fn stats_period(
        &self,
        from_day: i64,
        to_day: i64,
    ) -> Result<PeriodFigures, StoreError> {
        let figures = crate::windows::periods(&self.db, &[(from_day, to_day)]).await?;
        Ok(figures.into_iter().next().unwrap_or_default())
    }

    /// [`Store::stats_period`] of each `(from_day, to_day)`, in order: the day rows are read
    /// together and their stale windows computed in one pass (an overview's period and
    /// previous period).
    ///
    /// # Errors
    /// As [`Store::stats_period`].
    pub async fn stats_periods<const K: usize>(
        &self,
        periods: [(i64, i64); K],
    ) -> Result<[PeriodFigures; K], StoreError> {
        let figures = crate::windows::periods(&self.db, &periods).await?;
        let mut out = [PeriodFigures::default(); K];
        for (slot, f) in out.iter_mut().zip(figures) {
            *slot = f;
        }
        Ok(out)
    }

    /// Computes the statistics windows of the 31 UTC+8 days up to `today` that are stale or
    /// missing — what the presets (`day`, `7d`, `30d`), their previous periods and their
    /// daily series read — so their requests only read; how many tenant-days it computed.
    /// One pass over each chunk of tenants' history serves all 31 days.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn warm_stats(&self, today: i64) -> Result<usize, StoreError> {
        crate::windows::warm(&self.db, today).await
    }

    /// A value that changes whenever a statistics window may have been marked stale or a
    /// production tenant was added or removed: while it stays the same (and so does the
    /// day), [`Store::warm_stats`] has nothing to do.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn stats_fingerprint(&self) -> Result<(i64, i64), StoreError> {
        crate::windows::fingerprint(&self.db).await
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
        crate::windows::daily(&self.db, from_day, to_day).await
    }

    /// Every production tenant's figures for `[from_day, to_day]` (at most [`WINDOW_DAYS`](crate::WINDOW_DAYS)
    /// days), by tenant id.
    ///
    /// # Errors
    /// As [`Store::stats_period`].
    pub async fn stats_tenants(
        &self,
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<TenantFigures>, StoreError> {
        crate::windows::tenants(&self.db, from_day, to_day).await
    }

    /// A page of production tenants with their figures for `[from_day, to_day]` (at most
    /// [`WINDOW_DAYS`](crate::WINDOW_DAYS) days) and whether more follow: `sort` is
    /// `tenantId`, `name`, `authorized`, `active` or `lastActiveAt`, with a leading `-` for
    /// descending (ties by tenant id, in the same direction); `never_active` keeps tenants
    /// with authorised users and no activity up to `to_day`; `offset` rows are skipped. The
    /// database orders and cuts the page.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] for an unknown `sort` or a bad period; [`StoreError::Database`]
    /// when the database fails.
    pub async fn stats_tenants_page(
        &self,
        from_day: i64,
        to_day: i64,
        sort: &str,
        never_active: bool,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<TenantFigures>, bool), StoreError> {
        let (descending, key) = match sort.strip_prefix('-') {
            Some(key) => (true, key),
            None => (false, sort),
        };
        let page = crate::windows::TenantsPage {
            order: crate::windows::TenantOrder::parse(key)?,
            descending,
            never_active,
            offset,
            limit: Some(limit),
        };
        crate::windows::tenants_page(&self.db, from_day, to_day, page).await
    }

    /// Background upkeep of the statistics: reads new journal rows into their authorisation
    /// history every 2 s (so a stats request has little to catch up), computes the stale or
    /// missing statistics windows of the last 31 days (so the presets' requests only read rows), and
    /// deletes raw activity events past the settings' `activity_retention_days` at start and
    /// hourly (the daily rollups stay), until `shutdown` turns true. Several processes may do
    /// both at once: the indexer locks its cursor, the delete is idempotent.
    pub async fn maintain_stats(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let retention_ms = i64::from(self.settings().activity_retention_days) * crate::DAY_MS;
        let mut next_prune = tokio::time::Instant::now();
        let interval = std::time::Duration::from_secs(2);
        let mut warmed = None;
        loop {
            let started = tokio::time::Instant::now();
            if let Err(e) = self.catch_up_stats(20).await {
                tracing::warn!(error = %e, "indexing the statistics history failed; will retry");
            }
            // Keep the last 31 days' windows computed, so the presets only read. Under heavy
            // activity every tick recomputes the tenants that changed: the pause after a tick is
            // at least four times the tick, so this stays under a fifth of one core.
            // Skipped while nothing changed (read before the pass: a change during it is seen
            // by the next tick).
            let today = crate::utc8_day(chrono::Utc::now().timestamp_millis());
            let seen = self.stats_fingerprint().await.ok().map(|f| (today, f));
            if seen.is_none() || seen != warmed {
                match self.warm_stats(today).await {
                    Ok(n) => {
                        warmed = seen;
                        if n > 0 {
                            tracing::debug!(tenant_days = n, "statistics windows computed");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "computing statistics windows failed; will retry");
                    }
                }
            }
            let pause = interval.max(started.elapsed() * 4);
            if tokio::time::Instant::now() >= next_prune {
                next_prune += std::time::Duration::from_secs(3600);
                let cutoff = chrono::Utc::now().timestamp_millis() - retention_ms;
                match self.prune_activity(cutoff).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(deleted = n, "pruned raw activity events past retention")
                    }
                    Err(e) => tracing::warn!(error = %e, "pruning raw activity events failed"),
                }
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}
