//! How fast the console is on a large tenant, in headless chromium, next to the `/api/v1`
//! calls it makes (measured in the same run, from the same machine).
//!
//! A tenant of 10 000 departments in two shapes — a balanced tree (ten children a
//! department) and a flat one (one root over 9 999) — with 20 000 authorised members spread
//! over them, applied by a running `kitsync serve`. Then, in chromium: the console's first
//! paint and the time until it is usable (signed in, tenants listed), the tenant opened (its
//! tree's first level), and expanding the root; each next to the API calls behind it. Medians
//! of `ROUNDS`.
//!
//! ```sh
//! cargo build --release -p kitsync
//! KITSYNC_TEST_BIN=target/release/kitsync cargo run -p tests --example console_timings
//! ```
//! (on PostgreSQL + RabbitMQ: with `KITSYNC_TEST_DATABASE_URL` and `KITSYNC_TEST_AMQP_URL`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a measurement program: a failure is a panic

use kitsync_domain::{
    AuthChange, AuthOp, AuthUser, Command, FullOrgSnapshot, KitTime, Op, OrgInfo, TenantChange,
};
use std::time::Instant;
use tests::browser::Page;
use tests::Env;

const DEPARTMENTS: usize = 10_000;
const MEMBERS: usize = 20_000;
const ROUNDS: usize = 5;

fn tenant(t: &str, v: i64) -> Command {
    Command::Tenant(TenantChange {
        tenant_id: t.into(),
        instance_id: None,
        order_id: None,
        tenant_code: t.into(),
        name: format!("Tenant {t}"),
        domain_name: format!("https://{t}.example.com"),
        op: Op::Upsert,
        test: false,
        version: KitTime(v),
    })
}

/// Tenant `t` with 10 000 departments whose parent `parent(d)` names (`None`: a root), and
/// 20 000 members spread over them, in batches of 500.
fn directory(t: &str, parent: impl Fn(usize) -> Option<usize>) -> Vec<Command> {
    let mut out = vec![
        tenant(t, 1),
        Command::FullOrg(FullOrgSnapshot {
            tenant_id: t.into(),
            instance_id: None,
            orgs: (0..DEPARTMENTS)
                .map(|d| OrgInfo {
                    org_code: format!("d{d:05}"),
                    org_name: format!("Department {d}"),
                    parent_code: parent(d).map(|p| format!("d{p:05}")),
                })
                .collect(),
            test: false,
            version: KitTime(2),
        }),
    ];
    for (i, chunk) in (0..MEMBERS).collect::<Vec<_>>().chunks(500).enumerate() {
        out.push(Command::Auth(AuthChange {
            tenant_id: t.into(),
            instance_id: None,
            app_id: "app".into(),
            op: AuthOp::Add,
            users: chunk
                .iter()
                .map(|u| AuthUser {
                    org_code: Some(format!("d{:05}", u % DEPARTMENTS)),
                    ..AuthUser::named(format!("m{u:06}"))
                })
                .collect(),
            test: false,
            version: KitTime(3 + i as i64),
            time_stamp: None,
        }));
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Milliseconds from a click on `selector` until the page is settled again.
async fn click_ms(page: &mut Page, selector: &str) -> f64 {
    let sel = serde_json::to_string(selector).unwrap();
    let ms = page
        .eval(&format!(
            "new Promise((resolve) => {{
               const t0 = performance.now();
               const done = () => {{ if (document.body.dataset.state === 'ready') {{ observer.disconnect(); resolve(performance.now() - t0); }} }};
               const observer = new MutationObserver(done);
               observer.observe(document.body, {{ attributes: true, attributeFilter: ['data-state'] }});
               document.querySelector({sel}).click();
               done();
             }})"
        ))
        .await;
    ms.as_f64().unwrap()
}

/// Milliseconds one API GET takes from here (median of `ROUNDS`).
async fn api_ms(kit: &tests::Kit, path: &str, token: &str) -> f64 {
    let mut times = Vec::new();
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        let (status, _) = kit.api_get(path, Some(token)).await;
        assert_eq!(status, 200, "{path}");
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    median(times)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let env = Env::new("console-timings").await;
    for (t, shape) in [("balanced", 0), ("flat", 1)] {
        let parent = move |d: usize| match (shape, d) {
            (_, 0) => None,
            (0, d) => Some((d - 1) / 10),
            _ => Some(0),
        };
        env.store.apply_batch(&directory(t, parent)).await.unwrap();
    }
    let server = env.start("serve").await;
    let kit = server.kit();
    let admin = env.create_token("timings", "admin", None).await;
    let console = format!("{}/console", kit.base_url());
    println!(
        "kitsync console timings: {DEPARTMENTS} departments and {MEMBERS} members per tenant, \
         headless chromium, medians of {ROUNDS}, database {}",
        if env.is_postgres() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );

    // First paint and time to usable, on a fresh load each round (the token stays in the
    // tab's sessionStorage).
    let mut page = Page::open(&format!("{console}#token={admin}")).await;
    page.settle().await;
    let (mut fcp, mut usable) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        page.reload_at(&console).await;
        // Paint entries arrive after the frame is presented, maybe after the mark.
        page.wait_for(
            "performance.getEntriesByName('kitsync-ready').length > 0 \
             && performance.getEntriesByName('first-contentful-paint').length > 0",
        )
        .await;
        fcp.push(
            page.eval("performance.getEntriesByName('first-contentful-paint')[0].startTime")
                .await
                .as_f64()
                .unwrap(),
        );
        usable.push(
            page.eval("performance.getEntriesByName('kitsync-ready')[0].startTime")
                .await
                .as_f64()
                .unwrap(),
        );
    }
    let sign_in = api_ms(&kit, "/admin/v1/audit?limit=1", &admin).await
        + api_ms(&kit, "/api/v1/tenants?limit=100&includeTest=true", &admin).await;
    println!("  first contentful paint  {:>8.1} ms", median(fcp));
    println!(
        "  usable (tenants listed) {:>8.1} ms   its API calls: {sign_in:.1} ms (audit probe + tenants page)",
        median(usable)
    );

    for t in ["balanced", "flat"] {
        let (mut open, mut expand) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            page.reload_at(&console).await;
            open.push(click_ms(&mut page, &format!("[data-testid=tenant-{t}]")).await);
            expand.push(click_ms(&mut page, "[data-testid=toggle-d00000]").await);
        }
        let roots = api_ms(
            &kit,
            &format!("/api/v1/tenants/{t}/departments?parent=&limit=100&includeTest=true"),
            &admin,
        )
        .await;
        let kids = api_ms(
            &kit,
            &format!("/api/v1/tenants/{t}/departments?parent=d00000&limit=100&includeTest=true"),
            &admin,
        )
        .await;
        let shown = page
            .eval("document.querySelectorAll('#tree li[data-code]').length")
            .await;
        println!(
            "  {t:<8} open tenant    {:>8.1} ms   API (roots): {roots:.1} ms",
            median(open)
        );
        println!(
            "  {t:<8} expand root    {:>8.1} ms   API (children, first 100): {kids:.1} ms; {shown} departments shown",
            median(expand)
        );
    }
    drop(page);
    env.finish().await;
}
