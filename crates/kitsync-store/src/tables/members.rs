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

impl MemberRow {
    /// The live row of `user`'s profile in `tenant`, ranked `rank`, written at `now`.
    #[must_use]
    pub fn of_user(
        tenant: &str,
        user: &kitsync_domain::AuthUser,
        rank: kitsync_domain::decide::Rank,
        test: bool,
        now: i64,
    ) -> Self {
        MemberRow {
            tenant_id: tenant.to_owned(),
            user_name: user.user_name.clone(),
            name: user.name.clone(),
            org_code: user.org_code.clone(),
            position: user.position.clone(),
            employee_code: user.employee_code.clone(),
            employee_type: user.employee_type,
            mobile: user.mobile.clone(),
            email: user.email.clone(),
            work_place: user.work_place.clone(),
            entry_date: user.entry_date.clone(),
            extension: user.extension.clone(),
            test,
            deleted: false,
            version: rank.version,
            fp: rank.fp,
            updated_at: now,
        }
    }
}
