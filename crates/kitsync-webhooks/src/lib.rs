//! kitsync-webhooks: push of the change feed to endpoints an admin registered.
//!
//! Each endpoint receives the same events as `GET /api/v1/events` (shape in
//! [`kitsync_store::feed`]), filtered by its tenant, types and test flag, in journal order,
//! in batches signed per Standard Webhooks ([`signing`]). The state that must survive a
//! restart and be shared by every process (cursor, batch being retried, retry schedule,
//! lease) lives in the store (`kitsync_store`'s `webhooks` module); this crate signs, sends,
//! and decides what an answer means.
//!
//! - [`register`]: validates the URL and filters, issues the `whsec_` secret, stores it
//!   sealed with the master key (bound to the endpoint's row) and returns it to be shown
//!   once.
//! - [`Dispatcher::run`]: the task `serve` and `worker` run. Every `poll_interval_ms` it asks
//!   the store which endpoints are due, leases each (only one dispatcher in any process
//!   delivers an endpoint at a time) and delivers up to `concurrency` endpoints in parallel.
//! - [`Dispatcher::deliver`]: one endpoint until it is caught up or a batch fails; public so
//!   tests can drive it.
//!
//! Delivery semantics (README "Webhooks"):
//! - *At least once, in order, per endpoint.* A batch is `POST`ed; the cursor moves past it
//!   only after a 2xx. A failed batch is retried with exactly the same events, body and
//!   `webhook-id` (`msg_<endpoint>_<after>_<nextCursor>`), so receivers dedupe by that id.
//! - *Retry schedule* ([`retry_delay`]): `retry_min_delay_ms` doubling per consecutive
//!   failure up to `retry_max_delay_ms` (1 s, 2 s, 4 s … 1 h), each up to 10 % earlier
//!   (jitter, so endpoints failing together spread out), stored as `next_attempt_at` so it
//!   survives restarts. After `failing_after` consecutive failures the endpoint shows
//!   `failing`; it is still retried at the capped interval and turns `active` on the next
//!   success. Non-2xx answers, connection errors and timeouts are failures; the status and
//!   the first 200 bytes of the answer are recorded.
//! - *Shutdown* interrupts a request in flight and hands the lease back: the batch is sent
//!   again (same `webhook-id`) by whichever dispatcher claims it next.
//! - `https://` through rustls (aws-lc-rs), trusting the operating system's roots plus
//!   `webhooks.ca_file`; `http://` too, for receivers on a private network.
#![forbid(unsafe_code)]

pub mod signing;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kitsync_domain::error::error_chain;
use kitsync_domain::time::now_ms;
use kitsync_secrets::{Place, SealedKind, Sealer, SecretsError};
use kitsync_store::feed::{parse_event_types, rfc3339, ChangeEvent, FeedFilter};
use kitsync_store::{
    AttemptOutcome, NewWebhook, Store, StoreError, WebhookAttempt, WebhookEndpoint, WebhookLease,
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use signing::{SigningError, SigningKey};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// `[webhooks]` in `kitsync.toml`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct WebhookSettings {
    /// Run the dispatcher in `serve` and `worker`.
    pub enabled: bool,
    /// How often to look for due endpoints.
    pub poll_interval_ms: u64,
    /// Events per request, at most.
    pub batch_size: u64,
    /// Endpoints delivered in parallel per process.
    pub concurrency: usize,
    /// Per request: connecting, sending and reading the answer.
    pub timeout_ms: u64,
    /// First retry delay; doubles per consecutive failure.
    pub retry_min_delay_ms: u64,
    /// Cap of the retry delay.
    pub retry_max_delay_ms: u64,
    /// Consecutive failures after which an endpoint shows `failing`.
    pub failing_after: u32,
    /// How long a claim holds an endpoint; at least `timeout_ms` + 10 s is used.
    pub lease_ms: u64,
    /// PEM file of extra CA certificates trusted for `https://` endpoints, beside the
    /// operating system's (e.g. a private CA of the receivers).
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_interval_ms: 500,
            batch_size: 100,
            concurrency: 8,
            timeout_ms: 10_000,
            retry_min_delay_ms: 1_000,
            retry_max_delay_ms: 3_600_000,
            failing_after: 5,
            lease_ms: 30_000,
            ca_file: None,
        }
    }
}

impl WebhookSettings {
    fn lease_ms(&self) -> i64 {
        let floor = self.timeout_ms.saturating_add(10_000);
        i64::try_from(self.lease_ms.max(floor)).unwrap_or(i64::MAX)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("secret: {0}")]
    Secrets(#[from] SecretsError),
    #[error("signing: {0}")]
    Signing(#[from] SigningError),
    /// The TLS trust roots cannot be loaded (`webhooks.ca_file`).
    #[error("webhooks.ca_file: {0}")]
    Tls(String),
    /// The URL cannot be used; the message says why.
    #[error("{0}")]
    InvalidUrl(String),
    /// A filter names no event type.
    #[error("types: {0}")]
    InvalidTypes(String),
}

/// Checks an endpoint URL: absolute `https://` or `http://host[:port][/path][?query]`, no
/// credentials.
///
/// # Errors
/// [`WebhookError::InvalidUrl`] naming what is wrong.
pub fn validate_url(url: &str) -> Result<hyper::Uri, WebhookError> {
    let uri: hyper::Uri = url
        .trim()
        .parse()
        .map_err(|e| WebhookError::InvalidUrl(format!("`{url}` is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(WebhookError::InvalidUrl(format!(
                "`{url}`: the scheme `{other}` is not supported, use https:// or http://"
            )))
        }
        None => {
            return Err(WebhookError::InvalidUrl(format!(
                "`{url}` is not an absolute URL (http://host:port/path)"
            )))
        }
    }
    let Some(authority) = uri.authority() else {
        return Err(WebhookError::InvalidUrl(format!("`{url}` names no host")));
    };
    if authority.as_str().contains('@') {
        return Err(WebhookError::InvalidUrl(format!(
            "`{url}`: credentials in the URL are not supported (receivers verify the signature)"
        )));
    }
    if authority.host().is_empty() {
        return Err(WebhookError::InvalidUrl(format!("`{url}` names no host")));
    }
    Ok(uri)
}

/// What `kitsync webhooks add` asks for.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    pub url: String,
    pub tenant_id: Option<String>,
    /// Comma-separated event types or prefixes, as the feed's `types`.
    pub types: Option<String>,
    pub include_test: bool,
    /// Start after this journal cursor (`None`: only changes applied from now on).
    pub after: Option<i64>,
}

/// Registers an endpoint: checks the URL and filters, issues its signing secret and stores it
/// sealed with the master key, bound to the endpoint's id. Returns the endpoint and the
/// secret, to show once.
///
/// # Errors
/// [`WebhookError::InvalidUrl`], [`WebhookError::InvalidTypes`], or the store/secret errors.
pub async fn register(
    store: &Store,
    sealer: &Sealer,
    r: &Registration,
) -> Result<(WebhookEndpoint, SecretString), WebhookError> {
    let uri = validate_url(&r.url)?;
    let types = parse_event_types(r.types.as_deref().unwrap_or_default())
        .map_err(|e| WebhookError::InvalidTypes(e.to_string()))?;
    let secret = signing::generate_secret()?;
    // The id is taken first: the secret is sealed bound to its endpoint's row.
    let id = kitsync_store::new_webhook_id();
    let sealed = sealer.seal(
        SealedKind::Plain,
        secrecy::ExposeSecret::expose_secret(&secret),
        &Place::webhook_secret(&id),
    )?;
    let endpoint = store
        .create_webhook_with_id(
            &id,
            &NewWebhook {
                url: uri.to_string(),
                sealed_secret: sealed,
                tenant_id: r.tenant_id.clone().filter(|t| !t.trim().is_empty()),
                types,
                include_test: r.include_test,
                after: r.after,
            },
        )
        .await?;
    Ok((endpoint, secret))
}

/// The delay before retry number `attempt` (1 = after the first failure): `min` doubled per
/// earlier failure, capped at `max`, then up to 10 % earlier, by a jitter derived from
/// `seed` (the endpoint id) and `attempt`, so it is reproducible yet differs per endpoint.
#[must_use]
pub fn retry_delay(attempt: u32, min: Duration, max: Duration, seed: &str) -> Duration {
    let max = max.max(min);
    let shift = attempt.saturating_sub(1).min(63);
    let base_ms = (min.as_millis() << shift).min(max.as_millis());
    let base = Duration::from_millis(u64::try_from(base_ms).unwrap_or(u64::MAX));
    let h = sha2::Sha256::digest(format!("{seed}:{attempt}").as_bytes());
    let permille = u64::from(u16::from_be_bytes([h[0], h[1]])) % 100; // 0..=99 ‰ of base
    let cut = base.as_millis().saturating_mul(u128::from(permille)) / 1000;
    base.saturating_sub(Duration::from_millis(u64::try_from(cut).unwrap_or(0)))
}

/// The body of one delivery.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message<'a> {
    /// Always `kitsync.changes`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When the newest change in the batch was applied (RFC 3339); the same on every retry.
    pub timestamp: Option<String>,
    pub data: MessageData<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageData<'a> {
    pub endpoint_id: &'a str,
    /// The cursor the batch starts after (the previous batch's `nextCursor`).
    pub after: String,
    /// Where the next batch starts (the feed's cursor: events up to it were sent or skipped).
    pub next_cursor: String,
    /// Items of `GET /api/v1/events`.
    pub events: &'a [ChangeEvent],
}

/// What one endpoint's turn came to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Batches answered 2xx.
    pub delivered: usize,
    /// Events in them.
    pub events: usize,
    /// Attempts that failed (at most one per turn: a failure ends the turn).
    pub failed: usize,
    /// Filtered-out journal rows were skipped without sending.
    pub skipped: bool,
    /// Another dispatcher held the endpoint, or it was not due.
    pub not_claimed: bool,
}

/// How a single HTTP attempt ended.
enum Sent {
    Answered { status: u16, body: String },
    Failed(String),
    ShuttingDown,
}

/// Delivers due endpoints; see the module docs.
#[derive(Clone)]
pub struct Dispatcher {
    store: Store,
    sealer: Sealer,
    settings: WebhookSettings,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    owner: String,
}

/// The TLS client configuration: the operating system's trust roots plus `ca_file`.
fn tls_config(settings: &WebhookSettings) -> Result<rustls::ClientConfig, WebhookError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "webhooks: some system trust roots could not be read");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = &settings.ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| WebhookError::Tls(format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(WebhookError::Tls(format!(
                "{}: no PEM certificate in it",
                path.display()
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| WebhookError::Tls(format!("{}: {e}", path.display())))?;
        }
    } else if added == 0 {
        tracing::warn!("webhooks: no system trust roots found; https endpoints will fail");
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WebhookError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Dispatcher {
    /// # Errors
    /// [`WebhookError::Tls`] when `webhooks.ca_file` cannot be read.
    pub fn new(
        store: Store,
        sealer: Sealer,
        settings: WebhookSettings,
    ) -> Result<Self, WebhookError> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.enforce_http(false);
        connector.set_connect_timeout(Some(Duration::from_millis(settings.timeout_ms.max(1))));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(&settings)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let owner = format!(
            "webhooks-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        Ok(Self {
            store,
            sealer,
            settings,
            client,
            owner,
        })
    }

    /// This dispatcher's lease identity.
    #[must_use]
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Runs until `shutdown` turns true: polls for due endpoints and delivers up to
    /// `concurrency` at once. On shutdown, requests in flight are cut short and their leases
    /// handed back; returns when every delivery task has stopped.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let poll = Duration::from_millis(self.settings.poll_interval_ms.max(1));
        let slots = self.settings.concurrency.max(1);
        let mut tasks = tokio::task::JoinSet::new();
        let mut busy: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut failing_store = false;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if busy.len() < slots {
                match self.store.due_webhooks(now_ms(), (slots * 2) as u64).await {
                    Ok(ids) => {
                        failing_store = false;
                        let held: HashSet<&String> = busy.values().collect();
                        let fresh: Vec<String> =
                            ids.into_iter().filter(|id| !held.contains(id)).collect();
                        for id in fresh.into_iter().take(slots - busy.len()) {
                            let me = self.clone();
                            let rx = shutdown.clone();
                            let eid = id.clone();
                            let handle = tasks.spawn(async move {
                                if let Err(e) = me.deliver(&eid, &rx).await {
                                    tracing::warn!(endpoint = %eid, error = %e, "webhook delivery interrupted; retried at the next poll");
                                }
                            });
                            busy.insert(handle.id(), id);
                        }
                    }
                    Err(e) => {
                        if !failing_store {
                            tracing::warn!(error = %e, "cannot look for due webhook endpoints");
                        }
                        failing_store = true;
                    }
                }
            }
            tokio::select! {
                Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let id = match &joined {
                        Ok((id, ())) => *id,
                        Err(e) => {
                            tracing::error!(error = %e, "webhook delivery task panicked");
                            e.id()
                        }
                    };
                    busy.remove(&id);
                    // A finished endpoint may have more to send: look again at once.
                    continue;
                }
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Delivers endpoint `id` if it can be claimed: batch after batch while they succeed and
    /// more events are waiting; stops at the first failure (recorded, retry scheduled), when
    /// caught up, or on shutdown (lease handed back).
    ///
    /// # Errors
    /// The store failed (the lease then expires on its own, and the batch is retried).
    #[tracing::instrument(skip_all, fields(endpoint = %id))]
    pub async fn deliver(
        &self,
        id: &str,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<DeliveryReport, WebhookError> {
        let mut report = DeliveryReport::default();
        let mut first = true;
        loop {
            if *shutdown.borrow() {
                return Ok(report);
            }
            let Some(lease) = self
                .store
                .claim_webhook(id, &self.owner, now_ms(), self.settings.lease_ms())
                .await?
            else {
                report.not_claimed = first;
                return Ok(report);
            };
            first = false;
            match self.deliver_batch(&lease, shutdown, &mut report).await {
                Ok(true) => continue,
                Ok(false) => return Ok(report),
                Err(e) => {
                    // Best effort: hand the lease back so the next poll can try again.
                    let _ = self.store.release_webhook(&lease).await;
                    return Err(e);
                }
            }
        }
    }

    /// Sends the next batch of a leased endpoint. True when it was delivered in full and
    /// more may be waiting.
    async fn deliver_batch(
        &self,
        lease: &WebhookLease,
        shutdown: &watch::Receiver<bool>,
        report: &mut DeliveryReport,
    ) -> Result<bool, WebhookError> {
        let ep = &lease.endpoint;
        let filter = FeedFilter {
            tenant_id: ep.tenant_id.clone(),
            types: ep.types.clone(),
            include_test: ep.include_test,
        };
        let limit = self.settings.batch_size.clamp(1, 1000);
        // A retry reads exactly the failed batch again; a new batch reads up to the journal's
        // head, so an endpoint whose filter matches none of the newest rows moves past them.
        let until = match ep.pending_until {
            Some(until) => until,
            None => self.store.journal_head().await?,
        };
        let page = self
            .store
            .feed_page(ep.cursor, Some(until), &filter, limit)
            .await?;
        let (Some(first), Some(last)) = (page.events.first(), page.events.last()) else {
            if page.next_cursor > ep.cursor || ep.pending_until.is_some() {
                self.store.skip_webhook_to(lease, page.next_cursor).await?;
                report.skipped = true;
                // A page stops scanning after `feed::MAX_SCAN_ROWS` rows: when that left it
                // short of the head, go on at once rather than a poll later.
                return Ok(ep.pending_until.is_none() && page.next_cursor < until);
            }
            self.store.release_webhook(lease).await?;
            return Ok(false);
        };
        let (first_id, last_id) = (first.journal_id, last.journal_id);
        let webhook_id = format!("msg_{}_{}_{}", ep.id, ep.cursor, page.next_cursor);
        let body = serde_json::to_vec(&Message {
            kind: "kitsync.changes",
            timestamp: last.applied_at.clone(),
            data: MessageData {
                endpoint_id: &ep.id,
                after: ep.cursor.to_string(),
                next_cursor: page.next_cursor.to_string(),
                events: &page.events,
            },
        })
        .map_err(|e| StoreError::Corrupt(format!("webhook body: {e}")))?;
        let attempt = ep.consecutive_failures.saturating_add(1).max(1);
        let at = now_ms();
        let started = Instant::now();
        let sent = match self.signing_key(lease) {
            Ok(key) => self.send(&ep.url, &webhook_id, &key, body, shutdown).await,
            Err(e) => Sent::Failed(e),
        };
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let events = i32::try_from(page.events.len()).unwrap_or(i32::MAX);
        let outcome = match sent {
            Sent::ShuttingDown => {
                self.store.release_webhook(lease).await?;
                return Ok(false);
            }
            Sent::Answered { status, .. } if (200..300).contains(&status) => {
                AttemptOutcome::Delivered { status }
            }
            Sent::Answered { status, body } => self.failed(
                ep,
                attempt,
                Some(status),
                if body.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {body}")
                },
            ),
            Sent::Failed(error) => self.failed(ep, attempt, None, error),
        };
        let record = WebhookAttempt {
            webhook_id: webhook_id.clone(),
            first_event_id: first_id,
            last_event_id: last_id,
            events,
            until: page.next_cursor,
            attempt,
            at,
            duration_ms,
            outcome: outcome.clone(),
        };
        if !self.store.record_webhook_attempt(lease, &record).await? {
            tracing::warn!(%webhook_id, "lost the endpoint's lease while delivering; another dispatcher has it now");
            return Ok(false);
        }
        match &outcome {
            AttemptOutcome::Delivered { status } => {
                tracing::debug!(%webhook_id, status, events, duration_ms, "webhook delivered");
                report.delivered += 1;
                report.events += page.events.len();
                Ok(page.events.len() as u64 == limit)
            }
            AttemptOutcome::Failed {
                status,
                error,
                retry_at,
                failing_after,
            } => {
                report.failed += 1;
                let retry_in_ms = retry_at.saturating_sub(at);
                if u32::try_from(attempt).is_ok_and(|a| a == *failing_after) {
                    tracing::error!(%webhook_id, attempt, ?status, %error, retry_in_ms, "webhook endpoint is failing");
                } else {
                    tracing::warn!(%webhook_id, attempt, ?status, %error, retry_in_ms, "webhook delivery failed; will retry");
                }
                Ok(false)
            }
        }
    }

    fn failed(
        &self,
        ep: &WebhookEndpoint,
        attempt: i32,
        status: Option<u16>,
        error: String,
    ) -> AttemptOutcome {
        let delay = retry_delay(
            u32::try_from(attempt).unwrap_or(1),
            Duration::from_millis(self.settings.retry_min_delay_ms),
            Duration::from_millis(self.settings.retry_max_delay_ms),
            &ep.id,
        );
        AttemptOutcome::Failed {
            status,
            error,
            retry_at: now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(0)),
            failing_after: self.settings.failing_after.max(1),
        }
    }

    fn signing_key(&self, lease: &WebhookLease) -> Result<SigningKey, String> {
        let place = Place::webhook_secret(&lease.endpoint.id);
        let (_, secret) = self
            .sealer
            .open(&lease.sealed_secret, &place)
            .map_err(|e| match e {
                SecretsError::LegacySeal => format!("cannot open the signing secret: {e}"),
                _ => "cannot open the signing secret: it was sealed under another master key \
                      (secrets.master_key must be the same on every kitsync process) or for \
                      another endpoint"
                    .to_owned(),
            })?;
        SigningKey::from_secret(&secret).map_err(|e| format!("signing secret: {e}"))
    }

    /// POSTs one signed message; the whole exchange is bounded by `timeout_ms` and cut short
    /// by shutdown.
    async fn send(
        &self,
        url: &str,
        webhook_id: &str,
        key: &SigningKey,
        body: Vec<u8>,
        shutdown: &watch::Receiver<bool>,
    ) -> Sent {
        let timestamp = chrono::Utc::now().timestamp();
        let signature = key.sign(webhook_id, timestamp, &body);
        let request = match hyper::Request::post(url)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("kitsync/", env!("CARGO_PKG_VERSION")),
            )
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(Full::new(Bytes::from(body)))
        {
            Ok(r) => r,
            Err(e) => return Sent::Failed(format!("invalid request: {e}")),
        };
        let timeout = Duration::from_millis(self.settings.timeout_ms.max(1));
        let exchange = async {
            let res = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("request failed: {}", error_chain(&e)))?;
            let status = res.status().as_u16();
            Ok::<_, String>(Sent::Answered {
                status,
                body: answer_start(res.into_body()).await,
            })
        };
        let mut shutdown = shutdown.clone();
        tokio::select! {
            r = tokio::time::timeout(timeout, exchange) => match r {
                Ok(Ok(sent)) => sent,
                Ok(Err(e)) => Sent::Failed(e),
                Err(_) => Sent::Failed(format!("no answer within {} ms", timeout.as_millis())),
            },
            _ = shutdown.wait_for(|s| *s) => Sent::ShuttingDown,
        }
    }
}

/// The first 200 bytes of an answer's body, as text (lossy), trimmed.
async fn answer_start(mut body: hyper::body::Incoming) -> String {
    const KEEP: usize = 200;
    let mut buf = Vec::new();
    while buf.len() < KEEP {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    buf.extend_from_slice(data);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    buf.truncate(KEEP);
    String::from_utf8_lossy(&buf).trim().to_owned()
}

/// Unix ms as RFC 3339, for the CLI.
#[must_use]
pub fn format_ms(ms: i64) -> String {
    rfc3339(ms).unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn retry_delays_double_up_to_the_cap_with_bounded_jitter() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(3600));
        let delays: Vec<Duration> = (1..=16)
            .map(|a| retry_delay(a, min, max, "whk_a"))
            .collect();
        for (i, d) in delays.iter().enumerate() {
            let base = min.saturating_mul(1 << i).min(max);
            assert!(
                *d <= base && *d >= base.mul_f64(0.9),
                "attempt {}: {d:?}",
                i + 1
            );
        }
        for w in delays.windows(2).take(11) {
            assert!(w[1] > w[0], "increasing while below the cap: {delays:?}");
        }
        assert!(delays[15] >= max.mul_f64(0.9), "capped at an hour");
        assert_eq!(
            retry_delay(200, min, max, "x"),
            retry_delay(200, min, max, "x")
        );
        assert!(retry_delay(200, min, max, "x") <= max);
        let spread: HashSet<Duration> = (0..20)
            .map(|i| retry_delay(3, min, max, &format!("whk_{i}")))
            .collect();
        assert!(spread.len() > 1, "jitter differs between endpoints");
    }

    #[test]
    fn only_http_and_https_urls_are_accepted() {
        assert!(validate_url("http://127.0.0.1:9000/hooks?x=1").is_ok());
        assert!(validate_url("http://receiver.internal/kitsync").is_ok());
        assert!(validate_url("https://hooks.example.com/kitsync").is_ok());
        let ftp = validate_url("ftp://example.com/hook")
            .unwrap_err()
            .to_string();
        assert!(ftp.contains("`ftp` is not supported"), "{ftp}");
        for bad in [
            "ftp://h/x",
            "/just/a/path",
            "http://user:pw@h/x",
            "not a url",
            "",
        ] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lease_outlives_a_request() {
        let s = WebhookSettings {
            lease_ms: 1_000,
            timeout_ms: 10_000,
            ..WebhookSettings::default()
        };
        assert_eq!(s.lease_ms(), 20_000);
        assert_eq!(WebhookSettings::default().lease_ms(), 30_000);
    }
}
