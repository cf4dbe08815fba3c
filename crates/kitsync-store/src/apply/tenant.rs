//! tenantSync: upsert, or delete with a purge of everything the tenant owns.
use super::{flag, tombstone_action, upsert_action, Change, Cx, Tally};
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
    match c.op {
        Op::Upsert => {
            let current = cx.load_current::<TenantRow>(&[], Some(&[t]), &[]).await?;
            let fp = tenant_fp(&c.tenant_code, &c.name, domain, c.test);
            let change = row(c, domain, false, Rank::upsert(v, fp), cx.now);
            let written = cx
                .write_changes(
                    Update::Upsert,
                    marks.purged,
                    &current,
                    vec![change],
                    upsert_action,
                    &mut tally,
                )
                .await?;
            cx.journal_written(Entity::Tenant, t, written);
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
            let current = cx.load_current::<TenantRow>(&[], Some(&[t]), &[]).await?;
            let change = row(c, domain, true, Rank::delete(v), cx.now);
            let written = cx
                .write_changes(
                    Update::Tombstone,
                    i64::MIN,
                    &current,
                    vec![change],
                    tombstone_action,
                    &mut tally,
                )
                .await?;
            cx.journal_written(Entity::Tenant, t, written);
        }
    }
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

/// Tombstones every app, authorisation, department and member of the tenant at or below `v`
/// (set-based, journaled), and removes the ISV-created groups made before it.
async fn purge(cx: &mut Cx<'_>, t: &str, v: i64) -> Result<u32, StoreError> {
    let scope = [("tenant_id", t)];
    let mut n = cx
        .purge(
            "authorizations",
            Entity::Authorization,
            &scope,
            &[("app_id", "appId"), ("user_name", "userName")],
            "",
            t,
            v,
        )
        .await?;
    n += cx
        .purge(
            "members",
            Entity::Member,
            &scope,
            &[("user_name", "userName")],
            "",
            t,
            v,
        )
        .await?;
    n += cx
        .purge(
            "apps",
            Entity::App,
            &scope,
            &[("app_id", "appId")],
            ", client_secret = ''",
            t,
            v,
        )
        .await?;
    n += cx
        .purge(
            "departments",
            Entity::Department,
            &scope,
            &[("org_code", "orgCode")],
            "",
            t,
            v,
        )
        .await?;
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
