//! The harness itself, with the real Envoy, httpbin and the test provider.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use integration_tests::envoy::ROUTE_UPDATE_TIMEOUT;
use integration_tests::proc::{group_members, pid_alive};
use integration_tests::{
    free_port, get, port_open, Envoy, EnvoyConfig, Httpbin, Provider, ProviderOptions, Route,
    TestDir,
};
use serde_json::json;

#[test]
fn envoy_routes_to_httpbin_and_takes_route_updates() {
    let dir = TestDir::new("harness_smoke");
    let httpbin = Httpbin::start(dir.path());
    let config = EnvoyConfig::default()
        .upstream("httpbin", httpbin.port)
        .route(Route::open("/direct", None))
        .route(Route::path("/teapot").direct(418, "short and stout"))
        .route(
            Route::protected(
                "/protected/",
                "httpbin",
                json!({
                    "client_id": "c",
                    "client_secret": "s",
                    "discovery": "http://127.0.0.1:1/.well-known/openid-configuration",
                    "bearer_only": true,
                }),
            )
            .name("protected"),
        )
        .route(Route::open("/", Some("httpbin")));
    let started = Instant::now();
    let mut envoy = Envoy::start(dir.path(), &config);
    eprintln!("Envoy ready in {:?}", started.elapsed());

    // No metadata: the filter passes the request through to httpbin.
    let r = get(&envoy.url("/anything/x"), &[("x-probe", "1")]).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["headers"]["X-Probe"], "1");
    assert_eq!(
        r.json()["url"],
        format!("http://127.0.0.1:{}/anything/x", envoy.port)
    );
    let r = get(&envoy.url("/direct"), &[]).unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "direct"));
    let r = envoy.get("/teapot", &[]);
    assert_eq!((r.status, r.body.as_str()), (418, "short and stout"));
    // The route metadata reaches the filter: bearer_only without a token.
    let r = envoy.get("/protected/x", &[]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.header("www-authenticate").is_some(), "{:?}", r.headers);

    // Route change through the RDS file: /direct now goes to httpbin.
    envoy.update_routes(&[
        Route::path("/teapot").direct(200, "coffee"),
        Route::open("/", Some("httpbin")),
    ]);
    assert_eq!(envoy.route_version(), 2);
    let r = get(&envoy.url("/direct"), &[]).unwrap();
    assert_eq!(r.status, 404, "httpbin has no /direct: {}", r.body);
    let r = envoy.get("/teapot", &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "coffee"));
    let r = envoy.get("/protected/x", &[]);
    assert_eq!(r.status, 404, "no metadata any more, httpbin: {}", r.body);

    // The config dump shows the version the harness wrote.
    let dump = envoy.config_dump();
    let text = dump.to_string();
    assert!(text.contains(r#""version_info":"2""#), "{text:.500}");

    // A table Envoy refuses: the harness says so at once (with the log)
    // and the previous table keeps serving.
    let t = Instant::now();
    let refused = catch_unwind(AssertUnwindSafe(|| {
        envoy.update_routes(&[Route::prefix("/").direct(42, "not a status")])
    }));
    let message = *refused
        .expect_err("a status of 42 is refused")
        .downcast::<String>()
        .expect("a String panic");
    assert!(message.contains("rejected"), "{message}");
    // Usually well under a second; the bound is generous for a loaded CI
    // machine and still catches a harness that waits for its timeout
    // instead of reading Envoy's refusal.
    let took = t.elapsed();
    eprintln!("refused table reported after {took:?}");
    assert!(took < ROUTE_UPDATE_TIMEOUT, "{took:?}");
    assert_eq!(envoy.get("/teapot", &[]).body, "coffee");

    // Restart: same ports, current routes.
    let (old_pid, port) = (envoy.pid().unwrap(), envoy.port);
    let t = Instant::now();
    envoy.restart();
    eprintln!("Envoy restarted in {:?}", t.elapsed());
    assert!(!pid_alive(old_pid));
    assert_eq!(envoy.port, port);
    assert_eq!(envoy.get("/teapot", &[]).body, "coffee");

    // Every process is gone afterwards, gunicorn's workers included.
    let envoy_pid = envoy.pid().unwrap();
    let httpbin_pid = httpbin.pid().unwrap();
    assert!(
        group_members(httpbin_pid).len() >= 2,
        "gunicorn master and workers"
    );
    envoy.stop();
    assert!(!pid_alive(envoy_pid), "envoy {envoy_pid} still running");
    assert!(!port_open(port), "the listener is closed");
    drop(httpbin);
    assert!(
        !pid_alive(httpbin_pid),
        "httpbin {httpbin_pid} still running"
    );
    assert!(
        group_members(httpbin_pid).is_empty(),
        "gunicorn workers left"
    );
}

#[test]
fn envoy_without_the_filter_and_two_envoys_side_by_side() {
    let dir = TestDir::new("harness_two_envoys");
    let plain = EnvoyConfig::default()
        .without_wasm()
        .concurrency(1)
        .route(Route::prefix("/").direct(200, "plain"));
    let a = Envoy::start(dir.path(), &plain);
    let b = Envoy::start(
        dir.path(),
        &EnvoyConfig::default().route(Route::prefix("/").direct(200, "b")),
    );
    assert_eq!(a.get("/", &[]).body, "plain");
    assert_eq!(b.get("/", &[]).body, "b");
    assert_ne!(a.log_path(), b.log_path());
    assert!(dir.path().join("envoy-2.json").is_file());
}

#[test]
fn provider_starts_restarts_on_the_same_port_and_stops() {
    let dir = TestDir::new("harness_provider");
    let mut p = Provider::start(
        dir.path(),
        ProviderOptions {
            client_secret: Some("another-secret-0123456789".into()),
            ..Default::default()
        },
    );
    let doc = get(&p.discovery_url(), &[]).unwrap().json();
    assert_eq!(doc["issuer"], p.issuer().as_str());
    assert_eq!(p.client_secret(), "another-secret-0123456789");
    assert_eq!(p.cluster().name, format!("oidc|http|127.0.0.1|{}", p.port));
    let (pid, port) = (p.pid().unwrap(), p.port);
    p.restart();
    assert!(!pid_alive(pid));
    assert_eq!(p.port, port);
    assert_eq!(get(&p.discovery_url(), &[]).unwrap().status, 200);
    let pid = p.pid().unwrap();
    p.stop();
    assert!(!pid_alive(pid));
    assert!(!port_open(port));
}

#[test]
fn free_ports_are_unique_and_bindable() {
    let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ports.len());
    for p in &ports[..20] {
        std::net::TcpListener::bind(("127.0.0.1", *p)).expect("free port binds");
    }
}

#[test]
fn a_failing_test_keeps_its_logs() {
    let (tx, rx) = std::sync::mpsc::channel();
    let failed = std::thread::spawn(move || {
        let dir = TestDir::new("harness_kept_on_panic");
        std::fs::write(dir.path().join("x.log"), "a line\n").expect("write log");
        tx.send(dir.path().to_path_buf()).expect("send");
        panic!("deliberate failure: its logs must be kept");
    })
    .join();
    assert!(failed.is_err());
    let path = rx.recv().expect("the test dir's path");
    assert!(path.join("x.log").is_file(), "{} kept", path.display());
    std::fs::remove_dir_all(&path).expect("clean up");

    let dir = TestDir::new("harness_removed_on_success");
    let path = dir.path().to_path_buf();
    drop(dir);
    assert!(!path.exists());
}
