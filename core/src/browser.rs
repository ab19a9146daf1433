//! Requests on a login route (`bearer_only: false`) that carry no bearer
//! token: the browser side of the plugin, as one state machine per request.
//!
//! [`Flow::begin`] sorts the request (logout, login callback, session, or
//! nothing); the caller then loops:
//!
//! - [`Flow::advance`] → [`Step`]: `Respond` (a local reply, done),
//!   `Forward` (to the upstream, done), `Fetch` (a provider document: make
//!   the call, store the document or the failure, `advance` again) or
//!   `Call` (a provider call whose answer goes to [`Flow::on_response`],
//!   which answers with the next `Step`).
//!
//! Every provider call moves the machine to a new stage and no stage asks
//! for the same document twice (a fetch makes it fresh or recently failed,
//! as on the bearer path), so the loop ends.

use std::rc::Rc;

use serde_json::Value;

use crate::callback::{self, CallbackError, CallbackQuery, Tokens};
use crate::claims::ClaimSchema;
use crate::config::{SessionConfig, UnauthAction};
use crate::discovery::ProviderMetadata;
use crate::http::{HttpRequest, Target};
use crate::jwt::{self, Jwks};
use crate::login::{self, FlowState, LoginRandom, LoginRoute, RequestFacts, Start};
use crate::provider::{self, Cache, FetchKind, ProviderState, Rotation};
use crate::reply::{Denial, DenialReason, Reply};
use crate::revocation::Revocation;
use crate::route::Route;
use crate::secret::Secret;
use crate::session::{self, CookieAttrs, Session, SessionKey, UpstreamHeaders};
use crate::signed_in;

/// A source of random bytes (the caller's CSPRNG; fixed bytes in tests).
pub trait Entropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), String>;
}

/// What the browser flow reads from a request.
#[derive(Clone)]
pub struct BrowserRequest {
    /// `http` or `https` as the client sees it.
    pub scheme: String,
    /// `Host` / `:authority`.
    pub host: String,
    /// Path and query.
    pub path: String,
    pub accept: Option<String>,
    /// The parsed `Cookie` header(s).
    pub cookies: Vec<(String, String)>,
}

impl BrowserRequest {
    fn facts(&self) -> RequestFacts<'_> {
        RequestFacts {
            scheme: &self.scheme,
            host: &self.host,
            path: &self.path,
            accept: self.accept.as_deref(),
            cookies: &self.cookies,
        }
    }

    fn is_navigation(&self) -> bool {
        login::is_browser_navigation(self.accept.as_deref())
    }

    fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or("/")
    }
}

/// What the caller does next.
#[derive(Debug)]
pub enum Step {
    /// Answer the client (the reply carries its `Set-Cookie` headers).
    Respond(Reply, Event),
    /// Send the request on to the upstream.
    Forward(Forward),
    /// Fetch this provider document (at the URL given), store it or the
    /// failure time, and [`Flow::advance`] again.
    Fetch(FetchKind, String, Box<HttpRequest>),
    /// Make this provider call and give its answer to [`Flow::on_response`].
    Call(Box<HttpRequest>),
}

/// A request going to the upstream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Forward {
    /// Identity headers to set (values checked:
    /// [`signed_in::checked_headers`]).
    pub headers: UpstreamHeaders,
    /// A new `Cookie` header without the session's cookies (`Some("")`:
    /// remove it); `None`: leave it.
    pub cookie_header: Option<String>,
    /// `Set-Cookie` headers for the upstream's response.
    pub set_cookies: Vec<String>,
    /// With a session (else `unauth_action: "pass"`).
    pub signed_in: bool,
    /// The access token was refreshed on the way.
    pub refreshed: bool,
}

/// What a local reply means, for statistics and logs (no secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Sent to the redirect URI's host first.
    HostCorrected,
    /// Sent to the provider's login.
    LoginStarted,
    /// A callback made a session.
    LoggedIn,
    /// A callback failed (the reason is safe to log).
    LoginFailed(String),
    /// No session, and no login for this request (401).
    Unauthenticated,
    /// The session lacks a required scope (403).
    Forbidden,
    /// The provider could not be used (503).
    ProviderUnavailable(String),
    LoggedOut,
    /// The route's config cannot serve logins (500).
    Misconfigured(String),
    /// Refused for this reason (a bearer request, a call budget spent, an
    /// identity header Envoy would refuse, a provider without a cluster).
    Denied(Denial),
    /// A back-channel logout token was accepted: its sessions are ended.
    BackchannelLogout,
    /// A back-channel logout request was refused (400; the reason is safe
    /// to log).
    BackchannelRefused(String),
}

impl Event {
    /// The `denied.<reason>` counter this reply counts in, if any.
    pub fn reason(&self) -> Option<DenialReason> {
        match self {
            Event::HostCorrected | Event::LoginStarted | Event::LoggedIn | Event::LoggedOut => None,
            Event::BackchannelLogout => None,
            Event::BackchannelRefused(_) => Some(DenialReason::BadRequest),
            Event::LoginFailed(_) => None,
            Event::Unauthenticated => Some(DenialReason::Unauthenticated),
            Event::Forbidden => Some(DenialReason::InsufficientScope),
            Event::ProviderUnavailable(_) => Some(DenialReason::ProviderUnavailable),
            Event::Misconfigured(_) => Some(DenialReason::BadConfig),
            Event::Denied(d) => Some(d.reason()),
        }
    }
}

/// Opens a sealed session value (the reassembled session cookie); a
/// caller may answer from a cache keyed by the value. See
/// [`session::unseal`].
pub type Unseal<'a> = &'a mut dyn FnMut(&str) -> Result<Rc<Session>, session::SessionError>;

/// One browser request in progress.
pub struct Flow {
    req: BrowserRequest,
    stage: Stage,
    /// `Set-Cookie` headers for whatever reply or response ends the flow.
    set_cookies: Vec<String>,
    refreshed: bool,
    /// A logout's session, for the deny-list ([`Flow::take_revocation`]).
    revocation: Option<Revocation>,
    /// Why a refreshed ID token was refused ([`Flow::take_rejected_refresh`]).
    rejected_refresh: Option<String>,
    /// The request's session cookie value (chunks joined), when it had one.
    opened_from: Option<String>,
    /// That value and the session saved in its place ([`Flow::take_resealed`]).
    resealed: Option<(String, Rc<Session>)>,
}

enum Stage {
    Unauthenticated,
    Start,
    Callback {
        flow: FlowState,
        code: String,
    },
    AwaitTokens {
        flow: FlowState,
    },
    Verify {
        flow: FlowState,
        tokens: Tokens,
    },
    AwaitUserinfo {
        flow: FlowState,
        session: Session,
    },
    /// `changed`: the session is no longer as opened from the cookie
    /// (its tokens were refreshed, or it is new).
    SignedIn {
        session: Rc<Session>,
        changed: bool,
    },
    AwaitRefresh {
        session: Session,
    },
    /// A refresh answer with an ID token: verified before anything uses it.
    VerifyRefresh {
        session: Session,
        tokens: Tokens,
    },
    Logout {
        session: Option<Session>,
        /// Tokens still to revoke, with their `token_type_hint`.
        revoke: Vec<(Secret, &'static str)>,
    },
    AwaitRevoke {
        session: Option<Session>,
        revoke: Vec<(Secret, &'static str)>,
    },
    Failed(CallbackError),
    /// A step is in flight or the flow has ended.
    Done,
}

impl Flow {
    /// Sorts a request: the logout path, the login callback, a request with
    /// a valid session, or one without.
    pub fn begin(login: &LoginRoute<'_>, req: BrowserRequest, now: u64) -> Flow {
        let (key, name) = (login.key, login.session.cookie_name.as_str());
        Flow::begin_with(login, req, now, &mut |v| {
            session::unseal(key, name, v).map(Rc::new)
        })
    }

    /// [`Flow::begin`], with the session opened by `unseal` (e.g. from a
    /// cache of recently opened sessions). Timeouts are checked here, at
    /// `now`, whatever `unseal` answers.
    pub fn begin_with(
        login: &LoginRoute<'_>,
        req: BrowserRequest,
        now: u64,
        unseal: Unseal<'_>,
    ) -> Flow {
        let mut flow = Flow {
            req,
            stage: Stage::Done,
            set_cookies: Vec::new(),
            refreshed: false,
            revocation: None,
            rejected_refresh: None,
            opened_from: None,
            resealed: None,
        };
        let (route, cfg) = (login.route, login.session);
        let c = &route.config;
        let name = cfg.cookie_name.as_str();
        flow.opened_from = session::reassemble(name, &flow.req.cookies);
        let decoded = flow
            .opened_from
            .as_deref()
            .ok_or(session::SessionError::Missing)
            .and_then(&mut *unseal)
            .and_then(|s| match s.expired(now, cfg) {
                Some(which) => Err(session::SessionError::Expired(which)),
                None => Ok(s),
            });
        let path = flow.req.path_only().to_string();
        flow.stage = if path == c.logout_path {
            flow.clear_session(cfg);
            let session = decoded.ok().map(Rc::unwrap_or_clone);
            flow.revocation = session.as_ref().map(|s| Revocation::of(s, cfg, now));
            let revoke = match (&session, c.revoke_tokens_on_logout) {
                (Some(s), true) => {
                    let mut r: Vec<(Secret, &'static str)> = Vec::new();
                    if let Some(t) = &s.refresh_token {
                        r.push((t.clone(), "refresh_token"));
                    }
                    r.push((s.access_token.clone(), "access_token"));
                    r
                }
                _ => Vec::new(),
            };
            Stage::Logout { session, revoke }
        } else if login::is_callback(route, &path) {
            flow.callback_stage(login, now)
        } else {
            match decoded {
                Ok(session) => Stage::SignedIn {
                    session,
                    changed: false,
                },
                Err(_) => {
                    // A cookie that does not open (tampered, foreign key,
                    // expired) is no session: drop it.
                    if flow
                        .req
                        .cookies
                        .iter()
                        .any(|(k, _)| session::is_session_cookie(name, k))
                    {
                        flow.clear_session(cfg);
                    }
                    Stage::Unauthenticated
                }
            }
        };
        flow
    }

    /// Whether the next [`Flow::advance`] may read the provider's
    /// documents: `false` only for a session whose access token is still
    /// good (or was refreshed in this request), which goes to the upstream
    /// without them.
    pub fn needs_provider(&self, route: &Route, now: u64) -> bool {
        match &self.stage {
            Stage::SignedIn { session, .. } => {
                !self.refreshed && signed_in::access_expired(route, session, now)
            }
            _ => true,
        }
    }

    /// The session a logout request ended, to put on the deny-list so that
    /// copies of its cookie stop working too (once; `None` after).
    pub fn take_revocation(&mut self) -> Option<Revocation> {
        self.revocation.take()
    }

    fn callback_stage(&mut self, login: &LoginRoute<'_>, now: u64) -> Stage {
        let (route, cfg, key) = (login.route, login.session, login.key);
        let q = CallbackQuery::parse(&self.req.path);
        let flow = q
            .state
            .as_deref()
            .and_then(|s| login::read_flow(route, key, s, &self.req.cookies, now));
        if let Some(state) = &q.state {
            let name = login::flow_cookie_name(route, state);
            if self.req.cookies.iter().any(|(k, _)| *k == name) {
                // Flow cookies live on the callback path.
                let mut attrs = self.cookie_attrs(cfg);
                attrs.path = self.req.path_only().to_string();
                self.set_cookies
                    .extend(session::clear_cookies(&name, &[], &attrs));
            }
            if let Some(rest) = login::flow_index_without(route, &self.req.cookies, state) {
                let mut attrs = self.cookie_attrs(cfg);
                let index = login::flow_index_name(route);
                if rest.is_empty() {
                    self.set_cookies
                        .extend(session::clear_cookies(&index, &[], &attrs));
                } else {
                    attrs.max_age = Some(login::FLOW_TTL);
                    self.set_cookies
                        .push(session::set_cookie(&index, &rest, &attrs));
                }
            }
        }
        if let Some(error) = q.error {
            return Stage::Failed(CallbackError::Provider {
                error,
                description: q.error_description,
            });
        }
        match (flow, q.code) {
            (None, _) => Stage::Failed(CallbackError::NoFlow),
            (Some(flow), _) if !login::is_flow_redirect(&flow, &self.req.facts()) => {
                Stage::Failed(CallbackError::ElsewhereThanStarted)
            }
            (Some(_), None) => Stage::Failed(CallbackError::MissingCode),
            (Some(flow), Some(code)) => Stage::Callback { flow, code },
        }
    }

    /// Goes on until a reply, a forward, or a provider call.
    pub fn advance(
        &mut self,
        login: &LoginRoute<'_>,
        p: &ProviderState<'_>,
        rng: &mut dyn Entropy,
        now: u64,
    ) -> Step {
        let (route, cfg, key) = (login.route, login.session, login.key);
        let c = &route.config;
        loop {
            match std::mem::replace(&mut self.stage, Stage::Done) {
                Stage::Unauthenticated => match c.unauth_action {
                    UnauthAction::Pass => {
                        return Step::Forward(Forward {
                            cookie_header: session::without_ours(
                                &cfg.cookie_name,
                                &self.req.cookies,
                            ),
                            set_cookies: std::mem::take(&mut self.set_cookies),
                            ..Forward::default()
                        })
                    }
                    UnauthAction::Auth if self.req.is_navigation() => self.stage = Stage::Start,
                    UnauthAction::Auth | UnauthAction::Deny => {
                        let reply = Denial::Unauthenticated.reply(&c.realm);
                        return self.respond(reply, Event::Unauthenticated);
                    }
                },
                Stage::Start => return self.start(login, p, rng, now),
                Stage::Callback { flow, code } => {
                    let m = match self.discovery(route, p, now) {
                        Ok(m) => m,
                        Err(step) => {
                            self.stage = Stage::Callback { flow, code };
                            return step;
                        }
                    };
                    let Some(endpoint) = m.token_endpoint.as_deref() else {
                        return self.unavailable(route, "the provider has no token_endpoint");
                    };
                    // Only the redirect URI this login sent (stored in the
                    // flow), never one made from this request.
                    let redirect = flow.redirect_uri.clone();
                    match callback::token_request(route, endpoint, &redirect, &code, &flow) {
                        Ok(req) => {
                            self.stage = Stage::AwaitTokens { flow };
                            return Step::Call(Box::new(req));
                        }
                        Err(e) => {
                            return self.unavailable(
                                route,
                                &format!("cannot call the token endpoint: {e}"),
                            )
                        }
                    }
                }
                Stage::Verify { flow, tokens } => {
                    return self.verify(login, p, flow, tokens, rng, now)
                }
                Stage::VerifyRefresh { session, tokens } => {
                    match self.verify_refresh(login, p, session, tokens, now) {
                        Ok(stage) => self.stage = stage,
                        Err(step) => return step,
                    }
                }
                Stage::SignedIn { session, changed } => {
                    // One refresh per request at most.
                    if self.refreshed || !signed_in::access_expired(route, &session, now) {
                        return self.signed_in(route, cfg, key, session, changed, rng, now);
                    }
                    if !c.renew_access_token_on_expiry || session.refresh_token.is_none() {
                        // Expired, and not to be renewed: log in again.
                        self.clear_session(cfg);
                        self.stage = Stage::Unauthenticated;
                        continue;
                    }
                    let m = match self.discovery(route, p, now) {
                        Ok(m) => m,
                        Err(step) => {
                            self.stage = Stage::SignedIn { session, changed };
                            return step;
                        }
                    };
                    let Some(endpoint) = m.token_endpoint.as_deref() else {
                        return self.unavailable(route, "the provider has no token_endpoint");
                    };
                    match signed_in::refresh_request(route, endpoint, &session) {
                        Some(Ok(req)) => {
                            self.stage = Stage::AwaitRefresh {
                                session: Rc::unwrap_or_clone(session),
                            };
                            return Step::Call(Box::new(req));
                        }
                        _ => {
                            return self.unavailable(route, "cannot call the token endpoint");
                        }
                    }
                }
                Stage::Logout {
                    session,
                    mut revoke,
                } => {
                    // As APISIX: logout needs the discovery document (for
                    // the end-session endpoint); without it, 503.
                    let m = match self.discovery(route, p, now) {
                        Ok(m) => m,
                        Err(step) => {
                            self.stage = Stage::Logout { session, revoke };
                            return step;
                        }
                    };
                    if let Some((token, hint)) = revoke.pop() {
                        if let Some(req) = m
                            .revocation_endpoint
                            .as_deref()
                            .and_then(|e| revocation_request(route, e, &token, hint).ok())
                        {
                            self.stage = Stage::AwaitRevoke { session, revoke };
                            return Step::Call(Box::new(req));
                        }
                        self.stage = Stage::Logout {
                            session,
                            revoke: Vec::new(),
                        };
                        continue;
                    }
                    let end = m.end_session_endpoint.as_deref();
                    let reply = match signed_in::logout_location(route, end, session.as_ref()) {
                        Some(location) => Reply::redirect(&location),
                        None => Reply::page(200, "Logged out", "You are logged out.", None),
                    };
                    return self.respond(reply, Event::LoggedOut);
                }
                Stage::Failed(e) => return self.failed(e),
                Stage::AwaitTokens { .. }
                | Stage::AwaitUserinfo { .. }
                | Stage::AwaitRefresh { .. }
                | Stage::AwaitRevoke { .. }
                | Stage::Done => {
                    return self.misconfigured("internal: advance while a call is pending".into())
                }
            }
        }
    }

    /// Takes the answer to the provider call of the last [`Step::Call`].
    pub fn on_response(
        &mut self,
        login: &LoginRoute<'_>,
        p: &ProviderState<'_>,
        status: u16,
        body: &[u8],
        rng: &mut dyn Entropy,
        now: u64,
    ) -> Step {
        let route = login.route;
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::AwaitTokens { flow } => {
                self.stage = match callback::parse_tokens(status, body) {
                    Ok(tokens) => Stage::Verify { flow, tokens },
                    Err(e) => Stage::Failed(e),
                };
            }
            Stage::AwaitUserinfo { flow, mut session } => match userinfo(status, body, &session) {
                Ok(info) => {
                    session.userinfo = Some(info);
                    return self.logged_in(login, flow, session, rng, now);
                }
                Err(e) => self.stage = Stage::Failed(e),
            },
            Stage::AwaitRefresh { mut session } => match callback::parse_tokens(status, body) {
                Ok(tokens) if tokens.id_token.is_some() => {
                    self.stage = Stage::VerifyRefresh { session, tokens };
                }
                Ok(tokens) => {
                    signed_in::apply_refresh(route, &mut session, tokens, None, now);
                    self.refreshed = true;
                    self.stage = Stage::SignedIn {
                        session: Rc::new(session),
                        changed: true,
                    };
                }
                Err(CallbackError::Unavailable(why)) => {
                    return self.unavailable(route, &format!("refreshing the session: {why}"))
                }
                Err(_) => {
                    // The provider refused the refresh token (revoked,
                    // expired, session ended there): log in again.
                    self.clear_session(login.session);
                    self.stage = Stage::Unauthenticated;
                }
            },
            Stage::AwaitRevoke { session, revoke } => {
                // A refused revocation does not stop the logout.
                self.stage = Stage::Logout { session, revoke };
            }
            other => {
                self.stage = other;
                return self.misconfigured("internal: a provider answer nobody waits for".into());
            }
        }
        self.advance(login, p, rng, now)
    }

    fn start(
        &mut self,
        login: &LoginRoute<'_>,
        p: &ProviderState<'_>,
        rng: &mut dyn Entropy,
        now: u64,
    ) -> Step {
        let route = login.route;
        if let Err(login::StartError::ForeignHost(host)) =
            login::check_host(route, &self.req.facts())
        {
            return self.foreign_host(&host);
        }
        match login::host_correction(route, &self.req.facts()) {
            Ok(Some(location)) => {
                return self.respond(Reply::redirect(&location), Event::HostCorrected)
            }
            Ok(None) => {}
            Err(e) => return self.misconfigured(format!("{e:?}")),
        }
        let m = match self.discovery(route, p, now) {
            Ok(m) => m,
            Err(step) => {
                self.stage = Stage::Start;
                return step;
            }
        };
        let Some(endpoint) = m.authorization_endpoint.clone() else {
            return self.unavailable(route, "the provider has no authorization_endpoint");
        };
        let mut random = LoginRandom {
            state: [0; 16],
            nonce: [0; 16],
            verifier: [0; 32],
            seal_nonce: [0; 12],
        };
        let filled = rng
            .fill(&mut random.state)
            .and_then(|()| rng.fill(&mut random.nonce))
            .and_then(|()| rng.fill(&mut random.verifier))
            .and_then(|()| rng.fill(&mut random.seal_nonce));
        if let Err(e) = filled {
            return self.misconfigured(format!("no random bytes: {e}"));
        }
        match login::start(login, &endpoint, &self.req.facts(), &random, now) {
            Ok(Start::HostCorrection { location }) => {
                self.respond(Reply::redirect(&location), Event::HostCorrected)
            }
            Ok(Start::Authorize {
                location,
                set_cookies,
            }) => {
                self.set_cookies.extend(set_cookies);
                self.respond(Reply::redirect(&location), Event::LoginStarted)
            }
            Err(login::StartError::ForeignHost(host)) => self.foreign_host(&host),
            Err(e) => self.misconfigured(format!("{e:?}")),
        }
    }

    /// The ID token of a callback: keys (fetched, or fetched again after a
    /// key rotation), then [`callback::finish`]; then userinfo, then the
    /// session.
    fn verify(
        &mut self,
        login: &LoginRoute<'_>,
        p: &ProviderState<'_>,
        flow: FlowState,
        tokens: Tokens,
        rng: &mut dyn Entropy,
        now: u64,
    ) -> Step {
        let route = login.route;
        let m = match self.discovery(route, p, now) {
            Ok(m) => m,
            Err(step) => {
                self.stage = Stage::Verify { flow, tokens };
                return step;
            }
        };
        let Some(uri) = m.jwks_uri.as_deref() else {
            return self.unavailable(route, "the provider has no jwks_uri");
        };
        let jwks = match provider::jwks(p, route.config.jwk_expires_in, now) {
            Cache::Use(j) => j,
            Cache::Fetch => {
                self.stage = Stage::Verify { flow, tokens };
                return fetch(FetchKind::Jwks, uri);
            }
            Cache::Unavailable => {
                return self.unavailable(route, "the provider's JWKS could not be fetched")
            }
        };
        let keys: &Jwks = &jwks.value;
        match callback::finish(route, &flow, tokens.clone(), keys, &m.issuer, now) {
            Ok(session) => match (route.config.set_userinfo_header, &m.userinfo_endpoint) {
                (true, Some(endpoint)) => match userinfo_request(endpoint, &session) {
                    Ok(req) => {
                        self.stage = Stage::AwaitUserinfo { flow, session };
                        Step::Call(Box::new(req))
                    }
                    Err(e) => {
                        self.unavailable(route, &format!("cannot call the userinfo endpoint: {e}"))
                    }
                },
                _ => self.logged_in(login, flow, session, rng, now),
            },
            // The provider may have rotated its keys (the same rule as for
            // bearer tokens).
            Err(CallbackError::UnknownKey(why)) => match provider::rotation(jwks, p, now) {
                Rotation::Refetch => {
                    self.stage = Stage::Verify { flow, tokens };
                    fetch(FetchKind::Jwks, uri)
                }
                Rotation::Unavailable => self.unavailable(
                    route,
                    "the ID token's key is not in the cached JWKS and the provider cannot be \
                     reached for a new one",
                ),
                Rotation::UnknownKey => self.failed(CallbackError::UnknownKey(why)),
            },
            Err(e) => self.failed(e),
        }
    }

    /// A refresh answer's ID token, checked like the login's (signature,
    /// issuer, audience) and for the same `sub` and `iss` as the session's
    /// (OpenID Connect Core 12.2): the next stage (signed in with the new
    /// tokens, or no session when it fails), or a step to get the keys.
    fn verify_refresh(
        &mut self,
        login: &LoginRoute<'_>,
        p: &ProviderState<'_>,
        mut session: Session,
        tokens: Tokens,
        now: u64,
    ) -> Result<Stage, Step> {
        let route = login.route;
        let m = match self.discovery(route, p, now) {
            Ok(m) => m,
            Err(step) => {
                self.stage = Stage::VerifyRefresh { session, tokens };
                return Err(step);
            }
        };
        let Some(uri) = m.jwks_uri.as_deref() else {
            return Err(self.unavailable(route, "the provider has no jwks_uri"));
        };
        let jwks = match provider::jwks(p, route.config.jwk_expires_in, now) {
            Cache::Use(j) => j,
            Cache::Fetch => {
                self.stage = Stage::VerifyRefresh { session, tokens };
                return Err(fetch(FetchKind::Jwks, uri));
            }
            Cache::Unavailable => {
                return Err(self.unavailable(route, "the provider's JWKS could not be fetched"))
            }
        };
        match signed_in::verify_refreshed_id_token(
            route,
            &session,
            &tokens,
            &jwks.value,
            &m.issuer,
            now,
        ) {
            Ok(claims) => {
                signed_in::apply_refresh(route, &mut session, tokens, Some(claims), now);
                self.refreshed = true;
                Ok(Stage::SignedIn {
                    session: Rc::new(session),
                    changed: true,
                })
            }
            // The provider may have rotated its keys (the same rule as for
            // bearer tokens).
            Err(CallbackError::UnknownKey(_))
                if provider::rotation(jwks, p, now) == Rotation::Refetch =>
            {
                self.stage = Stage::VerifyRefresh { session, tokens };
                Err(fetch(FetchKind::Jwks, uri))
            }
            Err(CallbackError::UnknownKey(_))
                if provider::rotation(jwks, p, now) == Rotation::Unavailable =>
            {
                self.stage = Stage::VerifyRefresh { session, tokens };
                Err(self.unavailable(
                    route,
                    "the refreshed ID token's key is not in the cached JWKS and the provider \
                     cannot be reached for a new one",
                ))
            }
            Err(e) => {
                // Never forwarded nor kept: the session ends (log in again).
                self.rejected_refresh = Some(e.to_string());
                self.clear_session(login.session);
                Ok(Stage::Unauthenticated)
            }
        }
    }

    /// Why a refreshed ID token was refused, if one was (for the log).
    pub fn take_rejected_refresh(&mut self) -> Option<String> {
        self.rejected_refresh.take()
    }

    /// The request's cookie value and the session just saved in its place
    /// (touched, renewed or refreshed), once: a cache of opened sessions
    /// may answer that session for that value from now on
    /// ([`crate::exchange::Host::resealed`]).
    pub fn take_resealed(&mut self) -> Option<(String, Rc<Session>)> {
        self.resealed.take()
    }

    /// The end of a login: the session cookie, the flow cookie gone, back
    /// to where the browser started.
    fn logged_in(
        &mut self,
        login: &LoginRoute<'_>,
        flow: FlowState,
        mut session: Session,
        rng: &mut dyn Entropy,
        now: u64,
    ) -> Step {
        let (cfg, key) = (login.session, login.key);
        // The session's id (for logout's deny-list).
        if let Err(e) = rng.fill(&mut session.id.0) {
            return self.misconfigured(format!("no random bytes: {e}"));
        }
        if let Err(e) = self.save(cfg, key, &session, rng, now) {
            return self.misconfigured(e);
        }
        self.respond(Reply::redirect(&flow.original_url), Event::LoggedIn)
    }

    /// A request with a valid session: scopes, identity headers, and the
    /// cookie again when the session changed or its timeouts moved.
    #[allow(clippy::too_many_arguments)]
    fn signed_in(
        &mut self,
        route: &Route,
        cfg: &SessionConfig,
        key: &SessionKey,
        mut session: Rc<Session>,
        changed: bool,
        rng: &mut dyn Entropy,
        now: u64,
    ) -> Step {
        let c = &route.config;
        // `claim_schema` first, as APISIX: over {user, access_token,
        // id_token}, on every request (so a changed schema applies to
        // existing sessions at once).
        if let Some(schema) = &c.claim_schema {
            let claims = ClaimSchema::session_claims(
                session.userinfo.as_ref(),
                session.access_token.expose(),
                &session.id_claims,
            );
            if let Err(m) = schema.check(&claims) {
                let denial = Denial::InvalidToken(m.to_string());
                let reply = denial.reply(&c.realm);
                return self.respond(reply, Event::Denied(denial));
            }
        }
        if !c.required_scopes.is_empty() {
            let granted = session_scopes(&session);
            let ok = granted.is_some_and(|g| c.required_scopes.iter().all(|r| g.contains(r)));
            if !ok {
                let reply = Denial::InsufficientScope(c.required_scopes.clone()).reply(&c.realm);
                return self.respond(reply, Event::Forbidden);
            }
        }
        // A session as opened from the cookie keeps its headers (built on
        // its first request); a changed one gets new ones.
        let headers = if changed {
            signed_in::checked_headers(route, &session)
        } else {
            signed_in::opened_headers(route, &session)
        };
        let Some(headers) = headers else {
            let denial =
                Denial::ProviderUnavailable("an identity header value is not valid".into());
            let reply = denial.reply(crate::exchange::DEFAULT_REALM);
            return self.respond(reply, Event::Denied(denial));
        };
        // Shared with the host's cache of opened sessions: copied only when
        // the timestamps move.
        let moved = session.refresh_due(now, cfg) != session::Refresh::None;
        if moved {
            Rc::make_mut(&mut session).refresh(now, cfg);
        }
        if changed || moved {
            if let Err(e) = self.save(cfg, key, &session, rng, now) {
                return self.misconfigured(e);
            }
            if let Some(value) = self.opened_from.take() {
                self.resealed = Some((value, session));
            }
        }
        Step::Forward(Forward {
            headers,
            cookie_header: session::without_ours(&cfg.cookie_name, &self.req.cookies),
            set_cookies: std::mem::take(&mut self.set_cookies),
            signed_in: true,
            refreshed: self.refreshed,
        })
    }

    /// The discovery document, or the step that gets it (a fetch, or a 503
    /// right after a failed one).
    fn discovery<'a>(
        &mut self,
        route: &Route,
        p: &ProviderState<'a>,
        now: u64,
    ) -> Result<&'a ProviderMetadata, Step> {
        match provider::discovery(p, now) {
            Cache::Use(d) => Ok(&d.value),
            Cache::Fetch => match provider::fetch(FetchKind::Discovery, &route.config.discovery) {
                Ok(need) => Err(Step::Fetch(need.kind, need.url, need.req)),
                Err(why) => Err(self.unavailable(route, &why)),
            },
            Cache::Unavailable => Err(self.unavailable(
                route,
                "the provider's discovery document could not be fetched",
            )),
        }
    }

    fn cookie_attrs(&self, cfg: &SessionConfig) -> CookieAttrs {
        CookieAttrs::from_config(cfg, self.req.scheme == "https")
    }

    /// Expires the request's session cookies (all chunks).
    fn clear_session(&mut self, cfg: &SessionConfig) {
        let attrs = self.cookie_attrs(cfg);
        let clear = session::clear_cookies(&cfg.cookie_name, &self.req.cookies, &attrs);
        self.set_cookies.extend(clear);
    }

    /// Seals `session` into cookies, replacing the request's.
    fn save(
        &mut self,
        cfg: &SessionConfig,
        key: &SessionKey,
        s: &Session,
        rng: &mut dyn Entropy,
        now: u64,
    ) -> Result<(), String> {
        let mut nonce = [0u8; 12];
        rng.fill(&mut nonce)
            .map_err(|e| format!("no random bytes: {e}"))?;
        let cookies = session::encode(s, key, &cfg.cookie_name, nonce);
        let mut attrs = self.cookie_attrs(cfg);
        attrs.max_age = s.max_age(now, cfg);
        // Drop earlier Set-Cookie values for the same cookies (a cleared
        // stale session, say): the new ones replace them.
        let stored =
            session::set_session_cookies(&cfg.cookie_name, &cookies, &self.req.cookies, &attrs);
        self.set_cookies.retain(|c| {
            let name = c.split('=').next().unwrap_or("");
            !session::is_session_cookie(&cfg.cookie_name, name)
        });
        self.set_cookies.extend(stored);
        Ok(())
    }

    fn respond(&mut self, reply: Reply, event: Event) -> Step {
        let reply = reply.with_cookies(std::mem::take(&mut self.set_cookies));
        Step::Respond(reply, event)
    }

    /// 503: a page for a browser, APISIX's JSON for anything else; `why`
    /// goes to the log only.
    fn unavailable(&mut self, route: &Route, why: &str) -> Step {
        let reply = if self.req.is_navigation() {
            Reply::page(
                503,
                "Identity provider unavailable",
                "The identity provider cannot be reached now. Try again later.",
                Some((self.req.path.as_str(), "Try again")),
            )
        } else {
            Denial::ProviderUnavailable(why.to_string()).reply(&route.config.realm)
        };
        self.respond(reply, Event::ProviderUnavailable(why.to_string()))
    }

    fn misconfigured(&mut self, why: String) -> Step {
        let reply = Denial::BadRouteConfig(why.clone()).reply("apisix");
        self.respond(reply, Event::Misconfigured(why))
    }

    /// A login that would make its redirect URI from a host the route does
    /// not serve: 400, no provider call.
    fn foreign_host(&mut self, host: &str) -> Step {
        let reply = Reply::page(
            400,
            "Login not possible here",
            "This address cannot start a login: its host is not one this site signs in on.",
            None,
        );
        self.respond(
            reply,
            Event::LoginFailed(format!(
                "a login on host {host} refused: not one of the route's hosts and not loopback \
                 (give the route \"hosts\" or an absolute redirect_uri)"
            )),
        )
    }

    /// A callback that cannot finish: a page that says why, with a link to
    /// start again (never a redirect, so never a loop).
    fn failed(&mut self, e: CallbackError) -> Step {
        let link = login::start_again_path(&self.req.path);
        let reply = Reply::page(
            e.status(),
            "Login failed",
            &e.to_string(),
            Some((link.as_str(), "Sign in again")),
        );
        self.respond(reply, Event::LoginFailed(e.log_text()))
    }
}

fn fetch(kind: FetchKind, url: &str) -> Step {
    match provider::fetch(kind, url) {
        Ok(need) => Step::Fetch(need.kind, need.url, need.req),
        Err(why) => Step::Respond(
            Denial::ProviderUnavailable(why.clone()).reply("apisix"),
            Event::ProviderUnavailable(why),
        ),
    }
}

/// The userinfo request for a fresh session's access token.
fn userinfo_request(endpoint: &str, s: &Session) -> Result<HttpRequest, crate::http::UrlError> {
    let mut req = Target::parse(endpoint)?.request("GET");
    req.headers.push((
        "authorization".into(),
        format!("Bearer {}", s.access_token.expose()),
    ));
    req.headers
        .push(("accept".into(), "application/json".into()));
    Ok(req)
}

/// The userinfo answer: a JSON object whose `sub` is the ID token's
/// (OpenID Connect Core 5.3.2).
fn userinfo(status: u16, body: &[u8], s: &Session) -> Result<Value, CallbackError> {
    if status != 200 {
        return Err(CallbackError::Unavailable(format!(
            "the userinfo endpoint answered HTTP {status}"
        )));
    }
    let info: Value = serde_json::from_slice(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| {
            CallbackError::Unavailable("the userinfo answer is not a JSON object".into())
        })?;
    let sub = |v: &Value| v.get("sub").and_then(Value::as_str).map(str::to_string);
    if sub(&info).is_none()
        || sub(&info).as_deref() != s.id_claims.get("sub").and_then(Value::as_str)
    {
        return Err(CallbackError::BadIdToken(
            "the userinfo sub does not match the ID token's".into(),
        ));
    }
    Ok(info)
}

/// An RFC 7009 revocation request.
fn revocation_request(
    route: &Route,
    endpoint: &str,
    token: &Secret,
    hint: &str,
) -> Result<HttpRequest, crate::http::UrlError> {
    let c = &route.config;
    crate::introspection::client_form_post(
        endpoint,
        &[("token", token.expose()), ("token_type_hint", hint)],
        &c.client_id,
        c.client_secret.as_ref(),
        crate::introspection::ClientAuth::from(c.token_endpoint_auth_method),
    )
}

/// The scopes granted to a session, as APISIX reads them: the access
/// token's `scope` claim (a JWT got from the token endpoint), else the ID
/// token's; `None` when neither says.
fn session_scopes(s: &Session) -> Option<Vec<String>> {
    let from_access = jwt::unverified_payload(s.access_token.expose())
        .and_then(|p| p.get("scope").and_then(Value::as_str).map(str::to_string));
    let scope = from_access.or_else(|| {
        s.id_claims
            .get("scope")
            .and_then(Value::as_str)
            .map(str::to_string)
    })?;
    Some(scope.split_whitespace().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{Effect, Exchange, Host};
    use crate::jwt::tests::{
        claims, jwks, provider_keys, rsa_jwk, test_keys, token, with, CLIENT, ISS, NOW,
    };
    use crate::jwt::Alg;
    use crate::provider::{record, Documents, Fetched, Known};
    use serde_json::json;
    use std::rc::Rc;

    const KC: &str = "https://idp.example/realms/quickstart-realm/protocol/openid-connect";

    fn route(extra: Value) -> Route {
        let mut v = json!({
            "client_id": CLIENT,
            "client_secret": "s3cr3t",
            "discovery": format!("{ISS}/.well-known/openid-configuration"),
            "bearer_only": false,
            "scope": "openid profile",
            "redirect_uri": "http://localhost:9080/anything/callback",
            "session": {"secret": "0123456789abcdef0123"},
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        Route::from_json(&v.to_string()).unwrap()
    }

    fn metadata() -> ProviderMetadata {
        ProviderMetadata {
            issuer: ISS.into(),
            authorization_endpoint: Some(format!("{KC}/auth")),
            token_endpoint: Some(format!("{KC}/token")),
            userinfo_endpoint: Some(format!("{KC}/userinfo")),
            jwks_uri: Some(format!("{KC}/certs")),
            end_session_endpoint: Some(format!("{KC}/logout")),
            revocation_endpoint: Some(format!("{KC}/revoke")),
            ..ProviderMetadata::default()
        }
    }

    /// Counting bytes: every draw differs, every run is the same.
    struct Counter(u8);
    impl Entropy for Counter {
        fn fill(&mut self, buf: &mut [u8]) -> Result<(), String> {
            for b in buf {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
            Ok(())
        }
    }

    /// Plays the provider's and the host's part, through the same loop as
    /// the filter ([`Exchange`]): documents for `Fetch` (what `metadata`
    /// and `keys` hold; the answer's body only has to pass the core's
    /// check), `answer` for `Call`.
    struct Provider {
        metadata: Option<ProviderMetadata>,
        keys: Jwks,
        discovery: Option<Fetched<ProviderMetadata>>,
        jwks: Option<Fetched<Jwks>>,
        discovery_failed_at: Option<u64>,
        jwks_failed_at: Option<u64>,
        fetches: Vec<FetchKind>,
        calls: Vec<HttpRequest>,
        rng: Counter,
    }

    impl Entropy for Provider {
        fn fill(&mut self, buf: &mut [u8]) -> Result<(), String> {
            self.rng.fill(buf)
        }
    }

    impl Host for Provider {
        fn documents(&mut self, _: &str) -> Documents {
            Documents {
                discovery: Known {
                    doc: self.discovery.clone().map(Rc::new),
                    failed_at: self.discovery_failed_at,
                },
                jwks_uri: self
                    .discovery
                    .as_ref()
                    .and_then(|d| d.value.jwks_uri.clone()),
                jwks: Some(Known {
                    doc: self.jwks.clone().map(Rc::new),
                    failed_at: self.jwks_failed_at,
                }),
            }
        }
        fn read_document(&mut self, _: FetchKind, _: &str) -> Option<Vec<u8>> {
            None
        }
        fn write_document(&mut self, kind: FetchKind, _: &str, rec: &[u8]) {
            let (fetched, failed, _) = record::split(rec).unwrap();
            match (kind, fetched, failed) {
                (FetchKind::Discovery, _, Some(t)) => self.discovery_failed_at = Some(t),
                (FetchKind::Jwks, _, Some(t)) => self.jwks_failed_at = Some(t),
                (FetchKind::Discovery, Some(t), None) => {
                    self.discovery = self.metadata.clone().map(|value| Fetched {
                        value,
                        fetched_at: t,
                    })
                }
                (FetchKind::Jwks, Some(t), None) => {
                    self.jwks = Some(Fetched {
                        value: self.keys.clone(),
                        fetched_at: t,
                    })
                }
                (_, None, None) => panic!("an empty record"),
            }
        }
        fn claim(&mut self, _: FetchKind, _: &str, _: u64, _: u64) -> bool {
            true
        }
        fn release(&mut self, _: FetchKind, _: &str, _: u64) {}
    }

    impl Provider {
        fn new() -> Provider {
            Provider {
                metadata: Some(metadata()),
                keys: provider_keys(),
                discovery: None,
                jwks: None,
                discovery_failed_at: None,
                jwks_failed_at: None,
                fetches: Vec::new(),
                calls: Vec::new(),
                rng: Counter(0),
            }
        }

        /// The answer to a document fetch.
        fn document(&self, kind: FetchKind) -> (u16, Vec<u8>) {
            let body = match (kind, &self.metadata) {
                (FetchKind::Discovery, Some(m)) => json!({"issuer": m.issuer}),
                (FetchKind::Discovery, None) => return (500, Vec::new()),
                (FetchKind::Jwks, _) => json!({"keys": [rsa_jwk(&test_keys().rsa_a, "rsa-a")]}),
            };
            (200, body.to_string().into_bytes())
        }

        /// Runs the flow to its end.
        fn drive(
            &mut self,
            route: &Route,
            flow: Flow,
            now: u64,
            mut answer: impl FnMut(&HttpRequest) -> (u16, Vec<u8>),
        ) -> Step {
            self.rng = Counter(0);
            let mut ex = Exchange::browser(flow);
            let mut effect = ex.run(route, self, now);
            for _ in 0..10 {
                effect = match effect {
                    Effect::Fetch { kind, pending, .. } => {
                        self.fetches.push(kind);
                        let (status, body) = self.document(kind);
                        ex.on_answer(route, pending, status, &body, self, now)
                    }
                    Effect::Call(req, pending) => {
                        let (status, body) = answer(&req);
                        self.calls.push(*req);
                        ex.on_answer(route, pending, status, &body, self, now)
                    }
                    Effect::Reply(reply, event) => return Step::Respond(reply, event),
                    Effect::Forward(f) => return Step::Forward(f),
                    Effect::Allow(a) => panic!("a browser request allowed as a bearer: {a:?}"),
                    Effect::ReadBody { .. } => panic!("a browser request asked for its body"),
                };
            }
            panic!("the flow does not end");
        }

        fn state(&self) -> ProviderState<'_> {
            ProviderState {
                discovery: self.discovery.as_ref(),
                jwks: self.jwks.as_ref(),
                ..ProviderState::default()
            }
        }
    }

    fn lr(r: &Route) -> LoginRoute<'_> {
        LoginRoute::of(r).unwrap()
    }

    fn request(host: &str, path: &str, cookies: &[(String, String)]) -> BrowserRequest {
        BrowserRequest {
            scheme: "http".into(),
            host: host.into(),
            path: path.into(),
            accept: Some("text/html,application/xhtml+xml;q=0.9,*/*;q=0.8".into()),
            cookies: cookies.to_vec(),
        }
    }

    fn api(req: BrowserRequest) -> BrowserRequest {
        BrowserRequest {
            accept: Some("application/json".into()),
            ..req
        }
    }

    fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn set_cookies(r: &Reply) -> Vec<&str> {
        r.headers
            .iter()
            .filter(|(k, _)| k == "set-cookie")
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The cookies a browser keeps from `Set-Cookie` values (expired ones
    /// removed).
    fn jar(mut jar: Vec<(String, String)>, set: &[&str]) -> Vec<(String, String)> {
        for c in set {
            let pair = c.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            jar.retain(|(n, _)| n != k);
            if !c.contains("Max-Age=0") {
                jar.push((k.to_string(), v.to_string()));
            }
        }
        jar
    }

    fn query_param(url: &str, key: &str) -> Option<String> {
        url::Url::parse(url)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    fn form(req: &HttpRequest) -> Vec<(String, String)> {
        url::form_urlencoded::parse(req.body.as_deref().unwrap_or_default())
            .into_owned()
            .collect()
    }

    fn respond(step: Step) -> (Reply, Event) {
        match step {
            Step::Respond(r, e) => (r, e),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn forward(step: Step) -> Forward {
        match step {
            Step::Forward(f) => f,
            other => panic!("expected a forward, got {other:?}"),
        }
    }

    fn token_answer(access: &str, nonce: &str, sub: &str) -> Vec<u8> {
        let id = token(
            Alg::RS256,
            Some("rsa-a"),
            &with(with(claims(), "nonce", json!(nonce)), "sub", json!(sub)),
        );
        json!({
            "access_token": access,
            "id_token": id,
            "refresh_token": "rt-1",
            "expires_in": 300,
            "token_type": "Bearer",
        })
        .to_string()
        .into_bytes()
    }

    /// Starts a login on `route` and returns the browser's cookies and the
    /// authorization URL.
    fn start(route: &Route, p: &mut Provider) -> (Vec<(String, String)>, String) {
        let flow = Flow::begin(
            &lr(route),
            request("localhost:9080", "/anything/test?x=1", &[]),
            NOW,
        );
        let (reply, event) = respond(p.drive(route, flow, NOW, |_| panic!("no call")));
        assert_eq!(event, Event::LoginStarted);
        assert_eq!(reply.status, 302);
        let location = header(&reply, "location").unwrap().to_string();
        (jar(vec![], &set_cookies(&reply)), location)
    }

    /// A whole login; returns the browser's cookies afterwards.
    fn login(route: &Route, p: &mut Provider) -> Vec<(String, String)> {
        let (cookies, location) = start(route, p);
        let state = query_param(&location, "state").unwrap();
        let nonce = query_param(&location, "nonce").unwrap();
        let cb = format!("/anything/callback?code=the-code&state={state}");
        let flow = Flow::begin(&lr(route), request("localhost:9080", &cb, &cookies), NOW);
        let (reply, event) = respond(p.drive(route, flow, NOW, |req| {
            if req.path.ends_with("/token") {
                (200, token_answer("at-1", &nonce, "user-1"))
            } else {
                (
                    200,
                    br#"{"sub":"user-1","email":"jack@example.com"}"#.to_vec(),
                )
            }
        }));
        assert_eq!(event, Event::LoggedIn, "{}", reply.body);
        assert_eq!(
            header(&reply, "location"),
            Some("http://localhost:9080/anything/test?x=1")
        );
        jar(cookies, &set_cookies(&reply))
    }

    #[test]
    fn a_browser_without_a_session_is_sent_to_the_provider() {
        let r = route(json!({"use_pkce": true, "authorization_params": {"prompt": "login"}}));
        let mut p = Provider::new();

        // The tutorial: opened on 127.0.0.1, redirect URI on localhost.
        let flow = Flow::begin(
            &lr(&r),
            request("127.0.0.1:9080", "/anything/test", &[]),
            NOW,
        );
        let (reply, event) = respond(p.drive(&r, flow, NOW, |_| panic!("no call")));
        assert_eq!(event, Event::HostCorrected);
        assert_eq!(
            header(&reply, "location"),
            Some("http://localhost:9080/anything/test")
        );
        assert!(set_cookies(&reply).is_empty());
        assert!(
            p.fetches.is_empty(),
            "no provider call before the host is right"
        );

        let (cookies, location) = start(&r, &mut p);
        assert_eq!(p.fetches, vec![FetchKind::Discovery]);
        assert!(location.starts_with(&format!("{KC}/auth?")), "{location}");
        for (k, v) in [
            ("response_type", "code"),
            ("client_id", CLIENT),
            ("scope", "openid profile"),
            ("redirect_uri", "http://localhost:9080/anything/callback"),
            ("code_challenge_method", "S256"),
            ("prompt", "login"),
        ] {
            assert_eq!(query_param(&location, k).as_deref(), Some(v), "{k}");
        }
        let state = query_param(&location, "state").unwrap();
        assert_eq!(cookies.len(), 2);
        assert_eq!(cookies[0].0, format!("session_flow_{state}"));
        assert_eq!(
            (cookies[1].0.as_str(), cookies[1].1.as_str()),
            ("session_flow_index", state.as_str())
        );
    }

    #[test]
    fn unauthenticated_requests_that_are_not_sent_to_login() {
        let mut p = Provider::new();
        let r = route(json!({}));
        let flow = Flow::begin(
            &lr(&r),
            api(request("localhost:9080", "/anything/test", &[])),
            NOW,
        );
        let (reply, event) = respond(p.drive(&r, flow, NOW, |_| panic!("no call")));
        assert_eq!((reply.status, event), (401, Event::Unauthenticated));

        let r = route(json!({"unauth_action": "deny"}));
        let flow = Flow::begin(
            &lr(&r),
            request("localhost:9080", "/anything/test", &[]),
            NOW,
        );
        assert_eq!(respond(p.drive(&r, flow, NOW, |_| panic!())).0.status, 401);

        let r = route(json!({"unauth_action": "pass"}));
        let c = vec![("app".to_string(), "1".to_string())];
        let flow = Flow::begin(
            &lr(&r),
            request("localhost:9080", "/anything/test", &c),
            NOW,
        );
        let f = forward(p.drive(&r, flow, NOW, |_| panic!()));
        assert_eq!(f, Forward::default(), "forwarded as it came");
        assert!(p.fetches.is_empty());
    }

    #[test]
    fn login_then_signed_in_requests() {
        let r = route(json!({"use_pkce": true}));
        let mut p = Provider::new();
        let cookies = login(&r, &mut p);
        assert_eq!(p.fetches, vec![FetchKind::Discovery, FetchKind::Jwks]);

        // The code exchange: PKCE verifier, exact redirect URI, client auth.
        let token_call = &p.calls[0];
        assert_eq!(token_call.method, "POST");
        let f = form(token_call);
        let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("grant_type"), Some("authorization_code"));
        assert_eq!(get("code"), Some("the-code"));
        assert_eq!(
            get("redirect_uri"),
            Some("http://localhost:9080/anything/callback")
        );
        assert!(get("code_verifier").is_some_and(|v| v.len() >= 43));
        // Userinfo with the new access token.
        assert!(p.calls[1].path.ends_with("/userinfo"));
        assert!(p.calls[1]
            .headers
            .contains(&("authorization".into(), "Bearer at-1".into())));

        // The flow cookie is gone, the session is set.
        let names: Vec<&str> = cookies.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, vec!["session"]);

        // A request with the session: no provider call.
        let mut with_app = cookies.clone();
        with_app.push(("app".into(), "1".into()));
        let calls = p.calls.len();
        let flow = Flow::begin(
            &lr(&r),
            request("localhost:9080", "/anything/x", &with_app),
            NOW + 10,
        );
        let f = forward(p.drive(&r, flow, NOW + 10, |_| panic!("no call")));
        assert_eq!(p.calls.len(), calls);
        assert!(f.signed_in && !f.refreshed);
        let h = |k: &str| {
            f.headers
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(h("x-access-token").as_deref(), Some("at-1"));
        let id: Value = serde_json::from_slice(
            &base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                h("x-id-token").unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(id["sub"], "user-1");
        let info: Value = serde_json::from_slice(
            &base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                h("x-userinfo").unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(info["email"], "jack@example.com");
        assert_eq!(f.cookie_header.as_deref(), Some("app=1"));
        assert!(
            f.set_cookies.is_empty(),
            "an unchanged session is not re-sent"
        );
    }

    #[test]
    fn callbacks_that_cannot_finish_show_a_page() {
        let r = route(json!({}));
        let mut p = Provider::new();
        let (cookies, location) = start(&r, &mut p);
        let state = query_param(&location, "state").unwrap();
        let nonce = query_param(&location, "nonce").unwrap();
        let run = |p: &mut Provider,
                   path: &str,
                   cookies: &[(String, String)],
                   token: Vec<u8>,
                   info: &'static [u8]| {
            let flow = Flow::begin(&lr(&r), request("localhost:9080", path, cookies), NOW);
            let token = token.clone();
            respond(p.drive(&r, flow, NOW, move |req| {
                if req.path.ends_with("/token") {
                    (200, token.clone())
                } else {
                    (200, info.to_vec())
                }
            }))
        };
        let ok = || token_answer("at", &nonce, "user-1");
        let info: &[u8] = br#"{"sub":"user-1"}"#;

        // No flow cookie for the state, or another state.
        for (path, jar) in [
            (format!("/anything/callback?code=c&state={state}"), vec![]),
            (
                "/anything/callback?code=c&state=other".to_string(),
                cookies.clone(),
            ),
        ] {
            let (reply, event) = run(&mut p, &path, &jar, ok(), info);
            assert_eq!(reply.status, 400, "{path}");
            assert!(matches!(event, Event::LoginFailed(_)));
            assert!(
                reply.body.contains("not started here or has expired"),
                "{}",
                reply.body
            );
            assert!(reply.body.contains("href=\"/anything/\""), "{}", reply.body);
            assert!(header(&reply, "location").is_none(), "never a redirect");
        }
        // The provider's error.
        let path =
            format!("/anything/callback?error=access_denied&error_description=no&state={state}");
        let (reply, _) = run(&mut p, &path, &cookies, ok(), info);
        assert_eq!(reply.status, 400);
        assert!(reply.body.contains("access_denied"), "{}", reply.body);
        assert!(set_cookies(&reply)
            .iter()
            .any(|c| c.starts_with("session_flow_") && c.contains("Max-Age=0")));

        let cb = format!("/anything/callback?code=c&state={state}");
        // Another login's nonce.
        let (reply, _) = run(
            &mut p,
            &cb,
            &cookies,
            token_answer("at", "n-other", "user-1"),
            info,
        );
        assert_eq!(reply.status, 401);
        assert!(reply.body.contains("nonce"), "{}", reply.body);
        // Userinfo about someone else.
        let (reply, _) = run(&mut p, &cb, &cookies, ok(), br#"{"sub":"user-2"}"#);
        assert_eq!(reply.status, 401);
        assert!(reply.body.contains("userinfo sub"), "{}", reply.body);
        // The token endpoint refuses the code, or fails.
        let (reply, _) = run(
            &mut p,
            &cb,
            &cookies,
            br#"{"error":"invalid_grant"}"#.to_vec(),
            info,
        );
        assert_eq!(
            reply.status, 503,
            "a 200 without access_token is the provider's fault"
        );
        let flow = Flow::begin(&lr(&r), request("localhost:9080", &cb, &cookies), NOW);
        let (reply, _) = respond(p.drive(&r, flow, NOW, |_| {
            (400, br#"{"error":"invalid_grant"}"#.to_vec())
        }));
        assert_eq!(reply.status, 400);
        assert!(reply.body.contains("invalid_grant"));
        let flow = Flow::begin(&lr(&r), request("localhost:9080", &cb, &cookies), NOW);
        let (reply, _) = respond(p.drive(&r, flow, NOW, |_| (502, b"bad gateway".to_vec())));
        assert_eq!(reply.status, 503);
        // A flow cookie too old.
        let flow = Flow::begin(
            &lr(&r),
            request("localhost:9080", &cb, &cookies),
            NOW + login::FLOW_TTL + 1,
        );
        let (reply, _) = respond(p.drive(&r, flow, NOW + login::FLOW_TTL + 1, |_| panic!()));
        assert_eq!(reply.status, 400);
    }

    #[test]
    fn rotated_provider_keys_are_fetched_again_at_the_callback() {
        let r = route(json!({"set_userinfo_header": false}));
        let mut p = Provider::new();
        let (cookies, location) = start(&r, &mut p);
        let state = query_param(&location, "state").unwrap();
        let nonce = query_param(&location, "nonce").unwrap();
        // Cached keys from long ago lack the new key "rsa-new".
        p.jwks = Some(Fetched {
            value: jwks(vec![rsa_jwk(&test_keys().rsa_b, "rsa-b")]),
            fetched_at: NOW - 3600,
        });
        p.keys = jwks(vec![rsa_jwk(&test_keys().rsa_a, "rsa-new")]);
        let id = token(
            Alg::RS256,
            Some("rsa-new"),
            &with(claims(), "nonce", json!(nonce)),
        );
        let answer = json!({"access_token": "at", "id_token": id})
            .to_string()
            .into_bytes();
        let cb = format!("/anything/callback?code=c&state={state}");
        let flow = Flow::begin(&lr(&r), request("localhost:9080", &cb, &cookies), NOW);
        let (reply, event) = respond(p.drive(&r, flow, NOW, |_| (200, answer.clone())));
        assert_eq!(event, Event::LoggedIn, "{}", reply.body);
        assert_eq!(p.fetches, vec![FetchKind::Discovery, FetchKind::Jwks]);

        // Fetched just now and still unknown: refused, no second fetch.
        let flow = Flow::begin(&lr(&r), request("localhost:9080", &cb, &cookies), NOW);
        p.keys = jwks(vec![rsa_jwk(&test_keys().rsa_b, "rsa-b")]);
        p.jwks = Some(Fetched {
            value: p.keys.clone(),
            fetched_at: NOW,
        });
        let (reply, _) = respond(p.drive(&r, flow, NOW, |_| (200, answer.clone())));
        assert_eq!(reply.status, 401);
        assert_eq!(p.fetches.len(), 2);
    }

    #[test]
    fn expired_access_tokens_are_refreshed_during_the_request() {
        let r = route(json!({"set_userinfo_header": false}));
        let mut p = Provider::new();
        let cookies = login(&r, &mut p);
        let later = NOW + 300; // expires_in 300, default leeway 0
        let flow = Flow::begin(
            &lr(&r),
            request("localhost:9080", "/anything/x", &cookies),
            later,
        );
        let f = forward(p.drive(&r, flow, later, |req| {
            let f = form(req);
            assert!(f.contains(&("grant_type".into(), "refresh_token".into())));
            assert!(f.contains(&("refresh_token".into(), "rt-1".into())));
            (200, br#"{"access_token":"at-2","expires_in":300}"#.to_vec())
        }));
        assert!(f.refreshed);
        assert!(f.headers.contains(&("x-access-token", "at-2".into())));
        let cookies = jar(
            cookies,
            &f.set_cookies.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        // The refreshed session is the one the browser keeps; the refresh
        // token it did not rotate stays.
        let key = r.session_key.as_ref().unwrap();
        let cfg = r.config.session.as_ref().unwrap();
        let s = session::decode(key, "session", &cookies, later, cfg).unwrap();
        assert_eq!(s.access_token.expose(), "at-2");
        assert_eq!(s.refresh_token.as_ref().unwrap().expose(), "rt-1");

        // Refused: a browser logs in again, an API client gets 401; both
        // lose the cookie.
        let even_later = later + 300;
        let refused = |_: &HttpRequest| (400, br#"{"error":"invalid_grant"}"#.to_vec());
        let flow = Flow::begin(
            &lr(&r),
            request("localhost:9080", "/anything/x", &cookies),
            even_later,
        );
        let (reply, event) = respond(p.drive(&r, flow, even_later, refused));
        assert_eq!((reply.status, event), (302, Event::LoginStarted));
        assert!(set_cookies(&reply)
            .iter()
            .any(|c| c.starts_with("session=;") && c.contains("Max-Age=0")));
        let flow = Flow::begin(
            &lr(&r),
            api(request("localhost:9080", "/anything/x", &cookies)),
            even_later,
        );
        let (reply, _) = respond(p.drive(&r, flow, even_later, refused));
        assert_eq!(reply.status, 401);
        assert!(set_cookies(&reply)
            .iter()
            .any(|c| c.starts_with("session=;")));
        // Unreachable: 503, the session stays.
        let flow = Flow::begin(
            &lr(&r),
            api(request("localhost:9080", "/anything/x", &cookies)),
            even_later,
        );
        let (reply, _) = respond(p.drive(&r, flow, even_later, |_| (500, vec![])));
        assert_eq!(reply.status, 503);
        assert!(set_cookies(&reply).is_empty());
    }

    #[test]
    fn refreshed_id_tokens_are_verified_before_use() {
        // A leeway longer than the token's life: every request refreshes,
        // but one refresh per request at most.
        let r = route(json!({"set_userinfo_header": false, "access_token_expires_leeway": 600}));
        let mut p = Provider::new();
        let cookies = login(&r, &mut p);
        let key = r.session_key.as_ref().unwrap();
        let cfg = r.config.session.as_ref().unwrap();
        let before = session::decode(key, "session", &cookies, NOW, cfg).unwrap();
        assert_ne!(before.id, session::SessionId::default());
        let answer = |id: String| {
            move |_: &HttpRequest| {
                let body = json!({"access_token": "at-2", "id_token": id, "expires_in": 300});
                (200, body.to_string().into_bytes())
            }
        };
        let good = token(
            Alg::RS256,
            Some("rsa-a"),
            &with(claims(), "sub", json!("user-1")),
        );
        let calls = p.calls.len();
        let flow = Flow::begin(
            &lr(&r),
            api(request("localhost:9080", "/anything/x", &cookies)),
            NOW,
        );
        let f = forward(p.drive(&r, flow, NOW, answer(good.clone())));
        assert!(f.refreshed);
        assert_eq!(p.calls.len(), calls + 1, "one refresh");
        let after = jar(
            cookies.clone(),
            &f.set_cookies.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let s = session::decode(key, "session", &after, NOW, cfg).unwrap();
        assert_eq!(s.id_token.as_ref().unwrap().expose(), good);
        assert_eq!(s.id, before.id);

        // Another user's, or a bad signature: the session ends, nothing of
        // it is forwarded.
        let other = token(
            Alg::RS256,
            Some("rsa-a"),
            &with(claims(), "sub", json!("user-2")),
        );
        let mut forged = good.clone();
        forged.truncate(forged.len() - 4);
        forged.push_str("AAAA");
        let foreign = token(
            Alg::RS256,
            Some("rsa-a"),
            &with(
                with(claims(), "sub", json!("user-1")),
                "aud",
                json!("other"),
            ),
        );
        // No `exp`: an ID token always has one (OpenID Connect Core 2),
        // a refreshed one too.
        let mut no_exp = with(claims(), "sub", json!("user-1"));
        no_exp.as_object_mut().unwrap().remove("exp");
        let no_exp = token(Alg::RS256, Some("rsa-a"), &no_exp);
        for bad in [other, forged, foreign, no_exp] {
            let mut flow = Flow::begin(
                &lr(&r),
                api(request("localhost:9080", "/anything/x", &cookies)),
                NOW,
            );
            let first = {
                let st = p.state();
                flow.advance(&lr(&r), &st, &mut Counter(0), NOW)
            };
            let Step::Call(_) = first else {
                panic!("a refresh")
            };
            let st = p.state();
            let (reply, event) = respond(
                flow.on_response(
                    &lr(&r),
                    &st,
                    200,
                    json!({"access_token": "at-3", "id_token": bad})
                        .to_string()
                        .as_bytes(),
                    &mut Counter(0),
                    NOW,
                ),
            );
            assert_eq!((reply.status, event), (401, Event::Unauthenticated));
            assert!(set_cookies(&reply)
                .iter()
                .any(|c| c.starts_with("session=;")));
            assert!(flow.take_rejected_refresh().is_some());
        }
    }

    #[test]
    fn expired_access_tokens_without_renewal_mean_logging_in_again() {
        let r = route(json!({"renew_access_token_on_expiry": false, "set_userinfo_header": false}));
        let mut p = Provider::new();
        let cookies = login(&r, &mut p);
        let later = NOW + 300;
        let flow = Flow::begin(
            &lr(&r),
            request("localhost:9080", "/anything/x", &cookies),
            later,
        );
        let (reply, event) = respond(p.drive(&r, flow, later, |_| panic!("no refresh")));
        assert_eq!((reply.status, event), (302, Event::LoginStarted));
        assert!(set_cookies(&reply)
            .iter()
            .any(|c| c.starts_with("session=;")));
        let flow = Flow::begin(
            &lr(&r),
            api(request("localhost:9080", "/anything/x", &cookies)),
            later,
        );
        let (reply, _) = respond(p.drive(&r, flow, later, |_| panic!("no refresh")));
        assert_eq!(reply.status, 401);
        // Still valid a second earlier.
        let flow = Flow::begin(
            &lr(&r),
            request("localhost:9080", "/anything/x", &cookies),
            later - 1,
        );
        assert!(forward(p.drive(&r, flow, later - 1, |_| panic!())).signed_in);
    }

    #[test]
    fn broken_or_expired_sessions_are_no_session() {
        let r =
            route(json!({"session": {"secret": "0123456789abcdef0123", "absolute_timeout": 600}}));
        let mut p = Provider::new();
        let cookies = login(&r, &mut p);
        let mut tampered = cookies.clone();
        tampered[0].1.replace_range(10..12, "AA");
        let late = NOW + 601;
        for (jar, now) in [(tampered, NOW), (cookies.clone(), late)] {
            let flow = Flow::begin(
                &lr(&r),
                api(request("localhost:9080", "/anything/x", &jar)),
                now,
            );
            let (reply, event) = respond(p.drive(&r, flow, now, |_| panic!("no call")));
            assert_eq!((reply.status, event), (401, Event::Unauthenticated));
            assert!(set_cookies(&reply)
                .iter()
                .any(|c| c.starts_with("session=;")));
        }
        // Another route's secret does not open it.
        let other = route(json!({"session": {"secret": "another-secret-0123456789"}}));
        let flow = Flow::begin(
            &lr(&other),
            api(request("localhost:9080", "/anything/x", &cookies)),
            NOW,
        );
        assert_eq!(
            respond(p.drive(&other, flow, NOW, |_| panic!())).0.status,
            401
        );
    }

    #[test]
    fn sessions_larger_than_a_cookie_are_chunked() {
        let r = route(json!({}));
        let mut p = Provider::new();
        let (cookies, location) = start(&r, &mut p);
        let state = query_param(&location, "state").unwrap();
        let nonce = query_param(&location, "nonce").unwrap();
        let roles: Vec<String> = (0..150)
            .map(|i| format!("role-{i:04}-with-a-long-name"))
            .collect();
        let id = token(
            Alg::RS256,
            Some("rsa-a"),
            &with(
                with(claims(), "nonce", json!(nonce)),
                "realm_access",
                json!({"roles": roles}),
            ),
        );
        let answer = json!({"access_token": "at", "id_token": id, "expires_in": 300})
            .to_string()
            .into_bytes();
        let cb = format!("/anything/callback?code=c&state={state}");
        let flow = Flow::begin(&lr(&r), request("localhost:9080", &cb, &cookies), NOW);
        let (reply, _) = respond(p.drive(&r, flow, NOW, |req| {
            if req.path.ends_with("/token") {
                (200, answer.clone())
            } else {
                (200, br#"{"sub":"user-1"}"#.to_vec())
            }
        }));
        let cookies = jar(cookies, &set_cookies(&reply));
        let names: Vec<&str> = cookies.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            names.len() >= 2
                && names
                    .iter()
                    .enumerate()
                    .all(|(i, n)| *n == format!("session_{}", i + 1)),
            "{names:?}"
        );
        let flow = Flow::begin(
            &lr(&r),
            request("localhost:9080", "/anything/x", &cookies),
            NOW,
        );
        let f = forward(p.drive(&r, flow, NOW, |_| panic!()));
        assert!(f.signed_in);
        assert_eq!(
            f.cookie_header.as_deref(),
            Some(""),
            "no cookie of ours goes upstream"
        );
    }

    #[test]
    fn required_scopes_are_read_from_the_session_tokens() {
        let mut p = Provider::new();
        let r = route(json!({"required_scopes": ["profile"], "set_userinfo_header": false}));
        let cookies = login(&r, &mut p);
        // "at-1" is not a JWT; the ID token fixture grants "openid profile email".
        let flow = Flow::begin(
            &lr(&r),
            request("localhost:9080", "/anything/x", &cookies),
            NOW,
        );
        assert!(forward(p.drive(&r, flow, NOW, |_| panic!())).signed_in);
        let r = route(json!({"required_scopes": ["admin"], "set_userinfo_header": false}));
        let flow = Flow::begin(
            &lr(&r),
            request("localhost:9080", "/anything/x", &cookies),
            NOW,
        );
        let (reply, event) = respond(p.drive(&r, flow, NOW, |_| panic!()));
        assert_eq!((reply.status, event), (403, Event::Forbidden));
        assert_eq!(
            reply.body,
            r#"{"error":"required scopes admin not present"}"#
        );
    }

    #[test]
    fn claim_schema_is_checked_on_every_signed_in_request() {
        let mut p = Provider::new();
        let r = route(json!({"set_userinfo_header": false}));
        let cookies = login(&r, &mut p);
        let with_schema = |sub: &str| {
            route(json!({"set_userinfo_header": false, "claim_schema": {
                "properties": {
                    "id_token": {"properties": {"sub": {"const": sub}}},
                    "access_token": {"const": "at-1"}
                }
            }}))
        };
        let r = with_schema("user-1");
        let flow = Flow::begin(
            &lr(&r),
            request("localhost:9080", "/anything/x", &cookies),
            NOW,
        );
        assert!(forward(p.drive(&r, flow, NOW, |_| panic!())).signed_in);
        // The same session on a route whose schema it does not meet.
        let r = with_schema("user-2");
        let flow = Flow::begin(
            &lr(&r),
            request("localhost:9080", "/anything/x", &cookies),
            NOW,
        );
        let (reply, event) = respond(p.drive(&r, flow, NOW, |_| panic!()));
        assert_eq!(reply.status, 401);
        assert_eq!(
            event,
            Event::Denied(Denial::InvalidToken(
                "claim_schema: const failed at /id_token/sub".into()
            ))
        );
        assert!(header(&reply, "www-authenticate")
            .is_some_and(|v| v.contains("error=\"invalid_token\"")));
    }

    #[test]
    fn logout_revokes_clears_and_ends_the_provider_session() {
        let r = route(json!({
            "logout_path": "/anything/logout",
            "revoke_tokens_on_logout": true,
            "post_logout_redirect_uri": "http://localhost:9080/bye",
            "set_userinfo_header": false,
        }));
        let mut p = Provider::new();
        let cookies = login(&r, &mut p);
        let before = p.calls.len();
        let flow = Flow::begin(
            &lr(&r),
            request("localhost:9080", "/anything/logout", &cookies),
            NOW,
        );
        let key = r.session_key.as_ref().unwrap();
        let cfg = r.config.session.as_ref().unwrap();
        let s = session::decode(key, "session", &cookies, NOW, cfg).unwrap();
        let mut flow = flow;
        assert_eq!(
            flow.take_revocation(),
            Some(Revocation {
                id: s.id,
                until: NOW + cfg.absolute_timeout
            })
        );
        assert_eq!(flow.take_revocation(), None);
        let (reply, event) = respond(p.drive(&r, flow, NOW, |_| (200, vec![])));
        assert_eq!((reply.status, event), (302, Event::LoggedOut));
        let revoked: Vec<Vec<(String, String)>> = p.calls[before..].iter().map(form).collect();
        assert_eq!(revoked.len(), 2);
        assert!(revoked[0].contains(&("token".into(), "at-1".into())));
        assert!(revoked[1].contains(&("token".into(), "rt-1".into())));
        let location = header(&reply, "location").unwrap();
        assert!(location.starts_with(&format!("{KC}/logout?")), "{location}");
        assert!(query_param(location, "id_token_hint").is_some());
        assert_eq!(
            query_param(location, "post_logout_redirect_uri").as_deref(),
            Some("http://localhost:9080/bye")
        );
        assert!(set_cookies(&reply)
            .iter()
            .any(|c| c.starts_with("session=;") && c.contains("Max-Age=0")));

        // No end-session endpoint: to post_logout_redirect_uri; neither: a page.
        p.metadata.as_mut().unwrap().end_session_endpoint = None;
        p.discovery = None;
        let flow = Flow::begin(
            &lr(&r),
            request("localhost:9080", "/anything/logout", &[]),
            NOW,
        );
        let (reply, _) = respond(p.drive(&r, flow, NOW, |_| panic!("nothing to revoke")));
        assert_eq!(
            header(&reply, "location"),
            Some("http://localhost:9080/bye")
        );
        let r = route(json!({"logout_path": "/anything/logout"}));
        let flow = Flow::begin(
            &lr(&r),
            request("localhost:9080", "/anything/logout", &[]),
            NOW,
        );
        let (reply, _) = respond(p.drive(&r, flow, NOW, |_| panic!()));
        assert_eq!(reply.status, 200);
        assert!(reply.body.contains("Logged out"));

        // Discovery unavailable: 503, the cookie is cleared all the same.
        p.metadata = None;
        p.discovery = None;
        let flow = Flow::begin(
            &lr(&r),
            request("localhost:9080", "/anything/logout", &cookies),
            NOW,
        );
        let (reply, _) = respond(p.drive(&r, flow, NOW, |_| panic!()));
        assert_eq!(reply.status, 503);
        assert!(set_cookies(&reply)
            .iter()
            .any(|c| c.starts_with("session=;")));
    }

    #[test]
    fn default_redirect_uri_round_trip() {
        let mut r = route(json!({"redirect_uri": null, "set_userinfo_header": false}));
        let mut p = Provider::new();
        // A host the route does not serve makes no redirect URI.
        let flow = Flow::begin(&lr(&r), request("gw", "/app/page", &[]), NOW);
        let (reply, _) = respond(p.drive(&r, flow, NOW, |_| panic!()));
        assert_eq!(reply.status, 400);
        assert!(p.fetches.is_empty());
        r.hosts = vec!["gw".into()];
        let flow = Flow::begin(&lr(&r), request("gw", "/app/page", &[]), NOW);
        let (reply, _) = respond(p.drive(&r, flow, NOW, |_| panic!()));
        let location = header(&reply, "location").unwrap().to_string();
        assert_eq!(
            query_param(&location, "redirect_uri").as_deref(),
            Some("http://gw/app/page/.apisix/redirect")
        );
        let cookies = jar(vec![], &set_cookies(&reply));
        let state = query_param(&location, "state").unwrap();
        let nonce = query_param(&location, "nonce").unwrap();
        let cb = format!("/app/page/.apisix/redirect?code=c&state={state}");
        let flow = Flow::begin(&lr(&r), request("gw", &cb, &cookies), NOW);
        let (reply, event) = respond(p.drive(&r, flow, NOW, |req| {
            let f = form(req);
            assert!(f.contains(&(
                "redirect_uri".into(),
                "http://gw/app/page/.apisix/redirect".into()
            )));
            (200, token_answer("at", &nonce, "user-1"))
        }));
        assert_eq!(event, Event::LoggedIn, "{}", reply.body);
        assert_eq!(header(&reply, "location"), Some("http://gw/app/page"));
    }
}
