//! Activity of tenants' users: raw events and daily rollups (migration
//! `m20261129_000009_activity`).
//!
//! [`Store::record_activity`](crate::Store::record_activity) writes a batch in one
//! transaction: the raw events with `ON CONFLICT DO NOTHING` on (tenant, user, kind, time), so
//! a re-sent batch changes nothing, and — for the events that were new — the per-(tenant,
//! UTC+8 day, user) rollup counts. It also tells which events name no live member of a live
//! tenant ("unmatched": kept all the same, since the authorisation may arrive later).
use crate::error::StoreError;
use crate::sql::{rows_per_statement, Sql};
use crate::Store;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, TransactionTrait, Value};
use std::collections::{BTreeMap, HashSet};

/// Milliseconds in a day, and UTC+8's offset.
pub const DAY_MS: i64 = 86_400_000;
pub const UTC8_MS: i64 = 8 * 3_600_000;

/// The UTC+8 day (days since 1970-01-01) of a Unix-ms instant.
#[must_use]
pub fn utc8_day(at_ms: i64) -> i64 {
    (at_ms + UTC8_MS).div_euclid(DAY_MS)
}

/// `login` or `use`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActivityKind {
    Login,
    Use,
}

impl ActivityKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::Login => "login",
            ActivityKind::Use => "use",
        }
    }
}

/// One validated event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActivityEvent {
    pub tenant_id: String,
    pub user_name: String,
    pub kind: ActivityKind,
    /// Unix ms.
    pub at_ms: i64,
}

/// What recording a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Events stored now (the rest were already stored: repeats).
    pub new: usize,
    pub duplicates: usize,
    /// Indexes (into the batch) of events whose user is not a live member of a live tenant.
    pub unmatched: Vec<usize>,
}

/// [`Store::record_activity`](crate::Store::record_activity) inside the caller's transaction, so the events commit (or roll back) with the
/// caller's other writes: a login's `login` event is written with its session.
///
/// # Errors
/// [`StoreError::Database`] when the database fails.
pub async fn record_in<C: ConnectionTrait>(
    txn: &C,
    events: &[ActivityEvent],
    now_ms: i64,
) -> Result<Recorded, StoreError> {
    if events.is_empty() {
        return Ok(Recorded::default());
    }
    let backend = txn.get_database_backend();
    // 1. The raw events; RETURNING names the ones that were new.
    let mut fresh: Vec<ActivityEvent> = Vec::new();
    for chunk in events.chunks(rows_per_statement(5)) {
        let mut sql = Sql::new(backend);
        sql.push(
            "INSERT INTO activity_events (tenant_id, user_name, kind, at_ms, received_at) VALUES ",
        );
        sql.joined(chunk.iter(), ", ", |sql, e| {
            sql.bind_tuple::<_, Value>([
                e.tenant_id.clone().into(),
                e.user_name.clone().into(),
                e.kind.as_str().into(),
                e.at_ms.into(),
                now_ms.into(),
            ]);
        });
        sql.push(" ON CONFLICT DO NOTHING RETURNING tenant_id, user_name, kind, at_ms");
        for row in txn.query_all(sql.build()).await? {
            let kind: String = row.try_get_by_index(2)?;
            fresh.push(ActivityEvent {
                tenant_id: row.try_get_by_index(0)?,
                user_name: row.try_get_by_index(1)?,
                kind: if kind == "login" {
                    ActivityKind::Login
                } else {
                    ActivityKind::Use
                },
                at_ms: row.try_get_by_index(3)?,
            });
        }
    }
    // 2. The rollups of the new events.
    #[derive(Default)]
    struct Day {
        logins: i32,
        uses: i32,
        first: i64,
        last: i64,
    }
    let mut days: BTreeMap<(&str, i64, &str), Day> = BTreeMap::new();
    for e in &fresh {
        let d = days
            .entry((&e.tenant_id, utc8_day(e.at_ms), &e.user_name))
            .or_insert(Day {
                first: e.at_ms,
                last: e.at_ms,
                ..Day::default()
            });
        match e.kind {
            ActivityKind::Login => d.logins += 1,
            ActivityKind::Use => d.uses += 1,
        }
        d.first = d.first.min(e.at_ms);
        d.last = d.last.max(e.at_ms);
    }
    let (least, greatest) = if backend == DbBackend::Postgres {
        ("LEAST", "GREATEST")
    } else {
        ("MIN", "MAX")
    };
    let rows: Vec<_> = days.into_iter().collect();
    for chunk in rows.chunks(rows_per_statement(7)) {
        let mut sql = Sql::new(backend);
        sql.push(
            "INSERT INTO activity_daily (tenant_id, day, user_name, logins, uses, first_at, last_at) VALUES ",
        );
        sql.joined(chunk.iter(), ", ", |sql, ((tenant, day, user), d)| {
            sql.bind_tuple::<_, Value>([
                (*tenant).into(),
                i32::try_from(*day).unwrap_or(i32::MAX).into(),
                (*user).into(),
                d.logins.into(),
                d.uses.into(),
                d.first.into(),
                d.last.into(),
            ]);
        });
        sql.push(&format!(
            " ON CONFLICT (tenant_id, user_name, day) DO UPDATE SET \
             logins = activity_daily.logins + excluded.logins, \
             uses = activity_daily.uses + excluded.uses, \
             first_at = {least}(activity_daily.first_at, excluded.first_at), \
             last_at = {greatest}(activity_daily.last_at, excluded.last_at)"
        ));
        txn.execute(sql.build()).await?;
    }
    // The statistics windows these rollups change: per tenant, from the earliest day on.
    let mut changed: BTreeMap<String, i64> = BTreeMap::new();
    for ((tenant, day, _), _) in &rows {
        crate::windows::note_change(&mut changed, tenant, *day);
    }
    crate::windows::invalidate(txn, backend, &changed).await?;
    // 3. Which events name a live member of a live tenant.
    let pairs: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.tenant_id.as_str(), e.user_name.as_str()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut known: HashSet<(String, String)> = HashSet::new();
    for chunk in pairs.chunks(rows_per_statement(2)) {
        let mut sql = Sql::new(backend);
        sql.push(
            "SELECT m.tenant_id, m.user_name FROM members m JOIN tenants t \
             ON t.tenant_id = m.tenant_id AND t.deleted = FALSE \
             WHERE m.deleted = FALSE AND (m.tenant_id, m.user_name) IN (VALUES ",
        );
        sql.joined(chunk.iter(), ", ", |sql, (t, u)| {
            sql.bind_tuple([*t, *u]);
        });
        sql.push(")");
        known.extend(crate::query_rows::<(String, String)>(txn, sql.build()).await?);
    }
    let unmatched = events
        .iter()
        .enumerate()
        .filter(|(_, e)| !known.contains(&(e.tenant_id.clone(), e.user_name.clone())))
        .map(|(i, _)| i)
        .collect();
    Ok(Recorded {
        new: fresh.len(),
        duplicates: events.len() - fresh.len(),
        unmatched,
    })
}

/// Deletes raw events that happened before `before_ms`; the rollups stay.
pub(crate) async fn prune(db: &DatabaseConnection, before_ms: i64) -> Result<u64, StoreError> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("DELETE FROM activity_events WHERE at_ms < ")
        .bind(before_ms);
    Ok(db.execute(sql.build()).await?.rows_affected())
}

/// One rollup row: `(tenant, UTC+8 day, user, logins, uses)`.
pub type DailyRow = (String, i64, String, i32, i32);

/// The rollups of a tenant (for tests and tools), by day then user.
pub(crate) async fn daily(
    db: &DatabaseConnection,
    tenant: &str,
) -> Result<Vec<DailyRow>, StoreError> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "SELECT tenant_id, day, user_name, logins, uses FROM activity_daily WHERE tenant_id = ",
    )
    .bind(tenant)
    .push(" ORDER BY day, user_name");
    let rows: Vec<(String, i32, String, i32, i32)> = crate::query_rows(db, sql.build()).await?;
    Ok(rows
        .into_iter()
        .map(|(t, day, user, logins, uses)| (t, i64::from(day), user, logins, uses))
        .collect())
}

impl Store {
    /// Records a batch of activity events in one transaction (see the `activity` module):
    /// repeats of stored events change nothing.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails; nothing of the batch is kept then.
    pub async fn record_activity(&self, events: &[ActivityEvent]) -> Result<Recorded, StoreError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        if events.is_empty() {
            return Ok(Recorded::default());
        }
        let txn = self.db.begin().await?;
        let recorded = record_in(&txn, events, now_ms).await?;
        txn.commit().await?;
        Ok(recorded)
    }

    /// Deletes raw activity events that happened before `before_ms` (the daily rollups stay).
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn prune_activity(&self, before_ms: i64) -> Result<u64, StoreError> {
        prune(&self.db, before_ms).await
    }

    /// A tenant's activity rollups, by UTC+8 day then user.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the database fails.
    pub async fn activity_daily(&self, tenant_id: &str) -> Result<Vec<DailyRow>, StoreError> {
        daily(&self.db, tenant_id).await
    }
}
