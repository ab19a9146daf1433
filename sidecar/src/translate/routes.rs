//! Virtual hosts, route order and matchers, and the route metadata the filter reads.

use super::*;

use envoy_types::pb::envoy::config::route::v3::{
    query_parameter_matcher, CookieMatcher, QueryParameterMatcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    filter_state_matcher, AddressMatcher, FilterStateMatcher,
};
use envoy_types::pb::xds::core::v3::CidrRange;

use crate::apisix::vars::{Check, Cond, Source, Test, REMOTE_ADDR_KEY};

/// One (uri, route) pair: one Envoy route.
#[derive(Clone, Copy)]
pub struct Entry<'a> {
    pub spec: &'a RouteSpec,
    pub uri: &'a UriMatch,
}

impl Entry<'_> {
    /// Which of its route's uris it is.
    pub fn uri_index(&self) -> usize {
        self.spec
            .uris
            .iter()
            .position(|u| std::ptr::eq(u, self.uri))
            .unwrap_or(0)
    }
}

impl Entry<'_> {
    /// Exact before prefix, longer first, higher priority first, then id.
    fn order_key(
        &self,
    ) -> (
        u8,
        std::cmp::Reverse<usize>,
        &str,
        std::cmp::Reverse<i64>,
        &str,
    ) {
        let (kind, path) = match self.uri {
            UriMatch::Exact(p) => (0, p.as_str()),
            UriMatch::Prefix(p) => (1, p.as_str()),
        };
        (
            kind,
            std::cmp::Reverse(path.len()),
            path,
            std::cmp::Reverse(self.spec.priority),
            self.spec.id.as_str(),
        )
    }
}

pub(super) fn sorted_entries<'a>(specs: impl Iterator<Item = &'a RouteSpec>) -> Vec<Entry<'a>> {
    let mut out: Vec<Entry<'a>> = specs
        .flat_map(|spec| spec.uris.iter().map(move |uri| Entry { spec, uri }))
        .collect();
    out.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    out
}

/// Whether wildcard `w` (`*.suffix`) covers host pattern `d` (another
/// pattern: a host or a narrower wildcard).
pub(super) fn covers(w: &str, d: &str) -> bool {
    match w.strip_prefix('*') {
        Some(suffix) => w != d && d.ends_with(suffix),
        None => false,
    }
}

/// One virtual host of the route configuration, before its routes are
/// made: its name, its domain and its (uri, route) pairs in order.
pub struct VirtualHostLayout<'a> {
    pub name: String,
    pub domain: String,
    pub entries: Vec<Entry<'a>>,
}

/// The virtual hosts of the route configuration and the (uri, route)
/// pairs of each, in order (see the module documentation).
pub fn route_layout<'a>(specs: &[&'a RouteSpec]) -> Vec<VirtualHostLayout<'a>> {
    let hostless: Vec<Entry> = sorted_entries(specs.iter().copied().filter(|s| s.hosts.is_empty()));
    let patterns: BTreeSet<&str> = specs
        .iter()
        .flat_map(|s| s.hosts.iter().map(String::as_str))
        .collect();

    let mut virtual_hosts = Vec::new();
    for &domain in &patterns {
        // Its own routes, then the routes of wider wildcards (longer,
        // i.e. narrower, first), then the host-less ones.
        let mut wider: Vec<&str> = patterns
            .iter()
            .copied()
            .filter(|w| covers(w, domain))
            .collect();
        wider.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        let mut entries = Vec::new();
        for pattern in std::iter::once(domain).chain(wider) {
            entries.extend(sorted_entries(
                specs
                    .iter()
                    .copied()
                    .filter(|s| s.hosts.iter().any(|h| h == pattern)),
            ));
        }
        entries.extend(hostless.iter().copied());
        virtual_hosts.push(layout_host(domain, domain, &entries));
    }
    virtual_hosts.push(layout_host("any", "*", &hostless));
    virtual_hosts
}

/// The route configuration without its virtual hosts.
pub fn route_config_header() -> RouteConfiguration {
    RouteConfiguration {
        name: ROUTE_CONFIG.into(),
        ignore_port_in_host_matching: true,
        ..Default::default()
    }
}

/// A virtual host without its routes.
pub fn virtual_host_header(vh: &VirtualHostLayout) -> VirtualHost {
    VirtualHost {
        name: vh.name.clone(),
        domains: vec![vh.domain.clone()],
        ..Default::default()
    }
}

pub(super) fn route_config(specs: &[&RouteSpec]) -> RouteConfiguration {
    RouteConfiguration {
        virtual_hosts: route_layout(specs)
            .iter()
            .map(|vh| VirtualHost {
                routes: vh.entries.iter().flat_map(envoy_routes).collect(),
                ..virtual_host_header(vh)
            })
            .collect(),
        ..route_config_header()
    }
}

fn layout_host<'a>(name: &str, domain: &str, entries: &[Entry<'a>]) -> VirtualHostLayout<'a> {
    // A route listed under its exact host and a covering wildcard, or
    // naming a uri twice, becomes one Envoy route (the first).
    let mut seen = BTreeSet::new();
    let entries = entries
        .iter()
        .filter(|e| {
            let (kind, _, path, _, id) = e.order_key();
            seen.insert((id, kind, path))
        })
        .copied()
        .collect();
    VirtualHostLayout {
        name: name.into(),
        domain: domain.into(),
        entries,
    }
}

/// The Envoy routes of one (uri, route) pair as they go into a virtual
/// host: with the back-channel sink route (when `sink_done` is given, the
/// route has a `backchannel_logout_path` and its id is not in `sink_done`
/// yet: the first of its routes in a virtual host that takes the path gets
/// it; its id is then added) and the `http_to_https` redirects. What
/// [`translate`] makes of it in the route configuration, one pair at a
/// time, so that a caller may keep the result of each.
pub fn entry_routes(
    e: &Entry,
    https_port: u16,
    sink_done: Option<&mut BTreeSet<String>>,
) -> (Vec<Route>, bool) {
    let mut one = RouteConfiguration {
        virtual_hosts: vec![VirtualHost {
            routes: envoy_routes(e),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut added = false;
    if let Some(done) = sink_done {
        if !done.contains(&e.spec.id) && backchannel_sinks(&mut one, &[e.spec]) {
            done.insert(e.spec.id.clone());
            added = true;
        }
    }
    super::plugins::expand(&mut one, &[e.spec], https_port);
    let routes = one
        .virtual_hosts
        .pop()
        .map(|vh| vh.routes)
        .unwrap_or_default();
    (routes, added)
}

/// Whether the route has a back-channel logout path (its routes get a
/// sink route: see [`entry_routes`]).
pub fn has_backchannel_path(spec: &RouteSpec) -> bool {
    spec.oidc
        .as_ref()
        .is_some_and(|(_, p)| p.backchannel_logout_path.is_some())
}

/// The Envoy routes of one (uri, route) pair: one per alternative of its
/// `vars` (one when it has none), next to each other, so the first that
/// matches is taken as APISIX takes the route when any alternative holds.
pub(super) fn envoy_routes(e: &Entry) -> Vec<Route> {
    let path_specifier = match e.uri {
        UriMatch::Exact(p) => route_match::PathSpecifier::Path(p.clone()),
        UriMatch::Prefix(p) => route_match::PathSpecifier::Prefix(p.clone()),
    };
    let mut action = route_action(e.spec);
    if e.spec.enable_websocket {
        action.upgrade_configs = vec![route_action::UpgradeConfig {
            upgrade_type: "websocket".into(),
            enabled: Some(BoolValue { value: true }),
            ..Default::default()
        }];
    }
    let (metadata, version) = oidc_metadata(
        e.spec.oidc.as_ref().map(|(stored, _)| stored),
        &e.spec.hosts,
    );
    // The filter reads the version in the name first (`oidc_core::metadata`).
    let name = route_name(&e.spec.id, &version);
    e.spec
        .vars
        .iter()
        .map(|conds| {
            let mut m = RouteMatch {
                path_specifier: Some(path_specifier.clone()),
                headers: method_matcher(&e.spec.methods).into_iter().collect(),
                ..Default::default()
            };
            if !e.spec.remote_addrs.is_empty() {
                m.filter_state
                    .push(remote_addr_matcher(&e.spec.remote_addrs, false));
            }
            for c in conds {
                add_matcher(&mut m, c);
            }
            let mut route = Route {
                name: name.clone(),
                r#match: Some(m),
                action: Some(route::Action::Route(action.clone())),
                metadata: Some(metadata.clone()),
                ..Default::default()
            };
            super::plugins::apply(e.spec, &mut route);
            super::limits::apply(e.spec, &mut route);
            route
        })
        .collect()
}

/// For each route with a `backchannel_logout_path` (an extension of the
/// `openid-connect` plugin), an Envoy route for exactly that path, put
/// before the first of its routes that would take the path (so a more
/// specific route keeps it, as in APISIX): the same name, metadata,
/// matchers and plugins, but the router's request goes to the sink
/// ([`BACKCHANNEL_SINK_CLUSTER`]), never to the upstream. `true` when one
/// was added.
pub(super) fn backchannel_sinks(rc: &mut RouteConfiguration, specs: &[&RouteSpec]) -> bool {
    let paths: BTreeMap<&str, &str> = specs
        .iter()
        .filter_map(|s| {
            let p = s.oidc.as_ref()?.1.backchannel_logout_path.as_deref()?;
            Some((s.id.as_str(), p))
        })
        .collect();
    let mut added = false;
    for vh in &mut rc.virtual_hosts {
        let mut done = BTreeSet::new();
        let routes = std::mem::take(&mut vh.routes);
        for r in routes {
            let id = route_id(&r.name);
            if let Some(&path) = paths.get(id) {
                let takes = match r.r#match.as_ref().and_then(|m| m.path_specifier.as_ref()) {
                    Some(route_match::PathSpecifier::Path(p)) => p == path,
                    Some(route_match::PathSpecifier::Prefix(p)) => path.starts_with(p.as_str()),
                    _ => false,
                };
                if takes && done.insert(id.to_string()) {
                    let mut sink = r.clone();
                    if let Some(m) = sink.r#match.as_mut() {
                        m.path_specifier = Some(route_match::PathSpecifier::Path(path.into()));
                    }
                    sink.action = Some(route::Action::Route(RouteAction {
                        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                            BACKCHANNEL_SINK_CLUSTER.into(),
                        )),
                        timeout: Some(seconds(ROUTE_TIMEOUT_SECS)),
                        ..Default::default()
                    }));
                    vh.routes.push(sink);
                    added = true;
                }
            }
            vh.routes.push(r);
        }
    }
    added
}

/// The route id in an Envoy route name (the name without the version,
/// `oidc_core::metadata::route_name`).
pub(super) fn route_id(name: &str) -> &str {
    name.rsplit_once(ROUTE_NAME_MARK).map_or(name, |(id, _)| id)
}

fn string_matcher(t: &Test) -> StringMatcher {
    let pattern = match t {
        Test::Exact(s) => string_matcher::MatchPattern::Exact(s.clone()),
        Test::Regex(r) => string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex: r.clone(),
            ..Default::default()
        }),
        // Not used: `add_matcher` makes addresses filter-state matchers.
        Test::Cidrs(_) => string_matcher::MatchPattern::Exact(String::new()),
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}

/// The filter-state matcher on the downstream address (see
/// [`REMOTE_ADDR_KEY`] and the listener's `set_filter_state`).
pub(super) fn remote_addr_matcher(nets: &[ipnet::IpNet], invert: bool) -> FilterStateMatcher {
    FilterStateMatcher {
        key: REMOTE_ADDR_KEY.into(),
        matcher: Some(filter_state_matcher::Matcher::AddressMatch(
            AddressMatcher {
                ranges: nets
                    .iter()
                    .map(|n| CidrRange {
                        address_prefix: n.network().to_string(),
                        prefix_len: Some(UInt32Value {
                            value: u32::from(n.prefix_len()),
                        }),
                    })
                    .collect(),
                invert_match: invert,
            },
        )),
    }
}

/// A matcher no request passes: a filter-state key nothing sets.
fn unmatchable() -> FilterStateMatcher {
    FilterStateMatcher {
        key: "apisix.unmatchable".into(),
        matcher: Some(filter_state_matcher::Matcher::StringMatch(string_matcher(
            &Test::Exact(String::new()),
        ))),
    }
}

/// One `vars` condition as one matcher of `m`.
fn add_matcher(m: &mut RouteMatch, c: &Cond) {
    use header_matcher::HeaderMatchSpecifier;
    let cidrs = matches!(
        &c.check,
        Check::Is(Test::Cidrs(_)) | Check::Not(Test::Cidrs(_)) | Check::PresentNot(Test::Cidrs(_))
    );
    match (&c.source, &c.check) {
        // `vars` makes addresses only for `remote_addr`.
        (Source::Query(_) | Source::Header(_) | Source::Cookie(_), _) if cidrs => {
            m.filter_state.push(unmatchable())
        }
        (Source::RemoteAddr, Check::Is(Test::Cidrs(nets))) => {
            m.filter_state.push(remote_addr_matcher(nets, false))
        }
        (Source::RemoteAddr, Check::Not(Test::Cidrs(nets))) => {
            m.filter_state.push(remote_addr_matcher(nets, true))
        }
        (Source::Query(name), Check::Is(t)) => m.query_parameters.push(QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(
                query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(string_matcher(
                    t,
                )),
            ),
        }),
        (Source::Cookie(name), Check::Is(t) | Check::Not(t)) => m.cookies.push(CookieMatcher {
            name: name.clone(),
            string_match: Some(string_matcher(t)),
            invert_match: matches!(c.check, Check::Not(_)),
        }),
        (Source::Header(name), check) => {
            let (spec, invert, missing_empty) = match check {
                Check::Is(t) => (
                    HeaderMatchSpecifier::StringMatch(string_matcher(t)),
                    false,
                    false,
                ),
                // Only for tests that the empty value fails (`vars` splits
                // the others into `Absent` and `PresentNot`).
                Check::Not(t) => (
                    HeaderMatchSpecifier::StringMatch(string_matcher(t)),
                    true,
                    true,
                ),
                Check::PresentNot(t) => (
                    HeaderMatchSpecifier::StringMatch(string_matcher(t)),
                    true,
                    false,
                ),
                Check::Absent => (HeaderMatchSpecifier::PresentMatch(false), false, false),
            };
            m.headers.push(HeaderMatcher {
                name: name.clone(),
                header_match_specifier: Some(spec),
                invert_match: invert,
                treat_missing_header_as_empty: missing_empty,
            });
        }
        // `vars` does not make these (negated query tests, address tests
        // elsewhere); a route that cannot match is safer than one that
        // matches more.
        _ => m.filter_state.push(unmatchable()),
    }
}

/// `:method` matching one of `methods` (none: any method).
pub(super) fn method_matcher(methods: &[String]) -> Option<HeaderMatcher> {
    if methods.is_empty() {
        return None;
    }
    let set: BTreeSet<&str> = methods.iter().map(String::as_str).collect();
    let alternatives: Vec<&str> = set.into_iter().collect();
    Some(HeaderMatcher {
        name: ":method".into(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
                    regex: format!("^({})$", alternatives.join("|")),
                    ..Default::default()
                })),
                ..Default::default()
            },
        )),
        ..Default::default()
    })
}

/// `openid-connect: {"config": <plugin JSON text>}` and
/// `openid-connect-version: {"version": <hash of it>}`; a route without the
/// plugin gets only an empty version (the filter then reads nothing more).
/// A route with `hosts` also carries them, as a JSON list in
/// `openid-connect.hosts` (the request hosts a login may make its redirect
/// URI from), and its version covers them.
pub(super) fn oidc_metadata(stored: Option<&Value>, hosts: &[String]) -> (Metadata, String) {
    let text = |s: String| PbValue {
        kind: Some(value::Kind::StringValue(s)),
    };
    let one = |k: &str, v: String| Struct {
        fields: [(k.to_string(), text(v))].into_iter().collect(),
    };
    let mut filter_metadata = std::collections::HashMap::new();
    let version = match stored {
        Some(stored) => {
            let config = stored.to_string();
            let mut fields = one(CONFIG_KEY, config.clone());
            let version = if hosts.is_empty() {
                config_version(&config)
            } else {
                let hosts = Value::from(hosts.to_vec()).to_string();
                let version = config_version(&format!("{config}\n{hosts}"));
                fields.fields.insert(HOSTS_KEY.into(), text(hosts));
                version
            };
            filter_metadata.insert(OIDC_NAMESPACE.to_string(), fields);
            filter_metadata.insert(
                OIDC_VERSION_NAMESPACE.to_string(),
                one(VERSION_KEY, version.clone()),
            );
            version
        }
        None => {
            filter_metadata.insert(
                OIDC_VERSION_NAMESPACE.to_string(),
                one(VERSION_KEY, String::new()),
            );
            String::new()
        }
    };
    let metadata = Metadata {
        filter_metadata,
        ..Default::default()
    };
    (metadata, version)
}
