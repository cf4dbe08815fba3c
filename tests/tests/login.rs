//! The Kit login bridged to OpenID Connect, end to end: `kitsync emulate` buys tenants, binds
//! apps and authorises users against `kitsync serve`, `kitsync emulate auth-centre` serves
//! those users, and a browser is played with a plain HTTP client (redirects followed by hand,
//! the auth centre's login form posted). Then every error path the specifications and the
//! product name: an unregistered `redirect_uri`, PKCE, a reused code, a wrong secret, a
//! tenant that does not match, a user not authorised, the auth centre down or silent, a user
//! deauthorised between login and refresh, logout; and the `login` activity in the
//! statistics. A second process answers steps of the same flows.
//!
//! Runs on the embedded defaults and, when `KITSYNC_TEST_DATABASE_URL` /
//! `KITSYNC_TEST_AMQP_URL` are set, on PostgreSQL / RabbitMQ. `authlib_relying_party` (ignored
//! unless CI provides the tools) runs an independent OpenID Connect client from PyPI.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use base64::Engine as _;
use serde_json::Value;
use sha2::Digest as _;
use std::time::{Duration, Instant};
use tests::web::{emulate_saving_users, free_port, query_params, AuthCentreProcess, Http, Reply};
use tests::{explain, payload, strs, wait_until, Env, Server};

const APP_CB: &str = "https://app.example/oidc/cb";
const APP_BYE: &str = "https://app.example/bye";
const SPA_CB: &str = "http://127.0.0.1:9/cb";
/// How long a callback may take to show in the directory.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Part `n` of a JWT (0 the header, 1 the claims), decoded; its signature is checked
/// separately against the JWKS.
fn jwt_part(jwt: &str, n: usize) -> Value {
    let part = jwt.split('.').nth(n).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

/// The claims of a JWT.
fn jwt_claims(jwt: &str) -> Value {
    jwt_part(jwt, 1)
}

/// A marketplace time eight hours from now: later than anything the emulator sent.
fn later_than_emulated() -> String {
    (chrono::Utc::now() + chrono::Duration::hours(8))
        .format("%Y%m%d%H%M%S%3f")
        .to_string()
}

/// The parameters of an `authorization_code` grant (PKCE's verifier when there is one).
fn code_grant<'a>(
    code: &'a str,
    redirect_uri: &'a str,
    verifier: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut p = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
    ];
    p.extend(verifier.map(|v| ("code_verifier", v)));
    p
}

/// An OAuth error answer: its status and `error`.
fn assert_oauth_error(r: &Reply, status: u16, error: &str) {
    assert_eq!((r.status, r.error()), (status, error.into()), "{}", r.body);
}

/// A kitsync error page (not a redirect to the app): its status and `data-error`.
fn assert_page_error(r: &Reply, status: u16, error: &str) {
    let page = ended(r, APP_CB).unwrap_or_else(|| panic!("sent elsewhere: {:?}", r.location()));
    assert_eq!(page.page_error(), (status, error.into()), "{}", r.body);
}

/// A request refused with 400 on a page, without sending the browser anywhere.
fn assert_refused_here(r: &Reply) {
    assert_eq!(
        (r.status, r.location().is_none()),
        (400, true),
        "{}",
        r.body
    );
}

/// The hidden inputs of the first form of an HTML page, and its action.
fn form_fields(html: &str) -> Vec<(String, String)> {
    let unescape = |s: &str| {
        s.replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    };
    let form = html.split("</form>").next().unwrap_or_default();
    form.split("<input type=\"hidden\" ")
        .skip(1)
        .filter_map(|chunk| {
            let name = chunk.split("name=\"").nth(1)?.split('"').next()?;
            let value = chunk.split("value=\"").nth(1)?.split('"').next()?;
            Some((unescape(name), unescape(value)))
        })
        .collect()
}

/// Splits `http://host:port/path?query` into an [`Http`] for the origin and the rest.
fn at(url: &str) -> (Http, String) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not http: {url}"));
    let slash = rest.find('/').unwrap_or(rest.len());
    (
        Http::new(&format!("http://{}", &rest[..slash])),
        rest[slash..].to_owned(),
    )
}

async fn get_url(url: &str, cookie: Option<&str>) -> Reply {
    let (http, path) = at(url);
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    http.send("GET", &path, &headers, None).await
}

struct Pkce {
    verifier: String,
    challenge: String,
}

impl Pkce {
    fn new(seed: &str) -> Pkce {
        let verifier = format!("verifier-{seed}-{}", "x".repeat(40));
        let challenge = b64url(&sha2::Sha256::digest(verifier.as_bytes()));
        Pkce {
            verifier,
            challenge,
        }
    }
}

/// One login as a browser would do it.
struct Attempt<'a> {
    client_id: &'a str,
    redirect_uri: &'a str,
    tenant_hint: Option<&'a str>,
    pkce: Option<&'a Pkce>,
    nonce: &'a str,
    state: &'a str,
    /// Who logs in at the auth centre.
    user: &'a str,
    /// The tenant chosen on the unified login page (without a hint).
    unified_tenant: Option<&'a str>,
}

/// Where a browser ended.
#[derive(Debug)]
enum Ended {
    /// At the app's redirect URI: its query.
    AtApp(Vec<(String, String)>),
    /// On a kitsync page (not a redirect).
    Page(u16, String),
}

impl Ended {
    fn app(&self) -> &[(String, String)] {
        match self {
            Ended::AtApp(q) => q,
            Ended::Page(s, b) => panic!("expected a redirect to the app, got HTTP {s}: {b}"),
        }
    }

    fn param(&self, name: &str) -> Option<String> {
        self.app()
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    fn page_error(&self) -> (u16, String) {
        match self {
            Ended::Page(s, b) => (
                *s,
                b.split("data-error=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or_default()
                    .to_owned(),
            ),
            Ended::AtApp(q) => panic!("expected a kitsync page, got a redirect to the app: {q:?}"),
        }
    }
}

fn ended(r: &Reply, app_prefix: &str) -> Option<Ended> {
    match r.location() {
        Some(l) if l.starts_with(app_prefix) => Some(Ended::AtApp(query_params(l))),
        Some(_) => None,
        None => Some(Ended::Page(r.status, r.body.clone())),
    }
}

struct World {
    env: Env,
    server: Server,
    kitsync: Http,
    base: String,
    auth: AuthCentreProcess,
    auth_url: String,
    users: Value,
    api_token: String,
    /// Confidential client of app-1.
    client_id: String,
    client_secret: String,
    /// Public client of app-1.
    spa_id: String,
}

impl World {
    async fn new(label: &str) -> World {
        let mut env = Env::new(label).await;
        let auth_addr = format!("127.0.0.1:{}", free_port());
        let auth_url = format!("http://{auth_addr}");
        let unified_login = format!(
            "{auth_url}/unified-login?appId={{appId}}&redirect_uri={{redirectUri}}&state={{state}}"
        );
        env.push_var("KITSYNC_LOGIN__UNIFIED_LOGIN_URL", unified_login);
        env.push_var("KITSYNC_LOGIN__KIT_TIMEOUT_MS", "1500");
        // The apps' secrets arrive RSA-encrypted, as from the marketplace.
        let (_, public) = env.isv_key_pair();
        let public_arg = public.display().to_string();
        let server = env.start("serve").await;
        let base = server.kit().base_url().to_owned();
        let api_token = env
            .create_token("login", "directory:read,stats:read", None)
            .await;
        // Tenants, apps and users, through the Kit callbacks; saved for the auth centre.
        let (_, users_path, users) = emulate_saving_users(
            &env,
            &base,
            &api_token,
            &auth_url,
            &[
                "--rsa-public-key",
                &public_arg,
                "--tenants",
                "2",
                "--users",
                "12",
                "--seed",
                "7",
                "--run-id",
                label,
                "--scenario",
                "purchase",
                "--scenario",
                "bind",
                "--scenario",
                "authorise",
                "--scenario",
                "test-purchase",
                "--no-probes",
                "--duplicates",
                "0",
                "--replays",
                "0",
            ],
        )
        .await;
        let auth = AuthCentreProcess::start(&env, &auth_addr, &users_path).await;
        // The clients: a confidential one and a public one (PKCE), both for app-1.
        // `oidc-client add --app app-1 ARGS`: the output, whose stdout lines are the client id
        // (and the secret of a confidential client).
        let add_client = |args: &'static [&'static str]| {
            let env = &env;
            async move {
                let mut all = vec!["oidc-client", "add", "--app", "app-1"];
                all.extend_from_slice(args);
                let out = env.cli_ok(&all).await;
                let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(str::to_owned)
                    .collect();
                (out, lines)
            }
        };
        let (out, lines) = add_client(&[
            "--name",
            "portal",
            "--redirect-uri",
            APP_CB,
            "--post-logout-redirect-uri",
            APP_BYE,
        ])
        .await;
        let (client_id, client_secret) = (lines[0].clone(), lines[1].clone());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("/login/kit/callback"),
            "add names the callback URL to register: {}",
            explain(&out)
        );
        let (_, lines) = add_client(&["--public", "--redirect-uri", SPA_CB]).await;
        let spa_id = lines[0].clone();
        World {
            kitsync: Http::new(&base),
            env,
            server,
            base,
            auth,
            auth_url,
            users,
            api_token,
            client_id,
            client_secret,
            spa_id,
        }
    }

    /// The `n`-th user (from 0) of `tenant` whose authorisation for app-1 is enabled.
    fn enabled_user(&self, tenant: &str, n: usize) -> String {
        self.users_of(tenant, true)
            .into_iter()
            .nth(n)
            .unwrap_or_else(|| panic!("no enabled user {n} of app-1 in {tenant}"))
    }

    /// Users of `tenant` whose authorisation for app-1 is `enabled` (or disabled).
    fn users_of(&self, tenant: &str, enabled: bool) -> Vec<String> {
        self.users["tenants"][tenant]["users"]
            .as_object()
            .unwrap_or_else(|| panic!("no tenant {tenant} in {}", self.users))
            .iter()
            .filter(|(_, u)| u["apps"]["app-1"]["enabled"].as_bool() == Some(enabled))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// A login of `user` at `tenant` (named in the request) by the confidential client,
    /// without PKCE.
    fn attempt<'a>(&'a self, tenant: &'a str, user: &'a str) -> Attempt<'a> {
        Attempt {
            client_id: &self.client_id,
            redirect_uri: APP_CB,
            tenant_hint: Some(tenant),
            pkce: None,
            nonce: "n",
            state: "s",
            user,
            unified_tenant: None,
        }
    }

    /// `/oidc/authorize` at the first process for the `openid` scope, then `extra`; not
    /// followed.
    async fn authorize(
        &self,
        response_type: &str,
        client_id: &str,
        redirect_uri: &str,
        extra: &[(&str, &str)],
    ) -> Reply {
        let first = [
            ("response_type", response_type),
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("scope", "openid"),
        ];
        let params = [&first[..], extra].concat();
        self.kitsync.get("/oidc/authorize", &params, None).await
    }

    /// Plays a login from `/oidc/authorize` (at `kitsync`) to where the browser ends.
    async fn login(&self, kitsync: &Http, a: &Attempt<'_>) -> Ended {
        let mut q: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", a.client_id),
            ("redirect_uri", a.redirect_uri),
            ("scope", "openid profile email"),
            ("state", a.state),
            ("nonce", a.nonce),
        ];
        if let Some(p) = a.pkce {
            q.push(("code_challenge", &p.challenge));
            q.push(("code_challenge_method", "S256"));
        }
        if let Some(t) = a.tenant_hint {
            q.push(("login_hint", t));
        }
        let r = kitsync.get("/oidc/authorize", &q, None).await;
        if let Some(e) = ended(&r, a.redirect_uri) {
            return e;
        }
        let cookie = r.cookie().expect("authorize sets the flow cookie");
        assert!(cookie.starts_with("kitsync_login="), "{cookie}");
        let to_kit = r.location().unwrap().to_owned();
        assert!(to_kit.starts_with(&self.auth_url), "{to_kit}");
        // At the auth centre: its login form (or the unified login page), posted.
        let page = get_url(&to_kit, None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let mut fields = form_fields(&page.body);
        let (http, path) = at(&to_kit);
        let action = if a.tenant_hint.is_some() {
            path.split('?').next().unwrap().to_owned()
        } else {
            // One form per tenant: take the chosen tenant's.
            let t = a.unified_tenant.expect("unified login needs a tenant");
            let section = page
                .body
                .split("<section>")
                .find(|s| s.contains(&format!("value=\"{t}\"")))
                .unwrap_or_else(|| panic!("tenant {t} not on the unified page: {}", page.body));
            fields = form_fields(section);
            "/unified-login".to_owned()
        };
        fields.push(("user_name".into(), a.user.into()));
        let pairs: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let back = http.post(&action, &pairs).await;
        assert_eq!(back.status, 302, "the auth centre logs in: {}", back.body);
        let callback = back.location().unwrap().to_owned();
        assert!(
            callback.starts_with(&format!("{}/login/kit/callback?", self.base)),
            "{callback}"
        );
        // Back at kitsync (possibly another process of it), with this browser's cookie.
        let (_, path) = at(&callback);
        let r = kitsync
            .send("GET", &path, &[("cookie", &cookie)], None)
            .await;
        ended(&r, a.redirect_uri)
            .unwrap_or_else(|| panic!("kitsync sent the browser elsewhere: {:?}", r.location()))
    }

    async fn token(&self, params: &[(&str, &str)], basic: Option<(&str, &str)>) -> Reply {
        let body = tests::web::form(params);
        let auth = basic.map(|(id, s)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{id}:{s}"))
            )
        });
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| ("authorization", a))
            .into_iter()
            .collect();
        self.kitsync
            .send("POST", "/oidc/token", &headers, Some(body))
            .await
    }

    /// The token endpoint for the confidential client (its secret in Basic).
    async fn redeem(&self, params: &[(&str, &str)]) -> Reply {
        self.token(params, Some((&self.client_id, &self.client_secret)))
            .await
    }

    /// A `refresh_token` grant for the confidential client.
    async fn refresh(&self, refresh_token: &str) -> Reply {
        self.redeem(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    async fn userinfo(&self, access: &str) -> Reply {
        let bearer = format!("Bearer {access}");
        self.kitsync
            .send("GET", "/oidc/userinfo", &[("authorization", &bearer)], None)
            .await
    }

    async fn jwks(&self) -> Vec<Value> {
        let r = self.kitsync.get("/.well-known/jwks.json", &[], None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["keys"].as_array().unwrap().clone()
    }

    /// A full confidential login of `user` at `tenant`: the token answer.
    async fn logged_in(&self, tenant: &str, user: &str, nonce: &str) -> Value {
        let pkce = Pkce::new(nonce);
        let end = self
            .login(
                &self.kitsync,
                &Attempt {
                    pkce: Some(&pkce),
                    nonce,
                    state: "st",
                    ..self.attempt(tenant, user)
                },
            )
            .await;
        let code = end
            .param("code")
            .unwrap_or_else(|| panic!("no code: {end:?}"));
        let r = self
            .redeem(&code_grant(&code, APP_CB, Some(&pkce.verifier)))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    /// Starts a confidential login for `tenant` (with PKCE), then plays the Kit's answer by
    /// hand — `code=c` for `answered` — with this browser's cookie: the reply, the cookie and
    /// the flow's state.
    async fn kit_answer(&self, tenant: &str, answered: &str) -> (Reply, String, String) {
        let pkce = Pkce::new("by-hand");
        let r = self
            .authorize(
                "code",
                &self.client_id,
                APP_CB,
                &[
                    ("login_hint", tenant),
                    ("code_challenge", &pkce.challenge),
                    ("code_challenge_method", "S256"),
                ],
            )
            .await;
        let cookie = r
            .cookie()
            .unwrap_or_else(|| panic!("no flow cookie: {}", r.body));
        let flow = cookie.split_once('=').unwrap().1.to_owned();
        let r = self.callback(answered, &flow, &cookie).await;
        (r, cookie, flow)
    }

    async fn callback(&self, tenant: &str, state: &str, cookie: &str) -> Reply {
        self.kitsync
            .send(
                "GET",
                &format!("/login/kit/callback?code=c&tenant={tenant}&state={state}"),
                &[("cookie", cookie)],
                None,
            )
            .await
    }

    /// Waits until the statistics of today show `active` active users for `tenant`.
    async fn wait_for_active(&self, tenant: &str, active: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.api("/api/v1/stats/tenants?preset=day").await;
            assert_eq!(status, 200, "{body}");
            let now = body["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["tenantId"] == tenant)
                .map(|i| i["active"].as_u64().unwrap());
            if now == Some(active) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{tenant} never had {active} active users today: {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn api(&self, path: &str) -> (u16, Value) {
        self.server.kit().api_get(path, Some(&self.api_token)).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kit_login_as_openid_connect_end_to_end() {
    let mut w = World::new("login").await;
    let t1 = "emu-login-t1";
    let t2 = "emu-login-t2";
    let test_tenant = "emu-login-test";
    let alice = w.enabled_user(t1, 0);

    // 1. Discovery and keys.
    let d = w
        .kitsync
        .get("/.well-known/openid-configuration", &[], None)
        .await;
    assert_eq!(d.status, 200);
    let d = d.json();
    assert_eq!(d["issuer"], w.base);
    assert_eq!(d["token_endpoint"], format!("{}/oidc/token", w.base));
    assert_eq!(
        d["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    let keys = w.jwks().await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["alg"], "ES256");

    // 2. The whole flow: authorize → Kit login form → callback → code → tokens → userinfo.
    let pkce = Pkce::new("alice");
    let end = w
        .login(
            &w.kitsync,
            &Attempt {
                pkce: Some(&pkce),
                nonce: "n-alice",
                state: "s-alice",
                ..w.attempt(t1, &alice)
            },
        )
        .await;
    assert_eq!(end.param("state").as_deref(), Some("s-alice"));
    assert_eq!(end.param("iss").as_deref(), Some(w.base.as_str()));
    let code = end.param("code").unwrap();
    let p = code_grant(&code, APP_CB, Some(&pkce.verifier));
    // A wrong client secret is invalid_client, and does not spend the code.
    let r = w.token(&p, Some((&w.client_id, "kcs_wrong"))).await;
    assert_oauth_error(&r, 401, "invalid_client");
    assert!(r
        .header("www-authenticate")
        .is_some_and(|h| h.starts_with("Basic")));
    // A wrong PKCE verifier is invalid_grant.
    let mallory = Pkce::new("mallory");
    let r = w
        .redeem(&code_grant(&code, APP_CB, Some(&mallory.verifier)))
        .await;
    assert_oauth_error(&r, 400, "invalid_grant");
    let r = w.redeem(&p).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let tokens = r.json();
    let id_token = tokens["id_token"].as_str().unwrap();
    let verified =
        kitsync_login::jose::verify(id_token, &w.jwks().await).expect("id_token verifies");
    assert_eq!(verified["iss"], w.base);
    assert_eq!(verified["aud"], w.client_id);
    assert_eq!(verified["nonce"], "n-alice");
    assert_eq!(verified["sub"], format!("{t1}:{alice}"));
    assert_eq!(verified["tenant_id"], t1);
    assert_eq!(verified["user_name"], alice.as_str());
    assert_eq!(verified["app_id"], "app-1");
    assert_eq!(verified["test"], false);
    let role = w.users["tenants"][t1]["users"][&alice]["apps"]["app-1"]["role"].clone();
    assert_eq!(verified["roles"], serde_json::json!([role]));
    assert!(verified["exp"].as_i64().unwrap() > verified["iat"].as_i64().unwrap());
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let r = w.userinfo(&access).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["sub"], format!("{t1}:{alice}"));
    // 3. The same code again: invalid_grant, and what it issued is revoked.
    let r = w.redeem(&p).await;
    assert_oauth_error(&r, 400, "invalid_grant");
    let r = w.userinfo(&access).await;
    assert_eq!(
        r.status, 401,
        "the reused code revoked its access token: {}",
        r.body
    );
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    let r = w.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        r.error(),
        "invalid_grant",
        "and its refresh token: {}",
        r.body
    );

    // 4. Errors at /oidc/authorize: an unregistered redirect_uri is never followed; the rest
    //    go back to the app.
    let r = w
        .authorize(
            "code",
            &w.client_id,
            "https://evil.example/cb",
            &[("state", "x")],
        )
        .await;
    assert_refused_here(&r);
    assert!(r.body.contains("invalid_redirect_uri"), "{}", r.body);
    let r = w.authorize("code", "kc_nobody", APP_CB, &[]).await;
    assert_refused_here(&r);
    let spa_no_pkce = w
        .login(
            &w.kitsync,
            &Attempt {
                client_id: &w.spa_id,
                redirect_uri: SPA_CB,
                state: "s-spa",
                ..w.attempt(t1, &alice)
            },
        )
        .await;
    assert_eq!(
        spa_no_pkce.param("error").as_deref(),
        Some("invalid_request"),
        "{spa_no_pkce:?}"
    );
    assert_eq!(spa_no_pkce.param("state").as_deref(), Some("s-spa"));
    let r = w.authorize("token", &w.client_id, APP_CB, &[]).await;
    assert_eq!(
        query_params(r.location().unwrap())
            .iter()
            .find(|(k, _)| k == "error")
            .unwrap()
            .1,
        "unsupported_response_type"
    );

    // 5. A public client through the unified login page (no tenant known), with PKCE and no
    //    secret; a second kitsync process answers the callback and the token request.
    //    The signing key is rotated first: the new key is published at once and signs only
    //    after 60 s, so the process started now lists both and still signs with the old one.
    let old_kid = keys[0]["kid"].as_str().unwrap().to_owned();
    let out = w.env.cli_ok(&["oidc-key", "rotate"]).await;
    let new_kid = String::from_utf8(out.stdout.clone())
        .unwrap()
        .trim()
        .to_owned();
    assert_ne!(new_kid, old_kid);
    let out = w.env.cli(&["oidc-key", "list"]).await;
    let listed: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["kid"], new_kid.as_str());
    assert!(
        listed[0]["retiredAt"].is_null() && listed[1]["retiredAt"].is_string(),
        "{listed:?}"
    );
    //    Behind one address, every process has the same issuer (`login.public_url`).
    w.env.push_var("KITSYNC_LOGIN__PUBLIC_URL", w.base.clone());
    let second = w.env.start("ingress").await;
    w.env.extra_env.pop();
    let other = Http::new(second.kit().base_url());
    let spa_pkce = Pkce::new("spa");
    let end = w
        .login(
            &other,
            &Attempt {
                client_id: &w.spa_id,
                redirect_uri: SPA_CB,
                tenant_hint: None,
                pkce: Some(&spa_pkce),
                nonce: "n-spa",
                state: "s-spa2",
                unified_tenant: Some(t1),
                ..w.attempt(t1, &alice)
            },
        )
        .await;
    let code = end.param("code").unwrap_or_else(|| panic!("{end:?}"));
    let mut public_grant = code_grant(&code, SPA_CB, None);
    public_grant.extend([
        ("client_id", w.spa_id.as_str()),
        ("code_verifier", &spa_pkce.verifier),
    ]);
    let r = w.token(&public_grant, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let spa_tokens = r.json();
    assert_eq!(
        jwt_claims(spa_tokens["id_token"].as_str().unwrap())["aud"],
        w.spa_id
    );
    let r = other
        .send(
            "GET",
            "/oidc/userinfo",
            &[(
                "authorization",
                &format!("Bearer {}", spa_tokens["access_token"].as_str().unwrap()),
            )],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "any process answers any step: {}", r.body);
    let jwks = other.get("/.well-known/jwks.json", &[], None).await.json();
    let kids: Vec<&str> = strs(&jwks["keys"], "kid");
    assert_eq!(
        kids,
        [new_kid.as_str(), old_kid.as_str()],
        "both keys are published"
    );
    assert_eq!(
        jwt_part(spa_tokens["id_token"].as_str().unwrap(), 0)["kid"],
        old_kid.as_str(),
        "the new key does not sign yet"
    );
    let published: Vec<Value> = jwks["keys"].as_array().unwrap().clone();
    assert!(
        kitsync_login::jose::verify(id_token, &published).is_some(),
        "earlier tokens still verify"
    );
    drop(second);

    // 6. A test tenant logs in like any other, flagged in the claims.
    let tester = w.enabled_user(test_tenant, 0);
    let t = w.logged_in(test_tenant, &tester, "n-test").await;
    assert_eq!(jwt_claims(t["id_token"].as_str().unwrap())["test"], true);

    //    An expired code is invalid_grant (codes live login.code_ttl_secs).
    let end = w.login(&w.kitsync, &w.attempt(test_tenant, &tester)).await;
    let code = end.param("code").unwrap();
    w.env
        .exec("UPDATE oidc_tokens SET expires_at = 1 WHERE kind = 'code' AND used_at IS NULL")
        .await;
    let r = w.redeem(&code_grant(&code, APP_CB, None)).await;
    assert_eq!(r.error(), "invalid_grant", "{}", r.body);
    assert!(r.body.contains("expired"), "{}", r.body);

    // 7. A tenant in the callback that is not the one asked for.
    let (r, cookie, flow) = w.kit_answer(t1, t2).await;
    assert_page_error(&r, 400, "tenant_mismatch");
    // The flow is spent: the same callback again finds nothing.
    let r = w.callback(t1, &flow, &cookie).await;
    assert_page_error(&r, 400, "flow_expired");
    // A callback with another browser's state.
    let r = w.callback("x", "other", "kitsync_login=mine").await;
    assert_page_error(&r, 400, "flow_mismatch");

    // 8. Refresh: new tokens (the Kit token behind refreshed too); the old refresh token
    //    presented again revokes the session.
    let bob = w.enabled_user(t1, 1);
    let first = w.logged_in(t1, &bob, "n-bob").await;
    let refresh = first["refresh_token"].as_str().unwrap();
    let r = w.refresh(refresh).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let second_tokens = r.json();
    assert_ne!(
        second_tokens["refresh_token"], first["refresh_token"],
        "rotated"
    );
    assert_eq!(
        jwt_claims(second_tokens["id_token"].as_str().unwrap())["sub"],
        format!("{t1}:{bob}")
    );
    let r = w.refresh(refresh).await;
    assert_eq!(r.error(), "invalid_grant", "{}", r.body);
    let r = w
        .userinfo(second_tokens["access_token"].as_str().unwrap())
        .await;
    assert_eq!(
        r.status, 401,
        "a replayed refresh token ends the session: {}",
        r.body
    );

    // 9. A user deauthorised between login and refresh is refused at refresh, and at the
    //    next login with a page that says so.
    let carol = w.enabled_user(t1, 2);
    let before = w.logged_in(t1, &carol, "n-carol").await;
    let ts = later_than_emulated();
    let body = payload::auth(
        t1,
        "app-1",
        0,
        &[payload::User::new(&carol, "root", "user", true)],
        &ts,
    );
    let reply = w.server.kit().send(tests::AUTH_SYNC, &body).await;
    assert!(reply.ok(), "{reply:?}");
    let carol_path = format!("/api/v1/tenants/{t1}/members/{carol}");
    wait_until("the deauthorisation is applied", APPLY_TIMEOUT, || async {
        w.api(&carol_path).await.0 == 404
    })
    .await;
    let r = w.refresh(before["refresh_token"].as_str().unwrap()).await;
    assert_eq!(r.error(), "invalid_grant", "{}", r.body);
    assert!(r.body.contains("not authorised"), "{}", r.body);
    let end = w.login(&w.kitsync, &w.attempt(t1, &carol)).await;
    let (status, error) = end.page_error();
    assert_eq!((status, error.as_str()), (403, "not_authorized"));
    if let Ended::Page(_, body) = &end {
        assert!(
            body.contains(t1) && body.contains("app-1") && body.contains(&carol),
            "the page names tenant, app and user: {body}"
        );
    }
    // A disabled authorisation is refused too.
    if let Some(off) = w.users_of(t1, false).first() {
        let end = w.login(&w.kitsync, &w.attempt(t1, off)).await;
        assert_eq!(end.page_error(), (403, "authorization_disabled".into()));
    }

    // 10. Logout: the session ends, and the browser goes through the Kit logout back to the app.
    let dave_tokens = w.logged_in(t1, &alice, "n-logout").await;
    let r = w
        .kitsync
        .get(
            "/oidc/logout",
            &[
                ("id_token_hint", dave_tokens["id_token"].as_str().unwrap()),
                ("post_logout_redirect_uri", APP_BYE),
                ("state", "bye"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.body);
    let kit_logout = r.location().unwrap().to_owned();
    assert!(
        kit_logout.starts_with(&format!("{}/{t1}/api/v1/logout?redirect_url=", w.auth_url)),
        "{kit_logout}"
    );
    let back = get_url(&kit_logout, None).await;
    assert_eq!(
        back.location(),
        Some(format!("{APP_BYE}?state=bye").as_str()),
        "{}",
        back.body
    );
    let r = w
        .userinfo(dave_tokens["access_token"].as_str().unwrap())
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = w
        .kitsync
        .get(
            "/oidc/logout",
            &[
                ("id_token_hint", dave_tokens["id_token"].as_str().unwrap()),
                ("post_logout_redirect_uri", "https://evil.example/"),
            ],
            None,
        )
        .await;
    assert_refused_here(&r);

    // 11. The statistics: the logins are activity of t1 (the test tenant is never counted).
    //     alice and bob were authorised all along; carol logged in, but she is no longer
    //     authorised at the end of the day.
    let body = w.wait_for_active(t1, 2).await;
    assert!(
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["tenantId"] != test_tenant),
        "{body}"
    );
    let logins = w
        .env
        .scalar(&format!("SELECT CAST(COALESCE(SUM(logins), 0) AS BIGINT) FROM activity_daily WHERE tenant_id = '{t1}' AND user_name = '{alice}'"))
        .await;
    assert_eq!(
        logins, 3,
        "every successful login of alice is one login event"
    );

    // 12. The auth centre silent, then down: a bounded wait and a page that says so.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}/{t2}", silent.local_addr().unwrap());
    let ts = later_than_emulated();
    let mut tenant: Value = serde_json::from_str(&payload::tenant(t2, "Two", 1, 0, &ts)).unwrap();
    tenant["domainName"] = silent_url.clone().into();
    let reply = w
        .server
        .kit()
        .send(tests::TENANT_SYNC, &tenant.to_string())
        .await;
    assert!(reply.ok(), "{reply:?}");
    let t2_path = format!("/api/v1/tenants/{t2}");
    wait_until("the tenant update is applied", APPLY_TIMEOUT, || async {
        w.api(&t2_path).await.1["domainName"] == silent_url.as_str()
    })
    .await;
    let started = Instant::now();
    let (r, _, _) = w.kit_answer(t2, t2).await;
    let took = started.elapsed();
    assert_page_error(&r, 504, "kit_unavailable");
    assert!(
        took < Duration::from_secs(5),
        "bounded by login.kit_timeout_ms (1.5 s): took {took:?}"
    );
    drop(silent);
    w.auth.terminate().await;
    let (r, _, _) = w.kit_answer(t1, t1).await;
    assert_page_error(&r, 502, "kit_unavailable");

    // 13. Ended rows are pruned.
    w.env.exec("UPDATE oidc_sessions SET expires_at = 0").await;
    w.env.exec("UPDATE oidc_flows SET expires_at = 0").await;
    let pruned = kitsync_login::prune(w.env.conn()).await.unwrap();
    assert!(pruned > 0);
    for table in ["oidc_sessions", "oidc_tokens", "oidc_flows"] {
        assert_eq!(
            w.env.scalar(&format!("SELECT COUNT(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
    w.env.finish().await;
}

/// An independent relying party: Authlib (PyPI) logs a user in through kitsync and the
/// emulated auth centre, and checks the ID token as OpenID Connect requires — signature
/// against the JWKS, `iss`, `aud`, `exp`, `iat`, `nonce` — and that kitsync refuses a wrong
/// PKCE verifier and a reused code. Then the login counts as that user's activity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Authlib: .ci/login/install.sh, then KITSYNC_CI_LOGIN_TOOLS=<venv>/bin"]
async fn authlib_relying_party() {
    let tools = std::path::PathBuf::from(std::env::var("KITSYNC_CI_LOGIN_TOOLS").expect(
        "KITSYNC_CI_LOGIN_TOOLS: the bin directory of a virtualenv with Authlib and requests",
    ));
    let w = World::new("authlib").await;
    let t1 = "emu-authlib-t1";
    let user = w.enabled_user(t1, 0);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/login/rp.py");
    let python = tools.join("python");
    let args = [
        script.display().to_string(),
        "--issuer".into(),
        w.base.clone(),
        "--client-id".into(),
        w.client_id.clone(),
        "--client-secret".into(),
        w.client_secret.clone(),
        "--redirect-uri".into(),
        APP_CB.into(),
        "--tenant".into(),
        t1.into(),
        "--user".into(),
        user.clone(),
    ];
    let out =
        tokio::task::spawn_blocking(move || std::process::Command::new(python).args(args).output())
            .await
            .unwrap()
            .expect("running the relying party");
    assert!(out.status.success(), "{}", explain(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    // One line for .ci/run's summary.
    println!("authlib: {report}");
    assert_eq!(report["sub"], format!("{t1}:{user}"), "{report}");
    assert_eq!(report["aud"], w.client_id);
    assert_eq!(report["alg"], "ES256");
    assert_eq!(report["wrong_pkce"], "invalid_grant");
    assert_eq!(report["reused_code"], "invalid_grant");
    // Two logins (one redeemed, one refused for its verifier): both are activity of the user.
    let logins = w
        .env
        .scalar(&format!(
            "SELECT CAST(COALESCE(SUM(logins), 0) AS BIGINT) FROM activity_daily \
             WHERE tenant_id = '{t1}' AND user_name = '{user}'"
        ))
        .await;
    assert_eq!(logins, 2);
    w.wait_for_active(t1, 1).await;
    w.env.finish().await;
}
