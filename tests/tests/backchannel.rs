//! OpenID Connect Back-Channel Logout 1.0 through the real gateway (the
//! sidecar and Envoy with the filter) and the real test provider, which
//! POSTs logout tokens to the route's `backchannel_logout_path` when a
//! session ends at its end-session endpoint (`BACKCHANNEL_LOGOUT_URI`).
//!
//! The provider signs with a key the test gives it (`KEY_FILE`), so the
//! test can also sign logout tokens as the provider would, each with one
//! thing wrong, and with another key. Sessions for the hostile cases are
//! sealed here with the route's `session.secret` (the filter cannot tell
//! them from a login's); the browser test makes real ones.

use std::path::{Path, PathBuf};
use std::time::Duration;

use integration_tests::browser::Browser;
use integration_tests::gateway::Gateway;
use integration_tests::http::request;
use integration_tests::provider::{sign_js, CLIENT_ID, DEFAULT_CLIENT_SECRET};
use integration_tests::{
    unix_now as now, wait_for, Httpbin, Provider, ProviderOptions, Response, TestDir,
};
use oidc_core::secret::Secret;
use oidc_core::session::{self, Session, SessionId, SessionKey};
use serde_json::{json, Value};

const SECRET: &str = "backchannel-test-session-secret-0123";
const BCL_PATH: &str = "/anything/backchannel-logout";
const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const WAIT: Duration = Duration::from_secs(10);
const FORM: &str = "application/x-www-form-urlencoded";

/// Field order is drop order: the gateway goes first, the folder last.
struct Stack {
    gw: Gateway,
    _httpbin: Httpbin,
    provider: Provider,
    key: PathBuf,
    other_key: PathBuf,
    dir: TestDir,
}

fn new_key(dir: &Path, file: &str, kid: &str) -> PathBuf {
    let path = dir.join(format!("{file}.jwk.json"));
    std::fs::write(&path, sign_js(&["key", kid], None)).unwrap();
    path
}

impl Stack {
    /// The gateway, httpbin, the provider (with our key and its
    /// back-channel URI pointing at the gateway), and the login route.
    fn start(session_required: bool) -> Stack {
        let dir = TestDir::for_current_test();
        let gw = Gateway::start(dir.path(), &[]);
        let httpbin = Httpbin::start(dir.path());
        let key = new_key(dir.path(), "provider", "provider-key");
        // Another key under the same `kid`: what an attacker can make.
        let other_key = new_key(dir.path(), "attacker", "provider-key");
        let uri = format!("http://127.0.0.1:{}{BCL_PATH}", gw.proxy_port);
        let mut env = vec![
            ("BACKCHANNEL_LOGOUT_URI".to_string(), uri),
            (
                "NODE_OPTIONS".to_string(),
                "--max-http-header-size=65536".to_string(),
            ),
        ];
        if !session_required {
            env.push(("BACKCHANNEL_LOGOUT_SESSION_REQUIRED".into(), "false".into()));
        }
        let provider = Provider::start(
            dir.path(),
            ProviderOptions {
                key_file: Some(key.clone()),
                env,
                ..ProviderOptions::default()
            },
        );
        let body = format!(
            r#"{{
"id": "auth-with-oidc",
"uri": "/anything/*",
"plugins": {{"openid-connect": {{
  "bearer_only": false,
  "logout_path": "/anything/logout",
  "backchannel_logout_path": "{BCL_PATH}",
  "client_id": "{CLIENT_ID}",
  "client_secret": "{DEFAULT_CLIENT_SECRET}",
  "discovery": "{}",
  "scope": "openid profile",
  "redirect_uri": "http://localhost:{}/anything/callback",
  "session": {{"secret": "{SECRET}", "absolute_timeout": 3600}}
}}}},
"upstream": {{"type": "roundrobin", "nodes": {{"127.0.0.1:{}": 1}}}}
}}"#,
            provider.discovery_url(),
            gw.proxy_port,
            httpbin.port
        );
        let r = gw.admin("PUT", "/apisix/admin/routes", Some(&body));
        assert_eq!(r.status, 201, "PUT route: {}", r.body);
        let s = Stack {
            gw,
            _httpbin: httpbin,
            provider,
            key,
            other_key,
            dir,
        };
        wait_for("the login route in Envoy", WAIT, || {
            let r = s.get("/anything/test", &[("accept", HTML)]);
            (r.status == 302).then_some(())
        });
        s
    }

    fn host(&self) -> String {
        format!("localhost:{}", self.gw.proxy_port)
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        let host = self.host();
        let mut h = vec![("host", host.as_str())];
        h.extend_from_slice(headers);
        request("GET", &self.gw.url(path), &h, None).expect("the gateway answers")
    }

    /// Whether the `Cookie` header gets the upstream with an identity (200
    /// from httpbin), else the 401 of a JSON client without a session.
    fn signed_in(&self, cookie: &str) -> bool {
        let r = self.get(
            "/anything/test",
            &[("accept", "application/json"), ("cookie", cookie)],
        );
        match r.status {
            200 => {
                let v = r.json();
                assert!(v["headers"]["X-Access-Token"].is_string(), "{v:#}");
                true
            }
            401 => false,
            other => panic!("unexpected {other}: {}", r.body),
        }
    }

    /// A session cookie as a login on this route makes it (same key), for
    /// `sub` with `sid`, made `age` seconds ago.
    fn session_cookie(&self, sub: &str, sid: Option<&str>, age: u64) -> String {
        let key = SessionKey::for_route(
            &Secret::new(SECRET),
            &self.provider.discovery_url(),
            CLIENT_ID,
        );
        let t = now() - age;
        let mut s = Session::new(Secret::new("opaque-access-token"), t);
        let mut id = [0u8; 16];
        for (i, b) in format!("{sub}{sid:?}").bytes().enumerate() {
            id[i % 16] ^= b;
        }
        s.id = SessionId(id);
        s.access_expires_at = Some(now() + 3600);
        let mut claims = json!({"iss": self.provider.issuer(), "sub": sub});
        if let Some(sid) = sid {
            claims["sid"] = json!(sid);
        }
        s.id_claims = claims.as_object().cloned().unwrap();
        session::encode(&s, &key, "session", [9; 12])
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Claims of a valid logout token for `sub` / `sid`.
    fn claims(&self, sub: Option<&str>, sid: Option<&str>, jti: &str) -> Value {
        let t = now();
        let mut c = json!({
            "iss": self.provider.issuer(),
            "aud": CLIENT_ID,
            "iat": t,
            "exp": t + 120,
            "jti": jti,
            "events": {EVENT: {}},
        });
        if let Some(sub) = sub {
            c["sub"] = json!(sub);
        }
        if let Some(sid) = sid {
            c["sid"] = json!(sid);
        }
        c
    }

    /// A JWT of `claims`, signed with the provider's key, or another key
    /// under the same `kid`.
    fn sign(&self, claims: &Value, provider_key: bool) -> String {
        let key = if provider_key {
            &self.key
        } else {
            &self.other_key
        };
        let input = json!({
            "header": {"alg": "RS256", "typ": "logout+jwt", "kid": "provider-key"},
            "payload": claims,
        });
        sign_js(&["sign", key.to_str().unwrap()], Some(&input.to_string()))
    }

    fn post(&self, content_type: &str, body: Vec<u8>) -> Response {
        let url = self.gw.url(BCL_PATH);
        request("POST", &url, &[("content-type", content_type)], Some(body))
            .expect("the gateway answers")
    }

    fn logout(&self, token: &str) -> Response {
        self.post(FORM, format!("logout_token={token}").into_bytes())
    }

    fn stat(&self, name: &str) -> u64 {
        self.gw
            .envoy_stat(&format!("wasmcustom.openid_connect.{name}"))
    }
}

fn assert_refused(r: &Response, what: &str, contains: &str) {
    assert_eq!(r.status, 400, "{what}: {}", r.body);
    let v = r.json();
    assert_eq!(v["error"], "invalid_request", "{what}: {v}");
    let d = v["error_description"].as_str().unwrap_or_default();
    assert!(d.contains(contains), "{what}: {d:?} lacks {contains:?}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
}

/// Every hostile case is refused and ends nothing; a valid token ends the
/// session it names (`sid`) and no other; its replay is refused; a token
/// with only `sub` ends every session of that user made until then, not a
/// later login.
#[test]
fn logout_tokens_are_checked_and_end_only_what_they_name() {
    let s = Stack::start(true);
    let alice = s.session_cookie("alice", Some("sid-a"), 60);
    let alice_2 = s.session_cookie("alice", Some("sid-a2"), 60);
    let bob = s.session_cookie("bob", Some("sid-b"), 60);
    for c in [&alice, &alice_2, &bob] {
        assert!(s.signed_in(c), "a session before any logout");
    }
    let valid = |sub: Option<&str>, sid: Option<&str>, jti: &str| s.claims(sub, sid, jti);

    // Hostile: another key, wrong aud, a nonce, no events, an ID token.
    let forged = s.sign(&valid(Some("bob"), Some("sid-b"), "j-forged"), false);
    assert_refused(&s.logout(&forged), "another key", "signature");
    let mut c = valid(Some("bob"), Some("sid-b"), "j-aud");
    c["aud"] = json!("another-client");
    assert_refused(&s.logout(&s.sign(&c, true)), "wrong aud", "audience");
    let mut c = valid(Some("bob"), Some("sid-b"), "j-nonce");
    c["nonce"] = json!("n-1");
    assert_refused(&s.logout(&s.sign(&c, true)), "with nonce", "nonce");
    let mut c = valid(Some("bob"), Some("sid-b"), "j-events");
    c.as_object_mut().unwrap().remove("events");
    assert_refused(&s.logout(&s.sign(&c, true)), "no events", "event");
    let mut c = valid(Some("bob"), Some("sid-b"), "j-iss");
    c["iss"] = json!("http://127.0.0.1:1/realms/other");
    assert_refused(&s.logout(&s.sign(&c, true)), "wrong iss", "issuer");
    let c = valid(None, None, "j-none");
    assert_refused(&s.logout(&s.sign(&c, true)), "neither sid nor sub", "sid");
    // The provider's own ID token (nonce-less from the password grant,
    // but no events) is no logout token.
    let id_token = s.provider.password_grant()["id_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_refused(&s.logout(&id_token), "an ID token", "event");
    // Not a form POST; no token; too large.
    let r = request("GET", &s.gw.url(BCL_PATH), &[], None).unwrap();
    assert_eq!(r.status, 405, "GET: {}", r.body);
    assert_eq!(r.header("allow"), Some("POST"));
    let token = s.sign(&valid(Some("bob"), Some("sid-b"), "j-json"), true);
    let r = s.post(
        "application/json",
        json!({"logout_token": token}).to_string().into(),
    );
    assert_refused(&r, "JSON body", "x-www-form-urlencoded");
    assert_refused(
        &s.post(FORM, b"token=x".to_vec()),
        "no logout_token",
        "logout_token",
    );
    let big = format!("logout_token={token}&pad={}", "a".repeat(64 * 1024));
    assert_refused(&s.post(FORM, big.into_bytes()), "oversized", "too large");
    for c in [&alice, &alice_2, &bob] {
        assert!(s.signed_in(c), "nothing refused ended a session");
    }
    assert_eq!(s.stat("backchannel.logout"), 0);

    // Valid, by sid: alice's first session only.
    let token = s.sign(&valid(Some("alice"), Some("sid-a"), "j-1"), true);
    let r = s.logout(&token);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(!s.signed_in(&alice), "the named session ended");
    assert!(s.signed_in(&alice_2), "alice's other session did not");
    assert!(s.signed_in(&bob), "bob's did not");
    // The same token again: a replay.
    assert_refused(&s.logout(&token), "replayed jti", "used before");

    // Only sub: every session of bob made until now; a later login works.
    let token = s.sign(&valid(Some("bob"), None, "j-2"), true);
    assert_eq!(s.logout(&token).status, 200);
    assert!(!s.signed_in(&bob));
    assert!(s.signed_in(&alice_2));
    std::thread::sleep(Duration::from_millis(1100));
    let bob_later = s.session_cookie("bob", Some("sid-b2"), 0);
    assert!(
        s.signed_in(&bob_later),
        "bob logs in again after the logout"
    );
    assert_eq!(s.stat("backchannel.logout"), 2);
    assert!(s.stat("session.backchannel_refused") >= 2);
    // The route's upstream never saw a back-channel request (the sidecar
    // routes them to its sink while the filter holds the body).
    let log = std::fs::read_to_string(s.dir.path().join("httpbin.log")).unwrap();
    assert!(log.contains("GET /anything/test"), "{log}");
    assert!(!log.contains(BCL_PATH), "the upstream saw: {log}");
    assert!(
        s.gw.envoy_stat(&format!(
            "cluster.{}.upstream_rq_total",
            sidecar_sink_cluster()
        )) > 0
    );
}

fn sidecar_sink_cluster() -> &'static str {
    sidecar::translate::BACKCHANNEL_SINK_CLUSTER
}

/// The whole road with a real browser: two logins at the provider (two
/// provider sessions, two `sid`s), the second ended at the provider's
/// end-session endpoint, which POSTs the logout token to the gateway: that
/// session's cookie is refused at once (a JSON client gets 401, the
/// browser a new login), the first session's cookie still works.
#[test]
fn ending_the_provider_session_ends_the_gateway_session() {
    provider_logout(true);
}

/// The same with a provider whose logout tokens name the user only
/// (`sub`, no `sid`): both of the user's sessions end.
#[test]
fn a_logout_token_without_sid_ends_every_session_of_the_user() {
    provider_logout(false);
}

fn provider_logout(session_required: bool) {
    let s = Stack::start(session_required);
    let browser = Browser::start(s.dir.path());
    let local = |path: &str| format!("http://localhost:{}{path}", s.gw.proxy_port);
    let login = || {
        browser.goto(&local("/anything/test"));
        browser.wait_for_element("#kc-form-login", WAIT);
        browser.login(
            integration_tests::provider::USER,
            integration_tests::provider::PASSWORD,
        );
        browser.wait_for_url(WAIT, |u| u.starts_with(&local("/anything/test")));
        // The session cookies, read on another localhost origin (cookies
        // are per host): the provider's 404 page.
        browser.goto(&format!("http://localhost:{}/elsewhere", s.provider.port));
        let cookies = browser.cookies();
        let session: Vec<String> = cookies
            .iter()
            .filter(|(n, _)| n == "session" || n.starts_with("session_") && !n.contains("flow"))
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        assert!(!session.is_empty(), "a session cookie: {cookies:?}");
        session.join("; ")
    };
    let first = login();
    // A second login, as from another browser: the gateway's cookies (on
    // localhost, where `login` left the browser) and the provider's (on
    // 127.0.0.1) go.
    browser.delete_all_cookies();
    browser.goto(&format!(
        "{}/.well-known/openid-configuration",
        s.provider.issuer()
    ));
    browser.delete_all_cookies();
    let second = login();
    assert_ne!(first, second);
    assert!(s.signed_in(&first) && s.signed_in(&second));

    // The user logs out at the provider (not through the gateway).
    let before = s.stat("backchannel.logout");
    browser.goto(&format!(
        "{}/protocol/openid-connect/logout?client_id={CLIENT_ID}",
        s.provider.issuer()
    ));
    browser.wait_for_element("#kc-logout-success", WAIT);
    assert_eq!(
        s.stat("backchannel.logout"),
        before + 1,
        "the provider's POST was taken"
    );
    assert!(
        !s.signed_in(&second),
        "the ended session's cookie is refused"
    );
    assert_eq!(
        s.signed_in(&first),
        session_required,
        "the other provider session's ends only with a `sub`-only token"
    );
    // The browser, with that cookie, is sent to log in again.
    browser.goto(&local("/anything/test"));
    browser.wait_for_element("#kc-form-login", WAIT);
}
