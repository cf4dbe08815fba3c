//! sea-orm entities for the directory tables (migration `m20261122_000001_directory`).
//!
//! The read side uses them; the write path is hand-written set-based SQL (see `apply`).
//! Every directory row carries `version`/`fp` (its rank) and `deleted` (tombstone): readers
//! want `deleted = false`.
use sea_orm::DeriveValueType;
use std::fmt;

/// A sealed `clientSecret` as stored: `Debug` never shows it, so no entity dump leaks it.
#[derive(Clone, PartialEq, Eq, DeriveValueType)]
pub struct SealedSecret(pub String);

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealedSecret(<redacted>)")
    }
}

pub mod tenants {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        pub tenant_code: String,
        pub name: String,
        pub domain_name: Option<String>,
        pub test: bool,
        pub deleted: bool,
        pub version: i64,
        pub fp: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod tenant_marks {
    use sea_orm::entity::prelude::*;

    /// Per-tenant cutoffs, and the row each apply transaction locks first.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenant_marks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// Highest tenant-delete version.
        pub purged_version: i64,
        /// Highest applied full department snapshot version.
        pub org_snapshot_version: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod tenant_instances {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenant_instances")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub instance_id: String,
        pub first_seen_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod apps {
    use super::SealedSecret;
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "apps")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub app_id: String,
        pub client_id: String,
        /// Sealed by the ingress; empty on a tombstone.
        pub client_secret: SealedSecret,
        pub test: bool,
        pub deleted: bool,
        pub version: i64,
        pub fp: i64,
        /// Highest app-delete version: the cutoff for this app's authorisations.
        pub purged_version: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod departments {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "departments")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub org_code: String,
        pub org_name: String,
        /// `None` for a top-level department.
        pub parent_code: Option<String>,
        pub test: bool,
        pub deleted: bool,
        pub version: i64,
        pub fp: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod members {
    use sea_orm::entity::prelude::*;

    /// A member's profile: one per tenant, the newest authSync from any app wins.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "members")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
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
        /// Tenant-configured attributes, compact JSON text as received.
        pub extension: Option<String>,
        pub test: bool,
        pub deleted: bool,
        pub version: i64,
        pub fp: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod authorizations {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "authorizations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub app_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_name: String,
        /// `user` or `admin`.
        pub role: String,
        pub enabled: bool,
        pub test: bool,
        pub deleted: bool,
        pub version: i64,
        pub fp: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod groups {
    use sea_orm::entity::prelude::*;

    /// A group the ISV created (SCIM). Role groups are derived, not stored.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "groups")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub group_id: String,
        pub display_name: String,
        pub source: String,
        pub created_at: i64,
        pub updated_at: i64,
        /// Raised by every write: the SCIM ETag (`W/"{version}"`).
        pub version: i64,
        /// The SCIM client's own id for the group.
        pub external_id: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod group_members {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "group_members")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub group_id: String,
        /// The member's id: a user name, or a group id when `member_type` is `Group`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_name: String,
        /// SCIM `type` as the client gave it (`User`, `Group`), if it did.
        pub member_type: Option<String>,
        /// Order within the group, as written.
        pub position: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod journal {
    use sea_orm::entity::prelude::*;

    /// One directory row written (see [`crate::JournalEntry`] for the vocabulary).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "journal")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub tenant_id: String,
        pub entity: String,
        pub entity_key: String,
        pub action: String,
        pub version: i64,
        /// JSON of the row's new state (never a secret).
        pub data: String,
        pub test: bool,
        pub applied_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod org_plans {
    use sea_orm::entity::prelude::*;

    /// A full department snapshot held by the mass-deletion guard.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "org_plans")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub tenant_id: String,
        pub version: i64,
        /// JSON of the `FullOrgSnapshot`.
        pub snapshot: String,
        /// JSON array of the org codes the snapshot would delete when it was held.
        pub deletes: String,
        pub delete_count: i32,
        pub live_before: i32,
        pub org_count: i32,
        /// `held`, `approved`, `rejected`, `confirmed` or `superseded`.
        pub status: String,
        pub created_at: i64,
        pub decided_at: Option<i64>,
        pub reason: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
