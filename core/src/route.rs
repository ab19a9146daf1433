//! A route's plugin configuration, parsed once per config version, with
//! everything derived from it that the request path needs.

use crate::config::{ConfigErrors, PluginConfig};
use crate::jwt::{Alg, AudiencePolicy, Jwks, VerifyPolicy};
use crate::session::SessionKey;

/// The access token lifetime assumed when neither the token endpoint, the
/// token itself nor `access_token_expires_in` says (lua-resty-openidc's).
pub const DEFAULT_ACCESS_TOKEN_LIFETIME: u64 = 3600;

/// Everything the filter needs to decide a request on one route.
#[derive(Debug)]
pub struct Route {
    pub config: PluginConfig,
    /// Keys parsed from `public_key`, when the route has one.
    pub public_keys: Option<Jwks>,
    /// The allowed algorithms (the configured ones, else the default list).
    pub algs: Vec<Alg>,
    /// The session cookie key, derived once from `session.secret`.
    pub session_key: Option<SessionKey>,
    /// The route's `hosts` (APISIX patterns), from the route metadata:
    /// the request hosts a login may make its redirect URI from (see
    /// `login::host_allowed`). Empty: loopback hosts only.
    pub hosts: Vec<String>,
}

impl Route {
    /// Parses a route's plugin config (the JSON text from route metadata).
    pub fn from_json(json: &str) -> Result<Route, ConfigErrors> {
        let config = PluginConfig::parse_str(json)?;
        Route::new(config)
    }

    pub fn new(config: PluginConfig) -> Result<Route, ConfigErrors> {
        let public_keys = config.public_key.as_ref().map(|k| k.keys().clone());
        let algs = config.token_signing_alg_values_expected.clone();
        let session_key = config
            .session
            .as_ref()
            .map(|s| SessionKey::for_route(&s.secret, &config.discovery, &config.client_id));
        Ok(Route {
            config,
            public_keys,
            algs,
            session_key,
            hosts: Vec::new(),
        })
    }

    /// The verification policy for tokens on this route. `discovery_issuer`
    /// is the provider's issuer, used when `claim_validator.issuer` does
    /// not list issuers. The issuer is always checked: with neither, no
    /// issuer is accepted.
    pub fn policy(&self, discovery_issuer: Option<&str>) -> VerifyPolicy {
        let c = &self.config;
        let issuers = match &c.claim_validator.valid_issuers {
            Some(list) => list.clone(),
            None => discovery_issuer
                .map(|i| vec![i.to_string()])
                .unwrap_or_default(),
        };
        VerifyPolicy {
            allowed_algs: self.algs.clone(),
            issuers: Some(issuers),
            audience: AudiencePolicy {
                claim: c.claim_validator.audience.claim.clone(),
                required: c.claim_validator.audience.required,
                match_with_client_id: c.claim_validator.audience.match_with_client_id,
                client_id: c.client_id.clone(),
            },
            required_scopes: c.required_scopes.clone(),
            leeway: c.iat_slack,
        }
    }

    /// The upstream header carrying the access token (`X-Access-Token`, or
    /// `Authorization` per `access_token_in_authorization_header`), if the
    /// route sets one.
    pub fn access_token_header(&self, token: &str) -> Option<(&'static str, String)> {
        let c = &self.config;
        if !c.set_access_token_header {
            None
        } else if c.access_token_in_authorization_header {
            Some(("authorization", format!("Bearer {token}")))
        } else {
            Some(("x-access-token", token.to_string()))
        }
    }

    /// `X-Userinfo` (base64 of the JSON), if the route sets it.
    pub fn userinfo_header(&self, json: &[u8]) -> Option<(&'static str, String)> {
        use base64::Engine as _;
        self.config.set_userinfo_header.then(|| {
            (
                "x-userinfo",
                base64::engine::general_purpose::STANDARD.encode(json),
            )
        })
    }

    /// When an access token issued at `now` expires, always known (so a
    /// refused refresh ends a stolen session): the token endpoint's
    /// `expires_in`, else the token's own `exp` (a JWT's, read unverified:
    /// it came from the token endpoint), else `access_token_expires_in`,
    /// else [`DEFAULT_ACCESS_TOKEN_LIFETIME`].
    pub fn access_expiry(&self, expires_in: Option<u64>, access_token: &str, now: u64) -> u64 {
        if let Some(s) = expires_in {
            return now.saturating_add(s);
        }
        let exp = crate::jwt::unverified_payload(access_token)
            .and_then(|p| p.get("exp").and_then(serde_json::Value::as_u64));
        exp.unwrap_or_else(|| {
            now.saturating_add(
                self.config
                    .access_token_expires_in
                    .unwrap_or(DEFAULT_ACCESS_TOKEN_LIFETIME),
            )
        })
    }

    /// The issuer must come from discovery: no `valid_issuers` configured.
    pub fn needs_discovery_issuer(&self) -> bool {
        self.config.claim_validator.valid_issuers.is_none()
    }
}
