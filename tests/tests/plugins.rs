//! The APISIX plugins that travel with openid-connect, through the real
//! sidecar and Envoy, with the test provider and httpbin (issue 18):
//! each plugin alone and with openid-connect on one route.

use std::time::Duration;

use integration_tests::admin_calls::{admin, oidc, put, refused};
use integration_tests::gateway::Gateway;
use integration_tests::http::request;
use integration_tests::{
    free_port, get, wait_for, Httpbin, Provider, ProviderOptions, Response, TestDir,
};
use serde_json::{json, Value};

/// Waits until GET `path` answers `want`, and returns that answer.
fn serves(gw: &Gateway, path: &str, headers: &[(&str, &str)], want: u16) -> Response {
    wait_for(
        &format!("GET {path} to answer {want}"),
        Duration::from_secs(10),
        || {
            get(&gw.url(path), headers)
                .ok()
                .filter(|r| r.status == want)
        },
    )
}

struct Stack {
    _dir: TestDir,
    provider: Provider,
    _httpbin: Httpbin,
    gw: Gateway,
    upstream: Value,
    https_port: u16,
}

fn stack() -> Stack {
    stack_with(&[])
}

/// [`stack`], the sidecar started with `extra` flags too.
fn stack_with(extra: &[&str]) -> Stack {
    let dir = TestDir::for_current_test();
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let httpbin = Httpbin::start(dir.path());
    let https_port = free_port();
    let https = https_port.to_string();
    let mut args = vec!["--https-port", https.as_str()];
    args.extend_from_slice(extra);
    let gw = Gateway::start(dir.path(), &args);
    let upstream =
        json!({"type": "roundrobin", "nodes": {format!("127.0.0.1:{}", httpbin.port): 1}});
    Stack {
        _dir: dir,
        provider,
        _httpbin: httpbin,
        gw,
        upstream,
        https_port,
    }
}

#[test]
fn proxy_rewrite_alone_and_after_the_token_check() {
    let s = stack();
    let gw = &s.gw;
    let list = gw.admin("GET", "/apisix/admin/plugins/list", None).json();
    assert!(
        list.as_array().unwrap().contains(&json!("proxy-rewrite")),
        "{list}"
    );

    // APISIX's docs body (uri, host, headers add/set/remove), on a prefix
    // route: the whole path is replaced, the query kept.
    put(
        gw,
        "/apisix/admin/routes/docs",
        &json!({
            "methods": ["GET"],
            "uri": "/test/*",
            "plugins": {"proxy-rewrite": {
                "uri": "/anything/home.html",
                "host": "iresty.com",
                "headers": {
                    "set": {"X-Api-Version": "v1", "X-Api-Engine": "apisix", "X-Pct": "50%25"},
                    "add": {"X-Request-ID": "112233", "X-Added": "1"},
                    "remove": ["X-test"]
                }
            }},
            "upstream": s.upstream,
        }),
    );
    let r = serves(
        gw,
        "/test/index.html?a=1",
        &[
            ("x-test", "gone"),
            ("x-api-version", "client"),
            ("x-added", "0"),
        ],
        200,
    );
    let seen = r.json();
    assert_eq!(
        seen["url"], "http://iresty.com/anything/home.html?a=1",
        "{seen:#}"
    );
    let h = &seen["headers"];
    assert_eq!(h["X-Api-Version"], "v1", "set overwrites: {h:#}");
    assert_eq!(h["X-Api-Engine"], "apisix");
    assert_eq!(h["X-Pct"], "50%25", "a % is literal: {h:#}");
    // (httpbin hides X-Request-Id, so X-Added shows `add`, appended.)
    assert_eq!(h["X-Added"], "0,1", "{h:#}");
    assert!(h.get("X-Test").is_none(), "removed: {h:#}");

    // regex_uri: the first match only, as ngx.re.sub (Envoy alone would
    // replace both "/a"), with groups; and after a bearer token check.
    put(
        gw,
        "/apisix/admin/routes/re",
        &json!({
            "uri": "/anything/old/*",
            "plugins": {
                "proxy-rewrite": {"regex_uri": ["/old/(\\w+)/a", "/new/$1/b"]},
                "openid-connect": oidc(&s.provider.discovery_url(), json!({"bearer_only": true})),
            },
            "upstream": s.upstream,
        }),
    );
    serves(gw, "/anything/old/x/a/a", &[], 401);
    let token = format!("Bearer {}", s.provider.client_credentials_token());
    let r = serves(
        gw,
        "/anything/old/x/a/a/old/y/a?q=%2F",
        &[("authorization", &token)],
        200,
    );
    let seen = r.json();
    assert!(
        seen["url"]
            .as_str()
            .unwrap()
            .ends_with("/anything/new/x/b/a/old/y/a?q=/"),
        "{seen:#}"
    );
    assert!(seen["headers"]["X-Access-Token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));

    // Refused by name: what has no Envoy mapping, and identity headers the
    // filter owns (the router applies route headers after the filter, so a
    // set X-Userinfo would overwrite the verified identity).
    let r = admin(
        gw,
        "PUT",
        "/apisix/admin/routes/bad",
        &json!({"uri": "/bad", "upstream": s.upstream, "plugins": {"proxy-rewrite": {
            "method": "POST",
            "regex_uri": ["^/a", "/b", "^/c", "/d"],
            "uri": "/$uri/x",
            "headers": {"X-Userinfo": "eyJzdWIiOiJhZG1pbiJ9", "x_access_token": "t"},
        }}}),
    );
    refused(
        &r,
        &[
            "plugins.proxy-rewrite.method\" is not supported",
            "plugins.proxy-rewrite.regex_uri\" is not supported with more than one",
            "plugins.proxy-rewrite.uri\" is not supported with nginx variables",
            "plugins.proxy-rewrite.headers.X-Userinfo\" is an identity header",
            "plugins.proxy-rewrite.headers.x_access_token\" is an identity header",
        ],
    );
    assert_eq!(get(&gw.url("/bad"), &[]).unwrap().status, 404);
}

#[test]
fn redirect_http_to_https_and_uri_before_and_after_the_token_check() {
    let s = stack();
    let gw = &s.gw;
    // APISIX's docs bodies.
    put(
        gw,
        "/apisix/admin/routes/tls",
        &json!({"uri": "/anything/tls/*", "plugins": {"redirect": {"http_to_https": true}},
                "upstream": s.upstream}),
    );
    put(
        gw,
        "/apisix/admin/routes/moved",
        &json!({"uri": "/test/index.html",
                "plugins": {"redirect": {"uri": "/test/default.html", "ret_code": 301}},
                "upstream": s.upstream}),
    );
    let r = serves(gw, "/anything/tls/x?q=1", &[], 301);
    let host = format!("127.0.0.1:{}", gw.proxy_port);
    let want = format!("https://127.0.0.1:{}/anything/tls/x?q=1", s.https_port);
    assert_eq!(r.header("location"), Some(want.as_str()));
    // Another method: 308 (the body is sent again). A client's
    // X-Forwarded-Proto does not skip the redirect (Envoy is the edge and
    // sets the scheme from the connection).
    let r = request(
        "POST",
        &gw.url("/anything/tls/x?q=1"),
        &[("x-forwarded-proto", "https")],
        Some(b"a".to_vec()),
    )
    .unwrap();
    assert_eq!(r.status, 308, "{}", r.body);
    assert_eq!(r.header("location"), Some(want.as_str()));
    let r = get(
        &gw.url("/anything/tls/x"),
        &[("x-forwarded-proto", "https"), ("host", &host)],
    )
    .unwrap();
    assert_eq!(r.status, 301);

    // uri: the query is dropped (no append_query_string).
    let r = serves(gw, "/test/index.html?a=1", &[], 301);
    let loc = r.header("location").unwrap_or_default().to_string();
    assert!(loc.ends_with("/test/default.html"), "{loc}");

    // With openid-connect on the same route: the token check comes first
    // (as in APISIX: openid-connect 2599 before redirect 900).
    put(
        gw,
        "/apisix/admin/routes/moved",
        &json!({"uri": "/test/index.html",
                "plugins": {
                    "redirect": {"uri": "https://new.example/x?y=1", "ret_code": 307},
                    "openid-connect": oidc(&s.provider.discovery_url(), json!({"bearer_only": true})),
                },
                "upstream": s.upstream}),
    );
    serves(gw, "/test/index.html", &[], 401);
    let token = format!("Bearer {}", s.provider.client_credentials_token());
    let r = serves(
        gw,
        "/test/index.html?a=1",
        &[("authorization", &token)],
        307,
    );
    assert_eq!(r.header("location"), Some("https://new.example/x?y=1"));

    // Refused by name.
    let r = admin(
        gw,
        "PUT",
        "/apisix/admin/routes/bad",
        &json!({"uri": "/bad", "upstream": s.upstream, "plugins": {"redirect": {
            "uri": "https://$host$request_uri", "ret_code": 200, "encode_uri": true,
        }}}),
    );
    refused(
        &r,
        &[
            "plugins.redirect.uri\" is not supported with nginx variables",
            "plugins.redirect.ret_code\" is not supported",
            "plugins.redirect.encode_uri\" is not supported",
        ],
    );
    let r = admin(
        gw,
        "PUT",
        "/apisix/admin/routes/bad",
        &json!({"uri": "/bad", "upstream": s.upstream, "plugins": {"redirect": {
            "http_to_https": true, "uri": "/x",
        }}}),
    );
    refused(&r, &["must set exactly one of"]);
}

#[test]
fn ip_restriction_runs_before_the_login_and_ignores_x_forwarded_for() {
    let s = stack();
    let gw = &s.gw;
    let disc = s.provider.discovery_url();
    let login = oidc(
        &disc,
        json!({"bearer_only": false,
               "redirect_uri": format!("http://localhost:{}/anything/callback", gw.proxy_port)}),
    );
    // APISIX's docs body (blacklist), with a login on the same route.
    put(
        gw,
        "/apisix/admin/routes/deny",
        &json!({"uri": "/anything/deny/*",
                "plugins": {"ip-restriction": {"blacklist": ["127.0.0.0/24", "113.74.26.106"]},
                            "openid-connect": login},
                "upstream": s.upstream}),
    );
    put(
        gw,
        "/apisix/admin/routes/allow",
        &json!({"uri": "/anything/allow/*",
                "plugins": {"ip-restriction": {"whitelist": ["10.0.0.0/8", "fe80::/10"],
                                               "message": "Do you know where you are?"}},
                "upstream": s.upstream}),
    );
    put(
        gw,
        "/apisix/admin/routes/ok",
        &json!({"uri": "/anything/ok/*",
                "plugins": {"ip-restriction": {"whitelist": ["127.0.0.1", "::1"]},
                            "openid-connect": oidc(&disc, json!({"bearer_only": true}))},
                "upstream": s.upstream}),
    );
    put(
        gw,
        "/apisix/admin/routes/open",
        &json!({"uri": "/anything/open/*", "upstream": s.upstream}),
    );

    // A browser navigation to a login route from a refused address: 403
    // with APISIX's body, no redirect to the provider; X-Forwarded-For
    // from the client does not change the address.
    const HTML: &str = "text/html,application/xhtml+xml";
    for xff in ["", "10.1.2.3"] {
        let mut h = vec![("accept", HTML)];
        if !xff.is_empty() {
            h.push(("x-forwarded-for", xff));
        }
        let r = serves(gw, "/anything/deny/x", &h, 403);
        assert!(r.header("location").is_none());
        assert_eq!(
            r.json(),
            json!({"message": "Your IP address is not allowed"})
        );
        let r = serves(gw, "/anything/allow/x", &h, 403);
        assert_eq!(r.json(), json!({"message": "Do you know where you are?"}));
    }
    // Allowed: the token check comes next.
    serves(gw, "/anything/ok/x", &[], 401);
    let token = format!("Bearer {}", s.provider.client_credentials_token());
    let r = serves(gw, "/anything/ok/x", &[("authorization", &token)], 200);
    assert!(r.json()["headers"]["X-Access-Token"].is_string());
    // A route without the plugin passes.
    serves(gw, "/anything/open/x", &[], 200);

    let r = admin(
        gw,
        "PUT",
        "/apisix/admin/routes/bad",
        &json!({"uri": "/bad", "upstream": s.upstream, "plugins": {"ip-restriction": {
            "whitelist": ["10.0.0.0/33", "x"], "blacklist": ["1.2.3.4"],
        }}}),
    );
    refused(&r, &["plugins.ip-restriction\" must set exactly one of"]);
    let r = admin(
        gw,
        "PUT",
        "/apisix/admin/routes/bad",
        &json!({"uri": "/bad", "upstream": s.upstream, "plugins": {"ip-restriction": {
            "whitelist": ["10.0.0.0/33"], "response_code": 404,
        }}}),
    );
    refused(
        &r,
        &[
            "plugins.ip-restriction.whitelist\" \"10.0.0.0/33\" is not an IP address or CIDR",
            "plugins.ip-restriction.response_code\" is not supported",
        ],
    );
}

/// Behind a trusted proxy hop (Envoy then takes the client's address from
/// `X-Forwarded-For`), ip-restriction still tests the connection's peer,
/// the address `remote_addrs` and `vars` test too (nginx's `$remote_addr`
/// without `real_ip`): a client that connects directly cannot choose its
/// address with a header.
#[test]
fn ip_restriction_tests_the_peer_even_with_trusted_proxy_hops() {
    let s = stack_with(&["--trusted-proxy-hops", "1"]);
    let gw = &s.gw;
    put(
        gw,
        "/apisix/admin/routes/deny",
        &json!({"uri": "/anything/deny/*",
                "plugins": {"ip-restriction": {"blacklist": ["127.0.0.0/24"]}},
                "upstream": s.upstream}),
    );
    put(
        gw,
        "/apisix/admin/routes/allow",
        &json!({"uri": "/anything/allow/*",
                "plugins": {"ip-restriction": {"whitelist": ["10.0.0.0/8"]}},
                "upstream": s.upstream}),
    );
    for xff in ["", "10.1.2.3", "10.1.2.3, 10.9.9.9"] {
        let h: Vec<(&str, &str)> = if xff.is_empty() {
            vec![]
        } else {
            vec![("x-forwarded-for", xff)]
        };
        serves(gw, "/anything/deny/x", &h, 403);
        serves(gw, "/anything/allow/x", &h, 403);
    }
}

#[test]
fn cors_preflight_is_answered_before_the_login() {
    let s = stack();
    let gw = &s.gw;
    let disc = s.provider.discovery_url();
    let login = oidc(
        &disc,
        json!({"bearer_only": false,
               "redirect_uri": format!("http://localhost:{}/anything/callback", gw.proxy_port)}),
    );
    // APISIX's docs body, on a login-protected route.
    put(
        gw,
        "/apisix/admin/routes/app",
        &json!({"uri": "/anything/app/*",
                "plugins": {"cors": {
                    "allow_origins": "http://app.example,https://other.example:8443",
                    "allow_methods": "GET,POST",
                    "allow_headers": "authorization,content-type",
                    "expose_headers": "x-req",
                    "max_age": 50,
                    "allow_credential": true
                }, "openid-connect": login},
                "upstream": s.upstream}),
    );
    put(
        gw,
        "/apisix/admin/routes/api",
        &json!({"uri": "/anything/api/*",
                "plugins": {"cors": {"allow_origins_by_regex": ["^https://.*\\.example\\.org$"],
                                     "allow_origins": "http://x.example"},
                            "openid-connect": oidc(&disc, json!({"bearer_only": true}))},
                "upstream": s.upstream}),
    );
    let preflight = |path: &str, origin: &str| {
        request(
            "OPTIONS",
            &gw.url(path),
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("accept", "text/html"),
            ],
            None,
        )
        .unwrap()
    };
    let r = wait_for("the preflight answer", Duration::from_secs(10), || {
        let r = preflight("/anything/app/x", "http://app.example");
        (r.status == 200).then_some(r)
    });
    assert!(r.header("location").is_none());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://app.example")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET,POST"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("authorization,content-type")
    );
    assert_eq!(r.header("access-control-max-age"), Some("50"));
    // Another origin gets no CORS answer: the request goes on to the login.
    let r = preflight("/anything/app/x", "http://evil.example");
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "{:?}",
        r.headers
    );
    assert_ne!(r.status, 200);

    // Bearer API: regex origins; the 401 of a missing token and the 200
    // both carry the CORS headers.
    let r = preflight("/anything/api/x", "https://a.example.org");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://a.example.org")
    );
    let origin = [("origin", "http://x.example")];
    let r = get(&gw.url("/anything/api/x"), &origin).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://x.example")
    );
    let token = format!("Bearer {}", s.provider.client_credentials_token());
    let r = get(
        &gw.url("/anything/api/x"),
        &[origin[0], ("authorization", &token)],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://x.example")
    );

    let r = admin(
        gw,
        "PUT",
        "/apisix/admin/routes/bad",
        &json!({"uri": "/bad", "upstream": s.upstream, "plugins": {"cors": {
            "allow_origins": "*", "allow_credential": true, "allow_headers": "**",
            "allow_origins_by_metadata": ["a"],
        }}}),
    );
    refused(
        &r,
        &[
            "plugins.cors.allow_origins\" you can not set '*'",
            "plugins.cors.allow_headers\" \"**\" is not supported",
            "plugins.cors.allow_origins_by_metadata\" is not supported",
        ],
    );
}

#[test]
fn response_rewrite_headers_after_the_token_check() {
    let s = stack();
    let gw = &s.gw;
    put(
        gw,
        "/apisix/admin/routes/rr",
        &json!({"uri": "/response-headers",
                "plugins": {"response-rewrite": {"headers": {
                                "set": {"X-Server-id": 3, "X-Server-status": "on"},
                                "add": ["X-Up: 2", "X-Up:3"],
                                "remove": ["X-Gone"]}},
                            "openid-connect": oidc(&s.provider.discovery_url(), json!({"bearer_only": true}))},
                "upstream": s.upstream}),
    );
    serves(gw, "/response-headers", &[], 401);
    let token = format!("Bearer {}", s.provider.client_credentials_token());
    let r = serves(
        gw,
        "/response-headers?X-Up=1&X-Gone=1&X-Server-status=off",
        &[("authorization", &token)],
        200,
    );
    assert_eq!(r.header("x-server-id"), Some("3"));
    assert_eq!(r.header("x-server-status"), Some("on"), "{:?}", r.headers);
    let ups: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("x-up"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(ups, ["1", "2", "3"], "{:?}", r.headers);
    assert!(r.header("x-gone").is_none(), "{:?}", r.headers);

    let r = admin(
        gw,
        "PUT",
        "/apisix/admin/routes/bad",
        &json!({"uri": "/bad", "upstream": s.upstream, "plugins": {"response-rewrite": {
            "body": "{\"code\":\"ok\"}", "status_code": 200, "headers": {"X-A": "$status"},
        }}}),
    );
    refused(
        &r,
        &[
            "plugins.response-rewrite.body\" is not supported",
            "plugins.response-rewrite.status_code\" is not supported",
            "plugins.response-rewrite.headers.X-A\" is not supported with nginx variables",
        ],
    );
    // `add` is APISIX's array of lines (proxy-rewrite's object form is
    // refused here), and a value may not hold a colon, as in APISIX.
    let r = admin(
        gw,
        "PUT",
        "/apisix/admin/routes/bad",
        &json!({"uri": "/bad", "upstream": s.upstream, "plugins": {"response-rewrite": {
            "headers": {"add": {"X-Up": "2"}}}}}),
    );
    refused(
        &r,
        &["plugins.response-rewrite.headers.add\" must be a non-empty array of \"Name: value\" strings"],
    );
    let r = admin(
        gw,
        "PUT",
        "/apisix/admin/routes/bad",
        &json!({"uri": "/bad", "upstream": s.upstream, "plugins": {"response-rewrite": {
            "headers": {"add": ["Link: <http://x>"]}}}}),
    );
    refused(
        &r,
        &["plugins.response-rewrite.headers.add\" \"Link: <http://x>\" is not a \"Name: value\" string"],
    );
    assert_eq!(
        gw.admin("GET", "/apisix/admin/routes/bad", None).status,
        404
    );
}
