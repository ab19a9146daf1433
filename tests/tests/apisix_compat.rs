//! APISIX's configurations as they are: the objects APISIX stores (every
//! schema default filled in, `tests/fixtures/apisix/`), an etcd written in
//! APISIX's layout, `$env://` references, a provider whose discovery URL is
//! not its issuer, and the Admin API probes tools make, all through the real
//! sidecar and Envoy with the real test provider (and the rogue one for the
//! forged issuer).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integration_tests::browser::Browser;
use integration_tests::etcd::Etcd;
use integration_tests::gateway::Gateway;
use integration_tests::provider::{CLIENT_ID, DEFAULT_CLIENT_SECRET, PASSWORD, USER};
use integration_tests::{
    free_port, get, repo_root, wait_for, Httpbin, Proc, Provider, ProviderOptions, TestDir,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

fn fixture(name: &str) -> Value {
    let path = repo_root().join("tests/fixtures/apisix").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// APISIX's stored openid-connect object, with this test's provider in
/// place of APISIX's test values, checking bearer tokens (introspection).
fn stored_plugin(name: &str, provider: &Provider) -> Value {
    let mut p = fixture(name);
    p["client_id"] = json!(CLIENT_ID);
    p["client_secret"] = json!(DEFAULT_CLIENT_SECRET);
    p["discovery"] = json!(provider.discovery_url());
    p["bearer_only"] = json!(true);
    p
}

/// The object without the times APISIX stores (its Admin API, like this
/// one, refuses them in a PUT body).
fn without_times(mut v: Value) -> Value {
    let o = v.as_object_mut().unwrap();
    o.remove("create_time");
    o.remove("update_time");
    v
}

fn with_node(mut upstream: Value, node: &str) -> Value {
    upstream["nodes"] = if upstream["nodes"].is_array() {
        let (host, port) = node.split_once(':').unwrap();
        json!([{"host": host, "port": port.parse::<u16>().unwrap(), "weight": 1, "priority": 0}])
    } else {
        json!({ node: 1 })
    };
    upstream
}

fn put(gw: &Gateway, path: &str, body: &Value) -> u16 {
    let r = gw.admin("PUT", path, Some(&body.to_string()));
    assert!(
        r.status == 200 || r.status == 201,
        "PUT {path}: {} {}",
        r.status,
        r.body
    );
    r.status
}

fn status_with(url: &str, auth: &str) -> u16 {
    get(url, &[("authorization", auth)])
        .map(|r| r.status)
        .unwrap_or(0)
}

fn wait_status(what: &str, url: &str, auth: &str, want: u16) {
    wait_for(what, WAIT, || {
        (status_with(url, auth) == want).then_some(())
    });
}

#[test]
fn apisix_stored_objects_are_accepted_and_served() {
    let dir = TestDir::for_current_test();
    let httpbin = Httpbin::start(dir.path());
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let gw = Gateway::start(dir.path(), &[]);
    let node = format!("127.0.0.1:{}", httpbin.port);

    // Upstreams as APISIX 3.13 stores them: `hash_on: "vars"` on a
    // roundrobin and a least_conn upstream, health checks and
    // keepalive_pool with every default.
    for (id, name) in [
        ("1", "upstream-3.13.json"),
        ("2", "upstream-checks-3.13.json"),
        ("3", "upstream-tcp-checks-3.13.json"),
    ] {
        let mut u = without_times(with_node(fixture(name), &node));
        u["id"] = json!(id);
        assert_eq!(put(&gw, &format!("/apisix/admin/upstreams/{id}"), &u), 201);
    }
    // The route APISIX 3.13 stores (with its inline upstream's defaults),
    // and one with APISIX 3.18's stored plugin naming upstream 2.
    let mut route = without_times(fixture("route-3.13.json"));
    route["plugins"]["openid-connect"] = stored_plugin("openid-connect-3.13.json", &provider);
    route["upstream"] = with_node(route["upstream"].clone(), &node);
    assert_eq!(put(&gw, "/apisix/admin/routes/1", &route), 201);
    let route2 = json!({
        "uri": "/headers", "priority": 0, "status": 1, "upstream_id": "2",
        "plugins": {"openid-connect": stored_plugin("openid-connect-3.18.json", &provider)},
    });
    assert_eq!(put(&gw, "/apisix/admin/routes/2", &route2), 201);

    // A token checked by the provider (introspection) passes; no token is
    // refused: the stored configs do what they say.
    let token = provider.password_grant()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let auth = format!("Bearer {token}");
    wait_status(
        "the APISIX-stored route",
        &gw.url("/anything/x"),
        &auth,
        200,
    );
    wait_status("the route on upstream 2", &gw.url("/headers"), &auth, 200);
    assert_eq!(status_with(&gw.url("/anything/x"), "Bearer invalid"), 401);
    assert_eq!(get(&gw.url("/anything/x"), &[]).unwrap().status, 401);

    // Still refused by name: what asks for something this gateway does not
    // do, default-filled or not.
    let mut bad = route.clone();
    bad["plugins"]["openid-connect"]["jwt_verification_cache_ignore"] = json!(true);
    bad["upstream"]["keepalive_pool"] = json!({"size": 1});
    let r = gw.admin("PUT", "/apisix/admin/routes/bad", Some(&bad.to_string()));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body
            .contains("plugins.openid-connect.jwt_verification_cache_ignore")
            && r.body.contains("upstream.keepalive_pool.size"),
        "{}",
        r.body
    );
}

#[test]
fn admin_api_probes_answer_as_apisix() {
    let dir = TestDir::for_current_test();
    let gw = Gateway::start(dir.path(), &[]);
    let r = gw.admin("GET", "/apisix/admin/plugins/list", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!([
            "openid-connect",
            "proxy-rewrite",
            "redirect",
            "ip-restriction",
            "cors",
            "response-rewrite",
            "limit-count",
            "limit-req",
            "prometheus"
        ])
    );
    let r = gw.admin("GET", "/apisix/admin/plugins/list?subsystem=stream", None);
    assert_eq!(r.json(), json!([]));
    for path in [
        "/apisix/admin/plugins/openid-connect",
        "/apisix/admin/schema/plugins/openid-connect",
    ] {
        let r = gw.admin("GET", path, None);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let schema = r.json();
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["properties"]["scope"]["default"], "openid");
        assert!(schema["properties"]["session"]["properties"]["secret"].is_object());
        // Only what is accepted: refused attributes are not offered.
        assert!(schema["properties"].get("proxy_opts").is_none());
    }
    let r = gw.admin("GET", "/apisix/admin/plugins/key-auth", None);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error_msg"], "plugin not found in subsystem http");
}

/// A gateway in `<dir>/<name>/` on `etcd`.
fn etcd_gateway(dir: &TestDir, etcd: &Etcd) -> (Gateway, std::path::PathBuf) {
    let sub = dir.path().join("gw");
    std::fs::create_dir_all(&sub).unwrap();
    let url = etcd.url();
    let gw = Gateway::start(&sub, &["--etcd", &url]);
    (gw, sub)
}

#[test]
fn an_etcd_written_by_apisix_is_served_and_what_is_not_is_named() {
    let dir = TestDir::for_current_test();
    let httpbin = Httpbin::start(dir.path());
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let etcd = Etcd::start(dir.path());
    let node = format!("127.0.0.1:{}", httpbin.port);

    // What APISIX 3.13 writes: its `init_dir` markers (`apisix init_etcd`,
    // apisix/cli/etcd.lua), keys /apisix/{routes,upstreams}/<id>, the
    // objects with their defaults, ids and times.
    for dir in ["routes", "upstreams"] {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        etcd.v3(
            "kv/put",
            &json!({"key": b64(&format!("/apisix/{dir}/")), "value": b64("init_dir")}),
        );
    }
    etcd.put(
        "/apisix/upstreams/1",
        &with_node(fixture("upstream-3.13.json"), &node),
    );
    let mut route = fixture("route-3.13.json");
    route["plugins"]["openid-connect"] = stored_plugin("openid-connect-3.13.json", &provider);
    route.as_object_mut().unwrap().remove("upstream");
    route["upstream_id"] = json!("1");
    etcd.put("/apisix/routes/1", &route);
    // What only APISIX serves: another plugin, and a gRPC upstream.
    etcd.put(
        "/apisix/routes/2",
        &json!({"id": "2", "uri": "/limited/*", "priority": 0, "status": 1,
                "create_time": 1765000000, "update_time": 1765000000,
                "plugins": {"key-auth": {"header": "apikey", "query": "apikey",
                    "hide_credentials": false}},
                "upstream_id": "1"}),
    );
    etcd.put(
        "/apisix/upstreams/grpc",
        &json!({"id": "grpc", "scheme": "grpc", "type": "roundrobin",
                "hash_on": "vars", "pass_host": "pass",
                "nodes": {"127.0.0.1:50051": 1},
                "create_time": 1765000000, "update_time": 1765000000}),
    );

    let (gw, sub) = etcd_gateway(&dir, &etcd);
    let token = provider.password_grant()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let auth = format!("Bearer {token}");
    wait_status(
        "APISIX's route from etcd",
        &gw.url("/anything/x"),
        &auth,
        200,
    );
    assert_eq!(status_with(&gw.url("/anything/x"), "Bearer invalid"), 401);
    // The route it cannot serve is not in Envoy...
    assert_eq!(get(&gw.url("/limited/x"), &[]).unwrap().status, 404);
    // ... and does not vanish silently: /status and the log name it and why.
    let status = gw.admin("GET", "/status", None).json();
    let not_served = &status["not_served"];
    let route2 = not_served["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "2")
        .unwrap_or_else(|| panic!("route 2 is not named: {status}"));
    assert!(
        route2["reason"]
            .as_str()
            .unwrap()
            .contains("\"plugins.key-auth\" is not a plugin this gateway has"),
        "{route2}"
    );
    let grpc = not_served["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == "grpc")
        .unwrap_or_else(|| panic!("upstream grpc is not named: {status}"));
    assert!(
        grpc["reason"].as_str().unwrap().contains("\"scheme\""),
        "{grpc}"
    );
    assert_eq!(
        not_served["routes"].as_array().unwrap().len(),
        1,
        "{status}"
    );
    let log = std::fs::read_to_string(sub.join("sidecar.log")).unwrap();
    assert!(
        log.contains("stored route \"2\" is not served by this gateway")
            && log.contains("stored upstream \"grpc\" is not served by this gateway"),
        "sidecar.log:\n{log}"
    );
}

#[test]
fn env_references_reach_the_provider_and_secret_managers_are_refused() {
    // The sidecar inherits the test's environment.
    std::env::set_var("OIDC_COMPAT_CLIENT_SECRET", DEFAULT_CLIENT_SECRET);
    let dir = TestDir::for_current_test();
    let httpbin = Httpbin::start(dir.path());
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let gw = Gateway::start(dir.path(), &["--env-allow", "OIDC_COMPAT_*"]);
    let node = format!("127.0.0.1:{}", httpbin.port);
    let route = |secret: &str| {
        json!({
            "uri": "/anything/*",
            "plugins": {"openid-connect": {
                "client_id": CLIENT_ID,
                "client_secret": secret,
                "discovery": provider.discovery_url(),
                "bearer_only": true,
            }},
            "upstream": {"nodes": {node.as_str(): 1}},
        })
    };
    assert_eq!(
        put(
            &gw,
            "/apisix/admin/routes/env",
            &route("$env://OIDC_COMPAT_CLIENT_SECRET")
        ),
        201
    );
    // Stored and shown as the reference, never resolved.
    let shown = gw.admin("GET", "/apisix/admin/routes/env", None).json();
    assert_eq!(
        shown["value"]["plugins"]["openid-connect"]["client_secret"],
        "$env://OIDC_COMPAT_CLIENT_SECRET"
    );
    let stored = gw.stored_text();
    assert!(stored.contains("$env://OIDC_COMPAT_CLIENT_SECRET"));
    assert!(!stored.contains(DEFAULT_CLIENT_SECRET));

    // Introspection authenticates with the resolved secret: a valid token
    // passes, a revoked one (good signature) is refused by the provider.
    let token = provider.password_grant()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let auth = format!("Bearer {token}");
    wait_status("the $env route", &gw.url("/anything/x"), &auth, 200);
    let revoked = provider.client_credentials_token();
    provider.revoke(&revoked);
    assert_eq!(
        status_with(&gw.url("/anything/x"), &format!("Bearer {revoked}")),
        401
    );

    // A variable the operator did not expose: refused, set or not, with
    // the same text (a route writer learns nothing about the environment).
    std::env::set_var("OIDC_NOT_EXPOSED_SET", "some value");
    let texts: Vec<String> = ["OIDC_NOT_EXPOSED_SET", "OIDC_NOT_EXPOSED_UNSET"]
        .iter()
        .map(|name| {
            let r = gw.admin(
                "PUT",
                "/apisix/admin/routes/hidden",
                Some(&route(&format!("$env://{name}")).to_string()),
            );
            assert_eq!(r.status, 400, "{}", r.body);
            assert!(r.body.contains("does not expose"), "{}", r.body);
            assert!(!r.body.contains("some value"), "{}", r.body);
            r.body.replace(name, "NAME")
        })
        .collect();
    assert_eq!(texts[0], texts[1]);

    // An unset variable, a secret manager: 400, naming field and reference.
    let r = gw.admin(
        "PUT",
        "/apisix/admin/routes/unset",
        Some(&route("$ENV://OIDC_COMPAT_SURELY_UNSET").to_string()),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains(
            r#"property \"plugins.openid-connect.client_secret\" refers to the environment variable \"OIDC_COMPAT_SURELY_UNSET\", which is not set"#
        ),
        "{}",
        r.body
    );
    let r = gw.admin(
        "PUT",
        "/apisix/admin/routes/vault",
        Some(&route("$secret://vault/1/oidc/client_secret").to_string()),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("plugins.openid-connect.client_secret")
            && r.body
                .contains("secret manager references are not supported"),
        "{}",
        r.body
    );
    assert_eq!(
        gw.admin("GET", "/apisix/admin/routes/vault", None).status,
        404
    );
    // Where a value would reach clients (`realm`, in `WWW-Authenticate`),
    // or the sidecar's own settings: refused, not resolved.
    let mut realm = route(DEFAULT_CLIENT_SECRET);
    realm["plugins"]["openid-connect"]["realm"] = json!("$env://OIDC_COMPAT_CLIENT_SECRET");
    let r = gw.admin(
        "PUT",
        "/apisix/admin/routes/realm",
        Some(&realm.to_string()),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("plugins.openid-connect.realm") && !r.body.contains(DEFAULT_CLIENT_SECRET),
        "{}",
        r.body
    );
    let r = gw.admin(
        "PUT",
        "/apisix/admin/routes/own",
        Some(&route("$env://SIDECAR_ADMIN_KEY").to_string()),
    );
    assert_eq!(r.status, 400, "{}", r.body);
}

struct Rogue {
    port: u16,
    _proc: Proc,
}

impl Rogue {
    fn start(dir: &Path) -> Rogue {
        let port = free_port();
        let mut cmd = Command::new(integration_tests::provider::node_bin());
        cmd.arg(repo_root().join("tests/rogue/server.js"))
            .env("PORT", port.to_string());
        let mut proc = Proc::spawn("rogue", dir, cmd);
        wait_for("the rogue provider", WAIT, || {
            proc.assert_running();
            integration_tests::port_open(port).then_some(())
        });
        Rogue { port, _proc: proc }
    }

    /// A realm's bearer token (its issuer is on 127.0.0.1).
    fn token(&self, realm: &str) -> String {
        let url = format!("http://127.0.0.1:{}/{realm}/bearer", self.port);
        let r = get(&url, &[]).unwrap();
        r.json()["access_token"].as_str().unwrap().to_string()
    }
}

/// The provider reached on another host name (`localhost`) than its
/// issuer's (`127.0.0.1`), as Keycloak on an internal URL with a public
/// `KC_HOSTNAME`: bearer tokens and the browser login work, checked
/// against the document's issuer; a token carrying the issuer the URL
/// stands for is refused.
#[test]
fn a_provider_whose_discovery_url_is_not_its_issuer() {
    let dir = TestDir::for_current_test();
    let httpbin = Httpbin::start(dir.path());
    let provider = Provider::start(dir.path(), ProviderOptions::default());
    let rogue = Rogue::start(dir.path());
    let gw = Gateway::start(dir.path(), &[]);
    let node = format!("127.0.0.1:{}", httpbin.port);
    let internal = format!(
        "http://localhost:{}/realms/quickstart-realm/.well-known/openid-configuration",
        provider.port
    );
    assert!(!internal.starts_with(&provider.issuer()));

    let route = |uri: &str, plugin: Value| {
        json!({"uri": uri, "plugins": {"openid-connect": plugin},
               "upstream": {"nodes": {node.as_str(): 1}}})
    };
    put(
        &gw,
        "/apisix/admin/routes/bearer",
        &route(
            "/status/*",
            json!({"client_id": CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET,
                   "discovery": internal, "bearer_only": true, "use_jwks": true}),
        ),
    );
    put(
        &gw,
        "/apisix/admin/routes/login",
        &route(
            "/anything/*",
            json!({"client_id": CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET,
                   "discovery": internal, "bearer_only": false, "scope": "openid profile",
                   "redirect_uri": format!("http://localhost:{}/anything/callback", gw.proxy_port)}),
        ),
    );
    // httpbin answers `/status/<code>`, `/get` and `/ip`.
    let rogue_route = |id: &str, uri: &str, realm: &str| {
        put(
            &gw,
            &format!("/apisix/admin/routes/{id}"),
            &route(
                uri,
                json!({"client_id": "rp-client", "bearer_only": true, "use_jwks": true,
                       "discovery": format!("http://localhost:{}/{realm}/.well-known/openid-configuration", rogue.port)}),
            ),
        );
    };
    rogue_route("rogue-plain", "/get", "bearer.plain");
    rogue_route("rogue-forged", "/ip", "bearer.iss-localhost");

    // Bearer: a token of the provider (iss 127.0.0.1) passes.
    let token = provider.client_credentials_token();
    let auth = format!("Bearer {token}");
    wait_status(
        "the split-horizon bearer route",
        &gw.url("/status/200"),
        &auth,
        200,
    );
    // The rogue realm's own token passes; one whose `iss` is the issuer the
    // discovery URL stands for (localhost), not the document's, is refused.
    let plain = format!("Bearer {}", rogue.token("bearer.plain"));
    wait_status(
        "the rogue's split-horizon route",
        &gw.url("/get"),
        &plain,
        200,
    );
    let forged = rogue.token("bearer.iss-localhost");
    let claims = jwt_claims(&forged);
    assert_eq!(
        claims["iss"],
        format!("http://localhost:{}/bearer.iss-localhost", rogue.port)
    );
    let r = get(
        &gw.url("/ip"),
        &[("authorization", &format!("Bearer {forged}"))],
    )
    .unwrap();
    assert_eq!(r.status, 401, "{}", r.body);

    // The browser login: to the provider's public URL, back with an ID
    // token of its issuer.
    let browser = Browser::start(dir.path());
    let start = format!("http://localhost:{}/anything/split", gw.proxy_port);
    browser.goto(&start);
    browser.wait_for_element("#kc-form-login", WAIT);
    assert!(
        browser.current_url().starts_with(&provider.issuer()),
        "{}",
        browser.current_url()
    );
    browser.login(USER, PASSWORD);
    let url = browser.wait_for_url(Duration::from_secs(15), |u| u == start);
    assert_eq!(url, start);
    let text = browser.page_text();
    let echo: Value = {
        let (a, b) = (text.find('{').unwrap(), text.rfind('}').unwrap());
        serde_json::from_str(&text[a..=b]).unwrap()
    };
    let id = jwt_claims(echo["headers"]["X-Id-Token"].as_str().map_or("", |s| s));
    assert_eq!(id["iss"], provider.issuer().as_str(), "{echo}");
}

/// The claims of a JWT, or of the base64 JSON APISIX puts in `X-ID-Token`.
fn jwt_claims(token: &str) -> Value {
    use base64::Engine as _;
    let part = if token.contains('.') {
        token.split('.').nth(1).unwrap_or("")
    } else {
        token
    };
    let engines = [
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
    ];
    for e in engines {
        if let Ok(bytes) = e.decode(part.trim_end_matches('=')) {
            if let Ok(v) = serde_json::from_slice(&bytes) {
                return v;
            }
        }
    }
    panic!("not a JWT or base64 JSON: {token:.80}")
}
