//! Admin API calls the plugin tests share: a route's openid-connect config
//! for the test provider, PUT expecting success, a 400 naming its causes.

use serde_json::{json, Value};

use crate::gateway::Gateway;
use crate::provider::{CLIENT_ID, DEFAULT_CLIENT_SECRET};
use crate::Response;

/// The test provider's client, `scope: openid profile`, with `extra` on top.
pub fn oidc(discovery: &str, extra: Value) -> Value {
    let mut p = json!({
        "client_id": CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "discovery": discovery,
        "scope": "openid profile",
    });
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

/// An Admin API call with a JSON body.
pub fn admin(gw: &Gateway, method: &str, path: &str, body: &Value) -> Response {
    gw.admin(method, path, Some(&body.to_string()))
}

/// PUT, expecting 200 or 201.
pub fn put(gw: &Gateway, path: &str, body: &Value) {
    let r = admin(gw, "PUT", path, body);
    assert!(
        r.status == 201 || r.status == 200,
        "PUT {path}: {} {}",
        r.status,
        r.body
    );
}

/// A 400 whose `error_msg` contains every one of `want`.
pub fn refused(r: &Response, want: &[&str]) {
    assert_eq!(r.status, 400, "{}", r.body);
    let msg = r.json()["error_msg"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for w in want {
        assert!(msg.contains(w), "missing {w:?} in {msg}");
    }
}
