//! The HTTPS listener (APISIX's 9443) and its certificates, from the
//! enabled `ssls`.
//!
//! - One filter chain per ssl (in id order), matched by SNI
//!   (`server_names` = the ssl's `snis`; `*.example.com` matches names at
//!   any depth below, not `example.com`, as APISIX), after the TLS
//!   inspector read the ClientHello. No default chain: a client sending an
//!   unknown SNI, or none, gets no certificate of another host (the
//!   handshake fails), as in APISIX without `fallback_sni`.
//! - Each chain runs the HTTP listener's connection manager (same wasm VM,
//!   same routes by RDS); ALPN offers `h2` and `http/1.1`. Envoy sets
//!   `:scheme` and `X-Forwarded-Proto` to `https`, so session cookies get
//!   `Secure`.
//! - Certificates come by SDS over the same ADS stream: secret
//!   `ssl|<id>|<n>` for pair `n` of ssl `<id>` (0: `cert`/`key`, then
//!   `certs`/`keys`). The listener names them only, so a certificate
//!   renewal changes the secret, not the listener; adding, removing or
//!   changing the SNIs of one ssl changes that filter chain only, and
//!   Envoy drains only the connections of that chain.
//! - An SNI that an earlier ssl (by id) already has is left out of a later
//!   one (Envoy refuses two chains with the same match); an ssl left with
//!   none is skipped, and said in `skipped`.
//! - No enabled ssl: no HTTPS listener (the port is not open; Envoy cannot
//!   serve TLS without a certificate). The first ssl adds it, the last one
//!   removed takes it away; the HTTP listener is never touched.

use envoy_types::pb::envoy::config::listener::v3::{
    listener_filter, FilterChainMatch, ListenerFilter,
};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, tls_parameters::TlsProtocol, DownstreamTlsContext, SdsSecretConfig, Secret,
    TlsCertificate, TlsParameters,
};

use super::*;
use crate::apisix::ssl::{SslSpec, TlsVersion};

/// The HTTPS listener's name.
pub const HTTPS_LISTENER_NAME: &str = "apisix_https";

/// The SDS secret of pair `n` of ssl `id`.
pub fn ssl_secret_name(id: &str, n: usize) -> String {
    format!("ssl|{id}|{n}")
}

/// The HTTPS listener for `ssls` (the enabled ones, in id order) and the
/// secrets it names; `None` without an ssl to serve.
pub(super) fn https(
    s: &ProxySettings,
    ssls: &[&SslSpec],
    skipped: &mut Vec<Skipped>,
) -> (Option<Listener>, Vec<Secret>) {
    let mut taken: BTreeMap<&str, &str> = BTreeMap::new();
    let mut chains = Vec::new();
    let mut secrets = Vec::new();
    for ssl in ssls {
        let mut names = Vec::new();
        for sni in &ssl.snis {
            match taken.get(sni.as_str()) {
                Some(first) => skipped.push(Skipped {
                    what: format!("ssl {} sni {sni}", ssl.id),
                    reason: format!("ssl {first} already serves it"),
                }),
                None => {
                    taken.insert(sni, &ssl.id);
                    names.push(sni.clone());
                }
            }
        }
        if names.is_empty() {
            skipped.push(Skipped {
                what: format!("ssl {}", ssl.id),
                reason: "every sni is served by another ssl".into(),
            });
            continue;
        }
        let mut sds = Vec::new();
        for (n, pair) in ssl.pairs.iter().enumerate() {
            let name = ssl_secret_name(&ssl.id, n);
            sds.push(SdsSecretConfig {
                name: name.clone(),
                sds_config: Some(ads()),
            });
            secrets.push(Secret {
                name,
                r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                    certificate_chain: Some(inline(&pair.cert)),
                    private_key: Some(inline(&pair.key)),
                    ..Default::default()
                })),
            });
        }
        let tls = DownstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificate_sds_secret_configs: sds,
                tls_params: ssl.protocols.map(|(lo, hi)| TlsParameters {
                    tls_minimum_protocol_version: protocol(lo) as i32,
                    tls_maximum_protocol_version: protocol(hi) as i32,
                    ..Default::default()
                }),
                alpn_protocols: vec!["h2".into(), "http/1.1".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        chains.push(FilterChain {
            name: format!("ssl|{}", ssl.id),
            filter_chain_match: Some(FilterChainMatch {
                server_names: names,
                ..Default::default()
            }),
            // The client address for `remote_addrs`, as on the HTTP listener.
            filters: vec![
                connection_limit(s),
                remote_addr_filter(),
                connection_manager(s),
            ],
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.tls".into(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(to_any(&tls))),
            }),
            ..Default::default()
        });
    }
    if chains.is_empty() {
        return (None, Vec::new());
    }
    let listener = Listener {
        name: HTTPS_LISTENER_NAME.into(),
        address: Some(socket(&s.listen_addr, s.https_port)),
        per_connection_buffer_limit_bytes: Some(UInt32Value {
            value: super::listener::CONNECTION_BUFFER_LIMIT,
        }),
        listener_filters: vec![ListenerFilter {
            name: "envoy.filters.listener.tls_inspector".into(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(to_any(
                &TlsInspector::default(),
            ))),
            ..Default::default()
        }],
        filter_chains: chains,
        ..Default::default()
    };
    (Some(listener), secrets)
}

fn inline(pem: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineString(pem.to_string())),
        ..Default::default()
    }
}

fn protocol(v: TlsVersion) -> TlsProtocol {
    match v {
        TlsVersion::V1_1 => TlsProtocol::TlSv11,
        TlsVersion::V1_2 => TlsProtocol::TlSv12,
        TlsVersion::V1_3 => TlsProtocol::TlSv13,
    }
}

#[cfg(test)]
#[path = "https_tests.rs"]
mod tests;
