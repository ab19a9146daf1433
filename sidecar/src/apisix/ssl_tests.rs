use rcgen::{
    CertificateParams, KeyPair, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
    PKCS_ED25519, PKCS_RSA_SHA256,
};
use serde_json::json;

use super::*;

/// A self-signed certificate for `names` and its key (PEM), valid from a
/// day ago until `days` from now (negative: already expired).
fn cert(alg: &'static SignatureAlgorithm, names: &[&str], days: i64) -> (String, String) {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(2);
    p.not_after = now + time::Duration::days(days);
    let c = p.self_signed(&key).unwrap();
    (c.pem(), key.serialize_pem())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn an_ecdsa_and_an_rsa_pair_for_exact_and_wildcard_snis() {
    let (c, k) = cert(&PKCS_ECDSA_P256_SHA256, &["app.test"], 30);
    let (rc, rk) = cert(&PKCS_RSA_SHA256, &["app.test"], 30);
    let v = json!({"id": "1", "cert": c, "key": k, "certs": [rc], "keys": [rk],
                   "snis": ["App.Test", "*.other.test", "app.test"],
                   "labels": {"env": "prod"}, "ssl_protocols": ["TLSv1.3", "TLSv1.2"]});
    let s = SslSpec::parse("1", &v).unwrap();
    assert!(s.enabled);
    assert_eq!(s.snis, ["*.other.test", "app.test"]);
    assert_eq!(s.pairs.len(), 2);
    assert_eq!(s.pairs[0].key_type, KeyType::Ecdsa);
    assert_eq!(s.pairs[1].key_type, KeyType::Rsa);
    assert_eq!(s.protocols, Some((TlsVersion::V1_2, TlsVersion::V1_3)));
    s.check_new(now(), None).unwrap();
    // The key never shows in Debug.
    assert!(!format!("{s:?}").contains("PRIVATE"));
    // `sni` (one name) works too; P-384 is loaded by Envoy.
    let (c, k) = cert(&PKCS_ECDSA_P384_SHA384, &["a.test"], 30);
    let s = SslSpec::parse(
        "2",
        &json!({"cert": c, "key": k, "sni": "a.test", "status": 0}),
    )
    .unwrap();
    assert!(!s.enabled);
    assert_eq!(s.snis, ["a.test"]);
}

#[test]
fn a_key_of_another_certificate_is_refused_by_name() {
    let (c, _) = cert(&PKCS_ECDSA_P256_SHA256, &["app.test"], 30);
    let (_, other) = cert(&PKCS_ECDSA_P256_SHA256, &["app.test"], 30);
    let err =
        SslSpec::parse("1", &json!({"cert": c, "key": other, "snis": ["app.test"]})).unwrap_err();
    assert!(
        err.contains("property \"key\" does not match the certificate in \"cert\""),
        "{err}"
    );
    // In an extra pair: named by index.
    let (c0, k0) = cert(&PKCS_ECDSA_P256_SHA256, &["app.test"], 30);
    let (rc, _) = cert(&PKCS_RSA_SHA256, &["app.test"], 30);
    let (_, rk_other) = cert(&PKCS_RSA_SHA256, &["app.test"], 30);
    let err = SslSpec::parse(
        "1",
        &json!({"cert": c0, "key": k0, "certs": [rc], "keys": [rk_other], "snis": ["app.test"]}),
    )
    .unwrap_err();
    assert!(
        err.contains("\"keys[0]\" does not match the certificate in \"certs[0]\""),
        "{err}"
    );
}

#[test]
fn bad_pem_is_refused_and_the_key_text_never_echoed() {
    let (_, k) = cert(&PKCS_ECDSA_P256_SHA256, &["app.test"], 30);
    let err = SslSpec::parse(
        "1",
        &json!({"cert": "not a cert", "key": k, "snis": ["a.test"]}),
    )
    .unwrap_err();
    assert!(
        err.contains("property \"cert\" holds no PEM certificate"),
        "{err}"
    );
    let (c, _) = cert(&PKCS_ECDSA_P256_SHA256, &["app.test"], 30);
    let broken_key =
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n";
    let err = SslSpec::parse(
        "1",
        &json!({"cert": c, "key": broken_key, "snis": ["a.test"]}),
    )
    .unwrap_err();
    assert!(err.contains("property \"key\""), "{err}");
    assert!(!err.contains("c2VjcmV0"), "{err}");
    // A certificate where the key should be.
    let err = SslSpec::parse("1", &json!({"cert": c, "key": c, "snis": ["a.test"]})).unwrap_err();
    assert!(
        err.contains("property \"key\" is not a PEM private key"),
        "{err}"
    );
    // A broken base64 body inside the markers.
    let garbled = c.replace('M', "!");
    let err =
        SslSpec::parse("1", &json!({"cert": garbled, "key": k, "snis": ["a.test"]})).unwrap_err();
    assert!(err.contains("property \"cert\""), "{err}");
}

#[test]
fn expired_certificates_are_refused_when_written_only() {
    let (c, k) = cert(&PKCS_ECDSA_P256_SHA256, &["app.test"], -1);
    let s = SslSpec::parse("1", &json!({"cert": c, "key": k, "snis": ["app.test"]})).unwrap();
    let err = s.check_new(now(), None).unwrap_err();
    assert!(err.contains("property \"cert\" has expired"), "{err}");
    // Valid until then.
    s.check_new(s.pairs[0].not_after - 10, None).unwrap();
    // Already stored: not checked again (a PATCH of its labels).
    s.check_new(now(), Some(&s)).unwrap();
}

#[test]
fn what_envoy_cannot_serve_is_refused() {
    let (c, k) = cert(&PKCS_ED25519, &["app.test"], 30);
    let err = SslSpec::parse("1", &json!({"cert": c, "key": k, "snis": ["a.test"]})).unwrap_err();
    assert!(err.contains("key type Envoy does not serve"), "{err}");
    // Two RSA pairs.
    let (c1, k1) = cert(&PKCS_RSA_SHA256, &["app.test"], 30);
    let (c2, k2) = cert(&PKCS_RSA_SHA256, &["app.test"], 30);
    let err = SslSpec::parse(
        "1",
        &json!({"cert": c1, "key": k1, "certs": [c2], "keys": [k2], "snis": ["a.test"]}),
    )
    .unwrap_err();
    assert!(err.contains("second RSA certificate"), "{err}");
}

#[test]
fn attributes_apisix_has_and_this_gateway_does_not_are_refused_by_name() {
    let (c, k) = cert(&PKCS_ECDSA_P256_SHA256, &["app.test"], 30);
    let base = json!({"cert": c, "key": k, "snis": ["app.test"]});
    let cases = [
        (
            json!({"client": {"ca": "x"}}),
            "property \"client\" is not supported",
        ),
        (
            json!({"type": "client"}),
            "property \"type\" \"client\" is not supported",
        ),
        (json!({"foo": 1}), "property \"foo\" is not allowed"),
        (
            json!({"sni": "a.test"}),
            "\"sni\" and \"snis\" are both set",
        ),
        (
            json!({"snis": []}),
            "property \"snis\" must be a non-empty array",
        ),
        (
            json!({"snis": ["a_b.test"]}),
            "property \"snis[0]\" \"a_b.test\" is not a host name",
        ),
        (
            json!({"snis": ["*"]}),
            "property \"snis[0]\" \"*\" is not a host name",
        ),
        (json!({"snis": ["10.0.0.1"]}), "is not a host name"),
        (
            json!({"ssl_protocols": ["TLSv1.1", "TLSv1.3"]}),
            "contiguous range",
        ),
        (
            json!({"ssl_protocols": ["SSLv3"]}),
            "property \"ssl_protocols\" has \"SSLv3\"",
        ),
        (json!({"status": 2}), "property \"status\" must be 0 or 1"),
        (
            json!({"certs": [c.clone()]}),
            "mismatched number of certs and keys",
        ),
        (json!({"id": "2"}), "property \"id\" does not match"),
    ];
    for (patch, want) in cases {
        let mut v = base.clone();
        for (key, val) in patch.as_object().unwrap() {
            v[key] = val.clone();
        }
        let err = SslSpec::parse("1", &v).unwrap_err();
        assert!(err.contains(want), "{patch}: {err}");
    }
    let mut v = base.clone();
    v.as_object_mut().unwrap().remove("snis");
    assert!(SslSpec::parse("1", &v)
        .unwrap_err()
        .contains("property \"snis\" is required"));
}

#[test]
fn keys_are_redacted_and_the_marker_keeps_the_stored_key() {
    let (c, k) = cert(&PKCS_ECDSA_P256_SHA256, &["app.test"], 30);
    let (rc, rk) = cert(&PKCS_RSA_SHA256, &["app.test"], 30);
    let stored = json!({"cert": c, "key": k, "certs": [rc], "keys": [rk], "snis": ["app.test"]});
    let mut shown = stored.clone();
    redact(&mut shown);
    assert_eq!(shown["key"], REDACTED);
    assert_eq!(shown["keys"][0], REDACTED);
    assert_eq!(shown["cert"], stored["cert"]);
    // Written back as shown: the stored keys are kept.
    let mut back = shown.as_object().unwrap().clone();
    fill(&mut back, Some(&stored));
    assert_eq!(Value::Object(back.clone()), stored);
    SslSpec::parse("1", &Value::Object(back)).unwrap();
    // Nothing stored: the marker is refused.
    let mut fresh = shown.as_object().unwrap().clone();
    fill(&mut fresh, None);
    let err = SslSpec::parse("1", &Value::Object(fresh)).unwrap_err();
    assert!(
        err.contains("property \"key\" is the redaction marker"),
        "{err}"
    );
}
