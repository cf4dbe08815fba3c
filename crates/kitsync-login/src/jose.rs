//! ID-token signing: ES256 keys (ECDSA on P-256 with SHA-256), their JWK form, and compact
//! JWS (RFC 7515, RFC 7518 §3.4: the signature is `r || s`, 64 bytes).
use crate::LoginError;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair as _, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use secrecy::zeroize::Zeroizing;
use serde_json::{json, Value};

/// The one signing algorithm, as JOSE names it.
pub const ALG: &str = "ES256";

/// A private signing key with its key id.
pub struct SigningKey {
    kid: String,
    pair: EcdsaKeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.kid)
    }
}

impl SigningKey {
    /// A new key, and its PKCS#8 encoding (to be sealed and stored).
    ///
    /// # Errors
    /// The key could not be generated.
    pub fn generate(kid: String) -> Result<(Self, Zeroizing<Vec<u8>>), LoginError> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| LoginError::Crypto("generating an ES256 key".into()))?;
        let pkcs8 = Zeroizing::new(doc.as_ref().to_vec());
        Ok((Self::from_pkcs8(kid, &pkcs8)?, pkcs8))
    }

    /// # Errors
    /// `pkcs8` is not a P-256 private key.
    pub fn from_pkcs8(kid: String, pkcs8: &[u8]) -> Result<Self, LoginError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|e| LoginError::Crypto(format!("signing key {kid}: {e}")))?;
        Ok(Self { kid, pair })
    }

    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (RFC 7517/7518 §6.2).
    #[must_use]
    pub fn jwk(&self) -> Value {
        // The uncompressed point: 0x04 || X (32 bytes) || Y (32 bytes).
        let point = self.pair.public_key().as_ref();
        let (x, y) = point
            .get(1..)
            .unwrap_or_default()
            .split_at(32.min(point.len().saturating_sub(1)));
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": B64URL.encode(x),
            "y": B64URL.encode(y),
            "use": "sig",
            "alg": ALG,
            "kid": self.kid,
        })
    }

    /// `claims` signed as a compact JWS with `typ: JWT`.
    ///
    /// # Errors
    /// The signature could not be made.
    pub fn sign(&self, claims: &Value) -> Result<String, LoginError> {
        let header = json!({"alg": ALG, "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| LoginError::Crypto("signing an ID token".into()))?;
        Ok(format!("{input}.{}", B64URL.encode(sig.as_ref())))
    }
}

/// The claims of a compact JWS signed by one of `jwks` (JWK objects as [`SigningKey::jwk`]
/// writes them), or `None` when it is malformed, uses another algorithm, names an unknown key
/// or does not verify. Expiry is the caller's business.
#[must_use]
pub fn verify(jws: &str, jwks: &[Value]) -> Option<Value> {
    let mut parts = jws.split('.');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&B64URL.decode(h).ok()?).ok()?;
    if header.get("alg")?.as_str()? != ALG {
        return None;
    }
    let kid = header.get("kid")?.as_str()?;
    let jwk = jwks
        .iter()
        .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid))?;
    let x = B64URL.decode(jwk.get("x")?.as_str()?).ok()?;
    let y = B64URL.decode(jwk.get("y")?.as_str()?).ok()?;
    let mut point = Vec::with_capacity(65);
    point.push(4u8);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let sig = B64URL.decode(s).ok()?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
        .verify(format!("{h}.{c}").as_bytes(), &sig)
        .ok()?;
    serde_json::from_slice(&B64URL.decode(c).ok()?).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_signed_token_verifies_under_its_key_only() {
        let (a, pkcs8) = SigningKey::generate("a".into()).unwrap();
        let (b, _) = SigningKey::generate("b".into()).unwrap();
        let claims = json!({"sub": "t1:alice", "n": 1});
        let jws = a.sign(&claims).unwrap();
        assert_eq!(verify(&jws, &[a.jwk(), b.jwk()]), Some(claims.clone()));
        // Reloaded from its stored form, the key is the same key.
        let again = SigningKey::from_pkcs8("a".into(), &pkcs8).unwrap();
        assert_eq!(again.jwk(), a.jwk());
        assert_eq!(
            verify(&again.sign(&claims).unwrap(), &[a.jwk()]),
            Some(claims)
        );
        // Another key under the same kid does not verify it; nor does a changed payload.
        let mut forged = b.jwk();
        forged["kid"] = json!("a");
        assert_eq!(verify(&jws, &[forged]), None);
        let mut parts: Vec<&str> = jws.split('.').collect();
        let other = B64URL.encode(json!({"sub": "t1:mallory"}).to_string());
        parts[1] = &other;
        assert_eq!(verify(&parts.join("."), &[a.jwk()]), None);
        // alg none is never accepted.
        let none = format!(
            "{}.{}.",
            B64URL.encode(json!({"alg": "none", "kid": "a"}).to_string()),
            B64URL.encode(json!({"sub": "x"}).to_string())
        );
        assert_eq!(verify(&none, &[a.jwk()]), None);
    }

    #[test]
    fn the_jwk_is_a_p256_point_of_two_32_byte_coordinates() {
        let (k, _) = SigningKey::generate("k".into()).unwrap();
        let jwk = k.jwk();
        for c in ["x", "y"] {
            let v = B64URL.decode(jwk[c].as_str().unwrap()).unwrap();
            assert_eq!(v.len(), 32, "{c}");
        }
        assert_eq!(jwk["alg"], "ES256");
        assert_eq!(jwk["kid"], "k");
    }
}
