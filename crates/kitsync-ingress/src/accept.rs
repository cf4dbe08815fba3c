//! Accepting an authenticated callback: seal secrets, claim the replay key (in memory), queue
//! durably with the key's stamp;
//! and the limits every request passes through (concurrency, body budget, canonical checks).
use crate::error::KitError;
use crate::extract::SignedKit;
use crate::metrics::IngressMetrics;
use crate::replay::{Claim, ReplaySet};
use crate::settings::KitSettings;
use kitsync_domain::{AppChange, Command, QueuedCallback, ReplayStamp, SecretText};
use kitsync_queue::{OutgoingMessage, Published, Queue, QueueError};
use kitsync_secrets::{Place, RsaDecryptor, SealedKind, Sealer};
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Everything the ingress needs, shared by every request.
pub struct Acceptor {
    settings: KitSettings,
    queue: Queue,
    replays: ReplaySet,
    decryptor: Option<Arc<RsaDecryptor>>,
    sealer: Sealer,
    clock: Box<dyn Fn() -> i64 + Send + Sync>,
    metrics: Arc<IngressMetrics>,
    limits: Limits,
    refusals: crate::reply::RefusalLog,
}

/// The bounds on concurrent work, from `[kit]`.
struct Limits {
    /// One permit per callback being handled.
    requests: Semaphore,
    max_requests: usize,
    /// One permit per KiB of callback body held in memory.
    body_budget: Semaphore,
    body_budget_kib: usize,
    /// One permit per canonical-form check running.
    canonical: Semaphore,
}

impl Limits {
    fn new(s: &KitSettings) -> Self {
        // tokio's semaphores hold at most `usize::MAX >> 3` permits.
        let cap = |n: usize| n.clamp(1, Semaphore::MAX_PERMITS);
        let max_requests = cap(s.max_concurrent_requests);
        let body_budget_kib = cap(s.max_inflight_body_bytes.div_ceil(1024));
        Self {
            requests: Semaphore::new(max_requests),
            max_requests,
            body_budget: Semaphore::new(body_budget_kib),
            body_budget_kib,
            canonical: Semaphore::new(cap(s.canonical_concurrency)),
        }
    }
}

impl Acceptor {
    #[must_use]
    pub fn new(
        settings: KitSettings,
        queue: Queue,
        decryptor: Option<Arc<RsaDecryptor>>,
        sealer: Sealer,
    ) -> Self {
        let limits = Limits::new(&settings);
        Self {
            settings,
            queue,
            replays: ReplaySet::default(),
            decryptor,
            sealer,
            clock: Box::new(|| chrono::Utc::now().timestamp_millis()),
            metrics: Arc::default(),
            limits,
            refusals: crate::reply::RefusalLog::default(),
        }
    }

    /// A slot for one callback, or `None` when `kit.max_concurrent_requests` are in flight
    /// (the caller answers `000005` at once: queuing without bound is how overload turns into
    /// timeouts for everyone).
    #[must_use]
    pub fn admit(&self) -> Option<SemaphorePermit<'_>> {
        self.limits.requests.try_acquire().ok()
    }

    /// Callbacks being handled now.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.limits.max_requests - self.limits.requests.available_permits()
    }

    pub(crate) fn refusals(&self) -> &crate::reply::RefusalLog {
        &self.refusals
    }

    pub(crate) fn body_budget(&self) -> &Semaphore {
        &self.limits.body_budget
    }

    pub(crate) fn body_budget_kib(&self) -> usize {
        self.limits.body_budget_kib
    }

    pub(crate) fn canonical_slots(&self) -> &Semaphore {
        &self.limits.canonical
    }

    /// Replaces the clock (tests of the timestamp window).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    #[must_use]
    pub fn settings(&self) -> &KitSettings {
        &self.settings
    }

    #[must_use]
    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    /// Records into `metrics` (shared with the `/metrics` handler) instead of a private set.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<IngressMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Answered callbacks by endpoint and result code, and answer latencies.
    #[must_use]
    pub fn metrics(&self) -> &Arc<IngressMetrics> {
        &self.metrics
    }

    /// Seals the secret, claims the replay key and queues the command with its stamp; `Ok`
    /// only once durable.
    ///
    /// The key is claimed in this process's memory: a replay of a callback this process
    /// accepted is refused here. One accepted elsewhere (another process, or this one before
    /// a restart) is queued and discarded by the worker, which records every key in the
    /// transaction that applies its callback; the embedded queue records the key with the
    /// queue row and refuses the replay at once.
    ///
    /// # Errors
    /// [`KitError::Replayed`] for a signature already accepted, [`KitError::BadSecret`] for
    /// an undecryptable `clientSecret`, [`KitError::Unavailable`] when the queue cannot take
    /// it in time (the key is then released, so a retry is not refused).
    pub async fn accept(&self, kit: SignedKit) -> Result<(), KitError> {
        let SignedKit {
            mut command,
            mac,
            timestamp_ms,
            ..
        } = kit;
        if let Command::App(app) = &mut command {
            if !app.client_secret.0.is_empty() {
                let (sealed, fp) = self.seal_client_secret(app)?;
                app.client_secret = sealed;
                app.secret_fp = Some(fp);
            }
        }
        let now = self.now_ms();
        // The request is acceptable until its signed timestamp leaves the window; so long
        // must its replay be refused.
        let window_ms = i64::try_from(self.settings.timestamp_window_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        let stamp = ReplayStamp {
            key: mac,
            expires_at_ms: timestamp_ms.saturating_add(window_ms),
        };
        if self.replays.claim(&mac, now, stamp.expires_at_ms) == Claim::Replayed {
            return Err(KitError::Replayed);
        }
        let message_id = uuid::Uuid::now_v7().to_string();
        let queued = QueuedCallback {
            message_id: message_id.clone(),
            received_at_ms: now,
            replay: Some(stamp),
            command,
        };
        let body = match queued.to_bytes() {
            Ok(body) => body,
            Err(e) => {
                self.replays.release(&mac);
                return Err(KitError::Internal(format!("serialising the command: {e}")));
            }
        };
        let budget = Duration::from_millis(self.settings.accept_timeout_ms.max(1));
        let published = tokio::time::timeout(
            budget,
            self.queue.publish(OutgoingMessage {
                message_id,
                body,
                replay: Some(stamp),
            }),
        )
        .await;
        let failure = match published {
            Ok(Ok(Published::Queued)) => return Ok(()),
            Ok(Ok(Published::Replayed)) => return Err(KitError::Replayed),
            Ok(Err(e)) => unavailable(e),
            Err(_) => too_slow(budget, "queueing the callback"),
        };
        // Not queued (or not known to be): the marketplace's retry must not look like a
        // replay here. If this copy was queued after all, the worker applies one of the two.
        self.replays.release(&mac);
        Err(failure)
    }

    /// Seals the app's received `clientSecret` for the row it will be stored in
    /// (`apps`, keyed by tenant and app), so the sealed value opens nowhere else.
    ///
    /// Also returns the secret's fingerprint (`Sealer::fingerprint` of the plaintext, or of
    /// the ciphertext as received when there is no RSA key: a marketplace retry re-sends the
    /// same bytes), so a repeat of the same binding is a duplicate however it was sealed.
    fn seal_client_secret(&self, app: &AppChange) -> Result<(SecretText, String), KitError> {
        let received = &app.client_secret;
        let place = Place::app_client_secret(&app.tenant_id, &app.app_id);
        let (sealed, fp) = match &self.decryptor {
            Some(d) => {
                let (key, _, plain) = d
                    .decrypt_detailed(&received.0)
                    .map_err(|e| KitError::BadSecret(secret_problem(&e)))?;
                self.metrics.record_decrypted(key > 0);
                if key > 0 {
                    tracing::info!(
                        tenant = %app.tenant_id,
                        app = %app.app_id,
                        previous_key = key,
                        "clientSecret decrypted with a previous RSA key \
                         (kit.previous_rsa_private_key_paths): the marketplace still encrypts to it"
                    );
                }
                (
                    self.sealer
                        .seal(SealedKind::Plain, plain.expose_secret(), &place),
                    self.sealer.fingerprint(plain.expose_secret()),
                )
            }
            None => (
                self.sealer
                    .seal(SealedKind::RsaCiphertext, &received.0, &place),
                self.sealer.fingerprint(&received.0),
            ),
        };
        let sealed = sealed
            .map(SecretText)
            .map_err(|e| KitError::Internal(format!("sealing clientSecret: {e}")))?;
        Ok((sealed, fp))
    }
}

fn secret_problem(e: &kitsync_secrets::SecretsError) -> String {
    use kitsync_secrets::SecretsError as E;
    match e {
        E::NotBase64(_) => "is not base64".into(),
        E::Undecryptable => {
            let tried: Vec<&str> = kitsync_secrets::OaepVariant::ALL
                .iter()
                .map(|v| v.as_str())
                .collect();
            format!(
                "cannot be decrypted with the configured RSA private key (tried RSA-OAEP {}; \
                 was it encrypted to another public key?)",
                tried.join(", ")
            )
        }
        E::NotUtf8 => "decrypts to bytes that are not UTF-8".into(),
        other => other.to_string(),
    }
}

fn too_slow(budget: Duration, step: &str) -> KitError {
    KitError::Unavailable(format!("{step} took longer than {} ms", budget.as_millis()))
}

fn unavailable(e: QueueError) -> KitError {
    KitError::Unavailable(e.to_string())
}
