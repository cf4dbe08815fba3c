use super::{table, TOMBSTONE};

table! {
    /// A department of a tenant.
    DepartmentRow = "departments" {
        conflict: [tenant_id, org_code],
        key: org_code,
        upsert: [org_name, parent_code, test, deleted, version, fp, updated_at],
        tombstone: TOMBSTONE,
        fields: {
            tenant_id: String,
            org_code: String,
            org_name: String,
            parent_code: Option<String>,
            test: bool,
            deleted: bool,
            version: i64,
            fp: i64,
            updated_at: i64,
        }
    }
}
