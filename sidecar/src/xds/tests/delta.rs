//! Incremental (delta) ADS: what each stream is sent, and when.

use super::*;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};

fn dreq(
    kind: Kind,
    nonce: &str,
    subscribe: &[&str],
    unsubscribe: &[&str],
) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(Node {
            id: "envoy-1".into(),
            ..Default::default()
        }),
        type_url: kind.type_url().into(),
        resource_names_subscribe: strs(subscribe),
        resource_names_unsubscribe: strs(unsubscribe),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn ack(r: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
    dreq(
        Kind::from_type_url(&r.type_url).unwrap(),
        &r.nonce,
        &[],
        &[],
    )
}

/// (type, version, names sent, names removed) of each response.
fn dsent(out: &[DeltaDiscoveryResponse]) -> Vec<(&'static str, String, Vec<String>, Vec<String>)> {
    out.iter()
        .map(|r| {
            let kind = Kind::from_type_url(&r.type_url).expect("known type");
            let names = r
                .resources
                .iter()
                .map(|x| {
                    let n = resource_name(kind, x.resource.as_ref().unwrap());
                    assert_eq!(n, x.name);
                    n
                })
                .collect();
            (
                kind.name(),
                r.system_version_info.clone(),
                names,
                r.removed_resources.clone(),
            )
        })
        .collect()
}

/// A stream that asked for everything of `s` and acknowledged it.
fn dsettled(s: &Snapshot, eds_names: &[&str]) -> DeltaState {
    let mut st = DeltaState::new(1);
    st.on_request(&dreq(Kind::Clusters, "", &[], &[]), s, T_NACK);
    st.on_request(&dreq(Kind::Listeners, "", &[], &[]), s, T_NACK);
    st.on_request(&dreq(Kind::Endpoints, "", eds_names, &[]), s, T_NACK);
    st.on_request(&dreq(Kind::Routes, "", &["apisix"], &[]), s, T_NACK);
    let out = st.due(s, Instant::now());
    assert_eq!(out.len(), 4);
    for r in &out {
        assert_eq!(st.on_request(&ack(r), s, T_NACK).1, Received::Ack);
    }
    assert!(st.due(s, Instant::now()).is_empty());
    let synced: BTreeMap<Kind, String> = st.take_synced().into_iter().collect();
    for kind in [
        Kind::Clusters,
        Kind::Endpoints,
        Kind::Listeners,
        Kind::Routes,
    ] {
        assert_eq!(synced.get(&kind), Some(&v(s, kind)), "{kind:?}");
    }
    st
}

fn plain(uri: &str, port: u16) -> Value {
    json!({"uri": uri, "upstream": {"nodes": {format!("127.0.0.1:{port}"): 1}}})
}

#[test]
fn a_new_route_sends_its_cluster_then_its_endpoints_then_the_routes() {
    let s1 = snap(&[("a", plain("/a", 8081)), ("b", plain("/b", 8082))]);
    let mut st = dsettled(&s1, &["route|a", "route|b"]);
    let t0 = Instant::now();
    let s2 = snap(&[
        ("a", plain("/a", 8081)),
        ("b", plain("/b", 8082)),
        ("c", plain("/c", 8083)),
    ]);
    // Only the new cluster; the routes wait for it.
    let out = st.due(&s2, t0);
    assert_eq!(
        dsent(&out),
        vec![(
            "clusters",
            v(&s2, Kind::Clusters),
            strs(&["route|c"]),
            vec![]
        )]
    );
    assert!(st.due(&s2, t0).is_empty());
    // Envoy acknowledges it and subscribes to its endpoints: only those go.
    st.on_request(&ack(&out[0]), &s2, T_NACK);
    assert!(
        st.due(&s2, t0).is_empty(),
        "the routes wait for route|c's endpoints"
    );
    st.on_request(&dreq(Kind::Endpoints, "", &["route|c"], &[]), &s2, T_NACK);
    let out = st.due(&s2, t0);
    assert_eq!(
        dsent(&out),
        vec![(
            "endpoints",
            v(&s2, Kind::Endpoints),
            strs(&["route|c"]),
            vec![]
        )]
    );
    assert!(st.due(&s2, t0).is_empty());
    // Then the route configuration.
    st.on_request(&ack(&out[0]), &s2, T_NACK);
    let out = st.due(&s2, t0);
    assert_eq!(
        dsent(&out),
        vec![("routes", v(&s2, Kind::Routes), strs(&["apisix"]), vec![])]
    );
    st.on_request(&ack(&out[0]), &s2, T_NACK);
    assert!(st.due(&s2, t0).is_empty());
    let synced: BTreeMap<Kind, String> = st.take_synced().into_iter().collect();
    assert_eq!(synced.get(&Kind::Routes), Some(&v(&s2, Kind::Routes)));
    assert_eq!(synced.get(&Kind::Clusters), Some(&v(&s2, Kind::Clusters)));
}

#[test]
fn a_removed_route_s_cluster_is_removed_after_the_routes_without_it() {
    let s1 = snap(&[("a", plain("/a", 8081)), ("b", plain("/b", 8082))]);
    let mut st = dsettled(&s1, &["route|a", "route|b"]);
    let t0 = Instant::now();
    let s2 = snap(&[("a", plain("/a", 8081))]);
    let out = st.due(&s2, t0);
    assert_eq!(
        dsent(&out),
        vec![("routes", v(&s2, Kind::Routes), strs(&["apisix"]), vec![])],
        "nothing removed while Envoy's routes may name route|b"
    );
    assert!(
        !st.take_synced().iter().any(|(k, _)| *k == Kind::Clusters),
        "the clusters are not the snapshot's yet"
    );
    st.on_request(&ack(&out[0]), &s2, T_NACK);
    let out = st.due(&s2, t0);
    assert_eq!(
        dsent(&out),
        vec![(
            "clusters",
            v(&s2, Kind::Clusters),
            vec![],
            strs(&["route|b"])
        )]
    );
    // Envoy drops the cluster's endpoints itself.
    st.on_request(&ack(&out[0]), &s2, T_NACK);
    st.on_request(&dreq(Kind::Endpoints, "", &[], &["route|b"]), &s2, T_NACK);
    assert!(st.due(&s2, t0).is_empty());
}

#[test]
fn a_changed_cluster_gets_its_endpoints_again_even_with_endpoints_in_flight() {
    let up = |t: &str, port: u16| json!({"uri": "/a/*", "upstream": {"type": t, "nodes": {format!("127.0.0.1:{port}"): 1}}});
    let s1 = snap(&[("a", up("roundrobin", 8081))]);
    let mut st = dsettled(&s1, &["route|a"]);
    let t0 = Instant::now();
    let s2 = snap(&[("a", up("roundrobin", 8082))]);
    let eds = st.due(&s2, t0);
    assert_eq!(dsent(&eds)[0].0, "endpoints");
    let s3 = snap(&[("a", up("least_conn", 8082))]);
    assert_eq!(
        dsent(&st.due(&s3, t0)),
        vec![(
            "clusters",
            v(&s3, Kind::Clusters),
            strs(&["route|a"]),
            vec![]
        )]
    );
    // The answer to the endpoints in flight does not cancel the resend.
    st.on_request(&ack(&eds[0]), &s3, T_NACK);
    assert_eq!(
        dsent(&st.due(&s3, t0)),
        vec![(
            "endpoints",
            v(&s3, Kind::Endpoints),
            strs(&["route|a"]),
            vec![]
        )]
    );
}

#[test]
fn a_nack_keeps_what_envoy_had_and_is_not_answered_with_the_same_version() {
    let s1 = snap(&[("a", oidc_route("/a/*", json!({"127.0.0.1:8081": 1})))]);
    let mut st = dsettled(&s1, &["route|a"]);
    let t0 = Instant::now();
    let s2 = snap(&[("a", oidc_route("/moved/*", json!({"127.0.0.1:8081": 1})))]);
    let out = st.due(&s2, t0);
    assert_eq!(dsent(&out).len(), 1);
    let mut nack = ack(&out[0]);
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: format!("bad: {SECRET}"),
        details: Vec::new(),
    });
    let (_, received) = st.on_request(&nack, &s2, T_NACK);
    let Received::Nack(n) = received else {
        panic!("{received:?}")
    };
    assert!(!n.message.contains(SECRET), "{}", n.message);
    assert_eq!(n.version, v(&s2, Kind::Routes));
    assert!(
        st.due(&s2, t0).is_empty(),
        "the refused version is not sent again"
    );
    // The next change sends what differs from what Envoy has (s1).
    let s3 = snap(&[("a", oidc_route("/again/*", json!({"127.0.0.1:8081": 1})))]);
    assert_eq!(
        dsent(&st.due(&s3, t0)),
        vec![("routes", v(&s3, Kind::Routes), strs(&["apisix"]), vec![])]
    );
}

#[test]
fn a_reconnecting_envoy_gets_only_what_it_lacks_and_keeps_clusters_its_routes_name() {
    let s1 = snap(&[("a", plain("/a", 8081)), ("b", plain("/b", 8082))]);
    let s2 = snap(&[("a", plain("/a", 8081)), ("c", plain("/c", 8083))]);
    let versions = |s: &Snapshot, k: Kind| -> std::collections::HashMap<String, String> {
        let t = s.get(k);
        t.resources
            .iter()
            .map(|(n, _)| n.clone())
            .zip(t.resource_versions.iter().cloned())
            .collect()
    };
    let mut st = DeltaState::new(2);
    let t0 = Instant::now();
    for (kind, names) in [
        (Kind::Clusters, vec![]),
        (Kind::Listeners, vec![]),
        (Kind::Endpoints, vec!["route|a", "route|b"]),
        (Kind::Routes, vec!["apisix"]),
    ] {
        let mut r = dreq(kind, "", &names, &[]);
        r.initial_resource_versions = versions(&s1, kind);
        st.on_request(&r, &s2, T_NACK);
    }
    let out = st.due(&s2, t0);
    // route|b stays until the routes without it are acknowledged; the
    // listener Envoy has is not sent again (an empty first answer); the
    // routes wait for route|c as for any new cluster.
    assert_eq!(
        dsent(&out),
        vec![
            (
                "clusters",
                format!("{}+1", v(&s2, Kind::Clusters)),
                strs(&["route|c"]),
                vec![]
            ),
            ("endpoints", v(&s2, Kind::Endpoints), vec![], vec![]),
            ("listeners", v(&s2, Kind::Listeners), vec![], vec![]),
        ]
    );
    for r in &out {
        st.on_request(&ack(r), &s2, T_NACK);
    }
    st.on_request(&dreq(Kind::Endpoints, "", &["route|c"], &[]), &s2, T_NACK);
    let out = st.due(&s2, t0);
    assert_eq!(
        dsent(&out),
        vec![(
            "endpoints",
            v(&s2, Kind::Endpoints),
            strs(&["route|c"]),
            vec![]
        )]
    );
    st.on_request(&ack(&out[0]), &s2, T_NACK);
    let out = st.due(&s2, t0);
    assert_eq!(
        dsent(&out),
        vec![("routes", v(&s2, Kind::Routes), strs(&["apisix"]), vec![])]
    );
    st.on_request(&ack(&out[0]), &s2, T_NACK);
    assert_eq!(
        dsent(&st.due(&s2, t0)),
        vec![(
            "clusters",
            v(&s2, Kind::Clusters),
            vec![],
            strs(&["route|b"])
        )]
    );
}

#[test]
fn a_reconnecting_envoy_asking_for_clusters_first_keeps_them_until_it_has_the_routes() {
    let s1 = snap(&[("a", plain("/a", 8081)), ("b", plain("/b", 8082))]);
    let s2 = snap(&[("a", plain("/a", 8081))]);
    let mut st = DeltaState::new(3);
    let mut r = dreq(Kind::Clusters, "", &[], &[]);
    let t = s1.get(Kind::Clusters);
    r.initial_resource_versions = t
        .resources
        .iter()
        .map(|(n, _)| n.clone())
        .zip(t.resource_versions.iter().cloned())
        .collect();
    st.on_request(&r, &s2, T_NACK);
    // Its routes (from the last sidecar) may still name route|b.
    let out = st.due(&s2, Instant::now());
    assert_eq!(
        dsent(&out),
        vec![(
            "clusters",
            format!("{}+1", v(&s2, Kind::Clusters)),
            vec![],
            vec![]
        )]
    );
}

#[test]
fn a_subscription_while_a_response_is_in_flight_is_answered_after_its_ack() {
    let s1 = snap(&[("a", plain("/a", 8081)), ("b", plain("/b", 8082))]);
    let mut st = dsettled(&s1, &["route|a"]);
    let t0 = Instant::now();
    // Envoy subscribes to route|b's endpoints while route|a's new ones
    // are on their way.
    let s2 = snap(&[("a", plain("/a", 8083)), ("b", plain("/b", 8082))]);
    let out = st.due(&s2, t0);
    assert_eq!(
        dsent(&out),
        vec![(
            "endpoints",
            v(&s2, Kind::Endpoints),
            strs(&["route|a"]),
            vec![]
        )]
    );
    st.on_request(&dreq(Kind::Endpoints, "", &["route|b"], &[]), &s2, T_NACK);
    assert!(st.due(&s2, t0).is_empty(), "one response in flight");
    st.on_request(&ack(&out[0]), &s2, T_NACK);
    assert_eq!(
        dsent(&st.due(&s2, t0)),
        vec![(
            "endpoints",
            v(&s2, Kind::Endpoints),
            strs(&["route|b"]),
            vec![]
        )]
    );
}
