//! The harness itself, with the real Envoy and httpbin.

use integration_tests::proc::pid_alive;
use integration_tests::{get, Envoy, EnvoyConfig, Httpbin, Route, TestDir};

#[test]
fn envoy_routes_to_httpbin_and_takes_route_updates() {
    let dir = TestDir::new("harness_smoke");
    let httpbin = Httpbin::start(dir.path());
    let config = EnvoyConfig::default()
        .upstream("httpbin", httpbin.port)
        .route(Route::open("/direct", None))
        .route(Route::open("/", Some("httpbin")));
    let mut envoy = Envoy::start(dir.path(), &config);

    let r = get(&envoy.url("/anything/x"), &[("x-probe", "1")]).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["headers"]["X-Probe"], "1");
    let r = get(&envoy.url("/direct"), &[]).unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "direct"));

    // Route change through the RDS file: /direct now goes to httpbin.
    envoy.update_routes(&[Route::open("/", Some("httpbin"))]);
    let r = get(&envoy.url("/direct"), &[]).unwrap();
    assert_eq!(r.status, 404, "httpbin has no /direct: {}", r.body);

    let pid = envoy.pid().unwrap();
    envoy.stop();
    assert!(!pid_alive(pid), "envoy {pid} still running");
}
