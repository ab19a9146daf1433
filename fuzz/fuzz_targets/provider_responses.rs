//! What the provider sends back: discovery, JWKS, introspection, token
//! answers, and the callback's query string. The first byte picks the
//! parser, the second the HTTP status.
#![no_main]
use libfuzzer_sys::fuzz_target;
use oidc_core::{callback, discovery, introspection, jwt};

fuzz_target!(|data: &[u8]| {
    let [which, status, body @ ..] = data else {
        return;
    };
    let status = [200u16, 400, 401, 500, 0][usize::from(*status) % 5];
    match which % 5 {
        0 => {
            let _ = discovery::parse_response(status, body, "http://127.0.0.1/realms/r");
        }
        1 => {
            let _ = jwt::Jwks::parse(body);
            let _ = discovery::parse_jwks_response(status, body);
        }
        2 => {
            let _ = introspection::parse_response(status, body, "exp");
        }
        3 => {
            let _ = callback::parse_tokens(status, body);
        }
        _ => {
            if let Ok(s) = std::str::from_utf8(body) {
                let _ = callback::CallbackQuery::parse(s);
                let _ = jwt::Jwks::from_pem(s);
            }
        }
    }
});
