//! What is known about a route's provider (its discovery document and
//! JWKS), when each is fresh enough to use, when to fetch it again, and how
//! a fetched document is checked and stored.
//!
//! These rules serve the bearer and the browser side alike; [`crate::exchange`]
//! applies them, the adapter only stores the bytes [`record`] encodes.

use std::rc::Rc;

use crate::discovery::{self, ProviderMetadata};
use crate::http::HttpRequest;
use crate::jwt::Jwks;

/// How long a discovery document is used before it is fetched again.
pub const DISCOVERY_TTL: u64 = 24 * 3600;
/// After a failed provider call, how long to use what is cached (or to
/// answer 503 at once when nothing is) before trying again.
pub const RETRY_AFTER_FAILURE: u64 = 5;
/// A token with an unknown `kid` refetches the JWKS at most this often.
pub const KID_REFETCH_INTERVAL: u64 = 5;

/// The wall-clock rules' intervals, seconds: [`RETRY_AFTER_FAILURE`] and
/// [`KID_REFETCH_INTERVAL`] by default; the listener settings
/// (`provider_retry_after_s`, `kid_refetch_interval_s`) may change them
/// (a test and tuning knob).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    /// After a failed provider call, how long before trying again.
    pub retry_after_failure: u64,
    /// How often an unknown `kid` may refetch the JWKS.
    pub kid_refetch: u64,
}

impl Default for Intervals {
    fn default() -> Intervals {
        Intervals {
            retry_after_failure: RETRY_AFTER_FAILURE,
            kid_refetch: KID_REFETCH_INTERVAL,
        }
    }
}

/// Which provider document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchKind {
    Discovery,
    Jwks,
}

/// A provider document and when it was fetched.
#[derive(Debug, Clone)]
pub struct Fetched<T> {
    pub value: T,
    pub fetched_at: u64,
}

/// What is stored about one document: the last good copy (parsed) and
/// when a call for it last failed.
#[derive(Debug)]
pub struct Known<T> {
    pub doc: Option<Rc<Fetched<T>>>,
    pub failed_at: Option<u64>,
}

impl<T> Default for Known<T> {
    fn default() -> Self {
        Known {
            doc: None,
            failed_at: None,
        }
    }
}

/// What is stored about a route's provider: its discovery document and the
/// JWKS at that document's `jwks_uri`.
#[derive(Debug, Default)]
pub struct Documents {
    pub discovery: Known<ProviderMetadata>,
    pub jwks_uri: Option<String>,
    pub jwks: Option<Known<Jwks>>,
}

impl Documents {
    /// The view the decisions read (nothing in flight), with the
    /// listener's `intervals`.
    pub fn state(&self, intervals: Intervals) -> ProviderState<'_> {
        ProviderState {
            intervals,
            discovery: self.discovery.doc.as_deref(),
            jwks: self.jwks.as_ref().and_then(|j| j.doc.as_deref()),
            discovery_failed_at: self.discovery.failed_at,
            jwks_failed_at: self.jwks.as_ref().and_then(|j| j.failed_at),
            discovery_in_flight: false,
            jwks_in_flight: false,
        }
    }

    /// Whether a parsed copy of the document is at hand.
    pub fn has(&self, kind: FetchKind) -> bool {
        match kind {
            FetchKind::Discovery => self.discovery.doc.is_some(),
            FetchKind::Jwks => self.jwks.as_ref().is_some_and(|j| j.doc.is_some()),
        }
    }
}

/// What the decisions know about the route's provider.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProviderState<'a> {
    /// The wall-clock rules' intervals.
    pub intervals: Intervals,
    pub discovery: Option<&'a Fetched<ProviderMetadata>>,
    /// The JWKS at the discovery document's `jwks_uri`.
    pub jwks: Option<&'a Fetched<Jwks>>,
    /// When a discovery call last failed.
    pub discovery_failed_at: Option<u64>,
    /// When a JWKS call last failed.
    pub jwks_failed_at: Option<u64>,
    /// Another request is fetching the discovery document now
    /// ([`fetch_in_flight`]): use the cached one, even stale, rather than
    /// fetch it too. With nothing cached, fetch anyway (a cold start; the
    /// provider cluster's circuit breakers bound it).
    pub discovery_in_flight: bool,
    /// Likewise for the JWKS; also set for a token whose `kid` was
    /// unknown after a recent refetch
    /// ([`crate::bearer::kid_unknown_after_refetch`]): no refetch for it,
    /// an unknown `kid` is a 401.
    pub jwks_in_flight: bool,
}

/// Whether a fetch marked "fetching since `since`" may still be under way
/// at `now`: a call ends within its `timeout` (seconds), so a marker older
/// than that (a worker gone mid-call) no longer holds anyone back.
pub fn fetch_in_flight(since: Option<u64>, timeout: u64, now: u64) -> bool {
    since.is_some_and(|t| t <= now && now <= t.saturating_add(timeout))
}

/// Whether to use a cached document, fetch it, or give up for now.
pub enum Cache<'a, T> {
    Use(&'a Fetched<T>),
    Fetch,
    Unavailable,
}

/// Fresh → use; stale → refetch, unless a call failed recently (then use
/// the stale copy: a provider outage does not stop tokens that verify with
/// what is cached); missing → fetch, or unavailable right after a failure.
/// (`retry_after`: [`Intervals::retry_after_failure`].)
pub fn cached<'a, T>(
    doc: Option<&'a Fetched<T>>,
    failed_at: Option<u64>,
    retry_after: u64,
    ttl: u64,
    now: u64,
) -> Cache<'a, T> {
    let failed_recently = failed_at.is_some_and(|t| now < t.saturating_add(retry_after));
    match doc {
        Some(d) if now < d.fetched_at.saturating_add(ttl) || failed_recently => Cache::Use(d),
        Some(_) => Cache::Fetch,
        None if failed_recently => Cache::Unavailable,
        None => Cache::Fetch,
    }
}

/// [`cached`], except that a document another request is fetching now is
/// used as it is (stale or not); with nothing cached, fetch anyway.
pub fn cached_unless_in_flight<'a, T>(
    doc: Option<&'a Fetched<T>>,
    failed_at: Option<u64>,
    in_flight: bool,
    retry_after: u64,
    ttl: u64,
    now: u64,
) -> Cache<'a, T> {
    match (doc, in_flight) {
        (Some(d), true) => Cache::Use(d),
        _ => cached(doc, failed_at, retry_after, ttl, now),
    }
}

/// The JWKS as the decisions may use it (fresh, or stale during an outage
/// or while another request fetches it).
pub fn jwks<'a>(p: &ProviderState<'a>, ttl: u64, now: u64) -> Cache<'a, Jwks> {
    cached_unless_in_flight(
        p.jwks,
        p.jwks_failed_at,
        p.jwks_in_flight,
        p.intervals.retry_after_failure,
        ttl,
        now,
    )
}

/// The discovery document as the decisions may use it.
pub fn discovery<'a>(p: &ProviderState<'a>, now: u64) -> Cache<'a, ProviderMetadata> {
    cached_unless_in_flight(
        p.discovery,
        p.discovery_failed_at,
        p.discovery_in_flight,
        p.intervals.retry_after_failure,
        DISCOVERY_TTL,
        now,
    )
}

/// What to do when a token (bearer or ID token) names a key the cached
/// JWKS lacks: the key-rotation rule, for both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// Fetch the JWKS again: the provider may have rotated its keys.
    Refetch,
    /// The JWKS could not be fetched since it was cached: no verdict is
    /// possible, which is not the token's fault (503).
    Unavailable,
    /// The key is unknown: the token is refused.
    UnknownKey,
}

/// The key-rotation rule: refetch, but not more than once per
/// [`Intervals::kid_refetch`] whatever the tokens say, not within that
/// interval after a failed call, and not while another request fetches.
pub fn rotation(jwks: &Fetched<Jwks>, p: &ProviderState<'_>, now: u64) -> Rotation {
    let every = p.intervals.kid_refetch;
    let recent = |t: Option<u64>| t.is_some_and(|t| now < t.saturating_add(every));
    if !p.jwks_in_flight && !recent(Some(jwks.fetched_at)) && !recent(p.jwks_failed_at) {
        Rotation::Refetch
    } else if p.jwks_failed_at.is_some_and(|t| t > jwks.fetched_at) && recent(p.jwks_failed_at) {
        Rotation::Unavailable
    } else {
        Rotation::UnknownKey
    }
}

/// The longest lead of a background refresh: a document is fetched again
/// this long (or a quarter of its lifetime, if shorter) before it expires.
pub const REFRESH_AHEAD: u64 = 60;

/// The documents of a provider a background refresh should fetch at
/// `now` (`jwks_ttl`: the route's `jwk_expires_in`): those fetched before
/// that expire within their lead ([`REFRESH_AHEAD`]) or have expired, and
/// whose last call did not fail within `retry_after_failure`. A document
/// never fetched is left to the first request that needs it (so a JWKS
/// nobody uses is not fetched). The caller still claims each fetch
/// ([`fetch_in_flight`]), so one worker fetches.
pub fn refresh_due(
    discovery_url: &str,
    docs: &Documents,
    jwks_ttl: u64,
    intervals: Intervals,
    now: u64,
) -> Vec<(FetchKind, String)> {
    fn due<T>(k: &Known<T>, ttl: u64, retry_after: u64, now: u64) -> bool {
        let Some(doc) = &k.doc else {
            return false;
        };
        if k.failed_at
            .is_some_and(|t| now < t.saturating_add(retry_after))
        {
            return false;
        }
        let lead = (ttl / 4).min(REFRESH_AHEAD);
        now.saturating_add(lead) >= doc.fetched_at.saturating_add(ttl)
    }
    let retry = intervals.retry_after_failure;
    let mut out = Vec::new();
    if due(&docs.discovery, DISCOVERY_TTL, retry, now) {
        out.push((FetchKind::Discovery, discovery_url.to_string()));
    }
    if let (Some(jwks), Some(uri)) = (&docs.jwks, &docs.jwks_uri) {
        if due(jwks, jwks_ttl, retry, now) {
            out.push((FetchKind::Jwks, uri.clone()));
        }
    }
    out
}

/// A provider document to fetch: the GET for `url`.
#[derive(Debug)]
pub struct Need {
    pub kind: FetchKind,
    pub url: String,
    pub req: Box<HttpRequest>,
}

/// The GET for a provider document, or why it cannot be made (a URL the
/// provider gave that is not one we can call).
pub fn fetch(kind: FetchKind, url: &str) -> Result<Need, String> {
    let req = discovery::request(url).map_err(|e| format!("cannot call {url}: {e}"))?;
    Ok(Need {
        kind,
        url: url.to_string(),
        req: Box::new(req),
    })
}

/// Parses a stored discovery body ([`discovery::parse_document`]: its
/// `issuer` is the one tokens must carry, whatever the URL it came from).
pub fn parse_discovery(url: &str, body: &[u8]) -> Result<ProviderMetadata, String> {
    discovery::parse_document(200, body).map_err(|e| format!("{url}: {e}"))
}

/// Parses a stored JWKS body.
pub fn parse_jwks(body: &[u8]) -> Result<Jwks, String> {
    Jwks::parse(body).map_err(|e| e.to_string())
}

/// Checks a provider's answer to a document fetch: only a 200 whose body
/// parses is stored.
pub fn check_answer(kind: FetchKind, url: &str, status: u16, body: &[u8]) -> Result<(), String> {
    if status != 200 {
        return Err(format!("HTTP status {status}"));
    }
    match kind {
        FetchKind::Discovery => parse_discovery(url, body).map(|_| ()),
        FetchKind::Jwks => parse_jwks(body).map(|_| ()),
    }
}

/// The stored form of provider documents and of the "fetching since"
/// markers, as the adapter keeps them in shared data (one copy for all
/// workers).
///
/// Document: `fetched_at` (u64 LE, 0 = never) ‖ `failed_at` (u64 LE,
/// 0 = never) ‖ the body as the provider sent it (only bodies that
/// parsed). Marker: "fetching since" (u64 LE; empty = none).
pub mod record {
    use super::FetchKind;

    /// The shared-data key of a document.
    pub fn key(kind: FetchKind, url: &str) -> String {
        match kind {
            FetchKind::Discovery => format!("openid-connect|discovery|{url}"),
            FetchKind::Jwks => format!("openid-connect|jwks|{url}"),
        }
    }

    /// The shared-data key of a document's "fetching since" marker.
    pub fn marker_key(kind: FetchKind, url: &str) -> String {
        match kind {
            FetchKind::Discovery => format!("openid-connect|fetching|discovery|{url}"),
            FetchKind::Jwks => format!("openid-connect|fetching|jwks|{url}"),
        }
    }

    /// A document fetched at `now`.
    pub fn fetched(now: u64, body: &[u8]) -> Vec<u8> {
        let mut value = Vec::with_capacity(16 + body.len());
        value.extend_from_slice(&now.to_le_bytes());
        value.extend_from_slice(&0u64.to_le_bytes());
        value.extend_from_slice(body);
        value
    }

    /// A failed call at `now`, keeping the last good document of `old`.
    pub fn failed(old: Option<&[u8]>, now: u64) -> Vec<u8> {
        let (fetched, body) = match old.and_then(split) {
            Some((f, _, b)) => (f.unwrap_or(0), b),
            None => (0, &[][..]),
        };
        let mut value = Vec::with_capacity(16 + body.len());
        value.extend_from_slice(&fetched.to_le_bytes());
        value.extend_from_slice(&now.to_le_bytes());
        value.extend_from_slice(body);
        value
    }

    /// `(fetched_at, failed_at, body)` of a stored document.
    pub fn split(raw: &[u8]) -> Option<(Option<u64>, Option<u64>, &[u8])> {
        let fetched = u64::from_le_bytes(raw.get(0..8)?.try_into().ok()?);
        let failed = u64::from_le_bytes(raw.get(8..16)?.try_into().ok()?);
        Some((nonzero(fetched), nonzero(failed), raw.get(16..)?))
    }

    /// A marker "fetching since `now`".
    pub fn marker(now: u64) -> [u8; 8] {
        now.to_le_bytes()
    }

    /// Since when a stored marker says a fetch is under way.
    pub fn marker_since(raw: Option<&[u8]>) -> Option<u64> {
        let raw = raw?.get(0..8)?;
        nonzero(u64::from_le_bytes(raw.try_into().ok()?))
    }

    fn nonzero(t: u64) -> Option<u64> {
        (t != 0).then_some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::tests::{provider_keys, NOW};

    /// A provider's documents as fetched at `discovery_at` / `jwks_at`,
    /// with the JWKS at `j` and its last failure.
    fn docs(
        discovery_at: Option<u64>,
        jwks_at: Option<u64>,
        jwks_failed: Option<u64>,
    ) -> Documents {
        let known = |at: Option<u64>| Known {
            doc: at.map(|fetched_at| {
                Rc::new(Fetched {
                    value: ProviderMetadata::default(),
                    fetched_at,
                })
            }),
            failed_at: None,
        };
        Documents {
            discovery: known(discovery_at),
            jwks_uri: Some("https://idp.example/jwks".into()),
            jwks: Some(Known {
                doc: jwks_at.map(|fetched_at| {
                    Rc::new(Fetched {
                        value: provider_keys(),
                        fetched_at,
                    })
                }),
                failed_at: jwks_failed,
            }),
        }
    }

    #[test]
    fn a_background_refresh_comes_before_expiry_and_only_for_what_was_fetched() {
        let i = Intervals::default();
        let due = |d: &Documents, now| {
            refresh_due("https://idp.example/d", d, 600, i, now)
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        };
        // JWKS lifetime 600 s: the lead is 60 s (a quarter would be 150).
        let d = docs(Some(NOW), Some(NOW), None);
        assert!(due(&d, NOW + 539).is_empty());
        assert_eq!(due(&d, NOW + 540), [FetchKind::Jwks]);
        assert_eq!(
            due(&d, NOW + 900),
            [FetchKind::Jwks],
            "expired: still refreshed"
        );
        // The discovery document's lifetime is a day.
        assert_eq!(
            due(&d, NOW + DISCOVERY_TTL - 60),
            [FetchKind::Discovery, FetchKind::Jwks]
        );
        // Never fetched: left to the first request that needs it.
        assert!(due(&docs(None, None, None), NOW + 10 * DISCOVERY_TTL).is_empty());
        // A failed call: not again until the retry pause has passed.
        let failed = docs(Some(NOW), Some(NOW), Some(NOW + 600));
        assert!(due(&failed, NOW + 600 + i.retry_after_failure - 1).is_empty());
        assert_eq!(
            due(&failed, NOW + 600 + i.retry_after_failure),
            [FetchKind::Jwks]
        );
        // A short lifetime: a quarter of it.
        let short = refresh_due("https://idp.example/d", &d, 8, i, NOW + 6);
        assert_eq!(short.len(), 1);
        assert_eq!(
            short[0],
            (FetchKind::Jwks, "https://idp.example/jwks".to_string())
        );
        assert!(refresh_due("https://idp.example/d", &d, 8, i, NOW + 5).is_empty());
    }

    #[test]
    fn records_round_trip_and_a_failure_keeps_the_last_good_body() {
        let r = record::fetched(NOW, b"{\"keys\":[]}");
        assert_eq!(
            record::split(&r),
            Some((Some(NOW), None, &b"{\"keys\":[]}"[..]))
        );
        let f = record::failed(Some(&r), NOW + 9);
        assert_eq!(
            record::split(&f),
            Some((Some(NOW), Some(NOW + 9), &b"{\"keys\":[]}"[..]))
        );
        let f = record::failed(None, NOW + 9);
        assert_eq!(record::split(&f), Some((None, Some(NOW + 9), &b""[..])));
        assert_eq!(record::split(b"short"), None);
        assert_eq!(record::marker_since(Some(&record::marker(NOW))), Some(NOW));
        assert_eq!(record::marker_since(Some(b"")), None);
        assert_eq!(record::marker_since(None), None);
    }

    #[test]
    fn answers_are_stored_only_when_they_parse() {
        let url = "https://idp.example/.well-known/openid-configuration";
        let doc = br#"{"issuer":"https://idp.example","jwks_uri":"https://idp.example/certs"}"#;
        assert!(check_answer(FetchKind::Discovery, url, 200, doc).is_ok());
        assert!(check_answer(FetchKind::Discovery, url, 500, doc).is_err());
        assert!(check_answer(FetchKind::Jwks, url, 200, b"{}").is_err());
        // The issuer need not be the URL's (APISIX does not compare them):
        // a provider on an internal URL names its public issuer.
        let public = br#"{"issuer":"https://login.example/realms/r"}"#;
        assert!(check_answer(FetchKind::Discovery, url, 200, public).is_ok());
        let empty = br#"{"issuer":""}"#;
        assert!(check_answer(FetchKind::Discovery, url, 200, empty).is_err());
    }

    #[test]
    fn the_key_rotation_rule() {
        let j = Fetched {
            value: provider_keys(),
            fetched_at: NOW - 60,
        };
        let p = ProviderState::default();
        assert_eq!(rotation(&j, &p, NOW), Rotation::Refetch);
        let in_flight = ProviderState {
            jwks_in_flight: true,
            ..p
        };
        assert_eq!(rotation(&j, &in_flight, NOW), Rotation::UnknownKey);
        let failed = ProviderState {
            jwks_failed_at: Some(NOW - 1),
            ..p
        };
        assert_eq!(rotation(&j, &failed, NOW), Rotation::Unavailable);
        let fresh = Fetched {
            fetched_at: NOW - 1,
            ..j
        };
        assert_eq!(rotation(&fresh, &p, NOW), Rotation::UnknownKey);
        // A shorter interval from the listener settings: a JWKS fetched a
        // second ago may be refetched, and a failure a second ago no longer
        // holds it back.
        let short = ProviderState {
            intervals: Intervals {
                retry_after_failure: 1,
                kid_refetch: 1,
            },
            ..p
        };
        assert_eq!(rotation(&fresh, &short, NOW), Rotation::Refetch);
        let failed_short = ProviderState {
            jwks_failed_at: Some(NOW - 1),
            ..short
        };
        assert_eq!(rotation(&fresh, &failed_short, NOW), Rotation::Refetch);
    }

    #[test]
    fn the_retry_pause_after_a_failure_is_the_configured_one() {
        let failed = Some(NOW - 2);
        let none: Option<&Fetched<Jwks>> = None;
        assert!(matches!(
            cached(none, failed, RETRY_AFTER_FAILURE, 60, NOW),
            Cache::Unavailable
        ));
        assert!(matches!(cached(none, failed, 2, 60, NOW), Cache::Fetch));
        assert!(matches!(
            cached(none, failed, 3, 60, NOW),
            Cache::Unavailable
        ));
    }
}
