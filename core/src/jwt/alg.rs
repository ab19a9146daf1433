//! The signature algorithms the verifier knows.

use std::fmt;
use std::str::FromStr;

/// A JWS signature algorithm (RFC 7518 section 3) that the verifier can
/// check with a public key.
///
/// Only asymmetric algorithms exist here: `none` and the HMAC family
/// (`HS256`...) are not `Alg` values at all, so no policy can allow them
/// and no key can be confused for an HMAC secret.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256 (MGF1 SHA-256, salt of 32 bytes).
    PS256,
    /// RSASSA-PSS with SHA-384 (MGF1 SHA-384, salt of 48 bytes).
    PS384,
    /// RSASSA-PSS with SHA-512 (MGF1 SHA-512, salt of 64 bytes).
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
}

/// The kind of public key an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// An RSA key (`kty` `RSA`), for `RS*` and `PS*`.
    Rsa,
    /// An EC key on P-256 (`kty` `EC`, `crv` `P-256`), for `ES256`.
    EcP256,
    /// An EC key on P-384 (`kty` `EC`, `crv` `P-384`), for `ES384`.
    EcP384,
}

impl Alg {
    /// Every supported algorithm, in the order of the default allow-list.
    pub const ALL: [Alg; 8] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
    ];

    /// The JOSE name (`"RS256"`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
        }
    }

    /// The kind of key that verifies this algorithm.
    pub fn key_kind(self) -> KeyKind {
        match self {
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                KeyKind::Rsa
            }
            Alg::ES256 => KeyKind::EcP256,
            Alg::ES384 => KeyKind::EcP384,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a supported [`Alg`] (`none`, `HS256`, `EdDSA`,
/// `ES512`, a misspelling...). Names are case-sensitive, as in RFC 7515.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedAlg;

impl fmt::Display for UnsupportedAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "unsupported signature algorithm (supported: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384)",
        )
    }
}

impl std::error::Error for UnsupportedAlg {}

impl FromStr for Alg {
    type Err = UnsupportedAlg;

    fn from_str(s: &str) -> Result<Alg, UnsupportedAlg> {
        Alg::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or(UnsupportedAlg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for alg in Alg::ALL {
            assert_eq!(alg.as_str().parse::<Alg>(), Ok(alg));
            assert_eq!(alg.to_string(), alg.as_str());
        }
    }

    #[test]
    fn none_hmac_and_unknown_names_are_not_algs() {
        for name in [
            "none", "None", "NONE", "HS256", "HS384", "HS512", "rs256", "ES512", "EdDSA", "",
            "RS256 ",
        ] {
            assert_eq!(name.parse::<Alg>(), Err(UnsupportedAlg), "{name:?}");
        }
    }

    #[test]
    fn key_kinds() {
        assert_eq!(Alg::PS384.key_kind(), KeyKind::Rsa);
        assert_eq!(Alg::ES256.key_kind(), KeyKind::EcP256);
        assert_eq!(Alg::ES384.key_kind(), KeyKind::EcP384);
    }
}
