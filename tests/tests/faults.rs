//! Provider faults through the real Envoy: the real test provider behind a
//! fault-injecting proxy (`integration_tests::faults`) that refuses
//! connections, answers slowly, answers 500, non-JSON or truncated JSON.
//! No request passes without a valid token; the status says what happened
//! (503 for the provider, 401 for the token); cached keys keep verifying
//! while the provider is down; recovery needs no Envoy restart.

use std::time::{Duration, Instant};

use integration_tests::envoy::{FAST_PROVIDER_RULES, FAST_PROVIDER_WAIT};
use integration_tests::faults::{Fault, FaultProxy};
use integration_tests::provider::{CLIENT_ID, DEFAULT_CLIENT_SECRET};
use integration_tests::{
    get, Cluster, Envoy, EnvoyConfig, Provider, ProviderOptions, Route, TestDir,
};
use serde_json::json;

/// After a failed provider call the filter answers from what it has (or
/// 503) for `provider_retry_after_s` before it tries again, and an unknown
/// `kid` refetches at most every `kid_refetch_interval_s`: both 1 s here
/// ([`FAST_PROVIDER_RULES`]); this outlasts them.
const RETRY_WINDOW: Duration = FAST_PROVIDER_WAIT;

fn status(envoy: &Envoy, path: &str, token: &str) -> (u16, String) {
    let r = get(
        &envoy.url(path),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .expect("Envoy answers");
    (r.status, r.body)
}

#[test]
fn provider_faults_never_let_a_request_through() {
    let dir = TestDir::for_current_test();
    let mut idp = Provider::start(dir.path(), ProviderOptions::default());
    let proxy = FaultProxy::start(idp.port);
    let plugin = |extra: serde_json::Value| {
        let mut v = json!({
            "client_id": CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET,
            "discovery": idp.discovery_url(),
            "timeout": 1,
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    // One worker: the token cache is per worker VM (provider documents are
    // shared), and the test counts on a cached introspection answer.
    let config = EnvoyConfig::default()
        .concurrency(1)
        .filter_settings(FAST_PROVIDER_RULES)
        .cluster(Cluster::provider(&idp.issuer()).endpoint("127.0.0.1", proxy.port))
        .route(
            Route::prefix("/jwks/")
                .direct(200, "ok")
                .oidc(&plugin(json!({"use_jwks": true, "bearer_only": true}))),
        )
        .route(
            Route::prefix("/introspect/")
                .direct(200, "ok")
                .oidc(&plugin(json!({"bearer_only": true}))),
        );
    let envoy = Envoy::start(dir.path(), &config);
    let token = idp.client_credentials_token();

    // The provider is broken in every way before anything is cached: 503,
    // never 200, and the body names the provider.
    let faults = [
        Fault::Refuse,
        Fault::Status500,
        Fault::NotJson,
        Fault::Truncated,
        Fault::Slow(Duration::from_millis(2_500)),
    ];
    for (i, fault) in faults.into_iter().enumerate() {
        proxy.set(fault);
        if i > 0 {
            std::thread::sleep(RETRY_WINDOW);
        }
        for path in ["/jwks/a", "/introspect/a"] {
            let (s, body) = status(&envoy, path, &token);
            assert_eq!(s, 503, "{fault:?} {path}: {body}");
            assert!(
                body.contains("identity provider"),
                "{fault:?} {path}: {body}"
            );
        }
        // A bad token is not let through either.
        assert_ne!(status(&envoy, "/jwks/a", "not-a-token").0, 200, "{fault:?}");
    }

    // Back: recovery by itself, no Envoy restart.
    proxy.set(Fault::Pass);
    std::thread::sleep(RETRY_WINDOW);
    assert_eq!(status(&envoy, "/jwks/a", &token).0, 200);
    assert_eq!(status(&envoy, "/introspect/a", &token).0, 200);
    assert_eq!(status(&envoy, "/jwks/a", "not-a-token").0, 401);

    // Down again, with the keys cached: a new token verifies with them, a
    // bad one is still 401; introspection of a new token needs the provider.
    proxy.set(Fault::Refuse);
    let fresh = idp.client_credentials_token();
    assert_eq!(
        status(&envoy, "/jwks/b", &fresh).0,
        200,
        "cached keys verify"
    );
    assert_eq!(status(&envoy, "/jwks/b", "not-a-token").0, 401);
    assert_eq!(
        status(&envoy, "/introspect/b", &token).0,
        200,
        "cached answer"
    );
    let (s, body) = status(&envoy, "/introspect/b", &fresh);
    assert_eq!(s, 503, "{body}");

    // The provider rotates its key while unreachable: a token with the new
    // key cannot be checked — 503, not 401 and not 200. (Within the
    // refetch interval of the last JWKS fetch an unknown key is refused
    // without asking again, so wait that out first.)
    idp.restart();
    let rotated = idp.client_credentials_token();
    std::thread::sleep(RETRY_WINDOW);
    let (s, body) = status(&envoy, "/jwks/c", &rotated);
    assert_eq!(s, 503, "{body}");
    // Reachable again: the new key is fetched by itself.
    proxy.set(Fault::Pass);
    let started = Instant::now();
    loop {
        let (s, body) = status(&envoy, "/jwks/c", &rotated);
        if s == 200 {
            break;
        }
        assert!(s == 503 || s == 401, "{s}: {body}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the rotated key was not fetched: {s} {body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The sidecar is killed (SIGKILL) while Admin API writes are in flight:
/// the store (snapshot and log) always loads whole, with every write it
/// acknowledged (a cut-off last log line was never acknowledged), and
/// the restarted sidecar serves exactly what it holds.
#[test]
fn sidecar_killed_during_writes_loses_nothing_it_acknowledged() {
    use integration_tests::gateway::Gateway;
    use std::sync::{Arc, Mutex};

    let dir = TestDir::for_current_test();
    let mut gw = Gateway::start(dir.path(), &[]);
    for round in 0..12u64 {
        let admin = gw.admin_port;
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let acked = acknowledged.clone();
        let writer = std::thread::spawn(move || {
            for j in 0..200 {
                let id = format!("r{round}-{j}");
                let body = json!({
                    "uri": format!("/w/{id}/*"),
                    "desc": "x".repeat(2_000),
                    "upstream": {"type": "roundrobin", "nodes": {"127.0.0.1:9": 1}},
                })
                .to_string();
                let url = format!("http://127.0.0.1:{admin}/apisix/admin/routes/{id}");
                match integration_tests::http::request("PUT", &url, &[], Some(body.into_bytes())) {
                    Ok(r) if r.status == 201 || r.status == 200 => acked.lock().unwrap().push(id),
                    _ => break,
                }
            }
        });
        std::thread::sleep(Duration::from_millis(30 + round * 11));
        gw.kill_sidecar();
        writer.join().unwrap();

        // The store as the restarted sidecar will load it: a torn snapshot
        // or log line other than a cut-off last one is an error.
        let stored = gw
            .stored()
            .unwrap_or_else(|e| panic!("round {round}: the store: {e}"));
        for id in acknowledged.lock().unwrap().iter() {
            assert!(
                stored.routes.contains_key(id),
                "round {round}: acknowledged {id} lost"
            );
        }
        for (id, r) in stored.routes.iter() {
            assert!(
                r["uri"].is_string() && r["upstream"].is_object(),
                "round {round}: {id} is whole"
            );
        }

        gw.restart_sidecar();
        let listed = gw.admin("GET", "/apisix/admin/routes", None).json();
        assert_eq!(
            listed["total"].as_u64(),
            Some(stored.routes.len() as u64),
            "round {round}: the restarted sidecar serves what is stored"
        );
    }
}
