//! Bearer tokens: find the token in the request, then decide with what is
//! known about the provider, or say which provider call would let us
//! decide.
//!
//! The caller loops: [`decide`] → `Fetch` (make the call, store the result
//! or the failure time, decide again) or `Introspect` (make the call, then
//! [`introspected`]) → `Allow` / `Deny`. The loop ends by construction: a
//! successful fetch makes its document fresh, a failed one makes it
//! "recently failed", and neither asks for the same fetch again.

use crate::discovery::ProviderMetadata;
use crate::http::HttpRequest;
use crate::introspection::{self, ClientAuth};
use crate::jwt::{self, Jwks, Rejection, VerifyError};
use crate::provider::{self, Cache, Need, Rotation};
use crate::reply::Denial;
use crate::route::Route;

// Where these lived before `provider`; kept so callers need not change.
pub use crate::provider::{
    fetch_in_flight, FetchKind, Fetched, ProviderState, DISCOVERY_TTL, KID_REFETCH_INTERVAL,
    RETRY_AFTER_FAILURE,
};

/// How long an accepted token without `exp` stays in the cache.
pub const NO_EXP_CACHE_TTL: u64 = 300;
/// How long a `kid` that was still unknown after a JWKS refetch is
/// remembered (per VM): tokens naming it do not refetch meanwhile.
pub const UNKNOWN_KID_TTL: u64 = 60;
/// The longest `kid` remembered as unknown (longer ones are not: the
/// memory is bounded by entries × this).
pub const MAX_REMEMBERED_KID_LEN: usize = 256;
/// How long a token the introspection endpoint refused (`active: false`)
/// is refused again without asking (per VM).
pub const INTROSPECTION_REFUSAL_TTL: u64 = 15;

/// The bearer token of a request, from `Authorization: Bearer <token>` or,
/// without an `Authorization` header, from `X-Access-Token` (as APISIX).
/// A header that is not `<scheme> <credentials>` is a 400; another scheme
/// counts as no token.
pub fn extract_token<'a>(
    authorization: Option<&'a str>,
    x_access_token: Option<&'a str>,
) -> Result<Option<&'a str>, Denial> {
    let Some(auth) = authorization else {
        return Ok(x_access_token.filter(|t| !t.is_empty()));
    };
    let Some((scheme, credentials)) = auth.split_once(' ') else {
        return Err(Denial::MalformedAuthorization);
    };
    if scheme.eq_ignore_ascii_case("bearer") {
        Ok(Some(credentials.trim()))
    } else {
        Ok(None)
    }
}

/// The `kid` of a JWT's header, without verifying anything (`None` when
/// the token is not a JWT with a string `kid`).
pub fn unverified_kid(token: &str) -> Option<String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let header = token.split('.').next()?;
    if header.len() > 4 * MAX_REMEMBERED_KID_LEN {
        return None;
    }
    let json = URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')).ok()?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&json).ok()?;
    header.get("kid")?.as_str().map(str::to_string)
}

/// The `kid` of `token` to remember as unknown, when the JWKS was fetched
/// less than `refetch_interval` ([`provider::Intervals::kid_refetch`]) ago
/// and still lacks it (the provider has just been asked: asking again soon
/// for the same `kid` is pointless).
pub fn kid_unknown_after_refetch(
    token: &str,
    jwks: &Fetched<Jwks>,
    refetch_interval: u64,
    now: u64,
) -> Option<String> {
    let recent = now < jwks.fetched_at.saturating_add(refetch_interval);
    let kid = unverified_kid(token)?;
    (recent && kid.len() <= MAX_REMEMBERED_KID_LEN && !jwks.value.contains_kid(&kid)).then_some(kid)
}

/// The outcome of [`decide`].
#[derive(Debug)]
pub enum Decision {
    Allow(Allowed),
    Deny(Denial),
    /// Fetch this provider document (at this URL), record it (or the
    /// failure) and decide again.
    Fetch(FetchKind, String, Box<HttpRequest>),
    /// Ask the introspection endpoint, then call [`introspected`].
    Introspect(Box<HttpRequest>),
}

/// A token accepted on a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// Request headers to set for the upstream.
    pub headers: Vec<(&'static str, String)>,
    /// Until when this decision may be reused for the same token and route
    /// config version (unix seconds; not after `now` means "do not cache").
    pub cache_until: u64,
}

/// Decides a request that carries `token`, with what is known about the
/// provider. `addon_headers` are the request's values of the route's
/// `introspection_addon_headers`.
pub fn decide(
    route: &Route,
    token: &str,
    provider: &ProviderState<'_>,
    addon_headers: &[(String, String)],
    now: u64,
) -> Decision {
    if token.is_empty() {
        return Decision::Deny(Denial::InvalidToken("empty bearer token".into()));
    }
    if route.config.verifies_locally() {
        decide_locally(route, token, provider, now)
    } else {
        match request_introspection(route, token, provider, addon_headers, now) {
            Ok(req) => Decision::Introspect(Box::new(req)),
            Err(d) => d,
        }
    }
}

/// Decides from the introspection endpoint's answer.
pub fn introspected(
    route: &Route,
    token: &str,
    status: u16,
    body: &[u8],
    now: u64,
) -> Result<Allowed, Denial> {
    let c = &route.config;
    let result = introspection::parse_response(status, body, &c.introspection_expiry_claim)
        .map_err(|e| Denial::ProviderUnavailable(format!("token introspection failed: {e}")))?;
    if !result.active {
        return Err(Denial::InvalidToken("token is not active".into()));
    }
    // APISIX checks scopes, then the audience, on the introspection answer
    // as on JWT claims.
    let policy = route.policy(None);
    if let Err(e) = jwt::check_scopes(&result.claims, &policy.required_scopes)
        .and_then(|()| jwt::check_audience(&result.claims, &policy.audience))
    {
        return Err(denial_for(&e));
    }
    // Then `claim_schema`, on the answer as one flat object (APISIX).
    check_claim_schema(route, &result.claims)?;
    // Without an expiry the answer is not cached.
    let mut cache_until = result.cache_until(now).unwrap_or(now);
    if c.introspection_interval > 0 {
        cache_until = cache_until.min(now.saturating_add(c.introspection_interval));
    }
    Ok(allowed(route, token, &result.raw, cache_until))
}

/// The key under which a refused token is remembered: its SHA-256, so an
/// attacker's long tokens cost 32 bytes each.
pub fn token_digest(token: &str) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(token.as_bytes()).into()
}

/// Until when a refusal may be repeated without asking the provider again:
/// `Some` only for a well-formed `active: false` answer, for
/// [`INTROSPECTION_REFUSAL_TTL`], never past an expiry the answer gives
/// nor past the token's own `exp` while that is still ahead (a JWT's,
/// read unverified: it only shortens the time). A token already expired
/// never becomes active again, so its refusal is kept the full time.
pub fn refused_until(
    route: &Route,
    token: &str,
    status: u16,
    body: &[u8],
    now: u64,
) -> Option<u64> {
    let result =
        introspection::parse_response(status, body, &route.config.introspection_expiry_claim)
            .ok()?;
    if result.active {
        return None;
    }
    let token_exp = jwt::unverified_payload(token)
        .and_then(|p| p.get("exp").and_then(serde_json::Value::as_u64));
    [result.cache_until(now), token_exp]
        .into_iter()
        .flatten()
        .filter(|&t| t > now)
        .fold(now.saturating_add(INTROSPECTION_REFUSAL_TTL), u64::min)
        .into()
}

fn decide_locally(route: &Route, token: &str, p: &ProviderState<'_>, now: u64) -> Decision {
    let c = &route.config;
    // The discovery document gives the JWKS location and, unless
    // `valid_issuers` is set, the issuer to expect.
    let metadata = if route.public_keys.is_some() && !route.needs_discovery_issuer() {
        None
    } else {
        match discovery(route, p, now) {
            Ok(m) => Some(m),
            Err(d) => return d,
        }
    };
    let policy = route.policy(metadata.map(|m| m.issuer.as_str()));

    let (keys, jwks) = match (&route.public_keys, metadata) {
        (Some(keys), _) => (keys, None),
        (None, Some(m)) => {
            let Some(uri) = m.jwks_uri.as_deref() else {
                return Decision::Deny(Denial::ProviderUnavailable(
                    "the discovery document has no jwks_uri".into(),
                ));
            };
            match provider::jwks(p, c.jwk_expires_in, now) {
                Cache::Use(j) => (&j.value, Some((uri, j))),
                Cache::Fetch => return fetch(FetchKind::Jwks, uri),
                Cache::Unavailable => {
                    return Decision::Deny(Denial::ProviderUnavailable(
                        "the provider's JWKS could not be fetched".into(),
                    ))
                }
            }
        }
        (None, None) => {
            return Decision::Deny(Denial::BadRouteConfig(
                "no key source: neither public_key nor a discovery document".into(),
            ))
        }
    };

    match jwt::verify(token, keys, &policy, now) {
        Ok(v) => {
            if let Err(d) = check_claim_schema(route, &v.claims) {
                return Decision::Deny(d);
            }
            let cache_until = v.exp.unwrap_or(now.saturating_add(NO_EXP_CACHE_TTL));
            Decision::Allow(allowed(route, token, &v.payload_json, cache_until))
        }
        Err(e) => {
            if e.kind() == Rejection::UnknownKeyId {
                if let Some((uri, j)) = jwks {
                    match provider::rotation(j, p, now) {
                        Rotation::Refetch => return fetch(FetchKind::Jwks, uri),
                        Rotation::Unavailable => {
                            return Decision::Deny(Denial::ProviderUnavailable(
                                "the token's key is not in the cached JWKS and the provider \
                                 cannot be reached for a new one"
                                    .into(),
                            ))
                        }
                        Rotation::UnknownKey => {}
                    }
                }
            }
            Decision::Deny(denial_for(&e))
        }
    }
}

fn request_introspection(
    route: &Route,
    token: &str,
    p: &ProviderState<'_>,
    addon_headers: &[(String, String)],
    now: u64,
) -> Result<HttpRequest, Decision> {
    let c = &route.config;
    let endpoint = match &c.introspection_endpoint {
        Some(e) => e.clone(),
        None => match discovery(route, p, now)?.introspection_endpoint.as_deref() {
            Some(e) => e.to_string(),
            None => {
                return Err(Decision::Deny(Denial::ProviderUnavailable(
                    "the provider advertises no introspection_endpoint".into(),
                )))
            }
        },
    };
    let auth = ClientAuth::from(c.introspection_endpoint_auth_method);
    introspection::request(
        &endpoint,
        token,
        &c.client_id,
        c.client_secret.as_ref(),
        auth,
        addon_headers,
    )
    .map_err(|e| {
        Decision::Deny(Denial::BadRouteConfig(format!(
            "introspection endpoint {endpoint}: {e}"
        )))
    })
}

/// The discovery document, or the decision to take without it.
pub(crate) fn discovery<'a>(
    route: &Route,
    p: &ProviderState<'a>,
    now: u64,
) -> Result<&'a ProviderMetadata, Decision> {
    match provider::discovery(p, now) {
        Cache::Use(d) => Ok(&d.value),
        Cache::Fetch => Err(fetch(FetchKind::Discovery, &route.config.discovery)),
        Cache::Unavailable => Err(Decision::Deny(Denial::ProviderUnavailable(
            "the provider's discovery document could not be fetched".into(),
        ))),
    }
}

fn fetch(kind: FetchKind, url: &str) -> Decision {
    match provider::fetch(kind, url) {
        Ok(Need { kind, url, req }) => Decision::Fetch(kind, url, req),
        Err(why) => Decision::Deny(Denial::ProviderUnavailable(why)),
    }
}

/// The route's `claim_schema` over a token's claims (the JWT payload or
/// the introspection answer): a mismatch is a 401 `invalid_token`, as in
/// APISIX. Checked before a verdict is cached, and the cache key carries
/// the config version, so a changed schema checks cached tokens again.
fn check_claim_schema(
    route: &Route,
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), Denial> {
    match &route.config.claim_schema {
        Some(schema) => schema
            .check_object(claims)
            .map_err(|m| Denial::InvalidToken(m.to_string())),
        None => Ok(()),
    }
}

/// Maps a verifier error to the reply reason.
fn denial_for(e: &VerifyError) -> Denial {
    match e {
        VerifyError::InsufficientScope(scopes) => Denial::InsufficientScope(scopes.clone()),
        VerifyError::AudienceMissing => Denial::AudienceMissing,
        VerifyError::AudienceMismatch => Denial::AudienceMismatch,
        _ => Denial::InvalidToken(e.to_string()),
    }
}

fn allowed(route: &Route, token: &str, userinfo_json: &[u8], cache_until: u64) -> Allowed {
    let headers = [
        route.access_token_header(token),
        route.userinfo_header(userinfo_json),
    ]
    .into_iter()
    .flatten()
    .collect();
    Allowed {
        headers,
        cache_until,
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde_json::{json, Value};

    use super::*;
    use crate::discovery;
    use crate::jwt::tests::{
        claims, jwks, provider_keys, rsa_jwk, test_keys, token, with, CLIENT, ISS, NOW,
    };
    use crate::jwt::Alg;

    fn disc_url() -> String {
        format!("{ISS}/.well-known/openid-configuration")
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

    fn metadata() -> Fetched<ProviderMetadata> {
        let doc = json!({
            "issuer": ISS,
            "jwks_uri": format!("{ISS}/protocol/openid-connect/certs"),
            "introspection_endpoint": format!("{ISS}/protocol/openid-connect/token/introspect"),
        });
        Fetched {
            value: discovery::parse_response(200, doc.to_string().as_bytes(), ISS).unwrap(),
            fetched_at: NOW - 10,
        }
    }

    fn keys(fetched_at: u64) -> Fetched<Jwks> {
        Fetched {
            value: provider_keys(),
            fetched_at,
        }
    }

    fn rs256() -> String {
        token(Alg::RS256, Some("rsa-a"), &claims())
    }

    fn allowed(d: Decision) -> Allowed {
        match d {
            Decision::Allow(a) => a,
            other => panic!("expected Allow, got {other:?}"),
        }
    }

    fn denied(d: Decision) -> Denial {
        match d {
            Decision::Deny(x) => x,
            other => panic!("expected Deny, got {other:?}"),
        }
    }

    fn header<'a>(a: &'a Allowed, name: &str) -> Option<&'a str> {
        a.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn tokens_come_from_authorization_or_x_access_token() {
        assert_eq!(extract_token(Some("Bearer abc"), None), Ok(Some("abc")));
        assert_eq!(
            extract_token(Some("bearer abc"), Some("x")),
            Ok(Some("abc"))
        );
        assert_eq!(
            extract_token(Some("Basic dXNlcjpwYXNz"), Some("x")),
            Ok(None)
        );
        assert_eq!(
            extract_token(Some("Bearer"), None),
            Err(Denial::MalformedAuthorization)
        );
        assert_eq!(
            extract_token(Some("garbage"), None),
            Err(Denial::MalformedAuthorization)
        );
        assert_eq!(extract_token(None, Some("xyz")), Ok(Some("xyz")));
        assert_eq!(extract_token(None, Some("")), Ok(None));
        assert_eq!(extract_token(None, None), Ok(None));
    }

    #[test]
    fn jwks_route_fetches_discovery_then_jwks_then_allows() {
        let r = route(json!({"use_jwks": true}));
        let t = rs256();
        let d = decide(&r, &t, &ProviderState::default(), &[], NOW);
        let Decision::Fetch(FetchKind::Discovery, _, req) = d else {
            panic!("{d:?}")
        };
        assert_eq!(req.cluster, "oidc|https|idp.example|443");
        assert_eq!(
            req.path,
            "/realms/quickstart-realm/.well-known/openid-configuration"
        );

        let m = metadata();
        let p = ProviderState {
            discovery: Some(&m),
            ..Default::default()
        };
        let d = decide(&r, &t, &p, &[], NOW);
        let Decision::Fetch(FetchKind::Jwks, _, req) = d else {
            panic!("{d:?}")
        };
        assert_eq!(
            req.path,
            "/realms/quickstart-realm/protocol/openid-connect/certs"
        );

        let k = keys(NOW - 10);
        let p = ProviderState {
            discovery: Some(&m),
            jwks: Some(&k),
            ..Default::default()
        };
        let a = allowed(decide(&r, &t, &p, &[], NOW));
        assert_eq!(a.cache_until, NOW + 300);
        assert_eq!(header(&a, "x-access-token"), Some(t.as_str()));
        let userinfo = STANDARD.decode(header(&a, "x-userinfo").unwrap()).unwrap();
        let userinfo: Value = serde_json::from_slice(&userinfo).unwrap();
        assert_eq!(userinfo["preferred_username"], "jack");
    }

    #[test]
    fn header_options_are_followed() {
        let r = route(
            json!({"use_jwks": true, "access_token_in_authorization_header": true,
                             "set_userinfo_header": false}),
        );
        let (m, k) = (metadata(), keys(NOW));
        let p = ProviderState {
            discovery: Some(&m),
            jwks: Some(&k),
            ..Default::default()
        };
        let t = rs256();
        let a = allowed(decide(&r, &t, &p, &[], NOW));
        assert_eq!(a.headers, vec![("authorization", format!("Bearer {t}"))]);
    }

    #[test]
    fn bad_tokens_are_denied_as_invalid() {
        let r = route(json!({"use_jwks": true}));
        let (m, k) = (metadata(), keys(NOW));
        let p = ProviderState {
            discovery: Some(&m),
            jwks: Some(&k),
            ..Default::default()
        };
        for t in [
            "".to_string(),
            "not.a.jwt".to_string(),
            token(
                Alg::RS256,
                Some("rsa-a"),
                &with(claims(), "exp", json!(NOW - 1000)),
            ),
            token(
                Alg::RS256,
                Some("rsa-a"),
                &with(claims(), "iss", json!("https://evil")),
            ),
        ] {
            let d = denied(decide(&r, &t, &p, &[], NOW));
            assert!(matches!(d, Denial::InvalidToken(_)), "{d:?}");
            assert_eq!(d.reply("apisix").status, 401);
        }
    }

    #[test]
    fn unknown_kid_refetches_the_jwks_at_most_once_per_interval() {
        let r = route(json!({"use_jwks": true}));
        let m = metadata();
        // The cached set has only key B; the token is signed by a new key A.
        let old = Fetched {
            value: jwks(vec![rsa_jwk(&test_keys().rsa_b, "rsa-b")]),
            fetched_at: NOW - 60,
        };
        let p = ProviderState {
            discovery: Some(&m),
            jwks: Some(&old),
            ..Default::default()
        };
        let d = decide(&r, &rs256(), &p, &[], NOW);
        assert!(matches!(d, Decision::Fetch(FetchKind::Jwks, _, _)), "{d:?}");

        // Just refetched (still unknown): refused, no new call.
        let fresh = Fetched {
            value: old.value.clone(),
            fetched_at: NOW - 1,
        };
        let p = ProviderState {
            discovery: Some(&m),
            jwks: Some(&fresh),
            ..Default::default()
        };
        assert!(matches!(
            denied(decide(&r, &rs256(), &p, &[], NOW)),
            Denial::InvalidToken(_)
        ));

        // A refetch failed a moment ago: no new call, and no verdict on
        // the token either (503).
        let p = ProviderState {
            discovery: Some(&m),
            jwks: Some(&old),
            jwks_failed_at: Some(NOW - 1),
            ..Default::default()
        };
        assert!(matches!(
            denied(decide(&r, &rs256(), &p, &[], NOW)),
            Denial::ProviderUnavailable(_)
        ));
    }

    #[test]
    fn a_fetch_marker_holds_for_the_call_timeout_only() {
        assert!(!fetch_in_flight(None, 3, NOW));
        assert!(fetch_in_flight(Some(NOW), 3, NOW));
        assert!(fetch_in_flight(Some(NOW - 3), 3, NOW));
        // Older than the timeout: the fetch is over, or its worker gone.
        assert!(!fetch_in_flight(Some(NOW - 4), 3, NOW));
        // A marker from the future (clock skew between workers) is ignored.
        assert!(!fetch_in_flight(Some(NOW + 10), 3, NOW));
    }

    #[test]
    fn documents_being_fetched_elsewhere_are_used_as_cached() {
        let r = route(json!({"use_jwks": true}));
        let t = rs256();
        // Stale discovery and JWKS: fetched again, unless a fetch is in
        // flight, then the stale ones verify the token.
        let stale_m = Fetched {
            value: metadata().value,
            fetched_at: NOW - DISCOVERY_TTL - 1,
        };
        let stale_k = keys(NOW - 86400 - 1);
        let p = ProviderState {
            discovery: Some(&stale_m),
            jwks: Some(&stale_k),
            ..Default::default()
        };
        assert!(matches!(
            decide(&r, &t, &p, &[], NOW),
            Decision::Fetch(FetchKind::Discovery, _, _)
        ));
        let p = ProviderState {
            discovery_in_flight: true,
            ..p
        };
        assert!(matches!(
            decide(&r, &t, &p, &[], NOW),
            Decision::Fetch(FetchKind::Jwks, _, _)
        ));
        let p = ProviderState {
            jwks_in_flight: true,
            ..p
        };
        allowed(decide(&r, &t, &p, &[], NOW));

        // Nothing cached: a cold start fetches even so.
        let p = ProviderState {
            discovery_in_flight: true,
            jwks_in_flight: true,
            ..Default::default()
        };
        assert!(matches!(
            decide(&r, &t, &p, &[], NOW),
            Decision::Fetch(FetchKind::Discovery, _, _)
        ));
    }

    #[test]
    fn an_unknown_kid_does_not_refetch_while_a_fetch_is_in_flight() {
        let r = route(json!({"use_jwks": true}));
        let m = metadata();
        let old = Fetched {
            value: jwks(vec![rsa_jwk(&test_keys().rsa_b, "rsa-b")]),
            fetched_at: NOW - 60,
        };
        let p = ProviderState {
            discovery: Some(&m),
            jwks: Some(&old),
            jwks_in_flight: true,
            ..Default::default()
        };
        // Not a fetch, and a 401 (the set in hand does not have the key),
        // not a 503.
        let d = denied(decide(&r, &rs256(), &p, &[], NOW));
        assert!(matches!(d, Denial::InvalidToken(_)), "{d:?}");
        assert_eq!(d.reply("apisix").status, 401);
    }

    #[test]
    fn kids_still_unknown_after_a_refetch_are_remembered() {
        let set = jwks(vec![rsa_jwk(&test_keys().rsa_b, "rsa-b")]);
        let just = Fetched {
            value: set.clone(),
            fetched_at: NOW - 1,
        };
        let t = rs256(); // kid rsa-a
        assert_eq!(unverified_kid(&t).as_deref(), Some("rsa-a"));
        assert_eq!(
            kid_unknown_after_refetch(&t, &just, KID_REFETCH_INTERVAL, NOW).as_deref(),
            Some("rsa-a")
        );
        // A set fetched a while ago has not been asked about this kid.
        let old = Fetched {
            value: set,
            fetched_at: NOW - KID_REFETCH_INTERVAL,
        };
        assert_eq!(
            kid_unknown_after_refetch(&t, &old, KID_REFETCH_INTERVAL, NOW),
            None
        );
        // A kid the set has, no kid, not a JWT, an overlong kid: nothing.
        let b = token(Alg::RS256, Some("rsa-b"), &claims());
        assert_eq!(
            kid_unknown_after_refetch(&b, &just, KID_REFETCH_INTERVAL, NOW),
            None
        );
        let none = token(Alg::RS256, None, &claims());
        assert_eq!(
            kid_unknown_after_refetch(&none, &just, KID_REFETCH_INTERVAL, NOW),
            None
        );
        assert_eq!(
            kid_unknown_after_refetch("opaque", &just, KID_REFETCH_INTERVAL, NOW),
            None
        );
        let long = token(
            Alg::RS256,
            Some(&"k".repeat(MAX_REMEMBERED_KID_LEN + 1)),
            &claims(),
        );
        assert_eq!(
            kid_unknown_after_refetch(&long, &just, KID_REFETCH_INTERVAL, NOW),
            None
        );
    }

    #[test]
    fn introspection_refusals_are_kept_briefly() {
        let r = route(json!({}));
        let ttl = NOW + INTROSPECTION_REFUSAL_TTL;
        let refused = br#"{"active":false}"#;
        assert_eq!(refused_until(&r, "opaque", 200, refused, NOW), Some(ttl));
        // Accepted answers and provider failures are no refusals.
        assert_eq!(
            refused_until(&r, "opaque", 200, br#"{"active":true}"#, NOW),
            None
        );
        assert_eq!(refused_until(&r, "opaque", 500, refused, NOW), None);
        assert_eq!(refused_until(&r, "opaque", 200, b"<html>", NOW), None);
        // Never past an expiry ahead: the answer's or the token's own.
        let answer = format!(r#"{{"active":false,"exp":{}}}"#, NOW + 3);
        assert_eq!(
            refused_until(&r, "opaque", 200, answer.as_bytes(), NOW),
            Some(NOW + 3)
        );
        let soon = token(
            Alg::RS256,
            Some("rsa-a"),
            &with(claims(), "exp", json!(NOW + 2)),
        );
        assert_eq!(refused_until(&r, &soon, 200, refused, NOW), Some(NOW + 2));
        // An expired token stays refused the whole time.
        let gone = token(
            Alg::RS256,
            Some("rsa-a"),
            &with(claims(), "exp", json!(NOW - 2)),
        );
        assert_eq!(refused_until(&r, &gone, 200, refused, NOW), Some(ttl));
    }

    #[test]
    fn provider_outages() {
        let r = route(json!({"use_jwks": true}));
        let t = rs256();
        // Nothing cached and the last call just failed: 503 at once.
        let p = ProviderState {
            discovery_failed_at: Some(NOW - 1),
            ..Default::default()
        };
        let d = denied(decide(&r, &t, &p, &[], NOW));
        assert_eq!(d.reply("apisix").status, 503);
        // ... and a new try once the retry interval has passed.
        let p = ProviderState {
            discovery_failed_at: Some(NOW - RETRY_AFTER_FAILURE),
            ..Default::default()
        };
        assert!(matches!(
            decide(&r, &t, &p, &[], NOW),
            Decision::Fetch(FetchKind::Discovery, _, _)
        ));

        // Stale documents are refreshed, but used while the provider is down.
        let m = metadata();
        let stale = keys(NOW - 86400 - 1);
        let p = ProviderState {
            discovery: Some(&m),
            jwks: Some(&stale),
            ..Default::default()
        };
        assert!(matches!(
            decide(&r, &t, &p, &[], NOW),
            Decision::Fetch(FetchKind::Jwks, _, _)
        ));
        let p = ProviderState {
            jwks_failed_at: Some(NOW),
            ..p
        };
        allowed(decide(&r, &t, &p, &[], NOW));
    }

    #[test]
    fn public_key_with_valid_issuers_needs_no_provider() {
        let pem = {
            use rsa::pkcs8::EncodePublicKey as _;
            test_keys()
                .rsa_a
                .to_public_key()
                .to_public_key_pem(Default::default())
                .unwrap()
        };
        let r = route(
            json!({"public_key": pem, "claim_validator": {"issuer": {"valid_issuers": [ISS]}}}),
        );
        let t = rs256();
        allowed(decide(&r, &t, &ProviderState::default(), &[], NOW));
        // Without valid_issuers the discovery issuer is needed.
        let r = route(json!({"public_key": pem}));
        assert!(matches!(
            decide(&r, &t, &ProviderState::default(), &[], NOW),
            Decision::Fetch(FetchKind::Discovery, _, _)
        ));
    }

    #[test]
    fn claim_schema_is_checked_on_the_jwt_payload() {
        let schema = |user: &str| {
            route(json!({"use_jwks": true, "claim_schema": {
                "required": ["preferred_username"],
                "properties": {"preferred_username": {"const": user}}
            }}))
        };
        let (m, k) = (metadata(), keys(NOW));
        let p = ProviderState {
            discovery: Some(&m),
            jwks: Some(&k),
            ..Default::default()
        };
        let t = rs256();
        allowed(decide(&schema("jack"), &t, &p, &[], NOW));
        let d = denied(decide(&schema("jill"), &t, &p, &[], NOW));
        assert_eq!(
            d,
            Denial::InvalidToken("claim_schema: const failed at /preferred_username".into())
        );
        let reply = d.reply("apisix");
        assert_eq!(reply.status, 401);
        assert!(reply.headers.iter().any(|(n, v)| n == "www-authenticate"
            && v.starts_with("Bearer realm=\"apisix\", error=\"invalid_token\"")));
    }

    #[test]
    fn the_same_token_gets_each_routes_answer() {
        let lenient = route(json!({"use_jwks": true}));
        let strict = route(json!({"use_jwks": true, "required_scopes": ["admin"]}));
        let audience = route(
            json!({"use_jwks": true, "claim_validator": {"audience": {"match_with_client_id": true}}}),
        );
        let (m, k) = (metadata(), keys(NOW));
        let p = ProviderState {
            discovery: Some(&m),
            jwks: Some(&k),
            ..Default::default()
        };
        let t = rs256();
        allowed(decide(&lenient, &t, &p, &[], NOW));
        let d = denied(decide(&strict, &t, &p, &[], NOW));
        assert_eq!(d, Denial::InsufficientScope(vec!["admin".into()]));
        assert_eq!(d.reply("x").status, 403);
        // aud contains the client id in the fixture claims.
        allowed(decide(&audience, &t, &p, &[], NOW));
        let t2 = token(
            Alg::RS256,
            Some("rsa-a"),
            &with(claims(), "aud", json!("account")),
        );
        assert_eq!(
            denied(decide(&audience, &t2, &p, &[], NOW)),
            Denial::AudienceMismatch
        );
    }

    #[test]
    fn introspection_request_uses_the_discovered_endpoint_and_client_credentials() {
        let r = route(json!({}));
        assert!(matches!(
            decide(&r, "opaque", &ProviderState::default(), &[], NOW),
            Decision::Fetch(FetchKind::Discovery, _, _)
        ));
        let m = metadata();
        let p = ProviderState {
            discovery: Some(&m),
            ..Default::default()
        };
        let addon = [("x-tenant".to_string(), "t1".to_string())];
        let Decision::Introspect(req) = decide(&r, "opaque", &p, &addon, NOW) else {
            panic!()
        };
        assert_eq!(req.method, "POST");
        assert_eq!(
            req.path,
            "/realms/quickstart-realm/protocol/openid-connect/token/introspect"
        );
        assert!(req
            .headers
            .iter()
            .any(|(k, v)| k == "authorization" && v.starts_with("Basic ")));
        assert!(req
            .headers
            .iter()
            .any(|(k, v)| k == "x-tenant" && v == "t1"));
        let body = String::from_utf8(req.body.clone().unwrap()).unwrap();
        assert!(body.contains("token=opaque"), "{body}");

        // A configured endpoint needs no discovery.
        let r = route(json!({"introspection_endpoint": "http://127.0.0.1:9999/introspect"}));
        let Decision::Introspect(req) = decide(&r, "opaque", &ProviderState::default(), &[], NOW)
        else {
            panic!()
        };
        assert_eq!(req.cluster, "oidc|http|127.0.0.1|9999");
    }

    #[test]
    fn claim_schema_is_checked_on_the_introspection_answer() {
        let r = route(json!({"claim_schema": {
            "required": ["groups"],
            "properties": {"groups": {"contains": {"const": "/staff"}}}
        }}));
        let answer = |groups: Value| {
            json!({"active": true, "sub": "u", "exp": NOW + 100, "groups": groups}).to_string()
        };
        let ok = answer(json!(["/staff"]));
        assert!(introspected(&r, "tok", 200, ok.as_bytes(), NOW).is_ok());
        let other = answer(json!(["/guests"]));
        assert_eq!(
            introspected(&r, "tok", 200, other.as_bytes(), NOW).unwrap_err(),
            Denial::InvalidToken("claim_schema: contains failed at /groups".into())
        );
        let none = json!({"active": true, "sub": "u"}).to_string();
        assert_eq!(
            introspected(&r, "tok", 200, none.as_bytes(), NOW).unwrap_err(),
            Denial::InvalidToken("claim_schema: required failed at /".into())
        );
    }

    #[test]
    fn introspection_answers() {
        let r = route(json!({}));
        let body =
            json!({"active": true, "sub": "u", "exp": NOW + 100, "scope": "openid"}).to_string();
        let a = introspected(&r, "tok", 200, body.as_bytes(), NOW).unwrap();
        assert_eq!(a.cache_until, NOW + 100);
        assert_eq!(
            STANDARD.decode(header(&a, "x-userinfo").unwrap()).unwrap(),
            body.as_bytes()
        );
        assert_eq!(header(&a, "x-access-token"), Some("tok"));

        let capped = route(json!({"introspection_interval": 30}));
        assert_eq!(
            introspected(&capped, "tok", 200, body.as_bytes(), NOW)
                .unwrap()
                .cache_until,
            NOW + 30
        );

        let inactive = json!({"active": false}).to_string();
        assert!(matches!(
            introspected(&r, "tok", 200, inactive.as_bytes(), NOW).unwrap_err(),
            Denial::InvalidToken(_)
        ));
        for (status, body) in [(500, "oops"), (200, "not json"), (200, "{}")] {
            let d = introspected(&r, "tok", status, body.as_bytes(), NOW).unwrap_err();
            assert_eq!(d.reply("x").status, 503, "{status} {body}");
        }
        let strict = route(json!({"required_scopes": ["admin"]}));
        assert_eq!(
            introspected(&strict, "tok", 200, body.as_bytes(), NOW).unwrap_err(),
            Denial::InsufficientScope(vec!["admin".into()])
        );
    }
}
