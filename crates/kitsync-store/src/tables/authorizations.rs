use super::{table, TOMBSTONE};

table! {
    /// A member's authorisation for one app.
    AuthorizationRow = "authorizations" {
        conflict: [tenant_id, app_id, user_name],
        key: user_name,
        upsert: [role, enabled, test, deleted, version, fp, updated_at],
        tombstone: TOMBSTONE,
        fields: {
            tenant_id: String,
            app_id: String,
            user_name: String,
            role: String,
            enabled: bool,
            test: bool,
            deleted: bool,
            version: i64,
            fp: i64,
            updated_at: i64,
        }
    }
}
