//! State shared by the requests of one VM (one Envoy worker thread).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::rc::Rc;

use lru::LruCache;
use oidc_core::bearer::Allowed;
use oidc_core::route::Route;
use oidc_core::session::{self, Session, SessionError, SessionId, SessionKey};

use crate::long_key::LongKey;
use crate::metrics::Metrics;
use crate::store::Store;
use oidc_core::provider::Intervals;
use oidc_core::settings::{RevocationService, Settings};

use crate::feed::Outbox;

/// Route configs kept per VM before the table is cleared (config versions
/// pile up as routes change).
const MAX_ROUTE_VERSIONS: usize = 1024;

/// `kid`s still unknown after a JWKS refetch, remembered per VM.
const UNKNOWN_KIDS: usize = 1024;
/// Tokens the introspection endpoint refused, remembered per VM.
const REFUSED_TOKENS: usize = 4096;
/// Sessions whose back-channel keys are kept, per VM.
const SUBJECT_KEYS: usize = 4096;

/// A value of the deny-lists' version (`None`: no logout yet).
pub type Version = Option<[u8; oidc_core::revocation::VERSION_LEN]>;

/// One route config version, parsed once per VM.
pub struct RouteEntry {
    /// A number unique within this VM, part of the token-cache key.
    pub id: u64,
    /// The parsed config, or why it cannot be used.
    pub route: Result<Rc<Route>, String>,
}

/// Opened sessions: sealed value → (route id, session).
type Opened = LruCache<LongKey, (u64, Rc<Session>)>;

/// A per-VM LRU keyed by (route id, a request value).
type Cache<T> = Option<RefCell<LruCache<(u64, LongKey), Rc<T>>>>;

pub struct Vm {
    routes: RefCell<HashMap<String, Rc<RouteEntry>>>,
    next_route_id: Cell<u64>,
    /// Accepted tokens: key (route id, token).
    tokens: Cache<Allowed>,
    /// Opened session cookies: sealed value → (route id, the session); an
    /// entry of another route is a miss.
    sessions: Option<RefCell<Opened>>,
    /// (JWKS URL, kid) → until when tokens with that kid do not refetch.
    unknown_kids: RefCell<LruCache<(String, String), u64>>,
    /// (route id, SHA-256 of a token) → until when it is refused unasked.
    refused: RefCell<LruCache<(u64, [u8; 32]), u64>>,
    /// Session id → the keys a back-channel logout names it by
    /// (`oidc_core::revocation::subjects::keys_of`: two SHA-256s, ~7k
    /// instructions each in the VM, saved per request).
    subject_keys: RefCell<LruCache<SessionId, Rc<[[u8; 16]]>>>,
    /// Session id → the deny-lists' version (`oidc_core::revocation::
    /// VERSION_KEY`) read before the lists were found not to name it.
    clean: RefCell<LruCache<SessionId, Version>>,
    pub store: Store,
    pub metrics: Metrics,
    /// The wall-clock rules' intervals (listener settings).
    pub intervals: Intervals,
    /// The sidecar's revocation service (listener settings).
    pub revocation_service: Option<RevocationService>,
    /// Logouts to post to it.
    pub outbox: Outbox,
}

fn bounded(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

impl Vm {
    pub fn new(settings: Settings) -> Vm {
        Vm {
            routes: RefCell::new(HashMap::new()),
            next_route_id: Cell::new(1),
            tokens: NonZeroUsize::new(settings.token_cache_size)
                .map(|n| RefCell::new(LruCache::new(n))),
            sessions: NonZeroUsize::new(settings.session_cache_size)
                .map(|n| RefCell::new(LruCache::new(n))),
            unknown_kids: RefCell::new(LruCache::new(bounded(UNKNOWN_KIDS))),
            refused: RefCell::new(LruCache::new(bounded(REFUSED_TOKENS))),
            subject_keys: RefCell::new(LruCache::new(bounded(SUBJECT_KEYS))),
            clean: RefCell::new(LruCache::new(bounded(SUBJECT_KEYS))),
            store: Store::default(),
            metrics: Metrics::define(),
            intervals: settings.intervals(),
            revocation_service: settings.revocation_service.clone(),
            outbox: Outbox::default(),
        }
    }

    /// The route for a config `version`; `load` reads the config JSON only
    /// when this VM has not seen the version.
    /// `load` gives the config JSON and the route's hosts (a JSON list of
    /// strings, when the route has hosts).
    pub fn route(
        &self,
        version: &str,
        load: impl FnOnce() -> (Option<String>, Option<String>),
    ) -> Rc<RouteEntry> {
        if let Some(e) = self.routes.borrow().get(version) {
            return e.clone();
        }
        let route = match load() {
            (None, _) => Err("the route has a config version but no config".to_string()),
            (Some(json), hosts) => {
                Route::from_json(&json)
                    .map_err(|e| e.to_string())
                    .and_then(|mut r| {
                        if let Some(hosts) = hosts {
                            r.hosts = serde_json::from_str(&hosts).map_err(|_| {
                                "the route's hosts metadata is not a JSON list of strings"
                                    .to_string()
                            })?;
                        }
                        Ok(r)
                    })
            }
        };
        let route = route.map(Rc::new);
        if let Err(e) = &route {
            log::error!("openid-connect: route config version {version:?} is unusable: {e:?}");
        }
        let id = self.next_route_id.get();
        self.next_route_id.set(id + 1);
        let entry = Rc::new(RouteEntry { id, route });
        let mut routes = self.routes.borrow_mut();
        if routes.len() >= MAX_ROUTE_VERSIONS {
            routes.clear();
        }
        routes.insert(version.to_string(), entry.clone());
        entry
    }

    /// The back-channel keys of `s`, computed once per session id (made at
    /// login, random; a refresh keeps the `iss` and `sub`, and providers
    /// keep the `sid` of their session).
    pub fn subject_keys(&self, s: &Session) -> Rc<[[u8; 16]]> {
        let mut cache = self.subject_keys.borrow_mut();
        if let Some(k) = cache.get(&s.id) {
            return k.clone();
        }
        let keys: Rc<[[u8; 16]]> = oidc_core::revocation::subjects::keys_of(s).collect();
        cache.put(s.id, keys.clone());
        keys
    }

    /// Whether session `id` was found on neither deny-list with the lists
    /// at `version` (so, while it is the version, it is still on neither).
    pub fn clean_at(&self, id: &SessionId, version: &Version) -> bool {
        self.clean.borrow_mut().get(id) == Some(version)
    }

    /// Session `id` is on neither deny-list: `version` was read before
    /// the lists were.
    pub fn remember_clean(&self, id: SessionId, version: Version) {
        self.clean.borrow_mut().put(id, version);
    }

    pub fn cached_token(&self, key: &(u64, LongKey), now: u64) -> Option<Rc<Allowed>> {
        let mut cache = self.tokens.as_ref()?.borrow_mut();
        match cache.get(key) {
            Some(a) if now < a.cache_until => Some(a.clone()),
            Some(_) => {
                cache.pop(key);
                None
            }
            None => None,
        }
    }

    pub fn cache_token(&self, key: (u64, LongKey), allowed: Rc<Allowed>, now: u64) {
        if allowed.cache_until > now {
            if let Some(cache) = &self.tokens {
                cache.borrow_mut().put(key, allowed);
            }
        }
    }

    /// Whether `kid` was unknown in the JWKS at `jwks_uri` after a recent
    /// refetch (`oidc_core::bearer::UNKNOWN_KID_TTL`).
    pub fn kid_unknown(&self, jwks_uri: &str, kid: &str, now: u64) -> bool {
        let mut cache = self.unknown_kids.borrow_mut();
        if cache.is_empty() {
            return false;
        }
        let key = (jwks_uri.to_string(), kid.to_string());
        match cache.get(&key) {
            Some(&until) if now < until => true,
            Some(_) => {
                cache.pop(&key);
                false
            }
            None => false,
        }
    }

    pub fn remember_unknown_kid(&self, jwks_uri: &str, kid: String, until: u64) {
        self.unknown_kids
            .borrow_mut()
            .put((jwks_uri.to_string(), kid), until);
    }

    /// Whether the introspection endpoint refused this token (by digest)
    /// on this route config lately.
    pub fn refused(&self, key: &(u64, [u8; 32]), now: u64) -> bool {
        let mut cache = self.refused.borrow_mut();
        match cache.get(key) {
            Some(&until) if now < until => true,
            Some(_) => {
                cache.pop(key);
                false
            }
            None => false,
        }
    }

    pub fn remember_refusal(&self, key: (u64, [u8; 32]), until: u64) {
        self.refused.borrow_mut().put(key, until);
    }

    /// The providers of the routes this VM has seen, for the background
    /// refresh: discovery URL → (the shortest `jwk_expires_in`, the longest
    /// `timeout`) among their routes.
    pub fn providers(&self) -> Vec<(String, u64, u64)> {
        let mut out: HashMap<String, (u64, u64)> = HashMap::new();
        for e in self.routes.borrow().values() {
            if let Ok(r) = &e.route {
                let c = &r.config;
                let p = out
                    .entry(c.discovery.clone())
                    .or_insert((c.jwk_expires_in, c.timeout));
                p.0 = p.0.min(c.jwk_expires_in);
                p.1 = p.1.max(c.timeout);
            }
        }
        out.into_iter().map(|(d, (ttl, t))| (d, ttl, t)).collect()
    }

    /// Opens a sealed session value of route `route_id`, remembering what
    /// it opened: decrypting and parsing a cookie costs more than a copy.
    /// The key includes the route, so a value opened for one route (and its
    /// secret) is never taken for another.
    ///
    /// Every request with the same cookie on the same route gets the same
    /// `Rc`, which keeps the session's upstream headers once built
    /// (`oidc_core::session::HeaderMemo`): that is why the cache must be
    /// per route (the headers follow the route's options).
    pub fn unseal(
        &self,
        route_id: u64,
        key: &SessionKey,
        name: &str,
        value: &str,
    ) -> Result<Rc<Session>, SessionError> {
        let Some(cache) = &self.sessions else {
            return session::unseal(key, name, value).map(Rc::new);
        };
        let k = LongKey(value.to_owned());
        if let Some((id, s)) = cache.borrow_mut().get(&k) {
            if *id == route_id {
                return Ok(s.clone());
            }
        }
        let s = Rc::new(session::unseal(key, name, value)?);
        cache.borrow_mut().put(k, (route_id, s.clone()));
        Ok(s)
    }

    /// From now on, `value` of route `route_id` opens as `session` (the
    /// session saved in its place; see `Host::resealed`).
    pub fn resealed(&self, route_id: u64, value: String, session: Rc<Session>) {
        if let Some(cache) = &self.sessions {
            cache.borrow_mut().put(LongKey(value), (route_id, session));
        }
    }
}
