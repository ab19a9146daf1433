//! APISIX upstream objects: a route's inline `upstream`, or the
//! `/apisix/admin/upstreams/{id}` resource a route names by `upstream_id`.
//!
//! [`Upstream::parse`] validates one and is called when it is written (to
//! refuse it) and when routes are translated. Every APISIX attribute is
//! either mapped onto Envoy (see `translate/` and docs/admin-api.md's table) or
//! refused with a message naming it: nothing is accepted and ignored.

use serde_json::{Map, Value};

use crate::apisix::route::{check_id, valid_host_pattern, Errors};

/// Attributes of an upstream this gateway reads.
const KNOWN: &[&str] = &[
    "type",
    "nodes",
    "scheme",
    "tls",
    "pass_host",
    "upstream_host",
    "timeout",
    "retries",
    "retry_timeout",
    "checks",
    "hash_on",
    "key",
    "name",
    "desc",
    "labels",
    "id",
    "create_time",
    "update_time",
    "keepalive_pool",
];

/// APISIX upstream attributes with no Envoy mapping here.
const UNSUPPORTED: &[&str] = &["discovery_type", "service_name", "discovery_args"];

/// APISIX's defaults of `keepalive_pool` (`schema_def.lua`): stored in
/// every upstream that has the object. Envoy keeps its own pool of
/// upstream connections; these values ask for nothing else, other values
/// are refused.
const KEEPALIVE_POOL_DEFAULTS: &[(&str, f64)] = &[
    ("size", 320.0),
    ("idle_timeout", 60.0),
    ("requests", 1000.0),
];

/// APISIX's default `checks.active.unhealthy.http_statuses`.
const UNHEALTHY_STATUSES_DEFAULT: &[u64] = &[429, 404, 500, 501, 502, 503, 504, 505];

/// How requests are spread over the nodes (`type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balancer {
    /// `roundrobin`: weighted round robin.
    RoundRobin,
    /// `least_conn`: fewest outstanding requests (weighted).
    LeastConn,
    /// `ewma`: Envoy has no latency-EWMA balancer; the nearest is the
    /// least-request one.
    Ewma,
    /// `chash`: consistent hashing on `key` (`hash_on`).
    Chash(HashKey),
}

/// What `chash` hashes. When the request has no value for it, APISIX
/// hashes the client address instead, and so does the translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// `vars` `remote_addr`.
    SourceIp,
    /// A request header (`hash_on: header`), or a pseudo-header standing
    /// for an nginx variable, optionally rewritten by `(regex, substitution)`
    /// before hashing.
    Header {
        name: String,
        rewrite: Option<(String, String)>,
    },
    /// `hash_on: cookie`.
    Cookie(String),
    /// `vars` `arg_<name>`.
    QueryParameter(String),
}

/// `pass_host`: the `Host` the upstream sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassHost {
    /// The client's `Host`.
    Pass,
    /// The chosen node's `host` (with `:port` unless it is the scheme's
    /// default port), as APISIX sends it.
    Node,
    /// `upstream_host`.
    Rewrite(String),
}

/// `timeout` (seconds), of an upstream or a route.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub connect: f64,
    pub send: f64,
    pub read: f64,
}

/// `checks.active` kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    Http,
    Https,
    Tcp,
}

/// `checks.active`, with APISIX's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveCheck {
    pub kind: CheckKind,
    /// Seconds.
    pub timeout: f64,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub http_path: String,
    /// Seconds between checks of a healthy node (`healthy.interval`).
    pub interval: u32,
    /// Seconds between checks of an unhealthy node (`unhealthy.interval`).
    pub unhealthy_interval: u32,
    pub healthy_statuses: Vec<u32>,
    /// `healthy.successes`.
    pub successes: u32,
    /// `unhealthy.http_failures` (http, https) or `tcp_failures` (tcp).
    pub failures: u32,
    /// `req_headers` as (name, value).
    pub req_headers: Vec<(String, String)>,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub host: String,
    pub port: u16,
    pub weight: u32,
    /// APISIX's: higher is tried first.
    pub priority: i64,
}

/// A validated upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub balancer: Balancer,
    pub nodes: Vec<Node>,
    /// `scheme: https`.
    pub https: bool,
    /// `tls.verify` (APISIX's default: false).
    pub verify: bool,
    pub pass_host: PassHost,
    pub timeout: Option<Timeouts>,
    pub retries: Option<u32>,
    /// Seconds; `None` or 0: no limit.
    pub retry_timeout: Option<f64>,
    pub check: Option<ActiveCheck>,
}

impl Upstream {
    /// The upstream resource `id`: the object with its `id`, `name`, ...
    /// The error lists every problem, each naming its attribute.
    pub fn parse_resource(id: &str, v: &Value) -> Result<Upstream, String> {
        let Some(obj) = v.as_object() else {
            return Err("invalid configuration: the upstream must be a JSON object".into());
        };
        let mut e = Errors::new();
        check_id(obj, id, &mut e);
        let up = Upstream::parse(v, "", &mut e);
        match up {
            Some(up) if e.is_empty() => Ok(up),
            _ => Err(e.message()),
        }
    }

    /// Validates an upstream object; `prefix` is how errors name it
    /// (`"upstream."` for a route's inline one, `""` for the resource).
    pub fn parse(v: &Value, prefix: &str, e: &mut Errors) -> Option<Upstream> {
        let Some(obj) = v.as_object() else {
            e.push(prefix.trim_end_matches('.'), "must be an object");
            return None;
        };
        let f = |k: &str| format!("{prefix}{k}");
        for k in obj.keys() {
            if UNSUPPORTED.contains(&k.as_str()) {
                e.push(&f(k), "is not supported by this gateway");
            } else if !KNOWN.contains(&k.as_str()) {
                e.push(&f(k), "is not allowed (additional properties forbidden)");
            }
        }
        for (field, max) in [("name", 100), ("desc", 256)] {
            if let Some(x) = obj.get(field) {
                if x.as_str().is_none_or(|s| s.len() > max) {
                    e.push(
                        &f(field),
                        format!("must be a string of at most {max} bytes"),
                    );
                }
            }
        }
        if let Some(labels) = obj.get("labels") {
            let ok = labels
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string));
            if !ok {
                e.push(&f("labels"), "must be an object of strings");
            }
        }
        for t in ["create_time", "update_time"] {
            if obj.get(t).is_some_and(|x| x.as_u64().is_none()) {
                e.push(&f(t), "must be a unix time in seconds");
            }
        }

        let https = match obj.get("scheme").map(Value::as_str) {
            None | Some(Some("http")) => false,
            Some(Some("https")) => true,
            Some(Some(s)) => {
                e.push(
                    &f("scheme"),
                    format!("{s:?} is not supported (http, https)"),
                );
                false
            }
            Some(None) => {
                e.push(&f("scheme"), "must be a string");
                false
            }
        };
        let verify = parse_tls(obj.get("tls"), &f("tls"), e);
        if verify && !https {
            e.push(&f("tls.verify"), "needs \"scheme\": \"https\"");
        }
        if let Some(pool) = obj.get("keepalive_pool") {
            parse_keepalive_pool(pool, &f("keepalive_pool"), e);
        }
        let balancer = parse_balancer(obj, prefix, e);
        let nodes = parse_nodes(obj.get("nodes"), &f("nodes"), https, e);
        let pass_host = match (
            obj.get("pass_host").map(Value::as_str),
            obj.get("upstream_host"),
        ) {
            (None | Some(Some("pass")), None) => PassHost::Pass,
            (Some(Some("node")), None) => PassHost::Node,
            (Some(Some("rewrite")), Some(h)) => match h.as_str() {
                Some(h) if valid_host(h) => PassHost::Rewrite(h.to_string()),
                _ => {
                    e.push(&f("upstream_host"), "must be a host name or an IP address");
                    PassHost::Pass
                }
            },
            (Some(Some("rewrite")), None) => {
                e.push(
                    &f("upstream_host"),
                    "is required when \"pass_host\" is \"rewrite\"",
                );
                PassHost::Pass
            }
            (Some(Some(p)), _) if !["pass", "node"].contains(&p) => {
                e.push(
                    &f("pass_host"),
                    format!("{p:?} is not one of pass, node, rewrite"),
                );
                PassHost::Pass
            }
            (Some(None), _) => {
                e.push(&f("pass_host"), "must be a string");
                PassHost::Pass
            }
            (_, _) => {
                e.push(
                    &f("upstream_host"),
                    "is only used with \"pass_host\": \"rewrite\"",
                );
                PassHost::Pass
            }
        };
        let timeout = obj
            .get("timeout")
            .and_then(|t| parse_timeouts(t, &f("timeout"), e));
        let retries = obj.get("retries").and_then(|r| match r.as_u64() {
            Some(n) if n <= 100 => Some(n as u32),
            _ => {
                e.push(&f("retries"), "must be an integer from 0 to 100");
                None
            }
        });
        let retry_timeout = obj.get("retry_timeout").and_then(|r| match r.as_f64() {
            Some(t) if (0.0..=86_400.0).contains(&t) => Some(t),
            _ => {
                e.push(
                    &f("retry_timeout"),
                    "must be a number of seconds, at least 0",
                );
                None
            }
        });
        let check = obj
            .get("checks")
            .and_then(|c| parse_checks(c, &f("checks"), https, verify, e));

        Some(Upstream {
            balancer,
            nodes: nodes?,
            https,
            verify,
            pass_host,
            timeout,
            retries,
            retry_timeout,
            check,
        })
    }

    /// The port a node without one gets (APISIX: the scheme's).
    pub fn default_port(https: bool) -> u16 {
        if https {
            443
        } else {
            80
        }
    }
}

/// `timeout {connect, send, read}`: all three, seconds > 0.
pub fn parse_timeouts(v: &Value, field: &str, e: &mut Errors) -> Option<Timeouts> {
    let Some(obj) = v.as_object() else {
        e.push(field, "must be an object {connect, send, read}");
        return None;
    };
    for k in obj.keys() {
        if !["connect", "send", "read"].contains(&k.as_str()) {
            e.push(
                &format!("{field}.{k}"),
                "is not allowed (additional properties forbidden)",
            );
        }
    }
    let mut get = |k: &str| match obj.get(k).map(Value::as_f64) {
        Some(Some(t)) if t > 0.0 && t <= 86_400.0 => Some(t),
        None => {
            e.push(&format!("{field}.{k}"), "is required");
            None
        }
        Some(_) => {
            e.push(
                &format!("{field}.{k}"),
                "must be a number of seconds greater than 0",
            );
            None
        }
    };
    let (connect, send, read) = (get("connect"), get("send"), get("read"));
    Some(Timeouts {
        connect: connect?,
        send: send?,
        read: read?,
    })
}

fn valid_host(h: &str) -> bool {
    let bare = h.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>().is_ok() || valid_host_pattern(h) && !h.starts_with("*.")
}

/// `tls`: only `verify`. Returns `verify`.
fn parse_tls(v: Option<&Value>, field: &str, e: &mut Errors) -> bool {
    let Some(v) = v else { return false };
    let Some(obj) = v.as_object() else {
        e.push(field, "must be an object");
        return false;
    };
    let mut verify = false;
    for (k, x) in obj {
        match k.as_str() {
            "verify" => match x.as_bool() {
                Some(b) => verify = b,
                None => e.push(&format!("{field}.verify"), "must be a boolean"),
            },
            "client_cert" | "client_key" | "client_cert_id" => e.push(
                &format!("{field}.{k}"),
                "is not supported by this gateway (no client certificates to upstreams)",
            ),
            _ => e.push(
                &format!("{field}.{k}"),
                "is not allowed (additional properties forbidden)",
            ),
        }
    }
    verify
}

fn parse_balancer(obj: &Map<String, Value>, prefix: &str, e: &mut Errors) -> Balancer {
    let f = |k: &str| format!("{prefix}{k}");
    let t = match obj.get("type").map(Value::as_str) {
        None => "roundrobin",
        Some(Some(t)) => t,
        Some(None) => {
            e.push(&f("type"), "must be a string");
            "roundrobin"
        }
    };
    let balancer = match t {
        "roundrobin" => Balancer::RoundRobin,
        "least_conn" => Balancer::LeastConn,
        "ewma" => Balancer::Ewma,
        "chash" => match parse_hash_key(obj, prefix, e) {
            Some(k) => Balancer::Chash(k),
            None => Balancer::RoundRobin,
        },
        other => {
            e.push(
                &f("type"),
                format!("{other:?} is not one of roundrobin, least_conn, chash, ewma"),
            );
            Balancer::RoundRobin
        }
    };
    if t != "chash" {
        // APISIX (up to 3.13) stores its default `hash_on: "vars"` in
        // every upstream, whatever the type: that one asks for nothing.
        let default_hash_on = obj.get("hash_on").and_then(Value::as_str) == Some("vars");
        for k in ["hash_on", "key"] {
            if obj.contains_key(k) && !(k == "hash_on" && default_hash_on) {
                e.push(&f(k), "is only used with \"type\": \"chash\"");
            }
        }
    }
    balancer
}

/// A header or cookie name as APISIX accepts it.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn parse_hash_key(obj: &Map<String, Value>, prefix: &str, e: &mut Errors) -> Option<HashKey> {
    let f = |k: &str| format!("{prefix}{k}");
    let hash_on = match obj.get("hash_on").map(Value::as_str) {
        None => "vars",
        Some(Some(h)) => h,
        Some(None) => {
            e.push(&f("hash_on"), "must be a string");
            return None;
        }
    };
    if ["consumer", "vars_combinations"].contains(&hash_on) {
        e.push(
            &f("hash_on"),
            format!("{hash_on:?} is not supported by this gateway (vars, header, cookie)"),
        );
        return None;
    }
    if !["vars", "header", "cookie"].contains(&hash_on) {
        e.push(
            &f("hash_on"),
            format!("{hash_on:?} is not one of vars, header, cookie, consumer, vars_combinations"),
        );
        return None;
    }
    let key = match obj.get("key").map(Value::as_str) {
        Some(Some(k)) => k,
        None => {
            e.push(
                &f("key"),
                "is required when \"type\" is \"chash\" (missing key)",
            );
            return None;
        }
        Some(None) => {
            e.push(&f("key"), "must be a string");
            return None;
        }
    };
    let path = ":path".to_string();
    let key = match (hash_on, key) {
        ("header", k) if valid_name(k) => HashKey::Header {
            name: k.to_ascii_lowercase(),
            rewrite: None,
        },
        ("cookie", k) if valid_name(k) => HashKey::Cookie(k.to_string()),
        ("header" | "cookie", _) => {
            e.push(
                &f("key"),
                "must be a header or cookie name (letters, digits, '-' and '_')",
            );
            return None;
        }
        (_, "remote_addr") => HashKey::SourceIp,
        // `:path` is the path and the query, as nginx's $request_uri.
        (_, "request_uri") => HashKey::Header {
            name: path,
            rewrite: None,
        },
        // $uri: the path without the query.
        (_, "uri") => HashKey::Header {
            name: path,
            rewrite: Some((r"\?.*$".into(), String::new())),
        },
        // $host: the host without the port.
        (_, "host") => HashKey::Header {
            name: ":authority".into(),
            rewrite: Some((r":[0-9]+$".into(), String::new())),
        },
        (_, k) if k.starts_with("arg_") && valid_name(&k[4..]) => {
            HashKey::QueryParameter(k[4..].to_string())
        }
        (_, k @ ("server_name" | "server_addr" | "remote_port" | "query_string" | "hostname")) => {
            e.push(
                &f("key"),
                format!(
                    "{k:?} is not supported by this gateway (remote_addr, uri, request_uri, host, arg_<name>)"
                ),
            );
            return None;
        }
        (_, k) => {
            e.push(
                &f("key"),
                format!("{k:?} is not an nginx variable APISIX hashes on"),
            );
            return None;
        }
    };
    Some(key)
}

fn parse_nodes(v: Option<&Value>, field: &str, https: bool, e: &mut Errors) -> Option<Vec<Node>> {
    let mut out = Vec::new();
    match v {
        None => {
            e.push(
                field,
                "is required: an object of \"host:port\": weight, or an array of {host, port, weight, priority}",
            );
            return None;
        }
        Some(Value::Object(map)) => {
            for (addr, weight) in map {
                match parse_map_node(addr, weight, https) {
                    Ok(n) => out.push(n),
                    Err(msg) => e.push(&format!("{field}.{addr}"), msg),
                }
            }
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                if let Some(n) = parse_array_node(item, &format!("{field}[{i}]"), e) {
                    out.push(n);
                }
            }
        }
        Some(_) => {
            e.push(
                field,
                "must be an object of \"host:port\": weight, or an array of {host, port, weight, priority}",
            );
            return None;
        }
    }
    if out.is_empty()
        && v.is_some_and(|n| {
            n.as_object().is_some_and(Map::is_empty) || n.as_array().is_some_and(Vec::is_empty)
        })
    {
        e.push(field, "must name at least one node");
    }
    Some(out)
}

fn parse_weight(weight: &Value) -> Result<u32, String> {
    match weight.as_i64() {
        Some(w) if w < 0 => Err("weight must not be negative".into()),
        Some(w) if w > i64::from(u32::MAX) => Err("weight is too large".into()),
        Some(w) => Ok(w as u32),
        None => Err("weight must be an integer".into()),
    }
}

fn parse_map_node(addr: &str, weight: &Value, https: bool) -> Result<Node, String> {
    let weight = parse_weight(weight)?;
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => match p.parse::<u16>() {
            Ok(p) if p > 0 => (h, p),
            _ => return Err("is not a valid \"host:port\" address (bad port)".into()),
        },
        // APISIX gives a node without a port the scheme's.
        None => (addr, Upstream::default_port(https)),
        _ => return Err("is not a valid \"host:port\" address".into()),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || !valid_host(host) {
        return Err("is not a valid \"host:port\" address (bad host)".into());
    }
    Ok(Node {
        host: host.to_ascii_lowercase(),
        port,
        weight,
        priority: 0,
    })
}

fn parse_array_node(item: &Value, field: &str, e: &mut Errors) -> Option<Node> {
    let Some(obj) = item.as_object() else {
        e.push(field, "must be an object {host, port, weight, priority}");
        return None;
    };
    let before = e.len();
    for k in obj.keys() {
        match k.as_str() {
            "host" | "port" | "weight" | "priority" => {}
            "metadata" => e.push(
                &format!("{field}.metadata"),
                "is not supported by this gateway",
            ),
            _ => e.push(
                &format!("{field}.{k}"),
                "is not allowed (additional properties forbidden)",
            ),
        }
    }
    let host = match obj.get("host").and_then(Value::as_str) {
        Some(h) if valid_host(h) => h.trim_start_matches('[').trim_end_matches(']'),
        Some(_) => {
            e.push(
                &format!("{field}.host"),
                "must be a host name or an IP address",
            );
            ""
        }
        None => {
            e.push(&format!("{field}.host"), "is required (a string)");
            ""
        }
    };
    let port = match obj.get("port").map(Value::as_u64) {
        Some(Some(p)) if (1..=65535).contains(&p) => p as u16,
        None => {
            e.push(&format!("{field}.port"), "is required");
            0
        }
        Some(_) => {
            e.push(
                &format!("{field}.port"),
                "must be an integer from 1 to 65535",
            );
            0
        }
    };
    let weight = match obj.get("weight") {
        None => {
            e.push(&format!("{field}.weight"), "is required");
            0
        }
        Some(w) => parse_weight(w).unwrap_or_else(|msg| {
            e.push(
                &format!("{field}.weight"),
                msg.trim_start_matches("weight "),
            );
            0
        }),
    };
    let priority = match obj.get("priority") {
        None => 0,
        Some(p) => p.as_i64().unwrap_or_else(|| {
            e.push(&format!("{field}.priority"), "must be an integer");
            0
        }),
    };
    (e.len() == before).then(|| Node {
        host: host.to_ascii_lowercase(),
        port,
        weight,
        priority,
    })
}

/// `checks`: `active` only.
/// `keepalive_pool`: accepted at APISIX's defaults only.
fn parse_keepalive_pool(v: &Value, field: &str, e: &mut Errors) {
    let Some(obj) = v.as_object() else {
        e.push(field, "must be an object");
        return;
    };
    for (k, x) in obj {
        match KEEPALIVE_POOL_DEFAULTS.iter().find(|(name, _)| name == k) {
            Some((_, default)) if x.as_f64() == Some(*default) => {}
            Some((_, default)) => e.push(
                &format!("{field}.{k}"),
                format!("is not supported by this gateway other than at APISIX's default {default} (Envoy keeps its own connection pool)"),
            ),
            None => e.push(
                &format!("{field}.{k}"),
                "is not allowed (additional properties forbidden)",
            ),
        }
    }
}

/// The value equals APISIX's default (which it stores with every check).
fn is_default(x: &Value, default: &Value) -> bool {
    match (x.as_f64(), default.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => x == default,
    }
}

fn parse_checks(
    v: &Value,
    field: &str,
    https: bool,
    verify: bool,
    e: &mut Errors,
) -> Option<ActiveCheck> {
    let Some(obj) = v.as_object() else {
        e.push(field, "must be an object");
        return None;
    };
    for k in obj.keys() {
        match k.as_str() {
            "active" => {}
            "passive" => e.push(
                &format!("{field}.passive"),
                "is not supported by this gateway (only active health checks)",
            ),
            _ => e.push(
                &format!("{field}.{k}"),
                "is not allowed (additional properties forbidden)",
            ),
        }
    }
    let Some(active) = obj.get("active") else {
        e.push(&format!("{field}.active"), "is required");
        return None;
    };
    let field = format!("{field}.active");
    let Some(a) = active.as_object() else {
        e.push(&field, "must be an object");
        return None;
    };
    let f = |k: &str| format!("{field}.{k}");
    let kind = match a.get("type").map(Value::as_str) {
        None | Some(Some("http")) => CheckKind::Http,
        Some(Some("https")) => CheckKind::Https,
        Some(Some("tcp")) => CheckKind::Tcp,
        _ => {
            e.push(&f("type"), "must be one of http, https, tcp");
            CheckKind::Http
        }
    };
    // Envoy checks a node over the cluster's own transport: plain for
    // http upstreams, TLS (verified as `tls.verify` says) for https ones.
    match kind {
        CheckKind::Https if !https => e.push(
            &f("type"),
            "\"https\" needs \"scheme\": \"https\" (Envoy checks over the upstream's own transport)",
        ),
        CheckKind::Http if https => e.push(
            &f("type"),
            "\"http\" on an https upstream is not supported (Envoy checks over the upstream's own transport): use \"https\"",
        ),
        _ => {}
    }
    let http = kind != CheckKind::Tcp;
    // APISIX stores every default of `checks.active`, the http-only ones
    // on tcp checks too: those values are accepted wherever they ask for
    // nothing this gateway does not do.
    let default_of = |k: &str| -> Option<Value> {
        Some(match k {
            "http_path" => Value::from("/"),
            "https_verify_certificate" => Value::from(true),
            "concurrency" => Value::from(10),
            _ => return None,
        })
    };
    for (k, x) in a {
        let at_default = default_of(k).is_some_and(|d| is_default(x, &d));
        match k.as_str() {
            "type" | "timeout" | "port" | "healthy" | "unhealthy" => {}
            "host" | "http_path" | "req_headers" if http => {}
            "http_path" | "https_verify_certificate" if !http && at_default => {}
            "host" | "http_path" | "req_headers" | "https_verify_certificate" if !http => {
                e.push(&f(k), "applies to http and https checks only")
            }
            // Envoy verifies a check's certificate as the cluster does.
            "https_verify_certificate" => match x.as_bool() {
                None => e.push(&f(k), "must be a boolean"),
                // On a plain http check there is no certificate; on an
                // https one the value must say what `tls.verify` says.
                Some(b) if (kind == CheckKind::Http && b) || (kind == CheckKind::Https && b == verify) => {}
                Some(_) => e.push(
                    &f(k),
                    "is not supported by this gateway other than as \"tls.verify\" says: checks verify the certificate as the upstream does",
                ),
            },
            "concurrency" if at_default => {}
            "concurrency" => e.push(
                &f(k),
                "is not supported by this gateway other than at APISIX's default 10 (Envoy checks each node on its own timer)",
            ),
            _ => e.push(&f(k), "is not allowed (additional properties forbidden)"),
        }
    }
    let timeout = match a.get("timeout") {
        None => 1.0,
        Some(t) => match t.as_f64() {
            Some(t) if t > 0.0 && t <= 3600.0 => t,
            _ => {
                e.push(&f("timeout"), "must be a number of seconds greater than 0");
                1.0
            }
        },
    };
    let host = a.get("host").and_then(|h| match h.as_str() {
        Some(h) if valid_host(h) => Some(h.to_string()),
        _ => {
            e.push(&f("host"), "must be a host name or an IP address");
            None
        }
    });
    let port = a.get("port").and_then(|p| match p.as_u64() {
        Some(p) if (1..=65535).contains(&p) => Some(p as u16),
        _ => {
            e.push(&f("port"), "must be an integer from 1 to 65535");
            None
        }
    });
    let http_path = match a.get("http_path") {
        None => "/".to_string(),
        Some(p) => match p.as_str() {
            Some(p) if p.starts_with('/') => p.to_string(),
            _ => {
                e.push(&f("http_path"), "must be a path starting with '/'");
                "/".to_string()
            }
        },
    };
    let req_headers = match a.get("req_headers") {
        None => Vec::new(),
        Some(h) => {
            let parsed: Option<Vec<(String, String)>> = h.as_array().and_then(|items| {
                items
                    .iter()
                    .map(|x| {
                        let (name, value) = x.as_str()?.split_once(':')?;
                        valid_name(name.trim())
                            .then(|| (name.trim().to_string(), value.trim().to_string()))
                    })
                    .collect()
            });
            parsed.unwrap_or_else(|| {
                e.push(
                    &f("req_headers"),
                    "must be an array of \"Name: value\" strings",
                );
                Vec::new()
            })
        }
    };

    let section = |name: &str, e: &mut Errors| -> Map<String, Value> {
        match a.get(name) {
            None => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                e.push(&f(name), "must be an object");
                Map::new()
            }
        }
    };
    let healthy = section("healthy", e);
    let unhealthy = section("unhealthy", e);
    let int = |m: &Map<String, Value>,
               k: &str,
               section: &str,
               min: u64,
               max: u64,
               default: u32,
               e: &mut Errors|
     -> u32 {
        match m.get(k) {
            None => default,
            Some(x) => match x.as_u64() {
                Some(n) if (min..=max).contains(&n) => n as u32,
                _ => {
                    e.push(
                        &f(&format!("{section}.{k}")),
                        format!("must be an integer from {min} to {max}"),
                    );
                    default
                }
            },
        }
    };
    let default_statuses = |x: &Value, want: &[u64]| {
        x.as_array().is_some_and(|items| {
            let mut got: Vec<u64> = items.iter().filter_map(Value::as_u64).collect();
            let mut want = want.to_vec();
            got.sort_unstable();
            want.sort_unstable();
            items.len() == got.len() && got == want
        })
    };
    for (k, x) in &healthy {
        match k.as_str() {
            "interval" | "successes" => {}
            "http_statuses" if http => {}
            "http_statuses" if default_statuses(x, &[200, 302]) => {}
            "http_statuses" => e.push(
                &f("healthy.http_statuses"),
                "applies to http and https checks only",
            ),
            _ => e.push(
                &f(&format!("healthy.{k}")),
                "is not allowed (additional properties forbidden)",
            ),
        }
    }
    let failures_key = if http {
        "http_failures"
    } else {
        "tcp_failures"
    };
    for (k, x) in &unhealthy {
        match k.as_str() {
            "interval" => {}
            k if k == failures_key => {}
            // APISIX's defaults (stored with every check) ask for nothing
            // Envoy does not do: a node that fails to connect counts toward
            // the one threshold, every response outside
            // `healthy.http_statuses` and every timeout count as failures.
            "http_failures" if !http && is_default(x, &Value::from(5)) => {}
            "tcp_failures" if http && is_default(x, &Value::from(2)) => {}
            "timeouts" if is_default(x, &Value::from(3)) => {}
            "http_statuses" if default_statuses(x, UNHEALTHY_STATUSES_DEFAULT) => {}
            "http_failures" | "tcp_failures" => e.push(
                &f(&format!("unhealthy.{k}")),
                format!(
                    "is not supported for this check type: Envoy counts every failed check toward one threshold, \"{failures_key}\""
                ),
            ),
            "http_statuses" | "timeouts" => e.push(
                &f(&format!("unhealthy.{k}")),
                "is not supported by this gateway: Envoy counts every response outside \"healthy.http_statuses\", and every timeout, as a failure",
            ),
            _ => e.push(&f(&format!("unhealthy.{k}")), "is not allowed (additional properties forbidden)"),
        }
    }
    let interval = int(&healthy, "interval", "healthy", 1, 86_400, 1, e);
    let successes = int(&healthy, "successes", "healthy", 1, 254, 2, e);
    let unhealthy_interval = int(&unhealthy, "interval", "unhealthy", 1, 86_400, 1, e);
    let failures = int(
        &unhealthy,
        failures_key,
        "unhealthy",
        1,
        254,
        if http { 5 } else { 2 },
        e,
    );
    let healthy_statuses = match healthy.get("http_statuses") {
        None => vec![200, 302],
        Some(s) => {
            let parsed: Option<Vec<u32>> =
                s.as_array().filter(|a| !a.is_empty()).and_then(|items| {
                    items
                        .iter()
                        .map(|x| {
                            x.as_u64()
                                .filter(|c| (200..=599).contains(c))
                                .map(|c| c as u32)
                        })
                        .collect()
                });
            parsed.unwrap_or_else(|| {
                e.push(
                    &f("healthy.http_statuses"),
                    "must be a non-empty array of status codes from 200 to 599",
                );
                vec![200, 302]
            })
        }
    };
    Some(ActiveCheck {
        kind,
        timeout,
        host,
        port,
        http_path,
        interval,
        unhealthy_interval,
        healthy_statuses,
        successes,
        failures,
        req_headers,
    })
}

// ---------------------------------------------------------------------------
// Where nodes may point

/// What upstream nodes may point at, checked when an upstream is written
/// (a route's inline `upstream` or the `/upstreams` resource). Envoy
/// connects to a node from the gateway's own host, so a node on the
/// gateway's control ports (the Admin API, xDS, Envoy's admin) would
/// publish them on the proxy port: `GET /config_dump` through Envoy would
/// show every secret, and the Admin API would be reachable from anywhere
/// (Envoy connects from loopback, so the allow-list passes). Those are
/// always refused. Nodes on loopback, link-local (the cloud metadata
/// address) or unspecified addresses are refused unless `allow_local`.
#[derive(Debug, Clone, Default)]
pub struct NodePolicy {
    /// The gateway's control listeners: what each is, and its address.
    pub control: Vec<(&'static str, std::net::SocketAddr)>,
    /// Host names that also mean this host (`--admin-host`).
    pub own_names: Vec<String>,
    /// `--allow-local-upstreams`: loopback and link-local nodes are allowed
    /// (the control ports stay refused).
    pub allow_local: bool,
}

/// The flag that allows local nodes, as messages name it.
pub const ALLOW_LOCAL_FLAG: &str = "--allow-local-upstreams (SIDECAR_ALLOW_LOCAL_UPSTREAMS=true)";

/// What kind of local address a node host is, if it is one.
fn local_kind(host: &str, ip: Option<std::net::IpAddr>) -> Option<&'static str> {
    use std::net::IpAddr;
    if host == "localhost" || host.ends_with(".localhost") {
        return Some("a loopback address (localhost)");
    }
    let ip = ip?;
    let v4_kind = |v4: std::net::Ipv4Addr| -> Option<&'static str> {
        let o = v4.octets();
        if v4.is_loopback() {
            Some("a loopback address")
        } else if o[0] == 0 {
            Some("an unspecified address (it reaches this host)")
        } else if v4.is_link_local() {
            Some("a link-local address (169.254.0.0/16, the cloud metadata address among them)")
        } else if o == [100, 100, 100, 200] {
            Some("a cloud metadata address")
        } else {
            None
        }
    };
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_loopback() {
                Some("a loopback address")
            } else if v6.is_unspecified() {
                Some("an unspecified address (it reaches this host)")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("a link-local address (fe80::/10)")
            } else if s == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254] {
                Some("a cloud metadata address")
            } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                // NAT64: the IPv4 address in the last 32 bits.
                let v4 = std::net::Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                );
                v4_kind(v4)
            } else {
                None
            }
        }
    }
}

/// The address a node host stands for: an IP literal, or an IPv4 address
/// in one of the forms a resolver also takes (`2130706433`, `0x7f.1`,
/// `0177.0.0.1`: inet_aton's). IPv4-mapped IPv6 addresses are the IPv4 one.
pub fn host_ip(host: &str) -> Option<std::net::IpAddr> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Some(ip.to_canonical());
    }
    inet_aton(bare).map(std::net::IpAddr::V4)
}

/// inet_aton(3): one to four parts, each decimal, octal (leading `0`) or
/// hex (`0x`); the last fills the remaining bytes.
fn inet_aton(s: &str) -> Option<std::net::Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for p in &parts {
        let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or(p.strip_prefix("0X")) {
            (h, 16)
        } else if p.len() > 1 && p.starts_with('0') {
            (&p[1..], 8)
        } else {
            (*p, 10)
        };
        if digits.is_empty() && radix != 16 {
            return None;
        }
        let v = if digits.is_empty() {
            0
        } else {
            u32::from_str_radix(digits, radix).ok()?
        };
        values.push(v);
    }
    let (last, head) = values.split_last()?;
    let mut addr: u32 = 0;
    for (i, v) in head.iter().enumerate() {
        if *v > 255 {
            return None;
        }
        addr |= v << (24 - 8 * i);
    }
    let rest_bits = 32 - 8 * head.len() as u32;
    if rest_bits < 32 && *last >= 1 << rest_bits {
        return None;
    }
    Some(std::net::Ipv4Addr::from(addr | last))
}

impl NodePolicy {
    /// Checks where the nodes (and an active health check's port) of an
    /// upstream object that [`Upstream::parse`] accepted point; `prefix`
    /// names it as there. Each refusal names its node.
    pub fn check(&self, v: &Value, prefix: &str, e: &mut Errors) {
        let Some(obj) = v.as_object() else { return };
        let https = obj.get("scheme").and_then(Value::as_str) == Some("https");
        let check_port = obj
            .get("checks")
            .and_then(|c| c.get("active"))
            .and_then(|a| a.get("port"))
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok());
        let field = format!("{prefix}nodes");
        let mut nodes = Vec::new();
        match obj.get("nodes") {
            Some(Value::Object(map)) => {
                for (addr, weight) in map {
                    if let Ok(n) = parse_map_node(addr, weight, https) {
                        nodes.push((format!("{field}.{addr}"), n));
                    }
                }
            }
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let mut ignored = Errors::new();
                    if let Some(n) = parse_array_node(item, "", &mut ignored) {
                        nodes.push((format!("{field}[{i}]"), n));
                    }
                }
            }
            _ => {}
        }
        let mut check_refused = false;
        for (name, n) in &nodes {
            if let Some(why) = self.refusal(&n.host, n.port) {
                e.push(name, why);
                continue;
            }
            // An active check connects to the node's host on its own port.
            let Some(port) = check_port else { continue };
            if let (false, Some(what)) = (check_refused, self.control_at(&n.host, port)) {
                check_refused = true;
                e.push(
                    &format!("{prefix}checks.active.port"),
                    format!(
                        "would send the health checks of node {}:{} to {what}, a control \
                         port of this gateway (refused whatever the options)",
                        n.host, n.port
                    ),
                );
            }
        }
    }

    /// Why a node `host:port` is refused, if it is.
    pub fn refusal(&self, host: &str, port: u16) -> Option<String> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.to_ascii_lowercase();
        if let Some(what) = self.control_at(&host, port) {
            return Some(format!(
                "points at {what}, a control port of this gateway: a route to it would \
                 publish it on the proxy port (refused whatever the options)"
            ));
        }
        if self.allow_local {
            return None;
        }
        let kind = local_kind(&host, host_ip(&host))?;
        Some(format!(
            "is {kind}: upstreams on the gateway's own host or link-local network are \
             refused unless the sidecar runs with {ALLOW_LOCAL_FLAG}"
        ))
    }

    /// The control listener `host:port` reaches, if any: the port is one of
    /// a listener's, and the host is this host (loopback, unspecified,
    /// `localhost`, a name of `--admin-host`, or the listener's own IP), or
    /// the listener listens on every address.
    fn control_at(&self, host: &str, port: u16) -> Option<String> {
        let ip = host_ip(host);
        let this_host = self.own_names.iter().any(|n| n == host)
            || ip.is_some_and(|ip| ip.is_loopback() || ip.is_unspecified())
            || local_kind(host, ip)
                .is_some_and(|k| k.contains("loopback") || k.contains("unspecified"));
        self.control
            .iter()
            .find(|(_, addr)| {
                let listen = addr.ip().to_canonical();
                addr.port() == port
                    && (listen.is_unspecified() || this_host || ip == Some(listen))
            })
            .map(|(what, addr)| {
                if addr.ip().is_unspecified() {
                    format!("{what} ({addr}: it listens on every address, so port {port} of any host may be it)")
                } else {
                    format!("{what} ({addr})")
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Upstream, String> {
        let mut e = Errors::new();
        let u = Upstream::parse(&v, "upstream.", &mut e);
        match u {
            Some(u) if e.is_empty() => Ok(u),
            _ => Err(e.message()),
        }
    }

    #[test]
    fn defaults_are_apisix_s() {
        let u = parse(json!({"nodes": {"a.example": 1}})).unwrap();
        assert_eq!(u.balancer, Balancer::RoundRobin);
        assert!(!u.https && !u.verify);
        assert_eq!(u.pass_host, PassHost::Pass);
        assert_eq!((u.timeout, u.retries, u.retry_timeout), (None, None, None));
        assert_eq!(u.check, None);
        // A node without a port gets the scheme's.
        assert_eq!(u.nodes[0].port, 80);
        let u = parse(json!({"scheme": "https", "nodes": {"a.example": 1}})).unwrap();
        assert_eq!(u.nodes[0].port, 443);
    }

    #[test]
    fn nodes_as_a_map_or_an_array_with_priorities() {
        let u = parse(json!({"nodes": [
            {"host": "10.0.0.1", "port": 8080, "weight": 2, "priority": 5},
            {"host": "B.example", "port": 80, "weight": 0},
            {"host": "::1", "port": 81, "weight": 1, "priority": -1},
        ]}))
        .unwrap();
        assert_eq!(
            u.nodes,
            vec![
                Node {
                    host: "10.0.0.1".into(),
                    port: 8080,
                    weight: 2,
                    priority: 5
                },
                Node {
                    host: "b.example".into(),
                    port: 80,
                    weight: 0,
                    priority: 0
                },
                Node {
                    host: "::1".into(),
                    port: 81,
                    weight: 1,
                    priority: -1
                },
            ]
        );
    }

    #[test]
    fn chash_keys_map_or_are_refused() {
        let key = |hash_on: &str, key: &str| {
            parse(json!({"type": "chash", "hash_on": hash_on, "key": key, "nodes": {"a:1": 1}}))
                .map(|u| u.balancer)
        };
        let header = |name: &str, rewrite: Option<(&str, &str)>| {
            Ok(Balancer::Chash(HashKey::Header {
                name: name.into(),
                rewrite: rewrite.map(|(a, b)| (a.into(), b.into())),
            }))
        };
        assert_eq!(
            key("vars", "remote_addr"),
            Ok(Balancer::Chash(HashKey::SourceIp))
        );
        assert_eq!(key("vars", "request_uri"), header(":path", None));
        assert_eq!(key("vars", "uri"), header(":path", Some((r"\?.*$", ""))));
        assert_eq!(
            key("vars", "host"),
            header(":authority", Some((r":[0-9]+$", "")))
        );
        assert_eq!(
            key("vars", "arg_user_id"),
            Ok(Balancer::Chash(HashKey::QueryParameter("user_id".into())))
        );
        assert_eq!(key("header", "X-User"), header("x-user", None));
        assert_eq!(
            key("cookie", "sid"),
            Ok(Balancer::Chash(HashKey::Cookie("sid".into())))
        );
        // hash_on defaults to vars.
        assert_eq!(
            parse(json!({"type": "chash", "key": "remote_addr", "nodes": {"a:1": 1}}))
                .map(|u| u.balancer),
            Ok(Balancer::Chash(HashKey::SourceIp))
        );
        for (hash_on, k, want) in [
            (
                "vars",
                "server_name",
                "property \"upstream.key\" \"server_name\" is not supported",
            ),
            (
                "vars",
                "remote_port",
                "property \"upstream.key\" \"remote_port\" is not supported",
            ),
            (
                "vars",
                "query_string",
                "property \"upstream.key\" \"query_string\" is not supported",
            ),
            (
                "vars",
                "http_x",
                "property \"upstream.key\" \"http_x\" is not an nginx variable",
            ),
            (
                "consumer",
                "x",
                "property \"upstream.hash_on\" \"consumer\" is not supported",
            ),
            (
                "vars_combinations",
                "$a$b",
                "property \"upstream.hash_on\" \"vars_combinations\" is not supported",
            ),
            (
                "header",
                "bad header",
                "property \"upstream.key\" must be a header or cookie name",
            ),
        ] {
            let e = key(hash_on, k).unwrap_err();
            assert!(e.contains(want), "{hash_on} {k}: {e}");
        }
        let e = parse(json!({"type": "chash", "nodes": {"a:1": 1}})).unwrap_err();
        assert!(e.contains("property \"upstream.key\" is required"), "{e}");
        let e =
            parse(json!({"type": "roundrobin", "key": "uri", "nodes": {"a:1": 1}})).unwrap_err();
        assert!(
            e.contains("property \"upstream.key\" is only used with"),
            "{e}"
        );
    }

    #[test]
    fn every_option_parses() {
        let u = parse(json!({
            "type": "least_conn",
            "scheme": "https",
            "tls": {"verify": true},
            "pass_host": "rewrite",
            "upstream_host": "internal.example",
            "timeout": {"connect": 0.5, "send": 2, "read": 3},
            "retries": 2,
            "retry_timeout": 1.5,
            "name": "n", "desc": "d", "labels": {"env": "test"},
            "checks": {"active": {
                "type": "https", "timeout": 2, "host": "health.example", "port": 9000,
                "http_path": "/status", "req_headers": ["User-Agent: checker", "X-A:b"],
                "healthy": {"interval": 3, "successes": 1, "http_statuses": [200, 204]},
                "unhealthy": {"interval": 1, "http_failures": 2}
            }},
            "nodes": {"a.example:8443": 1}
        }))
        .unwrap();
        assert_eq!(u.balancer, Balancer::LeastConn);
        assert!(u.https && u.verify);
        assert_eq!(u.pass_host, PassHost::Rewrite("internal.example".into()));
        assert_eq!(
            u.timeout,
            Some(Timeouts {
                connect: 0.5,
                send: 2.0,
                read: 3.0
            })
        );
        assert_eq!((u.retries, u.retry_timeout), (Some(2), Some(1.5)));
        assert_eq!(
            u.check,
            Some(ActiveCheck {
                kind: CheckKind::Https,
                timeout: 2.0,
                host: Some("health.example".into()),
                port: Some(9000),
                http_path: "/status".into(),
                interval: 3,
                unhealthy_interval: 1,
                healthy_statuses: vec![200, 204],
                successes: 1,
                failures: 2,
                req_headers: vec![
                    ("User-Agent".into(), "checker".into()),
                    ("X-A".into(), "b".into())
                ],
            })
        );
        let u = parse(
            json!({"type": "ewma", "pass_host": "node", "nodes": {"a:1": 1},
            "checks": {"active": {"type": "tcp", "unhealthy": {"tcp_failures": 3}}}}),
        )
        .unwrap();
        assert_eq!(u.balancer, Balancer::Ewma);
        assert_eq!(u.pass_host, PassHost::Node);
        let c = u.check.unwrap();
        assert_eq!(
            (c.kind, c.failures, c.successes, c.interval),
            (CheckKind::Tcp, 3, 2, 1)
        );
    }

    /// Upstreams as APISIX (up to 3.13) stores them, every schema default
    /// filled in: tests/fixtures/apisix/README.md.
    #[test]
    fn apisix_stored_defaults_are_accepted() {
        for (name, text) in [
            (
                "upstream-3.13",
                include_str!("../../../tests/fixtures/apisix/upstream-3.13.json"),
            ),
            (
                "upstream-checks-3.13",
                include_str!("../../../tests/fixtures/apisix/upstream-checks-3.13.json"),
            ),
            (
                "upstream-tcp-checks-3.13",
                include_str!("../../../tests/fixtures/apisix/upstream-tcp-checks-3.13.json"),
            ),
        ] {
            let v: Value = serde_json::from_str(text).unwrap();
            let id = v["id"].as_str().unwrap().to_string();
            let u =
                Upstream::parse_resource(&id, &v).unwrap_or_else(|e| panic!("{name} refused: {e}"));
            assert_eq!(u.pass_host, PassHost::Pass, "{name}");
            assert!(!u.https && !u.verify, "{name}");
        }
        // `hash_on: "vars"` on each non-chash type; a route's inline one.
        for t in ["roundrobin", "least_conn", "ewma"] {
            parse(json!({"type": t, "hash_on": "vars", "nodes": {"a:1": 1}}))
                .unwrap_or_else(|e| panic!("{t}: {e}"));
        }
        // The checks' defaults as APISIX fills them: the values Envoy does
        // anyway. An https check may say `https_verify_certificate` only
        // as `tls.verify` does.
        let checks: Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/apisix/upstream-checks-3.13.json"
        ))
        .unwrap();
        let u = parse(json!({"nodes": {"a:1": 1}, "checks": checks["checks"]})).unwrap();
        let c = u.check.unwrap();
        assert_eq!((c.interval, c.successes, c.failures), (1, 2, 5));
        assert_eq!(c.healthy_statuses, [200, 302]);
        let https_check = |verify: bool, v: bool| {
            parse(json!({
                "scheme": "https", "tls": {"verify": verify}, "nodes": {"a:1": 1},
                "checks": {"active": {"type": "https", "https_verify_certificate": v}}
            }))
        };
        assert!(https_check(true, true).is_ok());
        assert!(https_check(false, false).is_ok());
        let e = https_check(false, true).unwrap_err();
        assert!(
            e.contains("\"upstream.checks.active.https_verify_certificate\" is not supported"),
            "{e}"
        );
        // Not the defaults: still refused, by name.
        for (extra, want) in [
            (
                json!({"hash_on": "header"}),
                "\"upstream.hash_on\" is only used",
            ),
            (
                json!({"keepalive_pool": {"idle_timeout": 61}}),
                "\"upstream.keepalive_pool.idle_timeout\" is not supported",
            ),
            (
                json!({"checks": {"active": {"unhealthy": {"http_statuses": [429, 404, 500]}}}}),
                "\"upstream.checks.active.unhealthy.http_statuses\" is not supported",
            ),
            (
                json!({"checks": {"active": {"type": "tcp", "unhealthy": {"http_failures": 4}}}}),
                "\"upstream.checks.active.unhealthy.http_failures\" is not supported",
            ),
        ] {
            let mut v = json!({"nodes": {"a:1": 1}});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            let e = parse(v).unwrap_err();
            assert!(e.contains(want), "{extra}: {e}");
        }
    }

    #[test]
    fn what_does_not_map_is_refused_by_name() {
        let base = json!({"nodes": {"a:1": 1}});
        for (extra, want) in [
            (
                json!({"discovery_type": "dns"}),
                "\"upstream.discovery_type\" is not supported",
            ),
            (
                json!({"service_name": "x"}),
                "\"upstream.service_name\" is not supported",
            ),
            (
                json!({"keepalive_pool": {"size": 1}}),
                "\"upstream.keepalive_pool.size\" is not supported",
            ),
            (json!({"colour": 1}), "\"upstream.colour\" is not allowed"),
            (
                json!({"scheme": "grpc"}),
                "\"upstream.scheme\" \"grpc\" is not supported",
            ),
            (
                json!({"scheme": "https", "tls": {"client_cert": "x"}}),
                "\"upstream.tls.client_cert\" is not supported",
            ),
            (
                json!({"tls": {"verify": true}}),
                "\"upstream.tls.verify\" needs",
            ),
            (
                json!({"type": "maglev"}),
                "\"upstream.type\" \"maglev\" is not one of",
            ),
            (
                json!({"pass_host": "rewrite"}),
                "\"upstream.upstream_host\" is required",
            ),
            (
                json!({"pass_host": "pass", "upstream_host": "x"}),
                "\"upstream.upstream_host\" is only used",
            ),
            (
                json!({"pass_host": "sometimes"}),
                "\"upstream.pass_host\" \"sometimes\" is not one of",
            ),
            (
                json!({"timeout": {"connect": 1, "send": 1}}),
                "\"upstream.timeout.read\" is required",
            ),
            (
                json!({"timeout": {"connect": 0, "send": 1, "read": 1}}),
                "\"upstream.timeout.connect\" must be",
            ),
            (json!({"retries": -1}), "\"upstream.retries\" must be"),
            (
                json!({"retry_timeout": "1s"}),
                "\"upstream.retry_timeout\" must be",
            ),
            (
                json!({"checks": {"passive": {}}}),
                "\"upstream.checks.passive\" is not supported",
            ),
            (
                json!({"checks": {"active": {"concurrency": 5}}}),
                "\"upstream.checks.active.concurrency\" is not supported",
            ),
            (
                json!({"checks": {"active": {"https_verify_certificate": false}}}),
                "\"upstream.checks.active.https_verify_certificate\" is not supported",
            ),
            (
                json!({"checks": {"active": {"type": "https"}}}),
                "\"upstream.checks.active.type\" \"https\" needs",
            ),
            (
                json!({"checks": {"active": {"unhealthy": {"http_statuses": [500]}}}}),
                "\"upstream.checks.active.unhealthy.http_statuses\" is not supported",
            ),
            (
                json!({"checks": {"active": {"unhealthy": {"timeouts": 4}}}}),
                "\"upstream.checks.active.unhealthy.timeouts\" is not supported",
            ),
            (
                json!({"checks": {"active": {"unhealthy": {"tcp_failures": 3}}}}),
                "\"upstream.checks.active.unhealthy.tcp_failures\" is not supported",
            ),
            (
                json!({"checks": {"active": {"type": "tcp", "http_path": "/x"}}}),
                "\"upstream.checks.active.http_path\" applies to http",
            ),
            (
                json!({"checks": {"active": {"healthy": {"successes": 0}}}}),
                "\"upstream.checks.active.healthy.successes\" must be",
            ),
            (
                json!({"nodes": {}}),
                "\"upstream.nodes\" must name at least one node",
            ),
            (
                json!({"nodes": "a:1"}),
                "\"upstream.nodes\" must be an object",
            ),
            (
                json!({"nodes": [{"host": "a", "port": 1, "weight": 1, "metadata": {}}]}),
                "\"upstream.nodes[0].metadata\" is not supported",
            ),
            (
                json!({"nodes": [{"host": "a", "weight": 1}]}),
                "\"upstream.nodes[0].port\" is required",
            ),
            (
                json!({"nodes": [{"host": "a b", "port": 1, "weight": -2}]}),
                "\"upstream.nodes[0].weight\" must not be negative",
            ),
        ] {
            let mut v = base.clone();
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            let e = parse(v.clone()).unwrap_err();
            assert!(e.contains(&format!("property {want}")), "{v}: {e}");
        }
    }

    #[test]
    fn the_resource_checks_its_id() {
        let v = json!({"id": "u1", "nodes": {"a:1": 1}});
        assert!(Upstream::parse_resource("u1", &v).is_ok());
        let e = Upstream::parse_resource("u2", &v).unwrap_err();
        assert!(e.contains("property \"id\" does not match"), "{e}");
        let e = Upstream::parse_resource("a/b", &json!({"nodes": {"a:1": 1}})).unwrap_err();
        assert!(e.contains("property \"id\""), "{e}");
        // The resource's fields are named without a prefix.
        let e =
            Upstream::parse_resource("u", &json!({"nodes": {"a:1": 1}, "type": "x"})).unwrap_err();
        assert!(e.contains("property \"type\" \"x\""), "{e}");
    }
    fn policy(allow_local: bool) -> NodePolicy {
        NodePolicy {
            control: vec![
                ("the Admin API", "127.0.0.1:9180".parse().unwrap()),
                ("the xDS server", "10.1.2.3:18000".parse().unwrap()),
                ("Envoy's admin", "0.0.0.0:9901".parse().unwrap()),
            ],
            own_names: vec!["gw.internal".into()],
            allow_local,
        }
    }

    /// The policy's message for an upstream, or `None` when it passes.
    fn checked(p: &NodePolicy, v: Value) -> Option<String> {
        assert!(parse(v.clone()).is_ok(), "{v}");
        let mut e = Errors::new();
        p.check(&v, "upstream.", &mut e);
        (!e.is_empty()).then(|| e.message())
    }

    #[test]
    fn inet_aton_forms_are_the_addresses_resolvers_see() {
        for (s, want) in [
            ("127.0.0.1", Some("127.0.0.1")),
            ("2130706433", Some("127.0.0.1")),
            ("0x7f000001", Some("127.0.0.1")),
            ("0177.0.0.1", Some("127.0.0.1")),
            ("127.1", Some("127.0.0.1")),
            ("0x7f.0.0.1", Some("127.0.0.1")),
            ("169.254.43518", Some("169.254.169.254")),
            ("::ffff:127.0.0.1", Some("127.0.0.1")),
            ("[::1]", Some("::1")),
            ("256.0.0.1", None),
            ("127.0.0.1.2", None),
            ("httpbin.org", None),
            ("1e100.net", None),
            ("08.0.0.1", None),
        ] {
            assert_eq!(
                host_ip(s),
                want.map(|w| w.parse::<std::net::IpAddr>().unwrap()),
                "{s}"
            );
        }
    }

    #[test]
    fn control_ports_are_refused_whatever_the_options() {
        for allow_local in [false, true] {
            let p = policy(allow_local);
            for node in [
                "127.0.0.1:9180",
                "localhost:9180",
                "127.0.0.2:9180",
                "0.0.0.0:9180",
                "[::1]:9180",
                "[::]:9180",
                "[::ffff:127.0.0.1]:9180",
                "2130706433:9180",
                "gw.internal:9180",
                "10.1.2.3:18000",
                "localhost:18000",
                // Envoy's admin listens on every address: any host.
                "127.0.0.1:9901",
                "192.0.2.7:9901",
                "example.com:9901",
            ] {
                let msg = checked(&p, json!({"nodes": {"httpbin.org:80": 1, node: 1}}))
                    .unwrap_or_else(|| panic!("{node} was accepted"));
                assert!(
                    msg.contains(&format!("property \"upstream.nodes.{node}\" points at"))
                        && msg.contains("control port of this gateway"),
                    "{msg}"
                );
                assert!(!msg.contains("httpbin.org"), "{msg}");
            }
            // The array form names the node by index.
            let msg = checked(
                &p,
                json!({"nodes": [{"host": "httpbin.org", "port": 80, "weight": 1},
                                 {"host": "127.0.0.1", "port": 9180, "weight": 0}]}),
            )
            .unwrap();
            assert!(
                msg.contains(
                    "property \"upstream.nodes[1]\" points at the Admin API (127.0.0.1:9180)"
                ),
                "{msg}"
            );
            // A health check sent to a control port.
            let msg = checked(
                &p,
                json!({"nodes": {"localhost:8080": 1},
                       "checks": {"active": {"port": 9180}}}),
            );
            if allow_local {
                let msg = msg.unwrap();
                assert!(
                    msg.contains("property \"upstream.checks.active.port\" would send"),
                    "{msg}"
                );
            }
            // Elsewhere, the same ports are fine (but for 9901, on every address).
            assert_eq!(
                checked(
                    &p,
                    json!({"nodes": {"10.9.9.9:9180": 1, "10.1.2.4:18000": 1}})
                ),
                None
            );
            assert_eq!(
                checked(&p, json!({"nodes": {"example.com:18000": 1}})),
                None
            );
        }
    }

    #[test]
    fn local_nodes_need_the_flag() {
        let strict = policy(false);
        let open = policy(true);
        for node in [
            "127.0.0.1:8080",
            "localhost:8080",
            "app.localhost:8080",
            "0.0.0.0:8080",
            "0.1.2.3:8080",
            "[::1]:8080",
            "[::]:8080",
            "[::ffff:127.0.0.1]:8080",
            "2130706433:8080",
            "0177.0.0.1:8080",
            "169.254.169.254:80",
            "169.254.169.254",
            "[fe80::1]:8080",
            "[fd00:ec2::254]:80",
            "100.100.100.200:80",
            "[64:ff9b::a9fe:a9fe]:80",
        ] {
            let msg = checked(&strict, json!({"nodes": {node: 1}}))
                .unwrap_or_else(|| panic!("{node} was accepted"));
            assert!(
                msg.contains(&format!("property \"upstream.nodes.{node}\" is a")),
                "{msg}"
            );
            assert!(msg.contains("--allow-local-upstreams"), "{msg}");
            assert_eq!(checked(&open, json!({"nodes": {node: 1}})), None, "{node}");
        }
        let msg = checked(
            &strict,
            json!({"nodes": [{"host": "localhost", "port": 80, "weight": 1}]}),
        )
        .unwrap();
        assert!(
            msg.contains("property \"upstream.nodes[0]\" is a loopback address"),
            "{msg}"
        );
        for fine in [
            "httpbin.org:80",
            "10.0.0.5:8080",
            "192.168.1.10:80",
            "172.17.0.1:80",
            "[2001:db8::1]:443",
            "localhost.example.com:80",
        ] {
            assert_eq!(
                checked(&strict, json!({"nodes": {fine: 1}})),
                None,
                "{fine}"
            );
        }
    }
}
