//! API bearer tokens: `kst_<id>_<secret>`, shown once when issued. Only the token's id and
//! the SHA-256 of its secret are stored, so a leaked database does not leak usable tokens.
//! The secret is 256 random bits, so an unsalted hash is enough (it cannot be guessed), and
//! the id makes lookup a primary-key read; the hash comparison is constant-time.
use crate::SecretsError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

const PREFIX: &str = "kst_";
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;

/// A newly issued token: what to store, and the token to show once.
pub struct IssuedToken {
    /// Public identifier (12 hex digits), the table's key.
    pub id: String,
    /// Hex SHA-256 of the secret part.
    pub secret_hash: String,
    /// The whole bearer token.
    pub token: SecretString,
}

/// Issues a fresh token.
///
/// # Errors
/// The system random generator failed.
pub fn issue() -> Result<IssuedToken, SecretsError> {
    let mut id = [0u8; ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    aws_lc_rs::rand::fill(&mut id).map_err(|_| SecretsError::Crypto("random".into()))?;
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| SecretsError::Crypto("random".into()))?;
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let secret = B64URL.encode(secret);
    Ok(IssuedToken {
        secret_hash: hash(&secret),
        token: SecretString::from(format!("{PREFIX}{id}_{secret}")),
        id,
    })
}

/// Splits a presented token into (id, secret), or `None` when it is not shaped like one.
#[must_use]
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == ID_BYTES * 2 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (id_ok && !secret.is_empty() && secret.len() <= 64).then_some((id, secret))
}

/// Hex SHA-256 of a token secret.
#[must_use]
pub fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `secret` hashes to `stored_hash`, compared in constant time.
#[must_use]
pub fn matches(secret: &str, stored_hash: &str) -> bool {
    let presented = hash(secret);
    let (a, b) = (presented.as_bytes(), stored_hash.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn issued_tokens_parse_and_match_only_their_own_hash() {
        let a = issue().unwrap();
        let b = issue().unwrap();
        assert_ne!(a.id, b.id);
        let (id, secret) = parse(a.token.expose_secret()).unwrap();
        assert_eq!(id, a.id);
        assert!(matches(secret, &a.secret_hash));
        assert!(!matches(secret, &b.secret_hash));
        assert!(!a.token.expose_secret().contains(&a.secret_hash));
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        for t in [
            "",
            "kst_",
            "kst_abc_def",
            "kst_0123456789ab_",
            "Bearer kst_0123456789ab_x",
            "kst_0123456789zz_secret",
            "xyz_0123456789ab_secret",
        ] {
            assert_eq!(parse(t), None, "{t:?}");
        }
        assert_eq!(
            parse("kst_0123456789ab_secret"),
            Some(("0123456789ab", "secret"))
        );
    }
}
