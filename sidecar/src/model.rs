//! APISIX route objects: the JSON the Admin API takes and stores, and the
//! validated form the translation to Envoy reads.
//!
//! The stored form of a route is its JSON object (as APISIX keeps it in
//! etcd); [`RouteSpec::parse`] validates it and is called both when a route
//! is written (to refuse it) and when routes are translated.

use oidc_core::config::PluginConfig;
use serde_json::{Map, Value};

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
    "labels",
    "status",
    "create_time",
    "update_time",
];

/// APISIX route attributes this gateway does not implement (yet).
const UNSUPPORTED: &[&str] = &[
    "remote_addr",
    "remote_addrs",
    "vars",
    "filter_func",
    "script",
    "service_id",
    "upstream_id",
    "plugin_config_id",
    "timeout",
    "enable_websocket",
];

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

/// One upstream node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub host: String,
    pub port: u16,
    pub weight: u32,
}

/// `upstream` (this issue: `type: roundrobin` with a `nodes` map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub nodes: Vec<Node>,
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
    /// The `openid-connect` config object as stored, and its parsed form.
    pub oidc: Option<(Value, PluginConfig)>,
    pub upstream: Upstream,
}

/// Collects `property "x" ...` errors.
struct Errors(Vec<String>);

impl Errors {
    fn push(&mut self, field: &str, msg: impl std::fmt::Display) {
        self.0.push(format!("property \"{field}\" {msg}"));
    }
}

impl RouteSpec {
    /// Validates a route object whose id is `id`. The error lists every
    /// problem, each naming its attribute.
    pub fn parse(id: &str, v: &Value) -> Result<RouteSpec, String> {
        let Some(obj) = v.as_object() else {
            return Err("invalid configuration: the route must be a JSON object".into());
        };
        let mut e = Errors(Vec::new());
        for k in obj.keys() {
            if UNSUPPORTED.contains(&k.as_str()) {
                e.push(k, "is not supported by this gateway");
            } else if !KNOWN.contains(&k.as_str()) {
                e.push(k, "is not allowed (additional properties forbidden)");
            }
        }
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

        let oidc = parse_plugins(obj.get("plugins"), &mut e);
        let upstream = match obj.get("upstream") {
            None => {
                e.push("upstream", "is required");
                None
            }
            Some(u) => parse_upstream(u, &mut e),
        };

        match upstream {
            Some(upstream) if e.0.is_empty() => Ok(RouteSpec {
                id: id.to_string(),
                uris,
                methods,
                hosts,
                priority,
                enabled,
                oidc,
                upstream,
            }),
            _ => Err(format!("invalid configuration: {}", e.0.join("; "))),
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

fn valid_host_pattern(h: &str) -> bool {
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

fn parse_plugins(v: Option<&Value>, e: &mut Errors) -> Option<(Value, PluginConfig)> {
    let plugins = match v {
        None => return None,
        Some(Value::Object(m)) => m,
        Some(_) => {
            e.push("plugins", "must be an object");
            return None;
        }
    };
    let mut out = None;
    for (name, conf) in plugins {
        if name != OIDC_PLUGIN {
            e.push(
                &format!("plugins.{name}"),
                "is not a plugin this gateway has (unknown plugin)",
            );
            continue;
        }
        match PluginConfig::parse(conf) {
            Ok(c) => out = Some((conf.clone(), c)),
            Err(errs) => {
                for x in errs.0 {
                    e.push(&format!("plugins.{OIDC_PLUGIN}.{}", x.field), &x.message);
                }
            }
        }
    }
    out
}

fn parse_upstream(v: &Value, e: &mut Errors) -> Option<Upstream> {
    let Some(obj) = v.as_object() else {
        e.push("upstream", "must be an object");
        return None;
    };
    for k in obj.keys() {
        if !["type", "nodes"].contains(&k.as_str()) {
            e.push(
                &format!("upstream.{k}"),
                "is not supported by this gateway yet",
            );
        }
    }
    match obj.get("type").map(|t| t.as_str()) {
        None | Some(Some("roundrobin")) => {}
        Some(Some(t)) => e.push(
            "upstream.type",
            format!("{t:?} is not supported (roundrobin)"),
        ),
        Some(None) => e.push("upstream.type", "must be a string"),
    }
    let Some(nodes) = obj.get("nodes").and_then(Value::as_object) else {
        e.push(
            "upstream.nodes",
            "is required: an object of \"host:port\": weight",
        );
        return None;
    };
    if nodes.is_empty() {
        e.push("upstream.nodes", "must name at least one node");
    }
    let mut out = Vec::new();
    for (addr, weight) in nodes {
        let field = format!("upstream.nodes.{addr}");
        let node = parse_node(addr, weight);
        match node {
            Ok(n) => out.push(n),
            Err(msg) => e.push(&field, msg),
        }
    }
    Some(Upstream { nodes: out })
}

fn parse_node(addr: &str, weight: &Value) -> Result<Node, String> {
    let weight = match weight.as_i64() {
        Some(w) if w < 0 => return Err("weight must not be negative".into()),
        Some(w) if w > i64::from(u32::MAX) => return Err("weight is too large".into()),
        Some(w) => w as u32,
        None => return Err("weight must be an integer".into()),
    };
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => match p.parse::<u16>() {
            Ok(p) if p > 0 => (h, p),
            _ => return Err("is not a valid \"host:port\" address (bad port)".into()),
        },
        // APISIX defaults a node without a port to 80.
        None => (addr, 80),
        _ => return Err("is not a valid \"host:port\" address".into()),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ok = !host.is_empty()
        && (host.parse::<std::net::IpAddr>().is_ok()
            || valid_host_pattern(host) && !host.starts_with("*."));
    if !ok {
        return Err("is not a valid \"host:port\" address (bad host)".into());
    }
    Ok(Node {
        host: host.to_ascii_lowercase(),
        port,
        weight,
    })
}

/// The route object with `id`, as stored.
pub fn with_id(mut obj: Map<String, Value>, id: &str) -> Map<String, Value> {
    obj.insert("id".into(), Value::String(id.into()));
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let r = RouteSpec::parse("auth-with-oidc", &v).unwrap();
        assert_eq!(r.uris, vec![UriMatch::Prefix("/anything/".into())]);
        assert_eq!(
            r.upstream.nodes,
            vec![Node {
                host: "httpbin.org".into(),
                port: 80,
                weight: 1
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
            "vars": [],
            "methods": ["FETCH"],
            "plugins": {"limit-count": {}, "openid-connect": {"client_id": 5}},
            "upstream": {"type": "chash", "nodes": {"bad host:80": 1, "ok:80": -1, "ok2:99999": 1}}
        });
        let e = RouteSpec::parse("x", &v).unwrap_err();
        for want in [
            "property \"uri\" and \"uris\" cannot both be set",
            "property \"colour\" is not allowed",
            "property \"vars\" is not supported",
            "property \"methods\" has an unknown method",
            "property \"plugins.limit-count\" is not a plugin",
            "property \"plugins.openid-connect.client_id\" must be a string",
            "property \"plugins.openid-connect.discovery\" is required",
            "property \"upstream.type\"",
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
        assert!(RouteSpec::parse("auth-with-oidc", &v).is_ok());
        assert!(RouteSpec::parse("other", &v)
            .unwrap_err()
            .contains("property \"id\""));
        v["id"] = json!(12);
        assert!(RouteSpec::parse("12", &v).is_ok());
        assert!(RouteSpec::parse("a/b", &v).is_err());
    }

    #[test]
    fn status_zero_disables_and_hosts_are_checked() {
        let mut v = quickstart(json!(null));
        v["plugins"] = json!({});
        v["status"] = json!(0);
        v["hosts"] = json!(["*.Example.com", "api.example.com"]);
        let r = RouteSpec::parse("auth-with-oidc", &v).unwrap();
        assert!(!r.enabled);
        assert_eq!(r.hosts, vec!["*.example.com", "api.example.com"]);
        v["hosts"] = json!(["a..b"]);
        assert!(RouteSpec::parse("auth-with-oidc", &v)
            .unwrap_err()
            .contains("property \"host\""));
    }
}
