//! End-to-end: the dashboard (`GET /dashboard`) in a real browser. Signed Kit callbacks and
//! activity build three tenants' statistics on the real binary; headless chromium loads the
//! page for a preset, a custom range, a sorted and paged table and the "never active"
//! filter, and every figure the page shows must equal what the statistics API answers. A bad
//! token and a range over 30 days must show the API's error on the page. A second scenario
//! uses the page as a person does, over the DevTools protocol: types the token, clicks every
//! control with the mouse, and checks the page against the API after each click.
//!
//! Needs `chromium` (Debian's package; `.ci/run` installs it and runs these tests with
//! `--ignored` on both setups). Without it the tests are ignored, never passed. Like the other
//! end-to-end tests it runs on the embedded defaults, or on PostgreSQL / RabbitMQ when
//! `KITSYNC_TEST_DATABASE_URL` / `KITSYNC_TEST_AMQP_URL` are set.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use chrono::{DateTime, Duration as Days, SecondsFormat, Utc};
use serde_json::{json, Value};
use std::time::Duration;
use tests::browser::{Browser, Dom, Element, Page};
use tests::payload::{self, time};
use tests::{wait_until, Env, Kit, AUTH_SYNC, TENANT_SYNC};

const APPLY_TIMEOUT: Duration = Duration::from_secs(45);

/// (overview group, key, data-testid, is a rate) of the six cards.
const CARDS: [(&str, &str, &str, bool); 6] = [
    ("projects", "opened", "projects-opened", false),
    ("projects", "active", "projects-active", false),
    ("projects", "activeRate", "projects-active-rate", true),
    ("members", "authorized", "members-authorized", false),
    ("members", "active", "members-active", false),
    ("members", "activeRate", "members-active-rate", true),
];

/// `kitsync token create --scope SCOPES`; the printed token.
async fn token(env: &Env, scopes: &str) -> String {
    let out = env
        .cli(&["token", "create", "--name", "dashboard", "--scope", scopes])
        .await;
    assert!(
        out.status.success(),
        "token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn send_ok(kit: &Kit, kind: &str, body: &str) {
    let r = kit.send(kind, body).await;
    assert_eq!(r.code, "000000", "{kind}: {r:?}");
}

/// A tenant (`test` for sandbox data) whose `app-a` authorises `users` (name, enabled).
async fn tenant(kit: &Kit, id: &str, name: &str, test: bool, users: &[(&str, bool)]) {
    send_ok(
        kit,
        TENANT_SYNC,
        &payload::tenant(id, name, 1, u8::from(test), &time(0)),
    )
    .await;
    let list: Vec<Value> = users
        .iter()
        .map(|(u, enabled)| {
            json!({"userName": u, "name": format!("Name of {u}"), "orgCode": "d1",
                   "role": "user", "enable": if *enabled { "true" } else { "false" }})
        })
        .collect();
    let auth = json!({
        "instanceId": format!("inst-{id}"), "tenantId": id, "appId": "app-a",
        "userList": list, "currentSyncTime": time(1), "flag": 1,
        "testFlag": u8::from(test), "timeStamp": time(1),
    });
    send_ok(kit, AUTH_SYNC, &auth.to_string()).await;
}

async fn get(kit: &Kit, path: &str, token: &str) -> Value {
    let r = kit.api("GET", path, Some(token), &[], None).await;
    assert_eq!(r.status, 200, "{path}: {:?}", r.body);
    r.body
}

/// A UTC+8 date `days` after today's.
fn utc8_date(days: i64) -> String {
    ((Utc::now() + Days::hours(8)).date_naive() + Days::days(days))
        .format("%Y-%m-%d")
        .to_string()
}

/// What the page shows for an instant: its UTC+8 wall clock.
fn utc8_clock(rfc3339: &str, seconds: bool) -> String {
    let t = DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .with_timezone(&Utc)
        + Days::hours(8);
    t.format(if seconds {
        "%Y-%m-%d %H:%M:%S"
    } else {
        "%Y-%m-%d %H:%M"
    })
    .to_string()
}

fn count(shown: &str) -> i64 {
    shown
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("not a count: {shown:?}"))
}

/// A signed number as the page writes changes: `+3`, `−2` (U+2212), `±0`, with a unit.
fn signed(shown: &str) -> f64 {
    let s = shown
        .trim_end_matches(" pp")
        .replace('−', "-")
        .replace(['±', '+', ','], "");
    s.parse()
        .unwrap_or_else(|_| panic!("not a signed number: {shown:?}"))
}

/// A count must be shown exactly; a rate (a fraction) as a percentage to 0.1, `—` for null.
fn assert_shown(what: &str, shown: &str, api: &Value, rate: bool) {
    if !rate {
        assert_eq!(count(shown), api.as_i64().unwrap(), "{what}");
        return;
    }
    match api.as_f64() {
        None => assert_eq!(shown, "—", "{what}: a null rate"),
        Some(r) => {
            let pct: f64 = shown
                .strip_suffix('%')
                .unwrap_or_else(|| panic!("{what}: not a percentage: {shown:?}"))
                .parse()
                .unwrap();
            assert!(
                (pct - r * 100.0).abs() <= 0.05 + 1e-9,
                "{what}: {shown} ≠ {r}"
            );
        }
    }
}

fn assert_change(dom: &Dom, id: &str, api: &Value, rate: bool) {
    let el = dom.one(&format!("{id}-change"));
    let arrow = dom.text(&format!("{id}-arrow"));
    let shown = el.text();
    let (direction, symbol) = match api.as_f64() {
        None => {
            assert_eq!(shown, "—", "{id}: no change without both rates");
            ("none", "·")
        }
        Some(c) => {
            let expected = if rate { c * 100.0 } else { c };
            let value = signed(&shown);
            assert!(
                (value - expected).abs() <= 0.05 + 1e-9,
                "{id}: {shown} ≠ {c}"
            );
            if rate {
                assert!(
                    shown.ends_with(" pp"),
                    "{id}: rates change in points: {shown}"
                );
            }
            match value.partial_cmp(&0.0).unwrap() {
                std::cmp::Ordering::Greater => ("up", "▲"),
                std::cmp::Ordering::Less => ("down", "▼"),
                std::cmp::Ordering::Equal => ("flat", "▶"),
            }
        }
    };
    assert_eq!(
        el.attr("data-direction").as_deref(),
        Some(direction),
        "{id}"
    );
    assert_eq!(arrow, symbol, "{id}");
}

/// Every card, the period and `asOf` on the page equal the overview's.
fn assert_overview(dom: &Dom, ov: &Value) {
    let range = |p: &Value| {
        format!(
            "{} – {}",
            p["from"].as_str().unwrap(),
            p["to"].as_str().unwrap()
        )
    };
    assert_eq!(dom.text("period"), range(&ov["period"]));
    assert_eq!(dom.text("previous-period"), range(&ov["previousPeriod"]));
    for (group, key, id, rate) in CARDS {
        let g = &ov[group];
        assert_shown(id, &dom.text(id), &g[key], rate);
        assert_shown(
            &format!("{id}-previous"),
            &dom.text(&format!("{id}-previous")),
            &g["previous"][key],
            rate,
        );
        assert_change(dom, id, &g["change"][key], rate);
    }
    // asOf: the page's own request, a moment before the test's.
    let as_of = dom.one("as-of");
    let at = as_of.attr("datetime").unwrap();
    let page_t = DateTime::parse_from_rfc3339(&at).unwrap();
    let api_t = DateTime::parse_from_rfc3339(ov["asOf"].as_str().unwrap()).unwrap();
    assert!(
        (api_t - page_t).num_seconds().abs() < 120,
        "{at} vs {api_t}"
    );
    assert_eq!(as_of.text(), utc8_clock(&at, true));
}

fn assert_daily(dom: &Dom, daily: &Value) {
    let items = daily["items"].as_array().unwrap();
    let rows = dom.all("daily-row");
    assert_eq!(rows.len(), items.len(), "one row per day");
    for (row, item) in rows.iter().zip(items) {
        assert_eq!(row.field("date").text(), item["date"].as_str().unwrap());
        for f in ["activeMembers", "activeProjects"] {
            assert_eq!(
                count(&row.field(f).text()),
                item[f].as_i64().unwrap(),
                "{f}"
            );
        }
    }
    // The chart draws a point per day for each of its two lines.
    let chart = dom.one("daily-chart");
    assert_eq!(chart.tag, "svg");
    assert_eq!(chart.find("class", "members").len(), items.len());
    assert_eq!(chart.find("class", "projects").len(), items.len());
    assert_eq!(chart.find("class", "line members").len(), 1);
    assert_eq!(chart.find("class", "line projects").len(), 1);
}

fn assert_tenants(rows: &[Element<'_>], api: &Value) {
    let items = api["items"].as_array().unwrap();
    assert_eq!(rows.len(), items.len(), "tenant rows: {api}");
    for (row, t) in rows.iter().zip(items) {
        assert_eq!(
            row.field("tenantId").text(),
            t["tenantId"].as_str().unwrap()
        );
        assert_eq!(row.field("name").text(), t["name"].as_str().unwrap());
        for f in ["authorized", "active"] {
            assert_eq!(count(&row.field(f).text()), t[f].as_i64().unwrap(), "{f}");
        }
        let cell = row.field("lastActiveAt");
        match t["lastActiveAt"].as_str() {
            None => assert_eq!(cell.text(), "never"),
            Some(at) => {
                let time = cell.first("time").expect("a <time>");
                assert_eq!(time.attr("datetime").as_deref(), Some(at));
                assert_eq!(time.text(), utc8_clock(at, false));
            }
        }
    }
}

fn assert_error(dom: &Dom, status: u16, api: &Value) {
    assert_eq!(dom.state(), "error");
    let err = dom.one("error");
    assert_eq!(err.attr("hidden"), None, "the error is visible");
    let text = err.text();
    let message = api["message"].as_str().unwrap();
    assert!(
        text.contains(&status.to_string()) && text.contains(message),
        "the page shows `{text}`, the API said {status} {api}"
    );
}

/// Three production tenants (one with a disabled user, names that need escaping) and a
/// sandbox tenant that must never show, with activity this week, nine days ago and 25 days
/// ago; a `stats:read` and an `activity:write` token.
async fn seed(env: &Env, kit: &Kit) -> (String, String) {
    let stats = token(env, "stats:read").await;
    let writer = token(env, "activity:write").await;

    // Three production tenants (one with a disabled user, names that need escaping) and a
    // sandbox tenant that must never show.
    tenant(
        kit,
        "dash-alpha",
        "Alpha 科技有限公司",
        false,
        &[("u1", true), ("u2", true), ("u3", true), ("u4", false)],
    )
    .await;
    tenant(
        kit,
        "dash-beta",
        "北京贝塔软件",
        false,
        &[("b1", true), ("b2", true)],
    )
    .await;
    tenant(
        kit,
        "dash-gamma",
        "Gamma & <Co> \"Ltd\"",
        false,
        &[("g1", true), ("g2", true)],
    )
    .await;
    tenant(kit, "dash-sandbox", "Sandbox", true, &[("s1", true)]).await;
    wait_until("the directory is applied", APPLY_TIMEOUT, || async {
        let ov = get(kit, "/api/v1/stats/overview?preset=7d", &stats).await;
        ov["members"]["authorized"] == 7 && ov["projects"]["opened"] == 3
    })
    .await;

    // Activity: this week u1, u2, u3 of alpha (and the disabled u4, the sandbox's s1); nine
    // days ago u1 and b1 (the previous week); 25 days ago b2. gamma never.
    let now = Utc::now();
    let at = |d: Days| (now - d).to_rfc3339_opts(SecondsFormat::Millis, true);
    let ev = |t: &str, u: &str, d: Days| json!({"tenantId": t, "userName": u, "kind": "use", "at": at(d)});
    let events = json!({"events": [
        ev("dash-alpha", "u1", Days::hours(1)), ev("dash-alpha", "u2", Days::days(2)),
        ev("dash-alpha", "u3", Days::days(3)), ev("dash-alpha", "u4", Days::hours(1)),
        ev("dash-sandbox", "s1", Days::hours(1)),
        ev("dash-alpha", "u1", Days::days(9)), ev("dash-beta", "b1", Days::days(9)),
        ev("dash-beta", "b2", Days::days(25)),
    ]});
    let r = kit
        .api(
            "POST",
            "/api/v1/activity",
            Some(&writer),
            &[],
            Some(&events.to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["accepted"], 8, "{:?}", r.body);
    assert_eq!(r.body["rejected"], json!([]), "{:?}", r.body);

    (stats, writer)
}

/// Scenario: the page's figures are the API's — cards with their previous period and change,
/// the daily series, the tenant table (sorted, filtered, paged) — for a preset and a custom
/// range; a bad token and an over-long range show the API's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium: .ci/run installs it"]
async fn dashboard_shows_what_the_statistics_api_says() {
    let mut browser = Browser::new();
    let env = Env::new("dashboard").await;
    let server = env.start("serve").await;
    let kit = server.kit();
    let (stats, writer) = seed(&env, &kit).await;

    let base = format!("{}/dashboard", kit.base_url());

    // 7 days: up (users), down (projects) and flat (authorised) arrows.
    let dom = browser.load(&format!("{base}#token={stats}&preset=7d"));
    assert_eq!(dom.state(), "ready", "{}", dom.html());
    assert!(
        !dom.html().contains(&stats),
        "the token is not left in the page"
    );
    let ov = get(&kit, "/api/v1/stats/overview?preset=7d", &stats).await;
    assert_eq!(
        (
            &ov["projects"]["active"],
            &ov["projects"]["previous"]["active"]
        ),
        (&json!(1), &json!(2)),
        "{ov}"
    );
    assert_eq!(
        (
            &ov["members"]["active"],
            &ov["members"]["previous"]["active"]
        ),
        (&json!(3), &json!(2)),
        "{ov}"
    );
    assert_overview(&dom, &ov);
    assert_eq!(
        dom.one("members-active-change")
            .attr("data-direction")
            .as_deref(),
        Some("up")
    );
    assert_eq!(
        dom.one("projects-active-change")
            .attr("data-direction")
            .as_deref(),
        Some("down")
    );
    assert_eq!(
        dom.one("members-authorized-change")
            .attr("data-direction")
            .as_deref(),
        Some("flat")
    );
    assert_daily(
        &dom,
        &get(&kit, "/api/v1/stats/daily?preset=7d", &stats).await,
    );
    let tenants = get(&kit, "/api/v1/stats/tenants?preset=7d", &stats).await;
    assert_eq!(tenants["items"].as_array().unwrap().len(), 3, "{tenants}");
    assert_tenants(&dom.all("tenant-row"), &tenants);
    assert!(!dom.html().contains("dash-sandbox"));
    assert_eq!(dom.one("more").attr("hidden").as_deref(), Some(""));
    assert_eq!(dom.one("error").attr("hidden").as_deref(), Some(""));
    assert_eq!(dom.one("preset-7d").attr("checked").as_deref(), Some(""));
    assert_eq!(dom.one("preset-custom").attr("checked"), None);

    // A custom range of 16 days ending five days ago.
    let (from, to) = (utc8_date(-20), utc8_date(-5));
    let q = format!("from={from}&to={to}");
    let dom = browser.load(&format!("{base}#token={stats}&{q}"));
    assert_eq!(dom.state(), "ready", "{}", dom.html());
    assert_eq!(
        dom.one("preset-custom").attr("checked").as_deref(),
        Some("")
    );
    assert_eq!(dom.one("from").attr("value"), Some(from.clone()));
    assert_eq!(dom.one("to").attr("value"), Some(to.clone()));
    let ov = get(&kit, &format!("/api/v1/stats/overview?{q}"), &stats).await;
    assert_eq!(ov["members"]["active"], 2, "{ov}");
    assert_eq!(ov["members"]["previous"]["active"], 1, "{ov}");
    assert_overview(&dom, &ov);
    assert_daily(
        &dom,
        &get(&kit, &format!("/api/v1/stats/daily?{q}"), &stats).await,
    );
    assert_tenants(
        &dom.all("tenant-row"),
        &get(&kit, &format!("/api/v1/stats/tenants?{q}"), &stats).await,
    );

    // Sorted by active users, descending, two rows a page: the first page and a "more".
    let dom = browser.load(&format!(
        "{base}#token={stats}&preset=30d&sort=-active&limit=2"
    ));
    assert_eq!(dom.state(), "ready", "{}", dom.html());
    let page = get(
        &kit,
        "/api/v1/stats/tenants?preset=30d&sort=-active&limit=2",
        &stats,
    )
    .await;
    assert!(page["nextCursor"].is_string(), "{page}");
    assert_tenants(&dom.all("tenant-row"), &page);
    assert_eq!(
        dom.one("more").attr("hidden"),
        None,
        "a next page is offered"
    );
    let sorted = |key: &str| dom.find("data-key", key)[0].attr("aria-sort");
    assert_eq!(sorted("active").as_deref(), Some("descending"));
    assert_eq!(sorted("tenantId").as_deref(), Some("none"));

    // Only tenants never active.
    let dom = browser.load(&format!("{base}#token={stats}&preset=7d&neverActive=true"));
    assert_eq!(dom.state(), "ready", "{}", dom.html());
    let never = get(
        &kit,
        "/api/v1/stats/tenants?preset=7d&neverActive=true",
        &stats,
    )
    .await;
    assert_eq!(never["items"][0]["tenantId"], "dash-gamma", "{never}");
    assert_tenants(&dom.all("tenant-row"), &never);
    assert_eq!(dom.one("never-active").attr("checked").as_deref(), Some(""));

    // A range over 30 days: the API's 400, shown.
    let q = format!("from={}&to={}", utc8_date(-40), utc8_date(-5));
    let dom = browser.load(&format!("{base}#token={stats}&{q}"));
    let r = kit
        .api(
            "GET",
            &format!("/api/v1/stats/overview?{q}"),
            Some(&stats),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains("at most 30 days"));
    assert_error(&dom, 400, &r.body);
    assert!(
        dom.find("id", "results")[0].attr("hidden").is_some(),
        "no stale figures"
    );

    // A bad token, and a token without `stats:read`: the API's 401 / 403, and the sign-in form.
    for (bad, status) in [
        ("kst_000000000000_not-a-token".to_owned(), 401),
        (writer.clone(), 403),
    ] {
        let dom = browser.load(&format!("{base}#token={bad}&preset=7d"));
        let r = kit
            .api(
                "GET",
                "/api/v1/stats/overview?preset=7d",
                Some(&bad),
                &[],
                None,
            )
            .await;
        assert_eq!(r.status, status, "{:?}", r.body);
        assert_error(&dom, status, &r.body);
        assert_eq!(
            dom.find("id", "login")[0].attr("hidden"),
            None,
            "the sign-in form"
        );
    }

    // Without a token: the sign-in form, and nothing asked of the API.
    let dom = browser.load(&base);
    assert_eq!(dom.state(), "login");
    assert_eq!(dom.find("id", "login")[0].attr("hidden"), None);

    // The page itself: no token needed, strict policy, never cached.
    let r = kit.api("GET", "/dashboard", None, &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.starts_with("default-src 'none'; script-src 'sha256-"),
        "{csp}"
    );
    assert!(
        csp.contains("connect-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    env.finish().await;
}

/// The page is settled and shows what the API answers for period `q`: the overview, the
/// daily series, and the tenants table (with the table's own `table` parameters).
async fn assert_view(dom: &Dom, kit: &Kit, token: &str, q: &str, table: &str) {
    assert_eq!(dom.state(), "ready", "{q}: {}", dom.html());
    let api = |what: &str| format!("/api/v1/stats/{what}?{q}");
    assert_overview(dom, &get(kit, &api("overview"), token).await);
    assert_daily(dom, &get(kit, &api("daily"), token).await);
    let tenants = get(kit, &format!("{}{table}", api("tenants")), token).await;
    assert_tenants(&dom.all("tenant-row"), &tenants);
}

/// Sets a date input as a date picker would: its value, then the `input` event.
async fn set_date(page: &mut Page, id: &str, date: &str) {
    page.eval(&format!(
        "(() => {{ const e = document.getElementById('{id}'); e.value = '{date}'; \
         e.dispatchEvent(new Event('input', {{ bubbles: true }})); }})()"
    ))
    .await;
}

/// Scenario: a person signs in by typing the token and uses every control with the mouse —
/// the presets, a custom range (and the page's own check of its length), sorting both ways,
/// the "never active" filter, "More", signing out — and after each step the page shows what
/// the statistics API answers for the same view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium: .ci/run installs it"]
async fn dashboard_controls_work_with_the_mouse() {
    let env = Env::new("dashboard-clicks").await;
    let server = env.start("serve").await;
    let kit = server.kit();
    let (stats, _) = seed(&env, &kit).await;
    let base = format!("{}/dashboard", kit.base_url());
    let tenants_of = |q: &str| format!("/api/v1/stats/tenants?{q}");

    // Sign in.
    let mut page = Page::open(&base).await;
    assert_eq!(page.settle().await.state(), "login");
    page.click("#token").await;
    page.type_text(&stats).await;
    let dom = page
        .click_and_settle("#login-form button[type=submit]")
        .await;
    assert_eq!(dom.state(), "ready", "{}", dom.html());
    assert_overview(
        &dom,
        &get(&kit, "/api/v1/stats/overview?preset=7d", &stats).await,
    );
    assert_tenants(
        &dom.all("tenant-row"),
        &get(&kit, &tenants_of("preset=7d"), &stats).await,
    );

    // The presets.
    for preset in ["30d", "day", "7d", "30d"] {
        let dom = page
            .click_and_settle(&format!("[data-testid=preset-{preset}]"))
            .await;
        assert_view(&dom, &kit, &stats, &format!("preset={preset}"), "").await;
    }

    // A column header sorts ascending, a second click descending.
    for (sort, aria) in [("active", "ascending"), ("-active", "descending")] {
        let dom = page
            .click_and_settle("#tenants th[data-key=active] button")
            .await;
        assert_tenants(
            &dom.all("tenant-row"),
            &get(
                &kit,
                &tenants_of(&format!("preset=30d&sort={sort}")),
                &stats,
            )
            .await,
        );
        let header = dom.find("data-key", "active")[0].attr("aria-sort");
        assert_eq!(header.as_deref(), Some(aria));
    }

    // Only tenants never active, and back.
    let dom = page.click_and_settle("[data-testid=never-active]").await;
    let never = get(
        &kit,
        &tenants_of("preset=30d&sort=-active&neverActive=true"),
        &stats,
    )
    .await;
    assert_eq!(never["items"][0]["tenantId"], "dash-gamma", "{never}");
    assert_tenants(&dom.all("tenant-row"), &never);
    let dom = page.click_and_settle("[data-testid=never-active]").await;
    assert_tenants(
        &dom.all("tenant-row"),
        &get(&kit, &tenants_of("preset=30d&sort=-active"), &stats).await,
    );

    // Two rows a page (the view's address sets the page size), then "More" for the rest.
    let dom = page
        .reload_at(&format!("{base}#preset=30d&sort=-active&limit=2"))
        .await;
    let q = "preset=30d&sort=-active&limit=2";
    let first = get(&kit, &tenants_of(q), &stats).await;
    assert_tenants(&dom.all("tenant-row"), &first);
    let cursor = first["nextCursor"].as_str().expect("a second page");
    let second = get(&kit, &tenants_of(&format!("{q}&cursor={cursor}")), &stats).await;
    let dom = page.click_and_settle("[data-testid=more]").await;
    let mut both = first["items"].as_array().unwrap().clone();
    both.extend(second["items"].as_array().unwrap().iter().cloned());
    assert_eq!(both.len(), 3);
    assert_tenants(&dom.all("tenant-row"), &json!({ "items": both }));
    assert_eq!(
        dom.one("more").attr("hidden").as_deref(),
        Some(""),
        "no more pages"
    );

    // A custom range of 16 days ending five days ago, picked and applied.
    page.click("[data-testid=preset-custom]").await;
    page.wait_for("!document.getElementById('custom-range').disabled")
        .await;
    let (from, to) = (utc8_date(-20), utc8_date(-5));
    set_date(&mut page, "from", &from).await;
    set_date(&mut page, "to", &to).await;
    let dom = page
        .click_and_settle("#custom-range button[type=submit]")
        .await;
    let q = format!("from={from}&to={to}");
    assert_view(&dom, &kit, &stats, &q, "&sort=-active&limit=2").await;

    // 36 days: the page says what is allowed before asking the API.
    set_date(&mut page, "from", &utc8_date(-40)).await;
    page.click("#custom-range button[type=submit]").await;
    page.wait_for("!document.getElementById('error').hidden")
        .await;
    let error = page.dom_now().await.text("error");
    assert!(
        error.contains("36 days") && error.contains("at most 30 days"),
        "{error}"
    );

    // Sign out: the sign-in form, and the token is gone from the tab.
    page.click("#sign-out").await;
    page.wait_for("!document.getElementById('login').hidden")
        .await;
    let stored = page
        .eval("JSON.stringify(Object.keys(sessionStorage))")
        .await;
    assert_eq!(stored, json!("[]"));
    drop(page);
    env.finish().await;
}
