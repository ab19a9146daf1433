//! `limit-req`: Envoy's local rate limit filter (a second one, after
//! `limit-count`'s: APISIX priorities 1002 then 1001), a per-route token
//! bucket of `burst + 1` tokens refilled at `rate` per second, per client
//! address (`key` `remote_addr`) as `limit-count` counts.
//!
//! - APISIX lets `burst` requests above `rate` through late (it delays them
//!   to the rate) unless `nodelay`; Envoy cannot delay a request, so the
//!   burst always passes at once, as with `nodelay: true`. The long-run
//!   rate is the same; `nodelay: false` (the default) is accepted.
//! - `rejected_code` (default 503, 400 to 599), `rejected_msg` (body
//!   `{"error_msg": ...}`), `allow_degradation` (accepted; a local bucket
//!   cannot fail).
//! - `policy` other than `local` (redis), keys other than `remote_addr`
//!   are refused by name; `key_type` `constant` is not APISIX's for this
//!   plugin.

use serde_json::Value;

use super::limit_count::{client_key, flag, policy, Rejection, REDIS};
use super::{object, unknown};
use crate::apisix::route::Errors;

pub const NAME: &str = "limit-req";

pub const KNOWN: &[&str] = &[
    "rate",
    "burst",
    "key",
    "key_type",
    "policy",
    "rejected_code",
    "rejected_msg",
    "nodelay",
    "allow_degradation",
];

/// The largest `rate` (requests per second) Envoy's bucket is given here.
pub const MAX_RATE: f64 = 1_000_000.0;

#[derive(Debug, Clone, PartialEq)]
pub struct LimitReq {
    /// Requests per second.
    pub rate: f64,
    /// Requests allowed at once: `floor(burst) + 1`, as lua-resty-limit-traffic
    /// refuses when the excess passes `burst`.
    pub max_tokens: u32,
    pub per_client: bool,
    pub rejected_code: u16,
    pub rejected_msg: Option<String>,
}

impl LimitReq {
    pub fn parse(conf: &Value, at: &str, e: &mut Errors) -> Option<LimitReq> {
        let before = e.len();
        let obj = object(conf, at, e)?;
        let mut known = KNOWN.to_vec();
        known.extend_from_slice(REDIS);
        unknown(obj, &known, at, e);
        let field = |f: &str| format!("{at}.{f}");
        let rate = match obj.get("rate").map(Value::as_f64) {
            None => {
                e.push(&field("rate"), "is required");
                1.0
            }
            Some(Some(r)) if r > 0.0 && r <= MAX_RATE && r * 1000.0 >= 1.0 => r,
            Some(Some(r)) if r > 0.0 => {
                e.push(
                    &field("rate"),
                    "is not supported outside 0.001 to 1000000 requests per second",
                );
                r
            }
            Some(_) => {
                e.push(&field("rate"), "must be a number greater than 0");
                1.0
            }
        };
        let max_tokens = match obj.get("burst").map(Value::as_f64) {
            None => {
                e.push(&field("burst"), "is required");
                1
            }
            Some(Some(b)) if (0.0..1e9).contains(&b) => b.floor() as u32 + 1,
            Some(_) => {
                e.push(
                    &field("burst"),
                    "must be a number from 0 (at most 1000000000)",
                );
                1
            }
        };
        if !obj.contains_key("key") {
            e.push(&field("key"), "is required");
        }
        let key_type = match obj.get("key_type") {
            None => "var",
            Some(Value::String(s)) if s == "var" || s == "var_combination" => s.as_str(),
            Some(_) => {
                e.push(&field("key_type"), "must be \"var\" or \"var_combination\"");
                "var"
            }
        };
        let per_client = client_key(obj, key_type, at, e);
        policy(obj, at, e);
        let r = Rejection::parse(obj, at, e);
        flag(obj, "nodelay", false, at, e);
        flag(obj, "allow_degradation", false, at, e);
        (e.len() == before).then_some(LimitReq {
            rate,
            max_tokens,
            per_client,
            rejected_code: r.code,
            rejected_msg: r.msg,
        })
    }
}
