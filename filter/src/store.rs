//! Provider documents (discovery, JWKS) in proxy-wasm shared data, so all
//! worker VMs share one copy, with a parsed copy per VM. The stored form
//! and the rules are core's (`oidc_core::provider::record`); this file only
//! reads, writes and compares-and-swaps.
//!
//! One fetch of a document at a time across the workers: before a request
//! fetches, it writes "fetching since `now`" under the document's marker
//! key with a CAS on the value it read; whoever loses, or finds a marker
//! younger than the call timeout (`provider::fetch_in_flight`), uses the
//! cached document instead. The fetcher clears the marker when its answer
//! (or failure) arrives; a marker whose worker went away expires after the
//! timeout.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use oidc_core::discovery::ProviderMetadata;
use oidc_core::jwt::Jwks;
use oidc_core::provider::{self, record, Documents, FetchKind, Fetched, Known};
use proxy_wasm::hostcalls;

struct Parsed<T> {
    cas: u32,
    known: Known<T>,
}

#[derive(Default)]
pub struct Store {
    discovery: RefCell<HashMap<String, Parsed<ProviderMetadata>>>,
    jwks: RefCell<HashMap<String, Parsed<Jwks>>>,
}

impl Store {
    /// Everything known about the provider of a discovery URL.
    pub fn documents(&self, discovery_url: &str) -> Documents {
        let discovery = load(&self.discovery, FetchKind::Discovery, discovery_url, |b| {
            provider::parse_discovery(discovery_url, b)
        });
        let jwks_uri = discovery
            .doc
            .as_ref()
            .and_then(|d| d.value.jwks_uri.clone());
        let jwks = jwks_uri
            .as_deref()
            .map(|u| load(&self.jwks, FetchKind::Jwks, u, provider::parse_jwks));
        Documents {
            discovery,
            jwks_uri,
            jwks,
        }
    }

    /// The stored record of a document.
    pub fn read(&self, kind: FetchKind, url: &str) -> Option<Vec<u8>> {
        hostcalls::get_shared_data(&record::key(kind, url))
            .ok()
            .and_then(|(v, _)| v)
    }

    /// Stores a document record.
    pub fn write(&self, kind: FetchKind, url: &str, value: &[u8]) {
        if let Err(e) = hostcalls::set_shared_data(&record::key(kind, url), Some(value), None) {
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
        let k = record::marker_key(kind, url);
        let mut read = hostcalls::get_shared_data(&k).ok();
        if !matches!(read, Some((Some(_), Some(_)))) {
            let _ = hostcalls::set_shared_data(&k, Some(&[]), None);
            read = hostcalls::get_shared_data(&k).ok();
        }
        let Some((value, Some(cas))) = read else {
            return false;
        };
        if provider::fetch_in_flight(record::marker_since(value.as_deref()), timeout, now) {
            return false;
        }
        hostcalls::set_shared_data(&k, Some(&record::marker(now)), Some(cas)).is_ok()
    }

    /// Clears the marker this request set at `since` (not a newer one).
    pub fn release(&self, kind: FetchKind, url: &str, since: u64) {
        let k = record::marker_key(kind, url);
        if let Ok((value, Some(cas))) = hostcalls::get_shared_data(&k) {
            if record::marker_since(value.as_deref()) == Some(since) {
                let _ = hostcalls::set_shared_data(&k, Some(&[]), Some(cas));
            }
        }
    }
}

/// The stored document, parsed again only when the shared value changed
/// (its CAS number moved).
fn load<T>(
    cache: &RefCell<HashMap<String, Parsed<T>>>,
    kind: FetchKind,
    url: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Known<T> {
    let (raw, cas) = match hostcalls::get_shared_data(&record::key(kind, url)) {
        Ok((Some(raw), Some(cas))) => (raw, cas),
        _ => return Known::default(),
    };
    if let Some(p) = cache.borrow().get(url) {
        if p.cas == cas {
            return Known {
                doc: p.known.doc.clone(),
                failed_at: p.known.failed_at,
            };
        }
    }
    let (doc, failed_at) = match record::split(&raw) {
        Some((fetched, failed, body)) => {
            let doc = fetched.and_then(|fetched_at| match parse(body) {
                Ok(value) => Some(Rc::new(Fetched { value, fetched_at })),
                Err(e) => {
                    log::warn!("openid-connect: stored provider document does not parse: {e}");
                    None
                }
            });
            (doc, failed)
        }
        None => (None, None),
    };
    cache.borrow_mut().insert(
        url.to_string(),
        Parsed {
            cas,
            known: Known {
                doc: doc.clone(),
                failed_at,
            },
        },
    );
    Known { doc, failed_at }
}
