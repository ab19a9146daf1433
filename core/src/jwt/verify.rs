//! Verification of a bearer JWT (JWS compact serialization).

use std::fmt;

use serde_json::{Map, Value};

use super::alg::Alg;
use super::b64;
use super::keys::{Jwk, Jwks};

/// Longest token accepted, in bytes. Real access tokens are a few KB;
/// anything this large is refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// `claim_validator.audience` of the plugin, with the client id it may be
/// compared to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudiencePolicy {
    /// The claim that holds the audience (APISIX default `aud`).
    pub claim: String,
    /// The claim must be present (APISIX `required`, default false).
    pub required: bool,
    /// The claim (a string, or an array of strings) must equal or contain
    /// `client_id`. Implies `required`, as in APISIX.
    pub match_with_client_id: bool,
    /// The plugin's `client_id`.
    pub client_id: String,
}

impl Default for AudiencePolicy {
    /// APISIX's defaults: claim `aud`, nothing required.
    fn default() -> Self {
        AudiencePolicy {
            claim: "aud".to_string(),
            required: false,
            match_with_client_id: false,
            client_id: String::new(),
        }
    }
}

/// What a token must satisfy besides a valid signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// Accepted `alg` values (`token_signing_alg_values_expected`). Empty
    /// means every [`Alg`].
    pub allowed_algs: Vec<Alg>,
    /// Accepted `iss` values, compared exactly
    /// (`claim_validator.issuer.valid_issuers`, else the discovery
    /// document's issuer). `None`: the issuer is not checked (only for
    /// callers that check it elsewhere); `Some` of an empty list accepts
    /// no issuer at all (fail closed).
    pub issuers: Option<Vec<String>>,
    /// The audience rule.
    pub audience: AudiencePolicy,
    /// Scopes that must all appear in the `scope` claim (a space-separated
    /// string, or an array of strings).
    pub required_scopes: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds (APISIX
    /// `iat_slack`, default [`VerifyPolicy::DEFAULT_LEEWAY`]).
    pub leeway: u64,
}

impl VerifyPolicy {
    /// APISIX's default `iat_slack`.
    pub const DEFAULT_LEEWAY: u64 = 120;

    /// Whether `alg` is on the allow-list.
    pub fn allows(&self, alg: Alg) -> bool {
        self.allowed_algs.is_empty() || self.allowed_algs.contains(&alg)
    }
}

impl Default for VerifyPolicy {
    /// Every algorithm, no issuer check, APISIX's audience defaults, no
    /// scopes, 120 s leeway.
    fn default() -> Self {
        VerifyPolicy {
            allowed_algs: Vec::new(),
            issuers: None,
            audience: AudiencePolicy::default(),
            required_scopes: Vec::new(),
            leeway: Self::DEFAULT_LEEWAY,
        }
    }
}

/// A token whose signature and claims passed.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The payload's claims.
    pub claims: Map<String, Value>,
    /// The decoded payload bytes exactly as signed (for `X-Userinfo`).
    pub payload_json: Vec<u8>,
    /// `exp`, in unix seconds, if the token has one.
    pub exp: Option<u64>,
    /// The algorithm that signed it.
    pub alg: Alg,
}

/// Which part of a compact JWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// The protected header (first part).
    Header,
    /// The payload (second part).
    Payload,
    /// The signature (third part).
    Signature,
}

impl Segment {
    fn name(self) -> &'static str {
        match self {
            Segment::Header => "header",
            Segment::Payload => "payload",
            Segment::Signature => "signature",
        }
    }
}

/// Why a token was refused. `Display` is a short message without any part
/// of the token, fit for an `error_description`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// Not three dot-separated segments, or longer than [`MAX_TOKEN_LEN`].
    Malformed,
    /// Five segments: a JWE. Encrypted tokens are not supported.
    Encrypted,
    /// A segment is not unpadded base64url.
    Base64(Segment),
    /// The header is not a JSON object, or `alg`/`kid` are not strings.
    Header,
    /// The header has `crit`: no extension is understood, so the token
    /// must be refused (RFC 7515 section 4.1.11).
    CriticalHeader,
    /// `alg` is missing, unsupported (`none`, `HS256`...) or not on the
    /// allow-list.
    AlgNotAllowed,
    /// The header's `kid` matches no key (and no key is kid-less). The
    /// caller may refetch the JWKS once and verify again.
    UnknownKeyId,
    /// The token has no `kid` and several keys fit its algorithm, or
    /// several keys share its `kid` and fit.
    AmbiguousKey,
    /// No key fits the algorithm: the `kid` names a key of another type or
    /// with another `alg`, or (no `kid`) no key of that type exists.
    NoMatchingKey,
    /// The signature does not verify.
    BadSignature,
    /// The payload is not a JSON object.
    Payload,
    /// `exp`, `nbf` or `iat` is present but not a number.
    TimeClaimType(&'static str),
    /// `exp` is more than the leeway in the past.
    Expired,
    /// `nbf` is more than the leeway in the future.
    NotYetValid,
    /// `iat` is more than the leeway in the future.
    IssuedInFuture,
    /// Issuers are configured and the token has no string `iss`.
    MissingIssuer,
    /// `iss` is not one of the accepted issuers.
    IssuerMismatch,
    /// One of the required scopes is not granted. Holds the configured
    /// list, as APISIX prints it.
    InsufficientScope(Vec<String>),
    /// The audience claim is required (or `match_with_client_id` is set)
    /// and absent.
    AudienceMissing,
    /// `match_with_client_id` is set and the audience does not equal or
    /// contain the client id.
    AudienceMismatch,
}

/// What the caller does with a [`VerifyError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// 401 with `error="invalid_token"`.
    InvalidToken,
    /// 403: the token is valid but lacks a required scope.
    InsufficientScope,
    /// 403: the token is valid but not for this audience.
    AudienceMismatch,
    /// The `kid` is unknown: refetch the JWKS (once, rate-limited) and
    /// verify again; if it still fails, treat as [`Rejection::InvalidToken`].
    UnknownKeyId,
}

impl Rejection {
    /// The HTTP status to answer with (401 for `UnknownKeyId`, which is
    /// what it becomes when a refetch does not help).
    pub fn status(self) -> u16 {
        match self {
            Rejection::InvalidToken | Rejection::UnknownKeyId => 401,
            Rejection::InsufficientScope | Rejection::AudienceMismatch => 403,
        }
    }
}

impl VerifyError {
    /// How the caller should react.
    pub fn kind(&self) -> Rejection {
        match self {
            VerifyError::UnknownKeyId => Rejection::UnknownKeyId,
            VerifyError::InsufficientScope(_) => Rejection::InsufficientScope,
            VerifyError::AudienceMissing | VerifyError::AudienceMismatch => {
                Rejection::AudienceMismatch
            }
            _ => Rejection::InvalidToken,
        }
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Malformed => f.write_str("malformed token"),
            VerifyError::Encrypted => f.write_str("encrypted tokens not supported"),
            VerifyError::Base64(s) => write!(f, "token {} is not valid base64url", s.name()),
            VerifyError::Header => f.write_str("invalid token header"),
            VerifyError::CriticalHeader => f.write_str("unsupported critical header parameter"),
            VerifyError::AlgNotAllowed => f.write_str("token is signed by unexpected algorithm"),
            VerifyError::UnknownKeyId => f.write_str("signing key not found"),
            VerifyError::AmbiguousKey => f.write_str("kid absent and several keys match"),
            VerifyError::NoMatchingKey => f.write_str("no key for the token's algorithm"),
            VerifyError::BadSignature => f.write_str("jwt signature verification failed"),
            VerifyError::Payload => f.write_str("invalid token payload"),
            VerifyError::TimeClaimType(c) => write!(f, "'{c}' claim is not a number"),
            VerifyError::Expired => f.write_str("JWT expired"),
            VerifyError::NotYetValid => f.write_str("JWT not valid yet"),
            VerifyError::IssuedInFuture => f.write_str("JWT issued in the future"),
            VerifyError::MissingIssuer => f.write_str("'iss' claim is required"),
            VerifyError::IssuerMismatch => f.write_str("issuer not accepted"),
            VerifyError::InsufficientScope(scopes) => {
                write!(f, "required scopes {} not present", scopes.join(", "))
            }
            VerifyError::AudienceMissing => f.write_str("required audience claim not present"),
            VerifyError::AudienceMismatch => f.write_str("mismatched audience"),
        }
    }
}

impl std::error::Error for VerifyError {}

/// Verifies a compact JWS bearer token against `keys` and `policy` at unix
/// time `now`.
///
/// The steps, in order (each failure stops):
/// 1. three segments (five is a JWE: refused), at most [`MAX_TOKEN_LEN`];
/// 2. each segment is unpadded base64url;
/// 3. the header is a JSON object; no `crit`;
/// 4. `alg` is an [`Alg`] on the allow-list (`none`/`HS*` never are);
/// 5. one key: by `kid` if present, else the only key that fits `alg`;
/// 6. the signature over `header.payload` verifies;
/// 7. the payload is a JSON object;
/// 8. `exp`, `nbf`, `iat` against `now` with the leeway;
/// 9. issuer; 10. required scopes; 11. audience (scopes before audience,
///    as APISIX checks them).
pub fn verify(
    token: &str,
    keys: &Jwks,
    policy: &VerifyPolicy,
    now: u64,
) -> Result<VerifiedToken, VerifyError> {
    // 1. Compact serialization: header.payload.signature. A JWE has five
    //    parts; anything else is malformed. Counting first avoids decoding
    //    anything of an oversized or odd-shaped input.
    if token.len() > MAX_TOKEN_LEN {
        return Err(VerifyError::Malformed);
    }
    let parts: Vec<&str> = token.split('.').collect();
    let (header_b64, payload_b64, signature_b64) = match parts.as_slice() {
        [h, p, s] => (*h, *p, *s),
        [_, _, _, _, _] => return Err(VerifyError::Encrypted),
        _ => return Err(VerifyError::Malformed),
    };

    // 2. Every segment is strict unpadded base64url. An empty signature
    //    (the unsecured `alg: none` form) is refused at step 4 by the alg.
    let header_bytes = b64::url_strict(header_b64).ok_or(VerifyError::Base64(Segment::Header))?;
    let payload_bytes =
        b64::url_strict(payload_b64).ok_or(VerifyError::Base64(Segment::Payload))?;
    let signature =
        b64::url_strict(signature_b64).ok_or(VerifyError::Base64(Segment::Signature))?;

    // 3. The header is a JSON object. `crit` names extensions the
    //    recipient must understand; we understand none (RFC 7515 4.1.11),
    //    so its mere presence rejects the token.
    let header: Map<String, Value> =
        serde_json::from_slice(&header_bytes).map_err(|_| VerifyError::Header)?;
    if header.contains_key("crit") {
        return Err(VerifyError::CriticalHeader);
    }

    // 4. The algorithm is supported and allowed. The header's `alg` is
    //    never trusted on its own: it must be on the configured list, and
    //    since `none` and HMAC are not `Alg`s, a public key can never be
    //    used as an HMAC secret.
    let alg = match header.get("alg") {
        Some(Value::String(name)) => name
            .parse::<Alg>()
            .map_err(|_| VerifyError::AlgNotAllowed)?,
        Some(_) => return Err(VerifyError::Header),
        None => return Err(VerifyError::AlgNotAllowed),
    };
    if !policy.allows(alg) {
        return Err(VerifyError::AlgNotAllowed);
    }

    // 5. Exactly one key, chosen by `kid` and compatible with `alg` (key
    //    type fits, and the key's own `alg`, if any, is the same).
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(VerifyError::Header),
    };
    let key = select_key(keys, alg, kid)?;

    // 6. The signature covers the ASCII bytes `header_b64.payload_b64`.
    let signing_input_len = header_b64.len() + 1 + payload_b64.len();
    let signing_input = token
        .get(..signing_input_len)
        .ok_or(VerifyError::Malformed)?;
    if !key.verify_signature(alg, signing_input.as_bytes(), &signature) {
        return Err(VerifyError::BadSignature);
    }

    // 7. The payload is a JSON object (the claims set).
    let claims: Map<String, Value> =
        serde_json::from_slice(&payload_bytes).map_err(|_| VerifyError::Payload)?;

    // 8. Time claims, each optional, each a number when present.
    let leeway = i128::from(policy.leeway);
    let now = i128::from(now);
    let exp = numeric_date(&claims, "exp")?;
    if let Some(exp) = exp {
        if now > exp + leeway {
            return Err(VerifyError::Expired);
        }
    }
    if let Some(nbf) = numeric_date(&claims, "nbf")? {
        if now + leeway < nbf {
            return Err(VerifyError::NotYetValid);
        }
    }
    if let Some(iat) = numeric_date(&claims, "iat")? {
        if iat > now + leeway {
            return Err(VerifyError::IssuedInFuture);
        }
    }

    // 9. Issuer, compared exactly, unless the caller checks it elsewhere.
    // An empty list accepts nothing.
    if let Some(issuers) = &policy.issuers {
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(VerifyError::MissingIssuer)?;
        if !issuers.iter().any(|i| i == iss) {
            return Err(VerifyError::IssuerMismatch);
        }
    }

    // 10. Required scopes, all in `scope`.
    check_scopes(&claims, &policy.required_scopes)?;

    // 11. Audience, as APISIX's claim_validator.audience.
    check_audience(&claims, &policy.audience)?;

    Ok(VerifiedToken {
        claims,
        payload_json: payload_bytes,
        exp: exp.map(|e| u64::try_from(e.max(0)).unwrap_or(u64::MAX)),
        alg,
    })
}

/// Step 5: the one key that may verify this token.
///
/// With a `kid`: the keys carrying that `kid`; if none does, the kid-less
/// keys (a PEM `public_key` matches any `kid`); if there are none either,
/// [`VerifyError::UnknownKeyId`]. Without a `kid`: every key. Of those,
/// exactly one must accept `alg`.
fn select_key<'a>(keys: &'a Jwks, alg: Alg, kid: Option<&str>) -> Result<&'a Jwk, VerifyError> {
    let all = keys.keys();
    let pool: Vec<&Jwk> = match kid {
        Some(kid) => {
            let named: Vec<&Jwk> = all.iter().filter(|k| k.kid() == Some(kid)).collect();
            if named.is_empty() {
                all.iter().filter(|k| k.kid().is_none()).collect()
            } else {
                named
            }
        }
        None => all.iter().collect(),
    };
    if pool.is_empty() {
        return Err(VerifyError::UnknownKeyId);
    }
    let mut fitting = pool.into_iter().filter(|k| k.accepts(alg));
    match (fitting.next(), fitting.next()) {
        (Some(key), None) => Ok(key),
        (Some(_), Some(_)) => Err(VerifyError::AmbiguousKey),
        (None, _) => Err(VerifyError::NoMatchingKey),
    }
}

/// A NumericDate claim (RFC 7519 section 2), floored to whole seconds.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i128>, VerifyError> {
    let value = match claims.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    if let Some(u) = value.as_u64() {
        return Ok(Some(i128::from(u)));
    }
    if let Some(i) = value.as_i64() {
        return Ok(Some(i128::from(i)));
    }
    match value.as_f64() {
        // Saturating float-to-int conversion; a finite JSON number.
        Some(f) if f.is_finite() => Ok(Some(f.floor() as i128)),
        _ => Err(VerifyError::TimeClaimType(name)),
    }
}

/// Step 10, usable on its own (e.g. on an introspection answer): every
/// `required` scope is in the `scope` claim, a space-separated string (what
/// Keycloak issues) or an array of strings. Nothing required → Ok.
pub fn check_scopes(claims: &Map<String, Value>, required: &[String]) -> Result<(), VerifyError> {
    if required.is_empty() {
        return Ok(());
    }
    let granted: Vec<&str> = match claims.get("scope") {
        Some(Value::String(s)) => s.split_ascii_whitespace().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if required.iter().all(|r| granted.contains(&r.as_str())) {
        Ok(())
    } else {
        Err(VerifyError::InsufficientScope(required.to_vec()))
    }
}

/// Step 11, usable on its own (e.g. on an introspection answer), as
/// APISIX's `claim_validator.audience`: absent (or null) while `required`
/// or `match_with_client_id` → [`VerifyError::AudienceMissing`]; with
/// `match_with_client_id`, a string must equal the client id and an array
/// must contain it, else [`VerifyError::AudienceMismatch`].
pub fn check_audience(
    claims: &Map<String, Value>,
    policy: &AudiencePolicy,
) -> Result<(), VerifyError> {
    let value = match claims.get(&policy.claim) {
        None | Some(Value::Null) => None,
        Some(v) => Some(v),
    };
    let Some(value) = value else {
        if policy.required || policy.match_with_client_id {
            return Err(VerifyError::AudienceMissing);
        }
        return Ok(());
    };
    if !policy.match_with_client_id {
        return Ok(());
    }
    let matches = match value {
        Value::String(s) => *s == policy.client_id,
        Value::Array(a) => a
            .iter()
            .any(|v| v.as_str() == Some(policy.client_id.as_str())),
        _ => false,
    };
    if matches {
        Ok(())
    } else {
        Err(VerifyError::AudienceMismatch)
    }
}
