//! `cors`: Envoy's CORS filter, which runs first in the chain (as APISIX's
//! cors, priority 4000, before ip-restriction and openid-connect), with a
//! per-route `CorsPolicy`. A preflight from an allowed origin is answered
//! by Envoy before the login, so a login-protected API answers it rather
//! than redirecting it.
//!
//! - `allow_origins`: `*` (default) or `**`: any origin; else a
//!   comma-separated list of `scheme://host[:port]`. Envoy answers with the
//!   request's origin rather than `*`.
//! - `allow_origins_by_regex`: more origins, as regular expressions.
//! - `allow_methods` (default `*`; `**`: every method), `allow_headers`
//!   (default `*`), `expose_headers`, `max_age` (default 5 s),
//!   `allow_credential` (default false; with it, `*` is refused, as in
//!   APISIX).
//! - `allow_headers: "**"` (echo the request's headers),
//!   `allow_origins_by_metadata`, `timing_allow_origins*`: refused.

use serde_json::Value;

use super::{object, unknown, valid_header_name};
use crate::apisix::route::Errors;

pub const NAME: &str = "cors";

pub const KNOWN: &[&str] = &[
    "allow_origins",
    "allow_methods",
    "allow_headers",
    "expose_headers",
    "max_age",
    "allow_credential",
    "allow_origins_by_regex",
    "allow_origins_by_metadata",
    "timing_allow_origins",
    "timing_allow_origins_by_regex",
];

const ALL_METHODS: &str = "GET,POST,PUT,DELETE,PATCH,HEAD,OPTIONS,CONNECT,TRACE";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    Any,
    Listed(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    pub origins: Origins,
    pub origin_regexes: Vec<String>,
    pub allow_methods: String,
    pub allow_headers: String,
    pub expose_headers: String,
    /// Seconds; negative: not sent.
    pub max_age: i64,
    pub allow_credential: bool,
}

impl Cors {
    pub fn parse(conf: &Value, at: &str, e: &mut Errors) -> Option<Cors> {
        let before = e.len();
        let obj = object(conf, at, e)?;
        unknown(obj, KNOWN, at, e);
        let field = |f: &str| format!("{at}.{f}");
        for f in [
            "allow_origins_by_metadata",
            "timing_allow_origins",
            "timing_allow_origins_by_regex",
        ] {
            if obj.contains_key(f) {
                e.push(&field(f), "is not supported");
            }
        }
        let text = |f: &str, default: &str, e: &mut Errors| match obj.get(f) {
            None => default.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                e.push(&field(f), "must be a string");
                String::new()
            }
        };
        let origins = text("allow_origins", "*", e);
        let methods = text("allow_methods", "*", e);
        let headers = text("allow_headers", "*", e);
        let expose = text("expose_headers", "", e);
        let allow_credential = match obj.get("allow_credential") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                e.push(&field("allow_credential"), "must be a boolean");
                false
            }
        };
        let max_age = match obj.get("max_age") {
            None => 5,
            Some(v) => v.as_i64().unwrap_or_else(|| {
                e.push(&field("max_age"), "must be an integer");
                5
            }),
        };
        if allow_credential {
            for (f, v) in [
                ("allow_origins", &origins),
                ("allow_methods", &methods),
                ("allow_headers", &headers),
                ("expose_headers", &expose),
            ] {
                if v == "*" {
                    e.push(
                        &field(f),
                        "you can not set '*' for other option when 'allow_credential' is true",
                    );
                }
            }
        }
        let origins = match origins.as_str() {
            "*" | "**" => Origins::Any,
            list => {
                let items: Vec<String> = list.split(',').map(|s| s.trim().to_string()).collect();
                for o in &items {
                    if !valid_origin(o) {
                        e.push(
                            &field("allow_origins"),
                            format!("{o:?} is not an origin (scheme://host[:port])"),
                        );
                    }
                }
                Origins::Listed(items)
            }
        };
        let allow_methods = match methods.as_str() {
            "**" => ALL_METHODS.to_string(),
            m => m.to_string(),
        };
        if headers == "**" {
            e.push(
                &field("allow_headers"),
                "\"**\" is not supported (Envoy does not echo the requested headers): list them",
            );
        }
        for (f, v) in [
            ("allow_methods", &allow_methods),
            ("allow_headers", &headers),
            ("expose_headers", &expose),
        ] {
            let ok = v == "*" || v.is_empty() || v.split(',').all(|x| valid_header_name(x.trim()));
            if !ok {
                e.push(
                    &field(f),
                    "must be \"*\" or a comma-separated list of names",
                );
            }
        }
        let mut origin_regexes = Vec::new();
        if let Some(r) = obj.get("allow_origins_by_regex") {
            let list: Option<Vec<&str>> = r
                .as_array()
                .filter(|a| !a.is_empty())
                .and_then(|a| a.iter().map(Value::as_str).collect());
            match list {
                None => e.push(
                    &field("allow_origins_by_regex"),
                    "must be a non-empty array of strings",
                ),
                Some(list) => {
                    for re in list {
                        if let Err(why) = crate::apisix::vars::search_regex(re, false) {
                            e.push(&field("allow_origins_by_regex"), why);
                        }
                        origin_regexes.push(re.to_string());
                    }
                }
            }
        }
        (e.len() == before).then_some(Cors {
            origins,
            origin_regexes,
            allow_methods,
            allow_headers: headers,
            expose_headers: expose,
            max_age,
            allow_credential,
        })
    }
}

fn valid_origin(o: &str) -> bool {
    let Some((scheme, rest)) = o.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}
