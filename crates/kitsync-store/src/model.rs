//! What the store hands back: outcomes, settings, and read-side views.
use kitsync_domain::SecretText;
use serde::{Deserialize, Serialize};

/// Store configuration (`[store]` in `kitsync.toml`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct StoreSettings {
    /// A full department snapshot that would delete more than this share (0..=1) of the
    /// tenant's live departments is held as a plan instead of being applied. 1.0 disables the
    /// guard.
    pub mass_delete_share: f64,
    /// Raw activity events are kept this many days (the daily rollups for good); older
    /// events are refused by `POST /api/v1/activity` and pruned.
    pub activity_retention_days: u32,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            mass_delete_share: 0.5,
            activity_retention_days: 400,
        }
    }
}

/// What applying one command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum Outcome {
    /// At least one directory row was written (tombstones included), or a purge/snapshot
    /// cutoff moved (then `changed` may be 0). Batches where some rows were stale still count
    /// as applied.
    Applied { changed: u32 },
    /// Everything was an exact repeat of what is stored.
    Duplicate,
    /// Nothing written: the stored rows are newer.
    Stale,
    /// At or below a purge or snapshot cutoff: a later tenant/app delete or full snapshot
    /// already covers it.
    Superseded,
    /// A full department snapshot held by the mass-deletion guard.
    Held { plan_id: i64 },
    /// Not applied: a replay of a callback another message carried (its replay key is held
    /// by that message in the ledger).
    Replayed,
}

/// A held (or decided) full department snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub id: i64,
    pub tenant_id: String,
    /// The snapshot's `timeStamp` (Unix ms).
    pub version: i64,
    pub status: crate::journal::PlanStatus,
    /// Departments in the snapshot.
    pub org_count: i32,
    /// Live departments when the plan was made.
    pub live_before: i32,
    pub delete_count: i32,
    /// The org codes it would delete (as planned when held).
    pub deletes: Vec<String>,
    pub created_at: i64,
    pub decided_at: Option<i64>,
    pub reason: Option<String>,
}

/// The live directory of one tenant: tombstones are absent, every row shows the version of
/// the change that wrote it. Rows are sorted by key, so two states compare with `==`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryState {
    /// `None` when the tenant was never added or is deleted.
    pub tenant: Option<TenantState>,
    /// Every instance id seen for the tenant, sorted.
    pub instance_ids: Vec<String>,
    pub apps: Vec<AppState>,
    pub departments: Vec<DepartmentState>,
    pub members: Vec<MemberState>,
    pub authorizations: Vec<AuthorizationState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantState {
    pub tenant_code: String,
    pub name: String,
    pub domain_name: Option<String>,
    pub test: bool,
    pub version: i64,
}

/// A live tenant as the directory API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    pub tenant_id: String,
    pub tenant_code: String,
    pub name: String,
    pub domain_name: Option<String>,
    pub test: bool,
    /// Sorted.
    pub instance_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppState {
    pub app_id: String,
    pub client_id: String,
    /// Sealed; compared by tests, never serialised or shown by `Debug`.
    #[serde(skip)]
    pub client_secret: SecretText,
    pub test: bool,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DepartmentState {
    pub org_code: String,
    pub org_name: String,
    pub parent_code: Option<String>,
    pub test: bool,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberState {
    pub user_name: String,
    pub name: Option<String>,
    pub org_code: Option<String>,
    pub position: Option<String>,
    pub employee_code: Option<String>,
    pub employee_type: Option<i32>,
    pub mobile: Option<String>,
    pub email: Option<String>,
    pub work_place: Option<String>,
    pub entry_date: Option<String>,
    pub extension: Option<String>,
    pub test: bool,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationState {
    pub app_id: String,
    pub user_name: String,
    pub role: String,
    pub enabled: bool,
    pub test: bool,
    pub version: i64,
}

/// A per-app role group, derived from the live authorisations: id `{appId}:{role}`, display
/// name `{appId} {role}s`, members sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DerivedGroup {
    pub group_id: String,
    pub display_name: String,
    pub app_id: String,
    pub role: String,
    pub members: Vec<String>,
}

/// One row of the change journal.
///
/// Vocabulary (`entity` / `action`):
/// - `tenant`, `app`, `member`, `authorization`: `created` (no row, or a tombstone, became
///   live), `updated` (a live row was rewritten by a newer change), `deleted` (a tombstone was
///   written: a delete, a purge, or the delete of a row never seen).
/// - `department`: the same, except that a live→live rewrite is `renamed` when only the name
///   changed, `moved` when only the parent changed, and `updated` otherwise.
/// - `tenant` / `instance_added`: a new instance id was recorded for the tenant.
/// - `group` / `deleted`: an ISV-created group removed by a tenant delete.
/// - `plan`: the new status of a full-sync plan (`held`, `approved`, `rejected`, `confirmed`,
///   `superseded`).
///
/// `entity_key`: the tenant id, app id, org code, user name, `{appId}:{userName}` for an
/// authorisation, the group id, or the plan id. `data` is the row's new state in camelCase
/// (for a tombstone, its key fields and `"deleted": true`); it never holds a secret.
/// `version` is the version the row now carries: the change's, except for a department a
/// full snapshot at `V` removed, which is stamped `V - 1` (see the crate docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    pub id: i64,
    pub tenant_id: String,
    pub entity: String,
    pub entity_key: String,
    pub action: String,
    /// The marketplace version of the change that wrote the row.
    pub version: i64,
    pub data: serde_json::Value,
    pub test: bool,
    /// When kitsync applied it (Unix ms).
    pub applied_at: i64,
}

/// Live rows per table, plus journal rows and held plans (for tests and benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub tenants: u64,
    pub apps: u64,
    pub departments: u64,
    pub members: u64,
    pub authorizations: u64,
    pub journal: u64,
    pub held_plans: u64,
}
