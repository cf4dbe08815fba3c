//! The Kit replay ledger: the MACs of accepted callbacks, in SQL so every ingress process
//! sharing the database refuses a replay, and so does a restarted one.
//!
//! The key is the verified `x-sign` itself (32 bytes). The MAC covers the access key, the
//! nonce, the timestamp and the body, so a replay has the same key however its headers are
//! rewritten (hex case, a digit moved between nonce and timestamp), while an authentic new
//! request never collides with an old one. A key is kept until its *signed* timestamp leaves
//! the acceptance window (`expires_at = x-timestamp + window`): after that the request is
//! refused as stale before it reaches the ledger. Keeping it for a window after *receipt*
//! would forget a request signed ahead of our clock while it is still acceptable.
//!
//! Rows are keyed by `(expires_at, mac)`. A replay carries the same signed timestamp as the
//! original (the MAC covers it), so the pair is as unique as the MAC; ordered by expiry, new
//! keys land at the end of the index instead of at random places in it (a random 32-byte key
//! would touch a different index page per insert), and the clean-up is a range delete at its
//! start, with no second index.
//!
//! Claims are group-committed: a background task takes whatever claims are pending (up to
//! [`MAX_CLAIM_BATCH`]) and settles them with one multi-row upsert, so 64 concurrent
//! callbacks cost a handful of statements rather than 64 transactions. The same task
//! deletes expired keys every [`CLEANUP_EVERY`], one `cleanup_slack` late, so a process whose
//! clock runs behind by less than that still finds the keys it needs.
use crate::sql::{gather, ms};
use crate::QueueError;
use kitsync_domain::time::now_ms;
use kitsync_sql::Sql;
use sea_orm::{ConnectionTrait, DatabaseConnection, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

const MAX_CLAIM_BATCH: usize = 512;
const CLEANUP_EVERY: Duration = Duration::from_secs(30);
/// A claim not settled in this time fails, leaving the ingress time to answer `000005`
/// within the marketplace's 5 s.
const DEFAULT_CLAIM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long after expiry a key is deleted: covers clocks of processes that differ by up to
/// this much.
const DEFAULT_CLEANUP_SLACK: Duration = Duration::from_secs(60);

/// A replay key: the 32-byte HMAC-SHA256 `x-sign` that verified.
pub type ReplayKey = [u8; 32];

/// What [`ReplayLedger::claim`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayClaim {
    /// Not seen (or seen and expired); now recorded.
    Fresh,
    /// Seen and not expired: a replay.
    Replayed,
}

struct ClaimRequest {
    key: ReplayKey,
    now_ms: i64,
    expires_at_ms: i64,
    done: oneshot::Sender<Result<ReplayClaim, String>>,
}

/// Records replay keys; cheap to clone.
#[derive(Clone)]
pub struct ReplayLedger {
    db: DatabaseConnection,
    claims: mpsc::Sender<ClaimRequest>,
    timeout: Duration,
    upserts: Arc<AtomicU64>,
}

impl ReplayLedger {
    /// Starts the batching task (which ends when the last clone is dropped).
    ///
    /// Must be called within a Tokio runtime.
    #[must_use]
    pub fn new(db: DatabaseConnection) -> Self {
        Self::with_cleanup_slack(db, DEFAULT_CLEANUP_SLACK)
    }

    /// [`ReplayLedger::new`], deleting expired keys `slack` after they expire.
    #[must_use]
    pub fn with_cleanup_slack(db: DatabaseConnection, slack: Duration) -> Self {
        let (tx, rx) = mpsc::channel(MAX_CLAIM_BATCH * 4);
        let upserts = Arc::new(AtomicU64::new(0));
        tokio::spawn(settle(db.clone(), rx, slack, Arc::clone(&upserts)));
        Self {
            db,
            claims: tx,
            timeout: DEFAULT_CLAIM_TIMEOUT,
            upserts,
        }
    }

    /// Sets how long a claim may take before failing with `Unavailable` (default 2 s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Durably records `key` until `expires_at_ms`: [`ReplayClaim::Fresh`] if no process
    /// sharing the database holds it unexpired at `now_ms`, [`ReplayClaim::Replayed`]
    /// otherwise. Of concurrent claims of one key, exactly one is fresh.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when the database fails or does not answer in time.
    pub async fn claim(
        &self,
        key: &ReplayKey,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<ReplayClaim, QueueError> {
        let (done, answer) = oneshot::channel();
        let request = ClaimRequest {
            key: *key,
            now_ms,
            expires_at_ms,
            done,
        };
        let outcome = tokio::time::timeout(self.timeout, async {
            self.claims
                .send(request)
                .await
                .map_err(|_| QueueError::Unavailable("the replay ledger stopped".into()))?;
            match answer.await {
                Ok(Ok(claim)) => Ok(claim),
                Ok(Err(e)) => Err(QueueError::Unavailable(e)),
                Err(_) => Err(QueueError::Unavailable("the replay ledger stopped".into())),
            }
        })
        .await;
        outcome.unwrap_or_else(|_| {
            Err(QueueError::Unavailable(format!(
                "the replay ledger did not answer within {} ms",
                self.timeout.as_millis()
            )))
        })
    }

    /// Upsert statements run so far (one per group-committed batch of claims), for metrics
    /// and for checking that concurrent claims are batched.
    #[must_use]
    pub fn upserts_executed(&self) -> u64 {
        self.upserts.load(Ordering::Relaxed)
    }

    /// Forgets `key` (claimed with `expires_at_ms`), so the marketplace's retry of a callback
    /// we could not queue is not refused as a replay.
    ///
    /// # Errors
    /// The database statement failed.
    pub async fn release(&self, key: &ReplayKey, expires_at_ms: i64) -> Result<(), QueueError> {
        self.db
            .execute(
                Sql::new(self.db.get_database_backend())
                    .push("DELETE FROM kit_replay_keys WHERE expires_at = ")
                    .bind(expires_at_ms)
                    .push(" AND mac = ")
                    .bind(key.to_vec())
                    .take(),
            )
            .await?;
        Ok(())
    }
}

async fn settle(
    db: DatabaseConnection,
    mut rx: mpsc::Receiver<ClaimRequest>,
    slack: Duration,
    upserts: Arc<AtomicU64>,
) {
    let slack_ms = ms(slack);
    let mut cleanup = tokio::time::interval(CLEANUP_EVERY);
    cleanup.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            r = rx.recv() => match r {
                Some(r) => r,
                None => return,
            },
            _ = cleanup.tick() => {
                let cutoff = now_ms().saturating_sub(slack_ms);
                let res = db.execute(
                    Sql::new(db.get_database_backend())
                        .push("DELETE FROM kit_replay_keys WHERE expires_at < ")
                        .bind(cutoff)
                        .take(),
                ).await;
                if let Err(e) = res {
                    tracing::warn!(error = %e, "could not delete expired replay keys");
                }
                continue;
            }
        };
        let batch = gather(first, &mut rx, MAX_CLAIM_BATCH, |r| r.done.is_closed());
        if batch.is_empty() {
            continue;
        }
        upserts.fetch_add(1, Ordering::Relaxed);
        match insert(&db, &batch).await {
            Ok(fresh) => {
                // Within a batch the first claim of a key is the one that was inserted;
                // later ones are replays of it.
                let mut fresh = fresh;
                let mut orphans = Vec::new();
                for r in batch {
                    let claim = if fresh.remove(&(r.expires_at_ms, r.key)) {
                        ReplayClaim::Fresh
                    } else {
                        ReplayClaim::Replayed
                    };
                    // The caller gave up waiting (and answered 000005): a key recorded for it
                    // would make the marketplace's retry look like a replay. Forget it.
                    if r.done.send(Ok(claim)).is_err() && claim == ReplayClaim::Fresh {
                        orphans.push((r.expires_at_ms, r.key));
                    }
                }
                if !orphans.is_empty() {
                    forget(&db, &orphans).await;
                }
            }
            Err(e) => {
                for r in batch {
                    let _ = r.done.send(Err(e.clone()));
                }
            }
        }
    }
}

/// A key as the ledger's `(expires_at, mac)` row.
fn row((at, key): &(i64, ReplayKey)) -> [Value; 2] {
    [Value::from(*at), key.to_vec().into()]
}

/// Deletes keys whose claimants stopped waiting. Best effort: if it fails, the retry of
/// such a callback within the window is refused as a replay, which the log says.
async fn forget(db: &DatabaseConnection, keys: &[(i64, ReplayKey)]) {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("DELETE FROM kit_replay_keys WHERE (expires_at, mac) IN (VALUES ")
        .bind_rows(keys.iter().map(row))
        .push(")");
    if let Err(e) = db.execute(sql.build()).await {
        tracing::warn!(error = %e, count = keys.len(), "could not forget replay keys of abandoned claims; their retries will be refused as replays");
    }
}

/// One upsert for the batch; returns the `(expires_at, key)` pairs that were fresh.
async fn insert(
    db: &DatabaseConnection,
    batch: &[ClaimRequest],
) -> Result<HashSet<(i64, ReplayKey)>, String> {
    // A stored key counts as expired only if it has expired for every claimant of the batch.
    let now = batch.iter().map(|r| r.now_ms).min().unwrap_or_default();
    // PostgreSQL refuses an upsert that touches one row twice: send each key once.
    let mut seen = HashSet::with_capacity(batch.len());
    let keys: Vec<(i64, ReplayKey)> = batch
        .iter()
        .map(|r| (r.expires_at_ms, r.key))
        .filter(|k| seen.insert(*k))
        .collect();
    // An expired key is fresh again (its row just has not been cleaned up yet); RETURNING
    // lists the rows inserted or so refreshed.
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("INSERT INTO kit_replay_keys (expires_at, mac) VALUES ")
        .bind_rows(keys.iter().map(row))
        .push(
            " ON CONFLICT (expires_at, mac) DO UPDATE SET expires_at = excluded.expires_at \
             WHERE kit_replay_keys.expires_at < ",
        )
        .bind(now)
        .push(" RETURNING expires_at, mac");
    let returned = db
        .query_all(sql.build())
        .await
        .map_err(|e| format!("replay ledger: {e}"))?;
    returned
        .iter()
        .map(|row| {
            let err = |e: sea_orm::DbErr| format!("replay ledger: {e}");
            let at: i64 = row.try_get("", "expires_at").map_err(err)?;
            let mac: Vec<u8> = row.try_get("", "mac").map_err(err)?;
            let key = ReplayKey::try_from(mac.as_slice())
                .map_err(|_| format!("replay ledger: a stored key of {} bytes", mac.len()))?;
            Ok((at, key))
        })
        .collect()
}
