//! `claim_schema`'s realm-role recipe (docs/claims.md) against a real
//! Keycloak, through the sidecar and the real Envoy: `quickstart-user` has
//! the realm role `quickstart-viewer`; the client's service account (the
//! client-credentials token) lacks it. Both tokens are valid; only the
//! schema tells them apart, on the JWKS route and on the introspection
//! route.

use std::time::Duration;

use integration_tests::gateway::Gateway;
use integration_tests::keycloak::{Keycloak, CLIENT_SECRET};
use integration_tests::provider::{PASSWORD, USER};
use integration_tests::{get, tutorial_route, wait_for, Httpbin, Response, TestDir};
use serde_json::json;

#[test]
fn realm_role_recipe_against_keycloak() {
    let dir = TestDir::for_current_test();
    let keycloak = Keycloak::start(dir.path());
    let httpbin = Httpbin::start(dir.path());
    let gw = Gateway::start(dir.path(), &[]);
    let node = format!("127.0.0.1:{}", httpbin.port);

    let schema = json!({
        "type": "object",
        "required": ["realm_access"],
        "properties": {"realm_access": {
            "type": "object",
            "required": ["roles"],
            "properties": {"roles": {"type": "array", "contains": {"const": "quickstart-viewer"}}}
        }}
    });
    let user = keycloak.token(&[
        ("grant_type", "password"),
        ("username", USER),
        ("password", PASSWORD),
        ("scope", "openid"),
    ])["access_token"]
        .as_str()
        .expect("the user's access token")
        .to_string();
    let service = keycloak.token(&[("grant_type", "client_credentials")])["access_token"]
        .as_str()
        .expect("the service account's access token")
        .to_string();

    let call = |token: &str| -> Response {
        let auth = format!("Bearer {token}");
        get(&gw.url("/anything/test"), &[("authorization", &auth)]).expect("the gateway answers")
    };

    for (side, lines) in [
        ("jwks", "\"bearer_only\": true, \"use_jwks\": true,"),
        ("introspection", "\"bearer_only\": true,"),
    ] {
        let lines = format!("{lines} \"claim_schema\": {schema},");
        let body = tutorial_route(
            &lines,
            CLIENT_SECRET,
            &keycloak.discovery_url(),
            &node,
            gw.proxy_port,
        );
        let r = gw.admin("PUT", "/apisix/admin/routes", Some(&body));
        assert!(r.status == 200 || r.status == 201, "{side}: {}", r.body);

        // The user with the role passes (once the route reached Envoy).
        let ok = wait_for(
            &format!("{side}: the route"),
            Duration::from_secs(10),
            || {
                let r = call(&user);
                (r.status == 200).then_some(r)
            },
        );
        assert_eq!(
            ok.json()["headers"]["X-Access-Token"],
            user.as_str(),
            "{side}"
        );

        // The service account, valid but without the role: APISIX's 401.
        let r = call(&service);
        assert_eq!(r.status, 401, "{side}: {}", r.body);
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains("error=\"invalid_token\"")
                && challenge.contains("claim_schema: contains failed at /realm_access/roles"),
            "{side}: {challenge:?}"
        );
    }
}
