use super::*;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use serde_json::{json, Value};

use crate::store::Stored;
use std::path::PathBuf;

/// The unix time passed to `on_request` (what a NACK is stamped with).
const T_NACK: u64 = 1_700_000_000;

const SECRET: &str = "bSaIN3MV1YynmtXvU8lKkfeY0iwpr9cH";

fn settings() -> ProxySettings {
    ProxySettings {
        listen_addr: "127.0.0.1".into(),
        proxy_port: 9080,
        https_port: 9443,
        wasm_path: PathBuf::from("/opt/oidc_filter.wasm"),
        filter_settings: "{}".into(),
        trusted_proxy_hops: 0,
        backchannel_sink: None,
        revocations: None,
        clients: Default::default(),
    }
}

fn oidc_route(uri: &str, nodes: Value) -> Value {
    json!({
        "uri": uri,
        "plugins": {"openid-connect": {
            "client_id": "c",
            "client_secret": SECRET,
            "discovery": "http://127.0.0.1:8080/realms/q/.well-known/openid-configuration",
            "bearer_only": true,
            "scope": "openid profile",
        }},
        "upstream": {"nodes": nodes},
    })
}

fn routes(list: &[(&str, Value)]) -> crate::store::Routes {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn snap(list: &[(&str, Value)]) -> Snapshot {
    let (s, skipped) = Snapshot::build(
        &RouteTable::build(Stored::with_routes(routes(list))),
        &settings(),
        &[],
    );
    assert!(skipped.is_empty(), "{skipped:?}");
    s
}

fn versions(s: &Snapshot) -> [String; 5] {
    Kind::ALL.map(|k| s.get(k).version.clone())
}

/// Which types differ between two snapshots.
fn changed(a: &Snapshot, b: &Snapshot) -> Vec<&'static str> {
    Kind::ALL
        .into_iter()
        .filter(|k| a.get(*k).version != b.get(*k).version)
        .map(Kind::name)
        .collect()
}

fn req(kind: Kind, version: &str, nonce: &str, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.into(),
        node: Some(Node {
            id: "envoy-1".into(),
            ..Default::default()
        }),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        type_url: kind.type_url().into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn nack(kind: Kind, version: &str, nonce: &str, names: &[&str], message: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        error_detail: Some(RpcStatus {
            code: 3,
            message: message.into(),
            details: Vec::new(),
        }),
        ..req(kind, version, nonce, names)
    }
}

/// (type name, version, resource names) of each response.
fn sent(responses: &[DiscoveryResponse]) -> Vec<(&'static str, String, Vec<String>)> {
    responses
        .iter()
        .map(|r| {
            let kind = Kind::from_type_url(&r.type_url).expect("known type");
            let names = r.resources.iter().map(|a| resource_name(kind, a)).collect();
            (kind.name(), r.version_info.clone(), names)
        })
        .collect()
}

fn resource_name(kind: Kind, a: &Any) -> String {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    assert_eq!(a.type_url, kind.type_url());
    let v = a.value.as_slice();
    match kind {
        Kind::Clusters => Cluster::decode(v).unwrap().name,
        Kind::Endpoints => ClusterLoadAssignment::decode(v).unwrap().cluster_name,
        Kind::Listeners => Listener::decode(v).unwrap().name,
        Kind::Secrets => {
            envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret::decode(v)
                .unwrap()
                .name
        }
        Kind::Routes => RouteConfiguration::decode(v).unwrap().name,
    }
}

fn v(s: &Snapshot, k: Kind) -> String {
    s.get(k).version.clone()
}

fn strs(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn versions_are_stable_and_change_per_type() {
    let base = [
        ("a", oidc_route("/a/*", json!({"127.0.0.1:8081": 1}))),
        ("b", oidc_route("/b/*", json!({"127.0.0.1:8082": 1}))),
    ];
    let s1 = snap(&base);
    // The metadata maps are HashMaps: many builds, one version.
    for _ in 0..20 {
        assert_eq!(versions(&snap(&base)), versions(&s1));
    }
    for k in Kind::ALL {
        assert_eq!(s1.get(k).version.len(), 16);
    }
    // So are the per-filter configs: a route with cors and ip-restriction
    // has two, in a HashMap.
    let mut both = oidc_route("/p/*", json!({"127.0.0.1:8085": 1}));
    both["plugins"]["cors"] = json!({"allow_origins": "https://app.example"});
    both["plugins"]["ip-restriction"] = json!({"whitelist": ["10.0.0.0/8"]});
    // ... and the limits, with their messages in a route-metadata struct
    // (a version that changed on every build would push the route table
    // again, and every push starts Envoy's rate-limit counts over).
    both["plugins"]["limit-count"] =
        json!({"count": 2, "time_window": 60, "rejected_code": 429, "rejected_msg": "a"});
    both["plugins"]["limit-req"] =
        json!({"rate": 1, "burst": 1, "key": "remote_addr", "rejected_msg": "b"});
    both["plugins"]["prometheus"] = json!({});
    let with_plugins = [base[0].clone(), ("p", both)];
    let p1 = versions(&snap(&with_plugins));
    for _ in 0..20 {
        assert_eq!(versions(&snap(&with_plugins)), p1);
    }

    // New weights of IP nodes: endpoints only.
    let s2 = snap(&[
        (
            "a",
            oidc_route("/a/*", json!({"127.0.0.1:8081": 1, "127.0.0.1:8083": 3})),
        ),
        base[1].clone(),
    ]);
    assert_eq!(changed(&s1, &s2), ["endpoints"]);

    // Another uri: routes only.
    let s3 = snap(&[
        ("a", oidc_route("/moved/*", json!({"127.0.0.1:8081": 1}))),
        base[1].clone(),
    ]);
    assert_eq!(changed(&s1, &s3), ["routes"]);

    // Another plugin config: routes only.
    let mut other = base[0].1.clone();
    other["plugins"]["openid-connect"]["scope"] = json!("openid");
    assert_eq!(
        changed(&s1, &snap(&[("a", other), base[1].clone()])),
        ["routes"]
    );

    // A new route: clusters, endpoints and routes; never the listener.
    let mut more = base.to_vec();
    more.push(("c", oidc_route("/c", json!({"127.0.0.1:8084": 1}))));
    assert_eq!(
        changed(&s1, &snap(&more)),
        ["clusters", "endpoints", "routes"]
    );
}

#[test]
fn a_stream_gets_each_type_it_asks_for_once_until_it_changes() {
    let s = snap(&[("a", oidc_route("/a/*", json!({"127.0.0.1:8081": 1})))]);
    let mut st = StreamState::new(1);
    let t0 = Instant::now();
    assert_eq!(
        st.on_request(&req(Kind::Clusters, "", "", &[]), &s, T_NACK)
            .1,
        Received::Initial
    );
    assert_eq!(st.node, "envoy-1");
    assert_eq!(
        st.on_request(&req(Kind::Listeners, "", "", &[]), &s, T_NACK)
            .1,
        Received::Initial
    );
    let out = st.due(&s, t0);
    assert_eq!(
        sent(&out),
        vec![
            (
                "clusters",
                v(&s, Kind::Clusters),
                strs(&["route|a", "oidc|http|127.0.0.1|8080"])
            ),
            ("listeners", v(&s, Kind::Listeners), strs(&["apisix_http"])),
        ]
    );
    let (cds_nonce, lds_nonce) = (out[0].nonce.clone(), out[1].nonce.clone());
    assert_ne!(cds_nonce, lds_nonce);

    // ACKs need no answer.
    let cds_v = v(&s, Kind::Clusters);
    assert_eq!(
        st.on_request(&req(Kind::Clusters, &cds_v, &cds_nonce, &[]), &s, T_NACK)
            .1,
        Received::Ack
    );
    assert!(st.due(&s, t0).is_empty());

    // EDS and RDS by name; only the names asked for are sent.
    st.on_request(
        &req(Kind::Endpoints, "", "", &["route|a", "route|unknown"]),
        &s,
        T_NACK,
    );
    st.on_request(&req(Kind::Routes, "", "", &["apisix"]), &s, T_NACK);
    assert_eq!(
        sent(&st.due(&s, t0)),
        vec![
            ("endpoints", v(&s, Kind::Endpoints), strs(&["route|a"])),
            ("routes", v(&s, Kind::Routes), strs(&["apisix"])),
        ]
    );
    assert!(st.due(&s, t0).is_empty());

    // Unknown types are not answered.
    let mut other = req(Kind::Clusters, "", "", &[]);
    other.type_url = "type.googleapis.com/envoy.service.runtime.v3.Runtime".into();
    assert_eq!(
        st.on_request(&other, &s, T_NACK),
        (None, Received::UnknownType)
    );
    assert!(st.due(&s, t0).is_empty());
}

/// A stream that has been sent every type of `s` and ACKed it; returns
/// the last nonce per type.
fn settled(s: &Snapshot, eds_names: &[&str]) -> (StreamState, BTreeMap<Kind, String>) {
    let mut st = StreamState::new(1);
    st.on_request(&req(Kind::Clusters, "", "", &[]), s, T_NACK);
    st.on_request(&req(Kind::Listeners, "", "", &[]), s, T_NACK);
    st.on_request(&req(Kind::Endpoints, "", "", eds_names), s, T_NACK);
    st.on_request(&req(Kind::Routes, "", "", &["apisix"]), s, T_NACK);
    let mut nonces = BTreeMap::new();
    for r in st.due(s, Instant::now()) {
        let kind = Kind::from_type_url(&r.type_url).unwrap();
        let names: Vec<&str> = if kind == Kind::Endpoints {
            eds_names.to_vec()
        } else if kind == Kind::Routes {
            vec!["apisix"]
        } else {
            vec![]
        };
        let ack = req(kind, &r.version_info, &r.nonce, &names);
        assert_eq!(st.on_request(&ack, s, T_NACK).1, Received::Ack);
        nonces.insert(kind, r.nonce);
    }
    assert_eq!(nonces.len(), 4);
    (st, nonces)
}

#[test]
fn changes_go_clusters_endpoints_then_routes_after_new_endpoints() {
    let s1 = snap(&[("a", oidc_route("/a/*", json!({"127.0.0.1:8081": 1})))]);
    let (mut st, _) = settled(&s1, &["route|a"]);
    let t0 = Instant::now();

    // A new route with a new EDS cluster, and new weights for "a".
    let s2 = snap(&[
        (
            "a",
            oidc_route("/a/*", json!({"127.0.0.1:8081": 1, "127.0.0.1:8082": 3})),
        ),
        ("b", oidc_route("/b/*", json!({"127.0.0.1:8083": 1}))),
    ]);
    let out = st.due(&s2, t0);
    assert_eq!(
        sent(&out),
        vec![
            (
                "clusters",
                v(&s2, Kind::Clusters),
                strs(&["route|a", "route|b", "oidc|http|127.0.0.1|8080"])
            ),
            ("endpoints", v(&s2, Kind::Endpoints), strs(&["route|a"])),
        ],
        "the routes wait for route|b's endpoints"
    );
    assert_eq!(st.deadline(), Some(t0 + ROUTES_WAIT));
    assert!(st.due(&s2, t0 + Duration::from_millis(10)).is_empty());

    // Envoy ACKs the clusters, then asks for the new cluster's endpoints.
    let cds = req(Kind::Clusters, &out[0].version_info, &out[0].nonce, &[]);
    assert_eq!(st.on_request(&cds, &s2, T_NACK).1, Received::Ack);
    let eds = req(
        Kind::Endpoints,
        &out[1].version_info,
        &out[1].nonce,
        &["route|a", "route|b"],
    );
    assert_eq!(st.on_request(&eds, &s2, T_NACK).1, Received::Ack);
    assert_eq!(
        sent(&st.due(&s2, t0 + Duration::from_millis(20))),
        vec![
            (
                "endpoints",
                v(&s2, Kind::Endpoints),
                strs(&["route|a", "route|b"])
            ),
            ("routes", v(&s2, Kind::Routes), strs(&["apisix"])),
        ]
    );
    assert_eq!(st.deadline(), None);
}

#[test]
fn a_changed_cluster_gets_its_unchanged_endpoints_again() {
    let up =
        |t: &str| json!({"uri": "/a/*", "upstream": {"type": t, "nodes": {"127.0.0.1:8081": 1}}});
    let s1 = snap(&[("a", up("roundrobin"))]);
    let (mut st, _) = settled(&s1, &["route|a"]);
    let s2 = snap(&[("a", up("least_conn"))]);
    assert_eq!(changed(&s1, &s2), ["clusters"]);
    // Envoy warms the updated EDS cluster until it has endpoints.
    assert_eq!(
        sent(&st.due(&s2, Instant::now())),
        vec![
            ("clusters", v(&s2, Kind::Clusters), strs(&["route|a"])),
            ("endpoints", v(&s1, Kind::Endpoints), strs(&["route|a"])),
        ]
    );
}

#[test]
fn routes_waiting_for_endpoints_go_anyway_after_the_deadline() {
    let s1 = snap(&[("a", oidc_route("/a/*", json!({"127.0.0.1:8081": 1})))]);
    let (mut st, _) = settled(&s1, &["route|a"]);
    let s2 = snap(&[
        ("a", oidc_route("/a/*", json!({"127.0.0.1:8081": 1}))),
        ("b", oidc_route("/b/*", json!({"127.0.0.1:8083": 1}))),
    ]);
    let t0 = Instant::now();
    assert_eq!(sent(&st.due(&s2, t0)).len(), 2);
    assert_eq!(
        sent(&st.due(&s2, t0 + ROUTES_WAIT)),
        vec![("routes", v(&s2, Kind::Routes), strs(&["apisix"]))]
    );
}

#[test]
fn a_changed_route_with_known_clusters_goes_at_once() {
    let s1 = snap(&[("a", oidc_route("/a/*", json!({"127.0.0.1:8081": 1})))]);
    let (mut st, _) = settled(&s1, &["route|a"]);
    let s2 = snap(&[("a", oidc_route("/moved/*", json!({"127.0.0.1:8081": 1})))]);
    assert_eq!(
        sent(&st.due(&s2, Instant::now())),
        vec![("routes", v(&s2, Kind::Routes), strs(&["apisix"]))]
    );
}

#[test]
fn a_nack_is_recorded_masked_and_not_answered_with_the_same_version() {
    let s1 = snap(&[("a", oidc_route("/a/*", json!({"127.0.0.1:8081": 1})))]);
    let (mut st, _) = settled(&s1, &["route|a"]);
    let s2 = snap(&[("a", oidc_route("/moved/*", json!({"127.0.0.1:8081": 1})))]);
    let out = st.due(&s2, Instant::now());
    assert_eq!(out.len(), 1);
    let msg = format!("route config: metadata {{\"client_secret\":\"{SECRET}\"}} is invalid");
    // Envoy NACKs with the version it still has.
    let (kind, received) = st.on_request(
        &nack(
            Kind::Routes,
            &v(&s1, Kind::Routes),
            &out[0].nonce,
            &["apisix"],
            &msg,
        ),
        &s2,
        T_NACK,
    );
    assert_eq!(kind, Some(Kind::Routes));
    let Received::Nack(n) = received else {
        panic!("{received:?}")
    };
    assert_eq!(n.version, v(&s2, Kind::Routes));
    assert_eq!(n.node, "envoy-1");
    assert_eq!(n.at, T_NACK, "the time passed in");
    assert!(!n.message.contains(SECRET), "{}", n.message);
    assert!(n.message.contains("[redacted]"), "{}", n.message);
    assert!(st.due(&s2, Instant::now()).is_empty(), "no NACK loop");

    let status = XdsStatus::new();
    status.stream_opened(1);
    log_received(
        &st,
        kind,
        &req(Kind::Routes, "", "", &[]),
        &Received::Nack(n.clone()),
        &status,
    );
    let report = status.report();
    assert_eq!(report.last_nack["routes"], n);
    assert!(!serde_json::to_string(&report).unwrap().contains(SECRET));

    // The next change is sent.
    let s3 = snap(&[("a", oidc_route("/again/*", json!({"127.0.0.1:8081": 1})))]);
    assert_eq!(st.due(&s3, Instant::now()).len(), 1);
}

#[test]
fn a_nack_is_masked_with_the_secrets_of_the_version_it_refuses() {
    let s1 = snap(&[("a", oidc_route("/a/*", json!({"127.0.0.1:8081": 1})))]);
    let (mut st, _) = settled(&s1, &["route|a"]);
    let mut r = oidc_route("/b/*", json!({"127.0.0.1:8081": 1}));
    r["plugins"]["openid-connect"]["client_secret"] = json!("an-older-secret-value");
    let s2 = snap(&[("a", r)]);
    let out = st.due(&s2, Instant::now());
    assert_eq!(out.len(), 1);
    // By the time the NACK arrives the route (and its secret) changed.
    let s3 = snap(&[("a", oidc_route("/c/*", json!({"127.0.0.1:8081": 1})))]);
    let msg = "invalid: an-older-secret-value / bSaIN3MV1YynmtXvU8lKkfeY0iwpr9cH";
    let nack = nack(Kind::Routes, "", &out[0].nonce, &["apisix"], msg);
    let Received::Nack(n) = st.on_request(&nack, &s3, T_NACK).1 else {
        panic!("not a NACK")
    };
    assert_eq!(n.message, "invalid: [redacted] / [redacted]");
}

#[test]
fn stale_nonces_are_ignored() {
    let s1 = snap(&[("a", oidc_route("/a/*", json!({"127.0.0.1:8081": 1})))]);
    let (mut st, nonces) = settled(&s1, &["route|a"]);
    let s2 = snap(&[("a", oidc_route("/a/*", json!({"127.0.0.1:8082": 1})))]);
    let out = st.due(&s2, Instant::now());
    assert_eq!(sent(&out)[0].0, "endpoints");
    // A late request answering the previous response: ignored, names
    // not taken.
    let old = req(
        Kind::Endpoints,
        &v(&s1, Kind::Endpoints),
        &nonces[&Kind::Endpoints],
        &["route|zzz"],
    );
    assert_eq!(st.on_request(&old, &s2, T_NACK).1, Received::Stale);
    assert_eq!(
        st.types[Kind::Endpoints.index()].names,
        Some(BTreeSet::from(["route|a".to_string()]))
    );
    assert!(st.due(&s2, Instant::now()).is_empty());
}

#[test]
fn nacks_are_masked_with_the_secrets_of_the_typed_configs() {
    // The route table's secrets: the plugin config's `Secret` fields.
    let s = snap(&[("a", oidc_route("/a", json!({"127.0.0.1:9": 1})))]);
    assert_eq!(*s.secrets, [SECRET.to_string()]);
    assert_eq!(clean("abcdef", 3), "abc...");
    assert_eq!(clean("a\nb\tc", 10), "a b c");
}

#[test]
fn a_type_answers_envoys_requests_so_changes_wait_and_routes_never_pass_their_clusters() {
    let plain = |uri: &str| json!({"uri": uri, "upstream": {"nodes": {"example.com:80": 1}}});
    let s1 = snap(&[("a", plain("/a"))]);
    let (mut st, _) = settled(&s1, &[]);
    let t0 = Instant::now();
    let s2 = snap(&[("a", plain("/a")), ("b", plain("/b"))]);
    let out = st.due(&s2, t0);
    assert_eq!(
        sent(&out),
        vec![
            (
                "clusters",
                v(&s2, Kind::Clusters),
                strs(&["route|a", "route|b"])
            ),
            // (no EDS clusters: the endpoints are empty, sent again after
            // a cluster change)
            ("endpoints", v(&s2, Kind::Endpoints), strs(&[])),
            ("routes", v(&s2, Kind::Routes), strs(&["apisix"])),
        ]
    );
    // Two more changes before Envoy answers: nothing goes (not even the
    // routes, whose new cluster has not been sent).
    let s3 = snap(&[("a", plain("/a")), ("b", plain("/b")), ("c", plain("/c"))]);
    assert!(st.due(&s3, t0).is_empty());
    let s4 = snap(&[
        ("a", plain("/a")),
        ("b", plain("/b")),
        ("c", plain("/c")),
        ("d", plain("/d")),
    ]);
    assert!(st.due(&s4, t0).is_empty());
    // Envoy ACKs the routes first: they still wait for their clusters.
    let rds = req(
        Kind::Routes,
        &out[2].version_info,
        &out[2].nonce,
        &["apisix"],
    );
    assert_eq!(st.on_request(&rds, &s4, T_NACK).1, Received::Ack);
    assert!(st.due(&s4, t0).is_empty());
    // The clusters' ACK: the latest clusters, then the latest routes, once.
    let cds = req(Kind::Clusters, &out[0].version_info, &out[0].nonce, &[]);
    assert_eq!(st.on_request(&cds, &s4, T_NACK).1, Received::Ack);
    assert_eq!(
        sent(&st.due(&s4, t0)),
        vec![
            (
                "clusters",
                v(&s4, Kind::Clusters),
                strs(&["route|a", "route|b", "route|c", "route|d"])
            ),
            ("routes", v(&s4, Kind::Routes), strs(&["apisix"])),
        ]
    );
    assert!(st.due(&s4, t0).is_empty());
}

#[test]
fn a_removed_cluster_goes_only_after_the_routes_without_it() {
    let plain = |uri: &str| json!({"uri": uri, "upstream": {"nodes": {"example.com:80": 1}}});
    let s1 = snap(&[("a", plain("/a")), ("b", plain("/b"))]);
    let (mut st, _) = settled(&s1, &[]);
    let t0 = Instant::now();
    // Route b deleted: its cluster is kept while Envoy's routes still
    // point at it.
    let s2 = snap(&[("a", plain("/a"))]);
    let out = st.due(&s2, t0);
    let names: Vec<_> = sent(&out);
    assert_eq!(names[0].0, "clusters");
    assert_eq!(names[0].2, strs(&["route|a", "route|b"]), "route|b kept");
    assert_ne!(names[0].1, v(&s2, Kind::Clusters));
    assert_eq!(
        names.last().unwrap().clone(),
        ("routes", v(&s2, Kind::Routes), strs(&["apisix"]))
    );
    // Once Envoy has the routes without b (and answers the clusters), the
    // clusters go without route|b.
    for r in &out {
        let kind = Kind::from_type_url(&r.type_url).unwrap();
        let names: &[&str] = if kind == Kind::Routes {
            &["apisix"]
        } else {
            &[]
        };
        st.on_request(&req(kind, &r.version_info, &r.nonce, names), &s2, T_NACK);
    }
    let out = st.due(&s2, t0);
    assert_eq!(
        sent(&out)[0],
        ("clusters", v(&s2, Kind::Clusters), strs(&["route|a"]))
    );
    assert!(!sent(&out).iter().any(|(k, _, _)| *k == "routes"));
}

#[test]
fn endpoints_due_again_after_a_cluster_update_still_take_the_answer_to_the_last_ones() {
    let up = |t: &str, port: u16| json!({"uri": "/a/*", "upstream": {"type": t, "nodes": {format!("127.0.0.1:{port}"): 1}}});
    let s1 = snap(&[("a", up("roundrobin", 8081))]);
    let (mut st, _) = settled(&s1, &["route|a"]);
    let t0 = Instant::now();
    // New endpoints: sent; Envoy has not answered yet when the cluster
    // changes too.
    let s2 = snap(&[("a", up("roundrobin", 8082))]);
    let eds = st.due(&s2, t0);
    assert_eq!(sent(&eds)[0].0, "endpoints");
    let s3 = snap(&[("a", up("least_conn", 8082))]);
    assert_eq!(sent(&st.due(&s3, t0))[0].0, "clusters");
    // The answer to the endpoints sent before counts, and the endpoints go
    // again (the updated cluster warms until it gets them).
    let ack = req(
        Kind::Endpoints,
        &eds[0].version_info,
        &eds[0].nonce,
        &["route|a"],
    );
    assert_eq!(st.on_request(&ack, &s3, T_NACK).1, Received::Ack);
    assert_eq!(
        sent(&st.due(&s3, t0)),
        vec![("endpoints", v(&s3, Kind::Endpoints), strs(&["route|a"]))]
    );
}

/// The snapshot keeps each route's upstream cluster and endpoints: a build
/// with the cache is the build without it, and a write translates only the
/// route it changed (the others' entries are the same objects); a changed
/// shared upstream translates every route naming it again.
#[test]
fn a_cached_build_is_a_fresh_build_and_translates_only_what_changed() {
    let mut stored = Stored::default();
    stored
        .upstreams
        .insert("u".into(), json!({"id": "u", "nodes": {"192.0.2.9:80": 1}}));
    for i in 0..50 {
        let mut r = json!({"uri": format!("/r/{i}")});
        if i % 2 == 0 {
            r["upstream_id"] = json!("u");
        } else {
            r["upstream"] = json!({"nodes": {format!("192.0.2.{}:80", i % 7 + 1): 1}});
        }
        stored.routes.insert(format!("r{i}"), r);
    }
    let mut cache = TranslationCache::default();
    let mut table = RouteTable::build(stored.clone());
    let step = |table: &RouteTable, cache: &mut TranslationCache| {
        let (cached, _) = Snapshot::build_cached(table, &settings(), &[], cache);
        assert_eq!(cached, Snapshot::build(table, &settings(), &[]).0);
        cache
            .routes
            .iter()
            .map(|(id, (_, up))| (id.clone(), up.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let first = step(&table, &mut cache);
    assert_eq!(first.len(), 50);

    stored.routes.insert(
        "r1".into(),
        json!({"uri": "/r/1", "upstream": {"nodes": {"192.0.2.200:80": 1}}}),
    );
    stored.routes.remove("r3");
    table = table.update(stored.clone());
    let second = step(&table, &mut cache);
    assert_eq!(second.len(), 49);
    let same: Vec<&String> = second
        .iter()
        .filter(|(id, up)| Arc::ptr_eq(up, &first[*id]))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(same.len(), 48, "all but r1");
    assert!(!Arc::ptr_eq(&second["r1"], &first["r1"]));

    stored.upstreams.insert(
        "u".into(),
        json!({"id": "u", "nodes": {"192.0.2.10:80": 1}}),
    );
    table = table.update(stored);
    let third = step(&table, &mut cache);
    assert!(third.iter().all(|(id, up)| !Arc::ptr_eq(up, &second[id])));
}

/// The route configuration assembled from each (uri, route) pair's kept
/// encoding is the one `translate` makes (hosts, wildcards, several uris,
/// methods, `openid-connect`, `http_to_https`, a back-channel sink), also
/// after changes; a change re-encodes only the pairs it touched.
#[test]
fn the_assembled_route_configuration_is_the_translated_one() {
    use crate::translate::{translate, BACKCHANNEL_SINK_CLUSTER};
    let mut bcl = oidc_route("/app/*", json!({"127.0.0.1:80": 1}));
    let p = &mut bcl["plugins"]["openid-connect"];
    p["bearer_only"] = json!(false);
    p["session"] = json!({"secret": "0123456789abcdef0123"});
    p["redirect_uri"] = json!("http://localhost/app/cb");
    p["backchannel_logout_path"] = json!("/app/bcl");
    let mut stored = Stored::default();
    let mut put = |id: &str, v: Value| {
        stored.routes.insert(id.into(), v);
        stored.clone()
    };
    put("bcl", bcl);
    put("secure", oidc_route("/s/*", json!({"127.0.0.1:8081": 1})));
    put(
        "hosted",
        json!({"uris": ["/h", "/h2/*"], "hosts": ["a.example", "*.example"], "methods": ["POST", "GET"],
               "upstream": {"nodes": {"127.0.0.1:8082": 1}}}),
    );
    put(
        "wild",
        json!({"uri": "/w", "host": "*.example", "upstream": {"nodes": {"127.0.0.1:8083": 1}}}),
    );
    let all = put(
        "tls",
        json!({"uri": "/t", "plugins": {"redirect": {"http_to_https": true}},
               "upstream": {"nodes": {"127.0.0.1:8084": 1}}}),
    );
    let mut s = settings();
    s.backchannel_sink = Some("127.0.0.1:4567".parse().unwrap());
    let decoded = |snap: &Snapshot| {
        let t = snap.get(Kind::Routes);
        assert_eq!(t.resources.len(), 1);
        RouteConfiguration::decode(t.resources[0].1.value.as_slice()).unwrap()
    };
    let mut cache = TranslationCache::default();
    let mut table = RouteTable::build(all.clone());
    let (first, _) = Snapshot::build_cached(&table, &s, &[], &mut cache);
    let want = translate(&table, &s, &[]);
    assert_eq!(decoded(&first), want.route_configs[0]);
    assert!(first
        .get(Kind::Clusters)
        .resources
        .iter()
        .any(|(n, _)| n == BACKCHANNEL_SINK_CLUSTER));
    let kept: BTreeMap<(String, usize), Arc<EncodedEntry>> = cache
        .entries
        .iter()
        .map(|(k, (_, e))| (k.clone(), e.clone()))
        .collect();
    assert_eq!(
        kept.len(),
        5,
        "each pair but the back-channel route's: {kept:?}"
    );

    // One route changes, one goes: the rest is taken as kept.
    let mut changed = all.clone();
    changed.routes.insert(
        "wild".into(),
        json!({"uri": "/w2", "host": "*.example", "upstream": {"nodes": {"127.0.0.1:8083": 1}}}),
    );
    changed.routes.remove("secure");
    table = table.update(changed);
    let (second, _) = Snapshot::build_cached(&table, &s, &[], &mut cache);
    assert_eq!(
        decoded(&second),
        translate(&table, &s, &[]).route_configs[0]
    );
    assert_ne!(v(&first, Kind::Routes), v(&second, Kind::Routes));
    let (fresh, _) = Snapshot::build(&table, &s, &[]);
    assert_eq!(v(&fresh, Kind::Routes), v(&second, Kind::Routes));
    let same = cache
        .entries
        .iter()
        .filter(|(k, (_, e))| kept.get(*k).is_some_and(|old| Arc::ptr_eq(old, e)))
        .count();
    assert_eq!(same, 3, "hosted's two uris and tls");
}

mod delta;
