use serde_json::json;

use super::proxy_rewrite::{substitution, PathRewrite, ProxyRewrite};
use super::*;

fn rewrite(v: Value) -> Result<ProxyRewrite, String> {
    let mut e = Errors::new();
    ProxyRewrite::parse(&v, "plugins.proxy-rewrite", &mut e).ok_or_else(|| e.message())
}

#[test]
fn substitution_is_ngx_re_sub_in_re2_syntax() {
    assert_eq!(substitution("/$1_${2}/x", 1).unwrap(), "/\\2_\\3/x");
    assert_eq!(substitution("/a$$b\\c", 0).unwrap(), "/a$b\\\\c");
    for bad in ["/$x", "/${1", "/$9"] {
        assert!(substitution(bad, 1).is_none(), "{bad}");
    }
}

#[test]
fn variables_are_found() {
    for v in ["$uri", "a${host}", "$1", "x$_y"] {
        assert!(has_variable(v), "{v}");
    }
    for v in ["50%", "a$", "a\\$b", "$-"] {
        assert!(!has_variable(v), "{v}");
    }
}

#[test]
fn proxy_rewrite_takes_apisix_forms() {
    let p = rewrite(
        json!({"regex_uri": ["^/iresty/(.*)/(.*)/(.*)", "/$1_$2_$3"],
                           "headers": {"X-Api": 1}}),
    )
    .unwrap();
    assert_eq!(
        p.path,
        Some(PathRewrite::Regex {
            pattern: "^/iresty/(.*)/(.*)/(.*)".into(),
            replacement: "/$1_$2_$3".into()
        })
    );
    assert_eq!(p.set, vec![("X-Api".to_string(), "1".to_string())]);
    // The braced form APISIX documents, and `$$`.
    for r in ["/x/${1}", "/x/${1}-$2", "/cost$$/$1"] {
        rewrite(json!({"regex_uri": ["^/a/(.*)/(.*)", r]}))
            .unwrap_or_else(|e| panic!("{r}: {e:?}"));
    }
    // uri wins over regex_uri, as in APISIX.
    let p =
        rewrite(json!({"uri": "/x", "regex_uri": ["a", "b"], "host": "h.example:8080"})).unwrap();
    assert_eq!(p.path, Some(PathRewrite::Uri("/x".into())));
    assert_eq!(p.host.as_deref(), Some("h.example:8080"));
    rewrite(json!({"use_real_request_uri_unsafe": false, "headers": {"remove": ["x-a"]}})).unwrap();
}

#[test]
fn proxy_rewrite_refuses_by_name() {
    let cases = [
        (json!({}), "must set at least one attribute"),
        (json!({"scheme": "https"}), "scheme\" is not supported"),
        (json!({"method": "GET"}), "method\" is not supported"),
        (
            json!({"use_real_request_uri_unsafe": true}),
            "use_real_request_uri_unsafe\" is not supported",
        ),
        (json!({"uri": "x"}), "uri\" must start with"),
        (json!({"uri": "/a?b=1"}), "with a query"),
        (json!({"regex_uri": ["(", "/"]}), "which RE2 cannot take"),
        (
            json!({"regex_uri": ["^/(?<x>a)\\1", "/"]}),
            "which RE2 cannot take",
        ),
        (json!({"regex_uri": ["^/(a)", "/$2"]}), "names group $2"),
        (
            json!({"regex_uri": ["a"]}),
            "must be an array of two strings",
        ),
        (json!({"host": "a b"}), "host\" must be"),
        (json!({"headers": {"Host": "x"}}), "cannot be set here"),
        (
            json!({"headers": {"set": {"X-Id-Token": "x"}}}),
            "identity header",
        ),
        (
            json!({"headers": {"add": {"x-raw-id-token": "x"}}}),
            "identity header",
        ),
        (
            json!({"headers": {"X-A": "a\nb"}}),
            "characters a header value",
        ),
        (
            json!({"headers": {"X-A": "$remote_addr"}}),
            "nginx variables",
        ),
        (
            json!({"headers": {"set": {"X-A": "1"}, "remove": ["x-a"]}}),
            "both set and removed",
        ),
        (
            json!({"headers": {"set": {"X-A": "1"}, "X-B": "2"}}),
            "must be a string or a number",
        ),
        (json!({"foo": 1}), "foo\" is not an attribute"),
        (
            json!({"uri": "/a", "_meta": {"disable": true}}),
            "_meta\" is not supported",
        ),
    ];
    for (conf, want) in cases {
        let err = rewrite(conf.clone()).unwrap_err();
        assert!(err.contains(want), "{conf}: {err}");
    }
}

fn redirect(v: Value) -> Result<Redirect, String> {
    let mut e = Errors::new();
    Redirect::parse(&v, "plugins.redirect", &mut e).ok_or_else(|| e.message())
}

#[test]
fn redirect_takes_apisix_forms() {
    let r = redirect(json!({"http_to_https": true})).unwrap();
    assert!(r.http_to_https && r.uri.is_none());
    let r = redirect(json!({"uri": "/test/default.html", "ret_code": 301})).unwrap();
    assert_eq!(r.ret_code, 301);
    assert_eq!(r.uri.unwrap().path, "/test/default.html");
    let r =
        redirect(json!({"uri": "https://A.example:8443", "append_query_string": true})).unwrap();
    let t = r.uri.unwrap();
    assert_eq!(t.origin, Some(("https".into(), "a.example".into(), 8443)));
    assert_eq!(t.path, "/");
    assert_eq!(redirect(json!({"uri": "/x"})).unwrap().ret_code, 302);
}

#[test]
fn redirect_refuses_by_name() {
    let cases = [
        (json!({}), "exactly one of"),
        (
            json!({"uri": "/a", "http_to_https": true}),
            "exactly one of",
        ),
        (
            json!({"regex_uri": ["^/a", "/b"]}),
            "regex_uri\" is not supported",
        ),
        (
            json!({"http_to_https": true, "append_query_string": true}),
            "only one of",
        ),
        (
            json!({"uri": "/a", "ret_code": 200}),
            "ret_code\" is not supported",
        ),
        (json!({"uri": "/a", "ret_code": 100}), "at least 200"),
        (
            json!({"uri": "/a", "encode_uri": true}),
            "encode_uri\" is not supported",
        ),
        (json!({"uri": "$scheme://x/$uri"}), "nginx variables"),
        (json!({"uri": "ftp://x/"}), "must be a path"),
        (json!({"uri": "//x/"}), "must be a path"),
        (
            json!({"uri": "/a?b", "append_query_string": true}),
            "with a query",
        ),
    ];
    for (conf, want) in cases {
        let err = redirect(conf.clone()).unwrap_err();
        assert!(err.contains(want), "{conf}: {err}");
    }
}

#[test]
fn ip_restriction_takes_apisix_forms_and_refuses_by_name() {
    let parse = |v: Value| {
        let mut e = Errors::new();
        IpRestriction::parse(&v, "plugins.ip-restriction", &mut e).ok_or_else(|| e.message())
    };
    let r =
        parse(json!({"whitelist": ["127.0.0.1", "113.74.26.106/24", "2001:db8::/32"]})).unwrap();
    assert!(r.allow);
    let nets: Vec<String> = r.cidrs.iter().map(|n| n.to_string()).collect();
    assert_eq!(nets, ["127.0.0.1/32", "113.74.26.0/24", "2001:db8::/32"]);
    assert_eq!(r.message, ip_restriction::DEFAULT_MESSAGE);
    let r = parse(json!({"denylist": ["::1"], "message": "no", "response_code": 403})).unwrap();
    assert!(!r.allow);
    assert_eq!(r.message, "no");
    for (conf, want) in [
        (json!({}), "exactly one of"),
        (
            json!({"whitelist": ["1.2.3.4"], "blacklist": ["1.2.3.4"]}),
            "exactly one of",
        ),
        (json!({"whitelist": []}), "non-empty array"),
        (
            json!({"whitelist": ["1.2.3.4/33"]}),
            "is not an IP address or CIDR",
        ),
        (
            json!({"whitelist": ["1.2.3.4/"]}),
            "is not an IP address or CIDR",
        ),
        (
            json!({"whitelist": ["::1/129"]}),
            "is not an IP address or CIDR",
        ),
        (
            json!({"whitelist": ["1.2.3.4"], "message": ""}),
            "message\" must be",
        ),
        (
            json!({"whitelist": ["1.2.3.4"], "response_code": 404}),
            "response_code\" is not supported",
        ),
    ] {
        let err = parse(conf.clone()).unwrap_err();
        assert!(err.contains(want), "{conf}: {err}");
    }
}

#[test]
fn cors_takes_apisix_forms_and_refuses_by_name() {
    let parse = |v: Value| {
        let mut e = Errors::new();
        Cors::parse(&v, "plugins.cors", &mut e).ok_or_else(|| e.message())
    };
    let c = parse(json!({})).unwrap();
    assert_eq!(c.origins, cors::Origins::Any);
    assert_eq!(
        (
            c.allow_methods.as_str(),
            c.allow_headers.as_str(),
            c.max_age
        ),
        ("*", "*", 5)
    );
    assert!(!c.allow_credential);
    let c = parse(
        json!({"allow_origins": "**", "allow_methods": "**", "allow_headers": "a,b",
                         "allow_credential": true}),
    )
    .unwrap();
    assert_eq!(c.origins, cors::Origins::Any);
    assert!(c.allow_methods.starts_with("GET,POST"));
    for (conf, want) in [
        (json!({"allow_credential": true}), "you can not set '*'"),
        (json!({"allow_origins": "example.com"}), "is not an origin"),
        (json!({"allow_headers": "**"}), "is not supported"),
        (json!({"allow_methods": "GET POST"}), "comma-separated"),
        (
            json!({"allow_origins_by_regex": ["("]}),
            "which RE2 cannot take",
        ),
        (
            json!({"timing_allow_origins": "*"}),
            "timing_allow_origins\" is not supported",
        ),
        (json!({"max_age": "5"}), "max_age\" must be an integer"),
        (
            json!({"allow_origins_by_regex": ["a(?=b)"]}),
            "which RE2 cannot take",
        ),
    ] {
        let err = parse(conf.clone()).unwrap_err();
        assert!(err.contains(want), "{conf}: {err}");
    }
}

fn limit_count(v: Value) -> Result<LimitCount, String> {
    let mut e = Errors::new();
    LimitCount::parse(&v, "plugins.limit-count", &mut e).ok_or_else(|| e.message())
}

fn limit_req(v: Value) -> Result<LimitReq, String> {
    let mut e = Errors::new();
    LimitReq::parse(&v, "plugins.limit-req", &mut e).ok_or_else(|| e.message())
}

#[test]
fn limit_count_takes_apisix_docs_bodies_and_defaults() {
    // APISIX's docs: "Apply Rate Limiting by Remote Address".
    let c = limit_count(json!({"count": 1, "time_window": 30, "rejected_code": 429,
        "key_type": "var", "key": "remote_addr", "policy": "local"}))
    .unwrap();
    assert_eq!(
        c,
        LimitCount {
            count: 1,
            time_window: 30,
            per_client: true,
            rejected_code: 429,
            rejected_msg: None,
            show_limit_quota_header: true,
        }
    );
    // What APISIX ≤ 3.13 stored with its defaults filled in.
    let c = limit_count(json!({"count": 2, "time_window": 60, "key": "remote_addr",
        "key_type": "var", "policy": "local", "rejected_code": 503,
        "show_limit_quota_header": true, "allow_degradation": false,
        "window_type": "fixed", "sync_interval": -1}))
    .unwrap();
    assert_eq!((c.count, c.rejected_code, c.per_client), (2, 503, true));
    let c = limit_count(json!({"count": 5, "time_window": 1, "key_type": "constant",
        "key": "x", "rejected_msg": "slow down", "show_limit_quota_header": false}))
    .unwrap();
    assert!(!c.per_client && !c.show_limit_quota_header);
    assert_eq!(c.rejected_msg.as_deref(), Some("slow down"));
    assert!(
        limit_count(
            json!({"count": 1, "time_window": 1, "key_type": "var_combination",
        "key": "$remote_addr"})
        )
        .unwrap()
        .per_client
    );
    // APISIX's docs: "Apply Sliding Window Rate Limiting" (a token bucket
    // here, like the fixed window).
    let c = limit_count(json!({"count": 10, "time_window": 60, "rejected_code": 429,
        "key": "remote_addr", "window_type": "sliding"}))
    .unwrap();
    assert_eq!((c.count, c.time_window, c.per_client), (10, 60, true));
}

#[test]
fn limit_count_refuses_by_name() {
    let cases = [
        (
            json!({"count": 1, "time_window": 1, "policy": "redis", "redis_host": "127.0.0.1"}),
            "plugins.limit-count.policy\" \"redis\" is not supported: cluster-wide counting is not supported",
        ),
        (
            json!({"count": 1, "time_window": 1, "policy": "redis-cluster",
                   "redis_cluster_nodes": ["a:1", "b:2"], "redis_cluster_name": "c"}),
            "cluster-wide counting is not supported",
        ),
        (
            json!({"count": 1, "time_window": 30, "group": "srv1"}),
            "plugins.limit-count.group\" is not supported",
        ),
        (
            json!({"rules": [{"count": 1, "time_window": 1, "key": "$remote_addr"}]}),
            "plugins.limit-count.rules\" is not supported",
        ),
        (
            json!({"count": 1, "time_window": 1, "key_type": "var_combination",
                   "key": "$remote_addr $consumer_name"}),
            "plugins.limit-count.key\" \"$remote_addr $consumer_name\" is not supported",
        ),
        (
            json!({"count": 1, "time_window": 1, "key": "http_x_forwarded_for"}),
            "plugins.limit-count.key\" \"http_x_forwarded_for\" is not supported",
        ),
        (
            json!({"count": "$arg_n", "time_window": 1}),
            "plugins.limit-count.count\" is not supported as an expression",
        ),
        (
            json!({"count": 1, "time_window": 1, "rejected_code": 200}),
            "plugins.limit-count.rejected_code\" is not supported below 400",
        ),
        (
            json!({"count": 1, "time_window": 1, "rejected_code": 499}),
            "plugins.limit-count.rejected_code\" is not supported: Envoy answers a refusal with 400-417",
        ),
        (
            json!({"count": 0, "time_window": 1}),
            "plugins.limit-count.count\" must be an integer greater than 0",
        ),
        (json!({"count": 1}), "plugins.limit-count.time_window\" is required"),
        (
            json!({"count": 1, "time_window": 1, "_meta": {"disable": true}}),
            "plugins.limit-count._meta\" is not supported",
        ),
        (
            json!({"count": 1, "time_window": 1, "nope": 1}),
            "plugins.limit-count.nope\" is not an attribute",
        ),
    ];
    for (v, want) in cases {
        let msg = limit_count(v.clone()).unwrap_err();
        assert!(msg.contains(want), "{v}: {msg}");
    }
}

#[test]
fn limit_req_takes_apisix_docs_bodies_and_refuses_by_name() {
    // APISIX's docs: "Apply Rate Limiting by Remote Address".
    let r = limit_req(json!({"rate": 1, "burst": 0, "key": "remote_addr",
        "key_type": "var", "rejected_code": 429, "nodelay": true}))
    .unwrap();
    assert_eq!(
        r,
        LimitReq {
            rate: 1.0,
            max_tokens: 1,
            per_client: true,
            rejected_code: 429,
            rejected_msg: None,
        }
    );
    // nodelay: false (the default) is accepted; a fractional burst floors.
    let r = limit_req(json!({"rate": 0.5, "burst": 2.5, "key": "remote_addr",
        "allow_degradation": true, "policy": "local", "rejected_msg": "busy"}))
    .unwrap();
    assert_eq!((r.rate, r.max_tokens), (0.5, 3));
    for (v, want) in [
        (
            json!({"rate": 1, "burst": 1}),
            "plugins.limit-req.key\" is required",
        ),
        (
            json!({"rate": 1, "burst": 1, "key": "consumer_name"}),
            "plugins.limit-req.key\" \"consumer_name\" is not supported",
        ),
        (
            json!({"rate": 1, "burst": 1, "key": "remote_addr", "key_type": "constant"}),
            "plugins.limit-req.key_type\" must be",
        ),
        (
            json!({"rate": 1, "burst": 1, "key": "remote_addr", "policy": "redis",
                   "redis_host": "r"}),
            "cluster-wide counting is not supported",
        ),
        (
            json!({"rate": 0, "burst": 1, "key": "remote_addr"}),
            "plugins.limit-req.rate\" must be a number greater than 0",
        ),
        (
            json!({"rate": 1, "burst": -1, "key": "remote_addr"}),
            "plugins.limit-req.burst\" must be a number from 0",
        ),
    ] {
        let msg = limit_req(v.clone()).unwrap_err();
        assert!(msg.contains(want), "{v}: {msg}");
    }
}

#[test]
fn two_limits_with_one_code_need_one_message() {
    let mut p = Plugins::default();
    let mut e = Errors::new();
    p.add(
        "limit-count",
        &json!({"count": 1, "time_window": 1, "rejected_msg": "a"}),
        &mut e,
    );
    p.add(
        "limit-req",
        &json!({"rate": 1, "burst": 1, "key": "remote_addr"}),
        &mut e,
    );
    p.check(&mut e);
    assert!(
        e.message()
            .contains("plugins.limit-req.rejected_msg\" is not supported when it differs"),
        "{}",
        e.message()
    );
    // Different codes tell the two apart.
    let mut e = Errors::new();
    p.add(
        "limit-req",
        &json!({"rate": 1, "burst": 1, "key": "remote_addr", "rejected_code": 429}),
        &mut e,
    );
    p.check(&mut e);
    assert!(e.is_empty(), "{}", e.message());
}

#[test]
fn prometheus_takes_prefer_name() {
    let mut e = Errors::new();
    let p = Prometheus::parse(&json!({"prefer_name": true}), "plugins.prometheus", &mut e).unwrap();
    assert!(p.prefer_name);
    assert!(Prometheus::parse(&json!({}), "plugins.prometheus", &mut e).is_some());
    assert!(Prometheus::parse(&json!({"x": 1}), "plugins.prometheus", &mut e).is_none());
    assert_eq!(prometheus::stat_label("a.b c/é-_1"), "a_b_c__-_1");
}
