//! The end of a browser login: the provider redirects to the redirect URI
//! with `code` and `state`; the code is exchanged at the token endpoint and
//! the ID token checked (signature, issuer, audience, `nonce`) before a
//! session exists.

use serde_json::{Map, Value};

use crate::http::{HttpRequest, UrlError};
use crate::introspection::{client_form_post, ClientAuth};
use crate::jwt::{self, Jwks};
use crate::login::FlowState;
use crate::route::Route;
use crate::secret::Secret;
use crate::session::Session;

/// The callback's query parameters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

impl CallbackQuery {
    /// Reads the query of a request path (`/cb?code=..&state=..`).
    pub fn parse(path: &str) -> CallbackQuery {
        let mut q = CallbackQuery::default();
        let Some((_, query)) = path.split_once('?') else {
            return q;
        };
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match k.as_ref() {
                "code" => &mut q.code,
                "state" => &mut q.state,
                "error" => &mut q.error,
                "error_description" => &mut q.error_description,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(v.into_owned());
            }
        }
        q
    }
}

/// Why a callback does not end in a session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallbackError {
    /// The provider sent `error=` instead of a code (shown to the user).
    Provider {
        error: String,
        description: Option<String>,
    },
    /// No flow cookie for this `state`: stale, replayed, or started in
    /// another browser.
    NoFlow,
    /// Neither a code nor an error.
    MissingCode,
    /// The callback arrived on another scheme, host or path than the
    /// redirect URI its login sent (a code redeemed elsewhere).
    ElsewhereThanStarted,
    /// The token endpoint refused the code (`invalid_grant`, ...).
    Refused(String),
    /// The token endpoint failed or answered nonsense.
    Unavailable(String),
    /// The ID token is missing or does not verify.
    BadIdToken(String),
    /// The ID token names a key the cached JWKS does not have (the
    /// provider may have rotated its keys).
    UnknownKey(String),
}

impl CallbackError {
    /// The HTTP status the browser gets.
    pub fn status(&self) -> u16 {
        match self {
            CallbackError::Unavailable(_) => 503,
            CallbackError::BadIdToken(_) | CallbackError::UnknownKey(_) => 401,
            _ => 400,
        }
    }
}

/// The `error` codes of an authorization response (RFC 6749 4.1.2.1).
pub const AUTHORIZATION_ERRORS: [&str; 7] = [
    "invalid_request",
    "unauthorized_client",
    "access_denied",
    "unsupported_response_type",
    "invalid_scope",
    "server_error",
    "temporarily_unavailable",
];

impl CallbackError {
    /// The text for logs: [`Display`](std::fmt::Display)'s, and for a
    /// provider error the values as sent (attacker text: the adapter logs
    /// it with `{:?}`).
    pub fn log_text(&self) -> String {
        match self {
            CallbackError::Provider { error, description } => format!(
                "the identity provider refused the login: error={error} error_description={}",
                description.as_deref().unwrap_or("")
            ),
            other => other.to_string(),
        }
    }
}

impl std::fmt::Display for CallbackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Anyone can send a browser to the callback with any text:
            // a page shows only the codes RFC 6749 4.1.2.1 defines, never
            // `error_description`.
            CallbackError::Provider { error, .. } => {
                if AUTHORIZATION_ERRORS.contains(&error.as_str()) {
                    write!(f, "the identity provider refused the login: {error}")
                } else {
                    f.write_str("the identity provider refused the login")
                }
            }
            CallbackError::NoFlow => {
                f.write_str("this login was not started here or has expired; start again")
            }
            CallbackError::MissingCode => f.write_str("the callback carries no authorization code"),
            CallbackError::ElsewhereThanStarted => {
                f.write_str("this callback is not at the address its login was started for")
            }
            CallbackError::Refused(e) => write!(f, "the token endpoint refused the code: {e}"),
            CallbackError::Unavailable(e) => write!(f, "the token endpoint failed: {e}"),
            CallbackError::BadIdToken(e) | CallbackError::UnknownKey(e) => {
                write!(f, "the ID token is not valid: {e}")
            }
        }
    }
}

/// The token endpoint request that redeems `code`.
pub fn token_request(
    route: &Route,
    token_endpoint: &str,
    redirect_uri: &str,
    code: &str,
    flow: &FlowState,
) -> Result<HttpRequest, UrlError> {
    let c = &route.config;
    let mut params = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
    ];
    if let Some(v) = &flow.code_verifier {
        params.push(("code_verifier", v));
    }
    client_form_post(
        token_endpoint,
        &params,
        &c.client_id,
        c.client_secret.as_ref(),
        ClientAuth::from(c.token_endpoint_auth_method),
    )
}

/// A token endpoint answer.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access_token: Secret,
    pub id_token: Option<Secret>,
    pub refresh_token: Option<Secret>,
    pub expires_in: Option<u64>,
}

/// Reads the token endpoint's answer (RFC 6749 5.1 / 5.2).
pub fn parse_tokens(status: u16, body: &[u8]) -> Result<Tokens, CallbackError> {
    let json: Option<serde_json::Map<String, Value>> = serde_json::from_slice(body).ok();
    let text = |j: &serde_json::Map<String, Value>, k: &str| {
        j.get(k).and_then(Value::as_str).map(str::to_string)
    };
    match (status, json) {
        (200, Some(j)) => {
            let access_token = text(&j, "access_token").ok_or_else(|| {
                CallbackError::Unavailable("no access_token in the answer".into())
            })?;
            let tokens = Tokens {
                access_token: Secret::new(access_token),
                id_token: text(&j, "id_token").map(Secret::new),
                refresh_token: text(&j, "refresh_token").map(Secret::new),
                expires_in: j.get("expires_in").and_then(Value::as_u64),
            };
            // They go into upstream headers: nothing else may get there.
            let all = [
                Some(&tokens.access_token),
                tokens.id_token.as_ref(),
                tokens.refresh_token.as_ref(),
            ];
            if !all.into_iter().flatten().all(|t| is_b64token(t.expose())) {
                return Err(CallbackError::Unavailable(
                    "a token in the answer is not an RFC 6750 b64token".into(),
                ));
            }
            Ok(tokens)
        }
        (400 | 401, Some(j)) => Err(CallbackError::Refused(
            text(&j, "error").unwrap_or_else(|| format!("HTTP {status}")),
        )),
        (200, None) => Err(CallbackError::Unavailable("the answer is not JSON".into())),
        (s, _) => Err(CallbackError::Unavailable(format!("HTTP status {s}"))),
    }
}

/// RFC 6750 2.1 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" /
/// "+" / "/" ) *"="` (JWS compact serialisations fit). Tokens from the
/// provider must be one before they go into a header.
pub fn is_b64token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// Checks an ID token as OpenID Connect Core 3.1.3.7 asks (signature,
/// issuer, audience contains the client, expiry) and that it has what
/// section 2 says every ID token has (`sub` as a string, `exp`, `iat`):
/// its claims. Used at login ([`finish`], which adds the `nonce`) and for
/// refreshed ID tokens (`signed_in::verify_refreshed_id_token`, which adds
/// the same user).
pub fn verify_id_token(
    route: &Route,
    id_token: &str,
    keys: &Jwks,
    discovery_issuer: &str,
    now: u64,
) -> Result<Map<String, Value>, CallbackError> {
    let mut policy = route.policy(Some(discovery_issuer));
    policy.audience.claim = "aud".into();
    policy.audience.match_with_client_id = true;
    // Scopes are the access token's business, not the ID token's.
    policy.required_scopes.clear();
    let verified = jwt::verify(id_token, keys, &policy, now).map_err(|e| {
        if e.kind() == jwt::Rejection::UnknownKeyId {
            CallbackError::UnknownKey(e.to_string())
        } else {
            CallbackError::BadIdToken(e.to_string())
        }
    })?;
    // OpenID Connect Core 2: an ID token always has these (the verifier
    // checks their values when present; bearer tokens may lack them).
    for claim in ["sub", "exp", "iat"] {
        if !verified.claims.contains_key(claim) {
            return Err(CallbackError::BadIdToken(format!(
                "the ID token has no \"{claim}\" claim"
            )));
        }
    }
    if !verified.claims.get("sub").is_some_and(Value::is_string) {
        return Err(CallbackError::BadIdToken(
            "the ID token's \"sub\" is not a string".into(),
        ));
    }
    Ok(verified.claims)
}

/// Checks the login's ID token ([`verify_id_token`] and the `nonce` of
/// this flow) and makes the session.
pub fn finish(
    route: &Route,
    flow: &FlowState,
    tokens: Tokens,
    keys: &Jwks,
    discovery_issuer: &str,
    now: u64,
) -> Result<Session, CallbackError> {
    let id_token = tokens
        .id_token
        .clone()
        .ok_or_else(|| CallbackError::BadIdToken("the provider sent no ID token".into()))?;
    let claims = verify_id_token(route, id_token.expose(), keys, discovery_issuer, now)?;
    if claims.get("nonce").and_then(Value::as_str) != Some(flow.nonce.as_str()) {
        return Err(CallbackError::BadIdToken(
            "nonce does not match this login".into(),
        ));
    }
    let mut session = Session::new(tokens.access_token, now);
    session.refresh_token = tokens.refresh_token;
    session.id_token = Some(id_token);
    session.id_claims = claims;
    session.access_expires_at =
        Some(route.access_expiry(tokens.expires_in, session.access_token.expose(), now));
    Ok(session)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::tests::{claims, provider_keys, token, with, CLIENT, ISS, NOW};
    use crate::jwt::Alg;
    use serde_json::json;

    fn route(extra: Value) -> Route {
        let mut v = json!({
            "client_id": CLIENT,
            "client_secret": "s3cr:et",
            "discovery": format!("{ISS}/.well-known/openid-configuration"),
            "session": {"secret": "0123456789abcdef0123"},
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        Route::from_json(&v.to_string()).unwrap()
    }

    fn flow(verifier: Option<&str>) -> FlowState {
        FlowState {
            state: "st".into(),
            nonce: "n-123".into(),
            code_verifier: verifier.map(str::to_string),
            original_url: "http://gw/anything/test".into(),
            redirect_uri: "http://gw/anything/callback".into(),
            created_at: NOW,
        }
    }

    fn id_token(nonce: &str) -> String {
        token(
            Alg::RS256,
            Some("rsa-a"),
            &with(claims(), "nonce", json!(nonce)),
        )
    }

    fn tokens(id: Option<String>) -> Tokens {
        Tokens {
            access_token: Secret::new("at"),
            id_token: id.map(Secret::new),
            refresh_token: Some(Secret::new("rt")),
            expires_in: Some(300),
        }
    }

    #[test]
    fn callback_query() {
        let q = CallbackQuery::parse("/cb?state=a%2Bb&code=xyz&code=second&session_state=1");
        assert_eq!(q.code.as_deref(), Some("xyz"));
        assert_eq!(q.state.as_deref(), Some("a+b"));
        let q = CallbackQuery::parse("/cb?error=access_denied&error_description=no%20way&state=s");
        assert_eq!(q.error.as_deref(), Some("access_denied"));
        assert_eq!(q.error_description.as_deref(), Some("no way"));
        assert_eq!(CallbackQuery::parse("/cb"), CallbackQuery::default());
    }

    #[test]
    fn token_request_redeems_the_code_with_pkce_and_client_auth() {
        let r = route(json!({"token_endpoint_auth_method": "client_secret_post"}));
        let req = token_request(
            &r,
            "http://idp:8080/token",
            "http://gw/cb",
            "the-code",
            &flow(Some("ver")),
        )
        .unwrap();
        let body = String::from_utf8(req.body.unwrap()).unwrap();
        let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("grant_type"), Some("authorization_code"));
        assert_eq!(get("code"), Some("the-code"));
        assert_eq!(get("redirect_uri"), Some("http://gw/cb"));
        assert_eq!(get("code_verifier"), Some("ver"));
        assert_eq!(get("client_secret"), Some("s3cr:et"));
        assert_eq!(req.cluster, "oidc|http|idp|8080");
        // Basic by default, and no verifier without PKCE.
        let req = token_request(
            &route(json!({})),
            "http://idp:8080/token",
            "http://gw/cb",
            "c",
            &flow(None),
        )
        .unwrap();
        assert!(req
            .headers
            .iter()
            .any(|(k, v)| k == "authorization" && v.starts_with("Basic ")));
        assert!(!String::from_utf8(req.body.unwrap())
            .unwrap()
            .contains("code_verifier"));
    }

    #[test]
    fn tokens_must_be_b64tokens() {
        for good in ["a", "aB0-._~+/", "abc==", "x.y.z"] {
            assert!(is_b64token(good), "{good}");
        }
        for bad in [
            "",
            "=",
            "a b",
            "a\r\nX: y",
            "a\u{7}b",
            "a=b",
            "é",
            "a,b",
            "a\"b",
        ] {
            assert!(!is_b64token(bad), "{bad:?}");
        }
        for field in ["access_token", "id_token", "refresh_token"] {
            let mut j = serde_json::json!({"access_token":"a","id_token":"i","refresh_token":"r"});
            j[field] = "t\r\nx-injected: 1".into();
            let e = parse_tokens(200, j.to_string().as_bytes()).unwrap_err();
            assert_eq!(e.status(), 503, "{field}");
        }
    }

    #[test]
    fn token_answers() {
        let t = parse_tokens(
            200,
            br#"{"access_token":"a","id_token":"i","expires_in":60}"#,
        )
        .unwrap();
        assert_eq!(t.access_token.expose(), "a");
        assert_eq!(t.expires_in, Some(60));
        assert_eq!(
            parse_tokens(400, br#"{"error":"invalid_grant"}"#).unwrap_err(),
            CallbackError::Refused("invalid_grant".into())
        );
        for (s, b) in [
            (200, &b"nope"[..]),
            (500, b"{}"),
            (503, b""),
            (200, br#"{"id_token":"x"}"#),
        ] {
            let e = parse_tokens(s, b).unwrap_err();
            assert_eq!(e.status(), 503, "{s} {e}");
        }
    }

    #[test]
    fn the_id_token_makes_the_session() {
        let r = route(json!({}));
        let s = finish(
            &r,
            &flow(None),
            tokens(Some(id_token("n-123"))),
            &provider_keys(),
            ISS,
            NOW,
        )
        .unwrap();
        assert_eq!(s.access_token.expose(), "at");
        assert_eq!(s.refresh_token.as_ref().map(Secret::expose), Some("rt"));
        assert_eq!(s.access_expires_at, Some(NOW + 300));
        assert_eq!(s.id_claims["sub"], "user-1");
        assert_eq!(s.created_at, NOW);
    }

    #[test]
    fn id_tokens_need_sub_exp_and_iat() {
        let r = route(json!({}));
        let f = flow(None);
        for claim in ["sub", "exp", "iat"] {
            let mut c = with(claims(), "nonce", json!("n-123"));
            c.as_object_mut().unwrap().remove(claim);
            let t = token(Alg::RS256, Some("rsa-a"), &c);
            let e = finish(&r, &f, tokens(Some(t)), &provider_keys(), ISS, NOW).unwrap_err();
            assert!(e.to_string().contains(claim), "{claim}: {e}");
        }
        let c = with(with(claims(), "nonce", json!("n-123")), "sub", json!(42));
        let t = token(Alg::RS256, Some("rsa-a"), &c);
        assert!(finish(&r, &f, tokens(Some(t)), &provider_keys(), ISS, NOW).is_err());
    }

    #[test]
    fn id_token_checks() {
        let r = route(json!({}));
        let f = flow(None);
        let fail =
            |t: Tokens, iss: &str| finish(&r, &f, t, &provider_keys(), iss, NOW).unwrap_err();
        // Wrong nonce (a replayed or swapped ID token).
        assert!(matches!(
            fail(tokens(Some(id_token("other"))), ISS),
            CallbackError::BadIdToken(_)
        ));
        // No nonce at all.
        let no_nonce = token(Alg::RS256, Some("rsa-a"), &claims());
        assert!(matches!(
            fail(tokens(Some(no_nonce)), ISS),
            CallbackError::BadIdToken(_)
        ));
        // No ID token, another issuer, audience without the client.
        assert!(matches!(
            fail(tokens(None), ISS),
            CallbackError::BadIdToken(_)
        ));
        assert!(matches!(
            fail(tokens(Some(id_token("n-123"))), "https://other"),
            CallbackError::BadIdToken(_)
        ));
        let foreign = token(
            Alg::RS256,
            Some("rsa-a"),
            &with(
                with(claims(), "aud", json!("someone-else")),
                "nonce",
                json!("n-123"),
            ),
        );
        assert!(matches!(
            fail(tokens(Some(foreign)), ISS),
            CallbackError::BadIdToken(_)
        ));
        // Expired.
        let old = token(
            Alg::RS256,
            Some("rsa-a"),
            &with(
                with(claims(), "exp", json!(NOW - 1000)),
                "nonce",
                json!("n-123"),
            ),
        );
        assert_eq!(fail(tokens(Some(old)), ISS).status(), 401);
    }
}
