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

// A cdylib: nothing here is public, its docs are for the maintainers
// (`make lint` builds them with the private items).
#![allow(rustdoc::private_intra_doc_links)]

mod call;
mod host;
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
use oidc_core::settings::Settings;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root {
            vm: None,
            refreshing: HashMap::new(),
        })
    });
}}

/// How often the root context looks for provider documents to refresh.
const REFRESH_TICK: Duration = Duration::from_secs(1);

struct Root {
    vm: Option<Rc<Vm>>,
    /// Background refreshes in flight: call token → (document, its URL,
    /// the "fetching since" marker this worker claimed).
    refreshing: HashMap<u32, (FetchKind, String, u64)>,
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

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body_size: usize, _: usize) {
        let Some((kind, url, since)) = self.refreshing.remove(&token) else {
            return;
        };
        let Some(vm) = self.vm.clone() else {
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
                self.vm = Some(Rc::new(Vm::new(settings)));
                self.set_tick_period(REFRESH_TICK);
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
            self.refresh(&vm);
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
