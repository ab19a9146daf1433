//! Verifier and key-set tests. Keys are generated once per test binary;
//! every test passes a fixed `now`.

use std::sync::OnceLock;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use rsa::pkcs1::EncodeRsaPublicKey as _;
use rsa::pkcs8::EncodePublicKey as _;
use rsa::traits::PublicKeyParts as _;
use rsa::{Generate as _, PrivateKey};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256, Sha384, Sha512};

use super::*;

pub(crate) const NOW: u64 = 1_700_000_000;
pub(crate) const ISS: &str = "https://idp.example/realms/quickstart-realm";
pub(crate) const CLIENT: &str = "apisix";

// ---------------------------------------------------------------------
// Fixtures

pub(crate) struct TestKeys {
    pub(crate) rsa_a: PrivateKey,
    pub(crate) rsa_b: PrivateKey,
    p256: p256::ecdsa::SigningKey,
    p384: p384::ecdsa::SigningKey,
}

pub(crate) fn test_keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| TestKeys {
        rsa_a: PrivateKey::generate(),
        rsa_b: PrivateKey::generate(),
        p256: p256::ecdsa::SigningKey::generate(),
        p384: p384::ecdsa::SigningKey::generate(),
    })
}

#[derive(Clone, Copy)]
enum Signer {
    RsaA,
    RsaB,
    P256,
    P384,
}

impl Signer {
    fn sign(self, alg: Alg, input: &[u8]) -> Vec<u8> {
        let k = test_keys();
        let rsa = match self {
            Signer::RsaA => &k.rsa_a,
            Signer::RsaB => &k.rsa_b,
            Signer::P256 => {
                let sig: p256::ecdsa::Signature = k.p256.sign(input);
                return sig.to_bytes().to_vec();
            }
            Signer::P384 => {
                let sig: p384::ecdsa::Signature = k.p384.sign(input);
                return sig.to_bytes().to_vec();
            }
        };
        match alg {
            Alg::RS256 => rsa.pkcs1v15_sign::<Sha256>(input),
            Alg::RS384 => rsa.pkcs1v15_sign::<Sha384>(input),
            Alg::RS512 => rsa.pkcs1v15_sign::<Sha512>(input),
            Alg::PS256 => rsa.pss_sign::<Sha256>(input),
            Alg::PS384 => rsa.pss_sign::<Sha384>(input),
            Alg::PS512 => rsa.pss_sign::<Sha512>(input),
            Alg::ES256 | Alg::ES384 => panic!("EC alg with an RSA signer"),
        }
        .unwrap()
    }
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.payload.signature`, signed by `signer` with `sign_alg`.
fn token_with(header: &Value, payload: &[u8], signer: Signer, sign_alg: Alg) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(payload));
    let sig = signer.sign(sign_alg, input.as_bytes());
    format!("{input}.{}", b64(sig))
}

/// A token for `alg` with `kid`, signed by the matching key.
pub(crate) fn token(alg: Alg, kid: Option<&str>, claims: &Value) -> String {
    let mut header = json!({ "alg": alg.as_str(), "typ": "JWT" });
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    let signer = match alg.key_kind() {
        KeyKind::Rsa => Signer::RsaA,
        KeyKind::EcP256 => Signer::P256,
        KeyKind::EcP384 => Signer::P384,
    };
    token_with(&header, claims.to_string().as_bytes(), signer, alg)
}

pub(crate) fn rsa_jwk(key: &PrivateKey, kid: &str) -> Value {
    json!({
        "kty": "RSA",
        "kid": kid,
        "use": "sig",
        "n": b64(key.n_bytes()),
        "e": b64(key.e_bytes()),
    })
}

fn ec_jwk(point: &[u8], crv: &str, kid: &str) -> Value {
    let half = (point.len() - 1) / 2;
    json!({
        "kty": "EC",
        "crv": crv,
        "kid": kid,
        "x": b64(&point[1..1 + half]),
        "y": b64(&point[1 + half..]),
    })
}

fn p256_jwk(kid: &str) -> Value {
    let point = test_keys().p256.verifying_key().to_sec1_point(false);
    ec_jwk(point.as_bytes(), "P-256", kid)
}

fn p384_jwk(kid: &str) -> Value {
    let point = test_keys().p384.verifying_key().to_sec1_point(false);
    ec_jwk(point.as_bytes(), "P-384", kid)
}

pub(crate) fn jwks(keys: Vec<Value>) -> Jwks {
    Jwks::parse(json!({ "keys": keys }).to_string().as_bytes()).unwrap()
}

/// RSA key A as "rsa-a", RSA key B as "rsa-b", P-256 as "ec-256", P-384
/// as "ec-384".
pub(crate) fn provider_keys() -> Jwks {
    let k = test_keys();
    jwks(vec![
        rsa_jwk(&k.rsa_a, "rsa-a"),
        rsa_jwk(&k.rsa_b, "rsa-b"),
        p256_jwk("ec-256"),
        p384_jwk("ec-384"),
    ])
}

pub(crate) fn claims() -> Value {
    json!({
        "iss": ISS,
        "sub": "user-1",
        "aud": ["account", CLIENT],
        "azp": CLIENT,
        "exp": NOW + 300,
        "iat": NOW - 10,
        "scope": "openid profile email",
        "preferred_username": "jack",
    })
}

fn policy() -> VerifyPolicy {
    VerifyPolicy {
        issuers: Some(vec![ISS.to_string()]),
        audience: AudiencePolicy {
            client_id: CLIENT.to_string(),
            ..AudiencePolicy::default()
        },
        ..VerifyPolicy::default()
    }
}

pub(crate) fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn rsa_spki_pem(key: &PrivateKey) -> String {
    let public = rsa::PublicKey::from(key);
    pem("PUBLIC KEY", public.to_public_key_der().unwrap().as_bytes())
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = if key.len() > 64 {
        Sha256::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    k.resize(64, 0);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

// ---------------------------------------------------------------------
// Valid tokens

#[test]
fn rs256_token_verifies() {
    let c = claims();
    let t = token(Alg::RS256, Some("rsa-a"), &c);
    let v = verify(&t, &provider_keys(), &policy(), NOW).unwrap();
    assert_eq!(v.alg, Alg::RS256);
    assert_eq!(v.exp, Some(NOW + 300));
    assert_eq!(v.claims["preferred_username"], "jack");
    assert_eq!(v.payload_json, c.to_string().into_bytes());
}

#[test]
fn every_rsa_algorithm_verifies() {
    for alg in [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
    ] {
        let t = token(alg, Some("rsa-a"), &claims());
        let v = verify(&t, &provider_keys(), &policy(), NOW);
        assert_eq!(v.map(|v| v.alg), Ok(alg), "{alg}");
    }
}

#[test]
fn es256_and_es384_verify() {
    let t = token(Alg::ES256, Some("ec-256"), &claims());
    assert_eq!(
        verify(&t, &provider_keys(), &policy(), NOW).map(|v| v.alg),
        Ok(Alg::ES256)
    );
    let t = token(Alg::ES384, Some("ec-384"), &claims());
    assert_eq!(
        verify(&t, &provider_keys(), &policy(), NOW).map(|v| v.alg),
        Ok(Alg::ES384)
    );
}

/// RFC 7515 appendix A.2 (RS256) and A.3 (ES256): tokens and keys made by
/// someone else, so the signature encodings are checked, not just
/// round-tripped. Payload: `{"iss":"joe","exp":1300819380,...}`.
#[test]
fn rfc7515_example_tokens_verify() {
    const PAYLOAD: &str = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
    let rsa_keys = jwks(vec![json!({
        "kty": "RSA",
        "n": "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
        "e": "AQAB"
    })]);
    let rs256 = format!(
        "eyJhbGciOiJSUzI1NiJ9.{PAYLOAD}.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw"
    );
    let joe = VerifyPolicy {
        issuers: Some(vec!["joe".into()]),
        ..VerifyPolicy::default()
    };
    let before_exp = 1_300_819_000;
    let v = verify(&rs256, &rsa_keys, &joe, before_exp).unwrap();
    assert_eq!(v.exp, Some(1_300_819_380));
    assert_eq!(v.claims["http://example.com/is_root"], true);
    assert_eq!(
        verify(&rs256, &rsa_keys, &joe, 1_300_819_380 + 121),
        Err(VerifyError::Expired)
    );

    let ec_keys = jwks(vec![json!({
        "kty": "EC",
        "crv": "P-256",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
    })]);
    let es256 = format!(
        "eyJhbGciOiJFUzI1NiJ9.{PAYLOAD}.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
    );
    assert_eq!(
        verify(&es256, &ec_keys, &joe, before_exp).map(|v| v.alg),
        Ok(Alg::ES256)
    );
    // Each vector against the other's key set.
    assert_eq!(
        verify(&es256, &rsa_keys, &joe, before_exp),
        Err(VerifyError::NoMatchingKey)
    );
    assert_eq!(
        verify(&rs256, &ec_keys, &joe, before_exp),
        Err(VerifyError::NoMatchingKey)
    );
}

// ---------------------------------------------------------------------
// Signatures

#[test]
fn tampered_signature_fails() {
    let t = token(Alg::RS256, Some("rsa-a"), &claims());
    let (input, sig) = t.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig[10] ^= 0x01;
    let t = format!("{input}.{}", b64(&sig));
    assert_eq!(
        verify(&t, &provider_keys(), &policy(), NOW),
        Err(VerifyError::BadSignature)
    );

    let t = token(Alg::ES256, Some("ec-256"), &claims());
    let (input, sig) = t.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig[40] ^= 0x80;
    let t = format!("{input}.{}", b64(&sig));
    assert_eq!(
        verify(&t, &provider_keys(), &policy(), NOW),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn truncated_or_empty_signature_fails() {
    let t = token(Alg::RS256, Some("rsa-a"), &claims());
    let (input, sig) = t.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    for bad in [&sig[..sig.len() - 1], &[][..]] {
        let t = format!("{input}.{}", b64(bad));
        assert_eq!(
            verify(&t, &provider_keys(), &policy(), NOW),
            Err(VerifyError::BadSignature)
        );
    }
}

#[test]
fn payload_swapped_after_signing_fails() {
    let good = token(Alg::RS256, Some("rsa-a"), &claims());
    let admin = with(claims(), "preferred_username", json!("admin"));
    let other = token(Alg::RS256, Some("rsa-a"), &admin);
    let parts: Vec<&str> = good.split('.').collect();
    let other_parts: Vec<&str> = other.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], other_parts[1], parts[2]);
    assert_eq!(
        verify(&forged, &provider_keys(), &policy(), NOW),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn signature_by_another_key_fails() {
    // Signed by key B but claims kid "rsa-a".
    let header = json!({"alg": "RS256", "kid": "rsa-a"});
    let t = token_with(
        &header,
        claims().to_string().as_bytes(),
        Signer::RsaB,
        Alg::RS256,
    );
    assert_eq!(
        verify(&t, &provider_keys(), &policy(), NOW),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn pkcs1_signature_labelled_pss_fails() {
    let header = json!({"alg": "PS256", "kid": "rsa-a"});
    let t = token_with(
        &header,
        claims().to_string().as_bytes(),
        Signer::RsaA,
        Alg::RS256,
    );
    assert_eq!(
        verify(&t, &provider_keys(), &policy(), NOW),
        Err(VerifyError::BadSignature)
    );
    let header = json!({"alg": "RS256", "kid": "rsa-a"});
    let t = token_with(
        &header,
        claims().to_string().as_bytes(),
        Signer::RsaA,
        Alg::PS256,
    );
    assert_eq!(
        verify(&t, &provider_keys(), &policy(), NOW),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn der_encoded_ecdsa_signature_is_refused() {
    let input = format!(
        "{}.{}",
        b64(json!({"alg": "ES256", "kid": "ec-256"}).to_string()),
        b64(claims().to_string())
    );
    let sig: p256::ecdsa::Signature = test_keys().p256.sign(input.as_bytes());
    let t = format!("{input}.{}", b64(sig.to_der().as_bytes()));
    assert_eq!(
        verify(&t, &provider_keys(), &policy(), NOW),
        Err(VerifyError::BadSignature)
    );
}

// ---------------------------------------------------------------------
// Algorithms

#[test]
fn alg_none_is_refused_with_or_without_signature() {
    let payload = b64(claims().to_string());
    for name in ["none", "None", "NONE", "nOnE"] {
        let header = b64(json!({ "alg": name }).to_string());
        let unsigned = format!("{header}.{payload}.");
        assert_eq!(
            verify(&unsigned, &provider_keys(), &VerifyPolicy::default(), NOW),
            Err(VerifyError::AlgNotAllowed),
            "{name}"
        );
        // With a signature that is valid RS256 over the same input.
        let sig = Signer::RsaA.sign(Alg::RS256, format!("{header}.{payload}").as_bytes());
        let signed = format!("{header}.{payload}.{}", b64(sig));
        assert_eq!(
            verify(&signed, &provider_keys(), &VerifyPolicy::default(), NOW),
            Err(VerifyError::AlgNotAllowed)
        );
    }
}

#[test]
fn hs256_keyed_with_the_rsa_public_key_is_refused_on_alg() {
    let pem_text = rsa_spki_pem(&test_keys().rsa_a);
    let keys = Jwks::from_pem(&pem_text).unwrap();
    let header = b64(json!({"alg": "HS256", "typ": "JWT"}).to_string());
    let payload = b64(claims().to_string());
    let input = format!("{header}.{payload}");
    for secret in [
        pem_text.as_bytes(),
        &rsa::PublicKey::from(&test_keys().rsa_a)
            .to_public_key_der()
            .unwrap()
            .to_vec()[..],
    ] {
        let t = format!("{input}.{}", b64(hmac_sha256(secret, input.as_bytes())));
        // Even with every algorithm allowed (empty list).
        assert_eq!(
            verify(&t, &keys, &VerifyPolicy::default(), NOW),
            Err(VerifyError::AlgNotAllowed)
        );
    }
    for hs in ["HS384", "HS512"] {
        let h = b64(json!({ "alg": hs }).to_string());
        let t = format!("{h}.{payload}.{}", b64([0u8; 32]));
        assert_eq!(
            verify(&t, &keys, &VerifyPolicy::default(), NOW),
            Err(VerifyError::AlgNotAllowed)
        );
    }
}

#[test]
fn alg_must_be_on_the_allow_list() {
    let p = VerifyPolicy {
        allowed_algs: vec![Alg::RS256],
        ..policy()
    };
    let es = token(Alg::ES256, Some("ec-256"), &claims());
    assert_eq!(
        verify(&es, &provider_keys(), &p, NOW),
        Err(VerifyError::AlgNotAllowed)
    );
    let ps = token(Alg::PS256, Some("rsa-a"), &claims());
    assert_eq!(
        verify(&ps, &provider_keys(), &p, NOW),
        Err(VerifyError::AlgNotAllowed)
    );
    let rs = token(Alg::RS256, Some("rsa-a"), &claims());
    assert!(verify(&rs, &provider_keys(), &p, NOW).is_ok());
    assert!(!p.allows(Alg::RS384));
    assert!(VerifyPolicy::default().allows(Alg::ES384));
}

#[test]
fn missing_or_non_string_alg() {
    let payload = b64(claims().to_string());
    let sig = b64([1u8; 256]);
    let t = format!("{}.{payload}.{sig}", b64(r#"{"typ":"JWT"}"#));
    assert_eq!(
        verify(&t, &provider_keys(), &policy(), NOW),
        Err(VerifyError::AlgNotAllowed)
    );
    let t = format!("{}.{payload}.{sig}", b64(r#"{"alg":256}"#));
    assert_eq!(
        verify(&t, &provider_keys(), &policy(), NOW),
        Err(VerifyError::Header)
    );
    let t = format!("{}.{payload}.{sig}", b64(r#"{"alg":"ES512"}"#));
    assert_eq!(
        verify(&t, &provider_keys(), &policy(), NOW),
        Err(VerifyError::AlgNotAllowed)
    );
}

// ---------------------------------------------------------------------
// Key selection

#[test]
fn unknown_kid_asks_for_a_refetch() {
    let t = token(Alg::RS256, Some("rotated-key"), &claims());
    let err = verify(&t, &provider_keys(), &policy(), NOW).unwrap_err();
    assert_eq!(err, VerifyError::UnknownKeyId);
    assert_eq!(err.kind(), Rejection::UnknownKeyId);
    assert_eq!(err.kind().status(), 401);
}

#[test]
fn no_kid_with_several_fitting_keys_is_ambiguous() {
    let t = token(Alg::RS256, None, &claims());
    assert_eq!(
        verify(&t, &provider_keys(), &policy(), NOW),
        Err(VerifyError::AmbiguousKey)
    );
    assert_eq!(
        VerifyError::AmbiguousKey.to_string(),
        "kid absent and several keys match"
    );
}

#[test]
fn no_kid_with_one_fitting_key_uses_it() {
    let k = test_keys();
    // One RSA key among EC keys: the only one that fits RS256.
    let keys = jwks(vec![
        p256_jwk("ec-256"),
        rsa_jwk(&k.rsa_a, "rsa-a"),
        p384_jwk("ec-384"),
    ]);
    let t = token(Alg::RS256, None, &claims());
    assert!(verify(&t, &keys, &policy(), NOW).is_ok());
    let t = token(Alg::ES384, None, &claims());
    assert!(verify(&t, &keys, &policy(), NOW).is_ok());
    // No key of the token's type at all.
    let only_ec = jwks(vec![p256_jwk("ec-256")]);
    let t = token(Alg::RS256, None, &claims());
    assert_eq!(
        verify(&t, &only_ec, &policy(), NOW),
        Err(VerifyError::NoMatchingKey)
    );
}

#[test]
fn kid_less_pem_key_matches_any_kid() {
    let keys = Jwks::from_pem(&rsa_spki_pem(&test_keys().rsa_a)).unwrap();
    let t = token(Alg::RS256, Some("whatever-keycloak-says"), &claims());
    assert!(verify(&t, &keys, &policy(), NOW).is_ok());
    let t = token(Alg::PS512, None, &claims());
    assert!(verify(&t, &keys, &policy(), NOW).is_ok());
    // A kid'd key wins over kid-less ones when the kid matches.
    let mut k = provider_keys().keys().to_vec();
    k.extend(keys.keys().iter().cloned());
    assert_eq!(k.len(), 5);
}

#[test]
fn key_whose_own_alg_disagrees_is_not_used() {
    let k = test_keys();
    let mut jwk = rsa_jwk(&k.rsa_a, "rsa-a");
    jwk["alg"] = json!("RS384");
    let keys = jwks(vec![jwk]);
    assert_eq!(keys.keys()[0].alg(), Some(Alg::RS384));
    let t = token(Alg::RS256, Some("rsa-a"), &claims());
    assert_eq!(
        verify(&t, &keys, &policy(), NOW),
        Err(VerifyError::NoMatchingKey)
    );
    let t = token(Alg::RS384, Some("rsa-a"), &claims());
    assert!(verify(&t, &keys, &policy(), NOW).is_ok());
    // kid of an EC key on an RSA token.
    let t = token(Alg::RS256, Some("ec-256"), &claims());
    assert_eq!(
        verify(&t, &provider_keys(), &policy(), NOW),
        Err(VerifyError::NoMatchingKey)
    );
}

#[test]
fn two_fitting_keys_with_the_same_kid_are_ambiguous() {
    let k = test_keys();
    let keys = jwks(vec![rsa_jwk(&k.rsa_a, "dup"), rsa_jwk(&k.rsa_b, "dup")]);
    let t = token(Alg::RS256, Some("dup"), &claims());
    assert_eq!(
        verify(&t, &keys, &policy(), NOW),
        Err(VerifyError::AmbiguousKey)
    );
    // Same kid on an RSA and an EC key: the alg decides.
    let keys = jwks(vec![rsa_jwk(&k.rsa_a, "dup"), p256_jwk("dup")]);
    assert!(verify(
        &token(Alg::ES256, Some("dup"), &claims()),
        &keys,
        &policy(),
        NOW
    )
    .is_ok());
    assert!(verify(
        &token(Alg::RS256, Some("dup"), &claims()),
        &keys,
        &policy(),
        NOW
    )
    .is_ok());
}

// ---------------------------------------------------------------------
// Time

#[test]
fn expiry_with_leeway() {
    let exp = NOW;
    let t = token(
        Alg::RS256,
        Some("rsa-a"),
        &with(claims(), "exp", json!(exp)),
    );
    let keys = provider_keys();
    let p = policy(); // leeway 120
    assert!(verify(&t, &keys, &p, exp).is_ok());
    assert!(verify(&t, &keys, &p, exp + 60).is_ok(), "within leeway");
    assert!(
        verify(&t, &keys, &p, exp + 120).is_ok(),
        "at the leeway edge"
    );
    assert_eq!(verify(&t, &keys, &p, exp + 121), Err(VerifyError::Expired));
    let strict = VerifyPolicy {
        leeway: 0,
        ..policy()
    };
    assert!(verify(&t, &keys, &strict, exp).is_ok());
    assert_eq!(
        verify(&t, &keys, &strict, exp + 1),
        Err(VerifyError::Expired)
    );
    assert_eq!(VerifyError::Expired.to_string(), "JWT expired");
}

#[test]
fn not_yet_valid() {
    let keys = provider_keys();
    let t = token(
        Alg::RS256,
        Some("rsa-a"),
        &with(claims(), "nbf", json!(NOW + 121)),
    );
    assert_eq!(
        verify(&t, &keys, &policy(), NOW),
        Err(VerifyError::NotYetValid)
    );
    let t = token(
        Alg::RS256,
        Some("rsa-a"),
        &with(claims(), "nbf", json!(NOW + 120)),
    );
    assert!(verify(&t, &keys, &policy(), NOW).is_ok());
}

#[test]
fn issued_in_the_future() {
    let keys = provider_keys();
    let t = token(
        Alg::RS256,
        Some("rsa-a"),
        &with(claims(), "iat", json!(NOW + 121)),
    );
    assert_eq!(
        verify(&t, &keys, &policy(), NOW),
        Err(VerifyError::IssuedInFuture)
    );
    let t = token(
        Alg::RS256,
        Some("rsa-a"),
        &with(claims(), "iat", json!(NOW + 100)),
    );
    assert!(verify(&t, &keys, &policy(), NOW).is_ok());
}

#[test]
fn time_claims_must_be_numbers() {
    let keys = provider_keys();
    for claim in ["exp", "nbf", "iat"] {
        let t = token(
            Alg::RS256,
            Some("rsa-a"),
            &with(claims(), claim, json!("tomorrow")),
        );
        assert_eq!(
            verify(&t, &keys, &policy(), NOW),
            Err(VerifyError::TimeClaimType(claim))
        );
    }
    // Fractional NumericDate is fine (floored).
    let t = token(
        Alg::RS256,
        Some("rsa-a"),
        &with(claims(), "exp", json!(NOW as f64 + 30.7)),
    );
    assert_eq!(
        verify(&t, &keys, &policy(), NOW).unwrap().exp,
        Some(NOW + 30)
    );
    // null counts as absent.
    let t = token(
        Alg::RS256,
        Some("rsa-a"),
        &with(claims(), "nbf", Value::Null),
    );
    assert!(verify(&t, &keys, &policy(), NOW).is_ok());
    // Absurd values do not overflow.
    let t = token(
        Alg::RS256,
        Some("rsa-a"),
        &with(claims(), "exp", json!(u64::MAX)),
    );
    assert_eq!(
        verify(&t, &keys, &policy(), NOW).unwrap().exp,
        Some(u64::MAX)
    );
    let t = token(Alg::RS256, Some("rsa-a"), &with(claims(), "exp", json!(-1)));
    assert_eq!(verify(&t, &keys, &policy(), NOW), Err(VerifyError::Expired));
    let t = token(
        Alg::RS256,
        Some("rsa-a"),
        &with(claims(), "nbf", json!(1e300)),
    );
    assert_eq!(
        verify(&t, &keys, &policy(), NOW),
        Err(VerifyError::NotYetValid)
    );
}

#[test]
fn token_without_exp_is_accepted() {
    let t = token(Alg::RS256, Some("rsa-a"), &without(claims(), "exp"));
    let v = verify(&t, &provider_keys(), &policy(), NOW).unwrap();
    assert_eq!(v.exp, None);
}

// ---------------------------------------------------------------------
// Issuer

#[test]
fn issuer_checks() {
    let keys = provider_keys();
    let evil = token(
        Alg::RS256,
        Some("rsa-a"),
        &with(
            claims(),
            "iss",
            json!("https://evil.example/realms/quickstart-realm"),
        ),
    );
    assert_eq!(
        verify(&evil, &keys, &policy(), NOW),
        Err(VerifyError::IssuerMismatch)
    );
    let slash = token(
        Alg::RS256,
        Some("rsa-a"),
        &with(claims(), "iss", json!(format!("{ISS}/"))),
    );
    assert_eq!(
        verify(&slash, &keys, &policy(), NOW),
        Err(VerifyError::IssuerMismatch)
    );
    let missing = token(Alg::RS256, Some("rsa-a"), &without(claims(), "iss"));
    assert_eq!(
        verify(&missing, &keys, &policy(), NOW),
        Err(VerifyError::MissingIssuer)
    );
    let number = token(Alg::RS256, Some("rsa-a"), &with(claims(), "iss", json!(1)));
    assert_eq!(
        verify(&number, &keys, &policy(), NOW),
        Err(VerifyError::MissingIssuer)
    );
    // No issuer check asked for: not checked at all.
    let open = VerifyPolicy {
        issuers: None,
        ..policy()
    };
    assert!(verify(&evil, &keys, &open, NOW).is_ok());
    assert!(verify(&missing, &keys, &open, NOW).is_ok());
    // An empty list of issuers accepts none (fail closed).
    let none = VerifyPolicy {
        issuers: Some(vec![]),
        ..policy()
    };
    let good = token(Alg::RS256, Some("rsa-a"), &claims());
    assert_eq!(
        verify(&good, &keys, &none, NOW),
        Err(VerifyError::IssuerMismatch)
    );
    // Several accepted issuers.
    let many = VerifyPolicy {
        issuers: Some(vec!["https://a.example".into(), format!("{ISS}/")]),
        ..policy()
    };
    assert!(verify(&slash, &keys, &many, NOW).is_ok());
    assert_eq!(
        verify(&evil, &keys, &many, NOW),
        Err(VerifyError::IssuerMismatch)
    );
}

// ---------------------------------------------------------------------
// Audience and scopes

fn audience(required: bool, match_with_client_id: bool, claim: &str) -> VerifyPolicy {
    VerifyPolicy {
        audience: AudiencePolicy {
            claim: claim.to_string(),
            required,
            match_with_client_id,
            client_id: CLIENT.to_string(),
        },
        ..policy()
    }
}

#[test]
fn audience_required_but_missing() {
    let keys = provider_keys();
    let t = token(Alg::RS256, Some("rsa-a"), &without(claims(), "aud"));
    let err = verify(&t, &keys, &audience(true, false, "aud"), NOW).unwrap_err();
    assert_eq!(err, VerifyError::AudienceMissing);
    assert_eq!(err.kind(), Rejection::AudienceMismatch);
    assert_eq!(err.kind().status(), 403);
    assert_eq!(err.to_string(), "required audience claim not present");
    // Not required: fine.
    assert!(verify(&t, &keys, &audience(false, false, "aud"), NOW).is_ok());
    // match_with_client_id implies required.
    assert_eq!(
        verify(&t, &keys, &audience(false, true, "aud"), NOW),
        Err(VerifyError::AudienceMissing)
    );
    // null is absent.
    let t = token(
        Alg::RS256,
        Some("rsa-a"),
        &with(claims(), "aud", Value::Null),
    );
    assert_eq!(
        verify(&t, &keys, &audience(true, false, "aud"), NOW),
        Err(VerifyError::AudienceMissing)
    );
}

#[test]
fn audience_must_match_the_client_id() {
    let keys = provider_keys();
    let p = audience(false, true, "aud");
    // Array containing the client id (claims() has ["account", CLIENT]).
    assert!(verify(&token(Alg::RS256, Some("rsa-a"), &claims()), &keys, &p, NOW).is_ok());
    // Equal string.
    let t = token(
        Alg::RS256,
        Some("rsa-a"),
        &with(claims(), "aud", json!(CLIENT)),
    );
    assert!(verify(&t, &keys, &p, NOW).is_ok());
    // Other string, array without it, empty array, wrong type.
    for aud in [
        json!("account"),
        json!(["account", "broker"]),
        json!([]),
        json!(42),
        json!({ "0": CLIENT }),
        json!(format!("{CLIENT} ")),
    ] {
        let t = token(
            Alg::RS256,
            Some("rsa-a"),
            &with(claims(), "aud", aud.clone()),
        );
        let err = verify(&t, &keys, &p, NOW).unwrap_err();
        assert_eq!(err, VerifyError::AudienceMismatch, "{aud}");
        assert_eq!(err.to_string(), "mismatched audience");
        assert_eq!(err.kind().status(), 403);
    }
    // Present but not matching is fine without match_with_client_id.
    let t = token(
        Alg::RS256,
        Some("rsa-a"),
        &with(claims(), "aud", json!("account")),
    );
    assert!(verify(&t, &keys, &audience(true, false, "aud"), NOW).is_ok());
}

#[test]
fn custom_audience_claim() {
    let keys = provider_keys();
    let t = token(
        Alg::RS256,
        Some("rsa-a"),
        &with(claims(), "aud", json!("account")),
    );
    // azp = CLIENT in claims().
    assert!(verify(&t, &keys, &audience(true, true, "azp"), NOW).is_ok());
    let t = token(Alg::RS256, Some("rsa-a"), &without(claims(), "azp"));
    assert_eq!(
        verify(&t, &keys, &audience(true, true, "azp"), NOW),
        Err(VerifyError::AudienceMissing)
    );
}

#[test]
fn required_scopes() {
    let keys = provider_keys();
    let need = |scopes: &[&str]| VerifyPolicy {
        required_scopes: scopes.iter().map(|s| s.to_string()).collect(),
        ..policy()
    };
    let t = token(Alg::RS256, Some("rsa-a"), &claims()); // "openid profile email"
    assert!(verify(&t, &keys, &need(&["openid", "email"]), NOW).is_ok());
    let err = verify(&t, &keys, &need(&["openid", "admin"]), NOW).unwrap_err();
    assert_eq!(
        err,
        VerifyError::InsufficientScope(vec!["openid".into(), "admin".into()])
    );
    assert_eq!(err.kind(), Rejection::InsufficientScope);
    assert_eq!(err.kind().status(), 403);
    assert_eq!(err.to_string(), "required scopes openid, admin not present");
    // Substrings do not count.
    assert!(verify(&t, &keys, &need(&["open"]), NOW).is_err());
    // No scope claim at all.
    let t = token(Alg::RS256, Some("rsa-a"), &without(claims(), "scope"));
    assert!(matches!(
        verify(&t, &keys, &need(&["openid"]), NOW),
        Err(VerifyError::InsufficientScope(_))
    ));
    assert!(verify(&t, &keys, &need(&[]), NOW).is_ok());
    // An array of scopes is understood too.
    let t = token(
        Alg::RS256,
        Some("rsa-a"),
        &with(claims(), "scope", json!(["openid", "admin"])),
    );
    assert!(verify(&t, &keys, &need(&["admin"]), NOW).is_ok());
    // Extra whitespace in the string.
    let t = token(
        Alg::RS256,
        Some("rsa-a"),
        &with(claims(), "scope", json!("  openid\tadmin ")),
    );
    assert!(verify(&t, &keys, &need(&["admin", "openid"]), NOW).is_ok());
}

#[test]
fn scopes_are_checked_before_audience_as_in_apisix() {
    let t = token(Alg::RS256, Some("rsa-a"), &without(claims(), "aud"));
    let p = VerifyPolicy {
        required_scopes: vec!["admin".into()],
        ..audience(true, true, "aud")
    };
    assert!(matches!(
        verify(&t, &provider_keys(), &p, NOW),
        Err(VerifyError::InsufficientScope(_))
    ));
}

#[test]
fn claim_checks_come_after_the_signature() {
    // An expired token from the wrong issuer with a bad signature reports
    // the signature: claims of an unauthenticated payload mean nothing.
    let bad = with(with(claims(), "exp", json!(1)), "iss", json!("x"));
    let header = json!({"alg": "RS256", "kid": "rsa-a"});
    let t = token_with(
        &header,
        bad.to_string().as_bytes(),
        Signer::RsaB,
        Alg::RS256,
    );
    assert_eq!(
        verify(&t, &provider_keys(), &policy(), NOW),
        Err(VerifyError::BadSignature)
    );
}

// ---------------------------------------------------------------------
// Shape and encoding

#[test]
fn segment_counts() {
    let keys = provider_keys();
    let t = token(Alg::RS256, Some("rsa-a"), &claims());
    let parts: Vec<&str> = t.split('.').collect();
    let two = format!("{}.{}", parts[0], parts[1]);
    assert_eq!(
        verify(&two, &keys, &policy(), NOW),
        Err(VerifyError::Malformed)
    );
    let four = format!("{t}.{}", parts[2]);
    assert_eq!(
        verify(&four, &keys, &policy(), NOW),
        Err(VerifyError::Malformed)
    );
    let jwe = "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a2V5.aXY.Y2lwaGVy.dGFn";
    let err = verify(jwe, &keys, &policy(), NOW).unwrap_err();
    assert_eq!(err, VerifyError::Encrypted);
    assert_eq!(err.to_string(), "encrypted tokens not supported");
    for garbage in ["", ".", "..", "....", "abc", "a.b.c.d.e.f"] {
        assert!(
            verify(garbage, &keys, &policy(), NOW).is_err(),
            "{garbage:?}"
        );
    }
    let huge = format!("{}.{}.{}", "a".repeat(MAX_TOKEN_LEN), parts[1], parts[2]);
    assert_eq!(
        verify(&huge, &keys, &policy(), NOW),
        Err(VerifyError::Malformed)
    );
}

#[test]
fn bad_base64_in_each_segment() {
    let keys = provider_keys();
    let t = token(Alg::RS256, Some("rsa-a"), &claims());
    let parts: Vec<&str> = t.split('.').collect();
    let cases = [
        (
            format!("{}!.{}.{}", parts[0], parts[1], parts[2]),
            Segment::Header,
        ),
        (
            format!("{}.{}*.{}", parts[0], parts[1], parts[2]),
            Segment::Payload,
        ),
        (
            format!("{}.{}.{}==", parts[0], parts[1], parts[2]),
            Segment::Signature,
        ),
        // Standard alphabet instead of URL-safe.
        (
            format!("{}.{}.{}", parts[0], parts[1], parts[2].replace('-', "+")),
            Segment::Signature,
        ),
    ];
    for (token, segment) in cases {
        if token == t {
            continue; // the signature happened to have no '-'
        }
        assert_eq!(
            verify(&token, &keys, &policy(), NOW),
            Err(VerifyError::Base64(segment))
        );
    }
    assert_eq!(
        VerifyError::Base64(Segment::Payload).to_string(),
        "token payload is not valid base64url"
    );
    // A padded header: strict.
    let padded = format!("{}=.{}.{}", parts[0], parts[1], parts[2]);
    assert!(matches!(
        verify(&padded, &keys, &policy(), NOW),
        Err(VerifyError::Base64(_))
    ));
}

#[test]
fn non_json_header_or_payload() {
    let keys = provider_keys();
    let payload = b64(claims().to_string());
    let sig = b64([7u8; 256]);
    for header in ["not json", "[1,2]", "\"RS256\"", "", "{\"alg\":\"RS256\""] {
        let t = format!("{}.{payload}.{sig}", b64(header));
        assert_eq!(
            verify(&t, &keys, &policy(), NOW),
            Err(VerifyError::Header),
            "{header:?}"
        );
    }
    let h = b64(r#"{"alg":"RS256","kid":7}"#);
    assert_eq!(
        verify(&format!("{h}.{payload}.{sig}"), &keys, &policy(), NOW),
        Err(VerifyError::Header)
    );
    // A correctly signed payload that is not a JSON object.
    let header = json!({"alg": "RS256", "kid": "rsa-a"});
    for payload in [&b"not json"[..], b"[1,2,3]", b"", b"\xff\xfe"] {
        let t = token_with(&header, payload, Signer::RsaA, Alg::RS256);
        assert_eq!(verify(&t, &keys, &policy(), NOW), Err(VerifyError::Payload));
    }
}

#[test]
fn any_crit_is_refused() {
    let keys = provider_keys();
    for crit in [json!(["exp"]), json!(["b64"]), json!([]), json!("x")] {
        let header = json!({"alg": "RS256", "kid": "rsa-a", "crit": crit, "exp": 1, "b64": false});
        let t = token_with(
            &header,
            claims().to_string().as_bytes(),
            Signer::RsaA,
            Alg::RS256,
        );
        assert_eq!(
            verify(&t, &keys, &policy(), NOW),
            Err(VerifyError::CriticalHeader)
        );
    }
}

// ---------------------------------------------------------------------
// Errors

#[test]
fn error_messages_carry_no_token_content() {
    let secret_claim = "SECRET-CLAIM-VALUE";
    let keys = provider_keys();
    let c = with(
        with(claims(), "iss", json!(secret_claim)),
        "aud",
        json!(secret_claim),
    );
    let kid = "SECRET-KID";
    let tokens = [
        token(Alg::RS256, Some("rsa-a"), &c),
        token(Alg::RS256, Some(kid), &c),
        format!("{}.x.y", b64(json!({ "alg": secret_claim }).to_string())),
    ];
    for t in &tokens {
        let err = verify(t, &keys, &policy(), NOW).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(!shown.contains(t.as_str()));
    }
}

#[test]
fn every_error_has_a_message_and_a_kind() {
    let all = [
        VerifyError::Malformed,
        VerifyError::Encrypted,
        VerifyError::Base64(Segment::Header),
        VerifyError::Base64(Segment::Signature),
        VerifyError::Header,
        VerifyError::CriticalHeader,
        VerifyError::AlgNotAllowed,
        VerifyError::UnknownKeyId,
        VerifyError::AmbiguousKey,
        VerifyError::NoMatchingKey,
        VerifyError::BadSignature,
        VerifyError::Payload,
        VerifyError::TimeClaimType("exp"),
        VerifyError::Expired,
        VerifyError::NotYetValid,
        VerifyError::IssuedInFuture,
        VerifyError::MissingIssuer,
        VerifyError::IssuerMismatch,
        VerifyError::InsufficientScope(vec!["a".into()]),
        VerifyError::AudienceMissing,
        VerifyError::AudienceMismatch,
    ];
    for e in &all {
        let msg = e.to_string();
        assert!(!msg.is_empty());
        // Safe inside a quoted WWW-Authenticate parameter.
        assert!(
            !msg.contains('"') && !msg.contains('\\') && !msg.contains('\n'),
            "{msg}"
        );
        let expected = match e {
            VerifyError::UnknownKeyId => Rejection::UnknownKeyId,
            VerifyError::InsufficientScope(_) => Rejection::InsufficientScope,
            VerifyError::AudienceMissing | VerifyError::AudienceMismatch => {
                Rejection::AudienceMismatch
            }
            _ => Rejection::InvalidToken,
        };
        assert_eq!(e.kind(), expected, "{e:?}");
    }
    assert_eq!(Rejection::InvalidToken.status(), 401);
}

// ---------------------------------------------------------------------
// JWKS parsing

#[test]
fn jwks_skips_unusable_entries() {
    let k = test_keys();
    let mut enc = rsa_jwk(&k.rsa_b, "enc-key");
    enc["use"] = json!("enc");
    enc["alg"] = json!("RSA-OAEP");
    let mut oaep_no_use = rsa_jwk(&k.rsa_b, "oaep");
    oaep_no_use.as_object_mut().unwrap().remove("use");
    oaep_no_use["alg"] = json!("RSA-OAEP");
    let mut ops_encrypt = rsa_jwk(&k.rsa_b, "ops");
    ops_encrypt["key_ops"] = json!(["encrypt", "wrapKey"]);
    let mut ops_verify = rsa_jwk(&k.rsa_b, "ops-verify");
    ops_verify["key_ops"] = json!(["verify"]);
    let mut numeric_kid = rsa_jwk(&k.rsa_b, "x");
    numeric_kid["kid"] = json!(5);
    let mut bad_n = rsa_jwk(&k.rsa_b, "bad-n");
    bad_n["n"] = json!("***");
    let mut ec_alg_on_rsa = rsa_jwk(&k.rsa_b, "ec-alg");
    ec_alg_on_rsa["alg"] = json!("ES256");
    let mut rs_alg_on_ec = p256_jwk("rs-alg");
    rs_alg_on_ec["alg"] = json!("RS256");
    let mut off_curve = p256_jwk("off-curve");
    off_curve["y"] = off_curve["x"].clone();
    let mut short_x = p256_jwk("short-x");
    short_x["x"] = json!(b64([1u8; 31]));
    let mut p384_as_p256 = p384_jwk("p384-as-p256");
    p384_as_p256["crv"] = json!("P-256");
    let small_rsa = json!({
        "kty": "RSA", "kid": "rsa-1024",
        "n": b64({ let mut n = vec![0xc5u8; 128]; n[127] = 0x01; n }),
        "e": "AQAB"
    });
    let body = json!({ "keys": [
        rsa_jwk(&k.rsa_a, "sig-key"),
        enc,
        oaep_no_use,
        ops_encrypt,
        ops_verify,
        numeric_kid,
        bad_n,
        ec_alg_on_rsa,
        rs_alg_on_ec,
        off_curve,
        short_x,
        p384_as_p256,
        small_rsa,
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
        {"kty": "RSA", "kid": "no-e", "n": b64(k.rsa_a.n_bytes())},
        "not an object",
        42,
        p256_jwk("ec-256"),
        p384_jwk("ec-384"),
    ]});
    let keys = Jwks::parse(body.to_string().as_bytes()).unwrap();
    let kids: Vec<Option<&str>> = keys.keys().iter().map(Jwk::kid).collect();
    assert_eq!(
        kids,
        [
            Some("sig-key"),
            Some("ops-verify"),
            Some("ec-256"),
            Some("ec-384")
        ]
    );
    assert_eq!(keys.len(), 4);
    assert!(!keys.is_empty());
    assert_eq!(keys.skipped(), 17);
    assert!(keys.contains_kid("sig-key"));
    assert!(!keys.contains_kid("enc-key"));
    assert_eq!(keys.keys()[2].kind(), KeyKind::EcP256);
    // The enc key is not a candidate: a token naming it finds no key.
    let t = token(Alg::RS256, Some("enc-key"), &claims());
    assert_eq!(
        verify(&t, &keys, &policy(), NOW),
        Err(VerifyError::UnknownKeyId)
    );
}

#[test]
fn keycloak_like_jwks_with_enc_key() {
    let k = test_keys();
    let mut sig = rsa_jwk(&k.rsa_a, "kc-sig");
    sig["alg"] = json!("RS256");
    sig["x5c"] = json!(["MIIC..."]);
    sig["x5t"] = json!("abc");
    let mut enc = rsa_jwk(&k.rsa_b, "kc-enc");
    enc["use"] = json!("enc");
    enc["alg"] = json!("RSA-OAEP");
    let keys = jwks(vec![enc, sig]);
    assert_eq!(keys.len(), 1);
    assert_eq!(keys.skipped(), 1);
    // Without kid, the one signing key is used (the enc key is gone).
    let t = token(Alg::RS256, None, &claims());
    assert!(verify(&t, &keys, &policy(), NOW).is_ok());
}

#[test]
fn jwk_members_tolerate_padding_and_leading_zeros() {
    let k = test_keys();
    let mut n = vec![0u8];
    n.extend_from_slice(&k.rsa_a.n_bytes());
    let jwk = json!({
        "kty": "RSA", "kid": "padded",
        "n": URL_SAFE_NO_PAD.encode(&n) + "=",
        "e": "AQAB",
    });
    let keys = jwks(vec![jwk]);
    let t = token(Alg::RS256, Some("padded"), &claims());
    assert!(verify(&t, &keys, &policy(), NOW).is_ok());
}

#[test]
fn garbage_jwks_are_errors() {
    assert_eq!(Jwks::parse(b"").unwrap_err(), JwksError::NotJson);
    assert_eq!(Jwks::parse(b"<html>").unwrap_err(), JwksError::NotJson);
    assert_eq!(Jwks::parse(b"{}").unwrap_err(), JwksError::NoKeysArray);
    assert_eq!(Jwks::parse(b"[]").unwrap_err(), JwksError::NoKeysArray);
    assert_eq!(
        Jwks::parse(br#"{"keys":{"kty":"RSA"}}"#).unwrap_err(),
        JwksError::NoKeysArray
    );
    assert_eq!(
        Jwks::parse(br#"{"keys":[]}"#).unwrap_err(),
        JwksError::NoUsableKey { skipped: 0 }
    );
    assert_eq!(
        Jwks::parse(br#"{"keys":[{"kty":"oct","k":"AA"},{"kty":"RSA"},1]}"#).unwrap_err(),
        JwksError::NoUsableKey { skipped: 3 }
    );
    let e = JwksError::NoUsableKey { skipped: 3 };
    assert!(e.to_string().contains("3 ignored"));
}

// ---------------------------------------------------------------------
// PEM

#[test]
fn pem_spki_rsa() {
    let pem_text = rsa_spki_pem(&test_keys().rsa_a);
    let keys = Jwks::from_pem(&pem_text).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys.keys()[0].kid(), None);
    assert_eq!(keys.keys()[0].kind(), KeyKind::Rsa);
    let t = token(Alg::RS256, None, &claims());
    assert!(verify(&t, &keys, &policy(), NOW).is_ok());
    // Windows line ends, indentation, text around, all on one line.
    let crlf = format!("key:\r\n{}\r\ntrailer", pem_text.replace('\n', "\r\n  "));
    assert!(Jwks::from_pem(&crlf).is_ok());
    let one_line = pem_text.replace('\n', " ");
    assert!(Jwks::from_pem(&one_line).is_ok());
    // A different key does not verify the token.
    let other = Jwks::from_pem(&rsa_spki_pem(&test_keys().rsa_b)).unwrap();
    assert_eq!(
        verify(&t, &other, &policy(), NOW),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn pem_pkcs1_rsa() {
    let public = rsa::PublicKey::from(&test_keys().rsa_a);
    let pem_text = pem("RSA PUBLIC KEY", public.to_pkcs1_der().unwrap().as_bytes());
    let keys = Jwks::from_pem(&pem_text).unwrap();
    let t = token(Alg::PS256, Some("any"), &claims());
    assert!(verify(&t, &keys, &policy(), NOW).is_ok());
    // PKCS#1 content under a SPKI label, and the reverse, are refused.
    let swapped = pem("PUBLIC KEY", public.to_pkcs1_der().unwrap().as_bytes());
    assert_eq!(
        Jwks::from_pem(&swapped).unwrap_err(),
        JwksError::UnsupportedKey
    );
    let swapped = pem(
        "RSA PUBLIC KEY",
        public.to_public_key_der().unwrap().as_bytes(),
    );
    assert_eq!(
        Jwks::from_pem(&swapped).unwrap_err(),
        JwksError::UnsupportedKey
    );
}

#[test]
fn pem_spki_ec() {
    let k = test_keys();
    let der = k.p256.verifying_key().to_public_key_der().unwrap();
    let keys = Jwks::from_pem(&pem("PUBLIC KEY", der.as_bytes())).unwrap();
    assert_eq!(keys.keys()[0].kind(), KeyKind::EcP256);
    assert!(verify(&token(Alg::ES256, None, &claims()), &keys, &policy(), NOW).is_ok());
    assert_eq!(
        verify(&token(Alg::RS256, None, &claims()), &keys, &policy(), NOW),
        Err(VerifyError::NoMatchingKey)
    );
    let der = k.p384.verifying_key().to_public_key_der().unwrap();
    let keys = Jwks::from_pem(&pem("PUBLIC KEY", der.as_bytes())).unwrap();
    assert_eq!(keys.keys()[0].kind(), KeyKind::EcP384);
    assert!(verify(&token(Alg::ES384, None, &claims()), &keys, &policy(), NOW).is_ok());
}

#[test]
fn pem_errors() {
    assert_eq!(Jwks::from_pem("").unwrap_err(), JwksError::PemMissing);
    assert_eq!(
        Jwks::from_pem("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA").unwrap_err(),
        JwksError::PemMissing
    );
    assert_eq!(
        Jwks::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n").unwrap_err(),
        JwksError::PemMissing
    );
    assert_eq!(
        Jwks::from_pem(&pem("PUBLIC KEY", b"not DER at all")).unwrap_err(),
        JwksError::UnsupportedKey
    );
    assert_eq!(
        Jwks::from_pem("-----BEGIN PUBLIC KEY-----\n%%%%\n-----END PUBLIC KEY-----").unwrap_err(),
        JwksError::PemBase64
    );
    assert_eq!(
        Jwks::from_pem(&pem("CERTIFICATE", b"x")).unwrap_err(),
        JwksError::PemLabel("CERTIFICATE".into())
    );
    // A private key pasted by mistake: refused, and its body is not echoed.
    let private = pem("PRIVATE KEY", b"very-secret-private-key-material");
    let err = Jwks::from_pem(&private).unwrap_err();
    assert_eq!(err, JwksError::PemLabel("PRIVATE KEY".into()));
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(&STANDARD.encode(b"very-secret-private-key-material")[..16]));
    // Mismatched END label.
    assert_eq!(
        Jwks::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----")
            .unwrap_err(),
        JwksError::PemMissing
    );
}

#[test]
fn pem_rsa_key_below_2048_bits_is_refused() {
    // A 1024-bit odd modulus in PKCS#1 DER. RSAPublicKey ::= SEQUENCE
    // { modulus INTEGER, publicExponent INTEGER }.
    let mut modulus = vec![0x00, 0xc5];
    modulus.extend(std::iter::repeat_n(0xa7, 126));
    modulus.push(0x01);
    let mut der = vec![0x30, 0x81, 0x89, 0x02, 0x81, 0x81];
    der.extend_from_slice(&modulus);
    der.extend_from_slice(&[0x02, 0x03, 0x01, 0x00, 0x01]);
    assert_eq!(der.len(), 0x89 + 3);
    let err = Jwks::from_pem(&pem("RSA PUBLIC KEY", &der)).unwrap_err();
    assert_eq!(err, JwksError::RsaKeySize { bits: 1024 });
}

// ---------------------------------------------------------------------
// Garbage never panics

mod garbage {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn verify_never_panics_on_strings(s in ".{0,300}") {
            let _ = verify(&s, &provider_keys(), &policy(), NOW);
        }

        #[test]
        fn verify_never_panics_on_dotted_base64(
            parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..7)
        ) {
            let t: Vec<String> = parts.iter().map(b64).collect();
            let _ = verify(&t.join("."), &provider_keys(), &policy(), NOW);
        }

        #[test]
        fn verify_never_panics_on_json_shaped_headers(
            alg in prop_oneof![Just("RS256".to_string()), Just("ES256".to_string()), Just("ES384".to_string()), Just("PS512".to_string()), Just("none".to_string()), ".{0,8}"],
            kid in proptest::option::of(prop_oneof![Just("rsa-a".to_string()), Just("ec-256".to_string()), ".{0,8}"]),
            payload in ".{0,64}",
            sig in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut header = json!({ "alg": alg });
            if let Some(kid) = kid {
                header["kid"] = json!(kid);
            }
            let t = format!("{}.{}.{}", b64(header.to_string()), b64(payload), b64(sig));
            prop_assert!(verify(&t, &provider_keys(), &policy(), NOW).is_err());
        }

        #[test]
        fn jwks_parse_never_panics(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Jwks::parse(&body);
        }

        #[test]
        fn jwks_parse_never_panics_on_key_shaped_json(
            kty in prop_oneof![Just("RSA".to_string()), Just("EC".to_string()), Just("oct".to_string()), ".{0,4}"],
            crv in prop_oneof![Just("P-256".to_string()), Just("P-384".to_string()), ".{0,4}"],
            n in proptest::collection::vec(any::<u8>(), 0..300),
            e in proptest::collection::vec(any::<u8>(), 0..12),
            x in proptest::collection::vec(any::<u8>(), 0..50),
            y in proptest::collection::vec(any::<u8>(), 0..50),
        ) {
            let body = json!({"keys": [{
                "kty": kty, "crv": crv, "n": b64(n), "e": b64(e), "x": b64(x), "y": b64(y)
            }]});
            let _ = Jwks::parse(body.to_string().as_bytes());
        }

        #[test]
        fn from_pem_never_panics(s in ".{0,200}", der in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Jwks::from_pem(&s);
            let _ = Jwks::from_pem(&pem("PUBLIC KEY", &der));
            let _ = Jwks::from_pem(&pem("RSA PUBLIC KEY", &der));
        }
    }
}

#[test]
fn claim_checks_work_on_introspection_answers() {
    let answer = json!({"active": true, "scope": "openid admin", "aud": CLIENT});
    let claims = answer.as_object().unwrap();
    assert_eq!(check_scopes(claims, &["admin".to_string()]), Ok(()));
    assert_eq!(
        check_scopes(claims, &["root".to_string()]),
        Err(VerifyError::InsufficientScope(vec!["root".to_string()]))
    );
    let policy = AudiencePolicy {
        match_with_client_id: true,
        client_id: CLIENT.to_string(),
        ..AudiencePolicy::default()
    };
    assert_eq!(check_audience(claims, &policy), Ok(()));
    let other = AudiencePolicy {
        client_id: "other".to_string(),
        ..policy.clone()
    };
    assert_eq!(
        check_audience(claims, &other),
        Err(VerifyError::AudienceMismatch)
    );
    let empty = serde_json::Map::new();
    assert_eq!(
        check_audience(&empty, &policy),
        Err(VerifyError::AudienceMissing)
    );
}
