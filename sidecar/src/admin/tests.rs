use super::*;
use crate::apisix::secrets::REDACTED;
use crate::store::{MemoryStore, Routes, StoreError, StoreFuture};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tower::ServiceExt;

mod shared;
mod ssl;

const T0: u64 = 1_700_000_000;

/// A request as it arrives over a socket from `client`.
fn request_from(client: SocketAddr, method: &str, uri: &str, body: Option<&str>) -> Request {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        // What `curl -d` sends.
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body.unwrap_or("").to_string()))
        .unwrap();
    req.extensions_mut().insert(ConnectInfo(client));
    req
}

fn local() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000)
}

/// A store whose saves can be made to fail.
#[derive(Default)]
struct FlakyStore {
    inner: MemoryStore,
    fail: AtomicBool,
}

impl Store for FlakyStore {
    fn load(&self) -> StoreFuture<'_, Versioned> {
        self.inner.load()
    }
    fn write<'a>(&'a self, write: &'a Write, next: &'a Stored) -> StoreFuture<'a, Written> {
        if self.fail.load(Ordering::SeqCst) {
            return Box::pin(async { Err(StoreError::Other("disk full (test)".into())) });
        }
        self.inner.write(write, next)
    }
}

struct Api {
    state: AdminState,
    app: Router,
    store: Arc<FlakyStore>,
    rx: watch::Receiver<Published>,
    now: Arc<AtomicU64>,
}

struct Answer {
    status: StatusCode,
    body: Value,
}

impl Api {
    async fn new() -> Api {
        Api::with(AdminSettings::default(), Routes::new()).await
    }

    async fn with(settings: AdminSettings, routes: Routes) -> Api {
        let store = Arc::new(FlakyStore::default());
        store.inner.set(&Stored::with_routes(routes));
        let now = Arc::new(AtomicU64::new(T0));
        let clock_now = now.clone();
        let clock: Clock = Arc::new(move || clock_now.load(Ordering::SeqCst));
        let state = AdminState::with_clock(store.clone(), settings, clock)
            .await
            .unwrap();
        let mut rx = state.subscribe();
        rx.borrow_and_update();
        Api {
            app: router(state.clone(), Router::new()),
            state,
            store,
            rx,
            now,
        }
    }

    async fn send(&self, req: Request) -> Answer {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        if status != StatusCode::METHOD_NOT_ALLOWED {
            assert_eq!(
                resp.headers().get("content-type").unwrap(),
                "application/json"
            );
        }
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Answer { status, body }
    }

    async fn call(&self, method: &str, uri: &str, body: Option<&str>) -> Answer {
        self.send(request_from(local(), method, uri, body)).await
    }

    async fn put(&self, uri: &str, body: &Value) -> Answer {
        self.call("PUT", uri, Some(&body.to_string())).await
    }

    /// The stored object, as saved.
    fn stored(&self, id: &str) -> Option<Value> {
        self.store.inner.routes().get(id).cloned()
    }

    /// What was saved, what is published and what GET shows agree, and
    /// say whether something was published since the last look; the
    /// published routes.
    fn published(&mut self) -> (bool, Routes) {
        let (changed, set) = self.published_all();
        (changed, set.routes.clone())
    }

    /// [`Api::published`] with the upstreams.
    fn published_all(&mut self) -> (bool, Stored) {
        let changed = self.rx.has_changed().unwrap();
        let table = self.rx.borrow_and_update().clone();
        assert_eq!(*table.stored(), self.store.inner.data());
        assert_eq!(*table.stored(), self.state.routes());
        (changed, table.stored().clone())
    }

    /// Asserts a refused call left everything as it was.
    fn assert_unchanged(&mut self, before: &Stored) {
        let (changed, set) = self.published_all();
        assert!(!changed, "a refused call published something");
        assert_eq!(set, *before);
    }

    fn snapshot(&self) -> Stored {
        self.store.inner.data()
    }
}

const CLIENT_SECRET: &str = "bSaIN3MV1YynmtXvU8lKkfeY0iwpr9cH";

fn plain_route() -> Value {
    json!({"uri": "/get", "upstream": {"type": "roundrobin", "nodes": {"httpbin.org:80": 1}}})
}

fn oidc_route(extra: Value) -> Value {
    let mut plugin = json!({
        "client_id": "apisix-quickstart-client",
        "client_secret": CLIENT_SECRET,
        "discovery": "http://127.0.0.1:8080/realms/quickstart-realm/.well-known/openid-configuration",
        "scope": "openid profile",
        "redirect_uri": "http://localhost:9080/anything/callback"
    });
    merge_patch(&mut plugin, &extra);
    json!({
        "uri": "/anything/*",
        "plugins": {"openid-connect": plugin},
        "upstream": {"type": "roundrobin", "nodes": {"httpbin.org:80": 1}}
    })
}

// The tutorial's four bodies, as its shell expands them
// (KEYCLOAK_IP=192.168.42.145, the tutorial's client id and secret).
const QUICKSTART_CODE: &str = r#"
{
"id": "auth-with-oidc",
"uri":"/anything/*",
"plugins": {
"openid-connect": {
"bearer_only": false,
"client_id": "apisix-quickstart-client",
"client_secret": "bSaIN3MV1YynmtXvU8lKkfeY0iwpr9cH",
"discovery": "http://192.168.42.145:8080/realms/quickstart-realm/.well-known/openid-configuration",
"scope": "openid profile",
"redirect_uri": "http://localhost:9080/anything/callback"
}
},
"upstream":{
"type":"roundrobin",
"nodes":{
"httpbin.org:80":1
}
}
}"#;

const QUICKSTART_PKCE: &str = r#"
{
"id": "auth-with-oidc",
"uri":"/anything/*",
"plugins": {
"openid-connect": {
"bearer_only": false,
"use_pkce": true,
"client_id": "apisix-quickstart-client",
"client_secret": "bSaIN3MV1YynmtXvU8lKkfeY0iwpr9cH",
"discovery": "http://192.168.42.145:8080/realms/quickstart-realm/.well-known/openid-configuration",
"scope": "openid profile",
"redirect_uri": "http://localhost:9080/anything/callback"
}
},
"upstream":{
"type":"roundrobin",
"nodes":{
"httpbin.org:80":1
}
}
}"#;

const QUICKSTART_JWKS: &str = r#"
{
"id": "auth-with-oidc",
"uri":"/anything/*",
"plugins": {
"openid-connect": {
"use_jwks": true,
"client_id": "apisix-quickstart-client",
"client_secret": "bSaIN3MV1YynmtXvU8lKkfeY0iwpr9cH",
"discovery": "http://192.168.42.145:8080/realms/quickstart-realm/.well-known/openid-configuration",
"scope": "openid profile",
"redirect_uri": "http://localhost:9080/anything/callback"
}
},
"upstream":{
"type":"roundrobin",
"nodes":{
"httpbin.org:80":1
}
}
}"#;

const QUICKSTART_INTROSPECTION: &str = r#"
{
"id": "auth-with-oidc",
"uri":"/anything/*",
"plugins": {
"openid-connect": {
"bearer_only": true,
"client_id": "apisix-quickstart-client",
"client_secret": "bSaIN3MV1YynmtXvU8lKkfeY0iwpr9cH",
"discovery": "http://192.168.42.145:8080/realms/quickstart-realm/.well-known/openid-configuration",
"scope": "openid profile",
"redirect_uri": "http://localhost:9080/anything/callback"
}
},
"upstream":{
"type":"roundrobin",
"nodes":{
"httpbin.org:80":1
}
}
}"#;

fn session_secret(route: &Value) -> Option<String> {
    route["plugins"]["openid-connect"]["session"]["secret"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test]
async fn the_tutorials_bodies_are_accepted_as_curl_sends_them() {
    let mut api = Api::new().await;
    let mut generated = None;
    for (i, body) in [QUICKSTART_CODE, QUICKSTART_PKCE, QUICKSTART_JWKS]
        .into_iter()
        .enumerate()
    {
        api.now.store(T0 + i as u64, Ordering::SeqCst);
        let a = api.call("PUT", "/apisix/admin/routes", Some(body)).await;
        let want = if i == 0 {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        assert_eq!(a.status, want, "{}", a.body);
        assert_eq!(a.body["key"], "/apisix/routes/auth-with-oidc");
        assert_eq!(a.body["value"]["id"], "auth-with-oidc");
        assert_eq!(a.body["value"]["create_time"], T0);
        assert_eq!(a.body["value"]["update_time"], T0 + i as u64);
        // The response hides the secrets ...
        let shown = &a.body["value"]["plugins"]["openid-connect"];
        assert_eq!(shown["client_secret"], REDACTED);
        assert_eq!(shown["session"]["secret"], REDACTED);
        assert!(!a.body.to_string().contains(CLIENT_SECRET));
        // ... the store and the published set carry them.
        let (changed, set) = api.published();
        assert!(changed);
        let stored = &set["auth-with-oidc"];
        assert_eq!(
            stored["plugins"]["openid-connect"]["client_secret"],
            CLIENT_SECRET
        );
        // One session secret, generated by the first write and kept.
        let secret = session_secret(stored).expect("a generated session secret");
        assert!(secret.len() >= 32);
        assert!(!a.body.to_string().contains(&secret));
        match &generated {
            None => generated = Some(secret),
            Some(g) => assert_eq!(*g, secret),
        }
    }

    // Introspection: bearer only, no session needed, none added.
    let a = api
        .call(
            "PUT",
            "/apisix/admin/routes",
            Some(QUICKSTART_INTROSPECTION),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let (_, set) = api.published();
    let stored = &set["auth-with-oidc"];
    assert_eq!(stored["plugins"]["openid-connect"]["bearer_only"], true);
    assert!(stored["plugins"]["openid-connect"].get("session").is_none());
    assert!(RouteSpec::parse("auth-with-oidc", stored, &Default::default()).is_ok());
}

#[tokio::test]
async fn put_creates_then_replaces_and_keeps_create_time() {
    let mut api = Api::new().await;
    let a = api.put("/apisix/admin/routes/r1", &plain_route()).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(
        a.body,
        json!({"key": "/apisix/routes/r1", "value": {
            "id": "r1", "uri": "/get", "create_time": T0, "update_time": T0,
            "upstream": {"type": "roundrobin", "nodes": {"httpbin.org:80": 1}}}})
    );
    api.now.store(T0 + 60, Ordering::SeqCst);
    let mut changed = plain_route();
    changed["uri"] = json!("/changed");
    let a = api.put("/apisix/admin/routes/r1", &changed).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["value"]["create_time"], T0);
    assert_eq!(a.body["value"]["update_time"], T0 + 60);
    assert_eq!(a.body["value"]["uri"], "/changed");
    let (published, set) = api.published();
    assert!(published);
    assert_eq!(set["r1"], a.body["value"]);
    assert_eq!(set.len(), 1);
}

#[tokio::test]
async fn put_with_the_id_in_the_body() {
    let mut api = Api::new().await;
    let mut body = plain_route();
    body["id"] = json!(12);
    let a = api.put("/apisix/admin/routes", &body).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["key"], "/apisix/routes/12");
    assert_eq!(a.body["value"]["id"], "12");

    let before = api.snapshot();
    api.published();
    let a = api.put("/apisix/admin/routes", &plain_route()).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.body["error_msg"]
            .as_str()
            .unwrap()
            .starts_with("missing route id"),
        "{}",
        a.body
    );
    body["id"] = json!("other");
    let a = api.put("/apisix/admin/routes/12", &body).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body["error_msg"]
        .as_str()
        .unwrap()
        .contains("property \"id\""));
    body["id"] = json!(true);
    let a = api.put("/apisix/admin/routes", &body).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body["error_msg"]
        .as_str()
        .unwrap()
        .contains("property \"id\""));
    let a = api.put("/apisix/admin/routes/a%2Fb", &plain_route()).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body["error_msg"]
        .as_str()
        .unwrap()
        .contains("property \"id\""));
    api.assert_unchanged(&before);
}

#[tokio::test]
async fn get_list_and_404s() {
    let api = Api::new().await;
    let a = api.call("GET", "/apisix/admin/routes", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, json!({"total": 0, "list": []}));
    for (method, body) in [
        ("GET", None),
        ("DELETE", None),
        ("PATCH", Some("{\"uri\": \"/x\"}")),
    ] {
        let a = api.call(method, "/apisix/admin/routes/nope", body).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{method}");
        assert_eq!(a.body, json!({"message": "Key not found"}), "{method}");
    }

    for id in ["b", "a"] {
        let a = api
            .put(
                &format!("/apisix/admin/routes/{id}"),
                &oidc_route(json!({})),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }
    let a = api.call("GET", "/apisix/admin/routes", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["total"], 2);
    let list = a.body["list"].as_array().unwrap();
    assert_eq!(list[0]["key"], "/apisix/routes/a");
    assert_eq!(list[1]["key"], "/apisix/routes/b");
    assert_eq!(list[0]["value"]["id"], "a");
    for item in list {
        let conf = &item["value"]["plugins"]["openid-connect"];
        assert_eq!(conf["client_secret"], REDACTED);
        assert_eq!(conf["session"]["secret"], REDACTED);
    }
    assert!(!a.body.to_string().contains(CLIENT_SECRET));

    let a = api.call("GET", "/apisix/admin/routes/a", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, list[0]);
}

#[tokio::test]
async fn delete_removes_and_publishes() {
    let mut api = Api::new().await;
    api.put("/apisix/admin/routes/a", &plain_route()).await;
    api.put("/apisix/admin/routes/b", &plain_route()).await;
    api.published();
    let a = api.call("DELETE", "/apisix/admin/routes/a", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, json!({"deleted": "1", "key": "/apisix/routes/a"}));
    let (changed, set) = api.published();
    assert!(changed);
    assert_eq!(set.keys().collect::<Vec<_>>(), vec!["b"]);
    let a = api.call("GET", "/apisix/admin/routes/a", None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let before = api.snapshot();
    let a = api.call("DELETE", "/apisix/admin/routes/a", None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    api.assert_unchanged(&before);
}

#[tokio::test]
async fn post_generates_an_id() {
    let mut api = Api::new().await;
    let a = api
        .call(
            "POST",
            "/apisix/admin/routes",
            Some(&plain_route().to_string()),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let id = a.body["value"]["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 20);
    assert!(id.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(a.body["key"], format!("/apisix/routes/{id}"));
    assert_eq!(a.body["value"]["create_time"], T0);
    let (changed, set) = api.published();
    assert!(changed);
    assert_eq!(set[&id]["uri"], "/get");

    // The next one is different and sorts after it, even after a
    // delete and with the same clock.
    api.call("DELETE", &format!("/apisix/admin/routes/{id}"), None)
        .await;
    let b = api
        .call(
            "POST",
            "/apisix/admin/routes",
            Some(&plain_route().to_string()),
        )
        .await;
    assert_eq!(b.status, StatusCode::CREATED);
    let id2 = b.body["value"]["id"].as_str().unwrap().to_string();
    assert!(id2 > id, "{id2} after {id}");

    // A login route gets its session secret on POST too.
    let c = api
        .call(
            "POST",
            "/apisix/admin/routes",
            Some(&oidc_route(json!({})).to_string()),
        )
        .await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    let id3 = c.body["value"]["id"].as_str().unwrap();
    assert!(session_secret(&api.stored(id3).unwrap()).is_some());

    // An id is not for POST.
    api.published();
    let before = api.snapshot();
    let mut with_id = plain_route();
    with_id["id"] = json!("mine");
    let a = api
        .call("POST", "/apisix/admin/routes", Some(&with_id.to_string()))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body["error_msg"]
        .as_str()
        .unwrap()
        .contains("property \"id\""));
    let a = api
        .call(
            "POST",
            "/apisix/admin/routes/mine",
            Some(&plain_route().to_string()),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body["error_msg"]
        .as_str()
        .unwrap()
        .contains("wrong route id"));
    api.assert_unchanged(&before);
}

#[tokio::test]
async fn generated_ids_continue_after_loaded_ones() {
    let mut routes = Routes::new();
    let high = format!("{:020}", u128::from(T0) * 1_000_000_000 + 500);
    let mut r = plain_route();
    r["id"] = json!(high);
    routes.insert(high.clone(), r);
    let api = Api::with(AdminSettings::default(), routes).await;
    let a = api
        .call(
            "POST",
            "/apisix/admin/routes",
            Some(&plain_route().to_string()),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(
        a.body["value"]["id"],
        format!("{:020}", u128::from(T0) * 1_000_000_000 + 501)
    );
}

#[tokio::test]
async fn patch_merges_then_validates() {
    let mut api = Api::new().await;
    let a = api
        .put(
            "/apisix/admin/routes/p",
            &oidc_route(json!({"bearer_only": true, "use_jwks": true})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    api.published();
    api.now.store(T0 + 5, Ordering::SeqCst);

    // One plugin attribute changes; everything else stays.
    let a = api
        .call(
            "PATCH",
            "/apisix/admin/routes/p",
            Some(r#"{"plugins": {"openid-connect": {"scope": "openid email"}}}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let (changed, set) = api.published();
    assert!(changed);
    let conf = &set["p"]["plugins"]["openid-connect"];
    assert_eq!(conf["scope"], "openid email");
    assert_eq!(conf["client_id"], "apisix-quickstart-client");
    assert_eq!(conf["client_secret"], CLIENT_SECRET);
    assert_eq!(conf["use_jwks"], true);
    assert_eq!(set["p"]["create_time"], T0);
    assert_eq!(set["p"]["update_time"], T0 + 5);
    assert_eq!(
        a.body["value"]["plugins"]["openid-connect"]["client_secret"],
        REDACTED
    );

    // null removes a key; arrays are replaced.
    let a = api
        .call(
            "PATCH",
            "/apisix/admin/routes/p",
            Some(r#"{"plugins": {"openid-connect": {"redirect_uri": null}}, "methods": ["GET"]}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = api
        .call(
            "PATCH",
            "/apisix/admin/routes/p",
            Some(r#"{"methods": ["POST", "PUT"]}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let (_, set) = api.published();
    assert!(set["p"]["plugins"]["openid-connect"]
        .get("redirect_uri")
        .is_none());
    assert_eq!(set["p"]["methods"], json!(["POST", "PUT"]));

    // Turning login on without a redirect_uri: the route must name
    // its hosts (the redirect URI would come from any Host).
    let a = api
        .call(
            "PATCH",
            "/apisix/admin/routes/p",
            Some(r#"{"plugins": {"openid-connect": {"bearer_only": false}}}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    let msg = a.body["error_msg"].as_str().unwrap();
    assert!(
        msg.contains("plugins.openid-connect.redirect_uri") && msg.contains("\"hosts\""),
        "{msg}"
    );
    // With hosts: the session secret is generated, then kept.
    let a = api
        .call(
            "PATCH",
            "/apisix/admin/routes/p",
            Some(r#"{"hosts": ["app.example"], "plugins": {"openid-connect": {"bearer_only": false}}}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let secret = session_secret(&api.stored("p").unwrap()).unwrap();
    let a = api
        .call("PATCH", "/apisix/admin/routes/p", Some(r#"{"desc": "d"}"#))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(session_secret(&api.stored("p").unwrap()).unwrap(), secret);

    // A patch that makes the route invalid changes nothing.
    api.published();
    let before = api.snapshot();
    for (patch, field) in [
        (r#"{"uris": ["/a"]}"#, "property \"uri\" and \"uris\""),
        (r#"{"upstream": null}"#, "property \"upstream\" is required"),
        (
            r#"{"plugins": {"openid-connect": {"discovery": null}}}"#,
            "property \"plugins.openid-connect.discovery\" is required",
        ),
        (r#"{"id": "q"}"#, "property \"id\""),
        (
            r#"{"create_time": "yesterday"}"#,
            "property \"create_time\"",
        ),
    ] {
        let a = api
            .call("PATCH", "/apisix/admin/routes/p", Some(patch))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{patch}: {}", a.body);
        let msg = a.body["error_msg"].as_str().unwrap();
        assert!(msg.contains(field), "{patch}: {msg}");
    }
    for (patch, want) in [
        ("", "missing new configuration"),
        ("[1]", "must be a JSON object"),
        ("{", "invalid request body"),
    ] {
        let a = api
            .call("PATCH", "/apisix/admin/routes/p", Some(patch))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{patch}: {}", a.body);
        assert!(
            a.body["error_msg"].as_str().unwrap().contains(want),
            "{}",
            a.body
        );
    }
    api.assert_unchanged(&before);
}

#[tokio::test]
async fn bad_bodies_are_refused_by_name_and_change_nothing() {
    let mut api = Api::new().await;
    let a = api
        .put("/apisix/admin/routes/r", &oidc_route(json!({})))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    api.published();
    let before = api.snapshot();

    let with = |patch: Value| {
        let mut r = oidc_route(json!({}));
        merge_patch(&mut r, &patch);
        r.to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        ("{\"uri\": ".into(), "invalid request body: "),
        ("not json".into(), "invalid request body: "),
        ("".into(), "missing configurations"),
        ("[]".into(), "the route must be a JSON object"),
        (
            with(json!({"colour": "blue"})),
            "property \"colour\" is not allowed",
        ),
        (
            with(json!({"uris": ["/a"]})),
            "property \"uri\" and \"uris\" cannot both be set",
        ),
        (
            with(json!({"upstream": {"nodes": {"bad host:80": 1}}})),
            "property \"upstream.nodes.bad host:80\"",
        ),
        (
            with(json!({"upstream": {"nodes": {"httpbin.org:80": -1}}})),
            "property \"upstream.nodes.httpbin.org:80\" weight must not be negative",
        ),
        (
            with(json!({"plugins": {"key-auth": {"count": 1}}})),
            "property \"plugins.key-auth\" is not a plugin",
        ),
        (
            with(json!({"plugins": {"openid-connect": {"bearer_only": "yes"}}})),
            "property \"plugins.openid-connect.bearer_only\"",
        ),
        (
            with(json!({"plugins": {"openid-connect": {"session": {"secret": "short"}}}})),
            "property \"plugins.openid-connect.session.secret\"",
        ),
        (
            with(json!({"create_time": 5})),
            "property \"create_time\" is set by the server",
        ),
        (
            with(json!({"update_time": 5})),
            "property \"update_time\" is set by the server",
        ),
    ];
    for (body, want) in &cases {
        let a = api.call("PUT", "/apisix/admin/routes/r", Some(body)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.body);
        let msg = a.body["error_msg"].as_str().unwrap();
        assert!(msg.contains(want), "{body}: {msg}");
        assert!(!msg.contains(CLIENT_SECRET), "{msg}");
        // The same for a new id: nothing is created either.
        let a = api
            .call("PUT", "/apisix/admin/routes/new", Some(body))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.body);
        let a = api.call("POST", "/apisix/admin/routes", Some(body)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.body);
    }
    api.assert_unchanged(&before);
    assert_eq!(
        api.call("GET", "/apisix/admin/routes/new", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let mut api = Api::new().await;
    let mut big = plain_route();
    big["desc"] = json!("x".repeat(MAX_BODY));
    let a = api.put("/apisix/admin/routes/big", &big).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body["error_msg"]
        .as_str()
        .unwrap()
        .starts_with("invalid request body"));
    api.assert_unchanged(&Stored::default());
}

#[tokio::test]
async fn redacted_values_round_trip() {
    let mut api = Api::new().await;
    let a = api
        .put("/apisix/admin/routes/r", &oidc_route(json!({})))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let stored = api.stored("r").unwrap();
    let secret = session_secret(&stored).unwrap();

    let got = api.call("GET", "/apisix/admin/routes/r", None).await;
    let mut value = got.body["value"].clone();
    assert_eq!(
        value["plugins"]["openid-connect"]["client_secret"],
        REDACTED
    );
    assert_eq!(
        value["plugins"]["openid-connect"]["session"]["secret"],
        REDACTED
    );
    // Written back (without the server's timestamps, as APISIX wants).
    let obj = value.as_object_mut().unwrap();
    obj.remove("create_time");
    obj.remove("update_time");
    value["desc"] = json!("edited");
    api.now.store(T0 + 1, Ordering::SeqCst);
    let a = api.put("/apisix/admin/routes/r", &value).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let after = api.stored("r").unwrap();
    assert_eq!(
        after["plugins"]["openid-connect"]["client_secret"],
        CLIENT_SECRET
    );
    assert_eq!(session_secret(&after).unwrap(), secret);
    assert_eq!(after["desc"], "edited");

    // A new secret replaces the stored one.
    value["plugins"]["openid-connect"]["client_secret"] = json!("a-new-client-secret");
    let a = api.put("/apisix/admin/routes/r", &value).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        api.stored("r").unwrap()["plugins"]["openid-connect"]["client_secret"],
        "a-new-client-secret"
    );

    // The marker for a route that has nothing stored is refused.
    value["plugins"]["openid-connect"]["client_secret"] = json!(REDACTED);
    api.published();
    let before = api.snapshot();
    let a = api.put("/apisix/admin/routes/copy", &value).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    let msg = a.body["error_msg"].as_str().unwrap();
    assert!(
        msg.contains("property \"plugins.openid-connect.client_secret\" is the redaction marker"),
        "{msg}"
    );
    let a = api
        .call("POST", "/apisix/admin/routes", Some(&value.to_string()))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    api.assert_unchanged(&before);

    // PATCH sending the marker keeps the secret too.
    let a = api
        .call(
            "PATCH",
            "/apisix/admin/routes/r",
            Some(r#"{"plugins": {"openid-connect": {"client_secret": "******"}}}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        api.stored("r").unwrap()["plugins"]["openid-connect"]["client_secret"],
        "a-new-client-secret"
    );
}

#[tokio::test]
async fn the_allow_list_is_checked_first() {
    let mut api = Api::new().await;
    let outside = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 40000);
    for (method, body) in [("GET", None), ("PUT", Some(plain_route().to_string()))] {
        let a = api
            .send(request_from(
                outside,
                method,
                "/apisix/admin/routes/r",
                body.as_deref(),
            ))
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        assert_eq!(a.body, json!({"error_msg": "IP address not allowed"}));
    }
    // No client address at all: refused.
    let req = Request::builder()
        .uri("/apisix/admin/routes")
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.send(req).await.status, StatusCode::FORBIDDEN);
    // 127.0.0.0/24 by default, also as an IPv4-mapped IPv6 address.
    let mapped: SocketAddr = "[::ffff:127.0.0.9]:1".parse().unwrap();
    let a = api
        .send(request_from(mapped, "GET", "/apisix/admin/routes", None))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let v6: SocketAddr = "[::1]:1".parse().unwrap();
    let a = api
        .send(request_from(v6, "GET", "/apisix/admin/routes", None))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    api.assert_unchanged(&Stored::default());

    // A configured list replaces the default.
    let api = Api::with(
        AdminSettings {
            api_key: None,
            allow: vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            ..AdminSettings::default()
        },
        Routes::new(),
    )
    .await;
    for (client, want) in [
        (outside, StatusCode::OK),
        (v6, StatusCode::OK),
        (local(), StatusCode::FORBIDDEN),
    ] {
        let a = api
            .send(request_from(client, "GET", "/apisix/admin/routes", None))
            .await;
        assert_eq!(a.status, want, "{client}");
    }
}

#[tokio::test]
async fn the_api_key_is_required_when_configured() {
    const KEY: &str = "edd1c9f034335f136f87ad84b625c8f1";
    let mut api = Api::with(
        AdminSettings {
            api_key: Some(KEY.into()),
            ..AdminSettings::default()
        },
        Routes::new(),
    )
    .await;
    let body = plain_route().to_string();
    let a = api.call("PUT", "/apisix/admin/routes/r", Some(&body)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        a.body,
        json!({"error_msg": "failed to check token", "description": "missing apikey"})
    );
    let mut req = request_from(local(), "PUT", "/apisix/admin/routes/r", Some(&body));
    req.headers_mut()
        .insert("x-api-key", HeaderValue::from_static("wrong"));
    let a = api.send(req).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.body["description"], "wrong apikey");
    let a = api
        .call("GET", "/apisix/admin/routes?api_key=wrong", None)
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // The allow-list still comes first.
    let outside = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 1);
    let mut req = request_from(outside, "GET", "/apisix/admin/routes", None);
    req.headers_mut()
        .insert("x-api-key", HeaderValue::from_static(KEY));
    assert_eq!(api.send(req).await.status, StatusCode::FORBIDDEN);
    api.assert_unchanged(&Stored::default());

    // The header ...
    let mut req = request_from(local(), "PUT", "/apisix/admin/routes/r", Some(&body));
    req.headers_mut()
        .insert("x-api-key", HeaderValue::from_static(KEY));
    let a = api.send(req).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    // ... or the query.
    let a = api
        .call(
            "GET",
            &format!("/apisix/admin/routes/r?api_key={KEY}"),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["value"]["id"], "r");
}

/// A request from loopback with extra headers.
fn with_headers(method: &str, uri: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Request {
    let mut req = request_from(local(), method, uri, body);
    for (k, v) in headers {
        req.headers_mut().append(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    req
}

/// The issue's attack: a page POSTs a "simple" text/plain body.
const ATTACK: &str =
    r#"{"uri":"/config_dump","upstream":{"type":"roundrobin","nodes":{"192.0.2.1:9901":1}}}"#;

#[tokio::test]
async fn web_pages_cannot_call_the_admin_api() {
    let mut api = Api::new().await;
    let host = ("host", "127.0.0.1:9180");
    for (headers, cause) in [
        (
            vec![host, ("origin", "http://evil.example"), ("content-type", "text/plain")],
            "cross-origin request refused: Origin \"http://evil.example\" is not the Admin API's own (http://127.0.0.1:9180)",
        ),
        // "null" (a sandboxed frame, a file), another port of this host,
        // another scheme.
        (vec![host, ("origin", "null")], "Origin \"null\""),
        (vec![host, ("origin", "http://127.0.0.1:9080")], "Origin \"http://127.0.0.1:9080\""),
        (vec![host, ("origin", "https://127.0.0.1:9180")], "Origin \"https://127.0.0.1:9180\""),
        // No Host to compare with: no Origin is the Admin API's.
        (vec![("origin", "http://127.0.0.1:9180")], "is not the Admin API's own:"),
        (
            vec![host, ("sec-fetch-site", "cross-site")],
            "cross-site request refused (Sec-Fetch-Site: cross-site)",
        ),
        (vec![host, ("sec-fetch-site", "same-site")], "(Sec-Fetch-Site: same-site)"),
        // Sec-Fetch-Site wins over a same-origin Origin.
        (
            vec![host, ("origin", "http://127.0.0.1:9180"), ("sec-fetch-site", "Cross-Site")],
            "Sec-Fetch-Site",
        ),
    ] {
        for (method, uri, body) in [
            ("POST", "/apisix/admin/routes", Some(ATTACK)),
            ("PUT", "/apisix/admin/routes/r", Some(ATTACK)),
            ("GET", "/apisix/admin/routes", None),
            ("DELETE", "/apisix/admin/routes/r", None),
        ] {
            let a = api.send(with_headers(method, uri, body, &headers)).await;
            assert_eq!(a.status, StatusCode::FORBIDDEN, "{method} {headers:?}: {}", a.body);
            let msg = a.body["error_msg"].as_str().unwrap();
            assert!(msg.contains(cause), "{msg}");
            assert!(msg.contains("web pages cannot call the Admin API"), "{msg}");
        }
    }
    api.assert_unchanged(&Stored::default());

    // The Admin API's own origin, and what browsers send for a typed URL.
    let body = plain_route().to_string();
    for headers in [
        vec![host, ("origin", "http://127.0.0.1:9180")],
        vec![
            ("host", "LOCALHOST:9180"),
            ("origin", "http://localhost:9180"),
        ],
        vec![host, ("sec-fetch-site", "same-origin")],
        vec![host, ("sec-fetch-site", "none")],
    ] {
        let a = api
            .send(with_headers(
                "PUT",
                "/apisix/admin/routes/r",
                Some(&body),
                &headers,
            ))
            .await;
        assert!(a.status.is_success(), "{headers:?}: {}", a.body);
    }
}

#[tokio::test]
async fn only_its_own_host_names_are_answered() {
    let mut api = Api::with(
        AdminSettings {
            hosts: vec!["admin.gw.internal".into()],
            ..AdminSettings::default()
        },
        Routes::new(),
    )
    .await;
    let body = plain_route().to_string();
    for host in [
        "evil.example",
        "evil.example:9180",
        "127.0.0.1.nip.io:9180",
        "gw.internal",
        "localhost.evil.example",
        "admin.gw.internal.evil.example",
        "[::1",
        "a b",
    ] {
        for (method, b) in [("GET", None), ("PUT", Some(body.as_str()))] {
            let a = api
                .send(with_headers(
                    method,
                    "/apisix/admin/routes/r",
                    b,
                    &[("host", host)],
                ))
                .await;
            assert_eq!(a.status, StatusCode::FORBIDDEN, "{host}: {}", a.body);
            let msg = a.body["error_msg"].as_str().unwrap();
            assert!(msg.starts_with("Host "), "{msg}");
        }
    }
    let a = api
        .send(with_headers(
            "GET",
            "/apisix/admin/routes",
            None,
            &[("host", "evil.example:9180")],
        ))
        .await;
    assert_eq!(
        a.body["error_msg"],
        "Host \"evil.example:9180\" is not allowed: the Admin API answers only to IP \
         addresses, localhost and the names given with --admin-host; add the name with \
         --admin-host (SIDECAR_ADMIN_HOST) if it is this Admin API's, or call the Admin \
         API by its IP address"
    );
    // A request target in absolute form is checked too.
    let a = api
        .send(with_headers(
            "GET",
            "http://evil.example/apisix/admin/routes",
            None,
            &[("host", "127.0.0.1")],
        ))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    api.assert_unchanged(&Stored::default());

    for host in [
        "127.0.0.1:9180",
        "127.0.0.1",
        "10.1.2.3:9180",
        "[::1]:9180",
        "[::1]",
        "localhost:9180",
        "localhost.",
        "admin.gw.internal:9180",
        "Admin.GW.Internal.",
    ] {
        let a = api
            .send(with_headers(
                "GET",
                "/apisix/admin/routes",
                None,
                &[("host", host)],
            ))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{host}: {}", a.body);
    }
    // The own origin under a configured name.
    let a = api
        .send(with_headers(
            "PUT",
            "/apisix/admin/routes/r",
            Some(&body),
            &[
                ("host", "admin.gw.internal:9180"),
                ("origin", "http://admin.gw.internal:9180"),
            ],
        ))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
}

fn gateway_nodes(allow_local: bool) -> AdminSettings {
    AdminSettings {
        nodes: NodePolicy {
            control: vec![
                ("the Admin API", "127.0.0.1:9180".parse().unwrap()),
                ("the sidecar's xDS port", "127.0.0.1:18000".parse().unwrap()),
                ("Envoy's admin", "127.0.0.1:9901".parse().unwrap()),
            ],
            own_names: Vec::new(),
            allow_local,
        },
        ..AdminSettings::default()
    }
}

#[tokio::test]
async fn upstreams_on_the_gateways_control_ports_are_refused() {
    for allow_local in [false, true] {
        let mut api = Api::with(gateway_nodes(allow_local), Routes::new()).await;
        for (uri, body, field, what) in [
            (
                "/apisix/admin/routes",
                r#"{"uri":"/config_dump","upstream":{"type":"roundrobin","nodes":{"127.0.0.1:9901":1}}}"#,
                "upstream.nodes.127.0.0.1:9901",
                "Envoy's admin (127.0.0.1:9901)",
            ),
            (
                "/apisix/admin/routes",
                r#"{"uri":"/apisix/admin/*","upstream":{"nodes":[{"host":"localhost","port":9180,"weight":1}]}}"#,
                "upstream.nodes[0]",
                "the Admin API (127.0.0.1:9180)",
            ),
            (
                "/apisix/admin/upstreams",
                r#"{"nodes":{"[::1]:18000":1}}"#,
                "nodes.[::1]:18000",
                "the sidecar's xDS port (127.0.0.1:18000)",
            ),
            (
                "/apisix/admin/upstreams",
                r#"{"nodes":[{"host":"0.0.0.0","port":9901,"weight":1}]}"#,
                "nodes[0]",
                "Envoy's admin",
            ),
        ] {
            let a = api.call("POST", uri, Some(body)).await;
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.body);
            let msg = a.body["error_msg"].as_str().unwrap();
            assert!(
                msg.starts_with(&format!(
                    "invalid configuration: property \"{field}\" points at {what}"
                )),
                "{msg}"
            );
            assert!(msg.contains("refused whatever the options"), "{msg}");
        }
        api.assert_unchanged(&Stored::default());
    }
}

#[tokio::test]
async fn local_upstreams_need_the_option_and_refusals_change_nothing() {
    let mut api = Api::with(gateway_nodes(false), Routes::new()).await;
    let a = api
        .put(
            "/apisix/admin/upstreams/u1",
            &json!({"nodes": {"192.0.2.1:80": 1}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let r = api
        .put(
            "/apisix/admin/routes/r1",
            &json!({"uri": "/a", "upstream_id": "u1"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    api.published();
    let before = api.snapshot();
    for (method, uri, body, field) in [
        (
            "PUT",
            "/apisix/admin/upstreams/u1",
            json!({"nodes": {"169.254.169.254:80": 1}}),
            "nodes.169.254.169.254:80",
        ),
        (
            "PATCH",
            "/apisix/admin/upstreams/u1",
            json!({"nodes": {"localhost:8080": 1}}),
            "nodes.localhost:8080",
        ),
        (
            "PUT",
            "/apisix/admin/routes/r2",
            json!({"uri": "/b", "upstream": {"nodes": {"127.0.0.1:8080": 1}}}),
            "upstream.nodes.127.0.0.1:8080",
        ),
        (
            "PATCH",
            "/apisix/admin/routes/r1",
            json!({"upstream_id": null, "upstream": {"nodes": {"[fe80::1]:80": 1}}}),
            "upstream.nodes.[fe80::1]:80",
        ),
    ] {
        let a = api.call(method, uri, Some(&body.to_string())).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.body);
        let msg = a.body["error_msg"].as_str().unwrap();
        assert!(
            msg.starts_with(&format!("invalid configuration: property \"{field}\" is a")),
            "{msg}"
        );
        assert!(msg.contains("--allow-local-upstreams"), "{msg}");
    }
    api.assert_unchanged(&before);

    let mut api = Api::with(gateway_nodes(true), Routes::new()).await;
    let a = api
        .put(
            "/apisix/admin/routes/r2",
            &json!({"uri": "/b", "upstream": {"nodes": {"127.0.0.1:8080": 1}}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let (changed, _) = api.published();
    assert!(changed);
}

#[tokio::test]
async fn protected_routes_get_the_same_checks() {
    const KEY: &str = "edd1c9f034335f136f87ad84b625c8f1";
    let state = AdminState::new(
        Arc::new(MemoryStore::default()),
        AdminSettings {
            api_key: Some(KEY.into()),
            ..AdminSettings::default()
        },
    )
    .await
    .unwrap();
    let status = Router::new().route("/status", get(|| async { "{\"versions\":{}}" }));
    let app = router(state, status);
    let outside = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 1);
    let send = |req: Request| {
        let app = app.clone();
        async move { app.oneshot(req).await.unwrap().status() }
    };
    let mut req = request_from(outside, "GET", "/status", None);
    req.headers_mut()
        .insert("x-api-key", HeaderValue::from_static(KEY));
    assert_eq!(send(req).await, StatusCode::FORBIDDEN);
    assert_eq!(
        send(request_from(local(), "GET", "/status", None)).await,
        StatusCode::UNAUTHORIZED
    );
    let mut req = with_headers("GET", "/status", None, &[("host", "evil.example")]);
    req.headers_mut()
        .insert("x-api-key", HeaderValue::from_static(KEY));
    assert_eq!(send(req).await, StatusCode::FORBIDDEN);
    let mut req = request_from(local(), "GET", "/status", None);
    req.headers_mut()
        .insert("x-api-key", HeaderValue::from_static(KEY));
    assert_eq!(send(req).await, StatusCode::OK);
}

#[tokio::test]
async fn a_failed_save_is_a_500_and_changes_nothing() {
    let mut api = Api::new().await;
    let a = api
        .put("/apisix/admin/routes/r", &oidc_route(json!({})))
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    api.published();
    let before = api.snapshot();
    api.store.fail.store(true, Ordering::SeqCst);
    let calls: Vec<(&str, &str, Option<String>)> = vec![
        (
            "PUT",
            "/apisix/admin/routes/r",
            Some(plain_route().to_string()),
        ),
        (
            "PUT",
            "/apisix/admin/routes/new",
            Some(plain_route().to_string()),
        ),
        (
            "POST",
            "/apisix/admin/routes",
            Some(plain_route().to_string()),
        ),
        (
            "PATCH",
            "/apisix/admin/routes/r",
            Some(r#"{"desc": "x"}"#.into()),
        ),
        ("DELETE", "/apisix/admin/routes/r", None),
    ];
    for (method, uri, body) in &calls {
        let a = api.call(method, uri, body.as_deref()).await;
        assert_eq!(
            a.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{method} {uri}"
        );
        let msg = a.body["error_msg"].as_str().unwrap();
        assert!(msg.contains("disk full (test)"), "{msg}");
    }
    api.assert_unchanged(&before);
    let a = api.call("GET", "/apisix/admin/routes/new", None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = api.call("GET", "/apisix/admin/routes/r", None).await;
    assert_eq!(a.body["value"]["uri"], "/anything/*");

    // Once the store works again, so do writes.
    api.store.fail.store(false, Ordering::SeqCst);
    let a = api.call("DELETE", "/apisix/admin/routes/r", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(api.published().0);
}

#[tokio::test]
async fn state_loads_what_the_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.json");
    let store = Arc::new(crate::store::FileStore::new(&path));
    let state = AdminState::new(store.clone(), AdminSettings::default())
        .await
        .unwrap();
    let app = router(state.clone(), Router::new());
    let req = request_from(
        local(),
        "PUT",
        "/apisix/admin/routes/r",
        Some(QUICKSTART_CODE.replace("auth-with-oidc", "r").as_str()),
    );
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let stored = state.routes();

    // A restart: the same routes, secrets included, are published.
    let again = AdminState::new(store, AdminSettings::default())
        .await
        .unwrap();
    assert_eq!(*again.subscribe().borrow().stored(), stored);
    assert!(session_secret(&stored.routes["r"]).is_some());

    std::fs::write(&path, b"{oops").unwrap();
    let e = AdminState::new(
        Arc::new(crate::store::FileStore::new(&path)),
        AdminSettings::default(),
    )
    .await
    .err()
    .unwrap();
    assert!(e.to_string().contains("invalid JSON"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_do_not_interleave() {
    let api = Arc::new(Api::new().await);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let a = api
                .call(
                    "POST",
                    "/apisix/admin/routes",
                    Some(&plain_route().to_string()),
                )
                .await;
            assert_eq!(a.status, StatusCode::CREATED);
            let a = api
                .put(&format!("/apisix/admin/routes/r{i}"), &plain_route())
                .await;
            assert_eq!(a.status, StatusCode::CREATED);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let saved = api.snapshot();
    assert_eq!(saved.routes.len(), 40);
    assert_eq!(api.state.routes(), saved);
}

#[test]
fn merge_patch_follows_rfc_7386() {
    // RFC 7386, appendix A (a selection).
    for (target, patch, want) in [
        (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
        (
            json!({"a": "b"}),
            json!({"b": "c"}),
            json!({"a": "b", "b": "c"}),
        ),
        (json!({"a": "b"}), json!({"a": null}), json!({})),
        (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
        (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
        (
            json!({"a": {"b": "c"}}),
            json!({"a": {"b": "d", "c": null}}),
            json!({"a": {"b": "d"}}),
        ),
        (
            json!({"a": [{"b": "c"}]}),
            json!({"a": [1]}),
            json!({"a": [1]}),
        ),
        (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
        (
            json!({"e": null}),
            json!({"a": 1}),
            json!({"e": null, "a": 1}),
        ),
        (
            json!([1, 2]),
            json!({"a": "b", "c": null}),
            json!({"a": "b"}),
        ),
        (
            json!({}),
            json!({"a": {"bb": {"ccc": null}}}),
            json!({"a": {"bb": {}}}),
        ),
    ] {
        let mut t = target.clone();
        merge_patch(&mut t, &patch);
        assert_eq!(t, want, "{target} + {patch}");
    }
}

#[test]
fn settings_do_not_print_the_key() {
    let s = AdminSettings {
        api_key: Some("very-secret-admin-key".into()),
        ..AdminSettings::default()
    };
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("very-secret"), "{dbg}");
    assert!(dbg.contains("127.0.0.0/24"), "{dbg}");
}

fn upstream_body() -> Value {
    json!({"type": "roundrobin", "nodes": {"192.0.2.1:8080": 1}})
}

#[tokio::test]
async fn upstreams_have_the_routes_shapes() {
    let mut api = Api::new().await;
    let a = api
        .put("/apisix/admin/upstreams/u1", &upstream_body())
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(
        a.body,
        json!({"key": "/apisix/upstreams/u1", "value": {
            "id": "u1", "type": "roundrobin", "nodes": {"192.0.2.1:8080": 1},
            "create_time": T0, "update_time": T0}})
    );
    let (changed, set) = api.published_all();
    assert!(changed);
    assert_eq!(set.upstreams["u1"], a.body["value"]);
    assert!(set.routes.is_empty());

    // Replaced: 200, create_time kept; the id may be in the body.
    api.now.store(T0 + 9, Ordering::SeqCst);
    let mut body = upstream_body();
    body["id"] = json!("u1");
    body["type"] = json!("least_conn");
    let a = api.put("/apisix/admin/upstreams", &body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["value"]["create_time"], T0);
    assert_eq!(a.body["value"]["update_time"], T0 + 9);

    // GET one, list.
    let a = api.call("GET", "/apisix/admin/upstreams/u1", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["value"]["type"], "least_conn");
    let a = api
        .call(
            "POST",
            "/apisix/admin/upstreams",
            Some(&upstream_body().to_string()),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let generated = a.body["value"]["id"].as_str().unwrap().to_string();
    assert_eq!(generated.len(), 20);
    assert_eq!(a.body["key"], format!("/apisix/upstreams/{generated}"));
    let a = api.call("GET", "/apisix/admin/upstreams", None).await;
    assert_eq!(a.body["total"], 2);
    assert_eq!(a.body["list"][1]["key"], "/apisix/upstreams/u1");
    // Routes and upstreams are separate collections.
    let a = api.call("GET", "/apisix/admin/routes", None).await;
    assert_eq!(a.body, json!({"total": 0, "list": []}));
    let a = api.call("GET", "/apisix/admin/routes/u1", None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    // PATCH merges, then validates.
    let a = api
        .call(
            "PATCH",
            "/apisix/admin/upstreams/u1",
            Some(r#"{"nodes": {"192.0.2.1:8081": 2}, "retries": 1}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        a.body["value"]["nodes"],
        json!({"192.0.2.1:8080": 1, "192.0.2.1:8081": 2})
    );
    assert_eq!(a.body["value"]["retries"], 1);

    // 404s and POST with an id.
    for (method, body) in [("GET", None), ("DELETE", None), ("PATCH", Some("{}"))] {
        let a = api.call(method, "/apisix/admin/upstreams/nope", body).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{method}");
        assert_eq!(a.body, json!({"message": "Key not found"}));
    }
    let a = api
        .call(
            "POST",
            "/apisix/admin/upstreams/x",
            Some(&upstream_body().to_string()),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body["error_msg"]
        .as_str()
        .unwrap()
        .starts_with("wrong upstream id"));

    // DELETE.
    let a = api
        .call(
            "DELETE",
            &format!("/apisix/admin/upstreams/{generated}"),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.body,
        json!({"deleted": "1", "key": format!("/apisix/upstreams/{generated}")})
    );
    let (_, set) = api.published_all();
    assert_eq!(set.upstreams.keys().collect::<Vec<_>>(), ["u1"]);
}

#[tokio::test]
async fn bad_upstreams_are_refused_by_name_and_change_nothing() {
    let mut api = Api::new().await;
    let a = api.put("/apisix/admin/upstreams/u", &upstream_body()).await;
    assert_eq!(a.status, StatusCode::CREATED);
    api.published_all();
    let before = api.snapshot();
    for (body, want) in [
        (
            json!({"nodes": {"192.0.2.1:1": 1}, "discovery_type": "dns"}),
            "property \"discovery_type\" is not supported",
        ),
        (
            json!({"nodes": {"192.0.2.1:1": 1}, "type": "chash"}),
            "property \"key\" is required",
        ),
        (
            json!({"nodes": {"192.0.2.1:1": 1}, "checks": {"passive": {}}}),
            "property \"checks.passive\" is not supported",
        ),
        (
            json!({"type": "roundrobin"}),
            "property \"nodes\" is required",
        ),
        (
            json!({"id": "other", "nodes": {"192.0.2.1:1": 1}}),
            "property \"id\" does not match",
        ),
        (json!([1]), "the upstream must be a JSON object"),
    ] {
        let a = api.put("/apisix/admin/upstreams/u", &body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.body);
        let msg = a.body["error_msg"].as_str().unwrap();
        assert!(msg.contains(want), "{body}: {msg}");
    }
    let a = api
        .call(
            "PATCH",
            "/apisix/admin/upstreams/u",
            Some(r#"{"nodes": null}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    let a = api.put("/apisix/admin/upstreams", &upstream_body()).await;
    assert!(a.body["error_msg"]
        .as_str()
        .unwrap()
        .starts_with("missing upstream id"));
    api.assert_unchanged(&before);
}

#[tokio::test]
async fn routes_name_upstreams_which_cannot_go_while_used() {
    let mut api = Api::new().await;
    let route = |uid: Value| json!({"uri": "/get", "upstream_id": uid});
    // An unknown upstream id: refused, naming it.
    let a = api
        .put("/apisix/admin/routes/r1", &route(json!("u1")))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let msg = a.body["error_msg"].as_str().unwrap();
    assert!(
        msg.contains("failed to fetch upstream info by upstream id [u1], response code: 404"),
        "{msg}"
    );
    assert!(msg.contains("property \"upstream_id\""), "{msg}");
    api.assert_unchanged(&Stored::default());

    let a = api
        .put("/apisix/admin/upstreams/u1", &upstream_body())
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    for id in ["r1", "r2"] {
        let a = api
            .put(&format!("/apisix/admin/routes/{id}"), &route(json!("u1")))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }
    // Both inline and by id: refused.
    let mut both = route(json!("u1"));
    both["upstream"] = upstream_body();
    let a = api.put("/apisix/admin/routes/r3", &both).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body["error_msg"]
        .as_str()
        .unwrap()
        .contains("property \"upstream\" and \"upstream_id\" cannot both be set"));

    // In use: the delete names every route.
    api.published_all();
    let before = api.snapshot();
    let a = api.call("DELETE", "/apisix/admin/upstreams/u1", None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.body,
        json!({"error_msg": "can not delete this upstream, routes [r1], [r2] are still using it now"})
    );
    api.assert_unchanged(&before);

    // A change of the upstream is published (translation reaches both
    // routes).
    let a = api
        .call(
            "PATCH",
            "/apisix/admin/upstreams/u1",
            Some(r#"{"type": "ewma"}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let (changed, set) = api.published_all();
    assert!(changed);
    assert_eq!(set.upstreams["u1"]["type"], "ewma");

    // Once no route uses it, it can go.
    api.call("DELETE", "/apisix/admin/routes/r1", None).await;
    let a = api.call("DELETE", "/apisix/admin/upstreams/u1", None).await;
    assert_eq!(
        a.body["error_msg"],
        "can not delete this upstream, route [r2] is still using it now"
    );
    let a = api
        .call(
            "PATCH",
            "/apisix/admin/routes/r2",
            Some(r#"{"upstream_id": null, "upstream": {"nodes": {"192.0.2.1:1": 1}}}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = api.call("DELETE", "/apisix/admin/upstreams/u1", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

#[tokio::test]
async fn upstreams_survive_a_restart_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.json");
    let store = Arc::new(crate::store::FileStore::new(&path));
    let state = AdminState::new(store.clone(), AdminSettings::default())
        .await
        .unwrap();
    let app = router(state.clone(), Router::new());
    let body = upstream_body().to_string();
    let req = request_from(local(), "PUT", "/apisix/admin/upstreams/u", Some(&body));
    assert_eq!(
        app.clone().oneshot(req).await.unwrap().status(),
        StatusCode::CREATED
    );
    let route = r#"{"uri": "/x", "upstream_id": "u"}"#;
    let req = request_from(local(), "PUT", "/apisix/admin/routes/r", Some(route));
    assert_eq!(
        app.oneshot(req).await.unwrap().status(),
        StatusCode::CREATED
    );
    let again = AdminState::new(store, AdminSettings::default())
        .await
        .unwrap();
    assert_eq!(again.routes(), state.routes());
    assert_eq!(again.routes().upstreams.len(), 1);
}

// -----------------------------------------------------------------------
// A store with revisions and a watch, as etcd (one in memory): the
// conflict logic without etcd.

/// etcd in memory: guards checked as etcd's transaction compares, one
/// revision per write, and a "watch" that hands every change to the
/// sidecars that are listening (a paused one misses them until resumed).
#[derive(Default)]
struct RevStore {
    data: std::sync::Mutex<Versioned>,
    watchers: std::sync::Mutex<Vec<(AdminState, bool)>>,
    down: AtomicBool,
    writes: AtomicU64,
}

impl RevStore {
    fn holds(v: &Versioned, g: &Guard) -> bool {
        match g {
            Guard::Unchanged { kind, id, modified } => v.modified(*kind, id) == *modified,
            Guard::NoneChangedSince { kind, revision } => v
                .revs
                .iter()
                .filter(|((k, _), _)| k == kind)
                .all(|(_, r)| r.modified <= *revision),
        }
    }

    fn now(&self) -> Versioned {
        self.data.lock().unwrap().clone()
    }

    fn notify(&self) {
        let now = self.now();
        for (state, live) in self.watchers.lock().unwrap().iter() {
            if *live {
                state.observe(now.clone());
            }
        }
    }

    /// Pauses (false) or resumes (true) sidecar `n`'s watch; a resumed
    /// watch gets the next change, not the ones it missed (so the
    /// sidecar decides its next write on a stale set).
    fn watching(&self, n: usize, live: bool) {
        self.watchers.lock().unwrap()[n].1 = live;
    }
}

impl Store for RevStore {
    fn load(&self) -> StoreFuture<'_, Versioned> {
        Box::pin(async move { Ok(self.now()) })
    }

    fn write<'a>(&'a self, w: &'a Write, _next: &'a Stored) -> StoreFuture<'a, Written> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable(
                    "cannot reach etcd at http://127.0.0.1:1 (write): connection refused".into(),
                ));
            }
            self.writes.fetch_add(1, Ordering::SeqCst);
            let revision = {
                let mut v = self.data.lock().unwrap();
                if !w.guards.iter().all(|g| RevStore::holds(&v, g)) {
                    return Err(StoreError::Conflict(Box::new(v.clone())));
                }
                let rev = v.revision + 1;
                let created = v.revs_of(w.kind, &w.id).map_or(rev, |r| r.created);
                let bytes = w.value.as_ref().map(|x| serde_json::to_vec(x).unwrap());
                v.apply(
                    w.kind,
                    &w.id,
                    bytes.as_deref(),
                    Revs {
                        created,
                        modified: rev,
                    },
                );
                rev
            };
            self.notify();
            Ok(Written::At { revision })
        })
    }
}

/// Two sidecars (Admin APIs) on one [`RevStore`].
async fn two_sidecars() -> (Arc<RevStore>, Router, Router, AdminState, AdminState) {
    let store = Arc::new(RevStore::default());
    let mut states = Vec::new();
    for _ in 0..2 {
        let s = AdminState::new(store.clone(), AdminSettings::default())
            .await
            .unwrap();
        store.watchers.lock().unwrap().push((s.clone(), true));
        states.push(s);
    }
    let b = states.pop().unwrap();
    let a = states.pop().unwrap();
    (
        store,
        router(a.clone(), Router::new()),
        router(b.clone(), Router::new()),
        a,
        b,
    )
}

async fn call_on(app: &Router, method: &str, uri: &str, body: Option<&str>) -> Answer {
    let resp = app
        .clone()
        .oneshot(request_from(local(), method, uri, body))
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        status,
        body: serde_json::from_slice(&bytes).unwrap(),
    }
}

fn route_to(node: &str) -> String {
    json!({"uri": "/r", "upstream": {"nodes": {node: 1}}}).to_string()
}

#[tokio::test]
async fn a_store_with_revisions_shows_them_like_apisix() {
    let (_store, a, b, _, sb) = two_sidecars().await;
    let put = call_on(
        &a,
        "PUT",
        "/apisix/admin/routes/r",
        Some(&route_to("192.0.2.1:1")),
    )
    .await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    assert_eq!(put.body["key"], "/apisix/routes/r");
    assert_eq!(put.body["createdIndex"], 1);
    assert_eq!(put.body["modifiedIndex"], 1);
    // The other sidecar has it (its watch), with the same indices.
    let got = call_on(&b, "GET", "/apisix/admin/routes/r", None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, put.body);
    assert_eq!(sb.routes().routes["r"]["uri"], "/r");
    let upd = call_on(
        &b,
        "PUT",
        "/apisix/admin/routes/r",
        Some(&route_to("192.0.2.1:2")),
    )
    .await;
    assert_eq!(upd.status, StatusCode::OK, "{}", upd.body);
    assert_eq!(upd.body["createdIndex"], 1);
    assert_eq!(upd.body["modifiedIndex"], 2);
    let list = call_on(&a, "GET", "/apisix/admin/routes", None).await;
    assert_eq!(list.body["list"][0]["modifiedIndex"], 2);
    let del = call_on(&a, "DELETE", "/apisix/admin/routes/r", None).await;
    assert_eq!(del.status, StatusCode::OK);
    assert_eq!(del.body["modifiedIndex"], 3);
    assert_eq!(
        call_on(&b, "GET", "/apisix/admin/routes/r", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_put_on_a_stale_sidecar_is_decided_again_and_wins() {
    let (store, a, b, sa, sb) = two_sidecars().await;
    // B does not see A's write: both decide on "r is absent".
    store.watching(1, false);
    let first = call_on(
        &a,
        "PUT",
        "/apisix/admin/routes/r",
        Some(&route_to("192.0.2.1:1")),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.body["modifiedIndex"], 1);
    assert!(sb.routes().routes.is_empty());
    store.watching(1, true);
    let second = call_on(
        &b,
        "PUT",
        "/apisix/admin/routes/r",
        Some(&route_to("192.0.2.1:2")),
    )
    .await;
    // Not a second "created" over the first: an update of it, later.
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(second.body["createdIndex"], 1);
    assert_eq!(second.body["modifiedIndex"], 2);
    // The later write is what is stored, and both sidecars publish it.
    let stored = &store.now().data.routes["r"];
    assert!(stored["upstream"]["nodes"].get("192.0.2.1:2").is_some());
    assert_eq!(sb.routes().routes["r"], *stored);
    assert_eq!(sa.routes().routes["r"], *stored);
    // The conflict read also gave B what A had done.
    assert_eq!(sb.known().revision, 2);
    // One failed transaction, then the one that won.
    assert_eq!(store.writes.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_patch_on_a_stale_sidecar_merges_onto_the_latest() {
    let (store, a, b, _, _) = two_sidecars().await;
    let r = json!({"uri": "/r", "desc": "one", "upstream": {"nodes": {"192.0.2.1:1": 1}}});
    call_on(&a, "PUT", "/apisix/admin/routes/r", Some(&r.to_string())).await;
    store.watching(1, false);
    let p = call_on(
        &a,
        "PATCH",
        "/apisix/admin/routes/r",
        Some(r#"{"name": "from-a"}"#),
    )
    .await;
    assert_eq!(p.status, StatusCode::OK);
    store.watching(1, true);
    let p = call_on(
        &b,
        "PATCH",
        "/apisix/admin/routes/r",
        Some(r#"{"desc": "from-b"}"#),
    )
    .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let stored = &store.now().data.routes["r"];
    // A's change is not lost under B's.
    assert_eq!(stored["name"], "from-a");
    assert_eq!(stored["desc"], "from-b");
    assert_eq!(p.body["modifiedIndex"], 3);
}

#[tokio::test]
async fn a_secret_kept_on_a_stale_sidecar_is_the_latest() {
    let (store, a, b, _, _) = two_sidecars().await;
    let r = oidc_route(json!({})).to_string();
    call_on(&a, "PUT", "/apisix/admin/routes/r", Some(&r)).await;
    let generated = session_secret(&store.now().data.routes["r"]).unwrap();
    store.watching(1, false);
    let mut with_new = oidc_route(json!({"session": {"secret": "x".repeat(40)}}));
    with_new["plugins"]["openid-connect"]["client_secret"] = json!("new-client-secret");
    call_on(
        &a,
        "PUT",
        "/apisix/admin/routes/r",
        Some(&with_new.to_string()),
    )
    .await;
    // B writes the redacted form back: it keeps what is stored now,
    // not what B saw.
    let mut back = oidc_route(json!({"session": {"secret": REDACTED}}));
    back["plugins"]["openid-connect"]["client_secret"] = json!(REDACTED);
    store.watching(1, true);
    let w = call_on(&b, "PUT", "/apisix/admin/routes/r", Some(&back.to_string())).await;
    assert_eq!(w.status, StatusCode::OK, "{}", w.body);
    assert_eq!(
        w.body["value"]["plugins"]["openid-connect"]["client_secret"],
        REDACTED
    );
    let stored = &store.now().data.routes["r"];
    assert_eq!(
        stored["plugins"]["openid-connect"]["client_secret"],
        "new-client-secret"
    );
    assert_eq!(session_secret(stored).unwrap(), "x".repeat(40));
    assert_ne!(session_secret(stored).unwrap(), generated);
}

#[tokio::test]
async fn references_are_checked_against_the_latest() {
    let (store, a, b, _, _) = two_sidecars().await;
    let u = upstream_body().to_string();
    call_on(&a, "PUT", "/apisix/admin/upstreams/u", Some(&u)).await;
    // B still sees u when A deletes it: B's route naming u is refused.
    store.watching(1, false);
    assert_eq!(
        call_on(&a, "DELETE", "/apisix/admin/upstreams/u", None)
            .await
            .status,
        StatusCode::OK
    );
    store.watching(1, true);
    let r = call_on(
        &b,
        "PUT",
        "/apisix/admin/routes/r",
        Some(r#"{"uri": "/", "upstream_id": "u"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(store.now().data.routes.is_empty());

    // B still sees no route using u2 when A creates one: B cannot
    // delete u2.
    store.watching(1, true);
    call_on(&a, "PUT", "/apisix/admin/upstreams/u2", Some(&u)).await;
    store.watching(1, false);
    let r = call_on(
        &a,
        "PUT",
        "/apisix/admin/routes/r",
        Some(r#"{"uri": "/", "upstream_id": "u2"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    store.watching(1, true);
    let d = call_on(&b, "DELETE", "/apisix/admin/upstreams/u2", None).await;
    assert_eq!(d.status, StatusCode::BAD_REQUEST, "{}", d.body);
    assert!(
        d.body["error_msg"].as_str().unwrap().contains("route [r]"),
        "{}",
        d.body
    );
    assert!(store.now().data.upstreams.contains_key("u2"));
}

#[tokio::test]
async fn a_store_that_is_down_is_a_503_and_reads_still_answer() {
    let (store, a, _, sa, _) = two_sidecars().await;
    call_on(
        &a,
        "PUT",
        "/apisix/admin/routes/r",
        Some(&route_to("192.0.2.1:1")),
    )
    .await;
    let before = sa.known();
    let mut rx = sa.subscribe();
    rx.borrow_and_update();
    store.down.store(true, Ordering::SeqCst);
    for (method, uri, body) in [
        (
            "PUT",
            "/apisix/admin/routes/r",
            Some(route_to("192.0.2.1:2")),
        ),
        (
            "POST",
            "/apisix/admin/routes",
            Some(route_to("192.0.2.1:2")),
        ),
        (
            "PATCH",
            "/apisix/admin/routes/r",
            Some(r#"{"desc": "x"}"#.to_string()),
        ),
        ("DELETE", "/apisix/admin/routes/r", None),
    ] {
        let w = call_on(&a, method, uri, body.as_deref()).await;
        assert_eq!(w.status, StatusCode::SERVICE_UNAVAILABLE, "{method}");
        let msg = w.body["error_msg"].as_str().unwrap();
        assert!(
            msg.contains("cannot save the route: cannot reach etcd"),
            "{msg}"
        );
        assert!(msg.contains("nothing was changed"), "{msg}");
    }
    // A refused call is still refused as such, before the store.
    let bad = call_on(&a, "PUT", "/apisix/admin/routes/r", Some(r#"{"uri": 5}"#)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let got = call_on(&a, "GET", "/apisix/admin/routes/r", None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["modifiedIndex"], 1);
    assert_eq!(sa.known(), before);
    assert!(!rx.has_changed().unwrap());
    store.down.store(false, Ordering::SeqCst);
    let w = call_on(
        &a,
        "PUT",
        "/apisix/admin/routes/r",
        Some(&route_to("192.0.2.1:2")),
    )
    .await;
    assert_eq!(w.status, StatusCode::OK);
}

/// A store that always answers "changed concurrently".
struct Contended(Versioned);

impl Store for Contended {
    fn load(&self) -> StoreFuture<'_, Versioned> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
    fn write<'a>(&'a self, _: &'a Write, _: &'a Stored) -> StoreFuture<'a, Written> {
        Box::pin(async move {
            let mut now = self.0.clone();
            now.revision += 1;
            Err(StoreError::Conflict(Box::new(now)))
        })
    }
}

#[tokio::test]
async fn endless_conflicts_end_in_a_409() {
    let state = AdminState::new(
        Arc::new(Contended(Versioned::default())),
        AdminSettings::default(),
    )
    .await
    .unwrap();
    let w = call_on(
        &router(state, Router::new()),
        "PUT",
        "/apisix/admin/routes/r",
        Some(&route_to("192.0.2.1:1")),
    )
    .await;
    assert_eq!(w.status, StatusCode::CONFLICT);
    assert!(w.body["error_msg"]
        .as_str()
        .unwrap()
        .contains("nothing was written"));
}

#[tokio::test]
async fn observe_takes_only_later_revisions() {
    let state = AdminState::new(Arc::new(MemoryStore::new()), AdminSettings::default())
        .await
        .unwrap();
    let mut rx = state.subscribe();
    rx.borrow_and_update();
    let mut v = Versioned::default();
    v.apply(
        ResourceKind::Route,
        "r",
        Some(br#"{"id": "r"}"#),
        Revs {
            created: 5,
            modified: 5,
        },
    );
    assert!(state.observe(v.clone()));
    assert!(rx.has_changed().unwrap());
    rx.borrow_and_update();
    assert!(!state.observe(v.clone()));
    let older = Versioned {
        revision: 4,
        ..Versioned::default()
    };
    assert!(!state.observe(older));
    assert_eq!(state.routes().routes.len(), 1);
    // A later revision with the same data: known, not published again.
    v.revision = 6;
    assert!(state.observe(v));
    assert!(!rx.has_changed().unwrap());
    assert_eq!(state.known().revision, 6);
}

#[tokio::test]
async fn lists_filter_and_page_as_apisix_3() {
    let api = Api::new().await;
    // 25 routes created one second apart, ids in the reverse order of
    // creation (pages go oldest first, not by id).
    for i in 0..25u64 {
        api.now.store(T0 + i, Ordering::SeqCst);
        let mut r = json!({"uri": format!("/r/{i}"), "name": format!("route-{i}"),
                           "upstream": {"nodes": {"192.0.2.1:80": 1}}});
        if i % 5 == 0 {
            r["labels"] = json!({"team": "a"});
        }
        if i == 7 {
            r = json!({"uris": ["/x", "/seven/*"], "upstream": {"nodes": {"192.0.2.1:80": 1}}});
        }
        let a = api
            .put(&format!("/apisix/admin/routes/{}", 100 - i), &r)
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }
    let get = |q: &str| {
        let uri = format!("/apisix/admin/routes{q}");
        let api = &api;
        async move { api.call("GET", &uri, None).await }
    };
    let ids = |a: &Answer| -> Vec<String> {
        a.body["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["value"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    // No query: everything, by id.
    let a = get("").await;
    assert_eq!((a.body["total"].clone(), ids(&a).len()), (json!(25), 25));
    assert_eq!(ids(&a)[0], "100");

    // Pages: oldest first; total counts all; past the end is empty.
    let a = get("?page=1&page_size=10").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["total"], 25);
    assert_eq!(
        ids(&a),
        (0..10).map(|i| (100 - i).to_string()).collect::<Vec<_>>()
    );
    let a = get("?page=3&page_size=10").await;
    assert_eq!(ids(&a), ["80", "79", "78", "77", "76"]);
    assert!(ids(&get("?page=4&page_size=10").await).is_empty());
    // page below 1 is 1; only one of the two: no paging.
    assert_eq!(ids(&get("?page=0&page_size=10").await)[0], "100");
    assert_eq!(ids(&get("?page=2").await).len(), 25);
    for bad_size in ["9", "501", "-1"] {
        let a = get(&format!("?page=1&page_size={bad_size}")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad_size}");
        assert!(a
            .body
            .to_string()
            .contains("page_size must be between 10 and 500"));
    }

    // Filters: name and uri are regexes (uri also searches `uris`), label
    // a key of `labels`; total counts what they keep; they combine.
    let a = get("?name=route-1").await;
    assert_eq!(a.body["total"], 11, "route-1 and route-10..19");
    let a = get("?name=%5Eroute-2%5Cd%24").await;
    assert_eq!(ids(&a), ["76", "77", "78", "79", "80"]);
    let a = get("?uri=seven").await;
    assert_eq!(ids(&a), ["93"]);
    let a = get("?label=team").await;
    assert_eq!(a.body["total"], 5);
    assert!(
        ids(&get("?label=a").await).is_empty(),
        "a label's key, not its value"
    );
    let a = get("?label=team&name=route-1&page=1&page_size=10").await;
    assert_eq!(
        (a.body["total"].clone(), ids(&a)),
        (json!(2), vec!["90".to_string(), "85".into()])
    );
    // A regex that does not compile matches nothing (APISIX's re.find
    // failing).
    let a = get("?name=%28").await;
    assert_eq!(
        (a.status, a.body["total"].clone()),
        (StatusCode::OK, json!(0))
    );
}
