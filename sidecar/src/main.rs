//! The sidecar: APISIX's Admin API for routes, served to Envoy over xDS.

mod model;

fn main() {}
