//! Provider endpoints beyond the discovery host.
//!
//! The filter calls the discovery URL, then the URLs the discovery document
//! names (JWKS, token, introspection, userinfo, end-session). Envoy needs a
//! cluster for each of their hosts, so the sidecar fetches every route's
//! discovery document itself when it can, and publishes the endpoint URLs
//! it found. A provider that cannot be reached only means fewer clusters
//! for now: it is tried again later, and the discovery host always has
//! its cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oidc_core::config::PluginConfig;
use oidc_core::discovery::{self, ProviderMetadata};
use serde_json::Value;
use tokio::sync::watch;

/// How long to wait before trying a failed discovery URL again.
const RETRY: Duration = Duration::from_secs(30);
/// How long a fetched document's endpoints are trusted before a refresh.
const REFRESH: Duration = Duration::from_secs(3600);

/// The endpoint URLs a discovery document names.
pub fn endpoint_urls(m: &ProviderMetadata) -> Vec<String> {
    [
        &m.jwks_uri,
        &m.token_endpoint,
        &m.introspection_endpoint,
        &m.userinfo_endpoint,
        &m.end_session_endpoint,
        &m.revocation_endpoint,
        &m.authorization_endpoint,
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect()
}

/// The discovery URLs (with their `ssl_verify`) of the `openid-connect`
/// routes in a stored route set.
pub fn discovery_urls(routes: &BTreeMap<String, Value>) -> BTreeMap<String, bool> {
    let mut out = BTreeMap::new();
    for route in routes.values() {
        let Some(plugin) = route.pointer("/plugins/openid-connect") else {
            continue;
        };
        if let Ok(c) = PluginConfig::parse(plugin) {
            let verify = out.entry(c.discovery.clone()).or_insert(c.ssl_verify);
            *verify = *verify || c.ssl_verify;
        }
    }
    out
}

struct Known {
    urls: Vec<String>,
    at: Instant,
    ok: bool,
}

/// Fetches discovery documents for the routes it is shown and publishes the
/// union of their endpoint URLs.
pub struct Discoverer {
    verifying: reqwest::Client,
    lenient: reqwest::Client,
    known: HashMap<String, Known>,
}

impl Discoverer {
    pub fn new(timeout: Duration) -> Discoverer {
        let build = |verify: bool| {
            reqwest::Client::builder()
                .timeout(timeout)
                .no_proxy()
                .tls_danger_accept_invalid_certs(!verify)
                .build()
                .unwrap_or_else(|_| reqwest::Client::new())
        };
        Discoverer {
            verifying: build(true),
            lenient: build(false),
            known: HashMap::new(),
        }
    }

    async fn fetch(&self, url: &str, verify: bool) -> Result<Vec<String>, String> {
        let issuer = discovery::issuer_from_discovery_url(url)
            .ok_or_else(|| "not a discovery URL".to_string())?;
        let client = if verify {
            &self.verifying
        } else {
            &self.lenient
        };
        let resp = client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        let m = discovery::parse_response(status, &body, &issuer).map_err(|e| e.to_string())?;
        Ok(endpoint_urls(&m))
    }

    /// Brings the known documents up to date for `routes`; returns the
    /// endpoint URLs of every document currently known.
    pub async fn refresh(&mut self, routes: &BTreeMap<String, Value>) -> Vec<String> {
        let wanted = discovery_urls(routes);
        self.known.retain(|url, _| wanted.contains_key(url));
        for (url, verify) in &wanted {
            let due = match self.known.get(url) {
                None => true,
                Some(k) if k.ok => k.at.elapsed() >= REFRESH,
                Some(k) => k.at.elapsed() >= RETRY,
            };
            if !due {
                continue;
            }
            let known = match self.fetch(url, *verify).await {
                Ok(urls) => Known {
                    urls,
                    at: Instant::now(),
                    ok: true,
                },
                Err(e) => {
                    tracing::warn!(discovery = %url, error = %e, "cannot fetch the discovery document; only the discovery host gets a cluster for now");
                    // Keep what an earlier fetch found.
                    let urls = self
                        .known
                        .get(url)
                        .map(|k| k.urls.clone())
                        .unwrap_or_default();
                    Known {
                        urls,
                        at: Instant::now(),
                        ok: false,
                    }
                }
            };
            self.known.insert(url.clone(), known);
        }
        let all: BTreeSet<String> = self.known.values().flat_map(|k| k.urls.clone()).collect();
        all.into_iter().collect()
    }
}

/// Runs until `routes` closes: on every route change, and every `RETRY`,
/// refreshes the documents and publishes the endpoint URLs when they change.
pub async fn run(
    mut routes: watch::Receiver<Arc<crate::store::Stored>>,
    out: watch::Sender<Arc<Vec<String>>>,
    timeout: Duration,
) {
    let mut d = Discoverer::new(timeout);
    loop {
        let current = routes.borrow_and_update().clone();
        let urls = d.refresh(&current.routes).await;
        out.send_if_modified(|old| {
            if **old == urls {
                false
            } else {
                *old = Arc::new(urls);
                true
            }
        });
        tokio::select! {
            changed = routes.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn discovery_urls_of_oidc_routes() {
        let mut routes = BTreeMap::new();
        let plugin = |disc: &str, verify: bool| json!({"client_id": "c", "client_secret": "s", "discovery": disc, "bearer_only": true, "ssl_verify": verify});
        routes.insert("a".into(), json!({"plugins": {"openid-connect": plugin("https://idp/.well-known/openid-configuration", true)}}));
        routes.insert("b".into(), json!({"plugins": {"openid-connect": plugin("https://idp/.well-known/openid-configuration", false)}}));
        routes.insert("c".into(), json!({"plugins": {}}));
        let urls = discovery_urls(&routes);
        assert_eq!(urls.len(), 1);
        // Verified unless every route using it turns verification off.
        assert_eq!(
            urls.get("https://idp/.well-known/openid-configuration"),
            Some(&true)
        );
    }

    #[test]
    fn endpoint_urls_of_a_document() {
        let doc = json!({
            "issuer": "http://idp:8080/realms/r",
            "jwks_uri": "http://keys.idp:8080/certs",
            "token_endpoint": "http://idp:8080/token",
        });
        let m =
            discovery::parse_response(200, doc.to_string().as_bytes(), "http://idp:8080/realms/r")
                .unwrap();
        assert_eq!(
            endpoint_urls(&m),
            vec!["http://keys.idp:8080/certs", "http://idp:8080/token"]
        );
    }
}
