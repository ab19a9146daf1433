//! The one TLS transport socket builder, for upstream and provider clusters.

use super::*;

/// Whom the server's certificate must name.
#[derive(Debug, Clone, Copy)]
pub(super) enum Peer<'a> {
    /// An https upstream: no name check here, and the SNI comes per
    /// request (the cluster's `auto_sni`).
    Any,
    /// This host (a provider): the certificate must name it (a DNS name
    /// or an IP address), and a name is also sent as the SNI.
    Named { host: &'a str, is_ip: bool },
}

/// A TLS transport socket; with `verify`, the server's certificate is
/// checked against [`TRUST_STORE`] (and `peer`'s name).
pub(super) fn tls(peer: Peer<'_>, verify: bool) -> TransportSocket {
    let validation = verify.then(|| {
        let names = match peer {
            Peer::Any => Vec::new(),
            Peer::Named { host, is_ip } => {
                let san_type = if is_ip {
                    subject_alt_name_matcher::SanType::IpAddress
                } else {
                    subject_alt_name_matcher::SanType::Dns
                };
                vec![SubjectAltNameMatcher {
                    san_type: san_type as i32,
                    matcher: Some(StringMatcher {
                        match_pattern: Some(string_matcher::MatchPattern::Exact(host.into())),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]
            }
        };
        common_tls_context::ValidationContextType::ValidationContext(CertificateValidationContext {
            trusted_ca: Some(DataSource {
                specifier: Some(data_source::Specifier::Filename(TRUST_STORE.into())),
                ..Default::default()
            }),
            match_typed_subject_alt_names: names,
            ..Default::default()
        })
    });
    let sni = match peer {
        // SNI carries host names only (RFC 6066).
        Peer::Named { host, is_ip: false } => host.to_string(),
        _ => String::new(),
    };
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: validation,
            ..Default::default()
        }),
        sni,
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(to_any(&ctx))),
    }
}
