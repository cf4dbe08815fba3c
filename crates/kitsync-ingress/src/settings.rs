//! `[kit]` settings: access keys, RSA key, route prefix, limits.
use kitsync_domain::signing::SignatureMode;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use std::path::PathBuf;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct KitSettings {
    /// Kit access keys (several during a rotation). From the environment, a comma-separated
    /// list: `KITSYNC_KIT__ACCESS_KEYS=key1,key2`.
    #[serde(deserialize_with = "secret_list", serialize_with = "redacted_secrets")]
    pub access_keys: Vec<SecretString>,
    /// PKCS#8 PEM of the RSA private key whose public half was uploaded for `clientSecret`.
    pub rsa_private_key_path: Option<PathBuf>,
    /// The RSA private keys `rsa_private_key_path` replaces, tried after it while the
    /// marketplace may still encrypt to their public halves (a rotation). From the
    /// environment, a comma-separated list of paths.
    #[serde(deserialize_with = "path_list")]
    pub previous_rsa_private_key_paths: Vec<PathBuf>,
    /// Route prefix before `/produceAPI/v2/…` (e.g. `/isv/produce`); default empty.
    pub prefix: String,
    /// Largest accepted body, in bytes (a 10 000-department full sync is about 1 MiB).
    pub body_limit_bytes: usize,
    /// Accepted clock difference for `x-timestamp`, in seconds.
    pub timestamp_window_secs: u64,
    /// Time allowed to make a callback durable (the publish; on the embedded queue with its
    /// replay key) before answering
    /// `000005`; well inside the marketplace's 5 s timeout.
    pub accept_timeout_ms: u64,
    /// Which body forms `x-sign` may cover: `raw` (the bytes received), `canonical` (top-level
    /// keys sorted, top-level nulls dropped, compact — the official sample's form) or `both`
    /// (raw first). With `canonical` or `both`, a body that verified in canonical form is
    /// parsed from those canonical bytes, so what is applied is exactly what was signed.
    pub signature_mode: SignatureMode,
    /// Largest body whose canonical form is computed when the raw bytes do not verify (the
    /// canonical check parses and re-serialises the body before anything is authenticated).
    pub canonical_max_bytes: usize,
    /// Canonical checks running at once; more wait (bounded) or are answered `000005`.
    pub canonical_concurrency: usize,
    /// Callbacks handled at once; beyond this they are answered `000005` at once instead of
    /// queuing without bound.
    pub max_concurrent_requests: usize,
    /// Bytes of callback bodies held in memory at once, across requests (a body is held from
    /// its first byte until it is parsed). A request that cannot reserve its share within a
    /// second is answered `000005`.
    pub max_inflight_body_bytes: usize,
    /// Time allowed for a body to arrive, from the end of the headers; a slower one is
    /// refused with `000002` — still inside the marketplace's 5 s, so it hears why.
    pub body_read_timeout_ms: u64,
}

impl Default for KitSettings {
    fn default() -> Self {
        Self {
            access_keys: Vec::new(),
            rsa_private_key_path: None,
            previous_rsa_private_key_paths: Vec::new(),
            prefix: String::new(),
            body_limit_bytes: 8 * 1024 * 1024,
            timestamp_window_secs: 60,
            accept_timeout_ms: 1_500,
            signature_mode: SignatureMode::Both,
            canonical_max_bytes: 2 * 1024 * 1024,
            canonical_concurrency: 2,
            max_concurrent_requests: 1024,
            max_inflight_body_bytes: 64 * 1024 * 1024,
            body_read_timeout_ms: 4_000,
        }
    }
}

impl KitSettings {
    /// `prefix` with one leading slash and no trailing slash (`""` stays empty).
    #[must_use]
    pub fn normalized_prefix(&self) -> String {
        let p = self.prefix.trim().trim_matches('/');
        if p.is_empty() {
            String::new()
        } else {
            format!("/{p}")
        }
    }
}

/// A list of secrets (see [`list`]).
///
/// # Errors
/// As [`list`].
pub fn secret_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
    Ok(list(d)?.into_iter().map(SecretString::from).collect())
}

/// A list of paths (see [`list`]).
///
/// # Errors
/// As [`list`].
pub fn path_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    Ok(list(d)?.into_iter().map(PathBuf::from).collect())
}

/// A comma-separated string (as the environment gives it) or an array; items trimmed, empty
/// ones dropped.
///
/// # Errors
/// Neither a string nor an array of strings.
pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Items {
        One(String),
        Many(Vec<String>),
    }
    let items = match Items::deserialize(d)? {
        Items::One(s) => s.split(',').map(str::to_owned).collect::<Vec<_>>(),
        Items::Many(v) => v,
    };
    Ok(items
        .into_iter()
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
        .collect())
}

/// Serialises secrets as `<redacted>` each.
///
/// # Errors
/// The serialiser's.
pub fn redacted_secrets<S: serde::Serializer>(
    keys: &[SecretString],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(keys.len()))?;
    for _ in keys {
        seq.serialize_element("<redacted>")?;
    }
    seq.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn access_keys_from_a_comma_list_or_an_array() {
        let s: KitSettings = serde_json::from_str(r#"{"access_keys":"a, b,,c"}"#).unwrap();
        let keys: Vec<_> = s
            .access_keys
            .iter()
            .map(|k| k.expose_secret().to_owned())
            .collect();
        assert_eq!(keys, ["a", "b", "c"]);
        let s: KitSettings =
            serde_json::from_str(r#"{"access_keys":["x"],"prefix":"isv/produce/"}"#).unwrap();
        assert_eq!(s.access_keys.len(), 1);
        assert_eq!(s.normalized_prefix(), "/isv/produce");
        assert!(!serde_json::to_string(&s).unwrap().contains("\"x\""));
    }
}
