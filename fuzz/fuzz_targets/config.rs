//! The plugin-config parser (Admin API bodies and route metadata).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = oidc_core::config::PluginConfig::parse_str(s);
        let _ = oidc_core::route::Route::from_json(s);
    }
});
