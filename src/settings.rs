//! The listener-level filter configuration (the wasm filter's
//! `configuration` string): settings shared by every route.

use serde::Deserialize;

/// Default bound of the per-VM verified-token cache (entries).
pub const DEFAULT_TOKEN_CACHE_SIZE: usize = 4096;
/// Default bound of the per-VM opened-session cache (entries).
pub const DEFAULT_SESSION_CACHE_SIZE: usize = 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// How many accepted tokens each VM remembers (per token and route
    /// config version); 0 turns the cache off.
    #[serde(default = "default_cache_size")]
    pub token_cache_size: usize,
    /// How many opened session cookies each VM remembers (by route and
    /// sealed value; timeouts are still checked on every request); 0 turns
    /// the cache off.
    #[serde(default = "default_session_cache_size")]
    pub session_cache_size: usize,
}

fn default_session_cache_size() -> usize {
    DEFAULT_SESSION_CACHE_SIZE
}

fn default_cache_size() -> usize {
    DEFAULT_TOKEN_CACHE_SIZE
}

impl Settings {
    /// An empty configuration means all defaults.
    pub fn parse(raw: &[u8]) -> Result<Settings, String> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(Settings {
                token_cache_size: DEFAULT_TOKEN_CACHE_SIZE,
                session_cache_size: DEFAULT_SESSION_CACHE_SIZE,
            });
        }
        serde_json::from_slice(raw).map_err(|e| e.to_string())
    }
}
