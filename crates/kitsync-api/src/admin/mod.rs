//! `/admin/v1`: what the `kitsync plans|deadletters|webhooks|token|oidc-client` commands do,
//! over HTTP, for operators and the console (`/console`).
//!
//! - Every operation needs an `admin` token bound to no tenant: these act across tenants
//!   (tokens, clients, endpoints, dead letters whose body may not even decode). A token
//!   without the scope, or bound to a tenant, is 403; no or a bad token is 401.
//! - Every change is written to the audit log (`GET /admin/v1/audit`) in the change's own
//!   transaction, naming the token that made it; a plan's decision also names it in the plan's
//!   `reason` and so in the change feed.
//! - Lists are keyset pages like `/api/v1`'s (`?cursor=&limit=` → `{"items","nextCursor"}`);
//!   errors are the same `{"code","message"}`; a change refused because of the resource's
//!   state (a plan no longer held, a dead letter replayed already, an endpoint disabled) is 409.
//! - Times are RFC 3339 (UTC); secrets are never returned, except a new token's or client's,
//!   once, in the answer that created it.
pub mod audit;
pub mod clients;
pub mod dead_letters;
pub mod plans;
pub mod tokens;
pub mod webhooks;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::page::{cursor, Page, PageQuery};
use kitsync_domain::Scope;
use kitsync_store::Actor;

/// The operator `caller` is, when it may use `/admin/v1`.
///
/// # Errors
/// 403 unless the token holds `admin` and is bound to no tenant.
pub fn operator(caller: &Caller) -> Result<Actor, ApiError> {
    let token = &caller.0;
    if !Scope::Admin.granted_by(&token.scopes) {
        return Err(ApiError::Forbidden(format!(
            "this token lacks the scope {}",
            Scope::Admin
        )));
    }
    if let Some(bound) = &token.tenant_id {
        return Err(ApiError::Forbidden(format!(
            "this token is bound to tenant {bound}; /admin/v1 needs an admin token bound to \
             no tenant"
        )));
    }
    Ok(Actor::Token {
        id: token.id.clone(),
        name: token.name.clone(),
    })
}

/// Unix ms as RFC 3339 (UTC, milliseconds).
pub(crate) fn time(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// A numeric id from the path, or 400 naming `param`.
pub(crate) fn numeric_id(raw: &str, param: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::bad_param(
            param,
            format!("must be a positive whole number, got `{raw}`"),
        )
    })
}

/// The numeric id a newest-first list continues below (`cursor` of `kind`), if any.
pub(crate) fn before(page: &PageQuery, kind: &str) -> Result<Option<i64>, ApiError> {
    page.after(kind)?
        .map(|k| {
            k.parse::<i64>().map_err(|_| {
                ApiError::bad_param(
                    "cursor",
                    "is not a cursor of this list (pass back `nextCursor` unchanged)",
                )
            })
        })
        .transpose()
}

/// A newest-first page from up to `limit + 1` rows (the extra one only says there is more),
/// each with its numeric id.
pub(crate) fn newest_first<T>(
    mut rows: Vec<T>,
    limit: u64,
    kind: &str,
    id: impl Fn(&T) -> i64,
) -> Page<T> {
    let more = rows.len() as u64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = more
        .then(|| rows.last().map(|last| cursor(kind, &id(last).to_string())))
        .flatten();
    Page {
        items: rows,
        next_cursor,
    }
}

/// A page of a whole (small) list, ordered by a string key, after the cursor's key.
pub(crate) fn by_key<T>(
    mut rows: Vec<T>,
    page: &PageQuery,
    kind: &str,
    key: impl Fn(&T) -> &str,
) -> Result<Page<T>, ApiError> {
    let limit = page.limit()?;
    let after = page.after(kind)?;
    rows.sort_by(|a, b| key(a).cmp(key(b)));
    let rows: Vec<T> = rows
        .into_iter()
        .filter(|r| after.as_deref().is_none_or(|a| key(r) > a))
        .take(
            usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        )
        .collect();
    Ok(Page::from_rows(rows, limit, kind, key))
}
