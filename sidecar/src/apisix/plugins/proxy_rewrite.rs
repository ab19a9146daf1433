//! `proxy-rewrite`: the upstream request's path, host and headers, on the
//! Envoy route (`regex_rewrite`, `host_rewrite_literal`,
//! `request_headers_to_add` / `_remove`), applied by the router after the
//! wasm filter, as APISIX applies it (priority 1008) after
//! `openid-connect` (2599).
//!
//! - `uri`: the whole path is replaced (query kept). No nginx variables
//!   (`$uri`...), no query in it.
//! - `regex_uri`: `[pattern, replacement]`: the first match in the path is
//!   replaced, `$1`/`${1}` are the groups, `$$` a `$` (ngx.re.sub). One pair
//!   only (APISIX also takes several, tried in turn: refused). `uri` wins
//!   when both are set, as in APISIX.
//! - `host`: the upstream `Host` (overrides the upstream's `pass_host`).
//! - `headers`: `{add, set, remove}` or the older flat map (= `set`).
//!   Values are literal (no `$variables`). The identity headers the
//!   openid-connect filter sets (`X-Userinfo`, `X-Access-Token`...) cannot be
//!   added or set: the router applies these after the filter, so they would
//!   overwrite the verified identity; removing them is allowed. `Host` and
//!   pseudo-headers cannot be set here (use `host`).
//! - `method`, `scheme`, `use_real_request_uri_unsafe: true`: refused.

use oidc_core::exchange::is_identity_header;
use serde_json::Value;

use super::{has_variable, object, unknown, valid_header_name, valid_header_value};
use crate::apisix::route::Errors;

pub const NAME: &str = "proxy-rewrite";

pub const KNOWN: &[&str] = &[
    "uri",
    "regex_uri",
    "host",
    "headers",
    "method",
    "scheme",
    "use_real_request_uri_unsafe",
];

/// How the upstream path is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRewrite {
    /// The whole path becomes this.
    Uri(String),
    /// The first match of `pattern` is replaced by `replacement`, whose
    /// `$n` name the pattern's groups (APISIX's syntax, as given).
    Regex {
        pattern: String,
        replacement: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProxyRewrite {
    pub path: Option<PathRewrite>,
    pub host: Option<String>,
    /// Appended to the request's values (`headers.add`).
    pub add: Vec<(String, String)>,
    /// Replacing the request's values (`headers.set`, or the flat map).
    pub set: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl ProxyRewrite {
    pub fn parse(conf: &Value, at: &str, e: &mut Errors) -> Option<ProxyRewrite> {
        let before = e.len();
        let obj = object(conf, at, e)?;
        unknown(obj, KNOWN, at, e);
        if obj.keys().all(|k| k == "_meta") {
            e.push(at, "must set at least one attribute");
        }
        let mut out = ProxyRewrite::default();
        let field = |f: &str| format!("{at}.{f}");

        for f in ["method", "scheme"] {
            if obj.contains_key(f) {
                let why = if f == "scheme" {
                    "is not supported (set the upstream's \"scheme\")"
                } else {
                    "is not supported (Envoy's route cannot change the method)"
                };
                e.push(&field(f), why);
            }
        }
        match obj.get("use_real_request_uri_unsafe") {
            None | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) => {
                e.push(&field("use_real_request_uri_unsafe"), "is not supported")
            }
            Some(_) => e.push(&field("use_real_request_uri_unsafe"), "must be a boolean"),
        }

        if let Some(u) = obj.get("uri") {
            match u.as_str() {
                Some(s) if !s.starts_with('/') || s.len() > 4096 => e.push(
                    &field("uri"),
                    "must start with \"/\" (at most 4096 characters)",
                ),
                Some(s) if has_variable(s) => e.push(
                    &field("uri"),
                    "is not supported with nginx variables ($name)",
                ),
                Some(s) if s.contains('?') || !valid_path(s) => e.push(
                    &field("uri"),
                    "is not supported with a query or characters outside a URL path",
                ),
                Some(s) => out.path = Some(PathRewrite::Uri(s.to_string())),
                None => e.push(&field("uri"), "must be a string"),
            }
        }
        if let Some(r) = obj.get("regex_uri") {
            let pair: Option<Vec<&str>> = r
                .as_array()
                .and_then(|a| a.iter().map(Value::as_str).collect());
            match pair.as_deref() {
                Some([p, r]) => match check_regex(p, r) {
                    Err(why) => e.push(&field("regex_uri"), why),
                    Ok(()) if out.path.is_none() => {
                        out.path = Some(PathRewrite::Regex {
                            pattern: p.to_string(),
                            replacement: r.to_string(),
                        })
                    }
                    Ok(()) => {}
                },
                Some(a) if a.len() > 2 && a.len() % 2 == 0 => e.push(
                    &field("regex_uri"),
                    "is not supported with more than one [pattern, replacement] pair",
                ),
                _ => e.push(
                    &field("regex_uri"),
                    "must be an array of two strings: [pattern, replacement]",
                ),
            }
        }
        if let Some(h) = obj.get("host") {
            match h.as_str() {
                Some(s) if valid_host(s) => out.host = Some(s.to_string()),
                _ => e.push(
                    &field("host"),
                    "must be a host name or IP address with an optional :port",
                ),
            }
        }
        if let Some(h) = obj.get("headers") {
            parse_headers(h, &field("headers"), AddForm::Object, &mut out, e);
        }
        (e.len() == before).then_some(out)
    }
}

/// How a plugin writes `headers.add`: `proxy-rewrite` as an object of
/// names to values, `response-rewrite` as an array of `"Name: value"`
/// lines (which may repeat a name, as `Set-Cookie`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddForm {
    Object,
    Lines,
}

pub(crate) fn parse_headers(
    h: &Value,
    at: &str,
    add_form: AddForm,
    out: &mut ProxyRewrite,
    e: &mut Errors,
) {
    let Some(obj) = h.as_object().filter(|o| !o.is_empty()) else {
        e.push(at, "must be a non-empty object");
        return;
    };
    let ops = ["add", "set", "remove"];
    if obj.keys().all(|k| ops.contains(&k.as_str())) {
        if let Some(a) = obj.get("add") {
            out.add = match add_form {
                AddForm::Object => header_map(a, &format!("{at}.add"), e),
                AddForm::Lines => header_lines(a, &format!("{at}.add"), e),
            };
        }
        if let Some(s) = obj.get("set") {
            out.set = header_map(s, &format!("{at}.set"), e);
        }
        if let Some(r) = obj.get("remove") {
            let names: Option<Vec<&str>> = r
                .as_array()
                .filter(|a| !a.is_empty())
                .and_then(|a| a.iter().map(Value::as_str).collect());
            match names {
                Some(names) => {
                    for n in names {
                        if !valid_header_name(n) {
                            e.push(
                                &format!("{at}.remove"),
                                format!("{n:?} is not a header name"),
                            );
                        } else if is_pseudo_or_host(n) {
                            e.push(&format!("{at}.remove"), format!("{n:?} cannot be removed"));
                        } else {
                            out.remove.push(n.to_ascii_lowercase());
                        }
                    }
                }
                None => e.push(
                    &format!("{at}.remove"),
                    "must be a non-empty array of header names",
                ),
            }
        }
        for (n, _) in out.add.iter().chain(&out.set) {
            if out.remove.contains(&n.to_ascii_lowercase()) {
                e.push(at, format!("{n:?} is both set and removed"));
            }
        }
    } else {
        // APISIX's older form: a flat map of headers to set.
        out.set = header_map(h, at, e);
    }
}

fn header_map(v: &Value, at: &str, e: &mut Errors) -> Vec<(String, String)> {
    let Some(m) = v.as_object().filter(|m| !m.is_empty()) else {
        e.push(at, "must be a non-empty object of header names to values");
        return Vec::new();
    };
    checked_headers(m.iter().map(|(n, v)| (n.as_str(), v)), at, e)
}

/// `response-rewrite`'s `add`: `["Name: value", ...]`, read as APISIX
/// reads each line (`^([^:\s]+)\s*:\s*([^:]+)$`: no colon in the value).
fn header_lines(v: &Value, at: &str, e: &mut Errors) -> Vec<(String, String)> {
    let Some(items) = v.as_array().filter(|a| !a.is_empty()) else {
        e.push(at, "must be a non-empty array of \"Name: value\" strings");
        return Vec::new();
    };
    let mut pairs = Vec::new();
    for item in items {
        let line = item.as_str().and_then(|l| {
            let (name, value) = l.split_once(':')?;
            let name = name.trim_end();
            let value = value.trim_start();
            (!name.is_empty()
                && !name.contains(char::is_whitespace)
                && !value.is_empty()
                && !value.contains(':'))
            .then(|| (name, Value::String(value.to_string())))
        });
        match line {
            Some(pair) => pairs.push(pair),
            None => e.push(
                at,
                format!("{item} is not a \"Name: value\" string (no ':' in the value)"),
            ),
        }
    }
    checked_headers(pairs.iter().map(|(n, v)| (*n, v)), at, e)
}

fn checked_headers<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a Value)>,
    at: &str,
    e: &mut Errors,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, value) in pairs {
        let here = format!("{at}.{name}");
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                e.push(&here, "must be a string or a number");
                continue;
            }
        };
        if !valid_header_name(name) {
            e.push(&here, "is not a header name");
        } else if is_pseudo_or_host(name) {
            e.push(&here, "cannot be set here (use proxy-rewrite \"host\")");
        } else if is_identity_header(name) {
            e.push(
                &here,
                "is an identity header only openid-connect may set (refused: it would overwrite the verified identity)",
            );
        } else if !valid_header_value(&value) {
            e.push(&here, "has characters a header value cannot hold");
        } else if has_variable(&value) {
            e.push(&here, "is not supported with nginx variables ($name)");
        } else {
            out.push((name.to_string(), value));
        }
    }
    out
}

fn is_pseudo_or_host(n: &str) -> bool {
    n.starts_with(':') || n.eq_ignore_ascii_case("host")
}

/// APISIX's `^[0-9a-zA-Z-.]+(:\d{1,5})?$`.
fn valid_host(s: &str) -> bool {
    let (name, port) = match s.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (s, None),
    };
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Characters a path keeps as written (RFC 3986 pchar, `/`, `%`).
fn valid_path(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b))
}

/// The pattern compiles as RE2 (what Envoy runs) and the replacement's `$`
/// references are ones ngx.re.sub knows, naming groups the pattern has.
fn check_regex(pattern: &str, replacement: &str) -> Result<(), String> {
    // RE2 must read it as PCRE does, within Envoy's program size (a NACK
    // would stop every route update).
    crate::apisix::vars::search_regex(pattern, false).map_err(|why| format!("pattern {why}"))?;
    let re = regex::Regex::new(pattern)
        .map_err(|_| format!("pattern {pattern:?} is not a regular expression Envoy (RE2) runs"))?;
    let groups = re.captures_len() - 1;
    // Checked with the shift the translation uses (one group in front).
    substitution(replacement, 1).ok_or_else(|| {
        format!(
            "replacement {replacement:?}: \"$\" must be followed by a group number (1-8) or \"$\""
        )
    })?;
    let (refs, text) = refs_and_text(replacement);
    for n in refs {
        if n > groups {
            return Err(format!(
                "replacement {replacement:?} names group ${n}, which the pattern does not have"
            ));
        }
    }
    if !valid_path(&text) || text.contains('?') {
        return Err(format!(
            "replacement {replacement:?} is not supported with a query or characters outside a URL path"
        ));
    }
    Ok(())
}

/// A replacement's group references (`$n`, `${n}`) and its literal text
/// without them (`$$` is a literal `$`).
fn refs_and_text(r: &str) -> (Vec<usize>, String) {
    let mut refs = Vec::new();
    let mut text = String::new();
    let mut rest = r;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(more) = after.strip_prefix('$') {
            text.push('$');
            rest = more;
            continue;
        }
        let (digits_from, braced) = match after.strip_prefix('{') {
            Some(a) => (a, true),
            None => (after, false),
        };
        let len = digits_from
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits_from.len());
        if let Ok(n) = digits_from[..len].parse() {
            refs.push(n);
        }
        let skip = len + usize::from(braced && digits_from[len..].starts_with('}'));
        rest = &digits_from[skip..];
    }
    text.push_str(rest);
    (refs, text)
}

/// ngx.re.sub's replacement as an RE2 rewrite string, its group numbers
/// moved up by `shift` (`$1` → `\<1+shift>`); `None` when a `$` is not a
/// group reference or `$$`, or a group number is above 9 (RE2's limit).
pub fn substitution(r: &str, shift: usize) -> Option<String> {
    let b = r.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'$' => {
                if b.get(i + 1) == Some(&b'$') {
                    out.push('$');
                    i += 2;
                    continue;
                }
                let braced = b.get(i + 1) == Some(&b'{');
                let start = i + 1 + usize::from(braced);
                let end = (start..b.len())
                    .find(|&j| !b[j].is_ascii_digit())
                    .unwrap_or(b.len());
                let n: usize = r.get(start..end)?.parse().ok()?;
                if braced && b.get(end) != Some(&b'}') {
                    return None;
                }
                let n = n + shift;
                if n > 9 {
                    return None;
                }
                out.push('\\');
                out.push_str(&n.to_string());
                i = end + usize::from(braced);
            }
            b'\\' => {
                out.push_str("\\\\");
                i += 1;
            }
            _ => {
                // Byte-wise copy of UTF-8 text: push the whole char.
                let ch = r[i..].chars().next()?;
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    Some(out)
}

/// An RE2 rewrite string for a literal path.
pub fn literal_substitution(s: &str) -> String {
    s.replace('\\', "\\\\")
}
