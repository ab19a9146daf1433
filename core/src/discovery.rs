//! OpenID Provider discovery (OpenID Connect Discovery 1.0 section 4) and
//! the JWKS fetch: requests to make and the checks on their answers.
//!
//! [`request`] (the GET for a provider document, discovery or JWKS) and
//! [`parse_response`] / [`parse_jwks_response`] map one-to-one onto
//! `dispatch_http_call` and its response callback; `provider` decides when.

use std::fmt;

use serde_json::{Map, Value};

use crate::http::{HttpRequest, Target, UrlError};
use crate::jwt::{Jwks, JwksError};

/// The path suffix of a discovery URL.
pub const WELL_KNOWN_SUFFIX: &str = "/.well-known/openid-configuration";

/// The issuer a discovery URL stands for: the URL without
/// [`WELL_KNOWN_SUFFIX`] (OpenID Connect Discovery section 4). `None` if
/// the URL does not end with it (a query or fragment counts as not ending
/// with it).
pub fn issuer_from_discovery_url(url: &str) -> Option<String> {
    url.strip_suffix(WELL_KNOWN_SUFFIX).map(str::to_string)
}

/// The GET for a provider document (the discovery document or a JWK Set).
pub fn request(url: &str) -> Result<HttpRequest, UrlError> {
    let mut req = Target::parse(url)?.request("GET");
    req.headers
        .push(("accept".to_string(), "application/json".to_string()));
    Ok(req)
}

/// What the filter uses of a discovery document.
///
/// Only `issuer` is required: a plain OAuth 2.0 server (RFC 8414) used
/// only for introspection has no `jwks_uri`, so each endpoint is optional
/// here and the code that needs one reports its absence. Endpoint values
/// are kept as given, not parsed (building the request parses them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProviderMetadata {
    /// `issuer`: a non-empty string, the issuer tokens are checked
    /// against (unless `claim_validator.issuer.valid_issuers` is set).
    pub issuer: String,
    /// `authorization_endpoint`.
    pub authorization_endpoint: Option<String>,
    /// `token_endpoint`.
    pub token_endpoint: Option<String>,
    /// `userinfo_endpoint`.
    pub userinfo_endpoint: Option<String>,
    /// `jwks_uri`.
    pub jwks_uri: Option<String>,
    /// `introspection_endpoint` (RFC 8414 / RFC 7662).
    pub introspection_endpoint: Option<String>,
    /// `end_session_endpoint` (RP-Initiated Logout).
    pub end_session_endpoint: Option<String>,
    /// `revocation_endpoint` (RFC 7009).
    pub revocation_endpoint: Option<String>,
    /// `pushed_authorization_request_endpoint` (RFC 9126).
    pub pushed_authorization_request_endpoint: Option<String>,
    /// `code_challenge_methods_supported` (empty if absent).
    pub code_challenge_methods_supported: Vec<String>,
    /// `token_endpoint_auth_methods_supported` (empty if absent).
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// `introspection_endpoint_auth_methods_supported` (empty if absent).
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    /// `id_token_signing_alg_values_supported` (empty if absent).
    pub id_token_signing_alg_values_supported: Vec<String>,
    /// `scopes_supported` (empty if absent).
    pub scopes_supported: Vec<String>,
}

/// Why a discovery answer is refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryError {
    /// The HTTP status is not 200.
    Status(u16),
    /// The body is not a JSON object.
    NotJson,
    /// `issuer` is absent or not a string.
    MissingIssuer,
    /// A known member has the wrong type (a URL that is not a string, a
    /// list that is not an array of strings).
    InvalidMember(&'static str),
    /// `issuer` differs from the expected issuer (exact comparison: a
    /// trailing slash counts).
    IssuerMismatch {
        /// The issuer the discovery URL stands for.
        expected: String,
        /// The document's `issuer`.
        found: String,
    },
}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiscoveryError::Status(s) => write!(f, "discovery answered with HTTP status {s}"),
            DiscoveryError::NotJson => f.write_str("discovery document is not a JSON object"),
            DiscoveryError::MissingIssuer => f.write_str("discovery document has no issuer"),
            DiscoveryError::InvalidMember(m) => {
                write!(f, "discovery document member {m:?} has the wrong type")
            }
            DiscoveryError::IssuerMismatch { expected, found } => write!(
                f,
                "discovery document issuer {found:?} differs from the expected {expected:?}"
            ),
        }
    }
}

impl std::error::Error for DiscoveryError {}

/// Checks a discovery answer, in order: status 200, a JSON object, a
/// non-empty string `issuer`, known members of the right type. The content
/// type is not checked, and neither is the `issuer` against the URL the
/// document came from: APISIX (lua-resty-openidc) checks neither, and a
/// provider reached on an internal URL names its public one (Keycloak with
/// `KC_HOSTNAME`). Tokens are checked against this `issuer` exactly;
/// docs/security.md says why the URL comparison protected nothing.
pub fn parse_document(status: u16, body: &[u8]) -> Result<ProviderMetadata, DiscoveryError> {
    // 1. Status.
    if status != 200 {
        return Err(DiscoveryError::Status(status));
    }
    // 2. A JSON object.
    let doc: Map<String, Value> =
        serde_json::from_slice(body).map_err(|_| DiscoveryError::NotJson)?;
    // 3. Members.
    let issuer = match doc.get("issuer") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(DiscoveryError::MissingIssuer),
    };
    let meta = ProviderMetadata {
        authorization_endpoint: string_member(&doc, "authorization_endpoint")?,
        token_endpoint: string_member(&doc, "token_endpoint")?,
        userinfo_endpoint: string_member(&doc, "userinfo_endpoint")?,
        jwks_uri: string_member(&doc, "jwks_uri")?,
        introspection_endpoint: string_member(&doc, "introspection_endpoint")?,
        end_session_endpoint: string_member(&doc, "end_session_endpoint")?,
        revocation_endpoint: string_member(&doc, "revocation_endpoint")?,
        pushed_authorization_request_endpoint: string_member(
            &doc,
            "pushed_authorization_request_endpoint",
        )?,
        code_challenge_methods_supported: list_member(&doc, "code_challenge_methods_supported")?,
        token_endpoint_auth_methods_supported: list_member(
            &doc,
            "token_endpoint_auth_methods_supported",
        )?,
        introspection_endpoint_auth_methods_supported: list_member(
            &doc,
            "introspection_endpoint_auth_methods_supported",
        )?,
        id_token_signing_alg_values_supported: list_member(
            &doc,
            "id_token_signing_alg_values_supported",
        )?,
        scopes_supported: list_member(&doc, "scopes_supported")?,
        issuer,
    };
    Ok(meta)
}

/// [`parse_document`], then `issuer` exactly equal to `expected_issuer`
/// (OpenID Connect Discovery section 4.3), for callers that know the
/// issuer to expect.
pub fn parse_response(
    status: u16,
    body: &[u8],
    expected_issuer: &str,
) -> Result<ProviderMetadata, DiscoveryError> {
    let meta = parse_document(status, body)?;
    if meta.issuer != expected_issuer {
        return Err(DiscoveryError::IssuerMismatch {
            expected: expected_issuer.to_string(),
            found: meta.issuer,
        });
    }
    Ok(meta)
}

/// Checks a JWKS answer: status 200, then [`Jwks::parse`].
pub fn parse_jwks_response(status: u16, body: &[u8]) -> Result<Jwks, JwksError> {
    if status != 200 {
        return Err(JwksError::HttpStatus(status));
    }
    Jwks::parse(body)
}

/// An optional string member; `null` counts as absent.
fn string_member(
    doc: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, DiscoveryError> {
    match doc.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(DiscoveryError::InvalidMember(name)),
    }
}

/// An optional array-of-strings member; `null` or absent is empty.
fn list_member(
    doc: &Map<String, Value>,
    name: &'static str,
) -> Result<Vec<String>, DiscoveryError> {
    match doc.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<String>>>()
            .ok_or(DiscoveryError::InvalidMember(name)),
        Some(_) => Err(DiscoveryError::InvalidMember(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "http://127.0.0.1:8080/realms/quickstart-realm";

    fn keycloak_like() -> String {
        serde_json::json!({
            "issuer": ISSUER,
            "authorization_endpoint": format!("{ISSUER}/protocol/openid-connect/auth"),
            "token_endpoint": format!("{ISSUER}/protocol/openid-connect/token"),
            "introspection_endpoint": format!("{ISSUER}/protocol/openid-connect/token/introspect"),
            "userinfo_endpoint": format!("{ISSUER}/protocol/openid-connect/userinfo"),
            "end_session_endpoint": format!("{ISSUER}/protocol/openid-connect/logout"),
            "jwks_uri": format!("{ISSUER}/protocol/openid-connect/certs"),
            "revocation_endpoint": format!("{ISSUER}/protocol/openid-connect/revoke"),
            "code_challenge_methods_supported": ["plain", "S256"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic", "client_secret_post"],
            "id_token_signing_alg_values_supported": ["PS384", "RS256", "ES256"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "unknown_extension": {"nested": [1, 2, 3]},
            "check_session_iframe": null
        })
        .to_string()
    }

    #[test]
    fn issuer_is_the_url_without_the_well_known_suffix() {
        assert_eq!(
            issuer_from_discovery_url(&format!("{ISSUER}/.well-known/openid-configuration"))
                .as_deref(),
            Some(ISSUER)
        );
        assert_eq!(
            issuer_from_discovery_url("https://idp.example/.well-known/openid-configuration")
                .as_deref(),
            Some("https://idp.example")
        );
        assert_eq!(
            issuer_from_discovery_url("https://idp.example/metadata"),
            None
        );
        assert_eq!(
            issuer_from_discovery_url("https://idp.example/.well-known/openid-configuration?x=1"),
            None
        );
    }

    #[test]
    fn requests_are_gets_for_json() {
        let r = request(&format!("{ISSUER}/.well-known/openid-configuration")).unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.cluster, "oidc|http|127.0.0.1|8080");
        assert_eq!(r.authority, "127.0.0.1:8080");
        assert_eq!(
            r.path,
            "/realms/quickstart-realm/.well-known/openid-configuration"
        );
        assert_eq!(
            r.headers,
            vec![("accept".to_string(), "application/json".to_string())]
        );
        assert_eq!(r.body, None);
        let j = request("https://idp.example/certs?v=2").unwrap();
        assert_eq!(j.cluster, "oidc|https|idp.example|443");
        assert_eq!(j.path, "/certs?v=2");
        assert!(request("not a url").is_err());
        assert!(request("file:///etc/passwd").is_err());
    }

    #[test]
    fn parses_a_keycloak_like_document() {
        let m = parse_response(200, keycloak_like().as_bytes(), ISSUER).unwrap();
        assert_eq!(m.issuer, ISSUER);
        assert_eq!(
            m.jwks_uri.as_deref(),
            Some("http://127.0.0.1:8080/realms/quickstart-realm/protocol/openid-connect/certs")
        );
        assert!(m
            .introspection_endpoint
            .unwrap()
            .ends_with("/token/introspect"));
        assert!(m.end_session_endpoint.unwrap().ends_with("/logout"));
        assert_eq!(m.code_challenge_methods_supported, ["plain", "S256"]);
        assert_eq!(m.token_endpoint_auth_methods_supported.len(), 3);
        assert!(m.introspection_endpoint_auth_methods_supported.is_empty());
        assert_eq!(m.pushed_authorization_request_endpoint, None);
    }

    #[test]
    fn only_issuer_is_required() {
        let m = parse_response(
            200,
            br#"{"issuer":"https://as.example"}"#,
            "https://as.example",
        )
        .unwrap();
        assert_eq!(m.issuer, "https://as.example");
        assert_eq!(m.jwks_uri, None);
        assert_eq!(m.introspection_endpoint, None);
    }

    #[test]
    fn checks_are_ordered_status_json_issuer() {
        // Status first, whatever the body.
        assert_eq!(
            parse_response(404, keycloak_like().as_bytes(), ISSUER),
            Err(DiscoveryError::Status(404))
        );
        assert_eq!(
            parse_response(500, b"not json", ISSUER),
            Err(DiscoveryError::Status(500))
        );
        assert_eq!(
            parse_response(200, b"<html>", ISSUER),
            Err(DiscoveryError::NotJson)
        );
        assert_eq!(
            parse_response(200, b"", ISSUER),
            Err(DiscoveryError::NotJson)
        );
        assert_eq!(
            parse_response(200, b"[1,2]", ISSUER),
            Err(DiscoveryError::NotJson)
        );
        assert_eq!(
            parse_response(200, br#"{"jwks_uri":"https://x/certs"}"#, ISSUER),
            Err(DiscoveryError::MissingIssuer)
        );
        assert_eq!(
            parse_response(200, br#"{"issuer":42}"#, ISSUER),
            Err(DiscoveryError::MissingIssuer)
        );
        assert_eq!(
            parse_response(200, br#"{"issuer":"i","jwks_uri":7}"#, "i"),
            Err(DiscoveryError::InvalidMember("jwks_uri"))
        );
        assert_eq!(
            parse_response(
                200,
                br#"{"issuer":"i","code_challenge_methods_supported":"S256"}"#,
                "i"
            ),
            Err(DiscoveryError::InvalidMember(
                "code_challenge_methods_supported"
            ))
        );
        assert_eq!(
            parse_response(
                200,
                br#"{"issuer":"i","scopes_supported":["openid",1]}"#,
                "i"
            ),
            Err(DiscoveryError::InvalidMember("scopes_supported"))
        );
    }

    #[test]
    fn issuer_must_match_exactly() {
        let err =
            parse_response(200, keycloak_like().as_bytes(), "https://evil.example").unwrap_err();
        assert_eq!(
            err,
            DiscoveryError::IssuerMismatch {
                expected: "https://evil.example".into(),
                found: ISSUER.into()
            }
        );
        assert!(err.to_string().contains("differs"));
    }

    #[test]
    fn trailing_slash_counts_as_a_different_issuer() {
        let body = serde_json::json!({ "issuer": format!("{ISSUER}/") }).to_string();
        assert!(matches!(
            parse_response(200, body.as_bytes(), ISSUER),
            Err(DiscoveryError::IssuerMismatch { .. })
        ));
        let body = serde_json::json!({ "issuer": ISSUER }).to_string();
        assert!(matches!(
            parse_response(200, body.as_bytes(), &format!("{ISSUER}/")),
            Err(DiscoveryError::IssuerMismatch { .. })
        ));
        // Case differences in the host also count: comparison is on bytes.
        let body = serde_json::json!({ "issuer": "https://IdP.example" }).to_string();
        assert!(parse_response(200, body.as_bytes(), "https://idp.example").is_err());
    }

    #[test]
    fn jwks_response_checks_status_then_parses() {
        assert_eq!(
            parse_jwks_response(503, b"{}").unwrap_err(),
            JwksError::HttpStatus(503)
        );
        assert_eq!(
            parse_jwks_response(200, b"nope").unwrap_err(),
            JwksError::NotJson
        );
        assert_eq!(
            parse_jwks_response(200, br#"{"keys":[]}"#).unwrap_err(),
            JwksError::NoUsableKey { skipped: 0 }
        );
        // A real key: the RFC 7515 A.3 P-256 public key.
        let body = br#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1",
            "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
        let keys = parse_jwks_response(200, body).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(keys.contains_kid("k1"));
    }
}
