//! Unauthenticated requests cannot make the filter work the provider hard
//! (review finding 6), nor can the provider make the filter buffer a huge
//! answer: through the real Envoy, against the real test provider
//! (`tests/provider`, oidc-provider) and, where the provider must misbehave
//! (a slow JWKS, 2 MiB documents), the rogue provider (`tests/rogue`).
//! Calls to the provider are counted by Envoy itself (the provider
//! cluster's `upstream_rq_total`), and cross-checked with the filter's
//! counters.
//!
//! - tokens with random `kid`s: one JWKS fetch in flight across workers,
//!   the others use the cached set (401);
//! - a `kid` still unknown after a refetch is not refetched for a minute;
//! - a token the introspection endpoint refused is refused again without
//!   asking, for a while;
//! - a 2 MiB discovery document or JWKS is a provider failure (503);
//! - the provider cluster's circuit breakers end an overflow in 503.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use integration_tests::envoy::{FAST_PROVIDER_RULES, FAST_PROVIDER_WAIT};
use integration_tests::rogue::{Rogue, CLIENT_ID, CLIENT_SECRET};
use integration_tests::{get, Envoy, EnvoyConfig, Provider, ProviderOptions, Route, TestDir};
use serde_json::{json, Value};

const STAT: &str = "wasmcustom.openid_connect.";

fn plugin(discovery: &str, client: (&str, &str), extra: Value) -> Value {
    let mut p = json!({
        "client_id": client.0,
        "client_secret": client.1,
        "discovery": discovery,
        "bearer_only": true,
    });
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

fn rogue_plugin(rogue: &Rogue, realm: &str, extra: Value) -> Value {
    plugin(&rogue.discovery(realm), (CLIENT_ID, CLIENT_SECRET), extra)
}

fn provider_plugin(provider: &Provider, extra: Value) -> Value {
    plugin(
        &provider.discovery_url(),
        (provider.client_id(), provider.client_secret()),
        extra,
    )
}

/// Requests Envoy sent to the provider listening on `port`.
fn provider_requests(envoy: &Envoy, port: u16) -> u64 {
    integration_tests::envoy::admin_stat(
        envoy.admin_port,
        &format!(
            "cluster.{}.upstream_rq_total",
            oidc_core::http::cluster_name("http", "127.0.0.1", port)
        ),
    )
}

/// A JWT-shaped token with this `kid`, a payload and a random signature:
/// anyone can make one.
fn forged_token(kid: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    let payload = json!({"sub": "admin", "exp": now + 300});
    let mut sig = [0u8; 256];
    getrandom_fill(&mut sig);
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom_fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Test randomness (not secret): /dev/urandom.
fn getrandom_fill(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("/dev/urandom");
}

fn status(envoy: &Envoy, path: &str, token: &str) -> u16 {
    let auth = format!("Bearer {token}");
    get(&envoy.url(path), &[("authorization", &auth)])
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .status
}

fn stat(envoy: &Envoy, name: &str) -> u64 {
    integration_tests::envoy::admin_stat(envoy.admin_port, &format!("{STAT}{name}"))
}

/// Sends `tokens` to `path`, `parallel` at a time; the statuses.
fn flood(envoy: &Envoy, path: &str, tokens: &[String], parallel: usize) -> Vec<u16> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(t) = tokens.get(i) else { break };
                let st = status(envoy, path, t);
                out.lock().unwrap().push(st);
            });
        }
    });
    out.into_inner().unwrap()
}

#[test]
fn random_kids_make_at_most_a_couple_of_jwks_fetches() {
    let dir = TestDir::new("abuse_random_kids");
    // The JWKS answers after a second, so that fetches would pile up.
    let rogue = Rogue::start(dir.path());
    // Two workers: the "fetching" marker is shared between their VMs.
    // The upstream is never reached: every token here is refused.
    let config = EnvoyConfig::default()
        .concurrency(2)
        .cluster(rogue.cluster())
        .upstream("none", rogue.port)
        .route(Route::protected(
            "/jwks/",
            "none",
            rogue_plugin(&rogue, "slow", json!({"use_jwks": true})),
        ));
    let envoy = Envoy::start(dir.path(), &config);

    // Warm up: the documents are cached (a cold start fetches).
    assert_eq!(status(&envoy, "/jwks/x", &forged_token("warm")), 401);
    assert!(
        provider_requests(&envoy, rogue.port) >= 2,
        "discovery and the JWKS were fetched"
    );
    let warm_jwks = stat(&envoy, "provider.fetch.jwks");
    // Past the unknown-kid refetch interval (5 s): a new kid may refetch
    // now, and the JWKS answers only after a second. (The default interval
    // on purpose: the whole flood must fit in one interval after that
    // fetch, which 1 s would not leave on a loaded machine.)
    std::thread::sleep(Duration::from_millis(5500));

    let tokens: Vec<String> = (0..200).map(|_| forged_token(&random_hex(8))).collect();
    let held = stat(&envoy, "provider.fetch.held");
    let before = provider_requests(&envoy, rogue.port);
    let started = Instant::now();
    let statuses = flood(&envoy, "/jwks/x", &tokens, 16);
    assert_eq!(statuses.len(), 200);
    assert!(statuses.iter().all(|&s| s == 401), "{statuses:?}");
    let fetches = provider_requests(&envoy, rogue.port) - before;
    assert!(
        (1..=2).contains(&fetches),
        "{fetches} provider calls for 200 random kids (in {:?})",
        started.elapsed()
    );
    assert!(
        stat(&envoy, "provider.fetch.held") > held,
        "fetches were held back"
    );
    assert_eq!(stat(&envoy, "provider.fetch.jwks"), warm_jwks + fetches);
}

#[test]
fn a_kid_unknown_after_a_refetch_is_not_refetched_for_a_while() {
    let dir = TestDir::new("abuse_unknown_kid");
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let (www, _www) = integration_tests::static_server(&dir, "app");
    // One worker: the memory is per VM.
    // The unknown-kid refetch interval shortened to 1 s.
    let config = EnvoyConfig::default()
        .concurrency(1)
        .filter_settings(FAST_PROVIDER_RULES)
        .cluster(provider.cluster())
        .upstream("app", www)
        .route(
            Route::protected(
                "/jwks/",
                "app",
                provider_plugin(&provider, json!({"use_jwks": true})),
            )
            .prefix_rewrite("/"),
        );
    let envoy = Envoy::start(dir.path(), &config);
    // The provider's own tokens pass (its keys are the ones in use), a
    // forged one does not.
    let real = provider.client_credentials_token();
    assert_eq!(status(&envoy, "/jwks/who", &real), 200);
    assert_eq!(status(&envoy, "/jwks/x", &forged_token("warm")), 401);
    std::thread::sleep(FAST_PROVIDER_WAIT);

    // A new kid refetches once, and is still unknown.
    let before = provider_requests(&envoy, provider.port);
    assert_eq!(status(&envoy, "/jwks/x", &forged_token("gone")), 401);
    assert_eq!(
        provider_requests(&envoy, provider.port),
        before + 1,
        "one refetch for a new kid"
    );
    // Past the refetch interval, the same kid does not refetch again.
    std::thread::sleep(FAST_PROVIDER_WAIT);
    let remembered = stat(&envoy, "provider.unknown_kid_remembered");
    for _ in 0..5 {
        assert_eq!(status(&envoy, "/jwks/x", &forged_token("gone")), 401);
    }
    assert_eq!(
        provider_requests(&envoy, provider.port),
        before + 1,
        "no refetch for a kid just found unknown"
    );
    assert_eq!(
        stat(&envoy, "provider.unknown_kid_remembered"),
        remembered + 5
    );
    // Another new kid still refetches (key rotation keeps working).
    assert_eq!(status(&envoy, "/jwks/x", &forged_token("other")), 401);
    assert_eq!(provider_requests(&envoy, provider.port), before + 2);
}

#[test]
fn a_refused_token_is_introspected_once() {
    let dir = TestDir::new("abuse_introspection");
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let introspection = format!(
        "{}/protocol/openid-connect/token/introspect",
        provider.issuer()
    );
    let config = EnvoyConfig::default()
        .concurrency(1)
        .cluster(provider.cluster())
        .upstream("none", provider.port)
        .route(Route::protected(
            "/introspect/",
            "none",
            provider_plugin(&provider, json!({"introspection_endpoint": introspection})),
        ));
    let envoy = Envoy::start(dir.path(), &config);
    // The first request may also fetch the discovery document.
    assert_eq!(status(&envoy, "/introspect/x", "refused-token"), 401);
    let first = provider_requests(&envoy, provider.port);
    assert!(first >= 1, "the token was introspected");
    for _ in 0..19 {
        assert_eq!(status(&envoy, "/introspect/x", "refused-token"), 401);
    }
    assert_eq!(
        provider_requests(&envoy, provider.port),
        first,
        "20 requests, one introspection"
    );
    assert_eq!(stat(&envoy, "introspection.refusal_remembered"), 19);
    // Another token is asked about.
    assert_eq!(status(&envoy, "/introspect/x", "another-token"), 401);
    assert_eq!(provider_requests(&envoy, provider.port), first + 1);
}

#[test]
fn oversized_provider_answers_are_provider_failures() {
    let dir = TestDir::new("abuse_big_bodies");
    let mut rogue = Rogue::start(dir.path());
    let config = EnvoyConfig::default()
        .concurrency(1)
        .cluster(rogue.cluster())
        .upstream("none", rogue.port)
        .route(Route::protected(
            "/bigjwks/",
            "none",
            rogue_plugin(&rogue, "bigjwks", json!({"use_jwks": true})),
        ))
        .route(Route::protected(
            "/bigdisc/",
            "none",
            rogue_plugin(&rogue, "bigdisc", json!({"use_jwks": true})),
        ))
        .route(Route::protected(
            "/ok/",
            "none",
            rogue_plugin(&rogue, "abuse.ok", json!({"use_jwks": true})),
        ));
    let mut envoy = Envoy::start(dir.path(), &config);
    let token = forged_token("k2");
    // 2 MiB: not read, a provider failure (503), never a pass. (Read whole,
    // both documents would parse: they are valid JSON padded with spaces.)
    assert_eq!(status(&envoy, "/bigjwks/x", &token), 503);
    // Discovery, then the JWKS.
    assert_eq!(provider_requests(&envoy, rogue.port), 2);
    assert_eq!(status(&envoy, "/bigdisc/x", &token), 503);
    assert_eq!(provider_requests(&envoy, rogue.port), 3);
    assert_eq!(stat(&envoy, "provider.body_too_large"), 2);
    assert_eq!(stat(&envoy, "provider.failures"), 2, "one failure per call");
    // The VM is alive and well: the next request is decided as usual.
    envoy.proc().assert_running();
    rogue.proc().assert_running();
    assert_eq!(status(&envoy, "/ok/x", &token), 401);
    assert_eq!(provider_requests(&envoy, rogue.port), 5);
}

#[test]
fn a_provider_cluster_overflow_is_a_503() {
    let dir = TestDir::new("abuse_circuit_breakers");
    let rogue = Rogue::start(dir.path());
    // One call at a time to the provider, none waiting.
    let config = EnvoyConfig::default()
        .concurrency(1)
        .cluster(rogue.cluster().circuit_breakers((1, 1, 1)))
        .upstream("none", rogue.port)
        .route(Route::protected(
            "/jwks/",
            "none",
            rogue_plugin(&rogue, "slow", json!({"use_jwks": true})),
        ));
    let envoy = Envoy::start(dir.path(), &config);
    // Cold start: every request needs the documents; the JWKS takes a
    // second, so concurrent requests overflow the cluster.
    let tokens: Vec<String> = (0..8).map(|_| forged_token(&random_hex(8))).collect();
    let statuses = flood(&envoy, "/jwks/x", &tokens, 8);
    assert!(
        statuses.iter().all(|&s| s == 401 || s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&503),
        "an overflow answers 503: {statuses:?}"
    );
    let overflow = integration_tests::envoy::admin_stat(
        envoy.admin_port,
        &format!(
            "cluster.{}.upstream_rq_pending_overflow",
            oidc_core::http::cluster_name("http", "127.0.0.1", rogue.port)
        ),
    );
    assert!(overflow > 0, "Envoy's circuit breaker tripped");
}

/// Provider documents are refreshed in the background, before they
/// expire, so no request waits for them: with `jwk_expires_in: 4` the JWKS
/// is fetched again every ~3 s while no request comes, by one worker of
/// two, and a request after its lifetime finds it fresh (no fetch in the
/// request's path). A document no request has needed is not fetched.
#[test]
fn provider_documents_are_refreshed_before_they_expire() {
    let dir = TestDir::new("abuse_background_refresh");
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let (www, _www) = integration_tests::static_server(&dir, "app");
    let config = EnvoyConfig::default()
        .concurrency(2)
        .filter_settings(FAST_PROVIDER_RULES)
        .cluster(provider.cluster())
        .upstream("app", www)
        .route(
            Route::protected(
                "/jwks/",
                "app",
                provider_plugin(&provider, json!({"use_jwks": true, "jwk_expires_in": 4})),
            )
            .prefix_rewrite("/"),
        );
    let envoy = Envoy::start(dir.path(), &config);
    let real = provider.client_credentials_token();
    assert_eq!(status(&envoy, "/jwks/who", &real), 200);
    let fetched = stat(&envoy, "provider.fetch.jwks");
    assert!(fetched >= 1, "the first request fetched the JWKS");

    // No requests for 10 s: the JWKS (lifetime 4 s, lead 1 s) is fetched
    // again about every 3 s, by one worker at a time.
    let before = provider_requests(&envoy, provider.port);
    std::thread::sleep(Duration::from_secs(10));
    let refreshed = stat(&envoy, "provider.refresh.jwks");
    let calls = provider_requests(&envoy, provider.port) - before;
    assert!(
        (2..=5).contains(&refreshed),
        "{refreshed} background JWKS fetches in 10 s (expected ~3)"
    );
    assert_eq!(calls, refreshed, "every provider call was a refresh");
    assert_eq!(
        stat(&envoy, "provider.refresh.discovery"),
        0,
        "the discovery document lives a day"
    );

    // Requests long after the first JWKS expired: none fetches.
    for _ in 0..4 {
        assert_eq!(status(&envoy, "/jwks/who", &real), 200);
    }
    assert_eq!(
        stat(&envoy, "provider.fetch.jwks"),
        fetched,
        "no request waited for the JWKS"
    );
}
