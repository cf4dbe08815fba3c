//! The only code in the workspace that calls C: owners of aws-lc's `EVP_PKEY` and
//! `EVP_PKEY_CTX` that free them on drop, and the few calls OAEP needs.
//!
//! Both owners hold raw pointers, so they are neither `Send` nor `Sync`: they live for one
//! call on one thread and never escape this crate.
use crate::{Oaep, OaepHash, RsaError};
use aws_lc_sys as sys;
use secrecy::zeroize::Zeroizing;
use std::ptr::NonNull;

/// aws-lc reports failures on a thread-local error queue. Emptied after every failure here,
/// so a refused ciphertext leaves nothing behind that a later, unrelated aws-lc caller on
/// this thread (aws-lc-rs, rustls) could mistake for its own error.
fn fail(e: RsaError) -> RsaError {
    // SAFETY: no arguments; only touches the calling thread's error queue.
    unsafe { sys::ERR_clear_error() };
    e
}

fn md(hash: OaepHash) -> *const sys::EVP_MD {
    match hash {
        // SAFETY: no arguments; returns a pointer to a static digest description that is
        // never freed.
        OaepHash::Sha1 => unsafe { sys::EVP_sha1() },
        // SAFETY: as above.
        OaepHash::Sha256 => unsafe { sys::EVP_sha256() },
    }
}

/// An owned `EVP_PKEY`.
pub(crate) struct Pkey(NonNull<sys::EVP_PKEY>);

impl Drop for Pkey {
    fn drop(&mut self) {
        // SAFETY: we own exactly one reference to this key (from a parse function) and drop
        // it once; aws-lc wipes the private key's numbers when it frees them.
        unsafe { sys::EVP_PKEY_free(self.0.as_ptr()) }
    }
}

/// `EVP_parse_private_key` / `EVP_parse_public_key`.
type ParseFn = unsafe extern "C" fn(*mut sys::CBS) -> *mut sys::EVP_PKEY;

enum Direction {
    Encrypt,
    Decrypt,
}

impl Pkey {
    /// A PKCS#8 `PrivateKeyInfo`.
    pub(crate) fn parse_private(der: &[u8]) -> Result<Self, RsaError> {
        Self::parse(der, sys::EVP_parse_private_key, RsaError::NotPkcs8)
    }

    /// An X.509 `SubjectPublicKeyInfo`.
    pub(crate) fn parse_public(der: &[u8]) -> Result<Self, RsaError> {
        Self::parse(der, sys::EVP_parse_public_key, RsaError::NotSpki)
    }

    fn parse(der: &[u8], parse: ParseFn, malformed: RsaError) -> Result<Self, RsaError> {
        sys::init();
        let mut cbs = sys::CBS {
            data: std::ptr::null(),
            len: 0,
        };
        // SAFETY: `cbs` is a live, writable CBS; it is pointed at `der`, which outlives
        // every use of `cbs` in this function.
        unsafe { sys::CBS_init(&mut cbs, der.as_ptr(), der.len()) };
        // SAFETY: `cbs` describes `der.len()` readable bytes. The parser reads within them,
        // copies what it keeps (the key retains no pointer into `der`) and returns a new key
        // we own, or null.
        let raw = unsafe { parse(&mut cbs) };
        let Some(key) = NonNull::new(raw).map(Pkey) else {
            return Err(fail(malformed));
        };
        // SAFETY: `cbs` is still a valid CBS over `der`.
        let trailing = unsafe { sys::CBS_len(&cbs) };
        if trailing != 0 {
            return Err(fail(malformed));
        }
        Ok(key)
    }

    /// The modulus size in bits, or [`RsaError::NotRsa`].
    pub(crate) fn rsa_bits(&self) -> Result<usize, RsaError> {
        // SAFETY: `self.0` is a valid key for as long as `self` lives.
        let id = unsafe { sys::EVP_PKEY_id(self.0.as_ptr()) };
        if id != sys::EVP_PKEY_RSA {
            return Err(fail(RsaError::NotRsa));
        }
        // SAFETY: as above.
        let bits = unsafe { sys::EVP_PKEY_bits(self.0.as_ptr()) };
        usize::try_from(bits)
            .ok()
            .filter(|b| *b > 0)
            .ok_or_else(|| fail(RsaError::NotRsa))
    }

    /// The modulus size in bytes: the ciphertext size, and an upper bound of the plaintext.
    fn size(&self) -> Result<usize, RsaError> {
        // SAFETY: `self.0` is a valid key for as long as `self` lives.
        let size = unsafe { sys::EVP_PKEY_size(self.0.as_ptr()) };
        usize::try_from(size)
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| fail(RsaError::NotRsa))
    }

    /// A context for one OAEP operation with `oaep` and the default (empty) label.
    fn oaep_ctx(&self, oaep: Oaep, direction: &Direction) -> Result<PkeyCtx, RsaError> {
        self.rsa_bits()?;
        // SAFETY: `self.0` is a valid key; the new context takes its own reference to it, so
        // it stays valid whatever is dropped first. No engine (null) is aws-lc's only option.
        let raw = unsafe { sys::EVP_PKEY_CTX_new(self.0.as_ptr(), std::ptr::null_mut()) };
        let ctx = NonNull::new(raw)
            .map(PkeyCtx)
            .ok_or_else(|| fail(RsaError::Internal("EVP_PKEY_CTX_new")))?;
        let p = ctx.0.as_ptr();
        // SAFETY: `p` is the valid context owned by `ctx`, which outlives this call and the
        // three below; the digest pointers they pass are aws-lc's static descriptions.
        let init = unsafe {
            match direction {
                Direction::Encrypt => sys::EVP_PKEY_encrypt_init(p),
                Direction::Decrypt => sys::EVP_PKEY_decrypt_init(p),
            }
        };
        if init != 1 {
            return Err(fail(RsaError::Internal("EVP_PKEY_*crypt_init")));
        }
        // SAFETY: see above.
        if unsafe { sys::EVP_PKEY_CTX_set_rsa_padding(p, sys::RSA_PKCS1_OAEP_PADDING) } != 1 {
            return Err(fail(RsaError::Internal("EVP_PKEY_CTX_set_rsa_padding")));
        }
        // SAFETY: see above.
        if unsafe { sys::EVP_PKEY_CTX_set_rsa_oaep_md(p, md(oaep.label_hash)) } != 1 {
            return Err(fail(RsaError::Internal("EVP_PKEY_CTX_set_rsa_oaep_md")));
        }
        // SAFETY: see above.
        if unsafe { sys::EVP_PKEY_CTX_set_rsa_mgf1_md(p, md(oaep.mgf1_hash)) } != 1 {
            return Err(fail(RsaError::Internal("EVP_PKEY_CTX_set_rsa_mgf1_md")));
        }
        Ok(ctx)
    }

    pub(crate) fn decrypt_oaep(
        &self,
        oaep: Oaep,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, RsaError> {
        let ctx = self.oaep_ctx(oaep, &Direction::Decrypt)?;
        let mut out = Zeroizing::new(vec![0u8; self.size()?]);
        let mut out_len = out.len();
        // SAFETY: `ctx` is a valid context initialised for decryption; `out` is writable for
        // `out_len` bytes (aws-lc checks the capacity it is given before writing);
        // `ciphertext` is readable for its length. aws-lc's OAEP decoding is constant-time
        // and fails with one indistinguishable error.
        let ok = unsafe {
            sys::EVP_PKEY_decrypt(
                ctx.0.as_ptr(),
                out.as_mut_ptr(),
                &mut out_len,
                ciphertext.as_ptr(),
                ciphertext.len(),
            )
        };
        if ok != 1 || out_len > out.len() {
            return Err(fail(RsaError::Decrypt));
        }
        out.truncate(out_len);
        Ok(out)
    }

    pub(crate) fn encrypt_oaep(&self, oaep: Oaep, plaintext: &[u8]) -> Result<Vec<u8>, RsaError> {
        let ctx = self.oaep_ctx(oaep, &Direction::Encrypt)?;
        let mut out = vec![0u8; self.size()?];
        let mut out_len = out.len();
        // SAFETY: `ctx` is a valid context initialised for encryption; `out` is writable for
        // `out_len` bytes (the modulus size, all RSA encryption writes); `plaintext` is
        // readable for its length.
        let ok = unsafe {
            sys::EVP_PKEY_encrypt(
                ctx.0.as_ptr(),
                out.as_mut_ptr(),
                &mut out_len,
                plaintext.as_ptr(),
                plaintext.len(),
            )
        };
        if ok != 1 || out_len > out.len() {
            return Err(fail(RsaError::Encrypt));
        }
        out.truncate(out_len);
        Ok(out)
    }
}

/// An owned `EVP_PKEY_CTX`.
struct PkeyCtx(NonNull<sys::EVP_PKEY_CTX>);

impl Drop for PkeyCtx {
    fn drop(&mut self) {
        // SAFETY: we own this context (from `EVP_PKEY_CTX_new`) and free it once; freeing
        // also drops its reference to the key.
        unsafe { sys::EVP_PKEY_CTX_free(self.0.as_ptr()) }
    }
}
