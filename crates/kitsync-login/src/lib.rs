//! Kit account login, bridged to OpenID Connect.
//!
//! An app sold with the Kit must log its users in at their tenant's auth centre (OAuth 2.0
//! authorization code against the tenant's `domainName`, with the app's `clientId` and
//! decrypted `clientSecret`; docs/protocol.md §10). kitsync holds all of that, so it does the
//! Kit login for the ISV's apps and offers it as a standard OpenID Connect provider:
//!
//! ```text
//! app ──/oidc/authorize──▶ kitsync ──302──▶ unified login page | {domainName}/api/v1/oauth2/authorize
//!                          kitsync ◀──/login/kit/callback?code&tenant&state── browser
//!                          kitsync ──token, userinfo──▶ auth centre      (the Kit leg)
//!                          directory check: an enabled, authorised member of the app
//!                          session + one-time code + `login` activity, one transaction
//! app ◀──302 redirect_uri?code&state&iss── kitsync
//! app ──POST /oidc/token (code, PKCE)──▶ kitsync: id_token (ES256), access_token, refresh_token
//! ```
//!
//! - [`clients`]: registration of the ISV apps as OIDC clients (the CLI's `oidc-client`).
//! - [`keys`]: the ID-token signing keys, sealed in the database, rotatable.
//! - [`kit`]: the client of the tenant's auth centre.
//! - `flow`: the HTTP endpoints; `pages`: the error pages a browser sees.
//!
//! Every step reads and writes the database only (flows, sessions, codes and tokens are rows;
//! the signing keys are re-read every 30 s), so any `serve`/`ingress` process answers any step
//! of any flow.
pub mod clients;
mod db;
mod flow;
pub mod jose;
pub mod keys;
pub mod kit;
mod pages;

pub(crate) use kitsync_domain::time::now_ms;
use kitsync_secrets::{RsaDecryptor, Sealer};
use kitsync_store::Store;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub use flow::router;

/// `[login]`: Kit account login offered as an OpenID Connect provider.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct LoginSettings {
    /// The externally visible base URL of kitsync (`https://sync.example.com`): the issuer of
    /// its ID tokens and the base of the Kit callback URL to register in the marketplace
    /// console (`{public_url}/login/kit/callback`). Empty: `http://` and the listening
    /// address, which only suits a local trial.
    pub public_url: String,
    /// The marketplace's unified login page, where a login goes when the tenant is not known
    /// yet. `{appId}`, `{redirectUri}` and `{state}` are replaced (URL-encoded).
    pub unified_login_url: String,
    /// Longest wait for each request to a tenant's auth centre.
    pub kit_timeout_ms: u64,
    /// How long a browser may take from `/oidc/authorize` to the Kit callback.
    pub flow_ttl_secs: u64,
    /// Lifetime of kitsync's one-time authorization codes.
    pub code_ttl_secs: u64,
    /// Lifetime of access tokens and ID tokens.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a login session and of its refresh tokens (each refresh rotates the
    /// token, not the session's end). The Kit's own refresh tokens live 30 days.
    pub session_ttl_secs: u64,
}

impl Default for LoginSettings {
    fn default() -> Self {
        Self {
            public_url: String::new(),
            unified_login_url:
                "https://macroverse.huaweicloud.com/unified-login/#/portal-login?ind=UNOP&appId={appId}"
                    .into(),
            kit_timeout_ms: 5_000,
            flow_ttl_secs: 600,
            code_ttl_secs: 60,
            access_token_ttl_secs: 3_600,
            session_ttl_secs: 30 * 86_400,
        }
    }
}

/// Why a login step or an administrative action failed (the HTTP layer maps each to the
/// answer the specifications define).
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error(transparent)]
    Store(#[from] kitsync_store::StoreError),
    #[error(transparent)]
    Secrets(#[from] kitsync_secrets::SecretsError),
    #[error("{0}")]
    Crypto(String),
    #[error("{0}")]
    Invalid(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// What every endpoint shares.
#[derive(Clone)]
pub struct Login {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    sealer: Sealer,
    rsa: Option<Arc<RsaDecryptor>>,
    settings: LoginSettings,
    /// `public_url` without a trailing slash.
    issuer: String,
    keys: keys::KeyRing,
    kit: kit::KitClient,
}

impl Login {
    /// The login bridge of `store`, with the master key (`sealer`: signing keys, Kit tokens,
    /// the apps' sealed secrets) and the RSA key of secrets stored as the marketplace's
    /// ciphertext. `issuer` is the resolved `public_url`.
    ///
    /// # Errors
    /// `issuer` is not an absolute http(s) URL, or the HTTPS client cannot be built.
    pub fn new(
        store: Store,
        sealer: Sealer,
        rsa: Option<Arc<RsaDecryptor>>,
        settings: LoginSettings,
        issuer: &str,
    ) -> Result<Self, LoginError> {
        let issuer = issuer.trim().trim_end_matches('/').to_owned();
        let parsed = url::Url::parse(&issuer)
            .map_err(|e| LoginError::Invalid(format!("login.public_url {issuer:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            return Err(LoginError::Invalid(format!(
                "login.public_url {issuer:?} must be an http(s) URL without query or fragment"
            )));
        }
        let kit = kit::KitClient::new(std::time::Duration::from_millis(settings.kit_timeout_ms))?;
        let keys = keys::KeyRing::new(store.db().clone(), sealer.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                sealer,
                rsa,
                settings,
                issuer,
                keys,
                kit,
            }),
        })
    }

    /// The issuer (`public_url`).
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The Kit callback URL to register in the marketplace console.
    #[must_use]
    pub fn kit_callback_url(&self) -> String {
        format!("{}/login/kit/callback", self.inner.issuer)
    }

    /// Makes sure a signing key exists (the first start creates one).
    ///
    /// # Errors
    /// The database or the key generation failed.
    pub async fn ensure_signing_key(&self) -> Result<(), LoginError> {
        self.inner.keys.ensure().await
    }
}

/// Deletes flows, codes, tokens and sessions past their end, and keys no longer published;
/// returns how many rows went. The workers run it every ten minutes.
///
/// # Errors
/// The database failed.
pub async fn prune(db: &sea_orm::DatabaseConnection) -> Result<u64, LoginError> {
    db::prune(db, now_ms()).await
}

/// `n` random bytes, base64url without padding.
pub(crate) fn random_token(n: usize) -> Result<String, LoginError> {
    use base64::Engine as _;
    let mut buf = vec![0u8; n];
    kitsync_secrets::fill_random(&mut buf)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}
