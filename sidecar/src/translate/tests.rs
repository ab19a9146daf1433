use super::*;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::r#type::matcher::v3::filter_state_matcher;
use prost::Message;
use serde_json::json;

use crate::store::Stored;

fn settings() -> ProxySettings {
    ProxySettings {
        listen_addr: "127.0.0.1".into(),
        proxy_port: 9080,
        https_port: 9443,
        wasm_path: PathBuf::from("/opt/oidc_filter.wasm"),
        filter_settings: r#"{"token_cache_size":16}"#.into(),
        trusted_proxy_hops: 0,
        backchannel_sink: None,
        revocations: None,
        clients: Default::default(),
    }
}

fn route(uri: &str, nodes: Value) -> Value {
    json!({"uri": uri, "upstream": {"type": "roundrobin", "nodes": nodes}})
}

fn plugin(discovery: &str) -> Value {
    json!({
        "client_id": "apisix-quickstart-client",
        "client_secret": "bSaIN3MV1YynmtXvU8lKkfeY0iwpr9cH",
        "discovery": discovery,
        "bearer_only": true,
    })
}

fn with_plugin(mut r: Value, p: Value) -> Value {
    r["plugins"] = json!({ "openid-connect": p });
    r
}

/// Translates a stored set, through its route table.
fn translate(stored: &Stored, s: &ProxySettings, extra: &[String]) -> Resources {
    super::translate(&RouteTable::build(stored.clone()), s, extra)
}

fn set(routes: &[(&str, Value)]) -> Stored {
    Stored::with_routes(
        routes
            .iter()
            .map(|(id, v)| (id.to_string(), v.clone()))
            .collect(),
    )
}

fn run(routes: &[(&str, Value)]) -> Resources {
    let r = translate(&set(routes), &settings(), &[]);
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    r
}

/// Decodes `any`, or the config inside a route's `FilterConfig` (a filter
/// the listener declares disabled, enabled on the route).
fn decode<M: prost::Message + Default>(any: &Any) -> M {
    use envoy_types::pb::envoy::config::route::v3::FilterConfig;
    if any
        .type_url
        .ends_with("/envoy.config.route.v3.FilterConfig")
    {
        let f = FilterConfig::decode(any.value.as_slice()).expect("decodes");
        assert!(!f.disabled, "a route's FilterConfig enables its filter");
        return decode(f.config.as_ref().expect("a config"));
    }
    M::decode(any.value.as_slice()).expect("decodes")
}

fn vhost<'a>(r: &'a Resources, domain: &str) -> &'a VirtualHost {
    r.route_configs[0]
        .virtual_hosts
        .iter()
        .find(|v| v.domains == [domain])
        .unwrap_or_else(|| panic!("no virtual host for {domain}"))
}

/// (name, "path=..." or "prefix=...", method regex) of each route.
fn summary(vh: &VirtualHost) -> Vec<(String, String, String)> {
    vh.routes
        .iter()
        .map(|r| {
            let m = r.r#match.as_ref().expect("match");
            let path = match m.path_specifier.as_ref().expect("path") {
                route_match::PathSpecifier::Path(p) => format!("path={p}"),
                route_match::PathSpecifier::Prefix(p) => format!("prefix={p}"),
                other => format!("{other:?}"),
            };
            let method = m
                .headers
                .iter()
                .map(|h| match &h.header_match_specifier {
                    Some(header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
                        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(re)),
                        ..
                    })) => format!("{}~{}", h.name, re.regex),
                    other => format!("{other:?}"),
                })
                .collect::<Vec<_>>()
                .join(",");
            (id_of(r).to_string(), path, method)
        })
        .collect()
}

fn s(name: &str, path: &str, method: &str) -> (String, String, String) {
    (name.into(), path.into(), method.into())
}

fn cluster<'a>(r: &'a Resources, name: &str) -> &'a Cluster {
    r.clusters
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no cluster {name}: {:?}", names(r)))
}

fn names(r: &Resources) -> Vec<&str> {
    r.clusters.iter().map(|c| c.name.as_str()).collect()
}

fn discovery_type(c: &Cluster) -> cluster::DiscoveryType {
    match c.cluster_discovery_type {
        Some(cluster::ClusterDiscoveryType::Type(t)) => {
            cluster::DiscoveryType::try_from(t).expect("known type")
        }
        ref other => panic!("{other:?}"),
    }
}

/// (address, port, weight) of each endpoint.
fn endpoints(cla: &ClusterLoadAssignment) -> Vec<(String, u32, u32)> {
    cla.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .map(|e| {
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                panic!("{e:?}")
            };
            let Some(address::Address::SocketAddress(sa)) =
                ep.address.as_ref().and_then(|a| a.address.clone())
            else {
                panic!("{ep:?}")
            };
            let Some(socket_address::PortSpecifier::PortValue(port)) = sa.port_specifier else {
                panic!("{sa:?}")
            };
            let weight = e.load_balancing_weight.map(|w| w.value).unwrap_or(0);
            (sa.address, port, weight)
        })
        .collect()
}

fn metadata(r: &Route) -> Option<(String, String)> {
    let md = r.metadata.as_ref()?;
    let text = |ns: &str, k: &str| match &md.filter_metadata[ns].fields[k].kind {
        Some(value::Kind::StringValue(s)) => s.clone(),
        other => panic!("{k}: {other:?}"),
    };
    let version = text(OIDC_VERSION_NAMESPACE, "version");
    if version.is_empty() {
        // No plugin: the empty version alone.
        assert_eq!(md.filter_metadata.len(), 1);
        return None;
    }
    assert_eq!(md.filter_metadata.len(), 2);
    if md.filter_metadata[OIDC_NAMESPACE].fields.len() == 2 {
        // With hosts: the version covers them.
        let hosts = text(OIDC_NAMESPACE, "hosts");
        let config = text(OIDC_NAMESPACE, "config");
        assert_eq!(version, config_version(&format!("{config}\n{hosts}")));
        return Some((config, version));
    }
    assert_eq!(md.filter_metadata[OIDC_NAMESPACE].fields.len(), 1);
    Some((text(OIDC_NAMESPACE, "config"), version))
}

#[test]
fn exact_before_prefix_longer_first_then_priority_then_id() {
    let up = json!({"127.0.0.1:8080": 1});
    let mut e = json!({"uris": ["/x", "/api/*"], "methods": ["POST", "GET", "POST"],
        "upstream": {"nodes": up}});
    e["priority"] = json!(0);
    let mut d = route("/api/*", up.clone());
    d["priority"] = json!(5);
    let r = run(&[
        ("a", route("/api/*", up.clone())),
        ("b", route("/api/v1/*", up.clone())),
        ("c", route("/api/v1", up.clone())),
        ("d", d),
        ("e", e),
    ]);
    assert_eq!(r.route_configs.len(), 1);
    assert_eq!(r.route_configs[0].name, ROUTE_CONFIG);
    assert!(r.route_configs[0].ignore_port_in_host_matching);
    assert_eq!(r.route_configs[0].virtual_hosts.len(), 1);
    let methods = ":method~^(GET|POST)$";
    assert_eq!(
        summary(vhost(&r, "*")),
        vec![
            s("c", "path=/api/v1", ""),
            s("e", "path=/x", methods),
            s("b", "prefix=/api/v1/", ""),
            s("d", "prefix=/api/", ""),
            s("a", "prefix=/api/", ""),
            s("e", "prefix=/api/", methods),
        ]
    );
    // Every route goes to its own cluster, with the default timeout.
    for rt in &vhost(&r, "*").routes {
        let Some(route::Action::Route(a)) = &rt.action else {
            panic!("{rt:?}")
        };
        assert_eq!(
            a.cluster_specifier,
            Some(route_action::ClusterSpecifier::Cluster(format!(
                "route|{}",
                id_of(rt)
            )))
        );
        assert_eq!(a.timeout, Some(seconds(60)));
    }
}

#[test]
fn hosts_get_their_own_virtual_hosts_with_wider_and_hostless_routes_after() {
    let up = json!({"127.0.0.1:8080": 1});
    let mut exact = route("/a/*", up.clone());
    exact["host"] = json!("Foo.Example.com");
    let mut wild = route("/a/*", up.clone());
    wild["hosts"] = json!(["*.example.com", "other.test"]);
    let mut wider_prefix = route("/a/b/*", up.clone());
    wider_prefix["hosts"] = json!(["*.example.com"]);
    let mut both = route("/c", up.clone());
    both["hosts"] = json!(["foo.example.com", "*.example.com"]);
    let r = run(&[
        ("exact", exact),
        ("wild", wild),
        ("wider", wider_prefix),
        ("both", both),
        ("plain", route("/*", up)),
    ]);
    let domains: Vec<&str> = r.route_configs[0]
        .virtual_hosts
        .iter()
        .map(|v| v.domains[0].as_str())
        .collect();
    assert_eq!(
        domains,
        ["*.example.com", "foo.example.com", "other.test", "*"]
    );
    // Own routes first (in APISIX order), then the wildcard's, then the
    // host-less ones; "both" only once.
    assert_eq!(
        summary(vhost(&r, "foo.example.com")),
        vec![
            s("both", "path=/c", ""),
            s("exact", "prefix=/a/", ""),
            s("wider", "prefix=/a/b/", ""),
            s("wild", "prefix=/a/", ""),
            s("plain", "prefix=/", ""),
        ]
    );
    assert_eq!(
        summary(vhost(&r, "*.example.com")),
        vec![
            s("both", "path=/c", ""),
            s("wider", "prefix=/a/b/", ""),
            s("wild", "prefix=/a/", ""),
            s("plain", "prefix=/", ""),
        ]
    );
    assert_eq!(
        summary(vhost(&r, "other.test")),
        vec![s("wild", "prefix=/a/", ""), s("plain", "prefix=/", "")]
    );
    assert_eq!(summary(vhost(&r, "*")), vec![s("plain", "prefix=/", "")]);
}

#[test]
fn narrower_wildcards_come_before_wider_ones() {
    assert!(covers("*.example.com", "a.example.com"));
    assert!(covers("*.example.com", "a.b.example.com"));
    assert!(covers("*.example.com", "*.b.example.com"));
    assert!(!covers("*.example.com", "example.com"));
    assert!(!covers("*.example.com", "*.example.com"));
    assert!(!covers("a.example.com", "a.example.com"));
    let up = json!({"127.0.0.1:8080": 1});
    let mut wide = route("/*", up.clone());
    wide["host"] = json!("*.example.com");
    let mut narrow = route("/*", up.clone());
    narrow["host"] = json!("*.b.example.com");
    let mut host = route("/x", up);
    host["host"] = json!("a.b.example.com");
    let r = run(&[("wide", wide), ("narrow", narrow), ("host", host)]);
    assert_eq!(
        summary(vhost(&r, "a.b.example.com")),
        vec![
            s("host", "path=/x", ""),
            s("narrow", "prefix=/", ""),
            s("wide", "prefix=/", ""),
        ]
    );
}

#[test]
fn ip_nodes_are_eds_with_weights_and_zero_weights_left_out() {
    let r = run(&[(
        "r1",
        route(
            "/*",
            json!({"127.0.0.1:8081": 1, "127.0.0.2:8082": 3, "127.0.0.3:8083": 0, "[::1]:8084": 2}),
        ),
    )]);
    let c = cluster(&r, "route|r1");
    assert_eq!(discovery_type(c), cluster::DiscoveryType::Eds);
    assert_eq!(c.lb_policy, cluster::LbPolicy::RoundRobin as i32);
    assert_eq!(c.connect_timeout, Some(seconds(5)));
    assert!(c.load_assignment.is_none());
    let eds = c.eds_cluster_config.as_ref().expect("eds config");
    assert_eq!(eds.service_name, "route|r1");
    assert_eq!(eds.eds_config, Some(ads()));
    assert_eq!(r.endpoints.len(), 1);
    assert_eq!(r.endpoints[0].cluster_name, "route|r1");
    assert_eq!(
        endpoints(&r.endpoints[0]),
        vec![
            ("127.0.0.1".into(), 8081, 1),
            ("127.0.0.2".into(), 8082, 3),
            ("::1".into(), 8084, 2),
        ]
    );
}

#[test]
fn host_name_nodes_are_strict_dns_with_inline_endpoints() {
    let r = run(&[(
        "r1",
        route(
            "/*",
            json!({"httpbin.org": 2, "127.0.0.1:8080": 1, "gone:80": 0}),
        ),
    )]);
    let c = cluster(&r, "route|r1");
    assert_eq!(discovery_type(c), cluster::DiscoveryType::StrictDns);
    assert_eq!(
        c.dns_lookup_family,
        cluster::DnsLookupFamily::V4Preferred as i32
    );
    assert!(c.eds_cluster_config.is_none());
    assert!(r.endpoints.is_empty());
    let cla = c.load_assignment.as_ref().expect("inline endpoints");
    assert_eq!(cla.cluster_name, "route|r1");
    assert_eq!(
        endpoints(cla),
        vec![("127.0.0.1".into(), 8080, 1), ("httpbin.org".into(), 80, 2)]
    );
}

#[test]
fn duplicate_nodes_merge_and_huge_weights_scale_down() {
    let r = run(&[
        (
            "dup",
            route("/a", json!({"127.0.0.1:80": 2, "127.0.0.1": 3})),
        ),
        (
            "huge",
            route(
                "/b",
                json!({"127.0.0.1:1": u32::MAX, "127.0.0.1:2": u32::MAX, "127.0.0.1:3": 1}),
            ),
        ),
        ("zero", route("/c", json!({"127.0.0.1:1": 0}))),
    ]);
    let cla = |n: &str| {
        r.endpoints
            .iter()
            .find(|e| e.cluster_name == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    assert_eq!(
        endpoints(cla("route|dup")),
        vec![("127.0.0.1".into(), 80, 5)]
    );
    let huge = endpoints(cla("route|huge"));
    let sum: u64 = huge.iter().map(|e| u64::from(e.2)).sum();
    assert!(sum <= u64::from(u32::MAX), "{huge:?}");
    assert_eq!(huge[0].2, huge[1].2);
    assert_eq!(huge[2].2, 1, "a small weight stays at least 1");
    // All nodes at weight 0: a cluster without endpoints (Envoy: 503).
    assert!(cla("route|zero").endpoints.is_empty());
    assert_eq!(
        discovery_type(cluster(&r, "route|zero")),
        cluster::DiscoveryType::Eds
    );
}

#[test]
fn oidc_routes_carry_the_config_text_and_its_version() {
    let p =
        plugin("http://127.0.0.1:8080/realms/quickstart-realm/.well-known/openid-configuration");
    let routes = [
        (
            "oidc",
            with_plugin(route("/anything/*", json!({"127.0.0.1:80": 1})), p.clone()),
        ),
        ("open", route("/open/*", json!({"127.0.0.1:80": 1}))),
    ];
    let r = run(&routes);
    let vh = vhost(&r, "*");
    let oidc = vh
        .routes
        .iter()
        .find(|r| id_of(r) == "oidc")
        .expect("oidc route");
    let (config, version) = metadata(oidc).expect("metadata");
    // The config text is the stored plugin object.
    assert_eq!(serde_json::from_str::<Value>(&config).unwrap(), p);
    assert_eq!(version.len(), 16);
    assert!(version.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(version, config_version(&config));
    // The version also ends the route's name, where the filter reads it.
    assert_eq!(oidc.name, oidc_core::metadata::route_name("oidc", &version));
    let open = vh
        .routes
        .iter()
        .find(|r| id_of(r) == "open")
        .expect("open route");
    assert_eq!(metadata(open), None);
    assert_eq!(open.name, "open|oidc=", "an empty version: no plugin");

    // Stable across translations; changes with the config.
    let again = run(&routes);
    let again = vhost(&again, "*")
        .routes
        .iter()
        .find(|r| id_of(r) == "oidc");
    assert_eq!(
        metadata(again.unwrap()),
        Some((config.clone(), version.clone()))
    );
    let mut p2 = p;
    p2["scope"] = json!("openid email");
    let r2 = run(&[(
        "oidc",
        with_plugin(route("/anything/*", json!({"127.0.0.1:80": 1})), p2.clone()),
    )]);
    let (config2, version2) = metadata(&r2.route_configs[0].virtual_hosts[0].routes[0]).unwrap();
    assert_ne!(config2, config);
    assert_ne!(version2, version);
    // SHA-256("abc") starts with ba7816bf8f01cfea.
    assert_eq!(config_version("abc"), "ba7816bf8f01cfea");

    // With hosts: they travel with the config, and the version covers
    // them (another host list is another version).
    let with_hosts = |hosts: Value| {
        let mut r = with_plugin(route("/anything/*", json!({"127.0.0.1:80": 1})), p2.clone());
        r["hosts"] = hosts;
        let t = run(&[("oidc", r)]);
        let md = t.route_configs[0].virtual_hosts[0].routes[0]
            .metadata
            .clone()
            .unwrap();
        let text = |k: &str| match &md.filter_metadata[OIDC_NAMESPACE].fields[k].kind {
            Some(value::Kind::StringValue(s)) => s.clone(),
            other => panic!("{k}: {other:?}"),
        };
        let version = match &md.filter_metadata[OIDC_VERSION_NAMESPACE].fields["version"].kind {
            Some(value::Kind::StringValue(s)) => s.clone(),
            other => panic!("{other:?}"),
        };
        (text("hosts"), version)
    };
    let (hosts, v1) = with_hosts(json!(["App.example", "*.apps.example"]));
    assert_eq!(hosts, r#"["app.example","*.apps.example"]"#);
    let (_, v2) = with_hosts(json!(["other.example"]));
    assert_ne!(v1, v2);
    assert_ne!(v1, version2);
}

fn tls_of(c: &Cluster) -> Option<UpstreamTlsContext> {
    let ts = c.transport_socket.as_ref()?;
    assert_eq!(ts.name, "envoy.transport_sockets.tls");
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        panic!("{ts:?}")
    };
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
    );
    Some(decode(any))
}

fn validation(t: &UpstreamTlsContext) -> Option<&CertificateValidationContext> {
    match &t.common_tls_context.as_ref()?.validation_context_type {
        Some(common_tls_context::ValidationContextType::ValidationContext(v)) => Some(v),
        None => None,
        other => panic!("{other:?}"),
    }
}

#[test]
fn provider_clusters_follow_the_naming_rule_deduplicated() {
    let up = json!({"127.0.0.1:80": 1});
    let mut with_introspection =
        plugin("https://IdP.example/realms/r/.well-known/openid-configuration");
    with_introspection["introspection_endpoint"] =
        json!("https://introspect.example:8443/token/introspect");
    let r = translate(
        &set(&[
            (
                "a",
                with_plugin(
                    route("/a/*", up.clone()),
                    plugin("http://127.0.0.1:8080/realms/q/.well-known/openid-configuration"),
                ),
            ),
            (
                "b",
                with_plugin(
                    route("/b/*", up.clone()),
                    plugin("http://127.0.0.1:8080/realms/other/.well-known/openid-configuration"),
                ),
            ),
            (
                "c",
                with_plugin(route("/c/*", up.clone()), with_introspection),
            ),
        ]),
        &settings(),
        &[
            "https://keys.example/certs".into(),
            "http://127.0.0.1:8080/realms/q/protocol/openid-connect/certs".into(),
            "ftp://nope.example/x".into(),
        ],
    );
    assert_eq!(
        names(&r),
        [
            "route|a",
            "route|b",
            "route|c",
            // Sorted by name ('s' < '|').
            "oidc|https|idp.example|443",
            "oidc|https|introspect.example|8443",
            "oidc|https|keys.example|443",
            "oidc|http|127.0.0.1|8080",
        ]
    );
    assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
    assert!(r.skipped[0].what.contains("ftp://nope.example/x"));

    // Every provider cluster has its circuit breakers.
    for c in r.clusters.iter().filter(|c| c.name.starts_with("oidc|")) {
        let t = &c
            .circuit_breakers
            .as_ref()
            .expect("circuit breakers")
            .thresholds;
        assert_eq!(t.len(), 1, "{}", c.name);
        assert_eq!(
            t[0].max_connections.map(|v| v.value),
            Some(PROVIDER_MAX_CONNECTIONS)
        );
        assert_eq!(
            t[0].max_pending_requests.map(|v| v.value),
            Some(PROVIDER_MAX_PENDING_REQUESTS)
        );
        assert_eq!(
            t[0].max_requests.map(|v| v.value),
            Some(PROVIDER_MAX_REQUESTS)
        );
    }

    // Plain http to an IP: STATIC, no TLS.
    let c = cluster(&r, "oidc|http|127.0.0.1|8080");
    assert_eq!(discovery_type(c), cluster::DiscoveryType::Static);
    assert!(c.transport_socket.is_none());
    assert_eq!(
        endpoints(c.load_assignment.as_ref().unwrap()),
        vec![("127.0.0.1".into(), 8080, 1)]
    );

    // https to a host name: STRICT_DNS, SNI, verified against the trust
    // store and the host name.
    let c = cluster(&r, "oidc|https|idp.example|443");
    assert_eq!(discovery_type(c), cluster::DiscoveryType::StrictDns);
    assert_eq!(
        endpoints(c.load_assignment.as_ref().unwrap()),
        vec![("idp.example".into(), 443, 1)]
    );
    let t = tls_of(c).expect("tls");
    assert_eq!(t.sni, "idp.example");
    let v = validation(&t).expect("verification");
    assert_eq!(
        v.trusted_ca.as_ref().and_then(|d| d.specifier.clone()),
        Some(data_source::Specifier::Filename(TRUST_STORE.into()))
    );
    assert_eq!(v.match_typed_subject_alt_names.len(), 1);
    let san = &v.match_typed_subject_alt_names[0];
    assert_eq!(san.san_type, subject_alt_name_matcher::SanType::Dns as i32);
    assert_eq!(
        san.matcher.as_ref().and_then(|m| m.match_pattern.clone()),
        Some(string_matcher::MatchPattern::Exact("idp.example".into()))
    );
    // A host only the discovery document names is verified too.
    assert!(validation(&tls_of(cluster(&r, "oidc|https|keys.example|443")).unwrap()).is_some());
}

#[test]
fn ssl_verify_false_skips_verification_unless_another_route_wants_it() {
    let up = json!({"127.0.0.1:80": 1});
    let disc = "https://idp.example/realms/r/.well-known/openid-configuration";
    let mut lax = plugin(disc);
    lax["ssl_verify"] = json!(false);
    let r = run(&[("a", with_plugin(route("/a/*", up.clone()), lax.clone()))]);
    let t = tls_of(cluster(&r, "oidc|https|idp.example|443")).expect("tls");
    assert_eq!(t.sni, "idp.example");
    assert!(validation(&t).is_none());
    // Extra URLs on that host keep the route's choice.
    let r = translate(
        &set(&[("a", with_plugin(route("/a/*", up.clone()), lax.clone()))]),
        &settings(),
        &["https://idp.example/certs".into()],
    );
    assert!(validation(&tls_of(cluster(&r, "oidc|https|idp.example|443")).unwrap()).is_none());

    let r = run(&[
        ("a", with_plugin(route("/a/*", up.clone()), lax)),
        ("b", with_plugin(route("/b/*", up), plugin(disc))),
    ]);
    let t = tls_of(cluster(&r, "oidc|https|idp.example|443")).expect("tls");
    assert!(validation(&t).is_some());
}

#[test]
fn https_to_an_ip_verifies_the_ip_and_sends_no_sni() {
    let r = run(&[(
        "a",
        with_plugin(
            route("/a/*", json!({"127.0.0.1:80": 1})),
            plugin("https://10.0.0.5:8443/.well-known/openid-configuration"),
        ),
    )]);
    let c = cluster(&r, "oidc|https|10.0.0.5|8443");
    assert_eq!(discovery_type(c), cluster::DiscoveryType::Static);
    let t = tls_of(c).unwrap();
    assert_eq!(t.sni, "");
    let san = &validation(&t).unwrap().match_typed_subject_alt_names[0];
    assert_eq!(
        san.san_type,
        subject_alt_name_matcher::SanType::IpAddress as i32
    );
}

#[test]
fn provider_urls_are_discovery_and_introspection() {
    let mut p = plugin("http://idp/.well-known/openid-configuration");
    let c = PluginConfig::parse(&p).unwrap();
    assert_eq!(
        provider_urls(&c),
        ["http://idp/.well-known/openid-configuration"]
    );
    p["introspection_endpoint"] = json!("http://other/introspect");
    let c = PluginConfig::parse(&p).unwrap();
    assert_eq!(
        provider_urls(&c),
        [
            "http://idp/.well-known/openid-configuration",
            "http://other/introspect"
        ]
    );
}

#[test]
fn disabled_routes_are_left_out_with_their_clusters() {
    let mut off = with_plugin(
        route("/off/*", json!({"127.0.0.1:80": 1})),
        plugin("http://10.9.9.9:8080/.well-known/openid-configuration"),
    );
    off["status"] = json!(0);
    let r = run(&[
        ("off", off),
        ("on", route("/on/*", json!({"127.0.0.1:80": 1}))),
    ]);
    assert_eq!(summary(vhost(&r, "*")), vec![s("on", "prefix=/on/", "")]);
    assert_eq!(names(&r), ["route|on"]);
    assert_eq!(r.endpoints.len(), 1);
}

#[test]
fn invalid_routes_are_skipped_and_named() {
    let r = translate(
        &set(&[
            ("bad", json!({"uri": "no-slash"})),
            ("good", route("/g", json!({"127.0.0.1:80": 1}))),
        ]),
        &settings(),
        &[],
    );
    assert_eq!(names(&r), ["route|good"]);
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].what, "route bad");
    assert!(
        r.skipped[0].reason.contains("uri"),
        "{}",
        r.skipped[0].reason
    );
}

#[test]
fn the_listener_does_not_depend_on_the_routes() {
    let empty = translate(&Stored::default(), &settings(), &[]);
    let some = run(&[
        (
            "a",
            with_plugin(
                route("/a/*", json!({"127.0.0.1:80": 1})),
                plugin("https://idp.example/.well-known/openid-configuration"),
            ),
        ),
        ("b", route("/b", json!({"example.com:80": 1}))),
    ]);
    assert_eq!(empty.listeners, some.listeners);
    assert_eq!(
        empty.listeners[0].encode_to_vec(),
        some.listeners[0].encode_to_vec()
    );
    // No routes: an empty "*" virtual host, no clusters.
    assert_eq!(empty.route_configs[0].virtual_hosts.len(), 1);
    assert!(empty.route_configs[0].virtual_hosts[0].routes.is_empty());
    assert!(empty.clusters.is_empty());
}

#[test]
fn the_listener_runs_the_wasm_filter_then_the_router_with_rds_over_ads() {
    let r = translate(&Stored::default(), &settings(), &[]);
    assert_eq!(r.listeners.len(), 1);
    let l = &r.listeners[0];
    assert_eq!(l.name, LISTENER_NAME);
    assert_eq!(l.address, Some(socket("127.0.0.1", 9080)));
    assert_eq!(
        l.per_connection_buffer_limit_bytes.map(|v| v.value),
        Some(32 * 1024)
    );
    // First the connection limit (shared by the workers).
    {
        use envoy_types::pb::envoy::extensions::filters::network::connection_limit::v3::ConnectionLimit;
        let f = &l.filter_chains[0].filters[0];
        assert_eq!(f.name, "envoy.filters.network.connection_limit");
        let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            panic!("{f:?}")
        };
        let c: ConnectionLimit = decode(any);
        assert_eq!(c.max_connections.map(|v| v.value), Some(50_000));
        assert_eq!(c.delay, None);
    }
    // Then the client address for `remote_addrs` (route-independent):
    // the TCP peer's IP as Envoy's IP object, which address matchers read.
    let sfs = &l.filter_chains[0].filters[1];
    assert_eq!(sfs.name, "envoy.filters.network.set_filter_state");
    {
        use envoy_types::pb::envoy::config::core::v3::substitution_format_string::Format;
        use envoy_types::pb::envoy::extensions::filters::common::set_filter_state::v3::filter_state_value;
        use envoy_types::pb::envoy::extensions::filters::network::set_filter_state::v3::Config;
        let Some(filter::ConfigType::TypedConfig(any)) = &sfs.config_type else {
            panic!("{sfs:?}")
        };
        let c: Config = decode(any);
        let v = &c.on_new_connection[0];
        assert_eq!(
            v.key,
            Some(filter_state_value::Key::ObjectKey(
                crate::apisix::vars::REMOTE_ADDR_KEY.into()
            ))
        );
        assert_eq!(v.factory_key, "envoy.network.ip");
        let Some(filter_state_value::Value::FormatString(f)) = &v.value else {
            panic!("{v:?}")
        };
        let Some(Format::TextFormatSource(src)) = &f.format else {
            panic!("{f:?}")
        };
        assert_eq!(
            src.specifier,
            Some(data_source::Specifier::InlineString(
                "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%".into()
            ))
        );
    }
    let f = &l.filter_chains[0].filters[2];
    assert_eq!(f.name, "envoy.filters.network.http_connection_manager");
    let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
        panic!("{f:?}")
    };
    let hcm: HttpConnectionManager = decode(any);
    assert_eq!(hcm.stat_prefix, STAT_PREFIX);
    assert_eq!(
        hcm.http2_protocol_options
            .as_ref()
            .and_then(|o| o.max_concurrent_streams)
            .map(|v| v.value),
        Some(128)
    );
    // nginx's client_header_timeout and keepalive_timeout (60 s).
    assert_eq!(hcm.request_headers_timeout, Some(seconds(60)));
    assert_eq!(
        hcm.common_http_protocol_options
            .as_ref()
            .and_then(|o| o.idle_timeout),
        Some(seconds(60))
    );
    // The plugins' filters run only on routes that enable them; the
    // openid-connect filter (which also strips forged identity headers)
    // and the router run everywhere.
    let off: Vec<(&str, bool)> = hcm
        .http_filters
        .iter()
        .map(|f| (f.name.as_str(), f.disabled))
        .collect();
    assert_eq!(
        off,
        [
            ("envoy.filters.http.cors", true),
            ("envoy.filters.http.rbac", true),
            ("envoy.filters.http.wasm", false),
            ("apisix.limit-count", true),
            ("apisix.limit-req", true),
            ("envoy.filters.http.router", false),
        ]
    );
    assert_eq!(hcm.normalize_path, Some(BoolValue { value: true }));
    assert!(hcm.merge_slashes);
    // Matching as nginx does: `%2F` / `%5C` decoded (by a redirect),
    // no trailing dot in the host, underscore headers dropped.
    assert_eq!(
        hcm.path_with_escaped_slashes_action,
        http_connection_manager::PathWithEscapedSlashesAction::UnescapeAndRedirect as i32
    );
    assert!(hcm.strip_trailing_host_dot);
    assert_eq!(
        hcm.common_http_protocol_options
            .as_ref()
            .map(|o| o.headers_with_underscores_action),
        Some(
            envoy_types::pb::envoy::config::core::v3::http_protocol_options::HeadersWithUnderscoresAction::DropHeader
                as i32
        )
    );
    // The edge: clients' X-Forwarded-Proto is not believed.
    assert_eq!(hcm.use_remote_address, Some(BoolValue { value: true }));
    assert_eq!(hcm.xff_num_trusted_hops, 0);
    let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
        panic!("{hcm:?}")
    };
    assert_eq!(rds.route_config_name, ROUTE_CONFIG);
    assert_eq!(rds.config_source, Some(ads()));
    let filters: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        filters,
        [
            "envoy.filters.http.cors",
            "envoy.filters.http.rbac",
            "envoy.filters.http.wasm",
            "apisix.limit-count",
            "apisix.limit-req",
            "envoy.filters.http.router"
        ]
    );
    let Some(http_filter::ConfigType::TypedConfig(any)) = &hcm.http_filters[2].config_type else {
        panic!()
    };
    let wasm: Wasm = decode(any);
    let plugin = wasm.config.expect("plugin config");
    let settings: StringValue = decode(plugin.configuration.as_ref().unwrap());
    assert_eq!(settings.value, r#"{"token_cache_size":16}"#);
    let Some(plugin_config::Vm::VmConfig(vm)) = plugin.vm else {
        panic!()
    };
    assert_eq!(vm.vm_id, VM_ID);
    assert_eq!(vm.runtime, WASM_RUNTIME);
    let code = vm.code.and_then(|c| c.specifier);
    let Some(async_data_source::Specifier::Local(DataSource {
        specifier: Some(data_source::Specifier::Filename(f)),
        ..
    })) = code
    else {
        panic!("{code:?}")
    };
    assert_eq!(f, "/opt/oidc_filter.wasm");
}

fn action(r: &Resources, id: &str) -> RouteAction {
    let rt = r.route_configs[0]
        .virtual_hosts
        .iter()
        .flat_map(|v| &v.routes)
        .find(|rt| id_of(rt) == id)
        .unwrap_or_else(|| panic!("no route {id}"));
    match &rt.action {
        Some(route::Action::Route(a)) => a.clone(),
        other => panic!("{other:?}"),
    }
}

fn with_upstream(upstream: Value) -> Value {
    json!({"uri": "/*", "upstream": upstream})
}

#[test]
fn balancer_types_map_to_lb_policies() {
    let r = run(&[
        (
            "rr",
            with_upstream(json!({"type": "roundrobin", "nodes": {"127.0.0.1:1": 1}})),
        ),
        (
            "lc",
            with_upstream(json!({"type": "least_conn", "nodes": {"127.0.0.1:1": 1}})),
        ),
        (
            "ewma",
            with_upstream(json!({"type": "ewma", "nodes": {"127.0.0.1:1": 1}})),
        ),
        (
            "ch",
            with_upstream(
                json!({"type": "chash", "hash_on": "header", "key": "X-User",
                "nodes": {"127.0.0.1:1": 1}}),
            ),
        ),
    ]);
    for (id, policy) in [
        ("rr", cluster::LbPolicy::RoundRobin),
        ("lc", cluster::LbPolicy::LeastRequest),
        ("ewma", cluster::LbPolicy::LeastRequest),
        ("ch", cluster::LbPolicy::RingHash),
    ] {
        assert_eq!(
            cluster(&r, &format!("route|{id}")).lb_policy,
            policy as i32,
            "{id}"
        );
    }
    assert!(action(&r, "rr").hash_policy.is_empty());
    use route_action::hash_policy::{ConnectionProperties, Header, PolicySpecifier};
    assert_eq!(
        action(&r, "ch").hash_policy,
        vec![
            route_action::HashPolicy {
                terminal: true,
                policy_specifier: Some(PolicySpecifier::Header(Header {
                    header_name: "x-user".into(),
                    regex_rewrite: None,
                })),
            },
            // APISIX hashes the client address when the key is missing.
            route_action::HashPolicy {
                terminal: false,
                policy_specifier: Some(PolicySpecifier::ConnectionProperties(
                    ConnectionProperties { source_ip: true }
                )),
            },
        ]
    );
}

#[test]
fn chash_vars_become_hash_policies() {
    use route_action::hash_policy::{Cookie, Header, PolicySpecifier, QueryParameter};
    let policy = |hash_on: &str, key: &str| {
        let r = run(&[(
            "c",
            with_upstream(json!({"type": "chash", "hash_on": hash_on, "key": key,
                "nodes": {"127.0.0.1:1": 1}})),
        )]);
        let hp = action(&r, "c").hash_policy;
        (hp.len(), hp[0].policy_specifier.clone().unwrap())
    };
    let (n, p) = policy("vars", "remote_addr");
    assert_eq!(n, 1);
    assert!(matches!(p, PolicySpecifier::ConnectionProperties(c) if c.source_ip));
    let (n, p) = policy("vars", "uri");
    assert_eq!(n, 2);
    let PolicySpecifier::Header(Header {
        header_name,
        regex_rewrite: Some(rw),
    }) = p
    else {
        panic!("{p:?}")
    };
    assert_eq!(header_name, ":path");
    assert_eq!(rw.pattern.unwrap().regex, r"\?.*$");
    assert_eq!(rw.substitution, "");
    assert_eq!(
        policy("vars", "request_uri").1,
        PolicySpecifier::Header(Header {
            header_name: ":path".into(),
            regex_rewrite: None
        })
    );
    let (_, p) = policy("vars", "host");
    assert!(matches!(p, PolicySpecifier::Header(h) if h.header_name == ":authority"));
    assert_eq!(
        policy("vars", "arg_user").1,
        PolicySpecifier::QueryParameter(QueryParameter {
            name: "user".into()
        })
    );
    assert_eq!(
        policy("cookie", "sid").1,
        PolicySpecifier::Cookie(Cookie {
            name: "sid".into(),
            ..Default::default()
        })
    );
}

#[test]
fn node_priorities_become_envoy_priorities_highest_first() {
    let r = run(&[(
        "p",
        with_upstream(json!({"nodes": [
            {"host": "127.0.0.1", "port": 1, "weight": 1, "priority": -5},
            {"host": "127.0.0.2", "port": 2, "weight": 3, "priority": 10},
            {"host": "127.0.0.3", "port": 3, "weight": 0, "priority": 10},
            {"host": "127.0.0.4", "port": 4, "weight": 0, "priority": 7},
            {"host": "127.0.0.5", "port": 5, "weight": 2},
        ]})),
    )]);
    let cla = &r.endpoints[0];
    type Group = (u32, Vec<(String, u32, u32)>);
    let groups: Vec<Group> = cla
        .endpoints
        .iter()
        .map(|l| {
            let one = ClusterLoadAssignment {
                endpoints: vec![l.clone()],
                ..Default::default()
            };
            (l.priority, endpoints(&one))
        })
        .collect();
    // 10 → 0, (7: only weight 0, left out), 0 → 1, -5 → 2.
    assert_eq!(
        groups,
        vec![
            (0, vec![("127.0.0.2".into(), 2, 3)]),
            (1, vec![("127.0.0.5".into(), 5, 2)]),
            (2, vec![("127.0.0.1".into(), 1, 1)]),
        ]
    );
}

#[test]
fn https_upstreams_get_tls_with_sni_from_the_upstream_host() {
    let r = run(&[
        (
            "lax",
            with_upstream(json!({"scheme": "https", "nodes": {"127.0.0.1:8443": 1}})),
        ),
        (
            "strict",
            with_upstream(json!({"scheme": "https", "tls": {"verify": true},
                "nodes": {"api.example": 1}})),
        ),
        (
            "plain",
            with_upstream(json!({"nodes": {"127.0.0.1:80": 1}})),
        ),
    ]);
    assert!(cluster(&r, "route|plain").transport_socket.is_none());
    assert!(cluster(&r, "route|plain")
        .typed_extension_protocol_options
        .is_empty());
    for (id, verify) in [("lax", false), ("strict", true)] {
        let c = cluster(&r, &format!("route|{id}"));
        let t = tls_of(c).expect("tls");
        assert_eq!(t.sni, "", "SNI is per request");
        let opts: HttpProtocolOptions =
            decode(&c.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS]);
        let up = opts.upstream_http_protocol_options.unwrap();
        assert!(up.auto_sni);
        assert_eq!(up.auto_san_validation, verify);
        match validation(&t) {
            None => assert!(!verify),
            Some(v) => {
                assert!(verify);
                assert_eq!(
                    v.trusted_ca.as_ref().and_then(|d| d.specifier.clone()),
                    Some(data_source::Specifier::Filename(TRUST_STORE.into()))
                );
            }
        }
    }
    // A node without a port gets 443.
    let c = cluster(&r, "route|strict");
    assert_eq!(
        endpoints(c.load_assignment.as_ref().unwrap()),
        vec![("api.example".into(), 443, 1)]
    );
}

fn hostnames(cla: &ClusterLoadAssignment) -> Vec<String> {
    cla.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .map(|e| match &e.host_identifier {
            Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => ep.hostname.clone(),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn pass_host_node_and_rewrite() {
    let r = run(&[
        (
            "pass",
            with_upstream(json!({"nodes": {"127.0.0.1:8080": 1}})),
        ),
        (
            "node",
            with_upstream(json!({"pass_host": "node",
                "nodes": {"127.0.0.1:8080": 1, "a.example": 1}})),
        ),
        (
            "node_tls",
            with_upstream(json!({"pass_host": "node", "scheme": "https",
                "nodes": {"b.example": 1, "c.example:8443": 1}})),
        ),
        (
            "rewrite",
            with_upstream(
                json!({"pass_host": "rewrite", "upstream_host": "internal.example",
                "nodes": {"127.0.0.1:8080": 1}}),
            ),
        ),
    ]);
    assert_eq!(action(&r, "pass").host_rewrite_specifier, None);
    assert_eq!(
        action(&r, "node").host_rewrite_specifier,
        Some(route_action::HostRewriteSpecifier::AutoHostRewrite(
            BoolValue { value: true }
        ))
    );
    assert_eq!(
        action(&r, "rewrite").host_rewrite_specifier,
        Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(
            "internal.example".into()
        ))
    );
    // The Host APISIX sends for a node: the port unless the scheme's.
    let inline = |id: &str| {
        cluster(&r, &format!("route|{id}"))
            .load_assignment
            .clone()
            .unwrap()
    };
    assert_eq!(hostnames(&inline("node")), ["127.0.0.1:8080", "a.example"]);
    assert_eq!(
        hostnames(&inline("node_tls")),
        ["b.example", "c.example:8443"]
    );
    assert_eq!(hostnames(&r.endpoints[0]), [""], "pass: no hostname");
}

#[test]
fn timeouts_with_the_route_overriding_the_upstream() {
    let up = json!({"timeout": {"connect": 0.25, "send": 2, "read": 4.5},
        "nodes": {"127.0.0.1:1": 1}});
    let mut route_level = with_upstream(up.clone());
    route_level["uri"] = json!("/r");
    route_level["timeout"] = json!({"connect": 1, "send": 9, "read": 3});
    let r = run(&[("u", with_upstream(up)), ("r", route_level)]);
    let d = |s: i64, n: i32| {
        Some(Duration {
            seconds: s,
            nanos: n,
        })
    };
    assert_eq!(cluster(&r, "route|u").connect_timeout, d(0, 250_000_000));
    assert_eq!(action(&r, "u").timeout, d(4, 500_000_000));
    assert_eq!(action(&r, "u").idle_timeout, d(4, 500_000_000));
    assert_eq!(cluster(&r, "route|r").connect_timeout, d(1, 0));
    assert_eq!(action(&r, "r").timeout, d(3, 0));
    // The larger of send and read.
    assert_eq!(action(&r, "r").idle_timeout, d(9, 0));
    // No timeout: the defaults.
    let r = run(&[("x", with_upstream(json!({"nodes": {"127.0.0.1:1": 1}})))]);
    assert_eq!(cluster(&r, "route|x").connect_timeout, d(5, 0));
    assert_eq!(action(&r, "x").timeout, d(60, 0));
    assert_eq!(action(&r, "x").idle_timeout, None);
}

#[test]
fn retries_and_retry_timeout() {
    let r = run(&[
        (
            "none",
            with_upstream(json!({"nodes": {"127.0.0.1:1": 1, "127.0.0.1:2": 1}})),
        ),
        (
            "zero",
            with_upstream(json!({"retries": 0, "nodes": {"127.0.0.1:1": 1}})),
        ),
        (
            "two",
            with_upstream(json!({"retries": 2, "retry_timeout": 1.5,
                "nodes": {"127.0.0.1:1": 1, "127.0.0.1:2": 1}})),
        ),
        (
            "prio",
            with_upstream(json!({"retries": 3, "nodes": [
                {"host": "127.0.0.1", "port": 1, "weight": 1, "priority": 1},
                {"host": "127.0.0.1", "port": 2, "weight": 1, "priority": 1},
                {"host": "127.0.0.1", "port": 3, "weight": 1}]})),
        ),
    ]);
    assert_eq!(action(&r, "none").retry_policy, None);
    assert_eq!(action(&r, "zero").retry_policy, None);
    let p = action(&r, "two").retry_policy.unwrap();
    assert_eq!(p.retry_on, RETRY_ON);
    assert_eq!(p.num_retries, Some(UInt32Value { value: 2 }));
    assert_eq!(
        p.per_try_timeout,
        Some(Duration {
            seconds: 1,
            nanos: 500_000_000
        })
    );
    assert_eq!(p.retry_host_predicate.len(), 1);
    assert_eq!(
        p.retry_host_predicate[0].name,
        "envoy.retry_host_predicates.previous_hosts"
    );
    assert!(p.retry_priority.is_none());
    let p = action(&r, "prio").retry_policy.unwrap();
    assert_eq!(p.per_try_timeout, None);
    let prio = p.retry_priority.unwrap();
    assert_eq!(prio.name, "envoy.retry_priorities.previous_priorities");
    let Some(route_retry_policy::retry_priority::ConfigType::TypedConfig(any)) = prio.config_type
    else {
        panic!()
    };
    let conf: PreviousPrioritiesConfig = decode(&any);
    assert_eq!(conf.update_frequency, 2, "both nodes of priority 1 first");
}

#[test]
fn active_checks_become_envoy_health_checks() {
    let r = run(&[
        (
            "h",
            with_upstream(json!({"nodes": {"127.0.0.1:1": 1}, "checks": {"active": {
                "timeout": 0.5, "host": "health.example", "port": 9000,
                "http_path": "/status", "req_headers": ["User-Agent: checker"],
                "healthy": {"interval": 3, "successes": 1, "http_statuses": [200, 204]},
                "unhealthy": {"interval": 2, "http_failures": 4}}}})),
        ),
        (
            "t",
            with_upstream(json!({"nodes": {"127.0.0.1:1": 1},
                "checks": {"active": {"type": "tcp"}}})),
        ),
    ]);
    let c = cluster(&r, "route|h");
    assert_eq!(c.health_checks.len(), 1);
    let hc = &c.health_checks[0];
    assert_eq!(
        hc.timeout,
        Some(Duration {
            seconds: 0,
            nanos: 500_000_000
        })
    );
    assert_eq!(hc.interval, Some(seconds(3)));
    assert_eq!(hc.no_traffic_interval, Some(seconds(3)));
    assert_eq!(hc.unhealthy_interval, Some(seconds(2)));
    assert_eq!(hc.healthy_threshold, Some(UInt32Value { value: 1 }));
    assert_eq!(hc.unhealthy_threshold, Some(UInt32Value { value: 4 }));
    let Some(health_check::HealthChecker::HttpHealthCheck(h)) = &hc.health_checker else {
        panic!("{hc:?}")
    };
    assert_eq!(h.host, "health.example");
    assert_eq!(h.path, "/status");
    let statuses: Vec<(i64, i64)> = h
        .expected_statuses
        .iter()
        .map(|r| (r.start, r.end))
        .collect();
    assert_eq!(statuses, [(200, 201), (204, 205)]);
    let hdr = h.request_headers_to_add[0].header.as_ref().unwrap();
    assert_eq!(
        (hdr.key.as_str(), hdr.value.as_str()),
        ("User-Agent", "checker")
    );
    // The check port goes on every endpoint.
    let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) =
        &r.endpoints[0].endpoints[0].lb_endpoints[0].host_identifier
    else {
        panic!()
    };
    assert_eq!(ep.health_check_config.as_ref().unwrap().port_value, 9000);

    // APISIX's defaults for a tcp check.
    let hc = &cluster(&r, "route|t").health_checks[0];
    assert!(matches!(
        hc.health_checker,
        Some(health_check::HealthChecker::TcpHealthCheck(_))
    ));
    assert_eq!(hc.interval, Some(seconds(1)));
    assert_eq!(hc.healthy_threshold, Some(UInt32Value { value: 2 }));
    assert_eq!(hc.unhealthy_threshold, Some(UInt32Value { value: 2 }));
    assert!(cluster(&r, "route|t").health_checks.len() == 1);
    assert!(cluster(&r, "route|h").health_checks.len() == 1);
}

#[test]
fn routes_with_upstream_id_use_the_named_upstream() {
    let mut stored = set(&[
        ("a", json!({"uri": "/a", "upstream_id": "shared"})),
        ("b", json!({"uri": "/b", "upstream_id": 7})),
        ("bad", json!({"uri": "/c", "upstream_id": "missing"})),
    ]);
    stored.upstreams.insert(
        "shared".into(),
        json!({"id": "shared", "type": "least_conn", "nodes": {"127.0.0.1:9": 2}}),
    );
    stored
        .upstreams
        .insert("7".into(), json!({"id": "7", "nodes": {"127.0.0.1:7": 1}}));
    let r = translate(&stored, &settings(), &[]);
    assert_eq!(names(&r), ["route|a", "route|b"]);
    assert_eq!(
        cluster(&r, "route|a").lb_policy,
        cluster::LbPolicy::LeastRequest as i32
    );
    let cla = |r: &Resources, n: &str| {
        r.endpoints
            .iter()
            .find(|e| e.cluster_name == n)
            .map(endpoints)
            .unwrap()
    };
    assert_eq!(cla(&r, "route|a"), [("127.0.0.1".into(), 9, 2)]);
    assert_eq!(cla(&r, "route|b"), [("127.0.0.1".into(), 7, 1)]);
    assert_eq!(r.skipped.len(), 1);
    assert!(
        r.skipped[0].reason.contains("upstream id [missing]"),
        "{:?}",
        r.skipped
    );

    // A change of the upstream reaches the routes that name it.
    stored.upstreams.insert(
        "shared".into(),
        json!({"id": "shared", "nodes": {"127.0.0.1:10": 1}}),
    );
    let r = translate(&stored, &settings(), &[]);
    assert_eq!(cla(&r, "route|a"), [("127.0.0.1".into(), 10, 1)]);
    assert_eq!(
        cluster(&r, "route|a").lb_policy,
        cluster::LbPolicy::RoundRobin as i32
    );
}

#[test]
fn vars_alternatives_are_adjacent_routes_with_the_route_matchers() {
    let mut a = route("/a/*", json!({"127.0.0.1:80": 1}));
    a["priority"] = json!(5);
    a["methods"] = json!(["GET"]);
    a["vars"] = json!([
        "OR",
        ["arg_v", "==", "1"],
        [
            "AND",
            ["http_x_k", "~~", "^k"],
            ["cookie_c", "!", "==", "z"]
        ]
    ]);
    a["remote_addrs"] = json!(["10.0.0.0/8", "::1"]);
    a["enable_websocket"] = json!(true);
    let b = route("/a/*", json!({"127.0.0.1:81": 1}));
    let r = run(&[("a", a), ("b", b)]);
    let routes = &vhost(&r, "*").routes;
    let names: Vec<&str> = routes.iter().map(id_of).collect();
    assert_eq!(names, ["a", "a", "b"]);
    let m0 = routes[0].r#match.as_ref().unwrap();
    let m1 = routes[1].r#match.as_ref().unwrap();
    // Each alternative keeps the methods and the addresses.
    for m in [m0, m1] {
        assert_eq!(m.headers[0].name, ":method");
        let Some(filter_state_matcher::Matcher::AddressMatch(am)) = &m.filter_state[0].matcher
        else {
            panic!("{m:?}")
        };
        assert_eq!(m.filter_state[0].key, crate::apisix::vars::REMOTE_ADDR_KEY);
        let ranges: Vec<(String, u32)> = am
            .ranges
            .iter()
            .map(|c| (c.address_prefix.clone(), c.prefix_len.unwrap().value))
            .collect();
        assert_eq!(
            ranges,
            [("10.0.0.0".to_string(), 8), ("::1".to_string(), 128)]
        );
        assert!(!am.invert_match);
    }
    assert_eq!(m0.query_parameters[0].name, "v");
    assert_eq!(m1.headers[1].name, "x-k");
    assert_eq!(
        m1.headers[1].header_match_specifier,
        Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
                    regex: ".*(?:^k).*".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }
        ))
    );
    assert_eq!(m1.cookies[0].name, "c");
    assert!(m1.cookies[0].invert_match);
    // WebSocket upgrades only where enable_websocket is set.
    let upgrade = |r: &Route| match &r.action {
        Some(route::Action::Route(a)) => a.upgrade_configs.clone(),
        _ => panic!(),
    };
    assert_eq!(upgrade(&routes[0])[0].upgrade_type, "websocket");
    assert_eq!(
        upgrade(&routes[0])[0].enabled,
        Some(BoolValue { value: true })
    );
    assert!(upgrade(&routes[2]).is_empty());
    assert!(routes[2].r#match.as_ref().unwrap().filter_state.is_empty());
}

/// A translated route's id: its name without the version
/// (`oidc_core::metadata::route_name`).
fn id_of(r: &Route) -> &str {
    routes::route_id(&r.name)
}

#[test]
fn limits_are_per_route_buckets_per_client_and_prometheus_a_stat_prefix() {
    use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
    use limits::{LIMIT_COUNT_FILTER, LIMIT_NAMESPACE, LIMIT_REQ_FILTER};
    let mut counted = route("/c/*", json!({"127.0.0.1:8090": 1}));
    counted["name"] = json!("my api.v1");
    counted["plugins"] = json!({
        "limit-count": {"count": 3, "time_window": 60, "rejected_code": 429,
                        "rejected_msg": "slow"},
        "limit-req": {"rate": 2.5, "burst": 1, "key": "remote_addr"},
        "prometheus": {"prefer_name": true},
    });
    let mut constant = route("/k/*", json!({"127.0.0.1:8090": 1}));
    constant["plugins"] = json!({
        "limit-count": {"count": 1, "time_window": 1, "key_type": "constant", "key": "k",
                        "show_limit_quota_header": false},
        "prometheus": {},
    });
    let mut redirected = route("/r/*", json!({"127.0.0.1:8090": 1}));
    redirected["plugins"] = json!({
        "limit-count": {"count": 1, "time_window": 1},
        "redirect": {"uri": "/elsewhere"},
    });
    let r = run(&[("c", counted), ("k", constant), ("r", redirected)]);
    let routes = &vhost(&r, "*").routes;
    let by = |id: &str| {
        routes
            .iter()
            .find(|x| routes::route_id(&x.name) == id)
            .unwrap()
    };
    let c = by("c");
    assert_eq!(c.stat_prefix, "my_api_v1");
    let lc: LocalRateLimit = decode(&c.typed_per_filter_config[LIMIT_COUNT_FILTER]);
    let b = lc.token_bucket.as_ref().unwrap();
    assert_eq!(b.max_tokens, 3);
    assert_eq!(b.tokens_per_fill.as_ref().unwrap().value, 3);
    assert_eq!(b.fill_interval.as_ref().unwrap().seconds, 60);
    assert_eq!(lc.status.as_ref().unwrap().code, 429);
    assert_eq!(lc.enable_x_ratelimit_headers, 1);
    // One bucket per client address, from the filter state the listener
    // sets (the peer, not X-Forwarded-For).
    assert_eq!(lc.descriptors.len(), 1);
    assert_eq!(lc.descriptors[0].entries[0].value, "");
    assert_eq!(lc.max_dynamic_descriptors.as_ref().unwrap().value, 10_000);
    assert_eq!(
        lc.always_consume_default_token_bucket,
        Some(BoolValue { value: false })
    );
    {
        use envoy_types::pb::envoy::config::route::v3::rate_limit::action::ActionSpecifier;
        use envoy_types::pb::envoy::extensions::rate_limit_descriptors::expr::v3::{
            descriptor::ExprSpecifier, Descriptor,
        };
        let Some(ActionSpecifier::Extension(ext)) = &lc.rate_limits[0].actions[0].action_specifier
        else {
            panic!("{:?}", lc.rate_limits)
        };
        let d: Descriptor = decode(ext.typed_config.as_ref().unwrap());
        assert_eq!(
            d.expr_specifier,
            Some(ExprSpecifier::Text(
                "filter_state['apisix.remote_addr']".into()
            ))
        );
    }
    let lr: LocalRateLimit = decode(&c.typed_per_filter_config[LIMIT_REQ_FILTER]);
    let b = lr.token_bucket.as_ref().unwrap();
    assert_eq!(b.max_tokens, 2);
    assert_eq!(b.tokens_per_fill.as_ref().unwrap().value, 2500);
    assert_eq!(b.fill_interval.as_ref().unwrap().seconds, 1000);
    assert_eq!(lr.status.as_ref().unwrap().code, 503);
    let meta = &c.metadata.as_ref().unwrap().filter_metadata[LIMIT_NAMESPACE];
    assert_eq!(
        meta.fields["count_msg"].kind,
        Some(value::Kind::StringValue("slow".into()))
    );
    assert!(!meta.fields.contains_key("req_msg"));

    let k = by("k");
    assert_eq!(k.stat_prefix, "k");
    let lk: LocalRateLimit = decode(&k.typed_per_filter_config[LIMIT_COUNT_FILTER]);
    assert!(lk.descriptors.is_empty() && lk.rate_limits.is_empty());
    assert_eq!(lk.enable_x_ratelimit_headers, 0);
    assert!(!k.typed_per_filter_config.contains_key(LIMIT_REQ_FILTER));

    // APISIX's redirect answers before any limit counts.
    assert!(by("r").typed_per_filter_config.is_empty());
    assert_eq!(by("r").stat_prefix, "");

    // http_to_https: the redirect routes in front keep ip-restriction's
    // policy but not the limits; the route itself has them.
    let mut h = route("/h/*", json!({"127.0.0.1:8090": 1}));
    h["plugins"] = json!({
        "redirect": {"http_to_https": true},
        "ip-restriction": {"whitelist": ["10.0.0.0/8"]},
        "limit-count": {"count": 1, "time_window": 1},
    });
    let r = run(&[("h", h)]);
    let routes = &vhost(&r, "*").routes;
    assert_eq!(routes.len(), 3);
    for (i, x) in routes.iter().enumerate() {
        let keys: BTreeSet<&str> = x
            .typed_per_filter_config
            .keys()
            .map(String::as_str)
            .collect();
        let redirect = matches!(x.action, Some(route::Action::Redirect(_)));
        assert_eq!(redirect, i < 2, "{i}");
        let want: BTreeSet<&str> = if redirect {
            [plugins::RBAC_FILTER].into()
        } else {
            [plugins::RBAC_FILTER, LIMIT_COUNT_FILTER].into()
        };
        assert_eq!(keys, want, "{i}");
    }
}

/// A route with `backchannel_logout_path` gets a route for exactly that
/// path, before its own, whose router request goes to the sink; a more
/// specific route keeps the path; without a sink, nothing changes.
#[test]
fn backchannel_logout_path_goes_to_the_sink() {
    let mut p = plugin("http://127.0.0.1:8080/realms/q/.well-known/openid-configuration");
    p["bearer_only"] = json!(false);
    p["session"] = json!({"secret": "0123456789abcdef0123"});
    p["redirect_uri"] = json!("http://localhost/app/cb");
    p["backchannel_logout_path"] = json!("/app/bcl");
    let routes = [
        (
            "app",
            with_plugin(route("/app/*", json!({"127.0.0.1:80": 1})), p.clone()),
        ),
        ("other", route("/other", json!({"127.0.0.1:81": 1}))),
    ];
    let mut s = settings();
    s.backchannel_sink = Some("127.0.0.1:4567".parse().unwrap());
    let r = translate(&set(&routes), &s, &[]);
    let vh = vhost(&r, "*");
    // `/other` (exact) first, then the sink, then `/app/*`.
    let first = &vh.routes[1];
    assert_eq!(route_id(&first.name), "app");
    assert_eq!(
        first.r#match.as_ref().unwrap().path_specifier,
        Some(route_match::PathSpecifier::Path("/app/bcl".into()))
    );
    let Some(route::Action::Route(a)) = &first.action else {
        panic!("{first:?}")
    };
    assert_eq!(
        a.cluster_specifier,
        Some(route_action::ClusterSpecifier::Cluster(
            BACKCHANNEL_SINK_CLUSTER.into()
        ))
    );
    assert_eq!(
        first.metadata, vh.routes[2].metadata,
        "the filter sees the route"
    );
    assert_eq!(vh.routes.len(), 3);
    assert!(r
        .clusters
        .iter()
        .any(|c| c.name == BACKCHANNEL_SINK_CLUSTER));

    // An exact route for that path, of another route, keeps it.
    let exact = ("exact", route("/app/bcl", json!({"127.0.0.1:82": 1})));
    let r = translate(&set(&[routes[0].clone(), exact]), &s, &[]);
    let vh = vhost(&r, "*");
    assert_eq!(route_id(&vh.routes[0].name), "exact");
    assert_eq!(route_id(&vh.routes[1].name), "app");

    // No sink: as before.
    let r = translate(&set(&routes), &settings(), &[]);
    assert_eq!(vhost(&r, "*").routes.len(), 2);
    assert!(!r
        .clusters
        .iter()
        .any(|c| c.name == BACKCHANNEL_SINK_CLUSTER));
}
