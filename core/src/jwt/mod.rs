//! JWT verification: bearer tokens checked locally against the provider's
//! JWKS or the plugin's PEM `public_key`, as APISIX does with `use_jwks` /
//! `public_key`.
//!
//! - [`Jwks`] holds verification keys ([`Jwks::parse`] for a JWK Set,
//!   [`Jwks::from_pem`] for a PEM key).
//! - [`verify`] checks a token with a [`VerifyPolicy`] at a given time and
//!   returns the claims or a [`VerifyError`], whose [`kind`](VerifyError::kind)
//!   tells the caller how to answer.
//!
//! Signatures are RSA (PKCS#1 v1.5 and PSS) and ECDSA P-256/P-384. Keys are
//! parsed and checked by the RustCrypto crates; ECDSA is verified by them,
//! RSA by `rsa_verify` (a variable-time public-key operation, ~3.5x faster
//! in the wasm VM than `rsa`'s: see that module). No HMAC, no `none`: a
//! verifier that only holds public keys cannot be tricked into using one
//! as a shared secret.

mod alg;
mod b64;
mod keys;
mod rsa_verify;
mod verify;

pub use alg::{Alg, KeyKind, UnsupportedAlg};
pub use keys::{Jwk, Jwks, JwksError, MAX_RSA_BITS, MIN_RSA_BITS};
pub use verify::{
    check_audience, check_scopes, verify, AudiencePolicy, Rejection, Segment, VerifiedToken,
    VerifyError, VerifyPolicy, MAX_TOKEN_LEN,
};

#[cfg(test)]
pub(crate) mod tests;

/// The payload of a JWT, not verified. Only for a token the caller got
/// straight from the provider's token endpoint (APISIX reads a session's
/// granted scopes this way); `None` when it is not a JWT with a JSON
/// object payload.
pub fn unverified_payload(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&b64::url_lenient(payload)?).ok()
}
