//! The change feed: `GET /api/v1/events?after=&tenantId=&types=&limit=`, every applied change
//! from the journal in commit order.
//!
//! Journal ids are handed out in commit order (kitsync-store, "Journal order"), so a consumer
//! that polls from its last cursor sees every change exactly once while writes go on. The
//! cursor is the id of the last row read (matching the filter or not), and `nextCursor` is
//! never null: a feed does not end, the consumer keeps polling from it.
use crate::auth::Caller;
use crate::directory::TestFilter;
use crate::error::ApiError;
use crate::page::PageQuery;
use crate::ApiState;
use axum::extract::{Query, State};
use axum::Json;
use kitsync_domain::Scope;
use kitsync_store::{JournalEntry, JournalFilter};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Every event type, with the journal entity it comes from.
pub const EVENT_TYPES: &[(&str, &str)] = &[
    ("member.authorized", "member"),
    ("member.modified", "member"),
    ("member.deauthorized", "member"),
    ("member.removed", "member"),
    ("member.deauthorized", "authorization"),
    ("department.added", "department"),
    ("department.renamed", "department"),
    ("department.moved", "department"),
    ("department.updated", "department"),
    ("department.removed", "department"),
    ("tenant.created", "tenant"),
    ("tenant.updated", "tenant"),
    ("tenant.deleted", "tenant"),
    ("tenant.instance_added", "tenant"),
    ("app.created", "app"),
    ("app.updated", "app"),
    ("app.deleted", "app"),
    ("group.created", "group"),
    ("group.updated", "group"),
    ("group.deleted", "group"),
];

/// The event type of a journal row.
fn event_type(entity: &str, action: &str) -> String {
    match (entity, action) {
        ("member", "deleted") => "member.removed".into(),
        ("authorization", _) => "member.deauthorized".into(),
        ("department", "created") => "department.added".into(),
        ("department", "deleted") => "department.removed".into(),
        (entity, action) => format!("{entity}.{action}"),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    types: Option<String>,
    #[serde(default)]
    limit: Option<String>,
    #[serde(flatten)]
    test: TestFilter,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    id: String,
    cursor: String,
    #[serde(rename = "type")]
    kind: String,
    tenant_id: String,
    key: String,
    /// The marketplace time of the change (RFC 3339).
    changed_at: Option<String>,
    /// When kitsync applied it (RFC 3339).
    applied_at: Option<String>,
    test: bool,
    data: serde_json::Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventPage {
    items: Vec<Event>,
    next_cursor: String,
}

fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).map(|t| t.to_rfc3339())
}

fn event(e: JournalEntry) -> Event {
    Event {
        id: e.id.to_string(),
        cursor: e.id.to_string(),
        kind: event_type(&e.entity, &e.action),
        tenant_id: e.tenant_id,
        key: e.entity_key,
        changed_at: rfc3339(e.version),
        applied_at: rfc3339(e.applied_at),
        test: e.test,
        data: e.data,
    }
}

/// `GET /api/v1/events`.
///
/// # Errors
/// 401/403 per [`Caller`] (a tenant-bound token must name its tenant); 400 naming `after`,
/// `types`, `limit` or `includeTest`.
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
    let types: Option<Vec<String>> = match q.types.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(list) => {
            let mut out = Vec::new();
            for t in list.split(',').map(str::trim) {
                let known = EVENT_TYPES
                    .iter()
                    .any(|(ty, _)| *ty == t || ty.split('.').next() == Some(t));
                if !known {
                    return Err(ApiError::bad_param(
                        "types",
                        format!(
                            "`{t}` is not an event type (use member, department, tenant, app, \
                             group, or one of their types such as member.authorized)"
                        ),
                    ));
                }
                out.push(t.to_owned());
            }
            Some(out)
        }
    };
    let wanted = |kind: &str| {
        types.as_ref().is_none_or(|ts| {
            ts.iter()
                .any(|t| t == kind || kind.split('.').next() == Some(t.as_str()))
        })
    };
    let entities = types.as_ref().map(|ts| {
        let mut es: Vec<String> = EVENT_TYPES
            .iter()
            .filter(|(ty, _)| {
                ts.iter()
                    .any(|t| t == ty || ty.split('.').next() == Some(t.as_str()))
            })
            .map(|(_, entity)| (*entity).to_owned())
            .collect();
        es.sort();
        es.dedup();
        es
    });
    let filter = JournalFilter {
        tenant_id: tenant,
        entities,
        include_test,
    };
    // Read until the page is full or the journal is exhausted; rows of a type not asked for
    // (same entity, other action) are skipped but still move the cursor.
    let mut items = Vec::new();
    let mut cursor = after;
    loop {
        let rows = state.store.journal_page(cursor, &filter, limit).await?;
        let exhausted = (rows.len() as u64) < limit;
        for row in rows {
            cursor = row.id;
            let e = event(row);
            if wanted(&e.kind) {
                items.push(e);
                if items.len() as u64 == limit {
                    break;
                }
            }
        }
        if exhausted || items.len() as u64 == limit {
            break;
        }
    }
    Ok(Json(EventPage {
        items,
        next_cursor: cursor.to_string(),
    }))
}
