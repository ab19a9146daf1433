//! The edge matches requests as nginx (hence APISIX) does, through the real
//! Envoy: escaped slashes cannot skip a more protected route, a trailing
//! dot in `Host` cannot skip a host's routes, and identity headers written
//! with `_` never reach an upstream (dropped by the sidecar's listener; and
//! stripped by the filter where a static config lets them in).

use std::time::Duration;

use integration_tests::echo::{raw_request, EchoServer};
use integration_tests::gateway::Gateway;
use integration_tests::http::closed_within;
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

/// Reads one HTTP/1.1 answer's status line from `s` (keeps the
/// connection).
fn status_of(s: &mut std::net::TcpStream) -> Option<u16> {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&b[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.split(' ').nth(1)?.parse().ok()
}

/// Clients that hold connections: before, Envoy's listener kept a client
/// that stops in its headers for its stream idle timeout (5 minutes), a
/// kept-alive connection without a request for an hour, and took
/// connections until it ran out of descriptors. Now, as nginx: headers
/// within `--client-timeout` (`client_header_timeout`), an idle connection
/// closed after it (`keepalive_timeout`), and at most
/// `--proxy-max-connections` connections (`worker_connections`, shared by
/// Envoy's workers): one more is closed at once.
#[test]
fn the_listener_drops_stalled_clients_and_bounds_connections() {
    use std::io::Write;
    use std::net::TcpStream;
    let dir = TestDir::new("edge_clients");
    let echo = EchoServer::start(dir.path(), "upstream");
    let gw = Gateway::start_concurrent(
        dir.path(),
        &["--client-timeout", "4", "--proxy-max-connections", "4"],
        2,
    );
    admin_put(
        &gw,
        "open",
        json!({"uri": "/*", "upstream": upstream(&echo)}),
    );
    wait_for("the route", Duration::from_secs(10), || {
        get(&gw.url("/x"), &[]).ok().filter(|r| r.status == 200)
    });
    let request = b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

    // Headers that never end, and a connection left idle after an answer.
    let mut stalled = TcpStream::connect(("127.0.0.1", gw.proxy_port)).unwrap();
    stalled
        .write_all(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .unwrap();
    let mut idle = TcpStream::connect(("127.0.0.1", gw.proxy_port)).unwrap();
    idle.write_all(request).unwrap();
    assert_eq!(status_of(&mut idle), Some(200));
    let t = std::time::Instant::now();
    assert!(
        closed_within(&mut stalled, Duration::from_secs(15)),
        "a client stopped in its headers is still connected after 15 s"
    );
    eprintln!("stalled headers dropped after {:?}", t.elapsed());
    assert!(
        closed_within(&mut idle, Duration::from_secs(15)),
        "an idle kept-alive connection is still open after 15 s"
    );
    eprintln!("idle connection dropped after {:?}", t.elapsed());

    // Four connections in use: a fifth is closed at once, on any worker;
    // once one of the four goes, a new one is served.
    let mut four: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", gw.proxy_port)).unwrap();
            s.write_all(request).unwrap();
            assert_eq!(status_of(&mut s), Some(200));
            s
        })
        .collect();
    for _ in 0..3 {
        let mut fifth = TcpStream::connect(("127.0.0.1", gw.proxy_port)).unwrap();
        let _ = fifth.write_all(request);
        assert_eq!(status_of(&mut fifth), None, "a fifth connection was served");
    }
    assert!(gw.envoy_stat("connection_limit.ingress.limited_connections") >= 3);
    drop(four.pop());
    wait_for(
        "a connection after one closed",
        Duration::from_secs(5),
        || {
            let mut s = TcpStream::connect(("127.0.0.1", gw.proxy_port)).ok()?;
            s.write_all(request).ok()?;
            (status_of(&mut s) == Some(200)).then_some(())
        },
    );
}

/// HTTP/2 (h2c here, h2 on HTTPS): Envoy 1.40's default lets one
/// connection open 1,024 streams at once (each with the filter's context);
/// the listener now announces 128 (nginx's
/// `http2_max_concurrent_streams`) in its SETTINGS, and the requests on
/// the connection are served.
#[test]
fn http2_connections_have_a_stream_limit() {
    let dir = TestDir::new("edge_h2");
    let echo = EchoServer::start(dir.path(), "upstream");
    let gw = Gateway::start(dir.path(), &[]);
    admin_put(
        &gw,
        "open",
        json!({"uri": "/*", "upstream": upstream(&echo)}),
    );
    wait_for("the route", Duration::from_secs(10), || {
        get(&gw.url("/x"), &[]).ok().filter(|r| r.status == 200)
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, limit) = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.proxy_port))
            .await
            .unwrap();
        let (mut client, mut conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
        let req = http::Request::get(format!("http://127.0.0.1:{}/x", gw.proxy_port))
            .body(())
            .unwrap();
        let (answer, _) = client.send_request(req, true).expect("send");
        let answer = tokio::select! {
            a = answer => a.expect("answer"),
            c = &mut conn => panic!("the connection ended: {c:?}"),
        };
        (answer.status().as_u16(), conn.max_concurrent_send_streams())
    });
    assert_eq!(status, 200);
    assert_eq!(limit, 128);
}

/// A client that sends a large body to an upstream that does not read it:
/// Envoy reads from the client until its per-connection buffer limit, so
/// the limit is the memory one connection can pin. Envoy's default is
/// 1 MiB (50,000 connections: 50 GiB); the listeners now take 32 KiB
/// (Envoy's edge guidance; nginx reads a body through a 16 KiB buffer).
#[test]
fn a_client_cannot_make_envoy_buffer_a_megabyte() {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    let dir = TestDir::new("edge_buffer");
    // An upstream that accepts and never reads.
    let hold = TcpListener::bind("127.0.0.1:0").unwrap();
    let hold_port = hold.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        for s in hold.incoming().flatten() {
            kept.push(s);
        }
    });
    let gw = Gateway::start(dir.path(), &[]);
    admin_put(
        &gw,
        "upload",
        json!({"uri": "/upload", "upstream": {"type": "roundrobin",
               "nodes": {format!("127.0.0.1:{hold_port}"): 1}}}),
    );
    wait_for("Envoy to have the route", Duration::from_secs(10), || {
        let dump = get(
            &format!(
                "http://127.0.0.1:{}/config_dump?resource=dynamic_route_configs",
                gw.envoy_admin_port
            ),
            &[],
        )
        .ok()?;
        dump.body.contains("\"/upload\"").then_some(())
    });
    let mut client = TcpStream::connect(("127.0.0.1", gw.proxy_port)).unwrap();
    client
        .write_all(b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 16777216\r\n\r\n")
        .unwrap();
    client
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let chunk = vec![b'a'; 65_536];
    let mut sent = 0usize;
    while sent < 16_777_216 {
        match client.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break, // Envoy stopped reading
        }
    }
    let buffered = gw.envoy_stat("http.ingress.downstream_cx_rx_bytes_buffered");
    eprintln!("sent {sent} bytes before Envoy stopped reading; {buffered} buffered");
    // Some of the body is held (the route took it), at most the limit.
    assert!(
        (16 * 1024..=64 * 1024).contains(&buffered),
        "Envoy holds {buffered} bytes of one client's body"
    );
}
