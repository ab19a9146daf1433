//! The sidecar: APISIX's Admin API for routes, served to Envoy over xDS.

// The Admin API and the xDS server that use the model are being written.
#[allow(dead_code)]
mod model;

fn main() {}
