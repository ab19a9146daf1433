//! The host as the core's request loop sees it (`oidc_core::exchange::Host`):
//! provider documents in shared data, the per-VM memories, the logout
//! deny-list, WASI random bytes, and the counters and log lines for the
//! core's notes. Mechanics only: what to ask and when is the core's.

use std::rc::Rc;

use oidc_core::bearer::Allowed;
use oidc_core::browser::Entropy;
use oidc_core::exchange::{self, Host, Note};
use oidc_core::provider::{Documents, FetchKind, Intervals};
use oidc_core::revocation::{subjects, Revocation};
use oidc_core::revocation_feed::Entry;
use oidc_core::session::{Session, SessionError, SessionId, SessionKey};

use crate::long_key::LongKey;
use crate::revoked;
use crate::vm::Vm;

/// The host, as the core sees it: shared data, the per-VM memories, the
/// CSPRNG (WASI `random_get`) and the counters.
pub struct HostCalls<'a> {
    pub vm: &'a Vm,
    /// The route config version's id in this VM (the memories' key).
    pub route_id: u64,
}

impl HostCalls<'_> {
    /// Queues a logout for the other gateways (the root context's tick
    /// posts it; no request waits).
    fn share(&self, e: Entry) {
        if self.vm.revocation_service.is_some() && !self.vm.outbox.push(e) {
            log::warn!(
                "openid-connect: the revocation outbox is full; a logout stays on this Envoy"
            );
            self.vm.metrics.feed_dropped();
        }
    }
}

impl Entropy for HostCalls<'_> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), String> {
        getrandom::fill(buf).map_err(|e| e.to_string())
    }
}

impl Host for HostCalls<'_> {
    fn documents(&mut self, discovery_url: &str) -> Documents {
        self.vm.store.documents(discovery_url)
    }
    fn intervals(&self) -> Intervals {
        self.vm.intervals
    }
    fn read_document(&mut self, kind: FetchKind, url: &str) -> Option<Vec<u8>> {
        self.vm.store.read(kind, url)
    }
    fn write_document(&mut self, kind: FetchKind, url: &str, record: &[u8]) {
        self.vm.store.write(kind, url, record)
    }
    fn claim(&mut self, kind: FetchKind, url: &str, timeout: u64, now: u64) -> bool {
        self.vm.store.claim(kind, url, timeout, now)
    }
    fn release(&mut self, kind: FetchKind, url: &str, since: u64) {
        self.vm.store.release(kind, url, since)
    }
    fn cached_token(&mut self, token: String, now: u64) -> Result<Rc<Allowed>, String> {
        // The key owns the token for the lookup; no copy is made.
        let key = (self.route_id, LongKey(token));
        match self.vm.cached_token(&key, now) {
            Some(a) => Ok(a),
            None => Err(key.1 .0),
        }
    }
    fn cache_token(&mut self, token: String, allowed: Rc<Allowed>, now: u64) {
        self.vm
            .cache_token((self.route_id, LongKey(token)), allowed, now)
    }
    fn refused(&mut self, digest: &[u8; 32], now: u64) -> bool {
        self.vm.refused(&(self.route_id, *digest), now)
    }
    fn remember_refusal(&mut self, digest: [u8; 32], until: u64) {
        self.vm.remember_refusal((self.route_id, digest), until)
    }
    fn kid_unknown(&mut self, jwks_uri: &str, kid: &str, now: u64) -> bool {
        self.vm.kid_unknown(jwks_uri, kid, now)
    }
    fn remember_unknown_kid(&mut self, jwks_uri: &str, kid: String, until: u64) {
        self.vm.remember_unknown_kid(jwks_uri, kid, until)
    }
    fn unseal(
        &mut self,
        key: &SessionKey,
        name: &str,
        value: &str,
    ) -> Result<Rc<Session>, SessionError> {
        self.vm.unseal(self.route_id, key, name, value)
    }
    fn resealed(&mut self, value: String, session: Rc<Session>) {
        self.vm.resealed(self.route_id, value, session)
    }
    fn session_ended(&mut self, s: &Session, now: u64) -> Option<Note<'static>> {
        // The lists' version before the lists: a session found on neither
        // is not looked up again while the version stays (every write to
        // a list replaces it). A version the host cannot give: the lists
        // are read, as always (and a list it cannot give refuses).
        let version = revoked::version();
        if let Ok(v) = &version {
            if self.vm.clean_at(&s.id, v) {
                return None;
            }
        }
        let ended = exchange::ended_by_lists(self, s, now);
        if let (None, Ok(v)) = (&ended, version) {
            self.vm.remember_clean(s.id, v);
        }
        ended
    }
    fn revoked(&mut self, id: &SessionId, now: u64) -> bool {
        revoked::is_revoked(id, now)
    }
    fn revoke(&mut self, r: Revocation, now: u64) {
        self.share(Entry::session(&r, now));
        let m = &self.vm.metrics;
        match revoked::revoke(r, now) {
            revoked::Outcome::Stored { evicted } => {
                m.session_revoked();
                if evicted {
                    m.session_revocation_evicted();
                }
            }
            revoked::Outcome::Failed => {
                log::warn!("openid-connect: cannot record a logout on the deny-list");
                m.session_revocation_failed();
            }
        }
    }
    fn subject_keys(&mut self, s: &Session) -> Vec<[u8; 16]> {
        self.vm.subject_keys(s).to_vec()
    }
    fn logged_out(&mut self, key: &[u8; 16], created_at: u64, now: u64) -> bool {
        revoked::logged_out(key, created_at, now)
    }
    fn log_out(&mut self, r: subjects::Revocation, now: u64) {
        self.share(Entry::subject(&r));
        let m = &self.vm.metrics;
        match revoked::log_out(r, now) {
            revoked::Outcome::Stored { evicted } => {
                if evicted {
                    m.session_revocation_evicted();
                }
            }
            revoked::Outcome::Failed => {
                log::warn!("openid-connect: cannot record a back-channel logout on the deny-list");
                m.session_revocation_failed();
            }
        }
    }
    fn first_use(&mut self, jti: [u8; 16], until: u64, now: u64) -> bool {
        revoked::first_use(jti, until, now)
    }
    fn note(&mut self, note: Note<'_>) {
        let m = &self.vm.metrics;
        match note {
            Note::CacheHit => m.cache_hit(),
            Note::CacheMiss => m.cache_miss(),
            Note::RefusalRemembered => m.refusal_remembered(),
            Note::UnknownKidRemembered => m.unknown_kid_remembered(),
            Note::FetchHeld => m.fetch_held(),
            Note::ProviderFailure => m.provider_failure(),
            Note::DocumentFailed { kind, url, why } => {
                log::warn!("openid-connect: provider call for {kind:?} at {url} failed: {why}");
                m.provider_failure();
            }
            Note::RefreshRefused(why) => {
                log::warn!("openid-connect: refreshed ID token refused, session ended: {why:?}");
                m.session_refresh_refused();
            }
            Note::RevokedSessionRefused => m.session_revoked_refused(),
            Note::LoggedOutSessionRefused => m.session_backchannel_refused(),
        }
    }
}
