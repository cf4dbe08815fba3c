//! The administration audit log, table `admin_audit`: one row for every change an operator
//! makes — held plans approved or rejected, dead letters replayed, webhook endpoints retried,
//! disabled, enabled or removed, API tokens created or revoked, OIDC clients added or removed —
//! naming who made it: the API token of an `/admin/v1` request, or the command line.
//!
//! The row is written in the same transaction as the change it records, so a change is never
//! without its row and a row never without its change. The store, the queue's dead letters and
//! the login crate's clients all write it, which is why it lives here, beside the SQL builder
//! they share.
use crate::Sql;
use sea_orm::{ConnectionTrait, DbErr};

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An API token (`/admin/v1`): its id (the 12 hex digits after `kst_`) and its name.
    Token { id: String, name: String },
    /// A `kitsync` command run where the database (and the master key) are.
    Cli,
}

impl Actor {
    /// The token's id; `None` for the command line.
    #[must_use]
    pub fn token_id(&self) -> Option<&str> {
        match self {
            Actor::Token { id, .. } => Some(id),
            Actor::Cli => None,
        }
    }

    /// For people, and for the audit row's `actor`: `token 0123456789ab (ops console)` or
    /// `the command line`.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Actor::Token { id, name } => format!("token {id} ({name})"),
            Actor::Cli => "the command line".to_owned(),
        }
    }
}

/// One change, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<'a> {
    /// What was done: `plan.approve`, `plan.reject`, `deadletter.replay`,
    /// `webhook.retry`, `webhook.disable`, `webhook.enable`, `webhook.remove`, `token.create`,
    /// `token.revoke`, `oidc_client.add`, `oidc_client.remove`.
    pub action: &'a str,
    /// What it was done to: a plan, dead-letter, endpoint, token or client id.
    pub target: &'a str,
    /// The tenant it concerns, when it concerns one.
    pub tenant_id: Option<&'a str>,
    /// What else is worth keeping, as a JSON object (never a secret).
    pub detail: String,
}

/// Writes the audit row of `change` made by `actor` at `at_ms` (Unix ms), on `db` — the
/// transaction that makes the change.
///
/// # Errors
/// The insert failed; the caller's transaction must then not commit.
pub async fn record(
    db: &impl ConnectionTrait,
    actor: &Actor,
    change: &Change<'_>,
    at_ms: i64,
) -> Result<(), DbErr> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "INSERT INTO admin_audit (at, token_id, actor, action, target, tenant_id, detail) VALUES ",
    )
    .bind_tuple::<_, sea_orm::Value>([
        at_ms.into(),
        actor.token_id().map(str::to_owned).into(),
        actor.describe().into(),
        change.action.into(),
        change.target.into(),
        change.tenant_id.map(str::to_owned).into(),
        change.detail.clone().into(),
    ]);
    db.execute(sql.build()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_describe_themselves() {
        let t = Actor::Token {
            id: "0123456789ab".into(),
            name: "ops".into(),
        };
        assert_eq!(t.describe(), "token 0123456789ab (ops)");
        assert_eq!(t.token_id(), Some("0123456789ab"));
        assert_eq!(Actor::Cli.describe(), "the command line");
        assert_eq!(Actor::Cli.token_id(), None);
    }
}
