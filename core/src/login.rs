//! The start of a browser login (authorization code flow, RFC 6749 4.1,
//! with PKCE, RFC 7636): who gets sent to the provider, where, and the
//! short-lived flow state kept in its own encrypted cookie until the
//! callback.
//!
//! The flow cookie is named after the `state` (`<cookie_name>_flow_<state>`),
//! so two tabs that start logins at once each find their own at the
//! callback. Its value is sealed like the session (see [`crate::session`])
//! with the cookie name as associated data.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use url::Url;

use crate::config::SessionConfig;
use crate::route::Route;
use crate::session::{self, SessionKey};

/// A route that logs browsers in: `bearer_only: false`, with the session
/// config and key a login needs. [`LoginRoute::of`] is the one check; what
/// takes a `LoginRoute` never asks again whether the session is there.
#[derive(Clone, Copy)]
pub struct LoginRoute<'a> {
    pub route: &'a Route,
    pub session: &'a SessionConfig,
    pub key: &'a SessionKey,
}

impl<'a> LoginRoute<'a> {
    /// The login side of `route`, or `None` when it does not log browsers
    /// in (`bearer_only`, or no `session.secret`).
    pub fn of(route: &'a Route) -> Option<LoginRoute<'a>> {
        match (&route.config.session, &route.session_key) {
            (Some(session), Some(key)) if !route.config.bearer_only => Some(LoginRoute {
                route,
                session,
                key,
            }),
            _ => None,
        }
    }
}

impl std::ops::Deref for LoginRoute<'_> {
    type Target = Route;
    fn deref(&self) -> &Route {
        self.route
    }
}

/// How long a started login may take before its flow cookie is refused.
pub const FLOW_TTL: u64 = 600;

/// Flow cookies a browser keeps at most: starting one more login expires
/// the oldest (see [`flow_index_name`]), so pages that start logins in a
/// loop cannot pile up cookies until every request is too large (431).
pub const MAX_FLOWS: usize = 4;

/// The longest original URL a flow keeps (bytes); a longer one is replaced
/// by the host's `/`, so a flow cookie stays well under a browser's 4 KB.
pub const MAX_ORIGINAL_URL: usize = 1536;

/// The random bytes one login start needs: `state`, `nonce`, PKCE
/// verifier, and the flow cookie's AES-GCM nonce.
pub struct LoginRandom {
    pub state: [u8; 16],
    pub nonce: [u8; 16],
    pub verifier: [u8; 32],
    pub seal_nonce: [u8; 12],
}

/// What a request looks like to the login flow.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// `http` or `https` as the client sees it.
    pub scheme: &'a str,
    /// The `Host` / `:authority` the client used.
    pub host: &'a str,
    /// Path and query.
    pub path: &'a str,
    pub accept: Option<&'a str>,
    /// The request's cookies (the flow index is read at a login start).
    pub cookies: &'a [(String, String)],
}

/// A browser navigation asks for HTML; API clients (curl, fetch) do not.
pub fn is_browser_navigation(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|part| {
            part.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/html"))
        })
    })
}

/// The redirect URI for a request: the configured one (a path is taken on
/// the request's own scheme and host), else APISIX's default, the request
/// path with `/.apisix/redirect` appended.
pub fn redirect_uri(route: &Route, req: &RequestFacts<'_>) -> String {
    let base = format!("{}://{}", req.scheme, req.host);
    match &route.config.redirect_uri {
        Some(u) if u.starts_with('/') => format!("{base}{u}"),
        Some(u) => u.clone(),
        None => {
            let path = req.path.split('?').next().unwrap_or("/");
            let path = path.strip_suffix('/').unwrap_or(path);
            format!("{base}{path}/.apisix/redirect")
        }
    }
}

/// Whether the redirect URI is made from the request's own host (no
/// `redirect_uri`, or a path).
pub fn redirect_uses_request_host(route: &Route) -> bool {
    route
        .config
        .redirect_uri
        .as_deref()
        .is_none_or(|u| u.starts_with('/'))
}

/// Whether a request's `Host` may become the host of the redirect URI
/// (when [`redirect_uses_request_host`]): one of the route's `hosts`
/// (APISIX patterns: exact, or `*.example.com` for any subdomain), or a
/// loopback name (`localhost`, `127.0.0.0/8`, `[::1]`): a code sent to a
/// loopback redirect URI stays on the user's own machine, so no one else
/// can have it issued there (RFC 8252 7.3 treats loopback the same way).
/// Any other host is the attacker's choice on a host-less route: the
/// provider would send the victim's code to the attacker's host.
pub fn host_allowed(route: &Route, authority: &str) -> bool {
    let host = host_name(authority);
    // Only a plain host name or address: a `/`, `?`, `#` or `@` would make
    // the redirect URI's host something else than what is compared here
    // (`evil.example/.apps.example` ends like `*.apps.example`).
    let plain = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        host.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    };
    if host.is_empty() || !plain {
        return false;
    }
    if host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
    {
        return true;
    }
    route.hosts.iter().any(|pattern| {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => host == pattern,
        }
    })
}

/// The host of an authority (`Host` header value), lower case, without
/// port or trailing dot.
fn host_name(authority: &str) -> String {
    let host = if authority.starts_with('[') {
        match authority.find(']') {
            Some(i) => &authority[..=i],
            None => authority,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Refuses a login whose redirect URI would be made from a host the route
/// does not serve (see [`host_allowed`]).
pub fn check_host(route: &Route, req: &RequestFacts<'_>) -> Result<(), StartError> {
    if redirect_uses_request_host(route) && !host_allowed(route, req.host) {
        return Err(StartError::ForeignHost(req.host.to_string()));
    }
    Ok(())
}

/// Whether a callback request arrived where its flow's redirect URI
/// points: same scheme, host, port and path. A code is only redeemed
/// with the redirect URI it was issued for, and only where that URI is.
pub fn is_flow_redirect(flow: &FlowState, req: &RequestFacts<'_>) -> bool {
    let path = req.path.split('?').next().unwrap_or("/");
    let (Ok(want), Ok(got)) = (
        Url::parse(&flow.redirect_uri),
        Url::parse(&format!("{}://{}{path}", req.scheme, req.host)),
    ) else {
        return false;
    };
    want.scheme() == got.scheme()
        && want.host_str() == got.host_str()
        && want.port_or_known_default() == got.port_or_known_default()
        && want.path() == got.path()
}

/// Where to send a browser whose host is not the redirect URI's: the same
/// path on the redirect URI's scheme and host (the flow cookie must be set
/// where the callback arrives). `None` when the hosts agree.
pub fn host_correction(
    route: &Route,
    req: &RequestFacts<'_>,
) -> Result<Option<String>, StartError> {
    let redirect = redirect_uri(route, req);
    let url =
        Url::parse(&redirect).map_err(|e| StartError::BadUrl(format!("redirect_uri: {e}")))?;
    let host = authority(&url);
    Ok((!host.eq_ignore_ascii_case(req.host))
        .then(|| format!("{}://{}{}", url.scheme(), host, req.path)))
}

/// The suffix APISIX appends to the request path when `redirect_uri` is
/// not configured.
pub const DEFAULT_REDIRECT_SUFFIX: &str = "/.apisix/redirect";

/// Whether a request path (without query) is the route's callback: the
/// configured `redirect_uri`'s path, else any path ending in
/// [`DEFAULT_REDIRECT_SUFFIX`] (as APISIX).
pub fn is_callback(route: &Route, path: &str) -> bool {
    match &route.config.redirect_uri {
        Some(u) => redirect_path(u) == path,
        None => path.ends_with(DEFAULT_REDIRECT_SUFFIX),
    }
}

fn redirect_path(uri: &str) -> String {
    if uri.starts_with('/') {
        uri.split('?').next().unwrap_or(uri).to_string()
    } else {
        Url::parse(uri)
            .map(|u| u.path().to_string())
            .unwrap_or_default()
    }
}

/// A page to start a login again from, for a callback that cannot finish:
/// the protected path the default redirect URI was made from, else the
/// callback path's parent.
pub fn start_again_path(path: &str) -> String {
    let path = path.split('?').next().unwrap_or("/");
    if let Some(p) = path.strip_suffix(DEFAULT_REDIRECT_SUFFIX) {
        return if p.is_empty() { "/".into() } else { p.into() };
    }
    match path.rfind('/') {
        Some(i) => path[..=i].to_string(),
        None => "/".into(),
    }
}

/// The flow state carried from the start of a login to its callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowState {
    #[serde(rename = "s")]
    pub state: String,
    #[serde(rename = "n")]
    pub nonce: String,
    /// PKCE verifier, when `use_pkce`.
    #[serde(rename = "v", default, skip_serializing_if = "Option::is_none")]
    pub code_verifier: Option<String>,
    /// Where the browser goes once logged in.
    #[serde(rename = "u")]
    pub original_url: String,
    /// The redirect URI sent in the authorization request: the callback
    /// must arrive there, and the token request repeats it.
    #[serde(rename = "r")]
    pub redirect_uri: String,
    #[serde(rename = "t")]
    pub created_at: u64,
}

/// How a login starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The browser is on another host than the redirect URI's: send it to
    /// the same path there first, so the flow cookie is set where the
    /// callback will arrive.
    HostCorrection { location: String },
    /// 302 to the provider, setting the flow cookie.
    Authorize {
        location: String,
        /// `Set-Cookie` header values: the flow cookie, the flow index,
        /// and expired older flow cookies.
        set_cookies: Vec<String>,
    },
}

/// Why a login cannot start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// The configured or discovered URL cannot be used.
    BadUrl(String),
    /// The redirect URI would be made from this request host, which is
    /// neither one of the route's `hosts` nor a loopback name.
    ForeignHost(String),
}

fn cookie_base(route: &Route) -> &str {
    route
        .config
        .session
        .as_ref()
        .map(|s| s.cookie_name.as_str())
        .unwrap_or("session")
}

/// The flow cookie's name for a `state`.
pub fn flow_cookie_name(route: &Route, state: &str) -> String {
    format!("{}_flow_{state}", cookie_base(route))
}

/// The flow index cookie (`<cookie_name>_flow_index`, on the session's
/// cookie path): the states of the browser's newest flows, `.`-separated.
/// Flow cookies live on the callback path only, so a login start cannot
/// see them; it reads this index to expire the flows beyond
/// [`MAX_FLOWS`].
pub fn flow_index_name(route: &Route) -> String {
    format!("{}_flow_index", cookie_base(route))
}

/// At a callback for `state`: the flow index's new value without it
/// (empty: expire the index), `None` when the request has no index.
pub fn flow_index_without(
    route: &Route,
    cookies: &[(String, String)],
    state: &str,
) -> Option<String> {
    let name = flow_index_name(route);
    let (_, value) = cookies.iter().find(|(k, _)| *k == name)?;
    let rest: Vec<&str> = value
        .split('.')
        .filter(|s| is_state(s) && *s != state)
        .collect();
    Some(rest.join("."))
}

/// Whether a text is a `state` this module makes (22 base64url characters).
fn is_state(s: &str) -> bool {
    s.len() == 22
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The path of a URL (the callback path of a redirect URI), `/` if none.
fn url_path(u: &str) -> String {
    Url::parse(u)
        .map(|u| u.path().to_string())
        .unwrap_or_else(|_| "/".into())
}

/// Starts a login for a browser navigation without a session.
pub fn start(
    login: &LoginRoute<'_>,
    authorization_endpoint: &str,
    req: &RequestFacts<'_>,
    random: &LoginRandom,
    now: u64,
) -> Result<Start, StartError> {
    let route = login.route;
    let key = login.key;
    let c = &route.config;
    check_host(route, req)?;
    if let Some(location) = host_correction(route, req)? {
        return Ok(Start::HostCorrection { location });
    }
    let redirect = redirect_uri(route, req);

    let state = URL_SAFE_NO_PAD.encode(random.state);
    let nonce = URL_SAFE_NO_PAD.encode(random.nonce);
    let verifier = c.use_pkce.then(|| URL_SAFE_NO_PAD.encode(random.verifier));

    let mut url = Url::parse(authorization_endpoint)
        .map_err(|e| StartError::BadUrl(format!("authorization_endpoint: {e}")))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &c.client_id)
            .append_pair("scope", &c.scope)
            .append_pair("redirect_uri", &redirect)
            .append_pair("state", &state)
            .append_pair("nonce", &nonce);
        if let Some(v) = &verifier {
            let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes()));
            q.append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
        }
        for (k, v) in &c.authorization_params {
            q.append_pair(k, v);
        }
    }

    let mut original_url = format!("{}://{}{}", req.scheme, req.host, req.path);
    if original_url.len() > MAX_ORIGINAL_URL {
        original_url = format!("{}://{}/", req.scheme, req.host);
    }
    let flow = FlowState {
        state: state.clone(),
        nonce,
        code_verifier: verifier,
        original_url,
        redirect_uri: redirect.clone(),
        created_at: now,
    };
    let name = flow_cookie_name(route, &state);
    let json = serde_json::to_vec(&flow).unwrap_or_default();
    let value = session::seal(key, name.as_bytes(), &json, random.seal_nonce);
    let mut attrs = session::CookieAttrs::from_config(login.session, req.scheme == "https");
    // The provider's redirect back is a cross-site top-level GET: Lax
    // cookies travel with it, Strict ones would not.
    if attrs.same_site == crate::config::SameSite::Strict {
        attrs.same_site = crate::config::SameSite::Lax;
    }
    attrs.max_age = Some(FLOW_TTL);
    // The index stays on the session's cookie path (a login start reads
    // it); the flow cookie goes only to the callback.
    let index_attrs = attrs.clone();
    attrs.path = url_path(&redirect);
    let mut set_cookies = vec![session::set_cookie(&name, &value, &attrs)];

    // The newest flows: this one and the MAX_FLOWS - 1 before it; older
    // ones are expired (on this callback path: where a route's flows live
    // when its redirect URI is fixed).
    let index_name = flow_index_name(route);
    let mut earlier: Vec<&str> = req
        .cookies
        .iter()
        .find(|(k, _)| *k == index_name)
        .map(|(_, v)| {
            v.split('.')
                .filter(|s| is_state(s) && *s != state)
                .collect()
        })
        .unwrap_or_default();
    earlier.dedup();
    let keep_from = earlier.len().saturating_sub(MAX_FLOWS - 1);
    let expired_attrs = session::CookieAttrs {
        max_age: Some(0),
        ..attrs.clone()
    };
    for old in &earlier[..keep_from] {
        set_cookies.push(session::set_cookie(
            &flow_cookie_name(route, old),
            "",
            &expired_attrs,
        ));
    }
    let mut index: Vec<&str> = earlier[keep_from..].to_vec();
    index.push(&state);
    set_cookies.push(session::set_cookie(
        &index_name,
        &index.join("."),
        &index_attrs,
    ));
    Ok(Start::Authorize {
        location: url.to_string(),
        set_cookies,
    })
}

/// Reads a flow cookie back (at the callback): `None` when it is missing,
/// tampered, foreign or older than [`FLOW_TTL`].
pub fn read_flow(
    route: &Route,
    key: &SessionKey,
    state: &str,
    cookies: &[(String, String)],
    now: u64,
) -> Option<FlowState> {
    let name = flow_cookie_name(route, state);
    let value = cookies.iter().find(|(k, _)| *k == name).map(|(_, v)| v)?;
    let json = session::open(key, name.as_bytes(), value).ok()?;
    let flow: FlowState = serde_json::from_slice(&json).ok()?;
    let fresh = now >= flow.created_at && now - flow.created_at <= FLOW_TTL;
    (flow.state == state && fresh).then_some(flow)
}

fn authority(u: &Url) -> String {
    match (u.host_str(), u.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;
    const AUTH: &str = "http://127.0.0.1:8080/realms/quickstart-realm/protocol/openid-connect/auth";

    fn route(extra: serde_json::Value) -> Route {
        let mut v = json!({
            "client_id": "apisix-quickstart-client",
            "client_secret": "s",
            "discovery": "http://127.0.0.1:8080/realms/quickstart-realm/.well-known/openid-configuration",
            "bearer_only": false,
            "scope": "openid profile",
            "redirect_uri": "http://localhost:9080/anything/callback",
            "session": {"secret": "0123456789abcdef0123"},
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        Route::from_json(&v.to_string()).unwrap()
    }

    fn key() -> SessionKey {
        SessionKey::derive(&Secret::new("0123456789abcdef0123"))
    }

    fn lk<'a>(r: &'a Route, key: &'a SessionKey) -> LoginRoute<'a> {
        LoginRoute {
            key,
            ..LoginRoute::of(r).unwrap()
        }
    }

    fn random() -> LoginRandom {
        LoginRandom {
            state: [1; 16],
            nonce: [2; 16],
            verifier: [3; 32],
            seal_nonce: [4; 12],
        }
    }

    fn facts<'a>(host: &'a str, path: &'a str) -> RequestFacts<'a> {
        RequestFacts {
            scheme: "http",
            host,
            path,
            accept: Some("text/html,application/xhtml+xml,*/*;q=0.8"),
            cookies: &[],
        }
    }

    fn query(location: &str) -> Vec<(String, String)> {
        Url::parse(location)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect()
    }

    fn param(q: &[(String, String)], k: &str) -> Option<String> {
        q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn browser_navigations_ask_for_html() {
        assert!(is_browser_navigation(Some(
            "text/html,application/xhtml+xml,*/*;q=0.8"
        )));
        assert!(is_browser_navigation(Some("TEXT/HTML; q=0.9")));
        assert!(!is_browser_navigation(Some("*/*")));
        assert!(!is_browser_navigation(Some("application/json")));
        assert!(!is_browser_navigation(None));
    }

    #[test]
    fn the_tutorial_host_mismatch_is_corrected_first() {
        // The tutorial opens 127.0.0.1 while its redirect_uri says localhost.
        let s = start(
            &lk(&route(json!({})), &key()),
            AUTH,
            &facts("127.0.0.1:9080", "/anything/test?a=1"),
            &random(),
            NOW,
        )
        .unwrap();
        assert_eq!(
            s,
            Start::HostCorrection {
                location: "http://localhost:9080/anything/test?a=1".into()
            }
        );
    }

    #[test]
    fn authorization_request_parameters() {
        let r = route(json!({"authorization_params": {"prompt": "login"}}));
        let Start::Authorize {
            location,
            set_cookies,
        } = start(
            &lk(&r, &key()),
            AUTH,
            &facts("localhost:9080", "/anything/test"),
            &random(),
            NOW,
        )
        .unwrap()
        else {
            panic!("expected Authorize")
        };
        let set_cookie = &set_cookies[0];
        assert!(location.starts_with(AUTH));
        let q = query(&location);
        assert_eq!(param(&q, "response_type").as_deref(), Some("code"));
        assert_eq!(
            param(&q, "client_id").as_deref(),
            Some("apisix-quickstart-client")
        );
        assert_eq!(param(&q, "scope").as_deref(), Some("openid profile"));
        assert_eq!(
            param(&q, "redirect_uri").as_deref(),
            Some("http://localhost:9080/anything/callback")
        );
        assert_eq!(param(&q, "prompt").as_deref(), Some("login"));
        let state = param(&q, "state").unwrap();
        assert_eq!(state, URL_SAFE_NO_PAD.encode([1u8; 16]));
        assert_eq!(
            param(&q, "nonce").unwrap(),
            URL_SAFE_NO_PAD.encode([2u8; 16])
        );
        assert!(
            param(&q, "code_challenge").is_none(),
            "no PKCE unless use_pkce"
        );
        assert!(
            set_cookie.starts_with(&format!("session_flow_{state}=")),
            "{set_cookie}"
        );
        assert!(
            set_cookie.contains("HttpOnly") && set_cookie.contains("Max-Age=600"),
            "{set_cookie}"
        );
    }

    #[test]
    fn pkce_sends_the_s256_challenge_of_the_stored_verifier() {
        let r = route(json!({"use_pkce": true}));
        let Start::Authorize {
            location,
            set_cookies,
        } = start(
            &lk(&r, &key()),
            AUTH,
            &facts("localhost:9080", "/anything/test"),
            &random(),
            NOW,
        )
        .unwrap()
        else {
            panic!("expected Authorize")
        };
        let set_cookie = &set_cookies[0];
        let q = query(&location);
        assert_eq!(param(&q, "code_challenge_method").as_deref(), Some("S256"));
        let state = param(&q, "state").unwrap();
        let (name, value) = set_cookie
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap();
        let cookies = vec![(name.to_string(), value.to_string())];
        let flow = read_flow(&r, &key(), &state, &cookies, NOW + 5).unwrap();
        let verifier = flow.code_verifier.unwrap();
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        assert_eq!(param(&q, "code_challenge").unwrap(), challenge);
        assert_eq!(flow.original_url, "http://localhost:9080/anything/test");
        assert_eq!(flow.nonce, param(&q, "nonce").unwrap());
    }

    #[test]
    fn flow_cookies_are_refused_when_foreign_stale_or_for_another_state() {
        let r = route(json!({}));
        let Start::Authorize { set_cookies, .. } = start(
            &lk(&r, &key()),
            AUTH,
            &facts("localhost:9080", "/x"),
            &random(),
            NOW,
        )
        .unwrap() else {
            panic!()
        };
        let set_cookie = &set_cookies[0];
        let (name, value) = set_cookie
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap();
        let state = URL_SAFE_NO_PAD.encode([1u8; 16]);
        let cookies = vec![(name.to_string(), value.to_string())];
        assert!(read_flow(&r, &key(), &state, &cookies, NOW + FLOW_TTL).is_some());
        assert!(read_flow(&r, &key(), &state, &cookies, NOW + FLOW_TTL + 1).is_none());
        assert!(read_flow(&r, &key(), "other-state", &cookies, NOW).is_none());
        let other_key = SessionKey::derive(&Secret::new("another-secret-of-16+"));
        assert!(read_flow(&r, &other_key, &state, &cookies, NOW).is_none());
        let mut tampered = value.to_string();
        tampered.pop();
        let cookies = vec![(name.to_string(), tampered)];
        assert!(read_flow(&r, &key(), &state, &cookies, NOW).is_none());
    }

    #[test]
    fn default_and_relative_redirect_uris() {
        let r = route(json!({"redirect_uri": null}));
        assert_eq!(
            redirect_uri(&r, &facts("gw:9080", "/anything/test/?x=1")),
            "http://gw:9080/anything/test/.apisix/redirect"
        );
        let r = route(json!({"redirect_uri": "/anything/callback"}));
        assert_eq!(
            redirect_uri(&r, &facts("gw:9080", "/anything/a")),
            "http://gw:9080/anything/callback"
        );
    }

    #[test]
    fn callbacks_are_recognised_by_path() {
        let r = route(json!({}));
        assert!(is_callback(&r, "/anything/callback"));
        assert!(!is_callback(&r, "/anything/callbackx"));
        assert!(!is_callback(&r, "/anything/test"));

        // APISIX's default: the protected path + /.apisix/redirect, which
        // is itself the redirect URI when the provider sends the browser
        // back (not suffixed twice).
        let r = route(json!({"redirect_uri": null}));
        assert!(is_callback(&r, "/app/.apisix/redirect"));
        assert!(!is_callback(&r, "/app"));
        assert_eq!(
            redirect_uri(&r, &facts("gw", "/app")),
            "http://gw/app/.apisix/redirect"
        );
    }

    #[test]
    fn a_failed_callback_links_to_a_protected_page() {
        assert_eq!(
            start_again_path("/app/x/.apisix/redirect?state=s"),
            "/app/x"
        );
        assert_eq!(start_again_path("/.apisix/redirect"), "/");
        assert_eq!(start_again_path("/anything/callback?code=c"), "/anything/");
        assert_eq!(start_again_path("/cb"), "/");
    }

    #[test]
    fn host_correction_keeps_path_and_query() {
        let r = route(json!({}));
        assert_eq!(
            host_correction(&r, &facts("127.0.0.1:9080", "/anything/test?a=1")).unwrap(),
            Some("http://localhost:9080/anything/test?a=1".to_string())
        );
        assert_eq!(
            host_correction(&r, &facts("LOCALHOST:9080", "/anything/test")).unwrap(),
            None
        );
    }

    #[test]
    fn the_flow_cookie_survives_the_cross_site_return_even_with_strict_sessions() {
        let r = route(
            json!({"session": {"secret": "0123456789abcdef0123", "cookie_same_site": "Strict"}}),
        );
        let f = facts("localhost:9080", "/anything/test");
        let Ok(Start::Authorize { set_cookies, .. }) =
            start(&lk(&r, &key()), AUTH, &f, &random(), NOW)
        else {
            panic!("a login starts")
        };
        assert!(set_cookies[0].contains("SameSite=Lax"), "{set_cookies:?}");
    }

    fn started(r: &Route, f: &RequestFacts<'_>, seed: u8) -> Vec<String> {
        let mut rnd = random();
        rnd.state = [seed; 16];
        match start(&lk(r, &key()), AUTH, f, &rnd, NOW) {
            Ok(Start::Authorize { set_cookies, .. }) => set_cookies,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flow_cookies_live_on_the_callback_path_and_only_the_newest_are_kept() {
        let r = route(json!({}));
        let mut jar: Vec<(String, String)> = Vec::new();
        let mut states = Vec::new();
        for seed in 1..=(MAX_FLOWS as u8 + 2) {
            let f = RequestFacts {
                cookies: &jar,
                ..facts("localhost:9080", "/anything/test")
            };
            let cookies = started(&r, &f, seed);
            let state = URL_SAFE_NO_PAD.encode([seed; 16]);
            assert!(cookies[0].starts_with(&format!("session_flow_{state}=")));
            assert!(
                cookies[0].contains("; Path=/anything/callback;"),
                "{cookies:?}"
            );
            let index = cookies.last().unwrap();
            assert!(index.starts_with("session_flow_index="), "{index}");
            assert!(index.contains("; Path=/;"), "{index}");
            let expired: Vec<&String> =
                cookies.iter().filter(|c| c.contains("Max-Age=0")).collect();
            if states.len() >= MAX_FLOWS {
                let oldest: &String = &states[states.len() - MAX_FLOWS];
                assert_eq!(expired.len(), 1, "{cookies:?}");
                assert!(expired[0].starts_with(&format!("session_flow_{oldest}=;")));
                assert!(expired[0].contains("Path=/anything/callback"));
            } else {
                assert!(expired.is_empty(), "{cookies:?}");
            }
            states.push(state);
            let value = index.split(';').next().unwrap().split_once('=').unwrap().1;
            assert_eq!(value.split('.').count(), states.len().min(MAX_FLOWS));
            jar = vec![("session_flow_index".into(), value.into())];
        }
        // Index entries that are not states are ignored (never a cookie name).
        let jar = vec![("session_flow_index".to_string(), "a;b.x=y".to_string())];
        let f = RequestFacts {
            cookies: &jar,
            ..facts("localhost:9080", "/anything/test")
        };
        assert_eq!(started(&r, &f, 9).len(), 2);
    }

    #[test]
    fn long_original_urls_are_not_kept() {
        let r = route(json!({}));
        let long = format!("/anything/test?pad={}", "a".repeat(MAX_ORIGINAL_URL));
        let f = facts("localhost:9080", &long);
        let cookies = started(&r, &f, 1);
        let (name, value) = cookies[0]
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap();
        let jar = vec![(name.to_string(), value.to_string())];
        let state = URL_SAFE_NO_PAD.encode([1u8; 16]);
        let flow = read_flow(&r, &key(), &state, &jar, NOW).unwrap();
        assert_eq!(flow.original_url, "http://localhost:9080/");
        assert!(cookies[0].len() < 1024, "{}", cookies[0].len());
        let f = facts("localhost:9080", "/anything/test?short=1");
        let cookies = started(&r, &f, 1);
        let (name, value) = cookies[0]
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap();
        let jar = vec![(name.to_string(), value.to_string())];
        let flow = read_flow(&r, &key(), &state, &jar, NOW).unwrap();
        assert_eq!(
            flow.original_url,
            "http://localhost:9080/anything/test?short=1"
        );
        assert_eq!(flow.redirect_uri, "http://localhost:9080/anything/callback");
    }

    #[test]
    fn the_request_host_makes_the_redirect_uri_only_when_the_route_serves_it() {
        let mut r = route(json!({"redirect_uri": null}));
        for host in [
            "localhost:9080",
            "LOCALHOST",
            "127.0.0.1:9080",
            "127.1.2.3",
            "[::1]:80",
        ] {
            assert!(check_host(&r, &facts(host, "/app")).is_ok(), "{host}");
        }
        for host in [
            "evil.example",
            "gw.example:9080",
            "",
            "localhost.evil.example",
        ] {
            assert_eq!(
                check_host(&r, &facts(host, "/app")),
                Err(StartError::ForeignHost(host.into()))
            );
            assert!(matches!(
                start(&lk(&r, &key()), AUTH, &facts(host, "/app"), &random(), NOW),
                Err(StartError::ForeignHost(_))
            ));
        }
        r.hosts = vec!["gw.example".into(), "*.apps.example".into()];
        for host in [
            "gw.example:9080",
            "GW.example.",
            "a.apps.example",
            "a.b.apps.example",
        ] {
            assert!(check_host(&r, &facts(host, "/app")).is_ok(), "{host}");
        }
        for host in [
            "evil.example",
            "apps.example",
            "xapps.example",
            "gw.example.evil",
            "evil.example/.apps.example",
            "evil.example?.apps.example",
            "evil.example#.apps.example",
            "evil.example@a.apps.example",
            "evil.example\\.apps.example",
        ] {
            assert!(check_host(&r, &facts(host, "/app")).is_err(), "{host}");
        }
        // A relative redirect_uri too; an absolute one never uses the Host.
        let r = route(json!({"redirect_uri": "/cb"}));
        assert!(check_host(&r, &facts("evil.example", "/app")).is_err());
        let r = route(json!({}));
        assert!(check_host(&r, &facts("evil.example", "/app")).is_ok());
    }

    #[test]
    fn callbacks_must_arrive_at_the_flows_redirect_uri() {
        let flow = FlowState {
            state: "s".into(),
            nonce: "n".into(),
            code_verifier: None,
            original_url: "/".into(),
            redirect_uri: "http://gw.example/app/.apisix/redirect".into(),
            created_at: NOW,
        };
        let at = |scheme: &'static str, host: &'static str, path: &'static str| RequestFacts {
            scheme,
            ..facts(host, path)
        };
        assert!(is_flow_redirect(
            &flow,
            &at("http", "gw.example", "/app/.apisix/redirect?code=c")
        ));
        assert!(is_flow_redirect(
            &flow,
            &at("http", "GW.example:80", "/app/.apisix/redirect")
        ));
        assert!(!is_flow_redirect(
            &flow,
            &at("http", "evil.example", "/app/.apisix/redirect")
        ));
        assert!(!is_flow_redirect(
            &flow,
            &at("https", "gw.example", "/app/.apisix/redirect")
        ));
        assert!(!is_flow_redirect(
            &flow,
            &at("http", "gw.example:8080", "/app/.apisix/redirect")
        ));
        assert!(!is_flow_redirect(
            &flow,
            &at("http", "gw.example", "/other/.apisix/redirect")
        ));
    }
}
