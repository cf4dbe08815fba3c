//! SCIM group writes are capped (`kitsync_api::scim::MAX_*`): members per group, PATCH
//! operations per request, string lengths, ids in paths. Each cap answers 400 `invalidValue`
//! naming the attribute and the limit; a write just under each cap is accepted. A group of
//! the most members, written with many repeats, is stored once per member in first-seen
//! order. On SQLite, or PostgreSQL with `KITSYNC_TEST_DATABASE_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{fresh_store, send, strs, tenant, token};
use kitsync_api::scim::{MAX_GROUP_MEMBERS, MAX_ID_CHARS, MAX_PATCH_OPERATIONS, MAX_STRING_CHARS};
use kitsync_domain::Scope;
use kitsync_store::Store;
use serde_json::{json, Value};

const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

struct Scim {
    app: axum::Router,
    token: String,
    store: Store,
}

impl Scim {
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(format!("/scim/v2/t{path}"))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/scim+json");
        let req = match body {
            Some(b) => req.body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        send(&self.app, req.unwrap()).await
    }

    async fn create(&self, body: &Value) -> (StatusCode, Value) {
        self.call(Method::POST, "/Groups", Some(body)).await
    }

    async fn patch(&self, id: &str, ops: Vec<Value>) -> (StatusCode, Value) {
        let body = json!({"schemas": [PATCH_OP], "Operations": ops});
        self.call(Method::PATCH, &format!("/Groups/{id}"), Some(&body))
            .await
    }
}

async fn setup() -> (migrations::testing::TestDb, Scim) {
    let (db, store) = fresh_store().await;
    store.apply(&tenant("t", false, 1)).await.unwrap();
    let scopes = [Scope::DirectoryRead, Scope::DirectoryWrite];
    let scim = Scim {
        app: kitsync_api::router(store.clone()),
        token: token(&store, "scim", &scopes, None).await,
        store,
    };
    (db, scim)
}

fn group(name: &str, members: Vec<Value>) -> Value {
    json!({"schemas": [GROUP], "displayName": name, "members": members})
}

fn member(i: usize) -> Value {
    json!({"value": format!("u{i:05}")})
}

/// A 400 `invalidValue` whose detail names `attribute` and `limit`.
#[track_caller]
fn refused(answer: &(StatusCode, Value), attribute: &str, limit: usize) {
    let (status, body) = answer;
    assert_eq!(*status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["scimType"], "invalidValue", "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(attribute) && detail.contains(&limit.to_string()),
        "`{detail}` should name {attribute} and {limit}"
    );
}

#[tokio::test]
async fn a_full_group_written_with_repeats_is_stored_once_per_member_in_first_seen_order() {
    let (db, scim) = setup().await;
    // Every member once, then the first half again (with another type: the first stays).
    let mut members: Vec<Value> = (0..MAX_GROUP_MEMBERS).map(member).collect();
    members.extend(
        (0..MAX_GROUP_MEMBERS / 2).map(|i| json!({"value": format!("u{i:05}"), "type": "Group"})),
    );
    let (status, body) = scim.create(&group("big", members)).await;
    assert_eq!(status, StatusCode::CREATED, "{}", body["detail"]);
    let id = body["id"].as_str().unwrap().to_owned();
    let stored = scim.store.isv_group("t", &id).await.unwrap().unwrap();
    let values: Vec<String> = stored.members.iter().map(|m| m.value.clone()).collect();
    let expected: Vec<String> = (0..MAX_GROUP_MEMBERS).map(|i| format!("u{i:05}")).collect();
    assert_eq!(values, expected, "once each, in first-seen order");
    assert!(stored.members.iter().all(|m| m.kind.is_none()));

    // Full: a new member is refused, a repeated one is not, and a removal makes room.
    let extra = json!({"op": "add", "path": "members", "value": [member(MAX_GROUP_MEMBERS)]});
    refused(
        &scim.patch(&id, vec![extra.clone()]).await,
        "members",
        MAX_GROUP_MEMBERS,
    );
    let (status, body) = scim
        .patch(
            &id,
            vec![
                json!({"op": "add", "path": "members", "value": [member(7), member(7)]}),
                json!({"op": "remove", "path": "members[value eq \"u00003\"]"}),
                extra,
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{}", body["detail"]);
    let values = strs(&body["members"], "value");
    assert_eq!(values.len(), MAX_GROUP_MEMBERS);
    assert_eq!(values[..4], ["u00000", "u00001", "u00002", "u00004"]);
    assert_eq!(values.last(), Some(&"u10000"));

    // PUT of more distinct members than the cap.
    let over = group("big", (0..=MAX_GROUP_MEMBERS).map(member).collect());
    refused(
        &scim
            .call(Method::PUT, &format!("/Groups/{id}"), Some(&over))
            .await,
        "members",
        MAX_GROUP_MEMBERS,
    );
    refused(&scim.create(&over).await, "members", MAX_GROUP_MEMBERS);
    db.cleanup().await;
}

#[tokio::test]
async fn patch_operations_are_capped_per_request() {
    let (db, scim) = setup().await;
    let (_, body) = scim.create(&group("g", vec![])).await;
    let id = body["id"].as_str().unwrap().to_owned();
    let ops = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"op": "add", "path": "members", "value": [member(i)]}))
            .collect()
    };
    refused(
        &scim.patch(&id, ops(MAX_PATCH_OPERATIONS + 1)).await,
        "Operations",
        MAX_PATCH_OPERATIONS,
    );
    let (status, body) = scim.patch(&id, ops(MAX_PATCH_OPERATIONS)).await;
    assert_eq!(status, StatusCode::OK, "{}", body["detail"]);
    assert_eq!(
        body["members"].as_array().unwrap().len(),
        MAX_PATCH_OPERATIONS
    );
    db.cleanup().await;
}

#[tokio::test]
async fn strings_and_path_ids_are_capped() {
    let (db, scim) = setup().await;
    let at_cap = "é".repeat(MAX_STRING_CHARS); // characters, not bytes
    let over = "x".repeat(MAX_STRING_CHARS + 1);

    // Exactly at the cap: accepted and stored as written.
    let (status, body) = scim
        .create(&json!({
            "schemas": [GROUP], "displayName": at_cap, "externalId": at_cap,
            "members": [{"value": at_cap, "display": at_cap}],
        }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{}", body["detail"]);
    assert_eq!(body["displayName"], at_cap.as_str());
    assert_eq!(body["externalId"], at_cap.as_str());
    assert_eq!(body["members"][0]["value"], at_cap.as_str());
    let id = body["id"].as_str().unwrap().to_owned();

    let with = |key: &str, value: Value| {
        let mut g = group("g2", vec![member(1)]);
        g[key] = value;
        g
    };
    for (body, attribute) in [
        (with("displayName", json!(over)), "displayName"),
        (with("externalId", json!(over)), "externalId"),
        (with("members", json!([{"value": over}])), "members.value"),
        (
            with("members", json!([{"value": "u", "type": over}])),
            "members.type",
        ),
        (
            with("members", json!([{"value": "u", "display": over}])),
            "members.display",
        ),
    ] {
        refused(&scim.create(&body).await, attribute, MAX_STRING_CHARS);
        refused(
            &scim
                .call(Method::PUT, &format!("/Groups/{id}"), Some(&body))
                .await,
            attribute,
            MAX_STRING_CHARS,
        );
    }
    for (op, attribute) in [
        (
            json!({"op": "replace", "path": "displayName", "value": over}),
            "displayName",
        ),
        (
            json!({"op": "replace", "value": {"externalId": over}}),
            "externalId",
        ),
        (
            json!({"op": "add", "path": "members", "value": [{"value": over}]}),
            "members.value",
        ),
    ] {
        refused(
            &scim.patch(&id, vec![op]).await,
            attribute,
            MAX_STRING_CHARS,
        );
    }

    // U+0000 cannot be stored (PostgreSQL text): a 400 naming the attribute, not a 500.
    let (status, body) = scim.create(&with("displayName", json!("a\u{0}b"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("displayName"));
    let (status, body) = scim
        .create(&with("members", json!([{"value": "\u{0}"}])))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("members.value"));

    // Ids in paths: over the cap is 400 on every method; at the cap an unknown id is 404;
    // an id holding U+0000 cannot exist.
    let long_id = "a".repeat(MAX_ID_CHARS + 1);
    let put = group("g3", vec![]);
    let patch =
        json!({"schemas": [PATCH_OP], "Operations": [{"op": "remove", "path": "externalId"}]});
    for (method, body) in [
        (Method::GET, None),
        (Method::PUT, Some(&put)),
        (Method::PATCH, Some(&patch)),
        (Method::DELETE, None),
    ] {
        refused(
            &scim
                .call(method.clone(), &format!("/Groups/{long_id}"), body)
                .await,
            "id",
            MAX_ID_CHARS,
        );
        let (status, answer) = scim
            .call(
                method.clone(),
                &format!("/Groups/{}", "a".repeat(MAX_ID_CHARS)),
                body,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}: {answer}");
        // No id holds a NUL (PostgreSQL cannot even compare one): refused before any lookup.
        let (status, answer) = scim.call(method.clone(), "/Groups/a%00b", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method}: {answer}");
        assert!(answer.to_string().contains("NUL"), "{method}: {answer}");
    }
    db.cleanup().await;
}
