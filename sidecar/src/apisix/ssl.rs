//! APISIX `ssl` objects (`/apisix/admin/ssls/{id}`): server certificates
//! for the HTTPS listener, chosen by SNI.
//!
//! What is read, as APISIX 3.x's schema (`schema_def.lua` `ssl`):
//! `cert` + `key` (PEM; `cert` may carry the chain after the leaf), `snis`
//! (or the older single `sni`; exact names or `*.` wildcards), `certs` +
//! `keys` (extra pairs, e.g. an ECDSA one next to an RSA one), `status`,
//! `ssl_protocols`, `labels`, `desc`, `type` (`server`, the default).
//! Refused by name: `type: client` (certificates for upstreams) and
//! `client` (mTLS). Nothing is accepted and ignored.
//!
//! Stricter than APISIX, which only parses the PEM at write time: a key
//! must match its certificate, and at most one pair per key type (Envoy's
//! rule: one RSA and one ECDSA), RSA of at least 2048 bits and ECDSA on
//! P-256, P-384 or P-521 (what Envoy loads); Envoy would otherwise refuse
//! the whole HTTPS configuration. A new or changed certificate must not
//! have expired ([`SslSpec::check_new`], at write time only: a stored one
//! that expires later stays served, as in APISIX). A certificate whose
//! names do not cover the `snis` is accepted, as APISIX accepts it (the
//! client then refuses it).
//!
//! The private keys are secrets: responses show them as [`REDACTED`], and a
//! write holding exactly that marker keeps the stored key ([`fill`]).

use rustls::crypto::aws_lc_rs::sign::any_supported_type;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Map, Value};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::apisix::route::{check_id, Errors};
use crate::apisix::secrets::REDACTED;

/// Attributes of an ssl object this gateway reads.
const KNOWN: &[&str] = &[
    "id",
    "desc",
    "labels",
    "create_time",
    "update_time",
    "type",
    "cert",
    "key",
    "sni",
    "snis",
    "certs",
    "keys",
    "status",
    "ssl_protocols",
];

/// APISIX ssl attributes with no mapping here.
const UNSUPPORTED: &[&str] = &["client"];

/// APISIX's length limits of `cert` and `key` (`certificate_scheme`,
/// `private_key_schema`).
const MAX_PEM: usize = 64 * 1024;

/// A TLS protocol version of `ssl_protocols`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    V1_1,
    V1_2,
    V1_3,
}

/// The key type of a certificate (Envoy serves at most one of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa,
    Ecdsa,
}

/// One certificate chain and its private key (PEM text as stored).
#[derive(Clone, PartialEq, Eq)]
pub struct CertKey {
    pub cert: String,
    pub key: String,
    pub key_type: KeyType,
    /// The leaf's `notAfter` (unix seconds).
    pub not_after: i64,
}

impl std::fmt::Debug for CertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertKey")
            .field("key_type", &self.key_type)
            .field("not_after", &self.not_after)
            .field("key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// A validated ssl object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SslSpec {
    pub id: String,
    /// `status` is not 0.
    pub enabled: bool,
    /// Lower case, sorted, without duplicates.
    pub snis: Vec<String>,
    /// `cert`/`key` first, then `certs`/`keys` in order.
    pub pairs: Vec<CertKey>,
    /// The lowest and highest version of `ssl_protocols`, if set.
    pub protocols: Option<(TlsVersion, TlsVersion)>,
}

impl SslSpec {
    /// Validates the ssl object `id`. The error lists every problem, each
    /// naming its attribute (`invalid configuration: property "key" ...`).
    pub fn parse(id: &str, v: &Value) -> Result<SslSpec, String> {
        let Some(obj) = v.as_object() else {
            return Err("invalid configuration: the ssl must be a JSON object".into());
        };
        let mut e = Errors::new();
        check_id(obj, id, &mut e);
        for k in obj.keys() {
            if UNSUPPORTED.contains(&k.as_str()) {
                e.push(
                    k,
                    "is not supported by this gateway (no client certificate verification, mTLS)",
                );
            } else if !KNOWN.contains(&k.as_str()) {
                e.push(k, "is not allowed (additional properties forbidden)");
            }
        }
        match obj.get("type").map(Value::as_str) {
            None | Some(Some("server")) => {}
            Some(Some("client")) => e.push(
                "type",
                "\"client\" is not supported by this gateway (no client certificates to upstreams)",
            ),
            Some(_) => e.push("type", "must be \"server\""),
        }
        if obj
            .get("desc")
            .is_some_and(|d| d.as_str().is_none_or(|s| s.len() > 256))
        {
            e.push("desc", "must be a string of at most 256 bytes");
        }
        if let Some(labels) = obj.get("labels") {
            if !labels
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string))
            {
                e.push("labels", "must be an object of strings");
            }
        }
        for t in ["create_time", "update_time"] {
            if obj.get(t).is_some_and(|x| x.as_u64().is_none()) {
                e.push(t, "must be a unix time in seconds");
            }
        }
        let enabled = match obj.get("status") {
            None => true,
            Some(s) => match s.as_i64() {
                Some(0) => false,
                Some(1) => true,
                _ => {
                    e.push("status", "must be 0 or 1");
                    true
                }
            },
        };
        let snis = parse_snis(obj, &mut e);
        let protocols = parse_protocols(obj.get("ssl_protocols"), &mut e);

        let mut pairs = Vec::new();
        match (obj.get("cert"), obj.get("key")) {
            (Some(c), Some(k)) => {
                if let Some(p) = parse_pair(c, k, "cert", "key", &mut e) {
                    pairs.push(p);
                }
            }
            (None, _) => e.push("cert", "is required"),
            (_, None) => e.push("key", "is required"),
        }
        let certs = string_array(obj.get("certs"), "certs", &mut e);
        let keys = string_array(obj.get("keys"), "keys", &mut e);
        if certs.len() != keys.len() {
            e.push(
                "certs",
                format!(
                    "has {} certificates but \"keys\" has {} keys (mismatched number of certs and keys)",
                    certs.len(),
                    keys.len()
                ),
            );
        } else {
            for (i, (c, k)) in certs.iter().zip(&keys).enumerate() {
                let (cf, kf) = (format!("certs[{i}]"), format!("keys[{i}]"));
                if let Some(p) = parse_pair(c, k, &cf, &kf, &mut e) {
                    pairs.push(p);
                }
            }
        }
        for (i, p) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|q| q.key_type == p.key_type) {
                let kind = match p.key_type {
                    KeyType::Rsa => "RSA",
                    KeyType::Ecdsa => "ECDSA",
                };
                e.push(
                    "certs",
                    format!(
                        "holds a second {kind} certificate: at most one RSA and one ECDSA pair"
                    ),
                );
                break;
            }
        }
        if e.is_empty() {
            Ok(SslSpec {
                id: id.to_string(),
                enabled,
                snis,
                pairs,
                protocols,
            })
        } else {
            Err(e.message())
        }
    }

    /// The check of a certificate being written: none has expired at
    /// `now` (unix seconds), except one that `stored` (what the same ssl
    /// holds now) already has: it is not checked again.
    pub fn check_new(&self, now: i64, stored: Option<&SslSpec>) -> Result<(), String> {
        let mut e = Errors::new();
        for (i, p) in self.pairs.iter().enumerate() {
            let kept = stored.is_some_and(|s| s.pairs.iter().any(|q| q.cert == p.cert));
            if p.not_after < now && !kept {
                let field = if i == 0 {
                    "cert".to_string()
                } else {
                    format!("certs[{}]", i - 1)
                };
                e.push(
                    &field,
                    format!("has expired (notAfter is unix time {})", p.not_after),
                );
            }
        }
        if e.is_empty() {
            Ok(())
        } else {
            Err(e.message())
        }
    }

    /// The private keys (to mask in text quoting the configuration).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.pairs.iter().map(|p| p.key.as_str())
    }
}

fn parse_snis(obj: &Map<String, Value>, e: &mut Errors) -> Vec<String> {
    let list: Vec<(String, &Value)> = match (obj.get("sni"), obj.get("snis")) {
        (Some(_), Some(_)) => {
            e.push("sni", "and \"snis\" are both set: set one of them");
            return Vec::new();
        }
        (None, None) => {
            e.push("snis", "is required (or \"sni\")");
            return Vec::new();
        }
        (Some(s), None) => vec![("sni".to_string(), s)],
        (None, Some(Value::Array(a))) if !a.is_empty() => a
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("snis[{i}]"), v))
            .collect(),
        (None, Some(_)) => {
            e.push("snis", "must be a non-empty array of host names");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (field, v) in list {
        match v.as_str() {
            Some(s) if valid_sni(s) => out.push(s.to_ascii_lowercase()),
            Some(s) => e.push(
                &field,
                format!(
                    "{s:?} is not a host name or a \"*.\" wildcard of one (an SNI carries names only)"
                ),
            ),
            None => e.push(&field, "must be a string"),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// A DNS name, or `*.` and a DNS name (Envoy matches a wildcard at any
/// depth below it, as APISIX does). Not an IP address: clients send none.
fn valid_sni(s: &str) -> bool {
    let name = s.strip_prefix("*.").unwrap_or(s);
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn parse_protocols(v: Option<&Value>, e: &mut Errors) -> Option<(TlsVersion, TlsVersion)> {
    let v = v?;
    let Some(list) = v.as_array().filter(|a| !a.is_empty() && a.len() <= 3) else {
        e.push("ssl_protocols", "must be an array of 1 to 3 protocol names");
        return None;
    };
    let mut versions = Vec::new();
    for item in list {
        match item.as_str() {
            Some("TLSv1.1") => versions.push(TlsVersion::V1_1),
            Some("TLSv1.2") => versions.push(TlsVersion::V1_2),
            Some("TLSv1.3") => versions.push(TlsVersion::V1_3),
            _ => {
                e.push(
                    "ssl_protocols",
                    format!("has {item}: one of \"TLSv1.1\", \"TLSv1.2\", \"TLSv1.3\""),
                );
                return None;
            }
        }
    }
    versions.sort();
    let len = versions.len();
    versions.dedup();
    if versions.len() != len {
        e.push("ssl_protocols", "has duplicates");
        return None;
    }
    let (lo, hi) = (versions[0], versions[versions.len() - 1]);
    // Envoy takes a range: a gap (1.1 and 1.3 without 1.2) has no mapping.
    if (hi as usize) - (lo as usize) + 1 != versions.len() {
        e.push(
            "ssl_protocols",
            "must be a contiguous range of versions (Envoy sets a minimum and a maximum)",
        );
        return None;
    }
    Some((lo, hi))
}

fn string_array(v: Option<&Value>, field: &str, e: &mut Errors) -> Vec<Value> {
    match v {
        None => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            e.push(field, "must be an array of PEM strings");
            Vec::new()
        }
    }
}

/// Parses one certificate and key (fields named `cf`, `kf` in errors).
fn parse_pair(cert: &Value, key: &Value, cf: &str, kf: &str, e: &mut Errors) -> Option<CertKey> {
    let (Some(cert), Some(key)) = (cert.as_str(), key.as_str()) else {
        if !cert.is_string() {
            e.push(cf, "must be a PEM string");
        }
        if !key.is_string() {
            e.push(kf, "must be a PEM string");
        }
        return None;
    };
    if cert.len() > MAX_PEM {
        e.push(cf, format!("is longer than {MAX_PEM} bytes"));
        return None;
    }
    if key.len() > MAX_PEM {
        e.push(kf, format!("is longer than {MAX_PEM} bytes"));
        return None;
    }
    if key == REDACTED {
        e.push(
            kf,
            format!("is the redaction marker {REDACTED:?}, but there is no stored key to keep: send the key itself"),
        );
        return None;
    }
    let mut chain = Vec::new();
    for item in CertificateDer::pem_slice_iter(cert.as_bytes()) {
        match item {
            Ok(der) => chain.push(der),
            Err(err) => {
                e.push(cf, format!("is not a PEM certificate: {err}"));
                return None;
            }
        }
    }
    let Some(leaf) = chain.first() else {
        e.push(
            cf,
            "holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")",
        );
        return None;
    };
    let (key_type, not_after) = match X509Certificate::from_der(leaf) {
        Ok((_, x)) => {
            let spki = x.public_key();
            let key_type = if spki.algorithm.algorithm == OID_PKCS1_RSAENCRYPTION {
                let bits = spki.parsed().map(|k| k.key_size()).unwrap_or(0);
                if bits < 2048 {
                    e.push(
                        cf,
                        format!("has a {bits}-bit RSA key: at least 2048 bits (what Envoy loads)"),
                    );
                    return None;
                }
                KeyType::Rsa
            } else if spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok());
                if !curve.is_some_and(|c| {
                    c == OID_EC_P256 || c == OID_NIST_EC_P384 || c == OID_NIST_EC_P521
                }) {
                    e.push(
                        cf,
                        "has an ECDSA key on a curve Envoy does not load (P-256, P-384, P-521)",
                    );
                    return None;
                }
                KeyType::Ecdsa
            } else {
                e.push(cf, "has a key type Envoy does not serve (RSA or ECDSA)");
                return None;
            };
            (key_type, x.validity().not_after.timestamp())
        }
        Err(err) => {
            e.push(cf, format!("is not an X.509 certificate: {err}"));
            return None;
        }
    };
    for (i, der) in chain.iter().enumerate().skip(1) {
        if let Err(err) = X509Certificate::from_der(der) {
            e.push(cf, format!("chain certificate {i} is not X.509: {err}"));
            return None;
        }
    }
    let der_key = match PrivateKeyDer::from_pem_slice(key.as_bytes()) {
        Ok(k) => k,
        Err(_) => {
            // The parser's message may quote the key: not repeated.
            e.push(
                kf,
                "is not a PEM private key (PKCS#8 \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\"; not encrypted)",
            );
            return None;
        }
    };
    let signing = match any_supported_type(&der_key) {
        Ok(k) => k,
        Err(_) => {
            e.push(
                kf,
                "is a private key of a type or size that cannot be loaded",
            );
            return None;
        }
    };
    if CertifiedKey::new(chain, signing).keys_match().is_err() {
        e.push(kf, format!("does not match the certificate in \"{cf}\""));
        return None;
    }
    Some(CertKey {
        cert: cert.to_string(),
        key: key.to_string(),
        key_type,
        not_after,
    })
}

/// An ssl object as responses show it: the private keys redacted.
pub fn redact(v: &mut Value) {
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    if let Some(k) = obj.get_mut("key").filter(|k| k.is_string()) {
        *k = Value::String(REDACTED.into());
    }
    if let Some(Value::Array(keys)) = obj.get_mut("keys") {
        for k in keys.iter_mut().filter(|k| k.is_string()) {
            *k = Value::String(REDACTED.into());
        }
    }
}

/// Prepares an ssl object about to be written: a `key` (or `keys[i]`)
/// that is exactly [`REDACTED`] becomes the stored one of the same ssl
/// (`stored`), so an object read with `GET` can be written back. Without a
/// stored key to keep, the marker stays and [`SslSpec::parse`] refuses it.
pub fn fill(obj: &mut Map<String, Value>, stored: Option<&Value>) {
    if let Some(k) = obj.get_mut("key") {
        if k.as_str() == Some(REDACTED) {
            if let Some(s) = stored.and_then(|s| s.get("key")).filter(|s| s.is_string()) {
                *k = s.clone();
            }
        }
    }
    if let Some(Value::Array(keys)) = obj.get_mut("keys") {
        for (i, k) in keys.iter_mut().enumerate() {
            if k.as_str() == Some(REDACTED) {
                let keep = stored
                    .and_then(|s| s.get("keys"))
                    .and_then(|ks| ks.get(i))
                    .filter(|s| s.is_string());
                if let Some(s) = keep {
                    *k = s.clone();
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "ssl_tests.rs"]
mod tests;
