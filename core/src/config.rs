//! The `openid-connect` plugin configuration, as APISIX 3.x defines it.
//!
//! [`PluginConfig::parse`] turns the plugin's JSON object into a validated
//! config, or into the list of every problem found (each naming the
//! attribute). The sidecar calls it to refuse a bad route before anything
//! reaches Envoy; the filter calls it to read its per-route config. Names,
//! types and defaults follow APISIX's `apisix/plugins/openid-connect.lua`.

use std::fmt;

use serde_json::{Map, Value};

use crate::claims::ClaimSchema;
use crate::http::Target;
use crate::jwt::{Alg, Jwks};
use crate::secret::Secret;

/// One problem in a plugin configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The attribute, dotted for nested ones (`session.secret`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "property \"{}\" {}", self.field, self.message)
    }
}

/// Every problem found in one configuration, in attribute order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// How the client authenticates to the token and introspection endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    /// HTTP Basic with the form-encoded id and secret (RFC 6749 2.3.1).
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// What happens to an unauthenticated request on a route that could log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnauthAction {
    /// Browser navigations are sent to the provider's login page.
    Auth,
    /// 401.
    Deny,
    /// Forwarded without identity headers.
    Pass,
}

/// The cookie `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
    /// No attribute: the browser's default.
    Default,
}

/// `session`: the encrypted cookie that holds a browser login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Key material for encryption and integrity (at least 16 characters).
    pub secret: Secret,
    pub cookie_name: String,
    pub cookie_path: String,
    pub cookie_domain: Option<String>,
    pub cookie_secure: Option<bool>,
    pub cookie_http_only: bool,
    pub cookie_same_site: SameSite,
    pub idling_timeout: u64,
    pub rolling_timeout: u64,
    pub absolute_timeout: u64,
}

/// `claim_validator.audience`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudienceValidator {
    pub claim: String,
    pub required: bool,
    pub match_with_client_id: bool,
}

/// `claim_validator`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimValidator {
    /// Accepted issuers; `None` means "the issuer of the discovery document".
    pub valid_issuers: Option<Vec<String>>,
    pub audience: AudienceValidator,
}

/// `public_key`: one PEM public key, parsed with the config (so a key that
/// does not parse is refused with the config, not on every request).
#[derive(Debug, Clone)]
pub struct PublicKey {
    pem: String,
    keys: Jwks,
}

impl PublicKey {
    /// Parses a PEM public key (RSA, EC P-256 or P-384).
    pub fn parse(pem: &str) -> Result<PublicKey, crate::jwt::JwksError> {
        Ok(PublicKey {
            keys: Jwks::from_pem(pem)?,
            pem: pem.to_string(),
        })
    }

    /// The PEM text as configured.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The key, as a key set that matches any `kid`.
    pub fn keys(&self) -> &Jwks {
        &self.keys
    }
}

/// Equal when the PEM texts are (the keys are parsed from them).
impl PartialEq for PublicKey {
    fn eq(&self, other: &PublicKey) -> bool {
        self.pem == other.pem
    }
}

impl Eq for PublicKey {}

/// A validated `openid-connect` plugin configuration with every default
/// filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub discovery: String,
    pub scope: String,
    pub realm: String,
    pub bearer_only: bool,
    pub logout_path: String,
    /// Where the provider POSTs back-channel logout tokens (OpenID Connect
    /// Back-Channel Logout 1.0; an extension, unset by default).
    pub backchannel_logout_path: Option<String>,
    pub post_logout_redirect_uri: Option<String>,
    pub redirect_uri: Option<String>,
    /// Timeout of each provider call, in seconds.
    pub timeout: u64,
    pub ssl_verify: bool,
    pub introspection_endpoint: Option<String>,
    pub introspection_endpoint_auth_method: ClientAuthMethod,
    pub token_endpoint_auth_method: ClientAuthMethod,
    /// PEM public key for local verification, parsed.
    pub public_key: Option<PublicKey>,
    pub use_jwks: bool,
    pub use_pkce: bool,
    /// Allowed JWT algorithms; empty means the default list.
    pub token_signing_alg_values_expected: Vec<Alg>,
    pub set_access_token_header: bool,
    pub access_token_in_authorization_header: bool,
    pub set_id_token_header: bool,
    pub set_raw_id_token_header: bool,
    pub set_userinfo_header: bool,
    pub set_refresh_token_header: bool,
    pub session: Option<SessionConfig>,
    pub unauth_action: UnauthAction,
    /// Extra parameters for the authorization request.
    pub authorization_params: Vec<(String, String)>,
    pub renew_access_token_on_expiry: bool,
    pub access_token_expires_in: Option<u64>,
    pub access_token_expires_leeway: u64,
    pub iat_slack: u64,
    pub jwk_expires_in: u64,
    pub introspection_interval: u64,
    pub introspection_expiry_claim: String,
    /// Request headers copied onto the introspection call.
    pub introspection_addon_headers: Vec<String>,
    pub required_scopes: Vec<String>,
    pub claim_validator: ClaimValidator,
    /// `claim_schema`, compiled ([`crate::claims`]).
    pub claim_schema: Option<ClaimSchema>,
    pub revoke_tokens_on_logout: bool,
    pub force_reauthorize: bool,
}

/// The attributes of the plugin object that hold secrets (paths in the
/// JSON object), each parsed into a [`Secret`] ([`PluginConfig::secrets`]).
/// The sidecar's Admin API redacts them in answers and keeps them across
/// writes; the one list of what is secret in a plugin config.
pub const SECRET_FIELDS: &[&[&str]] = &[&["client_secret"], &["session", "secret"]];

impl PluginConfig {
    /// The secret values of this config: those of [`SECRET_FIELDS`] that
    /// are set, in that order.
    pub fn secrets(&self) -> Vec<&Secret> {
        let mut out: Vec<&Secret> = self.client_secret.iter().collect();
        out.extend(self.session.as_ref().map(|s| &s.secret));
        out
    }

    /// Tokens are verified locally (JWKS or `public_key`) rather than by
    /// introspection.
    pub fn verifies_locally(&self) -> bool {
        self.use_jwks || self.public_key.is_some()
    }

    /// Bearer tokens in requests are checked at all on this route (APISIX:
    /// `bearer_only or introspection_endpoint or public_key or use_jwks`).
    pub fn checks_bearer_tokens(&self) -> bool {
        self.bearer_only || self.introspection_endpoint.is_some() || self.verifies_locally()
    }

    /// Parses the JSON text of a plugin configuration.
    pub fn parse_str(json: &str) -> Result<PluginConfig, ConfigErrors> {
        match serde_json::from_str::<Value>(json) {
            Ok(v) => PluginConfig::parse(&v),
            Err(e) => Err(ConfigErrors(vec![ConfigError {
                field: "openid-connect".into(),
                message: format!("is not valid JSON: {e}"),
            }])),
        }
    }

    /// Validates the plugin's JSON object, reporting every problem at once.
    pub fn parse(value: &Value) -> Result<PluginConfig, ConfigErrors> {
        let Some(obj) = value.as_object() else {
            return Err(ConfigErrors(vec![ConfigError {
                field: "openid-connect".into(),
                message: "must be a JSON object".into(),
            }]));
        };
        let mut r = Reader::new(obj, "");

        let client_id = r.string("client_id");
        let client_secret = r.string("client_secret").map(Secret::new);
        let discovery = r.url("discovery");
        let scope = r.string("scope").unwrap_or_else(|| "openid".into());
        let realm = r.string("realm").unwrap_or_else(|| "apisix".into());
        let bearer_only = r.bool("bearer_only").unwrap_or(false);
        let logout_path = r.string("logout_path").unwrap_or_else(|| "/logout".into());
        let backchannel_logout_path = r.string("backchannel_logout_path");
        if let Some(p) = &backchannel_logout_path {
            if !p.starts_with('/') || p.contains(['?', '#']) {
                r.error(
                    "backchannel_logout_path",
                    "must be a path starting with '/', without query",
                );
            } else if *p == logout_path {
                r.error("backchannel_logout_path", "must differ from logout_path");
            }
        }
        let post_logout_redirect_uri = r.url_or_path("post_logout_redirect_uri");
        let redirect_uri = r.url_or_path("redirect_uri");
        let timeout = r.uint_min("timeout", 1).unwrap_or(3);
        let ssl_verify = r.ssl_verify("ssl_verify").unwrap_or(true);
        let introspection_endpoint = r.url("introspection_endpoint");
        let introspection_endpoint_auth_method = r
            .auth_method("introspection_endpoint_auth_method")
            .unwrap_or(ClientAuthMethod::ClientSecretBasic);
        let token_endpoint_auth_method = r
            .auth_method("token_endpoint_auth_method")
            .unwrap_or(ClientAuthMethod::ClientSecretBasic);
        let public_key = r.public_key("public_key");
        let use_jwks = r.bool("use_jwks").unwrap_or(false);
        let use_pkce = r.bool("use_pkce").unwrap_or(false);
        let token_signing_alg_values_expected = r.algs("token_signing_alg_values_expected");
        let set_access_token_header = r.bool("set_access_token_header").unwrap_or(true);
        let access_token_in_authorization_header = r
            .bool("access_token_in_authorization_header")
            .unwrap_or(false);
        let set_id_token_header = r.bool("set_id_token_header").unwrap_or(true);
        let set_raw_id_token_header = r.bool("set_raw_id_token_header").unwrap_or(false);
        let set_userinfo_header = r.bool("set_userinfo_header").unwrap_or(true);
        let set_refresh_token_header = r.bool("set_refresh_token_header").unwrap_or(false);
        let session = r.object("session").and_then(|s| parse_session(&mut r, s));
        let unauth_action = r
            .unauth_action("unauth_action")
            .unwrap_or(UnauthAction::Auth);
        let authorization_params = r.string_map("authorization_params");
        let renew_access_token_on_expiry = r.bool("renew_access_token_on_expiry").unwrap_or(true);
        let access_token_expires_in = r.uint_min("access_token_expires_in", 0);
        let access_token_expires_leeway = r.uint_min("access_token_expires_leeway", 0).unwrap_or(0);
        let iat_slack = r.uint_min("iat_slack", 0).unwrap_or(120);
        let jwk_expires_in = r.uint_min("jwk_expires_in", 1).unwrap_or(86400);
        let introspection_interval = r.uint_min("introspection_interval", 0).unwrap_or(0);
        let introspection_expiry_claim = r
            .string("introspection_expiry_claim")
            .unwrap_or_else(|| "exp".into());
        let introspection_addon_headers = r.header_names("introspection_addon_headers");
        let required_scopes = r.string_list("required_scopes").unwrap_or_default();
        let claim_validator = parse_claim_validator(&mut r);
        let claim_schema = r
            .get("claim_schema")
            .and_then(|v| match ClaimSchema::compile(v) {
                Ok(s) => Some(s),
                Err(problems) => {
                    for p in problems {
                        r.error("claim_schema", &p);
                    }
                    None
                }
            });
        let revoke_tokens_on_logout = r.bool("revoke_tokens_on_logout").unwrap_or(false);
        let force_reauthorize = r.bool("force_reauthorize").unwrap_or(false);
        if r.bool("accept_none_alg") == Some(true) {
            r.error(
                "accept_none_alg",
                "true is not supported: unsigned tokens are never accepted",
            );
        }
        // APISIX's default is `true` (and up to 3.13 it stored it in every
        // route): lua-resty-openidc then skips the signature check of an ID
        // token whose `alg` it cannot verify. Both values are accepted and
        // neither weakens anything here: every algorithm this gateway
        // accepts (`token_signing_alg_values_expected`) is one it verifies,
        // and a token in any other algorithm is refused.
        let _ = r.bool("accept_unsupported_alg");
        // Only used to sign `private_key_jwt` client assertions, which are
        // refused by `*_endpoint_auth_method`; APISIX stores its default 60.
        let _ = r.uint_min("client_jwt_assertion_expires_in", 1);
        if r.bool("jwt_verification_cache_ignore") == Some(true) {
            r.error(
                "jwt_verification_cache_ignore",
                "true is not supported: a verified token is kept until it expires (`token_cache_size`)",
            );
        }
        // A nonce is always sent and checked; `use_nonce` is read for
        // compatibility with configurations written for APISIX.
        let _ = r.bool("use_nonce");
        // APISIX 3.18's PAR (RFC 9126) and DPoP proofs: accepted switched
        // off (APISIX's default), refused switched on.
        switched_off(
            &mut r,
            "par",
            "par.",
            &["endpoint", "endpoint_auth_method"],
            &[],
        );
        switched_off(
            &mut r,
            "dpop",
            "dpop.",
            &["signing_alg"],
            &["private_key", "public_jwk"],
        );
        r.finish(KNOWN_TOP, UNSUPPORTED_TOP);

        if client_id.is_none() && !obj.contains_key("client_id") {
            r.error("client_id", "is required");
        }
        if discovery.is_none() && !obj.contains_key("discovery") {
            r.error("discovery", "is required");
        }
        let secret_optional = if bearer_only {
            public_key.is_some() || use_jwks
        } else {
            use_pkce
        };
        if !secret_optional && client_secret.is_none() && !obj.contains_key("client_secret") {
            r.error("client_secret", "is required");
        }
        if !bearer_only && session.is_none() && !obj.contains_key("session") {
            r.error(
                "session.secret",
                "is required when \"bearer_only\" is false",
            );
        }

        let errors = r.errors;
        match (client_id, discovery) {
            (Some(client_id), Some(discovery)) if errors.is_empty() => Ok(PluginConfig {
                client_id,
                client_secret,
                discovery,
                scope,
                realm,
                bearer_only,
                logout_path,
                backchannel_logout_path,
                post_logout_redirect_uri,
                redirect_uri,
                timeout,
                ssl_verify,
                introspection_endpoint,
                introspection_endpoint_auth_method,
                token_endpoint_auth_method,
                public_key,
                use_jwks,
                use_pkce,
                token_signing_alg_values_expected,
                set_access_token_header,
                access_token_in_authorization_header,
                set_id_token_header,
                set_raw_id_token_header,
                set_userinfo_header,
                set_refresh_token_header,
                session,
                unauth_action,
                authorization_params,
                renew_access_token_on_expiry,
                access_token_expires_in,
                access_token_expires_leeway,
                iat_slack,
                jwk_expires_in,
                introspection_interval,
                introspection_expiry_claim,
                introspection_addon_headers,
                required_scopes,
                claim_validator,
                claim_schema,
                revoke_tokens_on_logout,
                force_reauthorize,
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }
}

/// The attributes this project accepts (top level): what the sidecar's
/// plugin schema (`GET /apisix/admin/plugins/openid-connect`) names.
pub const KNOWN_TOP: &[&str] = &[
    "client_id",
    "client_secret",
    "discovery",
    "scope",
    "realm",
    "bearer_only",
    "logout_path",
    "backchannel_logout_path",
    "post_logout_redirect_uri",
    "redirect_uri",
    "timeout",
    "ssl_verify",
    "introspection_endpoint",
    "introspection_endpoint_auth_method",
    "token_endpoint_auth_method",
    "public_key",
    "use_jwks",
    "use_pkce",
    "token_signing_alg_values_expected",
    "set_access_token_header",
    "access_token_in_authorization_header",
    "set_id_token_header",
    "set_raw_id_token_header",
    "set_userinfo_header",
    "set_refresh_token_header",
    "session",
    "unauth_action",
    "authorization_params",
    "renew_access_token_on_expiry",
    "access_token_expires_in",
    "access_token_expires_leeway",
    "iat_slack",
    "jwk_expires_in",
    "introspection_interval",
    "introspection_expiry_claim",
    "introspection_addon_headers",
    "required_scopes",
    "claim_validator",
    "claim_schema",
    "revoke_tokens_on_logout",
    "force_reauthorize",
    "accept_none_alg",
    "accept_unsupported_alg",
    "use_nonce",
    "client_jwt_assertion_expires_in",
    "jwt_verification_cache_ignore",
    "par",
    "dpop",
];

/// APISIX attributes this project does not implement: refused with
/// "not supported" rather than silently ignored.
const UNSUPPORTED_TOP: &[&str] = &[
    "proxy_opts",
    "client_rsa_private_key",
    "client_rsa_private_key_id",
    "client_jwt_assertion_alg",
    "client_jwt_assertion_audience",
    "refresh_session_interval",
    "cache_segment",
    "session_contents",
];

/// The attributes of `session` this project accepts.
pub const KNOWN_SESSION: &[&str] = &[
    "secret",
    "cookie_name",
    "cookie_path",
    "cookie_domain",
    "cookie_secure",
    "cookie_http_only",
    "cookie_same_site",
    "idling_timeout",
    "rolling_timeout",
    "absolute_timeout",
    "cookie",
    "storage",
];
const UNSUPPORTED_SESSION: &[&str] = &["redis"];

fn parse_session(r: &mut Reader<'_>, obj: &Map<String, Value>) -> Option<SessionConfig> {
    let mut s = Reader::new(obj, "session.");
    let secret = s.string("secret");
    if let Some(secret) = &secret {
        if secret.chars().count() < 16 {
            s.error("secret", "must be at least 16 characters long");
        }
    } else if !obj.contains_key("secret") {
        s.error("secret", "is required");
    }
    let cookie_name = s.string("cookie_name").unwrap_or_else(|| "session".into());
    if !is_token(&cookie_name) {
        s.error(
            "cookie_name",
            "must be a cookie name (letters, digits, '-', '_', '.')",
        );
    }
    let cookie_path = s.string("cookie_path").unwrap_or_else(|| "/".into());
    let cookie_domain = s.string("cookie_domain");
    let cookie_secure = s.bool("cookie_secure");
    let cookie_http_only = s.bool("cookie_http_only").unwrap_or(true);
    let cookie_same_site = s
        .enumerated(
            "cookie_same_site",
            &[
                ("Strict", SameSite::Strict),
                ("Lax", SameSite::Lax),
                ("None", SameSite::None),
                ("Default", SameSite::Default),
            ],
        )
        .unwrap_or(SameSite::Lax);
    let idling_timeout = s.uint_min("idling_timeout", 0).unwrap_or(900);
    let rolling_timeout = s.uint_min("rolling_timeout", 0).unwrap_or(3600);
    // `cookie.lifetime` is APISIX's deprecated alias of `absolute_timeout`.
    let lifetime = s.object("cookie").and_then(|c| {
        let mut c = Reader::new(c, "session.cookie.");
        let lifetime = c.uint_min("lifetime", 0);
        c.finish(&["lifetime"], &[]);
        s.errors.append(&mut c.errors);
        lifetime
    });
    let absolute_timeout = s
        .uint_min("absolute_timeout", 0)
        .or(lifetime)
        .unwrap_or(86400);
    if let Some(storage) = s.string("storage") {
        if storage == "redis" {
            s.error(
                "storage",
                "\"redis\" is not supported (sessions are stored in cookies)",
            );
        } else if storage != "cookie" {
            s.error("storage", "must be \"cookie\"");
        }
    }
    s.finish(KNOWN_SESSION, UNSUPPORTED_SESSION);
    let ok = s.errors.is_empty();
    r.errors.append(&mut s.errors);
    match secret {
        Some(secret) if ok => Some(SessionConfig {
            secret: Secret::new(secret),
            cookie_name,
            cookie_path,
            cookie_domain,
            cookie_secure,
            cookie_http_only,
            cookie_same_site,
            idling_timeout,
            rolling_timeout,
            absolute_timeout,
        }),
        _ => None,
    }
}

/// An APISIX feature object (`par`, `dpop`) this gateway does not have:
/// accepted only with `enabled` absent or `false`, when its `unused`
/// string attributes ask for nothing; `unsupported` ones (keys) are refused
/// either way.
fn switched_off(
    r: &mut Reader<'_>,
    field: &str,
    prefix: &'static str,
    unused: &[&str],
    unsupported: &[&str],
) {
    let Some(obj) = r.object(field) else {
        return;
    };
    let mut s = Reader::new(obj, prefix);
    if s.bool("enabled") == Some(true) {
        s.error("enabled", "true is not supported by this gateway");
    }
    for k in unused {
        let _ = s.string(k);
    }
    let mut known = vec!["enabled"];
    known.extend_from_slice(unused);
    s.finish(&known, unsupported);
    r.errors.append(&mut s.errors);
}

fn parse_claim_validator(r: &mut Reader<'_>) -> ClaimValidator {
    let mut out = ClaimValidator {
        valid_issuers: None,
        audience: AudienceValidator {
            claim: "aud".into(),
            required: false,
            match_with_client_id: false,
        },
    };
    let Some(cv) = r.object("claim_validator") else {
        return out;
    };
    let mut c = Reader::new(cv, "claim_validator.");
    if let Some(issuer) = c.object("issuer") {
        let mut i = Reader::new(issuer, "claim_validator.issuer.");
        out.valid_issuers = i.string_list("valid_issuers");
        // An empty list would accept no issuer (APISIX reads it as "do not
        // check"): refused rather than silently one or the other.
        if out.valid_issuers.as_ref().is_some_and(Vec::is_empty) {
            i.error(
                "valid_issuers",
                "must list at least one issuer (leave it out to use the discovery document's)",
            );
            out.valid_issuers = None;
        }
        i.finish(&["valid_issuers"], &[]);
        c.errors.append(&mut i.errors);
    }
    if let Some(aud) = c.object("audience") {
        let mut a = Reader::new(aud, "claim_validator.audience.");
        if let Some(claim) = a.string("claim") {
            out.audience.claim = claim;
        }
        out.audience.required = a.bool("required").unwrap_or(false);
        out.audience.match_with_client_id = a.bool("match_with_client_id").unwrap_or(false);
        a.finish(&["claim", "required", "match_with_client_id"], &[]);
        c.errors.append(&mut a.errors);
    }
    c.finish(&["issuer", "audience"], &[]);
    r.errors.append(&mut c.errors);
    out
}

/// An RFC 7230 token (cookie and header names).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Reads typed attributes out of one JSON object and collects errors.
struct Reader<'a> {
    obj: &'a Map<String, Value>,
    prefix: &'static str,
    errors: Vec<ConfigError>,
}

impl<'a> Reader<'a> {
    fn new(obj: &'a Map<String, Value>, prefix: &'static str) -> Self {
        Reader {
            obj,
            prefix,
            errors: Vec::new(),
        }
    }

    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            field: format!("{}{}", self.prefix, field),
            message: message.into(),
        });
    }

    /// The attribute, treating JSON `null` as absent.
    fn get(&self, field: &str) -> Option<&'a Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    fn string(&mut self, field: &str) -> Option<String> {
        match self.get(field)? {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.error(field, "must be a string");
                None
            }
        }
    }

    fn bool(&mut self, field: &str) -> Option<bool> {
        match self.get(field)? {
            Value::Bool(b) => Some(*b),
            _ => {
                self.error(field, "must be a boolean");
                None
            }
        }
    }

    /// APISIX once wrote `ssl_verify: "no"`; it still reads it as `false`.
    fn ssl_verify(&mut self, field: &str) -> Option<bool> {
        match self.get(field)? {
            Value::String(s) if s == "no" => Some(false),
            _ => self.bool(field),
        }
    }

    fn uint_min(&mut self, field: &str, min: u64) -> Option<u64> {
        let v = self.get(field)?;
        match v.as_u64() {
            Some(n) if n >= min => Some(n),
            Some(_) => {
                self.error(field, format!("must be at least {min}"));
                None
            }
            None if v.as_i64().is_some() => {
                self.error(field, format!("must be at least {min}"));
                None
            }
            None => {
                self.error(field, "must be an integer");
                None
            }
        }
    }

    fn object(&mut self, field: &str) -> Option<&'a Map<String, Value>> {
        match self.get(field)? {
            Value::Object(o) => Some(o),
            _ => {
                self.error(field, "must be an object");
                None
            }
        }
    }

    fn string_list(&mut self, field: &str) -> Option<Vec<String>> {
        match self.get(field)? {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        _ => {
                            self.error(field, "must be an array of strings");
                            return None;
                        }
                    }
                }
                Some(out)
            }
            _ => {
                self.error(field, "must be an array of strings");
                None
            }
        }
    }

    fn enumerated<T: Copy>(&mut self, field: &str, choices: &[(&str, T)]) -> Option<T> {
        let s = self.string(field)?;
        match choices.iter().find(|(name, _)| *name == s) {
            Some((_, v)) => Some(*v),
            None => {
                let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
                self.error(field, format!("must be one of {}", names.join(", ")));
                None
            }
        }
    }

    fn auth_method(&mut self, field: &str) -> Option<ClientAuthMethod> {
        let s = self.string(field)?;
        match s.as_str() {
            "client_secret_basic" => Some(ClientAuthMethod::ClientSecretBasic),
            "client_secret_post" => Some(ClientAuthMethod::ClientSecretPost),
            "private_key_jwt" | "client_secret_jwt" => {
                self.error(field, format!("\"{s}\" is not supported"));
                None
            }
            _ => {
                self.error(
                    field,
                    "must be one of \"client_secret_basic\", \"client_secret_post\"",
                );
                None
            }
        }
    }

    fn unauth_action(&mut self, field: &str) -> Option<UnauthAction> {
        self.enumerated(
            field,
            &[
                ("auth", UnauthAction::Auth),
                ("deny", UnauthAction::Deny),
                ("pass", UnauthAction::Pass),
            ],
        )
    }

    /// An absolute `http`/`https` URL.
    fn url(&mut self, field: &str) -> Option<String> {
        let s = self.string(field)?;
        match Target::parse(&s) {
            Ok(_) => Some(s),
            Err(e) => {
                self.error(field, format!("must be an http or https URL: {e}"));
                None
            }
        }
    }

    /// An absolute URL, or a path on the request's own host.
    fn url_or_path(&mut self, field: &str) -> Option<String> {
        let s = self.string(field)?;
        if s.starts_with('/') && !s.starts_with("//") {
            return Some(s);
        }
        match Target::parse(&s) {
            Ok(_) => Some(s),
            Err(e) => {
                self.error(
                    field,
                    format!("must be an http or https URL or a path starting with '/': {e}"),
                );
                None
            }
        }
    }

    fn public_key(&mut self, field: &str) -> Option<PublicKey> {
        let s = self.string(field)?;
        if !s.contains("-----BEGIN") {
            self.error(field, "must be a PEM public key");
            return None;
        }
        match PublicKey::parse(&s) {
            Ok(key) => Some(key),
            Err(e) => {
                self.error(field, format!("is not a usable public key: {e}"));
                None
            }
        }
    }

    /// `token_signing_alg_values_expected`: a string in APISIX (one
    /// algorithm, or several separated by commas or spaces); an array of
    /// strings is accepted too.
    fn algs(&mut self, field: &str) -> Vec<Alg> {
        let names: Vec<String> = match self.get(field) {
            None => return Vec::new(),
            Some(Value::String(s)) => s
                .split([',', ' '])
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
            Some(Value::Array(_)) => match self.string_list(field) {
                Some(v) => v,
                None => return Vec::new(),
            },
            Some(_) => {
                self.error(field, "must be a string or an array of strings");
                return Vec::new();
            }
        };
        if names.is_empty() {
            self.error(field, "names no algorithm");
        }
        let mut algs = Vec::with_capacity(names.len());
        for name in &names {
            if let Ok(alg) = name.parse::<Alg>() {
                algs.push(alg);
            } else {
                let why = if name.eq_ignore_ascii_case("none") {
                    "unsigned tokens are never accepted".to_string()
                } else {
                    let all: Vec<&str> = Alg::ALL.iter().map(|a| a.as_str()).collect();
                    format!("supported: {}", all.join(", "))
                };
                self.error(
                    field,
                    format!("algorithm \"{name}\" is not supported ({why})"),
                );
            }
        }
        algs
    }

    /// `authorization_params`: an object whose values are strings, numbers
    /// or booleans (sent as their text).
    fn string_map(&mut self, field: &str) -> Vec<(String, String)> {
        let Some(obj) = self.object(field) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(obj.len());
        for (k, v) in obj {
            match v {
                Value::String(s) => out.push((k.clone(), s.clone())),
                Value::Number(n) => out.push((k.clone(), n.to_string())),
                Value::Bool(b) => out.push((k.clone(), b.to_string())),
                _ => self.error(
                    &format!("{field}.{k}"),
                    "must be a string, a number or a boolean",
                ),
            }
        }
        out
    }

    /// `introspection_addon_headers`: at least one header name.
    fn header_names(&mut self, field: &str) -> Vec<String> {
        let Some(names) = self.string_list(field) else {
            return Vec::new();
        };
        if names.is_empty() {
            self.error(field, "must name at least one header");
        }
        for n in &names {
            if !is_token(n) {
                self.error(field, format!("\"{n}\" is not a header name"));
            }
        }
        names
    }

    /// Reports attributes that are neither known nor known-unsupported.
    fn finish(&mut self, known: &[&str], unsupported: &[&str]) {
        let keys: Vec<String> = self.obj.keys().cloned().collect();
        for k in keys {
            if known.contains(&k.as_str()) {
                continue;
            }
            if unsupported.contains(&k.as_str()) {
                self.error(&k, "is not supported by this gateway");
            } else {
                self.error(&k, "is not a known attribute of openid-connect");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A P-256 public key (any well-formed key will do).
    const P256_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEBWWo2qciXCPAyb7p+PNGn+4G/7cz
Rg5PNlNU+hQuVXDcI6L8YVaBadvQF/tSb3WkBY9a4QbTCHYKOxaH1Pvk/w==
-----END PUBLIC KEY-----
";

    #[test]
    fn secrets_are_the_secret_fields() {
        let mut v = minimal();
        v["bearer_only"] = json!(false);
        v["session"] = json!({"secret": "0123456789abcdef"});
        let c = PluginConfig::parse(&v).unwrap();
        let got: Vec<&str> = c.secrets().into_iter().map(Secret::expose).collect();
        // Each field of SECRET_FIELDS, read from the JSON: the same values.
        let want: Vec<&str> = SECRET_FIELDS
            .iter()
            .filter_map(|path| {
                path.iter()
                    .try_fold(&v, |cur, k| cur.get(*k))
                    .and_then(Value::as_str)
            })
            .collect();
        assert_eq!(got, want);
        assert_eq!(got, ["s3cr3t", "0123456789abcdef"]);
    }

    #[test]
    fn public_key_is_parsed_with_the_config() {
        let mut v = minimal();
        v["public_key"] = json!(P256_PEM);
        let c = PluginConfig::parse(&v).unwrap();
        assert_eq!(c.public_key.as_ref().map(PublicKey::pem), Some(P256_PEM));
        // A PEM header around something that is not a key: refused here,
        // not on every request.
        for bad in [
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
            "-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
            "-----BEGIN PUBLIC KEY-----",
        ] {
            v["public_key"] = json!(bad);
            let e = errors(v.clone());
            assert_eq!(e.len(), 1, "{bad}: {e:?}");
            assert_eq!(e[0].field, "public_key");
            assert!(
                e[0].message.starts_with("is not a usable public key"),
                "{e:?}"
            );
        }
        v["public_key"] = json!("AAAA");
        assert_eq!(errors(v)[0].message, "must be a PEM public key");
    }

    fn minimal() -> Value {
        json!({
            "client_id": "apisix-quickstart-client",
            "client_secret": "s3cr3t",
            "discovery": "http://127.0.0.1:8080/realms/quickstart-realm/.well-known/openid-configuration",
            "bearer_only": true
        })
    }

    fn errors(v: Value) -> Vec<ConfigError> {
        match PluginConfig::parse(&v) {
            Ok(c) => panic!("expected errors, got {c:?}"),
            Err(e) => e.0,
        }
    }

    fn fields(v: Value) -> Vec<String> {
        errors(v).into_iter().map(|e| e.field).collect()
    }

    /// `backchannel_logout_path` (an extension): unset by default; a path
    /// without query, not the `logout_path`.
    #[test]
    fn backchannel_logout_path() {
        let c = PluginConfig::parse(&minimal()).unwrap();
        assert_eq!(c.backchannel_logout_path, None);
        let mut v = minimal();
        v["backchannel_logout_path"] = json!("/app/backchannel-logout");
        let c = PluginConfig::parse(&v).unwrap();
        assert_eq!(
            c.backchannel_logout_path.as_deref(),
            Some("/app/backchannel-logout")
        );
        for bad in [
            json!("app/bcl"),
            json!("/bcl?x=1"),
            json!("/logout"),
            json!(5),
            json!("http://idp/bcl"),
        ] {
            let mut v = minimal();
            v["backchannel_logout_path"] = bad.clone();
            assert_eq!(fields(v), ["backchannel_logout_path"], "{bad}");
        }
    }

    /// Host names are ASCII (the filter carries no Unicode tables to keep
    /// the module small): an internationalised name is refused, naming the
    /// field; its punycode form is accepted.
    #[test]
    fn internationalised_host_names_are_written_in_punycode() {
        let mut v = minimal();
        v["discovery"] = json!("http://bücher.example/realms/x/.well-known/openid-configuration");
        let e = errors(v);
        assert_eq!(e[0].field, "discovery");
        assert!(
            e[0].message.starts_with("must be an http or https URL"),
            "{e:?}"
        );
        let mut v = minimal();
        v["discovery"] =
            json!("http://xn--bcher-kva.example/realms/x/.well-known/openid-configuration");
        assert!(PluginConfig::parse(&v).is_ok());
    }

    #[test]
    fn defaults_match_apisix() {
        let c = PluginConfig::parse(&minimal()).unwrap();
        assert_eq!(c.scope, "openid");
        assert_eq!(c.realm, "apisix");
        assert!(c.bearer_only);
        assert_eq!(c.logout_path, "/logout");
        assert_eq!(c.timeout, 3);
        assert!(c.ssl_verify);
        assert_eq!(
            c.introspection_endpoint_auth_method,
            ClientAuthMethod::ClientSecretBasic
        );
        assert_eq!(
            c.token_endpoint_auth_method,
            ClientAuthMethod::ClientSecretBasic
        );
        assert!(!c.use_jwks && !c.use_pkce);
        assert!(c.token_signing_alg_values_expected.is_empty());
        assert!(c.set_access_token_header);
        assert!(!c.access_token_in_authorization_header);
        assert!(c.set_id_token_header);
        assert!(!c.set_raw_id_token_header);
        assert!(c.set_userinfo_header);
        assert!(!c.set_refresh_token_header);
        assert_eq!(c.unauth_action, UnauthAction::Auth);
        assert!(c.renew_access_token_on_expiry);
        assert_eq!(c.access_token_expires_in, None);
        assert_eq!(c.access_token_expires_leeway, 0);
        assert_eq!(c.iat_slack, 120);
        assert_eq!(c.jwk_expires_in, 86400);
        assert_eq!(c.introspection_interval, 0);
        assert_eq!(c.introspection_expiry_claim, "exp");
        assert!(c.introspection_addon_headers.is_empty());
        assert!(c.required_scopes.is_empty());
        assert_eq!(c.claim_validator.valid_issuers, None);
        assert_eq!(c.claim_validator.audience.claim, "aud");
        assert!(!c.claim_validator.audience.required);
        assert!(!c.claim_validator.audience.match_with_client_id);
        assert!(!c.revoke_tokens_on_logout);
        assert!(!c.force_reauthorize);
        assert!(c.session.is_none());
        assert!(c.redirect_uri.is_none());
        assert!(c.post_logout_redirect_uri.is_none());
        assert!(c.checks_bearer_tokens());
        assert!(!c.verifies_locally());
    }

    /// The objects APISIX stores (every schema default filled in), from
    /// its sources at pinned tags: tests/fixtures/apisix/README.md.
    #[test]
    fn apisix_stored_defaults_are_accepted() {
        for (name, text) in [
            (
                "3.13",
                include_str!("../../tests/fixtures/apisix/openid-connect-3.13.json"),
            ),
            (
                "3.18",
                include_str!("../../tests/fixtures/apisix/openid-connect-3.18.json"),
            ),
        ] {
            let c = PluginConfig::parse_str(text)
                .unwrap_or_else(|e| panic!("APISIX {name}'s stored config refused: {e}"));
            assert!(!c.bearer_only && c.session.is_some(), "{name}");
            assert_eq!(c.timeout, 3);
        }
    }

    #[test]
    fn apisix_defaults_one_by_one() {
        // Each attribute APISIX fills in, at its default, alone.
        for (k, v) in [
            ("accept_unsupported_alg", json!(true)),
            ("accept_unsupported_alg", json!(false)),
            ("accept_none_alg", json!(false)),
            ("client_jwt_assertion_expires_in", json!(60)),
            ("jwt_verification_cache_ignore", json!(false)),
            ("use_nonce", json!(false)),
            ("force_reauthorize", json!(false)),
            ("introspection_interval", json!(0)),
            ("ssl_verify", json!(false)),
            ("use_jwks", json!(false)),
            ("set_raw_id_token_header", json!(false)),
        ] {
            let mut v2 = minimal();
            v2[k] = v.clone();
            assert!(PluginConfig::parse(&v2).is_ok(), "{k}: {v}");
        }
        // What asks for something this gateway does not do is still
        // refused, by name.
        let mut v = minimal();
        v["jwt_verification_cache_ignore"] = json!(true);
        v["accept_none_alg"] = json!(true);
        v["client_jwt_assertion_expires_in"] = json!("60");
        assert_eq!(
            fields(v),
            [
                "accept_none_alg",
                "client_jwt_assertion_expires_in",
                "jwt_verification_cache_ignore"
            ]
        );
    }

    #[test]
    fn session_defaults() {
        let mut v = minimal();
        v["bearer_only"] = json!(false);
        v["session"] = json!({"secret": "0123456789abcdef"});
        let c = PluginConfig::parse(&v).unwrap();
        let s = c.session.unwrap();
        assert_eq!(s.secret.expose(), "0123456789abcdef");
        assert_eq!(s.cookie_name, "session");
        assert_eq!(s.cookie_path, "/");
        assert_eq!(s.cookie_domain, None);
        assert_eq!(s.cookie_secure, None);
        assert!(s.cookie_http_only);
        assert_eq!(s.cookie_same_site, SameSite::Lax);
        assert_eq!(s.idling_timeout, 900);
        assert_eq!(s.rolling_timeout, 3600);
        assert_eq!(s.absolute_timeout, 86400);
    }

    #[test]
    fn session_cookie_lifetime_is_the_absolute_timeout_alias() {
        let mut v = minimal();
        v["session"] = json!({"secret": "0123456789abcdef", "cookie": {"lifetime": 600}});
        let c = PluginConfig::parse(&v).unwrap();
        assert_eq!(c.session.unwrap().absolute_timeout, 600);
        v["session"] = json!({"secret": "0123456789abcdef", "cookie": {"lifetime": 600}, "absolute_timeout": 50});
        assert_eq!(
            PluginConfig::parse(&v)
                .unwrap()
                .session
                .unwrap()
                .absolute_timeout,
            50
        );
    }

    #[test]
    fn every_quickstart_route_parses_once_a_session_secret_is_filled_in() {
        let disc =
            "http://192.168.42.145:8080/realms/quickstart-realm/.well-known/openid-configuration";
        let base = json!({
            "client_id": "apisix-quickstart-client",
            "client_secret": "bSaIN3MV1YynmtXvU8lKkfeY0iwpr9cH",
            "discovery": disc,
            "scope": "openid profile",
            "redirect_uri": "http://localhost:9080/anything/callback"
        });
        let mut variants = vec![];
        let mut code = base.clone();
        code["bearer_only"] = json!(false);
        variants.push(code.clone());
        code["use_pkce"] = json!(true);
        variants.push(code);
        let mut jwks = base.clone();
        jwks["use_jwks"] = json!(true);
        variants.push(jwks);
        let mut intro = base.clone();
        intro["bearer_only"] = json!(true);
        variants.push(intro);
        for mut v in variants {
            let bearer_only = v["bearer_only"] == json!(true);
            if !bearer_only {
                // As written in the tutorial: no session block.
                assert_eq!(fields(v.clone()), vec!["session.secret"]);
                v["session"] = json!({"secret": "generated-by-the-sidecar-0123"});
            }
            let c = PluginConfig::parse(&v).unwrap();
            assert_eq!(c.scope, "openid profile");
            assert_eq!(
                c.redirect_uri.as_deref(),
                Some("http://localhost:9080/anything/callback")
            );
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let v = json!({
            "client_secret": 5,
            "scope": true,
            "timeout": 0,
            "bearer_only": "yes",
            "unauth_action": "allow",
            "introspection_endpoint_auth_method": "magic",
            "session": {"secret": "short", "cookie_same_site": "Sometimes", "colour": "blue"},
            "claim_validator": {"audience": {"required": "no"}, "issuer": {"valid_issuers": "x"}},
            "required_scopes": "read",
            "introspection_addon_headers": ["X-Ok", "Bad: header"],
            "authorization_params": {"prompt": "login", "nested": {"a": 1}},
            "unknown_thing": 1,
            "proxy_opts": {},
        });
        let f = fields(v);
        for want in [
            "client_id",
            "discovery",
            "client_secret",
            "scope",
            "timeout",
            "bearer_only",
            "unauth_action",
            "introspection_endpoint_auth_method",
            "session.secret",
            "session.cookie_same_site",
            "session.colour",
            "claim_validator.audience.required",
            "claim_validator.issuer.valid_issuers",
            "required_scopes",
            "introspection_addon_headers",
            "authorization_params.nested",
            "unknown_thing",
            "proxy_opts",
        ] {
            assert!(
                f.contains(&want.to_string()),
                "missing error for {want}: {f:?}"
            );
        }
    }

    #[test]
    fn messages_name_the_attribute_and_the_cause() {
        let mut v = minimal();
        v["timeout"] = json!(0);
        v["par"] = json!({"enabled": true});
        v["foo"] = json!(1);
        let e = PluginConfig::parse(&v).unwrap_err().to_string();
        assert!(e.contains("property \"timeout\" must be at least 1"), "{e}");
        assert!(
            e.contains("property \"par.enabled\" true is not supported"),
            "{e}"
        );
        assert!(
            e.contains("property \"foo\" is not a known attribute"),
            "{e}"
        );
    }

    #[test]
    fn required_attributes() {
        assert_eq!(
            fields(json!({})),
            vec!["client_id", "discovery", "client_secret", "session.secret"]
        );
        assert_eq!(
            fields(
                json!({"client_id": "c", "discovery": "http://x/.well-known/openid-configuration", "bearer_only": true})
            ),
            vec!["client_secret"]
        );
    }

    #[test]
    fn client_secret_is_optional_for_local_verification_and_pkce() {
        let disc = "http://idp/.well-known/openid-configuration";
        for v in [
            json!({"client_id": "c", "discovery": disc, "bearer_only": true, "use_jwks": true}),
            json!({"client_id": "c", "discovery": disc, "bearer_only": true,
                   "public_key": P256_PEM}),
            json!({"client_id": "c", "discovery": disc, "use_pkce": true,
                   "session": {"secret": "0123456789abcdef"}}),
        ] {
            let c = PluginConfig::parse(&v).unwrap();
            assert!(c.client_secret.is_none());
        }
        // use_jwks without bearer_only still logs in, which needs the secret.
        assert_eq!(
            fields(
                json!({"client_id": "c", "discovery": disc, "use_jwks": true,
                          "session": {"secret": "0123456789abcdef"}})
            ),
            vec!["client_secret"]
        );
    }

    #[test]
    fn none_and_hmac_algorithms_are_refused() {
        let mut v = minimal();
        v["accept_none_alg"] = json!(true);
        v["token_signing_alg_values_expected"] = json!("RS256,none");
        let e = errors(v);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e.iter().any(|e| e.field == "accept_none_alg"));
        assert!(e[0].message.contains("unsigned") || e[1].message.contains("unsigned"));
        let mut v = minimal();
        v["token_signing_alg_values_expected"] = json!(["HS256"]);
        assert_eq!(fields(v), vec!["token_signing_alg_values_expected"]);
        let mut v = minimal();
        v["accept_none_alg"] = json!(false);
        v["token_signing_alg_values_expected"] = json!("RS256 ES256");
        let c = PluginConfig::parse(&v).unwrap();
        assert_eq!(
            c.token_signing_alg_values_expected,
            vec![Alg::RS256, Alg::ES256]
        );
    }

    #[test]
    fn claim_schema_is_compiled_or_refused_by_keyword() {
        let mut v = minimal();
        v["claim_schema"] = json!({"properties": {"groups": {"contains": {"const": "staff"}}}});
        let c = PluginConfig::parse(&v).unwrap();
        let s = c.claim_schema.unwrap();
        assert!(s.check(&json!({"groups": ["staff"]})).is_ok());
        assert!(s.check(&json!({"groups": []})).is_err());
        let mut v = minimal();
        v["claim_schema"] = json!(null);
        assert_eq!(PluginConfig::parse(&v).unwrap().claim_schema, None);
        let mut v = minimal();
        v["claim_schema"] = json!({"patternProperties": {}, "format": "email"});
        let e = errors(v);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].field, "claim_schema");
        assert_eq!(
            e[1].to_string(),
            "property \"claim_schema\" keyword \"patternProperties\" is not supported (at /)"
        );
    }

    #[test]
    fn unsupported_apisix_features_are_named() {
        for k in ["proxy_opts", "cache_segment", "client_rsa_private_key"] {
            let mut v = minimal();
            v[k] = json!({});
            let e = errors(v);
            assert_eq!(e.len(), 1);
            assert_eq!(e[0].field, k);
            assert!(e[0].message.contains("not supported"), "{:?}", e[0]);
        }
        // PAR and DPoP (APISIX 3.18): switched off as APISIX's defaults are.
        let mut v = minimal();
        v["par"] = json!({"enabled": false});
        v["dpop"] = json!({"enabled": false, "signing_alg": "ES256"});
        assert!(PluginConfig::parse(&v).is_ok());
        v["par"] = json!({"enabled": true, "endpoint": "https://idp/par"});
        v["dpop"] = json!({"private_key": "k"});
        assert_eq!(fields(v), ["par.enabled", "dpop.private_key"]);
        let mut v = minimal();
        v["session"] = json!({"secret": "0123456789abcdef", "storage": "redis", "redis": {}});
        let e = errors(v);
        assert_eq!(
            e.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(),
            vec!["session.storage", "session.redis"]
        );
        assert!(e.iter().all(|e| e.message.contains("not supported")));
    }

    #[test]
    fn urls_are_checked() {
        let mut v = minimal();
        v["discovery"] = json!("not a url");
        v["introspection_endpoint"] = json!("ftp://idp/introspect");
        v["redirect_uri"] = json!("/anything/callback");
        v["post_logout_redirect_uri"] = json!("//evil.example/x");
        assert_eq!(
            fields(v),
            vec![
                "discovery",
                "post_logout_redirect_uri",
                "introspection_endpoint"
            ]
        );
    }

    #[test]
    fn empty_valid_issuers_is_refused() {
        let mut v = minimal();
        v["claim_validator"] = json!({"issuer": {"valid_issuers": []}});
        let e = errors(v);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].field, "claim_validator.issuer.valid_issuers");
        assert!(e[0].message.contains("at least one issuer"), "{e:?}");
    }

    #[test]
    fn values_are_read() {
        let mut v = minimal();
        v["ssl_verify"] = json!("no");
        v["timeout"] = json!(10);
        v["unauth_action"] = json!("pass");
        v["introspection_endpoint_auth_method"] = json!("client_secret_post");
        v["authorization_params"] = json!({"prompt": "login", "max_age": 60, "x": true});
        v["required_scopes"] = json!(["read", "write"]);
        v["introspection_addon_headers"] = json!(["X-Tenant"]);
        v["claim_validator"] = json!({"issuer": {"valid_issuers": ["a", "b"]},
                                       "audience": {"claim": "azp", "required": true, "match_with_client_id": true}});
        let c = PluginConfig::parse(&v).unwrap();
        assert!(!c.ssl_verify);
        assert_eq!(c.timeout, 10);
        assert_eq!(c.unauth_action, UnauthAction::Pass);
        assert_eq!(
            c.introspection_endpoint_auth_method,
            ClientAuthMethod::ClientSecretPost
        );
        assert_eq!(
            c.authorization_params,
            vec![
                ("max_age".to_string(), "60".to_string()),
                ("prompt".to_string(), "login".to_string()),
                ("x".to_string(), "true".to_string())
            ]
        );
        assert_eq!(c.required_scopes, vec!["read", "write"]);
        assert_eq!(c.introspection_addon_headers, vec!["X-Tenant"]);
        assert_eq!(
            c.claim_validator.valid_issuers,
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(c.claim_validator.audience.claim, "azp");
        assert!(c.claim_validator.audience.required);
        assert!(c.claim_validator.audience.match_with_client_id);
    }

    #[test]
    fn nulls_count_as_absent() {
        let mut v = minimal();
        v["scope"] = Value::Null;
        assert_eq!(PluginConfig::parse(&v).unwrap().scope, "openid");
    }

    #[test]
    fn not_an_object_or_not_json() {
        assert_eq!(fields(json!([1, 2])), vec!["openid-connect"]);
        let e = PluginConfig::parse_str("{not json").unwrap_err();
        assert!(e.to_string().contains("not valid JSON"));
    }

    #[test]
    fn secrets_do_not_reach_debug_output() {
        let mut v = minimal();
        v["client_secret"] = json!("very-secret-client-secret");
        v["session"] = json!({"secret": "very-secret-session-secret"});
        let c = PluginConfig::parse(&v).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("very-secret"), "{dbg}");
        assert!(dbg.contains("[redacted]"));
    }
}
