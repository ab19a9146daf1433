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
//! - References, as APISIX resolves them (`apisix/secret.lua`,
//!   `apisix/core/env.lua`): a secret attribute ([`SECRET_FIELDS`]) that is
//!   `$env://NAME` (the prefix in any case, `$ENV://` too) is the sidecar's
//!   environment variable `NAME`; `$env://NAME/key` is the field `key` of
//!   the JSON object that variable holds. APISIX resolves references in any
//!   string of a plugin config; here a reference elsewhere is refused (not
//!   taken literally), and so are the sidecar's own `SIDECAR_*` variables:
//!   a value is sent to the provider the route names, so whoever may write
//!   routes may read the variables references can name (docs/security.md).
//!   So, unlike APISIX, only the variables the operator exposes are
//!   resolved ([`EnvAllow`], `--env-allow NAME,PREFIX*`; none by default,
//!   as nginx's `env` directive): any other name is refused with the same
//!   text whether it is set or not. They are resolved when a route is
//!   validated ([`resolve_refs`]: on every write, and for every published
//!   table), never stored resolved: the store and `GET` keep the reference
//!   (which is not redacted: it is not the secret), Envoy's route metadata
//!   gets the value. An unset variable refuses the route, naming the
//!   attribute and the variable. `$secret://` references (APISIX's secret
//!   managers: Vault, AWS, GCP) are refused: they are not supported, and a
//!   reference is never sent to a provider as if it were the secret.

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

/// The route as responses show it: its secrets replaced by [`REDACTED`]
/// (a reference such as `$env://NAME` is shown as it is).
pub fn redact(route: &Value) -> Value {
    let mut out = route.clone();
    if let Some(conf) = out.as_object_mut().and_then(plugin_mut) {
        for path in SECRET_FIELDS {
            if let Some(v) = get_mut(conf, path) {
                if v.as_str().is_some_and(|s| reference(s).is_some()) {
                    continue;
                }
                *v = Value::String(REDACTED.into());
            }
        }
    }
    out
}

/// APISIX's prefix of environment references (`core.env.PREFIX`), which
/// it compares in upper case.
const ENV_PREFIX: &str = "$ENV://";

/// APISIX's prefix of secret-manager references (`apisix/secret.lua`).
const SECRET_PREFIX: &str = "$secret://";

/// A reference in a config string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reference<'a> {
    /// `$env://NAME` or `$env://NAME/key`.
    Env { name: &'a str, key: Option<&'a str> },
    /// `$secret://...`.
    SecretManager,
}

fn reference(s: &str) -> Option<Reference<'_>> {
    if s.starts_with(SECRET_PREFIX) {
        return Some(Reference::SecretManager);
    }
    let head = s.get(..ENV_PREFIX.len())?;
    if !head.eq_ignore_ascii_case(ENV_PREFIX) {
        return None;
    }
    let path = &s[ENV_PREFIX.len()..];
    Some(match path.split_once('/') {
        Some((name, key)) => Reference::Env {
            name,
            key: Some(key),
        },
        None => Reference::Env {
            name: path,
            key: None,
        },
    })
}

/// The plugin config with its references resolved (see the module
/// comment); `env` reads an environment variable. The errors are
/// `(attribute, message)`, dotted attribute paths within the plugin.
pub fn resolve_refs(
    conf: &Value,
    env: &dyn Fn(&str) -> EnvLookup,
) -> Result<Value, Vec<(String, String)>> {
    let mut out = conf.clone();
    let mut errors = Vec::new();
    resolve_in(&mut out, "", env, &mut errors);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn resolve_in(
    v: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> EnvLookup,
    errors: &mut Vec<(String, String)>,
) {
    let child = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                resolve_in(x, &child(k), env, errors);
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter_mut().enumerate() {
                resolve_in(x, &child(&i.to_string()), env, errors);
            }
        }
        Value::String(s) => match reference(s) {
            None => {}
            Some(_) if !SECRET_FIELDS.iter().any(|f| f.join(".") == path) => errors.push((
                path.to_string(),
                format!(
                    "is a reference: references are resolved only in {}",
                    SECRET_FIELDS
                        .iter()
                        .map(|f| f.join("."))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            Some(Reference::SecretManager) => errors.push((
                path.to_string(),
                "is a \"$secret://\" reference: secret manager references are not \
                 supported (use \"$env://NAME\", or the value itself)"
                    .into(),
            )),
            Some(Reference::Env { name, key }) => match lookup(name, key, env) {
                Ok(value) => *v = value,
                Err(why) => errors.push((path.to_string(), why)),
            },
        },
        _ => {}
    }
}

fn lookup(name: &str, key: Option<&str>, env: &dyn Fn(&str) -> EnvLookup) -> Result<Value, String> {
    if name.is_empty() {
        return Err("is an \"$env://\" reference without a variable name".into());
    }
    if name.starts_with("SIDECAR_") {
        return Err(format!(
            "refers to the environment variable {name:?}: the sidecar's own settings \
             (SIDECAR_*) cannot be referred to"
        ));
    }
    let value = match env(name) {
        EnvLookup::Value(v) if !v.is_empty() => v,
        EnvLookup::Value(_) | EnvLookup::Unset => {
            return Err(format!(
                "refers to the environment variable {name:?}, which is not set (or empty) \
                 in the sidecar's environment"
            ))
        }
        EnvLookup::NotExposed => {
            return Err(format!(
                "refers to the environment variable {name:?}, which the sidecar does not \
                 expose to routes (start it with --env-allow {name}, or SIDECAR_ENV_ALLOW)"
            ))
        }
    };
    let Some(key) = key else {
        return Ok(Value::String(value));
    };
    // Never quote the variable's text: it holds the secret.
    let object: Value = serde_json::from_str(&value).map_err(|_| {
        format!(
            "refers to {key:?} in the environment variable {name:?}, which is not a JSON object"
        )
    })?;
    match object.get(key) {
        Some(x) if !x.is_null() => Ok(x.clone()),
        _ => Err(format!(
            "refers to {key:?} in the environment variable {name:?}, whose JSON object has no such field"
        )),
    }
}

/// What a reference's variable is, for [`resolve_refs`].
#[derive(PartialEq, Eq)]
pub enum EnvLookup {
    Value(String),
    /// Exposed, but not set.
    Unset,
    /// Not in the operator's allow-list: whether it is set is not said.
    NotExposed,
}

/// The environment variables references may name: exact names and
/// prefixes (`OIDC_*`); `*` alone is every variable (APISIX's behaviour).
/// `SIDECAR_*` stays refused whatever the list says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvAllow(Vec<String>);

impl EnvAllow {
    /// From `--env-allow` values, each a comma-separated list; every item
    /// is a variable name (`[A-Za-z0-9_]`), optionally ending in `*`.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<EnvAllow, String> {
        let mut out = Vec::new();
        for item in values.iter().flat_map(|v| v.as_ref().split(',')) {
            let item = item.trim();
            let name = item.strip_suffix('*').unwrap_or(item);
            if item.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "--env-allow: {item:?} is not a variable name or a prefix ending in '*'"
                ));
            }
            out.push(item.to_string());
        }
        Ok(EnvAllow(out))
    }

    pub fn allows(&self, name: &str) -> bool {
        self.0.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => p == name,
        })
    }
}

static ENV_ALLOW: std::sync::OnceLock<EnvAllow> = std::sync::OnceLock::new();

/// Sets the process's allow-list once, at start-up (`main.rs`); unset, no
/// variable is exposed.
pub fn set_env_allow(allow: EnvAllow) -> Result<(), String> {
    ENV_ALLOW
        .set(allow)
        .map_err(|_| "the --env-allow list is set once".to_string())
}

/// The sidecar's environment as the operator exposes it, for
/// [`resolve_refs`].
pub fn process_env(name: &str) -> EnvLookup {
    if !ENV_ALLOW.get().is_some_and(|a| a.allows(name)) {
        return EnvLookup::NotExposed;
    }
    match std::env::var(name) {
        Ok(v) => EnvLookup::Value(v),
        Err(_) => EnvLookup::Unset,
    }
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

    fn env(name: &str) -> EnvLookup {
        match name {
            "OIDC_SECRET" => EnvLookup::Value("from-the-env".into()),
            "OIDC_JSON" => EnvLookup::Value(r#"{"secret": "json-secret", "n": 5}"#.into()),
            "EMPTY" => EnvLookup::Value(String::new()),
            "HIDDEN" => EnvLookup::NotExposed,
            _ => EnvLookup::Unset,
        }
    }

    #[test]
    fn only_exposed_variables_resolve_and_the_refusal_does_not_say_if_it_is_set() {
        let errs = resolve_refs(&json!({"client_secret": "$env://HIDDEN"}), &env).unwrap_err();
        assert_eq!(errs[0].0, "client_secret");
        assert!(errs[0].1.contains("does not expose"), "{errs:?}");
        assert!(errs[0].1.contains("--env-allow HIDDEN"), "{errs:?}");

        let allow = EnvAllow::parse(&["OIDC_SECRET, APP_*", "X"]).unwrap();
        assert!(allow.allows("OIDC_SECRET"));
        assert!(allow.allows("APP_"));
        assert!(allow.allows("APP_CLIENT_SECRET"));
        assert!(allow.allows("X"));
        assert!(!allow.allows("OIDC_SECRET2"));
        assert!(!allow.allows("XY"));
        assert!(!allow.allows("PATH"));
        assert!(!EnvAllow::default().allows("PATH"));
        assert!(EnvAllow::parse(&["*"]).unwrap().allows("HOME"));
        for bad in ["", "A,,B", "A-B", "*A", "A**", "$env://A"] {
            assert!(EnvAllow::parse(&[bad]).is_err(), "{bad:?}");
        }
        // `*` exposes everything but the sidecar's own settings.
        let everything = |n: &str| {
            if EnvAllow::parse(&["*"]).unwrap().allows(n) {
                EnvLookup::Value("v".into())
            } else {
                EnvLookup::NotExposed
            }
        };
        assert!(resolve_refs(
            &json!({"client_secret": "$env://SIDECAR_ADMIN_KEY"}),
            &everything
        )
        .is_err());
    }

    #[test]
    fn env_references_are_resolved_as_apisix_does() {
        let conf = json!({
            "client_id": "c",
            "client_secret": "$Env://OIDC_SECRET",
            "session": {"secret": "$ENV://OIDC_JSON/secret"},
            "realm": "plain $env:// text",
        });
        let r = resolve_refs(&conf, &env).unwrap();
        assert_eq!(r["client_secret"], "from-the-env");
        assert_eq!(r["session"]["secret"], "json-secret");
        assert_eq!(r["realm"], "plain $env:// text");
        assert_eq!(r["client_id"], "c");
    }

    #[test]
    fn unresolvable_references_are_refused_by_name() {
        let conf = json!({
            "client_secret": "$env://NOT_SET",
            "session": {"secret": "$secret://vault/1/oidc/secret"},
        });
        let errs = resolve_refs(&conf, &env).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["client_secret", "session.secret"]);
        let text = format!("{errs:?}");
        assert!(text.contains("\\\"NOT_SET\\\", which is not set"), "{text}");
        assert!(
            text.contains("secret manager references are not supported"),
            "{text}"
        );
        for bad in [
            "$env://EMPTY",
            "$env://OIDC_SECRET/key",
            "$env://OIDC_JSON/missing",
            "$env://",
            "$env://SIDECAR_ADMIN_KEY",
        ] {
            let errs = resolve_refs(&json!({ "client_secret": bad }), &env).unwrap_err();
            assert_eq!(errs.len(), 1, "{bad}");
            // The variable's value is never quoted.
            assert!(!format!("{errs:?}").contains("from-the-env"), "{errs:?}");
        }
        // A reference outside the secret attributes: refused, not taken
        // literally (APISIX would resolve it; its value could then reach
        // clients, as `realm` does in `WWW-Authenticate`).
        let errs = resolve_refs(
            &json!({"realm": "$env://OIDC_SECRET", "authorization_params": {"x": "$secret://a/b/c"}}),
            &env,
        )
        .unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["authorization_params.x", "realm"]);
        assert!(errs[1]
            .1
            .contains("resolved only in client_secret, session.secret"));
    }

    #[test]
    fn references_are_shown_not_redacted() {
        let route = json!({"plugins": {"openid-connect": {
            "client_secret": "$env://OIDC_SECRET",
            "session": {"secret": "0123456789abcdef"}}}});
        let r = redact(&route);
        let conf = &r["plugins"]["openid-connect"];
        assert_eq!(conf["client_secret"], "$env://OIDC_SECRET");
        assert_eq!(conf["session"]["secret"], REDACTED);
    }

    #[test]
    fn a_route_names_the_variable_it_cannot_use() {
        let route = json!({"uri": "/a", "upstream": {"nodes": {"192.0.2.1:80": 1}},
            "plugins": {"openid-connect": {
                "client_id": "c", "bearer_only": true,
                "client_secret": "$env://OIDC_COMPAT_TEST_SURELY_UNSET_4d1f",
                "discovery": "http://127.0.0.1:1/.well-known/openid-configuration"}}});
        let e =
            crate::apisix::route::RouteSpec::parse("r", &route, &Default::default()).unwrap_err();
        assert!(
            e.contains("property \"plugins.openid-connect.client_secret\" refers to the environment variable \"OIDC_COMPAT_TEST_SURELY_UNSET_4d1f\", which the sidecar does not expose"),
            "{e}"
        );
    }
}
