//! `POST /api/v1/activity` (scope `activity:write`): batches of up to 1 000 login/use events
//! of tenants' users, durable before the answer.
//!
//! The batch is judged event by event: an event that is malformed, in the future (beyond
//! [`MAX_SKEW_MS`]), older than the raw-event retention, or for another tenant than a
//! tenant-bound token's is *rejected* with a reason naming the field; every other event is
//! *accepted* and stored in one transaction. A re-sent batch is accepted again and changes
//! nothing (`duplicates`); events naming no live member of a live tenant are stored all the
//! same (the authorisation may still be on its way) and reported as `unmatched`.
//! Only a body that is not `{"events":[…]}` at all, or holds over 1 000 events, is a 400.
use crate::auth::Caller;
use crate::error::ApiError;
use crate::ApiState;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use kitsync_domain::Scope;
use kitsync_store::{ActivityEvent, ActivityKind, DAY_MS};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use utoipa::ToSchema;

/// Events per batch, at most.
pub const MAX_EVENTS: usize = 1000;
/// Longest `tenantId` / `userName`: the Kit's own limit for both.
pub const MAX_ID_CHARS: usize = 64;
/// How far in the future an event's `at` may be (clock skew between the ISV's app and us).
pub const MAX_SKEW_MS: i64 = 5 * 60_000;

// The body's schema. `post` reads the body as JSON and judges each event by the rules of
// `event` (which these types describe), so that one bad event is rejected alone instead of
// failing the batch; tests/openapi.rs checks the limits below against the constants.

/// A batch of activity events.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documentation only
pub struct ActivityBatch {
    /// At most 1 000 events.
    #[schema(max_items = 1000)]
    events: Vec<ActivityIn>,
}

/// One login or use of a tenant's user.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)] // documentation only
pub struct ActivityIn {
    /// The Kit `tenantId` (1–64 characters, no control characters; surrounding blanks are
    /// trimmed).
    #[schema(min_length = 1, max_length = 64)]
    tenant_id: String,
    /// The Kit `userName` (1–64 characters, no control characters; surrounding blanks are
    /// trimmed).
    #[schema(min_length = 1, max_length = 64)]
    user_name: String,
    kind: ActivityKindName,
    /// When it happened (RFC 3339): at most 5 minutes ahead of the server's clock, and
    /// within `store.activity_retention_days` (400) before it.
    #[schema(format = DateTime)]
    at: String,
}

/// What the user did.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // documentation only
pub enum ActivityKindName {
    Login,
    Use,
}

/// An accepted event that names no live member of a live tenant (stored all the same: the
/// authorisation may still be on its way).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Unmatched {
    /// Its position in the request's `events`.
    index: usize,
    tenant_id: String,
    user_name: String,
}

/// An event that was not stored, and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rejected {
    /// Its position in the request's `events`.
    index: usize,
    /// Names the field at fault (`events[3].at: … is in the future …`).
    reason: String,
}

/// What became of a batch: every event is either accepted (stored, or already stored) or
/// rejected.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivityAnswer {
    /// Events stored or already stored (everything not rejected).
    accepted: usize,
    /// Of those, stored by this request.
    new: usize,
    /// Of those, already stored (a re-sent event).
    duplicates: usize,
    unmatched: Vec<Unmatched>,
    rejected: Vec<Rejected>,
}

/// Validates one event; the reason names the field at fault.
fn event(
    i: usize,
    v: &Value,
    now_ms: i64,
    oldest_ms: i64,
    bound: Option<&str>,
) -> Result<ActivityEvent, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("events[{i}]: must be an object"))?;
    let text = |name: &str| -> Result<String, String> {
        match obj.get(name) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
            Some(Value::String(_)) => Err(format!("events[{i}].{name}: must not be empty")),
            Some(_) => Err(format!("events[{i}].{name}: must be a string")),
            None => Err(format!("events[{i}].{name}: is required")),
        }
    };
    // Kit identifiers are at most 64 characters; anything else names no member, and could
    // not be stored (PostgreSQL refuses U+0000 in text and over-long index keys).
    let kit_id = |name: &str| -> Result<String, String> {
        let v = text(name)?;
        if v.chars().count() > MAX_ID_CHARS {
            return Err(format!(
                "events[{i}].{name}: at most {MAX_ID_CHARS} characters (a Kit identifier)"
            ));
        }
        if v.chars().any(char::is_control) {
            return Err(format!(
                "events[{i}].{name}: must not contain control characters"
            ));
        }
        Ok(v)
    };
    let tenant_id = kit_id("tenantId")?;
    let user_name = kit_id("userName")?;
    let kind = match text("kind")?.as_str() {
        "login" => ActivityKind::Login,
        "use" => ActivityKind::Use,
        other => {
            return Err(format!(
                "events[{i}].kind: must be \"login\" or \"use\", got \"{other}\""
            ))
        }
    };
    let at = text("at")?;
    let at_ms = chrono::DateTime::parse_from_rfc3339(&at)
        .map_err(|e| format!("events[{i}].at: not an RFC 3339 time (`{at}`): {e}"))?
        .timestamp_millis();
    if at_ms > now_ms + MAX_SKEW_MS {
        return Err(format!(
            "events[{i}].at: {at} is in the future (at most 5 minutes ahead is accepted)"
        ));
    }
    if at_ms < oldest_ms {
        return Err(format!(
            "events[{i}].at: {at} is older than the retention window ({} days)",
            (now_ms - oldest_ms) / DAY_MS
        ));
    }
    if let Some(b) = bound.filter(|b| *b != tenant_id) {
        return Err(format!(
            "events[{i}].tenantId: this token is bound to tenant {b}, not {tenant_id}"
        ));
    }
    Ok(ActivityEvent {
        tenant_id,
        user_name,
        kind,
        at_ms,
    })
}

/// `POST /api/v1/activity`.
///
/// # Errors
/// 401/403 per [`Caller`] (decided before any of the body is read); 413/408 for a body over
/// `api.body_limit_bytes` or too slow; 400 naming `events` when the body is not
/// `{"events":[…]}` or holds more than 1 000 events; 500 when the database fails (then
/// nothing is stored).
#[utoipa::path(
    post,
    path = "/api/v1/activity",
    operation_id = "postActivity",
    tag = "activity",
    summary = "Record a batch of logins and uses of tenants' users",
    description = "Scope `activity:write`; a tenant-bound token only for its own tenant's \
                   events (others are rejected). The accepted events are stored in one \
                   transaction before the answer; a re-sent batch counts once \
                   (`duplicates`). Each event is judged alone: a malformed one is listed in \
                   `rejected` with its reason, and the rest are stored. Only a body that is \
                   not `{\"events\":[…]}` or holds over 1 000 events is a 400.",
    request_body(
        content = ActivityBatch,
        content_type = "application/json",
        description = "Up to 1 000 events (and at most `api.body_limit_bytes`, 1 MiB).",
    ),
    responses(
        (status = 200, description = "Stored; what became of each event.", body = ActivityAnswer),
        crate::openapi::BodyErrors,
        crate::openapi::ReadErrors,
    ),
    security(("bearer" = ["activity:write"])),
)]
pub async fn post(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ActivityAnswer>, ApiError> {
    caller.require(Scope::ActivityWrite, caller.0.tenant_id.as_deref())?;
    let body = crate::limits::read_body(&headers, body, &state.settings).await?;
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_param("body", format!("not JSON: {e}")))?;
    let list = doc
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad_param("events", "the body must be {\"events\": [...]}"))?;
    if list.len() > MAX_EVENTS {
        return Err(ApiError::bad_param(
            "events",
            format!("{} events: at most {MAX_EVENTS} per batch", list.len()),
        ));
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let retention = i64::from(state.store.settings().activity_retention_days);
    let oldest_ms = now_ms - retention * DAY_MS;
    let bound = caller.0.tenant_id.as_deref();
    let mut good: Vec<(usize, ActivityEvent)> = Vec::with_capacity(list.len());
    let mut rejected = Vec::new();
    for (i, v) in list.iter().enumerate() {
        match event(i, v, now_ms, oldest_ms, bound) {
            Ok(e) => good.push((i, e)),
            Err(reason) => rejected.push(Rejected { index: i, reason }),
        }
    }
    let events: Vec<ActivityEvent> = good.iter().map(|(_, e)| e.clone()).collect();
    let recorded = state.store.record_activity(&events).await?;
    let unmatched = recorded
        .unmatched
        .iter()
        .map(|&k| {
            let (index, e) = &good[k];
            Unmatched {
                index: *index,
                tenant_id: e.tenant_id.clone(),
                user_name: e.user_name.clone(),
            }
        })
        .collect();
    Ok(Json(ActivityAnswer {
        accepted: events.len(),
        new: recorded.new,
        duplicates: recorded.duplicates,
        unmatched,
        rejected,
    }))
}
