//! The administration audit log (`admin_audit`, see `kitsync_sql::audit`): written by every
//! operator change the store makes, in that change's transaction; read newest first.
use crate::error::StoreError;
use crate::Store;
use kitsync_sql::audit::{self, Actor};
use kitsync_sql::Sql;
use sea_orm::ConnectionTrait;
use serde::Serialize;

/// One operator change, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: i64,
    /// When (Unix ms).
    pub at: i64,
    /// The API token that made it; `None`: the command line.
    pub token_id: Option<String>,
    /// Who, for people: `token 0123456789ab (ops)` or `the command line`.
    pub actor: String,
    /// `plan.approve`, `plan.reject`, `deadletter.replay`, `webhook.retry`, …
    pub action: String,
    /// The plan, dead letter, endpoint, token or client it was done to.
    pub target: String,
    pub tenant_id: Option<String>,
    /// The rest, a JSON object (never a secret).
    pub detail: serde_json::Value,
}

/// Records `action` on `target` by `actor` on `db` (the change's transaction).
pub(crate) async fn record(
    db: &impl ConnectionTrait,
    actor: &Actor,
    action: &str,
    target: &str,
    tenant_id: Option<&str>,
    detail: serde_json::Value,
) -> Result<(), StoreError> {
    let change = audit::Change {
        action,
        target,
        tenant_id,
        detail: detail.to_string(),
    };
    audit::record(db, actor, &change, kitsync_domain::time::now_ms()).await?;
    Ok(())
}

impl Store {
    /// The audit log, newest first: at most `limit` entries older than entry `before` (the
    /// newest when `None`).
    ///
    /// # Errors
    /// [`StoreError::Database`], or [`StoreError::Corrupt`] for an unreadable row.
    pub async fn audit_log(
        &self,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut sql = Sql::new(self.db.get_database_backend());
        sql.push(
            "SELECT id, at, token_id, actor, action, target, tenant_id, detail FROM admin_audit",
        );
        if let Some(b) = before {
            sql.push(" WHERE id < ").bind(b);
        }
        sql.push(" ORDER BY id DESC LIMIT ")
            .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = self.db.query_all(sql.build()).await?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get_by_index(0)?;
                let detail: String = r.try_get_by_index(7)?;
                Ok(AuditEntry {
                    id,
                    at: r.try_get_by_index(1)?,
                    token_id: r.try_get_by_index(2)?,
                    actor: r.try_get_by_index(3)?,
                    action: r.try_get_by_index(4)?,
                    target: r.try_get_by_index(5)?,
                    tenant_id: r.try_get_by_index(6)?,
                    detail: serde_json::from_str(&detail).map_err(|e| {
                        StoreError::Corrupt(format!("audit entry {id}: detail: {e}"))
                    })?,
                })
            })
            .collect()
    }
}
