use super::table;

table! {
    /// An app bound to a tenant. `purged_version` is never rewritten by an upsert: it only
    /// rises, with the app's deletes.
    AppRow = "apps" {
        conflict: [tenant_id, app_id],
        key: app_id,
        upsert: [client_id, client_secret, test, deleted, version, fp, updated_at],
        // A tombstone drops the secret: a deleted app's credential has no reason to stay.
        tombstone: &["client_secret", "deleted", "version", "fp", "updated_at"],
        fields: {
            tenant_id: String,
            app_id: String,
            client_id: String,
            /// Sealed with the master key; empty on a tombstone.
            client_secret: String,
            test: bool,
            deleted: bool,
            version: i64,
            fp: i64,
            purged_version: i64,
            updated_at: i64,
        }
    }
}
