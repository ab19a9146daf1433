//! `limit-count`, `limit-req` and `prometheus` through the real sidecar and
//! Envoy, with the test provider and httpbin (issue 18): each alone, with
//! openid-connect on one route, per client address (the connection's peer,
//! whatever X-Forwarded-For says), shared by Envoy's worker threads.
//!
//! Envoy's buckets start over when it gets a new route table, so each test
//! writes all its routes first, then waits for a last route without limits
//! (routes are pushed in order), and only then counts.

use std::net::IpAddr;
use std::time::Duration;

use integration_tests::admin_calls::{admin, oidc, put, refused};
use integration_tests::gateway::Gateway;
use integration_tests::{get, wait_for, Httpbin, Provider, ProviderOptions, Response, TestDir};
use serde_json::{json, Value};

/// GET `path` on a new connection from source address `from`.
fn get_from(gw: &Gateway, from: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .local_address(from.parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let mut req = client.get(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = r.text().unwrap();
    Response {
        status,
        headers,
        body,
    }
}

/// GET from 127.0.0.1.
fn hit(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Response {
    get_from(gw, "127.0.0.1", path, headers)
}

struct Stack {
    _dir: TestDir,
    provider: Provider,
    _httpbin: Httpbin,
    gw: Gateway,
    upstream: Value,
}

fn stack(concurrency: u32, extra: &[&str]) -> Stack {
    let dir = TestDir::for_current_test();
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let httpbin = Httpbin::start(dir.path());
    let gw = Gateway::start_concurrent(dir.path(), extra, concurrency);
    let upstream =
        json!({"type": "roundrobin", "nodes": {format!("127.0.0.1:{}", httpbin.port): 1}});
    Stack {
        _dir: dir,
        provider,
        _httpbin: httpbin,
        gw,
        upstream,
    }
}

/// Writes a last route without limits and waits until Envoy serves it:
/// the routes written before are in Envoy, and no route change follows.
fn settle(s: &Stack) {
    put(
        &s.gw,
        "/apisix/admin/routes/zz-settle",
        &json!({"uri": "/anything/settle", "upstream": s.upstream}),
    );
    wait_for("the last route in Envoy", Duration::from_secs(10), || {
        get(&s.gw.url("/anything/settle"), &[])
            .ok()
            .filter(|r| r.status == 200)
    });
}

fn quota(r: &Response) -> (Option<&str>, Option<&str>) {
    (
        r.header("x-ratelimit-limit"),
        r.header("x-ratelimit-remaining"),
    )
}

/// APISIX's docs body, per client address: the second request in the
/// window is refused with the quota headers; X-Forwarded-For (even behind
/// a trusted proxy hop) does not make a new client; another source address
/// has its own count; a route without the plugin is not limited.
#[test]
fn limit_count_counts_per_client_address_not_per_x_forwarded_for() {
    let s = stack(1, &["--trusted-proxy-hops", "1"]);
    let gw = &s.gw;
    // "Apply Rate Limiting by Remote Address", as written.
    put(
        gw,
        "/apisix/admin/routes/limit-count-route",
        &json!({"uri": "/anything/lc/*",
                "plugins": {"limit-count": {
                    "count": 1, "time_window": 30, "rejected_code": 429,
                    "key_type": "var", "key": "remote_addr", "policy": "local"}},
                "upstream": s.upstream}),
    );
    put(
        gw,
        "/apisix/admin/routes/constant",
        &json!({"uri": "/anything/const/*",
                "plugins": {"limit-count": {
                    "count": 2, "time_window": 60, "key_type": "constant", "key": "all",
                    "rejected_msg": "Requests are too frequent, please try again later.",
                    "show_limit_quota_header": false}},
                "upstream": s.upstream}),
    );
    settle(&s);

    let r = hit(gw, "/anything/lc/x", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(quota(&r), (Some("1"), Some("0")));
    assert!(r.header("x-ratelimit-reset").is_some());
    let r = hit(gw, "/anything/lc/x", &[]);
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(
        quota(&r),
        (Some("1"), Some("0")),
        "APISIX shows them refused too"
    );
    for xff in ["10.1.2.3", "10.1.2.3, 10.9.9.9", "127.0.0.2"] {
        let r = hit(gw, "/anything/lc/x", &[("x-forwarded-for", xff)]);
        assert_eq!(r.status, 429, "X-Forwarded-For {xff} is not a new client");
    }
    // Another client address: its own count.
    let r = get_from(gw, "127.0.0.2", "/anything/lc/x", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(quota(&r), (Some("1"), Some("0")));
    assert_eq!(get_from(gw, "127.0.0.2", "/anything/lc/x", &[]).status, 429);
    // Without the plugin: never limited, no quota headers.
    for _ in 0..3 {
        let r = hit(gw, "/anything/settle", &[]);
        assert_eq!(r.status, 200);
        assert_eq!(quota(&r), (None, None));
    }

    // key_type constant: one count for every client; rejected_msg is
    // APISIX's body; no quota headers when show_limit_quota_header is false.
    let r = hit(gw, "/anything/const/x", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(quota(&r), (None, None));
    assert_eq!(
        get_from(gw, "127.0.0.2", "/anything/const/x", &[]).status,
        200
    );
    let r = get_from(gw, "127.0.0.3", "/anything/const/x", &[]);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"error_msg": "Requests are too frequent, please try again later."})
    );
    // The other route's refusal keeps Envoy's body (no rejected_msg there).
    let r = hit(gw, "/anything/lc/x", &[]);
    assert_eq!((r.status, r.body.as_str()), (429, "local_rate_limited"));
}

/// APISIX runs openid-connect (rewrite phase, priority 2599) before
/// limit-count (access phase, 1002): a request the login refuses is not
/// counted, one it lets through is.
#[test]
fn limit_count_after_the_login_does_not_count_its_refusals() {
    let s = stack(1, &[]);
    let gw = &s.gw;
    put(
        gw,
        "/apisix/admin/routes/api",
        &json!({"uri": "/anything/api/*",
                "plugins": {
                    "openid-connect": oidc(&s.provider.discovery_url(), json!({"bearer_only": true})),
                    "limit-count": {"count": 2, "time_window": 60, "rejected_code": 429,
                                    "rejected_msg": "slow down"}},
                "upstream": s.upstream}),
    );
    settle(&s);
    for _ in 0..4 {
        let r = hit(gw, "/anything/api/x", &[]);
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(quota(&r), (None, None), "not counted: {:?}", r.headers);
        let r = hit(
            gw,
            "/anything/api/x",
            &[("authorization", "Bearer invalid")],
        );
        assert_eq!(r.status, 401);
    }
    let token = format!("Bearer {}", s.provider.client_credentials_token());
    let auth = [("authorization", token.as_str())];
    let r = hit(gw, "/anything/api/x", &auth);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(quota(&r), (Some("2"), Some("1")));
    assert!(r.json()["headers"]["X-Access-Token"].is_string());
    assert_eq!(hit(gw, "/anything/api/x", &auth).status, 200);
    let r = hit(gw, "/anything/api/x", &auth);
    assert_eq!(r.status, 429);
    assert_eq!(r.json(), json!({"error_msg": "slow down"}));
    // Still refused by the login first: 401, not 429.
    assert_eq!(hit(gw, "/anything/api/x", &[]).status, 401);
}

/// With 4 worker threads, a route's bucket is one for the process: new
/// connections (spread over the workers) share the count.
#[test]
fn limit_count_is_shared_by_envoys_worker_threads() {
    let s = stack(4, &[]);
    let gw = &s.gw;
    put(
        gw,
        "/apisix/admin/routes/lc",
        &json!({"uri": "/anything/lc/*",
                "plugins": {"limit-count": {"count": 3, "time_window": 60}},
                "upstream": s.upstream}),
    );
    settle(&s);
    let statuses: Vec<u16> = (0..12)
        .map(|_| hit(gw, "/anything/lc/x", &[]).status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|c| **c == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].iter().all(|c| *c == 503), "{statuses:?}");

    // A known difference from APISIX (which keys counters by the plugin's
    // config version): Envoy builds the per-route buckets with the route
    // table, so any route change starts every count over.
    put(
        gw,
        "/apisix/admin/routes/other",
        &json!({"uri": "/anything/other", "upstream": s.upstream}),
    );
    wait_for("the new route", Duration::from_secs(10), || {
        (hit(gw, "/anything/other", &[]).status == 200).then_some(())
    });
    assert_eq!(hit(gw, "/anything/lc/x", &[]).status, 200, "counted anew");
}

/// APISIX's docs bodies for limit-req: `rate` per second with `burst`
/// more at once (Envoy passes the burst undelayed, as `nodelay`); after
/// `1 / rate` seconds one more passes; per client address. (Slow rates,
/// so a slow machine does not refill the bucket between requests.)
#[test]
fn limit_req_rate_and_burst_per_client() {
    let s = stack(1, &[]);
    let gw = &s.gw;
    // "Apply Rate Limiting by Remote Address" (nodelay: true) and the
    // burst example (nodelay left at its default, false), as written.
    put(
        gw,
        "/apisix/admin/routes/limit-req-route",
        &json!({"uri": "/anything/nodelay/*",
                "plugins": {"limit-req": {"rate": 1, "burst": 0, "key": "remote_addr",
                    "key_type": "var", "rejected_code": 429, "policy": "local",
                    "nodelay": true}},
                "upstream": s.upstream}),
    );
    put(
        gw,
        "/apisix/admin/routes/burst",
        &json!({"uri": "/anything/burst/*",
                "plugins": {
                    "limit-req": {"rate": 0.5, "burst": 1, "key": "remote_addr",
                                  "rejected_code": 429, "policy": "local",
                                  "rejected_msg": "wait"},
                    "limit-count": {"count": 100, "time_window": 6000}},
                "upstream": s.upstream}),
    );
    settle(&s);
    assert_eq!(hit(gw, "/anything/nodelay/x", &[]).status, 200);
    assert_eq!(hit(gw, "/anything/nodelay/x", &[]).status, 429);
    assert_eq!(
        get_from(gw, "127.0.0.2", "/anything/nodelay/x", &[]).status,
        200
    );

    let statuses: Vec<u16> = (0..3)
        .map(|_| hit(gw, "/anything/burst/x", &[]).status)
        .collect();
    assert_eq!(statuses, [200, 200, 429], "rate + burst at once");
    let r = hit(gw, "/anything/burst/x", &[]);
    assert_eq!(r.json(), json!({"error_msg": "wait"}));
    // limit-count ran first and counted all four (APISIX: 1002 before 1001).
    assert_eq!(quota(&r), (Some("100"), Some("96")));
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(hit(gw, "/anything/burst/x", &[]).status, 200, "refilled");
    assert_eq!(hit(gw, "/anything/burst/x", &[]).status, 429);
}

/// `prometheus`: the route's requests in Envoy's Prometheus output, under
/// the route's id (or name with prefer_name).
#[test]
fn prometheus_shows_the_routes_requests_in_envoys_prometheus_stats() {
    let s = stack(1, &[]);
    let gw = &s.gw;
    // APISIX's docs body (`"prometheus": {}`), and prefer_name with a name.
    put(
        gw,
        "/apisix/admin/routes/prometheus-route",
        &json!({"uri": "/anything/p/*", "plugins": {"prometheus": {}},
                "upstream": s.upstream}),
    );
    put(
        gw,
        "/apisix/admin/routes/named",
        &json!({"uri": "/anything/named/*", "name": "orders api",
                "plugins": {"prometheus": {"prefer_name": true},
                            "openid-connect": oidc(&s.provider.discovery_url(),
                                                   json!({"bearer_only": true}))},
                "upstream": s.upstream}),
    );
    settle(&s);
    for _ in 0..3 {
        assert_eq!(hit(gw, "/anything/p/x", &[]).status, 200);
    }
    let token = format!("Bearer {}", s.provider.client_credentials_token());
    // (Until the provider's keys are fetched, the filter answers itself:
    // only the 200 reaches the upstream.)
    wait_for("the token route", Duration::from_secs(10), || {
        (hit(gw, "/anything/named/x", &[("authorization", &token)]).status == 200).then_some(())
    });
    let url = format!("http://127.0.0.1:{}/stats/prometheus", gw.envoy_admin_port);
    let text = get(&url, &[]).unwrap().body;
    let line = |route: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("envoy_vhost_route_upstream_rq_total{")
                    && l.contains(&format!("envoy_route=\"{route}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
    };
    assert_eq!(line("prometheus-route").as_deref(), Some("3"), "{text}");
    assert_eq!(line("orders_api").as_deref(), Some("1"));
    // A route without the plugin has no per-route counters.
    assert_eq!(line("zz-settle"), None);
}

/// What does not map is refused by name, the APISIX docs examples
/// included; `/plugins/list` names the plugins.
#[test]
fn limits_refuse_by_name_what_envoy_cannot_do() {
    let s = stack(1, &[]);
    let gw = &s.gw;
    let list = gw.admin("GET", "/apisix/admin/plugins/list", None).json();
    for p in ["limit-count", "limit-req", "prometheus"] {
        assert!(list.as_array().unwrap().contains(&json!(p)), "{list}");
    }
    // Every plugin listed has its schema, at both of APISIX's paths.
    for p in list.as_array().unwrap() {
        let p = p.as_str().unwrap();
        for path in [
            format!("/apisix/admin/plugins/{p}"),
            format!("/apisix/admin/schema/plugins/{p}"),
        ] {
            let r = gw.admin("GET", &path, None);
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            assert_eq!(r.json()["type"], "object", "{path}");
        }
    }
    let schema = gw
        .admin("GET", "/apisix/admin/plugins/limit-count", None)
        .json();
    assert_eq!(schema["properties"]["rejected_code"]["default"], 503);
    assert!(
        schema["properties"].get("group").is_none(),
        "refused: not offered"
    );
    let r = gw.admin("GET", "/apisix/admin/plugins/limit-conn", None);
    assert_eq!(r.status, 404);
    let route = |plugins: Value| json!({"uri": "/x", "upstream": s.upstream, "plugins": plugins});
    let r = admin(
        gw,
        "PUT",
        "/apisix/admin/routes/bad",
        &route(
            json!({"limit-count": {"count": 1, "time_window": 60, "rejected_code": 429,
            "key": "remote_addr", "policy": "redis", "redis_host": "192.168.1.1",
            "redis_port": 6379, "redis_password": "p", "redis_database": 1,
            "redis_timeout": 1001}}),
        ),
    );
    refused(
        &r,
        &["plugins.limit-count.policy\" \"redis\" is not supported: cluster-wide counting is not supported"],
    );
    // "Share Quota among Routes": the service with `group`.
    let r = admin(
        gw,
        "PUT",
        "/apisix/admin/services/limit-count-service",
        &json!({"plugins": {"limit-count": {"count": 1, "time_window": 30,
                    "rejected_code": 429, "policy": "local", "group": "srv1"}},
                "upstream": s.upstream}),
    );
    refused(
        &r,
        &[
            "plugins.limit-count.group\" is not supported",
            "plugins.limit-count\" is not supported on a service: APISIX counts the requests of all its routes together",
        ],
    );
    let r = admin(
        gw,
        "PUT",
        "/apisix/admin/global_rules/1",
        &json!({"plugins": {"limit-req": {"rate": 1, "burst": 0, "key": "remote_addr"}}}),
    );
    refused(
        &r,
        &["plugins.limit-req\" is not supported on a global rule"],
    );
    let r = admin(
        gw,
        "PUT",
        "/apisix/admin/routes/bad",
        &route(json!({"limit-req": {"rate": 1, "burst": 0,
            "key": "$remote_addr $consumer_name", "key_type": "var_combination",
            "rejected_code": 429, "policy": "local"},
            "limit-count": {"count": 1, "time_window": 1, "rejected_code": 200}})),
    );
    refused(
        &r,
        &[
            "plugins.limit-req.key\" \"$remote_addr $consumer_name\" is not supported",
            "plugins.limit-count.rejected_code\" is not supported below 400",
        ],
    );
    // Envoy's StatusCode has no 499: Envoy would refuse (NACK) the whole
    // route table, so the Admin API refuses the route.
    let r = admin(
        gw,
        "PUT",
        "/apisix/admin/routes/bad",
        &route(json!({"limit-count": {"count": 1, "time_window": 1, "rejected_code": 499}})),
    );
    refused(
        &r,
        &["plugins.limit-count.rejected_code\" is not supported: Envoy answers a refusal with"],
    );
    let r = admin(
        gw,
        "PUT",
        "/apisix/admin/routes/bad",
        &route(json!({"prometheus": {"prefer_name": "yes"}})),
    );
    refused(&r, &["plugins.prometheus.prefer_name\" must be a boolean"]);
}

/// What APISIX answers before its access phase is not counted here either:
/// CORS preflights (cors, rewrite phase), login redirects of browser
/// navigations (openid-connect, rewrite phase), ip-restriction refusals
/// (priority 3000); the request that reaches the limit is.
#[test]
fn preflights_login_redirects_and_ip_refusals_are_not_counted() {
    let s = stack(1, &[]);
    let gw = &s.gw;
    let limit = json!({"count": 1, "time_window": 60});
    put(
        gw,
        "/apisix/admin/routes/web",
        &json!({"uri": "/anything/web/*",
                "plugins": {
                    "cors": {"allow_origins": "http://app.example"},
                    "openid-connect": oidc(&s.provider.discovery_url(), json!({
                        "bearer_only": false,
                        "redirect_uri": format!("http://localhost:{}/anything/web/callback", gw.proxy_port)})),
                    "limit-count": limit},
                "upstream": s.upstream}),
    );
    put(
        gw,
        "/apisix/admin/routes/deny",
        &json!({"uri": "/anything/deny/*",
                "plugins": {"ip-restriction": {"blacklist": ["127.0.0.1"]},
                            "limit-count": {"count": 1, "time_window": 60,
                                            "key_type": "constant", "key": "all"}},
                "upstream": s.upstream}),
    );
    settle(&s);
    for _ in 0..3 {
        let r = integration_tests::http::request(
            "OPTIONS",
            &gw.url("/anything/web/x"),
            &[
                ("origin", "http://app.example"),
                ("access-control-request-method", "POST"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(r.status, 200, "{:?}", r.headers);
        assert_eq!(quota(&r), (None, None));
        let r = hit(gw, "/anything/web/x", &[("accept", "text/html")]);
        assert_eq!(r.status, 302, "{}", r.body);
        assert_eq!(quota(&r), (None, None), "{:?}", r.headers);
        assert_eq!(hit(gw, "/anything/deny/x", &[]).status, 403);
    }
    // The deny route's one count (for every client) is untouched by the
    // refusals: another client passes once.
    assert_eq!(
        get_from(gw, "127.0.0.2", "/anything/deny/x", &[]).status,
        200
    );
    assert_eq!(
        get_from(gw, "127.0.0.2", "/anything/deny/x", &[]).status,
        503
    );
}
