//! Accepting an authenticated callback: seal secrets, claim the nonce, queue durably.
use crate::error::KitError;
use crate::extract::SignedKit;
use crate::metrics::IngressMetrics;
use crate::settings::KitSettings;
use kitsync_domain::{Command, QueuedCallback, SecretText};
use kitsync_queue::{NonceClaim, NonceLedger, OutgoingMessage, Queue, QueueError};
use kitsync_secrets::{RsaDecryptor, SealedKind, Sealer};
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;

/// Everything the ingress needs, shared by every request.
pub struct Acceptor {
    settings: KitSettings,
    queue: Queue,
    nonces: NonceLedger,
    decryptor: Option<Arc<RsaDecryptor>>,
    sealer: Sealer,
    clock: Box<dyn Fn() -> i64 + Send + Sync>,
    metrics: Arc<IngressMetrics>,
}

impl Acceptor {
    #[must_use]
    pub fn new(
        settings: KitSettings,
        queue: Queue,
        nonces: NonceLedger,
        decryptor: Option<Arc<RsaDecryptor>>,
        sealer: Sealer,
    ) -> Self {
        Self {
            settings,
            queue,
            nonces,
            decryptor,
            sealer,
            clock: Box::new(|| chrono::Utc::now().timestamp_millis()),
            metrics: Arc::default(),
        }
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

    /// Seals the secret, claims the nonce and queues the command; `Ok` only once durable.
    ///
    /// # Errors
    /// [`KitError::Replayed`] for a reused nonce, [`KitError::BadSecret`] for an
    /// undecryptable `clientSecret`, [`KitError::Unavailable`] when the queue or the nonce
    /// ledger cannot take it (the nonce is then released, so a retry is not refused).
    pub async fn accept(&self, kit: SignedKit) -> Result<(), KitError> {
        let SignedKit {
            mut command, nonce, ..
        } = kit;
        if let Command::App(app) = &mut command {
            if !app.client_secret.0.is_empty() {
                app.client_secret = self.seal_client_secret(&app.client_secret)?;
            }
        }
        let now = self.now_ms();
        // One deadline for everything that makes the callback durable, so the answer comes
        // in time whichever step is slow.
        let budget = Duration::from_millis(self.settings.accept_timeout_ms.max(1));
        let deadline = tokio::time::Instant::now() + budget;
        let claim = tokio::time::timeout_at(deadline, self.nonces.claim(&nonce, now))
            .await
            .map_err(|_| too_slow(budget, "recording the nonce"))?;
        match claim.map_err(unavailable)? {
            NonceClaim::Fresh => {}
            NonceClaim::Replayed => return Err(KitError::Replayed),
        }
        let message_id = uuid::Uuid::now_v7().to_string();
        let queued = QueuedCallback {
            message_id: message_id.clone(),
            received_at_ms: now,
            command,
        };
        let body = match queued.to_bytes() {
            Ok(body) => body,
            Err(e) => {
                self.forget_nonce(nonce);
                return Err(KitError::Internal(format!("serialising the command: {e}")));
            }
        };
        let published = tokio::time::timeout_at(
            deadline,
            self.queue.publish(OutgoingMessage { message_id, body }),
        )
        .await;
        let failure = match published {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => unavailable(e),
            Err(_) => too_slow(budget, "queueing the callback"),
        };
        self.forget_nonce(nonce);
        Err(failure)
    }

    /// Releases the nonce of a callback we could not queue, so the marketplace's retry is not
    /// refused as a replay. In the background: the answer must not wait for a database that
    /// is probably the reason we failed.
    fn forget_nonce(&self, nonce: String) {
        let nonces = self.nonces.clone();
        tokio::spawn(async move {
            if let Err(e) = nonces.release(&nonce).await {
                tracing::warn!(error = %e, "could not release the nonce of a refused callback");
            }
        });
    }

    fn seal_client_secret(&self, received: &SecretText) -> Result<SecretText, KitError> {
        let sealed = match &self.decryptor {
            Some(d) => {
                let plain = d
                    .decrypt(&received.0)
                    .map_err(|e| KitError::BadSecret(secret_problem(&e)))?;
                self.sealer.seal(SealedKind::Plain, plain.expose_secret())
            }
            None => self.sealer.seal(SealedKind::RsaCiphertext, &received.0),
        };
        sealed
            .map(SecretText)
            .map_err(|e| KitError::Internal(format!("sealing clientSecret: {e}")))
    }
}

fn secret_problem(e: &kitsync_secrets::SecretsError) -> String {
    use kitsync_secrets::SecretsError as E;
    match e {
        E::NotBase64(_) => "is not base64".into(),
        E::Undecryptable => {
            "cannot be decrypted with the configured RSA private key (tried OAEP SHA-256 and SHA-1)"
                .into()
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
