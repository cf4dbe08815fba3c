//! API bearer tokens (table `api_tokens`, migration `m20261129_000004_api_tokens`): issued
//! once, stored as the hash of their secret, bound to scopes and optionally one tenant.
use crate::error::StoreError;
use crate::Store;
use kitsync_domain::time::now_ms;
use kitsync_domain::Scope;
use kitsync_secrets::token;
use kitsync_sql::audit::Actor;
use kitsync_sql::Sql;
use sea_orm::{ConnectionTrait, DatabaseConnection, QueryResult, TransactionTrait, Value};
use secrecy::SecretString;

/// A stored token (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// The only tenant the token may see; `None`: every tenant.
    pub tenant_id: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl ApiToken {
    /// Whether the token may act with `scope` on `tenant` (`None`: an action on no single
    /// tenant, such as listing them).
    #[must_use]
    pub fn allows(&self, scope: Scope, tenant: Option<&str>) -> bool {
        let tenant_ok = match (&self.tenant_id, tenant) {
            (None, _) => true,
            (Some(bound), Some(t)) => bound == t,
            (Some(_), None) => false,
        };
        tenant_ok && scope.granted_by(&self.scopes)
    }
}

const COLUMNS: &str = "id, name, scopes, tenant_id, created_at, revoked_at, last_used_at";

fn sql(db: &impl ConnectionTrait) -> Sql {
    Sql::new(db.get_database_backend())
}

fn from_row(row: &QueryResult) -> Result<ApiToken, StoreError> {
    let scopes: String = row.try_get_by_index(2)?;
    Ok(ApiToken {
        id: row.try_get_by_index(0)?,
        name: row.try_get_by_index(1)?,
        scopes: Scope::parse_list(&scopes)
            .map_err(|e| StoreError::Corrupt(format!("api token scopes: {e}")))?,
        tenant_id: row.try_get_by_index(3)?,
        created_at: row.try_get_by_index(4)?,
        revoked_at: row.try_get_by_index(5)?,
        last_used_at: row.try_get_by_index(6)?,
    })
}

pub(crate) async fn create(
    db: &impl ConnectionTrait,
    name: &str,
    scopes: &[Scope],
    tenant_id: Option<&str>,
) -> Result<(ApiToken, SecretString), StoreError> {
    if scopes.is_empty() {
        return Err(StoreError::Conflict(
            "a token needs at least one scope".into(),
        ));
    }
    let issued = token::issue().map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    let list = scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let created_at = now_ms();
    let values: [Value; 6] = [
        issued.id.clone().into(),
        name.into(),
        list.into(),
        tenant_id.map(str::to_owned).into(),
        issued.secret_hash.into(),
        created_at.into(),
    ];
    db.execute(
        sql(db)
            .push(
                "INSERT INTO api_tokens (id, name, scopes, tenant_id, secret_hash, created_at) \
                 VALUES ",
            )
            .bind_tuple(values)
            .take(),
    )
    .await?;
    let stored = ApiToken {
        id: issued.id,
        name: name.to_owned(),
        scopes,
        tenant_id: tenant_id.map(str::to_owned),
        created_at,
        revoked_at: None,
        last_used_at: None,
    };
    Ok((stored, issued.token))
}

pub(crate) async fn list(db: &DatabaseConnection) -> Result<Vec<ApiToken>, StoreError> {
    let rows = db
        .query_all(
            sql(db)
                .push(&format!(
                    "SELECT {COLUMNS} FROM api_tokens ORDER BY created_at, id"
                ))
                .take(),
        )
        .await?;
    rows.iter().map(from_row).collect()
}

pub(crate) async fn revoke(db: &impl ConnectionTrait, id: &str) -> Result<(), StoreError> {
    let n = db
        .execute(
            sql(db)
                .push("UPDATE api_tokens SET revoked_at = ")
                .bind(now_ms())
                .push(" WHERE id = ")
                .bind(id)
                .push(" AND revoked_at IS NULL")
                .take(),
        )
        .await?
        .rows_affected();
    if n == 0 {
        let known = db
            .query_one(
                sql(db)
                    .push("SELECT id FROM api_tokens WHERE id = ")
                    .bind(id)
                    .take(),
            )
            .await?
            .is_some();
        return Err(if known {
            StoreError::Conflict(format!("token {id} is already revoked"))
        } else {
            StoreError::NotFound(format!("token {id}"))
        });
    }
    Ok(())
}

/// The live token `presented` is, if any: shaped right, known, not revoked, secret matching.
pub(crate) async fn authenticate(
    db: &DatabaseConnection,
    presented: &str,
) -> Result<Option<ApiToken>, StoreError> {
    let Some((id, secret)) = token::parse(presented) else {
        return Ok(None);
    };
    let Some(row) = db
        .query_one(
            sql(db)
                .push(&format!(
                    "SELECT {COLUMNS}, secret_hash FROM api_tokens WHERE id = "
                ))
                .bind(id)
                .take(),
        )
        .await?
    else {
        return Ok(None);
    };
    let stored_hash: String = row.try_get_by_index(7)?;
    let t = from_row(&row)?;
    if t.revoked_at.is_some() || !token::matches(secret, &stored_hash) {
        return Ok(None);
    }
    Ok(Some(t))
}

impl Store {
    /// Issues an API token; the returned secret is shown once and never stored. The audit log
    /// records `actor` issuing it, in the same transaction.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] without scopes; [`StoreError::Database`] when the insert fails.
    pub async fn create_token(
        &self,
        actor: &Actor,
        name: &str,
        scopes: &[kitsync_domain::Scope],
        tenant_id: Option<&str>,
    ) -> Result<(ApiToken, secrecy::SecretString), StoreError> {
        let txn = self.db.begin().await?;
        let (token, secret) = create(&txn, name, scopes, tenant_id).await?;
        let detail = serde_json::json!({ "name": name, "scopes": token.scopes });
        crate::audit::record(&txn, actor, "token.create", &token.id, tenant_id, detail).await?;
        txn.commit().await?;
        Ok((token, secret))
    }

    /// Every token issued, revoked ones included, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        list(&self.db).await
    }

    /// Revokes token `id`; the audit log records `actor` doing it, in the same transaction.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id, [`StoreError::Conflict`] when already revoked.
    pub async fn revoke_token(&self, actor: &Actor, id: &str) -> Result<(), StoreError> {
        let txn = self.db.begin().await?;
        revoke(&txn, id).await?;
        crate::audit::record(&txn, actor, "token.revoke", id, None, serde_json::json!({})).await?;
        txn.commit().await?;
        Ok(())
    }

    /// The live token a bearer string is, or `None` (unknown, malformed, revoked, wrong
    /// secret: the caller cannot tell which).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn authenticate(&self, bearer: &str) -> Result<Option<ApiToken>, StoreError> {
        authenticate(&self.db, bearer).await
    }
}
