//! The `Authorization` / `X-Access-Token` header parser.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (auth, x) = s.split_once('\0').unwrap_or((s, ""));
    let _ = oidc_core::bearer::extract_token(Some(auth), Some(x));
    let _ = oidc_core::bearer::extract_token(None, Some(auth));
    let _ = oidc_core::login::is_browser_navigation(Some(s));
});
