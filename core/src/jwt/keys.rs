//! Verification keys: a JWK Set (RFC 7517) from the provider's `jwks_uri`,
//! or the PEM `public_key` of the plugin configuration.

use std::fmt;

use p256::pkcs8::DecodePublicKey;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{BoxedUint, PublicKey as RsaPublicKey};
use serde_json::{Map, Value};
use sha2::{Sha256, Sha384, Sha512};

use super::alg::{Alg, KeyKind};
use super::b64;
use super::rsa_verify::RsaModulus;

/// Smallest RSA modulus accepted, in bits (RFC 7518 section 3.3: "a key of
/// size 2048 bits or larger MUST be used").
pub const MIN_RSA_BITS: usize = 2048;

/// Largest RSA modulus accepted, in bits (bounds verification cost).
pub const MAX_RSA_BITS: usize = 8192;

/// One public verification key.
#[derive(Clone)]
pub struct Jwk {
    kid: Option<String>,
    alg: Option<Alg>,
    material: Material,
}

#[derive(Clone)]
enum Material {
    /// Parsed and checked by `rsa`, verified by [`RsaModulus`] (see
    /// `rsa_verify.rs` for why).
    Rsa(Box<RsaModulus>),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

impl Jwk {
    /// The key id (`kid`), if the key has one. A key without one (a PEM
    /// `public_key`) matches tokens whatever their `kid`.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The algorithm the key is restricted to (`alg` member), if any.
    pub fn alg(&self) -> Option<Alg> {
        self.alg
    }

    /// The kind of key.
    pub fn kind(&self) -> KeyKind {
        match self.material {
            Material::Rsa(_) => KeyKind::Rsa,
            Material::P256(_) => KeyKind::EcP256,
            Material::P384(_) => KeyKind::EcP384,
        }
    }

    /// Whether this key may verify a signature made with `alg`: the key
    /// kind fits the algorithm family, and the key's own `alg`, if set, is
    /// exactly `alg`.
    pub fn accepts(&self, alg: Alg) -> bool {
        self.kind() == alg.key_kind() && self.alg.is_none_or(|own| own == alg)
    }

    /// Checks `signature` over `message` with this key and `alg`. False on
    /// any mismatch, including a key that does not [`accept`](Self::accepts)
    /// the algorithm or a signature of the wrong length or encoding (ECDSA
    /// signatures are the JOSE fixed-size `R || S`, never DER).
    pub(crate) fn verify_signature(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier;

        if !self.accepts(alg) {
            return false;
        }
        match (&self.material, alg) {
            (Material::Rsa(k), Alg::RS256) => k.verify_pkcs1v15::<Sha256>(message, signature),
            (Material::Rsa(k), Alg::RS384) => k.verify_pkcs1v15::<Sha384>(message, signature),
            (Material::Rsa(k), Alg::RS512) => k.verify_pkcs1v15::<Sha512>(message, signature),
            (Material::Rsa(k), Alg::PS256) => k.verify_pss::<Sha256>(message, signature),
            (Material::Rsa(k), Alg::PS384) => k.verify_pss::<Sha384>(message, signature),
            (Material::Rsa(k), Alg::PS512) => k.verify_pss::<Sha512>(message, signature),
            (Material::P256(k), Alg::ES256) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|sig| k.verify(message, &sig).is_ok()),
            (Material::P384(k), Alg::ES384) => p384::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|sig| k.verify(message, &sig).is_ok()),
            _ => false,
        }
    }

    fn rsa(kid: Option<String>, alg: Option<Alg>, key: &RsaPublicKey) -> Result<Jwk, JwksError> {
        Ok(Jwk {
            kid,
            alg,
            material: rsa_material(key)?,
        })
    }
}

impl fmt::Debug for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwk")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("kind", &self.kind())
            .finish()
    }
}

/// A set of verification keys: the signing keys of a JWK Set, or the one
/// key of a PEM `public_key`.
#[derive(Clone, Debug)]
pub struct Jwks {
    keys: Vec<Jwk>,
    skipped: usize,
}

/// Why a key document gave no usable key.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksError {
    /// The provider answered the JWKS request with this HTTP status, not
    /// 200 (see [`crate::discovery::parse_jwks_response`]).
    HttpStatus(u16),
    /// The body is not JSON.
    NotJson,
    /// The JSON is not an object with a `keys` array.
    NoKeysArray,
    /// No key in the set is a usable signing key; `skipped` keys were
    /// ignored (encryption keys, unsupported types or curves, bad members).
    NoUsableKey {
        /// How many entries of `keys` were ignored.
        skipped: usize,
    },
    /// The PEM text has no `-----BEGIN ...-----` / `-----END ...-----` pair.
    PemMissing,
    /// The PEM block is a private key, a certificate or another kind of
    /// object, not a public key (the label is in the message).
    PemLabel(String),
    /// The PEM body is not valid base64.
    PemBase64,
    /// The key is not a well-formed RSA, P-256 or P-384 public key.
    UnsupportedKey,
    /// The RSA modulus is outside [`MIN_RSA_BITS`]..=[`MAX_RSA_BITS`].
    RsaKeySize {
        /// The modulus size found, in bits.
        bits: usize,
    },
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwksError::HttpStatus(s) => write!(f, "JWKS request answered with HTTP status {s}"),
            JwksError::NotJson => f.write_str("JWKS is not valid JSON"),
            JwksError::NoKeysArray => f.write_str("JWKS is not an object with a \"keys\" array"),
            JwksError::NoUsableKey { skipped } => write!(
                f,
                "JWKS has no usable signing key (RSA, EC P-256 or P-384; {skipped} ignored)"
            ),
            JwksError::PemMissing => {
                f.write_str("public key is not PEM (no -----BEGIN/-----END lines)")
            }
            JwksError::PemLabel(label) => write!(
                f,
                "PEM block is {label:?}, expected \"PUBLIC KEY\" or \"RSA PUBLIC KEY\""
            ),
            JwksError::PemBase64 => f.write_str("PEM body is not valid base64"),
            JwksError::UnsupportedKey => {
                f.write_str("not a well-formed RSA, EC P-256 or EC P-384 public key")
            }
            JwksError::RsaKeySize { bits } => write!(
                f,
                "RSA key of {bits} bits, expected {MIN_RSA_BITS} to {MAX_RSA_BITS}"
            ),
        }
    }
}

impl std::error::Error for JwksError {}

impl Jwks {
    /// Parses a JWK Set (RFC 7517 section 5): `{"keys": [...]}`.
    ///
    /// Keeps RSA keys (`n`, `e`) and EC keys on P-256 / P-384 (`x`, `y`).
    /// Silently skips (counting them in [`skipped`](Self::skipped)) every
    /// entry that cannot verify a supported signature: `use` other than
    /// `sig` (Keycloak publishes an `RSA-OAEP` encryption key), `key_ops`
    /// without `verify`, an `alg` that is not an [`Alg`] or does not fit
    /// the key type, other `kty`/`crv` values (`oct` keys are never used),
    /// a non-string `kid`, members that do not decode, points not on the
    /// curve, RSA moduli outside 2048..=8192 bits. `x5c` is not read.
    ///
    /// Errors if the body is not a JSON object with a `keys` array or if
    /// no key is left.
    pub fn parse(body: &[u8]) -> Result<Jwks, JwksError> {
        let doc: Value = serde_json::from_slice(body).map_err(|_| JwksError::NotJson)?;
        let entries = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::NoKeysArray)?;
        let mut keys = Vec::with_capacity(entries.len());
        let mut skipped = 0;
        for entry in entries {
            match entry.as_object().and_then(parse_jwk) {
                Some(k) => keys.push(k),
                None => skipped += 1,
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey { skipped });
        }
        Ok(Jwks { keys, skipped })
    }

    /// Reads the plugin's `public_key`: one PEM block, either a
    /// SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`, RSA or EC P-256/P-384) or
    /// a PKCS#1 RSA key (`BEGIN RSA PUBLIC KEY`). Text around the block is
    /// ignored. The key has no `kid` and no `alg`, so it verifies any token
    /// whose algorithm fits its type, whatever the token's `kid`.
    /// Certificates are not accepted: give the certificate's public key.
    pub fn from_pem(pem: &str) -> Result<Jwks, JwksError> {
        let (label, body) = pem_block(pem).ok_or(JwksError::PemMissing)?;
        let der = match label {
            "PUBLIC KEY" | "RSA PUBLIC KEY" => {
                b64::standard_ignoring_whitespace(body).ok_or(JwksError::PemBase64)?
            }
            other => return Err(JwksError::PemLabel(other.to_string())),
        };
        let key = if label == "RSA PUBLIC KEY" {
            let k = RsaPublicKey::from_pkcs1_der(&der).map_err(|_| JwksError::UnsupportedKey)?;
            checked_rsa_size(k)?
        } else if let Ok(k) = RsaPublicKey::from_public_key_der(&der) {
            checked_rsa_size(k)?
        } else if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(&der) {
            return Ok(Jwks::single(Jwk {
                kid: None,
                alg: None,
                material: Material::P256(k),
            }));
        } else if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_der(&der) {
            return Ok(Jwks::single(Jwk {
                kid: None,
                alg: None,
                material: Material::P384(k),
            }));
        } else {
            return Err(JwksError::UnsupportedKey);
        };
        Ok(Jwks::single(Jwk::rsa(None, None, &key)?))
    }

    fn single(key: Jwk) -> Jwks {
        Jwks {
            keys: vec![key],
            skipped: 0,
        }
    }

    /// The number of usable keys (at least one).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a `Jwks` holds at least one key. Present for the
    /// `len`/`is_empty` convention.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many entries of the JWK Set were ignored (see [`Jwks::parse`]).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The usable keys, in document order.
    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }

    /// Whether some key has exactly this `kid`.
    pub fn contains_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid() == Some(kid))
    }
}

/// One JWK object to a key, or `None` if it must be skipped.
fn parse_jwk(obj: &Map<String, Value>) -> Option<Jwk> {
    // Only signature keys: "use" absent or "sig"; "key_ops", if present,
    // must allow "verify".
    match obj.get("use") {
        None | Some(Value::Null) => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(_) => return None,
    }
    match obj.get("key_ops") {
        None | Some(Value::Null) => {}
        Some(Value::Array(ops)) if ops.iter().any(|o| o.as_str() == Some("verify")) => {}
        Some(_) => return None,
    }
    let kid = match obj.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return None,
    };
    let alg = match obj.get("alg") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.parse::<Alg>().ok()?),
        Some(_) => return None,
    };
    let material = match obj.get("kty").and_then(Value::as_str)? {
        "RSA" => {
            let n = member_bytes(obj, "n")?;
            let e = member_bytes(obj, "e")?;
            rsa_material(&rsa_from_components(&n, &e).ok()?).ok()?
        }
        "EC" => match obj.get("crv").and_then(Value::as_str)? {
            "P-256" => {
                let point = uncompressed_point(obj, 32)?;
                Material::P256(p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).ok()?)
            }
            "P-384" => {
                let point = uncompressed_point(obj, 48)?;
                Material::P384(p384::ecdsa::VerifyingKey::from_sec1_bytes(&point).ok()?)
            }
            _ => return None,
        },
        _ => return None,
    };
    let key = Jwk { kid, alg, material };
    // A key whose declared alg cannot be used with its type is unusable.
    if let Some(a) = alg {
        if a.key_kind() != key.kind() {
            return None;
        }
    }
    Some(key)
}

fn member_bytes(obj: &Map<String, Value>, name: &str) -> Option<Vec<u8>> {
    b64::url_lenient(obj.get(name)?.as_str()?)
}

/// `04 || x || y` from the JWK `x` and `y`, each exactly `len` bytes
/// (RFC 7518 section 6.2.1.2).
fn uncompressed_point(obj: &Map<String, Value>, len: usize) -> Option<Vec<u8>> {
    let x = member_bytes(obj, "x")?;
    let y = member_bytes(obj, "y")?;
    if x.len() != len || y.len() != len {
        return None;
    }
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Some(point)
}

fn rsa_from_components(n: &[u8], e: &[u8]) -> Result<RsaPublicKey, JwksError> {
    let n = strip_leading_zeros(n);
    let e = strip_leading_zeros(e);
    let bits = n.len() * 8;
    // Cheap bounds before any big-number work (exact check below).
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(JwksError::RsaKeySize { bits });
    }
    if e.is_empty() || e.len() > 8 {
        return Err(JwksError::UnsupportedKey);
    }
    let key = RsaPublicKey::new_with_size_limits(
        BoxedUint::from_be_slice_vartime(n),
        BoxedUint::from_be_slice_vartime(e),
        MIN_RSA_BITS..=MAX_RSA_BITS,
    );
    match key {
        Ok(k) => Ok(k),
        Err(rsa::Error::ModulusTooSmall) | Err(rsa::Error::ModulusTooLarge) => {
            Err(JwksError::RsaKeySize { bits })
        }
        Err(_) => Err(JwksError::UnsupportedKey),
    }
}

/// The verification form of a key `rsa` has parsed and checked (odd
/// modulus of an accepted size, exponent in its range).
fn rsa_material(key: &RsaPublicKey) -> Result<Material, JwksError> {
    RsaModulus::new(
        &key.n().to_be_bytes_trimmed_vartime(),
        &key.e().to_be_bytes_trimmed_vartime(),
    )
    .map(|m| Material::Rsa(Box::new(m)))
    .ok_or(JwksError::UnsupportedKey)
}

fn checked_rsa_size(key: RsaPublicKey) -> Result<RsaPublicKey, JwksError> {
    let bits = key.n().bit_width() as usize;
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(JwksError::RsaKeySize { bits });
    }
    Ok(key)
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b.get(start..).unwrap_or_default()
}

/// The label and body of the first PEM block in `text`.
fn pem_block(text: &str) -> Option<(&str, &str)> {
    const BEGIN: &str = "-----BEGIN ";
    const DASHES: &str = "-----";
    let after_begin = text.get(text.find(BEGIN)? + BEGIN.len()..)?;
    let label_end = after_begin.find(DASHES)?;
    let label = after_begin.get(..label_end)?;
    let rest = after_begin.get(label_end + DASHES.len()..)?;
    let end_marker = format!("-----END {label}-----");
    let body = rest.get(..rest.find(&end_marker)?)?;
    Some((label, body))
}
