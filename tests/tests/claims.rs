//! `claim_schema` through the real gateway (sidecar + Envoy with the
//! filter) and the real test provider: Keycloak's realm-role recipe on a
//! bearer route (JWKS and introspection) and on a login route (a browser
//! session), refusals as APISIX's (401 `invalid_token`), a schema change
//! that checks an already accepted token or session again, and the Admin
//! API refusing what the filter does not evaluate.

use std::time::Duration;

use integration_tests::browser::Browser;
use integration_tests::gateway::Gateway;
use integration_tests::http::request;
use integration_tests::provider::{PASSWORD, USER};
use integration_tests::{
    tutorial_route, wait_for, Httpbin, Provider, ProviderOptions, Response, TestDir,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);
/// The test provider's first realm role with `EXTRA_ROLES` (40 characters).
const ROLE_PREFIX: &str = "role-0001-";

/// Keycloak's realm-role recipe: `realm_access.roles` contains a role
/// (here by prefix, the one the test user has, or exactly `role`).
fn realm_role(role: Option<&str>) -> Value {
    let item = match role {
        Some(r) => json!({"const": r}),
        None => json!({"type": "string", "pattern": format!("^{ROLE_PREFIX}")}),
    };
    json!({
        "type": "object",
        "required": ["realm_access"],
        "properties": {"realm_access": {
            "type": "object",
            "required": ["roles"],
            "properties": {"roles": {"type": "array", "contains": item}}
        }}
    })
}

struct Stack {
    gw: Gateway,
    httpbin: Httpbin,
    provider: Provider,
    dir: TestDir,
}

impl Stack {
    fn start() -> Stack {
        let dir = TestDir::for_current_test();
        let provider = Provider::start(
            dir.path(),
            ProviderOptions {
                extra_roles: Some(2),
                ..Default::default()
            },
        );
        let httpbin = Httpbin::start(dir.path());
        let gw = Gateway::start(dir.path(), &[]);
        Stack {
            gw,
            httpbin,
            provider,
            dir,
        }
    }

    /// PUTs the tutorial route with `lines` and `"claim_schema": schema`.
    fn put_route(&self, lines: &str, schema: &Value) -> Response {
        let lines = format!("{lines}\n\"claim_schema\": {schema},");
        let body = tutorial_route(
            &lines,
            self.provider.client_secret(),
            &self.provider.discovery_url(),
            &format!("127.0.0.1:{}", self.httpbin.port),
            self.gw.proxy_port,
        );
        self.gw.admin("PUT", "/apisix/admin/routes", Some(&body))
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        let host = format!("localhost:{}", self.gw.proxy_port);
        let mut h = vec![("host", host.as_str())];
        h.extend_from_slice(headers);
        request("GET", &self.gw.url(path), &h, None).expect("the gateway answers")
    }

    /// Waits until `path` with `headers` answers `status` (a route change
    /// reaching Envoy).
    fn wait_status(
        &self,
        what: &str,
        path: &str,
        headers: &[(&str, &str)],
        status: u16,
    ) -> Response {
        wait_for(what, WAIT, || {
            let r = self.get(path, headers);
            (r.status == status).then_some(r)
        })
    }
}

fn assert_apisix_refusal(r: &Response) {
    assert_eq!(r.status, 401, "{}", r.body);
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with(
            "Bearer realm=\"apisix\", error=\"invalid_token\", error_description=\"claim_schema: "
        ),
        "APISIX's challenge: {challenge:?}"
    );
}

#[test]
fn realm_role_on_bearer_routes_jwks_and_introspection() {
    let s = Stack::start();
    let token = s.provider.password_grant()["access_token"]
        .as_str()
        .expect("an access token")
        .to_string();
    let auth = format!("Bearer {token}");
    let h = [("authorization", auth.as_str())];

    for (side, lines) in [
        ("jwks", "\"bearer_only\": true, \"use_jwks\": true,"),
        ("introspection", "\"bearer_only\": true,"),
    ] {
        // The user has the role: passes.
        let r = s.put_route(lines, &realm_role(None));
        assert!(r.status == 200 || r.status == 201, "{side}: {}", r.body);
        let ok = s.wait_status(&format!("{side}: the role passes"), "/anything/a", &h, 200);
        assert!(ok.json()["headers"]["X-Access-Token"].is_string(), "{side}");

        // The same token, now cached, on the route changed to a role the
        // user lacks: checked again, refused as APISIX refuses.
        let r = s.put_route(lines, &realm_role(Some("admin")));
        assert!(r.status == 200 || r.status == 201, "{side}: {}", r.body);
        let refused = s.wait_status(&format!("{side}: the missing role"), "/anything/a", &h, 401);
        assert_apisix_refusal(&refused);
        assert!(
            refused
                .header("www-authenticate")
                .unwrap_or_default()
                .contains("contains failed at /realm_access/roles"),
            "{side}: {:?}",
            refused.header("www-authenticate")
        );
        assert!(
            !refused.body.contains(&token),
            "{side}: the token is not echoed"
        );
    }
}

#[test]
fn the_admin_api_refuses_what_the_filter_does_not_evaluate() {
    let s = Stack::start();
    for (schema, named) in [
        (
            json!({"patternProperties": {"^x": {}}}),
            "keyword \\\"patternProperties\\\" is not supported",
        ),
        (
            json!({"properties": {"email": {"format": "email"}}}),
            "keyword \\\"format\\\" is not supported",
        ),
        (
            json!({"properties": {"email": {"pattern": "[a-z]+@x"}}}),
            "is not supported",
        ),
        (json!({"required": "sub"}), "must be an array of strings"),
    ] {
        let r = s.put_route("\"bearer_only\": true, \"use_jwks\": true,", &schema);
        assert_eq!(r.status, 400, "{schema}: {}", r.body);
        assert!(r.body.contains("claim_schema"), "{schema}: {}", r.body);
        assert!(r.body.contains(named), "{schema}: {}", r.body);
    }
    let r =
        s.gw.admin("GET", "/apisix/admin/routes/auth-with-oidc", None);
    assert_eq!(r.status, 404, "nothing was stored: {}", r.body);
}

#[test]
fn realm_role_on_a_login_route_checks_the_session_on_every_request() {
    let s = Stack::start();
    // The test provider puts realm_access into the ID token (as Keycloak
    // does with the roles mapper's "Add to ID token").
    let id_token_role = |role: Option<&str>| json!({"properties": {"id_token": realm_role(role)}});
    let lines = "\"bearer_only\": false,";
    let r = s.put_route(lines, &id_token_role(None));
    assert_eq!(r.status, 201, "{}", r.body);
    let html = [("accept", "text/html")];
    s.wait_status("the login route", "/anything/test", &html, 302);

    let browser = Browser::start(s.dir.path());
    browser.goto(&s.gw.url("/anything/test"));
    browser.wait_for_element("#kc-form-login", WAIT);
    browser.login(USER, PASSWORD);
    let want = format!("http://localhost:{}/anything/test", s.gw.proxy_port);
    browser.wait_for_url(WAIT, |u| u == want);
    let cookie = browser
        .cookies()
        .iter()
        .filter(|(n, _)| n == "session" || n.starts_with("session_"))
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    assert!(!cookie.is_empty(), "a session cookie");
    let with_session = [("cookie", cookie.as_str())];

    // The user has the role: the session is served.
    let r = s.get("/anything/next", &with_session);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["headers"]["X-Id-Token"].is_string());

    // The route now asks for a role the user lacks: the same session is
    // refused on its next request, as APISIX refuses it.
    let r = s.put_route(lines, &id_token_role(Some("admin")));
    assert_eq!(r.status, 200, "{}", r.body);
    let refused = s.wait_status("the missing role", "/anything/next", &with_session, 401);
    assert_apisix_refusal(&refused);

    // And served again once the rule admits it (the session was not ended).
    let r = s.put_route(lines, &id_token_role(None));
    assert_eq!(r.status, 200, "{}", r.body);
    s.wait_status("the role again", "/anything/next", &with_session, 200);
}
