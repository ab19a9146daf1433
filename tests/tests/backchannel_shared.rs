//! Logouts reach every gateway on the store (issue 17, slice 2): two
//! gateways (each its own sidecar and Envoy) on one etcd, the real test
//! provider's key signing the logout tokens. A back-channel logout posted
//! to gateway A, or an RP-initiated logout on A, makes the cookie refused
//! on B; a restarted sidecar (and Envoy) still refuses it, with etcd and
//! with the file store; the sidecar's revocation service takes nothing
//! without its key, nothing from a web page, and a bounded amount.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integration_tests::etcd::Etcd;
use integration_tests::gateway::Gateway;
use integration_tests::http::request;
use integration_tests::provider::{sign_js, CLIENT_ID, DEFAULT_CLIENT_SECRET};
use integration_tests::{
    unix_now as now, wait_for, Httpbin, Provider, ProviderOptions, Response, TestDir,
};
use oidc_core::revocation::subjects;
use oidc_core::revocation_feed::{Entry, List, Post, KEY_HEADER, MAX_PER_POST, PATH};
use oidc_core::secret::Secret;
use oidc_core::session::{self, Session, SessionId, SessionKey};
use serde_json::json;

const SECRET: &str = "backchannel-shared-session-secret-0123";
const BCL_PATH: &str = "/anything/backchannel-logout";
const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const FORM: &str = "application/x-www-form-urlencoded";
const WAIT: Duration = Duration::from_secs(10);
/// What the issue asks: every gateway refuses within 2 s. A slower one
/// is reported; the test fails after [`WAIT`] (a loaded 2-core CI).
const EXPECTED: Duration = Duration::from_secs(2);

/// Field order is drop order: gateways first, the folder last.
struct Stack {
    gws: Vec<Gateway>,
    etcd: Option<Etcd>,
    _httpbin: Httpbin,
    provider: Provider,
    key: PathBuf,
    dir: TestDir,
}

/// A gateway whose Envoy runs two workers (one polls per round: the
/// shared marker; both read the shared deny-lists).
fn gateway(dir: &Path, name: &str, etcd: Option<&Etcd>) -> Gateway {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    match etcd {
        Some(e) => {
            let url = e.url();
            Gateway::start_concurrent(&sub, &["--etcd", &url], 2)
        }
        None => Gateway::start_concurrent(&sub, &[], 2),
    }
}

impl Stack {
    /// `n` gateways (on one etcd when `with_etcd`, else one gateway on its
    /// file store), httpbin, the provider with our key, the login route.
    fn start(n: usize, with_etcd: bool) -> Stack {
        let dir = TestDir::for_current_test();
        let etcd = with_etcd.then(|| Etcd::start(dir.path()));
        let gws: Vec<Gateway> = (0..n)
            .map(|i| gateway(dir.path(), &format!("gw{i}"), etcd.as_ref()))
            .collect();
        let httpbin = Httpbin::start(dir.path());
        let key = dir.path().join("provider.jwk.json");
        std::fs::write(&key, sign_js(&["key", "provider-key"], None)).unwrap();
        let provider = Provider::start(
            dir.path(),
            ProviderOptions {
                key_file: Some(key.clone()),
                ..ProviderOptions::default()
            },
        );
        let body = json!({
            "id": "auth-with-oidc",
            "uri": "/anything/*",
            "plugins": {"openid-connect": {
                "bearer_only": false,
                "logout_path": "/anything/logout",
                "backchannel_logout_path": BCL_PATH,
                "client_id": CLIENT_ID,
                "client_secret": DEFAULT_CLIENT_SECRET,
                "discovery": provider.discovery_url(),
                "scope": "openid profile",
                "redirect_uri": "http://localhost:9080/anything/callback",
                "session": {"secret": SECRET, "absolute_timeout": 3600}
            }},
            "upstream": {"type": "roundrobin", "nodes": {format!("127.0.0.1:{}", httpbin.port): 1}}
        });
        let r = gws[0].admin("PUT", "/apisix/admin/routes", Some(&body.to_string()));
        assert_eq!(r.status, 201, "PUT route: {}", r.body);
        let s = Stack {
            gws,
            etcd,
            _httpbin: httpbin,
            provider,
            key,
            dir,
        };
        for i in 0..n {
            s.wait_for_route(i);
        }
        s
    }

    fn wait_for_route(&self, i: usize) {
        wait_for("the login route in Envoy", WAIT, || {
            let r = self.get(i, "/anything/test", &[("accept", HTML)]);
            (r.status == 302).then_some(())
        });
    }

    fn get(&self, i: usize, path: &str, headers: &[(&str, &str)]) -> Response {
        let host = format!("localhost:{}", self.gws[i].proxy_port);
        let mut h = vec![("host", host.as_str())];
        h.extend_from_slice(headers);
        request("GET", &self.gws[i].url(path), &h, None).expect("the gateway answers")
    }

    /// Whether gateway `i` lets the cookie through (200), else 401.
    fn signed_in(&self, i: usize, cookie: &str) -> bool {
        let r = self.get(
            i,
            "/anything/test",
            &[("accept", "application/json"), ("cookie", cookie)],
        );
        match r.status {
            200 => true,
            401 => false,
            other => panic!("unexpected {other}: {}", r.body),
        }
    }

    /// Waits until gateway `i` refuses `cookie`; how long it took.
    fn refused_within(&self, i: usize, cookie: &str, what: &str) -> Duration {
        let start = Instant::now();
        wait_for(what, WAIT, || (!self.signed_in(i, cookie)).then_some(()));
        let took = start.elapsed();
        let slow = if took > EXPECTED { " (slow)" } else { "" };
        eprintln!("{what}: {took:?}{slow}");
        took
    }

    /// A session cookie as a login on the route makes it, for `sub`/`sid`.
    fn session_cookie(&self, sub: &str, sid: &str) -> String {
        let key = SessionKey::for_route(
            &Secret::new(SECRET),
            &self.provider.discovery_url(),
            CLIENT_ID,
        );
        let mut s = Session::new(Secret::new("opaque-access-token"), now() - 60);
        let mut id = [0u8; 16];
        for (i, b) in format!("{sub}/{sid}").bytes().enumerate() {
            id[i % 16] ^= b;
        }
        s.id = SessionId(id);
        s.access_expires_at = Some(now() + 3600);
        s.id_claims = json!({"iss": self.provider.issuer(), "sub": sub, "sid": sid})
            .as_object()
            .cloned()
            .unwrap();
        session::encode(&s, &key, "session", [9; 12])
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Posts a valid logout token for `sid` to gateway `i`.
    fn backchannel_logout(&self, i: usize, sub: &str, sid: &str) {
        let t = now();
        let claims = json!({
            "iss": self.provider.issuer(), "aud": CLIENT_ID, "iat": t, "exp": t + 120,
            "jti": format!("jti-{sid}"), "events": {EVENT: {}}, "sub": sub, "sid": sid,
        });
        let input = json!({
            "header": {"alg": "RS256", "typ": "logout+jwt", "kid": "provider-key"},
            "payload": claims,
        });
        let token = sign_js(
            &["sign", self.key.to_str().unwrap()],
            Some(&input.to_string()),
        );
        let r = request(
            "POST",
            &self.gws[i].url(BCL_PATH),
            &[("content-type", FORM)],
            Some(format!("logout_token={token}").into_bytes()),
        )
        .unwrap();
        assert_eq!(r.status, 200, "logout token: {}", r.body);
    }
}

/// A back-channel logout posted to gateway A ends the session on B (and
/// on A at once); the other sessions go on.
#[test]
fn a_backchannel_logout_on_one_gateway_ends_the_session_on_the_other() {
    let s = Stack::start(2, true);
    let alice = s.session_cookie("alice", "sid-a");
    let bob = s.session_cookie("bob", "sid-b");
    for i in 0..2 {
        assert!(s.signed_in(i, &alice) && s.signed_in(i, &bob));
    }
    s.backchannel_logout(0, "alice", "sid-a");
    assert!(!s.signed_in(0, &alice), "A refuses at once");
    s.refused_within(1, &alice, "B refuses the back-channel-logged-out session");
    assert!(
        s.signed_in(0, &bob) && s.signed_in(1, &bob),
        "bob's session goes on"
    );
    assert!(
        s.gws[1].envoy_stat("wasmcustom.openid_connect.revocation_feed.received") >= 1,
        "B learnt it from the feed"
    );
    // In etcd: the key only (no user name, sid or token), with a lease.
    {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let k = subjects::key(subjects::Kind::Sid, &s.provider.issuer(), "sid-a");
        let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
        let name = format!("/apisix/oidc_revocations/subject-{hex}");
        let etcd = s.etcd.as_ref().unwrap();
        let r = etcd.v3("kv/range", &json!({"key": b64.encode(name.as_bytes())}));
        let kv = &r["kvs"][0];
        let lease = kv["lease"].as_str().unwrap_or("0");
        assert_ne!(lease, "0", "a lease: {r}");
        let value = String::from_utf8(b64.decode(kv["value"].as_str().unwrap()).unwrap()).unwrap();
        assert!(value.contains(&hex), "{value}");
        assert!(
            !value.contains("alice") && !value.contains("sid-a"),
            "{value}"
        );
    }
    // B's sidecar and Envoy restart (Envoy's shared data is gone): the
    // revocation comes back from etcd. So does a gateway started now.
    let mut s = s;
    s.gws[1].restart_sidecar();
    s.gws[1].restart_envoy();
    s.wait_for_route(1);
    s.refused_within(1, &alice, "B after its sidecar and Envoy restarted");
    assert!(s.signed_in(1, &bob));
    let c = gateway(s.dir.path(), "gw2", s.etcd.as_ref());
    s.gws.push(c);
    s.wait_for_route(2);
    s.refused_within(2, &alice, "a gateway started after the logout");
    assert!(s.signed_in(2, &bob));
}

/// RP-initiated logout on A: a copy of the cookie dies on B too, also
/// when A's sidecar was down at the logout.
#[test]
fn a_logout_on_one_gateway_kills_a_copied_cookie_on_the_other() {
    let s = Stack::start(2, true);
    let alice = s.session_cookie("alice", "sid-rp");
    assert!(s.signed_in(0, &alice) && s.signed_in(1, &alice));
    let r = s.get(0, "/anything/logout", &[("cookie", &alice)]);
    assert_eq!(r.status, 302, "logout: {}", r.body);
    assert!(!s.signed_in(0, &alice), "A refuses the copy at once");
    s.refused_within(1, &alice, "B refuses the copy of the logged-out cookie");

    // A's sidecar is down at the logout: A's filter keeps the entry and
    // posts it when the sidecar is back; nothing is lost.
    let mut s = s;
    let carol = s.session_cookie("carol", "sid-rp2");
    assert!(s.signed_in(0, &carol) && s.signed_in(1, &carol));
    s.gws[0].stop_sidecar();
    let r = s.get(0, "/anything/logout", &[("cookie", &carol)]);
    assert_eq!(r.status, 302, "logout: {}", r.body);
    assert!(!s.signed_in(0, &carol));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(s.signed_in(1, &carol), "B cannot know yet");
    s.gws[0].restart_sidecar();
    s.refused_within(1, &carol, "B once A's sidecar is back");
}

/// The file store: the revocation survives the sidecar's and Envoy's
/// restart (without the sidecar's file, a restarted Envoy has forgotten).
#[test]
fn the_file_store_keeps_revocations_across_a_restart() {
    let mut s = Stack::start(1, false);
    let alice = s.session_cookie("alice", "sid-f");
    let bob = s.session_cookie("bob", "sid-fb");
    assert!(s.signed_in(0, &alice));
    s.backchannel_logout(0, "alice", "sid-f");
    assert!(!s.signed_in(0, &alice));
    let file = s.gws[0].data_file.with_file_name("routes.revocations.json");
    wait_for("the revocation in the sidecar's file", WAIT, || {
        std::fs::read_to_string(&file)
            .ok()
            .filter(|t| t.contains("subject"))
            .map(|_| ())
    });
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Keys only: no user name, sid or token.
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains("alice") && !text.contains("sid-f"), "{text}");
    }
    s.gws[0].restart_sidecar();
    s.gws[0].restart_envoy();
    s.wait_for_route(0);
    s.refused_within(0, &alice, "the restarted gateway refuses the session");
    assert!(s.signed_in(0, &bob));
}

/// The sidecar's port and the key, as Envoy has them.
fn service(gw: &Gateway) -> (u16, String) {
    let admin = |path: &str| {
        request(
            "GET",
            &format!("http://127.0.0.1:{}{path}", gw.envoy_admin_port),
            &[],
            None,
        )
        .unwrap()
        .body
    };
    let clusters = admin("/clusters");
    let port = clusters
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("oidc|revocations::127.0.0.1:")?;
            rest.split("::").next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no oidc|revocations cluster: {clusters}"));
    let dump = admin("/config_dump");
    let at = dump.find("revocation_service").expect("the settings");
    let rest = &dump[at..];
    let key_at = rest.find("\\\"key\\\":\\\"").expect("the key") + 10;
    let key: String = rest[key_at..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    assert!(key.len() >= 32, "{key}");
    (port, key)
}

/// The revocation service refuses a request without the key or with a
/// wrong one, one from a web page (`Origin`), and too much at once; what
/// it refused reaches no gateway.
#[test]
fn the_revocation_service_is_guarded() {
    let s = Stack::start(2, true);
    let alice = s.session_cookie("alice", "sid-h");
    let (port, key) = service(&s.gws[0]);
    let url = format!("http://127.0.0.1:{port}{PATH}");
    let mut id = [0u8; 16];
    for (i, b) in "alice/sid-h".bytes().enumerate() {
        id[i % 16] ^= b;
    }
    let entry = Entry {
        list: List::Session,
        key: id,
        since: now(),
        until: now() + 600,
    };
    let body = serde_json::to_vec(&Post {
        entries: vec![entry],
    })
    .unwrap();
    let post = |headers: &[(&str, &str)], body: Vec<u8>| {
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(headers);
        request("POST", &url, &h, Some(body)).unwrap().status
    };
    assert_eq!(post(&[], body.clone()), 401, "no key");
    assert_eq!(
        post(&[(KEY_HEADER, "0123")], body.clone()),
        401,
        "wrong key"
    );
    let wrong_same_length = "0".repeat(key.len());
    assert_eq!(post(&[(KEY_HEADER, &wrong_same_length)], body.clone()), 401);
    assert_eq!(
        post(
            &[(KEY_HEADER, &key), ("origin", "http://evil.example")],
            body.clone()
        ),
        403,
        "from a web page"
    );
    let r = request("GET", &url, &[], None).unwrap();
    assert_eq!(r.status, 401, "polling without the key");
    // A flood in one request: refused whole.
    let many = serde_json::to_vec(&Post {
        entries: vec![entry; MAX_PER_POST + 1],
    })
    .unwrap();
    assert_ne!(post(&[(KEY_HEADER, &key)], many), 204);
    let huge = vec![b' '; 64 * 1024];
    assert_eq!(post(&[(KEY_HEADER, &key)], huge), 413);
    // None of it was taken.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(s.signed_in(0, &alice) && s.signed_in(1, &alice));
    // With the key, the same entry ends the session everywhere (what
    // the filter does after a logout).
    assert_eq!(post(&[(KEY_HEADER, &key)], body), 204);
    s.refused_within(1, &alice, "B after the keyed post");
    s.refused_within(0, &alice, "A after the keyed post");
}
