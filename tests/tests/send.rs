//! `kitsync send` against the real server: every callback built from flags lands in the
//! directory, a `clientSecret` encrypted with the ISV's public key (every OAEP variant) is
//! decrypted, a file is sent byte for byte, and an answer the marketplace would not take makes
//! the command fail.
//!
//! Runs on the embedded defaults and, when `KITSYNC_TEST_DATABASE_URL` /
//! `KITSYNC_TEST_AMQP_URL` are set, on PostgreSQL / RabbitMQ.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use kitsync_secrets::{OaepVariant, Place, Sealer, TestKeyPair};
use secrecy::{ExposeSecret, SecretString};
use std::process::Output;
use std::time::Duration;
use tests::{explain, wait_until, Env};

const APPLY_TIMEOUT: Duration = Duration::from_secs(45);

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_builds_signs_and_checks_every_callback() {
    let mut env = Env::new("send").await;
    let (_, public) = env.isv_key_pair();
    let server = env.start("serve").await;
    let url = server.kit().base_url().to_owned();
    let public = public.display().to_string();
    let t = "t-send";

    let send = |args: Vec<String>| {
        let env = &env;
        let url = url.clone();
        async move {
            let mut all: Vec<String> = vec!["send".into()];
            all.extend(args);
            all.extend(["--url".into(), url]);
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            env.cli(&refs).await
        }
    };
    let args = |s: &str| -> Vec<String> { s.split(' ').map(str::to_owned).collect() };

    for a in [
        format!("tenantSync --tenant {t} --name Sendco"),
        format!("allOrgSync --tenant {t} --org root:Head --org sales:Sales:root --org eu:Europe:sales"),
        format!("singleOrgSync --tenant {t} --org ops:Operations:root"),
        format!("authSync --tenant {t} --app app-1 --user alice:admin --org sales:Sales --user bob::false"),
    ] {
        let out = send(args(&a)).await;
        assert!(out.status.success(), "{a}: {}", explain(&out));
        let text = stdout(&out);
        assert!(text.contains("x-sign: ") && text.contains("Body-Sign: verified"), "{a}: {text}");
        assert!(text.contains("\"resultCode\":\"000000\""), "{a}: {text}");
    }
    // The secret, encrypted with the ISV's public key under each OAEP variant.
    for (i, variant) in OaepVariant::ALL.into_iter().enumerate() {
        let out = send(args(&format!(
            "applicationSync --tenant {t} --app app-{i} --client-secret secret-{i} --rsa-public-key {public} --oaep {}",
            variant.as_str()
        )))
        .await;
        assert!(out.status.success(), "{variant:?}: {}", explain(&out));
        assert!(
            !stdout(&out).contains(&format!("secret-{i}")),
            "the secret is sent encrypted: {}",
            stdout(&out)
        );
    }

    wait_until("everything sent is applied", APPLY_TIMEOUT, || async {
        let s = env.snapshot(t).await;
        s.tenant.is_some()
            && s.departments.len() == 4
            && s.apps.len() == 3
            && s.authorizations.len() == 2
    })
    .await;
    let s = env.snapshot(t).await;
    assert_eq!(s.tenant.as_ref().unwrap().name, "Sendco");
    let eu = s.departments.iter().find(|d| d.org_code == "eu").unwrap();
    assert_eq!(
        (eu.org_name.as_str(), eu.parent_code.as_deref()),
        ("Europe", Some("sales"))
    );
    let mut auths: Vec<(&str, &str, bool)> = s
        .authorizations
        .iter()
        .map(|a| (a.user_name.as_str(), a.role.as_str(), a.enabled))
        .collect();
    auths.sort_unstable();
    assert_eq!(auths, [("alice", "admin", true), ("bob", "user", false)]);
    let alice = s.members.iter().find(|m| m.user_name == "alice").unwrap();
    assert_eq!(alice.org_code.as_deref(), Some("sales"), "the first --org");
    let sealer = Sealer::from_master_key(&SecretString::from(env.master_key.clone())).unwrap();
    for (i, _) in OaepVariant::ALL.iter().enumerate() {
        let app = format!("app-{i}");
        let row = s.apps.iter().find(|a| a.app_id == app).unwrap();
        let (_, plain) = sealer
            .open(&row.client_secret.0, &Place::app_client_secret(t, &app))
            .unwrap();
        assert_eq!(plain.expose_secret(), &format!("secret-{i}"));
    }

    // The ISV's app gets its decrypted secret from the CLI only, and the reveal is logged
    // without it.
    let out = env
        .cli(&["apps", "show", t, "app-1", "--reveal-secret"])
        .await;
    assert!(out.status.success(), "{}", explain(&out));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["clientSecret"], "secret-1", "{shown}");
    assert_eq!(shown["clientId"], "app-1-client", "{shown}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("clientSecret revealed") && !stderr.contains("secret-1"),
        "{stderr}"
    );
    let out = env.cli(&["apps", "show", t, "app-1"]).await;
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(shown.get("clientSecret").is_none(), "{shown}");
    let out = env.cli(&["apps", "show", t, "no-such-app"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no app no-such-app"),
        "{}",
        explain(&out)
    );

    // A file is sent byte for byte (here with spaces the flags would not produce).
    let file = env.dir().join("tenant.json");
    let raw = format!(
        "{{ \"tenantId\": \"t-file\", \"name\": \"From a file\", \"tenantCode\": \"c\", \"domainName\": \"https://f.example.com\", \"flag\": 1, \"testFlag\": 1, \"timeStamp\": \"{}\" }}",
        tests::payload::time(0)
    );
    std::fs::write(&file, &raw).unwrap();
    let out = send(vec![
        "tenantSync".into(),
        "--file".into(),
        file.display().to_string(),
    ])
    .await;
    assert!(out.status.success(), "{}", explain(&out));
    wait_until("the file's tenant is applied", APPLY_TIMEOUT, || async {
        env.snapshot("t-file").await.tenant.is_some()
    })
    .await;
    assert!(env.snapshot("t-file").await.tenant.unwrap().test);

    // What the marketplace would not take fails the command, and says why.
    let out = send(args(&format!("tenantSync --tenant {t} --key not-the-key"))).await;
    assert!(!out.status.success(), "{}", explain(&out));
    assert!(
        stdout(&out).contains("\"resultCode\":\"000001\""),
        "{}",
        explain(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not accepted: resultCode 000001"),
        "{}",
        explain(&out)
    );
    // Flags that cannot make a valid body are refused before anything is sent.
    let out = send(args(&format!("authSync --tenant {t} --app a"))).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--user"),
        "{}",
        explain(&out)
    );
    let out = send(args(&format!("appSync --tenant {t}"))).await;
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("applicationSync"),
        "{}",
        explain(&out)
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_kept_as_ciphertext_is_revealed_once_a_key_is_given_and_output_is_plain() {
    let mut env = Env::new("send-plain").await;
    let server = env.start("serve").await;

    // Without an RSA key the server keeps the marketplace's ciphertext (sealed); the CLI,
    // given the key later, still reveals the secret.
    let kp = TestKeyPair::generate_3072().unwrap();
    let public = env.dir().join("isv-public.pem");
    std::fs::write(&public, kp.public_pem()).unwrap();
    let url = server.kit().base_url().to_owned();
    let out = env
        .cli(&[
            "send",
            "applicationSync",
            "--tenant",
            "t-late",
            "--app",
            "a",
            "--client-secret",
            "late-secret",
            "--rsa-public-key",
            &public.display().to_string(),
            "--oaep",
            "sha1",
            "--url",
            &url,
        ])
        .await;
    assert!(out.status.success(), "{}", explain(&out));
    wait_until("the app is applied", APPLY_TIMEOUT, || async {
        !env.snapshot("t-late").await.apps.is_empty()
    })
    .await;
    let out = env
        .cli(&["apps", "show", "t-late", "a", "--reveal-secret"])
        .await;
    assert!(!out.status.success(), "no RSA key yet: {}", explain(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rsa_private_key_path"),
        "{}",
        explain(&out)
    );
    let private = env.dir().join("isv-private.pem");
    std::fs::write(&private, kp.private_pem().unwrap()).unwrap();
    env.rsa_key_path = Some(private);
    let out = env
        .cli(&["apps", "show", "t-late", "a", "--reveal-secret"])
        .await;
    assert!(out.status.success(), "{}", explain(&out));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["clientSecret"], "late-secret", "{shown}");

    let out = env
        .cli(&["token", "create", "--name", "t", "--scope", "stats:read"])
        .await;
    assert!(out.status.success(), "{}", explain(&out));
    let out = env.cli(&["token", "list"]).await;
    assert!(out.status.success(), "{}", explain(&out));
    let line: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
    let created = line["createdAt"]
        .as_str()
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        chrono::DateTime::parse_from_rfc3339(created).is_ok(),
        "createdAt {created}"
    );
    assert!(
        line["revokedAt"].is_null() && line["lastUsedAt"].is_null(),
        "{line}"
    );
    let logs = server.logs();
    assert!(logs.contains(" ready "), "the ready line: {logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "no colour codes in a log file: {logs}"
    );
    env.finish().await;
}
