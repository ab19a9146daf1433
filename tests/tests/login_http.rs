//! The browser side of a login route, seen over plain HTTP through the
//! real gateway (sidecar + Envoy) and the real test provider: redirects,
//! cookies and error pages that need no browser to check. The browser
//! tests (`login.rs`) do the logins themselves.

use std::time::Duration;

use integration_tests::gateway::Gateway;
use integration_tests::http::request;
use integration_tests::provider::{CLIENT_ID, DEFAULT_CLIENT_SECRET};
use integration_tests::{wait_for, Httpbin, Provider, ProviderOptions, Response, TestDir};

const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

fn route_body(discovery: &str, node: &str, proxy_port: u16, extra: &str) -> String {
    format!(
        r#"{{
"id": "auth-with-oidc",
"uri":"/anything/*",
"plugins": {{
"openid-connect": {{
"bearer_only": false,
{extra}
"client_id": "{CLIENT_ID}",
"client_secret": "{DEFAULT_CLIENT_SECRET}",
"discovery": "{discovery}",
"scope": "openid profile",
"redirect_uri": "http://localhost:{proxy_port}/anything/callback"
}}
}},
"upstream":{{"type":"roundrobin","nodes":{{"{node}":1}}}}
}}"#
    )
}

/// A GET to the gateway as if addressed to `host` (Envoy listens on
/// 127.0.0.1; `localhost` may resolve to ::1 first).
fn get_as(gw: &Gateway, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut h = vec![("host", host)];
    h.extend_from_slice(headers);
    request("GET", &gw.url(path), &h, None).expect("the gateway answers")
}

fn set_cookies(r: &Response) -> Vec<&str> {
    r.header_all("set-cookie")
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

#[test]
fn login_route_redirects_cookies_and_pages() {
    let dir = TestDir::for_current_test();
    let httpbin = Httpbin::start(dir.path());
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let gw = Gateway::start(dir.path(), &[]);
    let port = gw.proxy_port;
    let node = format!("127.0.0.1:{}", httpbin.port);
    let body = route_body(
        &provider.discovery_url(),
        &node,
        port,
        r#""use_pkce": true, "logout_path": "/anything/logout","#,
    );
    let r = gw.admin("PUT", "/apisix/admin/routes", Some(&body));
    assert_eq!(r.status, 201, "{}", r.body);
    let ip_host = format!("127.0.0.1:{port}");
    let local_host = format!("localhost:{port}");
    wait_for("the login route", Duration::from_secs(5), || {
        let r = get_as(&gw, &ip_host, "/anything/test", &[("accept", HTML)]);
        (r.status == 302).then_some(())
    });

    // The tutorial opens 127.0.0.1: first to the redirect URI's host.
    let r = get_as(&gw, &ip_host, "/anything/test?x=1", &[("accept", HTML)]);
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some(format!("http://localhost:{port}/anything/test?x=1").as_str())
    );
    assert!(set_cookies(&r).is_empty(), "{:?}", r.headers);

    // There: to the provider, with a flow cookie named after the state.
    let r = get_as(&gw, &local_host, "/anything/test?x=1", &[("accept", HTML)]);
    assert_eq!(r.status, 302, "{}", r.body);
    let location = r.header("location").unwrap().to_string();
    assert!(
        location.starts_with(&format!(
            "{}/protocol/openid-connect/auth?",
            provider.issuer()
        )),
        "{location}"
    );
    assert_eq!(
        query_param(&location, "client_id").as_deref(),
        Some(CLIENT_ID)
    );
    assert_eq!(
        query_param(&location, "response_type").as_deref(),
        Some("code")
    );
    assert_eq!(
        query_param(&location, "scope").as_deref(),
        Some("openid profile")
    );
    assert_eq!(
        query_param(&location, "redirect_uri"),
        Some(format!("http://localhost:{port}/anything/callback"))
    );
    assert_eq!(
        query_param(&location, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let state = query_param(&location, "state").unwrap();
    // The flow cookie (for the callback path only) and the flow index
    // (the newest flows' states, read when a login starts).
    let cookies = set_cookies(&r);
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    let flow = cookies[0];
    assert!(
        flow.starts_with(&format!("session_flow_{state}=")),
        "{flow}"
    );
    for attr in [
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=600",
        "Path=/anything/callback;",
    ] {
        assert!(flow.contains(attr), "{attr} in {flow}");
    }
    assert!(!flow.contains("Secure"), "plain HTTP: {flow}");
    assert!(
        cookies[1].starts_with(&format!("session_flow_index={state}; Path=/;")),
        "{}",
        cookies[1]
    );
    // Two starts, two states.
    let again = get_as(&gw, &local_host, "/anything/test", &[("accept", HTML)]);
    let state2 = query_param(again.header("location").unwrap(), "state").unwrap();
    assert_ne!(state, state2);

    // Not a browser: 401, no redirect.
    let r = get_as(
        &gw,
        &local_host,
        "/anything/test",
        &[("accept", "application/json")],
    );
    assert_eq!(r.status, 401);
    assert!(r.header("location").is_none());

    // A callback without its flow cookie: a page, not a loop or a 500.
    let cb = format!("/anything/callback?code=abc&state={state}");
    let r = get_as(&gw, &local_host, &cb, &[("accept", HTML)]);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("not started here or has expired"),
        "{}",
        r.body
    );
    assert!(r.header("location").is_none());
    // The provider's error, with the flow cookie: named, cookie cleared.
    let flow_pair = flow.split(';').next().unwrap();
    let cb = format!("/anything/callback?error=access_denied&state={state}");
    let r = get_as(
        &gw,
        &local_host,
        &cb,
        &[("accept", HTML), ("cookie", flow_pair)],
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("access_denied"), "{}", r.body);
    assert!(
        set_cookies(&r)
            .iter()
            .any(|c| c.starts_with(&format!("session_flow_{state}=;")) && c.contains("Max-Age=0")),
        "{:?}",
        r.headers
    );
    // A forged flow cookie does not open.
    let forged = format!("session_flow_{state}=AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let cb = format!("/anything/callback?code=abc&state={state}");
    let r = get_as(
        &gw,
        &local_host,
        &cb,
        &[("accept", HTML), ("cookie", &forged)],
    );
    assert_eq!(r.status, 400);

    // A session cookie that does not open is cleared; the browser logs in.
    let r = get_as(
        &gw,
        &local_host,
        "/anything/test",
        &[("accept", HTML), ("cookie", "session=garbage; theme=dark")],
    );
    assert_eq!(r.status, 302);
    assert!(
        set_cookies(&r)
            .iter()
            .any(|c| c.starts_with("session=;") && c.contains("Max-Age=0")),
        "{:?}",
        r.headers
    );

    // Logout without a session: cookies cleared, on to the provider's
    // end-session endpoint.
    let r = get_as(&gw, &local_host, "/anything/logout", &[("accept", HTML)]);
    assert_eq!(r.status, 302, "{}", r.body);
    let location = r.header("location").unwrap();
    assert!(
        location.starts_with(&format!(
            "{}/protocol/openid-connect/logout",
            provider.issuer()
        )),
        "{location}"
    );
    assert!(set_cookies(&r).iter().any(|c| c.starts_with("session=;")));

    assert!(gw.envoy_stat("wasmcustom.openid_connect.login.started") >= 2);
}

#[test]
fn unauth_action_pass_and_deny() {
    let dir = TestDir::for_current_test();
    let httpbin = Httpbin::start(dir.path());
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let gw = Gateway::start(dir.path(), &[]);
    let node = format!("127.0.0.1:{}", httpbin.port);
    let host = format!("localhost:{}", gw.proxy_port);

    let body = route_body(
        &provider.discovery_url(),
        &node,
        gw.proxy_port,
        r#""unauth_action": "pass","#,
    );
    assert_eq!(
        gw.admin("PUT", "/apisix/admin/routes", Some(&body)).status,
        201
    );
    wait_for("the pass route", Duration::from_secs(5), || {
        let r = get_as(&gw, &host, "/anything/p", &[("accept", HTML)]);
        (r.status == 200).then_some(())
    });
    // Forwarded without identity; our cookies stay with the gateway.
    let r = get_as(
        &gw,
        &host,
        "/anything/p",
        &[
            ("accept", HTML),
            ("cookie", "theme=dark; session_flow_abc=x"),
            ("x-access-token", "forged"),
        ],
    );
    assert_eq!(r.status, 200);
    let echoed = r.json();
    assert_eq!(echoed["headers"]["Cookie"], "theme=dark");
    assert!(echoed["headers"].get("X-Access-Token").is_none());

    let body = route_body(
        &provider.discovery_url(),
        &node,
        gw.proxy_port,
        r#""unauth_action": "deny","#,
    );
    assert_eq!(
        gw.admin("PUT", "/apisix/admin/routes", Some(&body)).status,
        200
    );
    wait_for("the deny route", Duration::from_secs(5), || {
        let r = get_as(&gw, &host, "/anything/p", &[("accept", HTML)]);
        (r.status == 401).then_some(())
    });
}

/// The flow cookie of a login started with `X-Forwarded-Proto: https`.
fn flow_cookie_behind_tls(gw: &Gateway) -> String {
    let host = format!("localhost:{}", gw.proxy_port);
    let r = get_as(
        gw,
        &host,
        "/anything/test",
        &[("accept", HTML), ("x-forwarded-proto", "https")],
    );
    assert_eq!(r.status, 302, "{}", r.body);
    set_cookies(&r).first().expect("a flow cookie").to_string()
}

#[test]
fn forwarded_proto_is_trusted_only_when_configured() {
    let dir = TestDir::for_current_test();
    let httpbin = Httpbin::start(dir.path());
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let node = format!("127.0.0.1:{}", httpbin.port);
    for (hops, secure) in [("0", false), ("1", true)] {
        let sub = dir.path().join(format!("hops-{hops}"));
        std::fs::create_dir_all(&sub).unwrap();
        let mut gw = Gateway::start(&sub, &["--trusted-proxy-hops", hops]);
        let body = route_body(&provider.discovery_url(), &node, gw.proxy_port, "");
        assert_eq!(
            gw.admin("PUT", "/apisix/admin/routes", Some(&body)).status,
            201
        );
        let host = format!("localhost:{}", gw.proxy_port);
        wait_for("the login route", Duration::from_secs(5), || {
            let r = get_as(&gw, &host, "/anything/test", &[("accept", HTML)]);
            (r.status == 302).then_some(())
        });
        let cookie = flow_cookie_behind_tls(&gw);
        assert_eq!(cookie.contains("; Secure"), secure, "hops {hops}: {cookie}");
        gw.stop_sidecar();
    }
}
