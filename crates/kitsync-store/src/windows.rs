//! Precomputed statistics (migrations `m20261129_000010_stats_windows`,
//! `m20261204_000014_stats_days` and `m20261204_000015_stats_days_stale`): what every period ending on a UTC+8 day needs, per
//! production tenant ("windows") and summed over all of them ("day rows"), so the
//! all-tenants overview and daily series read one row per day, whatever the number of
//! tenants, and the tenants table reads one window per tenant it shows.
//!
//! **The window of (tenant, `D`).** With `auth(D)` the tenant's users authorised at the end
//! of `D` (an `auth_spans` span covers it, as in the `stats` module) and `last(u, D)` a user's
//! last active day up to `D`, the row holds `|auth(D)|` and, for `n` = 1‥30, how many users of
//! `auth(D)` have `D - last(u, D) < n`: those are exactly the authorised users active in the
//! `n`-day period `[D - n + 1, D]`. Every period this product answers is at most 30 days
//! long, so every period (and its previous period, which ends on `from - 1`) is one window.
//! The row also keeps the tenant's last activity up to `D` (the tenants table shows it).
//!
//! **The day row of `D`** (`stats_days`) is the sum of the stored windows of `D`: authorised
//! users, projects opened (windows with an authorised user) and, per `n`, active users and
//! active projects (windows with an active user). Only [`fill`] stores windows, and it changes
//! the day row by the difference it makes to them, in the same transaction; a window of `D`
//! is stored only while `D` has a day row. So the day row is always exactly the sum of its
//! windows — stale ones included, with the values they had when they were computed.
//!
//! **Freshness.** A write that may change a window marks it stale, in the write's own
//! transaction (its values stay, for the day row's sake, but are never read as figures): an
//! activity rollup of day `a` marks the tenant's windows of days `≥ a`, an authorisation span
//! opened or closed at marketplace time `v` those of days `≥ day(v)`, and a tenant row in
//! the journal (created, renamed, deleted, flagged as test data) all of the tenant's windows.
//! The statistics maintainer keeps the last 31 days' windows fresh in the background.
//!
//! **The day's flag.** `stats_days.stale` is set while some window of the day may be stale:
//! the write that makes a window stale flags the day rows from the window's day on, in the
//! same transaction ([`flag_days`]); a new day row starts flagged (its placeholders are
//! stale). Only [`settle`] clears it, after a computation, when none of the day's windows
//! is stale, with every writer that may still mark one shut out. So a day row that is not
//! flagged has no stale window, and a reader reads it and nothing else: the overview reads
//! two rows, the daily series its period's rows. A flagged day's stale windows are found
//! through a partial index and computed first. The reader's cost so depends neither on the
//! tenants nor on the dead entries the marks and computations leave in that index on
//! PostgreSQL until a vacuum (decision 0049).
//!
//! **Every production tenant has a window of every day that has a row.** A day row is
//! created with a stale zero-valued placeholder window for every production tenant; when
//! the indexer meets a tenant row in the journal it adds placeholders for that tenant to
//! every existing day. Both take the indexer's cursor lock, so a tenant created while a day
//! row is created gets its placeholder from one or the other. [`fill`] stores the windows of
//! production tenants (read from `tenants` then) and deletes those of other tenants: "not
//! test, not deleted, now" is judged when the window is computed, and a change of it comes
//! through the journal like any other change, before any request answers.
//!
//! **The race.** A window computed from data read just before a write commits must not be
//! stored fresh after that write. Both sides take the tenant's `stats_marks` row lock (an
//! upsert): writers before they mark, the computation before it reads. On PostgreSQL (read
//! committed) a writer that locks second marks the window after it is committed, and a
//! computation that locks second reads after the write is committed; on SQLite both are
//! write transactions and run one at a time. Lock order: the indexer's cursor, then marks in
//! tenant order, then day rows in day order. On PostgreSQL the computation takes the day
//! rows `FOR NO KEY UPDATE` (two computations of different tenants add their differences
//! one after the other), writers take them `FOR KEY SHARE` (which conflicts with neither
//! that nor another writer's: concurrent activity of different tenants does not queue on
//! today's row; only the first writer after a clear updates a row, to flag it) and
//! [`settle`] `FOR UPDATE SKIP LOCKED` (it never waits: a row held by a writer or a
//! computation stays flagged for the next reader).
use crate::error::StoreError;
use crate::sql::{rows_per_statement, Sql};
use crate::stats::{end_of_day_ms, PeriodFigures, TenantFigures};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, TransactionTrait, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// The longest period, in days, the windows answer.
pub const WINDOW_DAYS: i64 = 30;
const N: usize = 30;

/// Tenants per computation (one transaction, one statement of each kind).
const TENANTS_PER_FILL: usize = 128;

/// Digits of each count in a window's `active` text: fixed, so SQL can sort the tenants
/// table by the count of period length `n` (`SUBSTR`) without reading every window.
const DIGITS: usize = 10;

/// One tenant's window of a day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Window {
    authorized: u64,
    /// `active[n - 1]`: authorised users active in the `n` days ending on the day.
    active: [u64; N],
    last_active_at: Option<i64>,
}

impl Window {
    fn encode_active(&self) -> String {
        let parts: Vec<String> = self
            .active
            .iter()
            .map(|a| format!("{a:0width$}", width = DIGITS))
            .collect();
        parts.join(",")
    }

    fn decode_active(s: &str) -> Option<[u64; N]> {
        let mut out = [0u64; N];
        let mut parts = s.split(',');
        for slot in &mut out {
            *slot = parts.next()?.parse().ok()?;
        }
        parts.next().is_none().then_some(out)
    }
}

/// SQL of the count of period length `n` (1‥30) in the `active` column `column`.
fn active_sql(column: &str, n: usize) -> String {
    let start = (n - 1) * (DIGITS + 1) + 1;
    format!("CAST(SUBSTR({column}, {start}, {DIGITS}) AS BIGINT)")
}

/// A day row: the sum of the day's windows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct DayTotals {
    authorized: i64,
    /// Windows with an authorised user.
    opened: i64,
    /// `active[n - 1]`: the windows' active users of the `n` days ending on the day.
    active: [i64; N],
    /// `projects[n - 1]`: windows with an active user in those days.
    projects: [i64; N],
}

impl DayTotals {
    /// Adds (`sign` 1) or takes out (`sign` -1) a window.
    fn add(&mut self, w: &Window, sign: i64) {
        let count = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        self.authorized += sign * count(w.authorized);
        self.opened += sign * i64::from(w.authorized > 0);
        for (i, &a) in w.active.iter().enumerate() {
            self.active[i] += sign * count(a);
            self.projects[i] += sign * i64::from(a > 0);
        }
    }

    fn encode(counts: &[i64; N]) -> String {
        let parts: Vec<String> = counts.iter().map(i64::to_string).collect();
        parts.join(",")
    }

    fn decode(s: &str) -> Option<[i64; N]> {
        let mut out = [0i64; N];
        let mut parts = s.split(',');
        for slot in &mut out {
            *slot = parts.next()?.parse().ok()?;
        }
        parts.next().is_none().then_some(out)
    }

    /// The figures of the period of `n` days ending on the day.
    fn figures(&self, n: usize) -> PeriodFigures {
        let count = |x: i64| u64::try_from(x).unwrap_or(0);
        PeriodFigures {
            projects_opened: count(self.opened),
            projects_active: count(self.projects[n - 1]),
            members_authorized: count(self.authorized),
            members_active: count(self.active[n - 1]),
        }
    }
}

/// Takes the `stats_marks` row lock of each tenant, in tenant order (`bump`: count a change).
async fn lock_marks<'a>(
    txn: &impl ConnectionTrait,
    backend: DbBackend,
    tenants: impl Iterator<Item = &'a str>,
    bump: bool,
) -> Result<(), StoreError> {
    let mut tenants: Vec<&str> = tenants.collect();
    tenants.sort_unstable();
    tenants.dedup();
    for chunk in tenants.chunks(rows_per_statement(2)) {
        let mut sql = Sql::new(backend);
        sql.push("INSERT INTO stats_marks (tenant_id, changes) VALUES ");
        sql.joined(chunk.iter(), ", ", |sql, t| {
            sql.bind_tuple::<_, Value>([(*t).into(), i64::from(bump).into()]);
        });
        sql.push(if bump {
            " ON CONFLICT (tenant_id) DO UPDATE SET changes = stats_marks.changes + 1"
        } else {
            " ON CONFLICT (tenant_id) DO UPDATE SET changes = stats_marks.changes"
        });
        txn.execute(sql.build()).await?;
    }
    Ok(())
}

/// Takes the statistics indexer's cursor lock (the write lock on SQLite): what adds tenants'
/// placeholder windows to existing days and what creates a day row take it, so one of them
/// sees the other's work.
async fn lock_cursor(txn: &impl ConnectionTrait, backend: DbBackend) -> Result<(), StoreError> {
    let n = txn
        .execute(sea_orm::Statement::from_string(
            backend,
            "UPDATE stats_cursor SET journal_id = journal_id WHERE name = 'auth_spans'",
        ))
        .await?
        .rows_affected();
    if n == 0 {
        return Err(StoreError::Corrupt(
            "stats_cursor has no auth_spans row".into(),
        ));
    }
    Ok(())
}

/// Marks stale the windows a write may have changed: per tenant, those of days from the
/// given one on. Call inside the write's transaction, after its data is written or before.
pub(crate) async fn invalidate(
    txn: &impl ConnectionTrait,
    backend: DbBackend,
    from_day: &BTreeMap<String, i64>,
) -> Result<(), StoreError> {
    invalidate_tenants(txn, backend, from_day, &BTreeSet::new()).await
}

/// [`invalidate`], and for the tenants of `status` (whose row changed: created, deleted,
/// flagged; each also in `from_day`, from the first day on) a stale placeholder window of
/// every day that has a row, where none exists. The indexer calls it holding its cursor.
pub(crate) async fn invalidate_tenants(
    txn: &impl ConnectionTrait,
    backend: DbBackend,
    from_day: &BTreeMap<String, i64>,
    status: &BTreeSet<String>,
) -> Result<(), StoreError> {
    if from_day.is_empty() {
        return Ok(());
    }
    lock_marks(txn, backend, from_day.keys().map(String::as_str), true).await?;
    // The first day of which this write made a window stale: day rows from it on are flagged.
    let mut first_marked: Option<i64> = None;
    let rows: Vec<(&String, &i64)> = from_day.iter().collect();
    for chunk in rows.chunks(500) {
        let mut sql = Sql::new(backend);
        sql.push("UPDATE stats_windows SET stale = TRUE WHERE stale = FALSE AND (");
        sql.joined(chunk.iter(), " OR ", |sql, (t, d)| {
            sql.push("(tenant_id = ")
                .bind(t.as_str())
                .push(" AND day >= ")
                .bind(day_value(**d))
                .push(")");
        });
        sql.push(")");
        if txn.execute(sql.build()).await?.rows_affected() > 0 {
            let first = chunk.iter().map(|(_, d)| **d).min().unwrap_or(i64::MIN);
            first_marked = Some(first_marked.map_or(first, |f| f.min(first)));
        }
    }
    let status: Vec<&String> = status.iter().collect();
    let now_ms = chrono::Utc::now().timestamp_millis();
    for chunk in status.chunks(500) {
        let mut sql = Sql::new(backend);
        sql.push("WITH v (t) AS (VALUES ");
        sql.joined(chunk.iter(), ", ", |sql, t| {
            sql.push("(").bind(t.as_str()).push(")");
        });
        sql.push(
            ") INSERT INTO stats_windows (tenant_id, day, authorized, active, last_active_at, \
             computed_at, stale) SELECT v.t, d.day, 0, ",
        )
        .bind(Window::default().encode_active())
        .push(", NULL, ")
        .bind(now_ms)
        .push(
            ", TRUE FROM v, stats_days d WHERE TRUE \
             ON CONFLICT (tenant_id, day) DO NOTHING",
        );
        if txn.execute(sql.build()).await?.rows_affected() > 0 {
            first_marked = Some(i64::MIN);
        }
    }
    if let Some(first) = first_marked {
        flag_days(txn, backend, first).await?;
    }
    Ok(())
}

/// The writers' half of the day rows' `stale` flag: flags the day rows from `first_day` on,
/// in the transaction that made one of their windows stale (a window stale while its day
/// row is not flagged would be read as fresh).
///
/// On PostgreSQL the writer first takes a key-share lock on those rows, held until it
/// commits: writers do not block one another (nor the computation, which updates the rows
/// under a no-key-update lock), but [`settle`], which clears the flag only on rows it can
/// lock `FOR UPDATE`, never clears one while a writer that may still mark a window of the
/// day is in flight, and sees the marks of those that committed.
/// Only the rows found clear are updated, one at a time in day order (two writers setting
/// the flags of the same days take them in the same order): the first writer after a clear
/// sets the flag, the others find it set and change nothing, so concurrent activity of
/// different tenants does not queue on today's row. On SQLite the transaction already holds
/// the write lock.
async fn flag_days(
    txn: &impl ConnectionTrait,
    backend: DbBackend,
    first_day: i64,
) -> Result<(), StoreError> {
    if backend != DbBackend::Postgres {
        let mut sql = Sql::new(backend);
        sql.push("UPDATE stats_days SET stale = TRUE WHERE day >= ")
            .bind(day_value(first_day))
            .push(" AND stale = FALSE");
        txn.execute(sql.build()).await?;
        return Ok(());
    }
    let mut sql = Sql::new(backend);
    sql.push("SELECT day, stale FROM stats_days WHERE day >= ")
        .bind(day_value(first_day))
        .push(" ORDER BY day FOR KEY SHARE");
    let rows: Vec<(i32, bool)> = crate::query_rows(txn, sql.build()).await?;
    for (day, _) in rows.into_iter().filter(|(_, stale)| !stale) {
        let mut sql = Sql::new(backend);
        sql.push("UPDATE stats_days SET stale = TRUE WHERE day = ")
            .bind(day)
            .push(" AND stale = FALSE");
        txn.execute(sql.build()).await?;
    }
    Ok(())
}

/// The computation's half of the day rows' `stale` flag: clears it on those of `days` none
/// of whose windows is stale now, with every writer that may still mark one shut out (see
/// [`flag_days`]); which days it cleared.
///
/// On PostgreSQL it locks the rows `FOR UPDATE SKIP LOCKED`: a row that a writer (key
/// share) or a computation holds is left flagged for the next reader, so a reader never
/// waits for writers here, and a stream of writers cannot hold it up.
async fn settle(db: &DatabaseConnection, days: &[i64]) -> Result<Vec<i64>, StoreError> {
    if days.is_empty() {
        return Ok(Vec::new());
    }
    let backend = db.get_database_backend();
    if backend != DbBackend::Postgres {
        // One statement, which takes the write lock before it reads.
        let mut sql = Sql::new(backend);
        sql.push("UPDATE stats_days SET stale = FALSE WHERE day IN (")
            .bind_list(days.iter().map(|d| day_value(*d)))
            .push(
                ") AND stale = TRUE AND NOT EXISTS (SELECT 1 FROM stats_windows w \
                 WHERE w.day = stats_days.day AND w.stale = TRUE) RETURNING day",
            );
        let cleared: Vec<(i32,)> = crate::query_rows(db, sql.build()).await?;
        return Ok(cleared.into_iter().map(|(d,)| i64::from(d)).collect());
    }
    let txn = db.begin().await?;
    // No writer that may mark a window of a locked day is in flight: the check below reads
    // after every one of them.
    let mut sql = Sql::new(backend);
    sql.push("SELECT day FROM stats_days WHERE day IN (")
        .bind_list(days.iter().map(|d| day_value(*d)))
        .push(") AND stale = TRUE ORDER BY day FOR UPDATE SKIP LOCKED");
    let locked: BTreeSet<i64> = crate::query_rows::<(i32,)>(&txn, sql.build())
        .await?
        .into_iter()
        .map(|(d,)| i64::from(d))
        .collect();
    let mut clear: Vec<i64> = Vec::new();
    if !locked.is_empty() {
        let locked_days: Vec<i64> = locked.iter().copied().collect();
        let mut sql = Sql::new(backend);
        sql.push("SELECT v.day FROM ");
        each_day_stale(&mut sql, true, &locked_days, true);
        let stale: HashSet<i64> = crate::query_rows::<(i32,)>(&txn, sql.build())
            .await?
            .into_iter()
            .map(|(d,)| i64::from(d))
            .collect();
        clear = locked_days
            .into_iter()
            .filter(|d| !stale.contains(d))
            .collect();
    }
    if !clear.is_empty() {
        let mut sql = Sql::new(backend);
        sql.push("UPDATE stats_days SET stale = FALSE WHERE day IN (")
            .bind_list(clear.iter().map(|d| day_value(*d)))
            .push(")");
        txn.execute(sql.build()).await?;
    }
    txn.commit().await?;
    Ok(clear)
}

/// Adds `tenant`'s earliest affected day to `from_day`.
pub(crate) fn note_change(from_day: &mut BTreeMap<String, i64>, tenant: &str, day: i64) {
    match from_day.get_mut(tenant) {
        Some(d) => *d = (*d).min(day),
        None => {
            from_day.insert(tenant.to_owned(), day);
        }
    }
}

fn day_value(day: i64) -> i32 {
    i32::try_from(day.clamp(i64::from(i32::MIN), i64::from(i32::MAX))).unwrap_or(i32::MAX)
}

/// Creates the day rows of `days` that do not exist: each flagged stale, with a stale
/// placeholder window for every production tenant (computed by [`refresh`] next), under the
/// cursor lock.
async fn ensure_days(db: &DatabaseConnection, days: &[i64]) -> Result<(), StoreError> {
    let backend = db.get_database_backend();
    let existing: HashSet<i64> = read_days(db, days).await?.into_keys().collect();
    let now_ms = chrono::Utc::now().timestamp_millis();
    for &day in days.iter().filter(|d| !existing.contains(d)) {
        let txn = db.begin().await?;
        lock_cursor(&txn, backend).await?;
        let mut sql = Sql::new(backend);
        sql.push("SELECT day FROM stats_days WHERE day = ")
            .bind(day_value(day));
        if txn.query_one(sql.build()).await?.is_some() {
            txn.commit().await?; // created meanwhile
            continue;
        }
        // Windows without a day row are counted nowhere (a day row was removed by hand):
        // they go, and are computed again with the placeholders.
        let mut sql = Sql::new(backend);
        sql.push("DELETE FROM stats_windows WHERE day = ")
            .bind(day_value(day));
        txn.execute(sql.build()).await?;
        let mut sql = Sql::new(backend);
        sql.push(
            "INSERT INTO stats_windows (tenant_id, day, authorized, active, last_active_at, \
             computed_at, stale) SELECT t.tenant_id, ",
        )
        .bind(day_value(day))
        .push(", 0, ")
        .bind(Window::default().encode_active())
        .push(", NULL, ")
        .bind(now_ms)
        .push(
            ", TRUE FROM tenants t WHERE t.deleted = FALSE AND t.test = FALSE \
             ON CONFLICT (tenant_id, day) DO NOTHING",
        );
        txn.execute(sql.build()).await?;
        let zero = DayTotals::default();
        let mut sql = Sql::new(backend);
        sql.push(
            "INSERT INTO stats_days (day, authorized, opened, active, projects, updated_at, \
             stale) VALUES ",
        )
        .bind_tuple::<_, Value>([
            day_value(day).into(),
            0i64.into(),
            0i64.into(),
            DayTotals::encode(&zero.active).into(),
            DayTotals::encode(&zero.projects).into(),
            now_ms.into(),
            true.into(),
        ]);
        txn.execute(sql.build()).await?;
        txn.commit().await?;
    }
    Ok(())
}

/// A day row as read: the sum of its windows, and whether one of them may be stale.
#[derive(Debug, Clone)]
struct DayRow {
    totals: DayTotals,
    stale: bool,
}

/// The day rows of `days` that exist.
async fn read_days(
    db: &impl ConnectionTrait,
    days: &[i64],
) -> Result<BTreeMap<i64, DayRow>, StoreError> {
    read_days_where(db, days, None, false).await
}

/// The day rows of `days`, or of the range `[from, to]` if given (`lock`: on PostgreSQL,
/// `FOR NO KEY UPDATE` in day order — computations add their differences one after the
/// other, while writers take key-share locks on the rows undisturbed, see [`flag_days`]).
async fn read_days_where(
    db: &impl ConnectionTrait,
    days: &[i64],
    range: Option<(i64, i64)>,
    lock: bool,
) -> Result<BTreeMap<i64, DayRow>, StoreError> {
    let backend = db.get_database_backend();
    let mut sql = Sql::new(backend);
    sql.push("SELECT day, authorized, opened, active, projects, stale FROM stats_days WHERE ");
    match range {
        Some((from, to)) => {
            sql.push("day >= ")
                .bind(day_value(from))
                .push(" AND day <= ")
                .bind(day_value(to));
        }
        None => {
            if days.is_empty() {
                return Ok(BTreeMap::new());
            }
            sql.push("day IN (")
                .bind_list(days.iter().map(|d| day_value(*d)))
                .push(")");
        }
    }
    sql.push(" ORDER BY day");
    if lock && backend == DbBackend::Postgres {
        sql.push(" FOR NO KEY UPDATE");
    }
    let rows: Vec<(i32, i64, i64, String, String, bool)> =
        crate::query_rows(db, sql.build()).await?;
    let mut out = BTreeMap::new();
    for (day, authorized, opened, active, projects, stale) in rows {
        let (Some(active), Some(projects)) =
            (DayTotals::decode(&active), DayTotals::decode(&projects))
        else {
            return Err(StoreError::Corrupt(format!(
                "stats_days row of day {day} has unreadable counts (30 comma-separated \
                 integers expected in active and projects)"
            )));
        };
        let totals = DayTotals {
            authorized,
            opened,
            active,
            projects,
        };
        out.insert(i64::from(day), DayRow { totals, stale });
    }
    Ok(out)
}

/// The day rows of `days` (sorted, distinct), exact for everything committed before the
/// call: rows that do not exist are created, and the stale windows of flagged rows are
/// computed first. A row that is not flagged is read and nothing else.
async fn current(
    db: &DatabaseConnection,
    days: &[i64],
) -> Result<BTreeMap<i64, DayTotals>, StoreError> {
    let mut rows = read_days(db, days).await?;
    if rows.len() < days.len() {
        let missing: Vec<i64> = days
            .iter()
            .copied()
            .filter(|d| !rows.contains_key(d))
            .collect();
        ensure_days(db, &missing).await?;
        rows.extend(read_days(db, &missing).await?);
    }
    let stale: Vec<i64> = rows
        .iter()
        .filter(|(_, r)| r.stale)
        .map(|(d, _)| *d)
        .collect();
    if !stale.is_empty() {
        refresh(db, &stale).await?;
        rows.extend(read_days(db, &stale).await?);
    }
    if let Some(day) = days.iter().find(|d| !rows.contains_key(d)) {
        return Err(StoreError::Corrupt(format!(
            "the statistics row of day {day} was removed while it was read"
        )));
    }
    Ok(rows.into_iter().map(|(d, r)| (d, r.totals)).collect())
}

/// Days of activity one mask of [`compute`] covers (bits of an `i64`, sign bit unused).
const MASK_DAYS: i64 = 62;

/// Computes the windows of `days` (sorted, distinct) for `tenants` from the history: one
/// read of their spans and of their activity over the days' 30-day reaches, whatever the
/// number of days (the maintainer's 31 days cost one pass, not 31). The database sends one
/// row per active user (a mask of the days it was active) and one per tenant and day of
/// `days` (its latest activity), not one per rollup.
async fn compute(
    txn: &impl ConnectionTrait,
    days: &[i64],
    tenants: &[&str],
) -> Result<HashMap<(String, i64), Window>, StoreError> {
    let mut out = HashMap::with_capacity(tenants.len() * days.len());
    // Each group of days spans at most MASK_DAYS days of activity.
    let mut rest = days;
    while let Some(&lo) = rest.first() {
        let reach = MASK_DAYS - WINDOW_DAYS + 1;
        let take = rest.partition_point(|&d| d < lo + reach);
        out.extend(compute_masked(txn, &rest[..take], tenants).await?);
        rest = &rest[take..];
    }
    Ok(out)
}

/// [`compute`] for days whose activity reach fits one mask.
async fn compute_masked(
    txn: &impl ConnectionTrait,
    days: &[i64],
    tenants: &[&str],
) -> Result<HashMap<(String, i64), Window>, StoreError> {
    let backend = txn.get_database_backend();
    let (Some(&lo), Some(&hi)) = (days.first(), days.last()) else {
        return Ok(HashMap::new());
    };
    if tenants.is_empty() {
        return Ok(HashMap::new());
    }
    let first = lo - WINDOW_DAYS + 1;
    let in_tenants = |sql: &mut Sql| {
        sql.push("tenant_id IN (")
            .bind_list(tenants.iter().copied())
            .push(")");
    };
    // Spans of production authorisations that may cover one of the days' ends.
    let mut sql = Sql::new(backend);
    sql.push("SELECT tenant_id, user_name, from_v, to_v FROM auth_spans WHERE ");
    in_tenants(&mut sql);
    sql.push(" AND test = FALSE AND from_v <= ")
        .bind(end_of_day_ms(hi))
        .push(" AND (to_v IS NULL OR to_v > ")
        .bind(end_of_day_ms(lo))
        .push(")");
    let spans: Vec<(String, String, i64, Option<i64>)> =
        crate::query_rows(txn, sql.build()).await?;
    // Per user, the days active within the reach of every day, as bits from `first` (a
    // rollup row is unique per user and day, so the sum is the union).
    let mut sql = Sql::new(backend);
    sql.push("SELECT tenant_id, user_name, CAST(SUM(CAST(1 AS BIGINT) << (day - ")
        .bind(day_value(first))
        .push(")) AS BIGINT) FROM activity_daily WHERE ");
    in_tenants(&mut sql);
    sql.push(" AND day >= ")
        .bind(day_value(first))
        .push(" AND day <= ")
        .bind(day_value(hi))
        .push(" GROUP BY tenant_id, user_name");
    let masks: Vec<(String, String, i64)> = crate::query_rows(txn, sql.build()).await?;
    // Per tenant, the latest activity time up to each of the days: grouped by the first of
    // the days at or after the rollup's day (all days before `lo` fall to `lo`).
    let mut sql = Sql::new(backend);
    sql.push("SELECT tenant_id, CASE WHEN day < ")
        .bind(day_value(lo))
        .push(" THEN ")
        .bind(day_value(lo))
        .push(" ELSE day END AS upto, MAX(last_at) FROM activity_daily WHERE ");
    in_tenants(&mut sql);
    sql.push(" AND day >= ")
        .bind(day_value(first))
        .push(" AND day <= ")
        .bind(day_value(hi))
        .push(" GROUP BY tenant_id, upto");
    let latest_rows: Vec<(String, i32, i64)> = crate::query_rows(txn, sql.build()).await?;
    // Each tenant's last activity before that reach: its latest day's latest time.
    let mut sql = Sql::new(backend);
    sql.push("WITH t (tenant_id) AS (VALUES ");
    sql.joined(tenants.iter(), ", ", |sql, t| {
        sql.push("(").bind(*t).push(")");
    });
    sql.push(
        ") SELECT t.tenant_id, (SELECT MAX(d.last_at) FROM activity_daily d \
         WHERE d.tenant_id = t.tenant_id AND d.day = (SELECT MAX(x.day) FROM activity_daily x \
         WHERE x.tenant_id = t.tenant_id AND x.day < ",
    )
    .bind(day_value(first))
    .push(")) FROM t");
    let before: HashMap<String, Option<i64>> =
        crate::query_rows::<(String, Option<i64>)>(txn, sql.build())
            .await?
            .into_iter()
            .collect();

    // Per user authorised at some day's end: spans and active days (bit `i`: `first + i`).
    #[derive(Default)]
    struct User {
        spans: Vec<(i64, Option<i64>)>,
        active: i64,
    }
    let mut users: HashMap<(&str, &str), User> = HashMap::new();
    for (t, u, from, to) in &spans {
        users
            .entry((t.as_str(), u.as_str()))
            .or_default()
            .spans
            .push((*from, *to));
    }
    for (t, u, mask) in &masks {
        if let Some(user) = users.get_mut(&(t.as_str(), u.as_str())) {
            user.active = *mask;
        }
    }
    let mut latest: HashMap<&str, BTreeMap<i64, i64>> = HashMap::new();
    for (t, upto, at) in &latest_rows {
        latest
            .entry(t.as_str())
            .or_default()
            .insert(i64::from(*upto), *at);
    }
    let index: HashMap<&str, usize> = tenants.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let mut out: Vec<Vec<Window>> = vec![vec![Window::default(); days.len()]; tenants.len()];
    for ((t, _), user) in &users {
        let Some(&ti) = index.get(t) else { continue };
        for (di, &day) in days.iter().enumerate() {
            let end = end_of_day_ms(day);
            if !user
                .spans
                .iter()
                .any(|&(from, to)| from <= end && to.is_none_or(|to| to > end))
            {
                continue;
            }
            let w = &mut out[ti][di];
            w.authorized += 1;
            // The last active day up to `day` (the highest bit at or below it): active in
            // every period at least `day - last + 1` days long.
            let upto = u32::try_from(day - first).unwrap_or(0);
            let seen = user.active & (i64::MAX >> (62 - upto.min(62)));
            if seen != 0 {
                let last = i64::from(63 - seen.leading_zeros()) + first;
                if let Ok(age) = usize::try_from(day - last) {
                    for slot in w.active.iter_mut().skip(age) {
                        *slot += 1;
                    }
                }
            }
        }
    }
    let mut result = HashMap::with_capacity(tenants.len() * days.len());
    for (ti, t) in tenants.iter().enumerate() {
        let earlier = before.get(*t).copied().flatten();
        let by_day = latest.get(t);
        for (di, &day) in days.iter().enumerate() {
            let mut w = std::mem::take(&mut out[ti][di]);
            let within = by_day.and_then(|m| m.range(..=day).map(|(_, at)| *at).max());
            w.last_active_at = within.max(earlier);
            result.insert(((*t).to_owned(), day), w);
        }
    }
    Ok(result)
}

/// Computes and stores, under their marks, the windows of `days` (sorted) of `tenants`
/// (sorted) that are stale or missing, on days that have a row; deletes those of tenants
/// that are not production tenants now; changes the day rows by the difference. How many
/// tenant-days it computed.
async fn fill(
    db: &DatabaseConnection,
    days: &[i64],
    tenants: &[String],
) -> Result<usize, StoreError> {
    let backend = db.get_database_backend();
    let txn = db.begin().await?;
    // First the locks (on SQLite, this write also makes the transaction the writer, so what
    // it reads next is the latest committed data).
    lock_marks(&txn, backend, tenants.iter().map(String::as_str), false).await?;
    let mut totals: BTreeMap<i64, DayTotals> = read_days_where(&txn, days, None, true)
        .await?
        .into_iter()
        .map(|(d, r)| (d, r.totals))
        .collect();
    let stored: Vec<i64> = totals.keys().copied().collect();
    if stored.is_empty() {
        txn.commit().await?;
        return Ok(0);
    }
    let in_tenants = |sql: &mut Sql| {
        sql.push("tenant_id IN (")
            .bind_list(tenants.iter().map(String::as_str))
            .push(")");
    };
    let mut sql = Sql::new(backend);
    sql.push("SELECT tenant_id FROM tenants WHERE deleted = FALSE AND test = FALSE AND ");
    in_tenants(&mut sql);
    let production: HashSet<String> = crate::query_rows::<(String,)>(&txn, sql.build())
        .await?
        .into_iter()
        .map(|(t,)| t)
        .collect();
    // The stored windows: their values (what the day rows hold for them) and staleness.
    // On PostgreSQL a probe of the primary key per tenant (LATERAL behind `OFFSET 0`): with
    // the windows' statistics behind, an `IN` list was planned as a scan of every window.
    let mut sql = Sql::new(backend);
    if backend == DbBackend::Postgres {
        sql.push("SELECT w.tenant_id, w.day, w.authorized, w.active, w.stale FROM (VALUES ");
        sql.joined(tenants.iter(), ", ", |sql, t| {
            sql.push("(").bind(t.as_str()).push(")");
        });
        sql.push(
            ") AS v (tenant_id) CROSS JOIN LATERAL (SELECT * FROM stats_windows x \
             WHERE x.tenant_id = v.tenant_id AND x.day IN (",
        )
        .bind_list(stored.iter().map(|d| day_value(*d)))
        .push(") OFFSET 0) w");
    } else {
        sql.push("SELECT tenant_id, day, authorized, active, stale FROM stats_windows WHERE ");
        in_tenants(&mut sql);
        sql.push(" AND day IN (")
            .bind_list(stored.iter().map(|d| day_value(*d)))
            .push(")");
    }
    let mut old: HashMap<(String, i64), (Window, bool)> = HashMap::new();
    for (t, day, authorized, active, stale) in
        crate::query_rows::<(String, i32, i64, String, bool)>(&txn, sql.build()).await?
    {
        let active = Window::decode_active(&active).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "stats_windows row of tenant {t}, day {day} has unreadable active counts"
            ))
        })?;
        let w = Window {
            authorized: u64::try_from(authorized).unwrap_or(0),
            active,
            last_active_at: None,
        };
        old.insert((t, i64::from(day)), (w, stale));
    }
    // What to do: compute the stale or missing windows of production tenants, drop the
    // stored windows of the others.
    let mut compute_days: BTreeSet<i64> = BTreeSet::new();
    let mut compute_tenants: Vec<&str> = Vec::new();
    let mut needed_pairs: HashSet<(&str, i64)> = HashSet::new();
    let mut dropped: Vec<(&str, i64)> = Vec::new();
    for t in tenants {
        let is_production = production.contains(t);
        let mut needed = false;
        for &day in &stored {
            match (old.get(&(t.clone(), day)), is_production) {
                (Some((_, false)), true) => {}
                (None | Some((_, true)), true) => {
                    needed = true;
                    compute_days.insert(day);
                    needed_pairs.insert((t.as_str(), day));
                }
                (Some(_), false) => dropped.push((t.as_str(), day)),
                (None, false) => {}
            }
        }
        if needed {
            compute_tenants.push(t.as_str());
        }
    }
    let compute_days: Vec<i64> = compute_days.into_iter().collect();
    let computed = compute(&txn, &compute_days, &compute_tenants).await?;
    let mut written: Vec<(&(String, i64), &Window)> = Vec::new();
    for (key, w) in &computed {
        // The chunk's other tenants' fresh windows of those days were computed alongside.
        if !needed_pairs.contains(&(key.0.as_str(), key.1)) {
            continue;
        }
        let Some(day_totals) = totals.get_mut(&key.1) else {
            continue;
        };
        if let Some((before, _)) = old.get(key) {
            day_totals.add(before, -1);
        }
        day_totals.add(w, 1);
        written.push((key, w));
    }
    written.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (t, day) in &dropped {
        if let (Some(day_totals), Some((before, _))) =
            (totals.get_mut(day), old.get(&((*t).to_owned(), *day)))
        {
            day_totals.add(before, -1);
        }
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    for chunk in written.chunks(rows_per_statement(7)) {
        let mut sql = Sql::new(backend);
        sql.push(
            "INSERT INTO stats_windows (tenant_id, day, authorized, active, last_active_at, \
             computed_at, stale) VALUES ",
        );
        sql.bind_rows(chunk.iter().map(|((t, day), w)| {
            [
                Value::from(t.clone()),
                day_value(*day).into(),
                i64::try_from(w.authorized).unwrap_or(i64::MAX).into(),
                w.encode_active().into(),
                w.last_active_at.into(),
                now_ms.into(),
                false.into(),
            ]
        }));
        sql.push(
            " ON CONFLICT (tenant_id, day) DO UPDATE SET authorized = excluded.authorized, \
             active = excluded.active, last_active_at = excluded.last_active_at, \
             computed_at = excluded.computed_at, stale = FALSE",
        );
        txn.execute(sql.build()).await?;
    }
    for chunk in dropped.chunks(500) {
        let mut sql = Sql::new(backend);
        sql.push("DELETE FROM stats_windows WHERE ");
        sql.joined(chunk.iter(), " OR ", |sql, (t, day)| {
            sql.push("(tenant_id = ")
                .bind(*t)
                .push(" AND day = ")
                .bind(day_value(*day))
                .push(")");
        });
        txn.execute(sql.build()).await?;
    }
    let changed: BTreeSet<i64> = written
        .iter()
        .map(|(key, _)| key.1)
        .chain(dropped.iter().map(|(_, day)| *day))
        .collect();
    for (day, t) in totals.iter().filter(|(day, _)| changed.contains(day)) {
        let mut sql = Sql::new(backend);
        sql.push("UPDATE stats_days SET authorized = ")
            .bind(t.authorized)
            .push(", opened = ")
            .bind(t.opened)
            .push(", active = ")
            .bind(DayTotals::encode(&t.active))
            .push(", projects = ")
            .bind(DayTotals::encode(&t.projects))
            .push(", updated_at = ")
            .bind(now_ms)
            .push(" WHERE day = ")
            .bind(day_value(*day));
        txn.execute(sql.build()).await?;
    }
    txn.commit().await?;
    Ok(written.len())
}

/// Appends the days `v` (`VALUES`) joined to the stale windows `s` of each day
/// (`first`: on PostgreSQL only the first, by tenant id): a walk of the stale-window index
/// per day, never a scan of the windows. On PostgreSQL a LATERAL subquery, behind
/// `OFFSET 0` or ordered by the index, which the planner cannot turn into a scan of every
/// window when the table's statistics lag behind (it grows by a day of tenants at a time,
/// and autovacuum may be off); SQLite runs a `CROSS JOIN` in the order written, the days
/// outside.
fn each_day_stale(sql: &mut Sql, pg: bool, days: &[i64], first: bool) {
    sql.push("(SELECT x.column1 AS day FROM (VALUES ");
    sql.joined(days.iter(), ", ", |sql, d| {
        sql.push("(").bind(day_value(*d)).push(")");
    });
    sql.push(") AS x) AS v");
    if pg {
        sql.push(
            " CROSS JOIN LATERAL (SELECT w.tenant_id FROM stats_windows w \
             WHERE w.day = v.day AND w.stale = TRUE",
        )
        .push(if first {
            " ORDER BY w.tenant_id LIMIT 1) s"
        } else {
            " OFFSET 0) s"
        });
    } else {
        sql.push(" CROSS JOIN stats_windows s ON s.day = v.day AND s.stale = TRUE");
    }
}

/// Computes the stale windows of `days` (flagged rows), a chunk of tenants per transaction
/// (each chunk's history read once for all its stale days), then clears the flag of the
/// days left with none ([`settle`]); how many tenant-days it computed. The windows stale
/// when it started are all computed when it returns, whether or not a later write flagged
/// a day again meanwhile.
async fn refresh(db: &DatabaseConnection, days: &[i64]) -> Result<usize, StoreError> {
    if days.is_empty() {
        return Ok(0);
    }
    let backend = db.get_database_backend();
    let mut sql = Sql::new(backend);
    sql.push("SELECT DISTINCT s.tenant_id FROM ");
    each_day_stale(&mut sql, backend == DbBackend::Postgres, days, false);
    sql.push(" ORDER BY s.tenant_id");
    let stale: Vec<String> = crate::query_rows::<(String,)>(db, sql.build())
        .await?
        .into_iter()
        .map(|(t,)| t)
        .collect();
    let mut computed = 0;
    for chunk in stale.chunks(TENANTS_PER_FILL) {
        computed += fill(db, days, chunk).await?;
    }
    settle(db, days).await?;
    Ok(computed)
}

/// The length in days of `[from_day, to_day]`, if the windows answer it.
fn length(from_day: i64, to_day: i64) -> Result<usize, StoreError> {
    let n = to_day - from_day + 1;
    if (1..=WINDOW_DAYS).contains(&n) {
        Ok(usize::try_from(n).unwrap_or(N))
    } else {
        Err(StoreError::Conflict(format!(
            "a statistics period covers 1 to {WINDOW_DAYS} days, not {n}"
        )))
    }
}

/// The figures of each period of UTC+8 days `[from_day, to_day]` (at most 30 days): the
/// day row of its `to_day`. The rows are read together, and their stale windows computed
/// in one pass (the overview's period and previous period cost one read of the history).
pub(crate) async fn periods(
    db: &DatabaseConnection,
    periods: &[(i64, i64)],
) -> Result<Vec<PeriodFigures>, StoreError> {
    let lengths = periods
        .iter()
        .map(|&(from, to)| length(from, to))
        .collect::<Result<Vec<usize>, StoreError>>()?;
    let mut days: Vec<i64> = periods.iter().map(|p| p.1).collect();
    days.sort_unstable();
    days.dedup();
    let rows = current(db, &days).await?;
    Ok(periods
        .iter()
        .zip(lengths)
        .map(|(p, n)| rows.get(&p.1).map(|r| r.figures(n)).unwrap_or_default())
        .collect())
}

/// How the tenants table is ordered: a column (as the API names it) and its direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TenantOrder {
    TenantId,
    Name,
    Authorized,
    Active,
    LastActiveAt,
}

impl TenantOrder {
    /// `tenantId`, `name`, `authorized`, `active` or `lastActiveAt`.
    pub(crate) fn parse(key: &str) -> Result<Self, StoreError> {
        Ok(match key {
            "tenantId" => TenantOrder::TenantId,
            "name" => TenantOrder::Name,
            "authorized" => TenantOrder::Authorized,
            "active" => TenantOrder::Active,
            "lastActiveAt" => TenantOrder::LastActiveAt,
            other => {
                return Err(StoreError::Conflict(format!(
                    "`{other}` is not a sort key of the statistics tenants: use tenantId, \
                     name, authorized, active or lastActiveAt"
                )))
            }
        })
    }
}

/// A page of the tenants table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TenantsPage {
    pub order: TenantOrder,
    pub descending: bool,
    /// Only tenants with authorised users and no activity ever (up to the period's end).
    pub never_active: bool,
    pub offset: u64,
    /// `None`: every tenant from `offset` on.
    pub limit: Option<u64>,
}

/// A row of the tenants table's query: tenant id, name, and its window's authorised users,
/// active counts and last activity (`NULL`: no window yet).
type PageRow = (String, String, Option<i64>, Option<String>, Option<i64>);

/// A page of production tenants with their figures for `[from_day, to_day]` (at most 30
/// days), ordered by `page.order` then tenant id (both descending if asked: the reverse of
/// the ascending order), and whether more follow. The database orders and cuts the page
/// (one window per tenant probed, none sent back but the page's).
pub(crate) async fn tenants_page(
    db: &DatabaseConnection,
    from_day: i64,
    to_day: i64,
    page: TenantsPage,
) -> Result<(Vec<TenantFigures>, bool), StoreError> {
    let n = length(from_day, to_day)?;
    current(db, &[to_day]).await?;
    let backend = db.get_database_backend();
    let dir = if page.descending { "DESC" } else { "ASC" };
    let key = match page.order {
        TenantOrder::TenantId => None,
        // Byte order, as the API always sorted names (PostgreSQL's collation may differ).
        TenantOrder::Name if backend == DbBackend::Postgres => {
            Some(format!("t.name COLLATE \"C\" {dir}"))
        }
        TenantOrder::Name => Some(format!("t.name {dir}")),
        TenantOrder::Authorized => Some(format!("w.authorized {dir}")),
        TenantOrder::Active => Some(format!("{} {dir}", active_sql("w.active", n))),
        // No activity sorts first.
        TenantOrder::LastActiveAt => Some(format!(
            "w.last_active_at {dir} NULLS {}",
            if page.descending { "LAST" } else { "FIRST" }
        )),
    };
    let want = page.limit.map_or(i64::MAX, |l| {
        i64::try_from(l.saturating_add(1)).unwrap_or(i64::MAX)
    });
    let mut filled = false;
    loop {
        let mut sql = Sql::new(backend);
        sql.push(
            "SELECT t.tenant_id, t.name, w.authorized, w.active, w.last_active_at FROM tenants t \
             LEFT JOIN stats_windows w ON w.tenant_id = t.tenant_id AND w.day = ",
        )
        .bind(day_value(to_day))
        .push(" WHERE t.deleted = FALSE AND t.test = FALSE");
        if page.never_active {
            sql.push(" AND w.authorized > 0 AND w.last_active_at IS NULL");
        }
        sql.push(" ORDER BY ");
        if let Some(key) = &key {
            sql.push(key).push(", ");
        }
        sql.push(&format!("t.tenant_id {dir} LIMIT "))
            .bind(want)
            .push(" OFFSET ")
            .bind(i64::try_from(page.offset).unwrap_or(i64::MAX));
        let rows: Vec<PageRow> = crate::query_rows(db, sql.build()).await?;
        // A tenant the indexer has not met yet has no window: compute it and ask again.
        let missing: Vec<String> = rows
            .iter()
            .filter(|r| r.2.is_none() || r.3.is_none())
            .map(|r| r.0.clone())
            .collect();
        if !missing.is_empty() && !filled {
            filled = true;
            let mut missing = missing;
            missing.sort_unstable();
            for chunk in missing.chunks(TENANTS_PER_FILL) {
                fill(db, &[to_day], chunk).await?;
            }
            continue;
        }
        let mut out = Vec::with_capacity(rows.len());
        for (tenant_id, name, authorized, active, last_active_at) in rows {
            let active = active
                .as_deref()
                .and_then(Window::decode_active)
                .map_or(0, |a| a[n - 1]);
            out.push(TenantFigures {
                tenant_id,
                name,
                authorized: authorized.and_then(|a| u64::try_from(a).ok()).unwrap_or(0),
                active,
                last_active_at,
            });
        }
        let more = page.limit.is_some_and(|l| out.len() as u64 > l);
        if let Some(l) = page.limit {
            out.truncate(usize::try_from(l).unwrap_or(usize::MAX));
        }
        return Ok((out, more));
    }
}

/// Every production tenant with its figures for `[from_day, to_day]` (at most 30 days), by
/// tenant id.
pub(crate) async fn tenants(
    db: &DatabaseConnection,
    from_day: i64,
    to_day: i64,
) -> Result<Vec<TenantFigures>, StoreError> {
    let page = TenantsPage {
        order: TenantOrder::TenantId,
        descending: false,
        never_active: false,
        offset: 0,
        limit: None,
    };
    Ok(tenants_page(db, from_day, to_day, page).await?.0)
}

/// Per UTC+8 day of `[from_day, to_day]`: `(day, active users, active projects)` — users
/// authorised at the end of the day with activity on it, and their tenants; days without
/// any are absent. A day with a row is read from it (a one-day period ending on it; the
/// stale windows of the flagged rows are computed first, in one pass); the others are
/// computed from the history, without creating rows (a custom range far back should not
/// cost 30 days of windows).
pub(crate) async fn daily(
    db: &DatabaseConnection,
    from_day: i64,
    to_day: i64,
) -> Result<Vec<(i64, u64, u64)>, StoreError> {
    let mut rows = read_days_where(db, &[], Some((from_day, to_day)), false).await?;
    let stale: Vec<i64> = rows
        .iter()
        .filter(|(_, r)| r.stale)
        .map(|(d, _)| *d)
        .collect();
    if !stale.is_empty() {
        refresh(db, &stale).await?;
        rows.extend(read_days(db, &stale).await?);
    }
    let mut out = Vec::new();
    let mut missing: Option<(i64, i64)> = None;
    for day in from_day..=to_day {
        match rows.get(&day) {
            Some(row) => {
                let f = row.totals.figures(1);
                if f.members_active > 0 {
                    out.push((day, f.members_active, f.projects_active));
                }
            }
            None => {
                let range = missing.get_or_insert((day, day));
                range.1 = day;
            }
        }
    }
    if let Some((first, last)) = missing {
        // One pass over the span of the days without rows; only those days are taken.
        for r in crate::stats::daily_from_history(db, first, last).await? {
            if !rows.contains_key(&r.0) {
                out.push(r);
            }
        }
        out.sort_unstable();
    }
    Ok(out)
}

/// Changes so far (a sum that grows with every write that marks windows stale) and
/// production tenants: while both stay the same, no window has been marked and none is
/// missing that was not missing before, so the maintainer can skip its pass.
pub(crate) async fn fingerprint(db: &DatabaseConnection) -> Result<(i64, i64), StoreError> {
    let row = db
        .query_one(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT (SELECT CAST(COALESCE(SUM(changes), 0) AS BIGINT) FROM stats_marks), \
             (SELECT COUNT(*) FROM tenants WHERE deleted = FALSE AND test = FALSE)",
        ))
        .await?
        .ok_or_else(|| StoreError::Corrupt("the fingerprint query returned no row".into()))?;
    Ok((row.try_get_by_index(0)?, row.try_get_by_index(1)?))
}

/// Creates the rows and computes the stale windows of the last 31 UTC+8 days up to `today`:
/// every preset (`day`, `7d`, `30d`), its previous period and its daily series; how many
/// tenant-days it computed. One pass over each chunk of tenants' history for all 31 days.
pub(crate) async fn warm(db: &DatabaseConnection, today: i64) -> Result<usize, StoreError> {
    let days: Vec<i64> = (today - WINDOW_DAYS..=today).collect();
    ensure_days(db, &days).await?;
    let stale: Vec<i64> = read_days(db, &days)
        .await?
        .into_iter()
        .filter(|(_, r)| r.stale)
        .map(|(d, _)| d)
        .collect();
    refresh(db, &stale).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_counts_round_trip() {
        let mut active = [0u64; N];
        for (i, a) in active.iter_mut().enumerate() {
            *a = (i as u64) * 7;
        }
        let w = Window {
            authorized: 300,
            active,
            last_active_at: None,
        };
        assert_eq!(Window::decode_active(&w.encode_active()), Some(active));
        assert_eq!(Window::decode_active("1,2"), None);
        assert_eq!(
            Window::decode_active(&format!("{},9", w.encode_active())),
            None
        );
        assert_eq!(
            Window::decode_active(&w.encode_active().replace('7', "x")),
            None
        );
    }

    #[test]
    fn each_count_sits_where_sql_cuts_it() {
        let mut active = [0u64; N];
        for (i, a) in active.iter_mut().enumerate() {
            *a = 1_000 * (i as u64 + 1) + 7;
        }
        let text = Window {
            active,
            ..Window::default()
        }
        .encode_active();
        for n in 1..=N {
            // SQL's SUBSTR(text, start, DIGITS) is 1-based.
            let start = (n - 1) * (DIGITS + 1);
            assert_eq!(
                text[start..start + DIGITS].parse::<u64>(),
                Ok(active[n - 1])
            );
        }
        assert!(active_sql("w.active", 2).contains("SUBSTR(w.active, 12, 10)"));
    }

    #[test]
    fn a_day_row_adds_and_takes_out_windows() {
        let mut a = Window {
            authorized: 3,
            ..Window::default()
        };
        a.active[4..].iter_mut().for_each(|x| *x = 2);
        let b = Window {
            authorized: 0,
            ..Window::default()
        };
        let mut t = DayTotals::default();
        t.add(&a, 1);
        t.add(&b, 1);
        assert_eq!(
            t.figures(5),
            PeriodFigures {
                projects_opened: 1,
                projects_active: 1,
                members_authorized: 3,
                members_active: 2
            }
        );
        assert_eq!(t.figures(4).members_active, 0);
        t.add(&a, -1);
        assert_eq!(t, DayTotals::default());
        assert_eq!(
            DayTotals::decode(&DayTotals::encode(&[-3; N])),
            Some([-3; N])
        );
    }
}
