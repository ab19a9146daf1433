//! Provider clusters: one per scheme, host and port the plugin configs (and
//! their discovery documents) call.

use super::*;

pub(super) struct Provider {
    pub(super) scheme: String,
    /// As in the URL: IPv6 in brackets.
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) verify: bool,
}

pub(super) fn provider_clusters(
    specs: &[&RouteSpec],
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
pub(super) fn add_provider(
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

pub(super) fn provider_cluster(name: String, p: &Provider) -> Cluster {
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
        c.transport_socket = Some(tls(
            Peer::Named {
                host: address,
                is_ip,
            },
            p.verify,
        ));
    }
    c
}

/// The limits on calls to one provider host ([`PROVIDER_MAX_REQUESTS`]).
pub(super) fn provider_circuit_breakers() -> CircuitBreakers {
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
