//! Sealing: HKDF-SHA256 key derivation and AES-256-GCM.
//!
//! The key is derived from `session.secret` with HKDF-SHA256 (no salt,
//! info `"openid-connect session v1"`). A cookie value is
//!
//! ```text
//! base64url-no-pad( version (0x02) ‖ nonce (12 bytes) ‖ AES-256-GCM ciphertext ‖ tag (16 bytes) )
//! ```
//!
//! The GCM associated data of [`seal`] is the version byte followed by the
//! caller's `aad`. A session ([`encode`]) uses the route binding (see
//! [`SessionKey::for_route`]: SHA-256 of the route's `discovery` and
//! `client_id`) followed by the cookie's base name (`session`), so a value
//! copied into another cookie, relabelled with another version, or shown
//! to a route of another provider or client that shares the cookie name
//! and secret fails to open. (Version 1 had no binding; its cookies no
//! longer open: those browsers log in again.) The nonce is the caller's: it must
//! be 12 fresh random bytes for every [`seal`]/[`encode`] (a repeated nonce
//! under one key breaks GCM).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hkdf::Hkdf;
use sha2::Sha256;
use std::fmt;

use super::{SessionError, VERSION};
use crate::secret::Secret;

/// HKDF `info` of the session key.
const KDF_INFO: &[u8] = b"openid-connect session v1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The AES-256-GCM key of the session cookie, and the route binding that
/// sessions sealed with it carry in their additional data. `Debug` prints
/// `[redacted]`.
#[derive(Clone)]
pub struct SessionKey {
    key: [u8; 32],
    binding: [u8; 32],
}

impl SessionKey {
    /// HKDF-SHA256 of the configured `session.secret`, bound to no route
    /// (an all-zero binding; tests). Routes use [`SessionKey::for_route`].
    pub fn derive(secret: &Secret) -> SessionKey {
        let hk = Hkdf::<Sha256>::new(None, secret.expose().as_bytes());
        let mut okm = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit: cannot fail.
        let _ = hk.expand(KDF_INFO, &mut okm);
        SessionKey {
            key: okm,
            binding: [0; 32],
        }
    }

    /// The key of a route: its sessions open only on routes with the same
    /// secret, `discovery` and `client_id` (binding SHA-256(`discovery` ‖
    /// 0x00 ‖ `client_id`); a URL has no NUL, so no two pairs collide).
    pub fn for_route(secret: &Secret, discovery: &str, client_id: &str) -> SessionKey {
        use sha2::Digest as _;
        let mut h = Sha256::new();
        h.update(discovery.as_bytes());
        h.update([0u8]);
        h.update(client_id.as_bytes());
        SessionKey {
            binding: h.finalize().into(),
            ..SessionKey::derive(secret)
        }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&Key::<Aes256Gcm>::from(self.key))
    }

    /// A session's additional data (after the version): binding ‖ name.
    pub(super) fn session_aad(&self, name: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(32 + name.len());
        aad.extend_from_slice(&self.binding);
        aad.extend_from_slice(name.as_bytes());
        aad
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey([redacted])")
    }
}

fn full_aad(aad: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(aad.len() + 1);
    v.push(VERSION);
    v.extend_from_slice(aad);
    v
}

/// Encrypts `plaintext` for the cookie whose base name is `aad`.
pub fn seal(key: &SessionKey, aad: &[u8], plaintext: &[u8], nonce: [u8; 12]) -> String {
    let aad = full_aad(aad);
    let ct = key
        .cipher()
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        // Only fails for plaintexts over 64 GiB.
        .unwrap_or_default();
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    URL_SAFE_NO_PAD.encode(out)
}

/// Decrypts a value made by [`seal`] with the same key and `aad`.
pub fn open(key: &SessionKey, aad: &[u8], value: &str) -> Result<Vec<u8>, SessionError> {
    let raw = URL_SAFE_NO_PAD
        .decode(value.as_bytes())
        .map_err(|_| SessionError::Base64)?;
    let Some((&version, rest)) = raw.split_first() else {
        return Err(SessionError::TooShort);
    };
    if version != VERSION {
        return Err(SessionError::UnknownVersion(version));
    }
    if rest.len() < NONCE_LEN + TAG_LEN {
        return Err(SessionError::TooShort);
    }
    let (nonce, ct) = rest.split_at(NONCE_LEN);
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(nonce);
    let aad = full_aad(aad);
    key.cipher()
        .decrypt(&Nonce::from(n), Payload { msg: ct, aad: &aad })
        .map_err(|_| SessionError::Authentication)
}
