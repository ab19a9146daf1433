use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;
use prost::Message;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use serde_json::json;

use super::*;

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

fn ssl(snis: &[&str]) -> Value {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let c = CertificateParams::new(vec![snis[0].trim_start_matches("*.").to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    json!({"cert": c.pem(), "key": key.serialize_pem(), "snis": snis})
}

fn run(ssls: &[(&str, &Value)]) -> Resources {
    let stored = crate::store::Stored {
        ssls: ssls
            .iter()
            .map(|(id, v)| (id.to_string(), (*v).clone()))
            .collect(),
        ..Default::default()
    };
    translate(&RouteTable::build(stored), &settings(), &[])
}

fn https_listener(r: &Resources) -> &Listener {
    r.listeners
        .iter()
        .find(|l| l.name == HTTPS_LISTENER_NAME)
        .expect("an HTTPS listener")
}

fn tls_of(chain: &FilterChain) -> DownstreamTlsContext {
    let Some(transport_socket::ConfigType::TypedConfig(any)) =
        &chain.transport_socket.as_ref().unwrap().config_type
    else {
        panic!("no typed config");
    };
    DownstreamTlsContext::decode(any.value.as_slice()).unwrap()
}

#[test]
fn no_ssl_no_https_listener() {
    let r = run(&[]);
    assert_eq!(r.listeners.len(), 1);
    assert_eq!(r.listeners[0].name, LISTENER_NAME);
    assert!(r.secrets.is_empty());
    // A disabled one does not open it either.
    let mut off = ssl(&["app.test"]);
    off["status"] = json!(0);
    let r = run(&[("1", &off)]);
    assert_eq!(r.listeners.len(), 1);
    assert!(r.secrets.is_empty());
}

#[test]
fn one_chain_per_ssl_by_sni_with_certificates_by_sds() {
    let a = ssl(&["app.test"]);
    let b = ssl(&["*.other.test", "APP.test"]);
    let r = run(&[("a", &a), ("b", &b)]);
    // The HTTP listener is the same as without ssls.
    assert_eq!(r.listeners[0], run(&[]).listeners[0]);
    let l = https_listener(&r);
    assert_eq!(l.address, Some(socket("127.0.0.1", 9443)));
    assert_eq!(
        l.listener_filters[0].name,
        "envoy.filters.listener.tls_inspector"
    );
    assert_eq!(l.filter_chains.len(), 2);
    let names: Vec<_> = l
        .filter_chains
        .iter()
        .map(|c| c.filter_chain_match.as_ref().unwrap().server_names.clone())
        .collect();
    // b's app.test is a's (first by id): left out of b, and said.
    assert_eq!(
        names,
        [
            vec!["app.test".to_string()],
            vec!["*.other.test".to_string()]
        ]
    );
    assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
    assert_eq!(r.skipped[0].what, "ssl b sni app.test");
    // No default chain: an unknown SNI matches nothing.
    assert!(l.default_filter_chain.is_none());
    for chain in &l.filter_chains {
        // The HTTP listener's connection manager, byte for byte (one VM).
        assert_eq!(chain.filters, r.listeners[0].filter_chains[0].filters);
        let tls = tls_of(chain);
        let common = tls.common_tls_context.unwrap();
        assert!(common.tls_certificates.is_empty());
        assert_eq!(common.alpn_protocols, ["h2", "http/1.1"]);
        assert_eq!(common.tls_certificate_sds_secret_configs.len(), 1);
        assert_eq!(
            common.tls_certificate_sds_secret_configs[0].sds_config,
            Some(ads())
        );
    }
    let secret_names: Vec<_> = r.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(secret_names, ["ssl|a|0", "ssl|b|0"]);
    // The key is in the secret only.
    assert!(!format!("{:?}", r.listeners).contains("PRIVATE KEY"));
}

#[test]
fn a_renewed_certificate_changes_its_secret_only_and_a_new_ssl_its_chain_only() {
    let a = ssl(&["app.test"]);
    let b = ssl(&["*.other.test"]);
    let before = run(&[("a", &a), ("b", &b)]);
    let renewed = ssl(&["app.test"]);
    let after = run(&[("a", &renewed), ("b", &b)]);
    assert_eq!(before.listeners, after.listeners);
    assert_ne!(before.secrets[0], after.secrets[0]);
    assert_eq!(before.secrets[1], after.secrets[1]);

    // Adding c: a's and b's chains are unchanged (Envoy drains only what
    // changed), and so is the HTTP listener.
    let c = ssl(&["c.test"]);
    let more = run(&[("a", &a), ("b", &b), ("c", &c)]);
    assert_eq!(more.listeners[0], before.listeners[0]);
    let (old, new) = (https_listener(&before), https_listener(&more));
    assert_eq!(old.filter_chains[..], new.filter_chains[..2]);
    assert_eq!(new.filter_chains.len(), 3);
}

#[test]
fn invalid_stored_ssls_are_left_out_and_said() {
    let a = ssl(&["app.test"]);
    let bad = json!({"cert": "x", "key": "y", "snis": ["b.test"]});
    let r = run(&[("a", &a), ("bad", &bad)]);
    assert_eq!(https_listener(&r).filter_chains.len(), 1);
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].what, "ssl bad");
    // The reason names the attribute, never the key.
    assert!(r.skipped[0].reason.contains("property \"cert\""));
}

#[test]
fn ssl_protocols_become_envoy_min_and_max() {
    let mut a = ssl(&["app.test"]);
    a["ssl_protocols"] = json!(["TLSv1.3"]);
    let r = run(&[("a", &a)]);
    let p = tls_of(&https_listener(&r).filter_chains[0])
        .common_tls_context
        .unwrap()
        .tls_params
        .unwrap();
    assert_eq!(p.tls_minimum_protocol_version, TlsProtocol::TlSv13 as i32);
    assert_eq!(p.tls_maximum_protocol_version, TlsProtocol::TlSv13 as i32);
}

#[test]
fn https_chains_record_the_client_address_for_remote_addrs() {
    let (a, b) = (ssl(&["a.example"]), ssl(&["*.b.example"]));
    let r = run(&[("a", &a), ("b", &b)]);
    let l = https_listener(&r);
    assert!(!l.filter_chains.is_empty());
    for chain in &l.filter_chains {
        let names: Vec<&str> = chain.filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "envoy.filters.network.connection_limit",
                "envoy.filters.network.set_filter_state",
                "envoy.filters.network.http_connection_manager"
            ]
        );
        assert_eq!(chain.filters[1], remote_addr_filter());
    }
}
