//! What an API token may do (README.md, `kitsync token create`): read the directory, write the ISV's own groups
//! (SCIM), write activity, read statistics, or administer (which includes the others).
use crate::error::FieldError;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    DirectoryRead,
    /// Write the ISV's own groups (SCIM Groups); the marketplace's data stays read-only.
    DirectoryWrite,
    ActivityWrite,
    StatsRead,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::DirectoryRead,
        Scope::DirectoryWrite,
        Scope::ActivityWrite,
        Scope::StatsRead,
        Scope::Admin,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::DirectoryRead => "directory:read",
            Scope::DirectoryWrite => "directory:write",
            Scope::ActivityWrite => "activity:write",
            Scope::StatsRead => "stats:read",
            Scope::Admin => "admin",
        }
    }

    /// Parses a comma-separated scope list (`directory:read,stats:read`), sorted, without
    /// repeats.
    ///
    /// # Errors
    /// An unknown or empty scope, naming it and the valid ones.
    pub fn parse_list(list: &str) -> Result<Vec<Scope>, FieldError> {
        let mut out = Vec::new();
        for part in list.split(',').map(str::trim) {
            let scope = Scope::ALL
                .into_iter()
                .find(|s| s.as_str() == part)
                .ok_or_else(|| {
                    FieldError::new(
                        "scope",
                        format!(
                            "`{part}` is not a scope (use {})",
                            Scope::ALL.map(Scope::as_str).join(", ")
                        ),
                    )
                })?;
            if !out.contains(&scope) {
                out.push(scope);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Whether a token holding `held` may act with `self` (`admin` may do everything).
    #[must_use]
    pub fn granted_by(self, held: &[Scope]) -> bool {
        held.contains(&self) || held.contains(&Scope::Admin)
    }
}

impl serde::Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_names_bad_scopes() {
        assert_eq!(
            Scope::parse_list("stats:read, directory:read,stats:read").unwrap(),
            vec![Scope::DirectoryRead, Scope::StatsRead]
        );
        let e = Scope::parse_list("directory:read,directory:delete").unwrap_err();
        assert!(
            e.to_string().contains("`directory:delete` is not a scope"),
            "{e}"
        );
        assert!(Scope::parse_list("").is_err());
    }

    #[test]
    fn admin_grants_everything() {
        assert!(Scope::StatsRead.granted_by(&[Scope::Admin]));
        assert!(Scope::StatsRead.granted_by(&[Scope::StatsRead]));
        assert!(!Scope::StatsRead.granted_by(&[Scope::DirectoryRead]));
        assert!(!Scope::Admin.granted_by(&[Scope::DirectoryRead, Scope::StatsRead]));
    }
}
