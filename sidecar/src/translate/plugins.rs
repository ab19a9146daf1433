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

use super::*;
use crate::apisix::plugins::proxy_rewrite::{literal_substitution, substitution, PathRewrite};
use crate::apisix::plugins::ProxyRewrite;

/// Applies the route's plugins to its Envoy route.
pub(super) fn apply(spec: &RouteSpec, route: &mut Route) {
    if let Some(p) = &spec.plugins.proxy_rewrite {
        proxy_rewrite(p, route);
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
