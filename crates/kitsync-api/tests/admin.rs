//! `/admin/v1`, tried as an operator and as a caller who may not: held plans, dead letters,
//! tokens, webhooks, OIDC clients and the audit log that names the token behind each change.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use kitsync_api::ApiSettings;
use kitsync_domain::{
    AppChange, Command, FullOrgSnapshot, KitTime, Op, OrgInfo, QueuedCallback, Scope, SecretText,
};
use kitsync_queue::{OutgoingMessage, Queue, QueueSettings};
use kitsync_store::{Outcome, Store};
use serde_json::{json, Value};

/// `POST path` with a bearer token and a JSON body (`Null`: none).
async fn post(app: &axum::Router, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::post(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        })
        .unwrap();
    send(app, req).await
}

/// `DELETE path` with a bearer token.
async fn delete(app: &axum::Router, path: &str, token: &str) -> (StatusCode, Value) {
    let req = Request::delete(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    send(app, req).await
}

/// A full sync of tenant `t` at version `v` holding departments `codes` (named `Dept {c}`).
fn full(t: &str, v: i64, codes: &[&str]) -> Command {
    Command::FullOrg(FullOrgSnapshot {
        tenant_id: t.into(),
        instance_id: None,
        orgs: codes
            .iter()
            .map(|c| OrgInfo {
                org_code: (*c).into(),
                org_name: format!("Dept {c}"),
                parent_code: None,
            })
            .collect(),
        test: false,
        version: KitTime(v),
    })
}

/// Tenant `t` with ten departments `d0`…`d9`, and members `u1`, `u2` in `d3`; then a full
/// sync keeping only `d0` and `d1`, which the mass-deletion guard holds: its plan id.
async fn held_plan(store: &Store, t: &str, v: i64) -> i64 {
    let codes: Vec<String> = (0..10).map(|i| format!("d{i}")).collect();
    let refs: Vec<&str> = codes.iter().map(String::as_str).collect();
    store.apply(&tenant(t, false, v)).await.unwrap();
    store.apply(&full(t, v + 1, &refs)).await.unwrap();
    let mut auth = grant(t, &["u1", "u2"], v + 2, false);
    if let Command::Auth(a) = &mut auth {
        for u in &mut a.users {
            u.org_code = Some("d3".into());
        }
    }
    store.apply(&auth).await.unwrap();
    match store.apply(&full(t, v + 3, &["d0", "d1"])).await.unwrap() {
        Outcome::Held { plan_id } => plan_id,
        other => panic!("expected a held plan, got {other:?}"),
    }
}

/// The audit log, newest first.
async fn audit(app: &axum::Router, admin: &str) -> Vec<Value> {
    let (status, body) = get(app, "/admin/v1/audit?limit=100", admin).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"].as_array().unwrap().clone()
}

/// The token id of secret `kst_<id>_…`.
fn token_id(secret: &str) -> &str {
    &secret["kst_".len().."kst_".len() + 12]
}

#[tokio::test]
async fn admin_operations_need_an_admin_token_bound_to_no_tenant() {
    let (db, store) = seeded_store("t", &["u1"]).await;
    let app = kitsync_api::router(store.clone());
    let reader = token(&store, "reader", &[Scope::DirectoryRead], None).await;
    let bound = token(&store, "bound", &[Scope::Admin], Some("t")).await;
    let admin = token(&store, "ops", &[Scope::Admin], None).await;
    let reads = [
        "/admin/v1/plans",
        "/admin/v1/plans/1",
        "/admin/v1/dead-letters",
        "/admin/v1/webhooks",
        "/admin/v1/tokens",
        "/admin/v1/oidc-clients",
        "/admin/v1/audit",
    ];
    let writes = [
        "/admin/v1/plans/1/approve",
        "/admin/v1/plans/1/reject",
        "/admin/v1/dead-letters/1/replay",
        "/admin/v1/dead-letters/replay",
        "/admin/v1/webhooks/whk_x/retry",
        "/admin/v1/webhooks/whk_x/disable",
        "/admin/v1/tokens",
        "/admin/v1/tokens/abc/revoke",
        "/admin/v1/oidc-clients",
    ];
    for path in reads {
        let (status, body) = get(&app, path, "kst_nope").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        let (status, body) = get(&app, path, &reader).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("admin"),
            "{body}"
        );
        let (status, body) = get(&app, path, &bound).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("bound to no tenant"),
            "{body}"
        );
    }
    for path in writes {
        let (status, body) = post(&app, path, &reader, json!({"name": "x"})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
    }
    let (status, _) = delete(&app, "/admin/v1/oidc-clients/kc_x", &reader).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Refused callers changed nothing: one token made by the command line, per token.
    assert!(audit(&app, &admin)
        .await
        .iter()
        .all(|e| e["action"] == "token.create" && e["tokenId"].is_null()));
    db.cleanup().await;
}

#[tokio::test]
async fn held_plans_are_shown_with_their_deletions_and_decided_in_the_tokens_name() {
    let (db, store) = fresh_store().await;
    let app = kitsync_api::router(store.clone());
    let admin = token(&store, "ops console", &[Scope::Admin], None).await;
    let first = held_plan(&store, "t1", 10).await;
    let second = held_plan(&store, "t2", 10).await;

    let (status, page) = get(&app, "/admin/v1/plans?status=held", &admin).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let ids: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [first, second]);
    let (_, one_page) = get(&app, "/admin/v1/plans?status=held&limit=1", &admin).await;
    assert_eq!(one_page["items"].as_array().unwrap().len(), 1);
    let next = one_page["nextCursor"].as_str().unwrap();
    let (_, rest) = get(
        &app,
        &format!("/admin/v1/plans?status=held&limit=1&cursor={next}"),
        &admin,
    )
    .await;
    assert_eq!(rest["items"][0]["id"], second);
    assert!(rest["nextCursor"].is_null());

    let (status, plan) = get(&app, &format!("/admin/v1/plans/{first}"), &admin).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["tenantId"], "t1");
    assert_eq!(plan["status"], "held");
    assert_eq!(
        (plan["liveBefore"].as_i64(), plan["deleteCount"].as_i64()),
        (Some(10), Some(8))
    );
    let deletes = plan["deletes"].as_array().unwrap();
    assert_eq!(
        strs(&plan["deletes"], "orgCode"),
        ["d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9"]
    );
    assert_eq!(deletes[1]["orgName"], "Dept d3");
    assert_eq!(deletes[1]["memberCount"], 2);
    assert_eq!(deletes[0]["memberCount"], 0);
    assert_eq!(strs(&plan["snapshot"], "orgCode"), ["d0", "d1"]);

    let (status, approved) = post(
        &app,
        &format!("/admin/v1/plans/{first}/approve"),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["outcome"], "applied");
    assert_eq!(approved["plan"]["status"], "approved");
    let id = token_id(&admin);
    assert!(
        approved["plan"]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("token {id} (ops console)")),
        "{approved}"
    );
    let live = store.snapshot("t1").await.unwrap().departments;
    assert_eq!(
        live.iter().map(|d| d.org_code.as_str()).collect::<Vec<_>>(),
        ["d0", "d1"]
    );
    let (status, again) = post(
        &app,
        &format!("/admin/v1/plans/{first}/approve"),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert_eq!(again["code"], "conflict");

    let (status, rejected) = post(
        &app,
        &format!("/admin/v1/plans/{second}/reject"),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rejected}");
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(store.snapshot("t2").await.unwrap().departments.len(), 10);

    let (status, missing) = get(&app, "/admin/v1/plans/999999", &admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    assert_bad_params(
        &app,
        "/admin/v1/plans",
        &admin,
        &[
            ("status=pending", "status"),
            ("limit=0", "limit"),
            ("cursor=zz", "cursor"),
        ],
    )
    .await;
    let (status, bad) = get(&app, "/admin/v1/plans/abc", &admin).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert!(
        bad["message"].as_str().unwrap().starts_with("planId"),
        "{bad}"
    );

    let log = audit(&app, &admin).await;
    let decisions: Vec<(&str, &str, &str)> = log
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("plan."))
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["target"].as_str().unwrap(),
                e["tokenId"].as_str().unwrap(),
            )
        })
        .collect();
    let (first, second) = (first.to_string(), second.to_string());
    assert_eq!(
        decisions,
        [
            ("plan.reject", second.as_str(), id),
            ("plan.approve", first.as_str(), id)
        ]
    );
    db.cleanup().await;
}

#[tokio::test]
async fn tokens_are_issued_once_listed_and_revoked_at_once() {
    let (db, store) = seeded_store("t", &["u1"]).await;
    let app = kitsync_api::router(store.clone());
    let admin = token(&store, "ops", &[Scope::Admin], None).await;

    let (status, created) = post(
        &app,
        "/admin/v1/tokens",
        &admin,
        json!({"name": "reporting", "scopes": ["stats:read", "directory:read"], "tenantId": "t"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["token"]["id"].as_str().unwrap().to_owned();
    assert_eq!(token_id(&secret), id);
    assert_eq!(
        created["token"]["scopes"],
        json!(["directory:read", "stats:read"])
    );
    assert_eq!(created["token"]["tenantId"], "t");
    let (status, _) = get(&app, "/api/v1/tenants/t", &secret).await;
    assert_eq!(status, StatusCode::OK, "the new token works");

    let (_, list) = get(&app, "/admin/v1/tokens", &admin).await;
    let listed = list["items"].as_array().unwrap();
    assert!(listed
        .iter()
        .any(|t| t["id"] == id.as_str() && t["revokedAt"].is_null()));
    assert!(!list.to_string().contains(&secret), "no secret is listed");

    for (body, field) in [
        (json!({"name": "x", "scopes": ["root"]}), "scopes"),
        (json!({"name": "x", "scopes": []}), "scopes"),
        (json!({"name": " ", "scopes": ["admin"]}), "name"),
        (json!({"name": "x"}), "body"),
        (
            json!({"name": "x", "scopes": ["admin"], "tenantId": ""}),
            "tenantId",
        ),
        (
            json!({"name": "x", "scopes": ["admin"], "extra": 1}),
            "body",
        ),
    ] {
        let (status, err) = post(&app, "/admin/v1/tokens", &admin, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert!(
            err["message"].as_str().unwrap().starts_with(field),
            "{body}: {err}"
        );
    }

    let (status, revoked) = post(
        &app,
        &format!("/admin/v1/tokens/{id}/revoke"),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["revokedAt"].is_string());
    let (status, _) = get(&app, "/api/v1/tenants/t", &secret).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked at once");
    let (status, again) = post(
        &app,
        &format!("/admin/v1/tokens/{id}/revoke"),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    let (status, _) = post(&app, "/admin/v1/tokens/nope/revoke", &admin, Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let log = audit(&app, &admin).await;
    let by_api: Vec<(&str, &str)> = log
        .iter()
        .filter(|e| e["tokenId"] == token_id(&admin))
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        by_api,
        [("token.revoke", id.as_str()), ("token.create", id.as_str())]
    );
    assert!(
        !serde_json::to_string(&log).unwrap().contains(&secret),
        "no secret is audited"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn dead_letters_are_shown_redacted_and_replayed_once() {
    let (db, store) = fresh_store().await;
    let settings = QueueSettings {
        name: format!("kitsync.test.{}", uuid::Uuid::new_v4().simple()),
        poll_interval_ms: 20,
        ..QueueSettings::default()
    };
    let queue = Queue::connect(&settings, db.conn.clone()).await.unwrap();
    let app = kitsync_api::router_with(
        store.clone(),
        ApiSettings::default(),
        Some(queue.dead_letters()),
    );
    let admin = token(&store, "ops", &[Scope::Admin], None).await;

    // A poison message: an app sync whose secret must never be shown, and bytes that are no
    // JSON at all.
    let callback = QueuedCallback {
        message_id: "poison".into(),
        received_at_ms: 1,
        replay: None,
        command: Command::App(AppChange {
            tenant_id: "t9".into(),
            instance_id: None,
            app_id: "app".into(),
            client_id: "client".into(),
            client_secret: SecretText("sealed-secret-value".into()),
            secret_fp: None,
            op: Op::Upsert,
            test: false,
            version: KitTime(5),
        }),
    };
    for (id, body) in [
        ("poison", callback.to_bytes().unwrap()),
        ("garbage", b"\xff not json".to_vec()),
    ] {
        queue
            .publish(OutgoingMessage {
                message_id: id.into(),
                body,
                replay: None,
            })
            .await
            .unwrap();
    }
    let consumer = queue.consumer("test").await.unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(
            consumer
                .next_batch(2, std::time::Duration::from_millis(50))
                .await
                .unwrap(),
        );
    }
    for d in got {
        consumer.dead_letter(d, "boom: cannot apply").await.unwrap();
    }

    let (status, page) = get(&app, "/admin/v1/dead-letters", &admin).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let poison = items.iter().find(|d| d["messageId"] == "poison").unwrap();
    assert_eq!(
        (poison["kind"].as_str(), poison["tenantId"].as_str()),
        (Some("applicationSync"), Some("t9"))
    );
    assert!(poison["error"].as_str().unwrap().contains("boom"));
    assert!(poison["replayedAt"].is_null());
    let garbage = items.iter().find(|d| d["messageId"] == "garbage").unwrap();
    assert!(garbage["kind"].is_null() && garbage["tenantId"].is_null());
    let (_, one_page) = get(&app, "/admin/v1/dead-letters?limit=1", &admin).await;
    let next = one_page["nextCursor"].as_str().unwrap();
    let (_, rest) = get(
        &app,
        &format!("/admin/v1/dead-letters?limit=1&cursor={next}"),
        &admin,
    )
    .await;
    assert_ne!(rest["items"][0]["id"], one_page["items"][0]["id"]);

    let pid = poison["id"].as_i64().unwrap();
    let (status, shown) = get(&app, &format!("/admin/v1/dead-letters/{pid}"), &admin).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["body"]["command"]["clientSecret"], "[redacted]");
    assert!(!shown.to_string().contains("sealed-secret-value"));
    let gid = garbage["id"].as_i64().unwrap();
    let (_, shown) = get(&app, &format!("/admin/v1/dead-letters/{gid}"), &admin).await;
    assert!(shown["body"].is_null());
    assert!(shown["bodyText"].as_str().unwrap().contains("not json"));

    let (status, replayed) = post(
        &app,
        &format!("/admin/v1/dead-letters/{pid}/replay"),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{replayed}");
    assert!(replayed["deadLetter"]["replayedAt"].is_string());
    let back = consumer
        .next_batch(1, std::time::Duration::from_millis(50))
        .await
        .unwrap();
    let back = if back.is_empty() {
        consumer
            .next_batch(1, std::time::Duration::from_millis(500))
            .await
            .unwrap()
    } else {
        back
    };
    assert_eq!(back[0].message_id, "poison", "back on the queue");
    consumer.ack(&back).await.unwrap();
    let (status, again) = post(
        &app,
        &format!("/admin/v1/dead-letters/{pid}/replay"),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    let (status, all) = post(&app, "/admin/v1/dead-letters/replay", &admin, Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["replayed"], 1, "the garbage one was still pending");
    let (_, pending) = get(&app, "/admin/v1/dead-letters", &admin).await;
    assert!(pending["items"].as_array().unwrap().is_empty());
    let (_, replayed_list) = get(&app, "/admin/v1/dead-letters?state=replayed", &admin).await;
    assert_eq!(replayed_list["items"].as_array().unwrap().len(), 2);

    let log = audit(&app, &admin).await;
    let replays: Vec<(&str, Option<&str>)> = log
        .iter()
        .filter(|e| e["action"] == "deadletter.replay")
        .map(|e| (e["target"].as_str().unwrap(), e["tenantId"].as_str()))
        .collect();
    let (p, g) = (pid.to_string(), gid.to_string());
    assert_eq!(replays, [(g.as_str(), None), (p.as_str(), Some("t9"))]);
    assert!(log
        .iter()
        .all(|e| e["action"] != "deadletter.replay" || e["tokenId"] == token_id(&admin)));

    // A router without a queue says so instead of pretending there are none.
    let bare = kitsync_api::router(store.clone());
    let (status, body) = get(&bare, "/admin/v1/dead-letters", &admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    queue.delete_topology().await.unwrap();
    queue.close().await;
    db.cleanup().await;
}

#[tokio::test]
async fn oidc_clients_are_registered_listed_and_removed() {
    let (db, store) = fresh_store().await;
    let app = kitsync_api::router(store.clone());
    let admin = token(&store, "ops", &[Scope::Admin], None).await;
    let (status, created) = post(
        &app,
        "/admin/v1/oidc-clients",
        &admin,
        json!({"appId": "app-1", "redirectUris": ["https://app.example.com/cb"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["client"]["clientId"].as_str().unwrap().to_owned();
    let secret = created["clientSecret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("kcs_"));
    assert_eq!(created["client"]["public"], false);
    let (_, list) = get(&app, "/admin/v1/oidc-clients", &admin).await;
    assert_eq!(strs(&list["items"], "clientId"), [id.as_str()]);
    assert!(!list.to_string().contains(&secret));
    let (status, err) = post(
        &app,
        "/admin/v1/oidc-clients",
        &admin,
        json!({"appId": "app-1", "redirectUris": ["http://evil.example.com/cb"]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .starts_with("redirectUris[0]"),
        "{err}"
    );
    let (status, _) = delete(&app, &format!("/admin/v1/oidc-clients/{id}"), &admin).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = delete(&app, &format!("/admin/v1/oidc-clients/{id}"), &admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let actions: Vec<String> = audit(&app, &admin)
        .await
        .iter()
        .filter(|e| e["tokenId"] == token_id(&admin))
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["oidc_client.remove", "oidc_client.add"]);
    db.cleanup().await;
}

#[tokio::test]
async fn webhook_endpoints_are_listed_retried_disabled_and_enabled() {
    let (db, store) = fresh_store().await;
    let app = kitsync_api::router(store.clone());
    let admin = token(&store, "ops", &[Scope::Admin], None).await;
    let endpoint = store
        .create_webhook(&kitsync_store::NewWebhook {
            url: "https://hooks.example.com/kit".into(),
            sealed_secret: "sealed-webhook-secret".into(),
            tenant_id: Some("t".into()),
            types: Some(vec!["member".into()]),
            include_test: false,
            after: Some(0),
        })
        .await
        .unwrap();
    let id = endpoint.id.clone();
    let (status, list) = get(&app, "/admin/v1/webhooks", &admin).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(strs(&list["items"], "id"), [id.as_str()]);
    assert_eq!(list["items"][0]["state"], "active");
    assert_eq!(list["items"][0]["tenantId"], "t");
    assert!(
        !list.to_string().contains("sealed-webhook-secret"),
        "no secret is listed"
    );
    let (status, deliveries) =
        get(&app, &format!("/admin/v1/webhooks/{id}/deliveries"), &admin).await;
    assert_eq!(status, StatusCode::OK, "{deliveries}");
    assert!(deliveries["items"].as_array().unwrap().is_empty());
    assert_bad_params(
        &app,
        &format!("/admin/v1/webhooks/{id}/deliveries"),
        &admin,
        &[("limit=1001", "limit")],
    )
    .await;

    let (status, disabled) = post(
        &app,
        &format!("/admin/v1/webhooks/{id}/disable"),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(
        (status, disabled["state"].as_str()),
        (StatusCode::OK, Some("disabled")),
        "{disabled}"
    );
    let (status, refused) = post(
        &app,
        &format!("/admin/v1/webhooks/{id}/retry"),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a disabled endpoint is enabled, not retried: {refused}"
    );
    let (status, enabled) = post(
        &app,
        &format!("/admin/v1/webhooks/{id}/enable"),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(
        (status, enabled["state"].as_str()),
        (StatusCode::OK, Some("active")),
        "{enabled}"
    );
    let (status, retried) = post(
        &app,
        &format!("/admin/v1/webhooks/{id}/retry"),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    let (status, _) = post(
        &app,
        "/admin/v1/webhooks/whk_nope/retry",
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&app, "/admin/v1/webhooks/whk_nope/deliveries", &admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let actions: Vec<(String, Option<String>)> = audit(&app, &admin)
        .await
        .iter()
        .filter(|e| e["tokenId"] == token_id(&admin))
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["tenantId"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let t = Some("t".to_owned());
    assert_eq!(
        actions,
        [
            ("webhook.retry".to_owned(), t.clone()),
            ("webhook.enable".to_owned(), t.clone()),
            ("webhook.disable".to_owned(), t),
        ]
    );
    db.cleanup().await;
}
