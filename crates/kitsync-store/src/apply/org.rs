//! singleOrgSync and allOrgSync, and the full-sync plans held by the mass-deletion guard.
use super::{json, tombstone_action, ActionFn, Change, Current, Cx, Tally};
use crate::entity::org_plans;
use crate::error::StoreError;
use crate::journal::{Action, Entity, PlanStatus};
use crate::model::Outcome;
use crate::tables::{DepartmentRow, Update};
use kitsync_domain::decide::{org_fingerprint, plan_full_sync, ExistingOrg, FullSyncPlan, Rank};
use kitsync_domain::{FullOrgSnapshot, Op, OrgChange, OrgInfo};
use sea_orm::{DatabaseTransaction, EntityTrait};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};

/// Read back with the ranks, to name what a rewrite did (`renamed`, `moved`).
const EXTRA: &[&str] = &["org_name", "parent_code"];

pub(super) async fn apply_incremental(
    cx: &mut Cx<'_>,
    c: &OrgChange,
) -> Result<Outcome, StoreError> {
    let t = c.tenant_id.as_str();
    let v = c.version.millis();
    let cutoff = cx.marks(t)?.department_cutoff();
    let current = cx
        .load_current::<DepartmentRow>(&[("tenant_id", t)], Some(&[c.org_code.as_str()]), EXTRA)
        .await?;
    let info = OrgInfo {
        org_code: c.org_code.clone(),
        org_name: c.org_name.clone(),
        parent_code: c.parent_code.clone(),
    };
    let (update, change, action): (_, _, ActionFn<DepartmentRow>) = match c.op {
        Op::Upsert => (
            Update::Upsert,
            upsert_change(t, &info, v, c.test, cx.now),
            department_action,
        ),
        Op::Delete => (
            Update::Tombstone,
            tombstone_change(t, &info, v, c.test, cx.now),
            tombstone_action,
        ),
    };
    let mut tally = Tally::default();
    let written = cx
        .write_changes(update, cutoff, &current, vec![change], action, &mut tally)
        .await?;
    cx.journal_written(Entity::Department, t, written);
    Ok(tally.outcome())
}

/// Why a full snapshot is being applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Mode<'a> {
    /// From the marketplace: the mass-deletion guard holds a snapshot that would delete
    /// more than this share of the live departments.
    Callback { guard: f64 },
    /// An operator approved held plan `id`: applied whatever it deletes. `by` says who
    /// ([`kitsync_sql::audit::Actor::describe`]).
    Approve { id: i64, by: &'a str },
}

pub(super) async fn apply_full(
    cx: &mut Cx<'_>,
    snapshot: &FullOrgSnapshot,
    mode: Mode<'_>,
) -> Result<Outcome, StoreError> {
    let snapshot = dedup(snapshot);
    let t = snapshot.tenant_id.as_str();
    let v = snapshot.version.millis();
    let marks = cx.marks(t)?;
    let cutoff = marks.department_cutoff();
    let current = cx
        .load_current::<DepartmentRow>(&[("tenant_id", t)], None, EXTRA)
        .await?;
    let existing: Vec<ExistingOrg> = current
        .iter()
        .map(|(code, c)| ExistingOrg {
            org_code: code.clone(),
            rank: c.rank,
        })
        .collect();
    let plan = plan_full_sync(&existing, &snapshot, cutoff);
    if plan.superseded {
        if let Mode::Approve { id, .. } = mode {
            let reason = "a later snapshot or tenant delete already covers it";
            set_status(cx, t, &[id], PlanStatus::Superseded, reason).await?;
        }
        return Ok(Outcome::Superseded);
    }

    let mut confirmed: Vec<i64> = Vec::new();
    let guard = match mode {
        Mode::Callback { guard } => Some(guard),
        Mode::Approve { .. } => None,
    };
    if let Some(guard) = guard.filter(|g| plan.exceeds_guard(*g)) {
        let text = serde_json::to_string(&snapshot)
            .map_err(|e| StoreError::Corrupt(format!("snapshot to JSON: {e}")))?;
        if is_known_plan(cx, t, v, &text).await? {
            // The same snapshot delivered again: it is already a plan (whatever became of it).
            return Ok(Outcome::Duplicate);
        }
        let held = held_plans(cx, t).await?;
        let deleting: HashSet<&str> = plan.deletes.iter().map(String::as_str).collect();
        confirmed = held
            .iter()
            .filter(|h| h.version < v && h.deletes.iter().all(|d| deleting.contains(d.as_str())))
            .map(|h| h.id)
            .collect();
        if confirmed.is_empty() {
            let held_plan = Held {
                text: &text,
                plan: &plan,
                guard,
                org_count: snapshot.orgs.len(),
            };
            return hold(cx, t, v, held_plan, &held).await;
        }
    }

    let mut tally = Tally::default();
    let upserts: Vec<Change<DepartmentRow>> = plan
        .upserts
        .iter()
        .map(|o| upsert_change(t, o, v, snapshot.test, cx.now))
        .collect();
    // The snapshot removes what is older than itself, so its tombstones rank just below it,
    // at `v - 1`: an incremental change stamped exactly `v` then wins whether it arrived
    // before the snapshot (kept: not older) or after (written over the tombstone). Ranks still
    // only rise: the plan deletes live rows with versions below `v`.
    let mut deletes = Vec::with_capacity(plan.deletes.len());
    for code in &plan.deletes {
        let stored = current.get(code);
        let info = OrgInfo {
            org_code: code.clone(),
            org_name: stored.map(stored_name).transpose()?.unwrap_or_default(),
            parent_code: stored.map(stored_parent).transpose()?.flatten(),
        };
        deletes.push(tombstone_change(t, &info, v - 1, snapshot.test, cx.now));
    }
    // The upserts first, then the tombstones.
    let writes: [(_, _, _, ActionFn<DepartmentRow>); 2] = [
        (Update::Upsert, cutoff, upserts, department_action),
        (Update::Tombstone, i64::MIN, deletes, tombstone_action),
    ];
    for (update, cutoff, changes, action) in writes {
        let written = cx
            .write_changes(update, cutoff, &current, changes, action, &mut tally)
            .await?;
        cx.journal_written(Entity::Department, t, written);
    }
    if v > marks.snapshot {
        cx.set_snapshot(t, v).await?;
        tally.moved = true;
    }
    if !confirmed.is_empty() {
        let reason =
            format!("confirmed by the snapshot of version {v}, which deletes the same departments");
        set_status(cx, t, &confirmed, PlanStatus::Confirmed, &reason).await?;
    }
    if let Mode::Approve { id, by } = mode {
        let reason = format!("approved by {by}");
        set_status(cx, t, &[id], PlanStatus::Approved, &reason).await?;
    }
    let reason = format!("the snapshot of version {v} was applied");
    supersede_held(cx, t, v, reason).await?;
    Ok(tally.outcome())
}

/// A snapshot listing an org code twice: the later entry wins (as the parser does).
fn dedup(s: &FullOrgSnapshot) -> FullOrgSnapshot {
    let mut at: HashMap<&str, usize> = HashMap::with_capacity(s.orgs.len());
    let mut orgs: Vec<OrgInfo> = Vec::with_capacity(s.orgs.len());
    for o in &s.orgs {
        match at.get(o.org_code.as_str()) {
            Some(&i) => orgs[i] = o.clone(),
            None => {
                at.insert(o.org_code.as_str(), orgs.len());
                orgs.push(o.clone());
            }
        }
    }
    FullOrgSnapshot {
        tenant_id: s.tenant_id.clone(),
        instance_id: s.instance_id.clone(),
        orgs,
        test: s.test,
        version: s.version,
    }
}

fn stored_name(c: &Current) -> Result<String, StoreError> {
    c.get::<DepartmentRow, _>("org_name")
}

fn stored_parent(c: &Current) -> Result<Option<String>, StoreError> {
    c.get::<DepartmentRow, _>("parent_code")
}

/// `renamed`/`moved` when exactly that changed on a live department.
fn department_action(
    cur: Option<&Current>,
    c: &Change<DepartmentRow>,
) -> Result<Action, StoreError> {
    let Some(cur) = cur.filter(|cur| !cur.deleted) else {
        return Ok(Action::Created);
    };
    let name = stored_name(cur)?;
    let parent = stored_parent(cur)?;
    let renamed = name != c.row.org_name;
    let moved = parent != c.row.parent_code;
    Ok(match (renamed, moved) {
        (true, false) => Action::Renamed,
        (false, true) => Action::Moved,
        _ => Action::Updated,
    })
}

fn upsert_change(t: &str, o: &OrgInfo, v: i64, test: bool, now: i64) -> Change<DepartmentRow> {
    let rank = Rank::upsert(v, org_fingerprint(&o.org_name, o.parent_code.as_deref()));
    change(t, o, false, rank, test, now)
}

fn tombstone_change(t: &str, o: &OrgInfo, v: i64, test: bool, now: i64) -> Change<DepartmentRow> {
    change(t, o, true, Rank::delete(v), test, now)
}

fn change(
    t: &str,
    o: &OrgInfo,
    deleted: bool,
    rank: Rank,
    test: bool,
    now: i64,
) -> Change<DepartmentRow> {
    let data = if deleted {
        json(&DepartmentData {
            org_code: &o.org_code,
            org_name: None,
            parent_code: None,
            deleted,
        })
    } else {
        json(&DepartmentData {
            org_code: &o.org_code,
            org_name: Some(&o.org_name),
            parent_code: Some(o.parent_code.as_deref()),
            deleted,
        })
    };
    Change {
        row: DepartmentRow {
            tenant_id: t.to_owned(),
            org_code: o.org_code.clone(),
            org_name: o.org_name.clone(),
            parent_code: o.parent_code.clone(),
            test,
            deleted,
            version: rank.version,
            fp: rank.fp,
            updated_at: now,
        },
        journal_key: o.org_code.clone(),
        data,
    }
}

/// Journal payload of a department (a tombstone carries only its code).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DepartmentData<'a> {
    org_code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    org_name: Option<&'a str>,
    /// `Some(None)` is a root department (`"parentCode": null`).
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_code: Option<Option<&'a str>>,
    deleted: bool,
}

struct HeldPlan {
    id: i64,
    version: i64,
    deletes: Vec<String>,
}

async fn held_plans(cx: &Cx<'_>, t: &str) -> Result<Vec<HeldPlan>, StoreError> {
    let mut sql = cx.sql();
    sql.push("SELECT id, version, deletes FROM org_plans WHERE tenant_id = ")
        .bind(t)
        .push(" AND status = ")
        .bind(PlanStatus::Held.as_str())
        .push(" ORDER BY id");
    let mut out = Vec::new();
    for r in cx.query(sql).await? {
        let id: i64 = r.try_get_by_index(0)?;
        let deletes: String = r.try_get_by_index(2)?;
        out.push(HeldPlan {
            id,
            version: r.try_get_by_index(1)?,
            deletes: serde_json::from_str(&deletes)
                .map_err(|e| StoreError::Corrupt(format!("plan {id}: deletes: {e}")))?,
        });
    }
    Ok(out)
}

async fn is_known_plan(cx: &Cx<'_>, t: &str, v: i64, text: &str) -> Result<bool, StoreError> {
    let mut sql = cx.sql();
    sql.push("SELECT id FROM org_plans WHERE tenant_id = ")
        .bind(t)
        .push(" AND version = ")
        .bind(v)
        .push(" AND snapshot = ")
        .bind(text);
    Ok(!cx.query(sql).await?.is_empty())
}

/// Stores the snapshot as a plan instead of applying it. It is `held`, and supersedes older
/// held plans — unless a newer snapshot is already held, which supersedes this one at once.
#[allow(clippy::too_many_arguments)]
/// A snapshot the guard holds: its JSON, its plan, the guard it exceeded, its size.
struct Held<'a> {
    text: &'a str,
    plan: &'a FullSyncPlan,
    guard: f64,
    org_count: usize,
}

async fn hold(
    cx: &mut Cx<'_>,
    t: &str,
    v: i64,
    h: Held<'_>,
    held: &[HeldPlan],
) -> Result<Outcome, StoreError> {
    let Held {
        text,
        plan,
        org_count,
        ..
    } = h;
    let newer = held.iter().filter(|h| h.version > v).map(|h| h.id).max();
    let (status, reason) = match newer {
        Some(id) => (
            PlanStatus::Superseded,
            format!("plan {id} holds a newer snapshot"),
        ),
        None => (
            PlanStatus::Held,
            format!(
                "would delete {} of {} live departments (more than {}%)",
                plan.deletes.len(),
                plan.live_before,
                h.guard * 100.0
            ),
        ),
    };
    let deletes = serde_json::to_string(&plan.deletes)
        .map_err(|e| StoreError::Corrupt(format!("deletes to JSON: {e}")))?;
    let mut sql = cx.sql();
    sql.push(
        "INSERT INTO org_plans (tenant_id, version, snapshot, deletes, delete_count, live_before, \
         org_count, status, created_at, decided_at, reason) VALUES ",
    )
    .bind_tuple::<_, sea_orm::Value>([
        t.into(),
        v.into(),
        text.into(),
        deletes.into(),
        to_i32(plan.deletes.len()).into(),
        to_i32(plan.live_before).into(),
        to_i32(org_count).into(),
        status.as_str().into(),
        cx.now.into(),
        newer.map(|_| cx.now).into(),
        reason.clone().into(),
    ])
    .push(" RETURNING id");
    let id: i64 = match cx.query(sql).await?.first() {
        Some(r) => r.try_get_by_index(0)?,
        None => return Err(StoreError::Corrupt("plan insert returned no id".into())),
    };
    let data = plan_data(id, status, plan.deletes.len(), plan.live_before, &reason);
    cx.journal(
        t,
        Entity::Plan,
        id.to_string(),
        status.action(),
        v,
        data,
        false,
    );
    tracing::warn!(tenant = %t, plan = id, deletes = plan.deletes.len(), live = plan.live_before, status = status.as_str(), "full department sync held by the mass-deletion guard");
    if newer.is_some() {
        return Ok(Outcome::Superseded);
    }
    let reason = format!("plan {id} holds a newer snapshot");
    supersede_held(cx, t, v - 1, reason).await?;
    Ok(Outcome::Held { plan_id: id })
}

/// Marks held plans of the tenant with version at or below `v` as superseded.
pub(super) async fn supersede_held(
    cx: &mut Cx<'_>,
    t: &str,
    v: i64,
    reason: String,
) -> Result<(), StoreError> {
    let mut sql = cx.sql();
    sql.push("UPDATE org_plans SET status = ")
        .bind(PlanStatus::Superseded.as_str())
        .push(", decided_at = ")
        .bind(cx.now)
        .push(", reason = ")
        .bind(reason.clone())
        .push(" WHERE tenant_id = ")
        .bind(t)
        .push(" AND status = ")
        .bind(PlanStatus::Held.as_str())
        .push(" AND version <= ")
        .bind(v)
        .push(" RETURNING id, version, delete_count, live_before");
    let mut rows = Vec::new();
    for r in cx.query(sql).await? {
        rows.push((
            r.try_get_by_index::<i64>(0)?,
            r.try_get_by_index::<i64>(1)?,
            r.try_get_by_index::<i32>(2)?,
            r.try_get_by_index::<i32>(3)?,
        ));
    }
    rows.sort();
    for (id, version, dels, live) in rows {
        let data = plan_data(
            id,
            PlanStatus::Superseded,
            dels as usize,
            live as usize,
            &reason,
        );
        cx.journal(
            t,
            Entity::Plan,
            id.to_string(),
            Action::Superseded,
            version,
            data,
            false,
        );
    }
    Ok(())
}

async fn set_status(
    cx: &mut Cx<'_>,
    t: &str,
    ids: &[i64],
    status: PlanStatus,
    reason: &str,
) -> Result<(), StoreError> {
    for &id in ids {
        let mut sql = cx.sql();
        sql.push("UPDATE org_plans SET status = ")
            .bind(status.as_str())
            .push(", decided_at = ")
            .bind(cx.now)
            .push(", reason = ")
            .bind(reason)
            .push(" WHERE id = ")
            .bind(id)
            .push(" RETURNING version, delete_count, live_before");
        if let Some(r) = cx.query(sql).await?.first() {
            let version: i64 = r.try_get_by_index(0)?;
            let dels: i32 = r.try_get_by_index(1)?;
            let live: i32 = r.try_get_by_index(2)?;
            let data = plan_data(id, status, dels as usize, live as usize, reason);
            cx.journal(
                t,
                Entity::Plan,
                id.to_string(),
                status.action(),
                version,
                data,
                false,
            );
        }
    }
    Ok(())
}

fn plan_data(id: i64, status: PlanStatus, deletes: usize, live: usize, reason: &str) -> String {
    serde_json::json!({
        "planId": id,
        "status": status,
        "deleteCount": deletes,
        "liveBefore": live,
        "reason": reason,
    })
    .to_string()
}

fn to_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Locks the tenant of plan `id`, then loads the plan; errors unless it is held.
///
/// The tenant comes from a read outside the transaction, so the transaction starts with its
/// lock (a write): on SQLite a transaction that reads first and writes later can fail with
/// `SQLITE_BUSY_SNAPSHOT` instead of waiting.
async fn locked_held_plan(
    cx: &mut Cx<'_>,
    txn: &DatabaseTransaction,
    tenant: &str,
    id: i64,
    verb: &str,
) -> Result<org_plans::Model, StoreError> {
    cx.lock(&BTreeSet::from([tenant])).await?;
    let plan = org_plans::Entity::find_by_id(id)
        .one(txn)
        .await?
        .filter(|p| p.tenant_id == tenant)
        .ok_or_else(|| StoreError::NotFound(format!("plan {id}")))?;
    if plan.status != PlanStatus::Held.as_str() {
        return Err(StoreError::Conflict(format!(
            "plan {id} is {}; only held plans can be {verb}",
            plan.status
        )));
    }
    Ok(plan)
}

/// Applies held plan `id` now, re-planned against the current departments, whatever it
/// deletes (see [`crate::Store::approve_plan`]).
pub(crate) async fn approve_plan(
    txn: &DatabaseTransaction,
    tenant: &str,
    id: i64,
    by: &str,
) -> Result<Outcome, StoreError> {
    let mut cx = Cx::new(txn);
    let plan = locked_held_plan(&mut cx, txn, tenant, id, "approved").await?;
    let snapshot: FullOrgSnapshot = serde_json::from_str(&plan.snapshot)
        .map_err(|e| StoreError::Corrupt(format!("plan {id}: snapshot: {e}")))?;
    let outcome = apply_full(&mut cx, &snapshot, Mode::Approve { id, by }).await?;
    cx.flush_journal().await?;
    Ok(outcome)
}

/// Marks held plan `id` rejected (see [`crate::Store::reject_plan`]).
pub(crate) async fn reject_plan(
    txn: &DatabaseTransaction,
    tenant: &str,
    id: i64,
    by: &str,
) -> Result<(), StoreError> {
    let mut cx = Cx::new(txn);
    let plan = locked_held_plan(&mut cx, txn, tenant, id, "rejected").await?;
    let reason = format!("rejected by {by}");
    set_status(
        &mut cx,
        &plan.tenant_id,
        &[id],
        PlanStatus::Rejected,
        &reason,
    )
    .await?;
    cx.flush_journal().await?;
    Ok(())
}
