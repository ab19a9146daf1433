//! One HTTP request: the host side of `oidc_core::exchange`. It reads the
//! route metadata and the headers, removes the client's identity headers,
//! and carries out what the core's [`Exchange`] answers (reply, pass,
//! provider call). Every decision is the core's; this file makes host calls
//! and counts.

use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use oidc_core::browser::Event;
use oidc_core::exchange::{self, Effect, Exchange, Pending, DEFAULT_REALM};
use oidc_core::http::HttpRequest;
use oidc_core::metadata::{
    version_in_route_name, CONFIG_KEY, HOSTS_KEY, NAMESPACE, VERSION_KEY, VERSION_NAMESPACE,
};
use oidc_core::provider::FetchKind;
use oidc_core::reply::{Denial, DenialReason, Reply};
use oidc_core::route::Route;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::call;
use crate::host::HostCalls;
use crate::vm::Vm;

/// The route's name, which ends with the config version when whoever
/// configures Envoy puts it there (`oidc_core::metadata::route_name`).
const ROUTE_NAME_PATH: [&str; 2] = ["xds", "route_name"];
/// Route metadata written by whoever configures Envoy (`oidc_core::metadata`).
const VERSION_PATH: [&str; 5] = [
    "xds",
    "route_metadata",
    "filter_metadata",
    VERSION_NAMESPACE,
    VERSION_KEY,
];
/// Where the version was before (still read when the above is absent).
const LEGACY_VERSION_PATH: [&str; 5] = [
    "xds",
    "route_metadata",
    "filter_metadata",
    NAMESPACE,
    VERSION_KEY,
];
const CONFIG_PATH: [&str; 5] = [
    "xds",
    "route_metadata",
    "filter_metadata",
    NAMESPACE,
    CONFIG_KEY,
];
/// The route's `hosts` as a JSON list (the version covers it).
const HOSTS_PATH: [&str; 5] = [
    "xds",
    "route_metadata",
    "filter_metadata",
    NAMESPACE,
    HOSTS_KEY,
];

pub struct Request {
    vm: Rc<Vm>,
    active: Option<Active>,
    /// `Set-Cookie` values for the upstream's response.
    set_cookies: Vec<String>,
    /// A back-channel logout request's body is awaited (at most this many
    /// bytes).
    body_limit: Option<usize>,
}

/// A request waiting for a provider call's answer.
struct Active {
    route_id: u64,
    route: Rc<Route>,
    exchange: Exchange,
    /// What the call in flight is for (`None`: no call in flight).
    pending: Option<Pending>,
}

impl Request {
    pub fn new(vm: Rc<Vm>) -> Request {
        Request {
            vm,
            active: None,
            set_cookies: Vec::new(),
            body_limit: None,
        }
    }

    fn now(&self) -> u64 {
        self.get_current_time()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn property(&self, path: &[&str]) -> Option<String> {
        self.get_property(path.to_vec())
            .and_then(|b| String::from_utf8(b).ok())
    }

    /// The route's config version: from its name, else from its metadata
    /// (the version namespace, then the older layout).
    fn version(&self) -> Option<String> {
        if let Some(name) = self.property(&ROUTE_NAME_PATH) {
            if let Some(v) = version_in_route_name(&name) {
                return Some(v.to_string());
            }
        }
        self.property(&VERSION_PATH)
            .or_else(|| self.property(&LEGACY_VERSION_PATH))
    }

    fn send(&self, reply: &Reply) -> Action {
        let headers: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.send_http_response(reply.status.into(), headers, Some(reply.body.as_bytes()));
        Action::Pause
    }

    /// Carries out what the core answered.
    fn apply(&mut self, effect: Effect) -> Action {
        match effect {
            Effect::Reply(reply, event) => {
                self.active = None;
                self.record(&event);
                self.send(&reply)
            }
            Effect::Allow(allowed) => {
                self.active = None;
                for (name, value) in &allowed.headers {
                    self.set_http_request_header(name, Some(value));
                }
                self.vm.metrics.allowed();
                Action::Continue
            }
            Effect::Forward(f) => {
                self.active = None;
                for (name, value) in f.headers.iter() {
                    self.set_http_request_header(name, Some(value));
                }
                if let Some(cookie) = &f.cookie_header {
                    let value = (!cookie.is_empty()).then_some(cookie.as_str());
                    self.set_http_request_header("cookie", value);
                }
                self.set_cookies = f.set_cookies;
                let m = &self.vm.metrics;
                if f.refreshed {
                    m.session_refreshed();
                }
                if f.signed_in {
                    m.allowed();
                } else {
                    m.passed();
                }
                Action::Continue
            }
            Effect::Fetch {
                kind, req, pending, ..
            } => {
                self.vm.metrics.fetch(kind == FetchKind::Jwks);
                self.dispatch(req, pending)
            }
            Effect::Call(req, pending) => self.dispatch(req, pending),
            Effect::ReadBody { limit } => {
                // The headers must go on for the body to come to this
                // filter: Envoy's proxy-wasm turns a `Pause` of the
                // headers into "stop all iteration", body callbacks
                // included. The router may then open the upstream request,
                // but the body stays here (`on_http_request_body` answers
                // `Pause` until the end, then a local reply), so the
                // upstream never sees the token and its request is reset.
                self.body_limit = Some(limit);
                Action::Continue
            }
        }
    }

    /// The body of a back-channel logout request, given to the core.
    fn body_read(&mut self, body: &[u8]) -> Action {
        let now = self.now();
        let vm = self.vm.clone();
        let Some(active) = self.active.as_mut() else {
            return Action::Continue;
        };
        let mut host = HostCalls {
            vm: &vm,
            route_id: active.route_id,
        };
        let effect = active.exchange.on_body(&active.route, body, &mut host, now);
        self.apply(effect)
    }

    /// Makes the provider call of a `Fetch` or `Call` effect.
    fn dispatch(&mut self, req: Box<HttpRequest>, pending: Pending) -> Action {
        let Some(active) = self.active.as_ref() else {
            // Cannot happen (an effect comes from an active exchange); a
            // request with nothing to wait for is refused, not passed.
            return self.send(&Denial::BadRouteConfig(String::new()).reply(DEFAULT_REALM));
        };
        let timeout = Duration::from_secs(active.route.config.timeout);
        self.vm.metrics.provider_call();
        match call::dispatch(self, &req, timeout) {
            Ok(_) => {
                if let Some(active) = self.active.as_mut() {
                    active.pending = Some(pending);
                }
                Action::Pause
            }
            Err(e) => {
                log::warn!(
                    "openid-connect: cannot call cluster {:?} ({e:?}); is it defined?",
                    req.cluster
                );
                self.vm.metrics.provider_failure();
                let vm = self.vm.clone();
                let Some(active) = self.active.as_mut() else {
                    return Action::Pause;
                };
                let mut host = HostCalls {
                    vm: &vm,
                    route_id: active.route_id,
                };
                let effect = active
                    .exchange
                    .not_sent(&active.route, pending, &req, &mut host);
                self.apply(effect)
            }
        }
    }

    /// Statistics and logs for a reply (never a token or a cookie).
    fn record(&self, event: &Event) {
        let m = &self.vm.metrics;
        match event {
            Event::HostCorrected | Event::Unauthenticated | Event::Forbidden => {}
            Event::LoginStarted => m.login_started(),
            Event::LoggedIn => m.login_succeeded(),
            Event::LoginFailed(why) => {
                // `why` may hold the callback's query text: {:?} escapes
                // what could forge log lines.
                log::info!("openid-connect: login failed: {why:?}");
                m.login_failed();
            }
            Event::ProviderUnavailable(why) => {
                log::warn!("openid-connect: identity provider unavailable: {why:?}");
            }
            Event::LoggedOut => m.logout(),
            Event::BackchannelLogout => m.backchannel_logout(),
            Event::BackchannelRefused(why) => {
                log::info!("openid-connect: back-channel logout refused: {why:?}");
                m.backchannel_refused();
            }
            Event::Misconfigured(why) => log::error!("openid-connect: {why:?}"),
            // The client got a generic text; the details are logged here.
            Event::Denied(denial) => match (denial, denial.detail()) {
                (_, None) => log::debug!("openid-connect: denied ({})", denial.reason()),
                (Denial::BadRouteConfig(_), Some(why)) => {
                    log::error!("openid-connect: route config unusable: {why:?}")
                }
                (_, Some(why)) => {
                    log::warn!("openid-connect: identity provider unavailable: {why:?}")
                }
            },
        }
        if let Some(reason) = event.reason() {
            m.denied(reason);
        }
    }
}

impl Context for Request {
    fn on_http_call_response(&mut self, _token: u32, headers: usize, body_size: usize, _: usize) {
        let (status, body) = call::answer(self, &self.vm.metrics, headers, body_size);
        let now = self.now();
        let vm = self.vm.clone();
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let Some(pending) = active.pending.take() else {
            return;
        };
        let mut host = HostCalls {
            vm: &vm,
            route_id: active.route_id,
        };
        let effect =
            active
                .exchange
                .on_answer(&active.route, pending, status, &body, &mut host, now);
        if let Action::Continue = self.apply(effect) {
            self.resume_http_request();
        }
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        let action = self.request_headers(num_headers);
        if self.body_limit.is_some() && end_of_stream {
            // A POST without a body: no body callback will come.
            self.body_limit = None;
            return self.body_read(&[]);
        }
        action
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(limit) = self.body_limit else {
            return Action::Continue;
        };
        if body_size > limit {
            self.body_limit = None;
            self.active = None;
            let why = "the request body is too large";
            self.record(&Event::BackchannelRefused(why.into()));
            return self.send(&oidc_core::backchannel::refused(why));
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.body_limit = None;
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        self.body_read(&body)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for cookie in std::mem::take(&mut self.set_cookies) {
            self.add_http_response_header("set-cookie", &cookie);
        }
        Action::Continue
    }
}

impl Request {
    fn request_headers(&mut self, _num_headers: usize) -> Action {
        // Routes without the plugin (an empty version, or no version at
        // all) pass untouched.
        let version = match self.version() {
            Some(v) if v.is_empty() => return Action::Continue,
            Some(v) => v,
            None => return Action::Continue,
        };
        let entry = self.vm.route(&version, || {
            (self.property(&CONFIG_PATH), self.property(&HOSTS_PATH))
        });

        // One host call for all headers (names arrive lower-cased). None
        // of the identity headers the client sent reaches the upstream
        // (the core still reads X-Access-Token from this copy).
        let headers = self.get_http_request_headers_bytes();
        for (name, _) in &headers {
            if exchange::is_identity_header(name) {
                self.set_http_request_header(name, None);
            }
        }

        let route = match &entry.route {
            Ok(r) => r.clone(),
            // Logged once per VM and config version (`Vm::route`), not here.
            Err(_) => {
                self.vm.metrics.denied(DenialReason::BadConfig);
                return self.send(&Denial::BadRouteConfig(String::new()).reply(DEFAULT_REALM));
            }
        };
        let now = self.now();
        let vm = self.vm.clone();
        let mut host = HostCalls {
            vm: &vm,
            route_id: entry.id,
        };
        let (exchange, effect) = Exchange::begin(&route, &headers, &mut host, now);
        self.active = Some(Active {
            route_id: entry.id,
            route,
            exchange,
            pending: None,
        });
        self.apply(effect)
    }
}
