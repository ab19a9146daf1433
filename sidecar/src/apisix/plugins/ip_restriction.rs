//! `ip-restriction`: Envoy's RBAC filter, which runs before the wasm filter
//! (as APISIX runs it, priority 3000, before `openid-connect`, 2599), with a
//! per-route policy (`typed_per_filter_config`); the listener's RBAC filter
//! has no rules, so routes without the plugin pass.
//!
//! - `whitelist` / `blacklist` (or `allowlist` / `denylist`): IPv4/IPv6
//!   addresses and CIDRs; exactly one of them.
//! - The client address is Envoy's remote address: the connection's,
//!   or the one `--trusted-proxy-hops` lets X-Forwarded-For give (APISIX's
//!   `remote_addr` behind its `real_ip` settings); a client's own
//!   X-Forwarded-For does not count.
//! - A refused request gets 403 `{"message": <message>}` (default "Your IP
//!   address is not allowed").
//! - `response_code` other than 403: refused.

use std::net::IpAddr;

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
    /// (network address, prefix length).
    pub cidrs: Vec<(IpAddr, u8)>,
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
                    match item.as_str().and_then(cidr) {
                        Some(c) => cidrs.push(c),
                        None => {
                            e.push(&field(list), format!("{item} is not an IP address or CIDR"))
                        }
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

/// `1.2.3.4`, `1.2.3.0/24`, `::1`, `2001:db8::/32` → (address, prefix).
fn cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => l.parse().ok()?,
        Some(_) => return None,
    };
    (len <= max).then_some((addr, len))
}
