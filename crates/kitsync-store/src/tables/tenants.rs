use super::{table, TOMBSTONE};

table! {
    /// An enterprise customer.
    TenantRow = "tenants" {
        conflict: [tenant_id],
        key: tenant_id,
        upsert: [tenant_code, name, domain_name, test, deleted, version, fp, updated_at],
        tombstone: TOMBSTONE,
        fields: {
            tenant_id: String,
            tenant_code: String,
            name: String,
            domain_name: Option<String>,
            test: bool,
            deleted: bool,
            version: i64,
            fp: i64,
            updated_at: i64,
        }
    }
}
