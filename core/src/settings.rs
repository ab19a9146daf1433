//! The listener-level filter configuration (the wasm filter's
//! `configuration` string): settings shared by every route.
//!
//! The filter parses it in `on_configure`; the sidecar parses its
//! `--filter-settings` with the same function at start-up, so a typo stops
//! the sidecar with the field's name instead of reaching Envoy (where the
//! filter would refuse it and the listener would be rejected).

use std::fmt;

use serde::Deserialize;

use crate::provider::{self, Intervals};
use crate::secret::Secret;

/// Default bound of the per-VM verified-token cache (entries).
pub const DEFAULT_TOKEN_CACHE_SIZE: usize = 4096;
/// Default bound of the per-VM opened-session cache (entries).
pub const DEFAULT_SESSION_CACHE_SIZE: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
    /// After a failed provider call, seconds before trying again
    /// ([`provider::RETRY_AFTER_FAILURE`] by default). A test and tuning
    /// knob, not documented for users; at least 1.
    #[serde(default = "default_retry_after")]
    pub provider_retry_after_s: u64,
    /// How often, in seconds, a token with an unknown `kid` may refetch the
    /// JWKS ([`provider::KID_REFETCH_INTERVAL`] by default). A test and
    /// tuning knob, not documented for users; at least 1.
    #[serde(default = "default_kid_refetch")]
    pub kid_refetch_interval_s: u64,
    /// The sidecar's revocation service (`crate::revocation_feed`): set
    /// by the sidecar, which generates its key at start. `None`: logouts
    /// stay on this Envoy.
    #[serde(default)]
    pub revocation_service: Option<RevocationService>,
}

/// Where the filter posts and polls revocations.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationService {
    /// The Envoy cluster of the sidecar's service.
    pub cluster: String,
    /// The key the service requires (`revocation_feed::KEY_HEADER`).
    #[serde(deserialize_with = "secret")]
    pub key: Secret,
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    Ok(Secret::new(String::deserialize(d)?))
}

/// Why a settings text was refused (serde's message: it names an unknown
/// or mistyped field, and where).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError(String);

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SettingsError {}

fn default_session_cache_size() -> usize {
    DEFAULT_SESSION_CACHE_SIZE
}

fn default_cache_size() -> usize {
    DEFAULT_TOKEN_CACHE_SIZE
}

fn default_retry_after() -> u64 {
    provider::RETRY_AFTER_FAILURE
}

fn default_kid_refetch() -> u64 {
    provider::KID_REFETCH_INTERVAL
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            token_cache_size: DEFAULT_TOKEN_CACHE_SIZE,
            session_cache_size: DEFAULT_SESSION_CACHE_SIZE,
            provider_retry_after_s: provider::RETRY_AFTER_FAILURE,
            kid_refetch_interval_s: provider::KID_REFETCH_INTERVAL,
            revocation_service: None,
        }
    }
}

impl Settings {
    /// Parses the configuration text; an empty one means all defaults.
    pub fn parse(raw: &[u8]) -> Result<Settings, SettingsError> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(Settings::default());
        }
        let s: Settings = serde_json::from_slice(raw).map_err(|e| SettingsError(e.to_string()))?;
        // 0 would mean "no pause at all": a provider asked on every
        // request.
        for (name, v) in [
            ("provider_retry_after_s", s.provider_retry_after_s),
            ("kid_refetch_interval_s", s.kid_refetch_interval_s),
        ] {
            if v == 0 {
                return Err(SettingsError(format!("{name} must be at least 1")));
            }
        }
        Ok(s)
    }

    /// The wall-clock rules' intervals the core applies.
    pub fn intervals(&self) -> Intervals {
        Intervals {
            retry_after_failure: self.provider_retry_after_s,
            kid_refetch: self.kid_refetch_interval_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_means_defaults_and_fields_are_read() {
        assert_eq!(Settings::parse(b" \n").unwrap(), Settings::default());
        assert_eq!(Settings::parse(b"{}").unwrap(), Settings::default());
        let s = Settings::parse(br#"{"token_cache_size": 0, "session_cache_size": 7}"#).unwrap();
        assert_eq!((s.token_cache_size, s.session_cache_size), (0, 7));
    }

    #[test]
    fn the_provider_intervals_default_to_the_constants_and_can_be_set() {
        let d = Settings::parse(b"{}").unwrap().intervals();
        assert_eq!(d, Intervals::default());
        assert_eq!(
            (d.retry_after_failure, d.kid_refetch),
            (
                provider::RETRY_AFTER_FAILURE,
                provider::KID_REFETCH_INTERVAL
            )
        );
        let s = Settings::parse(br#"{"provider_retry_after_s": 1, "kid_refetch_interval_s": 2}"#)
            .unwrap();
        assert_eq!((s.provider_retry_after_s, s.kid_refetch_interval_s), (1, 2));
        assert_eq!(
            s.intervals(),
            Intervals {
                retry_after_failure: 1,
                kid_refetch: 2
            }
        );
        // The other fields keep their defaults.
        assert_eq!(s.token_cache_size, DEFAULT_TOKEN_CACHE_SIZE);
    }

    #[test]
    fn a_zero_interval_or_a_wrong_type_is_refused() {
        for field in ["provider_retry_after_s", "kid_refetch_interval_s"] {
            let e = Settings::parse(format!(r#"{{"{field}": 0}}"#).as_bytes()).unwrap_err();
            assert!(e.to_string().contains(field), "{e}");
            let e = Settings::parse(format!(r#"{{"{field}": -1}}"#).as_bytes()).unwrap_err();
            assert!(e.to_string().contains("invalid value"), "{e}");
            let e = Settings::parse(format!(r#"{{"{field}": "1"}}"#).as_bytes()).unwrap_err();
            assert!(e.to_string().contains("invalid type"), "{e}");
        }
    }

    #[test]
    fn a_typo_or_a_wrong_type_is_refused_naming_the_field() {
        let e = Settings::parse(br#"{"token_cach_size": 16}"#).unwrap_err();
        assert!(
            e.to_string().contains("unknown field `token_cach_size`"),
            "{e}"
        );
        let e = Settings::parse(br#"{"session_cache_size": "16"}"#).unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
        assert!(Settings::parse(b"{").is_err());
    }

    #[test]
    fn the_revocation_service_is_read_and_its_key_never_printed() {
        let s = Settings::parse(
            br#"{"revocation_service": {"cluster": "oidc|revocations", "key": "k3y-v4lue"}}"#,
        )
        .unwrap();
        let r = s.revocation_service.clone().unwrap();
        assert_eq!(
            (r.cluster.as_str(), r.key.expose()),
            ("oidc|revocations", "k3y-v4lue")
        );
        assert!(!format!("{s:?}").contains("k3y-v4lue"));
        assert!(Settings::parse(br#"{"revocation_service": {"cluster": "c"}}"#).is_err());
    }
}
