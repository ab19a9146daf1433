//! The OpenID Foundation's relying-party certification cases, through the
//! real Envoy and the filter, against a provider that misbehaves on purpose
//! (`tests/rogue/server.js`: real HTTP, real signatures, one realm per
//! case). Each case is run on the login callback (the ID token, userinfo)
//! and, where it applies to access tokens, on the bearer path (`use_jwks`).
//! docs/security.md lists the same cases.

use std::time::Instant;

use integration_tests::envoy::{FAST_PROVIDER_RULES, FAST_PROVIDER_WAIT};
use integration_tests::http::request;
use integration_tests::rogue::{Rogue, CLIENT_ID, CLIENT_SECRET};
use integration_tests::{get, Cluster, Envoy, EnvoyConfig, Route, TestDir};
use serde_json::{json, Value};

/// (case, the callback's expected outcome): `true` = logged in.
const LOGIN_CASES: &[(&str, bool)] = &[
    ("ok", true),
    ("sig-none", false),
    ("sig-hs256", false),
    ("bad-sig", false),
    ("iss-mismatch", false),
    ("aud-mismatch", false),
    ("expired", false),
    ("exp-missing", false),
    ("iat-missing", false),
    ("iat-future", false),
    ("iat-stale", true),
    ("sub-missing", false),
    ("nonce-invalid", false),
    ("nonce-missing", false),
    ("kid-absent-single", true),
    ("kid-absent-multiple", false),
    ("userinfo-bad-sub", false),
];

/// (case, status of a request carrying the crafted access token).
const BEARER_CASES: &[(&str, u16)] = &[
    ("ok", 200),
    ("sig-none", 401),
    ("sig-hs256", 401),
    ("bad-sig", 401),
    ("iss-mismatch", 401),
    ("aud-mismatch", 403),
    ("expired", 401),
    ("iat-future", 401),
    ("kid-absent-single", 200),
    ("kid-absent-multiple", 401),
];

fn login_config(rogue: &Rogue, realm: &str) -> Value {
    json!({
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "discovery": rogue.discovery(realm),
        "bearer_only": false,
        "redirect_uri": format!("/rp/{realm}/callback"),
        "session": {"secret": "rp-session-secret-0123456789"},
    })
}

fn bearer_config(rogue: &Rogue, realm: &str) -> Value {
    json!({
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "discovery": rogue.discovery(realm),
        "use_jwks": true,
        "bearer_only": true,
        "claim_validator": {"audience": {"match_with_client_id": true}},
    })
}

fn cookie_of(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or_default().to_string()
}

/// One login through the route of `realm`: the filter's redirect, the rogue
/// provider's immediate redirect back, the callback. Returns the
/// callback's status and body.
fn login(envoy: &Envoy, realm: &str) -> (u16, String) {
    let html = ("accept", "text/html");
    let start = get(&envoy.url(&format!("/rp/{realm}/page")), &[html]).expect("Envoy answers");
    assert_eq!(start.status, 302, "{realm}: login start: {}", start.body);
    let to_idp = start.header("location").expect("a Location").to_string();
    let flow_cookie = cookie_of(start.header("set-cookie").expect("a flow cookie"));

    let idp = get(&to_idp, &[]).expect("the rogue provider answers");
    assert_eq!(idp.status, 302, "{realm}: the provider's redirect");
    let back = idp.header("location").expect("a Location").to_string();
    assert!(back.starts_with(&envoy.url("/")), "{realm}: back to {back}");

    let cb = request("GET", &back, &[html, ("cookie", &flow_cookie)], None).expect("callback");
    (cb.status, cb.body)
}

#[test]
fn relying_party_certification_cases() {
    let dir = TestDir::for_current_test();
    let rogue = Rogue::start(dir.path());

    // The unknown-kid refetch interval shortened to 1 s (key rotation).
    let mut config = EnvoyConfig::default()
        .filter_settings(FAST_PROVIDER_RULES)
        .cluster(Cluster::provider(&rogue.base()));
    for (case, _) in LOGIN_CASES {
        let realm = format!("login.{case}");
        config = config.route(
            Route::prefix(&format!("/rp/{realm}/"))
                .direct(200, "the protected page")
                .oidc(&login_config(&rogue, &realm)),
        );
    }
    for realm in ["login.rotation", "login.rotation-down"] {
        config = config.route(
            Route::prefix(&format!("/rp/{realm}/"))
                .direct(200, "the protected page")
                .oidc(&login_config(&rogue, realm)),
        );
    }
    for (case, _) in BEARER_CASES {
        let realm = format!("bearer.{case}");
        config = config.route(
            Route::prefix(&format!("/rp/{realm}/"))
                .direct(200, "ok")
                .oidc(&bearer_config(&rogue, &realm)),
        );
    }
    config = config.route(
        Route::prefix("/rp/bearer.rotation/")
            .direct(200, "ok")
            .oidc(&bearer_config(&rogue, "bearer.rotation")),
    );
    let envoy = Envoy::start(dir.path(), &config);

    // Key rotation, first half: the filter caches the realm's JWKS.
    let rotation_start = Instant::now();
    let (status, body) = login(&envoy, "login.rotation");
    assert_eq!(status, 302, "rotation, first login: {body}");
    let (status, body) = login(&envoy, "login.rotation-down");
    assert_eq!(
        status, 302,
        "rotation with the JWKS down, first login: {body}"
    );
    let bearer = |realm: &str| -> (u16, String) {
        let t = get(&format!("{}/{realm}/bearer", rogue.base()), &[])
            .unwrap()
            .json();
        let token = t["access_token"].as_str().unwrap().to_string();
        let r = get(
            &envoy.url(&format!("/rp/{realm}/api")),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .unwrap();
        (r.status, r.body)
    };
    assert_eq!(bearer("bearer.rotation").0, 200);

    let mut failures = Vec::new();
    for (case, accepted) in LOGIN_CASES {
        let (status, body) = login(&envoy, &format!("login.{case}"));
        let ok = if *accepted {
            status == 302
        } else {
            // Refused with a page that says why; never a session.
            (status == 400 || status == 401) && body.contains("Login failed")
        };
        if !ok {
            failures.push(format!("login {case}: got {status}: {body}"));
        }
    }
    for (case, want) in BEARER_CASES {
        let (status, body) = bearer(&format!("bearer.{case}"));
        if status != *want {
            failures.push(format!("bearer {case}: want {want}, got {status}: {body}"));
        }
    }

    // Key rotation, second half: tokens signed with a key the cached JWKS
    // lacks are accepted once the filter refetches it (at most every
    // `kid_refetch_interval_s`, 1 s here).
    let wait = FAST_PROVIDER_WAIT.saturating_sub(rotation_start.elapsed());
    std::thread::sleep(wait);
    let (status, body) = login(&envoy, "login.rotation");
    if status != 302 {
        failures.push(format!("login rotation (new key): got {status}: {body}"));
    }
    let (status, body) = bearer("bearer.rotation");
    if status != 200 {
        failures.push(format!("bearer rotation (new key): got {status}: {body}"));
    }
    // When that refetch fails, the new key cannot be checked: the provider
    // is unavailable (503, as on the bearer path), the login did not fail.
    let (status, body) = login(&envoy, "login.rotation-down");
    if status != 503 || !body.contains("Identity provider unavailable") {
        failures.push(format!(
            "login rotation with the JWKS down: want 503, got {status}: {body}"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
