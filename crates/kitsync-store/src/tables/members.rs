use super::{table, TOMBSTONE};

table! {
    /// A member's profile, one per tenant (the newest change from any app wins).
    MemberRow = "members" {
        conflict: [tenant_id, user_name],
        key: user_name,
        upsert: [
            name, org_code, position, employee_code, employee_type, mobile, email, work_place,
            entry_date, extension, test, deleted, version, fp, updated_at
        ],
        tombstone: TOMBSTONE,
        fields: {
            tenant_id: String,
            user_name: String,
            name: Option<String>,
            org_code: Option<String>,
            position: Option<String>,
            employee_code: Option<String>,
            employee_type: Option<i32>,
            mobile: Option<String>,
            email: Option<String>,
            work_place: Option<String>,
            entry_date: Option<String>,
            extension: Option<String>,
            test: bool,
            deleted: bool,
            version: i64,
            fp: i64,
            updated_at: i64,
        }
    }
}
