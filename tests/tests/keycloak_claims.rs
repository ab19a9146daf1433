//! `claim_schema`'s Keycloak recipes (docs/claims.md) against a real
//! Keycloak, through the sidecar and the real Envoy (one Keycloak start).
//!
//! Realm role: `quickstart-user` has the realm role `quickstart-viewer`;
//! the client's service account (the client-credentials token) lacks it.
//! Both tokens are valid; only the schema tells them apart, on the JWKS
//! route and on the introspection route.
//!
//! Client role, group membership, e-mail domain: set up through Keycloak's
//! admin API (a client role `editor` of the tutorial client mapped to
//! `quickstart-user`, a group `/staff` with the "Group Membership" mapper
//! on the client and `quickstart-user` in it, a second user `other-user`
//! with neither and an address at `example.com.evil`, then at
//! `example.com` unverified), each checked on a bearer route (`use_jwks`).

use std::time::Duration;

use integration_tests::gateway::Gateway;
use integration_tests::keycloak::{Keycloak, CLIENT_SECRET};
use integration_tests::provider::{CLIENT_ID, PASSWORD, USER};
use integration_tests::{get, tutorial_route, wait_for, Httpbin, Response, TestDir};
use serde_json::{json, Value};

const OTHER_USER: &str = "other-user";
const OTHER_PASSWORD: &str = "other-user-pass-0123456789";

/// A user's access token (password grant, as the tutorial's client).
fn user_token(keycloak: &Keycloak, user: &str, password: &str) -> String {
    keycloak.token(&[
        ("grant_type", "password"),
        ("username", user),
        ("password", password),
        ("scope", "openid"),
    ])["access_token"]
        .as_str()
        .expect("the user's access token")
        .to_string()
}

/// The claims of a JWT (for the failure messages only: the gateway checks
/// the signature).
fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// The id at the end of a 201's `Location` (Keycloak's admin API).
fn created_id(r: &Response, what: &str) -> String {
    assert_eq!(r.status, 201, "{what}: {}", r.body);
    let location = r.header("location").expect("Location");
    location.rsplit('/').next().expect("an id").to_string()
}

/// The id of the one entity a search of the admin API returns.
fn only_id(r: &Response, what: &str) -> String {
    assert_eq!(r.status, 200, "{what}: {}", r.body);
    let found = r.json();
    let list = found.as_array().expect("a list");
    assert_eq!(list.len(), 1, "{what}: {found}");
    list[0]["id"].as_str().expect("id").to_string()
}

const JWKS: &str = "\"bearer_only\": true, \"use_jwks\": true,";
const INTROSPECTION: &str = "\"bearer_only\": true,";

/// Replaces the route by a bearer route (`bearer`: JWKS or introspection)
/// with `schema`, waits until Envoy denies `lacks` with `invalid_token`
/// naming `failed` (after the previous route is gone: the denial is this
/// route's), then checks that `has` passes.
#[allow(clippy::too_many_arguments)]
fn check_recipe(
    gw: &Gateway,
    keycloak: &Keycloak,
    node: &str,
    recipe: &str,
    bearer: &str,
    schema: &Value,
    has: &str,
    lacks: &str,
    failed: &str,
) {
    let lines = format!("{bearer} \"claim_schema\": {schema},");
    let body = tutorial_route(
        &lines,
        CLIENT_SECRET,
        &keycloak.discovery_url(),
        node,
        gw.proxy_port,
    );
    let call = |token: &str| -> Response {
        let auth = format!("Bearer {token}");
        get(&gw.url("/anything/test"), &[("authorization", &auth)]).expect("the gateway answers")
    };
    // Delete the previous route and wait until Envoy has no route (404),
    // so that the denial below comes from this one.
    let r = gw.admin("DELETE", "/apisix/admin/routes/auth-with-oidc", None);
    assert_eq!(r.status, 200, "{recipe}: {}", r.body);
    wait_for(
        &format!("{recipe}: the previous route gone"),
        Duration::from_secs(10),
        || (call(lacks).status == 404).then_some(()),
    );
    let r = gw.admin("PUT", "/apisix/admin/routes", Some(&body));
    assert!(r.status == 200 || r.status == 201, "{recipe}: {}", r.body);
    let expected = format!("claim_schema: {failed}");
    let denied = wait_for(
        &format!(
            "{recipe}: the route denies the token without the claim ({})",
            claims(lacks)
        ),
        Duration::from_secs(10),
        || {
            let r = call(lacks);
            let challenge = r.header("www-authenticate").unwrap_or_default();
            (r.status == 401 && challenge.contains(&expected)).then_some(r)
        },
    );
    let challenge = denied.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer") && challenge.contains("error=\"invalid_token\""),
        "{recipe}: {challenge:?}"
    );
    let ok = call(has);
    assert_eq!(
        ok.status,
        200,
        "{recipe}: the token with the claim ({}): {}",
        claims(has),
        ok.body
    );
    assert_eq!(ok.json()["headers"]["X-Access-Token"], has, "{recipe}");
}

#[test]
fn keycloak_recipes_against_keycloak() {
    let dir = TestDir::for_current_test();
    let keycloak = Keycloak::start(dir.path());
    eprintln!("Keycloak started in {:?}", keycloak.startup);
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

    // The other recipes: set Keycloak up through its admin API.
    let admin = keycloak.admin_token();
    let client = only_id(
        &keycloak.admin(
            &admin,
            "GET",
            &format!("/clients?clientId={CLIENT_ID}"),
            None,
        ),
        "the tutorial client",
    );
    let quickstart = only_id(
        &keycloak.admin(
            &admin,
            "GET",
            &format!("/users?username={USER}&exact=true"),
            None,
        ),
        "quickstart-user",
    );
    // Client role `editor` of the tutorial client, mapped to quickstart-user.
    let r = keycloak.admin(
        &admin,
        "POST",
        &format!("/clients/{client}/roles"),
        Some(&json!({"name": "editor"})),
    );
    assert_eq!(r.status, 201, "the client role: {}", r.body);
    let r = keycloak.admin(
        &admin,
        "GET",
        &format!("/clients/{client}/roles/editor"),
        None,
    );
    assert_eq!(r.status, 200, "the client role: {}", r.body);
    let r = keycloak.admin(
        &admin,
        "POST",
        &format!("/users/{quickstart}/role-mappings/clients/{client}"),
        Some(&json!([r.json()])),
    );
    assert_eq!(r.status, 204, "the role mapping: {}", r.body);
    // Group `/staff`, quickstart-user in it, and the "Group Membership"
    // mapper on the client (full path, access token).
    let staff = created_id(
        &keycloak.admin(&admin, "POST", "/groups", Some(&json!({"name": "staff"}))),
        "the group",
    );
    let r = keycloak.admin(
        &admin,
        "PUT",
        &format!("/users/{quickstart}/groups/{staff}"),
        None,
    );
    assert_eq!(r.status, 204, "the membership: {}", r.body);
    let r = keycloak.admin(
        &admin,
        "POST",
        &format!("/clients/{client}/protocol-mappers/models"),
        Some(&json!({
            "name": "groups",
            "protocol": "openid-connect",
            "protocolMapper": "oidc-group-membership-mapper",
            "config": {
                "claim.name": "groups",
                "full.path": "true",
                "access.token.claim": "true",
                "id.token.claim": "true",
                "introspection.token.claim": "true",
                "userinfo.token.claim": "true"
            }
        })),
    );
    assert_eq!(r.status, 201, "the group mapper: {}", r.body);
    // A second user with neither, and an address at a look-alike domain.
    let other = created_id(
        &keycloak.admin(
            &admin,
            "POST",
            "/users",
            Some(&json!({
                "username": OTHER_USER,
                "enabled": true,
                "firstName": "Other",
                "lastName": "User",
                "email": "other-user@example.com.evil",
                "emailVerified": true,
                "credentials": [{"type": "password", "value": OTHER_PASSWORD, "temporary": false}]
            })),
        ),
        "the second user",
    );

    let user = user_token(&keycloak, USER, PASSWORD);
    let other_token = user_token(&keycloak, OTHER_USER, OTHER_PASSWORD);
    // What Keycloak put in the tokens (the gateway's verdicts below are
    // on these claims).
    let has = claims(&user);
    assert_eq!(
        has["resource_access"][CLIENT_ID]["roles"],
        json!(["editor"])
    );
    assert_eq!(has["groups"], json!(["/staff"]));
    assert_eq!(has["email"], "quickstart-user@example.com");
    assert_eq!(has["email_verified"], true);
    let lacks = claims(&other_token);
    assert!(lacks["resource_access"].is_object(), "{lacks}");
    assert!(lacks["resource_access"].get(CLIENT_ID).is_none(), "{lacks}");
    assert!(lacks.get("groups").is_none(), "{lacks}");

    let client_role = json!({
        "required": ["resource_access"],
        "properties": {"resource_access": {
            "required": [CLIENT_ID],
            "properties": {CLIENT_ID: {
                "required": ["roles"],
                "properties": {"roles": {"contains": {"const": "editor"}}}
            }}
        }}
    });
    check_recipe(
        &gw,
        &keycloak,
        &node,
        "client role",
        JWKS,
        &client_role,
        &user,
        &other_token,
        "required failed at /resource_access",
    );

    let groups = json!({
        "required": ["groups"],
        "properties": {"groups": {"type": "array", "contains": {"enum": ["/staff", "/admins"]}}}
    });
    check_recipe(
        &gw,
        &keycloak,
        &node,
        "group",
        JWKS,
        &groups,
        &user,
        &other_token,
        // Keycloak leaves `groups` out for a user in no group.
        "required failed at /",
    );
    // In another group: `groups` is there, without `/staff`.
    let guests = created_id(
        &keycloak.admin(&admin, "POST", "/groups", Some(&json!({"name": "guests"}))),
        "the second group",
    );
    let r = keycloak.admin(
        &admin,
        "PUT",
        &format!("/users/{other}/groups/{guests}"),
        None,
    );
    assert_eq!(r.status, 204, "the second membership: {}", r.body);
    let guest_token = user_token(&keycloak, OTHER_USER, OTHER_PASSWORD);
    assert_eq!(claims(&guest_token)["groups"], json!(["/guests"]));
    check_recipe(
        &gw,
        &keycloak,
        &node,
        "group (another one)",
        JWKS,
        &groups,
        &user,
        &guest_token,
        "contains failed at /groups",
    );
    // The same on an introspection route (the mapper's "Add to token
    // introspection" is on).
    check_recipe(
        &gw,
        &keycloak,
        &node,
        "group (introspection)",
        INTROSPECTION,
        &groups,
        &user,
        &guest_token,
        "contains failed at /groups",
    );

    let email = json!({
        "required": ["email", "email_verified"],
        "properties": {
            "email": {"type": "string", "pattern": "@example\\.com$"},
            "email_verified": {"const": true}
        }
    });
    check_recipe(
        &gw,
        &keycloak,
        &node,
        "e-mail domain",
        JWKS,
        &email,
        &user,
        &other_token,
        "pattern failed at /email",
    );
    // The right domain, unverified.
    let r = keycloak.admin(
        &admin,
        "PUT",
        &format!("/users/{other}"),
        Some(&json!({"email": "other-user@example.com", "emailVerified": false})),
    );
    assert_eq!(r.status, 204, "the second user's address: {}", r.body);
    let unverified = user_token(&keycloak, OTHER_USER, OTHER_PASSWORD);
    check_recipe(
        &gw,
        &keycloak,
        &node,
        "e-mail verified",
        JWKS,
        &email,
        &user,
        &unverified,
        "const failed at /email_verified",
    );
}
