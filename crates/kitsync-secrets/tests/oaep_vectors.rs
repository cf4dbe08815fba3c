//! RSA-OAEP decryption against ciphertexts made by independent implementations (the OpenSSL
//! command line and Python's `cryptography`, see `fixtures/oaep/make-vectors.sh`), one per
//! variant a marketplace sender may use, with 3072- and 4096-bit keys; what must be refused;
//! and round trips through `TestKeyPair`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use kitsync_rsa::{Oaep, RsaError, RsaPrivateKey};
use kitsync_secrets::{OaepVariant, RsaDecryptor, SecretsError, TestKeyPair};
use secrecy::ExposeSecret;
use std::path::PathBuf;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/oaep")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Vector {
    file: String,
    key: String,
    variant: OaepVariant,
    plaintext: String,
    /// The base64 text as the marketplace would send it.
    ciphertext: String,
}

fn variant(name: &str) -> OaepVariant {
    OaepVariant::ALL
        .into_iter()
        .find(|v| v.as_str() == name)
        .unwrap_or_else(|| panic!("unknown variant {name}"))
}

fn vectors() -> Vec<Vector> {
    let manifest = String::from_utf8(fixture("vectors.tsv")).unwrap();
    manifest
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 4, "{line}");
            Vector {
                file: f[0].to_owned(),
                key: f[1].to_owned(),
                variant: variant(f[2]),
                plaintext: f[3].to_owned(),
                ciphertext: String::from_utf8(fixture(f[0])).unwrap().trim().to_owned(),
            }
        })
        .collect()
}

fn decryptor(key: &str) -> RsaDecryptor {
    RsaDecryptor::from_pem(&fixture(key)).unwrap()
}

/// The PKCS#8 DER inside a PEM fixture, for kitsync-rsa directly.
fn raw_key(key: &str) -> RsaPrivateKey {
    let pem = String::from_utf8(fixture(key)).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    RsaPrivateKey::from_pkcs8_der(&B64.decode(body).unwrap()).unwrap()
}

#[test]
fn the_vectors_cover_every_variant_from_both_implementations() {
    let vs = vectors();
    for tool in ["openssl", "python"] {
        for v in OaepVariant::ALL {
            assert!(
                vs.iter()
                    .any(|x| x.file.starts_with(tool) && x.key == "key-3072.pem" && x.variant == v),
                "no {tool} vector for {v} with the 3072-bit key"
            );
        }
    }
    assert!(vs.iter().any(|x| x.key == "key-4096.pem"));
    // Distinct plaintexts, so a vector cannot pass by decrypting to another one's.
    let mut plains: Vec<&str> = vs.iter().map(|v| v.plaintext.as_str()).collect();
    plains.sort_unstable();
    plains.dedup();
    assert_eq!(plains.len(), vs.len());
}

#[test]
fn every_vector_decrypts_to_its_plaintext_with_its_variant() {
    let d3072 = decryptor("key-3072.pem");
    let d4096 = decryptor("key-4096.pem");
    assert_eq!(d3072.key_size_bits(), 3072);
    assert_eq!(d4096.key_size_bits(), 4096);
    for v in vectors() {
        let d = if v.key == "key-4096.pem" {
            &d4096
        } else {
            &d3072
        };
        let (used, plain) = d
            .decrypt_variant(&v.ciphertext)
            .unwrap_or_else(|e| panic!("{}: {e}", v.file));
        assert_eq!(used, v.variant, "{}", v.file);
        assert_eq!(plain.expose_secret(), v.plaintext, "{}", v.file);
        // The public entry point says the same.
        assert_eq!(
            d.decrypt(&v.ciphertext).unwrap().expose_secret(),
            v.plaintext
        );
    }
}

/// Without this, the test above could pass even if every vector were made with one variant
/// (or if kitsync-rsa ignored the MGF1 hash): each vector must decrypt with its own
/// parameters and with no other.
#[test]
fn each_vector_needs_exactly_its_variant() {
    let keys = [
        ("key-3072.pem", raw_key("key-3072.pem")),
        ("key-4096.pem", raw_key("key-4096.pem")),
    ];
    for v in vectors() {
        let key = &keys.iter().find(|(name, _)| *name == v.key).unwrap().1;
        let ct = B64.decode(&v.ciphertext).unwrap();
        for candidate in OaepVariant::ALL {
            let got = key.decrypt(candidate.oaep(), &ct);
            if candidate == v.variant {
                assert_eq!(&*got.unwrap(), v.plaintext.as_bytes(), "{}", v.file);
            } else {
                assert!(
                    matches!(got, Err(RsaError::Decrypt)),
                    "{} must not decrypt as {candidate}",
                    v.file
                );
            }
        }
        if v.variant == OaepVariant::Sha256Mgf1Sha1 {
            // The variant this crate added: the two equal-hash variants alone do not read it.
            assert!(matches!(
                key.decrypt_any(&[Oaep::SHA1, Oaep::SHA256], &ct),
                Err(RsaError::Decrypt)
            ));
        }
    }
}

#[test]
fn wrong_key_garbage_tampered_and_truncated_ciphertexts_are_refused() {
    let d = decryptor("key-3072.pem");
    let vs = vectors();
    let good = vs
        .iter()
        .find(|v| v.key == "key-3072.pem" && v.variant == OaepVariant::Sha256Mgf1Sha1)
        .unwrap();
    let ct = B64.decode(&good.ciphertext).unwrap();
    assert_eq!(ct.len(), 384);

    let undecryptable = |bytes: &[u8], what: &str| {
        let r = d.decrypt(&B64.encode(bytes));
        assert!(
            matches!(r, Err(SecretsError::Undecryptable)),
            "{what}: {:?}",
            r.map(|s| s.expose_secret().len())
        );
    };
    let mut flipped = ct.clone();
    flipped[200] ^= 0x01;
    undecryptable(&flipped, "one bit flipped");
    undecryptable(&ct[..ct.len() - 1], "truncated");
    undecryptable(&[ct.as_slice(), &[0]].concat(), "one byte too long");
    undecryptable(&[0x5a; 384], "garbage of the right length");
    undecryptable(b"not a ciphertext", "short garbage");
    let for_4096 = vs.iter().find(|v| v.key == "key-4096.pem").unwrap();
    undecryptable(&B64.decode(&for_4096.ciphertext).unwrap(), "another key's");
    // The 3072-bit key has a ciphertext of the same size, but not ours.
    let other = TestKeyPair::generate_3072().unwrap();
    let theirs = other.encrypt("x", OaepVariant::Sha256).unwrap();
    assert!(matches!(
        d.decrypt(&theirs),
        Err(SecretsError::Undecryptable)
    ));
    assert!(matches!(
        d.decrypt("%%% not base64 %%%"),
        Err(SecretsError::NotBase64(_))
    ));
    // A refusal leaves nothing behind: the next decryption on this thread works.
    assert_eq!(
        d.decrypt(&good.ciphertext).unwrap().expose_secret(),
        good.plaintext
    );
    let msg = SecretsError::Undecryptable.to_string();
    for v in OaepVariant::ALL {
        assert!(msg.contains(v.as_str()), "{msg}");
    }
}

#[test]
fn keys_under_3072_bits_and_pkcs1_keys_are_refused_at_load() {
    let e = RsaDecryptor::from_pem(&fixture("key-2048.pem")).unwrap_err();
    assert!(matches!(e, SecretsError::KeyTooSmall(2048)), "{e}");
    assert!(e.to_string().contains("3072"), "{e}");
    // kitsync-rsa itself reads it: the refusal is the policy, not a parse failure.
    assert_eq!(raw_key("key-2048.pem").bits(), 2048);

    let e = RsaDecryptor::from_pem(&fixture("key-3072-pkcs1.pem")).unwrap_err();
    assert!(matches!(e, SecretsError::BadPrivateKey(_)), "{e}");
    assert!(e.to_string().contains("openssl pkcs8"), "{e}");

    // The DER of a key works as well as its PEM.
    let pem = String::from_utf8(fixture("key-3072.pem")).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = B64.decode(body).unwrap();
    assert_eq!(RsaDecryptor::from_pem(&der).unwrap().key_size_bits(), 3072);
    // Trailing bytes after the key are not silently ignored.
    assert!(RsaDecryptor::from_pem(&[der.as_slice(), &[0]].concat()).is_err());
}

#[test]
fn test_key_pair_round_trips_every_variant() {
    let kp = TestKeyPair::generate_3072().unwrap();
    let d = RsaDecryptor::from_pem(kp.private_pem().unwrap().as_bytes()).unwrap();
    let pem = kp.private_pem().unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let raw = RsaPrivateKey::from_pkcs8_der(&B64.decode(body).unwrap()).unwrap();
    for v in OaepVariant::ALL {
        let secret = format!("round-trip-{v}");
        let ct = kp.encrypt(&secret, v).unwrap();
        let (used, plain) = d.decrypt_variant(&ct).unwrap();
        assert_eq!((used, plain.expose_secret()), (v, secret.as_str()));
        // TestKeyPair really used `v`: no other variant reads it.
        let bytes = B64.decode(&ct).unwrap();
        for other in OaepVariant::ALL.into_iter().filter(|o| *o != v) {
            assert!(raw.decrypt(other.oaep(), &bytes).is_err(), "{v} as {other}");
        }
    }
}
