//! The request loop (`oidc_core::exchange`, as the filter drives it) on a
//! login route with arbitrary requests and provider answers: path and
//! query, cookies, Accept, then garbage for every provider call.
#![no_main]
use std::rc::Rc;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use oidc_core::browser::Entropy;
use oidc_core::discovery::ProviderMetadata;
use oidc_core::exchange::{Effect, Exchange, Host};
use oidc_core::jwt::Jwks;
use oidc_core::provider::{Documents, FetchKind, Fetched, Known};
use oidc_core::route::Route;

const NOW: u64 = 1_800_000_000;

fn route() -> &'static Route {
    static R: OnceLock<Route> = OnceLock::new();
    R.get_or_init(|| {
        Route::from_json(
            r#"{"client_id":"c","client_secret":"s","discovery":"http://idp/.well-known/openid-configuration",
                "bearer_only":false,"use_pkce":true,"logout_path":"/app/logout","revoke_tokens_on_logout":true,
                "redirect_uri":"http://gw/app/callback","session":{"secret":"fuzz-session-secret-0123456789"}}"#,
        )
        .expect("the fixture route")
    })
}

fn documents() -> &'static (Fetched<ProviderMetadata>, Fetched<Jwks>) {
    static D: OnceLock<(Fetched<ProviderMetadata>, Fetched<Jwks>)> = OnceLock::new();
    D.get_or_init(|| {
        let kc = "http://idp/protocol/openid-connect";
        let m = ProviderMetadata {
            issuer: "http://idp".into(),
            authorization_endpoint: Some(format!("{kc}/auth")),
            token_endpoint: Some(format!("{kc}/token")),
            userinfo_endpoint: Some(format!("{kc}/userinfo")),
            jwks_uri: Some(format!("{kc}/certs")),
            end_session_endpoint: Some(format!("{kc}/logout")),
            revocation_endpoint: Some(format!("{kc}/revoke")),
            ..ProviderMetadata::default()
        };
        let keys = Jwks::parse(include_bytes!("../keys/jwks.json")).expect("the fixture JWKS");
        (
            Fetched { value: m, fetched_at: NOW },
            Fetched { value: keys, fetched_at: NOW },
        )
    })
}

/// Fixed random bytes and the fixture documents; nothing is remembered.
struct Fixed;
impl Entropy for Fixed {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), String> {
        buf.fill(7);
        Ok(())
    }
}

impl Host for Fixed {
    fn documents(&mut self, _: &str) -> Documents {
        let (m, keys) = documents();
        Documents {
            discovery: Known {
                doc: Some(Rc::new(m.clone())),
                failed_at: None,
            },
            jwks_uri: m.value.jwks_uri.clone(),
            jwks: Some(Known {
                doc: Some(Rc::new(keys.clone())),
                failed_at: None,
            }),
        }
    }
    fn read_document(&mut self, _: FetchKind, _: &str) -> Option<Vec<u8>> {
        None
    }
    fn write_document(&mut self, _: FetchKind, _: &str, _: &[u8]) {}
    fn claim(&mut self, _: FetchKind, _: &str, _: u64, _: u64) -> bool {
        true
    }
    fn release(&mut self, _: FetchKind, _: &str, _: u64) {}
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = s.split('\n');
    let path = parts.next().unwrap_or("/");
    let cookie = parts.next().unwrap_or("");
    let accept = parts.next();
    let answer = parts.next().unwrap_or("").as_bytes();
    let mut headers = vec![
        (":scheme".to_string(), b"http".to_vec()),
        (":authority".to_string(), b"gw".to_vec()),
        (":path".to_string(), path.as_bytes().to_vec()),
        ("cookie".to_string(), cookie.as_bytes().to_vec()),
    ];
    if let Some(a) = accept {
        headers.push(("accept".to_string(), a.as_bytes().to_vec()));
    }
    let r = route();
    let (mut ex, mut effect) = Exchange::begin(r, &headers, &mut Fixed, NOW);
    for _ in 0..8 {
        effect = match effect {
            Effect::Fetch { pending, .. } | Effect::Call(_, pending) => {
                ex.on_answer(r, pending, 200, answer, &mut Fixed, NOW)
            }
            _ => break,
        };
    }
});
