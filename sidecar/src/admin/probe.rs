//! What tools probe before they write (APISIX Dashboard, ADC, the ingress
//! controller): the plugin list and a plugin's schema, answered as APISIX
//! 3.x's `apisix/admin/init.lua` and `apisix/admin/plugins.lua` do.
//!
//! | call | answer |
//! |---|---|
//! | `GET /apisix/admin/plugins/list` | 200 `["openid-connect"]` ([`PLUGINS`]); `?subsystem=stream`: `[]` |
//! | `GET /apisix/admin/plugins/{name}` | 200 the plugin's JSON schema; 404 `{"error_msg": "plugin not found in subsystem http"}` |
//! | `GET /apisix/admin/schema/plugins/{name}` | the same (APISIX routes both to one handler) |
//!
//! The schema is `openid-connect.schema.json`, checked in: the attributes
//! `oidc_core::config` accepts, with their defaults (a test keeps the two
//! naming the same attributes, and every default parsing to itself).

use super::*;

use crate::apisix::route::OIDC_PLUGIN;

/// The plugins a route may carry here: what `plugins/list` answers.
pub const PLUGINS: &[&str] = &[OIDC_PLUGIN];

/// The `openid-connect` schema as this gateway accepts it.
const OIDC_SCHEMA: &str = include_str!("openid-connect.schema.json");

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
    if !http || name != OIDC_PLUGIN {
        return error(
            StatusCode::NOT_FOUND,
            format!("plugin not found in subsystem {subsystem}"),
        );
    }
    let consumer = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .any(|(k, v)| k == "schema_type" && v == "consumer");
    if consumer {
        return error(StatusCode::BAD_REQUEST, "not found schema".into());
    }
    match serde_json::from_str::<Value>(OIDC_SCHEMA) {
        Ok(schema) => reply(StatusCode::OK, schema),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the plugin schema does not parse: {e}"),
        ),
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
