//! `response-rewrite`: the response headers, on the Envoy route
//! (`response_headers_to_add` / `_remove`).
//!
//! - `headers`: `{add, set, remove}` or the older flat map (= `set`), with
//!   literal values, as `proxy-rewrite`'s, except that `add` is APISIX's
//!   array of `"Name: value"` lines.
//! - `max_resp_body_size` (3.14+, stored with its default): accepted; it
//!   bounds the body filters, which are refused.
//! - `status_code`, `body`, `body_base64`, `filters`, `vars`: refused (no
//!   per-route Envoy mapping here).

use serde_json::Value;

use super::proxy_rewrite::{parse_headers, AddForm, ProxyRewrite};
use super::{object, unknown};
use crate::apisix::route::Errors;

pub const NAME: &str = "response-rewrite";

pub const KNOWN: &[&str] = &[
    "headers",
    "max_resp_body_size",
    "status_code",
    "body",
    "body_base64",
    "filters",
    "vars",
];

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseRewrite {
    pub add: Vec<(String, String)>,
    pub set: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl ResponseRewrite {
    pub fn parse(conf: &Value, at: &str, e: &mut Errors) -> Option<ResponseRewrite> {
        let before = e.len();
        let obj = object(conf, at, e)?;
        unknown(obj, KNOWN, at, e);
        for f in ["status_code", "body", "filters", "vars"] {
            if obj.contains_key(f) {
                e.push(&format!("{at}.{f}"), "is not supported");
            }
        }
        match obj.get("max_resp_body_size") {
            None => {}
            Some(v) if v.as_u64().is_some_and(|n| n >= 1) => {}
            Some(_) => e.push(
                &format!("{at}.max_resp_body_size"),
                "must be an integer of at least 1",
            ),
        }
        match obj.get("body_base64") {
            None | Some(Value::Bool(false)) => {}
            Some(_) => e.push(&format!("{at}.body_base64"), "is not supported"),
        }
        let mut h = ProxyRewrite::default();
        match obj.get("headers") {
            Some(v) => parse_headers(v, &format!("{at}.headers"), AddForm::Lines, &mut h, e),
            None => e.push(
                &format!("{at}.headers"),
                "is required (the only attribute supported)",
            ),
        }
        (e.len() == before).then_some(ResponseRewrite {
            add: h.add,
            set: h.set,
            remove: h.remove,
        })
    }
}
