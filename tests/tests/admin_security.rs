//! Issue 14, "The Admin API can be driven by any web page" (security
//! review findings 1 and 9), through the real sidecar and the real Envoy:
//!
//! - a web page's "simple" request (`no-cors`, `text/plain`, no preflight)
//!   carries `Origin` / `Sec-Fetch-Site` and is refused; curl's is not;
//! - DNS rebinding (`Host: evil.example`) is refused on reads and writes;
//! - upstream nodes on the gateway's control ports (Envoy's admin, the
//!   Admin API, xDS) are refused, so `/config_dump` and the Admin API never
//!   appear on the proxy port; loopback and link-local nodes need
//!   `--allow-local-upstreams`;
//! - an Admin API off loopback without a key gets a generated one (unless
//!   `--admin-key-required=false`, which a given key still overrides);
//! - `/status` answers only clients that pass the Admin API's checks.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integration_tests::gateway::{sidecar_bin, Gateway};
use integration_tests::http::{closed_within, request, Response};
use integration_tests::{free_port, get, static_server, wait_for, wasm_path, Proc, TestDir};

/// An Admin API call with the given headers (the body as curl `-d` sends it
/// unless the headers say otherwise).
fn call(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut h: Vec<(&str, &str)> = headers.to_vec();
    if !h
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        h.push(("content-type", "application/x-www-form-urlencoded"));
    }
    request(method, &url, &h, body.map(|b| b.as_bytes().to_vec()))
        .unwrap_or_else(|e| panic!("Admin API {method} {path}: {e}"))
}

fn error_msg(r: &Response) -> String {
    r.json()["error_msg"]
        .as_str()
        .unwrap_or_else(|| panic!("no error_msg: {}", r.body))
        .to_string()
}

fn route_count(gw: &Gateway) -> u64 {
    let r = gw.admin("GET", "/apisix/admin/routes", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["total"].as_u64().unwrap()
}

fn upstream_count(gw: &Gateway) -> u64 {
    let r = gw.admin("GET", "/apisix/admin/upstreams", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["total"].as_u64().unwrap()
}

/// Envoy answers `path` on the proxy port with 404 (no route), and keeps
/// doing so for a moment (a route published late would show up).
fn not_served(gw: &Gateway, path: &str) {
    std::thread::sleep(Duration::from_millis(300));
    let r = get(&gw.url(path), &[]).unwrap();
    assert_eq!(r.status, 404, "{path} is served: {}", r.body);
    assert!(!r.body.contains("configs"), "{}", r.body);
}

fn served(gw: &Gateway, path: &str, body: &str) {
    wait_for(
        &format!("Envoy to serve {path}"),
        Duration::from_secs(2),
        || {
            get(&gw.url(path), &[])
                .ok()
                .filter(|r| r.status == 200 && r.body == body)
        },
    );
}

#[test]
fn web_pages_and_dns_rebinding_cannot_drive_the_admin_api() {
    let dir = TestDir::new("admin_security_browser");
    let (www, _www) = static_server(&dir, "www");
    let gw = Gateway::start(dir.path(), &["--admin-host", "gateway-admin.test"]);
    let port = gw.admin_port;
    let own = format!("127.0.0.1:{port}");
    let own_origin = format!("http://{own}");

    // The issue's request, as a page's fetch(..., {mode: "no-cors"}) sends
    // it: text/plain, Origin of the page. Before: 201, and Envoy then
    // served its admin's /config_dump on the proxy port.
    let attack = format!(
        r#"{{"uri":"/config_dump","upstream":{{"type":"roundrobin","nodes":{{"127.0.0.1:{}":1}}}}}}"#,
        gw.envoy_admin_port
    );
    // A body that would be valid, so only the browser checks refuse it.
    let harmless = format!(
        r#"{{"uri":"/who","upstream":{{"type":"roundrobin","nodes":{{"127.0.0.1:{www}":1}}}}}}"#
    );
    let page = [
        ("origin", "http://evil.example"),
        ("content-type", "text/plain;charset=UTF-8"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-mode", "no-cors"),
    ];
    for body in [&attack, &harmless] {
        let r = call(port, "POST", "/apisix/admin/routes", &page, Some(body));
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(error_msg(&r).contains("web pages cannot call the Admin API"));
        // Origin alone (a browser without Sec-Fetch-*).
        let r = call(port, "POST", "/apisix/admin/routes", &page[..2], Some(body));
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(
            error_msg(&r).starts_with(&format!(
                "cross-origin request refused: Origin \"http://evil.example\" is not the \
                 Admin API's own ({own_origin})"
            )),
            "{}",
            r.body
        );
    }
    // Sec-Fetch-Site alone (a page on another port of this host is same-site).
    for site in ["cross-site", "same-site"] {
        let r = call(
            port,
            "PUT",
            "/apisix/admin/routes/r1",
            &[("sec-fetch-site", site)],
            Some(&harmless),
        );
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(
            error_msg(&r).contains(&format!("(Sec-Fetch-Site: {site})")),
            "{}",
            r.body
        );
    }
    // A page on the gateway's own proxy port is another origin too.
    let r = call(
        port,
        "PUT",
        "/apisix/admin/routes/r1",
        &[("origin", &format!("http://127.0.0.1:{}", gw.proxy_port))],
        Some(&harmless),
    );
    assert_eq!(r.status, 403, "{}", r.body);

    // DNS rebinding: evil.example now resolves to 127.0.0.1; the page reads
    // and writes same-origin, with Host: evil.example.
    let rebound = format!("evil.example:{port}");
    let rebinding = [
        ("host", rebound.as_str()),
        ("origin", "http://evil.example"),
    ];
    for (method, path, body) in [
        ("GET", "/apisix/admin/routes", None),
        ("POST", "/apisix/admin/routes", Some(harmless.as_str())),
        ("PUT", "/apisix/admin/routes/r1", Some(harmless.as_str())),
        ("GET", "/status", None),
    ] {
        for headers in [&rebinding[..1], &rebinding[..]] {
            let r = call(port, method, path, headers, body);
            assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
            let msg = error_msg(&r);
            assert!(
                msg.starts_with(&format!("Host \"{rebound}\" is not allowed"))
                    && msg.contains("--admin-host"),
                "{msg}"
            );
        }
    }

    // Nothing was created, and Envoy serves none of it.
    assert_eq!(route_count(&gw), 0);
    not_served(&gw, "/config_dump");
    not_served(&gw, "/who");

    // The Admin API's own origin, and a name given with --admin-host.
    let r = call(
        port,
        "PUT",
        "/apisix/admin/routes/r1",
        &[("origin", &own_origin), ("sec-fetch-site", "same-origin")],
        Some(&harmless),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    served(&gw, "/who", "www");
    let named = format!("gateway-admin.test:{port}");
    let r = call(
        port,
        "GET",
        "/apisix/admin/routes/r1",
        &[("host", &named), ("origin", &format!("http://{named}"))],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["value"]["uri"], "/who");
    let r = call(port, "GET", "/status", &[("host", &named)], None);
    assert_eq!(r.status, 200, "{}", r.body);
    // curl's calls (no Origin, no Sec-Fetch-Site, Host 127.0.0.1:port).
    let r = gw.admin("DELETE", "/apisix/admin/routes/r1", None);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn upstreams_cannot_point_at_the_gateways_control_ports() {
    let dir = TestDir::new("admin_security_control");
    let (www, _www) = static_server(&dir, "www");
    // With --allow-local-upstreams (the harness's default): the control
    // ports stay refused.
    let gw = Gateway::start(dir.path(), &[]);
    // What a route to Envoy's admin would have served.
    let dump = get(
        &format!("http://127.0.0.1:{}/config_dump", gw.envoy_admin_port),
        &[],
    )
    .unwrap();
    assert_eq!(dump.status, 200);

    let (envoy_admin, admin, xds) = (gw.envoy_admin_port, gw.admin_port, gw.xds_port);
    for (path, body, field, what) in [
        (
            "/apisix/admin/routes",
            format!(
                r#"{{"uri":"/config_dump","upstream":{{"type":"roundrobin","nodes":{{"127.0.0.1:{envoy_admin}":1}}}}}}"#
            ),
            format!("upstream.nodes.127.0.0.1:{envoy_admin}"),
            format!("Envoy's admin (127.0.0.1:{envoy_admin})"),
        ),
        (
            "/apisix/admin/routes",
            format!(
                r#"{{"uri":"/apisix/admin/*","upstream":{{"nodes":[{{"host":"localhost","port":{admin},"weight":1}}]}}}}"#
            ),
            "upstream.nodes[0]".to_string(),
            format!("the Admin API (127.0.0.1:{admin})"),
        ),
        (
            "/apisix/admin/routes",
            format!(
                r#"{{"uri":"/stats","upstream":{{"nodes":{{"0.0.0.0:{envoy_admin}":1,"127.0.0.1:{www}":1}}}}}}"#
            ),
            format!("upstream.nodes.0.0.0.0:{envoy_admin}"),
            "Envoy's admin".to_string(),
        ),
        (
            "/apisix/admin/upstreams",
            format!(r#"{{"nodes":{{"[::1]:{xds}":1}}}}"#),
            format!("nodes.[::1]:{xds}"),
            format!("the sidecar's xDS port (127.0.0.1:{xds})"),
        ),
        (
            "/apisix/admin/upstreams",
            format!(r#"{{"nodes":[{{"host":"2130706433","port":{envoy_admin},"weight":1}}]}}"#),
            "nodes[0]".to_string(),
            "Envoy's admin".to_string(),
        ),
    ] {
        let r = gw.admin("POST", path, Some(&body));
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        let msg = error_msg(&r);
        assert!(
            msg.starts_with(&format!(
                "invalid configuration: property \"{field}\" points at {what}"
            )) && msg.contains("control port of this gateway"),
            "{msg}"
        );
    }
    // An upstream resource changed to point there (PATCH): refused too, and
    // the route using it keeps its node.
    let r = gw.admin(
        "PUT",
        "/apisix/admin/upstreams/u1",
        Some(&format!(r#"{{"nodes":{{"127.0.0.1:{www}":1}}}}"#)),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = gw.admin(
        "PUT",
        "/apisix/admin/routes/r1",
        Some(r#"{"uri":"/who","upstream_id":"u1"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    served(&gw, "/who", "www");
    let r = gw.admin(
        "PATCH",
        "/apisix/admin/upstreams/u1",
        Some(&format!(r#"{{"nodes":{{"localhost:{envoy_admin}":1}}}}"#)),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        error_msg(&r).contains("points at Envoy's admin"),
        "{}",
        r.body
    );
    let r = gw.admin(
        "PUT",
        "/apisix/admin/routes/r2",
        Some(&format!(
            r#"{{"uri":"/ready","upstream":{{"nodes":{{"127.0.0.1:{www}":1}},"checks":{{"active":{{"port":{admin}}}}}}}}}"#
        )),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        error_msg(&r).contains("property \"upstream.checks.active.port\""),
        "{}",
        r.body
    );

    // Nothing else was written; Envoy's admin and the Admin API are not on
    // the proxy port.
    assert_eq!(route_count(&gw), 1);
    assert_eq!(upstream_count(&gw), 1);
    not_served(&gw, "/config_dump");
    not_served(&gw, "/apisix/admin/routes");
    not_served(&gw, "/stats");
    served(&gw, "/who", "www");
}

#[test]
fn local_upstreams_need_the_option() {
    let dir = TestDir::new("admin_security_local");
    let (www, _www) = static_server(&dir, "www");
    let gw = Gateway::start_strict(dir.path(), &[]);
    for (path, body, field) in [
        (
            "/apisix/admin/routes",
            format!(r#"{{"uri":"/who","upstream":{{"nodes":{{"127.0.0.1:{www}":1}}}}}}"#),
            format!("upstream.nodes.127.0.0.1:{www}"),
        ),
        (
            "/apisix/admin/routes",
            format!(
                r#"{{"uri":"/who","upstream":{{"nodes":[{{"host":"localhost","port":{www},"weight":1}}]}}}}"#
            ),
            "upstream.nodes[0]".to_string(),
        ),
        (
            "/apisix/admin/routes",
            r#"{"uri":"/latest/meta-data/*","upstream":{"nodes":{"169.254.169.254:80":1}}}"#
                .to_string(),
            "upstream.nodes.169.254.169.254:80".to_string(),
        ),
        (
            "/apisix/admin/upstreams",
            format!(r#"{{"nodes":{{"[::1]:{www}":1}}}}"#),
            format!("nodes.[::1]:{www}"),
        ),
        (
            "/apisix/admin/upstreams",
            r#"{"nodes":[{"host":"fe80::1","port":80,"weight":1}]}"#.to_string(),
            "nodes[0]".to_string(),
        ),
    ] {
        let r = gw.admin("POST", path, Some(&body));
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        let msg = error_msg(&r);
        assert!(
            msg.starts_with(&format!("invalid configuration: property \"{field}\" is a")),
            "{msg}"
        );
        assert!(msg.contains("--allow-local-upstreams"), "{msg}");
    }
    // The control ports are refused for their own reason.
    let r = gw.admin(
        "POST",
        "/apisix/admin/routes",
        Some(&format!(
            r#"{{"uri":"/config_dump","upstream":{{"nodes":{{"127.0.0.1:{}":1}}}}}}"#,
            gw.envoy_admin_port
        )),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        error_msg(&r).contains("points at Envoy's admin"),
        "{}",
        r.body
    );
    assert_eq!(route_count(&gw), 0);
    assert_eq!(upstream_count(&gw), 0);
    not_served(&gw, "/who");
    not_served(&gw, "/config_dump");

    // Nodes elsewhere are fine.
    let r = gw.admin(
        "PUT",
        "/apisix/admin/routes/r1",
        Some(r#"{"uri":"/far","upstream":{"nodes":{"192.0.2.10:80":1}}}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
}

/// A sidecar alone (no Envoy): its Admin API on `admin_addr`.
fn sidecar(dir: &Path, name: &str, admin_addr: &str, extra: &[&str]) -> Proc {
    let xds = free_port();
    let mut cmd = Command::new(sidecar_bin());
    cmd.args(["--admin-addr", admin_addr])
        .arg("--xds-addr")
        .arg(format!("127.0.0.1:{xds}"))
        .arg("--wasm")
        .arg(wasm_path())
        .arg("--data")
        .arg(dir.join(format!("{name}.json")))
        .args(extra)
        .env_remove("SIDECAR_ADMIN_KEY");
    let mut proc = Proc::spawn(name, dir, cmd);
    let port = admin_addr.rsplit_once(':').unwrap().1;
    // /healthz stays open to every client.
    wait_for("the sidecar's /healthz", Duration::from_secs(60), || {
        proc.assert_running();
        get(&format!("http://127.0.0.1:{port}/healthz"), &[])
            .ok()
            .filter(|r| r.status == 200)
    });
    proc
}

#[test]
fn an_admin_api_off_loopback_gets_a_generated_key_and_status_is_checked() {
    let dir = TestDir::new("admin_security_key");
    let port = free_port();
    // Listening on every address, no key given. Only 127.0.0.1 connects.
    let proc = sidecar(dir.path(), "public", &format!("0.0.0.0:{port}"), &[]);
    let log = std::fs::read_to_string(proc.log_path()).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("generated"))
        .unwrap_or_else(|| panic!("no generated key printed:\n{log}"));
    assert!(
        line.starts_with(&format!(
            "sidecar: the Admin API listens on 0.0.0.0:{port} (not loopback) and no admin key \
             was given, so it requires this generated one (X-API-KEY header): "
        )),
        "{line}"
    );
    let key = line.rsplit(' ').next().unwrap().to_string();
    assert_eq!(key.len(), 64, "{line}");
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");

    for path in ["/apisix/admin/routes", "/status"] {
        let r = call(port, "GET", path, &[], None);
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert_eq!(r.json()["description"], "missing apikey");
        let r = call(port, "GET", path, &[("x-api-key", "0123")], None);
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        let r = call(port, "GET", path, &[("x-api-key", &key)], None);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    let r = call(
        port,
        "PUT",
        "/apisix/admin/routes/r1",
        &[("x-api-key", &key)],
        Some(r#"{"uri":"/far","upstream":{"nodes":{"192.0.2.10:80":1}}}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // Printed once, never logged afterwards.
    let log = std::fs::read_to_string(proc.log_path()).unwrap();
    assert_eq!(log.matches(&key).count(), 1, "{log}");
    drop(proc);

    // A client outside the allow-list: 403 on /status as on the Admin API;
    // /healthz still answers.
    let port = free_port();
    let proc = sidecar(
        dir.path(),
        "narrow",
        &format!("127.0.0.1:{port}"),
        &["--allow", "10.0.0.0/8"],
    );
    for path in ["/apisix/admin/routes", "/status"] {
        let r = call(port, "GET", path, &[], None);
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        assert_eq!(r.json()["error_msg"], "IP address not allowed");
    }
    assert!(!std::fs::read_to_string(proc.log_path())
        .unwrap()
        .contains("generated"));
    drop(proc);

    // Off loopback with --admin-key-required=false (docker-compose.yml's
    // sidecar, on a network of its own): no key generated, a warning says
    // so; a key that is given is still required.
    let port = free_port();
    let proc = sidecar(
        dir.path(),
        "unkeyed",
        &format!("0.0.0.0:{port}"),
        &["--admin-key-required=false"],
    );
    let log = std::fs::read_to_string(proc.log_path()).unwrap();
    assert!(!log.contains("generated"), "{log}");
    assert!(
        log.contains("without an admin key (--admin-key-required=false)"),
        "{log}"
    );
    let r = call(port, "GET", "/apisix/admin/routes", &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    drop(proc);
    let port = free_port();
    let _proc = sidecar(
        dir.path(),
        "keyed",
        &format!("0.0.0.0:{port}"),
        &["--admin-key-required=false", "--admin-key", "k-0123456789"],
    );
    let r = call(port, "GET", "/apisix/admin/routes", &[], None);
    assert_eq!(r.status, 401, "{}", r.body);
    let r = call(
        port,
        "GET",
        "/apisix/admin/routes",
        &[("x-api-key", "k-0123456789")],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    drop(_proc);

    // On loopback with the default allow-list, no key: /status answers.
    let port = free_port();
    let _proc = sidecar(dir.path(), "local", &format!("127.0.0.1:{port}"), &[]);
    let r = call(port, "GET", "/status", &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["versions"].is_object(), "{}", r.body);
}

/// The sidecar's open descriptors.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A connection flood on the Admin API (anyone who can reach its port can
/// open connections: the key is checked per request). Before, the sidecar
/// accepted every connection and kept it as long as the client did: a few
/// thousand idle connections used up its descriptors, and then its store
/// and its xDS could open nothing. Now at most `--max-connections` are
/// open (the rest wait in the backlog), and a client that sends nothing,
/// stops in its headers or in its body, is dropped after
/// `--client-timeout`; the revocation service takes the same limits.
#[test]
fn connection_floods_and_stalled_clients_cannot_exhaust_the_sidecar() {
    use std::io::Write;
    use std::net::TcpStream;
    let dir = TestDir::new("admin_security_flood");
    let (www, _www) = static_server(&dir, "www");
    let gw = Gateway::start(
        dir.path(),
        &["--max-connections", "20", "--client-timeout", "1"],
    );
    let pid = gw.sidecar_pid().expect("sidecar pid");
    let before = open_fds(pid);

    let mut flood: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(("127.0.0.1", gw.admin_port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let during = open_fds(pid);
    assert!(
        during <= before + 20 + 5,
        "the sidecar holds {during} descriptors with 200 idle clients ({before} before)"
    );
    // Every idle client is dropped, 20 at a time, one second each.
    for (i, s) in flood.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(20)),
            "idle connection {i} is still open"
        );
    }
    drop(flood);

    // A client stopping in its headers, and one stopping in its body: the
    // write never happens.
    let mut headers = TcpStream::connect(("127.0.0.1", gw.admin_port)).unwrap();
    headers
        .write_all(b"GET /apisix/admin/routes HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let mut body = TcpStream::connect(("127.0.0.1", gw.admin_port)).unwrap();
    body.write_all(
        b"PUT /apisix/admin/routes/stalled HTTP/1.1\r\nHost: 127.0.0.1\r\n\
          Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"uri\":",
    )
    .unwrap();
    assert!(closed_within(&mut headers, Duration::from_secs(5)));
    assert!(closed_within(&mut body, Duration::from_secs(5)));
    assert_eq!(route_count(&gw), 0);

    // The revocation service (on the xDS address) takes the same limits.
    let port: u16 = std::fs::read_to_string(dir.path().join("routes.revocations-port"))
        .expect("the revocation service's port file")
        .trim()
        .parse()
        .unwrap();
    let mut flood: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let during = open_fds(pid);
    assert!(
        during <= before + 20 + 5,
        "the sidecar holds {during} descriptors with 100 idle clients of the revocation service"
    );
    for s in flood.iter_mut() {
        assert!(closed_within(s, Duration::from_secs(20)));
    }
    drop(flood);

    // And the gateway works: a route written now is served.
    let r = gw.admin(
        "PUT",
        "/apisix/admin/routes/after",
        Some(&format!(
            r#"{{"uri":"/who","upstream":{{"type":"roundrobin","nodes":{{"127.0.0.1:{www}":1}}}}}}"#
        )),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    served(&gw, "/who", "www");
}
