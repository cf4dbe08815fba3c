//! The journal's vocabulary: what a row is about ([`Entity`]), what happened to it
//! ([`Action`]), and the change feed's event types ([`EventType`]) they make. The journal
//! stores the names as text; everything that writes or interprets them goes through these.

/// Declares a closed vocabulary: an enum, its names, `ALL`, `as_str` and `parse`.
macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every name, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The value named `s` (`None`: not a name of this vocabulary).
            #[must_use]
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                $name::parse(s).ok_or_else(|| {
                    let names: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    format!("`{s}` is not one of {}", names.join(", "))
                })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

vocabulary! {
    /// What a journal row is about.
    Entity {
        Tenant = "tenant",
        App = "app",
        Department = "department",
        Member = "member",
        /// An authorisation purged with its app or tenant.
        Authorization = "authorization",
        Group = "group",
        /// A full department sync held by the mass-deletion guard.
        Plan = "plan",
    }
}

vocabulary! {
    /// What happened to it.
    Action {
        Created = "created",
        Updated = "updated",
        Deleted = "deleted",
        Renamed = "renamed",
        Moved = "moved",
        Authorized = "authorized",
        Deauthorized = "deauthorized",
        Modified = "modified",
        InstanceAdded = "instance_added",
        Held = "held",
        Approved = "approved",
        Rejected = "rejected",
        Confirmed = "confirmed",
        Superseded = "superseded",
    }
}

vocabulary! {
    /// The change feed's event types (`GET /api/v1/events`, webhook deliveries).
    EventType {
        MemberAuthorized = "member.authorized",
        MemberModified = "member.modified",
        MemberDeauthorized = "member.deauthorized",
        MemberRemoved = "member.removed",
        DepartmentAdded = "department.added",
        DepartmentRenamed = "department.renamed",
        DepartmentMoved = "department.moved",
        DepartmentUpdated = "department.updated",
        DepartmentRemoved = "department.removed",
        TenantCreated = "tenant.created",
        TenantUpdated = "tenant.updated",
        TenantDeleted = "tenant.deleted",
        TenantInstanceAdded = "tenant.instance_added",
        AppCreated = "app.created",
        AppUpdated = "app.updated",
        AppDeleted = "app.deleted",
        GroupCreated = "group.created",
        GroupUpdated = "group.updated",
        GroupDeleted = "group.deleted",
        PlanHeld = "plan.held",
        PlanApproved = "plan.approved",
        PlanRejected = "plan.rejected",
        PlanConfirmed = "plan.confirmed",
        PlanSuperseded = "plan.superseded",
    }
}

vocabulary! {
    /// Where a full department sync held by the mass-deletion guard stands.
    PlanStatus {
        /// Waiting for an operator (or a confirming snapshot).
        Held = "held",
        Approved = "approved",
        Rejected = "rejected",
        /// A later snapshot deleting the same departments confirmed it.
        Confirmed = "confirmed",
        /// A later snapshot or tenant delete made it moot.
        Superseded = "superseded",
    }
}

impl PlanStatus {
    /// The journal action of a plan reaching this status.
    #[must_use]
    pub const fn action(self) -> Action {
        match self {
            PlanStatus::Held => Action::Held,
            PlanStatus::Approved => Action::Approved,
            PlanStatus::Rejected => Action::Rejected,
            PlanStatus::Confirmed => Action::Confirmed,
            PlanStatus::Superseded => Action::Superseded,
        }
    }
}

impl EventType {
    /// The event a journal row is (`None`: a pair the write path never journals).
    #[must_use]
    pub fn of(entity: Entity, action: Action) -> Option<EventType> {
        use Action as A;
        use EventType as E;
        Some(match (entity, action) {
            (Entity::Member, A::Authorized) => E::MemberAuthorized,
            (Entity::Member, A::Modified) => E::MemberModified,
            (Entity::Member, A::Deauthorized) | (Entity::Authorization, A::Deleted) => {
                E::MemberDeauthorized
            }
            (Entity::Member, A::Deleted) => E::MemberRemoved,
            (Entity::Department, A::Created) => E::DepartmentAdded,
            (Entity::Department, A::Renamed) => E::DepartmentRenamed,
            (Entity::Department, A::Moved) => E::DepartmentMoved,
            (Entity::Department, A::Updated) => E::DepartmentUpdated,
            (Entity::Department, A::Deleted) => E::DepartmentRemoved,
            (Entity::Tenant, A::Created) => E::TenantCreated,
            (Entity::Tenant, A::Updated) => E::TenantUpdated,
            (Entity::Tenant, A::Deleted) => E::TenantDeleted,
            (Entity::Tenant, A::InstanceAdded) => E::TenantInstanceAdded,
            (Entity::App, A::Created) => E::AppCreated,
            (Entity::App, A::Updated) => E::AppUpdated,
            (Entity::App, A::Deleted) => E::AppDeleted,
            (Entity::Group, A::Created) => E::GroupCreated,
            (Entity::Group, A::Updated) => E::GroupUpdated,
            (Entity::Group, A::Deleted) => E::GroupDeleted,
            (Entity::Plan, A::Held) => E::PlanHeld,
            (Entity::Plan, A::Approved) => E::PlanApproved,
            (Entity::Plan, A::Rejected) => E::PlanRejected,
            (Entity::Plan, A::Confirmed) => E::PlanConfirmed,
            (Entity::Plan, A::Superseded) => E::PlanSuperseded,
            _ => return None,
        })
    }

    /// The journal entities whose rows can be this event.
    #[must_use]
    pub fn entities(self) -> Vec<Entity> {
        Entity::ALL
            .iter()
            .copied()
            .filter(|e| {
                Action::ALL
                    .iter()
                    .any(|a| EventType::of(*e, *a) == Some(self))
            })
            .collect()
    }

    /// The part before the dot: what `types=member` selects.
    #[must_use]
    pub fn prefix(self) -> &'static str {
        let s = self.as_str();
        s.split_once('.').map_or(s, |(p, _)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_comes_from_some_journal_row_and_names_round_trip() {
        for t in EventType::ALL {
            assert!(!t.entities().is_empty(), "{t} comes from no journal row");
            assert_eq!(EventType::parse(t.as_str()), Some(*t));
        }
        for e in Entity::ALL {
            assert_eq!(Entity::parse(e.as_str()), Some(*e));
        }
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(*a));
        }
        assert_eq!(
            EventType::MemberDeauthorized.entities(),
            vec![Entity::Member, Entity::Authorization]
        );
        assert_eq!(
            EventType::of(Entity::Member, Action::Deleted),
            Some(EventType::MemberRemoved)
        );
        assert_eq!(EventType::of(Entity::Plan, Action::Created), None);
        for p in PlanStatus::ALL {
            assert!(EventType::of(Entity::Plan, p.action()).is_some(), "{p}");
        }
        assert_eq!("held".parse::<PlanStatus>(), Ok(PlanStatus::Held));
        assert_eq!(
            "pending".parse::<PlanStatus>(),
            Err("`pending` is not one of held, approved, rejected, confirmed, superseded".into())
        );
        assert_eq!(
            serde_json::to_string(&PlanStatus::Confirmed).unwrap(),
            r#""confirmed""#
        );
    }
}
