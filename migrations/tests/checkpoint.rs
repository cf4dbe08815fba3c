//! SQLite databases are checkpointed in the background: committed WAL pages reach the
//! database file although no writer checkpoints (a writer only would past ten times
//! SQLite's default threshold).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use sea_orm::{ConnectionTrait, Statement};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[tokio::test]
async fn committed_pages_reach_the_database_file_without_a_writer_checkpointing() {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("kitsync-ckpt-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("db.sqlite");
    let db = migrations::connect(&format!("sqlite://{}?mode=rwc", file.display()), 2)
        .await
        .unwrap();
    let run = |sql: String| {
        let db = db.clone();
        async move {
            db.execute(Statement::from_string(db.get_database_backend(), sql))
                .await
                .unwrap();
        }
    };
    run("CREATE TABLE filler (id INTEGER PRIMARY KEY, body BLOB NOT NULL)".into()).await;
    // About 8 MiB, in 32 commits: twice SQLite's default checkpoint threshold (1 000 pages),
    // a fifth of the backstop kitsync sets.
    for i in 0..32 {
        run(format!(
            "INSERT INTO filler (body) SELECT randomblob(8192) FROM \
             (WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < 32) \
             SELECT k FROM n) -- commit {i}"
        ))
        .await;
    }
    let size = || std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while size() < 8 << 20 {
        assert!(
            Instant::now() < deadline,
            "the database file holds {} bytes 10 s after 8 MiB were committed: nothing \
             checkpointed the WAL",
            size()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    db.close().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
