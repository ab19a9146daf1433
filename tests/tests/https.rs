//! HTTPS (APISIX's `ssls`): certificates chosen by SNI on the HTTPS
//! listener, through a real Envoy.
//!
//! - `https_listener_*`: the sidecar's xDS server in process (as
//!   `xds_envoy.rs`), a route table with ssl objects, one Envoy; the
//!   client is rustls, trusting the test's own CA (rcgen), so each
//!   handshake also checks the certificate names the SNI.
//! - `admin_api_*`, `login_*`: the whole gateway (sidecar + Envoy, as
//!   `make run`), ssl objects written through `/apisix/admin/ssls`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use integration_tests::browser::Browser;
use integration_tests::echo::{dechunk, EchoServer};
use integration_tests::gateway::{render_bootstrap, Gateway};
use integration_tests::provider::{CLIENT_ID, DEFAULT_CLIENT_SECRET, PASSWORD, USER};
use integration_tests::{
    envoy_bin, free_port, port_open, wait_for, wasm_path, Httpbin, Proc, Provider, ProviderOptions,
    TestDir,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{json, Value};
use sidecar::apisix::table::{Published, RouteTable};
use sidecar::store::Stored;
use sidecar::translate::ProxySettings;
use sidecar::xds::{ads_service, serve_on, XdsStatus};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(15);

/// The test's certificate authority.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

/// A server certificate: PEM chain, PEM key, and the leaf's DER (what the
/// client must see).
#[derive(Clone)]
struct Leaf {
    cert: String,
    key: String,
    der: Vec<u8>,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "https.rs test CA");
        let cert = p.self_signed(&key).unwrap();
        let der = cert.der().clone();
        Ca {
            issuer: Issuer::new(p, key),
            der,
        }
    }

    /// A certificate for `names`, valid from two days ago for `days` more
    /// days (negative: expired).
    fn leaf(&self, names: &[&str], days: i64) -> Leaf {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(2);
        p.not_after = now + time::Duration::days(days);
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    fn client(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let mut c = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(c)
    }
}

fn ssl(leaf: &Leaf, snis: &[&str]) -> Value {
    json!({"cert": leaf.cert, "key": leaf.key, "snis": snis})
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A TLS connection to 127.0.0.1:`port` with `sni` (a name; an IP address
/// sends no SNI), handshake done; the error says why it failed.
fn connect(config: &Arc<ClientConfig>, port: u16, sni: &str) -> Result<Tls, String> {
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let conn = ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(tls)
}

/// The leaf certificate the server sent.
fn peer(tls: &Tls) -> Vec<u8> {
    tls.conn.peer_certificates().expect("a certificate")[0].to_vec()
}

#[derive(Debug)]
struct Reply {
    status: u16,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 GET on `tls` (kept alive).
fn get(tls: &mut Tls, host: &str, path: &str) -> std::io::Result<Reply> {
    get_with(tls, host, path, &[])
}

/// [`get`] with more request headers.
fn get_with(
    tls: &mut Tls,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Reply> {
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(tls, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n")?;
    tls.flush()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(r) = parse(&buf) {
            return Ok(r);
        }
        let n = tls.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other(format!(
                "closed after {:?}",
                String::from_utf8_lossy(&buf)
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A whole response in `buf`, if there is one.
fn parse(buf: &[u8]) -> Option<Reply> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let body = if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        if !body.ends_with("0\r\n\r\n") {
            return None;
        }
        dechunk(body)
    } else {
        let n: usize = find("content-length")?.parse().ok()?;
        if body.len() < n {
            return None;
        }
        body[..n].to_string()
    };
    Some(Reply {
        status,
        headers,
        body,
    })
}

/// The echo upstream's view of the request headers.
fn echoed_headers(r: &Reply) -> BTreeMap<String, String> {
    let v: Value = serde_json::from_str(&r.body).expect("echo JSON");
    v["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_ascii_lowercase(),
                h[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Envoy's stats under `prefix` (from its admin).
fn stats(admin_port: u16, prefix: &str) -> BTreeMap<String, u64> {
    let r = integration_tests::get(
        &format!("http://127.0.0.1:{admin_port}/stats?filter=^{prefix}"),
        &[],
    )
    .expect("stats");
    r.body
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
        .collect()
}

/// Envoy's count of filter chains draining now.
fn draining(admin_port: u16) -> u64 {
    stats(
        admin_port,
        "listener_manager\\.total_filter_chains_draining",
    )
    .values()
    .sum()
}

/// The sidecar's xDS server (in process, on its own runtime) and one Envoy
/// bootstrapped to it.
struct XdsEnvoy {
    tx: watch::Sender<Published>,
    status: Arc<XdsStatus>,
    https_port: u16,
    envoy_admin: u16,
    _envoy: Proc,
    _rt: tokio::runtime::Runtime,
}

impl XdsEnvoy {
    fn start(dir: &TestDir, first: Published) -> XdsEnvoy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = watch::channel(first);
        let https_port = free_port();
        let settings = ProxySettings {
            listen_addr: "127.0.0.1".into(),
            proxy_port: free_port(),
            https_port,
            wasm_path: wasm_path(),
            filter_settings: "{}".into(),
            trusted_proxy_hops: 0,
            backchannel_sink: None,
            revocations: None,
            clients: Default::default(),
        };
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let xds_port = listener.local_addr().unwrap().port();
        let status = XdsStatus::new();
        rt.spawn(serve_on(
            listener,
            ads_service(rx, None, settings, status.clone()),
        ));
        let envoy_admin = free_port();
        let bootstrap = render_bootstrap(&[
            ("XDS_PORT", xds_port.to_string()),
            ("ENVOY_ADMIN_PORT", envoy_admin.to_string()),
            ("NODE_ID", format!("https-{https_port}")),
        ]);
        let file = dir.path().join("envoy-bootstrap.yaml");
        std::fs::write(&file, bootstrap).unwrap();
        let mut cmd = std::process::Command::new(envoy_bin());
        cmd.arg("-c").arg(&file).args([
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "-l",
            "info",
        ]);
        let mut envoy = Proc::spawn("envoy", dir.path(), cmd);
        wait_for("the HTTPS listener", WAIT, || {
            envoy.assert_running();
            port_open(https_port).then_some(())
        });
        XdsEnvoy {
            tx,
            status,
            https_port,
            envoy_admin,
            _envoy: envoy,
            _rt: rt,
        }
    }
}

fn table(routes: &[(&str, Value)], ssls: &[(&str, Value)]) -> Published {
    let mut stored = Stored::with_routes(
        routes
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    );
    stored.ssls = ssls
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let t = RouteTable::build(stored);
    assert!(t.invalid_ssls().is_empty(), "{:?}", t.invalid_ssls());
    Arc::new(t)
}

#[test]
fn https_listener_serves_each_sni_its_certificate_and_keeps_connections_across_changes() {
    let dir = TestDir::for_current_test();
    let echo = EchoServer::start(dir.path(), "up");
    let routes = [
        (
            "any",
            json!({"uri": "/anything/*",
                   "upstream": {"nodes": {format!("127.0.0.1:{}", echo.port): 1}}}),
        ),
        (
            "b-only",
            json!({"uri": "/b-only", "hosts": ["b.other.test"],
                   "upstream": {"nodes": {format!("127.0.0.1:{}", echo.port): 1}}}),
        ),
    ];
    let ca = Ca::new();
    let client = ca.client();
    let app = ca.leaf(&["app.test"], 30);
    // X.509 wildcards cover one level: a second name for the deeper SNI.
    let other = ca.leaf(&["*.other.test", "*.y.other.test"], 30);
    let ssls = vec![
        ("a", ssl(&app, &["app.test"])),
        ("b", ssl(&other, &["*.other.test"])),
    ];
    let gw = XdsEnvoy::start(&dir, table(&routes, &ssls));
    let port = gw.https_port;

    // SNI app.test: app's certificate (verified for app.test by the
    // client), and the request reaches the upstream, told it was https.
    let mut kept = connect(&client, port, "app.test").expect("app.test handshake");
    assert_eq!(peer(&kept), app.der);
    let r = get(&mut kept, "app.test", "/anything/x").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let seen = echoed_headers(&r);
    assert_eq!(seen["x-forwarded-proto"], "https", "{seen:?}");

    // Names match without case, as in APISIX.
    let t = connect(&client, port, "App.TEST").expect("App.TEST handshake");
    assert_eq!(peer(&t), app.der);

    // The wildcard ssl, at one and two levels below.
    for sni in ["a.other.test", "x.y.other.test"] {
        let mut t = connect(&client, port, sni).unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(peer(&t), other.der, "{sni}");
        assert_eq!(get(&mut t, sni, "/anything/w").unwrap().status, 200);
    }
    // An unknown SNI, the wildcard's own base name, and no SNI at all: no
    // certificate (Envoy has no chain for them; the handshake fails).
    for sni in ["unknown.test", "other.test", "127.0.0.1"] {
        let err = connect(&client, port, sni).err();
        assert!(err.is_some(), "{sni}: a handshake succeeded");
    }

    // SNI and Host need not agree (as in APISIX, which routes by Host
    // too): the certificate for app.test carries a request for a route of
    // b.other.test. No more access than the HTTP listener gives anyway.
    let r = get(&mut kept, "b.other.test", "/b-only").unwrap();
    assert_eq!(r.status, 200, "{r:?}");

    // Changes: a third ssl, then one removed, then a renewed certificate.
    // The kept connection (on a's chain) stays usable and is not asked to
    // close, and Envoy drains no filter chain but the removed one (the
    // gauge; a drained HTTP/1.1 connection would get `Connection: close`
    // only later, as the drain time runs).
    let before = stats(gw.envoy_admin, "listener_manager\\.");
    let third = ca.leaf(&["c.test"], 30);
    let mut more = ssls.clone();
    more.push(("c", ssl(&third, &["c.test"])));
    gw.tx.send(table(&routes, &more)).unwrap();
    wait_for("the third ssl", WAIT, || {
        connect(&client, port, "c.test").ok()
    });
    let r = get(&mut kept, "app.test", "/anything/after-add").unwrap();
    assert_eq!((r.status, r.header("connection")), (200, None), "{r:?}");
    assert_eq!(draining(gw.envoy_admin), 0, "after-add");

    let fewer = vec![ssls[0].clone(), more[2].clone()];
    gw.tx.send(table(&routes, &fewer)).unwrap();
    wait_for("ssl b gone", WAIT, || {
        connect(&client, port, "a.other.test")
            .is_err()
            .then_some(())
    });
    let r = get(&mut kept, "app.test", "/anything/after-delete").unwrap();
    assert_eq!((r.status, r.header("connection")), (200, None), "{r:?}");
    assert_eq!(draining(gw.envoy_admin), 1, "after-delete");

    let renewed = ca.leaf(&["app.test"], 60);
    let renewed_set = vec![("a", ssl(&renewed, &["app.test"])), more[2].clone()];
    gw.tx.send(table(&routes, &renewed_set)).unwrap();
    wait_for("the renewed certificate", WAIT, || {
        let t = connect(&client, port, "app.test").ok()?;
        (peer(&t) == renewed.der).then_some(())
    });
    let r = get(&mut kept, "app.test", "/anything/after-renewal").unwrap();
    assert_eq!((r.status, r.header("connection")), (200, None), "{r:?}");
    assert_eq!(draining(gw.envoy_admin), 1, "after-renewal");

    // Envoy updated the HTTPS listener in place (filter chains only) and
    // drained no listener.
    let after = stats(gw.envoy_admin, "listener_manager\\.");
    println!("listener stats before {before:?}\nafter {after:?}");
    let d = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    assert_eq!(d("listener_manager.listener_removed"), 0, "{after:?}");
    assert!(
        d("listener_manager.listener_in_place_updated") >= 2,
        "{after:?}"
    );
    assert_eq!(
        d("listener_manager.total_listeners_draining"),
        0,
        "{after:?}"
    );
    // The certificates were ACKed like the rest (SDS over the ADS stream).
    wait_for("Envoy to ACK every type", WAIT, || {
        let r = gw.status.report();
        let acked = r.streams.values().next()?.acked.clone();
        (r.versions.contains_key("secrets") && acked == r.versions).then_some(())
    });
    assert!(gw.status.report().last_nack.is_empty());
}

/// The gateway with its HTTPS listener on a free port.
fn gateway(dir: &TestDir) -> (Gateway, u16) {
    let https_port = free_port();
    let gw = Gateway::start(dir.path(), &["--https-port", &https_port.to_string()]);
    (gw, https_port)
}

fn put_ssl(gw: &Gateway, id: &str, body: &Value) -> integration_tests::Response {
    gw.admin(
        "PUT",
        &format!("/apisix/admin/ssls/{id}"),
        Some(&body.to_string()),
    )
}

#[test]
fn admin_api_ssls_are_validated_served_by_sni_and_never_show_the_key() {
    let dir = TestDir::for_current_test();
    let echo = EchoServer::start(dir.path(), "up");
    let (gw, port) = gateway(&dir);
    let r = gw.admin(
        "PUT",
        "/apisix/admin/routes/any",
        Some(
            &json!({"uri": "/anything/*",
                    "upstream": {"nodes": {format!("127.0.0.1:{}", echo.port): 1}}})
            .to_string(),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let ca = Ca::new();
    let client = ca.client();
    // No ssl yet: no HTTPS listener.
    assert!(!port_open(port));

    let app = ca.leaf(&["app.test"], 30);
    let r = put_ssl(&gw, "1", &ssl(&app, &["app.test"]));
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(!r.body.contains("PRIVATE KEY"), "{}", r.body);
    let mut t = wait_for("the ssl in Envoy", WAIT, || {
        connect(&client, port, "app.test").ok()
    });
    assert_eq!(peer(&t), app.der);
    let r = get(&mut t, "app.test", "/anything/x").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(echoed_headers(&r)["x-forwarded-proto"], "https");

    // GET and list: the key redacted, the certificate shown.
    let one = gw.admin("GET", "/apisix/admin/ssls/1", None);
    assert_eq!(one.status, 200);
    let v = one.json();
    assert_eq!(v["value"]["key"], "******", "{v}");
    assert_eq!(v["value"]["cert"], app.cert.as_str());
    assert_eq!(v["key"], "/apisix/ssls/1");
    let list = gw.admin("GET", "/apisix/admin/ssls", None);
    assert!(!list.body.contains("PRIVATE KEY"), "{}", list.body);
    assert_eq!(list.json()["total"], 1);

    // Refused, named, and nothing changed.
    let other = ca.leaf(&["b.test"], 30);
    let expired = ca.leaf(&["b.test"], -1);
    let cases = [
        (
            json!({"cert": "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
                   "key": other.key, "snis": ["b.test"]}),
            "property \"cert\"",
        ),
        (
            json!({"cert": other.cert, "key": app.key, "snis": ["b.test"]}),
            "property \"key\" does not match the certificate",
        ),
        (ssl(&expired, &["b.test"]), "property \"cert\" has expired"),
        (
            json!({"cert": other.cert, "key": other.key, "snis": ["b.test"], "client": {"ca": other.cert}}),
            "property \"client\" is not supported",
        ),
    ];
    for (body, want) in &cases {
        let r = put_ssl(&gw, "2", body);
        assert_eq!(r.status, 400, "{want}: {}", r.body);
        let msg = r.json()["error_msg"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(msg.contains(want), "{want}: {msg}");
        assert!(!r.body.contains("PRIVATE KEY"), "{}", r.body);
    }
    assert_eq!(
        gw.admin("GET", "/apisix/admin/ssls", None).json()["total"],
        1
    );
    assert_eq!(gw.admin("GET", "/apisix/admin/ssls/2", None).status, 404);
    assert!(connect(&client, port, "b.test").is_err());

    // What GET showed, written back (key "******"): the stored key kept.
    let shown = v["value"].clone();
    let mut back = shown.as_object().unwrap().clone();
    back.remove("create_time");
    back.remove("update_time");
    let r = put_ssl(&gw, "1", &Value::Object(back));
    assert_eq!(r.status, 200, "{}", r.body);
    // A PATCH adds a name; the key is kept too.
    let r = gw.admin(
        "PATCH",
        "/apisix/admin/ssls/1",
        Some(&json!({"snis": ["app.test", "www.app.test"], "labels": {"team": "a"}}).to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Before the change reaches Envoy, no chain: the connection is reset.
    let err = wait_for("the patched snis", WAIT, || {
        connect(&client, port, "www.app.test")
            .err()
            .filter(|e| e.contains("not valid for name"))
    });
    // Served (the handshake reached the name check): app's certificate
    // does not name www.app.test, which the client refuses, as a browser
    // would. APISIX accepts such an ssl too.
    assert!(err.contains("not valid for name"), "{err}");
    let mut t = connect(&client, port, "app.test").expect("the kept key still serves");
    assert_eq!(get(&mut t, "app.test", "/anything/y").unwrap().status, 200);

    // Deleted: the last ssl gone, the HTTPS port closes; HTTP still serves.
    assert_eq!(gw.admin("DELETE", "/apisix/admin/ssls/1", None).status, 200);
    wait_for("the HTTPS listener gone", WAIT, || {
        (!port_open(port)).then_some(())
    });
    assert_eq!(
        integration_tests::get(&gw.url("/anything/z"), &[])
            .unwrap()
            .status,
        200
    );
}

#[test]
fn login_over_https_in_chromium_with_secure_cookies() {
    let dir = TestDir::for_current_test();
    let https_port = free_port();
    let redirect = format!("https://app.test:{https_port}/anything/callback");
    let mut options = ProviderOptions::default();
    options.env.push(("REDIRECT_URIS".into(), redirect.clone()));
    let provider = Provider::start(dir.path(), options);
    let httpbin = Httpbin::start(dir.path());
    let gw = Gateway::start(dir.path(), &["--https-port", &https_port.to_string()]);
    let ca = Ca::new();
    let client = ca.client();
    let app = ca.leaf(&["app.test"], 30);
    let r = put_ssl(&gw, "app", &ssl(&app, &["app.test"]));
    assert_eq!(r.status, 201, "{}", r.body);
    let route = json!({
        "uri": "/anything/*",
        "hosts": ["app.test"],
        "plugins": {"openid-connect": {
            "client_id": CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET,
            "discovery": provider.discovery_url(),
            "scope": "openid profile",
            "bearer_only": false,
            "redirect_uri": redirect,
        }},
        "upstream": {"nodes": {format!("127.0.0.1:{}", httpbin.port): 1}},
    });
    let r = gw.admin(
        "PUT",
        "/apisix/admin/routes/login",
        Some(&route.to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // The same login over plain HTTP, for contrast (its redirect URI made
    // from the request: http).
    let mut plain_route = route.clone();
    plain_route["uri"] = json!("/plain/*");
    plain_route["hosts"] = json!(["plain.test"]);
    plain_route["plugins"]["openid-connect"]["redirect_uri"] = json!("/plain/callback");
    let r = gw.admin(
        "PUT",
        "/apisix/admin/routes/plain",
        Some(&plain_route.to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let host = format!("app.test:{https_port}");

    // Over HTTPS a login start sets its flow cookies `Secure`; the same
    // login over plain HTTP does not (the scheme decides, as the default
    // of `cookie_secure`).
    let html = [("accept", "text/html")];
    let r = wait_for("the login route over HTTPS", WAIT, || {
        let mut t = connect(&client, https_port, "app.test").ok()?;
        let r = get_with(&mut t, &host, "/anything/test", &html).ok()?;
        (r.status == 302).then_some(r)
    });
    let cookies: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(!cookies.is_empty(), "{r:?}");
    assert!(
        cookies
            .iter()
            .all(|c| c.to_ascii_lowercase().contains("; secure")),
        "{cookies:?}"
    );
    let plain_host = format!("plain.test:{}", gw.proxy_port);
    let plain = integration_tests::http::request(
        "GET",
        &gw.url("/plain/test"),
        &[("host", plain_host.as_str()), ("accept", "text/html")],
        None,
    )
    .unwrap();
    assert_eq!(plain.status, 302, "{}", plain.body);
    let plain_cookies = plain.header_all("set-cookie");
    assert!(!plain_cookies.is_empty());
    assert!(
        plain_cookies
            .iter()
            .all(|c| !c.to_ascii_lowercase().contains("; secure")),
        "{plain_cookies:?}"
    );

    // Chromium: app.test is 127.0.0.1, the test CA is not trusted (the
    // certificate errors are ignored), the whole login over https.
    let browser = Browser::start_with(
        dir.path(),
        &[
            "--host-resolver-rules=MAP app.test 127.0.0.1",
            "--ignore-certificate-errors",
        ],
    );
    let start = format!("https://app.test:{https_port}/anything/test");
    browser.goto(&start);
    browser.wait_for_element("#kc-form-login", WAIT);
    assert!(
        browser.current_url().starts_with(&provider.issuer()),
        "{}",
        browser.current_url()
    );
    browser.login(USER, PASSWORD);
    let url = browser.wait_for_url(WAIT, |u| u == start);
    assert_eq!(url, start);
    let text = browser.page_text();
    let a = text.find('{').expect("httpbin JSON");
    let b = text.rfind('}').expect("httpbin JSON");
    let page: Value = serde_json::from_str(&text[a..=b]).expect("httpbin JSON");
    let headers = &page["headers"];
    assert!(
        headers.get("X-Access-Token").is_some() || headers.get("X-Userinfo").is_some(),
        "identity headers reached httpbin: {page}"
    );
    // The session cookie is there, and Secure.
    let names: Vec<String> = browser.cookies().into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().any(|n| n == "session"), "{names:?}");
    let secure = browser.secure_cookie_names();
    assert!(
        secure.iter().any(|n| n == "session"),
        "{secure:?} of {names:?}"
    );
}

#[test]
fn ssls_live_in_etcd_where_apisix_keeps_them_and_are_watched() {
    let dir = TestDir::for_current_test();
    let etcd = integration_tests::etcd::Etcd::start(dir.path());
    let echo = EchoServer::start(dir.path(), "up");
    let https_port = free_port();
    let url = etcd.url();
    let gw = Gateway::start(
        dir.path(),
        &["--etcd", &url, "--https-port", &https_port.to_string()],
    );
    let r = gw.admin(
        "PUT",
        "/apisix/admin/routes/any",
        Some(
            &json!({"uri": "/anything/*",
                    "upstream": {"nodes": {format!("127.0.0.1:{}", echo.port): 1}}})
            .to_string(),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let ca = Ca::new();
    let client = ca.client();
    let app = ca.leaf(&["app.test"], 30);
    let r = put_ssl(&gw, "1", &ssl(&app, &["app.test"]));
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.json()["modifiedIndex"].is_u64(), "{}", r.body);
    // APISIX's key; the key itself is stored (APISIX may encrypt it at
    // rest with its keyring; the etcd of this gateway holds it as sent).
    let v = etcd.get("/apisix/ssls/1").expect("/apisix/ssls/1 in etcd");
    assert_eq!(v["id"], "1");
    assert_eq!(v["key"], app.key.as_str());
    let t = wait_for("the ssl in Envoy", WAIT, || {
        connect(&client, https_port, "app.test").ok()
    });
    assert_eq!(peer(&t), app.der);

    // An ssl written straight into etcd (APISIX, etcdctl, another
    // sidecar) reaches Envoy through the watch.
    let b = ca.leaf(&["b.test"], 30);
    let mut obj = ssl(&b, &["b.test"]);
    obj["id"] = json!("2");
    etcd.put("/apisix/ssls/2", &obj);
    let t = wait_for("the watched ssl in Envoy", WAIT, || {
        connect(&client, https_port, "b.test").ok()
    });
    assert_eq!(peer(&t), b.der);
    let shown = gw.admin("GET", "/apisix/admin/ssls/2", None);
    assert_eq!(shown.json()["value"]["key"], "******");
}
