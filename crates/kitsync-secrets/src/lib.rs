//! Secrets handling: the `clientSecret` of applicationSync, from the marketplace's RSA-OAEP
//! ciphertext to an AES-256-GCM sealed form that is all kitsync ever queues or stores.
//!
//! - [`RsaDecryptor`] holds the ISV's RSA private key (PKCS#8 PEM, at least 3072 bits, the
//!   marketplace's minimum) and decrypts with OAEP. The marketplace does not say which OAEP
//!   hashes it uses, so every variant a Java or Python sender produces is tried
//!   ([`OaepVariant::ALL`]), through `kitsync-rsa` (aws-lc; see that crate for why not
//!   aws-lc-rs's safe API or the `rsa` crate).
//! - [`Sealer`] encrypts at rest with the master key: `v2:` + base64(nonce ‖ ciphertext ‖ tag),
//!   bound to the row and column it is stored in ([`Place`], authenticated as associated
//!   data), so a sealed value copied to another row or column does not open. `v1:` values of
//!   older versions were bound to nothing; [`Sealer::open`] refuses them and `kitsync migrate`
//!   re-seals them with [`Sealer::open_legacy_v1`]. A secret that arrived while no private
//!   key was configured is sealed as received, marked as such inside the seal
//!   ([`SealedKind::RsaCiphertext`]), so it can be decrypted later once a key is configured.
//!
//! - [`token`]: API bearer tokens, stored as the hash of their secret.
//!
//! Nothing here logs or `Debug`-prints key material or plaintext.
#![forbid(unsafe_code)]

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use kitsync_rsa::{Oaep, RsaError, RsaPrivateKey, RsaPublicKey};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::fmt;

pub mod token;

/// The smallest RSA key the marketplace accepts, so the smallest kitsync loads.
pub const MIN_RSA_BITS: usize = 3072;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("RSA private key: {0}")]
    BadPrivateKey(String),
    #[error("RSA public key: {0}")]
    BadPublicKey(String),
    #[error(
        "RSA private key: {0} bits is too small; the marketplace only accepts RSA keys of at \
         least 3072 bits, so generate one with \
         `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out key.pem`"
    )]
    KeyTooSmall(usize),
    #[error("clientSecret is not base64 ({0})")]
    NotBase64(String),
    #[error(
        "clientSecret cannot be decrypted with the configured RSA private key (tried RSA-OAEP \
         sha256, sha256-mgf1-sha1 and sha1)"
    )]
    Undecryptable,
    #[error("decrypted clientSecret is not UTF-8")]
    NotUtf8,
    #[error(
        "sealed secret is malformed, belongs to another row, or was sealed with another master \
         key"
    )]
    Unseal,
    #[error(
        "sealed secret was sealed by an older kitsync (format v1, not bound to its row); \
         `kitsync migrate` re-seals it"
    )]
    LegacySeal,
    #[error("master key: {0}")]
    BadMasterKey(String),
    #[error("the marketplace sent no clientSecret for this app")]
    NoClientSecret,
    #[error(
        "the clientSecret was stored as the marketplace's ciphertext (no RSA key was configured \
         when it arrived): configure kit.rsa_private_key_path to decrypt it"
    )]
    NoRsaKey,
    #[error("crypto failure: {0}")]
    Crypto(String),
}

/// An RSA-OAEP parameter set a marketplace sender may use; the label is always empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OaepVariant {
    /// Label hash SHA-256, MGF1-SHA-256 (Python `cryptography` with SHA-256 throughout).
    Sha256,
    /// Label hash SHA-256, MGF1-SHA-1: what Java's `RSA/ECB/OAEPWithSHA-256AndMGF1Padding`
    /// produces unless given explicit `OAEPParameterSpec`.
    Sha256Mgf1Sha1,
    /// Label hash SHA-1, MGF1-SHA-1 (`OAEPWithSHA-1AndMGF1Padding`, OpenSSL's default).
    Sha1,
}

impl OaepVariant {
    /// Every variant, in the order decryption tries them. The order only changes the cost
    /// (each miss is one more private-key operation): a ciphertext made with one variant
    /// would have to pass another's label-hash check by chance (about 2^-160) to decode
    /// under it, so the result is the same in any order.
    pub const ALL: [OaepVariant; 3] = [
        OaepVariant::Sha256,
        OaepVariant::Sha256Mgf1Sha1,
        OaepVariant::Sha1,
    ];

    /// `sha256`, `sha256-mgf1-sha1` or `sha1`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            OaepVariant::Sha256 => "sha256",
            OaepVariant::Sha256Mgf1Sha1 => "sha256-mgf1-sha1",
            OaepVariant::Sha1 => "sha1",
        }
    }

    /// The label and MGF1 hashes, for `kitsync-rsa`.
    #[must_use]
    pub fn oaep(self) -> Oaep {
        match self {
            OaepVariant::Sha256 => Oaep::SHA256,
            OaepVariant::Sha256Mgf1Sha1 => Oaep::SHA256_MGF1_SHA1,
            OaepVariant::Sha1 => Oaep::SHA1,
        }
    }

    fn from_oaep(oaep: Oaep) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.oaep() == oaep)
    }
}

impl fmt::Display for OaepVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The ISV's RSA private key, ready to decrypt `clientSecret`s — and, during a rotation, the
/// keys it replaces: a `clientSecret` is tried with the current key first, then with each
/// previous one, so callbacks encrypted to the old public key still decrypt while the
/// marketplace switches over.
pub struct RsaDecryptor {
    /// The current key first.
    keys: Vec<RsaPrivateKey>,
}

impl fmt::Debug for RsaDecryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RsaDecryptor({} bits, {} keys)",
            self.key_size_bits(),
            self.keys.len()
        )
    }
}

impl RsaDecryptor {
    /// Loads a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) or its DER bytes.
    ///
    /// # Errors
    /// [`SecretsError::BadPrivateKey`] naming what is wrong (PKCS#1 and encrypted keys get the
    /// command that converts them); [`SecretsError::KeyTooSmall`] under 3072 bits.
    pub fn from_pem(pem: &[u8]) -> Result<Self, SecretsError> {
        let text = String::from_utf8_lossy(pem);
        if text.contains("BEGIN RSA PRIVATE KEY") {
            return Err(SecretsError::BadPrivateKey(
                "PKCS#1 (`BEGIN RSA PRIVATE KEY`) is not supported; convert it with \
                 `openssl pkcs8 -topk8 -nocrypt -in key.pem -out key.pk8.pem`"
                    .into(),
            ));
        }
        if text.contains("BEGIN ENCRYPTED PRIVATE KEY") {
            return Err(SecretsError::BadPrivateKey(
                "a passphrase-protected key is not supported; decrypt it with \
                 `openssl pkcs8 -topk8 -nocrypt -in key.pem -out key.pk8.pem`"
                    .into(),
            ));
        }
        let key = load_key(
            pem,
            RsaPrivateKey::from_pkcs8_der,
            SecretsError::BadPrivateKey,
            "a PKCS#8 RSA key",
        )?;
        if key.bits() < MIN_RSA_BITS {
            return Err(SecretsError::KeyTooSmall(key.bits()));
        }
        Ok(Self { keys: vec![key] })
    }

    /// Adds the keys of `previous` after this one's: tried, in order, when the current key
    /// does not decrypt a `clientSecret`.
    #[must_use]
    pub fn with_previous(mut self, previous: Self) -> Self {
        self.keys.extend(previous.keys);
        self
    }

    /// The size of the current key.
    #[must_use]
    pub fn key_size_bits(&self) -> usize {
        self.keys.first().map_or(0, RsaPrivateKey::bits)
    }

    /// How many keys are tried (the current one and the previous ones).
    #[must_use]
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Decrypts a base64 `clientSecret`.
    ///
    /// # Errors
    /// Not base64, or no OAEP variant decrypts it, or the plaintext is not UTF-8.
    pub fn decrypt(&self, ciphertext_b64: &str) -> Result<SecretString, SecretsError> {
        self.decrypt_variant(ciphertext_b64).map(|(_, plain)| plain)
    }

    /// Like [`RsaDecryptor::decrypt`], also saying which variant the sender used.
    ///
    /// # Errors
    /// As [`RsaDecryptor::decrypt`].
    pub fn decrypt_variant(
        &self,
        ciphertext_b64: &str,
    ) -> Result<(OaepVariant, SecretString), SecretsError> {
        self.decrypt_detailed(ciphertext_b64)
            .map(|(_, variant, plain)| (variant, plain))
    }

    /// Like [`RsaDecryptor::decrypt_variant`], also saying which key decrypted it: 0 for the
    /// current key, `i` for the `i`-th previous one.
    ///
    /// # Errors
    /// As [`RsaDecryptor::decrypt`].
    pub fn decrypt_detailed(
        &self,
        ciphertext_b64: &str,
    ) -> Result<(usize, OaepVariant, SecretString), SecretsError> {
        let ct = decode_b64_lenient(ciphertext_b64)?;
        let candidates = OaepVariant::ALL.map(OaepVariant::oaep);
        let mut found = None;
        for (i, key) in self.keys.iter().enumerate() {
            match key.decrypt_any(&candidates, &ct) {
                Ok((oaep, plain)) => {
                    found = Some((i, oaep, plain));
                    break;
                }
                // Not this key's ciphertext (or not its size): try the next one.
                Err(RsaError::Decrypt) => {}
                Err(other) => return Err(SecretsError::Crypto(other.to_string())),
            }
        }
        let (index, oaep, plain) = found.ok_or(SecretsError::Undecryptable)?;
        let variant = OaepVariant::from_oaep(oaep)
            .ok_or_else(|| SecretsError::Crypto("unexpected OAEP parameters".into()))?;
        let s = std::str::from_utf8(&plain).map_err(|_| SecretsError::NotUtf8)?;
        Ok((index, variant, SecretString::from(s.to_owned())))
    }
}

fn decode_b64_lenient(s: &str) -> Result<Vec<u8>, SecretsError> {
    let cleaned: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    B64.decode(cleaned.as_bytes())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(cleaned.as_bytes()))
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(cleaned.as_bytes()))
        .map_err(|e| SecretsError::NotBase64(e.to_string()))
}

/// Fills `buf` from the system's secure random generator (for secrets issued elsewhere, such
/// as webhook signing secrets).
///
/// # Errors
/// [`SecretsError::Crypto`] when the generator fails.
pub fn fill_random(buf: &mut [u8]) -> Result<(), SecretsError> {
    aws_lc_rs::rand::fill(buf).map_err(|_| SecretsError::Crypto("random".into()))
}

/// Where a sealed secret is stored: a table, a column and the row's key. Sealing
/// authenticates it (as AES-GCM associated data), so a sealed value only opens where it was
/// sealed for; copying it to another row or column makes it unopenable.
///
/// The encoding is a version tag, the number of fields, then each field (table, column, key
/// parts) prefixed by its length, so no two places share an encoding whatever their ids
/// contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place<'a>(PlaceKind<'a>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlaceKind<'a> {
    AppClientSecret { tenant_id: &'a str, app_id: &'a str },
    WebhookSecret { endpoint_id: &'a str },
    OidcSigningKey { kid: &'a str },
    OidcKitTokens { session_id: &'a str },
}

/// Starts the associated data of a `v2:` seal; a later format gets another tag.
const PLACE_TAG_V2: &[u8] = b"kitsync-seal-v2";

impl<'a> Place<'a> {
    /// `apps.client_secret` of the app `(tenant_id, app_id)`.
    #[must_use]
    pub fn app_client_secret(tenant_id: &'a str, app_id: &'a str) -> Self {
        Place(PlaceKind::AppClientSecret { tenant_id, app_id })
    }

    /// `webhook_endpoints.secret` of the endpoint `endpoint_id` (`whk_…`).
    #[must_use]
    pub fn webhook_secret(endpoint_id: &'a str) -> Self {
        Place(PlaceKind::WebhookSecret { endpoint_id })
    }

    /// `oidc_keys.private_key` of the signing key `kid`.
    #[must_use]
    pub fn oidc_signing_key(kid: &'a str) -> Self {
        Place(PlaceKind::OidcSigningKey { kid })
    }

    /// `oidc_sessions.kit_tokens` of the login session `session_id`: the Kit access and refresh
    /// tokens behind it.
    #[must_use]
    pub fn oidc_kit_tokens(session_id: &'a str) -> Self {
        Place(PlaceKind::OidcKitTokens { session_id })
    }

    /// Table, column, then the row's key parts.
    fn fields(&self) -> Vec<&'a str> {
        match self.0 {
            PlaceKind::AppClientSecret { tenant_id, app_id } => {
                vec!["apps", "client_secret", tenant_id, app_id]
            }
            PlaceKind::WebhookSecret { endpoint_id } => {
                vec!["webhook_endpoints", "secret", endpoint_id]
            }
            PlaceKind::OidcSigningKey { kid } => vec!["oidc_keys", "private_key", kid],
            PlaceKind::OidcKitTokens { session_id } => {
                vec!["oidc_sessions", "kit_tokens", session_id]
            }
        }
    }

    fn aad(&self) -> Vec<u8> {
        let fields = self.fields();
        let mut out = Vec::with_capacity(
            PLACE_TAG_V2.len() + 4 + fields.iter().map(|f| 4 + f.len()).sum::<usize>(),
        );
        out.extend_from_slice(PLACE_TAG_V2);
        push_len(&mut out, fields.len());
        for f in fields {
            push_len(&mut out, f.len());
            out.extend_from_slice(f.as_bytes());
        }
        out
    }
}

/// Lengths are 4 bytes big-endian; a field of 4 GiB or more cannot be an id, so saturating
/// is only a guard against wrapping into a short length.
fn push_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
}

/// The plaintext `clientSecret` of the app `(tenant_id, app_id)` from its stored value: opened
/// with the master key (bound to the app's row) and, when it was kept as the marketplace's
/// ciphertext because no RSA key was configured then, decrypted with `rsa`, the key configured
/// now.
///
/// # Errors
/// [`SecretsError::NoClientSecret`] for an empty value; the errors of [`Sealer::open`];
/// [`SecretsError::NoRsaKey`] or the decryption's errors for a ciphertext.
pub fn reveal_client_secret(
    sealer: &Sealer,
    rsa: Option<&RsaDecryptor>,
    tenant_id: &str,
    app_id: &str,
    sealed: &str,
) -> Result<SecretString, SecretsError> {
    if sealed.is_empty() {
        return Err(SecretsError::NoClientSecret);
    }
    let (kind, secret) = sealer.open(sealed, &Place::app_client_secret(tenant_id, app_id))?;
    match kind {
        SealedKind::Plain => Ok(secret),
        SealedKind::RsaCiphertext => rsa
            .ok_or(SecretsError::NoRsaKey)?
            .decrypt(secret.expose_secret()),
    }
}

/// AES-256-GCM with the master key — and, during a rotation, the master keys it replaces:
/// sealing always uses the current key; opening tries the current key, then each previous
/// one, so values sealed before the rotation keep opening until they are re-sealed.
#[derive(Clone)]
pub struct Sealer {
    key: [u8; 32],
    previous: Vec<[u8; 32]>,
}

/// A secret opened by [`Sealer::open_detailed`], and whether it must be sealed again to be
/// under the current master key only.
pub struct Opened {
    pub kind: SealedKind,
    pub secret: SecretString,
    /// Opened with a previous master key: re-seal it with the current one.
    pub under_previous_key: bool,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(<redacted>)")
    }
}

/// What a sealed secret holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedKind {
    /// The decrypted client secret.
    Plain,
    /// The marketplace's RSA ciphertext, sealed as received (no private key was configured).
    RsaCiphertext,
}

/// The associated data of the format older versions wrote: the same for every row.
const LEGACY_V1_AAD: &[u8] = b"kitsync-v1";

impl Sealer {
    /// A master key given as base64 of 32 bytes; any other non-empty string is hashed with
    /// SHA-256 (so use a long random value).
    ///
    /// # Errors
    /// An empty key.
    pub fn from_master_key(master: &SecretString) -> Result<Self, SecretsError> {
        Ok(Self {
            key: derive_key(master)?,
            previous: Vec::new(),
        })
    }

    /// Adds the master keys this one replaces, tried in order when the current key does not
    /// open a value. A previous key equal to the current one is ignored.
    ///
    /// # Errors
    /// An empty key.
    pub fn with_previous(mut self, previous: &[SecretString]) -> Result<Self, SecretsError> {
        for master in previous {
            let key = derive_key(master)?;
            if key != self.key && !self.previous.contains(&key) {
                self.previous.push(key);
            }
        }
        Ok(self)
    }

    /// How many previous master keys are configured.
    #[must_use]
    pub fn previous_keys(&self) -> usize {
        self.previous.len()
    }

    /// A fresh random master key, base64 (for `kitsync` to create one on first start).
    ///
    /// # Errors
    /// The system random generator failed.
    pub fn generate_master_key() -> Result<String, SecretsError> {
        let mut k = [0u8; 32];
        aws_lc_rs::rand::fill(&mut k).map_err(|_| SecretsError::Crypto("random".into()))?;
        Ok(B64.encode(k))
    }

    fn aead(&self) -> Result<LessSafeKey, SecretsError> {
        aead(&self.key)
    }

    /// A keyed digest of `value` (32 hex digits): equal for equal values under one master
    /// key, and meaningless without it. Lets the store recognise a repeated secret although
    /// every sealing of it differs.
    #[must_use]
    pub fn fingerprint(&self, value: &str) -> String {
        let mut derived = Sha256::new();
        derived.update(b"kitsync-secret-fingerprint\0");
        derived.update(self.key);
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &derived.finalize());
        let tag = aws_lc_rs::hmac::sign(&key, value.as_bytes());
        tag.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Seals `plaintext` as `kind`, to be stored at `place` only.
    ///
    /// # Errors
    /// The random generator or the cipher failed.
    pub fn seal(
        &self,
        kind: SealedKind,
        plaintext: &str,
        place: &Place<'_>,
    ) -> Result<String, SecretsError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SecretsError::Crypto("random".into()))?;
        let marker: &[u8] = match kind {
            SealedKind::Plain => b"p",
            SealedKind::RsaCiphertext => b"r",
        };
        let mut buf = Zeroizing::new(Vec::with_capacity(1 + plaintext.len() + 16));
        buf.extend_from_slice(marker);
        buf.extend_from_slice(plaintext.as_bytes());
        self.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(place.aad()),
                &mut *buf,
            )
            .map_err(|_| SecretsError::Crypto("seal".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(format!("v2:{}", B64.encode(out)))
    }

    /// Opens a secret sealed for `place`.
    ///
    /// # Errors
    /// [`SecretsError::LegacySeal`] for a `v1:` value (re-sealed by `kitsync migrate`);
    /// [`SecretsError::Unseal`] when it is malformed, sealed for another place or under
    /// another key.
    pub fn open(
        &self,
        sealed: &str,
        place: &Place<'_>,
    ) -> Result<(SealedKind, SecretString), SecretsError> {
        if sealed.starts_with("v1:") {
            return Err(SecretsError::LegacySeal);
        }
        self.open_detailed(sealed, place)
            .map(|o| (o.kind, o.secret))
    }

    /// Like [`Sealer::open`], also saying whether a previous master key opened it.
    ///
    /// # Errors
    /// As [`Sealer::open`].
    pub fn open_detailed(&self, sealed: &str, place: &Place<'_>) -> Result<Opened, SecretsError> {
        if sealed.starts_with("v1:") {
            return Err(SecretsError::LegacySeal);
        }
        let body = sealed.strip_prefix("v2:").ok_or(SecretsError::Unseal)?;
        self.open_body(body, &place.aad())
    }

    /// Opens a `v1:` value, which older versions sealed without binding it to a row. Only for
    /// re-sealing such values where they are stored; everything else uses [`Sealer::open`].
    ///
    /// # Errors
    /// [`SecretsError::Unseal`] when it is not a `v1:` value, is malformed or was sealed under
    /// another key.
    pub fn open_legacy_v1(&self, sealed: &str) -> Result<(SealedKind, SecretString), SecretsError> {
        let body = sealed.strip_prefix("v1:").ok_or(SecretsError::Unseal)?;
        self.open_body(body, LEGACY_V1_AAD)
            .map(|o| (o.kind, o.secret))
    }

    /// Opens with the current key, then with each previous one.
    fn open_body(&self, body: &str, aad: &[u8]) -> Result<Opened, SecretsError> {
        let b = B64
            .decode(body)
            .ok()
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or(SecretsError::Unseal)?;
        let (nonce, ct) = b.split_at(NONCE_LEN);
        let mut nonce_arr = [0u8; NONCE_LEN];
        nonce_arr.copy_from_slice(nonce);
        for (i, key) in std::iter::once(&self.key).chain(&self.previous).enumerate() {
            let mut buf = Zeroizing::new(ct.to_vec());
            let Ok(pt) = aead(key)?.open_in_place(
                Nonce::assume_unique_for_key(nonce_arr),
                Aad::from(aad),
                &mut buf,
            ) else {
                continue;
            };
            let (kind, secret) = unmark(pt)?;
            return Ok(Opened {
                kind,
                secret,
                under_previous_key: i > 0,
            });
        }
        Err(SecretsError::Unseal)
    }
}

fn aead(key: &[u8; 32]) -> Result<LessSafeKey, SecretsError> {
    let unbound =
        UnboundKey::new(&AES_256_GCM, key).map_err(|_| SecretsError::Crypto("AES key".into()))?;
    Ok(LessSafeKey::new(unbound))
}

/// A master key given as base64 of 32 bytes; any other non-empty string is hashed with
/// SHA-256.
fn derive_key(master: &SecretString) -> Result<[u8; 32], SecretsError> {
    let m = master.expose_secret().trim();
    if m.is_empty() {
        return Err(SecretsError::BadMasterKey("must not be empty".into()));
    }
    let mut key = [0u8; 32];
    match B64.decode(m.as_bytes()) {
        Ok(bytes) if bytes.len() == 32 => key.copy_from_slice(&bytes),
        _ => key.copy_from_slice(&Sha256::digest(m.as_bytes())),
    }
    Ok(key)
}

/// The kind marker and the secret of an opened plaintext.
fn unmark(pt: &[u8]) -> Result<(SealedKind, SecretString), SecretsError> {
    let (marker, rest) = pt.split_first().ok_or(SecretsError::Unseal)?;
    let kind = match marker {
        b'p' => SealedKind::Plain,
        b'r' => SealedKind::RsaCiphertext,
        _ => return Err(SecretsError::Unseal),
    };
    let s = std::str::from_utf8(rest).map_err(|_| SecretsError::Unseal)?;
    Ok((kind, SecretString::from(s.to_owned())))
}

/// The key in `pem` (PEM or DER) as `from_der` reads it; `bad` makes the error, saying the
/// key is not `expected` when `from_der` refuses it.
fn load_key<K>(
    pem: &[u8],
    from_der: fn(&[u8]) -> Result<K, RsaError>,
    bad: fn(String) -> SecretsError,
    expected: &str,
) -> Result<K, SecretsError> {
    let der = pem_der(pem).map_err(bad)?;
    from_der(&der).map_err(|e| match e {
        RsaError::NotRsa => bad("not an RSA key".into()),
        other => bad(format!("not {expected} ({other})")),
    })
}

/// The DER inside a PEM (or the bytes themselves when they are not PEM).
fn pem_der(pem: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    let text = String::from_utf8_lossy(pem);
    if !text.contains("-----BEGIN") {
        return Ok(Zeroizing::new(pem.to_vec()));
    }
    let body: Zeroizing<String> = Zeroizing::new(
        text.lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::trim)
            .collect(),
    );
    B64.decode(body.as_bytes())
        .map(Zeroizing::new)
        .map_err(|e| format!("PEM body is not base64 ({e})"))
}

/// `der` as PEM with `label` (`PRIVATE KEY`, `PUBLIC KEY`).
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// The marketplace side of `clientSecret`: encrypts with the public key an ISV uploaded, as
/// the marketplace does (for `kitsync send` and the emulator).
pub struct RsaEncryptor {
    key: RsaPublicKey,
}

impl fmt::Debug for RsaEncryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsaEncryptor({} bits)", self.key.bits())
    }
}

impl RsaEncryptor {
    /// Loads an X.509 `SubjectPublicKeyInfo` PEM (`-----BEGIN PUBLIC KEY-----`) or its DER.
    ///
    /// # Errors
    /// [`SecretsError::BadPublicKey`] naming what is wrong (a PKCS#1 public key gets the
    /// command that converts it).
    pub fn from_pem(pem: &[u8]) -> Result<Self, SecretsError> {
        if String::from_utf8_lossy(pem).contains("BEGIN RSA PUBLIC KEY") {
            return Err(SecretsError::BadPublicKey(
                "PKCS#1 (`BEGIN RSA PUBLIC KEY`) is not supported; convert it with \
                 `openssl rsa -RSAPublicKey_in -in key.pem -pubout -out key.spki.pem`"
                    .into(),
            ));
        }
        let key = load_key(
            pem,
            RsaPublicKey::from_spki_der,
            SecretsError::BadPublicKey,
            "an RSA public key",
        )?;
        Ok(Self { key })
    }

    #[must_use]
    pub fn key_size_bits(&self) -> usize {
        self.key.bits()
    }

    /// RSA-OAEP `variant` of `plaintext`, base64: a `clientSecret` as the marketplace sends it.
    ///
    /// # Errors
    /// Encryption failed (plaintext too long for the key and variant).
    pub fn encrypt(&self, plaintext: &str, variant: OaepVariant) -> Result<String, SecretsError> {
        let ct = self
            .key
            .encrypt(variant.oaep(), plaintext.as_bytes())
            .map_err(|e| SecretsError::Crypto(e.to_string()))?;
        Ok(B64.encode(ct))
    }
}

/// A throwaway RSA key pair, for tests, the emulator and benchmarks: the marketplace side of
/// `clientSecret` encryption.
pub struct TestKeyPair {
    private: aws_lc_rs::rsa::PrivateDecryptingKey,
    public: RsaEncryptor,
    spki: Vec<u8>,
}

impl TestKeyPair {
    /// # Errors
    /// Key generation failed.
    pub fn generate_3072() -> Result<Self, SecretsError> {
        use aws_lc_rs::encoding::AsDer;
        let private =
            aws_lc_rs::rsa::PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa3072)
                .map_err(|_| SecretsError::Crypto("RSA key generation".into()))?;
        let spki = private
            .public_key()
            .as_der()
            .map_err(|_| SecretsError::Crypto("public key encoding".into()))?;
        let public = RsaEncryptor::from_pem(spki.as_ref())
            .map_err(|e| SecretsError::Crypto(format!("public key: {e}")))?;
        Ok(Self {
            private,
            public,
            spki: spki.as_ref().to_vec(),
        })
    }

    /// The private key as PKCS#8 PEM (what an ISV puts at `kit.rsa_private_key_path`).
    ///
    /// # Errors
    /// Encoding failed.
    pub fn private_pem(&self) -> Result<String, SecretsError> {
        use aws_lc_rs::encoding::AsDer;
        let der = self
            .private
            .as_der()
            .map_err(|_| SecretsError::Crypto("PKCS#8 encoding".into()))?;
        Ok(pem("PRIVATE KEY", der.as_ref()))
    }

    /// The public key as X.509 `SubjectPublicKeyInfo` PEM (what an ISV uploads).
    #[must_use]
    pub fn public_pem(&self) -> String {
        pem("PUBLIC KEY", &self.spki)
    }

    /// Encrypts like the marketplace, with the public key only: RSA-OAEP `variant`, base64.
    ///
    /// # Errors
    /// Encryption failed (plaintext too long).
    pub fn encrypt(&self, plaintext: &str, variant: OaepVariant) -> Result<String, SecretsError> {
        self.public.encrypt(plaintext, variant)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Sealed by kitsync before places existed (format v1), under [`LEGACY_MASTER`]; made
    /// with Python's `cryptography` (AES-GCM, associated data `kitsync-v1`), not with this
    /// crate, so it pins the old format rather than whatever the code writes today.
    const LEGACY_MASTER: &str = "EyDRv5kwtLyR/HDhBnwtPs6PhaxYxGm3ktRoL4CdcFY=";
    const LEGACY_V1: &str =
        "v1:Rk8R8dRt5hPtymI/2lHzrbAkGs5POV5rGmqq1nB8aFiQ/dTOyoS0xVSPV6mO0ulCdQ==";

    #[test]
    fn a_rotated_master_key_still_opens_what_the_previous_one_sealed() {
        let old_master = SecretString::from(Sealer::generate_master_key().unwrap());
        let new_master = SecretString::from(Sealer::generate_master_key().unwrap());
        let place = Place::app_client_secret("t1", "a1");
        let old = Sealer::from_master_key(&old_master).unwrap();
        let sealed_before = old.seal(SealedKind::Plain, "before", &place).unwrap();
        let rotated = Sealer::from_master_key(&new_master)
            .unwrap()
            .with_previous(&[old_master.clone(), new_master.clone()])
            .unwrap();
        // The current key is not counted twice.
        assert_eq!(rotated.previous_keys(), 1);
        let opened = rotated.open_detailed(&sealed_before, &place).unwrap();
        assert_eq!(opened.secret.expose_secret(), "before");
        assert!(opened.under_previous_key);
        // New values are sealed with the new key only.
        let sealed_after = rotated.seal(SealedKind::Plain, "after", &place).unwrap();
        assert!(
            !rotated
                .open_detailed(&sealed_after, &place)
                .unwrap()
                .under_previous_key
        );
        assert!(matches!(
            old.open(&sealed_after, &place),
            Err(SecretsError::Unseal)
        ));
        // Without the previous key, the old value no longer opens; the binding to its row
        // holds under every key.
        let without = Sealer::from_master_key(&new_master).unwrap();
        assert!(matches!(
            without.open(&sealed_before, &place),
            Err(SecretsError::Unseal)
        ));
        assert!(rotated
            .open(&sealed_before, &Place::app_client_secret("t1", "a2"))
            .is_err());
        // A v1 value sealed under a previous key opens for re-sealing too.
        let legacy = Sealer::from_master_key(&new_master)
            .unwrap()
            .with_previous(&[SecretString::from(LEGACY_MASTER.to_owned())])
            .unwrap();
        assert!(legacy.open_legacy_v1(LEGACY_V1).is_ok());
        assert!(rotated
            .with_previous(&[SecretString::from(String::new())])
            .is_err());
    }

    #[test]
    fn a_rotated_rsa_key_still_decrypts_what_was_encrypted_to_the_previous_one() {
        let old = TestKeyPair::generate_3072().unwrap();
        let new = TestKeyPair::generate_3072().unwrap();
        let load = |kp: &TestKeyPair| {
            RsaDecryptor::from_pem(kp.private_pem().unwrap().as_bytes()).unwrap()
        };
        let both = load(&new).with_previous(load(&old));
        assert_eq!(both.key_count(), 2);
        for variant in OaepVariant::ALL {
            let to_old = old.encrypt("s-old", variant).unwrap();
            let to_new = new.encrypt("s-new", variant).unwrap();
            let (v, plain) = both.decrypt_variant(&to_old).unwrap();
            assert_eq!((v, plain.expose_secret()), (variant, "s-old"));
            assert_eq!(both.decrypt(&to_new).unwrap().expose_secret(), "s-new");
            // The new key alone cannot read what was encrypted to the old one.
            assert!(matches!(
                load(&new).decrypt(&to_old),
                Err(SecretsError::Undecryptable)
            ));
        }
    }

    fn fresh_sealer() -> Sealer {
        Sealer::from_master_key(&SecretString::from(Sealer::generate_master_key().unwrap()))
            .unwrap()
    }

    #[test]
    fn the_public_key_alone_encrypts_what_the_private_key_decrypts() {
        let kp = TestKeyPair::generate_3072().unwrap();
        let public = kp.public_pem();
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let enc = RsaEncryptor::from_pem(public.as_bytes()).unwrap();
        assert_eq!(enc.key_size_bits(), 3072);
        let dec = RsaDecryptor::from_pem(kp.private_pem().unwrap().as_bytes()).unwrap();
        for variant in OaepVariant::ALL {
            let ct = enc.encrypt("from the public half", variant).unwrap();
            let (used, pt) = dec.decrypt_variant(&ct).unwrap();
            assert_eq!(
                (pt.expose_secret(), used),
                ("from the public half", variant)
            );
        }
        let e = RsaEncryptor::from_pem(
            b"-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("openssl rsa"), "{e}");
        assert!(RsaEncryptor::from_pem(kp.private_pem().unwrap().as_bytes()).is_err());
    }

    #[test]
    fn decrypts_every_oaep_variant_and_seals_at_rest() {
        let kp = TestKeyPair::generate_3072().unwrap();
        let dec = RsaDecryptor::from_pem(kp.private_pem().unwrap().as_bytes()).unwrap();
        assert_eq!(dec.key_size_bits(), 3072);
        for variant in OaepVariant::ALL {
            let ct = kp.encrypt("s3cr3t-value", variant).unwrap();
            let (used, plain) = dec.decrypt_variant(&ct).unwrap();
            assert_eq!((used, plain.expose_secret()), (variant, "s3cr3t-value"));
        }
        assert!(matches!(
            dec.decrypt("bm90IGEgY2lwaGVydGV4dA=="),
            Err(SecretsError::Undecryptable)
        ));
        assert!(matches!(
            dec.decrypt("%%%"),
            Err(SecretsError::NotBase64(_))
        ));

        let sealer = fresh_sealer();
        let place = Place::app_client_secret("t1", "a1");
        let sealed = sealer
            .seal(SealedKind::Plain, "s3cr3t-value", &place)
            .unwrap();
        assert!(sealed.starts_with("v2:") && !sealed.contains("s3cr3t"));
        let (kind, pt) = sealer.open(&sealed, &place).unwrap();
        assert_eq!(kind, SealedKind::Plain);
        assert_eq!(pt.expose_secret(), "s3cr3t-value");
        let other =
            Sealer::from_master_key(&SecretString::from("another key".to_string())).unwrap();
        assert!(matches!(
            other.open(&sealed, &place),
            Err(SecretsError::Unseal)
        ));
        assert!(format!("{sealer:?}{dec:?}").contains("redacted"));
        assert!(!format!("{dec:?}").contains(&kp.private_pem().unwrap()[28..60]));
    }

    #[test]
    fn the_undecryptable_message_names_every_variant_tried() {
        let msg = SecretsError::Undecryptable.to_string();
        for v in OaepVariant::ALL {
            assert!(msg.contains(v.as_str()), "{msg} lacks {v}");
        }
        let names: Vec<&str> = OaepVariant::ALL.iter().map(|v| v.as_str()).collect();
        assert_eq!(names, ["sha256", "sha256-mgf1-sha1", "sha1"]);
    }

    #[test]
    fn a_sealed_value_opens_only_at_its_place() {
        let sealer = fresh_sealer();
        let t1a1 = Place::app_client_secret("t1", "a1");
        let sealed = sealer
            .seal(SealedKind::Plain, "client-secret", &t1a1)
            .unwrap();
        assert_eq!(
            sealer.open(&sealed, &t1a1).unwrap().1.expose_secret(),
            "client-secret"
        );
        for elsewhere in [
            Place::app_client_secret("t2", "a2"),
            Place::app_client_secret("t1", "a2"),
            Place::app_client_secret("t2", "a1"),
            // The same bytes split differently must not be the same place.
            Place::app_client_secret("t1a", "1"),
            Place::app_client_secret("", "t1a1"),
            Place::webhook_secret("t1"),
            Place::webhook_secret("a1"),
        ] {
            assert!(
                matches!(sealer.open(&sealed, &elsewhere), Err(SecretsError::Unseal)),
                "{elsewhere:?}"
            );
        }
        let hook = Place::webhook_secret("whk_000000000001");
        let sealed_hook = sealer.seal(SealedKind::Plain, "whsec_x", &hook).unwrap();
        assert!(sealer.open(&sealed_hook, &hook).is_ok());
        assert!(sealer
            .open(&sealed_hook, &Place::webhook_secret("whk_000000000002"))
            .is_err());
        assert!(sealer
            .open(
                &sealed_hook,
                &Place::app_client_secret("whk_000000000001", "")
            )
            .is_err());
    }

    #[test]
    fn place_encodings_are_distinct() {
        let places = [
            Place::app_client_secret("t1", "a1"),
            Place::app_client_secret("t1a", "1"),
            Place::app_client_secret("t1", "a1\0"),
            Place::webhook_secret("t1"),
            Place::webhook_secret(""),
        ];
        for (i, a) in places.iter().enumerate() {
            for b in &places[i + 1..] {
                assert_ne!(a.aad(), b.aad(), "{a:?} vs {b:?}");
            }
        }
        assert!(places[0].aad().starts_with(PLACE_TAG_V2));
    }

    #[test]
    fn tampering_is_detected() {
        let sealer = fresh_sealer();
        let place = Place::webhook_secret("whk_1");
        let sealed = sealer.seal(SealedKind::Plain, "whsec_abc", &place).unwrap();
        let mut raw = B64.decode(&sealed[3..]).unwrap();
        for i in [0, NONCE_LEN, raw.len() - 1] {
            raw[i] ^= 1;
            let forged = format!("v2:{}", B64.encode(&raw));
            assert!(
                matches!(sealer.open(&forged, &place), Err(SecretsError::Unseal)),
                "byte {i}"
            );
            raw[i] ^= 1;
        }
        assert!(sealer
            .open(&format!("v2:{}", B64.encode(&raw)), &place)
            .is_ok());
        let truncated = format!("v2:{}", B64.encode(&raw[..raw.len() - 1]));
        assert!(sealer.open(&truncated, &place).is_err());
        assert!(sealer.open("v2:", &place).is_err());
        assert!(sealer.open("v3:AAAA", &place).is_err());
        assert!(sealer.open(&sealed[3..], &place).is_err());
    }

    #[test]
    fn legacy_v1_values_are_refused_by_open_and_read_by_the_reseal_path() {
        let sealer =
            Sealer::from_master_key(&SecretString::from(LEGACY_MASTER.to_owned())).unwrap();
        let place = Place::app_client_secret("t1", "a1");
        let e = sealer.open(LEGACY_V1, &place).unwrap_err();
        assert!(matches!(e, SecretsError::LegacySeal));
        assert!(e.to_string().contains("kitsync migrate"), "{e}");
        let (kind, plain) = sealer.open_legacy_v1(LEGACY_V1).unwrap();
        assert_eq!(
            (kind, plain.expose_secret()),
            (SealedKind::Plain, "legacy-client-secret")
        );
        // Re-sealed, it is bound to its place like any v2 value.
        let resealed = sealer.seal(kind, plain.expose_secret(), &place).unwrap();
        assert_eq!(
            sealer.open(&resealed, &place).unwrap().1.expose_secret(),
            "legacy-client-secret"
        );
        assert!(matches!(
            sealer.open_legacy_v1(&resealed),
            Err(SecretsError::Unseal)
        ));
        assert!(matches!(
            fresh_sealer().open_legacy_v1(LEGACY_V1),
            Err(SecretsError::Unseal)
        ));
    }

    #[test]
    fn rejects_bad_keys_clearly() {
        let e = RsaDecryptor::from_pem(
            b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----",
        )
        .unwrap_err();
        assert!(e.to_string().contains("openssl pkcs8"));
        assert!(RsaDecryptor::from_pem(b"garbage").is_err());
        assert!(Sealer::from_master_key(&SecretString::from(String::new())).is_err());
    }
}
