//! The change feed: `GET /api/v1/events?after=&tenantId=&types=&limit=`, every applied change
//! from the journal in commit order.
//!
//! Journal ids are handed out in commit order (kitsync-store, "Journal order"), so a consumer
//! that polls from its last cursor sees every change exactly once while writes go on. The
//! cursor is the id of the last row read (matching the filter or not), and `nextCursor` is
//! never null: a feed does not end, the consumer keeps polling from it.
//!
//! One request reads at most [`kitsync_store::feed::MAX_SCAN_ROWS`] (10 000) journal rows,
//! matching or not, so a rare `types` or `tenantId` cannot make it read the whole journal.
//! A request that stops there answers the events found so far, possibly none, with
//! `nextCursor` at the last row it read; polling from it goes on where it stopped.
use crate::auth::Caller;
use crate::directory::TestFilter;
use crate::error::ApiError;
use crate::extract::Query;
use crate::page::PageQuery;
use crate::ApiState;
use axum::extract::State;
use axum::Json;
use kitsync_domain::Scope;
use kitsync_store::feed::{parse_event_types, ChangeEvent, FeedFilter};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// The cursor to read after: a `nextCursor` (or an event's `cursor`) of this feed; absent
    /// or `0`: from the start of the journal.
    #[serde(default)]
    #[param(value_type = i64, minimum = 0)]
    after: Option<String>,
    /// Only this tenant's events (required for a tenant-bound token).
    #[serde(default)]
    #[param(value_type = String)]
    tenant_id: Option<String>,
    /// Comma-separated event types or their prefixes (`member,department.removed`): `member`
    /// (`member.authorized`, `.modified`, `.deauthorized`, `.removed`), `department`
    /// (`.added`, `.renamed`, `.moved`, `.updated`, `.removed`), `tenant` (`.created`,
    /// `.updated`, `.deleted`, `.instance_added`), `app` (`.created`, `.updated`, `.deleted`),
    /// `group` (`.created`, `.updated`, `.deleted`), `plan` (a full department sync held by
    /// the mass-deletion guard: `.held`, `.approved`, `.rejected`, `.confirmed`,
    /// `.superseded`). Absent: every type.
    #[serde(default)]
    #[param(value_type = String, example = "member,department.removed")]
    types: Option<String>,
    /// Events per page, from 1 to 1000 (default 100).
    #[serde(default)]
    #[param(value_type = u64, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    test: TestFilter,
}

/// One item of the feed (the shape lives in [`kitsync_store::feed`]).
pub type Event = ChangeEvent;

/// A page of the change feed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventPage {
    /// In commit order.
    items: Vec<Event>,
    /// Never null: poll from it (as `after`) to see every later change exactly once.
    next_cursor: String,
}

/// `GET /api/v1/events`.
///
/// # Errors
/// 401/403 per [`Caller`] (a tenant-bound token must name its tenant); 400 naming `after`,
/// `types`, `limit` or `includeTest`.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    operation_id = "listEvents",
    tag = "events",
    summary = "The change feed: every applied change, in commit order",
    description = "Scope `directory:read`; a tenant-bound token must name its tenant \
                   (`tenantId`). A request reads at most 10 000 journal rows, matching or \
                   not: with a rare `types` or `tenantId` it may answer fewer than `limit` \
                   items, even none, with `nextCursor` moved past the rows it read; keep \
                   polling.",
    params(EventQuery, TestFilter),
    responses(
        (status = 200, description = "A page of events.", body = EventPage),
        crate::openapi::ReadErrors,
    ),
    security(("bearer" = ["directory:read"])),
)]
pub async fn events(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(q): Query<EventQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let tenant = q.tenant_id.filter(|t| !t.is_empty());
    caller.require(Scope::DirectoryRead, tenant.as_deref())?;
    let include_test = q.test.include_test()?;
    let after: i64 = match q.after.as_deref() {
        None | Some("") => 0,
        Some(raw) => raw.parse().ok().filter(|n: &i64| *n >= 0).ok_or_else(|| {
            ApiError::bad_param(
                "after",
                format!("must be a cursor from this feed (a whole number), got `{raw}`"),
            )
        })?,
    };
    // The feed's cursor is `after`, but its page size is every list's `limit`.
    let limit = PageQuery {
        cursor: None,
        limit: q.limit,
    }
    .limit()?;
    let types = parse_event_types(q.types.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::bad_param("types", e.to_string()))?;
    let filter = FeedFilter {
        tenant_id: tenant,
        types,
        include_test,
    };
    let page = state.store.feed_page(after, None, &filter, limit).await?;
    Ok(Json(EventPage {
        items: page.events,
        next_cursor: page.next_cursor.to_string(),
    }))
}
