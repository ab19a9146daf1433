//! The edge matches requests as nginx (hence APISIX) does, through the real
//! Envoy: escaped slashes cannot skip a more protected route, a trailing
//! dot in `Host` cannot skip a host's routes, and identity headers written
//! with `_` never reach an upstream (dropped by the sidecar's listener; and
//! stripped by the filter where a static config lets them in).

use std::time::Duration;

use integration_tests::echo::{raw_request, EchoServer};
use integration_tests::gateway::Gateway;
use integration_tests::provider::{CLIENT_ID, DEFAULT_CLIENT_SECRET};
use integration_tests::{
    get, wait_for, Envoy, EnvoyConfig, Provider, ProviderOptions, Response, Route, TestDir,
};
use serde_json::{json, Value};

/// Identity headers the filter sets, spelled with `_`, with forged values.
const FORGED: [(&str, &str); 5] = [
    ("X_Userinfo", "eyJzdWIiOiJhZG1pbiJ9"),
    ("X_ID_Token", "eyJzdWIiOiJhZG1pbiJ9"),
    ("X_Access_Token", "forged-access-token"),
    ("X_Raw_ID_Token", "forged-raw-id-token"),
    ("x_refresh_token", "forged-refresh-token"),
];

fn admin_put(gw: &Gateway, id: &str, body: Value) {
    let r = gw.admin(
        "PUT",
        &format!("/apisix/admin/routes/{id}"),
        Some(&body.to_string()),
    );
    assert!(
        r.status == 200 || r.status == 201,
        "{id}: {} {}",
        r.status,
        r.body
    );
}

fn upstream(echo: &EchoServer) -> Value {
    json!({"type": "roundrobin", "nodes": {format!("127.0.0.1:{}", echo.port): 1}})
}

fn get_raw(port: u16, path: &str, host: &str, extra: &[(&str, &str)]) -> Response {
    let mut head = format!("GET {path} HTTP/1.1\nHost: {host}");
    for (k, v) in extra {
        head.push_str(&format!("\n{k}: {v}"));
    }
    raw_request(port, &head)
}

/// The header names the echo upstream received, as sent.
fn echoed_headers(r: &Response) -> Vec<(String, String)> {
    let v: Value = serde_json::from_str(&r.body)
        .unwrap_or_else(|_| panic!("not the echo upstream: {} {}", r.status, r.body));
    v["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
        .collect()
}

/// No forged identity header, in any spelling, reached the upstream.
fn assert_no_forged_header(r: &Response) {
    for (name, value) in echoed_headers(r) {
        assert!(!name.contains('_'), "{name}: {value} reached the upstream");
        assert!(
            !FORGED.iter().any(|(_, v)| *v == value),
            "{name}: {value} reached the upstream"
        );
    }
}

/// The path of a `Location` (absolute or not).
fn location_path(r: &Response) -> String {
    let loc = r
        .header("location")
        .unwrap_or_else(|| panic!("no Location: {r:?}"));
    match loc.split_once("://") {
        Some((_, rest)) => rest
            .find('/')
            .map(|i| rest[i..].to_string())
            .unwrap_or("/".into()),
        None => loc.to_string(),
    }
}

#[test]
fn the_sidecar_listener_matches_as_nginx_does() {
    let dir = TestDir::new("edge_sidecar");
    let echo = EchoServer::start(dir.path(), "upstream");
    let host_echo = EchoServer::start(dir.path(), "app-host");
    let idp = Provider::start(dir.path(), ProviderOptions::default());
    let gw = Gateway::start(dir.path(), &[]);
    let plugin = |extra: Value| {
        let mut p = json!({
            "client_id": CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET,
            "discovery": idp.discovery_url(),
            "bearer_only": true,
        });
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    };
    // A protected admin area and an open area above it, same upstream.
    admin_put(
        &gw,
        "admin",
        json!({"uri": "/api/admin/*", "upstream": upstream(&echo),
        "plugins": {"openid-connect": plugin(json!({}))}}),
    );
    admin_put(
        &gw,
        "api",
        json!({"uri": "/api/*", "upstream": upstream(&echo)}),
    );
    // A host's own route, and the catch-all for every other host.
    admin_put(
        &gw,
        "host",
        json!({"uri": "/who", "hosts": ["app.example.org"],
        "upstream": upstream(&host_echo)}),
    );
    admin_put(
        &gw,
        "catchall",
        json!({"uri": "/who", "upstream": upstream(&echo)}),
    );
    // Tokens are checked on /anything/*; the upstream echoes headers.
    admin_put(
        &gw,
        "jwks",
        json!({"uri": "/anything/*", "upstream": upstream(&echo),
        "plugins": {"openid-connect": plugin(json!({"use_jwks": true}))}}),
    );
    let port = gw.proxy_port;
    wait_for("the routes", Duration::from_secs(5), || {
        let open = get(&gw.url("/api/x"), &[]).ok()?.status == 200;
        let closed = get(&gw.url("/api/admin/x"), &[]).ok()?.status == 401;
        let host = get_raw(port, "/who", "app.example.org", &[])
            .body
            .contains("app-host");
        (open && closed && host).then_some(())
    });

    // Escaped slashes and backslashes: decoded before matching (a redirect
    // to the decoded path), which is the protected route's.
    for path in [
        "/api/admin%2Fusers",
        "/api/admin%2fusers",
        "/api/admin%5Cusers",
        "/api/admin%5cusers",
    ] {
        let r = get_raw(port, path, "gw.example", &[]);
        assert!(
            (300..400).contains(&r.status),
            "{path}: {} {}",
            r.status,
            r.body
        );
        let to = location_path(&r);
        assert_eq!(to, "/api/admin/users", "{path}");
        let r = get_raw(port, &to, "gw.example", &[]);
        assert_eq!(r.status, 401, "{path} → {to}: {}", r.body);
        assert_eq!(echo.count(path), 0, "{path} reached the upstream");
    }
    assert_eq!(echo.count("/api/admin/users"), 0);

    // Host with a trailing dot: the host's virtual host, as without it.
    for host in [
        "app.example.org.",
        "APP.example.org.",
        "app.example.org.:9080",
    ] {
        let r = get_raw(port, "/who", host, &[]);
        assert_eq!(r.status, 200, "{host}: {}", r.body);
        assert!(r.body.contains("\"app-host\""), "{host}: {}", r.body);
    }
    let r = get_raw(port, "/who", "other.example", &[]);
    assert!(r.body.contains("\"upstream\""), "{}", r.body);

    // Underscore spellings of identity headers: dropped, on an allowed
    // request (the filter sets its own) and on an open route.
    let token = idp.client_credentials_token();
    let auth = format!("Bearer {token}");
    let mut headers = vec![("Authorization", auth.as_str())];
    headers.extend(FORGED);
    let r = get_raw(port, "/anything/x", "gw.example", &headers);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_no_forged_header(&r);
    assert!(
        echoed_headers(&r)
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("x-access-token") && *v == token),
        "the filter's own header is there"
    );
    let r = get_raw(port, "/api/x", "gw.example", &FORGED);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_no_forged_header(&r);
}

/// A static Envoy config that lets `_` headers in (Envoy's default): the
/// filter itself strips the identity headers' underscore spellings.
#[test]
fn the_filter_strips_underscore_identity_headers() {
    let dir = TestDir::new("edge_static_underscores");
    let echo = EchoServer::start(dir.path(), "upstream");
    let idp = Provider::start(dir.path(), ProviderOptions::default());
    let plugin = json!({
        "client_id": CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "discovery": idp.discovery_url(),
        "bearer_only": true,
        "use_jwks": true,
    });
    let config = EnvoyConfig::default()
        .keep_underscore_headers()
        .upstream("echo", echo.port)
        .provider(idp.port)
        .route(Route::protected("/anything/", "echo", plugin))
        .route(Route::open("/", Some("echo")));
    let envoy = Envoy::start(dir.path(), &config);
    let port = envoy.port;

    // Envoy lets them through on a route without the filter's work...
    let r = get_raw(port, "/open", "gw.example", &FORGED);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        echoed_headers(&r).iter().any(|(k, _)| k == "x_userinfo"),
        "this config lets underscore headers in: {}",
        r.body
    );

    // ... but not past the filter on its routes.
    let token = idp.client_credentials_token();
    let auth = format!("Bearer {token}");
    let mut headers = vec![("Authorization", auth.as_str())];
    headers.extend(FORGED);
    let r = get_raw(port, "/anything/x", "gw.example", &headers);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_no_forged_header(&r);
    // Also refused requests never carry them anywhere, and mixed case
    // counts: X_USERINFO is x-userinfo too.
    let r = get_raw(
        port,
        "/anything/x",
        "gw.example",
        &[
            ("Authorization", auth.as_str()),
            ("X_USERINFO", "forged-upper"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains("forged-upper"), "{}", r.body);
}
