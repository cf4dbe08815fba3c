//! The rules that make applying order-insensitive, as pure functions.
//!
//! Every row keeps the [`Rank`] of the change that last wrote it: the marketplace version
//! (its `timeStamp`, or `currentSyncTime` for authSync) and a fingerprint of the written
//! content that breaks ties between different changes carrying the same version, so that the
//! winner never depends on arrival order. Deletes rank above every upsert of the same version
//! and leave the row behind as a tombstone, so a late, older add cannot resurrect it.
//!
//! Deleting a tenant (or an app) purges what belongs to it: the purge version is kept as a
//! *cutoff*, and any later-arriving change at or below the cutoff is [`Decision::Superseded`].
//! A full department snapshot is a cutoff for that tenant's department changes as well: in
//! timestamp order, the snapshot would have overwritten or removed every older department.
use crate::command::{FullOrgSnapshot, OrgInfo};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

/// Version, then fingerprint: compared lexicographically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank {
    pub version: i64,
    pub fp: i64,
}

/// The fingerprint of a delete: above every content fingerprint.
pub const DELETE_FP: i64 = i64::MAX;

impl Rank {
    #[must_use]
    pub fn upsert(version: i64, fp: i64) -> Self {
        Rank { version, fp }
    }

    #[must_use]
    pub fn delete(version: i64) -> Self {
        Rank {
            version,
            fp: DELETE_FP,
        }
    }

    #[must_use]
    pub fn is_delete(self) -> bool {
        self.fp == DELETE_FP
    }
}

/// A stable fingerprint of written content, in `0..i64::MAX` (never [`DELETE_FP`]).
/// `None` and `Some("")` differ.
#[must_use]
pub fn fingerprint(parts: &[Option<&str>]) -> i64 {
    let mut h = Sha256::new();
    for p in parts {
        match p {
            Some(s) => {
                h.update([1u8]);
                h.update((s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
            None => h.update([0u8]),
        }
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_le_bytes(b) % (i64::MAX as u64)) as i64
}

/// What to do with one incoming change to one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Newer than what the row holds: write it.
    Apply,
    /// Exactly what the row already holds (a repeat): nothing to do.
    Duplicate,
    /// Older than what the row holds: ignore.
    Stale,
    /// At or below a purge or snapshot cutoff: a later delete or snapshot already covers it.
    Superseded,
}

/// Decides one change against the row's current rank and the applicable cutoff.
#[must_use]
pub fn decide(current: Option<Rank>, incoming: Rank, cutoff: i64) -> Decision {
    if incoming.version <= cutoff {
        return Decision::Superseded;
    }
    match current {
        None => Decision::Apply,
        Some(c) if incoming > c => Decision::Apply,
        Some(c) if incoming == c => Decision::Duplicate,
        Some(_) => Decision::Stale,
    }
}

/// The department fingerprint, shared by incremental and full syncs so the same content at
/// the same version is a duplicate whichever way it came.
#[must_use]
pub fn org_fingerprint(org_name: &str, parent_code: Option<&str>) -> i64 {
    fingerprint(&[Some(org_name), parent_code])
}

/// A department as stored, for planning a full sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingOrg {
    pub org_code: String,
    pub rank: Rank,
}

impl ExistingOrg {
    #[must_use]
    pub fn is_live(&self) -> bool {
        !self.rank.is_delete()
    }
}

/// What a full snapshot would do to a tenant's departments.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FullSyncPlan {
    /// Snapshot entries newer than the stored row (or with no row).
    pub upserts: Vec<OrgInfo>,
    /// Live departments absent from the snapshot and older than it.
    pub deletes: Vec<String>,
    /// Live departments before the snapshot.
    pub live_before: usize,
    /// The whole snapshot is at or below a cutoff (an older snapshot or a purge).
    pub superseded: bool,
}

impl FullSyncPlan {
    /// True when the plan would delete more than `max_share` (0..=1) of the live departments.
    #[must_use]
    pub fn exceeds_guard(&self, max_share: f64) -> bool {
        self.live_before > 0 && (self.deletes.len() as f64) > max_share * self.live_before as f64
    }

    /// Nothing would change.
    #[must_use]
    pub fn is_noop(&self) -> bool {
        self.upserts.is_empty() && self.deletes.is_empty()
    }
}

/// Plans a full snapshot against the stored departments of its tenant.
///
/// `cutoff` is the highest of the tenant's purge version and its last applied snapshot.
#[must_use]
pub fn plan_full_sync(
    existing: &[ExistingOrg],
    snapshot: &FullOrgSnapshot,
    cutoff: i64,
) -> FullSyncPlan {
    let version = snapshot.version.millis();
    let live_before = existing.iter().filter(|e| e.is_live()).count();
    if version <= cutoff {
        return FullSyncPlan {
            live_before,
            superseded: true,
            ..FullSyncPlan::default()
        };
    }
    let current: HashMap<&str, Rank> = existing
        .iter()
        .map(|e| (e.org_code.as_str(), e.rank))
        .collect();
    let in_snapshot: HashSet<&str> = snapshot.orgs.iter().map(|o| o.org_code.as_str()).collect();
    let upserts = snapshot
        .orgs
        .iter()
        .filter(|o| {
            let rank = Rank::upsert(
                version,
                org_fingerprint(&o.org_name, o.parent_code.as_deref()),
            );
            decide(current.get(o.org_code.as_str()).copied(), rank, cutoff) == Decision::Apply
        })
        .cloned()
        .collect();
    let mut deletes: Vec<String> = existing
        .iter()
        .filter(|e| {
            e.is_live() && e.rank.version < version && !in_snapshot.contains(e.org_code.as_str())
        })
        .map(|e| e.org_code.clone())
        .collect();
    deletes.sort();
    FullSyncPlan {
        upserts,
        deletes,
        live_before,
        superseded: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::KitTime;

    fn snap(version: i64, codes: &[&str]) -> FullOrgSnapshot {
        FullOrgSnapshot {
            tenant_id: "t".into(),
            instance_id: None,
            orgs: codes
                .iter()
                .map(|c| OrgInfo {
                    org_code: (*c).into(),
                    org_name: format!("name {c}"),
                    parent_code: None,
                })
                .collect(),
            test: false,
            version: KitTime(version),
        }
    }

    fn row(code: &str, version: i64) -> ExistingOrg {
        ExistingOrg {
            org_code: code.into(),
            rank: Rank::upsert(version, org_fingerprint(&format!("name {code}"), None)),
        }
    }

    #[test]
    fn newer_wins_repeats_are_duplicates_and_deletes_beat_ties() {
        let r = Rank::upsert(10, 5);
        assert_eq!(decide(None, r, 0), Decision::Apply);
        assert_eq!(decide(Some(r), r, 0), Decision::Duplicate);
        assert_eq!(decide(Some(r), Rank::upsert(9, 99), 0), Decision::Stale);
        assert_eq!(decide(Some(r), Rank::upsert(11, 0), 0), Decision::Apply);
        assert_eq!(decide(Some(r), Rank::delete(10), 0), Decision::Apply);
        assert_eq!(decide(Some(Rank::delete(10)), r, 0), Decision::Stale);
        assert_eq!(
            decide(Some(r), Rank::upsert(12, 0), 12),
            Decision::Superseded
        );
    }

    #[test]
    fn fingerprints_are_stable_and_never_the_delete_mark() {
        assert_eq!(org_fingerprint("a", None), org_fingerprint("a", None));
        assert_ne!(org_fingerprint("a", None), org_fingerprint("a", Some("")));
        assert_ne!(
            fingerprint(&[Some("ab"), Some("c")]),
            fingerprint(&[Some("a"), Some("bc")])
        );
        assert!(org_fingerprint("x", None) < DELETE_FP);
    }

    #[test]
    fn full_sync_deletes_only_older_absent_departments() {
        let existing = vec![row("a", 5), row("b", 5), row("c", 20), row("d", 5)];
        let plan = plan_full_sync(&existing, &snap(10, &["a", "b"]), 0);
        assert_eq!(
            plan.deletes,
            vec!["d".to_string()],
            "c is newer than the snapshot"
        );
        assert_eq!(plan.upserts.len(), 2);
        assert_eq!(plan.live_before, 4);
        assert!(!plan.exceeds_guard(0.5));
        let plan = plan_full_sync(&existing, &snap(10, &[]), 0);
        assert_eq!(plan.deletes.len(), 3);
        assert!(plan.exceeds_guard(0.5));
        assert!(!plan.exceeds_guard(1.0));
        assert!(plan_full_sync(&existing, &snap(10, &["a"]), 10).superseded);
    }

    #[test]
    fn full_sync_repeat_is_a_noop() {
        let existing = vec![row("a", 10), row("b", 10)];
        assert!(plan_full_sync(&existing, &snap(10, &["a", "b"]), 0).is_noop());
    }
}
