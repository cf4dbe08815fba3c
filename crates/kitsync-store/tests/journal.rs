//! The journal is read in id order by the change feed: an id must never become visible after
//! a higher one did, or a reader polling `id > last seen` would skip it for good.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod common;

use common::*;
use sea_orm::{ConnectionTrait, Statement};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

async fn scalar(db: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one(Statement::from_string(
            db.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<Option<i64>>(0).unwrap().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn journal_ids_become_visible_in_commit_order() {
    const WRITERS: usize = 4;
    const BATCHES: usize = 60;
    let (db, s) = store().await;
    let done = Arc::new(AtomicBool::new(false));

    // Writers on different tenants: nothing serialises them but the journal itself.
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let s = s.clone();
        writers.push(tokio::spawn(async move {
            for b in 0..BATCHES {
                let t = format!("w{w}");
                let names: Vec<String> = (0..1 + (b * 37 + w * 11) % 300)
                    .map(|u| format!("u{b}-{u}"))
                    .collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                s.apply(&grant(&t, "a", 10 + b as i64, &names))
                    .await
                    .unwrap();
            }
        }));
    }

    // The reader: once it has seen ids up to `max`, the number of ids at or below `max` must
    // never grow again.
    let reader = {
        let conn = db.conn.clone();
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let (mut max, mut below, mut polls) = (0_i64, 0_i64, 0_u64);
            while !done.load(Ordering::SeqCst) {
                let now_below = scalar(
                    &conn,
                    &format!("SELECT COUNT(*) FROM journal WHERE id <= {max}"),
                )
                .await;
                assert_eq!(
                    now_below, below,
                    "a journal id at or below {max} became visible after {max} was (poll {polls})"
                );
                let new_max = scalar(&conn, "SELECT MAX(id) FROM journal").await;
                below = scalar(
                    &conn,
                    &format!("SELECT COUNT(*) FROM journal WHERE id <= {new_max}"),
                )
                .await;
                max = new_max;
                polls += 1;
            }
            polls
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let polls = reader.await.unwrap();
    assert!(
        polls > 10,
        "the reader polled while the writers wrote ({polls} polls)"
    );
    db.cleanup().await;
}
