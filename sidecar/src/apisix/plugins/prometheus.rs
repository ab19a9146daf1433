//! `prometheus`: the route's requests in Envoy's Prometheus output. APISIX
//! serves its metrics on its own port (`:9091/apisix/prometheus/metrics`);
//! here they are Envoy's, at its admin port's `/stats/prometheus`. A route
//! with the plugin gets a `stat_prefix`, so Envoy keeps per-route counters
//! (`envoy_vhost_route_upstream_rq{envoy_route="<id>",...}`, `_total`,
//! `_time`, by status code): the route's id, or its `name` with
//! `prefer_name` (as APISIX's `route` label), characters other than
//! letters, digits, `-` and `_` as `_`. They count the requests that
//! reached the upstream (not those the login or a limit refused).

use serde_json::Value;

use super::limit_count::flag;
use super::{object, unknown};
use crate::apisix::route::Errors;

pub const NAME: &str = "prometheus";

pub const KNOWN: &[&str] = &["prefer_name"];

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prometheus {
    pub prefer_name: bool,
    /// The route's id, or its name with `prefer_name` (set by `route.rs`).
    pub label: String,
}

impl Prometheus {
    pub fn parse(conf: &Value, at: &str, e: &mut Errors) -> Option<Prometheus> {
        let before = e.len();
        let obj = object(conf, at, e)?;
        unknown(obj, KNOWN, at, e);
        let prefer_name = flag(obj, "prefer_name", false, at, e);
        (e.len() == before).then_some(Prometheus {
            prefer_name,
            label: String::new(),
        })
    }
}

/// The route's `stat_prefix`: `label` with characters Envoy's stat names
/// would split on (or that a Prometheus label should not hold) as `_`.
pub fn stat_label(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
