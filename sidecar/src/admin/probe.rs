//! What tools probe before they write (APISIX Dashboard, ADC, the ingress
//! controller): the plugin list and a plugin's schema, answered as APISIX
//! 3.x's `apisix/admin/init.lua` and `apisix/admin/plugins.lua` do.
//!
//! | call | answer |
//! |---|---|
//! | `GET /apisix/admin/plugins/list` | 200 `["openid-connect", "proxy-rewrite", ...]` ([`PLUGINS`]); `?subsystem=stream`: `[]` |
//! | `GET /apisix/admin/plugins/{name}` | 200 the plugin's JSON schema (every plugin of [`PLUGINS`]); 404 `{"error_msg": "plugin not found in subsystem http"}` |
//! | `GET /apisix/admin/schema/plugins/{name}` | the same (APISIX routes both to one handler) |
//!
//! The schemas are checked in: `openid-connect.schema.json`, the attributes
//! `oidc_core::config` accepts, with their defaults (a test keeps the two
//! naming the same attributes, and every default parsing to itself), and
//! `plugins.schema.json`, one per other plugin of [`PLUGINS`], with what
//! its parser accepts (tests: a schema per plugin, only attributes the
//! parser knows, its `examples` parse, and its defaults are the parser's).

use super::*;

use crate::apisix::route::OIDC_PLUGIN;

/// The plugins a route may carry here: what `plugins/list` answers.
pub const PLUGINS: &[&str] = crate::apisix::plugins::SUPPORTED;

/// The `openid-connect` schema as this gateway accepts it.
const OIDC_SCHEMA: &str = include_str!("openid-connect.schema.json");
/// The other plugins' schemas, by name.
const PLUGIN_SCHEMAS: &str = include_str!("plugins.schema.json");

/// The schema of plugin `name`, if this gateway has the plugin.
fn schema_of(name: &str) -> Option<Result<Value, String>> {
    let parsed = |text: &str| {
        serde_json::from_str::<Value>(text)
            .map_err(|e| format!("the plugin schema does not parse: {e}"))
    };
    if name == OIDC_PLUGIN {
        return Some(parsed(OIDC_SCHEMA));
    }
    if !PLUGINS.contains(&name) {
        return None;
    }
    Some(parsed(PLUGIN_SCHEMAS).and_then(|all| {
        all.get(name)
            .cloned()
            .ok_or_else(|| format!("no schema for {name}"))
    }))
}

/// The probe calls, for [`router`].
pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/apisix/admin/plugins/list", get(plugins_list))
        .route("/apisix/admin/plugins/{name}", get(plugin_schema))
        .route("/apisix/admin/schema/plugins/{name}", get(plugin_schema))
}

/// `subsystem` of the query: `http` (the default) or `stream`; anything
/// else is APISIX's 400 (the error names it).
fn subsystem(uri: &axum::http::Uri) -> Result<bool, String> {
    let query = uri.query().unwrap_or("");
    let arg = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "subsystem")
        .map(|(_, v)| v.into_owned());
    match arg.as_deref() {
        None | Some("http") => Ok(true),
        Some("stream") => Ok(false),
        Some(other) => Err(format!("unsupported subsystem: {other}")),
    }
}

async fn plugins_list(uri: axum::http::Uri) -> Response {
    match subsystem(&uri) {
        Ok(true) => reply(StatusCode::OK, json!(PLUGINS)),
        Ok(false) => reply(StatusCode::OK, json!([])),
        Err(msg) => error(StatusCode::BAD_REQUEST, msg),
    }
}

async fn plugin_schema(uri: axum::http::Uri, Path(name): Path<String>) -> Response {
    let http = match subsystem(&uri) {
        Ok(http) => http,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let subsystem = if http { "http" } else { "stream" };
    let Some(schema) = schema_of(&name).filter(|_| http) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("plugin not found in subsystem {subsystem}"),
        );
    };
    let consumer = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .any(|(k, v)| k == "schema_type" && v == "consumer");
    if consumer {
        return error(StatusCode::BAD_REQUEST, "not found schema".into());
    }
    match schema {
        Ok(schema) => reply(StatusCode::OK, schema),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[cfg(test)]
mod probe_tests {
    use super::*;
    use oidc_core::config::{PluginConfig, KNOWN_SESSION, KNOWN_TOP};
    use std::collections::BTreeSet;

    fn schema() -> Value {
        serde_json::from_str(OIDC_SCHEMA).unwrap()
    }

    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn the_schema_names_what_the_parser_accepts() {
        let s = schema();
        let top: BTreeSet<String> = KNOWN_TOP.iter().map(|k| k.to_string()).collect();
        assert_eq!(keys(&s["properties"]), top);
        let session: BTreeSet<String> = KNOWN_SESSION.iter().map(|k| k.to_string()).collect();
        assert_eq!(keys(&s["properties"]["session"]["properties"]), session);
    }

    /// Plugin `name`'s config `conf` through its parser.
    fn parse(name: &str, conf: &Value) -> Result<crate::apisix::plugins::Plugins, String> {
        let mut p = crate::apisix::plugins::Plugins::default();
        let mut e = crate::apisix::route::Errors::new();
        assert!(p.add(name, conf, &mut e), "{name}");
        if e.is_empty() {
            Ok(p)
        } else {
            Err(e.message())
        }
    }

    #[test]
    fn every_other_plugin_has_a_schema_of_what_its_parser_accepts() {
        let all: Value = serde_json::from_str(PLUGIN_SCHEMAS).unwrap();
        let names: BTreeSet<String> = PLUGINS
            .iter()
            .filter(|n| **n != OIDC_PLUGIN)
            .map(|n| n.to_string())
            .collect();
        assert_eq!(keys(&all), names, "one schema per plugin, no other");
        for name in &names {
            let s = &all[name];
            let known = crate::apisix::plugins::known(name).unwrap();
            for k in keys(&s["properties"]) {
                assert!(
                    known.contains(&k.as_str()),
                    "{name}.{k} is not the parser's"
                );
            }
            let examples = s["examples"].as_array().unwrap();
            assert!(!examples.is_empty(), "{name}");
            for ex in examples {
                let bare = parse(name, ex).unwrap_or_else(|e| panic!("{name} {ex}: {e}"));
                // The example with every default written out: the same.
                let mut full = ex.clone();
                for (k, p) in s["properties"].as_object().unwrap() {
                    if let (Some(d), None) = (p.get("default"), ex.get(k)) {
                        full[k] = d.clone();
                    }
                }
                let with_defaults =
                    parse(name, &full).unwrap_or_else(|e| panic!("{name} {full}: {e}"));
                assert_eq!(with_defaults, bare, "{name}: a default is not the parser's");
            }
        }
    }

    #[test]
    fn every_default_in_the_schema_parses_as_the_parser_default() {
        let s = schema();
        let mut config = json!({
            "client_id": "c",
            "client_secret": "s",
            "discovery": "http://127.0.0.1:1/.well-known/openid-configuration",
        });
        let mut session = json!({"secret": "0123456789abcdef"});
        for (k, p) in s["properties"].as_object().unwrap() {
            if let Some(d) = p.get("default") {
                config[k] = d.clone();
            }
        }
        for (k, p) in s["properties"]["session"]["properties"]
            .as_object()
            .unwrap()
        {
            if let Some(d) = p.get("default") {
                session[k] = d.clone();
            }
        }
        config["session"] = session.clone();
        let with_defaults = PluginConfig::parse(&config).unwrap();
        let bare = PluginConfig::parse(&json!({
            "client_id": "c",
            "client_secret": "s",
            "discovery": "http://127.0.0.1:1/.well-known/openid-configuration",
            "bearer_only": false,
            "session": {"secret": "0123456789abcdef"},
        }))
        .unwrap();
        assert_eq!(with_defaults, bare);
    }
}
