//! The sidecar's xDS server against two real Envoys (one asking for
//! incremental xDS, one for state-of-the-world), without the Admin
//! API: route sets sent on the watch channel become live in both (within
//! [`APPLY_WITHIN`], the measured times printed), without draining the
//! listener. (Moved out of
//! `sidecar/src/xds.rs`, so the sidecar's unit tests need neither Envoy nor
//! a wasm build.)

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::{envoy_bin, repo_root, wasm_path, TestDir};
use serde_json::{json, Value};
use sidecar::apisix::table::{Published, RouteTable};
use sidecar::store::Stored;
use sidecar::translate::{ProxySettings, LISTENER_NAME};
use sidecar::xds::{ads_service, serve_on, XdsStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a route change may take to be live before the test fails. It
/// usually takes a few milliseconds ([`APPLY_EXPECTED`]; the measured times
/// are printed); the bound is generous so a loaded 2-core CI machine does
/// not fail, and still catches a change that never arrives.
const APPLY_WITHIN: Duration = Duration::from_secs(10);
/// What a route change usually takes; a slower one is reported, not failed.
const APPLY_EXPECTED: Duration = Duration::from_secs(1);

struct EnvoyProc {
    child: tokio::process::Child,
    admin: SocketAddr,
    proxy: SocketAddr,
}

impl EnvoyProc {
    /// Starts Envoy from `envoy/bootstrap.yaml` (admin and listener on
    /// ports the kernel picks) and waits for the listener from xDS.
    /// `sotw`: Envoy asks for state-of-the-world xDS (`api_type: GRPC`)
    /// instead of the bootstrap's incremental `DELTA_GRPC`.
    async fn start(dir: &Path, node: &str, xds_port: u16, sotw: bool) -> EnvoyProc {
        let template = std::fs::read_to_string(repo_root().join("envoy/bootstrap.yaml"))
            .expect("read envoy/bootstrap.yaml");
        assert!(template.contains("api_type: DELTA_GRPC"), "{template}");
        let template = if sotw {
            template.replace("api_type: DELTA_GRPC", "api_type: GRPC")
        } else {
            template
        };
        let bootstrap = template
            .replace("${XDS_PORT}", &xds_port.to_string())
            .replace("${ENVOY_ADMIN_PORT}", "0")
            .replace("${NODE_ID}", node);
        assert!(
            !bootstrap.contains("${"),
            "unfilled placeholder:\n{bootstrap}"
        );
        let config = dir.join(format!("{node}.yaml"));
        let admin_file = dir.join(format!("{node}.admin"));
        std::fs::write(&config, bootstrap).expect("write the bootstrap");
        let log = std::fs::File::create(dir.join(format!("{node}.log"))).expect("log file");
        let child = tokio::process::Command::new(envoy_bin())
            .arg("-c")
            .arg(&config)
            .args(["--disable-hot-restart", "--concurrency", "1", "-l", "info"])
            .arg("--admin-address-path")
            .arg(&admin_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start envoy");
        let mut envoy = EnvoyProc {
            child,
            admin: "127.0.0.1:0".parse().unwrap(),
            proxy: "127.0.0.1:0".parse().unwrap(),
        };
        let admin = wait_for("Envoy's admin address", START_TIMEOUT, || {
            let text = std::fs::read_to_string(&admin_file).unwrap_or_default();
            async move { text.trim().parse::<SocketAddr>().ok() }
        })
        .await;
        envoy.admin = admin;
        envoy.proxy = wait_for("the listener from xDS", START_TIMEOUT, || async move {
            let r = get(admin, "/listeners?format=json").await.ok()?;
            let v: Value = serde_json::from_str(&r.body).ok()?;
            let sa = v["listener_statuses"]
                .as_array()?
                .iter()
                .find(|l| l["name"] == LISTENER_NAME)?
                .pointer("/local_address/socket_address")?
                .clone();
            let port = sa["port_value"].as_u64().filter(|p| *p > 0)?;
            format!("127.0.0.1:{port}").parse().ok()
        })
        .await;
        assert!(
            envoy.child.try_wait().ok().flatten().is_none(),
            "Envoy exited"
        );
        envoy
    }

    async fn get(&self, path: &str) -> Reply {
        get(self.proxy, path)
            .await
            .unwrap_or_else(|e| panic!("GET {path} through Envoy: {e}"))
    }

    /// Counters and gauges whose names start with `prefix`.
    async fn stats(&self, prefix: &str) -> BTreeMap<String, u64> {
        let r = get(
            self.admin,
            &format!("/stats?filter=^{}", prefix.replace('.', "%5C.")),
        )
        .await
        .expect("admin /stats");
        r.body
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect()
    }

    /// SIGTERM by PID, then wait (SIGKILL after 5 s).
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(x) = f().await {
            return x;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until `check` holds; returns how long that took (printed when
/// above [`APPLY_EXPECTED`]). Fails after [`APPLY_WITHIN`].
async fn time_until<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            let took = start.elapsed();
            if took > APPLY_EXPECTED {
                eprintln!("{what}: {took:?} (slow: expected under {APPLY_EXPECTED:?})");
            }
            return took;
        }
        assert!(
            start.elapsed() < APPLY_WITHIN,
            "{what} did not happen within {APPLY_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

/// HTTP/1.1 GET on a fresh connection (`Connection: close`). Reads
/// until the body is complete, not until the server closes: Envoy
/// delays closing after a local reply (`delayed_close_timeout`, 1 s).
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<Reply> {
    request(addr, "GET", path, "test.local").await
}

async fn request(addr: SocketAddr, method: &str, path: &str, host: &str) -> std::io::Result<Reply> {
    let io = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = s.read(&mut chunk).await?;
            buf.extend_from_slice(&chunk[..n]);
            if n == 0 || complete(&buf) {
                return Ok::<_, std::io::Error>(buf);
            }
        }
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .map_err(|_| std::io::Error::other("timed out"))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {text:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        integration_tests::echo::dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Reply { status, head, body })
}

/// Whether `buf` holds a whole response (by content-length or the last
/// chunk).
fn complete(buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let head = head.to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with("0\r\n\r\n");
    }
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .is_some_and(|n| body.len() >= n)
}

/// An upstream answering every request with 200 and its `name`.
async fn upstream(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{name}",
                            name.len()
                        );
                        if conn.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

fn route(uri: &str, nodes: &[(SocketAddr, u32)]) -> Value {
    let nodes: serde_json::Map<String, Value> = nodes
        .iter()
        .map(|(a, w)| (a.to_string(), json!(w)))
        .collect();
    json!({"uri": uri, "upstream": {"type": "roundrobin", "nodes": nodes}})
}

fn route_set(routes: &[(&str, Value)]) -> Published {
    Arc::new(RouteTable::build(Stored::with_routes(
        routes
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )))
}

async fn body_is(e: &EnvoyProc, path: &str, want: &str) -> bool {
    get(e.proxy, path)
        .await
        .is_ok_and(|r| r.status == 200 && r.body == want)
}

async fn status_is(e: &EnvoyProc, path: &str, want: u16) -> bool {
    get(e.proxy, path).await.is_ok_and(|r| r.status == want)
}

const LISTENER_STATS: &[&str] = &[
    "listener_manager.lds.update_success",
    "listener_manager.listener_added",
    "listener_manager.listener_modified",
    "listener_manager.listener_removed",
    "listener_manager.total_listeners_draining",
];

async fn listener_stats(e: &EnvoyProc) -> BTreeMap<String, u64> {
    let all = e.stats("listener_manager.").await;
    LISTENER_STATS
        .iter()
        .map(|k| (k.to_string(), all.get(*k).copied().unwrap_or(0)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_follows_route_changes_without_draining_its_listener() {
    let logs = TestDir::new("xds_envoy");
    let wasm = wasm_path();
    let (a, b) = (upstream("A").await, upstream("B").await);
    let oidc = json!({
        "client_id": "c",
        "client_secret": "s3cr3t-s3cr3t",
        // Nothing listens there: a bearer_only route without a token is
        // refused before any provider call.
        "discovery": "http://127.0.0.1:9/.well-known/openid-configuration",
        "bearer_only": true,
    });
    let mut secure = route("/secure/*", &[(a, 1)]);
    secure["plugins"] = json!({"openid-connect": oidc});
    // Routes present in every set below (they must not change).
    let mut tls = secure.clone();
    tls["uri"] = json!("/tls/*");
    tls["plugins"]["openid-connect"]["discovery"] =
        json!("https://idp.example.test/realms/r/.well-known/openid-configuration");
    let mut lax = tls.clone();
    lax["uri"] = json!("/lax/*");
    lax["plugins"]["openid-connect"]["discovery"] =
        json!("https://lax.example.test:8443/.well-known/openid-configuration");
    lax["plugins"]["openid-connect"]["ssl_verify"] = json!(false);
    let mut hosted = route("/anything/*", &[(b, 1)]);
    hosted["host"] = json!("*.example.test");
    let mut post = route("/post-only", &[(a, 1)]);
    post["methods"] = json!(["POST"]);
    let dns = json!({"uri": "/dns", "upstream": {"nodes": {format!("localhost:{}", b.port()): 1}}});
    let extras = [
        ("tls", tls),
        ("lax", lax),
        ("hosted", hosted),
        ("post", post),
        ("dns", dns),
    ];
    let set = |list: &[(&str, Value)]| {
        let mut all = list.to_vec();
        all.extend(extras.iter().cloned());
        route_set(&all)
    };

    let v1 = vec![
        ("r1", route("/anything/*", &[(a, 1)])),
        ("secure", secure.clone()),
    ];
    let (tx, rx) = watch::channel(set(&v1));
    let (providers_tx, providers_rx) = watch::channel(Arc::new(Vec::new()));

    let status = XdsStatus::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind xDS");
    let xds_port = listener.local_addr().expect("addr").port();
    let settings = ProxySettings {
        listen_addr: "127.0.0.1".into(),
        // The kernel picks; the test reads it from Envoy's admin.
        proxy_port: 0,
        https_port: 0,
        wasm_path: wasm,
        filter_settings: "{}".into(),
        trusted_proxy_hops: 0,
        backchannel_sink: None,
        revocations: None,
        clients: Default::default(),
    };
    let server = tokio::spawn(serve_on(
        listener,
        ads_service(rx, Some(providers_rx), settings, status.clone()),
    ));

    // One Envoy on incremental (delta) xDS, one on state-of-the-world.
    let e1 = EnvoyProc::start(logs.path(), "xds-test-1", xds_port, false).await;
    let e2 = EnvoyProc::start(logs.path(), "xds-test-2", xds_port, true).await;
    for e in [&e1, &e2] {
        wait_for("the first route", START_TIMEOUT, || async {
            body_is(e, "/anything/x", "A").await.then_some(())
        })
        .await;
        let r = e.get("/secure/x").await;
        assert_eq!(r.status, 401, "the filter read the route metadata: {r:?}");
        assert!(r.head.contains("www-authenticate: bearer"), "{}", r.head);
        assert_eq!(e.get("/nothing").await.status, 404);
        // Methods, hosts (port ignored, wildcard), a host-name node.
        assert_eq!(e.get("/post-only").await.status, 404);
        let r = request(e.proxy, "POST", "/post-only", "test.local")
            .await
            .unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "A"));
        let r = request(e.proxy, "GET", "/anything/x", "a.example.test:9080")
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "B"),
            "the host's route first"
        );
        assert_eq!(e.get("/dns").await.body, "B");
    }
    // Provider clusters, TLS ones included, were accepted; so are
    // clusters for URLs the discovery documents name.
    providers_tx
        .send(Arc::new(vec!["https://keys.example.test/certs".into()]))
        .expect("send");
    for e in [&e1, &e2] {
        wait_for(
            "the extra provider cluster",
            Duration::from_secs(5),
            || async {
                let r = get(e.admin, "/clusters").await.ok()?;
                let names = [
                    "oidc|http|127.0.0.1|9::",
                    "oidc|https|idp.example.test|443::",
                    "oidc|https|lax.example.test|8443::",
                    "oidc|https|keys.example.test|443::",
                ];
                names.iter().all(|n| r.body.contains(n)).then_some(())
            },
        )
        .await;
    }
    assert_eq!(status.report().connected, 2);
    let report = status.report();
    let nodes: BTreeSet<&str> = report.streams.values().map(|s| s.node.as_str()).collect();
    assert_eq!(nodes, BTreeSet::from(["xds-test-1", "xds-test-2"]));
    let before = listener_stats(&e1).await;
    assert_eq!(before["listener_manager.listener_added"], 1, "{before:?}");

    // 1. New endpoints only (EDS).
    let t = Instant::now();
    tx.send(set(&[
        ("r1", route("/anything/*", &[(b, 1)])),
        ("secure", secure.clone()),
    ]))
    .expect("send");
    let d1 = time_until("the new endpoint", || body_is(&e1, "/anything/x", "B")).await;
    time_until("the new endpoint on the second Envoy", || {
        body_is(&e2, "/anything/x", "B")
    })
    .await;
    eprintln!(
        "endpoint change live after {d1:?} ({:?} for both Envoys)",
        t.elapsed()
    );

    // 2. Routes change and a new route with a new cluster appears.
    let t = Instant::now();
    tx.send(set(&[
        ("r1", route("/moved/*", &[(b, 1)])),
        ("r2", route("/other", &[(a, 1)])),
        ("secure", secure.clone()),
    ]))
    .expect("send");
    let d2 = time_until("the new route", || body_is(&e1, "/other", "A")).await;
    assert!(body_is(&e1, "/moved/x", "B").await);
    assert!(status_is(&e1, "/anything/x", 404).await);
    time_until("the new route on the second Envoy", || {
        body_is(&e2, "/other", "A")
    })
    .await;
    eprintln!(
        "route change with a new cluster live after {d2:?} ({:?} for both)",
        t.elapsed()
    );

    // 3. Weights 1:3.
    tx.send(set(&[
        ("r1", route("/moved/*", &[(a, 1), (b, 3)])),
        ("r2", route("/other", &[(a, 1)])),
        ("secure", secure.clone()),
    ]))
    .expect("send");
    time_until("the weighted endpoints", || body_is(&e1, "/moved/x", "A")).await;
    let (mut na, mut nb) = (0, 0);
    for _ in 0..200 {
        let r = e1.get("/moved/x").await;
        assert_eq!(r.status, 200, "{r:?}");
        match r.body.as_str() {
            "A" => na += 1,
            "B" => nb += 1,
            other => panic!("unexpected body {other:?}"),
        }
    }
    eprintln!("weights 1:3 over 200 requests: A {na}, B {nb}");
    assert!((130..=170).contains(&nb), "A {na}, B {nb}: not about 1:3");

    // 4. Disabling a route removes it.
    let mut off = secure.clone();
    off["status"] = json!(0);
    tx.send(set(&[
        ("r1", route("/moved/*", &[(a, 1), (b, 3)])),
        ("r2", route("/other", &[(a, 1)])),
        ("secure", off),
    ]))
    .expect("send");
    let d4 = time_until("the disabled route to go", || {
        status_is(&e1, "/secure/x", 404)
    })
    .await;
    eprintln!("route removal live after {d4:?}");

    // The listener was never touched; nothing was refused.
    for e in [&e1, &e2] {
        assert_eq!(listener_stats(e).await, before);
        let rds = e.stats("http.ingress.rds.apisix.").await;
        assert_eq!(
            rds.get("http.ingress.rds.apisix.update_rejected"),
            Some(&0),
            "{rds:?}"
        );
        // The first table, the route change and the removal; endpoint and
        // weight changes did not touch the routes.
        assert_eq!(rds["http.ingress.rds.apisix.update_success"], 3, "{rds:?}");
    }
    assert_eq!(before["listener_manager.listener_modified"], 0);
    assert_eq!(before["listener_manager.total_listeners_draining"], 0);
    let report = status.report();
    assert!(report.last_nack.is_empty(), "{:?}", report.last_nack);
    // Both Envoys ACKed the latest versions.
    wait_for("both Envoys to ACK", Duration::from_secs(5), || {
        let r = status.report();
        let ok = r.streams.values().all(|s| s.acked == r.versions);
        async move { ok.then_some(()) }
    })
    .await;

    e1.stop().await;
    e2.stop().await;
    wait_for("the streams to close", Duration::from_secs(5), || {
        let n = status.report().connected;
        async move { (n == 0).then_some(()) }
    })
    .await;
    server.abort();
}
