//! Kit request signatures (docs/kit-protocol.md §2.2) and the `Body-Sign` response header (§3).
//!
//! `x-sign = hex(HMAC-SHA256(key = accessKey, accessKey + x-nonce + x-timestamp + P))`, where the
//! official sample builds `P` by re-serialising the body with top-level keys sorted and
//! top-level nulls dropped (Jackson, compact, non-ASCII raw). The marketplace may sign either
//! the raw body or that canonical form, so [`verify`] tries the raw bytes first (cheap, and
//! what a well-behaved caller signs) and the canonical form second.
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use std::io;

type HmacSha256 = Hmac<Sha256>;

/// Why a request's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// `x-sign` did not match under any configured key, for the raw or the canonical body.
    Mismatch,
    /// No access key is configured, so nothing can be verified.
    NoKeys,
}

fn mac_for(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for HMAC.
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable_hmac(),
    }
}

#[allow(clippy::panic)]
fn unreachable_hmac() -> ! {
    panic!("HMAC-SHA256 accepts keys of every length")
}

fn kit_mac(key: &[u8], nonce: &str, timestamp: &str, payload: &[u8]) -> HmacSha256 {
    let mut mac = mac_for(key);
    mac.update(key);
    mac.update(nonce.as_bytes());
    mac.update(timestamp.as_bytes());
    mac.update(payload);
    mac
}

/// The lower-case hex `x-sign` the marketplace would send for `payload`.
#[must_use]
pub fn sign(key: &[u8], nonce: &str, timestamp: &str, payload: &[u8]) -> String {
    hex::encode(
        kit_mac(key, nonce, timestamp, payload)
            .finalize()
            .into_bytes(),
    )
}

/// Checks `x-sign` against every key, over the raw body and then its canonical form.
///
/// Returns the index of the key that verified. Hex case is ignored; the comparison is
/// constant-time (`Mac::verify_slice`).
///
/// # Errors
/// [`SignatureError::Mismatch`] when no key verifies either form, [`SignatureError::NoKeys`]
/// when `keys` is empty.
pub fn verify<K: AsRef<[u8]>>(
    keys: &[K],
    nonce: &str,
    timestamp: &str,
    body: &[u8],
    x_sign: &str,
) -> Result<usize, SignatureError> {
    if keys.is_empty() {
        return Err(SignatureError::NoKeys);
    }
    let Ok(expected) = hex::decode(x_sign.trim()) else {
        return Err(SignatureError::Mismatch);
    };
    for (i, key) in keys.iter().enumerate() {
        let key = key.as_ref();
        if kit_mac(key, nonce, timestamp, body)
            .verify_slice(&expected)
            .is_ok()
        {
            return Ok(i);
        }
    }
    let Ok(canonical) = canonical_payload(body) else {
        return Err(SignatureError::Mismatch);
    };
    if canonical == body {
        return Err(SignatureError::Mismatch);
    }
    for (i, key) in keys.iter().enumerate() {
        let key = key.as_ref();
        if kit_mac(key, nonce, timestamp, &canonical)
            .verify_slice(&expected)
            .is_ok()
        {
            return Ok(i);
        }
    }
    Err(SignatureError::Mismatch)
}

/// The canonical payload of the official sample: top-level keys sorted (Java `String` order,
/// i.e. UTF-16 code units), top-level `null`s dropped, nested objects in received order,
/// compact, non-ASCII written raw, control characters escaped as Jackson does.
///
/// # Errors
/// The body is not a JSON object.
pub fn canonical_payload(body: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let map: Map<String, Value> = serde_json::from_slice(body)?;
    let mut entries: Vec<(String, Value)> = map.into_iter().filter(|(_, v)| !v.is_null()).collect();
    entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
    let sorted: Map<String, Value> = entries.into_iter().collect();
    let mut out = Vec::with_capacity(body.len());
    let mut ser = serde_json::Serializer::with_formatter(&mut out, JacksonCompact);
    serde::Serialize::serialize(&sorted, &mut ser)?;
    Ok(out)
}

/// serde_json's compact formatter, but with Jackson's upper-case `\u00XX` escapes.
struct JacksonCompact;

impl serde_json::ser::Formatter for JacksonCompact {
    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        char_escape: serde_json::ser::CharEscape,
    ) -> io::Result<()> {
        use serde_json::ser::CharEscape::*;
        let s: &[u8] = match char_escape {
            Quote => b"\\\"",
            ReverseSolidus => b"\\\\",
            Solidus => b"\\/",
            Backspace => b"\\b",
            FormFeed => b"\\f",
            LineFeed => b"\\n",
            CarriageReturn => b"\\r",
            Tab => b"\\t",
            AsciiControl(byte) => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                let buf = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(byte >> 4) as usize],
                    HEX[(byte & 0xF) as usize],
                ];
                return writer.write_all(&buf);
            }
        };
        writer.write_all(s)
    }
}

/// The `Body-Sign` header value for a response body: base64 HMAC-SHA256 keyed with `key`.
#[must_use]
pub fn body_sign(key: &[u8], body: &[u8]) -> String {
    let mut mac = mac_for(key);
    mac.update(body);
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("sign_type=\"HMAC-SHA256\", signature=\"{sig}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "testAccessKey123";
    const NONCE: &str = "50D83FDECAED6CCD8EF597F2A577950527928BA287D04E6036E92B2806FD17DA";
    const TS: &str = "1680508066618";
    const BODY: &str = r#"{"appId":"app001","currentSyncTime":"20220420114117642","flag":1,"instanceId":"inst001","tenantId":"tenant001","testFlag":1,"timeStamp":"20220420114117642","userList":[{"userName":"zhangsan01","name":"张三","orgCode":"10000","role":"admin","enable":"true"}]}"#;
    const SIGN: &str = "D1FF44086D782517C89587B5F462BED1FB8195238C4FA1D6860FD8E4CD096846";

    #[test]
    fn reproduces_the_protocol_test_vector() {
        assert_eq!(
            sign(KEY.as_bytes(), NONCE, TS, BODY.as_bytes()),
            SIGN.to_lowercase()
        );
        assert_eq!(verify(&[KEY], NONCE, TS, BODY.as_bytes(), SIGN), Ok(0));
        assert_eq!(
            verify(&[KEY], NONCE, TS, BODY.as_bytes(), &SIGN.to_lowercase()),
            Ok(0)
        );
    }

    #[test]
    fn the_test_vector_body_is_already_canonical() {
        assert_eq!(canonical_payload(BODY.as_bytes()).unwrap(), BODY.as_bytes());
    }

    #[test]
    fn verifies_a_body_signed_in_canonical_form() {
        let raw = r#"{ "tenantId" : "t1", "flag": 1, "extra": null, "appId": "a", "nested": {"z": 1, "a": 2} }"#;
        let canonical = canonical_payload(raw.as_bytes()).unwrap();
        assert_eq!(
            std::str::from_utf8(&canonical).unwrap(),
            r#"{"appId":"a","flag":1,"nested":{"z":1,"a":2},"tenantId":"t1"}"#
        );
        let sig = sign(KEY.as_bytes(), NONCE, TS, &canonical);
        assert_eq!(verify(&[KEY], NONCE, TS, raw.as_bytes(), &sig), Ok(0));
    }

    #[test]
    fn any_configured_key_may_match() {
        let sig = sign(b"second", NONCE, TS, BODY.as_bytes());
        assert_eq!(
            verify(&["first", "second"], NONCE, TS, BODY.as_bytes(), &sig),
            Ok(1)
        );
    }

    #[test]
    fn rejects_tampering_and_garbage() {
        let tampered = BODY.replace("admin", "user");
        assert_eq!(
            verify(&[KEY], NONCE, TS, tampered.as_bytes(), SIGN),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&[KEY], NONCE, "1680508066619", BODY.as_bytes(), SIGN),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&[KEY], NONCE, TS, BODY.as_bytes(), "zz"),
            Err(SignatureError::Mismatch)
        );
        let none: [&str; 0] = [];
        assert_eq!(
            verify(&none, NONCE, TS, BODY.as_bytes(), SIGN),
            Err(SignatureError::NoKeys)
        );
    }

    #[test]
    fn escapes_control_characters_like_jackson() {
        let raw = "{\"b\":\"x\\u001fy\\n\",\"a\":\"\u{e9}\"}";
        let canonical = canonical_payload(raw.as_bytes()).unwrap();
        assert_eq!(
            std::str::from_utf8(&canonical).unwrap(),
            "{\"a\":\"\u{e9}\",\"b\":\"x\\u001Fy\\n\"}"
        );
    }

    #[test]
    fn body_sign_is_base64_hmac_of_the_exact_body() {
        let v = body_sign(b"k", br#"{"resultCode":"000000"}"#);
        assert!(v.starts_with("sign_type=\"HMAC-SHA256\", signature=\""));
        assert!(v.ends_with("=\""));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn canonical_signing_round_trips(
                pairs in proptest::collection::btree_map("[a-zA-Z]{1,8}", "[^\"\\\\]{0,12}", 1..8),
                nulls in proptest::collection::vec("[a-z]{1,8}", 0..3),
                nonce in "[A-F0-9]{8,64}",
            ) {
                // A body in arbitrary key order with nulls signs the same as its canonical form.
                let mut obj = Map::new();
                for (k, v) in pairs.iter().rev() {
                    obj.insert(k.clone(), Value::String(v.clone()));
                }
                for n in &nulls {
                    if !obj.contains_key(n) { obj.insert(n.clone(), Value::Null); }
                }
                let raw = serde_json::to_vec(&Value::Object(obj)).unwrap();
                let canonical = canonical_payload(&raw).unwrap();
                prop_assert_eq!(canonical_payload(&canonical).unwrap(), canonical.clone());
                let sig = sign(KEY.as_bytes(), &nonce, TS, &canonical);
                prop_assert_eq!(verify(&[KEY], &nonce, TS, &raw, &sig), Ok(0));
                prop_assert_eq!(verify(&["other"], &nonce, TS, &raw, &sig), Err(SignatureError::Mismatch));
            }
        }
    }
}
