//! Precomputed statistics (migration `m20261129_000010_stats_windows`): what every period
//! ending on a UTC+8 day needs, per production tenant, so a period's figures are a read of
//! one row per tenant instead of a pass over every authorised user and their activity.
//!
//! **The window of (tenant, `D`).** With `auth(D)` the tenant's users authorised at the end
//! of `D` (an `auth_spans` span covers it, as in the `stats` module) and `last(u, D)` a user's
//! last active day up to `D`, the row holds `|auth(D)|` and, for `n` = 1‥30, how many users of
//! `auth(D)` have `D - last(u, D) < n`: those are exactly the authorised users active in the
//! `n`-day period `[D - n + 1, D]`. Every period this product answers is at most 30 days
//! long, so every period (and its previous period, which ends on `from - 1`) is one window.
//! The row also keeps the tenant's last activity up to `D` (the tenants table shows it).
//!
//! **Freshness.** A row is deleted by any write that may change it, in that write's own
//! transaction: an activity rollup of day `a` deletes the tenant's rows of days `≥ a`, an
//! authorisation span opened or closed at marketplace time `v` those of days `≥ day(v)`.
//! Missing rows are computed when a request needs them, and the statistics maintainer keeps
//! the presets' rows (today, and the days the previous periods of the presets end on)
//! computed in the background. So a row that exists is exact for the data committed so far.
//!
//! **The race.** A row computed from data read just before a write commits must not outlive
//! that write. Both sides take the tenant's `stats_marks` row lock (an upsert): writers
//! before they delete, the computation before it reads. On PostgreSQL (read committed) a
//! writer that locks second deletes after the row is committed, and a computation that locks
//! second reads after the write is committed; on SQLite both are write transactions and run
//! one at a time. Locks are taken in tenant order.
use crate::error::StoreError;
use crate::sql::Sql;
use crate::stats::{end_of_day_ms, PeriodFigures, TenantFigures};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, TransactionTrait, Value};
use std::collections::{BTreeMap, HashMap};

/// The longest period, in days, the windows answer.
pub const WINDOW_DAYS: i64 = 30;
const N: usize = 30;

/// Tenants per computation (one transaction, one statement of each kind).
const TENANTS_PER_FILL: usize = 64;

/// One tenant's window of a day.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Window {
    authorized: u64,
    /// `active[n - 1]`: authorised users active in the `n` days ending on the day.
    active: [u64; N],
    last_active_at: Option<i64>,
}

impl Window {
    fn encode_active(&self) -> String {
        let parts: Vec<String> = self.active.iter().map(u64::to_string).collect();
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

/// Takes the `stats_marks` row lock of each tenant, in tenant order (`bump`: count a change).
async fn lock_marks<'a>(
    txn: &impl ConnectionTrait,
    backend: DbBackend,
    tenants: impl Iterator<Item = &'a str>,
    bump: bool,
) -> Result<(), StoreError> {
    let tenants: Vec<&str> = tenants.collect();
    for chunk in tenants.chunks(crate::sql::rows_per_statement(2)) {
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

/// Deletes the windows a write may have changed: per tenant, those of days from the given
/// one on. Call inside the write's transaction, after its data is written or before.
pub(crate) async fn invalidate(
    txn: &impl ConnectionTrait,
    backend: DbBackend,
    from_day: &BTreeMap<String, i64>,
) -> Result<(), StoreError> {
    if from_day.is_empty() {
        return Ok(());
    }
    lock_marks(txn, backend, from_day.keys().map(String::as_str), true).await?;
    let rows: Vec<(&String, &i64)> = from_day.iter().collect();
    for chunk in rows.chunks(500) {
        let mut sql = Sql::new(backend);
        sql.push("DELETE FROM stats_windows WHERE ");
        sql.joined(chunk.iter(), " OR ", |sql, (t, d)| {
            sql.push("(tenant_id = ")
                .bind(t.as_str())
                .push(" AND day >= ")
                .bind(day_value(**d))
                .push(")");
        });
        txn.execute(sql.build()).await?;
    }
    Ok(())
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

/// Computes and stores the windows of `day` for `tenants` (sorted), under their marks.
async fn fill(
    db: &DatabaseConnection,
    day: i64,
    tenants: &[String],
    now_ms: i64,
) -> Result<HashMap<String, Window>, StoreError> {
    let backend = db.get_database_backend();
    let txn = db.begin().await?;
    // First the locks (on SQLite, this write also makes the transaction the writer, so what
    // it reads next is the latest committed data).
    lock_marks(&txn, backend, tenants.iter().map(String::as_str), false).await?;
    let mut out: HashMap<String, Window> = tenants
        .iter()
        .map(|t| {
            (
                t.clone(),
                Window {
                    authorized: 0,
                    active: [0; N],
                    last_active_at: None,
                },
            )
        })
        .collect();
    // Users authorised at the end of `day`, grouped by their last active day within the 30
    // days up to `day` (NULL: none).
    let end = end_of_day_ms(day);
    let (first, day_v) = (day_value(day - WINDOW_DAYS + 1), day_value(day));
    let mut sql = Sql::new(backend);
    let in_tenants = |sql: &mut Sql| {
        sql.push("(")
            .bind_list(tenants.iter().map(String::as_str))
            .push(")");
    };
    sql.push(
        "WITH auth AS (SELECT DISTINCT s.tenant_id, s.user_name FROM auth_spans s \
         WHERE s.tenant_id IN ",
    );
    in_tenants(&mut sql);
    sql.push(" AND s.test = FALSE AND s.from_v <= ")
        .bind(end)
        .push(" AND (s.to_v IS NULL OR s.to_v > ")
        .bind(end)
        .push("))");
    if backend == DbBackend::Postgres {
        // The window's activity grouped once and hash-joined to the authorised users.
        sql.push(
            ", seen AS (SELECT d.tenant_id, d.user_name, MAX(d.day) AS last \
             FROM activity_daily d WHERE d.tenant_id IN ",
        );
        in_tenants(&mut sql);
        sql.push(" AND d.day >= ")
            .bind(first)
            .push(" AND d.day <= ")
            .bind(day_v)
            .push(
                " GROUP BY d.tenant_id, d.user_name) \
                 SELECT a.tenant_id, seen.last, COUNT(*) FROM auth a LEFT JOIN seen \
                 ON seen.tenant_id = a.tenant_id AND seen.user_name = a.user_name \
                 GROUP BY a.tenant_id, seen.last",
            );
    } else {
        // SQLite: one probe of the (tenant, user, day) primary key per authorised user.
        sql.push(
            " SELECT tenant_id, last, COUNT(*) FROM (SELECT a.tenant_id, \
             (SELECT MAX(d.day) FROM activity_daily d WHERE d.tenant_id = a.tenant_id \
             AND d.user_name = a.user_name AND d.day >= ",
        )
        .bind(first)
        .push(" AND d.day <= ")
        .bind(day_v)
        .push(") AS last FROM auth a) GROUP BY tenant_id, last");
    }
    for row in txn.query_all(sql.build()).await? {
        let tenant: String = row.try_get_by_index(0)?;
        let seen: Option<i32> = row.try_get_by_index(1)?;
        let count = u64::try_from(row.try_get_by_index::<i64>(2)?).unwrap_or(0);
        let Some(w) = out.get_mut(&tenant) else {
            continue;
        };
        w.authorized += count;
        if let Some(seen) = seen {
            // Active in every period of at least `day - seen + 1` days ending on `day`.
            let age = usize::try_from(day - i64::from(seen)).unwrap_or(N);
            for slot in w.active.iter_mut().skip(age) {
                *slot += count;
            }
        }
    }
    // The last activity up to `day`: the latest of the tenant's last active day.
    let mut sql = Sql::new(backend);
    sql.push("WITH t (tenant_id) AS (VALUES ");
    sql.joined(tenants.iter(), ", ", |sql, t| {
        sql.push("(").bind(t.as_str()).push(")");
    });
    sql.push(
        ") SELECT t.tenant_id, (SELECT MAX(d.last_at) FROM activity_daily d \
         WHERE d.tenant_id = t.tenant_id AND d.day = (SELECT MAX(x.day) FROM activity_daily x \
         WHERE x.tenant_id = t.tenant_id AND x.day <= ",
    )
    .bind(day_v)
    .push(")) FROM t");
    for row in txn.query_all(sql.build()).await? {
        let tenant: String = row.try_get_by_index(0)?;
        if let Some(w) = out.get_mut(&tenant) {
            w.last_active_at = row.try_get_by_index(1)?;
        }
    }
    let mut sql = Sql::new(backend);
    sql.push(
        "INSERT INTO stats_windows (tenant_id, day, authorized, active, last_active_at, \
         computed_at) VALUES ",
    );
    sql.bind_rows(tenants.iter().map(|t| {
        let w = &out[t];
        [
            Value::from(t.clone()),
            day_v.into(),
            i64::try_from(w.authorized).unwrap_or(i64::MAX).into(),
            w.encode_active().into(),
            w.last_active_at.into(),
            now_ms.into(),
        ]
    }));
    sql.push(
        " ON CONFLICT (tenant_id, day) DO UPDATE SET authorized = excluded.authorized, \
         active = excluded.active, last_active_at = excluded.last_active_at, \
         computed_at = excluded.computed_at",
    );
    txn.execute(sql.build()).await?;
    txn.commit().await?;
    Ok(out)
}

/// Every production tenant (by id) with its name and window of `day`, computing the
/// missing windows; and how many it computed.
async fn windows(
    db: &DatabaseConnection,
    day: i64,
) -> Result<(Vec<(String, String, Window)>, usize), StoreError> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "SELECT t.tenant_id, t.name, w.authorized, w.active, w.last_active_at FROM tenants t \
         LEFT JOIN stats_windows w ON w.tenant_id = t.tenant_id AND w.day = ",
    )
    .bind(day_value(day))
    .push(" WHERE t.deleted = FALSE AND t.test = FALSE ORDER BY t.tenant_id");
    let mut found: Vec<(String, String, Option<Window>)> = Vec::new();
    for row in db.query_all(sql.build()).await? {
        let authorized: Option<i64> = row.try_get_by_index(2)?;
        let active: Option<String> = row.try_get_by_index(3)?;
        // A row that cannot be read back is computed again.
        let window = match (
            authorized,
            active.as_deref().and_then(Window::decode_active),
        ) {
            (Some(a), Some(active)) => Some(Window {
                authorized: u64::try_from(a).unwrap_or(0),
                active,
                last_active_at: row.try_get_by_index(4)?,
            }),
            _ => None,
        };
        found.push((row.try_get_by_index(0)?, row.try_get_by_index(1)?, window));
    }
    let missing: Vec<String> = found
        .iter()
        .filter(|f| f.2.is_none())
        .map(|f| f.0.clone())
        .collect();
    let mut computed: HashMap<String, Window> = HashMap::new();
    let now_ms = chrono::Utc::now().timestamp_millis();
    for chunk in missing.chunks(TENANTS_PER_FILL) {
        computed.extend(fill(db, day, chunk, now_ms).await?);
    }
    let out = found
        .into_iter()
        .filter_map(|(t, name, w)| {
            let w = w.or_else(|| computed.remove(&t))?;
            Some((t, name, w))
        })
        .collect();
    Ok((out, missing.len()))
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

/// The figures of UTC+8 days `[from_day, to_day]` (at most 30 days).
pub(crate) async fn period(
    db: &DatabaseConnection,
    from_day: i64,
    to_day: i64,
) -> Result<PeriodFigures, StoreError> {
    let n = length(from_day, to_day)?;
    let mut f = PeriodFigures::default();
    for (_, _, w) in windows(db, to_day).await?.0 {
        let active = w.active[n - 1];
        f.projects_opened += u64::from(w.authorized > 0);
        f.projects_active += u64::from(active > 0);
        f.members_authorized += w.authorized;
        f.members_active += active;
    }
    Ok(f)
}

/// Every production tenant with its figures for `[from_day, to_day]` (at most 30 days), by
/// tenant id.
pub(crate) async fn tenants(
    db: &DatabaseConnection,
    from_day: i64,
    to_day: i64,
) -> Result<Vec<TenantFigures>, StoreError> {
    let n = length(from_day, to_day)?;
    Ok(windows(db, to_day)
        .await?
        .0
        .into_iter()
        .map(|(tenant_id, name, w)| TenantFigures {
            tenant_id,
            name,
            authorized: w.authorized,
            active: w.active[n - 1],
            last_active_at: w.last_active_at,
        })
        .collect())
}

/// Per UTC+8 day of `[from_day, to_day]`: `(day, active users, active projects)` — users
/// authorised at the end of the day with activity on it, and their tenants; days without
/// any are absent. A day whose windows all exist is read from them (a one-day period ending
/// on it); the others are computed from the history, without storing windows (a custom
/// range far back should not cost 30 window computations).
pub(crate) async fn daily(
    db: &DatabaseConnection,
    from_day: i64,
    to_day: i64,
) -> Result<Vec<(i64, u64, u64)>, StoreError> {
    let backend = db.get_database_backend();
    let mut sql = Sql::new(backend);
    sql.push(
        "SELECT w.day, w.active, (SELECT COUNT(*) FROM tenants p WHERE p.deleted = FALSE          AND p.test = FALSE) FROM stats_windows w JOIN tenants t ON t.tenant_id = w.tenant_id          AND t.deleted = FALSE AND t.test = FALSE WHERE w.day >= ",
    )
    .bind(day_value(from_day))
    .push(" AND w.day <= ")
    .bind(day_value(to_day));
    // Per day: windows found, unreadable ones, active users, active projects.
    let mut days: BTreeMap<i64, (i64, bool, u64, u64)> = BTreeMap::new();
    let mut production = 0i64;
    for row in db.query_all(sql.build()).await? {
        let day = i64::from(row.try_get_by_index::<i32>(0)?);
        let active: String = row.try_get_by_index(1)?;
        production = row.try_get_by_index(2)?;
        let d = days.entry(day).or_insert((0, false, 0, 0));
        d.0 += 1;
        match Window::decode_active(&active) {
            Some(a) => {
                d.2 += a[0];
                d.3 += u64::from(a[0] > 0);
            }
            None => d.1 = true,
        }
    }
    let mut out = Vec::new();
    let mut missing: Option<(i64, i64)> = None;
    for day in from_day..=to_day {
        match days.get(&day) {
            Some(&(found, false, members, projects)) if found == production => {
                if members > 0 {
                    out.push((day, members, projects));
                }
            }
            _ => {
                let range = missing.get_or_insert((day, day));
                range.1 = day;
            }
        }
    }
    if let Some((first, last)) = missing {
        // One pass over the span of the days without windows; only those days are taken.
        for r in crate::stats::daily_from_history(db, first, last).await? {
            let has_windows = days
                .get(&r.0)
                .is_some_and(|&(found, bad, _, _)| found == production && !bad);
            if !has_windows {
                out.push(r);
            }
        }
        out.sort_unstable();
    }
    Ok(out)
}

/// Changes so far (a sum that grows with every write that deletes windows) and production
/// tenants: while both stay the same, no window has been deleted and none is missing that
/// was not missing before, so the maintainer can skip its pass.
pub(crate) async fn fingerprint(db: &DatabaseConnection) -> Result<(i64, i64), StoreError> {
    let row = db
        .query_one(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT (SELECT CAST(COALESCE(SUM(changes), 0) AS BIGINT) FROM stats_marks),              (SELECT COUNT(*) FROM tenants WHERE deleted = FALSE AND test = FALSE)",
        ))
        .await?
        .ok_or_else(|| StoreError::Corrupt("the fingerprint query returned no row".into()))?;
    Ok((row.try_get_by_index(0)?, row.try_get_by_index(1)?))
}

/// Computes the missing windows of the last 31 UTC+8 days up to `today`: every preset
/// (`day`, `7d`, `30d`), its previous period and its daily series; how many tenant-days it
/// computed. Today's first.
pub(crate) async fn warm(db: &DatabaseConnection, today: i64) -> Result<usize, StoreError> {
    let mut computed = 0;
    for day in (today - WINDOW_DAYS..=today).rev() {
        computed += windows(db, day).await?.1;
    }
    Ok(computed)
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
}
