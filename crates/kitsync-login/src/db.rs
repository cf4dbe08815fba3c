//! The login bridge's rows (migration `m20261203_000012_login`): clients, signing keys, flows,
//! sessions and tokens. Tokens, codes and flow ids are stored as their SHA-256 only.
use crate::LoginError;
use kitsync_sql::audit::{self, Actor};
use kitsync_sql::Sql;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, FromQueryResult, QueryResult, Statement, Value,
};

/// An OIDC client: an ISV app registered with kitsync.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientRow {
    pub client_id: String,
    pub name: String,
    /// The Kit app whose `clientId`/`clientSecret` the Kit leg uses.
    pub app_id: String,
    /// Hex SHA-256 of the secret; `None`: a public client (PKCE required).
    #[serde(skip)]
    pub secret_hash: Option<String>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Unix ms.
    pub created_at: i64,
}

impl ClientRow {
    #[must_use]
    pub fn is_public(&self) -> bool {
        self.secret_hash.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct KeyRow {
    pub kid: String,
    /// Sealed PKCS#8.
    pub private_key: String,
    pub public_jwk: serde_json::Value,
    pub created_at: i64,
    pub retired_at: Option<i64>,
    pub publish_until: Option<i64>,
}

/// A login between `/oidc/authorize` and the Kit callback.
#[derive(Debug, Clone, FromQueryResult)]
pub struct FlowRow {
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub scope: String,
    pub tenant_id: Option<String>,
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct SessionRow {
    pub id: String,
    pub client_id: String,
    pub tenant_id: String,
    pub user_name: String,
    pub app_id: String,
    pub redirect_uri: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub scope: String,
    /// Sealed JSON of the Kit tokens behind the session.
    pub kit_tokens: String,
    pub auth_time: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Code,
    Access,
    Refresh,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            TokenKind::Code => "code",
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct TokenRow {
    pub session_id: String,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// A statement for `db`'s backend, written in one chain that ends in `.take()`.
fn sql(db: &impl ConnectionTrait) -> Sql {
    Sql::new(db.get_database_backend())
}

/// Runs `statement`; how many rows it changed.
async fn exec(db: &impl ConnectionTrait, statement: Statement) -> Result<u64, LoginError> {
    Ok(db.execute(statement).await?.rows_affected())
}

/// Runs `statement` and reads the row it returns, if any, by column name.
async fn one<T: FromQueryResult>(
    db: &impl ConnectionTrait,
    statement: Statement,
) -> Result<Option<T>, LoginError> {
    Ok(T::find_by_statement(statement).one(db).await?)
}

fn json_list(row: &QueryResult, i: usize) -> Result<Vec<String>, LoginError> {
    let text: String = row.try_get_by_index(i)?;
    serde_json::from_str(&text).map_err(|e| LoginError::Corrupt(format!("oidc_clients: {e}")))
}

const CLIENT_COLUMNS: &str =
    "client_id, name, app_id, secret_hash, redirect_uris, post_logout_uris, created_at";

fn client(row: &QueryResult) -> Result<ClientRow, LoginError> {
    Ok(ClientRow {
        client_id: row.try_get_by_index(0)?,
        name: row.try_get_by_index(1)?,
        app_id: row.try_get_by_index(2)?,
        secret_hash: row.try_get_by_index(3)?,
        redirect_uris: json_list(row, 4)?,
        post_logout_redirect_uris: json_list(row, 5)?,
        created_at: row.try_get_by_index(6)?,
    })
}

pub async fn insert_client(db: &impl ConnectionTrait, c: &ClientRow) -> Result<(), LoginError> {
    let insert = sql(db)
        .push(&format!(
            "INSERT INTO oidc_clients ({CLIENT_COLUMNS}) VALUES "
        ))
        .bind_tuple::<_, Value>([
            c.client_id.clone().into(),
            c.name.clone().into(),
            c.app_id.clone().into(),
            c.secret_hash.clone().into(),
            serde_json::to_string(&c.redirect_uris)
                .unwrap_or_default()
                .into(),
            serde_json::to_string(&c.post_logout_redirect_uris)
                .unwrap_or_default()
                .into(),
            c.created_at.into(),
        ])
        .take();
    exec(db, insert).await?;
    Ok(())
}

pub async fn clients(db: &DatabaseConnection) -> Result<Vec<ClientRow>, LoginError> {
    let select = sql(db)
        .push(&format!(
            "SELECT {CLIENT_COLUMNS} FROM oidc_clients ORDER BY created_at, client_id"
        ))
        .take();
    db.query_all(select).await?.iter().map(client).collect()
}

pub async fn client_by_id(
    db: &DatabaseConnection,
    client_id: &str,
) -> Result<Option<ClientRow>, LoginError> {
    let select = sql(db)
        .push(&format!(
            "SELECT {CLIENT_COLUMNS} FROM oidc_clients WHERE client_id = "
        ))
        .bind(client_id)
        .take();
    db.query_one(select).await?.as_ref().map(client).transpose()
}

/// Removes a client and ends its sessions; `false` when there was none.
/// Removes a client, its sessions and flows; the audit log records `actor` doing it, in the
/// same transaction (when there was one to remove).
pub async fn remove_client(
    db: &DatabaseConnection,
    actor: &Actor,
    client_id: &str,
) -> Result<bool, LoginError> {
    use sea_orm::TransactionTrait as _;
    let txn = db.begin().await?;
    let delete = sql(db)
        .push("DELETE FROM oidc_clients WHERE client_id = ")
        .bind(client_id)
        .take();
    let gone = exec(&txn, delete).await? > 0;
    revoke_sessions(&txn, "client_id", client_id).await?;
    let flows = sql(db)
        .push("DELETE FROM oidc_flows WHERE client_id = ")
        .bind(client_id)
        .take();
    exec(&txn, flows).await?;
    if gone {
        let change = audit::Change {
            action: "oidc_client.remove",
            target: client_id,
            tenant_id: None,
            detail: "{}".into(),
        };
        audit::record(&txn, actor, &change, crate::now_ms()).await?;
    }
    txn.commit().await?;
    Ok(gone)
}

const KEY_COLUMNS: &str = "kid, private_key, public_jwk, created_at, retired_at, publish_until";

/// Keys still published at `now`, newest first.
pub async fn published_keys(db: &DatabaseConnection, now: i64) -> Result<Vec<KeyRow>, LoginError> {
    let select = sql(db)
        .push(&format!(
            "SELECT {KEY_COLUMNS} FROM oidc_keys WHERE publish_until IS NULL OR publish_until > "
        ))
        .bind(now)
        .push(" ORDER BY created_at DESC, kid DESC")
        .take();
    let mut out = Vec::new();
    for row in db.query_all(select).await? {
        let jwk: String = row.try_get_by_index(2)?;
        out.push(KeyRow {
            kid: row.try_get_by_index(0)?,
            private_key: row.try_get_by_index(1)?,
            public_jwk: serde_json::from_str(&jwk)
                .map_err(|e| LoginError::Corrupt(format!("oidc_keys.public_jwk: {e}")))?,
            created_at: row.try_get_by_index(3)?,
            retired_at: row.try_get_by_index(4)?,
            publish_until: row.try_get_by_index(5)?,
        });
    }
    Ok(out)
}

/// Inserts a new signing key; with `retire_others: (at, until)`, every other signing key
/// stops signing at `at` and stays published until `until` (one transaction).
pub async fn insert_key(
    db: &DatabaseConnection,
    key: &KeyRow,
    retire_others: Option<(i64, i64)>,
) -> Result<(), LoginError> {
    use sea_orm::TransactionTrait as _;
    let txn = db.begin().await?;
    if let Some((at, until)) = retire_others {
        let retire = sql(db)
            .push("UPDATE oidc_keys SET retired_at = ")
            .bind(at)
            .push(", publish_until = ")
            .bind(until)
            .push(" WHERE retired_at IS NULL")
            .take();
        exec(&txn, retire).await?;
    }
    let insert = sql(db)
        .push(
            "INSERT INTO oidc_keys (kid, alg, private_key, public_jwk, created_at, retired_at, \
             publish_until) VALUES ",
        )
        .bind_tuple::<_, Value>([
            key.kid.clone().into(),
            crate::jose::ALG.into(),
            key.private_key.clone().into(),
            key.public_jwk.to_string().into(),
            key.created_at.into(),
            key.retired_at.into(),
            key.publish_until.into(),
        ])
        .take();
    exec(&txn, insert).await?;
    txn.commit().await?;
    Ok(())
}

pub async fn insert_flow(
    db: &DatabaseConnection,
    id_hash: &str,
    f: &FlowRow,
    now: i64,
    expires_at: i64,
) -> Result<(), LoginError> {
    let insert = sql(db)
        .push(
            "INSERT INTO oidc_flows (id, client_id, redirect_uri, state, nonce, code_challenge, \
             scope, tenant_id, created_at, expires_at) VALUES ",
        )
        .bind_tuple::<_, Value>([
            id_hash.into(),
            f.client_id.clone().into(),
            f.redirect_uri.clone().into(),
            f.state.clone().into(),
            f.nonce.clone().into(),
            f.code_challenge.clone().into(),
            f.scope.clone().into(),
            f.tenant_id.clone().into(),
            now.into(),
            expires_at.into(),
        ])
        .take();
    exec(db, insert).await?;
    Ok(())
}

/// Takes a live flow: it is deleted, so a second callback with the same flow finds nothing.
pub async fn take_flow(
    db: &DatabaseConnection,
    id_hash: &str,
    now: i64,
) -> Result<Option<FlowRow>, LoginError> {
    let delete = sql(db)
        .push("DELETE FROM oidc_flows WHERE id = ")
        .bind(id_hash)
        .push(" AND expires_at > ")
        .bind(now)
        .push(" RETURNING client_id, redirect_uri, state, nonce, code_challenge, scope, tenant_id")
        .take();
    one(db, delete).await
}

pub async fn insert_session<C: ConnectionTrait>(txn: &C, s: &SessionRow) -> Result<(), LoginError> {
    let insert = sql(txn)
        .push(
            "INSERT INTO oidc_sessions (id, client_id, tenant_id, user_name, app_id, redirect_uri, \
             nonce, code_challenge, scope, kit_tokens, auth_time, expires_at, revoked_at) VALUES ",
        )
        .bind_tuple::<_, Value>([
            s.id.clone().into(),
            s.client_id.clone().into(),
            s.tenant_id.clone().into(),
            s.user_name.clone().into(),
            s.app_id.clone().into(),
            s.redirect_uri.clone().into(),
            s.nonce.clone().into(),
            s.code_challenge.clone().into(),
            s.scope.clone().into(),
            s.kit_tokens.clone().into(),
            s.auth_time.into(),
            s.expires_at.into(),
            s.revoked_at.into(),
        ])
        .take();
    exec(txn, insert).await?;
    Ok(())
}

pub async fn session(db: &DatabaseConnection, id: &str) -> Result<Option<SessionRow>, LoginError> {
    let select = sql(db)
        .push(
            "SELECT id, client_id, tenant_id, user_name, app_id, redirect_uri, nonce, \
             code_challenge, scope, kit_tokens, auth_time, expires_at, revoked_at \
             FROM oidc_sessions WHERE id = ",
        )
        .bind(id)
        .take();
    one(db, select).await
}

pub async fn set_kit_tokens(
    db: &DatabaseConnection,
    session_id: &str,
    sealed: &str,
) -> Result<(), LoginError> {
    let update = sql(db)
        .push("UPDATE oidc_sessions SET kit_tokens = ")
        .bind(sealed)
        .push(" WHERE id = ")
        .bind(session_id)
        .take();
    exec(db, update).await?;
    Ok(())
}

/// Ends a session: it is revoked and every token it issued stops working.
pub async fn revoke_session(db: &DatabaseConnection, session_id: &str) -> Result<(), LoginError> {
    revoke_sessions(db, "id", session_id).await
}

/// Revokes the live sessions whose `column` (`id` or `client_id`) is `value`, now.
async fn revoke_sessions(
    db: &impl ConnectionTrait,
    column: &str,
    value: &str,
) -> Result<(), LoginError> {
    let revoke = sql(db)
        .push("UPDATE oidc_sessions SET revoked_at = ")
        .bind(crate::now_ms())
        .push(&format!(" WHERE revoked_at IS NULL AND {column} = "))
        .bind(value)
        .take();
    exec(db, revoke).await?;
    Ok(())
}

pub async fn insert_token<C: ConnectionTrait>(
    txn: &C,
    hash: &str,
    kind: TokenKind,
    session_id: &str,
    expires_at: i64,
) -> Result<(), LoginError> {
    let insert = sql(txn)
        .push("INSERT INTO oidc_tokens (hash, kind, session_id, expires_at, used_at) VALUES ")
        .bind_tuple::<_, Value>([
            hash.into(),
            kind.as_str().into(),
            session_id.into(),
            expires_at.into(),
            Value::BigInt(None),
        ])
        .take();
    exec(txn, insert).await?;
    Ok(())
}

pub async fn token(
    db: &DatabaseConnection,
    hash: &str,
    kind: TokenKind,
) -> Result<Option<TokenRow>, LoginError> {
    let select = sql(db)
        .push("SELECT session_id, expires_at, used_at FROM oidc_tokens WHERE hash = ")
        .bind(hash)
        .push(" AND kind = ")
        .bind(kind.as_str())
        .take();
    one(db, select).await
}

/// Spends a one-time token (a code or a refresh token): `true` for the one caller that
/// spends it, `false` when it was spent already.
pub async fn spend<C: ConnectionTrait>(txn: &C, hash: &str, now: i64) -> Result<bool, LoginError> {
    let update = sql(txn)
        .push("UPDATE oidc_tokens SET used_at = ")
        .bind(now)
        .push(" WHERE used_at IS NULL AND hash = ")
        .bind(hash)
        .take();
    Ok(exec(txn, update).await? == 1)
}

/// Gives a spent refresh token back (the Kit could not be reached: the client may retry).
pub async fn unspend(db: &DatabaseConnection, hash: &str) -> Result<(), LoginError> {
    let update = sql(db)
        .push("UPDATE oidc_tokens SET used_at = NULL WHERE hash = ")
        .bind(hash)
        .take();
    exec(db, update).await?;
    Ok(())
}

/// What has ended: flows and tokens past their end (codes are kept a day longer, so a code
/// replayed late is still recognised and revokes its session), sessions past their end or
/// revoked a day ago, and the tokens of sessions that are gone; keys no longer published.
pub async fn prune(db: &DatabaseConnection, now: i64) -> Result<u64, LoginError> {
    const DAY: i64 = 86_400_000;
    let statements = [
        sql(db)
            .push("DELETE FROM oidc_flows WHERE expires_at <= ")
            .bind(now)
            .take(),
        sql(db)
            .push("DELETE FROM oidc_tokens WHERE (kind <> 'code' AND expires_at <= ")
            .bind(now)
            .push(") OR expires_at <= ")
            .bind(now - DAY)
            .take(),
        sql(db)
            .push("DELETE FROM oidc_sessions WHERE expires_at <= ")
            .bind(now)
            .push(" OR revoked_at <= ")
            .bind(now - DAY)
            .take(),
        sql(db)
            .push(
                "DELETE FROM oidc_tokens WHERE NOT EXISTS \
                 (SELECT 1 FROM oidc_sessions s WHERE s.id = oidc_tokens.session_id)",
            )
            .take(),
        sql(db)
            .push("DELETE FROM oidc_keys WHERE publish_until <= ")
            .bind(now)
            .take(),
    ];
    let mut gone = 0;
    for s in statements {
        gone += exec(db, s).await?;
    }
    Ok(gone)
}
