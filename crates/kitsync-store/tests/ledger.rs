//! The durable replay ledger, written in the apply transaction: a callback whose replay key
//! another message holds is never applied, whichever batch, transaction or worker it is in;
//! the same message delivered again is not a replay; keys are forgotten only when no replay
//! can need them.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::{grant, revoke, store};
use kitsync_domain::{Command, QueuedCallback, ReplayStamp};
use kitsync_store::{Outcome, Store, KEEP_AFTER_APPLY_MS};
use sea_orm::{ConnectionTrait as _, Statement};

const T: &str = "tenant-ledger";

fn stamp(n: u8, expires_at_ms: i64) -> ReplayStamp {
    ReplayStamp {
        key: [n; 32],
        expires_at_ms,
    }
}

fn queued(message_id: &str, replay: Option<ReplayStamp>, command: Command) -> QueuedCallback {
    QueuedCallback {
        message_id: message_id.into(),
        received_at_ms: 1,
        replay,
        command,
    }
}

async fn count(store: &Store, sql: &str) -> i64 {
    let db = store.db();
    let row = db
        .query_one(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index(0).unwrap()
}

async fn authorized_journal_rows(store: &Store) -> i64 {
    count(
        store,
        "SELECT COUNT(*) FROM journal WHERE entity = 'member' AND action = 'authorized'",
    )
    .await
}

#[tokio::test]
async fn a_replay_in_a_later_batch_is_discarded() {
    let (db, store) = store().await;
    let s = stamp(1, 2_000_000_000_000);
    let out = store
        .apply_queued(&[queued("m-1", Some(s), grant(T, "a", 10, &["u1"]))])
        .await
        .unwrap();
    assert!(matches!(out[..], [Outcome::Applied { .. }]), "{out:?}");
    // Revoked by a newer change: a replay of the grant, if applied, could not even be told
    // apart by its rank; the ledger discards it before any rank is compared.
    store.apply(&revoke(T, "a", 20, &["u1"])).await.unwrap();
    let out = store
        .apply_queued(&[queued("m-2", Some(s), grant(T, "a", 10, &["u1"]))])
        .await
        .unwrap();
    assert_eq!(out, [Outcome::Replayed]);
    // The same message delivered again (the worker stopped before its ack) is not a replay.
    let out = store
        .apply_queued(&[queued("m-1", Some(s), grant(T, "a", 10, &["u1"]))])
        .await
        .unwrap();
    assert_ne!(out, [Outcome::Replayed]);
    assert_eq!(authorized_journal_rows(&store).await, 1);
    db.cleanup().await;
}

#[tokio::test]
async fn within_a_batch_the_first_copy_wins() {
    let (db, store) = store().await;
    let s = stamp(2, 2_000_000_000_000);
    let out = store
        .apply_queued(&[
            queued("m-1", Some(s), grant(T, "a", 10, &["u1"])),
            queued("plain", None, grant(T, "a", 11, &["u2"])),
            queued("m-2", Some(s), grant(T, "a", 10, &["u1"])),
            queued(
                "m-3",
                Some(stamp(3, 2_000_000_000_000)),
                grant(T, "a", 12, &["u3"]),
            ),
        ])
        .await
        .unwrap();
    assert!(matches!(out[0], Outcome::Applied { .. }), "{out:?}");
    assert!(matches!(out[1], Outcome::Applied { .. }), "{out:?}");
    assert_eq!(out[2], Outcome::Replayed);
    assert!(matches!(out[3], Outcome::Applied { .. }), "{out:?}");
    db.cleanup().await;
}

/// The table's owner wins over the batch's order: a publish that committed after its caller
/// gave up (`000005`) and the marketplace's retry, which the embedded queue recorded as the
/// key's owner, arrive in one batch, the abandoned copy first. The retry is applied, the
/// abandoned copy discarded — never both discarded.
#[tokio::test]
async fn the_owner_in_the_table_wins_over_the_first_copy_in_the_batch() {
    let (db, store) = store().await;
    let s = stamp(8, 2_000_000_000_000);
    let sql = Statement::from_sql_and_values(
        store.db().get_database_backend(),
        match store.db().get_database_backend() {
            sea_orm::DbBackend::Postgres => {
                "INSERT INTO kit_replay_keys (expires_at, mac, message_id) VALUES ($1, $2, $3)"
            }
            _ => "INSERT INTO kit_replay_keys (expires_at, mac, message_id) VALUES (?, ?, ?)",
        },
        [
            s.expires_at_ms.into(),
            s.key.to_vec().into(),
            "m-retry".into(),
        ],
    );
    store.db().execute(sql).await.unwrap();
    let out = store
        .apply_queued(&[
            queued("m-abandoned", Some(s), grant(T, "a", 10, &["u1"])),
            queued("m-retry", Some(s), grant(T, "a", 10, &["u1"])),
        ])
        .await
        .unwrap();
    assert_eq!(out[0], Outcome::Replayed, "{out:?}");
    assert!(matches!(out[1], Outcome::Applied { .. }), "{out:?}");
    db.cleanup().await;
}

#[tokio::test]
async fn a_key_claimed_by_an_earlier_release_is_a_replay() {
    let (db, store) = store().await;
    // An ingress of the previous release claimed the key (no owner) and queued the original
    // without a stamp; a stamped copy came through a new ingress.
    let key = vec![4u8; 32];
    let sql = Statement::from_sql_and_values(
        store.db().get_database_backend(),
        match store.db().get_database_backend() {
            sea_orm::DbBackend::Postgres => {
                "INSERT INTO kit_replay_keys (expires_at, mac) VALUES ($1, $2)"
            }
            _ => "INSERT INTO kit_replay_keys (expires_at, mac) VALUES (?, ?)",
        },
        [2_000_000_000_000_i64.into(), key.into()],
    );
    store.db().execute(sql).await.unwrap();
    let out = store
        .apply_queued(&[queued(
            "m-new",
            Some(stamp(4, 2_000_000_000_000)),
            grant(T, "a", 10, &["u1"]),
        )])
        .await
        .unwrap();
    assert_eq!(out, [Outcome::Replayed]);
    db.cleanup().await;
}

#[tokio::test]
async fn a_failed_batch_records_no_key() {
    let (db, store) = store().await;
    let s = stamp(5, 2_000_000_000_000);
    // Make the apply fail after the ledger insert: the journal is unusable.
    store
        .db()
        .execute_unprepared("DROP TABLE journal")
        .await
        .unwrap();
    let err = store
        .apply_queued(&[queued("m-1", Some(s), grant(T, "a", 10, &["u1"]))])
        .await;
    assert!(err.is_err(), "{err:?}");
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM kit_replay_keys").await,
        0
    );
    db.cleanup().await;
}

#[tokio::test]
async fn keys_are_forgotten_only_when_no_replay_can_need_them() {
    let (db, store) = store().await;
    let now = chrono::Utc::now().timestamp_millis();
    // Applied within its window: kept until the later of its expiry and the post-apply
    // retention.
    let fresh = stamp(6, now + 60_000);
    // Applied long after its window (it waited through an outage): kept after the apply.
    let late = stamp(7, now - 3_600_000);
    store
        .apply_queued(&[
            queued("m-fresh", Some(fresh), grant(T, "a", 10, &["u1"])),
            queued("m-late", Some(late), grant(T, "a", 11, &["u2"])),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.forget_replay_keys(now).await.unwrap(),
        0,
        "nothing is due yet"
    );
    // The late one's replay, queued behind it, is still caught.
    let out = store
        .apply_queued(&[queued("m-late-2", Some(late), grant(T, "a", 11, &["u2"]))])
        .await
        .unwrap();
    assert_eq!(out, [Outcome::Replayed]);
    let after = now + KEEP_AFTER_APPLY_MS + 1_000;
    assert_eq!(store.forget_replay_keys(after).await.unwrap(), 2);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM kit_replay_keys").await,
        0
    );
    db.cleanup().await;
}

/// Two workers holding the two copies at once: exactly one is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_copies_apply_once() {
    let (db, store) = store().await;
    for round in 0..10u8 {
        let s = stamp(100 + round, 2_000_000_000_000);
        let v = 100 + i64::from(round);
        let user = format!("u{round}");
        let (a, b) = {
            let (sa, sb) = (store.clone(), store.clone());
            let (ca, cb) = (
                vec![queued("m-a", Some(s), grant(T, "a", v, &[user.as_str()]))],
                vec![queued("m-b", Some(s), grant(T, "a", v, &[user.as_str()]))],
            );
            tokio::join!(
                tokio::spawn(async move { sa.apply_queued(&ca).await }),
                tokio::spawn(async move { sb.apply_queued(&cb).await }),
            )
        };
        let outs = [a.unwrap(), b.unwrap()];
        let replayed = outs
            .iter()
            .filter(|o| o.as_ref().is_ok_and(|o| o == &[Outcome::Replayed]))
            .count();
        let applied = outs
            .iter()
            .filter(|o| {
                o.as_ref()
                    .is_ok_and(|o| matches!(o[..], [Outcome::Applied { .. }]))
            })
            .count();
        // A transaction that lost a race may fail transiently (SQLite busy); the worker
        // retries it, and then it is a replay.
        assert_eq!(applied, 1, "round {round}: {outs:?}");
        assert!(replayed + applied <= 2, "round {round}: {outs:?}");
        for o in &outs {
            if let Err(e) = o {
                assert!(e.is_transient(), "round {round}: {e}");
            }
        }
    }
    assert_eq!(authorized_journal_rows(&store).await, 10);
    db.cleanup().await;
}

/// Rows built ahead (`Store::prepare`) for other callbacks than those applied are not
/// written: each command's rows are rebuilt from the command itself.
#[tokio::test]
async fn rows_prepared_from_other_callbacks_are_rebuilt() {
    let (_db, store) = store().await;
    // Same tenant, app, version and number of users: only the names differ.
    let meant = [queued("m-1", None, grant(T, "a", 11, &["u1"]))];
    let applied = [queued("m-2", None, grant(T, "a", 11, &["u3"]))];
    let prepared = Store::prepare(meant.iter().map(|q| &q.command));
    let out = store.apply_prepared(&applied, prepared).await.unwrap();
    assert!(matches!(out[..], [Outcome::Applied { .. }]), "{out:?}");
    let state = store.snapshot(T).await.unwrap();
    let members: Vec<(&str, i64)> = state
        .members
        .iter()
        .map(|m| (m.user_name.as_str(), m.version))
        .collect();
    assert_eq!(members, [("u3", 11)]);
    let grants: Vec<(&str, i64)> = state
        .authorizations
        .iter()
        .map(|a| (a.user_name.as_str(), a.version))
        .collect();
    assert_eq!(grants, [("u3", 11)]);
}
