//! One HTTP request: read its facts, ask the core, carry out the answer.

use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use oidc_core::bearer::{self, Allowed, Decision, FetchKind, ProviderState};
use oidc_core::config::UnauthAction;
use oidc_core::http::HttpRequest;
use oidc_core::reply::Denial;
use oidc_core::route::Route;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::store::{parse_discovery, parse_jwks};
use crate::vm::{RouteEntry, Vm};

/// Route metadata written by whoever configures Envoy (see ARCHITECTURE.md).
const VERSION_PATH: [&str; 5] = [
    "xds",
    "route_metadata",
    "filter_metadata",
    "openid-connect",
    "version",
];
const CONFIG_PATH: [&str; 5] = [
    "xds",
    "route_metadata",
    "filter_metadata",
    "openid-connect",
    "config",
];

/// Identity headers only this filter may set: a client's own values never
/// reach the upstream.
const IDENTITY_HEADERS: [&str; 5] = [
    "x-access-token",
    "x-userinfo",
    "x-id-token",
    "x-raw-id-token",
    "x-refresh-token",
];

/// Provider calls one request may make before it is answered 503.
const MAX_CALLS: u8 = 4;

/// Realm for replies on a route whose config cannot be read.
const DEFAULT_REALM: &str = "apisix";

pub struct Request {
    vm: Rc<Vm>,
    check: Option<Check>,
}

/// A token being checked.
struct Check {
    entry: Rc<RouteEntry>,
    token: String,
    cache_key: String,
    addon_headers: Vec<(String, String)>,
    waiting: Waiting,
    calls: u8,
}

enum Waiting {
    Nothing,
    /// A provider document at this URL.
    Document(FetchKind, String),
    Introspection,
}

impl Request {
    pub fn new(vm: Rc<Vm>) -> Request {
        Request { vm, check: None }
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

    fn deny(&self, denial: Denial, realm: &str) -> Action {
        log::debug!("openid-connect: denied ({})", denial.reason());
        self.vm.metrics.denied(denial.reason());
        let reply = denial.reply(realm);
        let headers: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.send_http_response(reply.status.into(), headers, Some(reply.body.as_bytes()));
        Action::Pause
    }

    fn allow(&self, allowed: &Allowed) -> Action {
        for (name, value) in &allowed.headers {
            self.set_http_request_header(name, Some(value));
        }
        self.vm.metrics.allowed();
        Action::Continue
    }

    /// No usable token: what the route does with unauthenticated requests.
    fn unauthenticated(&self, route: &Route) -> Action {
        let c = &route.config;
        if c.bearer_only {
            return self.deny(Denial::NoToken, &c.realm);
        }
        match c.unauth_action {
            UnauthAction::Pass => {
                self.vm.metrics.passed();
                Action::Continue
            }
            // Browser login comes with the authorization-code flow; until
            // then every unauthenticated request is refused.
            UnauthAction::Auth | UnauthAction::Deny => self.deny(Denial::Unauthenticated, &c.realm),
        }
    }

    /// Asks the core until it allows, denies, or needs a provider call.
    fn run(&mut self) -> Action {
        let now = self.now();
        let Some(check) = self.check.as_mut() else {
            return Action::Continue;
        };
        let entry = check.entry.clone();
        let Ok(route) = &entry.route else {
            return Action::Continue;
        };
        let store = &self.vm.store;
        let discovery = store.discovery(&route.config.discovery);
        let jwks_uri = discovery
            .doc
            .as_ref()
            .and_then(|d| d.value.jwks_uri.clone());
        let jwks = jwks_uri.as_deref().map(|u| store.jwks(u));
        let state = ProviderState {
            discovery: discovery.doc.as_deref(),
            jwks: jwks.as_ref().and_then(|j| j.doc.as_deref()),
            discovery_failed_at: discovery.failed_at,
            jwks_failed_at: jwks.as_ref().and_then(|j| j.failed_at),
        };
        let decision = bearer::decide(route, &check.token, &state, &check.addon_headers, now);
        match decision {
            Decision::Allow(a) => self.accept(a, now),
            Decision::Deny(d) => self.deny(d, &route.config.realm),
            Decision::Fetch(kind, req) => {
                let url = match kind {
                    FetchKind::Discovery => route.config.discovery.clone(),
                    FetchKind::Jwks => jwks_uri.unwrap_or_default(),
                };
                self.call(*req, Waiting::Document(kind, url), route)
            }
            Decision::Introspect(req) => self.call(*req, Waiting::Introspection, route),
        }
    }

    fn accept(&mut self, allowed: Allowed, now: u64) -> Action {
        let allowed = Rc::new(allowed);
        if let Some(check) = self.check.take() {
            self.vm.cache_token(check.cache_key, allowed.clone(), now);
        }
        self.allow(&allowed)
    }

    fn call(&mut self, req: HttpRequest, waiting: Waiting, route: &Route) -> Action {
        let realm = &route.config.realm;
        let Some(check) = self.check.as_mut() else {
            return Action::Continue;
        };
        check.calls += 1;
        let calls = check.calls;
        if calls > MAX_CALLS {
            return self.deny(
                Denial::ProviderUnavailable("too many provider calls for one request".into()),
                realm,
            );
        }
        let mut headers: Vec<(&str, &str)> = vec![
            (":method", req.method),
            (":path", &req.path),
            (":authority", &req.authority),
        ];
        headers.extend(req.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let timeout = Duration::from_secs(route.config.timeout);
        self.vm.metrics.provider_call();
        match self.dispatch_http_call(&req.cluster, headers, req.body.as_deref(), vec![], timeout) {
            Ok(_) => {
                if let Some(check) = self.check.as_mut() {
                    check.waiting = waiting;
                }
                Action::Pause
            }
            Err(e) => {
                log::warn!(
                    "openid-connect: cannot call cluster {:?} ({e:?}); is it defined?",
                    req.cluster
                );
                self.vm.metrics.provider_failure();
                self.deny(
                    Denial::NoProviderCluster {
                        host: req.authority.clone(),
                        cluster: req.cluster.clone(),
                    },
                    realm,
                )
            }
        }
    }

    fn on_document(&mut self, kind: FetchKind, url: &str, status: u16, body: &[u8]) {
        let now = self.now();
        let parsed = if status != 200 {
            Err(format!("HTTP status {status}"))
        } else {
            match kind {
                FetchKind::Discovery => parse_discovery(url, body).map(|_| ()),
                FetchKind::Jwks => parse_jwks(body).map(|_| ()),
            }
        };
        match parsed {
            Ok(()) => self.vm.store.save(kind, url, body, now),
            Err(e) => {
                log::warn!("openid-connect: provider call for {kind:?} at {url} failed: {e}");
                self.vm.metrics.provider_failure();
                self.vm.store.mark_failed(kind, url, now);
            }
        }
    }
}

impl Context for Request {
    fn on_http_call_response(&mut self, _token: u32, _headers: usize, body_size: usize, _: usize) {
        let status = self
            .get_http_call_response_header_bytes(":status")
            .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u16>().ok())
            .unwrap_or(0);
        let body = self
            .get_http_call_response_body(0, body_size)
            .unwrap_or_default();
        let Some(check) = self.check.as_mut() else {
            return;
        };
        let waiting = std::mem::replace(&mut check.waiting, Waiting::Nothing);
        let action = match waiting {
            Waiting::Nothing => return,
            Waiting::Document(kind, url) => {
                self.on_document(kind, &url, status, &body);
                self.run()
            }
            Waiting::Introspection => {
                let entry = check.entry.clone();
                let token = std::mem::take(&mut check.token);
                let Ok(route) = &entry.route else { return };
                if status != 200 {
                    self.vm.metrics.provider_failure();
                }
                let now = self.now();
                match bearer::introspected(route, &token, status, &body, now) {
                    Decision::Allow(a) => self.accept(a, now),
                    Decision::Deny(d) => self.deny(d, &route.config.realm),
                    // `introspected` only allows or denies.
                    _ => self.deny(
                        Denial::ProviderUnavailable("unexpected introspection outcome".into()),
                        &route.config.realm,
                    ),
                }
            }
        };
        if let Action::Continue = action {
            self.resume_http_request();
        }
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Routes without the metadata pass untouched.
        let Some(version) = self.property(&VERSION_PATH) else {
            return Action::Continue;
        };
        let entry = self.vm.route(&version, || self.property(&CONFIG_PATH));

        // One host call for all headers (names arrive lower-cased); values
        // that are not UTF-8 count as absent, or as malformed for
        // `Authorization`.
        let headers = self.get_http_request_headers_bytes();
        let header = |name: &str| -> Result<Option<String>, ()> {
            match headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
                None => Ok(None),
                Some((_, v)) => String::from_utf8(v.clone()).map(Some).map_err(|_| ()),
            }
        };

        // The client's X-Access-Token may carry the token (as in APISIX),
        // but none of the identity headers it sent reaches the upstream.
        let x_access_token = header("x-access-token").ok().flatten();
        for h in IDENTITY_HEADERS {
            if headers.iter().any(|(k, _)| k == h) {
                self.set_http_request_header(h, None);
            }
        }

        let route = match &entry.route {
            Ok(r) => r,
            Err(e) => return self.deny(Denial::BadRouteConfig(e.clone()), DEFAULT_REALM),
        };
        let c = &route.config;
        if !c.checks_bearer_tokens() {
            return self.unauthenticated(route);
        }
        let Ok(authorization) = header("authorization") else {
            return self.deny(Denial::MalformedAuthorization, &c.realm);
        };
        let token = match bearer::extract_token(authorization.as_deref(), x_access_token.as_deref())
        {
            Ok(Some(t)) => t.to_string(),
            Ok(None) => return self.unauthenticated(route),
            Err(d) => return self.deny(d, &c.realm),
        };

        let now = self.now();
        let cache_key = format!("{}:{token}", entry.id);
        if let Some(allowed) = self.vm.cached_token(&cache_key, now) {
            self.vm.metrics.cache_hit();
            return self.allow(&allowed);
        }
        self.vm.metrics.cache_miss();
        let addon_headers = c
            .introspection_addon_headers
            .iter()
            .filter_map(|name| Some((name.clone(), header(name).ok()??)))
            .collect();
        self.check = Some(Check {
            entry: entry.clone(),
            token,
            cache_key,
            addon_headers,
            waiting: Waiting::Nothing,
            calls: 0,
        });
        self.run()
    }
}
