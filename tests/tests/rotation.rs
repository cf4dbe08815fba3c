//! Rotating every key kitsync holds — the Kit access key, the RSA key the marketplace
//! encrypts `clientSecret`s to, and the master key that seals secrets at rest — through the
//! real binary, as docs/operations.md tells an operator to, with processes of the old and the
//! new configuration running side by side (a rolling restart). No callback may be refused or
//! lost, and every stored secret must open once the previous keys are gone.
//!
//! Runs on the embedded defaults and, when `KITSYNC_TEST_DATABASE_URL` /
//! `KITSYNC_TEST_AMQP_URL` are set, on PostgreSQL / RabbitMQ.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use kitsync_secrets::{OaepVariant, Place, Sealer, TestKeyPair};
use secrecy::{ExposeSecret as _, SecretString};
use std::time::Duration;
use tests::payload::{self, time};
use tests::{wait_until, Env, Kit, Server, APPLICATION_SYNC};

const APPLY_TIMEOUT: Duration = Duration::from_secs(45);

const PREVIOUS_RSA: &str = "KITSYNC_KIT__PREVIOUS_RSA_PRIVATE_KEY_PATHS";
const PREVIOUS_MASTER: &str = "KITSYNC_SECRETS__PREVIOUS_MASTER_KEYS";

/// Sends an app binding whose `clientSecret` is `secret` encrypted to `rsa`; it must be
/// accepted.
async fn bind_app(kit: &Kit, tenant: &str, app: &str, secret: &str, rsa: &TestKeyPair) {
    let ciphertext = rsa.encrypt(secret, OaepVariant::Sha256).unwrap();
    let body = payload::app(tenant, app, &format!("client-{app}"), &ciphertext, &time(0));
    let r = kit.send(APPLICATION_SYNC, &body).await;
    assert!(r.ok(), "{app}: {r:?}");
}

/// `kitsync apps show --reveal-secret`: the decrypted `clientSecret`, or the error.
async fn revealed(env: &Env, tenant: &str, app: &str) -> Result<String, String> {
    let out = env
        .cli(&["apps", "show", tenant, app, "--reveal-secret"])
        .await;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Ok(v["clientSecret"].as_str().unwrap().to_owned())
}

/// The apps bound before and during the rotation, with their secrets.
const BOUND: [(&str, &str); 4] = [
    ("a1", "secret-1"),
    ("a2", "secret-2"),
    ("a3", "secret-3"),
    ("a4", "secret-4"),
];

async fn assert_every_secret_reveals(env: &Env, tenant: &str) {
    for (app, secret) in BOUND {
        assert_eq!(revealed(env, tenant, app).await.unwrap(), secret, "{app}");
    }
}

async fn wait_for_app(env: &Env, tenant: &str, app: &str) {
    let sql = format!(
        "SELECT COUNT(*) FROM apps WHERE tenant_id = '{tenant}' AND app_id = '{app}' AND client_secret <> ''"
    );
    wait_until(&format!("app {app} applied"), APPLY_TIMEOUT, || async {
        env.scalar(&sql).await == 1
    })
    .await;
}

async fn metric(kit: &Kit, series: &str) -> f64 {
    let r = kit.api("GET", "/metrics", None, &[], None).await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.raw).into_owned();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

async fn stop(mut server: Server) {
    assert!(server.terminate(Duration::from_secs(30)).await.success());
}

fn set_extra(env: &mut Env, name: &str, value: Option<String>) {
    env.extra_env.retain(|(k, _)| k != name);
    if let Some(v) = value {
        env.extra_env.push((name.to_owned(), v));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_access_rsa_and_master_keys_loses_no_callback_and_strands_no_secret() {
    let mut env = Env::new("rotation").await;
    let old_rsa = TestKeyPair::generate_3072().unwrap();
    let new_rsa = TestKeyPair::generate_3072().unwrap();
    let old_pem = env.dir().join("rsa-old.pem");
    let new_pem = env.dir().join("rsa-new.pem");
    std::fs::write(&old_pem, old_rsa.private_pem().unwrap()).unwrap();
    std::fs::write(&new_pem, new_rsa.private_pem().unwrap()).unwrap();
    let old_access = env.access_keys[0].clone();
    let new_access = format!("{old_access}-rotated");
    let old_master = env.master_key.clone();
    let new_master = Sealer::generate_master_key().unwrap();
    let t = "tenant-rotation";

    // Before: one access key, no RSA key yet (a1's secret is stored as the marketplace's
    // ciphertext, sealed), a webhook endpoint and an ID-token signing key sealed under the
    // old master key.
    let before = env.start("serve").await;
    bind_app(&before.kit(), t, "a1", "secret-1", &old_rsa).await;
    wait_for_app(&env, t, "a1").await;
    let out = env
        .cli_ok(&["webhooks", "add", "http://127.0.0.1:9/unused"])
        .await;
    let hook = String::from_utf8(out.stdout).unwrap();
    let hook_id = hook.lines().next().unwrap().trim().to_owned();
    assert!(env.cli(&["oidc-key", "rotate"]).await.status.success());
    stop(before).await;

    // The rolling restart: an ingress with the old configuration keeps answering while
    // workers and an ingress with the new one start.
    env.rsa_key_path = None;
    let old_ingress = env.start("ingress").await;
    env.access_keys = vec![new_access.clone(), old_access.clone()];
    env.rsa_key_path = Some(new_pem.clone());
    set_extra(&mut env, PREVIOUS_RSA, Some(old_pem.display().to_string()));
    env.master_key = new_master.clone();
    set_extra(&mut env, PREVIOUS_MASTER, Some(old_master.clone()));
    let worker = env.start("worker").await;
    let new_ingress = env.start("ingress").await;

    // The marketplace may still sign with the old access key and encrypt to the old public
    // key, and may reach either ingress; the new key and the new public key work at once.
    bind_app(&old_ingress.kit(), t, "a2", "secret-2", &old_rsa).await;
    bind_app(&new_ingress.kit(), t, "a3", "secret-3", &old_rsa).await;
    let new_kit = new_ingress.kit().with_key(&new_access);
    bind_app(&new_kit, t, "a4", "secret-4", &new_rsa).await;
    for app in ["a2", "a3", "a4"] {
        wait_for_app(&env, t, app).await;
    }
    let decrypted = "kitsync_client_secrets_decrypted_total";
    assert_eq!(
        metric(&new_kit, &format!("{decrypted}{{key=\"previous\"}}")).await,
        1.0
    );
    assert_eq!(
        metric(&new_kit, &format!("{decrypted}{{key=\"current\"}}")).await,
        1.0
    );
    stop(old_ingress).await;

    // Everything reveals under the rotated configuration, whichever key sealed it.
    assert_every_secret_reveals(&env, t).await;

    // One re-seal pass: a1 (old master, RSA ciphertext) and a2 (old master, ciphertext, from
    // the old ingress) are decrypted and sealed under the new key; the webhook secret and the
    // signing keys (one made at the first start, one by `oidc-key rotate`) are sealed again.
    // A second pass has nothing left.
    let signing_keys = env.scalar("SELECT COUNT(*) FROM oidc_keys").await;
    assert!(signing_keys >= 1);
    let out = env.cli(&["reseal"]).await;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains(&format!(
            "re-sealed {} stored secrets: 0 sealed by an older kitsync (v1), {} under a previous \
             master key, 2 RSA ciphertexts stored decrypted",
            3 + signing_keys,
            1 + signing_keys
        )),
        "{report}"
    );
    assert!(
        report.contains("the previous master keys can be removed"),
        "{report}"
    );
    let out = env.cli(&["reseal"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-sealed 0 stored secrets"));

    // After: the previous keys are removed everywhere.
    stop(new_ingress).await;
    stop(worker).await;
    env.access_keys = vec![new_access.clone()];
    set_extra(&mut env, PREVIOUS_RSA, None);
    set_extra(&mut env, PREVIOUS_MASTER, None);
    let after = env.start("serve").await;
    assert_every_secret_reveals(&env, t).await;
    let sealer = Sealer::from_master_key(&SecretString::from(new_master.clone())).unwrap();
    let hook_secret = env
        .strings(&format!(
            "SELECT secret FROM webhook_endpoints WHERE id = '{hook_id}'"
        ))
        .await;
    let (_, plain) = sealer
        .open(&hook_secret[0], &Place::webhook_secret(&hook_id))
        .unwrap();
    assert!(plain.expose_secret().starts_with("whsec_"));
    for (kid, key) in env
        .strings("SELECT kid FROM oidc_keys ORDER BY kid")
        .await
        .into_iter()
        .zip(
            env.strings("SELECT private_key FROM oidc_keys ORDER BY kid")
                .await,
        )
    {
        assert!(
            sealer.open(&key, &Place::oidc_signing_key(&kid)).is_ok(),
            "{kid}"
        );
    }
    // The old access key is refused now; the new one works.
    let old_kit = after.kit().with_key(&old_access);
    let body = payload::app(
        t,
        "a5",
        "client-a5",
        &new_rsa.encrypt("s5", OaepVariant::Sha256).unwrap(),
        &time(0),
    );
    assert_eq!(old_kit.send(APPLICATION_SYNC, &body).await.code, "000001");
    bind_app(
        &after.kit().with_key(&new_access),
        t,
        "a5",
        "secret-5",
        &new_rsa,
    )
    .await;
    wait_for_app(&env, t, "a5").await;
    // A secret encrypted to the removed RSA key is refused with a reason, not stored.
    let body = payload::app(
        t,
        "a6",
        "client-a6",
        &old_rsa.encrypt("s6", OaepVariant::Sha256).unwrap(),
        &time(0),
    );
    let r = after
        .kit()
        .with_key(&new_access)
        .send(APPLICATION_SYNC, &body)
        .await;
    assert_eq!(r.code, "000002", "{r:?}");
    stop(after).await;

    // A migration job that does not mount the RSA key (a Kubernetes init container) still
    // migrates and re-seals; only the decryption of stored ciphertexts waits for the workers.
    env.rsa_key_path = Some(env.dir().join("not-mounted.pem"));
    let out = env.cli(&["migrate"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.finish().await;
}

/// Without a master key, a process on the embedded database makes one beside it (a new
/// install is one command); on a shared database it refuses to start, because a key of its
/// own would seal what the other processes cannot open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_embedded_database_gets_a_master_key_made_for_it() {
    let env = Env::new("no-master-key").await;
    let key_file = env.dir().join("data/master.key");
    let unset = [("KITSYNC_SECRETS__MASTER_KEY".to_owned(), None)];
    if env.is_postgres() {
        let out = env.cli_with(&["worker"], &unset).await;
        assert!(!out.status.success(), "the worker refuses to start");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("no master key") && err.contains("KITSYNC_SECRETS__MASTER_KEY"),
            "{err}"
        );
        assert!(!key_file.exists(), "no key was made");
    } else {
        let mut worker = env.start_with(&["worker"], &unset).await;
        wait_until(
            "a key is made beside the database",
            APPLY_TIMEOUT,
            || async { key_file.exists() },
        )
        .await;
        let status = worker.terminate(Duration::from_secs(30)).await;
        assert!(status.success(), "{status}:\n{}", worker.logs());
    }
    // Commands that only read keep working either way.
    let out = env.cli_with(&["token", "list"], &unset).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.finish().await;
}
