//! `kitsync emulate auth-centre` end to end: `kitsync emulate` plays a history against
//! `kitsync serve` with `--auth-centre-url` and `--save-users`, then the auth centre serves the
//! saved users and an app's login is played with a plain HTTP client — authorize, the code,
//! the token with the plaintext secret, userinfo, a reused code, a wrong secret, a refresh,
//! the login form, logout, the unified login page — and the directory's `domainName` points at
//! the auth centre.
//!
//! Runs on the embedded defaults and, when `KITSYNC_TEST_DATABASE_URL` /
//! `KITSYNC_TEST_AMQP_URL` are set, on PostgreSQL / RabbitMQ.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use serde_json::Value;
use tests::web::{emulate_saving_users, free_port, AuthCentreProcess, Http};
use tests::Env;

const CALLBACK: &str = "http://app.example/login/callback";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_login_against_the_emulated_auth_centre() {
    let env = Env::new("authcentre").await;
    let server = env.start("serve").await;
    let kit = server.kit();
    let base = kit.base_url().to_owned();
    let token = env.create_token("authcentre", "directory:read", None).await;

    // 1. The marketplace, its tenants pointed at the auth centre, the users saved.
    let addr = format!("127.0.0.1:{}", free_port());
    let auth_url = format!("http://{addr}");
    let (out, users_path, saved) = emulate_saving_users(
        &env,
        &base,
        &token,
        &auth_url,
        &[
            "--tenants",
            "1",
            "--users",
            "20",
            "--seed",
            "11",
            "--run-id",
            "ac",
        ],
    )
    .await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["convergence"]["converged"], true, "{report}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("secret-of-"),
        "the report must not carry the secrets"
    );
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&users_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the users file holds secrets");
    }
    let tenants = saved["tenants"].as_object().unwrap();
    // With one tenant bought, the unbind scenario deletes it: the test purchase remains.
    assert!(!tenants.contains_key("emu-ac-t1"), "{saved}");
    let (t, _) = tenants
        .iter()
        .find(|(_, v)| v["apps"].get("app-1").is_some())
        .unwrap_or_else(|| panic!("no tenant with app-1: {saved}"));
    let t = t.clone();
    assert_eq!(t, "emu-ac-test");
    let tenant = &tenants[&t];
    assert_eq!(tenant["domainName"], format!("{auth_url}/{t}"));
    let client_id = tenant["apps"]["app-1"]["clientId"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret = tenant["apps"]["app-1"]["clientSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(secret, format!("secret-of-{t}-app-1"), "the plaintext");
    let users = tenant["users"].as_object().unwrap();
    assert_eq!(users.len(), 20, "every user ever authorised");
    let (user, profile) = users
        .iter()
        .find(|(_, u)| u["apps"]["app-1"]["enabled"] == true)
        .unwrap();
    let user = user.as_str();
    let (unauthorised, _) = users
        .iter()
        .find(|(_, u)| u["apps"]["app-1"].is_null())
        .unwrap_or_else(|| panic!("a deleted or cancelled user: {users:?}"));
    let unauthorised = unauthorised.as_str();

    // The directory's domainName is the auth centre's, and the deleted tenant is gone there.
    let (status, v) = kit
        .api_get(
            &format!("/api/v1/tenants/{t}?includeTest=true"),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["domainName"], format!("{auth_url}/{t}"), "{v}");
    let (status, _) = kit
        .api_get("/api/v1/tenants/emu-ac-t1?includeTest=true", Some(&token))
        .await;
    assert_eq!(status, 404);

    // 2. The auth centre.
    let mut centre = AuthCentreProcess::start(&env, &addr, &users_path).await;
    assert_eq!(centre.base, auth_url, "{}", centre.logs());
    let http = Http::new(&centre.base);
    let authorize = format!("/{t}/api/v1/oauth2/authorize");
    let token_path = format!("/{t}/api/v1/oauth2/token");
    let userinfo_path = format!("/{t}/api/v1/oauth2/userinfo");
    let request = |extra: &[(&'static str, &'static str)]| {
        let mut p: Vec<(&str, &str)> = vec![
            ("client_id", client_id.as_str()),
            ("redirect_uri", CALLBACK),
            ("response_type", "code"),
            ("scope", "get_user_info"),
            ("state", "st4te"),
        ];
        p.extend_from_slice(extra);
        p
    };
    let redeem = |code: String, secret: String| {
        let (http, path, client_id) = (&http, &token_path, &client_id);
        async move {
            http.post(
                path,
                &[
                    ("client_id", client_id),
                    ("client_secret", &secret),
                    ("code", &code),
                    ("grant_type", "authorization_code"),
                    ("redirect_uri", CALLBACK),
                ],
            )
            .await
        }
    };
    let userinfo = |access: String| {
        let (http, path) = (&http, &userinfo_path);
        async move {
            http.send(
                "GET",
                path,
                &[("authorization", &format!("Bearer {access}"))],
                None,
            )
            .await
        }
    };

    // authorize with login_hint: 302 with the code at once.
    let mut p = request(&[]);
    p.push(("login_hint", user));
    let a = http.get(&authorize, &p, None).await;
    assert_eq!(a.status, 302, "{}", a.body);
    let location = a.location().unwrap();
    assert!(location.starts_with(CALLBACK), "{location}");
    assert_eq!(a.param("state").as_deref(), Some("st4te"));
    assert_eq!(a.param("tenant").as_deref(), Some(t.as_str()));
    let code = a.param("code").unwrap();

    // The token, with the plaintext secret; userinfo shows the user, its orgCode, its role.
    let tok = redeem(code.clone(), secret.clone()).await;
    assert_eq!(tok.status, 200, "{}", tok.body);
    let tokens = tok.json();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 7200);
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh1 = tokens["refresh_token"].as_str().unwrap().to_owned();
    let info = userinfo(access.clone()).await;
    assert_eq!(info.status, 200, "{}", info.body);
    let me = info.json();
    assert_eq!(me["userName"], user);
    assert_eq!(me["organizationCode"], profile["orgCode"]);
    assert_eq!(me["role"], profile["apps"]["app-1"]["role"]);
    assert_eq!(me["tenant"], t.as_str());
    assert_eq!(me["projectName"], tenant["name"]);
    assert_eq!(me["authorized"], true);

    // The same code again: invalid_grant, and the tokens it issued are revoked.
    let again = redeem(code, secret.clone()).await;
    assert_eq!(again.status, 400, "{}", again.body);
    assert_eq!(again.error(), "invalid_grant");
    assert_eq!(userinfo(access).await.status, 401);

    // A wrong secret: invalid_client (401); the code survives it.
    let mut p = request(&[]);
    p.push(("login_hint", user));
    let code = http.get(&authorize, &p, None).await.param("code").unwrap();
    let wrong = redeem(code.clone(), format!("{secret}x")).await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert_eq!(wrong.error(), "invalid_client");
    let tokens = redeem(code, secret.clone()).await.json();
    let refresh2 = tokens["refresh_token"].as_str().unwrap().to_owned();

    // Refresh: once, then the old refresh token fails (the one revoked above fails too).
    let refresh = |rt: String| {
        let (http, path, client_id, secret) = (&http, &token_path, &client_id, &secret);
        async move {
            http.post(
                path,
                &[
                    ("client_id", client_id),
                    ("client_secret", secret),
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &rt),
                ],
            )
            .await
        }
    };
    let fresh = refresh(refresh2.clone()).await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    let fresh = fresh.json();
    assert_ne!(fresh["refresh_token"].as_str().unwrap(), refresh2);
    let info = userinfo(fresh["access_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(info.json()["userName"], user);
    let spent = refresh(refresh2).await;
    assert_eq!(spent.status, 400);
    assert_eq!(spent.error(), "invalid_grant");
    assert_eq!(refresh(refresh1).await.error(), "invalid_grant");

    // A user whose authorisation is gone still logs in; userinfo says so.
    let mut p = request(&[]);
    p.push(("login_hint", unauthorised));
    let code = http.get(&authorize, &p, None).await.param("code").unwrap();
    let tokens = redeem(code, secret.clone()).await.json();
    let info = userinfo(tokens["access_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(info.json()["authorized"], false, "{}", info.body);

    // Without login_hint or a session: the login form (escaped, saying it is an emulator).
    let mut p = request(&[]);
    p[4] = ("state", "<script>x</script>");
    let page = http.get(&authorize, &p, None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.location().is_none());
    assert!(page.body.contains("name=\"user_name\""), "{}", page.body);
    assert!(page.body.contains("no password"), "{}", page.body);
    assert!(page.body.contains(&format!("<option value=\"{user}\">")));
    assert!(!page.body.contains("<script>") && page.body.contains("&lt;script&gt;"));

    // The form logs in and starts a session: the next authorize redirects at once.
    let mut fields = request(&[]);
    fields.push(("user_name", user));
    let login = http.post(&authorize, &fields).await;
    assert_eq!(login.status, 302, "{}", login.body);
    assert!(login.param("code").is_some());
    let cookie = login.cookie().expect("a session cookie");
    let quick = http.get(&authorize, &request(&[]), Some(&cookie)).await;
    assert_eq!(quick.status, 302, "{}", quick.body);
    let code = quick.param("code").unwrap();
    let tokens = redeem(code, secret.clone()).await.json();
    let info = userinfo(tokens["access_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(info.json()["userName"], user);

    // Logout: redirected, the cookie cleared; the session is gone, so the form again.
    let out = http
        .get(
            &format!("/{t}/api/v1/logout"),
            &[("redirect_url", "http://app.example/bye")],
            Some(&cookie),
        )
        .await;
    assert_eq!(out.status, 302, "{}", out.body);
    assert_eq!(out.location(), Some("http://app.example/bye"));
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let after = http.get(&authorize, &request(&[]), Some(&cookie)).await;
    assert_eq!(after.status, 200, "{}", after.body);
    assert!(after.body.contains("name=\"user_name\""));

    // An unknown client: an error page, no redirect.
    let mut p = request(&[]);
    p[0] = ("client_id", "not-a-client");
    let bad = http.get(&authorize, &p, None).await;
    assert_eq!(bad.status, 400);
    assert!(bad.location().is_none());
    assert!(bad.body.contains("not-a-client"), "{}", bad.body);

    // The unified login page of app-1: the tenant and its users; the code it gives is
    // redeemed at that tenant.
    let page = http
        .get(
            "/unified-login",
            &[
                ("appId", "app-1"),
                ("redirect_uri", CALLBACK),
                ("state", "u"),
            ],
            None,
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains(&format!("<code>{t}</code>")),
        "{}",
        page.body
    );
    let chosen = http
        .post(
            "/unified-login",
            &[
                ("appId", "app-1"),
                ("redirect_uri", CALLBACK),
                ("state", "u"),
                ("tenant", &t),
                ("user_name", user),
            ],
        )
        .await;
    assert_eq!(chosen.status, 302, "{}", chosen.body);
    assert_eq!(chosen.param("tenant").as_deref(), Some(t.as_str()));
    assert_eq!(chosen.param("state").as_deref(), Some("u"));
    let tokens = redeem(chosen.param("code").unwrap(), secret.clone()).await;
    assert_eq!(tokens.status, 200, "{}", tokens.body);

    // SIGTERM stops it.
    let status = centre.terminate().await;
    assert!(status.success(), "{status}:\n{}", centre.logs());
    drop(server);
    env.finish().await;
}
