//! `limit-count`, `limit-req` and `prometheus` on Envoy (`apisix/plugins/`).
//!
//! - The listener runs two local rate limit filters after the wasm filter
//!   (APISIX: openid-connect 2599 in its rewrite phase, limit-count 1002,
//!   limit-req 1001 in access), named [`LIMIT_COUNT_FILTER`] and
//!   [`LIMIT_REQ_FILTER`], without a bucket: they do nothing on a route
//!   without the plugin. A request refused or redirected by the login, CORS
//!   preflights and ip-restriction refusals are not counted, as in APISIX.
//! - A route with the plugin gets a `LocalRateLimit` (typed per-filter
//!   config): its own token bucket, shared by Envoy's worker threads. Per
//!   client address: a wildcard descriptor `apisix_client` whose value is
//!   the connection's peer address, read by a CEL descriptor
//!   (`envoy.rate_limit_descriptors.expr`) from the filter state the
//!   listener sets (`listener.rs`, `apisix.remote_addr`), so
//!   X-Forwarded-For never changes it (Envoy's `remote_address` action
//!   would take it from X-Forwarded-For when proxy hops are trusted); a
//!   bucket per address, at most `MAX_CLIENTS` per route (LRU). The route's
//!   own bucket has the same size and is used only if that value is
//!   missing.
//! - A refusal is `rejected_code` with Envoy's body `local_rate_limited`,
//!   or `{"error_msg": rejected_msg}`: the connection manager's local reply
//!   mapper recognises it by its response code details and status, the
//!   message in route metadata (`apisix-limit`).
//! - `prometheus`: the route's `stat_prefix`.

use super::*;
use crate::apisix::plugins::limit_count::MAX_CLIENTS;
use crate::apisix::plugins::prometheus::stat_label;
use envoy_types::pb::envoy::config::accesslog::v3::{
    access_log_filter, extension_filter, AccessLogFilter, ExtensionFilter,
};
use envoy_types::pb::envoy::config::core::v3::{
    substitution_format_string, RuntimeFractionalPercent, SubstitutionFormatString,
    TypedExtensionConfig,
};
use envoy_types::pb::envoy::config::route::v3::{rate_limit, RateLimit};
use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{
    rate_limit_descriptor, LocalRateLimitDescriptor, XRateLimitHeadersRfcVersion,
};
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::ResponseMapper;
use envoy_types::pb::envoy::extensions::rate_limit_descriptors::expr::v3::{
    descriptor, Descriptor as ExprDescriptor,
};
use envoy_types::pb::envoy::r#type::v3::{
    fractional_percent, FractionalPercent, HttpStatus, TokenBucket,
};

/// The filters' names (their per-route configs' keys).
pub(super) const LIMIT_COUNT_FILTER: &str = "apisix.limit-count";
pub(super) const LIMIT_REQ_FILTER: &str = "apisix.limit-req";
/// The route-metadata namespace of the refusal messages and codes.
pub(super) const LIMIT_NAMESPACE: &str = "apisix-limit";
/// The descriptor key of the client address.
const CLIENT_KEY: &str = "apisix_client";

/// The listener's filter `name` (stat prefix `stat`): no bucket, disabled,
/// so a route without a per-route config passes.
pub(super) fn limit_filter(name: &str, stat: &str) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(to_any(
            &LocalRateLimit {
                stat_prefix: stat.into(),
                ..Default::default()
            },
        ))),
        // On only where a route enables it (`enabled_on_route`).
        disabled: true,
        ..Default::default()
    }
}

/// A route's bucket: `max_tokens`, refilled by `tokens_per_fill` every
/// `fill_ms` (Envoy refills continuously at that rate).
struct Bucket {
    max_tokens: u32,
    tokens_per_fill: u32,
    fill_ms: u64,
    per_client: bool,
    status: u16,
    headers: bool,
    stat: &'static str,
}

fn per_route(b: &Bucket) -> LocalRateLimit {
    let bucket = TokenBucket {
        max_tokens: b.max_tokens,
        tokens_per_fill: Some(UInt32Value {
            value: b.tokens_per_fill,
        }),
        fill_interval: Some(Duration {
            seconds: (b.fill_ms / 1000) as i64,
            nanos: ((b.fill_ms % 1000) * 1_000_000) as i32,
        }),
    };
    let all = || RuntimeFractionalPercent {
        default_value: Some(FractionalPercent {
            numerator: 100,
            denominator: fractional_percent::DenominatorType::Hundred as i32,
        }),
        ..Default::default()
    };
    let mut c = LocalRateLimit {
        stat_prefix: b.stat.into(),
        status: Some(HttpStatus {
            code: i32::from(b.status),
        }),
        token_bucket: Some(bucket),
        filter_enabled: Some(all()),
        filter_enforced: Some(all()),
        enable_x_ratelimit_headers: if b.headers {
            XRateLimitHeadersRfcVersion::DraftVersion03 as i32
        } else {
            XRateLimitHeadersRfcVersion::Off as i32
        },
        ..Default::default()
    };
    if b.per_client {
        c.always_consume_default_token_bucket = Some(BoolValue { value: false });
        c.max_dynamic_descriptors = Some(UInt32Value { value: MAX_CLIENTS });
        c.descriptors = vec![LocalRateLimitDescriptor {
            entries: vec![rate_limit_descriptor::Entry {
                key: CLIENT_KEY.into(),
                value: String::new(),
            }],
            token_bucket: Some(bucket),
            ..Default::default()
        }];
        let expr = ExprDescriptor {
            descriptor_key: CLIENT_KEY.into(),
            skip_if_error: false,
            expr_specifier: Some(descriptor::ExprSpecifier::Text(format!(
                "filter_state['{}']",
                crate::apisix::vars::REMOTE_ADDR_KEY
            ))),
        };
        c.rate_limits = vec![RateLimit {
            actions: vec![rate_limit::Action {
                action_specifier: Some(rate_limit::action::ActionSpecifier::Extension(
                    TypedExtensionConfig {
                        name: "envoy.rate_limit_descriptors.expr".into(),
                        typed_config: Some(to_any(&expr)),
                    },
                )),
            }],
            ..Default::default()
        }];
    }
    c
}

/// Applies limit-count, limit-req and prometheus to the route.
pub(super) fn apply(spec: &RouteSpec, route: &mut Route) {
    let p = &spec.plugins;
    if let Some(m) = &p.prometheus {
        route.stat_prefix = stat_label(&m.label);
    }
    // A `redirect` with `uri` answers in APISIX's rewrite phase, before any
    // limit counts.
    if p.redirect.as_ref().is_some_and(|r| r.uri.is_some()) {
        return;
    }
    let mut meta = Struct::default();
    let mut note = |prefix: &str, code: u16, msg: &Option<String>| {
        if let Some(m) = msg {
            let num = PbValue {
                kind: Some(value::Kind::NumberValue(f64::from(code))),
            };
            let text = PbValue {
                kind: Some(value::Kind::StringValue(m.clone())),
            };
            meta.fields.insert(format!("{prefix}_code"), num);
            meta.fields.insert(format!("{prefix}_msg"), text);
        }
    };
    if let Some(c) = &p.limit_count {
        let b = Bucket {
            max_tokens: c.count,
            tokens_per_fill: c.count,
            fill_ms: u64::from(c.time_window) * 1000,
            per_client: c.per_client,
            status: c.rejected_code,
            headers: c.show_limit_quota_header,
            stat: "limit_count",
        };
        route
            .typed_per_filter_config
            .insert(LIMIT_COUNT_FILTER.into(), enabled_on_route(&per_route(&b)));
        note("count", c.rejected_code, &c.rejected_msg);
    }
    if let Some(r) = &p.limit_req {
        // `rate` per second as whole tokens: per 1000 s, to the thousandth.
        let b = Bucket {
            max_tokens: r.max_tokens,
            tokens_per_fill: ((r.rate * 1000.0).round() as u32).max(1),
            fill_ms: 1_000_000,
            per_client: r.per_client,
            status: r.rejected_code,
            headers: false,
            stat: "limit_req",
        };
        route
            .typed_per_filter_config
            .insert(LIMIT_REQ_FILTER.into(), enabled_on_route(&per_route(&b)));
        note("req", r.rejected_code, &r.rejected_msg);
    }
    if !meta.fields.is_empty() {
        route
            .metadata
            .get_or_insert_with(Default::default)
            .filter_metadata
            .insert(LIMIT_NAMESPACE.into(), meta);
    }
}

/// The local reply mappers of rate-limit refusals with a `rejected_msg`:
/// `{"error_msg": <msg>}`, limit-count's first.
pub(super) fn limit_replies() -> Vec<ResponseMapper> {
    ["count", "req"]
        .into_iter()
        .map(|p| {
            let expression = format!(
                "response.code_details == 'local_rate_limited' && \
                 double(response.code) == xds.route_metadata.filter_metadata['{LIMIT_NAMESPACE}']['{p}_code']"
            );
            let filter = AccessLogFilter {
                filter_specifier: Some(access_log_filter::FilterSpecifier::ExtensionFilter(
                    ExtensionFilter {
                        name: "envoy.access_loggers.extension_filters.cel".into(),
                        config_type: Some(extension_filter::ConfigType::TypedConfig(to_any(
                            &ExpressionFilter {
                                expression,
                                ..Default::default()
                            },
                        ))),
                    },
                )),
            };
            let body = Struct {
                fields: [(
                    "error_msg".to_string(),
                    PbValue {
                        kind: Some(value::Kind::StringValue(format!(
                            "%METADATA(ROUTE:{LIMIT_NAMESPACE}:{p}_msg)%"
                        ))),
                    },
                )]
                .into_iter()
                .collect(),
            };
            ResponseMapper {
                filter: Some(filter),
                body_format_override: Some(SubstitutionFormatString {
                    format: Some(substitution_format_string::Format::JsonFormat(body)),
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect()
}
