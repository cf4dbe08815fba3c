//! Statistics (product.md §1 shapes, §3 definitions), scope `stats:read`, not tenant-bound:
//! `GET /api/v1/stats/overview`, `/daily` and `/tenants`.
//!
//! A period is `from`/`to` (inclusive UTC+8 dates `YYYY-MM-DD`, at most 30 days) or
//! `preset=day|7d|30d` (ending today in UTC+8; the default is `7d`). Before answering, the
//! statistics' authorisation history is brought up to date with the journal; the figures are
//! then read from the store's per-tenant windows (computed first where a write deleted them),
//! so they are exact for everything committed, and every answer says when it was computed
//! (`asOf`).
use crate::auth::Caller;
use crate::error::ApiError;
use crate::page::PageQuery;
use crate::ApiState;
use axum::extract::{Query, State};
use axum::Json;
use chrono::NaiveDate;
use kitsync_domain::Scope;
use kitsync_store::{utc8_day, PeriodFigures, TenantFigures};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;

/// The longest custom range, in days: what the store's precomputed windows answer.
pub const MAX_DAYS: i64 = kitsync_store::WINDOW_DAYS;

#[derive(Debug, Default, Deserialize)]
pub struct PeriodQuery {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    preset: Option<String>,
}

/// Inclusive UTC+8 days (days since 1970-01-01).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: i64,
    pub to: i64,
}

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()
}

fn date_of(day: i64) -> String {
    (epoch() + chrono::Duration::days(day))
        .format("%Y-%m-%d")
        .to_string()
}

fn parse_date(param: &str, v: &str) -> Result<i64, ApiError> {
    let d = NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| {
        ApiError::bad_param(
            param,
            format!("`{v}` is not a date: use YYYY-MM-DD (UTC+8)"),
        )
    })?;
    Ok((d - epoch()).num_days())
}

impl PeriodQuery {
    /// # Errors
    /// 400 naming the parameter: a malformed date, `from` after `to`, a range over 30 days,
    /// an unknown preset, or a preset together with dates.
    pub fn period(&self, today: i64) -> Result<Period, ApiError> {
        match (&self.preset, &self.from, &self.to) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(ApiError::bad_param(
                "preset",
                "give either preset or from/to, not both",
            )),
            (Some(p), None, None) => {
                let days = match p.as_str() {
                    "day" => 1,
                    "7d" => 7,
                    "30d" => 30,
                    other => {
                        return Err(ApiError::bad_param(
                            "preset",
                            format!("`{other}` is not a preset: use day, 7d or 30d"),
                        ))
                    }
                };
                Ok(Period {
                    from: today - days + 1,
                    to: today,
                })
            }
            (None, Some(f), Some(t)) => {
                let (from, to) = (parse_date("from", f)?, parse_date("to", t)?);
                if from > to {
                    return Err(ApiError::bad_param("from", format!("{f} is after to={t}")));
                }
                if to - from + 1 > MAX_DAYS {
                    return Err(ApiError::bad_param(
                        "to",
                        format!(
                            "{f}..{t} is {} days: a range covers at most {MAX_DAYS} days",
                            to - from + 1
                        ),
                    ));
                }
                Ok(Period { from, to })
            }
            (None, Some(_), None) => Err(ApiError::bad_param("to", "is required with from")),
            (None, None, Some(_)) => Err(ApiError::bad_param("from", "is required with to")),
            (None, None, None) => Ok(Period {
                from: today - 6,
                to: today,
            }),
        }
    }
}

impl Period {
    /// The period of equal length just before.
    #[must_use]
    pub fn previous(self) -> Period {
        let len = self.to - self.from + 1;
        Period {
            from: self.from - len,
            to: self.from - 1,
        }
    }

    fn json(self) -> Value {
        json!({ "from": date_of(self.from), "to": date_of(self.to) })
    }
}

fn rate(num: u64, den: u64) -> Value {
    if den == 0 {
        Value::Null
    } else {
        #[allow(clippy::cast_precision_loss)]
        let r = num as f64 / den as f64;
        json!(r)
    }
}

fn delta(now: &Value, before: &Value) -> Value {
    match (now.as_f64(), before.as_f64()) {
        (Some(a), Some(b)) => json!(a - b),
        _ => Value::Null,
    }
}

/// Admits a `stats:read` caller and brings the history up to date; today's UTC+8 day and
/// the time of computation.
async fn prepare(state: &ApiState, caller: &Caller) -> Result<(i64, String), ApiError> {
    caller.require(Scope::StatsRead, None)?;
    state.store.catch_up_stats(50).await?;
    let now = chrono::Utc::now();
    Ok((
        utc8_day(now.timestamp_millis()),
        now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    ))
}

fn figures(f: PeriodFigures) -> (Value, Value) {
    let projects = json!({
        "opened": f.projects_opened,
        "active": f.projects_active,
        "activeRate": rate(f.projects_active, f.projects_opened),
    });
    let members = json!({
        "authorized": f.members_authorized,
        "active": f.members_active,
        "activeRate": rate(f.members_active, f.members_authorized),
    });
    (projects, members)
}

fn with_previous(mut now: Value, before: Value, keys: [&str; 3]) -> Value {
    let change: serde_json::Map<String, Value> = keys
        .iter()
        .map(|k| ((*k).to_owned(), delta(&now[*k], &before[*k])))
        .collect();
    now["previous"] = before;
    now["change"] = Value::Object(change);
    now
}

/// `GET /api/v1/stats/overview`.
///
/// # Errors
/// 401/403 per [`Caller`] (a tenant-bound token is 403); 400 for a bad period.
pub async fn overview(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(q): Query<PeriodQuery>,
) -> Result<Json<Value>, ApiError> {
    let (today, as_of) = prepare(&state, &caller).await?;
    let period = q.period(today)?;
    let previous = period.previous();
    let (p, m) = figures(state.store.stats_period(period.from, period.to).await?);
    let (pp, pm) = figures(state.store.stats_period(previous.from, previous.to).await?);
    Ok(Json(json!({
        "period": period.json(),
        "previousPeriod": previous.json(),
        "projects": with_previous(p, pp, ["opened", "active", "activeRate"]),
        "members": with_previous(m, pm, ["authorized", "active", "activeRate"]),
        "asOf": as_of,
    })))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DayItem {
    date: String,
    active_projects: u64,
    active_members: u64,
}

/// `GET /api/v1/stats/daily`: one item per day of the period, oldest first.
///
/// # Errors
/// As [`overview`].
pub async fn daily(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(q): Query<PeriodQuery>,
) -> Result<Json<Value>, ApiError> {
    let (today, as_of) = prepare(&state, &caller).await?;
    let period = q.period(today)?;
    let rows = state.store.stats_daily(period.from, period.to).await?;
    let items: Vec<DayItem> = (period.from..=period.to)
        .map(|d| {
            let (members, projects) = rows
                .iter()
                .find(|r| r.0 == d)
                .map_or((0, 0), |r| (r.1, r.2));
            DayItem {
                date: date_of(d),
                active_projects: projects,
                active_members: members,
            }
        })
        .collect();
    Ok(Json(json!({
        "items": items,
        "nextCursor": null,
        "period": period.json(),
        "asOf": as_of,
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantsQuery {
    #[serde(flatten)]
    period: PeriodQuery,
    #[serde(flatten)]
    page: PageQuery,
    #[serde(default)]
    sort: Option<String>,
    #[serde(default)]
    never_active: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantItem {
    tenant_id: String,
    name: String,
    authorized: u64,
    active: u64,
    last_active_at: Option<String>,
}

/// `GET /api/v1/stats/tenants?sort=&neverActive=&cursor=&limit=` and a period: every
/// production tenant with authorised and active users and its last activity.
/// `sort` is `tenantId` (default), `name`, `authorized`, `active` or `lastActiveAt`, with a
/// leading `-` for descending; `neverActive=true` keeps tenants with authorised users and no
/// activity ever (up to the period's end) — the ones to call before renewal.
///
/// # Errors
/// As [`overview`], and 400 for a bad `sort`, `neverActive`, `cursor` or `limit`.
pub async fn tenants(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(q): Query<TenantsQuery>,
) -> Result<Json<Value>, ApiError> {
    let (today, as_of) = prepare(&state, &caller).await?;
    let period = q.period.period(today)?;
    let limit = q.page.limit()?;
    let offset: usize = match q.page.after("offset")? {
        None => 0,
        Some(o) => o
            .parse()
            .map_err(|_| ApiError::bad_param("cursor", "not a cursor of this list"))?,
    };
    let never_active = match q.never_active.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_param(
                "neverActive",
                format!("must be `true` or `false`, got `{other}`"),
            ))
        }
    };
    let mut rows: Vec<TenantFigures> = state.store.stats_tenants(period.from, period.to).await?;
    if never_active {
        rows.retain(|t| t.authorized > 0 && t.last_active_at.is_none());
    }
    let sort = q.sort.as_deref().unwrap_or("tenantId");
    let (desc, key) = match sort.strip_prefix('-') {
        Some(k) => (true, k),
        None => (false, sort),
    };
    match key {
        "tenantId" => {}
        "name" => rows.sort_by(|a, b| a.name.cmp(&b.name)),
        "authorized" => rows.sort_by_key(|t| t.authorized),
        "active" => rows.sort_by_key(|t| t.active),
        "lastActiveAt" => rows.sort_by_key(|t| t.last_active_at),
        other => {
            return Err(ApiError::bad_param(
                "sort",
                format!(
                    "`{other}` is not a sort key: use tenantId, name, authorized, active or \
                     lastActiveAt, with - for descending"
                ),
            ))
        }
    }
    if desc {
        rows.reverse();
    }
    let total = rows.len();
    let items: Vec<TenantItem> = rows
        .into_iter()
        .skip(offset)
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|t| TenantItem {
            tenant_id: t.tenant_id,
            name: t.name,
            authorized: t.authorized,
            active: t.active,
            last_active_at: t.last_active_at.and_then(|ms| {
                chrono::DateTime::from_timestamp_millis(ms)
                    .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            }),
        })
        .collect();
    let next = offset + items.len();
    let next_cursor = (next < total).then(|| crate::page::cursor("offset", &next.to_string()));
    Ok(Json(json!({
        "items": items,
        "nextCursor": next_cursor,
        "period": period.json(),
        "asOf": as_of,
    })))
}
