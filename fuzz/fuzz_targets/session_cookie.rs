//! The session cookie decoder: Cookie header parsing, chunk reassembly,
//! base64, AES-GCM opening, the session JSON, and the login flow cookie.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use oidc_core::login;
use oidc_core::route::Route;
use oidc_core::session;

const NOW: u64 = 1_800_000_000;

fn route() -> &'static Route {
    static R: OnceLock<Route> = OnceLock::new();
    R.get_or_init(|| {
        Route::from_json(
            r#"{"client_id":"c","client_secret":"s","discovery":"http://idp/.well-known/openid-configuration",
                "bearer_only":false,"session":{"secret":"fuzz-session-secret-0123456789"}}"#,
        )
        .expect("the fixture route")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let r = route();
    let (Some(cfg), Some(key)) = (&r.config.session, &r.session_key) else {
        return;
    };
    let cookies = session::parse_cookie_header(header);
    let _ = session::decode(key, "session", &cookies, NOW, cfg);
    let _ = session::without_ours("session", &cookies);
    let _ = session::open(key, b"session", header);
    if let Some((state, _)) = cookies.first() {
        let _ = login::read_flow(r, key, state, &cookies, NOW);
    }
});
