//! The secrets in a route: what the Admin API shows of them, what it keeps
//! when a write leaves them out, and what it generates.
//!
//! - Responses show `plugins.openid-connect.client_secret` and
//!   `plugins.openid-connect.session.secret` as [`REDACTED`]. (APISIX
//!   encrypts these `encrypt_fields` at rest and decrypts them again for
//!   `GET`, so its Admin API shows them in clear; this one never does.)
//! - A write whose secret is exactly [`REDACTED`] keeps the stored value of
//!   the same route, so a route read with `GET` can be written back. With
//!   nothing stored to keep, the marker is refused.
//! - A login route (`bearer_only` not `true`) needs `session.secret` to
//!   encrypt its session cookie. A write that leaves it out keeps the stored
//!   one, or gets a new random one: the APISIX tutorial's bodies have no
//!   `session` block, and a secret that changed on every write would log
//!   every user out.

// The secret attributes of the plugin object: core's list, the fields the
// parsed config holds as `Secret`s.
use oidc_core::config::SECRET_FIELDS;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::apisix::route::OIDC_PLUGIN;

/// What responses show in place of a secret.
pub const REDACTED: &str = "******";

/// Why [`fill`] refused a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FillError {
    /// The route is wrong (a 400); the message names the attribute.
    Invalid(String),
    /// No random bytes for a new secret (a 500).
    Random(String),
}

/// Random bytes in a generated session secret (shown as twice as many hex
/// digits).
const GENERATED_BYTES: usize = 32;

/// A new random session secret: 64 hex digits.
pub fn generate_secret() -> Result<String, String> {
    let mut bytes = [0u8; GENERATED_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| format!("cannot generate a session secret: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn plugin(route: &Value) -> Option<&Map<String, Value>> {
    route.get("plugins")?.get(OIDC_PLUGIN)?.as_object()
}

fn plugin_mut(route: &mut Map<String, Value>) -> Option<&mut Map<String, Value>> {
    route
        .get_mut("plugins")?
        .as_object_mut()?
        .get_mut(OIDC_PLUGIN)?
        .as_object_mut()
}

fn get<'a>(obj: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    let mut cur = obj;
    for p in parents {
        cur = cur.get(*p)?.as_object()?;
    }
    cur.get(*last)
}

fn get_mut<'a>(obj: &'a mut Map<String, Value>, path: &[&str]) -> Option<&'a mut Value> {
    let (last, parents) = path.split_last()?;
    let mut cur = obj;
    for p in parents {
        cur = cur.get_mut(*p)?.as_object_mut()?;
    }
    cur.get_mut(*last)
}

/// Prepares a route object about to be written: puts back the stored
/// secrets where it holds [`REDACTED`], and fills in `session.secret` for
/// a login route (the stored one, else a new one). `stored` is what the
/// same route id holds now, if anything. The error names the attribute.
pub fn fill(route: &mut Map<String, Value>, stored: Option<&Value>) -> Result<(), FillError> {
    let stored = stored.and_then(plugin);
    let Some(conf) = plugin_mut(route) else {
        return Ok(());
    };

    let mut errors = Vec::new();
    for path in SECRET_FIELDS {
        let Some(v) = get_mut(conf, path) else {
            continue;
        };
        if v.as_str() != Some(REDACTED) {
            continue;
        }
        match stored.and_then(|s| get(s, path)).filter(|s| s.is_string()) {
            Some(keep) => *v = keep.clone(),
            None => errors.push(format!(
                "property \"plugins.{OIDC_PLUGIN}.{}\" is the redaction marker {REDACTED:?}, \
                 but this route has no stored secret to keep: send the secret itself",
                path.join(".")
            )),
        }
    }
    if !errors.is_empty() {
        return Err(FillError::Invalid(format!(
            "invalid configuration: {}",
            errors.join("; ")
        )));
    }

    if conf.get("bearer_only") == Some(&Value::Bool(true)) {
        return Ok(());
    }
    let session = conf
        .entry("session")
        .or_insert_with(|| Value::Object(Map::new()));
    // Anything but an object is for the validation to refuse.
    let Some(session) = session.as_object_mut() else {
        return Ok(());
    };
    if session.contains_key("secret") {
        return Ok(());
    }
    let keep = stored
        .and_then(|s| get(s, &["session", "secret"]))
        .and_then(Value::as_str)
        .map(str::to_string);
    let secret = match keep {
        Some(s) => s,
        None => generate_secret().map_err(FillError::Random)?,
    };
    session.insert("secret".into(), Value::String(secret));
    Ok(())
}

/// The route as responses show it: its secrets replaced by [`REDACTED`].
pub fn redact(route: &Value) -> Value {
    let mut out = route.clone();
    if let Some(conf) = out.as_object_mut().and_then(plugin_mut) {
        for path in SECRET_FIELDS {
            if let Some(v) = get_mut(conf, path) {
                *v = Value::String(REDACTED.into());
            }
        }
    }
    out
}

/// Whether `given` is the configured admin key, in time that does not
/// depend on where they differ (both are hashed first, so not on their
/// lengths either). An empty configured key matches nothing.
pub fn key_matches(expected: &str, given: &[u8]) -> bool {
    if expected.is_empty() {
        return false;
    }
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(given);
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn login_route(plugin: Value) -> Map<String, Value> {
        obj(json!({"uri": "/a", "plugins": {"openid-connect": plugin}}))
    }

    #[test]
    fn generated_secrets_are_long_and_different() {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn a_login_route_gets_a_session_secret_and_keeps_it() {
        let mut r = login_route(json!({"client_id": "c"}));
        fill(&mut r, None).unwrap();
        let generated = r["plugins"]["openid-connect"]["session"]["secret"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(generated.len(), 64);
        let stored = Value::Object(r.clone());

        // Written again without it: the stored one is kept.
        let mut again = login_route(json!({"client_id": "c", "session": {"cookie_name": "x"}}));
        fill(&mut again, Some(&stored)).unwrap();
        assert_eq!(
            again["plugins"]["openid-connect"]["session"],
            json!({"cookie_name": "x", "secret": generated})
        );

        // One sent explicitly wins.
        let mut mine = login_route(json!({"session": {"secret": "mine-0123456789abcdef"}}));
        fill(&mut mine, Some(&stored)).unwrap();
        assert_eq!(
            mine["plugins"]["openid-connect"]["session"]["secret"],
            "mine-0123456789abcdef"
        );
    }

    #[test]
    fn bearer_only_routes_and_other_routes_are_left_alone() {
        let mut r = login_route(json!({"bearer_only": true}));
        let before = r.clone();
        fill(&mut r, None).unwrap();
        assert_eq!(r, before);
        let mut r = obj(json!({"uri": "/a", "plugins": {}}));
        let before = r.clone();
        fill(&mut r, None).unwrap();
        assert_eq!(r, before);
        // Shapes the validation refuses are left for it to name.
        for odd in [
            json!({"uri": "/a", "plugins": "x"}),
            json!({"uri": "/a", "plugins": {"openid-connect": 5}}),
            json!({"uri": "/a", "plugins": {"openid-connect": {"session": 5}}}),
        ] {
            let mut r = obj(odd.clone());
            fill(&mut r, None).unwrap();
            assert_eq!(Value::Object(r), odd);
        }
    }

    #[test]
    fn the_marker_keeps_the_stored_secret_or_is_refused() {
        let stored = json!({"plugins": {"openid-connect": {
            "client_secret": "real-client-secret",
            "session": {"secret": "real-session-secret-0123"}}}});
        let mut r =
            login_route(json!({"client_secret": REDACTED, "session": {"secret": REDACTED}}));
        fill(&mut r, Some(&stored)).unwrap();
        assert_eq!(
            r["plugins"]["openid-connect"],
            stored["plugins"]["openid-connect"]
        );

        let mut r =
            login_route(json!({"client_secret": REDACTED, "session": {"secret": REDACTED}}));
        let FillError::Invalid(e) = fill(&mut r, None).unwrap_err() else {
            panic!("not an Invalid error");
        };
        assert!(
            e.contains("property \"plugins.openid-connect.client_secret\" is the redaction marker"),
            "{e}"
        );
        assert!(
            e.contains(
                "property \"plugins.openid-connect.session.secret\" is the redaction marker"
            ),
            "{e}"
        );
    }

    #[test]
    fn redaction_hides_both_secrets_and_nothing_else() {
        let r = json!({"id": "a", "plugins": {"openid-connect": {
            "client_id": "c", "client_secret": "s", "session": {"secret": "t", "cookie_name": "n"}}}});
        let shown = redact(&r);
        assert_eq!(
            shown,
            json!({"id": "a", "plugins": {"openid-connect": {
                "client_id": "c", "client_secret": REDACTED,
                "session": {"secret": REDACTED, "cookie_name": "n"}}}})
        );
        let plain = json!({"id": "b", "uri": "/b"});
        assert_eq!(redact(&plain), plain);
    }

    #[test]
    fn keys_compare_exactly() {
        let key = "edd1c9f034335f136f87ad84b625c8f1";
        assert!(key_matches(key, key.as_bytes()));
        assert!(!key_matches(key, b"edd1c9f034335f136f87ad84b625c8f2"));
        assert!(!key_matches(key, b"edd1c9f034335f136f87ad84b625c8f"));
        assert!(!key_matches(key, b""));
        assert!(!key_matches("", b""));
    }
}
