//! The gateway through the sidecar: the tutorial's Admin API calls, verbatim,
//! configure the real Envoy over xDS; the real provider and httpbin answer.

use std::time::Duration;

use integration_tests::gateway::Gateway;
use integration_tests::provider::DEFAULT_CLIENT_SECRET;
use integration_tests::{
    get, pid_alive, static_server, tutorial_route, wait_for, Httpbin, Provider, ProviderOptions,
    TestDir,
};

/// The tutorial's body with the default client secret, redirect on 9080.
fn tutorial_body(plugin_lines: &str, discovery: &str, node: &str) -> String {
    tutorial_route(plugin_lines, DEFAULT_CLIENT_SECRET, discovery, node, 9080)
}

fn within_a_second(what: &str, mut check: impl FnMut() -> bool) {
    wait_for(what, Duration::from_secs(1), || check().then_some(()));
}

#[test]
fn tutorial_routes_through_the_sidecar() {
    let dir = TestDir::new("sidecar_tutorial");
    let httpbin = Httpbin::start(dir.path());
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let mut gw = Gateway::start(dir.path(), &[]);
    let node = format!("127.0.0.1:{}", httpbin.port);
    let disc = provider.discovery_url();

    // Client credentials with the JWKS (the tutorial's body, verbatim).
    let r = gw.admin(
        "PUT",
        "/apisix/admin/routes",
        Some(&tutorial_body("\"use_jwks\": true,", &disc, &node)),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let token = provider.client_credentials_token();
    let auth = format!("Bearer {token}");
    within_a_second("the route to serve traffic", || {
        get(&gw.url("/anything/test"), &[("authorization", &auth)]).is_ok_and(|r| r.status == 200)
    });
    let r = get(&gw.url("/anything/test"), &[("authorization", &auth)]).unwrap();
    assert_eq!(r.json()["headers"]["X-Access-Token"], token.as_str());
    assert_eq!(get(&gw.url("/anything/test"), &[]).unwrap().status, 401);
    assert_eq!(
        get(
            &gw.url("/anything/test"),
            &[("authorization", "Bearer invalid")]
        )
        .unwrap()
        .status,
        401
    );

    // The introspection variant replaces it (PUT of an existing id: 200).
    let r = gw.admin(
        "PUT",
        "/apisix/admin/routes",
        Some(&tutorial_body("\"bearer_only\": true,", &disc, &node)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // A revoked token still has a good signature: only introspection
    // refuses it, which tells when the new route is in place.
    let revoked = provider.client_credentials_token();
    provider.revoke(&revoked);
    let revoked = format!("Bearer {revoked}");
    within_a_second("the introspection route", || {
        get(&gw.url("/anything/test"), &[("authorization", &revoked)])
            .is_ok_and(|r| r.status == 401)
    });
    let password = provider.password_grant();
    let access = password["access_token"].as_str().unwrap().to_string();
    let auth = format!("Bearer {access}");
    assert_eq!(
        get(&gw.url("/anything/test"), &[("authorization", &auth)])
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        get(
            &gw.url("/anything/test"),
            &[("authorization", "Bearer invalid")]
        )
        .unwrap()
        .status,
        401
    );

    // The sidecar restarts: the route is still there, Envoy still serves it.
    let before = gw.admin("GET", "/apisix/admin/routes/auth-with-oidc", None);
    let versions_before = gw.admin("GET", "/status", None).json()["versions"].clone();
    gw.restart_sidecar();
    let after = gw.admin("GET", "/apisix/admin/routes/auth-with-oidc", None);
    assert_eq!(after.status, 200);
    assert_eq!(before.json(), after.json());
    // The same resources, byte for byte: Envoy gets nothing new.
    let versions_after = gw.admin("GET", "/status", None).json()["versions"].clone();
    assert_eq!(versions_before, versions_after);
    assert_eq!(
        versions_after.as_object().map(|v| v.len()),
        Some(4),
        "{versions_after}"
    );
    assert_eq!(
        get(&gw.url("/anything/test"), &[("authorization", &auth)])
            .unwrap()
            .status,
        200
    );

    // The sidecar dies: Envoy keeps serving the last configuration.
    let pid = gw.sidecar_pid().unwrap();
    gw.stop_sidecar();
    assert!(!pid_alive(pid));
    assert_eq!(
        get(&gw.url("/anything/test"), &[("authorization", &auth)])
            .unwrap()
            .status,
        200
    );
    gw.restart_sidecar();

    // DELETE: Envoy answers 404.
    let r = gw.admin("DELETE", "/apisix/admin/routes/auth-with-oidc", None);
    assert_eq!(r.status, 200, "{}", r.body);
    within_a_second("the route to disappear", || {
        get(&gw.url("/anything/test"), &[]).is_ok_and(|r| r.status == 404)
    });
    // Route changes never drained the listener.
    assert_eq!(gw.envoy_stat("listener_manager.listener_modified"), 0);
}

#[test]
fn weights_split_traffic() {
    let dir = TestDir::new("sidecar_weights");
    let (a, _pa) = static_server(&dir, "a");
    let (b, _pb) = static_server(&dir, "b");
    let gw = Gateway::start(dir.path(), &[]);
    let body = format!(
        r#"{{"uri": "/who", "upstream": {{"type": "roundrobin", "nodes": {{"127.0.0.1:{a}": 1, "127.0.0.1:{b}": 3}}}}}}"#
    );
    let r = gw.admin("PUT", "/apisix/admin/routes/weights", Some(&body));
    assert_eq!(r.status, 201, "{}", r.body);
    within_a_second("the weighted route", || {
        get(&gw.url("/who"), &[]).is_ok_and(|r| r.status == 200)
    });
    let n = 200;
    let mut to_b = 0;
    for _ in 0..n {
        let r = get(&gw.url("/who"), &[]).unwrap();
        assert_eq!(r.status, 200);
        if r.body == "b" {
            to_b += 1;
        }
    }
    // Expect 150 of 200; round robin with weights is nearly exact.
    assert!(
        (130..=170).contains(&to_b),
        "{to_b} of {n} went to the weight-3 node"
    );
}

/// `--filter-settings` is checked with the filter's own parser at start-up:
/// a typo stops the sidecar with the field's name (before, it was accepted,
/// the filter refused it in Envoy and the gateway had no listener), and
/// valid settings reach a listener that serves.
#[test]
fn filter_settings_are_checked_with_the_filters_parser() {
    let dir = TestDir::new("sidecar_filter_settings");
    let mut cmd = std::process::Command::new(integration_tests::gateway::sidecar_bin());
    cmd.args(["--admin-addr", "127.0.0.1:0", "--xds-addr", "127.0.0.1:0"])
        .arg("--wasm")
        .arg(integration_tests::wasm_path())
        .arg("--data")
        .arg(dir.file("routes.json"))
        .args(["--filter-settings", r#"{"token_cach_size": 16}"#]);
    let proc = integration_tests::Proc::spawn("sidecar", dir.path(), cmd);
    wait_for(
        "the sidecar to refuse its settings",
        Duration::from_secs(30),
        || (!proc.is_running()).then_some(()),
    );
    let log = std::fs::read_to_string(proc.log_path()).unwrap();
    assert!(
        log.contains(
            "--filter-settings is not valid filter settings: unknown field `token_cach_size`"
        ),
        "{log}"
    );

    let httpbin = Httpbin::start(dir.path());
    let gw = Gateway::start(
        dir.path(),
        &[
            "--filter-settings",
            r#"{"token_cache_size": 0, "session_cache_size": 8}"#,
        ],
    );
    let r = gw.admin(
        "PUT",
        "/apisix/admin/routes/open",
        Some(&format!(
            r#"{{"uri": "/anything/*", "upstream": {{"nodes": {{"127.0.0.1:{}": 1}}}}}}"#,
            httpbin.port
        )),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    within_a_second("the route to serve traffic", || {
        get(&gw.url("/anything/x"), &[]).is_ok_and(|r| r.status == 200)
    });
}

/// A `public_key` is parsed when the Admin API validates the route: a PEM
/// header around something that is not a key is refused with 400 naming
/// the field (before, it was accepted and every request on the route got
/// a 500 from the filter); a real key is accepted and the route answers.
#[test]
fn a_malformed_public_key_is_refused_by_the_admin_api() {
    const P256_PEM: &str = "-----BEGIN PUBLIC KEY-----\\n\
        MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEBWWo2qciXCPAyb7p+PNGn+4G/7cz\\n\
        Rg5PNlNU+hQuVXDcI6L8YVaBadvQF/tSb3WkBY9a4QbTCHYKOxaH1Pvk/w==\\n\
        -----END PUBLIC KEY-----\\n";
    let dir = TestDir::new("sidecar_public_key");
    let httpbin = Httpbin::start(dir.path());
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let gw = Gateway::start(dir.path(), &[]);
    let node = format!("127.0.0.1:{}", httpbin.port);
    let disc = provider.discovery_url();
    let body = |pem: &str| {
        tutorial_body(
            &format!("\"bearer_only\": true, \"public_key\": \"{pem}\","),
            &disc,
            &node,
        )
    };

    for bad in [
        "-----BEGIN PUBLIC KEY-----\\nAAAA\\n-----END PUBLIC KEY-----",
        "-----BEGIN PUBLIC KEY-----\\nnot base64!\\n-----END PUBLIC KEY-----",
    ] {
        let r = gw.admin("PUT", "/apisix/admin/routes", Some(&body(bad)));
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(
            r.body.contains("plugins.openid-connect.public_key")
                && r.body.contains("is not a usable public key"),
            "{}",
            r.body
        );
    }
    assert_eq!(
        gw.admin("GET", "/apisix/admin/routes", None).json()["total"],
        0
    );

    let r = gw.admin("PUT", "/apisix/admin/routes", Some(&body(P256_PEM)));
    assert_eq!(r.status, 201, "{}", r.body);
    within_a_second("the route to answer 401 without a token", || {
        get(&gw.url("/anything/x"), &[]).is_ok_and(|r| r.status == 401)
    });
    let bad_token = get(&gw.url("/anything/x"), &[("authorization", "Bearer a.b.c")]).unwrap();
    assert_eq!(bad_token.status, 401, "{}", bad_token.body);
}
