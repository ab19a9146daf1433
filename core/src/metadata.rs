//! The route-metadata contract between whoever configures Envoy (the
//! sidecar, the test harness, the benchmark) and the filter that reads it.
//!
//! A route with the plugin carries
//! `filter_metadata["openid-connect"] = {"config": <plugin JSON text>,
//! "hosts": <JSON list, only for routes with hosts>}` and
//! `filter_metadata["openid-connect-version"] = {"version": <version>}`.
//! The version sits in a namespace of its own: the filter reads it on every
//! request, and reading a field of a small namespace costs less than one
//! next to the config text. An empty version marks a route without the
//! plugin. Earlier builds wrote the version next to the config; the filter
//! still reads it there when the version namespace is absent.
//!
//! The version is also at the end of the route's name,
//! `<name>|oidc=<version>` ([`route_name`]; `<name>|oidc=` for a route
//! without the plugin). The filter reads the name first: Envoy answers
//! `xds.route_name` with a string it has at hand, while a metadata field is
//! looked up through the metadata's structs, about four times the cost
//! (3.1k against 13.6k instructions per request, `make bench`). A name
//! without the mark sends the filter to the metadata.

use sha2::{Digest, Sha256};

/// The namespace holding the plugin config (and the route's hosts).
pub const NAMESPACE: &str = "openid-connect";
/// The namespace holding the config version alone.
pub const VERSION_NAMESPACE: &str = "openid-connect-version";
/// The key of the plugin config text in [`NAMESPACE`].
pub const CONFIG_KEY: &str = "config";
/// The key of the route's hosts (a JSON list as text) in [`NAMESPACE`].
pub const HOSTS_KEY: &str = "hosts";
/// The key of the version in [`VERSION_NAMESPACE`] (and, in the legacy
/// layout, in [`NAMESPACE`]).
pub const VERSION_KEY: &str = "version";

/// What separates a route's own name from the version in its Envoy name.
pub const ROUTE_NAME_MARK: &str = "|oidc=";

/// The Envoy route name carrying `version` (empty: a route without the
/// plugin) after the route's own `name`.
pub fn route_name(name: &str, version: &str) -> String {
    format!("{name}{ROUTE_NAME_MARK}{version}")
}

/// The version at the end of an Envoy route name, if it carries one.
pub fn version_in_route_name(route_name: &str) -> Option<&str> {
    route_name.rsplit_once(ROUTE_NAME_MARK).map(|(_, v)| v)
}

/// The metadata version of a config text: the first 16 hex digits of its
/// SHA-256. For a route with hosts, the text is `"{config}\n{hosts}"` so
/// that the version covers both. The filter only compares versions, so any
/// string that changes with the text would do; this is the one the sidecar
/// writes (bench/bench.py computes the same in Python).
pub fn config_version(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_rides_at_the_end_of_the_route_name() {
        let name = route_name("42", "ba7816bf8f01cfea");
        assert_eq!(name, "42|oidc=ba7816bf8f01cfea");
        assert_eq!(version_in_route_name(&name), Some("ba7816bf8f01cfea"));
        assert_eq!(version_in_route_name(&route_name("a|oidc=b", "")), Some(""));
        assert_eq!(version_in_route_name("42"), None);
    }

    #[test]
    fn version_is_the_first_16_hex_digits_of_sha256() {
        assert_eq!(config_version("abc"), "ba7816bf8f01cfea");
        assert_eq!(config_version("").len(), 16);
    }
}
