//! Startup of the real binary on a new database: concurrent migrations, and the rule that
//! only `kitsync migrate` (or a serving command with `--migrate`) changes the schema.
//!
//! Runs on the embedded defaults and, when `KITSYNC_TEST_DATABASE_URL` /
//! `KITSYNC_TEST_AMQP_URL` are set, on PostgreSQL / RabbitMQ.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use migrations::{Migrator, MigratorTrait as _};
use std::process::{Output, Stdio};
use std::time::Duration;
use tests::Env;

/// Starts every command at once (all spawned before any is waited for) and collects their
/// outputs.
async fn run_together(env: &Env, commands: &[&[&str]]) -> Vec<Output> {
    let children: Vec<_> = commands
        .iter()
        .map(|args| {
            env.command(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawning kitsync")
        })
        .collect();
    let waits: Vec<_> = children
        .into_iter()
        .map(|c| tokio::task::spawn_blocking(move || c.wait_with_output()))
        .collect();
    let mut outputs = Vec::new();
    for w in waits {
        let out = tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("kitsync did not finish within 60 s")
            .expect("joining")
            .expect("waiting for kitsync");
        outputs.push(out);
    }
    outputs
}

fn show(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every migration this binary knows is recorded as applied.
async fn assert_fully_migrated(env: &Env) {
    let mut applied = env.strings("SELECT version FROM seaql_migrations").await;
    applied.sort();
    let mut known: Vec<String> = Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    known.sort();
    assert_eq!(applied, known);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_migrations_started_together_on_an_empty_database_all_succeed() {
    let env = Env::unmigrated("startup-migrate").await;
    assert!(env.tables().await.is_empty(), "{:?}", env.tables().await);
    let outputs = run_together(&env, &[&["migrate"], &["migrate"], &["migrate"]]).await;
    for out in &outputs {
        assert!(
            out.status.success(),
            "kitsync migrate failed: {}",
            show(out)
        );
    }
    assert_fully_migrated(&env).await;
    // The schema is usable: a command that needs it works.
    let out = env.cli(&["token", "list"]).await;
    assert!(out.status.success(), "{}", show(&out));
    env.finish().await;
}

/// Runs `kitsync ARGS` until it prints its `listening on` line, then kills it. (The harness's
/// `Env::start` takes the mode alone, no flags.)
async fn serve_until_listening(env: &Env, args: &[&str]) {
    let mut child = env
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning kitsync");
    let stdout = child.stdout.take().expect("stdout piped");
    let stderr = child.stderr.take().expect("stderr piped");
    let errors = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let listening = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            use std::io::BufRead as _;
            std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|l| l.starts_with("listening on http://"))
        }),
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let errors = errors.join().unwrap_or_default();
    assert!(
        matches!(listening, Ok(Ok(true))),
        "kitsync {args:?} did not come up within 60 s:\n{errors}"
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `kitsync ARGS` failed, and its stderr says every one of `says`.
fn assert_refused(out: &Output, args: &[&str], says: &[&str]) {
    assert!(
        !out.status.success(),
        "kitsync {args:?} must refuse: {}",
        show(out)
    );
    for s in says {
        assert!(
            stderr(out).contains(s),
            "kitsync {args:?} should say {s:?}: {}",
            show(out)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_refuse_an_unmigrated_database_and_change_nothing_until_kitsync_migrate() {
    let env = Env::unmigrated("startup-check").await;
    let pending = Migrator::migrations().len();
    for args in [
        &["token", "list"][..],
        &["deadletters", "list"],
        &["plans", "list"],
        &["webhooks", "list"],
        &["serve", "--no-migrate"],
        &["ingress"],
        &["worker"],
    ] {
        let out = env.cli(args).await;
        assert_refused(
            &out,
            args,
            &[&format!(
                "the database schema is older than this kitsync ({pending} migrations pending, \
                 e.g. m20261122_000001_directory): run `kitsync migrate`"
            )],
        );
        assert!(
            env.tables().await.is_empty(),
            "kitsync {args:?} changed the schema: {:?}",
            env.tables().await
        );
    }

    let out = env.cli(&["migrate"]).await;
    assert!(out.status.success(), "{}", show(&out));
    assert_fully_migrated(&env).await;
    let out = env.cli(&["token", "list"]).await;
    assert!(out.status.success(), "{}", show(&out));
    drop(env.start("worker").await);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_migrates_by_default_only_on_the_embedded_database() {
    let env = Env::unmigrated("startup-serve").await;
    if env.is_postgres() {
        let out = env.cli(&["serve"]).await;
        assert_refused(&out, &["serve"], &["run `kitsync migrate`"]);
        assert!(env.tables().await.is_empty(), "{:?}", env.tables().await);
        // With the flag it migrates, and comes up.
        serve_until_listening(&env, &["serve", "--migrate"]).await;
    } else {
        // One command for a new install: `kitsync serve`. (Started is enough: dropping the
        // server kills it.)
        drop(env.start("serve").await);
    }
    assert_fully_migrated(&env).await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_migrated_by_a_newer_kitsync_is_refused_by_every_command() {
    let env = Env::new("startup-newer").await;
    env.exec(
        "INSERT INTO seaql_migrations (version, applied_at) \
         VALUES ('m29991231_000001_from_the_future', 0)",
    )
    .await;
    for args in [
        &["token", "list"][..],
        &["migrate"],
        &["serve", "--migrate"],
    ] {
        let out = env.cli(args).await;
        assert_refused(
            &out,
            args,
            &[
                "the database was migrated by a newer kitsync",
                "m29991231_000001_from_the_future",
            ],
        );
    }
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_misspelt_variable_or_file_key_naming_it_and_the_setting_meant() {
    let mut env = Env::new("startup-config").await;
    env.push_var("KITSYNC_KIT__ACESS_KEYS", "kit-key");
    let out = env.cli(&["serve"]).await;
    assert_refused(
        &out,
        &["serve"],
        &["unknown variable KITSYNC_KIT__ACESS_KEYS; did you mean KITSYNC_KIT__ACCESS_KEYS?"],
    );

    // The same key in the file the process finds in its directory.
    env.extra_env.clear();
    std::fs::write(
        env.dir().join("kitsync.toml"),
        "[kit]\nacess_keys = [\"k\"]\n",
    )
    .unwrap();
    let out = env.cli(&["serve"]).await;
    assert_refused(
        &out,
        &["serve"],
        &["unknown setting `kit.acess_keys` in kitsync.toml; did you mean `kit.access_keys`?"],
    );
    // Fixed, it starts.
    std::fs::write(env.dir().join("kitsync.toml"), "[kit]\nprefix = \"\"\n").unwrap();
    drop(env.start("serve").await);
    env.finish().await;
}
