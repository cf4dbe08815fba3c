//! The ingress against a real embedded queue (and PostgreSQL when configured): result codes,
//! Body-Sign, replay refusal, and that nothing refused is queued.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use kitsync_domain::{signing, Command, QueuedCallback};
use kitsync_ingress::{router, Acceptor, KitSettings};
use kitsync_queue::{Queue, QueueSettings};
use kitsync_secrets::{OaepVariant, Place, Sealer, TestKeyPair};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

struct Fixture {
    app: axum::Router,
    queue: Queue,
    sealer: Sealer,
    _db: migrations::testing::TestDb,
}

async fn fixture(keys: &[&str], rsa: Option<&TestKeyPair>, body_limit: usize) -> Fixture {
    let db = migrations::testing::fresh_db().await.unwrap();
    let queue = Queue::connect(&QueueSettings::default(), db.conn.clone())
        .await
        .unwrap();
    let settings = KitSettings {
        access_keys: keys
            .iter()
            .map(|k| SecretString::from((*k).to_owned()))
            .collect(),
        body_limit_bytes: body_limit,
        prefix: "/isv/produce/".into(),
        ..KitSettings::default()
    };
    let sealer =
        Sealer::from_master_key(&SecretString::from("test master key".to_owned())).unwrap();
    let decryptor = rsa.map(|kp| {
        Arc::new(
            kitsync_secrets::RsaDecryptor::from_pem(kp.private_pem().unwrap().as_bytes()).unwrap(),
        )
    });
    let acceptor = Acceptor::new(settings, queue.clone(), decryptor, sealer.clone());
    Fixture {
        app: router(Arc::new(acceptor)),
        queue,
        sealer,
        _db: db,
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

struct Sent {
    code: String,
    msg: String,
    body_sign: Option<String>,
    raw: Vec<u8>,
}

async fn send(
    app: &axum::Router,
    path: &str,
    key: &str,
    nonce: &str,
    ts: i64,
    body: &str,
    tamper: Option<&str>,
) -> Sent {
    let sign = signing::sign(key.as_bytes(), nonce, &ts.to_string(), body.as_bytes());
    let mut req = Request::post(format!("/isv/produce/produceAPI/v2/{path}"))
        .header("content-type", "application/json")
        .header("x-nonce", nonce)
        .header("x-timestamp", ts.to_string());
    if tamper != Some("no-sign") {
        req = req.header(
            "x-sign",
            if tamper == Some("bad-sign") {
                "00".repeat(32)
            } else {
                sign
            },
        );
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "always HTTP 200");
    let body_sign = res
        .headers()
        .get("Body-Sign")
        .map(|v| v.to_str().unwrap().to_owned());
    let raw = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    Sent {
        code: v["resultCode"].as_str().unwrap().to_owned(),
        msg: v["resultMsg"].as_str().unwrap_or_default().to_owned(),
        body_sign,
        raw,
    }
}

fn tenant_body(id: &str) -> String {
    format!(
        r#"{{"instanceId":"i1","orderId":"o1","tenantId":"{id}","tenantCode":"c","name":"Acme","domainName":"https://acme.example.com","flag":1,"testFlag":0,"timeStamp":"20240101120000000"}}"#
    )
}

#[tokio::test]
async fn accepts_signed_callbacks_and_signs_the_answer() {
    let f = fixture(&["old-key", "new-key"], None, 1 << 20).await;
    let r = send(
        &f.app,
        "tenantSync",
        "new-key",
        "n1",
        now_ms(),
        &tenant_body("t1"),
        None,
    )
    .await;
    assert_eq!((r.code.as_str(), r.msg.as_str()), ("000000", "success"));
    assert_eq!(
        r.body_sign.unwrap(),
        signing::body_sign(b"new-key", &r.raw),
        "signed with the key that verified"
    );
    assert_eq!(f.queue.depth().await.unwrap(), 1);
}

#[tokio::test]
async fn refuses_what_is_not_authentic_or_valid_and_queues_none_of_it() {
    let f = fixture(&["k"], None, 2048).await;
    let ok = tenant_body("t1");
    let cases: Vec<(&str, Sent)> = vec![
        ("bad signature", send(&f.app, "tenantSync", "k", "a1", now_ms(), &ok, Some("bad-sign")).await),
        ("missing x-sign", send(&f.app, "tenantSync", "k", "a2", now_ms(), &ok, Some("no-sign")).await),
        ("wrong key", send(&f.app, "tenantSync", "other", "a3", now_ms(), &ok, None).await),
        ("stale", send(&f.app, "tenantSync", "k", "a4", now_ms() - 61_000, &ok, None).await),
        ("future", send(&f.app, "tenantSync", "k", "a5", now_ms() + 61_000, &ok, None).await),
        ("bad role", send(&f.app, "authSync", "k", "a6", now_ms(),
            r#"{"tenantId":"t","appId":"a","flag":1,"testFlag":0,"currentSyncTime":"20240101120000000","userList":[{"userName":"u","name":"n","orgCode":"o","role":"boss","enable":"true"}]}"#, None).await),
        ("too large", send(&f.app, "tenantSync", "k", "a7", now_ms(), &format!(r#"{{"pad":"{}"}}"#, "x".repeat(4096)), None).await),
        ("not json", send(&f.app, "singleOrgSync", "k", "a8", now_ms(), "{oops", None).await),
    ];
    let expect = [
        ("bad signature", "000001"),
        ("missing x-sign", "000001"),
        ("wrong key", "000001"),
        ("stale", "000002"),
        ("future", "000002"),
        ("bad role", "000002"),
        ("too large", "000002"),
        ("not json", "000002"),
    ];
    for ((name, sent), (_, code)) in cases.iter().zip(expect) {
        assert_eq!(sent.code, code, "{name}: {}", sent.msg);
        assert!(sent.body_sign.is_some(), "{name}: every answer is signed");
    }
    assert!(
        cases[5].1.msg.contains("userList[0].role"),
        "{}",
        cases[5].1.msg
    );
    assert!(cases[3].1.msg.contains("x-timestamp"), "{}", cases[3].1.msg);
    assert_eq!(
        f.queue.depth().await.unwrap(),
        0,
        "nothing refused was queued"
    );
}

#[tokio::test]
async fn a_replayed_nonce_is_refused() {
    let f = fixture(&["k"], None, 1 << 20).await;
    let (ts, body) = (now_ms(), tenant_body("t1"));
    let same = || send(&f.app, "tenantSync", "k", "same-nonce", ts, &body, None);
    let first = same().await;
    let again = same().await;
    assert_eq!(first.code, "000000");
    assert_eq!(again.code, "000001");
    assert!(again.msg.contains("replay"), "{}", again.msg);
    assert_eq!(f.queue.depth().await.unwrap(), 1);
}

#[tokio::test]
async fn client_secret_is_decrypted_and_sealed_before_queueing() {
    let kp = TestKeyPair::generate_3072().unwrap();
    let f = fixture(&["k"], Some(&kp), 1 << 20).await;
    let ct = kp.encrypt("the-plain-secret", OaepVariant::Sha1).unwrap();
    let body = format!(
        r#"{{"instanceId":"i","tenantId":"t","appId":"a","clientId":"cid","clientSecret":"{ct}","flag":1,"testFlag":0,"timeStamp":"20240101120000000"}}"#
    );
    let r = send(&f.app, "applicationSync", "k", "s1", now_ms(), &body, None).await;
    assert_eq!(r.code, "000000", "{}", r.msg);
    let bad = body.replace(&ct, "bm90IGEgcmVhbCBjaXBoZXJ0ZXh0");
    let r = send(&f.app, "applicationSync", "k", "s2", now_ms(), &bad, None).await;
    assert_eq!(r.code, "000002");
    assert!(r.msg.starts_with("clientSecret:"), "{}", r.msg);

    let consumer = f.queue.consumer("test").await.unwrap();
    let batch = consumer
        .next_batch(10, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(batch.len(), 1);
    let raw = String::from_utf8_lossy(&batch[0].body).to_string();
    assert!(
        !raw.contains("the-plain-secret") && !raw.contains(&ct),
        "queued secret must be sealed"
    );
    let Command::App(app) = QueuedCallback::from_bytes(&batch[0].body).unwrap().command else {
        panic!("expected an app command")
    };
    let place = Place::app_client_secret(&app.tenant_id, &app.app_id);
    let (_, plain) = f.sealer.open(&app.client_secret.0, &place).unwrap();
    assert_eq!(plain.expose_secret(), "the-plain-secret");
    // Sealed for this app's row only.
    assert!(f
        .sealer
        .open(
            &app.client_secret.0,
            &Place::app_client_secret("t", "other-app")
        )
        .is_err());
}

#[tokio::test]
async fn the_same_secret_encrypted_twice_gets_the_same_fingerprint() {
    let kp = TestKeyPair::generate_3072().unwrap();
    let f = fixture(&["k"], Some(&kp), 1 << 20).await;
    for (nonce, variant) in [
        ("f1", kitsync_secrets::OaepVariant::Sha256),
        ("f2", kitsync_secrets::OaepVariant::Sha1),
        ("f3", kitsync_secrets::OaepVariant::Sha256Mgf1Sha1),
    ] {
        let secret = if nonce == "f3" {
            "another-secret"
        } else {
            "same-secret"
        };
        let ct = kp.encrypt(secret, variant).unwrap();
        let body = format!(
            r#"{{"instanceId":"i","tenantId":"t","appId":"a","clientId":"cid","clientSecret":"{ct}","flag":1,"testFlag":0,"timeStamp":"20240101120000000"}}"#
        );
        let r = send(&f.app, "applicationSync", "k", nonce, now_ms(), &body, None).await;
        assert_eq!(r.code, "000000", "{}", r.msg);
    }
    let consumer = f.queue.consumer("fp").await.unwrap();
    let batch = consumer
        .next_batch(10, Duration::from_millis(50))
        .await
        .unwrap();
    let apps: Vec<kitsync_domain::AppChange> = batch
        .iter()
        .map(
            |d| match QueuedCallback::from_bytes(&d.body).unwrap().command {
                Command::App(a) => a,
                other => panic!("{other:?}"),
            },
        )
        .collect();
    assert_eq!(apps.len(), 3);
    assert_ne!(
        apps[0].client_secret, apps[1].client_secret,
        "sealed afresh"
    );
    assert_eq!(
        apps[0].secret_fp, apps[1].secret_fp,
        "one secret, one fingerprint"
    );
    assert_ne!(apps[0].secret_fp, apps[2].secret_fp);
    assert!(!apps[0]
        .secret_fp
        .as_deref()
        .unwrap()
        .contains("same-secret"));
}
