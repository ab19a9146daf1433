//! The one listener: HTTP connection manager, the CORS and RBAC filters (cors,
//! ip-restriction), the wasm filter, the local rate limit filters
//! (limit-count, limit-req), the router.
//! It does not depend on the routes, so Envoy never drains it.

use super::*;

pub(super) fn listener(s: &ProxySettings) -> Listener {
    Listener {
        name: LISTENER_NAME.into(),
        address: Some(socket(&s.listen_addr, s.proxy_port)),
        per_connection_buffer_limit_bytes: Some(UInt32Value {
            value: CONNECTION_BUFFER_LIMIT,
        }),
        filter_chains: vec![FilterChain {
            filters: vec![
                connection_limit(s),
                remote_addr_filter(),
                connection_manager(s),
            ],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Bytes Envoy reads ahead from one client connection (Envoy's edge
/// guidance; its default is 1 MiB): what a client sending a body to an
/// upstream that does not take it can make Envoy hold.
pub const CONNECTION_BUFFER_LIMIT: u32 = 32 * 1024;

/// Streams one HTTP/2 connection may have open at once (nginx's default).
pub const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 128;

/// The connection manager of both listeners (HTTP and HTTPS): the same
/// wasm configuration, so both share the filter's VM, and the same routes
/// by RDS.
pub(super) fn connection_manager(s: &ProxySettings) -> Filter {
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
        // CORS, then RBAC, before the wasm filter: a preflight is answered
        // and ip-restriction refuses before any login (`plugins.rs`);
        // without a route policy both let the request pass.
        // The limits after the login (APISIX counts what the login let
        // through), limit-count before limit-req (`limits.rs`).
        http_filters: vec![
            super::plugins::cors_filter(),
            super::plugins::rbac_filter(),
            wasm,
            super::limits::limit_filter(super::limits::LIMIT_COUNT_FILTER, "limit_count"),
            super::limits::limit_filter(super::limits::LIMIT_REQ_FILTER, "limit_req"),
            router,
        ],
        local_reply_config: Some(super::plugins::local_replies()),
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
        // A kept-alive connection without a request closes after the
        // client timeout (nginx's `keepalive_timeout`; Envoy's default: an
        // hour).
        common_http_protocol_options: Some(envoy_types::pb::envoy::config::core::v3::HttpProtocolOptions {
            headers_with_underscores_action:
                envoy_types::pb::envoy::config::core::v3::http_protocol_options::HeadersWithUnderscoresAction::DropHeader as i32,
            idle_timeout: Some(duration(s.clients.timeout)),
            ..Default::default()
        }),
        // Headers that do not arrive within it end the connection (nginx's
        // `client_header_timeout`; Envoy's default: none, so a client that
        // stops in its headers is held for the stream idle timeout).
        request_headers_timeout: Some(duration(s.clients.timeout)),
        // HTTP/2 (h2 on HTTPS, h2c here): at most 128 streams at once on a
        // connection (nginx's `http2_max_concurrent_streams`; Envoy 1.40
        // announces 1,024, each stream with its filter context), and the
        // flow-control windows of Envoy's edge guidance (64 KiB a stream,
        // 1 MiB a connection; its defaults are larger).
        http2_protocol_options: Some(
            envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions {
                max_concurrent_streams: Some(UInt32Value {
                    value: HTTP2_MAX_CONCURRENT_STREAMS,
                }),
                initial_stream_window_size: Some(UInt32Value { value: 65_536 }),
                initial_connection_window_size: Some(UInt32Value { value: 1_048_576 }),
                ..Default::default()
            },
        ),
        // The edge: X-Forwarded-* from clients are not trusted beyond the
        // configured proxy hops, so `:scheme` is the real one (`https` on
        // the HTTPS listener: session cookies get `Secure`).
        use_remote_address: Some(BoolValue { value: true }),
        xff_num_trusted_hops: s.trusted_proxy_hops,
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(filter::ConfigType::TypedConfig(to_any(&hcm))),
    }
}

/// At most `max_connections` connections on the listener's filter chain
/// (shared by Envoy's workers); one more is closed at once.
pub(super) fn connection_limit(s: &ProxySettings) -> Filter {
    use envoy_types::pb::envoy::extensions::filters::network::connection_limit::v3::ConnectionLimit;
    use envoy_types::pb::google::protobuf::UInt64Value;
    Filter {
        name: "envoy.filters.network.connection_limit".into(),
        config_type: Some(filter::ConfigType::TypedConfig(to_any(&ConnectionLimit {
            stat_prefix: STAT_PREFIX.into(),
            max_connections: Some(UInt64Value {
                value: s.clients.max_connections,
            }),
            ..Default::default()
        }))),
    }
}

/// Puts the connection's peer address (an IP, no port) into the filter
/// state under `REMOTE_ADDR_KEY`, where the routes' `remote_addrs` and
/// `remote_addr` `vars` match it (`RouteMatch.filter_state`, an
/// `AddressMatcher`): route selection, so a route whose addresses do not
/// match falls through to the next one, as in APISIX. It is the TCP peer,
/// as nginx's `$remote_addr` without `real_ip`: `X-Forwarded-For` never
/// changes it, whatever `xff_num_trusted_hops` is.
pub(super) fn remote_addr_filter() -> Filter {
    use envoy_types::pb::envoy::config::core::v3::{
        substitution_format_string, SubstitutionFormatString,
    };
    use envoy_types::pb::envoy::extensions::filters::common::set_filter_state::v3::{
        filter_state_value, FilterStateValue,
    };
    use envoy_types::pb::envoy::extensions::filters::network::set_filter_state::v3::Config;
    let value = FilterStateValue {
        key: Some(filter_state_value::Key::ObjectKey(
            crate::apisix::vars::REMOTE_ADDR_KEY.into(),
        )),
        // Envoy's IP address object: what an `AddressMatcher` reads.
        factory_key: "envoy.network.ip".into(),
        value: Some(filter_state_value::Value::FormatString(
            SubstitutionFormatString {
                format: Some(substitution_format_string::Format::TextFormatSource(
                    DataSource {
                        specifier: Some(data_source::Specifier::InlineString(
                            "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%".into(),
                        )),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.set_filter_state".into(),
        config_type: Some(filter::ConfigType::TypedConfig(to_any(&Config {
            on_new_connection: vec![value],
            ..Default::default()
        }))),
    }
}

/// "Over the ADS stream".
pub(super) fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

pub(super) fn socket(host: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

pub(super) fn duration(d: std::time::Duration) -> Duration {
    Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

pub(super) fn seconds(s: i64) -> Duration {
    Duration {
        seconds: s,
        nanos: 0,
    }
}
