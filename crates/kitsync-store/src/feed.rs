//! The change feed's events: how a journal row is shown to the ISV's apps, and how a page of
//! them is read. Shared by the pull feed (`GET /api/v1/events` in kitsync-api) and the webhook
//! push (kitsync-webhooks), so both speak the same JSON.
//!
//! A page reads journal rows after a cursor until it holds `limit` events or the journal is
//! exhausted; rows of a type not asked for are skipped but still move the cursor, so the
//! cursor a page returns is the id of the last row *read*, matching or not. A page bounded by
//! `until` (a journal id already seen, see [`crate::Store::journal_head`]) that ends before it
//! is full resumes after `until`: every row up to it is committed (journal order), so none can
//! appear behind the cursor later.
//!
//! A page reads at most [`MAX_SCAN_ROWS`] journal rows, matching or not: a filter that matches
//! rarely (`types=group.deleted`, a small tenant) would otherwise read the whole journal in
//! one request. When a page stops there, it holds the events found so far (maybe none) and
//! its cursor is the id of the last row it was allowed to read, a row that exists and is
//! committed, so resuming after it skips nothing; a consumer just keeps polling. The bound is
//! found first, as the id of the `MAX_SCAN_ROWS`-th row after the cursor (a walk of the
//! primary key), and the page's reads stop at it; a page whose filter excludes nothing reads
//! at most `limit` rows and needs no bound.
use crate::entity::journal;
use crate::error::StoreError;
use crate::journal::{Action, Entity, EventType};
use crate::model::JournalEntry;
use crate::read::{self, JournalFilter};
use crate::Store;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;

/// Journal rows one page reads at most, matching its filter or not (see the module docs).
/// Ten times the largest page: a page of ordinary filters fills up well before, and reading
/// that many ids is a few milliseconds.
pub const MAX_SCAN_ROWS: u64 = 10_000;

/// The event type of a journal row; a pair outside the journal's vocabulary
/// ([`crate::journal`]) is a corrupt row, named.
pub fn event_type(entity: &str, action: &str) -> Result<EventType, StoreError> {
    Entity::parse(entity)
        .zip(Action::parse(action))
        .and_then(|(e, a)| EventType::of(e, a))
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "journal row with entity {entity:?} and action {action:?}, which is no event"
            ))
        })
}

/// A name in a `types` list that is neither an event type nor the prefix of one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an event type (use member, department, tenant, app, group, plan, or one of \
     their types such as member.authorized)"
)]
pub struct UnknownEventType(pub String);

/// Parses a comma-separated `types` list (`member,department.added`): each entry is an event
/// type or the part before its dot. Empty entries are ignored; `None` when nothing is left
/// (every type).
///
/// # Errors
/// [`UnknownEventType`] naming the first entry that is not a type or a prefix.
pub fn parse_event_types(list: &str) -> Result<Option<Vec<String>>, UnknownEventType> {
    let mut out = Vec::new();
    for t in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let known = EventType::ALL
            .iter()
            .any(|ty| ty.as_str() == t || ty.prefix() == t);
        if !known {
            return Err(UnknownEventType(t.to_owned()));
        }
        if !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

/// Whether event type `kind` is one of `types` (types or prefixes; `None`: every type).
fn wanted(types: Option<&[String]>, kind: &str) -> bool {
    types.is_none_or(|ts| {
        ts.iter()
            .any(|t| t == kind || kind.split('.').next() == Some(t.as_str()))
    })
}

/// One change as the feed shows it (the items of `GET /api/v1/events`, README.md).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(
    description = "One change as the feed shows it: an item of `GET /api/v1/events`, and of \
                   a webhook delivery's `data.events`."
)]
#[serde(rename_all = "camelCase")]
pub struct ChangeEvent {
    /// The journal id, as text.
    pub id: String,
    /// Where to resume after this event (today the same as `id`).
    pub cursor: String,
    #[serde(rename = "type")]
    #[schema(example = "member.authorized")]
    pub kind: String,
    pub tenant_id: String,
    pub key: String,
    /// The marketplace time of the change (RFC 3339).
    #[schema(required = true, format = DateTime)]
    pub changed_at: Option<String>,
    /// When kitsync applied it (RFC 3339).
    #[schema(required = true, format = DateTime)]
    pub applied_at: Option<String>,
    pub test: bool,
    pub data: serde_json::Value,
    /// The journal id (not serialised: `id` carries it).
    #[serde(skip)]
    pub journal_id: i64,
}

/// Unix ms as RFC 3339 (`None` when out of range).
#[must_use]
pub fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).map(|t| t.to_rfc3339())
}

impl TryFrom<JournalEntry> for ChangeEvent {
    type Error = StoreError;

    fn try_from(e: JournalEntry) -> Result<Self, StoreError> {
        Ok(ChangeEvent {
            id: e.id.to_string(),
            cursor: e.id.to_string(),
            kind: event_type(&e.entity, &e.action)?.as_str().to_owned(),
            tenant_id: e.tenant_id,
            key: e.entity_key,
            changed_at: rfc3339(e.version),
            applied_at: rfc3339(e.applied_at),
            test: e.test,
            data: e.data,
            journal_id: e.id,
        })
    }
}

/// Which events a feed page holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedFilter {
    /// Only this tenant's events.
    pub tenant_id: Option<String>,
    /// Only these types or type prefixes (as [`parse_event_types`] returns them).
    pub types: Option<Vec<String>>,
    /// Events of test tenants (`testFlag=1`) too.
    pub include_test: bool,
}

/// A page of the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedPage {
    pub events: Vec<ChangeEvent>,
    /// The id of the last journal row read (the `after` given when none was): resume here.
    pub next_cursor: i64,
}

/// The id of the `n`-th journal row after `after` (and at most `until`); `None` when there are
/// fewer.
async fn nth_id_after(
    db: &DatabaseConnection,
    after: i64,
    until: Option<i64>,
    n: u64,
) -> Result<Option<i64>, StoreError> {
    let mut q = journal::Entity::find()
        .select_only()
        .column(journal::Column::Id)
        .filter(journal::Column::Id.gt(after));
    if let Some(until) = until {
        q = q.filter(journal::Column::Id.lte(until));
    }
    Ok(q.order_by_asc(journal::Column::Id)
        .offset(n.saturating_sub(1))
        .limit(1)
        .into_tuple::<i64>()
        .one(db)
        .await?)
}

/// Reads up to `limit` (at most [`MAX_SCAN_ROWS`]) events after journal id `after` (and at
/// most up to `until`, when given), reading at most [`MAX_SCAN_ROWS`] rows; see the module
/// docs. When the read ends
/// before `limit` events, the cursor is `until`, or the last row the scan limit allowed:
/// rows the filter excludes are passed over without being read.
pub(crate) async fn page(
    db: &DatabaseConnection,
    after: i64,
    until: Option<i64>,
    filter: &FeedFilter,
    limit: u64,
) -> Result<FeedPage, StoreError> {
    let limit = limit.clamp(1, MAX_SCAN_ROWS);
    let types = filter.types.as_deref();
    let entities = types.map(|ts| {
        let mut es: Vec<String> = EventType::ALL
            .iter()
            .filter(|ty| wanted(Some(ts), ty.as_str()))
            .flat_map(|ty| ty.entities())
            .map(|entity| entity.as_str().to_owned())
            .collect();
        es.sort();
        es.dedup();
        es
    });
    let journal_filter = JournalFilter {
        tenant_id: filter.tenant_id.clone(),
        entities,
        include_test: filter.include_test,
    };
    // Unfiltered, every row read is an event, so a page reads at most `limit` rows.
    let excludes = filter.tenant_id.is_some() || types.is_some() || !filter.include_test;
    let until = if excludes {
        // Stopping at a row that exists (rather than at `after + MAX_SCAN_ROWS`) keeps the
        // cursor on a committed row: ids above the newest row may still be handed out.
        nth_id_after(db, after, until, MAX_SCAN_ROWS)
            .await?
            .or(until)
    } else {
        until
    };
    let mut events = Vec::new();
    let mut cursor = after;
    let mut exhausted;
    loop {
        let rows = read::journal_range(db, cursor, until, &journal_filter, limit).await?;
        exhausted = (rows.len() as u64) < limit;
        for row in rows {
            cursor = row.id;
            let e = ChangeEvent::try_from(row)?;
            if wanted(types, &e.kind) {
                events.push(e);
                if events.len() as u64 == limit {
                    break;
                }
            }
        }
        if exhausted || events.len() as u64 == limit {
            break;
        }
    }
    if exhausted {
        if let Some(until) = until {
            // Every row up to `until` was looked at (the filter's rows by the query, the
            // others by not matching it): resume after `until`.
            cursor = cursor.max(until);
        }
    }
    Ok(FeedPage {
        events,
        next_cursor: cursor,
    })
}

impl Store {
    /// The change-feed events about one member of `tenant`, newest first: at most `limit`
    /// below event id `before` (from the newest when `None`).
    ///
    /// # Errors
    /// [`StoreError::Database`], or [`StoreError::Corrupt`] for an unreadable entry.
    pub async fn member_history(
        &self,
        tenant: &str,
        user_name: &str,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<ChangeEvent>, StoreError> {
        read::entity_history(
            &self.db,
            tenant,
            crate::journal::Entity::Member.as_str(),
            user_name,
            before,
            limit,
        )
        .await?
        .into_iter()
        .map(ChangeEvent::try_from)
        .collect()
    }

    /// Up to `limit` journal entries with id above `after_id` that match `filter`, in id
    /// order, which is commit order (see "Journal order" above): polling from the last id seen
    /// misses nothing.
    ///
    /// # Errors
    /// [`StoreError::Database`], or [`StoreError::Corrupt`] for an unreadable entry.
    pub async fn journal_page(
        &self,
        after_id: i64,
        filter: &JournalFilter,
        limit: u64,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        crate::read::journal_page(&self.db, after_id, filter, limit).await
    }

    /// A page of the change feed: up to `limit` events after journal id `after` (and not
    /// past `until`, when given) that match `filter`, with the cursor to resume from (the
    /// last journal row read, matching or not; `until` when the page ends before `limit`
    /// events). See [the module](crate::feed).
    ///
    /// # Errors
    /// [`StoreError::Database`], or [`StoreError::Corrupt`] for an unreadable entry.
    pub async fn feed_page(
        &self,
        after: i64,
        until: Option<i64>,
        filter: &FeedFilter,
        limit: u64,
    ) -> Result<FeedPage, StoreError> {
        page(&self.db, after, until, filter, limit).await
    }

    /// The newest journal id (0 for an empty journal). Every row up to it is committed, so a
    /// reader bounded by it misses nothing below it (see "Journal order" above).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn journal_head(&self) -> Result<i64, StoreError> {
        crate::webhooks::max_journal_id(&self.db).await
    }

    /// Up to `limit` journal entries with id above `after_id`, in id order.
    ///
    /// # Errors
    /// [`StoreError::Database`], or [`StoreError::Corrupt`] for an unreadable entry.
    pub async fn journal_after(
        &self,
        after_id: i64,
        limit: u64,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        crate::read::journal_after(&self.db, after_id, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_types_or_prefixes() {
        assert_eq!(
            parse_event_types("member, department.added,member"),
            Ok(Some(vec!["member".into(), "department.added".into()]))
        );
        assert_eq!(parse_event_types(" , "), Ok(None));
        assert_eq!(
            parse_event_types("member,dept"),
            Err(UnknownEventType("dept".into()))
        );
        let ts = vec!["member".to_owned(), "department.added".to_owned()];
        assert!(wanted(Some(&ts), "member.removed"));
        assert!(wanted(Some(&ts), "department.added"));
        assert!(!wanted(Some(&ts), "department.removed"));
        assert!(wanted(None, "app.created"));
    }

    #[test]
    fn journal_rows_become_feed_events() {
        let ty = |e, a| event_type(e, a).map(EventType::as_str).ok();
        assert_eq!(ty("authorization", "deleted"), Some("member.deauthorized"));
        assert_eq!(ty("department", "created"), Some("department.added"));
        assert_eq!(ty("member", "authorized"), Some("member.authorized"));
        assert_eq!(ty("plan", "held"), Some("plan.held"));
        assert!(
            matches!(event_type("member", "exploded"), Err(StoreError::Corrupt(m)) if m.contains("exploded")),
            "no event type is invented for a row outside the vocabulary"
        );
        let e = ChangeEvent::try_from(JournalEntry {
            id: 7,
            tenant_id: "t".into(),
            entity: "member".into(),
            entity_key: "alice".into(),
            action: "authorized".into(),
            version: 0,
            data: serde_json::json!({"userName": "alice"}),
            test: false,
            applied_at: 1_000,
        })
        .unwrap();
        let v = serde_json::to_value(&e).unwrap_or_default();
        assert_eq!(
            v,
            serde_json::json!({
                "id": "7", "cursor": "7", "type": "member.authorized", "tenantId": "t",
                "key": "alice", "changedAt": "1970-01-01T00:00:00+00:00",
                "appliedAt": "1970-01-01T00:00:01+00:00", "test": false,
                "data": {"userName": "alice"}
            })
        );
    }
}
