//! End-to-end: the directory as the ISV's apps read it, on the real binary — SCIM 2.0 over what
//! signed Kit callbacks built, SCIM groups the ISV manages, the independent SCIM clients
//! (`scim2-tester`, `scim-sanity`), and member pages that stay complete while callbacks
//! keep changing the tenant.
//!
//! Like `e2e.rs`, each scenario runs on the embedded defaults, or on PostgreSQL / RabbitMQ
//! when `KITSYNC_TEST_DATABASE_URL` / `KITSYNC_TEST_AMQP_URL` are set.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use tests::payload::{self, time};
use tests::web::enc;
use tests::{run_tool, strs, wait_until, ApiReply, Env, Kit, AUTH_SYNC, TENANT_SYNC};

const APPLY_TIMEOUT: Duration = Duration::from_secs(45);
const SCIM_JSON: &str = "application/scim+json";

/// `kitsync token create --name e2e` with these scopes (and tenant); the printed token.
async fn token(env: &Env, scopes: &str, tenant: Option<&str>) -> String {
    env.create_token("e2e", scopes, tenant).await
}

/// One authSync user with every profile field SCIM maps.
fn user(n: usize, org: &str, role: &str, enable: bool) -> Value {
    json!({
        "userName": format!("user{n:03}"),
        "name": format!("Name {n:03}"),
        "orgCode": org,
        "position": if n.is_multiple_of(2) { "engineer" } else { "manager" },
        "employeeCode": format!("E{n:03}"),
        "employeeType": 1,
        "email": format!("user{n:03}@example.com"),
        "mobile": format!("1380000{n:04}"),
        "role": role,
        "enable": if enable { "true" } else { "false" },
    })
}

/// [`user`] `n`, in d1 when `n` is even, in d2 when it is odd.
fn member(n: usize, role: &str, enable: bool) -> Value {
    let org = if n.is_multiple_of(2) { "d1" } else { "d2" };
    user(n, org, role, enable)
}

/// An authSync with `flag` (0 delete, 1 add, 2 modify).
fn auth_flag(tenant: &str, app: &str, flag: u8, users: &[Value], ts: &str) -> String {
    json!({
        "instanceId": format!("inst-{tenant}"),
        "tenantId": tenant,
        "appId": app,
        "userList": users,
        "currentSyncTime": ts,
        "flag": flag,
        "testFlag": 0,
        "timeStamp": ts,
    })
    .to_string()
}

async fn send_ok(kit: &Kit, kind: &str, body: &str) {
    let r = kit.send(kind, body).await;
    assert_eq!(r.code, "000000", "{kind}: {r:?}");
}

/// Sends [`auth_flag`]`(tenant, app, flag, users, ts)`, which must be accepted.
async fn auth_ok(kit: &Kit, tenant: &str, app: &str, flag: u8, users: &[Value], ts: &str) {
    send_ok(kit, AUTH_SYNC, &auth_flag(tenant, app, flag, users, ts)).await;
}

/// A tenant with `n` members authorised by `app-a` (every third one disabled, every fifth
/// one also an admin of `app-b`), applied.
async fn seed(kit: &Kit, tenant: &str, n: usize, token: &str) {
    send_ok(
        kit,
        TENANT_SYNC,
        &payload::tenant(tenant, &format!("Tenant {tenant}"), 1, 0, &time(0)),
    )
    .await;
    let a: Vec<Value> = (0..n)
        .map(|i| member(i, "user", !i.is_multiple_of(3)))
        .collect();
    auth_ok(kit, tenant, "app-a", 1, &a, &time(1)).await;
    let b: Vec<Value> = (0..n)
        .step_by(5)
        .map(|i| member(i, "admin", true))
        .collect();
    auth_ok(kit, tenant, "app-b", 1, &b, &time(2)).await;
    let everyone = format!("/scim/v2/{tenant}/Users?count=0");
    let admins = format!(
        "/scim/v2/{tenant}/Users?count=0&filter={}",
        enc(r#"groups eq "app-b:admin""#)
    );
    wait_until("the seed is applied", APPLY_TIMEOUT, || async {
        let total = |path: String| async move {
            kit.call("GET", &path, Some(token)).await.body["totalResults"].clone()
        };
        total(everyone.clone()).await == n && total(admins.clone()).await == b.len()
    })
    .await;
}

/// A fresh environment with the binary serving on it, an unbound token of `scopes`, and
/// `tenant` seeded with `n` members (see [`seed`]) and read back through that token.
async fn serve_seeded(
    name: &str,
    scopes: &str,
    tenant: &str,
    n: usize,
) -> (Env, tests::Server, Kit, String) {
    let env = Env::new(name).await;
    let server = env.start("serve").await;
    let kit = server.kit();
    let tok = token(&env, scopes, None).await;
    seed(&kit, tenant, n, &tok).await;
    (env, server, kit, tok)
}

fn user_names(r: &ApiReply) -> Vec<String> {
    r.body["Resources"]
        .as_array()
        .unwrap_or_else(|| panic!("a ListResponse: {:?}", r.body))
        .iter()
        .map(|u| u["userName"].as_str().unwrap().to_owned())
        .collect()
}

fn assert_scim_error(r: &ApiReply, status: u16, scim_type: Option<&str>) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.header("content-type"), Some(SCIM_JSON));
    assert_eq!(
        r.body["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:Error"])
    );
    assert_eq!(r.body["status"], status.to_string());
    assert_eq!(r.body["scimType"].as_str(), scim_type, "{:?}", r.body);
    assert!(!r.body["detail"].as_str().unwrap().is_empty());
}

/// Scenario: callbacks build a tenant; SCIM reads it back, filtered, paged and projected,
/// and refuses to write what the marketplace owns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_users_are_the_members_the_callbacks_built() {
    let (env, _server, kit, tok) =
        serve_seeded("scim-users", "directory:read", "scim-t1", 30).await;
    let get = |path: String| {
        let kit = kit.clone();
        let tok = tok.clone();
        async move {
            let r = kit
                .call("GET", &format!("/scim/v2/scim-t1{path}"), Some(&tok))
                .await;
            assert_eq!(r.header("content-type"), Some(SCIM_JSON), "{path}");
            r
        }
    };

    // One user, mapped as README.md's SCIM section says.
    let r = get("/Users/user005".into()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let u = &r.body;
    assert_eq!(u["id"], "user005");
    assert_eq!(u["userName"], "user005");
    assert_eq!(u["displayName"], "Name 005");
    assert_eq!(u["name"]["formatted"], "Name 005");
    assert_eq!(u["title"], "manager");
    assert_eq!(u["active"], true);
    assert_eq!(u["emails"][0]["value"], "user005@example.com");
    assert_eq!(u["phoneNumbers"][0]["value"], "13800000005");
    let ent = &u["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"];
    assert_eq!(ent["employeeNumber"], "E005");
    assert_eq!(ent["department"], "d2");
    let groups: BTreeSet<&str> = strs(&u["groups"], "value");
    assert_eq!(groups, BTreeSet::from(["app-a:user", "app-b:admin"]));
    assert_eq!(u["meta"]["resourceType"], "User");
    let etag = u["meta"]["version"].as_str().unwrap().to_owned();
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert!(u["meta"]["location"]
        .as_str()
        .unwrap()
        .ends_with("/scim/v2/scim-t1/Users/user005"));
    let again = kit
        .api(
            "GET",
            "/scim/v2/scim-t1/Users/user005",
            Some(&tok),
            &[("if-none-match", &etag)],
            None,
        )
        .await;
    assert_eq!(again.status, 304);
    // user003: disabled in its only app.
    assert_eq!(get("/Users/user003".into()).await.body["active"], false);
    assert_scim_error(&get("/Users/nobody".into()).await, 404, None);

    // Filters, compiled to SQL: compare with what the seed implies.
    let all: Vec<usize> = (0..30).collect();
    let expect = |pred: &dyn Fn(usize) -> bool| -> Vec<String> {
        all.iter()
            .filter(|i| pred(**i))
            .map(|i| format!("user{i:03}"))
            .collect()
    };
    for (filter, want) in [
        (r#"userName eq "user007""#, expect(&|i| i == 7)),
        (
            r#"userName sw "user01""#,
            expect(&|i| (10..20).contains(&i)),
        ),
        (
            r#"displayName co "ME 02""#,
            expect(&|i| (20..30).contains(&i)),
        ),
        (
            r#"emails.value ew "9@example.com""#,
            expect(&|i| i % 10 == 9),
        ),
        (
            "active eq false",
            expect(&|i| i.is_multiple_of(3) && !i.is_multiple_of(5)),
        ),
        (
            r#"title eq "engineer" and not (active eq false)"#,
            expect(&|i| i.is_multiple_of(2) && (!i.is_multiple_of(3) || i.is_multiple_of(5))),
        ),
        (
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "d1" or userName eq "user001""#,
            expect(&|i| i.is_multiple_of(2) || i == 1),
        ),
        (
            r#"groups eq "app-b:admin""#,
            expect(&|i| i.is_multiple_of(5)),
        ),
        (
            r#"emails[type eq "work" and value sw "user02"]"#,
            expect(&|i| (20..30).contains(&i)),
        ),
        (
            "title pr",
            all.iter().map(|i| format!("user{i:03}")).collect(),
        ),
        ("nickName pr", Vec::new()),
        (r#"userName gt "user027""#, expect(&|i| i > 27)),
    ] {
        let q = format!("/Users?count=100&filter={}", enc(filter));
        let r = get(q).await;
        assert_eq!(r.status, 200, "{filter}: {:?}", r.body);
        assert_eq!(user_names(&r), want, "{filter}");
        assert_eq!(r.body["totalResults"], want.len(), "{filter}");
    }
    // The same by POST /Users/.search.
    let r = kit
        .api(
            "POST",
            "/scim/v2/scim-t1/Users/.search",
            Some(&tok),
            &[],
            Some(
                &json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                    "filter": "userName sw \"user02\"",
                    "startIndex": 3,
                    "count": 2,
                    "attributes": ["userName"],
                })
                .to_string(),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(user_names(&r), ["user022", "user023"]);
    assert_eq!(r.body["totalResults"], 10);
    assert_eq!(r.body["startIndex"], 3);
    let first = &r.body["Resources"][0];
    assert!(
        first.get("emails").is_none() && first.get("meta").is_none(),
        "{first}"
    );

    // startIndex/count walk every user exactly once.
    let mut seen = Vec::new();
    let mut start = 1;
    loop {
        let r = get(format!("/Users?startIndex={start}&count=7")).await;
        assert_eq!(r.body["totalResults"], 30);
        let page = user_names(&r);
        if page.is_empty() {
            break;
        }
        start += page.len();
        seen.extend(page);
    }
    assert_eq!(seen, expect(&|_| true));
    let r = get("/Users?count=0".into()).await;
    assert_eq!(r.body["Resources"], json!([]));

    // attributes / excludedAttributes, sub-attributes and extension attributes.
    let r = get(
        "/Users/user004?attributes=name.formatted,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"
            .into(),
    )
    .await;
    let mut keys: Vec<&str> = r
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "id",
            "name",
            "schemas",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
        ]
    );
    assert_eq!(
        r.body["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        json!({"department": "d1"})
    );
    let r = get("/Users/user004?excludedAttributes=groups,emails.type".into()).await;
    assert!(r.body.get("groups").is_none());
    assert_eq!(
        r.body["emails"],
        json!([{"value": "user004@example.com", "primary": true}])
    );

    // Bad requests name what is wrong, as SCIM errors.
    assert_scim_error(
        &get(format!("/Users?filter={}", enc("userName eq"))).await,
        400,
        Some("invalidFilter"),
    );
    assert_scim_error(
        &get(format!("/Users?filter={}", enc("password eq \"x\""))).await,
        400,
        Some("invalidFilter"),
    );
    assert_scim_error(
        &get("/Users?count=ten".into()).await,
        400,
        Some("invalidValue"),
    );
    assert_scim_error(&get("/Nothing".into()).await, 404, None);

    // Users are the marketplace's: writes are refused, after a syntax check.
    let post = |body: &'static str| {
        let kit = kit.clone();
        let tok = tok.clone();
        async move {
            kit.api(
                "POST",
                "/scim/v2/scim-t1/Users",
                Some(&tok),
                &[],
                Some(body),
            )
            .await
        }
    };
    assert_scim_error(
        &post("{\"not\":\"scim\"}").await,
        400,
        Some("invalidSyntax"),
    );
    assert_scim_error(
        &post(r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"]}"#).await,
        400,
        Some("invalidValue"),
    );
    assert_scim_error(
        &post(r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"x"}"#).await,
        400,
        Some("mutability"),
    );
    let r = kit
        .call("DELETE", "/scim/v2/scim-t1/Users/user001", Some(&tok))
        .await;
    assert_scim_error(&r, 403, None);
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let r = kit
            .call(method, "/scim/v2/scim-t1/Schemas", Some(&tok))
            .await;
        assert_scim_error(&r, 405, None);
    }

    // Discovery documents tell what this server does.
    let spc = get("/ServiceProviderConfig".into()).await.body;
    assert_eq!(spc["patch"]["supported"], true);
    assert_eq!(spc["sort"]["supported"], false);
    assert_eq!(spc["etag"]["supported"], true);
    let schemas = get("/Schemas".into()).await.body;
    assert_eq!(schemas["totalResults"], 3);
    let user_schema = get("/Schemas/urn:ietf:params:scim:schemas:core:2.0:User".into())
        .await
        .body;
    assert!(user_schema["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["mutability"] == "readOnly"));
    assert_eq!(
        get("/ResourceTypes/Group".into()).await.body["endpoint"],
        "/Groups"
    );

    // Tokens: none → 401; bound to another tenant → 403; both as SCIM errors.
    let r = kit.call("GET", "/scim/v2/scim-t1/Users", None).await;
    assert_scim_error(&r, 401, None);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let other = token(
        &env,
        "directory:read,directory:write",
        Some("another-tenant"),
    )
    .await;
    // Tenant isolation by every SCIM path and method: the other tenant's token gets 403.
    let search = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]}"#;
    let group = r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"x"}"#;
    for (method, path, body) in [
        ("GET", "/ServiceProviderConfig", None),
        ("GET", "/ResourceTypes", None),
        ("GET", "/ResourceTypes/User", None),
        ("GET", "/Schemas", None),
        (
            "GET",
            "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User",
            None,
        ),
        ("GET", "/Users", None),
        ("GET", "/Users/user001", None),
        ("POST", "/Users/.search", Some(search)),
        ("GET", "/Groups", None),
        ("GET", "/Groups/app-a:user", None),
        ("POST", "/Groups/.search", Some(search)),
        ("POST", "/Groups", Some(group)),
        ("PUT", "/Groups/app-a:user", Some(group)),
        ("PATCH", "/Groups/app-a:user", Some(search)),
        ("DELETE", "/Groups/app-a:user", None),
    ] {
        let r = kit
            .api(
                method,
                &format!("/scim/v2/scim-t1{path}"),
                Some(&other),
                &[],
                body,
            )
            .await;
        assert_eq!(r.status, 403, "{method} {path}: {:?}", r.body);
        assert_scim_error(&r, 403, None);
    }
    let r = kit
        .call("GET", "/scim/v2/unknown-tenant/Users", Some(&tok))
        .await;
    assert_scim_error(&r, 404, None);
    env.finish().await;
}

/// Scenario: the ISV's own groups through SCIM — create, read, replace, patch, delete, with
/// ETags and `If-Match` — next to the read-only per-app role groups; the change feed tells.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_groups_are_the_isvs_to_manage() {
    let (env, _server, kit, reader) =
        serve_seeded("scim-groups", "directory:read", "scim-t2", 6).await;
    let writer = token(&env, "directory:read,directory:write", Some("scim-t2")).await;
    let call = |method: &'static str,
                path: String,
                headers: Vec<(&'static str, String)>,
                body: Option<Value>| {
        let kit = kit.clone();
        let writer = writer.clone();
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let body = body.map(|b| b.to_string());
            kit.api(
                method,
                &format!("/scim/v2/scim-t2{path}"),
                Some(&writer),
                &h,
                body.as_deref(),
            )
            .await
        }
    };
    let group = |name: &str, members: &[&str]| {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": name,
            "externalId": format!("ext-{name}"),
            "members": members.iter().map(|m| json!({"value": m, "type": "User"})).collect::<Vec<_>>(),
        })
    };

    // A reader may not write.
    let r = kit
        .api(
            "POST",
            "/scim/v2/scim-t2/Groups",
            Some(&reader),
            &[],
            Some(&group("x", &[]).to_string()),
        )
        .await;
    assert_scim_error(&r, 403, None);

    let r = call(
        "POST",
        "/Groups".into(),
        vec![],
        Some(group("Ops", &["user001", "user002"])),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.header("location"), r.body["meta"]["location"].as_str());
    assert_eq!(r.header("etag"), Some("W/\"1\""));
    assert_eq!(r.body["externalId"], "ext-Ops");
    assert_eq!(
        r.body["members"][0],
        json!({"value": "user001", "type": "User",
               "$ref": format!("{}/scim/v2/scim-t2/Users/user001", kit.base_url())})
    );
    assert!(r.body["meta"]["created"].is_string());
    // The same name twice: uniqueness.
    let r = call("POST", "/Groups".into(), vec![], Some(group("Ops", &[]))).await;
    assert_scim_error(&r, 409, Some("uniqueness"));
    let r = call(
        "POST",
        "/Groups".into(),
        vec![],
        Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"]})),
    )
    .await;
    assert_scim_error(&r, 400, Some("invalidValue"));

    // The user sees its new group; a filter over groups finds it.
    let r = call("GET", "/Users/user001".into(), vec![], None).await;
    assert!(r.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["value"] == id.as_str() && g["display"] == "Ops"));
    let f = enc(r#"members[value eq "user002"] and displayName eq "ops""#);
    let r = call("GET", format!("/Groups?filter={f}"), vec![], None).await;
    assert_eq!(r.body["totalResults"], 1, "{:?}", r.body);
    assert_eq!(r.body["Resources"][0]["id"], id.as_str());
    // Role groups are listed beside it, and are read-only.
    let r = call(
        "GET",
        "/Groups?excludedAttributes=members".into(),
        vec![],
        None,
    )
    .await;
    let ids: Vec<&str> = strs(&r.body["Resources"], "id");
    assert!(
        ids.contains(&"app-a:user") && ids.contains(&"app-b:admin") && ids.contains(&id.as_str()),
        "{ids:?}"
    );
    assert!(r.body["Resources"][0].get("members").is_none());
    let r = call(
        "PUT",
        "/Groups/app-a:user".into(),
        vec![],
        Some(group("mine", &[])),
    )
    .await;
    assert_scim_error(&r, 400, Some("mutability"));
    let r = call("DELETE", "/Groups/app-a:user".into(), vec![], None).await;
    assert_scim_error(&r, 403, None);

    // PATCH: add, remove by filter, replace the name; each raises the version.
    let patch = |ops: Value| json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});
    let r = call(
        "PATCH",
        format!("/Groups/{id}"),
        vec![],
        Some(patch(json!([
            {"op": "add", "path": "members", "value": [{"value": "user003", "type": "User"}]},
            {"op": "remove", "path": "members[value eq \"user001\"]"},
            {"op": "Replace", "value": {"displayName": "Operations"}},
        ]))),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let members: Vec<&str> = strs(&r.body["members"], "value");
    assert_eq!(members, ["user002", "user003"]);
    assert_eq!(r.body["displayName"], "Operations");
    assert_eq!(r.header("etag"), Some("W/\"2\""));
    let r = call(
        "PATCH",
        format!("/Groups/{id}"),
        vec![],
        Some(patch(json!([{"op": "remove"}]))),
    )
    .await;
    assert_scim_error(&r, 400, Some("noTarget"));
    let r = call(
        "PATCH",
        format!("/Groups/{id}"),
        vec![],
        Some(patch(json!([{"op": "add", "path": "owner", "value": "x"}]))),
    )
    .await;
    assert_scim_error(&r, 400, Some("invalidPath"));

    // If-Match: a stale version is refused (412) and changes nothing; the current one works.
    let r = call(
        "PUT",
        format!("/Groups/{id}"),
        vec![("if-match", "W/\"1\"".into())],
        Some(group("Stale", &[])),
    )
    .await;
    assert_scim_error(&r, 412, None);
    let r = call(
        "PUT",
        format!("/Groups/{id}"),
        vec![("if-match", "W/\"2\"".into())],
        Some(group("Renamed", &["user004"])),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["displayName"], "Renamed");
    let r = call(
        "GET",
        format!("/Groups/{id}"),
        vec![("if-none-match", "W/\"3\"".into())],
        None,
    )
    .await;
    assert_eq!(r.status, 304);

    // The REST view shows the same group; DELETE removes it.
    let (status, body) = kit
        .api_get("/api/v1/tenants/scim-t2/groups", Some(&reader))
        .await;
    assert_eq!(status, 200);
    assert!(body["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["groupId"] == id.as_str() && g["members"] == json!(["user004"])));
    let r = call("DELETE", format!("/Groups/{id}"), vec![], None).await;
    assert_eq!(r.status, 204);
    assert!(r.raw.is_empty());
    assert_scim_error(
        &call("GET", format!("/Groups/{id}"), vec![], None).await,
        404,
        None,
    );
    assert_scim_error(
        &call("DELETE", format!("/Groups/{id}"), vec![], None).await,
        404,
        None,
    );

    // The change feed tells a consumer what happened to the group, in order.
    let (status, feed) = kit
        .api_get("/api/v1/events?tenantId=scim-t2&types=group", Some(&reader))
        .await;
    assert_eq!(status, 200, "{feed}");
    let actions: Vec<&str> = strs(&feed["items"], "type");
    assert_eq!(
        actions,
        [
            "group.created",
            "group.updated",
            "group.updated",
            "group.deleted"
        ]
    );
    for e in feed["items"].as_array().unwrap() {
        let at = e["changedAt"].as_str().unwrap_or_default();
        assert!(
            at.starts_with("20"),
            "changedAt is when the group changed: {e}"
        );
    }
    env.finish().await;
}

/// Scenario: a client pages through a tenant's members while callbacks keep authorising,
/// modifying and deauthorising others. Keyset cursors make every member that stays listed
/// throughout appear exactly once, in order, on every pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_pages_are_complete_while_callbacks_write() {
    // 150 members who stay, user000..user149, each authorised by app-a.
    let (env, _server, kit, tok) =
        serve_seeded("pages-under-writes", "directory:read", "pages-t", 150).await;
    let stable: Vec<String> = (0..150).map(|i| format!("user{i:03}")).collect();

    // The writer: churn members whose names sort between the stable ones ("user012x") come
    // and go through app-c, and stable members' profiles are rewritten through app-a.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let kit = kit.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut round = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                round += 1;
                let churn: Vec<Value> = (0..150)
                    .filter(|i| (i + round).is_multiple_of(4))
                    .map(|i| {
                        let mut u = user(i, "d3", "user", true);
                        u["userName"] = json!(format!("user{i:03}x"));
                        u
                    })
                    .collect();
                let ts = time(10 + 2 * round as i64);
                auth_ok(&kit, "pages-t", "app-c", 1, &churn, &ts).await;
                let renamed: Vec<Value> = (0..150)
                    .filter(|i| (i + round).is_multiple_of(5))
                    .map(|i| {
                        let mut u = member(i, "user", !i.is_multiple_of(3));
                        u["name"] = json!(format!("Renamed {i} in round {round}"));
                        u
                    })
                    .collect();
                auth_ok(&kit, "pages-t", "app-a", 2, &renamed, &ts).await;
                let ts = time(11 + 2 * round as i64);
                auth_ok(&kit, "pages-t", "app-c", 0, &churn, &ts).await;
            }
            round
        })
    };

    // The reader: full passes in pages of 7 while the writer runs.
    let mut passes = 0;
    let mut churn_seen = 0;
    // Passes during which the writer's changes were applied (the journal grew between the
    // pass's first and last page): what makes this a test of paging *under* writes.
    let mut passes_under_writes = 0;
    let journal_head = "SELECT COALESCE(MAX(id), 0) FROM journal";
    let started = std::time::Instant::now();
    while passes < 3 || started.elapsed() < Duration::from_secs(3) || passes_under_writes == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no write was applied during any of {passes} passes"
        );
        let head_before = env.scalar(journal_head).await;
        let mut seen: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = "/api/v1/tenants/pages-t/members?limit=7".to_owned();
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={}", enc(c)));
            }
            let (status, body) = kit.api_get(&path, Some(&tok)).await;
            assert_eq!(status, 200, "{body}");
            seen.extend(
                body["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["userName"].as_str().unwrap().to_owned()),
            );
            match body["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, seen, "pass {passes}: in order, no member twice");
        let stable_seen: Vec<&String> = seen.iter().filter(|u| !u.ends_with('x')).collect();
        assert_eq!(
            stable_seen,
            stable.iter().collect::<Vec<_>>(),
            "pass {passes}: every stable member once"
        );
        churn_seen += seen.len() - stable_seen.len();
        if env.scalar(journal_head).await > head_before {
            passes_under_writes += 1;
        }
        passes += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = writer.await.unwrap();
    println!("{passes} passes over 150 members during {rounds} write rounds ({passes_under_writes} passes with writes applied during them); {churn_seen} churn members seen");
    assert!(rounds >= 2, "the writer kept writing ({rounds} rounds)");
    assert!(
        passes_under_writes >= 1,
        "a write landed while a pass was paging"
    );
    assert!(
        churn_seen > 0,
        "the passes saw the writer's members come and go"
    );
    env.finish().await;
}

/// Scenario: two SCIM clients nobody here wrote — `scim2-tester` (through the `scim2` CLI of
/// scim2-cli) and `scim-sanity` — probe the real server over a seeded tenant. Every check
/// that applies to a server whose Users are read-only must pass (README "SCIM 2.0" lists
/// those that do not apply and why).
///
/// Needs the clients: `.ci/scim/install.sh` installs them into a virtualenv and `.ci/run`
/// runs this test with `KITSYNC_SCIM_TOOLS` set to its `bin` directory; without them it is
/// ignored rather than passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs scim2-cli and scim-sanity: .ci/scim/install.sh, then KITSYNC_SCIM_TOOLS=<venv>/bin"]
async fn scim_conformance_clients_pass() {
    let tools = std::path::PathBuf::from(
        std::env::var("KITSYNC_SCIM_TOOLS")
            .expect("KITSYNC_SCIM_TOOLS: the bin directory of a virtualenv with the SCIM clients"),
    );
    let scopes = "directory:read,directory:write";
    let (env, _server, kit, tok) = serve_seeded("scim-conformance", scopes, "scim-conf", 12).await;
    let base = format!("{}/scim/v2/scim-conf", kit.base_url());

    // scim2-tester, through the scim2 CLI. It only knows how to test a resource type by
    // creating one, so it is told the server's resource types are Group alone (`-r`): Users
    // are read-only here, and its User checks would all begin with POST /Users.
    let rt = kit
        .call("GET", "/scim/v2/scim-conf/ResourceTypes/Group", Some(&tok))
        .await;
    assert_eq!(rt.status, 200);
    let rt_file = env.dir().join("resource-types-group.json");
    std::fs::write(&rt_file, json!([rt.body]).to_string()).unwrap();
    let header = format!("Authorization: Bearer {tok}");
    let (_, out) = run_tool(
        &tools.join("scim2"),
        &[
            "--url",
            &base,
            "-h",
            &header,
            "-r",
            rt_file.to_str().unwrap(),
            "test",
        ],
        None,
    );
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    let mut not_passed = Vec::new();
    for line in out.lines() {
        let Some((status, check)) = line.split_once(' ') else {
            continue;
        };
        if ![
            "SUCCESS",
            "SKIPPED",
            "ERROR",
            "CRITICAL",
            "COMPLIANT",
            "ACCEPTABLE",
            "DEVIATION",
        ]
        .contains(&status)
        {
            continue;
        }
        *counts.entry(status).or_default() += 1;
        if status != "SUCCESS" {
            not_passed.push(format!("{status} {check}"));
        }
    }
    println!("scim2-tester: {counts:?}");
    // The one check that cannot apply: a search across resource types (POST /.search at the
    // root), which this server answers 501 (RFC 7644 makes it optional).
    assert_eq!(
        not_passed,
        ["SKIPPED search_with_attributes"],
        "scim2-tester output:\n{out}"
    );
    assert!(counts["SUCCESS"] >= 35, "scim2-tester output:\n{out}");

    // scim-sanity: the Group lifecycle plus its read and error checks on /Users.
    let (status, out) = run_tool(
        &tools.join("scim-sanity"),
        &[
            "probe",
            &base,
            "--token",
            &tok,
            "--i-accept-side-effects",
            "--resource",
            "Group",
            "--json-output",
        ],
        None,
    );
    let report: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("scim-sanity JSON ({e}):\n{out}"));
    let s = &report["summary"];
    println!("scim-sanity: {s}");
    let bad: Vec<String> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !matches!(r["status"].as_str(), Some("pass" | "skip")))
        .map(|r| format!("{} {}: {}", r["status"], r["name"], r["message"]))
        .collect();
    assert!(bad.is_empty(), "scim-sanity: {bad:#?}");
    assert!(status.success(), "scim-sanity exit {status}:\n{out}");
    // Its skips are the lifecycles of resource types this server does not offer for writing
    // (User) or at all (Agent, AgenticApplication).
    let skipped: Vec<&str> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "skip")
        .map(|r| r["phase"].as_str().unwrap_or(""))
        .collect();
    assert!(
        skipped
            .iter()
            .all(|p| p.contains("User") || p.contains("Agent")),
        "{skipped:?}"
    );
    assert!(s["passed"].as_u64().unwrap() >= 18, "{s}");
    env.finish().await;
}
