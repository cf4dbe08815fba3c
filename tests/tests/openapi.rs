//! End-to-end: the OpenAPI document of `/api/v1` against the real binary, checked by two tools
//! nobody here wrote — `openapi-spec-validator` (the document is valid OpenAPI 3.1) and
//! `schemathesis` (generated requests, valid and invalid, to every operation: no answer may be
//! a 5xx, and every answer's status, content type and body must be what the document says).
//!
//! Like `e2e.rs`, it runs on the embedded defaults, or on PostgreSQL / RabbitMQ when
//! `KITSYNC_TEST_DATABASE_URL` / `KITSYNC_TEST_AMQP_URL` are set. It needs the tools:
//! `.ci/openapi/install.sh` installs them into a virtualenv, and `.ci/run` runs this test with
//! `KITSYNC_CI_OPENAPI_TOOLS` set to its `bin` directory; without them it is ignored rather
//! than passed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use tests::payload::{self, time, User};
use tests::{
    run_tool, wait_until, Env, Kit, ALL_ORG_SYNC, APPLICATION_SYNC, AUTH_SYNC, TENANT_SYNC,
};

const APPLY_TIMEOUT: Duration = Duration::from_secs(45);
/// Generated cases per operation and phase: about 1 800 requests in all, under a minute.
const EXAMPLES: &str = "50";
/// Fixed, so that a CI failure can be replayed (`--seed 1`).
const SEED: &str = "1";
/// The one operation schemathesis leaves out (see its run).
const NOT_FUZZED: &str = "adminRevokeToken";

async fn send_ok(kit: &Kit, kind: &str, body: &str) {
    let r = kit.send(kind, body).await;
    assert_eq!(r.code, "000000", "{kind}: {r:?}");
}

/// The part of schemathesis's report that says what failed (capped), or all of it.
fn failures(out: &str) -> &str {
    let start = out.find("FAILURES").unwrap_or(0);
    let end = out.find("SUMMARY").unwrap_or(out.len()).max(start);
    let part = &out[start..end];
    match part.char_indices().nth(8_000) {
        Some((cut, _)) => &part[..cut],
        None => part,
    }
}

/// Scenario: a tenant built by signed callbacks (departments with an orphan, two apps, users
/// of both roles, some disabled), a test tenant, activity; then the validator on the served
/// document and schemathesis on the live server with an `admin` token (every operation but
/// token revocation). Path parameters are mostly drawn from the seeded tenant, users and
/// apps (so that the 200 answers are checked against their schemas), otherwise generated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs openapi-spec-validator and schemathesis: .ci/openapi/install.sh, then KITSYNC_CI_OPENAPI_TOOLS=<venv>/bin"]
async fn the_live_api_answers_as_its_openapi_document_says() {
    let tools = PathBuf::from(std::env::var("KITSYNC_CI_OPENAPI_TOOLS").expect(
        "KITSYNC_CI_OPENAPI_TOOLS: the bin directory of a virtualenv with openapi-spec-validator \
         and schemathesis",
    ));
    let env = Env::new("openapi").await;
    let server = env.start("serve").await;
    let kit = server.kit();

    // The seed, through signed callbacks.
    let t = "oa-acme";
    let sandbox = "oa-sandbox";
    send_ok(
        &kit,
        TENANT_SYNC,
        &payload::tenant(t, "Acme", 1, 0, &time(0)),
    )
    .await;
    send_ok(
        &kit,
        TENANT_SYNC,
        &payload::tenant(sandbox, "Sandbox", 1, 1, &time(0)),
    )
    .await;
    send_ok(
        &kit,
        APPLICATION_SYNC,
        &payload::app(t, "app-a", "client-a", "c2VjcmV0", &time(1)),
    )
    .await;
    send_ok(
        &kit,
        ALL_ORG_SYNC,
        &payload::all_org(
            t,
            &[
                ("D1", "Head office", ""),
                ("D2", "Engineering", "D1"),
                ("D3", "Sales", "D1"),
                ("D9", "Lost", "GONE"),
            ],
            &time(2),
        ),
    )
    .await;
    let users = [
        User::new("alice", "D1", "admin", true),
        User::new("bob", "D2", "user", true),
        User::new("carol", "D2", "user", false),
        User::new("dave", "D3", "user", true),
    ];
    send_ok(
        &kit,
        AUTH_SYNC,
        &payload::auth(t, "app-a", 1, &users, &time(3)),
    )
    .await;
    send_ok(
        &kit,
        AUTH_SYNC,
        &payload::auth(t, "app-b", 1, &users[..2], &time(4)),
    )
    .await;
    // `admin`: every operation, /admin/v1 included, is exercised with a token that may call
    // it (schemathesis warns about operations that answer only 401/403).
    let tok = env.create_token("openapi", "admin", None).await;
    let members = format!("/api/v1/tenants/{t}/members");
    wait_until("the seed is applied", APPLY_TIMEOUT, || async {
        let (_, body) = kit.api_get(&members, Some(&tok)).await;
        let (_, depts) = kit
            .api_get(&format!("/api/v1/tenants/{t}/departments"), Some(&tok))
            .await;
        body["items"].as_array().map(Vec::len) == Some(users.len())
            && depts["items"].as_array().map(Vec::len) == Some(4)
    })
    .await;
    let now = chrono::Utc::now();
    let events: Vec<Value> = users
        .iter()
        .take(2)
        .map(|u| json!({"tenantId": t, "userName": u.user_name, "kind": "use", "at": now.to_rfc3339()}))
        .collect();
    let r = kit
        .api(
            "POST",
            "/api/v1/activity",
            Some(&tok),
            &[],
            Some(&json!({ "events": events }).to_string()),
        )
        .await;
    assert_eq!(
        (r.status, &r.body["accepted"]),
        (200, &json!(2)),
        "{:?}",
        r.body
    );

    // What /admin/v1 operates on, whose ids become the likely path parameters: a held plan (a
    // full sync keeping one of the four departments), a dead letter (a message no worker can
    // decode), a webhook endpoint and an OIDC client.
    send_ok(
        &kit,
        ALL_ORG_SYNC,
        &payload::all_org(t, &[("D1", "Head office", "")], &time(5)),
    )
    .await;
    env.test_queue()
        .await
        .publish(kitsync_queue::OutgoingMessage {
            message_id: "openapi-undecodable".into(),
            body: b"not a callback".to_vec(),
            replay: None,
        })
        .await
        .unwrap();
    wait_until(
        "the plan is held and the message dead-lettered",
        APPLY_TIMEOUT,
        || async {
            env.scalar("SELECT COUNT(*) FROM org_plans WHERE status = 'held'")
                .await
                == 1
                && env.scalar("SELECT COUNT(*) FROM dead_letters").await == 1
        },
    )
    .await;
    let plan = env.scalar("SELECT id FROM org_plans").await;
    let dead_letter = env.scalar("SELECT id FROM dead_letters").await;
    let first_line = |out: std::process::Output| {
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_owned()
    };
    let webhook = first_line(
        env.cli_ok(&["webhooks", "add", "https://hooks.example.com/kit"])
            .await,
    );
    let client = first_line(
        env.cli_ok(&[
            "oidc-client",
            "add",
            "--app",
            "app-a",
            "--redirect-uri",
            "https://app.example.com/cb",
        ])
        .await,
    );

    // The document: public, and valid OpenAPI 3.1.
    let doc = kit
        .api("GET", "/api/v1/openapi.json", None, &[], None)
        .await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.header("content-type"), Some("application/json"));
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3.1."));
    let file = env.dir().join("openapi.json");
    std::fs::write(&file, &doc.raw).unwrap();
    let (status, out) = run_tool(
        &tools.join("openapi-spec-validator"),
        &[file.to_str().unwrap()],
        Some(env.dir()),
    );
    assert!(status.success(), "openapi-spec-validator:\n{out}");
    println!("openapi-spec-validator: {}", out.trim());

    // schemathesis on the live server. Its configuration: no example database left behind,
    // and the seeded names as the likely values of the path parameters. Four operations only
    // warn about authentication: the first decision consumes the one held plan (so the other
    // answers 404 or 409), and a token or client needs values random data rarely hits (known
    // scopes, an https or loopback redirect URI); tests/admin.rs and tests/openapi.rs of
    // crates/kitsync-api cover their successes.
    let config = env.dir().join("schemathesis.toml");
    let names = |list: &[&str]| {
        list.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let user_names: Vec<&str> = users.iter().map(|u| u.user_name.as_str()).collect();
    std::fs::write(
        &config,
        format!(
            "[generation]\ndatabase = \"none\"\n\n\
             [dictionaries.tenants]\nvalues = [{}]\n\
             [dictionaries.users]\nvalues = [{}]\n\
             [dictionaries.apps]\nvalues = [{}]\n\
             [dictionaries.plans]\nvalues = [{plan}]\n\
             [dictionaries.deadletters]\nvalues = [{dead_letter}]\n\
             [dictionaries.webhooks]\nvalues = [{}]\n\
             [dictionaries.clients]\nvalues = [{}]\n\n\
             [parameters]\n\
             \"path.tenantId\" = {{ dictionary = \"tenants\", probability = 0.8 }}\n\
             \"path.userName\" = {{ dictionary = \"users\", probability = 0.8 }}\n\
             \"path.appId\" = {{ dictionary = \"apps\", probability = 0.8 }}\n\
             \"path.planId\" = {{ dictionary = \"plans\", probability = 0.8 }}\n\
             \"path.deadLetterId\" = {{ dictionary = \"deadletters\", probability = 0.8 }}\n\
             \"path.webhookId\" = {{ dictionary = \"webhooks\", probability = 0.8 }}\n\
             \"path.clientId\" = {{ dictionary = \"clients\", probability = 0.8 }}\n\n\
             [[operations]]\n\
             include-operation-id-regex = \"^(adminApprovePlan|adminRejectPlan|adminCreateToken|adminCreateOidcClient)$\"\n\
             warnings = [\"missing_auth\"]\n",
            names(&[t, sandbox]),
            names(&user_names),
            names(&["app-a", "app-b"]),
            names(&[&webhook]),
            names(&[&client]),
        ),
    )
    .unwrap();
    // The document as a file and the server as `--url`: loaded from its URL, schemathesis
    // would leave that operation out.
    let base = kit.base_url().to_owned();
    let auth = format!("Authorization: Bearer {tok}");
    let started = std::time::Instant::now();
    let (status, out) = tokio::task::spawn_blocking({
        let tools = tools.clone();
        let dir = env.dir().to_path_buf();
        move || {
            run_tool(
                &tools.join("schemathesis"),
                &[
                    "--config-file",
                    config.to_str().unwrap(),
                    "--no-color",
                    "run",
                    file.to_str().unwrap(),
                    "--url",
                    &base,
                    "-H",
                    &auth,
                    "--checks",
                    "not_a_server_error,status_code_conformance,content_type_conformance,\
                     response_schema_conformance",
                    "--max-examples",
                    EXAMPLES,
                    "--seed",
                    SEED,
                    "--request-timeout",
                    "30",
                    // Revoking a token could revoke the one this run sends (a stateful link
                    // from the token list); crates/kitsync-api/tests/openapi.rs calls it.
                    "--exclude-operation-id",
                    NOT_FUZZED,
                ],
                Some(&dir),
            )
        }
    })
    .await
    .unwrap();
    let tested: usize = out
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("Tested:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let cases = out
        .lines()
        .map(str::trim)
        .find(|l| l.contains(" generated, "))
        .unwrap_or("?");
    println!(
        "schemathesis: {tested} operations, {cases} ({} s, seed {SEED})",
        started.elapsed().as_secs()
    );
    assert!(
        status.success() && out.contains("No issues found"),
        "schemathesis ({status}) found failures; replay with the same --seed:\n{}",
        failures(&out)
    );
    // Every documented operation was tested.
    let documented = doc.body["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum::<usize>();
    assert_eq!(tested, documented - 1, "all but {NOT_FUZZED}: {out}");
    drop(server);
    env.finish().await;
}
