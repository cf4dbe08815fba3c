//! The client of a tenant's auth centre (Kit OAuth, docs/protocol.md §10): the code exchange,
//! the refresh, and `userinfo`, each bounded in time and size.
//!
//! A tenant's `domainName` is the base of its endpoints. A `domainName` without a scheme is
//! taken as `https://`; plain `http://` is refused unless the host is the loopback interface
//! (a local emulator), since the exchange carries the app's secret.
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kitsync_domain::error::error_chain;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
use url::form_urlencoded;

/// Largest answer read from an auth centre.
const MAX_ANSWER: usize = 64 * 1024;

/// Why the Kit leg failed.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("the tenant's domainName {0:?} is not a usable auth centre address: {1}")]
    BadDomain(String, String),
    #[error("the auth centre did not answer within {0} ms")]
    Timeout(u64),
    #[error("the auth centre could not be reached: {0}")]
    Unreachable(String),
    #[error("the auth centre refused: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        status: u16,
        error: String,
        description: Option<String>,
    },
    #[error("the auth centre answered something unexpected: {0}")]
    Malformed(String),
}

impl KitError {
    /// The auth centre said no (rather than could not be asked).
    #[must_use]
    pub fn is_refusal(&self) -> bool {
        matches!(self, KitError::Refused { .. })
    }
}

/// The Kit tokens behind a session (stored sealed).
#[derive(Clone, Serialize, Deserialize)]
pub struct KitTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Unix ms when the access token ends (from `expires_in`; 2 h when absent).
    pub expires_at: i64,
}

/// What `userinfo` says of the user.
#[derive(Debug, Clone, Default)]
pub struct KitUser {
    pub user_name: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub mobile: Option<String>,
    pub role: Option<String>,
    /// The tenant the auth centre logged the user in to.
    pub tenant: Option<String>,
    pub organization_code: Option<String>,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// HTTP/1.1 to http(s) auth centres with a per-request deadline.
#[derive(Clone)]
pub struct KitClient {
    http: HttpClient,
    timeout: Duration,
}

impl KitClient {
    /// # Errors
    /// The TLS configuration could not be built.
    pub fn new(timeout: Duration) -> Result<Self, crate::LoginError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| crate::LoginError::Crypto(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            http: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            timeout,
        })
    }

    /// `grant_type=authorization_code`.
    ///
    /// # Errors
    /// See [`KitError`].
    pub async fn exchange_code(
        &self,
        domain: &str,
        client_id: &str,
        client_secret: &SecretString,
        code: &str,
        redirect_uri: &str,
    ) -> Result<KitTokens, KitError> {
        self.token(
            domain,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("client_id", client_id),
                ("client_secret", client_secret.expose_secret()),
            ],
        )
        .await
    }

    /// `grant_type=refresh_token`; the answer may rotate the refresh token.
    ///
    /// # Errors
    /// See [`KitError`].
    pub async fn refresh(
        &self,
        domain: &str,
        client_id: &str,
        client_secret: &SecretString,
        refresh_token: &str,
    ) -> Result<KitTokens, KitError> {
        let mut t = self
            .token(
                domain,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token),
                    ("client_id", client_id),
                    ("client_secret", client_secret.expose_secret()),
                ],
            )
            .await?;
        if t.refresh_token.is_none() {
            t.refresh_token = Some(refresh_token.to_owned());
        }
        Ok(t)
    }

    async fn token(&self, domain: &str, form: &[(&str, &str)]) -> Result<KitTokens, KitError> {
        let url = endpoint(domain, "api/v1/oauth2/token")?;
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let req = hyper::Request::post(url.as_str())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| KitError::Malformed(e.to_string()))?;
        let v = self.call(req).await?;
        let access_token = str_field(&v, "access_token")
            .ok_or_else(|| KitError::Malformed("the token answer has no access_token".into()))?;
        let expires_in = v
            .get("expires_in")
            .and_then(|e| e.as_i64().or_else(|| e.as_str()?.parse().ok()))
            .unwrap_or(7_200)
            .clamp(0, 365 * 86_400);
        Ok(KitTokens {
            access_token,
            refresh_token: str_field(&v, "refresh_token"),
            expires_at: crate::now_ms() + expires_in * 1000,
        })
    }

    /// `GET userinfo` with the access token.
    ///
    /// # Errors
    /// See [`KitError`].
    pub async fn userinfo(&self, domain: &str, access_token: &str) -> Result<KitUser, KitError> {
        let url = endpoint(domain, "api/v1/oauth2/userinfo")?;
        let req = hyper::Request::get(url.as_str())
            .header(AUTHORIZATION, format!("Bearer {access_token}"))
            .header(ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| KitError::Malformed(e.to_string()))?;
        let v = self.call(req).await?;
        let user_name = str_field(&v, "userName")
            .filter(|u| !u.is_empty())
            .ok_or_else(|| KitError::Malformed("userinfo has no userName".into()))?;
        Ok(KitUser {
            user_name,
            name: str_field(&v, "name"),
            email: str_field(&v, "email"),
            mobile: str_field(&v, "mobile"),
            role: str_field(&v, "role"),
            tenant: str_field(&v, "tenant"),
            organization_code: str_field(&v, "organizationCode"),
        })
    }

    async fn call(&self, req: hyper::Request<Full<Bytes>>) -> Result<Value, KitError> {
        let ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        let work = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| KitError::Unreachable(error_chain(&e)))?;
            let status = resp.status().as_u16();
            let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| KitError::Unreachable(e.to_string()))?
                .to_bytes();
            Ok::<_, KitError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| KitError::Timeout(ms))??;
        let v: Option<Value> = serde_json::from_slice(&bytes).ok();
        if (200..300).contains(&status) {
            return v.filter(Value::is_object).ok_or_else(|| {
                KitError::Malformed(format!("HTTP {status} without a JSON object"))
            });
        }
        let v = v.unwrap_or(Value::Null);
        Err(KitError::Refused {
            status,
            error: str_field(&v, "error").unwrap_or_else(|| format!("HTTP {status}")),
            description: str_field(&v, "error_description"),
        })
    }
}

fn str_field(v: &Value, name: &str) -> Option<String> {
    match v.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The base URL of a tenant's auth centre from its `domainName`.
///
/// # Errors
/// [`KitError::BadDomain`]: not a URL, a query or fragment, or plain http to a host that is
/// not the loopback interface.
pub fn base_url(domain: &str) -> Result<url::Url, KitError> {
    let d = domain.trim();
    let bad = |why: &str| KitError::BadDomain(domain.to_owned(), why.to_owned());
    if d.is_empty() {
        return Err(bad("the tenant has no domainName"));
    }
    let with_scheme = if d.contains("://") {
        d.to_owned()
    } else {
        format!("https://{d}")
    };
    let mut url = url::Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
    if url.query().is_some() || url.fragment().is_some() || url.host_str().is_none() {
        return Err(bad("a base URL has a host and no query or fragment"));
    }
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => return Err(bad("plain http is only used for a loopback host")),
        _ => return Err(bad("not an http(s) URL")),
    }
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn endpoint(domain: &str, path: &str) -> Result<url::Url, KitError> {
    base_url(domain)?
        .join(path)
        .map_err(|e| KitError::BadDomain(domain.to_owned(), e.to_string()))
}

/// Where the browser goes to log in at a known tenant.
///
/// # Errors
/// [`KitError::BadDomain`].
pub fn authorize_url(
    domain: &str,
    client_id: &str,
    redirect_uri: &str,
    state: &str,
) -> Result<String, KitError> {
    let mut url = endpoint(domain, "api/v1/oauth2/authorize")?;
    url.query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("response_type", "code")
        .append_pair("scope", "get_user_info")
        .append_pair("state", state);
    Ok(url.into())
}

/// The Kit logout, returning the browser to `redirect_url`.
///
/// # Errors
/// [`KitError::BadDomain`].
pub fn logout_url(domain: &str, redirect_url: &str) -> Result<String, KitError> {
    let mut url = endpoint(domain, "api/v1/logout")?;
    url.query_pairs_mut()
        .append_pair("redirect_url", redirect_url);
    Ok(url.into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn domain_names_become_https_base_urls_and_http_stays_local() {
        assert_eq!(
            base_url("t1.tenant.example.com").unwrap().as_str(),
            "https://t1.tenant.example.com/"
        );
        assert_eq!(
            base_url("https://auth.example.com/t1").unwrap().as_str(),
            "https://auth.example.com/t1/"
        );
        assert_eq!(
            base_url("http://127.0.0.1:8090/t1").unwrap().as_str(),
            "http://127.0.0.1:8090/t1/"
        );
        assert!(base_url("http://localhost/t1").is_ok());
        for bad in [
            "",
            "http://auth.example.com",
            "ftp://x",
            "https://x/?a=1",
            "https://x/#f",
        ] {
            assert!(
                matches!(base_url(bad), Err(KitError::BadDomain(..))),
                "{bad}"
            );
        }
        assert_eq!(
            authorize_url("http://127.0.0.1:1/t1", "c 1", "https://k/cb", "s").unwrap(),
            "http://127.0.0.1:1/t1/api/v1/oauth2/authorize?client_id=c+1&redirect_uri=https%3A%2F%2Fk%2Fcb&response_type=code&scope=get_user_info&state=s"
        );
        assert_eq!(
            logout_url("https://a.example.com/t1", "https://app/x?y=1").unwrap(),
            "https://a.example.com/t1/api/v1/logout?redirect_url=https%3A%2F%2Fapp%2Fx%3Fy%3D1"
        );
    }
}
