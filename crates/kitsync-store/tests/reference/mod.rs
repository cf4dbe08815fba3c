//! The reference the convergence property compares the store with: the final directory of a
//! history, as a last-writer-wins register per row with tombstones (docs/protocol.md §7),
//! written without the store's cutoffs, purge statements or SQL.
//!
//! Every change proposes a value for each row it names, ranked `(version, fingerprint)`; a
//! delete proposes a tombstone ranked `(version, i64::MAX)`, above every upsert of its version.
//! A row ends as its highest-ranked proposal, live if that is an upsert. Purges and full
//! snapshots are tombstones proposed to every row they cover:
//! - a tenant delete at `V`: the tenant's apps, departments, members and authorisations at
//!   `(V, delete)`;
//! - an app delete at `V`: that app's authorisations at `(V, delete)`;
//! - a full snapshot at `V`: its departments at `(V, fingerprint)` (an org code listed twice:
//!   the later entry), every other department at `(V - 1, delete)`, so a change stamped `V`
//!   survives it (crates/kitsync-store/src/lib.rs, "Decisions beyond the domain rules").
//!
//! An authSync that grants (add, modify) proposes the member's profile and the authorisation;
//! one that removes (delete, cancel) only an authorisation tombstone; a user listed twice is
//! the later entry. Instance ids are every non-blank instance id any change named.
//!
//! The mass-deletion guard is not modelled: the property runs with `mass_delete_share` 1.0,
//! and a snapshot deletes at most every live department, never more
//! (`FullSyncPlan::exceeds_guard` in crates/kitsync-domain/src/decide.rs).
//!
//! Fingerprints break ties between different contents of one version; they hash the same
//! parts as the store (crates/kitsync-store/src/apply/tenant.rs, app.rs, auth.rs, and
//! `org_fingerprint` in crates/kitsync-domain/src/decide.rs) with the domain's hash. Two
//! different proposals of one rank are an error: the reference could only order them by
//! arrival (a department's test flag is outside its fingerprint), so such a history has no
//! order-free answer and the generator must not make one.
use kitsync_domain::decide::{fingerprint, org_fingerprint};
use kitsync_domain::{AuthUser, Command, Op, OrgInfo, SecretText};
use kitsync_store::{
    AppState, AuthorizationState, DepartmentState, DirectoryState, MemberState, TenantState,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

/// `(version, fingerprint)`, compared lexicographically.
type Rank = (i64, i64);

/// The fingerprint of a delete, above every content fingerprint.
const DELETE: i64 = i64::MAX;

struct Register<T> {
    rank: Rank,
    /// `None`: a tombstone.
    value: Option<T>,
}

/// The registers of one table of one tenant, by key.
struct Rows<K, T>(BTreeMap<K, Register<T>>);

impl<K: Ord + Debug, T: PartialEq + Debug> Rows<K, T> {
    fn new() -> Self {
        Rows(BTreeMap::new())
    }

    /// Keeps the proposal if it ranks above what the row holds.
    fn propose(&mut self, key: K, rank: Rank, value: Option<T>) -> Result<(), String> {
        match self.0.get(&key) {
            Some(r) if r.rank > rank => Ok(()),
            Some(r) if r.rank == rank => {
                if r.value == value {
                    Ok(())
                } else {
                    Err(format!(
                        "{key:?}: two different proposals ranked {rank:?}: {:?} and {value:?}",
                        r.value
                    ))
                }
            }
            _ => {
                self.0.insert(key, Register { rank, value });
                Ok(())
            }
        }
    }

    /// Proposes a tombstone ranked `(version, delete)` to every row `covered` selects.
    fn tombstone(&mut self, version: i64, covered: impl Fn(&K) -> bool) {
        let rank = (version, DELETE);
        for (k, r) in &mut self.0 {
            if covered(k) && r.rank < rank {
                *r = Register { rank, value: None };
            }
        }
    }

    /// The live rows' values, in key order.
    fn live(self) -> Vec<T> {
        self.0.into_values().filter_map(|r| r.value).collect()
    }
}

fn flag(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

/// Dedups by `key`, the later entry winning, keeping first-seen order.
fn later_wins<T>(items: &[T], key: impl Fn(&T) -> String) -> Vec<&T> {
    let mut at: BTreeMap<String, usize> = BTreeMap::new();
    let mut out: Vec<&T> = Vec::new();
    for item in items {
        match at.get(&key(item)) {
            Some(&i) => out[i] = item,
            None => {
                at.insert(key(item), out.len());
                out.push(item);
            }
        }
    }
    out
}

fn member(u: &AuthUser, test: bool, version: i64) -> (i64, MemberState) {
    let employee_type = u.employee_type.map(|n| n.to_string());
    let fp = fingerprint(&[
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
    ]);
    let state = MemberState {
        user_name: u.user_name.clone(),
        name: u.name.clone(),
        org_code: u.org_code.clone(),
        position: u.position.clone(),
        employee_code: u.employee_code.clone(),
        employee_type: u.employee_type,
        mobile: u.mobile.clone(),
        email: u.email.clone(),
        work_place: u.work_place.clone(),
        entry_date: u.entry_date.clone(),
        extension: u.extension.clone(),
        test,
        version,
    };
    (fp, state)
}

fn department(o: &OrgInfo, test: bool, version: i64) -> (Rank, DepartmentState) {
    let rank = (
        version,
        org_fingerprint(&o.org_name, o.parent_code.as_deref()),
    );
    let state = DepartmentState {
        org_code: o.org_code.clone(),
        org_name: o.org_name.clone(),
        parent_code: o.parent_code.clone(),
        test,
        version,
    };
    (rank, state)
}

/// The directory of `tenant` after every change of `history` (any order: the answer does not
/// depend on it), or why the history has no order-free answer.
pub fn expected(history: &[Command], tenant: &str) -> Result<DirectoryState, String> {
    let mut tenant_row: Rows<(), TenantState> = Rows::new();
    let mut apps: Rows<String, AppState> = Rows::new();
    let mut departments: Rows<String, DepartmentState> = Rows::new();
    let mut members: Rows<String, MemberState> = Rows::new();
    let mut authorizations: Rows<(String, String), AuthorizationState> = Rows::new();
    let mut instance_ids: BTreeSet<String> = BTreeSet::new();
    let mut tenant_deletes: Vec<i64> = Vec::new();
    let mut app_deletes: Vec<(String, i64)> = Vec::new();
    let mut snapshots: Vec<(i64, BTreeSet<String>)> = Vec::new();

    for c in history.iter().filter(|c| c.tenant_id() == tenant) {
        if let Some(i) = c.instance_id().filter(|i| !i.trim().is_empty()) {
            instance_ids.insert(i.to_owned());
        }
        let v = c.version().millis();
        match c {
            Command::Tenant(c) => match c.op {
                Op::Upsert => {
                    let domain = Some(c.domain_name.as_str()).filter(|d| !d.is_empty());
                    let fp = fingerprint(&[
                        Some(&c.tenant_code),
                        Some(&c.name),
                        domain,
                        Some(flag(c.test)),
                    ]);
                    let state = TenantState {
                        tenant_code: c.tenant_code.clone(),
                        name: c.name.clone(),
                        domain_name: domain.map(str::to_owned),
                        test: c.test,
                        version: v,
                    };
                    tenant_row.propose((), (v, fp), Some(state))?;
                }
                Op::Delete => {
                    tenant_row.propose((), (v, DELETE), None)?;
                    tenant_deletes.push(v);
                }
            },
            Command::App(c) => match c.op {
                Op::Upsert => {
                    let secret = c.secret_fp.as_deref().unwrap_or(&c.client_secret.0);
                    let fp = fingerprint(&[Some(&c.client_id), Some(secret), Some(flag(c.test))]);
                    let state = AppState {
                        app_id: c.app_id.clone(),
                        client_id: c.client_id.clone(),
                        client_secret: SecretText(c.client_secret.0.clone()),
                        test: c.test,
                        version: v,
                    };
                    apps.propose(c.app_id.clone(), (v, fp), Some(state))?;
                }
                Op::Delete => {
                    apps.propose(c.app_id.clone(), (v, DELETE), None)?;
                    app_deletes.push((c.app_id.clone(), v));
                }
            },
            Command::Org(c) => {
                let info = OrgInfo {
                    org_code: c.org_code.clone(),
                    org_name: c.org_name.clone(),
                    parent_code: c.parent_code.clone(),
                };
                match c.op {
                    Op::Upsert => {
                        let (rank, state) = department(&info, c.test, v);
                        departments.propose(c.org_code.clone(), rank, Some(state))?;
                    }
                    Op::Delete => departments.propose(c.org_code.clone(), (v, DELETE), None)?,
                }
            }
            Command::FullOrg(s) => {
                let orgs = later_wins(&s.orgs, |o| o.org_code.clone());
                for o in &orgs {
                    let (rank, state) = department(o, s.test, v);
                    departments.propose(o.org_code.clone(), rank, Some(state))?;
                }
                let listed = orgs.iter().map(|o| o.org_code.clone()).collect();
                snapshots.push((v, listed));
            }
            Command::Auth(c) => {
                for u in later_wins(&c.users, |u| u.user_name.clone()) {
                    let key = (c.app_id.clone(), u.user_name.clone());
                    if c.op.removes() {
                        authorizations.propose(key, (v, DELETE), None)?;
                        continue;
                    }
                    let (fp, profile) = member(u, c.test, v);
                    members.propose(u.user_name.clone(), (v, fp), Some(profile))?;
                    let role = u.role.as_str();
                    let fp = fingerprint(&[Some(role), Some(flag(u.enabled)), Some(flag(c.test))]);
                    let state = AuthorizationState {
                        app_id: c.app_id.clone(),
                        user_name: u.user_name.clone(),
                        role: role.to_owned(),
                        enabled: u.enabled,
                        test: c.test,
                        version: v,
                    };
                    authorizations.propose(key, (v, fp), Some(state))?;
                }
            }
        }
    }

    for v in tenant_deletes {
        apps.tombstone(v, |_| true);
        departments.tombstone(v, |_| true);
        members.tombstone(v, |_| true);
        authorizations.tombstone(v, |_| true);
    }
    for (app, v) in app_deletes {
        authorizations.tombstone(v, |(a, _)| *a == app);
    }
    for (v, listed) in snapshots {
        departments.tombstone(v - 1, |code| !listed.contains(code));
    }

    Ok(DirectoryState {
        tenant: tenant_row.live().pop(),
        instance_ids: instance_ids.into_iter().collect(),
        apps: apps.live(),
        departments: departments.live(),
        members: members.live(),
        authorizations: authorizations.live(),
    })
}

/// Which kinds of row a directory holds live: tenant, apps, departments, members,
/// authorisations.
pub fn live_kinds(d: &DirectoryState) -> [bool; 5] {
    [
        d.tenant.is_some(),
        !d.apps.is_empty(),
        !d.departments.is_empty(),
        !d.members.is_empty(),
        !d.authorizations.is_empty(),
    ]
}

pub const KIND_NAMES: [&str; 5] = ["tenant", "apps", "departments", "members", "authorisations"];
