//! APISIX route objects: the JSON the Admin API takes and stores, and the
//! validated form the translation to Envoy reads.
//!
//! The stored form of a route is its JSON object (as APISIX keeps it in
//! etcd); [`RouteSpec::parse`] validates it and is called both when a route
//! is written (to refuse it) and when routes are translated.

use oidc_core::config::PluginConfig;
use serde_json::{Map, Value};

use crate::apisix::plugins::Plugins;
use crate::apisix::secrets;
use crate::apisix::upstream::{parse_timeouts, Timeouts, Upstream};
use crate::apisix::vars::{self, Disjuncts};
use crate::store::Upstreams;

/// The plugin this gateway implements.
pub const OIDC_PLUGIN: &str = "openid-connect";

/// Route attributes read here.
const KNOWN: &[&str] = &[
    "id",
    "uri",
    "uris",
    "name",
    "desc",
    "methods",
    "host",
    "hosts",
    "priority",
    "plugins",
    "upstream",
    "upstream_id",
    "timeout",
    "labels",
    "status",
    "create_time",
    "update_time",
    "vars",
    "remote_addr",
    "remote_addrs",
    "enable_websocket",
];

/// APISIX route attributes this gateway does not implement (yet).
const UNSUPPORTED: &[&str] = &["filter_func", "script", "service_id", "plugin_config_id"];

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE",
];

/// How a route matches the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UriMatch {
    Exact(String),
    /// `uri` ending in `*`: the part before it.
    Prefix(String),
}

impl UriMatch {
    fn parse(s: &str) -> Option<UriMatch> {
        if !s.starts_with('/') {
            return None;
        }
        match s.strip_suffix('*') {
            Some(prefix) if prefix.contains('*') => None,
            Some(prefix) => Some(UriMatch::Prefix(prefix.to_string())),
            None if s.contains('*') => None,
            None => Some(UriMatch::Exact(s.to_string())),
        }
    }
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub id: String,
    pub uris: Vec<UriMatch>,
    pub methods: Vec<String>,
    pub hosts: Vec<String>,
    pub priority: i64,
    /// `status: 0` disables the route.
    pub enabled: bool,
    /// The `openid-connect` config object as stored, with its `$env://`
    /// references resolved (what Envoy's route metadata carries), and its
    /// parsed form.
    pub oidc: Option<(Value, PluginConfig)>,
    /// The other plugins (`apisix/plugins/`).
    pub plugins: Plugins,
    /// The inline `upstream`, or the one `upstream_id` names.
    pub upstream: Upstream,
    /// The route's `timeout`, which overrides the upstream's.
    pub timeout: Option<Timeouts>,
    /// `vars` as alternatives of Envoy matchers (`[[]]`: no `vars`).
    pub vars: Disjuncts,
    /// `remote_addrs` / `remote_addr` (empty: any client).
    pub remote_addrs: Vec<ipnet::IpNet>,
    /// `enable_websocket`: upgrades to WebSocket pass on this route.
    pub enable_websocket: bool,
}

/// Collects `property "x" ...` errors.
#[derive(Default)]
pub struct Errors(Vec<String>);

impl Errors {
    pub fn new() -> Errors {
        Errors(Vec::new())
    }

    pub fn push(&mut self, field: &str, msg: impl std::fmt::Display) {
        self.0.push(format!("property \"{field}\" {msg}"));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `invalid configuration: <every problem>`.
    pub fn message(&self) -> String {
        format!("invalid configuration: {}", self.0.join("; "))
    }
}

impl RouteSpec {
    /// Validates a route object whose id is `id`; an `upstream_id` must
    /// name one of `upstreams`. The error lists every problem, each naming
    /// its attribute.
    pub fn parse(id: &str, v: &Value, upstreams: &Upstreams) -> Result<RouteSpec, String> {
        let Some(obj) = v.as_object() else {
            return Err("invalid configuration: the route must be a JSON object".into());
        };
        let mut e = Errors::new();
        for k in obj.keys() {
            if UNSUPPORTED.contains(&k.as_str()) {
                e.push(k, "is not supported by this gateway");
            } else if !KNOWN.contains(&k.as_str()) {
                e.push(k, "is not allowed (additional properties forbidden)");
            }
        }
        check_id(obj, id, &mut e);

        let mut uris = Vec::new();
        match (obj.get("uri"), obj.get("uris")) {
            (Some(_), Some(_)) => e.push("uri", "and \"uris\" cannot both be set"),
            (None, None) => e.push("uri", "is required (or \"uris\")"),
            (Some(u), None) => match u.as_str().and_then(UriMatch::parse) {
                Some(m) => uris.push(m),
                None => e.push(
                    "uri",
                    "must be a path starting with '/', with '*' only at its end",
                ),
            },
            (None, Some(list)) => match list.as_array() {
                Some(items) if !items.is_empty() => {
                    for u in items {
                        match u.as_str().and_then(UriMatch::parse) {
                            Some(m) => uris.push(m),
                            None => e.push(
                                "uris",
                                "must be paths starting with '/', with '*' only at their end",
                            ),
                        }
                    }
                }
                _ => e.push("uris", "must be a non-empty array of strings"),
            },
        }

        let methods = match obj.get("methods") {
            None => Vec::new(),
            Some(m) => match string_list(m) {
                Some(list) => {
                    for x in &list {
                        if !METHODS.contains(&x.as_str()) {
                            e.push("methods", format!("has an unknown method {x:?}"));
                        }
                    }
                    list
                }
                None => {
                    e.push("methods", "must be an array of strings");
                    Vec::new()
                }
            },
        };

        let mut hosts = Vec::new();
        match (obj.get("host"), obj.get("hosts")) {
            (Some(_), Some(_)) => e.push("host", "and \"hosts\" cannot both be set"),
            (Some(h), None) => match h.as_str() {
                Some(h) => hosts.push(h.to_ascii_lowercase()),
                None => e.push("host", "must be a string"),
            },
            (None, Some(h)) => match string_list(h) {
                Some(list) if !list.is_empty() => {
                    hosts = list.iter().map(|h| h.to_ascii_lowercase()).collect()
                }
                _ => e.push("hosts", "must be a non-empty array of strings"),
            },
            (None, None) => {}
        }
        for h in &hosts {
            if !valid_host_pattern(h) {
                e.push(
                    "host",
                    format!("{h:?} is not a host name (a leading \"*.\" is allowed)"),
                );
            }
        }

        let priority = match obj.get("priority") {
            None => 0,
            Some(p) => p.as_i64().unwrap_or_else(|| {
                e.push("priority", "must be an integer");
                0
            }),
        };
        let enabled = match obj.get("status") {
            None => true,
            Some(s) => match s.as_i64() {
                Some(0) => false,
                Some(1) => true,
                _ => {
                    e.push("status", "must be 0 or 1");
                    true
                }
            },
        };
        for (field, want_string) in [("name", true), ("desc", true)] {
            if let Some(x) = obj.get(field) {
                if want_string && !x.is_string() {
                    e.push(field, "must be a string");
                }
            }
        }
        if let Some(labels) = obj.get("labels") {
            let ok = labels
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string));
            if !ok {
                e.push("labels", "must be an object of strings");
            }
        }
        for t in ["create_time", "update_time"] {
            if obj.get(t).is_some_and(|x| x.as_u64().is_none()) {
                e.push(t, "must be a unix time in seconds");
            }
        }

        let vars = match obj.get("vars") {
            None => vec![Vec::new()],
            Some(v) => vars::parse_vars(v).unwrap_or_else(|why| {
                e.push("vars", why);
                vec![Vec::new()]
            }),
        };
        let remote_addrs = match (obj.get("remote_addr"), obj.get("remote_addrs")) {
            (None, None) => Vec::new(),
            (Some(_), Some(_)) => {
                e.push("remote_addr", "and \"remote_addrs\" cannot both be set");
                Vec::new()
            }
            (Some(a), None) => vars::parse_remote_addrs(a, true).unwrap_or_else(|why| {
                e.push("remote_addr", why);
                Vec::new()
            }),
            (None, Some(a)) => vars::parse_remote_addrs(a, false).unwrap_or_else(|why| {
                e.push("remote_addrs", why);
                Vec::new()
            }),
        };
        let enable_websocket = match obj.get("enable_websocket") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                e.push("enable_websocket", "must be a boolean");
                false
            }
        };

        let mut plugins = Plugins::default();
        let oidc = parse_all_plugins(obj.get("plugins"), &mut e, &mut plugins);
        if let Some(p) = &mut plugins.prometheus {
            // APISIX's `route` label: the id, or the name with `prefer_name`.
            let name = obj
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty());
            p.label = match name {
                Some(n) if p.prefer_name => n.to_string(),
                _ => id.to_string(),
            };
        }
        let timeout = obj
            .get("timeout")
            .and_then(|t| parse_timeouts(t, "timeout", &mut e));
        let upstream = match (obj.get("upstream"), obj.get("upstream_id")) {
            (None, None) => {
                e.push("upstream", "is required (or \"upstream_id\")");
                None
            }
            (Some(_), Some(_)) => {
                e.push("upstream", "and \"upstream_id\" cannot both be set");
                None
            }
            (Some(u), None) => Upstream::parse(u, "upstream.", &mut e),
            (None, Some(uid)) => match id_text(uid) {
                None => {
                    e.push("upstream_id", "must be a string or an integer");
                    None
                }
                Some(uid) => {
                    match upstreams
                        .get(&uid)
                        .map(|u| Upstream::parse_resource(&uid, u))
                    {
                        None => {
                            e.push(
                                "upstream_id",
                                format!(
                                    "names no upstream: failed to fetch upstream info by upstream id [{uid}], response code: 404"
                                ),
                            );
                            None
                        }
                        Some(Err(msg)) => {
                            e.push(
                                "upstream_id",
                                format!("names an upstream that does not validate: {msg}"),
                            );
                            None
                        }
                        Some(Ok(u)) => Some(u),
                    }
                }
            },
        };

        match upstream {
            Some(upstream) if e.is_empty() => {
                let spec = RouteSpec {
                    id: id.to_string(),
                    uris,
                    methods,
                    hosts,
                    priority,
                    enabled,
                    oidc,
                    plugins,
                    upstream,
                    timeout,
                    vars,
                    remote_addrs,
                    enable_websocket,
                };
                for why in vars::session_cookie_clashes(&spec, std::iter::empty()) {
                    e.push("vars", why);
                }
                if e.is_empty() {
                    Ok(spec)
                } else {
                    Err(e.message())
                }
            }
            _ => Err(e.message()),
        }
    }
}

/// An id as APISIX accepts it: a string or an integer.
pub fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// The resource id: the one in the URL must be valid, and an `id` in the
/// body (string or integer) must be the same.
pub fn check_id(obj: &Map<String, Value>, id: &str, e: &mut Errors) {
    if let Some(body_id) = obj.get("id") {
        match id_text(body_id) {
            Some(b) if b == id => {}
            Some(_) => e.push("id", "does not match the id in the URL"),
            None => e.push("id", "must be a string or an integer"),
        }
    }
    if !valid_id(id) {
        e.push(
            "id",
            "must be 1-64 characters of letters, digits, '-', '_' and '.'",
        );
    }
}

pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn string_list(v: &Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|x| x.as_str().map(str::to_string))
        .collect()
}

pub fn valid_host_pattern(h: &str) -> bool {
    let name = h.strip_prefix("*.").unwrap_or(h);
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

pub fn parse_plugins(v: Option<&Value>, e: &mut Errors) -> Option<(Value, PluginConfig)> {
    parse_all_plugins(v, e, &mut Plugins::default())
}

/// [`parse_plugins`], the other plugins validated into `others`.
pub fn parse_all_plugins(
    v: Option<&Value>,
    e: &mut Errors,
    others: &mut Plugins,
) -> Option<(Value, PluginConfig)> {
    let plugins = match v {
        None => return None,
        Some(Value::Object(m)) => m,
        Some(_) => {
            e.push("plugins", "must be an object");
            return None;
        }
    };
    let mut out = None;
    let before = e.len();
    for (name, conf) in plugins {
        if name != OIDC_PLUGIN {
            if others.add(name, conf, e) {
                continue;
            }
            e.push(
                &format!("plugins.{name}"),
                "is not a plugin this gateway has (unknown plugin)",
            );
            continue;
        }
        let conf = match secrets::resolve_refs(conf, &secrets::process_env) {
            Ok(resolved) => resolved,
            Err(errs) => {
                for (field, why) in errs {
                    e.push(&format!("plugins.{OIDC_PLUGIN}.{field}"), why);
                }
                continue;
            }
        };
        match PluginConfig::parse(&conf) {
            Ok(c) => out = Some((conf, c)),
            Err(errs) => {
                for x in errs.0 {
                    e.push(&format!("plugins.{OIDC_PLUGIN}.{}", x.field), &x.message);
                }
            }
        }
    }
    if e.len() == before {
        others.check(e);
    }
    out
}

/// The route object with `id`, as stored.
pub fn with_id(mut obj: Map<String, Value>, id: &str) -> Map<String, Value> {
    obj.insert("id".into(), Value::String(id.into()));
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apisix::upstream::Node;
    use serde_json::json;

    fn none() -> Upstreams {
        Upstreams::new()
    }

    fn quickstart(plugin: Value) -> Value {
        json!({
            "id": "auth-with-oidc",
            "uri": "/anything/*",
            "plugins": {"openid-connect": plugin},
            "upstream": {"type": "roundrobin", "nodes": {"httpbin.org:80": 1}}
        })
    }

    #[test]
    fn the_quickstart_route_parses() {
        let v = quickstart(json!({
            "bearer_only": true,
            "client_id": "apisix-quickstart-client",
            "client_secret": "bSaIN3MV1YynmtXvU8lKkfeY0iwpr9cH",
            "discovery": "http://192.168.42.145:8080/realms/quickstart-realm/.well-known/openid-configuration",
            "scope": "openid profile",
            "redirect_uri": "http://localhost:9080/anything/callback"
        }));
        let r = RouteSpec::parse("auth-with-oidc", &v, &none()).unwrap();
        assert_eq!(r.uris, vec![UriMatch::Prefix("/anything/".into())]);
        assert_eq!(
            r.upstream.nodes,
            vec![Node {
                host: "httpbin.org".into(),
                port: 80,
                weight: 1,
                priority: 0,
            }]
        );
        assert!(r.oidc.is_some());
        assert!(r.enabled);
    }

    #[test]
    fn errors_name_the_field() {
        let v = json!({
            "id": "x",
            "uri": "/a",
            "uris": ["/b"],
            "colour": "blue",
            "vars": [["uri", "==", "/a"]],
            "script": "x",
            "methods": ["FETCH"],
            "plugins": {"key-auth": {}, "openid-connect": {"client_id": 5}},
            "upstream": {"type": "chash", "key": "server_name", "nodes": {"bad host:80": 1, "ok:80": -1, "ok2:99999": 1}}
        });
        let e = RouteSpec::parse("x", &v, &none()).unwrap_err();
        for want in [
            "property \"uri\" and \"uris\" cannot both be set",
            "property \"colour\" is not allowed",
            "property \"vars\" expression [\"uri\",\"==\",\"/a\"] tests the variable \"uri\"",
            "property \"script\" is not supported",
            "property \"methods\" has an unknown method",
            "property \"plugins.key-auth\" is not a plugin",
            "property \"plugins.openid-connect.client_id\" must be a string",
            "property \"plugins.openid-connect.discovery\" is required",
            "property \"upstream.key\" \"server_name\" is not supported",
            "property \"upstream.nodes.bad host:80\"",
            "property \"upstream.nodes.ok:80\" weight must not be negative",
            "property \"upstream.nodes.ok2:99999\"",
        ] {
            assert!(e.contains(want), "missing {want:?} in {e}");
        }
    }

    #[test]
    fn uri_forms() {
        assert_eq!(
            UriMatch::parse("/a/b"),
            Some(UriMatch::Exact("/a/b".into()))
        );
        assert_eq!(
            UriMatch::parse("/a/*"),
            Some(UriMatch::Prefix("/a/".into()))
        );
        assert_eq!(UriMatch::parse("/*"), Some(UriMatch::Prefix("/".into())));
        assert_eq!(UriMatch::parse("a"), None);
        assert_eq!(UriMatch::parse("/a*/b"), None);
    }

    #[test]
    fn ids_must_agree_and_be_sane() {
        let mut v = quickstart(json!(null));
        v["plugins"] = json!({});
        assert!(RouteSpec::parse("auth-with-oidc", &v, &none()).is_ok());
        assert!(RouteSpec::parse("other", &v, &none())
            .unwrap_err()
            .contains("property \"id\""));
        v["id"] = json!(12);
        assert!(RouteSpec::parse("12", &v, &none()).is_ok());
        assert!(RouteSpec::parse("a/b", &v, &none()).is_err());
    }

    #[test]
    fn status_zero_disables_and_hosts_are_checked() {
        let mut v = quickstart(json!(null));
        v["plugins"] = json!({});
        v["status"] = json!(0);
        v["hosts"] = json!(["*.Example.com", "api.example.com"]);
        let r = RouteSpec::parse("auth-with-oidc", &v, &none()).unwrap();
        assert!(!r.enabled);
        assert_eq!(r.hosts, vec!["*.example.com", "api.example.com"]);
        v["hosts"] = json!(["a..b"]);
        assert!(RouteSpec::parse("auth-with-oidc", &v, &none())
            .unwrap_err()
            .contains("property \"host\""));
    }

    #[test]
    fn vars_may_not_test_the_routes_own_session_cookies() {
        let mut v = quickstart(json!({
            "client_id": "c",
            "client_secret": "s",
            "discovery": "https://idp/.well-known/openid-configuration",
            "redirect_uri": "https://app/cb",
            "session": {"secret": "0123456789abcdef", "cookie_name": "sid"}
        }));
        for cookie in ["cookie_sid", "cookie_sid_1", "cookie_sid_flow_abc"] {
            v["vars"] = json!([[cookie, "~~", "."]]);
            let e = RouteSpec::parse("auth-with-oidc", &v, &none()).unwrap_err();
            assert!(
                e.contains("this route's openid-connect filter removes"),
                "{e}"
            );
        }
        for cookie in ["cookie_sidx", "cookie_xsid", "cookie_session"] {
            v["vars"] = json!([[cookie, "~~", "."]]);
            assert!(
                RouteSpec::parse("auth-with-oidc", &v, &none()).is_ok(),
                "{cookie}"
            );
        }
    }
}
