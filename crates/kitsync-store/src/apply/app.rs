//! applicationSync: upsert, or delete with a purge of the app's authorisations.
use super::{flag, tombstone_action, upsert_action, ActionFn, Change, Cx, Tally};
use crate::error::StoreError;
use crate::journal::Entity;
use crate::model::Outcome;
use crate::tables::{AppRow, Update};
use kitsync_domain::decide::{fingerprint, Rank};
use kitsync_domain::{AppChange, Op};

pub(crate) fn app_fp(client_id: &str, client_secret: &str, test: bool) -> i64 {
    fingerprint(&[Some(client_id), Some(client_secret), Some(flag(test))])
}

pub(super) async fn apply(cx: &mut Cx<'_>, c: &AppChange) -> Result<Outcome, StoreError> {
    let t = c.tenant_id.as_str();
    let a = c.app_id.as_str();
    let v = c.version.millis();
    let marks = cx.marks(t)?;
    let mut tally = Tally::default();
    // A delete that purges the app's authorisations raises its purge cutoff after the write.
    let mut raise_purge = false;
    let (update, change, action): (_, _, ActionFn<AppRow>) = match c.op {
        Op::Upsert => {
            // The secret's fingerprint, not its sealing (fresh randomness each time): a
            // repeated binding is then a duplicate. Older messages carry none.
            let secret = c.secret_fp.as_deref().unwrap_or(&c.client_secret.0);
            let rank = Rank::upsert(v, app_fp(&c.client_id, secret, c.test));
            (Update::Upsert, row(c, false, rank, cx.now), upsert_action)
        }
        Op::Delete => {
            if v <= marks.purged {
                return Ok(Outcome::Superseded);
            }
            let app_purge = cx.app_purge(t, a).await?;
            if v < app_purge {
                // A later delete of this app already purged everything this one would.
                return Ok(Outcome::Superseded);
            }
            if v > app_purge {
                tally.applied += cx
                    .purge(
                        "authorizations",
                        Entity::Authorization,
                        &[("tenant_id", t), ("app_id", a)],
                        &[("app_id", "appId"), ("user_name", "userName")],
                        "",
                        t,
                        v,
                    )
                    .await?;
                tally.moved = true;
                raise_purge = true;
            }
            // The app row: a tombstone, unless a newer upsert (a re-add) is already there.
            // Deleting an app never seen inserts the tombstone, so its purge cutoff is kept.
            let change = row(c, true, Rank::delete(v), cx.now);
            (Update::Tombstone, change, tombstone_action)
        }
    };
    let current = cx
        .load_current::<AppRow>(&[("tenant_id", t)], Some(&[a]), &[])
        .await?;
    let written = cx
        .write_changes(
            update,
            marks.purged,
            &current,
            vec![change],
            action,
            &mut tally,
        )
        .await?;
    cx.journal_written(Entity::App, t, written);
    if raise_purge {
        let mut sql = cx.sql();
        sql.push("UPDATE apps SET purged_version = ")
            .bind(v)
            .push(" WHERE tenant_id = ")
            .bind(t)
            .push(" AND app_id = ")
            .bind(a)
            .push(" AND purged_version < ")
            .bind(v);
        cx.exec(sql).await?;
        cx.set_app_purge(t, a, v);
    }
    Ok(tally.outcome())
}

fn row(c: &AppChange, deleted: bool, rank: Rank, now: i64) -> Change<AppRow> {
    let data = if deleted {
        serde_json::json!({ "appId": c.app_id, "deleted": true })
    } else {
        // Never the secret.
        serde_json::json!({ "appId": c.app_id, "clientId": c.client_id, "deleted": false })
    }
    .to_string();
    // A tombstone drops the secret: a deleted app's credential has no reason to stay at rest.
    let secret = if deleted {
        String::new()
    } else {
        c.client_secret.0.clone()
    };
    Change {
        row: AppRow {
            tenant_id: c.tenant_id.clone(),
            app_id: c.app_id.clone(),
            client_id: c.client_id.clone(),
            client_secret: secret,
            test: c.test,
            deleted,
            version: rank.version,
            fp: rank.fp,
            purged_version: if deleted { rank.version } else { 0 },
            updated_at: now,
        },
        journal_key: c.app_id.clone(),
        data,
    }
}
