//! Envoy counters defined by the filter (shown by Envoy as
//! `wasmcustom.openid_connect.*`).

use oidc_core::reply::DenialReason;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

pub struct Metrics {
    allowed: Option<u32>,
    passed: Option<u32>,
    /// One counter per [`DenialReason`], indexed by `DenialReason::index`.
    denied: [Option<u32>; DenialReason::ALL.len()],
    cache_hit: Option<u32>,
    cache_miss: Option<u32>,
    provider_calls: Option<u32>,
    provider_failures: Option<u32>,
    fetch_discovery: Option<u32>,
    fetch_jwks: Option<u32>,
    fetch_held: Option<u32>,
    refresh_discovery: Option<u32>,
    refresh_jwks: Option<u32>,
    unknown_kid_remembered: Option<u32>,
    refusal_remembered: Option<u32>,
    body_too_large: Option<u32>,
    login_started: Option<u32>,
    login_succeeded: Option<u32>,
    login_failed: Option<u32>,
    session_refreshed: Option<u32>,
    session_refresh_refused: Option<u32>,
    session_revoked: Option<u32>,
    session_revoked_refused: Option<u32>,
    session_revocation_evicted: Option<u32>,
    session_revocation_failed: Option<u32>,
    logout: Option<u32>,
    backchannel_logout: Option<u32>,
    backchannel_refused: Option<u32>,
    session_backchannel_refused: Option<u32>,
    feed_received: Option<u32>,
    feed_failed: Option<u32>,
    feed_dropped: Option<u32>,
}

fn counter(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Counter, &format!("openid_connect.{name}")).ok()
}

fn bump(id: Option<u32>) {
    if let Some(id) = id {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

impl Metrics {
    pub fn define() -> Metrics {
        Metrics {
            allowed: counter("allowed"),
            passed: counter("passed"),
            denied: DenialReason::ALL.map(|r| counter(&format!("denied.{}", r.name()))),
            cache_hit: counter("cache.hit"),
            cache_miss: counter("cache.miss"),
            provider_calls: counter("provider.calls"),
            provider_failures: counter("provider.failures"),
            fetch_discovery: counter("provider.fetch.discovery"),
            fetch_jwks: counter("provider.fetch.jwks"),
            fetch_held: counter("provider.fetch.held"),
            refresh_discovery: counter("provider.refresh.discovery"),
            refresh_jwks: counter("provider.refresh.jwks"),
            unknown_kid_remembered: counter("provider.unknown_kid_remembered"),
            refusal_remembered: counter("introspection.refusal_remembered"),
            body_too_large: counter("provider.body_too_large"),
            login_started: counter("login.started"),
            login_succeeded: counter("login.succeeded"),
            login_failed: counter("login.failed"),
            session_refreshed: counter("session.refreshed"),
            session_refresh_refused: counter("session.refresh_refused"),
            session_revoked: counter("session.revoked"),
            session_revoked_refused: counter("session.revoked_refused"),
            session_revocation_evicted: counter("session.revocation_evicted"),
            session_revocation_failed: counter("session.revocation_failed"),
            feed_received: counter("revocation_feed.received"),
            feed_failed: counter("revocation_feed.failed"),
            feed_dropped: counter("revocation_feed.dropped"),
            logout: counter("logout"),
            backchannel_logout: counter("backchannel.logout"),
            backchannel_refused: counter("backchannel.refused"),
            session_backchannel_refused: counter("session.backchannel_refused"),
        }
    }

    pub fn backchannel_logout(&self) {
        bump(self.backchannel_logout)
    }

    pub fn backchannel_refused(&self) {
        bump(self.backchannel_refused)
    }

    pub fn session_backchannel_refused(&self) {
        bump(self.session_backchannel_refused)
    }

    pub fn allowed(&self) {
        bump(self.allowed)
    }
    /// Forwarded without identity (`unauth_action: "pass"`).
    pub fn passed(&self) {
        bump(self.passed)
    }
    pub fn denied(&self, reason: DenialReason) {
        bump(self.denied[reason.index()])
    }
    pub fn cache_hit(&self) {
        bump(self.cache_hit)
    }
    pub fn cache_miss(&self) {
        bump(self.cache_miss)
    }
    pub fn provider_call(&self) {
        bump(self.provider_calls)
    }
    pub fn provider_failure(&self) {
        bump(self.provider_failures)
    }
    /// A discovery or JWKS fetch dispatched (also counted in `calls`).
    pub fn fetch(&self, jwks: bool) {
        bump(if jwks {
            self.fetch_jwks
        } else {
            self.fetch_discovery
        })
    }
    /// A background refresh dispatched (not counted in `calls`, which are
    /// the calls requests made).
    pub fn refresh(&self, jwks: bool) {
        bump(if jwks {
            self.refresh_jwks
        } else {
            self.refresh_discovery
        })
    }
    /// A fetch not made: another request was fetching that document.
    pub fn fetch_held(&self) {
        bump(self.fetch_held)
    }
    /// A token whose `kid` was remembered as unknown: no refetch.
    pub fn unknown_kid_remembered(&self) {
        bump(self.unknown_kid_remembered)
    }
    /// A token refused again from memory, without introspection.
    pub fn refusal_remembered(&self) {
        bump(self.refusal_remembered)
    }
    /// A provider answer over the body cap (a provider failure).
    pub fn body_too_large(&self) {
        bump(self.body_too_large)
    }
    pub fn login_started(&self) {
        bump(self.login_started)
    }
    pub fn login_succeeded(&self) {
        bump(self.login_succeeded)
    }
    pub fn login_failed(&self) {
        bump(self.login_failed)
    }
    pub fn session_refreshed(&self) {
        bump(self.session_refreshed)
    }
    /// A refreshed ID token failed its checks: the session ended.
    pub fn session_refresh_refused(&self) {
        bump(self.session_refresh_refused)
    }
    /// A logout put its session on the deny-list.
    pub fn session_revoked(&self) {
        bump(self.session_revoked)
    }
    /// A request came with a session that had logged out.
    pub fn session_revoked_refused(&self) {
        bump(self.session_revoked_refused)
    }
    /// A full deny-list shard dropped an unexpired entry.
    pub fn session_revocation_evicted(&self) {
        bump(self.session_revocation_evicted)
    }
    /// The deny-list could not be written (contention).
    /// Entries the revocation feed brought from the sidecar.
    pub fn feed_received(&self, n: usize) {
        if let Some(id) = self.feed_received {
            let _ = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(0));
        }
    }
    /// A POST or poll of the revocation service failed.
    pub fn feed_failed(&self) {
        bump(self.feed_failed)
    }
    /// A logout not posted: the outbox was full.
    pub fn feed_dropped(&self) {
        bump(self.feed_dropped)
    }
    pub fn session_revocation_failed(&self) {
        bump(self.session_revocation_failed)
    }
    pub fn logout(&self) {
        bump(self.logout)
    }
}
