//! Upstreams: the route action (retries, hashing, timeouts) and the route
//! cluster (endpoints, balancing, health checks, TLS).

use super::*;

/// Retried failures: nginx's default `proxy_next_upstream error timeout`
/// (connection failures, resets, no response).
pub const RETRY_ON: &str = "connect-failure,refused-stream,reset";

/// A duration from (fractional) seconds.
pub(super) fn secs_f64(s: f64) -> Duration {
    let whole = s.trunc();
    Duration {
        seconds: whole as i64,
        nanos: ((s - whole) * 1e9).round() as i32,
    }
}

/// The route's `timeout` if it has one, else its upstream's.
pub(super) fn timeouts(spec: &RouteSpec) -> Option<Timeouts> {
    spec.timeout.or(spec.upstream.timeout)
}

/// Node groups by APISIX priority, highest first (Envoy priority 0 is the
/// highest APISIX priority); nodes of weight 0 are left out, then empty
/// groups, so Envoy's priorities stay contiguous from 0.
pub(super) fn priority_groups(u: &Upstream) -> Vec<Vec<(String, u16, u32)>> {
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

pub(super) fn route_action(spec: &RouteSpec) -> RouteAction {
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
pub(super) fn retry_policy(u: &Upstream) -> Option<RetryPolicy> {
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
pub(super) fn hash_policy(b: &Balancer) -> Vec<route_action::HashPolicy> {
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
pub(super) fn weighted_nodes(nodes: &[Node]) -> Vec<(String, u16, u32)> {
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
pub(super) struct EndpointStyle {
    pub(super) https: bool,
    pub(super) node_host: bool,
    pub(super) check_port: Option<u16>,
}

pub(super) fn lb_endpoint(host: &str, port: u16, weight: u32, style: EndpointStyle) -> LbEndpoint {
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

pub(super) fn load_assignment(name: &str, nodes: &[(String, u16, u32)]) -> ClusterLoadAssignment {
    prioritized_assignment(name, &[nodes.to_vec()], EndpointStyle::default())
}

/// One locality per priority group, Envoy priority = its index.
pub(super) fn prioritized_assignment(
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
pub(super) fn upstream_cluster(spec: &RouteSpec) -> (Cluster, Option<ClusterLoadAssignment>) {
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
        c.transport_socket = Some(tls(Peer::Any, u.verify));
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

/// `checks.active` → an Envoy active health check.
pub(super) fn health_check(a: &ActiveCheck) -> HealthCheck {
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
