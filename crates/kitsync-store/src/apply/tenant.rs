//! tenantSync: upsert, or delete with a purge of everything the tenant owns.
use super::{flag, tombstone_action, upsert_action, ActionFn, Change, Cx, Tally};
use crate::error::StoreError;
use crate::journal::{Action, Entity};
use crate::model::Outcome;
use crate::tables::{TenantRow, Update};
use kitsync_domain::decide::{fingerprint, Rank};
use kitsync_domain::{Op, TenantChange};

pub(crate) fn tenant_fp(code: &str, name: &str, domain: Option<&str>, test: bool) -> i64 {
    fingerprint(&[Some(code), Some(name), domain, Some(flag(test))])
}

pub(super) async fn apply(cx: &mut Cx<'_>, c: &TenantChange) -> Result<Outcome, StoreError> {
    let t = c.tenant_id.as_str();
    let v = c.version.millis();
    let marks = cx.marks(t)?;
    let domain = Some(c.domain_name.as_str()).filter(|d| !d.is_empty());
    let mut tally = Tally::default();
    let (update, cutoff, change, action): (_, _, _, ActionFn<TenantRow>) = match c.op {
        Op::Upsert => {
            let fp = tenant_fp(&c.tenant_code, &c.name, domain, c.test);
            let change = row(c, domain, false, Rank::upsert(v, fp), cx.now);
            (Update::Upsert, marks.purged, change, upsert_action)
        }
        Op::Delete => {
            if v < marks.purged {
                // A later tenant delete already purged everything this one would.
                return Ok(Outcome::Superseded);
            }
            if v > marks.purged {
                tally.applied += purge(cx, t, v).await?;
                cx.set_purged(t, v).await?;
                tally.moved = true;
            }
            // The tenant row itself: a newer upsert (a re-add) may already be there. A delete
            // only names the tenant, so an existing row keeps its other fields.
            let change = row(c, domain, true, Rank::delete(v), cx.now);
            (Update::Tombstone, i64::MIN, change, tombstone_action)
        }
    };
    let current = cx.load_current::<TenantRow>(&[], Some(&[t]), &[]).await?;
    let written = cx
        .write_changes(update, cutoff, &current, vec![change], action, &mut tally)
        .await?;
    cx.journal_written(Entity::Tenant, t, written);
    Ok(tally.outcome())
}

fn row(
    c: &TenantChange,
    domain: Option<&str>,
    deleted: bool,
    rank: Rank,
    now: i64,
) -> Change<TenantRow> {
    let data = if deleted {
        serde_json::json!({ "tenantId": c.tenant_id, "deleted": true }).to_string()
    } else {
        serde_json::json!({
            "tenantId": c.tenant_id,
            "tenantCode": c.tenant_code,
            "name": c.name,
            "domainName": domain,
            "deleted": false,
        })
        .to_string()
    };
    Change {
        row: TenantRow {
            tenant_id: c.tenant_id.clone(),
            tenant_code: c.tenant_code.clone(),
            name: c.name.clone(),
            domain_name: domain.map(str::to_owned),
            test: c.test,
            deleted,
            version: rank.version,
            fp: rank.fp,
            updated_at: now,
        },
        journal_key: c.tenant_id.clone(),
        data,
    }
}

/// A table a tenant delete tombstones (see [`Cx::purge`]): its name, its journal entity, its
/// key columns within the tenant (with their journal names), and what else the tombstone sets.
type Purged = (
    &'static str,
    Entity,
    &'static [(&'static str, &'static str)],
    &'static str,
);

/// What a tenant delete tombstones, in this order.
const PURGED: [Purged; 4] = [
    (
        "authorizations",
        Entity::Authorization,
        &[("app_id", "appId"), ("user_name", "userName")],
        "",
    ),
    ("members", Entity::Member, &[("user_name", "userName")], ""),
    (
        "apps",
        Entity::App,
        &[("app_id", "appId")],
        ", client_secret = ''",
    ),
    (
        "departments",
        Entity::Department,
        &[("org_code", "orgCode")],
        "",
    ),
];

/// Tombstones every app, authorisation, department and member of the tenant at or below `v`
/// (set-based, journaled), and removes the ISV-created groups made before it.
async fn purge(cx: &mut Cx<'_>, t: &str, v: i64) -> Result<u32, StoreError> {
    let mut n = 0;
    for (table, entity, keys, extra_set) in PURGED {
        n += cx
            .purge(table, entity, &[("tenant_id", t)], keys, extra_set, t, v)
            .await?;
    }
    // ISV groups carry no marketplace version: those created (wall clock, Unix ms) before the
    // delete's timestamp go, later ones stay.
    let mut sql = cx.sql();
    sql.push("DELETE FROM group_members WHERE tenant_id = ")
        .bind(t)
        .push(" AND group_id IN (SELECT group_id FROM groups WHERE tenant_id = ")
        .bind(t)
        .push(" AND created_at <= ")
        .bind(v)
        .push(")");
    cx.exec(sql).await?;
    let mut sql = cx.sql();
    sql.push("DELETE FROM groups WHERE tenant_id = ")
        .bind(t)
        .push(" AND created_at <= ")
        .bind(v)
        .push(" RETURNING group_id");
    let mut groups: Vec<String> = Vec::new();
    for r in cx.query(sql).await? {
        groups.push(r.try_get_by_index(0)?);
    }
    groups.sort();
    n += groups.len() as u32;
    for g in groups {
        let data = serde_json::json!({ "groupId": g, "deleted": true }).to_string();
        cx.journal(t, Entity::Group, g, Action::Deleted, v, data, false);
    }
    // A held full-sync plan at or below the delete can never apply any more.
    super::org::supersede_held(cx, t, v, format!("the tenant was deleted at version {v}")).await?;
    Ok(n)
}
