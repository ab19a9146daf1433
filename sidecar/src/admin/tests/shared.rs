//! Services, plugin configs and global rules on the Admin API.

use super::*;

fn login_plugin(extra: Value) -> Value {
    let mut p = json!({
        "client_id": "apisix-quickstart-client",
        "client_secret": CLIENT_SECRET,
        "discovery": "http://127.0.0.1:8080/realms/quickstart-realm/.well-known/openid-configuration",
        "redirect_uri": "http://app.example/a/callback"
    });
    merge_patch(&mut p, &extra);
    p
}

fn service() -> Value {
    json!({"name": "app", "plugins": {"openid-connect": login_plugin(json!({}))},
           "upstream": upstream_body(), "hosts": ["app.example"]})
}

/// The published (merged) form of route `id`.
fn running(api: &Api, id: &str) -> Option<crate::apisix::route::RouteSpec> {
    api.rx.borrow().enabled().find(|r| r.id == id).cloned()
}

fn error_msg(a: &Answer) -> String {
    a.body["error_msg"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn routes_take_in_their_service() {
    let api = Api::new().await;
    let a = api.put("/apisix/admin/services/s1", &service()).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["key"], "/apisix/services/s1");
    // Secrets redacted in answers, a session secret generated once and
    // stored on the service.
    let shown = &a.body["value"]["plugins"]["openid-connect"];
    assert_eq!(shown["client_secret"], REDACTED);
    assert_eq!(shown["session"]["secret"], REDACTED);
    let stored = api.snapshot().services["s1"].clone();
    let secret = session_secret(&stored).unwrap();
    assert!(secret.len() >= 16);

    for (id, uri) in [("r1", "/a/*"), ("r2", "/b/*")] {
        let a = api
            .put(
                &format!("/apisix/admin/routes/{id}"),
                &json!({"uri": uri, "service_id": "s1"}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        // The route is stored as sent, not merged.
        assert_eq!(a.body["value"].get("plugins"), None);
    }
    let (r1, r2) = (running(&api, "r1").unwrap(), running(&api, "r2").unwrap());
    for r in [&r1, &r2] {
        assert_eq!(r.hosts, vec!["app.example"]);
        assert_eq!(r.upstream.nodes.len(), 1);
        let (conf, _) = r.oidc.as_ref().unwrap();
        assert_eq!(conf["session"]["secret"], secret.as_str());
    }
    // A rewrite of the service keeps its secret; the change reaches both
    // routes.
    let mut again = service();
    again["plugins"]["openid-connect"]["scope"] = json!("openid email");
    let a = api.put("/apisix/admin/services/s1", &again).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        session_secret(&api.snapshot().services["s1"]).unwrap(),
        secret
    );
    for id in ["r1", "r2"] {
        let (conf, _) = running(&api, id).unwrap().oidc.unwrap();
        assert_eq!(conf["scope"], "openid email");
    }
    // GET and the list.
    let a = api.call("GET", "/apisix/admin/services", None).await;
    assert_eq!(a.body["total"], 1);
    assert_eq!(
        a.body["list"][0]["value"]["plugins"]["openid-connect"]["client_secret"],
        REDACTED
    );
}

#[tokio::test]
async fn references_are_checked_and_uses_block_deletes() {
    let mut api = Api::new().await;
    // Unknown ids: refused, naming them.
    let a = api
        .put(
            "/apisix/admin/routes/r1",
            &json!({"uri": "/a/*", "service_id": "s1", "plugin_config_id": "pc"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let msg = error_msg(&a);
    assert!(
        msg.contains("failed to fetch service info by service id [s1], response code: 404"),
        "{msg}"
    );
    assert!(
        msg.contains(
            "failed to fetch plugin config info by plugin config id [pc], response code: 404"
        ),
        "{msg}"
    );
    api.assert_unchanged(&Stored::default());
    let a = api
        .put("/apisix/admin/services/s1", &json!({"upstream_id": "u9"}))
        .await;
    assert!(
        error_msg(&a).contains("failed to fetch upstream info by upstream id [u9]"),
        "{}",
        a.body
    );

    api.put("/apisix/admin/upstreams/u1", &upstream_body())
        .await;
    let a = api
        .put(
            "/apisix/admin/services/s1",
            &json!({"upstream_id": "u1", "hosts": ["app.example"]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let a = api
        .put(
            "/apisix/admin/plugin_configs/pc",
            &json!({"plugins": {"openid-connect": login_plugin(json!({"bearer_only": true}))}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["key"], "/apisix/plugin_configs/pc");
    for id in ["r1", "r2"] {
        let a = api
            .put(
                &format!("/apisix/admin/routes/{id}"),
                &json!({"uri": format!("/{id}/*"), "service_id": "s1", "plugin_config_id": "pc"}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }
    let r1 = running(&api, "r1").unwrap();
    assert!(r1.oidc.unwrap().1.bearer_only);

    api.published_all();
    let before = api.snapshot();
    for (uri, want) in [
        (
            "/apisix/admin/services/s1",
            "can not delete this service directly, routes [r1], [r2] are still using it now",
        ),
        (
            "/apisix/admin/plugin_configs/pc",
            "can not delete this plugin config, routes [r1], [r2] are still using it now",
        ),
        (
            "/apisix/admin/upstreams/u1",
            "can not delete this upstream, service [s1] is still using it now",
        ),
    ] {
        let a = api.call("DELETE", uri, None).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(a.body, json!({"error_msg": want}));
        api.assert_unchanged(&before);
    }

    // A change that would break a route using it: refused, naming the
    // route; nothing changes.
    let a = api
        .call(
            "PATCH",
            "/apisix/admin/services/s1",
            Some(r#"{"upstream_id": null}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let msg = error_msg(&a);
    assert!(
        msg.contains("route [r1] uses this service and would not be valid"),
        "{msg}"
    );
    assert!(msg.contains("property \"upstream\" is required"), "{msg}");
    api.assert_unchanged(&before);
    // A plugin config that would make a login route without an absolute
    // redirect URI on a host-less route... here: one that does not parse.
    let a = api
        .put(
            "/apisix/admin/plugin_configs/pc",
            &json!({"plugins": {"openid-connect": {"client_id": "x"}}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        error_msg(&a).contains("plugins.openid-connect.discovery"),
        "{}",
        a.body
    );
    api.assert_unchanged(&before);

    // Once unused, they go.
    for uri in [
        "/apisix/admin/routes/r1",
        "/apisix/admin/routes/r2",
        "/apisix/admin/plugin_configs/pc",
        "/apisix/admin/services/s1",
        "/apisix/admin/upstreams/u1",
    ] {
        let a = api.call("DELETE", uri, None).await;
        assert_eq!(a.status, StatusCode::OK, "{uri}: {}", a.body);
    }
}

#[tokio::test]
async fn a_route_overriding_its_services_plugin_does_not_drop_protection() {
    let api = Api::new().await;
    api.put("/apisix/admin/services/s1", &service()).await;
    // APISIX replaces a plugin's config whole, per plugin name: a partial
    // config on the route is not merged into the service's, so it lacks
    // what the plugin needs and is refused, naming it.
    let a = api
        .put(
            "/apisix/admin/routes/r1",
            &json!({"uri": "/a/*", "service_id": "s1",
                    "plugins": {"openid-connect": {"bearer_only": true}}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let msg = error_msg(&a);
    assert!(
        msg.contains("property \"plugins.openid-connect.client_id\""),
        "{msg}"
    );
    // `plugins: {}` keeps the service's.
    let a = api
        .put(
            "/apisix/admin/routes/r1",
            &json!({"uri": "/a/*", "service_id": "s1", "plugins": {}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert!(running(&api, "r1").unwrap().oidc.is_some());
    // A PATCH removing the route's own config falls back to the service's.
    let own = json!({"plugins": {"openid-connect": login_plugin(json!({"bearer_only": true}))}});
    let a = api
        .call("PATCH", "/apisix/admin/routes/r1", Some(&own.to_string()))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(running(&api, "r1").unwrap().oidc.unwrap().1.bearer_only);
    let a = api
        .call(
            "PATCH",
            "/apisix/admin/routes/r1",
            Some(r#"{"plugins": {"openid-connect": null}}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let (_, conf) = running(&api, "r1").unwrap().oidc.unwrap();
    assert!(!conf.bearer_only);
    // Unknown plugins are refused on services as on routes.
    let a = api
        .put(
            "/apisix/admin/services/s2",
            &json!({"plugins": {"key-auth": {}}}),
        )
        .await;
    assert!(
        error_msg(&a).contains("property \"plugins.key-auth\""),
        "{}",
        a.body
    );
}

#[tokio::test]
async fn global_rules_reach_every_route_and_refuse_a_second_config() {
    let mut api = Api::new().await;
    let bearer = json!({"plugins": {"openid-connect": login_plugin(json!({"bearer_only": true}))}});
    let a = api
        .put(
            "/apisix/admin/routes/plain",
            &json!({"uri": "/p/*", "upstream": upstream_body()}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let a = api
        .put(
            "/apisix/admin/routes/own",
            &json!({"uri": "/o/*", "upstream": upstream_body(),
                    "plugins": {"openid-connect": login_plugin(json!({"bearer_only": true}))}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    api.published_all();
    let before = api.snapshot();
    // A route has its own openid-connect config: APISIX would run both.
    let a = api.put("/apisix/admin/global_rules/g1", &bearer).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let msg = error_msg(&a);
    assert!(msg.contains("route [own] uses this global rule"), "{msg}");
    assert!(msg.contains("global rule [g1]"), "{msg}");
    api.assert_unchanged(&before);

    api.call("DELETE", "/apisix/admin/routes/own", None).await;
    let a = api.put("/apisix/admin/global_rules/g1", &bearer).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["key"], "/apisix/global_rules/g1");
    assert_eq!(
        a.body["value"]["plugins"]["openid-connect"]["client_secret"],
        REDACTED
    );
    assert!(running(&api, "plain").unwrap().oidc.is_some());
    // A new route with its own config is refused, naming the rule.
    let a = api
        .put(
            "/apisix/admin/routes/own",
            &json!({"uri": "/o/*", "upstream": upstream_body(),
                    "plugins": {"openid-connect": login_plugin(json!({}))}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(error_msg(&a).contains("global rule [g1]"), "{}", a.body);
    // A second rule with the same plugin.
    let a = api.put("/apisix/admin/global_rules/g2", &bearer).await;
    assert!(
        error_msg(&a).contains("already set by global rule [g1]"),
        "{}",
        a.body
    );
    // Global rules need plugins and take nothing else.
    let a = api
        .put("/apisix/admin/global_rules/g3", &json!({"name": "x"}))
        .await;
    let msg = error_msg(&a);
    assert!(msg.contains("property \"plugins\" is required"), "{msg}");
    assert!(msg.contains("property \"name\" is not allowed"), "{msg}");
    // Deleting the rule takes its plugin off every route.
    let a = api
        .call("DELETE", "/apisix/admin/global_rules/g1", None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(running(&api, "plain").unwrap().oidc.is_none());
}

#[tokio::test]
async fn post_generates_ids_for_services_only() {
    let api = Api::new().await;
    let a = api
        .call("POST", "/apisix/admin/services", Some(r#"{"plugins": {}}"#))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let key = a.body["key"].as_str().unwrap();
    assert!(key.starts_with("/apisix/services/"), "{key}");
    // APISIX: `unsupported_methods = {"post"}`.
    for (kind, noun) in [
        ("plugin_configs", "plugin config"),
        ("global_rules", "global rule"),
    ] {
        let a = api
            .call(
                "POST",
                &format!("/apisix/admin/{kind}"),
                Some(r#"{"plugins": {}}"#),
            )
            .await;
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{kind}");
        assert_eq!(
            a.body,
            json!({"error_msg": format!("not supported `POST` method for {noun}")})
        );
    }
}

#[test]
fn sub_paths_replace_what_they_name() {
    let segs = |p: &str| p.split('/').map(str::to_string).collect::<Vec<_>>();
    let mut v = json!({"uri": "/a", "plugins": {"openid-connect": {"scope": "openid"}},
                       "upstream": {"nodes": {"10.0.0.1:80": 1}}, "methods": ["GET"]});
    patch_sub_path(
        &mut v,
        &segs("plugins/openid-connect/scope"),
        json!("openid email"),
    )
    .unwrap();
    assert_eq!(v["plugins"]["openid-connect"]["scope"], "openid email");
    // Replaced, not merged.
    patch_sub_path(&mut v, &segs("upstream/nodes"), json!({"10.0.0.2:80": 1})).unwrap();
    assert_eq!(v["upstream"]["nodes"], json!({"10.0.0.2:80": 1}));
    patch_sub_path(&mut v, &segs("methods"), json!(["POST"])).unwrap();
    assert_eq!(v["methods"], json!(["POST"]));
    // Missing objects on the way are made.
    patch_sub_path(&mut v, &segs("labels/team"), json!("x")).unwrap();
    assert_eq!(v["labels"], json!({"team": "x"}));
    // Through something that is not an object: refused, naming the path.
    let before = v.clone();
    assert_eq!(
        patch_sub_path(&mut v, &segs("uri/x"), json!(1)).unwrap_err(),
        "invalid sub-path: /uri"
    );
    assert_eq!(
        patch_sub_path(&mut v, &segs("methods/0"), json!("PUT")).unwrap_err(),
        "invalid sub-path: /methods"
    );
    assert_eq!(
        patch_sub_path(&mut v, &segs("plugins/openid-connect/scope/x"), json!(1)).unwrap_err(),
        "invalid sub-path: /plugins/openid-connect/scope"
    );
    assert_eq!(v, before);
    // A trailing slash replaces the whole object, as APISIX.
    patch_sub_path(&mut v, &segs("plugins/"), json!({"uri": "/b"})).unwrap();
    assert_eq!(v, json!({"uri": "/b"}));
}

#[tokio::test]
async fn patch_a_sub_path_then_validate_as_a_put() {
    let mut api = Api::new().await;
    let route = oidc_route(json!({"bearer_only": true}));
    let a = api.put("/apisix/admin/routes/r1", &route).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let secret = api.stored("r1").unwrap()["plugins"]["openid-connect"]["client_secret"].clone();

    let a = api
        .call(
            "PATCH",
            "/apisix/admin/routes/r1/plugins/openid-connect/scope",
            Some(r#""openid email""#),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["key"], "/apisix/routes/r1");
    assert_eq!(
        a.body["value"]["plugins"]["openid-connect"]["scope"],
        "openid email"
    );
    assert_eq!(
        a.body["value"]["plugins"]["openid-connect"]["client_secret"],
        REDACTED
    );
    let stored = api.stored("r1").unwrap();
    assert_eq!(stored["plugins"]["openid-connect"]["client_secret"], secret);
    assert_eq!(stored["uri"], "/anything/*");
    for (path, body) in [
        ("methods", r#"["GET", "POST"]"#),
        ("upstream/nodes", r#"{"192.0.2.9:80": 1}"#),
        ("plugins/openid-connect/client_secret", r#""******""#),
    ] {
        let a = api
            .call(
                "PATCH",
                &format!("/apisix/admin/routes/r1/{path}"),
                Some(body),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
    }
    let stored = api.stored("r1").unwrap();
    assert_eq!(stored["methods"], json!(["GET", "POST"]));
    assert_eq!(stored["upstream"]["nodes"], json!({"192.0.2.9:80": 1}));
    assert_eq!(stored["plugins"]["openid-connect"]["client_secret"], secret);
    assert_eq!(stored["update_time"], T0);

    // Refusals change nothing.
    api.published_all();
    let before = api.snapshot();
    for (path, body, status, want) in [
        (
            "methods",
            Some(r#"["FETCH"]"#),
            StatusCode::BAD_REQUEST,
            "property \"methods\"",
        ),
        (
            "uri/x",
            Some("1"),
            StatusCode::BAD_REQUEST,
            "invalid sub-path: /uri",
        ),
        (
            "plugins/openid-connect/scope",
            None,
            StatusCode::BAD_REQUEST,
            "missing new configuration",
        ),
        (
            "plugins/key-auth",
            Some("{}"),
            StatusCode::BAD_REQUEST,
            "plugins.key-auth",
        ),
        (
            "id",
            Some(r#""r2""#),
            StatusCode::BAD_REQUEST,
            "property \"id\"",
        ),
    ] {
        let a = api
            .call("PATCH", &format!("/apisix/admin/routes/r1/{path}"), body)
            .await;
        assert_eq!(a.status, status, "{path}: {}", a.body);
        assert!(error_msg(&a).contains(want), "{path}: {}", a.body);
        api.assert_unchanged(&before);
    }
    let a = api
        .call(
            "PATCH",
            "/apisix/admin/routes/nope/methods",
            Some(r#"["GET"]"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.body, json!({"message": "Key not found"}));

    // On the other kinds too: a service's plugin reaches its routes.
    api.put("/apisix/admin/services/s1", &service()).await;
    api.put(
        "/apisix/admin/routes/r2",
        &json!({"uri": "/b/*", "service_id": "s1"}),
    )
    .await;
    let a = api
        .call(
            "PATCH",
            "/apisix/admin/services/s1/plugins/openid-connect/bearer_only",
            Some("true"),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(running(&api, "r2").unwrap().oidc.unwrap().1.bearer_only);
    let a = api
        .call(
            "PATCH",
            "/apisix/admin/upstreams/u1/nodes",
            Some(r#"{"192.0.2.1:1": 1}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn login_routes_whose_cookies_clash_are_warned_about() {
    let api = Api::new().await;
    api.put("/apisix/admin/services/s1", &service()).await;
    for (id, uri) in [("a", "/a/*"), ("b", "/b/*")] {
        let a = api
            .put(
                &format!("/apisix/admin/routes/{id}"),
                &json!({"uri": uri, "service_id": "s1"}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }
    // One service: one config, one session.
    assert!(api.rx.borrow().warnings().is_empty());
    // Another client on the same host, with the default cookie.
    let other = json!({"uri": "/c/*", "hosts": ["app.example"], "upstream": upstream_body(),
                       "plugins": {"openid-connect": login_plugin(json!({"client_id": "other"}))}});
    let a = api.put("/apisix/admin/routes/c", &other).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let warnings = api.rx.borrow().warnings().to_vec();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("routes [a] and [c]"), "{warnings:?}");
    assert!(warnings[0].contains("\"session\""), "{warnings:?}");
    assert!(!warnings[0].contains(CLIENT_SECRET), "{warnings:?}");
    // Its own cookie name: no clash.
    let mut own = other.clone();
    own["plugins"]["openid-connect"]["session"] = json!({"cookie_name": "other_session"});
    let a = api.put("/apisix/admin/routes/c", &own).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(api.rx.borrow().warnings().is_empty());
    // Nor on disjoint paths or hosts.
    let mut elsewhere = other.clone();
    elsewhere["hosts"] = json!(["other.example"]);
    api.put("/apisix/admin/routes/c", &elsewhere).await;
    assert!(api.rx.borrow().warnings().is_empty());
}

#[tokio::test]
async fn shared_objects_are_checked_against_the_latest() {
    let (store, a, b, _, _) = two_sidecars().await;
    let s = json!({"upstream": upstream_body()}).to_string();
    call_on(&a, "PUT", "/apisix/admin/services/s", Some(&s)).await;
    // B still sees s when A deletes it: B's route naming s is refused.
    store.watching(1, false);
    let d = call_on(&a, "DELETE", "/apisix/admin/services/s", None).await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    store.watching(1, true);
    let r = call_on(
        &b,
        "PUT",
        "/apisix/admin/routes/r",
        Some(r#"{"uri": "/", "service_id": "s"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(store.now().data.routes.is_empty());

    // B sees no route using s2 when A creates one: B cannot delete s2.
    call_on(&a, "PUT", "/apisix/admin/services/s2", Some(&s)).await;
    store.watching(1, false);
    let r = call_on(
        &a,
        "PUT",
        "/apisix/admin/routes/r",
        Some(r#"{"uri": "/", "service_id": "s2"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    store.watching(1, true);
    let d = call_on(&b, "DELETE", "/apisix/admin/services/s2", None).await;
    assert_eq!(d.status, StatusCode::BAD_REQUEST, "{}", d.body);
    assert!(store.now().data.services.contains_key("s2"));

    // B does not see A's route with its own openid-connect config: B's
    // global rule with one is decided again and refused.
    store.watching(1, false);
    let own = json!({"uri": "/o", "upstream": upstream_body(),
                     "plugins": {"openid-connect": login_plugin(json!({"bearer_only": true}))}});
    let r = call_on(
        &a,
        "PUT",
        "/apisix/admin/routes/own",
        Some(&own.to_string()),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    store.watching(1, true);
    let g = json!({"plugins": {"openid-connect": login_plugin(json!({"bearer_only": true}))}});
    let r = call_on(
        &b,
        "PUT",
        "/apisix/admin/global_rules/g",
        Some(&g.to_string()),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(error_msg_of(&r.body).contains("route [own]"), "{}", r.body);
    assert!(store.now().data.global_rules.is_empty());
}

fn error_msg_of(body: &Value) -> String {
    body["error_msg"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_route_whose_service_is_gone_is_left_out_not_served_unprotected() {
    // As an etcd written by something else can hold: the service that
    // protected the route was deleted under it.
    let mut stored = Stored::default();
    stored.routes.insert(
        "r".into(),
        json!({"id": "r", "uri": "/a", "service_id": "s", "upstream": upstream_body()}),
    );
    let table = RouteTable::build(stored.clone());
    assert_eq!(table.enabled().count(), 0);
    let (id, why) = &table.invalid()[0];
    assert_eq!(id, "r");
    assert!(why.contains("service id [s]"), "{why}");
    // With it, the route is served with its plugin.
    stored.services.insert(
        "s".into(),
        json!({"id": "s", "plugins": {"openid-connect": login_plugin(json!({"bearer_only": true}))}}),
    );
    let table = RouteTable::build(stored);
    assert!(table.enabled().next().unwrap().oidc.is_some());
}
