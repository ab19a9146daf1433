//! The browser state machine with arbitrary requests and provider answers:
//! path and query, cookies, Accept, then garbage for every provider call.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use oidc_core::bearer::{Fetched, ProviderState};
use oidc_core::discovery::ProviderMetadata;
use oidc_core::jwt::Jwks;
use oidc_core::browser::{BrowserRequest, Entropy, Flow, Step};
use oidc_core::route::Route;
use oidc_core::session;

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

struct Fixed;
impl Entropy for Fixed {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), String> {
        buf.fill(7);
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = s.split('\n');
    let path = parts.next().unwrap_or("/");
    let cookie = parts.next().unwrap_or("");
    let accept = parts.next().map(str::to_string);
    let answer = parts.next().unwrap_or("").as_bytes();
    let req = BrowserRequest {
        scheme: "http".into(),
        host: "gw".into(),
        path: path.to_string(),
        accept,
        cookies: session::parse_cookie_header(cookie),
    };
    let r = route();
    let mut flow = Flow::begin(r, req, NOW);
    let (m, keys) = documents();
    let state = ProviderState {
        discovery: Some(m),
        jwks: Some(keys),
        ..ProviderState::default()
    };
    let mut step = flow.advance(r, &state, &mut Fixed, NOW);
    for _ in 0..8 {
        match step {
            Step::Call(_) => step = flow.on_response(r, &state, 200, answer, &mut Fixed, NOW),
            _ => break,
        }
    }
});
