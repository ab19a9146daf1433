//! OpenID Connect Back-Channel Logout 1.0: the provider POSTs a
//! `logout_token` to the route's `backchannel_logout_path` (an extension
//! attribute) and the sessions it names stop working.
//!
//! This module is pure: [`start`] sorts the request (not ours, refused at
//! once, or read the body), [`logout_token`] reads the form body, and
//! [`decide`] verifies the token with the provider's documents (asking for
//! a fetch when they are missing) as section 2.6 of the spec asks:
//!
//! 1. a signed JWT (a JWE is refused), signature with the provider's JWKS
//!    and the route's allowed algorithms;
//! 2. `iss` = the route's issuer (the discovery document's, or
//!    `claim_validator.issuer.valid_issuers`), `aud` contains `client_id`,
//!    `exp` (if present) not passed, `iat` present, not in the future
//!    beyond `iat_slack` and not older than [`MAX_AGE`];
//! 3. `events` is an object with the member [`EVENT`], itself an object;
//! 4. `sid` and/or `sub` (strings);
//! 5. no `nonce` (an ID token cannot pass for a logout token);
//! 6. `jti` (a string): the caller refuses a `jti` seen before within the
//!    token's acceptable age ([`Logout::replay_key`]).
//!
//! The answer is 200, or 400 with `{"error":"invalid_request",
//! "error_description":...}`; both `Cache-Control: no-store` (section 2.8).

use serde_json::{Map, Value};

use crate::http::HttpRequest;
use crate::jwt::{self, Jwks};
use crate::provider::{self, Cache, FetchKind, ProviderState, Rotation};
use crate::reply::Reply;
use crate::revocation::subjects::{self, Kind};
use crate::revocation::WITHOUT_ABSOLUTE_TIMEOUT;
use crate::route::Route;

/// The largest request body read (a logout token is 1-2 KB).
pub const MAX_BODY: usize = 16 * 1024;
/// The oldest `iat` accepted, in seconds (plus `iat_slack`): the provider
/// sends the token as it makes it. It also bounds the replay memory.
pub const MAX_AGE: u64 = 300;
/// The `events` member of a logout token.
pub const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How a request on a route begins.
#[derive(Debug)]
pub enum Start {
    /// Not the route's back-channel logout path.
    NotHere,
    /// The path, but not a form POST: answer this.
    Refuse(Reply, String),
    /// Read the body (at most [`MAX_BODY`]) and give it to
    /// [`logout_token`].
    ReadBody,
}

/// Sorts a request by its method, path (with query) and content type.
pub fn start(
    route: &Route,
    method: Option<&str>,
    path: Option<&str>,
    content_type: Option<&str>,
) -> Start {
    let Some(own) = route.config.backchannel_logout_path.as_deref() else {
        return Start::NotHere;
    };
    let path = path.unwrap_or("/");
    if path.split('?').next() != Some(own) {
        return Start::NotHere;
    }
    if method != Some("POST") {
        let why = "a logout request must be a POST";
        let mut reply = refused(why);
        reply.status = 405;
        reply.headers.push(("allow".into(), "POST".into()));
        return Start::Refuse(reply, why.into());
    }
    let mime = content_type
        .and_then(|c| c.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    if mime.as_deref() != Some("application/x-www-form-urlencoded") {
        let why = "a logout request must be application/x-www-form-urlencoded";
        return Start::Refuse(refused(why), why.into());
    }
    Start::ReadBody
}

/// The `logout_token` of a form body: exactly one, not empty.
pub fn logout_token(body: &[u8]) -> Result<String, String> {
    if body.len() > MAX_BODY {
        return Err("the request body is too large".into());
    }
    let mut found = url::form_urlencoded::parse(body).filter(|(k, _)| k == "logout_token");
    match (found.next(), found.next()) {
        (Some((_, t)), None) if !t.is_empty() => Ok(t.into_owned()),
        (Some(_), Some(_)) => Err("more than one logout_token".into()),
        _ => Err("no logout_token".into()),
    }
}

/// A verified logout token: what it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logout {
    pub iss: String,
    pub sid: Option<String>,
    pub sub: Option<String>,
    pub jti: String,
    pub iat: u64,
}

impl Logout {
    /// The revocation made at `now`: by `sid` when the token has one (that
    /// provider session), else by `sub` (every session of the user); it
    /// lasts as long as a session of the route made now could
    /// (`absolute_timeout`, or [`WITHOUT_ABSOLUTE_TIMEOUT`]).
    pub fn revocation(&self, route: &Route, now: u64) -> subjects::Revocation {
        let life = match &route.config.session {
            Some(s) if s.absolute_timeout > 0 => s.absolute_timeout,
            _ => WITHOUT_ABSOLUTE_TIMEOUT,
        };
        let key = match (&self.sid, &self.sub) {
            (Some(sid), _) => subjects::key(Kind::Sid, &self.iss, sid),
            (None, Some(sub)) => subjects::key(Kind::Sub, &self.iss, sub),
            // `check_claims` makes sure one is there.
            (None, None) => subjects::key(Kind::Sub, &self.iss, ""),
        };
        subjects::Revocation {
            key,
            since: now,
            until: now.saturating_add(life),
        }
    }

    /// The replay memory's entry: the `jti`'s key, kept until the token
    /// is too old to be accepted anyway.
    pub fn replay_key(&self, route: &Route) -> ([u8; 16], u64) {
        let until = self
            .iat
            .saturating_add(MAX_AGE)
            .saturating_add(route.config.iat_slack);
        (subjects::key(Kind::Jti, &self.iss, &self.jti), until)
    }
}

/// Section 2.4 and 2.6's claim rules on a token whose signature, `iss`,
/// `aud`, `exp`, `nbf` and `iat` (when present) the verifier has checked.
pub fn check_claims(claims: &Map<String, Value>, leeway: u64, now: u64) -> Result<Logout, String> {
    let string = |n: &str| -> Result<Option<String>, String> {
        match claims.get(n) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(format!("\"{n}\" is not a non-empty string")),
        }
    };
    if claims.contains_key("nonce") {
        return Err("a logout token has no \"nonce\"".into());
    }
    let event = claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.get(EVENT));
    if !event.is_some_and(Value::is_object) {
        return Err("no back-channel logout event in \"events\"".into());
    }
    let iss = string("iss")?.ok_or("no \"iss\"")?;
    let jti = string("jti")?.ok_or("no \"jti\"")?;
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or("no \"iat\"")?;
    if iat > now.saturating_add(leeway) {
        return Err("\"iat\" is in the future".into());
    }
    if iat.saturating_add(MAX_AGE).saturating_add(leeway) < now {
        return Err("the logout token is too old".into());
    }
    let (sid, sub) = (string("sid")?, string("sub")?);
    if sid.is_none() && sub.is_none() {
        return Err("neither \"sid\" nor \"sub\"".into());
    }
    Ok(Logout {
        iss,
        sid,
        sub,
        jti,
        iat,
    })
}

/// What [`decide`] found.
#[derive(Debug)]
pub enum Decision {
    /// Fetch this provider document, store it, decide again.
    Fetch(FetchKind, String, Box<HttpRequest>),
    Verified(Logout),
    /// 400 with this description.
    Refused(String),
    /// The provider's documents cannot be had: no verdict (503).
    Unavailable(String),
}

/// Verifies `token` with what is known of the provider at `now`.
pub fn decide(route: &Route, token: &str, p: &ProviderState<'_>, now: u64) -> Decision {
    let fetch = |kind, url: &str| match provider::fetch(kind, url) {
        Ok(n) => Decision::Fetch(n.kind, n.url, n.req),
        Err(why) => Decision::Unavailable(why),
    };
    let m = match provider::discovery(p, now) {
        Cache::Use(d) => &d.value,
        Cache::Fetch => return fetch(FetchKind::Discovery, &route.config.discovery),
        Cache::Unavailable => {
            return Decision::Unavailable(
                "the provider's discovery document could not be fetched".into(),
            )
        }
    };
    let Some(uri) = m.jwks_uri.as_deref() else {
        return Decision::Unavailable("the provider has no jwks_uri".into());
    };
    let jwks = match provider::jwks(p, route.config.jwk_expires_in, now) {
        Cache::Use(j) => j,
        Cache::Fetch => return fetch(FetchKind::Jwks, uri),
        Cache::Unavailable => {
            return Decision::Unavailable("the provider's JWKS could not be fetched".into())
        }
    };
    match verify(route, token, &jwks.value, &m.issuer, now) {
        Ok(logout) => Decision::Verified(logout),
        Err((true, why)) => match provider::rotation(jwks, p, now) {
            Rotation::Refetch => fetch(FetchKind::Jwks, uri),
            Rotation::Unavailable => Decision::Unavailable(
                "the logout token's key is not in the cached JWKS and the provider cannot be \
                 reached for a new one"
                    .into(),
            ),
            Rotation::UnknownKey => Decision::Refused(why),
        },
        Err((false, why)) => Decision::Refused(why),
    }
}

/// The signature and claims (`Err((unknown kid, why))`).
fn verify(
    route: &Route,
    token: &str,
    keys: &Jwks,
    issuer: &str,
    now: u64,
) -> Result<Logout, (bool, String)> {
    let mut policy = route.policy(Some(issuer));
    policy.audience.claim = "aud".into();
    policy.audience.match_with_client_id = true;
    policy.required_scopes.clear();
    let verified = jwt::verify(token, keys, &policy, now).map_err(|e| {
        (
            e.kind() == jwt::Rejection::UnknownKeyId,
            format!("the logout token is not valid: {e}"),
        )
    })?;
    check_claims(&verified.claims, policy.leeway, now).map_err(|why| (false, why))
}

/// 200: the sessions are ended.
pub fn accepted() -> Reply {
    Reply {
        status: 200,
        headers: vec![("cache-control".into(), "no-store".into())],
        body: String::new(),
    }
}

/// 400 `invalid_request` with `why` (no part of the token).
pub fn refused(why: &str) -> Reply {
    let body = serde_json::json!({"error": "invalid_request", "error_description": why});
    Reply {
        status: 400,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("cache-control".into(), "no-store".into()),
        ],
        body: body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::discovery::ProviderMetadata;
    use crate::jwt::tests::{provider_keys, token, CLIENT, ISS, NOW};
    use crate::jwt::Alg;
    use crate::provider::Fetched;

    fn route(extra: Value) -> Route {
        let mut v = json!({
            "client_id": CLIENT,
            "client_secret": "s3cr3t",
            "discovery": format!("{ISS}/.well-known/openid-configuration"),
            "backchannel_logout_path": "/bcl",
            "session": {"secret": "0123456789abcdef0123", "absolute_timeout": 3600},
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        Route::from_json(&v.to_string()).unwrap()
    }

    fn logout_claims() -> Value {
        json!({
            "iss": ISS,
            "aud": CLIENT,
            "iat": NOW - 5,
            "exp": NOW + 120,
            "jti": "j-1",
            "sid": "s-1",
            "sub": "user-1",
            "events": {EVENT: {}},
        })
    }

    fn metadata() -> Fetched<ProviderMetadata> {
        let body = json!({"issuer": ISS, "jwks_uri": format!("{ISS}/certs")}).to_string();
        Fetched {
            value: crate::discovery::parse_document(200, body.as_bytes()).unwrap(),
            fetched_at: NOW,
        }
    }

    fn keys() -> Fetched<Jwks> {
        Fetched {
            value: provider_keys(),
            fetched_at: NOW - 100,
        }
    }

    fn check(c: &Value) -> Decision {
        let (m, k) = (metadata(), keys());
        let p = ProviderState {
            discovery: Some(&m),
            jwks: Some(&k),
            ..ProviderState::default()
        };
        decide(
            &route(json!({})),
            &token(Alg::RS256, Some("rsa-a"), c),
            &p,
            NOW,
        )
    }

    fn refused_for(c: Value) -> String {
        match check(&c) {
            Decision::Refused(why) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn with(mut c: Value, k: &str, v: Value) -> Value {
        c[k] = v;
        c
    }

    fn without(mut c: Value, k: &str) -> Value {
        c.as_object_mut().unwrap().remove(k);
        c
    }

    #[test]
    fn a_valid_token_names_its_session() {
        let Decision::Verified(l) = check(&logout_claims()) else {
            panic!()
        };
        assert_eq!(l.iss, ISS);
        assert_eq!(l.sid.as_deref(), Some("s-1"));
        let r = route(json!({}));
        let rev = l.revocation(&r, NOW);
        assert_eq!(rev.key, subjects::key(Kind::Sid, ISS, "s-1"));
        assert_eq!((rev.since, rev.until), (NOW, NOW + 3600));
        assert_eq!(l.replay_key(&r).1, NOW - 5 + MAX_AGE + 120);
        // Only `sub`: every session of the user.
        let Decision::Verified(l) = check(&without(logout_claims(), "sid")) else {
            panic!()
        };
        assert_eq!(
            l.revocation(&r, NOW).key,
            subjects::key(Kind::Sub, ISS, "user-1")
        );
        // Only `sid`; no `exp` (the spec's older drafts).
        assert!(matches!(
            check(&without(without(logout_claims(), "sub"), "exp")),
            Decision::Verified(_)
        ));
        // `aud` as a list containing the client.
        assert!(matches!(
            check(&with(logout_claims(), "aud", json!(["x", CLIENT]))),
            Decision::Verified(_)
        ));
        // No absolute timeout: the fallback.
        let r =
            route(json!({"session": {"secret": "0123456789abcdef0123", "absolute_timeout": 0}}));
        assert_eq!(l.revocation(&r, NOW).until, NOW + WITHOUT_ABSOLUTE_TIMEOUT);
    }

    #[test]
    fn every_rule_refuses() {
        let c = logout_claims;
        for (claims, why) in [
            (with(c(), "iss", json!("https://evil")), "iss"),
            (with(c(), "aud", json!("other")), "aud"),
            (without(c(), "aud"), "no aud"),
            (with(c(), "nonce", json!("n")), "nonce"),
            (without(c(), "events"), "no events"),
            (with(c(), "events", json!({"other": {}})), "other event"),
            (
                with(c(), "events", json!({EVENT: "x"})),
                "event not an object",
            ),
            (with(c(), "events", json!([EVENT])), "events not an object"),
            (without(without(c(), "sid"), "sub"), "neither sid nor sub"),
            (with(c(), "sid", json!(5)), "sid not a string"),
            (with(c(), "sub", json!("")), "empty sub"),
            (without(c(), "jti"), "no jti"),
            (without(c(), "iat"), "no iat"),
            (with(c(), "iat", json!(NOW + 121)), "iat in the future"),
            (with(c(), "iat", json!(NOW - MAX_AGE - 121)), "too old"),
            (with(c(), "exp", json!(NOW - 121)), "expired"),
        ] {
            let why_refused = refused_for(claims);
            assert!(!why_refused.is_empty(), "{why}");
        }
        // An ID token (nonce, no events) is no logout token.
        let id_token = json!({"iss": ISS, "aud": CLIENT, "sub": "user-1", "iat": NOW,
            "exp": NOW + 300, "nonce": "n", "sid": "s-1", "jti": "x"});
        assert!(refused_for(id_token).contains("nonce"));
    }

    #[test]
    fn signatures_keys_and_documents() {
        let r = route(json!({}));
        let (m, k) = (metadata(), keys());
        let p = ProviderState {
            discovery: Some(&m),
            jwks: Some(&k),
            ..ProviderState::default()
        };
        // Another key's signature under a known kid.
        let good = token(Alg::RS256, Some("rsa-a"), &logout_claims());
        let parts: Vec<&str> = good.split('.').collect();
        let other = token(
            Alg::RS256,
            Some("rsa-a"),
            &with(logout_claims(), "jti", json!("2")),
        );
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            other.split('.').nth(2).unwrap()
        );
        assert!(matches!(decide(&r, &forged, &p, NOW), Decision::Refused(_)));
        assert!(matches!(decide(&r, "a.b", &p, NOW), Decision::Refused(_)));
        // An unknown kid refetches the JWKS (the rotation rule).
        let unknown = token(Alg::RS256, Some("nope"), &logout_claims());
        assert!(matches!(
            decide(&r, &unknown, &p, NOW),
            Decision::Fetch(FetchKind::Jwks, _, _)
        ));
        // Nothing known: discovery first, then the JWKS.
        let none = ProviderState::default();
        assert!(matches!(
            decide(&r, &good, &none, NOW),
            Decision::Fetch(FetchKind::Discovery, _, _)
        ));
        let only_disc = ProviderState {
            discovery: Some(&m),
            ..ProviderState::default()
        };
        assert!(matches!(
            decide(&r, &good, &only_disc, NOW),
            Decision::Fetch(FetchKind::Jwks, _, _)
        ));
        let failed = ProviderState {
            discovery_failed_at: Some(NOW),
            ..ProviderState::default()
        };
        assert!(matches!(
            decide(&r, &good, &failed, NOW),
            Decision::Unavailable(_)
        ));
    }

    #[test]
    fn the_request_and_its_body() {
        let r = route(json!({}));
        let form = Some("application/x-www-form-urlencoded; charset=utf-8");
        assert!(matches!(
            start(&r, Some("POST"), Some("/bcl"), form),
            Start::ReadBody
        ));
        assert!(matches!(
            start(&r, Some("POST"), Some("/bcl?x=1"), form),
            Start::ReadBody
        ));
        assert!(matches!(
            start(&r, Some("POST"), Some("/bclx"), form),
            Start::NotHere
        ));
        match start(&r, Some("GET"), Some("/bcl"), None) {
            Start::Refuse(reply, _) => assert_eq!(reply.status, 405),
            other => panic!("{other:?}"),
        }
        match start(&r, Some("POST"), Some("/bcl"), Some("application/json")) {
            Start::Refuse(reply, _) => {
                assert_eq!(reply.status, 400);
                let v: Value = serde_json::from_str(&reply.body).unwrap();
                assert_eq!(v["error"], "invalid_request");
            }
            other => panic!("{other:?}"),
        }
        let plain = route(json!({"backchannel_logout_path": null}));
        assert!(matches!(
            start(&plain, Some("POST"), Some("/bcl"), form),
            Start::NotHere
        ));

        assert_eq!(logout_token(b"logout_token=a.b.c").unwrap(), "a.b.c");
        assert_eq!(logout_token(b"x=1&logout_token=a%2Eb").unwrap(), "a.b");
        assert!(logout_token(b"logout_token=a&logout_token=b").is_err());
        assert!(logout_token(b"logout_token=").is_err());
        assert!(logout_token(b"token=a").is_err());
        assert!(logout_token(&vec![b'a'; MAX_BODY + 1]).is_err());
        assert!(logout_token(b"\xff\xfe").is_err());
        let ok = accepted();
        assert_eq!(ok.status, 200);
        assert!(ok
            .headers
            .contains(&("cache-control".into(), "no-store".into())));
    }
}
