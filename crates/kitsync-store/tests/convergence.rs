//! The property the product promises (docs/protocol.md §7): the final state after any delivery
//! order and any duplication equals the state after applying the same changes in timestamp
//! order — and applying a history again changes nothing.
//!
//! Random histories over one or two tenants, with small pools of apps, users and departments so
//! changes collide often, are applied (a) one by one in version order and (b) shuffled, with
//! duplicates, in random-size batches, and (c) newest first in one batch, to the same database
//! under distinct tenant ids; each tenant's [`Store::snapshot`] must equal the directory an
//! independent last-writer-wins reference computes from the history
//! (`tests/reference/mod.rs`), so a store that got a rule wrong the same way on every path
//! fails too. (d) The same delivery as one batch must answer and journal every command as it
//! does applied one command per transaction. A second property lets versions tie. So that the comparison is not won on empty
//! directories, at least half the cases must end with a live row, and each kind of row must be
//! live at the end of a share of them. `PROPTEST_CASES` overrides the number of cases.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic
mod common;
mod reference;

use common::{app_del, flagged, org_del, tenant_del};
use kitsync_domain::{
    AppChange, AuthChange, AuthOp, AuthUser, Command, FullOrgSnapshot, KitTime, Op, OrgChange,
    OrgInfo, Role, SecretText, TenantChange,
};
use kitsync_store::Store;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::sync::Mutex;

#[derive(Debug, Clone)]
enum Ev {
    TenantUp {
        t: u8,
        name: u8,
        inst: u8,
    },
    TenantDel {
        t: u8,
    },
    AppUp {
        t: u8,
        app: u8,
        client: u8,
    },
    AppDel {
        t: u8,
        app: u8,
    },
    OrgUp {
        t: u8,
        org: u8,
        name: u8,
        parent: Option<u8>,
    },
    OrgDel {
        t: u8,
        org: u8,
    },
    Full {
        t: u8,
        orgs: Vec<(u8, u8, Option<u8>)>,
    },
    Auth {
        t: u8,
        app: u8,
        op: AuthOp,
        users: Vec<(u8, bool, bool, u8, u8)>,
    },
}

/// One generated change: what it does, its version slot and test flag.
#[derive(Debug, Clone)]
struct Change {
    ev: Ev,
    slot: u8,
    test: bool,
}

#[derive(Debug, Clone)]
struct Case {
    tenants: u8,
    ties: bool,
    history: Vec<Change>,
    /// Indices (into the history) delivered more than once.
    dups: Vec<prop::sample::Index>,
    /// Seed of the delivery order.
    seed: u64,
    /// Sizes of the successive `apply_batch` calls.
    batches: Vec<usize>,
}

fn ev(tenants: u8) -> impl Strategy<Value = Ev> {
    let t = 0..tenants;
    let parent = prop::option::of(0..5u8);
    let auth_op = prop_oneof![
        Just(AuthOp::Add),
        Just(AuthOp::Modify),
        Just(AuthOp::Delete),
        Just(AuthOp::Cancel)
    ];
    let user = (0..4u8, any::<bool>(), any::<bool>(), 0..3u8, 0..3u8);
    prop_oneof![
        3 => (t.clone(), 0..3u8, 0..3u8).prop_map(|(t, name, inst)| Ev::TenantUp { t, name, inst }),
        1 => t.clone().prop_map(|t| Ev::TenantDel { t }),
        2 => (t.clone(), 0..2u8, 0..3u8).prop_map(|(t, app, client)| Ev::AppUp { t, app, client }),
        2 => (t.clone(), 0..2u8).prop_map(|(t, app)| Ev::AppDel { t, app }),
        3 => (t.clone(), 0..5u8, 0..3u8, parent.clone())
            .prop_map(|(t, org, name, parent)| Ev::OrgUp { t, org, name, parent }),
        2 => (t.clone(), 0..5u8).prop_map(|(t, org)| Ev::OrgDel { t, org }),
        2 => (t.clone(), prop::collection::vec((0..5u8, 0..3u8, parent), 0..5))
            .prop_map(|(t, orgs)| Ev::Full { t, orgs }),
        4 => (t, 0..2u8, auth_op, prop::collection::vec(user, 1..4))
            .prop_map(|(t, app, op, users)| Ev::Auth { t, app, op, users }),
    ]
}

fn case(ties: bool) -> impl Strategy<Value = Case> {
    // Mostly one tenant, so changes collide; sometimes two, to check they stay apart.
    prop_oneof![2 => Just(1u8), 1 => Just(2u8)].prop_flat_map(move |tenants| {
        let change = (ev(tenants), 0..6u8, any::<bool>()).prop_map(|(ev, slot, test)| Change {
            ev,
            slot,
            test,
        });
        (
            prop::collection::vec(change, 1..48),
            prop::collection::vec(any::<prop::sample::Index>(), 0..12),
            any::<u64>(),
            prop::collection::vec(1..7usize, 1..12),
        )
            .prop_map(move |(history, dups, seed, batches)| Case {
                tenants,
                ties,
                history,
                dups,
                seed,
                batches,
            })
    })
}

impl Case {
    /// Versions are distinct (position in the history), or drawn from six slots when ties
    /// are allowed (then changes of every kind share versions, full snapshots included).
    fn version(&self, i: usize) -> i64 {
        if self.ties {
            1_000 + 10 * i64::from(self.history[i].slot)
        } else {
            1_000 + 10 * i as i64
        }
    }

    fn test_flag(&self, i: usize) -> bool {
        let c = &self.history[i];
        if self.ties {
            // Real tenants keep one test flag; with equal versions, a department's test flag
            // is outside its fingerprint (`org_fingerprint`), so keep it per tenant here.
            tenant_of(&c.ev) == 1
        } else {
            c.test
        }
    }

    fn command(&self, i: usize, prefix: &str) -> Command {
        let v = KitTime(self.version(i));
        let test = self.test_flag(i);
        let tid = |t: u8| format!("{prefix}t{t}");
        let code = |o: u8| format!("d{o}");
        match &self.history[i].ev {
            Ev::TenantUp { t, name, inst } => Command::Tenant(TenantChange {
                tenant_id: tid(*t),
                instance_id: (*inst > 0).then(|| format!("i{inst}")),
                order_id: None,
                tenant_code: format!("code{t}"),
                name: format!("name{name}"),
                domain_name: "https://d.example".into(),
                op: Op::Upsert,
                test,
                version: v,
            }),
            Ev::TenantDel { t } => flagged(tenant_del(&tid(*t), v.0), test),
            Ev::AppUp { t, app, client } => Command::App(AppChange {
                tenant_id: tid(*t),
                instance_id: Some(format!("i{}", client % 2)),
                app_id: format!("a{app}"),
                client_id: format!("c{client}"),
                client_secret: SecretText(format!("s{client}")),
                secret_fp: None,
                op: Op::Upsert,
                test,
                version: v,
            }),
            Ev::AppDel { t, app } => flagged(app_del(&tid(*t), &format!("a{app}"), v.0), test),
            Ev::OrgUp {
                t,
                org,
                name,
                parent,
            } => Command::Org(OrgChange {
                tenant_id: tid(*t),
                instance_id: None,
                org_code: code(*org),
                org_name: format!("n{name}"),
                parent_code: parent.map(code),
                op: Op::Upsert,
                test,
                version: v,
            }),
            Ev::OrgDel { t, org } => flagged(org_del(&tid(*t), &code(*org), v.0), test),
            Ev::Full { t, orgs } => Command::FullOrg(FullOrgSnapshot {
                tenant_id: tid(*t),
                instance_id: Some("i1".into()),
                orgs: orgs
                    .iter()
                    .map(|(o, n, p)| OrgInfo {
                        org_code: code(*o),
                        org_name: format!("n{n}"),
                        parent_code: p.map(code),
                    })
                    .collect(),
                test,
                version: v,
            }),
            Ev::Auth { t, app, op, users } => Command::Auth(AuthChange {
                tenant_id: tid(*t),
                instance_id: Some("i2".into()),
                app_id: format!("a{app}"),
                op: *op,
                users: users
                    .iter()
                    .map(|(u, admin, enabled, name, org)| AuthUser {
                        name: Some(format!("name{name}")),
                        org_code: Some(code(*org)),
                        position: (*name == 1).then(|| "Engineer".into()),
                        employee_type: (*org > 0).then_some(i32::from(*org)),
                        role: if *admin { Role::Admin } else { Role::User },
                        enabled: *enabled,
                        email: Some(format!("u{u}@example.com")),
                        extension: (*name == 2).then(|| r#"{"k":1}"#.into()),
                        ..AuthUser::named(format!("u{u}"))
                    })
                    .collect(),
                test,
                version: v,
                time_stamp: None,
            }),
        }
    }

    /// The delivery: every change, the duplicates, in an order drawn from the seed.
    fn delivery(&self) -> Vec<usize> {
        let n = self.history.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.extend(self.dups.iter().map(|d| d.index(n)));
        let mut x = self.seed | 1;
        for i in (1..order.len()).rev() {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        order
    }
}

fn tenant_of(ev: &Ev) -> u8 {
    match ev {
        Ev::TenantUp { t, .. }
        | Ev::TenantDel { t }
        | Ev::AppUp { t, .. }
        | Ev::AppDel { t, .. }
        | Ev::OrgUp { t, .. }
        | Ev::OrgDel { t, .. }
        | Ev::Full { t, .. }
        | Ev::Auth { t, .. } => *t,
    }
}

/// Applies the case three ways and compares every tenant with the reference; returns which
/// kinds of row (`reference::KIND_NAMES`) some tenant holds live at the end.
async fn check(store: &Store, case: &Case, run: usize) -> Result<[bool; 5], String> {
    let in_order = format!("r{run}o-");
    let shuffled = format!("r{run}s-");
    let reversed = format!("r{run}r-");
    let err = |e: kitsync_store::StoreError| e.to_string();

    // What every tenant must end as, whatever the path (the state does not name the tenant).
    let history: Vec<Command> = (0..case.history.len())
        .map(|i| case.command(i, ""))
        .collect();
    let mut expected = Vec::new();
    let mut live = [false; 5];
    for t in 0..case.tenants {
        let state = reference::expected(&history, &format!("t{t}"))?;
        for (any, kind) in live.iter_mut().zip(reference::live_kinds(&state)) {
            *any |= kind;
        }
        expected.push(state);
    }
    let compare = |path: &str, prefix: &str, t: u8, got: &kitsync_store::DirectoryState| {
        if *got == expected[usize::from(t)] {
            return Ok(());
        }
        Err(format!(
            "tenant {prefix}t{t}, {path}, differs from the reference\nstore: {got:#?}\nreference: {:#?}",
            expected[usize::from(t)]
        ))
    };

    // (a) In version order (stable for ties: history order), one command per transaction.
    let mut by_version: Vec<usize> = (0..case.history.len()).collect();
    by_version.sort_by_key(|&i| case.version(i));
    for &i in &by_version {
        store
            .apply(&case.command(i, &in_order))
            .await
            .map_err(err)?;
    }

    // (b) Shuffled, with duplicates, in random-size batches.
    let delivery = case.delivery();
    let mut rest = delivery.as_slice();
    let mut sizes = case.batches.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap_or(&1)).min(rest.len());
        let batch: Vec<Command> = rest[..n]
            .iter()
            .map(|&i| case.command(i, &shuffled))
            .collect();
        store.apply_batch(&batch).await.map_err(err)?;
        rest = &rest[n..];
    }

    // (c) Newest first, all in one transaction: the most adversarial order.
    let batch: Vec<Command> = by_version
        .iter()
        .rev()
        .map(|&i| case.command(i, &reversed))
        .collect();
    store.apply_batch(&batch).await.map_err(err)?;

    let shuffled_path = format!("shuffled {delivery:?}");
    let paths = [
        ("in version order", &in_order),
        (shuffled_path.as_str(), &shuffled),
        ("newest first", &reversed),
    ];
    for t in 0..case.tenants {
        for (path, prefix) in paths {
            let got = store
                .snapshot(&format!("{prefix}t{t}"))
                .await
                .map_err(err)?;
            compare(path, prefix, t, &got)?;
        }
    }

    // Applying the whole history again, as one batch, changes nothing.
    let journal = store.counts().await.map_err(err)?.journal;
    let again: Vec<Command> = (0..case.history.len())
        .map(|i| case.command(i, &shuffled))
        .collect();
    let outcomes = store.apply_batch(&again).await.map_err(err)?;
    if let Some(o) = outcomes
        .iter()
        .find(|o| matches!(o, kitsync_store::Outcome::Applied { .. }))
    {
        return Err(format!("a repeat applied: {o:?}; outcomes {outcomes:?}"));
    }
    if store.counts().await.map_err(err)?.journal != journal {
        return Err("the journal grew on a repeat".into());
    }
    for t in 0..case.tenants {
        let got = store
            .snapshot(&format!("{shuffled}t{t}"))
            .await
            .map_err(err)?;
        compare("after a repeat", &shuffled, t, &got)?;
    }
    one_batch_is_one_by_one(store, case, run).await?;
    Ok(live)
}

/// (d) The delivery as one batch decides, answers and journals every command exactly as the
/// same delivery applied one command per transaction (a batch's consecutive authSync commands
/// are written together: this is what makes that invisible).
async fn one_batch_is_one_by_one(store: &Store, case: &Case, run: usize) -> Result<(), String> {
    let err = |e: kitsync_store::StoreError| e.to_string();
    let delivery = case.delivery();
    let (single, batched) = (format!("r{run}1-"), format!("r{run}b-"));
    let mut paths = Vec::new();
    for prefix in [&single, &batched] {
        let head = store.journal_head().await.map_err(err)?;
        let commands: Vec<Command> = delivery.iter().map(|&i| case.command(i, prefix)).collect();
        let outcomes = if prefix == &single {
            let mut out = Vec::new();
            for c in &commands {
                out.push(store.apply(c).await.map_err(err)?);
            }
            out
        } else {
            store.apply_batch(&commands).await.map_err(err)?
        };
        // The journal without the instance rows, which a batch records up front; tenant
        // ids lose the path's prefix.
        let journal: Vec<String> = store
            .journal_after(head, 100_000)
            .await
            .map_err(err)?
            .into_iter()
            .filter(|j| j.tenant_id.starts_with(prefix.as_str()) && j.action != "instance_added")
            .map(|j| {
                format!(
                    "{} {} {} {} {} {} {}",
                    j.tenant_id, j.entity, j.entity_key, j.action, j.version, j.data, j.test
                )
                .replace(prefix.as_str(), "")
            })
            .collect();
        paths.push((outcomes, journal));
    }
    let (one, batch) = (&paths[0], &paths[1]);
    if one.0 != batch.0 {
        return Err(format!(
            "delivery {delivery:?}: one by one answered {:?}, one batch {:?}",
            one.0, batch.0
        ));
    }
    if one.1 != batch.1 {
        return Err(format!(
            "delivery {delivery:?}: the journals differ\none by one: {:#?}\none batch: {:#?}",
            one.1, batch.1
        ));
    }
    Ok(())
}

#[derive(Default)]
struct Tally {
    /// Cases run, shrinking included (each gets fresh tenant ids).
    runs: usize,
    passed: u32,
    /// Passed cases ending with a live row of any kind, and per kind.
    non_empty: u32,
    kinds: [u32; 5],
}

/// Below this many cases (a quick `PROPTEST_CASES` run) the shares are not enforced: too few
/// to tell a degenerate generator from chance.
const MIN_CASES_FOR_SHARES: u32 = 32;

fn run_property(ties: bool, sqlite_cases: u32, pg_cases: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (db, store) = rt.block_on(common::store_with(1.0));
    let default_cases = if db.is_postgres() {
        pg_cases
    } else {
        sqlite_cases
    };
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default_cases);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let tally = Mutex::new(Tally::default());
    let result = runner.run(&case(ties), |case| {
        let run = {
            let mut tally = tally.lock().unwrap();
            tally.runs += 1;
            tally.runs
        };
        let live = rt
            .block_on(check(&store, &case, run))
            .map_err(TestCaseError::fail)?;
        let mut tally = tally.lock().unwrap();
        tally.passed += 1;
        tally.non_empty += u32::from(live.contains(&true));
        for (n, kind) in tally.kinds.iter_mut().zip(live) {
            *n += u32::from(kind);
        }
        Ok(())
    });
    rt.block_on(db.cleanup());
    if let Err(e) = result {
        panic!("{e}");
    }
    let Tally {
        passed: ran,
        non_empty,
        kinds,
        ..
    } = tally.into_inner().unwrap();
    let shares: Vec<String> = reference::KIND_NAMES
        .iter()
        .zip(kinds)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    eprintln!(
        "{ran} cases, {non_empty} ending with a live row; live at the end: {}",
        shares.join(", ")
    );
    if ran < MIN_CASES_FOR_SHARES {
        return;
    }
    // At least half the cases end with a live row, and every kind of row is live at the end
    // of at least a sixteenth of them. Measured over 600 cases: 86 % (ties) and 92 % end
    // with a live row; per kind, at least 43 % (authorisations, ties). At 32 cases a kind
    // live in 43 % of them falls below a sixteenth with a probability under 1e-6.
    assert!(
        2 * non_empty >= ran,
        "only {non_empty} of {ran} cases ended with a live row"
    );
    for (name, n) in reference::KIND_NAMES.iter().zip(kinds) {
        assert!(
            16 * n >= ran,
            "{name} ended live in only {n} of {ran} cases: the comparison is mostly of empty tables"
        );
    }
}

#[test]
fn any_order_and_duplication_converge_to_the_reference_directory() {
    run_property(false, 128, 64);
}

#[test]
fn converges_when_versions_tie() {
    run_property(true, 64, 32);
}
