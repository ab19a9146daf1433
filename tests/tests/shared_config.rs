//! Services, plugin configs and global rules through the real sidecar and
//! Envoy, with the test provider and httpbin: a service's openid-connect
//! config and upstream serve two routes with one login; a plugin config and
//! a global rule protect the routes that take them in; refusals change
//! nothing Envoy serves; the objects live in etcd where APISIX keeps them.

use std::time::{Duration, Instant};

use integration_tests::admin_calls::{admin, oidc, put, refused};
use integration_tests::browser::Browser;
use integration_tests::etcd::Etcd;
use integration_tests::gateway::Gateway;
use integration_tests::http::request;
use integration_tests::provider::{DEFAULT_CLIENT_SECRET, PASSWORD, USER};
use integration_tests::{get, wait_for, Httpbin, Provider, ProviderOptions, TestDir};
use serde_json::{json, Value};

const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const WAIT: Duration = Duration::from_secs(10);

/// The status of a GET of `path` (no redirects followed).
fn status(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> u16 {
    get(&gw.url(path), headers).map_or(0, |r| r.status)
}

/// Waits until GET `path` answers `want` (changes reach Envoy in well under
/// a second; the bound is for a loaded machine).
fn serves(gw: &Gateway, path: &str, headers: &[(&str, &str)], want: u16) {
    wait_for(
        &format!("GET {path} to answer {want}"),
        Duration::from_secs(10),
        || (status(gw, path, headers) == want).then_some(()),
    );
}

#[test]
fn one_login_serves_every_route_of_a_service() {
    let dir = TestDir::for_current_test();
    let mut options = ProviderOptions::default();
    options
        .env
        .push(("NODE_OPTIONS".into(), "--max-http-header-size=65536".into()));
    let provider = Provider::start(dir.path(), options);
    let httpbin = Httpbin::start(dir.path());
    let gw = Gateway::start(dir.path(), &[]);
    let port = gw.proxy_port;
    let node = format!("127.0.0.1:{}", httpbin.port);

    // One login config and upstream on the service; two routes take them in.
    let service = json!({
        "plugins": {"openid-connect": oidc(&provider.discovery_url(), json!({
            "bearer_only": false,
            // The test provider registers this redirect URI (any loopback
            // port); route a serves it.
            "redirect_uri": format!("http://localhost:{port}/anything/callback"),
        }))},
        "upstream": {"type": "roundrobin", "nodes": {node.as_str(): 1}},
    });
    put(&gw, "/apisix/admin/services/app", &service);
    for (id, uris) in [
        ("a", json!(["/anything/a/*", "/anything/callback"])),
        ("b", json!(["/anything/b/*"])),
    ] {
        put(
            &gw,
            &format!("/apisix/admin/routes/{id}"),
            &json!({"uris": uris, "service_id": "app"}),
        );
    }
    // Both protected: a browser navigation starts a login.
    for path in ["/anything/a/x", "/anything/b/x"] {
        serves(&gw, path, &[("accept", HTML)], 302);
    }

    let browser = Browser::start(dir.path());
    browser.goto(&gw.url("/anything/a/test"));
    browser.wait_for_element("#kc-form-login", WAIT);
    browser.login(USER, PASSWORD);
    let landed = format!("http://localhost:{port}/anything/a/test");
    let start = Instant::now();
    while browser.current_url() != landed {
        assert!(
            start.elapsed() < WAIT,
            "login did not land on {landed}: {}",
            browser.current_url()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(browser.response_status(), Some(200));
    // The session cookie made on route a opens route b: same service, same
    // config and generated session secret.
    browser.goto(&format!("http://localhost:{port}/anything/b/test"));
    assert_eq!(
        browser.response_status(),
        Some(200),
        "{}",
        browser.page_text()
    );
    let page: Value = serde_json::from_str(&browser.text_of("body")).expect("httpbin's JSON");
    assert_eq!(
        page["url"],
        format!("http://localhost:{port}/anything/b/test")
    );
    assert!(
        page["headers"]["X-Access-Token"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "route b forwards the identity: {page:#}"
    );
    drop(browser);

    // Another login config on the same host with APISIX's cookie defaults:
    // its login would end this session. Allowed (as in APISIX), and shown
    // in /status.
    let mut other = service["plugins"]["openid-connect"].clone();
    other["session"] = json!({"secret": "another-secret-of-32-characters!"});
    put(
        &gw,
        "/apisix/admin/routes/c",
        &json!({"uri": "/anything/c/*", "upstream": service["upstream"],
                "plugins": {"openid-connect": other}}),
    );
    wait_for("the clash in /status", WAIT, || {
        let status = gw.admin("GET", "/status", None).json();
        let warnings = status["warnings"].as_array()?.clone();
        warnings
            .iter()
            .any(|w| {
                w.as_str()
                    .unwrap_or_default()
                    .contains("routes [a] and [c]")
            })
            .then_some(())
    });
    let status = gw.admin("GET", "/status", None).body;
    assert!(!status.contains("another-secret"), "{status}");
    drop(gw);
}

#[test]
fn plugin_configs_global_rules_and_refusals_through_envoy() {
    let dir = TestDir::for_current_test();
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let httpbin = Httpbin::start(dir.path());
    let gw = Gateway::start(dir.path(), &[]);
    let disc = provider.discovery_url();
    let upstream = json!({"nodes": {format!("127.0.0.1:{}", httpbin.port): 1}});
    let bearer = json!({"openid-connect": oidc(&disc, json!({"bearer_only": true}))});
    let token = format!("Bearer {}", provider.client_credentials_token());
    let auth = [("authorization", token.as_str())];

    // A plugin config protects the route that names it.
    put(
        &gw,
        "/apisix/admin/plugin_configs/pc",
        &json!({"plugins": bearer}),
    );
    put(
        &gw,
        "/apisix/admin/routes/pc",
        &json!({"uri": "/anything/pc/*", "plugin_config_id": "pc", "upstream": upstream}),
    );
    put(
        &gw,
        "/apisix/admin/routes/plain",
        &json!({"uri": "/anything/plain/*", "upstream": upstream}),
    );
    serves(&gw, "/anything/pc/x", &[], 401);
    serves(&gw, "/anything/pc/x", &auth, 200);
    serves(&gw, "/anything/plain/x", &[], 200);

    // Refusals: unknown ids, deleting what is used, a change that would
    // break a route. Nothing changes in what Envoy serves.
    refused(
        &admin(
            &gw,
            "PUT",
            "/apisix/admin/routes/x",
            &json!({"uri": "/anything/x/*", "service_id": "nope", "upstream": upstream}),
        ),
        &["failed to fetch service info by service id [nope], response code: 404"],
    );
    refused(
        &gw.admin("DELETE", "/apisix/admin/plugin_configs/pc", None),
        &["can not delete this plugin config, route [pc] is still using it now"],
    );
    refused(
        &admin(
            &gw,
            "PATCH",
            "/apisix/admin/plugin_configs/pc",
            &json!({"plugins": {"openid-connect": {"discovery": null}}}),
        ),
        &["property \"plugins.openid-connect.discovery\" is required"],
    );
    // A global rule with openid-connect while a route has its own: APISIX
    // would run both; refused, naming the route and the rule.
    refused(
        &admin(
            &gw,
            "PUT",
            "/apisix/admin/global_rules/g",
            &json!({"plugins": bearer}),
        ),
        &["route [pc] uses this global rule", "global rule [g]"],
    );
    assert_eq!(status(&gw, "/anything/pc/x", &[]), 401);
    assert_eq!(status(&gw, "/anything/plain/x", &[]), 200);

    // Without it, the global rule protects every route, at once.
    assert_eq!(
        gw.admin("DELETE", "/apisix/admin/routes/pc", None).status,
        200
    );
    put(
        &gw,
        "/apisix/admin/global_rules/g",
        &json!({"plugins": bearer}),
    );
    serves(&gw, "/anything/plain/x", &[], 401);
    assert_eq!(status(&gw, "/anything/plain/x", &auth), 200);
    assert_eq!(
        gw.admin("DELETE", "/apisix/admin/global_rules/g", None)
            .status,
        200
    );
    serves(&gw, "/anything/plain/x", &[], 200);

    // A sub-path PATCH replaces what it names, validated as a PUT.
    let r = admin(&gw, "PATCH", "/apisix/admin/routes/plain/plugins", &bearer);
    assert_eq!(r.status, 200, "{}", r.body);
    serves(&gw, "/anything/plain/x", &[], 401);
    refused(
        &admin(
            &gw,
            "PATCH",
            "/apisix/admin/routes/plain/plugins/openid-connect",
            &json!({"bearer_only": true}),
        ),
        &["plugins.openid-connect.client_id"],
    );
    refused(
        &admin(&gw, "PATCH", "/apisix/admin/routes/plain/uri/x", &json!(1)),
        &["invalid sub-path: /uri"],
    );
    assert_eq!(status(&gw, "/anything/plain/x", &[]), 401);
    assert_eq!(status(&gw, "/anything/plain/x", &auth), 200);

    // A service change reaches its routes at once; a route overriding the
    // service's plugin with a partial config is refused (APISIX replaces a
    // plugin's config whole), and the route stays protected.
    put(
        &gw,
        "/apisix/admin/services/s",
        &json!({"upstream": upstream}),
    );
    put(
        &gw,
        "/apisix/admin/routes/svc",
        &json!({"uri": "/anything/svc/*", "service_id": "s"}),
    );
    serves(&gw, "/anything/svc/x", &[], 200);
    let r = admin(
        &gw,
        "PATCH",
        "/apisix/admin/services/s",
        &json!({"plugins": bearer}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    serves(&gw, "/anything/svc/x", &[], 401);
    assert_eq!(status(&gw, "/anything/svc/x", &auth), 200);
    refused(
        &admin(
            &gw,
            "PATCH",
            "/apisix/admin/routes/svc",
            &json!({"plugins": {"openid-connect": {"bearer_only": false}}}),
        ),
        &["plugins.openid-connect.client_id"],
    );
    refused(
        &admin(
            &gw,
            "PATCH",
            "/apisix/admin/services/s",
            &json!({"upstream": null}),
        ),
        &[
            "route [svc] uses this service and would not be valid",
            "property \"upstream\" is required",
        ],
    );
    refused(
        &gw.admin("DELETE", "/apisix/admin/services/s", None),
        &["can not delete this service directly, route [svc] is still using it now"],
    );
    assert_eq!(status(&gw, "/anything/svc/x", &[]), 401);
    // The answers never show the secrets.
    let r = gw.admin("GET", "/apisix/admin/services/s", None);
    assert_eq!(
        r.json()["value"]["plugins"]["openid-connect"]["client_secret"],
        "******"
    );
    assert!(!r.body.contains(DEFAULT_CLIENT_SECRET), "{}", r.body);
}

#[test]
fn shared_objects_live_in_etcd_where_apisix_keeps_them() {
    let dir = TestDir::for_current_test();
    let etcd = Etcd::start(dir.path());
    let httpbin = Httpbin::start(dir.path());
    let url = etcd.url();
    let gw = Gateway::start(dir.path(), &["--etcd", &url]);
    let upstream = json!({"nodes": {format!("127.0.0.1:{}", httpbin.port): 1}});
    put(
        &gw,
        "/apisix/admin/services/s1",
        &json!({"upstream": upstream}),
    );
    put(
        &gw,
        "/apisix/admin/plugin_configs/p1",
        &json!({"plugins": {}}),
    );
    put(
        &gw,
        "/apisix/admin/global_rules/g1",
        &json!({"plugins": {}}),
    );
    put(
        &gw,
        "/apisix/admin/routes/r1",
        &json!({"uri": "/anything/*", "service_id": "s1", "plugin_config_id": "p1"}),
    );
    for (key, id) in [
        ("/apisix/services/s1", "s1"),
        ("/apisix/plugin_configs/p1", "p1"),
        ("/apisix/global_rules/g1", "g1"),
        ("/apisix/routes/r1", "r1"),
    ] {
        let v = etcd.get(key).unwrap_or_else(|| panic!("{key} in etcd"));
        assert_eq!(v["id"], id, "{key}: {v}");
    }
    serves(&gw, "/anything/x", &[], 200);
    // A service written straight into etcd (by APISIX, etcdctl, another
    // sidecar) reaches Envoy through the watch.
    let mut s1 = etcd.get("/apisix/services/s1").unwrap();
    s1["upstream"] = json!({"nodes": {"127.0.0.1:1": 1}});
    etcd.put("/apisix/services/s1", &s1);
    wait_for("the watched service to reach Envoy", WAIT, || {
        (status(&gw, "/anything/x", &[]) >= 500).then_some(())
    });
    let r = request("GET", &gw.url("/anything/x"), &[], None).unwrap();
    assert!(r.status >= 500, "{}", r.status);
}
