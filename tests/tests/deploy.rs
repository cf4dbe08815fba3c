//! What `deploy/` promises, checked against the real binary: the image's health check is a
//! `kitsync health` command that passes against a serving kitsync and fails when it does not
//! serve, and the image's entrypoint and default command are commands the binary has.
//!
//! Runs on the embedded defaults and, when `KITSYNC_TEST_DATABASE_URL` /
//! `KITSYNC_TEST_AMQP_URL` are set, on PostgreSQL / RabbitMQ.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use std::path::PathBuf;
use tests::Env;

fn dockerfile() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/Dockerfile");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The JSON array after `key` on its (possibly continued) Dockerfile line, comments skipped.
fn exec_form(dockerfile: &str, key: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let line = joined
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|l| l.find(key).map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no {key} in deploy/Dockerfile"));
    let json = &line[line.find('[').unwrap()..=line.rfind(']').unwrap()];
    serde_json::from_str(json).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_health_check_passes_on_a_serving_kitsync_and_fails_otherwise() {
    let env = Env::new("deploy").await;
    let server = env.start("serve").await;
    let base = server.kit().base_url().to_owned();
    let file = dockerfile();
    // HEALTHCHECK … CMD ["/usr/local/bin/kitsync", "health", "--url", "http://127.0.0.1:8080/healthz"]
    let check = exec_form(&file, "CMD [\"/usr/local/bin/kitsync\", \"health\"");
    assert_eq!(check[0], "/usr/local/bin/kitsync");
    let args: Vec<String> = check[1..]
        .iter()
        .map(|a| a.replace("http://127.0.0.1:8080", &base))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.cli(&args).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("HTTP 200"));
    // /readyz too; a path that is not served, and a port nothing listens on, fail.
    let ready = format!("{base}/readyz");
    assert!(env.cli(&["health", "--url", &ready]).await.status.success());
    let missing = format!("{base}/nope");
    let out = env.cli(&["health", "--url", &missing]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("http://127.0.0.1:{port}/healthz");
    let out = env
        .cli(&["health", "--url", &dead, "--timeout-ms", "2000"])
        .await;
    assert!(!out.status.success());
    // The image's entrypoint runs `serve` by default: both exist in the binary.
    assert_eq!(exec_form(&file, "ENTRYPOINT"), ["/usr/local/bin/kitsync"]);
    let default = exec_form(&file, "CMD [\"serve\"");
    assert_eq!(default, ["serve"]);
    let help = env.cli(&["serve", "--help"]).await;
    assert!(help.status.success());
    env.finish().await;
}
