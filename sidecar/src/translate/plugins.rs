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

use super::*;
use crate::apisix::plugins::proxy_rewrite::{literal_substitution, substitution, PathRewrite};
use crate::apisix::plugins::{ProxyRewrite, Redirect};
use envoy_types::pb::envoy::config::route::v3::{redirect_action, RedirectAction};

/// Applies the route's plugins to its Envoy route.
pub(super) fn apply(spec: &RouteSpec, route: &mut Route) {
    if let Some(p) = &spec.plugins.proxy_rewrite {
        proxy_rewrite(p, route);
    }
    if let Some(r) = &spec.plugins.redirect {
        redirect(r, route);
    }
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
            if wants.contains(r.name.as_str()) {
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
    let code = if get_or_head {
        C::MovedPermanently
    } else {
        C::PermanentRedirect
    };
    Route {
        name: r.name.clone(),
        r#match: Some(m),
        action: Some(route::Action::Redirect(RedirectAction {
            response_code: code as i32,
            port_redirect: u32::from(https_port),
            scheme_rewrite_specifier: Some(SchemeRewriteSpecifier::HttpsRedirect(true)),
            ..Default::default()
        })),
        metadata: Some(super::routes::oidc_metadata(None, &[])),
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
    let header = |(k, v): &(String, String), action: A| HeaderValueOption {
        header: Some(HeaderValue {
            key: k.clone(),
            value: v.replace('%', "%%"),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    };
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
