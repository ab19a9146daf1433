//! The login flow against hostile browsers and hosts (review findings 2,
//! 8 and 12), through the real Envoy with the filter and the real test
//! provider:
//!
//! - a login on a host the route does not serve is refused (400, no
//!   provider call), so no code is ever issued for an attacker's host;
//! - a callback that arrives on another host than its login's redirect
//!   URI is refused (400) before the code is redeemed;
//! - the Admin API refuses a login route whose redirect URI would come
//!   from any `Host`; with `hosts`, the filter takes the host from them;
//! - a page that starts logins in a loop no longer fills the browser with
//!   flow cookies until the site answers 431: flow cookies go to the
//!   callback path only, at most [`MAX_FLOWS`] are kept, and a long
//!   original URL is not stored;
//! - the callback's error page shows only RFC 6749 error codes, never
//!   `error_description`.

use std::time::Duration;

use integration_tests::browser::Browser;
use integration_tests::gateway::Gateway;
use integration_tests::http::request;
use integration_tests::provider::{CLIENT_ID, DEFAULT_CLIENT_SECRET, PASSWORD, USER};
use integration_tests::{
    free_port, wait_for, Envoy, EnvoyConfig, Provider, ProviderOptions, Response, Route, TestDir,
};
use oidc_core::login::MAX_FLOWS;
use serde_json::{json, Value};

const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const PROVIDER_CALLS: &str = "wasmcustom.openid_connect.provider.calls";

fn plugin(provider: &Provider, extra: Value) -> Value {
    let mut p = json!({
        "bearer_only": false,
        "client_id": CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "discovery": provider.discovery_url(),
        "scope": "openid profile",
        "session": {"secret": "login-security-test-secret-0123"},
    });
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

/// Envoy with one login route on `/anything/` (hand-written metadata, no
/// hosts: as an own-Envoy setup), its upstream a closed port (a login
/// never reaches it).
fn envoy(dir: &TestDir, provider: &Provider, extra: Value) -> Envoy {
    let config = EnvoyConfig::default()
        .provider(provider.port)
        .upstream("up", free_port())
        .route(Route::protected(
            "/anything/",
            "up",
            plugin(provider, extra),
        ));
    Envoy::start(dir.path(), &config)
}

fn get_as(url: &str, host: &str, headers: &[(&str, &str)]) -> Response {
    let mut h = vec![("host", host), ("accept", HTML)];
    h.extend_from_slice(headers);
    request("GET", url, &h, None).expect("the gateway answers")
}

fn provider_calls(envoy: &Envoy) -> u64 {
    integration_tests::envoy::admin_stat(envoy.admin_port, PROVIDER_CALLS)
}

fn query_param(url: &str, key: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            // Enough decoding for the values checked here.
            v.replace("%3A", ":").replace("%2F", "/").replace('+', " ")
        })
    })
}

/// A browser's cookie jar for one host, with paths (RFC 6265 5.1.4).
#[derive(Default)]
struct Jar(Vec<(String, String, String)>);

impl Jar {
    fn take(&mut self, r: &Response) {
        for c in r.header_all("set-cookie") {
            let mut parts = c.split(';').map(str::trim);
            let (name, value) = parts.next().unwrap().split_once('=').unwrap();
            let mut path = "/".to_string();
            let mut expired = false;
            for a in parts {
                if let Some(p) = a.strip_prefix("Path=") {
                    path = p.to_string();
                }
                expired |= a == "Max-Age=0";
            }
            self.0.retain(|(n, _, p)| !(n == name && *p == path));
            if !expired {
                self.0.push((name.into(), value.into(), path));
            }
        }
    }

    /// The `Cookie` header for a request path.
    fn header(&self, path: &str) -> String {
        let path = path.split('?').next().unwrap();
        self.0
            .iter()
            .filter(|(_, _, p)| {
                path == p
                    || (path.starts_with(p.as_str())
                        && (p.ends_with('/') || path[p.len()..].starts_with('/')))
            })
            .map(|(n, v, _)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn flows(&self) -> Vec<&(String, String, String)> {
        self.0
            .iter()
            .filter(|(n, _, _)| n.starts_with("session_flow_") && n != "session_flow_index")
            .collect()
    }
}

/// Finding 2: with the default redirect URI (made from the request's
/// host), a login on a host the route does not serve is refused: the
/// attacker cannot get an authorization request whose redirect URI is
/// their host, so the provider never sends a victim's code there.
#[test]
fn a_login_on_a_foreign_host_is_refused() {
    let dir = TestDir::for_current_test();
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let envoy = envoy(&dir, &provider, json!({}));
    let url = envoy.url("/anything/x");
    let local = format!("localhost:{}", envoy.port);

    // A loopback host (the route has no hosts): the login starts.
    let r = wait_for("the login route", Duration::from_secs(10), || {
        let r = get_as(&url, &local, &[]);
        (r.status == 302).then_some(r)
    });
    let location = r.header("location").unwrap();
    assert_eq!(
        query_param(location, "redirect_uri"),
        Some(format!("http://{local}/anything/x/.apisix/redirect"))
    );

    let calls = provider_calls(&envoy);
    for host in [
        "evil.example",
        "evil.example:80",
        "gw.localhost.evil.example",
    ] {
        let r = get_as(&url, host, &[]);
        assert_eq!(r.status, 400, "{host}: {:?} {}", r.headers, r.body);
        assert!(r.header("location").is_none(), "{host}: no redirect");
        assert!(r.header_all("set-cookie").is_empty(), "{host}");
        assert!(r.body.contains("cannot start a login"), "{}", r.body);
    }
    assert_eq!(provider_calls(&envoy), calls, "no provider call");
}

/// Finding 2: a callback must arrive where its login's redirect URI
/// points. The code an attacker had issued for their own host is refused
/// at the gateway before it is redeemed (no token request), and the token
/// request only ever repeats the stored redirect URI.
#[test]
fn a_callback_on_another_host_is_refused() {
    let dir = TestDir::for_current_test();
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let envoy = envoy(&dir, &provider, json!({}));
    let local = format!("localhost:{}", envoy.port);
    let other = format!("127.0.0.1:{}", envoy.port);
    let r = wait_for("the login route", Duration::from_secs(10), || {
        let r = get_as(&envoy.url("/anything/x"), &local, &[]);
        (r.status == 302).then_some(r)
    });
    let state = query_param(r.header("location").unwrap(), "state").unwrap();
    let mut jar = Jar::default();
    jar.take(&r);
    let callback = format!("/anything/x/.apisix/redirect?code=stolen-code&state={state}");
    let cookie = jar.header(&callback);
    assert!(
        cookie.contains(&format!("session_flow_{state}=")),
        "{cookie}"
    );

    let calls = provider_calls(&envoy);
    let r = get_as(&envoy.url(&callback), &other, &[("cookie", &cookie)]);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("not at the address"), "{}", r.body);
    assert_eq!(
        provider_calls(&envoy),
        calls,
        "the code is not redeemed (no token request)"
    );
    // The flow is used up: its cookie is cleared.
    assert!(r
        .header_all("set-cookie")
        .iter()
        .any(|c| c.starts_with(&format!("session_flow_{state}=;")) && c.contains("Max-Age=0")));
}

/// Finding 2, the whole attack (the review's steps) against a provider
/// that, like a realm with `*`, would send a code to the attacker's host:
/// the attacker starts a login at the gateway and keeps its flow cookie,
/// rewrites the authorization URL's `redirect_uri` to their host and has
/// a signed-in victim open it; the provider sends the victim's code there;
/// the attacker replays it to the gateway with `Host` = their host. The
/// gateway used to compute that very redirect URI from `Host`, redeem the
/// victim's code and give the attacker the victim's session.
#[test]
fn an_injected_authorization_code_gives_no_session() {
    let dir = TestDir::for_current_test();
    let evil = "http://evil.invalid/anything/x/.apisix/redirect";
    let options = ProviderOptions {
        env: vec![(
            "REDIRECT_URIS".into(),
            format!("http://localhost/anything/x/.apisix/redirect {evil}"),
        )],
        ..ProviderOptions::default()
    };
    let provider = Provider::start(dir.path(), options);
    let envoy = envoy(&dir, &provider, json!({}));
    let local = format!("localhost:{}", envoy.port);

    // 1. The attacker's own login start.
    let r = wait_for("the login route", Duration::from_secs(10), || {
        let r = get_as(&envoy.url("/anything/x"), &local, &[]);
        (r.status == 302).then_some(r)
    });
    let authorize = r.header("location").unwrap().to_string();
    let state = query_param(&authorize, "state").unwrap();
    let mut jar = Jar::default();
    jar.take(&r);
    // 2. The rewritten link, opened by the victim, who logs in.
    let ours = integration_tests::http::percent_encode(&format!(
        "http://{local}/anything/x/.apisix/redirect"
    ));
    assert!(authorize.contains(&ours), "{authorize}");
    let link = authorize.replace(&ours, &integration_tests::http::percent_encode(evil));
    let browser = Browser::start(dir.path());
    browser.goto(&link);
    browser.wait_for_element("#kc-form-login", Duration::from_secs(15));
    browser.login(USER, PASSWORD);
    let landed = browser.wait_for_url(Duration::from_secs(15), |u| u.starts_with(evil));
    let code = query_param(&landed, "code").expect("the provider sent the code to evil.invalid");
    drop(browser);

    // 3. The attacker replays it with their flow cookie and Host. (Before
    // the fix: 302 to the page with the victim's session cookie.)
    let callback = format!("/anything/x/.apisix/redirect?code={code}&state={state}");
    let cookie = jar.header(&callback);
    let calls = provider_calls(&envoy);
    let r = get_as(
        &envoy.url(&callback),
        "evil.invalid",
        &[("cookie", &cookie)],
    );
    assert_eq!(r.status, 400, "{:?} {}", r.headers, r.body);
    assert!(
        !r.header_all("set-cookie")
            .iter()
            .any(|c| c.starts_with("session=")),
        "no session: {:?}",
        r.headers
    );
    assert_eq!(provider_calls(&envoy), calls, "the code is not redeemed");
}

/// Finding 2, through the sidecar: a login route whose redirect URI would
/// come from the request's Host must name its hosts; with them, the
/// filter makes the redirect URI from the request's host when it is one
/// of them (the sidecar passes the hosts in the route metadata).
#[test]
fn login_routes_name_their_hosts() {
    let dir = TestDir::for_current_test();
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let gw = Gateway::start(dir.path(), &[]);
    let node = format!("127.0.0.1:{}", free_port());
    let route = |hosts: Option<Value>, redirect: Option<&str>| {
        let mut p = plugin(&provider, json!({}));
        p.as_object_mut().unwrap().remove("session");
        if let Some(r) = redirect {
            p["redirect_uri"] = json!(r);
        }
        let mut v = json!({
            "id": "app",
            "uri": "/anything/*",
            "plugins": {"openid-connect": p},
            "upstream": {"type": "roundrobin", "nodes": {node.clone(): 1}},
        });
        if let Some(h) = hosts {
            v["hosts"] = h;
        }
        v.to_string()
    };
    for redirect in [None, Some("/anything/callback")] {
        let r = gw.admin("PUT", "/apisix/admin/routes", Some(&route(None, redirect)));
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(
            r.body.contains("plugins.openid-connect.redirect_uri")
                && r.body.contains("\\\"hosts\\\""),
            "{}",
            r.body
        );
    }
    let absolute = format!("http://localhost:{}/anything/callback", gw.proxy_port);
    let r = gw.admin(
        "PUT",
        "/apisix/admin/routes",
        Some(&route(None, Some(&absolute))),
    );
    assert_eq!(r.status, 201, "{}", r.body);

    let hosts = json!(["gw.test", "*.apps.test"]);
    let r = gw.admin(
        "PUT",
        "/apisix/admin/routes",
        Some(&route(Some(hosts), None)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let url = gw.url("/anything/x");
    for host in ["gw.test", "a.apps.test"] {
        let host = format!("{host}:{}", gw.proxy_port);
        let r = wait_for("the route with hosts", Duration::from_secs(10), || {
            let r = get_as(&url, &host, &[]);
            (r.status == 302).then_some(r)
        });
        assert_eq!(
            query_param(r.header("location").unwrap(), "redirect_uri"),
            Some(format!("http://{host}/anything/x/.apisix/redirect")),
            "{:?}",
            r.headers
        );
    }
    // Another host does not reach the route at all (Envoy's virtual hosts).
    let r = get_as(&url, "evil.example", &[]);
    assert_eq!(r.status, 404, "{}", r.body);
    // Hosts that end like `*.apps.test` but whose URL host is another:
    // Envoy 1.40 itself answers 400 (its `Host` validation); the filter
    // refuses them too for Envoys that let them through
    // (`login::host_allowed`, unit-tested). No login starts there.
    for host in [
        "evil.example/.apps.test",
        "evil.example?.apps.test",
        "evil.example#.apps.test",
    ] {
        let r = get_as(&url, host, &[]);
        assert_eq!(r.status, 400, "{host}: {:?}", r.headers);
        assert!(r.header("location").is_none(), "{host}: {:?}", r.headers);
    }
}

/// Finding 8: a page that sends the browser to long protected URLs over
/// and over (each starts a login) used to store one ~4 KB flow cookie per
/// navigation on `/`, until every request to the site was over Envoy's
/// header limit (431) for ten minutes.
#[test]
fn a_flow_cookie_bomb_no_longer_locks_the_site() {
    let dir = TestDir::for_current_test();
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let mut envoy = envoy(&dir, &provider, json!({}));
    // The tutorial's fixed redirect URI: every flow shares one callback.
    let host = format!("localhost:{}", envoy.port);
    let redirect = format!("http://{host}/anything/callback");
    let config = EnvoyConfig::default()
        .provider(provider.port)
        .upstream("up", free_port())
        .route(Route::protected(
            "/anything/",
            "up",
            plugin(&provider, json!({ "redirect_uri": redirect })),
        ));
    envoy.reconfigure(&config);
    let pad = "p".repeat(2800);
    let mut jar = Jar::default();
    wait_for("the login route", Duration::from_secs(10), || {
        let r = get_as(&envoy.url("/anything/warmup"), &host, &[]);
        let location = r.header("location").unwrap_or_default();
        (query_param(location, "redirect_uri").as_deref() == Some(redirect.as_str())).then_some(())
    });
    for i in 0..20 {
        let path = format!("/anything/app?pad={pad}&i={i}");
        let cookie = jar.header(&path);
        let r = get_as(&envoy.url(&path), &host, &[("cookie", &cookie)]);
        assert_eq!(r.status, 302, "navigation {i}: {}", r.body);
        jar.take(&r);
        for (name, value, path) in jar.flows() {
            assert_eq!(
                path, "/anything/callback",
                "{name}: only the callback gets it"
            );
            assert!(
                name.len() + value.len() < 1200,
                "a long URL is not stored: {} bytes",
                value.len()
            );
        }
        assert!(
            jar.flows().len() <= MAX_FLOWS,
            "navigation {i}: {} flow cookies",
            jar.flows().len()
        );
    }
    assert_eq!(jar.flows().len(), MAX_FLOWS);
    // The site and the callback still answer.
    for path in ["/anything/app", "/anything/callback?state=x&code=y"] {
        let cookie = jar.header(path);
        let r = get_as(&envoy.url(path), &host, &[("cookie", &cookie)]);
        assert_ne!(r.status, 431, "{path}");
        assert!(r.status == 302 || r.status == 400, "{path}: {}", r.status);
    }
}

/// Finding 12: anyone can send a browser to the callback with any text;
/// the page names only RFC 6749's error codes.
#[test]
fn the_callback_error_page_shows_no_attacker_text() {
    let dir = TestDir::for_current_test();
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let envoy = envoy(&dir, &provider, json!({}));
    let host = format!("localhost:{}", envoy.port);
    wait_for("the login route", Duration::from_secs(10), || {
        let r = get_as(&envoy.url("/anything/x"), &host, &[]);
        (r.status == 302).then_some(())
    });
    let cb = "/anything/x/.apisix/redirect";
    let r = get_as(
        &envoy.url(&format!(
            "{cb}?error=access_denied&error_description=Your+account+is+locked%2C+call+0800-EVIL"
        )),
        &host,
        &[],
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("access_denied"), "{}", r.body);
    assert!(
        !r.body.contains("locked") && !r.body.contains("EVIL"),
        "{}",
        r.body
    );
    let r = get_as(
        &envoy.url(&format!("{cb}?error=Call+0800-EVIL%0Aforged+log+line")),
        &host,
        &[],
    );
    assert_eq!(r.status, 400);
    assert!(!r.body.contains("EVIL"), "{}", r.body);
    assert!(
        r.body.contains("the identity provider refused the login"),
        "{}",
        r.body
    );
    // The log has the text, escaped: no line of the attacker's making.
    let log = wait_for("the login-failed log line", Duration::from_secs(5), || {
        let log = std::fs::read_to_string(envoy.log_path()).unwrap_or_default();
        log.contains("0800-EVIL\\nforged").then_some(log)
    });
    assert!(
        !log.lines().any(|l| l.starts_with("forged log line")),
        "a forged log line"
    );
}

/// Finding 2: the test provider, like the shipped Keycloak realm, sends
/// codes only to registered redirect URIs (the tutorial's; a loopback one
/// on any port), so a rewritten `redirect_uri` gets an error page there,
/// never a code.
#[test]
fn the_provider_refuses_unregistered_redirect_uris() {
    let dir = TestDir::for_current_test();
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let auth = |redirect: &str| {
        let url = format!(
            "{}/protocol/openid-connect/auth?response_type=code&client_id={CLIENT_ID}\
             &scope=openid&state=s1&nonce=n1&redirect_uri={}",
            provider.issuer(),
            integration_tests::http::percent_encode(redirect)
        );
        request("GET", &url, &[], None).expect("the provider answers")
    };
    for evil in [
        "http://evil.example/anything/callback",
        "http://localhost:9080/anything/x/.apisix/redirect",
        "http://localhost.evil.example:9080/anything/callback",
        "https://localhost:9080/anything/callback",
    ] {
        let r = auth(evil);
        assert_eq!(r.status, 400, "{evil}: {:?}", r.headers);
        assert!(r.header("location").is_none(), "{evil}");
        assert!(r.body.contains("redirect_uri"), "{evil}: {}", r.body);
    }
    for ok in [
        "http://localhost:9080/anything/callback",
        "http://localhost:41234/anything/callback",
    ] {
        let r = auth(ok);
        assert!(
            r.status == 302 || r.status == 303,
            "{ok}: {} {}",
            r.status,
            r.body
        );
        let to = r.header("location").unwrap_or_default();
        assert!(!to.contains("code="), "{ok}: the login page first: {to}");
    }
}
