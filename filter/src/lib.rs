//! The proxy-wasm adapter: turns Envoy callbacks into inputs for the
//! sans-IO core (`oidc-core`) and carries out what the core decides.
//!
//! - [`Root`] reads the listener-level settings, owns the per-VM state and,
//!   on a one-second tick, refreshes provider documents before they expire.
//! - [`request::Request`] handles one HTTP request.
//! - [`host`] answers what the core's request loop asks of the host.
//! - [`store`] keeps provider documents in shared data (one copy for all
//!   worker VMs) and a parsed copy per VM.
//! - [`revoked`] keeps the logout deny-list in shared data.
//! - [`feed`] shares logouts with every gateway through the sidecar's
//!   revocation service (posted and polled on the tick).

// A cdylib: nothing here is public, its docs are for the maintainers
// (`make lint` builds them with the private items).
#![allow(rustdoc::private_intra_doc_links)]

mod call;
mod feed;
mod host;
mod long_key;
mod metrics;
mod request;
mod revoked;
mod store;
mod vm;

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

use crate::host::HostCalls;
use crate::vm::Vm;
use oidc_core::exchange;
use oidc_core::provider::{self, FetchKind};
use oidc_core::revocation_feed;
use oidc_core::settings::Settings;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root {
            vm: None,
            refreshing: HashMap::new(),
            polling: None,
            last_refresh: 0,
        })
    });
}}

/// How often the root context looks for provider documents to refresh.
const REFRESH_TICK: Duration = Duration::from_secs(1);
/// The tick with a revocation service: posts and polls (providers are
/// still looked at once a second).
const FEED_TICK: Duration = Duration::from_millis(200);
/// A call to the revocation service gives up after this.
const FEED_TIMEOUT: Duration = Duration::from_secs(2);

struct Root {
    vm: Option<Rc<Vm>>,
    /// Background refreshes in flight: call token → (document, its URL,
    /// the "fetching since" marker this worker claimed).
    refreshing: HashMap<u32, (FetchKind, String, u64)>,
    /// The revocation poll in flight: (call token, its start in ms).
    polling: Option<(u32, u64)>,
    /// The second of the last provider refresh round.
    last_refresh: u64,
}

impl Root {
    fn now(&self) -> u64 {
        self.get_current_time()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    /// Fetches, ahead of their expiry, the documents of the providers this
    /// VM's routes use (`provider::refresh_due`), so that no request waits
    /// for them; one worker fetches each (the shared "fetching since"
    /// marker).
    fn refresh(&mut self, vm: &Vm) {
        let now = self.now();
        for (discovery, jwks_ttl, timeout) in vm.providers() {
            let docs = vm.store.documents(&discovery);
            for (kind, url) in provider::refresh_due(&discovery, &docs, jwks_ttl, vm.intervals, now)
            {
                if !vm.store.claim(kind, &url, timeout, now) {
                    continue;
                }
                let req = match provider::fetch(kind, &url) {
                    Ok(need) => need.req,
                    Err(why) => {
                        log::warn!("openid-connect: cannot refresh {url:?}: {why:?}");
                        vm.store.release(kind, &url, now);
                        continue;
                    }
                };
                match call::dispatch(self, &req, Duration::from_secs(timeout)) {
                    Ok(token) => {
                        vm.metrics.refresh(kind == FetchKind::Jwks);
                        self.refreshing.insert(token, (kind, url, now));
                    }
                    Err(e) => {
                        log::warn!(
                            "openid-connect: cannot call cluster {:?} ({e:?}); is it defined?",
                            req.cluster
                        );
                        vm.store.release(kind, &url, now);
                    }
                }
            }
        }
    }
}

impl Root {
    fn now_ms(&self) -> u64 {
        self.get_current_time()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    /// Posts this VM's queued logouts (one POST in flight at a time) and,
    /// when this worker wins the round, polls for every gateway's.
    fn feed(&mut self, vm: &Vm) {
        let Some(service) = &vm.revocation_service else {
            return;
        };
        let key = service.key.expose();
        if vm.outbox.posting.borrow().is_none() {
            let entries = vm.outbox.take(revocation_feed::MAX_PER_POST);
            if !entries.is_empty() {
                let body = revocation_feed::Post::encode(&entries);
                let headers = vec![
                    (":method", "POST"),
                    (":path", revocation_feed::PATH),
                    (":authority", "oidc-revocations"),
                    ("content-type", "application/json"),
                    (revocation_feed::KEY_HEADER, key),
                ];
                match self.dispatch_http_call(
                    &service.cluster,
                    headers,
                    Some(body.as_bytes()),
                    vec![],
                    FEED_TIMEOUT,
                ) {
                    Ok(token) => *vm.outbox.posting.borrow_mut() = Some((token, entries)),
                    Err(e) => {
                        feed::failed(&vm.outbox, &vm.metrics, &format!("cannot post ({e:?})"));
                        vm.outbox.put_back(entries);
                    }
                }
            }
        }
        let now_ms = self.now_ms();
        if self.polling.is_some() || !feed::claim_poll(now_ms) {
            return;
        }
        let path = revocation_feed::Cursor::poll_path(feed::cursor());
        let headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", "oidc-revocations"),
            (revocation_feed::KEY_HEADER, key),
        ];
        match self.dispatch_http_call(&service.cluster, headers, None, vec![], FEED_TIMEOUT) {
            Ok(token) => self.polling = Some((token, now_ms)),
            Err(e) => {
                feed::failed(&vm.outbox, &vm.metrics, &format!("cannot poll ({e:?})"));
                feed::poll_done(now_ms, false);
            }
        }
    }

    /// A revocation service answer; `false` when `token` is not one.
    fn fed(&mut self, vm: &Vm, token: u32, headers: usize, body_size: usize) -> bool {
        let posted = {
            let mut p = vm.outbox.posting.borrow_mut();
            match p.take() {
                Some((t, entries)) if t == token => Some(entries),
                other => {
                    *p = other;
                    None
                }
            }
        };
        if let Some(entries) = posted {
            let (status, _) = call::answer(self, &vm.metrics, headers, body_size);
            if status == 204 {
                feed::worked(&vm.outbox);
            } else {
                let what = format!("a post got status {status}");
                feed::failed(&vm.outbox, &vm.metrics, &what);
                // Refused (400) entries would be refused again.
                if status != 400 {
                    vm.outbox.put_back(entries);
                }
            }
            return true;
        }
        match self.polling {
            Some((t, started)) if t == token => {
                self.polling = None;
                let (status, body) = call::answer(self, &vm.metrics, headers, body_size);
                let mut again = false;
                match revocation_feed::Page::parse(status, &body, self.now()) {
                    Ok(page) => {
                        feed::worked(&vm.outbox);
                        vm.metrics.feed_received(feed::apply(&page, self.now()));
                        again = page.more;
                    }
                    Err(why) => feed::failed(&vm.outbox, &vm.metrics, &format!("poll: {why}")),
                }
                feed::poll_done(started, again);
                true
            }
            _ => false,
        }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body_size: usize, _: usize) {
        let Some(vm) = self.vm.clone() else {
            return;
        };
        if self.fed(&vm, token, headers, body_size) {
            return;
        }
        let Some((kind, url, since)) = self.refreshing.remove(&token) else {
            return;
        };
        let (status, body) = call::answer(self, &vm.metrics, headers, body_size);
        // Recorded as a request's fetch is; a failure keeps the cached copy
        // in use until the retry pause has passed.
        let mut host = HostCalls {
            vm: &vm,
            route_id: 0,
        };
        exchange::record_document(
            &mut host,
            kind,
            &url,
            Some(since),
            status,
            &body,
            self.now(),
        );
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        match Settings::parse(&raw) {
            Ok(settings) => {
                let tick = if settings.revocation_service.is_some() {
                    FEED_TICK
                } else {
                    REFRESH_TICK
                };
                self.vm = Some(Rc::new(Vm::new(settings)));
                self.set_tick_period(tick);
                true
            }
            Err(e) => {
                log::error!("openid-connect: invalid filter configuration: {e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(vm) = self.vm.clone() {
            let now = self.now();
            if now != self.last_refresh {
                self.last_refresh = now;
                self.refresh(&vm);
            }
            self.feed(&vm);
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let vm = self.vm.clone()?;
        Some(Box::new(request::Request::new(vm)))
    }
}
