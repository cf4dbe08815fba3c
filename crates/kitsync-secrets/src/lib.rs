//! Secrets handling: the `clientSecret` of applicationSync, from the marketplace's RSA-OAEP
//! ciphertext to an AES-256-GCM sealed form that is all kitsync ever queues or stores.
//!
//! - [`RsaDecryptor`] holds the ISV's RSA private key (PKCS#8 PEM) and decrypts with OAEP,
//!   trying SHA-256 (MGF1-SHA-256) first and SHA-1 (MGF1-SHA-1) second, since the marketplace
//!   does not say which it uses (kit-protocol.md §4.1, §16.9).
//! - [`Sealer`] encrypts at rest with the master key: `v1:` + base64(nonce ‖ ciphertext ‖ tag).
//!   A secret that arrived while no private key was configured is sealed as received, marked
//!   `rsa:` inside the seal, so it can be decrypted later once a key is configured.
//!
//! - [`token`]: API bearer tokens, stored as the hash of their secret.
//!
//! Built on `aws-lc-rs` (constant-time RSA decryption; the `rsa` crate carries
//! RUSTSEC-2023-0071). Nothing here logs or `Debug`-prints key material or plaintext.
#![forbid(unsafe_code)]

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rsa::{
    OaepAlgorithm, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256,
};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::fmt;

pub mod token;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("RSA private key: {0}")]
    BadPrivateKey(String),
    #[error("clientSecret is not base64 ({0})")]
    NotBase64(String),
    #[error("clientSecret cannot be decrypted with the configured RSA private key (tried OAEP SHA-256 and SHA-1)")]
    Undecryptable,
    #[error("decrypted clientSecret is not UTF-8")]
    NotUtf8,
    #[error("sealed secret is malformed or was sealed with another master key")]
    Unseal,
    #[error("master key: {0}")]
    BadMasterKey(String),
    #[error("crypto failure: {0}")]
    Crypto(String),
}

/// The OAEP variants tried, in order.
const OAEP_VARIANTS: [&OaepAlgorithm; 2] = [&OAEP_SHA256_MGF1SHA256, &OAEP_SHA1_MGF1SHA1];

/// The ISV's RSA private key, ready to decrypt `clientSecret`s.
pub struct RsaDecryptor {
    key: OaepPrivateDecryptingKey,
}

impl fmt::Debug for RsaDecryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsaDecryptor({} bits)", self.key.key_size_bits())
    }
}

impl RsaDecryptor {
    /// Loads a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) or its DER bytes.
    ///
    /// # Errors
    /// [`SecretsError::BadPrivateKey`] naming what is wrong (PKCS#1 keys get the command that
    /// converts them).
    pub fn from_pem(pem: &[u8]) -> Result<Self, SecretsError> {
        let text = String::from_utf8_lossy(pem);
        if text.contains("BEGIN RSA PRIVATE KEY") {
            return Err(SecretsError::BadPrivateKey(
                "PKCS#1 (`BEGIN RSA PRIVATE KEY`) is not supported; convert it with \
                 `openssl pkcs8 -topk8 -nocrypt -in key.pem -out key.pk8.pem`"
                    .into(),
            ));
        }
        let der = if text.contains("-----BEGIN") {
            let body: String = text
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .map(str::trim)
                .collect();
            B64.decode(body.as_bytes())
                .map_err(|e| SecretsError::BadPrivateKey(format!("PEM body is not base64 ({e})")))?
        } else {
            pem.to_vec()
        };
        let key = PrivateDecryptingKey::from_pkcs8(&der)
            .map_err(|e| SecretsError::BadPrivateKey(format!("not a PKCS#8 RSA key ({e})")))?;
        let key = OaepPrivateDecryptingKey::new(key)
            .map_err(|_| SecretsError::BadPrivateKey("unusable for OAEP".into()))?;
        Ok(Self { key })
    }

    #[must_use]
    pub fn key_size_bits(&self) -> usize {
        self.key.key_size_bits()
    }

    /// Decrypts a base64 `clientSecret`.
    ///
    /// # Errors
    /// Not base64, or no OAEP variant decrypts it, or the plaintext is not UTF-8.
    pub fn decrypt(&self, ciphertext_b64: &str) -> Result<SecretString, SecretsError> {
        let ct = decode_b64_lenient(ciphertext_b64)?;
        let mut out = vec![0u8; self.key.min_output_size()];
        for alg in OAEP_VARIANTS {
            if let Ok(pt) = self.key.decrypt(alg, &ct, &mut out, None) {
                let s = std::str::from_utf8(pt).map_err(|_| SecretsError::NotUtf8)?;
                return Ok(SecretString::from(s.to_owned()));
            }
        }
        Err(SecretsError::Undecryptable)
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

/// AES-256-GCM with the master key.
#[derive(Clone)]
pub struct Sealer {
    key: [u8; 32],
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

impl Sealer {
    /// A master key given as base64 of 32 bytes; any other non-empty string is hashed with
    /// SHA-256 (so use a long random value).
    ///
    /// # Errors
    /// An empty key.
    pub fn from_master_key(master: &SecretString) -> Result<Self, SecretsError> {
        let m = master.expose_secret().trim();
        if m.is_empty() {
            return Err(SecretsError::BadMasterKey("must not be empty".into()));
        }
        let mut key = [0u8; 32];
        match B64.decode(m.as_bytes()) {
            Ok(bytes) if bytes.len() == 32 => key.copy_from_slice(&bytes),
            _ => key.copy_from_slice(&Sha256::digest(m.as_bytes())),
        }
        Ok(Self { key })
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
        let unbound = UnboundKey::new(&AES_256_GCM, &self.key)
            .map_err(|_| SecretsError::Crypto("AES key".into()))?;
        Ok(LessSafeKey::new(unbound))
    }

    /// Seals `plaintext` as `kind`.
    ///
    /// # Errors
    /// The random generator or the cipher failed.
    pub fn seal(&self, kind: SealedKind, plaintext: &str) -> Result<String, SecretsError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SecretsError::Crypto("random".into()))?;
        let marker: &[u8] = match kind {
            SealedKind::Plain => b"p",
            SealedKind::RsaCiphertext => b"r",
        };
        let mut buf = Vec::with_capacity(1 + plaintext.len() + 16);
        buf.extend_from_slice(marker);
        buf.extend_from_slice(plaintext.as_bytes());
        self.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(b"kitsync-v1"),
                &mut buf,
            )
            .map_err(|_| SecretsError::Crypto("seal".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(format!("v1:{}", B64.encode(out)))
    }

    /// Opens a sealed secret.
    ///
    /// # Errors
    /// [`SecretsError::Unseal`] when it is malformed or sealed under another key.
    pub fn open(&self, sealed: &str) -> Result<(SealedKind, SecretString), SecretsError> {
        let b = sealed
            .strip_prefix("v1:")
            .and_then(|s| B64.decode(s).ok())
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or(SecretsError::Unseal)?;
        let (nonce, ct) = b.split_at(NONCE_LEN);
        let mut nonce_arr = [0u8; NONCE_LEN];
        nonce_arr.copy_from_slice(nonce);
        let mut buf = ct.to_vec();
        let pt = self
            .aead()?
            .open_in_place(
                Nonce::assume_unique_for_key(nonce_arr),
                Aad::from(b"kitsync-v1"),
                &mut buf,
            )
            .map_err(|_| SecretsError::Unseal)?;
        let (marker, rest) = pt.split_first().ok_or(SecretsError::Unseal)?;
        let kind = match marker {
            b'p' => SealedKind::Plain,
            b'r' => SealedKind::RsaCiphertext,
            _ => return Err(SecretsError::Unseal),
        };
        let s = std::str::from_utf8(rest).map_err(|_| SecretsError::Unseal)?;
        Ok((kind, SecretString::from(s.to_owned())))
    }
}

/// A throwaway RSA key pair, for tests, the emulator and benchmarks: the marketplace side of
/// `clientSecret` encryption.
pub struct TestKeyPair {
    private: PrivateDecryptingKey,
}

impl TestKeyPair {
    /// # Errors
    /// Key generation failed.
    pub fn generate_3072() -> Result<Self, SecretsError> {
        let private = PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa3072)
            .map_err(|_| SecretsError::Crypto("RSA key generation".into()))?;
        Ok(Self { private })
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
        let b64 = B64.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(chunk));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Ok(pem)
    }

    /// Encrypts like the marketplace: OAEP (SHA-256 when `sha256`, else SHA-1), base64.
    ///
    /// # Errors
    /// Encryption failed (plaintext too long).
    pub fn encrypt(&self, plaintext: &str, sha256: bool) -> Result<String, SecretsError> {
        let public = OaepPublicEncryptingKey::new(self.private.public_key())
            .map_err(|_| SecretsError::Crypto("public key".into()))?;
        let alg = if sha256 {
            &OAEP_SHA256_MGF1SHA256
        } else {
            &OAEP_SHA1_MGF1SHA1
        };
        let mut out = vec![0u8; public.ciphertext_size()];
        let ct = public
            .encrypt(alg, plaintext.as_bytes(), &mut out, None)
            .map_err(|_| SecretsError::Crypto("encrypt".into()))?;
        Ok(B64.encode(ct))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decrypts_both_oaep_variants_and_seals_at_rest() {
        let kp = TestKeyPair::generate_3072().unwrap();
        let dec = RsaDecryptor::from_pem(kp.private_pem().unwrap().as_bytes()).unwrap();
        assert_eq!(dec.key_size_bits(), 3072);
        for sha256 in [true, false] {
            let ct = kp.encrypt("s3cr3t-value", sha256).unwrap();
            assert_eq!(dec.decrypt(&ct).unwrap().expose_secret(), "s3cr3t-value");
        }
        assert!(matches!(
            dec.decrypt("bm90IGEgY2lwaGVydGV4dA=="),
            Err(SecretsError::Undecryptable)
        ));
        assert!(matches!(
            dec.decrypt("%%%"),
            Err(SecretsError::NotBase64(_))
        ));

        let sealer =
            Sealer::from_master_key(&SecretString::from(Sealer::generate_master_key().unwrap()))
                .unwrap();
        let sealed = sealer.seal(SealedKind::Plain, "s3cr3t-value").unwrap();
        assert!(!sealed.contains("s3cr3t"));
        let (kind, pt) = sealer.open(&sealed).unwrap();
        assert_eq!(kind, SealedKind::Plain);
        assert_eq!(pt.expose_secret(), "s3cr3t-value");
        let other =
            Sealer::from_master_key(&SecretString::from("another key".to_string())).unwrap();
        assert!(matches!(other.open(&sealed), Err(SecretsError::Unseal)));
        assert!(format!("{sealer:?}{dec:?}").contains("redacted"));
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
