//! One request, from its headers to its outcome: the single entry point the
//! adapter, the core's tests and the fuzz targets drive.
//!
//! [`Exchange::begin`] reads the request's headers, chooses the bearer or
//! the browser side, and returns the first [`Effect`]. The caller then
//! loops: `Reply`, `Allow` and `Forward` end the request; `Fetch` and `Call`
//! are provider calls whose answers go back through
//! [`Exchange::on_answer`] with the [`Pending`] token the effect carried,
//! which gives the next effect. The caller owns only the host's mechanics
//! (shared data, caches, the HTTP call); every decision about whether a
//! request may pass is made here, through the [`Host`] trait for what the
//! core cannot know by itself.
//!
//! The loop ends: each side asks a document only until it is fresh or
//! recently failed, and at most [`MAX_CALLS`] provider calls are made per
//! request.

use std::rc::Rc;

use crate::backchannel;
use crate::bearer::{self, Allowed, Decision};
use crate::browser::{BrowserRequest, Entropy, Event, Flow, Forward, Step};
use crate::http::HttpRequest;
use crate::login::LoginRoute;
use crate::provider::{self, record, Documents, FetchKind, Intervals};
use crate::reply::{Denial, Reply};
use crate::revocation::{subjects, Revocation};
use crate::route::Route;
use crate::session::{self, Session, SessionError, SessionId, SessionKey};

/// Provider calls one request may make before it is answered 503 (a login
/// callback may need discovery, token, JWKS twice and userinfo).
pub const MAX_CALLS: u8 = 6;

/// Realm for replies on a route whose config cannot be read.
pub const DEFAULT_REALM: &str = "apisix";

/// Identity headers only this filter may set: a client's own values never
/// reach the upstream, nor do their spellings with `_` for `-` (an upstream
/// may read `X_Userinfo` as `X-Userinfo`, as CGI does).
pub const IDENTITY_HEADERS: [&str; 5] = [
    "x-access-token",
    "x-userinfo",
    "x-id-token",
    "x-raw-id-token",
    "x-refresh-token",
];

/// Whether a request header name is one of [`IDENTITY_HEADERS`], in any
/// case, with `_` taken as `-`: the caller removes these before anything
/// else.
pub fn is_identity_header(name: &str) -> bool {
    IDENTITY_HEADERS.iter().any(|h| {
        h.len() == name.len()
            && h.bytes().zip(name.bytes()).all(|(h, n)| {
                let n = n.to_ascii_lowercase();
                n == h || (h == b'-' && n == b'_')
            })
    })
}

/// The request's headers as the host gives them (names lower-case, values
/// as bytes: a value that is not UTF-8 counts as absent, or as malformed
/// for `Authorization`).
pub type Headers = [(String, Vec<u8>)];

/// What the core asks of the host: stored provider documents, the per-VM
/// memories, the session deny-list, random bytes, and where notes for the
/// counters and the log go. The memories have "remember nothing" defaults.
pub trait Host: Entropy {
    /// What is stored about the provider of this discovery URL.
    fn documents(&mut self, discovery_url: &str) -> Documents;
    /// The wall-clock rules' intervals (the listener settings).
    fn intervals(&self) -> Intervals {
        Intervals::default()
    }
    /// The stored record of a document ([`record`]'s format).
    fn read_document(&mut self, kind: FetchKind, url: &str) -> Option<Vec<u8>>;
    /// Stores a document record ([`record::fetched`] / [`record::failed`]).
    fn write_document(&mut self, kind: FetchKind, url: &str, record: &[u8]);
    /// Marks a fetch of the document as in flight since `now`, unless
    /// another one is ([`provider::fetch_in_flight`] with `timeout`).
    /// `true`: this request fetches and the core releases the marker.
    fn claim(&mut self, kind: FetchKind, url: &str, timeout: u64, now: u64) -> bool;
    /// Clears the marker claimed at `since` (not a newer one).
    fn release(&mut self, kind: FetchKind, url: &str, since: u64);

    /// A token accepted on this route before and still valid at `now`. The
    /// token is handed over for the lookup and back on a miss (no copy).
    fn cached_token(&mut self, token: String, now: u64) -> Result<Rc<Allowed>, String> {
        let _ = now;
        Err(token)
    }
    /// Remembers an accepted token (until `allowed.cache_until`).
    fn cache_token(&mut self, token: String, allowed: Rc<Allowed>, now: u64) {
        let _ = (token, allowed, now);
    }
    /// Whether the introspection endpoint lately refused the token with
    /// this digest on this route.
    fn refused(&mut self, digest: &[u8; 32], now: u64) -> bool {
        let _ = (digest, now);
        false
    }
    /// Remembers a refused token until `until`.
    fn remember_refusal(&mut self, digest: [u8; 32], until: u64) {
        let _ = (digest, until);
    }
    /// Whether `kid` was lately unknown in the JWKS at `jwks_uri` after a
    /// refetch.
    fn kid_unknown(&mut self, jwks_uri: &str, kid: &str, now: u64) -> bool {
        let _ = (jwks_uri, kid, now);
        false
    }
    /// Remembers an unknown `kid` until `until`.
    fn remember_unknown_kid(&mut self, jwks_uri: &str, kid: String, until: u64) {
        let _ = (jwks_uri, kid, until);
    }
    /// Opens a sealed session value (a caller may answer from a cache, the
    /// same `Rc` each time: it keeps the session's upstream headers, see
    /// [`crate::session::HeaderMemo`]; a cache must be per route).
    fn unseal(
        &mut self,
        key: &SessionKey,
        name: &str,
        value: &str,
    ) -> Result<Rc<Session>, SessionError> {
        session::unseal(key, name, value).map(Rc::new)
    }
    /// Why session `s` is over on this gateway: it logged out (the
    /// deny-list), or the provider ended it (a back-channel logout);
    /// `None`: neither. The default asks [`Host::revoked`],
    /// [`Host::subject_keys`] and [`Host::logged_out`] ([`ended_by_lists`]);
    /// a host may remember a session found on neither list for as long as
    /// the lists have not changed since (never longer).
    fn session_ended(&mut self, s: &Session, now: u64) -> Option<Note<'static>> {
        ended_by_lists(self, s, now)
    }
    /// Whether the session logged out (the deny-list).
    fn revoked(&mut self, id: &SessionId, now: u64) -> bool {
        let _ = (id, now);
        false
    }
    /// Puts a logged-out session on the deny-list.
    fn revoke(&mut self, r: Revocation, now: u64) {
        let _ = (r, now);
    }
    /// The keys a back-channel logout can name the session by
    /// ([`subjects::keys_of`]: two SHA-256s; a host may keep them by
    /// session id, made at login and never reused).
    fn subject_keys(&mut self, s: &Session) -> Vec<[u8; 16]> {
        subjects::keys_of(s).collect()
    }
    /// Whether a back-channel logout ended the sessions with `key` made at
    /// or before `created_at` ([`subjects`]).
    fn logged_out(&mut self, key: &[u8; 16], created_at: u64, now: u64) -> bool {
        let _ = (key, created_at, now);
        false
    }
    /// Puts a back-channel logout on its deny-list.
    fn log_out(&mut self, r: subjects::Revocation, now: u64) {
        let _ = (r, now);
    }
    /// Remembers a logout token's `jti` key until `until`: `false` when it
    /// is already remembered (a replay).
    fn first_use(&mut self, jti: [u8; 16], until: u64, now: u64) -> bool {
        let _ = (jti, until, now);
        true
    }
    /// The session opened from cookie `value` was saved again (touched,
    /// renewed or refreshed) and sent to the client: a cache of opened
    /// sessions ([`Host::unseal`]) should answer `session` for `value`
    /// from now on. Otherwise a client that goes on sending the old value
    /// (requests already on their way, a script that keeps its cookie) has
    /// it saved, sealed and sent again on every request, and after a
    /// refresh, refreshed again with a spent refresh token.
    fn resealed(&mut self, value: String, session: Rc<Session>) {
        let _ = (value, session);
    }
    /// Something to count or log (never a token, code or cookie).
    fn note(&mut self, note: Note<'_>) {
        let _ = note;
    }
}

/// What happened on the way, for the counters and the log.
#[derive(Debug)]
pub enum Note<'a> {
    /// A token accepted from the per-VM cache.
    CacheHit,
    /// A token not in the cache (it is checked).
    CacheMiss,
    /// A token refused again from memory, without introspection.
    RefusalRemembered,
    /// A token whose `kid` was remembered as unknown: no refetch.
    UnknownKidRemembered,
    /// A fetch not made: another request was fetching that document.
    FetchHeld,
    /// A provider call's answer was not 200.
    ProviderFailure,
    /// A fetched document was refused (status or body); the failure is
    /// recorded.
    DocumentFailed {
        kind: FetchKind,
        url: &'a str,
        why: &'a str,
    },
    /// A refreshed ID token was refused: the session ended.
    RefreshRefused(&'a str),
    /// A request came with a session that had logged out.
    RevokedSessionRefused,
    /// A request came with a session a back-channel logout ended.
    LoggedOutSessionRefused,
}

/// What the caller does next.
#[derive(Debug)]
pub enum Effect {
    /// Answer the client; the event says why (counters, log).
    Reply(Reply, Event),
    /// A bearer token was accepted: set these headers and pass the request
    /// on (shared with the token cache, hence the `Rc`).
    Allow(Rc<Allowed>),
    /// A browser request goes to the upstream.
    Forward(Forward),
    /// Fetch a provider document; hand the answer to
    /// [`Exchange::on_answer`] with `pending`.
    Fetch {
        kind: FetchKind,
        url: String,
        req: Box<HttpRequest>,
        pending: Pending,
    },
    /// Make this provider call; hand the answer to
    /// [`Exchange::on_answer`] with the [`Pending`].
    Call(Box<HttpRequest>, Pending),
    /// A back-channel logout request: read its body, at most `limit`
    /// bytes (more: answer [`backchannel::refused`]), and hand it to
    /// [`Exchange::on_body`].
    ReadBody { limit: usize },
}

/// What a provider call's answer is for: only the effect that made the
/// call carries one, and [`Exchange::on_answer`] consumes it, so an answer
/// nobody waits for cannot be given.
#[derive(Debug)]
pub struct Pending(Waiting);

#[derive(Debug)]
enum Waiting {
    /// A provider document; `Some(since)`: this request holds the
    /// "fetching since" marker and releases it with the answer.
    Document {
        kind: FetchKind,
        url: String,
        since: Option<u64>,
    },
    /// The answer to a call the side asked for (introspection, token, ...).
    Answer,
}

/// One request in progress.
pub struct Exchange {
    side: Side,
    calls: u8,
    /// Documents another request is fetching: decide with the cached copy.
    held_discovery: bool,
    held_jwks: bool,
}

enum Side {
    /// A bearer token being checked.
    Bearer {
        token: String,
        addon_headers: Vec<(String, String)>,
        /// Whether the token's `kid` was looked up among the remembered
        /// unknown ones.
        kid_checked: bool,
    },
    /// A browser request on a login route.
    Browser(Box<Flow>),
    /// A back-channel logout request (`None`: its body is awaited).
    Backchannel(Option<String>),
    /// Decided at once.
    Done,
}

impl Exchange {
    fn new(side: Side) -> Exchange {
        Exchange {
            side,
            calls: 0,
            held_discovery: false,
            held_jwks: false,
        }
    }

    /// A browser flow already sorted by [`Flow::begin`] (the browser
    /// module's tests start there); [`Exchange::run`] gives its first
    /// effect.
    pub fn browser(flow: Flow) -> Exchange {
        Exchange::new(Side::Browser(Box::new(flow)))
    }

    /// Starts a request on `route`: the bearer side when the route checks
    /// tokens and one was sent, else a 401 on a `bearer_only` route, else
    /// the browser side (session, login, callback, logout). The caller has
    /// removed the client's [identity headers](is_identity_header); keep
    /// the exchange while the effect is a `Fetch` or a `Call`.
    pub fn begin(
        route: &Route,
        headers: &Headers,
        host: &mut dyn Host,
        now: u64,
    ) -> (Exchange, Effect) {
        let header = |name: &str| -> Result<Option<String>, ()> {
            match headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
                None => Ok(None),
                Some((_, v)) => String::from_utf8(v.clone()).map(Some).map_err(|_| ()),
            }
        };
        let c = &route.config;
        let done = |effect| (Exchange::new(Side::Done), effect);
        // The provider's back-channel logout, before anything else (only
        // on routes that name its path: no header copies on the others).
        let text = |name| header(name).ok().flatten();
        if c.backchannel_logout_path.is_some() {
            match backchannel::start(
                route,
                text(":method").as_deref(),
                text(":path").as_deref(),
                text("content-type").as_deref(),
            ) {
                backchannel::Start::NotHere => {}
                backchannel::Start::Refuse(reply, why) => {
                    return done(Effect::Reply(reply, Event::BackchannelRefused(why)))
                }
                backchannel::Start::ReadBody => {
                    return (
                        Exchange::new(Side::Backchannel(None)),
                        Effect::ReadBody {
                            limit: backchannel::MAX_BODY,
                        },
                    )
                }
            }
        }
        let token = if c.checks_bearer_tokens() {
            // The client's X-Access-Token may carry the token (as in APISIX).
            let x_access_token = header("x-access-token").ok().flatten();
            let Ok(authorization) = header("authorization") else {
                return done(deny(Denial::MalformedAuthorization, &c.realm));
            };
            match bearer::extract_token(authorization.as_deref(), x_access_token.as_deref()) {
                Ok(t) => t.map(str::to_string),
                Err(d) => return done(deny(d, &c.realm)),
            }
        } else {
            None
        };
        let Some(token) = token else {
            if c.bearer_only {
                return done(deny(Denial::NoToken, &c.realm));
            }
            let Some(login) = LoginRoute::of(route) else {
                return done(not_a_login_route());
            };
            let mut ex = Exchange::browser(browser_flow(&login, headers, host, now));
            let effect = ex.run(route, host, now);
            return (ex, effect);
        };
        let token = match host.cached_token(token, now) {
            Ok(allowed) => {
                host.note(Note::CacheHit);
                return done(Effect::Allow(allowed));
            }
            Err(token) => token,
        };
        host.note(Note::CacheMiss);
        // A token the introspection endpoint refused a moment ago is
        // refused again without asking.
        if !c.verifies_locally() && host.refused(&bearer::token_digest(&token), now) {
            host.note(Note::RefusalRemembered);
            return done(deny(
                Denial::InvalidToken("token is not active".into()),
                &c.realm,
            ));
        }
        let addon_headers = c
            .introspection_addon_headers
            .iter()
            .filter_map(|name| Some((name.clone(), header(name).ok()??)))
            .collect();
        let mut ex = Exchange::new(Side::Bearer {
            token,
            addon_headers,
            kid_checked: false,
        });
        let effect = ex.run(route, host, now);
        (ex, effect)
    }

    /// Decides with what is stored now until a reply, a pass, or a
    /// provider call. A fetch of a document that another request (of any
    /// worker) is fetching now is not made while a copy is stored: the
    /// side decides again with that copy.
    pub fn run(&mut self, route: &Route, host: &mut dyn Host, now: u64) -> Effect {
        loop {
            // A signed-in browser whose access token is still good needs
            // no provider document: none is read (two shared-data copies).
            let docs = match &self.side {
                Side::Browser(flow) if !flow.needs_provider(route, now) => Documents::default(),
                _ => host.documents(&route.config.discovery),
            };
            let need = match self.decide(route, &docs, host, now) {
                Ok(need) => need,
                Err(effect) => return effect,
            };
            if let Some(effect) = self.fetch(route, need, &docs, host, now) {
                return effect;
            }
        }
    }

    /// The body of a back-channel logout request (a `ReadBody` effect):
    /// the next effect.
    pub fn on_body(&mut self, route: &Route, body: &[u8], host: &mut dyn Host, now: u64) -> Effect {
        if !matches!(self.side, Side::Backchannel(None)) {
            return backchannel_refused("no request body was expected".into());
        }
        match backchannel::logout_token(body) {
            Ok(token) => {
                self.side = Side::Backchannel(Some(token));
                self.run(route, host, now)
            }
            Err(why) => {
                self.side = Side::Done;
                backchannel_refused(why)
            }
        }
    }

    /// A verified logout token: refused if its `jti` was seen, else its
    /// sessions are put on the deny-list.
    fn logged_out(
        &mut self,
        route: &Route,
        logout: backchannel::Logout,
        host: &mut dyn Host,
        now: u64,
    ) -> Effect {
        self.side = Side::Done;
        let (jti, until) = logout.replay_key(route);
        if !host.first_use(jti, until, now) {
            return backchannel_refused("the logout token was used before".into());
        }
        host.log_out(logout.revocation(route, now), now);
        Effect::Reply(backchannel::accepted(), Event::BackchannelLogout)
    }

    /// The answer (status 0: none came) to the call of a `Fetch` or `Call`
    /// effect: the next effect.
    pub fn on_answer(
        &mut self,
        route: &Route,
        pending: Pending,
        status: u16,
        body: &[u8],
        host: &mut dyn Host,
        now: u64,
    ) -> Effect {
        match pending.0 {
            Waiting::Document { kind, url, since } => {
                record_document(host, kind, &url, since, status, body, now);
                self.run(route, host, now)
            }
            Waiting::Answer => {
                if status != 200 {
                    host.note(Note::ProviderFailure);
                }
                match &mut self.side {
                    Side::Bearer { token, .. } => {
                        if let Some(until) = bearer::refused_until(route, token, status, body, now)
                        {
                            host.remember_refusal(bearer::token_digest(token), until);
                        }
                        match bearer::introspected(route, token, status, body, now) {
                            Ok(a) => self.allow(a, host, now),
                            Err(d) => deny(d, &route.config.realm),
                        }
                    }
                    Side::Browser(flow) => {
                        let Some(login) = LoginRoute::of(route) else {
                            return not_a_login_route();
                        };
                        let docs = host.documents(&route.config.discovery);
                        let step = flow.on_response(
                            &login,
                            &docs.state(host.intervals()),
                            status,
                            body,
                            host,
                            now,
                        );
                        hand_over(flow, host);
                        match self.step(step) {
                            Ok(need) => match self.fetch(route, need, &docs, host, now) {
                                Some(effect) => effect,
                                None => self.run(route, host, now),
                            },
                            Err(effect) => self.finish(route, effect, host),
                        }
                    }
                    Side::Done | Side::Backchannel(_) => deny(
                        Denial::ProviderUnavailable("an answer after the decision".into()),
                        &route.config.realm,
                    ),
                }
            }
        }
    }

    /// The call of a `Fetch` or `Call` could not be made (no cluster for
    /// the provider host): 503.
    pub fn not_sent(
        &mut self,
        route: &Route,
        pending: Pending,
        req: &HttpRequest,
        host: &mut dyn Host,
    ) -> Effect {
        release(&pending.0, host);
        deny(
            Denial::NoProviderCluster {
                host: req.authority.clone(),
                cluster: req.cluster.clone(),
            },
            &route.config.realm,
        )
    }

    /// Asks the side, with what is stored: the document to fetch, or the
    /// effect.
    fn decide(
        &mut self,
        route: &Route,
        docs: &Documents,
        host: &mut dyn Host,
        now: u64,
    ) -> Result<provider::Need, Effect> {
        let mut state = docs.state(host.intervals());
        match &mut self.side {
            Side::Bearer {
                token,
                addon_headers,
                kid_checked,
            } => {
                // A kid the provider lately did not have: no refetch.
                // (Only where keys come from the JWKS.)
                let uses_jwks = route.config.use_jwks && route.public_keys.is_none();
                if uses_jwks && !*kid_checked {
                    *kid_checked = true;
                    if let (Some(uri), true) = (&docs.jwks_uri, docs.has(FetchKind::Jwks)) {
                        if bearer::unverified_kid(token)
                            .is_some_and(|kid| host.kid_unknown(uri, &kid, now))
                        {
                            host.note(Note::UnknownKidRemembered);
                            self.held_jwks = true;
                        }
                    }
                }
                state.discovery_in_flight = self.held_discovery;
                state.jwks_in_flight = self.held_jwks;
                let decision = bearer::decide(route, token, &state, addon_headers, now);
                if let (true, Decision::Deny(_), Some(uri), Some(jwks)) =
                    (uses_jwks, &decision, &docs.jwks_uri, state.jwks)
                {
                    if let Some(kid) = bearer::kid_unknown_after_refetch(
                        token,
                        jwks,
                        state.intervals.kid_refetch,
                        now,
                    ) {
                        let until = now.saturating_add(bearer::UNKNOWN_KID_TTL);
                        host.remember_unknown_kid(uri, kid, until);
                    }
                }
                match decision {
                    Decision::Fetch(kind, url, req) => Ok(provider::Need { kind, url, req }),
                    Decision::Allow(a) => Err(self.allow(a, host, now)),
                    Decision::Deny(d) => Err(deny(d, &route.config.realm)),
                    Decision::Introspect(req) => Err(self.call(route, req, Waiting::Answer, host)),
                }
            }
            Side::Browser(flow) => {
                let Some(login) = LoginRoute::of(route) else {
                    return Err(not_a_login_route());
                };
                state.discovery_in_flight = self.held_discovery;
                state.jwks_in_flight = self.held_jwks;
                let step = flow.advance(&login, &state, host, now);
                hand_over(flow, host);
                match self.step(step) {
                    Ok(need) => Ok(need),
                    Err(effect) => Err(self.finish(route, effect, host)),
                }
            }
            Side::Backchannel(Some(token)) => {
                state.discovery_in_flight = self.held_discovery;
                state.jwks_in_flight = self.held_jwks;
                match backchannel::decide(route, token, &state, now) {
                    backchannel::Decision::Fetch(kind, url, req) => {
                        Ok(provider::Need { kind, url, req })
                    }
                    backchannel::Decision::Verified(logout) => {
                        Err(self.logged_out(route, logout, host, now))
                    }
                    backchannel::Decision::Refused(why) => {
                        self.side = Side::Done;
                        Err(backchannel_refused(why))
                    }
                    backchannel::Decision::Unavailable(why) => {
                        self.side = Side::Done;
                        Err(Effect::Reply(
                            Denial::ProviderUnavailable(why.clone()).reply(&route.config.realm),
                            Event::ProviderUnavailable(why),
                        ))
                    }
                }
            }
            Side::Done | Side::Backchannel(None) => Err(deny(
                Denial::ProviderUnavailable("a request asked again after its decision".into()),
                &route.config.realm,
            )),
        }
    }

    /// A browser step as a document to fetch, or an effect (a `Call` not
    /// yet counted: see [`Exchange::finish`]).
    fn step(&mut self, step: Step) -> Result<provider::Need, Effect> {
        match step {
            Step::Fetch(kind, url, req) => Ok(provider::Need { kind, url, req }),
            Step::Respond(reply, event) => Err(Effect::Reply(reply, event)),
            // Its identity header values were checked where they were made
            // (`signed_in::checked_headers`).
            Step::Forward(f) => Err(Effect::Forward(f)),
            Step::Call(req) => Err(Effect::Call(req, Pending(Waiting::Answer))),
        }
    }

    /// Counts a browser `Call` against the budget.
    fn finish(&mut self, route: &Route, effect: Effect, host: &mut dyn Host) -> Effect {
        match effect {
            Effect::Call(req, Pending(waiting)) => self.call(route, req, waiting, host),
            other => other,
        }
    }

    /// Fetches `need`, or holds off when another request is fetching it and
    /// a copy is stored (`None`: decide again with that copy).
    fn fetch(
        &mut self,
        route: &Route,
        need: provider::Need,
        docs: &Documents,
        host: &mut dyn Host,
        now: u64,
    ) -> Option<Effect> {
        let provider::Need { kind, url, req } = need;
        let since = host
            .claim(kind, &url, route.config.timeout, now)
            .then_some(now);
        let held = match kind {
            FetchKind::Discovery => &mut self.held_discovery,
            FetchKind::Jwks => &mut self.held_jwks,
        };
        if since.is_none() && !*held && docs.has(kind) {
            *held = true;
            host.note(Note::FetchHeld);
            return None;
        }
        // This request fetches (or, with nothing stored, fetches even
        // though another request does too: a cold start, bounded by the
        // provider cluster's circuit breakers).
        Some(self.call(route, req, Waiting::Document { kind, url, since }, host))
    }

    /// A provider call within the budget, else 503.
    fn call(
        &mut self,
        route: &Route,
        req: Box<HttpRequest>,
        waiting: Waiting,
        host: &mut dyn Host,
    ) -> Effect {
        self.calls = self.calls.saturating_add(1);
        if self.calls > MAX_CALLS {
            release(&waiting, host);
            return deny(
                Denial::ProviderUnavailable("too many provider calls for one request".into()),
                &route.config.realm,
            );
        }
        match waiting {
            Waiting::Document { kind, url, since } => Effect::Fetch {
                kind,
                url: url.clone(),
                req,
                pending: Pending(Waiting::Document { kind, url, since }),
            },
            Waiting::Answer => Effect::Call(req, Pending(Waiting::Answer)),
        }
    }

    /// An accepted token: cached for the next requests that carry it.
    fn allow(&mut self, allowed: Allowed, host: &mut dyn Host, now: u64) -> Effect {
        let allowed = Rc::new(allowed);
        if let Side::Bearer { token, .. } = &mut self.side {
            host.cache_token(std::mem::take(token), allowed.clone(), now);
        }
        self.side = Side::Done;
        Effect::Allow(allowed)
    }
}

/// Sorts a browser request, opening its session through the host (and its
/// deny-list), and puts a logout's session on the deny-list.
fn browser_flow(login: &LoginRoute<'_>, headers: &Headers, host: &mut dyn Host, now: u64) -> Flow {
    let text = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
    };
    let cookies = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("cookie"))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(session::parse_cookie_header)
        .collect();
    // Envoy's `:scheme`: the connection's, or a trusted proxy's
    // X-Forwarded-Proto (Envoy's use_remote_address and
    // xff_num_trusted_hops decide; the sidecar sets them).
    let req = BrowserRequest {
        scheme: text(":scheme").unwrap_or_else(|| "http".into()),
        host: text(":authority").unwrap_or_default(),
        path: text(":path").unwrap_or_else(|| "/".into()),
        accept: text("accept"),
        cookies,
    };
    let (key, name) = (login.key, login.session.cookie_name.as_str());
    let mut flow = Flow::begin_with(login, req, now, &mut |value| {
        let s = host.unseal(key, name, value)?;
        // A session that logged out is no session, whoever kept a copy of
        // its cookie; nor is one the provider ended.
        if let Some(note) = host.session_ended(&s, now) {
            host.note(note);
            return Err(SessionError::Revoked);
        }
        Ok(s)
    });
    if let Some(r) = flow.take_revocation() {
        host.revoke(r, now);
    }
    flow
}

/// [`Host::session_ended`] asked of the lists themselves: the deny-list
/// (a logout of this session, whoever kept a copy of its cookie), then the
/// back-channel list (the provider ended it).
pub fn ended_by_lists<H: Host + ?Sized>(
    host: &mut H,
    s: &Session,
    now: u64,
) -> Option<Note<'static>> {
    if host.revoked(&s.id, now) {
        return Some(Note::RevokedSessionRefused);
    }
    let keys = host.subject_keys(s);
    if keys.iter().any(|k| host.logged_out(k, s.created_at, now)) {
        return Some(Note::LoggedOutSessionRefused);
    }
    None
}

/// Records a provider document call's answer (a request's, or the
/// background refresh's): releases the "fetching since" marker claimed at
/// `since`, stores the body if it checks out, else notes the failure and
/// keeps the last good copy with the failure's time.
pub fn record_document(
    host: &mut dyn Host,
    kind: FetchKind,
    url: &str,
    since: Option<u64>,
    status: u16,
    body: &[u8],
    now: u64,
) {
    if let Some(since) = since {
        host.release(kind, url, since);
    }
    match provider::check_answer(kind, url, status, body) {
        Ok(()) => host.write_document(kind, url, &record::fetched(now, body)),
        Err(why) => {
            host.note(Note::DocumentFailed {
                kind,
                url,
                why: &why,
            });
            let old = host.read_document(kind, url);
            host.write_document(kind, url, &record::failed(old.as_deref(), now));
        }
    }
}

/// What the flow leaves for the host: a refused refresh (a note), a session
/// saved in place of the request's cookie.
fn hand_over(flow: &mut Flow, host: &mut dyn Host) {
    if let Some(why) = flow.take_rejected_refresh() {
        host.note(Note::RefreshRefused(&why));
    }
    if let Some((value, session)) = flow.take_resealed() {
        host.resealed(value, session);
    }
}

fn release(waiting: &Waiting, host: &mut dyn Host) {
    if let Waiting::Document {
        kind,
        url,
        since: Some(since),
    } = waiting
    {
        host.release(*kind, url, *since);
    }
}

/// A request on a route that is not `bearer_only` but cannot log browsers
/// in (no `session.secret`): 500.
fn not_a_login_route() -> Effect {
    let why = "a login route needs session.secret".to_string();
    Effect::Reply(
        Denial::BadRouteConfig(why.clone()).reply(DEFAULT_REALM),
        Event::Misconfigured(why),
    )
}

fn backchannel_refused(why: String) -> Effect {
    Effect::Reply(backchannel::refused(&why), Event::BackchannelRefused(why))
}

fn deny(denial: Denial, realm: &str) -> Effect {
    Effect::Reply(denial.reply(realm), Event::Denied(denial))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::{json, Value};

    use super::*;
    use crate::jwt::tests::{claims, rsa_jwk, test_keys, token, CLIENT, ISS, NOW};
    use crate::jwt::Alg;
    use crate::provider::{Fetched, Known};

    fn disc_url() -> String {
        format!("{ISS}/.well-known/openid-configuration")
    }

    fn jwks_url() -> String {
        format!("{ISS}/protocol/openid-connect/certs")
    }

    fn route(extra: Value) -> Route {
        let mut v = json!({
            "client_id": CLIENT,
            "client_secret": "s3cr3t",
            "discovery": disc_url(),
            "bearer_only": true,
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        Route::from_json(&v.to_string()).unwrap()
    }

    /// A host that keeps records as the filter does (parsed on read) and
    /// remembers accepted tokens.
    #[derive(Default)]
    struct TestHost {
        records: HashMap<String, Vec<u8>>,
        /// Another request holds every fetch marker.
        busy: bool,
        tokens: HashMap<String, Rc<Allowed>>,
        notes: Vec<String>,
        /// Opened sessions by cookie value, as the filter's cache keeps them.
        sessions: HashMap<String, Rc<Session>>,
        /// The back-channel deny-list and the replay memory, as shard
        /// values (the filter's shared data).
        shards: HashMap<String, Vec<u8>>,
        /// `documents` calls.
        documents_read: usize,
    }

    impl Entropy for TestHost {
        fn fill(&mut self, buf: &mut [u8]) -> Result<(), String> {
            buf.fill(7);
            Ok(())
        }
    }

    impl Host for TestHost {
        fn documents(&mut self, discovery_url: &str) -> Documents {
            self.documents_read += 1;
            fn known<T>(
                raw: Option<&Vec<u8>>,
                parse: impl FnOnce(&[u8]) -> Result<T, String>,
            ) -> Known<T> {
                let Some((fetched, failed_at, body)) = raw.and_then(|r| record::split(r)) else {
                    return Known::default();
                };
                let doc = fetched.map(|fetched_at| {
                    Rc::new(Fetched {
                        value: parse(body).unwrap(),
                        fetched_at,
                    })
                });
                Known { doc, failed_at }
            }
            let discovery = known(
                self.records
                    .get(&record::key(FetchKind::Discovery, discovery_url)),
                |b| provider::parse_discovery(discovery_url, b),
            );
            let jwks_uri = discovery
                .doc
                .as_ref()
                .and_then(|d| d.value.jwks_uri.clone());
            let jwks = jwks_uri.as_deref().map(|u| {
                known(
                    self.records.get(&record::key(FetchKind::Jwks, u)),
                    provider::parse_jwks,
                )
            });
            Documents {
                discovery,
                jwks_uri,
                jwks,
            }
        }
        fn read_document(&mut self, kind: FetchKind, url: &str) -> Option<Vec<u8>> {
            self.records.get(&record::key(kind, url)).cloned()
        }
        fn write_document(&mut self, kind: FetchKind, url: &str, rec: &[u8]) {
            self.records.insert(record::key(kind, url), rec.to_vec());
        }
        fn claim(&mut self, _: FetchKind, _: &str, _: u64, _: u64) -> bool {
            !self.busy
        }
        fn release(&mut self, _: FetchKind, _: &str, _: u64) {}
        fn cached_token(&mut self, token: String, _: u64) -> Result<Rc<Allowed>, String> {
            self.tokens.get(&token).cloned().ok_or(token)
        }
        fn cache_token(&mut self, token: String, allowed: Rc<Allowed>, _: u64) {
            self.tokens.insert(token, allowed);
        }
        fn note(&mut self, note: Note<'_>) {
            self.notes.push(format!("{note:?}"));
        }
        fn unseal(
            &mut self,
            key: &SessionKey,
            name: &str,
            value: &str,
        ) -> Result<Rc<Session>, SessionError> {
            if let Some(s) = self.sessions.get(value) {
                return Ok(s.clone());
            }
            let s = Rc::new(session::unseal(key, name, value)?);
            self.sessions.insert(value.to_string(), s.clone());
            Ok(s)
        }
        fn resealed(&mut self, value: String, session: Rc<Session>) {
            self.sessions.insert(value, session);
        }
        fn logged_out(&mut self, key: &[u8; 16], created_at: u64, now: u64) -> bool {
            let shard = self.shards.get(&subjects::shard_key(key));
            shard.is_some_and(|v| subjects::is_revoked(v, key, created_at, now))
        }
        fn log_out(&mut self, r: subjects::Revocation, now: u64) {
            let k = subjects::shard_key(&r.key);
            let old = self.shards.get(&k).cloned().unwrap_or_default();
            self.shards.insert(k, subjects::insert(&old, r, now).value);
        }
        fn first_use(&mut self, jti: [u8; 16], until: u64, now: u64) -> bool {
            let k = subjects::jti_shard_key(&jti);
            let old = self.shards.get(&k).cloned().unwrap_or_default();
            if subjects::contains(&old, &jti, now) {
                return false;
            }
            let r = subjects::Revocation {
                key: jti,
                since: now,
                until,
            };
            self.shards.insert(k, subjects::insert(&old, r, now).value);
            true
        }
    }

    fn headers(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }

    fn discovery_body() -> Vec<u8> {
        json!({"issuer": ISS, "jwks_uri": jwks_url()})
            .to_string()
            .into_bytes()
    }

    fn jwks_body() -> Vec<u8> {
        json!({"keys": [rsa_jwk(&test_keys().rsa_a, "rsa-a")]})
            .to_string()
            .into_bytes()
    }

    fn denied(effect: Effect) -> Denial {
        match effect {
            Effect::Reply(_, Event::Denied(d)) => d,
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    /// A client that keeps sending a cookie the gateway has replaced (a
    /// request already on its way, a script) gets it saved once, not on
    /// every request: the host's cache answers the saved session for it.
    #[test]
    fn a_replaced_cookie_is_not_saved_again() {
        let r = route(json!({"bearer_only": false, "session": {"secret": "0123456789abcdef0123"}}));
        let key = r.session_key.as_ref().unwrap();
        // Last seen two minutes ago: the next request touches it.
        let mut s = Session::new(crate::secret::Secret::new(String::from("at")), NOW - 120);
        s.access_expires_at = Some(NOW + 3600);
        let cookie: Vec<String> = session::encode(&s, key, "session", [1; 12])
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let cookie = cookie.join("; ");
        let req = headers(&[
            (":authority", b"app.example"),
            (":path", b"/"),
            ("cookie", cookie.as_bytes()),
        ]);
        let set_cookies = |host: &mut TestHost, now| match Exchange::begin(&r, &req, host, now).1 {
            Effect::Forward(f) => f.set_cookies.len(),
            other => panic!("expected a forward, got {other:?}"),
        };
        let mut host = TestHost::default();
        assert_eq!(set_cookies(&mut host, NOW), 1, "touched and sent");
        assert_eq!(
            set_cookies(&mut host, NOW),
            0,
            "the old value opens as the touched session"
        );
        assert_eq!(set_cookies(&mut host, NOW + 30), 0);
        assert_eq!(
            set_cookies(&mut host, NOW + 61),
            1,
            "a minute later, touched again"
        );
        // Without a cache (the trait's defaults), every request saves.
        let mut plain = TestHost::default();
        for _ in 0..2 {
            let mut h = Plain(&mut plain);
            match Exchange::begin(&r, &req, &mut h, NOW).1 {
                Effect::Forward(f) => assert_eq!(f.set_cookies.len(), 1),
                other => panic!("expected a forward, got {other:?}"),
            }
        }
    }

    /// A signed-in session whose access token is good reads no provider
    /// document; one whose token is due for a refresh does.
    #[test]
    fn a_good_session_reads_no_provider_document() {
        let r = route(json!({"bearer_only": false, "session": {"secret": "0123456789abcdef0123"}}));
        let key = r.session_key.as_ref().unwrap();
        let cookie_for = |expires: u64| {
            let mut s = Session::new(crate::secret::Secret::new(String::from("at")), NOW);
            s.refresh_token = Some(crate::secret::Secret::new(String::from("rt")));
            s.access_expires_at = Some(expires);
            let c: Vec<String> = session::encode(&s, key, "session", [1; 12])
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            c.join("; ")
        };
        let good = cookie_for(NOW + 3600);
        let req = headers(&[
            (":authority", b"app.example"),
            (":path", b"/"),
            ("cookie", good.as_bytes()),
        ]);
        let mut host = TestHost::default();
        match Exchange::begin(&r, &req, &mut host, NOW).1 {
            Effect::Forward(f) => assert!(f.signed_in),
            other => panic!("expected a forward, got {other:?}"),
        }
        assert_eq!(host.documents_read, 0);
        let expired = cookie_for(NOW - 1);
        let req = headers(&[
            (":authority", b"app.example"),
            (":path", b"/"),
            ("cookie", expired.as_bytes()),
        ]);
        let mut host = TestHost::default();
        let _ = Exchange::begin(&r, &req, &mut host, NOW);
        assert!(
            host.documents_read > 0,
            "a refresh needs the token endpoint"
        );
    }

    /// A host that only stores documents: every other memory is the
    /// trait's default.
    struct Plain<'a>(&'a mut TestHost);

    impl Entropy for Plain<'_> {
        fn fill(&mut self, buf: &mut [u8]) -> Result<(), String> {
            self.0.fill(buf)
        }
    }

    impl Host for Plain<'_> {
        fn documents(&mut self, discovery_url: &str) -> Documents {
            self.0.documents(discovery_url)
        }
        fn read_document(&mut self, kind: FetchKind, url: &str) -> Option<Vec<u8>> {
            self.0.read_document(kind, url)
        }
        fn write_document(&mut self, kind: FetchKind, url: &str, rec: &[u8]) {
            self.0.write_document(kind, url, rec)
        }
        fn claim(&mut self, k: FetchKind, u: &str, t: u64, now: u64) -> bool {
            self.0.claim(k, u, t, now)
        }
        fn release(&mut self, k: FetchKind, u: &str, since: u64) {
            self.0.release(k, u, since)
        }
    }

    /// A back-channel logout through the exchange: the body is read, the
    /// documents fetched, the token verified; the session it names is
    /// refused from then on, another user's is not, a replay is refused,
    /// and the same user's next login works.
    #[test]
    fn backchannel_logout_ends_the_named_sessions() {
        let r = route(json!({
            "bearer_only": false,
            "redirect_uri": "http://localhost/cb",
            "backchannel_logout_path": "/bcl",
            "session": {"secret": "0123456789abcdef0123"},
        }));
        let key = r.session_key.as_ref().unwrap();
        let cookie_of = |sub: &str, sid: &str, at: u64| {
            let mut s = Session::new(crate::secret::Secret::new(String::from("at")), at);
            s.id = SessionId([sub.len() as u8; 16]);
            s.access_expires_at = Some(NOW + 3600);
            s.id_claims = json!({"iss": ISS, "sub": sub, "sid": sid})
                .as_object()
                .cloned()
                .unwrap();
            let pairs = session::encode(&s, key, "session", [1; 12]);
            let c: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            headers(&[
                (":authority", b"localhost"),
                (":path", b"/"),
                ("accept", b"application/json"),
                ("cookie", c.join("; ").as_bytes()),
            ])
        };
        let passes = |host: &mut TestHost, req: &Vec<(String, Vec<u8>)>, now| match Exchange::begin(
            &r, req, host, now,
        )
        .1
        {
            Effect::Forward(f) => f.signed_in,
            Effect::Reply(reply, Event::Unauthenticated) => {
                assert_eq!(reply.status, 401);
                false
            }
            other => panic!("{other:?}"),
        };
        let post = headers(&[
            (":method", b"POST"),
            (":path", b"/bcl"),
            ("content-type", b"application/x-www-form-urlencoded"),
        ]);
        let logout = |host: &mut TestHost, claims: &Value, now| -> Reply {
            let (mut ex, e) = Exchange::begin(&r, &post, host, now);
            assert!(matches!(e, Effect::ReadBody { .. }), "{e:?}");
            let tok = token(Alg::RS256, Some("rsa-a"), claims);
            let mut e = ex.on_body(&r, format!("logout_token={tok}").as_bytes(), host, now);
            loop {
                e = match e {
                    Effect::Fetch { kind, pending, .. } => {
                        let body = match kind {
                            FetchKind::Discovery => discovery_body(),
                            FetchKind::Jwks => jwks_body(),
                        };
                        ex.on_answer(&r, pending, 200, &body, host, now)
                    }
                    Effect::Reply(reply, _) => return reply,
                    other => panic!("{other:?}"),
                }
            }
        };
        let alice = cookie_of("alice", "s-a", NOW - 100);
        let alice_new = cookie_of("alice", "s-a2", NOW + 10);
        let bob = cookie_of("bob", "s-b", NOW - 100);
        let mut host = TestHost::default();
        assert!(passes(&mut host, &alice, NOW));
        let c = json!({"iss": ISS, "aud": CLIENT, "iat": NOW, "jti": "j-1", "sid": "s-a",
            "sub": "alice", "events": {backchannel::EVENT: {}}});
        let reply = logout(&mut host, &c, NOW);
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(!passes(&mut host, &alice, NOW + 1), "alice's session ended");
        assert!(host.notes.iter().any(|n| n == "LoggedOutSessionRefused"));
        assert!(passes(&mut host, &bob, NOW + 1), "bob's did not");
        // Replayed: refused.
        let reply = logout(&mut host, &c, NOW + 2);
        assert_eq!(reply.status, 400);
        assert!(reply.body.contains("used before"));
        // Only `sub`: every session of alice made until then; a later
        // login is a new session.
        let c = json!({"iss": ISS, "aud": CLIENT, "iat": NOW + 5, "jti": "j-2", "sub": "alice",
            "events": {backchannel::EVENT: {}}});
        assert!(passes(&mut host, &alice_new, NOW + 10));
        assert_eq!(logout(&mut host, &c, NOW + 5).status, 200);
        assert!(passes(&mut host, &alice_new, NOW + 11));
        let alice_other = cookie_of("alice", "s-a3", NOW - 50);
        assert!(!passes(&mut host, &alice_other, NOW + 11));
        // A GET on the path, a body without a token.
        let get = headers(&[(":method", b"GET"), (":path", b"/bcl")]);
        match Exchange::begin(&r, &get, &mut host, NOW).1 {
            Effect::Reply(reply, Event::BackchannelRefused(_)) => assert_eq!(reply.status, 405),
            other => panic!("{other:?}"),
        }
        let (mut ex, _) = Exchange::begin(&r, &post, &mut host, NOW);
        match ex.on_body(&r, b"token=x", &mut host, NOW) {
            Effect::Reply(reply, Event::BackchannelRefused(_)) => assert_eq!(reply.status, 400),
            other => panic!("{other:?}"),
        }
        // A forged token (nonce, no events: an ID token).
        let id_token = json!({"iss": ISS, "aud": CLIENT, "iat": NOW, "exp": NOW + 60,
            "sub": "bob", "nonce": "n", "sid": "s-b", "jti": "j-3"});
        assert_eq!(logout(&mut host, &id_token, NOW).status, 400);
        assert!(passes(&mut host, &bob, NOW + 1));
    }

    #[test]
    fn identity_headers_in_any_spelling() {
        for name in ["x-userinfo", "X-Userinfo", "x_userinfo", "X_ACCESS_TOKEN"] {
            assert!(is_identity_header(name), "{name}");
        }
        for name in ["x-userinfo2", "userinfo", "x-user-info", "authorization"] {
            assert!(!is_identity_header(name), "{name}");
        }
    }

    #[test]
    fn the_request_decides_the_side() {
        let r = route(json!({}));
        let mut host = TestHost::default();
        let h = headers(&[("authorization", b"Bearer")]);
        let (_, e) = Exchange::begin(&r, &h, &mut host, NOW);
        assert_eq!(denied(e), Denial::MalformedAuthorization);
        let h = headers(&[("authorization", b"Bearer \xff")]);
        let (_, e) = Exchange::begin(&r, &h, &mut host, NOW);
        assert_eq!(denied(e), Denial::MalformedAuthorization);
        let (_, e) = Exchange::begin(&r, &[], &mut host, NOW);
        assert_eq!(denied(e), Denial::NoToken);
        // Another scheme is no token.
        let h = headers(&[("authorization", b"Basic dTpw")]);
        let (_, e) = Exchange::begin(&r, &h, &mut host, NOW);
        assert_eq!(denied(e), Denial::NoToken);

        // A login route without a token: the browser side (a JSON client
        // gets 401, no provider call).
        let login = route(json!({
            "bearer_only": false,
            "redirect_uri": "http://localhost/cb",
            "session": {"secret": "0123456789abcdef0123"},
        }));
        let h = headers(&[(":path", b"/x"), ("accept", b"application/json")]);
        let (_, e) = Exchange::begin(&login, &h, &mut host, NOW);
        match e {
            Effect::Reply(reply, Event::Unauthenticated) => assert_eq!(reply.status, 401),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_token_fetches_documents_stores_them_and_is_cached() {
        let r = route(json!({"use_jwks": true}));
        let mut host = TestHost::default();
        let tok = token(Alg::RS256, Some("rsa-a"), &claims());
        let h = headers(&[("authorization", format!("Bearer {tok}").as_bytes())]);
        let (mut ex, e) = Exchange::begin(&r, &h, &mut host, NOW);
        let Effect::Fetch {
            kind: FetchKind::Discovery,
            url,
            pending,
            ..
        } = e
        else {
            panic!("{e:?}")
        };
        assert_eq!(url, disc_url());
        let e = ex.on_answer(&r, pending, 200, &discovery_body(), &mut host, NOW);
        let Effect::Fetch {
            kind: FetchKind::Jwks,
            url,
            pending,
            ..
        } = e
        else {
            panic!("{e:?}")
        };
        assert_eq!(url, jwks_url());
        let e = ex.on_answer(&r, pending, 200, &jwks_body(), &mut host, NOW);
        let Effect::Allow(a) = e else { panic!("{e:?}") };
        assert!(a.headers.iter().any(|(k, _)| *k == "x-access-token"));
        // Stored as records, and the next request is answered from the
        // token cache.
        let stored = &host.records[&record::key(FetchKind::Jwks, &jwks_url())];
        assert_eq!(record::split(stored).unwrap().0, Some(NOW));
        let (_, e) = Exchange::begin(&r, &h, &mut host, NOW + 1);
        assert!(matches!(e, Effect::Allow(_)), "{e:?}");
        assert!(host.notes.iter().any(|n| n == "CacheHit"));
    }

    /// The provider reached on another URL than its issuer (Keycloak on an
    /// internal address, `KC_HOSTNAME` public): as in APISIX the document
    /// is used, and tokens are checked against the document's `issuer`,
    /// not the URL's.
    #[test]
    fn tokens_are_checked_against_the_documents_issuer() {
        const PUBLIC: &str = "https://login.example/realms/quickstart";
        let r = route(json!({"use_jwks": true}));
        let doc = json!({"issuer": PUBLIC, "jwks_uri": jwks_url()}).to_string();
        let run = |iss: &str, host: &mut TestHost| -> Effect {
            let mut c = claims();
            c["iss"] = json!(iss);
            let tok = token(Alg::RS256, Some("rsa-a"), &c);
            let h = headers(&[("authorization", format!("Bearer {tok}").as_bytes())]);
            let (mut ex, mut e) = Exchange::begin(&r, &h, host, NOW);
            while let Effect::Fetch { kind, pending, .. } = e {
                let body = match kind {
                    FetchKind::Discovery => doc.clone().into_bytes(),
                    FetchKind::Jwks => jwks_body(),
                };
                e = ex.on_answer(&r, pending, 200, &body, host, NOW);
            }
            e
        };
        let mut host = TestHost::default();
        let e = run(PUBLIC, &mut host);
        assert!(matches!(e, Effect::Allow(_)), "{e:?}");
        // The issuer the URL stands for is not the provider's: refused.
        let e = run(ISS, &mut host);
        assert!(matches!(denied(e), Denial::InvalidToken(_)));
    }

    #[test]
    fn a_refused_document_is_recorded_as_a_failure() {
        let r = route(json!({"use_jwks": true}));
        let mut host = TestHost::default();
        let tok = token(Alg::RS256, Some("rsa-a"), &claims());
        let h = headers(&[("authorization", format!("Bearer {tok}").as_bytes())]);
        let (mut ex, e) = Exchange::begin(&r, &h, &mut host, NOW);
        let Effect::Fetch { pending, .. } = e else {
            panic!("{e:?}")
        };
        // A document without an issuer: refused, 503.
        let foreign = json!({"issuer": ""}).to_string();
        let e = ex.on_answer(&r, pending, 200, foreign.as_bytes(), &mut host, NOW);
        assert!(matches!(denied(e), Denial::ProviderUnavailable(_)));
        let stored = &host.records[&record::key(FetchKind::Discovery, &disc_url())];
        assert_eq!(record::split(stored), Some((None, Some(NOW), &b""[..])));
        assert!(host.notes.iter().any(|n| n.starts_with("DocumentFailed")));
    }

    #[test]
    fn a_document_another_request_fetches_is_used_as_stored() {
        let r = route(json!({"use_jwks": true}));
        let mut host = TestHost::default();
        // A stale discovery document and JWKS.
        let old = NOW - 2 * provider::DISCOVERY_TTL;
        host.write_document(
            FetchKind::Discovery,
            &disc_url(),
            &record::fetched(old, &discovery_body()),
        );
        host.write_document(
            FetchKind::Jwks,
            &jwks_url(),
            &record::fetched(old, &jwks_body()),
        );
        host.busy = true;
        let tok = token(Alg::RS256, Some("rsa-a"), &claims());
        let h = headers(&[("authorization", format!("Bearer {tok}").as_bytes())]);
        let (_, e) = Exchange::begin(&r, &h, &mut host, NOW);
        assert!(matches!(e, Effect::Allow(_)), "{e:?}");
        assert_eq!(host.notes.iter().filter(|n| *n == "FetchHeld").count(), 2);
    }

    #[test]
    fn provider_calls_per_request_are_bounded() {
        let r = route(json!({
            "bearer_only": false,
            "redirect_uri": "http://localhost/cb",
            "session": {"secret": "0123456789abcdef0123"},
        }));
        let mut host = TestHost::default();
        let flow = Flow::begin(
            &LoginRoute::of(&r).unwrap(),
            BrowserRequest {
                scheme: "http".into(),
                host: "localhost".into(),
                path: "/".into(),
                accept: None,
                cookies: Vec::new(),
            },
            NOW,
        );
        let mut ex = Exchange::browser(flow);
        ex.calls = MAX_CALLS;
        let req = Box::new(crate::http::Target::parse(ISS).unwrap().request("GET"));
        let e = ex.call(&r, req, Waiting::Answer, &mut host);
        assert!(matches!(denied(e), Denial::ProviderUnavailable(_)));
    }
}
