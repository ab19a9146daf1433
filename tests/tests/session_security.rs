//! Sessions and the smaller findings of the security review (7: binding,
//! 10, 11: `valid_issuers`, 13, 14), through the real Envoy and the filter,
//! against the rogue provider's "session cases" (`tests/rogue/server.js`:
//! real HTTP, real signatures; its auth endpoint redirects straight back,
//! so a login needs no browser):
//!
//! - a session cookie made on one route is refused on a route of another
//!   provider or client that shares the cookie name and secret;
//! - a copy of the cookie kept from before logout is refused afterwards,
//!   on every worker;
//! - a refreshed ID token with a bad signature or another `sub` ends the
//!   session, never reaches the upstream; a good one is used, once per
//!   request;
//! - a token with control characters from the provider is a 503, not a
//!   crashed VM;
//! - without `expires_in`, the access token's JWT `exp` is its expiry, so a
//!   refused refresh ends the session;
//! - `valid_issuers: []` is refused (filter: 500; Admin API: 400 naming it);
//! - clients see generic error texts, the log has the details.

use std::process::Command;
use std::time::Duration;

use integration_tests::gateway::Gateway;
use integration_tests::http::request;
use integration_tests::{
    free_port, get, repo_root, wait_for, Cluster, Envoy, EnvoyConfig, Proc, Response, Route,
    TestDir,
};
use serde_json::{json, Value};

const CLIENT_ID: &str = "rp-client";
const CLIENT_SECRET: &str = "rp-client-secret-0123456789";
const SECRET: &str = "session-security-secret-0123456789";
const HTML: (&str, &str) = ("accept", "text/html");
const API: (&str, &str) = ("accept", "application/json");
const STAT: &str = "wasmcustom.openid_connect.";

struct Rogue {
    port: u16,
    _proc: Proc,
}

impl Rogue {
    fn start(dir: &std::path::Path) -> Rogue {
        let port = free_port();
        let mut cmd = Command::new(integration_tests::provider::node_bin());
        cmd.arg(repo_root().join("tests/rogue/server.js"))
            .env("PORT", port.to_string());
        let mut proc = Proc::spawn("rogue", dir, cmd);
        wait_for("the rogue provider", Duration::from_secs(10), || {
            proc.assert_running();
            integration_tests::port_open(port).then_some(())
        });
        Rogue { port, _proc: proc }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn discovery(&self, realm: &str) -> String {
        format!("{}/{realm}/.well-known/openid-configuration", self.base())
    }
}

/// A login route at `/<prefix>/` for rogue realm `realm`.
fn login_route(rogue: &Rogue, prefix: &str, realm: &str, extra: Value) -> Route {
    let mut c = json!({
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "discovery": rogue.discovery(realm),
        "bearer_only": false,
        "redirect_uri": format!("/{prefix}/callback"),
        "logout_path": format!("/{prefix}/logout"),
        "set_userinfo_header": false,
        "session": {"secret": SECRET},
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    Route::prefix(&format!("/{prefix}/"))
        .direct(200, "the protected page")
        .oidc(&c)
}

fn cookie_pairs(r: &Response) -> Vec<String> {
    r.header_all("set-cookie")
        .into_iter()
        .filter(|c| !c.contains("Max-Age=0"))
        .map(|c| c.split(';').next().unwrap_or_default().to_string())
        .collect()
}

/// Logs in on the route at `/<prefix>/`: the callback's response.
fn login_response(envoy: &Envoy, prefix: &str) -> Response {
    let start = get(&envoy.url(&format!("/{prefix}/page")), &[HTML]).expect("Envoy answers");
    assert_eq!(start.status, 302, "{prefix}: login start: {}", start.body);
    let to_idp = start.header("location").expect("a Location").to_string();
    let flow = cookie_pairs(&start).join("; ");
    let idp = get(&to_idp, &[]).expect("the rogue provider answers");
    assert_eq!(idp.status, 302, "{prefix}: the provider's redirect");
    let back = idp.header("location").expect("a Location").to_string();
    request("GET", &back, &[HTML, ("cookie", &flow)], None).expect("callback")
}

/// Logs in on the route at `/<prefix>/`: the session's `Cookie` header.
fn login(envoy: &Envoy, prefix: &str) -> String {
    let cb = login_response(envoy, prefix);
    assert_eq!(cb.status, 302, "{prefix}: callback: {}", cb.body);
    let cookies = cookie_pairs(&cb);
    assert!(
        cookies.iter().any(|c| c.starts_with("session")),
        "{prefix}: no session cookie in {:?}",
        cb.headers
    );
    cookies.join("; ")
}

fn api_get(envoy: &Envoy, path: &str, cookie: &str) -> Response {
    get(&envoy.url(path), &[API, ("cookie", cookie)]).expect("Envoy answers")
}

fn stat(envoy: &Envoy, name: &str) -> u64 {
    envoy.stat(&format!("{STAT}{name}"))
}

fn log_text(envoy: &Envoy) -> String {
    std::fs::read_to_string(envoy.log_path()).unwrap_or_default()
}

#[test]
fn a_session_is_bound_to_its_provider_and_client() {
    let dir = TestDir::for_current_test();
    let rogue = Rogue::start(dir.path());
    let config = EnvoyConfig::default()
        .cluster(Cluster::provider(&rogue.base()))
        .route(login_route(&rogue, "a", "a.session-ok", json!({})))
        // Same cookie name and secret, another provider (realm).
        .route(login_route(&rogue, "b", "b.session-ok", json!({})))
        // Same cookie name, secret and provider, another client.
        .route(login_route(
            &rogue,
            "c",
            "a.session-ok",
            json!({"client_id": "rp-admin-client"}),
        ));
    let envoy = Envoy::start(dir.path(), &config);

    let cookie = login(&envoy, "a");
    let r = api_get(&envoy, "/a/page", &cookie);
    assert_eq!(r.status, 200, "{}", r.body);
    for other in ["/b/page", "/c/page"] {
        let r = api_get(&envoy, other, &cookie);
        assert_eq!(r.status, 401, "{other} took route a's session: {}", r.body);
        assert!(
            r.header_all("set-cookie")
                .iter()
                .any(|c| c.starts_with("session=;")),
            "{other}: the foreign cookie is cleared: {:?}",
            r.headers
        );
    }
    // Still good where it was made.
    assert_eq!(api_get(&envoy, "/a/page", &cookie).status, 200);
}

#[test]
fn logout_ends_copies_of_the_session_cookie() {
    let dir = TestDir::for_current_test();
    let rogue = Rogue::start(dir.path());
    let config = EnvoyConfig::default()
        .concurrency(2)
        .cluster(Cluster::provider(&rogue.base()))
        .route(login_route(&rogue, "a", "logout.session-ok", json!({})));
    let envoy = Envoy::start(dir.path(), &config);

    let cookie = login(&envoy, "a");
    let other = login(&envoy, "a");
    for _ in 0..4 {
        assert_eq!(api_get(&envoy, "/a/page", &cookie).status, 200);
    }
    // The user logs out; an attacker kept a copy of the cookie.
    let r = get(&envoy.url("/a/logout"), &[HTML, ("cookie", &cookie)]).unwrap();
    assert_eq!(r.status, 302, "{}", r.body);
    assert!(r
        .header_all("set-cookie")
        .iter()
        .any(|c| c.starts_with("session=;")));
    // Refused on every worker (several connections), and never again a
    // session, whatever the cookie's timeouts say.
    for _ in 0..6 {
        let r = api_get(&envoy, "/a/page", &cookie);
        assert_eq!(r.status, 401, "a copy of a logged-out session: {}", r.body);
    }
    assert_eq!(stat(&envoy, "session.revoked"), 1);
    let r = get(&envoy.url("/a/page"), &[HTML, ("cookie", &cookie)]).unwrap();
    assert_eq!(r.status, 302, "to the login: {}", r.body);
    assert!(stat(&envoy, "session.revoked_refused") >= 7);
    // Another session of the same route is untouched.
    assert_eq!(api_get(&envoy, "/a/page", &other).status, 200);
}

#[test]
fn refreshed_id_tokens_are_verified_before_use() {
    let dir = TestDir::for_current_test();
    let rogue = Rogue::start(dir.path());
    // The login's access token expires after 1 s: the next request
    // refreshes it.
    let mut config = EnvoyConfig::default().cluster(Cluster::provider(&rogue.base()));
    for case in [
        "session-refresh-ok",
        "session-refresh-bad-sig",
        "session-refresh-other-sub",
    ] {
        let realm = format!("refresh.{case}");
        let raw = json!({"set_raw_id_token_header": true});
        config = config.route(login_route(&rogue, case, &realm, raw));
    }
    // A leeway longer than the tokens' life: every request refreshes, but
    // one refresh per request at most.
    config = config.route(login_route(
        &rogue,
        "always",
        "always.session-refresh-ok",
        json!({"access_token_expires_leeway": 600}),
    ));
    let envoy = Envoy::start(dir.path(), &config);
    let ok = login(&envoy, "session-refresh-ok");
    let bad_sig = login(&envoy, "session-refresh-bad-sig");
    let other_sub = login(&envoy, "session-refresh-other-sub");
    std::thread::sleep(Duration::from_secs(2));

    // A broken signature or another user: the session ends (401 for an
    // API client, the cookie cleared), nothing is forwarded.
    for (case, cookie) in [
        ("session-refresh-bad-sig", &bad_sig),
        ("session-refresh-other-sub", &other_sub),
    ] {
        let refused = stat(&envoy, "session.refresh_refused");
        let r = api_get(&envoy, &format!("/{case}/page"), cookie);
        assert_eq!(r.status, 401, "{case}: {}", r.body);
        assert!(
            r.header_all("set-cookie")
                .iter()
                .any(|c| c.starts_with("session=;")),
            "{case}: {:?}",
            r.headers
        );
        assert_eq!(stat(&envoy, "session.refresh_refused"), refused + 1);
        // A browser goes back to the login.
        let r = get(
            &envoy.url(&format!("/{case}/page")),
            &[HTML, ("cookie", cookie)],
        )
        .unwrap();
        assert_eq!(r.status, 302, "{case}: {}", r.body);
    }
    let log = log_text(&envoy);
    assert!(
        log.contains("refreshed ID token refused"),
        "the log says why: {log:.2000}"
    );

    // A good refreshed ID token: used.
    let refreshed = stat(&envoy, "session.refreshed");
    let r = api_get(&envoy, "/session-refresh-ok/page", &ok);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(stat(&envoy, "session.refreshed"), refreshed + 1);

    // Refreshing on every request: once per request, not in a loop.
    let cookie = login(&envoy, "always");
    for i in 1..=3 {
        let refreshed = stat(&envoy, "session.refreshed");
        let r = api_get(&envoy, "/always/page", &cookie);
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        assert_eq!(stat(&envoy, "session.refreshed"), refreshed + 1);
    }
}

#[test]
fn provider_tokens_with_control_characters_are_refused() {
    let dir = TestDir::for_current_test();
    let rogue = Rogue::start(dir.path());
    let config = EnvoyConfig::default()
        .concurrency(1)
        .cluster(Cluster::provider(&rogue.base()))
        .route(login_route(&rogue, "ctl", "t.session-token-ctl", json!({})))
        .route(login_route(&rogue, "ok", "t.session-ok", json!({})));
    let envoy = Envoy::start(dir.path(), &config);

    let cb = login_response(&envoy, "ctl");
    assert_eq!(cb.status, 503, "{}", cb.body);
    assert!(
        cookie_pairs(&cb).iter().all(|c| !c.starts_with("session=")),
        "no session: {:?}",
        cb.headers
    );
    assert!(!cb.body.contains("x-injected"), "{}", cb.body);
    // The VM is alive: other routes still work, logins included.
    let cookie = login(&envoy, "ok");
    assert_eq!(api_get(&envoy, "/ok/page", &cookie).status, 200);
}

#[test]
fn the_access_token_exp_ends_a_session_whose_refresh_is_refused() {
    let dir = TestDir::for_current_test();
    let rogue = Rogue::start(dir.path());
    let config = EnvoyConfig::default()
        .cluster(Cluster::provider(&rogue.base()))
        .route(login_route(&rogue, "jwt", "e.session-jwt-exp", json!({})));
    let envoy = Envoy::start(dir.path(), &config);

    // No expires_in; the access token's JWT exp is 2 s ahead.
    let cookie = login(&envoy, "jwt");
    assert_eq!(api_get(&envoy, "/jwt/page", &cookie).status, 200);
    std::thread::sleep(Duration::from_secs(4));
    // Expired; the provider refuses the refresh (as after a logout there):
    // the session is over, also for whoever stole the cookie.
    let r = api_get(&envoy, "/jwt/page", &cookie);
    assert_eq!(r.status, 401, "{}", r.body);
}

#[test]
fn an_empty_valid_issuers_is_refused() {
    let dir = TestDir::for_current_test();
    let rogue = Rogue::start(dir.path());
    let bearer = |valid_issuers: Value| {
        json!({
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "discovery": rogue.discovery("iss.session-ok"),
            "use_jwks": true,
            "bearer_only": true,
            "claim_validator": {"issuer": {"valid_issuers": valid_issuers}},
        })
    };
    let config = EnvoyConfig::default()
        .cluster(Cluster::provider(&rogue.base()))
        .route(
            Route::prefix("/empty/")
                .direct(200, "ok")
                .oidc(&bearer(json!([]))),
        )
        .route(
            Route::prefix("/listed/")
                .direct(200, "ok")
                .oidc(&bearer(json!([format!("{}/iss.session-ok", rogue.base())]))),
        );
    let envoy = Envoy::start(dir.path(), &config);
    let token = get(&format!("{}/iss.session-ok/bearer", rogue.base()), &[])
        .unwrap()
        .json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let auth = format!("Bearer {token}");
    let r = get(&envoy.url("/listed/x"), &[("authorization", &auth)]).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    // Not "any issuer": the route is unusable.
    let r = get(&envoy.url("/empty/x"), &[("authorization", &auth)]).unwrap();
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(r.body.contains("gateway configuration error"), "{}", r.body);
    assert!(!r.body.contains("valid_issuers"), "{}", r.body);

    // The Admin API refuses it, naming the field.
    let gw = Gateway::start(dir.path(), &[]);
    let route = json!({
        "uri": "/x/*",
        "plugins": {"openid-connect": bearer(json!([]))},
        "upstream": {"type": "roundrobin", "nodes": {"127.0.0.1:1": 1}},
    });
    let r = gw.admin(
        "PUT",
        "/apisix/admin/routes/empty-issuers",
        Some(&route.to_string()),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("claim_validator.issuer.valid_issuers"),
        "{}",
        r.body
    );
}

#[test]
fn clients_get_generic_error_texts() {
    let dir = TestDir::for_current_test();
    let rogue = Rogue::start(dir.path());
    let down = free_port();
    let down_url = format!("http://127.0.0.1:{down}");
    let broken = r#"{"client_id": "c", "discovery": 5, "timeout": "soon"}"#;
    let config = EnvoyConfig::default()
        .concurrency(1)
        .cluster(Cluster::provider(&rogue.base()))
        .cluster(Cluster::provider(&down_url))
        // A provider host without an Envoy cluster.
        .route(Route::prefix("/nocluster/").direct(200, "ok").oidc(&json!({
            "client_id": "c", "client_secret": "s", "bearer_only": true, "use_jwks": true,
            "discovery": "http://10.255.255.1:8080/realms/internal/.well-known/openid-configuration",
        })))
        // A provider that does not answer, for a browser and a token.
        .route(login_route(
            &rogue,
            "down",
            "x",
            json!({"discovery": format!("{down_url}/realms/internal/.well-known/openid-configuration")}),
        ))
        .route(Route::prefix("/downapi/").direct(200, "ok").oidc(&json!({
            "client_id": "c", "client_secret": "s", "bearer_only": true, "use_jwks": true,
            "discovery": format!("{down_url}/realms/internal/.well-known/openid-configuration"),
        })))
        // A config that does not parse.
        .route(
            Route::prefix("/broken/")
                .direct(200, "ok")
                .oidc_raw(broken, "broken-1"),
        );
    let envoy = Envoy::start(dir.path(), &config);

    let auth = ("authorization", "Bearer a.b.c");
    let r = get(&envoy.url("/nocluster/x"), &[auth]).unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "identity provider unavailable");
    for secret in ["10.255.255.1", "oidc|", "internal"] {
        assert!(!r.body.contains(secret), "{secret}: {}", r.body);
        for (_, v) in &r.headers {
            assert!(!v.contains(secret), "{secret}: {:?}", r.headers);
        }
    }

    for (path, headers) in [("/down/page", vec![HTML]), ("/downapi/x", vec![API, auth])] {
        let r = get(&envoy.url(path), &headers).unwrap();
        assert_eq!(r.status, 503, "{path}: {}", r.body);
        assert!(!r.body.contains(&down.to_string()), "{}", r.body);
        assert!(!r.body.contains("internal"), "{}", r.body);
    }

    for _ in 0..3 {
        let r = get(&envoy.url("/broken/x"), &[auth]).unwrap();
        assert_eq!(r.status, 500, "{}", r.body);
        assert_eq!(r.json()["error"], "gateway configuration error");
        assert!(!r.body.contains("discovery"), "{}", r.body);
        assert!(!r.body.contains("timeout"), "{}", r.body);
    }

    // The details are in the log; a config problem once per VM and
    // config version, not per request.
    let log = log_text(&envoy);
    assert!(log.contains("10.255.255.1"), "{log:.3000}");
    assert!(log.contains(&format!("{down}")), "{log:.3000}");
    let parse_errors = log.matches("\"broken-1\" is unusable").count();
    assert_eq!(parse_errors, 1, "{log:.3000}");
    assert_eq!(stat(&envoy, "denied.bad_config"), 3);
}
