//! authSync: grant/update (authorisation + member profile) or remove (authorisation only).
//!
//! Journal: one `member` row per user the callback changed, `authorized` (the app's
//! authorisation was created, or re-created after a removal), `deauthorized` (removed) or
//! `modified` (role, enabled or profile), with data
//! `{"userName","appId","authorization":{"role","enabled"}|{"deleted":true}|null,"profile":{…}|null}`
//! — `null` where that part was not written (older than what is stored, or unchanged).
use super::{
    confirm, flag, json, pick, tombstone_action, upsert_action, Change, Current, Cx, Tally, Written,
};
use crate::error::StoreError;
use crate::journal::{Action, Entity};
use crate::model::Outcome;
use crate::tables::{AuthorizationRow, MemberRow, Row, Update};
use kitsync_domain::decide::{fingerprint, Rank};
use kitsync_domain::{AuthChange, AuthUser};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

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

/// The keys a group of authSync commands writes, to keep each written once per group.
#[derive(Default)]
pub(super) struct GroupKeys<'c> {
    members: HashSet<(&'c str, &'c str)>,
    grants: HashSet<(&'c str, &'c str, &'c str)>,
}

impl<'c> GroupKeys<'c> {
    /// Takes `c` into the group when none of the rows it writes (its users' profiles, unless
    /// it removes, and their authorisations for its app) is written by the group already.
    pub(super) fn admit(&mut self, c: &'c AuthChange) -> bool {
        let (t, a) = (c.tenant_id.as_str(), c.app_id.as_str());
        let profiles = !c.op.removes();
        let taken = c.users.iter().any(|u| {
            let n = u.user_name.as_str();
            (profiles && self.members.contains(&(t, n))) || self.grants.contains(&(t, a, n))
        });
        if taken {
            return false;
        }
        for u in &c.users {
            let n = u.user_name.as_str();
            if profiles {
                self.members.insert((t, n));
            }
            self.grants.insert((t, a, n));
        }
        true
    }
}

/// The rows an authSync command would write, built before its transaction (see
/// [`super::Prepared`]): its users' profile changes (none when it removes) and
/// authorisation changes, in the order of its deduplicated users.
pub(crate) struct Planned {
    /// The command it was built from: tenant, app, version and a hash of its user names.
    from: (String, String, i64, u64),
    members: Vec<Change<MemberRow>>,
    grants: Vec<Change<AuthorizationRow>>,
    /// Each user's journal payload for when both its profile and its authorisation are
    /// written, the common case (none when the command removes).
    journal: Vec<String>,
}

impl Planned {
    /// Builds `c`'s rows stamped `now`: CPU only, no database.
    pub(crate) fn of(c: &AuthChange, now: i64) -> Self {
        let users = dedup(&c.users);
        let (t, a, v) = (c.tenant_id.as_str(), c.app_id.as_str(), c.version.millis());
        let removes = c.op.removes();
        let members = if removes {
            Vec::new()
        } else {
            users
                .iter()
                .map(|u| member_change(t, u, v, c.test, now))
                .collect()
        };
        let grants: Vec<Change<AuthorizationRow>> = users
            .iter()
            .map(|u| auth_change(t, a, u, v, c.test, removes, now))
            .collect();
        let journal = members
            .iter()
            .zip(&grants)
            .map(|(m, g)| payload(&m.journal_key, a, Some(&g.data), Some(&m.data)))
            .collect();
        Planned {
            from: Planned::source(c),
            members,
            grants,
            journal,
        }
    }

    fn source(c: &AuthChange) -> (String, String, i64, u64) {
        use std::hash::{Hash, Hasher};
        let mut users = std::collections::hash_map::DefaultHasher::new();
        for u in &c.users {
            u.user_name.hash(&mut users);
        }
        (
            c.tenant_id.clone(),
            c.app_id.clone(),
            c.version.millis(),
            users.finish(),
        )
    }

    /// Whether it was built from `c` (a caller's mix-up must not write another command's
    /// rows).
    fn built_from(&self, c: &AuthChange) -> bool {
        self.from == Planned::source(c)
    }
}

/// Applies a group of authSync commands (see [`GroupKeys`]: no two write the same row, and
/// nothing between them moves a cutoff) as if one after the other, with one set of statements
/// per table for the whole group: one probe of the current profiles, one of the current
/// authorisations, one upsert of the profiles, one of the grants and one of the removals
/// (per chunk). Each command is decided and journaled on its own, in order.
pub(super) async fn apply_group(
    cx: &mut Cx<'_>,
    group: &[&AuthChange],
    planned: Vec<Option<Planned>>,
) -> Result<Vec<Outcome>, StoreError> {
    // What was not built ahead is built now.
    let now = cx.now;
    let mut member_changes: Vec<Vec<Change<MemberRow>>> = Vec::with_capacity(group.len());
    let mut grant_changes = Vec::with_capacity(group.len());
    let mut payloads = Vec::with_capacity(group.len());
    for (c, p) in group
        .iter()
        .zip(planned.into_iter().chain(std::iter::repeat_with(|| None)))
    {
        let p = p
            .filter(|p| p.built_from(c))
            .unwrap_or_else(|| Planned::of(c, now));
        member_changes.push(p.members);
        grant_changes.push(p.grants);
        payloads.push(p.journal);
    }
    cx.load_app_purges(
        group
            .iter()
            .map(|c| (c.tenant_id.as_str(), c.app_id.as_str())),
    )
    .await?;
    let users: Vec<Vec<&AuthUser>> = group.iter().map(|c| dedup(&c.users)).collect();
    let mut tallies = vec![Tally::default(); group.len()];

    // The member profile: one per tenant, the newest change from any app wins.
    let wanted: Vec<Vec<&str>> = group
        .iter()
        .zip(&users)
        .filter(|(c, _)| !c.op.removes())
        .flat_map(|(c, us)| {
            us.iter()
                .map(|u| vec![c.tenant_id.as_str(), u.user_name.as_str()])
        })
        .collect();
    let current = cx.load_rows::<MemberRow>(&wanted, &[]).await?;
    let mut rows = Vec::with_capacity(wanted.len());
    let mut sent = Vec::with_capacity(group.len());
    for ((c, changes), tally) in group.iter().zip(member_changes).zip(&mut tallies) {
        if c.op.removes() {
            sent.push(Vec::new());
            continue;
        }
        let t = c.tenant_id.as_str();
        let cutoff = cx.marks(t)?.purged;
        let (r, s) = pick(
            cutoff,
            changes,
            |r| stored(&current, r),
            cx.names_written(),
            upsert_action,
            tally,
        )?;
        rows.extend(r);
        sent.push(s);
    }
    let written = cx.write_rows(Update::Upsert, rows).await?;
    let mut profiles: Vec<HashMap<String, Written>> = sent
        .into_iter()
        .zip(&mut tallies)
        .map(|(s, tally)| by_key(confirm(s, &written, tally)))
        .collect();

    // The authorisations: grants and removals, each with its own update set.
    let wanted: Vec<Vec<&str>> = group
        .iter()
        .zip(&users)
        .flat_map(|(c, us)| {
            us.iter().map(|u| {
                vec![
                    c.tenant_id.as_str(),
                    c.app_id.as_str(),
                    u.user_name.as_str(),
                ]
            })
        })
        .collect();
    let current = cx.load_rows::<AuthorizationRow>(&wanted, &[]).await?;
    let (mut upserts, mut tombstones) = (Vec::new(), Vec::new());
    let mut sent = Vec::with_capacity(group.len());
    for ((c, changes), tally) in group.iter().zip(grant_changes).zip(&mut tallies) {
        let (t, a) = (c.tenant_id.as_str(), c.app_id.as_str());
        let removes = c.op.removes();
        let cutoff = cx.marks(t)?.purged.max(cx.app_purge(t, a).await?);
        let action: super::ActionFn<AuthorizationRow> = if removes {
            tombstone_action
        } else {
            upsert_action
        };
        let (r, s) = pick(
            cutoff,
            changes,
            |r| stored(&current, r),
            cx.names_written(),
            action,
            tally,
        )?;
        if removes {
            &mut tombstones
        } else {
            &mut upserts
        }
        .extend(r);
        sent.push(s);
    }
    let granted = cx.write_rows(Update::Upsert, upserts).await?;
    let removed = cx.write_rows(Update::Tombstone, tombstones).await?;
    let grants: Vec<HashMap<String, Written>> = sent
        .into_iter()
        .zip(group)
        .zip(&mut tallies)
        .map(|((s, c), tally)| {
            let written = if c.op.removes() { &removed } else { &granted };
            by_key(confirm(s, written, tally))
        })
        .collect();

    // One journal row per user whose profile or authorisation a command changed, in order.
    for ((((c, us), profiles), mut grants), mut built) in group
        .iter()
        .zip(&users)
        .zip(&mut profiles)
        .zip(grants)
        .zip(payloads)
    {
        journal(cx, c, us, profiles, &mut grants, &mut built);
    }
    Ok(tallies.into_iter().map(Tally::outcome).collect())
}

/// The stored row `r` would replace, if any: nothing to look up (nor an identity to build)
/// when none of the rows probed exists, as in a tenant's first sync.
fn stored<'c, R: Row>(current: &'c HashMap<String, Current>, r: &R) -> Option<&'c Current> {
    if current.is_empty() {
        return None;
    }
    current.get(&r.identity())
}

fn by_key(written: Vec<Written>) -> HashMap<String, Written> {
    written.into_iter().map(|w| (w.key.clone(), w)).collect()
}

/// Journals what one command changed: one `member` row per user.
/// `built` holds, in `users`' order, each user's payload for when both parts were written
/// (see [`Planned`]), or nothing.
fn journal(
    cx: &mut Cx<'_>,
    c: &AuthChange,
    users: &[&AuthUser],
    profiles: &mut HashMap<String, Written>,
    grants: &mut HashMap<String, Written>,
    built: &mut [String],
) {
    let (t, a, v) = (c.tenant_id.as_str(), c.app_id.as_str(), c.version.millis());
    for (i, u) in users.iter().enumerate() {
        let (profile, grant) = (profiles.remove(&u.user_name), grants.remove(&u.user_name));
        let action = match grant.as_ref().map(|g| g.action) {
            Some(Action::Created) => Action::Authorized,
            Some(Action::Deleted) => Action::Deauthorized,
            Some(_) => Action::Modified,
            None if profile.is_some() => Action::Modified,
            None => continue,
        };
        let data = match (built.get_mut(i), &grant, &profile) {
            (Some(b), Some(_), Some(_)) => std::mem::take(b),
            _ => payload(
                &u.user_name,
                a,
                grant.as_ref().map(|g| g.data.as_str()),
                profile.as_ref().map(|p| p.data.as_str()),
            ),
        };
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
}

/// A member journal row's data: the authorisation and the profile written (`null` when not).
fn payload(user: &str, app: &str, grant: Option<&str>, profile: Option<&str>) -> String {
    format!(
        r#"{{"userName":{},"appId":{},"authorization":{},"profile":{}}}"#,
        json(&user),
        json(&app),
        grant.unwrap_or("null"),
        profile.unwrap_or("null"),
    )
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
