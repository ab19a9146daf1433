//! One HTTP request: read its facts, ask the core, carry out the answer.

use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use oidc_core::bearer::{self, Allowed, Decision, FetchKind};
use oidc_core::browser::{BrowserRequest, Entropy, Event, Flow, Forward, Step};
use oidc_core::http::{HttpRequest, MAX_RESPONSE_BODY};
use oidc_core::metadata::{CONFIG_KEY, HOSTS_KEY, NAMESPACE, VERSION_KEY, VERSION_NAMESPACE};
use oidc_core::reply::{Denial, DenialReason, Reply};
use oidc_core::route::Route;
use oidc_core::session;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::revoked;
use crate::store::{parse_discovery, parse_jwks};
use crate::vm::{RouteEntry, Vm};

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

/// Identity headers only this filter may set: a client's own values never
/// reach the upstream, nor do their spellings with `_` for `-` (an upstream
/// may read `X_Userinfo` as `X-Userinfo`, as CGI does).
const IDENTITY_HEADERS: [&str; 5] = [
    "x-access-token",
    "x-userinfo",
    "x-id-token",
    "x-raw-id-token",
    "x-refresh-token",
];

/// Whether a request header name is one of [`IDENTITY_HEADERS`], in any
/// case, with `_` taken as `-`.
fn is_identity_header(name: &str) -> bool {
    IDENTITY_HEADERS.iter().any(|h| {
        h.len() == name.len()
            && h.bytes().zip(name.bytes()).all(|(h, n)| {
                let n = n.to_ascii_lowercase();
                n == h || (h == b'-' && n == b'_')
            })
    })
}

/// Logs and counts a refreshed ID token the flow refused (the session
/// ended).
fn refused_refresh(vm: &Vm, flow: &mut Flow) {
    if let Some(why) = flow.take_rejected_refresh() {
        log::warn!("openid-connect: refreshed ID token refused, session ended: {why:?}");
        vm.metrics.session_refresh_refused();
    }
}

/// Whether Envoy takes `v` as a header value: no control characters but
/// tab.
fn header_value_ok(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Provider calls one request may make before it is answered 503 (a login
/// callback may need discovery, token, JWKS twice and userinfo).
const MAX_CALLS: u8 = 6;

/// Realm for replies on a route whose config cannot be read.
const DEFAULT_REALM: &str = "apisix";

pub struct Request {
    vm: Rc<Vm>,
    active: Option<Active>,
    /// `Set-Cookie` values for the upstream's response.
    set_cookies: Vec<String>,
}

/// A request waiting for the core's verdict.
struct Active {
    entry: Rc<RouteEntry>,
    kind: Kind,
    waiting: Waiting,
    calls: u8,
    /// Documents another request is fetching: use the cached copy
    /// (`ProviderState::*_in_flight`).
    held_discovery: bool,
    held_jwks: bool,
    /// Whether the token's `kid` was looked up among the remembered
    /// unknown ones.
    kid_checked: bool,
}

impl Active {
    fn new(entry: Rc<RouteEntry>, kind: Kind) -> Active {
        Active {
            entry,
            kind,
            waiting: Waiting::Nothing,
            calls: 0,
            held_discovery: false,
            held_jwks: false,
            kid_checked: false,
        }
    }
}

/// What the core answered: a bearer decision or a browser step.
enum Next {
    Decision(Decision),
    Step(Step),
}

enum Kind {
    /// A bearer token being checked.
    Bearer {
        token: String,
        addon_headers: Vec<(String, String)>,
    },
    /// A browser request on a login route.
    Browser(Box<Flow>),
}

enum Waiting {
    Nothing,
    /// A provider document at this URL; `Some(since)`: this request holds
    /// the "fetching since" marker and clears it on the answer.
    Document(FetchKind, String, Option<u64>),
    /// The answer to a call the core made (introspection, token, ...).
    Answer,
}

/// The host's CSPRNG (WASI `random_get`).
struct HostRandom;

impl Entropy for HostRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), String> {
        getrandom::fill(buf).map_err(|e| e.to_string())
    }
}

impl Request {
    pub fn new(vm: Rc<Vm>) -> Request {
        Request {
            vm,
            active: None,
            set_cookies: Vec::new(),
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

    fn send(&self, reply: &Reply) -> Action {
        let headers: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.send_http_response(reply.status.into(), headers, Some(reply.body.as_bytes()));
        Action::Pause
    }

    fn deny(&self, denial: Denial, realm: &str) -> Action {
        // The client gets a generic text; the details are logged here.
        match (&denial, denial.detail()) {
            (_, None) => log::debug!("openid-connect: denied ({})", denial.reason()),
            (Denial::BadRouteConfig(_), Some(why)) => {
                log::error!("openid-connect: route config unusable: {why:?}")
            }
            (_, Some(why)) => log::warn!("openid-connect: identity provider unavailable: {why:?}"),
        }
        self.vm.metrics.denied(denial.reason());
        self.send(&denial.reply(realm))
    }

    fn allow(&self, allowed: &Allowed) -> Action {
        for (name, value) in &allowed.headers {
            self.set_http_request_header(name, Some(value));
        }
        self.vm.metrics.allowed();
        Action::Continue
    }

    /// Asks the core until it answers or needs a provider call. A fetch of
    /// a document that another request (of any worker) is fetching now is
    /// not made while a copy is cached: the core decides again with that
    /// copy.
    fn run(&mut self) -> Action {
        loop {
            let now = self.now();
            let Some(active) = self.active.as_mut() else {
                return Action::Continue;
            };
            let entry = active.entry.clone();
            let Ok(route) = &entry.route else {
                return Action::Continue;
            };
            let vm = &self.vm;
            let provider = vm.store.provider(&route.config.discovery);
            let mut state = provider.state();
            let mut unknown_kid = None;
            let next = match &mut active.kind {
                Kind::Bearer {
                    token,
                    addon_headers,
                } => {
                    // A kid the provider lately did not have: no refetch.
                    // (Only where keys come from the JWKS.)
                    let uses_jwks = route.config.use_jwks && route.public_keys.is_none();
                    if uses_jwks && !active.kid_checked {
                        active.kid_checked = true;
                        if let (Some(uri), true) =
                            (&provider.jwks_uri, provider.has(FetchKind::Jwks))
                        {
                            if bearer::unverified_kid(token)
                                .is_some_and(|kid| vm.kid_unknown(uri, &kid, now))
                            {
                                vm.metrics.unknown_kid_remembered();
                                active.held_jwks = true;
                            }
                        }
                    }
                    state.discovery_in_flight = active.held_discovery;
                    state.jwks_in_flight = active.held_jwks;
                    let decision = bearer::decide(route, token, &state, addon_headers, now);
                    if let (true, Decision::Deny(_), Some(uri), Some(jwks)) =
                        (uses_jwks, &decision, &provider.jwks_uri, state.jwks)
                    {
                        unknown_kid = bearer::kid_unknown_after_refetch(token, jwks, now)
                            .map(|kid| (uri.clone(), kid));
                    }
                    Next::Decision(decision)
                }
                Kind::Browser(flow) => {
                    state.discovery_in_flight = active.held_discovery;
                    state.jwks_in_flight = active.held_jwks;
                    let step = flow.advance(route, &state, &mut HostRandom, now);
                    refused_refresh(vm, flow);
                    Next::Step(step)
                }
            };
            if let Some((uri, kid)) = unknown_kid {
                vm.remember_unknown_kid(&uri, kid, now.saturating_add(bearer::UNKNOWN_KID_TTL));
            }
            let (kind, req, url) = match next {
                Next::Decision(Decision::Fetch(kind, req)) => {
                    let url = match kind {
                        FetchKind::Discovery => route.config.discovery.clone(),
                        FetchKind::Jwks => provider.jwks_uri.clone().unwrap_or_default(),
                    };
                    (kind, req, url)
                }
                Next::Step(Step::Fetch(kind, url, req)) => (kind, req, url),
                Next::Decision(d) => return self.on_decision(d, route, now),
                Next::Step(step) => return self.on_step(step, route),
            };
            let since = vm
                .store
                .claim(kind, &url, route.config.timeout, now)
                .then_some(now);
            let held = match kind {
                FetchKind::Discovery => &mut active.held_discovery,
                FetchKind::Jwks => &mut active.held_jwks,
            };
            if since.is_none() && !*held && provider.has(kind) {
                *held = true;
                vm.metrics.fetch_held();
                continue;
            }
            // This request fetches (or, with nothing cached, fetches even
            // though another request does too: a cold start, bounded by
            // the provider cluster's circuit breakers).
            vm.metrics.fetch(kind == FetchKind::Jwks);
            return self.call(*req, Waiting::Document(kind, url, since), route);
        }
    }

    /// A decision other than a fetch (`run` makes those).
    fn on_decision(&mut self, decision: Decision, route: &Route, now: u64) -> Action {
        match decision {
            Decision::Allow(a) => self.accept(a, now),
            Decision::Deny(d) => self.deny(d, &route.config.realm),
            Decision::Introspect(req) => self.call(*req, Waiting::Answer, route),
            Decision::Fetch(..) => self.deny(
                Denial::ProviderUnavailable("unexpected fetch".into()),
                &route.config.realm,
            ),
        }
    }

    fn on_step(&mut self, step: Step, route: &Route) -> Action {
        match step {
            Step::Respond(reply, event) => {
                self.record(&event);
                self.send(&reply)
            }
            Step::Forward(f) => self.forward(f),
            Step::Fetch(kind, url, req) => {
                self.call(*req, Waiting::Document(kind, url, None), route)
            }
            Step::Call(req) => self.call(*req, Waiting::Answer, route),
        }
    }

    /// Statistics and logs for a browser reply (never a token or a cookie).
    fn record(&self, event: &Event) {
        let m = &self.vm.metrics;
        match event {
            Event::HostCorrected => {}
            Event::LoginStarted => m.login_started(),
            Event::LoggedIn => m.login_succeeded(),
            Event::LoginFailed(why) => {
                // `why` may hold the callback's query text: {:?} escapes
                // what could forge log lines.
                log::info!("openid-connect: login failed: {why:?}");
                m.login_failed();
            }
            Event::Unauthenticated => m.denied(DenialReason::Unauthenticated),
            Event::Forbidden => m.denied(DenialReason::InsufficientScope),
            Event::ProviderUnavailable(why) => {
                log::warn!("openid-connect: identity provider unavailable: {why:?}");
                m.denied(DenialReason::ProviderUnavailable);
            }
            Event::LoggedOut => m.logout(),
            Event::Misconfigured(why) => {
                log::error!("openid-connect: {why:?}");
                m.denied(DenialReason::BadConfig);
            }
        }
    }

    fn forward(&mut self, f: Forward) -> Action {
        // The core checks what the provider sent; this is the last guard
        // before the host call, which would panic (and take the VM down) on
        // a value Envoy refuses.
        if f.headers.iter().any(|(_, v)| !header_value_ok(v)) {
            return self.deny(
                Denial::ProviderUnavailable("an identity header value is not valid".into()),
                DEFAULT_REALM,
            );
        }
        for (name, value) in &f.headers {
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

    fn accept(&mut self, allowed: Allowed, now: u64) -> Action {
        let allowed = Rc::new(allowed);
        if let Some(Active {
            entry,
            kind: Kind::Bearer { token, .. },
            ..
        }) = self.active.take()
        {
            self.vm.cache_token((entry.id, token), allowed.clone(), now);
        }
        self.allow(&allowed)
    }

    fn call(&mut self, req: HttpRequest, waiting: Waiting, route: &Route) -> Action {
        let realm = &route.config.realm;
        let Some(active) = self.active.as_mut() else {
            return Action::Continue;
        };
        active.calls += 1;
        if active.calls > MAX_CALLS {
            self.release(&waiting);
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
                if let Some(active) = self.active.as_mut() {
                    active.waiting = waiting;
                }
                Action::Pause
            }
            Err(e) => {
                log::warn!(
                    "openid-connect: cannot call cluster {:?} ({e:?}); is it defined?",
                    req.cluster
                );
                self.vm.metrics.provider_failure();
                self.release(&waiting);
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

    /// Clears the "fetching since" marker a document call holds.
    fn release(&self, waiting: &Waiting) {
        if let Waiting::Document(kind, url, Some(since)) = waiting {
            self.vm.store.release(*kind, url, *since);
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

    /// The answer to a call the core asked for.
    fn on_answer(&mut self, status: u16, body: &[u8]) -> Action {
        if status != 200 {
            self.vm.metrics.provider_failure();
        }
        let now = self.now();
        let Some(active) = self.active.as_mut() else {
            return Action::Continue;
        };
        let entry = active.entry.clone();
        let Ok(route) = &entry.route else {
            return Action::Continue;
        };
        match &mut active.kind {
            Kind::Bearer { token, .. } => {
                if let Some(until) = bearer::refused_until(route, token, status, body, now) {
                    let key = (entry.id, bearer::token_digest(token));
                    self.vm.remember_refusal(key, until);
                }
                match bearer::introspected(route, token, status, body, now) {
                    Decision::Allow(a) => self.accept(a, now),
                    Decision::Deny(d) => self.deny(d, &route.config.realm),
                    // `introspected` only allows or denies.
                    _ => self.deny(
                        Denial::ProviderUnavailable("unexpected introspection outcome".into()),
                        &route.config.realm,
                    ),
                }
            }
            Kind::Browser(flow) => {
                let provider = self.vm.store.provider(&route.config.discovery);
                let step =
                    flow.on_response(route, &provider.state(), status, body, &mut HostRandom, now);
                refused_refresh(&self.vm, flow);
                self.on_step(step, route)
            }
        }
    }
}

impl Context for Request {
    fn on_http_call_response(&mut self, _token: u32, headers: usize, body_size: usize, _: usize) {
        // A call that failed without a response (connection reset, stream
        // error) arrives with no headers; asking for them then makes the
        // host answer BadArgument, which the SDK turns into a panic that
        // would take the whole VM down. Status 0 means "no answer".
        // A body over the cap is not read: the call counts as failed
        // (status 0), like one that got no answer.
        let too_big = body_size > MAX_RESPONSE_BODY;
        if too_big {
            log::warn!(
                "openid-connect: a provider answer of {body_size} bytes is over the \
                 {MAX_RESPONSE_BODY}-byte cap; the call counts as failed"
            );
            // (Counted as a failure where status 0 is handled.)
            self.vm.metrics.body_too_large();
        }
        let status = if headers == 0 || too_big {
            0
        } else {
            self.get_http_call_response_header_bytes(":status")
                .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u16>().ok())
                .unwrap_or(0)
        };
        let body = if headers == 0 || body_size == 0 || too_big {
            Vec::new()
        } else {
            self.get_http_call_response_body(0, body_size)
                .unwrap_or_default()
        };
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let action = match std::mem::replace(&mut active.waiting, Waiting::Nothing) {
            Waiting::Nothing => return,
            Waiting::Document(kind, url, since) => {
                if let Some(since) = since {
                    self.vm.store.release(kind, &url, since);
                }
                self.on_document(kind, &url, status, &body);
                self.run()
            }
            Waiting::Answer => self.on_answer(status, &body),
        };
        if let Action::Continue = action {
            self.resume_http_request();
        }
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Routes without the metadata pass untouched.
        let version = match self.property(&VERSION_PATH) {
            Some(v) if v.is_empty() => return Action::Continue,
            Some(v) => v,
            None => match self.property(&LEGACY_VERSION_PATH) {
                Some(v) => v,
                None => return Action::Continue,
            },
        };
        let entry = self.vm.route(&version, || {
            (self.property(&CONFIG_PATH), self.property(&HOSTS_PATH))
        });

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
        for (name, _) in &headers {
            if is_identity_header(name) {
                self.set_http_request_header(name, None);
            }
        }

        let route = match &entry.route {
            Ok(r) => r,
            // Logged once per VM and config version (`Vm::route`), not here.
            Err(_) => {
                self.vm.metrics.denied(DenialReason::BadConfig);
                return self.send(&Denial::BadRouteConfig(String::new()).reply(DEFAULT_REALM));
            }
        };
        let c = &route.config;
        let token = if c.checks_bearer_tokens() {
            let Ok(authorization) = header("authorization") else {
                return self.deny(Denial::MalformedAuthorization, &c.realm);
            };
            match bearer::extract_token(authorization.as_deref(), x_access_token.as_deref()) {
                Ok(t) => t.map(str::to_string),
                Err(d) => return self.deny(d, &c.realm),
            }
        } else {
            None
        };
        let Some(token) = token else {
            if c.bearer_only {
                return self.deny(Denial::NoToken, &c.realm);
            }
            // The browser side: session, login, callback, logout.
            let text = |name: &str| header(name).ok().flatten();
            let cookies = headers
                .iter()
                .filter(|(k, _)| k == "cookie")
                .filter_map(|(_, v)| std::str::from_utf8(v).ok())
                .flat_map(session::parse_cookie_header)
                .collect();
            // Envoy's `:scheme`: the connection's, or a trusted proxy's
            // X-Forwarded-Proto (Envoy's use_remote_address and
            // xff_num_trusted_hops decide; the sidecar sets them).
            let scheme = text(":scheme").unwrap_or_else(|| "http".into());
            let req = BrowserRequest {
                scheme,
                host: text(":authority").unwrap_or_default(),
                path: text(":path").unwrap_or_else(|| "/".into()),
                accept: text("accept"),
                cookies,
            };
            let now = self.now();
            let vm = &self.vm;
            let mut flow = match (&c.session, &route.session_key) {
                (Some(cfg), Some(key)) => {
                    let id = entry.id;
                    Flow::begin_with(route, req, now, &mut |value| {
                        let s = vm.unseal(id, key, &cfg.cookie_name, value)?;
                        // A session that logged out is no session, whoever
                        // kept a copy of its cookie.
                        if revoked::is_revoked(&s.id, now) {
                            vm.metrics.session_revoked_refused();
                            return Err(session::SessionError::Revoked);
                        }
                        Ok(s)
                    })
                }
                _ => Flow::begin(route, req, now),
            };
            if let Some(r) = flow.take_revocation() {
                match revoked::revoke(r, now) {
                    revoked::Outcome::Stored { evicted } => {
                        vm.metrics.session_revoked();
                        if evicted {
                            vm.metrics.session_revocation_evicted();
                        }
                    }
                    revoked::Outcome::Failed => {
                        log::warn!("openid-connect: cannot record a logout on the deny-list");
                        vm.metrics.session_revocation_failed();
                    }
                }
            }
            self.active = Some(Active::new(entry.clone(), Kind::Browser(Box::new(flow))));
            return self.run();
        };

        let now = self.now();
        // The key owns the token for the lookup; no copy is made.
        let key = (entry.id, token);
        if let Some(allowed) = self.vm.cached_token(&key, now) {
            self.vm.metrics.cache_hit();
            return self.allow(&allowed);
        }
        let (_, token) = key;
        self.vm.metrics.cache_miss();
        // A token the introspection endpoint refused a moment ago is
        // refused again without asking.
        if !c.verifies_locally()
            && self
                .vm
                .refused(&(entry.id, bearer::token_digest(&token)), now)
        {
            self.vm.metrics.refusal_remembered();
            return self.deny(Denial::InvalidToken("token is not active".into()), &c.realm);
        }
        let addon_headers = c
            .introspection_addon_headers
            .iter()
            .filter_map(|name| Some((name.clone(), header(name).ok()??)))
            .collect();
        self.active = Some(Active::new(
            entry.clone(),
            Kind::Bearer {
                token,
                addon_headers,
            },
        ));
        self.run()
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for cookie in std::mem::take(&mut self.set_cookies) {
            self.add_http_response_header("set-cookie", &cookie);
        }
        Action::Continue
    }
}
