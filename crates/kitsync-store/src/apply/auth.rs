//! authSync: grant/update (authorisation + member profile) or remove (authorisation only).
//!
//! Journal: one `member` row per user the callback changed, `authorized` (the app's
//! authorisation was created, or re-created after a removal), `deauthorized` (removed) or
//! `modified` (role, enabled or profile), with data
//! `{"userName","appId","authorization":{"role","enabled"}|{"deleted":true}|null,"profile":{…}|null}`
//! — `null` where that part was not written (older than what is stored, or unchanged).
use super::{flag, json, tombstone_action, upsert_action, Change, Cx, Tally, Written};
use crate::error::StoreError;
use crate::journal::{Action, Entity};
use crate::model::Outcome;
use crate::tables::{AuthorizationRow, MemberRow, Update};
use kitsync_domain::decide::{fingerprint, Rank};
use kitsync_domain::{AuthChange, AuthUser};
use serde::Serialize;
use std::collections::HashMap;

/// A member's profile fingerprint: every profile field and the test flag.
pub(crate) fn member_fp(u: &AuthUser, test: bool) -> i64 {
    let employee_type = u.employee_type.map(|n| n.to_string());
    fingerprint(&[
        u.name.as_deref(),
        u.org_code.as_deref(),
        u.position.as_deref(),
        u.employee_code.as_deref(),
        employee_type.as_deref(),
        u.mobile.as_deref(),
        u.email.as_deref(),
        u.work_place.as_deref(),
        u.entry_date.as_deref(),
        u.extension.as_deref(),
        Some(flag(test)),
    ])
}

pub(crate) fn auth_fp(role: &str, enabled: bool, test: bool) -> i64 {
    fingerprint(&[Some(role), Some(flag(enabled)), Some(flag(test))])
}

pub(super) async fn apply(cx: &mut Cx<'_>, c: &AuthChange) -> Result<Outcome, StoreError> {
    let t = c.tenant_id.as_str();
    let a = c.app_id.as_str();
    let v = c.version.millis();
    let marks = cx.marks(t)?;
    let auth_cutoff = marks.purged.max(cx.app_purge(t, a).await?);
    let users = dedup(&c.users);
    let keys: Vec<&str> = users.iter().map(|u| u.user_name.as_str()).collect();
    let mut tally = Tally::default();

    // The member profile: one per tenant, the newest change from any app wins.
    let mut profiles: HashMap<String, Written> = HashMap::new();
    if !c.op.removes() {
        let current = cx
            .load_current::<MemberRow>(&[("tenant_id", t)], Some(&keys), &[])
            .await?;
        let changes = users
            .iter()
            .map(|u| member_change(t, u, v, c.test, cx.now))
            .collect();
        let written = cx
            .write_changes(
                Update::Upsert,
                marks.purged,
                &current,
                changes,
                upsert_action,
                &mut tally,
            )
            .await?;
        profiles = written.into_iter().map(|w| (w.key.clone(), w)).collect();
    }

    let current = cx
        .load_current::<AuthorizationRow>(&[("tenant_id", t), ("app_id", a)], Some(&keys), &[])
        .await?;
    let removes = c.op.removes();
    let changes = users
        .iter()
        .map(|u| auth_change(t, a, u, v, c.test, removes, cx.now))
        .collect();
    let (set, action): (Update, super::ActionFn<AuthorizationRow>) = if removes {
        (Update::Tombstone, tombstone_action)
    } else {
        (Update::Upsert, upsert_action)
    };
    let written = cx
        .write_changes(set, auth_cutoff, &current, changes, action, &mut tally)
        .await?;
    let mut grants: HashMap<String, Written> =
        written.into_iter().map(|w| (w.key.clone(), w)).collect();

    // One journal row per user whose profile or authorisation this callback changed.
    for u in users {
        let (profile, grant) = (profiles.remove(&u.user_name), grants.remove(&u.user_name));
        let action = match grant.as_ref().map(|g| g.action) {
            Some(Action::Created) => Action::Authorized,
            Some(Action::Deleted) => Action::Deauthorized,
            Some(_) => Action::Modified,
            None if profile.is_some() => Action::Modified,
            None => continue,
        };
        let data = format!(
            r#"{{"userName":{},"appId":{},"authorization":{},"profile":{}}}"#,
            json(&u.user_name),
            json(&a),
            grant.as_ref().map_or("null", |g| g.data.as_str()),
            profile.as_ref().map_or("null", |p| p.data.as_str()),
        );
        cx.journal(
            t,
            Entity::Member,
            u.user_name.clone(),
            action,
            v,
            data,
            c.test,
        );
    }
    Ok(tally.outcome())
}

/// A user listed twice in one batch: the later entry wins (as the parser does).
fn dedup(users: &[AuthUser]) -> Vec<&AuthUser> {
    let mut at: HashMap<&str, usize> = HashMap::with_capacity(users.len());
    let mut out: Vec<&AuthUser> = Vec::with_capacity(users.len());
    for u in users {
        match at.get(u.user_name.as_str()) {
            Some(&i) => out[i] = u,
            None => {
                at.insert(u.user_name.as_str(), out.len());
                out.push(u);
            }
        }
    }
    out
}

fn member_change(t: &str, u: &AuthUser, v: i64, test: bool, now: i64) -> Change<MemberRow> {
    let rank = Rank::upsert(v, member_fp(u, test));
    Change {
        row: MemberRow::of_user(t, u, rank, test, now),
        journal_key: u.user_name.clone(),
        data: json(&MemberData {
            name: u.name.as_deref(),
            org_code: u.org_code.as_deref(),
            position: u.position.as_deref(),
            employee_code: u.employee_code.as_deref(),
            employee_type: u.employee_type,
            mobile: u.mobile.as_deref(),
            email: u.email.as_deref(),
            work_place: u.work_place.as_deref(),
            entry_date: u.entry_date.as_deref(),
            extension: u.extension.as_deref(),
        }),
    }
}

#[allow(clippy::too_many_arguments)]
fn auth_change(
    t: &str,
    a: &str,
    u: &AuthUser,
    v: i64,
    test: bool,
    deleted: bool,
    now: i64,
) -> Change<AuthorizationRow> {
    let role = u.role.as_str();
    let rank = if deleted {
        Rank::delete(v)
    } else {
        Rank::upsert(v, auth_fp(role, u.enabled, test))
    };
    let data = if deleted {
        r#"{"deleted":true}"#.to_owned()
    } else {
        json(&AuthData {
            role,
            enabled: u.enabled,
        })
    };
    Change {
        row: AuthorizationRow {
            tenant_id: t.to_owned(),
            app_id: a.to_owned(),
            user_name: u.user_name.clone(),
            role: role.to_owned(),
            enabled: u.enabled,
            test,
            deleted,
            version: rank.version,
            fp: rank.fp,
            updated_at: now,
        },
        journal_key: format!("{a}:{}", u.user_name),
        data,
    }
}

/// The profile in a member's journal payload.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MemberData<'a> {
    name: Option<&'a str>,
    org_code: Option<&'a str>,
    position: Option<&'a str>,
    employee_code: Option<&'a str>,
    employee_type: Option<i32>,
    mobile: Option<&'a str>,
    email: Option<&'a str>,
    work_place: Option<&'a str>,
    entry_date: Option<&'a str>,
    extension: Option<&'a str>,
}

/// The authorisation in a member's journal payload (a removal is `{"deleted":true}`).
#[derive(Serialize)]
struct AuthData<'a> {
    role: &'a str,
    enabled: bool,
}
