//! APISIX upstreams through the sidecar and the real Envoy: balancers,
//! node priorities, `pass_host`, `upstream_id`, timeouts and an https
//! upstream with a test certificate.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use integration_tests::gateway::Gateway;
use integration_tests::{
    free_port, get, static_server, venv_file, wait_for, wait_port, Httpbin, Proc, TestDir,
};
use serde_json::{json, Value};

fn within_a_second(what: &str, mut check: impl FnMut() -> bool) {
    wait_for(what, Duration::from_secs(1), || check().then_some(()));
}

fn put(gw: &Gateway, path: &str, body: &Value) {
    let r = gw.admin("PUT", path, Some(&body.to_string()));
    assert!(
        r.status == 201 || r.status == 200,
        "{path}: {} {}",
        r.status,
        r.body
    );
}

/// Who answered `n` GETs of `path` (with `headers`), by name.
fn count(gw: &Gateway, path: &str, headers: &[(&str, &str)], n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let r = get(&gw.url(path), headers).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        *seen.entry(r.body).or_default() += 1;
    }
    seen
}

#[test]
fn node_arrays_weights_and_priorities() {
    let dir = TestDir::new("upstreams_weights");
    let (a, _pa) = static_server(&dir, "a");
    let (b, _pb) = static_server(&dir, "b");
    let (c, _pc) = static_server(&dir, "c");
    let gw = Gateway::start(dir.path(), &[]);
    // a:b = 1:3, c weighs 0 (kept, sent nothing).
    put(
        &gw,
        "/apisix/admin/routes/w",
        &json!({"uri": "/who", "upstream": {"type": "roundrobin", "nodes": [
            {"host": "127.0.0.1", "port": a, "weight": 1},
            {"host": "127.0.0.1", "port": b, "weight": 3},
            {"host": "127.0.0.1", "port": c, "weight": 0},
        ]}}),
    );
    within_a_second("the route", || {
        get(&gw.url("/who"), &[]).is_ok_and(|r| r.status == 200)
    });
    let seen = count(&gw, "/who", &[], 200);
    let to_b = seen.get("b").copied().unwrap_or(0);
    assert!((130..=170).contains(&to_b), "{seen:?}");
    assert_eq!(seen.get("c"), None, "{seen:?}");

    // Priorities: the highest APISIX priority takes everything while it
    // is up; when it goes away, the next one serves.
    put(
        &gw,
        "/apisix/admin/routes/w",
        &json!({"uri": "/who", "upstream": {"retries": 1, "nodes": [
            {"host": "127.0.0.1", "port": a, "weight": 1, "priority": -1},
            {"host": "127.0.0.1", "port": b, "weight": 1, "priority": 5},
        ]}}),
    );
    within_a_second("the priority route", || {
        get(&gw.url("/who"), &[]).is_ok_and(|r| r.body == "b")
    });
    assert_eq!(count(&gw, "/who", &[], 30).get("b"), Some(&30));
    drop(_pb);
    // Connection refused on b: the retry goes to the lower priority.
    assert_eq!(count(&gw, "/who", &[], 10).get("a"), Some(&10));
}

#[test]
fn least_conn_ewma_and_chash_balance() {
    let dir = TestDir::new("upstreams_balancers");
    let servers: Vec<(u16, Proc)> = ["a", "b", "c"]
        .iter()
        .map(|n| static_server(&dir, n))
        .collect();
    let gw = Gateway::start(dir.path(), &[]);
    let nodes: serde_json::Map<String, Value> = servers
        .iter()
        .map(|(p, _)| (format!("127.0.0.1:{p}"), json!(1)))
        .collect();
    for (id, t) in [("lc", "least_conn"), ("ewma", "ewma")] {
        put(
            &gw,
            &format!("/apisix/admin/routes/{id}"),
            &json!({"uri": "/who", "host": format!("{id}.test"),
                "upstream": {"type": t, "nodes": nodes}}),
        );
    }
    put(
        &gw,
        "/apisix/admin/routes/ch",
        &json!({"uri": "/who", "host": "ch.test",
            "upstream": {"type": "chash", "hash_on": "header", "key": "X-User", "nodes": nodes}}),
    );
    for host in ["lc.test", "ewma.test", "ch.test"] {
        within_a_second(host, || {
            get(&gw.url("/who"), &[("host", host)]).is_ok_and(|r| r.status == 200)
        });
    }
    // Least request spreads sequential requests over every node.
    for host in ["lc.test", "ewma.test"] {
        let seen = count(&gw, "/who", &[("host", host)], 90);
        assert_eq!(seen.len(), 3, "{host}: {seen:?}");
    }
    // chash: one key, one node; many keys, several nodes.
    let mut nodes_used = BTreeMap::new();
    for user in 0..24 {
        let user = format!("user-{user}");
        let seen = count(&gw, "/who", &[("host", "ch.test"), ("x-user", &user)], 6);
        assert_eq!(seen.len(), 1, "{user}: {seen:?}");
        *nodes_used
            .entry(seen.into_keys().next().unwrap())
            .or_insert(0) += 1;
    }
    assert!(
        nodes_used.len() >= 2,
        "24 keys all on one node: {nodes_used:?}"
    );
}

#[test]
fn pass_host_timeouts_and_upstream_ids() {
    let dir = TestDir::new("upstreams_pass_host");
    let httpbin = Httpbin::start(dir.path());
    let (a, _pa) = static_server(&dir, "a");
    let (b, _pb) = static_server(&dir, "b");
    let gw = Gateway::start(dir.path(), &[]);
    let node = format!("127.0.0.1:{}", httpbin.port);
    for (id, extra) in [
        ("pass", json!({})),
        ("node", json!({"pass_host": "node"})),
        (
            "rewrite",
            json!({"pass_host": "rewrite", "upstream_host": "internal.example"}),
        ),
    ] {
        let mut upstream = json!({"nodes": {node.clone(): 1}});
        for (k, v) in extra.as_object().unwrap() {
            upstream[k] = v.clone();
        }
        put(
            &gw,
            &format!("/apisix/admin/routes/{id}"),
            &json!({"uri": format!("/anything/{id}"), "upstream": upstream}),
        );
    }
    let host_seen = |id: &str| {
        let r = get(&gw.url(&format!("/anything/{id}")), &[]).unwrap();
        assert_eq!(r.status, 200, "{id}: {}", r.body);
        r.json()["headers"]["Host"].as_str().unwrap().to_string()
    };
    within_a_second("the pass_host routes", || {
        get(&gw.url("/anything/rewrite"), &[]).is_ok_and(|r| r.status == 200)
    });
    assert_eq!(host_seen("pass"), format!("127.0.0.1:{}", gw.proxy_port));
    assert_eq!(host_seen("node"), node);
    assert_eq!(host_seen("rewrite"), "internal.example");

    // timeout.read: a slow answer is cut (504); the route's timeout
    // overrides the upstream's.
    put(
        &gw,
        "/apisix/admin/routes/slow",
        &json!({"uri": "/delay/*", "upstream": {"nodes": {node.clone(): 1},
            "timeout": {"connect": 1, "send": 1, "read": 1}}}),
    );
    within_a_second("the slow route", || {
        get(&gw.url("/delay/0"), &[]).is_ok_and(|r| r.status == 200)
    });
    assert_eq!(get(&gw.url("/delay/3"), &[]).unwrap().status, 504);
    put(
        &gw,
        "/apisix/admin/routes/slow",
        &json!({"uri": "/delay/*", "timeout": {"connect": 1, "send": 5, "read": 5},
            "upstream": {"nodes": {node.clone(): 1},
            "timeout": {"connect": 1, "send": 1, "read": 1}}}),
    );
    wait_for("the longer timeout", Duration::from_secs(5), || {
        get(&gw.url("/delay/2"), &[])
            .ok()
            .filter(|r| r.status == 200)
    });

    // upstream_id: routes follow the named upstream's changes.
    put(
        &gw,
        "/apisix/admin/upstreams/shared",
        &json!({"nodes": {format!("127.0.0.1:{a}"): 1}}),
    );
    put(
        &gw,
        "/apisix/admin/routes/by-id",
        &json!({"uri": "/who", "upstream_id": "shared"}),
    );
    within_a_second("the upstream_id route", || {
        get(&gw.url("/who"), &[]).is_ok_and(|r| r.body == "a")
    });
    let r = gw.admin(
        "PATCH",
        "/apisix/admin/upstreams/shared",
        Some(
            &json!({"nodes": {format!("127.0.0.1:{a}"): null, format!("127.0.0.1:{b}"): 1}})
                .to_string(),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    within_a_second("the upstream change", || {
        get(&gw.url("/who"), &[]).is_ok_and(|r| r.body == "b")
    });
    let r = gw.admin("DELETE", "/apisix/admin/upstreams/shared", None);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("route [by-id]"), "{}", r.body);
    let r = gw.admin(
        "PUT",
        "/apisix/admin/routes/dangling",
        Some(r#"{"uri": "/x", "upstream_id": "nope"}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("upstream id [nope]"), "{}", r.body);
    assert_eq!(gw.envoy_stat("listener_manager.listener_modified"), 0);
}

/// httpbin over TLS (gunicorn with a self-signed certificate for
/// `localhost`, made by `openssl` here).
fn tls_httpbin(dir: &TestDir) -> (u16, Proc) {
    let cert = dir.file("cert.pem");
    let key = dir.file("key.pem");
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let port = free_port();
    let mut cmd = Command::new(venv_file("bin/gunicorn"));
    cmd.args([
        "-b",
        &format!("127.0.0.1:{port}"),
        "-w",
        "1",
        "--no-control-socket",
    ])
    .arg("--certfile")
    .arg(&cert)
    .arg("--keyfile")
    .arg(&key)
    .args(["--access-logfile", "-", "httpbin:app"])
    .current_dir(dir.path());
    let proc = Proc::spawn("httpbin-tls", dir.path(), cmd);
    wait_port(port, Duration::from_secs(20));
    (port, proc)
}

#[test]
fn an_https_upstream_with_a_test_certificate() {
    let dir = TestDir::new("upstreams_https");
    let (port, _tls) = tls_httpbin(&dir);
    let gw = Gateway::start(dir.path(), &[]);
    put(
        &gw,
        "/apisix/admin/routes/tls",
        &json!({"uri": "/anything/*", "upstream": {"scheme": "https",
            "tls": {"verify": false}, "pass_host": "rewrite", "upstream_host": "localhost",
            "nodes": {format!("127.0.0.1:{port}"): 1}}}),
    );
    within_a_second("the https route", || {
        get(&gw.url("/anything/x"), &[]).is_ok_and(|r| r.status == 200)
    });
    let r = get(&gw.url("/anything/x"), &[]).unwrap();
    assert_eq!(r.json()["headers"]["Host"], "localhost");

    // Verified against the system trust store, the self-signed
    // certificate is refused.
    put(
        &gw,
        "/apisix/admin/routes/tls",
        &json!({"uri": "/anything/*", "upstream": {"scheme": "https",
            "tls": {"verify": true}, "pass_host": "rewrite", "upstream_host": "localhost",
            "nodes": {format!("127.0.0.1:{port}"): 1}}}),
    );
    within_a_second("the verifying route", || {
        get(&gw.url("/anything/x"), &[]).is_ok_and(|r| r.status == 503)
    });
}
