//! The other plugins (`apisix/plugins/`) on the Envoy route.
//!
//! - `proxy-rewrite`: `uri` → `regex_rewrite` `^.*$` → the path (the whole
//!   path, also on a prefix route; the query is kept); `regex_uri` →
//!   `regex_rewrite` `^((?s).*?)(?:<pattern>)` → `\1<replacement>`, so only
//!   the first match is replaced, as ngx.re.sub does (Envoy replaces every
//!   match), the replacement's groups moved up by one; `host` →
//!   `host_rewrite_literal`; headers → `request_headers_to_add` (`add`:
//!   append, `set`: overwrite) / `request_headers_to_remove`, literal values
//!   (`%` doubled: Envoy reads `%...%` as a formatter).
//! - `redirect`: `uri` → the route's action becomes a `redirect`
//!   (`path_redirect`, `scheme_redirect`/`host_redirect`/`port_redirect`
//!   for an absolute URL, `strip_query` unless `append_query_string`);
//!   `http_to_https` → two routes before the route, same match plus
//!   `:scheme` = `http` (and `:method` GET or HEAD for the 301 one, 308
//!   otherwise), redirecting to `https` on the HTTPS listener's port, with
//!   an empty openid-connect version (no login over plain HTTP).
//! - `ip-restriction`: the listener runs Envoy's RBAC filter (no rules:
//!   allow) before the wasm filter; a route with the plugin gets an
//!   `RBACPerRoute` (ALLOW for a whitelist, DENY for a blacklist, on the
//!   remote address: a client's X-Forwarded-For beyond the trusted hops does
//!   not count) and its `message` in route metadata (`ip-restriction`), which
//!   the connection manager's local reply mapper puts in the 403 body
//!   (`{"message": ...}`, as APISIX), recognised by the RBAC reply's response
//!   code details (a CEL filter).
//! - `response-rewrite`: headers → `response_headers_to_add` /
//!   `_remove` (literal values).
//! - `cors`: the listener runs Envoy's CORS filter first (APISIX: cors 4000,
//!   ip-restriction 3000, openid-connect 2599); a route with the plugin gets
//!   a per-route `CorsPolicy` (origins as exact or regex matchers, `*` as
//!   `.*`), so a preflight is answered before the login.

use super::*;
use crate::apisix::plugins::cors::Origins;
use crate::apisix::plugins::proxy_rewrite::{literal_substitution, substitution, PathRewrite};
use crate::apisix::plugins::{Cors, IpRestriction, ProxyRewrite, Redirect};
use envoy_types::pb::envoy::config::accesslog::v3::{
    access_log_filter, extension_filter, AccessLogFilter, ExtensionFilter,
};
use envoy_types::pb::envoy::config::core::v3::{
    substitution_format_string, CidrRange, SubstitutionFormatString,
};
use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, rbac, Permission, Policy, Principal, Rbac,
};
use envoy_types::pb::envoy::config::route::v3::{redirect_action, RedirectAction};
use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{Cors as CorsFilter, CorsPolicy};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::{
    Rbac as RbacFilter, RbacPerRoute,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    LocalReplyConfig, ResponseMapper,
};

/// Applies the route's plugins to its Envoy route.
pub(super) fn apply(spec: &RouteSpec, route: &mut Route) {
    if let Some(p) = &spec.plugins.proxy_rewrite {
        proxy_rewrite(p, route);
    }
    if let Some(r) = &spec.plugins.redirect {
        redirect(r, route);
    }
    if let Some(r) = &spec.plugins.ip_restriction {
        ip_restriction(r, route);
    }
    if let Some(c) = &spec.plugins.cors {
        cors(c, route);
    }
    if let Some(r) = &spec.plugins.response_rewrite {
        use header_value_option::HeaderAppendAction as A;
        route.response_headers_to_add.extend(
            r.add
                .iter()
                .map(|h| header(h, A::AppendIfExistsOrAdd))
                .chain(r.set.iter().map(|h| header(h, A::OverwriteIfExistsOrAdd))),
        );
        route
            .response_headers_to_remove
            .extend(r.remove.iter().cloned());
    }
}

/// A literal header (`%` doubled: Envoy reads `%...%` as a formatter).
fn header(
    (k, v): &(String, String),
    action: header_value_option::HeaderAppendAction,
) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: k.clone(),
            value: v.replace('%', "%%"),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    }
}

/// The CORS filter's name (its per-route config's key).
pub(super) const CORS_FILTER: &str = "envoy.filters.http.cors";

/// The listener's CORS filter, first in the chain: without a route policy
/// it does nothing.
pub(super) fn cors_filter() -> HttpFilter {
    HttpFilter {
        name: CORS_FILTER.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(to_any(
            &CorsFilter::default(),
        ))),
        // On only where a route enables it (`enabled_on_route`).
        disabled: true,
        ..Default::default()
    }
}

fn cors(c: &Cors, route: &mut Route) {
    let regex = |re: &str| StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex: re.into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let mut origins: Vec<StringMatcher> = match &c.origins {
        Origins::Any => vec![regex(".*")],
        Origins::Listed(list) => list
            .iter()
            .map(|o| StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(o.clone())),
                ..Default::default()
            })
            .collect(),
    };
    origins.extend(c.origin_regexes.iter().map(|r| regex(r)));
    let policy = CorsPolicy {
        allow_origin_string_match: origins,
        allow_methods: c.allow_methods.clone(),
        allow_headers: c.allow_headers.clone(),
        expose_headers: c.expose_headers.clone(),
        max_age: if c.max_age >= 0 {
            c.max_age.to_string()
        } else {
            String::new()
        },
        allow_credentials: Some(BoolValue {
            value: c.allow_credential,
        }),
        ..Default::default()
    };
    route
        .typed_per_filter_config
        .insert(CORS_FILTER.into(), enabled_on_route(&policy));
}

/// The RBAC filter's name (its per-route config's key).
pub(super) const RBAC_FILTER: &str = "envoy.filters.http.rbac";
/// The route-metadata namespace of ip-restriction's `message`.
pub(super) const IP_RESTRICTION_NAMESPACE: &str = "ip-restriction";

/// The listener's RBAC filter: no rules, so a route without a policy passes.
pub(super) fn rbac_filter() -> HttpFilter {
    HttpFilter {
        name: RBAC_FILTER.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(to_any(
            &RbacFilter::default(),
        ))),
        // On only where a route enables it (`enabled_on_route`).
        disabled: true,
        ..Default::default()
    }
}

/// An RBAC refusal is answered as APISIX's ip-restriction:
/// `{"message": <the route's message>}` (from the route metadata).
pub(super) fn local_replies() -> LocalReplyConfig {
    // The RBAC filter writes its dynamic metadata after its local reply,
    // so the reply is recognised by its response code details.
    let denied = AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::ExtensionFilter(
            ExtensionFilter {
                name: "envoy.access_loggers.extension_filters.cel".into(),
                config_type: Some(extension_filter::ConfigType::TypedConfig(to_any(
                    &ExpressionFilter {
                        expression: "response.code_details.startsWith('rbac_access_denied')".into(),
                        ..Default::default()
                    },
                ))),
            },
        )),
    };
    let body = Struct {
        fields: [(
            "message".to_string(),
            PbValue {
                kind: Some(value::Kind::StringValue(format!(
                    "%METADATA(ROUTE:{IP_RESTRICTION_NAMESPACE}:message)%"
                ))),
            },
        )]
        .into_iter()
        .collect(),
    };
    let mut mappers = vec![ResponseMapper {
        filter: Some(denied),
        body_format_override: Some(SubstitutionFormatString {
            format: Some(substitution_format_string::Format::JsonFormat(body)),
            ..Default::default()
        }),
        ..Default::default()
    }];
    mappers.extend(super::limits::limit_replies());
    LocalReplyConfig {
        mappers,
        ..Default::default()
    }
}

fn ip_restriction(r: &IpRestriction, route: &mut Route) {
    let ids = r
        .cidrs
        .iter()
        // The connection's peer, as the routes' `remote_addrs` and `vars`
        // test it (listener.rs): not `remote_ip`, which Envoy takes from
        // `X-Forwarded-For` when proxy hops are trusted, so a client that
        // connects directly could choose its address with a header.
        .map(|net| Principal {
            identifier: Some(principal::Identifier::DirectRemoteIp(CidrRange {
                address_prefix: net.network().to_string(),
                prefix_len: Some(UInt32Value {
                    value: u32::from(net.prefix_len()),
                }),
            })),
        })
        .collect();
    let policy = Policy {
        permissions: vec![Permission {
            rule: Some(permission::Rule::Any(true)),
        }],
        principals: vec![Principal {
            identifier: Some(principal::Identifier::OrIds(principal::Set { ids })),
        }],
        ..Default::default()
    };
    let action = if r.allow {
        rbac::Action::Allow
    } else {
        rbac::Action::Deny
    };
    let per_route = RbacPerRoute {
        rbac: Some(RbacFilter {
            rules: Some(Rbac {
                action: action as i32,
                policies: [("ip-restriction".to_string(), policy)]
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    route
        .typed_per_filter_config
        .insert(RBAC_FILTER.into(), enabled_on_route(&per_route));
    let message = Struct {
        fields: [(
            "message".to_string(),
            PbValue {
                kind: Some(value::Kind::StringValue(r.message.clone())),
            },
        )]
        .into_iter()
        .collect(),
    };
    route
        .metadata
        .get_or_insert_with(Default::default)
        .filter_metadata
        .insert(IP_RESTRICTION_NAMESPACE.into(), message);
}

fn redirect(r: &Redirect, route: &mut Route) {
    use redirect_action::{
        PathRewriteSpecifier, RedirectResponseCode as C, SchemeRewriteSpecifier,
    };
    let Some(t) = &r.uri else {
        return;
    };
    let code = match r.ret_code {
        301 => C::MovedPermanently,
        303 => C::SeeOther,
        307 => C::TemporaryRedirect,
        308 => C::PermanentRedirect,
        _ => C::Found,
    };
    let mut a = RedirectAction {
        response_code: code as i32,
        strip_query: !r.append_query_string,
        path_rewrite_specifier: Some(PathRewriteSpecifier::PathRedirect(t.path.clone())),
        ..Default::default()
    };
    if let Some((scheme, host, port)) = &t.origin {
        a.scheme_rewrite_specifier = Some(SchemeRewriteSpecifier::SchemeRedirect(scheme.clone()));
        a.host_redirect = host.clone();
        // A default port is left out of the Location, as written.
        let default = if scheme == "https" { 443 } else { 80 };
        a.port_redirect = if *port == default {
            0
        } else {
            u32::from(*port)
        };
    }
    route.action = Some(route::Action::Redirect(a));
    route.request_headers_to_add.clear();
    route.request_headers_to_remove.clear();
}

/// Inserts the `http_to_https` redirect routes before the routes of specs
/// that have it.
pub(super) fn expand(rc: &mut RouteConfiguration, specs: &[&RouteSpec], https_port: u16) {
    let wants: BTreeSet<&str> = specs
        .iter()
        .filter(|s| s.plugins.redirect.as_ref().is_some_and(|r| r.http_to_https))
        .map(|s| s.id.as_str())
        .collect();
    if wants.is_empty() {
        return;
    }
    for vh in &mut rc.virtual_hosts {
        let routes = std::mem::take(&mut vh.routes);
        for r in routes {
            if wants.contains(super::routes::route_id(&r.name)) {
                vh.routes.push(to_https(&r, https_port, true));
                vh.routes.push(to_https(&r, https_port, false));
            }
            vh.routes.push(r);
        }
    }
}

fn to_https(r: &Route, https_port: u16, get_or_head: bool) -> Route {
    use redirect_action::{RedirectResponseCode as C, SchemeRewriteSpecifier};
    let exact = |name: &str, regex: Option<&str>, exact: &str| HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher {
                match_pattern: Some(match regex {
                    Some(re) => string_matcher::MatchPattern::SafeRegex(RegexMatcher {
                        regex: re.into(),
                        ..Default::default()
                    }),
                    None => string_matcher::MatchPattern::Exact(exact.into()),
                }),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let mut m = r.r#match.clone().unwrap_or_default();
    m.headers.push(exact(":scheme", None, "http"));
    if get_or_head {
        m.headers.push(exact(":method", Some("^(GET|HEAD)$"), ""));
    }
    // A redirect: no openid-connect (an empty version).
    let (mut metadata, version) = super::routes::oidc_metadata(None, &[]);
    if let Some(m) = r
        .metadata
        .as_ref()
        .and_then(|m| m.filter_metadata.get(IP_RESTRICTION_NAMESPACE))
    {
        metadata
            .filter_metadata
            .insert(IP_RESTRICTION_NAMESPACE.into(), m.clone());
    }
    let code = if get_or_head {
        C::MovedPermanently
    } else {
        C::PermanentRedirect
    };
    Route {
        name: route_name(super::routes::route_id(&r.name), &version),
        r#match: Some(m),
        action: Some(route::Action::Redirect(RedirectAction {
            response_code: code as i32,
            port_redirect: u32::from(https_port),
            scheme_rewrite_specifier: Some(SchemeRewriteSpecifier::HttpsRedirect(true)),
            ..Default::default()
        })),
        metadata: Some(metadata),
        // ip-restriction still comes first (APISIX: 3000 before 900); the
        // limits come after the redirect (APISIX: access after rewrite).
        typed_per_filter_config: r
            .typed_per_filter_config
            .iter()
            .filter(|(k, _)| {
                ![
                    super::limits::LIMIT_COUNT_FILTER,
                    super::limits::LIMIT_REQ_FILTER,
                ]
                .contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ..Default::default()
    }
}

fn proxy_rewrite(p: &ProxyRewrite, route: &mut Route) {
    if let Some(route::Action::Route(a)) = &mut route.action {
        let rewrite = match &p.path {
            None => None,
            Some(PathRewrite::Uri(u)) => Some(("^.*$".to_string(), literal_substitution(u))),
            Some(PathRewrite::Regex {
                pattern,
                replacement,
            }) => substitution(replacement, 1)
                .map(|r| (format!("^((?s).*?)(?:{pattern})"), format!("\\1{r}"))),
        };
        if let Some((regex, substitution)) = rewrite {
            a.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(RegexMatcher {
                    regex,
                    ..Default::default()
                }),
                substitution,
            });
        }
        if let Some(h) = &p.host {
            a.host_rewrite_specifier = Some(
                route_action::HostRewriteSpecifier::HostRewriteLiteral(h.clone()),
            );
        }
    }
    use header_value_option::HeaderAppendAction as A;
    route.request_headers_to_add.extend(
        p.add
            .iter()
            .map(|h| header(h, A::AppendIfExistsOrAdd))
            .chain(p.set.iter().map(|h| header(h, A::OverwriteIfExistsOrAdd))),
    );
    route
        .request_headers_to_remove
        .extend(p.remove.iter().cloned());
}
