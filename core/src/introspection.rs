//! OAuth 2.0 Token Introspection (RFC 7662): the request to make and the
//! check of its answer.
//!
//! Two outcomes must not be confused: the provider failing
//! ([`IntrospectionError`]: no verdict on the token, the caller answers
//! 503) and the provider saying the token is not active
//! ([`Introspection::active`] false: the caller answers 401).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{Map, Value};
use url::form_urlencoded;

use crate::http::{HttpRequest, Target, UrlError};
use crate::secret::Secret;

/// How the client authenticates to the introspection endpoint
/// (`introspection_endpoint_auth_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_secret_basic`: `Authorization: Basic` with the form-encoded
    /// id and secret (RFC 6749 section 2.3.1). APISIX's default.
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the body.
    Post,
}

impl From<crate::config::ClientAuthMethod> for ClientAuth {
    fn from(m: crate::config::ClientAuthMethod) -> ClientAuth {
        match m {
            crate::config::ClientAuthMethod::ClientSecretBasic => ClientAuth::Basic,
            crate::config::ClientAuthMethod::ClientSecretPost => ClientAuth::Post,
        }
    }
}

/// The introspection POST for `token`.
///
/// The body is `token=<token>&token_type_hint=access_token`, plus
/// `client_id` and `client_secret` (if any) for [`ClientAuth::Post`]. With
/// [`ClientAuth::Basic`] the credentials go only in the `authorization`
/// header (`Basic base64(urlencode(id) ":" urlencode(secret))`, with an
/// empty secret when there is none, as lua-resty-openidc does).
///
/// `addon_headers` (`introspection_addon_headers`, already read from the
/// incoming request) are appended, except pseudo-headers and the headers
/// this request sets itself (`content-type`, `accept`, `authorization`,
/// `content-length`, `host`), which are dropped.
pub fn request(
    endpoint: &str,
    token: &str,
    client_id: &str,
    client_secret: Option<&Secret>,
    auth: ClientAuth,
    addon_headers: &[(String, String)],
) -> Result<HttpRequest, UrlError> {
    let mut req = client_form_post(
        endpoint,
        &[("token", token), ("token_type_hint", "access_token")],
        client_id,
        client_secret,
        auth,
    )?;
    for (name, value) in addon_headers {
        if !is_reserved_header(name) {
            req.headers.push((name.clone(), value.clone()));
        }
    }
    Ok(req)
}

/// A form POST to a provider endpoint that authenticates the client
/// (token, introspection, revocation) per `auth`: RFC 6749 2.3.1.
pub fn client_form_post(
    endpoint: &str,
    params: &[(&str, &str)],
    client_id: &str,
    client_secret: Option<&Secret>,
    auth: ClientAuth,
) -> Result<HttpRequest, UrlError> {
    let mut req = Target::parse(endpoint)?.request("POST");

    let mut form = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        form.append_pair(k, v);
    }
    match auth {
        ClientAuth::Post => {
            form.append_pair("client_id", client_id);
            if let Some(secret) = client_secret {
                form.append_pair("client_secret", secret.expose());
            }
        }
        ClientAuth::Basic => {
            let secret = client_secret.map(Secret::expose).unwrap_or("");
            let credentials = format!("{}:{}", form_encode(client_id), form_encode(secret));
            req.headers.push((
                "authorization".to_string(),
                format!("Basic {}", STANDARD.encode(credentials)),
            ));
        }
    }
    req.headers.push((
        "content-type".to_string(),
        "application/x-www-form-urlencoded".to_string(),
    ));
    req.headers
        .push(("accept".to_string(), "application/json".to_string()));
    req.body = Some(form.finish().into_bytes());
    Ok(req)
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn is_reserved_header(name: &str) -> bool {
    name.starts_with(':')
        || [
            "authorization",
            "content-type",
            "content-length",
            "accept",
            "host",
        ]
        .iter()
        .any(|r| name.eq_ignore_ascii_case(r))
}

/// A well-formed introspection answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Introspection {
    /// The provider's verdict: `false` means the token is expired, revoked
    /// or unknown (answer 401).
    pub active: bool,
    /// The response members (`scope`, `aud`, `exp`, `sub`...).
    pub claims: Map<String, Value>,
    /// The response body as received (for `X-Userinfo`).
    pub raw: Vec<u8>,
    /// When the answer stops being valid, in unix seconds: the
    /// `expiry_claim` value when that claim is `exp` (absolute, RFC 7662).
    pub expires_at: Option<u64>,
    /// Seconds the answer stays valid: the `expiry_claim` value when that
    /// claim is not `exp` (lua-resty-openidc reads any other claim as a
    /// lifetime in seconds, not a date).
    pub expires_in: Option<u64>,
}

impl Introspection {
    /// Until when (unix seconds) the answer may be reused, from whichever
    /// of `expires_at` / `expires_in` the expiry claim gave.
    pub fn cache_until(&self, now: u64) -> Option<u64> {
        self.expires_at
            .or_else(|| self.expires_in.map(|s| now.saturating_add(s)))
    }
}

/// The provider failed: no verdict on the token.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntrospectionError {
    /// The HTTP status is not 200 (bad client credentials give 401).
    Status(u16),
    /// The body is not a JSON object.
    NotJson,
    /// The JSON object has no boolean `active` member.
    NoActive,
}

impl IntrospectionError {
    /// Always true: every error is a provider failure, never a verdict on
    /// the token (the caller answers 503, not 401).
    pub fn is_provider_failure(&self) -> bool {
        true
    }
}

impl fmt::Display for IntrospectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntrospectionError::Status(s) => {
                write!(f, "introspection endpoint answered with HTTP status {s}")
            }
            IntrospectionError::NotJson => {
                f.write_str("introspection response is not a JSON object")
            }
            IntrospectionError::NoActive => {
                f.write_str("introspection response has no boolean \"active\"")
            }
        }
    }
}

impl std::error::Error for IntrospectionError {}

/// Checks an introspection answer, in order: status 200, a JSON object, a
/// boolean `active`. `expiry_claim` is `introspection_expiry_claim`
/// (APISIX default `exp`); a value that is not a non-negative number is
/// ignored.
pub fn parse_response(
    status: u16,
    body: &[u8],
    expiry_claim: &str,
) -> Result<Introspection, IntrospectionError> {
    if status != 200 {
        return Err(IntrospectionError::Status(status));
    }
    let claims: Map<String, Value> =
        serde_json::from_slice(body).map_err(|_| IntrospectionError::NotJson)?;
    let active = claims
        .get("active")
        .and_then(Value::as_bool)
        .ok_or(IntrospectionError::NoActive)?;
    let expiry = claims.get(expiry_claim).and_then(seconds);
    let (expires_at, expires_in) = if expiry_claim == "exp" {
        (expiry, None)
    } else {
        (None, expiry)
    };
    Ok(Introspection {
        active,
        claims,
        raw: body.to_vec(),
        expires_at,
        expires_in,
    })
}

/// A non-negative JSON number, floored to whole seconds.
fn seconds(v: &Value) -> Option<u64> {
    if let Some(u) = v.as_u64() {
        return Some(u);
    }
    match v.as_f64() {
        // Saturating conversion of a finite, non-negative number.
        Some(f) if f.is_finite() && f >= 0.0 => Some(f.floor() as u64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENDPOINT: &str =
        "http://127.0.0.1:8080/realms/quickstart-realm/protocol/openid-connect/token/introspect";
    const SECRET: &str = "s3cr:et &=+/%ü";

    fn header<'a>(r: &'a HttpRequest, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn body(r: &HttpRequest) -> String {
        String::from_utf8(r.body.clone().unwrap()).unwrap()
    }

    fn decoded_form(r: &HttpRequest) -> Vec<(String, String)> {
        form_urlencoded::parse(r.body.as_deref().unwrap())
            .into_owned()
            .collect()
    }

    #[test]
    fn basic_auth_encodes_id_and_secret_then_base64() {
        let secret = Secret::new(SECRET);
        let r = request(
            ENDPOINT,
            "tok.en+/=",
            "my client",
            Some(&secret),
            ClientAuth::Basic,
            &[],
        )
        .unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.cluster, "oidc|http|127.0.0.1|8080");
        assert_eq!(
            r.path,
            "/realms/quickstart-realm/protocol/openid-connect/token/introspect"
        );
        assert_eq!(
            header(&r, "content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(header(&r, "accept"), Some("application/json"));
        let auth = header(&r, "authorization").unwrap();
        let b64 = auth.strip_prefix("Basic ").unwrap();
        let decoded = String::from_utf8(STANDARD.decode(b64).unwrap()).unwrap();
        assert_eq!(decoded, "my+client:s3cr%3Aet+%26%3D%2B%2F%25%C3%BC");
        // The id and the secret are recovered by form-decoding each half.
        let (id, sec) = decoded.split_once(':').unwrap();
        let dec = |s: &str| -> String {
            form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .unwrap()
                .1
                .into_owned()
        };
        assert_eq!(dec(id), "my client");
        assert_eq!(dec(sec), SECRET);
        // Credentials are not in the body.
        assert_eq!(
            body(&r),
            "token=tok.en%2B%2F%3D&token_type_hint=access_token"
        );
        assert_eq!(
            decoded_form(&r),
            vec![
                ("token".to_string(), "tok.en+/=".to_string()),
                ("token_type_hint".to_string(), "access_token".to_string())
            ]
        );
    }

    #[test]
    fn basic_auth_without_secret_sends_an_empty_one() {
        let r = request(ENDPOINT, "t", "cid", None, ClientAuth::Basic, &[]).unwrap();
        let auth = header(&r, "authorization").unwrap();
        assert_eq!(auth, format!("Basic {}", STANDARD.encode("cid:")));
    }

    #[test]
    fn post_auth_puts_credentials_in_the_form() {
        let secret = Secret::new(SECRET);
        let r = request(
            ENDPOINT,
            "abc",
            "my client",
            Some(&secret),
            ClientAuth::Post,
            &[],
        )
        .unwrap();
        assert_eq!(header(&r, "authorization"), None);
        assert_eq!(
            decoded_form(&r),
            vec![
                ("token".to_string(), "abc".to_string()),
                ("token_type_hint".to_string(), "access_token".to_string()),
                ("client_id".to_string(), "my client".to_string()),
                ("client_secret".to_string(), SECRET.to_string()),
            ]
        );
        assert!(body(&r).contains("client_secret=s3cr%3Aet+%26%3D%2B%2F%25%C3%BC"));
        let r = request(ENDPOINT, "abc", "pub", None, ClientAuth::Post, &[]).unwrap();
        assert_eq!(
            body(&r),
            "token=abc&token_type_hint=access_token&client_id=pub"
        );
    }

    #[test]
    fn addon_headers_are_appended_but_cannot_override() {
        let addon = vec![
            ("x-forwarded-for".to_string(), "10.0.0.1".to_string()),
            ("Authorization".to_string(), "Bearer stolen".to_string()),
            ("Content-Type".to_string(), "text/plain".to_string()),
            (":authority".to_string(), "evil".to_string()),
            ("X-Tenant".to_string(), "a".to_string()),
        ];
        let s = Secret::new("x");
        let r = request(ENDPOINT, "t", "c", Some(&s), ClientAuth::Basic, &addon).unwrap();
        assert_eq!(header(&r, "x-forwarded-for"), Some("10.0.0.1"));
        assert_eq!(header(&r, "X-Tenant"), Some("a"));
        assert_eq!(header(&r, "Authorization"), None);
        assert_eq!(header(&r, "Content-Type"), None);
        assert_eq!(header(&r, ":authority"), None);
        assert_eq!(r.authority, "127.0.0.1:8080");
        assert_eq!(
            r.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"))
                .count(),
            1
        );
    }

    #[test]
    fn bad_endpoint_is_an_error() {
        assert!(request("nope", "t", "c", None, ClientAuth::Post, &[]).is_err());
        assert!(request("ftp://x/y", "t", "c", None, ClientAuth::Post, &[]).is_err());
    }

    #[test]
    fn active_answer() {
        let body = br#"{"active":true,"scope":"openid profile","client_id":"c","exp":1700000300,"aud":"c","sub":"u1"}"#;
        let i = parse_response(200, body, "exp").unwrap();
        assert!(i.active);
        assert_eq!(i.expires_at, Some(1_700_000_300));
        assert_eq!(i.expires_in, None);
        assert_eq!(i.cache_until(1_700_000_000), Some(1_700_000_300));
        assert_eq!(i.claims["sub"], "u1");
        assert_eq!(i.raw, body.to_vec());
    }

    #[test]
    fn inactive_answer_is_not_an_error() {
        let i = parse_response(200, br#"{"active":false}"#, "exp").unwrap();
        assert!(!i.active);
        assert_eq!(i.expires_at, None);
        assert_eq!(i.cache_until(5), None);
    }

    #[test]
    fn other_expiry_claim_is_a_lifetime() {
        let body = br#"{"active":true,"exp":1700000300,"expires_in":60.9}"#;
        let i = parse_response(200, body, "expires_in").unwrap();
        assert_eq!(i.expires_at, None);
        assert_eq!(i.expires_in, Some(60));
        assert_eq!(i.cache_until(1000), Some(1060));
        // Missing or non-numeric expiry claims are ignored.
        let i = parse_response(200, br#"{"active":true,"exp":"soon"}"#, "exp").unwrap();
        assert_eq!(i.expires_at, None);
        let i = parse_response(200, br#"{"active":true,"exp":-5}"#, "exp").unwrap();
        assert_eq!(i.expires_at, None);
    }

    #[test]
    fn provider_failures_are_errors() {
        let active = br#"{"active":true}"#;
        assert_eq!(
            parse_response(500, active, "exp"),
            Err(IntrospectionError::Status(500))
        );
        assert_eq!(
            parse_response(401, br#"{"error":"invalid_client"}"#, "exp"),
            Err(IntrospectionError::Status(401))
        );
        assert_eq!(
            parse_response(200, b"<html>oops</html>", "exp"),
            Err(IntrospectionError::NotJson)
        );
        assert_eq!(
            parse_response(200, b"[true]", "exp"),
            Err(IntrospectionError::NotJson)
        );
        assert_eq!(
            parse_response(200, br#"{"scope":"a"}"#, "exp"),
            Err(IntrospectionError::NoActive)
        );
        assert_eq!(
            parse_response(200, br#"{"active":"true"}"#, "exp"),
            Err(IntrospectionError::NoActive)
        );
        assert_eq!(
            parse_response(200, br#"{"active":1}"#, "exp"),
            Err(IntrospectionError::NoActive)
        );
        for e in [
            IntrospectionError::Status(500),
            IntrospectionError::NotJson,
            IntrospectionError::NoActive,
        ] {
            assert!(e.is_provider_failure());
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn secrets_and_tokens_stay_out_of_debug_and_errors() {
        let secret = Secret::new(SECRET);
        let token = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.c2ln";
        for auth in [ClientAuth::Basic, ClientAuth::Post] {
            let r = request(ENDPOINT, token, "cid", Some(&secret), auth, &[]).unwrap();
            let debug = format!("{r:?}");
            assert!(!debug.contains(SECRET), "{debug}");
            assert!(!debug.contains("s3cr"), "{debug}");
        }
        assert_eq!(format!("{:?}", Some(&secret)), "Some([redacted])");
        let err = parse_response(401, SECRET.as_bytes(), "exp").unwrap_err();
        assert!(!format!("{err:?} {err}").contains("s3cr"));
        let err = request(
            "not a url",
            token,
            "cid",
            Some(&secret),
            ClientAuth::Post,
            &[],
        )
        .unwrap_err();
        assert!(!format!("{err:?} {err}").contains("s3cr"));
    }
}
