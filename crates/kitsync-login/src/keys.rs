//! The ID-token signing keys: ES256, the private key sealed with the master key in
//! `oidc_keys`, the public key published at `/.well-known/jwks.json`.
//!
//! Processes re-read the keys every 30 s ([`RELOAD`]), so a key must be published before it
//! signs and stay published after it stops. `kitsync oidc-key rotate` therefore adds a key that
//! every process publishes at once but that only signs after [`ACTIVATION`] (60 s): by then
//! every process lists it in its JWKS. The previous keys sign until then, and stay published
//! until the ID tokens they signed have expired (the access-token lifetime, plus a margin);
//! the upkeep then deletes them. The very first key signs at once: nothing was signed before.
use crate::db::{self, KeyRow};
use crate::jose::SigningKey;
use crate::{now_ms, LoginError, LoginSettings};
use base64::Engine as _;
use kitsync_secrets::{Place, SealedKind, Sealer};
use sea_orm::DatabaseConnection;
use secrecy::ExposeSecret as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long a process trusts its copy of the keys.
pub const RELOAD: Duration = Duration::from_secs(30);
/// How long a rotated-in key is published before it signs (longer than [`RELOAD`]).
pub const ACTIVATION: Duration = Duration::from_secs(60);
/// A retired key stays published this much longer than the tokens it signed can live.
const MARGIN_MS: i64 = 10 * 60_000;

/// The key that signs at `now`: the newest that has been published for [`ACTIVATION`] and is
/// not retired; when none has (the first key), the newest that is not retired.
fn signing_row(rows: &[KeyRow], now: i64) -> Option<&KeyRow> {
    let activation = i64::try_from(ACTIVATION.as_millis()).unwrap_or(60_000);
    let live: Vec<&KeyRow> = rows
        .iter()
        .filter(|r| r.retired_at.is_none_or(|t| t > now))
        .collect();
    live.iter()
        .copied()
        .filter(|r| r.created_at <= now - activation)
        .max_by_key(|r| (r.created_at, r.kid.clone()))
        .or_else(|| {
            live.iter()
                .copied()
                .filter(|r| r.retired_at.is_none())
                .max_by_key(|r| (r.created_at, r.kid.clone()))
        })
}

/// The keys as this process last read them.
struct Loaded {
    at: Instant,
    signer: Option<Arc<SigningKey>>,
    jwks: Arc<Vec<serde_json::Value>>,
}

pub(crate) struct KeyRing {
    db: DatabaseConnection,
    sealer: Sealer,
    loaded: Mutex<Option<Loaded>>,
}

/// A key as `kitsync oidc-key list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    pub kid: String,
    pub created_at: i64,
    /// `None`: the key signs.
    pub retired_at: Option<i64>,
    pub publish_until: Option<i64>,
}

impl KeyRing {
    pub(crate) fn new(db: DatabaseConnection, sealer: Sealer) -> Self {
        Self {
            db,
            sealer,
            loaded: Mutex::new(None),
        }
    }

    /// The key that signs now, creating the first one when there is none.
    pub(crate) async fn signer(&self) -> Result<Arc<SigningKey>, LoginError> {
        if let Some(k) = self.current().await?.0 {
            return Ok(k);
        }
        self.ensure().await?;
        self.current()
            .await?
            .0
            .ok_or_else(|| LoginError::Corrupt("no signing key after creating one".into()))
    }

    /// The published public keys.
    pub(crate) async fn jwks(&self) -> Result<Arc<Vec<serde_json::Value>>, LoginError> {
        Ok(self.current().await?.1)
    }

    async fn current(
        &self,
    ) -> Result<(Option<Arc<SigningKey>>, Arc<Vec<serde_json::Value>>), LoginError> {
        let mut loaded = self.loaded.lock().await;
        if let Some(l) = loaded.as_ref() {
            if l.at.elapsed() < RELOAD && l.signer.is_some() {
                return Ok((l.signer.clone(), Arc::clone(&l.jwks)));
            }
        }
        let rows = db::published_keys(&self.db, now_ms()).await?;
        let signer = match signing_row(&rows, now_ms()) {
            Some(r) => Some(Arc::new(open(&self.sealer, r)?)),
            None => None,
        };
        let jwks = Arc::new(rows.into_iter().map(|r| r.public_jwk).collect());
        *loaded = Some(Loaded {
            at: Instant::now(),
            signer: signer.clone(),
            jwks: Arc::clone(&jwks),
        });
        Ok((signer, jwks))
    }

    /// Creates a signing key when none signs. Processes starting together may each create
    /// one; the newest signs and all are published, which is harmless.
    pub(crate) async fn ensure(&self) -> Result<(), LoginError> {
        let rows = db::published_keys(&self.db, now_ms()).await?;
        if signing_row(&rows, now_ms()).is_some() {
            return Ok(());
        }
        let kid = insert_new(&self.db, &self.sealer, None).await?;
        tracing::info!(kid = %kid, "created the first ID-token signing key");
        *self.loaded.lock().await = None;
        Ok(())
    }
}

fn ttl_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX / 2)
}

fn open(sealer: &Sealer, row: &KeyRow) -> Result<SigningKey, LoginError> {
    let (kind, secret) = sealer.open(&row.private_key, &Place::oidc_signing_key(&row.kid))?;
    if kind != SealedKind::Plain {
        return Err(LoginError::Corrupt(format!(
            "signing key {} is not a key",
            row.kid
        )));
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(secret.expose_secret())
        .map_err(|e| LoginError::Corrupt(format!("signing key {}: {e}", row.kid)))?;
    SigningKey::from_pkcs8(row.kid.clone(), &der)
}

async fn insert_new(
    db: &DatabaseConnection,
    sealer: &Sealer,
    retire_others: Option<(i64, i64)>,
) -> Result<String, LoginError> {
    let now = now_ms();
    let kid = format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%d"),
        crate::random_token(6)?
    );
    let (key, pkcs8) = SigningKey::generate(kid.clone())?;
    let b64 =
        secrecy::zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*pkcs8));
    let sealed = sealer.seal(SealedKind::Plain, &b64, &Place::oidc_signing_key(&kid))?;
    db::insert_key(
        db,
        &KeyRow {
            kid: kid.clone(),
            private_key: sealed,
            public_jwk: key.jwk(),
            created_at: now,
            retired_at: None,
            publish_until: None,
        },
        retire_others,
    )
    .await?;
    Ok(kid)
}

/// Adds a signing key and retires the others: they stay published until the tokens they
/// signed have expired. Returns the new key id.
///
/// # Errors
/// The database or the key generation failed.
pub async fn rotate(
    db: &DatabaseConnection,
    sealer: &Sealer,
    settings: &LoginSettings,
) -> Result<String, LoginError> {
    let retire_at = now_ms() + i64::try_from(ACTIVATION.as_millis()).unwrap_or(60_000);
    let until = retire_at + ttl_ms(settings.access_token_ttl_secs) + MARGIN_MS;
    insert_new(db, sealer, Some((retire_at, until))).await
}

/// The published keys, newest first.
///
/// # Errors
/// The database failed.
pub async fn list(db: &DatabaseConnection) -> Result<Vec<KeyInfo>, LoginError> {
    Ok(db::published_keys(db, now_ms())
        .await?
        .into_iter()
        .map(|r| KeyInfo {
            kid: r.kid,
            created_at: r.created_at,
            retired_at: r.retired_at,
            publish_until: r.publish_until,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kid: &str, created_at: i64, retired_at: Option<i64>) -> KeyRow {
        KeyRow {
            kid: kid.into(),
            private_key: String::new(),
            public_jwk: serde_json::Value::Null,
            created_at,
            retired_at,
            publish_until: None,
        }
    }

    #[test]
    fn a_rotated_in_key_signs_only_once_every_process_publishes_it() {
        const MIN: i64 = 60_000;
        // The first key signs at once.
        let first = [row("a", 1_000 * MIN, None)];
        assert_eq!(signing_row(&first, 1_000 * MIN).unwrap().kid, "a");
        // Rotated at t: b is new, a retires at t + 60 s.
        let t = 2_000 * MIN;
        let rotated = [row("a", 1_000 * MIN, Some(t + MIN)), row("b", t, None)];
        assert_eq!(signing_row(&rotated, t).unwrap().kid, "a");
        assert_eq!(signing_row(&rotated, t + MIN - 1).unwrap().kid, "a");
        assert_eq!(signing_row(&rotated, t + MIN).unwrap().kid, "b");
        // Nothing live: none.
        assert!(signing_row(&[row("a", 0, Some(1))], 2).is_none());
    }
}
