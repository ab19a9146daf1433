//! Bearer tokens through the real Envoy, against the real OpenID provider
//! (`tests/idp`) and httpbin: the tutorial's client-credentials and
//! password-grant parts, with JWKS and with introspection.

use base64::Engine as _;
use integration_tests::envoy::{FAST_PROVIDER_RULES, FAST_PROVIDER_WAIT};
use integration_tests::provider::{CLIENT_ID, DEFAULT_CLIENT_SECRET as CLIENT_SECRET};
use integration_tests::{
    get, Envoy, EnvoyConfig, Httpbin, Provider, ProviderOptions, Route, TestDir,
};
use serde_json::{json, Value};

struct Stack {
    envoy: Envoy,
    idp: Provider,
    _httpbin: Httpbin,
    // Last: dropped after the processes, so their logs are kept on failure.
    _dir: TestDir,
}

/// The tutorial's route body, with the session secret the sidecar would
/// fill in, plus `extra`.
fn plugin(idp: &Provider, extra: Value) -> Value {
    let mut v = json!({
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "discovery": idp.discovery_url(),
        "scope": "openid profile",
        "redirect_uri": "http://localhost:9080/anything/callback",
        "session": {"secret": "a-session-secret-for-the-tests"},
    });
    for (k, x) in extra.as_object().expect("object") {
        v[k] = x.clone();
    }
    v
}

fn routes(idp: &Provider) -> Vec<Route> {
    vec![
        Route::protected(
            "/anything/jwks",
            "httpbin",
            plugin(idp, json!({"use_jwks": true})),
        ),
        // The earlier metadata layout (version next to the config).
        Route::prefix("/anything/legacy")
            .to_cluster("httpbin")
            .oidc_legacy(&plugin(idp, json!({"use_jwks": true}))),
        // The version in the metadata only, not at the end of the name.
        Route::protected(
            "/anything/metadata-only",
            "httpbin",
            plugin(idp, json!({"use_jwks": true})),
        )
        .version_in_metadata_only(),
        Route::protected(
            "/anything/strict",
            "httpbin",
            plugin(idp, json!({"use_jwks": true, "required_scopes": ["admin"]})),
        ),
        Route::protected(
            "/anything/introspect",
            "httpbin",
            plugin(idp, json!({"bearer_only": true})),
        ),
        Route::protected(
            "/anything/nocluster",
            "httpbin",
            plugin(
                idp,
                json!({"use_jwks": true, "discovery": "http://127.0.0.1:1/realms/x/.well-known/openid-configuration"}),
            ),
        ),
        Route::open("/", Some("httpbin")),
    ]
}

fn stack(name: &str) -> Stack {
    stack_with(name, "{}")
}

/// A stack whose filter has these listener-level settings.
fn stack_with(name: &str, filter_settings: &str) -> Stack {
    let dir = TestDir::new(name);
    let httpbin = Httpbin::start(dir.path());
    let idp = Provider::start(dir.path(), ProviderOptions::default());
    let mut config = EnvoyConfig::default()
        .upstream("httpbin", httpbin.port)
        .provider(idp.port);
    for r in routes(&idp) {
        config = config.route(r);
    }
    config = config.filter_settings(filter_settings);
    let envoy = Envoy::start(dir.path(), &config);
    Stack {
        envoy,
        idp,
        _httpbin: httpbin,
        _dir: dir,
    }
}

fn call(s: &Stack, path: &str, headers: &[(&str, &str)]) -> integration_tests::Response {
    get(&s.envoy.url(path), headers).expect("request through Envoy")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The JSON claims httpbin saw in `X-Userinfo`.
fn userinfo(r: &integration_tests::Response) -> Value {
    let b64 = r.json()["headers"]["X-Userinfo"]
        .as_str()
        .expect("X-Userinfo reached the upstream")
        .to_string();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("X-Userinfo is base64");
    serde_json::from_slice(&raw).expect("X-Userinfo is JSON")
}

#[test]
fn jwks_route_client_credentials_password_and_refresh() {
    let s = stack("bearer_jwks");
    let token = s.idp.client_credentials_token();

    let r = call(&s, "/anything/jwks", &[("authorization", &bearer(&token))]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["headers"]["X-Access-Token"], token.as_str());
    assert_eq!(userinfo(&r)["iss"], s.idp.issuer().as_str());

    // Cached: Envoy runs two workers, each with its own cache, so four
    // more requests make at least two hits.
    let hits = s.envoy.stat("wasmcustom.openid_connect.cache.hit");
    for _ in 0..4 {
        let r = call(&s, "/anything/jwks", &[("authorization", &bearer(&token))]);
        assert_eq!(r.status, 200);
    }
    assert!(s.envoy.stat("wasmcustom.openid_connect.cache.hit") >= hits + 2);

    // The same on routes whose names do not carry the version: the
    // filter reads it from the metadata (both layouts).
    for path in ["/anything/legacy", "/anything/metadata-only"] {
        let r = call(&s, path, &[("authorization", &bearer(&token))]);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(call(&s, path, &[]).status, 401, "{path}");
    }

    // Invalid token: 401 with the invalid_token challenge.
    let mut bad = token.clone();
    bad.replace_range(bad.len() - 4.., "AAAA");
    let r = call(&s, "/anything/jwks", &[("authorization", &bearer(&bad))]);
    assert_eq!(r.status, 401, "{}", r.body);
    let challenge = r.header("www-authenticate").expect("challenge");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    let r = call(
        &s,
        "/anything/jwks",
        &[("authorization", "Bearer not-a-jwt")],
    );
    assert_eq!(r.status, 401);

    // No token: the tutorial's curl gets 401 (not a browser navigation).
    let r = call(&s, "/anything/jwks", &[]);
    assert_eq!(r.status, 401, "{}", r.body);
    // A non-Bearer scheme counts as no token; a malformed header is a 400.
    let r = call(
        &s,
        "/anything/jwks",
        &[("authorization", "Basic dXNlcjpwYXNz")],
    );
    assert_eq!(r.status, 401);
    let r = call(&s, "/anything/jwks", &[("authorization", "Bearer")]);
    assert_eq!(r.status, 400);

    // Password grant, then a refreshed token.
    let grant = s.idp.password_grant();
    let access = grant["access_token"].as_str().expect("access_token");
    let r = call(&s, "/anything/jwks", &[("authorization", &bearer(access))]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(userinfo(&r)["preferred_username"], "quickstart-user");
    let refreshed = s
        .idp
        .refresh(grant["refresh_token"].as_str().expect("refresh_token"));
    let access2 = refreshed["access_token"].as_str().expect("access_token");
    assert_ne!(access, access2);
    let r = call(&s, "/anything/jwks", &[("authorization", &bearer(access2))]);
    assert_eq!(r.status, 200, "{}", r.body);

    assert!(s.envoy.stat("wasmcustom.openid_connect.allowed") >= 4);
    assert!(
        s.envoy
            .stat("wasmcustom.openid_connect.denied.invalid_token")
            >= 2
    );
}

#[test]
fn identity_headers_from_the_client_never_reach_the_upstream() {
    let s = stack("bearer_forged_headers");
    let token = s.idp.client_credentials_token();
    let forged = [
        ("x-userinfo", "eyJzdWIiOiJhZG1pbiJ9"),
        ("x-id-token", "forged"),
        ("x-raw-id-token", "forged"),
        ("x-refresh-token", "forged"),
    ];
    let mut headers = vec![("authorization", bearer(&token))];
    headers.extend(forged.iter().map(|(k, v)| (*k, v.to_string())));
    headers.push(("x-access-token", "forged".into()));
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = call(&s, "/anything/jwks", &h);
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = &r.json()["headers"];
    assert_eq!(seen["X-Access-Token"], token.as_str());
    assert_ne!(seen["X-Userinfo"], "eyJzdWIiOiJhZG1pbiJ9");
    for name in ["X-Id-Token", "X-Raw-Id-Token", "X-Refresh-Token"] {
        assert!(
            seen.get(name).is_none(),
            "{name} reached the upstream: {seen}"
        );
    }
    // Refused requests do not leak them either, and an X-Access-Token
    // alone is a token (as in APISIX), checked like any other.
    let r = call(&s, "/anything/jwks", &[("x-access-token", "forged")]);
    assert_eq!(r.status, 401);
    let r = call(&s, "/anything/jwks", &[("x-access-token", &token)]);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn introspection_route() {
    let s = stack("bearer_introspection");
    let token = s.idp.client_credentials_token();
    let r = call(
        &s,
        "/anything/introspect",
        &[("authorization", &bearer(&token))],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let info = userinfo(&r);
    assert_eq!(
        info["active"], true,
        "X-Userinfo is the introspection answer: {info}"
    );

    let r = call(
        &s,
        "/anything/introspect",
        &[("authorization", "Bearer garbage")],
    );
    assert_eq!(r.status, 401, "{}", r.body);
    let r = call(&s, "/anything/introspect", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"apisix\"")
    );

    // A token revoked before the gateway ever saw it.
    let revoked = s.idp.client_credentials_token();
    s.idp.revoke(&revoked);
    let r = call(
        &s,
        "/anything/introspect",
        &[("authorization", &bearer(&revoked))],
    );
    assert_eq!(r.status, 401, "{}", r.body);
}

#[test]
fn the_same_token_gets_each_routes_answer_and_route_changes_apply() {
    let s = stack("bearer_routes");
    let token = s.idp.client_credentials_token();
    let auth = bearer(&token);
    let lenient = call(&s, "/anything/jwks", &[("authorization", &auth)]);
    assert_eq!(lenient.status, 200, "{}", lenient.body);
    // Accepted (and cached) on the lenient route; still checked on the strict one.
    let strict = call(&s, "/anything/strict", &[("authorization", &auth)]);
    assert_eq!(strict.status, 403, "{}", strict.body);
    assert_eq!(strict.json()["error"], "required scopes admin not present");

    // The strict route is rewritten to be lenient: the next request follows.
    let mut new_routes = routes(&s.idp);
    new_routes[1] = Route::protected(
        "/anything/strict",
        "httpbin",
        plugin(
            &s.idp,
            json!({"use_jwks": true, "required_scopes": ["profile"]}),
        ),
    );
    s.envoy.update_routes(&new_routes);
    let r = call(&s, "/anything/strict", &[("authorization", &auth)]);
    assert_eq!(r.status, 200, "{}", r.body);

    // And back to strict.
    s.envoy.update_routes(&routes(&s.idp));
    let r = call(&s, "/anything/strict", &[("authorization", &auth)]);
    assert_eq!(r.status, 403);

    // Routes without the metadata pass untouched.
    let r = call(&s, "/anything/open", &[]);
    assert_eq!(r.status, 200);

    // A provider host without an Envoy cluster: 503 with a generic text;
    // the host is named in the log only.
    let r = call(&s, "/anything/nocluster", &[("authorization", &auth)]);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(!r.body.contains("127.0.0.1:1"), "{}", r.body);
    assert!(
        r.body.contains("identity provider unavailable"),
        "{}",
        r.body
    );
    let log = std::fs::read_to_string(s.envoy.log_path()).unwrap_or_default();
    assert!(log.contains("127.0.0.1:1"), "{log:.3000}");
}

#[test]
fn key_rotation_and_provider_outage() {
    // The refetch and retry intervals shortened to 1 s.
    let mut s = stack_with("bearer_rotation_outage", FAST_PROVIDER_RULES);
    let first = s.idp.client_credentials_token();
    let r = call(&s, "/anything/jwks", &[("authorization", &bearer(&first))]);
    assert_eq!(r.status, 200, "{}", r.body);

    // The provider restarts with a new signing key. Once the unknown-kid
    // refetch interval has passed since the last JWKS fetch, a token signed
    // by the new key is accepted without touching Envoy.
    s.idp.restart();
    std::thread::sleep(FAST_PROVIDER_WAIT);
    let rotated = s.idp.client_credentials_token();
    let r = call(
        &s,
        "/anything/jwks",
        &[("authorization", &bearer(&rotated))],
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // The provider goes away. A token never seen before, signed by a
    // cached key, is still accepted; one needing introspection cannot be.
    let unseen = s.idp.client_credentials_token();
    let for_introspection = s.idp.client_credentials_token();
    s.idp.stop();
    let r = call(&s, "/anything/jwks", &[("authorization", &bearer(&unseen))]);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(
        &s,
        "/anything/introspect",
        &[("authorization", &bearer(&for_introspection))],
    );
    assert_eq!(r.status, 503, "{}", r.body);

    // A token whose key the gateway has never seen needs a fresh JWKS: 503.
    s.idp.restart();
    let new_key = s.idp.client_credentials_token();
    s.idp.stop();
    std::thread::sleep(FAST_PROVIDER_WAIT);
    let r = call(
        &s,
        "/anything/jwks",
        &[("authorization", &bearer(&new_key))],
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(s.envoy.stat("wasmcustom.openid_connect.provider.failures") >= 2);
}

#[test]
fn the_token_cache_can_be_turned_off() {
    let s = stack_with("bearer_no_cache", r#"{"token_cache_size": 0}"#);
    let token = s.idp.client_credentials_token();
    for _ in 0..3 {
        let r = call(&s, "/anything/jwks", &[("authorization", &bearer(&token))]);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(s.envoy.stat("wasmcustom.openid_connect.cache.hit"), 0);
    assert_eq!(s.envoy.stat("wasmcustom.openid_connect.cache.miss"), 3);
    assert_eq!(s.envoy.stat("wasmcustom.openid_connect.allowed"), 3);
}
