//! The marketplace's own truth and the history that produces it.
//!
//! The emulator *is* the marketplace: it decides what happens to each tenant (purchase,
//! binding, authorisations in batches of 500, department changes, full syncs, a mass deletion,
//! unbinding, a test purchase), keeps the resulting truth, and writes the callbacks that tell
//! the ISV. Changes are stamped with increasing marketplace times, so the truth is the state
//! after applying them in timestamp order — what an ISV must converge to however they are
//! delivered.
//!
//! The history comes in phases. Within a phase the sender may reorder and duplicate freely;
//! phases are sent one after the other. Full department syncs sit in phases of their own: a
//! reordered snapshot could meet a half-built department list and trip a mass-deletion guard,
//! which is an operator's decision, not a convergence fault.
use crate::body::{self, Org, Spec, User};
use crate::rng::Rng;
use kitsync_domain::{CallbackKind, KitTime};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// What the emulator can play, by name (`--scenario`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// Purchase: tenantSync.
    Purchase,
    /// Binding the app: applicationSync (with the `clientSecret` encrypted when a public key is
    /// given) and the first full department sync.
    Bind,
    /// Authorising users in batches of up to 500, then modifying, cancelling and deleting some.
    Authorise,
    /// Incremental department changes: adds, a rename, a move, a delete.
    Departments,
    /// A newer full department sync that drops a few departments.
    FullSync,
    /// A full sync that drops most departments (an ISV may hold it), then the same one again,
    /// which confirms it.
    MassDelete,
    /// A second app bound and unbound; the last tenant unbound (tenant delete).
    Unbind,
    /// A test purchase (`testFlag=1`): a tenant of its own, bound and authorised.
    TestPurchase,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::Purchase,
        Scenario::Bind,
        Scenario::Authorise,
        Scenario::Departments,
        Scenario::FullSync,
        Scenario::MassDelete,
        Scenario::Unbind,
        Scenario::TestPurchase,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Purchase => "purchase",
            Scenario::Bind => "bind",
            Scenario::Authorise => "authorise",
            Scenario::Departments => "departments",
            Scenario::FullSync => "full-sync",
            Scenario::MassDelete => "mass-delete",
            Scenario::Unbind => "unbind",
            Scenario::TestPurchase => "test-purchase",
        }
    }

    /// # Errors
    /// An unknown name, with the list of known ones.
    pub fn parse(s: &str) -> Result<Self, String> {
        Scenario::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = Scenario::ALL.iter().map(|x| x.as_str()).collect();
                format!(
                    "`{s}` is not a scenario: expected one of {}",
                    all.join(", ")
                )
            })
    }
}

/// One callback of the history.
#[derive(Clone, Debug)]
pub struct Step {
    pub kind: CallbackKind,
    pub body: Value,
    pub tenant: String,
    /// What it does, for the report (`t-emu-1: authorise 500 users (batch 1 of 2)`).
    pub what: String,
}

/// The truth about one tenant, as the directory should show it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantTruth {
    pub name: String,
    pub test: bool,
    pub deleted: bool,
    /// appId → clientId.
    pub apps: BTreeMap<String, String>,
    /// orgCode → (orgName, parentCode).
    pub departments: BTreeMap<String, (String, Option<String>)>,
    /// (appId, userName) → (role, enabled).
    pub authorizations: BTreeMap<(String, String), (String, bool)>,
}

impl TenantTruth {
    /// The users some app authorises: the members the directory lists.
    #[must_use]
    pub fn members(&self) -> BTreeSet<String> {
        self.authorizations.keys().map(|(_, u)| u.clone()).collect()
    }
}

/// What the marketplace knows about a tenant beyond the directory's truth: what its auth
/// centre needs to log its enterprise users in (`kitsync emulate --save-users`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accounts {
    /// The `domainName` tenantSync sent: where the tenant's auth centre lives.
    pub domain_name: String,
    /// appId → the plaintext `clientSecret` (what applicationSync sent, before encryption).
    /// An app bound again keeps its secret; the truth says which apps are bound now.
    pub secrets: BTreeMap<String, String>,
    /// Every user some authSync ever listed for the tenant: userName → (name, orgCode), as
    /// the newest authSync that listed it said.
    pub users: BTreeMap<String, (String, String)>,
}

/// How big the history is.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    pub tenants: usize,
    pub users: usize,
    pub departments: usize,
}

/// The history, its phases and the truth it leads to.
#[derive(Debug)]
pub struct History {
    pub phases: Vec<Vec<Step>>,
    pub truth: BTreeMap<String, TenantTruth>,
    /// Per tenant, what its auth centre needs (kept beside the truth: the directory shows
    /// none of it).
    pub accounts: BTreeMap<String, Accounts>,
}

/// A tenant's `domainName`: `{auth_centre_url}/{tenantId}` when an auth centre is given
/// (`kitsync emulate auth-centre` serves each tenant under its id), else the example default.
#[must_use]
pub fn domain_name(auth_centre_url: Option<&str>, tenant: &str) -> String {
    match auth_centre_url {
        Some(url) => format!(
            "{}/{}",
            url.trim().trim_end_matches('/'),
            super::directory::enc(tenant)
        ),
        None => body::default_domain_name(tenant),
    }
}

struct Builder<'a> {
    phases: Vec<Vec<Step>>,
    truth: BTreeMap<String, TenantTruth>,
    accounts: BTreeMap<String, Accounts>,
    clock: i64,
    encrypt: &'a dyn Fn(&str) -> Result<String, String>,
    auth_centre_url: Option<&'a str>,
}

impl Builder<'_> {
    /// The next marketplace time: a second after the previous change.
    fn tick(&mut self) -> KitTime {
        self.clock += 1000;
        KitTime::from_millis(self.clock)
    }

    fn push(
        &mut self,
        phase: usize,
        kind: CallbackKind,
        spec: &Spec,
        what: String,
    ) -> Result<(), String> {
        let body = body::build(kind, spec)?;
        while self.phases.len() <= phase {
            self.phases.push(Vec::new());
        }
        self.phases[phase].push(Step {
            kind,
            body,
            tenant: spec.tenant_id.clone(),
            what,
        });
        Ok(())
    }

    fn spec(&mut self, tenant: &str) -> Spec {
        let mut s = Spec::new(tenant);
        s.at = self.tick();
        s.test = self.truth.get(tenant).is_some_and(|t| t.test);
        s
    }

    fn purchase(&mut self, t: &str, test: bool) -> Result<(), String> {
        let name = format!("Emulated tenant {t}");
        self.truth.insert(
            t.to_owned(),
            TenantTruth {
                name: name.clone(),
                test,
                ..TenantTruth::default()
            },
        );
        let mut s = self.spec(t);
        s.name = Some(name);
        let domain = domain_name(self.auth_centre_url, t);
        s.domain_name = Some(domain.clone());
        self.accounts.insert(
            t.to_owned(),
            Accounts {
                domain_name: domain,
                ..Accounts::default()
            },
        );
        self.push(
            PHASE_SETUP,
            CallbackKind::TenantSync,
            &s,
            format!("{t}: purchase"),
        )
    }

    fn bind_app(&mut self, phase: usize, t: &str, app: &str) -> Result<(), String> {
        let mut s = self.spec(t);
        s.app_id = Some(app.to_owned());
        let client_id = format!("{app}-client");
        s.client_id = Some(client_id.clone());
        let secret = format!("secret-of-{t}-{app}");
        s.client_secret = Some((self.encrypt)(&secret)?);
        if let Some(truth) = self.truth.get_mut(t) {
            truth.apps.insert(app.to_owned(), client_id);
        }
        if let Some(accounts) = self.accounts.get_mut(t) {
            accounts.secrets.insert(app.to_owned(), secret);
        }
        self.push(
            phase,
            CallbackKind::ApplicationSync,
            &s,
            format!("{t}: bind {app}"),
        )
    }

    fn unbind_app(&mut self, phase: usize, t: &str, app: &str) -> Result<(), String> {
        let mut s = self.spec(t);
        s.app_id = Some(app.to_owned());
        s.flag = Some(0);
        if let Some(truth) = self.truth.get_mut(t) {
            truth.apps.remove(app);
            truth.authorizations.retain(|(a, _), _| a != app);
        }
        self.push(
            phase,
            CallbackKind::ApplicationSync,
            &s,
            format!("{t}: unbind {app}"),
        )
    }

    fn full_sync(
        &mut self,
        phase: usize,
        t: &str,
        orgs: Vec<Org>,
        what: &str,
    ) -> Result<(), String> {
        let mut s = self.spec(t);
        if let Some(truth) = self.truth.get_mut(t) {
            truth.departments = orgs
                .iter()
                .map(|o| (o.code.clone(), (o.name.clone(), o.parent.clone())))
                .collect();
        }
        s.orgs = orgs;
        self.push(phase, CallbackKind::AllOrgSync, &s, format!("{t}: {what}"))
    }

    fn org_change(
        &mut self,
        phase: usize,
        t: &str,
        org: Org,
        delete: bool,
        what: &str,
    ) -> Result<(), String> {
        let mut s = self.spec(t);
        if let Some(truth) = self.truth.get_mut(t) {
            if delete {
                truth.departments.remove(&org.code);
            } else {
                truth
                    .departments
                    .insert(org.code.clone(), (org.name.clone(), org.parent.clone()));
            }
        }
        s.flag = Some(u8::from(!delete));
        s.orgs = vec![org];
        self.push(
            phase,
            CallbackKind::SingleOrgSync,
            &s,
            format!("{t}: {what}"),
        )
    }

    /// One authSync: `flag` for `users` of `app`.
    fn auth(
        &mut self,
        phase: usize,
        t: &str,
        app: &str,
        flag: u8,
        users: Vec<User>,
        what: String,
    ) -> Result<(), String> {
        let mut s = self.spec(t);
        s.app_id = Some(app.to_owned());
        s.flag = Some(flag);
        let org = self
            .truth
            .get(t)
            .and_then(|tt| tt.departments.keys().next().cloned())
            .unwrap_or_else(|| "root".into());
        if let Some(accounts) = self.accounts.get_mut(t) {
            // The profile body.rs writes: the name is the userName, the orgCode the first org.
            for u in &users {
                let known = accounts.users.contains_key(&u.user_name);
                if known || flag == 1 || flag == 2 {
                    accounts
                        .users
                        .insert(u.user_name.clone(), (u.user_name.clone(), org.clone()));
                }
            }
        }
        s.orgs = vec![Org {
            code: org,
            name: "-".into(),
            parent: None,
        }];
        if let Some(truth) = self.truth.get_mut(t) {
            for u in &users {
                let key = (app.to_owned(), u.user_name.clone());
                if flag == 0 || flag == 3 {
                    truth.authorizations.remove(&key);
                } else {
                    truth
                        .authorizations
                        .insert(key, (u.role.clone(), u.enabled));
                }
            }
        }
        s.users = users;
        self.push(phase, CallbackKind::AuthSync, &s, what)
    }
}

const PHASE_SETUP: usize = 0;
const PHASE_CHANGES: usize = 1;
const PHASE_FULL_SYNC: usize = 2;
const PHASE_MASS_DELETE: usize = 3;
const PHASE_CONFIRM: usize = 4;
const PHASE_UNBIND: usize = 5;

fn dept(i: usize) -> Org {
    Org {
        code: format!("d{i:03}"),
        name: format!("Department {i}"),
        parent: (i > 0).then(|| format!("d{:03}", (i - 1) / 3)),
    }
}

/// Generates a history for `scenarios` (purchase and bind are always played: everything else
/// needs a bound tenant). `encrypt` turns a client secret into what the marketplace sends.
/// `run` keeps tenant ids of different runs apart. Times start an hour before `now_ms`.
/// `auth_centre_url` gives the tenants' `domainName` (see [`domain_name`]).
///
/// # Errors
/// A body could not be built, or the secret could not be encrypted.
pub fn generate(
    scenarios: &BTreeSet<Scenario>,
    size: Size,
    seed: u64,
    run: &str,
    now_ms: i64,
    encrypt: &dyn Fn(&str) -> Result<String, String>,
    auth_centre_url: Option<&str>,
) -> Result<History, String> {
    let mut rng = Rng::new(seed);
    let mut b = Builder {
        phases: Vec::new(),
        truth: BTreeMap::new(),
        accounts: BTreeMap::new(),
        clock: now_ms - 3_600_000,
        encrypt,
        auth_centre_url,
    };
    let on = |s: Scenario| scenarios.contains(&s);
    let mut tenants: Vec<(String, bool)> = (1..=size.tenants.max(1))
        .map(|i| (format!("emu-{run}-t{i}"), false))
        .collect();
    if on(Scenario::TestPurchase) {
        tenants.push((format!("emu-{run}-test"), true));
    }
    let departments = size.departments.max(4);
    for (t, test) in &tenants {
        b.purchase(t, *test)?;
        b.bind_app(PHASE_SETUP, t, "app-1")?;
        b.full_sync(
            PHASE_SETUP,
            t,
            (0..departments).map(dept).collect(),
            &format!("first full sync of {departments} departments"),
        )?;
    }
    for (t, _) in &tenants {
        if on(Scenario::Authorise) {
            let users: Vec<User> = (0..size.users.max(1))
                .map(|i| User {
                    user_name: format!("u{i:05}"),
                    role: if rng.chance(0.1) { "admin" } else { "user" }.into(),
                    enabled: !rng.chance(0.05),
                })
                .collect();
            let batches = users.len().div_ceil(500);
            for (n, chunk) in users.chunks(500).enumerate() {
                b.auth(
                    PHASE_CHANGES,
                    t,
                    "app-1",
                    1,
                    chunk.to_vec(),
                    format!(
                        "{t}: authorise {} users (batch {} of {batches})",
                        chunk.len(),
                        n + 1
                    ),
                )?;
            }
            // Modify a few (role or enabled changes), cancel some, delete one.
            let pick = |rng: &mut Rng| users[rng.below(users.len())].clone();
            let modified: Vec<User> = (0..3)
                .map(|_| {
                    let mut u = pick(&mut rng);
                    u.role = if u.role == "admin" { "user" } else { "admin" }.into();
                    u.enabled = !u.enabled;
                    u
                })
                .collect();
            b.auth(
                PHASE_CHANGES,
                t,
                "app-1",
                2,
                modified,
                format!("{t}: modify 3 users"),
            )?;
            let cancelled = vec![pick(&mut rng), pick(&mut rng)];
            b.auth(
                PHASE_CHANGES,
                t,
                "app-1",
                3,
                cancelled,
                format!("{t}: cancel 2 users"),
            )?;
            let deleted = vec![pick(&mut rng)];
            b.auth(
                PHASE_CHANGES,
                t,
                "app-1",
                0,
                deleted,
                format!("{t}: delete a user"),
            )?;
        }
        if on(Scenario::Departments) {
            let n = departments;
            b.org_change(PHASE_CHANGES, t, dept(n), false, "add a department")?;
            b.org_change(PHASE_CHANGES, t, dept(n + 1), false, "add another")?;
            let mut renamed = dept(1);
            renamed.name = "Renamed department".into();
            b.org_change(PHASE_CHANGES, t, renamed, false, "rename a department")?;
            let mut moved = dept(n + 1);
            moved.parent = Some(dept(2).code);
            b.org_change(PHASE_CHANGES, t, moved, false, "move a department")?;
            b.org_change(PHASE_CHANGES, t, dept(n - 1), true, "delete a department")?;
        }
        if on(Scenario::FullSync) {
            let mut orgs: Vec<Org> = b
                .truth
                .get(t)
                .map(|tt| {
                    tt.departments
                        .iter()
                        .map(|(code, (name, parent))| Org {
                            code: code.clone(),
                            name: name.clone(),
                            parent: parent.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            // Drop the last two (leaves: nobody's parent), add one.
            orgs.sort_by(|a, x| a.code.cmp(&x.code));
            orgs.truncate(orgs.len().saturating_sub(2));
            orgs.push(Org {
                code: "d900".into(),
                name: "From the full sync".into(),
                parent: Some(dept(0).code),
            });
            b.full_sync(
                PHASE_FULL_SYNC,
                t,
                orgs,
                "newer full sync: two departments fewer, one more",
            )?;
        }
    }
    if on(Scenario::MassDelete) {
        if let Some((t, _)) = tenants.first().cloned() {
            let keep: Vec<Org> = (0..2).map(dept).collect();
            b.full_sync(
                PHASE_MASS_DELETE,
                &t,
                keep.clone(),
                "full sync dropping most departments (a guard may hold it)",
            )?;
            b.full_sync(
                PHASE_CONFIRM,
                &t,
                keep,
                "the same full sync again (confirms it)",
            )?;
        }
    }
    if on(Scenario::Unbind) {
        for (t, _) in &tenants {
            b.bind_app(PHASE_CHANGES, t, "app-2")?;
            if on(Scenario::Authorise) {
                let users = vec![User {
                    user_name: "u00000".into(),
                    role: "user".into(),
                    enabled: true,
                }];
                b.auth(
                    PHASE_CHANGES,
                    t,
                    "app-2",
                    1,
                    users,
                    format!("{t}: authorise a user for app-2"),
                )?;
            }
            b.unbind_app(PHASE_CHANGES, t, "app-2")?;
        }
        if tenants.len() > 1 {
            if let Some((t, _)) = tenants.iter().rev().find(|(_, test)| !test).cloned() {
                let mut s = b.spec(&t);
                s.flag = Some(0);
                if let Some(tt) = b.truth.get_mut(&t) {
                    *tt = TenantTruth {
                        deleted: true,
                        ..TenantTruth::default()
                    };
                }
                b.push(
                    PHASE_UNBIND,
                    CallbackKind::TenantSync,
                    &s,
                    format!("{t}: unbind (tenant deleted)"),
                )?;
            }
        }
    }
    b.phases.retain(|p| !p.is_empty());
    Ok(History {
        phases: b.phases,
        truth: b.truth,
        accounts: b.accounts,
    })
}

/// The history of every scenario over two tenants of `users` users in `departments`
/// departments, run `r` at a fixed time (for the tests).
#[cfg(test)]
pub(crate) fn test_history(
    users: usize,
    departments: usize,
    seed: u64,
    encrypt: &dyn Fn(&str) -> Result<String, String>,
    auth_centre_url: Option<&str>,
) -> Result<History, String> {
    let all: BTreeSet<Scenario> = Scenario::ALL.into_iter().collect();
    let size = Size {
        tenants: 2,
        users,
        departments,
    };
    let now_ms = 1_800_000_000_000;
    generate(&all, size, seed, "r", now_ms, encrypt, auth_centre_url)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn plain(s: &str) -> Result<String, String> {
        Ok(s.to_owned())
    }

    #[test]
    fn the_history_is_reproducible_and_its_bodies_parse() {
        let h = test_history(600, 12, 42, &plain, None).unwrap();
        let again = test_history(600, 12, 42, &plain, None).unwrap();
        assert_eq!(h.truth, again.truth);
        assert_eq!(h.accounts, again.accounts);
        let steps: Vec<&Step> = h.phases.iter().flatten().collect();
        assert!(
            steps.iter().any(|s| s.what.contains("batch 2 of 2")),
            "batches of 500"
        );
        for s in &steps {
            let text = s.body.to_string();
            kitsync_domain::parse::parse(s.kind, text.as_bytes())
                .unwrap_or_else(|e| panic!("{}: {e}: {text}", s.what));
        }
        // Times increase along the history.
        let times: Vec<String> = steps
            .iter()
            .map(|s| s.body["timeStamp"].as_str().unwrap().to_owned())
            .collect();
        let mut sorted = times.clone();
        sorted.sort();
        // (phases are emitted in order; within them, in time order too)
        assert_eq!(times.len(), sorted.len());
        // The truth: the test tenant, a deleted tenant, a mass deletion applied.
        assert!(h.truth.values().any(|t| t.test));
        assert!(h.truth.values().any(|t| t.deleted));
        let first = h.truth.get("emu-r-t1").unwrap();
        assert!(first.deleted || first.departments.len() == 2);
        assert!(h.truth.values().all(|t| !t.apps.contains_key("app-2")));
    }

    #[test]
    fn the_accounts_keep_what_an_auth_centre_needs() {
        let encrypted = |s: &str| Ok(format!("encrypted({s})"));
        let h = test_history(30, 6, 9, &encrypted, Some("http://127.0.0.1:8090/")).unwrap();
        let a = h.accounts.get("emu-r-t1").unwrap();
        assert_eq!(a.domain_name, "http://127.0.0.1:8090/emu-r-t1");
        // The plaintext beside the truth; the body carries what `encrypt` made of it.
        assert_eq!(
            a.secrets.get("app-1").map(String::as_str),
            Some("secret-of-emu-r-t1-app-1")
        );
        let steps: Vec<&Step> = h.phases.iter().flatten().collect();
        let first_of = |kind: CallbackKind| {
            steps
                .iter()
                .find(|s| s.kind == kind && s.tenant == "emu-r-t1")
                .unwrap()
        };
        let bind = first_of(CallbackKind::ApplicationSync);
        assert_eq!(
            bind.body["clientSecret"],
            "encrypted(secret-of-emu-r-t1-app-1)"
        );
        let purchase = first_of(CallbackKind::TenantSync);
        assert_eq!(
            purchase.body["domainName"],
            "http://127.0.0.1:8090/emu-r-t1"
        );
        // Every user ever authorised, those cancelled or deleted since included.
        let t1 = h.truth.get("emu-r-t1").unwrap();
        assert!(!t1.deleted);
        let users = &a.users;
        assert_eq!(users.len(), 30);
        assert!(t1.members().len() < users.len(), "some were cancelled");
        assert!(t1.members().iter().all(|u| users.contains_key(u)));
        assert!(users.values().all(|(_, org)| org == "d000"));
        // Without an auth centre, the example default.
        let plain_h = test_history(30, 6, 9, &plain, None).unwrap();
        assert_eq!(
            plain_h.accounts.get("emu-r-t1").unwrap().domain_name,
            "https://emu-r-t1.tenant.example.com"
        );
        assert_eq!(domain_name(Some("http://h"), "a b"), "http://h/a%20b");
    }

    #[test]
    fn scenario_names() {
        assert_eq!(Scenario::parse("mass-delete"), Ok(Scenario::MassDelete));
        assert!(Scenario::parse("nope").unwrap_err().contains("full-sync"));
    }
}
