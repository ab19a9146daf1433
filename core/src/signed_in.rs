//! Requests of a browser that has a session: the upstream's identity
//! headers, when to refresh the access token, and where logout goes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use serde_json::{Map, Value};

use crate::callback::{self, CallbackError, Tokens};
use crate::http::{HttpRequest, UrlError};
use crate::introspection::{client_form_post, ClientAuth};
use crate::jwt::Jwks;
use crate::route::Route;
use crate::session::{Session, UpstreamHeaders};

/// The identity headers the upstream gets for a session (APISIX's names).
pub fn upstream_headers(route: &Route, s: &Session) -> Vec<(&'static str, String)> {
    let c = &route.config;
    let mut h = Vec::with_capacity(5);
    h.extend(route.access_token_header(s.access_token.expose()));
    if c.set_id_token_header && !s.id_claims.is_empty() {
        let json = serde_json::Value::Object(s.id_claims.clone()).to_string();
        h.push(("x-id-token", STANDARD.encode(json)));
    }
    if c.set_raw_id_token_header {
        if let Some(t) = &s.id_token {
            h.push(("x-raw-id-token", t.expose().to_string()));
        }
    }
    if let Some(u) = &s.userinfo {
        h.extend(route.userinfo_header(u.to_string().as_bytes()));
    }
    if c.set_refresh_token_header {
        if let Some(t) = &s.refresh_token {
            h.push(("x-refresh-token", t.expose().to_string()));
        }
    }
    h
}

/// Whether Envoy takes `v` as a header value: no control characters but
/// tab.
pub fn header_value_ok(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// [`upstream_headers`], or `None` when a value is one Envoy would refuse
/// (the side checks what the provider sent; this is the last guard before
/// the host call, which would panic and take the VM down).
pub fn checked_headers(route: &Route, s: &Session) -> Option<UpstreamHeaders> {
    let h = upstream_headers(route, s);
    h.iter().all(|(_, v)| header_value_ok(v)).then(|| h.into())
}

/// [`checked_headers`] of a session as opened from its cookie, built and
/// checked on the first request and kept with the opened session (the
/// host's cache of opened sessions is per route, and a session whose
/// tokens change is a copy with nothing kept: see
/// [`crate::session::HeaderMemo`]).
pub fn opened_headers(route: &Route, s: &Session) -> Option<UpstreamHeaders> {
    s.opened_headers.get_or_init(|| checked_headers(route, s))
}

/// The session's access token has expired (minus
/// `access_token_expires_leeway`): it is refreshed when the route renews
/// tokens and the session has a refresh token, else the user logs in again.
pub fn access_expired(route: &Route, s: &Session, now: u64) -> bool {
    let c = &route.config;
    s.access_expires_at
        .is_some_and(|exp| now.saturating_add(c.access_token_expires_leeway) >= exp)
}

/// The token endpoint request for a refresh; `None` when the session has
/// no refresh token (the browser logs in again).
pub fn refresh_request(
    route: &Route,
    token_endpoint: &str,
    s: &Session,
) -> Option<Result<HttpRequest, UrlError>> {
    let c = &route.config;
    let refresh = s.refresh_token.as_ref()?;
    Some(client_form_post(
        token_endpoint,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.expose()),
        ],
        &c.client_id,
        c.client_secret.as_ref(),
        ClientAuth::from(c.token_endpoint_auth_method),
    ))
}

/// Checks a refresh answer's ID token as the login's was checked
/// ([`callback::verify_id_token`]: signature, issuer, audience contains
/// `client_id`, expiry, `sub`/`exp`/`iat` present) and that it
/// is about the same user from the same issuer as the session's (OpenID
/// Connect Core 12.2): its claims, or why not.
pub fn verify_refreshed_id_token(
    route: &Route,
    s: &Session,
    t: &Tokens,
    keys: &Jwks,
    discovery_issuer: &str,
    now: u64,
) -> Result<Map<String, Value>, CallbackError> {
    let Some(id_token) = &t.id_token else {
        return Err(CallbackError::BadIdToken("no ID token".into()));
    };
    let claims = callback::verify_id_token(route, id_token.expose(), keys, discovery_issuer, now)
        .map_err(|e| match e {
        CallbackError::BadIdToken(why) => {
            CallbackError::BadIdToken(format!("refreshed ID token: {why}"))
        }
        other => other,
    })?;
    for claim in ["sub", "iss"] {
        let new = claims.get(claim).and_then(Value::as_str);
        if new.is_none() || new != s.id_claims.get(claim).and_then(Value::as_str) {
            return Err(CallbackError::BadIdToken(format!(
                "the refreshed ID token's \"{claim}\" is not the session's"
            )));
        }
    }
    Ok(claims)
}

/// Puts refreshed tokens into the session (a provider that does not rotate
/// the refresh token keeps the old one valid). An ID token comes only with
/// its verified `claims` ([`verify_refreshed_id_token`]); without them the
/// session keeps its old one.
pub fn apply_refresh(
    route: &Route,
    s: &mut Session,
    t: Tokens,
    claims: Option<Map<String, Value>>,
    now: u64,
) {
    s.access_expires_at = Some(route.access_expiry(t.expires_in, t.access_token.expose(), now));
    s.access_token = t.access_token;
    if let Some(r) = t.refresh_token {
        s.refresh_token = Some(r);
    }
    if let (Some(i), Some(claims)) = (t.id_token, claims) {
        s.id_token = Some(i);
        s.id_claims = claims;
    }
    s.renew(now);
}

/// Where the browser goes after logout: the provider's end-session
/// endpoint (with `id_token_hint` and `post_logout_redirect_uri`), else
/// `post_logout_redirect_uri`, else nowhere (a "Logged out" page).
pub fn logout_location(
    route: &Route,
    end_session_endpoint: Option<&str>,
    s: Option<&Session>,
) -> Option<String> {
    let post = route.config.post_logout_redirect_uri.as_deref();
    let Some(end) = end_session_endpoint else {
        return post.map(str::to_string);
    };
    let mut url = url::Url::parse(end).ok()?;
    {
        let mut q = url.query_pairs_mut();
        match s.and_then(|s| s.id_token.as_ref()) {
            Some(hint) => {
                q.append_pair("id_token_hint", hint.expose());
            }
            None => {
                q.append_pair("client_id", &route.config.client_id);
            }
        }
        if let Some(p) = post {
            q.append_pair("post_logout_redirect_uri", p);
        }
    }
    Some(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;

    fn route(extra: serde_json::Value) -> Route {
        let mut v = json!({
            "client_id": "c",
            "client_secret": "s",
            "discovery": "http://idp/.well-known/openid-configuration",
            "session": {"secret": "0123456789abcdef0123"},
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        Route::from_json(&v.to_string()).unwrap()
    }

    fn session() -> Session {
        let mut s = Session::new(Secret::new("at"), NOW);
        s.refresh_token = Some(Secret::new("rt"));
        s.id_token = Some(Secret::new("raw.id.token"));
        s.id_claims = json!({"sub": "u"}).as_object().unwrap().clone();
        s.userinfo = Some(json!({"sub": "u", "email": "e@x"}));
        s.access_expires_at = Some(NOW + 300);
        s
    }

    fn names(h: &[(&'static str, String)]) -> Vec<&'static str> {
        h.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn opened_headers_are_built_once_and_not_copied_with_the_session() {
        let r = route(json!({}));
        let s = std::rc::Rc::new(session());
        let first = opened_headers(&r, &s).unwrap();
        assert_eq!(&first[..], &upstream_headers(&r, &s)[..]);
        // The same opened session: the same headers, not built again.
        assert!(std::rc::Rc::ptr_eq(
            &first,
            &opened_headers(&r, &s).unwrap()
        ));
        // A changed copy (as `Rc::make_mut` makes) keeps nothing: its
        // headers carry its own tokens.
        let mut changed = std::rc::Rc::clone(&s);
        std::rc::Rc::make_mut(&mut changed).access_token = Secret::new("at2");
        let again = opened_headers(&r, &changed).unwrap();
        assert!(!std::rc::Rc::ptr_eq(&first, &again));
        assert!(again
            .iter()
            .any(|(k, v)| *k == "x-access-token" && v == "at2"));
        assert!(first
            .iter()
            .any(|(k, v)| *k == "x-access-token" && v == "at"));
        // A value Envoy would refuse: no headers, and kept as such.
        let mut bad = session();
        bad.access_token = Secret::new("at\r\nx-admin: 1");
        let bad = std::rc::Rc::new(bad);
        assert!(opened_headers(&r, &bad).is_none());
        assert!(opened_headers(&r, &bad).is_none());
    }

    #[test]
    fn headers_follow_the_options() {
        let s = session();
        let h = upstream_headers(&route(json!({})), &s);
        assert_eq!(
            names(&h),
            vec!["x-access-token", "x-id-token", "x-userinfo"]
        );
        assert_eq!(STANDARD.decode(&h[1].1).unwrap(), br#"{"sub":"u"}"#);
        let h = upstream_headers(
            &route(
                json!({"access_token_in_authorization_header": true, "set_refresh_token_header": true,
                          "set_raw_id_token_header": true, "set_id_token_header": false, "set_userinfo_header": false}),
            ),
            &s,
        );
        assert_eq!(
            names(&h),
            vec!["authorization", "x-raw-id-token", "x-refresh-token"]
        );
        assert_eq!(h[0].1, "Bearer at");
    }

    #[test]
    fn refresh_decisions() {
        let s = session();
        let r = route(json!({}));
        assert!(!access_expired(&r, &s, NOW + 299));
        assert!(access_expired(&r, &s, NOW + 300));
        assert!(access_expired(
            &route(json!({"access_token_expires_leeway": 10})),
            &s,
            NOW + 290
        ));
        let mut no_expiry = s.clone();
        no_expiry.access_expires_at = None;
        assert!(!access_expired(&r, &no_expiry, NOW + 90_000));

        let req = refresh_request(&r, "http://idp/token", &s)
            .unwrap()
            .unwrap();
        let body = String::from_utf8(req.body.unwrap()).unwrap();
        assert!(
            body.contains("grant_type=refresh_token") && body.contains("refresh_token=rt"),
            "{body}"
        );
        let mut no_refresh = session();
        no_refresh.refresh_token = None;
        assert!(refresh_request(&r, "http://idp/token", &no_refresh).is_none());

        let mut s = session();
        let t = Tokens {
            access_token: Secret::new("at2"),
            id_token: None,
            refresh_token: None,
            expires_in: Some(60),
        };
        apply_refresh(&r, &mut s, t, None, NOW + 400);
        assert_eq!(s.access_token.expose(), "at2");
        assert_eq!(s.refresh_token.as_ref().map(Secret::expose), Some("rt"));
        assert_eq!(s.access_expires_at, Some(NOW + 460));
        assert_eq!(s.saved_at, NOW + 400);
    }

    #[test]
    fn the_access_token_always_has_an_expiry() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let r = route(json!({}));
        let jwt = |exp: u64| {
            let p = URL_SAFE_NO_PAD.encode(json!({"exp": exp}).to_string());
            format!("eyJhbGciOiJSUzI1NiJ9.{p}.c2ln")
        };
        // expires_in first, then the JWT's exp, then the configured value,
        // then an hour.
        assert_eq!(r.access_expiry(Some(60), &jwt(NOW + 5), NOW), NOW + 60);
        assert_eq!(r.access_expiry(None, &jwt(NOW + 5), NOW), NOW + 5);
        assert_eq!(r.access_expiry(None, "opaque", NOW), NOW + 3600);
        let configured = route(json!({"access_token_expires_in": 120}));
        assert_eq!(configured.access_expiry(None, "opaque", NOW), NOW + 120);
        let mut s = session();
        let t = Tokens {
            access_token: Secret::new("opaque"),
            id_token: Some(Secret::new("unverified.id.token")),
            refresh_token: None,
            expires_in: None,
        };
        apply_refresh(&r, &mut s, t, None, NOW);
        assert_eq!(s.access_expires_at, Some(NOW + 3600));
        // An ID token without verified claims is not taken.
        assert_eq!(s.id_token.as_ref().unwrap().expose(), "raw.id.token");
    }

    #[test]
    fn logout_destinations() {
        let s = session();
        let r = route(json!({"post_logout_redirect_uri": "http://gw/bye"}));
        let loc = logout_location(&r, Some("http://idp/logout"), Some(&s)).unwrap();
        assert_eq!(
            loc,
            "http://idp/logout?id_token_hint=raw.id.token&post_logout_redirect_uri=http%3A%2F%2Fgw%2Fbye"
        );
        assert_eq!(
            logout_location(&r, None, Some(&s)).as_deref(),
            Some("http://gw/bye")
        );
        assert_eq!(logout_location(&route(json!({})), None, None), None);
        let loc = logout_location(&route(json!({})), Some("http://idp/logout"), None).unwrap();
        assert_eq!(loc, "http://idp/logout?client_id=c");
    }
}
