//! A tenant's auth centre, emulated (`kitsync emulate auth-centre`): the OAuth 2.0
//! authorization-code login of the Kit, served for every tenant of a users file that
//! `kitsync emulate --save-users` wrote, so an ISV app (or an OpenID Connect bridge) can be
//! tried locally against the enterprise users the emulator authorised.
//!
//! Each tenant lives under `/{tenantId}` (its `domainName` is `{auth centre URL}/{tenantId}`):
//!
//! - `GET /{t}/api/v1/oauth2/authorize?client_id=&redirect_uri=&response_type=code
//!   [&scope=get_user_info][&state=][&login_hint=]`: with a `login_hint` naming an enterprise
//!   user, or a login session of this tenant (a cookie), it answers 302 to
//!   `redirect_uri?code=…&state=…&tenant=<t>` at once; otherwise it shows a login form (a user
//!   name, no password: it is an emulator) that POSTs back to the same path. An unknown
//!   `client_id` or an unusable `redirect_uri` gets an HTML error page and no redirect; other
//!   faults are redirected as `error=…` (RFC 6749, section 4.1.2.1). `prompt=login` shows the
//!   form even with a session, `prompt=none` never does (`error=login_required`).
//! - `POST /{t}/api/v1/oauth2/token` (form-urlencoded): `grant_type=authorization_code` with
//!   `code` (single use, 5 minutes, bound to tenant, client and `redirect_uri`; `redirect_uri`
//!   optional, identical when given) or `grant_type=refresh_token` with `refresh_token`
//!   (rotated: the old one stops working). The client authenticates with `client_id` and
//!   `client_secret` — the app's decrypted `clientSecret` — in the body or as HTTP Basic,
//!   compared in constant time. A code presented twice is `invalid_grant` and revokes every
//!   token it issued. Access tokens live 2 h, refresh tokens 30 days.
//! - `GET /{t}/api/v1/oauth2/userinfo` with `Authorization: Bearer <access_token>`: the
//!   token's user, with the role of the token's app, plus a non-standard `authorized` (the app
//!   authorises the user now and the authorisation is enabled). A user whose authorisation was
//!   cancelled still logs in: the auth centre authenticates enterprise users, the ISV decides
//!   who may use its app.
//! - `GET /{t}/api/v1/logout?redirect_url=`: ends the login session (server side, and the
//!   cookie) and redirects to an absolute http(s) `redirect_url`, or shows a page.
//! - `GET /unified-login?appId=&redirect_uri=&state=`: the marketplace's unified login page
//!   for an app: every tenant that bound it, with its users; choosing one logs in and redirects
//!   to `redirect_uri?code=…&tenant=…&state=…`, the code redeemable at that tenant's token
//!   endpoint.
//!
//! Everything is kept in memory. Error pages and JSON errors say what is wrong; HTML is
//! escaped.
use crate::emulate::directory::enc;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use kitsync_domain::html::escape;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

/// How long an authorization code may wait for its exchange.
pub const CODE_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// How long an access token is good for.
pub const ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(2 * 3600);
/// How long a refresh token is good for.
pub const REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a login session lasts (the browser's cookie is a session cookie).
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The one scope the Kit's auth centre knows.
pub const SCOPE: &str = "get_user_info";
/// The login session's cookie (one per tenant: its `Path` is `/{tenantId}`).
pub const SESSION_COOKIE: &str = "kitsync_auth_centre_session";

// ---------------------------------------------------------------------------------------------
// The users file
// ---------------------------------------------------------------------------------------------

/// What `kitsync emulate --save-users` writes and the auth centre serves: per tenant that was
/// not deleted, its apps with their plaintext secrets and every user ever authorised.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsersFile {
    /// tenantId → the tenant.
    pub tenants: BTreeMap<String, SavedTenant>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedTenant {
    /// The tenant's display name (`projectName` in userinfo).
    pub name: String,
    /// What tenantSync sent as `domainName`.
    pub domain_name: String,
    #[serde(default)]
    pub test: bool,
    /// appId → its credentials.
    #[serde(default)]
    pub apps: BTreeMap<String, SavedApp>,
    /// orgCode → orgName.
    #[serde(default)]
    pub departments: BTreeMap<String, String>,
    /// userName → the user.
    #[serde(default)]
    pub users: BTreeMap<String, SavedUser>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedApp {
    pub client_id: String,
    /// The plaintext secret (applicationSync sends it encrypted).
    pub client_secret: String,
}

impl std::fmt::Debug for SavedApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedApp")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedUser {
    pub name: String,
    pub org_code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    /// appId (every app the tenant has bound) → the user's authorisation now, or `null`.
    #[serde(default)]
    pub apps: BTreeMap<String, Option<SavedAuthorization>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedAuthorization {
    /// `user` or `admin`.
    pub role: String,
    pub enabled: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a users file of `kitsync emulate --save-users`: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

/// The auth centre of every tenant of a users file. Cheap to clone (shared state).
#[derive(Clone)]
pub struct AuthCentre {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AuthCentre {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthCentre")
            .field("tenants", &self.inner.users.tenants.len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    users: UsersFile,
    state: Mutex<Grants>,
}

struct Code {
    tenant: String,
    app_id: String,
    redirect_uri: String,
    user: String,
    scope: String,
    expires: Instant,
    /// The grant its exchange started, once it was exchanged.
    redeemed: Option<u64>,
    /// Kept this long (past its expiry, or as long as its tokens may live) to tell an expired
    /// or reused code from an unknown one.
    keep_until: Instant,
}

#[derive(Clone)]
struct Token {
    tenant: String,
    app_id: String,
    user: String,
    scope: String,
    /// Every token from one code exchange (refreshes included) shares it.
    grant: u64,
    expires: Instant,
}

struct Session {
    tenant: String,
    user: String,
    expires: Instant,
}

#[derive(Default)]
struct Grants {
    codes: HashMap<String, Code>,
    access: HashMap<String, Token>,
    refresh: HashMap<String, Token>,
    sessions: HashMap<String, Session>,
    next_grant: u64,
    pruned: Option<Instant>,
}

impl Grants {
    /// Forgets what expired, at most once a minute.
    fn prune(&mut self, now: Instant) {
        if self
            .pruned
            .is_some_and(|p| now.duration_since(p) < Duration::from_secs(60))
        {
            return;
        }
        self.pruned = Some(now);
        self.codes.retain(|_, c| c.keep_until > now);
        self.access.retain(|_, t| t.expires > now);
        self.refresh.retain(|_, t| t.expires > now);
        self.sessions.retain(|_, s| s.expires > now);
    }

    fn revoke_grant(&mut self, grant: u64) -> usize {
        let before = self.access.len() + self.refresh.len();
        self.access.retain(|_, t| t.grant != grant);
        self.refresh.retain(|_, t| t.grant != grant);
        before - self.access.len() - self.refresh.len()
    }

    /// A new access and refresh token for `base`'s user, app and grant.
    fn issue_tokens(&mut self, base: Token, now: Instant) -> serde_json::Value {
        let (access, refresh) = (random_token(), random_token());
        let scope = base.scope.clone();
        self.access.insert(
            access.clone(),
            Token {
                expires: now + ACCESS_TOKEN_LIFETIME,
                ..base.clone()
            },
        );
        self.refresh.insert(
            refresh.clone(),
            Token {
                expires: now + REFRESH_TOKEN_LIFETIME,
                ..base
            },
        );
        json!({
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": ACCESS_TOKEN_LIFETIME.as_secs(),
            "token_type": "Bearer",
            "scope": scope,
        })
    }
}

impl AuthCentre {
    /// Reads a users file (`kitsync emulate --save-users`).
    ///
    /// # Errors
    /// The file cannot be read, is not such a file, or is inconsistent (see [`AuthCentre::new`]).
    pub fn from_file(path: &std::path::Path) -> Result<Self, LoadError> {
        let shown = path.display().to_string();
        let raw = std::fs::read(path).map_err(|source| LoadError::Read {
            path: shown.clone(),
            source,
        })?;
        let users: UsersFile = serde_json::from_slice(&raw).map_err(|source| LoadError::Parse {
            path: shown.clone(),
            source,
        })?;
        Self::new(users).map_err(|e| LoadError::Invalid(format!("{shown}: {e}")))
    }

    /// # Errors
    /// No tenant; a tenant id that cannot be one path segment; an app without a clientId or
    /// secret; two apps of a tenant with the same clientId.
    pub fn new(users: UsersFile) -> Result<Self, String> {
        if users.tenants.is_empty() {
            return Err("no tenants: nothing to log in to".into());
        }
        for (t, tenant) in &users.tenants {
            if t.is_empty() || t.contains('/') {
                return Err(format!(
                    "tenant id `{t}` cannot be served under /{{tenantId}}"
                ));
            }
            let mut seen = BTreeMap::new();
            for (app, a) in &tenant.apps {
                if a.client_id.is_empty() || a.client_secret.is_empty() {
                    return Err(format!(
                        "tenant {t}, app {app}: clientId and clientSecret must not be empty"
                    ));
                }
                if let Some(other) = seen.insert(a.client_id.as_str(), app) {
                    return Err(format!(
                        "tenant {t}: apps {other} and {app} share clientId `{}`",
                        a.client_id
                    ));
                }
            }
        }
        Ok(AuthCentre {
            inner: Arc::new(Inner {
                users,
                state: Mutex::new(Grants::default()),
            }),
        })
    }

    /// The tenants served.
    #[must_use]
    pub fn users(&self) -> &UsersFile {
        &self.inner.users
    }

    /// Every endpoint, for `axum::serve` or an in-process test.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(index).fallback(not_allowed))
            .route(
                "/unified-login",
                get(unified_page).post(unified_login).fallback(not_allowed),
            )
            .route(
                "/{tenant}/api/v1/oauth2/authorize",
                get(authorize).post(login).fallback(not_allowed),
            )
            .route(
                "/{tenant}/api/v1/oauth2/token",
                axum::routing::post(token).fallback(not_allowed),
            )
            .route(
                "/{tenant}/api/v1/oauth2/userinfo",
                get(userinfo).post(userinfo).fallback(not_allowed),
            )
            .route("/{tenant}/api/v1/logout", get(logout).fallback(not_allowed))
            .fallback(not_found)
            .with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` completes.
    ///
    /// # Errors
    /// The listener failed.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    fn grants(&self) -> MutexGuard<'_, Grants> {
        let mut g = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        g.prune(Instant::now());
        g
    }

    fn tenant(&self, t: &str) -> Option<&SavedTenant> {
        self.inner.users.tenants.get(t)
    }

    /// Starts a login session of `user` at tenant `t`; the `Set-Cookie` value.
    fn start_session(&self, t: &str, user: &str) -> String {
        let id = random_token();
        self.grants().sessions.insert(
            id.clone(),
            Session {
                tenant: t.to_owned(),
                user: user.to_owned(),
                expires: Instant::now() + SESSION_LIFETIME,
            },
        );
        format!(
            "{SESSION_COOKIE}={id}; Path=/{}; HttpOnly; SameSite=Lax",
            enc(t)
        )
    }

    /// The user of a live login session of tenant `t` among the request's cookies.
    fn session_user(&self, t: &str, headers: &HeaderMap) -> Option<String> {
        let ids = cookies(headers, SESSION_COOKIE);
        let g = self.grants();
        ids.iter()
            .filter_map(|id| g.sessions.get(id))
            .find(|s| s.tenant == t && s.expires > Instant::now())
            .map(|s| s.user.clone())
    }

    /// A fresh code for `user` of tenant `t`, bound to the request's client and redirect_uri.
    fn issue_code(&self, t: &str, req: &AuthzRequest, user: &str) -> String {
        let code = random_token();
        let now = Instant::now();
        self.grants().codes.insert(
            code.clone(),
            Code {
                tenant: t.to_owned(),
                app_id: req.app_id.clone(),
                redirect_uri: req.redirect_uri.clone(),
                user: user.to_owned(),
                scope: req.scope.clone(),
                expires: now + CODE_LIFETIME,
                redeemed: None,
                keep_until: now + CODE_LIFETIME + Duration::from_secs(3600),
            },
        );
        code
    }

    /// Logs `user` in (a new session unless `session` is false), issues a code and sends the
    /// browser back to the app with it.
    fn complete(
        &self,
        t: &str,
        req: &AuthzRequest,
        user: &str,
        session: bool,
        tenant_last: bool,
    ) -> Response {
        let cookie = session.then(|| self.start_session(t, user));
        let code = self.issue_code(t, req, user);
        tracing::info!(tenant = t, user, app = %req.app_id, "auth centre: logged in, code issued");
        let state = req.state.as_deref();
        let params: [(&str, Option<&str>); 3] = if tenant_last {
            [("code", Some(&code)), ("state", state), ("tenant", Some(t))]
        } else {
            [("code", Some(&code)), ("tenant", Some(t)), ("state", state)]
        };
        redirect(&with_params(&req.redirect, &params), cookie)
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// 64 hex digits, 244 of their bits random (two v4 UUIDs, from the system's secure generator).
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Whether `given` is `expected`, in time independent of where they differ (and of their
/// lengths): both are MACed and the MACs compared in constant time.
fn same_secret(given: &str, expected: &str) -> bool {
    let mac = |s: &str| {
        let mut m = Hmac::<Sha256>::new_from_slice(b"kitsync auth centre client secret").ok()?;
        m.update(s.as_bytes());
        Some(m)
    };
    let (Some(want), Some(got)) = (mac(expected), mac(given)) else {
        return false;
    };
    got.verify_slice(&want.finalize().into_bytes()).is_ok()
}

/// A stable id for a user of a tenant (`id` and `userId` in userinfo).
fn user_id(t: &str, user: &str) -> String {
    let digest = Sha256::digest(format!("{t}\n{user}").as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Form-urlencoded parameters (a query string or a body). A parameter without a value counts
/// as absent; one given twice is refused (RFC 6749, section 3.1).
#[derive(Debug, Default)]
struct Params(BTreeMap<String, String>);

impl Params {
    fn parse(raw: &[u8]) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for (k, v) in url::form_urlencoded::parse(raw) {
            if map.insert(k.to_string(), v.to_string()).is_some() {
                return Err(format!("`{k}` is given more than once"));
            }
        }
        Ok(Params(map))
    }

    fn query(raw: Option<&str>) -> Result<Self, String> {
        Self::parse(raw.unwrap_or_default().as_bytes())
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }
}

/// Where a browser may be sent: an absolute http(s) URL with a host and no fragment.
fn redirect_target(name: &str, raw: &str) -> Result<Url, String> {
    let url =
        Url::parse(raw).map_err(|e| format!("{name} `{raw}` is not an absolute URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{name} `{raw}` must be an http:// or https:// URL"));
    }
    if url.host().is_none() {
        return Err(format!("{name} `{raw}` has no host"));
    }
    if url.fragment().is_some() {
        return Err(format!("{name} `{raw}` must not have a fragment (#…)"));
    }
    Ok(url)
}

/// `url` with `params` appended to its query (those that are `None` left out).
fn with_params(url: &Url, params: &[(&str, Option<&str>)]) -> String {
    let mut url = url.clone();
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
    }
    url.to_string()
}

fn redirect(location: &str, cookie: Option<String>) -> Response {
    let mut res = StatusCode::FOUND.into_response();
    let h = res.headers_mut();
    match HeaderValue::from_str(location) {
        Ok(v) => {
            h.insert(header::LOCATION, v);
        }
        Err(_) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Cannot redirect",
                &format!("`{location}` cannot be a Location header"),
            )
        }
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(v) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.append(header::SET_COOKIE, v);
    }
    res
}

/// The values of every cookie called `name`.
fn cookies(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The parameters of `form`, posted in `body`. `Err` is the error page.
fn form_params(headers: &HeaderMap, body: &[u8], form: &str) -> Result<Params, Box<Response>> {
    if !is_form(headers) {
        return Err(Box::new(error_page(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Not a form",
            &format!("{form} is posted as application/x-www-form-urlencoded"),
        )));
    }
    Params::parse(body).map_err(|e| Box::new(invalid_request_page(&e)))
}

/// The `Authorization` header's credentials if its scheme is `scheme` (any case).
fn authorization(headers: &HeaderMap, scheme: &str) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (given, rest) = value.trim().split_once(' ')?;
    given
        .eq_ignore_ascii_case(scheme)
        .then(|| rest.trim().to_owned())
}

/// A JSON answer that must not be cached (tokens, user data).
fn no_store_json(v: serde_json::Value) -> Response {
    let mut res = axum::Json(v).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

// ---------------------------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------------------------

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;\
padding:0 1rem;color:#222}h1{font-size:1.4rem}code{background:#f2f2f2;padding:0 .2rem}\
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5rem .8rem}\
.error{background:#fdecea;border-left:4px solid #d93025;padding:.5rem .8rem}\
input{font-size:1rem;padding:.3rem;width:18rem}button{font-size:1rem;padding:.3rem 1rem}\
section{border-top:1px solid #ddd;margin-top:1.2rem}";

/// An HTML page; `body` is already HTML (everything in it escaped by the caller).
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n",
        escape(title)
    );
    let mut res = (status, html).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    res
}

/// The error page for parameters that do not parse.
fn invalid_request_page(message: &str) -> Response {
    error_page(StatusCode::BAD_REQUEST, "Invalid request", message)
}

/// An error page: `message` is plain text.
fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    page(
        status,
        title,
        &format!(
            "<h1>{}</h1>\n<p class=\"error\">{}</p>\n<p>This is <code>kitsync emulate auth-centre</code>, \
             an emulator of a KooGallery tenant's auth centre.</p>",
            escape(title),
            escape(message)
        ),
    )
}

const EMULATOR_NOTE: &str = "<p class=\"note\">This is <code>kitsync emulate auth-centre</code>, \
an emulator of the tenant's auth centre: there is no password. Choose or type the user name \
of an enterprise user the emulated marketplace authorised.</p>";

/// A `<datalist>` of a tenant's users, each labelled with `app`'s authorisation.
fn user_options(id: &str, tenant: &SavedTenant, app: &str) -> String {
    let mut out = format!("<datalist id=\"{}\">", escape(id));
    for (name, u) in &tenant.users {
        let auth = match u.apps.get(app).and_then(Option::as_ref) {
            Some(a) if a.enabled => a.role.clone(),
            Some(a) => format!("{}, disabled", a.role),
            None => format!("not authorised for {app}"),
        };
        out.push_str(&format!(
            "<option value=\"{}\">{} ({}; {})</option>",
            escape(name),
            escape(&u.name),
            escape(&u.org_code),
            escape(&auth)
        ));
    }
    out.push_str("</datalist>");
    out
}

fn hidden(name: &str, value: Option<&str>) -> String {
    value.map_or_else(String::new, |v| {
        format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            escape(name),
            escape(v)
        )
    })
}

fn login_form(
    status: StatusCode,
    t: &str,
    tenant: &SavedTenant,
    req: &AuthzRequest,
    problem: Option<&str>,
) -> Response {
    let problem = problem.map_or_else(String::new, |p| {
        format!("<p class=\"error\">{}</p>\n", escape(p))
    });
    let body = format!(
        "<h1>Log in to {name}</h1>\n{EMULATOR_NOTE}\n{problem}\
         <p>App <code>{app}</code> (clientId <code>{client}</code>) asks tenant <code>{t}</code> \
         to log you in; you will then be sent back to <code>{back}</code>.</p>\n\
         <form method=\"post\" action=\"authorize\">\
         {h_client}{h_redirect}{h_type}{h_scope}{h_state}\
         <label>User name <input name=\"user_name\" list=\"users\" autofocus required></label> \
         {options} <button type=\"submit\">Log in</button></form>\n\
         <p>{n} enterprise users.</p>",
        name = escape(&tenant.name),
        app = escape(&req.app_id),
        client = escape(&req.client_id),
        t = escape(t),
        back = escape(&req.redirect_uri),
        h_client = hidden("client_id", Some(&req.client_id)),
        h_redirect = hidden("redirect_uri", Some(&req.redirect_uri)),
        h_type = hidden("response_type", Some("code")),
        h_scope = hidden("scope", req.requested_scope.as_deref()),
        h_state = hidden("state", req.state.as_deref()),
        options = user_options("users", tenant, &req.app_id),
        n = tenant.users.len(),
    );
    page(status, &format!("Log in to {}", tenant.name), &body)
}

// ---------------------------------------------------------------------------------------------
// Errors of the JSON endpoints
// ---------------------------------------------------------------------------------------------

/// An RFC 6749 error answer (`{"error","error_description"}`).
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// `WWW-Authenticate` (invalid_client: Basic; userinfo: Bearer).
    challenge: Option<&'static str>,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            error,
            description: description.into(),
            challenge: None,
        }
    }

    fn request(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }

    fn grant(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", d)
    }

    fn client(d: impl Into<String>) -> Self {
        OAuthError {
            challenge: Some("Basic"),
            ..Self::new(StatusCode::UNAUTHORIZED, "invalid_client", d)
        }
    }

    fn token(d: impl Into<String>) -> Self {
        OAuthError {
            challenge: Some("Bearer"),
            ..Self::new(StatusCode::UNAUTHORIZED, "invalid_token", d)
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "error_description": self.description});
        let mut res = (self.status, axum::Json(body)).into_response();
        let h = res.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if let Some(scheme) = self.challenge {
            let quoted: String = self
                .description
                .chars()
                .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
                .collect();
            let value = if scheme == "Bearer" {
                format!(
                    "Bearer realm=\"kitsync-emulate\", error=\"{}\", error_description=\"{quoted}\"",
                    self.error
                )
            } else {
                "Basic realm=\"kitsync-emulate\"".to_owned()
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        res
    }
}

async fn not_found(uri: axum::http::Uri) -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "Not found",
        &format!(
            "{} is not an endpoint of this auth centre: a tenant's are under /{{tenantId}}/api/v1/ \
             (oauth2/authorize, oauth2/token, oauth2/userinfo, logout); / lists the tenants",
            uri.path()
        ),
    )
}

async fn not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let (status, error) = (StatusCode::METHOD_NOT_ALLOWED, "invalid_request");
    if uri.path().ends_with("/oauth2/token") || uri.path().ends_with("/oauth2/userinfo") {
        return OAuthError::new(
            status,
            error,
            format!("{method} is not allowed on {}", uri.path()),
        )
        .into_response();
    }
    error_page(
        status,
        "Method not allowed",
        &format!("{method} is not allowed on {}", uri.path()),
    )
}

fn unknown_tenant(ac: &AuthCentre, t: &str) -> String {
    let known: Vec<&str> = ac.inner.users.tenants.keys().map(String::as_str).collect();
    format!(
        "tenant `{t}` is not in this auth centre (it serves {})",
        known.join(", ")
    )
}

/// The error page for a browser endpoint of an unknown tenant.
fn unknown_tenant_page(ac: &AuthCentre, t: &str) -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "Unknown tenant",
        &unknown_tenant(ac, t),
    )
}

/// The OAuth error for the token or userinfo endpoint of an unknown tenant.
fn unknown_tenant_error(ac: &AuthCentre, t: &str) -> OAuthError {
    OAuthError::new(
        StatusCode::NOT_FOUND,
        "invalid_request",
        unknown_tenant(ac, t),
    )
}

// ---------------------------------------------------------------------------------------------
// authorize
// ---------------------------------------------------------------------------------------------

/// A valid authorization request.
struct AuthzRequest {
    app_id: String,
    client_id: String,
    redirect_uri: String,
    redirect: Url,
    state: Option<String>,
    /// As requested (replayed by the login form).
    requested_scope: Option<String>,
    /// As granted.
    scope: String,
}

/// Checks an authorization request. `Err` is the answer: an error page when the client or
/// the redirect_uri cannot be trusted, else a redirect carrying `error`.
fn check_authorize(
    t: &str,
    tenant: &SavedTenant,
    p: &Params,
) -> Result<AuthzRequest, Box<Response>> {
    let bad = |title: &str, message: String| {
        Box::new(error_page(StatusCode::BAD_REQUEST, title, &message))
    };
    let Some(client_id) = p.get("client_id") else {
        return Err(bad(
            "client_id is missing",
            "the authorization request has no client_id: give the app's clientId (from applicationSync)".into(),
        ));
    };
    let Some((app_id, _)) = tenant.apps.iter().find(|(_, a)| a.client_id == client_id) else {
        let ids: Vec<&str> = tenant.apps.values().map(|a| a.client_id.as_str()).collect();
        let hint = tenant
            .apps
            .get(client_id)
            .map(|a| {
                format!(
                    " `{client_id}` is an appId: its clientId is `{}`.",
                    a.client_id
                )
            })
            .unwrap_or_default();
        return Err(bad(
            "Unknown client",
            format!(
                "client_id `{client_id}` is not the clientId of an app tenant {t} bound (its apps' \
                 clientIds: {}).{hint}",
                if ids.is_empty() {
                    "none".to_owned()
                } else {
                    ids.join(", ")
                }
            ),
        ));
    };
    let Some(redirect_uri) = p.get("redirect_uri") else {
        return Err(bad(
            "redirect_uri is missing",
            "the authorization request has no redirect_uri: give the app's callback URL".into(),
        ));
    };
    let redirect = redirect_target("redirect_uri", redirect_uri)
        .map_err(|m| bad("Invalid redirect_uri", m))?;
    let state = p.get("state");
    let fail = |error: &str, description: String| {
        Err(Box::new(self::redirect(
            &with_params(
                &redirect,
                &[
                    ("error", Some(error)),
                    ("error_description", Some(&description)),
                    ("state", state),
                ],
            ),
            None,
        )))
    };
    match p.get("response_type") {
        Some("code") => {}
        None => {
            return fail(
                "invalid_request",
                "response_type is missing: it must be `code`".into(),
            )
        }
        Some(other) => {
            return fail(
                "unsupported_response_type",
                format!("response_type `{other}`: only `code` is supported"),
            )
        }
    }
    let requested_scope = p.get("scope");
    if let Some(s) = requested_scope {
        if let Some(other) = s.split(' ').find(|x| !x.is_empty() && *x != SCOPE) {
            return fail(
                "invalid_scope",
                format!("scope `{other}` is unknown: the only scope is `{SCOPE}`"),
            );
        }
    }
    Ok(AuthzRequest {
        app_id: app_id.clone(),
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        redirect,
        state: state.map(str::to_owned),
        requested_scope: requested_scope.map(str::to_owned),
        scope: SCOPE.to_owned(),
    })
}

async fn authorize(
    State(ac): State<AuthCentre>,
    Path(t): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(tenant) = ac.tenant(&t) else {
        return unknown_tenant_page(&ac, &t);
    };
    let p = match Params::query(query.as_deref()) {
        Ok(p) => p,
        Err(e) => return invalid_request_page(&e),
    };
    let req = match check_authorize(&t, tenant, &p) {
        Ok(r) => r,
        Err(res) => return *res,
    };
    let prompt = p.get("prompt").unwrap_or_default();
    if let Some(hint) = p.get("login_hint") {
        if tenant.users.contains_key(hint) {
            return ac.complete(&t, &req, hint, true, true);
        }
        if prompt != "none" {
            return login_form(
                StatusCode::OK,
                &t,
                tenant,
                &req,
                Some(&format!(
                    "login_hint `{hint}` is not an enterprise user of this tenant: choose one below."
                )),
            );
        }
    }
    let wants_form = prompt
        .split(' ')
        .any(|x| x == "login" || x == "select_account");
    if !wants_form {
        if let Some(user) = ac
            .session_user(&t, &headers)
            .filter(|u| tenant.users.contains_key(u))
        {
            return ac.complete(&t, &req, &user, false, true);
        }
    }
    if prompt == "none" {
        let state = req.state.as_deref();
        return redirect(
            &with_params(
                &req.redirect,
                &[
                    ("error", Some("login_required")),
                    (
                        "error_description",
                        Some("prompt=none, but no one is logged in at this tenant"),
                    ),
                    ("state", state),
                ],
            ),
            None,
        );
    }
    login_form(StatusCode::OK, &t, tenant, &req, None)
}

/// The login form's POST: the authorization request again, and `user_name`.
async fn login(
    State(ac): State<AuthCentre>,
    Path(t): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(tenant) = ac.tenant(&t) else {
        return unknown_tenant_page(&ac, &t);
    };
    let p = match form_params(&headers, &body, "the login form") {
        Ok(p) => p,
        Err(res) => return *res,
    };
    let req = match check_authorize(&t, tenant, &p) {
        Ok(r) => r,
        Err(res) => return *res,
    };
    match p.get("user_name").map(str::trim) {
        Some(user) if tenant.users.contains_key(user) => ac.complete(&t, &req, user, true, true),
        Some(user) => login_form(
            StatusCode::BAD_REQUEST,
            &t,
            tenant,
            &req,
            Some(&format!(
                "`{user}` is not an enterprise user of this tenant."
            )),
        ),
        None => login_form(
            StatusCode::BAD_REQUEST,
            &t,
            tenant,
            &req,
            Some("Give a user name."),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// token
// ---------------------------------------------------------------------------------------------

/// The client's credentials: HTTP Basic or `client_id`/`client_secret` in the body, not both.
fn client_credentials(headers: &HeaderMap, p: &Params) -> Result<(String, String), OAuthError> {
    let Some(b64) = authorization(headers, "basic") else {
        let Some(id) = p.get("client_id") else {
            return Err(OAuthError::client(
                "no client authentication: give client_id and client_secret (the app's decrypted clientSecret)",
            ));
        };
        let Some(secret) = p.get("client_secret") else {
            return Err(OAuthError::client(format!(
                "client_secret is missing for client_id `{id}`"
            )));
        };
        return Ok((id.to_owned(), secret.to_owned()));
    };
    if p.get("client_secret").is_some() {
        return Err(OAuthError::request(
            "the client authenticates twice (HTTP Basic and client_secret): use one",
        ));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .ok()
        .and_then(|raw| String::from_utf8(raw).ok())
        .ok_or_else(|| OAuthError::client("the Basic credentials are not base64 of id:secret"))?;
    let (id, secret) = decoded
        .split_once(':')
        .ok_or_else(|| OAuthError::client("the Basic credentials are not id:secret"))?;
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let (id, secret) = (decode(id), decode(secret));
    if p.get("client_id").is_some_and(|b| b != id) {
        return Err(OAuthError::request(
            "client_id in the body differs from the HTTP Basic one",
        ));
    }
    Ok((id, secret))
}

async fn token(
    State(ac): State<AuthCentre>,
    Path(t): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match exchange(&ac, &t, &headers, &body) {
        Ok(v) => {
            let mut res = no_store_json(v);
            res.headers_mut()
                .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            res
        }
        Err(e) => {
            tracing::info!(tenant = %t, error = e.error, description = %e.description, "auth centre: token refused");
            e.into_response()
        }
    }
}

fn exchange(
    ac: &AuthCentre,
    t: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<serde_json::Value, OAuthError> {
    let tenant = ac.tenant(t).ok_or_else(|| unknown_tenant_error(ac, t))?;
    if !is_form(headers) {
        return Err(OAuthError::request(
            "the token request is posted as application/x-www-form-urlencoded",
        ));
    }
    let p = Params::parse(body).map_err(OAuthError::request)?;
    let (client_id, secret) = client_credentials(headers, &p)?;
    let Some((app_id, app)) = tenant.apps.iter().find(|(_, a)| a.client_id == client_id) else {
        return Err(OAuthError::client(format!(
            "client_id `{client_id}` is not the clientId of an app tenant {t} bound"
        )));
    };
    if !same_secret(&secret, &app.client_secret) {
        return Err(OAuthError::client(format!(
            "client_secret is wrong for client_id `{client_id}`: it is the app's clientSecret from \
             applicationSync, decrypted"
        )));
    }
    let now = Instant::now();
    match p.get("grant_type") {
        None => Err(OAuthError::request(
            "grant_type is missing: authorization_code or refresh_token",
        )),
        Some("authorization_code") => {
            let code = p.get("code").ok_or_else(|| {
                OAuthError::request("code is missing (grant_type=authorization_code)")
            })?;
            let mut g = ac.grants();
            let Some(c) = g.codes.get(code) else {
                return Err(OAuthError::grant("the code is unknown"));
            };
            if let Some(grant) = c.redeemed {
                let revoked = g.revoke_grant(grant);
                tracing::info!(tenant = t, revoked, "auth centre: a code was used twice");
                return Err(OAuthError::grant(format!(
                    "the code was already used: every token it issued is revoked ({revoked} \
                     now)"
                )));
            }
            if c.tenant != t {
                return Err(OAuthError::grant(format!(
                    "the code was issued by tenant {}'s auth centre, not {t}'s",
                    c.tenant
                )));
            }
            if c.app_id != *app_id {
                return Err(OAuthError::grant(format!(
                    "the code was issued to another client, not `{client_id}`"
                )));
            }
            if c.expires <= now {
                return Err(OAuthError::grant(format!(
                    "the code expired: it is good for {} s",
                    CODE_LIFETIME.as_secs()
                )));
            }
            if let Some(r) = p.get("redirect_uri") {
                if r != c.redirect_uri {
                    return Err(OAuthError::grant(format!(
                        "redirect_uri `{r}` is not the authorization request's `{}`",
                        c.redirect_uri
                    )));
                }
            }
            let base = Token {
                tenant: t.to_owned(),
                app_id: c.app_id.clone(),
                user: c.user.clone(),
                scope: c.scope.clone(),
                grant: g.next_grant,
                expires: now,
            };
            g.next_grant += 1;
            if let Some(c) = g.codes.get_mut(code) {
                c.redeemed = Some(base.grant);
                c.keep_until = now + REFRESH_TOKEN_LIFETIME;
            }
            tracing::info!(tenant = t, user = %base.user, app = %base.app_id, "auth centre: code exchanged");
            Ok(g.issue_tokens(base, now))
        }
        Some("refresh_token") => {
            let refresh = p.get("refresh_token").ok_or_else(|| {
                OAuthError::request("refresh_token is missing (grant_type=refresh_token)")
            })?;
            let mut g = ac.grants();
            let Some(old) = g.refresh.get(refresh).cloned() else {
                return Err(OAuthError::grant(
                    "the refresh token is unknown, revoked (a refresh replaces it), or expired",
                ));
            };
            if old.tenant != t || old.app_id != *app_id {
                return Err(OAuthError::grant(
                    "the refresh token was issued to another client or tenant",
                ));
            }
            if old.expires <= now {
                g.refresh.remove(refresh);
                return Err(OAuthError::grant("the refresh token expired"));
            }
            if let Some(s) = p.get("scope") {
                if let Some(other) = s.split(' ').find(|x| !x.is_empty() && *x != old.scope) {
                    return Err(OAuthError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        format!("scope `{other}` was not granted (only `{}`)", old.scope),
                    ));
                }
            }
            g.refresh.remove(refresh);
            Ok(g.issue_tokens(old, now))
        }
        Some(other) => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("grant_type `{other}`: authorization_code or refresh_token"),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// userinfo, logout
// ---------------------------------------------------------------------------------------------

async fn userinfo(
    State(ac): State<AuthCentre>,
    Path(t): Path<String>,
    headers: HeaderMap,
) -> Response {
    match user_info(&ac, &t, &headers) {
        Ok(v) => no_store_json(v),
        Err(e) => e.into_response(),
    }
}

fn user_info(
    ac: &AuthCentre,
    t: &str,
    headers: &HeaderMap,
) -> Result<serde_json::Value, OAuthError> {
    let tenant = ac.tenant(t).ok_or_else(|| unknown_tenant_error(ac, t))?;
    let bearer = authorization(headers, "bearer")
        .ok_or_else(|| OAuthError::token("no `Authorization: Bearer <access_token>` header"))?;
    let token = {
        let g = ac.grants();
        match g.access.get(&bearer) {
            Some(tok) => tok.clone(),
            None if g.refresh.contains_key(&bearer) => {
                return Err(OAuthError::token(
                    "that is a refresh token: userinfo takes the access token",
                ))
            }
            None => {
                return Err(OAuthError::token(
                    "the access token is unknown, revoked or expired",
                ))
            }
        }
    };
    if token.tenant != t {
        return Err(OAuthError::token(format!(
            "the access token was issued by tenant {}'s auth centre, not {t}'s",
            token.tenant
        )));
    }
    if token.expires <= Instant::now() {
        return Err(OAuthError::token("the access token expired"));
    }
    let user = tenant.users.get(&token.user).cloned().unwrap_or_default();
    let auth = user.apps.get(&token.app_id).and_then(Option::as_ref);
    let id = user_id(t, &token.user);
    Ok(json!({
        "id": id,
        "userName": token.user,
        "name": user.name,
        "email": user.email,
        "mobile": user.mobile,
        "role": auth.map_or("user", |a| a.role.as_str()),
        "organizationName": tenant.departments.get(&user.org_code),
        "userId": id,
        "organizationCode": user.org_code,
        "projectName": tenant.name,
        "tenant": t,
        "authorized": auth.is_some_and(|a| a.enabled),
    }))
}

async fn logout(
    State(ac): State<AuthCentre>,
    Path(t): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let ended = {
        let mut g = ac.grants();
        let mut ended = 0;
        for id in cookies(&headers, SESSION_COOKIE) {
            if g.sessions.get(&id).is_some_and(|s| s.tenant == t) {
                g.sessions.remove(&id);
                ended += 1;
            }
        }
        ended
    };
    let clear = format!(
        "{SESSION_COOKIE}=; Path=/{}; Max-Age=0; HttpOnly; SameSite=Lax",
        enc(&t)
    );
    let target = Params::query(query.as_deref())
        .map_err(|e| format!("the request is invalid ({e})"))
        .and_then(|p| {
            p.get("redirect_url")
                .map(|u| redirect_target("redirect_url", u))
                .transpose()
        });
    let mut res = match target {
        Ok(Some(url)) => redirect(url.as_str(), None),
        Ok(None) => page(
            StatusCode::OK,
            "Logged out",
            &format!(
                "<h1>Logged out</h1>\n<p>{}</p>\n{EMULATOR_NOTE}",
                if ended > 0 {
                    format!(
                        "The login session at tenant <code>{}</code> has ended.",
                        escape(&t)
                    )
                } else {
                    format!(
                        "No one was logged in at tenant <code>{}</code> in this browser.",
                        escape(&t)
                    )
                }
            ),
        ),
        Err(e) => error_page(
            StatusCode::BAD_REQUEST,
            "Logged out, not redirected",
            &format!("The login session has ended, but {e}, so you stay here."),
        ),
    };
    if let Ok(v) = HeaderValue::from_str(&clear) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

// ---------------------------------------------------------------------------------------------
// The unified login page, the index
// ---------------------------------------------------------------------------------------------

/// A unified login request: the app, where to send the code, the tenants that bound the app.
struct Unified<'a> {
    app: String,
    redirect: Url,
    tenants: Vec<(&'a String, &'a SavedTenant)>,
}

/// Checks `appId` and `redirect_uri` of the unified login. `Err` is the error page.
fn unified_request<'a>(ac: &'a AuthCentre, p: &Params) -> Result<Unified<'a>, Box<Response>> {
    let bad = |status: StatusCode, title: &str, message: &str| {
        Box::new(error_page(status, title, message))
    };
    let Some(app) = p.get("appId") else {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "appId is missing",
            "the unified login page needs appId: the app whose tenants to list",
        ));
    };
    let Some(raw) = p.get("redirect_uri") else {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "redirect_uri is missing",
            "the unified login page needs redirect_uri: where to send the code",
        ));
    };
    let redirect = redirect_target("redirect_uri", raw)
        .map_err(|m| bad(StatusCode::BAD_REQUEST, "Invalid redirect_uri", &m))?;
    let tenants: Vec<_> = ac
        .inner
        .users
        .tenants
        .iter()
        .filter(|(_, tenant)| tenant.apps.contains_key(app))
        .collect();
    if tenants.is_empty() {
        return Err(bad(
            StatusCode::NOT_FOUND,
            "Unknown app",
            &format!("no tenant of this auth centre bound app `{app}`"),
        ));
    }
    Ok(Unified {
        app: app.to_owned(),
        redirect,
        tenants,
    })
}

async fn unified_page(State(ac): State<AuthCentre>, RawQuery(query): RawQuery) -> Response {
    let p = match Params::query(query.as_deref()) {
        Ok(p) => p,
        Err(e) => return invalid_request_page(&e),
    };
    let Unified { app, tenants, .. } = match unified_request(&ac, &p) {
        Ok(x) => x,
        Err(res) => return *res,
    };
    let mut body = format!(
        "<h1>Log in to {}</h1>\n{EMULATOR_NOTE}\n<p>The tenants that bought app <code>{}</code>:</p>",
        escape(&app),
        escape(&app)
    );
    for (i, (t, tenant)) in tenants.iter().enumerate() {
        let list = format!("users-{i}");
        body.push_str(&format!(
            "\n<section><h2>{name}</h2><p>Tenant <code>{t}</code>, {n} enterprise users.</p>\
             <form method=\"post\" action=\"unified-login\">{h_app}{h_redirect}{h_state}{h_tenant}\
             <label>User name <input name=\"user_name\" list=\"{list}\" required></label> {options} \
             <button type=\"submit\">Log in</button></form></section>",
            name = escape(&tenant.name),
            t = escape(t),
            n = tenant.users.len(),
            h_app = hidden("appId", Some(&app)),
            h_redirect = hidden("redirect_uri", p.get("redirect_uri")),
            h_state = hidden("state", p.get("state")),
            h_tenant = hidden("tenant", Some(t)),
            list = escape(&list),
            options = user_options(&list, tenant, &app),
        ));
    }
    page(StatusCode::OK, &format!("Log in to {app}"), &body)
}

async fn unified_login(State(ac): State<AuthCentre>, headers: HeaderMap, body: Bytes) -> Response {
    let p = match form_params(&headers, &body, "the unified login form") {
        Ok(p) => p,
        Err(res) => return *res,
    };
    let Unified {
        app,
        redirect,
        tenants,
    } = match unified_request(&ac, &p) {
        Ok(x) => x,
        Err(res) => return *res,
    };
    let Some(t) = p.get("tenant") else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "tenant is missing",
            "choose a tenant",
        );
    };
    let Some((t, tenant)) = tenants.into_iter().find(|(id, _)| id.as_str() == t) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Unknown tenant",
            &format!("tenant `{t}` did not bind app `{app}`"),
        );
    };
    let user = p.get("user_name").map(str::trim).unwrap_or_default();
    if !tenant.users.contains_key(user) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Unknown user",
            &format!("`{user}` is not an enterprise user of tenant {t}"),
        );
    }
    let client_id = tenant
        .apps
        .get(&app)
        .map(|a| a.client_id.clone())
        .unwrap_or_default();
    let req = AuthzRequest {
        app_id: app,
        client_id,
        redirect_uri: p.get("redirect_uri").unwrap_or_default().to_owned(),
        redirect,
        state: p.get("state").map(str::to_owned),
        requested_scope: None,
        scope: SCOPE.to_owned(),
    };
    ac.complete(t, &req, user, true, false)
}

async fn index(State(ac): State<AuthCentre>) -> Response {
    let mut body = format!(
        "<h1>Tenant auth centres</h1>\n<p class=\"note\">This is <code>kitsync emulate auth-centre</code>, \
         an emulator of the KooGallery tenants' auth centres (OAuth 2.0 authorization code). \
         There are no passwords.</p>\n<p>{} tenants. Each one's endpoints are under its \
         <code>domainName</code>: <code>/api/v1/oauth2/authorize</code>, \
         <code>/api/v1/oauth2/token</code>, <code>/api/v1/oauth2/userinfo</code>, \
         <code>/api/v1/logout</code>. The unified login page of an app is \
         <code>/unified-login?appId=…&amp;redirect_uri=…</code>.</p>\n<ul>",
        ac.inner.users.tenants.len()
    );
    for (t, tenant) in &ac.inner.users.tenants {
        let apps: Vec<String> = tenant
            .apps
            .iter()
            .map(|(id, a)| {
                format!(
                    "<code>{}</code> (clientId <code>{}</code>)",
                    escape(id),
                    escape(&a.client_id)
                )
            })
            .collect();
        body.push_str(&format!(
            "<li><b>{}</b> <code>{}</code>{}: {} users; apps: {}</li>",
            escape(&tenant.name),
            escape(t),
            if tenant.test { " (test)" } else { "" },
            tenant.users.len(),
            if apps.is_empty() {
                "none".to_owned()
            } else {
                apps.join(", ")
            }
        ));
    }
    body.push_str("</ul>");
    page(StatusCode::OK, "Tenant auth centres", &body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    const CB: &str = "http://app.example/cb?from=test";

    fn user(org: &str, auth: &[(&str, Option<(&str, bool)>)]) -> SavedUser {
        SavedUser {
            name: format!("Name in {org}"),
            org_code: org.into(),
            email: None,
            mobile: None,
            apps: auth
                .iter()
                .map(|(app, a)| {
                    (
                        (*app).to_owned(),
                        a.map(|(role, enabled)| SavedAuthorization {
                            role: role.into(),
                            enabled,
                        }),
                    )
                })
                .collect(),
        }
    }

    fn app(client_id: &str, secret: &str) -> SavedApp {
        SavedApp {
            client_id: client_id.into(),
            client_secret: secret.into(),
        }
    }

    /// A tenant called `name` with no apps or users, its auth centre at path `/{t}`.
    fn tenant(name: &str, t: &str) -> SavedTenant {
        SavedTenant {
            name: name.into(),
            domain_name: format!("http://127.0.0.1:1/{t}"),
            ..SavedTenant::default()
        }
    }

    /// t1: app-1 and app-2; alice (admin of app-1), bob (app-1 cancelled), eve (disabled).
    /// t2: app-1 with the same clientId and another secret; carol.
    fn centre() -> AuthCentre {
        let mut t1 = tenant("Acme <b>\"&\"</b>", "t1");
        t1.apps
            .insert("app-1".into(), app("app-1-client", "s3cret"));
        t1.apps.insert("app-2".into(), app("c2", "other-secret"));
        t1.departments.insert("sales".into(), "Sales".into());
        t1.users.insert(
            "alice".into(),
            user(
                "sales",
                &[("app-1", Some(("admin", true))), ("app-2", None)],
            ),
        );
        t1.users.insert(
            "bob".into(),
            user("gone", &[("app-1", None), ("app-2", None)]),
        );
        t1.users.insert(
            "eve".into(),
            user("sales", &[("app-1", Some(("user", false)))]),
        );
        let mut t2 = tenant("Tenant two", "t2");
        t2.apps
            .insert("app-1".into(), app("app-1-client", "t2-secret"));
        t2.users.insert(
            "carol".into(),
            user("root", &[("app-1", Some(("user", true)))]),
        );
        let mut users = UsersFile::default();
        users.tenants.insert("t1".into(), t1);
        users.tenants.insert("t2".into(), t2);
        AuthCentre::new(users).unwrap()
    }

    struct Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: String,
    }

    impl Answer {
        fn location(&self) -> Option<Url> {
            self.headers
                .get(header::LOCATION)
                .map(|v| Url::parse(v.to_str().unwrap()).unwrap())
        }

        fn param(&self, name: &str) -> Option<String> {
            self.location()?
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        }

        fn json(&self) -> serde_json::Value {
            serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
        }

        /// `name=value` of the `Set-Cookie` header.
        fn cookie(&self) -> Option<String> {
            let v = self.headers.get(header::SET_COOKIE)?.to_str().unwrap();
            Some(v.split(';').next().unwrap().to_owned())
        }
    }

    async fn call(ac: &AuthCentre, req: Request<Body>) -> Answer {
        let res = ac.router().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let raw = res.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8(raw.to_vec()).unwrap(),
        }
    }

    fn query(params: &[(&str, &str)]) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish()
    }

    async fn get(
        ac: &AuthCentre,
        path: &str,
        params: &[(&str, &str)],
        cookie: Option<&str>,
    ) -> Answer {
        let mut req = Request::get(format!("{path}?{}", query(params)));
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        call(ac, req.body(Body::empty()).unwrap()).await
    }

    async fn post(ac: &AuthCentre, path: &str, params: &[(&str, &str)]) -> Answer {
        let req = Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(query(params)))
            .unwrap();
        call(ac, req).await
    }

    /// GET authorize at `t` for `client_id`, with `extra` parameters.
    async fn authorize(
        ac: &AuthCentre,
        t: &str,
        client_id: &str,
        extra: &[(&str, &str)],
    ) -> Answer {
        let mut p = app1_request(&[("client_id", client_id), ("scope", SCOPE), ("state", "xyz")]);
        p.extend_from_slice(extra);
        get(ac, &format!("/{t}/api/v1/oauth2/authorize"), &p, None).await
    }

    async fn code(ac: &AuthCentre, t: &str, client_id: &str, user: &str) -> String {
        let a = authorize(ac, t, client_id, &[("login_hint", user)]).await;
        assert_eq!(a.status, StatusCode::FOUND, "{}", a.body);
        a.param("code").unwrap()
    }

    /// POST the token endpoint of `t` as `client` (id, secret in the body) with `grant`.
    async fn token_post(
        ac: &AuthCentre,
        t: &str,
        client: (&str, &str),
        grant: &[(&str, &str)],
    ) -> Answer {
        let mut p = vec![("client_id", client.0), ("client_secret", client.1)];
        p.extend_from_slice(grant);
        post(ac, &format!("/{t}/api/v1/oauth2/token"), &p).await
    }

    async fn redeem(ac: &AuthCentre, t: &str, client: (&str, &str), code: &str) -> Answer {
        let grant = [
            ("code", code),
            ("grant_type", "authorization_code"),
            ("redirect_uri", CB),
        ];
        token_post(ac, t, client, &grant).await
    }

    async fn refresh(ac: &AuthCentre, t: &str, client: (&str, &str), token: &str) -> Answer {
        let grant = [("grant_type", "refresh_token"), ("refresh_token", token)];
        token_post(ac, t, client, &grant).await
    }

    /// app-1's authorization request (`CB`, `response_type=code`), `over` replacing or adding
    /// parameters.
    fn app1_request<'a>(over: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut p = vec![
            ("client_id", "app-1-client"),
            ("redirect_uri", CB),
            ("response_type", "code"),
        ];
        for &(k, v) in over {
            match p.iter_mut().find(|(name, _)| *name == k) {
                Some(given) => given.1 = v,
                None => p.push((k, v)),
            }
        }
        p
    }

    /// GET the unified login page of `app` (back to `CB`), with `extra` parameters.
    async fn unified_page(ac: &AuthCentre, app: &str, extra: &[(&str, &str)]) -> Answer {
        let mut p = vec![("appId", app), ("redirect_uri", CB)];
        p.extend_from_slice(extra);
        get(ac, "/unified-login", &p, None).await
    }

    /// POST the unified login form of app-1 for `user` of tenant `t`, with `extra` fields.
    async fn unified_post(ac: &AuthCentre, t: &str, user: &str, extra: &[(&str, &str)]) -> Answer {
        let mut p = vec![("appId", "app-1"), ("redirect_uri", CB)];
        p.extend_from_slice(extra);
        p.extend([("tenant", t), ("user_name", user)]);
        post(ac, "/unified-login", &p).await
    }

    async fn userinfo(ac: &AuthCentre, t: &str, token: &str) -> Answer {
        let req = Request::get(format!("/{t}/api/v1/oauth2/userinfo"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        call(ac, req).await
    }

    const APP1: (&str, &str) = ("app-1-client", "s3cret");

    /// Asserts that `a` is a page (not a redirect) with `status` that says `text`.
    fn assert_page(a: &Answer, status: StatusCode, text: &str) {
        assert_eq!(a.status, status, "{}", a.body);
        assert!(a.location().is_none(), "{:?}", a.location());
        assert!(a.body.contains(text), "{}", a.body);
    }

    fn error_of(a: &Answer) -> String {
        a.json()["error"].as_str().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn a_login_hint_logs_in_at_once_and_the_code_gives_tokens_for_that_user() {
        let ac = centre();
        let a = authorize(&ac, "t1", "app-1-client", &[("login_hint", "alice")]).await;
        assert_eq!(a.status, StatusCode::FOUND, "{}", a.body);
        let to = a.location().unwrap();
        assert_eq!(
            (to.host_str(), to.path()),
            (Some("app.example"), "/cb"),
            "{to}"
        );
        let keys: Vec<String> = to.query_pairs().map(|(k, _)| k.into_owned()).collect();
        assert_eq!(keys, ["from", "code", "state", "tenant"], "{to}");
        assert_eq!(a.param("state").as_deref(), Some("xyz"));
        assert_eq!(a.param("tenant").as_deref(), Some("t1"));
        assert!(a.cookie().unwrap().starts_with(SESSION_COOKIE));
        let t = redeem(&ac, "t1", APP1, &a.param("code").unwrap()).await;
        assert_eq!(t.status, StatusCode::OK, "{}", t.body);
        assert_eq!(t.headers[header::CACHE_CONTROL], "no-store");
        let v = t.json();
        assert_eq!(v["token_type"], "Bearer");
        assert_eq!(v["expires_in"], 7200);
        assert_eq!(v["scope"], SCOPE);
        let info = userinfo(&ac, "t1", v["access_token"].as_str().unwrap()).await;
        assert_eq!(info.status, StatusCode::OK, "{}", info.body);
        let u = info.json();
        assert_eq!(u["userName"], "alice");
        assert_eq!(u["name"], "Name in sales");
        assert_eq!(u["role"], "admin");
        assert_eq!(u["organizationCode"], "sales");
        assert_eq!(u["organizationName"], "Sales");
        assert_eq!(u["projectName"], "Acme <b>\"&\"</b>");
        assert_eq!(u["tenant"], "t1");
        assert_eq!(u["authorized"], true);
        assert_eq!(u["id"], u["userId"]);
        assert_eq!(u["id"].as_str().unwrap().len(), 32);
    }

    #[tokio::test]
    async fn a_code_is_single_use_and_its_reuse_revokes_the_tokens_it_issued() {
        let ac = centre();
        let c = code(&ac, "t1", "app-1-client", "alice").await;
        let first = redeem(&ac, "t1", APP1, &c).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.body);
        let tokens = first.json();
        let access = tokens["access_token"].as_str().unwrap();
        assert_eq!(userinfo(&ac, "t1", access).await.status, StatusCode::OK);
        let again = redeem(&ac, "t1", APP1, &c).await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST);
        assert_eq!(error_of(&again), "invalid_grant");
        assert!(again.body.contains("already used"), "{}", again.body);
        let revoked = userinfo(&ac, "t1", access).await;
        assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
        assert_eq!(error_of(&revoked), "invalid_token");
        let r = refresh(&ac, "t1", APP1, tokens["refresh_token"].as_str().unwrap()).await;
        assert_eq!(error_of(&r), "invalid_grant", "{}", r.body);
        let unknown = redeem(&ac, "t1", APP1, "no-such-code").await;
        assert_eq!(error_of(&unknown), "invalid_grant");
    }

    #[tokio::test(start_paused = true)]
    async fn a_code_expires_after_five_minutes() {
        let ac = centre();
        let late = code(&ac, "t1", "app-1-client", "alice").await;
        let in_time = code(&ac, "t1", "app-1-client", "alice").await;
        tokio::time::advance(CODE_LIFETIME - Duration::from_secs(1)).await;
        let ok = redeem(&ac, "t1", APP1, &in_time).await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
        tokio::time::advance(Duration::from_secs(2)).await;
        let expired = redeem(&ac, "t1", APP1, &late).await;
        assert_eq!(expired.status, StatusCode::BAD_REQUEST);
        assert_eq!(error_of(&expired), "invalid_grant");
        assert!(expired.body.contains("expired"), "{}", expired.body);
        // The access token lives two hours.
        let access = ok.json()["access_token"].as_str().unwrap().to_owned();
        tokio::time::advance(ACCESS_TOKEN_LIFETIME - Duration::from_secs(60)).await;
        assert_eq!(userinfo(&ac, "t1", &access).await.status, StatusCode::OK);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(
            userinfo(&ac, "t1", &access).await.status,
            StatusCode::UNAUTHORIZED
        );
    }

    #[tokio::test]
    async fn a_code_is_bound_to_its_tenant_client_and_redirect_uri() {
        let ac = centre();
        let c = code(&ac, "t1", "app-1-client", "alice").await;
        // Another app of the same tenant.
        let other_app = redeem(&ac, "t1", ("c2", "other-secret"), &c).await;
        assert_eq!(error_of(&other_app), "invalid_grant", "{}", other_app.body);
        assert!(other_app.body.contains("another client"));
        // The same clientId at another tenant (with that tenant's secret).
        let other_tenant = redeem(&ac, "t2", ("app-1-client", "t2-secret"), &c).await;
        assert_eq!(error_of(&other_tenant), "invalid_grant");
        assert!(
            other_tenant.body.contains("tenant t1"),
            "{}",
            other_tenant.body
        );
        // Another redirect_uri.
        let moved = [
            ("code", c.as_str()),
            ("grant_type", "authorization_code"),
            ("redirect_uri", "http://app.example/cb"),
        ];
        let moved = token_post(&ac, "t1", APP1, &moved).await;
        assert_eq!(error_of(&moved), "invalid_grant");
        assert!(moved.body.contains("redirect_uri"), "{}", moved.body);
        // None of these used it up; redirect_uri may be left out.
        let without = [("code", c.as_str()), ("grant_type", "authorization_code")];
        let ok = token_post(&ac, "t1", APP1, &without).await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
        // The tenant's token works only at that tenant's userinfo.
        let access = ok.json()["access_token"].as_str().unwrap().to_owned();
        let elsewhere = userinfo(&ac, "t2", &access).await;
        assert_eq!(elsewhere.status, StatusCode::UNAUTHORIZED);
        assert!(elsewhere.body.contains("tenant t1"), "{}", elsewhere.body);
    }

    #[tokio::test]
    async fn the_client_secret_is_checked() {
        assert!(same_secret("s3cret", "s3cret"));
        for wrong in ["s3cre", "s3cret ", "S3cret", "", "s3cret-and-more"] {
            assert!(!same_secret(wrong, "s3cret"), "{wrong:?}");
        }
        let ac = centre();
        let c = code(&ac, "t1", "app-1-client", "alice").await;
        for (client, why) in [
            (("app-1-client", "wrong"), "client_secret is wrong"),
            (("app-1-client", "t2-secret"), "client_secret is wrong"),
            (("app-1-client", ""), "client_secret is missing"),
            (("unknown-client", "s3cret"), "not the clientId"),
            (("", ""), "no client authentication"),
        ] {
            let a = redeem(&ac, "t1", client, &c).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{client:?}: {}", a.body);
            assert_eq!(error_of(&a), "invalid_client");
            assert!(a.body.contains(why), "{client:?}: {}", a.body);
            assert!(a.headers.contains_key(header::WWW_AUTHENTICATE));
        }
        // HTTP Basic works too, and the failed attempts did not use the code up.
        let basic = base64::engine::general_purpose::STANDARD.encode("app-1-client:s3cret");
        let req = Request::post("/t1/api/v1/oauth2/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::AUTHORIZATION, format!("Basic {basic}"))
            .body(Body::from(query(&[
                ("code", &c),
                ("grant_type", "authorization_code"),
            ])))
            .unwrap();
        let a = call(&ac, req).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        // A body that is not a form, an unknown grant type.
        let req = Request::post("/t1/api/v1/oauth2/token")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap();
        assert_eq!(error_of(&call(&ac, req).await), "invalid_request");
        let a = token_post(&ac, "t1", APP1, &[("grant_type", "password")]).await;
        assert_eq!(error_of(&a), "unsupported_grant_type");
    }

    #[tokio::test]
    async fn a_refresh_rotates_the_refresh_token() {
        let ac = centre();
        let c = code(&ac, "t1", "app-1-client", "bob").await;
        let first = redeem(&ac, "t1", APP1, &c).await.json();
        let r1 = first["refresh_token"].as_str().unwrap();
        let second = refresh(&ac, "t1", APP1, r1).await;
        assert_eq!(second.status, StatusCode::OK, "{}", second.body);
        let second = second.json();
        let r2 = second["refresh_token"].as_str().unwrap();
        assert_ne!(r1, r2);
        assert_ne!(first["access_token"], second["access_token"]);
        let info = userinfo(&ac, "t1", second["access_token"].as_str().unwrap()).await;
        assert_eq!(info.json()["userName"], "bob");
        // The old refresh token is spent; another client cannot use the new one.
        let again = refresh(&ac, "t1", APP1, r1).await;
        assert_eq!(error_of(&again), "invalid_grant", "{}", again.body);
        let stolen = refresh(&ac, "t1", ("c2", "other-secret"), r2).await;
        assert_eq!(error_of(&stolen), "invalid_grant");
        let third = refresh(&ac, "t1", APP1, r2).await;
        assert_eq!(third.status, StatusCode::OK, "{}", third.body);
        // A refresh token is not an access token.
        let wrong = userinfo(&ac, "t1", third.json()["refresh_token"].as_str().unwrap()).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        assert!(wrong.body.contains("refresh token"), "{}", wrong.body);
    }

    #[tokio::test]
    async fn userinfo_tells_whether_the_app_authorises_the_user() {
        let ac = centre();
        for (user, role, authorized, org_name) in [
            ("alice", "admin", true, Some("Sales")),
            ("bob", "user", false, None),
            ("eve", "user", false, Some("Sales")),
        ] {
            let c = code(&ac, "t1", "app-1-client", user).await;
            let tokens = redeem(&ac, "t1", APP1, &c).await.json();
            let u = userinfo(&ac, "t1", tokens["access_token"].as_str().unwrap())
                .await
                .json();
            assert_eq!(u["role"], role, "{user}: {u}");
            assert_eq!(u["authorized"], authorized, "{user}: {u}");
            assert_eq!(u["organizationName"].as_str(), org_name, "{user}: {u}");
        }
        // alice through app-2, which does not authorise her.
        let c = code(&ac, "t1", "c2", "alice").await;
        let tokens = redeem(&ac, "t1", ("c2", "other-secret"), &c).await.json();
        let u = userinfo(&ac, "t1", tokens["access_token"].as_str().unwrap())
            .await
            .json();
        assert_eq!(
            (u["role"].as_str(), &u["authorized"]),
            (Some("user"), &json!(false))
        );
        let req = Request::get("/t1/api/v1/oauth2/userinfo")
            .body(Body::empty())
            .unwrap();
        let none = call(&ac, req).await;
        assert_eq!(none.status, StatusCode::UNAUTHORIZED);
        assert_eq!(error_of(&none), "invalid_token");
        assert!(none.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer "));
    }

    #[tokio::test]
    async fn bad_authorization_requests_get_a_page_or_an_error_redirect() {
        let ac = centre();
        // The client or the redirect_uri cannot be trusted: a page, no redirect.
        let a = authorize(&ac, "t1", "nobody", &[]).await;
        assert_page(&a, StatusCode::BAD_REQUEST, "not the clientId");
        let a = authorize(&ac, "t1", "app-1", &[]).await;
        assert!(
            a.body
                .contains("is an appId: its clientId is `app-1-client`"),
            "{}",
            a.body
        );
        for bad in [
            "/cb",
            "javascript:alert(1)",
            "ftp://x/cb",
            "http://app.example/cb#frag",
        ] {
            let p = app1_request(&[("redirect_uri", bad)]);
            let a = get(&ac, "/t1/api/v1/oauth2/authorize", &p, None).await;
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(a.location().is_none(), "{bad}");
            assert!(a.body.contains("redirect_uri"), "{bad}: {}", a.body);
        }
        let a = get(
            &ac,
            "/t1/api/v1/oauth2/authorize?client_id=a&client_id=b",
            &[],
            None,
        )
        .await;
        assert!(a.body.contains("more than once"), "{}", a.body);
        let a = authorize(&ac, "nope", "app-1-client", &[]).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        assert!(a.body.contains("t1, t2"), "{}", a.body);
        // The rest goes back to the app with `error`.
        let p = app1_request(&[("response_type", "token"), ("state", "s1")]);
        let a = get(&ac, "/t1/api/v1/oauth2/authorize", &p, None).await;
        assert_eq!(a.status, StatusCode::FOUND);
        assert_eq!(
            a.param("error").as_deref(),
            Some("unsupported_response_type")
        );
        assert_eq!(a.param("state").as_deref(), Some("s1"));
        assert!(a.param("code").is_none());
        let p = app1_request(&[("scope", "openid")]);
        let a = get(&ac, "/t1/api/v1/oauth2/authorize", &p, None).await;
        assert_eq!(a.param("error").as_deref(), Some("invalid_scope"));
    }

    #[tokio::test]
    async fn the_form_logs_in_and_logout_ends_the_session() {
        let ac = centre();
        let form = authorize(&ac, "t1", "app-1-client", &[]).await;
        assert_page(&form, StatusCode::OK, "no password");
        assert!(form.body.contains("name=\"user_name\""));
        assert!(form.body.contains("<option value=\"alice\">"));
        // An unknown login_hint: the form, saying so.
        let unknown = authorize(&ac, "t1", "app-1-client", &[("login_hint", "mallory")]).await;
        assert_eq!(unknown.status, StatusCode::OK);
        assert!(unknown.body.contains("`mallory` is not an enterprise user"));
        let mut fields = app1_request(&[("state", "xyz"), ("user_name", "mallory")]);
        let refused = post(&ac, "/t1/api/v1/oauth2/authorize", &fields).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert!(refused.cookie().is_none());
        fields[4].1 = "alice";
        let in_ = post(&ac, "/t1/api/v1/oauth2/authorize", &fields).await;
        assert_eq!(in_.status, StatusCode::FOUND, "{}", in_.body);
        assert!(in_.param("code").is_some());
        let cookie = in_.cookie().unwrap();
        let p = app1_request(&[]);
        let path = "/t1/api/v1/oauth2/authorize";
        // The session logs in at once, at this tenant only.
        let again = get(&ac, path, &p, Some(&cookie)).await;
        assert_eq!(again.status, StatusCode::FOUND);
        let c = again.param("code").unwrap();
        let tokens = redeem(&ac, "t1", APP1, &c).await.json();
        let u = userinfo(&ac, "t1", tokens["access_token"].as_str().unwrap()).await;
        assert_eq!(u.json()["userName"], "alice");
        let t2 = get(&ac, "/t2/api/v1/oauth2/authorize", &p, Some(&cookie)).await;
        assert_eq!(t2.status, StatusCode::OK, "a form at t2");
        // prompt=login asks again; prompt=none without a session is login_required.
        let mut forced = p.to_vec();
        forced.push(("prompt", "login"));
        assert_eq!(
            get(&ac, path, &forced, Some(&cookie)).await.status,
            StatusCode::OK
        );
        let mut silent = p.to_vec();
        silent.push(("prompt", "none"));
        let s = get(&ac, path, &silent, None).await;
        assert_eq!(s.param("error").as_deref(), Some("login_required"));
        assert_eq!(
            get(&ac, path, &silent, Some(&cookie)).await.status,
            StatusCode::FOUND
        );
        // Logout: redirected, the cookie cleared, the session gone on the server too.
        let out = get(
            &ac,
            "/t1/api/v1/logout",
            &[("redirect_url", "http://app.example/bye")],
            Some(&cookie),
        )
        .await;
        assert_eq!(out.status, StatusCode::FOUND);
        assert_eq!(out.location().unwrap().as_str(), "http://app.example/bye");
        let cleared = out.headers[header::SET_COOKIE].to_str().unwrap();
        assert!(
            cleared.contains("Max-Age=0") && cleared.contains("Path=/t1"),
            "{cleared}"
        );
        let after = get(&ac, path, &p, Some(&cookie)).await;
        assert_eq!(after.status, StatusCode::OK, "the form again");
        assert!(after.body.contains("name=\"user_name\""));
        // Without a usable redirect_url: a page.
        let page = get(
            &ac,
            "/t1/api/v1/logout",
            &[("redirect_url", "/relative")],
            None,
        )
        .await;
        assert_page(&page, StatusCode::BAD_REQUEST, "Logged out");
        let page = get(&ac, "/t1/api/v1/logout", &[], None).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains("No one was logged in"), "{}", page.body);
    }

    #[tokio::test]
    async fn the_unified_login_lists_the_tenants_of_an_app() {
        let ac = centre();
        let page = unified_page(&ac, "app-1", &[("state", "u1")]).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(page.body.contains("Tenant two") && page.body.contains("<code>t1</code>"));
        assert!(page.body.contains("<option value=\"carol\">"));
        let only_t1 = unified_page(&ac, "app-2", &[]).await;
        assert!(!only_t1.body.contains("Tenant two"));
        let none = unified_page(&ac, "app-9", &[]).await;
        assert_eq!(none.status, StatusCode::NOT_FOUND);
        let chosen = unified_post(&ac, "t2", "carol", &[("state", "u1")]).await;
        assert_eq!(chosen.status, StatusCode::FOUND, "{}", chosen.body);
        let keys: Vec<String> = chosen
            .location()
            .unwrap()
            .query_pairs()
            .map(|(k, _)| k.into_owned())
            .collect();
        assert_eq!(keys, ["from", "code", "tenant", "state"]);
        assert_eq!(chosen.param("tenant").as_deref(), Some("t2"));
        let c = chosen.param("code").unwrap();
        // Redeemable at t2 with t2's secret, not at t1.
        let at_t1 = redeem(&ac, "t1", APP1, &c).await;
        assert_eq!(error_of(&at_t1), "invalid_grant");
        let ok = redeem(&ac, "t2", ("app-1-client", "t2-secret"), &c).await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
        let u = userinfo(&ac, "t2", ok.json()["access_token"].as_str().unwrap()).await;
        assert_eq!(u.json()["userName"], "carol");
        let wrong_user = unified_post(&ac, "t2", "alice", &[]).await;
        assert_eq!(wrong_user.status, StatusCode::BAD_REQUEST);
        assert!(wrong_user
            .body
            .contains("not an enterprise user of tenant t2"));
    }

    #[tokio::test]
    async fn html_is_escaped() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let ac = centre();
        let evil = "\"><script>alert(1)</script>";
        let p = app1_request(&[("state", evil), ("login_hint", evil)]);
        let form = get(&ac, "/t1/api/v1/oauth2/authorize", &p, None).await;
        assert_eq!(form.status, StatusCode::OK);
        assert!(!form.body.contains("<script>"), "{}", form.body);
        assert!(
            form.body.contains("&quot;&gt;&lt;script&gt;"),
            "{}",
            form.body
        );
        // The tenant's name comes from the marketplace: escaped too.
        assert!(form
            .body
            .contains("Acme &lt;b&gt;&quot;&amp;&quot;&lt;/b&gt;"));
        assert!(!form.body.contains("<b>"));
        let err = authorize(&ac, "t1", evil, &[]).await;
        assert!(!err.body.contains("<script>"), "{}", err.body);
        let missing = get(&ac, &format!("/{}", enc(evil)), &[], None).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        assert!(!missing.body.contains("<script>"), "{}", missing.body);
    }

    #[test]
    fn a_users_file_is_checked_when_loaded() {
        let dir = std::env::temp_dir().join(format!("kitsync-ac-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users.json");
        let missing = AuthCentre::from_file(&path).unwrap_err();
        assert!(missing.to_string().contains("reading"), "{missing}");
        std::fs::write(&path, "{\"tenants\": 3}").unwrap();
        let bad = AuthCentre::from_file(&path).unwrap_err();
        assert!(bad.to_string().contains("--save-users"), "{bad}");
        let mut users = centre().users().clone();
        std::fs::write(&path, serde_json::to_vec(&users).unwrap()).unwrap();
        assert_eq!(AuthCentre::from_file(&path).unwrap().users(), &users);
        let t1 = users.tenants.get_mut("t1").unwrap();
        t1.apps.get_mut("app-2").unwrap().client_id = "app-1-client".into();
        std::fs::write(&path, serde_json::to_vec(&users).unwrap()).unwrap();
        let dup = AuthCentre::from_file(&path).unwrap_err();
        assert!(dup.to_string().contains("share clientId"), "{dup}");
        assert!(AuthCentre::new(UsersFile::default()).is_err());
        // The secret stays out of Debug.
        let shown = format!("{:?}", centre().users());
        assert!(!shown.contains("s3cret") && shown.contains("<redacted>"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
