//! The ISV's apps as OpenID Connect clients of kitsync (`kitsync oidc-client add|list|remove`).
//!
//! A client is bound to one Kit app id: a login through it uses that app's Kit credentials
//! and admits the users that app authorises, in whichever tenant bought it. A confidential
//! client gets a secret, shown once and stored as its SHA-256; a public client (a single-page
//! or native app) has none and must use PKCE. Redirect URIs are compared exactly, as strings.
use crate::db::{self, ClientRow};
use crate::{now_ms, random_token, LoginError};
use kitsync_sql::audit::{self, Actor};
use sea_orm::{DatabaseConnection, TransactionTrait as _};
use secrecy::SecretString;

pub use crate::db::ClientRow as Client;

/// What `oidc-client add` registers.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub name: String,
    pub app_id: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// No secret; PKCE required.
    pub public: bool,
}

/// Whether `uri` may be registered: an absolute `https` URL, or `http` to the loopback
/// interface (a local app, RFC 8252 §7.3), without a fragment and at most 2 000 bytes.
///
/// # Errors
/// What is wrong with it.
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    if uri.len() > 2_000 {
        return Err("longer than 2 000 bytes".into());
    }
    let url = url::Url::parse(uri).map_err(|e| format!("not an absolute URL ({e})"))?;
    if url.fragment().is_some() {
        return Err("has a fragment".into());
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err("has no host".into()),
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err("plain http is only allowed to localhost / 127.0.0.1 / [::1]".into()),
        s => Err(format!("scheme {s:?}: use https")),
    }
}

/// Registers a client; returns it and, for a confidential client, its secret (shown once).
/// The audit log records `actor` adding it, in the same transaction.
///
/// # Errors
/// [`LoginError::Invalid`] names the bad field; the database failed.
pub async fn register(
    db: &DatabaseConnection,
    actor: &Actor,
    new: &NewClient,
) -> Result<(ClientRow, Option<SecretString>), LoginError> {
    let app = new.app_id.trim();
    if app.is_empty() || app.len() > 64 {
        return Err(LoginError::Invalid(
            "--app: a Kit appId of 1–64 characters".into(),
        ));
    }
    if new.redirect_uris.is_empty() {
        return Err(LoginError::Invalid(
            "at least one --redirect-uri is needed".into(),
        ));
    }
    for (flag, list) in [
        ("--redirect-uri", &new.redirect_uris),
        ("--post-logout-redirect-uri", &new.post_logout_redirect_uris),
    ] {
        for u in list {
            check_redirect_uri(u)
                .map_err(|why| LoginError::Invalid(format!("{flag} {u:?}: {why}")))?;
        }
    }
    let client_id = format!("kc_{}", random_token(12)?);
    let secret = if new.public {
        None
    } else {
        Some(format!("kcs_{}", random_token(32)?))
    };
    let row = ClientRow {
        client_id,
        name: if new.name.trim().is_empty() {
            app.to_owned()
        } else {
            new.name.trim().to_owned()
        },
        app_id: app.to_owned(),
        secret_hash: secret.as_deref().map(kitsync_secrets::token::hash),
        redirect_uris: dedup(&new.redirect_uris),
        post_logout_redirect_uris: dedup(&new.post_logout_redirect_uris),
        created_at: now_ms(),
    };
    let txn = db.begin().await?;
    db::insert_client(&txn, &row).await?;
    let detail = serde_json::json!({
        "name": row.name, "appId": row.app_id, "public": row.secret_hash.is_none(),
        "redirectUris": row.redirect_uris,
    });
    let change = audit::Change {
        action: "oidc_client.add",
        target: &row.client_id,
        tenant_id: None,
        detail: detail.to_string(),
    };
    audit::record(&txn, actor, &change, row.created_at).await?;
    txn.commit().await?;
    Ok((row, secret.map(SecretString::from)))
}

fn dedup(list: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for u in list {
        if !out.contains(u) {
            out.push(u.clone());
        }
    }
    out
}

/// Every client, oldest first.
///
/// # Errors
/// The database failed.
pub async fn list(db: &DatabaseConnection) -> Result<Vec<ClientRow>, LoginError> {
    db::clients(db).await
}

/// Removes a client and ends its sessions; `false` when there was none. The audit log
/// records `actor` removing it, in the same transaction.
///
/// # Errors
/// The database failed.
pub async fn remove(
    db: &DatabaseConnection,
    actor: &Actor,
    client_id: &str,
) -> Result<bool, LoginError> {
    db::remove_client(db, actor, client_id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_are_https_or_loopback_http_without_fragment() {
        for ok in [
            "https://app.example.com/cb",
            "https://app.example.com/cb?x=1",
            "http://127.0.0.1:8000/cb",
            "http://localhost/cb",
            "http://[::1]:9/cb",
        ] {
            assert_eq!(check_redirect_uri(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://app.example.com/cb",
            "https://app.example.com/cb#x",
            "/cb",
            "javascript:alert(1)",
            "ftp://x/cb",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }
}
