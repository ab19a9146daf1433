//! `redirect`: Envoy's route `redirect` action.
//!
//! - `http_to_https: true`: a request that came over plain HTTP (Envoy's
//!   `:scheme`, which a client's `X-Forwarded-Proto` does not set) is sent
//!   to `https://<host>:<https port>` with its path and query, 301 for GET
//!   and HEAD, 308 otherwise, as APISIX; HTTPS requests take the route as
//!   usual. These redirects are answered before openid-connect: no login
//!   over plain HTTP.
//! - `uri`: a path (`/new`) or an absolute URL (`https://h.example/new`),
//!   literal; the answer is `ret_code` (default 302; Envoy has 301, 302,
//!   303, 307, 308) and the query is dropped unless `append_query_string`.
//!   nginx variables (`$host`, `$request_uri`...) are refused.
//! - `regex_uri`, `encode_uri: true`, `_meta`: refused.

use serde_json::Value;

use super::{has_variable, object, unknown};
use crate::apisix::route::Errors;

pub const NAME: &str = "redirect";

pub const KNOWN: &[&str] = &[
    "ret_code",
    "uri",
    "regex_uri",
    "http_to_https",
    "encode_uri",
    "append_query_string",
];

/// Where a `uri` redirect goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `(scheme, host, port)` of an absolute URL.
    pub origin: Option<(String, String, u16)>,
    /// The path (with a query if the `uri` has one).
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Redirect {
    pub http_to_https: bool,
    pub uri: Option<Target>,
    pub ret_code: u16,
    pub append_query_string: bool,
}

impl Redirect {
    pub fn parse(conf: &Value, at: &str, e: &mut Errors) -> Option<Redirect> {
        let before = e.len();
        let obj = object(conf, at, e)?;
        unknown(obj, KNOWN, at, e);
        let field = |f: &str| format!("{at}.{f}");
        let flag = |f: &str, e: &mut Errors| match obj.get(f) {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                e.push(&field(f), "must be a boolean");
                false
            }
        };
        let mut out = Redirect {
            http_to_https: flag("http_to_https", e),
            append_query_string: flag("append_query_string", e),
            ret_code: 302,
            uri: None,
        };
        if flag("encode_uri", e) {
            e.push(&field("encode_uri"), "is not supported");
        }
        let set = ["uri", "regex_uri", "http_to_https"]
            .iter()
            .filter(|f| obj.contains_key(**f))
            .count();
        if set != 1 {
            e.push(
                at,
                "must set exactly one of \"uri\", \"regex_uri\", \"http_to_https\"",
            );
        }
        if obj.contains_key("regex_uri") {
            e.push(&field("regex_uri"), "is not supported");
        }
        if out.http_to_https && out.append_query_string {
            e.push(
                at,
                "only one of `http_to_https` and `append_query_string` can be configured",
            );
        }
        match obj.get("ret_code") {
            None => {}
            Some(v) => match v.as_u64() {
                Some(c @ (301 | 302 | 303 | 307 | 308)) => out.ret_code = c as u16,
                Some(c) if c >= 200 => e.push(
                    &field("ret_code"),
                    "is not supported: Envoy redirects with 301, 302, 303, 307 or 308",
                ),
                _ => e.push(&field("ret_code"), "must be an integer of at least 200"),
            },
        }
        if let Some(u) = obj.get("uri") {
            match u.as_str() {
                Some(s) if s.len() < 2 => e.push(&field("uri"), "must be at least 2 characters"),
                Some(s) if has_variable(s) => e.push(
                    &field("uri"),
                    "is not supported with nginx variables ($host, $request_uri...)",
                ),
                Some(s) => match target(s) {
                    Some(t) if out.append_query_string && t.path.contains('?') => e.push(
                        &field("uri"),
                        "is not supported with a query together with append_query_string",
                    ),
                    Some(t) => out.uri = Some(t),
                    None => e.push(
                        &field("uri"),
                        "must be a path (\"/new\") or an http(s) URL with only URL characters",
                    ),
                },
                None => e.push(&field("uri"), "must be a string"),
            }
        }
        (e.len() == before).then_some(out)
    }
}

fn target(s: &str) -> Option<Target> {
    let url_chars = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%?".contains(&b))
    };
    if s.starts_with('/') && !s.starts_with("//") {
        return url_chars(s).then(|| Target {
            origin: None,
            path: s.to_string(),
        });
    }
    let (scheme, rest) = s.split_once("://")?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok().filter(|p| *p > 0)?),
        None => (authority, default_port),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    (host_ok && url_chars(path)).then(|| Target {
        origin: Some((scheme.to_ascii_lowercase(), host.to_ascii_lowercase(), port)),
        path: path.to_string(),
    })
}
