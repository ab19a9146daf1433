//! The proxy-wasm adapter: turns Envoy callbacks into inputs for the
//! sans-IO core (`oidc-core`) and carries out what the core decides.
//!
//! - [`Root`] reads the listener-level settings and owns the per-VM state.
//! - [`request::Request`] handles one HTTP request.
//! - [`host`] answers what the core's request loop asks of the host.
//! - [`store`] keeps provider documents in shared data (one copy for all
//!   worker VMs) and a parsed copy per VM.
//! - [`revoked`] keeps the logout deny-list in shared data.

// A cdylib: nothing here is public, its docs are for the maintainers
// (`make lint` builds them with the private items).
#![allow(rustdoc::private_intra_doc_links)]

mod host;
mod metrics;
mod request;
mod revoked;
mod store;
mod vm;

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

use crate::vm::Vm;
use oidc_core::settings::Settings;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { vm: None }) });
}}

struct Root {
    vm: Option<Rc<Vm>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        match Settings::parse(&raw) {
            Ok(settings) => {
                self.vm = Some(Rc::new(Vm::new(settings)));
                true
            }
            Err(e) => {
                log::error!("openid-connect: invalid filter configuration: {e}");
                false
            }
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
