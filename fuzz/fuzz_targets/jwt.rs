//! The JWT front end and verifier: segments, base64, header and claims JSON,
//! key selection, signatures, with real keys.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use oidc_core::jwt::{self, AudiencePolicy, Jwks, VerifyPolicy};

const NOW: u64 = 1_800_000_000;

fn keys() -> &'static Jwks {
    static K: OnceLock<Jwks> = OnceLock::new();
    K.get_or_init(|| Jwks::parse(include_bytes!("../keys/jwks.json")).expect("the fixture JWKS"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let policy = VerifyPolicy {
        issuers: Some(vec!["http://127.0.0.1/realms/quickstart-realm".into()]),
        audience: AudiencePolicy {
            client_id: "apisix-quickstart-client".into(),
            required: true,
            match_with_client_id: true,
            ..AudiencePolicy::default()
        },
        required_scopes: vec!["openid".into()],
        ..VerifyPolicy::default()
    };
    let _ = jwt::verify(token, keys(), &policy, NOW);
    let _ = jwt::unverified_payload(token);
});
