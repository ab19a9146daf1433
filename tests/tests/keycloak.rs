//! The tutorial's flows against a real Keycloak (26.x, started once for
//! the suite), through the sidecar and the real Envoy: client credentials
//! with the JWKS, introspection, password grant, refresh, browser login on
//! Keycloak's own login page (with and without PKCE), logout through
//! Keycloak's end-session endpoint.

use std::time::Duration;

use base64::Engine as _;
use integration_tests::browser::Browser;
use integration_tests::gateway::Gateway;
use integration_tests::keycloak::{Keycloak, CLIENT_SECRET};
use integration_tests::provider::{CLIENT_ID, PASSWORD, USER};
use integration_tests::{get, tutorial_route, wait_for, Httpbin, TestDir};

/// The tutorial's body with Keycloak's client secret.
fn kc_route(plugin_lines: &str, discovery: &str, node: &str, proxy_port: u16) -> String {
    tutorial_route(plugin_lines, CLIENT_SECRET, discovery, node, proxy_port)
}

fn put_route(gw: &Gateway, body: &str) {
    let r = gw.admin("PUT", "/apisix/admin/routes", Some(body));
    assert!(
        r.status == 200 || r.status == 201,
        "{}: {}",
        r.status,
        r.body
    );
}

fn status(gw: &Gateway, headers: &[(&str, &str)]) -> u16 {
    get(&gw.url("/anything/test"), headers)
        .expect("the gateway answers")
        .status
}

/// Waits until the route answers `want` to `headers` (a PUT reaches Envoy
/// within a second).
fn settle(gw: &Gateway, headers: &[(&str, &str)], want: u16) {
    wait_for("the route update", Duration::from_secs(5), || {
        (status(gw, headers) == want).then_some(())
    });
}

/// Bearer checks on the current route: valid 200, invalid 401, none 401.
fn bearer_checks(gw: &Gateway, token: &str, what: &str) {
    let auth = format!("Bearer {token}");
    settle(gw, &[("authorization", &auth)], 200);
    let r = get(&gw.url("/anything/test"), &[("authorization", &auth)]).unwrap();
    assert_eq!(r.status, 200, "{what}: {}", r.body);
    assert_eq!(r.json()["headers"]["X-Access-Token"], token, "{what}");
    assert_eq!(
        status(gw, &[("authorization", "Bearer invalid-access-token")]),
        401,
        "{what}: invalid token"
    );
    assert_eq!(status(gw, &[]), 401, "{what}: no token");
}

fn decode_header(page: &serde_json::Value, name: &str) -> serde_json::Value {
    let b64 = page["headers"][name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} in {page}"));
    let json = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_else(|e| panic!("{name} is base64: {e}"));
    serde_json::from_slice(&json).unwrap_or_else(|e| panic!("{name} is JSON: {e}"))
}

/// Logs in through Keycloak's login page; returns httpbin's answer.
fn browser_login(browser: &Browser, gw: &Gateway, expect_pkce: bool) -> serde_json::Value {
    browser.goto(&gw.url("/anything/test"));
    browser.wait_for_element("#kc-form-login", Duration::from_secs(20));
    let login_url = browser.current_url();
    assert_eq!(
        login_url.contains("code_challenge_method=S256"),
        expect_pkce,
        "PKCE {expect_pkce}: {login_url}"
    );

    browser.login(USER, "not-the-password");
    // Keycloak 26's login theme: `#input-error-username` (older themes and
    // the test provider: `#input-error`).
    browser.wait_for_element("[id^='input-error']", Duration::from_secs(20));
    assert!(
        !browser.current_url().contains("/anything/"),
        "a wrong password stays at Keycloak: {}",
        browser.current_url()
    );

    browser.login(USER, PASSWORD);
    let back = format!("http://localhost:{}/anything/test", gw.proxy_port);
    browser.wait_for_url(Duration::from_secs(20), |u| u == back);
    let text = browser.page_text();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("httpbin's JSON ({e}): {text}"))
}

#[test]
fn tutorial_flows_against_keycloak() {
    let dir = TestDir::for_current_test();
    let mut keycloak = Keycloak::start(dir.path());
    eprintln!("Keycloak started in {:?}", keycloak.startup);
    let httpbin = Httpbin::start(dir.path());
    let gw = Gateway::start(dir.path(), &[]);
    let node = format!("127.0.0.1:{}", httpbin.port);
    let disc = keycloak.discovery_url();
    let port = gw.proxy_port;

    // The realm's exact redirect URIs: Keycloak sends codes to the
    // tutorial's (a localhost one on any port), never to another host or
    // path (an error page, no redirect).
    let auth = |redirect: &str| {
        let url = format!(
            "{}/protocol/openid-connect/auth?response_type=code&client_id={CLIENT_ID}\
             &scope=openid&state=s1&nonce=n1&redirect_uri={}",
            keycloak.issuer(),
            integration_tests::http::percent_encode(redirect)
        );
        get(&url, &[]).expect("Keycloak answers")
    };
    for evil in [
        "http://evil.example/anything/callback",
        format!("http://localhost:{port}/anything/x/.apisix/redirect").as_str(),
    ] {
        let r = auth(evil);
        assert_eq!(r.status, 400, "{evil}: {}", r.body);
        assert!(r.body.contains("redirect_uri"), "{evil}: {}", r.body);
    }
    let r = auth(&format!("http://localhost:{port}/anything/callback"));
    assert_eq!(r.status, 200, "the login page: {}", r.body);

    // Client credentials, tokens checked with the JWKS.
    put_route(&gw, &kc_route("\"use_jwks\": true,", &disc, &node, port));
    let cc = keycloak.token(&[("grant_type", "client_credentials")]);
    let token = cc["access_token"].as_str().unwrap().to_string();
    bearer_checks(&gw, &token, "client credentials, use_jwks");

    // The same token through Keycloak's introspection endpoint.
    put_route(&gw, &kc_route("\"bearer_only\": true,", &disc, &node, port));
    let calls = gw.envoy_stat("wasmcustom.openid_connect.provider.calls");
    bearer_checks(&gw, &token, "client credentials, introspection");
    assert!(
        gw.envoy_stat("wasmcustom.openid_connect.provider.calls") > calls,
        "the introspection route asked Keycloak"
    );

    // Password grant, then refresh.
    put_route(&gw, &kc_route("\"use_jwks\": true,", &disc, &node, port));
    let pw = keycloak.token(&[
        ("grant_type", "password"),
        ("username", USER),
        ("password", PASSWORD),
    ]);
    let access = pw["access_token"].as_str().unwrap().to_string();
    bearer_checks(&gw, &access, "password grant");
    let refreshed = keycloak.token(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", pw["refresh_token"].as_str().unwrap()),
    ]);
    let access2 = refreshed["access_token"].as_str().unwrap();
    assert_ne!(access2, access);
    bearer_checks(&gw, access2, "refreshed token");

    // Browser login on Keycloak's own page, with logout under the route.
    put_route(
        &gw,
        &kc_route(
            "\"bearer_only\": false, \"logout_path\": \"/anything/logout\",",
            &disc,
            &node,
            port,
        ),
    );
    settle(&gw, &[("accept", "text/html")], 302);
    let browser = Browser::start(dir.path());
    let page = browser_login(&browser, &gw, false);
    assert!(page["headers"]["X-Access-Token"].is_string(), "{page}");
    let session_cookies: Vec<String> = browser
        .cookies()
        .into_iter()
        .filter(|(k, _)| k.starts_with("session"))
        .map(|(_, v)| v)
        .collect();
    assert!(!session_cookies.is_empty(), "the browser holds a session");
    let id = decode_header(&page, "X-Id-Token");
    assert_eq!(id["preferred_username"], USER, "{id}");
    assert_eq!(id["azp"], CLIENT_ID, "{id}");
    let info = decode_header(&page, "X-Userinfo");
    assert_eq!(info["sub"], id["sub"], "{info}");
    let cookie = page["headers"]["Cookie"].as_str().unwrap_or("");
    assert!(
        !cookie.contains("session"),
        "our cookies stay with us: {cookie}"
    );

    // The session serves the next page without asking Keycloak.
    let calls = gw.envoy_stat("wasmcustom.openid_connect.provider.calls");
    browser.goto(&gw.url("/anything/test").replace("127.0.0.1", "localhost"));
    assert!(browser.page_text().contains("X-Access-Token"));
    assert_eq!(
        gw.envoy_stat("wasmcustom.openid_connect.provider.calls"),
        calls
    );

    // Logout: through Keycloak's end-session endpoint; then the login page
    // again.
    browser.goto(&format!("http://localhost:{port}/anything/logout"));
    browser.wait_for_url(Duration::from_secs(20), |u| {
        u.starts_with(&keycloak.issuer())
    });
    browser.goto(&format!("http://localhost:{port}/anything/test"));
    browser.wait_for_element("#kc-form-login", Duration::from_secs(20));
    drop(browser);

    // PKCE.
    put_route(
        &gw,
        &kc_route(
            "\"bearer_only\": false, \"use_pkce\": true,",
            &disc,
            &node,
            port,
        ),
    );
    settle(&gw, &[("accept", "text/html")], 302);
    wait_for("the PKCE route", Duration::from_secs(5), || {
        let r = get(
            &format!("http://127.0.0.1:{port}/anything/test"),
            &[
                ("accept", "text/html"),
                ("host", &format!("localhost:{port}")),
            ],
        )
        .ok()?;
        r.header("location")
            .is_some_and(|l| l.contains("code_challenge"))
            .then_some(())
    });
    let browser = Browser::start(dir.path());
    let page = browser_login(&browser, &gw, true);
    assert!(page["headers"]["X-Access-Token"].is_string(), "{page}");
    drop(browser);

    // The Admin API never shows secrets in clear.
    let shown = gw.admin("GET", "/apisix/admin/routes/auth-with-oidc", None);
    assert_eq!(shown.status, 200);
    let conf = &shown.json()["value"]["plugins"]["openid-connect"];
    assert_eq!(conf["client_secret"], "******", "{conf}");
    assert_eq!(conf["session"]["secret"], "******", "{conf}");
    assert!(!shown.body.contains(CLIENT_SECRET));

    // No token, secret or cookie value in any log line of ours (Envoy with
    // the filter at info level, the sidecar).
    let stored = gw.stored().expect("the route store");
    let session_secret = stored.routes.get("auth-with-oidc").and_then(|r| {
        r["plugins"]["openid-connect"]["session"]["secret"]
            .as_str()
            .map(str::to_string)
    });
    assert!(
        session_secret.is_some(),
        "a generated session secret is stored"
    );
    let mut secrets: Vec<String> = vec![
        token.clone(),
        access.clone(),
        access2.to_string(),
        pw["refresh_token"].as_str().unwrap().to_string(),
        CLIENT_SECRET.to_string(),
    ];
    secrets.extend(session_secret.filter(|s| s.len() >= 16));
    secrets.extend(session_cookies.iter().filter(|c| c.len() > 16).cloned());
    keycloak.stop();
    drop(gw);
    let mut scanned = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("envoy") || name.starts_with("sidecar")) || !name.ends_with(".log") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        scanned += text.lines().count();
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "{name} contains a secret ({} characters, starting {:?})",
                s.len(),
                &s[..8.min(s.len())]
            );
        }
    }
    assert!(
        scanned > 50,
        "the logs were there to scan ({scanned} lines)"
    );
}
