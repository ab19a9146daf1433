//! Provider documents (discovery, JWKS) in proxy-wasm shared data, so all
//! worker VMs share one copy, with a parsed copy per VM.
//!
//! Shared-data value: `fetched_at` (u64 LE, 0 = never) ‖ `failed_at`
//! (u64 LE, 0 = never) ‖ the document body as the provider sent it.
//! Only bodies that parsed are stored; each VM parses again when the
//! shared value changes (its CAS number moves).
//!
//! One fetch of a document at a time across the workers: before a request
//! fetches, it writes "fetching since `now`" (u64 LE) under
//! `openid-connect|fetching|<kind>|<url>` with a CAS on the value it read;
//! whoever loses, or finds a marker younger than the call timeout
//! (`bearer::fetch_in_flight`), uses the cached document instead. The
//! fetcher clears the marker when its answer (or failure) arrives; a
//! marker whose worker went away expires after the timeout.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use oidc_core::bearer::{self, FetchKind, Fetched, ProviderState};
use oidc_core::discovery::{self, ProviderMetadata};
use oidc_core::jwt::Jwks;
use proxy_wasm::hostcalls;

struct Parsed<T> {
    cas: u32,
    doc: Option<Rc<Fetched<T>>>,
    failed_at: Option<u64>,
}

/// What is known of one document.
pub struct Known<T> {
    pub doc: Option<Rc<Fetched<T>>>,
    pub failed_at: Option<u64>,
}

/// What is known of a route's provider: its discovery document and the
/// JWKS at its `jwks_uri`.
pub struct Provider {
    pub discovery: Known<ProviderMetadata>,
    pub jwks_uri: Option<String>,
    pub jwks: Option<Known<Jwks>>,
}

impl Provider {
    pub fn state(&self) -> ProviderState<'_> {
        ProviderState {
            discovery: self.discovery.doc.as_deref(),
            jwks: self.jwks.as_ref().and_then(|j| j.doc.as_deref()),
            discovery_failed_at: self.discovery.failed_at,
            jwks_failed_at: self.jwks.as_ref().and_then(|j| j.failed_at),
            discovery_in_flight: false,
            jwks_in_flight: false,
        }
    }

    /// Whether a parsed copy of the document is at hand.
    pub fn has(&self, kind: FetchKind) -> bool {
        match kind {
            FetchKind::Discovery => self.discovery.doc.is_some(),
            FetchKind::Jwks => self.jwks.as_ref().is_some_and(|j| j.doc.is_some()),
        }
    }
}

#[derive(Default)]
pub struct Store {
    discovery: RefCell<HashMap<String, Parsed<ProviderMetadata>>>,
    jwks: RefCell<HashMap<String, Parsed<Jwks>>>,
}

fn key(kind: FetchKind, url: &str) -> String {
    match kind {
        FetchKind::Discovery => format!("openid-connect|discovery|{url}"),
        FetchKind::Jwks => format!("openid-connect|jwks|{url}"),
    }
}

fn marker_key(kind: FetchKind, url: &str) -> String {
    match kind {
        FetchKind::Discovery => format!("openid-connect|fetching|discovery|{url}"),
        FetchKind::Jwks => format!("openid-connect|fetching|jwks|{url}"),
    }
}

fn marker_since(raw: Option<&[u8]>) -> Option<u64> {
    let raw = raw?.get(0..8)?;
    nonzero(u64::from_le_bytes(raw.try_into().ok()?))
}

fn split(raw: &[u8]) -> Option<(u64, u64, &[u8])> {
    let fetched = u64::from_le_bytes(raw.get(0..8)?.try_into().ok()?);
    let failed = u64::from_le_bytes(raw.get(8..16)?.try_into().ok()?);
    Some((fetched, failed, raw.get(16..)?))
}

fn nonzero(t: u64) -> Option<u64> {
    (t != 0).then_some(t)
}

/// Parses a stored discovery body; the expected issuer follows from the URL.
pub fn parse_discovery(url: &str, body: &[u8]) -> Result<ProviderMetadata, String> {
    let issuer = discovery::issuer_from_discovery_url(url)
        .ok_or_else(|| format!("{url} is not a discovery URL"))?;
    discovery::parse_response(200, body, &issuer).map_err(|e| e.to_string())
}

/// Parses a stored JWKS body.
pub fn parse_jwks(body: &[u8]) -> Result<Jwks, String> {
    Jwks::parse(body).map_err(|e| e.to_string())
}

impl Store {
    /// Everything known about the provider of a discovery URL.
    pub fn provider(&self, discovery_url: &str) -> Provider {
        let discovery = self.discovery(discovery_url);
        let jwks_uri = discovery
            .doc
            .as_ref()
            .and_then(|d| d.value.jwks_uri.clone());
        let jwks = jwks_uri.as_deref().map(|u| self.jwks(u));
        Provider {
            discovery,
            jwks_uri,
            jwks,
        }
    }

    pub fn discovery(&self, url: &str) -> Known<ProviderMetadata> {
        load(&self.discovery, FetchKind::Discovery, url, |b| {
            parse_discovery(url, b)
        })
    }

    pub fn jwks(&self, url: &str) -> Known<Jwks> {
        load(&self.jwks, FetchKind::Jwks, url, parse_jwks)
    }

    /// Stores a body that parsed, fetched at `now`.
    pub fn save(&self, kind: FetchKind, url: &str, body: &[u8], now: u64) {
        let mut value = Vec::with_capacity(16 + body.len());
        value.extend_from_slice(&now.to_le_bytes());
        value.extend_from_slice(&0u64.to_le_bytes());
        value.extend_from_slice(body);
        if let Err(e) = hostcalls::set_shared_data(&key(kind, url), Some(&value), None) {
            log::warn!("openid-connect: cannot store provider document: {e:?}");
        }
    }

    /// Marks a fetch of the document at `url` as in flight since `now`,
    /// unless another one is (younger than `timeout` seconds). `true`:
    /// this request is the fetcher and must [`release`](Self::release).
    ///
    /// Shared data has no "create if absent": the first marker for a URL is
    /// written in two steps (an empty value, then a CAS), so two workers
    /// that race on the very first fetch of a URL may both win once.
    pub fn claim(&self, kind: FetchKind, url: &str, timeout: u64, now: u64) -> bool {
        let k = marker_key(kind, url);
        let mut read = hostcalls::get_shared_data(&k).ok();
        if !matches!(read, Some((Some(_), Some(_)))) {
            let _ = hostcalls::set_shared_data(&k, Some(&[]), None);
            read = hostcalls::get_shared_data(&k).ok();
        }
        let Some((value, Some(cas))) = read else {
            return false;
        };
        if bearer::fetch_in_flight(marker_since(value.as_deref()), timeout, now) {
            return false;
        }
        hostcalls::set_shared_data(&k, Some(&now.to_le_bytes()), Some(cas)).is_ok()
    }

    /// Clears the marker this request set at `since` (not a newer one).
    pub fn release(&self, kind: FetchKind, url: &str, since: u64) {
        let k = marker_key(kind, url);
        if let Ok((value, Some(cas))) = hostcalls::get_shared_data(&k) {
            if marker_since(value.as_deref()) == Some(since) {
                let _ = hostcalls::set_shared_data(&k, Some(&[]), Some(cas));
            }
        }
    }

    /// Records a failed call, keeping the last good document.
    pub fn mark_failed(&self, kind: FetchKind, url: &str, now: u64) {
        let k = key(kind, url);
        let old = hostcalls::get_shared_data(&k).ok().and_then(|(v, _)| v);
        let (fetched, body) = match old.as_deref().and_then(split) {
            Some((f, _, b)) => (f, b.to_vec()),
            None => (0, Vec::new()),
        };
        let mut value = Vec::with_capacity(16 + body.len());
        value.extend_from_slice(&fetched.to_le_bytes());
        value.extend_from_slice(&now.to_le_bytes());
        value.extend_from_slice(&body);
        let _ = hostcalls::set_shared_data(&k, Some(&value), None);
    }
}

fn load<T>(
    cache: &RefCell<HashMap<String, Parsed<T>>>,
    kind: FetchKind,
    url: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Known<T> {
    let (raw, cas) = match hostcalls::get_shared_data(&key(kind, url)) {
        Ok((Some(raw), Some(cas))) => (raw, cas),
        _ => {
            return Known {
                doc: None,
                failed_at: None,
            }
        }
    };
    if let Some(p) = cache.borrow().get(url) {
        if p.cas == cas {
            return Known {
                doc: p.doc.clone(),
                failed_at: p.failed_at,
            };
        }
    }
    let (doc, failed_at) = match split(&raw) {
        Some((fetched, failed, body)) => {
            let doc = nonzero(fetched).and_then(|fetched_at| match parse(body) {
                Ok(value) => Some(Rc::new(Fetched { value, fetched_at })),
                Err(e) => {
                    log::warn!("openid-connect: stored provider document does not parse: {e}");
                    None
                }
            });
            (doc, nonzero(failed))
        }
        None => (None, None),
    };
    cache.borrow_mut().insert(
        url.to_string(),
        Parsed {
            cas,
            doc: doc.clone(),
            failed_at,
        },
    );
    Known { doc, failed_at }
}
