//! Standard Webhooks signatures (<https://www.standardwebhooks.com>).
//!
//! A secret is `whsec_` followed by the base64 of the key bytes (kitsync issues 32 random
//! bytes). A message is signed as `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))
//! and sent with the headers `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature`. Receivers verify with any Standard Webhooks library, or by recomputing
//! the HMAC over the raw body bytes and comparing in constant time.
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// The prefix of every signing secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a secret kitsync issues.
const SECRET_BYTES: usize = 32;

/// A secret that is not `whsec_<base64>`, or a random generator failure.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("a webhook secret is `whsec_` followed by base64")]
    BadSecret,
    #[error("the system random generator failed")]
    Random,
}

/// A signing key (the decoded bytes of a `whsec_…` secret); `Debug` never shows it.
#[derive(Clone)]
pub struct SigningKey {
    mac: Hmac<Sha256>,
    len: usize,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(<{} bytes, redacted>)", self.len)
    }
}

impl SigningKey {
    /// Decodes `whsec_<base64>`.
    ///
    /// # Errors
    /// [`SigningError::BadSecret`] without the prefix, with bad base64 or no key bytes.
    pub fn from_secret(secret: &SecretString) -> Result<Self, SigningError> {
        let b64 = secret
            .expose_secret()
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SigningError::BadSecret)?;
        let key = B64.decode(b64).map_err(|_| SigningError::BadSecret)?;
        let mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| SigningError::BadSecret)?;
        if key.is_empty() {
            return Err(SigningError::BadSecret);
        }
        Ok(SigningKey {
            mac,
            len: key.len(),
        })
    }

    /// `v1,<base64 signature>` of `body` sent as message `msg_id` at `timestamp` (Unix s).
    #[must_use]
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", B64.encode(self.mac(msg_id, timestamp, body)))
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
        let mut mac = self.mac.clone();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }

    /// Whether a `webhook-signature` header (space-separated `v1,<sig>` entries) holds a
    /// valid signature of the message; compared in constant time.
    #[must_use]
    pub fn verify(&self, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        let expected = self.mac(msg_id, timestamp, body);
        header.split_whitespace().any(|entry| {
            let Some(sig) = entry.strip_prefix("v1,") else {
                return false;
            };
            let Ok(sig) = B64.decode(sig) else {
                return false;
            };
            sig.len() == expected.len()
                && sig
                    .iter()
                    .zip(&expected)
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        })
    }
}

/// A fresh random secret, `whsec_<base64 of 32 bytes>`.
///
/// # Errors
/// [`SigningError::Random`].
pub fn generate_secret() -> Result<SecretString, SigningError> {
    let mut key = [0u8; SECRET_BYTES];
    kitsync_secrets::fill_random(&mut key).map_err(|_| SigningError::Random)?;
    Ok(SecretString::from(format!(
        "{SECRET_PREFIX}{}",
        B64.encode(key)
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// The test vector of the Standard Webhooks specification and its reference libraries.
    #[test]
    fn matches_the_standard_webhooks_test_vector() {
        let key =
            SigningKey::from_secret(&"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()).unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(key.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body, &sig));
        assert!(key.verify(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            body,
            &format!("v1,bm90IHRoaXMgb25l {sig}")
        ));
        assert!(!key.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_331, body, &sig));
        assert!(!key.verify("msg_other", 1_614_265_330, body, &sig));
        assert!(!key.verify(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232315}"#,
            &sig
        ));
    }

    #[test]
    fn generated_secrets_round_trip() {
        let s = generate_secret().unwrap();
        assert!(s.expose_secret().starts_with("whsec_"));
        assert_eq!(s.expose_secret().len(), 6 + 44);
        let key = SigningKey::from_secret(&s).unwrap();
        assert_eq!(key.len, 32);
        assert_ne!(
            generate_secret().unwrap().expose_secret(),
            s.expose_secret()
        );
        assert!(!format!("{key:?}").contains(&s.expose_secret()[6..]));
        for bad in ["", "whsec_", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!"] {
            assert!(SigningKey::from_secret(&bad.into()).is_err(), "{bad}");
        }
    }
}
