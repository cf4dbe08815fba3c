//! Dead letters: callbacks that could not be applied. List, one with its body (the app's
//! `clientSecret` redacted), replay one or all.
use super::{before, newest_first, numeric_id, operator, time};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::page::{Page, PageQuery};
use crate::ApiState;
use axum::extract::State;
use axum::Json;
use kitsync_domain::QueuedCallback;
use kitsync_queue::{DeadLetter, DeadLetters, ReplayOutcome};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

const KIND: &str = "deadletter";

/// A callback that could not be applied, and why.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterItem {
    id: i64,
    message_id: String,
    /// The callback's kind (`tenantSync`, `applicationSync`, `authSync`, `singleOrgSync`,
    /// `allOrgSync`); `null` when the body
    /// does not decode.
    #[schema(required = true)]
    kind: Option<String>,
    /// The tenant it concerns; `null` when the body does not decode.
    #[schema(required = true)]
    tenant_id: Option<String>,
    /// Failed attempts, the last one included.
    attempts: u32,
    /// Why the last attempt failed.
    error: String,
    /// `embedded`, `amqp` (dead-lettered by a worker) or `amqp-dlx` (by the broker).
    source: String,
    /// When it was first queued, when known.
    #[schema(required = true)]
    enqueued_at: Option<String>,
    dead_at: String,
    /// When it was put back on the queue; `null` while pending.
    #[schema(required = true)]
    replayed_at: Option<String>,
}

impl DeadLetterItem {
    fn of(d: &DeadLetter) -> Self {
        let decoded = QueuedCallback::from_bytes(&d.body).ok();
        DeadLetterItem {
            id: d.id,
            message_id: d.message_id.clone(),
            kind: decoded.as_ref().map(|q| q.command.kind().to_string()),
            tenant_id: decoded.map(|q| q.command.tenant_id().to_owned()),
            attempts: d.attempts,
            error: d.error.clone(),
            source: d.source.clone(),
            enqueued_at: d.enqueued_at.map(time),
            dead_at: time(d.dead_at),
            replayed_at: d.replayed_at.map(time),
        }
    }
}

/// One dead letter with its body.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterBody {
    #[serde(flatten)]
    item: DeadLetterItem,
    /// The queued message as JSON, every `clientSecret` replaced by `"[redacted]"`; `null`
    /// when it is not JSON (then see `bodyText`).
    #[schema(required = true, value_type = Option<Object>)]
    body: Option<Value>,
    /// A body that is not JSON, as text (invalid UTF-8 replaced), cut at 64 KiB; `null`
    /// otherwise.
    #[schema(required = true)]
    body_text: Option<String>,
}

/// Longest non-JSON body returned, in bytes.
const MAX_BODY_TEXT: usize = 64 * 1024;

/// Replaces the value of every `clientSecret` member, at any depth.
fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                if k.eq_ignore_ascii_case("clientSecret") {
                    *item = Value::from("[redacted]");
                } else {
                    redact(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// `?state=`: which dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeadLetterState {
    /// Not replayed yet.
    Pending,
    Replayed,
    All,
}

/// `?state=&cursor=&limit=`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// `pending` (the default: not replayed yet), `replayed` or `all`.
    #[serde(default)]
    #[param(inline, value_type = DeadLetterState)]
    state: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    page: PageQuery,
}

/// The `{deadLetterId}` of a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DeadLetterPath {
    /// The dead letter's id.
    #[param(rename = "deadLetterId", value_type = i64, minimum = 1)]
    #[serde(rename = "deadLetterId")]
    dead_letter_id: String,
}

/// What replaying one did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Replayed {
    /// The dead letter, now marked replayed.
    dead_letter: DeadLetterItem,
}

/// What replaying all did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayedAll {
    /// Dead letters put back on the queue.
    replayed: u64,
}

fn dead_letters(state: &ApiState) -> Result<&DeadLetters, ApiError> {
    state.dead_letters.as_ref().ok_or_else(|| {
        ApiError::NotFound("this process serves no queue: dead letters are not served here".into())
    })
}

/// `GET /admin/v1/dead-letters`.
///
/// # Errors
/// 401/403 per [`operator`]; 400 naming `state`, `cursor` or `limit`.
#[utoipa::path(
    get,
    path = "/admin/v1/dead-letters",
    operation_id = "adminListDeadLetters",
    tag = "admin",
    summary = "Callbacks that could not be applied, newest first",
    description = "Scope `admin`, a token bound to no tenant.",
    params(DeadLetterQuery, PageQuery),
    responses(
        (status = 200, description = "A page of dead letters.", body = Page<DeadLetterItem>),
        crate::openapi::AdminErrors,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(q): Query<DeadLetterQuery>,
) -> Result<Json<Page<DeadLetterItem>>, ApiError> {
    operator(&caller)?;
    let replayed = match q.state.as_deref() {
        None | Some("" | "pending") => Some(false),
        Some("replayed") => Some(true),
        Some("all") => None,
        Some(other) => {
            return Err(ApiError::bad_param(
                "state",
                format!("must be `pending`, `replayed` or `all`, got `{other}`"),
            ))
        }
    };
    let limit = q.page.limit()?;
    let before = before(&q.page, KIND)?;
    let rows = dead_letters(&state)?
        .page(replayed, before, limit + 1)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let items = rows.iter().map(DeadLetterItem::of).collect();
    Ok(Json(newest_first(
        items,
        limit,
        KIND,
        |d: &DeadLetterItem| d.id,
    )))
}

async fn one(state: &ApiState, id: i64) -> Result<DeadLetter, ApiError> {
    dead_letters(state)?
        .get(id)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound(format!("dead letter {id} not found")))
}

/// `GET /admin/v1/dead-letters/{deadLetterId}`.
///
/// # Errors
/// 401/403 per [`operator`]; 400 for a malformed id; 404 for an unknown one.
#[utoipa::path(
    get,
    path = "/admin/v1/dead-letters/{deadLetterId}",
    operation_id = "adminGetDeadLetter",
    tag = "admin",
    summary = "One dead letter with its body (`clientSecret` redacted)",
    description = "Scope `admin`, a token bound to no tenant.",
    params(DeadLetterPath),
    responses(
        (status = 200, description = "The dead letter.", body = DeadLetterBody),
        crate::openapi::AdminErrors,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn get(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(path): Path<DeadLetterPath>,
) -> Result<Json<DeadLetterBody>, ApiError> {
    operator(&caller)?;
    let id = numeric_id(&path.dead_letter_id, "deadLetterId")?;
    let d = one(&state, id).await?;
    let (body, body_text) = match serde_json::from_slice::<Value>(&d.body) {
        Ok(mut v) => {
            redact(&mut v);
            (Some(v), None)
        }
        Err(_) => {
            let text = d.body_text();
            let mut cut = text.len().min(MAX_BODY_TEXT);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            (None, Some(text[..cut].to_owned()))
        }
    };
    Ok(Json(DeadLetterBody {
        item: DeadLetterItem::of(&d),
        body,
        body_text,
    }))
}

/// `POST /admin/v1/dead-letters/{deadLetterId}/replay`.
///
/// # Errors
/// 401/403 per [`operator`]; 404 for an unknown id; 409 when it was replayed already.
#[utoipa::path(
    post,
    path = "/admin/v1/dead-letters/{deadLetterId}/replay",
    operation_id = "adminReplayDeadLetter",
    tag = "admin",
    summary = "Put one dead letter back on the queue",
    description = "Scope `admin`, a token bound to no tenant. Published again under its \
                   message id with its attempts reset, then marked replayed; two operators \
                   replaying at once publish it once. Audited.",
    params(DeadLetterPath),
    responses(
        (status = 200, description = "Replayed.", body = Replayed),
        crate::openapi::AdminErrors,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn replay(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(path): Path<DeadLetterPath>,
) -> Result<Json<Replayed>, ApiError> {
    let actor = operator(&caller)?;
    let id = numeric_id(&path.dead_letter_id, "deadLetterId")?;
    let outcome = dead_letters(&state)?
        .replay(&actor, id)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    match outcome {
        ReplayOutcome::Replayed => Ok(Json(Replayed {
            dead_letter: DeadLetterItem::of(&one(&state, id).await?),
        })),
        ReplayOutcome::NotFound => Err(ApiError::NotFound(format!("dead letter {id} not found"))),
        ReplayOutcome::AlreadyReplayed => Err(ApiError::Conflict(format!(
            "dead letter {id} was replayed already; replaying it again would apply it twice"
        ))),
    }
}

/// `POST /admin/v1/dead-letters/replay`.
///
/// # Errors
/// 401/403 per [`operator`]; 500 when the queue or database fails (those replayed so far
/// stay replayed).
#[utoipa::path(
    post,
    path = "/admin/v1/dead-letters/replay",
    operation_id = "adminReplayAllDeadLetters",
    tag = "admin",
    summary = "Put every pending dead letter back on the queue",
    description = "Scope `admin`, a token bound to no tenant. Oldest first, each as the \
                   replay of one (and audited alike).",
    responses(
        (status = 200, description = "How many were replayed.", body = ReplayedAll),
        crate::openapi::AdminErrors,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn replay_all(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
) -> Result<Json<ReplayedAll>, ApiError> {
    let actor = operator(&caller)?;
    let replayed = dead_letters(&state)?
        .replay_all(&actor)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(ReplayedAll { replayed }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_secret_is_redacted_at_any_depth() {
        let mut v = serde_json::json!({
            "type": "app", "clientSecret": "s1",
            "nested": [{"ClientSecret": "s2", "keep": "k"}],
        });
        redact(&mut v);
        assert_eq!(v["clientSecret"], "[redacted]");
        assert_eq!(v["nested"][0]["ClientSecret"], "[redacted]");
        assert_eq!(v["nested"][0]["keep"], "k");
        assert!(!v.to_string().contains("s1") && !v.to_string().contains("s2"));
    }
}
