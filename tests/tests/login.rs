//! The browser login end to end: headless Chromium, the real gateway
//! (sidecar + Envoy with the filter), the test provider's login page and
//! httpbin. Each route is PUT as the APISIX + Keycloak tutorial writes it
//! ("Implement Authorization Code Grant"), with the test's free ports in
//! place of 9080/8080 and the local httpbin as the upstream.
//!
//! The flow under test (APISIX's `openid-connect` plugin): the browser opens
//! `http://127.0.0.1:<proxy>/anything/test`; the filter sends it to the
//! `redirect_uri`'s host (`localhost:<proxy>`), then to the provider's login
//! page with a per-state flow cookie; the provider sends it back to
//! `/anything/callback`; the filter exchanges the code, sets the `session`
//! cookie (chunked above 4000 bytes) and returns it to the original URL,
//! where httpbin echoes the identity headers.
//!
//! Cookies are per host, not per port: the gateway's `localhost` cookies
//! are read on another `localhost` origin, the provider's port
//! ([`Stack::localhost_cookies`]). Not httpbin's: the browser must not talk
//! to httpbin directly before the gateway needs it: Chromium can keep idle
//! sockets open to an origin it visited, each holding one of httpbin's two
//! sync workers, and the gateway's request then waits until the browser
//! closes (seen as a 10 s timeout of the login's click).

use std::time::{Duration, Instant};

use base64::Engine as _;
use integration_tests::browser::Browser;
use integration_tests::gateway::Gateway;
use integration_tests::http::request;
use integration_tests::provider::{CLIENT_ID, DEFAULT_CLIENT_SECRET, PASSWORD, USER};
use integration_tests::{
    get, tutorial_route, wait_for, Httpbin, Provider, ProviderOptions, Response, TestDir,
};
use serde_json::Value;

/// The test user's `sub` at the test provider.
const USER_SUB: &str = "5b1c7d3e-8f4a-4c2b-9e6d-0a1b2c3d4e5f";
/// Browser waits (navigations, elements).
const WAIT: Duration = Duration::from_secs(10);
/// Envoy's counter of the filter's calls to the provider.
const PROVIDER_CALLS: &str = "wasmcustom.openid_connect.provider.calls";
const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// One test's processes. Field order is drop order: the gateway goes
/// first, the log folder last.
struct Stack {
    gw: Gateway,
    httpbin: Httpbin,
    provider: Provider,
    dir: TestDir,
}

impl Stack {
    /// Starts the provider (with `options`), httpbin and the gateway, PUTs
    /// the tutorial route with `plugin_lines` (`{httpbin}` in them becomes
    /// httpbin's port) and waits until Envoy serves it.
    fn start(mut options: ProviderOptions, plugin_lines: &str) -> Stack {
        let dir = TestDir::for_current_test();
        // Node refuses request headers over 16 KB (431, an empty page): the
        // browser sends it every `localhost` cookie on the cookie-reading
        // page, large sessions included.
        options
            .env
            .push(("NODE_OPTIONS".into(), "--max-http-header-size=65536".into()));
        let provider = Provider::start(dir.path(), options);
        let httpbin = Httpbin::start(dir.path());
        let gw = Gateway::start(dir.path(), &[]);
        let lines = plugin_lines.replace("{httpbin}", &httpbin.port.to_string());
        let node = format!("127.0.0.1:{}", httpbin.port);
        let lines = format!("\"bearer_only\": false,\n{lines}");
        let body = tutorial_route(
            &lines,
            DEFAULT_CLIENT_SECRET,
            &provider.discovery_url(),
            &node,
            gw.proxy_port,
        );
        let r = gw.admin("PUT", "/apisix/admin/routes", Some(&body));
        assert_eq!(r.status, 201, "PUT route: {}", r.body);
        let s = Stack {
            gw,
            httpbin,
            provider,
            dir,
        };
        // A fresh gateway has no route (404) until this one arrives; a
        // browser navigation then starts a login (302).
        wait_for("the login route in Envoy", Duration::from_secs(10), || {
            let r = s.get_as("localhost", "/anything/test", &[("accept", HTML)]);
            (r.status == 302).then_some(())
        });
        s
    }

    fn port(&self) -> u16 {
        self.gw.proxy_port
    }

    /// `http://127.0.0.1:<proxy><path>`: where the tutorial's browser starts.
    fn ip_url(&self, path: &str) -> String {
        self.gw.url(path)
    }

    /// `http://localhost:<proxy><path>`: the redirect URI's host.
    fn local_url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.port())
    }

    /// A GET to the gateway as if addressed to `host:<proxy>` (no cookies,
    /// redirects not followed).
    fn get_as(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let host = format!("{host}:{}", self.port());
        let mut h = vec![("host", host.as_str())];
        h.extend_from_slice(headers);
        request("GET", &self.gw.url(path), &h, None).expect("the gateway answers")
    }

    fn provider_calls(&self) -> u64 {
        self.gw.envoy_stat(PROVIDER_CALLS)
    }

    fn stat(&self, name: &str) -> u64 {
        self.gw
            .envoy_stat(&format!("wasmcustom.openid_connect.{name}"))
    }

    /// Opens, in the current tab, a page on another `localhost` origin
    /// than the gateway's: the provider's 404 page outside its realm (it
    /// serves any number of connections; cookies are per host, not port).
    /// The path is under the callback's: flow cookies live there only.
    fn goto_localhost_elsewhere(&self, browser: &Browser) {
        browser.goto(&format!(
            "http://localhost:{}/anything/callback/cookie-jar",
            self.provider.port
        ));
    }

    /// Every `localhost` cookie of the browser (HttpOnly ones too).
    fn localhost_cookies(&self, browser: &Browser) -> Vec<(String, String)> {
        self.goto_localhost_elsewhere(browser);
        browser.cookies()
    }

    /// Opens `path` on 127.0.0.1 and waits for the provider's login form.
    fn start_login(&self, browser: &Browser, path: &str) {
        browser.goto(&self.ip_url(path));
        browser.wait_for_element("#kc-form-login", WAIT);
        let url = browser.current_url();
        assert!(
            url.starts_with(&self.provider.issuer()),
            "the login form is the provider's: {url}"
        );
    }

    /// Logs in on the provider's form (or, with an SSO session there, goes
    /// on without it) and waits to land on `localhost:<proxy><path>` with
    /// httpbin's answer; returns that answer.
    fn finish_login(&self, browser: &Browser, path: &str) -> Value {
        let want = self.local_url(path);
        if !browser.current_url().starts_with(&want) && browser.has_element("#kc-form-login") {
            browser.login(USER, PASSWORD);
        }
        wait_url_eq(browser, &want);
        httpbin_page(browser)
    }

    /// The whole login from 127.0.0.1: httpbin's answer at the original URL.
    fn login(&self, browser: &Browser, path: &str) -> Value {
        self.start_login(browser, path);
        self.finish_login(browser, path)
    }
}

/// Waits until the browser's URL is exactly `want`.
fn wait_url_eq(browser: &Browser, want: &str) {
    let start = Instant::now();
    loop {
        let url = browser.current_url();
        if url == want {
            return;
        }
        if start.elapsed() > WAIT {
            panic!(
                "browser: expected to be at {want}, still at {url} after {WAIT:?}; page:\n{:.3000}",
                browser.page_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// httpbin's JSON echo shown as the current page (Chromium shows JSON as
/// text); waits for it, panics with the URL and the page text.
fn httpbin_page(browser: &Browser) -> Value {
    let start = Instant::now();
    loop {
        let text = browser.page_text();
        let json = match (text.find('{'), text.rfind('}')) {
            (Some(a), Some(b)) if a < b => serde_json::from_str::<Value>(&text[a..=b]).ok(),
            _ => None,
        };
        if let Some(v) = json.filter(|v| v["headers"].is_object()) {
            return v;
        }
        if start.elapsed() > WAIT {
            panic!(
                "no httpbin JSON at {} after {WAIT:?}; page:\n{text:.3000}",
                browser.current_url()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Header `name` of httpbin's echo, as a string.
fn header<'a>(page: &'a Value, name: &str) -> &'a str {
    page["headers"][name]
        .as_str()
        .unwrap_or_else(|| panic!("httpbin saw no {name} header: {page:#}"))
}

/// An identity header that holds base64 (standard alphabet, as APISIX's
/// `ngx.encode_base64`) of a JSON object.
fn b64_json_header(page: &Value, name: &str) -> Value {
    let b64 = header(page, name);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_else(|e| panic!("{name} is not base64 ({e}): {b64}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{name} is not base64 of JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    })
}

/// The claims of a JWT (unverified).
fn jwt_claims(jwt: &str) -> Value {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts: {jwt}");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1])
        .unwrap_or_else(|e| panic!("JWT payload is not base64url ({e}): {jwt}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("JWT payload is not JSON ({e})"))
}

/// The identity a login must put on the upstream request, and none of the
/// gateway's own cookies; returns the access token.
fn assert_identity(page: &Value, s: &Stack) -> String {
    let access = header(page, "X-Access-Token").to_string();
    let at = jwt_claims(&access);
    assert_eq!(
        at["iss"],
        s.provider.issuer().as_str(),
        "access token: {at}"
    );
    assert_eq!(at["sub"], USER_SUB, "access token: {at}");
    let id = b64_json_header(page, "X-Id-Token");
    assert_eq!(id["sub"], USER_SUB, "X-Id-Token: {id}");
    assert_eq!(id["preferred_username"], USER, "X-Id-Token: {id}");
    assert_eq!(id["iss"], s.provider.issuer().as_str(), "X-Id-Token: {id}");
    let info = b64_json_header(page, "X-Userinfo");
    assert_eq!(info["sub"], USER_SUB, "X-Userinfo: {info}");
    let cookie = page["headers"]["Cookie"].as_str().unwrap_or("");
    let ours: Vec<&str> = cookie
        .split(';')
        .map(|c| c.trim().split('=').next().unwrap_or(""))
        .filter(|n| is_session(n) || n.starts_with("session_flow_"))
        .collect();
    assert!(
        ours.is_empty(),
        "the upstream must not see the gateway's cookies {ours:?}: Cookie: {cookie}"
    );
    access
}

fn names(cookies: &[(String, String)]) -> Vec<&str> {
    cookies.iter().map(|(n, _)| n.as_str()).collect()
}

/// The flow cookies (not the flow index).
fn flow_cookies(cookies: &[(String, String)]) -> Vec<&str> {
    names(cookies)
        .into_iter()
        .filter(|n| n.starts_with("session_flow_") && *n != "session_flow_index")
        .collect()
}

/// Whether `name` is the session cookie `session` or a chunk `session_<N>`.
fn is_session(name: &str) -> bool {
    name == "session"
        || name
            .strip_prefix("session_")
            .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
}

/// The session cookies, `(name, value length)`.
fn session_cookies(cookies: &[(String, String)]) -> Vec<(&str, usize)> {
    cookies
        .iter()
        .filter(|(n, _)| is_session(n))
        .map(|(n, v)| (n.as_str(), v.len()))
        .collect()
}

/// The two redirects a browser navigation to 127.0.0.1 gets, seen over
/// plain HTTP: to the redirect URI's host, then to the authorization
/// endpoint with a flow cookie named after the state. Returns the
/// authorization request's query.
fn authorization_redirects(s: &Stack) -> Vec<(String, String)> {
    let html = [("accept", HTML)];
    let r = s.get_as("127.0.0.1", "/anything/test?x=1", &html);
    assert_eq!(r.status, 302, "{}", r.body);
    assert_eq!(
        r.header("location"),
        Some(s.local_url("/anything/test?x=1").as_str()),
        "{:?}",
        r.headers
    );
    let r = s.get_as("localhost", "/anything/test?x=1", &html);
    assert_eq!(r.status, 302, "{}", r.body);
    let location = r.header("location").unwrap_or_default();
    let auth = format!("{}/protocol/openid-connect/auth", s.provider.issuer());
    assert!(location.starts_with(&format!("{auth}?")), "{location}");
    let query: Vec<(String, String)> = reqwest::Url::parse(location)
        .expect("an absolute Location")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let param = |k: &str| {
        query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {k} in {location}"))
    };
    assert_eq!(param("response_type"), "code");
    assert_eq!(param("client_id"), CLIENT_ID);
    assert_eq!(param("scope"), "openid profile");
    assert_eq!(param("redirect_uri"), s.local_url("/anything/callback"));
    assert!(!param("nonce").is_empty());
    let state = param("state");
    let flow = r
        .header_all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with(&format!("session_flow_{state}=")))
        .unwrap_or_else(|| panic!("a flow cookie for state {state}: {:?}", r.headers));
    for attr in ["HttpOnly", "SameSite=Lax", "Max-Age=600", "Path=/"] {
        assert!(flow.contains(attr), "{attr} in {flow}");
    }
    query
}

#[test]
fn login_lands_on_the_original_url_with_the_identity() {
    let s = Stack::start(ProviderOptions::default(), "");
    let query = authorization_redirects(&s);
    assert!(
        !query.iter().any(|(k, _)| k.starts_with("code_challenge")),
        "no PKCE unless use_pkce: {query:?}"
    );
    let browser = Browser::start(s.dir.path());
    // A cookie of someone else on localhost: the upstream still gets it.
    s.goto_localhost_elsewhere(&browser);
    browser.execute("document.cookie = 'theme=dark; path=/'; return null;");
    assert_eq!(names(&browser.cookies()), ["theme"]);

    // 127.0.0.1 → localhost → the provider's login form.
    let before = s.provider_calls();
    s.start_login(&browser, "/anything/test");
    let page = s.finish_login(&browser, "/anything/test");
    assert_eq!(
        page["url"],
        s.local_url("/anything/test").as_str(),
        "{page:#}"
    );
    assert_eq!(browser.response_status(), Some(200));
    let access = assert_identity(&page, &s);
    assert_eq!(
        page["headers"]["Cookie"], "theme=dark",
        "other cookies reach the upstream unchanged: {page:#}"
    );
    let calls = s.provider_calls();
    assert!(
        calls > before,
        "{PROVIDER_CALLS} counts the callback's provider calls (is the stat name right?)"
    );
    assert_eq!(s.stat("login.succeeded"), 1);

    // The session serves the next page without asking the provider.
    browser.goto(&s.local_url("/anything/other"));
    let page = httpbin_page(&browser);
    assert_eq!(browser.response_status(), Some(200), "{page:#}");
    assert_eq!(page["url"], s.local_url("/anything/other").as_str());
    assert_eq!(assert_identity(&page, &s), access, "the same access token");
    assert_eq!(
        s.provider_calls(),
        calls,
        "a signed-in request makes no provider call"
    );

    // The browser keeps one session cookie, and no flow cookie.
    let cookies = s.localhost_cookies(&browser);
    assert!(
        names(&cookies).contains(&"session"),
        "a session cookie: {:?}",
        names(&cookies)
    );
    assert!(
        flow_cookies(&cookies).is_empty(),
        "the flow cookie is cleared after the callback: {:?}",
        names(&cookies)
    );
}

#[test]
fn non_browser_request_without_a_session_gets_401() {
    let s = Stack::start(ProviderOptions::default(), "");
    // (Waiting for the route started a login: discovery is fetched.)
    let calls = s.provider_calls();
    for headers in [vec![], vec![("accept", "application/json")]] {
        let r = get(&s.ip_url("/anything/test"), &headers).expect("the gateway answers");
        assert_eq!(r.status, 401, "{headers:?}: {} {:?}", r.body, r.headers);
        assert!(r.header("location").is_none(), "{:?}", r.headers);
    }
    let r = s.get_as("localhost", "/anything/test", &[]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(s.provider_calls(), calls, "no provider call for a 401");
}

#[test]
fn wrong_password_stays_at_the_provider() {
    let s = Stack::start(ProviderOptions::default(), "");
    let browser = Browser::start(s.dir.path());
    s.start_login(&browser, "/anything/test");
    browser.login(USER, "not-the-password");
    browser.wait_for_element("#input-error", WAIT);
    let url = browser.current_url();
    assert!(
        url.starts_with(&s.provider.issuer()),
        "a wrong password stays at the provider: {url}"
    );
    assert!(
        browser.has_element("#kc-form-login"),
        "the form again: {}",
        browser.page_text()
    );
    assert!(
        browser
            .text_of("#input-error")
            .contains("Invalid username or password"),
        "{}",
        browser.page_text()
    );
    assert_eq!(s.stat("login.succeeded"), 0);
    // The right password still completes the same login.
    let page = s.finish_login(&browser, "/anything/test");
    assert_identity(&page, &s);
}

#[test]
fn two_tabs_log_in_independently() {
    let s = Stack::start(ProviderOptions::default(), "");
    let browser = Browser::start(s.dir.path());
    // Tab A and tab B both start a login.
    s.start_login(&browser, "/anything/a");
    assert_eq!(browser.new_tab(), 1);
    s.start_login(&browser, "/anything/b");
    // Two flows, two flow cookies (read in a third tab).
    assert_eq!(browser.new_tab(), 2);
    let cookies = s.localhost_cookies(&browser);
    assert_eq!(
        flow_cookies(&cookies).len(),
        2,
        "one flow cookie per tab: {:?}",
        names(&cookies)
    );

    // A logs in first, then B (with or without the form: the provider may
    // know the user already).
    browser.switch_to_tab(0);
    let a = s.finish_login(&browser, "/anything/a");
    assert_eq!(a["url"], s.local_url("/anything/a").as_str(), "{a:#}");
    assert_identity(&a, &s);
    browser.switch_to_tab(1);
    let b = s.finish_login(&browser, "/anything/b");
    assert_eq!(b["url"], s.local_url("/anything/b").as_str(), "{b:#}");
    assert_identity(&b, &s);
    assert_eq!(s.stat("login.succeeded"), 2);

    // Both tabs are signed in; no flow cookie is left.
    browser.switch_to_tab(0);
    browser.goto(&s.local_url("/anything/a-again"));
    let again = httpbin_page(&browser);
    assert_eq!(again["url"], s.local_url("/anything/a-again").as_str());
    assert_identity(&again, &s);
    browser.switch_to_tab(2);
    let cookies = s.localhost_cookies(&browser);
    assert!(
        flow_cookies(&cookies).is_empty() && !names(&cookies).contains(&"session_flow_index"),
        "both flow cookies and the flow index cleared: {:?}",
        names(&cookies)
    );
}

#[test]
fn pkce_login() {
    let s = Stack::start(ProviderOptions::default(), r#""use_pkce": true,"#);
    // The authorization request the filter sends browsers to, over plain
    // HTTP (the test provider's login page URL does not repeat it).
    let query = authorization_redirects(&s);
    let challenge = query.iter().find(|(k, _)| k == "code_challenge");
    assert!(
        challenge.is_some_and(|(_, v)| v.len() == 43),
        "an S256 challenge is 43 base64url characters: {query:?}"
    );
    assert!(
        query.contains(&("code_challenge_method".into(), "S256".into())),
        "{query:?}"
    );

    let browser = Browser::start(s.dir.path());
    let page = s.login(&browser, "/anything/test");
    assert_eq!(page["url"], s.local_url("/anything/test").as_str());
    assert_identity(&page, &s);
    assert_eq!(s.stat("login.succeeded"), 1);
}

#[test]
fn expired_access_token_is_refreshed_during_the_request() {
    const TTL: u64 = 3;
    let s = Stack::start(
        ProviderOptions {
            access_token_ttl: Some(TTL),
            ..Default::default()
        },
        "",
    );
    let browser = Browser::start(s.dir.path());
    let page = s.login(&browser, "/anything/test");
    let first = assert_identity(&page, &s);
    let exp = jwt_claims(&first)["exp"].as_u64().expect("exp");
    let calls = s.provider_calls();
    let refreshed = s.stat("session.refreshed");

    // Past the access token's expiry (whole seconds on both sides).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::thread::sleep(Duration::from_secs(exp.saturating_sub(now) + 2));

    browser.goto(&s.local_url("/anything/later"));
    assert!(
        !browser.has_element("#kc-form-login"),
        "no login page after expiry: {}",
        browser.current_url()
    );
    assert_eq!(browser.current_url(), s.local_url("/anything/later"));
    let page = httpbin_page(&browser);
    let second = assert_identity(&page, &s);
    assert_ne!(second, first, "a new access token after the refresh");
    let at = jwt_claims(&second);
    assert!(
        at["exp"].as_u64() > Some(exp),
        "the new token expires later: {at}"
    );
    assert!(
        s.provider_calls() > calls,
        "the refresh called the provider"
    );
    assert_eq!(s.stat("session.refreshed"), refreshed + 1);

    // The refreshed session serves the next page without a call.
    let calls = s.provider_calls();
    browser.goto(&s.local_url("/anything/after"));
    let page = httpbin_page(&browser);
    assert_eq!(assert_identity(&page, &s), second);
    assert_eq!(s.provider_calls(), calls);
}

#[test]
fn logout_ends_both_sessions() {
    let s = Stack::start(
        ProviderOptions::default(),
        r#""logout_path": "/anything/logout","#,
    );
    let browser = Browser::start(s.dir.path());
    s.login(&browser, "/anything/test");

    browser.goto(&s.local_url("/anything/logout"));
    // The provider's end-session endpoint logs out without a click and,
    // without a post_logout_redirect_uri, shows its own page.
    browser.wait_for_element("#kc-logout-success", WAIT);
    let url = browser.current_url();
    assert!(url.starts_with(&s.provider.issuer()), "{url}");
    assert_eq!(s.stat("logout"), 1);
    let cookies = s.localhost_cookies(&browser);
    assert!(
        session_cookies(&cookies).is_empty(),
        "the session cookies are cleared: {:?}",
        names(&cookies)
    );

    // Signed out at the gateway and at the provider: the form again.
    browser.goto(&s.local_url("/anything/test"));
    browser.wait_for_element("#kc-form-login", WAIT);
    let page = s.finish_login(&browser, "/anything/test");
    assert_identity(&page, &s);
}

#[test]
fn logout_with_post_logout_redirect_uri() {
    let s = Stack::start(
        ProviderOptions::default(),
        r#""logout_path": "/anything/logout",
"post_logout_redirect_uri": "http://127.0.0.1:{httpbin}/anything/bye","#,
    );
    let browser = Browser::start(s.dir.path());
    s.login(&browser, "/anything/test");

    browser.goto(&s.local_url("/anything/logout"));
    let bye = s.httpbin.url("/anything/bye");
    let url = browser.wait_for_url(WAIT, |u| u.starts_with(&bye));
    let page = httpbin_page(&browser);
    assert!(
        page["url"].as_str().is_some_and(|u| u.starts_with(&bye)),
        "at {url}: {page:#}"
    );
    assert!(
        page["headers"].get("X-Access-Token").is_none(),
        "httpbin directly, no identity: {page:#}"
    );
    let cookies = s.localhost_cookies(&browser);
    assert!(
        session_cookies(&cookies).is_empty(),
        "the session cookies are cleared: {:?}",
        names(&cookies)
    );

    browser.goto(&s.local_url("/anything/test"));
    browser.wait_for_element("#kc-form-login", WAIT);
}

#[test]
fn large_session_is_chunked() {
    const ROLES: u32 = 60;
    let s = Stack::start(
        ProviderOptions {
            extra_roles: Some(ROLES),
            ..Default::default()
        },
        "",
    );
    let browser = Browser::start(s.dir.path());
    let page = s.login(&browser, "/anything/test");
    let access = assert_identity(&page, &s);
    let id = b64_json_header(&page, "X-Id-Token");
    let roles = id["realm_access"]["roles"].as_array().map_or(0, Vec::len);
    assert_eq!(roles, ROLES as usize, "X-Id-Token carries the roles: {id}");
    assert!(access.len() > 4000, "a large access token");

    // Read where the browser is (the gateway's origin).
    let cookies = browser.cookies();
    let session = session_cookies(&cookies);
    eprintln!("session cookies (name, bytes): {session:?}");
    assert!(
        session.len() >= 2,
        "a session over 4 KB is split over several cookies: {session:?}"
    );
    let mut chunks: Vec<usize> = session
        .iter()
        .filter_map(|(n, _)| n.strip_prefix("session_")?.parse().ok())
        .collect();
    chunks.sort_unstable();
    assert!(
        chunks.len() >= 2 && chunks.iter().copied().eq(1..=chunks.len()),
        "chunks are named session_1..N: {session:?}"
    );
    for (name, len) in &session {
        assert!(*len <= 4000, "{name} holds {len} bytes: {session:?}");
    }
    let total: usize = session.iter().map(|(_, l)| l).sum();
    assert!(total > 4000, "{total} bytes in {session:?}");
    assert!(flow_cookies(&cookies).is_empty(), "{:?}", names(&cookies));

    // The chunks open again on the next request, without the provider.
    let calls = s.provider_calls();
    browser.goto(&s.local_url("/anything/second"));
    let page = httpbin_page(&browser);
    assert_eq!(page["url"], s.local_url("/anything/second").as_str());
    assert_eq!(assert_identity(&page, &s), access);
    assert_eq!(s.provider_calls(), calls);
}

#[test]
fn callback_errors_are_pages_not_loops() {
    let s = Stack::start(ProviderOptions::default(), "");
    let browser = Browser::start(s.dir.path());

    // No flow cookie for this state: a 400 page, where the browser is.
    let cb = s.local_url("/anything/callback?code=x&state=unknown");
    browser.goto(&cb);
    let text = browser.page_text();
    assert_eq!(browser.current_url(), cb, "no redirect: {text}");
    assert_eq!(browser.response_status(), Some(400), "{text}");
    assert!(
        text.contains("not started here or has expired"),
        "the page says why: {text}"
    );

    // The provider's error for a login started here: named on a 400 page.
    s.start_login(&browser, "/anything/test");
    let cookies = s.localhost_cookies(&browser);
    let flows = flow_cookies(&cookies);
    assert_eq!(flows.len(), 1, "{:?}", names(&cookies));
    let state = flows[0].trim_start_matches("session_flow_").to_string();
    let cb = s.local_url(&format!(
        "/anything/callback?error=access_denied&state={state}"
    ));
    browser.goto(&cb);
    let text = browser.page_text();
    assert_eq!(browser.current_url(), cb, "no redirect: {text}");
    assert_eq!(browser.response_status(), Some(400), "{text}");
    assert!(text.contains("access_denied"), "the page names it: {text}");
    let cookies = s.localhost_cookies(&browser);
    assert!(
        flow_cookies(&cookies).is_empty(),
        "the failed flow's cookie is cleared: {:?}",
        names(&cookies)
    );
    assert!(s.stat("login.failed") >= 1);

    // A new login still works afterwards.
    let page = s.login(&browser, "/anything/test");
    assert_identity(&page, &s);
}

#[test]
fn the_session_survives_an_envoy_restart() {
    // Sessions are sealed in the cookie: a new Envoy (new VMs, nothing
    // cached) opens it with the route's session secret from the sidecar.
    let mut s = Stack::start(ProviderOptions::default(), "");
    let browser = Browser::start(s.dir.path());
    let page = s.login(&browser, "/anything/test");
    let access = assert_identity(&page, &s);

    s.gw.restart_envoy();
    wait_for(
        "the route after the restart",
        Duration::from_secs(10),
        || {
            let r = s.get_as("localhost", "/anything/test", &[("accept", HTML)]);
            (r.status == 302).then_some(())
        },
    );
    browser.goto(&s.local_url("/anything/again"));
    let page = httpbin_page(&browser);
    assert_eq!(browser.response_status(), Some(200), "{page:#}");
    assert_eq!(assert_identity(&page, &s), access, "the same session");
    assert_eq!(
        s.stat("login.started"),
        1,
        "only the probe above started a login"
    );
    assert_eq!(s.provider_calls(), 1, "only the probe's discovery fetch");
}
