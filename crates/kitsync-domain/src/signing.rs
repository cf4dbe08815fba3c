//! Kit request signatures (docs/protocol.md §2) and the `Body-Sign` response header (§3).
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

/// Which body forms an `x-sign` may cover (`kit.signature_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureMode {
    /// Only the body bytes as received.
    Raw,
    /// Only the canonical form ([`canonical_payload`]).
    Canonical,
    /// The raw bytes first, then the canonical form (the marketplace's choice is undocumented).
    #[default]
    Both,
}

/// Read from a string, so a configuration typo gets the list of valid values.
impl<'de> serde::Deserialize<'de> for SignatureMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        [
            SignatureMode::Raw,
            SignatureMode::Canonical,
            SignatureMode::Both,
        ]
        .into_iter()
        .find(|m| m.as_str() == s.trim())
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{s}` is not a signature mode: expected \"raw\", \"canonical\" or \"both\""
            ))
        })
    }
}

impl SignatureMode {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureMode::Raw => "raw",
            SignatureMode::Canonical => "canonical",
            SignatureMode::Both => "both",
        }
    }

    #[must_use]
    pub fn tries_raw(self) -> bool {
        matches!(self, SignatureMode::Raw | SignatureMode::Both)
    }

    #[must_use]
    pub fn tries_canonical(self) -> bool {
        matches!(self, SignatureMode::Canonical | SignatureMode::Both)
    }
}

/// An HMAC-SHA256 value: a decoded `x-sign`.
pub type MacBytes = [u8; 32];

/// Longest accepted `x-nonce` (the marketplace sends 64 hex digits).
pub const MAX_NONCE_LEN: usize = 128;

/// `x-timestamp` as the marketplace sends it: Unix milliseconds, exactly 13 decimal digits, no
/// sign, no leading zero, no spaces.
///
/// The MAC covers `nonce + timestamp` as one string, so a lenient reading (`i64::from_str`
/// takes `+T` and `0T`) would let a captured request be re-sent with a digit moved across the
/// nonce/timestamp boundary: same MAC, "different" nonce. Thirteen digits is every time
/// between 2001-09-09 and 2286-11-20.
#[must_use]
pub fn parse_timestamp(value: &str) -> Option<i64> {
    let b = value.as_bytes();
    if b.len() != 13 || b[0] == b'0' || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.parse().ok()
}

/// `x-nonce`: 1 to [`MAX_NONCE_LEN`] visible ASCII characters.
#[must_use]
pub fn valid_nonce(value: &str) -> bool {
    (1..=MAX_NONCE_LEN).contains(&value.len()) && value.bytes().all(|c| c.is_ascii_graphic())
}

/// `x-sign`: exactly 64 hexadecimal digits, either case.
#[must_use]
pub fn parse_sign(value: &str) -> Option<MacBytes> {
    let mut mac = [0u8; 32];
    if value.len() != 64 {
        return None;
    }
    hex::decode_to_slice(value, &mut mac).ok()?;
    Some(mac)
}

/// Verifies the raw body under every key while it is being received: one HMAC state per
/// key, fed chunk by chunk, so a large body costs no long CPU burst at the end and is never
/// hashed twice.
pub struct RawVerifier {
    macs: Vec<HmacSha256>,
}

impl RawVerifier {
    /// Starts `accessKey + nonce + timestamp` for every key.
    #[must_use]
    pub fn new<K: AsRef<[u8]>>(keys: &[K], nonce: &str, timestamp: &str) -> Self {
        Self {
            macs: keys
                .iter()
                .map(|k| kit_mac(k.as_ref(), nonce, timestamp, b""))
                .collect(),
        }
    }

    /// Feeds the next chunk of the body.
    pub fn update(&mut self, chunk: &[u8]) {
        for mac in &mut self.macs {
            mac.update(chunk);
        }
    }

    /// The index of the first key whose MAC equals `expected` (constant-time comparison).
    #[must_use]
    pub fn finish(self, expected: &MacBytes) -> Option<usize> {
        self.macs
            .into_iter()
            .position(|mac| mac.verify_slice(expected).is_ok())
    }
}

/// The index of the first key under which `expected` is the MAC of `payload`.
#[must_use]
pub fn verify_payload<K: AsRef<[u8]>>(
    keys: &[K],
    nonce: &str,
    timestamp: &str,
    payload: &[u8],
    expected: &MacBytes,
) -> Option<usize> {
    let mut v = RawVerifier::new(keys, nonce, timestamp);
    v.update(payload);
    v.finish(expected)
}

/// Checks `x-sign` against every key, over the raw body and then its canonical form.
///
/// Returns the index of the key that verified. Hex case is ignored; the comparison is
/// constant-time (`Mac::verify_slice`). The ingress does the same in steps (streaming the raw
/// check, bounding the canonical one); this one-call form serves tools and baselines.
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
    let Some(expected) = parse_sign(x_sign.trim()) else {
        return Err(SignatureError::Mismatch);
    };
    if let Some(i) = verify_payload(keys, nonce, timestamp, body, &expected) {
        return Ok(i);
    }
    let Ok(canonical) = canonical_payload(body) else {
        return Err(SignatureError::Mismatch);
    };
    if canonical == body {
        return Err(SignatureError::Mismatch);
    }
    verify_payload(keys, nonce, timestamp, &canonical, &expected).ok_or(SignatureError::Mismatch)
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
    fn headers_are_strict() {
        assert_eq!(parse_timestamp(TS), Some(1_680_508_066_618));
        for bad in [
            "0680508066618",
            "01680508066618",
            "+1680508066618",
            "168050806661",
            "16805080666180",
            " 1680508066618",
            "1680508066618 ",
            "168050806661x",
            "-680508066618",
            "",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad:?}");
        }
        assert_eq!(parse_sign(SIGN).map(hex::encode), Some(SIGN.to_lowercase()));
        assert_eq!(parse_sign(&SIGN.to_lowercase()), parse_sign(SIGN));
        for bad in [&SIGN[1..], &format!("{SIGN}0"), &SIGN.replace('D', "g"), ""] {
            assert_eq!(parse_sign(bad), None, "{bad:?}");
        }
        assert!(valid_nonce(NONCE));
        assert!(valid_nonce("a"));
        assert!(valid_nonce(&"n".repeat(MAX_NONCE_LEN)));
        for bad in [
            String::new(),
            "n".repeat(MAX_NONCE_LEN + 1),
            "a b".into(),
            "a\tb".into(),
            "\u{e9}t\u{e9}".into(),
        ] {
            assert!(!valid_nonce(&bad), "{bad:?}");
        }
    }

    #[test]
    fn the_raw_verifier_streams_and_names_the_key() {
        let mac = parse_sign(SIGN).unwrap();
        let mut v = RawVerifier::new(&["other", KEY], NONCE, TS);
        for chunk in BODY.as_bytes().chunks(7) {
            v.update(chunk);
        }
        assert_eq!(v.finish(&mac), Some(1));
        let mut v = RawVerifier::new(&[KEY], NONCE, TS);
        v.update(&BODY.as_bytes()[1..]);
        assert_eq!(v.finish(&mac), None);
        assert_eq!(
            verify_payload(&[KEY], NONCE, TS, BODY.as_bytes(), &mac),
            Some(0)
        );
    }

    #[test]
    fn signature_modes() {
        assert!(SignatureMode::Both.tries_raw() && SignatureMode::Both.tries_canonical());
        assert!(!SignatureMode::Raw.tries_canonical() && !SignatureMode::Canonical.tries_raw());
        assert_eq!(SignatureMode::default(), SignatureMode::Both);
        let m: SignatureMode = serde_json::from_str("\"canonical\"").unwrap();
        assert_eq!(m, SignatureMode::Canonical);
        let e = serde_json::from_str::<SignatureMode>("\"rawx\"").unwrap_err();
        assert!(
            e.to_string()
                .contains("expected \"raw\", \"canonical\" or \"both\""),
            "{e}"
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
        // Known answers computed with openssl, not with this code:
        // printf '%s' "$BODY" | openssl dgst -sha256 -hmac "$KEY" -binary | base64
        assert_eq!(
            body_sign(b"k", br#"{"resultCode":"000000"}"#),
            r#"sign_type="HMAC-SHA256", signature="8qGKcPzjvFoQGj0NNogjvuuJSXEwL4viB4QZHckX9lQ=""#
        );
        // The `000001` answer of docs/protocol.md §3.2: a signature with `+` in it, so the
        // standard base64 alphabet is pinned too (the URL-safe one writes `-`).
        let refusal = r#"{"resultCode":"000001","resultMsg":"x-sign does not match the request under any configured access key"}"#;
        assert_eq!(
            body_sign(KEY.as_bytes(), refusal.as_bytes()),
            r#"sign_type="HMAC-SHA256", signature="uWV1FBFs9MZe6NyAKW+szfyiJucD2+pcL9pPcvv1D9A=""#
        );
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
