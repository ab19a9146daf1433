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

use crate::route::Route;
use crate::session::{self, SessionKey};

/// How long a started login may take before its flow cookie is refused.
pub const FLOW_TTL: u64 = 600;

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

/// The redirect URI as sent in the authorization request, seen from the
/// callback request (the token request must repeat it exactly).
pub fn redirect_uri_at_callback(route: &Route, req: &RequestFacts<'_>) -> String {
    match &route.config.redirect_uri {
        Some(_) => redirect_uri(route, req),
        None => {
            let path = req.path.split('?').next().unwrap_or("/");
            format!("{}://{}{path}", req.scheme, req.host)
        }
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
        /// `Set-Cookie` header value of the flow cookie.
        set_cookie: String,
    },
}

/// Why a login cannot start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// The configured or discovered URL cannot be used.
    BadUrl(String),
}

/// The flow cookie's name for a `state`.
pub fn flow_cookie_name(route: &Route, state: &str) -> String {
    let base = route
        .config
        .session
        .as_ref()
        .map(|s| s.cookie_name.as_str())
        .unwrap_or("session");
    format!("{base}_flow_{state}")
}

/// Starts a login for a browser navigation without a session.
pub fn start(
    route: &Route,
    authorization_endpoint: &str,
    req: &RequestFacts<'_>,
    key: &SessionKey,
    random: &LoginRandom,
    now: u64,
) -> Result<Start, StartError> {
    let c = &route.config;
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

    let flow = FlowState {
        state: state.clone(),
        nonce,
        code_verifier: verifier,
        original_url: format!("{}://{}{}", req.scheme, req.host, req.path),
        created_at: now,
    };
    let name = flow_cookie_name(route, &state);
    let json = serde_json::to_vec(&flow).unwrap_or_default();
    let value = session::seal(key, name.as_bytes(), &json, random.seal_nonce);
    let mut attrs = match &c.session {
        Some(s) => session::CookieAttrs::from_config(s, req.scheme == "https"),
        None => session::CookieAttrs {
            path: "/".into(),
            domain: None,
            secure: req.scheme == "https",
            http_only: true,
            same_site: crate::config::SameSite::Lax,
            max_age: None,
        },
    };
    // The provider's redirect back is a cross-site top-level GET: Lax
    // cookies travel with it, Strict ones would not.
    if attrs.same_site == crate::config::SameSite::Strict {
        attrs.same_site = crate::config::SameSite::Lax;
    }
    attrs.max_age = Some(FLOW_TTL);
    Ok(Start::Authorize {
        location: url.to_string(),
        set_cookie: session::set_cookie(&name, &value, &attrs),
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
            &route(json!({})),
            AUTH,
            &facts("127.0.0.1:9080", "/anything/test?a=1"),
            &key(),
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
            set_cookie,
        } = start(
            &r,
            AUTH,
            &facts("localhost:9080", "/anything/test"),
            &key(),
            &random(),
            NOW,
        )
        .unwrap()
        else {
            panic!("expected Authorize")
        };
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
            set_cookie,
        } = start(
            &r,
            AUTH,
            &facts("localhost:9080", "/anything/test"),
            &key(),
            &random(),
            NOW,
        )
        .unwrap()
        else {
            panic!("expected Authorize")
        };
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
        let Start::Authorize { set_cookie, .. } = start(
            &r,
            AUTH,
            &facts("localhost:9080", "/x"),
            &key(),
            &random(),
            NOW,
        )
        .unwrap() else {
            panic!()
        };
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
        let f = facts("localhost:9080", "/anything/callback?code=c&state=s");
        assert_eq!(
            redirect_uri_at_callback(&r, &f),
            "http://localhost:9080/anything/callback"
        );

        // APISIX's default: the protected path + /.apisix/redirect, which
        // is itself the redirect URI when the provider sends the browser
        // back (not suffixed twice).
        let r = route(json!({"redirect_uri": null}));
        assert!(is_callback(&r, "/app/.apisix/redirect"));
        assert!(!is_callback(&r, "/app"));
        let f = facts("gw", "/app/.apisix/redirect?code=c&state=s");
        assert_eq!(
            redirect_uri_at_callback(&r, &f),
            "http://gw/app/.apisix/redirect"
        );
        assert_eq!(
            redirect_uri(&r, &facts("gw", "/app")),
            redirect_uri_at_callback(&r, &f)
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
        let Ok(Start::Authorize { set_cookie, .. }) = start(&r, AUTH, &f, &key(), &random(), NOW)
        else {
            panic!("a login starts")
        };
        assert!(set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    }
}
