//! Kit account login bridged to OpenID Connect (`crates/kitsync-login`).
//!
//! - `oidc_clients`: the ISV apps registered as OIDC clients of kitsync, each bound to one
//!   Kit app id; the secret only as its SHA-256 (`NULL` for a public client, which must use
//!   PKCE); redirect and post-logout URIs as JSON arrays, matched exactly.
//! - `oidc_keys`: the ID-token signing keys; the private key sealed with the master key, the
//!   public key as a JWK. The newest key that is not retired signs; a retired key stays
//!   published until `publish_until`.
//! - `oidc_flows`: logins under way, from `/oidc/authorize` until the Kit callback (keyed by
//!   the SHA-256 of the flow token, which travels as the Kit `state` and in a cookie).
//! - `oidc_sessions`: a user logged in to a client, with the Kit tokens behind it (sealed).
//! - `oidc_tokens`: codes, access and refresh tokens, by the SHA-256 of the token; a code or
//!   refresh token is spent by setting `used_at`, once.
//!
//! Every row carries `expires_at` (Unix ms) and is pruned after it.
use sea_orm::ConnectionTrait;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const TABLES: &[&str] = &[
    "CREATE TABLE oidc_clients (
        client_id TEXT NOT NULL PRIMARY KEY,
        name TEXT NOT NULL,
        app_id TEXT NOT NULL,
        secret_hash TEXT NULL,
        redirect_uris TEXT NOT NULL,
        post_logout_uris TEXT NOT NULL,
        created_at BIGINT NOT NULL
    )",
    "CREATE TABLE oidc_keys (
        kid TEXT NOT NULL PRIMARY KEY,
        alg TEXT NOT NULL,
        private_key TEXT NOT NULL,
        public_jwk TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        retired_at BIGINT NULL,
        publish_until BIGINT NULL
    )",
    "CREATE TABLE oidc_flows (
        id TEXT NOT NULL PRIMARY KEY,
        client_id TEXT NOT NULL,
        redirect_uri TEXT NOT NULL,
        state TEXT NULL,
        nonce TEXT NULL,
        code_challenge TEXT NULL,
        scope TEXT NOT NULL,
        tenant_id TEXT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
    )",
    "CREATE INDEX oidc_flows_expires ON oidc_flows (expires_at)",
    "CREATE TABLE oidc_sessions (
        id TEXT NOT NULL PRIMARY KEY,
        client_id TEXT NOT NULL,
        tenant_id TEXT NOT NULL,
        user_name TEXT NOT NULL,
        app_id TEXT NOT NULL,
        redirect_uri TEXT NOT NULL,
        nonce TEXT NULL,
        code_challenge TEXT NULL,
        scope TEXT NOT NULL,
        kit_tokens TEXT NOT NULL,
        auth_time BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        revoked_at BIGINT NULL
    )",
    "CREATE INDEX oidc_sessions_expires ON oidc_sessions (expires_at)",
    "CREATE TABLE oidc_tokens (
        hash TEXT NOT NULL PRIMARY KEY,
        kind TEXT NOT NULL,
        session_id TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        used_at BIGINT NULL
    )",
    "CREATE INDEX oidc_tokens_session ON oidc_tokens (session_id)",
    "CREATE INDEX oidc_tokens_expires ON oidc_tokens (expires_at)",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for sql in TABLES {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for t in [
            "oidc_tokens",
            "oidc_sessions",
            "oidc_flows",
            "oidc_keys",
            "oidc_clients",
        ] {
            db.execute_unprepared(&format!("DROP TABLE IF EXISTS {t}"))
                .await?;
        }
        Ok(())
    }
}
