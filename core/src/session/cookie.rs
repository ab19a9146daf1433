//! Cookies: parsing the `Cookie` header, chunking, `Set-Cookie`.
//!
//! A value of at most `max_len` bytes ([`MAX_COOKIE_VALUE`]) travels in one
//! cookie named `name`. A longer one is cut into `name_1`, `name_2`, …,
//! `name_N`, each at most `max_len` bytes, in order. [`reassemble`] reads
//! the plain `name` when present, otherwise every `name_N` chunk: the
//! indices must run 1..=N without a gap. A lost trailing chunk cannot be
//! seen there, but the truncated value then fails authentication in
//! [`open`]. Whenever the cookie is re-issued, cookies of the previous
//! layout that the new one does not overwrite must be expired:
//! [`set_session_cookies`] does both.

use std::collections::BTreeMap;

use crate::config::{SameSite, SessionConfig};

/// Default largest cookie value, in bytes, before chunking.
pub const MAX_COOKIE_VALUE: usize = 4000;
/// [`reassemble`] reads at most this many chunks (256 KB at the default
/// size, far beyond any request header limit).
const MAX_CHUNKS: usize = 64;

/// Cuts `value` into cookies (see the module docs). `max_len` 0 counts as 1.
pub fn chunk(name: &str, value: &str, max_len: usize) -> Vec<(String, String)> {
    let max_len = max_len.max(1);
    if value.len() <= max_len {
        return vec![(name.to_string(), value.to_string())];
    }
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let mut end = max_len.min(rest.len());
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        if end == 0 {
            // A character longer than max_len: take it whole.
            end = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        let (head, tail) = rest.split_at(end);
        out.push((format!("{name}_{}", out.len() + 1), head.to_string()));
        rest = tail;
    }
    out
}

/// The index `N` of a chunk cookie `name_N`, if `cookie` is one.
fn chunk_index(name: &str, cookie: &str) -> Option<usize> {
    let digits = cookie.strip_prefix(name)?.strip_prefix('_')?;
    if digits.is_empty()
        || digits.len() > 3
        || digits.starts_with('0')
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    digits.parse().ok()
}

/// Whether `cookie` is the session cookie `name` or one of its chunks.
pub fn is_session_cookie(name: &str, cookie: &str) -> bool {
    cookie == name || chunk_index(name, cookie).is_some()
}

/// Whether `cookie` belongs to the session named `name`: the session
/// cookie, one of its chunks, or a login flow cookie (`<name>_flow_<state>`).
pub fn is_ours(name: &str, cookie: &str) -> bool {
    is_session_cookie(name, cookie)
        || cookie
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with("_flow_"))
}

/// The `Cookie` header the upstream gets: the request's cookies without
/// the session's (see [`is_ours`]). `None` when none of them was ours (the
/// header stays as it is); `Some("")` when nothing is left.
pub fn without_ours(name: &str, cookies: &[(String, String)]) -> Option<String> {
    if !cookies.iter().any(|(k, _)| is_ours(name, k)) {
        return None;
    }
    let rest: Vec<String> = cookies
        .iter()
        .filter(|(k, _)| !is_ours(name, k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    Some(rest.join("; "))
}

/// The value of cookie `name` from a parsed `Cookie` header, joining chunks
/// (see the module docs). The first occurrence of a name wins. `None` when
/// absent or when a chunk is missing.
pub fn reassemble(name: &str, cookies: &[(String, String)]) -> Option<String> {
    if let Some((_, v)) = cookies.iter().find(|(k, _)| k == name) {
        return Some(v.clone());
    }
    let mut chunks: BTreeMap<usize, &str> = BTreeMap::new();
    for (k, v) in cookies {
        if let Some(i) = chunk_index(name, k) {
            chunks.entry(i).or_insert(v);
        }
    }
    let (&last, _) = chunks.last_key_value()?;
    if last != chunks.len() || last > MAX_CHUNKS {
        return None;
    }
    Some(chunks.into_values().collect())
}

/// Parses a `Cookie` header (`a=b; c=d`). Pieces without `=` or with an
/// empty or invalid name are skipped; one pair of surrounding double quotes
/// is removed from a value.
pub fn parse_cookie_header(header: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for piece in header.split(';') {
        let Some((name, value)) = piece.split_once('=') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty()
            || name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "\",;=".contains(c))
        {
            continue;
        }
        let mut value = value.trim();
        if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
            value = &value[1..value.len() - 1];
        }
        out.push((name.to_string(), value.to_string()));
    }
    out
}

/// `Set-Cookie` attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieAttrs {
    pub path: String,
    pub domain: Option<String>,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: SameSite,
    /// `None`: a browser-session cookie.
    pub max_age: Option<u64>,
}

impl CookieAttrs {
    /// The attributes configured in `session`. `https` is whether the
    /// request came over TLS: the default of `cookie_secure`.
    pub fn from_config(cfg: &SessionConfig, https: bool) -> CookieAttrs {
        CookieAttrs {
            path: cfg.cookie_path.clone(),
            domain: cfg.cookie_domain.clone(),
            secure: cfg.cookie_secure.unwrap_or(https),
            http_only: cfg.cookie_http_only,
            same_site: cfg.cookie_same_site,
            max_age: None,
        }
    }
}

/// Removes what could end an attribute or the header.
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control() && *c != ';').collect()
}

/// A `Set-Cookie` header value.
pub fn set_cookie(name: &str, value: &str, attrs: &CookieAttrs) -> String {
    let mut out = format!("{}={}", clean(name), clean(value));
    if !attrs.path.is_empty() {
        out.push_str("; Path=");
        out.push_str(&clean(&attrs.path));
    }
    if let Some(domain) = attrs.domain.as_deref().filter(|d| !d.is_empty()) {
        out.push_str("; Domain=");
        out.push_str(&clean(domain));
    }
    if let Some(max_age) = attrs.max_age {
        out.push_str(&format!("; Max-Age={max_age}"));
    }
    if attrs.secure {
        out.push_str("; Secure");
    }
    if attrs.http_only {
        out.push_str("; HttpOnly");
    }
    match attrs.same_site {
        SameSite::Strict => out.push_str("; SameSite=Strict"),
        SameSite::Lax => out.push_str("; SameSite=Lax"),
        SameSite::None => out.push_str("; SameSite=None"),
        SameSite::Default => {}
    }
    out
}

fn expire(name: &str, attrs: &CookieAttrs) -> String {
    let attrs = CookieAttrs {
        max_age: Some(0),
        ..attrs.clone()
    };
    set_cookie(name, "", &attrs)
}

/// `Set-Cookie` values that expire `name` and every chunk `name_N` in the
/// request's cookies (logout, or a session that failed to open).
pub fn clear_cookies(name: &str, present: &[(String, String)], attrs: &CookieAttrs) -> Vec<String> {
    let mut names: Vec<&str> = vec![name];
    for (k, _) in present {
        if chunk_index(name, k).is_some() && !names.contains(&k.as_str()) {
            names.push(k);
        }
    }
    names.into_iter().map(|n| expire(n, attrs)).collect()
}

/// `Set-Cookie` values that store `cookies` (from [`super::encode`]) and expire
/// any cookie of the request's previous layout that they do not overwrite.
pub fn set_session_cookies(
    name: &str,
    cookies: &[(String, String)],
    present: &[(String, String)],
    attrs: &CookieAttrs,
) -> Vec<String> {
    let mut out: Vec<String> = cookies
        .iter()
        .map(|(k, v)| set_cookie(k, v, attrs))
        .collect();
    let mut stale: Vec<&str> = Vec::new();
    for (k, _) in present {
        let ours = k == name || chunk_index(name, k).is_some();
        if ours && !cookies.iter().any(|(n, _)| n == k) && !stale.contains(&k.as_str()) {
            stale.push(k);
        }
    }
    out.extend(stale.into_iter().map(|n| expire(n, attrs)));
    out
}
