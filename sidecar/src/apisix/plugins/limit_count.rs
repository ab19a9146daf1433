//! `limit-count`: Envoy's local rate limit filter with a per-route token
//! bucket (`translate/plugins.rs`), after the login (APISIX runs
//! `openid-connect` in its rewrite phase, `limit-count` in access: a request
//! the login refuses or redirects is not counted).
//!
//! - `count` requests per `time_window` seconds: a bucket of `count`
//!   tokens refilled at `count / time_window` per second. Envoy refills
//!   continuously, so after a burst one request passes every
//!   `time_window / count` seconds; APISIX's fixed window gives the whole
//!   `count` back at the window's end (`window_type` `fixed` and `sliding`
//!   are both this bucket).
//! - `key`: `remote_addr` (the default; `key_type` `var`, or
//!   `var_combination` `$remote_addr`) counts per client address: the
//!   connection's peer, never X-Forwarded-For (Envoy's dynamic descriptors,
//!   at most [`MAX_CLIENTS`] addresses per route, least recently seen
//!   forgotten first); `key_type` `constant`: one count for the route.
//!   Other keys are refused by name.
//! - Counters are per Envoy process (shared by its worker threads) and per
//!   route, and start over when Envoy receives a new route table (any
//!   route change). `policy` `redis`, `redis-cluster`, `redis-sentinel`
//!   (cluster-wide counting), `group` (a count shared by routes), `rules`
//!   and `count`/`time_window` as expressions are refused.
//! - `rejected_code` (default 503; 400 to 599 as Envoy's status codes
//!   define them: 418-420, 425, 427, 430, 432-499, 509, 512-599 refused),
//!   `rejected_msg` (the body
//!   `{"error_msg": ...}`), `show_limit_quota_header` (default true:
//!   `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`, the
//!   seconds until the next request is allowed).
//! - `allow_degradation`, `sync_interval` and the redis attributes are
//!   accepted: they only matter to counters that can fail or that live in
//!   redis.

use serde_json::{Map, Value};

use super::{object, unknown};
use crate::apisix::route::Errors;

pub const NAME: &str = "limit-count";

/// Client addresses remembered per route (Envoy's `max_dynamic_descriptors`).
pub const MAX_CLIENTS: u32 = 10_000;

/// The redis attributes (APISIX's `redis-schema.lua` and limit-count's
/// sentinel ones): accepted, they only matter with a redis policy, which
/// is refused.
pub(crate) const REDIS: &[&str] = &[
    "redis_host",
    "redis_port",
    "redis_username",
    "redis_password",
    "redis_ssl",
    "redis_ssl_verify",
    "redis_database",
    "redis_timeout",
    "redis_keepalive_timeout",
    "redis_keepalive_pool",
    "redis_cluster_nodes",
    "redis_cluster_name",
    "redis_cluster_ssl",
    "redis_cluster_ssl_verify",
    "redis_sentinels",
    "redis_master_name",
    "redis_role",
    "redis_connect_timeout",
    "redis_read_timeout",
    "sentinel_username",
    "sentinel_password",
];

pub const KNOWN: &[&str] = &[
    "count",
    "time_window",
    "window_type",
    "rules",
    "group",
    "key",
    "key_type",
    "rejected_code",
    "rejected_msg",
    "policy",
    "allow_degradation",
    "show_limit_quota_header",
    "sync_interval",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitCount {
    pub count: u32,
    /// Seconds.
    pub time_window: u32,
    /// Counted per client address (else one count for the route).
    pub per_client: bool,
    pub rejected_code: u16,
    pub rejected_msg: Option<String>,
    pub show_limit_quota_header: bool,
}

impl LimitCount {
    pub fn parse(conf: &Value, at: &str, e: &mut Errors) -> Option<LimitCount> {
        let before = e.len();
        let obj = object(conf, at, e)?;
        let mut known = KNOWN.to_vec();
        known.extend_from_slice(REDIS);
        unknown(obj, &known, at, e);
        let field = |f: &str| format!("{at}.{f}");
        if obj.contains_key("rules") {
            e.push(
                &field("rules"),
                "is not supported (use count and time_window)",
            );
        }
        if obj.contains_key("group") {
            e.push(
                &field("group"),
                "is not supported: each route has its own count",
            );
        }
        let int = |f: &str, e: &mut Errors| -> u32 {
            match obj.get(f) {
                None if obj.contains_key("rules") => 0,
                None => {
                    e.push(&field(f), "is required");
                    0
                }
                Some(Value::String(_)) => {
                    e.push(
                        &field(f),
                        "is not supported as an expression: it must be an integer",
                    );
                    0
                }
                Some(v) => match v.as_u64().filter(|n| *n > 0) {
                    Some(n) => u32::try_from(n).unwrap_or_else(|_| {
                        e.push(&field(f), "must be at most 4294967295");
                        0
                    }),
                    None => {
                        e.push(&field(f), "must be an integer greater than 0");
                        0
                    }
                },
            }
        };
        let count = int("count", e);
        let time_window = int("time_window", e);
        match obj.get("window_type") {
            None => {}
            Some(Value::String(s)) if s == "fixed" || s == "sliding" => {}
            Some(_) => e.push(&field("window_type"), "must be \"fixed\" or \"sliding\""),
        }
        let key_type = match obj.get("key_type") {
            None => "var",
            Some(Value::String(s))
                if ["var", "var_combination", "constant"].contains(&s.as_str()) =>
            {
                s.as_str()
            }
            Some(_) => {
                e.push(
                    &field("key_type"),
                    "must be \"var\", \"var_combination\" or \"constant\"",
                );
                "var"
            }
        };
        let per_client = client_key(obj, key_type, at, e);
        policy(obj, at, e);
        let common = Rejection::parse(obj, at, e);
        let show_limit_quota_header = flag(obj, "show_limit_quota_header", true, at, e);
        flag(obj, "allow_degradation", false, at, e);
        match obj.get("sync_interval") {
            None => {}
            Some(v) if v.is_number() => {}
            Some(_) => e.push(&field("sync_interval"), "must be a number"),
        }
        (e.len() == before).then_some(LimitCount {
            count,
            time_window,
            per_client,
            rejected_code: common.code,
            rejected_msg: common.msg,
            show_limit_quota_header,
        })
    }
}

/// Whether `key` (of `key_type`) counts per client address (true) or for
/// the whole route (false: `constant`); any other key is refused by name.
pub(crate) fn client_key(
    obj: &Map<String, Value>,
    key_type: &str,
    at: &str,
    e: &mut Errors,
) -> bool {
    let key = match obj.get("key") {
        None => "remote_addr",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            e.push(&format!("{at}.key"), "must be a string");
            return true;
        }
    };
    match key_type {
        "constant" => false,
        "var" if key == "remote_addr" => true,
        "var_combination" if key.trim() == "$remote_addr" => true,
        _ => {
            e.push(
                &format!("{at}.key"),
                format!(
                    "{key:?} is not supported: only \"remote_addr\" (the client's address) or key_type \"constant\""
                ),
            );
            true
        }
    }
}

/// `policy`: only `local` (the default).
pub(crate) fn policy(obj: &Map<String, Value>, at: &str, e: &mut Errors) {
    match obj.get("policy") {
        None => {}
        Some(Value::String(s)) if s == "local" => {}
        Some(Value::String(s)) if s == "redis" || s == "redis-cluster" || s == "redis-sentinel" => {
            e.push(
                &format!("{at}.policy"),
                format!(
                    "{s:?} is not supported: cluster-wide counting is not supported, each gateway counts on its own (\"local\")"
                ),
            );
        }
        Some(_) => e.push(
            &format!("{at}.policy"),
            "must be \"local\", \"redis\", \"redis-cluster\" or \"redis-sentinel\"",
        ),
    }
}

/// A boolean attribute with its default.
pub(crate) fn flag(
    obj: &Map<String, Value>,
    name: &str,
    default: bool,
    at: &str,
    e: &mut Errors,
) -> bool {
    match obj.get(name) {
        None => default,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            e.push(&format!("{at}.{name}"), "must be a boolean");
            default
        }
    }
}

/// The 4xx and 5xx codes of Envoy's `type.v3.StatusCode` (a local rate
/// limit's `status` must be one of them).
const ENVOY_CODES: &[u64] = &[
    400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 421,
    422, 423, 424, 426, 428, 429, 431, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
];

/// `rejected_code` and `rejected_msg`, as both limit plugins take them.
pub(crate) struct Rejection {
    pub code: u16,
    pub msg: Option<String>,
}

impl Rejection {
    pub(crate) fn parse(obj: &Map<String, Value>, at: &str, e: &mut Errors) -> Rejection {
        let code = match obj.get("rejected_code") {
            None => 503,
            Some(v) => match v.as_u64() {
                Some(c) if ENVOY_CODES.contains(&c) => c as u16,
                Some(400..=599) => {
                    // Envoy refuses (NACKs, with the whole route table) a
                    // status its `StatusCode` enum does not define.
                    e.push(
                        &format!("{at}.rejected_code"),
                        "is not supported: Envoy answers a refusal with 400-417, 421-424, 426, 428, 429, 431, 500-508, 510 or 511",
                    );
                    503
                }
                Some(200..=399) => {
                    e.push(
                        &format!("{at}.rejected_code"),
                        "is not supported below 400 (Envoy answers a refused request with 400 to 599)",
                    );
                    503
                }
                _ => {
                    e.push(
                        &format!("{at}.rejected_code"),
                        "must be an integer from 200 to 599",
                    );
                    503
                }
            },
        };
        let msg = match obj.get("rejected_msg") {
            None => None,
            Some(Value::String(m)) if !m.is_empty() => Some(m.clone()),
            Some(_) => {
                e.push(&format!("{at}.rejected_msg"), "must be a non-empty string");
                None
            }
        };
        Rejection { code, msg }
    }
}
