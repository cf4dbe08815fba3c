//! The HTTP side of the bridge: discovery, keys, the authorization code flow with its Kit leg,
//! tokens, userinfo and logout.
//!
//! Errors are answered as the specifications define them:
//! - `/oidc/authorize`: an unknown `client_id` or a `redirect_uri` not registered exactly is an
//!   error page, never a redirect; every other fault is redirected to the app as `error=…`
//!   with its `state` (RFC 6749 §4.1.2.1, OpenID Connect Core §3.1.2.6).
//! - `/oidc/token`: JSON `{"error","error_description"}`, 400, or 401 for `invalid_client`
//!   (RFC 6749 §5.2); a code presented twice is `invalid_grant` and revokes what it issued,
//!   and so is a refresh token presented twice.
//! - `/oidc/userinfo`: 401 with `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750).
//! - The Kit callback: an error page that says what happened and names the tenant and app.
use crate::db::{self, ClientRow, FlowRow, SessionRow, TokenKind};
use crate::kit::{self, KitError, KitTokens};
use crate::pages::{self, ErrorPage};
use crate::{now_ms, random_token, Login, LoginError};
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use kitsync_secrets::token::hash;
use kitsync_secrets::{Place, SealedKind};
use kitsync_store::{ActivityEvent, ActivityKind, AppState, MemberView, TenantView};
use sea_orm::TransactionTrait as _;
use secrecy::ExposeSecret as _;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;
use url::form_urlencoded;

/// The cookie that binds a login to the browser that started it.
const FLOW_COOKIE: &str = "kitsync_login";
/// Largest token-request body.
const MAX_FORM: usize = 16 * 1024;
/// Longest `state`, `nonce`, `login_hint`.
const MAX_PARAM: usize = 1024;
/// The claims every ID token and userinfo answer may carry.
const CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "sid",
    "tenant_id",
    "user_name",
    "name",
    "email",
    "phone_number",
    "org_code",
    "app_id",
    "roles",
    "test",
];

/// The routes of the bridge (at the root: `/.well-known/…`, `/oidc/…`, `/login/kit/callback`).
pub fn router(login: Login) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/oidc/authorize", get(authorize).post(authorize))
        .route("/login/kit/callback", get(kit_callback))
        .route("/oidc/token", axum::routing::post(token))
        .route("/oidc/userinfo", get(userinfo).post(userinfo))
        .route("/oidc/logout", get(logout))
        .route("/oidc/logged-out", get(|| async { pages::logged_out() }))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(login)
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    }
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

// ---------------------------------------------------------------------------------------------
// Parameters

/// Form or query parameters; a name given twice is remembered, since OAuth forbids it.
#[derive(Default)]
struct Params {
    map: BTreeMap<String, String>,
    repeated: Option<String>,
}

impl Params {
    fn parse(raw: &[u8]) -> Self {
        let mut p = Params::default();
        for (k, v) in form_urlencoded::parse(raw) {
            if p.map.contains_key(k.as_ref()) {
                p.repeated.get_or_insert_with(|| k.to_string());
            } else {
                p.map.insert(k.into_owned(), v.into_owned());
            }
        }
        p
    }

    /// A parameter; an empty value counts as absent (RFC 6749 §3.1).
    fn get(&self, name: &str) -> Option<&str> {
        self.map
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

async fn read_form(headers: &HeaderMap, body: Body) -> Result<Params, String> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_FORM) {
        return Err(format!("the request body is larger than {MAX_FORM} bytes"));
    }
    let limited = http_body_util::Limited::new(body, MAX_FORM);
    let bytes = tokio::time::timeout(Duration::from_secs(10), limited.collect())
        .await
        .map_err(|_| "the request body did not arrive within 10 s".to_owned())?
        .map_err(|e| format!("the request body could not be read: {e}"))?
        .to_bytes();
    Ok(Params::parse(&bytes))
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

// ---------------------------------------------------------------------------------------------
// Discovery and keys

async fn discovery(State(login): State<Login>) -> Response {
    let iss = login.issuer();
    let doc = json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/oidc/authorize"),
        "token_endpoint": format!("{iss}/oidc/token"),
        "userinfo_endpoint": format!("{iss}/oidc/userinfo"),
        "jwks_uri": format!("{iss}/.well-known/jwks.json"),
        "end_session_endpoint": format!("{iss}/oidc/logout"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [crate::jose::ALG],
        "scopes_supported": ["openid", "profile", "email", "phone", "offline_access"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": CLAIMS,
        "authorization_response_iss_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "claims_parameter_supported": false,
    });
    cacheable(Json(doc).into_response())
}

fn cacheable(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

async fn jwks(State(login): State<Login>) -> Response {
    match login.inner.keys.jwks().await {
        Ok(keys) if !keys.is_empty() => cacheable(Json(json!({ "keys": *keys })).into_response()),
        // No key yet: make one, so a client's first fetch already finds it.
        Ok(_) => match login.inner.keys.signer().await {
            Ok(k) => cacheable(Json(json!({ "keys": [k.jwk()] })).into_response()),
            Err(e) => server_error(&e),
        },
        Err(e) => server_error(&e),
    }
}

fn server_error(e: &LoginError) -> Response {
    tracing::error!(error = %e, "login bridge failure");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": "temporarily_unavailable", "error_description": "kitsync could not complete the request; try again"})),
    )
        .into_response()
}

fn server_error_page(e: &LoginError) -> Response {
    tracing::error!(error = %e, "login bridge failure");
    ErrorPage::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "Sign-in is unavailable",
        "kitsync could not complete this step. Try again in a moment.",
    )
    .into_response()
}

// ---------------------------------------------------------------------------------------------
// /oidc/authorize

/// Sends the browser back to the app with an error (RFC 6749 §4.1.2.1, RFC 9207 `iss`).
fn redirect_error(
    login: &Login,
    redirect_uri: &str,
    error: &str,
    description: &str,
    state: Option<&str>,
) -> Response {
    let mut pairs = vec![("error", error), ("error_description", description)];
    if let Some(s) = state {
        pairs.push(("state", s));
    }
    pairs.push(("iss", login.issuer()));
    found(&with_query(redirect_uri, &pairs))
}

fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    match url::Url::parse(uri) {
        Ok(mut u) => {
            u.query_pairs_mut().extend_pairs(pairs);
            u.into()
        }
        Err(_) => uri.to_owned(),
    }
}

/// `302 Found` (a `Redirect` helper answers 303/307/308 only).
fn found(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => {
            let mut r = StatusCode::FOUND.into_response();
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => Redirect::to("/oidc/logged-out").into_response(),
    }
}

fn bad_request_page(code: &'static str, title: &str, message: String) -> Response {
    ErrorPage::bad_request(code, title, message).into_response()
}

fn valid_pkce_text(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The registered client `client_id`. `Err` is the error page; `unknown` explains a missing one.
async fn registered_client(
    login: &Login,
    client_id: &str,
    unknown: &str,
) -> Result<ClientRow, Response> {
    match db::client_by_id(login.inner.store.db(), client_id).await {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(
            ErrorPage::bad_request("unknown_client", "Unknown application", unknown)
                .fact("client_id", client_id)
                .into_response(),
        ),
        Err(e) => Err(server_error_page(&e)),
    }
}

async fn authorize(
    State(login): State<Login>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let p = if method == Method::POST {
        if !is_form(&headers) {
            return bad_request_page(
                "invalid_request",
                "Invalid sign-in request",
                "A POST to /oidc/authorize must be application/x-www-form-urlencoded.".into(),
            );
        }
        match read_form(&headers, body).await {
            Ok(p) => p,
            Err(e) => return bad_request_page("invalid_request", "Invalid sign-in request", e),
        }
    } else {
        Params::parse(query.unwrap_or_default().as_bytes())
    };
    // 1. Who asks, and where the answer may go: never redirect before both are known good.
    if matches!(p.repeated.as_deref(), Some("client_id" | "redirect_uri")) {
        return bad_request_page(
            "invalid_request",
            "Invalid sign-in request",
            "client_id and redirect_uri may each be given once.".into(),
        );
    }
    let Some(client_id) = p.get("client_id") else {
        return bad_request_page(
            "invalid_request",
            "Invalid sign-in request",
            "The application sent no client_id.".into(),
        );
    };
    let unknown = "This application is not registered with kitsync (kitsync oidc-client add).";
    let client = match registered_client(&login, client_id, unknown).await {
        Ok(c) => c,
        Err(page) => return page,
    };
    let Some(redirect_uri) = p.get("redirect_uri") else {
        return ErrorPage::bad_request(
            "invalid_request",
            "Invalid sign-in request",
            "The application sent no redirect_uri.",
        )
        .fact("client_id", client_id)
        .into_response();
    };
    if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
        return ErrorPage::bad_request(
            "invalid_redirect_uri",
            "Unregistered redirect address",
            "The application asked to return to an address that is not registered for it, so \
             kitsync does not go there.",
        )
        .fact("client_id", client_id)
        .fact("redirect_uri", redirect_uri)
        .into_response();
    }
    let state = p.get("state");
    let fail = |error: &str, why: &str| redirect_error(&login, redirect_uri, error, why, state);
    // 2. Everything else is reported to the app.
    if let Some(name) = &p.repeated {
        return fail(
            "invalid_request",
            &format!("parameter {name} given more than once"),
        );
    }
    if p.get("request").is_some() {
        return fail("request_not_supported", "request objects are not supported");
    }
    if p.get("request_uri").is_some() {
        return fail("request_uri_not_supported", "request_uri is not supported");
    }
    match p.get("response_type") {
        Some("code") => {}
        None => return fail("invalid_request", "response_type is missing"),
        Some(_) => {
            return fail(
                "unsupported_response_type",
                "only response_type=code is supported",
            )
        }
    }
    if p.get("response_mode").is_some_and(|m| m != "query") {
        return fail("invalid_request", "only response_mode=query is supported");
    }
    let scope = p.get("scope").unwrap_or_default();
    if !scope.split(' ').any(|s| s == "openid") {
        return fail("invalid_scope", "the scope must include openid");
    }
    for name in ["state", "nonce", "login_hint", "tenant"] {
        if p.get(name).is_some_and(|v| v.len() > MAX_PARAM) {
            return fail(
                "invalid_request",
                &format!("{name} is longer than {MAX_PARAM} bytes"),
            );
        }
    }
    let challenge = p.get("code_challenge");
    match (challenge, p.get("code_challenge_method")) {
        (None, None) if client.is_public() => {
            return fail(
                "invalid_request",
                "PKCE (code_challenge with S256) is required for this client",
            )
        }
        (None, None) => {}
        (None, Some(_)) => {
            return fail(
                "invalid_request",
                "code_challenge_method without code_challenge",
            )
        }
        (Some(_), None) => {
            return fail(
                "invalid_request",
                "code_challenge_method=S256 is required with a code_challenge",
            )
        }
        (Some(c), Some(m)) => {
            if m != "S256" {
                return fail(
                    "invalid_request",
                    "only code_challenge_method=S256 is supported",
                );
            }
            if !valid_pkce_text(c) {
                return fail(
                    "invalid_request",
                    "code_challenge must be 43-128 characters of [A-Za-z0-9-._~]",
                );
            }
        }
    }
    if p.get("prompt")
        .is_some_and(|v| v.split(' ').any(|x| x == "none"))
    {
        return fail(
            "login_required",
            "kitsync keeps no browser session of its own: every sign-in goes through the enterprise login",
        );
    }
    // 3. Where to log in: the tenant's auth centre when the tenant is known, else the
    //    marketplace's unified login page.
    let tenant_hint = p.get("tenant").or_else(|| p.get("login_hint"));
    let flow_token = match random_token(32) {
        Ok(t) => t,
        Err(e) => return server_error_page(&e),
    };
    let callback = login.kit_callback_url();
    let location = match tenant_hint {
        Some(t) => match kit_app(&login, t, &client).await {
            Ok((tenant, app)) => match kit::authorize_url(
                tenant.domain_name.as_deref().unwrap_or_default(),
                &app.client_id,
                &callback,
                &flow_token,
            ) {
                Ok(u) => u,
                Err(e) => return kit_error_page(&e, t, &client.app_id),
            },
            Err(page) => return page,
        },
        None => unified_login_url(
            &login.inner.settings.unified_login_url,
            &client.app_id,
            &callback,
            &flow_token,
        ),
    };
    let now = now_ms();
    let flow = FlowRow {
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.to_owned(),
        state: state.map(str::to_owned),
        nonce: p.get("nonce").map(str::to_owned),
        code_challenge: challenge.map(str::to_owned),
        scope: scope.to_owned(),
        tenant_id: tenant_hint.map(str::to_owned),
    };
    let ttl = secs_ms(login.inner.settings.flow_ttl_secs);
    if let Err(e) = db::insert_flow(
        login.inner.store.db(),
        &hash(&flow_token),
        &flow,
        now,
        now + ttl,
    )
    .await
    {
        return server_error_page(&e);
    }
    let mut resp = found(&location);
    if let Ok(v) = HeaderValue::from_str(&flow_cookie(
        &login,
        &flow_token,
        login.inner.settings.flow_ttl_secs,
    )) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

fn unified_login_url(template: &str, app_id: &str, callback: &str, state: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    template
        .replace("{appId}", &enc(app_id))
        .replace("{redirectUri}", &enc(callback))
        .replace("{state}", &enc(state))
}

fn secs_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX / 4)
}

/// The cookie path: the callback's path under the issuer (which may sit under a prefix).
fn cookie_path(login: &Login) -> String {
    let base = url::Url::parse(login.issuer())
        .map(|u| u.path().trim_end_matches('/').to_owned())
        .unwrap_or_default();
    format!("{base}/login/kit")
}

fn flow_cookie(login: &Login, value: &str, max_age: u64) -> String {
    let secure = if login.issuer().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{FLOW_COOKIE}={value}; Path={}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
        cookie_path(login)
    )
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The tenant and the client's Kit app in it, or the page that says why there is none.
async fn kit_app(
    login: &Login,
    tenant_id: &str,
    client: &ClientRow,
) -> Result<(TenantView, AppState), Response> {
    let store = &login.inner.store;
    let tenant = match store.tenant(tenant_id).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Err(ErrorPage::new(
                StatusCode::FORBIDDEN,
                "unknown_tenant",
                "Unknown enterprise",
                "kitsync knows no such enterprise: it has not bought this application, or it \
                 was deleted.",
            )
            .fact("tenant", tenant_id)
            .fact("app", &client.app_id)
            .into_response())
        }
        Err(e) => return Err(server_error_page(&e.into())),
    };
    match store.app_credentials(tenant_id, &client.app_id).await {
        Ok(Some(app)) => Ok((tenant, app)),
        Ok(None) => Err(ErrorPage::new(
            StatusCode::FORBIDDEN,
            "app_not_bound",
            "Application not available to this enterprise",
            "This enterprise has not bound the application (no app sync from the marketplace), \
             so its users cannot sign in to it.",
        )
        .fact("tenant", tenant_id)
        .fact("app", &client.app_id)
        .into_response()),
        Err(e) => Err(server_error_page(&e.into())),
    }
}

fn kit_error_page(e: &KitError, tenant: &str, app: &str) -> Response {
    let (status, code, title) = match e {
        KitError::Timeout(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            "kit_unavailable",
            "The enterprise sign-in service did not answer",
        ),
        KitError::Unreachable(_) => (
            StatusCode::BAD_GATEWAY,
            "kit_unavailable",
            "The enterprise sign-in service cannot be reached",
        ),
        KitError::Refused { .. } => (
            StatusCode::BAD_GATEWAY,
            "kit_refused",
            "The enterprise sign-in service refused the sign-in",
        ),
        KitError::Malformed(_) => (
            StatusCode::BAD_GATEWAY,
            "kit_malformed",
            "The enterprise sign-in service answered unexpectedly",
        ),
        KitError::BadDomain(..) => (
            StatusCode::BAD_GATEWAY,
            "kit_bad_domain",
            "The enterprise sign-in service has no usable address",
        ),
    };
    tracing::warn!(tenant = %tenant, app = %app, error = %e, "Kit login leg failed");
    ErrorPage::new(
        status,
        code,
        title,
        format!("{e}. Try again; if it persists, tell the application's support."),
    )
    .fact("tenant", tenant)
    .fact("app", app)
    .into_response()
}

// ---------------------------------------------------------------------------------------------
// The Kit callback

async fn kit_callback(
    State(login): State<Login>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let p = Params::parse(query.unwrap_or_default().as_bytes());
    if let Some(name) = &p.repeated {
        return bad_request_page(
            "invalid_request",
            "Invalid sign-in answer",
            format!("The enterprise sign-in answered with {name} more than once."),
        );
    }
    // The flow: the `state` the Kit echoes, which must be this browser's cookie.
    let from_cookie = cookie(&headers, FLOW_COOKIE);
    let flow_token =
        match (p.get("state"), from_cookie.as_deref()) {
            (Some(s), Some(c)) if s == c => s.to_owned(),
            (None, Some(c)) => c.to_owned(),
            (Some(_), Some(_)) => return bad_request_page(
                "flow_mismatch",
                "This sign-in belongs to another browser window",
                "The answer of the enterprise sign-in does not belong to the sign-in this browser \
                 started last. Go back to the application and sign in again."
                    .into(),
            ),
            (_, None) => return bad_request_page(
                "no_flow",
                "No sign-in under way",
                "This browser has no sign-in under way with kitsync: it was started in another \
                 browser, or cookies are blocked. Go back to the application and sign in again."
                    .into(),
            ),
        };
    let db_conn = login.inner.store.db();
    let now = now_ms();
    let flow =
        match db::take_flow(db_conn, &hash(&flow_token), now).await {
            Ok(Some(f)) => f,
            Ok(None) => return bad_request_page(
                "flow_expired",
                "This sign-in has expired",
                "The sign-in took too long or was already completed. Go back to the application \
                 and sign in again."
                    .into(),
            ),
            Err(e) => return server_error_page(&e),
        };
    let mut resp = kit_callback_flow(&login, &p, flow).await;
    if let Ok(v) = HeaderValue::from_str(&flow_cookie(&login, "", 0)) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

async fn kit_callback_flow(login: &Login, p: &Params, flow: FlowRow) -> Response {
    let unknown = "The application was unregistered while you signed in.";
    let client = match registered_client(login, &flow.client_id, unknown).await {
        Ok(c) => c,
        Err(page) => return page,
    };
    let state = flow.state.as_deref();
    if let Some(err) = p.get("error") {
        let why = format!(
            "the enterprise sign-in did not complete ({err}{})",
            p.get("error_description")
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        );
        return redirect_error(login, &flow.redirect_uri, "access_denied", &why, state);
    }
    let Some(tenant_id) = p.get("tenant") else {
        return ErrorPage::bad_request(
            "kit_no_tenant",
            "The enterprise sign-in did not name the enterprise",
            "Its answer has no tenant, so kitsync cannot tell whose sign-in service to ask.",
        )
        .fact("app", &client.app_id)
        .into_response();
    };
    if let Some(expected) = flow.tenant_id.as_deref().filter(|t| *t != tenant_id) {
        return ErrorPage::bad_request(
            "tenant_mismatch",
            "Signed in to another enterprise",
            "The enterprise sign-in answered for another enterprise than the one this sign-in \
             was started for.",
        )
        .fact("expected tenant", expected)
        .fact("answered tenant", tenant_id)
        .fact("app", &client.app_id)
        .into_response();
    }
    let Some(code) = p.get("code") else {
        return ErrorPage::bad_request(
            "kit_no_code",
            "The enterprise sign-in sent no code",
            "Its answer has neither a code nor an error.",
        )
        .fact("tenant", tenant_id)
        .fact("app", &client.app_id)
        .into_response();
    };
    let (tenant, app) = match kit_app(login, tenant_id, &client).await {
        Ok(x) => x,
        Err(page) => return page,
    };
    let secret = match kitsync_secrets::reveal_client_secret(
        &login.inner.sealer,
        login.inner.rsa.as_deref(),
        tenant_id,
        &client.app_id,
        &app.client_secret.0,
    ) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(tenant = %tenant_id, app = %client.app_id, error = %e, "the app's clientSecret cannot be used");
            return ErrorPage::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "app_secret_unavailable",
                "The application's credentials cannot be used",
                "kitsync holds this application's secret but cannot open it here (see the \
                 kitsync log). Tell the application's support.",
            )
            .fact("tenant", tenant_id)
            .fact("app", &client.app_id)
            .into_response();
        }
    };
    let domain = tenant.domain_name.clone().unwrap_or_default();
    let kit = &login.inner.kit;
    let tokens = match kit
        .exchange_code(
            &domain,
            &app.client_id,
            &secret,
            code,
            &login.kit_callback_url(),
        )
        .await
    {
        Ok(t) => t,
        Err(e) => return kit_error_page(&e, tenant_id, &client.app_id),
    };
    let user = match kit.userinfo(&domain, &tokens.access_token).await {
        Ok(u) => u,
        Err(e) => return kit_error_page(&e, tenant_id, &client.app_id),
    };
    if let Some(other) = user.tenant.as_deref().filter(|t| *t != tenant_id) {
        return ErrorPage::bad_request(
            "tenant_mismatch",
            "Signed in to another enterprise",
            "The enterprise sign-in service says the user belongs to another enterprise than \
             the one its answer named.",
        )
        .fact("answered tenant", tenant_id)
        .fact("userinfo tenant", other)
        .fact("user", &user.user_name)
        .into_response();
    }
    match member_check(login, tenant_id, &client.app_id, &user.user_name).await {
        Ok(Ok(_)) => {}
        Ok(Err(denied)) => return denied.page(tenant_id, &client.app_id, &user.user_name),
        Err(e) => return server_error_page(&e),
    }
    match start_session(login, &client, &flow, tenant_id, &user.user_name, &tokens).await {
        Ok(code) => {
            tracing::info!(tenant = %tenant_id, user = %user.user_name, client = %client.client_id, "login");
            let mut pairs = vec![("code", code.as_str())];
            if let Some(s) = state {
                pairs.push(("state", s));
            }
            pairs.push(("iss", login.issuer()));
            found(&with_query(&flow.redirect_uri, &pairs))
        }
        Err(e) => server_error_page(&e),
    }
}

/// The session, its one-time code and the `login` activity, in one transaction.
async fn start_session(
    login: &Login,
    client: &ClientRow,
    flow: &FlowRow,
    tenant_id: &str,
    user_name: &str,
    tokens: &KitTokens,
) -> Result<String, LoginError> {
    let now = now_ms();
    let settings = &login.inner.settings;
    let id = format!("ks_{}", random_token(18)?);
    let session = SessionRow {
        kit_tokens: seal_kit_tokens(login, &id, tokens)?,
        id,
        client_id: client.client_id.clone(),
        tenant_id: tenant_id.to_owned(),
        user_name: user_name.to_owned(),
        app_id: client.app_id.clone(),
        redirect_uri: flow.redirect_uri.clone(),
        nonce: flow.nonce.clone(),
        code_challenge: flow.code_challenge.clone(),
        scope: flow.scope.clone(),
        auth_time: now,
        expires_at: now + secs_ms(settings.session_ttl_secs),
        revoked_at: None,
    };
    let code = random_token(32)?;
    let txn = login.inner.store.db().begin().await?;
    db::insert_session(&txn, &session).await?;
    db::insert_token(
        &txn,
        &hash(&code),
        TokenKind::Code,
        &session.id,
        now + secs_ms(settings.code_ttl_secs),
    )
    .await?;
    kitsync_store::record_activity_in(
        &txn,
        &[ActivityEvent {
            tenant_id: tenant_id.to_owned(),
            user_name: user_name.to_owned(),
            kind: ActivityKind::Login,
            at_ms: now,
        }],
        now,
    )
    .await?;
    txn.commit().await?;
    Ok(code)
}

fn seal_kit_tokens(login: &Login, session_id: &str, t: &KitTokens) -> Result<String, LoginError> {
    let text = secrecy::zeroize::Zeroizing::new(
        serde_json::to_string(t).map_err(|e| LoginError::Corrupt(e.to_string()))?,
    );
    Ok(login.inner.sealer.seal(
        SealedKind::Plain,
        &text,
        &Place::oidc_kit_tokens(session_id),
    )?)
}

fn open_kit_tokens(login: &Login, s: &SessionRow) -> Result<KitTokens, LoginError> {
    let (_, text) = login
        .inner
        .sealer
        .open(&s.kit_tokens, &Place::oidc_kit_tokens(&s.id))?;
    serde_json::from_str(text.expose_secret())
        .map_err(|e| LoginError::Corrupt(format!("Kit tokens of session {}: {e}", s.id)))
}

// ---------------------------------------------------------------------------------------------
// The directory check

/// A member that may use the app now.
struct Admitted {
    tenant: TenantView,
    app: AppState,
    member: MemberView,
    role: String,
}

/// Why a user may not use the app.
enum Denied {
    UnknownTenant,
    AppNotBound,
    NotAuthorized,
    Disabled,
}

impl Denied {
    fn why(&self, tenant: &str, app: &str, user: &str) -> String {
        match self {
            Denied::UnknownTenant => format!("tenant {tenant} is unknown or deleted"),
            Denied::AppNotBound => format!("tenant {tenant} has not bound app {app}"),
            Denied::NotAuthorized => {
                format!("user {user} is not authorised for app {app} in tenant {tenant}")
            }
            Denied::Disabled => {
                format!("user {user}'s authorisation for app {app} in tenant {tenant} is disabled")
            }
        }
    }

    fn page(&self, tenant: &str, app: &str, user: &str) -> Response {
        let (code, title, message) = match self {
            Denied::UnknownTenant => (
                "unknown_tenant",
                "Unknown enterprise",
                "kitsync knows no such enterprise: it has not bought this application, or it was deleted.",
            ),
            Denied::AppNotBound => (
                "app_not_bound",
                "Application not available to this enterprise",
                "This enterprise has not bound the application, so its users cannot sign in to it.",
            ),
            Denied::NotAuthorized => (
                "not_authorized",
                "Not authorised for this application",
                "You signed in, but your enterprise has not authorised you to use this application. Ask your enterprise administrator to grant you access in the marketplace console.",
            ),
            Denied::Disabled => (
                "authorization_disabled",
                "Access to this application is disabled",
                "Your enterprise authorised you for this application but has disabled that access. Ask your enterprise administrator.",
            ),
        };
        tracing::info!(tenant = %tenant, app = %app, user = %user, reason = code, "login refused by the directory");
        ErrorPage::new(StatusCode::FORBIDDEN, code, title, message)
            .fact("tenant", tenant)
            .fact("app", app)
            .fact("user", user)
            .into_response()
    }
}

async fn member_check(
    login: &Login,
    tenant_id: &str,
    app_id: &str,
    user_name: &str,
) -> Result<Result<Admitted, Denied>, LoginError> {
    let store = &login.inner.store;
    let Some(tenant) = store.tenant(tenant_id).await? else {
        return Ok(Err(Denied::UnknownTenant));
    };
    let Some(app) = store.app_credentials(tenant_id, app_id).await? else {
        return Ok(Err(Denied::AppNotBound));
    };
    let Some(member) = store.member(tenant_id, user_name, true).await? else {
        return Ok(Err(Denied::NotAuthorized));
    };
    let Some(grant) = member.apps.iter().find(|a| a.app_id == app_id) else {
        return Ok(Err(Denied::NotAuthorized));
    };
    if !grant.enabled {
        return Ok(Err(Denied::Disabled));
    }
    let role = grant.role.clone();
    Ok(Ok(Admitted {
        tenant,
        app,
        member,
        role,
    }))
}

/// The user's claims (without the token's own: `iss`, `aud`, `exp`, …).
fn user_claims(session: &SessionRow, a: &Admitted) -> Map<String, Value> {
    let p = &a.member.profile;
    let mut c = Map::new();
    c.insert(
        "sub".into(),
        json!(format!("{}:{}", session.tenant_id, session.user_name)),
    );
    c.insert("tenant_id".into(), json!(session.tenant_id));
    c.insert("user_name".into(), json!(session.user_name));
    for (k, v) in [
        ("name", &p.name),
        ("email", &p.email),
        ("phone_number", &p.mobile),
        ("org_code", &p.org_code),
    ] {
        if let Some(v) = v {
            c.insert(k.into(), json!(v));
        }
    }
    c.insert("app_id".into(), json!(session.app_id));
    c.insert("roles".into(), json!([a.role]));
    c.insert("test".into(), json!(a.tenant.test || a.app.test || p.test));
    c
}

// ---------------------------------------------------------------------------------------------
// /oidc/token

/// An RFC 6749 §5.2 error.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn invalid_grant(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

fn invalid_client(basic: bool, description: &str) -> Response {
    let mut r = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", description);
    if basic {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"kitsync\""),
        );
    }
    r
}

/// `client_secret_basic` credentials: `Basic base64(urlencode(id):urlencode(secret))`.
fn basic_credentials(headers: &HeaderMap) -> Option<Option<(String, String)>> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = B64
        .decode(rest.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    let pair = decoded.and_then(|d| {
        let (id, secret) = d.split_once(':')?;
        let dec = |s: &str| {
            form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        };
        Some((dec(id)?, dec(secret)?))
    });
    Some(pair)
}

async fn token(State(login): State<Login>, headers: HeaderMap, body: Body) -> Response {
    if !is_form(&headers) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    }
    let p = match read_form(&headers, body).await {
        Ok(p) => p,
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e),
    };
    if let Some(name) = &p.repeated {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("parameter {name} given more than once"),
        );
    }
    // Client authentication (RFC 6749 §2.3): Basic, or the body, never both.
    let basic = basic_credentials(&headers);
    let used_basic = basic.is_some();
    let (client_id, secret) = match (basic, p.get("client_secret")) {
        (Some(_), Some(_)) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "use one client authentication method, not Basic and client_secret both",
            )
        }
        (Some(None), None) => return invalid_client(true, "malformed Basic credentials"),
        (Some(Some((id, s))), None) => {
            if p.get("client_id").is_some_and(|b| b != id) {
                return invalid_client(true, "client_id differs from the Basic credentials");
            }
            (id, Some(s))
        }
        (None, s) => match p.get("client_id") {
            Some(id) => (id.to_owned(), s.map(str::to_owned)),
            None => return invalid_client(false, "no client authentication and no client_id"),
        },
    };
    let client = match db::client_by_id(login.inner.store.db(), &client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => return invalid_client(used_basic, "unknown client"),
        Err(e) => return server_error(&e),
    };
    match (&client.secret_hash, &secret) {
        (Some(h), Some(s)) if kitsync_secrets::token::matches(s, h) => {}
        (Some(_), Some(_)) => return invalid_client(used_basic, "wrong client secret"),
        (Some(_), None) => {
            return invalid_client(used_basic, "this client must authenticate with its secret")
        }
        (None, Some(_)) => {
            return invalid_client(used_basic, "this is a public client: it has no secret")
        }
        (None, None) => {}
    }
    match p.get("grant_type") {
        Some("authorization_code") => code_grant(&login, &client, &p).await,
        Some("refresh_token") => refresh_grant(&login, &client, &p).await,
        None => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is missing",
        ),
        Some(_) => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be authorization_code or refresh_token",
        ),
    }
}

fn pkce_ok(challenge: Option<&str>, verifier: Option<&str>) -> Result<(), &'static str> {
    match (challenge, verifier) {
        (None, None) => Ok(()),
        (None, Some(_)) => {
            Err("a code_verifier was sent but the authorization request had no code_challenge")
        }
        (Some(_), None) => Err("code_verifier is missing (PKCE)"),
        (Some(c), Some(v)) => {
            if !valid_pkce_text(v) {
                return Err("code_verifier must be 43-128 characters of [A-Za-z0-9-._~]");
            }
            let computed = B64URL.encode(Sha256::digest(v.as_bytes()));
            let (a, b) = (computed.as_bytes(), c.as_bytes());
            if a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0 {
                Ok(())
            } else {
                Err("code_verifier does not match the code_challenge (PKCE)")
            }
        }
    }
}

/// A one-time token presented to `/oidc/token` (`code` or `refresh_token`): its hash, its row
/// and its session, issued to `client`; else the answer that refuses it.
async fn presented(
    login: &Login,
    client: &ClientRow,
    p: &Params,
    param: &str,
    kind: TokenKind,
    what: &str,
) -> Result<(String, db::TokenRow, SessionRow), Response> {
    let db_conn = login.inner.store.db();
    let Some(value) = p.get(param) else {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("{param} is missing"),
        ));
    };
    let token_hash = hash(value);
    let row = match db::token(db_conn, &token_hash, kind).await {
        Ok(Some(r)) => r,
        Ok(None) => return Err(invalid_grant(&format!("unknown {what}"))),
        Err(e) => return Err(server_error(&e)),
    };
    let session = match db::session(db_conn, &row.session_id).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(invalid_grant(&format!("unknown {what}"))),
        Err(e) => return Err(server_error(&e)),
    };
    if session.client_id != client.client_id {
        return Err(invalid_grant(&format!(
            "the {what} was issued to another client"
        )));
    }
    Ok((token_hash, row, session))
}

async fn code_grant(login: &Login, client: &ClientRow, p: &Params) -> Response {
    let db_conn = login.inner.store.db();
    let Some(redirect_uri) = p.get("redirect_uri") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "redirect_uri is missing",
        );
    };
    let (code_hash, row, session) =
        match presented(login, client, p, "code", TokenKind::Code, "code").await {
            Ok(x) => x,
            Err(answer) => return answer,
        };
    let now = now_ms();
    if row.used_at.is_some() {
        return reused(
            login,
            &session.id,
            "the code was already used; the tokens issued for it are revoked",
        )
        .await;
    }
    if row.expires_at <= now {
        return invalid_grant("the code has expired");
    }
    if session.revoked_at.is_some() {
        return invalid_grant("the session of this code has ended");
    }
    if session.redirect_uri != redirect_uri {
        return invalid_grant("redirect_uri differs from the one of the authorization request");
    }
    if let Err(why) = pkce_ok(session.code_challenge.as_deref(), p.get("code_verifier")) {
        return invalid_grant(why);
    }
    let admitted = match still_admitted(login, &session).await {
        Ok(Ok(a)) => a,
        Ok(Err(refused)) => return refused,
        Err(e) => return server_error(&e),
    };
    // Spend the code and issue, in one transaction: of two concurrent redemptions one spends
    // it; the other finds it spent and revokes.
    let issued = async {
        let txn = db_conn.begin().await?;
        if !db::spend(&txn, &code_hash, now).await? {
            txn.rollback().await?;
            return Ok(None);
        }
        let tokens = issue(login, &txn, &session, now).await?;
        txn.commit().await?;
        Ok::<_, LoginError>(Some(tokens))
    }
    .await;
    match issued {
        Ok(Some((access, refresh))) => {
            token_answer(
                login,
                &session,
                &admitted,
                &access,
                &refresh,
                session.nonce.as_deref(),
            )
            .await
        }
        Ok(None) => {
            reused(
                login,
                &session.id,
                "the code was already used; the tokens issued for it are revoked",
            )
            .await
        }
        Err(e) => server_error(&e),
    }
}

/// The session's user, if still an enabled, authorised member of its app; else the session is
/// revoked and the answer is `invalid_grant` saying why.
async fn still_admitted(
    login: &Login,
    session: &SessionRow,
) -> Result<Result<Admitted, Response>, LoginError> {
    let (t, a, u) = (&session.tenant_id, &session.app_id, &session.user_name);
    match member_check(login, t, a, u).await? {
        Ok(admitted) => Ok(Ok(admitted)),
        Err(d) => {
            db::revoke_session(login.inner.store.db(), &session.id).await?;
            tracing::info!(tenant = %t, user = %u, app = %a, reason = %d.why(t, a, u), "tokens refused by the directory; session revoked");
            Ok(Err(invalid_grant(&d.why(t, a, u))))
        }
    }
}

async fn reused(login: &Login, session_id: &str, why: &str) -> Response {
    if let Err(e) = db::revoke_session(login.inner.store.db(), session_id).await {
        return server_error(&e);
    }
    tracing::warn!(session = %session_id, "a one-time token was presented twice; session revoked");
    invalid_grant(why)
}

/// A new access token and refresh token for the session.
async fn issue<C: sea_orm::ConnectionTrait>(
    login: &Login,
    txn: &C,
    session: &SessionRow,
    now: i64,
) -> Result<(String, String), LoginError> {
    let access = random_token(32)?;
    let refresh = random_token(32)?;
    let ttl = secs_ms(login.inner.settings.access_token_ttl_secs);
    db::insert_token(
        txn,
        &hash(&access),
        TokenKind::Access,
        &session.id,
        now + ttl,
    )
    .await?;
    db::insert_token(
        txn,
        &hash(&refresh),
        TokenKind::Refresh,
        &session.id,
        session.expires_at,
    )
    .await?;
    Ok((access, refresh))
}

async fn token_answer(
    login: &Login,
    session: &SessionRow,
    admitted: &Admitted,
    access: &str,
    refresh: &str,
    nonce: Option<&str>,
) -> Response {
    let now = now_ms();
    let ttl = login.inner.settings.access_token_ttl_secs;
    let mut claims = user_claims(session, admitted);
    claims.insert("iss".into(), json!(login.issuer()));
    claims.insert("aud".into(), json!(session.client_id));
    claims.insert("iat".into(), json!(now / 1000));
    claims.insert(
        "exp".into(),
        json!(now / 1000 + i64::try_from(ttl).unwrap_or(3600)),
    );
    claims.insert("auth_time".into(), json!(session.auth_time / 1000));
    claims.insert("sid".into(), json!(session.id));
    if let Some(n) = nonce {
        claims.insert("nonce".into(), json!(n));
    }
    let id_token = match login.inner.keys.signer().await {
        Ok(k) => match k.sign(&Value::Object(claims)) {
            Ok(t) => t,
            Err(e) => return server_error(&e),
        },
        Err(e) => return server_error(&e),
    };
    Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ttl,
        "refresh_token": refresh,
        "id_token": id_token,
        "scope": session.scope,
    }))
    .into_response()
}

async fn refresh_grant(login: &Login, client: &ClientRow, p: &Params) -> Response {
    let db_conn = login.inner.store.db();
    let (token_hash, row, session) = match presented(
        login,
        client,
        p,
        "refresh_token",
        TokenKind::Refresh,
        "refresh token",
    )
    .await
    {
        Ok(x) => x,
        Err(answer) => return answer,
    };
    let now = now_ms();
    if session.revoked_at.is_some() {
        return invalid_grant("the session of this refresh token has ended");
    }
    if row.expires_at <= now || session.expires_at <= now {
        return invalid_grant("the refresh token has expired");
    }
    match db::spend(db_conn, &token_hash, now).await {
        Ok(true) => {}
        Ok(false) => {
            return reused(
                login,
                &session.id,
                "the refresh token was already used; the session is revoked",
            )
            .await
        }
        Err(e) => return server_error(&e),
    }
    // The user must still be an enabled, authorised member of the app.
    let admitted = match still_admitted(login, &session).await {
        Ok(Ok(a)) => a,
        Ok(Err(refused)) => return refused,
        Err(e) => {
            let _ = db::unspend(db_conn, &token_hash).await;
            return server_error(&e);
        }
    };
    // The Kit token behind the session is refreshed too: the enterprise login must still hold.
    match refresh_kit(login, &session, &admitted).await {
        Ok(()) => {}
        Err(RefreshFailure::Ended(why)) => {
            let _ = db::revoke_session(db_conn, &session.id).await;
            return invalid_grant(&why);
        }
        Err(RefreshFailure::Unavailable(e)) => {
            let _ = db::unspend(db_conn, &token_hash).await;
            tracing::warn!(tenant = %session.tenant_id, error = %e, "Kit refresh failed; the client may retry");
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                &format!("the enterprise sign-in service could not refresh the session: {e}"),
            );
        }
        Err(RefreshFailure::Internal(e)) => {
            let _ = db::unspend(db_conn, &token_hash).await;
            return server_error(&e);
        }
    }
    let issued = async {
        let txn = db_conn.begin().await?;
        let t = issue(login, &txn, &session, now).await?;
        txn.commit().await?;
        Ok::<_, LoginError>(t)
    }
    .await;
    match issued {
        Ok((access, refresh)) => {
            token_answer(login, &session, &admitted, &access, &refresh, None).await
        }
        Err(e) => server_error(&e),
    }
}

enum RefreshFailure {
    /// The Kit refused: the enterprise login behind the session is over.
    Ended(String),
    Unavailable(KitError),
    Internal(LoginError),
}

async fn refresh_kit(
    login: &Login,
    session: &SessionRow,
    a: &Admitted,
) -> Result<(), RefreshFailure> {
    let kit_tokens = open_kit_tokens(login, session).map_err(RefreshFailure::Internal)?;
    let Some(kit_refresh) = kit_tokens.refresh_token.as_deref() else {
        return Err(RefreshFailure::Ended(
            "the enterprise sign-in gave no refresh token".into(),
        ));
    };
    let secret = kitsync_secrets::reveal_client_secret(
        &login.inner.sealer,
        login.inner.rsa.as_deref(),
        &session.tenant_id,
        &session.app_id,
        &a.app.client_secret.0,
    )
    .map_err(|e| RefreshFailure::Internal(e.into()))?;
    let domain = a.tenant.domain_name.clone().unwrap_or_default();
    match login
        .inner
        .kit
        .refresh(&domain, &a.app.client_id, &secret, kit_refresh)
        .await
    {
        Ok(fresh) => {
            let sealed =
                seal_kit_tokens(login, &session.id, &fresh).map_err(RefreshFailure::Internal)?;
            db::set_kit_tokens(login.inner.store.db(), &session.id, &sealed)
                .await
                .map_err(RefreshFailure::Internal)
        }
        Err(e) if e.is_refusal() => Err(RefreshFailure::Ended(format!(
            "the enterprise sign-in ended this session ({e})"
        ))),
        Err(e @ KitError::BadDomain(..)) => Err(RefreshFailure::Ended(e.to_string())),
        Err(e) => Err(RefreshFailure::Unavailable(e)),
    }
}

// ---------------------------------------------------------------------------------------------
// /oidc/userinfo

fn invalid_token(description: &str) -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "invalid_token", "error_description": description})),
    )
        .into_response();
    let challenge = format!(
        "Bearer realm=\"kitsync\", error=\"invalid_token\", error_description=\"{}\"",
        description.replace(['"', '\\'], "'")
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

async fn userinfo(State(login): State<Login>, headers: HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    let Some(token) = bearer else {
        let mut r = StatusCode::UNAUTHORIZED.into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"kitsync\""),
        );
        return r;
    };
    let db_conn = login.inner.store.db();
    let row = match db::token(db_conn, &hash(&token), TokenKind::Access).await {
        Ok(Some(r)) => r,
        Ok(None) => return invalid_token("unknown access token"),
        Err(e) => return server_error(&e),
    };
    if row.expires_at <= now_ms() {
        return invalid_token("the access token has expired");
    }
    let session = match db::session(db_conn, &row.session_id).await {
        Ok(Some(s)) if s.revoked_at.is_none() => s,
        Ok(_) => return invalid_token("the session of this access token has ended"),
        Err(e) => return server_error(&e),
    };
    match member_check(
        &login,
        &session.tenant_id,
        &session.app_id,
        &session.user_name,
    )
    .await
    {
        Ok(Ok(a)) => Json(Value::Object(user_claims(&session, &a))).into_response(),
        Ok(Err(d)) => {
            invalid_token(&d.why(&session.tenant_id, &session.app_id, &session.user_name))
        }
        Err(e) => server_error(&e),
    }
}

// ---------------------------------------------------------------------------------------------
// /oidc/logout (RP-initiated logout)

async fn logout(State(login): State<Login>, RawQuery(query): RawQuery) -> Response {
    let p = Params::parse(query.unwrap_or_default().as_bytes());
    if let Some(name) = &p.repeated {
        return bad_request_page(
            "invalid_request",
            "Invalid sign-out request",
            format!("{name} given more than once."),
        );
    }
    let db_conn = login.inner.store.db();
    // The session, from the ID token the app holds (its signature checked; it may have expired).
    let mut session = None;
    let mut audience = None;
    if let Some(hint) = p.get("id_token_hint") {
        let keys = match login.inner.keys.jwks().await {
            Ok(k) => k,
            Err(e) => return server_error_page(&e),
        };
        let Some(claims) = crate::jose::verify(hint, &keys) else {
            return bad_request_page(
                "invalid_request",
                "Invalid sign-out request",
                "id_token_hint is not an ID token kitsync issued.".into(),
            );
        };
        audience = claims.get("aud").and_then(Value::as_str).map(str::to_owned);
        if let Some(sid) = claims.get("sid").and_then(Value::as_str) {
            session = match db::session(db_conn, sid).await {
                Ok(s) => s,
                Err(e) => return server_error_page(&e),
            };
        }
    }
    let client_id = match (p.get("client_id"), audience.as_deref()) {
        (Some(c), Some(a)) if c != a => {
            return bad_request_page(
                "invalid_request",
                "Invalid sign-out request",
                "client_id differs from the audience of id_token_hint.".into(),
            )
        }
        (Some(c), _) => Some(c.to_owned()),
        (None, a) => a.map(str::to_owned),
    };
    // Where the browser ends up: a registered post-logout address, or kitsync's page.
    let mut target = format!("{}/oidc/logged-out", login.issuer());
    if let Some(uri) = p.get("post_logout_redirect_uri") {
        let client = match client_id.as_deref() {
            Some(c) => match db::client_by_id(db_conn, c).await {
                Ok(x) => x,
                Err(e) => return server_error_page(&e),
            },
            None => None,
        };
        let registered = client
            .as_ref()
            .is_some_and(|c| c.post_logout_redirect_uris.iter().any(|r| r == uri));
        if !registered {
            return ErrorPage::bad_request(
                "invalid_post_logout_redirect_uri",
                "Unregistered sign-out address",
                "The application asked to return to an address that is not registered for it \
                 (kitsync oidc-client add --post-logout-redirect-uri), so kitsync does not go there.",
            )
            .fact("post_logout_redirect_uri", uri)
            .into_response();
        }
        target = match p.get("state") {
            Some(s) => with_query(uri, &[("state", s)]),
            None => uri.to_owned(),
        };
    }
    let Some(session) = session else {
        return found(&target);
    };
    if let Err(e) = db::revoke_session(db_conn, &session.id).await {
        return server_error_page(&e);
    }
    tracing::info!(tenant = %session.tenant_id, user = %session.user_name, "logout");
    // Then the enterprise login ends too, at the Kit logout.
    let domain = match login.inner.store.tenant(&session.tenant_id).await {
        Ok(t) => t.and_then(|t| t.domain_name),
        Err(e) => return server_error_page(&e.into()),
    };
    match domain.as_deref().map(|d| kit::logout_url(d, &target)) {
        Some(Ok(u)) => found(&u),
        _ => found(&target),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn pkce_s256_matches_the_rfc_7636_example() {
        // RFC 7636, appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(pkce_ok(Some(challenge), Some(verifier)), Ok(()));
        assert!(pkce_ok(Some(challenge), Some(&verifier.replace('d', "e"))).is_err());
        assert!(pkce_ok(Some(challenge), None).is_err());
        assert!(pkce_ok(None, Some(verifier)).is_err());
        assert_eq!(pkce_ok(None, None), Ok(()));
    }

    #[test]
    fn repeated_parameters_are_noticed_and_empty_ones_are_absent() {
        let p = Params::parse(b"a=1&b=&a=2");
        assert_eq!(p.repeated.as_deref(), Some("a"));
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), None);
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut h = HeaderMap::new();
        let v = format!("Basic {}", B64.encode("kc_a%3Ab:s%2B1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&v).unwrap());
        assert_eq!(
            basic_credentials(&h),
            Some(Some(("kc_a:b".to_owned(), "s+1".to_owned())))
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(basic_credentials(&h), Some(None));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_credentials(&h), None);
    }

    #[test]
    fn the_unified_login_template_gets_encoded_values() {
        assert_eq!(
            unified_login_url(
                "https://m.example.com/unified-login/#/portal-login?ind=UNOP&appId={appId}",
                "app 1",
                "https://k/cb",
                "s"
            ),
            "https://m.example.com/unified-login/#/portal-login?ind=UNOP&appId=app+1"
        );
        assert_eq!(
            unified_login_url("http://127.0.0.1:9/unified-login?appId={appId}&redirect_uri={redirectUri}&state={state}", "a", "http://k/cb?x=1", "s/1"),
            "http://127.0.0.1:9/unified-login?appId=a&redirect_uri=http%3A%2F%2Fk%2Fcb%3Fx%3D1&state=s%2F1"
        );
    }
}
