//! Statistics (shapes in README.md, definitions in docs/statistics.md), scope `stats:read`, not tenant-bound:
//! `GET /api/v1/stats/overview`, `/daily` and `/tenants`.
//!
//! A period is `from`/`to` (inclusive UTC+8 dates `YYYY-MM-DD`, at most 30 days) or
//! `preset=day|7d|30d` (ending today in UTC+8; the default is `7d`). Before answering, the
//! statistics' authorisation history is brought up to date with the journal; the figures are
//! then read from the store's precomputed windows (computed first where a write marked them
//! stale): the overview and the daily series from one row per day summed over all tenants,
//! the tenants table from one window per tenant of the page, ordered and cut by the
//! database. So they are exact for everything committed, their cost does not grow with the
//! number of tenants (the table's: only with the page), and every answer says when it was
//! computed (`asOf`).
use crate::auth::Caller;
use crate::directory::choice;
use crate::error::ApiError;
use crate::extract::Query;
use crate::page::PageQuery;
use crate::ApiState;
use axum::extract::State;
use axum::Json;
use chrono::NaiveDate;
use kitsync_domain::Scope;
use kitsync_store::{utc8_day, PeriodFigures, TenantFigures};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// The longest custom range, in days: what the store's precomputed windows answer.
pub const MAX_DAYS: i64 = kitsync_store::WINDOW_DAYS;

/// `?from=&to=` or `?preset=`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeriodQuery {
    /// The period's first day (UTC+8, `YYYY-MM-DD`, from 1970-01-01 on), with `to`: at most
    /// 30 days in all.
    #[serde(default)]
    #[param(value_type = String, format = Date)]
    from: Option<String>,
    /// The period's last day (UTC+8, `YYYY-MM-DD`, inclusive), with `from`.
    #[serde(default)]
    #[param(value_type = String, format = Date)]
    to: Option<String>,
    /// The period ending today (UTC+8): `day` (today), `7d` or `30d`; not together with
    /// `from`/`to`. Without any of them, `7d`.
    #[serde(default)]
    #[param(inline, value_type = Preset)]
    preset: Option<String>,
}

/// A period ending today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
pub enum Preset {
    #[serde(rename = "day")]
    Day,
    #[serde(rename = "7d")]
    SevenDays,
    #[serde(rename = "30d")]
    ThirtyDays,
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

/// `YYYY-MM-DD` of a day; [`parse_date`] keeps days (and the previous period's) within
/// 1969-12-01..=9999-12-31, where this cannot fail.
fn date_of(day: i64) -> String {
    chrono::TimeDelta::try_days(day)
        .and_then(|d| epoch().checked_add_signed(d))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// A day given as exactly `YYYY-MM-DD` (chrono alone also takes signed and 5-digit years,
/// whose previous period could overflow), from 1970-01-01 on.
fn parse_date(param: &str, v: &str) -> Result<i64, ApiError> {
    let shaped = v.len() == 10
        && v.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    let d = shaped
        .then(|| NaiveDate::parse_from_str(v, "%Y-%m-%d").ok())
        .flatten()
        .ok_or_else(|| {
            ApiError::bad_param(
                param,
                format!("`{v}` is not a date: use YYYY-MM-DD (UTC+8)"),
            )
        })?;
    let day = (d - epoch()).num_days();
    if day < 0 {
        return Err(ApiError::bad_param(
            param,
            format!("`{v}` is before 1970-01-01"),
        ));
    }
    Ok(day)
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
                let days = match choice(p) {
                    Some(Preset::Day) => 1,
                    Some(Preset::SevenDays) => 7,
                    Some(Preset::ThirtyDays) => 30,
                    None => {
                        return Err(ApiError::bad_param(
                            "preset",
                            format!("`{p}` is not a preset: use day, 7d or 30d"),
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
                // Nothing is known about days to come; a future day would only store windows
                // of a period that cannot be judged yet.
                if to > today {
                    return Err(ApiError::bad_param(
                        "to",
                        format!("{t} is after today ({}, UTC+8)", date_of(today)),
                    ));
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

    fn body(self) -> DateRange {
        DateRange {
            from: date_of(self.from),
            to: date_of(self.to),
        }
    }
}

/// A period: inclusive UTC+8 dates.
#[derive(Debug, Serialize, ToSchema)]
pub struct DateRange {
    #[schema(format = Date)]
    from: String,
    #[schema(format = Date)]
    to: String,
}

#[allow(clippy::cast_precision_loss)]
fn float(n: u64) -> f64 {
    n as f64
}

/// `num / den`, or `None` when `den` is 0.
fn rate(num: u64, den: u64) -> Option<f64> {
    (den != 0).then(|| float(num) / float(den))
}

/// `now - before`, or `None` when either is.
fn delta(now: Option<f64>, before: Option<f64>) -> Option<f64> {
    Some(now? - before?)
}

/// Projects (production tenants) in a period.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectFigures {
    /// Tenants with at least one authorised user at the end of the period.
    opened: u64,
    /// Of those, tenants with a user active in the period.
    active: u64,
    /// `active / opened`; `null` when none was opened.
    #[schema(required = true)]
    active_rate: Option<f64>,
}

/// The change of the project figures from the previous period (rates in fractions, not
/// percentage points ×100).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectChange {
    opened: f64,
    active: f64,
    /// `null` when either period's rate is.
    #[schema(required = true)]
    active_rate: Option<f64>,
}

/// The project figures of the period, the previous period's and the change (环比).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectsOverview {
    /// Tenants with at least one authorised user at the end of the period.
    opened: u64,
    /// Of those, tenants with a user active in the period.
    active: u64,
    /// `active / opened`; `null` when none was opened.
    #[schema(required = true)]
    active_rate: Option<f64>,
    previous: ProjectFigures,
    change: ProjectChange,
}

/// Users (members of production tenants) in a period.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberFigures {
    /// Members authorised at the end of the period.
    authorized: u64,
    /// Of those, members active in the period.
    active: u64,
    /// `active / authorized`; `null` when none was authorised.
    #[schema(required = true)]
    active_rate: Option<f64>,
}

/// The change of the member figures from the previous period.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberChange {
    authorized: f64,
    active: f64,
    /// `null` when either period's rate is.
    #[schema(required = true)]
    active_rate: Option<f64>,
}

/// The member figures of the period, the previous period's and the change (环比).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MembersOverview {
    /// Members authorised at the end of the period.
    authorized: u64,
    /// Of those, members active in the period.
    active: u64,
    /// `active / authorized`; `null` when none was authorised.
    #[schema(required = true)]
    active_rate: Option<f64>,
    previous: MemberFigures,
    change: MemberChange,
}

/// `GET /api/v1/stats/overview`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverviewBody {
    period: DateRange,
    /// The period of equal length just before.
    previous_period: DateRange,
    projects: ProjectsOverview,
    members: MembersOverview,
    /// When the figures were computed (RFC 3339, UTC).
    #[schema(format = DateTime)]
    as_of: String,
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

fn figures(f: &PeriodFigures) -> (ProjectFigures, MemberFigures) {
    (
        ProjectFigures {
            opened: f.projects_opened,
            active: f.projects_active,
            active_rate: rate(f.projects_active, f.projects_opened),
        },
        MemberFigures {
            authorized: f.members_authorized,
            active: f.members_active,
            active_rate: rate(f.members_active, f.members_authorized),
        },
    )
}

fn projects_overview(now: ProjectFigures, before: ProjectFigures) -> ProjectsOverview {
    ProjectsOverview {
        change: ProjectChange {
            opened: float(now.opened) - float(before.opened),
            active: float(now.active) - float(before.active),
            active_rate: delta(now.active_rate, before.active_rate),
        },
        opened: now.opened,
        active: now.active,
        active_rate: now.active_rate,
        previous: before,
    }
}

fn members_overview(now: MemberFigures, before: MemberFigures) -> MembersOverview {
    MembersOverview {
        change: MemberChange {
            authorized: float(now.authorized) - float(before.authorized),
            active: float(now.active) - float(before.active),
            active_rate: delta(now.active_rate, before.active_rate),
        },
        authorized: now.authorized,
        active: now.active,
        active_rate: now.active_rate,
        previous: before,
    }
}

/// `GET /api/v1/stats/overview`.
///
/// # Errors
/// 401/403 per [`Caller`] (a tenant-bound token is 403); 400 for a bad period.
#[utoipa::path(
    get,
    path = "/api/v1/stats/overview",
    operation_id = "statsOverview",
    tag = "statistics",
    summary = "Projects and users: opened/authorised, active, active rate, with the previous \
               period and the change",
    description = "Scope `stats:read`, with a token bound to no tenant. Production tenants \
                   only. Exact for everything committed when asked (`asOf`).",
    params(PeriodQuery),
    responses(
        (status = 200, description = "The figures.", body = OverviewBody),
        crate::openapi::ReadErrors,
    ),
    security(("bearer" = ["stats:read"])),
)]
pub async fn overview(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(q): Query<PeriodQuery>,
) -> Result<Json<OverviewBody>, ApiError> {
    let (today, as_of) = prepare(&state, &caller).await?;
    let period = q.period(today)?;
    let previous = period.previous();
    let [now, before] = state
        .store
        .stats_periods([(period.from, period.to), (previous.from, previous.to)])
        .await?;
    let (p, m) = figures(&now);
    let (pp, pm) = figures(&before);
    Ok(Json(OverviewBody {
        period: period.body(),
        previous_period: previous.body(),
        projects: projects_overview(p, pp),
        members: members_overview(m, pm),
        as_of,
    }))
}

/// One day's active figures.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DayItem {
    /// The UTC+8 date.
    #[schema(format = Date)]
    date: String,
    /// Production tenants with a user active that day.
    active_projects: u64,
    /// Members of production tenants active that day.
    active_members: u64,
}

/// `GET /api/v1/stats/daily`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DailyBody {
    /// Every day of the period, oldest first (days without activity too).
    items: Vec<DayItem>,
    /// Always `null`: the whole period is one page.
    #[schema(required = true)]
    next_cursor: Option<String>,
    period: DateRange,
    /// When the figures were computed (RFC 3339, UTC).
    #[schema(format = DateTime)]
    as_of: String,
}

/// `GET /api/v1/stats/daily`: one item per day of the period, oldest first.
///
/// # Errors
/// As [`overview`].
#[utoipa::path(
    get,
    path = "/api/v1/stats/daily",
    operation_id = "statsDaily",
    tag = "statistics",
    summary = "Active projects and users for every day of the period",
    description = "Scope `stats:read`, with a token bound to no tenant. Production tenants \
                   only.",
    params(PeriodQuery),
    responses(
        (status = 200, description = "One item per day.", body = DailyBody),
        crate::openapi::ReadErrors,
    ),
    security(("bearer" = ["stats:read"])),
)]
pub async fn daily(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(q): Query<PeriodQuery>,
) -> Result<Json<DailyBody>, ApiError> {
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
    Ok(Json(DailyBody {
        items,
        next_cursor: None,
        period: period.body(),
        as_of,
    }))
}

/// `?sort=`: a column, with `-` for descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
pub enum TenantSort {
    #[serde(rename = "tenantId")]
    TenantId,
    #[serde(rename = "-tenantId")]
    TenantIdDesc,
    #[serde(rename = "name")]
    Name,
    #[serde(rename = "-name")]
    NameDesc,
    #[serde(rename = "authorized")]
    Authorized,
    #[serde(rename = "-authorized")]
    AuthorizedDesc,
    #[serde(rename = "active")]
    Active,
    #[serde(rename = "-active")]
    ActiveDesc,
    #[serde(rename = "lastActiveAt")]
    LastActiveAt,
    #[serde(rename = "-lastActiveAt")]
    LastActiveAtDesc,
}

impl TenantSort {
    /// As the query names it (and the store takes it).
    fn as_str(self) -> &'static str {
        match self {
            TenantSort::TenantId => "tenantId",
            TenantSort::TenantIdDesc => "-tenantId",
            TenantSort::Name => "name",
            TenantSort::NameDesc => "-name",
            TenantSort::Authorized => "authorized",
            TenantSort::AuthorizedDesc => "-authorized",
            TenantSort::Active => "active",
            TenantSort::ActiveDesc => "-active",
            TenantSort::LastActiveAt => "lastActiveAt",
            TenantSort::LastActiveAtDesc => "-lastActiveAt",
        }
    }
}

/// A period (`from`/`to` or `preset`), `?sort=&neverActive=&cursor=&limit=`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct TenantsQuery {
    #[serde(flatten)]
    #[param(ignore)]
    period: PeriodQuery,
    #[serde(flatten)]
    #[param(ignore)]
    page: PageQuery,
    /// `tenantId` (the default), `name`, `authorized`, `active` or `lastActiveAt`, with a
    /// leading `-` for descending.
    #[serde(default)]
    #[param(inline, value_type = TenantSort)]
    sort: Option<String>,
    /// `true`: only tenants with authorised users and no activity ever (up to the period's
    /// end) — the ones to call before renewal.
    #[serde(default)]
    #[param(value_type = bool)]
    never_active: Option<String>,
}

/// A production tenant's figures for the period.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantItem {
    tenant_id: String,
    name: String,
    /// Members authorised at the end of the period.
    authorized: u64,
    /// Of those, members active in the period.
    active: u64,
    /// Its last activity up to the period's end (RFC 3339, UTC); `null` when none.
    #[schema(required = true, format = DateTime)]
    last_active_at: Option<String>,
}

/// `GET /api/v1/stats/tenants`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantsBody {
    items: Vec<TenantItem>,
    /// Pass it as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
    period: DateRange,
    /// When the figures were computed (RFC 3339, UTC).
    #[schema(format = DateTime)]
    as_of: String,
}

/// `GET /api/v1/stats/tenants?sort=&neverActive=&cursor=&limit=` and a period: every
/// production tenant with authorised and active users and its last activity.
/// `sort` is `tenantId` (default), `name`, `authorized`, `active` or `lastActiveAt`, with a
/// leading `-` for descending; `neverActive=true` keeps tenants with authorised users and no
/// activity ever (up to the period's end) — the ones to call before renewal.
///
/// # Errors
/// As [`overview`], and 400 for a bad `sort`, `neverActive`, `cursor` or `limit`.
#[utoipa::path(
    get,
    path = "/api/v1/stats/tenants",
    operation_id = "statsTenants",
    tag = "statistics",
    summary = "Per production tenant: authorised and active users, last activity",
    description = "Scope `stats:read`, with a token bound to no tenant.",
    params(PeriodQuery, TenantsQuery, PageQuery),
    responses(
        (status = 200, description = "A page of tenants.", body = TenantsBody),
        crate::openapi::ReadErrors,
    ),
    security(("bearer" = ["stats:read"])),
)]
pub async fn tenants(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(q): Query<TenantsQuery>,
) -> Result<Json<TenantsBody>, ApiError> {
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
    let sort = match q.sort.as_deref() {
        None => TenantSort::TenantId,
        Some(raw) => choice(raw).ok_or_else(|| {
            let other = raw.strip_prefix('-').unwrap_or(raw);
            ApiError::bad_param(
                "sort",
                format!(
                    "`{other}` is not a sort key: use tenantId, name, authorized, active or \
                     lastActiveAt, with - for descending"
                ),
            )
        })?,
    };
    // The store orders and cuts the page (ties by tenant id, reversed with the key when
    // descending), reading only the page's rows.
    let (rows, more): (Vec<TenantFigures>, bool) = state
        .store
        .stats_tenants_page(
            period.from,
            period.to,
            sort.as_str(),
            never_active,
            u64::try_from(offset).unwrap_or(u64::MAX),
            limit,
        )
        .await?;
    let items: Vec<TenantItem> = rows
        .into_iter()
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
    let next_cursor = more.then(|| crate::page::cursor("offset", &next.to_string()));
    Ok(Json(TenantsBody {
        items,
        next_cursor,
        period: period.body(),
        as_of,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period(from: &str, to: &str) -> Result<Period, String> {
        PeriodQuery {
            from: Some(from.into()),
            to: Some(to.into()),
            preset: None,
        }
        .period(20_000)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn dates_are_four_digit_years_from_1970_and_never_overflow() {
        // chrono alone parses these; the previous period of the first one overflowed
        // `NaiveDate + TimeDelta`, a panic that dropped the connection.
        for bad in [
            "-262143-01-01",
            "+262142-12-31",
            "-0001-01-01",
            "10000-01-01",
            "2026-1-01",
        ] {
            let e = period(bad, bad).unwrap_err();
            assert!(
                e.starts_with("from: ") && e.contains("YYYY-MM-DD"),
                "{bad}: {e}"
            );
        }
        // A period may not end after today (20 000 is 2024-10-04).
        let e = period("2024-10-04", "2024-10-05").unwrap_err();
        assert!(
            e.starts_with("to: 2024-10-05 is after today (2024-10-04"),
            "{e}"
        );
        assert!(period("2024-10-03", "2024-10-04").is_ok());
        let e = period("1969-12-31", "1970-01-01").unwrap_err();
        assert_eq!(e, "from: `1969-12-31` is before 1970-01-01");
        let first = period("1970-01-01", "1970-01-30").unwrap();
        assert_eq!(first.previous().body().from, "1969-12-02");
        let last = PeriodQuery {
            from: Some("9999-12-31".into()),
            to: Some("9999-12-31".into()),
            preset: None,
        }
        .period(i64::from(u32::MAX))
        .unwrap();
        assert_eq!(
            last.body().to,
            "9999-12-31",
            "the last date formats, today being later"
        );
        assert_eq!(date_of(i64::MAX), "", "out of range: empty, not a panic");
    }
}
