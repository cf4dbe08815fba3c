//! Webhook endpoints and their delivery state (tables `webhook_endpoints` and
//! `webhook_deliveries`, migration `m20261129_000007_webhooks`).
//!
//! The store keeps what must survive a restart and be shared by every dispatcher process:
//! each endpoint's filters, its cursor in the journal, the batch being retried, the retry
//! schedule, what operators see, and the lease. Signing and HTTP live in kitsync-webhooks.
//!
//! - One dispatcher at a time: [`claim`] is a single conditional `UPDATE … RETURNING` that
//!   sets `lease_owner`/`lease_until` only where no live lease is held, so on PostgreSQL (row
//!   lock, re-checked condition) and on SQLite (one writer) exactly one claimer wins. Every
//!   later write of the holder is guarded by `lease_owner`, so a holder whose lease expired
//!   and was taken over cannot overwrite the new holder's progress.
//! - At least once, in order: the cursor moves only when a batch was answered 2xx (or was
//!   empty after filtering). A failed batch's upper bound is kept in `pending_until`, so its
//!   retries carry exactly the same events.
//! - The delivery log keeps the latest [`DELIVERY_LOG_KEEP`] attempts per endpoint; older rows
//!   are deleted in the transaction that records a new one.
use crate::error::StoreError;
use crate::feed::parse_event_types;
use crate::sql::Sql;
use crate::Store;
use kitsync_domain::time::now_ms;
use kitsync_sql::audit::Actor;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, FromQueryResult, QueryResult, TransactionTrait, Value,
};
use serde::Serialize;

/// Attempts kept per endpoint in `webhook_deliveries`.
pub const DELIVERY_LOG_KEEP: i64 = 100;

/// Where an endpoint stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookState {
    /// Delivering (its last attempts may have failed, fewer than the `failing` threshold).
    Active,
    /// Failed at least the threshold number of times in a row and has not succeeded since;
    /// still retried, at the capped interval.
    Failing,
    /// Not delivered until enabled again (its cursor stays where it is).
    Disabled,
}

impl WebhookState {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookState::Active => "active",
            WebhookState::Failing => "failing",
            WebhookState::Disabled => "disabled",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "active" => Ok(WebhookState::Active),
            "failing" => Ok(WebhookState::Failing),
            "disabled" => Ok(WebhookState::Disabled),
            other => Err(StoreError::Corrupt(format!("webhook state `{other}`"))),
        }
    }
}

impl std::fmt::Display for WebhookState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A registered endpoint as operators see it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpoint {
    /// `whk_<12 hex>`.
    pub id: String,
    pub url: String,
    /// Only this tenant's events (`None`: every tenant).
    pub tenant_id: Option<String>,
    /// Only these event types or prefixes (`None`: every type).
    pub types: Option<Vec<String>>,
    pub include_test: bool,
    /// The last journal id delivered or skipped: the next batch starts after it.
    pub cursor: i64,
    /// The last journal id of the batch being retried, if one failed.
    pub pending_until: Option<i64>,
    pub state: WebhookState,
    pub consecutive_failures: i32,
    /// HTTP status of the last attempt (`None`: no answer, or never attempted).
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    /// Unix ms.
    pub last_attempt_at: Option<i64>,
    pub last_success_at: Option<i64>,
    /// When it is next due (Unix ms).
    pub next_attempt_at: i64,
    pub created_at: i64,
}

/// What registering an endpoint takes. The secret arrives sealed (kitsync-webhooks seals it
/// with the master key); the store keeps it as opaque text.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub url: String,
    pub sealed_secret: String,
    pub tenant_id: Option<String>,
    pub types: Option<Vec<String>>,
    pub include_test: bool,
    /// Start after this journal id (`None`: after the newest journal row, so only changes
    /// applied from now on are pushed; `Some(0)`: the whole journal).
    pub after: Option<i64>,
}

/// An endpoint held by one dispatcher, with what delivering needs.
#[derive(Debug, Clone)]
pub struct WebhookLease {
    pub endpoint: WebhookEndpoint,
    /// The sealed signing secret.
    pub sealed_secret: String,
    /// The dispatcher's lease identity.
    pub owner: String,
    /// Unix ms.
    pub lease_until: i64,
}

/// One recorded delivery attempt (a `webhook_deliveries` row: fields are named as its columns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromQueryResult)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDelivery {
    pub id: i64,
    pub endpoint_id: String,
    /// The `webhook-id` header (stable across retries of a batch).
    pub webhook_id: String,
    pub first_event_id: i64,
    pub last_event_id: i64,
    pub events: i32,
    /// 1 for a batch's first attempt, then 2, 3, …
    pub attempt: i32,
    pub status: Option<i32>,
    pub error: Option<String>,
    /// Unix ms.
    pub at: i64,
    pub duration_ms: i64,
}

/// The result of sending one batch, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAttempt {
    pub webhook_id: String,
    pub first_event_id: i64,
    pub last_event_id: i64,
    pub events: i32,
    /// The cursor after the batch (its `nextCursor`).
    pub until: i64,
    /// Which attempt at this batch (1 = first).
    pub attempt: i32,
    /// Unix ms, when the request was sent.
    pub at: i64,
    pub duration_ms: i64,
    pub outcome: AttemptOutcome,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A 2xx answer: the cursor moves to the batch's end.
    Delivered { status: u16 },
    /// Anything else: retried at `retry_at` (Unix ms); the endpoint turns `failing` once
    /// `failing_after` attempts in a row have failed.
    Failed {
        status: Option<u16>,
        error: String,
        retry_at: i64,
        failing_after: u32,
    },
}

const COLUMNS: &str = "id, url, tenant_id, types, include_test, journal_cursor, pending_until, \
     state, consecutive_failures, last_status, last_error, last_attempt_at, last_success_at, \
     next_attempt_at, created_at";

/// A statement for `db`'s backend (see [`Sql`]).
fn sql(db: &impl ConnectionTrait) -> Sql {
    Sql::new(db.get_database_backend())
}

fn endpoint_from_row(row: &QueryResult) -> Result<WebhookEndpoint, StoreError> {
    let types: Option<String> = row.try_get("", "types")?;
    let state: String = row.try_get("", "state")?;
    let id: String = row.try_get("", "id")?;
    Ok(WebhookEndpoint {
        types: match types {
            None => None,
            Some(t) => parse_event_types(&t)
                .map_err(|e| StoreError::Corrupt(format!("webhook {id} types: {e}")))?,
        },
        url: row.try_get("", "url")?,
        tenant_id: row.try_get("", "tenant_id")?,
        include_test: row.try_get("", "include_test")?,
        cursor: row.try_get("", "journal_cursor")?,
        pending_until: row.try_get("", "pending_until")?,
        state: WebhookState::parse(&state)?,
        consecutive_failures: row.try_get("", "consecutive_failures")?,
        last_status: row.try_get("", "last_status")?,
        last_error: row.try_get("", "last_error")?,
        last_attempt_at: row.try_get("", "last_attempt_at")?,
        last_success_at: row.try_get("", "last_success_at")?,
        next_attempt_at: row.try_get("", "next_attempt_at")?,
        created_at: row.try_get("", "created_at")?,
        id,
    })
}

/// A fresh endpoint id, `whk_<12 hex>`. Taken before the row is created when something
/// stored in the row must name it (the signing secret is sealed bound to its endpoint).
#[must_use]
pub fn new_webhook_id() -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("whk_{}", &hex[..12])
}

pub(crate) async fn max_journal_id(db: &impl ConnectionTrait) -> Result<i64, StoreError> {
    let row = db
        .query_one(
            sql(db)
                .push("SELECT COALESCE(MAX(id), 0) FROM journal")
                .take(),
        )
        .await?
        .ok_or_else(|| StoreError::Corrupt("MAX(id) returned no row".into()))?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

pub(crate) async fn create(
    db: &DatabaseConnection,
    id: String,
    new: &NewWebhook,
) -> Result<WebhookEndpoint, StoreError> {
    let cursor = match new.after {
        Some(after) if after >= 0 => after,
        Some(after) => {
            return Err(StoreError::Conflict(format!(
                "a journal cursor is a whole number, got {after}"
            )))
        }
        None => max_journal_id(db).await?,
    };
    let types = new.types.as_ref().filter(|t| !t.is_empty()).cloned();
    let now = now_ms();
    let endpoint = WebhookEndpoint {
        id,
        url: new.url.clone(),
        tenant_id: new.tenant_id.clone().filter(|t| !t.is_empty()),
        types,
        include_test: new.include_test,
        cursor,
        pending_until: None,
        state: WebhookState::Active,
        consecutive_failures: 0,
        last_status: None,
        last_error: None,
        last_attempt_at: None,
        last_success_at: None,
        next_attempt_at: now,
        created_at: now,
    };
    let mut insert = sql(db);
    insert
        .push(
            "INSERT INTO webhook_endpoints (id, url, secret, tenant_id, types, include_test, \
             journal_cursor, state, next_attempt_at, created_at, consecutive_failures) VALUES ",
        )
        .bind_tuple::<_, Value>([
            endpoint.id.clone().into(),
            endpoint.url.clone().into(),
            new.sealed_secret.clone().into(),
            endpoint.tenant_id.clone().into(),
            endpoint.types.as_ref().map(|t| t.join(",")).into(),
            endpoint.include_test.into(),
            endpoint.cursor.into(),
            endpoint.state.as_str().into(),
            endpoint.next_attempt_at.into(),
            endpoint.created_at.into(),
            0_i32.into(),
        ]);
    db.execute(insert.build()).await?;
    Ok(endpoint)
}

pub(crate) async fn list(db: &DatabaseConnection) -> Result<Vec<WebhookEndpoint>, StoreError> {
    let rows = db
        .query_all(
            sql(db)
                .push(&format!(
                    "SELECT {COLUMNS} FROM webhook_endpoints ORDER BY created_at, id"
                ))
                .take(),
        )
        .await?;
    rows.iter().map(endpoint_from_row).collect()
}

pub(crate) async fn get(
    db: &impl ConnectionTrait,
    id: &str,
) -> Result<Option<WebhookEndpoint>, StoreError> {
    db.query_one(
        sql(db)
            .push(&format!(
                "SELECT {COLUMNS} FROM webhook_endpoints WHERE id = "
            ))
            .bind(id)
            .take(),
    )
    .await?
    .as_ref()
    .map(endpoint_from_row)
    .transpose()
}

fn not_found(id: &str) -> StoreError {
    StoreError::NotFound(format!("webhook endpoint {id}"))
}

pub(crate) async fn remove(
    db: &DatabaseConnection,
    actor: &Actor,
    id: &str,
) -> Result<(), StoreError> {
    let txn = db.begin().await?;
    let tenant = get(&txn, id).await?.and_then(|e| e.tenant_id);
    let n = txn
        .execute(
            sql(&txn)
                .push("DELETE FROM webhook_endpoints WHERE id = ")
                .bind(id)
                .take(),
        )
        .await?
        .rows_affected();
    if n == 0 {
        return Err(not_found(id));
    }
    txn.execute(
        sql(&txn)
            .push("DELETE FROM webhook_deliveries WHERE endpoint_id = ")
            .bind(id)
            .take(),
    )
    .await?;
    let detail = serde_json::json!({});
    crate::audit::record(&txn, actor, "webhook.remove", id, tenant.as_deref(), detail).await?;
    txn.commit().await?;
    Ok(())
}

/// Disables (`enabled = false`) or re-enables an endpoint; re-enabling makes it due now
/// (as `active`: it turns `failing` again if its next attempts keep failing).
pub(crate) async fn set_enabled(
    db: &impl ConnectionTrait,
    id: &str,
    enabled: bool,
) -> Result<WebhookEndpoint, StoreError> {
    let state = if enabled {
        "CASE WHEN state = 'disabled' THEN 'active' ELSE state END"
    } else {
        "'disabled'"
    };
    let mut update = sql(db);
    update
        .push("UPDATE webhook_endpoints SET next_attempt_at = ")
        .bind(now_ms())
        .push(", state = ")
        .push(state)
        .push(" WHERE id = ")
        .bind(id);
    let n = db.execute(update.build()).await?.rows_affected();
    if n == 0 {
        return Err(not_found(id));
    }
    get(db, id).await?.ok_or_else(|| not_found(id))
}

/// Makes an endpoint due now and restarts its backoff (the failure count goes back to 0;
/// `failing` stays until a delivery succeeds).
pub(crate) async fn retry_now(
    db: &impl ConnectionTrait,
    id: &str,
) -> Result<WebhookEndpoint, StoreError> {
    let Some(current) = get(db, id).await? else {
        return Err(not_found(id));
    };
    if current.state == WebhookState::Disabled {
        return Err(StoreError::Conflict(format!(
            "webhook endpoint {id} is disabled: enable it first"
        )));
    }
    db.execute(
        sql(db)
            .push("UPDATE webhook_endpoints SET next_attempt_at = ")
            .bind(now_ms())
            .push(", consecutive_failures = 0 WHERE id = ")
            .bind(id)
            .take(),
    )
    .await?;
    get(db, id).await?.ok_or_else(|| not_found(id))
}

/// Ids of endpoints due at `now` that no live lease holds and that have something to send
/// (a batch to retry, or journal rows past their cursor), most overdue first.
pub(crate) async fn due(
    db: &DatabaseConnection,
    now: i64,
    limit: u64,
) -> Result<Vec<String>, StoreError> {
    crate::query_rows(
        db,
        sql(db)
            .push(
                "SELECT id FROM webhook_endpoints \
                 WHERE state <> 'disabled' AND next_attempt_at <= ",
            )
            .bind(now)
            .push(" AND (lease_until IS NULL OR lease_until < ")
            .bind(now)
            .push(
                ") AND (pending_until IS NOT NULL \
                 OR journal_cursor < (SELECT COALESCE(MAX(id), 0) FROM journal)) \
                 ORDER BY next_attempt_at, id LIMIT ",
            )
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .take(),
    )
    .await
}

pub(crate) async fn claim(
    db: &DatabaseConnection,
    id: &str,
    owner: &str,
    now: i64,
    lease_ms: i64,
) -> Result<Option<WebhookLease>, StoreError> {
    let lease_until = now.saturating_add(lease_ms);
    let Some(row) = db
        .query_one(
            sql(db)
                .push("UPDATE webhook_endpoints SET lease_owner = ")
                .bind(owner)
                .push(", lease_until = ")
                .bind(lease_until)
                .push(" WHERE id = ")
                .bind(id)
                .push(" AND state <> 'disabled' AND next_attempt_at <= ")
                .bind(now)
                .push(" AND (lease_until IS NULL OR lease_until < ")
                .bind(now)
                .push(&format!(") RETURNING {COLUMNS}, secret"))
                .take(),
        )
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(WebhookLease {
        endpoint: endpoint_from_row(&row)?,
        sealed_secret: row.try_get("", "secret")?,
        owner: owner.to_owned(),
        lease_until,
    }))
}

/// Moves the cursor over journal rows the endpoint's filter skips (nothing to send) and
/// releases the lease. False when the lease was lost.
pub(crate) async fn skip_to(
    db: &DatabaseConnection,
    lease: &WebhookLease,
    cursor: i64,
) -> Result<bool, StoreError> {
    let n = db
        .execute(
            sql(db)
                .push("UPDATE webhook_endpoints SET journal_cursor = ")
                .bind(cursor)
                .push(", pending_until = NULL, lease_owner = NULL, lease_until = NULL WHERE id = ")
                .bind(lease.endpoint.id.as_str())
                .push(" AND lease_owner = ")
                .bind(lease.owner.as_str())
                .push(" AND journal_cursor <= ")
                .bind(cursor)
                .take(),
        )
        .await?
        .rows_affected();
    Ok(n == 1)
}

/// Gives the lease back without changing anything else (shutdown: the batch is sent again
/// by whoever claims it next).
pub(crate) async fn release(
    db: &DatabaseConnection,
    lease: &WebhookLease,
) -> Result<(), StoreError> {
    db.execute(
        sql(db)
            .push("UPDATE webhook_endpoints SET lease_owner = NULL, lease_until = NULL WHERE id = ")
            .bind(lease.endpoint.id.as_str())
            .push(" AND lease_owner = ")
            .bind(lease.owner.as_str())
            .take(),
    )
    .await?;
    Ok(())
}

/// Records an attempt in one transaction: the endpoint's new state (cursor, schedule,
/// failures, last status/error), the delivery log row and the log's pruning; the lease is
/// released. False (and nothing written) when the lease was lost meanwhile.
pub(crate) async fn record(
    db: &DatabaseConnection,
    lease: &WebhookLease,
    a: &WebhookAttempt,
) -> Result<bool, StoreError> {
    let txn = db.begin().await?;
    let id = lease.endpoint.id.clone();
    let (status, error) = match &a.outcome {
        AttemptOutcome::Delivered { status } => (Some(i32::from(*status)), None),
        AttemptOutcome::Failed { status, error, .. } => {
            (status.map(i32::from), Some(error.clone()))
        }
    };
    let updated = match &a.outcome {
        AttemptOutcome::Delivered { .. } => {
            let mut update = sql(&txn);
            update
                .push("UPDATE webhook_endpoints SET journal_cursor = ")
                .bind(a.until)
                .push(
                    ", pending_until = NULL, \
                     state = CASE WHEN state = 'disabled' THEN state ELSE 'active' END, \
                     consecutive_failures = 0, last_error = NULL, last_status = ",
                )
                .bind(status)
                .push(", last_attempt_at = ")
                .bind(a.at)
                .push(", last_success_at = ")
                .bind(a.at)
                .push(", next_attempt_at = ")
                .bind(a.at)
                .push(", lease_owner = NULL, lease_until = NULL WHERE id = ")
                .bind(id.as_str())
                .push(" AND lease_owner = ")
                .bind(lease.owner.as_str());
            txn.execute(update.build()).await?
        }
        AttemptOutcome::Failed {
            retry_at,
            failing_after,
            ..
        } => {
            let mut update = sql(&txn);
            update
                .push("UPDATE webhook_endpoints SET pending_until = ")
                .bind(a.until)
                .push(
                    ", consecutive_failures = consecutive_failures + 1, \
                     state = CASE WHEN state = 'disabled' THEN state \
                     WHEN consecutive_failures + 1 >= ",
                )
                .bind(i64::from(*failing_after))
                .push(" THEN 'failing' ELSE state END, last_status = ")
                .bind(status)
                .push(", last_error = ")
                .bind(error.clone())
                .push(", last_attempt_at = ")
                .bind(a.at)
                .push(", next_attempt_at = ")
                .bind(*retry_at)
                .push(", lease_owner = NULL, lease_until = NULL WHERE id = ")
                .bind(id.as_str())
                .push(" AND lease_owner = ")
                .bind(lease.owner.as_str());
            txn.execute(update.build()).await?
        }
    }
    .rows_affected();
    if updated == 0 {
        txn.rollback().await?;
        return Ok(false);
    }
    let mut log = sql(&txn);
    log.push(
        "INSERT INTO webhook_deliveries (endpoint_id, webhook_id, first_event_id, \
         last_event_id, events, attempt, status, error, at, duration_ms) VALUES ",
    )
    .bind_tuple::<_, Value>([
        id.clone().into(),
        a.webhook_id.clone().into(),
        a.first_event_id.into(),
        a.last_event_id.into(),
        a.events.into(),
        a.attempt.into(),
        status.into(),
        error.into(),
        a.at.into(),
        a.duration_ms.into(),
    ]);
    txn.execute(log.build()).await?;
    let mut prune = sql(&txn);
    prune
        .push("DELETE FROM webhook_deliveries WHERE endpoint_id = ")
        .bind(id.as_str())
        .push(" AND id <= (SELECT id FROM webhook_deliveries WHERE endpoint_id = ")
        .bind(id.as_str())
        .push(" ORDER BY id DESC LIMIT 1 OFFSET ")
        .bind(DELIVERY_LOG_KEEP)
        .push(")");
    txn.execute(prune.build()).await?;
    txn.commit().await?;
    Ok(true)
}

pub(crate) async fn deliveries(
    db: &DatabaseConnection,
    id: &str,
    limit: u64,
) -> Result<Vec<WebhookDelivery>, StoreError> {
    if get(db, id).await?.is_none() {
        return Err(not_found(id));
    }
    let rows = db
        .query_all(
            sql(db)
                .push(
                    "SELECT id, endpoint_id, webhook_id, first_event_id, last_event_id, events, \
                     attempt, status, error, at, duration_ms \
                     FROM webhook_deliveries WHERE endpoint_id = ",
                )
                .bind(id)
                .push(" ORDER BY id DESC LIMIT ")
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .take(),
        )
        .await?;
    rows.iter()
        .map(|r| Ok(WebhookDelivery::from_query_result(r, "")?))
        .collect()
}

impl Store {
    /// Registers a webhook endpoint (`active`, due now) starting after `new.after`, or after
    /// the newest journal row.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] for a negative cursor; [`StoreError::Database`].
    pub async fn create_webhook(&self, new: &NewWebhook) -> Result<WebhookEndpoint, StoreError> {
        create(&self.db, new_webhook_id(), new).await
    }

    /// [`Store::create_webhook`] under an id taken beforehand with [`new_webhook_id`], for a
    /// secret that is sealed bound to its endpoint before the row exists.
    ///
    /// # Errors
    /// As [`Store::create_webhook`]; [`StoreError::Database`] when the id is already taken.
    pub async fn create_webhook_with_id(
        &self,
        id: &str,
        new: &NewWebhook,
    ) -> Result<WebhookEndpoint, StoreError> {
        create(&self.db, id.to_owned(), new).await
    }

    /// Every webhook endpoint, oldest first (never their secrets).
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`] for an unreadable row.
    pub async fn list_webhooks(&self) -> Result<Vec<WebhookEndpoint>, StoreError> {
        list(&self.db).await
    }

    /// One webhook endpoint.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`] for an unreadable row.
    pub async fn webhook(&self, id: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
        get(&self.db, id).await
    }

    /// Removes a webhook endpoint and its delivery log; the audit log records `actor` doing
    /// it, in the same transaction.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id; [`StoreError::Database`].
    pub async fn remove_webhook(&self, actor: &Actor, id: &str) -> Result<(), StoreError> {
        remove(&self.db, actor, id).await
    }

    /// Disables a webhook endpoint (`enabled = false`: nothing is sent, its cursor stays) or
    /// enables it again (due now); the audit log records `actor` doing it, in the same
    /// transaction.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id; [`StoreError::Database`].
    pub async fn set_webhook_enabled(
        &self,
        actor: &Actor,
        id: &str,
        enabled: bool,
    ) -> Result<WebhookEndpoint, StoreError> {
        let txn = self.db.begin().await?;
        let e = set_enabled(&txn, id, enabled).await?;
        let action = if enabled {
            "webhook.enable"
        } else {
            "webhook.disable"
        };
        let detail = serde_json::json!({ "state": e.state });
        crate::audit::record(&txn, actor, action, id, e.tenant_id.as_deref(), detail).await?;
        txn.commit().await?;
        Ok(e)
    }

    /// Makes a webhook endpoint due now and restarts its backoff; the audit log records
    /// `actor` doing it, in the same transaction.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id, [`StoreError::Conflict`] when it is
    /// disabled; [`StoreError::Database`].
    pub async fn retry_webhook(
        &self,
        actor: &Actor,
        id: &str,
    ) -> Result<WebhookEndpoint, StoreError> {
        let txn = self.db.begin().await?;
        let e = retry_now(&txn, id).await?;
        let detail = serde_json::json!({ "state": e.state });
        crate::audit::record(
            &txn,
            actor,
            "webhook.retry",
            id,
            e.tenant_id.as_deref(),
            detail,
        )
        .await?;
        txn.commit().await?;
        Ok(e)
    }

    /// The latest delivery attempts of an endpoint, newest first.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id; [`StoreError::Database`].
    pub async fn webhook_deliveries(
        &self,
        id: &str,
        limit: u64,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        deliveries(&self.db, id, limit).await
    }

    /// Ids of the endpoints due at `now` (Unix ms) with something to send and no live lease,
    /// most overdue first.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn due_webhooks(&self, now: i64, limit: u64) -> Result<Vec<String>, StoreError> {
        due(&self.db, now, limit).await
    }

    /// Leases endpoint `id` to `owner` for `lease_ms` if it is due and no live lease holds
    /// it; `None` otherwise (another dispatcher has it, or it is not due or disabled).
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Corrupt`] for an unreadable row.
    pub async fn claim_webhook(
        &self,
        id: &str,
        owner: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<Option<WebhookLease>, StoreError> {
        claim(&self.db, id, owner, now, lease_ms).await
    }

    /// Moves a leased endpoint's cursor to `cursor` without sending (the rows up to it do not
    /// match its filter) and releases the lease. False when the lease was lost.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn skip_webhook_to(
        &self,
        lease: &WebhookLease,
        cursor: i64,
    ) -> Result<bool, StoreError> {
        skip_to(&self.db, lease, cursor).await
    }

    /// Records a delivery attempt and releases the lease, in one transaction (see
    /// [`AttemptOutcome`]). False, with nothing written, when the lease was lost.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn record_webhook_attempt(
        &self,
        lease: &WebhookLease,
        attempt: &WebhookAttempt,
    ) -> Result<bool, StoreError> {
        record(&self.db, lease, attempt).await
    }

    /// Releases a lease without recording anything.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn release_webhook(&self, lease: &WebhookLease) -> Result<(), StoreError> {
        release(&self.db, lease).await
    }
}
