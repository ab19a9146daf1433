//! Route matching through the sidecar and the real Envoy: APISIX's `vars`
//! (lua-resty-expr expressions) and `remote_addrs`, falling through to the
//! next route when they do not hold, as APISIX does.

use std::net::IpAddr;
use std::time::Duration;

use integration_tests::gateway::Gateway;
use integration_tests::{
    get, static_server, wait_for, Provider, ProviderOptions, Response, TestDir,
};
use serde_json::{json, Value};

fn put(gw: &Gateway, path: &str, body: &Value) {
    let r = gw.admin("PUT", path, Some(&body.to_string()));
    assert!(
        r.status == 201 || r.status == 200,
        "{path}: {} {}",
        r.status,
        r.body
    );
}

/// Who answers `path` with `headers` ("a", "b", or the status).
fn who(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> String {
    let r = get(&gw.url(path), headers).unwrap();
    if r.status == 200 {
        r.body
    } else {
        r.status.to_string()
    }
}

/// The same, from the client address `from` (a loopback address: Linux
/// routes all of 127.0.0.0/8 to lo).
fn who_from(gw: &Gateway, from: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let client = reqwest::blocking::Client::builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut req = client.get(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().unwrap();
    let status = r.status().as_u16();
    let body = r.text().unwrap();
    if status == 200 {
        body
    } else {
        status.to_string()
    }
}

fn error_msg(r: &Response) -> String {
    r.json()["error_msg"]
        .as_str()
        .unwrap_or_else(|| panic!("no error_msg: {}", r.body))
        .to_string()
}

/// A route to `a` on `/who` for `host`, with `extra` attributes, above
/// the host-less fallback to `b`.
fn vars_route(gw: &Gateway, a: u16, host: &str, vars: Value) {
    put(
        gw,
        &format!("/apisix/admin/routes/{}", host.replace('.', "-")),
        &json!({"uri": "/who", "host": host, "vars": vars,
            "upstream": {"nodes": {format!("127.0.0.1:{a}"): 1}}}),
    );
}

#[test]
fn vars_operators_match_and_fall_through() {
    let dir = TestDir::new("matching_vars");
    let (a, _pa) = static_server(&dir, "a");
    let (b, _pb) = static_server(&dir, "b");
    let gw = Gateway::start(dir.path(), &[]);
    put(
        &gw,
        "/apisix/admin/routes/fallback",
        &json!({"uri": "/who", "upstream": {"nodes": {format!("127.0.0.1:{b}"): 1}}}),
    );
    let cases: Vec<(&str, Value)> = vec![
        ("eq.test", json!([["arg_k", "==", "1"]])),
        ("ne.test", json!([["http_x_k", "~=", "v"]])),
        ("re.test", json!([["http_x_k", "~~", "^v[0-9]+$"]])),
        ("ire.test", json!([["http_x_k", "~*", "^v[0-9]+$"]])),
        ("in.test", json!([["http_x_k", "in", ["a.b", "c|d"]]])),
        ("not.test", json!([["http_x_k", "!", "~~", "^v"]])),
        ("cookie.test", json!([["cookie_name", "==", "v"]])),
        ("notcookie.test", json!([["cookie_name", "~=", "v"]])),
        (
            "or.test",
            json!([
                "OR",
                ["arg_k", "==", "1"],
                ["AND", ["http_x_k", "==", "2"], ["cookie_c", "==", "3"]]
            ]),
        ),
        ("meta.test", json!([["http_x_k", "==", "a.*"]])),
        (
            "and.test",
            json!([["arg_k", "==", "1"], ["http_x_k", "==", "2"]]),
        ),
    ];
    for (host, vars) in &cases {
        vars_route(&gw, a, host, vars.clone());
    }
    wait_for("the vars routes", Duration::from_secs(5), || {
        (who(&gw, "/who?k=1", &[("host", "eq.test")]) == "a").then_some(())
    });

    let check = |host: &str, path: &str, headers: &[(&str, &str)], want: &str| {
        let mut h = vec![("host", host)];
        h.extend_from_slice(headers);
        assert_eq!(who(&gw, path, &h), want, "{host} {path} {headers:?}");
    };
    // `==` on a query parameter: the first value, as nginx's $arg_k.
    check("eq.test", "/who?k=1", &[], "a");
    check("eq.test", "/who?x=0&k=1", &[], "a");
    check("eq.test", "/who?k=2", &[], "b");
    check("eq.test", "/who?k=11", &[], "b");
    check("eq.test", "/who", &[], "b");
    // `~=`: a missing header is "not equal" (nil ~= "v" in Lua).
    check("ne.test", "/who", &[], "a");
    check("ne.test", "/who", &[("x-k", "w")], "a");
    check("ne.test", "/who", &[("x-k", "v")], "b");
    // `~~` is a PCRE search; `~*` the same without case.
    check("re.test", "/who", &[("x-k", "v12")], "a");
    check("re.test", "/who", &[("x-k", "V12")], "b");
    check("re.test", "/who", &[("x-k", "xv1")], "b");
    check("re.test", "/who", &[], "b");
    check("ire.test", "/who", &[("x-k", "V12")], "a");
    check("ire.test", "/who", &[("x-k", "v1x")], "b");
    // `in`: exact values, their regex metacharacters escaped.
    check("in.test", "/who", &[("x-k", "a.b")], "a");
    check("in.test", "/who", &[("x-k", "c|d")], "a");
    check("in.test", "/who", &[("x-k", "aXb")], "b");
    check("in.test", "/who", &[("x-k", "c")], "b");
    // `!` on a regex: absent, or present and not matching.
    check("not.test", "/who", &[], "a");
    check("not.test", "/who", &[("x-k", "w1")], "a");
    check("not.test", "/who", &[("x-k", "v1")], "b");
    // Cookies by exact name: `xname=v` is not `name=v`.
    check("cookie.test", "/who", &[("cookie", "name=v")], "a");
    check("cookie.test", "/who", &[("cookie", "a=1; name=v")], "a");
    check("cookie.test", "/who", &[("cookie", "xname=v")], "b");
    check("cookie.test", "/who", &[("cookie", "xcookie_name=v")], "b");
    check("cookie.test", "/who", &[("cookie", "name=vv")], "b");
    check("cookie.test", "/who", &[], "b");
    check("notcookie.test", "/who", &[], "a");
    check("notcookie.test", "/who", &[("cookie", "xname=v")], "a");
    check("notcookie.test", "/who", &[("cookie", "name=v")], "b");
    // OR: one Envoy route per alternative.
    check("or.test", "/who?k=1", &[], "a");
    check("or.test", "/who", &[("x-k", "2"), ("cookie", "c=3")], "a");
    check("or.test", "/who", &[("x-k", "2")], "b");
    check("or.test", "/who?k=2", &[("cookie", "c=3")], "b");
    // A value with regex metacharacters under `==` is text, not a regex.
    check("meta.test", "/who", &[("x-k", "a.*")], "a");
    check("meta.test", "/who", &[("x-k", "abc")], "b");
    check("meta.test", "/who", &[("x-k", "a")], "b");
    // Several expressions: all must hold.
    check("and.test", "/who?k=1", &[("x-k", "2")], "a");
    check("and.test", "/who?k=1", &[], "b");
    // The method and the scheme (a plain-HTTP listener here): this route's
    // node does not listen, so a request it takes is a 503.
    put(
        &gw,
        "/apisix/admin/routes/method",
        &json!({"uri": "/who", "host": "method.test",
            "vars": [["request_method", "==", "POST"], ["scheme", "==", "http"]],
            "upstream": {"nodes": {"127.0.0.1:1": 1}}}),
    );
    wait_for("the method route", Duration::from_secs(5), || {
        let r = integration_tests::http::request(
            "POST",
            &gw.url("/who"),
            &[("host", "method.test")],
            None,
        )
        .unwrap();
        (r.status == 503).then_some(())
    });
    check("method.test", "/who", &[], "b");
}

#[test]
fn refused_vars_are_400_naming_the_expression_and_change_nothing() {
    let dir = TestDir::new("matching_refused");
    let (a, _pa) = static_server(&dir, "a");
    let gw = Gateway::start(dir.path(), &[]);
    put(
        &gw,
        "/apisix/admin/routes/r",
        &json!({"uri": "/who", "vars": [["arg_k", "==", "1"]],
            "upstream": {"nodes": {format!("127.0.0.1:{a}"): 1}}}),
    );
    wait_for("the route", Duration::from_secs(5), || {
        (who(&gw, "/who?k=1", &[]) == "a").then_some(())
    });
    let or3 = json!([
        "OR",
        ["arg_a", "==", "1"],
        ["arg_a", "==", "2"],
        ["arg_a", "==", "3"]
    ]);
    for (vars, want) in [
        (json!([["uri", "==", "/who"]]), "tests the variable \"uri\""),
        (json!([["upstream_addr", "==", "x"]]), "\"upstream_addr\""),
        (json!([["http_x", "~~", "a(?=b)"]]), "RE2 cannot take"),
        (json!([["http_x", "~~", "(a)\\1"]]), "RE2 cannot take"),
        (json!([["arg_k", ">", 1]]), "numeric comparisons"),
        (
            json!([["arg_k", "~=", "1"]]),
            "cannot invert a query-parameter",
        ),
        (
            json!([["http_x_access_token", "==", "t"]]),
            "filter removes or replaces",
        ),
        (json!([or3.clone(), or3]), "at most 8"),
    ] {
        let body = json!({"uri": "/who", "vars": vars,
            "upstream": {"nodes": {format!("127.0.0.1:{a}"): 1}}});
        let r = gw.admin("PUT", "/apisix/admin/routes/r", Some(&body.to_string()));
        assert_eq!(r.status, 400, "{vars}: {}", r.body);
        let msg = error_msg(&r);
        assert!(msg.contains("property \"vars\""), "{msg}");
        assert!(msg.contains(want), "{vars}: {msg}");
        // The route as it was still serves.
        assert_eq!(who(&gw, "/who?k=1", &[]), "a");
        assert_eq!(who(&gw, "/who?k=2", &[]), "404");
    }
    let stored = gw.admin("GET", "/apisix/admin/routes/r", None).json();
    assert_eq!(stored["value"]["vars"], json!([["arg_k", "==", "1"]]));
}

#[test]
fn remote_addrs_select_by_the_connection_address_not_x_forwarded_for() {
    let dir = TestDir::new("matching_remote_addrs");
    let (a, _pa) = static_server(&dir, "a");
    let (b, _pb) = static_server(&dir, "b");
    let (c, _pc) = static_server(&dir, "c");
    // Envoy trusts one proxy hop: X-Forwarded-For's last address becomes
    // its "downstream address"; remote_addrs must still use the peer's.
    let gw = Gateway::start(dir.path(), &["--trusted-proxy-hops", "1"]);
    put(
        &gw,
        "/apisix/admin/routes/ra",
        &json!({"uri": "/who", "priority": 10, "remote_addrs": ["127.0.0.2", "10.0.0.0/8", "2001:db8::/32"],
            "upstream": {"nodes": {format!("127.0.0.1:{a}"): 1}}}),
    );
    put(
        &gw,
        "/apisix/admin/routes/ipm",
        &json!({"uri": "/who", "priority": 5,
            "vars": [["remote_addr", "ipmatch", ["127.0.0.3/32"]]],
            "upstream": {"nodes": {format!("127.0.0.1:{c}"): 1}}}),
    );
    put(
        &gw,
        "/apisix/admin/routes/fallback",
        &json!({"uri": "/who", "upstream": {"nodes": {format!("127.0.0.1:{b}"): 1}}}),
    );
    wait_for("the routes", Duration::from_secs(5), || {
        (who_from(&gw, "127.0.0.2", "/who", &[]) == "a").then_some(())
    });
    assert_eq!(who_from(&gw, "127.0.0.2", "/who", &[]), "a");
    assert_eq!(who_from(&gw, "127.0.0.3", "/who", &[]), "c");
    // Not listed: falls through to the lower-priority route, no 403.
    assert_eq!(who_from(&gw, "127.0.0.1", "/who", &[]), "b");
    assert_eq!(who_from(&gw, "127.0.0.4", "/who", &[]), "b");
    // A forged X-Forwarded-For changes nothing.
    for xff in ["127.0.0.2", "10.1.2.3", "127.0.0.3", "1.1.1.1, 127.0.0.2"] {
        assert_eq!(
            who_from(&gw, "127.0.0.1", "/who", &[("x-forwarded-for", xff)]),
            "b",
            "{xff}"
        );
    }
    assert_eq!(
        who_from(&gw, "127.0.0.2", "/who", &[("x-forwarded-for", "9.9.9.9")]),
        "a"
    );

    // A single `remote_addr`, and a bad one refused by name.
    put(
        &gw,
        "/apisix/admin/routes/ra",
        &json!({"uri": "/who", "priority": 10, "remote_addr": "127.0.0.4",
            "upstream": {"nodes": {format!("127.0.0.1:{a}"): 1}}}),
    );
    wait_for("remote_addr", Duration::from_secs(5), || {
        (who_from(&gw, "127.0.0.4", "/who", &[]) == "a").then_some(())
    });
    assert_eq!(who_from(&gw, "127.0.0.2", "/who", &[]), "b");
    let r = gw.admin(
        "PUT",
        "/apisix/admin/routes/ra",
        Some(
            &json!({"uri": "/who", "remote_addrs": ["127.0.0.300"],
                "upstream": {"nodes": {format!("127.0.0.1:{a}"): 1}}})
            .to_string(),
        ),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        error_msg(&r).contains("property \"remote_addrs\""),
        "{}",
        r.body
    );
    assert_eq!(who_from(&gw, "127.0.0.4", "/who", &[]), "a");
}

/// Envoy chooses the route again after the openid-connect filter changes
/// the request's headers (seen: with the route below accepted, a request
/// with a session cookie was checked by `app`'s config, then went to
/// `landing`'s upstream once the filter took the cookie out). So `vars`
/// may not test a cookie some route's filter removes, on the route itself
/// or on another.
#[test]
fn vars_on_a_session_cookie_the_filter_removes_are_refused() {
    let dir = TestDir::new("matching_session_cookie");
    let (a, _pa) = static_server(&dir, "a");
    let (b, _pb) = static_server(&dir, "b");
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let gw = Gateway::start(dir.path(), &[]);
    let plugin = |cookie_name: &str| {
        json!({"openid-connect": {
            "client_id": provider.client_id(),
            "client_secret": provider.client_secret(),
            "discovery": provider.discovery_url(),
            "redirect_uri": "http://localhost:9080/cb",
            "unauth_action": "pass",
            "session": {"cookie_name": cookie_name}
        }})
    };
    put(
        &gw,
        "/apisix/admin/routes/landing",
        &json!({"uri": "/who", "upstream": {"nodes": {format!("127.0.0.1:{b}"): 1}}}),
    );
    // Only requests with a session cookie to `a`, where the plugin lets
    // the others pass after removing that cookie.
    let app = |vars: Value, cookie_name: &str| {
        json!({"uri": "/who", "priority": 10, "vars": vars,
            "plugins": plugin(cookie_name),
            "upstream": {"nodes": {format!("127.0.0.1:{a}"): 1}}})
    };
    for (vars, cookie_name) in [
        (json!([["cookie_session", "~~", "."]]), "session"),
        (json!([["cookie_sid_2", "~~", "."]]), "sid"),
        (json!([["cookie_sid_flow_x", "~~", "."]]), "sid"),
    ] {
        let r = gw.admin(
            "PUT",
            "/apisix/admin/routes/app",
            Some(&app(vars.clone(), cookie_name).to_string()),
        );
        assert_eq!(r.status, 400, "{vars}: {}", r.body);
        let msg = error_msg(&r);
        assert!(
            msg.contains("property \"vars\"")
                && msg.contains("this route's openid-connect filter removes"),
            "{msg}"
        );
    }
    assert_eq!(who(&gw, "/who", &[("cookie", "session=x")]), "b");

    // Across routes: a login route with cookie `sid`, then a route testing
    // `cookie_sid` (and the other way round) are refused, naming the other.
    put(&gw, "/apisix/admin/routes/app", &app(json!([]), "sid"));
    let tester = json!({"uri": "/who", "priority": 20, "vars": [["cookie_sid", "==", "x"]],
        "upstream": {"nodes": {format!("127.0.0.1:{a}"): 1}}});
    let r = gw.admin("PUT", "/apisix/admin/routes/t", Some(&tester.to_string()));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        error_msg(&r).contains("route [app]'s openid-connect filter removes"),
        "{}",
        r.body
    );
    put(&gw, "/apisix/admin/routes/app", &app(json!([]), "other"));
    put(&gw, "/apisix/admin/routes/t", &tester);
    let r = gw.admin(
        "PUT",
        "/apisix/admin/routes/app",
        Some(&app(json!([]), "sid").to_string()),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        error_msg(&r).contains("route [t] tests \"cookie_sid\""),
        "{}",
        r.body
    );
    // A cookie no filter removes is fine.
    wait_for("the cookie route", Duration::from_secs(5), || {
        (who(&gw, "/who", &[("cookie", "sid=x")]) == "a").then_some(())
    });
}

/// The same for `Authorization`: a route with
/// `access_token_in_authorization_header` adds it to a browser's request
/// (or a bearer request with `X-Access-Token`),
/// and Envoy would then choose the route again: a route testing
/// `http_authorization` (say, a stricter bearer route for API clients,
/// with a higher priority) would get the request without its own checks.
#[test]
fn vars_on_an_authorization_a_login_filter_sets_are_refused() {
    let dir = TestDir::new("matching_authorization");
    let (a, _pa) = static_server(&dir, "a");
    let (b, _pb) = static_server(&dir, "b");
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let gw = Gateway::start(dir.path(), &[]);
    let oidc = |extra: Value| {
        let mut c = json!({
            "client_id": provider.client_id(),
            "client_secret": provider.client_secret(),
            "discovery": provider.discovery_url(),
        });
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"openid-connect": c})
    };
    let web = json!({"uri": "/who", "plugins": oidc(json!({"redirect_uri": "http://localhost:9080/cb",
            "access_token_in_authorization_header": true})),
        "upstream": {"nodes": {format!("127.0.0.1:{b}"): 1}}});
    let api = json!({"uri": "/who", "priority": 10,
        "vars": [["http_authorization", "~~", "^Bearer "]],
        "plugins": oidc(json!({"bearer_only": true, "use_jwks": true,
            "required_scopes": ["admin"]})),
        "upstream": {"nodes": {format!("127.0.0.1:{a}"): 1}}});
    put(&gw, "/apisix/admin/routes/web", &web);
    let r = gw.admin("PUT", "/apisix/admin/routes/api", Some(&api.to_string()));
    assert_eq!(r.status, 400, "{}", r.body);
    let msg = error_msg(&r);
    assert!(
        msg.contains("property \"vars\" tests \"http_authorization\"")
            && msg.contains("route [web]'s openid-connect filter sets"),
        "{msg}"
    );
    assert_eq!(
        gw.admin("GET", "/apisix/admin/routes/api", None).status,
        404
    );

    // The other way round: the tester first, then the login route.
    gw.admin("DELETE", "/apisix/admin/routes/web", None);
    put(&gw, "/apisix/admin/routes/api", &api);
    let r = gw.admin("PUT", "/apisix/admin/routes/web", Some(&web.to_string()));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        error_msg(&r).contains("route [api] tests \"http_authorization\""),
        "{}",
        r.body
    );
    // A bearer route that puts the token in Authorization adds the header
    // to a request whose token came in X-Access-Token: it may not test it
    // either.
    let mut api_sets = api.clone();
    api_sets["plugins"]["openid-connect"]["access_token_in_authorization_header"] = json!(true);
    let r = gw.admin(
        "PUT",
        "/apisix/admin/routes/api",
        Some(&api_sets.to_string()),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        error_msg(&r).contains("this route's openid-connect filter sets"),
        "{}",
        r.body
    );
    // A login route that keeps the token in X-Access-Token changes no
    // Authorization: accepted next to the tester, and an API client's
    // request still reaches the bearer route (refused without the scope:
    // neither upstream answers).
    let mut web_x = web.clone();
    web_x["plugins"]["openid-connect"]["access_token_in_authorization_header"] = json!(false);
    put(&gw, "/apisix/admin/routes/web", &web_x);
    let token = provider.client_credentials_token();
    wait_for("the bearer route", Duration::from_secs(10), || {
        let r = integration_tests::http::get(
            &gw.url("/who"),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .ok()?;
        (r.status == 403).then_some(())
    });
}
