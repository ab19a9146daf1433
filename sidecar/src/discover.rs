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

use oidc_core::discovery::{self, ProviderMetadata};
use oidc_core::http::MAX_RESPONSE_BODY;
use tokio::sync::watch;

use crate::apisix::table::{Published, RouteTable};

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
/// routes in a route table.
pub fn discovery_urls(table: &RouteTable) -> BTreeMap<String, bool> {
    // Kept by the table per changed route: not a walk over every config at
    // every change.
    table.discovery_urls()
}

struct Known {
    urls: Vec<String>,
    at: Instant,
    ok: bool,
}

/// The body of `resp`, or an error as soon as it is known to exceed `cap`
/// bytes (from `Content-Length`, or while reading): a provider cannot make
/// the sidecar buffer an unbounded body.
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    let too_big = || format!("the response body is larger than {cap} bytes");
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > cap {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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
        let body = read_capped(resp, MAX_RESPONSE_BODY).await?;
        // The document's issuer need not be the URL's (as in APISIX and
        // the filter: `oidc_core::discovery::parse_document`).
        let m = discovery::parse_document(status, &body).map_err(|e| e.to_string())?;
        Ok(endpoint_urls(&m))
    }

    /// Brings the known documents up to date for `routes`; returns the
    /// endpoint URLs of every document currently known.
    pub async fn refresh(&mut self, table: &RouteTable) -> Vec<String> {
        let wanted = discovery_urls(table);
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
    mut routes: watch::Receiver<Published>,
    out: watch::Sender<Arc<Vec<String>>>,
    timeout: Duration,
) {
    let mut d = Discoverer::new(timeout);
    loop {
        let current = routes.borrow_and_update().clone();
        let urls = d.refresh(&current).await;
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
        let plugin = |disc: &str, verify: bool| json!({"client_id": "c", "client_secret": "s", "discovery": disc, "bearer_only": true, "ssl_verify": verify});
        let route = |plugins: serde_json::Value| json!({"uri": "/x", "plugins": plugins, "upstream": {"nodes": {"192.0.2.1:80": 1}}});
        let mut stored = crate::store::Stored::default();
        stored.routes.insert("a".into(), route(json!({"openid-connect": plugin("https://idp/.well-known/openid-configuration", true)})));
        stored.routes.insert("b".into(), route(json!({"openid-connect": plugin("https://idp/.well-known/openid-configuration", false)})));
        stored.routes.insert("c".into(), route(json!({})));
        let table = RouteTable::build(stored);
        assert!(table.invalid().is_empty(), "{:?}", table.invalid());
        let urls = discovery_urls(&table);
        assert_eq!(urls.len(), 1);
        // Verified unless every route using it turns verification off.
        assert_eq!(
            urls.get("https://idp/.well-known/openid-configuration"),
            Some(&true)
        );
    }

    /// Serves, on every connection, a discovery document padded with JSON
    /// whitespace to `size` bytes, with `Content-Length` or chunked; returns
    /// its discovery URL.
    async fn serve(size: usize, chunked: bool) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/realms/r/.well-known/openid-configuration",
            listener.local_addr().unwrap()
        );
        let issuer = discovery::issuer_from_discovery_url(&url).unwrap();
        let mut body = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/certs")})
            .to_string()
            .into_bytes();
        body.resize(size.max(body.len()), b' ');
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let framing = if chunked {
                        "Transfer-Encoding: chunked".to_string()
                    } else {
                        format!("Content-Length: {}", body.len())
                    };
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{framing}\r\nConnection: close\r\n\r\n");
                    let _ = s.write_all(head.as_bytes()).await;
                    if chunked {
                        for part in body.chunks(64 * 1024) {
                            let size = format!("{:x}\r\n", part.len());
                            let _ = s.write_all(size.as_bytes()).await;
                            let _ = s.write_all(part).await;
                            let _ = s.write_all(b"\r\n").await;
                        }
                        let _ = s.write_all(b"0\r\n\r\n").await;
                    } else {
                        let _ = s.write_all(&body).await;
                    }
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn provider_bodies_over_the_cap_are_refused() {
        let d = Discoverer::new(Duration::from_secs(5));
        for chunked in [false, true] {
            // At the cap: read and parsed.
            let url = serve(MAX_RESPONSE_BODY, chunked).await;
            let urls = d.fetch(&url, false).await.expect("a document at the cap");
            assert_eq!(urls.len(), 1, "{urls:?}");
            // Over it (2 MiB): refused, with or without Content-Length.
            let url = serve(2 * MAX_RESPONSE_BODY, chunked).await;
            let err = d.fetch(&url, false).await.expect_err("over the cap");
            assert!(err.contains("larger than 1048576 bytes"), "{err}");
        }
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
