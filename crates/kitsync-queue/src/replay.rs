//! The Kit nonce ledger: `x-nonce` values accepted within the replay window, in SQL so every
//! ingress process sharing the database refuses a replay, and so does a restarted one.
//!
//! Claims are group-committed: a background task takes whatever claims are pending (up to
//! [`MAX_CLAIM_BATCH`]) and settles them with one multi-row upsert, so 64 concurrent
//! callbacks cost a handful of statements rather than 64 transactions. The same task
//! deletes nonces that have left the window every [`CLEANUP_EVERY`].
use crate::sql::{ms, now_ms, stmt};
use crate::QueueError;
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

/// What [`NonceLedger::claim`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceClaim {
    /// Not seen within the window; now recorded.
    Fresh,
    /// Seen within the window: a replay.
    Replayed,
}

struct ClaimRequest {
    nonce: String,
    now_ms: i64,
    done: oneshot::Sender<Result<NonceClaim, String>>,
}

/// Records Kit nonces; cheap to clone.
#[derive(Clone)]
pub struct NonceLedger {
    db: DatabaseConnection,
    claims: mpsc::Sender<ClaimRequest>,
    timeout: Duration,
    upserts: Arc<AtomicU64>,
}

impl NonceLedger {
    /// Starts the batching task (which ends when the last clone is dropped).
    ///
    /// Must be called within a Tokio runtime. A nonce last seen longer than `window` ago
    /// counts as fresh again; rows older than twice the window are deleted.
    #[must_use]
    pub fn new(db: DatabaseConnection, window: Duration) -> Self {
        let (tx, rx) = mpsc::channel(MAX_CLAIM_BATCH * 4);
        let upserts = Arc::new(AtomicU64::new(0));
        tokio::spawn(settle(db.clone(), rx, window, Arc::clone(&upserts)));
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

    /// Durably records `nonce` (as seen at `now_ms`): [`NonceClaim::Fresh`] if no process
    /// sharing the database saw it within the window, [`NonceClaim::Replayed`] otherwise.
    /// Of concurrent claims of one nonce, exactly one is fresh.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when the database fails or does not answer in time.
    pub async fn claim(&self, nonce: &str, now_ms: i64) -> Result<NonceClaim, QueueError> {
        let (done, answer) = oneshot::channel();
        let request = ClaimRequest {
            nonce: nonce.to_owned(),
            now_ms,
            done,
        };
        let outcome = tokio::time::timeout(self.timeout, async {
            self.claims
                .send(request)
                .await
                .map_err(|_| QueueError::Unavailable("the nonce ledger stopped".into()))?;
            match answer.await {
                Ok(Ok(claim)) => Ok(claim),
                Ok(Err(e)) => Err(QueueError::Unavailable(e)),
                Err(_) => Err(QueueError::Unavailable("the nonce ledger stopped".into())),
            }
        })
        .await;
        outcome.unwrap_or_else(|_| {
            Err(QueueError::Unavailable(format!(
                "the nonce ledger did not answer within {} ms",
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

    /// Forgets `nonce`, so the marketplace's retry of a callback we could not queue is not
    /// refused as a replay.
    ///
    /// # Errors
    /// The database statement failed.
    pub async fn release(&self, nonce: &str) -> Result<(), QueueError> {
        self.db
            .execute(stmt(
                self.db.get_database_backend(),
                "DELETE FROM kit_nonces WHERE nonce = $1",
                vec![nonce.into()],
            ))
            .await?;
        Ok(())
    }
}

async fn settle(
    db: DatabaseConnection,
    mut rx: mpsc::Receiver<ClaimRequest>,
    window: Duration,
    upserts: Arc<AtomicU64>,
) {
    let window_ms = ms(window);
    let mut cleanup = tokio::time::interval(CLEANUP_EVERY);
    cleanup.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            r = rx.recv() => match r {
                Some(r) => r,
                None => return,
            },
            _ = cleanup.tick() => {
                let cutoff = now_ms().saturating_sub(window_ms.saturating_mul(2));
                let res = db.execute(stmt(
                    db.get_database_backend(),
                    "DELETE FROM kit_nonces WHERE seen_at < $1",
                    vec![cutoff.into()],
                )).await;
                if let Err(e) = res {
                    tracing::warn!(error = %e, "could not delete expired nonces");
                }
                continue;
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_CLAIM_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        batch.retain(|r| !r.done.is_closed());
        if batch.is_empty() {
            continue;
        }
        upserts.fetch_add(1, Ordering::Relaxed);
        match insert(&db, &batch, window_ms).await {
            Ok(fresh) => {
                // Within a batch the first claim of a nonce is the one that was inserted;
                // later ones are replays of it.
                let mut fresh = fresh;
                let mut orphans = Vec::new();
                for r in batch {
                    let claim = if fresh.remove(&r.nonce) {
                        NonceClaim::Fresh
                    } else {
                        NonceClaim::Replayed
                    };
                    // The caller gave up waiting (and answered 000005): a nonce recorded for
                    // it would make the marketplace's retry look like a replay. Forget it.
                    if r.done.send(Ok(claim)).is_err() && claim == NonceClaim::Fresh {
                        orphans.push(r.nonce);
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

/// Deletes nonces whose claimants stopped waiting. Best effort: if it fails, the retry of
/// such a callback within the window is refused as a replay, which the log says.
async fn forget(db: &DatabaseConnection, nonces: &[String]) {
    let backend = db.get_database_backend();
    let placeholders: Vec<String> = (1..=nonces.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "DELETE FROM kit_nonces WHERE nonce IN ({})",
        placeholders.join(",")
    );
    let values: Vec<Value> = nonces.iter().map(|n| n.as_str().into()).collect();
    if let Err(e) = db.execute(stmt(backend, &sql, values)).await {
        tracing::warn!(error = %e, count = nonces.len(), "could not forget nonces of abandoned claims; their retries will be refused as replays");
    }
}

/// One upsert for the batch; returns the nonces that were fresh.
async fn insert(
    db: &DatabaseConnection,
    batch: &[ClaimRequest],
    window_ms: i64,
) -> Result<HashSet<String>, String> {
    // PostgreSQL refuses an upsert that touches one row twice: send each nonce once.
    let mut seen = HashSet::with_capacity(batch.len());
    let mut rows = String::new();
    let mut values: Vec<Value> = vec![window_ms.into()];
    for r in batch {
        if !seen.insert(r.nonce.as_str()) {
            continue;
        }
        if values.len() > 1 {
            rows.push(',');
        }
        let n = values.len() + 1;
        rows.push_str(&format!("(${n}, ${})", n + 1));
        values.push(r.nonce.as_str().into());
        values.push(r.now_ms.into());
    }
    // A nonce seen longer ago than the window is fresh again (its old row just has not been
    // cleaned up yet); RETURNING lists the rows inserted or so refreshed.
    let sql = format!(
        "INSERT INTO kit_nonces (nonce, seen_at) VALUES {rows} \
         ON CONFLICT (nonce) DO UPDATE SET seen_at = excluded.seen_at \
         WHERE kit_nonces.seen_at < excluded.seen_at - $1 \
         RETURNING nonce"
    );
    let returned = db
        .query_all(stmt(db.get_database_backend(), &sql, values))
        .await
        .map_err(|e| format!("nonce ledger: {e}"))?;
    returned
        .iter()
        .map(|row| row.try_get::<String>("", "nonce"))
        .collect::<Result<HashSet<_>, _>>()
        .map_err(|e| format!("nonce ledger: {e}"))
}
