//! The console (`/console`) in a real browser: headless chromium driven over WebDriver, against
//! a running `kitsync serve` on the setup the environment names (the embedded defaults, or
//! PostgreSQL + RabbitMQ). An operator walks a tenant's department tree, opens a department's
//! members and a member's changes, approves a held plan and replays a dead letter, each
//! confirmed in the page's dialog; after each click the page and the database agree. A
//! `directory:read` token then sees the directory and no action, and `/admin/v1` refuses it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use std::time::Duration;
use tests::browser::{Dom, Page};
use tests::payload::{self, time, User};
use tests::{wait_until, Env, Kit, ALL_ORG_SYNC, AUTH_SYNC, POISON_USER, TENANT_SYNC};

const WAIT: Duration = Duration::from_secs(45);
const T: &str = "t-console";

async fn send_ok(kit: &Kit, kind: &str, body: &str) {
    let r = kit.send(kind, body).await;
    assert_eq!(r.code, "000000", "{kind}: {r:?}");
}

/// Tenant `T` ("Acme") with root `r` and departments `c00`…`c10` under it; `u1`, `u2` in
/// `c03` and `u3` in `r`; then a full sync keeping `r` and `c00` only, which the
/// mass-deletion guard holds; and a poison authorisation, dead-lettered. Returns once all of
/// it is in the database.
async fn seed(env: &Env, kit: &Kit) {
    send_ok(
        kit,
        TENANT_SYNC,
        &payload::tenant(T, "Acme", 1, 0, &time(0)),
    )
    .await;
    let kids: Vec<(String, String)> = (0..=10)
        .map(|i| (format!("c{i:02}"), format!("Team {i:02}")))
        .collect();
    let mut orgs: Vec<(&str, &str, &str)> = vec![("r", "Headquarters", "")];
    orgs.extend(kids.iter().map(|(c, n)| (c.as_str(), n.as_str(), "r")));
    send_ok(kit, ALL_ORG_SYNC, &payload::all_org(T, &orgs, &time(1))).await;
    let users = [
        User::new("u1", "c03", "admin", true),
        User::new("u2", "c03", "user", false),
        User::new("u3", "r", "user", true),
    ];
    send_ok(
        kit,
        AUTH_SYNC,
        &payload::auth(T, "app-a", 1, &users, &time(2)),
    )
    .await;
    send_ok(
        kit,
        ALL_ORG_SYNC,
        &payload::all_org(T, &orgs[..2], &time(3)),
    )
    .await;
    let poison = [User::new(POISON_USER, "c00", "user", true)];
    send_ok(
        kit,
        AUTH_SYNC,
        &payload::auth(T, "app-a", 1, &poison, &time(4)),
    )
    .await;
    wait_until(
        "the seed is applied, held and dead-lettered",
        WAIT,
        || async {
            env.live_authorizations().await >= 3
                && env
                    .scalar("SELECT COUNT(*) FROM org_plans WHERE status = 'held'")
                    .await
                    == 1
                && env.scalar("SELECT COUNT(*) FROM dead_letters").await == 1
        },
    )
    .await;
}

/// The `data-testid`s of the elements whose test id starts with `prefix`, in page order.
fn ids(dom: &Dom, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = dom.html();
    let needle = format!("data-testid=\"{prefix}");
    while let Some(at) = rest.find(&needle) {
        let tail = &rest[at + "data-testid=\"".len()..];
        let end = tail.find('"').unwrap();
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// Clicks `selector`, which opens the confirmation dialog, then its "yes"; the settled DOM.
async fn confirm(page: &mut Page, selector: &str) -> Dom {
    page.click(selector).await;
    page.wait_for("document.getElementById('confirm').open")
        .await;
    page.click_and_settle("[data-testid=confirm-yes]").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium: .ci/run installs it"]
async fn an_operator_walks_the_directory_and_decides_from_the_console() {
    let mut env = Env::new("console").await;
    env.queue.max_attempts = 2;
    env.queue.retry_min_delay_ms = 100;
    env.queue.retry_max_delay_ms = 200;
    env.install_poison_trigger().await;
    let server = env.start("serve").await;
    let kit = server.kit();
    seed(&env, &kit).await;
    let admin = env.create_token("ops", "admin", None).await;
    let reader = env.create_token("support", "directory:read", None).await;
    let console = format!("{}/console", kit.base_url());

    // Signed in by the fragment: an operator.
    let mut page = Page::open(&format!("{console}#token={admin}")).await;
    let dom = page.settle().await;
    assert_eq!(dom.state(), "ready", "{}", dom.html());
    assert_eq!(
        page.eval("document.body.dataset.mode").await,
        "operator",
        "an admin token operates"
    );
    assert!(
        !page
            .eval("location.hash")
            .await
            .as_str()
            .unwrap()
            .contains("kst_"),
        "the token leaves the address bar"
    );

    // The tenant search is the API's.
    page.click("[data-testid=tenant-search]").await;
    page.type_text("zzz").await;
    page.wait_for("document.querySelectorAll('#tenants tr').length === 0")
        .await;
    page.eval(
        "(() => { const s = document.getElementById('tenant-search'); s.value = 'ACME'; \
         s.dispatchEvent(new Event('input')); })()",
    )
    .await;
    page.wait_for(&format!(
        "document.querySelector('[data-testid=tenant-{T}]') !== null"
    ))
    .await;
    page.settle().await;

    // The tenant, then the tree's first level: the root and its member count.
    let dom = page
        .click_and_settle(&format!("[data-testid=tenant-{T}]"))
        .await;
    assert_eq!(ids(&dom, "dept-"), ["dept-r"], "{}", dom.html());
    assert_eq!(dom.text("count-r"), "1 member");
    // Expanding it loads its children (one level, with counts from the same query).
    let dom = page.click_and_settle("[data-testid=toggle-r]").await;
    let shown = ids(&dom, "dept-");
    let live = env
        .strings(&format!(
            "SELECT org_code FROM departments WHERE tenant_id = '{T}' AND deleted = FALSE \
             ORDER BY org_code"
        ))
        .await;
    let mut sorted = shown
        .iter()
        .map(|d| d["dept-".len()..].to_owned())
        .collect::<Vec<_>>();
    sorted.sort();
    assert_eq!(sorted, live, "the tree shows the live departments");
    assert_eq!(dom.text("count-c03"), "2 members");

    // A department's members, with their apps; then one member's changes.
    let dom = page.click_and_settle("[data-testid=open-c03]").await;
    let rows: Vec<String> = ids(&dom, "member-u").into_iter().collect();
    assert_eq!(rows, ["member-u1", "member-u2"]);
    let in_db = env
        .strings(&format!(
            "SELECT user_name FROM members WHERE tenant_id = '{T}' AND org_code = 'c03' \
             AND deleted = FALSE ORDER BY user_name"
        ))
        .await;
    assert_eq!(in_db, ["u1", "u2"]);
    let u2 = dom.one("member-u2");
    assert!(
        u2.field("apps").text().contains("app-a (user, disabled)"),
        "{}",
        u2.text()
    );
    let dom = page
        .click_and_settle("[data-testid=member-u1] button")
        .await;
    assert_eq!(dom.text("member-name"), "u1");
    assert!(
        dom.text("changes").contains("member.authorized"),
        "{}",
        dom.text("changes")
    );

    // The held plan: its deletions, then approved after the dialog.
    let plan_id = env
        .scalar("SELECT id FROM org_plans WHERE status = 'held'")
        .await;
    let dom = page.click_and_settle("[data-testid=tab-plans]").await;
    assert_eq!(
        ids(&dom, "plan-"),
        [
            format!("plan-{plan_id}"),
            "plan-deletes".into(),
            "plan-snapshot".into()
        ]
    );
    let dom = page
        .click_and_settle(&format!("[data-testid=show-plan-{plan_id}]"))
        .await;
    let deletes = dom.text("plan-deletes");
    assert!(
        deletes.contains("c03") && deletes.contains("Team 03"),
        "{deletes}"
    );
    // Cancelling changes nothing.
    page.click("[data-testid=approve]").await;
    page.wait_for("document.getElementById('confirm').open")
        .await;
    page.click("[data-testid=confirm-no]").await;
    page.wait_for("!document.getElementById('confirm').open")
        .await;
    assert_eq!(
        env.scalar(&format!(
            "SELECT COUNT(*) FROM org_plans WHERE id = {plan_id} AND status = 'held'"
        ))
        .await,
        1
    );
    let dom = confirm(&mut page, "[data-testid=approve]").await;
    assert_eq!(dom.state(), "ready", "{}", dom.html());
    assert!(
        dom.text("notice").contains("approved"),
        "{}",
        dom.text("notice")
    );
    assert!(ids(&dom, "plan-")
        .iter()
        .all(|i| !i.starts_with(&format!("plan-{plan_id}"))));
    assert_eq!(
        env.strings(&format!(
            "SELECT status FROM org_plans WHERE id = {plan_id}"
        ))
        .await,
        ["approved"]
    );
    assert_eq!(
        env.strings(&format!(
            "SELECT org_code FROM departments WHERE tenant_id = '{T}' AND deleted = FALSE \
             ORDER BY org_code"
        ))
        .await,
        ["c00", "r"]
    );

    // The dead letter: replayed once the cause is gone, and then applied.
    let dl = env.scalar("SELECT id FROM dead_letters").await;
    let dom = page.click_and_settle("[data-testid=tab-deadletters]").await;
    assert!(
        ids(&dom, "dl-").contains(&format!("dl-{dl}")),
        "{}",
        dom.html()
    );
    let dom = page
        .click_and_settle(&format!("[data-testid=dl-show-{dl}]"))
        .await;
    assert!(dom.text("dl-body").contains(POISON_USER));
    env.drop_poison_trigger().await;
    let dom = confirm(&mut page, &format!("[data-testid=replay-{dl}]")).await;
    assert!(
        dom.text("notice").contains("replayed"),
        "{}",
        dom.text("notice")
    );
    assert_eq!(
        env.scalar(&format!(
            "SELECT COUNT(*) FROM dead_letters WHERE id = {dl} AND replayed_at IS NOT NULL"
        ))
        .await,
        1
    );
    wait_until("the replayed callback is applied", WAIT, || async {
        env.live_authorizations().await >= 4
    })
    .await;
    assert!(
        ids(&dom, "dl-").iter().all(|i| i != &format!("dl-{dl}")),
        "no longer pending"
    );
    // The audit log names the token behind both decisions.
    let (_, audit) = kit.api_get("/admin/v1/audit", Some(&admin)).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["tokenId"].is_string())
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["deadletter.replay", "plan.approve"]);
    drop(page);

    // A directory:read token: the directory, and no action anywhere.
    let mut page = Page::open(&format!("{console}#token={reader}")).await;
    let dom = page.settle().await;
    assert_eq!(dom.state(), "ready", "{}", dom.html());
    assert_eq!(page.eval("document.body.dataset.mode").await, "read-only");
    for tab in ["tab-plans", "tab-deadletters", "tab-webhooks"] {
        assert_eq!(
            page.eval(&format!(
                "document.querySelector('[data-testid={tab}]').hidden"
            ))
            .await,
            true,
            "{tab}"
        );
    }
    assert_eq!(
        page.eval("[...document.querySelectorAll('[data-admin]')].every((e) => e.hidden)")
            .await,
        true
    );
    let dom = page
        .click_and_settle(&format!("[data-testid=tenant-{T}]"))
        .await;
    assert_eq!(ids(&dom, "dept-"), ["dept-r"]);
    for (method, path) in [
        ("POST", format!("/admin/v1/plans/{plan_id}/reject")),
        ("POST", format!("/admin/v1/dead-letters/{dl}/replay")),
        ("GET", "/admin/v1/plans".to_owned()),
    ] {
        let r = kit.call(method, &path, Some(&reader)).await;
        assert_eq!(r.status, 403, "{method} {path}: {:?}", r.body);
    }
    drop(page);
    env.finish().await;
}
