//! `ip-restriction`: Envoy's RBAC filter, which runs before the wasm filter
//! (as APISIX runs it, priority 3000, before `openid-connect`, 2599), with a
//! per-route policy (`typed_per_filter_config`); the listener's RBAC filter
//! has no rules, so routes without the plugin pass.
//!
//! - `whitelist` / `blacklist` (or `allowlist` / `denylist`): IPv4/IPv6
//!   addresses and CIDRs; exactly one of them.
//! - The client address is the connection's peer (RBAC
//!   `direct_remote_ip`), as `remote_addrs` and `vars` test it: never one
//!   X-Forwarded-For gives, even with `--trusted-proxy-hops` (a client
//!   connecting directly would choose its address with a header).
//! - A refused request gets 403 `{"message": <message>}` (default "Your IP
//!   address is not allowed").
//! - `response_code` other than 403: refused.

use ipnet::IpNet;
use serde_json::Value;

use super::{object, unknown};
use crate::apisix::route::Errors;

pub const NAME: &str = "ip-restriction";
pub const DEFAULT_MESSAGE: &str = "Your IP address is not allowed";

pub const KNOWN: &[&str] = &[
    "whitelist",
    "blacklist",
    "allowlist",
    "denylist",
    "message",
    "response_code",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRestriction {
    /// True: only `cidrs` pass; false: `cidrs` are refused.
    pub allow: bool,
    /// Host bits cleared.
    pub cidrs: Vec<IpNet>,
    pub message: String,
}

impl IpRestriction {
    pub fn parse(conf: &Value, at: &str, e: &mut Errors) -> Option<IpRestriction> {
        let before = e.len();
        let obj = object(conf, at, e)?;
        unknown(obj, KNOWN, at, e);
        let field = |f: &str| format!("{at}.{f}");
        let lists: Vec<&str> = ["whitelist", "allowlist", "blacklist", "denylist"]
            .into_iter()
            .filter(|f| obj.contains_key(*f))
            .collect();
        let [list] = lists[..] else {
            e.push(
                at,
                "must set exactly one of \"whitelist\" (\"allowlist\") and \"blacklist\" (\"denylist\")",
            );
            return None;
        };
        let mut cidrs = Vec::new();
        match obj[list].as_array().filter(|a| !a.is_empty()) {
            None => e.push(
                &field(list),
                "must be a non-empty array of IP addresses or CIDRs",
            ),
            Some(items) => {
                for item in items {
                    match item.as_str().map(crate::apisix::vars::cidr) {
                        Some(Ok(c)) => cidrs.push(c),
                        _ => e.push(&field(list), format!("{item} is not an IP address or CIDR")),
                    }
                }
            }
        }
        let message = match obj.get("message") {
            None => DEFAULT_MESSAGE.to_string(),
            Some(Value::String(m)) if (1..=1024).contains(&m.len()) => m.clone(),
            Some(_) => {
                e.push(
                    &field("message"),
                    "must be a string of 1 to 1024 characters",
                );
                String::new()
            }
        };
        match obj.get("response_code") {
            None => {}
            Some(v) if v.as_u64() == Some(403) => {}
            Some(v) if v.as_u64() == Some(404) => e.push(
                &field("response_code"),
                "is not supported: refused requests get 403",
            ),
            Some(_) => e.push(&field("response_code"), "must be 403 or 404"),
        }
        (e.len() == before).then_some(IpRestriction {
            allow: matches!(list, "whitelist" | "allowlist"),
            cidrs,
            message,
        })
    }
}
