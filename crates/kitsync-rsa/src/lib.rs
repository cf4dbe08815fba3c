//! kitsync-rsa: RSA-OAEP with a label hash and an MGF1 hash chosen independently, on aws-lc.
//!
//! Why this crate exists: the marketplace encrypts an app's `clientSecret` with RSA-OAEP but
//! does not say with which hashes, and the three combinations a Java or Python sender
//! produces must all be decrypted: SHA-1 with MGF1-SHA-1, SHA-256 with MGF1-SHA-256, and
//! SHA-256 with MGF1-SHA-1 (what Java's `RSA/ECB/OAEPWithSHA-256AndMGF1Padding` means by
//! default). aws-lc-rs's safe API only offers OAEP with equal label and MGF1 hashes, and the
//! `rsa` crate is not an option (RUSTSEC-2023-0071, a timing side channel in its private-key
//! operation). aws-lc itself supports every combination, constant-time, so this crate calls
//! it directly through `aws-lc-sys` — the same build of aws-lc that aws-lc-rs links, so the
//! workspace compiles aws-lc once.
//!
//! This is the workspace's one unsafe island: every `unsafe` block lives in the private `ffi`
//! module, each with a `SAFETY:` comment, behind RAII owners that free what aws-lc allocated.
//! The public types hold no aws-lc pointer — [`RsaPrivateKey`] keeps the PKCS#8 DER in a
//! zeroize-on-drop box and parses it on every call (decryption is rare: one per app
//! binding) — so they are `Send + Sync` without any `unsafe impl`.
//!
//! Nothing here logs, and no `Debug` output shows key material or plaintext.

#[allow(unsafe_code)]
mod ffi;

use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretBox};
use std::fmt;

/// A hash function usable for the OAEP label hash or for MGF1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OaepHash {
    Sha1,
    Sha256,
}

/// RSA-OAEP parameters: the hash of the (always empty) label and the hash inside MGF1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Oaep {
    pub label_hash: OaepHash,
    pub mgf1_hash: OaepHash,
}

impl Oaep {
    /// SHA-1 label hash, MGF1-SHA-1 (the historical default of most libraries).
    pub const SHA1: Oaep = Oaep {
        label_hash: OaepHash::Sha1,
        mgf1_hash: OaepHash::Sha1,
    };
    /// SHA-256 label hash, MGF1-SHA-256.
    pub const SHA256: Oaep = Oaep {
        label_hash: OaepHash::Sha256,
        mgf1_hash: OaepHash::Sha256,
    };
    /// SHA-256 label hash, MGF1-SHA-1 (Java's `OAEPWithSHA-256AndMGF1Padding` default).
    pub const SHA256_MGF1_SHA1: Oaep = Oaep {
        label_hash: OaepHash::Sha256,
        mgf1_hash: OaepHash::Sha1,
    };
}

#[derive(Debug, thiserror::Error)]
pub enum RsaError {
    #[error("not a DER-encoded PKCS#8 private key")]
    NotPkcs8,
    #[error("not a DER-encoded SubjectPublicKeyInfo public key")]
    NotSpki,
    #[error("not an RSA key")]
    NotRsa,
    /// Deliberately without detail: why OAEP decoding failed must not be observable.
    #[error("RSA-OAEP decryption failed")]
    Decrypt,
    #[error("RSA-OAEP encryption failed (is the plaintext too long for the key?)")]
    Encrypt,
    /// aws-lc refused an operation that cannot fail with valid inputs (allocation, …).
    #[error("aws-lc: {0} failed")]
    Internal(&'static str),
}

/// An RSA private key (PKCS#8 DER), kept zeroize-on-drop.
pub struct RsaPrivateKey {
    der: SecretBox<[u8]>,
    bits: usize,
}

impl fmt::Debug for RsaPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsaPrivateKey({} bits)", self.bits)
    }
}

impl RsaPrivateKey {
    /// Checks that `der` is a PKCS#8 RSA private key (nothing trailing) and keeps a copy.
    ///
    /// # Errors
    /// [`RsaError::NotPkcs8`] when it does not parse (or aws-lc's consistency checks of the
    /// key fail), [`RsaError::NotRsa`] for another key type (RSA-PSS-only keys included).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, RsaError> {
        let key = ffi::Pkey::parse_private(der)?;
        let bits = key.rsa_bits()?;
        Ok(Self {
            der: SecretBox::from(Box::<[u8]>::from(der)),
            bits,
        })
    }

    /// The modulus size.
    #[must_use]
    pub fn bits(&self) -> usize {
        self.bits
    }

    fn parse(&self) -> Result<ffi::Pkey, RsaError> {
        ffi::Pkey::parse_private(self.der.expose_secret())
    }

    /// Decrypts `ciphertext` with RSA-OAEP `oaep` and an empty label.
    ///
    /// # Errors
    /// [`RsaError::Decrypt`] whatever the reason (wrong parameters, wrong key, tampered or
    /// truncated ciphertext).
    pub fn decrypt(&self, oaep: Oaep, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, RsaError> {
        self.parse()?.decrypt_oaep(oaep, ciphertext)
    }

    /// Tries each of `candidates` in order and returns the first that decrypts, with the
    /// plaintext; the key is parsed once for all of them.
    ///
    /// # Errors
    /// [`RsaError::Decrypt`] when none does.
    pub fn decrypt_any(
        &self,
        candidates: &[Oaep],
        ciphertext: &[u8],
    ) -> Result<(Oaep, Zeroizing<Vec<u8>>), RsaError> {
        let key = self.parse()?;
        for &oaep in candidates {
            if let Ok(plain) = key.decrypt_oaep(oaep, ciphertext) {
                return Ok((oaep, plain));
            }
        }
        Err(RsaError::Decrypt)
    }

    /// Encrypts with the public half of this key.
    ///
    /// # Errors
    /// [`RsaError::Encrypt`] when `plaintext` is too long for the key and parameters.
    pub fn encrypt(&self, oaep: Oaep, plaintext: &[u8]) -> Result<Vec<u8>, RsaError> {
        self.parse()?.encrypt_oaep(oaep, plaintext)
    }
}

/// An RSA public key (SubjectPublicKeyInfo DER, what `openssl pkey -pubout` writes as PEM).
#[derive(Clone)]
pub struct RsaPublicKey {
    der: Box<[u8]>,
    bits: usize,
}

impl fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsaPublicKey({} bits)", self.bits)
    }
}

impl RsaPublicKey {
    /// Checks that `der` is an RSA SubjectPublicKeyInfo (nothing trailing) and keeps a copy.
    ///
    /// # Errors
    /// [`RsaError::NotSpki`] when it does not parse, [`RsaError::NotRsa`] for another key
    /// type.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, RsaError> {
        let key = ffi::Pkey::parse_public(der)?;
        let bits = key.rsa_bits()?;
        Ok(Self {
            der: Box::from(der),
            bits,
        })
    }

    /// The modulus size.
    #[must_use]
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// Encrypts like the marketplace does: RSA-OAEP `oaep`, empty label.
    ///
    /// # Errors
    /// [`RsaError::Encrypt`] when `plaintext` is too long for the key and parameters.
    pub fn encrypt(&self, oaep: Oaep, plaintext: &[u8]) -> Result<Vec<u8>, RsaError> {
        ffi::Pkey::parse_public(&self.der)?.encrypt_oaep(oaep, plaintext)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<RsaPrivateKey>();
        assert_send_sync::<RsaPublicKey>();
    }

    #[test]
    fn garbage_is_not_a_key() {
        assert!(matches!(
            RsaPrivateKey::from_pkcs8_der(b"not a key"),
            Err(RsaError::NotPkcs8)
        ));
        assert!(matches!(
            RsaPublicKey::from_spki_der(b"not a key"),
            Err(RsaError::NotSpki)
        ));
        assert!(matches!(
            RsaPrivateKey::from_pkcs8_der(&[]),
            Err(RsaError::NotPkcs8)
        ));
    }
}
