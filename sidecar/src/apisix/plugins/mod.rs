//! The APISIX plugins that travel with `openid-connect`, validated into
//! what the translation to Envoy needs (`translate/plugins.rs`). Each
//! plugin takes APISIX's attribute names and defaults; an attribute with no
//! Envoy mapping is refused by name ("is not supported").

use serde_json::{Map, Value};

use crate::apisix::route::{Errors, OIDC_PLUGIN};

pub mod cors;
pub mod ip_restriction;
pub mod limit_count;
pub mod limit_req;
pub mod prometheus;
pub mod proxy_rewrite;
pub mod redirect;
pub mod response_rewrite;

pub use cors::Cors;
pub use ip_restriction::IpRestriction;
pub use limit_count::LimitCount;
pub use limit_req::LimitReq;
pub use prometheus::Prometheus;
pub use proxy_rewrite::ProxyRewrite;
pub use redirect::Redirect;
pub use response_rewrite::ResponseRewrite;

/// The plugins a route may carry here (`/apisix/admin/plugins/list`).
pub const SUPPORTED: &[&str] = &[
    OIDC_PLUGIN,
    proxy_rewrite::NAME,
    redirect::NAME,
    ip_restriction::NAME,
    cors::NAME,
    response_rewrite::NAME,
    limit_count::NAME,
    limit_req::NAME,
    prometheus::NAME,
];

/// The attributes plugin `name` (not `openid-connect`) knows, refused ones
/// included (the Admin API's schemas offer a subset).
pub fn known(name: &str) -> Option<Vec<&'static str>> {
    let with_redis = |k: &[&'static str]| [k, limit_count::REDIS].concat();
    Some(match name {
        proxy_rewrite::NAME => proxy_rewrite::KNOWN.to_vec(),
        redirect::NAME => redirect::KNOWN.to_vec(),
        ip_restriction::NAME => ip_restriction::KNOWN.to_vec(),
        cors::NAME => cors::KNOWN.to_vec(),
        response_rewrite::NAME => response_rewrite::KNOWN.to_vec(),
        limit_count::NAME => with_redis(limit_count::KNOWN),
        limit_req::NAME => with_redis(limit_req::KNOWN),
        prometheus::NAME => prometheus::KNOWN.to_vec(),
        _ => return None,
    })
}

/// The plugins of a route other than `openid-connect`, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plugins {
    pub proxy_rewrite: Option<ProxyRewrite>,
    pub redirect: Option<Redirect>,
    pub ip_restriction: Option<IpRestriction>,
    pub cors: Option<Cors>,
    pub response_rewrite: Option<ResponseRewrite>,
    pub limit_count: Option<LimitCount>,
    pub limit_req: Option<LimitReq>,
    pub prometheus: Option<Prometheus>,
}

impl Plugins {
    /// Validates plugin `name` (not `openid-connect`) into `self`; false
    /// when this gateway has no plugin of that name.
    pub fn add(&mut self, name: &str, conf: &Value, e: &mut Errors) -> bool {
        let at = format!("plugins.{name}");
        match name {
            proxy_rewrite::NAME => self.proxy_rewrite = ProxyRewrite::parse(conf, &at, e),
            redirect::NAME => self.redirect = Redirect::parse(conf, &at, e),
            ip_restriction::NAME => self.ip_restriction = IpRestriction::parse(conf, &at, e),
            cors::NAME => self.cors = Cors::parse(conf, &at, e),
            response_rewrite::NAME => self.response_rewrite = ResponseRewrite::parse(conf, &at, e),
            limit_count::NAME => self.limit_count = LimitCount::parse(conf, &at, e),
            limit_req::NAME => self.limit_req = LimitReq::parse(conf, &at, e),
            prometheus::NAME => self.prometheus = Prometheus::parse(conf, &at, e),
            _ => return false,
        }
        true
    }

    /// What holds between plugins, once all are added: a refusal by
    /// `limit-count` and one by `limit-req` are told apart by their status
    /// code only (Envoy's local replies carry no more), so with the same
    /// `rejected_code` they must have the same `rejected_msg`.
    pub fn check(&self, e: &mut Errors) {
        if let (Some(c), Some(r)) = (&self.limit_count, &self.limit_req) {
            if c.rejected_code == r.rejected_code && c.rejected_msg != r.rejected_msg {
                e.push(
                    &format!("plugins.{}.rejected_msg", limit_req::NAME),
                    format!(
                        "is not supported when it differs from {}'s with the same rejected_code",
                        limit_count::NAME
                    ),
                );
            }
        }
    }
}

/// The object of a plugin's config, or an error; `_meta` is refused (its
/// `disable`, `priority`, `filter` have no mapping here).
pub(crate) fn object<'a>(
    conf: &'a Value,
    at: &str,
    e: &mut Errors,
) -> Option<&'a Map<String, Value>> {
    let Some(obj) = conf.as_object() else {
        e.push(at, "must be an object");
        return None;
    };
    if obj.contains_key("_meta") {
        e.push(&format!("{at}._meta"), "is not supported");
    }
    Some(obj)
}

/// Attributes not in `known` (nor `_meta`) are errors.
pub(crate) fn unknown(obj: &Map<String, Value>, known: &[&str], at: &str, e: &mut Errors) {
    for k in obj.keys() {
        if k != "_meta" && !known.contains(&k.as_str()) {
            e.push(&format!("{at}.{k}"), "is not an attribute of this plugin");
        }
    }
}

/// An HTTP header name (RFC 9110 token).
pub(crate) fn valid_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header value Envoy takes: visible ASCII, space and tab (no CR, LF, NUL,
/// nothing Envoy would refuse and NACK).
pub(crate) fn valid_header_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// Whether `s` holds an nginx variable reference as APISIX resolves them
/// (`$name`, `${name}`), which has no Envoy equivalent here.
pub(crate) fn has_variable(s: &str) -> bool {
    let b = s.as_bytes();
    b.windows(2).enumerate().any(|(i, w)| {
        w[0] == b'$'
            && (i == 0 || b[i - 1] != b'\\')
            && (w[1] == b'{' || w[1] == b'_' || w[1].is_ascii_alphanumeric())
    })
}

#[cfg(test)]
mod tests;
